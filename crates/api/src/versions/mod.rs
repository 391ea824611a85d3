//! API versions, dated as Stripe's are: a request names one in the
//! `Tenantry-Version: YYYY-MM-DD` header, or gets its tenant's pinned
//! `api_version` (the newest when the tenant was created), or the newest
//! when it has no tenant. Handlers always build the newest shape; each
//! change since an older version is a module here ([`event_status`]) that
//! turns a newer response back into the older shape, applied newest first.
//! Adding the next change: `docs/versioning.md`.
//!
//! Every response carries the version it was answered in; a deprecated
//! version's responses carry `Deprecation` and `Sunset`; an unknown one is
//! 400 before anything runs. Versions in use are counted per tenant
//! ([`Usage`], `GET /v1/admin/api-versions`) and in
//! `tenantry_api_version_requests_total{version}`.

pub mod event_status;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::problem::ApiError;
use crate::request::RequestInfo;
use crate::state::AppState;

/// The request and response header naming the version.
pub const HEADER: HeaderName = HeaderName::from_static("tenantry-version");
const DEPRECATION: HeaderName = HeaderName::from_static("deprecation");
const SUNSET: HeaderName = HeaderName::from_static("sunset");

/// One API version.
#[derive(Debug)]
pub struct Version {
    /// `YYYY-MM-DD`.
    pub date: &'static str,
    /// When it was deprecated and when it stops being served, if it is.
    pub deprecated: Option<Deprecation>,
}

#[derive(Debug)]
pub struct Deprecation {
    /// Midnight UTC of this day (`Deprecation: @<unix time>`, RFC 9745).
    pub since: &'static str,
    /// Midnight UTC of this day (`Sunset: <HTTP date>`, RFC 8594).
    pub sunset: &'static str,
}

/// Every version, oldest first; the last is the newest.
pub const VERSIONS: &[Version] = &[
    Version {
        date: "2026-11-01",
        deprecated: Some(Deprecation {
            since: "2026-12-06",
            sunset: "2027-06-30",
        }),
    },
    Version {
        date: "2026-12-06",
        deprecated: None,
    },
];

/// A change of the API's shape: responses of the operations it `applies`
/// to are made in the newest shape and turned back with `downgrade` for a
/// request in a version older than `since`.
pub struct Change {
    /// The first version with the change.
    pub since: &'static str,
    /// What changed, for the documentation.
    pub summary: &'static str,
    /// Whether the change touches this operation (method, route template).
    pub applies: fn(&Method, &str) -> bool,
    /// Turns a newer JSON body of that operation into the older shape.
    pub downgrade: fn(&str, &mut Value),
}

/// Every change, oldest first.
pub const CHANGES: &[Change] = &[event_status::CHANGE];

/// The newest version: what new tenants are pinned to.
pub fn newest() -> &'static str {
    VERSIONS.last().expect("at least one version").date
}

/// The version named `raw`, if there is one.
pub fn find(raw: &str) -> Option<&'static Version> {
    VERSIONS.iter().find(|v| v.date == raw)
}

/// The error for a version that is not one of [`VERSIONS`].
pub fn unknown(raw: &str) -> ApiError {
    let known: Vec<&str> = VERSIONS.iter().map(|v| v.date).collect();
    ApiError::BadRequest(format!(
        "unknown API version {raw:?}: one of {}",
        known.join(", ")
    ))
}

/// The middleware: checks the requested version, answers in the version the
/// request gets (see the module's documentation), and counts it.
pub async fn layer(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let asked = match requested(req.headers()) {
        Ok(asked) => asked,
        Err(e) => {
            let mut response = e.into_response();
            stamp(
                response.headers_mut(),
                find(newest()).expect("newest exists"),
            );
            return response;
        }
    };
    let info = req.extensions().get::<RequestInfo>().cloned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let method = req.method().clone();
    let response = next.run(req).await;

    let tenant = info
        .as_ref()
        .and_then(|i| i.0.get())
        .map(|r| r.tenant.clone());
    let version = asked
        .or_else(|| tenant.as_ref().and_then(|t| find(&t.api_version)))
        .unwrap_or_else(|| find(newest()).expect("newest exists"));
    // One handle per version, made once (see `telemetry::RequestMetrics`).
    static COUNTED: LazyLock<Vec<metrics::Counter>> = LazyLock::new(|| {
        let _ = crate::telemetry::prometheus();
        VERSIONS
            .iter()
            .map(|v| metrics::counter!("tenantry_api_version_requests_total", "version" => v.date))
            .collect()
    });
    if let Some(at) = VERSIONS.iter().position(|v| v.date == version.date) {
        COUNTED[at].increment(1);
    }
    if let Some(t) = &tenant {
        state.api_versions.count(t.id, version.date);
    }
    let mut response = match &route {
        Some(route) => downgrade(response, version.date, &method, route).await,
        None => response,
    };
    stamp(response.headers_mut(), version);
    response
}

/// The version the request names, `None` if it names none.
fn requested(headers: &HeaderMap) -> Result<Option<&'static Version>, ApiError> {
    let Some(raw) = headers.get(&HEADER) else {
        return Ok(None);
    };
    let raw = raw
        .to_str()
        .map_err(|_| ApiError::BadRequest("Tenantry-Version must be a date".to_owned()))?;
    find(raw.trim()).map(Some).ok_or_else(|| unknown(raw))
}

/// `Tenantry-Version`, and `Deprecation`/`Sunset` for a deprecated version.
fn stamp(headers: &mut HeaderMap, version: &Version) {
    headers.insert(HEADER, HeaderValue::from_static(version.date));
    // Made once per version: a tenant pinned to a deprecated version gets
    // them on every response.
    static DEPRECATED: LazyLock<Vec<Vec<(HeaderName, HeaderValue)>>> =
        LazyLock::new(|| VERSIONS.iter().map(deprecation_headers).collect());
    if let Some(at) = VERSIONS.iter().position(|v| v.date == version.date) {
        for (name, value) in &DEPRECATED[at] {
            headers.insert(name, value.clone());
        }
    }
}

/// `Deprecation` and `Sunset` of `version`, none if it is not deprecated.
fn deprecation_headers(version: &Version) -> Vec<(HeaderName, HeaderValue)> {
    let mut headers = Vec::new();
    if let Some(d) = &version.deprecated {
        if let Some(since) = midnight(d.since) {
            let value = format!("@{}", since.timestamp());
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.push((DEPRECATION, v));
            }
        }
        if let Some(sunset) = midnight(d.sunset) {
            let value = sunset.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.push((SUNSET, v));
            }
        }
    }
    headers
}

fn midnight(day: &str) -> Option<DateTime<Utc>> {
    let day = NaiveDate::parse_from_str(day, "%Y-%m-%d").ok()?;
    Some(day.and_hms_opt(0, 0, 0)?.and_utc())
}

/// Applies, newest first, every change made after `version` that touches
/// this operation to a successful JSON response.
async fn downgrade(response: Response, version: &str, method: &Method, route: &str) -> Response {
    let changes: Vec<&Change> = CHANGES
        .iter()
        .rev()
        .filter(|c| c.since > version && (c.applies)(method, route))
        .collect();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if changes.is_empty() || !is_json || !response.status().is_success() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return ApiError::Internal(anyhow::anyhow!("reading a response to downgrade it"))
            .into_response();
    };
    let Ok(mut value) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    for change in changes {
        (change.downgrade)(route, &mut value);
    }
    let bytes = serde_json::to_vec(&value).expect("a JSON value serializes");
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(bytes))
}

/// Requests by tenant and version since the process started, for
/// `GET /v1/admin/api-versions`: which tenants still use an old version.
/// Sharded by tenant so that two requests seldom meet on one lock; a shard
/// that grows past its bound starts over (a count is then since then).
pub struct Usage {
    shards: Vec<Mutex<HashMap<(Uuid, &'static str), Seen>>>,
}

#[derive(Clone, Copy)]
pub struct Seen {
    pub requests: u64,
    pub last_seen: DateTime<Utc>,
}

const SHARDS: usize = 16;
const PER_SHARD: usize = 10_000;

impl Default for Usage {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

impl Usage {
    fn shard(&self, tenant: Uuid) -> &Mutex<HashMap<(Uuid, &'static str), Seen>> {
        &self.shards[tenant.as_u128() as usize % SHARDS]
    }

    pub fn count(&self, tenant: Uuid, version: &'static str) {
        let mut shard = self.shard(tenant).lock().unwrap_or_else(|e| e.into_inner());
        if shard.len() >= PER_SHARD && !shard.contains_key(&(tenant, version)) {
            shard.clear();
        }
        let now = Utc::now();
        let seen = shard.entry((tenant, version)).or_insert(Seen {
            requests: 0,
            last_seen: now,
        });
        seen.requests += 1;
        seen.last_seen = now;
    }

    /// Every (tenant, version) seen, with its count, in no order.
    pub fn snapshot(&self) -> Vec<(Uuid, &'static str, Seen)> {
        self.shards
            .iter()
            .flat_map(|s| {
                let shard = s.lock().unwrap_or_else(|e| e.into_inner());
                shard
                    .iter()
                    .map(|((t, v), seen)| (*t, *v, *seen))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_dated_in_order_and_changes_name_one() {
        for pair in VERSIONS.windows(2) {
            assert!(pair[0].date < pair[1].date, "oldest first");
        }
        for v in VERSIONS {
            assert!(midnight(v.date).is_some(), "{} is a date", v.date);
        }
        for c in CHANGES {
            assert!(find(c.since).is_some(), "{} is a version", c.since);
        }
        assert!(
            VERSIONS.last().expect("one").deprecated.is_none(),
            "the newest is not deprecated"
        );
    }

    #[test]
    fn a_deprecated_version_says_since_when_and_until_when() {
        let mut headers = HeaderMap::new();
        stamp(&mut headers, &VERSIONS[0]);
        assert_eq!(headers[&HEADER], "2026-11-01");
        assert_eq!(headers[&DEPRECATION], "@1796515200");
        assert_eq!(headers[&SUNSET], "Wed, 30 Jun 2027 00:00:00 GMT");
        let mut headers = HeaderMap::new();
        stamp(&mut headers, find(newest()).expect("newest"));
        assert!(headers.get(&DEPRECATION).is_none());
    }

    #[test]
    fn usage_counts_by_tenant_and_version() {
        let usage = Usage::default();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        usage.count(a, "2026-11-01");
        usage.count(a, "2026-11-01");
        usage.count(a, "2026-12-06");
        usage.count(b, "2026-12-06");
        let mut seen: Vec<(Uuid, &str, u64)> = usage
            .snapshot()
            .into_iter()
            .map(|(t, v, s)| (t, v, s.requests))
            .collect();
        seen.sort();
        let mut expected = vec![
            (a, "2026-11-01", 2),
            (a, "2026-12-06", 1),
            (b, "2026-12-06", 1),
        ];
        expected.sort();
        assert_eq!(seen, expected);
    }
}
