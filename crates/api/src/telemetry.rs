//! Request ids, request metrics and the Prometheus recorder.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use tenantry_fairness::gcra::Decision;

use crate::observe::meter::Outcome;
use crate::problem::{ApiError, ErrorCode, REQUEST_ID};
use crate::request::RequestInfo;
use crate::state::{AppState, ThrottleCounts};

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

/// The outermost layer. Gives every request an id (the caller's
/// `X-Request-Id` if it is sane) that error bodies carry; adds the
/// `RateLimit` headers; counts the request by route, method, status and
/// tier, and throttles by tenant. Load shedding is the next layer in
/// ([`crate::request::shed`]), so a shed request is counted too.
pub async fn observe(State(state): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
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
    let info = RequestInfo::default();
    req.extensions_mut().insert(info.clone());
    // The request's CPU turn, if it takes one, is kept until the response
    // is made (crate::request::admission::TurnSlot).
    let turn = crate::request::admission::TurnSlot::default();
    req.extensions_mut().insert(turn.clone());

    let gauge = InFlightGauge::enter(&route);
    // Every statement the request's task sends is counted: a request served
    // from the cache shows 0.
    let db_use = Arc::new(tenantry_db::DbUse::default());
    let (mut response, statements) = tenantry_db::count_statements(tenantry_db::measure_use(
        db_use.clone(),
        REQUEST_ID.scope(id.clone(), next.run(req)),
    ))
    .await;
    turn.release();
    gauge.finished();

    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    let resolved = info.0.get();
    if let Some(r) = resolved {
        // Usage metering (crate::ops::usage): a few atomic adds.
        let egress = axum::body::HttpBody::size_hint(response.body()).lower();
        state.usage.request(r.tenant.id, &db_use, egress);
    }
    if let Some(decision) = resolved.and_then(|r| r.rate.as_ref()) {
        rate_limit_headers(response.headers_mut(), decision);
    }
    let tier = resolved.map_or_else(|| "none".to_owned(), |r| r.tenant.tier.clone());
    if let (Some(r), Some(code)) = (resolved, response.extensions().get::<ErrorCode>()) {
        count_throttle(&state, r.tenant.id, code.0, &tier);
    }
    if let Some(r) = resolved
        && state.observe.config.record
    {
        let code = response.extensions().get::<ErrorCode>().map(|c| c.0);
        let outcome = Outcome::of(response.status().as_u16(), code);
        let t = &r.tenant;
        state
            .observe
            .meters
            .request((t.id, &t.slug, &t.tier), started.elapsed(), outcome, || {
                cache_seen(&state, t.id)
            });
    }
    let status = response.status().as_u16();
    RequestMetrics::with(&route, &method, &tier, status, |m| {
        m.statements.increment(statements);
        m.duration.record(started.elapsed().as_secs_f64());
        m.requests.increment(1);
    });
    response
}

/// The metric handles of one kind of request: its route, method, tier and
/// status. `metrics::counter!` with labels builds, hashes and looks up a
/// labelled key in the registry on every call; a thread keeps the handles
/// instead, found by one hash of the four values (perf had the registry's
/// lookups at about 1.5 % of a cached request's CPU).
struct RequestMetrics {
    route: Box<str>,
    method: Box<str>,
    tier: Box<str>,
    status: u16,
    /// `tenantry_db_statements_total{route}`: every statement the request's
    /// task sent (a request served from the cache adds 0).
    statements: metrics::Counter,
    /// `http_request_duration_seconds{route, method, tier}`.
    duration: metrics::Histogram,
    /// `http_requests_total{route, method, tier, status}`.
    requests: metrics::Counter,
}

/// Kinds of request a thread keeps handles for before it starts over. A
/// client may send any method; the registry keeps each such series, this
/// only bounds the thread's copy of the handles.
const MAX_REQUEST_METRICS: usize = 1024;

impl RequestMetrics {
    fn new(route: &str, method: &str, tier: &str, status: u16) -> Self {
        // The recorder is installed before the first handle is made.
        let _ = prometheus();
        let labels = [
            ("route", route.to_owned()),
            ("method", method.to_owned()),
            ("tier", tier.to_owned()),
        ];
        let mut counted = labels.to_vec();
        counted.push(("status", status.to_string()));
        Self {
            route: route.into(),
            method: method.into(),
            tier: tier.into(),
            status,
            statements: metrics::counter!("tenantry_db_statements_total", "route" => route.to_owned()),
            duration: metrics::histogram!("http_request_duration_seconds", &labels),
            requests: metrics::counter!("http_requests_total", &counted),
        }
    }

    fn is(&self, route: &str, method: &str, tier: &str, status: u16) -> bool {
        self.status == status
            && *self.route == *route
            && *self.method == *method
            && *self.tier == *tier
    }

    /// Runs `f` with this thread's handles of the kind of request.
    fn with(route: &str, method: &str, tier: &str, status: u16, f: impl FnOnce(&Self)) {
        use std::hash::BuildHasher as _;
        type Kinds =
            std::collections::HashMap<u64, Vec<RequestMetrics>, foldhash::fast::FixedState>;
        thread_local! {
            static KINDS: std::cell::RefCell<Kinds> = std::cell::RefCell::new(Kinds::default());
        }
        let hash = foldhash::fast::FixedState::default().hash_one((route, method, tier, status));
        KINDS.with_borrow_mut(|kinds| {
            if kinds.len() >= MAX_REQUEST_METRICS && !kinds.contains_key(&hash) {
                kinds.clear();
            }
            let same = kinds.entry(hash).or_default();
            let at = match same.iter().position(|m| m.is(route, method, tier, status)) {
                Some(at) => at,
                None => {
                    same.push(Self::new(route, method, tier, status));
                    same.len() - 1
                }
            };
            f(&same[at]);
        });
    }
}

/// A tenant's cumulative cache hits and misses (a new meter's baseline).
pub fn cache_seen(state: &AppState, tenant: uuid::Uuid) -> (u64, u64) {
    use std::sync::atomic::Ordering::Relaxed;
    let t = state.cache.stats.tenant(tenant);
    (t.hits.load(Relaxed), t.misses.load(Relaxed))
}

/// `http_requests_in_flight`, held by a guard: a client that hangs up makes
/// hyper drop the request's future at whatever await it is parked on, and the
/// gauge must come down all the same. A request dropped before it finished is
/// counted in `http_requests_cancelled_total` by route.
struct InFlightGauge<'a> {
    route: &'a str,
    finished: bool,
}

/// `http_requests_in_flight`, made once (see [`RequestMetrics`]).
fn in_flight() -> &'static metrics::Gauge {
    static GAUGE: std::sync::LazyLock<metrics::Gauge> = std::sync::LazyLock::new(|| {
        let _ = prometheus();
        metrics::gauge!("http_requests_in_flight")
    });
    &GAUGE
}

impl<'a> InFlightGauge<'a> {
    fn enter(route: &'a str) -> Self {
        in_flight().increment(1.0);
        Self {
            route,
            finished: false,
        }
    }

    fn finished(mut self) {
        self.finished = true;
    }
}

impl Drop for InFlightGauge<'_> {
    fn drop(&mut self) {
        in_flight().decrement(1.0);
        if !self.finished {
            metrics::counter!("http_requests_cancelled_total", "route" => self.route.to_owned())
                .increment(1);
        }
    }
}

const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

/// `RateLimit` and `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers):
/// the burst is the limit, refilled at the steady rate. These two headers go
/// on every tenant response: `RateLimit` is written with `itoa` into a stack
/// buffer, and the policy, which only changes with the quota, is kept per
/// thread for the last quota seen.
fn rate_limit_headers(headers: &mut HeaderMap, d: &Decision) {
    let reset = d.reset.as_secs_f64().ceil() as u64;
    // At most 6 + 10 + 12 + 10 + 8 + 20 = 66 bytes.
    let mut limit = [0u8; 80];
    let mut len = 0;
    let mut put = |part: &[u8]| {
        limit[len..len + part.len()].copy_from_slice(part);
        len += part.len();
    };
    let mut n = itoa::Buffer::new();
    put(b"limit=");
    put(n.format(d.quota.burst).as_bytes());
    put(b", remaining=");
    put(n.format(d.remaining).as_bytes());
    put(b", reset=");
    put(n.format(reset).as_bytes());
    if let Ok(v) = HeaderValue::from_bytes(&limit[..len]) {
        headers.insert(RATELIMIT, v);
    }
    headers.insert(RATELIMIT_POLICY, policy(d.quota));
}

/// The `RateLimit-Policy` value of `quota`.
fn policy(quota: tenantry_fairness::gcra::Quota) -> HeaderValue {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(tenantry_fairness::gcra::Quota, HeaderValue)>> =
            const { std::cell::RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| match last {
        Some((q, v)) if *q == quota => v.clone(),
        _ => {
            let window = (f64::from(quota.burst) / f64::from(quota.per_sec.max(1)))
                .ceil()
                .max(1.0) as u64;
            let v = HeaderValue::from_str(&format!("{};w={window}", quota.burst))
                .expect("digits are a valid header value");
            *last = Some((quota, v.clone()));
            v
        }
    })
}

/// Counts a tenant's turned-away request for the admin usage view and, by
/// tier, in the metrics.
fn count_throttle(state: &AppState, tenant: uuid::Uuid, code: &str, tier: &str) {
    use std::sync::atomic::Ordering::Relaxed;
    let field = match code {
        "rate_limited" => |c: &ThrottleCounts| c.rate_limited.fetch_add(1, Relaxed),
        "overloaded" => |c: &ThrottleCounts| c.db_queue_timeouts.fetch_add(1, Relaxed),
        "query_timeout" => {
            metrics::counter!("tenantry_query_timeouts_total", "tier" => tier.to_owned())
                .increment(1);
            |c: &ThrottleCounts| c.query_timeouts.fetch_add(1, Relaxed)
        }
        "quota_exceeded" => {
            metrics::counter!("tenantry_quota_exceeded_total", "tier" => tier.to_owned())
                .increment(1);
            |c: &ThrottleCounts| c.quota_exceeded.fetch_add(1, Relaxed)
        }
        _ => return,
    };
    field(&state.fairness.throttles_of(tenant));
}

/// How long a client may take to send its request body.
const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Reads the whole request body (up to the limit) before the handler's
/// extractors run, so a client that trickles its body waits here, holding no
/// database share, transaction or connection of its tenant.
pub async fn buffer_body(req: Request, next: Next) -> Response {
    use http_body_util::BodyExt as _;
    let (parts, body) = req.into_parts();
    let limited = http_body_util::Limited::new(body, crate::config::BODY_LIMIT);
    match tokio::time::timeout(BODY_READ_TIMEOUT, limited.collect()).await {
        Ok(Ok(collected)) => {
            let body = axum::body::Body::from(collected.to_bytes());
            next.run(Request::from_parts(parts, body)).await
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => ApiError::PayloadTooLarge {
            limit: crate::config::BODY_LIMIT,
        }
        .into_response(),
        Ok(Err(e)) => {
            ApiError::BadRequest(format!("could not read the request body: {e}")).into_response()
        }
        Err(_) => ApiError::RequestTimeout.into_response(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the series `name{labels}` in the exposition.
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    }

    #[test]
    fn each_kind_of_request_counts_in_its_own_series() {
        let route = "/test/each-kind";
        for (status, n) in [(200, 3), (404, 2)] {
            for _ in 0..n {
                RequestMetrics::with(route, "GET", "free", status, |m| {
                    m.requests.increment(1);
                    m.statements.increment(2);
                });
            }
        }
        RequestMetrics::with(route, "POST", "free", 200, |m| m.requests.increment(1));
        RequestMetrics::with(route, "GET", "pro", 200, |m| m.requests.increment(1));
        let text = prometheus().render();
        let requests = |method: &str, tier: &str, status: u16| {
            value(
                &text,
                &format!(
                    "http_requests_total{{route=\"{route}\",method=\"{method}\",tier=\"{tier}\",status=\"{status}\"}}"
                ),
            )
        };
        assert_eq!(requests("GET", "free", 200), Some(3.0), "{text}");
        assert_eq!(requests("GET", "free", 404), Some(2.0));
        assert_eq!(requests("POST", "free", 200), Some(1.0));
        assert_eq!(requests("GET", "pro", 200), Some(1.0));
        assert_eq!(
            value(
                &text,
                &format!("tenantry_db_statements_total{{route=\"{route}\"}}")
            ),
            Some(10.0)
        );
    }

    #[test]
    fn a_thread_that_saw_too_many_kinds_starts_over_and_still_counts() {
        let route = "/test/many-kinds";
        for i in 0..(MAX_REQUEST_METRICS + 10) {
            let method = format!("M{i}");
            RequestMetrics::with(route, &method, "free", 200, |m| m.requests.increment(1));
        }
        RequestMetrics::with(route, "M0", "free", 200, |m| m.requests.increment(1));
        let text = prometheus().render();
        let series = |method: &str| {
            format!(
                "http_requests_total{{route=\"{route}\",method=\"{method}\",tier=\"free\",status=\"200\"}}"
            )
        };
        assert_eq!(value(&text, &series("M0")), Some(2.0), "{text}");
        assert_eq!(value(&text, &series("M1033")), Some(1.0));
    }
}
