//! The request path's front memo: what authenticating a caller and resolving
//! their tenant produced, kept so a repeat request skips the lookups.
//!
//! Without it a cached `GET /v1/tenant` made six cache lookups (the token,
//! the tenant's name, the tenant, the membership, the platform settings,
//! "already provisioned") and serialized the membership, each with its generation reads, its key
//! allocation and its shared-counter updates; under load on two cores that
//! was half of the request's CPU (perf, BENCHMARKS.md "Caching"). A
//! [`Caller`] holds the results for one (token, tenant naming), and
//! is used while:
//!
//! - nothing it was read from moved: the [`Stamp`] taken while it was made
//!   still matches ([`Cache::is_current`]: the tenant's own generation and
//!   the platform's, which every change of a tenant record, a membership, a
//!   name or the platform settings bumps, here or on another node, and a
//!   reconnection of the fan-out resets);
//! - it is younger than [`MEMO_TTL`] and its token has not expired.
//!
//! An entry past [`MEMO_TTL`] whose stamp is still current and whose token
//! is still valid is [`Lookup::Aged`]: the request checks that the cache
//! still holds the very tenant record the caller was made from (and the
//! very membership it keeps), and if so [`Memo::renew`]s it for another
//! [`MEMO_TTL`] instead of resolving it again (which read the same cached
//! entries, and made a new entry and its body). The cache reloads those
//! entries at least every [`crate::request::registry::METADATA_TTL`], and a
//! reloaded one ends the renewals, so a change whose announcement was lost
//! stays unseen no longer than without them.
//!
//! It is keyed by everything [`crate::request::naming::resolve`] reads (the `Host`,
//! the `X-Tenant` header, the `?tenant=` parameter) and the whole token,
//! and a hit compares all of them, so two tokens or two namings never share
//! an entry.
//!
//! One memo per server, in 64 shards each behind its own lock, so a
//! caller's next request finds its entry whichever worker thread runs it,
//! and requests of different callers rarely meet on a lock. (It was per
//! thread, with a 5-second life: at 100,000 tenants a tenant's next request
//! came tens of seconds later, often on the other thread, and nearly every
//! request took the slow path; BENCHMARKS.md, "Session 11".)
//!
//! A hit counts as an L1 hit of each namespace it stands in for, so the
//! cache statistics still say how tenant metadata was served.

use std::collections::HashMap;
use std::hash::BuildHasher as _;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
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

use crate::request::auth::AuthUser;

/// The longest a memo entry is used unchecked, whatever else holds. The
/// stamps catch every change that was announced (and a reconnection of the
/// fan-out resets them all), so this only bounds how long a change whose
/// announcement was lost can go unseen; it stays well under the cache's own
/// [`crate::request::registry::METADATA_TTL`] (300 s), which bounds the
/// entries a caller was made from. Past it, within another [`MEMO_TTL`], a
/// request checks the tenant's cached record and membership and renews the
/// entry ([`Lookup::Aged`]); after that the entry is gone. A minute keeps
/// the caller of a tenant that makes a request every few tens of seconds
/// (100,000 tenants at a few thousand requests a second) on the fast path.
pub const MEMO_TTL: Duration = Duration::from_secs(60);

/// Shards of the memo: each a lock and a table.
const SHARDS: usize = 64;

/// Entries a shard keeps at most (the memo: 64 times as many). Entries no
/// longer renewable are swept out every [`SWEEP_EVERY`] insertions into the
/// shard, whenever the shard is full, and once a minute by the server's
/// upkeep ([`Memo::sweep`]), so what the memo holds is the callers of the
/// last two [`MEMO_TTL`]s, not every caller it ever saw: an idle tenant's
/// entry goes within two or three minutes of its last request. Only more
/// live callers than this in one shard in that time make the shard start
/// over.
pub const MAX_ENTRIES_PER_SHARD: usize = 4_096;

/// Insertions into a shard between two sweeps of its expired entries.
const SWEEP_EVERY: u32 = 256;

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
    /// The caller's membership, once a request looked it up.
    member: OnceLock<Option<Arc<Member>>>,
    /// `GET /v1/tenant`'s body, made once per caller (see
    /// [`Caller::tenant_answer`]).
    tenant_answer: OnceLock<Bytes>,
    counters: Counters,
    /// When its token expires: no renewal goes past it.
    token_ends: Instant,
}

/// What [`Memo::lookup`] found for a request.
pub enum Lookup {
    /// A current caller: use it.
    Current(Arc<Caller>),
    /// A caller past [`MEMO_TTL`], nothing it depends on announced as
    /// changed and its token valid: [`Memo::renew`] it once its tenant's
    /// record and its membership are checked, or resolve it again.
    Aged(Arc<Caller>),
    /// Nothing usable: resolve the caller.
    Missing,
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
    token: Box<[u8]>,
    host: Option<Box<[u8]>>,
    x_tenant: Option<Box<[u8]>>,
    query_tenant: Option<Box<str>>,
}

/// The same inputs, borrowed from a request.
#[derive(Hash)]
struct RequestKey<'a> {
    token: &'a [u8],
    host: Option<&'a [u8]>,
    x_tenant: Option<&'a [u8]>,
    query_tenant: Option<&'a str>,
}

impl RequestKey<'_> {
    fn matches(&self, k: &CallerKey) -> bool {
        self.token == &*k.token
            && self.host == k.host.as_deref()
            && self.x_tenant == k.x_tenant.as_deref()
            && self.query_tenant == k.query_tenant.as_deref()
    }

    fn owned(&self) -> CallerKey {
        CallerKey {
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

/// The memoized callers of one server.
pub struct Memo {
    shards: Box<[Mutex<Shard>]>,
    hasher: foldhash::fast::RandomState,
    /// Lookups that found no current caller (the slow path follows).
    misses: AtomicU64,
}

impl Default for Memo {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: foldhash::fast::RandomState::default(),
            misses: AtomicU64::new(0),
        }
    }
}

/// A caller in a shard, with its ends, beside it so that a sweep reads the
/// table alone.
struct Entry {
    /// The sooner of [`MEMO_TTL`] after it was made (or renewed) and its
    /// token's expiry.
    expires: Instant,
    /// The sooner of another [`MEMO_TTL`] after `expires` and its token's
    /// expiry: until then it may be renewed ([`Lookup::Aged`]), and sweeps
    /// keep it.
    renewable: Instant,
    caller: Arc<Caller>,
}

impl Entry {
    fn new(caller: Arc<Caller>, now: Instant) -> Self {
        let expires = (now + MEMO_TTL).min(caller.token_ends);
        Self {
            expires,
            renewable: (expires + MEMO_TTL).min(caller.token_ends),
            caller,
        }
    }
}

/// One shard: callers by the hash of their naming.
#[derive(Default)]
struct Shard {
    callers: HashMap<u64, Entry, foldhash::fast::RandomState>,
    /// Insertions since the last sweep.
    inserted: u32,
    /// Lookups of this shard, counted under its lock.
    lookups: u64,
}

impl Shard {
    fn insert(&mut self, hash: u64, entry: Entry) {
        self.inserted += 1;
        if self.inserted >= SWEEP_EVERY || self.callers.len() >= MAX_ENTRIES_PER_SHARD {
            self.sweep(Instant::now());
        }
        self.callers.insert(hash, entry);
    }

    fn sweep(&mut self, now: Instant) {
        self.inserted = 0;
        self.callers.retain(|_, e| e.renewable > now);
        if self.callers.len() >= MAX_ENTRIES_PER_SHARD {
            self.callers.clear();
        }
        tenantry_cache::shrink_if_sparse(&mut self.callers, 64);
    }
}

impl Memo {
    fn shard(&self, hash: u64) -> MutexGuard<'_, Shard> {
        // The high bits: the table inside the shard indexes by the low ones.
        let i = (hash >> 58) as usize % SHARDS;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes every expired caller out, a shard at a time: the server's
    /// upkeep does it once a minute. A shard that only hits, or sees
    /// nothing at all (its callers all known, the rest of the tenants gone
    /// idle), would otherwise keep the expired entries of a busier moment
    /// until its next insertions.
    pub fn sweep(&self, now: Instant) {
        for shard in &self.shards {
            shard.lock().unwrap_or_else(|e| e.into_inner()).sweep(now);
        }
    }

    /// Entries in the memo (live or not yet swept).
    pub fn entries(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).callers.len())
            .sum()
    }

    /// The naming of `parts` with `token`, for [`Memo::lookup`] and
    /// [`Memo::remember`]. `query_tenant` is the decoded `?tenant=`
    /// parameter, if any.
    pub fn naming<'a>(
        &self,
        parts: &'a Parts,
        token: &'a [u8],
        query_tenant: Option<&'a str>,
    ) -> Naming<'a> {
        let host = match parts.headers.get(header::HOST) {
            Some(h) => Some(h.as_bytes()),
            None => parts.uri.authority().map(|a| a.as_str().as_bytes()),
        };
        let key = RequestKey {
            token,
            host,
            x_tenant: parts
                .headers
                .get(crate::request::X_TENANT)
                .map(|v| v.as_bytes()),
            query_tenant,
        };
        let hash = self.hasher.hash_one(&key);
        Naming { key, hash }
    }

    /// Lookups so far, and how many of them missed (for `/metrics`): an
    /// aged caller renewed is not a miss, one that was not is.
    pub fn counts(&self) -> (u64, u64) {
        // Misses first: each was a lookup counted before it.
        let misses = self.misses.load(Relaxed);
        let lookups = self
            .shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).lookups)
            .sum();
        (lookups, misses)
    }

    /// The memoized caller for `naming`: current (its hits counted), aged
    /// or missing (a miss counted).
    pub fn lookup(&self, cache: &Cache, naming: &Naming<'_>) -> Lookup {
        let found = self.find(cache, naming);
        match &found {
            Lookup::Current(caller) => caller.count_hits(),
            Lookup::Aged(_) => {}
            Lookup::Missing => {
                self.misses.fetch_add(1, Relaxed);
            }
        }
        found
    }

    fn find(&self, cache: &Cache, naming: &Naming<'_>) -> Lookup {
        let now = Instant::now();
        let Some((expires, renewable, caller)) = ({
            let mut shard = self.shard(naming.hash);
            shard.lookups += 1;
            shard
                .callers
                .get(&naming.hash)
                .map(|e| (e.expires, e.renewable, e.caller.clone()))
        }) else {
            return Lookup::Missing;
        };
        if !naming.key.matches(&caller.key) {
            return Lookup::Missing;
        }
        let current = cache.is_current(caller.tenant.id, caller.stamp);
        if current && expires > now {
            return Lookup::Current(caller);
        }
        if current && renewable > now {
            return Lookup::Aged(caller);
        }
        // Of no more use: the request remembers a new one.
        let mut shard = self.shard(naming.hash);
        if shard
            .callers
            .get(&naming.hash)
            .is_some_and(|e| Arc::ptr_eq(&e.caller, &caller))
        {
            shard.callers.remove(&naming.hash);
        }
        Lookup::Missing
    }

    /// Keeps an aged `caller` (see [`Lookup::Aged`]) for another
    /// [`MEMO_TTL`] (at most until its token expires), counted as a hit.
    /// The request checked that the cache still holds the tenant record the
    /// caller was made from and the membership it keeps; nothing announced
    /// has moved its stamp.
    /// Returns it, or `None` (a miss) if its entry was replaced or dropped
    /// meanwhile.
    pub fn renew(&self, naming: &Naming<'_>, caller: Arc<Caller>) -> Option<Arc<Caller>> {
        let now = Instant::now();
        let renewed = {
            let mut shard = self.shard(naming.hash);
            match shard.callers.get_mut(&naming.hash) {
                Some(e) if Arc::ptr_eq(&e.caller, &caller) && caller.token_ends > now => {
                    *e = Entry::new(caller.clone(), now);
                    true
                }
                _ => false,
            }
        };
        if renewed {
            caller.count_hits();
            Some(caller)
        } else {
            self.not_renewed();
            None
        }
    }

    /// Counts an aged caller that was not renewed: the request resolves it
    /// again.
    pub fn not_renewed(&self) {
        self.misses.fetch_add(1, Relaxed);
    }

    /// Remembers what a request resolved to: `user`, whose token expires at
    /// `exp` (seconds since the epoch), and `tenant` with its limits, read
    /// under `stamp` (taken before they were read), named through `names`
    /// (the namespace of the name lookup).
    pub fn remember(
        &self,
        cache: &Cache,
        naming: &Naming<'_>,
        stamp: Stamp,
        (user, exp): (Arc<AuthUser>, u64),
        (tenant, limits): (Arc<Tenant>, Limits),
        names: &'static str,
    ) -> Arc<Caller> {
        let left = exp.saturating_sub(jsonwebtoken::get_current_timestamp());
        let token_ends = Instant::now() + Duration::from_secs(left);
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
            member: OnceLock::new(),
            tenant_answer: OnceLock::new(),
            token_ends,
        });
        let entry = Entry::new(caller.clone(), Instant::now());
        self.shard(naming.hash).insert(naming.hash, entry);
        caller
    }
}

impl Caller {
    /// Counts the cache hits a use of this caller stands for.
    fn count_hits(&self) {
        let c = &self.counters;
        c.token.hits_l1.fetch_add(1, Relaxed);
        c.names.hits_l1.fetch_add(1, Relaxed);
        c.tenant.hits_l1.fetch_add(1, Relaxed);
        c.tenant_stats.hits.fetch_add(1, Relaxed);
    }

    /// The membership a request of this caller looked up, if any (counted
    /// as a hit).
    pub fn member(&self) -> Option<Option<Arc<Member>>> {
        let member = self.member.get()?.clone();
        self.counters.member.hits_l1.fetch_add(1, Relaxed);
        self.counters.tenant_stats.hits.fetch_add(1, Relaxed);
        Some(member)
    }

    /// The membership a request of this caller looked up, if any, without
    /// counting a hit (for [`Memo::renew`]'s caller to check).
    pub fn member_held(&self) -> Option<&Option<Arc<Member>>> {
        self.member.get()
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
    use uuid::Uuid;

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
    fn remember_one(memo: &Memo, cache: &Cache, token: &str, exp: u64) {
        let parts = request_parts();
        let naming = memo.naming(&parts, token.as_bytes(), None);
        let t = tenant();
        let user = Arc::new(AuthUser {
            id: Uuid::now_v7(),
            email: None,
            name: None,
        });
        memo.remember(
            cache,
            &naming,
            cache.stamp(t.id),
            (user, exp),
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

    fn found(memo: &Memo, cache: &Cache, token: &str) -> bool {
        let parts = request_parts();
        matches!(
            memo.lookup(cache, &memo.naming(&parts, token.as_bytes(), None)),
            Lookup::Current(_)
        )
    }

    #[tokio::test(flavor = "current_thread")]
    async fn idle_callers_are_swept_out_and_live_ones_kept() {
        let (memo, cache) = (Memo::default(), Cache::local());
        let now = jsonwebtoken::get_current_timestamp();
        let live: Vec<String> = (0..10).map(|i| format!("live-{i}")).collect();
        for token in &live {
            remember_one(&memo, &cache, token, now + 3_600);
        }
        // Callers whose memo entries are already over: tenants seen once
        // and gone idle, enough to make every shard sweep a few times.
        let before = memo.entries();
        let idle = 3 * SHARDS * SWEEP_EVERY as usize;
        for i in 0..idle {
            remember_one(&memo, &cache, &format!("idle-{i}"), now);
        }
        let after = memo.entries();
        assert!(
            after < before + SHARDS * SWEEP_EVERY as usize,
            "idle callers kept: {after} entries after {idle} idle ones (from {before})",
        );
        for token in &live {
            assert!(found(&memo, &cache, token), "a live caller was thrown away");
        }
        // An entry found expired is dropped on the spot.
        remember_one(&memo, &cache, "stale", now);
        let with_stale = memo.entries();
        assert!(!found(&memo, &cache, "stale"));
        assert_eq!(memo.entries(), with_stale - 1);
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_sweep_takes_out_every_expired_caller_and_keeps_the_live_ones() {
        let (memo, cache) = (Memo::default(), Cache::local());
        let now = jsonwebtoken::get_current_timestamp();
        // A busy moment: many callers, spread over the shards, known for a
        // while.
        for i in 0..1_000 {
            remember_one(&memo, &cache, &format!("gone-{i}"), now + 3_600);
        }
        assert!(found(&memo, &cache, "gone-0"));
        // Their tenants go idle, past the time their entries could be
        // renewed; from here on one caller, known: hits, no insertions past
        // the first, so no shard sweeps by itself.
        tokio::time::advance(2 * MEMO_TTL + Duration::from_secs(1)).await;
        remember_one(&memo, &cache, "busy", now + 3_600);
        for _ in 0..10 {
            assert!(found(&memo, &cache, "busy"));
        }
        assert_eq!(memo.entries(), 1_001);
        // The upkeep's sweep.
        memo.sweep(Instant::now());
        assert_eq!(memo.entries(), 1, "the idle callers' entries were kept");
        assert!(found(&memo, &cache, "busy"));
    }

    fn lookup(memo: &Memo, cache: &Cache, token: &str) -> Lookup {
        let parts = request_parts();
        memo.lookup(cache, &memo.naming(&parts, token.as_bytes(), None))
    }

    fn renew(memo: &Memo, token: &str, caller: Arc<Caller>) -> bool {
        let parts = request_parts();
        memo.renew(&memo.naming(&parts, token.as_bytes(), None), caller)
            .is_some()
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn an_aged_caller_is_renewed_while_its_token_and_stamp_hold() {
        let (memo, cache) = (Memo::default(), Cache::local());
        let now = jsonwebtoken::get_current_timestamp();
        remember_one(&memo, &cache, "renewed", now + 3_600);
        remember_one(&memo, &cache, "token ends", now + 90);
        remember_one(&memo, &cache, "moved", now + 3_600);
        remember_one(&memo, &cache, "idle", now + 3_600);
        tokio::time::advance(MEMO_TTL + Duration::from_secs(1)).await;

        // Aged, then renewed: current for another MEMO_TTL, not a miss.
        let Lookup::Aged(caller) = lookup(&memo, &cache, "renewed") else {
            panic!("a caller past MEMO_TTL, stamp and token good, is aged");
        };
        assert!(renew(&memo, "renewed", caller));
        assert!(found(&memo, &cache, "renewed"));
        let Lookup::Aged(token_ends) = lookup(&memo, &cache, "token ends") else {
            panic!("aged before its token ends");
        };
        let Lookup::Aged(moved) = lookup(&memo, &cache, "moved") else {
            panic!("aged");
        };

        // Its token ends 90 s after it was made: aged at 61 s, gone at 91.
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(
            !renew(&memo, "token ends", token_ends),
            "renewed past its token"
        );
        assert!(matches!(
            lookup(&memo, &cache, "token ends"),
            Lookup::Missing
        ));
        assert!(found(&memo, &cache, "renewed"), "renewed 30 s ago");

        // A change of its tenant: resolved again, aged or not.
        cache.bump_tenant(moved.tenant.id).await;
        assert!(matches!(lookup(&memo, &cache, "moved"), Lookup::Missing));
        assert!(!renew(&memo, "moved", moved), "its entry was dropped");

        // Unused for two MEMO_TTLs: no longer renewable.
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(matches!(lookup(&memo, &cache, "idle"), Lookup::Missing));
        let (_, misses) = memo.counts();
        assert_eq!(
            misses, 5,
            "the token's end and the move (twice each), the idle one"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_caller_is_found_from_any_thread() {
        let memo = Arc::new(Memo::default());
        let cache = Arc::new(Cache::local());
        let now = jsonwebtoken::get_current_timestamp();
        remember_one(&memo, &cache, "roaming", now + 3_600);
        let (m, c) = (memo.clone(), cache.clone());
        let elsewhere = std::thread::spawn(move || found(&m, &c, "roaming"))
            .join()
            .expect("the other thread ran");
        assert!(
            elsewhere,
            "a caller remembered on one thread was not found on another"
        );
        assert!(!found(&memo, &cache, "a stranger"));
        assert_eq!(memo.counts(), (2, 1), "two lookups, one of them a miss");
    }
}
