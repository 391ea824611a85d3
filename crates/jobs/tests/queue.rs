//! The job queue against a real PostgreSQL: transactional enqueue,
//! idempotency, tenant-fair claims, leases, retries and dead letters, and the
//! announcement fan-out's exactly-once delivery.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use tenantry_db::testing::FreshDatabase;
use tenantry_db::{Db, DbOptions, TenantContext};
use tenantry_jobs::announcements::{self, FanOut};
use tenantry_jobs::queue::{self, NewJob};
use tenantry_jobs::vacuum::{self, VacuumPolicy};
use tenantry_jobs::{Done, Handler, Job, JobContext, JobError, Registry, Worker, WorkerConfig};
use uuid::Uuid;

struct Fixture {
    db: Db,
    fresh: FreshDatabase,
}

async fn fixture() -> Fixture {
    let fresh = FreshDatabase::migrated().await;
    let db = Db::connect(&fresh.url, &DbOptions::default()).expect("pool");
    tenantry_db::migrate::migrate(&db).await.expect("migrate");
    Fixture { db, fresh }
}

impl Fixture {
    /// Creates `n` tenants; returns their ids in ascending order.
    async fn tenants(&self, n: usize) -> Vec<Uuid> {
        let raw = self.fresh.connect().await;
        let mut ids: Vec<Uuid> = (0..n).map(|_| Uuid::new_v4()).collect();
        ids.sort();
        for id in &ids {
            raw.execute(
                "INSERT INTO tenants (id, slug, name, tier, owner_user_id)
                 VALUES ($1, $2, 'T', 'free', $1)",
                &[id, &format!("t{}", id.simple())],
            )
            .await
            .expect("tenant");
        }
        ids
    }

    async fn enqueue(&self, tenant: Uuid, job: NewJob) -> Uuid {
        let mut tx = self
            .db
            .begin(&TenantContext::tenant(tenant, 5_000))
            .await
            .expect("begin");
        let e = queue::enqueue(&mut tx, tenant, &job)
            .await
            .expect("enqueue");
        tx.commit().await.expect("commit");
        e.id
    }

    async fn enqueue_n(&self, tenant: Uuid, n: usize, kind: &str) {
        let jobs: Vec<(Uuid, NewJob)> = (0..n)
            .map(|i| (tenant, NewJob::new(kind, json!({ "i": i }))))
            .collect();
        let mut tx = self
            .db
            .begin(&TenantContext::tenant(tenant, 5_000))
            .await
            .expect("begin");
        queue::enqueue_many(&mut tx, &jobs).await.expect("enqueue");
        tx.commit().await.expect("commit");
    }

    /// The job's state and attempts; `None` once it completed (a completed
    /// job is deleted).
    async fn job_state(&self, id: Uuid) -> Option<(String, i32)> {
        let raw = self.fresh.connect().await;
        let row = raw
            .query_opt("SELECT state, attempts FROM jobs WHERE id = $1", &[&id])
            .await
            .expect("job");
        row.map(|r| (r.get(0), r.get(1)))
    }
}

/// Counts runs by job id; completes every job.
#[derive(Default, Clone)]
struct Counting {
    runs: Arc<std::sync::Mutex<HashMap<Uuid, usize>>>,
}

#[async_trait]
impl Handler for Counting {
    async fn run(&self, job: &Job, _ctx: &JobContext) -> Result<Done, JobError> {
        *self.runs.lock().expect("lock").entry(job.id).or_default() += 1;
        Ok(Done::Completed)
    }
}

struct AlwaysFails(Arc<AtomicUsize>);

#[async_trait]
impl Handler for AlwaysFails {
    async fn run(&self, _job: &Job, _ctx: &JobContext) -> Result<Done, JobError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Err(JobError::Failed(anyhow::anyhow!("the thing is broken")))
    }
}

fn config(batch: i64) -> WorkerConfig {
    WorkerConfig {
        batch_size: batch,
        rescue_every: Duration::ZERO,
        ..WorkerConfig::default()
    }
}

#[tokio::test]
async fn a_job_exists_only_if_its_transaction_commits() {
    let f = fixture().await;
    let [t] = f.tenants(1).await[..] else {
        unreachable!()
    };
    let mut tx =
        f.db.begin(&TenantContext::tenant(t, 5_000))
            .await
            .expect("begin");
    queue::enqueue(&mut tx, t, &NewJob::new("noop", json!({})))
        .await
        .expect("enqueue");
    drop(tx); // rolled back
    let raw = f.fresh.connect().await;
    // Let the rollback (spawned by Drop) land.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let n: i64 = raw
        .query_one("SELECT count(*) FROM jobs", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 0);
    f.enqueue(t, NewJob::new("noop", json!({}))).await;
    let n: i64 = raw
        .query_one("SELECT count(*) FROM jobs", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 1);
}

#[tokio::test]
async fn an_idempotency_key_names_one_job() {
    let f = fixture().await;
    let [t] = f.tenants(1).await[..] else {
        unreachable!()
    };
    let first = f
        .enqueue(t, NewJob::new("noop", json!({})).idempotency_key("k1"))
        .await;
    let mut tx =
        f.db.begin(&TenantContext::tenant(t, 5_000))
            .await
            .expect("begin");
    let again = queue::enqueue(
        &mut tx,
        t,
        &NewJob::new("noop", json!({})).idempotency_key("k1"),
    )
    .await
    .expect("enqueue");
    tx.commit().await.expect("commit");
    assert_eq!(again.id, first);
    assert!(!again.created);

    // The key still names its job after the job ran and left the queue.
    let worker = Worker::new(
        f.db.clone(),
        Registry::new().register("noop", Counting::default()),
        config(10),
    );
    assert_eq!(worker.run_one_batch().await.expect("batch").completed, 1);
    assert_eq!(f.job_state(first).await, None);
    let mut tx =
        f.db.begin(&TenantContext::tenant(t, 5_000))
            .await
            .expect("begin");
    let many = queue::enqueue_many(
        &mut tx,
        &[
            (t, NewJob::new("noop", json!({})).idempotency_key("k1")),
            (t, NewJob::new("noop", json!({})).idempotency_key("k2")),
            (t, NewJob::new("noop", json!({})).idempotency_key("k2")),
        ],
    )
    .await
    .expect("enqueue many");
    let after = queue::enqueue(
        &mut tx,
        t,
        &NewJob::new("noop", json!({})).idempotency_key("k1"),
    )
    .await
    .expect("enqueue");
    tx.commit().await.expect("commit");
    assert_eq!(many, 1, "only k2 is new, and only once");
    assert_eq!(after.id, first);
    assert!(!after.created);
}

#[tokio::test]
async fn a_tenant_with_a_big_backlog_does_not_delay_another_tenants_next_job() {
    let f = fixture().await;
    let tenants = f.tenants(3).await;
    let (big, small, tiny) = (tenants[0], tenants[1], tenants[2]);
    f.enqueue_n(big, 2_000, "noop").await;
    f.enqueue_n(small, 3, "noop").await;
    let tiny_job = f.enqueue(tiny, NewJob::new("noop", json!({}))).await;

    // Six slots for three tenants: two each at most, round by round.
    let claimed = queue::claim(
        &f.db,
        queue::FIRST_CURSOR,
        6,
        Duration::from_secs(30),
        "test",
    )
    .await
    .expect("claim");
    let order: Vec<Uuid> = claimed.jobs.iter().map(|j| j.tenant_id).collect();
    assert_eq!(order, vec![big, small, tiny, big, small]);
    assert_eq!(claimed.jobs[2].id, tiny_job);
    assert_eq!(claimed.tenants_seen, 3);
}

#[tokio::test]
async fn more_tenants_than_a_batch_are_served_in_rotation() {
    let f = fixture().await;
    let tenants = f.tenants(5).await;
    for t in &tenants {
        f.enqueue_n(*t, 10, "noop").await;
    }
    let counting = Counting::default();
    let worker = Worker::new(
        f.db.clone(),
        Registry::new().register("noop", counting.clone()),
        config(2),
    );
    // Batches of two, walking down the tenant ids: tenants 5-4, then 3-2,
    // then 1 (alone below the cursor, it gets both slots), then 5-4 again.
    let mut served = Vec::new();
    for _ in 0..4 {
        let before: usize = counting.runs.lock().expect("lock").len();
        let report = worker.run_one_batch().await.expect("batch");
        served.push(report.claimed);
        assert_eq!(
            counting.runs.lock().expect("lock").len(),
            before + report.claimed
        );
    }
    assert_eq!(served, vec![2, 2, 2, 2]);
    let raw = f.fresh.connect().await;
    // Completed jobs are deleted: ten were queued per tenant.
    let rows = raw
        .query(
            "SELECT tenant_id, 10 - count(*) FROM jobs GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await
        .expect("done");
    let done: Vec<(Uuid, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        done,
        vec![
            (tenants[0], 2),
            (tenants[1], 1),
            (tenants[2], 1),
            (tenants[3], 2),
            (tenants[4], 2)
        ]
    );
}

#[tokio::test]
async fn higher_priority_jobs_of_a_tenant_run_first() {
    let f = fixture().await;
    let [t] = f.tenants(1).await[..] else {
        unreachable!()
    };
    f.enqueue_n(t, 5, "noop").await;
    let urgent = f
        .enqueue(t, NewJob::new("noop", json!({})).priority(10))
        .await;
    let claimed = queue::claim(
        &f.db,
        queue::FIRST_CURSOR,
        1,
        Duration::from_secs(30),
        "test",
    )
    .await
    .expect("claim");
    assert_eq!(claimed.jobs[0].id, urgent);
}

#[tokio::test]
async fn an_abandoned_lease_is_claimed_again_and_the_job_completes_once() {
    let f = fixture().await;
    let [t] = f.tenants(1).await[..] else {
        unreachable!()
    };
    let id = f.enqueue(t, NewJob::new("noop", json!({}))).await;
    // A worker claims the job and dies without finishing it.
    let stale = queue::claim(
        &f.db,
        queue::FIRST_CURSOR,
        10,
        Duration::from_secs(30),
        "dead",
    )
    .await
    .expect("claim");
    assert_eq!(stale.jobs.len(), 1);
    let counting = Counting::default();
    let worker = Worker::new(
        f.db.clone(),
        Registry::new().register("noop", counting.clone()),
        config(10),
    );
    // While its lease holds, nobody else gets the job.
    assert_eq!(worker.run_one_batch().await.expect("batch").claimed, 0);
    // The lease runs out.
    f.fresh
        .connect()
        .await
        .execute(
            "UPDATE jobs SET run_at = now() - interval '1 second' WHERE id = $1",
            &[&id],
        )
        .await
        .expect("expire");
    let report = worker.run_one_batch().await.expect("batch");
    assert_eq!((report.claimed, report.completed), (1, 1));
    assert_eq!(f.job_state(id).await, None, "completed");
    // The dead worker comes back and tries to finish: fenced off.
    assert_eq!(
        queue::complete(&f.db, &[&stale.jobs[0]])
            .await
            .expect("complete"),
        0
    );
    assert_eq!(worker.run_one_batch().await.expect("batch").claimed, 0);
    assert_eq!(counting.runs.lock().expect("lock").get(&id), Some(&1));
}

#[tokio::test]
async fn a_worker_whose_lease_ran_out_cannot_complete_the_job_another_worker_holds() {
    let f = fixture().await;
    let [t] = f.tenants(1).await[..] else {
        unreachable!()
    };
    let id = f.enqueue(t, NewJob::new("noop", json!({}))).await;
    let lease = Duration::from_secs(30);
    let stale = queue::claim(&f.db, queue::FIRST_CURSOR, 10, lease, "slow")
        .await
        .expect("claim");
    f.fresh
        .connect()
        .await
        .execute(
            "UPDATE jobs SET run_at = now() - interval '1 second' WHERE id = $1",
            &[&id],
        )
        .await
        .expect("expire");
    // The next claim rescues the job and takes it, as attempt 2.
    let fresh = queue::claim(&f.db, queue::FIRST_CURSOR, 10, lease, "alive")
        .await
        .expect("claim");
    assert_eq!(fresh.jobs.len(), 1);
    assert_eq!((fresh.jobs[0].id, fresh.jobs[0].attempt), (id, 2));
    assert_eq!(
        queue::complete(&f.db, &[&stale.jobs[0]])
            .await
            .expect("complete"),
        0,
        "attempt 1 is fenced off"
    );
    assert_eq!(f.job_state(id).await, Some(("running".to_owned(), 2)));
    assert_eq!(
        queue::complete(&f.db, &[&fresh.jobs[0]])
            .await
            .expect("complete"),
        1
    );
    assert_eq!(f.job_state(id).await, None);
}

#[tokio::test]
async fn a_lease_that_runs_out_on_the_last_attempt_makes_a_dead_letter() {
    let f = fixture().await;
    let [t] = f.tenants(1).await[..] else {
        unreachable!()
    };
    let id = f
        .enqueue(t, NewJob::new("noop", json!({})).max_attempts(1))
        .await;
    let lease = Duration::from_secs(30);
    let first = queue::claim(&f.db, queue::FIRST_CURSOR, 10, lease, "gone")
        .await
        .expect("claim");
    assert_eq!(first.jobs.len(), 1);
    f.fresh
        .connect()
        .await
        .execute(
            "UPDATE jobs SET run_at = now() - interval '1 second' WHERE id = $1",
            &[&id],
        )
        .await
        .expect("expire");
    let again = queue::claim(&f.db, queue::FIRST_CURSOR, 10, lease, "next")
        .await
        .expect("claim");
    assert!(again.jobs.is_empty());
    assert_eq!(again.expired_dead, 1);
    assert_eq!(f.job_state(id).await, Some(("dead".to_owned(), 1)));
    let dead = queue::dead_letters(&f.db, 10).await.expect("dead");
    assert_eq!(
        dead[0].last_error.as_deref(),
        Some("lease expired on the last attempt")
    );
}

#[tokio::test]
async fn failing_jobs_back_off_then_become_dead_letters_that_can_be_retried() {
    let f = fixture().await;
    let [t] = f.tenants(1).await[..] else {
        unreachable!()
    };
    let id = f
        .enqueue(t, NewJob::new("broken", json!({})).max_attempts(2))
        .await;
    let runs = Arc::new(AtomicUsize::new(0));
    let worker = Worker::new(
        f.db.clone(),
        Registry::new().register("broken", AlwaysFails(runs.clone())),
        config(10),
    );
    let report = worker.run_one_batch().await.expect("batch");
    assert_eq!((report.failed, report.dead), (1, 0));
    let raw = f.fresh.connect().await;
    let row = raw
        .query_one(
            "SELECT state, run_at > now(), last_error FROM jobs WHERE id = $1",
            &[&id],
        )
        .await
        .expect("job");
    assert_eq!(row.get::<_, String>(0), "ready");
    assert!(row.get::<_, bool>(1), "the retry waits for its backoff");
    assert!(row.get::<_, String>(2).contains("broken"));
    // Not due yet: nothing to claim.
    assert_eq!(worker.run_one_batch().await.expect("batch").claimed, 0);
    raw.execute("UPDATE jobs SET run_at = now() WHERE id = $1", &[&id])
        .await
        .expect("due");
    let report = worker.run_one_batch().await.expect("batch");
    assert_eq!((report.failed, report.dead), (1, 1));
    assert_eq!(f.job_state(id).await, Some(("dead".to_owned(), 2)));
    assert_eq!(runs.load(Ordering::SeqCst), 2);

    let dead = queue::dead_letters(&f.db, 10).await.expect("dead");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, id);
    assert!(queue::retry_dead(&f.db, id).await.expect("retry"));
    assert_eq!(f.job_state(id).await, Some(("ready".to_owned(), 0)));
    assert!(!queue::retry_dead(&f.db, id).await.expect("not dead now"));
    worker.run_one_batch().await.expect("batch");
    raw.execute("UPDATE jobs SET run_at = now() WHERE id = $1", &[&id])
        .await
        .expect("due");
    worker.run_one_batch().await.expect("batch");
    assert!(queue::discard_dead(&f.db, id).await.expect("discard"));
    assert_eq!(
        raw.query_one("SELECT count(*) FROM jobs", &[])
            .await
            .expect("count")
            .get::<_, i64>(0),
        0
    );
}

#[tokio::test]
async fn a_job_of_an_unknown_kind_fails_instead_of_stalling_the_worker() {
    let f = fixture().await;
    let [t] = f.tenants(1).await[..] else {
        unreachable!()
    };
    let id = f
        .enqueue(t, NewJob::new("mystery", json!({})).max_attempts(1))
        .await;
    let worker = Worker::new(f.db.clone(), Registry::new(), config(10));
    let report = worker.run_one_batch().await.expect("batch");
    assert_eq!(report.dead, 1);
    assert_eq!(f.job_state(id).await.expect("job").0, "dead");
}

/// Members `n` of tenant `t`; returns their ids.
async fn members(f: &Fixture, t: Uuid, n: usize) -> Vec<Uuid> {
    let raw = f.fresh.connect().await;
    let ids: Vec<Uuid> = (0..n).map(|_| Uuid::new_v4()).collect();
    raw.execute("INSERT INTO users (id) SELECT unnest($1::uuid[])", &[&ids])
        .await
        .expect("users");
    raw.execute(
        "INSERT INTO memberships (tenant_id, user_id, role)
         SELECT $1, unnest($2::uuid[]), 'member'",
        &[&t, &ids],
    )
    .await
    .expect("members");
    ids
}

#[tokio::test]
async fn a_fan_out_whose_worker_dies_mid_way_notifies_each_member_exactly_once() {
    let f = fixture().await;
    let [t] = f.tenants(1).await[..] else {
        unreachable!()
    };
    let users = members(&f, t, 25).await;
    // One member turned announcements off.
    let raw = f.fresh.connect().await;
    raw.execute(
        "UPDATE memberships SET notification_prefs = '{\"announcements\": false}'
         WHERE tenant_id = $1 AND user_id = $2",
        &[&t, &users[7]],
    )
    .await
    .expect("prefs");
    let mut tx =
        f.db.begin(&TenantContext::tenant(t, 5_000))
            .await
            .expect("begin");
    let a = announcements::create(&mut tx, t, users[0], "Hello", "Welcome all")
        .await
        .expect("announce");
    tx.commit().await.expect("commit");

    // A worker claims the fan-out, commits one chunk of ten, and dies.
    let fanout = FanOut { chunk: 10 };
    let ctx = JobContext {
        db: f.db.clone(),
        lease: Duration::from_secs(30),
    };
    let stale = queue::claim(
        &f.db,
        queue::FIRST_CURSOR,
        1,
        Duration::from_secs(30),
        "dead",
    )
    .await
    .expect("claim");
    let job = &stale.jobs[0];
    let first = fanout
        .run_chunk(&ctx, job, Uuid::nil())
        .await
        .expect("chunk");
    assert!(first.last.is_some());
    let progress: serde_json::Value = raw
        .query_one("SELECT progress FROM jobs WHERE id = $1", &[&a.job_id])
        .await
        .expect("job")
        .get(0);
    assert!(progress["after"].is_string(), "{progress}");
    raw.execute(
        "UPDATE jobs SET run_at = now() - interval '1 second' WHERE id = $1",
        &[&a.job_id],
    )
    .await
    .expect("expire the lease");

    // Another worker re-claims it and finishes from the checkpoint.
    let worker = Worker::new(
        f.db.clone(),
        Registry::new().register(announcements::FANOUT, FanOut { chunk: 10 }),
        config(10),
    );
    let report = worker.run_one_batch().await.expect("batch");
    assert_eq!((report.claimed, report.completed), (1, 1));
    assert_eq!(f.job_state(a.job_id).await, None, "completed");

    // The dead worker wakes up and runs its next chunk: refused, nothing written.
    let late = fanout.run_chunk(&ctx, job, first.last.expect("last")).await;
    assert!(matches!(late, Err(JobError::LeaseLost)), "{late:?}");

    let rows = raw
        .query(
            "SELECT user_id, count(*) FROM notifications
             WHERE tenant_id = $1 AND announcement_id = $2 GROUP BY user_id",
            &[&t, &a.id],
        )
        .await
        .expect("notifications");
    assert_eq!(rows.len(), 24, "every member but the one who opted out");
    assert!(rows.iter().all(|r| r.get::<_, i64>(1) == 1));
    assert!(rows.iter().all(|r| r.get::<_, Uuid>(0) != users[7]));
}

#[tokio::test]
async fn the_same_notification_cannot_be_inserted_twice() {
    let f = fixture().await;
    let [t] = f.tenants(1).await[..] else {
        unreachable!()
    };
    let users = members(&f, t, 1).await;
    let raw = f.fresh.connect().await;
    let a = Uuid::new_v4();
    raw.execute(
        "INSERT INTO announcements (tenant_id, id, author_id, title, message, job_id)
         VALUES ($1, $2, $3, 't', 'm', $2)",
        &[&t, &a, &users[0]],
    )
    .await
    .expect("announcement");
    let insert =
        "INSERT INTO notifications (tenant_id, user_id, id, announcement_id, title, message)
                  VALUES ($1, $2, gen_random_uuid(), $3, 't', 'm')";
    raw.execute(insert, &[&t, &users[0], &a])
        .await
        .expect("first");
    let second = raw.execute(insert, &[&t, &users[0], &a]).await;
    let err = second.expect_err("a duplicate is refused");
    assert_eq!(
        err.as_db_error().map(|e| e.constraint()),
        Some(Some("notifications_once"))
    );
}

#[test]
fn backoff_doubles_with_jitter_and_stays_capped() {
    let config = WorkerConfig {
        base_backoff: Duration::from_secs(2),
        max_backoff: Duration::from_secs(60),
        ..WorkerConfig::default()
    };
    for _ in 0..100 {
        let first = tenantry_jobs::worker::backoff(&config, 1);
        assert!(first >= Duration::from_secs(1) && first <= Duration::from_secs(2));
        let third = tenantry_jobs::worker::backoff(&config, 3);
        assert!(third >= Duration::from_secs(4) && third <= Duration::from_secs(8));
        let late = tenantry_jobs::worker::backoff(&config, 40);
        assert!(late >= Duration::from_secs(30) && late <= Duration::from_secs(60));
    }
}

/// Vacuums of `jobs` run by someone other than autovacuum, and its dead
/// tuples, by PostgreSQL's statistics.
async fn vacuum_stats(f: &Fixture) -> (i64, i64) {
    let row = f
        .fresh
        .connect()
        .await
        .query_one(
            "SELECT vacuum_count, n_dead_tup FROM pg_stat_user_tables WHERE relid = 'jobs'::regclass",
            &[],
        )
        .await
        .expect("jobs statistics");
    (row.get(0), row.get(1))
}

/// A policy that finds `jobs` due at `min_dead` dead tuples, at once.
fn eager(min_dead: i64) -> VacuumPolicy {
    VacuumPolicy {
        min_dead,
        dead_ratio: 0.0,
        min_interval: Duration::ZERO,
        check_every: Duration::ZERO,
    }
}

/// Enqueues `n` no-op jobs for `t` and runs batches until none is left;
/// returns how many completed.
async fn churn(f: &Fixture, worker: &Worker, t: Uuid, n: usize) -> u64 {
    f.enqueue_n(t, n, "noop").await;
    let mut completed = 0;
    loop {
        let report = worker.run_one_batch().await.expect("batch");
        completed += report.completed;
        if report.claimed == 0 {
            return completed;
        }
    }
}

#[tokio::test]
async fn workers_vacuum_the_queue_table_once_its_dead_tuples_pass_the_threshold() {
    let f = fixture().await;
    let [t] = f.tenants(1).await[..] else {
        unreachable!()
    };
    let worker = Worker::new(
        f.db.clone(),
        Registry::new().register("noop", Counting::default()),
        WorkerConfig {
            vacuum: Some(eager(1)),
            ..config(20)
        },
    );
    assert_eq!(vacuum_stats(&f).await.0, 0, "nothing vacuumed jobs yet");

    // The dead-tuple count reaches the statistics a little after the
    // batches that made them, and the vacuum runs in the background: keep
    // churning until it shows, with a deadline far beyond what it takes.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut completed = 0;
    let vacuums = loop {
        completed += churn(&f, &worker, t, 50).await;
        let (vacuums, _) = vacuum_stats(&f).await;
        if vacuums > 0 || std::time::Instant::now() > deadline {
            break vacuums;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        vacuums > 0,
        "no vacuum of jobs after {completed} jobs went through"
    );
    assert_eq!(completed % 50, 0, "every job completed");
}

#[tokio::test]
async fn a_queue_table_with_few_dead_tuples_is_not_vacuumed() {
    let f = fixture().await;
    let [t] = f.tenants(1).await[..] else {
        unreachable!()
    };
    let worker = Worker::new(
        f.db.clone(),
        Registry::new().register("noop", Counting::default()),
        WorkerConfig {
            vacuum: None,
            ..config(20)
        },
    );
    assert_eq!(churn(&f, &worker, t, 100).await, 100);

    let outcome = vacuum::vacuum_if_due(&f.db, &VacuumPolicy::default())
        .await
        .expect("check");
    assert!(
        matches!(outcome, vacuum::Outcome::NotDue { .. }),
        "{outcome:?}"
    );
    assert_eq!(vacuum_stats(&f).await.0, 0);
}

#[tokio::test]
async fn only_one_worker_vacuums_the_queue_table_at_a_time() {
    let f = fixture().await;
    let other = f.fresh.connect().await;
    other
        .execute("SELECT pg_advisory_lock($1)", &[&vacuum::VACUUM_LOCK])
        .await
        .expect("lock");

    let outcome = vacuum::vacuum_if_due(&f.db, &eager(0))
        .await
        .expect("check");
    assert_eq!(outcome, vacuum::Outcome::Busy);
    assert_eq!(vacuum_stats(&f).await.0, 0);

    other
        .execute("SELECT pg_advisory_unlock($1)", &[&vacuum::VACUUM_LOCK])
        .await
        .expect("unlock");
    let outcome = vacuum::vacuum_if_due(&f.db, &eager(0))
        .await
        .expect("check");
    assert!(
        matches!(outcome, vacuum::Outcome::Vacuumed { .. }),
        "{outcome:?}"
    );
    assert_eq!(vacuum_stats(&f).await.0, 1);
}

#[tokio::test]
async fn a_role_that_may_not_vacuum_still_runs_the_queue() {
    let f = fixture().await;
    let [t] = f.tenants(1).await[..] else {
        unreachable!()
    };
    // The pool's sessions run as a role that owns nothing (as if the server
    // connected as another role than the one that migrated).
    let db = Db::connect(
        &format!("{} options='-c role=tenantry_worker'", f.fresh.url),
        &DbOptions::default(),
    )
    .expect("pool");
    let outcome = vacuum::vacuum_if_due(&db, &eager(0)).await.expect("check");
    assert_eq!(outcome, vacuum::Outcome::NotPermitted);

    let worker = Worker::new(
        db,
        Registry::new().register("noop", Counting::default()),
        WorkerConfig {
            vacuum: Some(eager(0)),
            ..config(20)
        },
    );
    assert_eq!(churn(&f, &worker, t, 100).await, 100);
    assert_eq!(churn(&f, &worker, t, 100).await, 100);
    assert_eq!(vacuum_stats(&f).await.0, 0);
}
