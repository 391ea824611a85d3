//! Throwaway databases for this workspace's tests.
//!
//! Every test that needs PostgreSQL creates a uniquely named database in the
//! server at `TENANTRY_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`, which `scripts/test` sets
//! up) and drops it afterwards. Here once, so the api, bench and db tests
//! share one way of doing it.

use std::str::FromStr as _;

use uuid::Uuid;

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
