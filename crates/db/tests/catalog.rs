//! The tenant tables come from the catalog, and the catalog's account of
//! their isolation catches a table added without it: against a real
//! PostgreSQL, with tables made here the way a careless migration would.

use tenantry_db::catalog::{Gap, Problem, gaps, tenant_tables};
use tenantry_db::testing::FreshDatabase;
use tenantry_db::{Db, DbOptions};
use uuid::Uuid;

async fn fresh() -> (tokio_postgres::Client, FreshDatabase) {
    let fresh = FreshDatabase::migrated().await;
    (fresh.connect().await, fresh)
}

fn of(gaps: &[Gap], table: &str) -> Vec<Problem> {
    gaps.iter()
        .filter(|g| g.table == table)
        .map(|g| g.problem.clone())
        .collect()
}

#[tokio::test]
async fn a_migrated_database_has_no_gaps_and_names_its_tenant_tables() {
    let (db, _fresh) = fresh().await;
    let found = gaps(&db).await.expect("gaps");
    assert!(found.is_empty(), "{found:#?}");

    let tables = tenant_tables(&db).await.expect("tenant tables");
    for table in [
        "memberships",
        "posts",
        "post_likes",
        "comments",
        "journey_activities",
        "audit_log",
        "jobs",
        "job_keys",
    ] {
        assert!(tables.iter().any(|t| t == table), "{table} in {tables:?}");
    }
    // Global tables, partitions and the user-keyed directory are not.
    for table in [
        "tenants",
        "users",
        "journey_activities_default",
        "user_communities",
    ] {
        assert!(!tables.iter().any(|t| t == table), "{table} in {tables:?}");
    }
}

#[tokio::test]
async fn a_table_with_a_tenant_id_added_without_isolation_is_caught_until_isolated() {
    let (db, _fresh) = fresh().await;
    db.batch_execute(
        "CREATE TABLE probes (tenant_id uuid NOT NULL, id uuid NOT NULL, note text NOT NULL)",
    )
    .await
    .expect("a bare tenant table");

    assert!(
        tenant_tables(&db)
            .await
            .expect("tenant tables")
            .contains(&"probes".to_owned()),
        "found without a list"
    );
    let found = gaps(&db).await.expect("gaps");
    assert_eq!(
        of(&found, "probes"),
        [
            Problem::MissingGrant,
            Problem::NoPolicy,
            Problem::NoTenantIndex,
            Problem::NotEnabled,
            Problem::NotForced,
            Problem::NotTenantPolicy,
        ],
        "{found:#?}"
    );
    assert!(found.iter().all(|g| g.table == "probes"), "{found:#?}");

    // What a migration adding the table should have said.
    db.batch_execute(
        "ALTER TABLE probes ADD PRIMARY KEY (tenant_id, id);
         SELECT tenantry_isolate('probes');",
    )
    .await
    .expect("isolate");
    let found = gaps(&db).await.expect("gaps");
    assert!(found.is_empty(), "{found:#?}");

    // And it isolates: the app role sees and writes only its tenant's rows.
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    db.execute(
        "INSERT INTO probes VALUES ($1, $3, 'a'), ($2, $4, 'b')",
        &[&a, &b, &Uuid::now_v7(), &Uuid::now_v7()],
    )
    .await
    .expect("rows as the owner");
    let mut db = db;
    let tx = db.transaction().await.expect("begin");
    tx.execute(
        "SELECT set_config('role', 'tenantry_app', true),
                set_config('tenantry.tenant_ids', $1, true)",
        &[&format!("{{{a}}}")],
    )
    .await
    .expect("tenant context");
    let seen: Vec<String> = tx
        .query("SELECT note FROM probes", &[])
        .await
        .expect("read")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(seen, ["a"]);
    let updated = tx
        .execute("UPDATE probes SET note = 'x'", &[])
        .await
        .expect("update");
    assert_eq!(updated, 1, "only A's row");
    tx.execute(
        "INSERT INTO probes VALUES ($1, $2, 'sneaky')",
        &[&b, &Uuid::now_v7()],
    )
    .await
    .expect_err("B's row in A's context fails the policy's check");
}

/// Whether the app role may update `probes`; asserts it has one policy.
async fn may_update(db: &tokio_postgres::Client) -> bool {
    let row = db
        .query_one(
            "SELECT has_table_privilege('tenantry_app', 'probes', 'UPDATE'),
                    (SELECT count(*) FROM pg_policy WHERE polrelid = 'probes'::regclass)",
            &[],
        )
        .await
        .expect("privileges");
    assert_eq!(row.get::<_, i64>(1), 1, "one policy, not two");
    row.get::<_, bool>(0)
}

#[tokio::test]
async fn isolating_again_is_harmless_and_append_only_takes_update_away() {
    let (db, _fresh) = fresh().await;
    db.batch_execute(
        "CREATE TABLE probes (tenant_id uuid NOT NULL, id uuid NOT NULL,
                              PRIMARY KEY (tenant_id, id));
         SELECT tenantry_isolate('probes');
         SELECT tenantry_isolate('probes');",
    )
    .await
    .expect("isolate twice");
    assert!(may_update(&db).await);
    db.batch_execute("SELECT tenantry_isolate('probes', append_only => true)")
        .await
        .expect("append-only");
    assert!(!may_update(&db).await);
    assert!(gaps(&db).await.expect("gaps").is_empty());

    // A policy changed by hand is no longer the tenant policy.
    db.batch_execute("ALTER POLICY tenant_isolation ON probes USING (true)")
        .await
        .expect("loosen");
    assert_eq!(
        gaps(&db).await.expect("gaps"),
        [Gap {
            table: "probes".to_owned(),
            problem: Problem::NotTenantPolicy
        }]
    );
}

#[tokio::test]
async fn the_helper_refuses_what_it_cannot_isolate() {
    let (db, _fresh) = fresh().await;
    for (table, why) in [
        ("users", "has no tenant_id column"),
        ("audit_log_default", "is a partition"),
    ] {
        let err = db
            .batch_execute(&format!("SELECT tenantry_isolate('{table}')"))
            .await
            .expect_err(table);
        let message = err.as_db_error().map(|e| e.message().to_owned());
        assert!(
            message.as_deref().is_some_and(|m| m.contains(why)),
            "{table}: {err:?}"
        );
    }
}

#[tokio::test]
async fn a_partitioned_tenant_table_is_isolated_through_its_parent_and_a_granted_partition_is_caught()
 {
    let (db, _fresh) = fresh().await;
    db.batch_execute(
        "CREATE TABLE probe_log (tenant_id uuid NOT NULL, at timestamptz NOT NULL,
                                 PRIMARY KEY (tenant_id, at)) PARTITION BY RANGE (at);
         CREATE TABLE probe_log_default PARTITION OF probe_log DEFAULT;
         SELECT tenantry_isolate('probe_log');",
    )
    .await
    .expect("a partitioned tenant table");
    let tables = tenant_tables(&db).await.expect("tenant tables");
    assert!(tables.contains(&"probe_log".to_owned()));
    assert!(!tables.contains(&"probe_log_default".to_owned()));
    assert!(gaps(&db).await.expect("gaps").is_empty());

    db.batch_execute("GRANT SELECT ON probe_log_default TO tenantry_app")
        .await
        .expect("grant");
    assert_eq!(
        gaps(&db).await.expect("gaps"),
        [Gap {
            table: "probe_log".to_owned(),
            problem: Problem::PartitionReachable("probe_log_default".to_owned())
        }]
    );
}

/// A table whose policy is keyed by user (like `user_communities`) is not a
/// tenant table, but it is still checked for row-level security.
#[tokio::test]
async fn a_user_keyed_table_is_not_a_tenant_table_but_must_still_force_row_level_security() {
    let (db, _fresh) = fresh().await;
    db.batch_execute(
        "CREATE TABLE probe_directory (user_id uuid NOT NULL, tenant_id uuid NOT NULL,
                                       PRIMARY KEY (user_id, tenant_id));
         ALTER TABLE probe_directory ENABLE ROW LEVEL SECURITY;
         CREATE POLICY mine ON probe_directory FOR SELECT TO tenantry_app
             USING (user_id = (SELECT tenantry_current_user_id()));",
    )
    .await
    .expect("a user-keyed table");
    let tables = tenant_tables(&db).await.expect("tenant tables");
    assert!(
        !tables.contains(&"probe_directory".to_owned()),
        "{tables:?}"
    );
    assert_eq!(
        gaps(&db).await.expect("gaps"),
        [Gap {
            table: "probe_directory".to_owned(),
            problem: Problem::NotForced
        }]
    );
}

#[tokio::test]
async fn tenant_tables_come_children_first() {
    let (db, _fresh) = fresh().await;
    let tables = tenant_tables(&db).await.expect("tenant tables");
    let at = |t: &str| tables.iter().position(|x| x == t).expect(t);
    for (child, parent) in [
        ("post_likes", "posts"),
        ("comments", "posts"),
        ("journey_activities", "journeys"),
    ] {
        assert!(
            at(child) < at(parent),
            "{child} before {parent}: {tables:?}"
        );
    }
    // A chain added later is ordered too, however its names sort.
    db.batch_execute(
        "CREATE TABLE a_parent (tenant_id uuid NOT NULL, id uuid NOT NULL,
                                PRIMARY KEY (tenant_id, id));
         CREATE TABLE z_child (tenant_id uuid NOT NULL, id uuid NOT NULL, parent uuid NOT NULL,
                               PRIMARY KEY (tenant_id, id),
                               FOREIGN KEY (tenant_id, parent) REFERENCES a_parent);
         CREATE TABLE zz_grandchild (tenant_id uuid NOT NULL, child uuid NOT NULL,
                                     PRIMARY KEY (tenant_id, child),
                                     FOREIGN KEY (tenant_id, child) REFERENCES z_child);",
    )
    .await
    .expect("a chain of tenant tables");
    let tables = tenant_tables(&db).await.expect("tenant tables");
    let at = |t: &str| tables.iter().position(|x| x == t).expect(t);
    assert!(at("zz_grandchild") < at("z_child") && at("z_child") < at("a_parent"));
}

/// The purge reads its tables from the catalog: a tenant table added after
/// it was written is purged like the rest.
#[tokio::test]
async fn the_purge_removes_a_deleted_tenants_rows_from_a_table_added_later() {
    let (client, fresh) = fresh().await;
    client
        .batch_execute(
            "CREATE TABLE probes (tenant_id uuid NOT NULL, id uuid NOT NULL,
                                  PRIMARY KEY (tenant_id, id));
             SELECT tenantry_isolate('probes');",
        )
        .await
        .expect("a new tenant table");
    let db = Db::connect(&fresh.url, &DbOptions::default()).expect("pool");
    let (gone, kept, owner) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    client
        .execute(
            "INSERT INTO tenants (id, slug, name, tier, owner_user_id, status)
             VALUES ($1, 'gone', 'Gone', 'free', $3, 'deleted'),
                    ($2, 'kept', 'Kept', 'free', $3, 'active')",
            &[&gone, &kept, &owner],
        )
        .await
        .expect("tenants");
    client
        .execute(
            "INSERT INTO probes SELECT t, gen_random_uuid() FROM unnest($1::uuid[]) t,
                                       generate_series(1, 3)",
            &[&vec![gone, kept]],
        )
        .await
        .expect("rows");

    let removed = tenantry_db::tenants::purge(&db, gone, 5_000)
        .await
        .expect("purge");
    assert_eq!(removed, 3);
    let left: Vec<(Uuid, i64)> = client
        .query(
            "SELECT tenant_id, count(*) FROM probes GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await
        .expect("count")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(left, [(kept, 3)]);
    let tenant = client
        .query_opt("SELECT 1 FROM tenants WHERE id = $1", &[&gone])
        .await
        .expect("tenant");
    assert!(tenant.is_none(), "the tenant itself is gone");
}
