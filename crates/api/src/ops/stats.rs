//! `GET /v1/admin/db/stats`: the database's size, its biggest tables and
//! indexes with their use, the statements that cost the most (from
//! `pg_stat_statements` when it is installed) and the server's pool.
//!
//! Four statements pipelined in one read-only transaction (one round trip),
//! each list bounded, so a dashboard can poll it.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::state::AppState;
use tenantry_db::DbError;

/// The most tables and indexes listed (the biggest first).
pub const MAX_TABLES: i64 = 100;
pub const MAX_INDEXES: i64 = 200;
/// The most statements listed, the costliest (total time) first.
pub const MAX_SLOW_QUERIES: i64 = 20;
/// A listed statement's text is cut to this many characters.
const QUERY_TEXT_CHARS: i32 = 1_000;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DatabaseStats {
    pub size_bytes: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TableStats {
    /// Schema-qualified where the search path needs it.
    pub name: String,
    /// Table, its indexes and TOAST.
    pub size_bytes: i64,
    pub rows_estimate: i64,
    pub dead_tuples: i64,
    /// The latest manual or automatic vacuum (analyze).
    pub last_vacuum: Option<DateTime<Utc>>,
    pub last_analyze: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IndexStats {
    pub name: String,
    pub table: String,
    pub size_bytes: i64,
    /// Index scans since the statistics were last reset.
    pub scans: i64,
    /// Never scanned, and backs no constraint (unique, primary key,
    /// exclusion): a candidate for dropping.
    pub unused: bool,
    /// Left invalid by a failed `CREATE INDEX CONCURRENTLY` (or reindex):
    /// maintained on every write, used by no query.
    pub invalid: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SlowQuery {
    pub query: String,
    pub calls: i64,
    pub mean_ms: f64,
    pub total_ms: f64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PoolStats {
    /// Connections open.
    pub size: usize,
    pub in_use: usize,
    /// Callers waiting for a connection.
    pub waiting: usize,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StatementStats {
    /// `pg_stat_statements` is created in this database and loaded.
    pub installed: bool,
    pub detail: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Stats {
    pub database: DatabaseStats,
    pub tables: Vec<TableStats>,
    pub indexes: Vec<IndexStats>,
    /// Empty unless `pg_stat_statements` is installed (see
    /// `pg_stat_statements`).
    pub slow_queries: Vec<SlowQuery>,
    pub pool: PoolStats,
    pub pg_stat_statements: StatementStats,
}

/// A table or index dropped while the statement runs (a partition detached
/// by the upkeep, a test's table) is still in the statistics views' snapshot,
/// but the size functions find it gone and answer NULL: such rows are left
/// out (the `LATERAL` size and its `IS NOT NULL`).
const TABLES_SQL: &str = "
SELECT s.relid::regclass::text AS name, z.size AS size_bytes,
       greatest(c.reltuples, s.n_live_tup)::int8 AS rows_estimate, s.n_dead_tup AS dead_tuples,
       greatest(s.last_vacuum, s.last_autovacuum) AS last_vacuum,
       greatest(s.last_analyze, s.last_autoanalyze) AS last_analyze
FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
CROSS JOIN LATERAL (SELECT pg_total_relation_size(s.relid) AS size) z
WHERE z.size IS NOT NULL
ORDER BY 2 DESC, 1
LIMIT $1";

const INDEXES_SQL: &str = "
SELECT s.indexrelid::regclass::text AS name, s.relid::regclass::text AS tbl,
       z.size AS size_bytes, s.idx_scan AS scans,
       s.idx_scan = 0 AND NOT i.indisunique AND NOT i.indisprimary
           AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = s.indexrelid)
           AS unused,
       NOT i.indisvalid AS invalid
FROM pg_stat_user_indexes s JOIN pg_index i ON i.indexrelid = s.indexrelid
CROSS JOIN LATERAL (SELECT pg_relation_size(s.indexrelid) AS size) z
WHERE z.size IS NOT NULL
ORDER BY NOT i.indisvalid DESC, 3 DESC, 1
LIMIT $1";

/// Whether `pg_stat_statements` can be read: the view exists here and the
/// library is loaded (reading the view otherwise is an error).
const HEAD_SQL: &str = "
SELECT pg_database_size(current_database()) AS size_bytes,
       to_regclass('pg_stat_statements') IS NOT NULL AS created,
       current_setting('shared_preload_libraries') ~ 'pg_stat_statements' AS loaded";

const SLOW_SQL: &str = "
SELECT left(query, $2) AS query, calls, mean_exec_time AS mean_ms, total_exec_time AS total_ms
FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
ORDER BY total_exec_time DESC
LIMIT $1";

/// Reads the statistics. The database away is an error (503 at the edge).
pub async fn read(state: &AppState) -> Result<Stats, DbError> {
    let (head, tables, indexes, slow) = super::platform_read(&state.db, |conn| async move {
        let result = async {
            let (head, tables, indexes) = futures::try_join!(
                conn.query_one(HEAD_SQL, &[]),
                conn.query(TABLES_SQL, &[&MAX_TABLES]),
                conn.query(INDEXES_SQL, &[&MAX_INDEXES]),
            )?;
            let readable = head.get::<_, bool>("created") && head.get::<_, bool>("loaded");
            let slow = if readable {
                conn.query(SLOW_SQL, &[&MAX_SLOW_QUERIES, &QUERY_TEXT_CHARS])
                    .await?
            } else {
                Vec::new()
            };
            Ok((head, tables, indexes, slow))
        }
        .await;
        (conn, result)
    })
    .await?;
    let (created, loaded) = (
        head.get::<_, bool>("created"),
        head.get::<_, bool>("loaded"),
    );
    let detail = match (created, loaded) {
        (true, true) => "slow_queries lists the statements that took the most time in all".into(),
        (false, true) => "pg_stat_statements is loaded but not created in this database: \
             CREATE EXTENSION pg_stat_statements"
            .into(),
        (_, false) => "pg_stat_statements is not installed: add it to shared_preload_libraries, \
                       restart PostgreSQL and CREATE EXTENSION pg_stat_statements; slow_queries \
                       stays empty until then"
            .into(),
    };
    let (size, idle, waiting) = state.db.pool_status();
    Ok(Stats {
        database: DatabaseStats {
            size_bytes: head.get("size_bytes"),
        },
        tables: tables
            .iter()
            .map(|r| TableStats {
                name: r.get("name"),
                size_bytes: r.get("size_bytes"),
                rows_estimate: r.get("rows_estimate"),
                dead_tuples: r.get("dead_tuples"),
                last_vacuum: r.get("last_vacuum"),
                last_analyze: r.get("last_analyze"),
            })
            .collect(),
        indexes: indexes
            .iter()
            .map(|r| IndexStats {
                name: r.get("name"),
                table: r.get("tbl"),
                size_bytes: r.get("size_bytes"),
                scans: r.get("scans"),
                unused: r.get("unused"),
                invalid: r.get("invalid"),
            })
            .collect(),
        slow_queries: slow
            .iter()
            .map(|r| SlowQuery {
                query: r.get("query"),
                calls: r.get("calls"),
                mean_ms: r.get("mean_ms"),
                total_ms: r.get("total_ms"),
            })
            .collect(),
        pool: PoolStats {
            size,
            in_use: size.saturating_sub(idle),
            waiting,
        },
        pg_stat_statements: StatementStats {
            installed: created && loaded,
            detail,
        },
    })
}
