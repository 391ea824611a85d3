//! The platform admin's view of the job queue: depth by queue and tenant,
//! failures and dead letters; any job by id (finished ones for 7 days);
//! cancel a job; retry or discard a dead letter.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tenantry_jobs::queue;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::problem::{ApiError, Json, Path};
use crate::request::PlatformAdmin;
use crate::state::AppState;

/// This module's routes, each registered once with its OpenAPI operation.
pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(overview))
        .routes(routes!(discard))
        .routes(routes!(retry))
        .routes(routes!(show))
        .routes(routes!(cancel))
}

/// Any job, whatever queue or kind: waiting, running, dead, or finished in
/// the last 7 days.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobView {
    pub id: Uuid,
    pub queue: String,
    pub kind: String,
    /// Null for the platform's own jobs (database maintenance).
    pub tenant_id: Option<Uuid>,
    /// `ready`, `running`, `retrying` (waiting again after a failed
    /// attempt), `done` or `dead`.
    #[schema(example = "running")]
    pub state: String,
    pub attempts: i32,
    /// Where a running job got to, as the job records it.
    #[schema(value_type = Option<Object>)]
    pub progress: Option<serde_json::Value>,
    /// What a finished job reported.
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<tenantry_jobs::platform::JobRecord> for JobView {
    fn from(r: tenantry_jobs::platform::JobRecord) -> Self {
        Self {
            id: r.id,
            queue: r.queue,
            kind: r.kind,
            tenant_id: r.tenant_id,
            state: r.state,
            attempts: r.attempts,
            progress: r.progress,
            result: r.result,
            last_error: r.last_error,
            created_at: r.created_at,
            finished_at: r.finished_at,
        }
    }
}

/// A job by id: announcements, purges, maintenance, exports, any queue.
/// 404 for an id no job has (or one finished more than 7 days ago).
#[utoipa::path(get, path = "/v1/admin/jobs/{id}", tag = "admin",
    responses((status = 200, body = JobView), (status = 404, body = crate::problem::Problem)),
    security(("admin_token" = [])))]
pub async fn show(
    _: PlatformAdmin,
    State(state): State<Arc<AppState>>,
    Path(id): Path<Uuid>,
) -> Result<Json<JobView>, ApiError> {
    match tenantry_jobs::platform::find(&state.db, id).await? {
        Some(job) => Ok(Json(job.into())),
        None => Err(ApiError::not_found("job")),
    }
}

/// Cancels a waiting or running job: it becomes a dead letter (`last_error`
/// says it was cancelled; retry puts it back), its worker's work is rolled
/// back at its next checkpoint, and a running maintenance statement is
/// cancelled in PostgreSQL (`pg_cancel_backend`). 404 for an unknown job,
/// 409 for one already finished.
#[utoipa::path(post, path = "/v1/admin/jobs/{id}/cancel", tag = "admin",
    responses((status = 200, body = JobView), (status = 404, body = crate::problem::Problem),
              (status = 409, body = crate::problem::Problem)),
    security(("admin_token" = [])))]
pub async fn cancel(
    _: PlatformAdmin,
    State(state): State<Arc<AppState>>,
    Path(id): Path<Uuid>,
) -> Result<Json<JobView>, ApiError> {
    use tenantry_jobs::platform::Cancelled;
    match tenantry_jobs::platform::cancel(&state.db, id).await? {
        Cancelled::NotFound => return Err(ApiError::not_found("job")),
        Cancelled::Finished => {
            return Err(ApiError::Conflict(
                "the job has already finished".to_owned(),
            ));
        }
        Cancelled::Cancelled {
            was_running: true,
            backend: Some(pid),
        } => {
            crate::ops::maintenance::cancel_backend(&state.db, pid).await?;
        }
        Cancelled::Cancelled { .. } => {}
    }
    match tenantry_jobs::platform::find(&state.db, id).await? {
        Some(job) => Ok(Json(job.into())),
        None => Err(ApiError::not_found("job")),
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QueueDepthView {
    pub queue: String,
    pub tenant_id: Uuid,
    pub tenant_slug: Option<String>,
    /// Waiting (due or backing off).
    pub ready: i64,
    /// Leased to a worker.
    pub running: i64,
    /// Waiting for a retry after a failed attempt.
    pub retrying: i64,
    pub dead: i64,
    /// Age of the oldest due job, in seconds.
    pub oldest_ready_secs: Option<f64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeadJobView {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub queue: String,
    pub kind: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobsView {
    /// By queue and tenant, busiest first (at most 1,000 rows).
    pub depth: Vec<QueueDepthView>,
    /// The 100 most recent dead letters.
    pub dead_letters: Vec<DeadJobView>,
}

#[utoipa::path(get, path = "/v1/admin/jobs", tag = "admin",
    responses((status = 200, body = JobsView)), security(("admin_token" = [])))]
pub async fn overview(
    _: PlatformAdmin,
    State(state): State<Arc<AppState>>,
) -> Result<Json<JobsView>, ApiError> {
    let (depth, dead) =
        futures::try_join!(queue::depth(&state.db), queue::dead_letters(&state.db, 100))?;
    Ok(Json(JobsView {
        depth: depth
            .into_iter()
            .map(|d| QueueDepthView {
                queue: d.queue,
                tenant_id: d.tenant_id,
                tenant_slug: d.tenant_slug,
                ready: d.ready,
                running: d.running,
                retrying: d.retrying,
                dead: d.dead,
                oldest_ready_secs: d.oldest_ready_secs,
            })
            .collect(),
        dead_letters: dead
            .into_iter()
            .map(|d| DeadJobView {
                id: d.id,
                tenant_id: d.tenant_id,
                queue: d.queue,
                kind: d.kind,
                attempts: d.attempts,
                last_error: d.last_error,
                created_at: d.created_at,
                finished_at: d.finished_at,
            })
            .collect(),
    }))
}

/// Puts a dead letter back in the queue with fresh attempts. 404 unless the
/// job is dead.
#[utoipa::path(post, path = "/v1/admin/jobs/{id}/retry", tag = "admin",
    responses((status = 204), (status = 404, body = crate::problem::Problem)),
    security(("admin_token" = [])))]
pub async fn retry(
    _: PlatformAdmin,
    State(state): State<Arc<AppState>>,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    if queue::retry_dead(&state.db, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("dead job"))
    }
}

/// Discards a dead letter. 404 unless the job is dead.
#[utoipa::path(delete, path = "/v1/admin/jobs/{id}", tag = "admin",
    responses((status = 204), (status = 404, body = crate::problem::Problem)),
    security(("admin_token" = [])))]
pub async fn discard(
    _: PlatformAdmin,
    State(state): State<Arc<AppState>>,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    if queue::discard_dead(&state.db, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("dead job"))
    }
}
