//! Clients that hang up: every resource a request took across an await (the
//! fair share's slot, a pooled connection, the in-flight gauge) comes back
//! when the request's future is dropped, wherever it was parked.
//!
//! The requests are written on raw TCP connections that are closed right
//! after sending or a little later, as `wrk` does at the end of a run: hyper
//! then drops the request's future.

use std::time::Duration;

use rand::Rng;
use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::helpers::*;

/// A tenant whose post list is read from the database on every request
/// (the list cache off) and whose rates never bind.
async fn uncached_tenant(app: &TestApp, slug: &str, limits: serde_json::Value) -> User {
    let (tenant, owner) = app.tenant(slug).await;
    let mut all = json!({
        "cache_ttl_secs": 0,
        "rate_per_sec": 10_000_000,
        "burst": 10_000_000,
        "user_rate_per_sec": 10_000_000,
    });
    if let (Some(a), Some(l)) = (all.as_object_mut(), limits.as_object()) {
        a.extend(l.clone());
    }
    limit(app, tenant["id"].as_str().expect("id"), all).await;
    app.post(&owner, "something to list").await;
    owner
}

/// Sends `GET /v1/posts?limit=20` as `user` on a fresh connection and hangs
/// up after `after` (zero: right after sending).
async fn hang_up(app: &TestApp, user: &User, after: Duration) {
    let mut stream = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connect");
    let request = format!(
        "GET /v1/posts?limit=20 HTTP/1.1\r\nHost: {}\r\nX-Tenant: {}\r\nAuthorization: Bearer {}\r\n\r\n",
        app.addr, user.tenant, user.token
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send the request");
    if !after.is_zero() {
        tokio::time::sleep(after).await;
    }
    drop(stream);
}

/// `count` clients at once, half hanging up right after sending, the rest
/// at a random point in the first `within`.
async fn flood_of_hang_ups(app: &TestApp, user: &User, count: usize, within: Duration) {
    let mut rng = rand::rng();
    let clients: Vec<_> = (0..count)
        .map(|i| {
            let after = if i % 2 == 0 {
                Duration::ZERO
            } else {
                within.mul_f64(rng.random::<f64>())
            };
            hang_up(app, user, after)
        })
        .collect();
    futures::future::join_all(clients).await;
}

/// The value of an unlabelled gauge in `/metrics`.
async fn gauge(app: &TestApp, name: &str) -> f64 {
    let text = app
        .request(Method::GET, "/metrics")
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().expect("a number"))
}

/// Waits until nothing is held: no share slot, no waiter, no pool waiter,
/// no request in flight.
async fn all_given_back(app: &TestApp) {
    let share = app.state.fairness.db_share.clone();
    eventually("every share slot and waiter is given back", || {
        let share = share.clone();
        async move {
            let s = share.stats();
            s.in_use == 0 && s.waiting == 0 && s.waiting_tenants == 0
        }
    })
    .await;
    // And every request's CPU turn.
    let cpu = app.state.fairness.cpu_share.clone();
    eventually("every CPU turn and waiter is given back", || {
        let cpu = cpu.clone();
        async move {
            let s = cpu.stats();
            s.in_use == 0 && s.waiting == 0 && s.waiting_tenants == 0
        }
    })
    .await;
    // The `/metrics` request that reads the gauge is itself in flight.
    eventually(
        "the in-flight gauge is back to the one reading it",
        || async { gauge(app, "http_requests_in_flight").await == 1.0 },
    )
    .await;
}

/// A request that is served only if the share has a free slot within its
/// budget: after a leak it would wait the whole budget and answer 503.
async fn next_request_is_served(app: &TestApp, user: &User) {
    let res = app
        .as_user(user, Method::GET, "/v1/posts?limit=20")
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK, "the next request is served");
}

/// Holds `posts` locked so every read of it waits: the share fills up and
/// requests queue for it while their clients hang up.
async fn lock_posts(app: &TestApp) -> tokio_postgres::Client {
    let client = app.raw_db().await;
    client
        .batch_execute("BEGIN; LOCK TABLE posts IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock posts");
    client
}

#[tokio::test]
async fn clients_that_hang_up_give_back_the_fair_share() {
    let app = TestApp::spawn_fair(4096, Duration::from_secs(2)).await;
    let owner = uncached_tenant(&app, "hangups", json!({"db_concurrency": 4})).await;
    let other = uncached_tenant(&app, "bystander", json!({})).await;

    // Unhindered: the requests run, some are cut off mid-way.
    for _ in 0..3 {
        flood_of_hang_ups(&app, &owner, 64, Duration::from_millis(20)).await;
    }
    // Behind a lock: the share fills, the rest queue, and every client hangs
    // up while its request holds a slot or waits for one.
    let lock = lock_posts(&app).await;
    flood_of_hang_ups(&app, &owner, 64, Duration::from_millis(200)).await;
    lock.batch_execute("COMMIT").await.expect("unlock");

    all_given_back(&app).await;
    next_request_is_served(&app, &owner).await;
    next_request_is_served(&app, &other).await;
}

#[tokio::test]
async fn hang_ups_racing_statement_timeouts_and_queue_expiry_leave_nothing_behind() {
    // A short queue budget, so waiters expire while slots are handed over,
    // and a statement timeout that fires while the lock is held.
    let app = TestApp::spawn_fair(4096, Duration::from_millis(150)).await;
    let owner = uncached_tenant(
        &app,
        "races",
        json!({"db_concurrency": 2, "statement_timeout_ms": 100}),
    )
    .await;

    for round in 0..4 {
        let lock = lock_posts(&app).await;
        let hold = Duration::from_millis(100 + 40 * round);
        let unlock = async {
            tokio::time::sleep(hold).await;
            lock.batch_execute("COMMIT").await.expect("unlock");
        };
        // Clients that stay for their answer and clients that hang up.
        let patient = async {
            let requests = (0..16).map(|_| {
                app.as_user(&owner, Method::GET, "/v1/posts?limit=20")
                    .send()
            });
            for res in futures::future::join_all(requests).await {
                let status = res.expect("request").status();
                assert!(
                    status == StatusCode::OK || status == StatusCode::SERVICE_UNAVAILABLE,
                    "{status}"
                );
            }
        };
        tokio::join!(
            unlock,
            patient,
            flood_of_hang_ups(&app, &owner, 48, Duration::from_millis(300))
        );
    }

    all_given_back(&app).await;
    next_request_is_served(&app, &owner).await;
}

/// The harness for the database path: transactions that wait for the share,
/// take a connection, send the prelude with a statement, write and commit,
/// each cut off after a growing slice of time — at the admission, the
/// connect, mid-statement, at the commit or after it. Four run at once over a
/// share of two, so some are cut off while queued or while being handed a
/// slot. Afterwards every slot and every pooled connection is back.
#[tokio::test]
async fn a_transaction_dropped_at_any_point_gives_back_its_slot_and_connection() {
    use tenantry_db::{DbError, TenantContext};
    use tenantry_fairness::share::{Claim, DbShare};

    let app = TestApp::spawn().await;
    let (tenant, owner) = app.tenant("drops").await;
    app.post(&owner, "counted").await;
    let tenant_id: uuid::Uuid = tenant["id"].as_str().expect("id").parse().expect("uuid");
    let share = DbShare::new(2);
    let db = app.state.db.clone();
    let claim = Claim {
        tenant: tenant_id,
        limit: 2,
        weight: 1,
    };

    for step in 0..60u32 {
        let cut_off = Duration::from_micros(200 * u64::from(step));
        let runs = (0..4u64).map(|i| {
            // Staggered, so one is cut off just as another hands over.
            let cut_off = cut_off + Duration::from_micros(150 * i);
            let share = share.clone();
            let admission: tenantry_db::Admission = Box::pin(async move {
                share
                    .acquire(claim, Duration::from_secs(5))
                    .await
                    .map(|permit| Box::new(permit) as Box<dyn std::any::Any + Send + Sync>)
                    .map_err(|_| DbError::Unavailable("the share is busy".to_owned()))
            });
            let mut tx = db.begin_lazy(&TenantContext::tenant(tenant_id, 5_000), Some(admission));
            let work = async move {
                tx.query(
                    "SELECT pg_sleep(0.001), count(*) FROM posts WHERE tenant_id = $1",
                    &[&tenant_id],
                )
                .await?;
                tx.execute(
                    "UPDATE posts SET content = content WHERE tenant_id = $1",
                    &[&tenant_id],
                )
                .await?;
                tx.commit().await
            };
            tokio::time::timeout(cut_off, work)
        });
        futures::future::join_all(runs).await;
    }

    eventually("every slot and every connection is back", || {
        let (share, db) = (share.clone(), db.clone());
        async move {
            let s = share.stats();
            let (open, idle, waiting) = db.pool_status();
            s.in_use == 0 && s.waiting == 0 && open == idle && waiting == 0
        }
    })
    .await;
    let res = app
        .as_user(&owner, Method::GET, "/v1/posts?limit=20")
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);
}
