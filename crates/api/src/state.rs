//! The state every request handler shares.

use std::hash::{Hash as _, Hasher as _};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use metrics_exporter_prometheus::PrometheusHandle;
use tenantry_core::{Limits, TierTable};
use tenantry_db::Db;
use tenantry_db::tenants::Tenant;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::auth::{AuthUser, JwtKeys};
use crate::problem::ApiError;
use crate::tenancy::TenantRegistry;

/// Statement timeout for platform work that belongs to no tenant (tenant
/// lookups, user provisioning, admin API).
pub const PLATFORM_STATEMENT_TIMEOUT_MS: u32 = 5_000;

pub struct AppState {
    pub db: Db,
    /// Read on every request, replaced whole on reload.
    pub tiers: ArcSwap<TierTable>,
    pub registry: TenantRegistry,
    pub jwt: JwtKeys,
    pub admin_token: String,
    pub base_domain: Option<String>,
    pub metrics: PrometheusHandle,
    /// Users already provisioned with the email and name their token carries
    /// (keyed by a hash of all three), so a request costs no write for it.
    provisioned: moka::sync::Cache<u64, ()>,
    /// Wakes the purge worker after a tenant is deleted.
    pub purge_wakeup: Notify,
}

impl AppState {
    pub fn new(
        db: Db,
        tiers: TierTable,
        jwt_secret: &str,
        admin_token: String,
        base_domain: Option<String>,
        metrics: PrometheusHandle,
    ) -> Self {
        Self {
            db: db.clone(),
            tiers: ArcSwap::from_pointee(tiers),
            registry: TenantRegistry::new(db),
            jwt: JwtKeys::new(jwt_secret.as_bytes()),
            admin_token,
            base_domain: base_domain.map(|d| d.to_ascii_lowercase()),
            metrics,
            provisioned: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(3_600))
                .build(),
            purge_wakeup: Notify::new(),
        }
    }

    /// The limits in force for `tenant`: its tier's, with its overrides.
    pub fn limits_of(&self, tenant: &Tenant) -> Limits {
        self.tiers.load().limits(&tenant.tier).with(&tenant.limits)
    }

    /// Creates the user on first sight, or refreshes their email and name.
    pub async fn provision(&self, user: &AuthUser) -> Result<(), ApiError> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (user.id, &user.email, &user.name).hash(&mut hasher);
        let key = hasher.finish();
        if self.provisioned.contains_key(&key) {
            return Ok(());
        }
        tenantry_db::users::provision(
            &self.db,
            user.id,
            user.email.as_deref(),
            user.name.as_deref(),
            PLATFORM_STATEMENT_TIMEOUT_MS,
        )
        .await?;
        self.provisioned.insert(key, ());
        Ok(())
    }

    /// Forgets what is cached about a tenant (after an admin change).
    pub async fn tenant_changed(&self, before: Option<&Tenant>, id: Uuid) {
        self.registry.invalidate(before, id).await;
    }
}

pub type SharedState = Arc<AppState>;
