//! The group-commit collector against a real PostgreSQL.

use std::time::Duration;

use chrono::Utc;
use tenantry_db::testing::FreshDatabase;
use tenantry_db::{Db, DbOptions};
use tenantry_jobs::ingest::{self, Event, IngestConfig, IngestError};
use uuid::Uuid;

fn events(n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| Event {
            kind: "e".to_owned(),
            properties: serde_json::json!({ "i": i }),
            occurred_at: Utc::now(),
        })
        .collect()
}

#[tokio::test]
async fn every_event_acknowledged_before_a_stop_is_committed() {
    let fresh = FreshDatabase::migrated().await;
    let db = Db::connect(&fresh.url, &DbOptions::default()).expect("pool");
    tenantry_db::migrate::migrate(&db).await.expect("migrate");
    let raw = fresh.connect().await;
    let (tenant, user) = (Uuid::now_v7(), Uuid::now_v7());
    raw.execute(
        "INSERT INTO tenants (id, slug, name, tier, owner_user_id) VALUES ($1, 'a', 'A', 'free', $2)",
        &[&tenant, &user],
    )
    .await
    .expect("tenant");

    // A long window: the stop arrives while submissions wait in a batch.
    let (handle, collector) = ingest::channel(
        db.clone(),
        IngestConfig {
            window: Duration::from_millis(200),
            ..IngestConfig::default()
        },
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let collector = tokio::spawn(collector.run(stop_rx));
    let submits: Vec<_> = (0..20)
        .map(|_| {
            let handle = handle.clone();
            tokio::spawn(async move { handle.submit(tenant, user, u64::MAX, events(5)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    stop_tx.send(true).expect("stop");
    let mut acknowledged = 0;
    for s in submits {
        match s.await.expect("join") {
            Ok(n) => acknowledged += n,
            Err(IngestError::Unavailable(_)) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    collector.await.expect("collector");
    assert_eq!(
        acknowledged, 100,
        "everything submitted before the stop is written"
    );
    let rows: i64 = raw
        .query_one("SELECT count(*) FROM analytics_events", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(rows, 100);
    // After the stop, submissions are refused rather than left waiting.
    let late = handle.submit(tenant, user, u64::MAX, events(1)).await;
    assert!(matches!(late, Err(IngestError::Unavailable(_))), "{late:?}");
    // Rows land in a month's partition, not the default one.
    let default_rows: i64 = raw
        .query_one("SELECT count(*) FROM analytics_events_default", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(default_rows, 0);
}
