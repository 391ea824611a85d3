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
use moka::future::Cache;
use tenantry_core::{Limits, Role, TenantStatus};
use tenantry_db::tenants::{self, Lookup, Tenant};
use tenantry_db::{Db, TenantContext, Tx};
use uuid::Uuid;

use tenantry_fairness::gcra::{Decision, Quota};
use tenantry_fairness::share::{Claim, Permit, Rejected};

use crate::auth::AuthUser;
use crate::problem::ApiError;
use crate::state::{AppState, PLATFORM_STATEMENT_TIMEOUT_MS};

/// How long a looked-up tenant (or the fact that a slug or domain names no
/// tenant) is trusted. Changes made through this node's admin API invalidate
/// at once; the TTL bounds staleness for changes made on other nodes.
const REGISTRY_TTL: Duration = Duration::from_secs(10);

/// An in-memory cache of tenants by slug, domain and id, with negative
/// entries so floods of unknown names cost nothing.
pub struct TenantRegistry {
    db: Db,
    by_slug: Cache<String, Option<Arc<Tenant>>>,
    by_domain: Cache<String, Option<Arc<Tenant>>>,
}

impl TenantRegistry {
    pub fn new(db: Db) -> Self {
        let cache = || {
            Cache::builder()
                .max_capacity(100_000)
                .time_to_live(REGISTRY_TTL)
                // For invalidate_entries_if: a tenant is found by id.
                .support_invalidation_closures()
                .build()
        };
        Self {
            db,
            by_slug: cache(),
            by_domain: cache(),
        }
    }

    pub async fn by_slug(&self, slug: &str) -> Result<Option<Arc<Tenant>>, ApiError> {
        let db = &self.db;
        self.by_slug
            .try_get_with(slug.to_owned(), async {
                let found =
                    tenants::find(db, Lookup::Slug(slug), PLATFORM_STATEMENT_TIMEOUT_MS).await?;
                Ok::<_, tenantry_db::DbError>(found.map(Arc::new))
            })
            .await
            .map_err(|e| ApiError::from(unshare(e)))
    }

    pub async fn by_domain(&self, domain: &str) -> Result<Option<Arc<Tenant>>, ApiError> {
        let db = &self.db;
        self.by_domain
            .try_get_with(domain.to_owned(), async {
                let found =
                    tenants::find(db, Lookup::Domain(domain), PLATFORM_STATEMENT_TIMEOUT_MS)
                        .await?;
                Ok::<_, tenantry_db::DbError>(found.map(Arc::new))
            })
            .await
            .map_err(|e| ApiError::from(unshare(e)))
    }

    /// Drops every entry that may describe tenant `id` (by its old slug and
    /// domain too, which a change may have freed).
    pub async fn invalidate(&self, before: Option<&Tenant>, id: Uuid) {
        if let Some(t) = before {
            self.by_slug.invalidate(&t.slug).await;
            if let Some(d) = &t.domain {
                self.by_domain.invalidate(d).await;
            }
        }
        for cache in [&self.by_slug, &self.by_domain] {
            let stale = cache.invalidate_entries_if(move |_, v: &Option<Arc<Tenant>>| {
                v.as_ref().is_some_and(|t| t.id == id)
            });
            if let Err(e) = stale {
                tracing::error!(error = %e, "tenant registry invalidation failed");
            }
        }
    }

    /// Forgets negative entries for a slug or domain that now exists.
    pub async fn created(&self, tenant: &Tenant) {
        self.by_slug.invalidate(&tenant.slug).await;
        if let Some(d) = &tenant.domain {
            self.by_domain.invalidate(d).await;
        }
    }
}

/// moka shares one loader error between concurrent waiters.
fn unshare(err: Arc<tenantry_db::DbError>) -> tenantry_db::DbError {
    match Arc::try_unwrap(err) {
        Ok(e) => e,
        Err(shared) => match &*shared {
            tenantry_db::DbError::Timeout => tenantry_db::DbError::Timeout,
            tenantry_db::DbError::Unavailable(s) => tenantry_db::DbError::Unavailable(s.clone()),
            other => tenantry_db::DbError::Other(anyhow::anyhow!("{other}")),
        },
    }
}

/// Finds the tenant a request names. Unknown or deleted: 404; suspended: 403.
pub async fn resolve(parts: &Parts, state: &AppState) -> Result<Arc<Tenant>, ApiError> {
    let mut named: Option<(Arc<Tenant>, &'static str)> = None;
    let mut name = |tenant: Arc<Tenant>, signal: &'static str| -> Result<(), ApiError> {
        match &named {
            Some((first, first_signal)) if first.id != tenant.id => Err(ApiError::BadRequest(
                format!("the {first_signal} and the {signal} name different tenants"),
            )),
            Some(_) => Ok(()),
            None => {
                named = Some((tenant, signal));
                Ok(())
            }
        }
    };

    if let Some(host) = host_of(parts) {
        if let Some(tenant) = state.registry.by_domain(&host).await? {
            name(tenant, "custom domain")?;
        } else if let Some(slug) = subdomain_slug(&host, state.base_domain.as_deref()) {
            let tenant = state.registry.by_slug(slug).await?.ok_or_else(unknown)?;
            name(tenant, "subdomain")?;
        }
    }
    if let Some(value) = parts.headers.get("x-tenant") {
        let slug = value
            .to_str()
            .map_err(|_| ApiError::BadRequest("X-Tenant must be a tenant slug".to_owned()))?;
        let tenant = lookup_slug(state, slug).await?;
        name(tenant, "X-Tenant header")?;
    }
    if let Some(slug) = query_tenant(parts.uri.query()) {
        let tenant = lookup_slug(state, &slug).await?;
        name(tenant, "tenant query parameter")?;
    }

    let (tenant, _) = named.ok_or_else(|| {
        ApiError::BadRequest(
            "no tenant named: use the tenant's domain, the X-Tenant header or ?tenant=<slug>"
                .to_owned(),
        )
    })?;
    match tenant.status {
        TenantStatus::Active => Ok(tenant),
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
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    // IP literals and single labels (localhost) are never tenant domains.
    if host.is_empty() || !host.contains('.') || host.parse::<std::net::IpAddr>().is_ok() {
        return None;
    }
    if host.starts_with('[') {
        return None;
    }
    Some(host)
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

/// What the tenant-scoped extractor learned about a request, for the
/// middleware that wraps it: the tier and tenant (for metrics and throttle
/// counts) and the rate-limit decision (for the `RateLimit` headers).
#[derive(Clone, Default)]
pub struct RequestInfo(pub Arc<RequestInfoInner>);

#[derive(Default)]
pub struct RequestInfoInner {
    pub tier: std::sync::OnceLock<String>,
    pub tenant: std::sync::OnceLock<Uuid>,
    pub rate: std::sync::OnceLock<Decision>,
}

/// A tenant-scoped request: the tenant, its limits, the signed-in user and
/// an open transaction carrying the tenant context. The caller's role is
/// looked up on first use, in the transaction, so a handler can fold that
/// lookup into its own first statement (one round trip instead of two).
pub struct Scope {
    pub tenant: Arc<Tenant>,
    pub limits: Limits,
    pub user: AuthUser,
    pub tx: Tx,
    /// `None` until looked up; then the role, or `Some(None)` for a
    /// non-member.
    role: Option<Option<Role>>,
    /// This request's place in the tenant's database share, held until the
    /// handler is done.
    _permit: Option<Permit>,
}

impl Scope {
    /// The caller's role, or `None` if not a member.
    pub async fn role(&mut self) -> Result<Option<Role>, ApiError> {
        if let Some(role) = self.role {
            return Ok(role);
        }
        let role =
            tenantry_db::members::role_of(&mut self.tx, self.tenant.id, self.user.id).await?;
        self.role = Some(role);
        Ok(role)
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
        let user = state.jwt.verify(crate::auth::bearer(&parts.headers)?)?;
        let tenant = resolve(parts, state).await?;
        let limits = state.limits_of(&tenant);
        let info = parts
            .extensions
            .get::<RequestInfo>()
            .cloned()
            .unwrap_or_default();
        let _ = info.0.tier.set(tenant.tier.clone());
        let _ = info.0.tenant.set(tenant.id);
        if state.fairness.enforce {
            admit_rate(state, &info, &tenant, &limits, user.id).await?;
        }
        state.provision(&user).await?;
        let permit = if state.fairness.enforce {
            Some(admit_db(state, &tenant, &limits).await?)
        } else {
            None
        };
        let ctx = TenantContext::tenant(tenant.id, limits.statement_timeout_ms);
        // Nothing is sent yet: the prelude goes with the handler's first
        // statement.
        let tx = state.db.begin(&ctx).await?;
        Ok(Scope {
            tenant,
            limits,
            user,
            tx,
            role: None,
            _permit: permit,
        })
    }
}

/// The tenant's rate, then the user's rate within the tenant. The decision
/// shown in the headers is the tighter of the two.
async fn admit_rate(
    state: &AppState,
    info: &RequestInfo,
    tenant: &Tenant,
    limits: &Limits,
    user: Uuid,
) -> Result<(), ApiError> {
    let tenant_quota = Quota {
        per_sec: limits.rate_per_sec,
        burst: limits.burst,
    };
    let user_quota = Quota {
        per_sec: limits.user_rate_per_sec,
        burst: limits.user_rate_per_sec.max(1),
    };
    let checked = state
        .fairness
        .rate
        .check(tenant.id, user, tenant_quota, user_quota)
        .await;
    let decision = checked.binding();
    let _ = info.0.rate.set(decision);
    if checked.allowed() {
        return Ok(());
    }
    let scope = if checked.tenant.allowed {
        "user"
    } else {
        "tenant"
    };
    metrics::counter!("tenantry_rate_limited_total", "tier" => tenant.tier.clone(), "scope" => scope)
        .increment(1);
    Err(ApiError::RateLimited {
        retry_after: decision.retry_after.as_secs_f64().ceil().max(1.0) as u64,
    })
}

/// Waits for the tenant's share of the database, in the fair queue.
async fn admit_db(state: &AppState, tenant: &Tenant, limits: &Limits) -> Result<Permit, ApiError> {
    let claim = Claim {
        tenant: tenant.id,
        limit: limits.db_concurrency,
        weight: limits.weight,
    };
    let started = tokio::time::Instant::now();
    let fairness = &state.fairness;
    match fairness
        .db_share
        .acquire(claim, fairness.db_queue_budget)
        .await
    {
        Ok(permit) => {
            metrics::histogram!("tenantry_db_queue_wait_seconds", "tier" => tenant.tier.clone())
                .record(started.elapsed().as_secs_f64());
            Ok(permit)
        }
        Err(Rejected::Timeout) => {
            metrics::counter!("tenantry_db_queue_timeouts_total", "tier" => tenant.tier.clone())
                .increment(1);
            Err(ApiError::Overloaded { retry_after: 1 })
        }
    }
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
