//! The tenant context reaches PostgreSQL with the first statement, binds every
//! statement of the transaction, and leaves nothing behind on the connection.

use tenantry_db::testing::FreshDatabase;
use tenantry_db::{Db, DbError, DbOptions, StatementMode, TenantContext};
use uuid::Uuid;

const QUOTA: tenantry_db::posts::PostQuota = tenantry_db::posts::PostQuota {
    max_posts: 1_000,
    max_storage_bytes: 1 << 20,
};

struct TestDb {
    db: Db,
    _fresh: FreshDatabase,
}

async fn fresh(mode: StatementMode, max_connections: usize) -> TestDb {
    let fresh = FreshDatabase::create().await;
    let db = Db::connect(
        &fresh.url,
        &DbOptions {
            max_connections,
            statement_mode: mode,
            ..DbOptions::default()
        },
    )
    .expect("pool");
    tenantry_db::migrate::migrate(&db).await.expect("migrate");
    TestDb { db, _fresh: fresh }
}

/// Two tenants with one post each, written through tenant contexts.
async fn two_tenants(db: &Db) -> (Uuid, Uuid) {
    let mut ids = Vec::new();
    for slug in ["alpha", "beta"] {
        let owner = Uuid::now_v7();
        let tenant = tenantry_db::tenants::create(
            db,
            &tenantry_db::tenants::NewTenant {
                slug: slug.to_owned(),
                name: slug.to_owned(),
                tier: "free".to_owned(),
                domain: None,
                owner_user_id: owner,
                settings: serde_json::json!({}),
                features: serde_json::json!({}),
                join_policy: tenantry_core::JoinPolicy::Invite,
                api_version: "2026-12-06".to_owned(),
            },
            1_000,
        )
        .await
        .expect("create tenant");
        let mut tx = db
            .begin(&TenantContext::tenant(tenant.id, 1_000))
            .await
            .expect("begin");
        tenantry_db::posts::create(&mut tx, tenant.id, owner, "hello", QUOTA)
            .await
            .expect("post");
        tx.commit().await.expect("commit");
        ids.push(tenant.id);
    }
    (ids[0], ids[1])
}

async fn visible_posts(db: &Db, ctx: &TenantContext) -> i64 {
    let mut tx = db.begin(ctx).await.expect("begin");
    // No tenant filter on purpose: only row-level security decides.
    let row = tx
        .query_one("SELECT count(*) FROM posts", &[])
        .await
        .expect("count");
    tx.commit().await.expect("commit");
    row.get(0)
}

#[tokio::test]
async fn a_transaction_sees_only_the_tenants_of_its_context() {
    for mode in [StatementMode::Cached, StatementMode::PerTransaction] {
        let t = fresh(mode, 2).await;
        let (a, b) = two_tenants(&t.db).await;
        assert_eq!(
            visible_posts(&t.db, &TenantContext::tenant(a, 1_000)).await,
            1
        );
        assert_eq!(
            visible_posts(&t.db, &TenantContext::tenant(b, 1_000)).await,
            1
        );
        let both = TenantContext {
            tenant_ids: vec![a, b],
            user_id: None,
            statement_timeout_ms: 1_000,
        };
        assert_eq!(visible_posts(&t.db, &both).await, 2);
        assert_eq!(
            visible_posts(&t.db, &TenantContext::platform(1_000)).await,
            0
        );
    }
}

#[tokio::test]
async fn no_context_is_left_on_a_pooled_connection() {
    // One connection, so every transaction reuses it.
    let t = fresh(StatementMode::Cached, 1).await;
    let (a, _) = two_tenants(&t.db).await;
    assert_eq!(
        visible_posts(&t.db, &TenantContext::tenant(a, 1_000)).await,
        1
    );
    let conn = t.db.owner_connection().await.expect("connection");
    let row = conn
        .query_one(
            "SELECT current_user::text, coalesce(current_setting('tenantry.tenant_ids', true), '')",
            &[],
        )
        .await
        .expect("settings");
    let role: String = row.get(0);
    let tenants: String = row.get(1);
    assert_ne!(
        role, "tenantry_app",
        "the role switch must not outlive its transaction"
    );
    assert_eq!(
        tenants, "",
        "the tenant set must not outlive its transaction"
    );
}

#[tokio::test]
async fn a_dropped_transaction_rolls_back() {
    let t = fresh(StatementMode::Cached, 1).await;
    let (a, _) = two_tenants(&t.db).await;
    {
        let mut tx =
            t.db.begin(&TenantContext::tenant(a, 1_000))
                .await
                .expect("begin");
        tenantry_db::posts::create(&mut tx, a, Uuid::now_v7(), "never committed", QUOTA)
            .await
            .expect_err("the author is not a user, so the foreign key refuses it");
    }
    {
        let mut tx =
            t.db.begin(&TenantContext::tenant(a, 1_000))
                .await
                .expect("begin");
        tx.query("DELETE FROM posts WHERE tenant_id = $1", &[&a])
            .await
            .expect("delete");
        // dropped without commit
    }
    assert_eq!(
        visible_posts(&t.db, &TenantContext::tenant(a, 1_000)).await,
        1
    );
}

#[tokio::test]
async fn a_statement_past_the_timeout_is_cancelled_and_the_connection_stays_healthy() {
    let t = fresh(StatementMode::Cached, 1).await;
    let (a, _) = two_tenants(&t.db).await;
    let mut tx =
        t.db.begin(&TenantContext::tenant(a, 50))
            .await
            .expect("begin");
    let err = tx
        .query("SELECT pg_sleep(1)", &[])
        .await
        .expect_err("cancelled by statement_timeout");
    assert!(matches!(err, DbError::Timeout), "got {err:?}");
    drop(tx);
    // The only connection is usable again, with the default timeout.
    assert_eq!(
        visible_posts(&t.db, &TenantContext::tenant(a, 1_000)).await,
        1
    );
}

#[tokio::test]
async fn writes_for_a_tenant_outside_the_context_are_refused() {
    let t = fresh(StatementMode::Cached, 2).await;
    let (a, b) = two_tenants(&t.db).await;
    let mut tx =
        t.db.begin(&TenantContext::tenant(a, 1_000))
            .await
            .expect("begin");
    let author: Uuid = tx
        .query_one("SELECT author_id FROM posts WHERE tenant_id = $1", &[&a])
        .await
        .expect("author")
        .get(0);
    let err = tenantry_db::posts::create(&mut tx, b, author, "smuggled", QUOTA)
        .await
        .expect_err("row-level security refuses it");
    assert!(
        format!("{err:?}").contains("row-level security"),
        "got {err:?}"
    );
}

/// What the transaction's first statement sees of its context.
const SEEN: &str = "SELECT current_user::text, current_setting('tenantry.tenant_ids'), \
     current_setting('tenantry.user_id'), current_setting('statement_timeout'), \
     current_setting('transaction_read_only')";

fn seen(row: &tokio_postgres::Row) -> [String; 5] {
    [0, 1, 2, 3, 4].map(|i| row.get::<_, String>(i))
}

/// Every way a transaction's prelude goes out (with a `query`, an
/// `execute`, a `query_and_commit`, read-only or not) carries the context's
/// own values to the statement sent with it, again and again on one
/// connection, whether the settings go as a statement prepared once per
/// connection or as text (behind PgBouncer).
#[tokio::test]
async fn the_statement_sent_with_the_prelude_runs_under_its_context() {
    for mode in [StatementMode::Cached, StatementMode::PerTransaction] {
        let t = fresh(mode, 1).await;
        for round in 0..3u32 {
            let (a, b, user) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
            let timeout = 1_001 + round;
            let ctx = TenantContext {
                tenant_ids: vec![a, b],
                user_id: Some(user),
                statement_timeout_ms: timeout,
            };
            let want = |read_only: &str| {
                [
                    "tenantry_app".to_owned(),
                    format!("{{{a},{b}}}"),
                    user.to_string(),
                    format!("{timeout}ms"),
                    read_only.to_owned(),
                ]
            };

            let mut tx = t.db.begin(&ctx).await.expect("begin");
            let row = tx.query_one(SEEN, &[]).await.expect("query");
            assert_eq!(seen(&row), want("off"), "{mode:?}, query");
            tx.commit().await.expect("commit");

            let mut tx = t.db.begin_lazy(&ctx, None);
            tx.set_read_only();
            let row = tx.query_one(SEEN, &[]).await.expect("query");
            assert_eq!(seen(&row), want("on"), "{mode:?}, read only");
            tx.commit().await.expect("commit");

            let tx = t.db.begin_lazy(&ctx, None);
            let rows = tx.query_and_commit(SEEN, &[]).await.expect("query");
            assert_eq!(seen(&rows[0]), want("off"), "{mode:?}, query_and_commit");

            // An `execute` first: the settings are in place for it too (a
            // write into another tenant than the context's is refused).
            let mut tx =
                t.db.begin(&TenantContext::tenant(a, 1_000))
                    .await
                    .expect("begin");
            let err = tx
                .execute(
                    "INSERT INTO posts (tenant_id, id, author_id, content) VALUES ($1, $2, $3, 'x')",
                    &[&b, &Uuid::now_v7(), &user],
                )
                .await
                .expect_err("outside the context");
            assert!(
                format!("{err:?}").contains("row-level security"),
                "{mode:?}: {err:?}"
            );
        }
        // The platform context: no tenant, no user.
        let platform = TenantContext::platform(1_500);
        let row =
            t.db.begin_lazy(&platform, None)
                .query_and_commit(SEEN, &[])
                .await
                .expect("query");
        assert_eq!(
            seen(&row[0]),
            ["tenantry_app", "{}", "", "1500ms", "off"].map(str::to_owned),
            "{mode:?}, platform"
        );
    }
}
