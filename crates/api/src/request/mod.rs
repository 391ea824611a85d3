//! The request path: everything between the socket and a handler, in the
//! order a request meets it.
//!
//! 0. [`crate::versions`]: an unknown `Tenantry-Version` is 400 before any
//!    work; on the way out the answer is put in the version the request
//!    gets (named, or its tenant's pinned one) and stamped with it.
//! 1. [`shed`]: beyond the global in-flight cap, 503 before any work.
//! 2. [`auth`]: the bearer token — a user's JWT (verified once, then from
//!    the verified-token cache) — or the platform admin's token ([`admin`]).
//! 3. [`naming`]: which tenant the request names (custom domain, subdomain,
//!    `X-Tenant`, `?tenant=`), looked up in the [`registry`].
//! 4. [`memo`]: steps 2 and 3 kept for a repeat caller.
//! 5. [`admission`]: the tenant's and the user's rate (429), then the fair
//!    database share, taken only when the handler's first statement needs
//!    it (503 `overloaded` past the budget).
//! 6. The extractors handlers take: [`Scope`] for a tenant's request
//!    (403 `feature_disabled` when the route's feature is off for the
//!    tenant: [`RequiredFeature`], from the memoized limits),
//!    [`UserScope`] for a signed-in user's request that names no tenant,
//!    [`PlatformAdmin`] for the operator.
//!
//! Everything a step takes across an await (an in-flight slot, a share
//! permit, a connection) is owned by a guard released in `Drop`, so a
//! client that hangs up at any point leaves nothing behind.

pub mod admin;
pub mod admission;
pub mod auth;
pub mod hold;
pub mod memo;
pub mod naming;
pub mod provisioned;
pub mod registry;
pub mod scope;
pub mod shed;
pub mod support;
pub mod user;

pub use admin::PlatformAdmin;
pub use auth::AuthUser;
pub use naming::X_TENANT;
pub use registry::TenantRegistry;
pub use scope::{Invalidation, RequestInfo, RequiredFeature, Resolved, Scope, not_a_member};
pub use user::UserScope;
