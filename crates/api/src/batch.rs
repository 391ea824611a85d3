//! The server's batch machinery: job workers, the NOTIFY listener that wakes
//! them, the coalesced counter apply and the group-committed analytics
//! collector. [`start`] spawns them
//! all; they stop when the server's stop signal fires, the collector after
//! writing (and answering) everything already submitted.

use std::sync::Arc;

use tenantry_db::Db;
use tenantry_jobs::announcements::{self, FanOut};
use tenantry_jobs::ingest::{self, Collector, Ingest, IngestConfig};
use tenantry_jobs::{Registry, Worker, WorkerConfig};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

/// What the handlers and the server share of the batch machinery.
pub struct Batch {
    /// Where `POST /v1/analytics/events` submits.
    pub ingest: Ingest,
    /// Taken by [`start`]; a server runs one collector.
    collector: std::sync::Mutex<Option<Collector>>,
    /// Woken by the NOTIFY listener.
    pub wake: Arc<Notify>,
    /// Queue workers per server.
    pub workers: usize,
    pub worker_config: WorkerConfig,
    /// How often post counter deltas are applied.
    pub counter_interval: std::time::Duration,
    /// Where export archives (and uploaded imports) are kept.
    pub export_dir: std::path::PathBuf,
    /// Where alert webhooks are delivered (`alert.webhook` jobs), if anywhere.
    pub alert_webhook: Option<crate::observe::webhook::Webhook>,
}

impl Batch {
    pub fn new(db: &Db, ingest: IngestConfig) -> Self {
        let (handle, collector) = ingest::channel(db.clone(), ingest);
        Self {
            ingest: handle,
            collector: std::sync::Mutex::new(Some(collector)),
            wake: Arc::new(Notify::new()),
            workers: 2,
            worker_config: WorkerConfig::default(),
            counter_interval: std::time::Duration::from_secs(1),
            export_dir: std::path::PathBuf::from(crate::config::DEFAULT_DATA_DIR).join("exports"),
            alert_webhook: None,
        }
    }

    /// Every job kind the server runs, with its handler.
    pub fn registry(&self) -> Registry {
        let registry = Registry::new().register(announcements::FANOUT, FanOut::default());
        match &self.alert_webhook {
            Some(w) => registry.register(
                crate::observe::alerts::WEBHOOK_JOB,
                crate::observe::webhook::Deliver::new(w.clone()),
            ),
            None => registry,
        }
    }
}

/// Spawns the workers, the listener and the collector.
pub fn start(
    db: &Db,
    batch: &Batch,
    cache: &Arc<tenantry_cache::Cache>,
    stop: &watch::Receiver<bool>,
    platform: Registry,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    let collector = batch
        .collector
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    if let Some(collector) = collector {
        tasks.push(tokio::spawn(collector.run(stop.clone())));
    }
    tasks.push(tokio::spawn(tenantry_jobs::worker::listen(
        db.clone(),
        batch.wake.clone(),
        stop.clone(),
    )));
    let counters_cache = cache.clone();
    tasks.push(tokio::spawn(tenantry_jobs::counters::run(
        db.clone(),
        batch.counter_interval,
        stop.clone(),
        // New counts: the tenants' cached first pages of posts must go.
        move |tenants| {
            let cache = counters_cache.clone();
            tokio::spawn(async move { cache.bump_lists(&tenants, "posts").await });
        },
    )));
    // The platform lane: maintenance jobs (and tenant moves, `platform`),
    // one at a time, on a worker of their own (tenantry_jobs::platform).
    let lane = Arc::new(tenantry_jobs::platform::PlatformLane::new(
        db.clone(),
        platform,
        batch.worker_config.clone(),
    ));
    tasks.push(tokio::spawn(lane.run(batch.wake.clone(), stop.clone())));
    for _ in 0..batch.workers {
        let registry =
            crate::lifecycle::register(batch.registry(), &batch.export_dir, cache.clone());
        let worker = Arc::new(Worker::new(
            db.clone(),
            registry,
            batch.worker_config.clone(),
        ));
        tasks.push(tokio::spawn(worker.run(batch.wake.clone(), stop.clone())));
    }
    tasks
}

/// Spawns the machinery of a cell beside `main` ([`crate::cells`]): its
/// analytics collector, its NOTIFY listener, its counter apply and its
/// queue workers (the same job kinds as `main`'s), all on the cell's
/// database. Maintenance jobs of the platform lane stay on `main`.
pub fn start_cell(
    cell: &crate::cells::Cell,
    batch: &Batch,
    cache: &Arc<tenantry_cache::Cache>,
    stop: &watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    if let Some(collector) = cell.take_collector() {
        tasks.push(tokio::spawn(collector.run(stop.clone())));
    }
    tasks.push(tokio::spawn(tenantry_jobs::worker::listen(
        cell.db.clone(),
        cell.wake.clone(),
        stop.clone(),
    )));
    let counters_cache = cache.clone();
    tasks.push(tokio::spawn(tenantry_jobs::counters::run(
        cell.db.clone(),
        batch.counter_interval,
        stop.clone(),
        move |tenants| {
            let cache = counters_cache.clone();
            tokio::spawn(async move { cache.bump_lists(&tenants, "posts").await });
        },
    )));
    for _ in 0..batch.workers {
        let registry =
            crate::lifecycle::register(batch.registry(), &batch.export_dir, cache.clone());
        let worker = Arc::new(Worker::new(
            cell.db.clone(),
            registry,
            batch.worker_config.clone(),
        ));
        tasks.push(tokio::spawn(worker.run(cell.wake.clone(), stop.clone())));
    }
    tasks
}
