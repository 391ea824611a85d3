//! Events: create, upcoming lists, edits and cancellation.

use chrono::{Duration, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Fetch as _, TestApp, User, assert_json, assert_problem, ids_of};

/// Creates an event starting `hours` from now; returns its id.
pub async fn event(app: &TestApp, user: &User, title: &str, hours: i64) -> String {
    let start = Utc::now() + Duration::hours(hours);
    let body = assert_json(
        app.as_user(user, Method::POST, "/v1/events")
            .json(&json!({"title": title, "start_date": start, "location_name": "Crag"}))
            .fetch()
            .await,
        StatusCode::CREATED,
    )
    .await;
    body["id"].as_str().expect("id").to_owned()
}

#[tokio::test]
async fn upcoming_events_list_soonest_first_and_leave_out_past_and_cancelled_ones() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let later = event(&app, &owner, "later", 48).await;
    let _past = event(&app, &owner, "past", -2).await;
    let soon = event(&app, &owner, "soon", 1).await;
    let cancelled = event(&app, &owner, "cancelled", 5).await;
    let res = app
        .as_user(&owner, Method::DELETE, &format!("/v1/events/{cancelled}"))
        .fetch()
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);

    let (sizes, all) = app.walk(&owner, "/v1/events", 1).await;
    let ids: Vec<&str> = all.iter().map(|e| e["id"].as_str().expect("id")).collect();
    assert_eq!(ids, [soon.as_str(), later.as_str()]);
    assert_eq!(sizes, [1, 1]);

    // The cancelled event still reads by id, marked cancelled.
    let read = assert_json(
        app.as_user(&owner, Method::GET, &format!("/v1/events/{cancelled}"))
            .fetch()
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(read["status"], "cancelled");
    // Cancelling twice: it is no longer there to cancel.
    let again = app
        .as_user(&owner, Method::DELETE, &format!("/v1/events/{cancelled}"))
        .fetch()
        .await;
    assert_problem(again, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn from_and_to_bound_the_upcoming_window() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let _a = event(&app, &owner, "in one hour", 1).await;
    let b = event(&app, &owner, "in a day", 24).await;
    let _c = event(&app, &owner, "in a week", 24 * 7).await;
    let from = (Utc::now() + Duration::hours(2)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let to = (Utc::now() + Duration::hours(48)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let page = assert_json(
        app.as_user(
            &owner,
            Method::GET,
            &format!("/v1/events?from={from}&to={to}"),
        )
        .fetch()
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(ids_of(&page, "id"), [b]);

    let bad = app
        .as_user(&owner, Method::GET, "/v1/events?from=yesterday")
        .fetch()
        .await;
    assert_problem(bad, StatusCode::BAD_REQUEST, "bad_request").await;
}

#[tokio::test]
async fn an_event_is_edited_by_its_creator_or_a_moderator_only() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let member = app.member(&owner, "member").await;
    let other = app.member(&owner, "member").await;
    let id = event(&app, &member, "meetup", 24).await;
    let path = format!("/v1/events/{id}");

    let res = app
        .as_user(&other, Method::PATCH, &path)
        .json(&json!({"title": "hijacked"}))
        .fetch()
        .await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;

    let edited = assert_json(
        app.as_user(&member, Method::PATCH, &path)
            .json(&json!({"title": "Meetup at the crag", "location_name": null}))
            .fetch()
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(edited["title"], "Meetup at the crag");
    assert_eq!(edited["location_name"], Value::Null);

    // An end before the start (after merging with the stored start) is 422.
    let start = edited["start_date"].as_str().expect("start");
    let before = chrono::DateTime::parse_from_rfc3339(start).expect("date") - Duration::hours(1);
    let res = app
        .as_user(&owner, Method::PATCH, &path)
        .json(&json!({"end_date": before}))
        .fetch()
        .await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;

    // A moderator (the owner here) may cancel it.
    let res = app.as_user(&owner, Method::DELETE, &path).fetch().await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn bad_event_bodies_answer_422_naming_the_field() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    for (body, field) in [
        (json!({"title": " ", "start_date": Utc::now()}), "title"),
        (
            json!({"title": "x", "start_date": "tomorrow"}),
            "start_date",
        ),
        (json!({"title": "x"}), "start_date"),
        (
            json!({"title": "x", "start_date": Utc::now(), "end_date": Utc::now() - Duration::days(1)}),
            "end_date",
        ),
    ] {
        let res = app
            .as_user(&owner, Method::POST, "/v1/events")
            .json(&body)
            .fetch()
            .await;
        let problem =
            assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
}

#[tokio::test]
async fn another_tenants_event_answers_404_and_non_members_get_403() {
    let app = TestApp::spawn().await;
    let (_, a) = app.tenant("acme").await;
    let (_, b) = app.tenant("bravo").await;
    let id = event(&app, &a, "acme only", 24).await;
    let res = app
        .as_user(&b, Method::GET, &format!("/v1/events/{id}"))
        .fetch()
        .await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    let res = app
        .as_user(&b, Method::PATCH, &format!("/v1/events/{id}"))
        .json(&json!({"title": "x"}))
        .fetch()
        .await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    let page = assert_json(
        app.as_user(&b, Method::GET, "/v1/events").fetch().await,
        StatusCode::OK,
    )
    .await;
    assert!(ids_of(&page, "id").is_empty());
    let stranger = app.user("acme");
    let res = app
        .as_user(&stranger, Method::GET, "/v1/events")
        .fetch()
        .await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
}
