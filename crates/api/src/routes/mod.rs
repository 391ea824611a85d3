//! The HTTP routes, one module per capability.

pub mod admin;
pub mod admin_members;
pub mod analytics;
pub mod audit;
pub mod cells;
pub mod community;
pub mod db;
pub mod events;
pub mod jobs;
pub mod journeys;
pub mod lifecycle;
pub mod members;
pub mod notifications;
pub mod observe;
pub mod ops;
pub mod origin;
pub mod posts;
pub mod scaling;
pub mod search;
pub mod shares;
pub mod support;
pub mod tenant;
pub mod usage;
pub mod versions;

use std::sync::Arc;

use serde::{Deserialize, Deserializer};
use utoipa_axum::router::OpenApiRouter;

use tenantry_core::Feature;

use crate::problem::{ApiError, FieldError};
use crate::request::RequiredFeature;
use crate::state::AppState;

/// Every route of the API with its OpenAPI operation: each module registers
/// its own, once (a route and its documentation cannot drift apart).
pub fn all() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .merge(admin::routes())
        .merge(admin_members::routes())
        .merge(cells::routes())
        .merge(tenant::routes())
        .merge(members::routes())
        .merge(posts::routes())
        .merge(gated(Feature::Events, events::routes()))
        .merge(gated(Feature::Journeys, journeys::routes()))
        .merge(gated(Feature::Search, search::routes()))
        .merge(community::routes())
        .merge(shares::routes())
        .merge(jobs::routes())
        .merge(gated(Feature::Analytics, analytics::routes()))
        .merge(notifications::routes())
        .merge(audit::routes())
        .merge(ops::routes())
        .merge(observe::routes())
        .merge(db::routes())
        .merge(usage::routes())
        .merge(lifecycle::routes())
        .merge(versions::routes())
        .merge(support::routes())
        .merge(scaling::routes())
}

/// A capability's routes behind its feature flag: a tenant-scoped request
/// to them ([`crate::request::Scope`]) whose tenant has `feature` off
/// answers 403 `feature_disabled`. Routes that gate only some operations,
/// or that span tenants, check the flag themselves.
fn gated(feature: Feature, routes: OpenApiRouter<Arc<AppState>>) -> OpenApiRouter<Arc<AppState>> {
    routes.layer(axum::Extension(RequiredFeature(feature)))
}

/// Tells a field that is absent (`None`) from one set to null
/// (`Some(None)`), for PATCH bodies.
pub(crate) fn double_option<'de, D, T>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(de).map(Some)
}

/// Checks a text field: trimmed non-empty, at most `max` characters, and no
/// NUL character (which PostgreSQL cannot store in text).
pub(crate) fn text(field: &str, value: &str, max: usize) -> Result<String, FieldError> {
    if value.contains('\0') {
        return Err(FieldError::new(field, "must not contain a NUL character"));
    }
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if trimmed.chars().count() > max {
        return Err(FieldError::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    Ok(trimmed.to_owned())
}

/// Checks that a JSON value holds no NUL character in any string or key:
/// PostgreSQL's jsonb cannot store `\u0000`.
pub(crate) fn no_nul(field: &str, value: &serde_json::Value) -> Result<(), FieldError> {
    fn clean(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::String(s) => !s.contains('\0'),
            serde_json::Value::Array(items) => items.iter().all(clean),
            serde_json::Value::Object(map) => {
                map.iter().all(|(k, v)| !k.contains('\0') && clean(v))
            }
            _ => true,
        }
    }
    if clean(value) {
        Ok(())
    } else {
        Err(FieldError::new(field, "must not contain a NUL character"))
    }
}

/// Collects field errors and answers 422 with all of them at once.
#[derive(Default)]
pub(crate) struct Checks(Vec<FieldError>);

impl Checks {
    pub fn check<T>(&mut self, result: Result<T, FieldError>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.0.push(e);
                None
            }
        }
    }

    pub fn finish(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(self.0))
        }
    }
}
