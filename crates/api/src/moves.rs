//! Moving a tenant to another cell, online: `POST
//! /v1/admin/tenants/{id}/move {cell}` enqueues a job (202 `{job_id}`),
//! which runs the move engine ([`tenantry_db::moving::move_tenant`]: copy,
//! catch-up, fence, flip, purge) with this server's side of the switch, the
//! [`CellFence`]:
//!
//! - **hold**: the tenant's new requests wait at admission
//!   ([`crate::request::hold`]) and those in flight finish;
//! - **flip**: the directory (`tenants.cell` in the control database) names
//!   the target, the target's copy of the tenant's row takes the counters
//!   the source kept, and the tenant's cache generation moves on every node
//!   (`Cache::bump_tenant`, announced through Redis or NOTIFY), so every
//!   node reads the new cell from its next lookup;
//! - **release**: the held requests look their tenant up again and go to
//!   the new cell.
//!
//! The job runs in the platform lane (one platform job at a time in the
//! whole deployment, in the control database's queue, which no move
//! touches): a move never moves its own job. The tenant's queued jobs live
//! in its cell's queue and move with its rows (the engine moves every
//! tenant table). A move that stopped (kill -9, lost lease) is resumed by
//! the job's next attempt, from the same source to the same target: the
//! payload names both, whatever the directory says by then.
//!
//! The hold is this node's: requests reaching another node during the
//! final catch-up are stopped by the engine's freeze of the source (they
//! fail and are not acknowledged), never written to a copy being left.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tenantry_db::moving::{self, Fence, MoveProgress};
use tenantry_db::{Db, DbError, TenantContext};
use tenantry_jobs::platform;
use tenantry_jobs::queue::{Job, NewJob};
use tenantry_jobs::worker::{Done, Handler, JobContext, JobError};
use uuid::Uuid;

use crate::config::PLATFORM_STATEMENT_TIMEOUT_MS;
use crate::request::hold::Hold;
use crate::state::AppState;

/// The move job's kind.
pub const MOVE: &str = "tenant.move";
/// The queue it runs in.
pub const QUEUE: &str = "cells";

/// How long the fence waits for the tenant's requests in flight to finish.
const DRAIN: Duration = Duration::from_secs(5);

/// What a move job does: `tenant` from cell `from` to cell `to`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MovePayload {
    pub tenant: Uuid,
    pub from: String,
    pub to: String,
}

/// Enqueues the move of `tenant` from `from` to `to` in the platform lane.
/// Returns the job's id.
pub async fn enqueue(db: &Db, payload: &MovePayload) -> Result<Uuid, DbError> {
    let payload = serde_json::to_value(payload).map_err(|e| DbError::Other(e.into()))?;
    platform::enqueue_platform(db, &NewJob::new(MOVE, payload).queue(QUEUE).max_attempts(5)).await
}

/// This server's side of a move's switch (see the module's notes).
pub struct CellFence {
    state: Arc<AppState>,
    tenant: Uuid,
    source: Db,
    target: Db,
    target_cell: String,
    /// The hold, from `hold` to `release` (or to `Drop`, if the move's
    /// future is dropped in between: the [`Hold`] gives itself back).
    hold: Mutex<Option<Hold>>,
}

impl CellFence {
    pub fn new(state: Arc<AppState>, tenant: Uuid, source: Db, target: Db, to: &str) -> Self {
        Self {
            state,
            tenant,
            source,
            target,
            target_cell: to.to_owned(),
            hold: Mutex::new(None),
        }
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Hold>> {
        self.hold.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Fence for CellFence {
    async fn hold(&self) -> Result<(), DbError> {
        let hold = self
            .state
            .holds
            .hold(self.tenant, DRAIN)
            .await
            .map_err(|_| {
                DbError::Busy(format!(
                    "the requests of tenant {} in flight did not finish within {DRAIN:?}",
                    self.tenant
                ))
            })?;
        *self.slot() = Some(hold);
        Ok(())
    }

    async fn flip(&self) -> Result<(), DbError> {
        // Idempotent: a flip already done (a resumed move) only tells the
        // nodes again; the target's counters are its own by then.
        let now = tenantry_db::tenants::find(
            &self.state.db,
            tenantry_db::tenants::Lookup::Id(self.tenant),
            PLATFORM_STATEMENT_TIMEOUT_MS,
        )
        .await?;
        if now.is_some_and(|t| t.cell == self.target_cell) {
            self.state.tenant_changed(None, self.tenant).await;
            return Ok(());
        }
        // The counters the source kept (writes are held and frozen: they
        // stand still) go with the tenant: the target's copy of its row
        // may be an old one (the control database's registry row, when it
        // comes back to `main`).
        if let Some((members, posts, bytes)) =
            tenantry_db::tenants::counters(&self.source, self.tenant, PLATFORM_STATEMENT_TIMEOUT_MS)
                .await?
        {
            let mut tx = self
                .target
                .begin(&TenantContext::platform(PLATFORM_STATEMENT_TIMEOUT_MS))
                .await?;
            tx.execute(
                "UPDATE tenants SET member_count = $2, post_count = $3, storage_bytes = $4,
                        cell = $5
                 WHERE id = $1",
                &[&self.tenant, &members, &posts, &bytes, &self.target_cell],
            )
            .await?;
            tx.commit().await?;
        }
        if !tenantry_db::tenants::set_cell(
            &self.state.db,
            self.tenant,
            &self.target_cell,
            PLATFORM_STATEMENT_TIMEOUT_MS,
        )
        .await?
        {
            return Err(DbError::Other(anyhow::anyhow!(
                "tenant {} is no longer in the registry",
                self.tenant
            )));
        }
        // Every node forgets the tenant's record (and with it the cell).
        self.state.tenant_changed(None, self.tenant).await;
        Ok(())
    }

    async fn release(&self) {
        drop(self.slot().take());
    }
}

/// Runs move jobs (registered in the platform lane).
pub struct MoveJob {
    state: Arc<AppState>,
}

impl MoveJob {
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }
}

#[async_trait]
impl Handler for MoveJob {
    async fn run(&self, job: &Job, ctx: &JobContext) -> Result<Done, JobError> {
        let p: MovePayload = serde_json::from_value(job.payload.clone())
            .map_err(|e| anyhow::anyhow!("move job payload: {e}"))?;
        let cell = |name: &str| {
            self.state
                .cells
                .get(name)
                .map(|c| c.db.clone())
                .ok_or_else(|| anyhow::anyhow!("the cell {name:?} is not configured here"))
        };
        let (source, target) = (cell(&p.from)?, cell(&p.to)?);
        let fence = CellFence::new(
            self.state.clone(),
            p.tenant,
            source.clone(),
            target.clone(),
            &p.to,
        );
        let latest: Mutex<Option<MoveProgress>> = Mutex::new(None);
        let progress = |m: MoveProgress| {
            *latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(m);
        };
        let moving = moving::move_tenant(&source, &target, p.tenant, &fence, progress);
        // The lease is kept while the move runs, with its progress; a lease
        // lost (or the job cancelled) stops this run, which the next
        // attempt resumes.
        let heartbeat = async {
            loop {
                tokio::time::sleep(ctx.lease / 3).await;
                let now = latest.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let shown = json!({ "move": now });
                match platform::checkpoint(&ctx.db, job, &shown, ctx.lease).await {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(e) => tracing::warn!(job = %job.id, error = %e,
                        "could not extend a tenant move's lease"),
                }
            }
        };
        let report = tokio::select! {
            report = moving => report.map_err(|e| anyhow::anyhow!("moving tenant {}: {e}", p.tenant))?,
            () = heartbeat => return Err(JobError::LeaseLost),
        };
        tracing::info!(tenant = %p.tenant, from = %p.from, to = %p.to,
            rows = report.rows_copied, changes = report.changes_applied,
            pause_ms = report.write_pause.as_millis() as u64,
            took_ms = report.duration.as_millis() as u64, "tenant moved");
        let result = serde_json::to_value(&report).map_err(|e| anyhow::anyhow!("report: {e}"))?;
        Ok(Done::Result(
            json!({ "tenant": p.tenant, "from": p.from, "to": p.to, "report": result }),
        ))
    }
}
