//! `search`: full-text search in a tenant (`GET /v1/search?q=`), for one or
//! two words of the seeded posts' vocabulary.

use hyper::Method;
use rand::Rng as _;
use rand_chacha::ChaCha8Rng;

use super::{Call, PlanContext, ScenarioPlan, any_user, choose};
use crate::bench::workload::TenantTarget;
use crate::seed::text;

pub fn plan(ctx: &PlanContext<'_>) -> anyhow::Result<ScenarioPlan> {
    ctx.single_stream("search", pick)
}

/// 70% one word, 30% two words (both must match).
pub fn pick(rng: &mut ChaCha8Rng, tenant: Option<&TenantTarget>) -> Call {
    let user = tenant.map_or(0, |t| any_user(rng, t));
    let words = text::words();
    let first = choose(rng, words).copied().unwrap_or("climbing");
    let (op, q) = if rng.random_bool(0.7) {
        ("search-one-word", first.to_owned())
    } else {
        let second = choose(rng, words).copied().unwrap_or("route");
        ("search-two-words", format!("{first}+{second}"))
    };
    Call {
        op,
        method: Method::GET,
        path: format!("/v1/search?q={q}&limit=20"),
        body: None,
        user,
    }
}
