//! `mixed`: the read and write scenarios interleaved, 80% reads.

use rand::Rng as _;
use rand_chacha::ChaCha8Rng;

use super::{Call, PlanContext, ScenarioPlan};
use crate::bench::workload::TenantTarget;

pub fn plan(ctx: &PlanContext<'_>) -> anyhow::Result<ScenarioPlan> {
    ctx.single_stream("mixed", pick)
}

pub fn pick(rng: &mut ChaCha8Rng, tenant: Option<&TenantTarget>) -> Call {
    if rng.random_bool(0.8) {
        super::read::pick(rng, tenant)
    } else {
        super::write::pick(rng, tenant)
    }
}
