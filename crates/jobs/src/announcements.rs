//! Announcements and their fan-out to members' notifications.
//!
//! Creating an announcement enqueues a fan-out job in the same transaction.
//! The job walks the tenant's members by user id in chunks; each chunk is one
//! set-based `INSERT … SELECT` of notifications for the members whose
//! preferences allow it, committed together with the job's progress (the
//! last user id) and a renewed lease. A worker that dies mid-way loses only
//! its uncommitted chunk; whoever re-claims the job resumes after the last
//! committed one. Exactly once per member holds even beyond that: the unique
//! index on (tenant, user, announcement) and `ON CONFLICT DO NOTHING` make a
//! repeated chunk a no-op.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::json;
use tenantry_db::{DbError, Tx};
use uuid::Uuid;

use crate::queue::{self, Job, NewJob};
use crate::worker::{Done, Handler, JobContext, JobError};

/// The fan-out job's kind.
pub const FANOUT: &str = "announcement.fanout";

/// A created announcement.
#[derive(Debug, Clone)]
pub struct Announcement {
    pub id: Uuid,
    pub job_id: Uuid,
    pub created_at: DateTime<Utc>,
}

/// Creates an announcement and enqueues its fan-out, in `tx`.
pub async fn create(
    tx: &mut Tx,
    tenant: Uuid,
    author: Uuid,
    title: &str,
    message: &str,
) -> Result<Announcement, DbError> {
    let draft = Draft {
        author,
        title,
        message,
    };
    let id = tenantry_db::new_id();
    let job = queue::enqueue(tx, tenant, &fanout_job(id, None)).await?;
    insert(tx, tenant, id, &draft, job.id, None).await
}

/// What [`create_once`] did.
#[derive(Debug, Clone)]
pub enum Once {
    /// A new announcement (and its fan-out job).
    Created(Announcement),
    /// The key's announcement, created earlier by the same author with the
    /// same title and message: nothing new was written or enqueued.
    Replayed(Announcement),
    /// The key names an announcement with another author, title or message.
    KeyReused,
}

/// [`create`] under an idempotency key: the first call with `key` in the
/// tenant creates the announcement; a later one by the same author with the
/// same title and message answers it again, without a second announcement
/// or fan-out; any other use of the key is [`Once::KeyReused`].
///
/// Concurrent calls with one key are serialised by the queue's unique
/// (tenant, idempotency key) index: the fan-out job is enqueued first under
/// `announcement:<key>`, and a second enqueue of that key waits for the
/// first transaction to end and then finds its job, so exactly one of them
/// inserts. The key is also stored on the announcement, which outlives its
/// job row (done jobs may be pruned), and is looked up there first.
pub async fn create_once(
    tx: &mut Tx,
    tenant: Uuid,
    author: Uuid,
    title: &str,
    message: &str,
    key: &str,
) -> Result<Once, DbError> {
    let draft = Draft {
        author,
        title,
        message,
    };
    let same = |found: Keyed| {
        if found.author == author && found.title == title && found.message == message {
            Once::Replayed(found.announcement)
        } else {
            Once::KeyReused
        }
    };
    if let Some(found) = by_key(tx, tenant, key).await? {
        return Ok(same(found));
    }
    let id = tenantry_db::new_id();
    let job = queue::enqueue(tx, tenant, &fanout_job(id, Some(key))).await?;
    if !job.created {
        // A concurrent request with this key committed first (a new
        // statement sees its rows), or the key's job outlived an
        // announcement that is gone: either way the key is taken.
        return Ok(by_key(tx, tenant, key).await?.map_or(Once::KeyReused, same));
    }
    let a = insert(tx, tenant, id, &draft, job.id, Some(key)).await?;
    Ok(Once::Created(a))
}

/// The fan-out job of announcement `id`.
fn fanout_job(id: Uuid, key: Option<&str>) -> NewJob {
    let job = NewJob::new(FANOUT, json!({ "announcement_id": id }))
        .queue("announcements")
        .max_attempts(10);
    match key {
        // Job keys are per tenant across every kind of job: namespaced.
        Some(key) => job.idempotency_key(&format!("announcement:{key}")),
        None => job,
    }
}

/// What an announcement says, and who says it.
struct Draft<'a> {
    author: Uuid,
    title: &'a str,
    message: &'a str,
}

async fn insert(
    tx: &mut Tx,
    tenant: Uuid,
    id: Uuid,
    draft: &Draft<'_>,
    job: Uuid,
    key: Option<&str>,
) -> Result<Announcement, DbError> {
    let row = tx
        .query_one(
            "INSERT INTO announcements (tenant_id, id, author_id, title, message, job_id,
                                        idempotency_key)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             RETURNING created_at",
            &[
                &tenant,
                &id,
                &draft.author,
                &draft.title,
                &draft.message,
                &job,
                &key,
            ],
        )
        .await?;
    Ok(Announcement {
        id,
        job_id: job,
        created_at: row.get(0),
    })
}

/// An announcement found by its idempotency key, with what it says.
struct Keyed {
    announcement: Announcement,
    author: Uuid,
    title: String,
    message: String,
}

/// The announcement created with `key` in the tenant (a probe of
/// `announcements_idempotency`).
async fn by_key(tx: &mut Tx, tenant: Uuid, key: &str) -> Result<Option<Keyed>, DbError> {
    let row = tx
        .query_opt(
            "SELECT id, job_id, created_at, author_id, title, message FROM announcements
             WHERE tenant_id = $1 AND idempotency_key = $2",
            &[&tenant, &key],
        )
        .await?;
    Ok(row.map(|r| Keyed {
        announcement: Announcement {
            id: r.get("id"),
            job_id: r.get("job_id"),
            created_at: r.get("created_at"),
        },
        author: r.get("author_id"),
        title: r.get("title"),
        message: r.get("message"),
    }))
}

/// One chunk: the next `$4` members after user `$3`; notifications for those
/// whose preferences do not turn announcements off. Returns how many members
/// were scanned, the last one, and how many notifications were new.
const CHUNK_SQL: &str = "
WITH chunk AS (
    SELECT user_id, notification_prefs FROM memberships
    WHERE tenant_id = $1 AND user_id > $3
    ORDER BY user_id LIMIT $4
),
a AS (SELECT id, title, message FROM announcements WHERE tenant_id = $1 AND id = $2),
ins AS (
    INSERT INTO notifications (tenant_id, user_id, id, announcement_id, title, message)
    SELECT $1, c.user_id, gen_random_uuid(), a.id, a.title, a.message
    FROM chunk c CROSS JOIN a
    WHERE coalesce(c.notification_prefs ->> 'announcements', 'true') <> 'false'
    ON CONFLICT (tenant_id, user_id, announcement_id) WHERE announcement_id IS NOT NULL
    DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM chunk) AS scanned,
       (SELECT user_id FROM chunk ORDER BY user_id DESC LIMIT 1) AS last,
       (SELECT count(*) FROM ins) AS inserted,
       EXISTS (SELECT 1 FROM a) AS found";

/// The fan-out handler.
pub struct FanOut {
    /// Members per chunk (one transaction each).
    pub chunk: i64,
}

impl Default for FanOut {
    fn default() -> Self {
        Self { chunk: 5_000 }
    }
}

/// What one chunk did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    /// The last member scanned: where the next chunk starts. `None`: no
    /// members were left, and the job is complete.
    pub last: Option<Uuid>,
    pub inserted: i64,
}

impl FanOut {
    /// Runs one chunk after member `after` and commits it with the job's
    /// progress, or completes the job when no member is left. Fails with
    /// [`JobError::LeaseLost`] (and writes nothing) if the job is no longer
    /// this run's.
    pub async fn run_chunk(
        &self,
        ctx: &JobContext,
        job: &Job,
        after: Uuid,
    ) -> Result<Chunk, JobError> {
        let announcement: Uuid = job
            .payload
            .get("announcement_id")
            .and_then(|v| v.as_str())
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("the fan-out job names no announcement"))?;
        let mut tx = ctx.begin(job).await?;
        let row = tx
            .query_one(
                CHUNK_SQL,
                &[&job.tenant_id, &announcement, &after, &self.chunk],
            )
            .await?;
        let scanned: i64 = row.get("scanned");
        let last: Option<Uuid> = row.get("last");
        let inserted: i64 = row.get("inserted");
        let found: bool = row.get("found");
        let done = !found || scanned < self.chunk;
        let previous = job
            .progress
            .as_ref()
            .and_then(|p| p.get("notified"))
            .and_then(serde_json::Value::as_i64)
            .unwrap_or(0);
        if done {
            ctx.complete_in(&mut tx, job).await?;
        } else {
            let progress = json!({ "after": last, "notified": previous + inserted });
            ctx.checkpoint_in(&mut tx, job, &progress).await?;
        }
        tx.commit().await?;
        Ok(Chunk {
            last: if done { None } else { last },
            inserted,
        })
    }
}

#[async_trait]
impl Handler for FanOut {
    async fn run(&self, job: &Job, ctx: &JobContext) -> Result<Done, JobError> {
        // Resume after the last committed chunk.
        let mut after = job
            .progress
            .as_ref()
            .and_then(|p| p.get("after"))
            .and_then(|v| v.as_str())
            .and_then(|s| s.parse().ok())
            .unwrap_or(Uuid::nil());
        let mut job = job.clone();
        loop {
            let chunk = self.run_chunk(ctx, &job, after).await?;
            match chunk.last {
                None => return Ok(Done::CompletedInTx),
                Some(last) => {
                    after = last;
                    let notified = job
                        .progress
                        .as_ref()
                        .and_then(|p| p.get("notified"))
                        .and_then(serde_json::Value::as_i64)
                        .unwrap_or(0);
                    job.progress =
                        Some(json!({ "after": last, "notified": notified + chunk.inserted }));
                }
            }
        }
    }
}
