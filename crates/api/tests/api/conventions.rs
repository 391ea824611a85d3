//! The conventions every endpoint follows: request ids, problem+json errors,
//! body and list parameter handling, and the operations endpoints.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{Fetch as _, TestApp, assert_html, assert_json, assert_problem};

fn request_id(res: &reqwest::Response) -> String {
    res.headers()
        .get("x-request-id")
        .expect("every response carries X-Request-Id")
        .to_str()
        .expect("a visible request id")
        .to_owned()
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let responses = [
        app.request(Method::GET, "/healthz").fetch().await,
        app.request(Method::GET, "/nowhere").fetch().await,
        app.request(Method::GET, "/v1/posts").fetch().await,
        app.as_user(&owner, Method::GET, "/v1/posts").fetch().await,
        app.as_user(&owner, Method::POST, "/v1/posts")
            .json(&json!({"content": ""}))
            .fetch()
            .await,
        app.admin(Method::GET, "/v1/admin/tenants").fetch().await,
    ];
    let mut ids: Vec<String> = responses.iter().map(request_id).collect();
    assert!(ids.iter().all(|id| !id.is_empty()));
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), responses.len(), "each request has its own id");
}

#[tokio::test]
async fn a_sane_incoming_request_id_is_echoed_and_an_insane_one_replaced() {
    let app = TestApp::spawn().await;
    let res = app
        .request(Method::GET, "/healthz")
        .header("x-request-id", "trace-abc-123")
        .fetch()
        .await;
    assert_eq!(request_id(&res), "trace-abc-123");

    let res = app
        .request(Method::GET, "/nowhere")
        .header("x-request-id", "trace-def-456")
        .fetch()
        .await;
    assert_eq!(request_id(&res), "trace-def-456");
    let body = assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(body["request_id"], "trace-def-456");

    for insane in ["x".repeat(65), "has space".to_owned(), String::new()] {
        let res = app
            .request(Method::GET, "/healthz")
            .header("x-request-id", &insane)
            .fetch()
            .await;
        let id = request_id(&res);
        assert_ne!(id, insane);
        assert!(!id.is_empty());
    }
}

#[tokio::test]
async fn an_unknown_route_is_a_404_problem() {
    let app = TestApp::spawn().await;
    for path in ["/nowhere", "/v1/postz", "/v1/posts/a/b/c", "/v2/posts"] {
        let res = app.request(Method::GET, path).fetch().await;
        assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    }
}

#[tokio::test]
async fn a_wrong_method_is_a_405_problem() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let res = app.request(Method::DELETE, "/healthz").fetch().await;
    assert_problem(res, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
    let res = app
        .as_user(&owner, Method::PUT, "/v1/posts")
        .json(&json!({"content": "x"}))
        .fetch()
        .await;
    assert_problem(res, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
}

#[tokio::test]
async fn a_405_names_the_allowed_methods() {
    let app = TestApp::spawn().await;
    let res = app.request(Method::DELETE, "/healthz").fetch().await;
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    let allow = res
        .headers()
        .get("allow")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(allow.contains("GET"), "Allow: {allow:?}");
}

#[tokio::test]
async fn malformed_json_is_a_bad_request() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    for body in ["{", "{\"content\": }", "not json", ""] {
        let res = app
            .as_user(&owner, Method::POST, "/v1/posts")
            .header("content-type", "application/json")
            .body(body)
            .fetch()
            .await;
        assert_problem(res, StatusCode::BAD_REQUEST, "bad_request").await;
    }
}

#[tokio::test]
async fn a_body_without_a_json_content_type_is_unsupported() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let res = app
        .as_user(&owner, Method::POST, "/v1/posts")
        .body(r#"{"content": "hello"}"#)
        .fetch()
        .await;
    assert_problem(
        res,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    let res = app
        .as_user(&owner, Method::POST, "/v1/posts")
        .header("content-type", "text/plain")
        .body(r#"{"content": "hello"}"#)
        .fetch()
        .await;
    assert_problem(
        res,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
}

#[tokio::test]
async fn a_body_over_one_mebibyte_is_too_large() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let body = json!({"content": "a".repeat(1 << 20)}).to_string();
    assert!(body.len() > 1 << 20);
    let res = app
        .as_user(&owner, Method::POST, "/v1/posts")
        .header("content-type", "application/json")
        .body(body)
        .fetch()
        .await;
    assert_problem(res, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;

    let res = app
        .admin(Method::POST, "/v1/admin/tenants")
        .header("content-type", "application/json")
        .body(json!({"slug": "big", "name": "x".repeat(2 << 20)}).to_string())
        .fetch()
        .await;
    assert_problem(res, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
}

#[tokio::test]
async fn a_field_of_the_wrong_type_is_a_422_naming_the_field() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let res = app
        .as_user(&owner, Method::POST, "/v1/posts")
        .json(&json!({"content": 5}))
        .fetch()
        .await;
    let body = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "content", "{body}");
    assert!(body["errors"][0]["message"].is_string());

    let res = app
        .as_user(&owner, Method::POST, "/v1/members")
        .json(&json!({"user_id": "not-a-uuid", "role": "member"}))
        .fetch()
        .await;
    let body = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "user_id", "{body}");
}

#[tokio::test]
async fn a_json_body_that_is_not_an_object_is_a_422() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    for body in [json!([]), json!("hello"), json!(null), json!({})] {
        let res = app
            .as_user(&owner, Method::POST, "/v1/posts")
            .json(&body)
            .fetch()
            .await;
        assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    }
}

#[tokio::test]
async fn list_limits_outside_1_to_100_are_bad_requests() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    for limit in ["0", "101", "abc", "-1", "1.5", ""] {
        let res = app
            .as_user(&owner, Method::GET, &format!("/v1/posts?limit={limit}"))
            .fetch()
            .await;
        assert_problem(res, StatusCode::BAD_REQUEST, "bad_request").await;
    }
    for limit in ["1", "100"] {
        let res = app
            .as_user(&owner, Method::GET, &format!("/v1/posts?limit={limit}"))
            .fetch()
            .await;
        assert_json(res, StatusCode::OK).await;
    }
}

#[tokio::test]
async fn lists_default_to_twenty_items() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    for i in 0..21 {
        app.post(&owner, &format!("post {i}")).await;
    }
    let page = assert_json(
        app.as_user(&owner, Method::GET, "/v1/posts").fetch().await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(page["items"].as_array().expect("items").len(), 20);
    assert!(page["next_cursor"].is_string());
}

#[tokio::test]
async fn a_garbage_cursor_is_a_bad_request() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    for cursor in ["garbage", "%%%", "eyJ9", "e30"] {
        let res = app
            .as_user(&owner, Method::GET, &format!("/v1/posts?cursor={cursor}"))
            .fetch()
            .await;
        assert_problem(res, StatusCode::BAD_REQUEST, "bad_request").await;
    }
}

/// A `next_cursor` from `path` (which must have a second page).
async fn cursor_of(app: &TestApp, user: &crate::helpers::User, path: &str) -> String {
    let page = assert_json(
        app.as_user(user, Method::GET, path).fetch().await,
        StatusCode::OK,
    )
    .await;
    page["next_cursor"]
        .as_str()
        .expect("the list has a next page")
        .to_owned()
}

#[tokio::test]
async fn a_cursor_from_another_tenants_list_is_a_bad_request() {
    let app = TestApp::spawn().await;
    let (_, a) = app.tenant("acme").await;
    let (_, b) = app.tenant("bravo").await;
    for _ in 0..2 {
        app.post(&a, "a post").await;
        app.post(&b, "b post").await;
    }
    let cursor = cursor_of(&app, &a, "/v1/posts?limit=1").await;
    let res = app
        .as_user(&b, Method::GET, &format!("/v1/posts?cursor={cursor}"))
        .fetch()
        .await;
    assert_problem(res, StatusCode::BAD_REQUEST, "bad_request").await;
}

#[tokio::test]
async fn a_cursor_from_another_list_is_a_bad_request() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    app.member(&owner, "member").await;
    let first = app.post(&owner, "first").await;
    let second = app.post(&owner, "second").await;
    for post in [&first, &second] {
        for i in 0..2 {
            app.as_user(&owner, Method::POST, &format!("/v1/posts/{post}/comments"))
                .json(&json!({"content": format!("comment {i}")}))
                .fetch()
                .await;
        }
    }
    let members_cursor = cursor_of(&app, &owner, "/v1/members?limit=1").await;
    let posts_cursor = cursor_of(&app, &owner, "/v1/posts?limit=1").await;
    let comments_cursor =
        cursor_of(&app, &owner, &format!("/v1/posts/{first}/comments?limit=1")).await;

    for path in [
        format!("/v1/posts?cursor={members_cursor}"),
        format!("/v1/members?cursor={posts_cursor}"),
        format!("/v1/posts?cursor={comments_cursor}"),
        format!("/v1/posts/{second}/comments?cursor={comments_cursor}"),
        format!("/v1/posts/{first}/comments?cursor={posts_cursor}"),
    ] {
        let res = app.as_user(&owner, Method::GET, &path).fetch().await;
        assert_problem(res, StatusCode::BAD_REQUEST, "bad_request").await;
    }
    let res = app
        .admin(
            Method::GET,
            &format!("/v1/admin/tenants?cursor={posts_cursor}"),
        )
        .fetch()
        .await;
    assert_problem(res, StatusCode::BAD_REQUEST, "bad_request").await;
}

#[tokio::test]
async fn a_path_id_that_is_not_a_uuid_is_404() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    for (method, path) in [
        (Method::GET, "/v1/posts/not-a-uuid"),
        (Method::DELETE, "/v1/posts/123"),
        (Method::POST, "/v1/posts/xyz/like"),
        (Method::GET, "/v1/posts/xyz/comments"),
        (Method::DELETE, "/v1/members/bob"),
    ] {
        let res = app.as_user(&owner, method, path).fetch().await;
        assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    }
}

#[tokio::test]
async fn healthz_and_readyz_answer_200() {
    let app = TestApp::spawn().await;
    let health = assert_json(
        app.request(Method::GET, "/healthz").fetch().await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(health["status"], "ok");
    let ready = assert_json(
        app.request(Method::GET, "/readyz").fetch().await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(ready["status"], "ready");
}

#[tokio::test]
async fn metrics_count_requests_by_tier() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    assert_json(
        app.as_user(&owner, Method::GET, "/v1/posts").fetch().await,
        StatusCode::OK,
    )
    .await;
    let res = app.request(Method::GET, "/metrics").fetch().await;
    assert_eq!(res.status(), StatusCode::OK);
    let content_type = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = res.text().await.expect("metrics text");
    assert!(text.contains("http_requests_total"), "{text}");
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("http_requests_total")
                && l.contains("tier=\"free\"")
                && l.contains("route=\"/v1/posts\"")
                && l.contains("method=\"GET\"")
                && l.contains("status=\"200\"")
        })
        .unwrap_or_else(|| panic!("a free-tier GET /v1/posts counter in:\n{text}"));
    assert!(!line.is_empty());
    assert!(text.contains("http_request_duration_seconds"));
}

#[tokio::test]
async fn the_openapi_document_describes_the_routes() {
    let app = TestApp::spawn().await;
    let doc: Value = assert_json(
        app.request(Method::GET, "/openapi.json").fetch().await,
        StatusCode::OK,
    )
    .await;
    let paths = doc["paths"].as_object().expect("paths");
    for path in [
        "/v1/posts",
        "/v1/posts/{id}",
        "/v1/members",
        "/v1/admin/tenants",
        "/v1/tenant",
    ] {
        assert!(paths.contains_key(path), "{path} is documented");
    }
    // The routes of branch api-gaps, with their methods and the header.
    let prefs = &paths["/v1/notifications/preferences"];
    for method in ["get", "put", "patch"] {
        assert!(prefs[method].is_object(), "preferences {method}");
    }
    assert!(paths["/v1/journeys/{id}/activities/{activity_id}"]["patch"].is_object());
    let params = paths["/v1/announcements"]["post"]["parameters"]
        .as_array()
        .expect("parameters");
    assert!(
        params
            .iter()
            .any(|p| p["name"] == "Idempotency-Key" && p["in"] == "header"),
        "{params:?}"
    );
}

#[tokio::test]
async fn the_docs_are_served_as_html() {
    let app = TestApp::spawn().await;
    let res = app.request(Method::GET, "/docs/").fetch().await;
    let html = assert_html(res).await;
    assert!(html.to_lowercase().contains("<html"), "{html}");
}

#[tokio::test]
async fn a_problem_never_leaks_internal_detail_for_unknown_ids() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let res = app
        .as_user(
            &owner,
            Method::GET,
            &format!("/v1/posts/{}", Uuid::now_v7()),
        )
        .fetch()
        .await;
    let body = assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    assert!(body.get("errors").is_none(), "only a 422 lists errors");
}

#[tokio::test]
async fn a_nul_character_in_post_text_is_refused_not_a_500() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let res = app
        .as_user(&owner, Method::POST, "/v1/posts")
        .json(&json!({"content": "before\u{0}after"}))
        .fetch()
        .await;
    let body = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "content");
}

#[tokio::test]
async fn a_nul_character_in_a_tenant_name_is_refused_not_a_500() {
    let app = TestApp::spawn().await;
    let res = app
        .admin(Method::POST, "/v1/admin/tenants")
        .json(&json!({"slug": "acme", "name": "Ac\u{0}me", "owner_user_id": Uuid::now_v7()}))
        .fetch()
        .await;
    let body = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "name");
}

#[tokio::test]
async fn a_nul_character_in_tenant_settings_is_refused_not_a_500() {
    let app = TestApp::spawn().await;
    let res = app
        .admin(Method::POST, "/v1/admin/tenants")
        .json(&json!({
            "slug": "acme",
            "name": "Acme",
            "owner_user_id": Uuid::now_v7(),
            "settings": {"motd": "a\u{0}b"},
        }))
        .fetch()
        .await;
    let body = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "settings");
}

#[tokio::test]
async fn an_error_never_shows_database_internals() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let res = app
        .as_user(&owner, Method::POST, "/v1/posts")
        .json(&json!({"content": "before\u{0}after"}))
        .fetch()
        .await;
    let status = res.status();
    let text = res.text().await.expect("body");
    assert!(
        status.is_client_error() || status.is_server_error(),
        "{status}"
    );
    for secret in ["0x00", "UTF8", "SQL", "postgres", "posts", "byte sequence"] {
        assert!(!text.contains(secret), "{secret:?} leaked in {text}");
    }
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        let body: Value = serde_json::from_str(&text).expect("problem json");
        assert_eq!(body["code"], "internal");
        assert_eq!(body["detail"], "internal error");
    }
}
