//! Row-level security is the safety net under every tenant query: enabled,
//! forced, and failing closed. These tests talk to PostgreSQL directly, and
//! take the tables they check from the catalog (`tenantry_db::catalog`), so
//! a table added later is checked without being listed here.

use reqwest::Method;
use serde_json::json;
use tenantry_db::TenantContext;
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use crate::helpers::{Fetch as _, TestApp, User};

/// The tenant tables, from the catalog.
async fn tenant_tables(db: &tokio_postgres::Client) -> Vec<String> {
    let tables = tenantry_db::catalog::tenant_tables(db)
        .await
        .expect("tenant tables");
    assert!(tables.len() >= 16, "found the tenant tables: {tables:?}");
    tables
}

/// Every table under row-level security here: the tenant tables and the
/// tables keyed by user (the per-user directory of memberships), which is
/// every table with a `tenant_id` column, partitions through their parent.
async fn rls_tables(db: &tokio_postgres::Client) -> Vec<String> {
    let tables: Vec<String> = db
        .query(
            "SELECT DISTINCT c.oid::regclass::text FROM pg_class c
               JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id'
              WHERE c.relnamespace = current_schema()::regnamespace
                AND c.relkind IN ('r', 'p') AND NOT c.relispartition
              ORDER BY 1",
            &[],
        )
        .await
        .expect("tables with a tenant_id")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        tables.iter().any(|t| t == "user_communities"),
        "the directory is among them: {tables:?}"
    );
    tables
}

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

/// The tables `two_tenants` fills, at least.
const FILLED: [&str; 5] = [
    "memberships",
    "posts",
    "post_likes",
    "comments",
    "user_communities",
];

/// Those of `tables` that hold rows, as the owner (past RLS) sees them. A
/// check that the app role sees no row means something only where there
/// are rows; the policy's setting is not even read for an empty table.
async fn with_rows(db: &tokio_postgres::Client, tables: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for table in tables {
        let n: i64 = db
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .expect("count")
            .get(0);
        if n > 0 {
            out.push(table.clone());
        }
    }
    for table in FILLED.iter().filter(|f| tables.iter().any(|t| t == *f)) {
        assert!(out.iter().any(|t| t == table), "{table} has rows: {out:?}");
    }
    out
}

#[tokio::test]
async fn the_app_role_sees_no_tenant_rows_without_a_tenant_context() {
    let app = TestApp::spawn().await;
    two_tenants(&app).await;
    let mut db = app.raw_db().await;

    // The superuser sees the rows, so the zero below is RLS at work.
    let tables = with_rows(&db, &rls_tables(&db).await).await;
    let tx = db.transaction().await.expect("begin");
    tx.batch_execute("SET LOCAL ROLE tenantry_app")
        .await
        .expect("set role");
    for table in &tables {
        assert_eq!(count(&tx, table).await, 0, "{table} without a context");
    }
    // An empty setting also means "no tenant".
    tx.execute("SELECT set_config('tenantry.tenant_ids', '', true)", &[])
        .await
        .expect("set_config");
    for table in &tables {
        assert_eq!(count(&tx, table).await, 0, "{table} with an empty context");
    }
    tx.execute("SELECT set_config('tenantry.tenant_ids', '{}', true)", &[])
        .await
        .expect("set_config");
    for table in &tables {
        assert_eq!(count(&tx, table).await, 0, "{table} with an empty set");
    }
}

#[tokio::test]
async fn a_tenant_context_sees_only_its_tenants_rows() {
    let app = TestApp::spawn().await;
    let ((a, _), (b, _)) = two_tenants(&app).await;
    let mut db = app.raw_db().await;
    let tables = tenant_tables(&db).await;
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
    for table in &tables {
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
async fn row_level_security_is_enabled_and_forced_on_every_table_with_a_tenant_id() {
    let app = TestApp::spawn().await;
    let db = app.raw_db().await;
    for table in rls_tables(&db).await {
        let row = db
            .query_one(
                "SELECT relrowsecurity, relforcerowsecurity,
                        (SELECT count(*) FROM pg_policy WHERE polrelid = c.oid)
                 FROM pg_class c WHERE oid = $1::text::regclass",
                &[&table],
            )
            .await
            .expect("pg_class row");
        assert!(row.get::<_, bool>(0), "{table}: row security enabled");
        assert!(row.get::<_, bool>(1), "{table}: row security forced");
        assert!(row.get::<_, i64>(2) >= 1, "{table} has a policy");
    }
}

/// The catalog's full account (`tenantry_db::catalog::gaps`): the standard
/// tenant policy, the app role's grants, no partition reachable directly,
/// an index leading with tenant_id. The db crate's tests show it catches a
/// table added without them.
#[tokio::test]
async fn the_catalog_finds_no_gap_in_the_isolation_of_the_tenant_tables() {
    let app = TestApp::spawn().await;
    let db = app.raw_db().await;
    tenant_tables(&db).await;
    let gaps = tenantry_db::catalog::gaps(&db).await.expect("gaps");
    assert!(gaps.is_empty(), "{gaps:#?}");
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
    for table in rls_tables(&db).await {
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
    let tables = tenant_tables(&db).await;
    for table in with_rows(&db, &tables).await {
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

#[tokio::test]
async fn the_directory_shows_the_app_role_only_its_users_rows() {
    let app = TestApp::spawn().await;
    let ((a, a_owner), (b, b_owner)) = two_tenants(&app).await;
    // A's owner also joins B: two rows of theirs, one of B's owner.
    let joined = app
        .as_user(&b_owner, Method::POST, "/v1/members")
        .json(&json!({"user_id": a_owner.id, "role": "member"}))
        .fetch()
        .await;
    assert_eq!(joined.status(), reqwest::StatusCode::CREATED);
    let mut db = app.raw_db().await;
    let tx = db.transaction().await.expect("begin");
    tx.batch_execute("SET LOCAL ROLE tenantry_app")
        .await
        .expect("set role");
    let visible = |user: Option<Uuid>| {
        let tx = &tx;
        async move {
            let user = user.map(|u| u.to_string()).unwrap_or_default();
            tx.execute("SELECT set_config('tenantry.user_id', $1, true)", &[&user])
                .await
                .expect("set_config");
            tx.query(
                "SELECT user_id, tenant_id FROM user_communities ORDER BY tenant_id",
                &[],
            )
            .await
            .expect("read the directory")
            .iter()
            .map(|r| (r.get::<_, Uuid>(0), r.get::<_, Uuid>(1)))
            .collect::<Vec<_>>()
        }
    };
    let mut mine = vec![(a_owner.id, a), (a_owner.id, b)];
    mine.sort_by_key(|(_, t)| *t);
    assert_eq!(visible(Some(a_owner.id)).await, mine);
    assert_eq!(visible(Some(b_owner.id)).await, vec![(b_owner.id, b)]);
    assert_eq!(visible(Some(Uuid::now_v7())).await, vec![], "a stranger");
    assert_eq!(visible(None).await, vec![], "no user: nothing");
    // A tenant context does not open the directory: it is keyed by user.
    tx.execute(
        "SELECT set_config('tenantry.tenant_ids', $1, true)",
        &[&format!("{{{a},{b}}}")],
    )
    .await
    .expect("set_config");
    assert_eq!(visible(None).await, vec![], "tenants but no user");
    // The app role may not write it (the trigger does, as the owner).
    let err = tx
        .execute(
            "DELETE FROM user_communities WHERE user_id = $1",
            &[&a_owner.id],
        )
        .await
        .expect_err("no write grant");
    assert_eq!(err.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE));
}

#[tokio::test]
async fn the_servers_user_context_reads_only_that_users_communities() {
    let app = TestApp::spawn().await;
    let ((a, a_owner), (_, b_owner)) = two_tenants(&app).await;
    let mut tx = app
        .state
        .db
        .begin(&TenantContext::user(a_owner.id, 2_000))
        .await
        .expect("begin");
    let row = tx
        .query_one(
            "SELECT current_user::text,
                    (SELECT array_agg(tenant_id) FROM user_communities),
                    (SELECT count(*) FROM user_communities WHERE user_id = $1),
                    (SELECT count(*) FROM memberships)",
            &[&b_owner.id],
        )
        .await
        .expect("query");
    assert_eq!(row.get::<_, String>(0), "tenantry_app");
    assert_eq!(row.get::<_, Vec<Uuid>>(1), vec![a], "only A's owner's rows");
    assert_eq!(row.get::<_, i64>(2), 0, "not another user's");
    assert_eq!(row.get::<_, i64>(3), 0, "and no tenant's rows");
    tx.commit().await.expect("commit");

    // The platform context names no user: the directory reads as empty.
    let mut tx = app
        .state
        .db
        .begin(&TenantContext::platform(2_000))
        .await
        .expect("begin");
    let n: i64 = tx
        .query_one("SELECT count(*) FROM user_communities", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 0);
    tx.commit().await.expect("commit");
}

#[tokio::test]
async fn a_malformed_user_setting_errors_instead_of_showing_rows() {
    let app = TestApp::spawn().await;
    two_tenants(&app).await;
    let mut db = app.raw_db().await;
    let tx = db.transaction().await.expect("begin");
    tx.batch_execute(
        "SET LOCAL ROLE tenantry_app;
         SELECT set_config('tenantry.user_id', 'garbage', true)",
    )
    .await
    .expect("set context");
    let result = tx.query("SELECT user_id FROM user_communities", &[]).await;
    assert!(result.is_err(), "got {result:?}");
}

/// The tests migrate as a superuser, which row-level security never filters.
/// Here the directory trigger runs as an ordinary role that holds only the
/// owner's policy (`directory_sync`), as it would under a non-superuser
/// schema owner: a membership written in its tenant's context still reaches
/// the directory, and one outside it cannot.
#[tokio::test]
async fn the_directory_trigger_writes_under_row_level_security_in_the_members_tenant() {
    let app = TestApp::spawn().await;
    let ((a, _), (b, _)) = two_tenants(&app).await;
    let mut db = app.raw_db().await;
    let tx = db.transaction().await.expect("begin");
    let probe = format!("directory_owner_{}", Uuid::now_v7().simple());
    tx.batch_execute(&format!(
        "CREATE ROLE {probe} NOSUPERUSER NOBYPASSRLS NOLOGIN;
         GRANT SELECT, INSERT, UPDATE, DELETE ON user_communities TO {probe};
         GRANT USAGE ON SCHEMA public TO {probe};
         GRANT EXECUTE ON FUNCTION tenantry_allowed_tenants() TO {probe};
         ALTER POLICY directory_sync ON user_communities TO {probe};
         ALTER FUNCTION tenantry_sync_user_communities() OWNER TO {probe};"
    ))
    .await
    .expect("a non-superuser directory writer");
    let user = Uuid::now_v7();
    tx.execute(
        "INSERT INTO users (id, email) VALUES ($1, 'probe@example.com')",
        &[&user],
    )
    .await
    .expect("user");
    tx.batch_execute(&format!(
        "SET LOCAL ROLE tenantry_app;
         SELECT set_config('tenantry.tenant_ids', '{{{a}}}', true);
         INSERT INTO memberships (tenant_id, user_id, role) VALUES ('{a}', '{user}', 'member');
         RESET ROLE;"
    ))
    .await
    .expect("a membership in its tenant's context reaches the directory");
    let rows: Vec<Uuid> = tx
        .query(
            "SELECT tenant_id FROM user_communities WHERE user_id = $1",
            &[&user],
        )
        .await
        .expect("directory")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(rows, vec![a]);

    // The writer's policy is what admitted it: outside the member's tenant,
    // the same write is refused.
    tx.batch_execute("SAVEPOINT outside")
        .await
        .expect("savepoint");
    let err = tx
        .batch_execute(&format!(
            "SET LOCAL ROLE {probe};
             INSERT INTO user_communities (user_id, tenant_id, role, display_in_feed, joined_at)
             VALUES ('{user}', '{b}', 'member', true, now())"
        ))
        .await
        .expect_err("a directory row outside the tenant context");
    assert_eq!(
        err.code(),
        Some(&SqlState::INSUFFICIENT_PRIVILEGE),
        "refused by the policy: {err}"
    );
    tx.batch_execute("ROLLBACK TO SAVEPOINT outside")
        .await
        .expect("rollback to savepoint");
    tx.rollback().await.expect("rollback");
}
