//! Where shared content came from: the origin a shared post or event
//! carries (read by posts, events and shares alike).

use tokio_postgres::Row;
use uuid::Uuid;

use crate::DbError;

/// Where shared content came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Origin {
    pub tenant_id: Uuid,
    pub id: Uuid,
    /// Who shared it.
    pub shared_by: Option<Uuid>,
}

impl Origin {
    /// Reads `origin_tenant_id`, `origin_id` and `shared_by` of a row.
    pub(crate) fn from_row(row: &Row) -> Result<Option<Self>, DbError> {
        let tenant_id: Option<Uuid> = row.try_get("origin_tenant_id")?;
        let id: Option<Uuid> = row.try_get("origin_id")?;
        let shared_by = row.try_get("shared_by")?;
        Ok(tenant_id.zip(id).map(|(tenant_id, id)| Self {
            tenant_id,
            id,
            shared_by,
        }))
    }
}
