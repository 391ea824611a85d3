//! The server's side of the tenant lifecycle: the job handlers wired to the
//! export directory and the cache, the backup schedule, and the one route
//! whose body is not buffered (an import's archive is streamed to disk).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use tenantry_db::TenantContext;
use tenantry_jobs::Registry;
use tenantry_jobs::lifecycle::{EXPORT, ExportJob, LOAD, LoadJob};
use tokio::sync::watch;

use crate::config::PLATFORM_STATEMENT_TIMEOUT_MS;
use crate::state::AppState;

/// The routes whose request body is an upload read as a stream with its
/// own limit, not buffered under the JSON body limit.
pub const UPLOAD_PATH: &str = "/v1/admin/tenants/import";

/// Adds the lifecycle's job handlers to `registry`: archives in `dir`; a
/// load forgets what every node cached about its tenant.
pub fn register(registry: Registry, dir: &Path, cache: Arc<tenantry_cache::Cache>) -> Registry {
    registry
        .register(
            EXPORT,
            ExportJob {
                dir: dir.to_owned(),
            },
        )
        .register(
            LOAD,
            LoadJob {
                dir: dir.to_owned(),
                on_changed: Arc::new(move |tenant| {
                    let cache = cache.clone();
                    Box::pin(async move {
                        cache.bump_tenant(tenant).await;
                        cache.bump_list(tenant, "").await;
                        cache.bump_list(tenantry_cache::PLATFORM, "names").await;
                    })
                }),
            },
        )
}

/// [`crate::telemetry::buffer_body`] for every route but [`UPLOAD_PATH`],
/// whose handler streams the body itself (with its own limit and pace).
pub async fn buffer_body(req: Request, next: Next) -> Response {
    if req.uri().path() == UPLOAD_PATH {
        return next.run(req).await;
    }
    crate::telemetry::buffer_body(req, next).await
}

/// How often the backup schedule is looked at.
const BACKUP_CHECK: Duration = Duration::from_secs(300);

/// Tenants given a backup per tier per pass, at most (the rest next pass).
const BACKUPS_PER_PASS: i64 = 500;

/// How long after start the schedule is first looked at: a server that
/// just started has its caches to warm and its partitions to make first.
const BACKUP_FIRST_CHECK: Duration = Duration::from_secs(60);

/// Runs [`schedule_backups`] a minute after start, then every few minutes,
/// until `stop`.
pub async fn run_backups(state: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    let mut pause = BACKUP_FIRST_CHECK;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(pause) => {},
        }
        if let Err(e) = schedule_backups(&state).await {
            tracing::warn!(error = %e, "could not schedule backups; will retry");
        }
        pause = BACKUP_CHECK;
    }
}

/// Enqueues a scheduled export of every active tenant whose tier takes
/// backups (`backup_every_hours` > 0) and whose last one is older than
/// that; each keeps its tier's `backups_kept` (pruned when the new one is
/// ready). Several servers may run this at once: a tenant's backup job has
/// an idempotency key naming the backup it follows (`backup-after:<id>`),
/// so it is enqueued once. Returns how many were enqueued.
pub async fn schedule_backups(state: &AppState) -> Result<usize, tenantry_db::DbError> {
    let tiers = state.tiers.load();
    let mut enqueued = 0;
    for (tier, limits) in &tiers.tiers {
        if limits.backup_every_hours == 0 {
            continue;
        }
        let every = i32::try_from(limits.backup_every_hours).unwrap_or(i32::MAX);
        let due =
            tenantry_db::lifecycle::exports::due(&state.db, tier, every, BACKUPS_PER_PASS).await?;
        for (tenant, last) in due {
            let key = match last {
                Some(id) => format!("backup-after:{id}"),
                None => "backup-after:none".to_owned(),
            };
            let mut tx = state
                .db
                .begin(&TenantContext::tenant(
                    tenant,
                    PLATFORM_STATEMENT_TIMEOUT_MS,
                ))
                .await?;
            let made = tenantry_jobs::lifecycle::enqueue_export(
                &mut tx,
                tenant,
                "scheduled",
                Some(limits.backups_kept.max(1)),
                Some(&key),
            )
            .await?;
            tx.commit().await?;
            enqueued += usize::from(made.is_some());
        }
    }
    Ok(enqueued)
}
