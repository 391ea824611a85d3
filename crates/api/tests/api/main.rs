//! Integration tests: each test starts the real server on port 0 against a
//! fresh database in the PostgreSQL at `TENANTRY_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`).

mod helpers;

mod admin;
mod auth;
mod batch;
mod cache;
mod cancellation;
mod cells;
mod contract;
mod conventions;
mod db_jobs;
mod db_ops;
mod embedded;
mod events;
mod fairness;
mod features;
mod feed;
mod isolation;
mod journeys;
mod json;
mod lifecycle;
mod members;
mod notifications;
mod observe;
mod outage;
mod plans;
mod posts;
mod reload;
mod replicas;
mod rls;
mod scaling;
mod search;
mod shares;
mod soak;
mod support;
mod tls;
mod usage;
mod versions;
