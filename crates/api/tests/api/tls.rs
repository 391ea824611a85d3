//! A whole server over TLS: PostgreSQL with `sslmode=verify-full` and Redis
//! at `rediss://` with a CA of the test's own, both servers started here.

use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::json;
use tenantry_db::testing::tls::{Certificates, TlsCluster, TlsRedis};
use uuid::Uuid;

use crate::helpers::{ADMIN_TOKEN, JWT_SECRET, test_tiers};

#[tokio::test]
async fn a_server_reaches_postgres_with_verify_full_and_redis_over_rediss() {
    let certs = Certificates::generate();
    let pg = TlsCluster::start(&certs, true);
    let redis = TlsRedis::start(&certs);
    if redis.is_none() {
        eprintln!("this redis-server has no TLS support: checking PostgreSQL only");
    }
    let ca = certs.ca.display();
    let settings = tenantry_api::Settings {
        listen: ([127, 0, 0, 1], 0).into(),
        database_url: Some(pg.url(
            "localhost",
            &format!("sslmode=verify-full sslrootcert={ca}"),
        )),
        redis_url: redis
            .as_ref()
            .map(|r| format!("rediss://localhost:{}/", r.port)),
        redis_ca_file: redis.as_ref().map(|_| certs.ca.clone()),
        jwt_secret: Some(JWT_SECRET.to_owned()),
        admin_token: Some(ADMIN_TOKEN.to_owned()),
        ..tenantry_api::Settings::default()
    };
    let app = tenantry_api::Application::build_with(settings, |state| {
        state.tiers.store(Arc::new(test_tiers()));
        state
    })
    .await
    .expect("the server starts over TLS");
    let addr = app.local_addr().expect("addr");
    let state = app.state();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    let url = |path: &str| format!("http://{addr}{path}");

    let owner = Uuid::now_v7();
    let res = http
        .post(url("/v1/admin/tenants"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"slug": "tls-co", "name": "TLS Co", "owner_user_id": owner}))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::CREATED);
    let token = state
        .jwt
        .issue(owner, std::time::Duration::from_secs(600), None, None)
        .expect("token");
    let res = http
        .request(Method::GET, url("/v1/tenant"))
        .bearer_auth(&token)
        .header("x-tenant", "tls-co")
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);

    // Every connection the server holds is encrypted.
    let (client, conn) = tokio_postgres::connect(
        &pg.url("127.0.0.1", "sslmode=disable"),
        tokio_postgres::NoTls,
    )
    .await
    .expect("connect as the test");
    tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE s.ssl)
             FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
             WHERE a.application_name = 'tenantry'",
            &[],
        )
        .await
        .expect("read pg_stat_ssl");
    let (all, encrypted): (i64, i64) = (row.get(0), row.get(1));
    assert!(all > 0, "the server holds connections");
    assert_eq!(all, encrypted, "every server connection uses TLS");

    if let Some(redis) = &redis {
        assert!(state.fairness.rate.is_shared(), "limits go through Redis");
        let client = tenantry_cache::redis_client(
            &format!("rediss://localhost:{}/", redis.port),
            Some(&certs.ca),
        )
        .expect("client");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect to Redis over TLS");
        let keys: i64 = redis::cmd("DBSIZE")
            .query_async(&mut conn)
            .await
            .expect("DBSIZE");
        assert!(keys > 0, "the server wrote to Redis over TLS");
    }

    let _ = stop.send(());
    server
        .await
        .expect("join")
        .expect("the server stops cleanly");
}

#[tokio::test]
async fn redis_over_tls_refuses_a_wrong_ca_and_takes_the_right_one() {
    let certs = Certificates::generate();
    let Some(redis) = TlsRedis::start(&certs) else {
        eprintln!("this redis-server has no TLS support: nothing to check");
        return;
    };
    let url = format!("rediss://localhost:{}/", redis.port);
    let ping = |client: redis::Client| async move {
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };

    let right = tenantry_cache::redis_client(&url, Some(&certs.ca)).expect("client");
    assert_eq!(ping(right).await.expect("PING over TLS"), "PONG");

    let wrong = tenantry_cache::redis_client(&url, Some(&certs.wrong_ca)).expect("client");
    let err = ping(wrong).await.expect_err("a wrong CA is refused");
    assert!(
        err.to_string().contains("UnknownIssuer"),
        "the refusal says the issuer is unknown: {err}"
    );

    // `#insecure`: encrypted, not checked (the redis crate's convention).
    let insecure = tenantry_cache::redis_client(&format!("{url}#insecure"), None).expect("client");
    assert_eq!(ping(insecure).await.expect("PING"), "PONG");

    // A CA file only makes sense with rediss://.
    let plain = tenantry_cache::redis_client("redis://localhost:6379/", Some(&certs.ca));
    assert!(plain.is_err());
}
