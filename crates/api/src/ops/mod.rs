//! Operating the database and the platform (API.md, "Operate the
//! database"): health checks and statistics read from PostgreSQL's catalog
//! and statistics views, advisors that speak one finding shape, maintenance
//! run as jobs in a low-weight lane of its own, usage metering and the
//! reload of the tiers file.
//!
//! Every statement here is platform work: it runs on a connection of the
//! pool's platform reserve (outside the tenants' fair share, see
//! `state::PLATFORM_CONNECTIONS`) with the platform statement timeout, never
//! on a tenant's budget.

pub mod advisors;
pub mod health;
pub mod maintenance;
pub mod reload;
pub mod stats;
pub mod usage;

use std::future::Future;

use tenantry_db::{Db, DbError};

use crate::config::PLATFORM_STATEMENT_TIMEOUT_MS;

/// How long a platform read may wait for a lock before it gives up: the
/// statistics views take none worth waiting for, and a health check stuck
/// behind an `ACCESS EXCLUSIVE` lock would report nothing.
const PLATFORM_LOCK_TIMEOUT_MS: u32 = 1_000;

/// Runs `read` in a read-only transaction on an owner connection, with the
/// platform statement and lock timeouts. A connection whose transaction may
/// still be open after an error is never handed back to the pool.
pub(crate) async fn platform_read<T, F, Fut>(db: &Db, read: F) -> Result<T, DbError>
where
    F: FnOnce(deadpool_postgres::Object) -> Fut,
    Fut: Future<Output = (deadpool_postgres::Object, Result<T, tokio_postgres::Error>)>,
{
    let conn = db.owner_connection().await?;
    let begin = format!(
        "BEGIN READ ONLY; SET LOCAL statement_timeout = {PLATFORM_STATEMENT_TIMEOUT_MS}; \
         SET LOCAL lock_timeout = {PLATFORM_LOCK_TIMEOUT_MS}"
    );
    if let Err(e) = conn.batch_execute(&begin).await {
        let _ = deadpool_postgres::Object::take(conn);
        return Err(e.into());
    }
    let (conn, result) = read(conn).await;
    let committed = conn.batch_execute("COMMIT").await;
    match result.and_then(|v| committed.map(|()| v)) {
        Ok(v) => Ok(v),
        Err(e) => {
            let _ = deadpool_postgres::Object::take(conn);
            Err(e.into())
        }
    }
}
