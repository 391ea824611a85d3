//! Memberships: who belongs to a tenant, with which role.

use chrono::{DateTime, Utc};
use tenantry_core::Role;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::{DbError, Tx};

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Member {
    pub user_id: Uuid,
    pub role: Role,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub display_in_feed: bool,
    pub created_at: DateTime<Utc>,
}

impl Member {
    fn from_row(row: &Row) -> Result<Self, DbError> {
        let role: &str = row.try_get("role")?;
        Ok(Self {
            user_id: row.try_get("user_id")?,
            role: Role::parse(role).map_err(|e| DbError::Other(e.into()))?,
            email: row.try_get("email")?,
            display_name: row.try_get("display_name")?,
            display_in_feed: row.try_get("display_in_feed")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

/// The caller's role in the tenant, or `None` if not a member.
pub async fn role_of(tx: &mut Tx, tenant: Uuid, user: Uuid) -> Result<Option<Role>, DbError> {
    let row = tx
        .query_opt(
            "SELECT role FROM memberships WHERE tenant_id = $1 AND user_id = $2",
            &[&tenant, &user],
        )
        .await?;
    row.map(|r| Role::parse(r.try_get(0)?).map_err(|e| DbError::Other(e.into())))
        .transpose()
}

/// `user`'s membership in the tenant, with their profile, or `None`.
pub async fn get(tx: &mut Tx, tenant: Uuid, user: Uuid) -> Result<Option<Member>, DbError> {
    let row = tx
        .query_opt(
            "SELECT m.user_id, m.role, u.email, u.display_name, m.display_in_feed, m.created_at
             FROM memberships m JOIN users u ON u.id = m.user_id
             WHERE m.tenant_id = $1 AND m.user_id = $2",
            &[&tenant, &user],
        )
        .await?;
    row.as_ref().map(Member::from_row).transpose()
}

/// The tenant's member count and `user`'s membership, in one statement, and
/// commits (with the prelude: one round trip). The
/// count is read here rather than from a cache because every join and leave
/// changes it.
pub async fn count_and_get_and_commit(
    tx: Tx,
    tenant: Uuid,
    user: Uuid,
) -> Result<(i64, Option<Member>), DbError> {
    let rows = tx
        .query_and_commit(
            "SELECT t.member_count, m.user_id, m.role, u.email, u.display_name,
                    m.display_in_feed, m.created_at
             FROM tenants t
             LEFT JOIN memberships m ON m.tenant_id = t.id AND m.user_id = $2
             LEFT JOIN users u ON u.id = m.user_id
             WHERE t.id = $1",
            &[&tenant, &user],
        )
        .await?;
    let row = rows
        .first()
        .ok_or_else(|| DbError::Other(anyhow::anyhow!("tenant {tenant} has no row")))?;
    let member = match row.try_get::<_, Option<Uuid>>("user_id")? {
        Some(_) => Some(Member::from_row(row)?),
        None => None,
    };
    Ok((row.try_get("member_count")?, member))
}

/// Adds a member (provisioning the user if they were never seen) and counts
/// them in the tenant's member count, in one statement. The count is raised
/// only while it is below `max_members`, under the tenant row's lock, so
/// concurrent joins never overshoot the quota. A member already there is a
/// [`DbError::Conflict`]; a full tenant is [`DbError::QuotaExceeded`].
pub async fn add(
    tx: &mut Tx,
    tenant: Uuid,
    user: Uuid,
    role: Role,
    max_members: u64,
) -> Result<Member, DbError> {
    let max = i64::try_from(max_members).unwrap_or(i64::MAX);
    let row = tx
        .query_opt(
            "WITH counted AS (
                 UPDATE tenants SET member_count = member_count + 1
                 WHERE id = $1 AND member_count < $4
                 RETURNING id
             ),
             new_user AS (INSERT INTO users (id) VALUES ($2) ON CONFLICT (id) DO NOTHING),
             m AS (
                 INSERT INTO memberships (tenant_id, user_id, role)
                 SELECT id, $2, $3 FROM counted
                 RETURNING user_id, role, display_in_feed, created_at
             )
             SELECT m.user_id, m.role, u.email, u.display_name, m.display_in_feed, m.created_at
             FROM m LEFT JOIN users u ON u.id = m.user_id",
            &[&tenant, &user, &role.as_str(), &max],
        )
        .await?;
    match row {
        Some(row) => Member::from_row(&row),
        None => Err(DbError::QuotaExceeded {
            quota: "max_members",
        }),
    }
}

/// Members in user id order, after `after`, if `user` is a member; returns
/// the caller's role (`None`: not a member, and no rows) and commits, in the
/// transaction's one round trip.
pub async fn list_for_member_and_commit(
    tx: Tx,
    tenant: Uuid,
    user: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<(Option<Role>, Vec<Member>), DbError> {
    let keyset = if after.is_some() {
        "AND m.user_id > $4"
    } else {
        ""
    };
    let sql = format!(
        "WITH r AS (SELECT role FROM memberships WHERE tenant_id = $1 AND user_id = $3)
         SELECT r.role AS caller_role, page.* FROM r LEFT JOIN LATERAL (
             SELECT m.user_id, m.role, u.email, u.display_name, m.display_in_feed, m.created_at
             FROM memberships m JOIN users u ON u.id = m.user_id
             WHERE m.tenant_id = $1 {keyset}
             ORDER BY m.user_id LIMIT $2
         ) page ON true"
    );
    let rows = match after {
        None => tx.query_and_commit(&sql, &[&tenant, &limit, &user]).await?,
        Some(after) => {
            tx.query_and_commit(&sql, &[&tenant, &limit, &user, &after])
                .await?
        }
    };
    let Some(first) = rows.first() else {
        return Ok((None, Vec::new()));
    };
    let role = Role::parse(first.try_get("caller_role")?).map_err(|e| DbError::Other(e.into()))?;
    let members = rows
        .iter()
        .filter(|r| !matches!(r.try_get::<_, Option<Uuid>>("user_id"), Ok(None)))
        .map(Member::from_row)
        .collect::<Result<_, _>>()?;
    Ok((Some(role), members))
}

/// Changes a member's role. `None` if they are not a member.
pub async fn set_role(
    tx: &mut Tx,
    tenant: Uuid,
    user: Uuid,
    role: Role,
) -> Result<Option<Member>, DbError> {
    let row = tx
        .query_opt(
            "WITH m AS (
                 UPDATE memberships SET role = $3 WHERE tenant_id = $1 AND user_id = $2
                 RETURNING user_id, role, display_in_feed, created_at
             )
             SELECT m.user_id, m.role, u.email, u.display_name, m.display_in_feed, m.created_at
             FROM m JOIN users u ON u.id = m.user_id",
            &[&tenant, &user, &role.as_str()],
        )
        .await?;
    row.as_ref().map(Member::from_row).transpose()
}

/// Removes a member and uncounts them. False if they were not a member.
pub async fn remove(tx: &mut Tx, tenant: Uuid, user: Uuid) -> Result<bool, DbError> {
    let row = tx
        .query_one(
            "WITH m AS (
                 DELETE FROM memberships WHERE tenant_id = $1 AND user_id = $2 RETURNING 1
             ),
             c AS (
                 UPDATE tenants SET member_count = member_count - (SELECT count(*) FROM m)
                 WHERE id = $1 AND EXISTS (SELECT 1 FROM m)
             )
             SELECT count(*) FROM m",
            &[&tenant, &user],
        )
        .await?;
    Ok(row.try_get::<_, i64>(0)? > 0)
}

/// How many owners the tenant has; locks them so two concurrent demotions
/// cannot both see "there is another owner".
pub async fn lock_owners(tx: &mut Tx, tenant: Uuid) -> Result<i64, DbError> {
    let rows = tx
        .query(
            "SELECT user_id FROM memberships WHERE tenant_id = $1 AND role = 'owner' FOR UPDATE",
            &[&tenant],
        )
        .await?;
    Ok(rows.len() as i64)
}
