//! Observe every tenant: per-tenant measurements, their history, alerts,
//! the noisy-neighbour detector and the bounded per-tenant Prometheus series.
//!
//! - [`meter`]: taken in the request path ([`crate::telemetry::observe`] for
//!   requests, outcomes and latency; [`crate::request::admission`] for the
//!   wait for the fair database share and the time holding it), a few atomic
//!   adds per request.
//! - [`run`]: every interval (a minute by default,
//!   `TENANTRY_OBSERVE_INTERVAL_SECS`), drains the meters, writes the
//!   tenants with traffic a few hundred per statement ([`history::flush`]), ranks
//!   tenants for `/metrics` ([`top`]), evaluates alerts ([`alerts`]) with the
//!   fair share's blame; now and then makes partitions, rolls minutes up
//!   into hours and recomputes storage ([`storage`]).

pub mod alerts;
pub mod history;
pub mod meter;
pub mod storage;
pub mod top;
pub mod webhook;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tenantry_core::{ThresholdOverrides, Thresholds};
use tokio::sync::watch;
use uuid::Uuid;

use crate::state::AppState;

/// How the observer runs.
#[derive(Debug, Clone)]
pub struct ObserveConfig {
    /// The length of a "minute": how often meters are drained, flushed and
    /// judged. 60 s in production; tests shorten it.
    pub interval: Duration,
    /// Tenants with their own series in `/metrics`.
    pub top_k: usize,
    /// How often the storage pass runs.
    pub storage_every: Duration,
    /// Where alerts are POSTed (through the job queue), if anywhere.
    pub webhook: Option<webhook::Webhook>,
    /// Whether requests are measured at all (off only to measure the cost).
    pub record: bool,
}

impl Default for ObserveConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(60),
            top_k: top::DEFAULT_TOP_K,
            storage_every: Duration::from_secs(3_600),
            webhook: None,
            record: true,
        }
    }
}

/// The observer's state, shared by the request path and the worker.
pub struct Observe {
    pub config: ObserveConfig,
    pub meters: meter::Meters,
    pub top: Mutex<top::TopK>,
    evaluator: Mutex<Option<alerts::Evaluator>>,
}

impl Observe {
    pub fn new(config: ObserveConfig) -> Self {
        let top = top::TopK::new(config.top_k);
        Self {
            config,
            meters: meter::Meters::default(),
            top: Mutex::new(top),
            evaluator: Mutex::new(None),
        }
    }

    /// The per-tenant families of `/metrics` (top K and `_other`).
    pub fn prometheus(&self) -> String {
        self.top
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .rendered()
            .to_owned()
    }
}

impl Default for Observe {
    fn default() -> Self {
        Self::new(ObserveConfig::default())
    }
}

/// How often partitions are made and minutes rolled up.
const UPKEEP_EVERY: Duration = Duration::from_secs(900);

/// The observer's loop: one [`tick`] per interval until `stop` (a last one
/// then, so a clean stop loses no measurement).
pub async fn run(state: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    let interval = state
        .observe
        .config
        .interval
        .max(Duration::from_millis(100));
    let mut last_upkeep: Option<tokio::time::Instant> = None;
    let mut last_storage = tokio::time::Instant::now();
    loop {
        let stopping = tokio::select! {
            _ = stop.changed() => true,
            () = tokio::time::sleep(interval) => false,
        };
        if last_upkeep.is_none_or(|at| at.elapsed() >= UPKEEP_EVERY) {
            upkeep(&state).await;
            last_upkeep = Some(tokio::time::Instant::now());
        }
        tick(&state).await;
        if last_storage.elapsed() >= state.observe.config.storage_every {
            last_storage = tokio::time::Instant::now();
            if let Err(e) = storage::compute(&state.db).await {
                tracing::warn!(error = format!("{e:#}"), "storage pass failed");
            }
        }
        if stopping {
            return;
        }
    }
}

/// Partitions of the minute table and the hourly rollup of the last hours.
pub async fn upkeep(state: &AppState) {
    if let Err(e) = history::maintain_partitions(&state.db).await {
        tracing::warn!(
            error = format!("{e:#}"),
            "performance partitions: will retry"
        );
    }
    let from = history::now_hour() - chrono::Duration::hours(3);
    if let Err(e) = history::roll_up(&state.db, from).await {
        tracing::warn!(error = %e, "performance rollup failed: will retry");
    }
}

/// One interval: drain, flush, rank, judge.
pub async fn tick(state: &AppState) {
    let observe = &state.observe;
    let stats = &state.cache.stats;
    let intervals = observe.meters.take(|id| {
        let t = stats.tenant(id);
        (
            t.hits.load(std::sync::atomic::Ordering::Relaxed),
            t.misses.load(std::sync::atomic::Ordering::Relaxed),
        )
    });
    let minute = history::minute_of(chrono::Utc::now());
    if let Err(e) = history::flush(&state.db, minute, &intervals).await {
        metrics::counter!("tenantry_observe_flush_failures_total").increment(1);
        tracing::warn!(error = %e, tenants = intervals.len(), "performance flush failed");
    }
    metrics::gauge!("tenantry_observe_tenants").set(observe.meters.len() as f64);
    observe
        .top
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .update(&intervals, observe.config.interval);
    let blame = state.fairness.db_share.take_blame();
    judge(state, &intervals, &blame).await;
}

/// Evaluates the interval's alerts and writes what opened or resolved.
async fn judge(
    state: &AppState,
    intervals: &[meter::Interval],
    blame: &[tenantry_fairness::share::Blame],
) {
    let observe = &state.observe;
    let needs_start = observe
        .evaluator
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .is_none();
    if needs_start {
        match open_alerts(state).await {
            Ok(open) => {
                *observe.evaluator.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(alerts::Evaluator::with_open(open));
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not read open alerts: will retry");
                return;
            }
        }
    }
    let ids: Vec<Uuid> = intervals.iter().map(|i| i.tenant_id).collect();
    let overrides = match overrides(state, &ids).await {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(error = %e, "could not read thresholds");
            return;
        }
    };
    let tiers = state.tiers.load();
    let thresholds = |i: &meter::Interval| -> Thresholds {
        let tier = &tiers.limits(&i.tier).thresholds;
        overrides
            .get(&i.tenant_id)
            .map_or_else(|| tier.clone(), |o| tier.with(o))
    };
    let decisions = {
        let mut guard = observe.evaluator.lock().unwrap_or_else(|e| e.into_inner());
        let Some(evaluator) = guard.as_mut() else {
            return;
        };
        evaluator.evaluate(intervals, &thresholds, blame)
    };
    let webhook = observe.config.webhook.is_some();
    for f in &decisions.open {
        if let Err(e) = alerts::open(&state.db, f, webhook).await {
            tracing::warn!(error = %e, tenant = %f.tenant_id, "could not open an alert");
        }
    }
    if webhook && !decisions.open.is_empty() {
        state.batch.wake.notify_waiters();
    }
    for key in &decisions.resolve {
        if let Err(e) = alerts::resolve(&state.db, *key, webhook).await {
            tracing::warn!(error = %e, tenant = %key.0, "could not resolve an alert");
        }
    }
}

/// The alerts open now, as the evaluator keys them.
async fn open_alerts(
    state: &AppState,
) -> Result<Vec<(Uuid, &'static str, &'static str)>, tenantry_db::DbError> {
    let rows = history::as_observer(
        &state.db,
        "SELECT tenant_id, kind, metric FROM tenant_alerts WHERE resolved_at IS NULL",
        &[],
    )
    .await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let kind = static_name(&r.get::<_, String>(1))?;
            let metric = static_name(&r.get::<_, String>(2))?;
            Some((r.get(0), kind, metric))
        })
        .collect())
}

/// The evaluator's names for kinds and metrics.
fn static_name(s: &str) -> Option<&'static str> {
    [
        "threshold",
        "trend",
        "noisy_neighbour",
        "p99_ms",
        "error_rate",
        "throttle_rate",
        "db_wait_p99_ms",
        "db_wait_caused_ms",
    ]
    .into_iter()
    .find(|n| *n == s)
}

/// Tenants' own thresholds, for those of `ids` that set any.
pub async fn overrides(
    state: &AppState,
    ids: &[Uuid],
) -> Result<std::collections::HashMap<Uuid, ThresholdOverrides>, tenantry_db::DbError> {
    if ids.is_empty() {
        return Ok(Default::default());
    }
    let rows = history::as_observer(
        &state.db,
        "SELECT id, thresholds FROM tenants WHERE id = ANY($1) AND thresholds <> '{}'::jsonb",
        &[&ids],
    )
    .await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let value: serde_json::Value = r.get(1);
            serde_json::from_value(value).ok().map(|o| (r.get(0), o))
        })
        .collect())
}

/// A tenant's thresholds in force: its tier's with its own.
pub fn effective(state: &AppState, tier: &str, own: &serde_json::Value) -> Thresholds {
    let tier = state.tiers.load().limits(tier).thresholds.clone();
    match serde_json::from_value::<ThresholdOverrides>(own.clone()) {
        Ok(o) => tier.with(&o),
        Err(_) => tier,
    }
}
