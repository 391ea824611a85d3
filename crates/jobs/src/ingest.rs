//! Group-committed analytics ingestion.
//!
//! Requests hand their events to the [`Collector`] through [`Ingest::submit`]
//! and wait. The collector gathers what arrives within a few milliseconds (up
//! to a bounded number of events), writes the whole batch in one transaction
//! — the events in one multi-row `INSERT … SELECT FROM unnest(…)` that also
//! upserts the daily summaries — and answers every request only after COMMIT
//! returned. A failed batch answers every request in it with an error, and
//! since the batch is one transaction nothing of it is half-written. A batch
//! that failed for a reason other than the database being unavailable is
//! retried one request at a time, so one bad request cannot fail the others.
//!
//! The per-tenant daily quota is checked per batch, not per event: the first
//! statement locks the tenants' rows of `tenant_daily_stats` (in a fixed
//! order, so concurrent batches never deadlock) and reads how much each has
//! used today; requests that would go past the quota are refused whole.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;
use tenantry_db::{Db, DbError, TenantContext};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinSet;
use uuid::Uuid;

/// One analytics event.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: String,
    pub properties: Value,
    pub occurred_at: DateTime<Utc>,
}

/// Why a submission was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    /// The tenant's daily quota would be exceeded; nothing was written.
    #[error("the daily analytics quota of {quota} events is used up")]
    QuotaExceeded { quota: u64 },
    /// The batch could not be committed (or the server is stopping); nothing
    /// of this submission was written.
    #[error("analytics ingestion unavailable: {0}")]
    Unavailable(String),
    /// The batch could not be committed because the database is away;
    /// nothing of this submission was written.
    #[error("database unavailable: {0}")]
    DatabaseUnavailable(String),
}

/// Collector settings.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// How long the collector waits for more requests after the first.
    pub window: Duration,
    /// A batch stops growing at this many events.
    pub max_batch_events: usize,
    /// Batches written at once.
    pub flushers: usize,
    /// Submissions waiting for the collector before senders wait too.
    pub queue: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_millis(2),
            max_batch_events: 20_000,
            flushers: 2,
            queue: 4_096,
        }
    }
}

struct Submission {
    tenant: Uuid,
    user: Uuid,
    quota: u64,
    events: Vec<Event>,
    reply: oneshot::Sender<Result<usize, IngestError>>,
}

/// The handle requests submit through.
#[derive(Clone)]
pub struct Ingest {
    tx: mpsc::Sender<Submission>,
}

/// The task that batches and writes; run it with [`Collector::run`].
pub struct Collector {
    rx: mpsc::Receiver<Submission>,
    db: Db,
    config: IngestConfig,
}

/// A connected handle and collector.
pub fn channel(db: Db, config: IngestConfig) -> (Ingest, Collector) {
    let (tx, rx) = mpsc::channel(config.queue.max(1));
    (Ingest { tx }, Collector { rx, db, config })
}

impl Ingest {
    /// Submits `events` of `user` in `tenant` and waits until they are
    /// committed (`Ok(count)`) or refused. `quota` is the tenant's
    /// `analytics_events_per_day`.
    pub async fn submit(
        &self,
        tenant: Uuid,
        user: Uuid,
        quota: u64,
        events: Vec<Event>,
    ) -> Result<usize, IngestError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Submission {
                tenant,
                user,
                quota,
                events,
                reply,
            })
            .await
            .map_err(|_| IngestError::Unavailable("the server is stopping".to_owned()))?;
        answer.await.map_err(|_| {
            IngestError::Unavailable("the collector stopped before committing".to_owned())
        })?
    }
}

impl Collector {
    /// Batches and writes until `stop`; then refuses new submissions, writes
    /// what was already submitted and returns once every batch is answered.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let flushers = Arc::new(Semaphore::new(self.config.flushers.max(1)));
        let mut tasks = JoinSet::new();
        let mut stopping = false;
        loop {
            let first = if stopping {
                self.rx.recv().await
            } else {
                tokio::select! {
                    s = self.rx.recv() => s,
                    _ = stop.changed() => {
                        stopping = true;
                        self.rx.close();
                        continue;
                    }
                }
            };
            let Some(first) = first else { break };
            // Wait for a free flusher before gathering: while every flusher is
            // busy the next batch grows in the channel.
            let Ok(permit) = flushers.clone().acquire_owned().await else {
                break;
            };
            let mut events = first.events.len();
            let mut batch = vec![first];
            let deadline = tokio::time::Instant::now() + self.config.window;
            while events < self.config.max_batch_events {
                match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                    Ok(Some(s)) => {
                        events += s.events.len();
                        batch.push(s);
                    }
                    Ok(None) | Err(_) => break,
                }
            }
            let db = self.db.clone();
            tasks.spawn(async move {
                flush(&db, batch).await;
                drop(permit);
            });
            while tasks.try_join_next().is_some() {}
        }
        while tasks.join_next().await.is_some() {}
    }
}

/// Writes a batch and answers each submission.
async fn flush(db: &Db, batch: Vec<Submission>) {
    let started = std::time::Instant::now();
    let count: usize = batch.iter().map(|s| s.events.len()).sum();
    match write(db, &batch).await {
        Ok(admitted) => {
            metrics::histogram!("tenantry_ingest_batch_seconds")
                .record(started.elapsed().as_secs_f64());
            metrics::histogram!("tenantry_ingest_batch_events").record(count as f64);
            for (s, answer) in batch.into_iter().zip(admitted) {
                let _ = s.reply.send(answer);
            }
        }
        // Retrying one by one cannot help while the database is away or busy.
        Err(e) if batch.len() > 1 && !e.is_unavailable() && !matches!(e, DbError::Busy(_)) => {
            tracing::warn!(error = %e, requests = batch.len(),
                "analytics batch failed; retrying its requests one by one");
            for s in batch {
                let one = [s];
                let answer = match write(db, &one).await {
                    Ok(mut a) => a.pop().unwrap_or_else(|| unavailable("no answer")),
                    Err(e) => {
                        tracing::warn!(error = %e, "analytics request failed");
                        refused(&e)
                    }
                };
                let [s] = one;
                let _ = s.reply.send(answer);
            }
        }
        Err(e) => {
            if !e.is_unavailable() {
                tracing::warn!(error = %e, requests = batch.len(), "analytics batch failed");
            } else if let Some(held_back) = FLUSH_WARNING.admit() {
                tracing::warn!(error = %e, requests = batch.len(), held_back, "analytics batch failed");
            }
            for s in batch {
                let _ = s.reply.send(refused(&e));
            }
        }
    }
}

/// Batch failures while the database is away repeat on every flush: one
/// warning per interval says so (other failures are each logged).
static FLUSH_WARNING: tenantry_db::Throttle =
    tenantry_db::Throttle::new(std::time::Duration::from_secs(10));

/// The answer to a submission whose write failed with `e`.
fn refused(e: &DbError) -> Result<usize, IngestError> {
    if e.is_unavailable() {
        Err(IngestError::DatabaseUnavailable(e.to_string()))
    } else {
        unavailable(&e.to_string())
    }
}

fn unavailable(reason: &str) -> Result<usize, IngestError> {
    Err(IngestError::Unavailable(reason.to_owned()))
}

/// The rows of `tenant_daily_stats` one batch changes, by (tenant, day).
#[derive(Default)]
struct DayCounts {
    events: i64,
    received: i64,
}

/// Writes `batch` in one transaction; answers each submission (in order):
/// its event count, or quota exceeded. `Err`: nothing was written.
async fn write(db: &Db, batch: &[Submission]) -> Result<Vec<Result<usize, IngestError>>, DbError> {
    let today: NaiveDate = Utc::now().date_naive();
    let tenants: BTreeSet<Uuid> = batch.iter().map(|s| s.tenant).collect();
    // Every (tenant, day) row this batch may touch, sorted: locking them in
    // one order means concurrent batches queue instead of deadlocking.
    let mut days: BTreeSet<(Uuid, NaiveDate)> = BTreeSet::new();
    for s in batch {
        days.insert((s.tenant, today));
        for e in &s.events {
            days.insert((s.tenant, e.occurred_at.date_naive()));
        }
    }
    let (lock_tenants, lock_days): (Vec<Uuid>, Vec<NaiveDate>) = days.iter().copied().unzip();
    let ctx = TenantContext {
        tenant_ids: tenants.into_iter().collect(),
        user_id: None,
        statement_timeout_ms: 30_000,
    };
    let mut tx = db.begin(&ctx).await?;
    let rows = tx
        .query(
            "INSERT INTO tenant_daily_stats AS s (tenant_id, day)
             SELECT t, d FROM unnest($1::uuid[], $2::date[]) AS x(t, d) ORDER BY t, d
             ON CONFLICT (tenant_id, day) DO UPDATE SET analytics_received = s.analytics_received
             RETURNING tenant_id, day, analytics_received",
            &[&lock_tenants, &lock_days],
        )
        .await?;
    let mut used: BTreeMap<Uuid, i64> = BTreeMap::new();
    for row in &rows {
        if row.get::<_, NaiveDate>(1) == today {
            used.insert(row.get(0), row.get(2));
        }
    }

    // Admission, in submission order.
    let mut answers = Vec::with_capacity(batch.len());
    let mut counts: BTreeMap<(Uuid, NaiveDate), DayCounts> = BTreeMap::new();
    let mut active: BTreeSet<(Uuid, NaiveDate, Uuid)> = BTreeSet::new();
    let mut ev_tenant = Vec::new();
    let mut ev_id = Vec::new();
    let mut ev_user = Vec::new();
    let mut ev_type = Vec::new();
    let mut ev_props = Vec::new();
    let mut ev_at = Vec::new();
    for s in batch {
        let n = s.events.len() as i64;
        let so_far = used.entry(s.tenant).or_insert(0);
        let quota = i64::try_from(s.quota).unwrap_or(i64::MAX);
        if so_far.saturating_add(n) > quota {
            answers.push(Err(IngestError::QuotaExceeded { quota: s.quota }));
            continue;
        }
        *so_far += n;
        counts.entry((s.tenant, today)).or_default().received += n;
        for e in &s.events {
            let day = e.occurred_at.date_naive();
            counts.entry((s.tenant, day)).or_default().events += 1;
            active.insert((s.tenant, day, s.user));
            ev_tenant.push(s.tenant);
            ev_id.push(tenantry_db::new_id());
            ev_user.push(s.user);
            ev_type.push(e.kind.as_str());
            ev_props.push(&e.properties);
            ev_at.push(e.occurred_at);
        }
        answers.push(Ok(s.events.len()));
    }
    if ev_id.is_empty() {
        // Nothing admitted: nothing to write (the locks go with the rollback).
        return Ok(answers);
    }
    let mut au_tenant = Vec::with_capacity(active.len());
    let mut au_day = Vec::with_capacity(active.len());
    let mut au_user = Vec::with_capacity(active.len());
    for (t, d, u) in active {
        au_tenant.push(t);
        au_day.push(d);
        au_user.push(u);
    }
    let mut st_tenant = Vec::with_capacity(counts.len());
    let mut st_day = Vec::with_capacity(counts.len());
    let mut st_events = Vec::with_capacity(counts.len());
    let mut st_received = Vec::with_capacity(counts.len());
    for ((t, d), c) in counts {
        st_tenant.push(t);
        st_day.push(d);
        st_events.push(c.events);
        st_received.push(c.received);
    }
    tx.query_and_commit(
        "WITH ev AS (
             INSERT INTO analytics_events
                 (tenant_id, received_at, id, user_id, type, properties, occurred_at)
             SELECT t, now(), i, u, ty, p, o
             FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::jsonb[],
                         $6::timestamptz[]) AS x(t, i, u, ty, p, o)
         ),
         dau AS (
             INSERT INTO daily_active_users (tenant_id, day, user_id)
             SELECT * FROM unnest($7::uuid[], $8::date[], $9::uuid[])
             ON CONFLICT DO NOTHING
             RETURNING tenant_id, day
         ),
         new_dau AS (SELECT tenant_id, day, count(*) AS n FROM dau GROUP BY tenant_id, day)
         INSERT INTO tenant_daily_stats AS s
             (tenant_id, day, analytics_events, analytics_received, active_users)
         SELECT d.t, d.day, d.events, d.received, coalesce(n.n, 0)
         FROM unnest($10::uuid[], $11::date[], $12::int8[], $13::int8[])
              AS d(t, day, events, received)
         LEFT JOIN new_dau n ON n.tenant_id = d.t AND n.day = d.day
         ON CONFLICT (tenant_id, day) DO UPDATE SET
             analytics_events = s.analytics_events + excluded.analytics_events,
             analytics_received = s.analytics_received + excluded.analytics_received,
             active_users = s.active_users + excluded.active_users",
        &[
            &ev_tenant,
            &ev_id,
            &ev_user,
            &ev_type,
            &ev_props,
            &ev_at,
            &au_tenant,
            &au_day,
            &au_user,
            &st_tenant,
            &st_day,
            &st_events,
            &st_received,
        ],
    )
    .await?;
    Ok(answers)
}

/// Writes `events` with one INSERT per event, each its own transaction: the
/// baseline the benchmark compares group commit with. Not used by the server.
pub async fn write_one_by_one(
    db: &Db,
    tenant: Uuid,
    user: Uuid,
    events: &[Event],
) -> Result<(), DbError> {
    for e in events {
        let tx = db.begin(&TenantContext::tenant(tenant, 30_000)).await?;
        tx.query_and_commit(
            "INSERT INTO analytics_events
                 (tenant_id, received_at, id, user_id, type, properties, occurred_at)
             VALUES ($1, now(), $2, $3, $4, $5, $6)",
            &[
                &tenant,
                &tenantry_db::new_id(),
                &user,
                &e.kind,
                &e.properties,
                &e.occurred_at,
            ],
        )
        .await?;
    }
    Ok(())
}
