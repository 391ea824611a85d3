//! Holding one tenant's requests: the fence of a move between cells.
//!
//! While a tenant moves, its final catch-up needs its writes to stop for a
//! moment. [`Holds::hold`] stops new requests of the tenant at admission
//! (they wait, up to their budget, rather than fail) and waits until those
//! already admitted are done; dropping the [`Hold`] lets the waiting ones
//! go, and they look their tenant up again, so they reach the cell the
//! directory names now.
//!
//! Requests are counted only on a server with cells (a server with one
//! database never moves a tenant and pays nothing): one shard lock and a
//! counter per request. An [`InFlight`] and a [`Hold`] give back what they
//! took in `Drop`, whatever await their owner dies at.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use uuid::Uuid;

/// Shards of the table of gates, so requests of different tenants rarely
/// meet on one lock.
const SHARDS: usize = 64;

/// One tenant's gate: its admitted requests, and whether it is held.
struct Gate {
    in_flight: watch::Sender<usize>,
    held: watch::Sender<bool>,
}

impl Gate {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            in_flight: watch::Sender::new(0),
            held: watch::Sender::new(false),
        })
    }
}

/// One shard of the table: tenants' gates by tenant id.
type Shard = Mutex<HashMap<Uuid, Arc<Gate>>>;

/// The gates of the tenants with requests in flight or a hold.
pub struct Holds {
    shards: Box<[Shard]>,
}

impl Default for Holds {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

/// A request waited for its tenant's hold longer than its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StillHeld;

/// The requests of a tenant in flight did not finish within the budget of
/// [`Holds::hold`] (the hold is given back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotDrained;

impl Holds {
    fn shard(&self, tenant: Uuid) -> std::sync::MutexGuard<'_, HashMap<Uuid, Arc<Gate>>> {
        let i = (tenant.as_u128() % SHARDS as u128) as usize;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a request of `tenant`: at once unless the tenant is held,
    /// else when the hold ends (at most `budget`). Returns the request's
    /// place among those in flight, and whether it waited (then the tenant
    /// may have moved: look it up again).
    pub async fn enter(
        self: &Arc<Self>,
        tenant: Uuid,
        budget: Duration,
    ) -> Result<(InFlight, bool), StillHeld> {
        let deadline = tokio::time::Instant::now() + budget;
        let mut waited = false;
        loop {
            let mut held = {
                let mut shard = self.shard(tenant);
                let gate = shard.entry(tenant).or_insert_with(Gate::new);
                if !*gate.held.borrow() {
                    gate.in_flight.send_modify(|n| *n += 1);
                    return Ok((
                        InFlight {
                            holds: self.clone(),
                            tenant,
                        },
                        waited,
                    ));
                }
                gate.held.subscribe()
            };
            waited = true;
            match tokio::time::timeout_at(deadline, held.wait_for(|h| !*h)).await {
                Ok(_) => continue,
                Err(_) => return Err(StillHeld),
            }
        }
    }

    /// Holds `tenant`'s new requests and waits (at most `drain`) until
    /// those in flight are done. The hold lasts until the [`Hold`] is
    /// dropped.
    pub async fn hold(self: &Arc<Self>, tenant: Uuid, drain: Duration) -> Result<Hold, NotDrained> {
        let mut in_flight = {
            let mut shard = self.shard(tenant);
            let gate = shard.entry(tenant).or_insert_with(Gate::new);
            gate.held.send_replace(true);
            gate.in_flight.subscribe()
        };
        let hold = Hold {
            holds: self.clone(),
            tenant,
        };
        match tokio::time::timeout(drain, in_flight.wait_for(|n| *n == 0)).await {
            Ok(_) => Ok(hold),
            // Dropping `hold` lets the waiting requests go.
            Err(_) => Err(NotDrained),
        }
    }

    /// Whether `tenant` is held now.
    pub fn is_held(&self, tenant: Uuid) -> bool {
        self.shard(tenant)
            .get(&tenant)
            .is_some_and(|g| *g.held.borrow())
    }

    /// Requests of `tenant` in flight now.
    pub fn in_flight(&self, tenant: Uuid) -> usize {
        self.shard(tenant)
            .get(&tenant)
            .map_or(0, |g| *g.in_flight.borrow())
    }

    /// Forgets the gate of `tenant` once nothing uses it.
    fn tidy(shard: &mut HashMap<Uuid, Arc<Gate>>, tenant: Uuid) {
        if shard
            .get(&tenant)
            .is_some_and(|g| *g.in_flight.borrow() == 0 && !*g.held.borrow())
        {
            shard.remove(&tenant);
        }
    }
}

/// A request of a tenant in flight (see [`Holds::enter`]).
pub struct InFlight {
    holds: Arc<Holds>,
    tenant: Uuid,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut shard = self.holds.shard(self.tenant);
        if let Some(gate) = shard.get(&self.tenant) {
            gate.in_flight.send_modify(|n| *n = n.saturating_sub(1));
        }
        Holds::tidy(&mut shard, self.tenant);
    }
}

/// A tenant held (see [`Holds::hold`]): released when dropped.
pub struct Hold {
    holds: Arc<Holds>,
    tenant: Uuid,
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut shard = self.holds.shard(self.tenant);
        if let Some(gate) = shard.get(&self.tenant) {
            gate.held.send_replace(false);
        }
        Holds::tidy(&mut shard, self.tenant);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn a_hold_waits_for_requests_in_flight_and_holds_new_ones_until_dropped() {
        let holds = Arc::new(Holds::default());
        let tenant = Uuid::now_v7();
        let other = Uuid::now_v7();
        let (first, waited) = holds.enter(tenant, LONG).await.expect("admitted");
        assert!(!waited);
        assert_eq!(holds.in_flight(tenant), 1);

        // The hold waits for the request in flight.
        let hold = tokio::spawn({
            let holds = holds.clone();
            async move { holds.hold(tenant, LONG).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(holds.is_held(tenant));
        assert!(!hold.is_finished());

        // A new request waits; another tenant's does not.
        let second = tokio::spawn({
            let holds = holds.clone();
            async move { holds.enter(tenant, LONG).await.map(|(f, w)| (w, f)) }
        });
        let (_other, waited) = holds.enter(other, LONG).await.expect("not held");
        assert!(!waited);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!second.is_finished());

        drop(first);
        let hold = hold.await.expect("joined").expect("drained");
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!second.is_finished(), "held until the hold is dropped");
        drop(hold);
        let (waited, _second) = second.await.expect("joined").expect("admitted");
        assert!(waited, "it says it waited: the tenant may have moved");
        assert!(!holds.is_held(tenant));
    }

    #[tokio::test]
    async fn a_request_held_past_its_budget_is_refused_and_a_hold_not_drained_is_given_back() {
        let holds = Arc::new(Holds::default());
        let tenant = Uuid::now_v7();
        let (first, _) = holds.enter(tenant, LONG).await.expect("admitted");
        assert_eq!(
            holds.hold(tenant, Duration::from_millis(100)).await.err(),
            Some(NotDrained)
        );
        assert!(!holds.is_held(tenant), "given back");
        let hold = holds.enter(tenant, LONG).await;
        assert!(hold.is_ok());
        drop(hold);
        drop(first);

        let hold = holds.hold(tenant, LONG).await.expect("nothing in flight");
        assert_eq!(
            holds.enter(tenant, Duration::from_millis(100)).await.err(),
            Some(StillHeld)
        );
        drop(hold);
        assert_eq!(holds.in_flight(tenant), 0);
        assert!(holds.shard(tenant).get(&tenant).is_none(), "tidied away");
    }

    #[tokio::test]
    async fn a_waiting_request_dropped_midway_leaves_nothing_behind() {
        let holds = Arc::new(Holds::default());
        let tenant = Uuid::now_v7();
        let hold = holds.hold(tenant, LONG).await.expect("held");
        let waiting = tokio::spawn({
            let holds = holds.clone();
            async move { holds.enter(tenant, LONG).await.is_ok() }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        waiting.abort();
        let _ = waiting.await;
        drop(hold);
        assert_eq!(holds.in_flight(tenant), 0);
        assert!(holds.shard(tenant).get(&tenant).is_none());
    }
}
