//! `ingest`: analytics events (`POST /v1/analytics/events`), where group
//! commit shows.
//!
//! The endpoint does not exist yet (API.md lists it; no route serves it), so
//! the scenario refuses to run rather than measure 404s. When the route
//! lands: post batches of events per tenant, expect 202, and plan one stream
//! like [`super::write`].

pub fn unavailable() -> anyhow::Error {
    anyhow::anyhow!(
        "the ingest scenario is not available until the ingest endpoint \
         (POST /v1/analytics/events) exists"
    )
}
