//! The database endpoints: health, statistics and advisors, each finding
//! made happen in a fresh database and seen.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{Fetch as _, TestApp, assert_json, assert_unauthenticated, eventually};

async fn get(app: &TestApp, path: &str) -> Value {
    assert_json(app.admin(Method::GET, path).fetch().await, StatusCode::OK).await
}

fn check<'a>(health: &'a Value, name: &str) -> &'a Value {
    health["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} check in {health}"))
}

async fn findings(app: &TestApp) -> Vec<Value> {
    get(app, "/v1/admin/db/advisors").await["items"]
        .as_array()
        .expect("items")
        .clone()
}

fn named<'a>(items: &'a [Value], name: &str, object: &str) -> Option<&'a Value> {
    items
        .iter()
        .find(|f| f["name"] == name && f["object"].as_str().is_some_and(|o| o.contains(object)))
}

#[tokio::test]
async fn database_endpoints_need_the_admin_token() {
    let app = TestApp::spawn().await;
    for path in [
        "/v1/admin/db/health",
        "/v1/admin/db/stats",
        "/v1/admin/db/advisors",
    ] {
        assert_unauthenticated(app.request(Method::GET, path).fetch().await).await;
    }
}

#[tokio::test]
async fn health_reports_every_check_of_the_contract() {
    let app = TestApp::spawn().await;
    let health = get(&app, "/v1/admin/db/health").await;
    for name in [
        "connection",
        "pool",
        "long_transactions",
        "blocked_queries",
        "xid_wraparound",
        "cache_hit_ratio",
        "partitions",
        "queue",
    ] {
        let c = check(&health, name);
        assert!(c["status"].is_string() && c["detail"].is_string(), "{c}");
        assert!(c.get("value").is_some(), "{c}");
    }
    assert_eq!(check(&health, "connection")["status"], "ok");
    assert!(
        check(&health, "xid_wraparound")["value"]
            .as_i64()
            .expect("as set up")
            > 0
    );
    assert!(["ok", "degraded"].contains(&health["status"].as_str().expect("as set up")));
}

#[tokio::test]
async fn health_sees_a_long_transaction_and_a_blocked_query() {
    let app = TestApp::spawn().await;
    let holder = app.raw_db().await;
    holder
        .batch_execute("CREATE TABLE contended (x int)")
        .await
        .expect("as set up");
    holder
        .batch_execute("BEGIN; LOCK TABLE contended")
        .await
        .expect("as set up");
    let waiter = app.raw_db().await;
    let blocked = tokio::spawn(async move {
        let _ = waiter.batch_execute("SELECT * FROM contended").await;
    });
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let limits = tenantry_api::ops::health::Thresholds {
        long_transaction: Duration::from_secs(1),
        blocked_for: Duration::from_secs(1),
        ..Default::default()
    };
    let health = tenantry_api::ops::health::check(&app.state, &limits).await;
    let health = serde_json::to_value(&health).expect("as set up");
    assert_eq!(health["status"], "degraded", "{health}");
    let long = check(&health, "long_transactions");
    assert_eq!(long["status"], "warn", "{long}");
    assert!(long["value"].as_i64().expect("as set up") >= 1);
    let blocked_check = check(&health, "blocked_queries");
    assert_eq!(blocked_check["status"], "warn", "{blocked_check}");
    assert_eq!(blocked_check["value"], 1);
    holder.batch_execute("ROLLBACK").await.expect("as set up");
    blocked.await.expect("as set up");
}

#[tokio::test]
async fn health_warns_of_dead_letters_in_the_queue() {
    let app = TestApp::spawn().await;
    let (tenant, _) = app.tenant("deadq").await;
    let id = tenant["id"].as_str().expect("as set up");
    app.raw_db()
        .await
        .batch_execute(&format!(
            "INSERT INTO jobs (tenant_id, id, kind, state, finished_at, last_error)
             VALUES ('{id}', gen_random_uuid(), 'nothing', 'dead', now(), 'boom')"
        ))
        .await
        .expect("as set up");
    let health = get(&app, "/v1/admin/db/health").await;
    let queue = check(&health, "queue");
    assert_eq!(queue["status"], "warn", "{queue}");
    assert_eq!(queue["value"]["dead"], 1);
    assert_eq!(health["status"], "degraded");
}

#[tokio::test]
async fn health_is_down_and_stats_503_when_the_database_is_away() {
    let app = TestApp::spawn().await;
    let state = tenantry_api::AppState::new(
        tenantry_db::Db::connect(
            "postgres://postgres@127.0.0.1:1/nowhere",
            &tenantry_db::DbOptions::default(),
        )
        .expect("as set up"),
        tenantry_core::TierTable::default(),
        crate::helpers::JWT_SECRET,
        crate::helpers::ADMIN_TOKEN.to_owned(),
        None,
        app.state.metrics.clone(),
    );
    let health = tenantry_api::ops::health::check(&state, &Default::default()).await;
    let health = serde_json::to_value(&health).expect("as set up");
    assert_eq!(health["status"], "down", "{health}");
    assert_eq!(check(&health, "connection")["status"], "fail");
    let stats = tenantry_api::ops::stats::read(&state).await;
    assert!(
        matches!(stats, Err(tenantry_db::DbError::Unavailable(_))),
        "{stats:?}"
    );
    // The edge maps it to 503 database_unavailable.
    let problem = tenantry_api::problem::ApiError::from(stats.expect_err("the database is away"));
    assert_eq!(problem.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn stats_list_tables_indexes_and_the_pool() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("statsy").await;
    app.post(&owner, "hello").await;
    let stats = get(&app, "/v1/admin/db/stats").await;
    assert!(stats["database"]["size_bytes"].as_i64().expect("as set up") > 0);
    let tables = stats["tables"].as_array().expect("as set up");
    let posts = tables
        .iter()
        .find(|t| t["name"] == "posts")
        .expect("posts listed");
    for field in ["size_bytes", "rows_estimate", "dead_tuples"] {
        assert!(posts[field].is_i64(), "{field} in {posts}");
    }
    assert!(posts.get("last_vacuum").is_some() && posts.get("last_analyze").is_some());
    let indexes = stats["indexes"].as_array().expect("as set up");
    let pkey = indexes
        .iter()
        .find(|i| i["name"] == "posts_pkey")
        .expect("posts_pkey listed");
    assert_eq!(pkey["table"], "posts");
    assert_eq!(pkey["unused"], false, "a primary key is never unused");
    assert_eq!(pkey["invalid"], false);
    assert!(tables.len() <= 100 && indexes.len() <= 200);
    assert!(stats["pool"]["size"].as_u64().expect("as set up") >= 1);
    assert!(stats["pool"]["in_use"].is_u64() && stats["pool"]["waiting"].is_u64());
    // This test cluster does not preload pg_stat_statements: said, and empty.
    assert_eq!(stats["pg_stat_statements"]["installed"], false);
    assert!(
        stats["pg_stat_statements"]["detail"]
            .as_str()
            .expect("as set up")
            .contains("pg_stat_statements")
    );
    assert_eq!(stats["slow_queries"], serde_json::json!([]));
}

/// `REINDEX CONCURRENTLY` builds a new index and drops the old one; the
/// statistics views' snapshot can still list the dropped one, whose size
/// PostgreSQL then answers as NULL. Statistics and advisors read while
/// indexes are rebuilt answer 200 throughout. Schemathesis, which calls
/// `POST /v1/admin/db/reindex` beside them, met a 500 from the advisors;
/// this test fails on the advisors before they left such an index out.
#[tokio::test]
async fn stats_and_advisors_answer_while_indexes_are_rebuilt_concurrently() {
    let app = TestApp::spawn().await;
    let db = app.raw_db().await;
    db.batch_execute(
        "CREATE TABLE churn (a int PRIMARY KEY, b int, c int);
         CREATE INDEX churn_b ON churn (b); CREATE INDEX churn_c ON churn (c);
         INSERT INTO churn SELECT g, g, g FROM generate_series(1, 1000) g",
    )
    .await
    .expect("as set up");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let rebuilds = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                db.batch_execute("REINDEX TABLE CONCURRENTLY churn")
                    .await
                    .expect("reindex");
                n += 1;
            }
            n
        }
    });
    for _ in 0..150 {
        get(&app, "/v1/admin/db/advisors").await;
        get(&app, "/v1/admin/db/stats").await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let n = rebuilds.await.expect("rebuilds");
    assert!(n >= 10, "only {n} rebuilds ran beside the reads");
}

#[tokio::test]
async fn a_clean_database_has_no_error_findings_of_tenantrys_own() {
    let app = TestApp::spawn().await;
    let items = findings(&app).await;
    for f in &items {
        for field in ["name", "level", "title", "detail", "remediation", "object"] {
            assert!(f[field].is_string(), "{field} in {f}");
        }
    }
    let errors: Vec<&Value> = items.iter().filter(|f| f["level"] == "error").collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let per_row: Vec<&Value> = items
        .iter()
        .filter(|f| f["name"] == "policy_per_row_setting")
        .collect();
    assert!(per_row.is_empty(), "{per_row:#?}");
}

#[tokio::test]
async fn an_unused_index_is_found() {
    let app = TestApp::spawn().await;
    app.raw_db()
        .await
        .batch_execute("CREATE TABLE lonely (a int, b int); CREATE INDEX lonely_b ON lonely (b)")
        .await
        .expect("as set up");
    let items = findings(&app).await;
    let f = named(&items, "unused_index", "lonely_b").expect("unused index found");
    assert_eq!(f["level"], "info");
    assert!(
        f["remediation"]
            .as_str()
            .expect("as set up")
            .contains("DROP INDEX")
    );
}

#[tokio::test]
async fn a_duplicate_index_is_found() {
    let app = TestApp::spawn().await;
    app.raw_db()
        .await
        .batch_execute(
            "CREATE TABLE twice (a int PRIMARY KEY, b int);
             CREATE INDEX twice_b1 ON twice (b); CREATE INDEX twice_b2 ON twice (b)",
        )
        .await
        .expect("as set up");
    let items = findings(&app).await;
    let f = named(&items, "duplicate_index", "twice_b2").expect("duplicate found");
    assert_eq!(f["level"], "warn");
    assert!(
        f["detail"]
            .as_str()
            .expect("as set up")
            .contains("twice_b1"),
        "{f}"
    );
    assert!(named(&items, "duplicate_index", "twice_pkey").is_none());
}

#[tokio::test]
async fn an_invalid_index_is_found() {
    let app = TestApp::spawn().await;
    let db = app.raw_db().await;
    db.batch_execute("CREATE TABLE clash (a int); INSERT INTO clash VALUES (1), (1)")
        .await
        .expect("as set up");
    // A concurrent build that fails leaves its index behind, invalid.
    let failed = db
        .batch_execute("CREATE UNIQUE INDEX CONCURRENTLY clash_a ON clash (a)")
        .await;
    assert!(failed.is_err());
    let items = findings(&app).await;
    let f = named(&items, "invalid_index", "clash_a").expect("invalid index found");
    assert_eq!(f["level"], "error");
    let stats = get(&app, "/v1/admin/db/stats").await;
    let listed = stats["indexes"]
        .as_array()
        .expect("as set up")
        .iter()
        .find(|i| i["name"] == "clash_a")
        .expect("listed in stats");
    assert_eq!(listed["invalid"], true);
}

#[tokio::test]
async fn an_unindexed_foreign_key_is_found() {
    let app = TestApp::spawn().await;
    app.raw_db()
        .await
        .batch_execute(
            "CREATE TABLE parent (id int PRIMARY KEY);
             CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent (id));
             CREATE TABLE minded (id int PRIMARY KEY, parent_id int REFERENCES parent (id));
             CREATE INDEX minded_parent ON minded (parent_id)",
        )
        .await
        .expect("as set up");
    let items = findings(&app).await;
    let f = named(&items, "unindexed_foreign_key", "child.").expect("found");
    assert_eq!(f["level"], "warn");
    assert!(
        f["detail"]
            .as_str()
            .expect("as set up")
            .contains("parent_id")
    );
    assert!(named(&items, "unindexed_foreign_key", "minded.").is_none());
}

#[tokio::test]
async fn a_table_full_of_dead_tuples_is_found() {
    let app = TestApp::spawn().await;
    let db = app.raw_db().await;
    for sql in [
        "CREATE TABLE churned (a int)",
        "INSERT INTO churned SELECT generate_series(1, 5000)",
        "DELETE FROM churned WHERE a > 1000",
    ] {
        db.batch_execute(sql).await.expect("as set up");
    }
    // A backend reports its statistics when it ends (an idle one only after
    // a while).
    drop(db);
    eventually("the dead tuples are reported", || async {
        named(&findings(&app).await, "dead_tuples", "churned").is_some()
    })
    .await;
    let items = findings(&app).await;
    let f = named(&items, "dead_tuples", "churned").expect("as set up");
    assert_eq!(f["level"], "warn");
    assert!(
        f["remediation"]
            .as_str()
            .expect("as set up")
            .contains("/v1/admin/db/vacuum")
    );
}

#[tokio::test]
async fn a_tenant_table_without_forced_rls_or_tenant_index_is_found() {
    let app = TestApp::spawn().await;
    app.raw_db()
        .await
        .batch_execute(
            "CREATE TABLE leaky (id uuid PRIMARY KEY, tenant_id uuid NOT NULL);
             ALTER TABLE leaky ENABLE ROW LEVEL SECURITY",
        )
        .await
        .expect("as set up");
    let items = findings(&app).await;
    let rls = named(&items, "tenant_table_without_forced_rls", "leaky").expect("rls finding");
    assert_eq!(rls["level"], "error");
    assert!(
        rls["remediation"]
            .as_str()
            .expect("as set up")
            .contains("tenantry_isolate")
    );
    let index = named(&items, "tenant_table_without_tenant_index", "leaky").expect("index finding");
    assert_eq!(index["level"], "error");
    // Isolated the standard way, with a tenant index: nothing left.
    app.raw_db()
        .await
        .batch_execute(
            "SELECT tenantry_isolate('leaky'); CREATE INDEX leaky_tenant ON leaky (tenant_id, id)",
        )
        .await
        .expect("as set up");
    let items = findings(&app).await;
    assert!(
        !items
            .iter()
            .any(|f| f["level"] == "error" && f["object"] == "leaky"),
        "{items:#?}"
    );
}

#[tokio::test]
async fn a_policy_that_looks_a_setting_up_per_row_is_found() {
    let app = TestApp::spawn().await;
    app.raw_db()
        .await
        .batch_execute(
            "CREATE TABLE rowwise (id int PRIMARY KEY, owner text);
             ALTER TABLE rowwise ENABLE ROW LEVEL SECURITY;
             CREATE POLICY per_row ON rowwise
                 USING (owner = current_setting('app.owner', true));
             CREATE TABLE oncewise (id int PRIMARY KEY, owner text);
             ALTER TABLE oncewise ENABLE ROW LEVEL SECURITY;
             CREATE POLICY once ON oncewise
                 USING (owner = (SELECT current_setting('app.owner', true)))",
        )
        .await
        .expect("as set up");
    let items = findings(&app).await;
    let f = named(&items, "policy_per_row_setting", "rowwise.per_row").expect("found");
    assert_eq!(f["level"], "warn");
    assert!(
        f["detail"]
            .as_str()
            .expect("as set up")
            .contains("current_setting")
    );
    assert!(named(&items, "policy_per_row_setting", "oncewise").is_none());
}
