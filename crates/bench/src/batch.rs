//! `tenantry bench-batch`: the batch machinery measured in-process against
//! a throwaway database, side by side in one run:
//!
//! - `ingest`: analytics events written one INSERT (and one commit) per
//!   event — by one writer (what a handler does per request, one after the
//!   other) and by many concurrent writers (where PostgreSQL groups their
//!   commits itself) — against the same events through the group-commit
//!   collector, with one event per request and with many per request;
//! - `jobs`: no-op jobs through the queue (claim, run, complete), drained by
//!   a few workers from a backlog enqueued beforehand;
//! - `steady`: the same while producers enqueue (the queue stays short if
//!   the workers keep up).
//!
//! The database is created in the PostgreSQL server at
//! `TENANTRY_TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`)
//! and dropped afterwards.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::Utc;
use noop::NoOp;
use tenantry_db::testing::FreshDatabase;
use tenantry_db::{Db, DbOptions, TenantContext};
use tenantry_jobs::ingest::{self, Event, IngestConfig};
use tenantry_jobs::queue::{self, NewJob};
use tenantry_jobs::{Registry, Worker, WorkerConfig};
use uuid::Uuid;

/// What `bench-batch` can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BatchScenario {
    Ingest,
    Jobs,
    Steady,
}

/// `tenantry bench-batch` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct BatchBenchArgs {
    /// Scenarios, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "ingest,jobs,steady"
    )]
    pub scenario: Vec<BatchScenario>,
    /// Tenants the events and jobs are spread over.
    #[arg(long, default_value_t = 20)]
    pub tenants: usize,
    /// Events written one INSERT per event by `--concurrency` writers (the
    /// concurrent baseline).
    #[arg(long, default_value_t = 5_000)]
    pub baseline_events: usize,
    /// Events written one INSERT per event by a single writer (the
    /// sequential baseline).
    #[arg(long, default_value_t = 1_000)]
    pub single_writer_events: usize,
    /// Events written through the collector, per group-commit run.
    #[arg(long, default_value_t = 500_000)]
    pub events: usize,
    /// Events per request in the many-events group-commit run.
    #[arg(long, default_value_t = 100)]
    pub events_per_request: usize,
    /// Concurrent writers (requests in flight).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// No-op jobs through the queue (the backlog enqueued before draining).
    #[arg(long, default_value_t = 200_000)]
    pub jobs: usize,
    /// No-op jobs enqueued while the workers drain (`steady`).
    #[arg(long, default_value_t = 200_000)]
    pub steady_jobs: usize,
    /// Concurrent producers in `steady`, each enqueueing `--steady-chunk`
    /// jobs per transaction.
    #[arg(long, default_value_t = 2)]
    pub producers: usize,
    #[arg(long, default_value_t = 500)]
    pub steady_chunk: usize,
    /// Queue workers (more overlap one worker's round trips with another's
    /// database work).
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Jobs claimed per batch.
    #[arg(long, default_value_t = 500)]
    pub batch_size: i64,
    /// Database connections.
    #[arg(long, default_value_t = 16)]
    pub pool: usize,
}

mod noop {
    //! The no-op job handler.
    use tenantry_jobs::{Done, Handler, Job, JobContext, JobError};

    pub struct NoOp;

    #[async_trait::async_trait]
    impl Handler for NoOp {
        async fn run(&self, _job: &Job, _ctx: &JobContext) -> Result<Done, JobError> {
            Ok(Done::Completed)
        }
    }
}

pub async fn run(args: BatchBenchArgs) -> anyhow::Result<()> {
    let fresh = FreshDatabase::create().await;
    let db = Db::connect(
        &fresh.url,
        &DbOptions {
            max_connections: args.pool,
            ..DbOptions::default()
        },
    )?;
    tenantry_db::migrate::migrate(&db)
        .await
        .context("Failed to migrate the bench database")?;
    let tenants = make_tenants(&fresh, args.tenants).await?;
    println!(
        "bench-batch: {} tenants, database {} (measured while anything else on this machine runs)",
        tenants.len(),
        fresh.name
    );
    for scenario in &args.scenario {
        match scenario {
            BatchScenario::Ingest => ingest_bench(&db, &tenants, &args).await?,
            BatchScenario::Jobs => jobs_bench(&db, &fresh, &tenants, &args).await?,
            BatchScenario::Steady => steady_bench(&db, &fresh, &tenants, &args).await?,
        }
    }
    Ok(())
}

/// Tenants, each with one user.
async fn make_tenants(fresh: &FreshDatabase, n: usize) -> anyhow::Result<Vec<(Uuid, Uuid)>> {
    let raw = fresh.connect().await;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let (t, u) = (Uuid::now_v7(), Uuid::now_v7());
        raw.execute(
            "INSERT INTO tenants (id, slug, name, tier, owner_user_id) VALUES ($1, $2, 'bench', 'free', $3)",
            &[&t, &format!("bench-{i}"), &u],
        )
        .await?;
        raw.execute("INSERT INTO users (id) VALUES ($1)", &[&u])
            .await?;
        out.push((t, u));
    }
    Ok(out)
}

fn events(n: usize) -> Vec<Event> {
    let now = Utc::now();
    (0..n)
        .map(|i| Event {
            kind: "page_view".to_owned(),
            properties: serde_json::json!({ "seq": i, "path": "/bench" }),
            occurred_at: now,
        })
        .collect()
}

/// Splits `total` over `workers` as evenly as possible.
fn share(total: usize, workers: usize, i: usize) -> usize {
    total / workers + usize::from(i < total % workers)
}

async fn ingest_bench(
    db: &Db,
    tenants: &[(Uuid, Uuid)],
    args: &BatchBenchArgs,
) -> anyhow::Result<()> {
    let c = args.concurrency.max(1);
    // Baselines: one INSERT and one commit per event, by one writer and by
    // `c` writers at once.
    let single = one_by_one(db, tenants, 1, args.single_writer_events).await?;
    println!(
        "ingest  one INSERT per event,  1 writer  {:>9} events  {single:>10.0} events/s",
        args.single_writer_events
    );
    let baseline = one_by_one(db, tenants, c, args.baseline_events).await?;
    println!(
        "ingest  one INSERT per event, {c:>2} writers {:>9} events  {baseline:>10.0} events/s",
        args.baseline_events
    );

    for per_request in [1, args.events_per_request.max(1)] {
        let (handle, collector) = ingest::channel(db.clone(), IngestConfig::default());
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let collector = tokio::spawn(collector.run(stop_rx));
        let total = if per_request == 1 {
            // Single-event requests are request-bound: fewer make the point.
            (args.events / 10).max(1)
        } else {
            args.events
        };
        let requests = total.div_ceil(per_request);
        let done = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for i in 0..c {
            let (handle, (t, u), done) = (handle.clone(), tenants[i % tenants.len()], done.clone());
            let mine = share(requests, c, i);
            tasks.push(tokio::spawn(async move {
                for _ in 0..mine {
                    let n = handle
                        .submit(t, u, u64::MAX, events(per_request))
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    done.fetch_add(n as u64, Ordering::Relaxed);
                }
                anyhow::Ok(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let _ = stop_tx.send(true);
        collector.await?;
        let written = done.load(Ordering::Relaxed);
        let rate = written as f64 / elapsed;
        println!(
            "ingest  group commit, {per_request:>4}/request {written:>9} events  {rate:>10.0} events/s  ({:.0}x 1 writer, {:.0}x {c} writers)",
            rate / single,
            rate / baseline
        );
    }
    Ok(())
}

/// Writes `total` events one INSERT and one commit each, from `writers`
/// tasks at once; returns events per second.
async fn one_by_one(
    db: &Db,
    tenants: &[(Uuid, Uuid)],
    writers: usize,
    total: usize,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..writers {
        let (db, (t, u)) = (db.clone(), tenants[i % tenants.len()]);
        let n = share(total, writers, i);
        tasks.push(tokio::spawn(async move {
            ingest::write_one_by_one(&db, t, u, &events(n)).await
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

async fn jobs_bench(
    db: &Db,
    fresh: &FreshDatabase,
    tenants: &[(Uuid, Uuid)],
    args: &BatchBenchArgs,
) -> anyhow::Result<()> {
    let ids: Vec<Uuid> = tenants.iter().map(|(t, _)| *t).collect();
    vacuum_jobs(fresh).await?;
    let started = Instant::now();
    let chunk = 10_000;
    let mut left = args.jobs;
    let mut i = 0usize;
    while left > 0 {
        let n = left.min(chunk);
        enqueue_noops(db, &ids, i, n).await?;
        left -= n;
        i += n;
    }
    let enqueue = args.jobs as f64 / started.elapsed().as_secs_f64();
    println!(
        "jobs    enqueue (10,000 per statement) {:>9} jobs  {enqueue:>10.0} jobs/s",
        args.jobs
    );

    let config = worker_config(args);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.workers.max(1) {
        let worker = Worker::new(
            db.clone(),
            Registry::new().register("noop", NoOp),
            config.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut completed = 0u64;
            loop {
                let report = worker.run_one_batch().await?;
                completed += report.completed;
                if report.claimed == 0 {
                    return anyhow::Ok(completed);
                }
            }
        }));
    }
    let mut completed = 0;
    for t in tasks {
        completed += t.await??;
    }
    let rate = completed as f64 / started.elapsed().as_secs_f64();
    ensure_drained(fresh, completed, args.jobs).await?;
    println!(
        "jobs    no-op, {} workers, batches of {} {completed:>9} jobs  {rate:>10.0} jobs/s  (backlog of {} enqueued first)",
        args.workers, args.batch_size, args.jobs
    );
    Ok(())
}

/// Starts a jobs scenario from a vacuumed table, so it does not inherit the
/// previous scenario's dead rows. (VACUUM removes them only if no
/// transaction anywhere in the cluster is older than they are: check
/// `pg_stat_activity.backend_xmin` when a figure looks off.)
async fn vacuum_jobs(fresh: &FreshDatabase) -> anyhow::Result<()> {
    fresh
        .connect()
        .await
        .batch_execute("VACUUM (ANALYZE) jobs")
        .await
        .context("Failed to vacuum jobs")
}

fn worker_config(args: &BatchBenchArgs) -> WorkerConfig {
    WorkerConfig {
        batch_size: args.batch_size,
        concurrency: 64,
        poll_interval: Duration::from_millis(50),
        ..WorkerConfig::default()
    }
}

/// Enqueues `n` no-op jobs in one transaction, spread over the tenants
/// round-robin from `first`.
async fn enqueue_noops(db: &Db, ids: &[Uuid], first: usize, n: usize) -> anyhow::Result<()> {
    let jobs: Vec<(Uuid, NewJob)> = (0..n)
        .map(|k| {
            (
                ids[(first + k) % ids.len()],
                NewJob::new("noop", serde_json::json!({})),
            )
        })
        .collect();
    let mut tx = db
        .begin(&TenantContext {
            tenant_ids: ids.to_vec(),
            user_id: None,
            statement_timeout_ms: 60_000,
        })
        .await?;
    queue::enqueue_many(&mut tx, &jobs).await?;
    tx.commit().await?;
    Ok(())
}

/// Every job completed exactly once, and none is left (a completed job is
/// deleted).
async fn ensure_drained(fresh: &FreshDatabase, completed: u64, jobs: usize) -> anyhow::Result<()> {
    let left: i64 = fresh
        .connect()
        .await
        .query_one("SELECT count(*) FROM jobs", &[])
        .await?
        .get(0);
    anyhow::ensure!(
        completed as usize == jobs && left == 0,
        "{completed} of {jobs} jobs completed, {left} left after draining"
    );
    Ok(())
}

/// No-op jobs enqueued by producers while workers drain them: the rate at
/// which jobs went through (enqueue to completion), and how far the workers
/// were behind when the last job was enqueued.
async fn steady_bench(
    db: &Db,
    fresh: &FreshDatabase,
    tenants: &[(Uuid, Uuid)],
    args: &BatchBenchArgs,
) -> anyhow::Result<()> {
    let ids: Vec<Uuid> = tenants.iter().map(|(t, _)| *t).collect();
    vacuum_jobs(fresh).await?;
    let producers = args.producers.max(1);
    let chunk = args.steady_chunk.max(1);
    let completed = Arc::new(AtomicU64::new(0));
    let (enqueued_tx, enqueued_rx) = tokio::sync::watch::channel(false);
    let config = worker_config(args);
    let started = Instant::now();

    let mut workers = Vec::new();
    for _ in 0..args.workers.max(1) {
        let worker = Worker::new(
            db.clone(),
            Registry::new().register("noop", NoOp),
            config.clone(),
        );
        let (completed, enqueued) = (completed.clone(), enqueued_rx.clone());
        workers.push(tokio::spawn(async move {
            loop {
                // Read before claiming: once every job is enqueued, a claim
                // that finds nothing means the queue is empty.
                let all_enqueued = *enqueued.borrow();
                let report = worker.run_one_batch().await?;
                completed.fetch_add(report.completed, Ordering::Relaxed);
                if report.claimed == 0 {
                    if all_enqueued {
                        return anyhow::Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        }));
    }
    let mut tasks = Vec::new();
    for p in 0..producers {
        let (db, ids) = (db.clone(), ids.clone());
        let mine = share(args.steady_jobs, producers, p);
        tasks.push(tokio::spawn(async move {
            let mut done = 0;
            while done < mine {
                let n = (mine - done).min(chunk);
                enqueue_noops(&db, &ids, p + done, n).await?;
                done += n;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let enqueue_secs = started.elapsed().as_secs_f64();
    let behind = args.steady_jobs as u64
        - completed
            .load(Ordering::Relaxed)
            .min(args.steady_jobs as u64);
    let _ = enqueued_tx.send(true);
    for w in workers {
        w.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let done = completed.load(Ordering::Relaxed);
    ensure_drained(fresh, done, args.steady_jobs).await?;
    println!(
        "jobs    steady, {producers} producers x {chunk}/tx {done:>9} jobs  {:>10.0} jobs/s  (enqueued at {:.0}/s; {behind} waiting when the last was enqueued)",
        done as f64 / elapsed,
        args.steady_jobs as f64 / enqueue_secs
    );
    Ok(())
}
