//! Full-text search over a tenant's posts and events.
//!
//! Both tables carry a generated `tsv` column and a GIN index on
//! `(tenant_id, tsv)` (btree_gin), so the tenant's equality and the text
//! match are answered by one index. The query string goes through
//! `websearch_to_tsquery`, which accepts any input (quotes, `or`, `-`,
//! punctuation) without a syntax error. Results are ranked with `ts_rank`
//! and paged by the keyset `(rank, id)`, highest rank first.

use chrono::{DateTime, Utc};
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::{DbError, Tx};

/// The text-search configuration of the generated columns (V20).
pub const TS_CONFIG: &str = "english";

#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// `post` or `event`.
    pub kind: String,
    pub id: Uuid,
    /// An event's title; `None` for a post.
    pub title: Option<String>,
    /// A post's content or an event's description.
    pub body: Option<String>,
    /// A post's creation or an event's start.
    pub at: DateTime<Utc>,
    pub rank: f32,
}

/// The SQL of a page of results, as [`search_for_member_and_commit`] sends
/// it: `$1` tenant, `$2` the query string, `$3` limit, `$4` user, then the
/// keyset `($5 rank, $6 id)` if `after`. Each table's branch finds its
/// matches through its `(tenant_id, tsv)` GIN index and keeps its best
/// `limit` after the keyset; the two are merged.
pub fn search_sql(after: bool) -> String {
    let keyset = if after {
        "WHERE (rank, id) < ($5::real, $6::uuid)"
    } else {
        ""
    };
    let q = format!("websearch_to_tsquery('{TS_CONFIG}', $2)");
    format!(
        "WITH r AS (SELECT role FROM memberships WHERE tenant_id = $1 AND user_id = $4)
         SELECT r.role AS caller_role, h.* FROM r LEFT JOIN LATERAL (
             SELECT * FROM (
                 (SELECT * FROM (
                     SELECT 'post' AS kind, id, NULL::text AS title, content AS body,
                            created_at AS at, ts_rank(tsv, {q}) AS rank
                     FROM posts
                     WHERE tenant_id = $1 AND deleted_at IS NULL AND tsv @@ {q}
                  ) p {keyset} ORDER BY rank DESC, id DESC LIMIT $3)
                 UNION ALL
                 (SELECT * FROM (
                     SELECT 'event' AS kind, id, title, description AS body,
                            start_date AS at, ts_rank(tsv, {q}) AS rank
                     FROM events
                     WHERE tenant_id = $1 AND cancelled_at IS NULL AND tsv @@ {q}
                  ) e {keyset} ORDER BY rank DESC, id DESC LIMIT $3)
             ) both_kinds
             ORDER BY rank DESC, id DESC LIMIT $3
         ) h ON true"
    )
}

/// A page of results for `query`, best first, if `user` is a member; the
/// caller's role (`None`: not a member) and the page, committed in one round
/// trip.
pub async fn search_for_member_and_commit(
    tx: Tx,
    tenant: Uuid,
    user: Uuid,
    query: &str,
    after: Option<(f32, Uuid)>,
    limit: i64,
) -> Result<(Option<tenantry_core::Role>, Vec<Hit>), DbError> {
    let sql = search_sql(after.is_some());
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&tenant, &query, &limit, &user];
    if let Some((rank, id)) = &after {
        params.push(rank);
        params.push(id);
    }
    let rows = tx.query_and_commit(&sql, &params).await?;
    let Some(first) = rows.first() else {
        return Ok((None, Vec::new()));
    };
    let role = tenantry_core::Role::parse(first.get("caller_role"))
        .map_err(|e| DbError::Other(e.into()))?;
    let hits = rows
        .iter()
        .filter(|r| r.get::<_, Option<Uuid>>("id").is_some())
        .map(|r| Hit {
            kind: r.get("kind"),
            id: r.get("id"),
            title: r.get("title"),
            body: r.get("body"),
            at: r.get("at"),
            rank: r.get("rank"),
        })
        .collect();
    Ok((Some(role), hits))
}
