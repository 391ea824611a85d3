//! What can go wrong talking to PostgreSQL, in the terms the HTTP edge needs.

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
    /// No connection could be had in time, or the server went away.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<tokio_postgres::Error> for DbError {
    fn from(err: tokio_postgres::Error) -> Self {
        if let Some(db) = err.as_db_error() {
            let code = db.code();
            if *code == SqlState::UNIQUE_VIOLATION || *code == SqlState::FOREIGN_KEY_VIOLATION {
                return DbError::Conflict {
                    constraint: db.constraint().unwrap_or_default().to_owned(),
                };
            }
            if *code == SqlState::QUERY_CANCELED {
                return DbError::Timeout;
            }
            if *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED
                || *code == SqlState::TOO_MANY_CONNECTIONS
                || *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
            {
                return DbError::Unavailable(db.message().to_owned());
            }
        }
        if err.is_closed() {
            return DbError::Unavailable("connection closed".to_owned());
        }
        DbError::Other(anyhow::Error::new(err))
    }
}

impl From<deadpool_postgres::PoolError> for DbError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        match err {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => DbError::Unavailable(other.to_string()),
        }
    }
}
