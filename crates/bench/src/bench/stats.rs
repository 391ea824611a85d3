//! Recording latencies while load runs, and turning them into results.
//!
//! Totals and operations use HdrHistograms with three significant digits;
//! per-tenant histograms use two (a tenant's p99 needs no more, and there
//! may be hundreds of tenants). Per-second values per tenant use a small
//! log-bucketed histogram ([`SecondHistogram`], ~9% resolution), enough to
//! draw latency over time and correlate tenants without an HdrHistogram per
//! second. Workers lock one mutex per record; at the request rates two cores
//! can serve, that costs far less than the request itself.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

use crate::report::{OperationResult, Percentiles, Series};

/// Longest latency a histogram holds (longer ones are clamped): 60 s.
const MAX_MICROS: u64 = 60_000_000;

fn histogram(sigfig: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, sigfig).expect("valid histogram bounds")
}

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An HTTP status (below 400 counts as success).
    Status(u16),
    /// No answer: the connection failed.
    Io,
    /// No answer within the request timeout.
    Timeout,
}

impl Outcome {
    pub fn ok(self) -> bool {
        matches!(self, Outcome::Status(s) if s < 400)
    }

    fn key(self) -> String {
        match self {
            Outcome::Status(s) => s.to_string(),
            Outcome::Io => "io".to_owned(),
            Outcome::Timeout => "timeout".to_owned(),
        }
    }
}

/// Counts and latencies of a set of requests.
struct Aggregate {
    hist: Histogram<u64>,
    requests: u64,
    ok: u64,
    errors: BTreeMap<String, u64>,
}

impl Aggregate {
    fn new(sigfig: u8) -> Self {
        Self {
            hist: histogram(sigfig),
            requests: 0,
            ok: 0,
            errors: BTreeMap::new(),
        }
    }

    /// Successes and timeouts go into the latency histogram: a request that
    /// got no answer within the timeout took at least that long, and leaving
    /// it out would make a stalling server's percentiles look better. Fast
    /// error answers (a 429, a refused connection) stay out, so they never
    /// improve a percentile either.
    fn record(&mut self, micros: u64, outcome: Outcome) {
        self.requests += 1;
        if outcome.ok() || outcome == Outcome::Timeout {
            self.hist.saturating_record(micros.clamp(1, MAX_MICROS));
        }
        if outcome.ok() {
            self.ok += 1;
        } else {
            *self.errors.entry(outcome.key()).or_default() += 1;
        }
    }
}

/// Percentiles of a histogram of microseconds, in milliseconds.
pub fn percentiles(hist: &Histogram<u64>) -> Percentiles {
    if hist.is_empty() {
        return Percentiles::default();
    }
    let ms = |us: u64| us as f64 / 1_000.0;
    Percentiles {
        p50: ms(hist.value_at_quantile(0.50)),
        p90: ms(hist.value_at_quantile(0.90)),
        p99: ms(hist.value_at_quantile(0.99)),
        p999: ms(hist.value_at_quantile(0.999)),
        max: ms(hist.max()),
        mean: hist.mean() / 1_000.0,
    }
}

/// A coarse histogram of one second's latencies: bucket `i` holds values
/// around `2^(i/8)` microseconds (each bucket ~9% wide).
#[derive(Clone)]
pub struct SecondHistogram {
    buckets: Vec<u32>,
}

const STEPS_PER_DOUBLING: f64 = 8.0;
const SECOND_BUCKETS: usize = 8 * 27; // up to 2^27 µs ≈ 134 s

impl Default for SecondHistogram {
    fn default() -> Self {
        Self {
            buckets: vec![0; SECOND_BUCKETS],
        }
    }
}

impl SecondHistogram {
    fn bucket(micros: u64) -> usize {
        let v = micros.max(1) as f64;
        ((v.log2() * STEPS_PER_DOUBLING) as usize).min(SECOND_BUCKETS - 1)
    }

    pub fn record(&mut self, micros: u64) {
        self.buckets[Self::bucket(micros)] += 1;
    }

    /// The value at quantile `q`, in microseconds (the bucket's midpoint).
    pub fn quantile(&self, q: f64) -> f64 {
        let total: u64 = self.buckets.iter().map(|&c| u64::from(c)).sum();
        if total == 0 {
            return 0.0;
        }
        let rank = ((q * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.buckets.iter().enumerate() {
            seen += u64::from(c);
            if seen >= rank {
                return 2f64.powf((i as f64 + 0.5) / STEPS_PER_DOUBLING);
            }
        }
        2f64.powf(SECOND_BUCKETS as f64 / STEPS_PER_DOUBLING)
    }
}

#[derive(Default)]
struct Second {
    requests: u32,
    errors: u32,
    sum_micros: u64,
    hist: Option<Box<SecondHistogram>>,
}

struct TenantAggregate {
    total: Aggregate,
    /// noisy-neighbor: before and during the flood.
    phases: Option<[Aggregate; 2]>,
    seconds: Vec<Second>,
}

/// Live counters for the progress line.
#[derive(Default)]
pub struct Live {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
}

/// Everything recorded for one scenario.
pub struct Recorder {
    /// Requests scheduled (open loop) or sent (closed loop) before this are
    /// warm-up and not recorded.
    origin: Instant,
    /// noisy-neighbor: requests from here on are in the loaded phase.
    loaded_from: Option<Instant>,
    total: Mutex<Aggregate>,
    operations: Mutex<BTreeMap<&'static str, Aggregate>>,
    tenants: Vec<Mutex<TenantAggregate>>,
    pub live: Live,
    pub dropped: AtomicU64,
    /// Connections the load workers had to open again.
    pub reconnects: AtomicU64,
}

impl Recorder {
    pub fn new(origin: Instant, loaded_from: Option<Instant>, tenants: usize) -> Self {
        Self {
            origin,
            loaded_from,
            total: Mutex::new(Aggregate::new(3)),
            operations: Mutex::new(BTreeMap::new()),
            tenants: (0..tenants)
                .map(|_| {
                    Mutex::new(TenantAggregate {
                        total: Aggregate::new(2),
                        phases: loaded_from.map(|_| [Aggregate::new(2), Aggregate::new(2)]),
                        seconds: Vec::new(),
                    })
                })
                .collect(),
            live: Live::default(),
            dropped: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
        }
    }

    /// Records one request: `start` is when it was scheduled (open loop) or
    /// sent (closed loop), `latency` from then to its answer.
    pub fn record(
        &self,
        start: Instant,
        latency: Duration,
        tenant: Option<usize>,
        operation: &'static str,
        outcome: Outcome,
    ) {
        if start < self.origin {
            return; // warm-up
        }
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.live.requests.fetch_add(1, Ordering::Relaxed);
        if !outcome.ok() {
            self.live.errors.fetch_add(1, Ordering::Relaxed);
        }
        lock(&self.total).record(micros, outcome);
        lock(&self.operations)
            .entry(operation)
            .or_insert_with(|| Aggregate::new(3))
            .record(micros, outcome);
        let Some(t) = tenant.and_then(|t| self.tenants.get(t)) else {
            return;
        };
        let mut t = lock(t);
        t.total.record(micros, outcome);
        if let (Some(phases), Some(loaded)) = (&mut t.phases, self.loaded_from) {
            phases[usize::from(start >= loaded)].record(micros, outcome);
        }
        let second = usize::try_from((start - self.origin).as_secs()).unwrap_or(usize::MAX);
        if second < 86_400 {
            if t.seconds.len() <= second {
                t.seconds.resize_with(second + 1, Second::default);
            }
            let s = &mut t.seconds[second];
            s.requests += 1;
            if outcome.ok() {
                s.sum_micros += micros;
                s.hist.get_or_insert_with(Box::default).record(micros);
            } else {
                s.errors += 1;
            }
        }
    }

    /// The overall p99 so far, in milliseconds (for the progress line).
    pub fn p99_ms(&self) -> f64 {
        percentiles(&lock(&self.total).hist).p99
    }

    /// `(requests, ok, errors by status, latency)` of all requests.
    pub fn total(&self) -> (u64, u64, BTreeMap<String, u64>, Percentiles) {
        let t = lock(&self.total);
        (t.requests, t.ok, t.errors.clone(), percentiles(&t.hist))
    }

    pub fn operations(&self, seconds: f64) -> Vec<OperationResult> {
        lock(&self.operations)
            .iter()
            .map(|(name, a)| OperationResult {
                name: (*name).to_owned(),
                requests: a.requests,
                ok: a.ok,
                errors: a.requests - a.ok,
                throughput_rps: a.ok as f64 / seconds.max(1e-9),
                latency_ms: percentiles(&a.hist),
                errors_by_status: a.errors.clone(),
            })
            .collect()
    }

    /// One tenant's totals: `(requests, ok, errors by status, latency)`.
    /// A tenant not recorded (see [`Recorder::new`]) has none.
    pub fn tenant(&self, t: usize) -> (u64, u64, BTreeMap<String, u64>, Percentiles) {
        let Some(a) = self.tenants.get(t) else {
            return (0, 0, BTreeMap::new(), Percentiles::default());
        };
        let a = lock(a);
        (
            a.total.requests,
            a.total.ok,
            a.total.errors.clone(),
            percentiles(&a.total.hist),
        )
    }

    /// One tenant's `[before, during]` flood: `(requests, p99 ms)` each.
    pub fn tenant_phases(&self, t: usize) -> Option<[(u64, f64); 2]> {
        let a = lock(&self.tenants[t]);
        a.phases.as_ref().map(|[solo, loaded]| {
            [
                (solo.ok, percentiles(&solo.hist).p99),
                (loaded.ok, percentiles(&loaded.hist).p99),
            ]
        })
    }

    /// One tenant's per-second series.
    pub fn series(&self, t: usize) -> Series {
        let a = lock(&self.tenants[t]);
        let mut series = Series::default();
        for (i, s) in a.seconds.iter().enumerate() {
            if s.requests == 0 {
                continue;
            }
            let ok = s.requests - s.errors;
            series.t.push(i as u32);
            series.requests.push(s.requests);
            series.errors.push(s.errors);
            series.mean_ms.push(if ok > 0 {
                s.sum_micros as f64 / f64::from(ok) / 1_000.0
            } else {
                0.0
            });
            series.p99_ms.push(
                s.hist
                    .as_ref()
                    .map_or(0.0, |h| round3(h.quantile(0.99) / 1_000.0)),
            );
        }
        series
    }
}

fn round3(v: f64) -> f64 {
    (v * 1_000.0).round() / 1_000.0
}

/// Locks a mutex, recovering the data if a worker panicked while holding it
/// (the counts stay usable; the panic itself is reported by its task).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_histogram_quantiles_are_within_ten_percent() {
        let mut h = SecondHistogram::default();
        for us in 1..=10_000u64 {
            h.record(us);
        }
        for (q, exact) in [(0.5, 5_000.0), (0.9, 9_000.0), (0.99, 9_900.0)] {
            let got = h.quantile(q);
            assert!((got - exact).abs() / exact < 0.10, "q{q}: {got} vs {exact}");
        }
        assert_eq!(SecondHistogram::default().quantile(0.99), 0.0);
    }

    #[test]
    fn timeouts_count_in_the_percentiles_and_fast_errors_do_not() {
        let mut agg = Aggregate::new(3);
        for _ in 0..98 {
            agg.record(1_000, Outcome::Status(200));
        }
        agg.record(10_000_000, Outcome::Timeout);
        agg.record(10, Outcome::Status(429));
        let p = percentiles(&agg.hist);
        assert!(p.max >= 9_900.0, "a 10 s timeout shows in the tail: {p:?}");
        assert!((p.p50 - 1.0).abs() < 0.01, "{p:?}");
        assert_eq!(agg.hist.len(), 99, "the fast 429 is not a latency");
        assert_eq!((agg.requests, agg.ok), (100, 98));
    }

    #[tokio::test(start_paused = true)]
    async fn records_skip_warm_up_and_split_phases() {
        let t0 = Instant::now();
        let origin = t0 + Duration::from_secs(1);
        let loaded = origin + Duration::from_secs(2);
        let rec = Recorder::new(origin, Some(loaded), 2);
        let ms = Duration::from_millis;
        rec.record(t0, ms(50), Some(0), "op", Outcome::Status(200)); // warm-up
        rec.record(origin, ms(1), Some(0), "op", Outcome::Status(200));
        rec.record(
            origin + ms(1_500),
            ms(2),
            Some(0),
            "op",
            Outcome::Status(200),
        );
        rec.record(loaded + ms(10), ms(20), Some(0), "op", Outcome::Status(200));
        rec.record(loaded + ms(20), ms(1), Some(1), "op", Outcome::Status(429));
        rec.record(loaded + ms(30), ms(1), None, "healthz", Outcome::Io);
        let (requests, ok, errors, latency) = rec.total();
        assert_eq!((requests, ok), (5, 3));
        assert_eq!(errors.get("429"), Some(&1));
        assert_eq!(errors.get("io"), Some(&1));
        assert!((latency.max - 20.0).abs() < 0.1, "{latency:?}");
        let phases = rec.tenant_phases(0).expect("phases");
        assert_eq!(phases[0].0, 2);
        assert_eq!(phases[1].0, 1);
        assert!(phases[1].1 > phases[0].1);
        let s = rec.series(0);
        assert_eq!(s.t, vec![0, 1, 2]);
        assert_eq!(s.requests, vec![1, 1, 1]);
        let s1 = rec.series(1);
        assert_eq!((s1.t.clone(), s1.errors.clone()), (vec![2], vec![1]));
        assert_eq!(rec.operations(1.0).len(), 2);
    }
}
