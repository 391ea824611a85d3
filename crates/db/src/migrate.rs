//! Schema migrations, embedded in the binary and applied in order.
//!
//! Each migration runs in its own transaction as the connecting user (the
//! schema owner), under a database-wide advisory lock so several servers
//! starting at once apply each migration exactly once.

use anyhow::Context as _;

use crate::Db;

/// `(version, name, sql)`, in the order they apply. Files are named
/// `V<n>__<what>.sql`.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "core", include_str!("../migrations/V1__core.sql")),
    (2, "quotas", include_str!("../migrations/V2__quotas.sql")),
    (
        3,
        "merge_patch",
        include_str!("../migrations/V3__merge_patch.sql"),
    ),
    (
        4,
        "partitions",
        include_str!("../migrations/V4__partitions.sql"),
    ),
    (
        10,
        "platform_settings",
        include_str!("../migrations/V10__platform_settings.sql"),
    ),
    (
        11,
        "tenant_traffic",
        include_str!("../migrations/V11__tenant_traffic.sql"),
    ),
    (
        20,
        "community",
        include_str!("../migrations/V20__community.sql"),
    ),
    (30, "jobs", include_str!("../migrations/V30__jobs.sql")),
    (
        31,
        "analytics",
        include_str!("../migrations/V31__analytics.sql"),
    ),
    (
        32,
        "notifications",
        include_str!("../migrations/V32__notifications.sql"),
    ),
    (
        33,
        "audit_log",
        include_str!("../migrations/V33__audit_log.sql"),
    ),
    (
        34,
        "counter_deltas",
        include_str!("../migrations/V34__counter_deltas.sql"),
    ),
    (
        35,
        "daily_events",
        include_str!("../migrations/V35__daily_events.sql"),
    ),
    (
        45,
        "jobs_churn",
        include_str!("../migrations/V45__jobs_churn.sql"),
    ),
    (
        50,
        "announcement_idempotency",
        include_str!("../migrations/V50__announcement_idempotency.sql"),
    ),
    (
        51,
        "user_communities_rls",
        include_str!("../migrations/V51__user_communities_rls.sql"),
    ),
];

/// A fingerprint of every migration's version, name and text: two databases
/// migrated by builds with the same fingerprint have the same schema (the
/// tests' template database is named after it).
pub fn fingerprint() -> u64 {
    MIGRATIONS
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |hash, (version, name, sql)| {
            let text = format!("{version}:{name}:{sql}\n");
            text.bytes().fold(hash, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
            })
        })
}

/// Months of partitions made ahead when migrating (the server's maintenance
/// worker keeps its own horizon, `TENANTRY_PARTITION_HORIZON_MONTHS`).
pub const PARTITION_HORIZON_MONTHS: u32 = 12;

/// An arbitrary constant: the advisory lock key held while migrating.
const MIGRATION_LOCK: i64 = 0x7465_6e61_6e74_7279; // "tenantry"

/// Applies every migration not yet applied, then makes the partitions of
/// every range-partitioned table (so a fresh database is ready to take rows).
/// Returns how many migrations were applied.
pub async fn migrate(db: &Db) -> anyhow::Result<usize> {
    let applied = apply_migrations(db).await?;
    crate::partitions::maintain(db, PARTITION_HORIZON_MONTHS)
        .await
        .context("Failed to make partitions after migrating")?;
    Ok(applied)
}

async fn apply_migrations(db: &Db) -> anyhow::Result<usize> {
    let mut conn = db
        .owner_connection()
        .await
        .context("Failed to get a connection to migrate")?;
    conn.batch_execute(
        "CREATE TABLE IF NOT EXISTS tenantry_migrations (
             version    integer PRIMARY KEY,
             name       text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await
    .or_else(ignore_concurrent_create)
    .context("Failed to create the migrations table")?;
    conn.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .context("Failed to take the migration lock")?;

    let result = apply_pending(&mut conn).await;

    conn.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await
        .context("Failed to release the migration lock")?;
    result
}

async fn apply_pending(conn: &mut deadpool_postgres::Object) -> anyhow::Result<usize> {
    let applied: Vec<i32> = conn
        .query("SELECT version FROM tenantry_migrations", &[])
        .await
        .context("Failed to read applied migrations")?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()
        .context("Failed to read applied migrations")?;
    let mut count = 0;
    for (version, name, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        let tx = conn
            .transaction()
            .await
            .context("Failed to begin a migration")?;
        tx.batch_execute(sql)
            .await
            .with_context(|| format!("Failed to apply migration V{version}__{name}"))?;
        tx.execute(
            "INSERT INTO tenantry_migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await
        .context("Failed to record a migration")?;
        tx.commit()
            .await
            .with_context(|| format!("Failed to commit migration V{version}__{name}"))?;
        tracing::info!(version, name, "applied migration");
        count += 1;
    }
    Ok(count)
}

/// `CREATE TABLE IF NOT EXISTS` can still fail with a unique violation on the
/// catalog when two sessions run it at the same moment; the table then exists.
fn ignore_concurrent_create(err: tokio_postgres::Error) -> Result<(), tokio_postgres::Error> {
    match err.code() {
        Some(code) if *code == tokio_postgres::error::SqlState::UNIQUE_VIOLATION => Ok(()),
        _ => Err(err),
    }
}
