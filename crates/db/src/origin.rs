//! Where shared content came from: the origin a shared post or event
//! carries (read by posts, events and shares alike).

use tokio_postgres::Row;
use uuid::Uuid;

use crate::{DbError, columns};

/// Where shared content came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Origin {
    pub tenant_id: Uuid,
    pub id: Uuid,
    /// Who shared it.
    pub shared_by: Option<Uuid>,
}

impl Origin {
    /// Reads `origin_tenant_id`, `origin_id` and `shared_by` of a row,
    /// expected from position `at` on (found by name elsewhere).
    pub(crate) fn from_row(row: &Row, at: usize) -> Result<Option<Self>, DbError> {
        let tenant_id: Option<Uuid> = columns::get(row, at, "origin_tenant_id")?;
        let id: Option<Uuid> = columns::get(row, at + 1, "origin_id")?;
        let shared_by = columns::get(row, at + 2, "shared_by")?;
        Ok(tenant_id.zip(id).map(|(tenant_id, id)| Self {
            tenant_id,
            id,
            shared_by,
        }))
    }
}
