//! Journeys (a member's trips: status, public flag, dates, locations) and
//! their activities.

use std::sync::Arc;

use axum::http::StatusCode;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tenantry_core::Role;
use tenantry_db::journeys::{
    self, ActivitiesPage, Activity, ActivityQuery, Added, Journey, NewActivity, NewJourney,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::events::instant;
use super::{Checks, double_option, no_nul, text};
use crate::pagination::{Page, PageParams, TimeKey};
use crate::problem::{ApiError, FieldError, Json, Path, Query};
use crate::request::{Scope, not_a_member};
use crate::state::AppState;

/// This module's routes, each registered once with its OpenAPI operation.
pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(create_journey, list_journeys))
        .routes(routes!(get_journey, edit_journey))
        .routes(routes!(add_activity, list_activities))
        .routes(routes!(edit_activity))
}

const MAX_TITLE_CHARS: usize = 200;
const MAX_TEXT_CHARS: usize = 10_000;
/// A journey's locations or an activity's location, as stored JSON.
const MAX_LOCATION_BYTES: usize = 64 * 1024;
const STATUSES: [&str; 4] = ["planned", "active", "completed", "cancelled"];

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JourneyView {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub title: String,
    pub description: Option<String>,
    /// planned, active, completed or cancelled.
    pub status: String,
    pub is_public: bool,
    pub start_date: Option<NaiveDate>,
    pub end_date: Option<NaiveDate>,
    #[schema(value_type = Vec<Value>)]
    pub locations: Value,
    /// The span of the journey's activities.
    pub first_activity_at: Option<DateTime<Utc>>,
    pub last_activity_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Journey> for JourneyView {
    fn from(j: Journey) -> Self {
        Self {
            id: j.id,
            owner_id: j.owner_id,
            title: j.title,
            description: j.description,
            status: j.status,
            is_public: j.is_public,
            start_date: j.start_date,
            end_date: j.end_date,
            locations: j.locations,
            first_activity_at: j.first_activity_at,
            last_activity_at: j.last_activity_at,
            created_at: j.created_at,
            updated_at: j.updated_at,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJourney {
    #[schema(schema_with = crate::openapi::text::<{ MAX_TITLE_CHARS }>)]
    pub title: String,
    #[schema(schema_with = crate::openapi::text_or_null::<{ MAX_TEXT_CHARS }>)]
    pub description: Option<String>,
    /// planned (default), active, completed or cancelled.
    #[schema(schema_with = status_or_null)]
    pub status: Option<String>,
    /// Default false: only the owner sees it.
    pub is_public: Option<bool>,
    pub start_date: Option<NaiveDate>,
    /// Not before `start_date`.
    pub end_date: Option<NaiveDate>,
    /// A JSON array of locations (any JSON values), at most 64 KiB of JSON.
    #[schema(value_type = Option<Vec<crate::openapi::JsonValue>>)]
    pub locations: Option<Value>,
}

/// The schema of a journey's `status` (or null: unchanged, or the default).
fn status_or_null() -> utoipa::openapi::Object {
    crate::openapi::one_of_or_null(&STATUSES)
}

fn json_size(field: &str, value: &Value) -> Result<(), FieldError> {
    no_nul(field, value)?;
    if value.to_string().len() > MAX_LOCATION_BYTES {
        return Err(FieldError::new(
            field,
            format!("must be at most {MAX_LOCATION_BYTES} bytes of JSON"),
        ));
    }
    Ok(())
}

#[utoipa::path(post, path = "/v1/journeys", tag = "journeys", request_body = CreateJourney,
    responses((status = 201, body = JourneyView), (status = 403, body = crate::problem::Problem),
              (status = 422, body = crate::problem::Problem)),
    security(("user_jwt" = [], "tenant" = [])))]
pub async fn create_journey(
    mut scope: Scope,
    Json(body): Json<CreateJourney>,
) -> Result<(StatusCode, Json<JourneyView>), ApiError> {
    let mut checks = Checks::default();
    let title = checks.check(text("title", &body.title, MAX_TITLE_CHARS));
    let description = match body.description.as_deref() {
        None => None,
        Some(d) => checks.check(text("description", d, MAX_TEXT_CHARS)),
    };
    let status = body.status.unwrap_or_else(|| "planned".to_owned());
    checks.check(status_check(&status));
    if let (Some(start), Some(end)) = (body.start_date, body.end_date) {
        checks.check(if end < start {
            Err(FieldError::new("end_date", "must not be before start_date"))
        } else {
            Ok(())
        });
    }
    let locations = body.locations.unwrap_or_else(|| Value::Array(Vec::new()));
    checks.check(if locations.is_array() {
        json_size("locations", &locations)
    } else {
        Err(FieldError::new("locations", "must be a JSON array"))
    });
    checks.finish()?;
    scope.member().await?;
    let new = NewJourney {
        title: title.unwrap_or_default(),
        description,
        status,
        is_public: body.is_public.unwrap_or(false),
        start_date: body.start_date,
        end_date: body.end_date,
        locations,
    };
    let journey =
        journeys::create_and_commit(scope.tx, scope.tenant.id, scope.user.id, &new).await?;
    Ok((StatusCode::CREATED, Json(journey.into())))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
pub struct JourneyListParams {
    /// Whose journeys: default the caller's. Another member's list shows
    /// only their public journeys.
    #[param(value_type = Option<Uuid>)]
    pub user_id: Option<String>,
    #[param(schema_with = crate::pagination::limit_schema)]
    pub limit: Option<String>,
    #[param(schema_with = crate::pagination::cursor_schema)]
    pub cursor: Option<String>,
}

/// A member's journeys, newest first.
#[utoipa::path(get, path = "/v1/journeys", tag = "journeys", params(JourneyListParams),
    responses((status = 200, body = Page<JourneyView>)), security(("user_jwt" = [], "tenant" = [])))]
pub async fn list_journeys(
    scope: Scope,
    Query(params): Query<JourneyListParams>,
) -> Result<Json<Page<JourneyView>>, ApiError> {
    let page = PageParams {
        limit: params.limit,
        cursor: params.cursor,
    };
    let limit = page.limit()?;
    let (tenant, viewer) = (scope.tenant.id, scope.viewer());
    let owner = match params.user_id.as_deref() {
        None => viewer,
        Some(raw) => Uuid::parse_str(raw)
            .map_err(|_| ApiError::BadRequest("user_id must be a UUID".to_owned()))?,
    };
    let list = format!("journeys:{owner}");
    let after: Option<TimeKey> = page.after(tenant, &list)?;
    let (role, rows) = journeys::list_for_member_and_commit(
        scope.tx,
        tenant,
        viewer,
        owner,
        after.map(Into::into),
        limit + 1,
    )
    .await?;
    if role.is_none() {
        return Err(not_a_member());
    }
    Ok(Json(Page::from_rows(
        rows,
        limit,
        tenant,
        &list,
        |j| TimeKey::from(j.keyset()),
        JourneyView::from,
    )))
}

fn journey_not_found() -> ApiError {
    ApiError::not_found("journey")
}

/// A journey the caller may see (public, or their own); someone else's
/// private journey answers 404.
#[utoipa::path(get, path = "/v1/journeys/{id}", tag = "journeys",
    responses((status = 200, body = JourneyView), (status = 404, body = crate::problem::Problem)),
    security(("user_jwt" = [], "tenant" = [])))]
pub async fn get_journey(
    scope: Scope,
    Path(id): Path<Uuid>,
) -> Result<Json<JourneyView>, ApiError> {
    let tenant = scope.tenant.id;
    let viewer = scope.viewer();
    let (role, journey) = journeys::get_for_member_and_commit(scope.tx, tenant, viewer, id).await?;
    if role.is_none() {
        return Err(not_a_member());
    }
    Ok(Json(journey.ok_or_else(journey_not_found)?.into()))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchJourney {
    #[schema(schema_with = crate::openapi::text_or_null::<{ MAX_TITLE_CHARS }>)]
    pub title: Option<String>,
    /// null removes the description.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(schema_with = crate::openapi::text_or_null::<{ MAX_TEXT_CHARS }>)]
    pub description: Option<Option<String>>,
    /// planned, active, completed or cancelled.
    #[schema(schema_with = status_or_null)]
    pub status: Option<String>,
    pub is_public: Option<bool>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<NaiveDate>)]
    pub start_date: Option<Option<NaiveDate>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<NaiveDate>)]
    pub end_date: Option<Option<NaiveDate>>,
    /// A JSON array of locations (any JSON values), at most 64 KiB of JSON.
    #[schema(value_type = Option<Vec<crate::openapi::JsonValue>>)]
    pub locations: Option<Value>,
}

fn status_check(status: &str) -> Result<(), FieldError> {
    if STATUSES.contains(&status) {
        Ok(())
    } else {
        Err(FieldError::new(
            "status",
            "must be planned, active, completed or cancelled",
        ))
    }
}

/// The owner edits their journey (status as it progresses, the public flag,
/// dates, locations); `null` clears an optional field.
#[utoipa::path(patch, path = "/v1/journeys/{id}", tag = "journeys", request_body = PatchJourney,
    responses((status = 200, body = JourneyView), (status = 403, body = crate::problem::Problem),
              (status = 404, body = crate::problem::Problem), (status = 422, body = crate::problem::Problem)),
    security(("user_jwt" = [], "tenant" = [])))]
pub async fn edit_journey(
    mut scope: Scope,
    Path(id): Path<Uuid>,
    Json(body): Json<PatchJourney>,
) -> Result<Json<JourneyView>, ApiError> {
    scope.member().await?;
    let (tenant, user) = (scope.tenant.id, scope.user.id);
    let current = journeys::get_for_update(&mut scope.tx, tenant, user, id)
        .await?
        .ok_or_else(journey_not_found)?;
    if current.owner_id != user {
        return Err(ApiError::Forbidden(
            "only the journey's owner may change it".to_owned(),
        ));
    }
    let mut checks = Checks::default();
    let title = match body.title.as_deref() {
        None => Some(current.title),
        Some(t) => checks.check(text("title", t, MAX_TITLE_CHARS)),
    };
    let description = match body.description {
        None => current.description,
        Some(None) => None,
        Some(Some(d)) => checks.check(text("description", &d, MAX_TEXT_CHARS)),
    };
    let status = body.status.unwrap_or(current.status);
    checks.check(status_check(&status));
    let start_date = body.start_date.unwrap_or(current.start_date);
    let end_date = body.end_date.unwrap_or(current.end_date);
    if let (Some(start), Some(end)) = (start_date, end_date)
        && end < start
    {
        checks.check::<()>(Err(FieldError::new(
            "end_date",
            "must not be before start_date",
        )));
    }
    let locations = body.locations.unwrap_or(current.locations);
    checks.check(if locations.is_array() {
        json_size("locations", &locations)
    } else {
        Err(FieldError::new("locations", "must be a JSON array"))
    });
    checks.finish()?;
    let edit = NewJourney {
        title: title.unwrap_or_default(),
        description,
        status,
        is_public: body.is_public.unwrap_or(current.is_public),
        start_date,
        end_date,
        locations,
    };
    let journey = journeys::update_and_commit(scope.tx, tenant, id, &edit)
        .await?
        .ok_or_else(journey_not_found)?;
    Ok(Json(journey.into()))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ActivityView {
    pub id: Uuid,
    pub journey_id: Uuid,
    pub title: String,
    pub notes: Option<String>,
    #[schema(value_type = Option<Value>)]
    pub location: Option<Value>,
    pub start_datetime: DateTime<Utc>,
    pub end_datetime: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl From<Activity> for ActivityView {
    fn from(a: Activity) -> Self {
        Self {
            id: a.id,
            journey_id: a.journey_id,
            title: a.title,
            notes: a.notes,
            location: a.location,
            start_datetime: a.start_datetime,
            end_datetime: a.end_datetime,
            created_at: a.created_at,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateActivity {
    #[schema(schema_with = crate::openapi::text::<{ MAX_TITLE_CHARS }>)]
    pub title: String,
    #[schema(schema_with = crate::openapi::text_or_null::<{ MAX_TEXT_CHARS }>)]
    pub notes: Option<String>,
    #[schema(value_type = Option<crate::openapi::JsonValue>)]
    pub location: Option<Value>,
    /// RFC 3339; chooses the activity's monthly partition.
    pub start_datetime: DateTime<Utc>,
    pub end_datetime: Option<DateTime<Utc>>,
}

/// Adds an activity to one of the caller's journeys.
#[utoipa::path(post, path = "/v1/journeys/{id}/activities", tag = "journeys",
    request_body = CreateActivity,
    responses((status = 201, body = ActivityView), (status = 403, body = crate::problem::Problem),
              (status = 404, body = crate::problem::Problem), (status = 422, body = crate::problem::Problem)),
    security(("user_jwt" = [], "tenant" = [])))]
pub async fn add_activity(
    scope: Scope,
    Path(id): Path<Uuid>,
    Json(body): Json<CreateActivity>,
) -> Result<(StatusCode, Json<ActivityView>), ApiError> {
    let mut checks = Checks::default();
    let title = checks.check(text("title", &body.title, MAX_TITLE_CHARS));
    let notes = match body.notes.as_deref() {
        None => None,
        Some(n) => checks.check(text("notes", n, MAX_TEXT_CHARS)),
    };
    if let Some(location) = &body.location {
        checks.check(json_size("location", location));
    }
    if let Some(end) = body.end_datetime
        && end < body.start_datetime
    {
        checks.check::<()>(Err(FieldError::new(
            "end_datetime",
            "must not be before start_datetime",
        )));
    }
    checks.finish()?;
    let new = NewActivity {
        title: title.unwrap_or_default(),
        notes,
        location: body.location,
        start_datetime: body.start_datetime,
        end_datetime: body.end_datetime,
    };
    let (tenant, user) = (scope.tenant.id, scope.user.id);
    match journeys::add_activity_and_commit(scope.tx, tenant, id, user, &new).await? {
        Added::NotAMember => Err(not_a_member()),
        Added::NoSuchJourney => Err(journey_not_found()),
        Added::NotTheOwner => Err(ApiError::Forbidden(
            "only the journey's owner may add activities".to_owned(),
        )),
        Added::Added(activity) => Ok((StatusCode::CREATED, Json(activity.into()))),
    }
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
pub struct ActivityParams {
    /// Activities starting at or after this (RFC 3339); default the first.
    #[param(value_type = Option<DateTime<Utc>>)]
    pub from: Option<String>,
    /// Activities starting before this (RFC 3339); default up to the last.
    #[param(value_type = Option<DateTime<Utc>>)]
    pub to: Option<String>,
    #[param(schema_with = crate::pagination::limit_schema)]
    pub limit: Option<String>,
    #[param(schema_with = crate::pagination::cursor_schema)]
    pub cursor: Option<String>,
}

/// A journey's activities, earliest first, keyset-paginated.
#[utoipa::path(get, path = "/v1/journeys/{id}/activities", tag = "journeys", params(ActivityParams),
    responses((status = 200, body = Page<ActivityView>), (status = 404, body = crate::problem::Problem)),
    security(("user_jwt" = [], "tenant" = [])))]
pub async fn list_activities(
    scope: Scope,
    Path(id): Path<Uuid>,
    Query(params): Query<ActivityParams>,
) -> Result<Json<Page<ActivityView>>, ApiError> {
    let page = PageParams {
        limit: params.limit,
        cursor: params.cursor,
    };
    let limit = page.limit()?;
    let tenant = scope.tenant.id;
    let list = format!("activities:{id}");
    let after: Option<TimeKey> = page.after(tenant, &list)?;
    let query = ActivityQuery {
        from: instant("from", params.from.as_deref())?,
        to: instant("to", params.to.as_deref())?,
        after: after.map(|k| (k.at, k.id)),
        limit: limit + 1,
    };
    let viewer = scope.viewer();
    let rows =
        match journeys::list_activities_for_member_and_commit(scope.tx, tenant, id, viewer, query)
            .await?
        {
            ActivitiesPage::NotAMember => return Err(not_a_member()),
            ActivitiesPage::NoSuchJourney => return Err(journey_not_found()),
            ActivitiesPage::Page(rows) => rows,
        };
    Ok(Json(Page::from_rows(
        rows,
        limit,
        tenant,
        &list,
        |a| {
            let (at, id) = a.keyset();
            TimeKey { at, id }
        },
        ActivityView::from,
    )))
}

/// A JSON merge patch of an activity: the fields given replace the
/// activity's; `null` clears an optional one (`notes`, `location`,
/// `end_datetime`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchActivity {
    #[serde(default, deserialize_with = "double_option")]
    #[schema(schema_with = crate::openapi::text_or_null::<{ MAX_TITLE_CHARS }>)]
    pub title: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(schema_with = crate::openapi::text_or_null::<{ MAX_TEXT_CHARS }>)]
    pub notes: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<crate::openapi::JsonValue>)]
    pub location: Option<Option<Value>>,
    /// RFC 3339; a start in another month moves the activity to that
    /// month's partition.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub start_datetime: Option<Option<DateTime<Utc>>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub end_datetime: Option<Option<DateTime<Utc>>>,
}

impl PatchActivity {
    /// The names of the fields the patch sets (for the audit log).
    fn fields(&self) -> Vec<&'static str> {
        [
            ("title", self.title.is_some()),
            ("notes", self.notes.is_some()),
            ("location", self.location.is_some()),
            ("start_datetime", self.start_datetime.is_some()),
            ("end_datetime", self.end_datetime.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
    }
}

fn activity_not_found() -> ApiError {
    ApiError::not_found("activity")
}

/// Edits an activity: the journey's owner, or a moderator+ on a journey
/// they can see (public). Someone else's private journey, or an activity
/// not in this journey, is 404; a visible journey of someone else is 403
/// for a plain member. The activity is found within the journey's activity
/// span, so only those months' partitions are read. Recorded in the audit
/// log (`activity.update`).
#[utoipa::path(patch, path = "/v1/journeys/{id}/activities/{activity_id}", tag = "journeys",
    request_body = PatchActivity,
    params(("id" = Uuid, Path, description = "The journey"),
           ("activity_id" = Uuid, Path, description = "The activity")),
    responses((status = 200, body = ActivityView), (status = 403, body = crate::problem::Problem),
              (status = 404, body = crate::problem::Problem), (status = 422, body = crate::problem::Problem)),
    security(("user_jwt" = [], "tenant" = [])))]
pub async fn edit_activity(
    mut scope: Scope,
    Path((journey_id, activity_id)): Path<(Uuid, Uuid)>,
    Json(body): Json<PatchActivity>,
) -> Result<Json<ActivityView>, ApiError> {
    let role = scope.member().await?;
    let (tenant, user) = (scope.tenant.id, scope.user.id);
    // Locks the journey: its span (read next, and maybe moved) cannot
    // change under this edit, nor can a concurrent edit or addition.
    let journey = journeys::get_for_update(&mut scope.tx, tenant, user, journey_id)
        .await?
        .ok_or_else(journey_not_found)?;
    let moderated = journey.owner_id != user;
    if moderated && role < Role::Moderator {
        return Err(ApiError::Forbidden(
            "only the journey's owner or a moderator may change its activities".to_owned(),
        ));
    }
    let current = journeys::get_activity_for_update(&mut scope.tx, tenant, &journey, activity_id)
        .await?
        .ok_or_else(activity_not_found)?;

    let mut checks = Checks::default();
    let title = match body.title.as_ref() {
        None => Some(current.title.clone()),
        Some(None) => checks.check(Err(FieldError::new("title", "must not be null"))),
        Some(Some(t)) => checks.check(text("title", t, MAX_TITLE_CHARS)),
    };
    let notes = match body.notes.as_ref() {
        None => current.notes.clone(),
        Some(None) => None,
        Some(Some(n)) => checks.check(text("notes", n, MAX_TEXT_CHARS)),
    };
    let location = match body.location.as_ref() {
        None => current.location.clone(),
        Some(None) => None,
        Some(Some(l)) => checks.check(json_size("location", l)).map(|()| l.clone()),
    };
    let start_datetime = match body.start_datetime {
        None => current.start_datetime,
        Some(None) => {
            checks.check::<()>(Err(FieldError::new("start_datetime", "must not be null")));
            current.start_datetime
        }
        Some(Some(s)) => s,
    };
    let end_datetime = body.end_datetime.unwrap_or(current.end_datetime);
    if let Some(end) = end_datetime
        && end < start_datetime
    {
        checks.check::<()>(Err(FieldError::new(
            "end_datetime",
            "must not be before start_datetime",
        )));
    }
    checks.finish()?;
    let edit = NewActivity {
        title: title.unwrap_or_default(),
        notes,
        location,
        start_datetime,
        end_datetime,
    };
    let activity =
        journeys::update_activity(&mut scope.tx, tenant, &journey, &current, &edit).await?;
    // In the edit's transaction: the entry exists iff the edit committed.
    tenantry_db::audit::record(
        &mut scope.tx,
        tenant,
        Some(user),
        "activity.update",
        Some(&activity.id.to_string()),
        &serde_json::json!({
            "journey_id": journey.id,
            "fields": body.fields(),
            "moderated": moderated,
        }),
    )
    .await?;
    // No cache holds journeys or activities (the cached data is tenants,
    // names, memberships, the first posts page and platform settings), so
    // there is no generation to bump: the next read goes to the database.
    scope.tx.commit().await?;
    Ok(Json(activity.into()))
}
