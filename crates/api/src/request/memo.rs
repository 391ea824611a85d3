//! The request path's front memo: what authenticating a caller and resolving
//! their tenant produced, kept per worker thread so a repeat request skips
//! the lookups.
//!
//! Without it a cached `GET /v1/tenant` made six cache lookups (the token,
//! the tenant's name, the tenant, the membership, the platform settings,
//! "already provisioned") and serialized the membership, each with its generation reads, its key
//! allocation and its shared-counter updates; under load on two cores that
//! was half of the request's CPU (perf, BENCHMARKS.md "Caching"). A
//! [`Caller`] holds the results for one (cache, token, tenant naming), and
//! is used while:
//!
//! - nothing it was read from moved: the [`Stamp`] taken while it was made
//!   still matches ([`Cache::is_current`]: the tenant's own generation and
//!   the platform's, which every change of a tenant record, a membership, a
//!   name or the platform settings bumps, here or on another node);
//! - it is younger than [`MEMO_TTL`] (the bound the cache's TTLs give for a
//!   change whose announcement was lost) and its token has not expired.
//!
//! It is keyed by everything [`crate::request::naming::resolve`] reads (the `Host`,
//! the `X-Tenant` header, the `?tenant=` parameter) and the whole token,
//! and a hit compares all of them, so two tokens or two namings never share
//! an entry. Per thread, so a hit takes no lock and writes no shared cache
//! line but the statistics; a task that moves threads finds the other
//! thread's memo cold, which costs one slow path.
//!
//! A hit counts as an L1 hit of each namespace it stands in for, so the
//! cache statistics still say how tenant metadata was served.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::BuildHasher as _;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::http::header;
use axum::http::request::Parts;
use bytes::Bytes;
use tenantry_cache::stats::{NsStats, TenantStats};
use tenantry_cache::{Cache, Stamp};
use tenantry_core::Limits;
use tenantry_db::members::Member;
use tenantry_db::tenants::Tenant;
use tokio::time::Instant;
use uuid::Uuid;

use crate::request::auth::AuthUser;

/// The longest a memo entry is used, whatever else holds.
pub const MEMO_TTL: Duration = Duration::from_secs(5);

/// Entries a thread keeps at most. Expired entries are swept out every
/// [`SWEEP_EVERY`] insertions and whenever the memo is full, so what a
/// thread holds is the callers of the last [`MEMO_TTL`], not every caller it
/// ever saw: an idle tenant's entries go within seconds of its last request
/// (at 100,000 tenants, 20,000 dead entries per thread were ~40 MiB kept for
/// nothing, and starting over at the cap threw the live ones away with
/// them). Only more than this many live callers in [`MEMO_TTL`] on one
/// thread make it start over.
pub const MAX_ENTRIES: usize = 20_000;

/// Insertions between two sweeps of a thread's expired entries.
const SWEEP_EVERY: u32 = 1_024;

/// What one request's naming of its tenant and its token resolved to.
pub struct Caller {
    key: CallerKey,
    pub user: Arc<AuthUser>,
    pub tenant: Arc<Tenant>,
    /// The tenant's limits: its tier's with the record's overrides. A change
    /// of either moves the stamp (a reload of the tiers file moves the
    /// platform epoch, `crate::ops::reload`).
    pub limits: Limits,
    stamp: Stamp,
    expires: Instant,
    /// The caller's membership, once a request looked it up.
    member: OnceLock<Option<Arc<Member>>>,
    /// `GET /v1/tenant`'s body, made once per caller (see
    /// [`Caller::tenant_answer`]).
    tenant_answer: OnceLock<Bytes>,
    counters: Counters,
}

/// The counters a hit counts in, in place of the lookups it saves.
struct Counters {
    token: Arc<NsStats>,
    names: Arc<NsStats>,
    tenant: Arc<NsStats>,
    member: Arc<NsStats>,
    tenant_stats: Arc<TenantStats>,
}

/// The inputs a [`Caller`] stands for, compared in full on every hit.
struct CallerKey {
    /// The cache it was read from: tests run several servers in a process.
    cache: Uuid,
    token: Box<[u8]>,
    host: Option<Box<[u8]>>,
    x_tenant: Option<Box<[u8]>>,
    query_tenant: Option<Box<str>>,
}

/// The same inputs, borrowed from a request.
#[derive(Hash)]
struct RequestKey<'a> {
    cache: Uuid,
    token: &'a [u8],
    host: Option<&'a [u8]>,
    x_tenant: Option<&'a [u8]>,
    query_tenant: Option<&'a str>,
}

impl RequestKey<'_> {
    fn matches(&self, k: &CallerKey) -> bool {
        self.cache == k.cache
            && self.token == &*k.token
            && self.host == k.host.as_deref()
            && self.x_tenant == k.x_tenant.as_deref()
            && self.query_tenant == k.query_tenant.as_deref()
    }

    fn owned(&self) -> CallerKey {
        CallerKey {
            cache: self.cache,
            token: self.token.into(),
            host: self.host.map(Into::into),
            x_tenant: self.x_tenant.map(Into::into),
            query_tenant: self.query_tenant.map(Into::into),
        }
    }
}

/// The parts of a request a [`Caller`] is keyed by.
pub struct Naming<'a> {
    key: RequestKey<'a>,
    hash: u64,
}

#[derive(Default)]
struct ThreadMemo {
    callers: HashMap<u64, Arc<Caller>, foldhash::fast::RandomState>,
    hasher: foldhash::fast::RandomState,
    /// Insertions since the last sweep.
    inserted: u32,
    /// When a hit next sweeps (see [`ThreadMemo::sweep_if_due`]).
    next_sweep: Option<Instant>,
}

impl ThreadMemo {
    fn insert(&mut self, hash: u64, caller: Arc<Caller>) {
        self.inserted += 1;
        if self.inserted >= SWEEP_EVERY || self.callers.len() >= MAX_ENTRIES {
            self.sweep(Instant::now());
        }
        self.callers.insert(hash, caller);
    }

    fn sweep(&mut self, now: Instant) {
        self.inserted = 0;
        self.next_sweep = Some(now + MEMO_TTL);
        self.callers.retain(|_, c| c.expires > now);
        if self.callers.len() >= MAX_ENTRIES {
            self.callers.clear();
        }
        tenantry_cache::shrink_if_sparse(&mut self.callers, 256);
    }

    /// Sweeps once per [`MEMO_TTL`] on hits too: a thread that only hits
    /// (its callers all known, the rest of the tenants gone idle) would
    /// otherwise keep the expired entries of a busier moment until its next
    /// insertions.
    fn sweep_if_due(&mut self, now: Instant) {
        match self.next_sweep {
            Some(at) if now < at => {}
            _ => self.sweep(now),
        }
    }
}

/// Entries in this thread's memo (live or not yet swept).
pub fn thread_entries() -> usize {
    MEMO.with(|m| m.borrow().callers.len())
}

thread_local! {
    static MEMO: RefCell<ThreadMemo> = RefCell::default();
}

/// The naming of `parts` with `token`, for [`lookup`] and [`remember`].
/// `query_tenant` is the decoded `?tenant=` parameter, if any.
pub fn naming<'a>(
    cache: &Cache,
    parts: &'a Parts,
    token: &'a [u8],
    query_tenant: Option<&'a str>,
) -> Naming<'a> {
    let host = match parts.headers.get(header::HOST) {
        Some(h) => Some(h.as_bytes()),
        None => parts.uri.authority().map(|a| a.as_str().as_bytes()),
    };
    let key = RequestKey {
        cache: cache.node(),
        token,
        host,
        x_tenant: parts
            .headers
            .get(crate::request::X_TENANT)
            .map(|v| v.as_bytes()),
        query_tenant,
    };
    let hash = MEMO.with(|m| m.borrow().hasher.hash_one(&key));
    Naming { key, hash }
}

/// The memoized caller for `naming`, if it is current. Counts the hits it
/// stands for.
pub fn lookup(cache: &Cache, naming: &Naming<'_>) -> Option<Arc<Caller>> {
    let now = Instant::now();
    let caller = MEMO.with(|m| {
        let mut memo = m.borrow_mut();
        memo.sweep_if_due(now);
        memo.callers.get(&naming.hash).cloned()
    })?;
    if !naming.key.matches(&caller.key) {
        return None;
    }
    if caller.expires <= now || !cache.is_current(caller.tenant.id, caller.stamp) {
        // Of no more use: the request remembers a new one.
        MEMO.with(|m| m.borrow_mut().callers.remove(&naming.hash));
        return None;
    }
    let c = &caller.counters;
    c.token.hits_l1.fetch_add(1, Relaxed);
    c.names.hits_l1.fetch_add(1, Relaxed);
    c.tenant.hits_l1.fetch_add(1, Relaxed);
    c.tenant_stats.hits.fetch_add(1, Relaxed);
    Some(caller)
}

/// Remembers what a request resolved to: `user`, whose token expires at
/// `exp` (seconds since the epoch), and `tenant` with its limits, read under
/// `stamp` (taken before they were read), named through `names` (the
/// namespace of the name lookup).
pub fn remember(
    cache: &Cache,
    naming: &Naming<'_>,
    stamp: Stamp,
    user: Arc<AuthUser>,
    exp: u64,
    (tenant, limits): (Arc<Tenant>, Limits),
    names: &'static str,
) -> Arc<Caller> {
    let left = exp.saturating_sub(jsonwebtoken::get_current_timestamp());
    let stats = &cache.stats;
    let caller = Arc::new(Caller {
        key: naming.key.owned(),
        user,
        counters: Counters {
            token: stats.ns("token"),
            names: stats.ns(names),
            tenant: stats.ns("tenant"),
            member: stats.ns("member"),
            tenant_stats: stats.tenant(tenant.id),
        },
        tenant,
        limits,
        stamp,
        expires: Instant::now() + MEMO_TTL.min(Duration::from_secs(left)),
        member: OnceLock::new(),
        tenant_answer: OnceLock::new(),
    });
    MEMO.with(|m| m.borrow_mut().insert(naming.hash, caller.clone()));
    caller
}

impl Caller {
    /// The membership a request of this caller looked up, if any (counted
    /// as a hit).
    pub fn member(&self) -> Option<Option<Arc<Member>>> {
        let member = self.member.get()?.clone();
        self.counters.member.hits_l1.fetch_add(1, Relaxed);
        self.counters.tenant_stats.hits.fetch_add(1, Relaxed);
        Some(member)
    }

    /// Keeps the membership a request looked up for the next ones.
    pub fn set_member(&self, member: Option<Arc<Member>>) {
        let _ = self.member.set(member);
    }

    /// Where this caller's `GET /v1/tenant` body is kept: the tenant
    /// (platform settings overlaid) and the membership, all of which move
    /// the caller's stamp when they change.
    pub fn tenant_answer(&self) -> &OnceLock<Bytes> {
        &self.tenant_answer
    }

    /// Counts a tenant-scoped request (for warming the busiest first).
    pub fn count_request(&self) {
        self.counters.tenant_stats.requests.fetch_add(1, Relaxed);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use chrono::Utc;

    /// A new tenant record, as the registry would hand it out (also used
    /// by the tenant views' tests).
    pub(crate) fn tenant() -> Arc<Tenant> {
        Arc::new(Tenant {
            id: Uuid::now_v7(),
            slug: "acme".to_owned(),
            name: "Acme".to_owned(),
            domain: None,
            tier: "free".to_owned(),
            cell: tenantry_db::tenants::MAIN_CELL.to_owned(),
            status: tenantry_core::TenantStatus::Active,
            join_policy: tenantry_core::JoinPolicy::Open,
            owner_user_id: Uuid::now_v7(),
            settings: serde_json::json!({}),
            features: serde_json::json!({}),
            limits: tenantry_core::LimitOverrides::default(),
            api_version: crate::versions::newest().to_owned(),
            member_count: 1,
            post_count: 0,
            storage_bytes: 0,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        })
    }

    /// Remembers a caller of a new tenant with `token`, whose token expires
    /// at `exp`.
    fn remember_one(cache: &Cache, token: &str, exp: u64) {
        let parts = request_parts();
        let naming = naming(cache, &parts, token.as_bytes(), None);
        let t = tenant();
        let user = Arc::new(AuthUser {
            id: Uuid::now_v7(),
            email: None,
            name: None,
        });
        remember(
            cache,
            &naming,
            cache.stamp(t.id),
            user,
            exp,
            (
                t,
                tenantry_core::TierTable::default().limits("free").clone(),
            ),
            "names:slug",
        );
    }

    /// A request naming the tenant `acme` on `api.example`.
    fn request_parts() -> Parts {
        axum::http::Request::builder()
            .header(header::HOST, "api.example")
            .header(crate::request::X_TENANT, "acme")
            .body(())
            .expect("a request")
            .into_parts()
            .0
    }

    fn found(cache: &Cache, token: &str) -> bool {
        let parts = request_parts();
        lookup(cache, &naming(cache, &parts, token.as_bytes(), None)).is_some()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn idle_callers_are_swept_out_and_live_ones_kept() {
        let cache = Cache::local();
        let now = jsonwebtoken::get_current_timestamp();
        let live: Vec<String> = (0..10).map(|i| format!("live-{i}")).collect();
        for token in &live {
            remember_one(&cache, token, now + 3_600);
        }
        // Callers whose memo entries are already over: tenants seen once
        // and gone idle.
        let before = thread_entries();
        for i in 0..3 * SWEEP_EVERY {
            remember_one(&cache, &format!("idle-{i}"), now);
        }
        let after = thread_entries();
        assert!(
            after < before + SWEEP_EVERY as usize,
            "idle callers kept: {after} entries after {} idle ones (from {before})",
            3 * SWEEP_EVERY
        );
        for token in &live {
            assert!(found(&cache, token), "a live caller was thrown away");
        }
        // An entry found expired is dropped on the spot.
        remember_one(&cache, "stale", now);
        let with_stale = thread_entries();
        assert!(!found(&cache, "stale"));
        assert_eq!(thread_entries(), with_stale - 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_thread_that_only_hits_still_sweeps_what_expired() {
        let cache = Cache::local();
        let now = jsonwebtoken::get_current_timestamp();
        // A busy moment: many callers, whose entries are over by now
        // (their tokens expire now).
        for i in 0..100 {
            remember_one(&cache, &format!("gone-{i}"), now);
        }
        // From here on one caller, known: hits, no insertions past the first.
        remember_one(&cache, "busy", now + 3_600);
        for _ in 0..10 {
            assert!(found(&cache, "busy"));
        }
        assert_eq!(thread_entries(), 1, "the idle callers' entries were kept");
    }
}
