//! Monthly range partitions, made ahead of time.
//!
//! Every table of the schema that is `PARTITION BY RANGE` on one time column
//! (`timestamptz`, `timestamp` or `date`) is found in the catalog, so a
//! migration only declares the parent and its `DEFAULT` partition; this
//! module keeps a partition per month, named `<parent>_pYYYYMM`, from last
//! month to `horizon_months` ahead. An insert outside them lands in
//! `<parent>_default` instead of failing; the report says how many rows sit
//! there, and when the month's partition is made they are moved into it (an
//! attach would otherwise fail on them).
//!
//! Retention: a row in `tenantry_partition_retention` makes old partitions
//! (those ending more than `keep_months` months before this month) detached
//! and dropped.
//!
//! Runs as the schema owner under an advisory lock, so several servers (and
//! `migrate`) never race to make the same partition.

use anyhow::Context as _;
use chrono::{Datelike as _, NaiveDate, Utc};

use crate::Db;

/// Held while maintaining partitions ("tenantrp").
const PARTITION_LOCK: i64 = 0x7465_6e61_6e74_7270;

/// What one pass did, per partitioned table.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub tables: Vec<TableReport>,
}

#[derive(Debug, Default, Clone)]
pub struct TableReport {
    pub parent: String,
    /// Partitions made in this pass.
    pub created: Vec<String>,
    /// Partitions dropped by retention in this pass.
    pub dropped: Vec<String>,
    /// Rows moved out of the default partition into new partitions.
    pub moved_rows: u64,
    /// Rows left in the default partition (outside every partition made):
    /// a sign of bad timestamps or a horizon too short.
    pub default_rows: i64,
}

impl Report {
    pub fn table(&self, parent: &str) -> Option<&TableReport> {
        self.tables.iter().find(|t| t.parent == parent)
    }
}

/// A first-of-the-month date, `offset` months from `from`'s month.
fn month_start(from: NaiveDate, offset: i32) -> NaiveDate {
    let months = from.year() * 12 + from.month0() as i32 + offset;
    NaiveDate::from_ymd_opt(months.div_euclid(12), months.rem_euclid(12) as u32 + 1, 1)
        .expect("the first of a month is a valid date")
}

/// The partition name for the month starting at `start`.
pub fn partition_name(parent: &str, start: NaiveDate) -> String {
    format!("{parent}_p{:04}{:02}", start.year(), start.month())
}

/// Makes the partitions of every range-partitioned table from last month to
/// `horizon_months` ahead, moves stray default-partition rows, applies
/// retention, and reports.
pub async fn maintain(db: &Db, horizon_months: u32) -> anyhow::Result<Report> {
    let mut conn = db
        .owner_connection()
        .await
        .context("Failed to get a connection for partition maintenance")?;
    conn.execute("SELECT pg_advisory_lock($1)", &[&PARTITION_LOCK])
        .await
        .context("Failed to take the partition lock")?;
    let result = maintain_locked(&mut conn, horizon_months).await;
    conn.execute("SELECT pg_advisory_unlock($1)", &[&PARTITION_LOCK])
        .await
        .context("Failed to release the partition lock")?;
    result
}

struct Parent {
    name: String,
    column: String,
    /// `timestamptz`, `timestamp` or `date`: the bounds' literal type.
    kind: String,
    keep_months: Option<i32>,
}

async fn maintain_locked(
    conn: &mut deadpool_postgres::Object,
    horizon_months: u32,
) -> anyhow::Result<Report> {
    let parents = parents(conn).await?;
    let this_month = month_start(Utc::now().date_naive(), 0);
    let horizon = i32::try_from(horizon_months).unwrap_or(i32::MAX / 24);
    let mut report = Report::default();
    for parent in parents {
        let mut table = TableReport {
            parent: parent.name.clone(),
            ..TableReport::default()
        };
        for offset in -1..=horizon {
            let start = month_start(this_month, offset);
            let end = month_start(start, 1);
            if let Some(moved) = ensure_partition(conn, &parent, start, end).await? {
                table.created.push(partition_name(&parent.name, start));
                table.moved_rows += moved;
            }
        }
        if let Some(keep) = parent.keep_months {
            table.dropped = apply_retention(conn, &parent, month_start(this_month, -keep)).await?;
        }
        table.default_rows = default_rows(conn, &parent).await?;
        if table.default_rows > 0 {
            tracing::warn!(
                table = %parent.name,
                rows = table.default_rows,
                "rows outside every partition sit in the default partition"
            );
        }
        if !table.created.is_empty() || !table.dropped.is_empty() {
            tracing::info!(
                table = %parent.name,
                created = table.created.len(),
                dropped = table.dropped.len(),
                moved = table.moved_rows,
                "partitions maintained"
            );
        }
        report.tables.push(table);
    }
    Ok(report)
}

/// The range-partitioned tables of the current schema keyed by one time
/// column, with their retention.
async fn parents(conn: &deadpool_postgres::Object) -> anyhow::Result<Vec<Parent>> {
    let rows = conn
        .query(
            "SELECT c.relname::text, a.attname::text, format_type(a.atttypid, NULL),
                    (SELECT r.keep_months FROM tenantry_partition_retention r
                      WHERE r.parent = c.relname::text)
               FROM pg_partitioned_table p
               JOIN pg_class c ON c.oid = p.partrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
               JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = p.partattrs[0]
              WHERE n.nspname = current_schema()
                AND p.partstrat = 'r' AND p.partnatts = 1
                AND NOT c.relispartition
                AND a.atttypid IN ('timestamptz'::regtype, 'timestamp'::regtype, 'date'::regtype)
              ORDER BY 1",
            &[],
        )
        .await
        .context("Failed to list partitioned tables")?;
    rows.iter()
        .map(|r| {
            Ok(Parent {
                name: r.try_get(0)?,
                column: r.try_get(1)?,
                kind: match r.try_get::<_, String>(2)?.as_str() {
                    "timestamp with time zone" => "timestamptz".to_owned(),
                    "timestamp without time zone" => "timestamp".to_owned(),
                    other => other.to_owned(),
                },
                keep_months: r.try_get(3)?,
            })
        })
        .collect::<Result<_, tokio_postgres::Error>>()
        .context("Failed to read the partitioned tables")
}

/// The bound literal for a month start: midnight UTC for `timestamptz`.
fn bound(parent: &Parent, date: NaiveDate) -> String {
    match parent.kind.as_str() {
        "timestamptz" => format!("'{date} 00:00:00+00'"),
        "timestamp" => format!("'{date} 00:00:00'"),
        _ => format!("'{date}'"),
    }
}

/// Makes the partition for `[start, end)` unless it exists. Returns `None`
/// if it existed, else how many rows were moved into it from the default
/// partition.
async fn ensure_partition(
    conn: &mut deadpool_postgres::Object,
    parent: &Parent,
    start: NaiveDate,
    end: NaiveDate,
) -> anyhow::Result<Option<u64>> {
    let name = partition_name(&parent.name, start);
    let exists: bool = conn
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&quote(&name)])
        .await
        .context("Failed to look up a partition")?
        .try_get(0)
        .context("Failed to read whether a partition exists")?;
    if exists {
        return Ok(None);
    }
    let (from, to) = (bound(parent, start), bound(parent, end));
    let (p, col) = (quote(&parent.name), quote(&parent.column));
    let default = default_partition(conn, parent).await?;
    let tx = conn
        .transaction()
        .await
        .context("Failed to begin making a partition")?;
    let strays = match &default {
        Some(d) => tx
            .query_one(
                &format!(
                    "SELECT EXISTS (SELECT 1 FROM {d} WHERE {col} >= {from} AND {col} < {to})"
                ),
                &[],
            )
            .await
            .context("Failed to look for rows in the default partition")?
            .try_get::<_, bool>(0)
            .context("Failed to read whether the default partition has rows")?,
        None => false,
    };
    let mut moved = 0;
    let part = quote(&name);
    if let (true, Some(d)) = (strays, &default) {
        // The default partition holds rows of this month: attaching a new
        // partition would fail on them, so make the table, move them, attach.
        let columns = insertable_columns(&tx, &parent.name).await?;
        tx.batch_execute(&format!(
            "CREATE TABLE {part} (LIKE {p} INCLUDING DEFAULTS INCLUDING CONSTRAINTS
                 INCLUDING GENERATED INCLUDING STORAGE)"
        ))
        .await
        .with_context(|| format!("Failed to create {name}"))?;
        moved = tx
            .execute(
                &format!(
                    "WITH moved AS (DELETE FROM {d} WHERE {col} >= {from} AND {col} < {to}
                                    RETURNING {columns})
                     INSERT INTO {part} ({columns}) SELECT {columns} FROM moved"
                ),
                &[],
            )
            .await
            .with_context(|| format!("Failed to move rows into {name}"))?;
        tx.batch_execute(&format!(
            "ALTER TABLE {p} ATTACH PARTITION {part} FOR VALUES FROM ({from}) TO ({to})"
        ))
        .await
        .with_context(|| format!("Failed to attach {name}"))?;
    } else {
        tx.batch_execute(&format!(
            "CREATE TABLE {part} PARTITION OF {p} FOR VALUES FROM ({from}) TO ({to})"
        ))
        .await
        .with_context(|| format!("Failed to create {name}"))?;
    }
    tx.commit()
        .await
        .with_context(|| format!("Failed to commit {name}"))?;
    Ok(Some(moved))
}

/// The parent's `DEFAULT` partition, quoted, if it has one.
async fn default_partition(
    conn: &deadpool_postgres::Object,
    parent: &Parent,
) -> anyhow::Result<Option<String>> {
    let row = conn
        .query_opt(
            "SELECT c.relname::text
               FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
              WHERE i.inhparent = to_regclass($1)
                AND pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT'",
            &[&quote(&parent.name)],
        )
        .await
        .context("Failed to find the default partition")?;
    row.map(|r| r.try_get::<_, String>(0).map(|name| quote(&name)))
        .transpose()
        .context("Failed to read the default partition's name")
}

/// The parent's columns a row copy may write (not generated, not dropped).
async fn insertable_columns(
    tx: &deadpool_postgres::Transaction<'_>,
    parent: &str,
) -> anyhow::Result<String> {
    let rows = tx
        .query(
            "SELECT attname::text FROM pg_attribute
              WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped
                AND attgenerated = ''
              ORDER BY attnum",
            &[&quote(parent)],
        )
        .await
        .context("Failed to list a table's columns")?;
    Ok(rows
        .iter()
        .map(|r| r.try_get::<_, String>(0).map(|name| quote(&name)))
        .collect::<Result<Vec<_>, _>>()
        .context("Failed to read a table's columns")?
        .join(", "))
}

/// Detaches and drops the partitions that end on or before `keep_from`.
async fn apply_retention(
    conn: &mut deadpool_postgres::Object,
    parent: &Parent,
    keep_from: NaiveDate,
) -> anyhow::Result<Vec<String>> {
    let rows = conn
        .query(
            "SELECT c.relname::text
               FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
              WHERE i.inhparent = to_regclass($1)
                AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'",
            &[&quote(&parent.name)],
        )
        .await
        .context("Failed to list partitions")?;
    let mut dropped = Vec::new();
    for row in rows {
        let name: String = row.try_get(0)?;
        // Only partitions this module made (and so whose month the name
        // tells) are dropped.
        let Some(start) = month_of(&parent.name, &name) else {
            continue;
        };
        if month_start(start, 1) > keep_from {
            continue;
        }
        let tx = conn
            .transaction()
            .await
            .context("Failed to begin dropping a partition")?;
        tx.batch_execute(&format!(
            "ALTER TABLE {} DETACH PARTITION {part}; DROP TABLE {part}",
            quote(&parent.name),
            part = quote(&name)
        ))
        .await
        .with_context(|| format!("Failed to drop {name}"))?;
        tx.commit()
            .await
            .with_context(|| format!("Failed to commit dropping {name}"))?;
        dropped.push(name);
    }
    dropped.sort();
    Ok(dropped)
}

/// The month a partition named `<parent>_pYYYYMM` holds.
fn month_of(parent: &str, name: &str) -> Option<NaiveDate> {
    let digits = name.strip_prefix(parent)?.strip_prefix("_p")?;
    if digits.len() != 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let year = digits[..4].parse().ok()?;
    let month = digits[4..].parse().ok()?;
    NaiveDate::from_ymd_opt(year, month, 1)
}

async fn default_rows(conn: &deadpool_postgres::Object, parent: &Parent) -> anyhow::Result<i64> {
    let Some(d) = default_partition(conn, parent).await? else {
        return Ok(0);
    };
    conn.query_one(&format!("SELECT count(*) FROM {d}"), &[])
        .await
        .context("Failed to count the default partition's rows")?
        .try_get(0)
        .context("Failed to read the default partition's row count")
}

/// An identifier, quoted for SQL.
fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("valid date")
    }

    #[test]
    fn month_start_steps_across_years() {
        assert_eq!(month_start(date(2026, 11, 24), 0), date(2026, 11, 1));
        assert_eq!(month_start(date(2026, 11, 24), 2), date(2027, 1, 1));
        assert_eq!(month_start(date(2026, 1, 31), -1), date(2025, 12, 1));
        assert_eq!(month_start(date(2026, 1, 1), -13), date(2024, 12, 1));
    }

    #[test]
    fn a_partition_name_tells_its_month() {
        let name = partition_name("audit_log", date(2027, 3, 1));
        assert_eq!(name, "audit_log_p202703");
        assert_eq!(month_of("audit_log", &name), Some(date(2027, 3, 1)));
        assert_eq!(month_of("audit_log", "audit_log_default"), None);
        assert_eq!(month_of("audit_log", "audit_log_p2027031"), None);
        assert_eq!(month_of("audit", "audit_log_p202703"), None);
    }
}
