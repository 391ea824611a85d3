//! Usage metering (cost attribution): per tenant per UTC day, requests,
//! database time, rows written, storage, analytics events, jobs run and
//! egress bytes.
//!
//! Counted where the work happens, in memory: the request path adds to the
//! tenant's counters under the map's read lock (a few relaxed atomic adds,
//! no allocation), and a flush every [`FLUSH_EVERY`] swaps every counter to
//! zero and writes what it took in set-based upserts (`unnest` of arrays),
//! a thousand rows each. A tenant's entry stays while it is busy, so only a
//! tenant new to the meter takes the write lock and allocates; one idle for
//! [`IDLE_FLUSHES`] flushes is dropped. (The flush used to take the whole
//! map: with 100,000 tenants each busy every few tens of seconds, nearly
//! every request was its tenant's first since the last flush and took the
//! write lock.) So the state held is bounded by the tenants active in the
//! last few intervals, and the database sees a statement per thousand active
//! tenants per interval per server whatever the traffic. The interval
//! stretches with the tenants active ([`flush_interval`]), so the rows
//! written per second stay bounded too, whatever the tenants. Storage (the
//! tenant record's `storage_bytes`) and jobs run (counted from
//! `job_history`) are levels, set rather than added, in the same flush.
//!
//! Kept apart from the per-minute performance history ("See every tenant",
//! issue 17) so the two can share one aggregation later.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use tenantry_db::{Db, DbError};
use tokio::sync::watch;
use uuid::Uuid;

/// How often the counters are written, while few tenants are active.
pub const FLUSH_EVERY: Duration = Duration::from_secs(10);
/// The rows a server's flushes write per second, at most on average: when
/// more tenants were active than this in [`FLUSH_EVERY`], the next flush
/// waits longer (see [`flush_interval`]), so the database's work for usage
/// stays bounded however many tenants are busy. With 100,000 tenants each
/// making a request every few seconds, a flush every 10 s upserted about one
/// row per two requests, the largest of PostgreSQL's work while the requests
/// themselves sent no statement (BENCHMARKS.md, "Session 18").
pub const FLUSH_ROWS_PER_SEC: usize = 2_000;
/// The longest wait between flushes, however many tenants were active.
pub const MAX_FLUSH_EVERY: Duration = Duration::from_secs(60);
/// Past this many (tenant, day) entries (about 80 bytes each), the next
/// request's recording wakes the flush early, and that flush empties the
/// map, bounding the memory held.
pub const MAX_ENTRIES: usize = 262_144;
/// Flushes in a row that found an entry with nothing counted before it is
/// dropped: a minute while the flushes come every [`FLUSH_EVERY`], as they
/// do again once the tenants that stretched the wait went idle (a flush
/// writes only the entries that counted something).
pub const IDLE_FLUSHES: u32 = 6;

/// One tenant's counts for one day, since the last flush.
#[derive(Debug, Default)]
struct Counts {
    requests: AtomicU64,
    db_time_us: AtomicU64,
    rows_written: AtomicU64,
    analytics_events: AtomicU64,
    egress_bytes: AtomicU64,
    /// Flushes in a row that found nothing counted.
    idle: AtomicU32,
}

/// What a flush took from one tenant's [`Counts`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Taken {
    requests: u64,
    db_time_us: u64,
    rows_written: u64,
    analytics_events: u64,
    egress_bytes: u64,
}

impl Counts {
    /// Swaps every counter to zero: what was counted since the last take.
    fn take(&self) -> Taken {
        Taken {
            requests: self.requests.swap(0, Relaxed),
            db_time_us: self.db_time_us.swap(0, Relaxed),
            rows_written: self.rows_written.swap(0, Relaxed),
            analytics_events: self.analytics_events.swap(0, Relaxed),
            egress_bytes: self.egress_bytes.swap(0, Relaxed),
        }
    }

    /// Nothing counted since the last take (exact under the write lock).
    fn is_empty(&self) -> bool {
        [
            &self.requests,
            &self.db_time_us,
            &self.rows_written,
            &self.analytics_events,
            &self.egress_bytes,
        ]
        .iter()
        .all(|c| c.load(Relaxed) == 0)
    }

    fn add(&self, t: &Taken) {
        self.requests.fetch_add(t.requests, Relaxed);
        self.db_time_us.fetch_add(t.db_time_us, Relaxed);
        self.rows_written.fetch_add(t.rows_written, Relaxed);
        self.analytics_events.fetch_add(t.analytics_events, Relaxed);
        self.egress_bytes.fetch_add(t.egress_bytes, Relaxed);
    }
}

impl Taken {
    fn is_empty(&self) -> bool {
        *self == Taken::default()
    }
}

/// Counters by (tenant, UTC day), inline; foldhash, as the request path's
/// other maps: SipHash's DoS resistance buys nothing for server-made keys.
type CountMap = HashMap<(Uuid, NaiveDate), Counts, foldhash::fast::RandomState>;

/// The in-memory meter of one server.
#[derive(Default)]
pub struct UsageMeter {
    counts: RwLock<CountMap>,
    /// Woken when the map grows past [`MAX_ENTRIES`].
    pub full: tokio::sync::Notify,
}

impl UsageMeter {
    /// Counts into `tenant`'s counters for today (UTC) under the read lock;
    /// makes them under the write lock the first time. Counting only ever
    /// happens under a lock, so a flush that holds the write lock sees
    /// every count made before it.
    fn count(&self, tenant: Uuid, add: impl Fn(&Counts)) {
        let key = (tenant, Utc::now().date_naive());
        if let Some(c) = self
            .counts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            add(c);
            return;
        }
        let mut map = self.counts.write().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_ENTRIES {
            self.full.notify_one();
        }
        add(map.entry(key).or_default());
    }

    /// Counts one request of `tenant`.
    pub fn request(&self, tenant: Uuid, db: &tenantry_db::DbUse, egress_bytes: u64) {
        let (held_us, rows) = (db.held_us.load(Relaxed), db.rows_written.load(Relaxed));
        self.count(tenant, |c| {
            c.requests.fetch_add(1, Relaxed);
            c.db_time_us.fetch_add(held_us, Relaxed);
            c.rows_written.fetch_add(rows, Relaxed);
            c.egress_bytes.fetch_add(egress_bytes, Relaxed);
        });
    }

    /// Counts analytics events accepted for `tenant` (rows the group
    /// commit writes, outside the request's own transaction).
    pub fn analytics(&self, tenant: Uuid, events: u64) {
        self.count(tenant, |c| {
            c.analytics_events.fetch_add(events, Relaxed);
            c.rows_written.fetch_add(events, Relaxed);
        });
    }

    /// (tenant, day) entries held.
    pub fn len(&self) -> usize {
        self.counts.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes everything counted since the last take: each entry's counters
    /// swapped to zero under the read lock, while requests go on counting.
    /// An entry found empty [`IDLE_FLUSHES`] times in a row is dropped under
    /// the write lock, if still empty then; a full map is emptied.
    fn take(&self) -> Vec<((Uuid, NaiveDate), Taken)> {
        if self.len() >= MAX_ENTRIES {
            let map = std::mem::take(&mut *self.counts.write().unwrap_or_else(|e| e.into_inner()));
            return map
                .into_iter()
                .map(|(key, c)| (key, c.take()))
                .filter(|(_, t)| !t.is_empty())
                .collect();
        }
        let (mut taken, mut idle) = (Vec::new(), Vec::new());
        for (key, c) in self.counts.read().unwrap_or_else(|e| e.into_inner()).iter() {
            let t = c.take();
            if !t.is_empty() {
                c.idle.store(0, Relaxed);
                taken.push((*key, t));
            } else if c.idle.fetch_add(1, Relaxed) + 1 >= IDLE_FLUSHES {
                idle.push(*key);
            }
        }
        tenantry_cache::remove_quiet(&self.counts, idle, Counts::is_empty, 1_024);
        taken
    }

    /// Puts counts back after a failed flush (added to whatever came since).
    fn restore(&self, taken: &[((Uuid, NaiveDate), Taken)]) {
        let mut map = self.counts.write().unwrap_or_else(|e| e.into_inner());
        for (key, t) in taken {
            let c = map.entry(*key).or_default();
            c.add(t);
            c.idle.store(0, Relaxed);
        }
    }
}

/// The namespace of usage row ids (a UUIDv5 namespace of Tenantry's own).
const USAGE_NAMESPACE: Uuid = Uuid::from_u128(0x5c1e_7a11_0b5e_4c2a_9d8e_7465_6e61_6e74);

/// The stable id of the usage row of `tenant` on `day`.
pub fn row_id(tenant: Uuid, day: NaiveDate) -> Uuid {
    Uuid::new_v5(
        &USAGE_NAMESPACE,
        format!("{tenant}/{}", day.format("%Y-%m-%d")).as_bytes(),
    )
}

const FLUSH_SQL: &str = "
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::date[], $3::int8[], $4::int8[], $5::int8[],
                         $6::int8[], $7::int8[])
             AS u(tenant_id, day, requests, db_time_us, rows_written, analytics_events,
                  egress_bytes)
)
INSERT INTO usage_daily AS d (tenant_id, day, requests, db_time_us, rows_written,
                              storage_bytes, analytics_events, egress_bytes)
SELECT u.tenant_id, u.day, u.requests, u.db_time_us, u.rows_written,
       coalesce(t.storage_bytes, 0), u.analytics_events, u.egress_bytes
FROM input u LEFT JOIN tenants t ON t.id = u.tenant_id
ON CONFLICT (tenant_id, day) DO UPDATE SET
    requests = d.requests + EXCLUDED.requests,
    db_time_us = d.db_time_us + EXCLUDED.db_time_us,
    rows_written = d.rows_written + EXCLUDED.rows_written,
    storage_bytes = EXCLUDED.storage_bytes,
    analytics_events = d.analytics_events + EXCLUDED.analytics_events,
    egress_bytes = d.egress_bytes + EXCLUDED.egress_bytes";

/// Jobs run per tenant, recounted for today and yesterday (UTC) from the
/// finished jobs (`job_history_finished` range), set as a level.
const JOBS_SQL: &str = "
INSERT INTO usage_daily AS d (tenant_id, day, jobs_run)
SELECT h.tenant_id, h.day, h.n
FROM (SELECT tenant_id, (finished_at AT TIME ZONE 'UTC')::date AS day, count(*) AS n
      FROM job_history
      WHERE finished_at >= ((now() AT TIME ZONE 'UTC')::date - 1) AT TIME ZONE 'UTC'
        AND tenant_id <> '00000000-0000-0000-0000-000000000000'
      GROUP BY 1, 2) h
ON CONFLICT (tenant_id, day) DO UPDATE SET jobs_run = EXCLUDED.jobs_run
WHERE d.jobs_run IS DISTINCT FROM EXCLUDED.jobs_run";

/// (tenant, day) rows per flushing statement (see [`tenantry_db::bulk`]).
const FLUSH_ROWS: usize = 1_000;

/// Writes everything counted so far, [`FLUSH_ROWS`] rows per statement, and
/// recounts jobs run. A chunk that fails is kept for the next flush (and
/// only it: the others are written); the first failure is returned.
pub async fn flush(db: &Db, meter: &UsageMeter) -> Result<usize, DbError> {
    let taken = meter.take();
    let written = tenantry_db::bulk::in_chunks(&taken, FLUSH_ROWS, |chunk| async move {
        let result = flush_chunk(db, chunk).await;
        if result.is_err() {
            meter.restore(chunk);
        }
        result
    })
    .await;
    let jobs = tenantry_jobs::queue::as_worker(db, JOBS_SQL, &[]).await;
    written?;
    jobs.map(|_| taken.len())
}

async fn flush_chunk(db: &Db, chunk: &[((Uuid, NaiveDate), Taken)]) -> Result<(), DbError> {
    let n = chunk.len();
    let mut cols = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let signed = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    for ((tenant, day), t) in chunk {
        cols.0.push(*tenant);
        cols.1.push(*day);
        cols.2.push(signed(t.requests));
        cols.3.push(signed(t.db_time_us));
        cols.4.push(signed(t.rows_written));
        cols.5.push(signed(t.analytics_events));
        cols.6.push(signed(t.egress_bytes));
    }
    tenantry_jobs::queue::as_worker(
        db,
        FLUSH_SQL,
        &[
            &cols.0, &cols.1, &cols.2, &cols.3, &cols.4, &cols.5, &cols.6,
        ],
    )
    .await?;
    Ok(())
}

/// The wait before the next flush, after one that wrote `rows`:
/// [`FLUSH_EVERY`], stretched to keep to [`FLUSH_ROWS_PER_SEC`], at most
/// [`MAX_FLUSH_EVERY`].
pub fn flush_interval(rows: usize) -> Duration {
    let stretched = Duration::from_secs_f64(rows as f64 / FLUSH_ROWS_PER_SEC as f64);
    stretched.clamp(FLUSH_EVERY, MAX_FLUSH_EVERY)
}

/// Flushes every [`flush_interval`] of what the last flush wrote (sooner
/// when the map is full) until `stop`, then once more.
pub async fn run(db: Db, meter: Arc<UsageMeter>, mut stop: watch::Receiver<bool>) {
    let mut wait = FLUSH_EVERY;
    loop {
        tokio::select! {
            _ = stop.changed() => {
                if let Err(e) = flush(&db, &meter).await {
                    tracing::warn!(error = %e, "the last usage flush failed; its counts are lost");
                }
                return;
            }
            () = tokio::time::sleep(wait) => {},
            () = meter.full.notified() => {},
        }
        match flush(&db, &meter).await {
            Ok(rows) => wait = flush_interval(rows),
            Err(e) => {
                tracing::warn!(error = %e, "usage flush failed; counts kept for the next one");
            }
        }
    }
}

/// One row: a tenant's usage on one UTC day.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UsageRow {
    /// UUIDv5 of the tenant and the day: the same for every read.
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub day: NaiveDate,
    pub requests: i64,
    /// Time the tenant's requests held a database connection.
    pub db_time_ms: i64,
    /// Rows changed by the tenant's writing statements.
    pub rows_written: i64,
    /// The tenant's counted storage (post content) as last seen that day.
    pub storage_bytes: i64,
    /// Analytics events accepted that day.
    pub analytics_events: i64,
    /// Jobs of the tenant finished that day.
    pub jobs_run: i64,
    /// Response body bytes sent.
    pub egress_bytes: i64,
}

/// Where a page of usage rows starts after: `(day, tenant_id)`.
pub type UsageKey = (NaiveDate, Uuid);

/// Usage rows from `from` to `to` (inclusive), of one tenant or all,
/// ordered by day then tenant, after `after`, at most `limit`.
pub async fn list(
    db: &Db,
    from: NaiveDate,
    to: NaiveDate,
    tenant: Option<Uuid>,
    after: Option<UsageKey>,
    limit: i64,
) -> Result<Vec<UsageRow>, DbError> {
    let (after_day, after_tenant) = match after {
        Some((d, t)) => (Some(d), Some(t)),
        None => (None, None),
    };
    let rows = tenantry_jobs::queue::as_worker(
        db,
        "SELECT tenant_id, day, requests, db_time_us / 1000 AS db_time_ms, rows_written,
                storage_bytes, analytics_events, jobs_run, egress_bytes
         FROM usage_daily
         WHERE day BETWEEN $1 AND $2
           AND ($3::uuid IS NULL OR tenant_id = $3)
           AND ($4::date IS NULL OR (day, tenant_id) > ($4, $5::uuid))
         ORDER BY day, tenant_id
         LIMIT $6",
        &[&from, &to, &tenant, &after_day, &after_tenant, &limit],
    )
    .await?;
    Ok(rows
        .iter()
        .map(|r| UsageRow {
            id: row_id(r.get("tenant_id"), r.get("day")),
            tenant_id: r.get("tenant_id"),
            day: r.get("day"),
            requests: r.get("requests"),
            db_time_ms: r.get("db_time_ms"),
            rows_written: r.get("rows_written"),
            storage_bytes: r.get("storage_bytes"),
            analytics_events: r.get("analytics_events"),
            jobs_run: r.get("jobs_run"),
            egress_bytes: r.get("egress_bytes"),
        })
        .collect())
}

/// The CSV header and one line per row (RFC 4180; no field needs quoting).
pub fn csv(rows: &[UsageRow]) -> String {
    let mut out = String::from(
        "id,tenant_id,day,requests,db_time_ms,rows_written,storage_bytes,analytics_events,\
         jobs_run,egress_bytes\r\n",
    );
    for r in rows {
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{}\r\n",
            r.id,
            r.tenant_id,
            r.day,
            r.requests,
            r.db_time_ms,
            r.rows_written,
            r.storage_bytes,
            r.analytics_events,
            r.jobs_run,
            r.egress_bytes
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counted(meter: &UsageMeter) -> Vec<(Uuid, u64)> {
        let mut out: Vec<_> = meter
            .take()
            .into_iter()
            .map(|((t, _), taken)| (t, taken.requests))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn the_interval_stretches_with_the_tenants_active_up_to_a_minute() {
        assert_eq!(flush_interval(0), FLUSH_EVERY);
        assert_eq!(flush_interval(FLUSH_ROWS_PER_SEC * 10), FLUSH_EVERY);
        assert_eq!(
            flush_interval(FLUSH_ROWS_PER_SEC * 30),
            Duration::from_secs(30)
        );
        assert_eq!(flush_interval(100_000), Duration::from_secs(50));
        assert_eq!(flush_interval(MAX_ENTRIES), MAX_FLUSH_EVERY);
    }

    #[test]
    fn a_busy_tenant_keeps_its_entry_and_an_idle_one_is_dropped() {
        let meter = UsageMeter::default();
        let (busy, idle) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let used = tenantry_db::DbUse::default();
        meter.request(busy, &used, 10);
        meter.request(idle, &used, 10);
        meter.request(busy, &used, 10);
        assert_eq!(counted(&meter), vec![(busy, 2), (idle, 1)]);
        for flush in 1..=IDLE_FLUSHES {
            meter.request(busy, &used, 10);
            assert_eq!(counted(&meter), vec![(busy, 1)], "flush {flush}");
            let expected = if flush < IDLE_FLUSHES { 2 } else { 1 };
            assert_eq!(
                meter.len(),
                expected,
                "flush {flush}: the idle entry stays until the last"
            );
        }
        // Coming back after being dropped counts from zero again.
        meter.request(idle, &used, 0);
        assert_eq!(counted(&meter), vec![(idle, 1)]);
        assert_eq!(meter.len(), 2);
    }

    #[test]
    fn counts_restored_after_a_failed_flush_are_added_to_what_came_since() {
        let meter = UsageMeter::default();
        let t = Uuid::from_u128(7);
        let used = tenantry_db::DbUse::default();
        meter.request(t, &used, 100);
        meter.analytics(t, 3);
        let taken = meter.take();
        assert_eq!(taken.len(), 1);
        assert_eq!(
            (
                taken[0].1.requests,
                taken[0].1.egress_bytes,
                taken[0].1.analytics_events,
                taken[0].1.rows_written
            ),
            (1, 100, 3, 3)
        );
        meter.request(t, &used, 1);
        meter.restore(&taken);
        let again = meter.take();
        assert_eq!(again.len(), 1);
        assert_eq!((again[0].1.requests, again[0].1.egress_bytes), (2, 101));
        assert!(meter.take().is_empty(), "nothing is taken twice");
    }

    #[test]
    fn a_full_meter_is_emptied_by_its_flush() {
        let meter = UsageMeter::default();
        let used = tenantry_db::DbUse::default();
        for t in 0..MAX_ENTRIES as u128 {
            meter.request(Uuid::from_u128(t), &used, 0);
        }
        assert_eq!(meter.len(), MAX_ENTRIES);
        let taken = meter.take();
        assert_eq!(taken.len(), MAX_ENTRIES, "every count is taken");
        assert!(taken.iter().all(|(_, t)| t.requests == 1));
        assert!(meter.is_empty(), "and the map is let go");
    }

    #[test]
    fn a_row_id_is_the_same_for_the_same_tenant_and_day_only() {
        let t = Uuid::now_v7();
        let d = NaiveDate::from_ymd_opt(2026, 1, 2).expect("a date");
        assert_eq!(row_id(t, d), row_id(t, d));
        assert_ne!(row_id(t, d), row_id(t, d.succ_opt().expect("a next day")));
        assert_ne!(row_id(t, d), row_id(Uuid::now_v7(), d));
        assert_eq!(row_id(t, d).get_version_num(), 5);
    }
}
