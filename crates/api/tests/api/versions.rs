//! API versions: the header, the tenant's pinned version, the one change
//! shipped (events' `status`), deprecation headers, and the count of
//! versions in use per tenant.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::events::event;
use crate::helpers::{
    Fetch as _, TestApp, User, assert_json, assert_problem, invalid_fields, items,
};

const OLD: &str = "2026-11-01";
const NEW: &str = "2026-12-06";

fn id(tenant: &Value) -> String {
    tenant["id"].as_str().expect("id").to_owned()
}

async fn read_event(
    app: &TestApp,
    user: &User,
    event: &str,
    version: Option<&str>,
) -> reqwest::Response {
    let mut req = app.as_user(user, Method::GET, &format!("/v1/events/{event}"));
    if let Some(v) = version {
        req = req.header("tenantry-version", v);
    }
    req.fetch().await
}

fn header<'a>(res: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    res.headers().get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn the_same_endpoint_answers_each_version_in_its_own_shape() {
    let app = TestApp::spawn().await;
    let (tenant, owner) = app.tenant("acme").await;
    assert_eq!(tenant["api_version"], NEW, "new tenants get the newest");
    let kept = event(&app, &owner, "kept", 2).await;
    let gone = event(&app, &owner, "gone", 3).await;
    let res = app
        .as_user(&owner, Method::DELETE, &format!("/v1/events/{gone}"))
        .fetch()
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);

    // The newest: `status`, no `cancelled`.
    let res = read_event(&app, &owner, &gone, None).await;
    assert_eq!(header(&res, "tenantry-version"), Some(NEW));
    assert!(header(&res, "deprecation").is_none());
    let new = assert_json(res, StatusCode::OK).await;
    assert_eq!(new["status"], "cancelled");
    assert!(new.get("cancelled").is_none(), "{new}");

    // The older version, by header: `cancelled` back, `status` gone, the
    // rest the same; deprecated, so it says until when.
    let res = read_event(&app, &owner, &gone, Some(OLD)).await;
    assert_eq!(header(&res, "tenantry-version"), Some(OLD));
    assert!(header(&res, "deprecation").is_some_and(|d| d.starts_with('@')));
    assert_eq!(
        header(&res, "sunset"),
        Some("Wed, 30 Jun 2027 00:00:00 GMT")
    );
    let old = assert_json(res, StatusCode::OK).await;
    assert_eq!(old["cancelled"], true);
    assert!(old.get("status").is_none(), "{old}");
    let mut same = old.clone();
    same.as_object_mut().expect("object").remove("cancelled");
    let mut other = new.clone();
    other.as_object_mut().expect("object").remove("status");
    assert_eq!(same, other);

    // A list in the old version: every item.
    let page = assert_json(
        app.as_user(&owner, Method::GET, "/v1/events")
            .header("tenantry-version", OLD)
            .fetch()
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(items(&page).len(), 1);
    assert_eq!(items(&page)[0]["id"], kept);
    assert_eq!(items(&page)[0]["cancelled"], false);
    // A create in the old version answers the old shape too.
    let created = assert_json(
        app.as_user(&owner, Method::POST, "/v1/events")
            .header("tenantry-version", OLD)
            .json(&json!({"title": "t", "start_date": "2030-01-01T00:00:00Z"}))
            .fetch()
            .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(created["cancelled"], false);
}

#[tokio::test]
async fn a_tenant_pinned_to_the_old_version_gets_it_unless_a_request_names_another() {
    let app = TestApp::spawn().await;
    let (tenant, owner) = app.tenant("acme").await;
    let e = event(&app, &owner, "meet", 2).await;
    let pinned = assert_json(
        app.admin(Method::PATCH, &format!("/v1/admin/tenants/{}", id(&tenant)))
            .json(&json!({"api_version": OLD}))
            .fetch()
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(pinned["api_version"], OLD);
    let res = read_event(&app, &owner, &e, None).await;
    assert_eq!(header(&res, "tenantry-version"), Some(OLD));
    assert_eq!(assert_json(res, StatusCode::OK).await["cancelled"], false);
    let res = read_event(&app, &owner, &e, Some(NEW)).await;
    assert_eq!(header(&res, "tenantry-version"), Some(NEW));
    assert_eq!(
        assert_json(res, StatusCode::OK).await["status"],
        "scheduled"
    );

    // An unknown version is refused, pinned or named.
    let res = app
        .admin(Method::PATCH, &format!("/v1/admin/tenants/{}", id(&tenant)))
        .json(&json!({"api_version": "2020-01-01"}))
        .fetch()
        .await;
    assert_eq!(invalid_fields(res).await, ["api_version"]);
}

#[tokio::test]
async fn an_unknown_version_is_400_and_nothing_runs() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    for bad in ["2099-01-01", "yesterday", ""] {
        let res = app
            .as_user(&owner, Method::POST, "/v1/events")
            .header("tenantry-version", bad)
            .json(&json!({"title": "t", "start_date": "2030-01-01T00:00:00Z"}))
            .fetch()
            .await;
        assert_eq!(header(&res, "tenantry-version"), Some(NEW));
        let problem = assert_problem(res, StatusCode::BAD_REQUEST, "bad_request").await;
        assert!(
            problem["detail"].as_str().expect("detail").contains(OLD),
            "names the known versions: {problem}"
        );
    }
    assert_eq!(app.count("SELECT count(*) FROM events").await, 0);
}

#[tokio::test]
async fn every_response_says_its_version_and_use_is_counted_per_tenant() {
    let app = TestApp::spawn().await;
    let (a, a_owner) = app.tenant("acme").await;
    let (b, b_owner) = app.tenant("bravo").await;
    for path in ["/healthz", "/openapi.json", "/v1/nothing-here"] {
        let res = app.request(Method::GET, path).fetch().await;
        assert_eq!(header(&res, "tenantry-version"), Some(NEW), "{path}");
    }
    for _ in 0..3 {
        app.as_user(&a_owner, Method::GET, "/v1/posts")
            .header("tenantry-version", OLD)
            .fetch()
            .await;
    }
    app.as_user(&a_owner, Method::GET, "/v1/posts")
        .fetch()
        .await;
    app.as_user(&b_owner, Method::GET, "/v1/posts")
        .fetch()
        .await;

    let page = assert_json(
        app.admin(Method::GET, "/v1/admin/api-versions")
            .fetch()
            .await,
        StatusCode::OK,
    )
    .await;
    let seen: Vec<(String, String, u64, bool)> = items(&page)
        .iter()
        .map(|i| {
            (
                i["tenant_slug"].as_str().expect("slug").to_owned(),
                i["version"].as_str().expect("version").to_owned(),
                i["requests"].as_u64().expect("requests"),
                i["deprecated"].as_bool().expect("deprecated"),
            )
        })
        .collect();
    let find = |slug: &str, v: &str| {
        seen.iter()
            .find(|(s, ver, _, _)| s == slug && ver == v)
            .map(|(_, _, n, d)| (*n, *d))
    };
    assert_eq!(find("acme", OLD), Some((3, true)), "{seen:?}");
    assert_eq!(find("acme", NEW), Some((1, false)), "{seen:?}");
    assert_eq!(find("bravo", NEW), Some((1, false)), "{seen:?}");
    assert_eq!(find("bravo", OLD), None);

    // Narrowed to a version, paged one at a time.
    let page = assert_json(
        app.admin(
            Method::GET,
            &format!("/v1/admin/api-versions?version={OLD}&limit=1"),
        )
        .fetch()
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(items(&page).len(), 1);
    assert_eq!(items(&page)[0]["tenant_id"], id(&a));
    assert!(page["next_cursor"].is_null());
    let page = assert_json(
        app.admin(
            Method::GET,
            &format!("/v1/admin/api-versions?tenant={}", id(&b)),
        )
        .fetch()
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(items(&page).len(), 1);
}
