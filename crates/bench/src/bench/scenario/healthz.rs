//! `healthz`: `GET /healthz` as fast as the connections allow — the HTTP
//! stack's ceiling on this machine (no tenant, no auth, no database), so
//! the other scenarios read as a fraction of it.

use hyper::Method;
use rand_chacha::ChaCha8Rng;

use super::{Call, PlanContext, ScenarioPlan, Stream, TenantRole};
use crate::bench::workload::TenantTarget;

pub fn plan(ctx: &PlanContext<'_>) -> anyhow::Result<ScenarioPlan> {
    let end = ctx.warmup + ctx.duration;
    Ok(ScenarioPlan {
        streams: vec![Stream {
            name: "healthz",
            tenants: Vec::new(),
            load: ctx.load(),
            start: std::time::Duration::ZERO,
            end,
            pick,
            turns: None,
        }],
        warmup: ctx.warmup,
        end,
        loaded_from: None,
        roles: vec![TenantRole::Tenant; ctx.workload.tenants.len()],
        noisy: None,
    })
}

pub fn pick(_: &mut ChaCha8Rng, _: Option<&TenantTarget>) -> Call {
    Call {
        op: "healthz",
        method: Method::GET,
        path: "/healthz".to_owned(),
        body: None,
        user: 0,
    }
}
