//! SIGHUP reloads the tiers file: a real signal to this test's process (each
//! test runs in a process of its own under nextest), a real server.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tenantry_core::TierTable;

use crate::helpers::{ADMIN_TOKEN, Fetch as _, FreshDatabase, JWT_SECRET, assert_json, test_tiers};

struct Served {
    addr: std::net::SocketAddr,
    state: Arc<tenantry_api::AppState>,
    client: reqwest::Client,
    _db: FreshDatabase,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Served {
    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

/// A server like `tenantry serve --config <file>`.
async fn serve(config: &std::path::Path) -> Served {
    let db = FreshDatabase::migrated().await;
    let settings = tenantry_api::Settings {
        listen: ([127, 0, 0, 1], 0).into(),
        database_url: Some(db.url.clone()),
        jwt_secret: Some(JWT_SECRET.to_owned()),
        admin_token: Some(ADMIN_TOKEN.to_owned()),
        config_file: Some(config.to_owned()),
        db_max_connections: 8,
        ..tenantry_api::Settings::default()
    };
    let app = tenantry_api::Application::build(settings)
        .await
        .expect("build the server");
    let addr = app.local_addr().expect("addr");
    let state = app.state();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    let served = Served {
        addr,
        state,
        client: reqwest::Client::new(),
        _db: db,
        _stop: stop,
    };
    // Answering means run_until is past its SIGHUP registration.
    crate::helpers::eventually("the server answers", || async {
        served
            .client
            .get(served.url("/healthz"))
            .send()
            .await
            .is_ok()
    })
    .await;
    served
}

fn write(path: &std::path::Path, tiers: &TierTable) {
    std::fs::write(path, toml::to_string(tiers).expect("tiers as TOML")).expect("write the file");
}

fn hangup() {
    nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGHUP)
        .expect("send SIGHUP");
}

#[tokio::test]
async fn sighup_reloads_the_tiers_file_for_memoized_callers_and_refuses_a_bad_one() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("tiers.toml");
    write(&path, &test_tiers());
    let app = serve(&path).await;

    let owner = uuid::Uuid::now_v7();
    let token = app
        .state
        .jwt
        .issue(owner, Duration::from_secs(600), None, None)
        .expect("token");
    let res = app
        .client
        .post(app.url("/v1/admin/tenants"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"slug": "reloaded", "name": "Reloaded", "owner_user_id": owner}))
        .fetch()
        .await;
    let tenant = assert_json(res, StatusCode::CREATED).await;
    let get_tenant = || {
        app.client
            .get(app.url("/v1/tenant"))
            .bearer_auth(&token)
            .header("x-tenant", "reloaded")
    };
    // The caller is memoized, with the generous limits of the first file.
    for _ in 0..5 {
        assert_eq!(get_tenant().fetch().await.status(), StatusCode::OK);
    }

    // A new file: the tier allows a burst of 2 requests.
    let mut strict = test_tiers();
    let tier = tenant["tier"].as_str().expect("a tier").to_owned();
    if let Some(limits) = strict.tiers.get_mut(&tier) {
        limits.rate_per_sec = 1;
        limits.burst = 2;
    }
    write(&path, &strict);
    hangup();
    crate::helpers::eventually("the new tiers are in force", || async {
        app.state.tiers.load().tiers[&tier].burst == 2
    })
    .await;
    let statuses: Vec<StatusCode> = {
        let mut s = Vec::new();
        for _ in 0..4 {
            s.push(get_tenant().fetch().await.status());
        }
        s
    };
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "the memoized caller meets the new limit: {statuses:?}"
    );
    let usage: Value = app
        .client
        .get(app.url(&format!(
            "/v1/admin/tenants/{}/usage",
            tenant["id"].as_str().expect("id")
        )))
        .bearer_auth(ADMIN_TOKEN)
        .fetch()
        .await
        .json()
        .await
        .expect("json");
    assert!(usage.to_string().contains("\"burst\":2"), "{usage}");

    // A file that does not parse is refused: the tiers in force stay.
    std::fs::write(&path, "[tiers.free\nrate_per_sec = -1").expect("write");
    hangup();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.state.tiers.load().tiers[&tier].burst, 2);
    // As does one that parses but does not validate (no tiers at all).
    std::fs::write(&path, "default_tier = \"free\"\n[tiers]\n").expect("write");
    let refused = tenantry_api::ops::reload::reload_tiers(&app.state, &path).await;
    assert!(refused.is_err());
    assert_eq!(app.state.tiers.load().tiers[&tier].burst, 2);
    // The server is alive after every signal.
    assert_eq!(
        app.client.get(app.url("/healthz")).fetch().await.status(),
        StatusCode::OK
    );
}
