//! The purge worker: removes the data of deleted tenants in the background.
//!
//! A deleted tenant answers 404 at once; its rows are removed here in bounded
//! chunks. The worker also runs at start, so a purge interrupted by a crash
//! resumes.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::PLATFORM_STATEMENT_TIMEOUT_MS;
use crate::state::AppState;

/// Purges every deleted tenant, then waits for the next deletion (or a
/// minute, in case another node deleted one).
pub async fn run(state: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    loop {
        if let Err(e) = purge_all(&state).await {
            tracing::warn!(error = %e, "tenant purge failed; will retry");
        }
        tokio::select! {
            _ = stop.changed() => return,
            () = state.purge_wakeup.notified() => {},
            () = tokio::time::sleep(Duration::from_secs(60)) => {},
        }
    }
}

/// Purges every tenant marked deleted, in every cell (a cell's copy of a
/// deleted tenant is marked with the registry row). Returns how many were
/// purged.
pub async fn purge_all(state: &AppState) -> Result<usize, tenantry_db::DbError> {
    let mut purged = 0;
    for cell in state.cells.iter() {
        let db = &cell.db;
        let ids = tenantry_db::tenants::deleted(db, PLATFORM_STATEMENT_TIMEOUT_MS).await?;
        for id in &ids {
            let rows = tenantry_db::tenants::purge(db, *id, 30_000).await?;
            tracing::info!(tenant = %id, rows, cell = %cell.name, "purged deleted tenant");
        }
        purged += ids.len();
    }
    Ok(purged)
}
