//! Full-text search over a tenant's posts and events.
//!
//! Both tables carry a generated `tsv` column and a GIN index on
//! `(tenant_id, tsv)` (btree_gin), so the tenant's equality and the text
//! match are answered by one index. The query string goes through
//! `websearch_to_tsquery`, which accepts any input (quotes, `or`, `-`,
//! punctuation) without a syntax error. Results are ranked with `ts_rank`
//! and paged by the keyset `(rank, id)`, highest rank first.
//!
//! # Bounded cost: which matches are ranked
//!
//! Ranking needs every candidate's vector, so ranking *all* matches of a
//! common word costs what reading a fifth of a large community costs (25,000
//! heap rows for one word in a 108,000-post community: 30–60 ms). The
//! candidate set is therefore bounded by construction, not by the planner's
//! estimates (under row-level security those are off by orders of
//! magnitude, so a plan chosen on them read whole communities):
//!
//! 1. the **window**: the newest [`WINDOW`] rows of the tenant, walked on
//!    the tenant's recency index (`posts_tenant_newest`, and
//!    `events_tenant_upcoming` backwards for events) and kept if they match.
//!    Fixed cost, whatever the word.
//! 2. only if fewer than [`RARE`] rows of the window match (a rare query),
//!    **every** match, found through the `(tenant_id, tsv)` GIN index — at
//!    most [`ALL_MATCHES_CAP`] of them; a query with more matches than
//!    that (rare lately, common long ago) falls back to the window.
//!
//! So: a tenant with at most [`WINDOW`] rows, or a query with few matches,
//! is ranked exactly over all matches; a common query ranks the matches
//! among the newest [`WINDOW`] rows. The choice is made at run time from
//! counts (one-time filters on the materialized window), so each branch's
//! cost is bounded in every plan. The keyset `(rank, id)` pages through
//! the candidate set as it is when each page is read: a post written
//! between two pages may move the window by one post.

use chrono::{DateTime, Utc};
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::{DbError, Tx};

/// The text-search configuration of the generated columns (V20).
pub const TS_CONFIG: &str = "english";

/// How many of the newest posts (and of the latest-starting events) every
/// search reads and ranks.
pub const WINDOW: i64 = 5_000;

/// Fewer matches than this in the window make a query rare: then all of
/// the tenant's matches are ranked, through the GIN index.
pub const RARE: i64 = 50;

/// The most matches ranked through the GIN index; beyond it the window's
/// matches are used.
pub const ALL_MATCHES_CAP: i64 = 1_000;

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

/// One searched table: how its rows become hits.
struct Source {
    /// The CTE names' prefix.
    name: &'static str,
    table: &'static str,
    /// The columns of a hit after `id`: title, body, at.
    columns: &'static str,
    /// Live rows (the search and recency indexes' predicate).
    live: &'static str,
    /// The recency order, exactly that of the tenant's recency index.
    newest: &'static str,
}

const POSTS: Source = Source {
    name: "post",
    table: "posts",
    columns: "NULL::text AS title, content AS body, created_at AS at",
    live: "deleted_at IS NULL",
    newest: "created_at DESC, id DESC",
};

const EVENTS: Source = Source {
    name: "event",
    table: "events",
    columns: "title, description AS body, start_date AS at",
    live: "cancelled_at IS NULL",
    newest: "start_date DESC, id DESC",
};

/// The CTEs of one table's candidates (`<name>_hits`): the window's
/// matches, every match if the window says the query is rare, and the
/// choice between the two. Only members search (`r` is the caller's
/// membership): for anyone else nothing is read.
///
/// The cap on all matches is applied outside the CTE that finds them
/// (`<name>_matches`, read lazily, so the scan still stops after the cap):
/// a LIMIT inside would let the planner prefer walking the tenant's rows on
/// a btree and filtering them, betting on the limit to stop it early —
/// which a rare query never does (it read all 30,000 rows of the plan
/// test's tenant that way).
///
/// The window's limit is a subquery, not a constant, on purpose: with a
/// constant the planner compares walking the recency index with reading
/// and sorting all of the tenant's rows on its row estimate for the
/// tenant, which row-level security shrinks (it took the sort, 30,000 rows
/// for a window of 5,000, in the plan test). A limit it cannot see is
/// costed as a tenth of the rows, whatever the estimate, and the ordered
/// walk, which stops after the window, wins.
fn candidates(s: &Source, q: &str) -> String {
    let Source {
        name,
        table,
        columns,
        live,
        newest,
    } = s;
    format!(
        "{name}_window AS MATERIALIZED (
             SELECT id, title, body, at, ts_rank(tsv, {q}) AS rank FROM (
                 SELECT id, {columns}, tsv FROM {table}
                 WHERE tenant_id = $1 AND {live} AND EXISTS (SELECT FROM r)
                 ORDER BY {newest} LIMIT (SELECT {WINDOW})
             ) w
             WHERE tsv @@ {q}
         ),
         {name}_matches AS MATERIALIZED (
             SELECT id, {columns}, ts_rank(tsv, {q}) AS rank FROM {table}
             WHERE tenant_id = $1 AND {live} AND tsv @@ {q}
               AND (SELECT count(*) FROM {name}_window) < {RARE} AND EXISTS (SELECT FROM r)
         ),
         {name}_all AS MATERIALIZED (
             SELECT * FROM {name}_matches LIMIT {ALL_MATCHES_CAP} + 1
         ),
         {name}_hits AS (
             SELECT * FROM {name}_all
             WHERE (SELECT count(*) FROM {name}_all) <= {ALL_MATCHES_CAP}
             UNION ALL
             SELECT * FROM {name}_window
             WHERE (SELECT count(*) FROM {name}_all) NOT BETWEEN 1 AND {ALL_MATCHES_CAP}
         )"
    )
}

/// The SQL of a page of results, as [`search_for_member_and_commit`] sends
/// it: `$1` tenant, `$2` the query string, `$3` limit, `$4` user, then the
/// keyset `($5 rank, $6 id)` if `after`. Each table's candidates (see the
/// module documentation) keep their best `limit` after the keyset; the two
/// are merged.
pub fn search_sql(after: bool) -> String {
    let keyset = if after {
        "WHERE (rank, id) < ($5::real, $6::uuid)"
    } else {
        ""
    };
    // The query is parsed once (an init plan), not per row: in a generic
    // plan of the prepared statement `$2` is unknown, so a call written in
    // place is not folded to a constant and runs for every row it filters.
    let q = "(SELECT q FROM q)";
    let posts = candidates(&POSTS, q);
    let events = candidates(&EVENTS, q);
    format!(
        "WITH r AS (SELECT role FROM memberships WHERE tenant_id = $1 AND user_id = $4),
         q AS (SELECT websearch_to_tsquery('{TS_CONFIG}', $2) AS q),
         {posts},
         {events}
         SELECT r.role AS caller_role, h.* FROM r LEFT JOIN LATERAL (
             SELECT * FROM (
                 (SELECT 'post' AS kind, * FROM post_hits {keyset}
                  ORDER BY rank DESC, id DESC LIMIT $3)
                 UNION ALL
                 (SELECT 'event' AS kind, * FROM event_hits {keyset}
                  ORDER BY rank DESC, id DESC LIMIT $3)
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
    let role = tenantry_core::Role::parse(first.try_get("caller_role")?)
        .map_err(|e| DbError::Other(e.into()))?;
    let hits = rows
        .iter()
        .filter(|r| !matches!(r.try_get::<_, Option<Uuid>>("id"), Ok(None)))
        .map(|r| {
            Ok(Hit {
                kind: r.try_get("kind")?,
                id: r.try_get("id")?,
                title: r.try_get("title")?,
                body: r.try_get("body")?,
                at: r.try_get("at")?,
                rank: r.try_get("rank")?,
            })
        })
        .collect::<Result<_, DbError>>()?;
    Ok((Some(role), hits))
}
