//! Tenantry's domain: the types every other crate speaks in.
//!
//! Values here parse on construction (`TenantSlug::parse`, `Role::parse`,
//! `Domain::parse`), so code that holds one never re-validates it. This crate
//! does no I/O.

mod domain;
pub mod features;
mod role;
mod slug;
mod tenant;
mod tier;

pub use domain::Domain;
pub use features::{Feature, FeatureFlags};
pub use role::Role;
pub use slug::TenantSlug;
pub use tenant::{JoinPolicy, TenantStatus};
pub use tier::{LimitOverrides, Limits, ThresholdOverrides, Thresholds, TierName, TierTable};

/// Why a value was refused: a message a user can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

impl ParseError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}
