//! `feed`: newest posts across a user's communities (`GET /v1/feed`).
//!
//! The endpoint does not exist yet (API.md lists it; no route serves it), so
//! the scenario refuses to run rather than measure 404s. When the route
//! lands: pick a member of several discovered tenants, send
//! `GET /v1/feed?type=posts` with their token, and plan one stream like
//! [`super::read`].

pub fn unavailable() -> anyhow::Error {
    anyhow::anyhow!(
        "the feed scenario is not available until the feed endpoint (GET /v1/feed) exists"
    )
}
