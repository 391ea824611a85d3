//! Events: create, list upcoming, read, edit, cancel.

use std::sync::Arc;

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tenantry_core::Role;
use tenantry_db::events::{self, Event, EventPatch, NewEvent, UpcomingQuery};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::origin::OriginView;
use super::{Checks, double_option, text};
use crate::pagination::{Page, PageParams, TimeKey};
use crate::problem::{ApiError, FieldError, Json, Path, Query};
use crate::request::{Scope, not_a_member};
use crate::state::AppState;

/// This module's routes, each registered once with its OpenAPI operation.
pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(create_event, list_events))
        .routes(routes!(get_event, edit_event, cancel_event))
}

pub const MAX_TITLE_CHARS: usize = 200;
pub const MAX_DESCRIPTION_CHARS: usize = 10_000;
pub const MAX_LOCATION_CHARS: usize = 500;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventView {
    pub id: Uuid,
    pub created_by: Uuid,
    pub title: String,
    pub description: Option<String>,
    pub start_date: DateTime<Utc>,
    pub end_date: Option<DateTime<Utc>>,
    pub location_name: Option<String>,
    /// `scheduled` or `cancelled` (before API version 2026-12-06:
    /// `cancelled`, a boolean).
    pub status: EventStatus,
    pub cancelled_at: Option<DateTime<Utc>>,
    /// Set when the event was shared from another community.
    pub origin: Option<OriginView>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Where an event stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventStatus {
    Scheduled,
    Cancelled,
}

impl From<Event> for EventView {
    fn from(e: Event) -> Self {
        Self {
            id: e.id,
            created_by: e.created_by,
            title: e.title,
            description: e.description,
            start_date: e.start_date,
            end_date: e.end_date,
            location_name: e.location_name,
            status: match e.cancelled_at {
                Some(_) => EventStatus::Cancelled,
                None => EventStatus::Scheduled,
            },
            cancelled_at: e.cancelled_at,
            origin: e.origin.map(OriginView::from),
            created_at: e.created_at,
            updated_at: e.updated_at,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEvent {
    #[schema(schema_with = crate::openapi::text::<{ MAX_TITLE_CHARS }>)]
    pub title: String,
    #[schema(schema_with = crate::openapi::text_or_null::<{ MAX_DESCRIPTION_CHARS }>)]
    pub description: Option<String>,
    /// RFC 3339.
    pub start_date: DateTime<Utc>,
    /// Not before `start_date`.
    pub end_date: Option<DateTime<Utc>>,
    #[schema(schema_with = crate::openapi::text_or_null::<{ MAX_LOCATION_CHARS }>)]
    pub location_name: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchEvent {
    #[schema(schema_with = crate::openapi::text_or_null::<{ MAX_TITLE_CHARS }>)]
    pub title: Option<String>,
    /// null removes the description.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(schema_with = crate::openapi::text_or_null::<{ MAX_DESCRIPTION_CHARS }>)]
    pub description: Option<Option<String>>,
    pub start_date: Option<DateTime<Utc>>,
    /// null removes the end date; the dates after the edit must be in order.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub end_date: Option<Option<DateTime<Utc>>>,
    /// null removes the location.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(schema_with = crate::openapi::text_or_null::<{ MAX_LOCATION_CHARS }>)]
    pub location_name: Option<Option<String>>,
}

/// An optional text field: absent or null stays `None`.
fn optional_text(
    checks: &mut Checks,
    field: &str,
    value: Option<&str>,
    max: usize,
) -> Option<Option<String>> {
    match value {
        None => Some(None),
        Some(v) => checks.check(text(field, v, max)).map(Some),
    }
}

fn check_dates(
    checks: &mut Checks,
    start: DateTime<Utc>,
    end: Option<DateTime<Utc>>,
) -> Option<()> {
    checks.check(match end {
        Some(end) if end < start => {
            Err(FieldError::new("end_date", "must not be before start_date"))
        }
        _ => Ok(()),
    })
}

fn event_not_found() -> ApiError {
    ApiError::not_found("event")
}

#[utoipa::path(post, path = "/v1/events", tag = "events", request_body = CreateEvent,
    responses((status = 201, body = EventView), (status = 403, body = crate::problem::Problem),
              (status = 422, body = crate::problem::Problem)),
    security(("user_jwt" = [], "tenant" = [])))]
pub async fn create_event(
    mut scope: Scope,
    Json(body): Json<CreateEvent>,
) -> Result<(StatusCode, Json<EventView>), ApiError> {
    let mut checks = Checks::default();
    let title = checks.check(text("title", &body.title, MAX_TITLE_CHARS));
    let description = optional_text(
        &mut checks,
        "description",
        body.description.as_deref(),
        MAX_DESCRIPTION_CHARS,
    );
    let location = optional_text(
        &mut checks,
        "location_name",
        body.location_name.as_deref(),
        MAX_LOCATION_CHARS,
    );
    check_dates(&mut checks, body.start_date, body.end_date);
    checks.finish()?;
    scope.member().await?;
    let new = NewEvent {
        title: title.unwrap_or_default(),
        description: description.flatten(),
        start_date: body.start_date,
        end_date: body.end_date,
        location_name: location.flatten(),
    };
    let event = events::create(scope.tx, scope.tenant.id, scope.user.id, &new).await?;
    Ok((StatusCode::CREATED, Json(event.into())))
}

/// `?from=&to=` (RFC 3339) and the page.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
pub struct UpcomingParams {
    /// Events starting at or after this (RFC 3339); default now.
    #[param(value_type = Option<DateTime<Utc>>)]
    pub from: Option<String>,
    /// Events starting before this (RFC 3339).
    #[param(value_type = Option<DateTime<Utc>>)]
    pub to: Option<String>,
    #[param(schema_with = crate::pagination::limit_schema)]
    pub limit: Option<String>,
    #[param(schema_with = crate::pagination::cursor_schema)]
    pub cursor: Option<String>,
}

/// Parses an RFC 3339 query parameter (400 if malformed).
pub(crate) fn instant(name: &str, raw: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    raw.map(|s| {
        DateTime::parse_from_rfc3339(s)
            .map(|d| d.with_timezone(&Utc))
            .map_err(|_| ApiError::BadRequest(format!("{name} must be an RFC 3339 timestamp")))
    })
    .transpose()
}

/// Upcoming events, soonest first (`start_date ≥ from`, default now),
/// keyset-paginated; cancelled events are left out.
#[utoipa::path(get, path = "/v1/events", tag = "events", params(UpcomingParams),
    responses((status = 200, body = Page<EventView>), (status = 400, body = crate::problem::Problem)),
    security(("user_jwt" = [], "tenant" = [])))]
pub async fn list_events(
    scope: Scope,
    Query(params): Query<UpcomingParams>,
) -> Result<Json<Page<EventView>>, ApiError> {
    let page = PageParams {
        limit: params.limit,
        cursor: params.cursor,
    };
    let limit = page.limit()?;
    let tenant = scope.tenant.id;
    let after: Option<TimeKey> = page.after(tenant, "events")?;
    let from = instant("from", params.from.as_deref())?.unwrap_or_else(Utc::now);
    let to = instant("to", params.to.as_deref())?;
    let query = UpcomingQuery {
        from,
        to,
        after: after.map(|k| (k.at, k.id)),
        limit: limit + 1,
    };
    let viewer = scope.viewer();
    let (role, rows) =
        events::list_upcoming_for_member_and_commit(scope.tx, tenant, viewer, query).await?;
    if role.is_none() {
        return Err(not_a_member());
    }
    Ok(Json(Page::from_rows(
        rows,
        limit,
        tenant,
        "events",
        |e| {
            let (at, id) = e.keyset();
            TimeKey { at, id }
        },
        EventView::from,
    )))
}

#[utoipa::path(get, path = "/v1/events/{id}", tag = "events",
    responses((status = 200, body = EventView), (status = 404, body = crate::problem::Problem)),
    security(("user_jwt" = [], "tenant" = [])))]
pub async fn get_event(scope: Scope, Path(id): Path<Uuid>) -> Result<Json<EventView>, ApiError> {
    let tenant = scope.tenant.id;
    let viewer = scope.viewer();
    let (role, event) = events::get_for_member_and_commit(scope.tx, tenant, viewer, id).await?;
    if role.is_none() {
        return Err(not_a_member());
    }
    Ok(Json(event.ok_or_else(event_not_found)?.into()))
}

/// The event, locked; 404 if missing or cancelled, 403 unless the caller
/// created it or moderates.
async fn lock_if_may_change(scope: &mut Scope, id: Uuid) -> Result<Event, ApiError> {
    let role = scope.member().await?;
    let event = events::get_for_update(&mut scope.tx, scope.tenant.id, id)
        .await?
        .ok_or_else(event_not_found)?;
    if event.created_by != scope.user.id && role < Role::Moderator {
        return Err(ApiError::Forbidden(
            "only the event's creator or a moderator may change it".to_owned(),
        ));
    }
    Ok(event)
}

#[utoipa::path(patch, path = "/v1/events/{id}", tag = "events", request_body = PatchEvent,
    responses((status = 200, body = EventView), (status = 403, body = crate::problem::Problem),
              (status = 404, body = crate::problem::Problem), (status = 422, body = crate::problem::Problem)),
    security(("user_jwt" = [], "tenant" = [])))]
pub async fn edit_event(
    mut scope: Scope,
    Path(id): Path<Uuid>,
    Json(body): Json<PatchEvent>,
) -> Result<Json<EventView>, ApiError> {
    let mut checks = Checks::default();
    let title = body
        .title
        .as_deref()
        .map(|t| checks.check(text("title", t, MAX_TITLE_CHARS)));
    let description = body.description.as_ref().map(|d| {
        optional_text(
            &mut checks,
            "description",
            d.as_deref(),
            MAX_DESCRIPTION_CHARS,
        )
    });
    let location = body.location_name.as_ref().map(|l| {
        optional_text(
            &mut checks,
            "location_name",
            l.as_deref(),
            MAX_LOCATION_CHARS,
        )
    });
    checks.finish()?;
    let current = lock_if_may_change(&mut scope, id).await?;
    // The dates as they will be after the edit must still be in order.
    let mut checks = Checks::default();
    let start = body.start_date.unwrap_or(current.start_date);
    let end = body.end_date.unwrap_or(current.end_date);
    check_dates(&mut checks, start, end);
    checks.finish()?;
    let patch = EventPatch {
        title: title.flatten(),
        description: description.flatten(),
        start_date: body.start_date,
        end_date: body.end_date,
        location_name: location.flatten(),
    };
    let event = events::update_and_commit(scope.tx, scope.tenant.id, id, &patch)
        .await?
        .ok_or_else(event_not_found)?;
    Ok(Json(event.into()))
}

/// Cancels the event: it leaves the upcoming lists, the feed and search;
/// reading it by id shows `cancelled: true`.
#[utoipa::path(delete, path = "/v1/events/{id}", tag = "events",
    responses((status = 204), (status = 403, body = crate::problem::Problem),
              (status = 404, body = crate::problem::Problem)),
    security(("user_jwt" = [], "tenant" = [])))]
pub async fn cancel_event(mut scope: Scope, Path(id): Path<Uuid>) -> Result<StatusCode, ApiError> {
    lock_if_may_change(&mut scope, id).await?;
    if !events::cancel_and_commit(scope.tx, scope.tenant.id, id).await? {
        return Err(event_not_found());
    }
    Ok(StatusCode::NO_CONTENT)
}
