//! `tenantry admin …` against a real server: the binary is run as an
//! operator would, over HTTP to a server started here on a fresh database.

use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tenantry_db::testing::FreshDatabase;
use uuid::Uuid;

const ADMIN_TOKEN: &str = "cli-test-admin-token-0123456789";
const JWT_SECRET: &str = "cli-test-secret-cli-test-secret-0123456";

struct Server {
    url: String,
    state: Arc<tenantry_api::AppState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _db: FreshDatabase,
    /// The server's data directory (exports land there), gone with the test.
    _data: tempfile::TempDir,
}

impl Server {
    async fn start() -> Self {
        let db = FreshDatabase::migrated().await;
        let data = tempfile::tempdir().expect("a data directory");
        let settings = tenantry_api::Settings {
            listen: ([127, 0, 0, 1], 0).into(),
            data_dir: data.path().to_owned(),
            database_url: Some(db.url.clone()),
            jwt_secret: Some(JWT_SECRET.to_owned()),
            admin_token: Some(ADMIN_TOKEN.to_owned()),
            ..tenantry_api::Settings::default()
        };
        let app = tenantry_api::Application::build(settings)
            .await
            .expect("start the server");
        let url = format!("http://{}", app.local_addr().expect("addr"));
        let state = app.state();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));
        Self {
            url,
            state,
            stop: Some(stop),
            _db: db,
            _data: data,
        }
    }

    /// Runs `tenantry admin --url <this server> --token <its token> args…`.
    async fn admin(&self, args: &[&str]) -> Output {
        let mut all = vec!["admin", "--url", &self.url, "--token", ADMIN_TOKEN];
        all.extend_from_slice(args);
        run(&all).await
    }

    /// The same with `--json`, parsed; panics unless it succeeded.
    async fn admin_json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.admin(&all).await;
        assert!(out.status.success(), "{args:?} failed: {}", stderr(&out));
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?} --json is not JSON ({e}): {}", stdout(&out)))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn run(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    tokio::process::Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .args(&args)
        .env_remove("TENANTRY_ADMIN_TOKEN")
        .env_remove("TENANTRY_URL")
        .env_remove("TENANTRY_DATA_DIR")
        .env("RUST_LOG", "off")
        .kill_on_drop(true)
        .output()
        .await
        .expect("run the tenantry binary")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A failed command: a failing exit status and one line on stderr.
fn failed_in_one_line(out: &Output) -> String {
    assert!(!out.status.success(), "expected a failure: {}", stdout(out));
    let err = stderr(out);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    err
}

#[tokio::test]
async fn a_tenant_goes_through_its_whole_life_from_the_command_line() {
    let server = Server::start().await;
    let owner = Uuid::now_v7();
    let owner_arg = owner.to_string();

    let created = server
        .admin_json(&[
            "tenants", "create", "--slug", "cli-co", "--name", "CLI Co", "--owner", &owner_arg,
            "--tier", "pro",
        ])
        .await;
    assert_eq!(created["slug"], "cli-co");
    assert_eq!(created["tier"], "pro");
    let id = created["id"].as_str().expect("an id").to_owned();

    // People get a table; scripts get the server's JSON.
    let out = server.admin(&["tenants", "list"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    let header = table.lines().next().expect("a header");
    assert!(header.starts_with("ID") && header.contains("SLUG") && header.contains("STATUS"));
    assert!(
        table
            .lines()
            .any(|l| l.contains(&id) && l.contains("cli-co") && l.contains("active")),
        "{table}"
    );
    let listed = server.admin_json(&["tenants", "list", "--all"]).await;
    let items = listed["items"].as_array().expect("items");
    assert!(items.iter().any(|t| t["id"] == id.as_str()));

    let out = server.admin(&["tenants", "show", &id]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let shown = stdout(&out);
    assert!(shown.contains("slug") && shown.contains("cli-co") && shown.contains("CLI Co"));

    let updated = server
        .admin_json(&[
            "tenants",
            "update",
            &id,
            "--name",
            "CLI Company",
            "--limit",
            "rate_per_sec=77",
        ])
        .await;
    assert_eq!(updated["name"], "CLI Company");
    assert_eq!(updated["limits"]["rate_per_sec"], 77);
    assert_eq!(updated["effective_limits"]["rate_per_sec"], 77);

    let suspended = server.admin_json(&["tenants", "suspend", &id]).await;
    assert_eq!(suspended["status"], "suspended");
    let resumed = server.admin_json(&["tenants", "resume", &id]).await;
    assert_eq!(resumed["status"], "active");

    let member = Uuid::now_v7().to_string();
    let out = server
        .admin(&["members", "add", &id, "--user", &member, "--role", "admin"])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(&format!("added {member} to tenant {id} as admin")));
    let shown = server.admin_json(&["tenants", "show", &id]).await;
    assert_eq!(shown["member_count"], 2, "the owner and the new admin");
    // The same user again: the server's 409 detail, in one line.
    let out = server
        .admin(&["members", "add", &id, "--user", &member, "--role", "admin"])
        .await;
    let err = failed_in_one_line(&out);
    assert!(
        err.contains("already a member") && err.contains("409"),
        "{err}"
    );

    // A bad value comes back with the server's field error.
    let out = server
        .admin(&[
            "members", "add", &id, "--user", &member, "--role", "emperor",
        ])
        .await;
    let err = failed_in_one_line(&out);
    assert!(err.contains("422") && err.contains("role"), "{err}");

    let out = server.admin(&["tenants", "delete", &id]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("deleted"));
    let out = server.admin(&["tenants", "show", &id]).await;
    let err = failed_in_one_line(&out);
    assert!(err.contains("404"), "a deleted tenant is gone: {err}");
}

#[tokio::test]
async fn jobs_and_database_health_are_shown_or_said_to_be_missing() {
    let server = Server::start().await;
    let owner = Uuid::now_v7();
    let created = server
        .admin_json(&[
            "tenants",
            "create",
            "--slug",
            "jobs-co",
            "--name",
            "Jobs Co",
            "--owner",
            &owner.to_string(),
        ])
        .await;
    assert_eq!(created["slug"], "jobs-co");
    // An announcement is a job with an id the operator can look up.
    let token = server
        .state
        .jwt
        .issue(owner, Duration::from_secs(600), None, None)
        .expect("token");
    let res = reqwest::Client::new()
        .post(format!("{}/v1/announcements", server.url))
        .bearer_auth(token)
        .header("x-tenant", "jobs-co")
        .json(&serde_json::json!({"title": "Hello", "message": "World"}))
        .send()
        .await
        .expect("announce");
    assert_eq!(res.status(), 202);
    let job: Value = res.json().await.expect("json");
    let job_id = job["job_id"].as_str().expect("a job id").to_owned();

    // GET /v1/admin/jobs/{id} and /v1/admin/db/health come with the database
    // operations; a server without them is told apart from a missing job.
    let out = server.admin(&["jobs", "show", &job_id]).await;
    if out.status.success() {
        let shown = stdout(&out);
        assert!(
            shown.contains(&job_id) && shown.contains("state"),
            "{shown}"
        );
        let job = server.admin_json(&["jobs", "show", &job_id]).await;
        assert_eq!(job["id"], job_id.as_str());
    } else {
        let err = failed_in_one_line(&out);
        assert!(
            err.contains("this server does not offer job lookup"),
            "{err}"
        );
    }

    let out = server.admin(&["db", "health"]).await;
    if out.status.success() {
        let shown = stdout(&out);
        assert!(
            shown.starts_with("status: ") && shown.contains("CHECK"),
            "{shown}"
        );
        let health = server.admin_json(&["db", "health"]).await;
        assert!(health["checks"].is_array());
    } else {
        let err = failed_in_one_line(&out);
        assert!(
            err.contains("this server does not offer database health"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn a_wrong_url_or_token_is_one_clear_line() {
    let server = Server::start().await;

    // Nothing listens on a port just freed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a port")
        .port();
    let nowhere = format!("http://127.0.0.1:{port}");
    let out = run(&[
        "admin", "--url", &nowhere, "--token", "x", "tenants", "list",
    ])
    .await;
    let err = failed_in_one_line(&out);
    assert!(
        err.contains(&format!("cannot reach Tenantry at {nowhere}")),
        "names the URL: {err}"
    );

    let out = run(&[
        "admin",
        "--url",
        &server.url,
        "--token",
        "wrong",
        "tenants",
        "list",
    ])
    .await;
    let err = failed_in_one_line(&out);
    assert!(err.contains("refused the admin token (401)"), "{err}");

    // No token given: the data dir's file is read, or its absence explained.
    let dir = tempfile::tempdir().expect("dir");
    let data_dir = dir.path().to_str().expect("utf-8 path");
    let args = [
        "admin",
        "--url",
        &server.url,
        "--data-dir",
        data_dir,
        "tenants",
        "list",
    ];
    let err = failed_in_one_line(&run(&args).await);
    assert!(err.contains("no admin token"), "{err}");
    std::fs::write(dir.path().join("admin_token"), ADMIN_TOKEN).expect("write the token");
    let mut json_args = args.to_vec();
    json_args.push("--json");
    let out = run(&json_args).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let listed: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(listed["items"].is_array() && listed.get("next_cursor").is_some());
}

#[tokio::test]
async fn a_tenant_is_exported_to_a_file_and_imported_back_from_the_command_line() {
    let server = Server::start().await;
    let owner = Uuid::now_v7().to_string();
    let created = server
        .admin_json(&[
            "tenants", "create", "--slug", "source", "--name", "Source", "--owner", &owner,
        ])
        .await;
    let id = created["id"].as_str().expect("an id").to_owned();
    let file = std::env::temp_dir().join(format!("tenantry-cli-{}.tar.gz", Uuid::now_v7()));
    let file_arg = file.display().to_string();

    // People are told where the archive went; the file is a gzip.
    let out = server
        .admin(&["export", &id, "--out", &file_arg, "--wait-secs", "60"])
        .await;
    assert!(out.status.success(), "export failed: {}", stderr(&out));
    assert!(stdout(&out).contains(&file_arg), "{}", stdout(&out));
    let archive = std::fs::read(&file).expect("the archive was written");
    assert_eq!(&archive[..2], &[0x1f, 0x8b], "a gzip file");

    // Imported back as a new tenant with new ids, and waited for.
    let imported = server
        .admin_json(&[
            "import",
            &file_arg,
            "--slug",
            "copy",
            "--new-ids",
            "--wait-secs",
            "60",
        ])
        .await;
    assert_eq!(imported["job"]["state"], "done", "{imported}");
    let copy = imported["tenant_id"].as_str().expect("the new tenant's id");
    assert_ne!(copy, id);
    let shown = server.admin_json(&["tenants", "show", copy]).await;
    assert_eq!(shown["slug"], "copy");
    assert_eq!(shown["status"], "active");
    assert_eq!(shown["name"], "Source");

    // A file that is not an archive is refused in one line, and writes nothing.
    std::fs::write(&file, b"not an archive").expect("overwrite");
    let out = server
        .admin(&["import", &file_arg, "--slug", "broken", "--wait-secs", "60"])
        .await;
    let err = failed_in_one_line(&out);
    assert!(err.contains("archive"), "{err}");
    let listed = server.admin_json(&["tenants", "list"]).await;
    assert!(
        !listed.to_string().contains("\"broken\""),
        "nothing was imported: {listed}"
    );
    let _ = std::fs::remove_file(&file);
}
