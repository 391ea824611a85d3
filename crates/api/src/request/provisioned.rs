//! The users already provisioned in `users` with the email and name their
//! token carries, so that a request costs no statement for it.
//!
//! An entry is a 64-bit hash of (user, email, name, cell) and the instant it
//! stops counting, held inline in a sharded table: no allocation of its own.
//! It was a moka cache, whose entries are each a few heap objects living
//! an hour. Scattered among the short-lived objects a tenant's first
//! requests make, they kept every page those shared in use after the tenant
//! went idle (BENCHMARKS.md, "Session 12").

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

/// How long a user counts as provisioned; after it, the next request
/// provisions again (a read when nothing changed).
pub const PROVISIONED_TTL: Duration = Duration::from_secs(3_600);

/// Shards: each a lock and a table.
const SHARDS: usize = 16;

/// Entries a shard keeps at most (the table: 16 times as many). A full
/// shard first drops its expired entries; if it is still full, a new user
/// is not remembered and provisions again on its next request.
pub const MAX_ENTRIES_PER_SHARD: usize = 8_192;

/// The users known to be provisioned, with when each stops counting.
pub struct Provisioned {
    shards: Box<[Mutex<HashMap<u64, Instant, foldhash::fast::RandomState>>]>,
}

impl Default for Provisioned {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

impl Provisioned {
    /// Whether `key` was provisioned less than [`PROVISIONED_TTL`] ago.
    pub fn contains(&self, key: u64, now: Instant) -> bool {
        self.shard(key).get(&key).is_some_and(|until| *until > now)
    }

    /// Remembers `key` as provisioned from `now`.
    pub fn insert(&self, key: u64, now: Instant) {
        let mut shard = self.shard(key);
        if shard.len() >= MAX_ENTRIES_PER_SHARD && !shard.contains_key(&key) {
            shard.retain(|_, until| *until > now);
            if shard.len() >= MAX_ENTRIES_PER_SHARD {
                return;
            }
        }
        shard.insert(key, now + PROVISIONED_TTL);
    }

    /// Drops the expired entries and gives a table's memory back once most
    /// of it is empty. Run by the server's upkeep.
    pub fn sweep(&self, now: Instant) {
        for shard in &self.shards {
            let mut shard = lock(shard);
            shard.retain(|_, until| *until > now);
            tenantry_cache::shrink_if_sparse(&mut shard, 64);
        }
    }

    /// Entries held, expired or not.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(
        &self,
        key: u64,
    ) -> MutexGuard<'_, HashMap<u64, Instant, foldhash::fast::RandomState>> {
        // The key is already a hash: its low bits pick the shard.
        lock(&self.shards[(key % SHARDS as u64) as usize])
    }
}

/// A shard's lock; a panic while it was held left a table that is still
/// whole (every change is one call), so a poisoned lock is used as it is.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_counts_until_its_ttl_then_the_sweep_drops_it() {
        let p = Provisioned::default();
        let t0 = Instant::now();
        assert!(!p.contains(7, t0));
        p.insert(7, t0);
        assert!(p.contains(7, t0 + PROVISIONED_TTL - Duration::from_secs(1)));
        assert!(!p.contains(7, t0 + PROVISIONED_TTL));
        p.sweep(t0 + Duration::from_secs(1));
        assert_eq!(p.len(), 1, "a live entry survives the sweep");
        p.sweep(t0 + PROVISIONED_TTL);
        assert!(p.is_empty());
    }

    #[test]
    fn a_full_shard_makes_room_from_expired_entries_and_never_grows_past_its_bound() {
        let p = Provisioned::default();
        let t0 = Instant::now();
        // Keys with the same low bits all land in shard 0.
        let key = |i: u64| i * SHARDS as u64;
        for i in 0..MAX_ENTRIES_PER_SHARD as u64 {
            p.insert(key(i), t0);
        }
        p.insert(key(u64::MAX / 32), t0);
        assert_eq!(p.len(), MAX_ENTRIES_PER_SHARD, "a full shard keeps no more");
        assert!(!p.contains(key(u64::MAX / 32), t0));
        assert!(p.contains(key(0), t0), "nothing live was dropped for it");

        let later = t0 + PROVISIONED_TTL;
        p.insert(key(u64::MAX / 32), later);
        assert_eq!(p.len(), 1, "the expired entries made room");
        assert!(p.contains(key(u64::MAX / 32), later));
    }
}
