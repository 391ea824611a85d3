//! `tenantry bench-batch`: the batch machinery measured in-process against
//! a throwaway database, side by side in one run:
//!
//! - `ingest`: analytics events written one INSERT (and one commit) per
//!   event, against the same events through the group-commit collector,
//!   with one event per request and with many per request;
//! - `jobs`: no-op jobs through the queue (enqueue, claim, run, complete),
//!   drained by a few workers.
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
}

/// `tenantry bench-batch` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct BatchBenchArgs {
    /// Scenarios, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "ingest,jobs")]
    pub scenario: Vec<BatchScenario>,
    /// Tenants the events and jobs are spread over.
    #[arg(long, default_value_t = 20)]
    pub tenants: usize,
    /// Events written one INSERT per event (the baseline).
    #[arg(long, default_value_t = 5_000)]
    pub baseline_events: usize,
    /// Events written through the collector, per group-commit run.
    #[arg(long, default_value_t = 500_000)]
    pub events: usize,
    /// Events per request in the many-events group-commit run.
    #[arg(long, default_value_t = 100)]
    pub events_per_request: usize,
    /// Concurrent writers (requests in flight).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// No-op jobs through the queue.
    #[arg(long, default_value_t = 200_000)]
    pub jobs: usize,
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
    // Baseline: one INSERT and one commit per event.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..c {
        let (db, (t, u)) = (db.clone(), tenants[i % tenants.len()]);
        let n = share(args.baseline_events, c, i);
        tasks.push(tokio::spawn(async move {
            ingest::write_one_by_one(&db, t, u, &events(n)).await
        }));
    }
    for t in tasks {
        t.await??;
    }
    let baseline = args.baseline_events as f64 / started.elapsed().as_secs_f64();
    println!(
        "ingest  one INSERT per event      {:>9} events  {:>10.0} events/s",
        args.baseline_events, baseline
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
            "ingest  group commit, {per_request:>4}/request {written:>9} events  {rate:>10.0} events/s  ({:.0}x the baseline)",
            rate / baseline
        );
    }
    Ok(())
}

async fn jobs_bench(
    db: &Db,
    fresh: &FreshDatabase,
    tenants: &[(Uuid, Uuid)],
    args: &BatchBenchArgs,
) -> anyhow::Result<()> {
    let ids: Vec<Uuid> = tenants.iter().map(|(t, _)| *t).collect();
    let started = Instant::now();
    let chunk = 10_000;
    let mut left = args.jobs;
    let mut i = 0usize;
    while left > 0 {
        let n = left.min(chunk);
        let jobs: Vec<(Uuid, NewJob)> = (0..n)
            .map(|k| {
                (
                    ids[(i + k) % ids.len()],
                    NewJob::new("noop", serde_json::json!({})),
                )
            })
            .collect();
        let mut tx = db
            .begin(&TenantContext {
                tenant_ids: ids.clone(),
                statement_timeout_ms: 60_000,
            })
            .await?;
        queue::enqueue_many(&mut tx, &jobs).await?;
        tx.commit().await?;
        left -= n;
        i += n;
    }
    let enqueue = args.jobs as f64 / started.elapsed().as_secs_f64();
    println!(
        "jobs    enqueue (10,000 per statement) {:>9} jobs  {enqueue:>10.0} jobs/s",
        args.jobs
    );

    let config = WorkerConfig {
        batch_size: args.batch_size,
        concurrency: 64,
        poll_interval: Duration::from_millis(50),
        ..WorkerConfig::default()
    };
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
    let raw = fresh.connect().await;
    let done: i64 = raw
        .query_one("SELECT count(*) FROM jobs WHERE state = 'done'", &[])
        .await?
        .get(0);
    anyhow::ensure!(
        done as usize == args.jobs,
        "{done} of {} jobs done after draining",
        args.jobs
    );
    println!(
        "jobs    no-op, {} workers, batches of {} {completed:>9} jobs  {rate:>10.0} jobs/s",
        args.workers, args.batch_size
    );
    Ok(())
}
