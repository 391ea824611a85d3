//! Tenantry's batch processing.
//!
//! - [`queue`]: the durable job queue in PostgreSQL. Jobs are enqueued inside
//!   the caller's transaction (a job exists iff its cause committed), claimed
//!   in tenant-fair batches with `FOR UPDATE SKIP LOCKED`, leased, retried
//!   with exponential backoff and jitter, and dead-lettered after their
//!   attempts run out.
//! - [`worker`]: runs claimed jobs through their handlers; woken by
//!   LISTEN/NOTIFY, polling as a fallback; [`worker::Worker::run_one_batch`]
//!   for tests.
//! - [`ingest`]: the group-committed analytics collector.
//! - [`announcements`]: the announcement fan-out job.
//! - [`lifecycle`]: tenant exports and archive loads (import, clone, restore).
//! - [`counters`]: the coalesced apply of post counter deltas.
//! - [`vacuum`]: the workers keep the queue table vacuumed themselves.
//! - [`platform`]: the platform's own jobs in a lane of their own, job
//!   lookup and cancellation, and how long finished jobs are kept.

pub mod announcements;
pub mod counters;
pub mod ingest;
pub mod lifecycle;
pub mod platform;
pub mod queue;
pub mod vacuum;
pub mod worker;

pub use queue::{Enqueued, Job, NewJob, enqueue};
pub use worker::{
    BatchReport, Done, Handler, JobContext, JobError, Registry, Worker, WorkerConfig,
};
