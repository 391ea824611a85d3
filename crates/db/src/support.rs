//! Support access: agents the platform admin registers, and the grants a
//! tenant's owner or admins give one of them, each for at most
//! [`MAX_GRANT_MINUTES`], with a reason. A grant is never deleted: revoking
//! sets `revoked_at`, so the tenant keeps the record of who was let in.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use uuid::Uuid;

use crate::{Db, DbError, Keyset, TenantContext, Tx};

/// The longest a grant may run from now, created or extended (8 hours).
pub const MAX_GRANT_MINUTES: i64 = 480;

/// What a grant lets its agent do: read only, or read and write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantScope {
    Read,
    Write,
}

impl GrantScope {
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "read" => Some(Self::Read),
            "write" => Some(Self::Write),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Grant {
    pub tenant_id: Uuid,
    pub id: Uuid,
    pub agent_user_id: Uuid,
    pub scope: GrantScope,
    pub reason: String,
    pub granted_by: Uuid,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl Grant {
    /// Whether the grant lets its agent in at `now`.
    pub fn live(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && now < self.expires_at
    }

    pub fn keyset(&self) -> Keyset {
        Keyset {
            created_at: self.created_at,
            id: self.id,
        }
    }

    fn from_row(row: &Row) -> Result<Self, DbError> {
        let scope: &str = row.try_get("scope")?;
        Ok(Self {
            tenant_id: row.try_get("tenant_id")?,
            id: row.try_get("id")?,
            agent_user_id: row.try_get("agent_user_id")?,
            scope: GrantScope::parse(scope)
                .ok_or_else(|| DbError::Other(anyhow::anyhow!("grant scope {scope:?}")))?,
            reason: row.try_get("reason")?,
            granted_by: row.try_get("granted_by")?,
            created_at: row.try_get("created_at")?,
            expires_at: row.try_get("expires_at")?,
            revoked_at: row.try_get("revoked_at")?,
        })
    }
}

const COLUMNS: &str = "tenant_id, id, agent_user_id, scope, reason, granted_by, created_at, \
                       expires_at, revoked_at";

/// Registers `user` as a support agent (provisioning the user if new);
/// `true` if they were not one already.
pub async fn add_agent(db: &Db, user: Uuid, timeout_ms: u32) -> Result<bool, DbError> {
    let tx = db.begin(&TenantContext::platform(timeout_ms)).await?;
    let rows = tx
        .query_and_commit(
            "WITH u AS (INSERT INTO users (id) VALUES ($1) ON CONFLICT (id) DO NOTHING)
             INSERT INTO support_agents (user_id) VALUES ($1)
             ON CONFLICT (user_id) DO NOTHING RETURNING user_id",
            &[&user],
        )
        .await?;
    Ok(!rows.is_empty())
}

/// Removes `user` from the support agents; `false` if they were not one.
/// Their grants stop working at once: a grant is honoured only while its
/// agent is registered ([`is_agent`]).
pub async fn remove_agent(db: &Db, user: Uuid, timeout_ms: u32) -> Result<bool, DbError> {
    let rows = db
        .begin(&TenantContext::platform(timeout_ms))
        .await?
        .query_and_commit(
            "DELETE FROM support_agents WHERE user_id = $1 RETURNING user_id",
            &[&user],
        )
        .await?;
    Ok(!rows.is_empty())
}

/// Whether `user` is a registered support agent.
pub async fn is_agent(db: &Db, user: Uuid, timeout_ms: u32) -> Result<bool, DbError> {
    let tx = db.begin(&TenantContext::platform(timeout_ms)).await?;
    let rows = tx
        .query_and_commit("SELECT 1 FROM support_agents WHERE user_id = $1", &[&user])
        .await?;
    Ok(!rows.is_empty())
}

/// A new grant of `tenant`, running `minutes` from now, with its audit entry.
pub async fn create(
    tx: &mut Tx,
    tenant: Uuid,
    agent: Uuid,
    scope: GrantScope,
    reason: &str,
    granted_by: Uuid,
    minutes: i64,
) -> Result<Grant, DbError> {
    let sql = format!(
        "INSERT INTO support_grants (tenant_id, id, agent_user_id, scope, reason, granted_by,
                                     expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(mins => $7::int))
         RETURNING {COLUMNS}"
    );
    let minutes = i32::try_from(minutes).unwrap_or(i32::MAX);
    let row = tx
        .query_one(
            &sql,
            &[
                &tenant,
                &crate::new_id(),
                &agent,
                &scope.as_str(),
                &reason,
                &granted_by,
                &minutes,
            ],
        )
        .await?;
    Grant::from_row(&row)
}

/// One grant of `tenant`, if it exists.
pub async fn get(tx: &mut Tx, tenant: Uuid, id: Uuid) -> Result<Option<Grant>, DbError> {
    let sql = format!("SELECT {COLUMNS} FROM support_grants WHERE tenant_id = $1 AND id = $2");
    let rows = tx.query(&sql, &[&tenant, &id]).await?;
    rows.first().map(Grant::from_row).transpose()
}

/// A page of `tenant`'s grants, newest first.
pub async fn list(
    tx: &mut Tx,
    tenant: Uuid,
    after: Option<Keyset>,
    limit: i64,
) -> Result<Vec<Grant>, DbError> {
    let (at, id) = after.map_or((None, None), |k| (Some(k.created_at), Some(k.id)));
    let sql = format!(
        "SELECT {COLUMNS} FROM support_grants
         WHERE tenant_id = $1 AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4))
         ORDER BY created_at DESC, id DESC LIMIT $2"
    );
    let rows = tx.query(&sql, &[&tenant, &limit, &at, &id]).await?;
    rows.iter().map(Grant::from_row).collect()
}

/// Revokes a live grant at once; `None` if there is no such grant, the
/// grant as it is if it was already revoked or expired.
pub async fn revoke(tx: &mut Tx, tenant: Uuid, id: Uuid) -> Result<Option<Grant>, DbError> {
    let sql = format!(
        "UPDATE support_grants SET revoked_at = COALESCE(revoked_at, now())
         WHERE tenant_id = $1 AND id = $2
         RETURNING {COLUMNS}"
    );
    let rows = tx.query(&sql, &[&tenant, &id]).await?;
    rows.first().map(Grant::from_row).transpose()
}

/// How an extension went.
#[derive(Debug)]
pub enum Extended {
    Done(Grant),
    NotFound,
    /// Revoked or expired: it cannot be brought back, only granted anew.
    NotLive(Grant),
    /// The new expiry would be more than [`MAX_GRANT_MINUTES`] from now.
    PastTheCap(Grant),
}

/// Moves a live grant's expiry `minutes` later, as long as that is at most
/// [`MAX_GRANT_MINUTES`] from now.
pub async fn extend(
    tx: &mut Tx,
    tenant: Uuid,
    id: Uuid,
    minutes: i64,
) -> Result<Extended, DbError> {
    let sql = format!(
        "SELECT {COLUMNS}, now() AS now FROM support_grants
         WHERE tenant_id = $1 AND id = $2 FOR UPDATE"
    );
    let rows = tx.query(&sql, &[&tenant, &id]).await?;
    let Some(row) = rows.first() else {
        return Ok(Extended::NotFound);
    };
    let grant = Grant::from_row(row)?;
    let now: DateTime<Utc> = row.try_get("now")?;
    if !grant.live(now) {
        return Ok(Extended::NotLive(grant));
    }
    let expires = grant.expires_at + chrono::Duration::minutes(minutes);
    if expires > now + chrono::Duration::minutes(MAX_GRANT_MINUTES) {
        return Ok(Extended::PastTheCap(grant));
    }
    let sql = format!(
        "UPDATE support_grants SET expires_at = $3 WHERE tenant_id = $1 AND id = $2
         RETURNING {COLUMNS}"
    );
    let row = tx.query_one(&sql, &[&tenant, &id, &expires]).await?;
    Ok(Extended::Done(Grant::from_row(&row)?))
}

/// A page of what support did in `tenant` (audit entries whose action
/// starts with `support.`), newest first.
pub async fn activity(
    tx: &mut Tx,
    tenant: Uuid,
    after: Option<Keyset>,
    limit: i64,
) -> Result<Vec<crate::audit::Entry>, DbError> {
    let (at, id) = after.map_or((None, None), |k| (Some(k.created_at), Some(k.id)));
    let rows = tx
        .query(
            "SELECT id, created_at, actor_id, action, target, details FROM audit_log
             WHERE tenant_id = $1 AND action LIKE 'support.%'
               AND ($3::timestamptz IS NULL OR (created_at <= $3 AND (created_at, id) < ($3, $4)))
             ORDER BY created_at DESC, id DESC LIMIT $2",
            &[&tenant, &limit, &at, &id],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok(crate::audit::Entry {
                id: row.try_get("id")?,
                created_at: row.try_get("created_at")?,
                actor_id: row.try_get("actor_id")?,
                action: row.try_get("action")?,
                target: row.try_get("target")?,
                details: row.try_get::<_, crate::json::Jsonb>("details")?.0,
            })
        })
        .collect()
}
