//! `tenantry`: the command line. Parses flags and environment into settings
//! and calls the library; nothing else lives here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use tenantry_api::Settings;
use tenantry_api::config::{Secrets, ServeArgs};
use uuid::Uuid;

mod admin;

/// jemalloc instead of glibc's malloc: under load on two cores, glibc's
/// arena locks (buffers allocated on one worker thread and freed on the
/// other) showed as futex calls in the request path's profile. jemalloc
/// rather than mimalloc (used before): its background threads give emptied
/// pages back. At 100,000 tenants, the same code left 783 resident bytes
/// per idle tenant under jemalloc and 2,028 under mimalloc, at the same
/// throughput (BENCHMARKS.md, "Session 12"). Without the `jemalloc`
/// feature, the system's allocator, for heap profilers.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "tenantry", version, about = "A multi-tenant platform server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the HTTP server and its workers.
    Serve(ServeArgs),
    /// Applies the schema migrations and exits.
    Migrate(ServeArgs),
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
    /// The platform admin API of a running server: tenants, members,
    /// exports and imports, jobs, database health.
    Admin(admin::AdminArgs),
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
        Command::Admin(args) => admin::run(args).await,
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
