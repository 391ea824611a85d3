//! User authentication: every refusal is a 401 with a Bearer challenge, and a
//! valid token provisions its user.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tenantry_api::request::auth::JwtKeys;
use uuid::Uuid;

use crate::helpers::{
    Fetch as _, JWT_SECRET, TestApp, User, assert_json, assert_problem, assert_unauthenticated,
};

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// Signs `claims` with the server's secret and `alg`.
fn sign(alg: Algorithm, claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        claims,
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .expect("sign a test token")
}

fn valid_claims() -> Value {
    json!({"sub": Uuid::now_v7().to_string(), "exp": now() + 600})
}

/// `GET /v1/tenant` in tenant `acme` with `authorization` (if any).
async fn get_tenant(app: &TestApp, authorization: Option<&str>) -> reqwest::Response {
    let mut req = app
        .request(Method::GET, "/v1/tenant")
        .header("x-tenant", "acme");
    if let Some(value) = authorization {
        req = req.header("authorization", value);
    }
    req.fetch().await
}

async fn refused(app: &TestApp, authorization: Option<&str>) -> String {
    let body = assert_unauthenticated(get_tenant(app, authorization).await).await;
    body["detail"].as_str().expect("a detail").to_owned()
}

#[tokio::test]
async fn a_request_without_authorization_is_refused() {
    let app = TestApp::spawn().await;
    app.tenant("acme").await;
    refused(&app, None).await;
}

#[tokio::test]
async fn a_non_bearer_scheme_is_refused() {
    let app = TestApp::spawn().await;
    app.tenant("acme").await;
    let token = app.token(Uuid::now_v7());
    refused(&app, Some(&format!("Basic {token}"))).await;
    refused(&app, Some("Basic dXNlcjpwYXNz")).await;
    refused(&app, Some(&token)).await;
    refused(&app, Some("Bearer")).await;
    refused(&app, Some("Bearer    ")).await;
}

#[tokio::test]
async fn a_garbage_token_is_refused() {
    let app = TestApp::spawn().await;
    app.tenant("acme").await;
    for token in [
        "garbage",
        "not.a.token",
        "a.b.c.d",
        "...",
        "eyJhbGciOiJIUzI1NiJ9.e30.",
    ] {
        refused(&app, Some(&format!("Bearer {token}"))).await;
    }
}

#[tokio::test]
async fn a_token_signed_with_another_secret_is_refused() {
    let app = TestApp::spawn().await;
    app.tenant("acme").await;
    let other = JwtKeys::new(b"another-secret-another-secret-another!!");
    let token = other
        .issue(Uuid::now_v7(), Duration::from_secs(600), None, None)
        .expect("issue");
    let detail = refused(&app, Some(&format!("Bearer {token}"))).await;
    assert!(detail.contains("signature"), "{detail}");
}

#[tokio::test]
async fn a_token_whose_payload_was_changed_is_refused() {
    let app = TestApp::spawn().await;
    app.tenant("acme").await;
    let token = app.token(Uuid::now_v7());
    let mut parts: Vec<&str> = token.split('.').collect();
    let forged = URL_SAFE_NO_PAD.encode(
        serde_json::to_vec(&json!({"sub": Uuid::now_v7().to_string(), "exp": now() + 600}))
            .expect("json"),
    );
    parts[1] = &forged;
    refused(&app, Some(&format!("Bearer {}", parts.join(".")))).await;
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let app = TestApp::spawn().await;
    app.tenant("acme").await;
    let token = sign(
        Algorithm::HS256,
        &json!({"sub": Uuid::now_v7().to_string(), "exp": now() - 3600}),
    );
    let detail = refused(&app, Some(&format!("Bearer {token}"))).await;
    assert!(detail.contains("expired"), "{detail}");
}

#[tokio::test]
async fn an_unsigned_alg_none_token_is_refused() {
    let app = TestApp::spawn().await;
    app.tenant("acme").await;
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&valid_claims()).expect("json"));
    refused(&app, Some(&format!("Bearer {header}.{payload}."))).await;
    // Also with the signature of a real token kept on.
    let real = app.token(Uuid::now_v7());
    let signature = real.rsplit('.').next().expect("a signature");
    refused(
        &app,
        Some(&format!("Bearer {header}.{payload}.{signature}")),
    )
    .await;
}

#[tokio::test]
async fn tokens_signed_with_hs384_or_hs512_are_refused() {
    let app = TestApp::spawn().await;
    app.tenant("acme").await;
    for alg in [Algorithm::HS384, Algorithm::HS512] {
        let token = sign(alg, &valid_claims());
        refused(&app, Some(&format!("Bearer {token}"))).await;
    }
}

#[tokio::test]
async fn a_sub_that_is_not_a_uuid_is_refused() {
    let app = TestApp::spawn().await;
    app.tenant("acme").await;
    for sub in [json!("alice"), json!(""), json!(42)] {
        let token = sign(Algorithm::HS256, &json!({"sub": sub, "exp": now() + 600}));
        refused(&app, Some(&format!("Bearer {token}"))).await;
    }
}

#[tokio::test]
async fn a_token_without_exp_or_sub_is_refused() {
    let app = TestApp::spawn().await;
    app.tenant("acme").await;
    let no_exp = sign(
        Algorithm::HS256,
        &json!({"sub": Uuid::now_v7().to_string()}),
    );
    refused(&app, Some(&format!("Bearer {no_exp}"))).await;
    let no_sub = sign(Algorithm::HS256, &json!({"exp": now() + 600}));
    refused(&app, Some(&format!("Bearer {no_sub}"))).await;
}

#[tokio::test]
async fn anonymous_callers_learn_nothing_about_tenants() {
    let app = TestApp::spawn().await;
    app.tenant("acme").await;
    for tenant in ["acme", "nosuchtenant"] {
        let res = app
            .request(Method::GET, "/v1/posts")
            .header("x-tenant", tenant)
            .fetch()
            .await;
        assert_unauthenticated(res).await;
    }
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let res = get_tenant(&app, Some(&format!("bearer {}", owner.token))).await;
    assert_json(res, StatusCode::OK).await;
}

#[tokio::test]
async fn a_valid_token_provisions_its_user_with_email_and_name() {
    let app = TestApp::spawn().await;
    app.tenant("acme").await;
    let id = Uuid::now_v7();
    let token = app
        .state
        .jwt
        .issue(
            id,
            Duration::from_secs(600),
            Some("ada@example.org".to_owned()),
            Some("Ada".to_owned()),
        )
        .expect("issue");
    let db = app.raw_db().await;
    let before = db
        .query_opt("SELECT 1 FROM users WHERE id = $1", &[&id])
        .await
        .expect("query");
    assert!(before.is_none(), "not provisioned before the first request");

    let view = assert_json(
        get_tenant(&app, Some(&format!("Bearer {token}"))).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(view["membership"], Value::Null);

    let row = db
        .query_one(
            "SELECT email, display_name FROM users WHERE id = $1",
            &[&id],
        )
        .await
        .expect("the user is provisioned");
    assert_eq!(
        row.get::<_, Option<String>>(0).as_deref(),
        Some("ada@example.org")
    );
    assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some("Ada"));

    // A later token with a new email refreshes it; one without keeps it.
    let renamed = app
        .state
        .jwt
        .issue(
            id,
            Duration::from_secs(600),
            Some("ada@example.com".to_owned()),
            None,
        )
        .expect("issue");
    assert_json(
        get_tenant(&app, Some(&format!("Bearer {renamed}"))).await,
        StatusCode::OK,
    )
    .await;
    let row = db
        .query_one(
            "SELECT email, display_name FROM users WHERE id = $1",
            &[&id],
        )
        .await
        .expect("the user is still there");
    assert_eq!(
        row.get::<_, Option<String>>(0).as_deref(),
        Some("ada@example.com")
    );
    assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some("Ada"));
}

#[tokio::test]
async fn a_provisioned_users_email_shows_in_the_member_list() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let id = Uuid::now_v7();
    let token = app
        .state
        .jwt
        .issue(
            id,
            Duration::from_secs(600),
            Some("bob@example.org".to_owned()),
            Some("Bob".to_owned()),
        )
        .expect("issue");
    let bob = User {
        id,
        token,
        tenant: "acme".to_owned(),
    };
    assert_json(
        app.as_user(&bob, Method::GET, "/v1/tenant").fetch().await,
        StatusCode::OK,
    )
    .await;
    let res = app
        .as_user(&owner, Method::POST, "/v1/members")
        .json(&json!({"user_id": id, "role": "member"}))
        .fetch()
        .await;
    let member = assert_json(res, StatusCode::CREATED).await;
    assert_eq!(member["email"], "bob@example.org");
    assert_eq!(member["display_name"], "Bob");
}

#[tokio::test]
async fn an_unauthenticated_user_scoped_route_gets_a_problem_with_a_request_id() {
    let app = TestApp::spawn().await;
    let res = app
        .request(Method::GET, "/v1/posts")
        .header("x-request-id", "auth-test-1")
        .fetch()
        .await;
    let body = assert_problem(res, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    assert_eq!(body["request_id"], "auth-test-1");
}

#[tokio::test]
async fn a_token_whose_claims_postgres_cannot_store_is_refused_not_a_500() {
    let app = TestApp::spawn().await;
    app.tenant("acme").await;
    let token = sign(
        Algorithm::HS256,
        &json!({"sub": Uuid::now_v7().to_string(), "exp": now() + 600, "email": "a\u{0}b@example.org"}),
    );
    let res = get_tenant(&app, Some(&format!("Bearer {token}"))).await;
    assert!(
        res.status().is_client_error(),
        "a bad claim is the client's error, got {}",
        res.status()
    );
}
