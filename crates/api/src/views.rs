//! Tenants' JSON views, memoized: what `GET /v1/tenant` and the memoized
//! caller serve without serializing again while nothing changed.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, Weak};

use serde::Serialize;
use serde_json::Value;
use tenantry_db::tenants::Tenant;
use uuid::Uuid;

/// Each tenant's summary as JSON, made once per (tenant record, platform
/// settings) pair: the cache hands out the same `Arc`s until either changes,
/// so the pointers say whether a memo is current. The memo holds `Weak`s,
/// which keep the allocations (not the values) alive, so an address is
/// never reused while a memo names it. Serializing the summary was ~4,000
/// of the ~88,000 instructions of a cached `GET /v1/tenant` (callgrind).
#[derive(Default)]
pub struct TenantViews {
    memos: RwLock<HashMap<Uuid, Memo, foldhash::fast::RandomState>>,
    inserted: std::sync::atomic::AtomicUsize,
}

struct Memo {
    tenant: Weak<Tenant>,
    platform: Weak<Value>,
    json: Arc<[u8]>,
}

/// Memos kept at most; beyond, the map starts over.
const MAX_MEMOS: usize = 100_000;

/// Insertions between two sweeps of dead memos: those whose tenant record
/// is no longer held anywhere (the cache let it go, so the memo can never
/// be current again). A memo is the summary's JSON (~500 bytes) and keeps
/// the record's allocation, so an idle tenant's would otherwise stay until
/// [`MAX_MEMOS`] others came.
const SWEEP_EVERY: usize = 1_024;

impl TenantViews {
    /// The JSON of `make()`, memoized for this `tenant` and `platform`.
    pub fn summary<S: Serialize>(
        &self,
        tenant: &Arc<Tenant>,
        platform: &Arc<Value>,
        make: impl FnOnce() -> S,
    ) -> Arc<[u8]> {
        let current = |m: &Memo| {
            std::ptr::eq(m.tenant.as_ptr(), Arc::as_ptr(tenant))
                && std::ptr::eq(m.platform.as_ptr(), Arc::as_ptr(platform))
        };
        if let Some(m) = self
            .memos
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&tenant.id)
            && current(m)
        {
            return m.json.clone();
        }
        let json: Arc<[u8]> = serde_json::to_vec(&make())
            .expect("a summary of strings, numbers and JSON values serializes")
            .into();
        let mut memos = self.memos.write().unwrap_or_else(|e| e.into_inner());
        let inserted = self
            .inserted
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if inserted % SWEEP_EVERY == SWEEP_EVERY - 1 || memos.len() >= MAX_MEMOS {
            Self::sweep_dead(&mut memos);
            if memos.len() >= MAX_MEMOS {
                memos.clear();
            }
        }
        memos.insert(
            tenant.id,
            Memo {
                tenant: Arc::downgrade(tenant),
                platform: Arc::downgrade(platform),
                json: json.clone(),
            },
        );
        json
    }

    /// Drops the memos that can never be current again, and returns how
    /// many went. The server's upkeep calls it once a minute: memos are
    /// otherwise swept only as others are made, so when most tenants go
    /// idle at once theirs would stay.
    pub fn sweep(&self) -> usize {
        let mut memos = self.memos.write().unwrap_or_else(|e| e.into_inner());
        let before = memos.len();
        Self::sweep_dead(&mut memos);
        before - memos.len()
    }

    fn sweep_dead(memos: &mut HashMap<Uuid, Memo, foldhash::fast::RandomState>) {
        memos.retain(|_, m| m.tenant.strong_count() > 0 && m.platform.strong_count() > 0);
        tenantry_cache::shrink_if_sparse(memos, 256);
    }

    /// Memos kept (live or not yet swept).
    pub fn len(&self) -> usize {
        self.memos.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::memo::tests::tenant;

    #[test]
    fn a_sweep_drops_the_views_of_tenants_no_longer_held() {
        let views = TenantViews::default();
        let platform = Arc::new(serde_json::json!({}));
        let held: Vec<Arc<Tenant>> = (0..3).map(|_| tenant()).collect();
        for t in &held {
            views.summary(t, &platform, || "held");
        }
        // Tenants the cache let go of (idle): their records are dropped.
        for _ in 0..50 {
            let t = tenant();
            views.summary(&t, &platform, || "idle");
        }
        assert_eq!(views.len(), 53);
        assert_eq!(views.sweep(), 50);
        assert_eq!(views.len(), 3);
        // The held ones are still served from their memo.
        let again = views.summary(&held[0], &platform, || "made again");
        assert_eq!(&*again, b"\"held\"");
    }
}
