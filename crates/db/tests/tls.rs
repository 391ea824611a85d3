//! TLS to PostgreSQL for real: a private cluster with `ssl = on` and a
//! certificate made for the test, reached the ways libpq's `sslmode` says.

use std::time::Duration;

use tenantry_db::testing::tls::{CERT_USER, Certificates, TlsCluster};
use tenantry_db::{Db, DbOptions};

/// Whether the pool's connections are encrypted, as the server sees them.
async fn uses_tls(db: &Db) -> bool {
    let conn = db.owner_connection().await.expect("a connection");
    conn.query_one(
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        &[],
    )
    .await
    .expect("read pg_stat_ssl")
    .get(0)
}

async fn refused(url: &str) -> String {
    let db = Db::connect(url, &DbOptions::default()).expect("the URL parses");
    let err = db.ping().await.expect_err("the connection is refused");
    format!("{err:#}")
}

#[tokio::test]
async fn verify_full_connects_over_tls_and_refuses_a_wrong_ca_or_host_name() {
    let certs = Certificates::generate();
    let pg = TlsCluster::start(&certs, true);
    let ca = certs.ca.display();

    // verify-full with the right CA: the pool and LISTEN both go over TLS.
    let db = Db::connect(
        &pg.url(
            "localhost",
            &format!("sslmode=verify-full sslrootcert={ca}"),
        ),
        &DbOptions::default(),
    )
    .expect("parse");
    assert!(uses_tls(&db).await, "verify-full connections are encrypted");
    let mut notes = db.listen("tls_test").await.expect("LISTEN over TLS");
    db.notify("tls_test", "hello").await.expect("notify");
    let note = tokio::time::timeout(Duration::from_secs(10), notes.recv())
        .await
        .expect("the notification arrives");
    assert_eq!(note.as_deref(), Some("hello"));

    // The same as a URL, the CA's path percent-encoded.
    let url = format!(
        "postgres://postgres@localhost:{}/postgres?sslmode=verify-full&sslrootcert={}",
        pg.port,
        certs.ca.display().to_string().replace('/', "%2F")
    );
    let db = Db::connect(&url, &DbOptions::default()).expect("parse");
    assert!(uses_tls(&db).await);

    // A CA that did not sign the server's certificate: refused, saying so.
    let message = refused(&pg.url(
        "localhost",
        &format!(
            "sslmode=verify-full sslrootcert={}",
            certs.wrong_ca.display()
        ),
    ))
    .await;
    assert!(
        message.contains("not signed by a CA in sslrootcert=")
            && message.contains(&certs.wrong_ca.display().to_string()),
        "a wrong CA names itself: {message}"
    );

    // The certificate names `localhost`, not 127.0.0.1: verify-full refuses
    // the address, verify-ca (the chain only) takes it.
    let message = refused(&pg.url(
        "127.0.0.1",
        &format!("sslmode=verify-full sslrootcert={ca}"),
    ))
    .await;
    assert!(
        message.contains("not valid for the host name `127.0.0.1`"),
        "a host name mismatch says so: {message}"
    );
    let db = Db::connect(
        &pg.url("127.0.0.1", &format!("sslmode=verify-ca sslrootcert={ca}")),
        &DbOptions::default(),
    )
    .expect("parse");
    assert!(
        uses_tls(&db).await,
        "verify-ca does not check the host name"
    );
    let message = refused(&pg.url(
        "127.0.0.1",
        &format!("sslmode=verify-ca sslrootcert={}", certs.wrong_ca.display()),
    ))
    .await;
    assert!(message.contains("not signed by a CA"), "{message}");

    // require without a CA: encrypted, nothing checked.
    let db = Db::connect(
        &pg.url("127.0.0.1", "sslmode=require"),
        &DbOptions::default(),
    )
    .expect("parse");
    assert!(uses_tls(&db).await, "require encrypts without a CA");
    // prefer takes TLS when the server offers it.
    let db = Db::connect(
        &pg.url("127.0.0.1", "sslmode=prefer"),
        &DbOptions::default(),
    )
    .expect("parse");
    assert!(uses_tls(&db).await, "prefer uses TLS when offered");
    // No TLS key and a server on this machine: plain (see `tenantry_db::tls`).
    let db = Db::connect(&pg.url("127.0.0.1", ""), &DbOptions::default()).expect("parse");
    assert!(!uses_tls(&db).await, "loopback defaults to plain");
    let db = Db::connect(
        &pg.url("127.0.0.1", "sslmode=disable"),
        &DbOptions::default(),
    )
    .expect("parse");
    assert!(!uses_tls(&db).await, "disable never encrypts");

    // A client certificate for `cert` authentication.
    pg.create_role(CERT_USER).await;
    let with_cert = format!(
        "host=localhost port={} user={CERT_USER} dbname=postgres sslmode=verify-full \
         sslrootcert={ca} sslcert={} sslkey={}",
        pg.port,
        certs.client_cert.display(),
        certs.client_key.display()
    );
    let db = Db::connect(&with_cert, &DbOptions::default()).expect("parse");
    assert!(uses_tls(&db).await, "the client certificate logs in");
    let without = format!(
        "host=localhost port={} user={CERT_USER} dbname=postgres sslmode=verify-full \
         sslrootcert={ca}",
        pg.port
    );
    let message = refused(&without).await;
    assert!(
        message.contains("requires a valid client certificate"),
        "no certificate, no login: {message}"
    );
}

#[tokio::test]
async fn prefer_falls_back_to_plain_and_require_refuses_a_server_without_tls() {
    let certs = Certificates::generate();
    let pg = TlsCluster::start(&certs, false);
    let db = Db::connect(
        &pg.url("localhost", "sslmode=prefer"),
        &DbOptions::default(),
    )
    .expect("parse");
    assert!(!uses_tls(&db).await, "prefer falls back to plain");
    let message = refused(&pg.url("localhost", "sslmode=require")).await;
    assert!(message.contains("does not support TLS"), "{message}");
    let message = refused(&pg.url(
        "localhost",
        &format!("sslmode=verify-full sslrootcert={}", certs.ca.display()),
    ))
    .await;
    assert!(message.contains("does not support TLS"), "{message}");
}
