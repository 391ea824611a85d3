//! What a running move costs the other tenants of its source database: the
//! time of a bystander's single-row post inserts with the move's capture
//! triggers in place (a move stopped while catching up) and without them
//! (the move aborted), alternated four times, each first in turn (BENCHMARKS.md, "Cells").
//! Needs the test PostgreSQL (`TENANTRY_TEST_DATABASE_URL`).
//!
//! ```sh
//! cargo run --release -p tenantry-db --example move_capture_cost [inserts]
//! ```

use std::time::Instant;

use tenantry_db::moving::{self, Fence, MovePhase};
use tenantry_db::testing::FreshDatabase;
use tenantry_db::{Db, DbError, DbOptions, TenantContext};
use uuid::Uuid;

/// Never reached: the move is stopped before its fence.
struct NoFence;

impl Fence for NoFence {
    async fn hold(&self) -> Result<(), DbError> {
        Ok(())
    }
    async fn flip(&self) -> Result<(), DbError> {
        Ok(())
    }
    async fn release(&self) {}
}

/// Starts a move of `tenant` and stops it once it catches up: the capture
/// triggers stay on every tenant table of `source`.
async fn stop_while_catching_up(source: &Db, target: &Db, tenant: Uuid) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let tx = std::sync::Mutex::new(Some(tx));
    tokio::select! {
        r = moving::move_tenant(source, target, tenant, &NoFence, |p| {
            if p.phase == MovePhase::CatchingUp
                && let Some(tx) = tx.lock().expect("tx").take()
            {
                let _ = tx.send(());
            }
        }) => panic!("the move was to stop: {:?}", r.map(|r| r.rows_copied)),
        _ = rx => {}
    }
}

/// Microseconds per insert of `n` single-row post inserts by `tenant`.
async fn inserts(db: &Db, tenant: Uuid, author: Uuid, n: u32) -> anyhow::Result<f64> {
    let t = Instant::now();
    for i in 0..n {
        let mut tx = db.begin(&TenantContext::tenant(tenant, 5_000)).await?;
        tx.execute(
            "INSERT INTO posts (tenant_id, id, author_id, content) VALUES ($1, $2, $3, $4)",
            &[&tenant, &Uuid::now_v7(), &author, &format!("post {i}")],
        )
        .await?;
        tx.commit().await?;
    }
    Ok(t.elapsed().as_secs_f64() * 1e6 / f64::from(n))
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: u32 = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(2_000);
    println!("load average at start: {}", load());
    let (a, b) = (
        FreshDatabase::migrated().await,
        FreshDatabase::migrated().await,
    );
    let (moving, bystander, owner) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    a.connect()
        .await
        .batch_execute(&format!(
            "INSERT INTO users (id) VALUES ('{owner}');
             INSERT INTO tenants (id, slug, name, tier, owner_user_id)
             VALUES ('{moving}', 'moving', 'Moving', 'pro', '{owner}'),
                    ('{bystander}', 'bystander', 'Bystander', 'pro', '{owner}');
             INSERT INTO posts (tenant_id, id, author_id, content)
             SELECT '{moving}', gen_random_uuid(), '{owner}', 'post ' || i
               FROM generate_series(1, 1000) i;"
        ))
        .await?;
    let (source, target) = (
        Db::connect(&a.url, &DbOptions::default())?,
        Db::connect(&b.url, &DbOptions::default())?,
    );
    inserts(&source, bystander, owner, n / 4).await?; // warm-up
    let (mut off, mut on) = (Vec::new(), Vec::new());
    // Alternated, and in turns first: the table grows as it goes.
    for round in 0..4 {
        if round % 2 == 0 {
            off.push(inserts(&source, bystander, owner, n).await?);
        }
        stop_while_catching_up(&source, &target, moving).await;
        on.push(inserts(&source, bystander, owner, n).await?);
        moving::abort_move(&source, &target, moving)
            .await?
            .expect("a move to abort");
        if round % 2 == 1 {
            off.push(inserts(&source, bystander, owner, n).await?);
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    println!(
        "bystander insert, µs each ({n} per round): without capture {off:.0?} (mean {:.0}), \
         with a move's capture on every table {on:.0?} (mean {:.0}): {:+.1} %",
        mean(&off),
        mean(&on),
        (mean(&on) / mean(&off) - 1.0) * 100.0
    );
    println!("load average at end: {}", load());
    Ok(())
}
