//! Tenantry's measuring tools.
//!
//! - [`seed`]: `tenantry seed`, a deterministic, Zipf-shaped multi-tenant
//!   data set written with COPY, so every benchmark runs on data shaped
//!   like production.
//! - [`bench`]: `tenantry bench`, an HTTP load generator that reports
//!   per-tenant latency, and whether one tenant's flood reaches the others.
//! - [`batch`]: `tenantry bench-batch`, group-commit ingestion against one
//!   INSERT per event, and no-op jobs through the queue, in-process.
//! - [`report`]: the versioned JSON results, the human table, the
//!   self-contained HTML report and the baseline comparison.

pub mod batch;
pub mod bench;
pub mod report;
pub mod seed;
