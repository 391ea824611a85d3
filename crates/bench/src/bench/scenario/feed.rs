//! `feed`: newest posts across a user's communities (`GET /v1/feed`).
//!
//! Each request is sent as the chosen tenant's member with the lowest user
//! id: with `tenantry seed --hub-communities N` that is one user who belongs
//! to the N largest communities, so every request reads a feed over N
//! communities. The feed is user-scoped: the tenant only chooses the user
//! (the `X-Tenant` header the driver adds is ignored by the route).

use hyper::Method;
use rand::Rng as _;
use rand_chacha::ChaCha8Rng;

use super::{Call, PlanContext, ScenarioPlan};
use crate::bench::workload::TenantTarget;

pub fn plan(ctx: &PlanContext<'_>) -> anyhow::Result<ScenarioPlan> {
    ctx.single_stream("feed", pick)
}

/// 90% the first page of the posts feed, 10% the upcoming events feed.
pub fn pick(rng: &mut ChaCha8Rng, tenant: Option<&TenantTarget>) -> Call {
    let user = tenant.map_or(0, hub_user);
    let (op, path) = if rng.random_bool(0.9) {
        ("feed-posts", "/v1/feed?type=posts&limit=20")
    } else {
        ("feed-events", "/v1/feed?type=events&limit=20")
    };
    Call {
        op,
        method: Method::GET,
        path: path.to_owned(),
        body: None,
        user,
    }
}

/// The index of the tenant's member with the lowest user id.
fn hub_user(tenant: &TenantTarget) -> usize {
    tenant
        .users
        .iter()
        .enumerate()
        .min_by_key(|(_, u)| u.id)
        .map_or(0, |(i, _)| i)
}
