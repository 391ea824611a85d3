//! Partition maintenance against a real PostgreSQL: partitions are made
//! ahead, stray rows in the default partition are reported and moved into
//! their month's partition, and retention drops old months.

use chrono::{Datelike as _, Months, NaiveDate, Utc};
use tenantry_db::partitions::{maintain, partition_name};
use tenantry_db::testing::FreshDatabase;
use tenantry_db::{Db, DbOptions};

async fn fresh() -> (Db, FreshDatabase) {
    let fresh = FreshDatabase::migrated().await;
    let db = Db::connect(&fresh.url, &DbOptions::default()).expect("pool");
    tenantry_db::migrate::migrate(&db).await.expect("migrate");
    (db, fresh)
}

fn this_month() -> NaiveDate {
    let today = Utc::now().date_naive();
    NaiveDate::from_ymd_opt(today.year(), today.month(), 1).expect("test step")
}

async fn create_events_table(db: &Db) {
    let conn = db.owner_connection().await.expect("test step");
    conn.batch_execute(
        "CREATE TABLE things (
             tenant_id uuid NOT NULL,
             at        timestamptz NOT NULL,
             id        bigint NOT NULL,
             doubled   bigint GENERATED ALWAYS AS (id * 2) STORED,
             PRIMARY KEY (tenant_id, at, id)
         ) PARTITION BY RANGE (at);
         CREATE TABLE things_default PARTITION OF things DEFAULT;",
    )
    .await
    .expect("test step");
}

async fn partitions_of(db: &Db, parent: &str) -> Vec<String> {
    let conn = db.owner_connection().await.expect("test step");
    conn.query(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
          WHERE i.inhparent = to_regclass($1) ORDER BY 1",
        &[&parent],
    )
    .await
    .expect("test step")
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[tokio::test]
async fn maintenance_makes_monthly_partitions_from_last_month_to_the_horizon() {
    let (db, _fresh) = fresh().await;
    create_events_table(&db).await;

    let report = maintain(&db, 3).await.expect("test step");
    let table = report.table("things").expect("the table is found");
    let expected: Vec<String> = (-1..=3)
        .map(|m| {
            let start = if m < 0 {
                this_month() - Months::new(1)
            } else {
                this_month() + Months::new(m as u32)
            };
            partition_name("things", start)
        })
        .collect();
    assert_eq!(table.created, expected);
    assert_eq!(table.default_rows, 0);

    let again = maintain(&db, 3).await.expect("test step");
    assert!(
        again.table("things").expect("test step").created.is_empty(),
        "idempotent"
    );
    let mut all = expected.clone();
    all.push("things_default".to_owned());
    all.sort();
    assert_eq!(partitions_of(&db, "things").await, all);
}

#[tokio::test]
async fn rows_outside_every_partition_land_in_the_default_and_move_when_their_month_is_made() {
    let (db, _fresh) = fresh().await;
    create_events_table(&db).await;
    maintain(&db, 1).await.expect("test step");

    // Five months ahead: beyond the horizon of 1, so the default takes it.
    let later = this_month() + Months::new(5);
    let conn = db.owner_connection().await.expect("test step");
    conn.execute(
        "INSERT INTO things (tenant_id, at, id)
         SELECT gen_random_uuid(), ($1::date + interval '2 days')::timestamptz, g
           FROM generate_series(1, 10) g",
        &[&later],
    )
    .await
    .expect("an insert outside every partition does not fail");

    let report = maintain(&db, 1).await.expect("test step");
    assert_eq!(report.table("things").expect("test step").default_rows, 10);

    let report = maintain(&db, 6).await.expect("test step");
    let table = report.table("things").expect("test step");
    assert_eq!(table.moved_rows, 10);
    assert_eq!(table.default_rows, 0);
    let name = partition_name("things", later);
    let count: i64 = conn
        .query_one(&format!("SELECT count(*) FROM {name}"), &[])
        .await
        .expect("test step")
        .get(0);
    assert_eq!(count, 10);
    let doubled: i64 = conn
        .query_one("SELECT sum(doubled)::bigint FROM things", &[])
        .await
        .expect("test step")
        .get(0);
    assert_eq!(doubled, 110, "generated columns are recomputed, not copied");
}

#[tokio::test]
async fn retention_drops_partitions_older_than_the_policy_keeps() {
    let (db, _fresh) = fresh().await;
    create_events_table(&db).await;
    let conn = db.owner_connection().await.expect("test step");
    let old = this_month() - Months::new(24);
    let name = partition_name("things", old);
    conn.batch_execute(&format!(
        "CREATE TABLE {name} PARTITION OF things
             FOR VALUES FROM ('{old} 00:00:00+00') TO ('{} 00:00:00+00');
         INSERT INTO tenantry_partition_retention (parent, keep_months) VALUES ('things', 12);",
        old + Months::new(1)
    ))
    .await
    .expect("test step");

    let report = maintain(&db, 1).await.expect("test step");
    assert_eq!(
        report.table("things").expect("test step").dropped,
        vec![name.clone()]
    );
    assert!(!partitions_of(&db, "things").await.contains(&name));
    // Last month's partition is inside the policy and stays.
    assert!(
        partitions_of(&db, "things")
            .await
            .contains(&partition_name("things", this_month() - Months::new(1)))
    );
}
