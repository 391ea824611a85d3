//! Moving one tenant's data from one database (its cell) to another, online.
//!
//! [`move_tenant`] copies the tenant while it keeps reading and writing the
//! source, and switches it over with a pause of its writes only for the final
//! catch-up:
//!
//! 1. **Record.** A row in the source's `tenant_moves` (V150) says where the
//!    move is, so a move that stopped anywhere (kill -9, a dropped future, an
//!    error) is resumed by calling [`move_tenant`] again, or rolled back by
//!    [`abort_move`]. Until the flip the tenant serves from the source only.
//! 2. **Capture.** Triggers on every tenant table of the source (from the
//!    catalog, [`crate::catalog`]) record the (table, primary key) of each
//!    row of this tenant inserted, updated or deleted into `tenant_changes`.
//!    They exist only while the tenant moves and carry `WHEN (tenant_id =
//!    '…')`, so other tenants' writes pay one comparison in C during a move
//!    and nothing otherwise. Creating a trigger waits for the writes in
//!    flight on its table, so every write that commits after the snapshot
//!    below is in the log.
//!
//!    Why not logical replication (`CREATE PUBLICATION … WHERE (tenant_id =
//!    …)`)? It needs `wal_level = logical`, which takes a server restart to
//!    turn on (the test cluster and many managed servers run `replica`) and
//!    a replication slot whose WAL piles up if the move stalls; the change
//!    log works on any PostgreSQL ≥ 14 as deployed, its resumption point is
//!    a table, and it needs no privilege beyond the schema owner's.
//! 3. **Snapshot.** One `REPEATABLE READ` transaction on the source streams
//!    each table's rows of the tenant (`COPY … TO STDOUT (FORMAT binary)`)
//!    straight into the target (`COPY … FROM STDIN`), parents before
//!    children, in one target transaction: all of it or none. The users its
//!    rows reference and its `tenants` row come first (foreign keys).
//! 4. **Catch-up.** Batches of the log are applied without any pause: each
//!    logged key is read again from the source and written to the target
//!    (`INSERT … ON CONFLICT DO UPDATE`), or deleted from it when the source
//!    no longer has it; the batch's log rows are deleted from the source
//!    after the target commits (a crash in between applies them twice, which
//!    changes nothing).
//! 5. **Fence.** The caller's [`Fence::hold`] holds the tenant's new writes
//!    and drains those in flight. Then the source itself is frozen for this
//!    tenant (`BEFORE` triggers raising a serialization failure), so a write
//!    that got past the caller's hold fails instead of being lost; creating
//!    them waits for whatever is still in flight. The last changes are
//!    applied, [`Fence::flip`] switches the directory, [`Fence::release`]
//!    lets the held writes go, now to the target.
//! 6. **Purge.** The source's rows of the tenant are deleted, table by
//!    table, children first (set-based), then the triggers dropped.
//!
//! Every tenant table moves, the deployment's machinery (`jobs`,
//! `job_history`, … in `tenantry_lifecycle_skip`) too: queued jobs follow
//! their tenant. Those tables are not frozen, so a job worker finishing a
//! job on the source during the fence is not refused; its update lands in
//! the copy being purged, and the job (still `running` in the target) runs
//! again when its lease expires. Callers should stop the tenant's job
//! workers in [`Fence::hold`].
//!
//! The source's `tenants` row is left in place (the control database keeps
//! the registry there); the target gets a copy if it has none.
//!
//! Both databases must have the same schema (same newest migration):
//! binary COPY and the column lists depend on it.

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use deadpool_postgres::Object;
use futures::{SinkExt as _, StreamExt as _};
use serde::Serialize;
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use crate::pool::OwnerSession;
use crate::{Db, DbError};

/// What a move needs from its caller to switch the tenant over.
///
/// `hold` holds the tenant's new writes and waits until those in flight are
/// done; `flip` makes the target the tenant's database (the directory, and
/// every node's cached copy of it); `release` lets held writes go on, to
/// whichever database the directory now names.
///
/// `flip` answers `Err` only when the directory was not switched (the move
/// then unfreezes the source and stays resumable), and must be idempotent:
/// a move resumed after a crash at the switch flips again. [`move_tenant`] calls
/// `release` once after every successful `hold`, whether the final catch-up
/// and the flip worked or not. If the move's future is dropped between
/// `hold` and `release`, `release` is not called: an implementation must
/// undo its hold in `Drop` of whatever it keeps.
pub trait Fence: Sync {
    fn hold(&self) -> impl Future<Output = Result<(), DbError>> + Send;
    fn flip(&self) -> impl Future<Output = Result<(), DbError>> + Send;
    fn release(&self) -> impl Future<Output = ()> + Send;
}

/// Where a move is (the `phase` of its `tenant_moves` row).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MovePhase {
    /// The snapshot is being copied into the target (all or nothing).
    Copying,
    /// The snapshot is in the target; changes made since are being applied.
    CatchingUp,
    /// Writes are fenced and caught up; the directory is being switched.
    Flipping,
    /// The target serves the tenant; the old copy is being purged.
    Flipped,
    /// Finished: the target serves, the source holds none of its rows.
    Done,
    /// Rolled back: the source serves, the target holds none of its rows.
    Aborted,
}

impl MovePhase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Copying => "copying",
            Self::CatchingUp => "catching_up",
            Self::Flipping => "flipping",
            Self::Flipped => "flipped",
            Self::Done => "done",
            Self::Aborted => "aborted",
        }
    }

    fn parse(s: &str) -> Result<Self, DbError> {
        Ok(match s {
            "copying" => Self::Copying,
            "catching_up" => Self::CatchingUp,
            "flipping" => Self::Flipping,
            "flipped" => Self::Flipped,
            "done" => Self::Done,
            "aborted" => Self::Aborted,
            other => return Err(other_error(format!("unknown move phase {other:?}"))),
        })
    }
}

/// Reported to the caller's `progress` as the move goes.
#[derive(Debug, Clone, Serialize)]
pub struct MoveProgress {
    pub move_id: Uuid,
    pub phase: MovePhase,
    /// The table being copied, during [`MovePhase::Copying`].
    pub table: Option<String>,
    pub rows_copied: u64,
    pub changes_applied: u64,
    /// Changes logged and not yet applied, as of the last batch.
    pub backlog: u64,
}

/// What a finished move did.
#[derive(Debug, Clone, Serialize)]
pub struct MoveReport {
    pub move_id: Uuid,
    /// Rows of the snapshot written to the target (users and the tenant's
    /// record included).
    pub rows_copied: u64,
    /// Logged row keys re-read from the source and applied to the target.
    pub changes_applied: u64,
    /// Rows deleted from the source after the flip.
    pub rows_purged: u64,
    /// From [`Fence::hold`] returning to [`Fence::release`] being called:
    /// how long the tenant's writes were held.
    #[serde(with = "millis")]
    pub write_pause: Duration,
    /// The whole call.
    #[serde(with = "millis")]
    pub duration: Duration,
    /// The phase an earlier, interrupted run of this move had reached.
    pub resumed_from: Option<MovePhase>,
}

mod millis {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// A move's record in the source database.
#[derive(Debug, Clone, Serialize)]
pub struct MoveRecord {
    pub id: Uuid,
    pub tenant: Uuid,
    /// The target database as it names itself (`database@host:port`).
    pub target: String,
    pub phase: MovePhase,
    pub rows_copied: i64,
    pub changes_applied: i64,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// Batches of the change log are at most this many entries.
const BATCH: i64 = 20_000;

/// The online catch-up stops and the fence is taken once the log holds at
/// most this many entries, or after [`MAX_ROUNDS`] rounds (a tenant writing
/// faster than the catch-up applies is then caught up under the fence).
const FENCE_BACKLOG: u64 = 500;
const MAX_ROUNDS: usize = 20;

/// Moves `tenant`'s rows from `source` to `target`, online (see the
/// module's notes). Resumes a move of the tenant that an earlier call left
/// unfinished; refuses when that move was to another database.
pub async fn move_tenant(
    source: &Db,
    target: &Db,
    tenant: Uuid,
    fence: &impl Fence,
    progress: impl Fn(MoveProgress),
) -> Result<MoveReport, DbError> {
    let started = Instant::now();
    let src = Detached::get(source).await?;
    lock_tenant(&src, tenant).await?;
    let dst = Detached::get(target).await?;
    let target_name = identity(&dst).await?;
    if identity(&src).await? == target_name {
        return Err(other_error("a tenant cannot move to the database it is in"));
    }
    let (src_version, dst_version) = (schema_version(&src).await?, schema_version(&dst).await?);
    if src_version != dst_version {
        return Err(other_error(format!(
            "the source's schema is at V{src_version} and the target's at V{dst_version}: \
             migrate both first"
        )));
    }
    let tables = tables(&src).await?;
    let existing = find_active(&src, tenant).await?;
    let (record, resumed_from) = match existing {
        Some(r) if r.target != target_name => {
            return Err(other_error(format!(
                "tenant {tenant} is already moving to {}; finish or abort that move first",
                r.target
            )));
        }
        Some(r) => {
            let phase = r.phase;
            (r, Some(phase))
        }
        None => {
            // A new move into a database that holds rows of the tenant
            // would overwrite them: the tenant may live there already (a
            // directory pointing at the target). Leftovers of a stopped move
            // are under its record, never here.
            if let Some(table) = first_holding(&dst, &tables, tenant).await? {
                return Err(other_error(format!(
                    "the target already holds rows of tenant {tenant} ({table}): \
                     is the tenant served from there?"
                )));
            }
            (start_record(&src, tenant, &target_name).await?, None)
        }
    };
    let id = record.id;
    let mut state = MoveProgress {
        move_id: id,
        phase: record.phase,
        table: None,
        rows_copied: u64::try_from(record.rows_copied).unwrap_or(0),
        changes_applied: u64::try_from(record.changes_applied).unwrap_or(0),
        backlog: 0,
    };
    let mut write_pause = Duration::ZERO;

    if matches!(
        record.phase,
        MovePhase::Copying | MovePhase::CatchingUp | MovePhase::Flipping
    ) {
        // The target may hold triggers of an earlier move of this tenant
        // away from it; the copy must not meet them.
        drop_triggers(&dst, &tables, tenant).await?;
        capture(&src, &tables, tenant).await?;
    }
    if record.phase == MovePhase::Copying {
        progress(state.clone());
        let copied = copy_snapshot(source, target, &tables, tenant, |table, rows| {
            state.table = Some(table.to_owned());
            state.rows_copied = rows;
            progress(state.clone());
        })
        .await?;
        state.table = None;
        state.rows_copied = copied;
        set_phase(&src, id, MovePhase::CatchingUp, Some(copied), 0).await?;
        state.phase = MovePhase::CatchingUp;
        progress(state.clone());
    }
    if matches!(
        record.phase,
        MovePhase::Copying | MovePhase::CatchingUp | MovePhase::Flipping
    ) {
        state.phase = MovePhase::CatchingUp;
        for _ in 0..MAX_ROUNDS {
            let (applied, backlog) = catch_up(source, target, &tables, tenant, id).await?;
            state.changes_applied += applied;
            state.backlog = backlog;
            progress(state.clone());
            if backlog <= FENCE_BACKLOG {
                break;
            }
        }

        fence.hold().await?;
        let held = Instant::now();
        let fenced = async {
            freeze(&src, &tables, tenant).await?;
            loop {
                let (applied, backlog) = catch_up(source, target, &tables, tenant, id).await?;
                state.changes_applied += applied;
                state.backlog = backlog;
                if backlog == 0 {
                    break;
                }
            }
            set_phase(&src, id, MovePhase::Flipping, None, 0).await?;
            state.phase = MovePhase::Flipping;
            progress(state.clone());
            fence.flip().await
        }
        .await;
        if let Err(e) = fenced {
            // Not flipped: the source goes on serving, writable again; the
            // move stays resumable from its catch-up.
            let undo = async {
                unfreeze(&src, &tables, tenant).await?;
                set_phase(&src, id, MovePhase::CatchingUp, None, 0).await
            }
            .await;
            fence.release().await;
            if let Err(undo) = undo {
                tracing::error!(error = %undo, %tenant, "could not unfreeze a tenant after a failed move");
            }
            return Err(e);
        }
        // Flipped: nothing from here on undoes it. Should recording it
        // fail, the record says `flipping` and the source stays frozen; a
        // resumed move finds nothing left to apply and flips again.
        write_pause = held.elapsed();
        fence.release().await;
        set_phase(&src, id, MovePhase::Flipped, None, 0).await?;
        state.phase = MovePhase::Flipped;
        state.backlog = 0;
        progress(state.clone());
    }

    // Flipped: the target serves. The capture goes first (the purge's
    // deletes need no logging), the freeze last (a stale writer to the
    // source is refused until its rows are gone).
    drop_capture(&src, &tables, tenant).await?;
    let purged = purge(source, &tables, tenant).await?;
    unfreeze(&src, &tables, tenant).await?;
    src.execute(
        "DELETE FROM tenant_changes WHERE of_tenant = $1",
        &[&tenant],
    )
    .await?;
    set_phase(&src, id, MovePhase::Done, None, 0).await?;
    state.phase = MovePhase::Done;
    progress(state.clone());
    Ok(MoveReport {
        move_id: id,
        rows_copied: state.rows_copied,
        changes_applied: state.changes_applied,
        rows_purged: purged,
        write_pause,
        duration: started.elapsed(),
        resumed_from,
    })
}

/// Rolls back an unfinished move of `tenant` from `source` that has not
/// flipped: the target's partial copy is deleted, the triggers dropped and
/// the log cleared; the source goes on serving as before. `Ok(None)` when
/// no move of the tenant is unfinished. Refuses a move already flipped (the
/// target serves; finish it with [`move_tenant`]). A move in
/// [`MovePhase::Flipping`] is rolled back only if the caller's directory
/// still names the source (the flip did not happen); the caller knows.
pub async fn abort_move(
    source: &Db,
    target: &Db,
    tenant: Uuid,
) -> Result<Option<MoveRecord>, DbError> {
    let src = Detached::get(source).await?;
    lock_tenant(&src, tenant).await?;
    let dst = Detached::get(target).await?;
    let Some(record) = find_active(&src, tenant).await? else {
        return Ok(None);
    };
    if record.target != identity(&dst).await? {
        return Err(other_error(format!(
            "the move of tenant {tenant} goes to {}, not to this database",
            record.target
        )));
    }
    if record.phase == MovePhase::Flipped {
        return Err(other_error(
            "the move has flipped: the target serves the tenant; finish it instead",
        ));
    }
    let tables = tables(&src).await?;
    drop_triggers(&src, &tables, tenant).await?;
    drop_triggers(&dst, &tables, tenant).await?;
    delete_rows(target, &tables, tenant, false).await?;
    src.execute(
        "DELETE FROM tenant_changes WHERE of_tenant = $1",
        &[&tenant],
    )
    .await?;
    set_phase(&src, record.id, MovePhase::Aborted, None, 0).await?;
    Ok(Some(MoveRecord {
        phase: MovePhase::Aborted,
        ..record
    }))
}

/// The unfinished move of `tenant` recorded in `source`, if any: a caller
/// that finds one after a restart resumes it ([`move_tenant`], same
/// target) or rolls it back ([`abort_move`]).
pub async fn active_move(source: &Db, tenant: Uuid) -> Result<Option<MoveRecord>, DbError> {
    let conn = source.owner_connection().await?;
    find_active(&conn, tenant).await
}

async fn find_active(
    conn: &tokio_postgres::Client,
    tenant: Uuid,
) -> Result<Option<MoveRecord>, DbError> {
    let row = conn
        .query_opt(
            "SELECT id, of_tenant, target, phase, rows_copied, changes_applied,
                    started_at, updated_at, finished_at
               FROM tenant_moves
              WHERE of_tenant = $1 AND phase NOT IN ('done', 'aborted')",
            &[&tenant],
        )
        .await?;
    row.map(|r| record_of(&r)).transpose()
}

/// Every move of `tenant` recorded in `source`, newest first.
pub async fn moves_of(source: &Db, tenant: Uuid) -> Result<Vec<MoveRecord>, DbError> {
    let conn = source.owner_connection().await?;
    let rows = conn
        .query(
            "SELECT id, of_tenant, target, phase, rows_copied, changes_applied,
                    started_at, updated_at, finished_at
               FROM tenant_moves WHERE of_tenant = $1
              ORDER BY started_at DESC, id DESC",
            &[&tenant],
        )
        .await?;
    rows.iter().map(record_of).collect()
}

fn record_of(r: &tokio_postgres::Row) -> Result<MoveRecord, DbError> {
    let phase: &str = r.try_get(3)?;
    Ok(MoveRecord {
        id: r.try_get(0)?,
        tenant: r.try_get(1)?,
        target: r.try_get(2)?,
        phase: MovePhase::parse(phase)?,
        rows_copied: r.try_get(4)?,
        changes_applied: r.try_get(5)?,
        started_at: r.try_get(6)?,
        updated_at: r.try_get(7)?,
        finished_at: r.try_get(8)?,
    })
}

fn other_error(message: impl Into<String>) -> DbError {
    DbError::Other(anyhow::anyhow!(message.into()))
}

/// Takes the tenant's move lock in the source for as long as `conn` lives
/// (a session advisory lock: it goes with the connection, even when the
/// process is killed), so two movers never work on one tenant at once.
async fn lock_tenant(conn: &tokio_postgres::Client, tenant: Uuid) -> Result<(), DbError> {
    // "tenantmv" xor the uuid's two halves: one key per tenant.
    let (hi, lo) = tenant.as_u64_pair();
    let key = (0x7465_6e61_6e74_6d76 ^ hi ^ lo) as i64;
    let locked: bool = conn
        .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
        .await?
        .try_get(0)?;
    if !locked {
        return Err(DbError::Busy(format!(
            "tenant {tenant} is being moved by another process"
        )));
    }
    Ok(())
}

/// How a database names itself: enough to tell two apart on one server or
/// on two.
async fn identity(conn: &tokio_postgres::Client) -> Result<String, DbError> {
    let row = conn
        .query_one(
            "SELECT current_database() || '@' || coalesce(host(inet_server_addr()), 'local')
                    || ':' || coalesce(inet_server_port(), 0)",
            &[],
        )
        .await?;
    Ok(row.try_get(0)?)
}

async fn schema_version(conn: &tokio_postgres::Client) -> Result<i32, DbError> {
    let row = conn
        .query_one(
            "SELECT coalesce(max(version), 0) FROM tenantry_migrations",
            &[],
        )
        .await?;
    Ok(row.try_get(0)?)
}

/// The first tenant table in which `conn`'s database holds rows of
/// `tenant`, if any.
async fn first_holding(
    conn: &tokio_postgres::Client,
    tables: &[Table],
    tenant: Uuid,
) -> Result<Option<String>, DbError> {
    let probes: Vec<String> = tables
        .iter()
        .map(|t| {
            format!(
                "SELECT {}::text AS tbl WHERE EXISTS (SELECT 1 FROM {} WHERE tenant_id = $1)",
                literal(&t.name),
                t.name
            )
        })
        .collect();
    let row = conn
        .query_opt(
            &format!("{} LIMIT 1", probes.join(" UNION ALL ")),
            &[&tenant],
        )
        .await?;
    Ok(row.map(|r| r.try_get(0)).transpose()?)
}

async fn start_record(
    conn: &tokio_postgres::Client,
    tenant: Uuid,
    target: &str,
) -> Result<MoveRecord, DbError> {
    let row = conn
        .query_one(
            "INSERT INTO tenant_moves (id, of_tenant, target) VALUES ($1, $2, $3)
             RETURNING id, of_tenant, target, phase, rows_copied, changes_applied,
                       started_at, updated_at, finished_at",
            &[&crate::new_id(), &tenant, &target],
        )
        .await
        .map_err(|e| match e.code() {
            Some(c) if *c == SqlState::UNIQUE_VIOLATION => {
                other_error(format!("tenant {tenant} is already moving"))
            }
            _ => e.into(),
        })?;
    record_of(&row)
}

async fn set_phase(
    conn: &tokio_postgres::Client,
    id: Uuid,
    phase: MovePhase,
    rows_copied: Option<u64>,
    changes: u64,
) -> Result<(), DbError> {
    let rows = rows_copied.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
    let changes = i64::try_from(changes).unwrap_or(i64::MAX);
    conn.execute(
        "UPDATE tenant_moves
            SET phase = $2, rows_copied = coalesce($3, rows_copied),
                changes_applied = changes_applied + $4, updated_at = now(),
                finished_at = CASE WHEN $2 IN ('done', 'aborted') THEN now() END
          WHERE id = $1",
        &[&id, &phase.as_str(), &rows, &changes],
    )
    .await?;
    Ok(())
}

/// A tenant table as a move copies it, from the catalog.
#[derive(Debug, Clone)]
struct Table {
    /// As SQL names it (`regclass` output).
    name: String,
    /// Stored columns (generated ones are derived again by the target),
    /// quoted, `tenant_id` among them.
    columns: Vec<String>,
    /// The primary key's columns but `tenant_id`, quoted, with their types.
    key: Vec<(String, String)>,
    /// Has an identity column (inserts name `OVERRIDING SYSTEM VALUE`).
    identity: bool,
    /// Sequences of serial or identity columns: (sequence, column quoted),
    /// advanced in the target past the rows copied.
    sequences: Vec<(String, String)>,
    /// Columns referencing `users`, quoted.
    user_refs: Vec<String>,
    /// Frozen at the fence (not the deployment's machinery).
    frozen: bool,
}

/// The tenant tables, children before parents ([`crate::catalog`] order).
const TABLES: &str = "
    SELECT t.tbl::text,
           (SELECT array_agg(quote_ident(a.attname) ORDER BY a.attnum)
              FROM pg_attribute a
             WHERE a.attrelid = t.tbl AND a.attnum > 0 AND NOT a.attisdropped
               AND a.attgenerated = ''),
           coalesce((SELECT array_agg(quote_ident(pa.attname) ORDER BY k.ord)
                       FROM pg_index i
                      CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
                       JOIN pg_attribute pa ON pa.attrelid = i.indrelid AND pa.attnum = k.attnum
                      WHERE i.indrelid = t.tbl AND i.indisprimary AND pa.attname <> 'tenant_id'),
                    '{}'),
           coalesce((SELECT array_agg(format_type(pa.atttypid, pa.atttypmod) ORDER BY k.ord)
                       FROM pg_index i
                      CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
                       JOIN pg_attribute pa ON pa.attrelid = i.indrelid AND pa.attnum = k.attnum
                      WHERE i.indrelid = t.tbl AND i.indisprimary AND pa.attname <> 'tenant_id'),
                    '{}'),
           EXISTS (SELECT 1 FROM pg_attribute a
                    WHERE a.attrelid = t.tbl AND a.attidentity <> '' AND NOT a.attisdropped),
           coalesce((SELECT array_agg(s.seq) FROM (
                        SELECT pg_get_serial_sequence(t.tbl::text, a.attname) AS seq
                          FROM pg_attribute a
                         WHERE a.attrelid = t.tbl AND a.attnum > 0 AND NOT a.attisdropped) s
                      WHERE s.seq IS NOT NULL), '{}'),
           coalesce((SELECT array_agg(a.attname::text)
                       FROM pg_attribute a
                      WHERE a.attrelid = t.tbl AND a.attnum > 0 AND NOT a.attisdropped
                        AND pg_get_serial_sequence(t.tbl::text, a.attname) IS NOT NULL), '{}'),
           coalesce((SELECT array_agg(DISTINCT quote_ident(fa.attname))
                       FROM pg_constraint c
                       JOIN pg_attribute fa ON fa.attrelid = c.conrelid AND fa.attnum = c.conkey[1]
                      WHERE c.conrelid = t.tbl AND c.contype = 'f'
                        AND c.confrelid = 'users'::regclass), '{}'),
           t.tbl NOT IN (SELECT tbl FROM tenantry_lifecycle_skip),
           EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = t.tbl AND i.indisprimary)
      FROM tenantry_tenant_tables() t
     ORDER BY t.depth, t.tbl::text";

async fn tables(conn: &tokio_postgres::Client) -> Result<Vec<Table>, DbError> {
    let rows = conn.query(TABLES, &[]).await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let name: String = r.try_get(0)?;
        let key_cols: Vec<String> = r.try_get(2)?;
        let key_types: Vec<String> = r.try_get(3)?;
        // A key of `tenant_id` alone (one row per tenant) is an empty key
        // here: the catch-up re-reads the tenant's whole row.
        if !r.try_get::<_, bool>(9)? {
            return Err(other_error(format!(
                "tenant table {name} has no primary key: a move cannot re-read its changed rows"
            )));
        }
        let seqs: Vec<String> = r.try_get(5)?;
        let seq_cols: Vec<String> = r.try_get(6)?;
        out.push(Table {
            columns: r.try_get(1)?,
            key: key_cols.into_iter().zip(key_types).collect(),
            identity: r.try_get(4)?,
            sequences: seqs
                .into_iter()
                .zip(seq_cols.iter().map(|c| ident(c)))
                .collect(),
            user_refs: r.try_get(7)?,
            frozen: r.try_get(8)?,
            name,
        });
    }
    Ok(out)
}

/// Quotes an identifier for SQL.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A string as an SQL literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Trigger names of this tenant's move: capture of writes and deletes,
/// freeze of writes and deletes. A uuid in hex: nothing to quote.
fn trigger_names(tenant: Uuid) -> [String; 4] {
    let t = tenant.simple();
    [
        format!("tenantry_move_w_{t}"),
        format!("tenantry_move_d_{t}"),
        format!("tenantry_move_fw_{t}"),
        format!("tenantry_move_fd_{t}"),
    ]
}

/// Runs `sql` (DDL taking a table lock) in a transaction of its own with a
/// short lock timeout, again and again until it gets its lock: a DDL
/// statement waiting in the lock queue holds up every statement queued
/// behind it, other tenants' included, so it never waits long at a time.
async fn ddl(conn: &tokio_postgres::Client, sql: &str) -> Result<(), DbError> {
    let mut attempt = 0u32;
    loop {
        let result = conn
            .batch_execute(&format!(
                "BEGIN; SET LOCAL lock_timeout = '100ms'; {sql}; COMMIT"
            ))
            .await;
        match result {
            Ok(()) => return Ok(()),
            Err(e)
                if attempt < 600
                    && matches!(e.code(), Some(c) if *c == SqlState::LOCK_NOT_AVAILABLE
                        || *c == SqlState::T_R_DEADLOCK_DETECTED) =>
            {
                conn.batch_execute("ROLLBACK").await?;
                attempt += 1;
                let jitter = u64::from(rand::random::<u8>() % 50);
                tokio::time::sleep(Duration::from_millis(20 + jitter)).await;
            }
            Err(e) => {
                let _ = conn.batch_execute("ROLLBACK").await;
                return Err(e.into());
            }
        }
    }
}

/// Creates the capture triggers on every tenant table (again, if they are
/// there already: `CREATE OR REPLACE`).
async fn capture(
    conn: &tokio_postgres::Client,
    tables: &[Table],
    tenant: Uuid,
) -> Result<(), DbError> {
    let [w, d, _, _] = trigger_names(tenant);
    for t in tables {
        let mut args = vec![literal(&t.name), literal(&tenant.to_string())];
        args.extend(t.key.iter().map(|(c, _)| literal(c.trim_matches('"'))));
        let args = args.join(", ");
        ddl(
            conn,
            &format!(
                "CREATE OR REPLACE TRIGGER {w} AFTER INSERT OR UPDATE ON {table} FOR EACH ROW
                     WHEN (NEW.tenant_id = '{tenant}') EXECUTE FUNCTION tenantry_move_capture({args});
                 CREATE OR REPLACE TRIGGER {d} AFTER DELETE ON {table} FOR EACH ROW
                     WHEN (OLD.tenant_id = '{tenant}') EXECUTE FUNCTION tenantry_move_capture({args})",
                table = t.name
            ),
        )
        .await?;
    }
    Ok(())
}

/// Freezes the tenant in this database: its writes fail from here on. One
/// transaction for every table (one commit, one round trip: this runs while
/// the tenant's writes are held); it waits for writes still in flight.
async fn freeze(
    conn: &tokio_postgres::Client,
    tables: &[Table],
    tenant: Uuid,
) -> Result<(), DbError> {
    let [_, _, fw, fd] = trigger_names(tenant);
    let sql: Vec<String> = tables
        .iter()
        .filter(|t| t.frozen)
        .map(|t| {
            format!(
                "CREATE OR REPLACE TRIGGER {fw} BEFORE INSERT OR UPDATE ON {table} FOR EACH ROW
                     WHEN (NEW.tenant_id = '{tenant}') EXECUTE FUNCTION tenantry_move_frozen('{tenant}');
                 CREATE OR REPLACE TRIGGER {fd} BEFORE DELETE ON {table} FOR EACH ROW
                     WHEN (OLD.tenant_id = '{tenant}') EXECUTE FUNCTION tenantry_move_frozen('{tenant}')",
                table = t.name
            )
        })
        .collect();
    ddl(conn, &sql.join(";\n")).await
}

async fn drop_named(
    conn: &tokio_postgres::Client,
    tables: &[Table],
    names: &[&String],
) -> Result<(), DbError> {
    // Only where one exists: DROP TRIGGER takes the table's strongest lock.
    let present: Vec<(String, String)> = conn
        .query(
            "SELECT tgrelid::regclass::text, tgname::text FROM pg_trigger
              WHERE tgname::text = ANY ($1::text[]) AND NOT tgisinternal AND tgparentid = 0",
            &[&names.iter().map(|s| s.as_str()).collect::<Vec<_>>()],
        )
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<_, tokio_postgres::Error>>()?;
    for t in tables {
        let on: Vec<&String> = present
            .iter()
            .filter(|(tbl, _)| *tbl == t.name)
            .map(|(_, n)| n)
            .collect();
        if on.is_empty() {
            continue;
        }
        let sql: Vec<String> = on
            .iter()
            .map(|n| format!("DROP TRIGGER IF EXISTS {n} ON {}", t.name))
            .collect();
        ddl(conn, &sql.join("; ")).await?;
    }
    Ok(())
}

async fn drop_capture(
    conn: &tokio_postgres::Client,
    tables: &[Table],
    tenant: Uuid,
) -> Result<(), DbError> {
    let [w, d, _, _] = trigger_names(tenant);
    drop_named(conn, tables, &[&w, &d]).await
}

async fn unfreeze(
    conn: &tokio_postgres::Client,
    tables: &[Table],
    tenant: Uuid,
) -> Result<(), DbError> {
    let [_, _, fw, fd] = trigger_names(tenant);
    drop_named(conn, tables, &[&fw, &fd]).await
}

async fn drop_triggers(
    conn: &tokio_postgres::Client,
    tables: &[Table],
    tenant: Uuid,
) -> Result<(), DbError> {
    let names = trigger_names(tenant);
    drop_named(conn, tables, &names.iter().collect::<Vec<_>>()).await
}

/// An owner connection the move keeps for its bookkeeping and DDL, closed
/// when dropped rather than returned to the pool: a move stopped inside a
/// statement batch must not hand a connection in the middle of a
/// transaction to someone else.
struct Detached(Option<Object>);

impl Detached {
    async fn get(db: &Db) -> Result<Self, DbError> {
        Ok(Self(Some(db.owner_connection().await?)))
    }
}

impl std::ops::Deref for Detached {
    type Target = tokio_postgres::Client;

    fn deref(&self) -> &Self::Target {
        self.0
            .as_ref()
            .expect("a detached connection is held until dropped")
    }
}

impl Drop for Detached {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            let _ = Object::take(conn);
        }
    }
}

/// A connection in a transaction of the move's own, in the tenant's
/// context (row-level security lets an owner that does not bypass it see
/// this tenant's rows and no other's). Dropped before it commits, the
/// connection is closed, which rolls the transaction back, whatever await
/// the move stopped at.
struct Session;

impl Session {
    async fn begin(db: &Db, tenant: Uuid, begin: &str) -> Result<OwnerSession, DbError> {
        // A uuid formatted by Rust: nothing to inject.
        let prelude = format!(
            "{begin}; SELECT set_config('tenantry.tenant_ids', '{{{tenant}}}', true), \
             set_config('tenantry.user_id', '', true), \
             set_config('statement_timeout', '0', true)"
        );
        OwnerSession::begin(db, &prelude).await
    }
}

/// Streams `out` (a `COPY … TO STDOUT`) on `from` into `into` (a `COPY …
/// FROM STDIN`) on `to`, in chunks of about 256 KiB; the rows written.
async fn pipe(
    from: &tokio_postgres::Client,
    out: &str,
    to: &tokio_postgres::Client,
    into: &str,
) -> Result<u64, DbError> {
    let stream = from.copy_out(out).await?;
    let sink = to.copy_in::<_, Bytes>(into).await?;
    futures::pin_mut!(stream, sink);
    let mut buf = BytesMut::with_capacity(256 << 10);
    while let Some(chunk) = stream.next().await {
        buf.extend_from_slice(&chunk?);
        if buf.len() >= 256 << 10 {
            sink.send(buf.split().freeze()).await?;
        }
    }
    if !buf.is_empty() {
        sink.send(buf.freeze()).await?;
    }
    Ok(sink.as_mut().finish().await?)
}

/// The users the tenant's rows reference and its owner, as a condition on
/// `users.id`.
fn users_of(tables: &[Table], tenant: Uuid) -> String {
    let mut refs = vec![format!(
        "SELECT owner_user_id FROM tenants WHERE id = '{tenant}'"
    )];
    for t in tables {
        for c in &t.user_refs {
            refs.push(format!(
                "SELECT {c} FROM {} WHERE tenant_id = '{tenant}'",
                t.name
            ));
        }
    }
    format!("id IN ({})", refs.join(" UNION "))
}

/// The stored columns of a global table (`users`, `tenants`), quoted.
async fn columns_of(conn: &tokio_postgres::Client, table: &str) -> Result<Vec<String>, DbError> {
    let row = conn
        .query_one(
            "SELECT array_agg(quote_ident(attname) ORDER BY attnum) FROM pg_attribute
              WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped
                AND attgenerated = ''",
            &[&table],
        )
        .await?;
    Ok(row.try_get(0)?)
}

/// Copies rows of a global table selected by `filter` from the source
/// session into the target's, keeping the target's where one with the same
/// id is there already.
async fn copy_global(
    src: &tokio_postgres::Client,
    dst: &tokio_postgres::Client,
    table: &str,
    filter: &str,
) -> Result<u64, DbError> {
    let cols = columns_of(src, table).await?.join(", ");
    let stage = format!("move_global_{table}");
    dst.batch_execute(&format!(
        "CREATE TEMP TABLE IF NOT EXISTS {stage} ON COMMIT DROP AS SELECT {cols} FROM {table} WITH NO DATA; \
         TRUNCATE {stage}"
    ))
    .await?;
    pipe(
        src,
        &format!("COPY (SELECT {cols} FROM {table} WHERE {filter}) TO STDOUT (FORMAT binary)"),
        dst,
        &format!("COPY {stage} ({cols}) FROM STDIN (FORMAT binary)"),
    )
    .await?;
    let n = dst
        .execute(
            &format!("INSERT INTO {table} ({cols}) SELECT {cols} FROM {stage} ON CONFLICT (id) DO NOTHING"),
            &[],
        )
        .await?;
    Ok(n)
}

/// Deletes the tenant's rows of every tenant table in `db`, children
/// first, each table in a transaction of its own; how many. `purge` passes
/// the freeze of a moved tenant.
async fn delete_rows(db: &Db, tables: &[Table], tenant: Uuid, purge: bool) -> Result<u64, DbError> {
    let mut deleted = 0;
    for t in tables {
        let session = Session::begin(db, tenant, "BEGIN").await?;
        if purge {
            session
                .client()
                .batch_execute("SELECT set_config('tenantry.move_purge', 'on', true)")
                .await?;
        }
        deleted += session
            .client()
            .execute(
                &format!("DELETE FROM {} WHERE tenant_id = $1", t.name),
                &[&tenant],
            )
            .await?;
        session.commit().await?;
    }
    Ok(deleted)
}

async fn purge(source: &Db, tables: &[Table], tenant: Uuid) -> Result<u64, DbError> {
    delete_rows(source, tables, tenant, true).await
}

/// Advances the target's sequences of `t` past the rows it now holds.
async fn advance_sequences(dst: &tokio_postgres::Client, t: &Table) -> Result<(), DbError> {
    for (seq, col) in &t.sequences {
        dst.batch_execute(&format!(
            "SELECT setval({seq_lit}, greatest((SELECT last_value FROM {seq}),
                                               (SELECT max({col}) FROM {table})))
              WHERE (SELECT max({col}) FROM {table}) IS NOT NULL",
            seq_lit = literal(seq),
            table = t.name
        ))
        .await?;
    }
    Ok(())
}

/// Copies the tenant's snapshot into the target, all or nothing; rows
/// written. `progress` is called after each table.
async fn copy_snapshot(
    source: &Db,
    target: &Db,
    tables: &[Table],
    tenant: Uuid,
    mut progress: impl FnMut(&str, u64),
) -> Result<u64, DbError> {
    let src = Session::begin(
        source,
        tenant,
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
    )
    .await?;
    let dst = Session::begin(target, tenant, "BEGIN").await?;
    let (s, d) = (src.client(), dst.client());
    // Leftovers of an earlier attempt that committed and was then undone
    // by nothing (the tenant never served from here before the flip).
    for t in tables {
        d.execute(
            &format!("DELETE FROM {} WHERE tenant_id = $1", t.name),
            &[&tenant],
        )
        .await?;
    }
    let mut rows = copy_global(s, d, "users", &users_of(tables, tenant)).await?;
    rows += copy_global(s, d, "tenants", &format!("id = '{tenant}'")).await?;
    progress("users", rows);
    // Parents first.
    for t in tables.iter().rev() {
        let cols = t.columns.join(", ");
        rows += pipe(
            s,
            &format!(
                "COPY (SELECT {cols} FROM {} WHERE tenant_id = '{tenant}') TO STDOUT (FORMAT binary)",
                t.name
            ),
            d,
            &format!("COPY {} ({cols}) FROM STDIN (FORMAT binary)", t.name),
        )
        .await?;
        advance_sequences(d, t).await?;
        progress(&t.name, rows);
    }
    dst.commit().await?;
    src.commit().await?;
    Ok(rows)
}

/// The key columns of `t` read from `move_keys.key`.
fn key_casts(t: &Table) -> String {
    t.key
        .iter()
        .map(|(c, ty)| format!("(key->>{})::{ty} AS {c}", literal(c.trim_matches('"'))))
        .collect::<Vec<_>>()
        .join(", ")
}

fn key_match(a: &str, b: &str, t: &Table) -> String {
    if t.key.is_empty() {
        return "true".to_owned();
    }
    t.key
        .iter()
        .map(|(c, _)| format!("{a}.{c} = {b}.{c}"))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// The condition on `x` that selects the logged keys of `t`.
fn logged(t: &Table) -> String {
    if t.key.is_empty() {
        return "true".to_owned();
    }
    let xk: Vec<String> = t.key.iter().map(|(c, _)| format!("x.{c}")).collect();
    format!(
        "({}) IN (SELECT {} FROM move_keys WHERE tbl = {})",
        xk.join(", "),
        key_casts(t),
        literal(&t.name)
    )
}

/// Applies one batch of the change log to the target; (row keys applied,
/// log entries left).
async fn catch_up(
    source: &Db,
    target: &Db,
    tables: &[Table],
    tenant: Uuid,
    move_id: Uuid,
) -> Result<(u64, u64), DbError> {
    let src = Session::begin(source, tenant, "BEGIN ISOLATION LEVEL REPEATABLE READ").await?;
    let s = src.client();
    s.batch_execute(&format!(
        "CREATE TEMP TABLE move_seen ON COMMIT DROP AS
             SELECT seq, tbl, key FROM tenant_changes
              WHERE of_tenant = '{tenant}' ORDER BY seq LIMIT {BATCH};
         CREATE TEMP TABLE move_keys ON COMMIT DROP AS SELECT DISTINCT tbl, key FROM move_seen"
    ))
    .await?;
    let seen: i64 = s
        .query_one("SELECT count(*) FROM move_seen", &[])
        .await?
        .try_get(0)?;
    if seen == 0 {
        src.commit().await?;
        return Ok((0, 0));
    }
    let changed: Vec<String> = s
        .query("SELECT DISTINCT tbl FROM move_keys", &[])
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    let dst = Session::begin(target, tenant, "BEGIN").await?;
    let d = dst.client();
    d.batch_execute("CREATE TEMP TABLE move_keys (tbl text, key jsonb) ON COMMIT DROP")
        .await?;
    let keys = pipe(
        s,
        "COPY move_keys (tbl, key) TO STDOUT (FORMAT binary)",
        d,
        "COPY move_keys (tbl, key) FROM STDIN (FORMAT binary)",
    )
    .await?;
    // Stage each changed table's current rows (for the logged keys) from
    // the source snapshot, which is at least as new as every logged change.
    let staged: Vec<(usize, String)> = tables
        .iter()
        .enumerate()
        .filter(|(_, t)| changed.contains(&t.name))
        .map(|(i, _)| (i, format!("move_stage_{i}")))
        .collect();
    for (i, stage) in &staged {
        let t = &tables[*i];
        let cols = t.columns.join(", ");
        d.batch_execute(&format!(
            "CREATE TEMP TABLE {stage} ON COMMIT DROP AS SELECT {cols} FROM {} WITH NO DATA",
            t.name
        ))
        .await?;
        pipe(
            s,
            &format!(
                "COPY (SELECT {cols} FROM {table} x
                        WHERE x.tenant_id = '{tenant}' AND {logged})
                 TO STDOUT (FORMAT binary)",
                table = t.name,
                logged = logged(t),
            ),
            d,
            &format!("COPY {stage} ({cols}) FROM STDIN (FORMAT binary)"),
        )
        .await?;
    }
    // Deletes first, children first: a key the source no longer has. (Before
    // the upserts, so a unique value freed by a deleted row can be taken.)
    for (i, stage) in &staged {
        let t = &tables[*i];
        d.execute(
            &format!(
                "DELETE FROM {table} x
                  WHERE x.tenant_id = $1 AND {logged}
                    AND NOT EXISTS (SELECT 1 FROM {stage} s WHERE {sk})",
                table = t.name,
                logged = logged(t),
                sk = key_match("s", "x", t),
            ),
            &[&tenant],
        )
        .await?;
    }
    // Users the new rows reference that the target has not seen.
    let missing: Vec<String> = staged
        .iter()
        .flat_map(|(i, stage)| {
            tables[*i]
                .user_refs
                .iter()
                .map(move |c| format!("SELECT {c} AS u FROM {stage}"))
        })
        .collect();
    if !missing.is_empty() {
        let ids: Vec<Uuid> = d
            .query(
                &format!(
                    "SELECT DISTINCT u FROM ({}) m
                      WHERE u IS NOT NULL AND NOT EXISTS (SELECT 1 FROM users WHERE id = u)",
                    missing.join(" UNION ALL ")
                ),
                &[],
            )
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        if !ids.is_empty() {
            let list: Vec<String> = ids.iter().map(|u| format!("'{u}'")).collect();
            copy_global(s, d, "users", &format!("id IN ({})", list.join(", "))).await?;
        }
    }
    // Upserts, parents first.
    for (i, stage) in staged.iter().rev() {
        let t = &tables[*i];
        let cols = t.columns.join(", ");
        let key: Vec<&str> = std::iter::once("tenant_id")
            .chain(t.key.iter().map(|(c, _)| c.as_str()))
            .collect();
        let set: Vec<String> = t
            .columns
            .iter()
            .filter(|c| !key.contains(&c.as_str()))
            .map(|c| format!("{c} = EXCLUDED.{c}"))
            .collect();
        let action = if set.is_empty() {
            "NOTHING".to_owned()
        } else {
            format!("UPDATE SET {}", set.join(", "))
        };
        d.execute(
            &format!(
                "INSERT INTO {table} ({cols}) {overriding} SELECT {cols} FROM {stage}
                 ON CONFLICT ({key}) DO {action}",
                table = t.name,
                overriding = if t.identity {
                    "OVERRIDING SYSTEM VALUE"
                } else {
                    ""
                },
                key = key.join(", "),
            ),
            &[],
        )
        .await?;
        advance_sequences(d, t).await?;
    }
    dst.commit().await?;
    // The target has them: forget exactly the entries read (not every one
    // up to the highest: a lower number may commit later).
    s.execute(
        "DELETE FROM tenant_changes WHERE seq IN (SELECT seq FROM move_seen)",
        &[],
    )
    .await?;
    count_applied(s, move_id, keys).await?;
    // Entries of the frozen tables only: the fenced loop stops at none,
    // which the freeze guarantees; the deployment's machinery (not frozen)
    // may go on logging, and is caught up as far as each batch sees.
    let frozen: Vec<&str> = tables
        .iter()
        .filter(|t| t.frozen)
        .map(|t| t.name.as_str())
        .collect();
    let left: i64 = s
        .query_one(
            "SELECT count(*) FROM tenant_changes WHERE of_tenant = $1 AND tbl = ANY ($2)",
            &[&tenant, &frozen],
        )
        .await?
        .try_get(0)?;
    src.commit().await?;
    // What this snapshot cannot see was logged after it began: counted by
    // the next round.
    Ok((keys, u64::try_from(left).unwrap_or(0)))
}

async fn count_applied(
    conn: &tokio_postgres::Client,
    move_id: Uuid,
    applied: u64,
) -> Result<(), DbError> {
    conn.execute(
        "UPDATE tenant_moves SET changes_applied = changes_applied + $2, updated_at = now()
          WHERE id = $1",
        &[&move_id, &i64::try_from(applied).unwrap_or(i64::MAX)],
    )
    .await?;
    Ok(())
}
