//! The state every request handler shares.

use std::hash::{Hash as _, Hasher as _};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use metrics_exporter_prometheus::PrometheusHandle;
use tenantry_core::{Limits, TierTable};
use tenantry_db::Db;
use tenantry_db::tenants::Tenant;
use tokio::sync::Notify;
use uuid::Uuid;

use tenantry_fairness::rate::RateLimiter;
use tenantry_fairness::share::DbShare;
use tenantry_fairness::shed::LoadShedder;

use crate::problem::ApiError;
use crate::request::TenantRegistry;
use crate::request::auth::{AuthUser, JwtKeys};
use crate::routes::members::LISTS as MEMBER_LISTS;
use tenantry_cache::{Cache, CacheOptions};

pub use crate::config::PLATFORM_STATEMENT_TIMEOUT_MS;

pub struct AppState {
    /// The control database: the registry, users and the tenant -> cell
    /// directory, and the cell `main` (see [`crate::cells`]).
    pub db: Db,
    /// Every cell (`main` first): where tenants' rows live.
    pub cells: crate::cells::Cells,
    /// Tenants' requests in flight and held (the fence of a move between
    /// cells); counted only when there are cells.
    pub holds: Arc<crate::request::hold::Holds>,
    /// Replaced on SIGHUP ([`crate::ops::reload`]), which also moves the
    /// platform epoch (`Cache::bump_list(PLATFORM, …)`): memoized callers
    /// keep limits made from it (see [`crate::request::memo`]) only while
    /// that epoch stands.
    pub tiers: ArcSwap<TierTable>,
    pub registry: TenantRegistry,
    /// Repeat callers' authentication and tenant, resolved once
    /// ([`crate::request::memo`]).
    pub memo: crate::request::memo::Memo,
    /// `GET /v1/tenant`'s tenant part, serialized once per tenant version.
    pub views: crate::views::TenantViews,
    /// Tenant-namespaced L1 (+ L2 Redis) cache: tenants, memberships, hot
    /// query results (`tenantry_cache`).
    pub cache: Arc<Cache>,
    /// Verified tokens, keyed by the whole token (two tokens never share an
    /// entry), each kept no longer than its `exp`; weighed by length.
    tokens: moka::sync::Cache<Box<str>, VerifiedToken, foldhash::fast::RandomState>,
    pub jwt: JwtKeys,
    pub admin_token: String,
    pub base_domain: Option<String>,
    pub metrics: PrometheusHandle,
    /// Users already provisioned with the email and name their token carries
    /// (keyed by a hash of all three), so a request costs no write for it.
    pub provisioned: crate::request::provisioned::Provisioned,
    /// Wakes the purge worker after a tenant is deleted.
    pub purge_wakeup: Notify,
    pub fairness: Fairness,
    /// Job workers and the analytics collector.
    pub batch: crate::batch::Batch,
    /// Months of range partitions the maintenance worker keeps made ahead.
    pub partition_horizon_months: u32,
    /// Requests by tenant and API version ([`crate::versions`]).
    pub api_versions: crate::versions::Usage,
    /// Usage per tenant per day, counted in memory and flushed in batches
    /// (`crate::ops::usage`).
    pub usage: Arc<crate::ops::usage::UsageMeter>,
    /// Per-tenant measurements, their history and alerts.
    pub observe: crate::observe::Observe,
}

/// The fairness machinery (DESIGN.md, "Fairness").
pub struct Fairness {
    /// False only to measure what fairness costs (`TENANTRY_FAIRNESS=off`):
    /// no rate limits and no database share. Quotas and shedding still apply.
    pub enforce: bool,
    /// Per tenant and per (tenant, user); shared through Redis when set.
    pub rate: RateLimiter,
    pub db_share: Arc<DbShare>,
    pub db_queue_budget: Duration,
    /// The fair queue every tenant-scoped (and user-scoped) request's work
    /// is admitted through, after its rate check: sized to what the machine
    /// runs at once, so a flood waits here in fair order rather than in the
    /// runtime's and the OS's run queues (DESIGN.md, "Fair everywhere").
    /// The same algorithm as the database share, keyed the same way, with
    /// no per-tenant limit but the share's own: a tenant alone may use it
    /// all, among others about half.
    pub cpu_share: Arc<DbShare>,
    /// The controller of both shares' capacities and the tenants'
    /// concurrency, and its record ([`crate::scaling`]).
    pub adaptive: crate::scaling::Adaptive,
    pub shedder: Arc<LoadShedder>,
    /// Recent throttling per tenant, for the admin usage view.
    pub throttles: moka::sync::Cache<Uuid, Arc<ThrottleCounts>>,
}

/// Requests of one tenant turned away on this node since it started (or
/// since the tenant was last active: idle tenants are forgotten).
#[derive(Debug, Default)]
pub struct ThrottleCounts {
    pub rate_limited: std::sync::atomic::AtomicU64,
    pub db_queue_timeouts: std::sync::atomic::AtomicU64,
    pub query_timeouts: std::sync::atomic::AtomicU64,
    pub quota_exceeded: std::sync::atomic::AtomicU64,
}

/// Connections kept out of the tenants' share, for platform work (tenant
/// lookups, user provisioning, admin) so it never queues behind tenants.
pub(crate) const PLATFORM_CONNECTIONS: usize = 2;

/// This machine's cores (2 if it cannot tell).
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// The CPU share's starting capacity: requests in progress at once. A
/// request holds its turn across its database work too, so there is room
/// for the database share's whole capacity and the cores' worth of
/// requests served from memory beside it. The adaptive controller moves it
/// from here to where latency says ([`crate::scaling`]).
pub fn default_cpu_share(db_share: usize) -> usize {
    (cores() * 4).max(db_share + cores())
}

/// The fair share's default capacity: about as many operations as the
/// database can run at once, with some overlap for the network (Little's law:
/// more in flight adds latency, not throughput, and queues them inside
/// PostgreSQL, out of fair order). Without knowing the database's cores, this
/// machine's are the guess: right for the embedded cluster;
/// `TENANTRY_DB_SHARE` says otherwise for a bigger one. Isolation does not
/// come from a small capacity but from the share's cap on one tenant while
/// others are active (half the capacity), so an even load uses all of it.
/// Measured on 2 cores: BENCHMARKS.md, "Fairness".
pub fn default_db_share(pool: usize) -> usize {
    let cores = cores();
    (cores * 3)
        .max(2)
        .min(pool.saturating_sub(PLATFORM_CONNECTIONS).max(1))
}

impl Fairness {
    fn new(db: &Db, rate: RateLimiter, max_in_flight: usize, db_queue_budget: Duration) -> Self {
        let share = default_db_share(db.max_connections());
        Self {
            enforce: true,
            rate,
            db_share: DbShare::new(u32::try_from(share).unwrap_or(u32::MAX)),
            db_queue_budget,
            cpu_share: DbShare::new(u32::try_from(default_cpu_share(share)).unwrap_or(u32::MAX)),
            adaptive: crate::scaling::Adaptive::default(),
            shedder: LoadShedder::new(max_in_flight, 64),
            throttles: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(3_600))
                .build(),
        }
    }

    pub fn throttles_of(&self, tenant: Uuid) -> Arc<ThrottleCounts> {
        self.throttles.get_with(tenant, Default::default)
    }
}

/// A token that verified, and when it stops being valid.
#[derive(Clone)]
struct VerifiedToken {
    user: AuthUser,
    /// The token's `exp` (seconds since the epoch).
    exp: u64,
}

/// The longest a verified token is kept, whatever its `exp`.
const TOKEN_CACHE_MAX: Duration = Duration::from_secs(3_600);
/// A verified token unused this long is let go (an idle tenant's members'
/// tokens need not stay for the hour).
const TOKEN_CACHE_IDLE: Duration = Duration::from_secs(300);
/// The verified-token cache's budget: bytes of tokens (plus overhead).
const TOKEN_CACHE_BYTES: u64 = 64 << 20;
/// What an entry costs beside its token's bytes.
const TOKEN_ENTRY_OVERHEAD: usize = 160;

struct UntilExp;

/// A verified token's weight in the cache: its bytes and the entry's.
#[allow(clippy::borrowed_box)] // moka's weigher takes `&K`
fn token_weight(token: &Box<str>, _: &VerifiedToken) -> u32 {
    u32::try_from(token.len() + TOKEN_ENTRY_OVERHEAD).unwrap_or(u32::MAX)
}

/// How long a verified token is kept from now: until its `exp`, and no
/// longer than [`TOKEN_CACHE_IDLE`] unused.
fn token_ttl(token: &VerifiedToken) -> Duration {
    let now = jsonwebtoken::get_current_timestamp();
    Duration::from_secs(token.exp.saturating_sub(now))
        .min(TOKEN_CACHE_MAX)
        .min(TOKEN_CACHE_IDLE)
}

impl moka::Expiry<Box<str>, VerifiedToken> for UntilExp {
    fn expire_after_create(
        &self,
        _: &Box<str>,
        token: &VerifiedToken,
        _: std::time::Instant,
    ) -> Option<Duration> {
        Some(token_ttl(token))
    }

    fn expire_after_read(
        &self,
        _: &Box<str>,
        token: &VerifiedToken,
        _: std::time::Instant,
        _: Option<Duration>,
        _: std::time::Instant,
    ) -> Option<Duration> {
        Some(token_ttl(token))
    }
}

impl AppState {
    pub fn new(
        db: Db,
        tiers: TierTable,
        jwt_secret: &str,
        admin_token: String,
        base_domain: Option<String>,
        metrics: PrometheusHandle,
    ) -> Self {
        // Without Redis, invalidations reach other nodes by NOTIFY.
        let cache = Arc::new(Cache::new(CacheOptions {
            db: Some(db.clone()),
            ..CacheOptions::default()
        }));
        Self {
            db: db.clone(),
            cells: crate::cells::Cells::single(&db),
            holds: Arc::default(),
            tiers: ArcSwap::from_pointee(tiers),
            registry: TenantRegistry::new(db.clone(), cache.clone()),
            memo: crate::request::memo::Memo::default(),
            views: crate::views::TenantViews::default(),
            cache,
            tokens: moka::sync::Cache::builder()
                .max_capacity(TOKEN_CACHE_BYTES)
                .weigher(token_weight)
                .expire_after(UntilExp)
                .build_with_hasher(foldhash::fast::RandomState::default()),
            jwt: JwtKeys::new(jwt_secret.as_bytes()),
            admin_token,
            base_domain: base_domain.map(|d| d.to_ascii_lowercase()),
            metrics,
            provisioned: crate::request::provisioned::Provisioned::default(),
            purge_wakeup: Notify::new(),
            batch: crate::batch::Batch::new(&db, tenantry_jobs::ingest::IngestConfig::default()),
            fairness: Fairness::new(
                &db,
                RateLimiter::local(),
                crate::config::DEFAULT_MAX_IN_FLIGHT,
                crate::config::DEFAULT_DB_QUEUE_BUDGET,
            ),
            partition_horizon_months: crate::config::DEFAULT_PARTITION_HORIZON_MONTHS,
            api_versions: crate::versions::Usage::default(),
            usage: Arc::default(),
            observe: crate::observe::Observe::default(),
        }
    }

    /// Sets the analytics collector's batching and how many queue workers
    /// run.
    pub fn with_batch(
        mut self,
        ingest: tenantry_jobs::ingest::IngestConfig,
        workers: usize,
    ) -> Self {
        let webhook = self.batch.alert_webhook.take();
        self.batch = crate::batch::Batch::new(&self.db, ingest);
        self.batch.workers = workers;
        self.batch.alert_webhook = webhook;
        self
    }

    /// Adds cells beside `main` (`TENANTRY_CELLS`), each with its own fair
    /// share (as large as `main`'s default for its pool) and analytics
    /// collector (configured as `ingest`).
    pub fn with_cells(
        mut self,
        extra: Vec<(String, Db)>,
        ingest: tenantry_jobs::ingest::IngestConfig,
    ) -> Self {
        let capacity = extra
            .first()
            .map_or(1, |(_, db)| default_db_share(db.max_connections()));
        self.registry.set_cells(extra.clone());
        self.cells = crate::cells::Cells::new(&self.db, extra, capacity, ingest);
        self
    }

    /// The cell holding `tenant`'s rows. A cell the directory names but this
    /// server was not given (`TENANTRY_CELLS` out of step) answers 503
    /// `database_unavailable`: its database is not reachable from here.
    pub fn cell_of(&self, tenant: &Tenant) -> Result<&Arc<crate::cells::Cell>, ApiError> {
        self.cells.get(&tenant.cell).ok_or_else(|| {
            ApiError::from(tenantry_db::DbError::Unavailable(format!(
                "the cell {:?} of this tenant is not configured on this server",
                tenant.cell
            )))
        })
    }

    /// The database holding `tenant`'s rows: the control database for
    /// `main` (with no lookup at all), else its cell's.
    pub fn db_of(&self, tenant: &Tenant) -> Result<&Db, ApiError> {
        if tenant.cell == crate::cells::MAIN {
            return Ok(&self.db);
        }
        Ok(&self.cell_of(tenant)?.db)
    }

    /// The fair share that admits work in `cell`.
    pub fn share_of<'a>(&'a self, cell: &'a crate::cells::Cell) -> &'a Arc<DbShare> {
        cell.own_share().unwrap_or(&self.fairness.db_share)
    }

    /// Where the analytics of `tenant` are group-committed: its cell's
    /// collector.
    pub fn ingest_of(&self, tenant: &Tenant) -> Result<&tenantry_jobs::ingest::Ingest, ApiError> {
        if tenant.cell == crate::cells::MAIN {
            return Ok(&self.batch.ingest);
        }
        Ok(self
            .cell_of(tenant)?
            .own_ingest()
            .unwrap_or(&self.batch.ingest))
    }

    /// Sets how the observer runs (interval, top K, webhook).
    pub fn with_observe(mut self, config: crate::observe::ObserveConfig) -> Self {
        self.batch.alert_webhook = config.webhook.clone();
        self.observe = crate::observe::Observe::new(config);
        self
    }

    /// Sets how many months of partitions are made ahead.
    pub fn with_partition_horizon(mut self, months: u32) -> Self {
        self.partition_horizon_months = months;
        self
    }

    /// Replaces the cache (to give it Redis: L2 and pub/sub fan-out).
    pub fn with_cache(mut self, cache: Cache) -> Self {
        self.cache = Arc::new(cache);
        let cells = self.registry.cells();
        self.registry = TenantRegistry::new(self.db.clone(), self.cache.clone());
        self.registry.set_cells(cells);
        self
    }

    /// Checks a user token, or finds it among tokens already checked (keyed
    /// by the whole token, so two tokens never share an entry; an entry never
    /// outlives the token's `exp`). Only verified tokens are kept, so
    /// made-up tokens cannot fill the cache. Keying by the token itself
    /// rather than a digest of it saves a SHA-256 per request (measured with
    /// callgrind: ~7,000 instructions of a ~130,000-instruction request).
    /// Returns the user and the token's `exp`.
    pub fn verify_token_exp(&self, token: &str) -> Result<(AuthUser, u64), ApiError> {
        let now = jsonwebtoken::get_current_timestamp();
        if let Some(hit) = self.tokens.get(token)
            && hit.exp > now
        {
            self.cache.stats.token_hit(true);
            return Ok((hit.user, hit.exp));
        }
        self.cache.stats.token_hit(false);
        let (user, exp) = self.jwt.verify_with_exp(token)?;
        if exp > now {
            self.tokens.insert(
                token.into(),
                VerifiedToken {
                    user: user.clone(),
                    exp,
                },
            );
        }
        Ok((user, exp))
    }

    /// Sets how many tenant operations the database runs at once (the fair
    /// share's capacity); by default [`default_db_share`].
    pub fn with_db_share(mut self, capacity: usize) -> Self {
        self.fairness.db_share = DbShare::new(u32::try_from(capacity.max(1)).unwrap_or(u32::MAX));
        self
    }

    /// Sets how many tenant requests are in progress at once (the CPU
    /// share's capacity); by default [`default_cpu_share`].
    pub fn with_cpu_share(mut self, capacity: usize) -> Self {
        self.fairness.cpu_share = DbShare::new(u32::try_from(capacity.max(1)).unwrap_or(u32::MAX));
        self
    }

    /// Sets how the adaptive controller runs (or that it does not).
    pub fn with_adaptive(mut self, config: crate::scaling::AdaptiveConfig) -> Self {
        self.fairness.adaptive = crate::scaling::Adaptive::new(config);
        self
    }

    /// Turns rate limits and the database share off (`enforce = false`), to
    /// measure what they cost.
    pub fn with_enforcement(mut self, enforce: bool) -> Self {
        self.fairness.enforce = enforce;
        self
    }

    /// Sets the rate limiter (local or Redis-backed), the in-flight cap and
    /// the database queue budget.
    pub fn with_fairness(
        mut self,
        rate: RateLimiter,
        max_in_flight: usize,
        db_queue_budget: Duration,
    ) -> Self {
        let adaptive = std::mem::take(&mut self.fairness.adaptive);
        self.fairness = Fairness::new(&self.db, rate, max_in_flight, db_queue_budget);
        self.fairness.adaptive = adaptive;
        self
    }

    /// The limits in force for `tenant`: its tier's, with its overrides.
    /// A tenant's effective limits: its tier's, its overrides on top, and
    /// its feature flags decided (tier flags, its own `features`, rollouts).
    pub fn limits_of(&self, tenant: &Tenant) -> Limits {
        let mut limits = self.tiers.load().limits(&tenant.tier).with(&tenant.limits);
        limits.features = limits.features.resolve(tenant.id, &tenant.features);
        limits
    }

    /// Creates the user on first sight, or refreshes their email and name.
    pub async fn provision(&self, user: &AuthUser) -> Result<(), ApiError> {
        self.provision_on(&self.db, crate::cells::MAIN, user).await
    }

    /// [`AppState::provision`] in the control database and, for a tenant of
    /// another cell, in that cell too (its memberships and posts refer to
    /// users there, and its member lists show their names). Remembered per
    /// cell, so a known user costs no write.
    pub async fn provision_for(&self, user: &AuthUser, tenant: &Tenant) -> Result<(), ApiError> {
        self.provision(user).await?;
        if tenant.cell != crate::cells::MAIN {
            let db = self.db_of(tenant)?;
            self.provision_on(db, &tenant.cell, user).await?;
        }
        Ok(())
    }

    /// Verified tokens kept.
    pub fn tokens_len(&self) -> u64 {
        self.tokens.entry_count()
    }

    async fn provision_on(&self, db: &Db, cell: &str, user: &AuthUser) -> Result<(), ApiError> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (user.id, &user.email, &user.name).hash(&mut hasher);
        if cell != crate::cells::MAIN {
            cell.hash(&mut hasher);
        }
        let key = hasher.finish();
        if self.provisioned.contains(key, tokio::time::Instant::now()) {
            return Ok(());
        }
        // Boxed: the cold path must not enlarge every request's future.
        let shown_in = Box::pin(tenantry_db::users::provision(
            db,
            user.id,
            user.email.as_deref(),
            user.name.as_deref(),
            PLATFORM_STATEMENT_TIMEOUT_MS,
        ))
        .await?;
        // A new email or name: the member lists that show it are read again
        // (one announcement however many communities the user is in).
        self.cache.bump_lists(&shown_in, MEMBER_LISTS).await;
        self.provisioned.insert(key, tokio::time::Instant::now());
        Ok(())
    }

    /// The platform's default settings, cached once for every tenant.
    pub async fn platform_settings(&self) -> Result<Arc<serde_json::Value>, ApiError> {
        let db = &self.db;
        let found = self
            .cache
            .get_or_load(
                tenantry_cache::PLATFORM,
                "platform:settings",
                "",
                crate::request::registry::METADATA_TTL,
                || async {
                    tenantry_db::platform::get(db, PLATFORM_STATEMENT_TIMEOUT_MS)
                        .await
                        .map(|p| p.settings)
                },
            )
            .await
            .map_err(|e| ApiError::from(crate::request::registry::unshare(e)))?;
        Ok(found)
    }

    /// After the platform's settings changed: every node reloads them.
    pub async fn platform_settings_changed(&self) {
        self.cache
            .bump_list(tenantry_cache::PLATFORM, "platform")
            .await;
    }

    /// Forgets what is cached about a tenant (after an admin change).
    pub async fn tenant_changed(&self, before: Option<&Tenant>, id: Uuid) {
        self.registry.invalidate(before, id).await;
    }
}

pub type SharedState = Arc<AppState>;
