//! A user's communities and the cross-community feed.
//!
//! `user_communities` is the per-user directory of memberships, kept in step
//! with `memberships` by a trigger: reading "every community of this user"
//! is one index range, never a scan of every tenant's members. Member counts
//! come from `tenants.member_count`, kept incrementally by the statements that
//! add and remove members. The directory says who belongs where across
//! tenants, so row-level security (V51) lets a transaction read only the rows
//! of the user its context names ([`crate::TenantContext::user`]).
//!
//! The feed reads each allowed tenant through a LATERAL that walks that
//! tenant's own index from the keyset and stops after `limit` rows, and only
//! then merges: at most `tenants × limit` index entries are read, whatever
//! the tenants hold, with no global sort over their rows and no OFFSET.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::events::{EVENT_COLUMNS, Event};
use crate::posts::{POST_COLUMNS, Post};
use crate::{DbError, Keyset, Tx};

/// One of a user's communities.
#[derive(Debug, Clone, PartialEq)]
pub struct Community {
    pub tenant_id: Uuid,
    pub slug: String,
    pub name: String,
    pub status: String,
    pub role: tenantry_core::Role,
    pub display_in_feed: bool,
    pub joined_at: DateTime<Utc>,
    pub member_count: i64,
}

impl Community {
    fn from_row(row: &Row) -> Result<Self, DbError> {
        Ok(Self {
            tenant_id: row.try_get("tenant_id")?,
            slug: row.try_get("slug")?,
            name: row.try_get("name")?,
            status: row.try_get("status")?,
            role: tenantry_core::Role::parse(row.try_get("role")?)
                .map_err(|e| DbError::Other(e.into()))?,
            display_in_feed: row.try_get("display_in_feed")?,
            joined_at: row.try_get("joined_at")?,
            member_count: row.try_get("member_count")?,
        })
    }
}

const COMMUNITY_SQL: &str = "SELECT uc.tenant_id, t.slug, t.name, t.status, uc.role, \
     uc.display_in_feed, uc.joined_at, t.member_count
     FROM user_communities uc JOIN tenants t ON t.id = uc.tenant_id
     WHERE uc.user_id = $1 AND t.status <> 'deleted'";

/// A page of `user`'s communities in tenant id order, after `after`: one
/// range of the directory's primary key, joined to the tenants by id.
/// `tx` is a transaction of `user`'s context ([`crate::TenantContext::user`]).
pub async fn page(
    tx: Tx,
    user: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Community>, DbError> {
    let after = after.unwrap_or(Uuid::nil());
    let rows = tx
        .query_and_commit(
            &format!("{COMMUNITY_SQL} AND uc.tenant_id > $2 ORDER BY uc.tenant_id LIMIT $3"),
            &[&user, &after, &limit],
        )
        .await?;
    rows.iter().map(Community::from_row).collect()
}

/// Every active community of `user` (suspended and deleted tenants left
/// out): the set a feed or a share may touch. `tx` is a transaction of
/// `user`'s context ([`crate::TenantContext::user`]).
pub async fn active(tx: Tx, user: Uuid) -> Result<Vec<Community>, DbError> {
    let rows = tx
        .query_and_commit(
            &format!("{COMMUNITY_SQL} AND t.status = 'active' ORDER BY uc.tenant_id"),
            &[&user],
        )
        .await?;
    rows.iter().map(Community::from_row).collect()
}

/// The SQL of a page of the posts feed, as [`feed_posts_and_commit`] sends
/// it: `$1` the tenants (uuid[]), `$2` the limit, then the keyset
/// `($3, $4)` if `after`. Each tenant's LATERAL reads only `(created_at, id)`
/// from `posts_tenant_newest` (an index-only walk when the visibility map
/// allows) and stops at LIMIT; the whole rows are fetched by primary key for
/// the page's winners only.
pub fn feed_posts_sql(after: bool) -> String {
    let keyset = if after {
        "AND (created_at, id) < ($3, $4)"
    } else {
        ""
    };
    let columns = prefixed("p", POST_COLUMNS);
    format!(
        "SELECT top.tenant_id, t.slug AS tenant_slug, {columns}
         FROM (
             SELECT m.tenant_id, k.created_at, k.id
             FROM unnest($1::uuid[]) AS m(tenant_id)
             CROSS JOIN LATERAL (
                 SELECT created_at, id FROM posts
                 WHERE tenant_id = m.tenant_id AND deleted_at IS NULL {keyset}
                 ORDER BY created_at DESC, id DESC LIMIT $2
             ) k
             ORDER BY k.created_at DESC, k.id DESC LIMIT $2
         ) top
         JOIN posts p ON p.tenant_id = top.tenant_id AND p.id = top.id
         JOIN tenants t ON t.id = top.tenant_id
         ORDER BY top.created_at DESC, top.id DESC"
    )
}

/// The SQL of a page of the events feed (upcoming, soonest first): `$1` the
/// tenants, `$2` the limit, `$3` "now", then the keyset `($4, $5)` if
/// `after`. Same shape as [`feed_posts_sql`] over `events_tenant_upcoming`.
pub fn feed_events_sql(after: bool) -> String {
    let keyset = if after {
        "AND (start_date, id) > ($4, $5)"
    } else {
        ""
    };
    let columns = prefixed("e", EVENT_COLUMNS);
    format!(
        "SELECT top.tenant_id, t.slug AS tenant_slug, {columns}
         FROM (
             SELECT m.tenant_id, k.start_date, k.id
             FROM unnest($1::uuid[]) AS m(tenant_id)
             CROSS JOIN LATERAL (
                 SELECT start_date, id FROM events
                 WHERE tenant_id = m.tenant_id AND cancelled_at IS NULL AND start_date >= $3
                   {keyset}
                 ORDER BY start_date, id LIMIT $2
             ) k
             ORDER BY k.start_date, k.id LIMIT $2
         ) top
         JOIN events e ON e.tenant_id = top.tenant_id AND e.id = top.id
         JOIN tenants t ON t.id = top.tenant_id
         ORDER BY top.start_date, top.id"
    )
}

fn prefixed(alias: &str, columns: &str) -> String {
    columns
        .split(',')
        .map(|c| format!("{alias}.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An item of a feed: the community it is in, and the content.
#[derive(Debug, Clone)]
pub struct FeedItem<T> {
    pub tenant_id: Uuid,
    pub tenant_slug: String,
    pub item: T,
}

fn feed_item<T>(
    row: &Row,
    read: impl Fn(&Row) -> Result<T, DbError>,
) -> Result<FeedItem<T>, DbError> {
    Ok(FeedItem {
        tenant_id: row.try_get("tenant_id")?,
        tenant_slug: row.try_get("tenant_slug")?,
        item: read(row)?,
    })
}

/// Newest posts across `tenants` (whose ids the transaction's context must
/// admit), after `after`, and commits: one round trip.
pub async fn feed_posts_and_commit(
    tx: Tx,
    tenants: &[Uuid],
    after: Option<Keyset>,
    limit: i64,
) -> Result<Vec<FeedItem<Post>>, DbError> {
    let rows = match after {
        None => {
            tx.query_and_commit(&feed_posts_sql(false), &[&tenants, &limit])
                .await?
        }
        Some(k) => {
            tx.query_and_commit(
                &feed_posts_sql(true),
                &[&tenants, &limit, &k.created_at, &k.id],
            )
            .await?
        }
    };
    rows.iter().map(|r| feed_item(r, Post::from_row)).collect()
}

/// Upcoming events (starting at or after `now`) across `tenants`, soonest
/// first, after `after`, and commits: one round trip.
pub async fn feed_events_and_commit(
    tx: Tx,
    tenants: &[Uuid],
    now: DateTime<Utc>,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<FeedItem<Event>>, DbError> {
    let sql = feed_events_sql(after.is_some());
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&tenants, &limit, &now];
    if let Some((at, id)) = &after {
        params.push(at);
        params.push(id);
    }
    let rows = tx.query_and_commit(&sql, &params).await?;
    rows.iter().map(|r| feed_item(r, Event::from_row)).collect()
}
