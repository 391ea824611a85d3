//! Server settings: built-in defaults, then the tiers TOML file, then
//! environment variables and flags (which the binary maps into [`Settings`]).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    /// More databases, `name=url,...` (`TENANTRY_CELLS`): cells beside the
    /// control database `main` ([`crate::cells`]). Needs `database_url`.
    pub cells: Option<String>,
    pub data_dir: PathBuf,
    pub redis_url: Option<String>,
    /// A PEM file of the CA that signed Redis's certificate (`rediss://`),
    /// instead of the system's trusted roots.
    pub redis_ca_file: Option<PathBuf>,
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
    /// Tenant database operations admitted at once; `None`: 3 × this
    /// machine's cores, at most the pool − 2 (`state::default_db_share`).
    pub db_share: Option<usize>,
    /// Tenant requests in progress at once (the CPU share's starting
    /// capacity); `None`: `state::default_cpu_share`.
    pub cpu_share: Option<usize>,
    /// The adaptive controller of both shares and the tenants' concurrency.
    pub adaptive: crate::scaling::AdaptiveConfig,
    /// Months of range partitions made ahead (events, activities, logs).
    pub partition_horizon_months: u32,
    /// Job queue workers in this server.
    pub job_workers: usize,
    /// How long a claimed job is leased: a crashed worker's jobs run again
    /// after this.
    pub job_lease: std::time::Duration,
    /// How long the analytics collector gathers requests into one commit.
    pub ingest_window: std::time::Duration,
    /// Where tenant exports (backups) and uploaded imports are kept; `None`:
    /// `exports` in `data_dir`.
    pub export_dir: Option<PathBuf>,
    /// Per-tenant measurements: interval, top K, alert webhook
    /// (the webhook's secret is never printed by `Debug`).
    pub observe: crate::observe::ObserveConfig,
    /// `TENANTRY_REPLICAS`: `cell=url,...` streaming standbys that serve
    /// reads (`tenantry_db::replica`); never printed by `Debug`.
    pub replicas: Option<String>,
    /// How replicas are polled and how much lag they may have.
    pub replica_options: tenantry_db::replica::ReplicaOptions,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("Settings")
            .field("listen", &self.listen)
            .field("database_url", &redact(&self.database_url))
            .field("cells", &redact(&self.cells))
            .field("data_dir", &self.data_dir)
            .field("redis_url", &redact(&self.redis_url))
            .field("redis_ca_file", &self.redis_ca_file)
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
            .field("cpu_share", &self.cpu_share)
            .field("adaptive", &self.adaptive)
            .field("partition_horizon_months", &self.partition_horizon_months)
            .field("job_workers", &self.job_workers)
            .field("job_lease", &self.job_lease)
            .field("ingest_window", &self.ingest_window)
            .field("export_dir", &self.export_dir)
            .field("observe", &self.observe)
            .field("replicas", &redact(&self.replicas))
            .field("replica_options", &self.replica_options)
            .finish()
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().expect("the default address parses"),
            database_url: None,
            cells: None,
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            redis_url: None,
            redis_ca_file: None,
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
            cpu_share: None,
            adaptive: crate::scaling::AdaptiveConfig::default(),
            partition_horizon_months: DEFAULT_PARTITION_HORIZON_MONTHS,
            job_workers: DEFAULT_JOB_WORKERS,
            job_lease: std::time::Duration::from_secs(DEFAULT_JOB_LEASE_SECS),
            ingest_window: std::time::Duration::from_millis(DEFAULT_INGEST_WINDOW_MS),
            export_dir: None,
            observe: crate::observe::ObserveConfig::default(),
            replicas: None,
            replica_options: tenantry_db::replica::ReplicaOptions::default(),
        }
    }
}

/// Enough in flight to keep the database share full with a deep fair queue
/// behind it; beyond that, waiting only adds latency.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1_024;
pub const DEFAULT_DB_QUEUE_BUDGET_MS: u64 = 2_000;
pub const DEFAULT_DB_QUEUE_BUDGET: std::time::Duration =
    std::time::Duration::from_millis(DEFAULT_DB_QUEUE_BUDGET_MS);
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_DATA_DIR: &str = ".tenantry";
pub const DEFAULT_JOB_WORKERS: usize = 2;
pub const DEFAULT_JOB_LEASE_SECS: u64 = 60;
pub const DEFAULT_INGEST_WINDOW_MS: u64 = 2;
pub const DEFAULT_PARTITION_HORIZON_MONTHS: u32 = 12;

/// A pool a little larger than the cores: more connections than the
/// database can run at once only adds queueing inside PostgreSQL.
pub fn default_db_connections() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (cores * 4).clamp(8, 64)
}

/// The flags of `tenantry serve` (and `migrate`), each also read from its
/// environment variable. Every default is written once, here or in the
/// constants below, which [`Settings::default`] uses too; a test holds the
/// README's configuration table to them.
#[derive(clap::Args, Clone, Debug)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "TENANTRY_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// PostgreSQL URL; unset runs an embedded cluster in the data dir.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// More PostgreSQL databases for tenants, `name=url,name=url` (cells;
    /// `DATABASE_URL` is the control database and the cell `main`).
    #[arg(long, env = "TENANTRY_CELLS", hide_env_values = true)]
    pub cells: Option<String>,
    /// Where the embedded cluster and generated secrets are kept.
    #[arg(long, env = "TENANTRY_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Redis URL for the shared cache and limits (unset: in-process only).
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// PEM file of the CA that signed Redis's TLS certificate, for a
    /// rediss:// URL (unset: the system's trusted roots).
    #[arg(long, env = "TENANTRY_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,
    /// HS256 secret for user JWTs (unset: generated once in the data dir).
    #[arg(long, env = "TENANTRY_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Platform admin token (unset: generated once in the data dir).
    #[arg(long, env = "TENANTRY_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Tenants are reached at <slug>.<base domain> when set.
    #[arg(long, env = "TENANTRY_BASE_DOMAIN")]
    pub base_domain: Option<String>,
    /// A TOML file of service tiers (unset: built-in tiers).
    #[arg(long = "config", env = "TENANTRY_CONFIG")]
    pub config_file: Option<PathBuf>,
    /// Database connections in the pool.
    #[arg(long, env = "TENANTRY_DB_POOL", default_value_t = default_db_connections())]
    pub db_pool: usize,
    /// `per-transaction` prepares statements inside each transaction, for
    /// PgBouncer in transaction mode (< 1.21).
    #[arg(long, env = "TENANTRY_DB_STATEMENTS", value_enum, default_value_t = Statements::Cached)]
    pub db_statements: Statements,
    /// Requests in flight beyond which the server answers 503 at once
    /// (admin and health endpoints keep a reserve above it).
    #[arg(long, env = "TENANTRY_MAX_IN_FLIGHT", default_value_t = DEFAULT_MAX_IN_FLIGHT)]
    pub max_in_flight: usize,
    /// How long a request may wait for its tenant's share of the database
    /// before it answers 503, in milliseconds.
    #[arg(long, env = "TENANTRY_DB_QUEUE_BUDGET_MS", default_value_t = DEFAULT_DB_QUEUE_BUDGET_MS)]
    pub db_queue_budget_ms: u64,
    /// `off` disables rate limits and the database share, only to measure
    /// what they cost; never in production.
    #[arg(long, env = "TENANTRY_FAIRNESS", value_enum, default_value_t = Switch::On)]
    pub fairness: Switch,
    /// Tenant database operations run at once, across all tenants (the fair
    /// share's capacity). Default: 3 × this machine's cores, at most the
    /// pool − 2. About the database's cores is best: more only queues inside
    /// PostgreSQL, out of fair order.
    #[arg(long, env = "TENANTRY_DB_SHARE")]
    pub db_share: Option<usize>,
    /// Tenant requests in progress at once, across all tenants (the CPU
    /// share's capacity: the rest wait in fair order). Default: 4 × this
    /// machine's cores, at least the database share + the cores.
    #[arg(long, env = "TENANTRY_CPU_SHARE")]
    pub cpu_share: Option<usize>,
    /// `on`: both shares' capacities follow measured latency (the two
    /// settings above are where they start) and each tenant's database
    /// concurrency moves within its tier's bounds on its queue wait; `off`
    /// pins them.
    #[arg(long, env = "TENANTRY_ADAPTIVE", value_enum, default_value_t = Switch::On)]
    pub adaptive: Switch,
    /// Milliseconds between two steps of the adaptive controller.
    #[arg(long, env = "TENANTRY_ADAPTIVE_INTERVAL_MS", default_value_t = crate::scaling::DEFAULT_ADAPTIVE_INTERVAL_MS)]
    pub adaptive_interval_ms: u64,
    /// Months of range partitions (journey activities, analytics, audit log)
    /// the maintenance worker keeps made ahead.
    #[arg(long, env = "TENANTRY_PARTITION_HORIZON_MONTHS", default_value_t = DEFAULT_PARTITION_HORIZON_MONTHS)]
    pub partition_horizon_months: u32,
    /// Job queue workers in this server.
    #[arg(long, env = "TENANTRY_JOB_WORKERS", default_value_t = DEFAULT_JOB_WORKERS)]
    pub job_workers: usize,
    /// Seconds a claimed job is leased: a crashed worker's jobs run again
    /// after this.
    #[arg(long, env = "TENANTRY_JOB_LEASE_SECS", default_value_t = DEFAULT_JOB_LEASE_SECS)]
    pub job_lease_secs: u64,
    /// Milliseconds the analytics collector gathers concurrent requests into
    /// one commit.
    #[arg(long, env = "TENANTRY_INGEST_WINDOW_MS", default_value_t = DEFAULT_INGEST_WINDOW_MS)]
    pub ingest_window_ms: u64,
    /// Directory of tenant exports, backups and uploaded imports (default:
    /// `exports` in the data directory).
    #[arg(long, env = "TENANTRY_EXPORT_DIR")]
    pub export_dir: Option<PathBuf>,
    /// Tenants with their own series in /metrics (the rest are `_other`).
    #[arg(long, env = "TENANTRY_METRICS_TOP_K", default_value_t = crate::observe::top::DEFAULT_TOP_K)]
    pub metrics_top_k: usize,
    /// Seconds per measurement interval (flush, alerts): 60 in production.
    #[arg(long, env = "TENANTRY_OBSERVE_INTERVAL_SECS", default_value_t = 60)]
    pub observe_interval_secs: u64,
    /// Per-tenant measurements in the request path; off only to measure
    /// what they cost (nothing reaches the history, alerts or /metrics).
    #[arg(long, env = "TENANTRY_OBSERVE_RECORD", value_enum, default_value_t = Switch::On)]
    pub observe_record: Switch,
    /// Where alerts are POSTed (through the job queue).
    #[arg(long, env = "TENANTRY_ALERT_WEBHOOK")]
    pub alert_webhook: Option<String>,
    /// The HMAC-SHA256 key of the `Tenantry-Signature` header.
    #[arg(long, env = "TENANTRY_ALERT_WEBHOOK_SECRET", hide_env_values = true)]
    pub alert_webhook_secret: Option<String>,
    /// Read replicas: `cell=url,...` (the cell of DATABASE_URL is `main`).
    /// Reads go to one that has replayed the caller's last write.
    #[arg(long, env = "TENANTRY_REPLICAS", hide_env_values = true)]
    pub replicas: Option<String>,
    /// How often replicas' replay positions are read.
    #[arg(long, env = "TENANTRY_REPLICA_POLL_MS", default_value_t = 100)]
    pub replica_poll_ms: u64,
    /// A replica further behind than this is not read from (and the health
    /// check warns).
    #[arg(long, env = "TENANTRY_REPLICA_MAX_LAG_SECS", default_value_t = 10)]
    pub replica_max_lag_secs: u64,
}

/// On or off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    On,
    Off,
}

/// How statements are prepared.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Statements {
    Cached,
    PerTransaction,
}

impl ServeArgs {
    /// The settings these flags say.
    pub fn settings(self) -> Settings {
        Settings {
            listen: self.listen,
            database_url: self.database_url,
            cells: self.cells,
            data_dir: self.data_dir,
            redis_url: self.redis_url,
            redis_ca_file: self.redis_ca_file,
            jwt_secret: self.jwt_secret,
            admin_token: self.admin_token,
            base_domain: self.base_domain,
            config_file: self.config_file,
            db_max_connections: self.db_pool,
            statement_mode: match self.db_statements {
                Statements::Cached => tenantry_db::StatementMode::Cached,
                Statements::PerTransaction => tenantry_db::StatementMode::PerTransaction,
            },
            max_in_flight: self.max_in_flight,
            db_queue_budget: Duration::from_millis(self.db_queue_budget_ms),
            fairness: self.fairness == Switch::On,
            db_share: self.db_share,
            cpu_share: self.cpu_share,
            adaptive: crate::scaling::AdaptiveConfig {
                enabled: self.adaptive == Switch::On,
                interval: Duration::from_millis(self.adaptive_interval_ms.max(10)),
                ..crate::scaling::AdaptiveConfig::default()
            },
            partition_horizon_months: self.partition_horizon_months,
            job_workers: self.job_workers,
            job_lease: Duration::from_secs(self.job_lease_secs),
            ingest_window: Duration::from_millis(self.ingest_window_ms),
            export_dir: self.export_dir,
            observe: crate::observe::ObserveConfig {
                interval: Duration::from_secs(self.observe_interval_secs.max(1)),
                top_k: self.metrics_top_k,
                webhook: self
                    .alert_webhook
                    .map(|url| crate::observe::webhook::Webhook {
                        url,
                        secret: self.alert_webhook_secret.unwrap_or_default(),
                    }),
                record: self.observe_record == Switch::On,
                ..crate::observe::ObserveConfig::default()
            },
            replicas: self.replicas.filter(|r| !r.trim().is_empty()),
            replica_options: tenantry_db::replica::ReplicaOptions {
                poll_interval: Duration::from_millis(self.replica_poll_ms),
                max_lag: Duration::from_secs(self.replica_max_lag_secs),
                ..tenantry_db::replica::ReplicaOptions::default()
            },
        }
    }
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
        let mut cell_names = vec![crate::cells::MAIN.to_owned()];
        if let Some(cells) = &self.cells {
            let cells = crate::cells::parse(cells)?;
            anyhow::ensure!(
                cells.is_empty() || self.database_url.is_some(),
                "TENANTRY_CELLS needs DATABASE_URL (the control database, the cell main)"
            );
            cell_names.extend(cells.into_iter().map(|(name, _)| name));
        }
        if let Some(spec) = &self.replicas {
            for replica in tenantry_db::replica::parse_specs(spec)? {
                // Cells beside `main` come with TENANTRY_CELLS.
                anyhow::ensure!(
                    cell_names.contains(&replica.cell),
                    "TENANTRY_REPLICAS: there is no cell {} (the cell of DATABASE_URL is main; \
                     others come with TENANTRY_CELLS)",
                    replica.cell
                );
            }
            anyhow::ensure!(
                self.database_url.is_some(),
                "TENANTRY_REPLICAS needs DATABASE_URL (the embedded PostgreSQL has no replicas)"
            );
        }
        anyhow::ensure!(
            (10..=60_000).contains(&(self.replica_options.poll_interval.as_millis() as u64)),
            "TENANTRY_REPLICA_POLL_MS must be from 10 to 60000"
        );
        anyhow::ensure!(
            (1..=3_600).contains(&self.replica_options.max_lag.as_secs()),
            "TENANTRY_REPLICA_MAX_LAG_SECS must be from 1 to 3600"
        );
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

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, Parser};

    use super::*;

    #[derive(Parser)]
    struct Serve {
        #[command(flatten)]
        args: ServeArgs,
    }

    /// The configuration tables of the README and of docs/API.md
    /// ("Command line"): env var → default cell.
    fn documented() -> Vec<(String, String)> {
        let docs = [
            include_str!("../../../README.md"),
            include_str!("../../../docs/API.md"),
        ];
        docs.iter()
            .flat_map(|doc| doc.lines())
            .filter_map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                let env = cells.get(2)?.strip_prefix('`')?.strip_suffix('`')?;
                let ok = env.bytes().all(|b| b.is_ascii_uppercase() || b == b'_');
                ok.then(|| {
                    (
                        env.to_owned(),
                        cells.get(3).copied().unwrap_or("").to_owned(),
                    )
                })
            })
            .collect()
    }

    #[test]
    fn the_example_tiers_file_in_deploy_parses() {
        let tiers = TierTable::from_toml(include_str!("../../../deploy/tiers.toml"))
            .expect("deploy/tiers.toml is a valid tiers file");
        let names: Vec<&str> = tiers.tiers.keys().map(String::as_str).collect();
        assert_eq!(names, ["enterprise", "free", "pro"]);
        assert_eq!(tiers.default_tier, "free");
    }

    #[test]
    fn the_docs_name_every_flag_with_the_default_help_gives() {
        let table = documented();
        assert!(table.len() > 10, "the configuration tables are found");
        for arg in Serve::command().get_arguments() {
            let Some(env) = arg.get_env() else { continue };
            let env = env.to_string_lossy();
            assert!(
                table.iter().any(|(e, _)| *e == env),
                "docs/API.md's configuration table lacks {env}"
            );
            for (env, default) in table.iter().filter(|(e, _)| *e == env) {
                for value in arg.get_default_values() {
                    let value = value.to_string_lossy().replace('_', "");
                    assert!(
                        default.contains(value.as_str()),
                        "the docs say {env} defaults to `{default}`, --help says `{value}`"
                    );
                }
            }
        }
    }

    #[test]
    fn settings_default_to_what_the_flags_default_to() {
        // The flags read their environment variables too: only compare when
        // none is set.
        let set = Serve::command()
            .get_arguments()
            .filter_map(|a| a.get_env())
            .any(|env| std::env::var_os(env).is_some());
        if set {
            return;
        }
        let flags = Serve::parse_from(["serve"]).args.settings();
        let defaults = Settings::default();
        assert_eq!(format!("{flags:?}"), format!("{defaults:?}"));
    }
}
