//! Analytics ingestion (group-committed) and the daily statistics.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tenantry_core::Role;
use tenantry_jobs::ingest::{Event, IngestError};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Checks, no_nul, text};
use crate::problem::{ApiError, FieldError, Json, Query};
use crate::request::Scope;
use crate::state::AppState;

/// This module's routes, each registered once with its OpenAPI operation.
pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(ingest))
        .routes(routes!(daily))
}

/// Events one request may carry.
pub const MAX_EVENTS: usize = 1_000;
/// The largest `properties` object of one event, serialised.
pub const MAX_PROPERTIES_BYTES: usize = 8 * 1024;
/// How far in the future `occurred_at` may be (clock skew).
const MAX_FUTURE: Duration = Duration::days(1);
/// How old an event may be.
const MAX_AGE: Duration = Duration::days(365);

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventsBody {
    /// 1 to 1,000 events.
    #[schema(min_items = 1, max_items = 1000)]
    pub events: Vec<EventBody>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventBody {
    /// What happened, e.g. `page_view` (1 to 100 characters).
    #[serde(rename = "type")]
    pub kind: String,
    /// A JSON object (at most 8 KiB serialised).
    #[schema(value_type = Option<crate::openapi::JsonObject>)]
    pub properties: Option<Value>,
    /// Default: now. At most a day ahead, at most a year back.
    pub occurred_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Accepted {
    /// How many events were committed.
    pub accepted: usize,
}

fn event(i: usize, e: EventBody, now: DateTime<Utc>) -> Result<Event, FieldError> {
    let kind = text(&format!("events[{i}].type"), &e.kind, 100)?;
    let field = format!("events[{i}].properties");
    let properties = match e.properties {
        None => Value::Object(Default::default()),
        Some(v @ Value::Object(_)) => {
            no_nul(&field, &v)?;
            if serde_json::to_vec(&v).map_or(usize::MAX, |b| b.len()) > MAX_PROPERTIES_BYTES {
                return Err(FieldError::new(
                    field,
                    format!("must be at most {MAX_PROPERTIES_BYTES} bytes"),
                ));
            }
            v
        }
        Some(_) => return Err(FieldError::new(field, "must be a JSON object")),
    };
    let occurred_at = e.occurred_at.unwrap_or(now);
    if occurred_at > now + MAX_FUTURE || occurred_at < now - MAX_AGE {
        return Err(FieldError::new(
            format!("events[{i}].occurred_at"),
            "must be within the last year and at most a day ahead",
        ));
    }
    Ok(Event {
        kind,
        properties,
        occurred_at,
    })
}

/// Records analytics events. Answers 202 only once they are committed
/// (written with other requests' events in one group commit); 503 if the
/// write failed, in which case none of them was written.
#[utoipa::path(post, path = "/v1/analytics/events", tag = "analytics", request_body = EventsBody,
    responses((status = 202, body = Accepted), (status = 403, body = crate::problem::Problem),
              (status = 422, body = crate::problem::Problem),
              (status = 503, body = crate::problem::Problem)),
    security(("user_jwt" = [], "tenant" = [])))]
pub async fn ingest(
    State(state): State<Arc<AppState>>,
    scope: Scope,
    Json(body): Json<EventsBody>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    if body.events.is_empty() || body.events.len() > MAX_EVENTS {
        return Err(ApiError::validation(
            "events",
            format!("must hold 1 to {MAX_EVENTS} events"),
        ));
    }
    let now = Utc::now();
    let mut checks = Checks::default();
    let events: Vec<Event> = body
        .events
        .into_iter()
        .enumerate()
        .filter_map(|(i, e)| checks.check(event(i, e, now)))
        .collect();
    checks.finish()?;
    // The membership check is the only statement of this request's own
    // transaction; the scope (and its place in the tenant's database share)
    // is released before waiting for the group commit, which writes for
    // many requests at once.
    let (tenant, user, quota, record) = {
        let mut scope = scope;
        scope.member().await?;
        (
            scope.tenant.id,
            scope.user.id,
            scope.limits.analytics_events_per_day,
            scope.tenant.clone(),
        )
    };
    // The collector of the tenant's cell.
    let ingest = state.ingest_of(&record)?;
    match ingest.submit(tenant, user, quota, events).await {
        Ok(accepted) => {
            state.usage.analytics(tenant, accepted as u64);
            Ok((StatusCode::ACCEPTED, Json(Accepted { accepted })))
        }
        Err(IngestError::QuotaExceeded { .. }) => Err(ApiError::QuotaExceeded {
            quota: "analytics_events_per_day".to_owned(),
        }),
        Err(IngestError::Unavailable(reason)) => {
            tracing::warn!(%reason, "analytics events not committed");
            Err(ApiError::Overloaded { retry_after: 1 })
        }
        Err(IngestError::DatabaseUnavailable(reason)) => {
            Err(tenantry_db::DbError::Unavailable(reason).into())
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct StatsParams {
    /// First day (YYYY-MM-DD, UTC), not after `to`; default 29 days before
    /// `to`. A range covers at most 366 days.
    #[param(value_type = Option<NaiveDate>)]
    pub from: Option<String>,
    /// Last day (inclusive); default today.
    #[param(value_type = Option<NaiveDate>)]
    pub to: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DayView {
    #[schema(value_type = String, example = "2026-11-24")]
    pub day: NaiveDate,
    pub posts: i64,
    /// Community events created.
    pub events: i64,
    pub comments: i64,
    pub likes: i64,
    pub active_users: i64,
    pub analytics_events: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DailyStats {
    /// One entry per day from `from` to `to`, oldest first (zeros for quiet
    /// days).
    pub items: Vec<DayView>,
}

/// The longest range one request may ask for.
const MAX_DAYS: i64 = 366;

fn day(field: &str, raw: &str) -> Result<NaiveDate, ApiError> {
    NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .map_err(|_| ApiError::BadRequest(format!("{field} must be a date (YYYY-MM-DD)")))
}

/// Daily posts, events, comments, likes, active users and analytics events, read
/// from summaries kept incrementally by the writes (admin+).
#[utoipa::path(get, path = "/v1/stats/daily", tag = "analytics", params(StatsParams),
    responses((status = 200, body = DailyStats), (status = 400, body = crate::problem::Problem),
              (status = 403, body = crate::problem::Problem)),
    security(("user_jwt" = [], "tenant" = [])))]
pub async fn daily(
    mut scope: Scope,
    Query(params): Query<StatsParams>,
) -> Result<Json<DailyStats>, ApiError> {
    let to = match &params.to {
        Some(raw) => day("to", raw)?,
        None => Utc::now().date_naive(),
    };
    let from = match &params.from {
        Some(raw) => day("from", raw)?,
        None => to - Duration::days(29),
    };
    if from > to {
        return Err(ApiError::BadRequest("from must not be after to".to_owned()));
    }
    if (to - from).num_days() >= MAX_DAYS {
        return Err(ApiError::BadRequest(format!(
            "a range covers at most {MAX_DAYS} days"
        )));
    }
    scope.require(Role::Admin).await?;
    let tenant = scope.tenant.id;
    let rows = tenantry_db::stats::daily_and_commit(scope.tx, tenant, from, to).await?;
    let mut rows = rows.into_iter().peekable();
    let mut items = Vec::new();
    let mut d = from;
    while d <= to {
        let view = match rows.next_if(|r| r.day == Some(d)) {
            Some(r) => DayView {
                day: d,
                posts: r.posts,
                events: r.events,
                comments: r.comments,
                likes: r.likes,
                active_users: r.active_users,
                analytics_events: r.analytics_events,
            },
            None => DayView {
                day: d,
                posts: 0,
                events: 0,
                comments: 0,
                likes: 0,
                active_users: 0,
                analytics_events: 0,
            },
        };
        items.push(view);
        d += Duration::days(1);
    }
    Ok(Json(DailyStats { items }))
}
