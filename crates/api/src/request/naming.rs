//! Which tenant a request names.
//!
//! A request names its tenant by, in this order: the `Host` equal to a
//! tenant's custom domain; `<slug>.<base domain>`; the `X-Tenant` header; the
//! `?tenant=` query parameter. Every signal present must name the same tenant
//! (else 400). Tenants are looked up through the
//! [`TenantRegistry`](super::registry::TenantRegistry), an in-memory cache.

use std::sync::Arc;

use axum::http::header;
use axum::http::request::Parts;
use tenantry_core::TenantStatus;
use tenantry_db::tenants::Tenant;

use crate::problem::ApiError;
use crate::state::AppState;

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
pub(crate) async fn resolve_named(
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
        TenantStatus::Deleted | TenantStatus::Importing => Err(unknown()),
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

pub(crate) fn query_tenant(query: Option<&str>) -> Option<String> {
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
