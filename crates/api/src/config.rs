//! Server settings: built-in defaults, then the tiers TOML file, then
//! environment variables and flags (which the binary maps into [`Settings`]).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use tenantry_core::TierTable;
use tenantry_db::StatementMode;

/// The largest request body accepted (413 beyond).
pub const BODY_LIMIT: usize = 1 << 20;

/// Statement timeout for platform work that belongs to no tenant (tenant
/// lookups, user provisioning, admin API).
pub const PLATFORM_STATEMENT_TIMEOUT_MS: u32 = 5_000;

/// Everything `tenantry serve` needs to start. Secrets are never printed by
/// `Debug`.
#[derive(Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    /// `None`: run the embedded PostgreSQL cluster in `data_dir`.
    pub database_url: Option<String>,
    pub data_dir: PathBuf,
    pub redis_url: Option<String>,
    /// `None`: generated once and kept in `data_dir`.
    pub jwt_secret: Option<String>,
    /// `None`: generated once and kept in `data_dir`.
    pub admin_token: Option<String>,
    /// Tenants are reached at `<slug>.<base_domain>` when set.
    pub base_domain: Option<String>,
    /// A TOML file of tiers; `None` uses the built-in tiers.
    pub config_file: Option<PathBuf>,
    pub db_max_connections: usize,
    pub statement_mode: StatementMode,
    /// Requests in flight beyond which the server sheds load (503).
    pub max_in_flight: usize,
    /// How long a request may wait for its tenant's database share (503 after).
    pub db_queue_budget: std::time::Duration,
    /// Rate limits and the database share; off only to measure their cost.
    pub fairness: bool,
    /// Tenant database operations admitted at once; `None`: this machine's
    /// cores (see `state::default_db_share`).
    pub db_share: Option<usize>,
    /// Months of range partitions made ahead (events, activities, logs).
    pub partition_horizon_months: u32,
    /// Job queue workers in this server.
    pub job_workers: usize,
    /// How long a claimed job is leased: a crashed worker's jobs run again
    /// after this.
    pub job_lease: std::time::Duration,
    /// How long the analytics collector gathers requests into one commit.
    pub ingest_window: std::time::Duration,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("Settings")
            .field("listen", &self.listen)
            .field("database_url", &redact(&self.database_url))
            .field("data_dir", &self.data_dir)
            .field("redis_url", &redact(&self.redis_url))
            .field("jwt_secret", &redact(&self.jwt_secret))
            .field("admin_token", &redact(&self.admin_token))
            .field("base_domain", &self.base_domain)
            .field("config_file", &self.config_file)
            .field("db_max_connections", &self.db_max_connections)
            .field("statement_mode", &self.statement_mode)
            .field("max_in_flight", &self.max_in_flight)
            .field("db_queue_budget", &self.db_queue_budget)
            .field("fairness", &self.fairness)
            .field("db_share", &self.db_share)
            .field("partition_horizon_months", &self.partition_horizon_months)
            .field("job_workers", &self.job_workers)
            .field("job_lease", &self.job_lease)
            .field("ingest_window", &self.ingest_window)
            .finish()
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: None,
            data_dir: PathBuf::from(".tenantry"),
            redis_url: None,
            jwt_secret: None,
            admin_token: None,
            base_domain: None,
            config_file: None,
            db_max_connections: default_db_connections(),
            statement_mode: StatementMode::Cached,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            db_queue_budget: DEFAULT_DB_QUEUE_BUDGET,
            fairness: true,
            db_share: None,
            partition_horizon_months: DEFAULT_PARTITION_HORIZON_MONTHS,
            job_workers: 2,
            job_lease: std::time::Duration::from_secs(60),
            ingest_window: std::time::Duration::from_millis(2),
        }
    }
}

/// Enough in flight to keep the database share full with a deep fair queue
/// behind it; beyond that, waiting only adds latency.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1_024;
pub const DEFAULT_DB_QUEUE_BUDGET: std::time::Duration = std::time::Duration::from_secs(2);
pub const DEFAULT_PARTITION_HORIZON_MONTHS: u32 = 12;

/// A pool a little larger than the cores: more connections than the
/// database can run at once only adds queueing inside PostgreSQL.
pub fn default_db_connections() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (cores * 4).clamp(8, 64)
}

impl Settings {
    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(secret) = &self.jwt_secret
            && secret.len() < 32
        {
            anyhow::bail!("TENANTRY_JWT_SECRET must be at least 32 characters");
        }
        if let Some(token) = &self.admin_token
            && token.len() < 16
        {
            anyhow::bail!("TENANTRY_ADMIN_TOKEN must be at least 16 characters");
        }
        if let Some(base) = &self.base_domain {
            tenantry_core::Domain::parse(base)
                .map_err(|e| anyhow::anyhow!("TENANTRY_BASE_DOMAIN: {e}"))?;
        }
        if self.max_in_flight == 0 {
            anyhow::bail!("the in-flight cap must be at least 1");
        }
        anyhow::ensure!(
            (1..=64).contains(&self.job_workers),
            "TENANTRY_JOB_WORKERS must be from 1 to 64"
        );
        anyhow::ensure!(
            self.job_lease >= std::time::Duration::from_secs(1),
            "TENANTRY_JOB_LEASE_SECS must be at least 1"
        );
        anyhow::ensure!(
            self.ingest_window <= std::time::Duration::from_secs(1),
            "TENANTRY_INGEST_WINDOW_MS must be at most 1000"
        );
        if !(1..=120).contains(&self.partition_horizon_months) {
            anyhow::bail!("the partition horizon must be 1 to 120 months");
        }
        if self.db_max_connections == 0 {
            anyhow::bail!("the database pool needs at least one connection");
        }
        Ok(())
    }

    /// The tier table: the file's if one is configured, else the built-in one.
    pub fn tiers(&self) -> anyhow::Result<TierTable> {
        match &self.config_file {
            None => Ok(TierTable::default()),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("Failed to read {}", path.display()))?;
                TierTable::from_toml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
            }
        }
    }
}

/// The secrets the server runs with, after defaults were generated.
#[derive(Clone)]
pub struct Secrets {
    pub jwt_secret: String,
    pub admin_token: String,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secrets { <redacted> }")
    }
}

impl Secrets {
    /// Uses the configured secrets, or reads (generating on first use) the
    /// ones kept in `data_dir`, readable by the owner only.
    pub fn load(settings: &Settings) -> anyhow::Result<Self> {
        let jwt_secret = match &settings.jwt_secret {
            Some(s) => s.clone(),
            None => kept_secret(&settings.data_dir, "jwt_secret", 48)?,
        };
        let admin_token = match &settings.admin_token {
            Some(s) => s.clone(),
            None => kept_secret(&settings.data_dir, "admin_token", 32)?,
        };
        Ok(Self {
            jwt_secret,
            admin_token,
        })
    }
}

fn kept_secret(dir: &Path, name: &str, bytes: usize) -> anyhow::Result<String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;

    let path = dir.join(name);
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let existing = existing.trim().to_owned();
        if !existing.is_empty() {
            return Ok(existing);
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("Failed to create {}", dir.display()))?;
    let secret = random_token(bytes);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("Failed to write {}", path.display()))?;
    file.write_all(secret.as_bytes())
        .with_context(|| format!("Failed to write {}", path.display()))?;
    Ok(secret)
}

/// A URL-safe random token of `bytes` random bytes.
pub fn random_token(bytes: usize) -> String {
    use base64::Engine as _;
    use rand::RngCore as _;
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}
