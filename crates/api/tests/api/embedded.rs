//! The real `Application` on its embedded PostgreSQL cluster: data written
//! before a clean shutdown is there after a restart on the same data dir.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tenantry_api::request::auth::JwtKeys;
use tenantry_api::{Application, Settings};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::helpers::{ADMIN_TOKEN, Fetch as _, JWT_SECRET, assert_json};

/// A running `Application`; `stop` shuts it down and waits for the embedded
/// PostgreSQL to stop.
struct Running {
    base: String,
    client: reqwest::Client,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    async fn start(data_dir: &Path) -> Running {
        let settings = Settings {
            database_url: None,
            data_dir: data_dir.to_path_buf(),
            listen: "127.0.0.1:0".parse().expect("an address"),
            jwt_secret: Some(JWT_SECRET.to_owned()),
            admin_token: Some(ADMIN_TOKEN.to_owned()),
            ..Settings::default()
        };
        let app = Application::build(settings)
            .await
            .expect("the application starts on its embedded PostgreSQL");
        let addr = app.local_addr().expect("a bound address");
        let (shutdown, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));
        Running {
            base: format!("http://{addr}"),
            // No idle keep-alive connections, so shutdown has nothing to wait on.
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            shutdown,
            task,
        }
    }

    fn request(&self, method: Method, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token)
    }

    async fn stop(self) {
        drop(self.client);
        let _ = self.shutdown.send(());
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("the server stops within a minute")
            .expect("the server task does not panic")
            .expect("the server stops cleanly");
    }
}

#[tokio::test]
async fn data_written_on_the_embedded_cluster_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod the data dir");
    let owner = Uuid::now_v7();
    let owner_token = JwtKeys::new(JWT_SECRET.as_bytes())
        .issue(owner, Duration::from_secs(600), None, None)
        .expect("a user token");

    let first = Running::start(dir.path()).await;
    let ready = first.request(Method::GET, "/readyz", "").fetch().await;
    assert_eq!(ready.status(), StatusCode::OK);
    let tenant = assert_json(
        first
            .request(Method::POST, "/v1/admin/tenants", ADMIN_TOKEN)
            .json(&json!({"slug": "acme", "name": "Acme", "owner_user_id": owner}))
            .fetch()
            .await,
        StatusCode::CREATED,
    )
    .await;
    let tenant_id = tenant["id"].as_str().expect("id").to_owned();
    let post = assert_json(
        first
            .request(Method::POST, "/v1/posts", &owner_token)
            .header("x-tenant", "acme")
            .json(&json!({"content": "written before the restart"}))
            .fetch()
            .await,
        StatusCode::CREATED,
    )
    .await;
    let post_id = post["id"].as_str().expect("id").to_owned();
    first.stop().await;

    let second = Running::start(dir.path()).await;
    let read: Value = assert_json(
        second
            .request(
                Method::GET,
                &format!("/v1/admin/tenants/{tenant_id}"),
                ADMIN_TOKEN,
            )
            .fetch()
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(read["slug"], "acme");
    let read = assert_json(
        second
            .request(Method::GET, &format!("/v1/posts/{post_id}"), &owner_token)
            .header("x-tenant", "acme")
            .fetch()
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(read["content"], "written before the restart");
    second.stop().await;
}

#[tokio::test]
async fn generated_secrets_are_kept_in_the_data_dir_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod the data dir");
    let settings = || Settings {
        database_url: None,
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().expect("an address"),
        ..Settings::default()
    };
    let first = Application::build(settings()).await.expect("first build");
    let secrets = first.secrets.clone();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(first.run_until(async move {
        let _ = rx.await;
    }));
    let _ = tx.send(());
    task.await
        .expect("no panic")
        .expect("the first server stops cleanly");

    let mode = std::fs::metadata(dir.path().join("admin_token"))
        .expect("the admin token is kept")
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "only the owner may read the admin token");

    let second = Application::build(settings()).await.expect("second build");
    assert_eq!(second.secrets.admin_token, secrets.admin_token);
    assert_eq!(second.secrets.jwt_secret, secrets.jwt_secret);
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(second.run_until(async move {
        let _ = rx.await;
    }));
    let _ = tx.send(());
    task.await
        .expect("no panic")
        .expect("the second server stops cleanly");
}
