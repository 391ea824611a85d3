//! The tenant registry's table. Global: not behind row-level security, since
//! resolving a request's tenant happens before any tenant context exists.

use chrono::{DateTime, Utc};
use serde_json::Value;
use tenantry_core::{JoinPolicy, LimitOverrides, TenantStatus};
use tokio_postgres::Row;
use uuid::Uuid;

use crate::json::Jsonb;
use crate::{Db, DbError, TenantContext};

/// A tenant as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Tenant {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    pub domain: Option<String>,
    pub tier: String,
    pub status: TenantStatus,
    pub join_policy: JoinPolicy,
    pub owner_user_id: Uuid,
    pub settings: Value,
    pub features: Value,
    pub limits: LimitOverrides,
    /// The API version (`YYYY-MM-DD`) its requests get when they name none.
    /// (Absent from exports made before versions: the first version.)
    #[serde(default = "first_api_version")]
    pub api_version: String,
    /// The cell (database) holding the tenant's rows: `main` (the control
    /// database) unless placed or moved elsewhere (V140). Part of the cached
    /// record, so a request finds its cell without asking.
    #[serde(default = "main_cell")]
    pub cell: String,
    pub member_count: i64,
    pub post_count: i64,
    pub storage_bytes: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The version tenants from before API versions are pinned to (V100).
fn first_api_version() -> String {
    "2026-11-01".to_owned()
}

/// The cell every database has: the control database itself.
pub const MAIN_CELL: &str = "main";

fn main_cell() -> String {
    MAIN_CELL.to_owned()
}

const COLUMNS: &str = "id, slug, name, domain, tier, status, join_policy, owner_user_id, \
                       settings, features, limits, api_version, cell, member_count, post_count, \
                       storage_bytes, created_at, updated_at";

impl Tenant {
    fn from_row(row: &Row) -> Result<Self, DbError> {
        let status: &str = row.try_get("status")?;
        let join_policy: &str = row.try_get("join_policy")?;
        let limits = row.try_get::<_, Jsonb>("limits")?.0;
        Ok(Self {
            id: row.try_get("id")?,
            slug: row.try_get("slug")?,
            name: row.try_get("name")?,
            domain: row.try_get("domain")?,
            tier: row.try_get("tier")?,
            status: TenantStatus::parse(status).map_err(|e| DbError::Other(e.into()))?,
            join_policy: JoinPolicy::parse(join_policy).map_err(|e| DbError::Other(e.into()))?,
            owner_user_id: row.try_get("owner_user_id")?,
            settings: row.try_get::<_, Jsonb>("settings")?.0,
            features: row.try_get::<_, Jsonb>("features")?.0,
            limits: serde_json::from_value(limits).map_err(|e| DbError::Other(e.into()))?,
            api_version: row.try_get("api_version")?,
            cell: row.try_get("cell")?,
            member_count: row.try_get("member_count")?,
            post_count: row.try_get("post_count")?,
            storage_bytes: row.try_get("storage_bytes")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

/// What a new tenant is made of. The slug, tier and domain are already valid.
#[derive(Debug, Clone)]
pub struct NewTenant {
    pub slug: String,
    pub name: String,
    pub tier: String,
    pub domain: Option<String>,
    pub owner_user_id: Uuid,
    pub settings: Value,
    pub features: Value,
    pub join_policy: JoinPolicy,
    pub api_version: String,
}

/// Creates a tenant, provisions its owner and makes them its first member, in
/// one statement and one round trip.
pub async fn create(db: &Db, new: &NewTenant, timeout_ms: u32) -> Result<Tenant, DbError> {
    let id = crate::new_id();
    let tx = db.begin(&TenantContext::tenant(id, timeout_ms)).await?;
    let sql = format!(
        "WITH t AS (
             INSERT INTO tenants (id, slug, name, tier, domain, owner_user_id, settings,
                                  features, join_policy, api_version, member_count)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 1)
             RETURNING {COLUMNS}
         ),
         u AS (INSERT INTO users (id) VALUES ($6) ON CONFLICT (id) DO NOTHING),
         m AS (INSERT INTO memberships (tenant_id, user_id, role) SELECT id, $6, 'owner' FROM t)
         SELECT {COLUMNS} FROM t"
    );
    let rows = tx
        .query_and_commit(
            &sql,
            &[
                &id,
                &new.slug,
                &new.name,
                &new.tier,
                &new.domain,
                &new.owner_user_id,
                &new.settings,
                &new.features,
                &new.join_policy.as_str(),
                &new.api_version,
            ],
        )
        .await?;
    let row = rows
        .first()
        .ok_or_else(|| DbError::Other(anyhow::anyhow!("tenant insert returned no row")))?;
    Tenant::from_row(row)
}

/// The tenant `id` (not deleted) as `conn`'s transaction sees it: for work
/// that reads the tenant's record in its own snapshot (an export).
pub async fn find_on(conn: &tokio_postgres::Client, id: Uuid) -> Result<Option<Tenant>, DbError> {
    let sql = format!("SELECT {COLUMNS} FROM tenants WHERE id = $1 AND status <> 'deleted'");
    let rows = conn.query(&sql, &[&id]).await?;
    rows.first().map(Tenant::from_row).transpose()
}

/// Which column identifies the tenant to look up.
#[derive(Debug, Clone, Copy)]
pub enum Lookup<'a> {
    Id(Uuid),
    Slug(&'a str),
    Domain(&'a str),
}

/// Finds a tenant that is not deleted.
pub async fn find(db: &Db, by: Lookup<'_>, timeout_ms: u32) -> Result<Option<Tenant>, DbError> {
    let tx = db.begin(&TenantContext::platform(timeout_ms)).await?;
    let (column, value): (&str, &(dyn tokio_postgres::types::ToSql + Sync)) = match &by {
        Lookup::Id(id) => ("id", id),
        Lookup::Slug(slug) => ("slug", slug),
        Lookup::Domain(domain) => ("domain", domain),
    };
    let sql = format!("SELECT {COLUMNS} FROM tenants WHERE {column} = $1 AND status <> 'deleted'");
    let rows = tx.query_and_commit(&sql, &[value]).await?;
    rows.first().map(Tenant::from_row).transpose()
}

/// The tenants to warm a cache with: active ones, tiers in `tier_order`
/// first (premium first; tiers not named come last), the busiest by recent
/// traffic first within a tier. One statement.
pub async fn warm_candidates(
    db: &Db,
    tier_order: &[String],
    limit: i64,
    timeout_ms: u32,
) -> Result<Vec<Tenant>, DbError> {
    let tx = db.begin(&TenantContext::platform(timeout_ms)).await?;
    let sql = format!(
        "SELECT {COLUMNS} FROM tenants WHERE status = 'active'
         ORDER BY array_position($1::text[], tier) NULLS LAST, recent_requests DESC, id
         LIMIT $2"
    );
    let rows = tx.query_and_commit(&sql, &[&tier_order, &limit]).await?;
    rows.iter().map(Tenant::from_row).collect()
}

/// The tenants with these ids (not deleted), in one statement.
pub async fn find_many(db: &Db, ids: &[Uuid], timeout_ms: u32) -> Result<Vec<Tenant>, DbError> {
    let tx = db.begin(&TenantContext::platform(timeout_ms)).await?;
    let sql = format!("SELECT {COLUMNS} FROM tenants WHERE id = ANY($1) AND status <> 'deleted'");
    let rows = tx.query_and_commit(&sql, &[&ids]).await?;
    rows.iter().map(Tenant::from_row).collect()
}

/// Adds this node's requests since the last flush to each tenant's recent
/// traffic (after halving what was there), in one statement.
pub async fn record_traffic(
    db: &Db,
    ids: &[Uuid],
    requests: &[i64],
    timeout_ms: u32,
) -> Result<u64, DbError> {
    if ids.is_empty() {
        return Ok(0);
    }
    let mut tx = db.begin(&TenantContext::platform(timeout_ms)).await?;
    let n = tx
        .execute(
            "UPDATE tenants t SET recent_requests = t.recent_requests / 2 + d.n
             FROM unnest($1::uuid[], $2::bigint[]) AS d(id, n)
             WHERE t.id = d.id",
            &[&ids, &requests],
        )
        .await?;
    tx.commit().await?;
    Ok(n)
}

/// Tenants in id order (creation order, ids being UUIDv7), after `after`.
pub async fn list(
    db: &Db,
    after: Option<Uuid>,
    limit: i64,
    timeout_ms: u32,
) -> Result<Vec<Tenant>, DbError> {
    let tx = db.begin(&TenantContext::platform(timeout_ms)).await?;
    let sql = format!(
        "SELECT {COLUMNS} FROM tenants
         WHERE status <> 'deleted' AND ($1::uuid IS NULL OR id > $1)
         ORDER BY id LIMIT $2"
    );
    let rows = tx.query_and_commit(&sql, &[&after, &limit]).await?;
    rows.iter().map(Tenant::from_row).collect()
}

/// A change to a tenant. `None` leaves a field as it is; `domain:
/// Some(None)` removes the custom domain. `settings`, `features` and `limits`
/// are merged one level deep: each top-level key of the patch replaces the
/// stored one, and a key set to null is removed. Everything else is kept
/// exactly as it was.
#[derive(Debug, Clone, Default)]
pub struct TenantPatch {
    pub name: Option<String>,
    pub tier: Option<String>,
    pub status: Option<TenantStatus>,
    pub domain: Option<Option<String>>,
    pub join_policy: Option<JoinPolicy>,
    pub settings: Option<Value>,
    pub features: Option<Value>,
    pub limits: Option<Value>,
    pub api_version: Option<String>,
}

impl TenantPatch {
    /// What the change set, for the tenant's audit log.
    fn audit_details(&self) -> Value {
        let mut d = serde_json::Map::new();
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                d.insert(k.to_owned(), v);
            }
        };
        put("name", self.name.clone().map(Value::from));
        put("tier", self.tier.clone().map(Value::from));
        put("status", self.status.map(|s| Value::from(s.as_str())));
        put("domain", self.domain.clone().map(Value::from));
        put(
            "join_policy",
            self.join_policy.map(|j| Value::from(j.as_str())),
        );
        put("settings", self.settings.clone());
        put("features", self.features.clone());
        put("limits", self.limits.clone());
        put("api_version", self.api_version.clone().map(Value::from));
        Value::Object(d)
    }
}

pub async fn update(
    db: &Db,
    id: Uuid,
    patch: &TenantPatch,
    timeout_ms: u32,
) -> Result<Option<Tenant>, DbError> {
    update_audited(db, id, patch, timeout_ms, true).await
}

/// [`update`], with the audit entry written in the same statement
/// (`audit`), or not: a tenant of another cell keeps its audit log in its
/// cell, where [`mirror_update`] writes the entry.
pub async fn update_audited(
    db: &Db,
    id: Uuid,
    patch: &TenantPatch,
    timeout_ms: u32,
    audit: bool,
) -> Result<Option<Tenant>, DbError> {
    // In the tenant's context: the audit entry is a row of the tenant's log,
    // written in the same statement as the change.
    let tx = db.begin(&TenantContext::tenant(id, timeout_ms)).await?;
    let sql = format!(
        "WITH t AS (
         UPDATE tenants SET
             name = COALESCE($2, name),
             tier = COALESCE($3, tier),
             -- An import in progress ends only by its own job.
             status = CASE WHEN status = 'importing' THEN status ELSE COALESCE($4, status) END,
             domain = CASE WHEN $5 THEN $6 ELSE domain END,
             join_policy = COALESCE($7, join_policy),
             settings = COALESCE(tenantry_merge_patch(settings, $8), settings),
             features = COALESCE(tenantry_merge_patch(features, $9), features),
             limits = COALESCE(tenantry_merge_patch(limits, $10), limits),
             api_version = COALESCE($13, api_version),
             updated_at = now()
         WHERE id = $1 AND status <> 'deleted'
         RETURNING {COLUMNS}
         ),
         audited AS (
             INSERT INTO audit_log (tenant_id, created_at, id, actor_id, action, target, details)
             SELECT id, now(), $11, NULL, 'tenant.update', id::text, $12 FROM t
             WHERE $14
         )
         SELECT {COLUMNS} FROM t"
    );
    let details = patch.audit_details();
    let domain_set = patch.domain.is_some();
    let domain = patch.domain.clone().flatten();
    let rows = tx
        .query_and_commit(
            &sql,
            &[
                &id,
                &patch.name,
                &patch.tier,
                &patch.status.map(TenantStatus::as_str),
                &domain_set,
                &domain,
                &patch.join_policy.map(JoinPolicy::as_str),
                &patch.settings,
                &patch.features,
                &patch.limits,
                &crate::new_id(),
                &details,
                &patch.api_version,
                &audit,
            ],
        )
        .await?;
    rows.first().map(Tenant::from_row).transpose()
}

/// Marks a tenant deleted (it answers 404 from now on) and frees its slug and
/// domain. Its data is removed afterwards by [`purge`]. Returns false if there
/// was no such tenant.
pub async fn mark_deleted(db: &Db, id: Uuid, timeout_ms: u32) -> Result<bool, DbError> {
    let tx = db.begin(&TenantContext::platform(timeout_ms)).await?;
    let rows = tx
        .query_and_commit(
            "UPDATE tenants
             SET status = 'deleted', slug = 'deleted-' || id::text, domain = NULL,
                 updated_at = now()
             WHERE id = $1 AND status <> 'deleted'
             RETURNING id",
            &[&id],
        )
        .await?;
    Ok(!rows.is_empty())
}

/// Tenants marked deleted whose data is still to be purged.
pub async fn deleted(db: &Db, timeout_ms: u32) -> Result<Vec<Uuid>, DbError> {
    let tx = db.begin(&TenantContext::platform(timeout_ms)).await?;
    let rows = tx
        .query_and_commit(
            "SELECT id FROM tenants WHERE status = 'deleted' LIMIT 1000",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?)
}

/// Rows deleted per statement while purging: small enough that no statement
/// holds locks or runs long, large enough to finish quickly.
const PURGE_CHUNK: i64 = 5_000;

/// Removes a deleted tenant's data in bounded chunks, then the tenant itself.
/// Safe to run again after a crash: it picks up where it stopped. Runs as
/// the app role in the tenant's own context, so row-level security keeps
/// every statement inside that tenant.
pub async fn purge(db: &Db, id: Uuid, timeout_ms: u32) -> Result<u64, DbError> {
    let ctx = TenantContext::tenant(id, timeout_ms);
    // Every tenant table, read from the catalog so a table added later is
    // purged too; children first, so each chunk's cascades stay small.
    let tables: Vec<String> = {
        let tx = db.begin(&ctx).await?;
        let rows = tx
            .query_and_commit(crate::catalog::TENANT_TABLES, &[])
            .await?;
        rows.iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?
    };
    let mut removed = 0;
    for table in &tables {
        let sql = format!(
            "DELETE FROM {table} WHERE tenant_id = $1 AND ctid = ANY (ARRAY(
                 SELECT ctid FROM {table} WHERE tenant_id = $1 LIMIT $2))"
        );
        loop {
            let mut tx = db.begin(&ctx).await?;
            let n = tx.execute(&sql, &[&id, &PURGE_CHUNK]).await?;
            tx.commit().await?;
            removed += n;
            if n < PURGE_CHUNK as u64 {
                break;
            }
        }
    }
    let tx = db.begin(&ctx).await?;
    tx.query_and_commit(
        "DELETE FROM tenants WHERE id = $1 AND status = 'deleted'",
        &[&id],
    )
    .await?;
    Ok(removed)
}

// ---------------------------------------------------------------------------
// Cells (V140): the registry in the control database, a copy of each
// tenant's row in the cell that holds its data.

/// Creates a tenant placed in `cell` (another database than the control
/// one): its registry row, with the directory entry, in `control`; then its
/// copy, its owner and its first membership in `cell_db`. If the cell
/// refuses, the registry row is removed again, so the directory never names
/// a cell that lacks the tenant.
pub async fn create_in_cell(
    control: &Db,
    cell: &str,
    cell_db: &Db,
    new: &NewTenant,
    timeout_ms: u32,
) -> Result<Tenant, DbError> {
    let id = crate::new_id();
    let tx = control.begin(&TenantContext::platform(timeout_ms)).await?;
    let sql = format!(
        "WITH t AS (
             INSERT INTO tenants (id, slug, name, tier, domain, owner_user_id, settings,
                                  features, join_policy, api_version, member_count, cell)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 1, $11)
             RETURNING {COLUMNS}
         ),
         u AS (INSERT INTO users (id) VALUES ($6) ON CONFLICT (id) DO NOTHING)
         SELECT {COLUMNS} FROM t"
    );
    let rows = tx
        .query_and_commit(
            &sql,
            &[
                &id,
                &new.slug,
                &new.name,
                &new.tier,
                &new.domain,
                &new.owner_user_id,
                &new.settings,
                &new.features,
                &new.join_policy.as_str(),
                &new.api_version,
                &cell,
            ],
        )
        .await?;
    let row = rows
        .first()
        .ok_or_else(|| DbError::Other(anyhow::anyhow!("tenant insert returned no row")))?;
    let tenant = Tenant::from_row(row)?;
    if let Err(e) = copy_into_cell(cell_db, &tenant, timeout_ms).await {
        let tx = control.begin(&TenantContext::platform(timeout_ms)).await?;
        tx.query_and_commit("DELETE FROM tenants WHERE id = $1", &[&id])
            .await?;
        return Err(e);
    }
    Ok(tenant)
}

/// Writes `tenant`'s registry row into a cell's database with its owner as
/// its first member (the owner's user row too, for the foreign keys), in
/// one statement, in the tenant's own context.
async fn copy_into_cell(cell_db: &Db, tenant: &Tenant, timeout_ms: u32) -> Result<(), DbError> {
    let tx = cell_db
        .begin(&TenantContext::tenant(tenant.id, timeout_ms))
        .await?;
    let limits = serde_json::to_value(&tenant.limits).map_err(|e| DbError::Other(e.into()))?;
    tx.query_and_commit(
        "WITH t AS (
             INSERT INTO tenants (id, slug, name, tier, domain, owner_user_id, settings,
                                  features, join_policy, api_version, member_count, cell,
                                  status, limits, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 1, $11, $12, $13, $14, $14)
             RETURNING id
         ),
         u AS (INSERT INTO users (id) VALUES ($6) ON CONFLICT (id) DO NOTHING),
         m AS (INSERT INTO memberships (tenant_id, user_id, role) SELECT id, $6, 'owner' FROM t)
         SELECT id FROM t",
        &[
            &tenant.id,
            &tenant.slug,
            &tenant.name,
            &tenant.tier,
            &tenant.domain,
            &tenant.owner_user_id,
            &tenant.settings,
            &tenant.features,
            &tenant.join_policy.as_str(),
            &tenant.api_version,
            &tenant.cell,
            &tenant.status.as_str(),
            &limits,
            &tenant.created_at,
        ],
    )
    .await?;
    Ok(())
}

/// Brings a cell's copy of `tenant`'s row in step with the registry after
/// an admin change (everything but the counters, which the cell keeps), and
/// writes the change's audit entry into the tenant's log there, in one
/// statement.
pub async fn mirror_update(
    cell_db: &Db,
    tenant: &Tenant,
    patch: &TenantPatch,
    timeout_ms: u32,
) -> Result<(), DbError> {
    let tx = cell_db
        .begin(&TenantContext::tenant(tenant.id, timeout_ms))
        .await?;
    let limits = serde_json::to_value(&tenant.limits).map_err(|e| DbError::Other(e.into()))?;
    tx.query_and_commit(
        "WITH t AS (
             UPDATE tenants SET slug = $2, name = $3, domain = $4, tier = $5, status = $6,
                    join_policy = $7, owner_user_id = $8, settings = $9, features = $10,
                    limits = $11, api_version = $12, updated_at = $13
             WHERE id = $1
             RETURNING id
         ),
         audited AS (
             INSERT INTO audit_log (tenant_id, created_at, id, actor_id, action, target, details)
             SELECT id, now(), $14, NULL, 'tenant.update', id::text, $15 FROM t
         )
         SELECT id FROM t",
        &[
            &tenant.id,
            &tenant.slug,
            &tenant.name,
            &tenant.domain,
            &tenant.tier,
            &tenant.status.as_str(),
            &tenant.join_policy.as_str(),
            &tenant.owner_user_id,
            &tenant.settings,
            &tenant.features,
            &limits,
            &tenant.api_version,
            &tenant.updated_at,
            &crate::new_id(),
            &patch.audit_details(),
        ],
    )
    .await?;
    Ok(())
}

/// Marks a cell's copy of tenant `id` deleted as [`mark_deleted`] marks the
/// registry row (slug and domain freed), so the cell's purge worker removes
/// its rows.
pub async fn mark_copy_deleted(cell_db: &Db, id: Uuid, timeout_ms: u32) -> Result<(), DbError> {
    mark_deleted(cell_db, id, timeout_ms).await.map(|_| ())
}

/// The counters a cell keeps on its copy of tenant `id`'s row (members,
/// posts, bytes): written by the tenant's own transactions in the cell, so
/// the registry's copy of them is not kept.
pub async fn counters(
    cell_db: &Db,
    id: Uuid,
    timeout_ms: u32,
) -> Result<Option<(i64, i64, i64)>, DbError> {
    let tx = cell_db.begin(&TenantContext::platform(timeout_ms)).await?;
    let rows = tx
        .query_and_commit(
            "SELECT member_count, post_count, storage_bytes FROM tenants WHERE id = $1",
            &[&id],
        )
        .await?;
    rows.first()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .transpose()
}

/// Tenants (not deleted) per cell, from the directory: what placement and
/// `GET /v1/admin/cells` read. Cells with none are absent.
pub async fn per_cell(control: &Db, timeout_ms: u32) -> Result<Vec<CellLoad>, DbError> {
    let tx = control.begin(&TenantContext::platform(timeout_ms)).await?;
    let rows = tx
        .query_and_commit(
            "SELECT cell, count(*), bool_or(dedicated) FROM tenants
             WHERE status <> 'deleted' GROUP BY cell",
            &[],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(CellLoad {
                cell: r.try_get(0)?,
                tenants: r.try_get(1)?,
                dedicated: r.try_get(2)?,
            })
        })
        .collect()
}

/// A cell's tenants, from the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellLoad {
    pub cell: String,
    /// Not deleted.
    pub tenants: i64,
    /// Whether one of them has the cell to itself (it takes no new tenants).
    pub dedicated: bool,
}

/// Marks tenant `id` dedicated (it gets a cell of its own, and new tenants
/// are not placed beside it). Returns false if there is no such tenant.
pub async fn set_dedicated(control: &Db, id: Uuid, timeout_ms: u32) -> Result<bool, DbError> {
    let tx = control.begin(&TenantContext::platform(timeout_ms)).await?;
    let rows = tx
        .query_and_commit(
            "UPDATE tenants SET dedicated = true, updated_at = now()
             WHERE id = $1 AND status <> 'deleted' RETURNING id",
            &[&id],
        )
        .await?;
    Ok(!rows.is_empty())
}

/// Points tenant `id`'s directory entry at `cell` (the switch of a move).
/// Returns false if there is no such tenant.
pub async fn set_cell(
    control: &Db,
    id: Uuid,
    cell: &str,
    timeout_ms: u32,
) -> Result<bool, DbError> {
    let tx = control.begin(&TenantContext::platform(timeout_ms)).await?;
    let rows = tx
        .query_and_commit(
            "UPDATE tenants SET cell = $2, updated_at = now()
             WHERE id = $1 AND status <> 'deleted' RETURNING id",
            &[&id, &cell],
        )
        .await?;
    Ok(!rows.is_empty())
}

/// The size of `db`'s database in bytes (`pg_database_size`): what
/// `GET /v1/admin/cells` shows per cell.
pub async fn database_size(db: &Db) -> Result<i64, DbError> {
    let tx = db.begin(&TenantContext::platform(2_000)).await?;
    let rows = tx
        .query_and_commit("SELECT pg_database_size(current_database())", &[])
        .await?;
    let row = rows
        .first()
        .ok_or_else(|| DbError::Other(anyhow::anyhow!("pg_database_size returned no row")))?;
    Ok(row.try_get(0)?)
}
