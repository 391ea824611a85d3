//! `TestApp`: a whole server on port 0 over a fresh database, with typed
//! request helpers.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use tenantry_api::AppState;
use tenantry_db::DbOptions;
use uuid::Uuid;

pub const JWT_SECRET: &str = "test-secret-test-secret-test-secret-0123";
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

pub use tenantry_db::testing::FreshDatabase;

/// The built-in tiers with their request rates raised a thousandfold, so
/// functional tests that make many requests as one user never meet the rate
/// limiter (which has tests of its own). Everything else, and the order of the
/// tiers, stays as built in.
pub fn test_tiers() -> tenantry_core::TierTable {
    let mut tiers = tenantry_core::TierTable::default();
    for limits in tiers.tiers.values_mut() {
        limits.rate_per_sec = limits.rate_per_sec.saturating_mul(1000);
        limits.burst = limits.burst.saturating_mul(1000);
        limits.user_rate_per_sec = limits.user_rate_per_sec.saturating_mul(1000);
    }
    tiers
}

/// `scripts/pgbouncer-test` runs the suite with every server reaching its
/// database through PgBouncer (transaction mode) on this port; the test's own
/// connections still go straight to PostgreSQL.
fn through_pgbouncer(url: &str) -> String {
    match std::env::var("TENANTRY_TEST_PGBOUNCER_PORT") {
        Ok(port) if !port.is_empty() => url
            .split_whitespace()
            .map(|kv| {
                if kv.starts_with("port=") {
                    format!("port={port}")
                } else {
                    kv.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join(" "),
        _ => url.to_owned(),
    }
}

/// `TENANTRY_DB_STATEMENTS=per-transaction`, as `serve` reads it (set by
/// `scripts/pgbouncer-test`); cached otherwise.
fn statement_mode() -> tenantry_db::StatementMode {
    match std::env::var("TENANTRY_DB_STATEMENTS").as_deref() {
        Ok("per-transaction") => tenantry_db::StatementMode::PerTransaction,
        _ => tenantry_db::StatementMode::Cached,
    }
}

pub struct TestApp {
    pub addr: std::net::SocketAddr,
    pub client: reqwest::Client,
    pub state: Arc<AppState>,
    /// Shared with peers ([`TestApp::spawn_peer`]); dropped with the last.
    pub db: Arc<FreshDatabase>,
    /// The databases of the cells beside `main` ([`TestApp::spawn_cells`]),
    /// by name.
    pub cells: Vec<(String, Arc<FreshDatabase>)>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(|_| {}).await
    }

    /// Spawns with a small in-flight cap or database queue budget, for the
    /// fairness tests.
    pub async fn spawn_fair(max_in_flight: usize, db_queue_budget: Duration) -> TestApp {
        Self::spawn_configured(None, move |state| {
            state.with_fairness(
                tenantry_fairness::rate::RateLimiter::local(),
                max_in_flight,
                db_queue_budget,
            )
        })
        .await
    }

    /// Spawns with a chance to adjust the state's settings first.
    pub async fn spawn_with(adjust: impl FnOnce(&mut Option<String>)) -> TestApp {
        let mut base_domain = None;
        adjust(&mut base_domain);
        Self::spawn_configured(base_domain, |state| state).await
    }

    /// Spawns with a base domain and a last word on the state.
    pub async fn spawn_configured(
        base_domain: Option<String>,
        configure: impl FnOnce(AppState) -> AppState,
    ) -> TestApp {
        let fresh = Arc::new(FreshDatabase::migrated().await);
        Self::spawn_on(fresh, base_domain, configure).await
    }

    /// A server whose control database (the cell `main`) is fresh, with
    /// cells `names` beside it, each a fresh database of its own
    /// (`TENANTRY_CELLS`).
    pub async fn spawn_cells(names: &[&str]) -> TestApp {
        let fresh = Arc::new(FreshDatabase::migrated().await);
        let mut cells = Vec::new();
        for name in names {
            cells.push((
                (*name).to_owned(),
                Arc::new(FreshDatabase::migrated().await),
            ));
        }
        Self::spawn_on_cells(fresh, cells, None, |state| state).await
    }

    /// Another server (node) on this app's database, configured by
    /// `configure`.
    pub async fn spawn_peer(&self, configure: impl FnOnce(AppState) -> AppState) -> TestApp {
        Self::spawn_on_cells(self.db.clone(), self.cells.clone(), None, configure).await
    }

    async fn spawn_on(
        fresh: Arc<FreshDatabase>,
        base_domain: Option<String>,
        configure: impl FnOnce(AppState) -> AppState,
    ) -> TestApp {
        Self::spawn_on_cells(fresh, Vec::new(), base_domain, configure).await
    }

    async fn spawn_on_cells(
        fresh: Arc<FreshDatabase>,
        cells: Vec<(String, Arc<FreshDatabase>)>,
        base_domain: Option<String>,
        configure: impl FnOnce(AppState) -> AppState,
    ) -> TestApp {
        let url = through_pgbouncer(&fresh.url);
        Self::spawn_everything(
            fresh,
            cells,
            url,
            |s| s.base_domain = base_domain,
            configure,
        )
        .await
    }

    /// A server on `fresh`, reached at `url` (straight, or through
    /// PgBouncer), with the test's settings adjusted by `adjust` (e.g. read
    /// replicas) and a last word on the state.
    pub async fn spawn_settings(
        fresh: Arc<FreshDatabase>,
        url: String,
        adjust: impl FnOnce(&mut tenantry_api::Settings),
        configure: impl FnOnce(AppState) -> AppState,
    ) -> TestApp {
        Self::spawn_everything(fresh, Vec::new(), url, adjust, configure).await
    }

    async fn spawn_everything(
        fresh: Arc<FreshDatabase>,
        cells: Vec<(String, Arc<FreshDatabase>)>,
        url: String,
        adjust: impl FnOnce(&mut tenantry_api::Settings),
        configure: impl FnOnce(AppState) -> AppState,
    ) -> TestApp {
        let spec: Vec<String> = cells
            .iter()
            .map(|(name, db)| format!("{name}={}", through_pgbouncer(&db.url)))
            .collect();
        // Through the same builder `serve` uses, with the test's secrets,
        // its database and the pool size tests were written against.
        let mut settings = tenantry_api::Settings {
            listen: ([127, 0, 0, 1], 0).into(),
            database_url: Some(url),
            cells: (!spec.is_empty()).then(|| spec.join(",")),
            statement_mode: statement_mode(),
            jwt_secret: Some(JWT_SECRET.to_owned()),
            admin_token: Some(ADMIN_TOKEN.to_owned()),
            db_max_connections: DbOptions::default().max_connections,
            // Capacities stay as each test sets them; the adaptive
            // controller has its own tests (`scaling`), which turn it on.
            adaptive: tenantry_api::scaling::AdaptiveConfig {
                enabled: false,
                ..Default::default()
            },
            ..tenantry_api::Settings::default()
        };
        adjust(&mut settings);
        let app = tenantry_api::Application::build_with(settings, |state| {
            state.tiers.store(Arc::new(test_tiers()));
            configure(state)
        })
        .await
        .expect("build the server");
        let addr = app.local_addr().expect("addr");
        let state = app.state();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until(async move {
            let _ = rx.await;
        }));
        TestApp {
            addr,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            state,
            db: fresh,
            cells,
            shutdown: Some(tx),
            server: Some(server),
        }
    }

    /// A connection string for the test database (as the connecting user),
    /// straight to PostgreSQL.
    pub fn database_url(&self) -> String {
        self.db.url.clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn token(&self, user: Uuid) -> String {
        self.state
            .jwt
            .issue(user, Duration::from_secs(600), None, None)
            .expect("token")
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    /// A request as the platform admin.
    pub fn admin(&self, method: Method, path: &str) -> RequestBuilder {
        self.request(method, path).bearer_auth(ADMIN_TOKEN)
    }

    /// A tenant-scoped request as `user`, naming the tenant by `X-Tenant`.
    pub fn as_user(&self, user: &User, method: Method, path: &str) -> RequestBuilder {
        self.request(method, path)
            .bearer_auth(&user.token)
            .header("x-tenant", &user.tenant)
    }

    pub fn user(&self, tenant: &str) -> User {
        let id = Uuid::now_v7();
        User {
            id,
            token: self.token(id),
            tenant: tenant.to_owned(),
        }
    }

    /// Creates a tenant; returns it and its owner.
    pub async fn tenant(&self, slug: &str) -> (Value, User) {
        self.tenant_with(slug, json!({})).await
    }

    pub async fn tenant_with(&self, slug: &str, extra: Value) -> (Value, User) {
        let owner = self.user(slug);
        let mut body =
            json!({"slug": slug, "name": format!("Tenant {slug}"), "owner_user_id": owner.id});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let res = self
            .admin(Method::POST, "/v1/admin/tenants")
            .json(&body)
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), StatusCode::CREATED, "create tenant {slug}");
        (res.json().await.expect("json"), owner)
    }

    /// Adds a new user to `owner`'s tenant with `role`.
    pub async fn member(&self, owner: &User, role: &str) -> User {
        let user = self.user(&owner.tenant);
        let res = self
            .as_user(owner, Method::POST, "/v1/members")
            .json(&json!({"user_id": user.id, "role": role}))
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), StatusCode::CREATED, "add member");
        user
    }

    /// Creates a post as `user`; returns its id.
    pub async fn post(&self, user: &User, content: &str) -> String {
        let res = self
            .as_user(user, Method::POST, "/v1/posts")
            .json(&json!({"content": content}))
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), StatusCode::CREATED, "create post");
        let body: Value = res.json().await.expect("json");
        body["id"].as_str().expect("id").to_owned()
    }

    /// A raw connection to the test database as the connecting (owner) user.
    pub async fn raw_db(&self) -> tokio_postgres::Client {
        self.db.connect().await
    }

    /// The single number `sql` selects, read as the owner (past RLS).
    pub async fn count(&self, sql: &str) -> i64 {
        self.raw_db()
            .await
            .query_one(sql, &[])
            .await
            .expect("count")
            .get(0)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
        // The database itself is dropped with the `db` field.
    }
}

/// A user with a token, addressing one tenant.
#[derive(Debug, Clone)]
pub struct User {
    pub id: Uuid,
    pub token: String,
    pub tenant: String,
}

impl User {
    /// The same user addressing another tenant.
    pub fn in_tenant(&self, tenant: &str) -> User {
        User {
            tenant: tenant.to_owned(),
            ..self.clone()
        }
    }
}

/// Sets `limits` overrides on a tenant through the admin API.
pub async fn limit(app: &TestApp, tenant_id: &str, limits: serde_json::Value) {
    let res = app
        .admin(Method::PATCH, &format!("/v1/admin/tenants/{tenant_id}"))
        .json(&json!({ "limits": limits }))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK, "patch limits");
}

/// The `field`s of a 422 problem's `errors`, in order.
pub async fn invalid_fields(res: reqwest::Response) -> Vec<String> {
    let body = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    body["errors"]
        .as_array()
        .expect("a 422 lists its errors")
        .iter()
        .map(|e| {
            assert!(e["message"].is_string(), "each error has a message: {e}");
            e["field"]
                .as_str()
                .expect("each error names a field")
                .to_owned()
        })
        .collect()
}

/// A response's `Content-Type`, or "" without one.
pub fn content_type(res: &Response) -> String {
    res.headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Asserts a 200 HTML page; returns its text.
pub async fn assert_html(res: Response) -> String {
    assert_eq!(res.status(), StatusCode::OK);
    let content_type = content_type(&res);
    assert!(content_type.starts_with("text/html"), "{content_type}");
    res.text().await.expect("html")
}

/// Asserts a problem+json response with `status` and `code`; returns it.
pub async fn assert_problem(res: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(res.status(), status, "status");
    assert_eq!(content_type(&res), "application/problem+json");
    let request_id = res
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body: Value = res.json().await.expect("problem json");
    assert_eq!(body["code"], code, "code in {body}");
    assert_eq!(body["status"], status.as_u16());
    assert_eq!(body["type"], format!("/problems/{code}"));
    assert!(body["title"].is_string() && body["detail"].is_string());
    assert_eq!(body["request_id"].as_str(), request_id.as_deref());
    body
}

/// Sends a request, failing the test if it does not reach the server.
pub trait Fetch {
    fn fetch(self) -> impl std::future::Future<Output = Response> + Send;
}

impl Fetch for RequestBuilder {
    async fn fetch(self) -> Response {
        self.send().await.expect("the request reaches the server")
    }
}

/// Asserts `status` and returns the JSON body (showing the body if the status
/// is wrong).
pub async fn assert_json(res: Response, status: StatusCode) -> Value {
    let actual = res.status();
    let text = res.text().await.expect("a readable body");
    assert_eq!(actual, status, "status; body: {text}");
    serde_json::from_str(&text).expect("a JSON body")
}

/// Asserts a 401 problem with a `WWW-Authenticate: Bearer ...` challenge.
pub async fn assert_unauthenticated(res: Response) -> Value {
    let challenge = res
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        challenge.starts_with("Bearer"),
        "WWW-Authenticate should start with Bearer: {challenge:?}"
    );
    assert_problem(res, StatusCode::UNAUTHORIZED, "unauthenticated").await
}

/// The `items` of a list page.
pub fn items(page: &Value) -> &Vec<Value> {
    page["items"].as_array().expect("a page has items")
}

/// The `id`s (or another string field) of a page's items.
pub fn ids_of(page: &Value, field: &str) -> Vec<String> {
    items(page)
        .iter()
        .map(|item| item[field].as_str().expect("a string id").to_owned())
        .collect()
}

/// Polls `check` every 100 ms, up to 50 times, until it holds.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..50 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting until {what}");
}

impl TestApp {
    /// Walks a list to its end with `limit`; returns the sizes of the pages and
    /// every item in order.
    pub async fn walk(&self, user: &User, path: &str, limit: u32) -> (Vec<usize>, Vec<Value>) {
        let mut sizes = Vec::new();
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let sep = if path.contains('?') { '&' } else { '?' };
            let mut url = format!("{path}{sep}limit={limit}");
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let page = assert_json(
                self.as_user(user, Method::GET, &url).fetch().await,
                StatusCode::OK,
            )
            .await;
            sizes.push(items(&page).len());
            all.extend(items(&page).iter().cloned());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
            assert!(sizes.len() < 100, "the list never ends");
        }
        (sizes, all)
    }

    /// `GET /v1/tenant` as `user`.
    pub async fn tenant_view(&self, user: &User) -> Value {
        assert_json(
            self.as_user(user, Method::GET, "/v1/tenant").fetch().await,
            StatusCode::OK,
        )
        .await
    }

    /// A tenant as the admin API shows it.
    pub async fn admin_tenant(&self, id: &str) -> Value {
        assert_json(
            self.admin(Method::GET, &format!("/v1/admin/tenants/{id}"))
                .fetch()
                .await,
            StatusCode::OK,
        )
        .await
    }
}
