//! Tenantry's PostgreSQL layer.
//!
//! - [`Db`] is the connection pool; [`Db::begin`] opens a [`Tx`] that carries a
//!   [`TenantContext`] to PostgreSQL (runtime role, allowed tenants, statement
//!   timeout) pipelined with its first statement, so setting the context costs
//!   no extra round trip.
//! - [`migrate`] applies the embedded schema under an advisory lock.
//! - [`catalog`] names the tenant tables from the catalog and finds gaps in
//!   their isolation.
//! - [`partitions`] keeps monthly range partitions made ahead of time.
//! - [`moving`] moves a tenant's rows to another database online.
//! - [`embedded`] runs a private cluster when no `DATABASE_URL` is given.
//! - The query modules ([`tenants`], [`users`], [`members`], [`posts`],
//!   [`events`], [`journeys`], [`community`], [`shares`], [`search`]) hold the
//!   SQL. Every tenant query says `WHERE tenant_id = $1` itself: row-level
//!   security is the safety net, not the filter.

pub mod audit;
pub mod bulk;
pub mod catalog;
mod columns;
pub mod community;
pub mod embedded;
mod error;
pub mod events;
pub mod journeys;
pub mod json;
pub mod lifecycle;
pub mod members;
pub mod migrate;
#[cfg(test)]
mod migration_files;
pub mod moving;
pub mod notifications;
pub mod origin;
pub mod partitions;
pub mod platform;
mod pool;
pub mod posts;
pub mod replica;
pub mod search;
pub mod shares;
pub mod stats;
pub mod support;
pub mod tenants;
pub mod testing;
pub mod tls;
pub mod users;

pub use error::{DbError, Throttle, unavailable_cause};
pub use pool::{
    Admission, Db, DbOptions, DbUse, StatementMode, TenantContext, Tx, count_statements,
    measure_use, statements_total,
};

/// Keyset position in a list ordered newest first: `(created_at, id)` of the
/// last row already returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keyset {
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub id: uuid::Uuid,
}

/// A new time-ordered id (UUIDv7): inserts land at the right edge of B-trees.
pub fn new_id() -> uuid::Uuid {
    uuid::Uuid::now_v7()
}
