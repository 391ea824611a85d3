//! `noisy-neighbor`: does one tenant's flood reach everyone else?
//!
//! Quiet tenants read their posts at a fixed low rate each (open loop, so
//! their latency is counted from the scheduled time and a stall cannot hide)
//! for the whole run. After a warm-up and a solo phase, one tenant — the
//! largest by members unless `--noisy-tenant` names one — floods with
//! `--connections` closed-loop connections. The report compares each quiet
//! tenant's p99 during the flood with its p99 alone (the degradation ratio)
//! and correlates tenants' per-second latency series: in an isolated system
//! the quiet tenants' latency neither rises nor moves with the flood.

use super::{Load, PlanContext, ScenarioPlan, Stream, TenantRole, read};

pub fn plan(ctx: &PlanContext<'_>) -> anyhow::Result<ScenarioPlan> {
    let n = ctx.workload.tenants.len();
    anyhow::ensure!(
        n >= 2,
        "the noisy-neighbor scenario needs at least two tenants (one noisy, one quiet); found {n}"
    );
    anyhow::ensure!(ctx.quiet_rate > 0.0, "--quiet-rate must be positive");
    let noisy = match ctx.noisy {
        Some(i) => i,
        None => ctx.workload.pick_noisy(None)?,
    };
    let quiet: Vec<usize> = (0..n).filter(|&i| i != noisy).collect();
    let loaded_from = ctx.warmup + ctx.solo;
    let end = loaded_from + ctx.duration;
    let mut roles = vec![TenantRole::Quiet; n];
    roles[noisy] = TenantRole::Noisy;
    Ok(ScenarioPlan {
        streams: vec![
            Stream {
                name: "quiet",
                load: Load::Open {
                    rate: ctx.quiet_rate * quiet.len() as f64,
                    // One worker per quiet tenant: with round-robin slots,
                    // worker i always serves tenant i, one request at a time.
                    connections: quiet.len(),
                },
                tenants: quiet,
                start: std::time::Duration::ZERO,
                end,
                pick: read::pick_posts,
                turns: None,
            },
            Stream {
                name: "noisy",
                tenants: vec![noisy],
                load: Load::Closed {
                    connections: ctx.connections,
                },
                start: loaded_from,
                end,
                pick: read::pick,
                turns: None,
            },
        ],
        warmup: ctx.warmup,
        end,
        loaded_from: Some(loaded_from),
        roles,
        noisy: Some(noisy),
    })
}
