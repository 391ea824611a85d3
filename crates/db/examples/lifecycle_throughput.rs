//! Export and import throughput on one tenant of 100,000 posts (BENCHMARKS.md,
//! "Tenant lifecycle"). Needs the test PostgreSQL (`TENANTRY_TEST_DATABASE_URL`).
//!
//! ```sh
//! cargo run --release -p tenantry-db --example lifecycle_throughput [posts]
//! ```

use std::time::Instant;

use tenantry_db::lifecycle::{self, Ids, Target};
use tenantry_db::testing::FreshDatabase;
use tenantry_db::{Db, DbOptions};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let posts: i64 = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(100_000);
    let source = FreshDatabase::migrated().await;
    let client = source.connect().await;
    let tenant = tenantry_db::new_id();
    let started = Instant::now();
    // One tenant: 1,000 members, `posts` posts of ~300 characters, a tenth
    // of them with a comment.
    client
        .batch_execute(&format!(
            "INSERT INTO tenants (id, slug, name, tier, owner_user_id, member_count, post_count)
             VALUES ('{tenant}', 'big', 'Big', 'pro', '00000000-0000-7000-8000-000000000000', 1000, {posts});
             INSERT INTO users (id, email, display_name)
             SELECT ('00000000-0000-7000-8000-' || lpad(to_hex(i), 12, '0'))::uuid,
                    'user' || i || '@example.com', 'User ' || i
             FROM generate_series(0, 999) i;
             INSERT INTO memberships (tenant_id, user_id, role)
             SELECT '{tenant}', id, CASE WHEN id = '00000000-0000-7000-8000-000000000000'
                                         THEN 'owner' ELSE 'member' END FROM users;
             INSERT INTO posts (tenant_id, id, author_id, content, created_at)
             SELECT '{tenant}',
                    (lpad(to_hex(1700000000000 + i), 12, '0') || '7' || substr(md5(i::text), 1, 3)
                     || '8' || substr(md5(i::text), 4, 15))::uuid,
                    ('00000000-0000-7000-8000-' || lpad(to_hex(i % 1000), 12, '0'))::uuid,
                    repeat(md5(i::text) || ' ', 9),
                    timestamptz '2024-01-01' + i * interval '1 second'
             FROM generate_series(1, {posts}) i;
             INSERT INTO comments (tenant_id, id, post_id, author_id, content)
             SELECT tenant_id, (substr(id::text, 1, 14) || 'a' || substr(id::text, 16))::uuid,
                    id, author_id, 'a comment'
             FROM posts WHERE tenant_id = '{tenant}' AND content LIKE '0%';
             ANALYZE;"
        ))
        .await?;
    println!("seeded in {:.1} s", started.elapsed().as_secs_f64());

    let db = Db::connect(&source.url, &DbOptions::default())?;
    let dir = tempfile::tempdir()?;
    let archive = dir.path().join("big.tar.gz");
    let t = Instant::now();
    let made = lifecycle::export(&db, tenant, &archive).await?;
    let secs = t.elapsed().as_secs_f64();
    let rows = made.manifest.rows();
    println!(
        "export: {rows} rows, {:.1} MB archive, {secs:.2} s, {:.0} rows/s",
        made.bytes as f64 / 1e6,
        rows as f64 / secs
    );

    let target = FreshDatabase::migrated().await;
    let db2 = Db::connect(&target.url, &DbOptions::default())?;
    let t = Instant::now();
    let manifest = {
        let path = archive.clone();
        tokio::task::spawn_blocking(move || lifecycle::verify(&path)).await??
    };
    let verify_secs = t.elapsed().as_secs_f64();
    let id = lifecycle::create_importing(&db2, &manifest, "big", Ids::Keep).await?;
    let loaded = lifecycle::load(&db2, &archive, id, Target::New, Ids::Keep).await?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "import (ids kept): {} rows, {secs:.2} s (verify {verify_secs:.2} s), {:.0} rows/s",
        loaded.rows,
        loaded.rows as f64 / secs
    );

    let t = Instant::now();
    let id = lifecycle::create_importing(&db2, &manifest, "big-copy", Ids::New).await?;
    let loaded = lifecycle::load(&db2, &archive, id, Target::New, Ids::New).await?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "import (ids=new): {} rows, {secs:.2} s, {:.0} rows/s",
        loaded.rows,
        loaded.rows as f64 / secs
    );
    Ok(())
}
