//! Adaptive capacity (DESIGN.md, "Fair everywhere"): the controller that
//! sizes the fair shares to what the machine can run and scales each
//! tenant's database concurrency, and the record of what it changed.
//!
//! Every control interval (`TENANTRY_ADAPTIVE_INTERVAL_MS`, 1 s) it reads
//! each share's measured window ([`tenantry_fairness::share::Window`]):
//!
//! - the database share's and the CPU share's capacities follow their
//!   latency through a gradient limiter ([`tenantry_fairness::adaptive`]):
//!   a capacity set too high or too low moves to the knee (BENCHMARKS.md,
//!   "Adaptive capacity");
//! - each tenant's database concurrency moves within its tier's
//!   `db_concurrency_min..=db_concurrency_max` on its queue wait
//!   ([`tenantry_fairness::scaling`]), applied to the share at once.
//!
//! A tenant's changes are kept in memory and written in one statement per
//! interval (`tenant_scaling`, V110) as the observer role, so they survive a
//! restart; `GET /v1/admin/tenants/{id}/scaling` pages them, newest first.
//! `TENANTRY_ADAPTIVE=off` pins the capacities and the tiers' concurrency.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tenantry_db::{Db, DbError};
use tenantry_fairness::adaptive::{Gradient, GradientConfig, Move};
use tenantry_fairness::scaling::{Bounds, Change, Scaler, ScalingConfig};
use tokio::sync::watch;
use uuid::Uuid;

use crate::observe::history::as_observer;
use crate::state::AppState;

/// How the controller runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveConfig {
    /// Off: the capacities and the tenants' concurrency stay as configured.
    pub enabled: bool,
    pub interval: Duration,
    /// How tenants' concurrency moves (its `interval` is set to the above).
    pub scaling: ScalingConfig,
}

pub const DEFAULT_ADAPTIVE_INTERVAL_MS: u64 = 1_000;

impl Default for AdaptiveConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_millis(DEFAULT_ADAPTIVE_INTERVAL_MS),
            scaling: ScalingConfig::default(),
        }
    }
}

/// Changes not yet written, at most this many (beyond, while the database
/// is away, the oldest are dropped with a warning).
const MAX_PENDING: usize = 10_000;
/// How long changes are kept.
const KEEP_DAYS: i32 = 30;

/// One change of a tenant's database concurrency, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub tenant: Uuid,
    /// A UUIDv7 taken when the change was made: the list's order.
    pub id: Uuid,
    pub at: DateTime<Utc>,
    pub from: u32,
    pub to: u32,
    pub reason: &'static str,
}

/// The controller's shared part: its settings and the changes waiting to
/// be written.
#[derive(Debug, Default)]
pub struct Adaptive {
    pub config: AdaptiveConfig,
    pending: Mutex<Vec<Record>>,
}

impl Adaptive {
    pub fn new(config: AdaptiveConfig) -> Self {
        Self {
            config,
            pending: Mutex::default(),
        }
    }

    fn push(&self, records: impl IntoIterator<Item = Record>) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.extend(records);
        if pending.len() > MAX_PENDING {
            let excess = pending.len() - MAX_PENDING;
            tracing::warn!(dropped = excess, "scaling changes not written in time");
            pending.drain(..excess);
        }
    }

    /// Writes the pending changes in one statement; on failure they stay
    /// pending for the next interval.
    pub async fn flush(&self, db: &Db) -> Result<usize, DbError> {
        let batch = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        if batch.is_empty() {
            return Ok(0);
        }
        match write(db, &batch).await {
            Ok(()) => Ok(batch.len()),
            Err(e) => {
                let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                let newer = std::mem::take(&mut *pending);
                *pending = batch;
                pending.extend(newer);
                Err(e)
            }
        }
    }
}

async fn write(db: &Db, batch: &[Record]) -> Result<(), DbError> {
    let tenants: Vec<Uuid> = batch.iter().map(|r| r.tenant).collect();
    let ids: Vec<Uuid> = batch.iter().map(|r| r.id).collect();
    let at: Vec<DateTime<Utc>> = batch.iter().map(|r| r.at).collect();
    let from: Vec<i32> = batch.iter().map(|r| as_i32(r.from)).collect();
    let to: Vec<i32> = batch.iter().map(|r| as_i32(r.to)).collect();
    let reasons: Vec<&str> = batch.iter().map(|r| r.reason).collect();
    // Only tenants that still exist: a change of a tenant deleted since is
    // dropped, not an error that would hold the whole batch back.
    as_observer(
        db,
        "INSERT INTO tenant_scaling (tenant_id, id, at, from_limit, to_limit, reason)
         SELECT u.t, u.i, u.a, u.f, u.o, u.r
           FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::int[], $5::int[],
                       $6::text[]) AS u(t, i, a, f, o, r)
          WHERE EXISTS (SELECT 1 FROM tenants WHERE id = u.t)
         ON CONFLICT DO NOTHING",
        &[&tenants, &ids, &at, &from, &to, &reasons],
    )
    .await?;
    Ok(())
}

fn as_i32(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

/// A page of `tenant`'s changes, newest first, after the change `before`
/// (the previous page's last id).
pub async fn page(
    db: &Db,
    tenant: Uuid,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Record>, DbError> {
    let rows = as_observer(
        db,
        "SELECT id, at, from_limit, to_limit, reason FROM tenant_scaling
          WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id < $2)
          ORDER BY id DESC LIMIT $3",
        &[&tenant, &before, &limit],
    )
    .await?;
    rows.iter()
        .map(|r| {
            let reason: String = r.try_get(4)?;
            Ok(Record {
                tenant,
                id: r.try_get(0)?,
                at: r.try_get(1)?,
                from: u32::try_from(r.try_get::<_, i32>(2)?).unwrap_or(0),
                to: u32::try_from(r.try_get::<_, i32>(3)?).unwrap_or(0),
                reason: reason_str(&reason),
            })
        })
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()
        .map_err(DbError::from)
}

/// The recorded reason as one of the scaler's names.
fn reason_str(raw: &str) -> &'static str {
    use tenantry_fairness::scaling::Reason;
    [
        Reason::QueueWait,
        Reason::OthersWaited,
        Reason::Settled,
        Reason::Idle,
        Reason::Bounds,
    ]
    .into_iter()
    .map(Reason::as_str)
    .find(|r| *r == raw)
    .unwrap_or("other")
}

/// The limiters of one server: one per share.
struct Limiters {
    db: Gradient,
    cpu: Gradient,
}

impl Limiters {
    fn new(state: &AppState) -> Self {
        let fairness = &state.fairness;
        let cores = u32::try_from(crate::state::cores()).unwrap_or(2);
        let db_max = u32::try_from(
            state
                .db
                .max_connections()
                .saturating_sub(crate::state::PLATFORM_CONNECTIONS),
        )
        .unwrap_or(u32::MAX)
        .max(1);
        let db_now = fairness.db_share.stats().capacity;
        let cpu_now = fairness.cpu_share.stats().capacity;
        Self {
            db: Gradient::new(
                db_now,
                GradientConfig {
                    min: 2.min(db_max),
                    // A capacity configured above the pool still comes down.
                    max: db_max.max(db_now),
                    ..GradientConfig::default()
                },
            ),
            cpu: Gradient::new(
                cpu_now,
                GradientConfig {
                    min: cores,
                    max: u32::try_from(fairness.shedder.cap())
                        .unwrap_or(u32::MAX)
                        .max(cpu_now),
                    ..GradientConfig::default()
                },
            ),
        }
    }
}

/// Runs the controller until `stop`.
pub async fn run(state: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    let adaptive = &state.fairness.adaptive;
    if !adaptive.config.enabled {
        return;
    }
    let interval = adaptive.config.interval.max(Duration::from_millis(10));
    let mut limiters = Limiters::new(&state);
    let mut scaler = Scaler::new(ScalingConfig {
        interval,
        ..adaptive.config.scaling
    });
    let mut last_prune = tokio::time::Instant::now();
    loop {
        // A probe runs at the minimum: kept short.
        let pause = if limiters.db.probing() || limiters.cpu.probing() {
            interval / 4
        } else {
            interval
        };
        tokio::select! {
            _ = stop.changed() => break,
            () = tokio::time::sleep(pause) => {}
        }
        step(&state, &mut limiters, &mut scaler).await;
        if let Err(e) = adaptive.flush(&state.db).await {
            tracing::warn!(error = %e, "failed to write the scaling changes");
        }
        if last_prune.elapsed() > Duration::from_secs(3_600) {
            last_prune = tokio::time::Instant::now();
            let sql = format!(
                "DELETE FROM tenant_scaling WHERE at < now() - interval '{KEEP_DAYS} days'"
            );
            if let Err(e) = as_observer(&state.db, &sql, &[]).await {
                tracing::warn!(error = %e, "failed to prune the scaling changes");
            }
        }
    }
    // What was decided before the stop is written.
    let _ = adaptive.flush(&state.db).await;
}

/// One control interval: both capacities, then the tenants.
async fn step(state: &AppState, limiters: &mut Limiters, scaler: &mut Scaler) {
    let fairness = &state.fairness;
    let window = fairness.db_share.take_window();
    let (capacity, moved) = limiters.db.update(&window);
    if moved.is_some() {
        fairness.db_share.set_capacity(capacity);
        count_move("db", moved);
    }
    metrics::gauge!("tenantry_db_share_capacity").set(f64::from(capacity));

    let cpu = fairness.cpu_share.take_window();
    let (capacity, moved) = limiters.cpu.update(&cpu);
    if moved.is_some() {
        fairness.cpu_share.set_capacity(capacity);
        count_move("cpu", moved);
    }
    metrics::gauge!("tenantry_cpu_share_capacity").set(f64::from(capacity));

    // The tenants' bounds, from the registry (memory) — keys that are no
    // tenant (a user-scoped request's user) have none and are left alone.
    let mut bounds = HashMap::new();
    for id in scaler.tenants_of(&window) {
        if let Ok(Some(tenant)) = state.registry.by_id(id).await {
            let limits = state.limits_of(&tenant);
            let (min, max) = limits.db_concurrency_bounds();
            bounds.insert(id, Bounds::new(min, limits.db_concurrency, max));
        }
    }
    let changes = scaler.step(&window, |id| bounds.get(&id).copied());
    if changes.is_empty() {
        return;
    }
    let now = Utc::now();
    for c in &changes {
        fairness
            .db_share
            .set_limit(c.tenant, (!c.at_base).then_some(c.to));
    }
    state
        .fairness
        .adaptive
        .push(changes.iter().map(|c: &Change| Record {
            tenant: c.tenant,
            id: Uuid::now_v7(),
            at: now,
            from: c.from,
            to: c.to,
            reason: c.reason.as_str(),
        }));
    metrics::counter!("tenantry_tenant_scaling_changes_total").increment(changes.len() as u64);
}

fn count_move(share: &'static str, moved: Option<Move>) {
    let label = match moved {
        Some(Move::Probe) => "probe",
        Some(Move::Resume) => "resume",
        Some(Move::Grow) => "grow",
        Some(Move::Shrink) => "shrink",
        None => return,
    };
    metrics::counter!("tenantry_share_capacity_moves_total", "share" => share, "move" => label)
        .increment(1);
}
