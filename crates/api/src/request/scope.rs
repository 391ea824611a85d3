//! The tenant-scoped request: [`Scope`], the extractor every tenant route
//! takes. In order: the bearer token (anonymous callers learn nothing about
//! tenants), the tenant the request names ([`super::naming`]), both from the
//! memo ([`super::memo`]) when it is current; the tenant's and the
//! user's rate ([`super::admission`]); the tenant's turn in the CPU share;
//! then a lazy transaction whose first statement waits for the tenant's fair
//! database share.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use tenantry_cache::{Cache, PLATFORM, Stamp};
use tenantry_core::{Feature, Limits, Role};
use tenantry_db::members::Member;
use tenantry_db::support::{Grant, GrantScope};
use tenantry_db::tenants::Tenant;
use tenantry_db::{TenantContext, Tx};
use tenantry_fairness::gcra::Decision;
use uuid::Uuid;

use super::admission;
use super::auth::AuthUser;
use super::memo::{self, Caller, Lookup};
use super::naming::{query_tenant, resolve_named};
use super::registry::{METADATA_TTL, unshare};
use super::support::{self, SupportUse, X_SUPPORT_GRANT};
use crate::problem::ApiError;
use crate::state::AppState;

/// The cache namespace of a caller's membership, keyed by user id: read by
/// [`Scope::membership`] and checked, without a load, when a memoized caller is
/// renewed.
const MEMBERSHIP: &str = "member";

/// The feature a route belongs to (set by the routes' layer, see
/// `routes::gated`): a tenant with it off gets 403 `feature_disabled`.
#[derive(Clone, Copy, Debug)]
pub struct RequiredFeature(pub Feature);

/// What the tenant-scoped extractor learned about a request, for the
/// middleware that wraps it, set once: see [`Resolved`].
#[derive(Clone, Default)]
pub struct RequestInfo(pub Arc<std::sync::OnceLock<Resolved>>);

/// A request's tenant (its id and tier, for metrics and throttle counts)
/// and its rate-limit decision (for the `RateLimit` headers), if checked.
pub struct Resolved {
    pub tenant: Arc<Tenant>,
    pub rate: Option<Decision>,
    /// Set when a support agent made the request under a live grant: it is
    /// audited ([`super::support::audit`]).
    pub support: Option<SupportUse>,
}

/// A tenant-scoped request: the tenant, its limits, the signed-in user and
/// a transaction carrying the tenant context. The transaction is lazy: it
/// waits for the tenant's database share and takes a connection only on its
/// first statement, so a request answered from the cache holds neither. The
/// caller's membership comes from the cache (loaded in the transaction on a
/// miss).
pub struct Scope {
    pub tenant: Arc<Tenant>,
    pub limits: Limits,
    pub user: Arc<AuthUser>,
    pub tx: Tx,
    /// `None` until looked up; then the membership, or `Some(None)` for a
    /// non-member.
    member: Option<Option<Arc<Member>>>,
    /// The memo entry of this caller (see [`crate::request::memo`]), if current.
    caller: Option<Arc<Caller>>,
    /// The grant a support agent acts under (`X-Support-Grant`), if any.
    support: Option<Arc<Grant>>,
    state: Arc<AppState>,
    /// Counts the request among its tenant's in flight (with cells), so a
    /// move's fence waits for it.
    _in_flight: Option<super::hold::InFlight>,
    /// The request's CPU turn, when no [`admission::TurnSlot`] keeps it.
    _turn: Option<tenantry_fairness::share::Permit>,
}

impl Scope {
    /// The caller's membership (with their profile), or `None` if not a
    /// member. Cached per (tenant, user) until the tenant's generation moves.
    pub async fn membership(&mut self) -> Result<Option<Arc<Member>>, ApiError> {
        if let Some(m) = &self.member {
            return Ok(m.clone());
        }
        if let Some(m) = self.caller.as_ref().and_then(|c| c.member()) {
            self.member = Some(m.clone());
            return Ok(m);
        }
        let (tenant, user) = (self.tenant.id, self.user.id);
        let tx = &mut self.tx;
        let found = self
            .state
            .cache
            .get_or_load(
                tenant,
                MEMBERSHIP,
                &user.to_string(),
                METADATA_TTL,
                || async {
                    let found = tenantry_db::members::get(tx, tenant, user).await?;
                    Ok::<_, tenantry_db::DbError>(found.map(Arc::new))
                },
            )
            .await
            .map_err(|e| ApiError::from(unshare(e)))?;
        let member = found.as_ref().clone();
        if let Some(caller) = &self.caller {
            caller.set_member(member.clone());
        }
        self.member = Some(member.clone());
        Ok(member)
    }

    /// This request's memoized caller (see [`crate::request::memo`]), if current.
    pub fn caller(&self) -> Option<&Arc<Caller>> {
        self.caller.as_ref()
    }

    /// Memoized views of tenants (see [`crate::views::TenantViews`]).
    pub fn views(&self) -> &crate::views::TenantViews {
        &self.state.views
    }

    /// The platform's default settings (cached once for every tenant).
    pub async fn platform_settings(&self) -> Result<Arc<serde_json::Value>, ApiError> {
        self.state.platform_settings().await
    }

    /// The caller's role, or `None` if not a member. A support agent under
    /// a grant acts as an admin (never the owner); a `read` grant cannot
    /// write whatever the role allows.
    pub async fn role(&mut self) -> Result<Option<Role>, ApiError> {
        if self.support.is_some() {
            return Ok(Some(Role::Admin));
        }
        Ok(self.membership().await?.map(|m| m.role))
    }

    /// Whose membership the reads that check it in SQL (`*_for_member`)
    /// run as: the caller, or under a support grant the tenant's owner, so
    /// an agent reads what the owner reads (and writes, under a `write`
    /// grant, with the admin role and as themselves).
    pub fn viewer(&self) -> Uuid {
        match self.support {
            Some(_) => self.tenant.owner_user_id,
            None => self.user.id,
        }
    }

    /// The support grant this request is made under, if it is.
    pub fn support(&self) -> Option<&Grant> {
        self.support.as_deref()
    }

    /// The shared cache, for handlers that cache query results
    /// ([`Cache::get_or_load`] under [`Scope::tenant_id`]) and bump a list's
    /// generation after a write ([`Scope::changed`]).
    pub fn cache(&self) -> &Arc<Cache> {
        &self.state.cache
    }

    /// The first `rows` rows of one of the tenant's lists, the same for
    /// every member: cached under `ns` (moved with its list, the part
    /// before `:`, and with the tenant) for `ttl`, loaded on a miss by
    /// `load` with this request's transaction. The caller checks the
    /// caller's membership first, and what each caller may see of the rows
    /// after.
    pub async fn shared_first_page<T, L, F>(
        self,
        ns: &'static str,
        rows: i64,
        ttl: std::time::Duration,
        load: L,
    ) -> Result<Vec<T>, ApiError>
    where
        T: serde::Serialize + serde::de::DeserializeOwned + Clone + Send + Sync + 'static,
        L: FnOnce(Tx) -> F,
        F: Future<Output = Result<Vec<T>, tenantry_db::DbError>>,
    {
        let (cache, tenant, tx) = (self.state.cache.clone(), self.tenant.id, self.tx);
        let page = cache
            .get_or_load(tenant, ns, &rows.to_string(), ttl, move || load(tx))
            .await
            .map_err(|e| ApiError::from(unshare(e)))?;
        Ok(page.as_ref().clone())
    }

    /// What to invalidate once this request's write commits: the tenant's
    /// cached `list` (e.g. `"posts"`), or `""` for the whole tenant (its
    /// record, memberships, every list). Taken before the commit consumes
    /// the transaction; [`Invalidation::announce`] after it.
    pub fn invalidation(&self, list: &'static str) -> Invalidation {
        Invalidation {
            cache: self.state.cache.clone(),
            tenant: self.tenant.id,
            list,
        }
    }

    /// The caller's role; 403 if they are not a member.
    pub async fn member(&mut self) -> Result<Role, ApiError> {
        self.role().await?.ok_or_else(not_a_member)
    }

    /// 403 unless the caller's role is at least `min`.
    pub async fn require(&mut self, min: Role) -> Result<Role, ApiError> {
        let role = self.member().await?;
        if role >= min {
            Ok(role)
        } else {
            Err(ApiError::Forbidden(format!(
                "this needs the {min} role or higher"
            )))
        }
    }

    pub fn tenant_id(&self) -> Uuid {
        self.tenant.id
    }

    /// 403 `feature_disabled` unless the tenant has `feature` on, for a
    /// route that gates only some of its operations (a whole module is
    /// gated by its routes' layer: [`RequiredFeature`]).
    pub fn feature(&self, feature: Feature) -> Result<(), ApiError> {
        if self.limits.features.enabled(feature) {
            Ok(())
        } else {
            Err(ApiError::FeatureDisabled(feature))
        }
    }
}

/// A pending cache invalidation (see [`Scope::invalidation`]).
#[must_use = "announce it after the commit"]
pub struct Invalidation {
    cache: Arc<Cache>,
    tenant: Uuid,
    list: &'static str,
}

impl Invalidation {
    /// Bumps the generation here and tells the other nodes.
    pub async fn announce(self) {
        self.cache.bump_list(self.tenant, self.list).await;
    }
}

/// The answer to a non-member on a member-only route.
pub fn not_a_member() -> ApiError {
    ApiError::Forbidden("you are not a member of this tenant".to_owned())
}

impl FromRequestParts<Arc<AppState>> for Scope {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        // Authenticate first: anonymous callers learn nothing about tenants.
        let token = super::auth::bearer_bytes(&parts.headers)?;
        let query = query_tenant(parts.uri.query());
        let naming = state.memo.naming(parts, token, query.as_deref());
        let known = match state.memo.lookup(&state.cache, &naming) {
            Lookup::Current(caller) => Some(caller),
            Lookup::Aged(caller) => Box::pin(renew(state, &naming, caller)).await?,
            Lookup::Missing => None,
        };
        let found = match known {
            Some(caller) => Found::Known(caller),
            // The slow path, boxed so that every request's future stays
            // small.
            None => Box::pin(Found::fresh(parts, state, token, query.as_deref())).await?,
        };
        let (user, tenant, limits) = match &found {
            Found::Known(caller) => (
                caller.user.clone(),
                caller.tenant.clone(),
                caller.limits.clone(),
            ),
            Found::Fresh { user, tenant, .. } => {
                (user.clone(), tenant.clone(), state.limits_of(tenant))
            }
        };
        let info = parts
            .extensions
            .get::<RequestInfo>()
            .cloned()
            .unwrap_or_default();
        let who = admission::Admittee {
            key: tenant.id,
            user: user.id,
            tier: &tenant.tier,
            user_scoped: false,
        };
        let checked = match state.fairness.enforce {
            true => Some(admission::check_rate(state, who, &limits).await),
            false => None,
        };
        let support = match parts.headers.get(&X_SUPPORT_GRANT) {
            Some(raw) => {
                Some(support::check(state, tenant.id, user.id, raw.as_bytes(), &parts.method).await)
            }
            None => None,
        };
        let _ = info.0.set(Resolved {
            tenant: tenant.clone(),
            rate: checked.map(|c| c.binding()),
            support: match &support {
                Some(Ok(grant)) => Some(SupportUse {
                    grant: grant.id,
                    agent: user.id,
                    method: parts.method.clone(),
                    path: parts.uri.path().to_owned(),
                }),
                _ => None,
            },
        });
        let support = support.transpose()?;
        if let Some(checked) = checked
            && !checked.allowed()
        {
            return Err(admission::rate_limited(who, checked));
        }
        // The tenant's flags came with its limits (memoized): no statement.
        if let Some(RequiredFeature(feature)) = parts.extensions.get::<RequiredFeature>()
            && !limits.features.enabled(*feature)
        {
            return Err(ApiError::FeatureDisabled(*feature));
        }
        // The rest of the request's work waits its tenant's turn.
        let turn = match state.fairness.enforce {
            true => {
                admission::take_turn(state, &parts.extensions, tenant.id, limits.weight).await?
            }
            false => None,
        };
        let caller = match found {
            Found::Known(caller) => Some(caller),
            Found::Fresh {
                before, exp, names, ..
            } => {
                state.provision_for(&user, &tenant).await?;
                Box::pin(remember(
                    state,
                    &naming,
                    before,
                    (&user, exp),
                    (&tenant, &limits),
                    names,
                ))
                .await?
            }
        };
        match &caller {
            Some(caller) => caller.count_request(),
            None => {
                state
                    .cache
                    .stats
                    .tenant(tenant.id)
                    .requests
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        // With cells, the request counts among its tenant's requests in
        // flight, and waits while the tenant is held (the final moment of a
        // move); a request that waited looks its tenant up again, since the
        // directory may name another cell now.
        let (tenant, in_flight) = match state.cells.is_single() {
            true => (tenant, None),
            false => Box::pin(enter(state, tenant)).await?,
        };
        let admission = state
            .fairness
            .enforce
            .then(|| admission::tenant_share(state.clone(), &tenant, &limits));
        let ctx = TenantContext::tenant(tenant.id, limits.statement_timeout_ms);
        // Nothing is taken or sent yet: the share, the connection and the
        // prelude come with the handler's first statement, if any.
        // The tenant's cell, from its cached record: no round trip.
        let mut tx = state.db_of(&tenant)?.begin_lazy(&ctx, admission);
        // With read replicas: the caller is the user and the tenant (a
        // write remembers its position for both; a read waits for a
        // replica that has replayed both), and a GET or HEAD may be served
        // by a replica of the tenant's cell (`tenantry_db::replica`).
        tx.for_caller(&[tenant.id, user.id]);
        if super::user::is_read(&parts.method) {
            tx.prefer_replica();
        }
        if support
            .as_ref()
            .is_some_and(|g| g.scope == GrantScope::Read)
        {
            tx.set_read_only();
        }
        Ok(Scope {
            tenant,
            limits,
            user,
            tx,
            member: None,
            caller,
            support,
            state: state.clone(),
            _in_flight: in_flight,
            _turn: turn,
        })
    }
}

/// Admits a request of `tenant` among its requests in flight, waiting (at
/// most the database queue budget) while the tenant is held; 503
/// `overloaded` past it. After a wait the tenant is read again: it may have
/// moved to another cell (or been deleted: 404).
async fn enter(
    state: &Arc<AppState>,
    tenant: Arc<Tenant>,
) -> Result<(Arc<Tenant>, Option<super::hold::InFlight>), ApiError> {
    let budget = state.fairness.db_queue_budget;
    let (in_flight, waited) = state.holds.enter(tenant.id, budget).await.map_err(|_| {
        ApiError::from(tenantry_db::DbError::Busy(
            "the tenant is moving to another cell; retry".to_owned(),
        ))
    })?;
    if !waited {
        return Ok((tenant, Some(in_flight)));
    }
    let now = state
        .registry
        .by_id(tenant.id)
        .await?
        .ok_or_else(|| ApiError::not_found("tenant"))?;
    Ok((now, Some(in_flight)))
}

/// Renews an aged caller (see [`memo::Lookup::Aged`]) if the cache still
/// holds the very tenant record it was made from, and the very membership
/// it keeps (if a request looked it up): what resolving it again would
/// read, from the same cached entries, until the cache reloads them (at
/// least every [`METADATA_TTL`]). Nothing it depends on was announced as
/// changed (its stamp is current), so only the new entry, its body and the
/// user's provisioning check are saved. `None`: resolve it again.
async fn renew(
    state: &AppState,
    naming: &memo::Naming<'_>,
    caller: Arc<Caller>,
) -> Result<Option<Arc<Caller>>, ApiError> {
    let current = state.registry.by_id(caller.tenant.id).await?;
    let same_tenant = current.is_some_and(|c| Arc::ptr_eq(&c, &caller.tenant));
    let same_member = match caller.member_held() {
        None => true,
        Some(held) => state
            .cache
            .peek::<Option<Arc<Member>>>(caller.tenant.id, MEMBERSHIP, &caller.user.id.to_string())
            .await
            .is_some_and(|cached| match (&*cached, held) {
                (Some(cached), Some(held)) => Arc::ptr_eq(cached, held),
                (None, None) => true,
                _ => false,
            }),
    };
    if same_tenant && same_member {
        return Ok(state.memo.renew(naming, caller));
    }
    state.memo.not_renewed();
    Ok(None)
}

/// A request's caller and tenant: from the memo, or looked up just now.
enum Found {
    Known(Arc<Caller>),
    Fresh {
        user: Arc<AuthUser>,
        tenant: Arc<Tenant>,
        /// Taken before anything was read (see [`remember`]).
        before: Stamp,
        /// The token's expiry.
        exp: u64,
        /// The namespace the tenant's name was looked up in.
        names: &'static str,
    },
}

impl Found {
    async fn fresh(
        parts: &Parts,
        state: &AppState,
        token: &[u8],
        query_tenant: Option<&str>,
    ) -> Result<Self, ApiError> {
        let before = state.cache.stamp(PLATFORM);
        let (user, exp) = state.verify_token_exp(super::auth::token_str(token)?)?;
        let (tenant, names) = resolve_named(parts, state, query_tenant).await?;
        Ok(Found::Fresh {
            user: Arc::new(user),
            tenant,
            before,
            exp,
            names,
        })
    }
}

/// Memoizes a provisioned caller of `tenant`, unless something it was read
/// from may have moved while it was read: a platform generation (a name)
/// since `before`, or the tenant's record, which is read again under the
/// tenant's stamp and must be the very value resolution returned.
async fn remember(
    state: &AppState,
    naming: &memo::Naming<'_>,
    before: Stamp,
    (user, exp): (&Arc<AuthUser>, u64),
    (tenant, limits): (&Arc<Tenant>, &Limits),
    names: &'static str,
) -> Result<Option<Arc<Caller>>, ApiError> {
    let stamp = state.cache.stamp(tenant.id);
    if !stamp.same_platform(before) {
        return Ok(None);
    }
    let current = state.registry.by_id(tenant.id).await?;
    if !current.is_some_and(|c| Arc::ptr_eq(&c, tenant)) {
        return Ok(None);
    }
    Ok(Some(state.memo.remember(
        &state.cache,
        naming,
        stamp,
        (user.clone(), exp),
        (tenant.clone(), limits.clone()),
        names,
    )))
}
