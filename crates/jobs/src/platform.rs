//! The platform's lane of the queue: jobs that belong to no tenant
//! (database maintenance), and what an operator does with any job (look it
//! up, cancel it) and how long finished jobs are kept.
//!
//! A platform job is an ordinary row of `jobs` with the nil tenant id
//! ([`PLATFORM`]), so it gets the queue's durability, leases, fencing,
//! retries and dead letters. The tenant-fair claim never walks down to the
//! nil id; [`PlatformLane`] claims these jobs instead, **one at a time in
//! the whole cluster** (the claim takes a transaction-level advisory lock and
//! skips while another platform job holds a live lease), on a worker of its
//! own. So a long VACUUM never sits in a tenant batch, and maintenance
//! never takes more than one worker and one database connection, whatever
//! the number of servers: the low-weight lane.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tenantry_db::json::Jsonb;
use tenantry_db::{Db, DbError};
use tokio::sync::{Notify, watch};
use uuid::Uuid;

use crate::queue::{Failure, Job, NewJob, as_worker};
use crate::worker::{Done, JobContext, JobError, Registry, WorkerConfig, backoff};

/// The tenant id of the platform's own jobs.
pub const PLATFORM: Uuid = Uuid::nil();

/// Serialises platform claims across servers ("tenplatf").
const PLATFORM_CLAIM_LOCK: i64 = 0x7465_6e70_6c61_7466;

/// How long finished jobs are kept in `job_history`.
pub const HISTORY_KEPT: Duration = Duration::from_secs(7 * 24 * 3_600);

/// Enqueues a platform job (committed at once). Returns its id.
pub async fn enqueue_platform(db: &Db, job: &NewJob) -> Result<Uuid, DbError> {
    let id = tenantry_db::new_id();
    as_worker(
        db,
        "WITH ins AS (
             INSERT INTO jobs (tenant_id, id, queue, kind, payload, priority, max_attempts, run_at)
             VALUES ('00000000-0000-0000-0000-000000000000', $1, $2, $3, $4, $5, $6,
                     coalesce($7, now()))
             RETURNING id
         )
         SELECT ins.id FROM ins CROSS JOIN LATERAL (SELECT pg_notify('tenantry_jobs', '')) n",
        &[
            &id,
            &job.queue,
            &job.kind,
            &job.payload,
            &job.priority,
            &job.max_attempts,
            &job.run_at,
        ],
    )
    .await?;
    Ok(id)
}

/// Claims the next due platform job, unless one is running anywhere (a live
/// lease). A job whose attempts ran out (its lease expired on its last
/// attempt) becomes dead instead.
const CLAIM_SQL: &str = "
WITH next AS (
    SELECT ctid FROM jobs
    WHERE tenant_id = '00000000-0000-0000-0000-000000000000' AND state = 'ready'
      AND run_at <= now()
      AND NOT EXISTS (SELECT 1 FROM jobs r
                      WHERE r.tenant_id = '00000000-0000-0000-0000-000000000000'
                        AND r.state = 'running' AND r.run_at > now())
    ORDER BY priority DESC, run_at, id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
)
UPDATE jobs j SET
    state = CASE WHEN j.attempts >= j.max_attempts THEN 'dead' ELSE 'running' END,
    attempts = CASE WHEN j.attempts >= j.max_attempts THEN j.attempts ELSE j.attempts + 1 END,
    run_at = now() + $1::int8 * interval '1 millisecond',
    locked_by = $2,
    finished_at = CASE WHEN j.attempts >= j.max_attempts THEN now() END,
    last_error = CASE WHEN j.attempts >= j.max_attempts
                      THEN 'lease expired on the last attempt' ELSE j.last_error END
FROM next WHERE j.ctid = next.ctid
RETURNING j.*";

/// Claims one platform job (see [`CLAIM_SQL`]).
pub async fn claim_platform(
    db: &Db,
    lease: Duration,
    worker: &str,
) -> Result<Option<Job>, DbError> {
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    let rows = crate::queue::as_worker_after(
        db,
        &format!("SELECT pg_advisory_xact_lock({PLATFORM_CLAIM_LOCK});"),
        CLAIM_SQL,
        &[&lease_ms, &worker],
    )
    .await?;
    match rows.first() {
        Some(row) if row.try_get::<_, String>("state")? == "running" => {
            Ok(Some(Job::from_row(row)?))
        }
        _ => Ok(None),
    }
}

/// Records `progress` on a running job and extends its lease, outside any
/// tenant transaction (for platform jobs, whose work is not a tenant's).
/// False if the job is no longer this claim's: cancelled, or its lease ran
/// out and another worker has it.
pub async fn checkpoint(
    db: &Db,
    job: &Job,
    progress: &Value,
    lease: Duration,
) -> Result<bool, DbError> {
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    let rows = as_worker(
        db,
        "WITH u AS (
             UPDATE jobs SET progress = $4, state = 'running',
                             run_at = now() + $5::int8 * interval '1 millisecond'
             WHERE tenant_id = $1 AND id = $2 AND attempts = $3 AND state <> 'dead'
             RETURNING 1
         )
         SELECT count(*) FROM u",
        &[&job.tenant_id, &job.id, &job.attempt, progress, &lease_ms],
    )
    .await?;
    Ok(rows.first().is_some_and(|r| r.get::<_, i64>(0) == 1))
}

/// A job as an operator sees it, waiting, running, dead or finished.
#[derive(Debug, Clone)]
pub struct JobRecord {
    pub id: Uuid,
    pub queue: String,
    pub kind: String,
    /// `None` for a platform job.
    pub tenant_id: Option<Uuid>,
    /// `ready`, `running`, `retrying` (ready again after a failed attempt),
    /// `done` or `dead`.
    pub state: String,
    pub attempts: i32,
    pub progress: Option<Value>,
    pub result: Option<Value>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// Any job by id: in `jobs` (waiting, running, dead) or in `job_history`
/// (finished in the last [`HISTORY_KEPT`]). Two index probes.
pub async fn find(db: &Db, id: Uuid) -> Result<Option<JobRecord>, DbError> {
    let rows = as_worker(
        db,
        "SELECT tenant_id, id, queue, kind,
                CASE WHEN state = 'ready' AND last_error IS NOT NULL THEN 'retrying'
                     ELSE state END AS state,
                attempts, progress, NULL::jsonb AS result, last_error, created_at, finished_at
         FROM jobs WHERE id = $1
         UNION ALL
         SELECT tenant_id, id, queue, kind, 'done', attempts, progress, result, last_error,
                created_at, finished_at
         FROM job_history WHERE id = $1
         LIMIT 1",
        &[&id],
    )
    .await?;
    rows.first().map(record).transpose()
}

fn record(row: &tokio_postgres::Row) -> Result<JobRecord, DbError> {
    let tenant: Uuid = row.try_get("tenant_id")?;
    Ok(JobRecord {
        id: row.try_get("id")?,
        queue: row.try_get("queue")?,
        kind: row.try_get("kind")?,
        tenant_id: (tenant != PLATFORM).then_some(tenant),
        state: row.try_get("state")?,
        attempts: row.try_get("attempts")?,
        progress: row.try_get::<_, Option<Jsonb>>("progress")?.map(|j| j.0),
        result: row.try_get::<_, Option<Jsonb>>("result")?.map(|j| j.0),
        last_error: row.try_get("last_error")?,
        created_at: row.try_get("created_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

/// What [`cancel`] did.
#[derive(Debug, Clone)]
pub enum Cancelled {
    /// No job with that id is waiting or running (unknown, or finished).
    NotFound,
    /// The job had already finished (done or dead).
    Finished,
    /// The job is dead now, with `last_error` saying it was cancelled. If
    /// it was running, `backend` is the PostgreSQL backend its progress
    /// named (maintenance jobs record theirs), to cancel its statement.
    Cancelled {
        was_running: bool,
        backend: Option<i32>,
    },
}

/// Cancels a waiting or running job: it becomes a dead letter (so it can be
/// retried) and its worker's fence fails at its next checkpoint or
/// completion, which rolls its work back. The caller cancels the statement
/// of `backend` for a job that is running one.
pub async fn cancel(db: &Db, id: Uuid) -> Result<Cancelled, DbError> {
    let rows = as_worker(
        db,
        "WITH old AS (
             SELECT tenant_id, id, state, progress FROM jobs WHERE id = $1 FOR UPDATE
         ),
         upd AS (
             UPDATE jobs j SET state = 'dead', finished_at = now(), locked_by = NULL,
                               last_error = 'cancelled by an operator'
             FROM old
             WHERE j.tenant_id = old.tenant_id AND j.id = old.id AND old.state <> 'dead'
             RETURNING 1
         )
         SELECT old.state, (old.progress->>'backend_pid')::int4 AS backend,
                (SELECT count(*) FROM upd) AS changed
         FROM old
         UNION ALL
         SELECT 'done', NULL, 0 FROM job_history WHERE id = $1",
        &[&id],
    )
    .await?;
    let Some(row) = rows.first() else {
        return Ok(Cancelled::NotFound);
    };
    let state: String = row.try_get("state")?;
    if row.try_get::<_, i64>("changed")? == 0 {
        return Ok(if state == "dead" || state == "done" {
            Cancelled::Finished
        } else {
            Cancelled::NotFound
        });
    }
    Ok(Cancelled::Cancelled {
        was_running: state == "running",
        backend: row.try_get("backend")?,
    })
}

/// Removes finished jobs older than `kept` from `job_history`, in chunks of
/// `chunk`. Returns how many went.
pub async fn prune_history(db: &Db, kept: Duration, chunk: i64) -> Result<u64, DbError> {
    let kept_ms = i64::try_from(kept.as_millis()).unwrap_or(i64::MAX);
    let mut removed = 0;
    loop {
        let rows = as_worker(
            db,
            "WITH d AS (
                 DELETE FROM job_history WHERE ctid = ANY (ARRAY(
                     SELECT ctid FROM job_history
                     WHERE finished_at < now() - $1::int8 * interval '1 millisecond'
                     LIMIT $2))
                 RETURNING 1
             )
             SELECT count(*) FROM d",
            &[&kept_ms, &chunk],
        )
        .await?;
        let n = rows.first().map_or(0, |r| r.get::<_, i64>(0));
        removed += n as u64;
        if n < chunk {
            return Ok(removed);
        }
    }
}

/// The worker of the platform lane: one job at a time.
pub struct PlatformLane {
    db: Db,
    registry: Registry,
    config: WorkerConfig,
    name: String,
}

impl PlatformLane {
    pub fn new(db: Db, registry: Registry, config: WorkerConfig) -> Self {
        Self {
            db,
            registry,
            config,
            name: format!(
                "{}-platform-{}",
                std::process::id(),
                Uuid::new_v4().simple()
            ),
        }
    }

    /// Claims and runs one platform job, if one is due and none is running.
    /// Returns whether it ran one.
    pub async fn run_one(&self) -> Result<bool, DbError> {
        let Some(job) = claim_platform(&self.db, self.config.lease, &self.name).await? else {
            return Ok(false);
        };
        let ctx = JobContext {
            db: self.db.clone(),
            lease: self.config.lease,
        };
        let outcome = match self.registry.handler(&job.kind) {
            Some(handler) => {
                let run = std::panic::AssertUnwindSafe(handler.run(&job, &ctx));
                match futures::FutureExt::catch_unwind(run).await {
                    Ok(outcome) => outcome,
                    Err(_) => Err(JobError::Failed(anyhow::anyhow!(
                        "the job's handler panicked"
                    ))),
                }
            }
            None => Err(JobError::Failed(anyhow::anyhow!(
                "no handler for platform job kind {:?}",
                job.kind
            ))),
        };
        match outcome {
            Ok(Done::Completed | Done::CompletedInTx) => {
                crate::queue::complete(&self.db, &[&job]).await?;
            }
            Ok(Done::Result(result)) => {
                crate::queue::complete_with(&self.db, &[&job], &[Some(result)]).await?;
            }
            Err(JobError::LeaseLost) => {}
            Err(JobError::Failed(e)) => {
                tracing::warn!(job = %job.id, kind = %job.kind, attempt = job.attempt,
                    error = format!("{e:#}"), "platform job failed");
                crate::queue::fail(
                    &self.db,
                    &[Failure {
                        job: &job,
                        error: format!("{e:#}"),
                        retry_in: backoff(&self.config, job.attempt),
                    }],
                )
                .await?;
            }
        }
        Ok(true)
    }

    /// Runs platform jobs until `stop`, one at a time; idle, it waits for a
    /// NOTIFY (`wake`) or the polling interval.
    pub async fn run(self: Arc<Self>, wake: Arc<Notify>, mut stop: watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                return;
            }
            let idle = match self.run_one().await {
                Ok(ran) => !ran,
                Err(e) => {
                    tracing::debug!(error = %e, "platform job claim failed; will retry");
                    true
                }
            };
            if idle {
                tokio::select! {
                    _ = stop.changed() => return,
                    () = wake.notified() => {},
                    () = tokio::time::sleep(self.config.poll_interval) => {},
                }
            }
        }
    }
}
