//! The shared second level: Redis, reached with a tight timeout behind a
//! circuit breaker (the house pattern of `tenantry_fairness::rate`).
//!
//! Every call answers within [`REDIS_TIMEOUT`] or not at all: a failure or a
//! timeout opens the breaker for [`BREAKER_OPEN`], during which no call is
//! tried and the cache serves from L1 and the database. The first call after
//! that tries Redis again; when it answers, the owner is told the breaker
//! closed (see [`Health::Recovered`]) so it can drop what it may have missed.

use std::sync::Mutex;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::time::Instant;

/// How long one Redis round trip may take before the cache does without it.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(50);
/// How long the breaker stays open after a Redis failure.
pub const BREAKER_OPEN: Duration = Duration::from_secs(2);

/// Whether Redis may be used now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Redis answered recently (or was never tried): use it.
    Up,
    /// The breaker is open: do without Redis.
    Open,
    /// The breaker has just closed: use Redis again, after forgetting
    /// everything learned while it was away.
    Recovered,
}

pub struct L2 {
    client: redis::Client,
    conn: Mutex<Option<MultiplexedConnection>>,
    open_until: Mutex<Option<Instant>>,
    /// Every key starts with it, so several deployments (or tests) can share
    /// one Redis.
    pub prefix: String,
}

impl L2 {
    /// A client for `url`. Nothing is connected yet.
    pub fn new(url: &str, prefix: &str) -> Result<Self, redis::RedisError> {
        Ok(Self::with_client(redis::Client::open(url)?, prefix))
    }

    /// Over `client` (made by [`crate::redis_client`] for `rediss://` with a
    /// CA of one's own). Nothing is connected yet.
    pub fn with_client(client: redis::Client, prefix: &str) -> Self {
        Self {
            client,
            conn: Mutex::new(None),
            open_until: Mutex::new(None),
            prefix: prefix.to_owned(),
        }
    }

    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// Whether Redis may be tried now; reports the breaker closing once.
    pub fn health(&self) -> Health {
        let mut open = self.open_until.lock().unwrap_or_else(|e| e.into_inner());
        match *open {
            Some(until) if until > Instant::now() => Health::Open,
            Some(_) => {
                *open = None;
                tracing::info!("Redis answers again: the shared cache is back");
                metrics::gauge!("tenantry_cache_l2_up").set(1.0);
                Health::Recovered
            }
            None => Health::Up,
        }
    }

    /// Opens the breaker.
    pub fn trip(&self, why: &str) {
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let mut open = self.open_until.lock().unwrap_or_else(|e| e.into_inner());
        if open.is_none() {
            tracing::warn!(
                error = why,
                "Redis unavailable: the cache serves from memory and the database"
            );
        }
        *open = Some(Instant::now() + BREAKER_OPEN);
        metrics::gauge!("tenantry_cache_l2_up").set(0.0);
        metrics::counter!("tenantry_cache_l2_failures_total").increment(1);
    }

    async fn connection(&self) -> Result<MultiplexedConnection, redis::RedisError> {
        if let Some(conn) = self.conn.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Ok(conn);
        }
        let conn = self.client.get_multiplexed_async_connection().await?;
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn.clone());
        Ok(conn)
    }

    /// Runs `cmd` if the breaker is closed, within the timeout; `None` when
    /// Redis is not there (and then the breaker opens).
    pub async fn call<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Option<T> {
        if self.health() == Health::Open {
            return None;
        }
        let run = async {
            let mut conn = self.connection().await?;
            cmd.query_async::<T>(&mut conn).await
        };
        match tokio::time::timeout(REDIS_TIMEOUT, run).await {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                self.trip(&e.to_string());
                None
            }
            Err(_) => {
                self.trip("timed out");
                None
            }
        }
    }

    pub async fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.call::<Option<Vec<u8>>>(redis::cmd("GET").arg(key))
            .await
            .flatten()
    }

    pub async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> bool {
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        self.call::<()>(redis::cmd("SET").arg(key).arg(value).arg("PX").arg(ms))
            .await
            .is_some()
    }
}
