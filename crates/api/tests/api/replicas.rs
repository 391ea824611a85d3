//! Read replicas with read-your-writes, against a real streaming standby.
//!
//! The shared test cluster takes no replication connections (its
//! `pg_hba.conf` has no `replication` line, and it is not ours to reload),
//! so each test starts its own pair from the installed binaries: a primary
//! (`initdb`, a free port) and a standby made by `pg_basebackup -R` from it
//! (another free port), both in a temporary directory and stopped by the
//! guard's `Drop`, also when the test panics. The standby is made to lag
//! deterministically with `pg_wal_replay_pause()`.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{FreshDatabase, TestApp, User, assert_json, eventually, items};

/// Where the PostgreSQL binaries are (`TENANTRY_PG_BIN`, else Debian's).
fn bin_dir() -> PathBuf {
    std::env::var_os("TENANTRY_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .expect("addr")
        .port()
}

/// A primary and its streaming standby in a temporary directory; both are
/// stopped (immediately: nothing in them is worth keeping) on drop.
struct Pair {
    dir: tempfile::TempDir,
    primary_port: u16,
    standby_port: u16,
    /// The user the servers run as when the tests run as root.
    run_as: Option<nix::unistd::User>,
}

impl Pair {
    fn start() -> Pair {
        let dir = tempfile::Builder::new()
            .prefix("tenantry-replica-")
            .tempdir()
            .expect("a temporary directory");
        let run_as = nix::unistd::geteuid().is_root().then(|| {
            nix::unistd::User::from_name("postgres")
                .expect("look up the postgres user")
                .expect("a postgres user to run PostgreSQL as")
        });
        if let Some(user) = &run_as {
            nix::unistd::chown(dir.path(), Some(user.uid), Some(user.gid))
                .expect("give the directory to postgres");
        }
        let pair = Pair {
            dir,
            primary_port: free_port(),
            standby_port: free_port(),
            run_as,
        };
        let primary = pair.path("primary");
        pair.run(
            "initdb",
            &[
                "-D",
                primary.to_str().expect("utf-8 path"),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        let conf = format!(
            "\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             wal_level = replica\nmax_wal_senders = 4\nhot_standby = on\nfsync = off\n\
             full_page_writes = off\nshared_buffers = 32MB\nmax_connections = 60\n\
             wal_keep_size = '128MB'\nautovacuum = off\n",
            pair.primary_port,
            pair.dir.path().display()
        );
        append(&primary.join("postgresql.conf"), &conf);
        pair.pg_ctl_start(&primary, "primary.log");
        pair
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(bin_dir().join(program));
        cmd.current_dir(self.dir.path())
            .env_remove("PGHOST")
            .env_remove("PGPORT")
            .env_remove("PGDATA");
        if let Some(user) = &self.run_as {
            cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
        }
        cmd
    }

    fn run(&self, program: &str, args: &[&str]) {
        let out = self
            .command(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {program}: {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn pg_ctl_start(&self, data: &Path, log: &str) {
        let log = self.path(log);
        self.run(
            "pg_ctl",
            &[
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                data.to_str().expect("utf-8"),
                "-l",
                log.to_str().expect("utf-8"),
            ],
        );
    }

    fn pg_ctl_stop(&self, name: &str) {
        let data = self.path(name);
        if data.join("postmaster.pid").exists() {
            let _ = self
                .command("pg_ctl")
                .args(["stop", "-m", "immediate", "-w", "-D"])
                .arg(&data)
                .output();
        }
    }

    /// `pg_basebackup -R` of the primary, started as a hot standby.
    fn start_standby(&self) {
        let standby = self.path("standby");
        self.run(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &self.primary_port.to_string(),
                "-U",
                "postgres",
                "-D",
                standby.to_str().expect("utf-8"),
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",
            ],
        );
        append(
            &standby.join("postgresql.auto.conf"),
            &format!("\nport = {}\n", self.standby_port),
        );
        self.pg_ctl_start(&standby, "standby.log");
    }

    fn url(port: u16, db: &str) -> String {
        format!("host=127.0.0.1 port={port} user=postgres dbname={db} sslmode=disable")
    }

    fn primary_url(&self, db: &str) -> String {
        Self::url(self.primary_port, db)
    }

    fn standby_url(&self, db: &str) -> String {
        Self::url(self.standby_port, db)
    }

    async fn standby(&self) -> tokio_postgres::Client {
        connect(&self.standby_url("tenantry")).await
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        self.pg_ctl_stop("standby");
        self.pg_ctl_stop("primary");
    }
}

fn append(file: &Path, text: &str) {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(file)
        .expect("open a config file");
    f.write_all(text.as_bytes()).expect("write a config file");
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    client
}

/// A pair with database `tenantry` on the primary, its standby streaming,
/// and a server on the primary with the standby as the read replica of cell
/// `main` (polled every 20 ms; lagging past `max_lag` counts as behind).
async fn spawn(max_lag: Duration) -> (Pair, TestApp) {
    let pair = tokio::task::spawn_blocking(Pair::start)
        .await
        .expect("start the primary");
    connect(&pair.primary_url("postgres"))
        .await
        .batch_execute("CREATE DATABASE tenantry")
        .await
        .expect("create the database");
    let pair = tokio::task::spawn_blocking(move || {
        pair.start_standby();
        pair
    })
    .await
    .expect("start the standby");
    // Not a database of the shared test server: its drop there is a no-op.
    let fresh = Arc::new(FreshDatabase {
        name: format!("tenantry_test_{}", Uuid::new_v4().simple()),
        url: pair.primary_url("tenantry"),
    });
    let replicas = format!("main={}", pair.standby_url("tenantry"));
    let app = TestApp::spawn_settings(
        fresh,
        pair.primary_url("tenantry"),
        |s| {
            s.replicas = Some(replicas);
            s.replica_options.poll_interval = Duration::from_millis(20);
            s.replica_options.max_lag = max_lag;
        },
        |state| state,
    )
    .await;
    (pair, app)
}

/// Reads served by the replica and by the primary so far.
fn reads(app: &TestApp) -> (u64, u64) {
    let replicas = app.state.db.replicas().expect("replicas configured");
    let (primary, fallbacks) = replicas.primary_reads();
    (replicas.replica_reads(), primary + fallbacks)
}

async fn get(app: &TestApp, user: &User, path: &str) -> Value {
    assert_json(
        app.as_user(user, Method::GET, path)
            .send()
            .await
            .expect("request"),
        StatusCode::OK,
    )
    .await
}

async fn replication(app: &TestApp) -> (Value, Value) {
    let health = assert_json(
        app.admin(Method::GET, "/v1/admin/db/health")
            .send()
            .await
            .expect("request"),
        StatusCode::OK,
    )
    .await;
    let check = health["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == "replication")
        .cloned()
        .expect("a replication check");
    (health["status"].clone(), check)
}

/// Waits until the replica serves `user`'s reads again (it has replayed
/// their last write and the poller saw it).
async fn until_replica_serves(app: &TestApp, user: &User, path: &str) {
    eventually("the replica serves the caller's reads", || async {
        let before = reads(app).0;
        get(app, user, path).await;
        reads(app).0 > before
    })
    .await;
}

#[tokio::test]
async fn a_write_is_read_back_at_once_while_the_replica_lags_and_reads_go_to_it_when_caught_up() {
    let (pair, app) = spawn(Duration::from_secs(1)).await;
    let (_, owner) = app.tenant("ryw").await;
    let reader = app.member(&owner, "member").await;
    let (_, elsewhere) = app.tenant("ryw-other").await;
    let theirs = app.post(&elsewhere, "in another tenant").await;
    let first = app.post(&owner, "before the pause").await;
    let by_id = |id: &str| format!("/v1/posts/{id}");

    // Caught up: reads are served by the replica, with the data. (A post
    // by id is never cached: each read is a transaction; the first page of
    // posts may come from the cache.)
    until_replica_serves(&app, &owner, &by_id(&first)).await;
    until_replica_serves(&app, &elsewhere, &by_id(&theirs)).await;
    let (on_replica, _) = reads(&app);
    let post = get(&app, &owner, &by_id(&first)).await;
    assert_eq!(post["content"], "before the pause");
    assert_eq!(reads(&app).0, on_replica + 1, "read on the replica");
    let page = get(&app, &owner, "/v1/posts").await;
    assert_eq!(items(&page)[0]["id"], first.as_str());
    let (status, check) = replication(&app).await;
    assert_eq!(status, "ok", "{check}");
    assert_eq!(check["status"], "ok", "{check}");
    assert_eq!(check["value"]["replicas"][0]["usable"], true);
    assert!(
        check["value"]["replicas"][0]["reads"]
            .as_u64()
            .expect("reads")
            >= 3
    );

    // The replica stops replaying: it has not seen what comes next.
    let standby = pair.standby().await;
    standby
        .batch_execute("SELECT pg_wal_replay_pause()")
        .await
        .expect("pause replay");
    eventually("replay is paused", || async {
        let state: String = standby
            .query_one("SELECT pg_get_wal_replay_pause_state()", &[])
            .await
            .expect("pause state")
            .get(0);
        state == "paused"
    })
    .await;

    let second = app.post(&owner, "written while the replica lags").await;
    let (replica_before, primary_before) = reads(&app);
    // At once: the writer reads its write, in the list and by id...
    let page = get(&app, &owner, "/v1/posts").await;
    assert_eq!(items(&page)[0]["id"], second.as_str(), "{page}");
    let post = get(&app, &owner, &by_id(&second)).await;
    assert_eq!(post["content"], "written while the replica lags");
    // ...and so does everyone reading the tenant through this node (the
    // tenant's last write counts too, so no list is cached from a replica
    // that has not seen it).
    let page = get(&app, &reader, "/v1/posts").await;
    assert_eq!(items(&page)[0]["id"], second.as_str(), "{page}");
    let (replica_after, primary_after) = reads(&app);
    assert_eq!(replica_after, replica_before, "none of them on the replica");
    assert!(primary_after >= primary_before + 2, "on the primary");
    // The replica really has not replayed it.
    let on_standby: i64 = standby
        .query_one(
            "SELECT count(*) FROM posts WHERE id = $1::text::uuid",
            &[&second],
        )
        .await
        .expect("count on the standby")
        .get(0);
    assert_eq!(on_standby, 0, "the standby lags");
    // A caller of another tenant, who wrote nothing since, still reads from
    // the replica (within the lag limit).
    let before = reads(&app).0;
    get(&app, &elsewhere, &by_id(&theirs)).await;
    assert_eq!(
        reads(&app).0,
        before + 1,
        "another tenant reads the replica"
    );

    // Past the lag limit the health check says so, and reads go to the
    // primary.
    eventually("the health check reports the lag", || async {
        let (status, check) = replication(&app).await;
        status == "degraded" && check["status"] == "warn"
    })
    .await;
    let (_, check) = replication(&app).await;
    let replica = &check["value"]["replicas"][0];
    assert!(
        replica["lag_bytes"].as_u64().expect("lag bytes") > 0,
        "{check}"
    );
    assert!(
        replica["lag_seconds"].as_f64().expect("lag seconds") >= 1.0,
        "{check}"
    );
    assert_eq!(replica["usable"], false);
    let before = reads(&app);
    get(&app, &elsewhere, &by_id(&theirs)).await;
    assert_eq!(reads(&app).0, before.0, "a lagging replica serves nobody");

    // Replay resumes: the replica catches up and serves the writer again.
    standby
        .batch_execute("SELECT pg_wal_replay_resume()")
        .await
        .expect("resume replay");
    until_replica_serves(&app, &owner, &by_id(&second)).await;
    let (status, check) = replication(&app).await;
    assert_eq!(status, "ok", "{check}");
}

#[tokio::test]
async fn a_stopped_replica_leaves_every_read_to_the_primary_without_an_error() {
    let (pair, app) = spawn(Duration::from_secs(10)).await;
    let (_, owner) = app.tenant("replica-down").await;
    let id = app.post(&owner, "served either way").await;
    until_replica_serves(&app, &owner, &format!("/v1/posts/{id}")).await;
    // Idle connections to the standby stay in the replica's pool.
    get(&app, &owner, &format!("/v1/posts/{id}")).await;

    let stop = pair.path("standby");
    tokio::task::spawn_blocking({
        let mut cmd = pair.command("pg_ctl");
        cmd.args(["stop", "-m", "immediate", "-w", "-D"]).arg(&stop);
        move || cmd.output().expect("stop the standby")
    })
    .await
    .expect("stop the standby");

    // At once, before the poller notices, and after: every read answers.
    for _ in 0..20 {
        let page = get(&app, &owner, "/v1/posts").await;
        assert_eq!(items(&page)[0]["id"], id.as_str());
        let post = get(&app, &owner, &format!("/v1/posts/{id}")).await;
        assert_eq!(post["id"], id.as_str());
        let me = get(&app, &owner, "/v1/me/communities").await;
        assert_eq!(items(&me).len(), 1);
        let feed = get(&app, &owner, "/v1/feed").await;
        assert_eq!(items(&feed)[0]["id"], id.as_str());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Writes never touched it, and go on.
    app.post(&owner, "after the stop").await;
    let (status, check) = replication(&app).await;
    assert_eq!(status, "degraded", "{check}");
    assert_eq!(check["status"], "warn");
    let replica = &check["value"]["replicas"][0];
    assert_eq!(replica["up"], false, "{check}");
    assert!(replica["error"].as_str().is_some(), "{check}");
    let before = reads(&app);
    get(&app, &owner, &format!("/v1/posts/{id}")).await;
    let after = reads(&app);
    assert_eq!((after.0, after.1), (before.0, before.1 + 1));
}
