//! PostgreSQL going away under load: the server answers 503
//! `database_unavailable` with `Retry-After` (never 500, never a dropped
//! connection) while it is away, and serves again as soon as it is back.
//!
//! The test runs its own private cluster (the embedded one, in a temporary
//! directory), so it can stop and start it without disturbing the shared
//! test server.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tenantry_api::request::auth::JwtKeys;
use tenantry_api::{Application, Settings};
use tenantry_db::embedded::EmbeddedPostgres;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::helpers::{ADMIN_TOKEN, JWT_SECRET, assert_json};

/// One answer, as much of it as the assertions need.
#[derive(Debug)]
struct Answer {
    what: &'static str,
    status: StatusCode,
    code: Option<String>,
    retry_after: Option<String>,
    content_type: Option<String>,
}

impl Answer {
    fn is_database_unavailable(&self) -> bool {
        self.status == StatusCode::SERVICE_UNAVAILABLE
            && self.code.as_deref() == Some("database_unavailable")
            && self.retry_after.is_some()
            && self.content_type.as_deref() == Some("application/problem+json")
    }

    fn acceptable(&self) -> bool {
        self.status.is_success() || self.is_database_unavailable()
    }
}

struct Server {
    base: String,
    client: reqwest::Client,
    token: String,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Server {
    async fn start(database_url: String, data_dir: &Path, owner: Uuid) -> Server {
        let settings = Settings {
            database_url: Some(database_url),
            data_dir: data_dir.to_path_buf(),
            listen: "127.0.0.1:0".parse().expect("an address"),
            jwt_secret: Some(JWT_SECRET.to_owned()),
            admin_token: Some(ADMIN_TOKEN.to_owned()),
            db_max_connections: 8,
            // One user floods the server here; rate limits would answer
            // most of it 429, which is not what this test is about.
            fairness: false,
            ..Settings::default()
        };
        let app = Application::build(settings)
            .await
            .expect("the application starts on the private cluster");
        let addr = app.local_addr().expect("a bound address");
        let (shutdown, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));
        Server {
            base: format!("http://{addr}"),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            token: JwtKeys::new(JWT_SECRET.as_bytes())
                .issue(owner, Duration::from_secs(600), None, None)
                .expect("a user token"),
            shutdown,
            task,
        }
    }

    /// One of the requests of the mix: writes, a tenant list, the user's
    /// communities (provisioning and the per-user directory), readiness.
    async fn send(&self, n: usize) -> Answer {
        let (what, request) = match n % 4 {
            0 => (
                "POST /v1/posts",
                self.client
                    .post(format!("{}/v1/posts", self.base))
                    .bearer_auth(&self.token)
                    .header("x-tenant", "acme")
                    .json(&json!({"content": format!("post {n}")})),
            ),
            1 => (
                "GET /v1/posts",
                self.client
                    .get(format!("{}/v1/posts?limit=5", self.base))
                    .bearer_auth(&self.token)
                    .header("x-tenant", "acme"),
            ),
            2 => (
                "GET /v1/me/communities",
                self.client
                    .get(format!("{}/v1/me/communities", self.base))
                    .bearer_auth(&self.token),
            ),
            _ => (
                "GET /readyz",
                self.client.get(format!("{}/readyz", self.base)),
            ),
        };
        let res = request.send().await.unwrap_or_else(|e| {
            panic!("{what}: the server answers, even without its database: {e}")
        });
        let header = |name| {
            res.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let retry_after = header(reqwest::header::RETRY_AFTER);
        let content_type = header(reqwest::header::CONTENT_TYPE);
        let status = res.status();
        let code = if status.is_success() {
            None
        } else {
            let body: Value = res.json().await.unwrap_or(Value::Null);
            body["code"].as_str().map(str::to_owned)
        };
        Answer {
            what,
            status,
            code,
            retry_after,
            content_type,
        }
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

/// Sends the request mix from `clients` tasks until `stop`; returns every
/// answer.
async fn load(server: &Arc<Server>, clients: usize, stop: &Arc<AtomicBool>) -> Vec<Answer> {
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let server = server.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut answers = Vec::new();
                let mut n = c;
                while !stop.load(Ordering::Relaxed) {
                    answers.push(server.send(n).await);
                    n += 1;
                }
                answers
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("a client task"));
    }
    all
}

/// Stops the cluster in `pg_dir` with `pg_ctl stop -m <mode>`, as the
/// cluster's owner (PostgreSQL refuses root; the embedded cluster runs as
/// `postgres` when the tests run as root).
fn pg_ctl_stop(pg: &EmbeddedPostgres, mode: &str) {
    use std::os::unix::fs::MetadataExt as _;
    use std::os::unix::process::CommandExt as _;
    let bin = tenantry_db::embedded::find_binaries().expect("PostgreSQL binaries");
    let owner = std::fs::metadata(pg.cluster_dir()).expect("the cluster dir");
    let mut cmd = std::process::Command::new(bin.join("pg_ctl"));
    cmd.arg("stop")
        .arg("-D")
        .arg(pg.cluster_dir())
        .args(["-m", mode, "-w", "-t", "60"]);
    if running_as_root() {
        cmd.uid(owner.uid()).gid(owner.gid());
    }
    let out = cmd.output().expect("run pg_ctl");
    assert!(
        out.status.success(),
        "pg_ctl stop -m {mode}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

#[tokio::test]
async fn a_fast_shutdown_of_postgres_mid_load_answers_503_database_unavailable_then_recovers() {
    outage("fast").await;
}

/// Immediate mode kills the server without a goodbye: requests in flight
/// see their socket break ("error communicating with the server").
#[tokio::test]
async fn an_immediate_shutdown_of_postgres_mid_load_answers_503_database_unavailable_then_recovers()
{
    outage("immediate").await;
}

async fn outage(mode: &str) {
    let pg_dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(pg_dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod the cluster's dir");
    let app_dir = tempfile::tempdir().expect("tempdir");
    let pg = EmbeddedPostgres::start(pg_dir.path())
        .await
        .expect("a private PostgreSQL cluster");
    let url = pg.connection_string();

    let owner = Uuid::now_v7();
    let server = Arc::new(Server::start(url, app_dir.path(), owner).await);
    assert_json(
        server
            .client
            .post(format!("{}/v1/admin/tenants", server.base))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"slug": "acme", "name": "Acme", "owner_user_id": owner}))
            .send()
            .await
            .expect("request"),
        StatusCode::CREATED,
    )
    .await;
    for n in 0..4 {
        let answer = server.send(n).await;
        assert!(answer.status.is_success(), "before the outage: {answer:?}");
    }

    // Load, then PostgreSQL stops while the load goes on: requests in flight
    // lose their connection, later ones find no server.
    let stop = Arc::new(AtomicBool::new(false));
    let during = {
        let (server, stop) = (server.clone(), stop.clone());
        tokio::spawn(async move { load(&server, 8, &stop).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    tokio::task::spawn_blocking({
        let mode = mode.to_owned();
        move || {
            pg_ctl_stop(&pg, &mode);
            pg
        }
    })
    .await
    .expect("pg_ctl")
    // Stopped already: this only tells the value it has nothing to stop.
    .stop()
    .await
    .expect("the cluster is stopped");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    stop.store(true, Ordering::Relaxed);
    let answers = during.await.expect("the load");

    let wrong: Vec<&Answer> = answers.iter().filter(|a| !a.acceptable()).collect();
    assert!(
        wrong.is_empty(),
        "{} of {} answers were neither 2xx nor 503 database_unavailable with Retry-After: {:?}",
        wrong.len(),
        answers.len(),
        &wrong[..wrong.len().min(10)]
    );
    let unavailable = answers
        .iter()
        .filter(|a| a.is_database_unavailable())
        .count();
    assert!(
        unavailable > 0,
        "the outage was seen: {} answers",
        answers.len()
    );
    for what in ["POST /v1/posts", "GET /v1/me/communities", "GET /readyz"] {
        assert!(
            answers
                .iter()
                .any(|a| a.what == what && a.is_database_unavailable()),
            "{what} answered database_unavailable during the outage"
        );
    }
    // Still down: every database-bound request says so.
    let answer = server.send(0).await;
    assert!(answer.is_database_unavailable(), "{answer:?}");
    assert_eq!(answer.retry_after.as_deref(), Some("2"));
    assert!(!server.task.is_finished(), "the server keeps running");

    // PostgreSQL back: the very next requests are served.
    let pg = EmbeddedPostgres::start(pg_dir.path())
        .await
        .expect("the private cluster starts again");
    for n in 0..8 {
        let answer = server.send(n).await;
        assert!(
            answer.status.is_success(),
            "right after PostgreSQL is back: {answer:?}"
        );
    }

    Arc::into_inner(server)
        .expect("the load's clones are gone")
        .stop()
        .await;
    pg.stop().await.expect("stop the private cluster");
}

#[test]
fn an_error_wrapping_a_lost_database_is_database_unavailable_not_internal() {
    use tenantry_api::problem::ApiError;
    use tenantry_db::DbError;
    let wrapped = anyhow::Error::new(DbError::Unavailable("connection closed".to_owned()))
        .context("Failed to load the feed");
    let err = ApiError::from(wrapped);
    assert_eq!(
        (err.status(), err.code()),
        (StatusCode::SERVICE_UNAVAILABLE, "database_unavailable")
    );
    let other = ApiError::from(DbError::Other(anyhow::anyhow!("a bug")));
    assert_eq!(other.code(), "internal");
    let busy = ApiError::from(DbError::Busy("the tenant's share is busy".to_owned()));
    assert_eq!(busy.code(), "overloaded");
}
