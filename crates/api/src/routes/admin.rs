//! The platform admin API: the tenant registry.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tenantry_core::{Domain, JoinPolicy, LimitOverrides, TenantSlug, TenantStatus};
use tenantry_db::tenants::{self, Lookup, NewTenant, Tenant, TenantPatch};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{Checks, double_option, no_nul, text};
use crate::config::PLATFORM_STATEMENT_TIMEOUT_MS;
use crate::pagination::{Page, PageParams};
use crate::problem::{ApiError, FieldError, Json, Path, Query};
use crate::request::PlatformAdmin;
use crate::state::AppState;

/// This module's routes, each registered once with its OpenAPI operation.
pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(create_tenant, list_tenants))
        .routes(routes!(get_tenant, patch_tenant, delete_tenant))
        .routes(routes!(usage))
        .routes(routes!(get_settings, patch_settings))
}

/// A tenant as the admin API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TenantView {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    pub domain: Option<String>,
    pub tier: String,
    #[schema(value_type = String, example = "active")]
    pub status: TenantStatus,
    #[schema(value_type = String, example = "invite")]
    pub join_policy: JoinPolicy,
    pub owner_user_id: Uuid,
    #[schema(value_type = Object)]
    pub settings: Value,
    /// The tenant's own feature flags and application flags, as set.
    #[schema(value_type = Object)]
    pub features: Value,
    /// Every feature on or off for this tenant: its tier's flags, its own
    /// on top, rollouts decided (what its requests are held to).
    #[schema(value_type = Object)]
    pub effective_features: Value,
    /// The tenant's own overrides of its tier's limits.
    #[schema(value_type = Object)]
    pub limits: LimitOverrides,
    /// The limits in force: the tier's, with the overrides.
    #[schema(value_type = Object)]
    pub effective_limits: tenantry_core::Limits,
    /// The API version its requests get when they name none.
    pub api_version: String,
    /// The cell (database) holding the tenant's rows (`main` unless placed
    /// elsewhere: API.md, "Cells").
    pub cell: String,
    pub member_count: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl TenantView {
    fn new(state: &AppState, t: Tenant) -> Self {
        let effective_limits = state.limits_of(&t);
        let effective_features =
            tenantry_core::features::effective(&effective_limits.features, t.id, &t.features);
        Self {
            id: t.id,
            slug: t.slug,
            name: t.name,
            domain: t.domain,
            tier: t.tier,
            status: t.status,
            join_policy: t.join_policy,
            owner_user_id: t.owner_user_id,
            settings: t.settings,
            features: t.features,
            effective_features,
            limits: t.limits,
            effective_limits,
            api_version: t.api_version,
            cell: t.cell,
            member_count: t.member_count,
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    #[schema(schema_with = crate::openapi::slug)]
    pub slug: String,
    #[schema(schema_with = crate::openapi::text::<200>)]
    pub name: String,
    /// A tier of the tier table; default its default tier.
    pub tier: Option<String>,
    /// A custom domain, not under the platform's base domain.
    #[schema(schema_with = crate::openapi::domain_or_null)]
    pub domain: Option<String>,
    pub owner_user_id: Uuid,
    #[schema(value_type = Option<crate::openapi::JsonObject>)]
    pub settings: Option<Value>,
    #[schema(value_type = Option<crate::openapi::JsonObject>)]
    pub features: Option<Value>,
    /// `open` or `invite` (default).
    #[schema(schema_with = join_policy_or_null)]
    pub join_policy: Option<String>,
    /// The API version its requests get when they name none; default the
    /// newest.
    #[schema(schema_with = api_version_or_null)]
    pub api_version: Option<String>,
    /// The cell to place it in (one of `GET /v1/admin/cells`); default the
    /// cell with the fewest tenants.
    #[schema(schema_with = cell_or_null)]
    pub cell: Option<String>,
}

fn cell_or_null() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .min_length(Some(1))
        .max_length(Some(32))
        .build()
}

/// A cell this server has, by name, else a 422 on `cell`.
pub(crate) fn known_cell<'a>(
    state: &'a AppState,
    name: &str,
) -> Result<&'a Arc<crate::cells::Cell>, FieldError> {
    state.cells.get(name).ok_or_else(|| {
        let known: Vec<&str> = state.cells.iter().map(|c| c.name.as_str()).collect();
        FieldError::new(
            "cell",
            format!("no cell is called {name:?} (cells: {})", known.join(", ")),
        )
    })
}

fn api_version_or_null() -> utoipa::openapi::Object {
    let known: Vec<&str> = crate::versions::VERSIONS.iter().map(|v| v.date).collect();
    crate::openapi::one_of_or_null(&known)
}

/// A known API version.
fn api_version(value: &str) -> Result<String, FieldError> {
    crate::versions::find(value)
        .map(|v| v.date.to_owned())
        .ok_or_else(|| FieldError::new("api_version", crate::versions::unknown(value).to_string()))
}

fn join_policy_or_null() -> utoipa::openapi::Object {
    crate::openapi::one_of_or_null(&["open", "invite"])
}

fn status_or_null() -> utoipa::openapi::Object {
    crate::openapi::one_of_or_null(&["active", "suspended"])
}

/// The schema of `limits` in a PATCH: the overrides by name, each a whole
/// number (at least 1 for rates, bursts, concurrency, timeouts and weights)
/// or null to drop the override.
fn limits_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, SchemaType, Type};
    let number = |min: u64, max: u64| {
        ObjectBuilder::new()
            .schema_type(SchemaType::from_iter([Type::Integer, Type::Null]))
            .minimum(Some(min))
            .maximum(Some(max))
            .build()
    };
    let u32_max = u64::from(u32::MAX);
    let mut limits = ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
        .additional_properties(Some(AdditionalProperties::FreeForm(false)));
    for name in [
        "rate_per_sec",
        "burst",
        "user_rate_per_sec",
        "db_concurrency",
        "statement_timeout_ms",
        "weight",
    ] {
        limits = limits.property(name, number(1, u32_max));
    }
    limits = limits.property("cache_ttl_secs", number(0, u32_max));
    for name in [
        "max_members",
        "max_posts",
        "max_storage_mb",
        "analytics_events_per_day",
    ] {
        limits = limits.property(name, number(0, u64::MAX));
    }
    limits.build()
}

/// A tenant's `features`: an object whose known features are each `true`,
/// `false`, `{"rollout": 0–100}` or `null` (other names are the
/// application's own flags, kept as they are).
fn features(value: Option<Value>) -> Result<Value, FieldError> {
    let value = object("features", value)?;
    tenantry_core::features::validate_overrides(&value)
        .map_err(|(name, why)| FieldError::new(format!("features.{name}"), why))?;
    Ok(value)
}

fn object(field: &str, value: Option<Value>) -> Result<Value, FieldError> {
    match value {
        None => Ok(Value::Object(Default::default())),
        Some(v @ Value::Object(_)) => {
            no_nul(field, &v)?;
            Ok(v)
        }
        Some(_) => Err(FieldError::new(field, "must be a JSON object")),
    }
}

/// A custom domain, which must not lie under the platform's base domain:
/// there it could take over another tenant's subdomain (domains win).
fn custom_domain(state: &AppState, raw: &str) -> Result<String, FieldError> {
    let domain = Domain::parse(raw).map_err(|e| FieldError::new("domain", e.to_string()))?;
    if let Some(base) = &state.base_domain {
        let d = domain.as_str();
        if d == base || d.ends_with(&format!(".{base}")) {
            return Err(FieldError::new(
                "domain",
                format!("a custom domain must not be under the platform's base domain {base}"),
            ));
        }
    }
    Ok(domain.to_string())
}

fn conflict(err: tenantry_db::DbError) -> ApiError {
    match &err {
        tenantry_db::DbError::Conflict { constraint } if constraint.contains("slug") => {
            ApiError::Conflict("a tenant with this slug already exists".to_owned())
        }
        tenantry_db::DbError::Conflict { constraint } if constraint.contains("domain") => {
            ApiError::Conflict("another tenant already uses this domain".to_owned())
        }
        _ => err.into(),
    }
}

/// Creates a tenant with its owner as first member.
#[utoipa::path(post, path = "/v1/admin/tenants", tag = "admin", request_body = CreateTenant,
    responses((status = 201, body = TenantView), (status = 409, body = crate::problem::Problem),
              (status = 422, body = crate::problem::Problem)),
    security(("admin_token" = [])))]
pub async fn create_tenant(
    _: PlatformAdmin,
    State(state): State<Arc<AppState>>,
    Json(body): Json<CreateTenant>,
) -> Result<(StatusCode, Json<TenantView>), ApiError> {
    let tiers = state.tiers.load();
    let mut checks = Checks::default();
    let slug = checks
        .check(TenantSlug::parse(&body.slug).map_err(|e| FieldError::new("slug", e.to_string())));
    let name = checks.check(text("name", &body.name, 200));
    let tier = checks.check(match &body.tier {
        None => Ok(tiers.default_name()),
        Some(t) => tiers
            .parse_name(t)
            .map_err(|e| FieldError::new("tier", e.to_string())),
    });
    let domain = checks.check(
        body.domain
            .as_deref()
            .map(|d| custom_domain(&state, d))
            .transpose(),
    );
    let settings = checks.check(object("settings", body.settings));
    let features = checks.check(features(body.features));
    let join_policy = checks.check(
        body.join_policy
            .as_deref()
            .map(JoinPolicy::parse)
            .transpose()
            .map_err(|e| FieldError::new("join_policy", e.to_string())),
    );
    let api_version = checks.check(
        body.api_version
            .as_deref()
            .map_or_else(|| Ok(crate::versions::newest().to_owned()), api_version),
    );
    let cell = checks.check(
        body.cell
            .as_deref()
            .map(|name| known_cell(&state, name).cloned())
            .transpose(),
    );
    checks.finish()?;
    let (Some(api_version), Some(cell)) = (api_version, cell) else {
        unreachable!("every check passed");
    };
    let (
        Some(slug),
        Some(name),
        Some(tier),
        Some(domain),
        Some(settings),
        Some(features),
        Some(join_policy),
    ) = (slug, name, tier, domain, settings, features, join_policy)
    else {
        unreachable!("every check passed");
    };
    let new = NewTenant {
        slug: slug.to_string(),
        name,
        tier: tier.to_string(),
        domain,
        owner_user_id: body.owner_user_id,
        settings,
        features,
        join_policy: join_policy.unwrap_or_default(),
        api_version,
    };
    let cell = match cell {
        Some(cell) => cell,
        // One cell: no question to ask the directory.
        None if state.cells.is_single() => state
            .cells
            .get(crate::cells::MAIN)
            .expect("there is always the cell main")
            .clone(),
        None => {
            let loads = tenants::per_cell(&state.db, PLATFORM_STATEMENT_TIMEOUT_MS).await?;
            state.cells.least_loaded(&loads).clone()
        }
    };
    let tenant = if cell.is_main() {
        tenants::create(&state.db, &new, PLATFORM_STATEMENT_TIMEOUT_MS).await
    } else {
        tenants::create_in_cell(
            &state.db,
            &cell.name,
            &cell.db,
            &new,
            PLATFORM_STATEMENT_TIMEOUT_MS,
        )
        .await
    }
    .map_err(conflict)?;
    state.registry.created(&tenant).await;
    tracing::info!(tenant = %tenant.id, slug = %tenant.slug, "tenant created");
    Ok((StatusCode::CREATED, Json(TenantView::new(&state, tenant))))
}

/// Lists tenants in creation order.
#[utoipa::path(get, path = "/v1/admin/tenants", tag = "admin", params(PageParams),
    responses((status = 200, body = Page<TenantView>)), security(("admin_token" = [])))]
pub async fn list_tenants(
    _: PlatformAdmin,
    State(state): State<Arc<AppState>>,
    Query(page): Query<PageParams>,
) -> Result<Json<Page<TenantView>>, ApiError> {
    let limit = page.limit()?;
    let after: Option<Uuid> = page.after(Uuid::nil(), "tenants")?;
    let rows = tenants::list(&state.db, after, limit + 1, PLATFORM_STATEMENT_TIMEOUT_MS).await?;
    Ok(Json(Page::from_rows(
        rows,
        limit,
        Uuid::nil(),
        "tenants",
        |t| t.id,
        |t| TenantView::new(&state, t),
    )))
}

async fn find(state: &AppState, id: Uuid) -> Result<Tenant, ApiError> {
    let tenant = tenants::find(&state.db, Lookup::Id(id), PLATFORM_STATEMENT_TIMEOUT_MS)
        .await?
        .ok_or_else(|| ApiError::not_found("tenant"))?;
    if tenant.cell == crate::cells::MAIN {
        return Ok(tenant);
    }
    // Its counters are kept in its cell.
    Ok(state.registry.with_counters(tenant).await?)
}

#[utoipa::path(get, path = "/v1/admin/tenants/{id}", tag = "admin",
    responses((status = 200, body = TenantView), (status = 404, body = crate::problem::Problem)),
    security(("admin_token" = [])))]
pub async fn get_tenant(
    _: PlatformAdmin,
    State(state): State<Arc<AppState>>,
    Path(id): Path<Uuid>,
) -> Result<Json<TenantView>, ApiError> {
    let tenant = find(&state, id).await?;
    Ok(Json(TenantView::new(&state, tenant)))
}

/// A change to a tenant. `settings`, `features` and `limits` merge into what
/// is there (a key set to null is removed); `domain: null` removes the domain.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchTenant {
    #[schema(schema_with = crate::openapi::text_or_null::<200>)]
    pub name: Option<String>,
    pub tier: Option<String>,
    /// `active` or `suspended`.
    #[schema(schema_with = status_or_null)]
    pub status: Option<String>,
    /// null removes the custom domain.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(schema_with = crate::openapi::domain_or_null)]
    pub domain: Option<Option<String>>,
    #[schema(schema_with = join_policy_or_null)]
    pub join_policy: Option<String>,
    #[schema(value_type = Option<crate::openapi::JsonObject>)]
    pub settings: Option<Value>,
    #[schema(value_type = Option<crate::openapi::JsonObject>)]
    pub features: Option<Value>,
    /// Overrides of the tier's limits: `rate_per_sec`, `burst`,
    /// `user_rate_per_sec`, `db_concurrency`, `statement_timeout_ms`,
    /// `cache_ttl_secs`, `max_members`, `max_posts`, `max_storage_mb`,
    /// `analytics_events_per_day`, `weight`.
    #[schema(schema_with = limits_schema)]
    pub limits: Option<Value>,
    /// The API version its requests get when they name none.
    #[schema(schema_with = api_version_or_null)]
    pub api_version: Option<String>,
    /// Overrides of the tier's alert thresholds: `p99_ms`, `error_rate`,
    /// `throttle_rate`, `db_wait_p99_ms`, `for_minutes` (null drops one).
    #[schema(schema_with = thresholds_schema)]
    pub thresholds: Option<Value>,
}

#[utoipa::path(patch, path = "/v1/admin/tenants/{id}", tag = "admin", request_body = PatchTenant,
    responses((status = 200, body = TenantView), (status = 404, body = crate::problem::Problem),
              (status = 409, body = crate::problem::Problem, description = "Another tenant already uses this domain, or `status` was given while the tenant is being imported (`conflict`)."),
              (status = 422, body = crate::problem::Problem)),
    security(("admin_token" = [])))]
pub async fn patch_tenant(
    _: PlatformAdmin,
    State(state): State<Arc<AppState>>,
    Path(id): Path<Uuid>,
    Json(body): Json<PatchTenant>,
) -> Result<Json<TenantView>, ApiError> {
    let tiers = state.tiers.load();
    let mut checks = Checks::default();
    let name = checks.check(
        body.name
            .as_deref()
            .map(|n| text("name", n, 200))
            .transpose(),
    );
    let tier = checks.check(
        body.tier
            .as_deref()
            .map(|t| tiers.parse_name(t).map(|n| n.to_string()))
            .transpose()
            .map_err(|e| FieldError::new("tier", e.to_string())),
    );
    let status = checks.check(match body.status.as_deref() {
        None => Ok(None),
        Some("active") => Ok(Some(TenantStatus::Active)),
        Some("suspended") => Ok(Some(TenantStatus::Suspended)),
        Some(_) => Err(FieldError::new("status", "must be active or suspended")),
    });
    let domain = checks.check(match &body.domain {
        None => Ok(None),
        Some(None) => Ok(Some(None)),
        Some(Some(d)) => custom_domain(&state, d).map(|d| Some(Some(d))),
    });
    let join_policy = checks.check(
        body.join_policy
            .as_deref()
            .map(JoinPolicy::parse)
            .transpose()
            .map_err(|e| FieldError::new("join_policy", e.to_string())),
    );
    let settings = checks.check(
        body.settings
            .map(|v| object("settings", Some(v)))
            .transpose(),
    );
    let features = checks.check(body.features.map(|v| features(Some(v))).transpose());
    let limits = checks.check(body.limits.map(validate_limits).transpose());
    let api_version = checks.check(body.api_version.as_deref().map(api_version).transpose());
    let thresholds = checks.check(body.thresholds.map(validate_thresholds).transpose());
    checks.finish()?;
    let patch = TenantPatch {
        name: name.flatten(),
        tier: tier.flatten(),
        status: status.flatten(),
        domain: domain.flatten(),
        join_policy: join_policy.flatten(),
        settings: settings.flatten(),
        features: features.flatten(),
        limits: limits.flatten(),
        api_version: api_version.flatten(),
    };
    let before = find(&state, id).await?;
    if patch.status.is_some() && before.status == TenantStatus::Importing {
        return Err(ApiError::Conflict(
            "the tenant is being imported; its import job makes it active when verified".into(),
        ));
    }
    // A tenant of another cell keeps its copy of the row and its audit log
    // there: the registry changes first (it holds the unique slug and
    // domain), then the copy follows with the audit entry.
    let in_main = before.cell == crate::cells::MAIN;
    let updated = tenants::update_audited(
        &state.db,
        id,
        &patch,
        PLATFORM_STATEMENT_TIMEOUT_MS,
        in_main,
    )
    .await
    .map_err(conflict)?
    .ok_or_else(|| ApiError::not_found("tenant"))?;
    let updated = if in_main {
        updated
    } else {
        let db = state.db_of(&updated)?;
        tenants::mirror_update(db, &updated, &patch, PLATFORM_STATEMENT_TIMEOUT_MS).await?;
        state.registry.with_counters(updated).await?
    };
    if let Some(thresholds) = thresholds.flatten() {
        set_thresholds(&state, id, &thresholds).await?;
    }
    state.registry.changed(&before, &updated).await;
    tracing::info!(tenant = %id, "tenant changed");
    Ok(Json(TenantView::new(&state, updated)))
}

/// Limits must be an object of known names with valid values (or null, to
/// drop an override).
fn validate_limits(value: Value) -> Result<Value, FieldError> {
    let Value::Object(mut map) = value else {
        return Err(FieldError::new("limits", "must be a JSON object"));
    };
    for v in map.values_mut() {
        *v = whole_number(std::mem::take(v));
    }
    let value = Value::Object(map);
    let Value::Object(map) = &value else {
        unreachable!("built as an object just above");
    };
    let without_nulls: serde_json::Map<String, Value> = map
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let parsed: LimitOverrides = serde_json::from_value(Value::Object(without_nulls))
        .map_err(|e| FieldError::new("limits", e.to_string()))?;
    parsed
        .validate()
        .map_err(|e| FieldError::new("limits", e.to_string()))?;
    Ok(value)
}

/// Thresholds must be an object of known names with valid values (or null,
/// to drop an override); the result, merged over the tier's, must be valid.
/// The schema of `thresholds` in a PATCH: the overrides by name, each a
/// positive number (rates at most 1, `for_minutes` a whole number from 1 to
/// 1,440) or null to drop it.
fn thresholds_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, SchemaType, Type};
    let number = |max: Option<f64>| {
        ObjectBuilder::new()
            .schema_type(SchemaType::from_iter([Type::Number, Type::Null]))
            .exclusive_minimum(Some(0.0))
            .maximum(max)
            .build()
    };
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        .property("p99_ms", number(None))
        .property("db_wait_p99_ms", number(None))
        .property("error_rate", number(Some(1.0)))
        .property("throttle_rate", number(Some(1.0)))
        .property(
            "for_minutes",
            ObjectBuilder::new()
                .schema_type(SchemaType::from_iter([Type::Integer, Type::Null]))
                .minimum(Some(1))
                .maximum(Some(1_440))
                .build(),
        )
        .build()
}

fn validate_thresholds(value: Value) -> Result<Value, FieldError> {
    let Value::Object(map) = &value else {
        return Err(FieldError::new("thresholds", "must be a JSON object"));
    };
    let set: serde_json::Map<String, Value> = map
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.clone(), whole_number_if(k == "for_minutes", v.clone())))
        .collect();
    let parsed: tenantry_core::ThresholdOverrides = serde_json::from_value(Value::Object(set))
        .map_err(|e| FieldError::new("thresholds", e.to_string()))?;
    tenantry_core::Thresholds::default()
        .with(&parsed)
        .validate()
        .map_err(|e| FieldError::new("thresholds", e.to_string()))?;
    Ok(value)
}

fn whole_number_if(yes: bool, v: Value) -> Value {
    if yes { whole_number(v) } else { v }
}

/// Merges `thresholds` into the tenant's own (a null removes a key).
async fn set_thresholds(state: &AppState, id: Uuid, thresholds: &Value) -> Result<(), ApiError> {
    let mut tx = state
        .db
        .begin(&tenantry_db::TenantContext::platform(
            PLATFORM_STATEMENT_TIMEOUT_MS,
        ))
        .await?;
    tx.execute(
        "UPDATE tenants SET thresholds = jsonb_strip_nulls(thresholds || $2) WHERE id = $1",
        &[&id, thresholds],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// `5.0` as `5`: JSON has one number type, and the schema's `integer`
/// admits a whole number written with a fraction, while serde reads a
/// `u32` or `u64` only from an integer literal. Anything else is left as
/// it is (and refused if it is no limit).
fn whole_number(value: Value) -> Value {
    match value.as_f64() {
        // Below 2^64 every whole f64 converts to u64 exactly.
        Some(x)
            if value.is_f64()
                && x.fract() == 0.0
                && (0.0..18_446_744_073_709_551_616.0).contains(&x) =>
        {
            Value::from(x as u64)
        }
        _ => value,
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Deleted {
    pub id: Uuid,
    pub status: &'static str,
}

/// Deletes a tenant: it answers 404 at once; its data is purged in the
/// background.
#[utoipa::path(delete, path = "/v1/admin/tenants/{id}", tag = "admin",
    responses((status = 202, body = Deleted), (status = 404, body = crate::problem::Problem)),
    security(("admin_token" = [])))]
pub async fn delete_tenant(
    _: PlatformAdmin,
    State(state): State<Arc<AppState>>,
    Path(id): Path<Uuid>,
) -> Result<(StatusCode, Json<Deleted>), ApiError> {
    let before = find(&state, id).await?;
    if !tenants::mark_deleted(&state.db, id, PLATFORM_STATEMENT_TIMEOUT_MS).await? {
        return Err(ApiError::not_found("tenant"));
    }
    if before.cell != crate::cells::MAIN {
        // Its cell's purge worker removes the rows of a copy marked deleted.
        tenants::mark_copy_deleted(state.db_of(&before)?, id, PLATFORM_STATEMENT_TIMEOUT_MS)
            .await?;
    }
    state.tenant_changed(Some(&before), id).await;
    state.purge_wakeup.notify_one();
    tracing::info!(tenant = %id, "tenant deleted; purge scheduled");
    Ok((
        StatusCode::ACCEPTED,
        Json(Deleted {
            id,
            status: "deleted",
        }),
    ))
}

/// One quota: how much of it the tenant uses.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QuotaUse {
    pub name: &'static str,
    pub used: u64,
    pub limit: u64,
}

/// Requests of the tenant turned away on this node, by reason.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Throttling {
    pub rate_limited: u64,
    pub db_queue_timeouts: u64,
    pub query_timeouts: u64,
    pub quota_exceeded: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Usage {
    pub tenant_id: Uuid,
    pub tier: String,
    /// The limits in force: the tier's, with the tenant's overrides.
    #[schema(value_type = Object)]
    pub limits: tenantry_core::Limits,
    pub quotas: Vec<QuotaUse>,
    pub throttling: Throttling,
    /// The tenant's cache lookups on this node.
    pub cache: CacheUse,
}

/// A tenant's cache lookups on this node (tenant record, memberships, cached
/// lists) since it started.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CacheUse {
    pub hits: u64,
    pub misses: u64,
    /// hits ÷ (hits + misses); null before any lookup.
    pub hit_rate: Option<f64>,
    /// Tenant-scoped requests seen on this node (what warming ranks by).
    pub requests: u64,
}

/// Quotas, usage, the limits in force and recent throttling.
#[utoipa::path(get, path = "/v1/admin/tenants/{id}/usage", tag = "admin",
    responses((status = 200, body = Usage), (status = 404, body = crate::problem::Problem)),
    security(("admin_token" = [])))]
pub async fn usage(
    _: PlatformAdmin,
    State(state): State<Arc<AppState>>,
    Path(id): Path<Uuid>,
) -> Result<Json<Usage>, ApiError> {
    use std::sync::atomic::Ordering::Relaxed;
    let tenant = find(&state, id).await?;
    let limits = state.limits_of(&tenant);
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    let quotas = vec![
        QuotaUse {
            name: "max_members",
            used: count(tenant.member_count),
            limit: limits.max_members,
        },
        QuotaUse {
            name: "max_posts",
            used: count(tenant.post_count),
            limit: limits.max_posts,
        },
        QuotaUse {
            name: "max_storage_mb",
            used: count(tenant.storage_bytes).div_ceil(1 << 20),
            limit: limits.max_storage_mb,
        },
    ];
    let throttles = state.fairness.throttles_of(id);
    let cached = state.cache.stats.tenant(id);
    Ok(Json(Usage {
        cache: CacheUse {
            hits: cached.hits.load(Relaxed),
            misses: cached.misses.load(Relaxed),
            hit_rate: cached.hit_rate(),
            requests: cached.requests.load(Relaxed),
        },
        tenant_id: id,
        tier: tenant.tier.clone(),
        limits,
        quotas,
        throttling: Throttling {
            rate_limited: throttles.rate_limited.load(Relaxed),
            db_queue_timeouts: throttles.db_queue_timeouts.load(Relaxed),
            query_timeouts: throttles.query_timeouts.load(Relaxed),
            quota_exceeded: throttles.quota_exceeded.load(Relaxed),
        },
    }))
}

/// The platform's default settings, which every tenant inherits.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PlatformSettingsView {
    #[schema(value_type = Object)]
    pub settings: Value,
    pub updated_at: DateTime<Utc>,
}

impl From<tenantry_db::platform::PlatformSettings> for PlatformSettingsView {
    fn from(p: tenantry_db::platform::PlatformSettings) -> Self {
        Self {
            settings: p.settings,
            updated_at: p.updated_at,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchPlatformSettings {
    /// Merged into the platform's settings one level deep; a key set to
    /// null is removed.
    #[schema(value_type = crate::openapi::JsonObject)]
    pub settings: Value,
}

#[utoipa::path(get, path = "/v1/admin/settings", tag = "admin",
    responses((status = 200, body = PlatformSettingsView)), security(("admin_token" = [])))]
pub async fn get_settings(
    _: PlatformAdmin,
    State(state): State<Arc<AppState>>,
) -> Result<Json<PlatformSettingsView>, ApiError> {
    let current = tenantry_db::platform::get(&state.db, PLATFORM_STATEMENT_TIMEOUT_MS).await?;
    Ok(Json(current.into()))
}

/// Changes the platform's default settings; every tenant's
/// `effective_settings` follows at once (on every node, within the cache's
/// fan-out delay).
#[utoipa::path(patch, path = "/v1/admin/settings", tag = "admin", request_body = PatchPlatformSettings,
    responses((status = 200, body = PlatformSettingsView), (status = 422, body = crate::problem::Problem)),
    security(("admin_token" = [])))]
pub async fn patch_settings(
    _: PlatformAdmin,
    State(state): State<Arc<AppState>>,
    Json(body): Json<PatchPlatformSettings>,
) -> Result<Json<PlatformSettingsView>, ApiError> {
    let patch =
        object("settings", Some(body.settings)).map_err(|e| ApiError::Validation(vec![e]))?;
    let updated =
        tenantry_db::platform::update(&state.db, &patch, PLATFORM_STATEMENT_TIMEOUT_MS).await?;
    state.platform_settings_changed().await;
    tracing::info!("platform settings changed");
    Ok(Json(updated.into()))
}
