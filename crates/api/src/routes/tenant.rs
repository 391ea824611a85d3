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
    /// The platform's default settings overlaid with the tenant's own
    /// (`settings`): each top-level key of the tenant's wins.
    #[schema(value_type = Object)]
    pub effective_settings: Value,
    #[schema(value_type = Object)]
    pub features: Value,
    pub member_count: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MembershipView {
    pub role: String,
    #[serde(serialize_with = "crate::json_time::serialize")]
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
pub async fn get_tenant(mut scope: Scope) -> Result<Json<TenantResponse>, ApiError> {
    // Served from the cache at steady state: the tenant (with its member
    // count) came with resolution, the membership is cached per user.
    let membership = scope.membership().await?.map(|m| MembershipView {
        role: m.role.to_string(),
        joined_at: m.created_at,
        display_in_feed: m.display_in_feed,
    });
    let member_count = scope.tenant.member_count;
    let platform = scope.platform_settings().await?;
    // Commits the membership lookup if there was one; sends nothing if not.
    scope.tx.commit().await?;
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
            effective_settings: tenantry_db::platform::overlay(&platform, &t.settings),
            features: t.features.clone(),
            member_count,
        },
        membership,
    }))
}
