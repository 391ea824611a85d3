//! `ingest`: analytics events (`POST /v1/analytics/events`), where group
//! commit shows. Every request carries [`EVENTS_PER_REQUEST`] events of a
//! random member of a random tenant, so events per second are requests per
//! second times that. Each 202 means the events were committed.

use bytes::Bytes;
use hyper::Method;
use rand::Rng as _;
use rand_chacha::ChaCha8Rng;

use super::{Call, PlanContext, ScenarioPlan, any_user};
use crate::bench::workload::TenantTarget;

/// Events per request.
pub const EVENTS_PER_REQUEST: usize = 100;

const KINDS: &[&str] = &["page_view", "click", "search", "signup", "share"];

pub fn plan(ctx: &PlanContext<'_>) -> anyhow::Result<ScenarioPlan> {
    ctx.single_stream("ingest", pick)
}

/// A batch of events from one member.
pub fn pick(rng: &mut ChaCha8Rng, tenant: Option<&TenantTarget>) -> Call {
    let user = tenant.map_or(0, |t| any_user(rng, t));
    let events: Vec<serde_json::Value> = (0..EVENTS_PER_REQUEST)
        .map(|i| {
            serde_json::json!({
                "type": KINDS[rng.random_range(0..KINDS.len())],
                "properties": {"seq": i, "path": format!("/p/{}", rng.random_range(0..1000))},
            })
        })
        .collect();
    Call {
        op: "ingest-events",
        method: Method::POST,
        path: "/v1/analytics/events".to_owned(),
        body: Some(Bytes::from(
            serde_json::json!({ "events": events }).to_string(),
        )),
        user,
    }
}
