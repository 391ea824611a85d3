//! The platform admin: requests carrying the admin token.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::auth::{bearer, constant_time_eq};
use crate::problem::ApiError;
use crate::state::AppState;

/// A request made with the platform admin token.
#[derive(Debug, Clone, Copy)]
pub struct PlatformAdmin;

impl FromRequestParts<Arc<AppState>> for PlatformAdmin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(&parts.headers)?;
        if constant_time_eq(token.as_bytes(), state.admin_token.as_bytes()) {
            Ok(PlatformAdmin)
        } else {
            Err(ApiError::Unauthenticated("invalid admin token".to_owned()))
        }
    }
}
