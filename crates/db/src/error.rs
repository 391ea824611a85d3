//! What can go wrong talking to PostgreSQL, in the terms the HTTP edge needs.
//!
//! Two kinds of "try again later" are kept apart, because a client and an
//! operator read them differently: [`DbError::Busy`] (the database is there
//! but this request could not get its turn: a fair-share wait ran out, a
//! serialization failure, too many connections) and [`DbError::Unavailable`]
//! (the database is away: the server refuses connections, is shutting down
//! or starting up, or a connection broke mid-request). The second must be
//! recognised however deeply it is wrapped, so [`unavailable_cause`] walks an
//! error's whole cause chain; the `From<anyhow::Error>` conversion uses it, so
//! an `.context(...)`-wrapped connection error is still `Unavailable`.

use std::error::Error as StdError;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_postgres::error::SqlState;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// A unique or foreign-key constraint refused the write; carries the
    /// constraint's name so callers can say which field clashed.
    #[error("constraint {constraint} violated")]
    Conflict { constraint: String },
    /// A write would take the tenant past one of its quotas (`max_members`,
    /// `max_posts`, `max_storage_mb`); nothing was written.
    #[error("quota {quota} exceeded")]
    QuotaExceeded { quota: &'static str },
    /// The statement ran past the tenant's statement timeout and was cancelled.
    #[error("statement timed out")]
    Timeout,
    /// The database is there but the work could not get its turn (a wait
    /// for the tenant's share ran out, a serialization failure or deadlock,
    /// too many connections): retrying soon is expected to work.
    #[error("database busy: {0}")]
    Busy(String),
    /// The database is away: no connection could be made or had in time, the
    /// server is shutting down or starting up, or the connection broke.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A write in a read-only transaction (`BEGIN READ ONLY`, e.g. a support
    /// agent's `read` grant): refused by the database itself.
    #[error("a read-only transaction cannot write")]
    ReadOnly,
    #[error(transparent)]
    Other(anyhow::Error),
}

impl From<anyhow::Error> for DbError {
    /// An error wrapped with context stays what it was underneath: a broken
    /// connection anywhere in the chain is [`DbError::Unavailable`].
    fn from(err: anyhow::Error) -> Self {
        match unavailable_cause(err.as_ref()) {
            Some(reason) => DbError::Unavailable(reason),
            None => DbError::Other(err),
        }
    }
}

/// SQLSTATEs that say the server is going away or not yet there: class 08
/// (connection exception) and 57P01–57P03 (admin shutdown, crash shutdown,
/// cannot connect now: the server is starting or in recovery).
fn is_absent_state(code: &SqlState) -> bool {
    code.code().starts_with("08")
        || *code == SqlState::ADMIN_SHUTDOWN
        || *code == SqlState::CRASH_SHUTDOWN
        || *code == SqlState::CANNOT_CONNECT_NOW
}

/// Why `err` means the database is away, if it does. tokio-postgres keeps
/// its error kinds private; an I/O error underneath is how a lost or refused
/// connection shows ("error communicating with the server", "error
/// connecting to server"), except malformed data, which is a protocol error.
fn postgres_unavailable(err: &tokio_postgres::Error) -> Option<String> {
    if let Some(code) = err.code()
        && is_absent_state(code)
    {
        let message = err.as_db_error().map_or("", |db| db.message());
        return Some(format!("{} ({})", message, code.code()));
    }
    if err.is_closed() {
        return Some("connection closed".to_owned());
    }
    let io = err
        .source()
        .and_then(|s| s.downcast_ref::<std::io::Error>())?;
    match io.kind() {
        std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput => None,
        _ => Some(format!("{err}: {io}")),
    }
}

/// `err` and its sources, one after the other: tokio-postgres's own message
/// names only the kind ("error performing TLS handshake"), the why is in
/// its source (which certificate check failed).
fn with_causes(err: &(dyn StdError + 'static)) -> String {
    let mut out = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        out.push_str(": ");
        out.push_str(&e.to_string());
        next = e.source();
    }
    out
}

/// Why `err` means the database is away, if it does.
fn pool_unavailable(err: &deadpool_postgres::PoolError) -> Option<String> {
    match err {
        // Only creating a connection reports a backend error: whatever it
        // says, no connection could be had.
        deadpool_postgres::PoolError::Backend(e) => Some(
            postgres_unavailable(e)
                .unwrap_or_else(|| format!("no connection could be made: {}", with_causes(e))),
        ),
        deadpool_postgres::PoolError::Timeout(_) | deadpool_postgres::PoolError::Closed => {
            Some(err.to_string())
        }
        deadpool_postgres::PoolError::NoRuntimeSpecified
        | deadpool_postgres::PoolError::PostCreateHook(_) => None,
    }
}

/// Walks `err` and its sources; if any of them says the database is away (a
/// tokio-postgres connection error, a pool that could not hand out a
/// connection, a [`DbError::Unavailable`]), returns why.
pub fn unavailable_cause(err: &(dyn StdError + 'static)) -> Option<String> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(pg) = e.downcast_ref::<tokio_postgres::Error>()
            && let Some(reason) = postgres_unavailable(pg)
        {
            return Some(reason);
        }
        if let Some(pool) = e.downcast_ref::<deadpool_postgres::PoolError>()
            && let Some(reason) = pool_unavailable(pool)
        {
            return Some(reason);
        }
        match e.downcast_ref::<DbError>() {
            Some(DbError::Unavailable(reason)) => return Some(reason.clone()),
            // Its source is skipped by `transparent`: look inside.
            Some(DbError::Other(inner)) => return unavailable_cause(inner.as_ref()),
            _ => {}
        }
        next = e.source();
    }
    None
}

impl From<tokio_postgres::Error> for DbError {
    fn from(err: tokio_postgres::Error) -> Self {
        if let Some(reason) = postgres_unavailable(&err) {
            return DbError::Unavailable(reason);
        }
        if let Some(db) = err.as_db_error() {
            let code = db.code();
            if *code == SqlState::UNIQUE_VIOLATION || *code == SqlState::FOREIGN_KEY_VIOLATION {
                return DbError::Conflict {
                    constraint: db.constraint().unwrap_or_default().to_owned(),
                };
            }
            if *code == SqlState::READ_ONLY_SQL_TRANSACTION {
                return DbError::ReadOnly;
            }
            if *code == SqlState::QUERY_CANCELED {
                return DbError::Timeout;
            }
            if *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED
                || *code == SqlState::TOO_MANY_CONNECTIONS
            {
                return DbError::Busy(db.message().to_owned());
            }
        }
        DbError::Other(anyhow::Error::new(err))
    }
}

impl From<deadpool_postgres::PoolError> for DbError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        if let deadpool_postgres::PoolError::Backend(e) = &err
            && e.as_db_error()
                .is_some_and(|db| *db.code() == SqlState::TOO_MANY_CONNECTIONS)
        {
            return DbError::Busy(e.to_string());
        }
        match pool_unavailable(&err) {
            Some(reason) => DbError::Unavailable(reason),
            None => DbError::Other(anyhow::Error::new(err)),
        }
    }
}

impl DbError {
    /// Whether this says the database is away (see [`unavailable_cause`]).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, DbError::Unavailable(_))
            || matches!(self, DbError::Other(e) if unavailable_cause(e.as_ref()).is_some())
    }
}

/// A warning that may repeat on every request or every turn of a loop (the
/// database is away), logged at most once per interval, with the count of
/// the ones held back since: an outage leaves a few lines, not a storm.
pub struct Throttle {
    every: Duration,
    last: Mutex<Option<Instant>>,
    held: AtomicU64,
}

impl Throttle {
    pub const fn new(every: Duration) -> Self {
        Self {
            every,
            last: Mutex::new(None),
            held: AtomicU64::new(0),
        }
    }

    /// `Some(held back since the last one)` if this occurrence may be
    /// logged; `None` (and counted) otherwise.
    pub fn admit(&self) -> Option<u64> {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match *last {
            Some(at) if now.duration_since(at) < self.every => {
                self.held.fetch_add(1, Ordering::Relaxed);
                None
            }
            _ => {
                *last = Some(now);
                Some(self.held.swap(0, Ordering::Relaxed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io_error(kind: std::io::ErrorKind) -> anyhow::Error {
        anyhow::Error::new(std::io::Error::new(kind, "gone"))
    }

    #[test]
    fn an_unavailable_db_error_is_found_under_context() {
        let err = anyhow::Error::new(DbError::Unavailable("down".to_owned()))
            .context("Failed to list posts")
            .context("Failed to serve the feed");
        assert_eq!(unavailable_cause(err.as_ref()).as_deref(), Some("down"));
        assert!(matches!(DbError::from(err), DbError::Unavailable(_)));
    }

    #[tokio::test]
    async fn a_refused_connection_and_a_pool_that_cannot_connect_are_unavailable() {
        // A port nobody listens on (bound, then released).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let url = format!("host=127.0.0.1 port={port} user=nobody dbname=nothing");
        let config: tokio_postgres::Config = url.parse().expect("config");
        let err = config
            .connect(tokio_postgres::NoTls)
            .await
            .err()
            .expect("nothing listens there");
        assert!(matches!(DbError::from(err), DbError::Unavailable(_)));

        let db = crate::Db::connect(&url, &crate::DbOptions::default()).expect("pool");
        let err = db.ping().await.expect_err("nothing listens there");
        assert!(matches!(err, DbError::Unavailable(_)), "{err:?}");
    }

    /// A server that reads the startup message and then resets the
    /// connection: the client's read fails with an I/O error, tokio-postgres'
    /// "error communicating with the server", which a server killed mid-query
    /// gives (the error that answered 500 before).
    #[tokio::test]
    async fn a_connection_reset_mid_conversation_is_unavailable() {
        use tokio::io::AsyncReadExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut startup = [0u8; 8];
            socket.read_exact(&mut startup).await.expect("startup");
            socket
                .set_zero_linger()
                .expect("SO_LINGER 0: close with RST");
            drop(socket);
        });
        let config: tokio_postgres::Config =
            format!("host=127.0.0.1 port={port} user=nobody dbname=nothing")
                .parse()
                .expect("config");
        let err = config
            .connect(tokio_postgres::NoTls)
            .await
            .err()
            .expect("the server hung up");
        server.await.expect("the fake server");
        assert_eq!(err.to_string(), "error communicating with the server");
        let wrapped = anyhow::Error::new(err).context("Failed to list posts");
        assert!(matches!(DbError::from(wrapped), DbError::Unavailable(_)));
    }

    #[test]
    fn a_pool_timeout_is_unavailable() {
        let err = deadpool_postgres::PoolError::Timeout(deadpool_postgres::TimeoutType::Create);
        assert!(matches!(DbError::from(err), DbError::Unavailable(_)));
    }

    #[test]
    fn ordinary_errors_are_not_unavailable() {
        // A plain I/O error (a file, not the database) is not the database
        // being away, nor is a busy share or a message.
        let err = io_error(std::io::ErrorKind::ConnectionRefused).context("reading a file");
        assert_eq!(unavailable_cause(err.as_ref()), None);
        assert!(matches!(DbError::from(err), DbError::Other(_)));
        let busy = anyhow::Error::new(DbError::Busy("share".to_owned()));
        assert_eq!(unavailable_cause(busy.as_ref()), None);
        assert!(!DbError::Busy("share".to_owned()).is_unavailable());
    }

    #[test]
    fn the_throttle_logs_once_per_interval_and_counts_the_rest() {
        let throttle = Throttle::new(Duration::from_secs(3_600));
        assert_eq!(throttle.admit(), Some(0));
        assert_eq!(throttle.admit(), None);
        assert_eq!(throttle.admit(), None);
        let every = Throttle::new(Duration::ZERO);
        assert_eq!(every.admit(), Some(0));
        assert_eq!(every.admit(), Some(0));
    }
}
