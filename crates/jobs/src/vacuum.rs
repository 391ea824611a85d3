//! The queue keeps its own table vacuumed.
//!
//! Every claim leaves a dead version of the job (and a dead entry in
//! `jobs_claimable`), and every completion a dead row. Until VACUUM removes
//! them, each claim's probes step over them, so a busy queue gets slower the
//! longer nothing vacuums: with autovacuum off (or too lazy for a table that
//! turns over thousands of rows a second) claims grew past their 30 s
//! statement timeout and the queue stalled (BENCHMARKS.md, issue 6). A queue
//! must not depend on the operator's autovacuum settings, so the workers
//! vacuum `jobs` themselves when its dead tuples pass a threshold.
//!
//! The trigger is PostgreSQL's own count (`pg_stat_user_tables.n_dead_tup`),
//! not the worker's: it includes every worker of every server. Whoever
//! finds the table due runs `VACUUM (SKIP_LOCKED) jobs` under an advisory
//! lock taken with `pg_try_advisory_lock`, so one vacuum runs at a time and
//! the others go back to work at once. `job_keys` is not vacuumed: it is only
//! inserted into (a key is deleted only with a discarded dead letter), so it
//! leaves no dead tuples to speak of.

use std::time::{Duration, Instant};

use tenantry_db::{Db, DbError};

/// Held while a worker vacuums `jobs` ("tenantrv").
pub const VACUUM_LOCK: i64 = 0x7465_6e61_6e74_7276;

/// When the workers vacuum `jobs`.
#[derive(Debug, Clone)]
pub struct VacuumPolicy {
    /// Dead tuples in `jobs` below which it is never vacuumed.
    pub min_dead: i64,
    /// Dead tuples, as a fraction of the live ones, past which it is (and
    /// past `min_dead`): a vacuum reads the whole table and its indexes, so a
    /// big backlog is vacuumed less often than a short queue.
    pub dead_ratio: f64,
    /// The least time between two vacuums of `jobs` by anyone (this or
    /// another server, or autovacuum).
    pub min_interval: Duration,
    /// How often a worker looks at the count, after batches that changed
    /// jobs (an idle worker never does).
    pub check_every: Duration,
}

impl Default for VacuumPolicy {
    fn default() -> Self {
        Self {
            min_dead: 10_000,
            dead_ratio: 0.1,
            min_interval: Duration::from_secs(2),
            check_every: Duration::from_secs(1),
        }
    }
}

/// What [`vacuum_if_due`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Vacuumed `jobs`, which had `dead` dead tuples by the count.
    Vacuumed { dead: i64, took: Duration },
    /// Not due: too few dead tuples, or vacuumed too recently.
    NotDue { dead: i64, live: i64 },
    /// Due, but another worker holds the vacuum lock (it is vacuuming).
    Busy,
    /// The connecting role may not vacuum `jobs` (it neither owns the table
    /// nor the database, and is not a superuser): VACUUM would only warn
    /// and skip it.
    NotPermitted,
}

/// Whether `jobs` is due, whether this role may vacuum it, and the lock if
/// both: one round trip. The lock is tried last and only when due, so a
/// check that finds nothing to do takes nothing. VACUUM's own ownership
/// rule (PostgreSQL 15): superuser, the table's owner or the database's
/// owner (`pg_has_role(…, 'USAGE')` is true for superusers and for members
/// who inherit the role).
const CHECK_SQL: &str = "
SELECT dead, live, permitted, due,
       CASE WHEN permitted AND due THEN pg_try_advisory_lock($4) ELSE false END AS locked
FROM (
    SELECT s.n_dead_tup AS dead, s.n_live_tup AS live,
           pg_has_role(c.relowner, 'USAGE') OR pg_has_role(d.datdba, 'USAGE') AS permitted,
           s.n_dead_tup >= greatest($1::int8, ceil($2::float8 * s.n_live_tup)::int8)
           AND coalesce(greatest(s.last_vacuum, s.last_autovacuum)
                        <= now() - $3::int8 * interval '1 millisecond', true) AS due
    FROM pg_stat_user_tables s
    JOIN pg_class c ON c.oid = s.relid
    JOIN pg_database d ON d.datname = current_database()
    WHERE s.relid = 'jobs'::regclass
) t";

/// Vacuums `jobs` if `policy` says it is due and no one else is vacuuming
/// it, on a pooled connection as the connecting role (outside any
/// transaction: VACUUM cannot run in one).
///
/// The dead-tuple count lags the table by up to a second or so (each
/// backend reports its counts when it finishes a transaction, at most once
/// a second), which a threshold of thousands does not notice.
pub async fn vacuum_if_due(db: &Db, policy: &VacuumPolicy) -> Result<Outcome, DbError> {
    let conn = db.owner_connection().await?;
    let interval_ms = i64::try_from(policy.min_interval.as_millis()).unwrap_or(i64::MAX);
    let checked = async {
        let stmt = conn.prepare_cached(CHECK_SQL).await?;
        conn.query_opt(
            &stmt,
            &[
                &policy.min_dead,
                &policy.dead_ratio,
                &interval_ms,
                &VACUUM_LOCK,
            ],
        )
        .await
    }
    .await;
    let row = match checked {
        Ok(Some(row)) => row,
        // No statistics for `jobs` (not migrated here): nothing to do.
        Ok(None) => return Ok(Outcome::NotDue { dead: 0, live: 0 }),
        Err(e) => {
            // Whether the lock was taken is unknown: never reuse the session.
            let _ = deadpool_postgres::Object::take(conn);
            return Err(e.into());
        }
    };
    let (dead, live): (i64, i64) = (row.get("dead"), row.get("live"));
    if !row.get::<_, bool>("permitted") {
        return Ok(Outcome::NotPermitted);
    }
    if !row.get::<_, bool>("due") {
        return Ok(Outcome::NotDue { dead, live });
    }
    if !row.get::<_, bool>("locked") {
        return Ok(Outcome::Busy);
    }
    let started = Instant::now();
    // SKIP_LOCKED: if anything else holds the table's vacuum lock (an
    // autovacuum, an operator's VACUUM or ANALYZE), skip this round rather
    // than queue behind it. Alone in its query string: a multi-statement
    // string is one implicit transaction, where VACUUM is refused.
    let vacuumed = conn.batch_execute("VACUUM (SKIP_LOCKED) jobs").await;
    let unlocked = conn
        .execute("SELECT pg_advisory_unlock($1)", &[&VACUUM_LOCK])
        .await;
    if vacuumed.is_err() || unlocked.is_err() {
        // The session may still hold the lock: drop it, which releases it.
        let _ = deadpool_postgres::Object::take(conn);
    }
    vacuumed?;
    unlocked?;
    Ok(Outcome::Vacuumed {
        dead,
        took: started.elapsed(),
    })
}
