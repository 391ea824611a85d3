//! Feature flags: tier defaults, tenant overrides and rollouts, enforced on
//! the features' endpoints, shown in `GET /v1/tenant`, applied at once on
//! every node.

use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tenantry_core::features::Flag;
use tenantry_core::{Feature, TierTable};

use crate::events::event;
use crate::helpers::{
    Fetch as _, TestApp, User, assert_json, assert_problem, eventually, invalid_fields, items,
    test_tiers,
};

fn id(tenant: &Value) -> String {
    tenant["id"].as_str().expect("id").to_owned()
}

async fn set_features(app: &TestApp, tenant: &str, features: Value) -> Value {
    assert_json(
        app.admin(Method::PATCH, &format!("/v1/admin/tenants/{tenant}"))
            .json(&json!({ "features": features }))
            .fetch()
            .await,
        StatusCode::OK,
    )
    .await
}

async fn status(app: &TestApp, user: &User, method: Method, path: &str) -> StatusCode {
    app.as_user(user, method, path).fetch().await.status()
}

#[tokio::test]
async fn a_disabled_feature_answers_403_feature_disabled_and_comes_back_at_once() {
    let app = TestApp::spawn().await;
    let (tenant, owner) = app.tenant("acme").await;
    let tenant = id(&tenant);
    // Warm every cache and the caller's memo first: the change must reach
    // them too.
    for _ in 0..3 {
        assert_eq!(
            status(&app, &owner, Method::GET, "/v1/journeys").await,
            StatusCode::OK
        );
    }
    let view = set_features(&app, &tenant, json!({"journeys": false})).await;
    assert_eq!(view["features"], json!({"journeys": false}));
    assert_eq!(view["effective_features"]["journeys"], false);
    assert_eq!(view["effective_features"]["search"], true);

    let res = app
        .as_user(&owner, Method::GET, "/v1/journeys")
        .fetch()
        .await;
    let problem = assert_problem(res, StatusCode::FORBIDDEN, "feature_disabled").await;
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("journeys"),
        "{problem}"
    );
    // Every operation of the feature, writes included, and no other feature.
    let res = app
        .as_user(&owner, Method::POST, "/v1/journeys")
        .json(
            &json!({"title": "Alps", "is_public": true, "status": "active",
                      "start_date": "2026-03-01", "end_date": "2026-03-20"}),
        )
        .fetch()
        .await;
    assert_problem(res, StatusCode::FORBIDDEN, "feature_disabled").await;
    assert_eq!(
        status(&app, &owner, Method::GET, "/v1/posts").await,
        StatusCode::OK
    );
    assert_eq!(app.count("SELECT count(*) FROM journeys").await, 0);

    // `GET /v1/tenant` shows every feature, effective.
    let shown = app.tenant_view(&owner).await["tenant"]["features"].clone();
    for feature in Feature::ALL {
        let expected = feature != Feature::Journeys;
        assert_eq!(shown[feature.as_str()], expected, "{feature} in {shown}");
    }

    // null drops the override: the tier's (on) applies again, at once.
    set_features(&app, &tenant, json!({"journeys": null})).await;
    assert_eq!(
        status(&app, &owner, Method::GET, "/v1/journeys").await,
        StatusCode::OK
    );
    assert_eq!(
        app.tenant_view(&owner).await["tenant"]["features"]["journeys"],
        true
    );
}

#[tokio::test]
async fn each_gated_feature_guards_its_own_endpoints() {
    let app = TestApp::spawn().await;
    let (tenant, owner) = app.tenant("acme").await;
    let everything_off: serde_json::Map<String, Value> = Feature::ALL
        .iter()
        .map(|f| (f.as_str().to_owned(), json!(false)))
        .collect();
    set_features(&app, &id(&tenant), Value::Object(everything_off)).await;
    let gated: [(Method, &str, Value); 6] = [
        (Method::GET, "/v1/events", json!(null)),
        (Method::GET, "/v1/journeys", json!(null)),
        (Method::GET, "/v1/search?q=alps", json!(null)),
        (Method::GET, "/v1/stats/daily", json!(null)),
        (
            Method::POST,
            "/v1/analytics/events",
            json!({"events": [{"type": "page_view"}]}),
        ),
        (
            Method::POST,
            "/v1/announcements",
            json!({"title": "Hi", "message": "There"}),
        ),
    ];
    for (method, path, body) in gated {
        let mut req = app.as_user(&owner, method.clone(), path);
        if !body.is_null() {
            req = req.json(&body);
        }
        let res = req.fetch().await;
        assert_problem(res, StatusCode::FORBIDDEN, "feature_disabled").await;
    }
    // Features nobody can switch off still answer.
    for path in [
        "/v1/posts",
        "/v1/members",
        "/v1/tenant",
        "/v1/notifications",
    ] {
        assert_eq!(
            status(&app, &owner, Method::GET, path).await,
            StatusCode::OK,
            "{path}"
        );
    }
}

#[tokio::test]
async fn tier_defaults_tenant_overrides_and_rollouts_decide_together() {
    let app = TestApp::spawn().await;
    // The free tier ships without search; a tenant override turns it on.
    let mut tiers: TierTable = test_tiers();
    let free = tiers.tiers.get_mut("free").expect("free tier");
    free.features.set(Feature::Search, Flag::Off);
    free.features.set(Feature::Events, Flag::Rollout(100));
    app.state.tiers.store(Arc::new(tiers));

    let (plain, plain_owner) = app.tenant("plain").await;
    let (_, opted_owner) = app
        .tenant_with("opted", json!({"features": {"search": true}}))
        .await;
    let res = app
        .as_user(&plain_owner, Method::GET, "/v1/search?q=x")
        .fetch()
        .await;
    assert_problem(res, StatusCode::FORBIDDEN, "feature_disabled").await;
    assert_eq!(
        status(&app, &opted_owner, Method::GET, "/v1/search?q=x").await,
        StatusCode::OK
    );
    // A 100 % rollout is on for everyone, 0 % for no one.
    assert_eq!(
        status(&app, &plain_owner, Method::GET, "/v1/events").await,
        StatusCode::OK
    );
    set_features(&app, &id(&plain), json!({"events": {"rollout": 0}})).await;
    let res = app
        .as_user(&plain_owner, Method::GET, "/v1/events")
        .fetch()
        .await;
    assert_problem(res, StatusCode::FORBIDDEN, "feature_disabled").await;

    // A rollout decides the same way on every read, and the application's
    // own flags are decided alongside.
    let view = set_features(&app, &id(&plain), json!({"beta": {"rollout": 100}})).await;
    assert_eq!(view["effective_features"]["beta"], true);
    assert_eq!(
        app.tenant_view(&plain_owner).await["tenant"]["features"]["beta"],
        true
    );
}

#[tokio::test]
async fn a_feature_value_that_is_not_a_flag_is_refused() {
    let app = TestApp::spawn().await;
    let (tenant, _) = app.tenant("acme").await;
    for bad in [
        json!({"search": "yes"}),
        json!({"search": {"rollout": 101}}),
        json!({"search": {"rollout": 5, "extra": 1}}),
        json!({"search": [true]}),
    ] {
        let res = app
            .admin(Method::PATCH, &format!("/v1/admin/tenants/{}", id(&tenant)))
            .json(&json!({ "features": bad }))
            .fetch()
            .await;
        assert_eq!(invalid_fields(res).await, ["features.search"], "{bad}");
    }
    let res = app
        .admin(Method::POST, "/v1/admin/tenants")
        .json(
            &json!({"slug": "other", "name": "Other", "owner_user_id": uuid::Uuid::now_v7(),
                      "features": {"feed": 1}}),
        )
        .fetch()
        .await;
    assert_eq!(invalid_fields(res).await, ["features.feed"]);
}

/// `reader` in acme and bravo, each with posts and an event.
async fn two_communities(app: &TestApp) -> (User, Value, User, Value, User) {
    let (a_tenant, a) = app.tenant("acme").await;
    let (b_tenant, b) = app.tenant("bravo").await;
    let reader = app.member(&a, "member").await;
    let res = app
        .as_user(&b, Method::POST, "/v1/members")
        .json(&json!({"user_id": reader.id, "role": "member"}))
        .fetch()
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    for owner in [&a, &b] {
        app.post(owner, &format!("{} news", owner.tenant)).await;
        event(app, owner, &format!("{} meet", owner.tenant), 3).await;
    }
    (reader, a_tenant, a, b_tenant, b)
}

async fn feed_slugs(app: &TestApp, reader: &User, path: &str) -> Vec<String> {
    let page = assert_json(
        app.request(Method::GET, path)
            .bearer_auth(&reader.token)
            .fetch()
            .await,
        StatusCode::OK,
    )
    .await;
    items(&page)
        .iter()
        .map(|i| i["tenant_slug"].as_str().expect("slug").to_owned())
        .collect()
}

#[tokio::test]
async fn the_feed_leaves_out_a_community_with_the_feed_or_its_events_off() {
    let app = TestApp::spawn().await;
    let (reader, _, _, bravo, _) = two_communities(&app).await;
    let mut both = feed_slugs(&app, &reader, "/v1/feed").await;
    both.sort();
    assert_eq!(both, ["acme", "bravo"]);

    set_features(&app, &id(&bravo), json!({"feed": false})).await;
    assert_eq!(feed_slugs(&app, &reader, "/v1/feed").await, ["acme"]);
    // Named explicitly, it is still left out.
    assert_eq!(
        feed_slugs(&app, &reader, "/v1/feed?tenants=acme,bravo").await,
        ["acme"]
    );
    // Events off: its events leave the events feed, its posts come back.
    set_features(&app, &id(&bravo), json!({"feed": null, "events": false})).await;
    let mut posts = feed_slugs(&app, &reader, "/v1/feed").await;
    posts.sort();
    assert_eq!(posts, ["acme", "bravo"]);
    assert_eq!(
        feed_slugs(&app, &reader, "/v1/feed?type=events").await,
        ["acme"]
    );
}

#[tokio::test]
async fn sharing_needs_the_feature_in_both_communities() {
    let app = TestApp::spawn().await;
    let (reader, _, a, bravo, _) = two_communities(&app).await;
    let post = app.post(&a, "worth sharing").await;
    set_features(&app, &id(&bravo), json!({"shares": false})).await;
    let res = app
        .request(Method::POST, "/v1/shares")
        .bearer_auth(&reader.token)
        .json(&json!({"content_type": "post", "content_id": post,
                      "source_tenant": "acme", "target_tenant": "bravo"}))
        .fetch()
        .await;
    assert_problem(res, StatusCode::FORBIDDEN, "feature_disabled").await;
    assert_eq!(
        app.count("SELECT count(*) FROM posts WHERE origin_id IS NOT NULL")
            .await,
        0
    );
}

#[tokio::test]
async fn a_flag_change_reaches_another_node_at_once() {
    let a = TestApp::spawn().await;
    let b = a.spawn_peer(|s| s).await;
    let (tenant, owner) = a.tenant("shared").await;
    for _ in 0..3 {
        assert_eq!(
            status(&b, &owner, Method::GET, "/v1/journeys").await,
            StatusCode::OK
        );
    }
    set_features(&a, &id(&tenant), json!({"journeys": false})).await;
    eventually("node B refuses journeys", || async {
        status(&b, &owner, Method::GET, "/v1/journeys").await == StatusCode::FORBIDDEN
    })
    .await;
}
