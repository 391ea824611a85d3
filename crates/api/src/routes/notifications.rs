//! Announcements (fanned out to members by a job) and each member's
//! notifications.

use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tenantry_core::Feature;
use tenantry_core::Role;
use tenantry_db::notifications::{self, Notification};
use tenantry_jobs::announcements::Once;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{Checks, text};
use crate::pagination::{Page, TimeKey};
use crate::problem::{ApiError, FieldError, Json, Query};
use crate::request::{Scope, not_a_member};
use crate::state::AppState;

/// This module's routes, each registered once with its OpenAPI operation.
pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(announce))
        .routes(routes!(list))
        .routes(routes!(mark_read))
        .routes(routes!(get_preferences, put_preferences, patch_preferences))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnnouncementBody {
    #[schema(schema_with = crate::openapi::text::<200>)]
    pub title: String,
    #[schema(schema_with = crate::openapi::text::<5000>)]
    pub message: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AnnouncementAccepted {
    pub id: Uuid,
    /// The fan-out job (see `GET /v1/admin/jobs`).
    pub job_id: Uuid,
}

/// The longest `Idempotency-Key` accepted.
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// The request's `Idempotency-Key`, if it sends one: 1 to 255 printable
/// ASCII characters (space to `~`), once. Anything else is 400: a header is
/// not a body field.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all("idempotency-key").iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let bad = |why: &str| ApiError::BadRequest(format!("Idempotency-Key {why}"));
    if values.next().is_some() {
        return Err(bad("must be sent once"));
    }
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_IDEMPOTENCY_KEY {
        return Err(bad("must be 1 to 255 characters"));
    }
    if !bytes.iter().all(|b| (b' '..=b'~').contains(b)) {
        return Err(bad("must be printable ASCII characters"));
    }
    // Checked above: every byte is ASCII.
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

/// Announces to every member whose notification preferences allow it
/// (admin+). The fan-out runs as a job: 202 once the announcement and its
/// job are committed.
///
/// With an `Idempotency-Key` header (1 to 255 printable ASCII characters),
/// a retry with the same key in this tenant, by the same caller with the
/// same title and message, answers the same `{id, job_id}` (202, with
/// `Idempotent-Replayed: true`) and announces nothing again; the same key
/// with a different request is 422 `idempotency_key_reused`. Keys are per
/// tenant and last as long as the announcement.
#[utoipa::path(post, path = "/v1/announcements", tag = "notifications",
    request_body = AnnouncementBody,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255,
            pattern = "^[!-~]([ -~]*[!-~])?$",
            description = "1 to 255 printable ASCII characters: a retry with the same key answers the first announcement")),
    responses((status = 202, body = AnnouncementAccepted), (status = 400, body = crate::problem::Problem),
              (status = 403, body = crate::problem::Problem),
              (status = 422, body = crate::problem::Problem,
               description = "validation_failed, or idempotency_key_reused")),
    security(("user_jwt" = [], "tenant" = [])))]
pub async fn announce(
    mut scope: Scope,
    headers: HeaderMap,
    Json(body): Json<AnnouncementBody>,
) -> Result<Response, ApiError> {
    scope.feature(Feature::Announcements)?;
    let key = idempotency_key(&headers)?;
    let mut checks = Checks::default();
    let title = checks.check(text("title", &body.title, 200));
    let message = checks.check(text("message", &body.message, 5_000));
    checks.finish()?;
    let (Some(title), Some(message)) = (title, message) else {
        unreachable!("every check passed");
    };
    scope.require(Role::Admin).await?;
    let (tenant, user) = (scope.tenant.id, scope.user.id);
    let a = match key.as_deref() {
        None => {
            tenantry_jobs::announcements::create(&mut scope.tx, tenant, user, &title, &message)
                .await?
        }
        Some(key) => match tenantry_jobs::announcements::create_once(
            &mut scope.tx,
            tenant,
            user,
            &title,
            &message,
            key,
        )
        .await?
        {
            Once::Created(a) => a,
            Once::Replayed(a) => {
                // Nothing was written (no audit entry either): the
                // transaction only read.
                scope.tx.commit().await?;
                let accepted = Json(AnnouncementAccepted {
                    id: a.id,
                    job_id: a.job_id,
                });
                return Ok((
                    StatusCode::ACCEPTED,
                    [("idempotent-replayed", "true")],
                    accepted,
                )
                    .into_response());
            }
            Once::KeyReused => {
                return Err(ApiError::IdempotencyKeyReused(
                    "this Idempotency-Key was already used for a different announcement".to_owned(),
                ));
            }
        },
    };
    tenantry_db::audit::record(
        &mut scope.tx,
        tenant,
        Some(user),
        "announcement.create",
        Some(&a.id.to_string()),
        &json!({ "title": title, "job_id": a.job_id }),
    )
    .await?;
    scope.tx.commit().await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(AnnouncementAccepted {
            id: a.id,
            job_id: a.job_id,
        }),
    )
        .into_response())
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NotificationView {
    pub id: Uuid,
    pub announcement_id: Option<Uuid>,
    pub title: String,
    pub message: String,
    pub created_at: DateTime<Utc>,
    pub read_at: Option<DateTime<Utc>>,
}

impl From<Notification> for NotificationView {
    fn from(n: Notification) -> Self {
        Self {
            id: n.id,
            announcement_id: n.announcement_id,
            title: n.title,
            message: n.message,
            created_at: n.created_at,
            read_at: n.read_at,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct NotificationParams {
    #[param(schema_with = crate::pagination::limit_schema)]
    pub limit: Option<String>,
    #[param(schema_with = crate::pagination::cursor_schema)]
    pub cursor: Option<String>,
    /// `true`: only unread notifications.
    #[param(value_type = Option<bool>)]
    pub unread: Option<String>,
}

/// The caller's notifications in this tenant, newest first.
#[utoipa::path(get, path = "/v1/notifications", tag = "notifications", params(NotificationParams),
    responses((status = 200, body = Page<NotificationView>), (status = 403, body = crate::problem::Problem)),
    security(("user_jwt" = [], "tenant" = [])))]
pub async fn list(
    scope: Scope,
    Query(params): Query<NotificationParams>,
) -> Result<Json<Page<NotificationView>>, ApiError> {
    let unread = match params.unread.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(ApiError::BadRequest(
                "unread must be true or false".to_owned(),
            ));
        }
    };
    let page = crate::pagination::PageParams {
        limit: params.limit,
        cursor: params.cursor,
    };
    let limit = page.limit()?;
    let (tenant, user) = (scope.tenant.id, scope.user.id);
    // Unread and all are different lists: a cursor of one is refused by the other.
    let list_name = if unread {
        "notifications:unread"
    } else {
        "notifications"
    };
    let after: Option<TimeKey> = page.after(tenant, &format!("{list_name}:{user}"))?;
    let rows = notifications::list_for_member_and_commit(
        scope.tx,
        tenant,
        user,
        unread,
        after.map(Into::into),
        limit + 1,
    )
    .await?
    .ok_or_else(not_a_member)?;
    Ok(Json(Page::from_rows(
        rows,
        limit,
        tenant,
        &format!("{list_name}:{user}"),
        |n| TimeKey::from(n.keyset()),
        NotificationView::from,
    )))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadBody {
    /// These notifications (at most 1,000)...
    pub ids: Option<Vec<Uuid>>,
    /// ...or `true`: every unread one.
    pub all: Option<bool>,
}

impl utoipa::PartialSchema for ReadBody {
    /// Either `{"ids": [1 to 1000 ids]}` (with `all` false or null, if
    /// given) or `{"all": true}` (with `ids` null, if given).
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        use utoipa::openapi::schema::{
            AdditionalProperties, ArrayBuilder, ObjectBuilder, OneOfBuilder, SchemaType, Type,
        };
        let ids = ArrayBuilder::new()
            .items(ObjectBuilder::new().schema_type(Type::String).format(Some(
                utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::Uuid),
            )))
            .min_items(Some(1))
            .max_items(Some(1_000));
        let by_ids = ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("ids", ids)
            .property(
                "all",
                ObjectBuilder::new()
                    .schema_type(SchemaType::from_iter([Type::Boolean, Type::Null]))
                    .enum_values(Some([Value::Bool(false), Value::Null])),
            )
            .required("ids")
            .additional_properties(Some(AdditionalProperties::FreeForm(false)));
        let every = ObjectBuilder::new()
            .schema_type(Type::Object)
            .property(
                "all",
                ObjectBuilder::new()
                    .schema_type(Type::Boolean)
                    .enum_values(Some([true])),
            )
            .property("ids", ObjectBuilder::new().schema_type(Type::Null))
            .required("all")
            .additional_properties(Some(AdditionalProperties::FreeForm(false)));
        OneOfBuilder::new().item(by_ids).item(every).into()
    }
}

impl utoipa::ToSchema for ReadBody {}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReadResult {
    /// How many notifications changed from unread to read.
    pub marked: i64,
}

/// Marks the caller's notifications read: `{"ids": [...]}` or `{"all": true}`.
/// Ids that are not the caller's unread notifications are ignored.
#[utoipa::path(post, path = "/v1/notifications/read", tag = "notifications", request_body = ReadBody,
    responses((status = 200, body = ReadResult), (status = 403, body = crate::problem::Problem),
              (status = 422, body = crate::problem::Problem)),
    security(("user_jwt" = [], "tenant" = [])))]
pub async fn mark_read(
    scope: Scope,
    Json(body): Json<ReadBody>,
) -> Result<Json<ReadResult>, ApiError> {
    let ids = match (body.ids, body.all) {
        (Some(ids), None | Some(false)) if !ids.is_empty() && ids.len() <= 1_000 => Some(ids),
        (None, Some(true)) => None,
        _ => {
            return Err(ApiError::validation(
                "ids",
                "give either 1 to 1000 ids or \"all\": true",
            ));
        }
    };
    let (tenant, user) = (scope.tenant.id, scope.user.id);
    let marked = notifications::mark_read_and_commit(scope.tx, tenant, user, ids.as_deref())
        .await?
        .ok_or_else(not_a_member)?;
    Ok(Json(ReadResult { marked }))
}

/// The caller's notification preferences in this tenant: one switch per kind
/// of notification, on unless turned off. Today there is one kind,
/// `announcements` (`POST /v1/announcements`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Preferences {
    /// Announcements of the tenant's admins. Default true.
    pub announcements: bool,
}

impl Preferences {
    /// The effective switches of a stored `notification_prefs` object: a
    /// kind is off only when it holds `false` (what the fan-out checks).
    fn from_stored(stored: &Value) -> Self {
        let on = |kind: &str| stored.get(kind) != Some(&Value::Bool(false));
        Self {
            announcements: on("announcements"),
        }
    }
}

/// A body of `PUT` or `PATCH /v1/notifications/preferences`: a JSON object
/// with a switch per kind (`true`/`false`), or `null` for the kind's default
/// (on). A kind left out: `PUT` puts it back to its default, `PATCH` (JSON
/// merge patch) leaves it. Unknown kinds and other values are 422.
#[derive(Debug, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // The schema of a body parsed by `parse_switches`.
pub struct PreferencesChange {
    #[schema(nullable)]
    pub announcements: Option<bool>,
}

/// The switches a body sets, and the kinds it resets to their default.
type Switches = (serde_json::Map<String, Value>, Vec<&'static str>);

fn parse_switches(body: serde_json::Map<String, Value>) -> Result<Switches, ApiError> {
    let mut checks = Checks::default();
    let mut set = serde_json::Map::new();
    let mut reset = Vec::new();
    for (name, value) in body {
        let Some(kind) = notifications::KINDS.iter().find(|k| **k == name) else {
            checks.check::<()>(Err(FieldError::new(
                name,
                format!(
                    "is not a kind of notification (kinds: {})",
                    notifications::KINDS.join(", ")
                ),
            )));
            continue;
        };
        match value {
            Value::Bool(_) => {
                set.insert(name, value);
            }
            Value::Null => reset.push(*kind),
            _ => {
                checks.check::<()>(Err(FieldError::new(name, "must be true, false or null")));
            }
        }
    }
    checks.finish()?;
    Ok((set, reset))
}

/// The caller's notification preferences in this tenant.
#[utoipa::path(get, path = "/v1/notifications/preferences", tag = "notifications",
    responses((status = 200, body = Preferences), (status = 403, body = crate::problem::Problem)),
    security(("user_jwt" = [], "tenant" = [])))]
pub async fn get_preferences(scope: Scope) -> Result<Json<Preferences>, ApiError> {
    let (tenant, user) = (scope.tenant.id, scope.user.id);
    let stored = notifications::preferences_and_commit(scope.tx, tenant, user)
        .await?
        .ok_or_else(not_a_member)?;
    Ok(Json(Preferences::from_stored(&stored)))
}

/// Replaces the caller's notification preferences in this tenant: a kind
/// left out (or `null`) is back on.
#[utoipa::path(put, path = "/v1/notifications/preferences", tag = "notifications",
    request_body = PreferencesChange,
    responses((status = 200, body = Preferences), (status = 403, body = crate::problem::Problem),
              (status = 422, body = crate::problem::Problem)),
    security(("user_jwt" = [], "tenant" = [])))]
pub async fn put_preferences(
    scope: Scope,
    Json(body): Json<serde_json::Map<String, Value>>,
) -> Result<Json<Preferences>, ApiError> {
    // Every kind back to its default, then the ones given.
    let (set, _) = parse_switches(body)?;
    store_preferences(scope, &notifications::KINDS, set).await
}

/// Changes some of the caller's notification preferences in this tenant
/// (JSON merge patch: `{"announcements": false}` mutes announcements,
/// `null` turns them back on, a kind left out is unchanged).
#[utoipa::path(patch, path = "/v1/notifications/preferences", tag = "notifications",
    request_body = PreferencesChange,
    responses((status = 200, body = Preferences), (status = 403, body = crate::problem::Problem),
              (status = 422, body = crate::problem::Problem)),
    security(("user_jwt" = [], "tenant" = [])))]
pub async fn patch_preferences(
    scope: Scope,
    Json(body): Json<serde_json::Map<String, Value>>,
) -> Result<Json<Preferences>, ApiError> {
    let (set, reset) = parse_switches(body)?;
    store_preferences(scope, &reset, set).await
}

async fn store_preferences(
    scope: Scope,
    reset: &[&str],
    set: serde_json::Map<String, Value>,
) -> Result<Json<Preferences>, ApiError> {
    let (tenant, user) = (scope.tenant.id, scope.user.id);
    // The fan-out reads preferences straight from `memberships`, and the
    // cached membership does not hold them: nothing to invalidate.
    let stored = notifications::set_preferences_and_commit(
        scope.tx,
        tenant,
        user,
        reset,
        &Value::Object(set),
    )
    .await?
    .ok_or_else(not_a_member)?;
    Ok(Json(Preferences::from_stored(&stored)))
}
