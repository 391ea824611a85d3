//! Ownership transfer. A tenant has one owner (`tenants.owner_user_id`),
//! always a member with the `owner` role. A transfer makes another member
//! the owner and the old owner an admin, in one transaction with its audit
//! entry (`tenant.owner`).

use serde_json::json;
use uuid::Uuid;

use crate::{DbError, Tx};

/// Why a transfer was refused.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("no such tenant")]
    NotFound,
    #[error("the new owner is not a member of the tenant")]
    NotAMember,
    /// The acting user is not the tenant's current owner.
    #[error("only the tenant's owner may transfer it")]
    NotOwner,
    #[error(transparent)]
    Db(#[from] DbError),
}

/// A transfer done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transfer {
    pub from: Uuid,
    pub to: Uuid,
}

/// Makes member `to` the owner of `tenant` in `tx` (in that tenant's
/// context). `actor`: the user acting, who must be the current owner;
/// `None` for the platform admin. The tenant's row is locked first, so two
/// transfers at once are serialised. Transferring to the owner is a no-op
/// (still audited).
pub async fn transfer(
    tx: &mut Tx,
    tenant: Uuid,
    to: Uuid,
    actor: Option<Uuid>,
) -> Result<Transfer, TransferError> {
    let row = tx
        .query_opt(
            "SELECT owner_user_id FROM tenants WHERE id = $1 AND status <> 'deleted' FOR UPDATE",
            &[&tenant],
        )
        .await?
        .ok_or(TransferError::NotFound)?;
    let from: Uuid = row.try_get(0).map_err(DbError::from)?;
    if let Some(actor) = actor
        && actor != from
    {
        return Err(TransferError::NotOwner);
    }
    let promoted = tx
        .execute(
            "UPDATE memberships SET role = 'owner' WHERE tenant_id = $1 AND user_id = $2",
            &[&tenant, &to],
        )
        .await?;
    if promoted == 0 {
        return Err(TransferError::NotAMember);
    }
    if from != to {
        tx.execute(
            "UPDATE memberships SET role = 'admin' WHERE tenant_id = $1 AND user_id = $2",
            &[&tenant, &from],
        )
        .await?;
        tx.execute(
            "UPDATE tenants SET owner_user_id = $2, updated_at = now() WHERE id = $1",
            &[&tenant, &to],
        )
        .await?;
    }
    crate::audit::record(
        tx,
        tenant,
        actor,
        "tenant.owner",
        Some(&to.to_string()),
        &json!({ "from": from, "to": to }),
    )
    .await?;
    Ok(Transfer { from, to })
}

/// After `leaving` stopped being an owner of `tenant` (stepped down or
/// left, another owner remaining): if they were the tenant's owner, the
/// longest-standing remaining owner becomes it. Nothing otherwise.
pub async fn hand_on(tx: &mut Tx, tenant: Uuid, leaving: Uuid) -> Result<(), DbError> {
    tx.execute(
        "UPDATE tenants SET owner_user_id = o.user_id, updated_at = now()
         FROM (SELECT user_id FROM memberships
               WHERE tenant_id = $1 AND role = 'owner' AND user_id <> $2
               ORDER BY created_at, user_id LIMIT 1) o
         WHERE id = $1 AND owner_user_id = $2",
        &[&tenant, &leaving],
    )
    .await?;
    Ok(())
}
