//! Posts, likes and comments.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tenantry_core::Role;
use tenantry_db::posts::{self, Comment, Post};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::text;
use crate::json_body::JsonBody;
use crate::pagination::{Page, PageParams, TimeKey};
use crate::problem::{ApiError, Json, Path, Query};
use crate::request::Scope;
use crate::state::AppState;

/// This module's routes, each registered once with its OpenAPI operation.
pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(create_post, list_posts))
        .routes(routes!(get_post, edit_post, delete_post))
        .routes(routes!(like, unlike))
        .routes(routes!(add_comment, list_comments))
}

pub const MAX_POST_CHARS: usize = 10_000;
pub const MAX_COMMENT_CHARS: usize = 5_000;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PostView {
    pub id: Uuid,
    pub author_id: Uuid,
    pub content: String,
    pub like_count: i32,
    pub comment_count: i32,
    #[serde(serialize_with = "crate::json_time::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::json_time::serialize")]
    pub updated_at: DateTime<Utc>,
    /// Set when the post was shared from another community.
    pub origin: Option<super::origin::OriginView>,
}

impl From<Post> for PostView {
    fn from(p: Post) -> Self {
        Self {
            id: p.id,
            author_id: p.author_id,
            content: p.content,
            like_count: p.like_count,
            comment_count: p.comment_count,
            created_at: p.created_at,
            updated_at: p.updated_at,
            origin: p.origin.map(Into::into),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostBody {
    #[schema(schema_with = crate::openapi::text::<{ MAX_POST_CHARS }>)]
    pub content: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommentBody {
    #[schema(schema_with = crate::openapi::text::<{ MAX_COMMENT_CHARS }>)]
    pub content: String,
}

fn content(raw: &str, max: usize) -> Result<String, ApiError> {
    text("content", raw, max).map_err(|e| ApiError::Validation(vec![e]))
}

fn post_not_found() -> ApiError {
    ApiError::not_found("post")
}

#[utoipa::path(post, path = "/v1/posts", tag = "posts", request_body = PostBody,
    responses((status = 201, body = PostView), (status = 403, body = crate::problem::Problem),
              (status = 422, body = crate::problem::Problem)),
    security(("user_jwt" = [], "tenant" = [])))]
pub async fn create_post(
    mut scope: Scope,
    Json(body): Json<PostBody>,
) -> Result<(StatusCode, Json<PostView>), ApiError> {
    scope.member().await?;
    let content = content(&body.content, MAX_POST_CHARS)?;
    let quota = posts::PostQuota {
        max_posts: scope.limits.max_posts,
        max_storage_bytes: scope.limits.max_storage_mb.saturating_mul(1 << 20),
    };
    let post = posts::create(
        &mut scope.tx,
        scope.tenant.id,
        scope.user.id,
        &content,
        quota,
    )
    .await?;
    let changed = scope.invalidation("posts");
    scope.tx.commit().await?;
    changed.announce().await;
    Ok((StatusCode::CREATED, Json(post.into())))
}

/// Newest first, keyset-paginated.
#[utoipa::path(get, path = "/v1/posts", tag = "posts", params(PageParams),
    responses((status = 200, body = Page<PostView>)), security(("user_jwt" = [], "tenant" = [])))]
pub async fn list_posts(
    mut scope: Scope,
    Query(page): Query<PageParams>,
) -> Result<JsonBody<Page<PostView>>, ApiError> {
    let limit = page.limit()?;
    let (tenant, user) = (scope.tenant.id, scope.viewer());
    let after: Option<TimeKey> = page.after(tenant, "posts")?;
    let ttl = Duration::from_secs(scope.limits.cache_ttl_secs.into());
    let rows = if after.is_none() && !ttl.is_zero() {
        // The first page is the hot one: the same for every member, cached
        // for the tier's cache TTL until a post of the tenant changes (every
        // post write bumps the "posts" list's generation).
        scope.member().await?;
        scope
            .shared_first_page("posts:first", limit + 1, ttl, move |tx| async move {
                posts::list_for_member_and_commit(tx, tenant, user, None, limit + 1)
                    .await
                    .map(|(_, rows)| rows)
            })
            .await?
    } else {
        // Membership, page and commit in one round trip.
        let (role, rows) = posts::list_for_member_and_commit(
            scope.tx,
            tenant,
            user,
            after.map(Into::into),
            limit + 1,
        )
        .await?;
        if role.is_none() {
            return Err(crate::request::not_a_member());
        }
        rows
    };
    Ok(JsonBody(Page::from_rows(
        rows,
        limit,
        tenant,
        "posts",
        |p| TimeKey::from(p.keyset()),
        PostView::from,
    )))
}

#[utoipa::path(get, path = "/v1/posts/{id}", tag = "posts",
    responses((status = 200, body = PostView), (status = 404, body = crate::problem::Problem)),
    security(("user_jwt" = [], "tenant" = [])))]
pub async fn get_post(scope: Scope, Path(id): Path<Uuid>) -> Result<JsonBody<PostView>, ApiError> {
    let tenant = scope.tenant.id;
    // Membership, post and commit in one round trip.
    let viewer = scope.viewer();
    let (role, post) = posts::get_for_member_and_commit(scope.tx, tenant, viewer, id).await?;
    if role.is_none() {
        return Err(crate::request::not_a_member());
    }
    Ok(JsonBody(post.ok_or_else(post_not_found)?.into()))
}

/// 404 if the post is not there; 403 unless the caller wrote it or moderates.
/// True when the caller acts as a moderator (on someone else's post).
async fn check_may_moderate(scope: &mut Scope, id: Uuid) -> Result<bool, ApiError> {
    let role = scope.member().await?;
    let post = posts::get_for_update(&mut scope.tx, scope.tenant.id, id)
        .await?
        .ok_or_else(post_not_found)?;
    if post.author_id != scope.user.id && role < Role::Moderator {
        return Err(ApiError::Forbidden(
            "only the author or a moderator may change this post".to_owned(),
        ));
    }
    Ok(post.author_id != scope.user.id)
}

#[utoipa::path(patch, path = "/v1/posts/{id}", tag = "posts", request_body = PostBody,
    responses((status = 200, body = PostView), (status = 403, body = crate::problem::Problem),
              (status = 404, body = crate::problem::Problem)),
    security(("user_jwt" = [], "tenant" = [])))]
pub async fn edit_post(
    mut scope: Scope,
    Path(id): Path<Uuid>,
    Json(body): Json<PostBody>,
) -> Result<Json<PostView>, ApiError> {
    let content = content(&body.content, MAX_POST_CHARS)?;
    check_may_moderate(&mut scope, id).await?;
    let post = posts::update(&mut scope.tx, scope.tenant.id, id, &content)
        .await?
        .ok_or_else(post_not_found)?;
    let changed = scope.invalidation("posts");
    scope.tx.commit().await?;
    changed.announce().await;
    Ok(Json(post.into()))
}

#[utoipa::path(delete, path = "/v1/posts/{id}", tag = "posts",
    responses((status = 204), (status = 403, body = crate::problem::Problem),
              (status = 404, body = crate::problem::Problem)),
    security(("user_jwt" = [], "tenant" = [])))]
pub async fn delete_post(mut scope: Scope, Path(id): Path<Uuid>) -> Result<StatusCode, ApiError> {
    let moderated = check_may_moderate(&mut scope, id).await?;
    if !posts::soft_delete(&mut scope.tx, scope.tenant.id, id).await? {
        return Err(post_not_found());
    }
    if moderated {
        // In the deletion's transaction: the entry exists iff the post went.
        tenantry_db::audit::record(
            &mut scope.tx,
            scope.tenant.id,
            Some(scope.user.id),
            "post.moderate",
            Some(&id.to_string()),
            &serde_json::json!({ "action": "delete" }),
        )
        .await?;
    }
    let changed = scope.invalidation("posts");
    scope.tx.commit().await?;
    changed.announce().await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LikeState {
    pub liked: bool,
    pub like_count: i32,
}

/// Likes a post; liking again changes nothing.
#[utoipa::path(post, path = "/v1/posts/{id}/like", tag = "posts",
    responses((status = 200, body = LikeState), (status = 404, body = crate::problem::Problem)),
    security(("user_jwt" = [], "tenant" = [])))]
pub async fn like(mut scope: Scope, Path(id): Path<Uuid>) -> Result<Json<LikeState>, ApiError> {
    scope.member().await?;
    let count = posts::like(&mut scope.tx, scope.tenant.id, id, scope.user.id)
        .await?
        .ok_or_else(post_not_found)?;
    // No list changes yet: lists show the count once the counter worker
    // applies it, which moves the cached first page then (`crate::batch`).
    scope.tx.commit().await?;
    Ok(Json(LikeState {
        liked: true,
        like_count: count,
    }))
}

/// Takes a like back; unliking again changes nothing.
#[utoipa::path(delete, path = "/v1/posts/{id}/like", tag = "posts",
    responses((status = 200, body = LikeState), (status = 404, body = crate::problem::Problem)),
    security(("user_jwt" = [], "tenant" = [])))]
pub async fn unlike(mut scope: Scope, Path(id): Path<Uuid>) -> Result<Json<LikeState>, ApiError> {
    scope.member().await?;
    let count = posts::unlike(&mut scope.tx, scope.tenant.id, id, scope.user.id)
        .await?
        .ok_or_else(post_not_found)?;
    // No list changes yet: lists show the count once the counter worker
    // applies it, which moves the cached first page then (`crate::batch`).
    scope.tx.commit().await?;
    Ok(Json(LikeState {
        liked: false,
        like_count: count,
    }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CommentView {
    pub id: Uuid,
    pub post_id: Uuid,
    pub author_id: Uuid,
    pub content: String,
    pub created_at: DateTime<Utc>,
}

impl From<Comment> for CommentView {
    fn from(c: Comment) -> Self {
        Self {
            id: c.id,
            post_id: c.post_id,
            author_id: c.author_id,
            content: c.content,
            created_at: c.created_at,
        }
    }
}

#[utoipa::path(post, path = "/v1/posts/{id}/comments", tag = "posts", request_body = CommentBody,
    responses((status = 201, body = CommentView), (status = 404, body = crate::problem::Problem)),
    security(("user_jwt" = [], "tenant" = [])))]
pub async fn add_comment(
    mut scope: Scope,
    Path(id): Path<Uuid>,
    Json(body): Json<CommentBody>,
) -> Result<(StatusCode, Json<CommentView>), ApiError> {
    scope.member().await?;
    let content = content(&body.content, MAX_COMMENT_CHARS)?;
    let comment = posts::add_comment(&mut scope.tx, scope.tenant.id, id, scope.user.id, &content)
        .await?
        .ok_or_else(post_not_found)?;
    // The post's comment count reaches the lists as its likes do (above).
    scope.tx.commit().await?;
    Ok((StatusCode::CREATED, Json(comment.into())))
}

/// Oldest first, keyset-paginated.
#[utoipa::path(get, path = "/v1/posts/{id}/comments", tag = "posts", params(PageParams),
    responses((status = 200, body = Page<CommentView>), (status = 404, body = crate::problem::Problem)),
    security(("user_jwt" = [], "tenant" = [])))]
pub async fn list_comments(
    scope: Scope,
    Path(id): Path<Uuid>,
    Query(page): Query<PageParams>,
) -> Result<JsonBody<Page<CommentView>>, ApiError> {
    let limit = page.limit()?;
    let tenant = scope.tenant.id;
    let list = format!("comments:{id}");
    let after: Option<TimeKey> = page.after(tenant, &list)?;
    // Membership, the post's existence, the page and commit in one round trip.
    let viewer = scope.viewer();
    let page = posts::list_comments_for_member_and_commit(
        scope.tx,
        tenant,
        viewer,
        id,
        after.map(Into::into),
        limit + 1,
    )
    .await?;
    let rows = match page {
        posts::CommentsPage::NotAMember => return Err(crate::request::not_a_member()),
        posts::CommentsPage::NoSuchPost => return Err(post_not_found()),
        posts::CommentsPage::Page(rows) => rows,
    };
    Ok(JsonBody(Page::from_rows(
        rows,
        limit,
        tenant,
        &list,
        |c| TimeKey::from(c.keyset()),
        CommentView::from,
    )))
}
