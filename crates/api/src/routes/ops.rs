//! Operations endpoints: the front page, liveness, readiness, metrics.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::problem::{ApiError, Json};
use crate::state::AppState;

/// This module's routes, each registered once with its OpenAPI operation.
pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(home))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    pub status: &'static str,
}

/// What a person who opens the server in a browser is looking for.
const HOME: &str = r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Tenantry</title></head>
<body>
<h1>Tenantry</h1>
<p>A multi-tenant platform server.</p>
<ul>
<li><a href="/docs/">API documentation</a> (the OpenAPI document: <a href="/openapi.json">/openapi.json</a>)</li>
<li><a href="/admin">Operator's dashboard</a></li>
<li><a href="/metrics">Metrics</a> (Prometheus)</li>
</ul>
</body>
</html>
"#;

/// A small page linking the API documentation, the operator's dashboard and
/// the metrics.
#[utoipa::path(get, path = "/", tag = "ops",
    responses((status = 200, description = "Links to `/docs`, `/admin` and `/metrics`",
        content_type = "text/html", body = String)))]
pub async fn home() -> Html<&'static str> {
    Html(HOME)
}

/// The process is up. Touches nothing else.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// The database answers within a second; else 503 `database_unavailable`
/// (whatever the error: a load balancer only needs to know not to send
/// traffic here).
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses((status = 200, body = Health), (status = 503, body = crate::problem::Problem,
        content_type = "application/problem+json")))]
pub async fn readyz(State(state): State<Arc<AppState>>) -> Result<Json<Health>, ApiError> {
    match tokio::time::timeout(Duration::from_secs(1), state.db.ping()).await {
        Ok(Ok(())) => Ok(Json(Health { status: "ready" })),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness check failed");
            Err(ApiError::DatabaseUnavailable)
        }
        Err(_) => {
            tracing::warn!("readiness check: the database did not answer within a second");
            Err(ApiError::DatabaseUnavailable)
        }
    }
}

/// The process's resident memory (`VmRSS` of `/proc/self/status`), where
/// the system says (Linux).
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, body = String)))]
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let (size, idle, waiting) = state.db.pool_status();
    metrics::gauge!("tenantry_db_pool_connections").set(size as f64);
    metrics::gauge!("tenantry_db_pool_idle").set(idle as f64);
    metrics::gauge!("tenantry_db_pool_waiting").set(waiting as f64);
    state.cache.stats.export();
    let (lookups, misses) = state.memo.counts();
    metrics::counter!("tenantry_memo_lookups_total", "result" => "hit")
        .absolute(lookups.saturating_sub(misses));
    metrics::counter!("tenantry_memo_lookups_total", "result" => "miss").absolute(misses);
    metrics::gauge!("tenantry_db_statements_sent").set(tenantry_db::statements_total() as f64);
    if let Some(bytes) = resident_bytes() {
        metrics::gauge!("process_resident_memory_bytes").set(bytes as f64);
    }
    let mut text = state.metrics.render();
    text.push_str(&state.observe.prometheus());
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
