//! Caching: what a warmed request costs, write-then-read consistency on one
//! node and across nodes (LISTEN/NOTIFY, Redis pub/sub), the token cache,
//! and a Redis that dies mid-test.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tenantry_api::AppState;
use tenantry_cache::{Cache, CacheOptions, L2};
use tenantry_fairness::testing::RedisServer;

use crate::helpers::{Fetch, TestApp, User, assert_json, assert_problem, eventually};

/// The value of a counter in `/metrics` (0 when absent): the sum of the
/// series whose name and labels start with `series`.
async fn metric(app: &TestApp, series: &str) -> f64 {
    let text = app
        .request(Method::GET, "/metrics")
        .fetch()
        .await
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

const TENANT_STATEMENTS: &str = "tenantry_db_statements_total{route=\"/v1/tenant\"}";

fn id(tenant: &Value) -> String {
    tenant["id"].as_str().expect("tenant id").to_owned()
}

async fn patch_tenant(app: &TestApp, tenant: &str, body: Value) {
    assert_json(
        app.admin(Method::PATCH, &format!("/v1/admin/tenants/{tenant}"))
            .json(&body)
            .fetch()
            .await,
        StatusCode::OK,
    )
    .await;
}

#[tokio::test]
async fn a_warmed_get_tenant_sends_no_database_statement() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("quiet").await;
    let stranger = app.user("quiet");
    // Cold: the tenant, the owner's membership and the user's provisioning
    // are loaded.
    app.tenant_view(&owner).await;
    app.tenant_view(&stranger).await;
    let warmed = metric(&app, TENANT_STATEMENTS).await;
    assert!(warmed > 0.0, "cold requests read the database");
    for _ in 0..5 {
        let view = app.tenant_view(&owner).await;
        assert_eq!(view["membership"]["role"], "owner");
        assert_eq!(view["tenant"]["member_count"], 1);
        let view = app.tenant_view(&stranger).await;
        assert_eq!(view["membership"], Value::Null);
    }
    assert_eq!(
        metric(&app, TENANT_STATEMENTS).await,
        warmed,
        "warmed GET /v1/tenant sent statements"
    );
}

#[tokio::test]
async fn the_memo_counts_its_hits_and_the_requests_that_resolve_again() {
    const HITS: &str = "tenantry_memo_lookups_total{result=\"hit\"}";
    const MISSES: &str = "tenantry_memo_lookups_total{result=\"miss\"}";
    let app = TestApp::spawn().await;
    let (tenant, owner) = app.tenant("counted").await;
    let (_, bystander) = app.tenant("bystander").await;
    // The first request resolves the caller but need not keep it: a caller
    // is kept only when the record found by name is the very one the cache
    // holds by id (`remember` in `request/scope.rs`), and a first sight
    // loads the two apart. Warm until a repeat finds it.
    app.tenant_view(&owner).await;
    assert!(
        metric(&app, MISSES).await >= 1.0,
        "the first request missed"
    );
    for user in [&owner, &bystander] {
        eventually("a repeat request finds its caller", || async {
            let before = metric(&app, HITS).await;
            app.tenant_view(user).await;
            metric(&app, HITS).await > before
        })
        .await;
    }
    let (hits, misses) = (metric(&app, HITS).await, metric(&app, MISSES).await);
    for _ in 0..5 {
        app.tenant_view(&owner).await;
    }
    assert_eq!(metric(&app, HITS).await, hits + 5.0);
    assert_eq!(metric(&app, MISSES).await, misses);
    // A change of the tenant moves the caller's stamp: resolved again.
    patch_tenant(&app, &id(&tenant), json!({"name": "Counted again"})).await;
    let view = app.tenant_view(&owner).await;
    assert_eq!(view["tenant"]["name"], "Counted again");
    assert_eq!(metric(&app, MISSES).await, misses + 1.0);
    // Another tenant's caller is not: no name moved.
    app.tenant_view(&bystander).await;
    assert_eq!(
        metric(&app, MISSES).await,
        misses + 1.0,
        "the bystander resolved again"
    );
    patch_tenant(&app, &id(&tenant), json!({"limits": {"rate_per_sec": 500}})).await;
    app.tenant_view(&bystander).await;
    assert_eq!(
        metric(&app, MISSES).await,
        misses + 1.0,
        "the bystander resolved again"
    );
}

#[tokio::test]
async fn membership_changes_are_read_back_at_once() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("club").await;
    let member = app.member(&owner, "member").await;
    let view = app.tenant_view(&member).await;
    assert_eq!(view["membership"]["role"], "member");
    assert_eq!(view["tenant"]["member_count"], 2);

    let res = app
        .as_user(&owner, Method::PATCH, &format!("/v1/members/{}", member.id))
        .json(&json!({"role": "moderator"}))
        .fetch()
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        app.tenant_view(&member).await["membership"]["role"],
        "moderator"
    );

    let res = app
        .as_user(
            &owner,
            Method::DELETE,
            &format!("/v1/members/{}", member.id),
        )
        .fetch()
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let view = app.tenant_view(&member).await;
    assert_eq!(view["membership"], Value::Null);
    assert_eq!(view["tenant"]["member_count"], 1);
    let res = app.as_user(&member, Method::GET, "/v1/posts").fetch().await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
}

#[tokio::test]
async fn a_cached_tenant_answers_403_as_soon_as_it_is_suspended_and_404_once_deleted() {
    let app = TestApp::spawn().await;
    let (tenant, owner) = app.tenant("fickle").await;
    app.tenant_view(&owner).await;
    patch_tenant(&app, &id(&tenant), json!({"status": "suspended"})).await;
    let res = app.as_user(&owner, Method::GET, "/v1/tenant").fetch().await;
    assert_problem(res, StatusCode::FORBIDDEN, "tenant_suspended").await;
    patch_tenant(
        &app,
        &id(&tenant),
        json!({"status": "active", "name": "Renamed"}),
    )
    .await;
    assert_eq!(app.tenant_view(&owner).await["tenant"]["name"], "Renamed");
    let res = app
        .admin(
            Method::DELETE,
            &format!("/v1/admin/tenants/{}", id(&tenant)),
        )
        .fetch()
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let res = app.as_user(&owner, Method::GET, "/v1/tenant").fetch().await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn an_unknown_slug_is_found_as_soon_as_the_tenant_is_created() {
    let app = TestApp::spawn().await;
    let early = app.user("late");
    let res = app.as_user(&early, Method::GET, "/v1/tenant").fetch().await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    let (_, owner) = app.tenant("late").await;
    assert_eq!(app.tenant_view(&owner).await["tenant"]["slug"], "late");
}

#[tokio::test]
async fn the_token_cache_never_confuses_two_tokens() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("tokens").await;
    let other = app.user("tokens");
    for _ in 0..3 {
        assert_eq!(app.tenant_view(&owner).await["membership"]["role"], "owner");
        assert_eq!(app.tenant_view(&other).await["membership"], Value::Null);
    }
    // The same claims with another signature (same length, same ending but
    // for one character) must not ride on the cached entry.
    let mut forged = owner.token.clone();
    let flip = forged.len() - 12;
    let c = forged.as_bytes()[flip];
    let replacement = if c == b'A' { "B" } else { "A" };
    forged.replace_range(flip..flip + 1, replacement);
    let forged = User {
        token: forged,
        ..owner.clone()
    };
    let res = app
        .as_user(&forged, Method::GET, "/v1/tenant")
        .fetch()
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_remembered_caller_is_never_served_for_another_naming_of_the_tenant() {
    let app = TestApp::spawn().await;
    let (_, a) = app.tenant("memo-a").await;
    let (_, b) = app.tenant("memo-b").await;
    // The same token, first in a tenant it belongs to, then in one it does
    // not: each naming resolves on its own.
    let outsider = a.in_tenant("memo-b");
    for _ in 0..3 {
        assert_eq!(app.tenant_view(&a).await["membership"]["role"], "owner");
        let view = app.tenant_view(&outsider).await;
        assert_eq!(view["tenant"]["slug"], "memo-b");
        assert_eq!(view["membership"], Value::Null);
        assert_eq!(app.tenant_view(&b).await["membership"]["role"], "owner");
    }
    // Two signals naming different tenants stay a 400 after the header alone
    // was remembered.
    let res = app
        .as_user(&a, Method::GET, "/v1/tenant?tenant=memo-b")
        .fetch()
        .await;
    assert_problem(res, StatusCode::BAD_REQUEST, "bad_request").await;
    let res = app
        .as_user(&a, Method::GET, "/v1/tenant?tenant=memo-a")
        .fetch()
        .await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_first_page_of_posts_is_cached_until_a_post_changes() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("feed").await;
    let member = app.member(&owner, "member").await;
    let first = app.post(&owner, "one").await;
    let page = |u: &User| {
        let req = app.as_user(u, Method::GET, "/v1/posts");
        async move { assert_json(req.fetch().await, StatusCode::OK).await }
    };
    assert_eq!(page(&member).await["items"][0]["id"], first);
    let statements = "tenantry_db_statements_total{route=\"/v1/posts\"";
    let before = metric(&app, statements).await;
    assert_eq!(page(&owner).await["items"][0]["id"], first);
    assert_eq!(page(&member).await["items"][0]["id"], first);
    assert_eq!(
        metric(&app, statements).await,
        before,
        "a cached first page reads nothing"
    );

    let second = app.post(&member, "two").await;
    assert_eq!(page(&owner).await["items"][0]["id"], second);
    let res = app
        .as_user(&owner, Method::POST, &format!("/v1/posts/{first}/like"))
        .fetch()
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    // Lists show counters as the counter worker applies them (about every
    // second); applying drops the cached page, so the like shows soon, not
    // after the page's TTL.
    eventually("the like shows in the cached list", || async {
        page(&member).await["items"][1]["like_count"] == 1
    })
    .await;
    // Another tenant's first page is its own.
    let (_, stranger) = app.tenant("elsewhere").await;
    assert_eq!(page(&stranger).await["items"], json!([]));
}

#[tokio::test]
async fn a_like_or_a_comment_leaves_the_cached_first_page_until_its_count_is_applied() {
    let app = TestApp::spawn_configured(None, |mut state| {
        // No counter worker pass during the test.
        state.batch.counter_interval = Duration::from_secs(3_600);
        state
    })
    .await;
    let (_, owner) = app.tenant("quiet").await;
    let post = app.post(&owner, "one").await;
    let page = || {
        let req = app.as_user(&owner, Method::GET, "/v1/posts");
        async move { assert_json(req.fetch().await, StatusCode::OK).await }
    };
    assert_eq!(page().await["items"][0]["like_count"], 0);
    let statements = "tenantry_db_statements_total{route=\"/v1/posts\"";
    let before = metric(&app, statements).await;
    for (method, path) in [
        (Method::POST, format!("/v1/posts/{post}/like")),
        (Method::DELETE, format!("/v1/posts/{post}/like")),
        (Method::POST, format!("/v1/posts/{post}/like")),
    ] {
        let res = app.as_user(&owner, method, &path).fetch().await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    let res = app
        .as_user(&owner, Method::POST, &format!("/v1/posts/{post}/comments"))
        .json(&json!({"content": "first"}))
        .fetch()
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    // The list shows stored counts, which these writes leave alone: the
    // page is still the cached one, and still right.
    assert_eq!(page().await["items"][0]["like_count"], 0);
    assert_eq!(
        metric(&app, statements).await,
        before,
        "a like or a comment moved the cached page"
    );
    // The post itself shows them at once.
    let read = assert_json(
        app.as_user(&owner, Method::GET, &format!("/v1/posts/{post}"))
            .fetch()
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (read["like_count"].clone(), read["comment_count"].clone()),
        (json!(1), json!(1))
    );
}

#[tokio::test]
async fn the_first_page_of_members_is_cached_until_a_member_or_their_name_changes() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("guild").await;
    let member = app.member(&owner, "member").await;
    // The member as their tokens name them (each new token shows its email).
    let named = |email: &str| User {
        id: member.id,
        token: app
            .state
            .jwt
            .issue(
                member.id,
                Duration::from_secs(600),
                Some(email.to_owned()),
                Some("Mo".to_owned()),
            )
            .expect("issue"),
        tenant: member.tenant.clone(),
    };
    let page = |u: &User| {
        let req = app.as_user(u, Method::GET, "/v1/members");
        async move { assert_json(req.fetch().await, StatusCode::OK).await }
    };
    let row = |page: &Value, id: uuid::Uuid| {
        page["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|m| m["user_id"] == id.to_string())
            .cloned()
            .unwrap_or(Value::Null)
    };
    let first = named("mo@example.org");
    let mine = page(&first).await;
    assert_eq!(row(&mine, member.id)["email"], "mo@example.org");
    // Each caller's first request reads their membership (and provisions
    // a token not seen before); the page is the cached one by then.
    page(&owner).await;
    page(&member).await;
    let statements = "tenantry_db_statements_total{route=\"/v1/members\"";
    let before = metric(&app, statements).await;
    // One cached page, shown to each as their role allows.
    let owners = page(&owner).await;
    assert_eq!(row(&owners, member.id)["email"], "mo@example.org");
    assert_eq!(row(&owners, member.id)["display_name"], "Mo");
    let theirs = page(&member).await;
    assert_eq!(
        row(&theirs, member.id)["email"],
        "mo@example.org",
        "their own"
    );
    assert_eq!(row(&theirs, owner.id)["email"], Value::Null, "not an admin");
    assert_eq!(
        metric(&app, statements).await,
        before,
        "a cached first page reads nothing"
    );

    // A token with a new email: the member list shows it at once.
    page(&named("mo@example.com")).await;
    assert_eq!(
        row(&page(&owner).await, member.id)["email"],
        "mo@example.com"
    );
    // A new member, a role changed, a member removed: at once.
    let third = app.member(&owner, "member").await;
    assert_eq!(row(&page(&member).await, third.id)["role"], "member");
    let res = app
        .as_user(&owner, Method::PATCH, &format!("/v1/members/{}", third.id))
        .json(&json!({"role": "moderator"}))
        .fetch()
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(row(&page(&member).await, third.id)["role"], "moderator");
    let res = app
        .as_user(&owner, Method::DELETE, &format!("/v1/members/{}", third.id))
        .fetch()
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(row(&page(&member).await, third.id), Value::Null);
    // Someone removed is refused, though the page is cached.
    assert_problem(
        app.as_user(&third, Method::GET, "/v1/members")
            .fetch()
            .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    // Another tenant's first page is its own.
    let (_, stranger) = app.tenant("elsewhere").await;
    let theirs = page(&stranger).await;
    assert_eq!(theirs["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(row(&theirs, stranger.id)["role"], "owner");
}

#[tokio::test]
async fn the_usage_view_shows_the_tenants_cache_hit_rate() {
    let app = TestApp::spawn().await;
    let (tenant, owner) = app.tenant("measured").await;
    for _ in 0..4 {
        app.tenant_view(&owner).await;
    }
    let usage = assert_json(
        app.admin(
            Method::GET,
            &format!("/v1/admin/tenants/{}/usage", id(&tenant)),
        )
        .fetch()
        .await,
        StatusCode::OK,
    )
    .await;
    let cache = &usage["cache"];
    assert!(cache["hits"].as_u64().expect("hits") >= 3, "{cache}");
    assert!(cache["misses"].as_u64().expect("misses") >= 1, "{cache}");
    let rate = cache["hit_rate"].as_f64().expect("hit rate");
    assert!(rate > 0.5 && rate < 1.0, "{cache}");
}

/// How long a change on one node may take to be seen on another: the
/// fan-out delay, which is milliseconds; generous for a loaded test machine.
const BOUND: &str = "within 5 s";

#[tokio::test]
async fn a_change_on_one_node_is_seen_on_another_through_notify() {
    let a = TestApp::spawn().await;
    let b = a.spawn_peer(|s| s).await;
    let (tenant, owner) = a.tenant("shared").await;
    let member = a.member(&owner, "member").await;
    // Node B caches the tenant and the membership.
    assert_eq!(b.tenant_view(&member).await["membership"]["role"], "member");
    let res = b.as_user(&member, Method::GET, "/v1/posts").fetch().await;
    assert_eq!(res.status(), StatusCode::OK);

    peer_sees_removal_then_suspension(&a, &b, &id(&tenant), &owner, &member).await;
}

#[tokio::test]
async fn applied_counts_reach_another_nodes_cached_lists_through_one_notify() {
    let a = TestApp::spawn().await;
    let b = a.spawn_peer(|s| s).await;
    let mut owners = Vec::new();
    for slug in ["counted-1", "counted-2", "counted-3"] {
        let (_, owner) = a.tenant(slug).await;
        let post = a.post(&owner, "liked").await;
        owners.push((owner, post));
    }
    let first_likes = |owner: &User| {
        let req = b.as_user(owner, Method::GET, "/v1/posts");
        async move {
            assert_json(req.fetch().await, StatusCode::OK).await["items"][0]["like_count"].clone()
        }
    };
    // Node B caches each tenant's first page.
    for (owner, _) in &owners {
        assert_eq!(first_likes(owner).await, 0);
    }
    // Likes on node A, applied in one pass of whichever node's counter
    // worker comes first, announced to the other in one NOTIFY.
    for (owner, post) in &owners {
        let res = a
            .as_user(owner, Method::POST, &format!("/v1/posts/{post}/like"))
            .fetch()
            .await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    for (owner, _) in &owners {
        eventually(&format!("node B's list shows the like {BOUND}"), || async {
            first_likes(owner).await == 1
        })
        .await;
    }
}

/// Node A removes `member`, then suspends the tenant; node B must see each
/// change within [`BOUND`].
async fn peer_sees_removal_then_suspension(
    a: &TestApp,
    b: &TestApp,
    tenant: &str,
    owner: &User,
    member: &User,
) {
    let res = a
        .as_user(owner, Method::DELETE, &format!("/v1/members/{}", member.id))
        .fetch()
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    eventually(&format!("node B sees the removal {BOUND}"), || async {
        b.as_user(member, Method::GET, "/v1/posts")
            .fetch()
            .await
            .status()
            == StatusCode::FORBIDDEN
    })
    .await;
    assert_eq!(b.tenant_view(member).await["membership"], Value::Null);

    patch_tenant(a, tenant, json!({"status": "suspended"})).await;
    eventually(&format!("node B sees the suspension {BOUND}"), || async {
        b.as_user(owner, Method::GET, "/v1/tenant")
            .fetch()
            .await
            .status()
            == StatusCode::FORBIDDEN
    })
    .await;
}

/// A state whose cache uses `redis` (L2 and pub/sub), with NOTIFY as the
/// fallback.
fn with_redis(redis_url: &str) -> impl FnOnce(AppState) -> AppState {
    let url = redis_url.to_owned();
    move |state: AppState| {
        let db = state.db.clone();
        state.with_cache(Cache::new(CacheOptions {
            redis: Some(L2::new(&url, "test:").expect("redis url")),
            db: Some(db),
            ..CacheOptions::default()
        }))
    }
}

#[tokio::test]
async fn nodes_sharing_redis_share_entries_and_see_each_others_changes() {
    let redis = RedisServer::start();
    let a = TestApp::spawn_configured(None, with_redis(&redis.url())).await;
    let b = a.spawn_peer(with_redis(&redis.url())).await;
    let (tenant, owner) = a.tenant("pubsub").await;
    let member = a.member(&owner, "member").await;
    assert_eq!(a.tenant_view(&member).await["membership"]["role"], "member");
    // B finds in Redis what A loaded.
    assert_eq!(b.tenant_view(&member).await["membership"]["role"], "member");
    let l2_hits = b
        .state
        .cache
        .stats
        .ns("tenant")
        .hits_l2
        .load(std::sync::atomic::Ordering::Relaxed)
        + b.state
            .cache
            .stats
            .ns("member")
            .hits_l2
            .load(std::sync::atomic::Ordering::Relaxed);
    assert!(l2_hits >= 1, "node B read node A's entries from Redis");

    let res = a
        .as_user(&owner, Method::PATCH, &format!("/v1/members/{}", member.id))
        .json(&json!({"role": "admin"}))
        .fetch()
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    eventually(&format!("node B sees the new role {BOUND}"), || async {
        b.tenant_view(&member).await["membership"]["role"] == "admin"
    })
    .await;
    peer_sees_removal_then_suspension(&a, &b, &id(&tenant), &owner, &member).await;
}

#[tokio::test]
async fn when_redis_dies_the_nodes_keep_serving_and_recover_by_themselves() {
    let mut redis = RedisServer::start();
    let port = redis.port;
    let a = TestApp::spawn_configured(None, with_redis(&redis.url())).await;
    let b = a.spawn_peer(with_redis(&redis.url())).await;
    let (_, owner) = a.tenant("outage").await;
    let member = a.member(&owner, "member").await;
    assert_eq!(b.tenant_view(&member).await["membership"]["role"], "member");

    redis.stop();
    // Served from L1 (and the database), without waiting on Redis.
    assert_eq!(a.tenant_view(&owner).await["membership"]["role"], "owner");
    assert_eq!(b.tenant_view(&member).await["membership"]["role"], "member");
    // A change still reaches the other node (NOTIFY is the fallback).
    let res = a
        .as_user(
            &owner,
            Method::DELETE,
            &format!("/v1/members/{}", member.id),
        )
        .fetch()
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    eventually(
        &format!("node B sees the removal without Redis {BOUND}"),
        || async { b.tenant_view(&member).await["membership"] == Value::Null },
    )
    .await;

    let _redis = RedisServer::start_on(port);
    // Once the breaker lets Redis in again, generations are agreed there
    // again: a bump lands in Redis.
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).expect("client");
    let conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis is back");
    let tenant_id = a.tenant_view(&owner).await["tenant"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let joiner = a.user("outage");
    eventually("node A uses Redis again", || {
        let mut conn = conn.clone();
        let (a, owner, tenant_id) = (&a, &owner, tenant_id.clone());
        async move {
            let res = a
                .as_user(owner, Method::POST, "/v1/members")
                .json(&json!({"user_id": uuid::Uuid::now_v7(), "role": "member"}))
                .fetch()
                .await;
            assert_eq!(res.status(), StatusCode::CREATED);
            let generation: Option<u64> = redis::cmd("GET")
                .arg(format!("test:gen:{{{tenant_id}}}:"))
                .query_async(&mut conn)
                .await
                .expect("GET");
            generation.is_some()
        }
    })
    .await;
    // And both nodes agree on what they serve.
    assert_eq!(b.tenant_view(&joiner).await["membership"], Value::Null);
    eventually(
        &format!("node B sees the new member count {BOUND}"),
        || async {
            let (va, vb) = (a.tenant_view(&owner).await, b.tenant_view(&owner).await);
            va["tenant"]["member_count"] == vb["tenant"]["member_count"]
        },
    )
    .await;
}

#[tokio::test]
async fn platform_defaults_are_overlaid_with_each_tenants_own_settings() {
    let a = TestApp::spawn().await;
    let b = a.spawn_peer(|s| s).await;
    let (_, plain) = a.tenant("plain").await;
    let (_, themed) = a
        .tenant_with("themed", json!({"settings": {"theme": "dark"}}))
        .await;
    assert_eq!(
        b.tenant_view(&plain).await["tenant"]["effective_settings"],
        json!({})
    );
    let res = a
        .admin(Method::PATCH, "/v1/admin/settings")
        .json(&json!({"settings": {"theme": "light", "locale": "en"}}))
        .fetch()
        .await;
    let body = assert_json(res, StatusCode::OK).await;
    assert_eq!(body["settings"], json!({"theme": "light", "locale": "en"}));
    let view = a.tenant_view(&themed).await;
    assert_eq!(view["tenant"]["settings"], json!({"theme": "dark"}));
    assert_eq!(
        view["tenant"]["effective_settings"],
        json!({"theme": "dark", "locale": "en"})
    );
    eventually(&format!("node B sees the new defaults {BOUND}"), || async {
        b.tenant_view(&plain).await["tenant"]["effective_settings"]
            == json!({"theme": "light", "locale": "en"})
    })
    .await;
    let got = assert_json(
        a.admin(Method::GET, "/v1/admin/settings").fetch().await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(got["settings"]["locale"], "en");
    let res = a
        .admin(Method::PATCH, "/v1/admin/settings")
        .json(&json!({"settings": ["not", "an", "object"]}))
        .fetch()
        .await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
}

#[tokio::test]
async fn traffic_of_more_tenants_than_one_statement_carries_is_recorded_for_every_one() {
    let app = TestApp::spawn().await;
    let (tenant, _) = app.tenant("traffic-owner").await;
    let db = app.raw_db().await;
    let ids: Vec<uuid::Uuid> = db
        .query(
            "INSERT INTO tenants (id, slug, name, tier, owner_user_id)
             SELECT gen_random_uuid(), 'traffic-' || i, 'Traffic ' || i, 'free', owner_user_id
               FROM generate_series(1, 2500) i, tenants WHERE id = $1::text::uuid
             RETURNING id",
            &[&tenant["id"].as_str().expect("id")],
        )
        .await
        .expect("tenants")
        .iter()
        .map(|r| r.get(0))
        .collect();
    for id in &ids {
        let stats = app.state.cache.stats.tenant(*id);
        stats
            .requests
            .fetch_add(2, std::sync::atomic::Ordering::Relaxed);
    }
    let flushed = tenantry_api::warm::flush_traffic(&app.state)
        .await
        .expect("flush");
    assert!(flushed >= 2_500, "{flushed} rows updated");
    let recorded: i64 = db
        .query_one(
            "SELECT count(*) FROM tenants WHERE id = ANY($1) AND recent_requests = 2",
            &[&ids],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(recorded, 2_500, "every chunk's tenants were recorded");
}

#[tokio::test]
async fn warming_loads_premium_tiers_first_then_the_busiest() {
    use std::sync::atomic::Ordering::Relaxed;
    let app = TestApp::spawn().await;
    let (_, busy) = app.tenant("free-busy").await;
    let (_, idle) = app.tenant("free-idle").await;
    let (_, premium) = app.tenant_with("big", json!({"tier": "enterprise"})).await;
    for _ in 0..3 {
        app.tenant_view(&busy).await;
    }
    let flushed = tenantry_api::warm::flush_traffic(&app.state)
        .await
        .expect("flush");
    assert!(flushed >= 1, "the busy tenant's traffic is recorded");
    let recent: i64 = app
        .raw_db()
        .await
        .query_one(
            "SELECT recent_requests FROM tenants WHERE slug = 'free-busy'",
            &[],
        )
        .await
        .expect("row")
        .get(0);
    assert!(recent >= 3, "recent_requests {recent}");

    app.state.cache.reset().await;
    let warmed = tenantry_api::warm::warm_from_db(&app.state, 2)
        .await
        .expect("warm");
    assert_eq!(warmed, 2);
    let misses = || app.state.cache.stats.ns("tenant").misses.load(Relaxed);
    let before = misses();
    app.tenant_view(&premium).await;
    app.tenant_view(&busy).await;
    assert_eq!(
        misses(),
        before,
        "the enterprise and the busy tenant were warmed"
    );
    app.tenant_view(&idle).await;
    assert_eq!(misses(), before + 1, "the idle free tenant was not");
}

#[tokio::test]
async fn a_cached_request_needs_no_database_share() {
    let app = TestApp::spawn_fair(1024, Duration::from_millis(300)).await;
    let (tenant, owner) = app.tenant("busy").await;
    patch_tenant(&app, &id(&tenant), json!({"limits": {"db_concurrency": 1}})).await;
    app.tenant_view(&owner).await;
    // A write stuck behind the locked tenant row holds the tenant's only
    // database slot.
    let lock = app.raw_db().await;
    lock.batch_execute(&format!(
        "BEGIN; SELECT 1 FROM tenants WHERE id = '{}' FOR UPDATE",
        id(&tenant)
    ))
    .await
    .expect("lock the tenant row");
    let stuck = {
        let req = app
            .as_user(&owner, Method::POST, "/v1/posts")
            .json(&json!({"content": "waits"}));
        tokio::spawn(async move { req.send().await.map(|r| r.status()) })
    };
    eventually("the stuck write holds the tenant's slot", || async {
        app.state.fairness.db_share.stats().in_use >= 1
    })
    .await;
    // A request that needs the database waits past its budget: 503.
    let uncached = format!("/v1/posts/{}", uuid::Uuid::now_v7());
    let res = app.as_user(&owner, Method::GET, &uncached).fetch().await;
    assert_problem(res, StatusCode::SERVICE_UNAVAILABLE, "overloaded").await;
    // The cached one takes no slot and no connection.
    assert_eq!(app.tenant_view(&owner).await["membership"]["role"], "owner");
    lock.batch_execute("ROLLBACK").await.expect("unlock");
    let status = stuck.await.expect("join").expect("the write answers");
    assert_eq!(status, StatusCode::CREATED);
}
