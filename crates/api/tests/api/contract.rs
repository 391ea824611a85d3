//! The published contract (`/openapi.json`) tells the truth: how a tenant is
//! named and who may call, every status an operation can answer with its
//! media type, and the bounds the server checks.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Fetch as _, TestApp, assert_html, assert_json};

async fn document(app: &TestApp) -> Value {
    assert_json(
        app.request(Method::GET, "/openapi.json").fetch().await,
        StatusCode::OK,
    )
    .await
}

/// Every operation: its path, its method and the operation object.
fn operations(doc: &Value) -> Vec<(&str, &str, &Value)> {
    let paths = doc["paths"].as_object().expect("paths");
    let mut all = Vec::new();
    for (path, item) in paths {
        for (method, operation) in item.as_object().expect("a path item") {
            all.push((path.as_str(), method.as_str(), operation));
        }
    }
    assert!(all.len() > 40, "the document lists the operations");
    all
}

/// API.md: everything under `/v1/` is tenant-scoped except the platform
/// admin's `/v1/admin/...` and the user-scoped communities, feed and shares.
fn tenant_scoped(path: &str) -> bool {
    path.starts_with("/v1/")
        && !path.starts_with("/v1/admin")
        && !matches!(path, "/v1/me/communities" | "/v1/feed" | "/v1/shares")
}

fn statuses(operation: &Value) -> Vec<u16> {
    operation["responses"]
        .as_object()
        .expect("responses")
        .keys()
        .map(|s| s.parse().expect("a numeric status"))
        .collect()
}

fn schema<'a>(doc: &'a Value, name: &str) -> &'a Value {
    let schema = &doc["components"]["schemas"][name];
    assert!(schema.is_object(), "schema {name} is documented");
    schema
}

#[tokio::test]
async fn every_tenant_scoped_operation_needs_the_users_jwt_and_the_tenant() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let tenant = &doc["components"]["securitySchemes"]["tenant"];
    assert_eq!(tenant["type"], "apiKey");
    assert_eq!(tenant["in"], "header");
    assert_eq!(tenant["name"], "X-Tenant");
    let mut seen = 0;
    for (path, method, operation) in operations(&doc) {
        if tenant_scoped(path) {
            seen += 1;
            assert_eq!(
                operation["security"],
                json!([{"user_jwt": [], "tenant": []}]),
                "{method} {path}"
            );
        }
    }
    assert!(seen > 30, "{seen} tenant-scoped operations");
}

#[tokio::test]
async fn user_scoped_and_admin_operations_declare_their_bearer_scheme() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["user_jwt"]["scheme"], "bearer");
    assert_eq!(schemes["admin_token"]["scheme"], "bearer");
    for (path, method, operation) in operations(&doc) {
        let expected = if path.starts_with("/v1/admin") {
            json!([{"admin_token": []}])
        } else if matches!(path, "/v1/me/communities" | "/v1/feed" | "/v1/shares") {
            json!([{"user_jwt": []}])
        } else if tenant_scoped(path) {
            continue;
        } else {
            Value::Null
        };
        assert_eq!(operation["security"], expected, "{method} {path}");
    }
}

#[tokio::test]
async fn every_error_response_is_a_problem() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    for (path, method, operation) in operations(&doc) {
        for (status, response) in operation["responses"].as_object().expect("responses") {
            if status.as_str() < "400" {
                continue;
            }
            assert_eq!(
                response["content"],
                json!({"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}),
                "{method} {path} {status}"
            );
            assert!(
                !response["description"]
                    .as_str()
                    .unwrap_or_default()
                    .is_empty(),
                "{method} {path} {status} says why"
            );
        }
        for (status, header) in [
            ("401", "WWW-Authenticate"),
            ("429", "Retry-After"),
            ("503", "Retry-After"),
        ] {
            let response = &operation["responses"][status];
            if response.is_object() {
                assert!(
                    response["headers"][header].is_object(),
                    "{method} {path} {status} has {header}"
                );
            }
        }
    }
}

#[tokio::test]
async fn every_operation_lists_what_the_request_pipeline_answers() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    for (path, method, operation) in operations(&doc) {
        let answers = statuses(operation);
        let mut expected = vec![503];
        if tenant_scoped(path) {
            expected.extend([400, 401, 403, 404, 429]);
        } else if path.starts_with("/v1/admin") {
            expected.push(401);
        } else if path.starts_with("/v1/") {
            expected.extend([401, 429]);
        }
        if operation["requestBody"].is_object() {
            expected.extend([400, 413, 415, 422]);
        }
        if path.contains('{') {
            expected.push(404);
        }
        for status in expected {
            assert!(
                answers.contains(&status),
                "{method} {path} documents {status}: {answers:?}"
            );
        }
    }
}

#[tokio::test]
async fn what_the_server_answers_is_documented() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let doc = document(&app).await;
    let posts = &doc["paths"]["/v1/posts"];
    let answers = [
        (
            "get",
            app.request(Method::GET, "/v1/posts").fetch().await,
            StatusCode::UNAUTHORIZED,
        ),
        (
            "get",
            app.request(Method::GET, "/v1/posts")
                .bearer_auth(&owner.token)
                .fetch()
                .await,
            StatusCode::BAD_REQUEST,
        ),
        (
            "get",
            app.request(Method::GET, "/v1/posts")
                .bearer_auth(&owner.token)
                .header("x-tenant", "nowhere")
                .fetch()
                .await,
            StatusCode::NOT_FOUND,
        ),
        (
            "get",
            app.as_user(&owner, Method::GET, "/v1/posts?limit=101")
                .fetch()
                .await,
            StatusCode::BAD_REQUEST,
        ),
        (
            "post",
            app.as_user(&owner, Method::POST, "/v1/posts")
                .body("{}")
                .fetch()
                .await,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "post",
            app.as_user(&owner, Method::POST, "/v1/posts")
                .json(&json!({"content": " "}))
                .fetch()
                .await,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ];
    for (method, res, status) in answers {
        assert_eq!(res.status(), status, "{method} /v1/posts");
        let documented = &posts[method]["responses"][status.as_str()];
        assert!(
            documented["content"]["application/problem+json"].is_object(),
            "{method} /v1/posts documents {status} as a problem"
        );
    }
}

#[tokio::test]
async fn limit_is_a_whole_number_from_1_to_100_and_cursor_an_opaque_string() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let mut lists = 0;
    for (path, method, operation) in operations(&doc) {
        let parameters = operation["parameters"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let Some(limit) = parameters.iter().find(|p| p["name"] == "limit") else {
            continue;
        };
        lists += 1;
        assert_eq!(limit["in"], "query", "{method} {path}");
        let schema = &limit["schema"];
        assert_eq!(schema["type"], "integer", "{method} {path}");
        assert_eq!(schema["minimum"], 1, "{method} {path}");
        assert_eq!(schema["maximum"], 100, "{method} {path}");
        let cursor = parameters
            .iter()
            .find(|p| p["name"] == "cursor")
            .unwrap_or_else(|| panic!("{method} {path} takes a cursor"));
        assert_eq!(cursor["schema"]["type"], "string", "{method} {path}");
    }
    assert!(lists >= 10, "{lists} lists");
}

#[tokio::test]
async fn every_id_in_a_path_is_a_declared_uuid() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    for (path, method, operation) in operations(&doc) {
        for name in path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
        {
            let parameters = operation["parameters"].as_array().expect("parameters");
            let declared = parameters
                .iter()
                .find(|p| p["in"] == "path" && p["name"] == name)
                .unwrap_or_else(|| panic!("{method} {path} declares {name}"));
            assert_eq!(declared["required"], true);
            assert_eq!(
                declared["schema"]["format"], "uuid",
                "{method} {path} {name}"
            );
        }
    }
}

#[tokio::test]
async fn text_fields_are_bounded_as_the_server_checks_them() {
    use tenantry_api::routes::{events, posts, search};
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let bounded = [
        ("PostBody", "content", posts::MAX_POST_CHARS),
        ("CommentBody", "content", posts::MAX_COMMENT_CHARS),
        ("CreateEvent", "title", events::MAX_TITLE_CHARS),
        ("CreateEvent", "description", events::MAX_DESCRIPTION_CHARS),
        ("CreateEvent", "location_name", events::MAX_LOCATION_CHARS),
    ];
    for (name, field, max) in bounded {
        let property = &schema(&doc, name)["properties"][field];
        assert_eq!(property["maxLength"], max, "{name}.{field}");
        assert_eq!(property["minLength"], 1, "{name}.{field}");
        assert_eq!(
            property["pattern"],
            tenantry_api::openapi::TEXT_PATTERN,
            "{name}.{field}"
        );
    }
    let q = doc["paths"]["/v1/search"]["get"]["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .find(|p| p["name"] == "q")
        .expect("q")
        .clone();
    assert_eq!(q["required"], true);
    assert_eq!(q["schema"]["maxLength"], search::MAX_QUERY_CHARS);
    assert_eq!(q["schema"]["pattern"], tenantry_api::openapi::TEXT_PATTERN);
    let post = app.tenant("acme").await.1;
    for (content, status) in [
        ("x".repeat(posts::MAX_POST_CHARS), StatusCode::CREATED),
        (
            "x".repeat(posts::MAX_POST_CHARS + 1),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let res = app
            .as_user(&post, Method::POST, "/v1/posts")
            .json(&json!({"content": content}))
            .fetch()
            .await;
        assert_eq!(res.status(), status);
    }
}

#[tokio::test]
async fn enums_name_every_value_the_server_accepts() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    assert_eq!(
        schema(&doc, "AddMember")["properties"]["role"]["enum"],
        json!(["owner", "admin", "moderator", "member"])
    );
    let mut tiers: Vec<Value> = crate::helpers::test_tiers()
        .tiers
        .keys()
        .map(|t| json!(t))
        .collect();
    tiers.push(Value::Null);
    assert_eq!(
        schema(&doc, "CreateTenant")["properties"]["tier"]["enum"],
        Value::Array(tiers)
    );
    assert_eq!(
        schema(&doc, "PatchTenant")["properties"]["status"]["enum"],
        json!(["active", "suspended", null])
    );
    let limits = &schema(&doc, "PatchTenant")["properties"]["limits"];
    assert_eq!(limits["additionalProperties"], false);
    assert_eq!(limits["properties"]["db_concurrency"]["minimum"], 1);
}

#[tokio::test]
async fn the_front_page_links_the_docs_the_dashboard_and_the_metrics() {
    let app = TestApp::spawn().await;
    let res = app.request(Method::GET, "/").fetch().await;
    let html = assert_html(res).await;
    for link in ["href=\"/docs/\"", "href=\"/admin\"", "href=\"/metrics\""] {
        assert!(html.contains(link), "{link} in {html}");
    }
    let doc = document(&app).await;
    assert!(doc["paths"]["/"]["get"]["responses"]["200"]["content"]["text/html"].is_object());
}

#[tokio::test]
async fn a_whole_number_written_with_a_fraction_is_a_valid_limit() {
    // The schema's `integer` admits `3.0`; so does the server.
    let app = TestApp::spawn().await;
    let (tenant, _) = app.tenant("acme").await;
    let id = tenant["id"].as_str().expect("id");
    let path = format!("/v1/admin/tenants/{id}");
    let changed = assert_json(
        app.admin(Method::PATCH, &path)
            .json(&json!({"limits": {"db_concurrency": 3.0, "max_posts": 1e3}}))
            .fetch()
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        changed["limits"],
        json!({"db_concurrency": 3, "max_posts": 1000})
    );
    let res = app
        .admin(Method::PATCH, &path)
        .json(&json!({"limits": {"db_concurrency": 2.5}}))
        .fetch()
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
}
