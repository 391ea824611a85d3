//! `GET /v1/tenant`: the resolved tenant and the caller's membership.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::problem::{ApiError, Json};
use crate::tenancy::Scope;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TenantSummary {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    pub domain: Option<String>,
    pub tier: String,
    pub join_policy: String,
    #[schema(value_type = Object)]
    pub settings: Value,
    #[schema(value_type = Object)]
    pub features: Value,
    pub member_count: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MembershipView {
    pub role: String,
    pub joined_at: DateTime<Utc>,
    pub display_in_feed: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TenantResponse {
    pub tenant: TenantSummary,
    pub membership: Option<MembershipView>,
}

#[utoipa::path(get, path = "/v1/tenant", tag = "tenant",
    responses((status = 200, body = TenantResponse), (status = 404, body = crate::problem::Problem)),
    security(("user_jwt" = [])))]
pub async fn get_tenant(scope: Scope) -> Result<Json<TenantResponse>, ApiError> {
    let (tenant, user) = (scope.tenant_id(), scope.user.id);
    let (member_count, member) =
        tenantry_db::members::count_and_get_and_commit(scope.tx, tenant, user).await?;
    let membership = member.map(|m| MembershipView {
        role: m.role.to_string(),
        joined_at: m.created_at,
        display_in_feed: m.display_in_feed,
    });
    let t = &scope.tenant;
    Ok(Json(TenantResponse {
        tenant: TenantSummary {
            id: t.id,
            slug: t.slug.clone(),
            name: t.name.clone(),
            domain: t.domain.clone(),
            tier: t.tier.clone(),
            join_policy: t.join_policy.as_str().to_owned(),
            settings: t.settings.clone(),
            features: t.features.clone(),
            member_count,
        },
        membership,
    }))
}
