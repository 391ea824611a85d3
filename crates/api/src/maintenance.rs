//! The maintenance worker: keeps range partitions made ahead of time (and
//! old ones dropped by retention), and prunes finished jobs older than 7
//! days, at start and then every hour.
//!
//! Several servers may run it at once: `partitions::maintain` holds an
//! advisory lock, so each partition is made exactly once.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::state::AppState;

/// How often partitions are checked. Partitions are made a horizon of months
/// ahead, so an hour is far more often than needed; it also bounds how long
/// a stray row sits unreported.
const INTERVAL: Duration = Duration::from_secs(3_600);

/// How soon a failed pass is tried again (the database was away, say): far
/// sooner than [`INTERVAL`], so partitions do not wait an hour after an
/// outage, yet a pass a minute cannot storm a database that is down.
const RETRY: Duration = Duration::from_secs(60);

/// Runs one pass now, then every [`INTERVAL`] (after a failure, [`RETRY`])
/// until `stop`.
pub async fn run(state: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    loop {
        let pause = if run_once(&state).await {
            INTERVAL
        } else {
            RETRY
        };
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(pause) => {},
        }
    }
}

/// One pass: make partitions, apply retention, report the rows that landed
/// in default partitions (metric `tenantry_partition_default_rows`).
/// Returns whether it succeeded.
pub async fn run_once(state: &AppState) -> bool {
    let mut ok = true;
    // Every cell keeps its own partitions and job history.
    for cell in state.cells.iter() {
        ok &= run_once_on(state, &cell.db).await;
    }
    ok
}

/// [`run_once`] on one cell's database.
async fn run_once_on(state: &AppState, db: &tenantry_db::Db) -> bool {
    let kept = tenantry_jobs::platform::HISTORY_KEPT;
    let pruned = match tenantry_jobs::platform::prune_history(db, kept, 10_000).await {
        Ok(n) => {
            if n > 0 {
                tracing::info!(jobs = n, "pruned finished jobs older than 7 days");
            }
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "pruning finished jobs failed; will retry");
            false
        }
    };
    pruned
        & match tenantry_db::partitions::maintain(db, state.partition_horizon_months).await {
            Ok(report) => {
                for table in &report.tables {
                    metrics::gauge!("tenantry_partition_default_rows", "table" => table.parent.clone())
                    .set(table.default_rows as f64);
                }
                true
            }
            Err(e) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "partition maintenance failed; will retry"
                );
                false
            }
        }
}
