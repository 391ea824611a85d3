//! Fairness between tenants (DESIGN.md, "Fairness").
//!
//! - [`gcra`]: rate limits per tenant and per (tenant, user), by the generic
//!   cell rate algorithm: one timestamp per key, no timers.
//! - [`share`]: the fair database share: a tenant holds at most its
//!   `db_concurrency` operations, and waiting operations are admitted
//!   round-robin across tenants, weighted by tier, so one tenant's backlog
//!   never stands in front of another tenant's next operation.
//!   The same queue admits every tenant request's CPU work (the API's
//!   request admission), with its own capacity.
//! - [`adaptive`]: a gradient limiter that moves a share's capacity with the
//!   latency it measures (Little's law, without knowing the machine).
//! - [`scaling`]: each tenant's concurrency, moved within its tier's bounds
//!   on its measured queue wait.
//! - [`shed`]: a global in-flight cap that answers before any work is done,
//!   with a reserve for admin and health endpoints.
//!
//! All time comes from `tokio::time`, so tests run on paused time.

pub mod adaptive;
pub mod gcra;
pub mod rate;
pub mod scaling;
pub mod share;
pub mod shed;
pub mod testing;
