//! The request path's front memo: what authenticating a caller and resolving
//! their tenant produced, kept per worker thread so a repeat request skips
//! the lookups.
//!
//! Without it a cached `GET /v1/tenant` made six cache lookups (the token,
//! the tenant's name, the tenant, the membership, the platform settings,
//! "already provisioned"), each with its generation reads, its key
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
//! It is keyed by everything [`crate::tenancy::resolve`] reads (the `Host`,
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
use tenantry_cache::stats::{NsStats, TenantStats};
use tenantry_cache::{Cache, Stamp};
use tenantry_db::members::Member;
use tenantry_db::tenants::Tenant;
use tokio::time::Instant;
use uuid::Uuid;

use crate::auth::AuthUser;

/// The longest a memo entry is used, whatever else holds.
pub const MEMO_TTL: Duration = Duration::from_secs(5);

/// Entries a thread keeps; past it the thread's memo starts over.
const MAX_ENTRIES: usize = 20_000;

/// What one request's naming of its tenant and its token resolved to.
pub struct Caller {
    key: CallerKey,
    pub user: Arc<AuthUser>,
    pub tenant: Arc<Tenant>,
    stamp: Stamp,
    expires: Instant,
    /// The caller's membership, once a request looked it up.
    member: OnceLock<Option<Arc<Member>>>,
    /// That membership as `GET /v1/tenant` shows it.
    member_json: OnceLock<Arc<[u8]>>,
    /// The tenant as `GET /v1/tenant` shows it (with the platform settings
    /// overlaid: a change of either moves the stamp).
    tenant_json: OnceLock<Arc<[u8]>>,
    stats: Arc<TenantStats>,
    names: Arc<NsStats>,
}

/// The inputs a [`Caller`] stands for, compared in full on every hit.
#[derive(PartialEq, Eq, Hash)]
struct CallerKey {
    /// The cache it was read from: tests run several servers in a process.
    cache: Uuid,
    token: Box<str>,
    host: Option<Box<[u8]>>,
    x_tenant: Option<Box<[u8]>>,
    query_tenant: Option<Box<str>>,
}

/// The same inputs, borrowed from a request.
#[derive(Hash)]
struct RequestKey<'a> {
    cache: Uuid,
    token: &'a str,
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
    platform: Option<(Uuid, Stamp, Instant, Arc<serde_json::Value>)>,
    /// The counters a hit bumps, looked up once per thread (and cache).
    counters: Option<(Uuid, Counters)>,
    hasher: foldhash::fast::RandomState,
}

/// The namespaces' counters a hit counts in.
struct Counters {
    token: Arc<NsStats>,
    tenant: Arc<NsStats>,
    member: Arc<NsStats>,
    platform: Arc<NsStats>,
}

impl ThreadMemo {
    fn counters(&mut self, cache: &Cache) -> &Counters {
        let node = cache.node();
        if self.counters.as_ref().is_none_or(|(n, _)| *n != node) {
            let ns = |name| cache.stats.ns(name);
            let counters = Counters {
                token: ns("token"),
                tenant: ns("tenant"),
                member: ns("member"),
                platform: ns("platform:settings"),
            };
            self.counters = Some((node, counters));
        }
        &self.counters.as_ref().expect("set above").1
    }
}

thread_local! {
    static MEMO: RefCell<ThreadMemo> = RefCell::default();
}

/// The naming of `parts` with `token`, for [`lookup`] and [`remember`].
/// `query_tenant` is the decoded `?tenant=` parameter, if any.
pub fn naming<'a>(
    cache: &Cache,
    parts: &'a Parts,
    token: &'a str,
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
        x_tenant: parts.headers.get("x-tenant").map(|v| v.as_bytes()),
        query_tenant,
    };
    let hash = MEMO.with(|m| m.borrow().hasher.hash_one(&key));
    Naming { key, hash }
}

/// The memoized caller for `naming`, if it is current. Counts the hits it
/// stands for.
pub fn lookup(cache: &Cache, naming: &Naming<'_>) -> Option<Arc<Caller>> {
    MEMO.with(|m| {
        let mut m = m.borrow_mut();
        let caller = m.callers.get(&naming.hash)?;
        if !naming.key.matches(&caller.key)
            || caller.expires <= Instant::now()
            || !cache.is_current(caller.tenant.id, caller.stamp)
        {
            return None;
        }
        let caller = caller.clone();
        let counters = m.counters(cache);
        counters.token.hits_l1.fetch_add(1, Relaxed);
        caller.names.hits_l1.fetch_add(1, Relaxed);
        counters.tenant.hits_l1.fetch_add(1, Relaxed);
        caller.stats.hits.fetch_add(1, Relaxed);
        Some(caller)
    })
}

/// Remembers what a request resolved to: `user`, whose token expires at
/// `exp` (seconds since the epoch), and `tenant`, read under `stamp` (taken
/// before they were read), named through `names` (the namespace of the
/// name lookup).
pub fn remember(
    cache: &Cache,
    naming: &Naming<'_>,
    stamp: Stamp,
    user: Arc<AuthUser>,
    exp: u64,
    tenant: Arc<Tenant>,
    names: &'static str,
) -> Arc<Caller> {
    let left = exp.saturating_sub(jsonwebtoken::get_current_timestamp());
    let caller = Arc::new(Caller {
        key: naming.key.owned(),
        user,
        stats: cache.stats.tenant(tenant.id),
        names: cache.stats.ns(names),
        tenant,
        stamp,
        expires: Instant::now() + MEMO_TTL.min(Duration::from_secs(left)),
        member: OnceLock::new(),
        member_json: OnceLock::new(),
        tenant_json: OnceLock::new(),
    });
    MEMO.with(|m| {
        let callers = &mut m.borrow_mut().callers;
        if callers.len() >= MAX_ENTRIES {
            callers.clear();
        }
        callers.insert(naming.hash, caller.clone());
    });
    caller
}

impl Caller {
    /// The membership a request of this caller looked up, if any (counted
    /// as a hit).
    pub fn member(&self, cache: &Cache) -> Option<Option<Arc<Member>>> {
        let member = self.member.get()?.clone();
        MEMO.with(|m| {
            m.borrow_mut()
                .counters(cache)
                .member
                .hits_l1
                .fetch_add(1, Relaxed);
        });
        self.stats.hits.fetch_add(1, Relaxed);
        Some(member)
    }

    /// Keeps the membership a request looked up for the next ones.
    pub fn set_member(&self, member: Option<Arc<Member>>) {
        let _ = self.member.set(member);
    }

    /// The JSON `make` gives of the membership, made once per caller.
    pub fn member_json<E>(
        &self,
        make: impl FnOnce() -> Result<Vec<u8>, E>,
    ) -> Result<Arc<[u8]>, E> {
        if let Some(json) = self.member_json.get() {
            return Ok(json.clone());
        }
        let json: Arc<[u8]> = make()?.into();
        Ok(self.member_json.get_or_init(|| json).clone())
    }

    /// The tenant's JSON a request of this caller made, if any.
    pub fn tenant_json(&self) -> Option<Arc<[u8]>> {
        self.tenant_json.get().cloned()
    }

    /// Keeps the tenant's JSON (made from this caller's tenant and the
    /// platform settings current under its stamp) for the next requests.
    pub fn set_tenant_json(&self, json: Arc<[u8]>) {
        let _ = self.tenant_json.set(json);
    }

    /// Counts a tenant-scoped request (for warming the busiest first).
    pub fn count_request(&self) {
        self.stats.requests.fetch_add(1, Relaxed);
    }
}

/// The platform settings memoized on this thread, if current.
pub fn platform_settings(cache: &Cache) -> Option<Arc<serde_json::Value>> {
    MEMO.with(|m| {
        let mut m = m.borrow_mut();
        let (node, stamp, expires, value) = m.platform.as_ref()?;
        if *node != cache.node()
            || *expires <= Instant::now()
            || !cache.is_current(tenantry_cache::PLATFORM, *stamp)
        {
            return None;
        }
        let value = value.clone();
        m.counters(cache).platform.hits_l1.fetch_add(1, Relaxed);
        Some(value)
    })
}

/// Remembers the platform settings read under `stamp`.
pub fn remember_platform_settings(cache: &Cache, stamp: Stamp, value: Arc<serde_json::Value>) {
    MEMO.with(|m| {
        m.borrow_mut().platform = Some((cache.node(), stamp, Instant::now() + MEMO_TTL, value));
    });
}
