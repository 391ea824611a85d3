//! The connection pool and tenant-scoped transactions.
//!
//! Every transaction the server runs starts with one prelude, sent in the same
//! network write as the transaction's first statement (tokio-postgres pipelines
//! requests that are issued before earlier ones answer):
//!
//! ```sql
//! BEGIN;
//! SELECT set_config('role', 'tenantry_app', true),
//!        set_config('tenantry.tenant_ids', '{...}', true),
//!        set_config('statement_timeout', '2000', true);
//! ```
//!
//! All three settings are transaction-local, so a connection goes back to the
//! pool with no tenant context left on it, and a statement that runs without a
//! prelude sees no tenant rows at all (the policies fail closed).

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row, Statement};
use uuid::Uuid;

use crate::DbError;

/// The role every runtime transaction switches to. Created by the migrations.
pub const APP_ROLE: &str = "tenantry_app";

/// How statements are prepared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StatementMode {
    /// Prepared once per connection and reused: one round trip per statement.
    #[default]
    Cached,
    /// Prepared inside each transaction and closed with it, so it works behind
    /// PgBouncer in transaction mode (< 1.21), where a later transaction may run
    /// on another server connection that never saw the statement.
    PerTransaction,
}

/// Pool settings.
#[derive(Debug, Clone)]
pub struct DbOptions {
    pub max_connections: usize,
    /// How long a request may wait for a free connection before it gets 503.
    pub acquire_timeout: Duration,
    pub statement_mode: StatementMode,
}

impl Default for DbOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            statement_mode: StatementMode::Cached,
        }
    }
}

/// The tenants a transaction may see and how long each statement may run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantContext {
    pub tenant_ids: Vec<Uuid>,
    pub statement_timeout_ms: u32,
}

impl TenantContext {
    pub fn tenant(id: Uuid, statement_timeout_ms: u32) -> Self {
        Self {
            tenant_ids: vec![id],
            statement_timeout_ms,
        }
    }

    /// No tenant at all: for global tables (tenants, users). Tenant tables read
    /// as empty.
    pub fn platform(statement_timeout_ms: u32) -> Self {
        Self {
            tenant_ids: Vec::new(),
            statement_timeout_ms,
        }
    }

    /// The prelude as one simple-protocol string. Only UUIDs and an integer are
    /// interpolated, both formatted by Rust, so nothing here can inject SQL.
    fn prelude(&self) -> String {
        let ids: Vec<String> = self.tenant_ids.iter().map(Uuid::to_string).collect();
        format!(
            "BEGIN; SELECT set_config('role', '{APP_ROLE}', true), \
             set_config('tenantry.tenant_ids', '{{{}}}', true), \
             set_config('statement_timeout', '{}', true)",
            ids.join(","),
            self.statement_timeout_ms
        )
    }
}

/// The PostgreSQL connection pool.
#[derive(Clone)]
pub struct Db {
    pool: Pool,
    mode: StatementMode,
    /// Kept for connections outside the pool (LISTEN).
    config: tokio_postgres::Config,
}

impl Db {
    /// Builds a pool for `url` (a `postgres://` URL or a libpq key=value
    /// string). Connections are opened lazily; call [`Db::ping`] to check.
    pub fn connect(url: &str, options: &DbOptions) -> anyhow::Result<Self> {
        let mut config =
            tokio_postgres::Config::from_str(url).context("Failed to parse the database URL")?;
        if config.get_application_name().is_none() {
            config.application_name("tenantry");
        }
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.max_connections)
            .wait_timeout(Some(options.acquire_timeout))
            .create_timeout(Some(Duration::from_secs(10)))
            .runtime(Runtime::Tokio1)
            .build()
            .context("Failed to build the connection pool")?;
        Ok(Self {
            pool,
            mode: options.statement_mode,
            config,
        })
    }

    /// A new connection outside the pool, as the connecting user, for a
    /// session that outlives transactions (LISTEN). The caller polls the
    /// returned connection (it carries the notifications).
    pub async fn connect_unpooled(
        &self,
    ) -> Result<
        (
            tokio_postgres::Client,
            tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>,
        ),
        DbError,
    > {
        Ok(self.config.connect(NoTls).await?)
    }

    /// A connection as the connecting user (the schema owner): for migrations
    /// and maintenance only, never for request work.
    pub async fn owner_connection(&self) -> Result<Object, DbError> {
        Ok(self.pool.get().await?)
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), DbError> {
        let conn = self.pool.get().await?;
        conn.simple_query("SELECT 1").await?;
        Ok(())
    }

    /// Opens a transaction with `ctx` as its tenant context. Nothing is sent
    /// until the first statement, which carries the prelude with it.
    pub async fn begin(&self, ctx: &TenantContext) -> Result<Tx, DbError> {
        let conn = self.pool.get().await?;
        Ok(Tx {
            conn: Some(conn),
            prelude: Some(ctx.prelude()),
            mode: self.mode,
        })
    }

    /// The most connections the pool opens.
    pub fn max_connections(&self) -> usize {
        self.pool.status().max_size
    }

    /// Pool gauges: (connections open, connections idle, requests waiting).
    pub fn pool_status(&self) -> (usize, usize, usize) {
        let s = self.pool.status();
        (s.size, s.available, s.waiting)
    }
}

/// A transaction with tenant context. Commit it with [`Tx::commit`] or
/// [`Tx::query_and_commit`]; dropping it rolls back.
pub struct Tx {
    conn: Option<Object>,
    /// The prelude not yet sent: it goes out with the first statement.
    prelude: Option<String>,
    mode: StatementMode,
}

impl Tx {
    fn conn(&self) -> &Object {
        self.conn
            .as_ref()
            .expect("a Tx holds its connection until it ends")
    }

    async fn statement(&mut self, sql: &str) -> Result<Statement, DbError> {
        match self.mode {
            StatementMode::Cached => Ok(self.conn().prepare_cached(sql).await?),
            StatementMode::PerTransaction => {
                // Behind PgBouncer the statement must be prepared inside the
                // transaction, on the server connection that will execute it.
                self.send_prelude().await?;
                Ok(self.conn().prepare(sql).await?)
            }
        }
    }

    async fn send_prelude(&mut self) -> Result<(), DbError> {
        if let Some(prelude) = self.prelude.take() {
            self.conn().batch_execute(&prelude).await?;
        }
        Ok(())
    }

    /// Runs `sql`, sending the prelude in the same round trip if it is still
    /// pending.
    pub async fn query(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, DbError> {
        let stmt = self.statement(sql).await?;
        let conn = self
            .conn
            .as_ref()
            .expect("a Tx holds its connection until it ends");
        match self.prelude.take() {
            Some(prelude) => {
                let (begun, rows) =
                    futures::join!(conn.batch_execute(&prelude), conn.query(&stmt, params));
                begun?;
                Ok(rows?)
            }
            None => Ok(conn.query(&stmt, params).await?),
        }
    }

    /// Runs `sql` and returns how many rows it changed.
    pub async fn execute(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, DbError> {
        let stmt = self.statement(sql).await?;
        let conn = self
            .conn
            .as_ref()
            .expect("a Tx holds its connection until it ends");
        match self.prelude.take() {
            Some(prelude) => {
                let (begun, n) =
                    futures::join!(conn.batch_execute(&prelude), conn.execute(&stmt, params));
                begun?;
                Ok(n?)
            }
            None => Ok(conn.execute(&stmt, params).await?),
        }
    }

    pub async fn query_opt(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, DbError> {
        let mut rows = self.query(sql, params).await?;
        if rows.len() > 1 {
            return Err(DbError::Other(anyhow::anyhow!(
                "query returned {} rows where at most one was expected",
                rows.len()
            )));
        }
        Ok(rows.pop())
    }

    pub async fn query_one(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, DbError> {
        self.query_opt(sql, params)
            .await?
            .ok_or_else(|| DbError::Other(anyhow::anyhow!("query returned no row")))
    }

    /// Runs `sql` and commits, both in one round trip (with the prelude too if
    /// this is the transaction's only statement).
    pub async fn query_and_commit(
        mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, DbError> {
        let stmt = self.statement(sql).await?;
        let prelude = self.prelude.take();
        let conn = self
            .conn
            .as_ref()
            .expect("a Tx holds its connection until it ends");
        let begin = async {
            match &prelude {
                Some(p) => conn.batch_execute(p).await,
                None => Ok(()),
            }
        };
        let (begun, rows, committed) = futures::join!(
            begin,
            conn.query(&stmt, params),
            conn.batch_execute("COMMIT")
        );
        let outcome = begun.and(rows).and_then(|rows| committed.map(|()| rows));
        match outcome {
            Ok(rows) => {
                self.conn.take();
                Ok(rows)
            }
            // COMMIT after a failed statement answers ROLLBACK; either way the
            // transaction is over, but make sure with Drop's rollback.
            Err(e) => Err(e.into()),
        }
    }

    /// Commits the transaction.
    pub async fn commit(mut self) -> Result<(), DbError> {
        if self.prelude.is_some() {
            // Nothing was sent: there is no transaction to commit.
            self.conn.take();
            return Ok(());
        }
        let result = self.conn().batch_execute("COMMIT").await;
        if result.is_ok() {
            self.conn.take();
        }
        Ok(result?)
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        if self.prelude.is_some() {
            return; // nothing was sent, the connection is clean
        }
        // The connection may be mid-transaction: roll back before it returns to
        // the pool. If no runtime is left (shutdown), drop it from the pool.
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    if conn.batch_execute("ROLLBACK").await.is_err() {
                        let _ = Object::take(conn);
                    }
                });
            }
            Err(_) => {
                let _ = Object::take(conn);
            }
        }
    }
}
