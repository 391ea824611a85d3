//! Fairness between tenants (DESIGN.md, "Fairness").
//!
//! - [`gcra`]: rate limits per tenant and per (tenant, user), by the generic
//!   cell rate algorithm: one timestamp per key, no timers.
//! - [`share`]: the fair database share: a tenant holds at most its
//!   `db_concurrency` operations, and waiting operations are admitted
//!   round-robin across tenants, weighted by tier, so one tenant's backlog
//!   never stands in front of another tenant's next operation.
//! - [`shed`]: a global in-flight cap that answers before any work is done,
//!   with a reserve for admin and health endpoints.
//!
//! All time comes from `tokio::time`, so tests run on paused time.

pub mod gcra;
pub mod rate;
pub mod share;
pub mod shed;
pub mod testing;
