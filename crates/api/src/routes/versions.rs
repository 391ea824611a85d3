//! `GET /v1/admin/api-versions`: which tenants use which API version, so an
//! operator knows who a deprecation will touch before its sunset.

use std::sync::Arc;

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::pagination::{Page, PageParams};
use crate::problem::{ApiError, Json, Query};
use crate::request::PlatformAdmin;
use crate::state::AppState;

/// This module's routes, each registered once with its OpenAPI operation.
pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(api_versions))
}

/// Requests of one tenant in one API version since the server started.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VersionUseView {
    pub tenant_id: Uuid,
    pub tenant_slug: Option<String>,
    /// The tenant's pinned version (what it gets when a request names none).
    pub pinned: Option<String>,
    pub version: String,
    pub deprecated: bool,
    /// When a deprecated version stops being served.
    pub sunset: Option<String>,
    pub requests: u64,
    #[serde(serialize_with = "crate::json_time::serialize")]
    pub last_seen_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct VersionParams {
    #[param(schema_with = crate::pagination::limit_schema)]
    pub limit: Option<String>,
    #[param(schema_with = crate::pagination::cursor_schema)]
    pub cursor: Option<String>,
    /// Only this tenant.
    pub tenant: Option<Uuid>,
    /// Only this version (`YYYY-MM-DD`).
    #[param(schema_with = version_schema)]
    pub version: Option<String>,
}

fn version_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    let known: Vec<&str> = crate::versions::VERSIONS.iter().map(|v| v.date).collect();
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(known))
        .build()
}

/// Requests by tenant and API version on this node since it started, by
/// tenant then version; `?tenant=` and `?version=` narrow it.
#[utoipa::path(get, path = "/v1/admin/api-versions", tag = "admin", params(VersionParams),
    responses((status = 200, body = Page<VersionUseView>), (status = 400, body = crate::problem::Problem)),
    security(("admin_token" = [])))]
pub async fn api_versions(
    _: PlatformAdmin,
    State(state): State<Arc<AppState>>,
    Query(params): Query<VersionParams>,
) -> Result<Json<Page<VersionUseView>>, ApiError> {
    let version = match params.version.as_deref() {
        Some(raw) => Some(crate::versions::find(raw).ok_or_else(|| crate::versions::unknown(raw))?),
        None => None,
    };
    let page = PageParams {
        limit: params.limit,
        cursor: params.cursor,
    };
    let limit = page.limit()?;
    let after: Option<(Uuid, String)> = page.after(Uuid::nil(), "api-versions")?;
    let mut rows: Vec<_> = state
        .api_versions
        .snapshot()
        .into_iter()
        .filter(|(t, v, _)| {
            params.tenant.is_none_or(|want| *t == want)
                && version.is_none_or(|want| want.date == *v)
                && after
                    .as_ref()
                    .is_none_or(|(at, av)| (*t, *v) > (*at, av.as_str()))
        })
        .collect();
    rows.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX) + 1);
    let mut tenants = Vec::with_capacity(rows.len());
    for (tenant, _, _) in &rows {
        tenants.push(state.registry.by_id(*tenant).await?);
    }
    let rows: Vec<_> = rows.into_iter().zip(tenants).collect();
    Ok(Json(Page::from_rows(
        rows,
        limit,
        Uuid::nil(),
        "api-versions",
        |((t, v, _), _)| (*t, (*v).to_owned()),
        |((tenant_id, v, seen), tenant)| {
            let deprecation = crate::versions::find(v).and_then(|v| v.deprecated.as_ref());
            VersionUseView {
                tenant_id,
                tenant_slug: tenant.as_ref().map(|t| t.slug.clone()),
                pinned: tenant.as_ref().map(|t| t.api_version.clone()),
                version: v.to_owned(),
                deprecated: deprecation.is_some(),
                sunset: deprecation.map(|d| d.sunset.to_owned()),
                requests: seen.requests,
                last_seen_at: seen.last_seen,
            }
        },
    )))
}
