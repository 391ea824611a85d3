//! Sharing a post or event of one community into another.
//!
//! A share is a snapshot row in the target tenant (a post or event with
//! `origin_tenant_id`/`origin_id` set), so the target's lists, its feed and
//! its search show shared content with no cross-tenant join, and row-level
//! security never has to admit two tenants at read time. Writing a share is
//! the only moment both tenants are in the transaction's context: the source
//! row is read (it must exist and not be deleted or cancelled) and the copy
//! inserted in one statement. A unique index on
//! `(tenant_id, origin_tenant_id, origin_id)` makes a share idempotent per
//! (target, original content); sharing a share points at the original.

use tokio_postgres::Row;
use uuid::Uuid;

use crate::events::{EVENT_COLUMNS, Event};
use crate::posts::{POST_COLUMNS, Post, PostQuota};
use crate::{DbError, Tx};

/// What a share did.
#[derive(Debug)]
pub enum Shared<T> {
    /// A new copy in the target.
    Created(T),
    /// The target already held a live copy of this content: that copy.
    Existing(T),
    /// The source holds no such live content (or is not the caller's to read).
    NoSource,
    /// The source exists but no copy was made: the target's quota is full
    /// (`quota` says which), or a concurrent share of the same content won
    /// the unique index (`quota` is `None`; looking again finds its copy).
    NotCopied { quota: Option<&'static str> },
}

/// The statement both kinds share: `src` reads the source row, `existing` a
/// live copy already in the target, `ins` inserts a copy unless one exists.
/// For posts, `counted` first raises the target's usage within its quotas.
/// Always one row: the outcome, and the copy's columns when there is one.
/// Parameters: `$1` source tenant, `$2` content id, `$3` target tenant, `$4`
/// new id, `$5` sharer, then (posts) `$6` max posts, `$7` max bytes.
fn share_sql(kind: Kind) -> String {
    let ctes = match kind {
        Kind::Post => format!(
            "src AS (
                 SELECT coalesce(origin_tenant_id, tenant_id) AS o_tenant,
                        coalesce(origin_id, id) AS o_id, author_id, content
                 FROM posts WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL
             ),
             existing AS (
                 SELECT {POST_COLUMNS} FROM posts
                 WHERE tenant_id = $3 AND deleted_at IS NULL
                   AND ((origin_tenant_id, origin_id) = (SELECT o_tenant, o_id FROM src)
                        -- a share of a share back into the original's tenant
                        OR (tenant_id, id) = (SELECT o_tenant, o_id FROM src))
             ),
             counted AS (
                 UPDATE tenants SET post_count = post_count + 1,
                        storage_bytes = storage_bytes + (SELECT octet_length(content) FROM src)
                 WHERE id = $3 AND EXISTS (SELECT 1 FROM src)
                   AND NOT EXISTS (SELECT 1 FROM existing)
                   AND post_count < $6
                   AND storage_bytes + (SELECT octet_length(content) FROM src) <= $7
                 RETURNING id
             ),
             ins AS (
                 INSERT INTO posts (tenant_id, id, author_id, content, origin_tenant_id,
                                    origin_id, shared_by)
                 SELECT $3, $4, author_id, content, o_tenant, o_id, $5 FROM src, counted
                 ON CONFLICT DO NOTHING
                 RETURNING {POST_COLUMNS}
             )"
        ),
        Kind::Event => format!(
            "src AS (
                 SELECT coalesce(origin_tenant_id, tenant_id) AS o_tenant,
                        coalesce(origin_id, id) AS o_id, created_by, title, description,
                        start_date, end_date, location_name
                 FROM events WHERE tenant_id = $1 AND id = $2 AND cancelled_at IS NULL
             ),
             existing AS (
                 SELECT {EVENT_COLUMNS} FROM events
                 WHERE tenant_id = $3 AND cancelled_at IS NULL
                   AND ((origin_tenant_id, origin_id) = (SELECT o_tenant, o_id FROM src)
                        OR (tenant_id, id) = (SELECT o_tenant, o_id FROM src))
             ),
             ins AS (
                 INSERT INTO events (tenant_id, id, created_by, title, description, start_date,
                                     end_date, location_name, origin_tenant_id, origin_id,
                                     shared_by)
                 SELECT $3, $4, created_by, title, description, start_date, end_date,
                        location_name, o_tenant, o_id, $5
                 FROM src WHERE NOT EXISTS (SELECT 1 FROM existing)
                 ON CONFLICT DO NOTHING
                 RETURNING {EVENT_COLUMNS}
             )"
        ),
    };
    format!(
        "WITH {ctes}
         SELECT CASE WHEN EXISTS (SELECT 1 FROM ins) THEN 'created'
                     WHEN EXISTS (SELECT 1 FROM existing) THEN 'existing'
                     WHEN EXISTS (SELECT 1 FROM src) THEN 'not_copied'
                     ELSE 'no_source' END AS outcome,
                copy.*
         FROM (SELECT 1) one
         LEFT JOIN (SELECT * FROM ins UNION ALL SELECT * FROM existing) copy ON true"
    )
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Post,
    Event,
}

/// Runs the share statement; commits only when a copy was created.
async fn share<T>(
    mut tx: Tx,
    _kind: Kind,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    read: impl Fn(&Row) -> Result<T, DbError>,
    full_quota: impl AsyncFnOnce(&mut Tx) -> Result<Option<&'static str>, DbError>,
    sql: &str,
) -> Result<Shared<T>, DbError> {
    let row = tx.query_one(sql, params).await?;
    let outcome = match row.try_get::<_, &str>("outcome")? {
        "created" => Shared::Created(read(&row)?),
        "existing" => Shared::Existing(read(&row)?),
        "not_copied" => {
            // Dropping the transaction rolls back whatever was counted.
            let quota = full_quota(&mut tx).await?;
            return Ok(Shared::NotCopied { quota });
        }
        _ => return Ok(Shared::NoSource),
    };
    if matches!(outcome, Shared::Created(_)) {
        tx.commit().await?;
    }
    Ok(outcome)
}

/// Shares post `id` of `source` into `target` as `user`, counting the copy
/// against the target's quotas, and commits. The transaction's context must
/// admit both tenants.
pub async fn share_post_and_commit(
    tx: Tx,
    source: Uuid,
    id: Uuid,
    target: Uuid,
    user: Uuid,
    quota: PostQuota,
) -> Result<Shared<Post>, DbError> {
    let max_posts = i64::try_from(quota.max_posts).unwrap_or(i64::MAX);
    let max_bytes = i64::try_from(quota.max_storage_bytes).unwrap_or(i64::MAX);
    share(
        tx,
        Kind::Post,
        &[
            &source,
            &id,
            &target,
            &crate::new_id(),
            &user,
            &max_posts,
            &max_bytes,
        ],
        Post::from_row,
        async |tx: &mut Tx| full_post_quota(tx, target, max_posts, max_bytes).await,
        &share_sql(Kind::Post),
    )
    .await
}

/// Which of `target`'s post quotas is full, if one is.
async fn full_post_quota(
    tx: &mut Tx,
    target: Uuid,
    max_posts: i64,
    max_bytes: i64,
) -> Result<Option<&'static str>, DbError> {
    let row = tx
        .query_one(
            "SELECT post_count, storage_bytes FROM tenants WHERE id = $1",
            &[&target],
        )
        .await?;
    let (posts, bytes): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
    Ok(if posts >= max_posts {
        Some("max_posts")
    } else if bytes >= max_bytes {
        Some("max_storage_mb")
    } else {
        None
    })
}

/// Shares event `id` of `source` into `target`, as
/// [`share_post_and_commit`] (events count against no quota).
pub async fn share_event_and_commit(
    tx: Tx,
    source: Uuid,
    id: Uuid,
    target: Uuid,
    user: Uuid,
) -> Result<Shared<Event>, DbError> {
    share(
        tx,
        Kind::Event,
        &[&source, &id, &target, &crate::new_id(), &user],
        Event::from_row,
        async |_: &mut Tx| Ok(None),
        &share_sql(Kind::Event),
    )
    .await
}

// ---------------------------------------------------------------------------
// Across cells: the source and the target in different databases. No one
// transaction sees both, so the source is read in its cell first, then the
// copy is written in the target's cell by the same statement as above with
// the source given as values (and the users it names made known there for
// the foreign keys).

/// A source read in its own cell, to be copied into another.
#[derive(Debug, Clone)]
pub enum Source {
    Post {
        o_tenant: Uuid,
        o_id: Uuid,
        author_id: Uuid,
        content: String,
    },
    Event {
        o_tenant: Uuid,
        o_id: Uuid,
        created_by: Uuid,
        title: String,
        description: Option<String>,
        start_date: chrono::DateTime<chrono::Utc>,
        end_date: Option<chrono::DateTime<chrono::Utc>>,
        location_name: Option<String>,
    },
}

/// Reads the live post (`post`) or event `id` of `source` to share it, and
/// commits: `None` if there is none the transaction may see.
pub async fn read_source_and_commit(
    tx: Tx,
    source: Uuid,
    id: Uuid,
    post: bool,
) -> Result<Option<Source>, DbError> {
    let sql = if post {
        "SELECT coalesce(origin_tenant_id, tenant_id) AS o_tenant,
                coalesce(origin_id, id) AS o_id, author_id, content
         FROM posts WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL"
    } else {
        "SELECT coalesce(origin_tenant_id, tenant_id) AS o_tenant,
                coalesce(origin_id, id) AS o_id, created_by, title, description,
                start_date, end_date, location_name
         FROM events WHERE tenant_id = $1 AND id = $2 AND cancelled_at IS NULL"
    };
    let rows = tx.query_and_commit(sql, &[&source, &id]).await?;
    let Some(r) = rows.first() else {
        return Ok(None);
    };
    Ok(Some(if post {
        Source::Post {
            o_tenant: r.try_get("o_tenant")?,
            o_id: r.try_get("o_id")?,
            author_id: r.try_get("author_id")?,
            content: r.try_get("content")?,
        }
    } else {
        Source::Event {
            o_tenant: r.try_get("o_tenant")?,
            o_id: r.try_get("o_id")?,
            created_by: r.try_get("created_by")?,
            title: r.try_get("title")?,
            description: r.try_get("description")?,
            start_date: r.try_get("start_date")?,
            end_date: r.try_get("end_date")?,
            location_name: r.try_get("location_name")?,
        }
    }))
}

/// The share statement with `src` given as values: `$8..` after the
/// statement's own parameters. Also makes the users the copy names known in
/// the target's database (author or creator, and the sharer `$5`).
fn share_from_values_sql(kind: Kind) -> String {
    let sql = share_sql(kind);
    let (src_start, src_values) = match kind {
        Kind::Post => (
            "src AS (",
            "src AS (SELECT $8::uuid AS o_tenant, $9::uuid AS o_id, $10::uuid AS author_id,
                        $11::text AS content, $1::uuid AS from_tenant, $2::uuid AS from_id),
             known AS (INSERT INTO users (id) SELECT author_id FROM src UNION SELECT $5
                       ON CONFLICT (id) DO NOTHING),",
        ),
        Kind::Event => (
            "src AS (",
            "src AS (SELECT $6::uuid AS o_tenant, $7::uuid AS o_id, $8::uuid AS created_by,
                        $9::text AS title, $10::text AS description,
                        $11::timestamptz AS start_date, $12::timestamptz AS end_date,
                        $13::text AS location_name, $1::uuid AS from_tenant,
                        $2::uuid AS from_id),
             known AS (INSERT INTO users (id) SELECT created_by FROM src UNION SELECT $5
                       ON CONFLICT (id) DO NOTHING),",
        ),
    };
    // Replace the first CTE (reading the source table) by the values.
    let start = sql
        .find(src_start)
        .expect("the share statement starts with src");
    let end = sql[start..]
        .find("existing AS (")
        .map(|i| start + i)
        .expect("the share statement has existing");
    format!(
        "{}{}\n             {}",
        &sql[..start],
        src_values,
        &sql[end..]
    )
}

/// Writes a copy of `src` (read from another cell) into `target` as
/// `user`, counting it against the target's quotas (posts), and commits.
/// The transaction runs in the target's cell with the target in context.
pub async fn share_from_and_commit(
    tx: Tx,
    src: &Source,
    target: Uuid,
    user: Uuid,
    quota: Option<PostQuota>,
) -> Result<Shared<SharedCopy>, DbError> {
    // `$1`/`$2` (the source's tenant and id) are unused by the values form
    // but keep the numbering of the one-database statement.
    let nil = Uuid::nil();
    match src {
        Source::Post {
            o_tenant,
            o_id,
            author_id,
            content,
        } => {
            let quota = quota.unwrap_or(PostQuota {
                max_posts: u64::MAX,
                max_storage_bytes: u64::MAX,
            });
            let max_posts = i64::try_from(quota.max_posts).unwrap_or(i64::MAX);
            let max_bytes = i64::try_from(quota.max_storage_bytes).unwrap_or(i64::MAX);
            let shared = share(
                tx,
                Kind::Post,
                &[
                    &nil,
                    &nil,
                    &target,
                    &crate::new_id(),
                    &user,
                    &max_posts,
                    &max_bytes,
                    o_tenant,
                    o_id,
                    author_id,
                    content,
                ],
                Post::from_row,
                async |tx: &mut Tx| full_post_quota(tx, target, max_posts, max_bytes).await,
                &share_from_values_sql(Kind::Post),
            )
            .await?;
            Ok(shared.map(SharedCopy::Post))
        }
        Source::Event {
            o_tenant,
            o_id,
            created_by,
            title,
            description,
            start_date,
            end_date,
            location_name,
        } => {
            let shared = share(
                tx,
                Kind::Event,
                &[
                    &nil,
                    &nil,
                    &target,
                    &crate::new_id(),
                    &user,
                    o_tenant,
                    o_id,
                    created_by,
                    title,
                    description,
                    start_date,
                    end_date,
                    location_name,
                ],
                Event::from_row,
                async |_: &mut Tx| Ok(None),
                &share_from_values_sql(Kind::Event),
            )
            .await?;
            Ok(shared.map(SharedCopy::Event))
        }
    }
}

/// The copy a share across cells made or found.
#[derive(Debug)]
pub enum SharedCopy {
    Post(Post),
    Event(Event),
}

impl<T> Shared<T> {
    fn map<U>(self, f: impl FnOnce(T) -> U) -> Shared<U> {
        match self {
            Shared::Created(t) => Shared::Created(f(t)),
            Shared::Existing(t) => Shared::Existing(f(t)),
            Shared::NoSource => Shared::NoSource,
            Shared::NotCopied { quota } => Shared::NotCopied { quota },
        }
    }
}
