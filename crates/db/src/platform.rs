//! Platform-wide settings: defaults every tenant inherits, overlaid with the
//! tenant's own. One global row (not tenant-scoped).

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::json::Jsonb;
use crate::{Db, DbError, TenantContext};

/// The platform's default settings.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PlatformSettings {
    pub settings: Value,
    pub updated_at: DateTime<Utc>,
}

fn from_rows(rows: &[tokio_postgres::Row]) -> Result<PlatformSettings, DbError> {
    let row = rows
        .first()
        .ok_or_else(|| DbError::Other(anyhow::anyhow!("platform_settings has no row")))?;
    Ok(PlatformSettings {
        settings: row.try_get::<_, Jsonb>("settings")?.0,
        updated_at: row.try_get("updated_at")?,
    })
}

pub async fn get(db: &Db, timeout_ms: u32) -> Result<PlatformSettings, DbError> {
    let tx = db.begin(&TenantContext::platform(timeout_ms)).await?;
    let rows = tx
        .query_and_commit("SELECT settings, updated_at FROM platform_settings", &[])
        .await?;
    from_rows(&rows)
}

/// Merges `patch` one level deep (a key set to null is removed).
pub async fn update(db: &Db, patch: &Value, timeout_ms: u32) -> Result<PlatformSettings, DbError> {
    let tx = db.begin(&TenantContext::platform(timeout_ms)).await?;
    let rows = tx
        .query_and_commit(
            "UPDATE platform_settings
             SET settings = COALESCE(tenantry_merge_patch(settings, $1), settings),
                 updated_at = now()
             RETURNING settings, updated_at",
            &[patch],
        )
        .await?;
    from_rows(&rows)
}

/// The tenant's settings over the platform's: each top-level key of the
/// tenant's replaces the platform's.
pub fn overlay(platform: &Value, tenant: &Value) -> Value {
    let mut merged = match platform {
        Value::Object(m) => m.clone(),
        _ => serde_json::Map::new(),
    };
    if let Value::Object(own) = tenant {
        for (k, v) in own {
            merged.insert(k.clone(), v.clone());
        }
    }
    Value::Object(merged)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::overlay;

    #[test]
    fn a_tenants_keys_win_over_the_platforms() {
        assert_eq!(
            overlay(
                &json!({"theme": "light", "lang": "en"}),
                &json!({"theme": "dark"})
            ),
            json!({"theme": "dark", "lang": "en"})
        );
        assert_eq!(overlay(&json!({}), &json!({"a": 1})), json!({"a": 1}));
    }
}
