//! The storage pass: each tenant's rows per tenant table and their bytes,
//! recomputed by the observer every `storage_every` (an hour by default),
//! never per request. The tables come from the catalog
//! (`tenantry_tenant_tables()`), so a table added later is counted too.
//!
//! Tenants are taken 500 at a time; for each batch one statement counts the
//! batch's rows in every tenant table (each count walks the table's
//! `tenant_id`-leading index) and writes `tenant_storage`, inside a
//! transaction whose tenant context is exactly the batch (row-level security
//! holds as for any tenant work). Bytes are the rows' stored size
//! (`pg_column_size`), without indexes.

use anyhow::Context as _;
use tenantry_db::{Db, TenantContext};
use uuid::Uuid;

const BATCH: usize = 500;
const STATEMENT_TIMEOUT_MS: u32 = 120_000;

/// Recomputes every live tenant's storage. Returns the tenants counted.
pub async fn compute(db: &Db) -> anyhow::Result<usize> {
    let (tables, tenants) = {
        let conn = db
            .owner_connection()
            .await
            .context("Failed to get a connection for the storage pass")?;
        let tables = tenantry_db::catalog::tenant_tables(&conn)
            .await
            .context("Failed to list the tenant tables")?;
        let tenants: Vec<Uuid> = conn
            .query(
                "SELECT id FROM tenants WHERE status <> 'deleted' ORDER BY id",
                &[],
            )
            .await
            .context("Failed to list tenants")?
            .iter()
            .map(|r| r.get(0))
            .collect();
        (tables, tenants)
    };
    let tables: Vec<String> = tables
        .into_iter()
        .filter(|t| t != "tenant_storage")
        .collect();
    if tables.is_empty() {
        return Ok(0);
    }
    let counts = tables
        .iter()
        .map(|t| {
            // `t` is regclass output: already quoted as SQL needs it.
            let name = t.trim_matches('"').replace('\'', "''");
            format!(
                "SELECT '{name}'::text AS tbl, x.tenant_id, count(*) AS n,
                        sum(pg_column_size(x.*))::bigint AS bytes
                   FROM {t} x WHERE x.tenant_id = ANY($1) GROUP BY x.tenant_id"
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let sql = format!(
        "WITH c AS ({counts})
         INSERT INTO tenant_storage (tenant_id, bytes, rows, computed_at)
         SELECT id, coalesce(sum(c.bytes), 0)::bigint,
                coalesce(jsonb_object_agg(c.tbl, c.n) FILTER (WHERE c.tbl IS NOT NULL), '{{}}'),
                now()
           FROM unnest($1::uuid[]) AS id LEFT JOIN c ON c.tenant_id = id
          GROUP BY id
         ON CONFLICT (tenant_id) DO UPDATE SET
             bytes = EXCLUDED.bytes, rows = EXCLUDED.rows, computed_at = EXCLUDED.computed_at"
    );
    for batch in tenants.chunks(BATCH) {
        let ctx = TenantContext {
            tenant_ids: batch.to_vec(),
            user_id: None,
            statement_timeout_ms: STATEMENT_TIMEOUT_MS,
        };
        let mut tx = db
            .begin(&ctx)
            .await
            .context("Failed to begin a storage batch")?;
        let ids = batch.to_vec();
        tx.execute(&sql, &[&ids])
            .await
            .context("Failed to count a batch's storage")?;
        tx.commit()
            .await
            .context("Failed to commit a storage batch")?;
    }
    Ok(tenants.len())
}

/// A tenant's storage as last computed: bytes, rows by table, and when.
pub async fn of(
    db: &Db,
    tenant: Uuid,
) -> Result<Option<(i64, serde_json::Value, chrono::DateTime<chrono::Utc>)>, tenantry_db::DbError> {
    let mut tx = db.begin(&TenantContext::tenant(tenant, 5_000)).await?;
    let row = tx
        .query_opt(
            "SELECT bytes, rows, computed_at FROM tenant_storage WHERE tenant_id = $1",
            &[&tenant],
        )
        .await?;
    Ok(row.map(|r| (r.get(0), r.get(1), r.get(2))))
}
