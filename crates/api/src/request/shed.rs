//! Load shedding: beyond the global in-flight cap a request is answered 503
//! `overloaded` before any work is done (no body read, no token checked),
//! because work admitted past what the machine can run only adds latency
//! for everyone. Operators' routes (admin, health, metrics) may use a
//! reserve above the cap, so an overloaded server can still be seen and
//! fixed. The in-flight slot is a guard held by the request's future:
//! dropped with it, whatever await a hung-up client leaves it at.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::problem::ApiError;
use crate::state::AppState;

/// The layer's function (`axum::middleware::from_fn_with_state`).
pub async fn shed(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    match state.fairness.shedder.admit(privileged(req.uri().path())) {
        Some(_in_flight) => next.run(req).await,
        None => {
            metrics::counter!("tenantry_shed_total").increment(1);
            ApiError::Overloaded { retry_after: 1 }.into_response()
        }
    }
}

/// Routes that may use the shedder's reserve: an operator must be able to
/// look at and fix an overloaded server.
fn privileged(path: &str) -> bool {
    path.starts_with("/v1/admin/")
        || path == "/v1/admin"
        || matches!(path, "/healthz" | "/readyz" | "/metrics")
}

#[cfg(test)]
mod tests {
    use super::privileged;

    #[test]
    fn operators_routes_are_privileged_and_tenant_routes_are_not() {
        assert!(privileged("/v1/admin/tenants"));
        assert!(privileged("/metrics"));
        assert!(privileged("/healthz"));
        assert!(!privileged("/v1/posts"));
        assert!(!privileged("/v1/administrator"));
    }
}
