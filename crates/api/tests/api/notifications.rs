//! Notification preferences over HTTP, and `Idempotency-Key` on
//! `POST /v1/announcements`.

use reqwest::header::HeaderValue;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{
    Fetch as _, TestApp, User, assert_json, assert_problem, assert_unauthenticated, eventually,
    items,
};

async fn unread(app: &TestApp, user: &User) -> Vec<Value> {
    let page = assert_json(
        app.as_user(user, Method::GET, "/v1/notifications?unread=true")
            .fetch()
            .await,
        StatusCode::OK,
    )
    .await;
    items(&page).clone()
}

async fn preferences(app: &TestApp, user: &User) -> Value {
    assert_json(
        app.as_user(user, Method::GET, "/v1/notifications/preferences")
            .fetch()
            .await,
        StatusCode::OK,
    )
    .await
}

async fn change(app: &TestApp, user: &User, method: Method, body: Value) -> reqwest::Response {
    app.as_user(user, method, "/v1/notifications/preferences")
        .json(&body)
        .fetch()
        .await
}

async fn announce(app: &TestApp, user: &User, title: &str) -> Value {
    assert_json(
        app.as_user(user, Method::POST, "/v1/announcements")
            .json(&json!({"title": title, "message": "Saturday at 10"}))
            .fetch()
            .await,
        StatusCode::ACCEPTED,
    )
    .await
}

/// Waits until the fan-out job `accepted` names has finished (a completed
/// job is deleted; a dead letter would stay).
async fn fanned_out(app: &TestApp, accepted: &Value) {
    let job: uuid::Uuid = accepted["job_id"]
        .as_str()
        .expect("job_id")
        .parse()
        .expect("a uuid");
    let db = app.raw_db().await;
    eventually("the fan-out job is done", || async {
        db.query_one("SELECT count(*) FROM jobs WHERE id = $1", &[&job])
            .await
            .expect("the job")
            .get::<_, i64>(0)
            == 0
    })
    .await;
}

/// Fan-out jobs ever enqueued: those still queued and those whose key
/// outlived them (a completed job is deleted, its key kept).
const FANOUT_JOBS: &str = "SELECT count(*) FROM (
         SELECT id FROM jobs WHERE kind = 'announcement.fanout'
         UNION SELECT job_id FROM job_keys WHERE key LIKE 'announcement:%'
     ) j";

#[tokio::test]
async fn a_member_who_mutes_announcements_is_not_notified_and_other_tenants_are_untouched() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let muted = app.member(&owner, "member").await;
    let listening = app.member(&owner, "member").await;
    // The muting member also belongs to another tenant.
    let (_, other_owner) = app.tenant("other").await;
    let res = app
        .as_user(&other_owner, Method::POST, "/v1/members")
        .json(&json!({"user_id": muted.id, "role": "member"}))
        .fetch()
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let muted_elsewhere = muted.in_tenant("other");

    // Everything is on until turned off.
    assert_eq!(
        preferences(&app, &muted).await,
        json!({"announcements": true})
    );
    let body = assert_json(
        change(&app, &muted, Method::PATCH, json!({"announcements": false})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(body, json!({"announcements": false}));
    assert_eq!(
        preferences(&app, &muted).await,
        json!({"announcements": false})
    );
    // Preferences are per tenant: the other one's are untouched.
    assert_eq!(
        preferences(&app, &muted_elsewhere).await,
        json!({"announcements": true})
    );
    let stored = app
        .count(
            "SELECT count(*) FROM memberships m JOIN tenants t ON t.id = m.tenant_id
         WHERE t.slug = 'other' AND m.notification_prefs <> '{}'",
        )
        .await;
    assert_eq!(stored, 0, "no preference stored in the other tenant");

    // The fan-out skips the muted member, and only in this tenant.
    let here = announce(&app, &owner, "Season opening").await;
    let there = announce(&app, &other_owner, "Elsewhere").await;
    fanned_out(&app, &here).await;
    fanned_out(&app, &there).await;
    assert!(unread(&app, &muted).await.is_empty());
    assert_eq!(unread(&app, &listening).await.len(), 1);
    assert_eq!(unread(&app, &owner).await.len(), 1);
    let elsewhere = unread(&app, &muted_elsewhere).await;
    assert_eq!(elsewhere.len(), 1);
    assert_eq!(elsewhere[0]["title"], "Elsewhere");

    // null in a merge patch is the default again; the next one arrives.
    let body = assert_json(
        change(&app, &muted, Method::PATCH, json!({"announcements": null})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(body, json!({"announcements": true}));
    let again = announce(&app, &owner, "Second").await;
    fanned_out(&app, &again).await;
    assert_eq!(unread(&app, &muted).await.len(), 1);

    // PUT replaces the whole set: a kind left out is back on.
    let body = assert_json(
        change(
            &app,
            &listening,
            Method::PUT,
            json!({"announcements": false}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(body, json!({"announcements": false}));
    let body = assert_json(
        change(&app, &listening, Method::PUT, json!({})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(body, json!({"announcements": true}));
    // An empty merge patch changes nothing.
    let body = assert_json(
        change(&app, &listening, Method::PATCH, json!({})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(body, json!({"announcements": true}));
}

#[tokio::test]
async fn bad_preference_bodies_are_422_and_non_members_403() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let member = app.member(&owner, "member").await;
    for (method, body, field) in [
        (Method::PATCH, json!({"sms": false}), "sms"),
        (Method::PUT, json!({"sms": false}), "sms"),
        (
            Method::PATCH,
            json!({"announcements": "off"}),
            "announcements",
        ),
        (Method::PUT, json!({"announcements": null, "x": 1}), "x"),
        (Method::PATCH, json!([false]), "body"),
    ] {
        let problem = assert_problem(
            change(&app, &member, method.clone(), body.clone()).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert_eq!(problem["errors"][0]["field"], field, "{method} {body}");
    }
    assert_eq!(
        preferences(&app, &member).await,
        json!({"announcements": true})
    );

    // Someone who is not a member of the tenant has no preferences in it.
    let (_, stranger) = app.tenant("other").await;
    let outsider = stranger.in_tenant("acme");
    assert_problem(
        app.as_user(&outsider, Method::GET, "/v1/notifications/preferences")
            .fetch()
            .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    assert_problem(
        change(
            &app,
            &outsider,
            Method::PATCH,
            json!({"announcements": false}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    assert_eq!(
        app.count("SELECT count(*) FROM memberships WHERE notification_prefs <> '{}'")
            .await,
        0
    );
    assert_unauthenticated(
        app.request(Method::GET, "/v1/notifications/preferences")
            .header("x-tenant", "acme")
            .fetch()
            .await,
    )
    .await;
}

fn keyed(app: &TestApp, user: &User, key: &str, title: &str) -> reqwest::RequestBuilder {
    app.as_user(user, Method::POST, "/v1/announcements")
        .header("idempotency-key", key)
        .json(&json!({"title": title, "message": "Saturday at 10"}))
}

#[tokio::test]
async fn a_retried_announcement_with_its_idempotency_key_is_answered_once_and_fanned_out_once() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let admin = app.member(&owner, "admin").await;
    let member = app.member(&owner, "member").await;
    let (_, other_owner) = app.tenant("other").await;

    let res = keyed(&app, &owner, "opening-2026", "Season opening")
        .fetch()
        .await;
    assert!(res.headers().get("idempotent-replayed").is_none());
    let first = assert_json(res, StatusCode::ACCEPTED).await;
    let res = keyed(&app, &owner, "opening-2026", "Season opening")
        .fetch()
        .await;
    assert_eq!(
        res.headers().get("idempotent-replayed"),
        Some(&HeaderValue::from_static("true"))
    );
    let retry = assert_json(res, StatusCode::ACCEPTED).await;
    assert_eq!(retry, first, "the retry answers the same id and job_id");
    fanned_out(&app, &first).await;
    // Once more after the fan-out finished: still the same, nothing new.
    let late = assert_json(
        keyed(&app, &owner, "opening-2026", "Season opening")
            .fetch()
            .await,
        StatusCode::ACCEPTED,
    )
    .await;
    assert_eq!(late, first);
    assert_eq!(app.count("SELECT count(*) FROM announcements").await, 1);
    assert_eq!(app.count(FANOUT_JOBS).await, 1);
    assert_eq!(unread(&app, &member).await.len(), 1);
    assert_eq!(
        app.count("SELECT count(*) FROM notifications").await,
        3,
        "one per member of acme"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM audit_log WHERE action = 'announcement.create'")
            .await,
        1
    );

    // The key is bound to its request: another body, or another admin,
    // with the same key is refused, and announces nothing.
    let problem = assert_problem(
        keyed(&app, &owner, "opening-2026", "Something else")
            .fetch()
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    )
    .await;
    assert!(problem["detail"].as_str().is_some());
    assert_problem(
        keyed(&app, &admin, "opening-2026", "Season opening")
            .fetch()
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    )
    .await;
    assert_eq!(app.count("SELECT count(*) FROM announcements").await, 1);

    // Keys are per tenant: the same key elsewhere is a new announcement.
    let elsewhere = assert_json(
        keyed(&app, &other_owner, "opening-2026", "Season opening")
            .fetch()
            .await,
        StatusCode::ACCEPTED,
    )
    .await;
    assert_ne!(elsewhere["id"], first["id"]);
    assert_ne!(elsewhere["job_id"], first["job_id"]);
    fanned_out(&app, &elsewhere).await;
    assert_eq!(unread(&app, &other_owner).await.len(), 1);
    assert_eq!(unread(&app, &member).await.len(), 1);

    // A refused request does not use up its key.
    assert_problem(
        keyed(&app, &member, "by-a-member", "Hi").fetch().await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    assert_json(
        keyed(&app, &owner, "by-a-member", "Hi").fetch().await,
        StatusCode::ACCEPTED,
    )
    .await;
    // Without a key, every request is a new announcement (as before).
    let a = announce(&app, &owner, "Unkeyed").await;
    let b = announce(&app, &owner, "Unkeyed").await;
    assert_ne!(a["id"], b["id"]);
}

#[tokio::test]
async fn concurrent_requests_with_one_idempotency_key_make_one_announcement() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let answers =
        futures::future::join_all((0..8).map(|_| keyed(&app, &owner, "race", "At once").fetch()))
            .await;
    let mut bodies = Vec::new();
    for res in answers {
        bodies.push(assert_json(res, StatusCode::ACCEPTED).await);
    }
    assert!(bodies.iter().all(|b| *b == bodies[0]), "{bodies:?}");
    assert_eq!(app.count("SELECT count(*) FROM announcements").await, 1);
    assert_eq!(app.count(FANOUT_JOBS).await, 1);
}

#[tokio::test]
async fn a_malformed_idempotency_key_is_a_bad_request() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let long = "k".repeat(256);
    for key in [
        HeaderValue::from_static(""),
        HeaderValue::from_str(&long).expect("a header value"),
        HeaderValue::from_bytes("clé".as_bytes()).expect("a header value"),
        HeaderValue::from_bytes(b"tab\there").expect("a header value"),
    ] {
        let res = app
            .as_user(&owner, Method::POST, "/v1/announcements")
            .header("idempotency-key", key.clone())
            .json(&json!({"title": "Hi", "message": "Hello"}))
            .fetch()
            .await;
        assert_problem(res, StatusCode::BAD_REQUEST, "bad_request").await;
    }
    let res = app
        .as_user(&owner, Method::POST, "/v1/announcements")
        .header("idempotency-key", "one")
        .header("idempotency-key", "two")
        .json(&json!({"title": "Hi", "message": "Hello"}))
        .fetch()
        .await;
    assert_problem(res, StatusCode::BAD_REQUEST, "bad_request").await;
    assert_eq!(app.count("SELECT count(*) FROM announcements").await, 0);
    // 255 printable characters, spaces included, are fine.
    let longest = format!("{} {}", "a".repeat(127), "~".repeat(127));
    assert_json(
        keyed(&app, &owner, &longest, "Hi").fetch().await,
        StatusCode::ACCEPTED,
    )
    .await;
}
