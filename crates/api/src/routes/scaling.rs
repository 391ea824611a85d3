//! `GET /v1/admin/tenants/{id}/scaling`: the changes the autoscaler made to
//! a tenant's database concurrency ([`crate::scaling`]), newest first.

use std::sync::Arc;

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tenantry_db::tenants::{self, Lookup};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::config::PLATFORM_STATEMENT_TIMEOUT_MS;
use crate::pagination::{Page, PageParams};
use crate::problem::{ApiError, Json, Path, Query};
use crate::request::PlatformAdmin;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(tenant_scaling))
}

/// One change of a tenant's database concurrency.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ScalingChange {
    /// When the autoscaler made it.
    pub at: DateTime<Utc>,
    /// The tenant's concurrent database operations before and after.
    pub from: u32,
    pub to: u32,
    /// `queue_wait` (its operations waited at its own limit), `others_waited`
    /// (other tenants waited for capacity its operations held), `settled`
    /// (calm: back toward its tier's `db_concurrency`), `idle` (unused: back
    /// to it), `bounds` (its tier's bounds moved past it).
    #[schema(example = "queue_wait")]
    pub reason: String,
}

/// Where a page of changes ends: the last change's id.
#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize)]
struct After {
    id: Uuid,
}

/// The changes the autoscaler made to the tenant's database concurrency
/// (within its tier's `db_concurrency_min`..`db_concurrency_max`), newest
/// first, kept 30 days. 404 for an unknown tenant.
#[utoipa::path(get, path = "/v1/admin/tenants/{id}/scaling", tag = "admin",
    params(PageParams),
    responses((status = 200, body = Page<ScalingChange>),
              (status = 400, body = crate::problem::Problem, description = "A limit or cursor that is not valid."),
              (status = 404, body = crate::problem::Problem)),
    security(("admin_token" = [])))]
pub async fn tenant_scaling(
    _: PlatformAdmin,
    State(state): State<Arc<AppState>>,
    Path(id): Path<Uuid>,
    Query(params): Query<PageParams>,
) -> Result<Json<Page<ScalingChange>>, ApiError> {
    let limit = params.limit()?;
    let after = params.after::<After>(id, "scaling")?;
    tenants::find(&state.db, Lookup::Id(id), PLATFORM_STATEMENT_TIMEOUT_MS)
        .await?
        .ok_or_else(|| ApiError::not_found("tenant"))?;
    let rows = crate::scaling::page(&state.db, id, after.map(|a| a.id), limit + 1).await?;
    Ok(Json(Page::from_rows(
        rows,
        limit,
        id,
        "scaling",
        |r| After { id: r.id },
        |r| ScalingChange {
            at: r.at,
            from: r.from,
            to: r.to,
            reason: r.reason.to_owned(),
        },
    )))
}
