//! The origin of shared content as the API shows it, on posts, events and
//! shares alike.

use serde::Serialize;
use tenantry_db::origin::Origin;
use uuid::Uuid;

/// Where shared content came from.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OriginView {
    /// The community the content was first posted in.
    pub tenant_id: Uuid,
    /// The original post's or event's id there.
    pub id: Uuid,
    /// Who shared it here.
    pub shared_by: Option<Uuid>,
}

impl From<Origin> for OriginView {
    fn from(o: Origin) -> Self {
        Self {
            tenant_id: o.tenant_id,
            id: o.id,
            shared_by: o.shared_by,
        }
    }
}
