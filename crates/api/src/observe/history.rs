//! The performance history in PostgreSQL: the flush of an interval's
//! meters (one statement), the day partitions of the minute table and their
//! retention, the hourly rollups, and the reads behind the admin views.

use chrono::{DateTime, TimeZone as _, Utc};
use tenantry_db::{Db, DbError, TenantContext};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::meter::{BUCKETS, Hist, Interval};

/// Minute rows are kept this many days (then their partition is dropped).
pub const KEEP_DAYS: i64 = 2;
const STATEMENT_TIMEOUT_MS: u32 = 30_000;

/// Runs one statement as `tenantry_observer` (the role that reads and
/// writes every tenant's performance rows, and nothing else) and commits:
/// BEGIN, role, statement and COMMIT in one round trip.
pub async fn as_observer(
    db: &Db,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, DbError> {
    let prelude = format!(
        "BEGIN; SELECT set_config('role', 'tenantry_observer', true), \
         set_config('statement_timeout', '{STATEMENT_TIMEOUT_MS}', true)"
    );
    db.one_shot(&prelude, sql, params).await
}

/// Minutes since the Unix epoch.
pub fn minute_of(at: DateTime<Utc>) -> i32 {
    i32::try_from(at.timestamp().div_euclid(60)).unwrap_or(i32::MAX)
}

pub fn at_minute(minute: i32) -> DateTime<Utc> {
    Utc.timestamp_opt(i64::from(minute) * 60, 0)
        .single()
        .unwrap_or_default()
}

/// Tenants' rows per flushing statement (see [`tenantry_db::bulk`]).
pub const FLUSH_ROWS: usize = 500;

/// Writes the intervals' rows for `minute`, [`FLUSH_ROWS`] tenants per
/// statement: each tenant with traffic gets a row, merged into a row already
/// there (another node, or an earlier interval of the same minute). Every
/// chunk is tried; the first failure is returned.
pub async fn flush(db: &Db, minute: i32, rows: &[Interval]) -> Result<(), DbError> {
    tenantry_db::bulk::in_chunks(rows, FLUSH_ROWS, |chunk| flush_chunk(db, minute, chunk)).await?;
    Ok(())
}

async fn flush_chunk(db: &Db, minute: i32, rows: &[Interval]) -> Result<(), DbError> {
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let ids: Vec<Uuid> = rows.iter().map(|r| r.tenant_id).collect();
    let requests: Vec<i64> = rows.iter().map(|r| n(r.requests)).collect();
    let errors: Vec<i64> = rows.iter().map(|r| n(r.errors)).collect();
    let throttled: Vec<i64> = rows.iter().map(|r| n(r.throttled)).collect();
    let shed: Vec<i64> = rows.iter().map(|r| n(r.shed)).collect();
    let db_time: Vec<i64> = rows.iter().map(|r| n(r.db_time_us)).collect();
    let hits: Vec<i64> = rows.iter().map(|r| n(r.cache_hits)).collect();
    let misses: Vec<i64> = rows.iter().map(|r| n(r.cache_misses)).collect();
    // Histograms go flat, BUCKETS counts per row, sliced back by ordinality.
    let latency: Vec<i64> = rows.iter().flat_map(|r| r.latency.to_vec()).collect();
    let db_wait: Vec<i64> = rows.iter().flat_map(|r| r.db_wait.to_vec()).collect();
    let buckets = i64::try_from(BUCKETS).unwrap_or(i64::MAX);
    as_observer(
        db,
        "INSERT INTO tenant_perf_minute AS p
             (tenant_id, minute, requests, errors, throttled, shed, latency_hist,
              db_time_us, db_wait_hist, cache_hits, cache_misses)
         SELECT u.t, $1, u.r, u.e, u.th, u.s,
                ($10::bigint[])[(u.n - 1) * $12::bigint + 1 : u.n * $12::bigint],
                u.dt,
                ($11::bigint[])[(u.n - 1) * $12::bigint + 1 : u.n * $12::bigint],
                u.h, u.m
           FROM unnest($2::uuid[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[],
                       $7::bigint[], $8::bigint[], $9::bigint[])
                WITH ORDINALITY AS u(t, r, e, th, s, dt, h, m, n)
         ON CONFLICT (tenant_id, minute) DO UPDATE SET
             requests = p.requests + EXCLUDED.requests,
             errors = p.errors + EXCLUDED.errors,
             throttled = p.throttled + EXCLUDED.throttled,
             shed = p.shed + EXCLUDED.shed,
             latency_hist = tenantry_hist_add(p.latency_hist, EXCLUDED.latency_hist),
             db_time_us = p.db_time_us + EXCLUDED.db_time_us,
             db_wait_hist = tenantry_hist_add(p.db_wait_hist, EXCLUDED.db_wait_hist),
             cache_hits = p.cache_hits + EXCLUDED.cache_hits,
             cache_misses = p.cache_misses + EXCLUDED.cache_misses",
        &[
            &minute, &ids, &requests, &errors, &throttled, &shed, &db_time, &hits, &misses,
            &latency, &db_wait, &buckets,
        ],
    )
    .await?;
    Ok(())
}

/// Makes the minute table's day partitions from yesterday to two days
/// ahead and drops those older than [`KEEP_DAYS`]. Runs as the schema owner.
pub async fn maintain_partitions(db: &Db) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let conn = db
        .owner_connection()
        .await
        .context("Failed to get a connection for the minute partitions")?;
    let today = Utc::now().date_naive();
    let day_minute = |d: chrono::NaiveDate| {
        minute_of(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc())
    };
    for offset in -1..=2 {
        let day = today + chrono::Duration::days(offset);
        let name = format!("tenant_perf_minute_d{}", day.format("%Y%m%d"));
        let (from, to) = (day_minute(day), day_minute(day + chrono::Duration::days(1)));
        conn.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {name} PARTITION OF tenant_perf_minute
                 FOR VALUES FROM ({from}) TO ({to})"
        ))
        .await
        .with_context(|| format!("Failed to create {name}"))?;
    }
    let oldest = day_minute(today - chrono::Duration::days(KEEP_DAYS));
    let parts = conn
        .query(
            "SELECT c.relname::text, pg_get_expr(c.relpartbound, c.oid)
               FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
              WHERE i.inhparent = 'tenant_perf_minute'::regclass",
            &[],
        )
        .await
        .context("Failed to list the minute partitions")?;
    for p in parts {
        // A partition dropped meanwhile (by another server's upkeep) has no
        // bound any more.
        let (name, bound): (String, Option<String>) = (p.get(0), p.get(1));
        let Some(bound) = bound else { continue };
        // "FOR VALUES FROM (a) TO (b)": dropped once b is before the oldest
        // minute kept.
        let end = bound
            .rsplit('(')
            .next()
            .and_then(|s| s.trim_end_matches(')').trim().parse::<i64>().ok());
        if end.is_some_and(|end| end <= i64::from(oldest)) {
            conn.batch_execute(&format!("DROP TABLE {name}"))
                .await
                .with_context(|| format!("Failed to drop {name}"))?;
            tracing::info!(partition = %name, "old performance minutes dropped");
        }
    }
    Ok(())
}

/// Rolls the minutes of the hours from `from` (inclusive, an hour start) to
/// the current hour (exclusive) up into hourly rows, replacing what is
/// there: rerunning it is harmless.
pub async fn roll_up(db: &Db, from: DateTime<Utc>) -> Result<u64, DbError> {
    let to = now_hour();
    let rows = as_observer(
        db,
        "WITH r AS (
             INSERT INTO tenant_perf_hour AS h
                 (tenant_id, at, requests, errors, throttled, shed, latency_hist,
                  db_time_us, db_wait_hist, cache_hits, cache_misses)
             SELECT tenant_id, to_timestamp((minute / 60)::bigint * 3600),
                    sum(requests), sum(errors), sum(throttled), sum(shed),
                    tenantry_hist_sum(latency_hist), sum(db_time_us),
                    tenantry_hist_sum(db_wait_hist), sum(cache_hits), sum(cache_misses)
               FROM tenant_perf_minute
              WHERE minute >= $1 AND minute < $2
              GROUP BY tenant_id, minute / 60
             ON CONFLICT (tenant_id, at) DO UPDATE SET
                 requests = EXCLUDED.requests, errors = EXCLUDED.errors,
                 throttled = EXCLUDED.throttled, shed = EXCLUDED.shed,
                 latency_hist = EXCLUDED.latency_hist, db_time_us = EXCLUDED.db_time_us,
                 db_wait_hist = EXCLUDED.db_wait_hist, cache_hits = EXCLUDED.cache_hits,
                 cache_misses = EXCLUDED.cache_misses
             RETURNING 1)
         SELECT count(*) FROM r",
        &[&minute_of(from), &minute_of(to)],
    )
    .await?;
    Ok(rows
        .first()
        .map_or(0, |r| u64::try_from(r.get::<_, i64>(0)).unwrap_or(0)))
}

pub fn now_hour() -> DateTime<Utc> {
    let now = Utc::now().timestamp();
    Utc.timestamp_opt(now - now.rem_euclid(3_600), 0)
        .single()
        .unwrap_or_default()
}

/// One bucket of a tenant's history (a minute, or an hour).
#[derive(Debug, Clone, Default)]
pub struct Point {
    pub at: DateTime<Utc>,
    pub requests: u64,
    pub errors: u64,
    pub throttled: u64,
    pub shed: u64,
    pub latency: Hist,
    pub db_time_us: u64,
    pub db_wait: Hist,
    pub cache_hits: u64,
    pub cache_misses: u64,
}

impl Point {
    pub fn add(&mut self, o: &Point) {
        self.requests += o.requests;
        self.errors += o.errors;
        self.throttled += o.throttled;
        self.shed += o.shed;
        self.latency.add(&o.latency);
        self.db_time_us += o.db_time_us;
        self.db_wait.add(&o.db_wait);
        self.cache_hits += o.cache_hits;
        self.cache_misses += o.cache_misses;
    }

    fn read(r: &Row) -> Result<(Uuid, Point), tokio_postgres::Error> {
        let n = |v: i64| u64::try_from(v).unwrap_or(0);
        Ok((
            r.try_get(0)?,
            Point {
                at: r.try_get(1)?,
                requests: n(r.try_get(2)?),
                errors: n(r.try_get(3)?),
                throttled: n(r.try_get(4)?),
                shed: n(r.try_get(5)?),
                latency: Hist::from_slice(&r.try_get::<_, Vec<i64>>(6)?),
                db_time_us: n(r.try_get(7)?),
                db_wait: Hist::from_slice(&r.try_get::<_, Vec<i64>>(8)?),
                cache_hits: n(r.try_get(9)?),
                cache_misses: n(r.try_get(10)?),
            },
        ))
    }
}

/// A window of history: its length, and whether its points are hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub minutes: i32,
    pub hourly: bool,
}

impl Window {
    pub fn parse(raw: &str) -> Option<Window> {
        let (minutes, hourly) = match raw {
            "15m" => (15, false),
            "1h" => (60, false),
            "24h" => (1_440, false),
            "7d" => (10_080, true),
            _ => return None,
        };
        Some(Window { minutes, hourly })
    }
}

const COLUMNS: &str = "requests, errors, throttled, shed, latency_hist, db_time_us, \
                       db_wait_hist, cache_hits, cache_misses";

/// The statement reading `window` of history, for one tenant (`$1`, on its
/// primary key) or for every tenant (`$1` null). Hourly windows read the
/// rolled-up hours, and the minutes of the last two hours (not rolled up
/// yet, or not finally).
fn history_sql(one_tenant: bool, hourly: bool) -> String {
    let who = if one_tenant {
        "tenant_id = $1 AND"
    } else {
        "$1::uuid IS NULL AND"
    };
    let minutes = format!(
        "SELECT tenant_id, to_timestamp(minute::bigint * 60), {COLUMNS}
           FROM tenant_perf_minute WHERE {who} minute >= $2 AND minute <= $3"
    );
    if !hourly {
        return minutes;
    }
    format!(
        "SELECT tenant_id, at, {COLUMNS} FROM tenant_perf_hour
          WHERE {who} at >= $4 AND at < $5
         UNION ALL {minutes}"
    )
}

/// The points of `window` ending now, per tenant (all tenants with traffic
/// when `tenant` is `None`), oldest first. Hourly windows come back in hours.
pub async fn read(
    db: &Db,
    tenant: Option<Uuid>,
    window: Window,
) -> Result<Vec<(Uuid, Point)>, DbError> {
    let now = minute_of(Utc::now());
    let start = now - window.minutes + 1;
    let cutoff = now_hour() - chrono::Duration::hours(2);
    let (from_minute, hours_from) = if window.hourly {
        (minute_of(cutoff), at_minute(start))
    } else {
        (start, cutoff)
    };
    let sql = history_sql(tenant.is_some(), window.hourly);
    let rows = match (tenant, window.hourly) {
        (Some(id), false) => {
            let mut tx = db
                .begin(&TenantContext::tenant(id, STATEMENT_TIMEOUT_MS))
                .await?;
            tx.query(&sql, &[&id, &from_minute, &now]).await?
        }
        (Some(id), true) => {
            let mut tx = db
                .begin(&TenantContext::tenant(id, STATEMENT_TIMEOUT_MS))
                .await?;
            tx.query(&sql, &[&id, &from_minute, &now, &hours_from, &cutoff])
                .await?
        }
        (None, false) => as_observer(db, &sql, &[&tenant, &from_minute, &now]).await?,
        (None, true) => {
            as_observer(
                db,
                &sql,
                &[&tenant, &from_minute, &now, &hours_from, &cutoff],
            )
            .await?
        }
    };
    let mut points = rows
        .iter()
        .map(Point::read)
        .collect::<Result<Vec<_>, _>>()
        .map_err(DbError::from)?;
    if window.hourly {
        // Minutes of the last hours, summed into their hours.
        let mut by_hour: std::collections::BTreeMap<(Uuid, i64), Point> = Default::default();
        for (id, p) in points {
            let hour = p.at.timestamp() - p.at.timestamp().rem_euclid(3_600);
            let entry = by_hour.entry((id, hour)).or_insert_with(|| Point {
                at: Utc.timestamp_opt(hour, 0).single().unwrap_or_default(),
                ..Point::default()
            });
            entry.add(&p);
        }
        points = by_hour.into_iter().map(|((id, _), p)| (id, p)).collect();
    }
    points.sort_by_key(|(id, p)| (*id, p.at));
    Ok(points)
}
