//! User-scoped requests: a signed-in user and no tenant (`/v1/me/...`,
//! `/v1/feed`, `/v1/shares`).
//!
//! The extractor verifies the JWT, rate-limits the user (their own GCRA key,
//! at the default tier's per-user rate), waits for their turn in the CPU
//! share (their own key), provisions them, and waits for a
//! share of the database under their own key, so one user flooding the feed
//! waits in the fair queue behind nobody else. The tenant context of the
//! transaction is chosen by the handler: exactly the caller's active
//! communities that the request reads, looked up in the per-user directory
//! (`user_communities`), never a tenant the caller is not a member of.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use tenantry_core::{FeatureFlags, Limits};
use tenantry_db::community::{self, Community};
use tenantry_db::{TenantContext, Tx};
use tenantry_fairness::share::Permit;
use uuid::Uuid;

use super::admission;
use super::auth::AuthUser;
use crate::problem::ApiError;
use crate::state::AppState;

/// A signed-in user's request that names no tenant.
pub struct UserScope {
    pub user: AuthUser,
    /// The default tier's limits: the user's rate, database share and
    /// statement timeout.
    pub limits: Limits,
    state: Arc<AppState>,
    _permit: Option<Permit>,
    /// The request's CPU turn, when no [`admission::TurnSlot`] keeps it.
    _turn: Option<Permit>,
}

impl UserScope {
    /// Bumps the generation of one of `tenant`'s cached lists (after a
    /// committed write into it) and tells the other nodes.
    pub async fn list_changed(&self, tenant: Uuid, list: &str) {
        self.state.cache.bump_list(tenant, list).await;
    }

    /// The caller's communities that are active (not suspended or deleted).
    pub async fn communities(&self) -> Result<Vec<Community>, ApiError> {
        Ok(community::active(
            &self.state.db,
            self.user.id,
            self.limits.statement_timeout_ms,
        )
        .await?)
    }

    /// A page of all the caller's communities (suspended ones included).
    pub async fn communities_page(
        &self,
        after: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<Community>, ApiError> {
        Ok(community::page(
            &self.state.db,
            self.user.id,
            after,
            limit,
            self.limits.statement_timeout_ms,
        )
        .await?)
    }

    /// A transaction whose tenant context is `tenants`: the caller must have
    /// checked that each is one of their communities.
    pub async fn begin(&self, tenants: Vec<Uuid>) -> Result<Tx, ApiError> {
        let ctx = TenantContext {
            tenant_ids: tenants,
            user_id: Some(self.user.id),
            statement_timeout_ms: self.limits.statement_timeout_ms,
        };
        Ok(self.state.db.begin(&ctx).await?)
    }

    /// The limits in force for the tenant `slug` (for the quotas of a write
    /// into it), from the in-memory tenant registry.
    pub async fn tenant_limits(&self, slug: &str) -> Result<Limits, ApiError> {
        let tenant = self
            .state
            .registry
            .by_slug(slug)
            .await?
            .ok_or_else(|| ApiError::not_found("tenant"))?;
        Ok(self.state.limits_of(&tenant))
    }

    /// The feature flags in force for the tenant `id`, from the in-memory
    /// tenant registry (all off for a tenant that is gone).
    pub async fn tenant_features(&self, id: Uuid) -> Result<FeatureFlags, ApiError> {
        Ok(match self.state.registry.by_id(id).await? {
            Some(tenant) => self.state.limits_of(&tenant).features,
            None => FeatureFlags::none(),
        })
    }
}

impl FromRequestParts<Arc<AppState>> for UserScope {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        // The same token path as a tenant's request, through the verified
        // token cache.
        let (user, _) = state.verify_token_exp(super::auth::bearer(&parts.headers)?)?;
        let limits = {
            let tiers = state.tiers.load();
            tiers.limits(&tiers.default_tier).clone()
        };
        let (permit, turn) = if state.fairness.enforce {
            let who = admission::Admittee {
                key: user.id,
                user: user.id,
                tier: "user",
                user_scoped: true,
            };
            let checked = admission::check_rate(state, who, &limits).await;
            if !checked.allowed() {
                return Err(admission::rate_limited(who, checked));
            }
            let turn =
                admission::take_turn(state, &parts.extensions, user.id, limits.weight).await?;
            state.provision(&user).await?;
            let claim = admission::claim(user.id, &limits);
            (Some(admission::share(state, claim, "user").await?), turn)
        } else {
            state.provision(&user).await?;
            (None, None)
        };
        Ok(UserScope {
            user,
            limits,
            state: state.clone(),
            _permit: permit,
            _turn: turn,
        })
    }
}
