//! Row-level security is the safety net under every tenant query: enabled,
//! forced, and failing closed. These tests talk to PostgreSQL directly.

use reqwest::Method;
use serde_json::json;
use tenantry_db::TenantContext;
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use crate::helpers::{Fetch as _, TestApp, User};

const TENANT_TABLES: [&str; 4] = ["memberships", "posts", "post_likes", "comments"];

/// Two tenants with posts, likes and comments; returns their ids and owners.
async fn two_tenants(app: &TestApp) -> ((Uuid, User), (Uuid, User)) {
    let mut out = Vec::new();
    for (slug, posts) in [("acme", 3), ("bravo", 2)] {
        let (t, owner) = app.tenant(slug).await;
        for i in 0..posts {
            let id = app.post(&owner, &format!("{slug} {i}")).await;
            app.as_user(&owner, Method::POST, &format!("/v1/posts/{id}/like"))
                .fetch()
                .await;
            app.as_user(&owner, Method::POST, &format!("/v1/posts/{id}/comments"))
                .json(&json!({"content": "a comment"}))
                .fetch()
                .await;
        }
        let id = Uuid::parse_str(t["id"].as_str().expect("id")).expect("uuid");
        out.push((id, owner));
    }
    let b = out.pop().expect("bravo");
    let a = out.pop().expect("acme");
    (a, b)
}

async fn count(tx: &tokio_postgres::Transaction<'_>, table: &str) -> i64 {
    tx.query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .expect("count")
        .get(0)
}

#[tokio::test]
async fn the_app_role_sees_no_tenant_rows_without_a_tenant_context() {
    let app = TestApp::spawn().await;
    two_tenants(&app).await;
    let mut db = app.raw_db().await;

    // The superuser sees the rows, so the zero below is RLS at work.
    let tx = db.transaction().await.expect("begin");
    for table in TENANT_TABLES {
        assert!(count(&tx, table).await > 0, "{table} has rows");
    }
    tx.batch_execute("SET LOCAL ROLE tenantry_app")
        .await
        .expect("set role");
    for table in TENANT_TABLES {
        assert_eq!(count(&tx, table).await, 0, "{table} without a context");
    }
    // An empty setting also means "no tenant".
    tx.execute("SELECT set_config('tenantry.tenant_ids', '', true)", &[])
        .await
        .expect("set_config");
    for table in TENANT_TABLES {
        assert_eq!(count(&tx, table).await, 0, "{table} with an empty context");
    }
    tx.execute("SELECT set_config('tenantry.tenant_ids', '{}', true)", &[])
        .await
        .expect("set_config");
    for table in TENANT_TABLES {
        assert_eq!(count(&tx, table).await, 0, "{table} with an empty set");
    }
}

#[tokio::test]
async fn a_tenant_context_sees_only_its_tenants_rows() {
    let app = TestApp::spawn().await;
    let ((a, _), (b, _)) = two_tenants(&app).await;
    let mut db = app.raw_db().await;
    let tx = db.transaction().await.expect("begin");
    tx.batch_execute("SET LOCAL ROLE tenantry_app")
        .await
        .expect("set role");
    tx.execute(
        "SELECT set_config('tenantry.tenant_ids', $1, true)",
        &[&format!("{{{a}}}")],
    )
    .await
    .expect("set_config");
    assert_eq!(count(&tx, "posts").await, 3);
    assert_eq!(count(&tx, "post_likes").await, 3);
    assert_eq!(count(&tx, "comments").await, 3);
    assert_eq!(count(&tx, "memberships").await, 1);
    for table in TENANT_TABLES {
        let other: i64 = tx
            .query_one(
                &format!("SELECT count(*) FROM {table} WHERE tenant_id <> $1"),
                &[&a],
            )
            .await
            .expect("count")
            .get(0);
        assert_eq!(other, 0, "{table} shows only A's rows");
    }

    // Both tenants named: both visible (the feed's multi-tenant context).
    tx.execute(
        "SELECT set_config('tenantry.tenant_ids', $1, true)",
        &[&format!("{{{a},{b}}}")],
    )
    .await
    .expect("set_config");
    assert_eq!(count(&tx, "posts").await, 5);
}

#[tokio::test]
async fn writing_another_tenants_rows_fails_the_policy_check() {
    let app = TestApp::spawn().await;
    let ((a, a_owner), (b, b_owner)) = two_tenants(&app).await;
    let mut db = app.raw_db().await;

    let enter_a = "SET LOCAL ROLE tenantry_app";
    let context = format!("{{{a}}}");

    // INSERT of a B row in A's context.
    let tx = db.transaction().await.expect("begin");
    tx.batch_execute(enter_a).await.expect("set role");
    tx.execute(
        "SELECT set_config('tenantry.tenant_ids', $1, true)",
        &[&context],
    )
    .await
    .expect("set_config");
    let err = tx
        .execute(
            "INSERT INTO posts (tenant_id, id, author_id, content) VALUES ($1, $2, $3, 'sneaky')",
            &[&b, &Uuid::now_v7(), &b_owner.id],
        )
        .await
        .expect_err("the WITH CHECK policy refuses it");
    assert_eq!(err.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{err}");
    drop(tx);

    // UPDATE moving an A row to B.
    let tx = db.transaction().await.expect("begin");
    tx.batch_execute(enter_a).await.expect("set role");
    tx.execute(
        "SELECT set_config('tenantry.tenant_ids', $1, true)",
        &[&context],
    )
    .await
    .expect("set_config");
    let err = tx
        .execute("UPDATE posts SET tenant_id = $1", &[&b])
        .await
        .expect_err("the WITH CHECK policy refuses moving rows out");
    assert_eq!(err.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{err}");
    drop(tx);

    // UPDATE and DELETE of B's rows find nothing.
    let tx = db.transaction().await.expect("begin");
    tx.batch_execute(enter_a).await.expect("set role");
    tx.execute(
        "SELECT set_config('tenantry.tenant_ids', $1, true)",
        &[&context],
    )
    .await
    .expect("set_config");
    let updated = tx
        .execute("UPDATE posts SET content = 'x' WHERE tenant_id = $1", &[&b])
        .await
        .expect("update");
    assert_eq!(updated, 0);
    let deleted = tx
        .execute("DELETE FROM comments WHERE tenant_id = $1", &[&b])
        .await
        .expect("delete");
    assert_eq!(deleted, 0);
    // Its own rows it can write.
    let inserted = tx
        .execute(
            "INSERT INTO posts (tenant_id, id, author_id, content) VALUES ($1, $2, $3, 'fine')",
            &[&a, &Uuid::now_v7(), &a_owner.id],
        )
        .await
        .expect("an A row in A's context");
    assert_eq!(inserted, 1);
    tx.rollback().await.expect("rollback");

    let n: i64 = db
        .query_one(
            "SELECT count(*) FROM posts WHERE tenant_id = $1 AND content <> 'x'",
            &[&b],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 2, "B's posts are untouched");
}

#[tokio::test]
async fn row_level_security_is_enabled_and_forced_on_every_tenant_table() {
    let app = TestApp::spawn().await;
    let db = app.raw_db().await;
    for table in TENANT_TABLES {
        let row = db
            .query_one(
                "SELECT relrowsecurity, relforcerowsecurity FROM pg_class
                 WHERE oid = $1::text::regclass",
                &[&table],
            )
            .await
            .expect("pg_class row");
        assert!(row.get::<_, bool>(0), "{table}: row security enabled");
        assert!(row.get::<_, bool>(1), "{table}: row security forced");
        let policies: i64 = db
            .query_one(
                "SELECT count(*) FROM pg_policies WHERE tablename = $1",
                &[&table],
            )
            .await
            .expect("policies")
            .get(0);
        assert!(policies >= 1, "{table} has a policy");
    }
}

#[tokio::test]
async fn the_app_role_cannot_bypass_row_level_security_and_owns_no_table() {
    let app = TestApp::spawn().await;
    let db = app.raw_db().await;
    let row = db
        .query_one(
            "SELECT rolbypassrls, rolsuper, rolcanlogin FROM pg_roles WHERE rolname = 'tenantry_app'",
            &[],
        )
        .await
        .expect("the role exists");
    assert!(!row.get::<_, bool>(0), "rolbypassrls");
    assert!(!row.get::<_, bool>(1), "rolsuper");
    assert!(!row.get::<_, bool>(2), "rolcanlogin");
    for table in TENANT_TABLES {
        let owner: String = db
            .query_one(
                "SELECT pg_get_userbyid(relowner)::text FROM pg_class
                 WHERE oid = $1::text::regclass",
                &[&table],
            )
            .await
            .expect("owner")
            .get(0);
        assert_ne!(owner, "tenantry_app", "{table}");
    }
    let owned: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner
             WHERE r.rolname = 'tenantry_app'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(owned, 0, "tenantry_app owns nothing");
}

#[tokio::test]
async fn a_malformed_tenant_setting_errors_instead_of_showing_rows() {
    let app = TestApp::spawn().await;
    two_tenants(&app).await;
    let mut db = app.raw_db().await;
    for table in TENANT_TABLES {
        let tx = db.transaction().await.expect("begin");
        tx.batch_execute(
            "SET LOCAL ROLE tenantry_app;
             SELECT set_config('tenantry.tenant_ids', 'garbage', true)",
        )
        .await
        .expect("set context");
        let result = tx
            .query(&format!("SELECT tenant_id FROM {table}"), &[])
            .await;
        assert!(
            result.is_err(),
            "{table}: a malformed setting must error, got {result:?}"
        );
    }
}

#[tokio::test]
async fn the_servers_transactions_run_as_the_app_role_within_their_tenant() {
    let app = TestApp::spawn().await;
    let ((a, _), _) = two_tenants(&app).await;

    let mut tx = app
        .state
        .db
        .begin(&TenantContext::tenant(a, 2_000))
        .await
        .expect("begin");
    let row = tx
        .query_one(
            "SELECT current_user::text, current_setting('tenantry.tenant_ids'),
                    (SELECT count(*) FROM posts)",
            &[],
        )
        .await
        .expect("query");
    assert_eq!(row.get::<_, String>(0), "tenantry_app");
    assert_eq!(row.get::<_, String>(1), format!("{{{a}}}"));
    assert_eq!(row.get::<_, i64>(2), 3, "only A's posts");
    tx.commit().await.expect("commit");

    // The platform context (tenant lookups, provisioning) sees no tenant rows.
    let mut tx = app
        .state
        .db
        .begin(&TenantContext::platform(2_000))
        .await
        .expect("begin");
    let row = tx
        .query_one(
            "SELECT (SELECT count(*) FROM posts), (SELECT count(*) FROM memberships)",
            &[],
        )
        .await
        .expect("query");
    assert_eq!(row.get::<_, i64>(0), 0);
    assert_eq!(row.get::<_, i64>(1), 0);
    tx.commit().await.expect("commit");
}

#[tokio::test]
async fn a_pooled_connection_keeps_no_tenant_context_after_its_transaction() {
    let app = TestApp::spawn().await;
    let ((a, _), _) = two_tenants(&app).await;
    // A pool of one connection makes sure the second use is the same one.
    let url = app.database_url();
    let db = tenantry_db::Db::connect(
        &url,
        &tenantry_db::DbOptions {
            max_connections: 1,
            ..tenantry_db::DbOptions::default()
        },
    )
    .expect("pool");
    let mut tx = db
        .begin(&TenantContext::tenant(a, 2_000))
        .await
        .expect("begin");
    let n: i64 = tx
        .query_one("SELECT count(*) FROM posts", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 3);
    tx.commit().await.expect("commit");

    let conn = db.owner_connection().await.expect("the same connection");
    let row = conn
        .query_one(
            "SELECT current_user::text, coalesce(current_setting('tenantry.tenant_ids', true), '')",
            &[],
        )
        .await
        .expect("query");
    assert_ne!(row.get::<_, String>(0), "tenantry_app", "the role is reset");
    assert_eq!(row.get::<_, String>(1), "", "the tenant context is reset");
}
