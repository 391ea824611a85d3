//! The platform admin's database endpoints (API.md, "Operate the
//! database"): health, statistics, advisors, and maintenance run as jobs.

use std::sync::Arc;

use axum::extract::{FromRequest, Request, State};
use axum::http::{StatusCode, header};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::ops::advisors::{self, Findings};
use crate::ops::health::{self, Health, Thresholds};
use crate::ops::maintenance::{self, MaintenanceRequest, Operation};
use crate::ops::stats::{self, Stats};
use crate::problem::{ApiError, Json};
use crate::request::PlatformAdmin;
use crate::state::AppState;

/// This module's routes, each registered once with its OpenAPI operation.
pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(db_health))
        .routes(routes!(db_stats))
        .routes(routes!(db_advisors))
        .routes(routes!(db_vacuum))
        .routes(routes!(db_analyze))
        .routes(routes!(db_reindex))
        .routes(routes!(db_optimize))
}

/// The database's health in checks (`connection`, `pool`,
/// `long_transactions`, `blocked_queries`, `xid_wraparound`,
/// `cache_hit_ratio`, `partitions`, `queue`, and `replication` where read
/// replicas are configured — each one's lag in bytes and seconds, as last
/// polled, and the reads it served — or replicas stream from it). Answers
/// 200 even when the database is away: `status` is then `down`.
#[utoipa::path(get, path = "/v1/admin/db/health", tag = "admin",
    responses((status = 200, body = Health)), security(("admin_token" = [])))]
pub async fn db_health(_: PlatformAdmin, State(state): State<Arc<AppState>>) -> Json<Health> {
    Json(health::check(&state, &Thresholds::default()).await)
}

/// Database size, the biggest tables and indexes with their use, the
/// costliest statements (`pg_stat_statements`, when installed) and the
/// pool. 503 when the database is away.
#[utoipa::path(get, path = "/v1/admin/db/stats", tag = "admin",
    responses((status = 200, body = Stats)), security(("admin_token" = [])))]
pub async fn db_stats(
    _: PlatformAdmin,
    State(state): State<Arc<AppState>>,
) -> Result<Json<Stats>, ApiError> {
    Ok(Json(stats::read(&state).await?))
}

/// Findings about the schema and its use, in one shape: unused, duplicate
/// and invalid indexes, unindexed foreign keys, dead tuples, tenant tables
/// not isolated (forced row-level security, a `tenant_id`-leading index), and
/// policies that look a setting up once per row.
#[utoipa::path(get, path = "/v1/admin/db/advisors", tag = "admin",
    responses((status = 200, body = Findings)), security(("admin_token" = [])))]
pub async fn db_advisors(
    _: PlatformAdmin,
    State(state): State<Arc<AppState>>,
) -> Result<Json<Findings>, ApiError> {
    Ok(Json(advisors::findings(&state).await?))
}

/// A job started: where to follow it (`GET /v1/admin/jobs/{job_id}`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobStarted {
    pub job_id: uuid::Uuid,
}

/// A maintenance request's body: `{"tables": [...]}`, `{}`, or no body at
/// all (every table).
pub struct MaintenanceBody(MaintenanceRequest);

impl<S: Send + Sync> FromRequest<S> for MaintenanceBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let empty = !req.headers().contains_key(header::CONTENT_TYPE)
            && axum::body::HttpBody::size_hint(req.body()).exact() == Some(0);
        if empty {
            return Ok(Self(MaintenanceRequest::default()));
        }
        let Json(body) = Json::<MaintenanceRequest>::from_request(req, state).await?;
        Ok(Self(body))
    }
}

async fn start(
    state: &AppState,
    op: Operation,
    body: MaintenanceRequest,
) -> Result<(StatusCode, Json<JobStarted>), ApiError> {
    let job_id = maintenance::enqueue(&state.db, op, body).await?;
    Ok((StatusCode::ACCEPTED, Json(JobStarted { job_id })))
}

/// `VACUUM` the named tables (or every table) as a maintenance job: one at a
/// time in the cluster, outside the tenants' share, paced like autovacuum,
/// each table skipped if its lock is not had within the lock timeout.
/// 422 names each table the catalog does not know.
#[utoipa::path(post, path = "/v1/admin/db/vacuum", tag = "admin",
    request_body(content = Option<MaintenanceRequest>, description = "Optional: absent means every table"),
    responses((status = 202, body = JobStarted)), security(("admin_token" = [])))]
pub async fn db_vacuum(
    _: PlatformAdmin,
    State(state): State<Arc<AppState>>,
    MaintenanceBody(body): MaintenanceBody,
) -> Result<(StatusCode, Json<JobStarted>), ApiError> {
    start(&state, Operation::Vacuum, body).await
}

/// `ANALYZE` the named tables (or every table) as a maintenance job.
#[utoipa::path(post, path = "/v1/admin/db/analyze", tag = "admin",
    request_body(content = Option<MaintenanceRequest>, description = "Optional: absent means every table"),
    responses((status = 202, body = JobStarted)), security(("admin_token" = [])))]
pub async fn db_analyze(
    _: PlatformAdmin,
    State(state): State<Arc<AppState>>,
    MaintenanceBody(body): MaintenanceBody,
) -> Result<(StatusCode, Json<JobStarted>), ApiError> {
    start(&state, Operation::Analyze, body).await
}

/// `REINDEX TABLE CONCURRENTLY` the named tables (or every table) as a
/// maintenance job: writes go on while each index is rebuilt.
#[utoipa::path(post, path = "/v1/admin/db/reindex", tag = "admin",
    request_body(content = Option<MaintenanceRequest>, description = "Optional: absent means every table"),
    responses((status = 202, body = JobStarted)), security(("admin_token" = [])))]
pub async fn db_reindex(
    _: PlatformAdmin,
    State(state): State<Arc<AppState>>,
    MaintenanceBody(body): MaintenanceBody,
) -> Result<(StatusCode, Json<JobStarted>), ApiError> {
    start(&state, Operation::Reindex, body).await
}

/// `VACUUM (ANALYZE)` the named tables (or every table), then rebuild their
/// invalid indexes concurrently, as a maintenance job.
#[utoipa::path(post, path = "/v1/admin/db/optimize", tag = "admin",
    request_body(content = Option<MaintenanceRequest>, description = "Optional: absent means every table"),
    responses((status = 202, body = JobStarted)), security(("admin_token" = [])))]
pub async fn db_optimize(
    _: PlatformAdmin,
    State(state): State<Arc<AppState>>,
    MaintenanceBody(body): MaintenanceBody,
) -> Result<(StatusCode, Json<JobStarted>), ApiError> {
    start(&state, Operation::Optimize, body).await
}
