//! Rate limits shared through a real Redis, and what happens when it goes away.
//!
//! Each test starts its own `redis-server` on a free port (the binary is
//! installed with Redis), so it can stop it mid-test.

use std::time::Duration;

use tenantry_fairness::gcra::Quota;
use tenantry_fairness::rate::RateLimiter;
use tenantry_fairness::testing::RedisServer;
use uuid::Uuid;

const TENANT: Quota = Quota {
    per_sec: 1,
    burst: 5,
};
const USER: Quota = Quota {
    per_sec: 1,
    burst: 100,
};

async fn allowed(limiter: &RateLimiter, tenant: Uuid, user: Uuid) -> bool {
    limiter.check(tenant, user, TENANT, USER).await.allowed()
}

#[tokio::test]
async fn two_nodes_draw_from_one_budget_through_redis() {
    let redis = RedisServer::start();
    let node_a = RateLimiter::with_redis(&redis.url()).expect("client");
    let node_b = RateLimiter::with_redis(&redis.url()).expect("client");
    let (tenant, user) = (Uuid::now_v7(), Uuid::now_v7());
    for i in 0..5 {
        let node = if i % 2 == 0 { &node_a } else { &node_b };
        assert!(
            allowed(node, tenant, user).await,
            "request {i} of the burst"
        );
    }
    assert!(
        !allowed(&node_a, tenant, user).await,
        "the burst is spent on both nodes"
    );
    assert!(!allowed(&node_b, tenant, user).await);
    assert!(node_a.is_shared() && node_b.is_shared());
    // Another tenant is untouched.
    assert!(allowed(&node_b, Uuid::now_v7(), user).await);
}

#[tokio::test]
async fn the_user_limit_binds_within_a_tenant_and_reports_the_tighter_decision() {
    let redis = RedisServer::start();
    let limiter = RateLimiter::with_redis(&redis.url()).expect("client");
    let tenant = Uuid::now_v7();
    let roomy = Quota {
        per_sec: 1,
        burst: 100,
    };
    let tight = Quota {
        per_sec: 1,
        burst: 2,
    };
    let (alice, bob) = (Uuid::now_v7(), Uuid::now_v7());
    for _ in 0..2 {
        let c = limiter.check(tenant, alice, roomy, tight).await;
        assert!(c.allowed());
        assert_eq!(c.binding().quota, tight);
    }
    let denied = limiter.check(tenant, alice, roomy, tight).await;
    assert!(!denied.allowed());
    assert!(denied.binding().retry_after > Duration::ZERO);
    assert!(
        limiter.check(tenant, bob, roomy, tight).await.allowed(),
        "bob has his own budget"
    );
}

#[tokio::test]
async fn when_redis_goes_away_limits_fall_back_to_the_node_and_recover() {
    let mut redis = RedisServer::start();
    let limiter = RateLimiter::with_redis(&redis.url()).expect("client");
    let (tenant, user) = (Uuid::now_v7(), Uuid::now_v7());
    assert!(allowed(&limiter, tenant, user).await);
    assert!(limiter.is_shared());

    redis.stop();
    // No request fails: the local limiter answers, with its own budget.
    let mut local_allowed = 0;
    for _ in 0..10 {
        if allowed(&limiter, tenant, user).await {
            local_allowed += 1;
        }
    }
    assert_eq!(
        local_allowed, 5,
        "the local burst applies while Redis is down"
    );
    assert!(!limiter.is_shared());

    // Redis comes back on the same port; after the breaker's pause, checks
    // are shared again.
    let _redis = RedisServer::start_on(redis.port);
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let fresh = Uuid::now_v7();
    assert!(allowed(&limiter, fresh, user).await);
    assert!(limiter.is_shared(), "shared again after recovery");
}

#[tokio::test]
async fn an_unreachable_redis_never_fails_a_request() {
    // Nothing listens on port 9 (discard) here.
    let limiter = RateLimiter::with_redis("redis://127.0.0.1:9/").expect("client");
    let (tenant, user) = (Uuid::now_v7(), Uuid::now_v7());
    let started = std::time::Instant::now();
    let results: Vec<bool> = {
        let mut v = Vec::new();
        for _ in 0..6 {
            v.push(allowed(&limiter, tenant, user).await);
        }
        v
    };
    assert_eq!(results, vec![true, true, true, true, true, false]);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "fails fast, then skips Redis"
    );
}
