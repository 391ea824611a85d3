//! Database maintenance as jobs: `POST /v1/admin/db/vacuum|analyze|reindex|
//! optimize` enqueue a platform job ([`tenantry_jobs::platform`]) that runs
//! in the platform lane, one at a time in the whole cluster, outside the
//! tenants' fair share.
//!
//! Each job works on a connection of its own, taken out of the pool for the
//! job's life (a VACUUM of a big table must not hold one of the pool's
//! platform connections for an hour), with:
//!
//! - `lock_timeout` ([`LOCK_TIMEOUT`]): a table some transaction holds a
//!   conflicting lock on is skipped (and said so in the result) instead of
//!   queueing every later query on it behind the maintenance's own lock
//!   request;
//! - `vacuum_cost_delay` ([`VACUUM_COST_DELAY_MS`]): VACUUM paces its I/O as
//!   autovacuum does, rather than at full speed as a manual VACUUM would;
//! - `REINDEX ... CONCURRENTLY`: writes go on while an index is rebuilt.
//!
//! Every second the job records where it is, from `pg_stat_progress_vacuum`,
//! `_analyze` or `_create_index` for its backend, as the job's `progress`
//! (which also extends its lease). Cancelling the job
//! (`POST /v1/admin/jobs/{id}/cancel`) marks it dead and cancels its
//! backend's statement with `pg_cancel_backend`; the job's own checkpoint
//! also finds it cancelled and cancels its statement, whichever comes first.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};
use tenantry_db::{Db, DbError};
use tenantry_jobs::platform::{self, PLATFORM};
use tenantry_jobs::{Done, Handler, Job, JobContext, JobError, NewJob, Registry};
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use crate::problem::{ApiError, FieldError};

/// How long a maintenance statement waits for a table's lock before the
/// table is skipped.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(5);
/// VACUUM's cost-based delay, as autovacuum's default.
pub const VACUUM_COST_DELAY_MS: u32 = 2;
/// How often a running job records its progress (and extends its lease).
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// The `application_name` of a maintenance connection: what a cancel
/// checks before it signals a backend (a recorded pid may have been reused).
pub const APPLICATION_NAME: &str = "tenantry maintenance";
/// The queue label of maintenance jobs (`GET /v1/admin/jobs` groups by it).
pub const QUEUE: &str = "maintenance";
/// Tables one request may name.
pub const MAX_TABLES: usize = 100;

/// A maintenance operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `VACUUM`: dead tuples become free space; the visibility map is set.
    Vacuum,
    /// `ANALYZE`: fresh planner statistics.
    Analyze,
    /// `REINDEX TABLE CONCURRENTLY`: every index of the table rebuilt.
    Reindex,
    /// `VACUUM (ANALYZE)`, then `REINDEX INDEX CONCURRENTLY` of the table's
    /// invalid indexes.
    Optimize,
}

impl Operation {
    pub const ALL: [Operation; 4] = [
        Operation::Vacuum,
        Operation::Analyze,
        Operation::Reindex,
        Operation::Optimize,
    ];

    /// The job kind.
    pub fn kind(self) -> &'static str {
        match self {
            Operation::Vacuum => "db.vacuum",
            Operation::Analyze => "db.analyze",
            Operation::Reindex => "db.reindex",
            Operation::Optimize => "db.optimize",
        }
    }
}

/// The body of a maintenance request.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceRequest {
    /// Tables to work on (as `GET /v1/admin/db/stats` names them); absent:
    /// every table of the schema.
    #[schema(min_items = 1)]
    pub tables: Option<Vec<String>>,
}

/// Every maintenance kind with its handler, for the platform lane.
pub fn registry() -> Registry {
    Operation::ALL.into_iter().fold(Registry::new(), |r, op| {
        r.register(op.kind(), Maintenance(op))
    })
}

/// Resolves the named tables against the catalog (422 naming each unknown
/// one) and enqueues the job. Returns its id.
pub async fn enqueue(
    db: &Db,
    op: Operation,
    request: MaintenanceRequest,
) -> Result<Uuid, ApiError> {
    let tables = match request.tables {
        None => Value::Null,
        Some(names) => Value::from(resolve(db, &names).await?),
    };
    let job = NewJob::new(op.kind(), json!({ "tables": tables }))
        .queue(QUEUE)
        .max_attempts(3);
    Ok(platform::enqueue_platform(db, &job).await?)
}

/// The tables of the schema that `names` name (ordinary, partitioned or
/// materialized views), as `regclass` prints them.
async fn resolve(db: &Db, names: &[String]) -> Result<Vec<String>, ApiError> {
    if names.is_empty() {
        return Err(ApiError::validation(
            "tables",
            "name at least one table, or leave tables out for every table",
        ));
    }
    if names.len() > MAX_TABLES {
        return Err(ApiError::validation(
            "tables",
            format!("at most {MAX_TABLES} tables"),
        ));
    }
    let mut errors = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let plain = !name.is_empty()
            && name.len() <= 128
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.');
        if !plain {
            errors.push(FieldError::new(
                format!("tables[{i}]"),
                "not a table name (letters, digits, _ and an optional schema.)",
            ));
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let rows = super::platform_read(db, |conn| async move {
        let names = names.to_vec();
        let result = conn
            .query(
                "SELECT t.i, c.oid::regclass::text AS name
                 FROM unnest($1::text[]) WITH ORDINALITY AS t(name, i)
                 LEFT JOIN pg_class c ON c.oid = to_regclass(t.name)
                  AND c.relkind IN ('r', 'p', 'm')
                  AND c.relnamespace = current_schema()::regnamespace
                 ORDER BY t.i",
                &[&names],
            )
            .await;
        (conn, result)
    })
    .await?;
    let mut resolved = Vec::with_capacity(rows.len());
    for row in &rows {
        let i: i64 = row.get("i");
        match row.get::<_, Option<String>>("name") {
            Some(name) => {
                if !resolved.contains(&name) {
                    resolved.push(name);
                }
            }
            None => errors.push(FieldError::new(
                format!("tables[{}]", i - 1),
                format!("no table {:?} in the schema", names[(i - 1) as usize]),
            )),
        }
    }
    if errors.is_empty() {
        Ok(resolved)
    } else {
        Err(ApiError::Validation(errors))
    }
}

/// Every table a maintenance of "all tables" works on: the schema's tables
/// and partitions (partitioned parents hold no rows of their own).
const ALL_TABLES_SQL: &str = "
SELECT c.oid::regclass::text FROM pg_class c
WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'm')
ORDER BY pg_total_relation_size(c.oid) DESC, 1";

/// A table's invalid indexes (for optimize), still there now.
const INVALID_INDEXES_SQL: &str = "
SELECT i.indexrelid::regclass::text FROM pg_index i
WHERE i.indrelid = to_regclass($1) AND NOT i.indisvalid
ORDER BY 1";

/// Where the maintenance backend is, from the progress view of the command
/// it runs.
const PROGRESS_SQL: &str = "
SELECT coalesce(
    (SELECT jsonb_build_object('phase', phase, 'blocks_total', heap_blks_total,
                               'blocks_done', heap_blks_scanned)
       FROM pg_stat_progress_vacuum WHERE pid = $1),
    (SELECT jsonb_build_object('phase', phase, 'blocks_total', sample_blks_total,
                               'blocks_done', sample_blks_scanned)
       FROM pg_stat_progress_analyze WHERE pid = $1),
    (SELECT jsonb_build_object('phase', phase, 'blocks_total', blocks_total,
                               'blocks_done', blocks_done, 'tuples_total', tuples_total,
                               'tuples_done', tuples_done)
       FROM pg_stat_progress_create_index WHERE pid = $1),
    (SELECT jsonb_build_object('phase', coalesce(wait_event_type || ': ' || wait_event, state))
       FROM pg_stat_activity WHERE pid = $1))";

struct Maintenance(Operation);

#[async_trait]
impl Handler for Maintenance {
    async fn run(&self, job: &Job, ctx: &JobContext) -> Result<Done, JobError> {
        debug_assert_eq!(job.tenant_id, PLATFORM);
        // A connection of the job's own, out of the pool: dropped (closed)
        // when the job ends, so its session settings go with it.
        let conn = deadpool_postgres::Object::take(
            ctx.db
                .owner_connection()
                .await
                .map_err(|e| JobError::Failed(e.into()))?,
        );
        conn.batch_execute(&format!(
            "SET application_name = '{APPLICATION_NAME}'; SET statement_timeout = 0; \
             SET lock_timeout = {}; SET vacuum_cost_delay = {VACUUM_COST_DELAY_MS}",
            LOCK_TIMEOUT.as_millis()
        ))
        .await
        .map_err(|e| JobError::Failed(e.into()))?;
        let pid: i32 = conn
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .map_err(|e| JobError::Failed(e.into()))?
            .get(0);
        let tables: Vec<String> = match job.payload.get("tables").and_then(Value::as_array) {
            Some(list) => list
                .iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect(),
            None => conn
                .query(ALL_TABLES_SQL, &[])
                .await
                .map_err(|e| JobError::Failed(e.into()))?
                .iter()
                .map(|r| r.get(0))
                .collect(),
        };
        let mut done: Vec<Value> = Vec::with_capacity(tables.len());
        for (n, table) in tables.iter().enumerate() {
            // Still there (and named the same)? A table dropped since the
            // request is skipped, never interpolated blind.
            let exists = conn
                .query_one(
                    "SELECT to_regclass($1)::text IS NOT DISTINCT FROM $1",
                    &[table],
                )
                .await
                .map_err(|e| JobError::Failed(e.into()))?
                .get::<_, bool>(0);
            if !exists {
                done.push(json!({"table": table, "status": "skipped",
                                 "detail": "the table no longer exists"}));
                continue;
            }
            let commands = self.commands(&conn, table).await?;
            for command in commands {
                let progress = json!({
                    "backend_pid": pid, "table": table, "table_number": n + 1,
                    "tables_total": tables.len(), "command": command,
                });
                let started = Instant::now();
                let outcome = run_watched(&conn, ctx, job, pid, &command, progress).await?;
                let took_ms = started.elapsed().as_millis() as u64;
                match outcome {
                    Ok(()) => done.push(json!({"table": table, "command": command,
                                               "status": "done", "took_ms": took_ms})),
                    Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
                        done.push(json!({"table": table, "command": command,
                            "status": "skipped", "took_ms": took_ms,
                            "detail": format!(
                                "another transaction held a conflicting lock for longer than \
                                 the lock timeout ({} s)", LOCK_TIMEOUT.as_secs())}));
                    }
                    Err(e) => {
                        return Err(JobError::Failed(
                            anyhow::Error::new(e).context(format!("{command} failed")),
                        ));
                    }
                }
            }
        }
        let skipped = done.iter().filter(|d| d["status"] == "skipped").count();
        Ok(Done::Result(json!({
            "operation": self.0.kind(),
            "tables": done,
            "skipped": skipped,
        })))
    }
}

impl Maintenance {
    /// The statements for one table.
    async fn commands(
        &self,
        conn: &tokio_postgres::Client,
        table: &str,
    ) -> Result<Vec<String>, JobError> {
        Ok(match self.0 {
            Operation::Vacuum => vec![format!("VACUUM {table}")],
            Operation::Analyze => vec![format!("ANALYZE {table}")],
            Operation::Reindex => vec![format!("REINDEX TABLE CONCURRENTLY {table}")],
            Operation::Optimize => {
                let mut commands = vec![format!("VACUUM (ANALYZE) {table}")];
                let invalid = conn
                    .query(INVALID_INDEXES_SQL, &[&table])
                    .await
                    .map_err(|e| JobError::Failed(e.into()))?;
                commands.extend(
                    invalid
                        .iter()
                        .map(|r| format!("REINDEX INDEX CONCURRENTLY {}", r.get::<_, String>(0))),
                );
                commands
            }
        })
    }
}

/// Runs `command` on `conn` while recording its progress every
/// [`PROGRESS_EVERY`]. The outer error is the job's (cancelled, lease lost);
/// the inner one the command's own.
async fn run_watched(
    conn: &tokio_postgres::Client,
    ctx: &JobContext,
    job: &Job,
    pid: i32,
    command: &str,
    base: Value,
) -> Result<Result<(), tokio_postgres::Error>, JobError> {
    // Recorded before the command starts: the job shows what it is doing
    // however short the command, and a job cancelled between two commands
    // starts no other.
    if !platform::checkpoint(&ctx.db, job, &base, ctx.lease).await? {
        return Err(JobError::LeaseLost);
    }
    let run = conn.batch_execute(command);
    tokio::pin!(run);
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
    let mut cancelled = false;
    loop {
        tokio::select! {
            outcome = &mut run => {
                if cancelled {
                    return Err(JobError::LeaseLost);
                }
                return Ok(outcome);
            }
            _ = tick.tick(), if !cancelled => {
                let mut progress = base.clone();
                if let Ok(Some(now)) = read_progress(&ctx.db, pid).await
                    && let (Some(p), Some(now)) = (progress.as_object_mut(), now.as_object())
                {
                    p.extend(now.clone());
                }
                match platform::checkpoint(&ctx.db, job, &progress, ctx.lease).await {
                    Ok(true) => {}
                    Ok(false) => {
                        // Cancelled (or the lease is someone else's now):
                        // stop the statement, then wait for it to end.
                        cancelled = true;
                        let _ = conn.cancel_token().cancel_query(tokio_postgres::NoTls).await;
                    }
                    Err(e) => tracing::debug!(error = %e, "could not record maintenance progress"),
                }
            }
        }
    }
}

async fn read_progress(db: &Db, pid: i32) -> Result<Option<Value>, DbError> {
    let conn = db.owner_connection().await?;
    let row = conn.query_one(PROGRESS_SQL, &[&pid]).await?;
    Ok(row.get::<_, Option<Value>>(0))
}

/// Cancels the statement of a maintenance backend, if `pid` still is one.
pub async fn cancel_backend(db: &Db, pid: i32) -> Result<bool, DbError> {
    let conn = db.owner_connection().await?;
    let row = conn
        .query_opt(
            "SELECT pg_cancel_backend(pid) FROM pg_stat_activity
             WHERE pid = $1 AND application_name = $2",
            &[&pid, &APPLICATION_NAME],
        )
        .await?;
    Ok(row.is_some_and(|r| r.get::<_, bool>(0)))
}
