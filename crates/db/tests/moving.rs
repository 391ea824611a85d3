//! A tenant moved online between two databases (`tenantry_db::moving`):
//! nothing acknowledged lost while it is written, nobody else's rows
//! touched, the old copy purged, and a move stopped midway resumed or
//! rolled back with exactly one full copy serving.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tenantry_db::moving::{self, Fence, MovePhase, MoveProgress};
use tenantry_db::testing::FreshDatabase;
use tenantry_db::{Db, DbError, DbOptions, TenantContext};
use tokio::sync::{OwnedRwLockWriteGuard, RwLock};
use uuid::Uuid;

struct Cell {
    db: Db,
    fresh: FreshDatabase,
}

async fn cell() -> Cell {
    let fresh = FreshDatabase::migrated().await;
    let db = Db::connect(
        &fresh.url,
        &DbOptions {
            max_connections: 24,
            ..DbOptions::default()
        },
    )
    .expect("pool");
    Cell { db, fresh }
}

/// Seeds a tenant in `c`: 50 members, `posts` posts, a comment and a like on
/// every tenth, a counter delta (identity key), analytics events (a
/// partitioned table) and a queued job. Returns the owner's id.
async fn seed(c: &Cell, tenant: Uuid, slug: &str, posts: i64) -> Uuid {
    let client = c.fresh.connect().await;
    let owner = Uuid::now_v7();
    client
        .batch_execute(&format!(
            "INSERT INTO users (id, email) VALUES ('{owner}', '{slug}@example.com');
             INSERT INTO tenants (id, slug, name, tier, owner_user_id)
             VALUES ('{tenant}', '{slug}', '{slug}', 'pro', '{owner}');
             INSERT INTO users (id, email)
             SELECT gen_random_uuid(), '{slug}' || i || '@example.com' FROM generate_series(1, 49) i;
             INSERT INTO memberships (tenant_id, user_id, role)
             SELECT '{tenant}', id, CASE WHEN id = '{owner}' THEN 'owner' ELSE 'member' END
               FROM users WHERE email LIKE '{slug}%';
             INSERT INTO posts (tenant_id, id, author_id, content)
             SELECT '{tenant}', gen_random_uuid(), '{owner}', 'post ' || i
               FROM generate_series(1, {posts}) i;
             INSERT INTO comments (tenant_id, id, post_id, author_id, content)
             SELECT tenant_id, gen_random_uuid(), id, author_id, 'a comment'
               FROM posts WHERE tenant_id = '{tenant}' AND content LIKE '%0';
             INSERT INTO post_likes (tenant_id, post_id, user_id)
             SELECT tenant_id, id, author_id FROM posts WHERE tenant_id = '{tenant}' AND content LIKE '%0';
             INSERT INTO post_counter_deltas (tenant_id, post_id, user_id, likes)
             SELECT tenant_id, id, author_id, 1 FROM posts WHERE tenant_id = '{tenant}' LIMIT 3;
             INSERT INTO analytics_events (tenant_id, received_at, id, user_id, type, occurred_at)
             SELECT '{tenant}', now() - i * interval '1 day', gen_random_uuid(), '{owner}', 'view', now()
               FROM generate_series(1, 20) i;
             INSERT INTO jobs (tenant_id, id, kind) VALUES ('{tenant}', gen_random_uuid(), 'noop');"
        ))
        .await
        .expect("seed");
    owner
}

/// Rows of `tenant` in every tenant table of `c`, by table.
async fn counts(c: &Cell, tenant: Uuid) -> HashMap<String, i64> {
    let client = c.fresh.connect().await;
    let tables = tenantry_db::catalog::tenant_tables(&client)
        .await
        .expect("tables");
    let mut out = HashMap::new();
    for t in tables {
        let n: i64 = client
            .query_one(
                &format!("SELECT count(*) FROM {t} WHERE tenant_id = $1"),
                &[&tenant],
            )
            .await
            .expect("count")
            .get(0);
        out.insert(t, n);
    }
    out
}

fn total(counts: &HashMap<String, i64>) -> i64 {
    counts.values().sum()
}

/// Content of every post of `tenant` in `c`.
async fn posts_of(c: &Cell, tenant: Uuid) -> HashMap<Uuid, String> {
    let client = c.fresh.connect().await;
    client
        .query(
            "SELECT id, content FROM posts WHERE tenant_id = $1",
            &[&tenant],
        )
        .await
        .expect("posts")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

async fn move_triggers(c: &Cell) -> i64 {
    c.fresh
        .connect()
        .await
        .query_one(
            "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'tenantry\\_move\\_%'",
            &[],
        )
        .await
        .expect("triggers")
        .get(0)
}

/// The caller's side of the fence, as a server would do it: writers take a
/// read lock around each write; `hold` takes the write lock (new writes
/// wait, those in flight finish), `flip` points writers at the target.
struct TestFence {
    lock: Arc<RwLock<()>>,
    held: std::sync::Mutex<Option<OwnedRwLockWriteGuard<()>>>,
    on_target: Arc<AtomicBool>,
    flips: AtomicU64,
}

impl TestFence {
    fn new() -> Self {
        Self {
            lock: Arc::new(RwLock::new(())),
            held: std::sync::Mutex::new(None),
            on_target: Arc::new(AtomicBool::new(false)),
            flips: AtomicU64::new(0),
        }
    }
}

impl Fence for TestFence {
    async fn hold(&self) -> Result<(), DbError> {
        let guard = self.lock.clone().write_owned().await;
        *self.held.lock().expect("fence") = Some(guard);
        Ok(())
    }

    async fn flip(&self) -> Result<(), DbError> {
        self.on_target.store(true, Ordering::SeqCst);
        self.flips.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn release(&self) {
        self.held.lock().expect("fence").take();
    }
}

/// A fence whose flip never finishes: the move is stopped there.
struct StuckFence(TestFence);

impl Fence for StuckFence {
    async fn hold(&self) -> Result<(), DbError> {
        self.0.hold().await
    }

    async fn flip(&self) -> Result<(), DbError> {
        std::future::pending().await
    }

    async fn release(&self) {
        self.0.release().await;
    }
}

/// What one writer had acknowledged: each post it wrote, with its last
/// content, or `None` once deleted.
type Acked = HashMap<Uuid, Option<String>>;

struct Writers {
    stop: Arc<AtomicBool>,
    handles: Vec<tokio::task::JoinHandle<(Acked, Duration, u64, u64)>>,
}

/// Eight clients writing and reading `tenant` through whichever database
/// the fence names.
fn start_writers(
    source: &Db,
    target: &Db,
    fence: &TestFence,
    tenant: Uuid,
    author: Uuid,
) -> Writers {
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for w in 0..8 {
        let (source, target) = (source.clone(), target.clone());
        let (lock, on_target, stop) = (fence.lock.clone(), fence.on_target.clone(), stop.clone());
        handles.push(tokio::spawn(async move {
            let mut acked: Acked = HashMap::new();
            let mut mine: Vec<Uuid> = Vec::new();
            let mut longest = Duration::ZERO;
            let (mut refused, mut reads) = (0u64, 0u64);
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let started = Instant::now();
                let _turn = lock.read().await;
                let db = if on_target.load(Ordering::SeqCst) {
                    &target
                } else {
                    &source
                };
                let mut tx = db
                    .begin(&TenantContext::tenant(tenant, 5_000))
                    .await
                    .expect("begin");
                let (id, content) = if n.is_multiple_of(5) && !mine.is_empty() {
                    let id = mine[(n as usize / 5) % mine.len()];
                    (id, Some(format!("w{w} update {n}")))
                } else if n.is_multiple_of(7) && !mine.is_empty() {
                    (mine.swap_remove((n as usize / 7) % mine.len()), None)
                } else {
                    (Uuid::now_v7(), Some(format!("w{w} post {n}")))
                };
                let wrote = match (&content, acked.contains_key(&id)) {
                    (Some(c), true) => {
                        tx.execute(
                            "UPDATE posts SET content = $3, updated_at = now()
                              WHERE tenant_id = $1 AND id = $2",
                            &[&tenant, &id, c],
                        )
                        .await
                    }
                    (Some(c), false) => {
                        tx.execute(
                            "INSERT INTO posts (tenant_id, id, author_id, content)
                             VALUES ($1, $2, $3, $4)",
                            &[&tenant, &id, &author, c],
                        )
                        .await
                    }
                    (None, _) => {
                        tx.execute(
                            "DELETE FROM posts WHERE tenant_id = $1 AND id = $2",
                            &[&tenant, &id],
                        )
                        .await
                    }
                };
                let committed = match wrote {
                    Ok(_) => tx.commit().await,
                    Err(e) => Err(e),
                };
                match committed {
                    Ok(()) => {
                        if !acked.contains_key(&id) {
                            mine.push(id);
                        }
                        acked.insert(id, content);
                        longest = longest.max(started.elapsed());
                    }
                    // Refused (the source frozen for the switch): never
                    // acknowledged, so nothing to find afterwards. A
                    // delete refused leaves the post as it was.
                    Err(DbError::Busy(_)) => {
                        refused += 1;
                        if content.is_none() {
                            mine.push(id);
                        }
                    }
                    Err(e) => panic!("write failed: {e}"),
                }
                // A read, through the same database: only this tenant's rows.
                let mut tx = db
                    .begin(&TenantContext::tenant(tenant, 5_000))
                    .await
                    .expect("begin");
                let others: i64 = tx
                    .query_one(
                        "SELECT count(*) FROM posts WHERE tenant_id <> $1",
                        &[&tenant],
                    )
                    .await
                    .expect("read")
                    .get(0);
                tx.commit().await.expect("commit");
                assert_eq!(others, 0, "a read saw another tenant's posts");
                reads += 1;
                drop(_turn);
                tokio::task::yield_now().await;
            }
            (acked, longest, refused, reads)
        }));
    }
    Writers { stop, handles }
}

impl Writers {
    async fn finish(self) -> (Acked, Duration, u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = Acked::new();
        let (mut longest, mut refused, mut reads) = (Duration::ZERO, 0, 0);
        for h in self.handles {
            let (acked, l, r, n) = h.await.expect("writer");
            all.extend(acked);
            longest = longest.max(l);
            refused += r;
            reads += n;
        }
        (all, longest, refused, reads)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tenant_moved_while_eight_clients_write_loses_nothing_acknowledged() {
    let (source, target) = (cell().await, cell().await);
    let (moving, bystander, resident) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let owner = seed(&source, moving, "moving", 3_000).await;
    seed(&source, bystander, "bystander", 500).await;
    seed(&target, resident, "resident", 500).await;
    let before = counts(&source, moving).await;
    let bystander_before = (
        counts(&source, bystander).await,
        posts_of(&source, bystander).await,
    );
    let resident_before = (
        counts(&target, resident).await,
        posts_of(&target, resident).await,
    );

    let fence = TestFence::new();
    let writers = start_writers(&source.db, &target.db, &fence, moving, owner);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let phases = std::sync::Mutex::new(Vec::new());
    let report = moving::move_tenant(&source.db, &target.db, moving, &fence, |p: MoveProgress| {
        let mut phases = phases.lock().expect("phases");
        if phases.last() != Some(&p.phase) {
            phases.push(p.phase);
        }
    })
    .await
    .expect("move");
    // Writers go on against the target for a while.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (acked, longest, refused, reads) = writers.finish().await;
    eprintln!(
        "moved {} rows, {} changes applied, {} purged; write pause {:?}; longest write seen by a \
         client {:?}; {} writes acknowledged, {} refused, {} reads; took {:?}",
        report.rows_copied,
        report.changes_applied,
        report.rows_purged,
        report.write_pause,
        longest,
        acked.len(),
        refused,
        reads,
        report.duration
    );
    assert_eq!(
        *phases.lock().expect("phases"),
        [
            MovePhase::Copying,
            MovePhase::CatchingUp,
            MovePhase::Flipping,
            MovePhase::Flipped,
            MovePhase::Done
        ]
    );
    assert_eq!(fence.flips.load(Ordering::SeqCst), 1);
    assert!(
        report.changes_applied > 0,
        "writes during the copy were caught up"
    );
    assert!(
        acked.len() > 100,
        "the clients wrote throughout: {}",
        acked.len()
    );

    // Every acknowledged write is in the target, as acknowledged.
    let there = posts_of(&target, moving).await;
    for (id, content) in &acked {
        assert_eq!(there.get(id), content.as_ref(), "post {id}");
    }
    // The seeded rows all moved, with their comments, likes, deltas, events
    // and job; the posts differ by what the clients wrote.
    let after = counts(&target, moving).await;
    for (table, n) in &before {
        if table != "posts" {
            assert_eq!(after.get(table), Some(n), "{table}");
        }
    }
    let written: i64 = acked.values().filter(|c| c.is_some()).count() as i64;
    assert_eq!(after["posts"], before["posts"] + written);

    // The old database holds none of its rows; nobody else's moved or went.
    assert_eq!(total(&counts(&source, moving).await), 0);
    assert_eq!(
        (
            counts(&source, bystander).await,
            posts_of(&source, bystander).await
        ),
        bystander_before
    );
    assert_eq!(
        (
            counts(&target, resident).await,
            posts_of(&target, resident).await
        ),
        resident_before
    );
    assert_eq!(total(&counts(&target, bystander).await), 0);
    // No trigger left behind, no change log, and the move recorded as done.
    assert_eq!(move_triggers(&source).await, 0);
    assert_eq!(move_triggers(&target).await, 0);
    let log: i64 = source
        .fresh
        .connect()
        .await
        .query_one("SELECT count(*) FROM tenant_changes", &[])
        .await
        .expect("log")
        .get(0);
    assert_eq!(log, 0);
    let moves = moving::moves_of(&source.db, moving).await.expect("moves");
    assert_eq!(moves.len(), 1);
    assert_eq!(moves[0].phase, MovePhase::Done);
    // The identity sequence went past the moved counter deltas.
    target
        .fresh
        .connect()
        .await
        .batch_execute(&format!(
            "INSERT INTO post_counter_deltas (tenant_id, post_id, user_id, likes)
             SELECT tenant_id, post_id, user_id, 1 FROM post_counter_deltas
              WHERE tenant_id = '{moving}' LIMIT 3"
        ))
        .await
        .expect("new deltas in the target");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_stopped_during_the_copy_is_resumed_to_one_full_copy() {
    let (source, target) = (cell().await, cell().await);
    let moving = Uuid::now_v7();
    let owner = seed(&source, moving, "moving", 2_000).await;
    let before = counts(&source, moving).await;
    let fence = TestFence::new();

    // Stopped as soon as the copy reaches the posts: its transaction on the
    // target is rolled back with its connection.
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let tx = std::sync::Mutex::new(Some(tx));
    let stopped = tokio::select! {
        r = moving::move_tenant(&source.db, &target.db, moving, &fence, |p: MoveProgress| {
            if p.table.as_deref() == Some("posts")
                && let Some(tx) = tx.lock().expect("tx").take()
            {
                let _ = tx.send(());
            }
        }) => Some(r),
        _ = rx => None,
    };
    assert!(stopped.is_none(), "the move was stopped midway");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        total(&counts(&target, moving).await),
        0,
        "nothing half-copied"
    );
    assert_eq!(
        counts(&source, moving).await,
        before,
        "the source still serves"
    );

    // The tenant goes on being written in the source meanwhile.
    source
        .fresh
        .connect()
        .await
        .batch_execute(&format!(
            "INSERT INTO posts (tenant_id, id, author_id, content)
             VALUES ('{moving}', gen_random_uuid(), '{owner}', 'after the stop')"
        ))
        .await
        .expect("a write while stopped");

    let report = moving::move_tenant(&source.db, &target.db, moving, &fence, |_| {})
        .await
        .expect("resumed");
    assert_eq!(report.resumed_from, Some(MovePhase::Copying));
    let mut expected = before.clone();
    *expected.get_mut("posts").expect("posts") += 1;
    assert_eq!(counts(&target, moving).await, expected);
    assert_eq!(total(&counts(&source, moving).await), 0);
    assert_eq!(move_triggers(&source).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_stopped_at_the_switch_refuses_writes_to_the_old_copy_until_resumed() {
    let (source, target) = (cell().await, cell().await);
    let moving = Uuid::now_v7();
    let owner = seed(&source, moving, "moving", 500).await;
    let before = counts(&source, moving).await;

    // Stuck while the caller flips: the source is frozen for the tenant.
    let mover = {
        let (s, t) = (source.db.clone(), target.db.clone());
        tokio::spawn(async move {
            let stuck = StuckFence(TestFence::new());
            moving::move_tenant(&s, &t, moving, &stuck, |_| {}).await
        })
    };
    let started = Instant::now();
    while moving::active_move(&source.db, moving)
        .await
        .expect("record")
        .is_none_or(|r| r.phase != MovePhase::Flipping)
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the move reaches the flip"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A second mover meanwhile is refused, and changes nothing.
    let second = moving::move_tenant(&source.db, &target.db, moving, &TestFence::new(), |_| {})
        .await
        .expect_err("one mover at a time");
    assert!(matches!(second, DbError::Busy(_)), "{second:?}");
    // The stuck one is stopped (its future dropped, its connections closed).
    mover.abort();
    let _ = mover.await;

    // A write of the tenant to the source now fails rather than being lost.
    let mut tx = source
        .db
        .begin(&TenantContext::tenant(moving, 5_000))
        .await
        .expect("begin");
    let refused = tx
        .execute(
            "INSERT INTO posts (tenant_id, id, author_id, content) VALUES ($1, $2, $3, 'late')",
            &[&moving, &Uuid::now_v7(), &owner],
        )
        .await;
    assert!(matches!(refused, Err(DbError::Busy(_))), "{refused:?}");
    drop(tx);

    // Resumed, once the stopped mover's connection (and its lock) is gone.
    let fence = TestFence::new();
    let report = loop {
        match moving::move_tenant(&source.db, &target.db, moving, &fence, |_| {}).await {
            Err(DbError::Busy(_)) if started.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => break other.expect("resumed"),
        }
    };
    assert_eq!(report.resumed_from, Some(MovePhase::Flipping));
    assert_eq!(fence.flips.load(Ordering::SeqCst), 1);
    assert_eq!(counts(&target, moving).await, before);
    assert_eq!(total(&counts(&source, moving).await), 0);
    assert_eq!(move_triggers(&source).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_move_leaves_the_tenant_whole_in_the_source_only() {
    let (source, target) = (cell().await, cell().await);
    let moving = Uuid::now_v7();
    let owner = seed(&source, moving, "moving", 500).await;

    // Stopped after the copy, while catching up.
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let tx = std::sync::Mutex::new(Some(tx));
    let fence = TestFence::new();
    let stopped = tokio::select! {
        r = moving::move_tenant(&source.db, &target.db, moving, &fence, |p: MoveProgress| {
            if p.phase == MovePhase::CatchingUp
                && let Some(tx) = tx.lock().expect("tx").take()
            {
                let _ = tx.send(());
            }
        }) => Some(r),
        _ = rx => None,
    };
    assert!(stopped.is_none());
    assert!(
        total(&counts(&target, moving).await) > 0,
        "the copy was made"
    );
    source
        .fresh
        .connect()
        .await
        .batch_execute(&format!(
            "INSERT INTO posts (tenant_id, id, author_id, content)
             VALUES ('{moving}', gen_random_uuid(), '{owner}', 'after the stop')"
        ))
        .await
        .expect("a write while stopped");
    let before = counts(&source, moving).await;

    let aborted = moving::abort_move(&source.db, &target.db, moving)
        .await
        .expect("abort")
        .expect("there was a move");
    assert_eq!(aborted.phase, MovePhase::Aborted);
    assert_eq!(total(&counts(&target, moving).await), 0);
    assert_eq!(counts(&source, moving).await, before);
    assert_eq!(move_triggers(&source).await, 0);
    assert_eq!(move_triggers(&target).await, 0);
    // The source is writable, and logs nothing any more.
    let client = source.fresh.connect().await;
    client
        .batch_execute(&format!(
            "INSERT INTO posts (tenant_id, id, author_id, content)
             VALUES ('{moving}', gen_random_uuid(), '{owner}', 'after the abort')"
        ))
        .await
        .expect("writable");
    let log: i64 = client
        .query_one("SELECT count(*) FROM tenant_changes", &[])
        .await
        .expect("log")
        .get(0);
    assert_eq!(log, 0);
    assert!(
        moving::abort_move(&source.db, &target.db, moving)
            .await
            .expect("abort again")
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_moves_there_and_back_and_other_tenants_writes_are_not_logged() {
    let (a, b) = (cell().await, cell().await);
    let (moving, bystander) = (Uuid::now_v7(), Uuid::now_v7());
    seed(&a, moving, "moving", 300).await;
    let other_owner = seed(&a, bystander, "bystander", 100).await;
    let before = counts(&a, moving).await;

    // Stopped while catching up, with the capture in place: a bystander's
    // write is not logged, the moving tenant's is.
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let tx = std::sync::Mutex::new(Some(tx));
    let fence = TestFence::new();
    let stopped = tokio::select! {
        r = moving::move_tenant(&a.db, &b.db, moving, &fence, |p: MoveProgress| {
            if p.phase == MovePhase::CatchingUp
                && let Some(tx) = tx.lock().expect("tx").take()
            {
                let _ = tx.send(());
            }
        }) => Some(r),
        _ = rx => None,
    };
    assert!(stopped.is_none());
    let client = a.fresh.connect().await;
    let owner: Uuid = client
        .query_one(
            "SELECT owner_user_id FROM tenants WHERE id = $1",
            &[&moving],
        )
        .await
        .expect("owner")
        .get(0);
    client
        .batch_execute(&format!(
            "INSERT INTO posts (tenant_id, id, author_id, content)
             VALUES ('{bystander}', gen_random_uuid(), '{other_owner}', 'not moving'),
                    ('{moving}', gen_random_uuid(), '{owner}', 'moving');
             UPDATE posts SET content = 'edited' WHERE tenant_id = '{bystander}'"
        ))
        .await
        .expect("writes while moving");
    let logged: Vec<(Uuid, String)> = client
        .query("SELECT of_tenant, tbl FROM tenant_changes", &[])
        .await
        .expect("log")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(logged, [(moving, "posts".to_owned())]);
    let mut before = before;
    *before.get_mut("posts").expect("posts") += 1;

    let report = moving::move_tenant(&a.db, &b.db, moving, &TestFence::new(), |_| {})
        .await
        .expect("there");
    assert_eq!(report.resumed_from, Some(MovePhase::CatchingUp));
    assert_eq!(counts(&b, moving).await, before);

    // Moving it again where it already is would overwrite it: refused.
    let again = moving::move_tenant(&a.db, &b.db, moving, &TestFence::new(), |_| {}).await;
    let message = again.expect_err("refused").to_string();
    assert!(message.contains("already holds rows"), "{message}");
    assert_eq!(counts(&b, moving).await, before);

    // And back: the tenant's record is already there, the old triggers gone.
    let fence = TestFence::new();
    let report = moving::move_tenant(&b.db, &a.db, moving, &fence, |_| {})
        .await
        .expect("back");
    assert_eq!(report.resumed_from, None);
    assert_eq!(counts(&a, moving).await, before);
    assert_eq!(total(&counts(&b, moving).await), 0);
    assert_eq!(move_triggers(&a).await, 0);
    assert_eq!(move_triggers(&b).await, 0);
    assert_eq!(
        moving::moves_of(&a.db, moving).await.expect("moves").len(),
        1
    );
    assert_eq!(
        moving::moves_of(&b.db, moving).await.expect("moves").len(),
        1
    );
}

/// Not a test of its own: the child process that the kill -9 tests start
/// (this test binary again, with `TENANTRY_MOVE_CHILD` set). It moves a
/// tenant and prints each phase and table as the move reaches it; with
/// `stop=flip` its fence never finishes flipping. Without the variable it
/// does nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_child_process() {
    use std::io::Write as _;
    let Ok(spec) = std::env::var("TENANTRY_MOVE_CHILD") else {
        return;
    };
    let parts: Vec<&str> = spec.split('|').collect();
    let (source, target) = (
        Db::connect(parts[0], &DbOptions::default()).expect("source"),
        Db::connect(parts[1], &DbOptions::default()).expect("target"),
    );
    let tenant: Uuid = parts[2].parse().expect("tenant");
    let say = |line: String| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    };
    let progress = |p: MoveProgress| {
        say(format!(
            "progress {} {}",
            p.phase.as_str(),
            p.table.as_deref().unwrap_or("-")
        ))
    };
    let result = if parts[3] == "flip" {
        struct SayingStuck;
        impl Fence for SayingStuck {
            async fn hold(&self) -> Result<(), DbError> {
                Ok(())
            }
            async fn flip(&self) -> Result<(), DbError> {
                println!("flipping");
                let _ = std::io::Write::flush(&mut std::io::stdout());
                std::future::pending().await
            }
            async fn release(&self) {}
        }
        moving::move_tenant(&source, &target, tenant, &SayingStuck, progress).await
    } else {
        moving::move_tenant(&source, &target, tenant, &TestFence::new(), progress).await
    };
    say(format!("finished {:?}", result.map(|r| r.rows_copied)));
}

/// Starts the child mover and kills it (SIGKILL) at the first line of its
/// output that `stop_at` accepts.
async fn kill_mover_at(
    source: &Cell,
    target: &Cell,
    tenant: Uuid,
    mode: &str,
    stop_at: impl Fn(&str) -> bool,
) {
    use tokio::io::AsyncBufReadExt as _;
    let mut child = tokio::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["move_child_process", "--exact", "--nocapture"])
        .env(
            "TENANTRY_MOVE_CHILD",
            format!("{}|{}|{tenant}|{mode}", source.fresh.url, target.fresh.url),
        )
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the mover");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut seen = Vec::new();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("the mover goes on")
            .expect("read the mover")
            .unwrap_or_else(|| panic!("the mover ended before the stop: {seen:?}"));
        if stop_at(&line) {
            break;
        }
        assert!(!line.starts_with("finished"), "{line}; {seen:?}");
        seen.push(line);
    }
    let pid = child.id().expect("a running mover") as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9");
    child.wait().await.expect("reaped");
    // PostgreSQL ends a dead client's backends only when it next touches
    // their sockets: until then the mover's session lock stands and an
    // abort or a resume is refused as "being moved by another process".
    // Wait for the source's advisory locks to go, as an operator would see.
    let client = source.fresh.connect().await;
    for _ in 0..100 {
        let held: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database
                 WHERE l.locktype = 'advisory' AND d.datname = current_database()",
                &[],
            )
            .await
            .expect("read the locks")
            .get(0);
        if held == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the killed mover's lock outlived it by 5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mover_killed_during_the_copy_leaves_the_source_serving_and_the_move_resumable() {
    let (source, target) = (cell().await, cell().await);
    let moving = Uuid::now_v7();
    seed(&source, moving, "moving", 5_000).await;
    let before = counts(&source, moving).await;

    kill_mover_at(&source, &target, moving, "copy", |l| {
        l == "progress copying posts"
    })
    .await;
    // The copy's transaction died with the process: nothing in the target,
    // the source whole and writable, the move recorded as copying.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(total(&counts(&target, moving).await), 0);
    assert_eq!(counts(&source, moving).await, before);
    let record = moving::active_move(&source.db, moving)
        .await
        .expect("record")
        .expect("an unfinished move");
    assert_eq!(record.phase, MovePhase::Copying);

    let report = moving::move_tenant(&source.db, &target.db, moving, &TestFence::new(), |_| {})
        .await
        .expect("resumed");
    assert_eq!(report.resumed_from, Some(MovePhase::Copying));
    assert_eq!(counts(&target, moving).await, before);
    assert_eq!(total(&counts(&source, moving).await), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mover_killed_at_the_switch_leaves_one_copy_serving_and_is_rolled_back() {
    let (source, target) = (cell().await, cell().await);
    let moving = Uuid::now_v7();
    let owner = seed(&source, moving, "moving", 500).await;
    let before = counts(&source, moving).await;

    kill_mover_at(&source, &target, moving, "flip", |l| l == "flipping").await;
    let record = moving::active_move(&source.db, moving)
        .await
        .expect("record")
        .expect("an unfinished move");
    assert_eq!(record.phase, MovePhase::Flipping);
    // The directory never flipped: rolled back, the source serves alone and
    // takes writes again.
    moving::abort_move(&source.db, &target.db, moving)
        .await
        .expect("abort")
        .expect("a move to abort");
    assert_eq!(total(&counts(&target, moving).await), 0);
    assert_eq!(counts(&source, moving).await, before);
    let mut tx = source
        .db
        .begin(&TenantContext::tenant(moving, 5_000))
        .await
        .expect("begin");
    tx.execute(
        "INSERT INTO posts (tenant_id, id, author_id, content) VALUES ($1, $2, $3, 'after')",
        &[&moving, &Uuid::now_v7(), &owner],
    )
    .await
    .expect("the source takes writes again");
    tx.commit().await.expect("commit");
    assert_eq!(move_triggers(&source).await, 0);
    assert_eq!(move_triggers(&target).await, 0);
}
