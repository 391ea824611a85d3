//! Members of a tenant and their roles.

use std::sync::Arc;

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tenantry_core::{JoinPolicy, Role};
use tenantry_db::DbError;
use tenantry_db::members::{self, Member};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::json_body::JsonBody;
use crate::pagination::{Page, PageParams};
use crate::problem::{ApiError, Json, Path, Query};
use crate::request::Scope;
use crate::state::AppState;

/// The list the cached member pages belong to (a namespace's part before
/// `:`): bumped when a member's email or name changes. Membership changes
/// bump the whole tenant.
pub const LISTS: &str = "members";

/// This module's routes, each registered once with its OpenAPI operation.
pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(add_member, list_members))
        .routes(routes!(join))
        .routes(routes!(change_role, remove_member))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MemberView {
    pub user_id: Uuid,
    pub role: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub display_in_feed: bool,
    pub joined_at: DateTime<Utc>,
}

impl From<Member> for MemberView {
    fn from(m: Member) -> Self {
        Self {
            user_id: m.user_id,
            role: m.role.to_string(),
            email: m.email,
            display_name: m.display_name,
            display_in_feed: m.display_in_feed,
            joined_at: m.created_at,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    pub user_id: Uuid,
    /// owner, admin, moderator or member: at most the caller's own role.
    #[schema(schema_with = crate::openapi::role)]
    pub role: String,
}

fn parse_role(raw: &str) -> Result<Role, ApiError> {
    Role::parse(raw).map_err(|e| ApiError::validation("role", e.to_string()))
}

fn already_member(err: DbError) -> ApiError {
    match err {
        DbError::Conflict { .. } => ApiError::Conflict("already a member".to_owned()),
        other => other.into(),
    }
}

/// Admins add members; nobody grants a role above their own.
#[utoipa::path(post, path = "/v1/members", tag = "members", request_body = AddMember,
    responses((status = 201, body = MemberView), (status = 403, body = crate::problem::Problem),
              (status = 409, body = crate::problem::Problem)),
    security(("user_jwt" = [], "tenant" = [])))]
pub async fn add_member(
    mut scope: Scope,
    Json(body): Json<AddMember>,
) -> Result<(StatusCode, Json<MemberView>), ApiError> {
    let actor = scope.require(Role::Admin).await?;
    let role = parse_role(&body.role)?;
    if role > actor {
        return Err(ApiError::Forbidden(format!(
            "only an owner can grant the {role} role"
        )));
    }
    // Checked first so an existing member is a conflict even in a full tenant.
    if members::role_of(&mut scope.tx, scope.tenant.id, body.user_id)
        .await?
        .is_some()
    {
        return Err(ApiError::Conflict("already a member".to_owned()));
    }
    let max = scope.limits.max_members;
    let member = members::add(&mut scope.tx, scope.tenant.id, body.user_id, role, max)
        .await
        .map_err(already_member)?;
    audit(
        &mut scope,
        "member.add",
        body.user_id,
        json!({ "role": role.as_str() }),
    )
    .await?;
    let changed = scope.invalidation("");
    scope.tx.commit().await?;
    changed.announce().await;
    Ok((StatusCode::CREATED, Json(member.into())))
}

/// Joins a tenant whose join policy is `open`.
#[utoipa::path(post, path = "/v1/members/me", tag = "members",
    responses((status = 201, body = MemberView), (status = 403, body = crate::problem::Problem),
              (status = 409, body = crate::problem::Problem)),
    security(("user_jwt" = [], "tenant" = [])))]
pub async fn join(mut scope: Scope) -> Result<(StatusCode, Json<MemberView>), ApiError> {
    if scope.role().await?.is_some() {
        return Err(ApiError::Conflict("already a member".to_owned()));
    }
    if scope.tenant.join_policy != JoinPolicy::Open {
        return Err(ApiError::Forbidden(
            "this tenant is invite-only: an admin must add you".to_owned(),
        ));
    }
    let max = scope.limits.max_members;
    let member = members::add(
        &mut scope.tx,
        scope.tenant.id,
        scope.user.id,
        Role::Member,
        max,
    )
    .await
    .map_err(already_member)?;
    let me = scope.user.id;
    audit(&mut scope, "member.join", me, json!({})).await?;
    let changed = scope.invalidation("");
    scope.tx.commit().await?;
    changed.announce().await;
    Ok((StatusCode::CREATED, Json(member.into())))
}

#[utoipa::path(get, path = "/v1/members", tag = "members", params(PageParams),
    responses((status = 200, body = Page<MemberView>)), security(("user_jwt" = [], "tenant" = [])))]
pub async fn list_members(
    mut scope: Scope,
    Query(page): Query<PageParams>,
) -> Result<JsonBody<Page<MemberView>>, ApiError> {
    let limit = page.limit()?;
    let tenant = scope.tenant.id;
    let after: Option<Uuid> = page.after(tenant, "members")?;
    let (viewer, me) = (scope.viewer(), scope.user.id);
    let ttl = std::time::Duration::from_secs(scope.limits.cache_ttl_secs.into());
    let (role, rows) = if after.is_none() && !ttl.is_zero() {
        // The first page, the same rows for every member (what each may see
        // of them is decided below), cached for the tier's cache TTL until a
        // membership changes (which moves the tenant) or a member's email or
        // name does (which moves the member lists of their communities).
        let role = scope.member().await?;
        let rows = scope
            .shared_first_page("members:first", limit + 1, ttl, move |tx| async move {
                members::list_for_member_and_commit(tx, tenant, viewer, None, limit + 1)
                    .await
                    .map(|(_, rows)| rows)
            })
            .await?;
        (role, rows)
    } else {
        // Membership, page and commit in one round trip.
        let (role, rows) =
            members::list_for_member_and_commit(scope.tx, tenant, viewer, after, limit + 1).await?;
        (role.ok_or_else(crate::request::not_a_member)?, rows)
    };
    // Email addresses are for the tenant's admins (and each member's own).
    let view = |m: Member| {
        let own = m.user_id == me;
        let mut v = MemberView::from(m);
        if role < Role::Admin && !own {
            v.email = None;
        }
        v
    };
    Ok(JsonBody(Page::from_rows(
        rows,
        limit,
        tenant,
        "members",
        |m| m.user_id,
        view,
    )))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeRole {
    #[schema(schema_with = crate::openapi::role)]
    pub role: String,
}

/// Whether `actor` may change or remove a member who has `target`: owners
/// may touch anyone, admins only those below them.
fn may_manage(actor: Role, target: Role) -> bool {
    actor == Role::Owner || (actor >= Role::Admin && target < actor)
}

#[utoipa::path(patch, path = "/v1/members/{user_id}", tag = "members", request_body = ChangeRole,
    responses((status = 200, body = MemberView), (status = 403, body = crate::problem::Problem),
              (status = 404, body = crate::problem::Problem), (status = 409, body = crate::problem::Problem)),
    security(("user_jwt" = [], "tenant" = [])))]
pub async fn change_role(
    mut scope: Scope,
    Path(user_id): Path<Uuid>,
    Json(body): Json<ChangeRole>,
) -> Result<Json<MemberView>, ApiError> {
    let actor = scope.require(Role::Admin).await?;
    let role = parse_role(&body.role)?;
    let tenant = scope.tenant.id;
    let target = members::role_of(&mut scope.tx, tenant, user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("member"))?;
    if !may_manage(actor, target) || role > actor {
        return Err(ApiError::Forbidden(
            "you may not change this member's role to that".to_owned(),
        ));
    }
    if role != Role::Owner {
        keep_the_owner(&scope, user_id)?;
    }
    if target == Role::Owner && role != Role::Owner {
        ensure_another_owner(&mut scope, tenant).await?;
    }
    let member = members::set_role(&mut scope.tx, tenant, user_id, role)
        .await?
        .ok_or_else(|| ApiError::not_found("member"))?;
    if role != Role::Owner {
        tenantry_db::lifecycle::owner::hand_on(&mut scope.tx, tenant, user_id).await?;
    }
    audit(
        &mut scope,
        "member.role",
        user_id,
        json!({ "from": target.as_str(), "to": role.as_str() }),
    )
    .await?;
    let changed = scope.invalidation("");
    scope.tx.commit().await?;
    changed.announce().await;
    Ok(Json(member.into()))
}

/// The tenant's owner (`owner_user_id`) is never removed or demoted by
/// anyone else, other owners included: ownership moves only by transfer
/// (`POST /v1/tenant/owner`). The owner may step down or leave themselves
/// when another owner remains, who then becomes the tenant's owner
/// ([`tenantry_db::lifecycle::owner::hand_on`]).
fn keep_the_owner(scope: &Scope, user_id: Uuid) -> Result<(), ApiError> {
    if user_id == scope.tenant.owner_user_id && scope.user.id != user_id {
        return Err(ApiError::Forbidden(
            "the tenant's owner cannot be removed or demoted by anyone else: ownership moves \
             only by transfer (POST /v1/tenant/owner)"
                .to_owned(),
        ));
    }
    Ok(())
}

/// A tenant always keeps at least one owner.
async fn ensure_another_owner(scope: &mut Scope, tenant: Uuid) -> Result<(), ApiError> {
    if members::lock_owners(&mut scope.tx, tenant).await? <= 1 {
        return Err(ApiError::Conflict(
            "a tenant needs at least one owner: make someone else owner first".to_owned(),
        ));
    }
    Ok(())
}

/// Admins remove members below them; anyone may leave.
#[utoipa::path(delete, path = "/v1/members/{user_id}", tag = "members",
    responses((status = 204), (status = 403, body = crate::problem::Problem),
              (status = 404, body = crate::problem::Problem), (status = 409, body = crate::problem::Problem)),
    security(("user_jwt" = [], "tenant" = [])))]
pub async fn remove_member(
    mut scope: Scope,
    Path(user_id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    let actor = scope.member().await?;
    let tenant = scope.tenant.id;
    let target = members::role_of(&mut scope.tx, tenant, user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("member"))?;
    let leaving = user_id == scope.user.id;
    keep_the_owner(&scope, user_id)?;
    if !leaving && !may_manage(actor, target) {
        return Err(ApiError::Forbidden(
            "you may not remove this member".to_owned(),
        ));
    }
    if target == Role::Owner {
        ensure_another_owner(&mut scope, tenant).await?;
    }
    if !members::remove(&mut scope.tx, tenant, user_id).await? {
        return Err(ApiError::not_found("member"));
    }
    tenantry_db::lifecycle::owner::hand_on(&mut scope.tx, tenant, user_id).await?;
    let action = if leaving {
        "member.leave"
    } else {
        "member.remove"
    };
    audit(
        &mut scope,
        action,
        user_id,
        json!({ "role": target.as_str() }),
    )
    .await?;
    let changed = scope.invalidation("");
    scope.tx.commit().await?;
    changed.announce().await;
    Ok(StatusCode::NO_CONTENT)
}

/// Records a membership change in the audit log, in the change's transaction.
async fn audit(
    scope: &mut Scope,
    action: &str,
    member: Uuid,
    details: serde_json::Value,
) -> Result<(), ApiError> {
    let (tenant, actor) = (scope.tenant.id, scope.user.id);
    tenantry_db::audit::record(
        &mut scope.tx,
        tenant,
        Some(actor),
        action,
        Some(&member.to_string()),
        &details,
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_higher_roles_manage_lower_ones() {
        assert!(may_manage(Role::Owner, Role::Owner));
        assert!(may_manage(Role::Admin, Role::Moderator));
        assert!(!may_manage(Role::Admin, Role::Admin));
        assert!(!may_manage(Role::Moderator, Role::Member));
    }
}
