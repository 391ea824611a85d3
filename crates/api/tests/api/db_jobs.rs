//! Maintenance as jobs, the job lookup for every job, cancellation, and how
//! long finished jobs are kept.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tenantry_db::{Db, DbOptions};
use tenantry_jobs::NewJob;
use tenantry_jobs::platform;

use crate::helpers::{
    Fetch as _, FreshDatabase, TestApp, assert_json, assert_problem, invalid_fields,
};

async fn start(app: &TestApp, op: &str, body: Value) -> String {
    let res = app
        .admin(Method::POST, &format!("/v1/admin/db/{op}"))
        .json(&body)
        .fetch()
        .await;
    let body = assert_json(res, StatusCode::ACCEPTED).await;
    body["job_id"].as_str().expect("job_id").to_owned()
}

async fn job(app: &TestApp, id: &str) -> Value {
    assert_json(
        app.admin(Method::GET, &format!("/v1/admin/jobs/{id}"))
            .fetch()
            .await,
        StatusCode::OK,
    )
    .await
}

/// Polls the job until `done` holds (up to 30 s); returns it.
async fn until(app: &TestApp, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..300 {
        let j = job(app, id).await;
        if done(&j) {
            return j;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("job {id} never got there: {}", job(app, id).await);
}

async fn finished(app: &TestApp, id: &str) -> Value {
    until(app, id, |j| j["state"] == "done" || j["state"] == "dead").await
}

#[tokio::test]
async fn a_vacuum_runs_as_a_platform_job_and_its_result_is_kept() {
    let app = TestApp::spawn().await;
    let id = start(&app, "vacuum", json!({"tables": ["posts", "memberships"]})).await;
    let j = finished(&app, &id).await;
    assert_eq!(j["state"], "done", "{j}");
    assert_eq!(j["queue"], "maintenance");
    assert_eq!(j["kind"], "db.vacuum");
    assert_eq!(j["tenant_id"], Value::Null);
    assert_eq!(j["attempts"], 1);
    assert!(j["finished_at"].is_string() && j["created_at"].is_string());
    let tables = j["result"]["tables"].as_array().expect("result tables");
    assert_eq!(tables.len(), 2, "{j}");
    assert_eq!(tables[0]["table"], "posts");
    assert_eq!(tables[0]["command"], "VACUUM posts");
    assert_eq!(tables[0]["status"], "done");
    // The last progress recorded names the backend and the table.
    assert!(j["progress"]["backend_pid"].is_i64(), "{j}");
    let vacuumed = app
        .count("SELECT count(*) FROM pg_stat_user_tables WHERE relname = 'posts' AND last_vacuum IS NOT NULL")
        .await;
    assert_eq!(vacuumed, 1);
}

#[tokio::test]
async fn analyze_and_an_empty_body_work_on_every_table() {
    let app = TestApp::spawn().await;
    let res = app
        .admin(Method::POST, "/v1/admin/db/analyze")
        .fetch()
        .await;
    let id = assert_json(res, StatusCode::ACCEPTED).await["job_id"]
        .as_str()
        .expect("as set up")
        .to_owned();
    let j = finished(&app, &id).await;
    assert_eq!(j["state"], "done", "{j}");
    let tables = j["result"]["tables"].as_array().expect("as set up");
    assert!(tables.len() > 10, "every table: {}", tables.len());
    assert!(tables.iter().all(|t| t["status"] == "done"), "{j}");
    assert!(tables.iter().any(|t| t["command"] == "ANALYZE tenants"));
}

#[tokio::test]
async fn unknown_tables_and_bad_bodies_are_refused() {
    let app = TestApp::spawn().await;
    let res = app
        .admin(Method::POST, "/v1/admin/db/vacuum")
        .json(&json!({"tables": ["posts", "nope", "x; DROP TABLE posts"]}))
        .fetch()
        .await;
    assert_eq!(invalid_fields(res).await, ["tables[2]"]);
    let res = app
        .admin(Method::POST, "/v1/admin/db/reindex")
        .json(&json!({"tables": ["posts", "nope"]}))
        .fetch()
        .await;
    assert_eq!(invalid_fields(res).await, ["tables[1]"]);
    let res = app
        .admin(Method::POST, "/v1/admin/db/optimize")
        .json(&json!({"tables": []}))
        .fetch()
        .await;
    assert_eq!(invalid_fields(res).await, ["tables"]);
    let res = app
        .admin(Method::POST, "/v1/admin/db/optimize")
        .json(&json!(["posts"]))
        .fetch()
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let res = app
        .admin(Method::POST, "/v1/admin/db/optimize")
        .json(&json!({"tables": ["posts"], "what": 1}))
        .fetch()
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let res = app
        .request(Method::POST, "/v1/admin/db/vacuum")
        .json(&json!({}))
        .fetch()
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.count("SELECT count(*) FROM jobs").await, 0);
}

#[tokio::test]
async fn reindex_rebuilds_concurrently_and_optimize_repairs_an_invalid_index() {
    let app = TestApp::spawn().await;
    let db = app.raw_db().await;
    let before: u32 = db
        .query_one(
            "SELECT relfilenode FROM pg_class WHERE relname = 'posts_pkey'",
            &[],
        )
        .await
        .expect("as set up")
        .get(0);
    let id = start(&app, "reindex", json!({"tables": ["posts"]})).await;
    let j = finished(&app, &id).await;
    assert_eq!(j["state"], "done", "{j}");
    assert_eq!(
        j["result"]["tables"][0]["command"],
        "REINDEX TABLE CONCURRENTLY posts"
    );
    let after: u32 = db
        .query_one(
            "SELECT relfilenode FROM pg_class WHERE relname = 'posts_pkey'",
            &[],
        )
        .await
        .expect("as set up")
        .get(0);
    assert_ne!(before, after, "the index was rebuilt");

    // An index left invalid (as a failed concurrent build leaves one).
    db.batch_execute(
        "CREATE TABLE mended (a int); CREATE INDEX mended_a ON mended (a);
         UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'mended_a'::regclass",
    )
    .await
    .expect("as set up");
    let id = start(&app, "optimize", json!({"tables": ["mended"]})).await;
    let j = finished(&app, &id).await;
    assert_eq!(j["state"], "done", "{j}");
    let commands: Vec<&str> = j["result"]["tables"]
        .as_array()
        .expect("as set up")
        .iter()
        .map(|t| t["command"].as_str().expect("as set up"))
        .collect();
    assert_eq!(
        commands,
        [
            "VACUUM (ANALYZE) mended",
            "REINDEX INDEX CONCURRENTLY mended_a"
        ]
    );
    let valid: bool = db
        .query_one(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'mended_a'::regclass",
            &[],
        )
        .await
        .expect("as set up")
        .get(0);
    assert!(valid);
}

#[tokio::test]
async fn a_table_locked_past_the_lock_timeout_is_skipped_not_waited_for() {
    let app = TestApp::spawn().await;
    let holder = app.raw_db().await;
    holder
        .batch_execute("BEGIN; LOCK TABLE events")
        .await
        .expect("as set up");
    let id = start(&app, "vacuum", json!({"tables": ["events", "posts"]})).await;
    let j = finished(&app, &id).await;
    assert_eq!(j["state"], "done", "{j}");
    let tables = j["result"]["tables"].as_array().expect("as set up");
    assert_eq!(tables[0]["status"], "skipped", "{j}");
    assert!(
        tables[0]["detail"]
            .as_str()
            .expect("as set up")
            .contains("lock timeout")
    );
    assert_eq!(tables[1]["status"], "done");
    assert_eq!(j["result"]["skipped"], 1);
    holder.batch_execute("ROLLBACK").await.expect("as set up");
}

#[tokio::test]
async fn a_running_maintenance_job_is_cancelled_in_postgresql_too() {
    let app = TestApp::spawn().await;
    let holder = app.raw_db().await;
    holder
        .batch_execute("BEGIN; LOCK TABLE posts")
        .await
        .expect("as set up");
    let id = start(&app, "vacuum", json!({"tables": ["posts"]})).await;
    // Running, and waiting for the lock: its progress says so.
    let j = until(&app, &id, |j| {
        j["state"] == "running" && j["progress"]["backend_pid"].is_i64()
    })
    .await;
    assert_eq!(j["progress"]["table"], "posts");
    let res = app
        .admin(Method::POST, &format!("/v1/admin/jobs/{id}/cancel"))
        .fetch()
        .await;
    let j = assert_json(res, StatusCode::OK).await;
    assert_eq!(j["state"], "dead");
    assert_eq!(j["last_error"], "cancelled by an operator");
    // Well before the 5 s lock timeout, the VACUUM is gone from PostgreSQL.
    let started = std::time::Instant::now();
    loop {
        let left = app
            .count("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'tenantry maintenance' AND state = 'active' AND datname = current_database()")
            .await;
        if left == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "the VACUUM still runs"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Cancelling again: already finished.
    let res = app
        .admin(Method::POST, &format!("/v1/admin/jobs/{id}/cancel"))
        .fetch()
        .await;
    assert_problem(res, StatusCode::CONFLICT, "conflict").await;
    // A dead letter like any other: it can be retried.
    let res = app
        .admin(Method::POST, &format!("/v1/admin/jobs/{id}/retry"))
        .fetch()
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    holder.batch_execute("ROLLBACK").await.expect("as set up");
    let j = finished(&app, &id).await;
    assert_eq!(j["state"], "done", "{j}");
}

#[tokio::test]
async fn an_unknown_job_or_a_malformed_id_is_404() {
    let app = TestApp::spawn().await;
    let res = app
        .admin(
            Method::GET,
            &format!("/v1/admin/jobs/{}", uuid::Uuid::now_v7()),
        )
        .fetch()
        .await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    let res = app
        .admin(
            Method::POST,
            &format!("/v1/admin/jobs/{}/cancel", uuid::Uuid::now_v7()),
        )
        .fetch()
        .await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    let res = app
        .admin(Method::GET, "/v1/admin/jobs/not-a-uuid")
        .fetch()
        .await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn a_tenants_announcement_job_is_looked_up_after_it_finished() {
    let app = TestApp::spawn().await;
    let (tenant, owner) = app.tenant("announcer").await;
    let res = app
        .as_user(&owner, Method::POST, "/v1/announcements")
        .json(&json!({"title": "Hello", "message": "Everyone"}))
        .fetch()
        .await;
    let body = assert_json(res, StatusCode::ACCEPTED).await;
    let id = body["job_id"].as_str().expect("as set up").to_owned();
    let j = finished(&app, &id).await;
    assert_eq!(j["state"], "done", "{j}");
    assert_eq!(j["tenant_id"], tenant["id"]);
    assert_eq!(j["kind"], tenantry_jobs::announcements::FANOUT);
    assert!(j["finished_at"].is_string());
}

#[tokio::test]
async fn finished_jobs_are_kept_seven_days_then_pruned() {
    let app = TestApp::spawn().await;
    let (tenant, _) = app.tenant("keeper").await;
    let t = tenant["id"].as_str().expect("as set up");
    let (old, recent) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    app.raw_db()
        .await
        .batch_execute(&format!(
            "INSERT INTO job_history (tenant_id, id, queue, kind, attempts, created_at, finished_at)
             VALUES ('{t}', '{old}', 'default', 'x', 1, now() - interval '8 days',
                     now() - interval '8 days'),
                    ('{t}', '{recent}', 'default', 'x', 1, now() - interval '6 days',
                     now() - interval '6 days')"
        ))
        .await
        .expect("as set up");
    assert_eq!(job(&app, &old.to_string()).await["state"], "done");
    let pruned = platform::prune_history(&app.state.db, platform::HISTORY_KEPT, 1)
        .await
        .expect("as set up");
    assert_eq!(pruned, 1);
    let res = app
        .admin(Method::GET, &format!("/v1/admin/jobs/{old}"))
        .fetch()
        .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(job(&app, &recent.to_string()).await["state"], "done");
}

#[tokio::test]
async fn platform_jobs_run_one_at_a_time_and_never_in_a_tenant_batch() {
    let fresh = FreshDatabase::migrated().await;
    let db = Db::connect(&fresh.url, &DbOptions::default()).expect("as set up");
    let lease = Duration::from_secs(60);
    for _ in 0..2 {
        platform::enqueue_platform(&db, &NewJob::new("db.vacuum", json!({"tables": null})))
            .await
            .expect("as set up");
    }
    // The tenant-fair claim does not see them.
    let claimed = tenantry_jobs::queue::claim(
        &db,
        tenantry_jobs::queue::FIRST_CURSOR,
        100,
        lease,
        "tenant-worker",
    )
    .await
    .expect("as set up");
    assert!(claimed.jobs.is_empty());
    // The platform lane takes one, and no second while the first runs.
    let first = platform::claim_platform(&db, lease, "a")
        .await
        .expect("as set up");
    assert!(first.is_some());
    assert!(
        platform::claim_platform(&db, lease, "b")
            .await
            .expect("as set up")
            .is_none()
    );
    let first = first.expect("as set up");
    assert_eq!(first.tenant_id, platform::PLATFORM);
    tenantry_jobs::queue::complete(&db, &[&first])
        .await
        .expect("as set up");
    assert!(
        platform::claim_platform(&db, lease, "b")
            .await
            .expect("as set up")
            .is_some()
    );
}
