//! Throwaway databases for this workspace's tests.
//!
//! Every test that needs PostgreSQL creates a uniquely named database in the
//! server at `TENANTRY_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`, which `scripts/test` sets
//! up) and drops it afterwards. Here once, so the api, bench and db tests
//! share one way of doing it.
//!
//! A migrated database is a copy (`CREATE DATABASE … TEMPLATE`) of a template
//! migrated once per schema version, named after
//! [`crate::migrate::fingerprint`]: copying is a file copy, where migrating
//! runs every migration's statements again.

use std::str::FromStr as _;

use uuid::Uuid;

pub mod tls;

/// The PostgreSQL server tests create their databases in.
pub fn server_url() -> String {
    std::env::var("TENANTRY_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A uniquely named, empty database; dropped (with its connections) on drop.
pub struct FreshDatabase {
    pub name: String,
    /// A libpq key=value connection string to it, as the connecting user.
    pub url: String,
}

impl FreshDatabase {
    /// Creates `tenantry_test_<random>` in the test server. Panics with a
    /// hint when the server is unreachable: this is for tests only.
    pub async fn create() -> Self {
        let name = format!("tenantry_test_{}", Uuid::new_v4().simple());
        let (client, conn) = tokio_postgres::connect(&server_url(), tokio_postgres::NoTls)
            .await
            .expect(
                "PostgreSQL for tests is reachable (start it, or set TENANTRY_TEST_DATABASE_URL)",
            );
        tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create the test database");
        let url = url_of(&name);
        Self { name, url }
    }

    /// A fresh database with every migration applied: a copy of the template
    /// for this build's migrations, made (once, by whichever test comes
    /// first) if it does not exist yet.
    pub async fn migrated() -> Self {
        let template = ensure_template().await;
        let name = format!("tenantry_test_{}", Uuid::new_v4().simple());
        let client = server().await;
        client
            .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {template}"))
            .await
            .expect("copy the template database");
        let url = url_of(&name);
        Self { name, url }
    }

    /// A new connection to the database as the connecting (owner) user,
    /// which bypasses nothing the server does not.
    pub async fn connect(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .expect("connect to the test database");
        tokio::spawn(conn);
        client
    }
}

/// A connection to the test server's own database.
async fn server() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&server_url(), tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL for tests is reachable (start it, or set TENANTRY_TEST_DATABASE_URL)");
    tokio::spawn(conn);
    client
}

/// Serializes making templates across test processes.
const TEMPLATE_LOCK: i64 = 0x7465_6d70_6c61_7465; // "template"

/// Templates of other schema versions kept beside this build's.
const KEPT_TEMPLATES: i64 = 8;

/// The name of the migrated template for this build, made if missing. It is
/// built under another name and renamed when complete, so a test process
/// that dies half-way leaves no half-migrated template behind; templates of
/// other schema versions are dropped, the newest few aside.
async fn ensure_template() -> String {
    let template = format!("tenantry_template_{:016x}", crate::migrate::fingerprint());
    let client = server().await;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&TEMPLATE_LOCK])
        .await
        .expect("take the template lock");
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&template])
        .await
        .expect("look for the template")
        .is_some();
    if !exists {
        // Other schema versions' templates are dropped, but for the newest
        // few: checkouts of different branches (worktrees) testing against
        // one server at once would otherwise drop each other's template
        // while it is being copied. A database's oid grows with its age.
        let stale = client
            .query(
                "SELECT datname FROM (
                     SELECT datname, row_number() OVER (ORDER BY oid DESC) AS age
                     FROM pg_database WHERE datname LIKE 'tenantry\\_template\\_%'
                 ) t WHERE age >= $1",
                &[&KEPT_TEMPLATES],
            )
            .await
            .expect("list templates");
        for row in stale {
            let name: String = row.get(0);
            let _ = client
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
        }
        let building = format!("{template}_building");
        client
            .batch_execute(&format!("CREATE DATABASE {building}"))
            .await
            .expect("create the template database");
        {
            let db = crate::Db::connect(&url_of(&building), &crate::DbOptions::default())
                .expect("pool for the template");
            crate::migrate::migrate(&db)
                .await
                .expect("migrate the template database");
        }
        // The pool's connections close as it drops, a moment later; RENAME
        // refuses while any is still there.
        let mut renamed = Err(None);
        for _ in 0..100 {
            renamed = client
                .batch_execute(&format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{building}'; \
                     ALTER DATABASE {building} RENAME TO {template}"
                ))
                .await
                .map_err(Some);
            if renamed.is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        if let Err(e) = renamed {
            panic!("rename the template database: {e:?}");
        }
    }
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&TEMPLATE_LOCK])
        .await
        .expect("release the template lock");
    template
}

/// The test server's connection settings, pointed at database `name`.
fn url_of(name: &str) -> String {
    let config =
        tokio_postgres::Config::from_str(&server_url()).expect("a valid test database URL");
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "127.0.0.1".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("postgres");
    format!("host={host} port={port} user={user} dbname={name}")
}

impl Drop for FreshDatabase {
    fn drop(&mut self) {
        // Drop cannot await: drop the database from a thread of its own.
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok((client, conn)) =
                    tokio_postgres::connect(&server_url(), tokio_postgres::NoTls).await
                {
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}
