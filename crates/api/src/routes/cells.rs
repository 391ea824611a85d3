//! The cells of the platform, for its operator: `GET /v1/admin/cells`
//! (API.md, "Cells"; the machinery is [`crate::cells`]).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde::Serialize;
use tenantry_db::tenants;
use tenantry_db::tenants::Lookup;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::config::PLATFORM_STATEMENT_TIMEOUT_MS;
use crate::problem::{ApiError, Json, Path};
use crate::request::PlatformAdmin;
use crate::state::AppState;

/// This module's routes, each registered once with its OpenAPI operation.
pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list_cells))
        .routes(routes!(move_tenant))
        .routes(routes!(dedicate_tenant))
}

/// One cell as the admin API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CellView {
    pub name: String,
    /// Tenants placed in it (not deleted), from the directory.
    pub tenants: i64,
    /// The size of its database (`pg_database_size`); null when it does not
    /// answer.
    pub size_bytes: Option<i64>,
    /// Whether its database answered within a second.
    pub healthy: bool,
    /// Whether a dedicated tenant has it to itself (new tenants are not
    /// placed in it).
    pub dedicated: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CellList {
    pub items: Vec<CellView>,
}

/// How long a cell may take to say how big it is before it counts as
/// unhealthy.
const PROBE: Duration = Duration::from_secs(1);

/// Every cell, `main` first: its tenants, its size and whether it answers.
/// The cells are asked at once; one that is down shows `healthy: false`
/// rather than failing the list.
#[utoipa::path(get, path = "/v1/admin/cells", tag = "admin",
    responses((status = 200, body = CellList),
              (status = 503, body = crate::problem::Problem, description = "the control database is unavailable")),
    security(("admin_token" = [])))]
pub async fn list_cells(
    _: PlatformAdmin,
    State(state): State<Arc<AppState>>,
) -> Result<Json<CellList>, ApiError> {
    let loads = tenants::per_cell(&state.db, PLATFORM_STATEMENT_TIMEOUT_MS).await?;
    let sizes = futures::future::join_all(state.cells.iter().map(|cell| async move {
        tokio::time::timeout(PROBE, tenants::database_size(&cell.db))
            .await
            .ok()
            .and_then(Result::ok)
    }))
    .await;
    let items = state
        .cells
        .iter()
        .zip(sizes)
        .map(|(cell, size)| CellView {
            name: cell.name.clone(),
            tenants: loads
                .iter()
                .find(|l| l.cell == cell.name)
                .map_or(0, |l| l.tenants),
            dedicated: loads.iter().any(|l| l.cell == cell.name && l.dedicated),
            healthy: size.is_some(),
            size_bytes: size,
        })
        .collect();
    Ok(Json(CellList { items }))
}

/// Where to move a tenant.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveRequest {
    /// One of `GET /v1/admin/cells`, not the tenant's own.
    #[schema(min_length = 1, max_length = 32)]
    pub cell: String,
}

/// The job that moves the tenant (`GET /v1/admin/jobs/{job_id}`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MoveAccepted {
    pub job_id: Uuid,
}

/// Moves a tenant to another cell, online, as a job: reads and writes go
/// on during the copy, writes pause for the final catch-up, nothing
/// acknowledged is lost, and the old copy is removed afterwards.
#[utoipa::path(post, path = "/v1/admin/tenants/{id}/move", tag = "admin",
    request_body = MoveRequest,
    responses((status = 202, body = MoveAccepted),
              (status = 404, body = crate::problem::Problem),
              (status = 409, body = crate::problem::Problem, description = "The tenant is in that cell already (`conflict`)."),
              (status = 422, body = crate::problem::Problem, description = "No such cell (`validation_failed`)."),
              (status = 503, body = crate::problem::Problem)),
    security(("admin_token" = [])))]
pub async fn move_tenant(
    _: PlatformAdmin,
    State(state): State<Arc<AppState>>,
    Path(id): Path<Uuid>,
    Json(body): Json<MoveRequest>,
) -> Result<(StatusCode, Json<MoveAccepted>), ApiError> {
    let to = crate::routes::admin::known_cell(&state, &body.cell)
        .map_err(|e| ApiError::validation("cell", e.message))?;
    let tenant = find(&state, id).await?;
    if tenant.cell == to.name {
        return Err(ApiError::Conflict(format!(
            "the tenant is in the cell {:?} already",
            to.name
        )));
    }
    let job_id = enqueue_move(&state, &tenant, &to.name).await?;
    Ok((StatusCode::ACCEPTED, Json(MoveAccepted { job_id })))
}

async fn find(state: &AppState, id: Uuid) -> Result<tenants::Tenant, ApiError> {
    tenants::find(&state.db, Lookup::Id(id), PLATFORM_STATEMENT_TIMEOUT_MS)
        .await?
        .ok_or_else(|| ApiError::not_found("tenant"))
}

/// Queues the job that moves `tenant` to the cell `to`.
async fn enqueue_move(
    state: &AppState,
    tenant: &tenants::Tenant,
    to: &str,
) -> Result<Uuid, ApiError> {
    let job_id = crate::moves::enqueue(
        &state.db,
        &crate::moves::MovePayload {
            tenant: tenant.id,
            from: tenant.cell.clone(),
            to: to.to_owned(),
        },
    )
    .await?;
    tracing::info!(tenant = %tenant.id, from = %tenant.cell, to, job = %job_id, "tenant move queued");
    Ok(job_id)
}

/// The move that gives a tenant its cell (`GET /v1/admin/jobs/{job_id}`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DedicateAccepted {
    pub job_id: Uuid,
    /// The cell the tenant moves to, which takes no new tenants from now on.
    pub cell: String,
}

/// Gives a high-volume tenant a cell of its own: it is moved online (as
/// `POST …/move` does) to a cell holding no other tenant, and that cell
/// takes no new tenants. Its queries, indexes and vacuums are then its
/// own, as its own partitions would make them (BENCHMARKS.md, "Cells").
#[utoipa::path(post, path = "/v1/admin/tenants/{id}/dedicate", tag = "admin",
    responses((status = 202, body = DedicateAccepted),
              (status = 404, body = crate::problem::Problem),
              (status = 409, body = crate::problem::Problem, description = "No cell is empty (add one with `TENANTRY_CELLS`), or the tenant has its cell already (`conflict`)."),
              (status = 503, body = crate::problem::Problem)),
    security(("admin_token" = [])))]
pub async fn dedicate_tenant(
    _: PlatformAdmin,
    State(state): State<Arc<AppState>>,
    Path(id): Path<Uuid>,
) -> Result<(StatusCode, Json<DedicateAccepted>), ApiError> {
    let tenant = find(&state, id).await?;
    let loads = tenants::per_cell(&state.db, PLATFORM_STATEMENT_TIMEOUT_MS).await?;
    let alone = loads
        .iter()
        .any(|l| l.cell == tenant.cell && l.tenants == 1 && l.dedicated);
    if alone {
        return Err(ApiError::Conflict(format!(
            "the tenant has the cell {:?} to itself already",
            tenant.cell
        )));
    }
    let Some(to) = state.cells.empty_cell(&tenant.cell, &loads).cloned() else {
        return Err(ApiError::Conflict(
            "no cell is empty: add one with TENANTRY_CELLS, then dedicate again".into(),
        ));
    };
    // Reserved before the move starts, so no new tenant is placed there.
    if !tenants::set_dedicated(&state.db, id, PLATFORM_STATEMENT_TIMEOUT_MS).await? {
        return Err(ApiError::not_found("tenant"));
    }
    let job_id = enqueue_move(&state, &tenant, &to.name).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(DedicateAccepted {
            job_id,
            cell: to.name.clone(),
        }),
    ))
}
