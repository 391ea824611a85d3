//! Tenant-namespaced caching with O(1) invalidation.
//!
//! Two levels: **L1**, in this process (moka), and **L2**, Redis shared by
//! every node when `REDIS_URL` is set. Every entry lives in a namespace
//! (`"tenant"`, `"member"`, `"posts:first"`, …) under one tenant (the nil
//! UUID for platform-wide entries), and its key carries two **generations**:
//! the tenant's, and its list's (the namespace up to the first `:`, so
//! `"posts:first"` belongs to the list `"posts"`). A write bumps one of
//! them — [`Cache::bump_tenant`] or [`Cache::bump_list`] — which makes every
//! older entry of that tenant (or list) unreachable at once: no key is
//! scanned or deleted; the old entries age out by TTL and LRU.
//!
//! Generations are agreed through Redis (`INCR`) when there is one, so L2
//! keys mean the same on every node; a bump is announced to the other nodes
//! by Redis pub/sub, or by PostgreSQL `NOTIFY` when there is no Redis (or it
//! is down). A node that loses either channel, or sees Redis come back
//! after an outage, forgets every generation and L1 entry, because it may
//! have missed bumps meanwhile ([`Cache::reset`]). So a change is seen on
//! every node within the fan-out delay (milliseconds); should a bump's
//! announcement be lost without any disconnect, the entry's TTL bounds the
//! staleness.
//!
//! Expiry is checked against tokio's clock, so TTL logic is testable on
//! paused time.

pub mod fanout;
pub mod l2;
mod redis_tls;
pub mod stats;

pub use redis_tls::redis_client;

use std::any::{Any, TypeId};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use uuid::Uuid;

pub use l2::{Health, L2};

/// Gives a per-tenant table's memory back once most of it is empty: after
/// idle tenants' entries are removed, a hash table keeps the size of its
/// busiest moment for good. Shrinks when fewer than a quarter of its slots
/// are used; a table of up to `4 × floor` slots is left as it is.
pub fn shrink_if_sparse<K, V, S>(map: &mut std::collections::HashMap<K, V, S>, floor: usize)
where
    K: Eq + std::hash::Hash,
    S: std::hash::BuildHasher,
{
    if map.capacity() > 4 * map.len().max(floor) {
        map.shrink_to_fit();
    }
}
/// Drops the entries of `keys` (found idle by a pass under the read lock)
/// that `quiet` still finds idle under the write lock, so a count made
/// since the pass keeps its entry; then [`shrink_if_sparse`].
pub fn remove_quiet<K, V, S>(
    map: &std::sync::RwLock<std::collections::HashMap<K, V, S>>,
    keys: Vec<K>,
    quiet: impl Fn(&V) -> bool,
    floor: usize,
) where
    K: Eq + std::hash::Hash,
    S: std::hash::BuildHasher,
{
    if keys.is_empty() {
        return;
    }
    let mut map = map.write().unwrap_or_else(|e| e.into_inner());
    for key in keys {
        if map.get(&key).is_some_and(&quiet) {
            map.remove(&key);
        }
    }
    shrink_if_sparse(&mut map, floor);
}
pub use stats::{NsSnapshot, Stats, TenantStats};

/// The generation scope of a whole tenant.
pub const TENANT: &str = "";

/// Platform-wide entries live under this "tenant".
pub const PLATFORM: Uuid = Uuid::nil();

/// Local generations (not agreed through Redis) carry this bit, so they can
/// never equal a Redis generation.
const LOCAL: u64 = 1 << 63;

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
struct Key {
    tenant: Uuid,
    ns: &'static str,
    key: String,
    tenant_gen: u64,
    list_gen: u64,
    /// Two namespaces may not hold different types under one key; the type
    /// in the key makes a mix-up a miss instead of a failed downcast.
    ty: TypeId,
}

impl Key {
    /// The key of a `T` under `(tenant, ns, key)` at these generations.
    fn of<T: 'static>(
        tenant: Uuid,
        ns: &'static str,
        key: &str,
        (tenant_gen, list_gen): (Gen, Gen),
    ) -> Self {
        Self {
            tenant,
            ns,
            key: key.to_owned(),
            tenant_gen: tenant_gen.value,
            list_gen: list_gen.value,
            ty: TypeId::of::<T>(),
        }
    }
}

#[derive(Clone)]
struct Entry {
    value: Arc<dyn Any + Send + Sync>,
    expires_at: Instant,
    ttl: Duration,
}

/// Removes entries when their TTL is over (memory); reads also check
/// `expires_at` on tokio's clock (correctness, and paused-time tests).
struct PerEntryTtl;

impl moka::Expiry<Key, Entry> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _: &Key,
        value: &Entry,
        _: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Gen {
    value: u64,
}

impl Gen {
    fn shared(self) -> bool {
        self.value & LOCAL == 0
    }
}

/// A tenant's generations: a handful of lists, searched in order.
type Lists = Vec<(Box<str>, Gen)>;

/// Each tenant's generations, by list.
#[derive(Default)]
struct Generations {
    map: std::sync::RwLock<std::collections::HashMap<Uuid, Lists, foldhash::fast::RandomState>>,
    epochs: Epochs,
}

impl Generations {
    fn get(&self, tenant: Uuid, list: &str) -> Option<Gen> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        let lists = map.get(&tenant)?;
        lists.iter().find(|(l, _)| &**l == list).map(|(_, g)| *g)
    }

    fn insert(&self, tenant: Uuid, list: &str, g: Gen) {
        {
            let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
            let lists = map.entry(tenant).or_default();
            match lists.iter_mut().find(|(l, _)| &**l == list) {
                Some((_, current)) => *current = g,
                None => lists.push((list.into(), g)),
            }
        }
        self.epochs.moved(tenant, list);
    }

    /// The generation there, or `g` inserted.
    ///
    /// Learning a generation is not a change: the epochs stay. Every change
    /// moves them where it is made or announced ([`Generations::insert`],
    /// tracked or not), a lost announcement resets the cache, and a memo
    /// checks its tenant's record again after taking its stamp
    /// (`crate::request::memo` in the API). Moving them here made each
    /// tenant seen for the first time (or again after
    /// [`Cache::forget_idle_tenants`]) throw away the memo entries of the
    /// 1/[`SLOTS`] of tenants sharing its slot: at 100,000 tenants, nearly
    /// every caller resolved again after all were first seen.
    fn get_or_insert(&self, tenant: Uuid, list: &str, g: Gen) -> Gen {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        let lists = map.entry(tenant).or_default();
        match lists.iter().find(|(l, _)| &**l == list) {
            Some((_, current)) => *current,
            None => {
                lists.push((list.into(), g));
                g
            }
        }
    }

    fn clear(&self) {
        self.map.write().unwrap_or_else(|e| e.into_inner()).clear();
        self.epochs.platform.fetch_add(1, Ordering::Release);
    }
}

/// Slots of tenant epochs: a tenant's bumps move its slot, shared with the
/// 1/[`SLOTS`] of tenants that hash there.
const SLOTS: usize = 256;

/// Counters that move whenever a generation a [`Stamp`] depends on may have
/// moved: a tenant's own generation (its record, memberships, everything),
/// any platform-wide generation (names, platform settings), or a reset.
/// Lists of a tenant (`posts`, …) do not move them. They let a memo of
/// values read from this cache check in two atomic loads that none of its
/// sources changed, instead of looking each one up again.
struct Epochs {
    tenants: Box<[AtomicU64]>,
    platform: AtomicU64,
}

impl Default for Epochs {
    fn default() -> Self {
        Self {
            tenants: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            platform: AtomicU64::new(0),
        }
    }
}

impl Epochs {
    fn slot(&self, tenant: Uuid) -> &AtomicU64 {
        let bits = tenant.as_u128();
        &self.tenants[((bits ^ (bits >> 64)) as usize) % SLOTS]
    }

    /// Called after `(tenant, list)`'s generation changed.
    fn moved(&self, tenant: Uuid, list: &str) {
        if tenant.is_nil() {
            self.platform.fetch_add(1, Ordering::Release);
        } else if list == TENANT {
            self.slot(tenant).fetch_add(1, Ordering::Release);
        }
    }

    fn stamp(&self, tenant: Uuid) -> Stamp {
        Stamp {
            tenant: self.slot(tenant).load(Ordering::Acquire),
            platform: self.platform.load(Ordering::Acquire),
        }
    }
}

/// What a memo of a tenant's cached values was made under: see
/// [`Cache::stamp`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    tenant: u64,
    platform: u64,
}

impl Stamp {
    /// Whether no platform-wide generation moved between the two stamps.
    pub fn same_platform(self, other: Stamp) -> bool {
        self.platform == other.platform
    }
}

/// Settings of a [`Cache`].
pub struct CacheOptions {
    /// The most L1 entries (all namespaces together).
    pub capacity: u64,
    /// L2 and the pub/sub fan-out.
    pub redis: Option<L2>,
    /// PostgreSQL LISTEN/NOTIFY fan-out (without Redis, or while it is down).
    pub db: Option<tenantry_db::Db>,
}

impl Default for CacheOptions {
    fn default() -> Self {
        Self {
            // Room for the metadata of a few hundred thousand active
            // tenants (a tenant with one member: its name, its record, the
            // membership): at 200,000, 100,000 tenants did not fit, and
            // every request of the rotation read the database. Entries go
            // with their TTL, so an idle tenant's do not stay.
            capacity: 1_000_000,
            redis: None,
            db: None,
        }
    }
}

pub struct Cache {
    /// Tells this node's announcements from the others'.
    node: Uuid,
    l1: moka::future::Cache<Key, Entry, foldhash::fast::RandomState>,
    /// Read several times per request: a plain map under a read lock (a
    /// fraction of a cache lookup's cost, no allocation). It holds a few
    /// entries per tenant seen, and is emptied by [`Cache::reset`].
    gens: Generations,
    counter: AtomicU64,
    l2: Option<L2>,
    db: Option<tenantry_db::Db>,
    pub stats: Arc<Stats>,
    /// Fired after every reset, so a warmer can refill the cache.
    pub resets: tokio::sync::Notify,
    /// Generations bumped here or announced by other nodes (storm
    /// detection).
    pub invalidations: AtomicU64,
}

/// Where a cached value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    L1,
    L2,
    Loaded,
}

impl Cache {
    pub fn new(options: CacheOptions) -> Self {
        let stats = Arc::new(Stats::default());
        let listener_stats = stats.clone();
        let l1 = moka::future::Cache::builder()
            .max_capacity(options.capacity)
            .expire_after(PerEntryTtl)
            .eviction_listener(move |key: Arc<Key>, _, cause| {
                listener_stats.removed(key.ns, cause.was_evicted());
            })
            .build_with_hasher(foldhash::fast::RandomState::default());
        let gens = Generations::default();
        Self {
            node: Uuid::new_v4(),
            l1,
            gens,
            counter: AtomicU64::new(1),
            l2: options.redis,
            db: options.db,
            stats,
            resets: tokio::sync::Notify::new(),
            invalidations: AtomicU64::new(0),
        }
    }

    /// A cache in this process only (tests, benchmarks of L1).
    pub fn local() -> Self {
        Self::new(CacheOptions::default())
    }

    pub fn node(&self) -> Uuid {
        self.node
    }

    pub fn l2(&self) -> Option<&L2> {
        self.l2.as_ref()
    }

    pub fn db(&self) -> Option<&tenantry_db::Db> {
        self.db.as_ref()
    }

    fn fresh_local(&self) -> Gen {
        Gen {
            value: LOCAL | self.counter.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Redis, if it may be used now. A breaker that just closed resets the
    /// cache first: bumps may have been missed while Redis was away.
    async fn redis(&self) -> Option<&L2> {
        let l2 = self.l2.as_ref()?;
        match l2.health() {
            Health::Up => Some(l2),
            Health::Open => None,
            Health::Recovered => {
                self.reset().await;
                Some(l2)
            }
        }
    }

    fn gen_key(&self, l2: &L2, tenant: Uuid, list: &str) -> String {
        format!("{}gen:{{{tenant}}}:{list}", l2.prefix)
    }

    async fn generation(&self, tenant: Uuid, list: &str) -> Gen {
        if let Some(g) = self.gens.get(tenant, list) {
            return g;
        }
        // The cold path is boxed so that every caller's future (the hot path
        // of every request) stays small: moving large futures showed up as
        // memmove in profiles.
        let fetched: Option<Gen> = Box::pin(async {
            let l2 = self.redis().await?;
            let k = self.gen_key(l2, tenant, list);
            let v = l2.call::<Option<u64>>(redis::cmd("GET").arg(&k)).await?;
            Some(Gen {
                value: v.unwrap_or(0) & !LOCAL,
            })
        })
        .await;
        let g = fetched.unwrap_or_else(|| self.fresh_local());
        // A bump that landed meanwhile wins over what was fetched.
        self.gens.get_or_insert(tenant, list, g)
    }

    /// The value under `(tenant, ns, key)`, loaded by `load` on a miss and
    /// kept for `ttl` (a zero TTL caches nothing). Concurrent misses of one
    /// key share one load. Loads are not retried: an error is returned to
    /// every waiter and nothing is cached.
    pub async fn get_or_load<T, E, L, F>(
        &self,
        tenant: Uuid,
        ns: &'static str,
        key: &str,
        ttl: Duration,
        load: L,
    ) -> Result<Arc<T>, Arc<E>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        E: Send + Sync + 'static,
        L: FnOnce() -> F,
        F: Future<Output = Result<T, E>>,
    {
        if ttl.is_zero() {
            return Box::pin(load()).await.map(Arc::new).map_err(Arc::new);
        }
        self.get_or_load_ttl(tenant, ns, key, move || async move {
            load().await.map(|v| (v, ttl))
        })
        .await
        .map(|(v, _)| v)
    }

    /// The value under `(tenant, ns, key)` if this node's L1 holds it now,
    /// under the current generations: no L2, no load, nothing counted. For
    /// a memo checking that what it holds is still what the cache holds.
    pub async fn peek<T: Send + Sync + 'static>(
        &self,
        tenant: Uuid,
        ns: &'static str,
        key: &str,
    ) -> Option<Arc<T>> {
        let tenant_gen = self.gens.get(tenant, TENANT)?;
        let list_gen = match ns.split_once(':') {
            Some((list, _)) => self.gens.get(tenant, list)?,
            None => Gen { value: 0 },
        };
        let k = Key::of::<T>(tenant, ns, key, (tenant_gen, list_gen));
        let entry = self.l1.get(&k).await?;
        if entry.expires_at <= Instant::now() {
            return None;
        }
        entry.value.downcast::<T>().ok()
    }

    /// Like [`Cache::get_or_load`], with the TTL chosen by the loader (short
    /// for negative entries, say). Also says where the value came from.
    ///
    /// `load` makes the loading future only on a miss: a future passed by
    /// value would sit, unpolled but full size, inside every hit's future.
    pub async fn get_or_load_ttl<T, E, L, F>(
        &self,
        tenant: Uuid,
        ns: &'static str,
        key: &str,
        load: L,
    ) -> Result<(Arc<T>, Source), Arc<E>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        E: Send + Sync + 'static,
        L: FnOnce() -> F,
        F: Future<Output = Result<(T, Duration), E>>,
    {
        let tenant_gen = self.generation(tenant, TENANT).await;
        // A namespace without a list (no `:`) follows the tenant's
        // generation only.
        let list_gen = match ns.split_once(':') {
            Some((list, _)) => self.generation(tenant, list).await,
            None => Gen { value: 0 },
        };
        let k = Key::of::<T>(tenant, ns, key, (tenant_gen, list_gen));
        if let Some(entry) = self.l1.get(&k).await {
            if entry.expires_at > Instant::now()
                && let Ok(v) = entry.value.downcast::<T>()
            {
                self.stats.hit(ns, tenant, Source::L1);
                return Ok((v, Source::L1));
            }
            self.l1.invalidate(&k).await;
        }
        // The miss path, boxed (see `generation`).
        Box::pin(self.load_into_l1(k, (tenant_gen, list_gen), load)).await
    }

    async fn load_into_l1<T, E, L, F>(
        &self,
        k: Key,
        (tenant_gen, list_gen): (Gen, Gen),
        load: L,
    ) -> Result<(Arc<T>, Source), Arc<E>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        E: Send + Sync + 'static,
        L: FnOnce() -> F,
        F: Future<Output = Result<(T, Duration), E>>,
    {
        let (tenant, ns) = (k.tenant, k.ns);
        let key = k.key.clone();
        let shared = tenant_gen.shared() && list_gen.shared();
        let redis = if shared { self.redis().await } else { None };
        let l2_key = redis.map(|l2| {
            format!(
                "{}c:{{{tenant}}}:{}:{}:{ns}:{key}",
                l2.prefix, tenant_gen.value, list_gen.value
            )
        });
        let source = std::sync::Mutex::new(Source::L1);
        let entry = self
            .l1
            .try_get_with(k, async {
                if let (Some(l2), Some(l2_key)) = (redis, &l2_key)
                    && let Some(bytes) = l2.get(l2_key).await
                    && let Ok(stored) = serde_json::from_slice::<Stored<T>>(&bytes)
                {
                    *source.lock().unwrap_or_else(|e| e.into_inner()) = Source::L2;
                    self.stats.inserted(ns);
                    let ttl = Duration::from_millis(stored.ttl_ms);
                    return Ok(Entry {
                        value: Arc::new(stored.value),
                        expires_at: Instant::now() + ttl,
                        ttl,
                    });
                }
                let (value, ttl) = load().await?;
                *source.lock().unwrap_or_else(|e| e.into_inner()) = Source::Loaded;
                if let (Some(l2), Some(l2_key)) = (redis, &l2_key) {
                    let stored = Stored {
                        ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
                        value: &value,
                    };
                    if let Ok(bytes) = serde_json::to_vec(&stored) {
                        l2.set(l2_key, &bytes, ttl).await;
                    }
                }
                self.stats.inserted(ns);
                Ok(Entry {
                    value: Arc::new(value),
                    expires_at: Instant::now() + ttl,
                    ttl,
                })
            })
            .await?;
        // `source` stays L1 when another caller's load filled the entry.
        let source = *source.lock().unwrap_or_else(|e| e.into_inner());
        self.stats.hit(ns, tenant, source);
        let value = entry
            .value
            .downcast::<T>()
            .expect("the key carries the value's type");
        Ok((value, source))
    }

    /// Makes every entry of `tenant` unreachable, here and on every node.
    pub async fn bump_tenant(&self, tenant: Uuid) {
        self.bump_list(tenant, TENANT).await;
    }

    /// Makes every entry of `tenant`'s `list` unreachable, here and on every
    /// node (`list` is a namespace's part before `:`).
    pub async fn bump_list(&self, tenant: Uuid, list: &str) {
        self.count_bumps(1);
        let mut announced = false;
        if let Some(l2) = self.redis().await {
            let k = self.gen_key(l2, tenant, list);
            if let Some(v) = l2.call::<u64>(redis::cmd("INCR").arg(&k)).await {
                self.gens.insert(tenant, list, Gen { value: v });
                let message = fanout::Message {
                    node: self.node,
                    tenant,
                    list: list.to_owned(),
                    generation: Some(v),
                };
                announced = l2
                    .call::<i64>(
                        redis::cmd("PUBLISH")
                            .arg(fanout::redis_channel(l2))
                            .arg(message.encode()),
                    )
                    .await
                    .is_some();
                if !announced {
                    // Redis took the INCR but not the PUBLISH: fall back below.
                    tracing::warn!(%tenant, list, "cache invalidation falls back to NOTIFY");
                }
            } else {
                self.gens.insert(tenant, list, self.fresh_local());
            }
        } else {
            self.gens.insert(tenant, list, self.fresh_local());
        }
        if !announced
            && let Some(db) = &self.db
            && let Err(e) = db
                .notify(fanout::PG_CHANNEL, &self.local_announcement(tenant, list))
                .await
        {
            tracing::warn!(error = %e, %tenant, "cache invalidation NOTIFY failed");
        }
    }

    /// [`Cache::bump_list`] for each of `tenants`. Through Redis the bumps
    /// go at once (one connection, pipelined); without it they are
    /// announced in one `NOTIFY` transaction instead of one each.
    pub async fn bump_lists(&self, tenants: &[Uuid], list: &str) {
        if self.redis().await.is_some() {
            futures::future::join_all(tenants.iter().map(|t| self.bump_list(*t, list))).await;
            return;
        }
        self.count_bumps(tenants.len() as u64);
        let mut messages = Vec::with_capacity(tenants.len());
        for &tenant in tenants {
            self.gens.insert(tenant, list, self.fresh_local());
            messages.push(self.local_announcement(tenant, list));
        }
        if let Some(db) = &self.db
            && let Err(e) = db.notify_all(fanout::PG_CHANNEL, &messages).await
        {
            tracing::warn!(error = %e, tenants = tenants.len(), "cache invalidation NOTIFY failed");
        }
    }

    fn count_bumps(&self, n: u64) {
        metrics::counter!("tenantry_cache_invalidations_total").increment(n);
        self.invalidations.fetch_add(n, Ordering::Relaxed);
    }

    /// A bump to a new local generation, as `NOTIFY` tells the other nodes.
    fn local_announcement(&self, tenant: Uuid, list: &str) -> String {
        fanout::Message {
            node: self.node,
            tenant,
            list: list.to_owned(),
            generation: None,
        }
        .encode()
    }

    /// Applies another node's bump.
    pub async fn apply(&self, message: &fanout::Message) {
        if message.node == self.node {
            return;
        }
        self.invalidations.fetch_add(1, Ordering::Relaxed);
        let (tenant, list) = (message.tenant, message.list.as_str());
        match message.generation {
            Some(v) => {
                // Keep the newest generation: announcements may cross.
                let current = self.gens.get(tenant, list);
                if current.is_none_or(|g| !g.shared() || g.value < v) {
                    self.gens.insert(tenant, list, Gen { value: v });
                }
            }
            None => {
                self.gens.insert(tenant, list, self.fresh_local());
            }
        }
    }

    /// Forgets every generation and entry: after a fan-out channel was lost
    /// or Redis came back, bumps may have been missed.
    pub async fn reset(&self) {
        self.gens.clear();
        self.l1.invalidate_all();
        metrics::counter!("tenantry_cache_resets_total").increment(1);
        self.resets.notify_waiters();
    }

    /// The epochs of `tenant` and of the platform. Take it before reading
    /// the values a memo will hold; the memo is current while
    /// [`Cache::is_current`] says so: no generation of the tenant itself
    /// (its record, its memberships) or of the platform (names, platform
    /// settings) moved since, here or by another node's announcement, and
    /// the cache was not reset. A tenant's lists (`posts`, …) do not count.
    pub fn stamp(&self, tenant: Uuid) -> Stamp {
        self.gens.epochs.stamp(tenant)
    }

    /// Whether nothing `stamp` depends on moved since it was taken.
    pub fn is_current(&self, tenant: Uuid, stamp: Stamp) -> bool {
        self.gens.epochs.stamp(tenant) == stamp
    }

    /// Forgets what this node keeps per tenant for tenants with nothing left
    /// in L1 (every entry of theirs expired: idle for at least the longest
    /// TTL): their generations and their cache statistics, once flushed and
    /// held by no memo. Without it, both grow by every tenant ever seen.
    /// Safe at any time: a generation forgotten is made anew (a fresh local
    /// one, or Redis's again), which no entry was stored under, so the worst
    /// a race with a load can do is one more miss. Returns how many tenants'
    /// generations and statistics went.
    pub fn forget_idle_tenants(&self) -> (usize, usize) {
        let live: std::collections::HashSet<Uuid, foldhash::fast::RandomState> =
            self.l1.iter().map(|(k, _)| k.tenant).collect();
        let keep = |t: &Uuid| t.is_nil() || live.contains(t);
        let gens = {
            let mut map = self.gens.map.write().unwrap_or_else(|e| e.into_inner());
            let before = map.len();
            map.retain(|t, _| keep(t));
            shrink_if_sparse(&mut map, 1_024);
            before - map.len()
        };
        let stats = self.stats.forget_idle(keep);
        (gens, stats)
    }

    /// Tenants whose generations this node keeps.
    pub fn tenants_tracked(&self) -> usize {
        self.gens
            .map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Entries in L1 (all namespaces; approximate until pending work runs).
    pub fn entry_count(&self) -> u64 {
        self.l1.entry_count()
    }

    /// Runs moka's pending maintenance (evictions, counts); for tests and
    /// the metrics upkeep.
    pub async fn run_pending_tasks(&self) {
        self.l1.run_pending_tasks().await;
    }
}

/// An L2 value with the TTL it was loaded with, so a node that takes it from
/// Redis keeps it no longer than the loader meant.
#[derive(Serialize, serde::Deserialize)]
struct Stored<T> {
    ttl_ms: u64,
    value: T,
}

#[cfg(test)]
mod tests;
