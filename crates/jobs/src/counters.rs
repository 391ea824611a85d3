//! The counter worker: applies the post counter deltas that likes, unlikes,
//! comments and new posts record (see `tenantry_db::posts::like`), coalesced.
//!
//! One apply deletes a bounded batch of deltas and, in the same statement,
//! updates each touched post once with the sum of its deltas and upserts the
//! day's statistics (likes, comments, posts, active users). A thousand clicks
//! on a hot post between two applies become one UPDATE of its row. The
//! deltas are durable from the moment their request commits, and an apply is
//! one transaction, so a crash loses nothing and applies nothing twice.

use std::time::Duration;

use tenantry_db::{Db, DbError, TenantContext};
use tokio::sync::watch;
use uuid::Uuid;

/// Deltas applied per statement.
const APPLY_BATCH: i64 = 50_000;
/// Tenants applied per statement.
const TENANTS_PER_APPLY: i64 = 500;

/// What one [`flush`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Flushed {
    /// Delta rows applied.
    pub deltas: u64,
    /// Post rows updated.
    pub posts: u64,
    /// The tenants whose deltas were applied (their cached post lists are
    /// now stale).
    pub tenants: Vec<Uuid>,
}

/// The tenants that have deltas, after `after`, by a skip scan of the
/// deltas' primary key (one index probe per tenant), as tenantry_worker.
async fn tenants_with_deltas(db: &Db, after: Uuid, limit: i64) -> Result<Vec<Uuid>, DbError> {
    let rows = crate::queue::as_worker(
        db,
        "WITH RECURSIVE t AS (
             (SELECT tenant_id FROM post_counter_deltas WHERE tenant_id > $1
              ORDER BY tenant_id LIMIT 1)
             UNION ALL
             SELECT (SELECT d.tenant_id FROM post_counter_deltas d WHERE d.tenant_id > t.tenant_id
                     ORDER BY d.tenant_id LIMIT 1)
             FROM t WHERE t.tenant_id IS NOT NULL
         )
         SELECT tenant_id FROM t WHERE tenant_id IS NOT NULL LIMIT $2",
        &[&after, &limit],
    )
    .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The apply, in the context of the tenants `$1`.
const APPLY_SQL: &str = "
WITH d AS (
    DELETE FROM post_counter_deltas
    WHERE (tenant_id, id) IN (
        SELECT tenant_id, id FROM post_counter_deltas
        WHERE tenant_id = ANY ($1) ORDER BY tenant_id, id LIMIT $2)
    RETURNING tenant_id, post_id, user_id, likes, comments, posts,
              (created_at AT TIME ZONE 'UTC')::date AS day
),
per_post AS (
    SELECT tenant_id, post_id, sum(likes)::int AS likes, sum(comments)::int AS comments
    FROM d GROUP BY tenant_id, post_id
    HAVING sum(likes) <> 0 OR sum(comments) <> 0
),
updated AS (
    UPDATE posts p SET like_count = p.like_count + s.likes,
                       comment_count = p.comment_count + s.comments
    FROM per_post s
    WHERE p.tenant_id = s.tenant_id AND p.id = s.post_id
    RETURNING 1
),
dau AS (
    INSERT INTO daily_active_users (tenant_id, day, user_id)
    SELECT DISTINCT tenant_id, day, user_id FROM d
    ON CONFLICT DO NOTHING
    RETURNING tenant_id, day
),
new_dau AS (SELECT tenant_id, day, count(*) AS n FROM dau GROUP BY tenant_id, day),
per_day AS (
    SELECT tenant_id, day,
           sum(greatest(likes, 0))::int8 AS likes,
           sum(comments)::int8 AS comments,
           sum(posts)::int8 AS posts
    FROM d GROUP BY tenant_id, day
),
stats AS (
    -- In (tenant, day) order, as the ingest collector locks them: no deadlock.
    INSERT INTO tenant_daily_stats AS s (tenant_id, day, likes, comments, posts, active_users)
    SELECT p.tenant_id, p.day, p.likes, p.comments, p.posts, coalesce(n.n, 0)
    FROM per_day p LEFT JOIN new_dau n ON n.tenant_id = p.tenant_id AND n.day = p.day
    ORDER BY p.tenant_id, p.day
    ON CONFLICT (tenant_id, day) DO UPDATE SET
        likes = s.likes + excluded.likes,
        comments = s.comments + excluded.comments,
        posts = s.posts + excluded.posts,
        active_users = s.active_users + excluded.active_users
)
SELECT (SELECT count(*) FROM d), (SELECT count(*) FROM updated)";

/// Applies every pending delta (in bounded statements). Returns the totals.
pub async fn flush(db: &Db) -> Result<Flushed, DbError> {
    let mut total = Flushed::default();
    let mut after = Uuid::nil();
    loop {
        let tenants = tenants_with_deltas(db, after, TENANTS_PER_APPLY).await?;
        let Some(last) = tenants.last().copied() else {
            return Ok(total);
        };
        loop {
            let tx = db
                .begin(&TenantContext {
                    tenant_ids: tenants.clone(),
                    user_id: None,
                    statement_timeout_ms: crate::worker::JOB_STATEMENT_TIMEOUT_MS,
                })
                .await?;
            let rows = tx
                .query_and_commit(APPLY_SQL, &[&tenants, &APPLY_BATCH])
                .await?;
            let (deltas, posts): (i64, i64) = rows.first().map_or((0, 0), |r| (r.get(0), r.get(1)));
            total.deltas += deltas as u64;
            total.posts += posts as u64;
            if deltas > 0 {
                total.tenants.extend(tenants.iter().copied());
            }
            if deltas < APPLY_BATCH {
                break;
            }
        }
        if (tenants.len() as i64) < TENANTS_PER_APPLY {
            return Ok(total);
        }
        after = last;
    }
}

/// A failed flush repeats every interval while the database is away: one
/// warning per minute says so.
static FLUSH_WARNING: tenantry_db::Throttle = tenantry_db::Throttle::new(Duration::from_secs(60));

/// Applies deltas every `interval` until `stop` (and once more on stop, so a
/// graceful shutdown leaves nothing pending). `applied` is told the tenants
/// whose counters changed (to drop their cached lists).
pub async fn run(
    db: Db,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
    applied: impl Fn(Vec<Uuid>) + Send + 'static,
) {
    loop {
        let stopping = tokio::select! {
            _ = stop.changed() => true,
            () = tokio::time::sleep(interval) => false,
        };
        match flush(&db).await {
            Ok(f) if f.deltas > 0 => {
                metrics::counter!("tenantry_counter_deltas_applied_total").increment(f.deltas);
                metrics::counter!("tenantry_counter_post_updates_total").increment(f.posts);
                let mut tenants = f.tenants;
                tenants.dedup();
                applied(tenants);
            }
            Ok(_) => {}
            Err(e) => {
                if let Some(held_back) = FLUSH_WARNING.admit() {
                    tracing::warn!(error = %e, held_back, "applying post counters failed; will retry");
                }
            }
        }
        if stopping {
            return;
        }
    }
}
