//! `GET /v1/tenant`: the resolved tenant and the caller's membership.

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use tenantry_core::FeatureFlags;
use tenantry_db::members::Member;
use tenantry_db::tenants::Tenant;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::problem::ApiError;
use crate::request::Scope;
use crate::request::memo::Caller;
use crate::state::AppState;

/// This module's routes, each registered once with its OpenAPI operation.
pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(get_tenant))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TenantSummary {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    pub domain: Option<String>,
    pub tier: String,
    pub join_policy: String,
    #[schema(value_type = Object)]
    pub settings: Value,
    /// The platform's default settings overlaid with the tenant's own
    /// (`settings`): each top-level key of the tenant's wins.
    #[schema(value_type = Object)]
    pub effective_settings: Value,
    /// Every feature on or off for this tenant (its tier's flags with its
    /// own on top, rollouts decided), and the tenant's other flags.
    #[schema(value_type = Object)]
    pub features: Value,
    pub member_count: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MembershipView {
    pub role: String,
    #[serde(serialize_with = "crate::json_time::serialize")]
    pub joined_at: DateTime<Utc>,
    pub display_in_feed: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TenantResponse {
    pub tenant: TenantSummary,
    pub membership: Option<MembershipView>,
}

#[utoipa::path(get, path = "/v1/tenant", tag = "tenant",
    responses((status = 200, body = TenantResponse), (status = 404, body = crate::problem::Problem)),
    security(("user_jwt" = [], "tenant" = [])))]
pub async fn get_tenant(mut scope: Scope) -> Result<Response, ApiError> {
    // Served from the cache at steady state: the tenant (with its member
    // count) came with resolution, the membership is cached per user (and
    // counted as that cache's hit even when the kept body is used), and the
    // memoized caller keeps the whole answer.
    let member = scope.membership().await?;
    let caller = scope.caller().cloned();
    let slot = caller.as_deref().map(Caller::tenant_answer);
    let body = match slot.and_then(OnceLock::get) {
        Some(body) => body.clone(),
        None => {
            let body = answer(&scope, member.as_deref()).await?;
            match slot {
                Some(slot) => slot.get_or_init(|| body).clone(),
                None => body,
            }
        }
    };
    // Commits the membership lookup if there was one; sends nothing if not.
    scope.tx.commit().await?;
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// `{"tenant": <summary>, "membership": ...}`, as `TenantResponse`
/// serializes (a test compares the two); the summary is kept per tenant.
async fn answer(scope: &Scope, member: Option<&Member>) -> Result<Bytes, ApiError> {
    let membership = member.map(|m| MembershipView {
        role: m.role.to_string(),
        joined_at: m.created_at,
        display_in_feed: m.display_in_feed,
    });
    let membership = serde_json::to_vec(&membership)
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("membership as JSON: {e}")))?;
    let platform = scope.platform_settings().await?;
    let summary = scope.views().summary(&scope.tenant, &platform, || {
        summarize(&scope.tenant, &platform, &scope.limits.features)
    });
    let mut body = Vec::with_capacity(summary.len() + membership.len() + 32);
    body.extend_from_slice(b"{\"tenant\":");
    body.extend_from_slice(&summary);
    body.extend_from_slice(b",\"membership\":");
    body.extend_from_slice(&membership);
    body.push(b'}');
    Ok(body.into())
}

/// The tenant part of `GET /v1/tenant`; `features` are the tenant's
/// resolved flags (its effective limits').
pub fn summarize(t: &Tenant, platform: &Value, features: &FeatureFlags) -> TenantSummary {
    TenantSummary {
        id: t.id,
        slug: t.slug.clone(),
        name: t.name.clone(),
        domain: t.domain.clone(),
        tier: t.tier.clone(),
        join_policy: t.join_policy.as_str().to_owned(),
        settings: t.settings.clone(),
        effective_settings: tenantry_db::platform::overlay(platform, &t.settings),
        features: tenantry_core::features::effective(features, t.id, &t.features),
        member_count: t.member_count,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::views::TenantViews;

    fn tenant(name: &str) -> Arc<Tenant> {
        Arc::new(Tenant {
            id: Uuid::now_v7(),
            slug: "acme".to_owned(),
            name: name.to_owned(),
            domain: Some("acme.example".to_owned()),
            tier: "pro".to_owned(),
            status: tenantry_core::TenantStatus::Active,
            join_policy: tenantry_core::JoinPolicy::Open,
            owner_user_id: Uuid::now_v7(),
            settings: serde_json::json!({"theme": "light", "welcome": "Hi \"there\""}),
            features: serde_json::json!({"events": true}),
            limits: tenantry_core::LimitOverrides::default(),
            api_version: crate::versions::newest().to_owned(),
            cell: "main".to_owned(),
            member_count: 42,
            post_count: 7,
            storage_bytes: 1024,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        })
    }

    #[test]
    fn the_views_of_tenants_no_longer_held_are_swept_out() {
        let views = TenantViews::default();
        let platform = Arc::new(serde_json::json!({}));
        let held: Vec<Arc<Tenant>> = (0..10).map(|_| tenant("Held")).collect();
        for t in &held {
            views.summary(t, &platform, || {
                summarize(t, &platform, &FeatureFlags::default())
            });
        }
        // Tenants the cache let go of (idle): their records are dropped.
        for _ in 0..3_000 {
            let t = tenant("Idle");
            views.summary(&t, &platform, || {
                summarize(&t, &platform, &FeatureFlags::default())
            });
        }
        assert!(views.len() < 1_100, "{} views kept", views.len());
        // The held ones are still served from their memo.
        for t in &held {
            let json = views.summary(t, &platform, || -> TenantSummary {
                panic!("a held tenant's view was made again")
            });
            assert!(!json.is_empty());
        }
    }

    #[test]
    fn the_body_is_what_tenant_response_serializes() {
        let views = TenantViews::default();
        let t = tenant("Acme");
        let platform = Arc::new(serde_json::json!({"theme": "dark", "locale": "en"}));
        let summary = views.summary(&t, &platform, || {
            summarize(&t, &platform, &FeatureFlags::default())
        });
        let expected = serde_json::to_value(summarize(&t, &platform, &FeatureFlags::default()))
            .expect("serializes");
        let ours: Value = serde_json::from_slice(&summary).expect("valid JSON");
        assert_eq!(ours, expected);
    }

    #[test]
    fn a_memo_lasts_while_the_tenant_and_the_platform_are_the_same() {
        let views = TenantViews::default();
        let (a, platform) = (tenant("Acme"), Arc::new(serde_json::json!({})));
        let made = std::cell::Cell::new(0);
        let make = |t: &Arc<Tenant>, p: &Arc<Value>| {
            made.set(made.get() + 1);
            summarize(t, p, &FeatureFlags::default())
        };
        views.summary(&a, &platform, || make(&a, &platform));
        views.summary(&a, &platform, || make(&a, &platform));
        assert_eq!(made.get(), 1);
        // A new record of the same tenant (renamed): made again, with the
        // new name.
        let renamed = tenant("Acme Climbing");
        let json = views.summary(&renamed, &platform, || make(&renamed, &platform));
        assert_eq!(made.get(), 2);
        assert!(String::from_utf8_lossy(&json).contains("Acme Climbing"));
        // New platform settings: made again.
        let platform2 = Arc::new(serde_json::json!({"theme": "light"}));
        views.summary(&renamed, &platform2, || make(&renamed, &platform2));
        assert_eq!(made.get(), 3);
    }
}
