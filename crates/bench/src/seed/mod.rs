//! `tenantry seed`: a realistic multi-tenant data set, written straight into
//! PostgreSQL with COPY.
//!
//! Benchmarks and query plans only mean something on data shaped like
//! production: a few huge tenants and a long tail of small ones (Zipf),
//! members spread over several communities, time-ordered ids, counters that
//! agree with their rows. [`plan`] decides the global rows, [`content`] each
//! tenant's posts, likes and comments, [`load`] writes them; all of it is
//! deterministic for a given `--seed` and `--anchor`.

pub mod binary;
pub mod content;
pub mod load;
pub mod plan;
pub mod text;

use std::path::PathBuf;

use anyhow::Context as _;
use chrono::{NaiveDate, Utc};
use tenantry_db::embedded::EmbeddedPostgres;
use tenantry_db::{Db, DbOptions};

pub use load::{FkChecks, LoadOptions, SeedSummary};
pub use plan::SeedConfig;

/// `tenantry seed` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct SeedArgs {
    /// PostgreSQL URL; unset seeds the embedded cluster in the data dir.
    /// Seeding needs a superuser or a BYPASSRLS role.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Where the embedded cluster is kept (when no DATABASE_URL).
    #[arg(long, env = "TENANTRY_DATA_DIR", default_value = ".tenantry")]
    pub data_dir: PathBuf,
    /// Number of tenants.
    #[arg(long, default_value_t = 1_000)]
    pub tenants: usize,
    /// Number of users (default: 10 per tenant).
    #[arg(long)]
    pub users: Option<usize>,
    /// Mean memberships per user (at least 1); each tenant also gets its owner.
    #[arg(long, default_value_t = 3.0)]
    pub memberships_per_user: f64,
    /// Total posts, spread over tenants by a Zipf distribution.
    #[arg(long, default_value_t = 100_000)]
    pub posts: u64,
    /// Zipf exponent of tenant sizes (0: all equal; 1: the top 1% of 10,000
    /// tenants hold about half the posts).
    #[arg(long, default_value_t = 1.0)]
    pub zipf: f64,
    /// Mean likes per post (geometric; at most the tenant's member count).
    #[arg(long, default_value_t = 2.0)]
    pub likes_per_post: f64,
    /// Mean comments per post (geometric).
    #[arg(long, default_value_t = 0.5)]
    pub comments_per_post: f64,
    /// Posts are spread over the last this many days.
    #[arg(long, default_value_t = 90)]
    pub days: u32,
    /// Make one user (the lowest user id, so the first member every
    /// members list shows) a member of this many of the largest tenants:
    /// the reader of the cross-community feed benchmark.
    #[arg(long, default_value_t = 0)]
    pub hub_communities: usize,
    /// The random seed: the same seed and anchor give the same data.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// The data set's "today" (YYYY-MM-DD, UTC midnight); default: today.
    #[arg(long)]
    pub anchor: Option<NaiveDate>,
    /// Keep foreign-key checks while loading (slower: content tables then
    /// load one after the other).
    #[arg(long)]
    pub checked: bool,
    /// After loading, re-check every reference and counter with SQL.
    #[arg(long)]
    pub verify: bool,
    /// No progress bars.
    #[arg(long)]
    pub no_progress: bool,
}

impl SeedArgs {
    /// The generator configuration these flags describe.
    pub fn config(&self) -> anyhow::Result<SeedConfig> {
        let anchor = self.anchor.unwrap_or_else(|| Utc::now().date_naive());
        let anchor_ms = anchor
            .and_hms_opt(0, 0, 0)
            .context("midnight exists")?
            .and_utc()
            .timestamp_millis();
        let config = SeedConfig {
            tenants: self.tenants,
            users: self.users.unwrap_or(self.tenants.saturating_mul(10)),
            memberships_per_user: self.memberships_per_user,
            posts: self.posts,
            zipf_exponent: self.zipf,
            likes_per_post: self.likes_per_post,
            comments_per_post: self.comments_per_post,
            days: self.days,
            seed: self.seed,
            anchor_ms,
            hub_communities: self.hub_communities,
        };
        config.validate()?;
        Ok(config)
    }
}

/// Migrates the database if needed, then seeds it. Returns the summary.
pub async fn seed_database(
    url: &str,
    config: &SeedConfig,
    options: &LoadOptions,
) -> anyhow::Result<SeedSummary> {
    let db = Db::connect(
        url,
        &DbOptions {
            max_connections: 2,
            ..DbOptions::default()
        },
    )?;
    tenantry_db::migrate::migrate(&db)
        .await
        .context("Failed to migrate the database before seeding")?;
    load::load(url, config, options).await
}

/// `tenantry seed`: seeds, prints the summary, optionally verifies.
pub async fn run(args: SeedArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let (url, embedded) = match &args.database_url {
        Some(url) => (url.clone(), None),
        None => {
            let pg = EmbeddedPostgres::start(&args.data_dir)
                .await
                .context("Failed to start the embedded PostgreSQL")?;
            (pg.connection_string(), Some(pg))
        }
    };
    let options = LoadOptions {
        fk_checks: if args.checked {
            FkChecks::Checked
        } else {
            FkChecks::Trusted
        },
        progress: !args.no_progress,
    };
    let result = async {
        let summary = seed_database(&url, &config, &options).await?;
        print_summary(&config, &summary);
        if args.verify {
            let client = load::connect(&url).await?;
            let failed = load::verify(&client).await?;
            if failed.is_empty() {
                println!("verified: every reference resolves and every counter matches");
            } else {
                anyhow::bail!("the seeded data failed checks:\n  {}", failed.join("\n  "));
            }
        }
        Ok(())
    }
    .await;
    if let Some(pg) = embedded {
        pg.stop()
            .await
            .context("Failed to stop the embedded PostgreSQL")?;
    }
    result
}

/// The human summary: rows per table, time, rate, shape of the data.
pub fn print_summary(config: &SeedConfig, summary: &SeedSummary) {
    let anchor = chrono::DateTime::from_timestamp_millis(config.anchor_ms)
        .map(|d| d.date_naive().to_string())
        .unwrap_or_default();
    println!(
        "seeded {} rows in {:.1} s ({:.0} rows/s; seed {}, anchor {anchor}, foreign keys {})",
        summary.total_rows,
        summary.seconds,
        summary.rows_per_second(),
        config.seed,
        match summary.fk_checks {
            FkChecks::Trusted => "valid by construction",
            FkChecks::Checked => "checked per row",
        }
    );
    println!(
        "  {:<12} {:>12} {:>9} {:>12}",
        "table", "rows", "seconds", "rows/s"
    );
    for t in &summary.tables {
        println!(
            "  {:<12} {:>12} {:>9.1} {:>12.0}",
            t.table,
            t.rows,
            t.seconds,
            t.rows as f64 / t.seconds.max(1e-9)
        );
    }
    println!(
        "  planning {:.1} s, ANALYZE {:.1} s",
        summary.plan_seconds, summary.analyze_seconds
    );
    println!(
        "  the largest 1% of tenants hold {:.1}% of posts; largest: {}",
        summary.top_percent_share * 100.0,
        summary
            .largest
            .iter()
            .map(|(slug, posts, members)| format!("{slug} ({posts} posts, {members} members)"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for table in load::NOT_YET_SEEDED {
        let state = if summary.existing_unseeded.iter().any(|t| t == table) {
            "the table exists but has no generator yet (see seed/content.rs)"
        } else {
            "no such table yet"
        };
        println!("  not seeded: {table} ({state})");
    }
}
