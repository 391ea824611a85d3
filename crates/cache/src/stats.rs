//! Hits, misses, evictions and size by namespace, and hits and misses by
//! tenant (the tenant performance view), mirrored into `/metrics`.

use std::collections::HashMap;

use foldhash::fast::RandomState;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};

use uuid::Uuid;

use crate::Source;

#[derive(Debug, Default)]
pub struct NsStats {
    pub hits_l1: AtomicU64,
    pub hits_l2: AtomicU64,
    pub misses: AtomicU64,
    pub evictions: AtomicU64,
    pub entries: AtomicI64,
}

/// One namespace's figures.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NsSnapshot {
    pub cache: &'static str,
    pub hits_l1: u64,
    pub hits_l2: u64,
    pub misses: u64,
    pub evictions: u64,
    pub entries: i64,
}

/// A tenant's cache use and traffic on this node.
#[derive(Debug, Default)]
pub struct TenantStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    /// Tenant-scoped requests seen, for warming the busiest tenants first.
    pub requests: AtomicU64,
    /// `requests` when last flushed to the database.
    pub flushed: AtomicU64,
}

impl TenantStats {
    /// Hits ÷ lookups, `None` before any lookup.
    pub fn hit_rate(&self) -> Option<f64> {
        let (h, m) = (self.hits.load(Relaxed), self.misses.load(Relaxed));
        (h + m > 0).then(|| h as f64 / (h + m) as f64)
    }
}

/// Read several times per request: plain maps under read locks (a fraction
/// of a cache lookup's cost). One small entry per tenant seen since start.
#[derive(Default)]
pub struct Stats {
    by_ns: RwLock<HashMap<&'static str, Arc<NsStats>, RandomState>>,
    tenants: RwLock<HashMap<Uuid, Arc<TenantStats>, RandomState>>,
}

impl Stats {
    pub fn ns(&self, ns: &'static str) -> Arc<NsStats> {
        if let Some(s) = self.by_ns.read().unwrap_or_else(|e| e.into_inner()).get(ns) {
            return s.clone();
        }
        self.by_ns
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(ns)
            .or_default()
            .clone()
    }

    pub fn tenant(&self, tenant: Uuid) -> Arc<TenantStats> {
        if let Some(s) = self
            .tenants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&tenant)
        {
            return s.clone();
        }
        self.tenants
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(tenant)
            .or_default()
            .clone()
    }

    /// Drops the figures of tenants `keep` says no to, unless a memo still
    /// holds them or their requests are not flushed yet. Returns how many
    /// went. (A meter that read a forgotten tenant's figures counts from
    /// zero again: it subtracts saturating.)
    pub fn forget_idle(&self, keep: impl Fn(&Uuid) -> bool) -> usize {
        let mut map = self.tenants.write().unwrap_or_else(|e| e.into_inner());
        let before = map.len();
        map.retain(|t, s| {
            keep(t)
                || Arc::strong_count(s) > 1
                || s.requests.load(Relaxed) != s.flushed.load(Relaxed)
        });
        crate::shrink_if_sparse(&mut map, 1_024);
        before - map.len()
    }

    /// Tenants with figures kept.
    pub fn tenants_len(&self) -> usize {
        self.tenants.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub(crate) fn hit(&self, ns: &'static str, tenant: Uuid, source: Source) {
        count_in(
            &self.by_ns,
            &ns,
            || self.ns(ns),
            |s| {
                match source {
                    Source::L1 => s.hits_l1.fetch_add(1, Relaxed),
                    Source::L2 => s.hits_l2.fetch_add(1, Relaxed),
                    Source::Loaded => s.misses.fetch_add(1, Relaxed),
                };
            },
        );
        if !tenant.is_nil() {
            count_in(
                &self.tenants,
                &tenant,
                || self.tenant(tenant),
                |t| {
                    match source {
                        Source::Loaded => t.misses.fetch_add(1, Relaxed),
                        Source::L1 | Source::L2 => t.hits.fetch_add(1, Relaxed),
                    };
                },
            );
        }
    }

    /// A verified-token lookup (the token cache lives with the verifier).
    pub fn token_hit(&self, hit: bool) {
        let s = self.ns("token");
        if hit {
            s.hits_l1.fetch_add(1, Relaxed);
        } else {
            s.misses.fetch_add(1, Relaxed);
        }
    }

    pub(crate) fn inserted(&self, ns: &'static str) {
        self.ns(ns).entries.fetch_add(1, Relaxed);
    }

    pub(crate) fn removed(&self, ns: &'static str, evicted: bool) {
        let s = self.ns(ns);
        s.entries.fetch_sub(1, Relaxed);
        if evicted {
            s.evictions.fetch_add(1, Relaxed);
        }
    }

    /// Copies the counters into the metrics recorder (at `/metrics`
    /// render): the hot path only bumps atomics.
    pub fn export(&self) {
        for s in self.snapshot() {
            let ns = s.cache;
            metrics::counter!("tenantry_cache_hits_total", "cache" => ns, "level" => "l1")
                .absolute(s.hits_l1);
            metrics::counter!("tenantry_cache_hits_total", "cache" => ns, "level" => "l2")
                .absolute(s.hits_l2);
            metrics::counter!("tenantry_cache_misses_total", "cache" => ns).absolute(s.misses);
            metrics::counter!("tenantry_cache_evictions_total", "cache" => ns)
                .absolute(s.evictions);
            metrics::gauge!("tenantry_cache_entries", "cache" => ns).set(s.entries as f64);
        }
    }

    /// Every namespace's figures, by name.
    pub fn snapshot(&self) -> Vec<NsSnapshot> {
        let map = self.by_ns.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<NsSnapshot> = map
            .iter()
            .map(|(ns, s)| NsSnapshot {
                cache: ns,
                hits_l1: s.hits_l1.load(Relaxed),
                hits_l2: s.hits_l2.load(Relaxed),
                misses: s.misses.load(Relaxed),
                evictions: s.evictions.load(Relaxed),
                entries: s.entries.load(Relaxed),
            })
            .collect();
        out.sort_by_key(|s| s.cache);
        out
    }

    /// Each tenant's requests since the last call, marked as flushed.
    pub fn take_traffic(&self) -> Vec<(Uuid, u64)> {
        self.tenants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(|(id, s)| {
                let now = s.requests.load(Relaxed);
                let before = s.flushed.swap(now, Relaxed);
                (now > before).then(|| (*id, now - before))
            })
            .collect()
    }

    /// The `n` tenants with the most requests on this node, busiest first.
    pub fn busiest(&self, n: usize) -> Vec<Uuid> {
        let mut all: Vec<(Uuid, u64)> = self
            .tenants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(id, s)| (*id, s.requests.load(Relaxed)))
            .filter(|(_, r)| *r > 0)
            .collect();
        all.sort_by_key(|(_, r)| std::cmp::Reverse(*r));
        all.into_iter().take(n).map(|(id, _)| id).collect()
    }
}

/// Counts into `map`'s entry for `key` under the read lock when it exists
/// (every request counts several hits: no `Arc` clone, no allocation), else
/// into the entry `make` inserts.
fn count_in<K: std::hash::Hash + Eq, V>(
    map: &RwLock<HashMap<K, Arc<V>, RandomState>>,
    key: &K,
    make: impl FnOnce() -> Arc<V>,
    count: impl Fn(&V),
) {
    if let Some(v) = map.read().unwrap_or_else(|e| e.into_inner()).get(key) {
        count(v);
        return;
    }
    count(&make());
}
