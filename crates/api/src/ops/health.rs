//! `GET /v1/admin/db/health`: is the database well, in checks an operator
//! (or a dashboard polling every 10 s) reads at a glance.
//!
//! One read-only transaction of two statements: the first reads
//! `pg_stat_activity`, `pg_locks`, `pg_database`, `pg_stat_database`, the
//! default partitions and `pg_stat_replication` in one row; the second, as
//! the queue worker role (the queue's rows are behind row-level security),
//! the queue's dead letters and stuck leases through their partial indexes.
//! Nothing scales with the data but the small catalog lists, so polling is
//! cheap whatever the size of the tenants.

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};

use crate::state::AppState;

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Ok,
    /// Worth a look: it degrades the database but does not stop it.
    Warn,
    /// Broken, or about to be.
    Fail,
}

/// One check: `{name, status, value, detail}`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Check {
    pub name: &'static str,
    pub status: CheckStatus,
    /// What was measured (a number, or an object of numbers).
    #[schema(value_type = Object)]
    pub value: Value,
    pub detail: String,
}

/// The database's health as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    Ok,
    /// Answering, with at least one check warning or failing.
    Degraded,
    /// Not answering.
    Down,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Health {
    pub status: HealthStatus,
    pub checks: Vec<Check>,
}

/// Where the checks draw their lines.
#[derive(Debug, Clone)]
pub struct Thresholds {
    /// A transaction open longer than this holds back vacuum everywhere.
    pub long_transaction: Duration,
    /// A lock wait longer than this is a blocked query.
    pub blocked_for: Duration,
    /// `age(datfrozenxid)` past which the check warns, and fails (the hard
    /// limit is 2^31; autovacuum's freeze default is 200 million).
    pub xid_warn: i64,
    pub xid_fail: i64,
    /// Buffer cache hit ratio below which the check warns (after
    /// `cache_min_blocks` block reads, so a fresh database does not warn).
    pub cache_hit_warn: f64,
    pub cache_min_blocks: i64,
    /// Share of `max_connections` in use past which the check warns.
    pub connections_warn: f64,
    /// A running job whose lease ran out this long ago is stuck.
    pub stuck_job: Duration,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            long_transaction: Duration::from_secs(300),
            blocked_for: Duration::from_secs(5),
            xid_warn: 500_000_000,
            xid_fail: 1_200_000_000,
            cache_hit_warn: 0.95,
            cache_min_blocks: 10_000,
            connections_warn: 0.8,
            stuck_job: Duration::from_secs(60),
        }
    }
}

/// Everything but the queue, in one row.
const HEALTH_SQL: &str = "
SELECT
    (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int8
        AS connections,
    current_setting('max_connections')::int8 AS max_connections,
    (SELECT count(*) FROM pg_stat_activity
      WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
        AND xact_start < now() - $1::float8 * interval '1 second')::int8 AS long_transactions,
    (SELECT extract(epoch FROM max(now() - xact_start)) FROM pg_stat_activity
      WHERE backend_type = 'client backend' AND pid <> pg_backend_pid())::float8
        AS oldest_transaction_secs,
    (SELECT count(DISTINCT pid) FROM pg_locks
      WHERE NOT granted AND waitstart < now() - $2::float8 * interval '1 second')::int8
        AS blocked,
    (SELECT count(DISTINCT pid) FROM pg_locks WHERE NOT granted)::int8 AS waiting,
    (SELECT max(age(datfrozenxid)) FROM pg_database)::int8 AS xid_age,
    (SELECT blks_hit::float8 / nullif(blks_hit + blks_read, 0)
       FROM pg_stat_database WHERE datname = current_database()) AS cache_hit,
    (SELECT blks_hit + blks_read FROM pg_stat_database
      WHERE datname = current_database())::int8 AS blocks,
    (SELECT coalesce(jsonb_object_agg(c.oid::regclass::text, s.n_live_tup), '{}')
       FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid
      WHERE c.relispartition AND pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT'
        AND s.n_live_tup > 0) AS default_rows,
    (SELECT count(*) FROM pg_partitioned_table)::int8 AS partitioned_tables,
    (SELECT coalesce(jsonb_agg(jsonb_build_object(
                'name', coalesce(application_name, client_addr::text), 'state', state,
                'replay_lag_secs', extract(epoch FROM replay_lag))), '[]')
       FROM pg_stat_replication) AS replicas";

/// The queue, as the worker role: dead letters (`jobs_dead`) and running
/// jobs whose lease ran out long ago (`jobs_leases`), each through its
/// partial index; the depth is the statistics' estimate, not a count.
const QUEUE_SQL: &str = "
SELECT (SELECT count(*) FROM jobs WHERE state = 'dead')::int8 AS dead,
       (SELECT count(*) FROM jobs
         WHERE state = 'running' AND run_at < now() - $1::float8 * interval '1 second')::int8
           AS stuck,
       (SELECT n_live_tup FROM pg_stat_user_tables WHERE relid = 'jobs'::regclass)::int8
           AS depth_estimate";

/// The longest a health check waits for the database before answering
/// `down`.
const CHECK_DEADLINE: Duration = Duration::from_secs(3);

/// Runs every check. Never an error: a database that does not answer is
/// the `connection` check failing and the status `down`.
pub async fn check(state: &AppState, limits: &Thresholds) -> Health {
    let started = Instant::now();
    let long = limits.long_transaction.as_secs_f64();
    let blocked = limits.blocked_for.as_secs_f64();
    let stuck = limits.stuck_job.as_secs_f64();
    let read = super::platform_read(&state.db, |conn| async move {
        let result = async {
            let health = conn.query_one(HEALTH_SQL, &[&long, &blocked]).await?;
            conn.batch_execute("SET LOCAL ROLE tenantry_worker").await?;
            let queue = conn.query_one(QUEUE_SQL, &[&stuck]).await?;
            Ok((health, queue))
        }
        .await;
        (conn, result)
    });
    let rows = tokio::time::timeout(CHECK_DEADLINE, read).await;
    let mut checks = Vec::with_capacity(10);
    let (health, queue) = match rows {
        Ok(Ok(rows)) => rows,
        failed => {
            let detail = match failed {
                Ok(Err(e)) => format!("the database did not answer: {e}"),
                _ => format!(
                    "the database did not answer within {} s",
                    CHECK_DEADLINE.as_secs()
                ),
            };
            checks.push(Check {
                name: "connection",
                status: CheckStatus::Fail,
                value: Value::Null,
                detail,
            });
            checks.push(pool_check(state));
            return Health {
                status: HealthStatus::Down,
                checks,
            };
        }
    };
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let connections: i64 = health.get("connections");
    let max_connections: i64 = health.get("max_connections");
    let share = connections as f64 / max_connections.max(1) as f64;
    checks.push(Check {
        name: "connection",
        status: if share > limits.connections_warn {
            CheckStatus::Warn
        } else {
            CheckStatus::Ok
        },
        value: json!({"latency_ms": round(latency_ms), "connections": connections,
                      "max_connections": max_connections}),
        detail: format!(
            "answered in {latency_ms:.1} ms; {connections} of {max_connections} connections in use"
        ),
    });
    checks.push(pool_check(state));

    let long_tx: i64 = health.get("long_transactions");
    let oldest: Option<f64> = health.get("oldest_transaction_secs");
    checks.push(Check {
        name: "long_transactions",
        status: warn_if(long_tx > 0),
        value: json!(long_tx),
        detail: format!(
            "{long_tx} transaction(s) open longer than {} s (oldest: {:.0} s); they hold back \
             vacuum in every table",
            limits.long_transaction.as_secs(),
            oldest.unwrap_or(0.0)
        ),
    });

    let blocked_n: i64 = health.get("blocked");
    let waiting: i64 = health.get("waiting");
    checks.push(Check {
        name: "blocked_queries",
        status: warn_if(blocked_n > 0),
        value: json!(blocked_n),
        detail: format!(
            "{blocked_n} session(s) waiting for a lock longer than {} s ({waiting} waiting in all)",
            limits.blocked_for.as_secs()
        ),
    });

    let xid_age: i64 = health.get("xid_age");
    checks.push(Check {
        name: "xid_wraparound",
        status: if xid_age >= limits.xid_fail {
            CheckStatus::Fail
        } else {
            warn_if(xid_age >= limits.xid_warn)
        },
        value: json!(xid_age),
        detail: format!(
            "oldest unfrozen transaction id is {xid_age} transactions old ({:.2} % of the 2^31 \
             limit)",
            xid_age as f64 / 2_147_483_648.0 * 100.0
        ),
    });

    let hit: Option<f64> = health.get("cache_hit");
    let blocks: i64 = health.get::<_, Option<i64>>("blocks").unwrap_or(0);
    checks.push(Check {
        name: "cache_hit_ratio",
        status: warn_if(
            blocks >= limits.cache_min_blocks && hit.is_some_and(|h| h < limits.cache_hit_warn),
        ),
        value: json!(hit.map(|h| round(h * 10_000.0) / 10_000.0)),
        detail: match hit {
            Some(h) => format!(
                "{:.2} % of {blocks} block reads were served from shared buffers",
                h * 100.0
            ),
            None => "no block reads yet".to_owned(),
        },
    });

    let default_rows: Value = health.get("default_rows");
    let partitioned: i64 = health.get("partitioned_tables");
    let stray = default_rows.as_object().is_some_and(|m| !m.is_empty());
    checks.push(Check {
        name: "partitions",
        status: warn_if(stray),
        value: json!({"partitioned_tables": partitioned, "default_partition_rows": default_rows}),
        detail: if stray {
            "rows landed in default partitions: a partition they belong in is missing (the \
             maintenance worker makes them ahead; see the server's log)"
                .to_owned()
        } else {
            format!("{partitioned} partitioned table(s); no row in a default partition")
        },
    });

    let dead: i64 = queue.get("dead");
    let stuck_n: i64 = queue.get("stuck");
    let depth: Option<i64> = queue.get("depth_estimate");
    checks.push(Check {
        name: "queue",
        status: warn_if(dead > 0 || stuck_n > 0),
        value: json!({"depth_estimate": depth.unwrap_or(0), "dead": dead, "stuck": stuck_n}),
        detail: format!(
            "about {} job(s) queued; {dead} dead letter(s); {stuck_n} running job(s) whose lease \
             ran out more than {} s ago",
            depth.unwrap_or(0),
            limits.stuck_job.as_secs()
        ),
    });

    let streaming = health.get::<_, Value>("replicas");
    // Every cell's read replicas (`TENANTRY_REPLICAS`), in one check.
    let configured: Vec<&tenantry_db::replica::Replicas> = state
        .cells
        .iter()
        .filter_map(|cell| cell.db.replicas().map(|r| &**r))
        .collect();
    checks.extend(if configured.is_empty() {
        replication_checks(&streaming)
    } else {
        Some(read_replicas_check(&configured, &streaming))
    });

    let status = if checks.iter().all(|c| c.status == CheckStatus::Ok) {
        HealthStatus::Ok
    } else {
        HealthStatus::Degraded
    };
    Health { status, checks }
}

/// Replication with read replicas configured (`TENANTRY_REPLICAS`): each
/// replica as last polled (no statement here: the poller reads replay
/// positions every interval), with its lag in bytes and seconds and the
/// reads it served; warns when one is down, not a standby, or further behind
/// than the lag limits (reads then go to the primary). The standbys
/// streaming from the primary (`pg_stat_replication`) come along.
fn read_replicas_check(cells: &[&tenantry_db::replica::Replicas], streaming: &Value) -> Check {
    let statuses: Vec<_> = cells.iter().flat_map(|r| r.statuses()).collect();
    // One setting for every cell's replicas.
    let options = cells[0].options();
    let (primary_reads, fallbacks) = cells.iter().fold((0, 0), |(p, f), r| {
        let (rp, rf) = r.primary_reads();
        (p + rp, f + rf)
    });
    let replica_reads: u64 = cells.iter().map(|r| r.replica_reads()).sum();
    let bad: Vec<String> = statuses
        .iter()
        .filter(|r| !r.usable)
        .map(|r| match &r.error {
            Some(e) => format!("{} {e}", r.name),
            None => format!(
                "{} is {} bytes, {:.1} s behind",
                r.name, r.lag_bytes, r.lag_seconds
            ),
        })
        .collect();
    let worst = statuses
        .iter()
        .map(|r| r.lag_seconds)
        .fold(0.0_f64, f64::max);
    Check {
        name: "replication",
        status: warn_if(!bad.is_empty()),
        value: json!({
            "replicas": statuses,
            "max_lag_seconds": options.max_lag.as_secs_f64(),
            "max_lag_bytes": options.max_lag_bytes,
            "reads": {"replicas": replica_reads, "primary": primary_reads,
                      "fallbacks": fallbacks},
            "streaming": streaming,
        }),
        detail: if bad.is_empty() {
            format!(
                "{} read replica(s) serving; worst replay lag {worst:.1} s",
                statuses.len()
            )
        } else {
            format!(
                "reads go to the primary instead of: {} (limits: {} s, {} bytes)",
                bad.join("; "),
                options.max_lag.as_secs(),
                options.max_lag_bytes
            )
        },
    }
}

/// Replication, where there is any: the replicas streaming from this
/// database (`pg_stat_replication`) when no read replica is configured.
fn replication_checks(replicas: &Value) -> Option<Check> {
    let list = replicas.as_array().filter(|l| !l.is_empty())?;
    let worst = list
        .iter()
        .filter_map(|r| r["replay_lag_secs"].as_f64())
        .fold(0.0_f64, f64::max);
    let streaming = list.iter().all(|r| r["state"] == "streaming");
    Some(Check {
        name: "replication",
        status: if !streaming {
            CheckStatus::Fail
        } else {
            warn_if(worst > 30.0)
        },
        value: replicas.clone(),
        detail: format!("{} replica(s); worst replay lag {worst:.1} s", list.len()),
    })
}

/// The server's own pool, from its gauges (no statement).
fn pool_check(state: &AppState) -> Check {
    let (size, idle, waiting) = state.db.pool_status();
    let max = state.db.max_connections();
    let share = state.fairness.db_share.stats();
    Check {
        name: "pool",
        status: warn_if(waiting > 0),
        value: json!({"size": size, "max": max, "in_use": size.saturating_sub(idle),
                      "waiting": waiting, "share_in_use": share.in_use,
                      "share_waiting": share.waiting}),
        detail: format!(
            "{} of {max} connections in use, {waiting} waiting for one; {} tenant operations \
             admitted, {} queued in the fair share",
            size.saturating_sub(idle),
            share.in_use,
            share.waiting
        ),
    }
}

fn warn_if(bad: bool) -> CheckStatus {
    if bad {
        CheckStatus::Warn
    } else {
        CheckStatus::Ok
    }
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
