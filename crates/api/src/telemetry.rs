//! Request ids, request metrics and the Prometheus recorder.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::problem::{ApiError, REQUEST_ID};
use crate::tenancy::TierSlot;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Latency buckets in seconds: fine-grained below 10 ms, where a cached
/// request lives, and up to the longest statement timeout.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0,
];

/// The process-wide Prometheus recorder. `metrics` has one global recorder,
/// so every server in the process (several in tests) shares it.
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("http_request_duration_seconds".to_owned()),
                    LATENCY_BUCKETS,
                )
                .expect("latency buckets are not empty");
            match builder.install_recorder() {
                Ok(handle) => handle,
                Err(e) => {
                    tracing::warn!(error = %e, "another metrics recorder is installed");
                    PrometheusBuilder::new().build_recorder().handle()
                }
            }
        })
        .clone()
}

/// Gives every request an id (the caller's `X-Request-Id` if it is sane),
/// makes it available to error bodies, echoes it on the response, and counts
/// the request by route, method, status and tier.
pub async fn observe(mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let method = req.method().as_str().to_owned();
    let tier = TierSlot::default();
    req.extensions_mut().insert(tier.clone());

    metrics::gauge!("http_requests_in_flight").increment(1.0);
    let mut response = REQUEST_ID.scope(id.clone(), next.run(req)).await;
    metrics::gauge!("http_requests_in_flight").decrement(1.0);

    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    let tier = tier.0.get().cloned().unwrap_or_else(|| "none".to_owned());
    let status = response.status().as_u16().to_string();
    let labels = [("route", route), ("method", method), ("tier", tier)];
    metrics::histogram!("http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    let mut counted = labels.to_vec();
    counted.push(("status", status));
    metrics::counter!("http_requests_total", &counted).increment(1);
    response
}

/// Unknown routes answer problem+json 404.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".to_owned())
}

pub async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::MethodNotAllowed(req.method().to_string())
}

/// A panic in a handler answers 500 problem+json without details.
pub fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "unknown panic".to_owned());
    ApiError::Internal(anyhow::anyhow!("handler panicked: {message}")).into_response()
}
