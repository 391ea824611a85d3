//! `read`: what members mostly do — open the community, list posts, read a
//! post and its comments, look at the member list.

use hyper::Method;
use rand::Rng as _;
use rand_chacha::ChaCha8Rng;

use super::{Call, PlanContext, ScenarioPlan, any_user, choose};
use crate::bench::workload::TenantTarget;

pub fn plan(ctx: &PlanContext<'_>) -> anyhow::Result<ScenarioPlan> {
    ctx.single_stream("read", pick)
}

/// 10% tenant info, 10% members, 45% post list, 25% one post, 10% comments.
pub fn pick(rng: &mut ChaCha8Rng, tenant: Option<&TenantTarget>) -> Call {
    let Some(tenant) = tenant else {
        return list_posts(0);
    };
    let user = any_user(rng, tenant);
    let roll: u32 = rng.random_range(0..100);
    let post = choose(rng, &tenant.posts);
    match (roll, post) {
        (0..10, _) => Call {
            op: "get-tenant",
            method: Method::GET,
            path: "/v1/tenant".to_owned(),
            body: None,
            user,
        },
        (10..20, _) => Call {
            op: "list-members",
            method: Method::GET,
            path: "/v1/members?limit=20".to_owned(),
            body: None,
            user,
        },
        (65..90, Some(id)) => Call {
            op: "get-post",
            method: Method::GET,
            path: format!("/v1/posts/{id}"),
            body: None,
            user,
        },
        (90..100, Some(id)) => Call {
            op: "list-comments",
            method: Method::GET,
            path: format!("/v1/posts/{id}/comments?limit=20"),
            body: None,
            user,
        },
        _ => list_posts(user),
    }
}

/// The newest page of posts as a random member (the `list` scenario).
pub fn pick_list(rng: &mut ChaCha8Rng, tenant: Option<&TenantTarget>) -> Call {
    list_posts(tenant.map_or(0, |t| any_user(rng, t)))
}

/// The newest page of posts: the request every member sends first.
pub fn list_posts(user: usize) -> Call {
    Call {
        op: "list-posts",
        method: Method::GET,
        path: "/v1/posts?limit=20".to_owned(),
        body: None,
        user,
    }
}

/// A quiet member's reading: the post list, or one post.
pub fn pick_posts(rng: &mut ChaCha8Rng, tenant: Option<&TenantTarget>) -> Call {
    let Some(tenant) = tenant else {
        return list_posts(0);
    };
    let user = any_user(rng, tenant);
    match choose(rng, &tenant.posts) {
        Some(id) if rng.random_bool(0.5) => Call {
            op: "get-post",
            method: Method::GET,
            path: format!("/v1/posts/{id}"),
            body: None,
            user,
        },
        _ => list_posts(user),
    }
}
