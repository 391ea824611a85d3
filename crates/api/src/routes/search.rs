//! `GET /v1/search?q=`: full-text search over the tenant's posts and events.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tenantry_db::search::{self, Hit};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::pagination::{Page, PageParams};
use crate::problem::{ApiError, Json, Query};
use crate::request::{Scope, not_a_member};
use crate::state::AppState;

/// This module's routes, each registered once with its OpenAPI operation.
pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(search))
}

/// The longest query string accepted (422 beyond).
pub const MAX_QUERY_CHARS: usize = 500;

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
pub struct SearchParams {
    /// Words to find, in web-search syntax: `"exact phrase"`, `or`, `-word`.
    /// Any string is accepted; at most 500 characters, not blank.
    /// (The pattern is [`crate::openapi::TEXT_PATTERN`]: `schema_with` would
    /// lose `required`.)
    #[param(
        required = true,
        min_length = 1,
        max_length = 500,
        pattern = "^[^\\u0000]*[^\\u0000\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000][^\\u0000]*$"
    )]
    pub q: Option<String>,
    #[param(schema_with = crate::pagination::limit_schema)]
    pub limit: Option<String>,
    #[param(schema_with = crate::pagination::cursor_schema)]
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SearchHit {
    /// `post` or `event`.
    #[serde(rename = "type")]
    pub kind: String,
    pub id: Uuid,
    /// An event's title.
    pub title: Option<String>,
    /// A post's content or an event's description.
    pub body: Option<String>,
    /// A post's creation time or an event's start.
    pub at: DateTime<Utc>,
    /// Relevance (`ts_rank`); results come best first.
    pub rank: f32,
}

impl From<Hit> for SearchHit {
    fn from(h: Hit) -> Self {
        Self {
            kind: h.kind,
            id: h.id,
            title: h.title,
            body: h.body,
            at: h.at,
            rank: h.rank,
        }
    }
}

/// The cursor of a result list: the last hit's rank and id.
#[derive(Debug, Serialize, Deserialize)]
struct RankKey {
    r: f32,
    id: Uuid,
}

/// Checks `q`: present, not blank, no NUL, at most [`MAX_QUERY_CHARS`].
fn query_string(q: Option<&str>) -> Result<&str, ApiError> {
    let q = q.unwrap_or("").trim();
    if q.is_empty() {
        return Err(ApiError::validation("q", "must not be empty"));
    }
    if q.contains('\0') {
        return Err(ApiError::validation(
            "q",
            "must not contain a NUL character",
        ));
    }
    if q.chars().count() > MAX_QUERY_CHARS {
        return Err(ApiError::validation(
            "q",
            format!("must be at most {MAX_QUERY_CHARS} characters"),
        ));
    }
    Ok(q)
}

/// Posts and events matching `q`, best first, keyset-paginated.
#[utoipa::path(get, path = "/v1/search", tag = "search", params(SearchParams),
    responses((status = 200, body = Page<SearchHit>), (status = 422, body = crate::problem::Problem)),
    security(("user_jwt" = [], "tenant" = [])))]
pub async fn search(
    scope: Scope,
    Query(params): Query<SearchParams>,
) -> Result<Json<Page<SearchHit>>, ApiError> {
    let q = query_string(params.q.as_deref())?.to_owned();
    let page = PageParams {
        limit: params.limit,
        cursor: params.cursor,
    };
    let limit = page.limit()?;
    let tenant = scope.tenant.id;
    // A cursor only continues the query that issued it.
    let list = format!("search:{q}");
    let after: Option<RankKey> = page.after(tenant, &list)?;
    let viewer = scope.viewer();
    let (role, rows) = search::search_for_member_and_commit(
        scope.tx,
        tenant,
        viewer,
        &q,
        after.map(|k| (k.r, k.id)),
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
        |h| RankKey {
            r: h.rank,
            id: h.id,
        },
        SearchHit::from,
    )))
}
