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
//!        set_config('tenantry.user_id', '...', true),
//!        set_config('statement_timeout', '2000', true);
//! ```
//!
//! Where statements are cached (not behind PgBouncer), the `SELECT` is a
//! statement prepared once per connection and bound with the transaction's
//! values ([`SETTINGS_SQL`]), so PostgreSQL does not parse and plan it each
//! time; behind PgBouncer it goes as text with the `BEGIN`.
//!
//! All four settings are transaction-local, so a connection goes back to the
//! pool with no tenant context left on it, and a statement that runs without a
//! prelude sees no tenant rows at all (the policies fail closed).

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Statement};
use uuid::Uuid;

use crate::DbError;
use crate::replica::{COMMIT_LSN_SQL, Replica, Replicas, last_value};
use crate::tls::{ConnectConfig, MakeRustlsConnect};

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

/// The tenants a transaction may see, the user it acts for, and how long
/// each statement may run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantContext {
    pub tenant_ids: Vec<Uuid>,
    /// The user whose rows of the per-user directory (`user_communities`)
    /// the transaction may read; `None` reads none of them.
    pub user_id: Option<Uuid>,
    pub statement_timeout_ms: u32,
}

impl TenantContext {
    pub fn tenant(id: Uuid, statement_timeout_ms: u32) -> Self {
        Self {
            tenant_ids: vec![id],
            user_id: None,
            statement_timeout_ms,
        }
    }

    /// No tenant at all: for global tables (tenants, users). Tenant tables read
    /// as empty.
    pub fn platform(statement_timeout_ms: u32) -> Self {
        Self {
            tenant_ids: Vec::new(),
            user_id: None,
            statement_timeout_ms,
        }
    }

    /// No tenant, acting for `user`: reads that user's own rows of the
    /// per-user directory (which communities they belong to) and the global
    /// tables.
    pub fn user(user: Uuid, statement_timeout_ms: u32) -> Self {
        Self {
            tenant_ids: Vec::new(),
            user_id: Some(user),
            statement_timeout_ms,
        }
    }

    /// The values of [`SETTINGS_SQL`]'s parameters: what [`Self::prelude`]
    /// writes into its text.
    fn settings(&self) -> [String; 3] {
        let ids: Vec<String> = self.tenant_ids.iter().map(Uuid::to_string).collect();
        [
            format!("{{{}}}", ids.join(",")),
            self.user_id.map(|u| u.to_string()).unwrap_or_default(),
            self.statement_timeout_ms.to_string(),
        ]
    }

    /// The prelude as one simple-protocol string. Only UUIDs and an integer are
    /// interpolated, both formatted by Rust, so nothing here can inject SQL.
    /// The user is always set, empty when there is none, so a pooled
    /// connection never carries one transaction's user into the next (the
    /// settings are transaction-local anyway).
    fn prelude(&self) -> String {
        let [ids, user, timeout] = self.settings();
        format!(
            "BEGIN; SELECT set_config('role', '{APP_ROLE}', true), \
             set_config('tenantry.tenant_ids', '{ids}', true), \
             set_config('tenantry.user_id', '{user}', true), \
             set_config('statement_timeout', '{timeout}', true)"
        )
    }
}

/// A transaction's prelude, if not yet sent, as it is to be sent (a field
/// function so that it can be taken while the connection is borrowed).
fn take_prelude(prelude: &mut Option<TenantContext>, read_only: bool) -> Option<String> {
    let prelude = prelude.take()?.prelude();
    Some(match read_only {
        true => prelude.replacen("BEGIN;", "BEGIN READ ONLY;", 1),
        false => prelude,
    })
}

/// The prelude's settings as one statement, prepared once per connection
/// where statements are cached (not behind PgBouncer): PostgreSQL then
/// binds it instead of parsing and planning the prelude's `SELECT` on every
/// transaction.
static SETTINGS_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT set_config('role', '{APP_ROLE}', true), \
         set_config('tenantry.tenant_ids', $1, true), \
         set_config('tenantry.user_id', $2, true), \
         set_config('statement_timeout', $3, true)"
    )
});

/// A prelude ready to go out (see [`Begin::send`]).
enum Begin {
    /// One simple-protocol string, `BEGIN; SELECT set_config(…)`.
    Text(String),
    /// `BEGIN` and the settings' prepared statement with its values.
    Prepared {
        begin: &'static str,
        settings: Statement,
        values: [String; 3],
    },
}

impl Begin {
    /// Sends the prelude. Every message of it goes out on this future's
    /// first poll (tokio-postgres sends a request when its future is first
    /// polled, and nothing here waits before that), so a statement joined
    /// after it runs inside the transaction, in the same round trip.
    async fn send(&self, conn: &Object) -> Result<(), tokio_postgres::Error> {
        match self {
            Begin::Text(sql) => conn.batch_execute(sql).await,
            Begin::Prepared {
                begin,
                settings,
                values,
            } => {
                let params: [&(dyn ToSql + Sync); 3] = [&values[0], &values[1], &values[2]];
                let (begun, set) =
                    futures::join!(conn.batch_execute(begin), conn.execute(settings, &params));
                begun.and(set.map(|_| ()))
            }
        }
    }
}

/// Statements sent by every [`Tx`] of this process (preludes, statements and
/// COMMITs): what `tenantry_db_statements_total` reports.
static STATEMENTS: AtomicU64 = AtomicU64::new(0);

tokio::task_local! {
    /// The statement counter of the request being served, if it counts.
    static REQUEST_STATEMENTS: Arc<AtomicU64>;
}

/// Statements sent so far by this process.
pub fn statements_total() -> u64 {
    STATEMENTS.load(Ordering::Relaxed)
}

/// Runs `f`, counting the statements its task sends through [`Tx`]: the
/// measure behind "a cached request costs no database work".
pub async fn count_statements<F: Future>(f: F) -> (F::Output, u64) {
    let counter = Arc::new(AtomicU64::new(0));
    let out = REQUEST_STATEMENTS.scope(counter.clone(), f).await;
    (out, counter.load(Ordering::Relaxed))
}

/// What a request's transactions used of the database: time holding a
/// connection and rows written. Measured only inside [`measure_use`] (the
/// request path), for usage metering.
#[derive(Debug, Default)]
pub struct DbUse {
    pub held_us: AtomicU64,
    pub rows_written: AtomicU64,
}

tokio::task_local! {
    static REQUEST_USE: Arc<DbUse>;
}

/// Runs `f`, adding to `usage` the time its task's transactions hold a
/// connection and the rows their writing statements change (`execute`'s
/// count, or the rows an `INSERT`/`UPDATE`/`DELETE` returns).
pub async fn measure_use<F: Future>(usage: Arc<DbUse>, f: F) -> F::Output {
    REQUEST_USE.scope(usage, f).await
}

fn add_rows_written(n: u64) {
    let _ = REQUEST_USE.try_with(|u| u.rows_written.fetch_add(n, Ordering::Relaxed));
}

/// Whether `sql` writes, so that the rows it returns count as rows written
/// (an estimate: a `WITH` that writes several tables and returns one row
/// counts one): a statement that starts with `INSERT`, `UPDATE` or
/// `DELETE`, or a `WITH` whose text holds `INSERT INTO`, `DELETE FROM` or an
/// `UPDATE ... SET`. Only looked at inside [`measure_use`].
fn is_write(sql: &str) -> bool {
    if REQUEST_USE.try_with(|_| ()).is_err() {
        return false;
    }
    let head = sql.trim_start().as_bytes();
    let starts =
        |w: &str| head.len() >= w.len() && head[..w.len()].eq_ignore_ascii_case(w.as_bytes());
    if starts("INSERT") || starts("UPDATE") || starts("DELETE") {
        return true;
    }
    if !starts("WITH") {
        return false;
    }
    writes_in_with(sql)
}

/// The `WITH` half of [`is_write`], read in place (no copy of the text):
/// `INSERT INTO`, `DELETE FROM`, or `UPDATE t SET` (not `FOR UPDATE`, a
/// lock), in any case. Each keyword starts with `I`, `D` or `U`: those are
/// found first (`memchr`, many bytes at a time), and only there is a
/// keyword compared. A list's statement is a long `WITH`, read on every
/// request (callgrind: a sliding comparison of every position with each
/// keyword was 4 % of an uncached `GET /v1/posts`).
fn writes_in_with(sql: &str) -> bool {
    let bytes = sql.as_bytes();
    let at = |start: usize, word: &[u8]| {
        bytes
            .get(start..start + word.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(word))
    };
    let writes_at = |start: usize| {
        at(start, b"INSERT INTO")
            || at(start, b"DELETE FROM")
            || (at(start, b"UPDATE ")
                // The match is ASCII, so its end is a character boundary.
                && sql[start + b"UPDATE ".len()..]
                    .split_whitespace()
                    .nth(1)
                    .is_some_and(|w| w.eq_ignore_ascii_case("SET")))
    };
    memchr::memchr3_iter(b'I', b'D', b'U', bytes)
        .chain(memchr::memchr3_iter(b'i', b'd', b'u', bytes))
        .any(writes_at)
}

#[cfg(test)]
mod write_tests {
    use super::writes_in_with;

    #[test]
    fn a_with_writes_when_it_inserts_deletes_or_updates_but_not_when_it_locks() {
        assert!(writes_in_with(
            "WITH t AS (insert into posts VALUES (1)) SELECT 1"
        ));
        assert!(writes_in_with(
            "WITH d AS (DELETE FROM x RETURNING 1) SELECT 1"
        ));
        assert!(writes_in_with(
            "WITH u AS (UPDATE tenants  SET a = 1) SELECT 1"
        ));
        assert!(writes_in_with(
            "with u as (update tenants set a = 1) select 1"
        ));
        assert!(!writes_in_with(
            "WITH s AS (SELECT 1 FROM t FOR UPDATE) SELECT 1"
        ));
        assert!(!writes_in_with(
            "WITH s AS (SELECT 1 FROM t FOR UPDATE SKIP LOCKED) SELECT é"
        ));
        assert!(!writes_in_with("WITH s AS (SELECT 1) SELECT 'UPDATE'"));
        assert!(writes_in_with(
            "WITH i AS (Insert Into t VALUES (1)) SELECT 1"
        ));
        assert!(writes_in_with("WITH u AS (SELECT 1) uPdAtE t SET a = 1"));
        assert!(!writes_in_with(
            "WITH s AS (SELECT id, user_id FROM deleted) SELECT 1"
        ));
        assert!(!writes_in_with("WITH s AS (SELECT 1) SELECT 'INSERT INT'"));
    }
}

fn counted(n: u64) {
    STATEMENTS.fetch_add(n, Ordering::Relaxed);
    let _ = REQUEST_STATEMENTS.try_with(|c| c.fetch_add(n, Ordering::Relaxed));
}

/// What a lazily connected [`Tx`] waits for before it takes a connection
/// (the tenant's fair database share); what it yields is held until the
/// transaction ends.
pub type Admission =
    Pin<Box<dyn Future<Output = Result<Box<dyn Any + Send + Sync>, DbError>> + Send>>;

/// The PostgreSQL connection pool.
#[derive(Clone)]
pub struct Db {
    pool: Pool,
    mode: StatementMode,
    /// For connections outside the pool (LISTEN).
    config: tokio_postgres::Config,
    /// TLS as the URL's `sslmode` says, for the pool and LISTEN alike.
    tls: MakeRustlsConnect,
    /// The cell's read replicas, if any ([`crate::replica`]).
    replicas: Option<Arc<Replicas>>,
}

impl Db {
    /// Builds a pool for `url` (a `postgres://` URL or a libpq key=value
    /// string, with libpq's `sslmode`, `sslrootcert`, `sslcert` and `sslkey`:
    /// see [`crate::tls`]). Connections are opened lazily; call [`Db::ping`]
    /// to check.
    pub fn connect(url: &str, options: &DbOptions) -> anyhow::Result<Self> {
        let ConnectConfig {
            mut config, tls, ..
        } = ConnectConfig::parse(url)?;
        if config.get_application_name().is_none() {
            config.application_name("tenantry");
        }
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
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
            tls,
            replicas: None,
        })
    }

    /// Attaches read replicas: transactions that ask for one
    /// ([`Tx::prefer_replica`]) may run there, and the commits of a
    /// caller's writes ([`Tx::for_caller`]) remember their position.
    pub fn with_replicas(mut self, replicas: Replicas) -> Self {
        if !replicas.replicas().is_empty() {
            self.replicas = Some(Arc::new(replicas));
        }
        self
    }

    /// The read replicas attached, if any.
    pub fn replicas(&self) -> Option<&Arc<Replicas>> {
        self.replicas.as_ref()
    }

    /// A connection as the connecting user (the schema owner): for migrations
    /// and maintenance only, never for request work.
    pub async fn owner_connection(&self) -> Result<Object, DbError> {
        Ok(self.pool.get().await?)
    }

    /// Runs `sql` in a transaction of its own on an owner connection, after
    /// `prelude` (parameterless SQL that starts with `BEGIN`, e.g. taking a
    /// role), and commits. With cached statements: one round trip. Behind
    /// PgBouncer ([`StatementMode::PerTransaction`]) the statement is
    /// prepared inside the transaction, on the server connection that runs
    /// it, and closed before the commit. A connection that failed midway is
    /// never reused.
    pub async fn one_shot(
        &self,
        prelude: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, DbError> {
        let conn = self.pool.get().await?;
        let result = match self.mode {
            StatementMode::Cached => match conn.prepare_cached(sql).await {
                Ok(stmt) => {
                    let (begun, rows, committed) = futures::join!(
                        conn.batch_execute(prelude),
                        conn.query(&stmt, params),
                        conn.batch_execute("COMMIT")
                    );
                    begun.and(rows).and_then(|rows| committed.map(|()| rows))
                }
                Err(e) => Err(e),
            },
            StatementMode::PerTransaction => {
                async {
                    conn.batch_execute(prelude).await?;
                    let stmt = conn.prepare(sql).await?;
                    let rows = conn.query(&stmt, params).await?;
                    drop(stmt);
                    conn.batch_execute("COMMIT").await?;
                    Ok(rows)
                }
                .await
            }
        };
        result.map_err(|e| {
            // The connection may still be inside a transaction.
            let _ = Object::take(conn);
            e.into()
        })
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
            pool: self.pool.clone(),
            conn: Some(conn),
            prelude: Some(ctx.clone()),
            mode: self.mode,
            read_only: false,
            admission: std::sync::Mutex::new(None),
            admitted: None,
            held_since: Some(std::time::Instant::now()),
            // Connected already: never a replica, but a caller's write
            // ([`Tx::for_caller`]) remembers its position.
            routing: Routing {
                replicas: self.replicas.clone(),
                ..Routing::default()
            },
        })
    }

    /// Opens a transaction that holds nothing until its first statement:
    /// then it waits for `admission` (the tenant's database share), takes a
    /// connection and sends the prelude with the statement. A request
    /// answered from cache never does, so it holds no connection and no
    /// share slot.
    pub fn begin_lazy(&self, ctx: &TenantContext, admission: Option<Admission>) -> Tx {
        Tx {
            pool: self.pool.clone(),
            conn: None,
            prelude: Some(ctx.clone()),
            mode: self.mode,
            read_only: false,
            admission: std::sync::Mutex::new(admission),
            admitted: None,
            held_since: None,
            routing: Routing {
                replicas: self.replicas.clone(),
                ..Routing::default()
            },
        }
    }

    /// Sends a notification on `channel` (outside any transaction).
    pub async fn notify(&self, channel: &str, payload: &str) -> Result<(), DbError> {
        let conn = self.pool.get().await?;
        counted(1);
        conn.execute("SELECT pg_notify($1, $2)", &[&channel, &payload])
            .await?;
        Ok(())
    }

    /// [`Db::notify`] of every payload, in one statement: one round trip
    /// and one transaction (which takes a transaction id and the notify
    /// queue's lock at commit) however many there are.
    pub async fn notify_all(&self, channel: &str, payloads: &[String]) -> Result<(), DbError> {
        if payloads.is_empty() {
            return Ok(());
        }
        let conn = self.pool.get().await?;
        counted(1);
        conn.execute(
            "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p",
            &[&channel, &payloads],
        )
        .await?;
        Ok(())
    }

    /// Listens on `channel` on a connection of its own (outside the pool,
    /// which would drop its notifications). The receiver closes when the
    /// connection is lost; the caller reconnects and must assume it missed
    /// notifications in between.
    pub async fn listen(
        &self,
        channel: &str,
    ) -> Result<tokio::sync::mpsc::UnboundedReceiver<String>, DbError> {
        let (client, mut connection) = self.config.connect(self.tls.clone()).await?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let driver = async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = futures::StreamExt::next(&mut messages).await {
                match message {
                    Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                        if tx.send(n.payload().to_owned()).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        // A server shutting down (a clean stop, the embedded
                        // cluster stopping with us) is no news; anything else
                        // is, with its cause rather than "db error".
                        let code = e.as_db_error().map(|d| d.code().clone());
                        let shutdown = code == Some(SqlState::ADMIN_SHUTDOWN);
                        let cause = e
                            .as_db_error()
                            .map_or_else(|| e.to_string(), |d| d.message().to_owned());
                        if shutdown {
                            tracing::info!(
                                cause,
                                "LISTEN connection closed by the database shutting down"
                            );
                        } else {
                            tracing::warn!(cause, "LISTEN connection lost");
                        }
                        return;
                    }
                }
            }
        };
        // The channel name is ours (an identifier), quoted all the same.
        let listen = format!("LISTEN \"{}\"", channel.replace('"', ""));
        let handle = tokio::spawn(driver);
        if let Err(e) = client.batch_execute(&listen).await {
            handle.abort();
            return Err(e.into());
        }
        // The client must live as long as the connection: park it in a task
        // that ends when the connection does.
        tokio::spawn(async move {
            let _ = handle.await;
            drop(client);
        });
        Ok(rx)
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
    pool: Pool,
    /// Taken on the first statement (or at `begin`).
    conn: Option<Object>,
    /// The context whose prelude is not yet sent: it goes out with the first
    /// statement (formatted only then, so a request served from the cache
    /// never formats it).
    prelude: Option<TenantContext>,
    mode: StatementMode,
    /// `BEGIN READ ONLY`: every write in the transaction fails (SQLSTATE
    /// 25006, [`DbError::ReadOnly`]) whatever the code above it does.
    read_only: bool,
    /// Waited for before the connection is taken. In a mutex only so that
    /// `Tx` stays `Sync` (the future is not); never contended.
    admission: std::sync::Mutex<Option<Admission>>,
    /// What the admission yielded (the share permit), released with the Tx.
    admitted: Option<Box<dyn Any + Send + Sync>>,
    /// Since when this transaction holds its connection (for [`DbUse`]).
    held_since: Option<std::time::Instant>,
    /// Replicas: where a read may run, and whose writes to remember.
    routing: Routing,
}

/// A transaction's part in read-your-writes ([`crate::replica`]).
#[derive(Default)]
struct Routing {
    /// The cell's replicas.
    replicas: Option<Arc<Replicas>>,
    /// Who the transaction acts for (user, tenant): the keys whose last
    /// write a replica must have replayed, or whose write it records.
    caller: Vec<Uuid>,
    /// A read the caller allows on a replica ([`Tx::prefer_replica`]).
    read: bool,
    /// The replica serving it, once connected.
    on: Option<Arc<Replica>>,
    /// While the first statement on a replica has not answered: the
    /// prelude and read-only flag to start again on the primary with.
    restart: Option<(TenantContext, bool)>,
    /// Started again on the primary after its replica failed.
    restarted: bool,
}

impl Tx {
    fn conn(&self) -> &Object {
        self.conn
            .as_ref()
            .expect("a Tx holds its connection until it ends")
    }

    /// Whether the transaction has a connection (it has sent, or is about
    /// to send, a statement).
    pub fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

    /// Waits for the admission and takes a connection, once: on a replica
    /// that has replayed the caller's last write if the transaction is a
    /// read that may run there, else on the primary.
    async fn connect(&mut self) -> Result<(), DbError> {
        if self.conn.is_some() {
            return Ok(());
        }
        let admission = self
            .admission
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(admission) = admission {
            self.admitted = Some(admission.await?);
        }
        if self.routing.read
            && !self.routing.restarted
            && self.prelude.is_some()
            && let Some(replicas) = &self.routing.replicas
            && let Some(replica) = replicas.pick(&self.routing.caller)
        {
            let timeout = replicas.options().timeout;
            match tokio::time::timeout(timeout, replica.db().pool.get()).await {
                Ok(Ok(conn)) => {
                    replica.served();
                    let ctx = self.prelude.clone().expect("checked above");
                    self.routing.restart = Some((ctx, self.read_only));
                    self.read_only = true;
                    self.routing.on = Some(replica);
                    self.conn = Some(conn);
                    self.held_since = Some(std::time::Instant::now());
                    return Ok(());
                }
                Ok(Err(e)) => replica.mark_down(format!("no connection: {e}")),
                // Every connection busy is load, not a replica gone: the
                // primary takes this one, the replica stays in turn.
                Err(_)
                    if replica.db().pool_status().1 == 0
                        && replica.db().pool_status().0 >= replica.db().max_connections() => {}
                Err(_) => {
                    replica.mark_down(format!("no connection within {} ms", timeout.as_millis()))
                }
            }
            replicas.fell_back();
        }
        self.conn = Some(self.pool.get().await?);
        self.held_since = Some(std::time::Instant::now());
        Ok(())
    }

    /// Names who this transaction acts for (the user, the tenant or the
    /// tenants it touches): a read may run on a replica only once that
    /// replica has replayed their last write, and the commit of a write
    /// remembers its position for each of them. Without replicas, nothing.
    pub fn for_caller(&mut self, keys: &[Uuid]) {
        if self.routing.replicas.is_some() {
            self.routing.caller.clear();
            self.routing.caller.extend_from_slice(keys);
        }
    }

    /// Lets the transaction run on a replica (read only) when one has
    /// replayed the caller's last write ([`Tx::for_caller`]); else it runs
    /// on the primary as usual. For requests that only read: a statement
    /// that writes fails there as in any read-only transaction. Only before
    /// the first statement, and only for a lazily connected transaction
    /// ([`Db::begin_lazy`]): one that holds a connection stays where it is.
    pub fn prefer_replica(&mut self) {
        if self.routing.replicas.is_some() && self.prelude.is_some() && self.conn.is_none() {
            self.routing.read = true;
        }
    }

    /// Whether the transaction runs (or ran) on a replica.
    pub fn on_replica(&self) -> bool {
        self.routing.on.is_some()
    }

    /// After the first statement on a replica failed with `e`: starts the
    /// transaction again on the primary if the failure was the replica's
    /// (connection lost, recovery conflict), so a replica going away never
    /// shows as an error. False when there is nothing to start again.
    fn restart_on_primary(&mut self, e: &DbError) -> bool {
        if !matches!(e, DbError::Unavailable(_) | DbError::Busy(_)) {
            return false;
        }
        let Some((ctx, read_only)) = self.routing.restart.take() else {
            return false;
        };
        if let Some(conn) = self.conn.take() {
            // Whatever state it is in, it is not worth a round trip.
            let _ = Object::take(conn);
        }
        if let Some(replica) = self.routing.on.take() {
            if matches!(e, DbError::Unavailable(_)) {
                replica.mark_down(format!("failed a read: {e}"));
            }
            if let Some(replicas) = &self.routing.replicas {
                replicas.fell_back();
            }
        }
        self.routing.restarted = true;
        self.prelude = Some(ctx);
        self.read_only = read_only;
        true
    }

    /// Whether the commit remembers the caller's write position: a
    /// transaction of a caller, on the primary, that may write and is not a
    /// read (a read on the primary records nothing, or a reader of a lagging
    /// replica would chase its own position forever).
    fn records_write(&self) -> bool {
        self.routing.replicas.is_some()
            && !self.routing.caller.is_empty()
            && !self.routing.read
            && self.routing.on.is_none()
            && !self.read_only
    }

    /// Remembers the caller's write at the position the commit answered.
    fn wrote(&self, messages: &[tokio_postgres::SimpleQueryMessage]) {
        if let (Some(replicas), Some(lsn)) = (&self.routing.replicas, last_value(messages)) {
            replicas.wrote(&self.routing.caller, lsn);
        }
    }

    async fn statement(&mut self, sql: &str) -> Result<Statement, DbError> {
        self.connect().await?;
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

    /// Makes the transaction read only (`BEGIN READ ONLY`). Only before its
    /// first statement: once begun, a transaction is what it began as, so
    /// this panics if the prelude was sent.
    pub fn set_read_only(&mut self) {
        assert!(
            self.prelude.is_some(),
            "a transaction is made read only before its first statement"
        );
        self.read_only = true;
    }

    async fn send_prelude(&mut self) -> Result<(), DbError> {
        if let Some(begin) = self.take_begin().await? {
            counted(1);
            begin.send(self.conn()).await?;
        }
        Ok(())
    }

    /// The prelude, if not yet sent, made ready to send: its settings
    /// prepared on this connection where statements are cached (a round
    /// trip the first time only), else as one simple-protocol string.
    async fn take_begin(&mut self) -> Result<Option<Begin>, DbError> {
        if self.prelude.is_none() {
            return Ok(None);
        }
        match self.mode {
            StatementMode::PerTransaction => {
                Ok(take_prelude(&mut self.prelude, self.read_only).map(Begin::Text))
            }
            StatementMode::Cached => {
                let settings = self.conn().prepare_cached(&SETTINGS_SQL).await?;
                let Some(ctx) = self.prelude.take() else {
                    return Ok(None);
                };
                Ok(Some(Begin::Prepared {
                    begin: match self.read_only {
                        true => "BEGIN READ ONLY",
                        false => "BEGIN",
                    },
                    settings,
                    values: ctx.settings(),
                }))
            }
        }
    }

    /// Runs `sql`, sending the prelude in the same round trip if it is still
    /// pending.
    pub async fn query(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, DbError> {
        match self.query_once(sql, params).await {
            Err(e) if self.restart_on_primary(&e) => self.query_once(sql, params).await,
            done => {
                self.routing.restart = None;
                done
            }
        }
    }

    async fn query_once(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, DbError> {
        let stmt = self.statement(sql).await?;
        let begin = self.take_begin().await?;
        counted(1 + u64::from(begin.is_some()));
        let conn = self
            .conn
            .as_ref()
            .expect("a Tx holds its connection until it ends");
        let rows = match begin {
            Some(begin) => {
                let (begun, rows) = futures::join!(begin.send(conn), conn.query(&stmt, params));
                begun?;
                rows?
            }
            None => conn.query(&stmt, params).await?,
        };
        if is_write(sql) {
            add_rows_written(rows.len() as u64);
        }
        Ok(rows)
    }

    /// Runs `sql` and returns how many rows it changed.
    pub async fn execute(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, DbError> {
        match self.execute_once(sql, params).await {
            Err(e) if self.restart_on_primary(&e) => self.execute_once(sql, params).await,
            done => {
                self.routing.restart = None;
                done
            }
        }
    }

    async fn execute_once(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, DbError> {
        let stmt = self.statement(sql).await?;
        let begin = self.take_begin().await?;
        counted(1 + u64::from(begin.is_some()));
        let conn = self
            .conn
            .as_ref()
            .expect("a Tx holds its connection until it ends");
        let n = match begin {
            Some(begin) => {
                let (begun, n) = futures::join!(begin.send(conn), conn.execute(&stmt, params));
                begun?;
                n?
            }
            None => conn.execute(&stmt, params).await?,
        };
        add_rows_written(n);
        Ok(n)
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
        match self.query_and_commit_once(sql, params).await {
            Err(e) if self.restart_on_primary(&e) => self.query_and_commit_once(sql, params).await,
            done => done,
        }
    }

    async fn query_and_commit_once(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, DbError> {
        let stmt = self.statement(sql).await?;
        let prelude = self.take_begin().await?;
        counted(2 + u64::from(prelude.is_some()));
        let records = self.records_write();
        let conn = self
            .conn
            .as_ref()
            .expect("a Tx holds its connection until it ends");
        let begin = async {
            match &prelude {
                Some(p) => p.send(conn).await,
                None => Ok(()),
            }
        };
        // A caller's write reads its position in the commit's round trip.
        let commit = async {
            match records {
                true => conn.simple_query(COMMIT_LSN_SQL).await,
                false => conn.batch_execute("COMMIT").await.map(|()| Vec::new()),
            }
        };
        let (begun, rows, committed) = futures::join!(begin, conn.query(&stmt, params), commit);
        let outcome = begun
            .and(rows)
            .and_then(|rows| committed.map(|messages| (rows, messages)));
        match outcome {
            Ok((rows, messages)) => {
                self.conn.take();
                self.wrote(&messages);
                if is_write(sql) {
                    add_rows_written(rows.len() as u64);
                }
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
        counted(1);
        if self.records_write() {
            let messages = self.conn().simple_query(COMMIT_LSN_SQL).await?;
            self.conn.take();
            self.wrote(&messages);
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
        if let Some(since) = self.held_since.take() {
            let us = since.elapsed().as_micros() as u64;
            let _ = REQUEST_USE.try_with(|u| u.held_us.fetch_add(us, Ordering::Relaxed));
        }
        let Some(conn) = self.conn.take() else {
            return;
        };
        if self.prelude.is_some() {
            return; // nothing was sent, the connection is clean
        }
        // The connection may be mid-transaction: roll back before it returns to
        // the pool. If no runtime is left (shutdown), drop it from the pool.
        // The share's slot stays taken until the connection is free again: a
        // statement the dropped request sent still runs in PostgreSQL, and
        // the share counts the work the database is really doing.
        let admitted = self.admitted.take();
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    if conn.batch_execute("ROLLBACK").await.is_err() {
                        let _ = Object::take(conn);
                    }
                    drop(admitted);
                });
            }
            Err(_) => {
                let _ = Object::take(conn);
            }
        }
    }
}

/// A transaction of its own on one of the owner's connections (outside the
/// fair share and the request path: exports, imports, tenant moves),
/// opened by `prelude` (`BEGIN …; SELECT set_config(…)`). Dropped before it
/// commits, the connection is closed, which rolls the transaction back
/// whatever await it stopped at; no half-done transaction returns to the
/// pool.
pub struct OwnerSession {
    conn: Option<Object>,
}

impl OwnerSession {
    pub async fn begin(db: &Db, prelude: &str) -> Result<Self, DbError> {
        let conn = db.owner_connection().await?;
        conn.batch_execute(prelude).await?;
        Ok(Self { conn: Some(conn) })
    }

    pub fn client(&self) -> &Object {
        self.conn.as_ref().expect("a session holds its connection")
    }

    pub async fn commit(mut self) -> Result<(), DbError> {
        let conn = self.conn.take().expect("a session holds its connection");
        match conn.batch_execute("COMMIT").await {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = Object::take(conn);
                Err(e.into())
            }
        }
    }
}

impl Drop for OwnerSession {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            let _ = Object::take(conn);
        }
    }
}
