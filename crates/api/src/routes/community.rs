//! User-scoped reads across communities: `GET /v1/me/communities` and the
//! cross-community feed `GET /v1/feed`.
//!
//! A tenant named in `?tenants=` that the caller does not belong to (or that
//! does not exist, or is suspended) answers 404 `not_found`, exactly like an
//! unknown one: the feed never says whether a community the caller cannot
//! read exists.

use std::collections::HashMap;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tenantry_db::community::{self, Community};
use uuid::Uuid;

use super::events::EventView;
use super::posts::PostView;
use crate::pagination::{Page, PageParams, TimeKey};
use crate::problem::{ApiError, Json, Query};
use crate::request::UserScope;
use crate::state::AppState;
use tenantry_core::Feature;

/// This module's routes, each registered once with its OpenAPI operation.
pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(my_communities))
        .routes(routes!(feed))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CommunityView {
    pub tenant_id: Uuid,
    pub slug: String,
    pub name: String,
    /// active or suspended.
    pub status: String,
    pub role: String,
    pub display_in_feed: bool,
    pub joined_at: DateTime<Utc>,
    pub member_count: i64,
}

impl From<Community> for CommunityView {
    fn from(c: Community) -> Self {
        Self {
            tenant_id: c.tenant_id,
            slug: c.slug,
            name: c.name,
            status: c.status,
            role: c.role.to_string(),
            display_in_feed: c.display_in_feed,
            joined_at: c.joined_at,
            member_count: c.member_count,
        }
    }
}

/// The caller's communities (tenant id order) with their role and member
/// counts: one range of the per-user directory, counts kept incrementally.
#[utoipa::path(get, path = "/v1/me/communities", tag = "me", params(PageParams),
    responses((status = 200, body = Page<CommunityView>)), security(("user_jwt" = [])))]
pub async fn my_communities(
    scope: UserScope,
    Query(page): Query<PageParams>,
) -> Result<Json<Page<CommunityView>>, ApiError> {
    let limit = page.limit()?;
    let after: Option<Uuid> = page.after(scope.user.id, "me:communities")?;
    let rows = scope.communities_page(after, limit + 1).await?;
    Ok(Json(Page::from_rows(
        rows,
        limit,
        scope.user.id,
        "me:communities",
        |c| c.tenant_id,
        CommunityView::from,
    )))
}

/// The most communities one feed request reads (named, or by default).
pub const MAX_FEED_TENANTS: usize = 1000;

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
pub struct FeedParams {
    /// `posts` (default) or `events`.
    #[serde(rename = "type")]
    #[param(schema_with = feed_type)]
    pub kind: Option<String>,
    /// Comma-separated slugs of the caller's communities; default all of
    /// them that are shown in the feed (`display_in_feed`).
    #[param(schema_with = feed_tenants_schema)]
    pub tenants: Option<String>,
    #[param(schema_with = crate::pagination::limit_schema)]
    pub limit: Option<String>,
    #[param(schema_with = crate::pagination::cursor_schema)]
    pub cursor: Option<String>,
}

fn feed_type() -> utoipa::openapi::Object {
    crate::openapi::one_of(&["posts", "events"])
}

/// Slugs separated by commas (blanks around them ignored), at least one.
fn feed_tenants_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(r"[^,\s]"))
        .build()
}

/// A post in the feed: the community it is in, and the post.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FeedPost {
    pub tenant_id: Uuid,
    pub tenant_slug: String,
    #[serde(flatten)]
    pub post: PostView,
}

/// An event in the feed: the community it is in, and the event.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FeedEvent {
    pub tenant_id: Uuid,
    pub tenant_slug: String,
    #[serde(flatten)]
    pub event: EventView,
}

/// One feed item: a post or an event, by the feed's type.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum FeedEntry {
    Post(FeedPost),
    Event(FeedEvent),
}

/// The tenants a feed reads: the named ones (each must be an active
/// community of the caller, else 404), or every active community the caller
/// shows in their feed.
fn feed_tenants(communities: Vec<Community>, named: Option<&str>) -> Result<Vec<Uuid>, ApiError> {
    let Some(named) = named else {
        // A feed reads every community it covers: bound them (the most
        // recently joined first) so a user in thousands of communities does
        // not make one request read thousands of indexes.
        let mut shown: Vec<Community> = communities
            .into_iter()
            .filter(|c| c.display_in_feed)
            .collect();
        if shown.len() > MAX_FEED_TENANTS {
            shown.sort_by_key(|c| std::cmp::Reverse(c.joined_at));
            shown.truncate(MAX_FEED_TENANTS);
        }
        return Ok(shown.into_iter().map(|c| c.tenant_id).collect());
    };
    let by_slug: HashMap<String, Uuid> = communities
        .into_iter()
        .map(|c| (c.slug, c.tenant_id))
        .collect();
    let mut ids = Vec::new();
    for slug in named.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let id = by_slug
            .get(slug)
            .ok_or_else(|| ApiError::NotFound(format!("tenant {slug:?} not found")))?;
        if !ids.contains(id) {
            ids.push(*id);
        }
        if ids.len() > MAX_FEED_TENANTS {
            return Err(ApiError::BadRequest(format!(
                "tenants may name at most {MAX_FEED_TENANTS} communities"
            )));
        }
    }
    if ids.is_empty() {
        return Err(ApiError::BadRequest(
            "tenants must name at least one community".to_owned(),
        ));
    }
    Ok(ids)
}

/// Newest posts (or upcoming events) across the caller's communities.
#[utoipa::path(get, path = "/v1/feed", tag = "me", params(FeedParams),
    responses((status = 200, body = Page<FeedEntry>), (status = 400, body = crate::problem::Problem),
              (status = 404, body = crate::problem::Problem)),
    security(("user_jwt" = [])))]
pub async fn feed(
    scope: UserScope,
    Query(params): Query<FeedParams>,
) -> Result<Json<Page<FeedEntry>>, ApiError> {
    let events = match params.kind.as_deref() {
        None | Some("posts") => false,
        Some("events") => true,
        Some(_) => {
            return Err(ApiError::BadRequest(
                "type must be posts or events".to_owned(),
            ));
        }
    };
    let page = PageParams {
        limit: params.limit,
        cursor: params.cursor,
    };
    let limit = page.limit()?;
    let user = scope.user.id;
    let list = if events { "feed:events" } else { "feed:posts" };
    let after: Option<TimeKey> = page.after(user, list)?;
    let tenants = feed_tenants(scope.communities().await?, params.tenants.as_deref())?;
    // A community with the feed (or, for events, the events) feature off is
    // left out, whether named or not.
    let mut shown = Vec::with_capacity(tenants.len());
    for tenant in tenants {
        let features = scope.tenant_features(tenant).await?;
        if features.enabled(Feature::Feed) && (!events || features.enabled(Feature::Events)) {
            shown.push(tenant);
        }
    }
    let tenants = shown;
    if tenants.is_empty() {
        return Ok(Json(Page {
            items: Vec::new(),
            next_cursor: None,
        }));
    }
    // Each cell reads its own tenants of this feed (one round trip, in a
    // transaction that may see exactly those); with several cells, the
    // same page is asked of each at once and the answers merged by the
    // keyset, so a page is the same one a single database would give.
    let groups = match scope.single_cell() {
        true => Vec::new(),
        false => scope.by_cell(&tenants).await?,
    };
    let page = if events {
        let after = after.map(|k| (k.at, k.id));
        let now = Utc::now();
        let rows = if groups.len() <= 1 {
            let tx = match groups.first() {
                Some((cell, ids)) => scope.begin_in(&cell.db, ids.clone()).await?,
                None => scope.begin(tenants.clone()).await?,
            };
            let ids = groups.first().map_or(&tenants, |(_, ids)| ids);
            community::feed_events_and_commit(tx, ids, now, after, limit + 1).await?
        } else {
            let reads = groups.iter().map(|(cell, ids)| async {
                let tx = scope.begin_in(&cell.db, ids.clone()).await?;
                Ok::<_, ApiError>(
                    community::feed_events_and_commit(tx, ids, now, after, limit + 1).await?,
                )
            });
            let mut rows: Vec<_> = futures::future::try_join_all(reads)
                .await?
                .into_iter()
                .flatten()
                .collect();
            rows.sort_by_key(|r| (r.item.start_date, r.item.id));
            rows.truncate(usize::try_from(limit + 1).unwrap_or(usize::MAX));
            rows
        };
        Page::from_rows(
            rows,
            limit,
            user,
            list,
            |r| TimeKey {
                at: r.item.start_date,
                id: r.item.id,
            },
            |r| {
                FeedEntry::Event(FeedEvent {
                    tenant_id: r.tenant_id,
                    tenant_slug: r.tenant_slug,
                    event: r.item.into(),
                })
            },
        )
    } else {
        let after = after.map(Into::into);
        let rows = if groups.len() <= 1 {
            let tx = match groups.first() {
                Some((cell, ids)) => scope.begin_in(&cell.db, ids.clone()).await?,
                None => scope.begin(tenants.clone()).await?,
            };
            let ids = groups.first().map_or(&tenants, |(_, ids)| ids);
            community::feed_posts_and_commit(tx, ids, after, limit + 1).await?
        } else {
            let reads = groups.iter().map(|(cell, ids)| async {
                let tx = scope.begin_in(&cell.db, ids.clone()).await?;
                Ok::<_, ApiError>(
                    community::feed_posts_and_commit(tx, ids, after, limit + 1).await?,
                )
            });
            let mut rows: Vec<_> = futures::future::try_join_all(reads)
                .await?
                .into_iter()
                .flatten()
                .collect();
            // Newest first, as each cell answered.
            rows.sort_by_key(|r| std::cmp::Reverse((r.item.created_at, r.item.id)));
            rows.truncate(usize::try_from(limit + 1).unwrap_or(usize::MAX));
            rows
        };
        Page::from_rows(
            rows,
            limit,
            user,
            list,
            |r| TimeKey::from(r.item.keyset()),
            |r| {
                FeedEntry::Post(FeedPost {
                    tenant_id: r.tenant_id,
                    tenant_slug: r.tenant_slug,
                    post: r.item.into(),
                })
            },
        )
    };
    Ok(Json(page))
}
