//! Journeys and their monthly-partitioned activities.

use chrono::{Duration, TimeZone as _, Utc};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{Fetch as _, TestApp, User, assert_json, assert_problem, ids_of};

async fn journey(app: &TestApp, user: &User, title: &str, public: bool) -> String {
    let body = assert_json(
        app.as_user(user, Method::POST, "/v1/journeys")
            .json(&json!({
                "title": title, "is_public": public, "status": "active",
                "start_date": "2026-03-01", "end_date": "2026-03-20",
                "locations": [{"name": "Chamonix", "lat": 45.92, "lon": 6.87}],
            }))
            .fetch()
            .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(body["locations"][0]["name"], "Chamonix");
    body["id"].as_str().expect("id").to_owned()
}

async fn activity(
    app: &TestApp,
    user: &User,
    journey: &str,
    at: chrono::DateTime<Utc>,
) -> reqwest::Response {
    app.as_user(
        user,
        Method::POST,
        &format!("/v1/journeys/{journey}/activities"),
    )
    .json(&json!({"title": format!("at {at}"), "start_datetime": at, "location": {"name": "hut"}}))
    .fetch()
    .await
}

#[tokio::test]
async fn activities_list_in_time_order_across_monthly_partitions() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let id = journey(&app, &owner, "Alps", false).await;
    // This month, next month and one far beyond the partitions made ahead
    // (it lands in the default partition and is still listed).
    let now = Utc::now();
    let times = [
        now + Duration::days(40),
        now,
        Utc.with_ymd_and_hms(2100, 1, 1, 0, 0, 0)
            .single()
            .expect("date"),
    ];
    for at in times {
        assert_eq!(
            activity(&app, &owner, &id, at).await.status(),
            StatusCode::CREATED
        );
    }
    let (sizes, all) = app
        .walk(&owner, &format!("/v1/journeys/{id}/activities"), 2)
        .await;
    assert_eq!(sizes, [2, 1]);
    let starts: Vec<chrono::DateTime<Utc>> = all
        .iter()
        .map(|a| {
            a["start_datetime"]
                .as_str()
                .expect("start")
                .parse()
                .expect("time")
        })
        .collect();
    let mut sorted = times.to_vec();
    sorted.sort();
    let close =
        |a: chrono::DateTime<Utc>, b: chrono::DateTime<Utc>| (a - b).num_milliseconds().abs() < 1;
    assert!(
        starts.iter().zip(&sorted).all(|(a, b)| close(*a, *b)),
        "{starts:?}"
    );

    // Rows really sit in their partitions: the far one in the default.
    let db = app.raw_db().await;
    let in_default: i64 = db
        .query_one("SELECT count(*) FROM journey_activities_default", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(in_default, 1);

    // from/to select a window.
    let from = (now + Duration::days(30)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let to = (now + Duration::days(50)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let page = assert_json(
        app.as_user(
            &owner,
            Method::GET,
            &format!("/v1/journeys/{id}/activities?from={from}&to={to}"),
        )
        .fetch()
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(ids_of(&page, "id").len(), 1);

    // The journey keeps the span of its activities.
    let j = assert_json(
        app.as_user(&owner, Method::GET, &format!("/v1/journeys/{id}"))
            .fetch()
            .await,
        StatusCode::OK,
    )
    .await;
    assert!(j["first_activity_at"].is_string() && j["last_activity_at"].is_string());
}

#[tokio::test]
async fn a_private_journey_is_its_owners_alone_and_a_public_one_is_read_only_to_others() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let member = app.member(&owner, "member").await;
    let private = journey(&app, &owner, "secret", false).await;
    let public = journey(&app, &owner, "open", true).await;

    let res = app
        .as_user(&member, Method::GET, &format!("/v1/journeys/{private}"))
        .fetch()
        .await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    let res = app
        .as_user(
            &member,
            Method::GET,
            &format!("/v1/journeys/{private}/activities"),
        )
        .fetch()
        .await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    let res = activity(&app, &member, &private, Utc::now()).await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;

    let res = app
        .as_user(&member, Method::GET, &format!("/v1/journeys/{public}"))
        .fetch()
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = activity(&app, &member, &public, Utc::now()).await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;

    // The owner's list as someone else sees it: the public journey only.
    let page = assert_json(
        app.as_user(
            &member,
            Method::GET,
            &format!("/v1/journeys?user_id={}", owner.id),
        )
        .fetch()
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(ids_of(&page, "id"), [public]);
    let (_, mine) = app.walk(&owner, "/v1/journeys", 1).await;
    assert_eq!(mine.len(), 2);
}

#[tokio::test]
async fn another_tenants_journey_answers_404_and_bad_bodies_422() {
    let app = TestApp::spawn().await;
    let (_, a) = app.tenant("acme").await;
    let (_, b) = app.tenant("bravo").await;
    let id = journey(&app, &a, "acme trip", true).await;
    let res = app
        .as_user(&b, Method::GET, &format!("/v1/journeys/{id}"))
        .fetch()
        .await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    let res = activity(&app, &b, &id, Utc::now()).await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;

    for (body, field) in [
        (json!({"title": "x", "status": "lost"}), "status"),
        (
            json!({"title": "x", "locations": {"not": "an array"}}),
            "locations",
        ),
        (
            json!({"title": "x", "start_date": "2026-05-02", "end_date": "2026-05-01"}),
            "end_date",
        ),
        (json!({"title": ""}), "title"),
    ] {
        let res = app
            .as_user(&a, Method::POST, "/v1/journeys")
            .json(&body)
            .fetch()
            .await;
        let p = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert_eq!(p["errors"][0]["field"], field, "{p}");
    }
}

#[tokio::test]
async fn the_owner_edits_a_journeys_status_flag_dates_and_locations_and_nobody_else_does() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let member = app.member(&owner, "member").await;
    let id = journey(&app, &owner, "Alps", true).await;
    let path = format!("/v1/journeys/{id}");
    let edited = assert_json(
        app.as_user(&owner, Method::PATCH, &path)
            .json(
                &json!({"status": "completed", "is_public": false, "end_date": null,
                          "locations": [{"name": "Zermatt"}]}),
            )
            .fetch()
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(edited["status"], "completed");
    assert_eq!(edited["is_public"], false);
    assert_eq!(edited["end_date"], serde_json::Value::Null);
    assert_eq!(edited["start_date"], "2026-03-01");
    assert_eq!(edited["locations"][0]["name"], "Zermatt");
    assert_eq!(edited["title"], "Alps");

    // Now private: another member cannot see it, so cannot edit it either.
    let res = app
        .as_user(&member, Method::PATCH, &path)
        .json(&json!({"title": "mine"}))
        .fetch()
        .await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    // Public again: visible, but still not theirs to change.
    app.as_user(&owner, Method::PATCH, &path)
        .json(&json!({"is_public": true}))
        .fetch()
        .await;
    let res = app
        .as_user(&member, Method::PATCH, &path)
        .json(&json!({"title": "mine"}))
        .fetch()
        .await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;

    for (body, field) in [
        (json!({"status": "lost"}), "status"),
        (json!({"end_date": "2026-02-01"}), "end_date"),
        (json!({"locations": "Zermatt"}), "locations"),
    ] {
        let res = app
            .as_user(&owner, Method::PATCH, &path)
            .json(&body)
            .fetch()
            .await;
        let p = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert_eq!(p["errors"][0]["field"], field, "{p}");
    }
}
