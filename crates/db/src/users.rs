//! Users: global identities, provisioned the first time their JWT is seen.

use uuid::Uuid;

use crate::{Db, DbError, TenantContext};

/// Creates the user if new, and refreshes email and name when the token
/// carries them. One statement, one round trip; nothing is written for a
/// user already as the token says.
///
/// Returns the communities (of this database) whose member lists show the
/// user, when the statement wrote their row: their cached lists must go.
/// Empty when nothing was written.
pub async fn provision(
    db: &Db,
    id: Uuid,
    email: Option<&str>,
    display_name: Option<&str>,
    timeout_ms: u32,
) -> Result<Vec<Uuid>, DbError> {
    // Acting for the user: the directory of their communities is theirs.
    let mut tx = db.begin(&TenantContext::user(id, timeout_ms)).await?;
    // The user's first write: with read replicas, their next reads wait for
    // a replica that has it.
    tx.for_caller(&[id]);
    // A user already here as the token says is only read: the statement
    // inserts nothing, so the transaction writes nothing and its commit
    // waits for no WAL flush (every node provisions each user it sees once;
    // after a restart that is every user again). Only a new user or a
    // changed email or name is written.
    let rows = tx
        .query_and_commit(
            "WITH unchanged AS (
                 SELECT 1 FROM users
                 WHERE id = $1
                   AND email IS NOT DISTINCT FROM COALESCE($2, email)
                   AND display_name IS NOT DISTINCT FROM COALESCE($3, display_name)
             ),
             written AS (
                 INSERT INTO users (id, email, display_name)
                 SELECT $1, $2, $3 WHERE NOT EXISTS (SELECT 1 FROM unchanged)
                 ON CONFLICT (id) DO UPDATE
                 SET email = COALESCE(EXCLUDED.email, users.email),
                     display_name = COALESCE(EXCLUDED.display_name, users.display_name)
                 WHERE users.email IS DISTINCT FROM COALESCE(EXCLUDED.email, users.email)
                    OR users.display_name IS DISTINCT FROM
                       COALESCE(EXCLUDED.display_name, users.display_name)
                 RETURNING id
             )
             SELECT uc.tenant_id FROM user_communities uc
             WHERE uc.user_id = $1 AND EXISTS (SELECT 1 FROM written)",
            &[&id, &email, &display_name],
        )
        .await?;
    rows.iter()
        .map(|r| r.try_get("tenant_id").map_err(DbError::from))
        .collect()
}
