//! Posts, likes and comments.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use uuid::Uuid;

use crate::{DbError, Keyset, Tx, columns};

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Post {
    pub id: Uuid,
    pub author_id: Uuid,
    pub content: String,
    pub like_count: i32,
    pub comment_count: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Set on a copy shared from another community.
    pub origin: Option<crate::origin::Origin>,
}

pub(crate) const POST_COLUMNS: &str = "id, author_id, content, like_count, comment_count, \
     created_at, updated_at, origin_tenant_id, origin_id, shared_by";

/// [`POST_COLUMNS`] of `posts` with the post's counter deltas not yet applied
/// added in (see [`like`]): exact counts for a single post.
const PENDING_POST_COLUMNS: &str = "id, author_id, content,
    like_count + coalesce((SELECT sum(likes) FROM post_counter_deltas d
                           WHERE d.tenant_id = posts.tenant_id AND d.post_id = posts.id), 0)::int
        AS like_count,
    comment_count + coalesce((SELECT sum(comments) FROM post_counter_deltas d
                              WHERE d.tenant_id = posts.tenant_id AND d.post_id = posts.id), 0)::int
        AS comment_count,
    created_at, updated_at, origin_tenant_id, origin_id, shared_by";

impl Post {
    /// Reads a row of [`POST_COLUMNS`] (or [`PENDING_POST_COLUMNS`]), in
    /// their order from its `id` on, whatever comes before.
    pub(crate) fn from_row(row: &Row) -> Result<Self, DbError> {
        let at = columns::position(row, "id");
        Ok(Self {
            id: columns::get(row, at, "id")?,
            author_id: columns::get(row, at + 1, "author_id")?,
            content: columns::get(row, at + 2, "content")?,
            like_count: columns::get(row, at + 3, "like_count")?,
            comment_count: columns::get(row, at + 4, "comment_count")?,
            created_at: columns::time(row, at + 5, "created_at")?,
            updated_at: columns::time(row, at + 6, "updated_at")?,
            origin: crate::origin::Origin::from_row(row, at + 7)?,
        })
    }

    pub fn keyset(&self) -> Keyset {
        Keyset {
            created_at: self.created_at,
            id: self.id,
        }
    }
}

/// The quotas a new post counts against.
#[derive(Debug, Clone, Copy)]
pub struct PostQuota {
    pub max_posts: u64,
    pub max_storage_bytes: u64,
}

/// Creates a post and counts it (and its bytes) in the tenant's usage, in one
/// statement. The usage is raised only while it stays within `quota`, under
/// the tenant row's lock, so racing writers never overshoot.
pub async fn create(
    tx: &mut Tx,
    tenant: Uuid,
    author: Uuid,
    content: &str,
    quota: PostQuota,
) -> Result<Post, DbError> {
    let max_posts = i64::try_from(quota.max_posts).unwrap_or(i64::MAX);
    let max_bytes = i64::try_from(quota.max_storage_bytes).unwrap_or(i64::MAX);
    let bytes = i64::try_from(content.len()).unwrap_or(i64::MAX);
    let sql = format!(
        "WITH counted AS (
             UPDATE tenants SET post_count = post_count + 1, storage_bytes = storage_bytes + $5
             WHERE id = $1 AND post_count < $6 AND storage_bytes + $5 <= $7
             RETURNING id
         ),
         p AS (
             INSERT INTO posts (tenant_id, id, author_id, content)
             SELECT id, $2, $3, $4 FROM counted
             RETURNING {POST_COLUMNS}
         ),
         -- Counted in the daily statistics by the counter worker.
         d AS (
             INSERT INTO post_counter_deltas (tenant_id, post_id, user_id, posts)
             SELECT $1, id, $3, 1 FROM p
         )
         SELECT {POST_COLUMNS} FROM p"
    );
    let row = tx
        .query_opt(
            &sql,
            &[
                &tenant,
                &crate::new_id(),
                &author,
                &content,
                &bytes,
                &max_posts,
                &max_bytes,
            ],
        )
        .await?;
    match row {
        Some(row) => Post::from_row(&row),
        None => {
            // Say which quota: the tenant row is locked by nobody now (the
            // UPDATE matched nothing), so this read is current.
            let usage = tx
                .query_one("SELECT post_count FROM tenants WHERE id = $1", &[&tenant])
                .await?;
            let posts: i64 = usage.try_get(0)?;
            let quota = if posts >= max_posts {
                "max_posts"
            } else {
                "max_storage_mb"
            };
            Err(DbError::QuotaExceeded { quota })
        }
    }
}

/// The SQL of a page of posts, newest first, with the caller's role: no row
/// at all for a non-member, one row with null post columns for a member of a
/// tenant without posts. Two statements rather than one with
/// `$3 IS NULL OR ...`, so each has a plan that walks `posts_tenant_newest`
/// from the right place and stops at LIMIT. The membership check rides in
/// the same statement, so the page costs one round trip.
pub fn list_sql(after: bool) -> String {
    let (keyset, user) = if after {
        ("AND (created_at, id) < ($4, $5)", "$3")
    } else {
        ("", "$3")
    };
    format!(
        "WITH r AS (SELECT role FROM memberships WHERE tenant_id = $1 AND user_id = {user})
         SELECT r.role, p.* FROM r LEFT JOIN LATERAL (
             SELECT {POST_COLUMNS} FROM posts
             WHERE tenant_id = $1 AND deleted_at IS NULL {keyset}
             ORDER BY created_at DESC, id DESC LIMIT $2
         ) p ON true"
    )
}

/// A page of posts newest first, after `after`, if `user` is a member.
/// Returns the caller's role (`None`: not a member, and no posts) and
/// commits, all in the transaction's one round trip.
pub async fn list_for_member_and_commit(
    tx: Tx,
    tenant: Uuid,
    user: Uuid,
    after: Option<Keyset>,
    limit: i64,
) -> Result<(Option<tenantry_core::Role>, Vec<Post>), DbError> {
    let rows = match after {
        None => {
            tx.query_and_commit(&list_sql(false), &[&tenant, &limit, &user])
                .await?
        }
        Some(k) => {
            tx.query_and_commit(
                &list_sql(true),
                &[&tenant, &limit, &user, &k.created_at, &k.id],
            )
            .await?
        }
    };
    let Some(first) = rows.first() else {
        return Ok((None, Vec::new()));
    };
    let role =
        tenantry_core::Role::parse(first.try_get("role")?).map_err(|e| DbError::Other(e.into()))?;
    let at = columns::position(first, "id");
    let posts = rows
        .iter()
        .filter(|r| !matches!(columns::get::<Option<Uuid>>(r, at, "id"), Ok(None)))
        .map(Post::from_row)
        .collect::<Result<_, _>>()?;
    Ok((Some(role), posts))
}

/// One post, if `user` is a member, and commits: one round trip with the
/// prelude. `(None, None)`: not a member; `(Some(role), None)`: no such post.
pub async fn get_for_member_and_commit(
    tx: Tx,
    tenant: Uuid,
    user: Uuid,
    id: Uuid,
) -> Result<(Option<tenantry_core::Role>, Option<Post>), DbError> {
    let sql = format!(
        "WITH r AS (SELECT role FROM memberships WHERE tenant_id = $1 AND user_id = $3)
         SELECT r.role, p.* FROM r LEFT JOIN LATERAL (
             SELECT {PENDING_POST_COLUMNS} FROM posts
             WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL
         ) p ON true"
    );
    let rows = tx.query_and_commit(&sql, &[&tenant, &id, &user]).await?;
    let Some(row) = rows.first() else {
        return Ok((None, None));
    };
    let role =
        tenantry_core::Role::parse(row.try_get("role")?).map_err(|e| DbError::Other(e.into()))?;
    let post = row
        .try_get::<_, Option<Uuid>>("id")?
        .is_some()
        .then(|| Post::from_row(row))
        .transpose()?;
    Ok((Some(role), post))
}

/// Reads a post and locks it until the transaction ends, so an edit or
/// delete that follows sees no concurrent change in between.
pub async fn get_for_update(tx: &mut Tx, tenant: Uuid, id: Uuid) -> Result<Option<Post>, DbError> {
    let sql = format!(
        "SELECT {POST_COLUMNS} FROM posts
         WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL
         FOR UPDATE"
    );
    let row = tx.query_opt(&sql, &[&tenant, &id]).await?;
    row.as_ref().map(Post::from_row).transpose()
}

pub async fn update(
    tx: &mut Tx,
    tenant: Uuid,
    id: Uuid,
    content: &str,
) -> Result<Option<Post>, DbError> {
    // The storage count follows the edit; edits are not refused for storage
    // (a member may always shorten or fix a post). Callers lock the post first
    // (`get_for_update`), so `old` reads the size the last edit left.
    let sql = format!(
        "WITH old AS (
             SELECT octet_length(content)::bigint AS bytes FROM posts
             WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL
         ),
         recounted AS (
             UPDATE tenants
             SET storage_bytes = storage_bytes - (SELECT bytes FROM old) + octet_length($3::text)
             WHERE id = $1 AND EXISTS (SELECT 1 FROM old)
         )
         UPDATE posts SET content = $3, updated_at = now()
         WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL
         RETURNING {POST_COLUMNS}"
    );
    let row = tx.query_opt(&sql, &[&tenant, &id, &content]).await?;
    row.as_ref().map(Post::from_row).transpose()
}

/// Soft-deletes a post and gives its quota back. False if it was not there.
pub async fn soft_delete(tx: &mut Tx, tenant: Uuid, id: Uuid) -> Result<bool, DbError> {
    let row = tx
        .query_one(
            "WITH d AS (
                 UPDATE posts SET deleted_at = now()
                 WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL
                 RETURNING octet_length(content)::bigint AS bytes
             ),
             uncounted AS (
                 UPDATE tenants SET post_count = post_count - 1,
                                    storage_bytes = storage_bytes - (SELECT bytes FROM d)
                 WHERE id = $1 AND EXISTS (SELECT 1 FROM d)
             )
             SELECT count(*) FROM d",
            &[&tenant, &id],
        )
        .await?;
    Ok(row.try_get::<_, i64>(0)? > 0)
}

/// Likes a post as `user`; liking twice counts once. Returns the post's like
/// count, or `None` if the post does not exist.
///
/// The count is not updated here: a delta row is recorded in this
/// transaction and the counter worker applies many of them as one UPDATE per
/// post, so a hot post's row is not locked by every click. The answer adds
/// the pending deltas to the stored count.
pub async fn like(
    tx: &mut Tx,
    tenant: Uuid,
    post: Uuid,
    user: Uuid,
) -> Result<Option<i32>, DbError> {
    like_or_unlike(tx, tenant, post, user, true).await
}

/// Takes `user`'s like back; unliking twice is a no-op. Returns the like
/// count, or `None` if the post does not exist.
pub async fn unlike(
    tx: &mut Tx,
    tenant: Uuid,
    post: Uuid,
    user: Uuid,
) -> Result<Option<i32>, DbError> {
    like_or_unlike(tx, tenant, post, user, false).await
}

async fn like_or_unlike(
    tx: &mut Tx,
    tenant: Uuid,
    post: Uuid,
    user: Uuid,
    like: bool,
) -> Result<Option<i32>, DbError> {
    let (change, delta) = if like {
        (
            "INSERT INTO post_likes (tenant_id, post_id, user_id)
             SELECT $1, id, $3 FROM p
             ON CONFLICT DO NOTHING
             RETURNING post_id",
            1,
        )
    } else {
        (
            "DELETE FROM post_likes
             WHERE tenant_id = $1 AND post_id = (SELECT id FROM p) AND user_id = $3
             RETURNING post_id",
            -1,
        )
    };
    let sql = format!(
        "WITH p AS (
             SELECT id, like_count FROM posts
             WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL
         ),
         changed AS ({change}),
         d AS (
             INSERT INTO post_counter_deltas (tenant_id, post_id, user_id, likes)
             SELECT $1, post_id, $3, {delta} FROM changed
         )
         SELECT (p.like_count
                 + coalesce((SELECT sum(likes) FROM post_counter_deltas
                             WHERE tenant_id = $1 AND post_id = $2), 0)
                 + {delta} * (SELECT count(*) FROM changed))::int
         FROM p"
    );
    let row = tx.query_opt(&sql, &[&tenant, &post, &user]).await?;
    Ok(row.map(|r| r.try_get(0)).transpose()?)
}

#[derive(Debug, Clone, PartialEq)]
pub struct Comment {
    pub id: Uuid,
    pub post_id: Uuid,
    pub author_id: Uuid,
    pub content: String,
    pub created_at: DateTime<Utc>,
}

impl Comment {
    fn from_row(row: &Row) -> Result<Self, DbError> {
        Ok(Self {
            id: row.try_get("id")?,
            post_id: row.try_get("post_id")?,
            author_id: row.try_get("author_id")?,
            content: row.try_get("content")?,
            created_at: row.try_get("created_at")?,
        })
    }

    pub fn keyset(&self) -> Keyset {
        Keyset {
            created_at: self.created_at,
            id: self.id,
        }
    }
}

/// Comments on a post and records the count's delta, in one statement.
/// `None` if the post does not exist.
pub async fn add_comment(
    tx: &mut Tx,
    tenant: Uuid,
    post: Uuid,
    author: Uuid,
    content: &str,
) -> Result<Option<Comment>, DbError> {
    let row = tx
        .query_opt(
            "WITH p AS (
                 SELECT id FROM posts
                 WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL
             ),
             c AS (
                 INSERT INTO comments (tenant_id, id, post_id, author_id, content)
                 SELECT $1, $3, id, $4, $5 FROM p
                 RETURNING id, post_id, author_id, content, created_at
             ),
             -- Counted by the counter worker (coalesced, see `like`).
             d AS (
                 INSERT INTO post_counter_deltas (tenant_id, post_id, user_id, comments)
                 SELECT $1, post_id, $4, 1 FROM c
             )
             SELECT * FROM c",
            &[&tenant, &post, &crate::new_id(), &author, &content],
        )
        .await?;
    row.as_ref().map(Comment::from_row).transpose()
}

/// What a member-only read of a post's comments found.
#[derive(Debug)]
pub enum CommentsPage {
    NotAMember,
    NoSuchPost,
    Page(Vec<Comment>),
}

/// A page of a post's comments, oldest first, after `after`, with the
/// membership and the post's existence checked in the same statement; commits
/// in the transaction's one round trip.
pub async fn list_comments_for_member_and_commit(
    tx: Tx,
    tenant: Uuid,
    user: Uuid,
    post: Uuid,
    after: Option<Keyset>,
    limit: i64,
) -> Result<CommentsPage, DbError> {
    let keyset = if after.is_some() {
        "AND (created_at, id) > ($5, $6)"
    } else {
        ""
    };
    let sql = format!(
        "WITH r AS (SELECT role FROM memberships WHERE tenant_id = $1 AND user_id = $4),
         p AS (SELECT id FROM posts WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL)
         SELECT EXISTS (SELECT 1 FROM p) AS post_exists, page.* FROM r LEFT JOIN LATERAL (
             SELECT id, post_id, author_id, content, created_at FROM comments
             WHERE tenant_id = $1 AND post_id = (SELECT id FROM p) AND deleted_at IS NULL {keyset}
             ORDER BY created_at, id LIMIT $3
         ) page ON true"
    );
    let rows = match after {
        None => {
            tx.query_and_commit(&sql, &[&tenant, &post, &limit, &user])
                .await?
        }
        Some(k) => {
            tx.query_and_commit(&sql, &[&tenant, &post, &limit, &user, &k.created_at, &k.id])
                .await?
        }
    };
    let Some(first) = rows.first() else {
        return Ok(CommentsPage::NotAMember);
    };
    if !first.try_get::<_, bool>("post_exists")? {
        return Ok(CommentsPage::NoSuchPost);
    }
    Ok(CommentsPage::Page(
        rows.iter()
            .filter(|r| !matches!(r.try_get::<_, Option<Uuid>>("id"), Ok(None)))
            .map(Comment::from_row)
            .collect::<Result<_, _>>()?,
    ))
}
