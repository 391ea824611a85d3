//! The fair database share.
//!
//! The database can run only so much at once (about its cores' worth), so
//! Tenantry admits at most `capacity` operations to it and makes the rest
//! wait *here*, in a queue that is fair across tenants, instead of in the
//! pool's FIFO where one tenant's flood stands in front of everyone.
//!
//! - A tenant holds at most its own `limit` (its tier's `db_concurrency`).
//! - Each tenant's waiters are FIFO; tenants with waiters sit on a ring that is
//!   served by deficit round robin with quantum = the tenant's weight, so a
//!   weight-4 tenant is admitted four times per turn of a weight-1 tenant.
//! - A tenant alone may use all the capacity its limit allows. While other
//!   tenants have used the database within the last second, one tenant keeps
//!   to half the capacity (at least one slot, and at least one left free), so
//!   a quiet tenant's next operation finds a free slot instead of waiting for
//!   a flood's operation to finish, and runs beside at most half a capacity
//!   of the flood's. Tenants that each hold less than half (an even load)
//!   never meet this cap: they share the whole capacity.
//! - A waiter gives up after its budget (the caller answers 503).
//! - Blame: a wait that began while the capacity was full (not at the
//!   waiter's own limit, counting its tenant's waiters ahead) is attributed to
//!   the other tenants holding slots when it ends, in proportion to the slots
//!   each held. [`DbShare::take_blame`] drains these (culprit, victim) sums:
//!   the noisy-neighbour detector reads them. A wait the tenant caused itself
//!   blames nobody. The share keeps the holders apart from its tenants map,
//!   so attributing a wait walks no more tenants than there are slots in
//!   use, not every tenant that waited in the window (a thousand and more
//!   under a flood).
//!
//! - Capacity and per-tenant limits move at run time: [`DbShare::set_capacity`]
//!   (the adaptive limiter, [`crate::adaptive`]) and [`DbShare::set_limit`]
//!   (a tenant's scaled concurrency, [`crate::scaling`]). What they decide on
//!   is measured here and drained by [`DbShare::take_window`]: how long
//!   permits were held, the peak in use, and per tenant the operations
//!   admitted and the waiting at its own limit and for the capacity.
//! - The same queue admits CPU work (the API's request admission): one
//!   share per resource, each with its own capacity.
//!
//! Cancellation safety: a waiting request may be dropped at any moment (its
//! client hung up, its budget ran out). Every waiter is owned by a guard in
//! the waiting future, and a waiter is either still queued or already
//! admitted, decided under the one lock: the guard's `Drop` removes a queued
//! waiter, or gives back the slot of one admitted while nobody was left to
//! take it. A slot can therefore never be lost between the dispatcher and a
//! waiter that is gone.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;
use uuid::Uuid;

/// Why an operation was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// Waited its whole budget.
    Timeout,
}

/// A tenant's standing: its limit and weight, as in force for this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    pub tenant: Uuid,
    pub limit: u32,
    pub weight: u32,
}

#[derive(Default)]
struct TenantQueue {
    in_use: u32,
    limit: u32,
    weight: u32,
    /// Admissions left in this tenant's current turn.
    credit: u32,
    waiters: VecDeque<Waiter>,
    /// Measured since the last [`DbShare::take_window`].
    load: Load,
}

/// One tenant's use of the share over a window (see [`DbShare::take_window`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Load {
    admitted: u64,
    /// Waiting of operations queued at the tenant's own limit.
    limit_wait_us: u64,
    /// Waiting of operations queued for the capacity (full, or kept free
    /// for other tenants).
    capacity_wait_us: u64,
    /// Waiting of other tenants attributed to this one's slots (blame).
    caused_us: u64,
    timeouts: u64,
    peak: u32,
}

/// A queued operation: its ticket (to find it again when it gives up) and
/// the channel that wakes it once admitted.
struct Waiter {
    ticket: u64,
    wake: oneshot::Sender<()>,
    /// When it joined the queue.
    since: Instant,
    /// Whether it queued only because the capacity was full: its wait is
    /// then the other holders' doing (see the module doc, "Blame").
    blame_others: bool,
    /// Whether it queued because its tenant was at its own limit.
    at_limit: bool,
}

/// Waiting one tenant's operations spent behind another's slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blame {
    /// The tenant holding slots.
    pub culprit: Uuid,
    /// The tenant that waited.
    pub victim: Uuid,
    /// The waiting attributed, in microseconds.
    pub wait_us: u64,
}

/// (culprit, victim) pairs kept between two drains; past it, new pairs are
/// dropped (the detector reads every interval, so it is never reached in
/// practice, but memory stays bounded whatever happens).
const MAX_BLAME_PAIRS: usize = 16_384;

struct State {
    capacity: u32,
    in_use: u32,
    /// The two most recent distinct tenants to be admitted, newest first:
    /// enough to know in O(1) when another tenant was last active.
    recent: [(Option<Uuid>, Option<Instant>); 2],
    tenants: HashMap<Uuid, TenantQueue>,
    /// The tenants holding slots (`in_use > 0`), each once: no more than
    /// the slots in use, however many tenants the map holds, so that
    /// blaming the holders costs nothing per tenant seen.
    holding: Vec<Uuid>,
    /// Tenants with waiters, in service order.
    ring: VecDeque<Uuid>,
    next_ticket: u64,
    /// Waiting attributed since the last [`DbShare::take_blame`].
    blame: HashMap<(Uuid, Uuid), u64>,
    /// Limits set per tenant ([`DbShare::set_limit`]) in place of the
    /// claim's: only tenants whose scaled limit differs from their tier's.
    limits: HashMap<Uuid, u32>,
    /// Permits given back since the last [`DbShare::take_window`]: how many
    /// and how long they were held in all.
    held: u64,
    held_us: u64,
    peak: u32,
    /// The tenants map's size past which idle tenants are swept.
    sweep_at: usize,
}

/// The least size of the tenants map at which idle tenants are swept.
const SWEEP_AT: usize = 1_024;

impl Load {
    /// Whether the tenant waited, or made others wait, in this window.
    fn waited(&self) -> bool {
        self.limit_wait_us > 0
            || self.capacity_wait_us > 0
            || self.caused_us > 0
            || self.timeouts > 0
    }
}

/// How recently another tenant must have been admitted for the headroom to
/// be kept for it.
const ACTIVE_WINDOW: Duration = Duration::from_secs(1);

impl State {
    /// How many operations `tenant` may hold now: its own limit, less the
    /// headroom while other tenants are active.
    fn allowance(&self, tenant: Uuid, limit: u32, now: Instant) -> u32 {
        let other = match self.recent {
            [(Some(t), at), _] if t != tenant => at,
            [_, (_, at)] => at,
        };
        let others_active = other.is_some_and(|at| now.duration_since(at) < ACTIVE_WINDOW);
        if others_active {
            let headroom = (self.capacity / 2).max(1);
            limit.min(self.capacity.saturating_sub(headroom).max(1))
        } else {
            limit
        }
    }

    /// Attributes `waited` of `victim` to the other tenants holding slots,
    /// in proportion to the slots each holds. Runs on the contended path (a
    /// waiter leaving the queue), so it walks only the holders, never the
    /// tenants map: under a flood every waiting tenant stays in the map
    /// until the window is taken, thousands of them when many tenants each
    /// send a little.
    fn attribute(&mut self, victim: Uuid, waited: Duration) {
        let wait_us = u64::try_from(waited.as_micros()).unwrap_or(u64::MAX);
        if wait_us == 0 {
            return;
        }
        let State {
            tenants,
            blame,
            holding,
            ..
        } = self;
        let others: u64 = holding
            .iter()
            .filter(|id| **id != victim)
            .filter_map(|id| tenants.get(id))
            .map(|t| u64::from(t.in_use))
            .sum();
        if others == 0 {
            return;
        }
        for id in holding.iter() {
            if *id == victim {
                continue;
            }
            let Some(t) = tenants.get_mut(id) else {
                continue;
            };
            let share = wait_us.saturating_mul(u64::from(t.in_use)) / others;
            t.load.caused_us = t.load.caused_us.saturating_add(share);
            let key = (*id, victim);
            if let Some(sum) = blame.get_mut(&key) {
                *sum = sum.saturating_add(share);
            } else if blame.len() < MAX_BLAME_PAIRS {
                blame.insert(key, share);
            }
        }
    }

    /// Counts `waiter`'s wait into its tenant's load, as admitted or as
    /// given up.
    fn waited(&mut self, tenant: Uuid, waiter: &Waiter, now: Instant, admitted: bool) {
        let wait_us =
            u64::try_from(now.duration_since(waiter.since).as_micros()).unwrap_or(u64::MAX);
        if let Some(t) = self.tenants.get_mut(&tenant) {
            if waiter.at_limit {
                t.load.limit_wait_us = t.load.limit_wait_us.saturating_add(wait_us);
            } else {
                t.load.capacity_wait_us = t.load.capacity_wait_us.saturating_add(wait_us);
            }
            if !admitted {
                t.load.timeouts += 1;
            }
        }
    }

    /// The limit `tenant` holds to: the one set for it, or its claim's.
    fn limit_of(&self, tenant: Uuid, claimed: u32) -> u32 {
        self.limits.get(&tenant).copied().unwrap_or(claimed).max(1)
    }

    fn admitted(&mut self, tenant: Uuid, now: Instant) {
        self.peak = self.peak.max(self.in_use);
        if let Some(t) = self.tenants.get_mut(&tenant) {
            t.load.admitted += 1;
            t.load.peak = t.load.peak.max(t.in_use);
        }
        if self.recent[0].0 == Some(tenant) {
            self.recent[0].1 = Some(now);
        } else {
            self.recent[1] = self.recent[0];
            self.recent[0] = (Some(tenant), Some(now));
        }
    }
}

/// Shared by all requests of a server.
pub struct DbShare {
    // A std mutex: every critical section is short bookkeeping that never
    // awaits, and permits are released from Drop, which cannot await.
    state: Mutex<State>,
}

/// One admitted database operation; dropping it lets the next one in.
pub struct Permit {
    share: Arc<DbShare>,
    tenant: Uuid,
    /// When it was admitted: how long it is held is the latency the
    /// adaptive limiter reads.
    since: Instant,
}

/// Owns a queued waiter while its future waits. Dropped with the future,
/// whatever the reason (timeout, client gone), it either takes the waiter
/// off the queue or, if the dispatcher admitted it in the meantime, gives
/// the slot back. Disarmed when the waiter becomes a [`Permit`].
struct Queued<'a> {
    share: &'a Arc<DbShare>,
    tenant: Uuid,
    ticket: u64,
    armed: bool,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut state = self.share.lock();
        let state = &mut *state;
        if let Some(t) = state.tenants.get_mut(&self.tenant)
            && let Some(at) = t.waiters.iter().position(|w| w.ticket == self.ticket)
        {
            // Still queued: leave no trace but the blame for its wait.
            let waiter = t.waiters.remove(at).expect("found at this position");
            if t.waiters.is_empty() {
                t.credit = 0;
                state.ring.retain(|id| *id != self.tenant);
            }
            if waiter.blame_others {
                state.attribute(self.tenant, waiter.since.elapsed());
            }
            state.waited(self.tenant, &waiter, Instant::now(), false);
            return;
        }
        // Admitted, but nobody is left to use the slot.
        self.share.release_locked(state, self.tenant, None);
    }
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit")
            .field("tenant", &self.tenant)
            .finish()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.share.release(self.tenant, self.since);
    }
}

/// A snapshot for metrics and the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShareStats {
    pub capacity: u32,
    pub in_use: u32,
    pub waiting: usize,
    pub waiting_tenants: usize,
    /// Tenants the share keeps state for (active ones, and idle ones until
    /// the next window or beyond a small bound).
    pub tracked: usize,
}

/// What the share measured since the last [`DbShare::take_window`]: what
/// the adaptive limiter and the tenant scaler decide on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Window {
    /// The capacity in force when it was taken.
    pub capacity: u32,
    /// Permits given back, and how long they were held on average (µs).
    pub held: u64,
    pub mean_held_us: f64,
    /// The most operations in use at once.
    pub peak: u32,
    /// Operations waiting when it was taken.
    pub waiting: usize,
    /// Each tenant that used the share, waited or was waited for.
    pub tenants: Vec<TenantLoad>,
}

/// One tenant's use of the share over a [`Window`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantLoad {
    pub tenant: Uuid,
    /// The limit it held to when the window was taken.
    pub limit: u32,
    pub admitted: u64,
    /// Waiting (µs, summed) of its operations queued at its own limit:
    /// what a higher limit would have saved.
    pub limit_wait_us: u64,
    /// Waiting of its operations queued for the capacity.
    pub capacity_wait_us: u64,
    /// Other tenants' waiting for the capacity attributed to its slots.
    pub caused_us: u64,
    /// Operations that gave up waiting.
    pub timeouts: u64,
    /// The most it held at once.
    pub peak: u32,
}

impl DbShare {
    pub fn new(capacity: u32) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                capacity: capacity.max(1),
                in_use: 0,
                recent: [(None, None), (None, None)],
                tenants: HashMap::new(),
                holding: Vec::new(),
                ring: VecDeque::new(),
                next_ticket: 0,
                blame: HashMap::new(),
                limits: HashMap::new(),
                held: 0,
                held_us: 0,
                peak: 0,
                sweep_at: SWEEP_AT,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits one operation for `claim.tenant`, waiting at most `budget`.
    pub async fn acquire(
        self: &Arc<Self>,
        claim: Claim,
        budget: Duration,
    ) -> Result<Permit, Rejected> {
        let (ticket, woken) = {
            let mut state = self.lock();
            let state = &mut *state;
            let now = Instant::now();
            let capacity_free = state.in_use < state.capacity;
            let limit = state.limit_of(claim.tenant, claim.limit);
            let allowance = state.allowance(claim.tenant, limit, now);
            let tenant = state.tenants.entry(claim.tenant).or_default();
            tenant.limit = limit;
            tenant.weight = claim.weight.max(1);
            if capacity_free && tenant.in_use < allowance && tenant.waiters.is_empty() {
                tenant.in_use += 1;
                if tenant.in_use == 1 {
                    state.holding.push(claim.tenant);
                }
                state.in_use += 1;
                state.admitted(claim.tenant, now);
                return Ok(Permit {
                    share: self.clone(),
                    tenant: claim.tenant,
                    since: now,
                });
            }
            let ticket = state.next_ticket;
            state.next_ticket += 1;
            let (wake, woken) = oneshot::channel();
            let ahead = tenant.in_use as usize + tenant.waiters.len();
            let blame_others = !capacity_free && ahead < allowance as usize;
            let at_limit = ahead >= limit as usize;
            tenant.waiters.push_back(Waiter {
                ticket,
                wake,
                since: now,
                blame_others,
                at_limit,
            });
            if tenant.waiters.len() == 1 {
                if tenant.credit == 0 {
                    tenant.credit = tenant.weight;
                }
                state.ring.push_back(claim.tenant);
            }
            (ticket, woken)
        };
        let mut queued = Queued {
            share: self,
            tenant: claim.tenant,
            ticket,
            armed: true,
        };
        match tokio::time::timeout(budget, woken).await {
            Ok(Ok(())) => {
                queued.armed = false;
                Ok(Permit {
                    share: self.clone(),
                    tenant: claim.tenant,
                    since: Instant::now(),
                })
            }
            // Timed out (or the share is gone): `queued`'s Drop takes the
            // waiter off the queue, or returns a slot handed over meanwhile.
            Ok(Err(_)) | Err(_) => Err(Rejected::Timeout),
        }
    }

    fn release(self: &Arc<Self>, tenant: Uuid, since: Instant) {
        let mut state = self.lock();
        self.release_locked(&mut state, tenant, Some(since));
    }

    /// Gives a slot back; `since`: when it was admitted, if it was used.
    fn release_locked(self: &Arc<Self>, state: &mut State, tenant: Uuid, since: Option<Instant>) {
        if let Some(since) = since {
            state.held += 1;
            state.held_us = state
                .held_us
                .saturating_add(u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX));
        }
        state.in_use = state.in_use.saturating_sub(1);
        if let Some(t) = state.tenants.get_mut(&tenant) {
            t.in_use = t.in_use.saturating_sub(1);
            if t.in_use == 0
                && let Some(at) = state.holding.iter().position(|id| *id == tenant)
            {
                state.holding.swap_remove(at);
            }
        }
        self.dispatch(state);
    }

    /// Admits waiters while there is capacity: deficit round robin over the
    /// ring of tenants with waiters.
    fn dispatch(self: &Arc<Self>, state: &mut State) {
        let mut skipped = 0;
        let now = Instant::now();
        while state.in_use < state.capacity && skipped < state.ring.len() {
            let Some(&id) = state.ring.front() else { break };
            let limit = state.tenants.get(&id).map_or(1, |t| t.limit);
            let limit = state.limit_of(id, limit);
            let allowance = state.allowance(id, limit, now);
            let Some(tenant) = state.tenants.get_mut(&id) else {
                state.ring.pop_front();
                continue;
            };
            if tenant.waiters.is_empty() {
                tenant.credit = 0;
                state.ring.pop_front();
                continue;
            }
            if tenant.in_use >= allowance {
                // At its limit: its turn passes to the next tenant.
                state.ring.rotate_left(1);
                skipped += 1;
                continue;
            }
            let waiter = tenant.waiters.pop_front().expect("checked non-empty");
            if waiter.blame_others {
                state.attribute(id, now.duration_since(waiter.since));
            }
            state.waited(id, &waiter, now, true);
            let Some(tenant) = state.tenants.get_mut(&id) else {
                continue;
            };
            tenant.in_use += 1;
            if tenant.in_use == 1 {
                state.holding.push(id);
            }
            state.in_use += 1;
            // The slot is the waiter's from here on. If its future is gone
            // before it reads this, its guard finds it off the queue and
            // gives the slot back; the send's outcome changes nothing.
            let _ = waiter.wake.send(());
            skipped = 0;
            tenant.credit = tenant.credit.saturating_sub(1);
            if tenant.waiters.is_empty() {
                tenant.credit = 0;
                state.ring.pop_front();
            } else if tenant.credit == 0 {
                tenant.credit = tenant.weight;
                state.ring.rotate_left(1);
            }
            state.admitted(id, now);
        }
        // Forget idle tenants so the map holds only active ones, and the
        // ones whose waits or scaled limit the next window has to report (an
        // idle tenant's admissions alone are let go). Past a bound that
        // doubles with what is kept, so the sweep costs O(1) per admission
        // however many tenants come and go.
        if state.tenants.len() > state.sweep_at {
            let State {
                tenants, limits, ..
            } = state;
            tenants.retain(|id, t| {
                t.in_use > 0 || !t.waiters.is_empty() || t.load.waited() || limits.contains_key(id)
            });
            state.sweep_at = (state.tenants.len() * 2).max(SWEEP_AT);
        }
    }

    /// Sets how many operations run at once. Growing it admits waiters at
    /// once; shrinking it lets operations in use finish (none is revoked),
    /// admitting no more until use is below the new capacity.
    pub fn set_capacity(self: &Arc<Self>, capacity: u32) {
        let mut state = self.lock();
        state.capacity = capacity.max(1);
        self.dispatch(&mut state);
    }

    /// Sets the limit `tenant` holds to in place of its claims' (`None`:
    /// its claims' again). Raising it admits its waiters at once.
    pub fn set_limit(self: &Arc<Self>, tenant: Uuid, limit: Option<u32>) {
        let mut state = self.lock();
        match limit {
            Some(limit) => {
                state.limits.insert(tenant, limit.max(1));
                if let Some(t) = state.tenants.get_mut(&tenant) {
                    t.limit = limit.max(1);
                }
            }
            None => {
                state.limits.remove(&tenant);
            }
        }
        self.dispatch(&mut state);
    }

    /// The limit set for `tenant` by [`DbShare::set_limit`], if any.
    pub fn limit_set(&self, tenant: Uuid) -> Option<u32> {
        self.lock().limits.get(&tenant).copied()
    }

    /// What was measured since the last call (see [`Window`]), and starts
    /// a new window. Tenants with nothing to report are left out; idle
    /// tenants' entries are dropped, so the map keeps only active ones.
    pub fn take_window(&self) -> Window {
        let mut state = self.lock();
        let state = &mut *state;
        let mut tenants = Vec::new();
        let mut waiting = 0;
        for (id, t) in &mut state.tenants {
            waiting += t.waiters.len();
            let load = std::mem::take(&mut t.load);
            if load == Load::default() {
                continue;
            }
            tenants.push(TenantLoad {
                tenant: *id,
                limit: t.limit,
                admitted: load.admitted,
                limit_wait_us: load.limit_wait_us,
                capacity_wait_us: load.capacity_wait_us,
                caused_us: load.caused_us,
                timeouts: load.timeouts,
                peak: load.peak,
            });
        }
        state
            .tenants
            .retain(|_, t| t.in_use > 0 || !t.waiters.is_empty());
        state.sweep_at = (state.tenants.len() * 2).max(SWEEP_AT);
        let window = Window {
            capacity: state.capacity,
            held: state.held,
            mean_held_us: if state.held == 0 {
                0.0
            } else {
                state.held_us as f64 / state.held as f64
            },
            peak: state.peak,
            waiting,
            tenants,
        };
        state.held = 0;
        state.held_us = 0;
        state.peak = state.in_use;
        window
    }

    /// The waiting attributed since the last call, by (culprit, victim),
    /// and forgets it.
    pub fn take_blame(&self) -> Vec<Blame> {
        let mut state = self.lock();
        std::mem::take(&mut state.blame)
            .into_iter()
            .map(|((culprit, victim), wait_us)| Blame {
                culprit,
                victim,
                wait_us,
            })
            .collect()
    }

    pub fn stats(&self) -> ShareStats {
        let state = self.lock();
        ShareStats {
            capacity: state.capacity,
            in_use: state.in_use,
            waiting: state.tenants.values().map(|t| t.waiters.len()).sum(),
            waiting_tenants: state.ring.len(),
            tracked: state.tenants.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(tenant: Uuid, limit: u32, weight: u32) -> Claim {
        Claim {
            tenant,
            limit,
            weight,
        }
    }

    const LONG: Duration = Duration::from_secs(60);

    /// Starts a waiter that records its tenant's name when admitted, then
    /// holds its permit until told to go.
    fn waiter(
        share: &Arc<DbShare>,
        c: Claim,
        name: &'static str,
        order: &Arc<Mutex<Vec<&'static str>>>,
    ) -> tokio::task::JoinHandle<Permit> {
        let share = share.clone();
        let order = order.clone();
        tokio::spawn(async move {
            let permit = share.acquire(c, LONG).await.expect("admitted");
            order.lock().expect("lock").push(name);
            permit
        })
    }

    /// The tenants holding slots, as the share keeps them, after checking
    /// them against the slots each tenant holds.
    fn holders(share: &DbShare) -> Vec<Uuid> {
        let state = share.lock();
        let mut kept = state.holding.clone();
        kept.sort();
        let mut holding: Vec<Uuid> = state
            .tenants
            .iter()
            .filter(|(_, t)| t.in_use > 0)
            .map(|(id, _)| *id)
            .collect();
        holding.sort();
        assert_eq!(kept, holding, "the holders are out of step with the slots");
        kept
    }

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_for_a_full_capacity_blames_the_holders_and_waiting_at_ones_own_limit_blames_nobody()
     {
        let share = DbShare::new(2);
        let (flood, quiet) = (Uuid::now_v7(), Uuid::now_v7());
        let a = share.acquire(claim(flood, 2, 1), LONG).await.expect("1");
        let b = share.acquire(claim(flood, 2, 1), LONG).await.expect("2");
        // The flood's third operation waits at its own limit: nobody's fault.
        let own = share
            .acquire(claim(flood, 2, 1), Duration::from_millis(5))
            .await;
        assert_eq!(own.err(), Some(Rejected::Timeout));
        assert!(share.take_blame().is_empty());
        // The quiet tenant waits 30 ms for the capacity the flood holds.
        let order = Arc::new(Mutex::new(Vec::new()));
        let waiting = waiter(&share, claim(quiet, 2, 1), "quiet", &order);
        settle().await;
        tokio::time::sleep(Duration::from_millis(30)).await;
        drop(a);
        let permit = waiting.await.expect("join");
        let blame = share.take_blame();
        assert_eq!(blame.len(), 1, "{blame:?}");
        assert_eq!((blame[0].culprit, blame[0].victim), (flood, quiet));
        assert!((30_000..31_000).contains(&blame[0].wait_us), "{blame:?}");
        assert!(share.take_blame().is_empty(), "drained");
        drop((b, permit));
        assert_eq!(share.stats().in_use, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn blame_goes_to_the_holders_however_many_tenants_waited() {
        let share = DbShare::new(3);
        let (big, small) = (Uuid::now_v7(), Uuid::now_v7());
        let b1 = share.acquire(claim(big, 2, 1), LONG).await.expect("1");
        let b2 = share.acquire(claim(big, 2, 1), LONG).await.expect("2");
        let s1 = share.acquire(claim(small, 2, 1), LONG).await.expect("3");
        // A thousand tenants each wait 1 ms for the full capacity and give
        // up: the map keeps every one of them until the window is taken.
        let victims: Vec<Uuid> = (0..1_000).map(|_| Uuid::now_v7()).collect();
        for victim in &victims {
            let gave_up = share
                .acquire(claim(*victim, 2, 1), Duration::from_millis(1))
                .await;
            assert_eq!(gave_up.err(), Some(Rejected::Timeout));
        }
        assert_eq!(share.stats().tracked, 1_002);
        let mut expected = vec![big, small];
        expected.sort();
        assert_eq!(holders(&share), expected);
        // Each wait is shared by the slots held: two thirds to `big`.
        let mut caused: HashMap<Uuid, (u64, usize)> = HashMap::new();
        for b in share.take_blame() {
            assert!(victims.contains(&b.victim), "{b:?}");
            let sum = caused.entry(b.culprit).or_default();
            *sum = (sum.0 + b.wait_us, sum.1 + 1);
        }
        assert_eq!(caused.len(), 2, "{caused:?}");
        assert_eq!(caused[&big], (666_000, 1_000));
        assert_eq!(caused[&small], (333_000, 1_000));
        // A tenant stays a holder until its last slot is back.
        drop(b1);
        assert_eq!(holders(&share), expected);
        drop(b2);
        assert_eq!(holders(&share), vec![small]);
        drop(s1);
        assert!(holders(&share).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_tenant_alone_uses_capacity_up_to_its_limit() {
        let share = DbShare::new(4);
        let t = Uuid::now_v7();
        let a = share.acquire(claim(t, 3, 1), LONG).await.expect("1");
        let b = share.acquire(claim(t, 3, 1), LONG).await.expect("2");
        let c = share.acquire(claim(t, 3, 1), LONG).await.expect("3");
        assert_eq!(share.stats().in_use, 3);
        // The fourth waits for the tenant's limit, not the capacity.
        let fourth = share
            .acquire(claim(t, 3, 1), Duration::from_millis(10))
            .await;
        assert_eq!(fourth.err(), Some(Rejected::Timeout));
        drop((a, b, c));
        assert_eq!(share.stats().in_use, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_backlog_does_not_delay_another_tenants_next_operation() {
        let share = DbShare::new(1);
        let order = Arc::new(Mutex::new(Vec::new()));
        let (noisy, quiet) = (Uuid::now_v7(), Uuid::now_v7());
        let first = share
            .acquire(claim(noisy, 8, 1), LONG)
            .await
            .expect("first");
        let mut noisy_waiters = Vec::new();
        for _ in 0..50 {
            noisy_waiters.push(waiter(&share, claim(noisy, 8, 1), "noisy", &order));
        }
        settle().await;
        let quiet_waiter = waiter(&share, claim(quiet, 8, 1), "quiet", &order);
        settle().await;
        drop(first);
        settle().await;
        // The quiet tenant is admitted right after the noisy one's first
        // waiter, not after all fifty.
        let permit = noisy_waiters.remove(0).await.expect("join");
        drop(permit);
        settle().await;
        let quiet_permit = quiet_waiter.await.expect("join");
        assert_eq!(*order.lock().expect("lock"), vec!["noisy", "quiet"]);
        drop(quiet_permit);
        for w in noisy_waiters {
            drop(w.await.expect("join"));
        }
        assert_eq!(share.stats().in_use, 0);
        assert_eq!(share.stats().waiting, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_tenants_are_served_by_weight() {
        let share = DbShare::new(1);
        let order = Arc::new(Mutex::new(Vec::new()));
        let (heavy, light) = (Uuid::now_v7(), Uuid::now_v7());
        let hold = share
            .acquire(claim(Uuid::now_v7(), 1, 1), LONG)
            .await
            .expect("hold");
        let mut handles = Vec::new();
        for _ in 0..6 {
            handles.push(waiter(&share, claim(heavy, 8, 2), "heavy", &order));
            handles.push(waiter(&share, claim(light, 8, 1), "light", &order));
        }
        settle().await;
        drop(hold);
        // Release one at a time, in admission order.
        let mut pending = handles;
        while !pending.is_empty() {
            settle().await;
            let index = pending
                .iter()
                .position(tokio::task::JoinHandle::is_finished)
                .expect("one admitted");
            drop(pending.remove(index).await.expect("join"));
        }
        let order = order.lock().expect("lock").clone();
        assert_eq!(
            &order[..9],
            &[
                "heavy", "heavy", "light", "heavy", "heavy", "light", "heavy", "heavy", "light"
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_tenant_among_active_others_keeps_to_half_and_alone_takes_all() {
        let share = DbShare::new(6);
        let (busy, quiet) = (Uuid::now_v7(), Uuid::now_v7());
        let short = Duration::from_millis(5);
        // Alone: all six.
        let alone: Vec<Permit> = futures_all(&share, claim(busy, 8, 1), 6).await;
        assert_eq!(share.stats().in_use, 6);
        drop(alone);
        // The quiet tenant was active just now...
        drop(
            share
                .acquire(claim(quiet, 8, 1), LONG)
                .await
                .expect("quiet"),
        );
        // ...so the busy one keeps to half: three, not six.
        let held = futures_all(&share, claim(busy, 8, 1), 3).await;
        assert!(share.acquire(claim(busy, 8, 1), short).await.is_err());
        let next = share.acquire(claim(quiet, 8, 1), short).await;
        assert!(next.is_ok(), "the quiet tenant finds the free slot at once");
        drop(next);
        drop(held);
        // A second later, with nobody else about, the busy tenant may take all.
        tokio::time::advance(Duration::from_secs(2)).await;
        let all = futures_all(&share, claim(busy, 8, 1), 6).await;
        assert_eq!(all.len(), 6);
    }

    async fn futures_all(share: &Arc<DbShare>, c: Claim, n: usize) -> Vec<Permit> {
        let mut permits = Vec::new();
        for _ in 0..n {
            permits.push(
                share
                    .acquire(c, Duration::from_millis(5))
                    .await
                    .expect("admitted"),
            );
        }
        permits
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_that_gives_up_leaves_no_trace() {
        let share = DbShare::new(1);
        let t = Uuid::now_v7();
        let hold = share.acquire(claim(t, 1, 1), LONG).await.expect("hold");
        let gave_up = share
            .acquire(claim(Uuid::now_v7(), 1, 1), Duration::from_millis(5))
            .await;
        assert_eq!(gave_up.err(), Some(Rejected::Timeout));
        drop(hold);
        assert_eq!(share.stats().in_use, 0);
        let again = share
            .acquire(claim(t, 1, 1), Duration::from_millis(5))
            .await;
        assert!(again.is_ok());
    }

    /// What happens to the holder of the only slot while a second request
    /// waits for it.
    #[derive(Debug, Clone, Copy)]
    enum Event {
        /// The holder finishes: the slot is handed over to the waiter.
        Release,
        /// The waiter's budget runs out.
        Expire,
        /// The holder finishes and the budget runs out at the same instant.
        Both,
    }

    /// The cancellation property: a waiting acquire dropped after any number
    /// of polls, with the slot handed over or the budget expiring at any of
    /// those points, leaves nothing behind — no slot in use, no waiter, no
    /// tenant on the ring — and the next request is admitted at once.
    #[tokio::test(start_paused = true)]
    async fn an_acquire_dropped_at_any_poll_leaves_nothing_behind() {
        use std::future::Future;
        use std::task::{Context, Poll, Waker};
        let budget = Duration::from_millis(100);
        for event in [Event::Release, Event::Expire, Event::Both] {
            for polls in 0..6 {
                for at in 0..=polls {
                    let share = DbShare::new(1);
                    let mut holder = Some(
                        share
                            .acquire(claim(Uuid::now_v7(), 1, 1), LONG)
                            .await
                            .expect("holder"),
                    );
                    // Boxed, so that dropping it drops the future itself.
                    let mut waiting = Box::pin(share.acquire(claim(Uuid::now_v7(), 1, 1), budget));
                    let mut cx = Context::from_waker(Waker::noop());
                    let mut admitted = None;
                    // The event comes before poll `at`; with `at == polls`,
                    // after the last poll, just before the drop.
                    for poll in 0..=polls {
                        if poll == at {
                            if matches!(event, Event::Release | Event::Both) {
                                holder.take();
                            }
                            if matches!(event, Event::Expire | Event::Both) {
                                tokio::time::advance(budget * 2).await;
                            }
                        }
                        if poll == polls {
                            break;
                        }
                        if let Poll::Ready(outcome) = waiting.as_mut().poll(&mut cx) {
                            admitted = outcome.ok();
                            break;
                        }
                    }
                    // The request goes away here, whatever it was doing.
                    drop(waiting);
                    drop(admitted);
                    drop(holder);
                    let stats = share.stats();
                    let case = format!("{event:?} at poll {at}, dropped after {polls} polls");
                    assert!(holders(&share).is_empty(), "{case}: a holder stayed");
                    assert_eq!(stats.in_use, 0, "{case}: a slot leaked");
                    assert_eq!(stats.waiting, 0, "{case}: a waiter stayed queued");
                    assert_eq!(
                        stats.waiting_tenants, 0,
                        "{case}: a tenant stayed on the ring"
                    );
                    let next = share
                        .acquire(claim(Uuid::now_v7(), 1, 1), Duration::ZERO)
                        .await;
                    assert!(next.is_ok(), "{case}: the next request waited");
                }
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_window_measures_latency_peak_and_each_tenants_waits_and_forgets_idle_tenants() {
        let share = DbShare::new(2);
        let (busy, other) = (Uuid::now_v7(), Uuid::now_v7());
        // `busy` at its own limit of one: its second operation waits 10 ms
        // for its own first.
        let first = share.acquire(claim(busy, 1, 1), LONG).await.expect("1");
        let order = Arc::new(Mutex::new(Vec::new()));
        let second = waiter(&share, claim(busy, 1, 1), "busy", &order);
        settle().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(first);
        let second = second.await.expect("join");
        // `other` takes the last slot, and a third tenant waits 5 ms for
        // the capacity.
        let held = share
            .acquire(claim(other, 4, 1), LONG)
            .await
            .expect("other");
        let third = Uuid::now_v7();
        let late = waiter(&share, claim(third, 4, 1), "third", &order);
        settle().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        drop(held);
        drop(late.await.expect("join"));
        drop(second);
        let w = share.take_window();
        assert_eq!((w.capacity, w.peak, w.held, w.waiting), (2, 2, 4, 0));
        // Held: 10 ms, 5 ms (other), 0 (third), 5 ms (busy's second).
        assert!((4_900.0..5_100.0).contains(&w.mean_held_us), "{w:?}");
        let of = |t: Uuid| *w.tenants.iter().find(|l| l.tenant == t).expect("reported");
        let b = of(busy);
        assert_eq!(
            (b.admitted, b.limit_wait_us, b.capacity_wait_us),
            (2, 10_000, 0)
        );
        let t = of(third);
        assert_eq!(
            (t.admitted, t.limit_wait_us, t.capacity_wait_us),
            (1, 0, 5_000)
        );
        // The third waited for slots `busy` and `other` held: blamed on them.
        assert_eq!(of(other).caused_us + of(busy).caused_us, 5_000);
        assert_eq!(share.stats().tracked, 0, "idle tenants are forgotten");
        let empty = share.take_window();
        assert!(empty.tenants.is_empty() && empty.held == 0, "{empty:?}");
    }

    /// Thousands of tenants passing through: the map is swept as it grows
    /// and holds only the few still active, and the sweep keeps what a
    /// window must report.
    #[tokio::test(start_paused = true)]
    async fn tenants_passing_through_leave_only_the_active_ones() {
        let share = DbShare::new(4);
        let held = share
            .acquire(claim(Uuid::now_v7(), 1, 1), LONG)
            .await
            .expect("held");
        let scaled = Uuid::now_v7();
        share.set_limit(scaled, Some(2));
        drop(
            share
                .acquire(claim(scaled, 1, 1), LONG)
                .await
                .expect("scaled"),
        );
        for _ in 0..10_000 {
            drop(
                share
                    .acquire(claim(Uuid::now_v7(), 1, 1), LONG)
                    .await
                    .expect("admitted"),
            );
        }
        let tracked = share.stats().tracked;
        assert!(tracked <= 2 * SWEEP_AT + 2, "{tracked}");
        let w = share.take_window();
        assert!(
            w.tenants.iter().any(|l| l.tenant == scaled),
            "a scaled tenant is kept"
        );
        assert_eq!(share.stats().tracked, 1, "only the holder");
        drop(held);
    }

    #[tokio::test(start_paused = true)]
    async fn a_limit_set_for_a_tenant_replaces_its_claims_and_admits_its_waiters() {
        let share = DbShare::new(8);
        let t = Uuid::now_v7();
        let first = share.acquire(claim(t, 1, 1), LONG).await.expect("1");
        let order = Arc::new(Mutex::new(Vec::new()));
        let waiting = waiter(&share, claim(t, 1, 1), "t", &order);
        settle().await;
        assert_eq!(share.stats().waiting, 1);
        share.set_limit(t, Some(3));
        assert_eq!(share.limit_set(t), Some(3));
        let second = waiting.await.expect("join");
        let third = share
            .acquire(claim(t, 1, 1), Duration::ZERO)
            .await
            .expect("3");
        assert!(
            share
                .acquire(claim(t, 1, 1), Duration::from_millis(5))
                .await
                .is_err()
        );
        drop((first, second, third));
        share.set_limit(t, None);
        assert_eq!(share.limit_set(t), None);
        let one = share.acquire(claim(t, 1, 1), LONG).await.expect("1");
        assert!(
            share
                .acquire(claim(t, 1, 1), Duration::from_millis(5))
                .await
                .is_err()
        );
        drop(one);
    }

    #[tokio::test(start_paused = true)]
    async fn a_capacity_grown_admits_waiters_and_one_shrunk_revokes_nothing() {
        let share = DbShare::new(1);
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let held = share.acquire(claim(a, 8, 1), LONG).await.expect("a");
        let order = Arc::new(Mutex::new(Vec::new()));
        let waiting = waiter(&share, claim(b, 8, 1), "b", &order);
        settle().await;
        share.set_capacity(2);
        let admitted = waiting.await.expect("join");
        share.set_capacity(1);
        assert_eq!(share.stats().in_use, 2, "nothing revoked");
        // Below the new capacity only once both are back.
        drop(held);
        assert!(
            share
                .acquire(claim(a, 8, 1), Duration::from_millis(5))
                .await
                .is_err()
        );
        drop(admitted);
        assert!(share.acquire(claim(a, 8, 1), Duration::ZERO).await.is_ok());
    }

    /// The CPU share's claims: no limit of their own. A tenant alone takes
    /// the whole capacity; with another active it keeps to half, and the
    /// other's next request finds a slot at once.
    #[tokio::test(start_paused = true)]
    async fn unlimited_claims_share_by_the_half_capacity_rule() {
        let share = DbShare::new(4);
        let (flood, quiet) = (Uuid::now_v7(), Uuid::now_v7());
        let all = futures_all(&share, claim(flood, u32::MAX, 1), 4).await;
        drop(all);
        drop(
            share
                .acquire(claim(quiet, u32::MAX, 1), LONG)
                .await
                .expect("quiet"),
        );
        let half = futures_all(&share, claim(flood, u32::MAX, 1), 2).await;
        assert!(
            share
                .acquire(claim(flood, u32::MAX, 1), Duration::from_millis(5))
                .await
                .is_err()
        );
        let next = share
            .acquire(claim(quiet, u32::MAX, 1), Duration::ZERO)
            .await;
        assert!(next.is_ok());
        drop((half, next));
    }

    /// Slots a grown capacity hands to waiters whose requests are dropped
    /// before they run come back too.
    #[tokio::test(start_paused = true)]
    async fn slots_a_grown_capacity_hands_to_waiters_that_are_gone_come_back() {
        let share = DbShare::new(1);
        let t = Uuid::now_v7();
        let held = share.acquire(claim(t, 8, 1), LONG).await.expect("held");
        let mut waiters = Vec::new();
        for _ in 0..6 {
            let share = share.clone();
            waiters.push(tokio::spawn(async move {
                share.acquire(claim(t, 8, 1), LONG).await.map(drop)
            }));
        }
        settle().await;
        share.set_capacity(4);
        for w in &waiters {
            w.abort();
        }
        for w in waiters {
            let _ = w.await;
        }
        drop(held);
        let s = share.stats();
        assert_eq!((s.in_use, s.waiting, s.waiting_tenants), (0, 0, 0));
        assert_eq!(futures_all(&share, claim(t, 8, 1), 4).await.len(), 4);
    }

    /// The leak that once left every tenant answering 503: a slot handed
    /// over to a waiter whose request was dropped before it read it.
    #[tokio::test(start_paused = true)]
    async fn a_slot_handed_to_a_waiter_that_is_gone_comes_back() {
        let share = DbShare::new(2);
        let t = Uuid::now_v7();
        let held: Vec<Permit> = futures_all(&share, claim(t, 2, 1), 2).await;
        let mut waiters = Vec::new();
        for _ in 0..8 {
            let share = share.clone();
            waiters.push(tokio::spawn(async move {
                share.acquire(claim(t, 2, 1), LONG).await.map(drop)
            }));
        }
        settle().await;
        assert_eq!(share.stats().waiting, 8);
        // Hand the two slots over, and drop every waiting request before any
        // of them runs again.
        drop(held);
        for w in &waiters {
            w.abort();
        }
        for w in waiters {
            let _ = w.await;
        }
        let stats = share.stats();
        assert_eq!(
            (stats.in_use, stats.waiting, stats.waiting_tenants),
            (0, 0, 0)
        );
        let again = futures_all(&share, claim(t, 2, 1), 2).await;
        assert_eq!(again.len(), 2);
    }
}
