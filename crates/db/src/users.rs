//! Users: global identities, provisioned the first time their JWT is seen.

use uuid::Uuid;

use crate::{Db, DbError, TenantContext};

/// Creates the user if new, and refreshes email and name when the token
/// carries them. One statement, one round trip.
pub async fn provision(
    db: &Db,
    id: Uuid,
    email: Option<&str>,
    display_name: Option<&str>,
    timeout_ms: u32,
) -> Result<(), DbError> {
    let mut tx = db.begin(&TenantContext::platform(timeout_ms)).await?;
    // The user's first write: with read replicas, their next reads wait for
    // a replica that has it.
    tx.for_caller(&[id]);
    tx.query_and_commit(
        "INSERT INTO users (id, email, display_name) VALUES ($1, $2, $3)
         ON CONFLICT (id) DO UPDATE
         SET email = COALESCE(EXCLUDED.email, users.email),
             display_name = COALESCE(EXCLUDED.display_name, users.display_name)
         WHERE users.email IS DISTINCT FROM COALESCE(EXCLUDED.email, users.email)
            OR users.display_name IS DISTINCT FROM
               COALESCE(EXCLUDED.display_name, users.display_name)",
        &[&id, &email, &display_name],
    )
    .await?;
    Ok(())
}
