//! `POST /v1/admin/tenants/{id}/members`: the platform operator adds a
//! member to a tenant (a new tenant's first admin, a hand-over when the
//! owner is gone) without a user token — what `tenantry admin members add`
//! calls. Same rules as a tenant admin's `POST /v1/members` (the tenant's
//! member quota, 409 for a member already there), audited as `member.add`
//! with no actor (the platform).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use serde_json::json;
use tenantry_core::Role;
use tenantry_db::tenants::{self, Lookup};
use tenantry_db::{DbError, TenantContext, members};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::members::{AddMember, MemberView};
use crate::config::PLATFORM_STATEMENT_TIMEOUT_MS;
use crate::problem::{ApiError, Json, Path};
use crate::request::PlatformAdmin;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(add_member))
}

/// Adds `user_id` to the tenant with `role` (any role, owner included).
#[utoipa::path(post, path = "/v1/admin/tenants/{id}/members", tag = "admin",
    request_body = AddMember,
    responses((status = 201, body = MemberView),
              (status = 403, body = crate::problem::Problem, description = "The tenant is at its member quota (`quota_exceeded`)."),
              (status = 404, body = crate::problem::Problem),
              (status = 409, body = crate::problem::Problem, description = "Already a member (`conflict`)."),
              (status = 422, body = crate::problem::Problem)),
    security(("admin_token" = [])))]
pub async fn add_member(
    _: PlatformAdmin,
    State(state): State<Arc<AppState>>,
    Path(id): Path<Uuid>,
    Json(body): Json<AddMember>,
) -> Result<(StatusCode, Json<MemberView>), ApiError> {
    let role = Role::parse(&body.role).map_err(|e| ApiError::validation("role", e.to_string()))?;
    let tenant = tenants::find(&state.db, Lookup::Id(id), PLATFORM_STATEMENT_TIMEOUT_MS)
        .await?
        .ok_or_else(|| ApiError::not_found("tenant"))?;
    let limits = state.limits_of(&tenant);
    // In the tenant's cell.
    let mut tx = state
        .db_of(&tenant)?
        .begin(&TenantContext::tenant(id, limits.statement_timeout_ms))
        .await?;
    // Checked first so an existing member is a conflict even in a full tenant.
    if members::role_of(&mut tx, id, body.user_id).await?.is_some() {
        return Err(ApiError::Conflict("already a member".to_owned()));
    }
    let member = members::add(&mut tx, id, body.user_id, role, limits.max_members)
        .await
        .map_err(|e| match e {
            DbError::Conflict { .. } => ApiError::Conflict("already a member".to_owned()),
            other => other.into(),
        })?;
    tenantry_db::audit::record(
        &mut tx,
        id,
        None,
        "member.add",
        Some(&body.user_id.to_string()),
        &json!({ "role": role.as_str(), "by": "platform_admin" }),
    )
    .await?;
    tx.commit().await?;
    // The tenant's memberships are cached: forget them here and everywhere.
    state.cache.bump_list(id, "").await;
    Ok((StatusCode::CREATED, Json(member.into())))
}
