//! `tenantry`: the command line. Parses flags and environment into settings
//! and calls the library; nothing else lives here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tenantry_api::Settings;
use tenantry_api::config::Secrets;
use uuid::Uuid;

/// mimalloc instead of glibc's malloc: under load on two cores, glibc's
/// arena locks (buffers allocated on one worker thread and freed on the
/// other) showed as futex calls in the request path's profile.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "tenantry", version, about = "A multi-tenant platform server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the HTTP server and its workers.
    Serve(Common),
    /// Applies the schema migrations and exits.
    Migrate(Common),
    /// Prints a user JWT signed with the configured secret.
    Token(TokenArgs),
    /// Generates a synthetic multi-tenant data set straight into the
    /// database (COPY), with progress bars.
    Seed(tenantry_bench::seed::SeedArgs),
    /// Drives a multi-tenant HTTP workload; prints per-tenant latency and
    /// throughput, writes JSON and an HTML report.
    Bench(Box<tenantry_bench::bench::BenchArgs>),
    /// Measures the batch machinery in-process on a throwaway database:
    /// group-commit ingestion against one INSERT per event, and no-op jobs
    /// through the queue.
    BenchBatch(tenantry_bench::batch::BatchBenchArgs),
}

#[derive(Args, Clone)]
struct Common {
    /// Address to listen on.
    #[arg(long, env = "TENANTRY_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// PostgreSQL URL; unset runs an embedded cluster in the data dir.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Where the embedded cluster and generated secrets are kept.
    #[arg(long, env = "TENANTRY_DATA_DIR", default_value = ".tenantry")]
    data_dir: PathBuf,
    /// Redis URL for the shared cache and limits (unset: in-process only).
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    /// HS256 secret for user JWTs (unset: generated once in the data dir).
    #[arg(long, env = "TENANTRY_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// Platform admin token (unset: generated once in the data dir).
    #[arg(long, env = "TENANTRY_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Tenants are reached at <slug>.<base domain> when set.
    #[arg(long, env = "TENANTRY_BASE_DOMAIN")]
    base_domain: Option<String>,
    /// A TOML file of service tiers (unset: built-in tiers).
    #[arg(long = "config", env = "TENANTRY_CONFIG")]
    config_file: Option<PathBuf>,
    /// Database connections in the pool.
    #[arg(long, env = "TENANTRY_DB_POOL", default_value_t = tenantry_api::config::default_db_connections())]
    db_pool: usize,
    /// `per-transaction` prepares statements inside each transaction, for
    /// PgBouncer in transaction mode (< 1.21).
    #[arg(long, env = "TENANTRY_DB_STATEMENTS", value_enum, default_value_t = Statements::Cached)]
    db_statements: Statements,
    /// Requests in flight beyond which the server answers 503 at once
    /// (admin and health endpoints keep a reserve above it).
    #[arg(long, env = "TENANTRY_MAX_IN_FLIGHT", default_value_t = tenantry_api::config::DEFAULT_MAX_IN_FLIGHT)]
    max_in_flight: usize,
    /// How long a request may wait for its tenant's share of the database
    /// before it answers 503, in milliseconds.
    #[arg(long, env = "TENANTRY_DB_QUEUE_BUDGET_MS", default_value_t = 2_000)]
    db_queue_budget_ms: u64,
    /// `off` disables rate limits and the database share, only to measure
    /// what they cost; never in production.
    #[arg(long, env = "TENANTRY_FAIRNESS", value_enum, default_value_t = Switch::On)]
    fairness: Switch,
    /// Tenant database operations run at once, across all tenants (the fair
    /// share's capacity). Default: this machine's cores (at least 2). About
    /// the database's cores is best: more only queues inside PostgreSQL, out
    /// of fair order.
    #[arg(long, env = "TENANTRY_DB_SHARE")]
    db_share: Option<usize>,
    /// Months of range partitions (journey activities, analytics, audit log)
    /// the maintenance worker keeps made ahead.
    #[arg(long, env = "TENANTRY_PARTITION_HORIZON_MONTHS", default_value_t = tenantry_api::config::DEFAULT_PARTITION_HORIZON_MONTHS)]
    partition_horizon_months: u32,
    /// Job queue workers in this server.
    #[arg(long, env = "TENANTRY_JOB_WORKERS", default_value_t = 2)]
    job_workers: usize,
    /// Seconds a claimed job is leased: a crashed worker's jobs run again
    /// after this.
    #[arg(long, env = "TENANTRY_JOB_LEASE_SECS", default_value_t = 60)]
    job_lease_secs: u64,
    /// Milliseconds the analytics collector gathers concurrent requests into
    /// one commit.
    #[arg(long, env = "TENANTRY_INGEST_WINDOW_MS", default_value_t = 2)]
    ingest_window_ms: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Switch {
    On,
    Off,
}

#[derive(Clone, Copy, ValueEnum)]
enum Statements {
    Cached,
    PerTransaction,
}

impl Common {
    fn settings(self) -> Settings {
        Settings {
            listen: self.listen,
            database_url: self.database_url,
            data_dir: self.data_dir,
            redis_url: self.redis_url,
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
            partition_horizon_months: self.partition_horizon_months,
            job_workers: self.job_workers,
            job_lease: Duration::from_secs(self.job_lease_secs),
            ingest_window: Duration::from_millis(self.ingest_window_ms),
        }
    }
}

#[derive(Args)]
struct TokenArgs {
    /// The user's id (the token's `sub`).
    #[arg(long)]
    user: Uuid,
    /// How long the token is valid: e.g. 30m, 1h, 7d.
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    ttl: Duration,
    #[arg(long)]
    email: Option<String>,
    #[arg(long)]
    name: Option<String>,
    #[arg(long, env = "TENANTRY_DATA_DIR", default_value = ".tenantry")]
    data_dir: PathBuf,
    #[arg(long, env = "TENANTRY_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
}

fn parse_ttl(raw: &str) -> Result<Duration, String> {
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("'{raw}' is not a duration like 30m, 1h or 7d"))?;
    let secs = match unit {
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3_600,
        "d" => n * 86_400,
        _ => return Err(format!("'{raw}': the unit must be s, m, h or d")),
    };
    if secs == 0 {
        return Err("the ttl must be positive".to_owned());
    }
    Ok(Duration::from_secs(secs))
}

/// Logs go to stderr: coloured only on a terminal, and one JSON object per
/// line with `TENANTRY_LOG_FORMAT=json` (for log shippers). `RUST_LOG`
/// filters as usual.
fn init_logs() -> anyhow::Result<()> {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,tower_http=warn".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match std::env::var("TENANTRY_LOG_FORMAT").as_deref() {
        Ok("json") => builder.json().with_current_span(false).init(),
        Ok("text") | Err(_) => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        Ok(other) => anyhow::bail!("TENANTRY_LOG_FORMAT is `text` or `json`, not `{other}`"),
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_logs()?;

    match Cli::parse().command {
        Command::Serve(common) => {
            let app = tenantry_api::Application::build(common.settings()).await?;
            app.run_until(tenantry_api::server::shutdown_signal()).await
        }
        Command::Migrate(common) => {
            let settings = common.settings();
            let app = tenantry_api::Application::build(Settings {
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                ..settings
            })
            .await?;
            // Building the application applied the migrations; stop at once.
            app.run_until(async {}).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Token(args) => {
            let settings = Settings {
                data_dir: args.data_dir,
                jwt_secret: args.jwt_secret,
                ..Settings::default()
            };
            settings.validate()?;
            // A secret generated here would sign tokens no server accepts.
            let kept = settings.data_dir.join("jwt_secret");
            if settings.jwt_secret.is_none() && !kept.exists() {
                anyhow::bail!(
                    "no server has run with the data dir {} (there is no {}): pass the server's \
                     --data-dir (or TENANTRY_DATA_DIR), or the secret it uses as \
                     TENANTRY_JWT_SECRET",
                    settings.data_dir.display(),
                    kept.display()
                );
            }
            let secrets = Secrets::load(&settings).context("Failed to read the JWT secret")?;
            let keys = tenantry_api::request::auth::JwtKeys::new(secrets.jwt_secret.as_bytes());
            println!(
                "{}",
                keys.issue(args.user, args.ttl, args.email, args.name)?
            );
            Ok(())
        }
        Command::Seed(args) => tenantry_bench::seed::run(args).await,
        Command::Bench(args) => tenantry_bench::bench::run(*args).await,
        Command::BenchBatch(args) => tenantry_bench::batch::run(args).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_accepts_units() {
        assert_eq!(parse_ttl("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("30m"), Ok(Duration::from_secs(1_800)));
        assert_eq!(parse_ttl("1h"), Ok(Duration::from_secs(3_600)));
        assert_eq!(parse_ttl("7d"), Ok(Duration::from_secs(604_800)));
        assert!(parse_ttl("1w").is_err());
        assert!(parse_ttl("h").is_err());
        assert!(parse_ttl("0s").is_err());
    }
}
