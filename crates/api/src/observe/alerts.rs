//! Alerts: threshold, trend and noisy-neighbour, each with hysteresis.
//!
//! Evaluated every interval (a "minute", [`super::ObserveConfig::interval`])
//! on the interval's measurements of this node:
//!
//! - `threshold`: `p99_ms`, `error_rate`, `throttle_rate` or `db_wait_p99_ms`
//!   above the tenant's threshold for `for_minutes` consecutive intervals
//!   opens an alert; as many clean intervals (no traffic is clean) resolve
//!   it. A measure needs [`MIN_SAMPLES`] samples in the interval to count,
//!   so one slow request among three is no breach.
//! - `trend`: p99 rising over the last [`TREND_POINTS`] intervals, judged
//!   robustly: at least [`TREND_MIN_POINTS`] points, a positive Theil–Sen
//!   slope (the median of all pairwise slopes: one outlier cannot make it),
//!   and the median of the last third at least 1.5 times the first third's
//!   and 20 ms above it.
//! - `noisy_neighbour`: from the fair share's blame ([`tenantry_fairness::
//!   share::DbShare::take_blame`]): a tenant is noisy in an interval when a
//!   victim's db_wait p99 broke the victim's threshold, the tenant carries
//!   more than half of the waiting attributed to the victim, and it held the
//!   database at least twice as long as the victim did (a quiet tenant that holds
//!   little is never blamed for a flood's own waiting).
//!
//! An alert is a row (`tenant_alerts`), opened at most once per tenant, kind
//! and metric (a unique index: two nodes seeing the same breach open one);
//! each open and resolve enqueues a webhook delivery job in the same
//! transaction, when a webhook is configured.

use std::collections::{HashMap, HashSet, VecDeque};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use tenantry_core::Thresholds;
use tenantry_db::{Db, DbError, TenantContext};
use tenantry_fairness::share::Blame;
use uuid::Uuid;

use super::meter::Interval;

/// Samples a measure needs in an interval to be judged.
pub const MIN_SAMPLES: u64 = 5;
/// Intervals of p99 kept per tenant for trends.
pub const TREND_POINTS: usize = 60;
/// Points a trend needs.
pub const TREND_MIN_POINTS: usize = 20;

/// Job kind of a webhook delivery.
pub const WEBHOOK_JOB: &str = "alert.webhook";

/// An alert as the admin API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AlertView {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub tenant_slug: Option<String>,
    /// `threshold`, `trend` or `noisy_neighbour`.
    pub kind: String,
    pub metric: String,
    pub value: f64,
    pub threshold: f64,
    pub opened_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    #[schema(value_type = Object)]
    pub detail: Value,
}

impl AlertView {
    pub fn read(r: &tokio_postgres::Row) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            id: r.try_get("id")?,
            tenant_id: r.try_get("tenant_id")?,
            tenant_slug: r.try_get("tenant_slug")?,
            kind: r.try_get("kind")?,
            metric: r.try_get("metric")?,
            value: r.try_get("value")?,
            threshold: r.try_get("threshold")?,
            opened_at: r.try_get("opened_at")?,
            resolved_at: r.try_get("resolved_at")?,
            detail: r.try_get("detail")?,
        })
    }
}

/// The columns [`AlertView::read`] reads, from `tenant_alerts a` joined to
/// `tenants t`.
pub const ALERT_COLUMNS: &str = "a.id, a.tenant_id, t.slug AS tenant_slug, a.kind, a.metric, \
     a.value, a.threshold, a.opened_at, a.resolved_at, a.detail";

/// A breach seen in one interval.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub tenant_id: Uuid,
    pub kind: &'static str,
    pub metric: &'static str,
    pub value: f64,
    pub threshold: f64,
    pub detail: Value,
}

/// What the evaluator decided: alerts to open and to resolve.
#[derive(Debug, Default)]
pub struct Decisions {
    pub open: Vec<Finding>,
    /// (tenant, kind, metric)
    pub resolve: Vec<(Uuid, &'static str, &'static str)>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Track {
    breached: u32,
    clean: u32,
    open: bool,
    /// The tenant's `for_minutes` when last breached.
    for_minutes: u32,
}

/// Hysteresis counters and trend points, per tenant. Bounded by the active
/// tenants: a tenant's entries go when it has no traffic, nothing open and
/// nothing counting.
#[derive(Default)]
pub struct Evaluator {
    tracks: HashMap<(Uuid, &'static str, &'static str), Track>,
    p99: HashMap<Uuid, VecDeque<f64>>,
}

/// The four threshold measures of an interval: (metric, value, threshold),
/// `None` when the interval has too few samples to judge.
fn measures(i: &Interval, t: &Thresholds) -> [(&'static str, Option<f64>, f64); 4] {
    let judged = i.requests >= MIN_SAMPLES;
    let rate = |n: u64| n as f64 / i.requests.max(1) as f64;
    [
        (
            "p99_ms",
            judged.then(|| i.latency.quantile_ms(0.99)),
            t.p99_ms,
        ),
        ("error_rate", judged.then(|| rate(i.errors)), t.error_rate),
        (
            "throttle_rate",
            judged.then(|| rate(i.throttled)),
            t.throttle_rate,
        ),
        (
            "db_wait_p99_ms",
            (i.db_wait.count() >= MIN_SAMPLES).then(|| i.db_wait.quantile_ms(0.99)),
            t.db_wait_p99_ms,
        ),
    ]
}

/// The Theil–Sen slope of `ys` over their indices: the median of all
/// pairwise slopes.
pub fn theil_sen(ys: &[f64]) -> f64 {
    let mut slopes = Vec::with_capacity(ys.len() * ys.len() / 2);
    for i in 0..ys.len() {
        for j in i + 1..ys.len() {
            slopes.push((ys[j] - ys[i]) / (j - i) as f64);
        }
    }
    median(&mut slopes)
}

fn median(xs: &mut [f64]) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.sort_by(f64::total_cmp);
    let mid = xs.len() / 2;
    if xs.len().is_multiple_of(2) {
        (xs[mid - 1] + xs[mid]) / 2.0
    } else {
        xs[mid]
    }
}

/// Whether `points` rise steadily (see the module doc); the first and last
/// thirds' medians when they do.
pub fn rising(points: &[f64]) -> Option<(f64, f64)> {
    if points.len() < TREND_MIN_POINTS {
        return None;
    }
    let third = points.len() / 3;
    let first = median(&mut points[..third].to_vec());
    let last = median(&mut points[points.len() - third..].to_vec());
    (theil_sen(points) > 0.0 && last >= first * 1.5 && last - first >= 20.0)
        .then_some((first, last))
}

impl Evaluator {
    /// Starts with the alerts already open in the database, so that they
    /// resolve after a restart.
    pub fn with_open(open: impl IntoIterator<Item = (Uuid, &'static str, &'static str)>) -> Self {
        let mut e = Evaluator::default();
        for key in open {
            e.tracks.insert(
                key,
                Track {
                    open: true,
                    for_minutes: 2,
                    ..Track::default()
                },
            );
        }
        e
    }

    /// One interval: its measurements, each tenant's thresholds, and the
    /// fair share's blame.
    pub fn evaluate(
        &mut self,
        intervals: &[Interval],
        thresholds: &dyn Fn(&Interval) -> Thresholds,
        blame: &[Blame],
    ) -> Decisions {
        let mut findings: Vec<(Finding, u32)> = Vec::new();
        let by_id: HashMap<Uuid, &Interval> = intervals.iter().map(|i| (i.tenant_id, i)).collect();
        let mut limits: HashMap<Uuid, Thresholds> = HashMap::new();
        for i in intervals {
            let t = thresholds(i);
            for (metric, value, threshold) in measures(i, &t) {
                if let Some(v) = value
                    && v > threshold
                {
                    findings.push((
                        Finding {
                            tenant_id: i.tenant_id,
                            kind: "threshold",
                            metric,
                            value: v,
                            threshold,
                            detail: json!({ "requests": i.requests }),
                        },
                        t.for_minutes,
                    ));
                }
            }
            if i.requests >= MIN_SAMPLES {
                let ring = self.p99.entry(i.tenant_id).or_default();
                ring.push_back(i.latency.quantile_ms(0.99));
                while ring.len() > TREND_POINTS {
                    ring.pop_front();
                }
                let points: Vec<f64> = ring.iter().copied().collect();
                if let Some((first, last)) = rising(&points) {
                    findings.push((
                        Finding {
                            tenant_id: i.tenant_id,
                            kind: "trend",
                            metric: "p99_ms",
                            value: last,
                            threshold: first,
                            detail: json!({
                                "points": points.len(),
                                "slope_ms_per_interval": theil_sen(&points),
                                "from_ms": first,
                                "to_ms": last,
                            }),
                        },
                        t.for_minutes,
                    ));
                }
            }
            limits.insert(i.tenant_id, t);
        }
        findings.extend(noisy(&by_id, &limits, blame));
        self.step(findings, &by_id)
    }

    /// Moves every track one interval on: breaches count up, the rest count
    /// clean.
    fn step(
        &mut self,
        findings: Vec<(Finding, u32)>,
        active: &HashMap<Uuid, &Interval>,
    ) -> Decisions {
        let mut decisions = Decisions::default();
        let mut seen = HashSet::new();
        for (finding, for_minutes) in findings {
            let key = (finding.tenant_id, finding.kind, finding.metric);
            if !seen.insert(key) {
                continue;
            }
            let track = self.tracks.entry(key).or_default();
            track.breached += 1;
            track.clean = 0;
            track.for_minutes = for_minutes.max(1);
            if !track.open && track.breached >= for_minutes.max(1) {
                track.open = true;
                decisions.open.push(finding);
            }
        }
        self.tracks.retain(|key, track| {
            if seen.contains(key) {
                return true;
            }
            track.breached = 0;
            if !track.open {
                return false;
            }
            track.clean += 1;
            if track.clean >= track.for_minutes.max(1) {
                decisions.resolve.push(*key);
                return false;
            }
            true
        });
        let tracks = &self.tracks;
        self.p99.retain(|id, _| {
            active.contains_key(id)
                || tracks
                    .keys()
                    .any(|(t, kind, _)| t == id && *kind == "trend")
        });
        decisions
    }
}

/// The noisy-neighbour findings of an interval (see the module doc).
fn noisy(
    by_id: &HashMap<Uuid, &Interval>,
    limits: &HashMap<Uuid, Thresholds>,
    blame: &[Blame],
) -> Vec<(Finding, u32)> {
    let mut on_victim: HashMap<Uuid, u64> = HashMap::new();
    for b in blame {
        *on_victim.entry(b.victim).or_default() += b.wait_us;
    }
    let mut victims_of: HashMap<Uuid, Vec<(Uuid, u64)>> = HashMap::new();
    for b in blame {
        let Some(victim) = by_id.get(&b.victim) else {
            continue;
        };
        let Some(limit) = limits.get(&b.victim) else {
            continue;
        };
        let p99 = victim.db_wait.quantile_ms(0.99);
        let breached = victim.db_wait.count() >= MIN_SAMPLES && p99 > limit.db_wait_p99_ms;
        let total = on_victim.get(&b.victim).copied().unwrap_or(0);
        let culprit_time = by_id.get(&b.culprit).map_or(0, |c| c.db_time_us);
        if breached && b.wait_us * 2 > total && culprit_time >= victim.db_time_us.saturating_mul(2)
        {
            victims_of
                .entry(b.culprit)
                .or_default()
                .push((b.victim, b.wait_us));
        }
    }
    victims_of
        .into_iter()
        .map(|(culprit, mut victims)| {
            victims.sort_by_key(|(_, w)| std::cmp::Reverse(*w));
            let wait_ms: f64 = victims.iter().map(|(_, w)| *w as f64 / 1_000.0).sum();
            let threshold = victims
                .iter()
                .filter_map(|(v, _)| limits.get(v).map(|l| l.db_wait_p99_ms))
                .fold(f64::INFINITY, f64::min);
            let for_minutes = limits.get(&culprit).map_or(2, |l| l.for_minutes);
            let victims: Vec<Value> = victims
                .iter()
                .map(|(v, w)| {
                    json!({
                        "tenant_id": v,
                        "slug": by_id.get(v).map(|i| i.slug.clone()),
                        "wait_ms": *w as f64 / 1_000.0,
                        "db_wait_p99_ms": by_id.get(v).map(|i| i.db_wait.quantile_ms(0.99)),
                    })
                })
                .collect();
            (
                Finding {
                    tenant_id: culprit,
                    kind: "noisy_neighbour",
                    metric: "db_wait_caused_ms",
                    value: wait_ms,
                    threshold,
                    detail: json!({
                        "victims": victims,
                        "db_time_ms": by_id.get(&culprit).map_or(0.0, |c| c.db_time_us as f64 / 1_000.0),
                    }),
                },
                for_minutes,
            )
        })
        .collect()
}

/// Opens an alert (unless one of its tenant, kind and metric is open) and
/// enqueues its webhook delivery in the same transaction. Returns the
/// alert, if opened.
pub async fn open(db: &Db, f: &Finding, webhook: bool) -> Result<Option<AlertView>, DbError> {
    let mut tx = db
        .begin(&TenantContext::tenant(f.tenant_id, 10_000))
        .await?;
    let id = tenantry_db::new_id();
    let sql = format!(
        "WITH a AS (
             INSERT INTO tenant_alerts (tenant_id, id, kind, metric, value, threshold, detail)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (tenant_id, kind, metric) WHERE resolved_at IS NULL DO NOTHING
             RETURNING *)
         SELECT {ALERT_COLUMNS} FROM a JOIN tenants t ON t.id = a.tenant_id"
    );
    let kind = f.kind.to_owned();
    let metric = f.metric.to_owned();
    let value = if f.value.is_finite() { f.value } else { 0.0 };
    let threshold = if f.threshold.is_finite() {
        f.threshold
    } else {
        0.0
    };
    let row = tx
        .query_opt(
            &sql,
            &[
                &f.tenant_id,
                &id,
                &kind,
                &metric,
                &value,
                &threshold,
                &f.detail,
            ],
        )
        .await?;
    let alert = row.map(|r| AlertView::read(&r)).transpose()?;
    if let Some(a) = &alert {
        if webhook {
            deliver(&mut tx, "alert.opened", a).await?;
        }
        tracing::warn!(tenant = %a.tenant_id, kind = %a.kind, metric = %a.metric, value = a.value, "alert opened");
        metrics::counter!("tenantry_alerts_opened_total", "kind" => f.kind).increment(1);
    }
    tx.commit().await?;
    Ok(alert)
}

/// Resolves the open alert of `tenant`, `kind` and `metric`, if any, and
/// enqueues its webhook delivery in the same transaction.
pub async fn resolve(
    db: &Db,
    (tenant, kind, metric): (Uuid, &str, &str),
    webhook: bool,
) -> Result<Option<AlertView>, DbError> {
    let mut tx = db.begin(&TenantContext::tenant(tenant, 10_000)).await?;
    let sql = format!(
        "WITH a AS (
             UPDATE tenant_alerts SET resolved_at = now()
              WHERE tenant_id = $1 AND kind = $2 AND metric = $3 AND resolved_at IS NULL
             RETURNING *)
         SELECT {ALERT_COLUMNS} FROM a JOIN tenants t ON t.id = a.tenant_id"
    );
    let row = tx.query_opt(&sql, &[&tenant, &kind, &metric]).await?;
    let alert = row.map(|r| AlertView::read(&r)).transpose()?;
    if let Some(a) = &alert {
        if webhook {
            deliver(&mut tx, "alert.resolved", a).await?;
        }
        tracing::info!(tenant = %a.tenant_id, kind = %a.kind, metric = %a.metric, "alert resolved");
    }
    tx.commit().await?;
    Ok(alert)
}

/// Enqueues the webhook delivery of `event` for `alert` (a job of the
/// alert's tenant, retried by the queue).
async fn deliver(tx: &mut tenantry_db::Tx, event: &str, alert: &AlertView) -> Result<(), DbError> {
    let body = json!({ "event": event, "alert": alert });
    let job = tenantry_jobs::NewJob::new(WEBHOOK_JOB, body).max_attempts(8);
    tenantry_jobs::queue::enqueue(tx, alert.tenant_id, &job).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::meter::{Hist, Interval};

    fn interval(id: Uuid, requests: u64, p99_bucket: usize) -> Interval {
        let mut latency = Hist::default();
        latency.0[p99_bucket] = requests;
        Interval {
            tenant_id: id,
            slug: "t".into(),
            tier: "free".into(),
            requests,
            errors: 0,
            throttled: 0,
            shed: 0,
            latency,
            db_time_us: 0,
            db_wait: Hist::default(),
            cache_hits: 0,
            cache_misses: 0,
        }
    }

    #[test]
    fn a_threshold_alert_opens_after_for_minutes_breaches_and_resolves_after_as_many_clean() {
        let id = Uuid::now_v7();
        let t = |_: &Interval| Thresholds {
            p99_ms: 100.0,
            ..Thresholds::default()
        };
        let mut e = Evaluator::default();
        let slow = [interval(id, 50, 20)];
        let fast = [interval(id, 50, 2)];
        assert!(e.evaluate(&slow, &t, &[]).open.is_empty(), "one minute");
        let d = e.evaluate(&slow, &t, &[]);
        assert_eq!(d.open.len(), 1);
        assert_eq!(d.open[0].metric, "p99_ms");
        assert!(e.evaluate(&slow, &t, &[]).open.is_empty(), "already open");
        assert!(e.evaluate(&fast, &t, &[]).resolve.is_empty(), "one clean");
        assert_eq!(
            e.evaluate(&fast, &t, &[]).resolve,
            vec![(id, "threshold", "p99_ms")]
        );
        // A single slow minute among fast ones never opens one.
        for _ in 0..5 {
            assert!(e.evaluate(&slow, &t, &[]).open.len() <= 1);
            let d = e.evaluate(&fast, &t, &[]);
            assert!(d.open.is_empty());
        }
    }

    #[test]
    fn a_trend_needs_a_sustained_rise_not_one_outlier() {
        let flat: Vec<f64> = (0..40)
            .map(|i| if i == 35 { 900.0 } else { 20.0 })
            .collect();
        assert_eq!(rising(&flat), None);
        let climbing: Vec<f64> = (0..40).map(|i| 20.0 + f64::from(i) * 3.0).collect();
        assert!(rising(&climbing).is_some());
        assert_eq!(rising(&climbing[..10]), None, "too few points");
    }
}
