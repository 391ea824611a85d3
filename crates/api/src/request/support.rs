//! A support agent acting in a tenant under a grant the tenant gave
//! (`X-Support-Grant: <id>`, API.md "Platform controls").
//!
//! [`check`] runs in the tenant-scoped extractor on every request that
//! carries the header, memoized caller or not: the grant must be this
//! tenant's, be the caller's, be live now (not revoked, not expired) and its
//! agent still registered. The grant comes from the cache under the tenant,
//! whose `support_grant` list a revocation or an extension bumps on every
//! node, so a revoked grant stops working at once; expiry is read against
//! the clock on each request. Under a `read` grant every write is refused
//! before the handler runs, and the transaction is `READ ONLY`, so even a
//! handler that wrote by mistake could not. [`audit`] records every request
//! made under a grant in the tenant's audit log (`support.access`).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderName, Method};
use axum::middleware::Next;
use axum::response::Response;
use chrono::Utc;
use serde_json::json;
use tenantry_cache::PLATFORM;
use tenantry_db::TenantContext;
use tenantry_db::support::{Grant, GrantScope};
use uuid::Uuid;

use super::RequestInfo;
use super::registry::{METADATA_TTL, unshare};
use crate::config::PLATFORM_STATEMENT_TIMEOUT_MS;
use crate::problem::ApiError;
use crate::state::AppState;

/// The header naming the grant a support agent acts under.
pub const X_SUPPORT_GRANT: HeaderName = HeaderName::from_static("x-support-grant");

/// The cache lists of grants (per tenant) and of the agent registry
/// (platform): what a change bumps. Their entries' namespaces are in the
/// list (`<list>:…`), so a bump makes them unreachable.
pub const GRANTS: &str = "support_grant";
pub const AGENTS: &str = "support_agent";
const GRANT_NS: &str = "support_grant:one";
const AGENT_NS: &str = "support_agent:one";

/// A request made under a grant, for the audit entry written after it.
#[derive(Debug, Clone)]
pub struct SupportUse {
    pub grant: Uuid,
    pub agent: Uuid,
    pub method: Method,
    pub path: String,
}

fn refused() -> ApiError {
    ApiError::Forbidden("no live support grant of this tenant for this agent".to_owned())
}

/// The grant `raw` names, if it lets `agent` make this request in `tenant`;
/// 403 otherwise, saying as little as possible about why.
pub async fn check(
    state: &AppState,
    tenant: Uuid,
    agent: Uuid,
    raw: &[u8],
    method: &Method,
) -> Result<Arc<Grant>, ApiError> {
    let id = std::str::from_utf8(raw)
        .ok()
        .and_then(|s| Uuid::parse_str(s.trim()).ok())
        .ok_or_else(refused)?;
    let grant = state
        .cache
        .get_or_load(tenant, GRANT_NS, &id.to_string(), METADATA_TTL, || async {
            // Grants are rows of the tenant's cell.
            let mut tx = tenant_db(state, tenant)
                .await?
                .begin(&TenantContext::tenant(
                    tenant,
                    PLATFORM_STATEMENT_TIMEOUT_MS,
                ))
                .await?;
            let grant = tenantry_db::support::get(&mut tx, tenant, id).await?;
            tx.commit().await?;
            Ok::<_, tenantry_db::DbError>(grant)
        })
        .await
        .map_err(|e| ApiError::from(unshare(e)))?;
    let grant = match grant.as_ref() {
        Some(g) if g.agent_user_id == agent && g.live(Utc::now()) => Arc::new(g.clone()),
        _ => return Err(refused()),
    };
    if !is_agent(state, agent).await? {
        return Err(refused());
    }
    let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if grant.scope == GrantScope::Read && !safe {
        return Err(ApiError::Forbidden(
            "this support grant is read only: it cannot write".to_owned(),
        ));
    }
    Ok(grant)
}

/// Whether `user` is a registered support agent (cached platform-wide;
/// registering or removing one bumps it on every node).
pub async fn is_agent(state: &AppState, user: Uuid) -> Result<bool, ApiError> {
    let found = state
        .cache
        .get_or_load(PLATFORM, AGENT_NS, &user.to_string(), METADATA_TTL, || {
            tenantry_db::support::is_agent(&state.db, user, PLATFORM_STATEMENT_TIMEOUT_MS)
        })
        .await
        .map_err(|e| ApiError::from(unshare(e)))?;
    Ok(*found)
}

/// The middleware that writes `support.access` for each request made under
/// a grant, with its status, once the answer is known. Written in a task of
/// its own so a client that hangs up does not lose the entry.
pub async fn audit(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let info = req.extensions().get::<RequestInfo>().cloned();
    let response = next.run(req).await;
    let used = info
        .as_ref()
        .and_then(|i| i.0.get())
        .and_then(|r| r.support.clone().map(|s| (r.tenant.id, s)));
    if let Some((tenant, used)) = used {
        let status = response.status().as_u16();
        tokio::spawn(async move {
            if let Err(e) = record(&state, tenant, &used, status).await {
                tracing::warn!(%tenant, grant = %used.grant, error = %e, "support access not audited");
            }
        });
    }
    response
}

async fn record(
    state: &AppState,
    tenant: Uuid,
    used: &SupportUse,
    status: u16,
) -> Result<(), tenantry_db::DbError> {
    let mut tx = tenant_db(state, tenant)
        .await?
        .begin(&TenantContext::tenant(
            tenant,
            PLATFORM_STATEMENT_TIMEOUT_MS,
        ))
        .await?;
    let details = json!({
        "grant": used.grant, "agent": used.agent, "method": used.method.as_str(),
        "path": used.path, "status": status,
    });
    tenantry_db::audit::record(
        &mut tx,
        tenant,
        Some(used.agent),
        "support.access",
        Some(&used.grant.to_string()),
        &details,
    )
    .await?;
    tx.commit().await
}

/// The database of `tenant`'s cell (from the cached registry; the control
/// database when it is gone, where nothing of it is found).
async fn tenant_db(
    state: &AppState,
    tenant: Uuid,
) -> Result<tenantry_db::Db, tenantry_db::DbError> {
    let found = state
        .registry
        .by_id(tenant)
        .await
        .map_err(|e| tenantry_db::DbError::Other(anyhow::anyhow!("{e}")))?;
    Ok(match found {
        Some(t) => match state.db_of(&t) {
            Ok(db) => db.clone(),
            Err(_) => {
                return Err(tenantry_db::DbError::Unavailable(format!(
                    "the cell {:?} is not configured on this server",
                    t.cell
                )));
            }
        },
        None => state.db.clone(),
    })
}
