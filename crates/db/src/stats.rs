//! Daily tenant statistics, read from the summaries that the writes keep
//! incrementally (`tenant_daily_stats`): never a scan of raw rows.

use chrono::NaiveDate;
use uuid::Uuid;

use crate::{DbError, Tx};

/// One day of a tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DailyStats {
    pub day: Option<NaiveDate>,
    pub posts: i64,
    pub events: i64,
    pub comments: i64,
    pub likes: i64,
    pub active_users: i64,
    pub analytics_events: i64,
}

/// Every day from `from` to `to` (inclusive) that has a summary row, oldest
/// first; commits.
pub async fn daily_and_commit(
    tx: Tx,
    tenant: Uuid,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<DailyStats>, DbError> {
    let rows = tx
        .query_and_commit(
            "SELECT day, posts, comments, likes, active_users, analytics_events, events
             FROM tenant_daily_stats
             WHERE tenant_id = $1 AND day BETWEEN $2 AND $3
             ORDER BY day",
            &[&tenant, &from, &to],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(DailyStats {
                day: Some(r.try_get(0)?),
                posts: r.try_get(1)?,
                comments: r.try_get(2)?,
                likes: r.try_get(3)?,
                active_users: r.try_get(4)?,
                analytics_events: r.try_get(5)?,
                events: r.try_get(6)?,
            })
        })
        .collect()
}
