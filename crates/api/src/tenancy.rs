//! Which tenant a request is for, and the member-scoped context handlers get.
//!
//! A request names its tenant by, in this order: the `Host` equal to a
//! tenant's custom domain; `<slug>.<base domain>`; the `X-Tenant` header; the
//! `?tenant=` query parameter. Every signal present must name the same tenant
//! (else 400). Tenants are looked up through [`TenantRegistry`], an in-memory
//! cache, so resolution normally costs no database work.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use tenantry_cache::{Cache, PLATFORM, Stamp};
use tenantry_core::{Limits, Role, TenantStatus};
use tenantry_db::members::Member;
use tenantry_db::tenants::{self, Lookup, Tenant};
use tenantry_db::{Db, TenantContext, Tx};
use uuid::Uuid;

use tenantry_db::Admission;
use tenantry_fairness::gcra::{Decision, Quota};
use tenantry_fairness::rate::Checked;
use tenantry_fairness::share::{Claim, Rejected};

use crate::auth::AuthUser;
use crate::memo::{self, Caller};
use crate::problem::ApiError;
use crate::state::{AppState, PLATFORM_STATEMENT_TIMEOUT_MS};

/// How long a tenant, a membership or a name's tenant is kept. Every change
/// bumps the tenant's generation and is announced to the other nodes, so
/// this only bounds staleness when an announcement is lost without the
/// channel dropping (a node dying between its commit and its announcement).
pub const METADATA_TTL: Duration = Duration::from_secs(300);
/// How long "no tenant has this slug or domain" is kept: short, so a new
/// tenant is found quickly even if its announcement is lost, and long
/// enough that a flood of made-up names costs nothing.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);

/// Tenants by slug, domain and id, from the cache (namespaces `names:slug`,
/// `names:domain` under the platform, and `tenant` under each tenant), with
/// negative entries so floods of unknown names cost nothing.
pub struct TenantRegistry {
    db: Db,
    cache: Arc<Cache>,
}

impl TenantRegistry {
    pub fn new(db: Db, cache: Arc<Cache>) -> Self {
        Self { db, cache }
    }

    /// The tenant with `id` (not deleted).
    pub async fn by_id(&self, id: Uuid) -> Result<Option<Arc<Tenant>>, ApiError> {
        let db = &self.db;
        let found = self
            .cache
            .get_or_load(id, "tenant", "", METADATA_TTL, || async {
                let found =
                    tenants::find(db, Lookup::Id(id), PLATFORM_STATEMENT_TIMEOUT_MS).await?;
                Ok::<_, tenantry_db::DbError>(found.map(Arc::new))
            })
            .await
            .map_err(|e| ApiError::from(unshare(e)))?;
        Ok(found.as_ref().clone())
    }

    async fn by_name(&self, lookup: Lookup<'_>) -> Result<Option<Arc<Tenant>>, ApiError> {
        let (ns, name) = match lookup {
            Lookup::Slug(s) => ("names:slug", s),
            Lookup::Domain(d) => ("names:domain", d),
            Lookup::Id(id) => return self.by_id(id).await,
        };
        let db = &self.db;
        let (id, _) = self
            .cache
            .get_or_load_ttl(PLATFORM, ns, name, || async {
                let found = tenants::find(db, lookup, PLATFORM_STATEMENT_TIMEOUT_MS).await?;
                let ttl = if found.is_some() {
                    METADATA_TTL
                } else {
                    NEGATIVE_TTL
                };
                Ok::<_, tenantry_db::DbError>((found.map(|t| t.id), ttl))
            })
            .await
            .map_err(|e| ApiError::from(unshare(e)))?;
        let Some(id) = *id else { return Ok(None) };
        let tenant = self.by_id(id).await?;
        let names = |t: &Tenant| match lookup {
            Lookup::Slug(s) => t.slug == s,
            Lookup::Domain(d) => t.domain.as_deref() == Some(d),
            Lookup::Id(_) => true,
        };
        match tenant {
            Some(t) if names(&t) => Ok(Some(t)),
            // The name moved (a deleted tenant's slug reused, a domain
            // changed) and the announcement is still on its way: ask the
            // database.
            _ => Ok(tenants::find(db, lookup, PLATFORM_STATEMENT_TIMEOUT_MS)
                .await?
                .map(Arc::new)),
        }
    }

    pub async fn by_slug(&self, slug: &str) -> Result<Option<Arc<Tenant>>, ApiError> {
        self.by_name(Lookup::Slug(slug)).await
    }

    pub async fn by_domain(&self, domain: &str) -> Result<Option<Arc<Tenant>>, ApiError> {
        self.by_name(Lookup::Domain(domain)).await
    }

    /// Forgets everything cached about tenant `id` (its record, its
    /// memberships, its lists) and every name's tenant, on every node. O(1):
    /// two generations move.
    pub async fn invalidate(&self, _before: Option<&Tenant>, id: Uuid) {
        self.cache.bump_tenant(id).await;
        self.cache.bump_list(PLATFORM, "names").await;
    }

    /// Forgets negative entries for a slug or domain that now exists.
    pub async fn created(&self, _tenant: &Tenant) {
        self.cache.bump_list(PLATFORM, "names").await;
    }
}

/// moka shares one loader error between concurrent waiters.
pub(crate) fn unshare(err: Arc<tenantry_db::DbError>) -> tenantry_db::DbError {
    match Arc::try_unwrap(err) {
        Ok(e) => e,
        Err(shared) => match &*shared {
            tenantry_db::DbError::Timeout => tenantry_db::DbError::Timeout,
            tenantry_db::DbError::Unavailable(s) => tenantry_db::DbError::Unavailable(s.clone()),
            tenantry_db::DbError::Busy(s) => tenantry_db::DbError::Busy(s.clone()),
            other => tenantry_db::DbError::Other(anyhow::anyhow!("{other}")),
        },
    }
}

/// Finds the tenant a request names. Unknown or deleted: 404; suspended: 403.
pub async fn resolve(parts: &Parts, state: &AppState) -> Result<Arc<Tenant>, ApiError> {
    let query = query_tenant(parts.uri.query());
    resolve_named(parts, state, query.as_deref())
        .await
        .map(|(tenant, _)| tenant)
}

/// [`resolve`] with the request's `?tenant=` parameter already decoded;
/// also says which namespace the first signal was looked up in
/// (`names:domain` or `names:slug`).
async fn resolve_named(
    parts: &Parts,
    state: &AppState,
    query_tenant: Option<&str>,
) -> Result<(Arc<Tenant>, &'static str), ApiError> {
    let mut named: Option<(Arc<Tenant>, &'static str, &'static str)> = None;
    let mut name = |tenant: Arc<Tenant>, signal: &'static str, ns| -> Result<(), ApiError> {
        match &named {
            Some((first, first_signal, _)) if first.id != tenant.id => Err(ApiError::BadRequest(
                format!("the {first_signal} and the {signal} name different tenants"),
            )),
            Some(_) => Ok(()),
            None => {
                named = Some((tenant, signal, ns));
                Ok(())
            }
        }
    };

    if let Some(host) = host_of(parts) {
        if let Some(tenant) = state.registry.by_domain(&host).await? {
            name(tenant, "custom domain", "names:domain")?;
        } else if let Some(slug) = subdomain_slug(&host, state.base_domain.as_deref()) {
            let tenant = state.registry.by_slug(slug).await?.ok_or_else(unknown)?;
            name(tenant, "subdomain", "names:slug")?;
        }
    }
    if let Some(value) = parts.headers.get(X_TENANT) {
        let slug = value
            .to_str()
            .map_err(|_| ApiError::BadRequest("X-Tenant must be a tenant slug".to_owned()))?;
        let tenant = lookup_slug(state, slug).await?;
        name(tenant, "X-Tenant header", "names:slug")?;
    }
    if let Some(slug) = query_tenant {
        let tenant = lookup_slug(state, slug).await?;
        name(tenant, "tenant query parameter", "names:slug")?;
    }

    let (tenant, _, ns) = named.ok_or_else(|| {
        ApiError::BadRequest(
            "no tenant named: use the tenant's domain, the X-Tenant header or ?tenant=<slug>"
                .to_owned(),
        )
    })?;
    match tenant.status {
        TenantStatus::Active => Ok((tenant, ns)),
        TenantStatus::Suspended => Err(ApiError::TenantSuspended),
        TenantStatus::Deleted => Err(unknown()),
    }
}

fn unknown() -> ApiError {
    ApiError::not_found("tenant")
}

async fn lookup_slug(state: &AppState, slug: &str) -> Result<Arc<Tenant>, ApiError> {
    // A string that cannot be a slug names no tenant; skip the lookup.
    if tenantry_core::TenantSlug::parse(slug).is_err() {
        return Err(unknown());
    }
    state.registry.by_slug(slug).await?.ok_or_else(unknown)
}

/// The request's host, lowercased, without port.
fn host_of(parts: &Parts) -> Option<String> {
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| parts.uri.host())?;
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let host = host.trim_end_matches('.');
    // IP literals and single labels (localhost) are never tenant domains;
    // checked before lowercasing, which allocates.
    if host.is_empty()
        || !host.contains('.')
        || host.starts_with('[')
        || host.parse::<std::net::IpAddr>().is_ok()
    {
        return None;
    }
    Some(host.to_ascii_lowercase())
}

fn subdomain_slug<'a>(host: &'a str, base: Option<&str>) -> Option<&'a str> {
    let base = base?;
    let prefix = host.strip_suffix(base)?.strip_suffix('.')?;
    (!prefix.is_empty() && !prefix.contains('.')).then_some(prefix)
}

fn query_tenant(query: Option<&str>) -> Option<String> {
    let query = query?;
    url_pairs(query)
        .find(|(k, _)| k == "tenant")
        .map(|(_, v)| v)
}

/// `application/x-www-form-urlencoded` pairs, decoded.
fn url_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        Some((percent_decode(k)?, percent_decode(v)?))
    })
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The header naming a request's tenant by slug.
pub const X_TENANT: header::HeaderName = header::HeaderName::from_static("x-tenant");

/// What the tenant-scoped extractor learned about a request, for the
/// middleware that wraps it, set once: see [`Resolved`].
#[derive(Clone, Default)]
pub struct RequestInfo(pub Arc<std::sync::OnceLock<Resolved>>);

/// A request's tenant (its id and tier, for metrics and throttle counts)
/// and its rate-limit decision (for the `RateLimit` headers), if checked.
pub struct Resolved {
    pub tenant: Arc<Tenant>,
    pub rate: Option<Decision>,
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
    /// The memo entry of this caller (see [`crate::memo`]), if current.
    caller: Option<Arc<Caller>>,
    state: Arc<AppState>,
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
                "member",
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

    /// This request's memoized caller (see [`crate::memo`]), if current.
    pub fn caller(&self) -> Option<&Arc<Caller>> {
        self.caller.as_ref()
    }

    /// Memoized views of tenants (see [`crate::routes::tenant::TenantViews`]).
    pub fn views(&self) -> &crate::routes::tenant::TenantViews {
        &self.state.views
    }

    /// The platform's default settings (cached once for every tenant).
    pub async fn platform_settings(&self) -> Result<Arc<serde_json::Value>, ApiError> {
        self.state.platform_settings().await
    }

    /// The caller's role, or `None` if not a member.
    pub async fn role(&mut self) -> Result<Option<Role>, ApiError> {
        Ok(self.membership().await?.map(|m| m.role))
    }

    /// The shared cache, for handlers that cache query results
    /// ([`Cache::get_or_load`] under [`Scope::tenant_id`]) and bump a list's
    /// generation after a write ([`Scope::changed`]).
    pub fn cache(&self) -> &Arc<Cache> {
        &self.state.cache
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
        let token = crate::auth::bearer_bytes(&parts.headers)?;
        let query = query_tenant(parts.uri.query());
        let naming = memo::naming(&state.cache, parts, token, query.as_deref());
        let found = match memo::lookup(&state.cache, &naming) {
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
        let checked = match state.fairness.enforce {
            true => Some(check_rate(state, &tenant, &limits, user.id).await),
            false => None,
        };
        let _ = info.0.set(Resolved {
            tenant: tenant.clone(),
            rate: checked.map(|c| c.binding()),
        });
        if let Some(checked) = checked
            && !checked.allowed()
        {
            return Err(rate_limited(&tenant, checked));
        }
        let caller = match found {
            Found::Known(caller) => Some(caller),
            Found::Fresh {
                before, exp, names, ..
            } => {
                state.provision(&user).await?;
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
        let admission = state
            .fairness
            .enforce
            .then(|| admit_db(state.clone(), &tenant, &limits));
        let ctx = TenantContext::tenant(tenant.id, limits.statement_timeout_ms);
        // Nothing is taken or sent yet: the share, the connection and the
        // prelude come with the handler's first statement, if any.
        let tx = state.db.begin_lazy(&ctx, admission);
        Ok(Scope {
            tenant,
            limits,
            user,
            tx,
            member: None,
            caller,
            state: state.clone(),
        })
    }
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
        let (user, exp) = state.verify_token_exp(crate::auth::token_str(token)?)?;
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
    Ok(Some(memo::remember(
        &state.cache,
        naming,
        stamp,
        user.clone(),
        exp,
        (tenant.clone(), limits.clone()),
        names,
    )))
}

/// The tenant's rate, then the user's rate within the tenant (counted if
/// allowed).
async fn check_rate(state: &AppState, tenant: &Tenant, limits: &Limits, user: Uuid) -> Checked {
    let tenant_quota = Quota {
        per_sec: limits.rate_per_sec,
        burst: limits.burst,
    };
    let user_quota = Quota {
        per_sec: limits.user_rate_per_sec,
        burst: limits.user_rate_per_sec.max(1),
    };
    state
        .fairness
        .rate
        .check(tenant.id, user, tenant_quota, user_quota)
        .await
}

/// The answer to a request over its tenant's or its user's rate. The
/// decision shown in the headers is the tighter of the two.
fn rate_limited(tenant: &Tenant, checked: Checked) -> ApiError {
    let scope = if checked.tenant.allowed {
        "user"
    } else {
        "tenant"
    };
    metrics::counter!("tenantry_rate_limited_total", "tier" => tenant.tier.clone(), "scope" => scope)
        .increment(1);
    ApiError::RateLimited {
        retry_after: checked.binding().retry_after.as_secs_f64().ceil().max(1.0) as u64,
    }
}

/// Waits for the tenant's share of the database, in the fair queue: the
/// admission of the request's lazy transaction. A wait past the budget is
/// [`tenantry_db::DbError::Busy`], which answers 503 `overloaded` (not
/// `database_unavailable`: the database is there, the tenant's turn is not).
fn admit_db(state: Arc<AppState>, tenant: &Arc<Tenant>, limits: &Limits) -> Admission {
    let claim = Claim {
        tenant: tenant.id,
        limit: limits.db_concurrency,
        weight: limits.weight,
    };
    // The tier is only read if a statement asks for the share.
    let tenant = tenant.clone();
    Box::pin(async move {
        let tier = tenant.tier.as_str();
        let started = tokio::time::Instant::now();
        let fairness = &state.fairness;
        match fairness
            .db_share
            .acquire(claim, fairness.db_queue_budget)
            .await
        {
            Ok(permit) => {
                metrics::histogram!("tenantry_db_queue_wait_seconds", "tier" => tier.to_owned())
                    .record(started.elapsed().as_secs_f64());
                Ok(Box::new(permit) as Box<dyn std::any::Any + Send + Sync>)
            }
            Err(Rejected::Timeout) => {
                metrics::counter!("tenantry_db_queue_timeouts_total", "tier" => tier.to_owned())
                    .increment(1);
                Err(tenantry_db::DbError::Busy(
                    "the tenant's database share is busy".to_owned(),
                ))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subdomains_of_the_base_domain_name_slugs() {
        assert_eq!(
            subdomain_slug("acme.example.com", Some("example.com")),
            Some("acme")
        );
        assert_eq!(subdomain_slug("example.com", Some("example.com")), None);
        assert_eq!(subdomain_slug("a.b.example.com", Some("example.com")), None);
        assert_eq!(subdomain_slug("acmeexample.com", Some("example.com")), None);
        assert_eq!(subdomain_slug("acme.example.com", None), None);
    }

    #[test]
    fn query_tenant_is_decoded() {
        assert_eq!(
            query_tenant(Some("limit=5&tenant=acme")),
            Some("acme".to_owned())
        );
        assert_eq!(query_tenant(Some("tenant=ac%6De")), Some("acme".to_owned()));
        assert_eq!(query_tenant(Some("limit=5")), None);
        assert_eq!(query_tenant(None), None);
    }
}
