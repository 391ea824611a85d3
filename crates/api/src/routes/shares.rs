//! `POST /v1/shares`: share a post or event of one of the caller's
//! communities into another of theirs.
//!
//! Both tenants must be active communities of the caller; a tenant they do
//! not belong to answers 404 like an unknown one. The copy lands in the
//! target's lists, feed and search with its origin; sharing the same content
//! into the same target again answers the existing copy (200), not a second
//! one.

use crate::state::AppState;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tenantry_db::posts::PostQuota;
use tenantry_db::shares::{self, Shared};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::events::EventView;
use super::posts::PostView;
use crate::problem::{ApiError, Json};
use crate::request::UserScope;
use tenantry_core::Feature;

/// This module's routes, each registered once with its OpenAPI operation.
pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(share))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShareRequest {
    /// `post` or `event`.
    #[schema(schema_with = content_type)]
    pub content_type: String,
    pub content_id: Uuid,
    /// The slug of the community that holds the content.
    pub source_tenant: String,
    /// The slug of the community to share into; not `source_tenant`.
    pub target_tenant: String,
}

fn content_type() -> utoipa::openapi::Object {
    crate::openapi::one_of(&["post", "event"])
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ShareView {
    pub content_type: String,
    pub source_tenant: String,
    pub target_tenant: String,
    /// The copy in the target (a post or an event, by `content_type`).
    pub post: Option<PostView>,
    pub event: Option<EventView>,
}

/// How many times a share is attempted when a concurrent share of the same
/// content won the unique index (the second attempt finds its copy).
const ATTEMPTS: usize = 2;

#[utoipa::path(post, path = "/v1/shares", tag = "me", request_body = ShareRequest,
    responses((status = 201, body = ShareView, description = "a new copy in the target"),
              (status = 200, body = ShareView, description = "the target already held it"),
              (status = 403, body = crate::problem::Problem), (status = 404, body = crate::problem::Problem),
              (status = 422, body = crate::problem::Problem)),
    security(("user_jwt" = [])))]
pub async fn share(
    scope: UserScope,
    Json(body): Json<ShareRequest>,
) -> Result<(StatusCode, Json<ShareView>), ApiError> {
    let is_post = match body.content_type.as_str() {
        "post" => true,
        "event" => false,
        _ => {
            return Err(ApiError::validation(
                "content_type",
                "must be post or event",
            ));
        }
    };
    if body.source_tenant == body.target_tenant {
        return Err(ApiError::validation(
            "target_tenant",
            "must differ from source_tenant",
        ));
    }
    let communities = scope.communities().await?;
    let find = |slug: &str| {
        communities
            .iter()
            .find(|c| c.slug == slug)
            .map(|c| c.tenant_id)
            .ok_or_else(|| ApiError::NotFound(format!("tenant {slug:?} not found")))
    };
    let source = find(&body.source_tenant)?;
    let target = find(&body.target_tenant)?;
    // Sharing is a feature of both communities: the one shared from and the
    // one shared into.
    for slug in [&body.source_tenant, &body.target_tenant] {
        if !scope
            .tenant_limits(slug)
            .await?
            .features
            .enabled(Feature::Shares)
        {
            return Err(ApiError::FeatureDisabled(Feature::Shares));
        }
    }
    let (user, id) = (scope.user.id, body.content_id);
    let view = |post: Option<PostView>, event: Option<EventView>| ShareView {
        content_type: body.content_type.clone(),
        source_tenant: body.source_tenant.clone(),
        target_tenant: body.target_tenant.clone(),
        post,
        event,
    };
    let quota = if is_post {
        let limits = scope.tenant_limits(&body.target_tenant).await?;
        Some(PostQuota {
            max_posts: limits.max_posts,
            max_storage_bytes: limits.max_storage_mb.saturating_mul(1 << 20),
        })
    } else {
        None
    };
    if !scope.single_cell() {
        let groups = scope.by_cell(&[source, target]).await?;
        if groups.len() > 1 {
            let (from, to) = (&groups[0], &groups[1]);
            let (source_db, target_db) = match from.1.contains(&source) {
                true => (from.0.db.clone(), to.0.db.clone()),
                false => (to.0.db.clone(), from.0.db.clone()),
            };
            return share_across(
                &scope,
                (&source_db, source),
                (&target_db, target),
                id,
                quota,
                &view,
            )
            .await;
        }
    }
    for _ in 0..ATTEMPTS {
        // The one transaction that sees both tenants: read the source, write
        // the copy.
        let tx = scope.begin(vec![source, target]).await?;
        let (status, shared) = match quota {
            Some(quota) => {
                match shares::share_post_and_commit(tx, source, id, target, user, quota).await? {
                    Shared::Created(p) => {
                        // The copy is a new post of the target: its cached
                        // first page must go.
                        scope.list_changed(target, "posts").await;
                        (StatusCode::CREATED, view(Some(p.into()), None))
                    }
                    Shared::Existing(p) => (StatusCode::OK, view(Some(p.into()), None)),
                    Shared::NoSource => return Err(ApiError::not_found("post")),
                    Shared::NotCopied { quota: Some(q) } => {
                        return Err(ApiError::QuotaExceeded {
                            quota: q.to_owned(),
                        });
                    }
                    Shared::NotCopied { quota: None } => continue,
                }
            }
            None => match shares::share_event_and_commit(tx, source, id, target, user).await? {
                Shared::Created(e) => (StatusCode::CREATED, view(None, Some(e.into()))),
                Shared::Existing(e) => (StatusCode::OK, view(None, Some(e.into()))),
                Shared::NoSource => return Err(ApiError::not_found("event")),
                Shared::NotCopied { .. } => continue,
            },
        };
        return Ok((status, Json(shared)));
    }
    Err(ApiError::Conflict(
        "a concurrent share of the same content is in progress; retry".to_owned(),
    ))
}

/// A share whose source and target live in different cells: no one
/// transaction sees both, so the source is read in its cell (as the caller,
/// who is a member of it), then copied into the target's cell by the same
/// statement as a share within one database, with the source as values.
/// Idempotent as that one is (the target's unique index on the original).
async fn share_across(
    scope: &UserScope,
    (source_db, source): (&tenantry_db::Db, Uuid),
    (target_db, target): (&tenantry_db::Db, Uuid),
    id: Uuid,
    quota: Option<PostQuota>,
    view: impl Fn(Option<PostView>, Option<EventView>) -> ShareView,
) -> Result<(StatusCode, Json<ShareView>), ApiError> {
    let is_post = quota.is_some();
    let tx = scope.begin_in(source_db, vec![source]).await?;
    let Some(src) = shares::read_source_and_commit(tx, source, id, is_post).await? else {
        return Err(ApiError::not_found(if is_post { "post" } else { "event" }));
    };
    let user = scope.user.id;
    for _ in 0..ATTEMPTS {
        let tx = scope.begin_in(target_db, vec![target]).await?;
        let (status, copy) =
            match shares::share_from_and_commit(tx, &src, target, user, quota).await? {
                Shared::Created(copy) => {
                    if is_post {
                        scope.list_changed(target, "posts").await;
                    }
                    (StatusCode::CREATED, copy)
                }
                Shared::Existing(copy) => (StatusCode::OK, copy),
                Shared::NoSource => {
                    return Err(ApiError::not_found(if is_post { "post" } else { "event" }));
                }
                Shared::NotCopied { quota: Some(q) } => {
                    return Err(ApiError::QuotaExceeded {
                        quota: q.to_owned(),
                    });
                }
                Shared::NotCopied { quota: None } => continue,
            };
        let shown = match copy {
            shares::SharedCopy::Post(p) => view(Some(p.into()), None),
            shares::SharedCopy::Event(e) => view(None, Some(e.into())),
        };
        return Ok((status, Json(shown)));
    }
    Err(ApiError::Conflict(
        "a concurrent share of the same content is in progress; retry".to_owned(),
    ))
}
