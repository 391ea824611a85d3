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
    /// A GET or HEAD: its transactions may run on a read replica.
    read: bool,
    /// The request's CPU turn, when no [`admission::TurnSlot`] keeps it.
    _turn: Option<Permit>,
}

/// Whether a request with `method` only reads (routes that answer GET and
/// HEAD write nothing), so its transactions may run on a read replica.
pub fn is_read(method: &axum::http::Method) -> bool {
    *method == axum::http::Method::GET || *method == axum::http::Method::HEAD
}

impl UserScope {
    /// Bumps the generation of one of `tenant`'s cached lists (after a
    /// committed write into it) and tells the other nodes.
    pub async fn list_changed(&self, tenant: Uuid, list: &str) {
        self.state.cache.bump_list(tenant, list).await;
    }

    /// The caller's communities that are active (not suspended or deleted),
    /// in tenant id order. With cells, each cell's directory is read at once
    /// and the answers merged ([`UserScope::scatter`]).
    pub async fn communities(&self) -> Result<Vec<Community>, ApiError> {
        let (user, timeout) = (self.user.id, self.limits.statement_timeout_ms);
        let ctx = TenantContext::user(user, timeout);
        if self.state.cells.is_single() {
            let tx = self.transaction(&self.state.db, ctx);
            return Ok(community::active(tx, user).await?);
        }
        self.scatter(|db| {
            let tx = self.transaction(&db, ctx.clone());
            async move { community::active(tx, user).await }
        })
        .await
    }

    /// A lazily connected transaction in `db` with `ctx`, acting for the
    /// caller and the tenants it names: on a read replica (of that cell)
    /// that has replayed their last writes when this request only reads,
    /// else on the primary.
    fn transaction(&self, db: &tenantry_db::Db, ctx: TenantContext) -> Tx {
        let mut tx = db.begin_lazy(&ctx, None);
        let mut caller = Vec::with_capacity(ctx.tenant_ids.len() + 1);
        caller.push(self.user.id);
        caller.extend_from_slice(&ctx.tenant_ids);
        tx.for_caller(&caller);
        if self.read {
            tx.prefer_replica();
        }
        tx
    }

    /// A page of all the caller's communities (suspended ones included), in
    /// tenant id order after `after`. With cells: the same page asked of
    /// every cell, merged by tenant id and cut at `limit`, so the keyset is
    /// the same one and pages never skip or repeat a community.
    pub async fn communities_page(
        &self,
        after: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<Community>, ApiError> {
        let (user, timeout) = (self.user.id, self.limits.statement_timeout_ms);
        let ctx = TenantContext::user(user, timeout);
        if self.state.cells.is_single() {
            let tx = self.transaction(&self.state.db, ctx);
            return Ok(community::page(tx, user, after, limit).await?);
        }
        let mut all = self
            .scatter(|db| {
                let tx = self.transaction(&db, ctx.clone());
                async move { community::page(tx, user, after, limit).await }
            })
            .await?;
        all.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(all)
    }

    /// Runs `read` against every cell's database at once and merges what
    /// they answer in tenant id order, keeping only the communities whose
    /// cell, in the directory, is the one that answered: a tenant's rows
    /// left in a cell it moved away from (until they are purged) never show,
    /// nor twice.
    async fn scatter<F, Fut>(&self, read: F) -> Result<Vec<Community>, ApiError>
    where
        F: Fn(tenantry_db::Db) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<Community>, tenantry_db::DbError>>,
    {
        let cells: Vec<_> = self.state.cells.iter().cloned().collect();
        let answers =
            futures::future::try_join_all(cells.iter().map(|cell| read(cell.db.clone()))).await?;
        let mut merged = Vec::new();
        for (cell, found) in cells.iter().zip(answers) {
            for c in found {
                let here = match self.state.registry.by_id(c.tenant_id).await? {
                    Some(t) => t.cell == cell.name,
                    None => false,
                };
                if here {
                    merged.push(c);
                }
            }
        }
        merged.sort_by_key(|c| c.tenant_id);
        Ok(merged)
    }

    /// A transaction whose tenant context is `tenants`: the caller must have
    /// checked that each is one of their communities. In the control
    /// database (the cell `main`); [`UserScope::by_cell`] says where each
    /// tenant is.
    pub async fn begin(&self, tenants: Vec<Uuid>) -> Result<Tx, ApiError> {
        let db = self.state.db.clone();
        self.begin_in(&db, tenants).await
    }

    /// [`UserScope::begin`] in `db` (a cell's database).
    pub async fn begin_in(&self, db: &tenantry_db::Db, tenants: Vec<Uuid>) -> Result<Tx, ApiError> {
        let ctx = TenantContext {
            tenant_ids: tenants,
            user_id: Some(self.user.id),
            statement_timeout_ms: self.limits.statement_timeout_ms,
        };
        Ok(self.transaction(db, ctx))
    }

    /// `tenants` grouped by the cell holding them (from the cached
    /// registry), cells in configuration order, each group in the order
    /// given. A tenant that is gone is left out.
    pub async fn by_cell(
        &self,
        tenants: &[Uuid],
    ) -> Result<Vec<(Arc<crate::cells::Cell>, Vec<Uuid>)>, ApiError> {
        let mut groups: Vec<(Arc<crate::cells::Cell>, Vec<Uuid>)> = Vec::new();
        for id in tenants {
            let Some(tenant) = self.state.registry.by_id(*id).await? else {
                continue;
            };
            let cell = self.state.cell_of(&tenant)?;
            match groups.iter_mut().find(|(c, _)| Arc::ptr_eq(c, cell)) {
                Some((_, ids)) => ids.push(*id),
                None => groups.push((cell.clone(), vec![*id])),
            }
        }
        groups.sort_by_key(|(c, _)| {
            self.state
                .cells
                .iter()
                .position(|k| Arc::ptr_eq(k, c))
                .unwrap_or(usize::MAX)
        });
        Ok(groups)
    }

    /// Whether every cell is `main` (no `TENANTRY_CELLS`).
    pub fn single_cell(&self) -> bool {
        self.state.cells.is_single()
    }

    /// Provisions the caller in `cell` (for a write there that refers to
    /// them).
    pub async fn provision_in(&self, tenant: Uuid) -> Result<(), ApiError> {
        if let Some(t) = self.state.registry.by_id(tenant).await? {
            self.state.provision_for(&self.user, &t).await?;
        }
        Ok(())
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
            read: is_read(&parts.method),
            _turn: turn,
        })
    }
}
