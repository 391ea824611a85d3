//! Integration tests for the embedded PostgreSQL cluster. They need the
//! PostgreSQL server binaries (initdb, pg_ctl, postgres) installed.

use std::path::Path;
use std::str::FromStr;

use tenantry_db::embedded::{EmbeddedPostgres, find_binaries_in};
use tokio_postgres::NoTls;

async fn client(pg: &EmbeddedPostgres) -> tokio_postgres::Client {
    let config = tokio_postgres::Config::from_str(&pg.connection_string())
        .expect("connection string parses");
    let (client, connection) = config.connect(NoTls).await.expect("connect");
    tokio::spawn(connection);
    client
}

/// Sets a directory's permission bits.
fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o7777
}

fn pid_file(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("pg/data/postmaster.pid")
}

#[tokio::test]
async fn data_survives_restart() {
    // 0700 on purpose: when running as root, `start` must add o+x so the
    // unprivileged postgres user can reach <dir>/pg.
    let dir = tempfile::tempdir().expect("tempdir");
    chmod(dir.path(), 0o700);

    let pg = EmbeddedPostgres::start(dir.path())
        .await
        .expect("first start");
    assert!(pg.owns_server());
    assert_eq!(pg.database(), "tenantry");
    if nix::unistd::geteuid().is_root() {
        assert_eq!(mode_of(dir.path()), 0o701, "only o+x is added");
    }
    let cs = pg.connection_string();
    assert!(
        cs.contains("user=tenantry") && cs.contains("dbname=tenantry"),
        "{cs}"
    );
    assert!(
        pg.socket_dir()
            .starts_with(dir.path().canonicalize().expect("canon"))
    );
    assert_eq!(mode_of(pg.socket_dir()), 0o700);

    let c = client(&pg).await;
    let listen: String = c
        .query_one("SHOW listen_addresses", &[])
        .await
        .expect("show")
        .get(0);
    assert_eq!(listen, "", "TCP must be disabled");
    let db: String = c
        .query_one("SELECT current_database()", &[])
        .await
        .expect("current_database")
        .get(0);
    assert_eq!(db, "tenantry");
    c.batch_execute("CREATE TABLE t (v text); INSERT INTO t VALUES ('kept');")
        .await
        .expect("create + insert");
    drop(c);
    pg.stop().await.expect("first stop");
    assert!(!pid_file(dir.path()).exists(), "server should be stopped");

    let pg = EmbeddedPostgres::start(dir.path())
        .await
        .expect("second start");
    assert!(pg.owns_server());
    let c = client(&pg).await;
    let v: String = c
        .query_one("SELECT v FROM t", &[])
        .await
        .expect("select")
        .get(0);
    assert_eq!(v, "kept");
    drop(c);
    pg.stop().await.expect("second stop");
    assert!(!pid_file(dir.path()).exists());
}

#[tokio::test]
async fn reuses_running_cluster_without_stopping_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = EmbeddedPostgres::start(dir.path()).await.expect("start A");
    let b = EmbeddedPostgres::start(dir.path()).await.expect("start B");
    assert!(a.owns_server());
    assert!(!b.owns_server(), "B must reuse A's server");
    assert_eq!(a.connection_string(), b.connection_string());

    let cb = client(&b).await;
    cb.batch_execute("SELECT 1").await.expect("query via B");
    drop(cb);
    b.stop().await.expect("stop B (no-op)");

    assert!(pid_file(dir.path()).exists(), "server must still run");
    let ca = client(&a).await;
    let one: i32 = ca
        .query_one("SELECT 1", &[])
        .await
        .expect("A still works")
        .get(0);
    assert_eq!(one, 1);
    drop(ca);
    a.stop().await.expect("stop A");
    assert!(!pid_file(dir.path()).exists());
}

#[tokio::test]
async fn drop_stops_the_cluster() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pg = EmbeddedPostgres::start(dir.path()).await.expect("start");
    assert!(pid_file(dir.path()).exists());
    drop(pg);
    assert!(!pid_file(dir.path()).exists(), "drop must stop the server");
}

#[tokio::test]
async fn stale_pid_file_does_not_block_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pg = EmbeddedPostgres::start(dir.path())
        .await
        .expect("initial start");
    pg.stop().await.expect("stop");
    let data = dir.path().canonicalize().expect("canon").join("pg/data");

    // A pid that no longer exists.
    let mut child = std::process::Command::new("true").spawn().expect("spawn");
    let dead = child.id();
    child.wait().expect("wait");
    // A pid that is alive but is not a postmaster (this test process).
    let alive = std::process::id();

    for pid in [dead, alive] {
        std::fs::write(
            pid_file(dir.path()),
            format!(
                "{pid}\n{}\n1700000000\n5432\n/nonexistent\n\n  1234  5678\nready   \n",
                data.display()
            ),
        )
        .expect("write stale pid file");
        let pg = EmbeddedPostgres::start(dir.path())
            .await
            .unwrap_or_else(|e| panic!("start with stale pid {pid}: {e:#}"));
        assert!(pg.owns_server());
        let c = client(&pg).await;
        c.batch_execute("SELECT 1").await.expect("query");
        drop(c);
        pg.stop().await.expect("stop");
    }
}

#[tokio::test]
async fn long_data_dir_uses_private_tmp_socket_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let deep = dir.path().join("d".repeat(100));
    let pg = EmbeddedPostgres::start(&deep).await.expect("start");
    let socket_dir = pg.socket_dir().to_path_buf();
    assert!(
        socket_dir.starts_with("/tmp") && socket_dir.to_string_lossy().contains("tenantry-pg-"),
        "{}",
        socket_dir.display()
    );
    assert_eq!(mode_of(&socket_dir), 0o700);
    let c = client(&pg).await;
    c.batch_execute("SELECT 1").await.expect("query");
    drop(c);
    pg.stop().await.expect("stop");
    assert!(
        !socket_dir.exists(),
        "tmp socket dir should be removed on stop"
    );
}

#[test]
fn missing_binaries_error_mentions_install_hint() {
    let empty = tempfile::tempdir().expect("tempdir");
    let err = find_binaries_in(Some(empty.path())).expect_err("empty dir has no binaries");
    let msg = format!("{err:#}");
    assert!(msg.contains("apt-get install postgresql"), "{msg}");
    assert!(msg.contains("TENANTRY_PG_BIN"), "{msg}");
}

#[test]
fn finds_installed_binaries() {
    let bin = find_binaries_in(None).expect("PostgreSQL binaries are installed here");
    assert!(bin.join("initdb").exists() && bin.join("pg_ctl").exists());
}

#[tokio::test]
async fn startup_failure_includes_log_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pg = EmbeddedPostgres::start(dir.path()).await.expect("start");
    pg.stop().await.expect("stop");
    let conf = dir.path().join("pg/data/postgresql.conf");
    let mut text = std::fs::read_to_string(&conf).expect("read conf");
    text.push_str("\nshared_buffers = 'not a size'\n");
    std::fs::write(&conf, text).expect("write conf");

    let err = EmbeddedPostgres::start(dir.path())
        .await
        .expect_err("bad config must fail");
    let msg = format!("{err:#}");
    assert!(msg.contains("postgres.log"), "{msg}");
    assert!(msg.contains("shared_buffers"), "{msg}");
}

#[tokio::test]
async fn untraversable_ancestor_is_reported() {
    if !nix::unistd::geteuid().is_root() {
        return; // Only root switches to the unprivileged postgres user.
    }
    // A root-owned 0700 directory above the data dir: postgres cannot enter it.
    let dir = tempfile::tempdir().expect("tempdir");
    chmod(dir.path(), 0o700);
    let err = EmbeddedPostgres::start(&dir.path().join("inner"))
        .await
        .expect_err("ancestor is not traversable");
    let msg = format!("{err:#}");
    let ancestor = dir.path().canonicalize().expect("canon");
    assert!(msg.contains(&*ancestor.to_string_lossy()), "{msg}");
    assert!(msg.contains("cannot enter"), "{msg}");
    assert_eq!(mode_of(dir.path()), 0o700, "ancestors must not be modified");
}
