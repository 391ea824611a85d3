//! The registry of exports (`tenant_exports`): one row per archive, made on
//! request or on the tenant's backup schedule. Platform work: these run in
//! the platform context (the table is global; see V70 for why).

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::json::Jsonb;
use crate::{Db, DbError, Keyset, TenantContext, Tx};

const TIMEOUT_MS: u32 = 10_000;

/// An export as registered.
#[derive(Debug, Clone, PartialEq)]
pub struct Export {
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// `manual` or `scheduled`.
    pub kind: String,
    /// `running`, `ready` or `failed`.
    pub status: String,
    pub job_id: Option<Uuid>,
    /// The archive's file name in the export directory.
    pub file: Option<String>,
    pub bytes: Option<i64>,
    pub manifest: Option<Value>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl Export {
    pub fn keyset(&self) -> Keyset {
        Keyset {
            created_at: self.created_at,
            id: self.id,
        }
    }

    fn from_row(r: &Row) -> Result<Self, DbError> {
        Ok(Self {
            id: r.try_get("id")?,
            tenant_id: r.try_get("of_tenant")?,
            kind: r.try_get("kind")?,
            status: r.try_get("status")?,
            job_id: r.try_get("job_id")?,
            file: r.try_get("file")?,
            bytes: r.try_get("bytes")?,
            manifest: r.try_get::<_, Option<Jsonb>>("manifest")?.map(|j| j.0),
            error: r.try_get("error")?,
            created_at: r.try_get("created_at")?,
            finished_at: r.try_get("finished_at")?,
        })
    }
}

const COLUMNS: &str =
    "id, of_tenant, kind, status, job_id, file, bytes, manifest, error, created_at, finished_at";

/// The file an export's archive is written to, in the export directory.
pub fn file_name(id: Uuid) -> String {
    format!("{id}.tar.gz")
}

/// Registers a running export of `tenant` in `tx` (with the job that makes
/// it, enqueued in the same transaction).
pub async fn create(
    tx: &mut Tx,
    id: Uuid,
    tenant: Uuid,
    kind: &str,
    job_id: Uuid,
) -> Result<Export, DbError> {
    let row = tx
        .query_one(
            &format!(
                "INSERT INTO tenant_exports (id, of_tenant, kind, job_id, file)
                 VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
            ),
            &[&id, &tenant, &kind, &job_id, &file_name(id)],
        )
        .await?;
    Export::from_row(&row)
}

pub async fn get(db: &Db, id: Uuid) -> Result<Option<Export>, DbError> {
    let tx = db.begin(&TenantContext::platform(TIMEOUT_MS)).await?;
    let rows = tx
        .query_and_commit(
            &format!("SELECT {COLUMNS} FROM tenant_exports WHERE id = $1"),
            &[&id],
        )
        .await?;
    rows.first().map(Export::from_row).transpose()
}

/// Marks an export ready with what it made.
pub async fn finish(db: &Db, id: Uuid, bytes: i64, manifest: &Value) -> Result<(), DbError> {
    let tx = db.begin(&TenantContext::platform(TIMEOUT_MS)).await?;
    tx.query_and_commit(
        "UPDATE tenant_exports SET status = 'ready', bytes = $2, manifest = $3, error = NULL,
                finished_at = now()
         WHERE id = $1",
        &[&id, &bytes, manifest],
    )
    .await?;
    Ok(())
}

/// Marks an export failed.
pub async fn fail(db: &Db, id: Uuid, error: &str) -> Result<(), DbError> {
    let tx = db.begin(&TenantContext::platform(TIMEOUT_MS)).await?;
    tx.query_and_commit(
        "UPDATE tenant_exports SET status = 'failed', error = $2, finished_at = now()
         WHERE id = $1",
        &[&id, &error],
    )
    .await?;
    Ok(())
}

/// A tenant's exports newest first, after `after`.
pub async fn list(
    db: &Db,
    tenant: Uuid,
    after: Option<Keyset>,
    limit: i64,
) -> Result<Vec<Export>, DbError> {
    let tx = db.begin(&TenantContext::platform(TIMEOUT_MS)).await?;
    let (at, id) = after.map_or((None, None), |k| (Some(k.created_at), Some(k.id)));
    let rows = tx
        .query_and_commit(
            &format!(
                "SELECT {COLUMNS} FROM tenant_exports
                 WHERE of_tenant = $1
                   AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4))
                 ORDER BY created_at DESC, id DESC LIMIT $2"
            ),
            &[&tenant, &limit, &at, &id],
        )
        .await?;
    rows.iter().map(Export::from_row).collect()
}

/// Active tenants of `tier` whose last scheduled backup (running or ready)
/// is older than `every_hours`, or that have none: at most `limit`, each
/// with the id of its latest scheduled backup (of any status). Only tenants
/// of the cell `main`: an export reads the control database, so a tenant of
/// another cell would be exported empty (its exports answer 409 for now).
pub async fn due(
    db: &Db,
    tier: &str,
    every_hours: i32,
    limit: i64,
) -> Result<Vec<(Uuid, Option<Uuid>)>, DbError> {
    let tx = db.begin(&TenantContext::platform(TIMEOUT_MS)).await?;
    let rows = tx
        .query_and_commit(
            "SELECT t.id,
                    (SELECT e.id FROM tenant_exports e
                     WHERE e.of_tenant = t.id AND e.kind = 'scheduled'
                     ORDER BY e.created_at DESC, e.id DESC LIMIT 1)
             FROM tenants t
             WHERE t.tier = $1 AND t.status = 'active' AND t.cell = 'main'
               AND NOT EXISTS (
                   SELECT 1 FROM tenant_exports e
                   WHERE e.of_tenant = t.id AND e.kind = 'scheduled' AND e.status <> 'failed'
                     AND e.created_at > now() - $2::int * interval '1 hour')
             ORDER BY t.id LIMIT $3",
            &[&tier, &every_hours, &limit],
        )
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

/// Drops a tenant's scheduled backups beyond the newest `keep` ready ones
/// (and failed scheduled ones older than those); returns the files to
/// delete.
pub async fn prune(db: &Db, tenant: Uuid, keep: i64) -> Result<Vec<String>, DbError> {
    let tx = db.begin(&TenantContext::platform(TIMEOUT_MS)).await?;
    let rows = tx
        .query_and_commit(
            "WITH kept AS (
                 SELECT id FROM tenant_exports
                 WHERE of_tenant = $1 AND kind = 'scheduled' AND status = 'ready'
                 ORDER BY created_at DESC, id DESC LIMIT $2
             ),
             oldest_kept AS (
                 SELECT min(created_at) AS at FROM tenant_exports WHERE id IN (SELECT id FROM kept)
             )
             DELETE FROM tenant_exports e
             WHERE e.of_tenant = $1 AND e.kind = 'scheduled' AND e.status <> 'running'
               AND e.id NOT IN (SELECT id FROM kept)
               AND (e.status = 'ready' OR e.created_at < (SELECT at FROM oldest_kept))
             RETURNING e.file",
            &[&tenant, &keep],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| r.try_get::<_, Option<String>>(0).ok().flatten())
        .collect())
}
