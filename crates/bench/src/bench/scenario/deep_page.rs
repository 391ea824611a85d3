//! `deep-page`: keyset pagination at depth. Half the requests read the
//! first page of a tenant's posts, half the page `--deep-rows` rows deep
//! (default 10,000), through a cursor the server issued while discovery
//! walked the list. With keyset pagination both cost the same; the report's
//! per-operation p99 of `list-posts-deep` over `list-posts-first` is the
//! ratio to watch (OFFSET would grow with depth).

use hyper::Method;
use rand::Rng as _;
use rand_chacha::ChaCha8Rng;

use super::{Call, PlanContext, ScenarioPlan, any_user};
use crate::bench::workload::TenantTarget;

pub fn plan(ctx: &PlanContext<'_>) -> anyhow::Result<ScenarioPlan> {
    anyhow::ensure!(
        ctx.workload.tenants.iter().any(|t| t.deep_cursor.is_some()),
        "the deep-page scenario needs a tenant with more posts than --deep-rows"
    );
    ctx.single_stream("deep-page", pick)
}

pub fn pick(rng: &mut ChaCha8Rng, tenant: Option<&TenantTarget>) -> Call {
    let user = tenant.map_or(0, |t| any_user(rng, t));
    let deep = tenant.and_then(|t| t.deep_cursor.as_deref());
    let (op, path) = match deep {
        Some(cursor) if rng.random_bool(0.5) => (
            "list-posts-deep",
            format!("/v1/posts?limit=20&cursor={cursor}"),
        ),
        _ => ("list-posts-first", "/v1/posts?limit=20".to_owned()),
    };
    Call {
        op,
        method: Method::GET,
        path,
        body: None,
        user,
    }
}
