//! Rate limits per tenant and per (tenant, user), shared by every server node
//! through Redis when there is one.
//!
//! With `REDIS_URL`, one Lua script runs both GCRA checks atomically in Redis
//! on Redis's clock, so all nodes draw from the same budget. Redis calls have
//! a tight timeout; when one fails, a circuit breaker sends every check to the
//! node-local limiters for a short while, so a Redis outage never fails a
//! request: limits become per node (looser by the node count) and say so in
//! the metrics and logs until Redis answers again.

use std::sync::Mutex;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::time::Instant;
use uuid::Uuid;

use crate::gcra::{Decision, Gcra, Quota};

/// How long one Redis round trip may take before the local limiters answer.
const REDIS_TIMEOUT: Duration = Duration::from_millis(50);
/// How long the breaker stays open after a Redis failure.
const BREAKER_OPEN: Duration = Duration::from_secs(2);

/// The outcome for one request: the tenant's decision, and the user's if the
/// tenant's allowed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    pub tenant: Decision,
    pub user: Option<Decision>,
}

impl Checked {
    pub fn allowed(&self) -> bool {
        self.tenant.allowed && self.user.is_none_or(|u| u.allowed)
    }

    /// The decision to report: a denial, or the tighter of the two.
    pub fn binding(&self) -> Decision {
        match self.user {
            Some(u) if !u.allowed || u.remaining < self.tenant.remaining => u,
            _ => self.tenant,
        }
    }
}

pub struct RateLimiter {
    tenant: Gcra<Uuid>,
    user: Gcra<(Uuid, Uuid)>,
    shared: Option<Shared>,
}

struct Shared {
    client: redis::Client,
    script: redis::Script,
    conn: Mutex<Option<MultiplexedConnection>>,
    /// While set and in the future, checks go to the local limiters.
    open_until: Mutex<Option<Instant>>,
}

/// Both checks in one atomic step. Times are microseconds on Redis's clock;
/// each key holds its TAT and expires once the TAT has passed (a key whose TAT
/// is in the past is the same as no key). The user's key is only checked
/// (and counted) when the tenant's allowed the request.
const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function check(key, interval, tolerance)
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local new_tat = tat + interval
  local ahead = new_tat - now
  if ahead <= tolerance then
    redis.call('SET', key, new_tat, 'PX', math.ceil(ahead / 1000) + 1)
    return {1, math.floor((tolerance - ahead) / interval), ahead, 0}
  end
  return {0, 0, tat - now, ahead - tolerance}
end
local tenant = check(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))
if tenant[1] == 0 then return {tenant} end
return {tenant, check(KEYS[2], tonumber(ARGV[3]), tonumber(ARGV[4]))}
";

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn interval(q: Quota) -> Duration {
    Duration::from_secs(1) / q.per_sec.max(1)
}

impl RateLimiter {
    /// Limits kept in this process only.
    pub fn local() -> Self {
        Self {
            tenant: Gcra::new(),
            user: Gcra::new(),
            shared: None,
        }
    }

    /// Limits shared through Redis at `url`. Nothing is connected yet: the
    /// first check connects, and a Redis that is down only means local limits.
    pub fn with_redis(url: &str) -> Result<Self, redis::RedisError> {
        Ok(Self::with_redis_client(redis::Client::open(url)?))
    }

    /// Limits shared through the Redis of `client` (e.g. `rediss://` with a
    /// CA of one's own). Nothing is connected yet.
    pub fn with_redis_client(client: redis::Client) -> Self {
        Self {
            shared: Some(Shared {
                client,
                script: redis::Script::new(SCRIPT),
                conn: Mutex::new(None),
                open_until: Mutex::new(None),
            }),
            ..Self::local()
        }
    }

    /// Whether checks currently go to Redis.
    pub fn is_shared(&self) -> bool {
        self.shared
            .as_ref()
            .is_some_and(|s| !s.breaker_open(Instant::now()))
    }

    /// Checks (and counts) one request of `user` in `tenant`.
    pub async fn check(&self, tenant: Uuid, user: Uuid, tq: Quota, uq: Quota) -> Checked {
        if let Some(shared) = &self.shared
            && !shared.breaker_open(Instant::now())
        {
            match tokio::time::timeout(REDIS_TIMEOUT, shared.check(tenant, user, tq, uq)).await {
                Ok(Ok(checked)) => return checked,
                Ok(Err(e)) => shared.trip(&e.to_string()),
                Err(_) => shared.trip("timed out"),
            }
        }
        self.check_local(tenant, user, tq, uq)
    }

    fn check_local(&self, tenant: Uuid, user: Uuid, tq: Quota, uq: Quota) -> Checked {
        let now = Instant::now();
        let t = self.tenant.check_at(&tenant, tq, now);
        let u = t
            .allowed
            .then(|| self.user.check_at(&(tenant, user), uq, now));
        Checked { tenant: t, user: u }
    }

    /// Forgets local keys whose limit has fully recovered.
    pub fn retain_recent(&self) {
        self.tenant.retain_recent();
        self.user.retain_recent();
    }
}

impl Shared {
    fn breaker_open(&self, now: Instant) -> bool {
        let mut open = self.open_until.lock().unwrap_or_else(|e| e.into_inner());
        match *open {
            Some(until) if until > now => true,
            Some(_) => {
                *open = None;
                tracing::info!("Redis answers again: rate limits are shared across nodes");
                metrics::gauge!("tenantry_rate_limit_shared").set(1.0);
                false
            }
            None => false,
        }
    }

    fn trip(&self, why: &str) {
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let mut open = self.open_until.lock().unwrap_or_else(|e| e.into_inner());
        if open.is_none() {
            tracing::warn!(
                error = why,
                "Redis unavailable: rate limits fall back to this node"
            );
        }
        *open = Some(Instant::now() + BREAKER_OPEN);
        metrics::gauge!("tenantry_rate_limit_shared").set(0.0);
        metrics::counter!("tenantry_rate_limit_fallbacks_total").increment(1);
    }

    async fn connection(&self) -> Result<MultiplexedConnection, redis::RedisError> {
        if let Some(conn) = self.conn.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Ok(conn);
        }
        let conn = self.client.get_multiplexed_async_connection().await?;
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn.clone());
        Ok(conn)
    }

    async fn check(
        &self,
        tenant: Uuid,
        user: Uuid,
        tq: Quota,
        uq: Quota,
    ) -> Result<Checked, redis::RedisError> {
        let mut conn = self.connection().await?;
        // One hash tag per tenant keeps both keys in one Redis Cluster slot.
        let tenant_key = format!("tenantry:rl:{{{tenant}}}:t");
        let user_key = format!("tenantry:rl:{{{tenant}}}:u:{user}");
        let (ti, ui) = (interval(tq), interval(uq));
        let reply: Vec<Vec<i64>> = self
            .script
            .key(tenant_key)
            .key(user_key)
            .arg(micros(ti))
            .arg(micros(ti * tq.burst.max(1)))
            .arg(micros(ui))
            .arg(micros(ui * uq.burst.max(1)))
            .invoke_async(&mut conn)
            .await?;
        let decision = |fields: &Vec<i64>, quota: Quota| -> Option<Decision> {
            let us = |i: usize| {
                fields
                    .get(i)
                    .map(|v| Duration::from_micros(u64::try_from(*v).unwrap_or(0)))
            };
            Some(Decision {
                allowed: *fields.first()? == 1,
                quota,
                remaining: u32::try_from(*fields.get(1)?).unwrap_or(0),
                reset: us(2)?,
                retry_after: us(3)?,
            })
        };
        let malformed = || {
            redis::RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "malformed rate-limit reply",
            ))
        };
        let tenant_decision = reply
            .first()
            .and_then(|f| decision(f, tq))
            .ok_or_else(malformed)?;
        let user_decision = match reply.get(1) {
            Some(f) => Some(decision(f, uq).ok_or_else(malformed)?),
            None => None,
        };
        Ok(Checked {
            tenant: tenant_decision,
            user: user_decision,
        })
    }
}
