//! Read replicas with read-your-writes (`TENANTRY_REPLICAS="cell=url,..."`).
//!
//! A cell's [`Db`] may carry a set of streaming standbys ([`Replicas`],
//! attached with [`Db::with_replicas`]). A transaction that asks for it
//! ([`crate::Tx::prefer_replica`], the request path does for GET and HEAD)
//! runs on a replica — as `BEGIN READ ONLY` — when one has replayed the
//! caller's last write, else on the primary. Nothing here ever answers an
//! error for a replica: one that is down, lagging or not yet polled is simply
//! not chosen, and a replica whose first statement fails hands the
//! transaction back to the primary.
//!
//! **The caller's last write.** A request's transaction names its caller
//! ([`crate::Tx::for_caller`]): the user and the tenant (or, for a user's
//! cross-community request, the user and each community it touches). When a
//! writing transaction of a caller commits, the WAL insert position is read
//! in the same round trip as the `COMMIT` (`COMMIT; SELECT
//! pg_current_wal_insert_lsn()`, one simple-protocol message, so it works
//! behind PgBouncer too) and remembered for each of those keys. After the
//! commit the insert position is at or past the end of the commit record, so
//! a replica whose replay position reaches it shows the write. Keying the
//! tenant as well as the user matters for the cache: a read of the tenant on
//! this node, by anyone, sees every write made to it through this node, so a
//! list cached after a write's invalidation is never read from a replica that
//! has not replayed that write. (The replica is chosen when the transaction
//! takes its connection, after the cache has read its generations.)
//!
//! **Bounded memory.** The positions live in a direct-mapped table of
//! [`WRITTEN_SLOTS`] atomics: a key's slot keeps the highest position of any
//! key hashed there (`fetch_max`). Two keys sharing a slot only make each
//! other's reads more conservative (a replica must be further along), never
//! wrong; nothing is ever evicted, so nothing is forgotten. The table is per
//! node: a write made through another node is seen here once the replica has
//! replayed it, or at once for the tenant's readers on the primary, but a
//! user who writes through node A and reads through node B within the
//! replica's lag may read from a replica that has not caught up. Put a
//! sticky load balancer (by user) in front when that matters.
//!
//! **Replay positions are polled, not asked per request.** A background task
//! ([`run`]) reads each replica's `pg_last_wal_replay_lsn()` and the primary's
//! `pg_current_wal_lsn()` every poll interval (100 ms by default) into
//! atomics; the choice of a replica reads only those. A replica not polled
//! successfully for three intervals, not in recovery (promoted, or a URL that
//! names a primary), or further behind than the lag limits, is not chosen.
//! The time lag is measured against the primary's own positions: how long
//! ago the primary was at the point the replica has replayed (to the poll
//! interval), not `now() - pg_last_xact_replay_timestamp()`, which grows on
//! an idle primary.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio_postgres::SimpleQueryMessage;
use uuid::Uuid;

use crate::{Db, DbOptions};

/// Slots of the table of last write positions (8 bytes each: 512 KiB).
pub const WRITTEN_SLOTS: usize = 1 << 16;

/// How replicas are chosen and judged.
#[derive(Debug, Clone)]
pub struct ReplicaOptions {
    /// How often replay positions are read.
    pub poll_interval: Duration,
    /// A replica further behind than this (in time) is not read from, and
    /// the health check warns.
    pub max_lag: Duration,
    /// A replica further behind than this many bytes of WAL is not read
    /// from, and the health check warns.
    pub max_lag_bytes: u64,
    /// How long a poll (or taking a replica connection) may take before the
    /// replica counts as down.
    pub timeout: Duration,
}

impl Default for ReplicaOptions {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(100),
            max_lag: Duration::from_secs(10),
            max_lag_bytes: 64 << 20,
            timeout: Duration::from_secs(1),
        }
    }
}

/// One `cell=url` of `TENANTRY_REPLICAS`.
#[derive(Clone, PartialEq, Eq)]
pub struct ReplicaSpec {
    pub cell: String,
    pub url: String,
}

impl std::fmt::Debug for ReplicaSpec {
    /// The URL may hold a password: only the cell is printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaSpec")
            .field("cell", &self.cell)
            .field("url", &"<redacted>")
            .finish()
    }
}

/// Parses `TENANTRY_REPLICAS`: `cell=url` pairs separated by commas (a cell
/// may be named more than once, for several replicas). The URL is a
/// `postgres://` URL or a libpq `key=value` string (everything after the
/// first `=` is the URL).
pub fn parse_specs(spec: &str) -> anyhow::Result<Vec<ReplicaSpec>> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        // Not echoed: the entry may hold a password.
        let (cell, url) = part.split_once('=').context(
            "TENANTRY_REPLICAS: an entry is not cell=url (e.g. main=postgres://host/db)",
        )?;
        let (cell, url) = (cell.trim(), url.trim());
        let cell_ok = !cell.is_empty()
            && cell
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        anyhow::ensure!(
            cell_ok,
            "TENANTRY_REPLICAS: `{cell}` is not a cell name (letters, digits, - and _)"
        );
        anyhow::ensure!(!url.is_empty(), "TENANTRY_REPLICAS: cell {cell} has no URL");
        out.push(ReplicaSpec {
            cell: cell.to_owned(),
            url: url.to_owned(),
        });
    }
    Ok(out)
}

/// One streaming standby and what was last learned about it.
pub struct Replica {
    /// `host:port` of the replica (never its credentials).
    name: String,
    cell: String,
    db: Db,
    /// Answered the last poll.
    up: AtomicBool,
    /// `pg_is_in_recovery()` at the last poll.
    in_recovery: AtomicBool,
    replay_lsn: AtomicU64,
    lag_bytes: AtomicU64,
    lag_ms: AtomicU64,
    /// When the last poll answered, in ms since [`Replicas`]' epoch (0:
    /// never).
    polled_at_ms: AtomicU64,
    /// Transactions served.
    reads: AtomicU64,
    /// Why the last poll failed.
    error: Mutex<Option<String>>,
    /// The primary's positions the replica has not yet replayed, with when
    /// they were seen: the time lag is the age of the oldest.
    pending: Mutex<VecDeque<(u64, Instant)>>,
}

/// The most primary positions kept per replica for the time lag (at the
/// default interval, 100 s of a replica that replays nothing).
const PENDING_MAX: usize = 1000;

impl Replica {
    /// The replica's pool (for a transaction routed to it).
    pub(crate) fn db(&self) -> &Db {
        &self.db
    }

    pub(crate) fn served(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
    }

    /// Stops choosing the replica until a poll finds it well again.
    pub(crate) fn mark_down(&self, why: String) {
        self.up.store(false, Ordering::Relaxed);
        *self.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
    }

    /// What an operator reads about it.
    pub fn status(&self, replicas: &Replicas) -> ReplicaStatus {
        let now = replicas.now_ms();
        let polled = self.polled_at_ms.load(Ordering::Relaxed);
        ReplicaStatus {
            name: self.name.clone(),
            cell: self.cell.clone(),
            up: self.up.load(Ordering::Relaxed),
            in_recovery: self.in_recovery.load(Ordering::Relaxed),
            usable: replicas.usable(self, now),
            replay_lsn: format_lsn(self.replay_lsn.load(Ordering::Relaxed)),
            lag_bytes: self.lag_bytes.load(Ordering::Relaxed),
            lag_seconds: self.lag_ms.load(Ordering::Relaxed) as f64 / 1000.0,
            polled_ms_ago: (polled > 0).then(|| now.saturating_sub(polled)),
            reads: self.reads.load(Ordering::Relaxed),
            error: self.error.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }
}

/// A replica as the health check reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReplicaStatus {
    pub name: String,
    pub cell: String,
    pub up: bool,
    pub in_recovery: bool,
    /// Reads are routed to it (up, a standby, recently polled, within the
    /// lag limits).
    pub usable: bool,
    pub replay_lsn: String,
    pub lag_bytes: u64,
    pub lag_seconds: f64,
    pub polled_ms_ago: Option<u64>,
    /// Transactions it served since the server started.
    pub reads: u64,
    pub error: Option<String>,
}

/// A cell's replicas, the last write positions of its callers, and the
/// primary's position.
pub struct Replicas {
    replicas: Vec<Arc<Replica>>,
    written: Box<[AtomicU64]>,
    options: ReplicaOptions,
    epoch: Instant,
    primary_lsn: AtomicU64,
    /// Round robin among the replicas that qualify.
    next: AtomicUsize,
    /// Read transactions that asked for a replica and ran on the primary.
    primary_reads: AtomicU64,
    /// Read transactions moved to the primary after their replica failed.
    fallbacks: AtomicU64,
}

impl Replicas {
    /// Pools for `urls` (connections opened lazily), with `options`.
    pub fn connect(
        cell: &str,
        urls: &[String],
        db_options: &DbOptions,
        options: ReplicaOptions,
    ) -> anyhow::Result<Self> {
        let mut replicas = Vec::with_capacity(urls.len());
        for url in urls {
            let config = crate::tls::ConnectConfig::parse(url)
                .with_context(|| format!("TENANTRY_REPLICAS: a URL of cell {cell}"))?;
            let name = describe(&config.config);
            let db = Db::connect(url, db_options)
                .with_context(|| format!("Failed to build the pool of replica {name}"))?;
            replicas.push(Arc::new(Replica {
                name,
                cell: cell.to_owned(),
                db,
                up: AtomicBool::new(false),
                in_recovery: AtomicBool::new(false),
                replay_lsn: AtomicU64::new(0),
                lag_bytes: AtomicU64::new(0),
                lag_ms: AtomicU64::new(0),
                polled_at_ms: AtomicU64::new(0),
                reads: AtomicU64::new(0),
                error: Mutex::new(Some("not polled yet".to_owned())),
                pending: Mutex::new(VecDeque::new()),
            }));
        }
        Ok(Self {
            replicas,
            written: (0..WRITTEN_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            options,
            epoch: Instant::now(),
            primary_lsn: AtomicU64::new(0),
            next: AtomicUsize::new(0),
            primary_reads: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
        })
    }

    pub fn options(&self) -> &ReplicaOptions {
        &self.options
    }

    pub fn replicas(&self) -> &[Arc<Replica>] {
        &self.replicas
    }

    /// Every replica's status.
    pub fn statuses(&self) -> Vec<ReplicaStatus> {
        self.replicas.iter().map(|r| r.status(self)).collect()
    }

    /// Read transactions that wanted a replica and ran on the primary
    /// (none qualified), and those moved there after a replica failed.
    pub fn primary_reads(&self) -> (u64, u64) {
        (
            self.primary_reads.load(Ordering::Relaxed),
            self.fallbacks.load(Ordering::Relaxed),
        )
    }

    /// Transactions served by replicas, all together.
    pub fn replica_reads(&self) -> u64 {
        self.replicas
            .iter()
            .map(|r| r.reads.load(Ordering::Relaxed))
            .sum()
    }

    fn now_ms(&self) -> u64 {
        // Never 0, which means "never polled".
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    fn slot(key: Uuid) -> usize {
        let (hi, lo) = key.as_u64_pair();
        // Fibonacci hashing of both halves: v7 ids share their time bits.
        ((hi ^ lo.rotate_left(29)).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 48) as usize
            % WRITTEN_SLOTS
    }

    /// Remembers that `keys` (a caller: user, tenant) wrote at `lsn`.
    pub fn wrote(&self, keys: &[Uuid], lsn: u64) {
        for key in keys {
            self.written[Self::slot(*key)].fetch_max(lsn, Ordering::Relaxed);
        }
    }

    /// The position a replica must have replayed to serve `keys`.
    pub fn required(&self, keys: &[Uuid]) -> u64 {
        keys.iter()
            .map(|k| self.written[Self::slot(*k)].load(Ordering::Relaxed))
            .max()
            .unwrap_or(0)
    }

    fn usable(&self, r: &Replica, now_ms: u64) -> bool {
        let polled = r.polled_at_ms.load(Ordering::Relaxed);
        let fresh = self.options.poll_interval.as_millis() as u64 * 3 + 500;
        r.up.load(Ordering::Relaxed)
            && r.in_recovery.load(Ordering::Relaxed)
            && polled > 0
            && now_ms.saturating_sub(polled) <= fresh
            && r.lag_bytes.load(Ordering::Relaxed) <= self.options.max_lag_bytes
            && r.lag_ms.load(Ordering::Relaxed) <= self.options.max_lag.as_millis() as u64
    }

    /// A replica that may serve `keys` a read that shows their own writes,
    /// or `None` (the primary serves). Counts the choice.
    pub(crate) fn pick(&self, keys: &[Uuid]) -> Option<Arc<Replica>> {
        let need = self.required(keys);
        let now = self.now_ms();
        let n = self.replicas.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            let r = &self.replicas[(start + i) % n];
            if self.usable(r, now) && r.replay_lsn.load(Ordering::Relaxed) >= need {
                return Some(r.clone());
            }
        }
        self.primary_reads.fetch_add(1, Ordering::Relaxed);
        None
    }

    pub(crate) fn fell_back(&self) {
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads the primary's position and every replica's replay position
    /// once. Never fails: a replica that does not answer is marked down.
    pub async fn poll(&self, primary: &Db) {
        let timeout = self.options.timeout;
        match tokio::time::timeout(timeout, read_i64(primary, PRIMARY_SQL)).await {
            Ok(Ok(values)) => {
                if let Some(Some(lsn)) = values.first() {
                    self.primary_lsn.fetch_max(*lsn as u64, Ordering::Relaxed);
                }
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "replica poll: the primary did not answer"),
            Err(_) => tracing::debug!("replica poll: the primary did not answer in time"),
        }
        let primary = self.primary_lsn.load(Ordering::Relaxed);
        let polls = self.replicas.iter().map(|r| async move {
            let read = tokio::time::timeout(timeout, read_i64(&r.db, REPLICA_SQL)).await;
            match read {
                Ok(Ok(values)) => {
                    let replay = values.first().copied().flatten();
                    let in_recovery = values.get(1).copied().flatten() == Some(1);
                    self.observe(r, primary, replay.map(|v| v as u64), in_recovery);
                }
                Ok(Err(e)) => r.mark_down(format!("did not answer: {e}")),
                Err(_) => r.mark_down(format!("did not answer within {} ms", timeout.as_millis())),
            }
        });
        futures::future::join_all(polls).await;
    }

    fn observe(&self, r: &Replica, primary: u64, replay: Option<u64>, in_recovery: bool) {
        let now = Instant::now();
        r.in_recovery.store(in_recovery, Ordering::Relaxed);
        let Some(replay) = replay.filter(|_| in_recovery) else {
            r.mark_down("not a standby (pg_is_in_recovery() is false)".to_owned());
            return;
        };
        r.replay_lsn.fetch_max(replay, Ordering::Relaxed);
        let replay = r.replay_lsn.load(Ordering::Relaxed);
        let lag_bytes = primary.saturating_sub(replay);
        let lag = {
            let mut pending = r.pending.lock().unwrap_or_else(|e| e.into_inner());
            while pending.front().is_some_and(|(lsn, _)| *lsn <= replay) {
                pending.pop_front();
            }
            let newest = pending.back().map_or(0, |(lsn, _)| *lsn);
            if primary > replay && primary > newest && pending.len() < PENDING_MAX {
                pending.push_back((primary, now));
            }
            pending
                .front()
                .map_or(Duration::ZERO, |(_, seen)| now.duration_since(*seen))
        };
        r.lag_bytes.store(lag_bytes, Ordering::Relaxed);
        r.lag_ms.store(lag.as_millis() as u64, Ordering::Relaxed);
        r.polled_at_ms.store(self.now_ms(), Ordering::Relaxed);
        *r.error.lock().unwrap_or_else(|e| e.into_inner()) = None;
        r.up.store(true, Ordering::Relaxed);
    }
}

/// The primary's WAL write position, as a byte offset.
const PRIMARY_SQL: &str = "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::int8";

/// A standby's replay position and whether it is one (1) or not (0).
const REPLICA_SQL: &str = "SELECT (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::int8, \
     pg_is_in_recovery()::int";

/// What the commit of a caller's write sends instead of `COMMIT`: one
/// simple-protocol message, so one round trip and nothing prepared (works
/// behind PgBouncer). The `SELECT` runs after the commit, outside it.
pub(crate) const COMMIT_LSN_SQL: &str =
    "COMMIT; SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::int8";

/// The last row's value of a simple query's answer (the position read after
/// `COMMIT`).
pub(crate) fn last_value(messages: &[SimpleQueryMessage]) -> Option<u64> {
    messages.iter().rev().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => row.get(0).and_then(|v| v.parse().ok()),
        _ => None,
    })
}

/// One row of integers by the simple protocol (no prepared statement, so
/// also behind PgBouncer).
async fn read_i64(db: &Db, sql: &str) -> Result<Vec<Option<i64>>, crate::DbError> {
    let conn = db.owner_connection().await?;
    let messages = conn.simple_query(sql).await?;
    let row = messages.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => Some(row),
        _ => None,
    });
    Ok(match row {
        Some(row) => (0..row.len())
            .map(|i| row.get(i).and_then(|v| v.parse().ok()))
            .collect(),
        None => Vec::new(),
    })
}

/// `host:port` of a connection config, for logs and the health check.
fn describe(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}")
}

/// An LSN as PostgreSQL prints it (`16/B374D848`).
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// Polls `primary`'s replicas every interval until `stop` turns true.
pub async fn run(primary: Db, mut stop: tokio::sync::watch::Receiver<bool>) {
    let Some(replicas) = primary.replicas().cloned() else {
        return;
    };
    let mut tick = tokio::time::interval(replicas.options.poll_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => replicas.poll(&primary).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_cells_and_urls_and_refuse_what_is_not_one() {
        let specs = parse_specs(
            "main=postgres://u:p@r1:5433/db, main=host=r2 port=5434 dbname=db,eu=postgres://r3/x",
        )
        .expect("three replicas");
        assert_eq!(specs.len(), 3);
        assert_eq!(specs[0].cell, "main");
        assert_eq!(specs[1].url, "host=r2 port=5434 dbname=db");
        assert_eq!(specs[2].cell, "eu");
        assert!(parse_specs("").expect("none").is_empty());
        let err = parse_specs("postgres://u:secret@r1/db")
            .expect_err("no cell")
            .to_string();
        assert!(!err.contains("secret"), "{err}");
        assert!(parse_specs("ma in=postgres://r1/db").is_err());
        assert!(parse_specs("main=").is_err());
        assert!(!format!("{:?}", specs[0]).contains("u:p"));
    }

    #[test]
    fn lsns_print_as_postgresql_does() {
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
        assert_eq!(format_lsn(0), "0/0");
    }

    fn set() -> Replicas {
        Replicas::connect(
            "main",
            &["postgres://127.0.0.1:1/none".to_owned()],
            &DbOptions::default(),
            ReplicaOptions::default(),
        )
        .expect("a set of one replica")
    }

    #[test]
    fn a_caller_needs_the_highest_position_of_its_keys_and_shared_slots_only_raise_it() {
        let set = set();
        let (user, tenant, other) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(set.required(&[user, tenant]), 0);
        set.wrote(&[user, tenant], 100);
        set.wrote(&[tenant], 90);
        assert_eq!(set.required(&[user]), 100);
        assert_eq!(set.required(&[other, tenant]), 100);
        // Every key has some slot; many keys share slots; a key never reads
        // lower than what it wrote.
        for i in 0..(WRITTEN_SLOTS as u64 * 2) {
            let k = Uuid::from_u64_pair(i, i.wrapping_mul(7));
            set.wrote(&[k], i);
            assert!(set.required(&[k]) >= i);
        }
    }

    #[tokio::test]
    async fn a_replica_is_chosen_only_when_polled_up_a_standby_within_lag_and_past_the_write() {
        let set = set();
        let r = set.replicas[0].clone();
        let user = Uuid::now_v7();
        assert!(set.pick(&[user]).is_none(), "never polled");
        set.observe(&r, 1_000, Some(1_000), true);
        assert!(set.pick(&[user]).is_some());
        set.wrote(&[user], 2_000);
        assert!(set.pick(&[user]).is_none(), "has not replayed the write");
        assert!(set.pick(&[Uuid::now_v7()]).is_some(), "another caller may");
        set.observe(&r, 2_000, Some(2_000), true);
        assert!(set.pick(&[user]).is_some());
        set.observe(&r, 3_000, Some(3_000), false);
        assert!(set.pick(&[]).is_none(), "a primary is not a replica");
        set.observe(&r, 3_000, Some(3_000), true);
        set.observe(&r, 3_000 + (65 << 20), Some(3_000), true);
        assert!(set.pick(&[]).is_none(), "too many bytes behind");
        assert_eq!(r.status(&set).lag_bytes, 65 << 20);
        set.observe(&r, 3_000 + (65 << 20), Some(3_000 + (65 << 20)), true);
        assert!(set.pick(&[]).is_some());
        r.mark_down("gone".to_owned());
        assert!(set.pick(&[]).is_none());
        assert_eq!(set.primary_reads().0, 5);
    }

    #[test]
    fn the_time_lag_is_the_age_of_the_oldest_primary_position_not_replayed() {
        let set = set();
        let r = set.replicas[0].clone();
        set.observe(&r, 500, Some(500), true);
        assert_eq!(r.lag_ms.load(Ordering::Relaxed), 0);
        set.observe(&r, 900, Some(500), true);
        std::thread::sleep(Duration::from_millis(30));
        set.observe(&r, 1_200, Some(600), true);
        assert!(r.lag_ms.load(Ordering::Relaxed) >= 30);
        set.observe(&r, 1_200, Some(1_200), true);
        assert_eq!(r.lag_ms.load(Ordering::Relaxed), 0);
        assert_eq!(r.lag_bytes.load(Ordering::Relaxed), 0);
    }
}
