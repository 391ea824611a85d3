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

/// The first instant of this month (UTC).
fn this_month() -> chrono::DateTime<Utc> {
    use chrono::Datelike as _;
    let now = Utc::now();
    Utc.with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
        .single()
        .expect("a month start")
}

fn time_of(value: &serde_json::Value) -> chrono::DateTime<Utc> {
    value.as_str().expect("a time").parse().expect("RFC 3339")
}

/// The partition that holds activity `id`.
async fn partition_of(app: &TestApp, id: &str) -> String {
    let id: uuid::Uuid = id.parse().expect("a uuid");
    app.raw_db()
        .await
        .query_one(
            "SELECT tableoid::regclass::text FROM journey_activities WHERE id = $1",
            &[&id],
        )
        .await
        .expect("the activity's row")
        .get(0)
}

#[tokio::test]
async fn the_owner_edits_an_activity_and_a_new_month_moves_it_to_that_partition() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let id = journey(&app, &owner, "Alps", true).await;
    let early = this_month() + Duration::days(3);
    let later = this_month() + Duration::days(40);
    let a = assert_json(
        activity(&app, &owner, &id, early).await,
        StatusCode::CREATED,
    )
    .await;
    let b = assert_json(
        activity(&app, &owner, &id, later).await,
        StatusCode::CREATED,
    )
    .await;
    let (a_id, b_id) = (
        a["id"].as_str().expect("id").to_owned(),
        b["id"].as_str().expect("id").to_owned(),
    );
    let path = format!("/v1/journeys/{id}/activities/{a_id}");
    let before = partition_of(&app, &a_id).await;

    // A merge patch: title and notes change, the rest stays.
    let edited = assert_json(
        app.as_user(&owner, Method::PATCH, &path)
            .json(&json!({"title": "  Summit day ", "notes": "early start"}))
            .fetch()
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(edited["id"], a["id"]);
    assert_eq!(edited["title"], "Summit day");
    assert_eq!(edited["notes"], "early start");
    assert_eq!(edited["location"], json!({"name": "hut"}));
    assert_eq!(edited["start_datetime"], a["start_datetime"]);
    assert_eq!(edited["created_at"], a["created_at"]);
    // null clears an optional field.
    let edited = assert_json(
        app.as_user(&owner, Method::PATCH, &path)
            .json(&json!({"location": null, "end_datetime": early + Duration::hours(5)}))
            .fetch()
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(edited["location"], serde_json::Value::Null);
    assert_eq!(edited["notes"], "early start");
    assert!(edited["end_datetime"].is_string());

    // Two months on: the row moves to that month's partition, the list
    // reorders, and the journey's span follows (narrowed at the start).
    let moved_to = this_month() + Duration::days(70);
    let edited = assert_json(
        app.as_user(&owner, Method::PATCH, &path)
            .json(&json!({"start_datetime": moved_to, "end_datetime": null}))
            .fetch()
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(time_of(&edited["start_datetime"]), moved_to);
    let after = partition_of(&app, &a_id).await;
    assert_ne!(after, before);
    assert_eq!(
        after,
        format!("journey_activities_p{}", moved_to.format("%Y%m"))
    );
    let (_, listed) = app
        .walk(&owner, &format!("/v1/journeys/{id}/activities"), 10)
        .await;
    let order: Vec<&str> = listed
        .iter()
        .map(|x| x["id"].as_str().expect("id"))
        .collect();
    assert_eq!(order, [b_id.as_str(), a_id.as_str()]);
    let j = assert_json(
        app.as_user(&owner, Method::GET, &format!("/v1/journeys/{id}"))
            .fetch()
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        time_of(&j["first_activity_at"]),
        time_of(&b["start_datetime"])
    );
    assert_eq!(time_of(&j["last_activity_at"]), moved_to);

    // The edits are in the audit log, with the fields they set.
    let log = assert_json(
        app.as_user(&owner, Method::GET, "/v1/audit-log")
            .fetch()
            .await,
        StatusCode::OK,
    )
    .await;
    let edits: Vec<&serde_json::Value> = crate::helpers::items(&log)
        .iter()
        .filter(|e| e["action"] == "activity.update")
        .collect();
    assert_eq!(edits.len(), 3);
    assert_eq!(edits[0]["target"], a["id"]);
    assert_eq!(edits[0]["actor_id"], json!(owner.id));
    assert_eq!(
        edits[0]["details"],
        json!({"journey_id": id, "fields": ["start_datetime", "end_datetime"], "moderated": false})
    );
}

#[tokio::test]
async fn only_the_owner_or_a_moderator_edits_an_activity_and_another_tenant_gets_404() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let member = app.member(&owner, "member").await;
    let moderator = app.member(&owner, "moderator").await;
    let public = journey(&app, &owner, "open", true).await;
    let private = journey(&app, &owner, "secret", false).await;
    let at = this_month() + Duration::days(5);
    let on_public = assert_json(
        activity(&app, &owner, &public, at).await,
        StatusCode::CREATED,
    )
    .await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let on_private = assert_json(
        activity(&app, &owner, &private, at).await,
        StatusCode::CREATED,
    )
    .await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let patch = |user: &User, journey: &str, activity: &str, body: serde_json::Value| {
        app.as_user(
            user,
            Method::PATCH,
            &format!("/v1/journeys/{journey}/activities/{activity}"),
        )
        .json(&body)
        .fetch()
    };

    // A member sees the public journey but may not change it.
    assert_problem(
        patch(&member, &public, &on_public, json!({"title": "mine"})).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    // A moderator may, and it is logged as moderation.
    let edited = assert_json(
        patch(&moderator, &public, &on_public, json!({"title": "tidied"})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(edited["title"], "tidied");
    let db = app.raw_db().await;
    let moderated: bool = db
        .query_one(
            "SELECT (details ->> 'moderated')::boolean FROM audit_log
             WHERE action = 'activity.update' AND actor_id = $1",
            &[&moderator.id],
        )
        .await
        .expect("the moderation entry")
        .get(0);
    assert!(moderated);
    // Nobody else sees a private journey: 404, moderators included.
    for user in [&member, &moderator] {
        assert_problem(
            patch(user, &private, &on_private, json!({"title": "x"})).await,
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
    }
    // An activity of another journey, an unknown one, a malformed id: 404.
    for (journey, activity) in [
        (public.as_str(), on_private.as_str()),
        (public.as_str(), "0190a4d0-0000-7000-8000-000000000000"),
        (public.as_str(), "not-a-uuid"),
    ] {
        assert_problem(
            patch(&owner, journey, activity, json!({"title": "x"})).await,
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
    }
    // Another tenant's owner, naming these ids in their tenant: 404.
    let (_, stranger) = app.tenant("bravo").await;
    assert_problem(
        patch(&stranger, &public, &on_public, json!({"title": "x"})).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    // ...and as a non-member of acme: 403, like every member-only route.
    assert_problem(
        patch(
            &stranger.in_tenant("acme"),
            &public,
            &on_public,
            json!({"title": "x"}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;

    // Bad patches: 422 naming the field, and nothing changes.
    for (body, field) in [
        (json!({"title": ""}), "title"),
        (json!({"title": null}), "title"),
        (json!({"start_datetime": null}), "start_datetime"),
        (json!({"start_datetime": "yesterday"}), "start_datetime"),
        (
            json!({"end_datetime": (at - Duration::hours(1)).to_rfc3339()}),
            "end_datetime",
        ),
        (json!({"notes": "a\u{0}b"}), "notes"),
        (json!({"colour": "red"}), "colour"),
    ] {
        let p = assert_problem(
            patch(&owner, &public, &on_public, body.clone()).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert_eq!(p["errors"][0]["field"], field, "{body}: {p}");
    }
    let (_, listed) = app
        .walk(&owner, &format!("/v1/journeys/{public}/activities"), 10)
        .await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["title"], "tidied");
}
