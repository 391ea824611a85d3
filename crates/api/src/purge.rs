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

/// Purges every tenant marked deleted. Returns how many were purged.
pub async fn purge_all(state: &AppState) -> Result<usize, tenantry_db::DbError> {
    let ids = tenantry_db::tenants::deleted(&state.db, PLATFORM_STATEMENT_TIMEOUT_MS).await?;
    for id in &ids {
        let rows = tenantry_db::tenants::purge(&state.db, *id, 30_000).await?;
        tracing::info!(tenant = %id, rows, "purged deleted tenant");
    }
    Ok(ids.len())
}
