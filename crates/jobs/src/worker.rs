//! The worker: claims a batch, runs each job's handler, records the outcomes
//! in two statements (all completions, all failures), and repeats; idle, it
//! waits for a NOTIFY from a committed enqueue or the polling interval,
//! whichever comes first (a missed notification costs at most one interval).
//!
//! [`Worker::run_one_batch`] is one turn of that loop, so tests drain the
//! queue without timers.
//!
//! After a batch that changed jobs, a worker may also start a vacuum of the
//! queue table in the background ([`crate::vacuum`]), at most one at a time
//! per worker (and, by an advisory lock, one at a time in all).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt as _;
use rand::Rng as _;
use tenantry_db::{Db, DbError, TenantContext, Tx};
use tokio::sync::{Mutex, Notify, watch};
use uuid::Uuid;

use crate::queue::{self, Failure, Job};
use crate::vacuum::{self, VacuumPolicy};

/// How a handler finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Done {
    /// The worker marks the job done (with the rest of the batch).
    Completed,
    /// As [`Done::Completed`], keeping a result with the finished job
    /// (`GET /v1/admin/jobs/{id}` shows it).
    Result(serde_json::Value),
    /// The handler already completed the job inside its own transaction
    /// ([`JobContext::complete_in`]), together with its work.
    CompletedInTx,
}

/// Why a handler stopped.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The job's lease ran out and another worker claimed it: this run's
    /// work was rolled back and the other run owns the job now.
    #[error("the job's lease was lost")]
    LeaseLost,
    /// Worth another attempt (after a backoff), until attempts run out.
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

impl From<DbError> for JobError {
    fn from(e: DbError) -> Self {
        JobError::Failed(e.into())
    }
}

/// Runs jobs of one kind.
#[async_trait]
pub trait Handler: Send + Sync {
    async fn run(&self, job: &Job, ctx: &JobContext) -> Result<Done, JobError>;
}

/// What a handler may use: the database (through the job's tenant context)
/// and the lease it holds.
pub struct JobContext {
    pub db: Db,
    pub lease: Duration,
}

impl JobContext {
    /// A transaction in the job's tenant context (row-level security applies
    /// as for a request of that tenant).
    pub async fn begin(&self, job: &Job) -> Result<Tx, DbError> {
        self.db
            .begin(&TenantContext::tenant(
                job.tenant_id,
                JOB_STATEMENT_TIMEOUT_MS,
            ))
            .await
    }

    /// Marks the job done in `tx` (with the work `tx` did), or answers
    /// [`JobError::LeaseLost`] if the job is no longer this run's; commit
    /// `tx` only on `Ok`.
    pub async fn complete_in(&self, tx: &mut Tx, job: &Job) -> Result<(), JobError> {
        if queue::complete_in(tx, job).await? {
            Ok(())
        } else {
            Err(JobError::LeaseLost)
        }
    }

    /// [`JobContext::complete_in`], keeping `result` with the finished job.
    pub async fn complete_in_with(
        &self,
        tx: &mut Tx,
        job: &Job,
        result: &serde_json::Value,
    ) -> Result<(), JobError> {
        if queue::complete_in_with(tx, job, Some(result)).await? {
            Ok(())
        } else {
            Err(JobError::LeaseLost)
        }
    }

    /// Records progress and extends the lease in `tx`, or answers
    /// [`JobError::LeaseLost`]; commit `tx` only on `Ok`.
    pub async fn checkpoint_in(
        &self,
        tx: &mut Tx,
        job: &Job,
        progress: &serde_json::Value,
    ) -> Result<(), JobError> {
        if queue::checkpoint_in(tx, job, progress, self.lease).await? {
            Ok(())
        } else {
            Err(JobError::LeaseLost)
        }
    }
}

/// Statement timeout for job work: jobs are batch work, allowed longer than
/// a request.
pub const JOB_STATEMENT_TIMEOUT_MS: u32 = 60_000;

/// Handlers by job kind.
#[derive(Default, Clone)]
pub struct Registry {
    handlers: HashMap<String, Arc<dyn Handler>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// The handler of `kind`, if one is registered.
    pub fn handler(&self, kind: &str) -> Option<&Arc<dyn Handler>> {
        self.handlers.get(kind)
    }

    pub fn register(mut self, kind: &str, handler: impl Handler + 'static) -> Self {
        self.handlers.insert(kind.to_owned(), Arc::new(handler));
        self
    }
}

/// Worker settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Jobs claimed per batch (one claim statement).
    pub batch_size: i64,
    /// How long a claim is good for; a crashed worker's jobs are claimable
    /// again after this.
    pub lease: Duration,
    /// Handlers of one batch running at once.
    pub concurrency: usize,
    /// The longest an idle worker sleeps without a NOTIFY.
    pub poll_interval: Duration,
    /// How often a worker's claim first puts jobs whose lease ran out back
    /// in the queue (at most; an expired job waits up to this long more).
    pub rescue_every: Duration,
    /// First retry delay; doubles per attempt, with jitter, up to `max_backoff`.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// When the workers vacuum the queue table themselves; `None` leaves it
    /// to autovacuum.
    pub vacuum: Option<VacuumPolicy>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            batch_size: 256,
            lease: Duration::from_secs(60),
            concurrency: 32,
            poll_interval: Duration::from_secs(1),
            rescue_every: Duration::from_secs(1),
            base_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(3_600),
            vacuum: Some(VacuumPolicy::default()),
        }
    }
}

/// The delay before retry `attempt` (1-based): exponential, capped, with
/// "equal jitter" (half fixed, half random) so a burst of failures does not
/// come back as a burst.
pub fn backoff(config: &WorkerConfig, attempt: i32) -> Duration {
    let exp = u32::try_from(attempt.saturating_sub(1))
        .unwrap_or(0)
        .min(30);
    let full = config
        .base_backoff
        .saturating_mul(1u32 << exp)
        .min(config.max_backoff);
    let half = full / 2;
    let jitter = rand::rng().random_range(0..=half.as_millis().max(1) as u64);
    half + Duration::from_millis(jitter)
}

/// What one batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchReport {
    pub claimed: usize,
    pub completed: u64,
    pub failed: usize,
    /// Became dead letters in this batch (attempts used up, or a lease that
    /// ran out on the last attempt).
    pub dead: u64,
    /// Lost their lease while running (another worker has them now).
    pub lease_lost: usize,
}

/// A queue worker. Several may run, in one process or many: claims never
/// overlap.
pub struct Worker {
    db: Db,
    registry: Arc<Registry>,
    config: WorkerConfig,
    name: String,
    /// Where the next claim starts its walk over tenants (round-robin when
    /// more tenants have work than a batch can take).
    cursor: Mutex<Uuid>,
    /// When this worker last rescued expired leases.
    rescued_at: std::sync::Mutex<Option<Instant>>,
    /// This worker's part in keeping the queue table vacuumed.
    upkeep: Upkeep,
}

/// A worker's vacuum bookkeeping (see [`crate::vacuum`]).
#[derive(Default)]
struct Upkeep {
    /// When this worker last looked whether `jobs` is due.
    checked_at: std::sync::Mutex<Option<Instant>>,
    /// A check (and maybe a vacuum) of this worker's is under way.
    running: Arc<AtomicBool>,
    /// The connecting role may not vacuum: never look again.
    refused: Arc<AtomicBool>,
}

/// Set once per process when a worker found it may not vacuum, so the
/// warning is logged once, not by every worker.
static REFUSAL_LOGGED: AtomicBool = AtomicBool::new(false);

/// Clears a worker's `running` flag when its vacuum task ends, however it
/// ends.
struct Running(Arc<AtomicBool>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Worker {
    pub fn new(db: Db, registry: Registry, config: WorkerConfig) -> Self {
        Self {
            db,
            registry: Arc::new(registry),
            config,
            name: format!("{}-{}", std::process::id(), Uuid::new_v4().simple()),
            cursor: Mutex::new(queue::FIRST_CURSOR),
            rescued_at: std::sync::Mutex::new(None),
            upkeep: Upkeep::default(),
        }
    }

    pub fn config(&self) -> &WorkerConfig {
        &self.config
    }

    /// Claims one batch, runs it and records the outcomes.
    pub async fn run_one_batch(&self) -> Result<BatchReport, DbError> {
        let mut cursor = self.cursor.lock().await;
        let rescue = {
            let mut at = self.rescued_at.lock().unwrap_or_else(|e| e.into_inner());
            let due = at.is_none_or(|t| t.elapsed() >= self.config.rescue_every);
            if due {
                *at = Some(Instant::now());
            }
            due
        };
        let claimed = queue::claim_with(
            &self.db,
            *cursor,
            self.config.batch_size,
            self.config.lease,
            &self.name,
            rescue,
        )
        .await?;
        // Saw as many tenants as a batch takes: others may be waiting beyond
        // the last, so start there next time. Otherwise start over.
        *cursor = match claimed.last_tenant {
            Some(last) if claimed.tenants_seen as i64 >= self.config.batch_size => last,
            _ => queue::FIRST_CURSOR,
        };
        drop(cursor);

        let mut report = BatchReport {
            claimed: claimed.jobs.len(),
            dead: claimed.expired_dead as u64,
            ..BatchReport::default()
        };
        if claimed.jobs.is_empty() {
            return Ok(report);
        }
        // Owned (Arc) inputs, so each job's future is 'static: the batch's
        // handlers run concurrently, up to `concurrency` at once.
        let jobs = Arc::new(claimed.jobs);
        let ctx = Arc::new(JobContext {
            db: self.db.clone(),
            lease: self.config.lease,
        });
        let runs = (0..jobs.len()).map(|i| {
            let (jobs, ctx, registry) = (jobs.clone(), ctx.clone(), self.registry.clone());
            async move { (i, run_job(&registry, &jobs[i], &ctx).await) }
        });
        let outcomes: Vec<(usize, Result<Done, JobError>)> = futures::stream::iter(runs)
            .buffer_unordered(self.config.concurrency.max(1))
            .collect()
            .await;

        let mut done = Vec::new();
        let mut results = Vec::new();
        let mut failures = Vec::new();
        for (i, outcome) in outcomes {
            let job = &jobs[i];
            match outcome {
                Ok(Done::Completed) => {
                    done.push(job);
                    results.push(None);
                }
                Ok(Done::Result(result)) => {
                    done.push(job);
                    results.push(Some(result));
                }
                Ok(Done::CompletedInTx) => report.completed += 1,
                Err(JobError::LeaseLost) => report.lease_lost += 1,
                Err(JobError::Failed(e)) => {
                    tracing::warn!(job = %job.id, kind = %job.kind, attempt = job.attempt,
                        error = format!("{e:#}"), "job failed");
                    failures.push(Failure {
                        job,
                        error: format!("{e:#}"),
                        retry_in: backoff(&self.config, job.attempt),
                    });
                }
            }
        }
        report.completed += queue::complete_with(&self.db, &done, &results).await?;
        report.failed = failures.len();
        report.dead += queue::fail(&self.db, &failures).await?;
        metrics::counter!("tenantry_jobs_completed_total").increment(report.completed);
        metrics::counter!("tenantry_jobs_failed_total").increment(report.failed as u64);
        metrics::counter!("tenantry_jobs_dead_total").increment(report.dead);
        // This batch left dead tuples (every claim and completion does).
        self.start_vacuum_if_time();
        Ok(report)
    }

    /// Starts a background check of the queue table's dead tuples (and a
    /// vacuum if due), unless this worker checked less than
    /// `check_every` ago, is still checking, or may not vacuum. In the
    /// background because a vacuum takes a while and the batches go on
    /// meanwhile; never an error for the batch: a failed check is logged.
    fn start_vacuum_if_time(&self) {
        let Some(policy) = &self.config.vacuum else {
            return;
        };
        let upkeep = &self.upkeep;
        if upkeep.refused.load(Ordering::Relaxed) {
            return;
        }
        {
            let mut at = upkeep.checked_at.lock().unwrap_or_else(|e| e.into_inner());
            if at.is_some_and(|t| t.elapsed() < policy.check_every) {
                return;
            }
            if upkeep.running.swap(true, Ordering::AcqRel) {
                return;
            }
            *at = Some(Instant::now());
        }
        let running = Running(upkeep.running.clone());
        let (db, policy, refused) = (self.db.clone(), policy.clone(), upkeep.refused.clone());
        tokio::spawn(async move {
            let _running = running;
            match vacuum::vacuum_if_due(&db, &policy).await {
                Ok(vacuum::Outcome::Vacuumed { dead, took }) => {
                    metrics::counter!("tenantry_jobs_vacuums_total").increment(1);
                    tracing::debug!(dead, took_ms = took.as_millis() as u64, "vacuumed jobs");
                }
                Ok(vacuum::Outcome::NotPermitted) => {
                    refused.store(true, Ordering::Relaxed);
                    if !REFUSAL_LOGGED.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            "the database role may not vacuum the jobs table (it owns neither the \
                             table nor the database): the queue relies on autovacuum, and slows \
                             down under churn if that is off or lags"
                        );
                    }
                }
                Ok(vacuum::Outcome::NotDue { .. } | vacuum::Outcome::Busy) => {}
                Err(e) => tracing::warn!(error = %e, "could not vacuum the jobs table; will retry"),
            }
        });
    }

    /// Runs batches until `stop`: straight on while there is work, else
    /// waiting for `wake` (a NOTIFY) or the polling interval. The batch in
    /// hand is finished before stopping.
    pub async fn run(self: Arc<Self>, wake: Arc<Notify>, mut stop: watch::Receiver<bool>) {
        let mut errors = 0u32;
        loop {
            if *stop.borrow() {
                return;
            }
            let idle = match self.run_one_batch().await {
                Ok(report) => {
                    errors = 0;
                    report.claimed == 0
                }
                Err(e) => {
                    errors = errors.saturating_add(1);
                    if let Some(held_back) = CLAIM_WARNING.admit() {
                        tracing::warn!(error = %e, held_back, "job claim failed; will retry");
                    }
                    true
                }
            };
            if idle {
                let pause = if errors > 0 {
                    self.config.poll_interval.saturating_mul(errors.min(10))
                } else {
                    self.config.poll_interval
                };
                tokio::select! {
                    _ = stop.changed() => return,
                    () = wake.notified() => {},
                    () = tokio::time::sleep(pause) => {},
                }
            }
        }
    }
}

async fn run_job(registry: &Registry, job: &Job, ctx: &JobContext) -> Result<Done, JobError> {
    let Some(handler) = registry.handlers.get(&job.kind) else {
        return Err(JobError::Failed(anyhow::anyhow!(
            "no handler for job kind {:?}",
            job.kind
        )));
    };
    // A panicking handler fails its job, not the worker.
    let run = std::panic::AssertUnwindSafe(handler.run(job, ctx));
    match futures::FutureExt::catch_unwind(run).await {
        Ok(outcome) => outcome,
        Err(_) => Err(JobError::Failed(anyhow::anyhow!(
            "the job's handler panicked"
        ))),
    }
}

/// Listens on the queue's channel and wakes idle workers on every NOTIFY,
/// reconnecting (with a pause) when the connection drops. Workers also poll,
/// so a notification lost while reconnecting only costs latency.
pub async fn listen(db: Db, wake: Arc<Notify>, mut stop: watch::Receiver<bool>) {
    loop {
        match db.listen(queue::CHANNEL).await {
            Ok(mut notes) => {
                // A wake-up at (re)connect covers notifications missed while
                // disconnected.
                wake_all(&wake);
                loop {
                    tokio::select! {
                        _ = stop.changed() => return,
                        note = notes.recv() => match note {
                            Some(_) => wake_all(&wake),
                            None => break,
                        },
                    }
                }
            }
            Err(e) => {
                if let Some(held_back) = LISTEN_WARNING.admit() {
                    tracing::warn!(error = %e, held_back, "job listener could not LISTEN");
                }
            }
        }
        // A fixed pause, not a growing one: an attempt a second costs nothing
        // while the database is away, and LISTEN is back within a second of
        // its return.
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {},
        }
    }
}

/// While the database is away every worker's claim fails on every turn, and
/// the listener's every reconnect: one warning per interval for each (with
/// the count held back) says so without flooding the log. The claims back
/// off (`poll_interval` times the failures in a row, up to ten).
static CLAIM_WARNING: tenantry_db::Throttle = tenantry_db::Throttle::new(Duration::from_secs(10));
static LISTEN_WARNING: tenantry_db::Throttle = tenantry_db::Throttle::new(Duration::from_secs(10));

/// Wakes every idle worker, and leaves a permit for one that is between
/// batches (it would otherwise sleep through this wake-up).
fn wake_all(wake: &Notify) {
    wake.notify_waiters();
    wake.notify_one();
}
