//! The audit log: who did what in a tenant. Entries are written with
//! [`record`] inside the transaction of the change they describe, so a change
//! and its entry commit together or not at all.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::json::Jsonb;
use crate::{DbError, Keyset, Tx};

/// One entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    /// `None`: the platform admin.
    pub actor_id: Option<Uuid>,
    pub action: String,
    pub target: Option<String>,
    pub details: Value,
}

impl Entry {
    pub fn keyset(&self) -> Keyset {
        Keyset {
            created_at: self.created_at,
            id: self.id,
        }
    }
}

/// Records `action` by `actor` on `target` in `tx`.
pub async fn record(
    tx: &mut Tx,
    tenant: Uuid,
    actor: Option<Uuid>,
    action: &str,
    target: Option<&str>,
    details: &Value,
) -> Result<(), DbError> {
    tx.execute(
        "INSERT INTO audit_log (tenant_id, created_at, id, actor_id, action, target, details)
         VALUES ($1, now(), $2, $3, $4, $5, $6)",
        &[&tenant, &crate::new_id(), &actor, &action, &target, details],
    )
    .await?;
    Ok(())
}

/// A page of the log, newest first, after `after`; commits. The keyset
/// carries `created_at`, the partition key, so each page prunes to the
/// partitions it needs and walks the primary key backwards.
pub async fn list_and_commit(
    tx: Tx,
    tenant: Uuid,
    after: Option<Keyset>,
    limit: i64,
) -> Result<Vec<Entry>, DbError> {
    let rows = match after {
        None => {
            tx.query_and_commit(
                "SELECT id, created_at, actor_id, action, target, details FROM audit_log
                 WHERE tenant_id = $1
                 ORDER BY created_at DESC, id DESC LIMIT $2",
                &[&tenant, &limit],
            )
            .await?
        }
        Some(k) => {
            tx.query_and_commit(
                "SELECT id, created_at, actor_id, action, target, details FROM audit_log
                 WHERE tenant_id = $1 AND created_at <= $3 AND (created_at, id) < ($3, $4)
                 ORDER BY created_at DESC, id DESC LIMIT $2",
                &[&tenant, &limit, &k.created_at, &k.id],
            )
            .await?
        }
    };
    rows.iter()
        .map(|r| {
            Ok(Entry {
                id: r.try_get(0)?,
                created_at: r.try_get(1)?,
                actor_id: r.try_get(2)?,
                action: r.try_get(3)?,
                target: r.try_get(4)?,
                details: r.try_get::<_, Jsonb>(5)?.0,
            })
        })
        .collect()
}
