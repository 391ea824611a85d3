//! Announcements (fanned out to members by a job) and each member's
//! notifications.

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tenantry_core::Role;
use tenantry_db::notifications::{self, Notification};
use uuid::Uuid;

use super::{Checks, text};
use crate::pagination::{Page, TimeKey};
use crate::problem::{ApiError, Json, Query};
use crate::tenancy::{Scope, not_a_member};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnnouncementBody {
    /// 1 to 200 characters.
    pub title: String,
    /// 1 to 5,000 characters.
    pub message: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AnnouncementAccepted {
    pub id: Uuid,
    /// The fan-out job (see `GET /v1/admin/jobs`).
    pub job_id: Uuid,
}

/// Announces to every member whose notification preferences allow it
/// (admin+). The fan-out runs as a job: 202 once the announcement and its
/// job are committed.
#[utoipa::path(post, path = "/v1/announcements", tag = "notifications",
    request_body = AnnouncementBody,
    responses((status = 202, body = AnnouncementAccepted), (status = 403, body = crate::problem::Problem),
              (status = 422, body = crate::problem::Problem)),
    security(("user_jwt" = [])))]
pub async fn announce(
    mut scope: Scope,
    Json(body): Json<AnnouncementBody>,
) -> Result<(StatusCode, Json<AnnouncementAccepted>), ApiError> {
    let mut checks = Checks::default();
    let title = checks.check(text("title", &body.title, 200));
    let message = checks.check(text("message", &body.message, 5_000));
    checks.finish()?;
    let (Some(title), Some(message)) = (title, message) else {
        unreachable!("every check passed");
    };
    scope.require(Role::Admin).await?;
    let (tenant, user) = (scope.tenant.id, scope.user.id);
    let a =
        tenantry_jobs::announcements::create(&mut scope.tx, tenant, user, &title, &message).await?;
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
    ))
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
    /// 1 to 100, default 20.
    pub limit: Option<String>,
    pub cursor: Option<String>,
    /// `true`: only unread notifications.
    pub unread: Option<String>,
}

/// The caller's notifications in this tenant, newest first.
#[utoipa::path(get, path = "/v1/notifications", tag = "notifications", params(NotificationParams),
    responses((status = 200, body = Page<NotificationView>), (status = 403, body = crate::problem::Problem)),
    security(("user_jwt" = [])))]
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

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadBody {
    /// These notifications (at most 1,000)...
    pub ids: Option<Vec<Uuid>>,
    /// ...or `true`: every unread one.
    pub all: Option<bool>,
}

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
    security(("user_jwt" = [])))]
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
