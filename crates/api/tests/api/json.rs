//! JSON bodies: only objects, and every value the server accepts reads back
//! as it was sent.
//!
//! PostgreSQL's jsonb prints `1.7976931348623157e308` back as a 309-digit
//! integer that serde_json's default parser refused. Stored, it once made
//! every read of its tenant panic and `GET /v1/admin/tenants` fail for the
//! whole platform.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Fetch as _, TestApp, assert_json, invalid_fields, items};

/// The largest float, which jsonb prints as a 309-digit integer.
const HUGE: f64 = f64::MAX;

async fn list_tenants(app: &TestApp) -> Value {
    assert_json(
        app.admin(Method::GET, "/v1/admin/tenants?limit=100")
            .fetch()
            .await,
        StatusCode::OK,
    )
    .await
}

#[tokio::test]
async fn the_largest_float_in_a_setting_is_kept_exactly_and_the_tenant_keeps_serving() {
    let app = TestApp::spawn().await;
    let (tenant, owner) = app.tenant("acme").await;
    let id = tenant["id"].as_str().expect("id");
    let settings = json!({"x": HUGE, "low": -HUGE, "tiny": 5e-324, "third": 0.1 + 0.2});

    let res = app
        .admin(Method::PATCH, &format!("/v1/admin/tenants/{id}"))
        .json(&json!({"settings": settings}))
        .fetch()
        .await;
    assert_eq!(assert_json(res, StatusCode::OK).await["settings"], settings);

    // It really went through jsonb, which prints it without an exponent.
    let stored: String = app
        .raw_db()
        .await
        .query_one(
            "SELECT settings->>'x' FROM tenants WHERE id = $1::text::uuid",
            &[&id],
        )
        .await
        .expect("read the stored setting")
        .get(0);
    assert_eq!(stored.len(), 309, "{stored}");

    assert_eq!(app.admin_tenant(id).await["settings"], settings);
    let list = list_tenants(&app).await;
    assert_eq!(items(&list)[0]["settings"], settings);
    assert_eq!(app.tenant_view(&owner).await["tenant"]["id"], *id);
    app.post(&owner, "still serving").await;
}

#[tokio::test]
async fn a_number_beyond_f64_is_a_422_naming_its_field_in_every_json_carrying_field() {
    let app = TestApp::spawn().await;
    let (tenant, owner) = app.tenant("acme").await;
    let id = tenant["id"].as_str().expect("id");
    let journey = assert_json(
        app.as_user(&owner, Method::POST, "/v1/journeys")
            .json(&json!({"title": "Alps"}))
            .fetch()
            .await,
        StatusCode::CREATED,
    )
    .await;
    let journey = journey["id"].as_str().expect("id");
    let owner_id = owner.id;
    let cases = [
        (
            app.admin(Method::PATCH, &format!("/v1/admin/tenants/{id}")),
            r#"{"settings": {"far": 1e400}}"#.to_owned(),
            "settings.far",
        ),
        (
            app.admin(Method::POST, "/v1/admin/tenants"),
            format!(
                r#"{{"slug": "o", "name": "O", "owner_user_id": "{owner_id}",
                    "features": {{"beta": {{"rollout": -1e400}}}}}}"#
            ),
            "features.beta.rollout",
        ),
        (
            app.admin(Method::PATCH, "/v1/admin/settings"),
            r#"{"settings": {"x": 2e308}}"#.to_owned(),
            "settings.x",
        ),
        (
            app.as_user(&owner, Method::POST, "/v1/journeys"),
            r#"{"title": "Alps", "locations": [{"lat": 1}, {"lat": 1e999}]}"#.to_owned(),
            "locations[1].lat",
        ),
        (
            app.as_user(
                &owner,
                Method::POST,
                &format!("/v1/journeys/{journey}/activities"),
            ),
            r#"{"title": "climb", "start_datetime": "2026-03-02T08:00:00Z",
                "location": {"alt": 1e400}}"#
                .to_owned(),
            "location.alt",
        ),
        (
            app.as_user(&owner, Method::POST, "/v1/analytics/events"),
            r#"{"events": [{"type": "view", "properties": {"n": 1e400}}]}"#.to_owned(),
            "events[0].properties.n",
        ),
    ];
    for (request, body, field) in cases {
        let res = request
            .header("content-type", "application/json")
            .body(body)
            .fetch()
            .await;
        assert_eq!(invalid_fields(res).await, [field]);
    }
    assert_eq!(items(&list_tenants(&app).await).len(), 1);
}

#[tokio::test]
async fn every_json_carrying_field_keeps_the_largest_float_exactly() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let odd = json!({"max": HUGE, "min": f64::MIN, "sub": 5e-324, "zero": -0.0});

    let created = assert_json(
        app.admin(Method::POST, "/v1/admin/tenants")
            .json(&json!({
                "slug": "other", "name": "Other", "owner_user_id": uuid::Uuid::now_v7(),
                "settings": odd, "features": {"beta": {"rollout": 50}, "odd": odd},
            }))
            .fetch()
            .await,
        StatusCode::CREATED,
    )
    .await;
    let other = app.admin_tenant(created["id"].as_str().expect("id")).await;
    assert_eq!(other["settings"], odd);
    assert_eq!(other["features"]["odd"], odd);

    let platform = assert_json(
        app.admin(Method::PATCH, "/v1/admin/settings")
            .json(&json!({"settings": {"odd": odd}}))
            .fetch()
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(platform["settings"]["odd"], odd);
    let platform = assert_json(
        app.admin(Method::GET, "/v1/admin/settings").fetch().await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(platform["settings"]["odd"], odd);

    let journey = assert_json(
        app.as_user(&owner, Method::POST, "/v1/journeys")
            .json(&json!({"title": "Alps", "locations": [odd, {"lat": 45.92}]}))
            .fetch()
            .await,
        StatusCode::CREATED,
    )
    .await;
    let journey = journey["id"].as_str().expect("id");
    let back = assert_json(
        app.as_user(&owner, Method::GET, &format!("/v1/journeys/{journey}"))
            .fetch()
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(back["locations"], json!([odd, {"lat": 45.92}]));

    let path = format!("/v1/journeys/{journey}/activities");
    assert_json(
        app.as_user(&owner, Method::POST, &path)
            .json(&json!({
                "title": "climb", "start_datetime": "2026-03-02T08:00:00Z", "location": odd,
            }))
            .fetch()
            .await,
        StatusCode::CREATED,
    )
    .await;
    let activities = assert_json(
        app.as_user(&owner, Method::GET, &path).fetch().await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(items(&activities)[0]["location"], odd);

    let res = app
        .as_user(&owner, Method::POST, "/v1/analytics/events")
        .json(&json!({"events": [{"type": "view", "properties": odd}]}))
        .fetch()
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let stored: Value = app
        .raw_db()
        .await
        .query_one("SELECT properties FROM analytics_events", &[])
        .await
        .expect("read the stored event")
        .get(0);
    assert_eq!(stored, odd);
}

#[tokio::test]
async fn a_row_already_holding_a_number_beyond_f64_still_reads_and_the_list_still_answers() {
    let app = TestApp::spawn().await;
    let (tenant, owner) = app.tenant("acme").await;
    app.tenant("globex").await;
    let id = tenant["id"].as_str().expect("id");
    // Written by hand (or by an older server): jsonb keeps any numeric.
    app.raw_db()
        .await
        .execute(
            "UPDATE tenants SET settings = '{\"x\": 1e400, \"y\": 2}'::jsonb
             WHERE id = $1::text::uuid",
            &[&id],
        )
        .await
        .expect("store the number");

    let list = list_tenants(&app).await;
    assert_eq!(items(&list).len(), 2);
    let acme = items(&list)
        .iter()
        .find(|t| t["id"] == *id)
        .expect("acme listed");
    // Kept as the digits PostgreSQL printed, since no f64 holds it.
    assert_eq!(acme["settings"]["x"], format!("1{}", "0".repeat(400)));
    assert_eq!(acme["settings"]["y"], 2);

    // A change to the tenant is acknowledged (not a 500 after its commit),
    // and the tenant keeps serving its members.
    let res = app
        .admin(Method::PATCH, &format!("/v1/admin/tenants/{id}"))
        .json(&json!({"name": "Acme Renamed"}))
        .fetch()
        .await;
    assert_eq!(
        assert_json(res, StatusCode::OK).await["name"],
        "Acme Renamed"
    );
    assert_eq!(
        app.tenant_view(&owner).await["tenant"]["name"],
        "Acme Renamed"
    );
    app.post(&owner, "still serving").await;
}

#[tokio::test]
async fn an_array_body_where_an_object_is_expected_is_a_422_and_creates_nothing() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let res = app
        .as_user(&owner, Method::POST, "/v1/posts")
        .json(&json!(["text"]))
        .fetch()
        .await;
    assert_eq!(invalid_fields(res).await, ["body"]);
    let res = app
        .as_user(&owner, Method::POST, "/v1/members")
        .json(&json!([uuid::Uuid::now_v7(), "member"]))
        .fetch()
        .await;
    assert_eq!(invalid_fields(res).await, ["body"]);
    assert_eq!(app.count("SELECT count(*) FROM posts").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM memberships").await, 1);
}

/// Any JSON: unicode strings, integers of every size, floats of every
/// magnitude (subnormals, `-0.0`, the extremes), nested a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop_oneof![
            any::<f64>(),
            Just(f64::MAX),
            Just(f64::MIN),
            Just(f64::MIN_POSITIVE),
            Just(5e-324),
            Just(-0.0),
            Just(1e300),
            Just(123_456_789_012_345_680_000_000.0),
        ]
        .prop_filter_map("finite", |x| serde_json::Number::from_f64(x)
            .map(Value::Number)),
        "\\PC{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("\\PC{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Settings to send: top-level null means "remove the key" in a merge
/// patch, so top-level values are anything but null.
fn any_settings() -> impl Strategy<Value = serde_json::Map<String, Value>> {
    prop::collection::btree_map(
        "\\PC{1,8}",
        any_json().prop_filter("not null", |v| !v.is_null()),
        1..4,
    )
    .prop_map(|m| m.into_iter().collect())
}

#[test]
fn any_json_sent_as_settings_or_locations_is_accepted_and_reads_back_equal() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let app = rt.block_on(TestApp::spawn());
    let (tenant, owner) = rt.block_on(app.tenant("acme"));
    let id = tenant["id"].as_str().expect("id").to_owned();
    let mut runner = TestRunner::new(Config {
        cases: 64,
        failure_persistence: None,
        ..Config::default()
    });
    let cases = (
        any_settings(),
        prop::collection::vec(any_json(), 0..3).prop_map(Value::Array),
    );
    runner
        .run(&cases, |(settings, locations)| {
            rt.block_on(async {
                let res = app
                    .admin(Method::PATCH, &format!("/v1/admin/tenants/{id}"))
                    .json(&json!({"settings": settings}))
                    .fetch()
                    .await;
                let status = res.status();
                let body: Value = res.json().await.expect("json");
                prop_assert_eq!(status, StatusCode::OK, "{}", body);
                // From the write's answer, and from a fresh read of the row.
                let list = list_tenants(&app).await;
                let stored = &items(&list)[0]["settings"];
                for (key, sent) in &settings {
                    prop_assert!(
                        same_json(&body["settings"][key], sent),
                        "answer, key {:?}: {} vs {}",
                        key,
                        body["settings"][key],
                        sent
                    );
                    prop_assert!(
                        same_json(&stored[key], sent),
                        "list, key {:?}: {} vs {}",
                        key,
                        stored[key],
                        sent
                    );
                }

                let res = app
                    .as_user(&owner, Method::POST, "/v1/journeys")
                    .json(&json!({"title": "trip", "locations": locations}))
                    .fetch()
                    .await;
                let status = res.status();
                let created: Value = res.json().await.expect("json");
                prop_assert_eq!(status, StatusCode::CREATED, "{}", created);
                prop_assert!(
                    same_json(&created["locations"], &locations),
                    "{} vs {}",
                    created["locations"],
                    locations
                );
                let path = format!("/v1/journeys/{}", created["id"].as_str().unwrap_or(""));
                let res = app.as_user(&owner, Method::GET, &path).fetch().await;
                let read: Value = res.json().await.expect("json");
                prop_assert!(
                    same_json(&read["locations"], &locations),
                    "{} vs {}",
                    read["locations"],
                    locations
                );
                Ok::<_, TestCaseError>(())
            })
        })
        .expect("any JSON reads back equal");
}

/// JSON equality as JSON means it: numbers by value. PostgreSQL's `jsonb`
/// keeps no integer/float distinction, so a float with an integral value
/// (`-8.668919830685236e18`) reads back as the integer it equals; two
/// integers still compare exactly (no precision is lost unnoticed).
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            x.as_f64() == y.as_f64()
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_json(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}
