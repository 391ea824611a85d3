//! `write`: posting, liking, unliking and commenting — the requests that
//! take row locks, bump counters and count against quotas.

use bytes::Bytes;
use hyper::Method;
use rand::Rng as _;
use rand_chacha::ChaCha8Rng;

use super::{Call, PlanContext, ScenarioPlan, any_user, choose};
use crate::bench::workload::TenantTarget;

pub fn plan(ctx: &PlanContext<'_>) -> anyhow::Result<ScenarioPlan> {
    ctx.single_stream("write", pick)
}

const WORDS: &[&str] = &[
    "bench",
    "load",
    "post",
    "from",
    "the",
    "measuring",
    "tools",
    "with",
    "some",
    "words",
    "about",
    "climbing",
    "today",
    "and",
    "tomorrow",
    "great",
    "session",
    "everyone",
];

fn text(rng: &mut ChaCha8Rng, words: usize) -> String {
    let mut s = String::with_capacity(words * 8);
    for i in 0..words {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(WORDS[rng.random_range(0..WORDS.len())]);
    }
    s
}

fn content_body(rng: &mut ChaCha8Rng, words: usize) -> Bytes {
    Bytes::from(serde_json::json!({ "content": text(rng, words) }).to_string())
}

/// 40% new post, 25% like, 10% unlike, 25% comment (a new post when the
/// tenant has none to react to).
pub fn pick(rng: &mut ChaCha8Rng, tenant: Option<&TenantTarget>) -> Call {
    let user = tenant.map_or(0, |t| any_user(rng, t));
    let post = tenant.and_then(|t| choose(rng, &t.posts));
    let roll: u32 = rng.random_range(0..100);
    match (roll, post) {
        (40..65, Some(id)) => Call {
            op: "like",
            method: Method::POST,
            path: format!("/v1/posts/{id}/like"),
            body: None,
            user,
        },
        (65..75, Some(id)) => Call {
            op: "unlike",
            method: Method::DELETE,
            path: format!("/v1/posts/{id}/like"),
            body: None,
            user,
        },
        (75..100, Some(id)) => {
            let words = rng.random_range(3..20);
            Call {
                op: "add-comment",
                method: Method::POST,
                path: format!("/v1/posts/{id}/comments"),
                body: Some(content_body(rng, words)),
                user,
            }
        }
        _ => {
            let words = rng.random_range(5..40);
            Call {
                op: "create-post",
                method: Method::POST,
                path: "/v1/posts".to_owned(),
                body: Some(content_body(rng, words)),
                user,
            }
        }
    }
}
