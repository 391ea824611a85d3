//! A member's notifications in one tenant (written by the announcement
//! fan-out in crates/jobs).

use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use uuid::Uuid;

use crate::json::Jsonb;
use crate::{DbError, Keyset, Tx};

#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub id: Uuid,
    pub announcement_id: Option<Uuid>,
    pub title: String,
    pub message: String,
    pub created_at: DateTime<Utc>,
    pub read_at: Option<DateTime<Utc>>,
}

impl Notification {
    fn from_row(row: &Row) -> Result<Self, DbError> {
        Ok(Self {
            id: row.try_get("id")?,
            announcement_id: row.try_get("announcement_id")?,
            title: row.try_get("title")?,
            message: row.try_get("message")?,
            created_at: row.try_get("created_at")?,
            read_at: row.try_get("read_at")?,
        })
    }

    pub fn keyset(&self) -> Keyset {
        Keyset {
            created_at: self.created_at,
            id: self.id,
        }
    }
}

/// A page of `user`'s notifications, newest first, after `after`; only
/// unread ones if `unread` (walking the partial unread index). Checks the
/// membership in the same statement and commits: `None` for a non-member.
pub async fn list_for_member_and_commit(
    tx: Tx,
    tenant: Uuid,
    user: Uuid,
    unread: bool,
    after: Option<Keyset>,
    limit: i64,
) -> Result<Option<Vec<Notification>>, DbError> {
    let filter = if unread { "AND read_at IS NULL" } else { "" };
    let keyset = if after.is_some() {
        "AND (created_at, id) < ($4, $5)"
    } else {
        ""
    };
    let sql = format!(
        "WITH r AS (SELECT role FROM memberships WHERE tenant_id = $1 AND user_id = $2)
         SELECT r.role AS caller_role, n.* FROM r LEFT JOIN LATERAL (
             SELECT id, announcement_id, title, message, created_at, read_at
             FROM notifications
             WHERE tenant_id = $1 AND user_id = $2 {filter} {keyset}
             ORDER BY created_at DESC, id DESC LIMIT $3
         ) n ON true"
    );
    let rows = match after {
        None => tx.query_and_commit(&sql, &[&tenant, &user, &limit]).await?,
        Some(k) => {
            tx.query_and_commit(&sql, &[&tenant, &user, &limit, &k.created_at, &k.id])
                .await?
        }
    };
    if rows.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        rows.iter()
            .filter(|r| !matches!(r.try_get::<_, Option<Uuid>>("id"), Ok(None)))
            .map(Notification::from_row)
            .collect::<Result<_, _>>()?,
    ))
}

/// Marks `user`'s notifications read: the ones in `ids`, or all unread ones
/// when `ids` is `None`. Returns how many changed, or `None` for a
/// non-member; commits.
pub async fn mark_read_and_commit(
    tx: Tx,
    tenant: Uuid,
    user: Uuid,
    ids: Option<&[Uuid]>,
) -> Result<Option<i64>, DbError> {
    let which = if ids.is_some() {
        "AND id = ANY ($3)"
    } else {
        ""
    };
    let sql = format!(
        "WITH r AS (SELECT role FROM memberships WHERE tenant_id = $1 AND user_id = $2),
         u AS (
             UPDATE notifications SET read_at = now()
             WHERE tenant_id = $1 AND user_id = $2 AND read_at IS NULL {which}
               AND EXISTS (SELECT 1 FROM r)
             RETURNING 1
         )
         SELECT EXISTS (SELECT 1 FROM r) AS member, (SELECT count(*) FROM u) AS changed"
    );
    let rows = match ids {
        None => tx.query_and_commit(&sql, &[&tenant, &user]).await?,
        Some(ids) => tx.query_and_commit(&sql, &[&tenant, &user, &ids]).await?,
    };
    let row = rows
        .first()
        .ok_or_else(|| DbError::Other(anyhow::anyhow!("mark read returned no row")))?;
    if !row.try_get::<_, bool>("member")? {
        return Ok(None);
    }
    Ok(Some(row.try_get("changed")?))
}

/// The kinds of notification a member can turn off in a tenant. Each is on
/// unless the member's `memberships.notification_prefs` holds `false` under
/// its name (the fan-out in crates/jobs reads the same key).
pub const KINDS: [&str; 1] = ["announcements"];

/// `user`'s stored notification preferences in the tenant (a JSON object,
/// `{}` when never set), or `None` for a non-member; commits. One primary-key
/// probe of `memberships`.
pub async fn preferences_and_commit(
    tx: Tx,
    tenant: Uuid,
    user: Uuid,
) -> Result<Option<serde_json::Value>, DbError> {
    let rows = tx
        .query_and_commit(
            "SELECT notification_prefs FROM memberships WHERE tenant_id = $1 AND user_id = $2",
            &[&tenant, &user],
        )
        .await?;
    Ok(rows
        .first()
        .map(|r| r.try_get::<_, Jsonb>(0))
        .transpose()?
        .map(|j| j.0))
}

/// Changes `user`'s notification preferences in one statement (no lost
/// update between concurrent changes): removes the kinds in `reset` (back to
/// their default), then sets the keys of `set` (an object of booleans).
/// Other keys stored in the object are kept. Returns the stored result, or
/// `None` for a non-member; commits.
pub async fn set_preferences_and_commit(
    tx: Tx,
    tenant: Uuid,
    user: Uuid,
    reset: &[&str],
    set: &serde_json::Value,
) -> Result<Option<serde_json::Value>, DbError> {
    let rows = tx
        .query_and_commit(
            "UPDATE memberships
             SET notification_prefs = (notification_prefs - $3::text[]) || $4::jsonb
             WHERE tenant_id = $1 AND user_id = $2
             RETURNING notification_prefs",
            &[&tenant, &user, &reset, set],
        )
        .await?;
    Ok(rows
        .first()
        .map(|r| r.try_get::<_, Jsonb>(0))
        .transpose()?
        .map(|j| j.0))
}
