//! What the load goes to: a running server named by `--url` (loopback
//! only), or a server this process starts on a fresh database and seeds.
//!
//! Why loopback only: load is only ever sent to this machine, so a typo in
//! `--url` can never turn a benchmark into traffic against someone else.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use tenantry_api::Settings;
use tenantry_db::embedded::EmbeddedPostgres;
use tenantry_db::{Db, DbOptions};
use tokio::sync::oneshot;

use super::client::Endpoint;
use crate::seed::{self, LoadOptions, SeedConfig, SeedSummary};

/// Resolves an `http://host:port` URL to a loopback endpoint, refusing any
/// other address.
pub async fn endpoint_from_url(url: &str) -> anyhow::Result<Endpoint> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("--url must start with http:// (got {url})"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    anyhow::ensure!(!authority.is_empty(), "--url {url} names no host");
    let with_port = if authority.ends_with(']') || !authority.contains(':') {
        format!("{authority}:80")
    } else {
        authority.to_owned()
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(&with_port)
        .await
        .with_context(|| format!("Failed to resolve {authority}"))?
        .collect();
    anyhow::ensure!(!addrs.is_empty(), "{authority} resolves to no address");
    if let Some(outside) = addrs.iter().find(|a| !a.ip().is_loopback()) {
        anyhow::bail!(
            "tenantry bench only targets loopback addresses (127.0.0.0/8, ::1); \
             {authority} resolves to {}",
            outside.ip()
        );
    }
    // Prefer IPv4 loopback, where servers usually listen.
    let addr = addrs
        .iter()
        .find(|a| a.is_ipv4())
        .copied()
        .unwrap_or(addrs[0]);
    Endpoint::new(addr)
}

/// How a self-hosted run gets its database and data.
#[derive(Debug, Clone)]
pub struct SelfHostOptions {
    /// `None`: a fresh embedded cluster in a temporary directory.
    pub database_url: Option<String>,
    pub seed: SeedConfig,
    pub progress: bool,
    pub db_pool: Option<usize>,
}

/// A server started in this process, with its secrets.
pub struct SelfHosted {
    pub endpoint: Endpoint,
    pub url: String,
    pub admin_token: String,
    pub jwt_secret: String,
    /// What was seeded; `None` when the database already had tenants.
    pub seeded: Option<SeedSummary>,
    shutdown: oneshot::Sender<()>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    embedded: Option<EmbeddedPostgres>,
    _dir: tempfile::TempDir,
}

impl SelfHosted {
    /// Starts the database (embedded unless a URL is given), seeds it when it
    /// has no tenants, and starts the server on 127.0.0.1:0.
    pub async fn start(options: &SelfHostOptions) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("tenantry-bench-")
            .tempdir()
            .context("Failed to create a temporary data directory")?;
        let (url, embedded) = match &options.database_url {
            Some(url) => (url.clone(), None),
            None => {
                let pg = EmbeddedPostgres::start(dir.path())
                    .await
                    .context("Failed to start an embedded PostgreSQL for the bench")?;
                (pg.connection_string(), Some(pg))
            }
        };
        let started = async {
            let seeded = seed_if_empty(&url, options).await?;
            let jwt_secret = tenantry_api::config::random_token(32);
            let admin_token = tenantry_api::config::random_token(24);
            let mut settings = Settings {
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                database_url: Some(url.clone()),
                data_dir: PathBuf::from(dir.path()),
                jwt_secret: Some(jwt_secret.clone()),
                admin_token: Some(admin_token.clone()),
                ..Settings::default()
            };
            if let Some(pool) = options.db_pool {
                settings.db_max_connections = pool;
            }
            settings.config_file = Some(tiers_without_backups(dir.path())?);
            let app = tenantry_api::Application::build(settings)
                .await
                .context("Failed to start the server for the bench")?;
            let endpoint = Endpoint::new(app.local_addr()?)?;
            let (shutdown, stopped) = oneshot::channel::<()>();
            let server = tokio::spawn(app.run_until(async {
                let _ = stopped.await;
            }));
            anyhow::Ok((seeded, jwt_secret, admin_token, endpoint, shutdown, server))
        }
        .await;
        match started {
            Ok((seeded, jwt_secret, admin_token, endpoint, shutdown, server)) => Ok(Self {
                url: format!("http://{}", endpoint.addr),
                endpoint,
                admin_token,
                jwt_secret,
                seeded,
                shutdown,
                server,
                embedded,
                _dir: dir,
            }),
            Err(e) => {
                if let Some(pg) = embedded {
                    let _ = pg.stop().await;
                }
                Err(e)
            }
        }
    }

    /// Stops the server (draining it) and the embedded database.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(());
        let served = self
            .server
            .await
            .context("The bench's server task panicked")?;
        if let Some(pg) = self.embedded {
            pg.stop()
                .await
                .context("Failed to stop the bench's embedded PostgreSQL")?;
        }
        served
    }
}

async fn seed_if_empty(
    url: &str,
    options: &SelfHostOptions,
) -> anyhow::Result<Option<SeedSummary>> {
    let db = Db::connect(
        url,
        &DbOptions {
            max_connections: 2,
            ..DbOptions::default()
        },
    )?;
    tenantry_db::migrate::migrate(&db)
        .await
        .context("Failed to migrate the bench database")?;
    let client = seed::load::connect(url).await?;
    let has_tenants: bool = client
        .query_one("SELECT EXISTS (SELECT 1 FROM tenants)", &[])
        .await
        .context("Failed to look for tenants")?
        .get(0);
    if has_tenants {
        tracing::info!("the bench database already has tenants: using them, not seeding");
        return Ok(None);
    }
    let summary = seed::load::load(
        url,
        &options.seed,
        &LoadOptions {
            fk_checks: seed::FkChecks::Trusted,
            progress: options.progress,
        },
    )
    .await?;
    Ok(Some(summary))
}

/// Writes the built-in tiers with scheduled backups off, for the bench's own
/// server. Every seeded tenant is due for its first backup at once: a burst
/// of exports a long-running server never has, which took about 10 % of the
/// server's CPU beside a run against 100,000 tenants (BENCHMARKS.md,
/// "Session 10").
fn tiers_without_backups(dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    let mut tiers = tenantry_core::TierTable::default();
    for limits in tiers.tiers.values_mut() {
        limits.backup_every_hours = 0;
    }
    let path = dir.join("tiers.toml");
    let text = toml::to_string(&tiers).context("Failed to write the bench's tiers")?;
    std::fs::write(&path, text).context("Failed to write the bench's tiers file")?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_loopback_urls_are_accepted() {
        let e = endpoint_from_url("http://127.0.0.1:8080")
            .await
            .expect("v4");
        assert_eq!(e.addr, SocketAddr::from(([127, 0, 0, 1], 8080)));
        let e = endpoint_from_url("http://localhost:9000/x")
            .await
            .expect("localhost");
        assert!(e.addr.ip().is_loopback());
        assert!(endpoint_from_url("http://[::1]:8080").await.is_ok());
        assert!(endpoint_from_url("https://127.0.0.1:8080").await.is_err());
        assert!(endpoint_from_url("http://10.0.0.1:8080").await.is_err());
        assert!(endpoint_from_url("http://192.168.1.1").await.is_err());
        assert!(endpoint_from_url("http://8.8.8.8:80").await.is_err());
    }

    #[test]
    fn the_bench_servers_tiers_are_the_built_in_ones_without_backups() {
        let dir = tempfile::tempdir().expect("dir");
        let path = tiers_without_backups(dir.path()).expect("written");
        let text = std::fs::read_to_string(path).expect("read");
        let read = tenantry_core::TierTable::from_toml(&text).expect("parses");
        let mut built_in = tenantry_core::TierTable::default();
        assert!(built_in.tiers.values().any(|l| l.backup_every_hours > 0));
        for limits in built_in.tiers.values_mut() {
            limits.backup_every_hours = 0;
        }
        assert_eq!(read, built_in);
    }
}
