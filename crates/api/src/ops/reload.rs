//! `SIGHUP` reloads the tiers file (`TENANTRY_CONFIG`): the new limits apply
//! at once, to memoized callers too; a file that does not read or validate
//! is refused with a log line, and the tiers in force stay.
//!
//! The tier table is read through `AppState::tiers` (an `ArcSwap`) wherever
//! limits are made; the one place that keeps limits made from it is the
//! request path's memo ([`crate::request::memo`]), whose entries
//! hold only while the platform's cache epoch has not moved. So a reload
//! swaps the table and moves that epoch (`Cache::bump_list(PLATFORM, ...)`),
//! and every memoized caller is made again, with the new limits, on its next
//! request.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use tenantry_core::TierTable;
use tokio::sync::watch;

use crate::state::AppState;

/// Reads `path` and, if it is a valid tiers file, puts its tiers in force.
/// On error nothing changes.
pub async fn reload_tiers(state: &AppState, path: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("Failed to read {}", path.display()))?;
    let tiers =
        TierTable::from_toml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let names: Vec<String> = tiers.tiers.keys().cloned().collect();
    state.tiers.store(Arc::new(tiers));
    // Memoized callers hold limits made from the old table: move the
    // platform epoch so they are made again.
    state
        .cache
        .bump_list(tenantry_cache::PLATFORM, "tiers")
        .await;
    tracing::info!(file = %path.display(), tiers = ?names, "reloaded the tiers file");
    Ok(())
}

/// Reloads the tiers file on every `SIGHUP` until `stop`. `hangup` is the
/// signal stream, registered by the caller before the server takes
/// requests (an unregistered `SIGHUP` would end the process).
pub async fn run(
    state: Arc<AppState>,
    config_file: Option<PathBuf>,
    mut hangup: tokio::signal::unix::Signal,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            got = hangup.recv() => {
                if got.is_none() {
                    return;
                }
                match &config_file {
                    None => tracing::info!(
                        "SIGHUP: no tiers file is configured (TENANTRY_CONFIG); the built-in tiers stay"
                    ),
                    Some(path) => {
                        if let Err(e) = reload_tiers(&state, path).await {
                            tracing::error!(
                                error = format!("{e:#}"),
                                "SIGHUP: refused the tiers file; the tiers in force stay"
                            );
                        }
                    }
                }
            }
        }
    }
}
