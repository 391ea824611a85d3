//! The tenant lifecycle's jobs: making an export, and loading an archive
//! (an import, a clone or a restore). The work itself is
//! [`tenantry_db::lifecycle`]; here it runs as queue jobs, with the lease
//! kept alive while it runs and the outcome recorded.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tenantry_db::lifecycle::{self, Ids, LifecycleError, Target, exports};
use tenantry_db::{Db, DbError, TenantContext, Tx};
use uuid::Uuid;

use crate::queue::{self, Enqueued, Job, NewJob};
use crate::worker::{Done, Handler, JobContext, JobError};

/// The export job's kind.
pub const EXPORT: &str = "tenant.export";
/// The load job's kind (import, clone, restore).
pub const LOAD: &str = "tenant.load";
/// The queue both run in: away from the tenant's request-driven jobs.
pub const QUEUE: &str = "lifecycle";

/// Called after a load committed, with the tenant whose data changed: the
/// server forgets what it cached about it.
pub type OnChanged = Arc<dyn Fn(Uuid) -> BoxFuture<'static, ()> + Send + Sync>;

/// Registers an export of `tenant` and enqueues the job that makes it, in
/// `tx`. `keep`: for a scheduled backup, how many of the tenant's
/// scheduled backups to keep once it is ready (older ones are pruned).
/// `key`: an idempotency key; `None` comes back when it was used already
/// (another server scheduled the same backup).
pub async fn enqueue_export(
    tx: &mut Tx,
    tenant: Uuid,
    kind: &str,
    keep: Option<u32>,
    key: Option<&str>,
) -> Result<Option<(exports::Export, Enqueued)>, DbError> {
    let id = tenantry_db::new_id();
    let mut job = NewJob::new(EXPORT, json!({ "export_id": id, "keep": keep }))
        .queue(QUEUE)
        .max_attempts(3);
    if let Some(key) = key {
        job = job.idempotency_key(key);
    }
    let job = queue::enqueue(tx, tenant, &job).await?;
    if !job.created {
        return Ok(None);
    }
    let export = exports::create(tx, id, tenant, kind, job.id).await?;
    Ok(Some((export, job)))
}

/// What a load job does.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadPayload {
    /// The archive, relative to the export directory.
    pub file: String,
    pub into: Target,
    pub ids: Ids,
    /// Delete the archive afterwards (an uploaded one, not an export).
    pub remove_file: bool,
}

/// Enqueues a load of `payload` into `tenant`, in `tx`.
pub async fn enqueue_load(
    tx: &mut Tx,
    tenant: Uuid,
    payload: &LoadPayload,
) -> Result<Enqueued, DbError> {
    let payload = serde_json::to_value(payload).map_err(|e| DbError::Other(e.into()))?;
    queue::enqueue(
        tx,
        tenant,
        &NewJob::new(LOAD, payload).queue(QUEUE).max_attempts(3),
    )
    .await
}

/// Keeps a job's lease while its work runs: every third of the lease, one
/// checkpoint. Stops when dropped.
struct Heartbeat(tokio::task::JoinHandle<()>);

impl Heartbeat {
    fn start(db: &Db, job: &Job, lease: Duration) -> Self {
        let (db, job) = (db.clone(), job.clone());
        Self(tokio::spawn(async move {
            loop {
                tokio::time::sleep(lease / 3).await;
                let beat = async {
                    let mut tx = db
                        .begin(&TenantContext::tenant(job.tenant_id, 10_000))
                        .await?;
                    let kept =
                        queue::checkpoint_in(&mut tx, &job, &json!({"alive": true}), lease).await?;
                    tx.commit().await?;
                    Ok::<bool, DbError>(kept)
                };
                match beat.await {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(e) => {
                        tracing::warn!(job = %job.id, error = %e, "could not extend a lifecycle job's lease")
                    }
                }
            }
        }))
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Makes an export's archive.
pub struct ExportJob {
    pub dir: PathBuf,
}

#[async_trait]
impl Handler for ExportJob {
    async fn run(&self, job: &Job, ctx: &JobContext) -> Result<Done, JobError> {
        let id: Uuid = serde_json::from_value(job.payload["export_id"].clone())
            .map_err(|e| anyhow::anyhow!("export job without an export id: {e}"))?;
        let keep = job.payload["keep"].as_u64();
        let Some(export) = exports::get(&ctx.db, id).await? else {
            return Ok(Done::Completed);
        };
        if export.status != "running" {
            return Ok(Done::Completed);
        }
        let file = export.file.unwrap_or_else(|| exports::file_name(id));
        let _beat = Heartbeat::start(&ctx.db, job, ctx.lease);
        let started = std::time::Instant::now();
        match lifecycle::export(&ctx.db, job.tenant_id, &self.dir.join(&file)).await {
            Ok(made) => {
                let manifest = serde_json::to_value(&made.manifest)
                    .map_err(|e| anyhow::anyhow!("manifest: {e}"))?;
                exports::finish(&ctx.db, id, made.bytes as i64, &manifest).await?;
                tracing::info!(tenant = %job.tenant_id, export = %id, rows = made.manifest.rows(),
                    bytes = made.bytes, took_ms = started.elapsed().as_millis() as u64, "tenant exported");
                if let Some(keep) = keep {
                    for old in exports::prune(&ctx.db, job.tenant_id, keep as i64).await? {
                        let _ = tokio::fs::remove_file(self.dir.join(old)).await;
                    }
                }
                Ok(Done::Completed)
            }
            Err(e) => {
                if job.attempt >= job.max_attempts || matches!(e, LifecycleError::NotFound) {
                    exports::fail(&ctx.db, id, &e.to_string()).await?;
                }
                Err(JobError::Failed(anyhow::anyhow!("export {id}: {e}")))
            }
        }
    }
}

/// Loads an archive into a tenant.
pub struct LoadJob {
    pub dir: PathBuf,
    pub on_changed: OnChanged,
}

#[async_trait]
impl Handler for LoadJob {
    async fn run(&self, job: &Job, ctx: &JobContext) -> Result<Done, JobError> {
        let p: LoadPayload = serde_json::from_value(job.payload.clone())
            .map_err(|e| anyhow::anyhow!("load job payload: {e}"))?;
        let path = self.dir.join(&p.file);
        let _beat = Heartbeat::start(&ctx.db, job, ctx.lease);
        let started = std::time::Instant::now();
        match lifecycle::load(&ctx.db, &path, job.tenant_id, p.into, p.ids).await {
            Ok(loaded) => {
                tracing::info!(tenant = %job.tenant_id, rows = loaded.rows, into = ?p.into,
                    took_ms = started.elapsed().as_millis() as u64, "tenant archive loaded");
                if p.remove_file {
                    let _ = tokio::fs::remove_file(&path).await;
                }
                (self.on_changed)(job.tenant_id).await;
                Ok(Done::Completed)
            }
            Err(e) => {
                if job.attempt >= job.max_attempts {
                    if p.into == Target::New {
                        abandon(&ctx.db, job.tenant_id).await?;
                        (self.on_changed)(job.tenant_id).await;
                    }
                    if p.remove_file {
                        let _ = tokio::fs::remove_file(&path).await;
                    }
                }
                Err(JobError::Failed(anyhow::anyhow!("{e}")))
            }
        }
    }
}

/// Gives up an import: its tenant (which holds no rows, the load being all
/// or nothing) is deleted and its slug freed; the purge removes the record.
pub async fn abandon(db: &Db, tenant: Uuid) -> Result<(), DbError> {
    let tx = db.begin(&TenantContext::platform(10_000)).await?;
    tx.query_and_commit(
        "UPDATE tenants SET status = 'deleted', slug = 'deleted-' || id::text, domain = NULL,
                updated_at = now()
         WHERE id = $1 AND status = 'importing'",
        &[&tenant],
    )
    .await?;
    Ok(())
}
