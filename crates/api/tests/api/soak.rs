//! The soak: mixed traffic from patient clients, clients that time out and
//! clients that hang up, while PostgreSQL is restarted once and Redis is
//! killed once. It fails if any answer is a 500, if anything acknowledged
//! is missing afterwards, or if a gauge (fair share, pool, requests in
//! flight) has not come back to idle.
//!
//! The server runs on a PostgreSQL cluster and a `redis-server` of the
//! test's own, so stopping them touches nothing else. `TENANTRY_SOAK_SECS`
//! sets its length (20 s by default, for CI); `scripts/soak` runs a long
//! one in release mode.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tenantry_db::embedded::EmbeddedPostgres;
use tenantry_fairness::testing::RedisServer;
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

use crate::helpers::{ADMIN_TOKEN, JWT_SECRET, eventually, test_tiers};

/// What the clients saw and what the server acknowledged.
#[derive(Default)]
struct Tally {
    statuses: BTreeMap<u16, u64>,
    /// Problem codes of the 5xx answers.
    codes: BTreeMap<String, u64>,
    /// Posts answered 201: they must all be there at the end.
    posts: Vec<Uuid>,
    /// Analytics events answered 202.
    events: i64,
    /// 500s, with what was asked.
    errors: Vec<String>,
}

struct Soak {
    addr: std::net::SocketAddr,
    client: reqwest::Client,
    /// Gives up on an answer after a few milliseconds, then disconnects.
    impatient: reqwest::Client,
    tenants: Vec<(String, String)>,
    tally: Mutex<Tally>,
}

impl Soak {
    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    fn request(
        &self,
        client: &reqwest::Client,
        method: Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        let (slug, token) = &self.tenants[rand::rng().random_range(0..self.tenants.len())];
        client
            .request(method, self.url(path))
            .bearer_auth(token)
            .header("x-tenant", slug)
    }

    async fn record(&self, what: &str, res: reqwest::Response) -> Option<Value> {
        let status = res.status();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        let mut tally = self.tally.lock().expect("tally");
        *tally.statuses.entry(status.as_u16()).or_default() += 1;
        if status.is_server_error() {
            let code = body["code"].as_str().unwrap_or("?").to_owned();
            *tally.codes.entry(code).or_default() += 1;
        }
        if status == StatusCode::INTERNAL_SERVER_ERROR || status.as_u16() == 502 {
            tally.errors.push(format!("{what}: {status} {body}"));
        }
        status.is_success().then_some(body)
    }

    /// One client's loop until `until`.
    async fn client(self: Arc<Self>, until: tokio::time::Instant) {
        while tokio::time::Instant::now() < until {
            let roll = rand::rng().random_range(0..100);
            match roll {
                0..=29 => {
                    let content = format!("soak {}", Uuid::now_v7());
                    let res = self
                        .request(&self.client, Method::POST, "/v1/posts")
                        .json(&json!({ "content": content }))
                        .send()
                        .await;
                    if let Ok(res) = res
                        && let Some(body) = self.record("POST /v1/posts", res).await
                    {
                        let id: Option<Uuid> = body["id"].as_str().and_then(|s| s.parse().ok());
                        self.tally.lock().expect("tally").posts.extend(id);
                    }
                }
                30..=39 => {
                    let res = self
                        .request(&self.client, Method::POST, "/v1/analytics/events")
                        .json(&json!({"events": [{"type": "soak"}, {"type": "soak"}]}))
                        .send()
                        .await;
                    if let Ok(res) = res
                        && let Some(body) = self.record("POST /v1/analytics/events", res).await
                    {
                        self.tally.lock().expect("tally").events +=
                            body["accepted"].as_i64().unwrap_or(0);
                    }
                }
                40..=69 => {
                    let path = ["/v1/posts?limit=20", "/v1/tenant", "/v1/members?limit=20"]
                        [rand::rng().random_range(0..3)];
                    if let Ok(res) = self.request(&self.client, Method::GET, path).send().await {
                        self.record(path, res).await;
                    }
                }
                70..=84 => {
                    // Times out and disconnects, mid-request or not.
                    let _ = self
                        .request(&self.impatient, Method::GET, "/v1/posts?limit=20")
                        .send()
                        .await;
                }
                _ => self.hang_up().await,
            }
        }
    }

    /// Sends a request on a raw connection and closes it right away or a
    /// moment later.
    async fn hang_up(&self) {
        let (slug, token) = &self.tenants[rand::rng().random_range(0..self.tenants.len())];
        let Ok(mut stream) = tokio::net::TcpStream::connect(self.addr).await else {
            return;
        };
        let request = format!(
            "POST /v1/posts HTTP/1.1\r\nHost: soak\r\nX-Tenant: {slug}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 23\r\n\r\n{{\"content\": \"hung up\"}}"
        );
        let _ = stream.write_all(request.as_bytes()).await;
        let wait = rand::rng().random_range(0..5);
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
}

fn soak_duration() -> Duration {
    let secs = std::env::var("TENANTRY_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    Duration::from_secs(secs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_traffic_through_a_postgres_restart_and_a_redis_kill_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pg = EmbeddedPostgres::start(dir.path())
        .await
        .expect("a private PostgreSQL");
    let mut redis = RedisServer::start();
    // Through the builder `serve` uses, with Redis for the cache and the
    // rate limits, as a production node would run.
    let settings = tenantry_api::Settings {
        listen: ([127, 0, 0, 1], 0).into(),
        database_url: Some(pg.connection_string()),
        data_dir: dir.path().to_path_buf(),
        redis_url: Some(redis.url()),
        jwt_secret: Some(JWT_SECRET.to_owned()),
        admin_token: Some(ADMIN_TOKEN.to_owned()),
        ..tenantry_api::Settings::default()
    };
    let app = tenantry_api::Application::build_with(settings, |state| {
        state.tiers.store(Arc::new(test_tiers()));
        state
    })
    .await
    .expect("the server starts on the private cluster");
    let addr = app.local_addr().expect("addr");
    let state = app.state();
    let db = state.db.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let mut tenants = Vec::new();
    for i in 0..3 {
        let slug = format!("soak{i}");
        let owner = Uuid::now_v7();
        let res = client
            .post(format!("http://{addr}/v1/admin/tenants"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"slug": slug, "name": slug, "owner_user_id": owner}))
            .send()
            .await
            .expect("create tenant");
        assert_eq!(res.status(), StatusCode::CREATED);
        let token = state
            .jwt
            .issue(owner, Duration::from_secs(3600), None, None)
            .expect("token");
        tenants.push((slug, token));
    }
    let soak = Arc::new(Soak {
        addr,
        client: client.clone(),
        impatient: reqwest::Client::builder()
            .timeout(Duration::from_millis(3))
            .build()
            .expect("client"),
        tenants,
        tally: Mutex::new(Tally::default()),
    });

    let length = soak_duration();
    let until = tokio::time::Instant::now() + length;
    let clients: Vec<_> = (0..24)
        .map(|_| tokio::spawn(soak.clone().client(until)))
        .collect();

    // A third of the way in, PostgreSQL restarts; two thirds in, Redis dies.
    tokio::time::sleep(length / 3).await;
    pg.stop().await.expect("stop PostgreSQL");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pg = EmbeddedPostgres::start(dir.path())
        .await
        .expect("start PostgreSQL again");
    tokio::time::sleep(length / 3).await;
    redis.stop();

    for c in clients {
        c.await.expect("client task");
    }

    // Idle: everything taken is given back.
    let share = state.fairness.db_share.clone();
    eventually("the fair share is idle", || {
        let share = share.clone();
        async move {
            let s = share.stats();
            s.in_use == 0 && s.waiting == 0
        }
    })
    .await;
    eventually("the pool is idle", || {
        let db = db.clone();
        async move {
            let (open, idle, waiting) = db.pool_status();
            open == idle && waiting == 0
        }
    })
    .await;
    eventually("no request is in flight", || {
        let state = state.clone();
        async move { state.fairness.shedder.in_flight() == 0 }
    })
    .await;

    // And the server serves at once.
    let (slug, token) = &soak.tenants[0];
    let res = client
        .get(format!("http://{addr}/v1/posts?limit=20"))
        .bearer_auth(token)
        .header("x-tenant", slug)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK, "served after the soak");

    let tally = std::mem::take(&mut *soak.tally.lock().expect("tally"));
    eprintln!(
        "soak of {length:?}: statuses {:?}, 5xx codes {:?}, {} posts and {} events acknowledged",
        tally.statuses,
        tally.codes,
        tally.posts.len(),
        tally.events
    );
    assert!(
        tally.errors.is_empty(),
        "{} answers were 500: {:#?}",
        tally.errors.len(),
        &tally.errors[..tally.errors.len().min(10)]
    );
    assert!(
        tally.statuses.get(&201).copied().unwrap_or(0) > 0,
        "some writes were acknowledged"
    );

    // Everything acknowledged is there.
    let config: tokio_postgres::Config = pg.connection_string().parse().expect("config");
    let (raw, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let found: i64 = raw
        .query_one(
            "SELECT count(*) FROM posts WHERE id = ANY($1)",
            &[&tally.posts],
        )
        .await
        .expect("count posts")
        .get(0);
    assert_eq!(found, tally.posts.len() as i64, "acknowledged posts lost");
    let events: i64 = raw
        .query_one(
            "SELECT count(*) FROM analytics_events WHERE type = 'soak'",
            &[],
        )
        .await
        .expect("count events")
        .get(0);
    assert!(
        events >= tally.events,
        "acknowledged events lost: {events} stored, {} acknowledged",
        tally.events
    );

    let _ = stop.send(());
    let _ = server.await;
    drop(raw);
    pg.stop().await.expect("stop PostgreSQL");
}
