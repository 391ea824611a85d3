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

/// Entries a thread keeps; past it the thread's memo starts over.
const MAX_ENTRIES: usize = 20_000;

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
    let caller = MEMO.with(|m| m.borrow().callers.get(&naming.hash).cloned())?;
    if !naming.key.matches(&caller.key)
        || caller.expires <= Instant::now()
        || !cache.is_current(caller.tenant.id, caller.stamp)
    {
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
