//! Admission: the rate a request may come at and its turn at the database,
//! the same two steps for a tenant's request and for a user's request that
//! names no tenant.
//!
//! - Rate: GCRA at two levels, a tenant's (or, for a user-scoped request,
//!   the user's own key) and a user's within it; over either, 429 with the
//!   tighter decision in the `RateLimit` headers.
//! - CPU: a turn in the CPU share (`Fairness::cpu_share`) for the rest of
//!   the request's work, after the rate check (a 429 never queues: it stays
//!   as cheap as it is). Kept until the response is made ([`TurnSlot`]); a
//!   wait past the budget answers 503 `overloaded`.
//! - Database: a turn in the fair share ([`tenantry_fairness::share`]),
//!   keyed by the tenant (or the user); a wait past the budget answers 503
//!   `overloaded` — the database is there, this key's turn is not.

use std::sync::Arc;

use tenantry_core::Limits;
use tenantry_db::tenants::Tenant;
use tenantry_db::{Admission, DbError};
use tenantry_fairness::gcra::Quota;
use tenantry_fairness::rate::Checked;
use tenantry_fairness::share::{Claim, Permit, Rejected};
use uuid::Uuid;

use crate::problem::ApiError;
use crate::state::AppState;

/// Who a request is admitted as, and the labels its metrics carry.
#[derive(Debug, Clone, Copy)]
pub struct Admittee<'a> {
    /// The first level's key: the tenant, or the user for a user-scoped
    /// request (user and tenant ids never collide).
    pub key: Uuid,
    pub user: Uuid,
    /// The `tier` label of the metrics (`user` for user-scoped requests).
    pub tier: &'a str,
    /// Whether the first level is the user's own key.
    pub user_scoped: bool,
}

/// The rate check, counted if allowed. A tenant's request meets the
/// tenant's rate, then the user's within the tenant; a user-scoped request
/// meets the user's rate at both levels.
pub async fn check_rate(state: &AppState, who: Admittee<'_>, limits: &Limits) -> Checked {
    let user_quota = Quota {
        per_sec: limits.user_rate_per_sec,
        burst: limits.user_rate_per_sec.max(1),
    };
    let first = if who.user_scoped {
        user_quota
    } else {
        Quota {
            per_sec: limits.rate_per_sec,
            burst: limits.burst,
        }
    };
    state
        .fairness
        .rate
        .check(who.key, who.user, first, user_quota)
        .await
}

/// The answer to a request over its rate (429), counted by tier and by the
/// level that refused it.
pub fn rate_limited(who: Admittee<'_>, checked: Checked) -> ApiError {
    let scope = if who.user_scoped || checked.tenant.allowed {
        "user"
    } else {
        "tenant"
    };
    metrics::counter!("tenantry_rate_limited_total", "tier" => who.tier.to_owned(), "scope" => scope)
        .increment(1);
    ApiError::RateLimited {
        retry_after: checked.binding().retry_after.as_secs_f64().ceil().max(1.0) as u64,
    }
}

/// Waits for `key`'s turn in the CPU share, at most the queue budget. No
/// limit of its own: the share keeps a tenant to about half while others
/// are active, and lets one alone use it all. The permit is the turn:
/// dropped (whatever await its holder dies at) it lets the next one in.
pub async fn cpu_turn(state: &AppState, key: Uuid, weight: u32) -> Result<Permit, ApiError> {
    let fairness = &state.fairness;
    let claim = Claim {
        tenant: key,
        limit: u32::MAX,
        weight,
    };
    match fairness
        .cpu_share
        .acquire(claim, fairness.db_queue_budget)
        .await
    {
        Ok(permit) => Ok(permit),
        Err(Rejected::Timeout) => {
            metrics::counter!("tenantry_cpu_queue_timeouts_total").increment(1);
            Err(ApiError::Overloaded { retry_after: 1 })
        }
    }
}

/// Where a request's CPU turn is kept until its response is made: the
/// outermost layer ([`crate::telemetry::observe`]) puts one in the
/// request's extensions and empties it once the response (its JSON, its
/// version's rewrite) is ready. Without one (a router without that layer)
/// the extractor keeps the turn itself, until the handler returns.
#[derive(Clone, Default)]
pub struct TurnSlot(Arc<std::sync::Mutex<Option<Permit>>>);

impl TurnSlot {
    pub fn hold(&self, permit: Permit) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(permit);
    }

    /// Lets the turn go (if one was taken).
    pub fn release(&self) {
        let permit = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(permit);
    }
}

/// Takes `key`'s CPU turn and leaves it in the request's [`TurnSlot`];
/// returns it only if there is no slot, for the caller to keep.
pub async fn take_turn(
    state: &AppState,
    extensions: &axum::http::Extensions,
    key: Uuid,
    weight: u32,
) -> Result<Option<Permit>, ApiError> {
    let permit = cpu_turn(state, key, weight).await?;
    match extensions.get::<TurnSlot>() {
        Some(slot) => {
            slot.hold(permit);
            Ok(None)
        }
        None => Ok(Some(permit)),
    }
}

/// `key`'s standing in the fair share: its limit and weight, as in force.
pub fn claim(key: Uuid, limits: &Limits) -> Claim {
    Claim {
        tenant: key,
        limit: limits.db_concurrency,
        weight: limits.weight,
    }
}

/// Waits for the claim's turn in the fair database share, at most the
/// configured budget. The permit is the turn: dropping it, whatever await
/// its holder dies at, lets the next one in.
pub async fn share(state: &AppState, claim: Claim, tier: &str) -> Result<Permit, DbError> {
    share_in(state, &state.fairness.db_share, claim, tier).await
}

/// [`share`] in the fair share of one cell (`db_share`).
pub async fn share_in(
    state: &AppState,
    db_share: &Arc<tenantry_fairness::share::DbShare>,
    claim: Claim,
    tier: &str,
) -> Result<Permit, DbError> {
    let started = tokio::time::Instant::now();
    let fairness = &state.fairness;
    match db_share.acquire(claim, fairness.db_queue_budget).await {
        Ok(permit) => {
            metrics::histogram!("tenantry_db_queue_wait_seconds", "tier" => tier.to_owned())
                .record(started.elapsed().as_secs_f64());
            Ok(permit)
        }
        Err(Rejected::Timeout) => {
            metrics::counter!("tenantry_db_queue_timeouts_total", "tier" => tier.to_owned())
                .increment(1);
            Err(DbError::Busy("the database share is busy".to_owned()))
        }
    }
}

/// [`share`] for a tenant, as the admission of its request's lazy
/// transaction: awaited only if the handler sends a statement, so a request
/// served from the cache never queues. The tier is read only then.
///
/// The wait is measured for the tenant's meter, and so is the time the
/// permit (with the connection taken under it) is held: [`Held`] counts it
/// when the transaction lets it go.
pub fn tenant_share(state: Arc<AppState>, tenant: &Arc<Tenant>, limits: &Limits) -> Admission {
    let claim = claim(tenant.id, limits);
    let tenant = tenant.clone();
    Box::pin(async move {
        let started = std::time::Instant::now();
        // The share of the tenant's cell (main's unless placed elsewhere).
        let result = match tenant.cell.as_str() {
            crate::cells::MAIN => share(&state, claim, &tenant.tier).await,
            _ => match state.cell_of(&tenant) {
                Ok(cell) => share_in(&state, state.share_of(cell), claim, &tenant.tier).await,
                Err(_) => Err(DbError::Unavailable(format!(
                    "the cell {:?} is not configured on this server",
                    tenant.cell
                ))),
            },
        };
        if !state.observe.config.record {
            return Ok(Box::new(result?) as Box<dyn std::any::Any + Send + Sync>);
        }
        let t = (tenant.id, &*tenant.slug, &*tenant.tier);
        state.observe.meters.db_wait(t, started.elapsed(), || {
            crate::telemetry::cache_seen(&state, tenant.id)
        });
        let permit = result?;
        Ok(Box::new(Held {
            _permit: permit,
            since: std::time::Instant::now(),
            tenant,
            state,
        }) as Box<dyn std::any::Any + Send + Sync>)
    })
}

/// A tenant's database turn, timed: dropped with the transaction (whatever
/// await it dies at), it counts the time held into the tenant's meter, then
/// lets the permit go.
struct Held {
    _permit: Permit,
    since: std::time::Instant,
    tenant: Arc<Tenant>,
    state: Arc<AppState>,
}

impl Drop for Held {
    fn drop(&mut self) {
        let t = &self.tenant;
        self.state
            .observe
            .meters
            .db_time((t.id, &t.slug, &t.tier), self.since.elapsed(), || {
                crate::telemetry::cache_seen(&self.state, t.id)
            });
    }
}
