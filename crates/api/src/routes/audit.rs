//! The audit log (admin+): who did what in the tenant, newest first.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use tenantry_core::Role;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::pagination::{Page, PageParams, TimeKey};
use crate::problem::{ApiError, Json, Query};
use crate::request::Scope;
use crate::state::AppState;

/// This module's routes, each registered once with its OpenAPI operation.
pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(list))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    /// The user who acted; null for the platform admin.
    pub actor_id: Option<Uuid>,
    /// e.g. `member.add`, `member.role`, `member.remove`, `post.moderate`,
    /// `tenant.update`, `announcement.create`.
    pub action: String,
    pub target: Option<String>,
    #[schema(value_type = Object)]
    pub details: Value,
}

impl From<tenantry_db::audit::Entry> for AuditEntry {
    fn from(e: tenantry_db::audit::Entry) -> Self {
        Self {
            id: e.id,
            created_at: e.created_at,
            actor_id: e.actor_id,
            action: e.action,
            target: e.target,
            details: e.details,
        }
    }
}

#[utoipa::path(get, path = "/v1/audit-log", tag = "audit", params(PageParams),
    responses((status = 200, body = Page<AuditEntry>), (status = 403, body = crate::problem::Problem)),
    security(("user_jwt" = [], "tenant" = [])))]
pub async fn list(
    mut scope: Scope,
    Query(page): Query<PageParams>,
) -> Result<Json<Page<AuditEntry>>, ApiError> {
    let limit = page.limit()?;
    let tenant = scope.tenant.id;
    let after: Option<TimeKey> = page.after(tenant, "audit-log")?;
    scope.require(Role::Admin).await?;
    let rows =
        tenantry_db::audit::list_and_commit(scope.tx, tenant, after.map(Into::into), limit + 1)
            .await?;
    Ok(Json(Page::from_rows(
        rows,
        limit,
        tenant,
        "audit-log",
        |e| TimeKey::from(e.keyset()),
        AuditEntry::from,
    )))
}
