//! Per-tenant measurements taken in the request path: a few atomic adds per
//! request into the tenant's [`TenantMeter`], drained once per interval by
//! [`Meters::take`]. This is the one place per-tenant traffic is aggregated;
//! other views (history, Prometheus, alerts, usage metering) read the
//! [`Interval`]s it yields.
//!
//! Bounded: at most [`MAX_TENANTS`] meters; a tenant idle for
//! [`IDLE_INTERVALS`] intervals is forgotten (a later request makes a new
//! meter). Requests of a tenant first seen while the map is full are counted
//! in `dropped` only.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use foldhash::fast::RandomState;
use uuid::Uuid;

/// Upper bounds of the histogram buckets in milliseconds; one more bucket
/// holds everything above the last. Fine below 10 ms, where a cached
/// request lives, and up to the longest statement timeout.
pub const BOUNDS_MS: [f64; 24] = [
    0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 25.0, 40.0, 60.0, 100.0, 150.0, 250.0, 400.0,
    600.0, 1_000.0, 1_500.0, 2_500.0, 4_000.0, 6_000.0, 10_000.0, 15_000.0,
];
/// Buckets of a histogram: one per bound and the overflow.
pub const BUCKETS: usize = BOUNDS_MS.len() + 1;

/// Meters kept at most.
pub const MAX_TENANTS: usize = 100_000;
/// Intervals without any traffic after which a tenant's meter is dropped.
pub const IDLE_INTERVALS: u32 = 5;

/// The bucket of a duration: a binary search over [`BOUNDS_MS`].
fn bucket(d: Duration) -> usize {
    let ms = d.as_secs_f64() * 1_000.0;
    BOUNDS_MS.partition_point(|b| *b < ms)
}

/// Bucket counts of durations (see [`BOUNDS_MS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Hist(pub [u64; BUCKETS]);

impl Hist {
    pub fn count(&self) -> u64 {
        self.0.iter().sum()
    }

    pub fn add(&mut self, other: &Hist) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a += b;
        }
    }

    /// Reads bucket counts as stored (a shorter array counts 0 beyond it).
    pub fn from_slice(counts: &[i64]) -> Hist {
        let mut h = Hist::default();
        for (slot, c) in h.0.iter_mut().zip(counts) {
            *slot = u64::try_from(*c).unwrap_or(0);
        }
        h
    }

    pub fn to_vec(&self) -> Vec<i64> {
        self.0
            .iter()
            .map(|c| i64::try_from(*c).unwrap_or(i64::MAX))
            .collect()
    }

    /// The `q` quantile in milliseconds, interpolated linearly inside its
    /// bucket; 0 for an empty histogram. The overflow bucket reads as the
    /// last bound.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        let total = self.count();
        if total == 0 {
            return 0.0;
        }
        let rank = (q.clamp(0.0, 1.0) * total as f64).max(1.0);
        let mut seen = 0.0;
        for (i, c) in self.0.iter().enumerate() {
            let c = *c as f64;
            if c > 0.0 && seen + c >= rank {
                let lower = if i == 0 { 0.0 } else { BOUNDS_MS[i - 1] };
                let Some(upper) = BOUNDS_MS.get(i) else {
                    return BOUNDS_MS[BOUNDS_MS.len() - 1];
                };
                return lower + (upper - lower) * ((rank - seen) / c);
            }
            seen += c;
        }
        BOUNDS_MS[BOUNDS_MS.len() - 1]
    }
}

/// One tenant's counters since the last [`Meters::take`].
pub struct TenantMeter {
    pub slug: Box<str>,
    pub tier: Box<str>,
    requests: AtomicU64,
    errors: AtomicU64,
    throttled: AtomicU64,
    shed: AtomicU64,
    latency: [AtomicU64; BUCKETS],
    db_time_us: AtomicU64,
    db_wait: [AtomicU64; BUCKETS],
    /// The tenant's cumulative cache hits and misses when last taken (only
    /// the draining task touches these).
    cache_seen: [AtomicU64; 2],
    /// Intervals in a row without traffic.
    idle: AtomicU32,
}

impl TenantMeter {
    fn new(slug: &str, tier: &str, cache_seen: (u64, u64)) -> Self {
        Self {
            slug: slug.into(),
            tier: tier.into(),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            shed: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
            db_time_us: AtomicU64::new(0),
            db_wait: std::array::from_fn(|_| AtomicU64::new(0)),
            cache_seen: [AtomicU64::new(cache_seen.0), AtomicU64::new(cache_seen.1)],
            idle: AtomicU32::new(0),
        }
    }

    fn quiet(&self) -> bool {
        self.requests.load(Relaxed) == 0
            && self.db_time_us.load(Relaxed) == 0
            && self.db_wait.iter().all(|b| b.load(Relaxed) == 0)
    }
}

/// How a request ended, as the meters count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// A server error (5xx other than shedding).
    Error,
    /// Turned away by a rate limit (429).
    Throttled,
    /// Turned away for want of capacity (503 `overloaded`).
    Shed,
}

impl Outcome {
    /// The outcome of a response with `status` and problem `code`.
    pub fn of(status: u16, code: Option<&str>) -> Outcome {
        match (status, code) {
            (429, _) => Outcome::Throttled,
            (503, Some("overloaded")) => Outcome::Shed,
            (500..=599, _) => Outcome::Error,
            _ => Outcome::Ok,
        }
    }
}

/// A tenant's traffic over one interval.
#[derive(Debug, Clone, PartialEq)]
pub struct Interval {
    pub tenant_id: Uuid,
    pub slug: String,
    pub tier: String,
    pub requests: u64,
    pub errors: u64,
    pub throttled: u64,
    pub shed: u64,
    pub latency: Hist,
    pub db_time_us: u64,
    pub db_wait: Hist,
    pub cache_hits: u64,
    pub cache_misses: u64,
}

/// Every tenant's meter.
#[derive(Default)]
pub struct Meters {
    map: RwLock<HashMap<Uuid, TenantMeter, RandomState>>,
    /// Samples of tenants first seen while the map was full.
    pub dropped: AtomicU64,
}

impl Meters {
    /// Counts into `tenant`'s meter under the read lock (no allocation, no
    /// reference count); makes the meter under the write lock the first
    /// time. `cache_seen` gives the tenant's cumulative cache figures when
    /// a meter is made.
    fn with(
        &self,
        tenant: Uuid,
        names: (&str, &str),
        cache_seen: impl FnOnce() -> (u64, u64),
        count: impl Fn(&TenantMeter),
    ) {
        if let Some(m) = self
            .map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&tenant)
        {
            count(m);
            return;
        }
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        if !map.contains_key(&tenant) && map.len() >= MAX_TENANTS {
            self.dropped.fetch_add(1, Relaxed);
            return;
        }
        let m = map
            .entry(tenant)
            .or_insert_with(|| TenantMeter::new(names.0, names.1, cache_seen()));
        count(m);
    }

    /// Counts a finished request of `tenant` (id, slug, tier).
    pub fn request(
        &self,
        tenant: (Uuid, &str, &str),
        latency: Duration,
        outcome: Outcome,
        cache_seen: impl FnOnce() -> (u64, u64),
    ) {
        let b = bucket(latency);
        self.with(tenant.0, (tenant.1, tenant.2), cache_seen, |m| {
            m.requests.fetch_add(1, Relaxed);
            m.latency[b].fetch_add(1, Relaxed);
            match outcome {
                Outcome::Ok => {}
                Outcome::Error => {
                    m.errors.fetch_add(1, Relaxed);
                }
                Outcome::Throttled => {
                    m.throttled.fetch_add(1, Relaxed);
                }
                Outcome::Shed => {
                    m.shed.fetch_add(1, Relaxed);
                }
            }
        });
    }

    /// Counts a wait for the tenant's fair database share.
    pub fn db_wait(
        &self,
        tenant: (Uuid, &str, &str),
        waited: Duration,
        cache_seen: impl FnOnce() -> (u64, u64),
    ) {
        let b = bucket(waited);
        self.with(tenant.0, (tenant.1, tenant.2), cache_seen, |m| {
            m.db_wait[b].fetch_add(1, Relaxed);
        });
    }

    /// Counts time the tenant held a database slot (and its connection).
    pub fn db_time(
        &self,
        tenant: (Uuid, &str, &str),
        held: Duration,
        cache_seen: impl FnOnce() -> (u64, u64),
    ) {
        let us = u64::try_from(held.as_micros()).unwrap_or(u64::MAX);
        self.with(tenant.0, (tenant.1, tenant.2), cache_seen, |m| {
            m.db_time_us.fetch_add(us, Relaxed);
        });
    }

    /// Tenants with a meter.
    pub fn len(&self) -> usize {
        self.map.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drains every meter: the traffic of each tenant that had any since the
    /// last call. `cache_now` gives a tenant's cumulative cache hits and
    /// misses. Meters idle for [`IDLE_INTERVALS`] are dropped.
    pub fn take(&self, cache_now: impl Fn(Uuid) -> (u64, u64)) -> Vec<Interval> {
        let mut out = Vec::new();
        let mut idle = Vec::new();
        {
            let map = self.map.read().unwrap_or_else(|e| e.into_inner());
            for (id, m) in map.iter() {
                let requests = m.requests.swap(0, Relaxed);
                let db_time_us = m.db_time_us.swap(0, Relaxed);
                let mut db_wait = Hist::default();
                for (slot, b) in db_wait.0.iter_mut().zip(&m.db_wait) {
                    *slot = b.swap(0, Relaxed);
                }
                if requests == 0 && db_time_us == 0 && db_wait.count() == 0 {
                    if m.idle.fetch_add(1, Relaxed) + 1 >= IDLE_INTERVALS {
                        idle.push(*id);
                    }
                    continue;
                }
                m.idle.store(0, Relaxed);
                let mut latency = Hist::default();
                for (slot, b) in latency.0.iter_mut().zip(&m.latency) {
                    *slot = b.swap(0, Relaxed);
                }
                let (hits, misses) = cache_now(*id);
                let hits_before = m.cache_seen[0].swap(hits, Relaxed);
                let misses_before = m.cache_seen[1].swap(misses, Relaxed);
                out.push(Interval {
                    tenant_id: *id,
                    slug: m.slug.to_string(),
                    tier: m.tier.to_string(),
                    requests,
                    errors: m.errors.swap(0, Relaxed),
                    throttled: m.throttled.swap(0, Relaxed),
                    shed: m.shed.swap(0, Relaxed),
                    latency,
                    db_time_us,
                    db_wait,
                    cache_hits: hits.saturating_sub(hits_before),
                    cache_misses: misses.saturating_sub(misses_before),
                });
            }
        }
        // A meter is ~500 bytes held in the table itself.
        tenantry_cache::remove_quiet(&self.map, idle, TenantMeter::quiet, 256);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_read_inside_their_bucket() {
        let mut h = Hist::default();
        h.0[bucket(Duration::from_micros(800))] += 99;
        h.0[bucket(Duration::from_millis(120))] += 1;
        assert!(h.quantile_ms(0.5) > 0.5 && h.quantile_ms(0.5) <= 1.0);
        assert!(h.quantile_ms(0.999) > 100.0 && h.quantile_ms(0.999) <= 150.0);
        assert_eq!(Hist::default().quantile_ms(0.99), 0.0);
        assert_eq!(Hist::from_slice(&h.to_vec()), h);
    }

    #[test]
    fn a_tenant_idle_for_some_intervals_is_forgotten_and_counts_are_never_lost() {
        let meters = Meters::default();
        let t = (Uuid::now_v7(), "acme", "free");
        for _ in 0..3 {
            meters.request(t, Duration::from_millis(2), Outcome::Ok, || (0, 0));
        }
        meters.request(t, Duration::from_millis(2), Outcome::Throttled, || (0, 0));
        let taken = meters.take(|_| (5, 1));
        assert_eq!(taken.len(), 1);
        assert_eq!((taken[0].requests, taken[0].throttled), (4, 1));
        assert_eq!((taken[0].cache_hits, taken[0].cache_misses), (5, 1));
        for _ in 0..IDLE_INTERVALS {
            assert!(meters.take(|_| (5, 1)).is_empty());
        }
        assert_eq!(meters.len(), 0, "an idle tenant is forgotten");
    }

    #[test]
    fn the_table_shrinks_when_a_crowd_of_tenants_goes_idle() {
        let meters = Meters::default();
        let capacity = || meters.map.read().expect("not poisoned").capacity();
        let busy = (Uuid::now_v7(), "busy", "free");
        for _ in 0..10_000 {
            let t = (Uuid::now_v7(), "crowd", "free");
            meters.request(t, Duration::from_millis(1), Outcome::Ok, || (0, 0));
        }
        let crowded = capacity();
        assert!(crowded >= 10_000);
        for _ in 0..=IDLE_INTERVALS {
            meters.request(busy, Duration::from_millis(1), Outcome::Ok, || (0, 0));
            meters.take(|_| (0, 0));
        }
        assert_eq!(meters.len(), 1, "only the busy tenant is kept");
        assert!(
            capacity() <= 4 * 256,
            "{} slots kept for 1 meter (were {crowded})",
            capacity()
        );
    }
}
