//! Cache warming: at start, and after the cache was reset (a fan-out
//! channel lost, Redis back after an outage) or swept by an invalidation
//! storm, the tenants that matter most are loaded first — premium tiers
//! first (by fair-queue weight), the busiest by recent traffic within a
//! tier. Recent traffic is counted per node in the cache's tenant stats and
//! flushed to `tenants.recent_requests` once a minute, so a node that starts
//! knows which tenants were busy on the others.
//!
//! Warming loads each tenant's record and its slug, in one set-based
//! statement per batch: a warmed tenant is resolved with no database work.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tenantry_cache::PLATFORM;
use tenantry_db::tenants::{self, Tenant};
use tokio::sync::watch;

use crate::config::PLATFORM_STATEMENT_TIMEOUT_MS;
use crate::request::registry::METADATA_TTL;
use crate::state::AppState;

/// How many tenants a warming pass loads.
pub const WARM_TENANTS: usize = 1_000;
/// How often traffic is flushed and a storm looked for.
const TICK: Duration = Duration::from_secs(60);
/// More invalidations than this in one tick is a storm: warm afterwards.
const STORM: u64 = 500;

/// Tiers by weight, heaviest (premium) first.
fn premium_first(state: &AppState) -> Vec<String> {
    let tiers = state.tiers.load();
    let mut named: Vec<(&String, u32)> = tiers.tiers.iter().map(|(n, l)| (n, l.weight)).collect();
    named.sort_by_key(|(n, w)| (std::cmp::Reverse(*w), (*n).clone()));
    named.into_iter().map(|(n, _)| n.clone()).collect()
}

/// Puts tenants into the cache as if they had just been looked up (an
/// entry already there is kept).
async fn prime(state: &AppState, found: Vec<Tenant>) -> usize {
    let n = found.len();
    for tenant in found {
        let (id, slug) = (tenant.id, tenant.slug.clone());
        let _ = state
            .cache
            .get_or_load(id, "tenant", "", METADATA_TTL, move || async move {
                Ok::<_, ()>(Some(Arc::new(tenant)))
            })
            .await;
        let _ = state
            .cache
            .get_or_load(
                PLATFORM,
                "names:slug",
                &slug,
                METADATA_TTL,
                move || async move { Ok::<_, ()>(Some(id)) },
            )
            .await;
    }
    n
}

/// Warms from the database: premium tiers first, busiest first within a
/// tier. Returns how many tenants were loaded.
pub async fn warm_from_db(state: &AppState, limit: usize) -> Result<usize, tenantry_db::DbError> {
    let order = premium_first(state);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let found =
        tenants::warm_candidates(&state.db, &order, limit, PLATFORM_STATEMENT_TIMEOUT_MS).await?;
    Ok(prime(state, found).await)
}

/// Warms the tenants busiest on this node (after a reset or a storm).
pub async fn warm_busiest(state: &AppState, limit: usize) -> Result<usize, tenantry_db::DbError> {
    let ids = state.cache.stats.busiest(limit);
    if ids.is_empty() {
        return warm_from_db(state, limit).await;
    }
    let found = tenants::find_many(&state.db, &ids, PLATFORM_STATEMENT_TIMEOUT_MS).await?;
    Ok(prime(state, found).await)
}

/// Tenants' counts per traffic statement, each its own short transaction
/// (see [`tenantry_db::bulk`]). One statement for every tenant with traffic
/// updated 100,000 tenant rows at once, past the statement timeout, holding
/// every row's lock (and losing the counts) when it failed.
const TRAFFIC_ROWS: usize = 1_000;

/// Flushes this node's per-tenant request counts to the database,
/// [`TRAFFIC_ROWS`] tenants per statement in id order (two nodes flushing
/// at once lock rows in the same order). Every chunk is tried; returns the
/// rows updated, or the first failure.
pub async fn flush_traffic(state: &AppState) -> Result<u64, tenantry_db::DbError> {
    let mut traffic = state.cache.stats.take_traffic();
    traffic.sort_unstable_by_key(|(id, _)| *id);
    let updated = tenantry_db::bulk::in_chunks(&traffic, TRAFFIC_ROWS, |chunk| async move {
        let ids: Vec<_> = chunk.iter().map(|(id, _)| *id).collect();
        let counts: Vec<i64> = chunk
            .iter()
            .map(|(_, n)| i64::try_from(*n).unwrap_or(i64::MAX))
            .collect();
        tenants::record_traffic(&state.db, &ids, &counts, PLATFORM_STATEMENT_TIMEOUT_MS).await
    })
    .await?;
    Ok(updated.iter().sum())
}

/// The traffic flush fails on every tick while the database is away: one
/// warning per minute says so.
static FLUSH_WARNING: tenantry_db::Throttle =
    tenantry_db::Throttle::new(std::time::Duration::from_secs(60));

/// The warming worker: warms at start, after every reset, and after a tick
/// with an invalidation storm; flushes traffic every tick.
pub async fn run(state: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    match warm_from_db(&state, WARM_TENANTS).await {
        Ok(n) => tracing::info!(tenants = n, "cache warmed"),
        Err(e) => tracing::warn!(error = %e, "cache warming failed"),
    }
    let mut invalidations = state.cache.invalidations.load(Relaxed);
    let mut tick = tokio::time::interval(TICK);
    tick.tick().await;
    loop {
        let storm = tokio::select! {
            _ = stop.changed() => return,
            () = state.cache.resets.notified() => true,
            _ = tick.tick() => {
                if let Err(e) = flush_traffic(&state).await
                    && let Some(held_back) = FLUSH_WARNING.admit()
                {
                    tracing::warn!(error = %e, held_back, "tenant traffic flush failed");
                }
                let now = state.cache.invalidations.load(Relaxed);
                let storm = now.saturating_sub(invalidations) > STORM;
                invalidations = now;
                storm
            }
        };
        if storm {
            match warm_busiest(&state, WARM_TENANTS).await {
                Ok(n) => tracing::info!(tenants = n, "cache re-warmed after a reset or storm"),
                Err(e) => tracing::warn!(error = %e, "cache warming failed"),
            }
        }
    }
}
