//! The generic cell rate algorithm (GCRA), keyed.
//!
//! Each key keeps one instant, its theoretical arrival time (TAT). A request
//! at `now` would move it to `max(tat, now) + T`, where `T = 1 / rate`; it is
//! allowed if that lies at most `burst × T` ahead of `now`. So `burst`
//! requests may arrive at once, then one every `T`. A key whose TAT is in the
//! past is the same as a key never seen, which is what lets [`Gcra::retain_recent`]
//! forget it.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};

use foldhash::fast::RandomState;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// A rate: `per_sec` steady, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub per_sec: u32,
    pub burst: u32,
}

/// What a check decided, with what the `RateLimit` headers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub quota: Quota,
    /// Requests that could still be made right now.
    pub remaining: u32,
    /// Until the key is back to a full burst.
    pub reset: Duration,
    /// When denied: how long until a request would be allowed.
    pub retry_after: Duration,
}

/// Number of independently locked shards: requests of different tenants
/// rarely wait on each other's lock.
const SHARDS: usize = 16;

/// A keyed GCRA limiter. Each key may have its own quota (a tenant's tier).
pub struct Gcra<K> {
    shards: Vec<Mutex<HashMap<K, Instant, RandomState>>>,
    hasher: RandomState,
}

impl<K: Hash + Eq + Clone> Default for Gcra<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Hash + Eq + Clone> Gcra<K> {
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::default()))
                .collect(),
            hasher: RandomState::default(),
        }
    }

    fn shard(&self, key: &K) -> &Mutex<HashMap<K, Instant, RandomState>> {
        let index = (self.hasher.hash_one(key) as usize) % SHARDS;
        &self.shards[index]
    }

    /// Checks one request for `key` against `quota`, counting it if allowed.
    pub fn check(&self, key: &K, quota: Quota) -> Decision {
        self.check_at(key, quota, Instant::now())
    }

    /// [`Gcra::check`] at `now` (one clock read for several checks).
    pub fn check_at(&self, key: &K, quota: Quota, now: Instant) -> Decision {
        // A std mutex: the critical section is a few arithmetic operations and
        // never awaits, so an async mutex would only add overhead.
        let mut shard = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
        let slot = shard.entry(key.clone()).or_insert(now);
        let tat = (*slot).max(now);
        decide(slot, tat, now, quota)
    }

    /// Forgets keys whose TAT has passed (they behave as never seen). Call it
    /// periodically so the map holds only recently active keys.
    pub fn retain_recent(&self) {
        let now = Instant::now();
        for shard in &self.shards {
            shard
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|_, tat| *tat > now);
        }
    }

    /// How many keys are tracked.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// In whole nanoseconds (u64: a tolerance of up to `u32::MAX` seconds fits),
/// which keeps Duration's second/nanosecond normalization and 128-bit
/// division out of every request.
fn decide(slot: &mut Instant, tat: Instant, now: Instant, quota: Quota) -> Decision {
    let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let interval = 1_000_000_000 / u64::from(quota.per_sec.max(1));
    let tolerance = interval.saturating_mul(u64::from(quota.burst.max(1)));
    let behind = nanos(tat - now);
    let ahead = behind.saturating_add(interval);
    if ahead <= tolerance {
        *slot = tat + Duration::from_nanos(interval);
        Decision {
            allowed: true,
            quota,
            remaining: ((tolerance - ahead) / interval.max(1)) as u32,
            reset: Duration::from_nanos(ahead),
            retry_after: Duration::ZERO,
        }
    } else {
        // Not counted: a denied request must not push the TAT further out, or
        // a client retrying too early would lock itself out.
        *slot = tat;
        Decision {
            allowed: false,
            quota,
            remaining: 0,
            reset: Duration::from_nanos(behind),
            retry_after: Duration::from_nanos(ahead - tolerance),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: Quota = Quota {
        per_sec: 10,
        burst: 5,
    };

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_allowed_then_one_per_interval() {
        let limiter = Gcra::new();
        for i in 0..5 {
            let d = limiter.check(&"t", Q);
            assert!(d.allowed, "request {i} of the burst");
            assert_eq!(d.remaining, 4 - i);
        }
        let denied = limiter.check(&"t", Q);
        assert!(!denied.allowed);
        assert_eq!(denied.retry_after, Duration::from_millis(100));

        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(limiter.check(&"t", Q).allowed);
        assert!(!limiter.check(&"t", Q).allowed);
    }

    #[tokio::test(start_paused = true)]
    async fn denied_requests_do_not_push_the_limit_further_out() {
        let limiter = Gcra::new();
        for _ in 0..5 {
            limiter.check(&"t", Q);
        }
        for _ in 0..100 {
            assert!(!limiter.check(&"t", Q).allowed);
        }
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(limiter.check(&"t", Q).allowed);
    }

    #[tokio::test(start_paused = true)]
    async fn keys_are_independent() {
        let limiter = Gcra::new();
        for _ in 0..5 {
            assert!(limiter.check(&"noisy", Q).allowed);
        }
        assert!(!limiter.check(&"noisy", Q).allowed);
        assert!(limiter.check(&"quiet", Q).allowed);
    }

    #[tokio::test(start_paused = true)]
    async fn the_steady_rate_is_the_quota() {
        let limiter = Gcra::new();
        let mut allowed = 0;
        // 10 seconds of a client hammering every millisecond.
        for _ in 0..10_000 {
            if limiter.check(&"t", Q).allowed {
                allowed += 1;
            }
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        // The burst, then 10 per second.
        assert!((100..=106).contains(&allowed), "allowed {allowed}");
    }

    #[tokio::test(start_paused = true)]
    async fn idle_keys_are_forgotten() {
        let limiter = Gcra::new();
        limiter.check(&"a", Q);
        limiter.check(&"b", Q);
        assert_eq!(limiter.len(), 2);
        tokio::time::advance(Duration::from_secs(1)).await;
        limiter.retain_recent();
        assert!(limiter.is_empty());
    }
}
