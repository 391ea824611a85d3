//! An online move of a 100,000-post tenant between two databases while eight
//! clients write it, and what giving a big tenant a database of its own
//! changes for it and for the rest (BENCHMARKS.md, "Cells: moving a tenant").
//! Needs the test PostgreSQL (`TENANTRY_TEST_DATABASE_URL`).
//!
//! ```sh
//! cargo run --release -p tenantry-db --example move_tenant [posts] [small tenants]
//! ```
//!
//! 1. Seeds one database with a big tenant (`posts` posts, a tenth with a
//!    comment) and `small` tenants of 1,000 posts each.
//! 2. Shared: the first-page feed query's latency for the big tenant and a
//!    small one, the posts indexes' size, and VACUUM of posts after a sixteenth
//!    of every tenant's posts were updated.
//! 3. Moves the big tenant to a second database with
//!    `tenantry_db::moving::move_tenant` while eight clients insert posts
//!    into it through a fence (as the server's would): the pause of its
//!    writes, the longest write a client saw, the move's duration.
//! 4. Split: the same measurements in each database.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tenantry_db::moving::{self, Fence};
use tenantry_db::testing::FreshDatabase;
use tenantry_db::{Db, DbError, DbOptions, TenantContext};
use tokio::sync::{OwnedRwLockWriteGuard, RwLock};
use uuid::Uuid;

struct TestFence {
    lock: Arc<RwLock<()>>,
    held: std::sync::Mutex<Option<OwnedRwLockWriteGuard<()>>>,
    on_target: Arc<AtomicBool>,
}

impl Fence for TestFence {
    async fn hold(&self) -> Result<(), DbError> {
        let guard = self.lock.clone().write_owned().await;
        *self.held.lock().expect("fence") = Some(guard);
        Ok(())
    }

    async fn flip(&self) -> Result<(), DbError> {
        self.on_target.store(true, Ordering::SeqCst);
        Ok(())
    }

    async fn release(&self) {
        self.held.lock().expect("fence").take();
    }
}

const FEED: &str = "SELECT id, content, created_at FROM posts
                     WHERE tenant_id = $1 AND deleted_at IS NULL
                     ORDER BY created_at DESC, id DESC LIMIT 20";

/// Median and 99th percentile of the feed's first page, in ms.
async fn feed_latency(db: &Db, tenant: Uuid) -> anyhow::Result<(f64, f64)> {
    let mut times = Vec::with_capacity(300);
    for _ in 0..300 {
        let t = Instant::now();
        let mut tx = db.begin(&TenantContext::tenant(tenant, 5_000)).await?;
        tx.query(FEED, &[&tenant]).await?;
        tx.commit().await?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok((times[150], times[296]))
}

/// Updates a sixteenth of the given tenants' posts, then times VACUUM of posts.
async fn vacuum_after_churn(
    client: &tokio_postgres::Client,
    tenants: &[Uuid],
) -> anyhow::Result<f64> {
    client
        .execute(
            "UPDATE posts SET like_count = like_count + 1
              WHERE tenant_id = ANY ($1) AND content LIKE '1%'",
            &[&tenants],
        )
        .await?;
    let t = Instant::now();
    client.batch_execute("VACUUM posts").await?;
    Ok(t.elapsed().as_secs_f64())
}

async fn index_mb(client: &tokio_postgres::Client) -> anyhow::Result<f64> {
    let bytes: i64 = client
        .query_one("SELECT pg_indexes_size('posts')", &[])
        .await?
        .get(0);
    Ok(bytes as f64 / 1e6)
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let posts: i64 = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(100_000);
    let small: i64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(100);
    println!("load average at start: {}", load());
    let shared = FreshDatabase::migrated().await;
    let client = shared.connect().await;
    let big = tenantry_db::new_id();
    let owner = Uuid::parse_str("00000000-0000-7000-8000-000000000000")?;
    let t = Instant::now();
    client
        .batch_execute(&format!(
            "INSERT INTO users (id, email)
             SELECT ('00000000-0000-7000-8000-' || lpad(to_hex(i), 12, '0'))::uuid,
                    'user' || i || '@example.com'
             FROM generate_series(0, 999) i;
             INSERT INTO tenants (id, slug, name, tier, owner_user_id)
             VALUES ('{big}', 'big', 'Big', 'enterprise', '{owner}');
             INSERT INTO tenants (id, slug, name, tier, owner_user_id)
             SELECT gen_random_uuid(), 'small-' || i, 'Small ' || i, 'free', '{owner}'
             FROM generate_series(1, {small}) i;
             INSERT INTO memberships (tenant_id, user_id, role)
             SELECT t.id, u.id, CASE WHEN u.id = '{owner}' THEN 'owner' ELSE 'member' END
             FROM tenants t CROSS JOIN (SELECT id FROM users ORDER BY id LIMIT 50) u;
             INSERT INTO posts (tenant_id, id, author_id, content, created_at)
             SELECT '{big}', gen_random_uuid(),
                    ('00000000-0000-7000-8000-' || lpad(to_hex(i % 1000), 12, '0'))::uuid,
                    repeat(md5(i::text) || ' ', 9),
                    timestamptz '2024-01-01' + i * interval '1 second'
             FROM generate_series(1, {posts}) i;
             INSERT INTO comments (tenant_id, id, post_id, author_id, content)
             SELECT tenant_id, gen_random_uuid(), id, author_id, 'a comment'
             FROM posts WHERE tenant_id = '{big}' AND content LIKE '0%';
             INSERT INTO posts (tenant_id, id, author_id, content, created_at)
             SELECT t.id, gen_random_uuid(), '{owner}', repeat(md5(i::text) || ' ', 9),
                    timestamptz '2024-01-01' + i * interval '1 second'
             FROM tenants t CROSS JOIN generate_series(1, 1000) i WHERE t.id <> '{big}';"
        ))
        .await?;
    // VACUUM runs outside a transaction: a statement of its own.
    client.batch_execute("VACUUM ANALYZE").await?;
    println!("seeded in {:.1} s", t.elapsed().as_secs_f64());
    let smalls: Vec<Uuid> = client
        .query("SELECT id FROM tenants WHERE id <> $1", &[&big])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let one_small = smalls[0];

    let source = Db::connect(&shared.url, &DbOptions::default())?;
    let (big_p50, big_p99) = feed_latency(&source, big).await?;
    let (small_p50, small_p99) = feed_latency(&source, one_small).await?;
    let shared_index = index_mb(&client).await?;
    let mut everyone = smalls.clone();
    everyone.push(big);
    let shared_vacuum = vacuum_after_churn(&client, &everyone).await?;
    println!(
        "shared: feed big p50 {big_p50:.2} ms p99 {big_p99:.2} ms, small p50 {small_p50:.2} ms \
         p99 {small_p99:.2} ms; posts indexes {shared_index:.1} MB; VACUUM posts after churn \
         {shared_vacuum:.2} s"
    );

    // The move, with eight clients inserting into the big tenant throughout.
    let own = FreshDatabase::migrated().await;
    let target = Db::connect(&own.url, &DbOptions::default())?;
    let fence = TestFence {
        lock: Arc::new(RwLock::new(())),
        held: std::sync::Mutex::new(None),
        on_target: Arc::new(AtomicBool::new(false)),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (written, longest_us) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut writers = Vec::new();
    for _ in 0..8 {
        let (source, target) = (source.clone(), target.clone());
        let (lock, on_target, stop) = (fence.lock.clone(), fence.on_target.clone(), stop.clone());
        let (written, longest_us) = (written.clone(), longest_us.clone());
        writers.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let t = Instant::now();
                let _turn = lock.read().await;
                let db = if on_target.load(Ordering::SeqCst) {
                    &target
                } else {
                    &source
                };
                let mut tx = db.begin(&TenantContext::tenant(big, 5_000)).await?;
                tx.execute(
                    "INSERT INTO posts (tenant_id, id, author_id, content) VALUES ($1, $2, $3, 'live')",
                    &[&big, &Uuid::now_v7(), &owner],
                )
                .await?;
                tx.commit().await?;
                written.fetch_add(1, Ordering::Relaxed);
                longest_us.fetch_max(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                drop(_turn);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok::<_, DbError>(())
        }));
    }
    let copied_at = std::sync::Mutex::new(None);
    let report = moving::move_tenant(&source, &target, big, &fence, |p| {
        if p.phase == moving::MovePhase::CatchingUp {
            copied_at
                .lock()
                .expect("copied")
                .get_or_insert_with(Instant::now);
        }
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await??;
    }
    println!(
        "move: {} rows copied, {} changes caught up, {} rows purged; write pause {:.0} ms; \
         longest write a client saw {:.0} ms; {} writes acknowledged during the run; \
         total {:.1} s",
        report.rows_copied,
        report.changes_applied,
        report.rows_purged,
        report.write_pause.as_secs_f64() * 1e3,
        longest_us.load(Ordering::Relaxed) as f64 / 1e3,
        written.load(Ordering::Relaxed),
        report.duration.as_secs_f64(),
    );

    let own_client = own.connect().await;
    own_client.batch_execute("VACUUM ANALYZE").await?;
    // The purge left the shared indexes as large as before; rebuilt, they
    // are what the rest alone needs.
    client.batch_execute("REINDEX TABLE posts").await?;
    client.batch_execute("VACUUM ANALYZE").await?;
    let (big_p50, big_p99) = feed_latency(&target, big).await?;
    let (small_p50, small_p99) = feed_latency(&source, one_small).await?;
    let (own_index, rest_index) = (index_mb(&own_client).await?, index_mb(&client).await?);
    let own_vacuum = vacuum_after_churn(&own_client, &[big]).await?;
    let rest_vacuum = vacuum_after_churn(&client, &smalls).await?;
    println!(
        "split: feed big (own database) p50 {big_p50:.2} ms p99 {big_p99:.2} ms, small p50 \
         {small_p50:.2} ms p99 {small_p99:.2} ms; posts indexes big {own_index:.1} MB, rest \
         {rest_index:.1} MB (reindexed after the purge); VACUUM posts after churn: big \
         {own_vacuum:.2} s, rest {rest_vacuum:.2} s"
    );
    println!("load average at end: {}", load());
    Ok(())
}
