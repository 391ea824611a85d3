//! `POST /v1/shares`: content shared between two of the caller's
//! communities.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::events::event;
use crate::helpers::{Fetch as _, TestApp, User, assert_json, assert_problem, items};

async fn share(app: &TestApp, user: &User, body: Value) -> reqwest::Response {
    app.request(Method::POST, "/v1/shares")
        .bearer_auth(&user.token)
        .json(&body)
        .fetch()
        .await
}

/// acme and bravo, with `sharer` a member of both; charlie without them.
async fn setup(app: &TestApp) -> (User, User, User, User) {
    let (_, a) = app.tenant("acme").await;
    let (_, b) = app.tenant("bravo").await;
    let (_, c) = app.tenant("charlie").await;
    let sharer = app.member(&a, "member").await;
    app.as_user(&b, Method::POST, "/v1/members")
        .json(&json!({"user_id": sharer.id, "role": "member"}))
        .fetch()
        .await;
    (sharer, a, b, c)
}

#[tokio::test]
async fn a_shared_post_appears_in_the_targets_list_and_feed_with_its_origin_once() {
    let app = TestApp::spawn().await;
    let (sharer, a, b, _) = setup(&app).await;
    let original = app.post(&a, "Route conditions are great").await;
    let body = json!({"content_type": "post", "content_id": original,
                      "source_tenant": "acme", "target_tenant": "bravo"});
    let first = assert_json(
        share(&app, &sharer, body.clone()).await,
        StatusCode::CREATED,
    )
    .await;
    let copy = first["post"]["id"].as_str().expect("copy id").to_owned();
    assert_ne!(copy, original);
    assert_eq!(first["post"]["origin"]["id"], original.as_str());
    assert_eq!(first["post"]["origin"]["shared_by"], sharer.id.to_string());

    // Idempotent per (target, content): the same copy, 200.
    let again = assert_json(share(&app, &sharer, body).await, StatusCode::OK).await;
    assert_eq!(again["post"]["id"], copy.as_str());

    let page = assert_json(
        app.as_user(&b, Method::GET, "/v1/posts").fetch().await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(items(&page).len(), 1);
    assert_eq!(items(&page)[0]["content"], "Route conditions are great");
    assert_eq!(
        items(&page)[0]["origin"]["tenant_id"]
            .as_str()
            .map(str::len),
        Some(36)
    );

    let feed = assert_json(
        app.request(Method::GET, "/v1/feed?tenants=bravo")
            .bearer_auth(&sharer.token)
            .fetch()
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(items(&feed)[0]["id"], copy.as_str());
    assert_eq!(items(&feed)[0]["origin"]["id"], original.as_str());

    // Sharing the copy back into acme answers acme's original.
    let back = assert_json(
        share(
            &app,
            &sharer,
            json!({"content_type": "post", "content_id": copy,
                   "source_tenant": "bravo", "target_tenant": "acme"}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(back["post"]["id"], original.as_str());
}

#[tokio::test]
async fn a_shared_event_appears_in_the_targets_upcoming_list() {
    let app = TestApp::spawn().await;
    let (sharer, a, b, _) = setup(&app).await;
    let original = event(&app, &a, "Open day", 24).await;
    let res = share(
        &app,
        &sharer,
        json!({"content_type": "event", "content_id": original,
               "source_tenant": "acme", "target_tenant": "bravo"}),
    )
    .await;
    let shared = assert_json(res, StatusCode::CREATED).await;
    assert_eq!(shared["event"]["origin"]["id"], original.as_str());
    let page = assert_json(
        app.as_user(&b, Method::GET, "/v1/events").fetch().await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(items(&page)[0]["title"], "Open day");
}

#[tokio::test]
async fn a_non_member_can_share_neither_into_nor_from_a_community() {
    let app = TestApp::spawn().await;
    let (sharer, a, _b, c) = setup(&app).await;
    let acme_post = app.post(&a, "acme").await;
    let charlie_post = app.post(&c, "charlie").await;
    // Into charlie (not a member): 404 like an unknown tenant.
    let res = share(
        &app,
        &sharer,
        json!({"content_type": "post", "content_id": acme_post,
               "source_tenant": "acme", "target_tenant": "charlie"}),
    )
    .await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    // From charlie.
    let res = share(
        &app,
        &sharer,
        json!({"content_type": "post", "content_id": charlie_post,
               "source_tenant": "charlie", "target_tenant": "bravo"}),
    )
    .await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    // Nothing was written in charlie or bravo.
    let db = app.raw_db().await;
    let copies: i64 = db
        .query_one(
            "SELECT count(*) FROM posts WHERE origin_id IS NOT NULL",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(copies, 0);
}

#[tokio::test]
async fn the_source_must_really_hold_live_content() {
    let app = TestApp::spawn().await;
    let (sharer, a, _b, c) = setup(&app).await;
    // charlie's post named as if acme held it.
    let charlie_post = app.post(&c, "charlie").await;
    let res = share(
        &app,
        &sharer,
        json!({"content_type": "post", "content_id": charlie_post,
               "source_tenant": "acme", "target_tenant": "bravo"}),
    )
    .await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    // A deleted post.
    let gone = app.post(&a, "soon gone").await;
    app.as_user(&a, Method::DELETE, &format!("/v1/posts/{gone}"))
        .fetch()
        .await;
    let res = share(
        &app,
        &sharer,
        json!({"content_type": "post", "content_id": gone,
               "source_tenant": "acme", "target_tenant": "bravo"}),
    )
    .await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    // A post id named as an event.
    let post = app.post(&a, "a post").await;
    let res = share(
        &app,
        &sharer,
        json!({"content_type": "event", "content_id": post,
               "source_tenant": "acme", "target_tenant": "bravo"}),
    )
    .await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    // Same source and target, unknown type: 422.
    for body in [
        json!({"content_type": "post", "content_id": post, "source_tenant": "acme", "target_tenant": "acme"}),
        json!({"content_type": "video", "content_id": post, "source_tenant": "acme", "target_tenant": "bravo"}),
    ] {
        let res = share(&app, &sharer, body).await;
        assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    }
}
