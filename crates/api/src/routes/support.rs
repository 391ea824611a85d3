//! Support access (API.md, "Platform controls"): the platform admin
//! registers support agents; a tenant's owner or admins grant one of them
//! access to the tenant, for at most eight hours, with a reason; extend and
//! revoke it; and see what was done under it. How an agent then acts:
//! [`crate::request::support`].

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tenantry_cache::PLATFORM;
use tenantry_core::Role;
use tenantry_db::support::{self, Extended, Grant, GrantScope, MAX_GRANT_MINUTES};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::audit::AuditEntry;
use super::{Checks, text};
use crate::config::PLATFORM_STATEMENT_TIMEOUT_MS;
use crate::pagination::{Page, PageParams, TimeKey};
use crate::problem::{ApiError, FieldError, Json, Path, Query};
use crate::request::support::{AGENTS, GRANTS};
use crate::request::{PlatformAdmin, Scope};
use crate::state::AppState;

/// This module's routes, each registered once with its OpenAPI operation.
pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(add_agent, remove_agent))
        .routes(routes!(create_grant, list_grants))
        .routes(routes!(revoke_grant))
        .routes(routes!(extend_grant))
        .routes(routes!(activity))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AgentView {
    pub user_id: Uuid,
    /// False when the user was already an agent.
    pub created: bool,
}

/// Registers a user as a support agent (the user is provisioned if new).
#[utoipa::path(post, path = "/v1/admin/support-agents/{user_id}", tag = "support",
    responses((status = 201, body = AgentView), (status = 200, body = AgentView, description = "already an agent")),
    security(("admin_token" = [])))]
pub async fn add_agent(
    _: PlatformAdmin,
    State(state): State<Arc<AppState>>,
    Path(user_id): Path<Uuid>,
) -> Result<(StatusCode, Json<AgentView>), ApiError> {
    let created = support::add_agent(&state.db, user_id, PLATFORM_STATEMENT_TIMEOUT_MS).await?;
    state.cache.bump_list(PLATFORM, AGENTS).await;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(AgentView { user_id, created })))
}

/// Removes a support agent: every grant they hold stops working at once.
#[utoipa::path(delete, path = "/v1/admin/support-agents/{user_id}", tag = "support",
    responses((status = 204), (status = 404, body = crate::problem::Problem)),
    security(("admin_token" = [])))]
pub async fn remove_agent(
    _: PlatformAdmin,
    State(state): State<Arc<AppState>>,
    Path(user_id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    let removed = support::remove_agent(&state.db, user_id, PLATFORM_STATEMENT_TIMEOUT_MS).await?;
    state.cache.bump_list(PLATFORM, AGENTS).await;
    if removed {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("support agent"))
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GrantView {
    pub id: Uuid,
    pub agent_user_id: Uuid,
    /// `read` or `write`.
    pub scope: String,
    pub reason: String,
    pub granted_by: Uuid,
    #[serde(serialize_with = "crate::json_time::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::json_time::serialize")]
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// Whether the agent can use it now.
    pub live: bool,
}

impl From<Grant> for GrantView {
    fn from(g: Grant) -> Self {
        Self {
            live: g.live(Utc::now()),
            id: g.id,
            agent_user_id: g.agent_user_id,
            scope: g.scope.as_str().to_owned(),
            reason: g.reason,
            granted_by: g.granted_by,
            created_at: g.created_at,
            expires_at: g.expires_at,
            revoked_at: g.revoked_at,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGrant {
    pub agent_user_id: Uuid,
    /// `read` (every write refused) or `write`.
    #[schema(schema_with = grant_scope)]
    pub scope: String,
    /// Why access is given: shown to the tenant's admins and in the audit log.
    #[schema(schema_with = crate::openapi::text::<1000>)]
    pub reason: String,
    /// 1 to 480 (8 hours).
    #[serde(deserialize_with = "whole_minutes")]
    #[schema(value_type = i64, minimum = 1, maximum = 480)]
    pub ttl_minutes: i64,
}

fn grant_scope() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(["read", "write"]))
        .build()
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendGrant {
    /// How much later it expires: 1 to 480, and at most 8 hours from now.
    #[serde(deserialize_with = "whole_minutes")]
    #[schema(value_type = i64, minimum = 1, maximum = 480)]
    pub ttl_minutes: i64,
}

/// A whole number of minutes, written `90` or `90.0` (JSON does not tell
/// them apart; JSON Schema's `integer` accepts both).
fn whole_minutes<'de, D: serde::Deserializer<'de>>(de: D) -> Result<i64, D::Error> {
    let n = serde_json::Number::deserialize(de)?;
    n.as_i64()
        .or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 1e15)
                .map(|f| f as i64)
        })
        .ok_or_else(|| serde::de::Error::custom("must be a whole number of minutes"))
}

fn ttl(minutes: i64) -> Result<i64, FieldError> {
    if (1..=MAX_GRANT_MINUTES).contains(&minutes) {
        Ok(minutes)
    } else {
        Err(FieldError::new(
            "ttl_minutes",
            format!("must be from 1 to {MAX_GRANT_MINUTES}"),
        ))
    }
}

/// The tenant's owner or an admin, acting for themselves: a support agent
/// under a grant cannot manage grants.
async fn grantor(scope: &mut Scope) -> Result<(), ApiError> {
    if scope.support().is_some() {
        return Err(ApiError::Forbidden(
            "support access cannot manage support access".to_owned(),
        ));
    }
    scope.require(Role::Admin).await?;
    Ok(())
}

/// Grants a support agent access to this tenant.
#[utoipa::path(post, path = "/v1/support/grants", tag = "support", request_body = CreateGrant,
    responses((status = 201, body = GrantView), (status = 403, body = crate::problem::Problem),
              (status = 422, body = crate::problem::Problem)),
    security(("user_jwt" = [], "tenant" = [])))]
pub async fn create_grant(
    mut scope: Scope,
    State(state): State<Arc<AppState>>,
    Json(body): Json<CreateGrant>,
) -> Result<(StatusCode, Json<GrantView>), ApiError> {
    let mut checks = Checks::default();
    let kind = checks.check(
        GrantScope::parse(&body.scope)
            .ok_or_else(|| FieldError::new("scope", "must be read or write")),
    );
    let reason = checks.check(text("reason", &body.reason, 1_000));
    let minutes = checks.check(ttl(body.ttl_minutes));
    checks.finish()?;
    let (Some(kind), Some(reason), Some(minutes)) = (kind, reason, minutes) else {
        unreachable!("every check passed");
    };
    grantor(&mut scope).await?;
    if !crate::request::support::is_agent(&state, body.agent_user_id).await? {
        return Err(ApiError::validation(
            "agent_user_id",
            "is not a registered support agent",
        ));
    }
    let (tenant, user) = (scope.tenant.id, scope.user.id);
    let grant = support::create(
        &mut scope.tx,
        tenant,
        body.agent_user_id,
        kind,
        &reason,
        user,
        minutes,
    )
    .await?;
    audit(&mut scope, "support.grant.create", &grant).await?;
    scope.tx.commit().await?;
    Ok((StatusCode::CREATED, Json(grant.into())))
}

async fn audit(scope: &mut Scope, action: &str, grant: &Grant) -> Result<(), ApiError> {
    let (tenant, user) = (scope.tenant.id, scope.user.id);
    let details = json!({
        "agent": grant.agent_user_id, "scope": grant.scope.as_str(), "reason": grant.reason,
        "expires_at": grant.expires_at, "revoked_at": grant.revoked_at,
    });
    tenantry_db::audit::record(
        &mut scope.tx,
        tenant,
        Some(user),
        action,
        Some(&grant.id.to_string()),
        &details,
    )
    .await?;
    Ok(())
}

/// The tenant's support grants, newest first.
#[utoipa::path(get, path = "/v1/support/grants", tag = "support", params(PageParams),
    responses((status = 200, body = Page<GrantView>), (status = 403, body = crate::problem::Problem)),
    security(("user_jwt" = [], "tenant" = [])))]
pub async fn list_grants(
    mut scope: Scope,
    Query(page): Query<PageParams>,
) -> Result<Json<Page<GrantView>>, ApiError> {
    let limit = page.limit()?;
    let tenant = scope.tenant.id;
    let after: Option<TimeKey> = page.after(tenant, "support-grants")?;
    grantor(&mut scope).await?;
    let rows = support::list(&mut scope.tx, tenant, after.map(Into::into), limit + 1).await?;
    scope.tx.commit().await?;
    Ok(Json(Page::from_rows(
        rows,
        limit,
        tenant,
        "support-grants",
        |g| TimeKey::from(g.keyset()),
        GrantView::from,
    )))
}

/// Revokes a grant: the agent's next request is refused, on every node.
#[utoipa::path(delete, path = "/v1/support/grants/{id}", tag = "support",
    responses((status = 204), (status = 403, body = crate::problem::Problem),
              (status = 404, body = crate::problem::Problem)),
    security(("user_jwt" = [], "tenant" = [])))]
pub async fn revoke_grant(mut scope: Scope, Path(id): Path<Uuid>) -> Result<StatusCode, ApiError> {
    grantor(&mut scope).await?;
    let tenant = scope.tenant.id;
    let grant = support::revoke(&mut scope.tx, tenant, id)
        .await?
        .ok_or_else(|| ApiError::not_found("support grant"))?;
    audit(&mut scope, "support.grant.revoke", &grant).await?;
    let invalidation = scope.invalidation(GRANTS);
    scope.tx.commit().await?;
    invalidation.announce().await;
    Ok(StatusCode::NO_CONTENT)
}

/// Extends a live grant, to at most 8 hours from now.
#[utoipa::path(post, path = "/v1/support/grants/{id}/extend", tag = "support",
    request_body = ExtendGrant,
    responses((status = 200, body = GrantView), (status = 403, body = crate::problem::Problem),
              (status = 404, body = crate::problem::Problem),
              (status = 409, body = crate::problem::Problem, description = "revoked or expired"),
              (status = 422, body = crate::problem::Problem)),
    security(("user_jwt" = [], "tenant" = [])))]
pub async fn extend_grant(
    mut scope: Scope,
    Path(id): Path<Uuid>,
    Json(body): Json<ExtendGrant>,
) -> Result<Json<GrantView>, ApiError> {
    let minutes = ttl(body.ttl_minutes).map_err(|e| ApiError::Validation(vec![e]))?;
    grantor(&mut scope).await?;
    let tenant = scope.tenant.id;
    let grant = match support::extend(&mut scope.tx, tenant, id, minutes).await? {
        Extended::Done(grant) => grant,
        Extended::NotFound => return Err(ApiError::not_found("support grant")),
        Extended::NotLive(_) => {
            return Err(ApiError::Conflict(
                "this grant was revoked or has expired: grant access anew".to_owned(),
            ));
        }
        Extended::PastTheCap(_) => {
            return Err(ApiError::validation(
                "ttl_minutes",
                format!("a grant runs at most {MAX_GRANT_MINUTES} minutes from now"),
            ));
        }
    };
    audit(&mut scope, "support.grant.extend", &grant).await?;
    let invalidation = scope.invalidation(GRANTS);
    scope.tx.commit().await?;
    invalidation.announce().await;
    Ok(Json(grant.into()))
}

/// What support did in this tenant: grants given, extended and revoked, and
/// every request made under one (`support.access`), newest first.
#[utoipa::path(get, path = "/v1/support/activity", tag = "support", params(PageParams),
    responses((status = 200, body = Page<AuditEntry>), (status = 403, body = crate::problem::Problem)),
    security(("user_jwt" = [], "tenant" = [])))]
pub async fn activity(
    mut scope: Scope,
    Query(page): Query<PageParams>,
) -> Result<Json<Page<AuditEntry>>, ApiError> {
    let limit = page.limit()?;
    let tenant = scope.tenant.id;
    let after: Option<TimeKey> = page.after(tenant, "support-activity")?;
    grantor(&mut scope).await?;
    let rows = support::activity(&mut scope.tx, tenant, after.map(Into::into), limit + 1).await?;
    scope.tx.commit().await?;
    Ok(Json(Page::from_rows(
        rows,
        limit,
        tenant,
        "support-activity",
        |e| TimeKey::from(e.keyset()),
        AuditEntry::from,
    )))
}
