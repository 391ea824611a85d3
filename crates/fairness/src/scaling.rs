//! Per-tenant concurrency that scales with the tenant's measured queue wait,
//! within its tier's `db_concurrency_min..=db_concurrency_max`.
//!
//! A tier's `db_concurrency` is where a tenant starts (its base). Every
//! control interval the scaler reads the share's [`Window`] and moves each
//! tenant's limit by a quarter (at least one):
//!
//! - **up** (`queue_wait`) when its operations waited at its own limit —
//!   a higher limit would have run them — on average at least `wait` each,
//!   and the capacity was not what they waited for (then a higher limit
//!   only moves the queue);
//! - **down** (`others_waited`) when other tenants waited for the capacity
//!   its slots held (the share's blame) for at least `contention` of the
//!   interval: a tenant crowding others gives way, down to its minimum;
//! - **back** toward its base (`settled`) after `settle_after` calm
//!   intervals in which it did not use its whole limit;
//! - **to its base** (`idle`) after `idle_after` intervals without any use,
//!   and forgotten.
//!
//! Only tenants whose limit differs from their base are kept, so an idle
//! tenant costs nothing here. Every change is returned as a [`Change`]: the
//! API applies it to the share ([`crate::share::DbShare::set_limit`]) and
//! records it.

use std::collections::HashMap;
use std::time::Duration;

use uuid::Uuid;

use crate::share::{TenantLoad, Window};

/// A tenant's bounds, from its tier (and overrides).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub min: u32,
    /// Where it starts and returns to: the tier's `db_concurrency`, within
    /// `min..=max`.
    pub base: u32,
    pub max: u32,
}

impl Bounds {
    /// Bounds from a tier's numbers, made consistent: `1 ≤ min ≤ base ≤ max`.
    pub fn new(min: u32, base: u32, max: u32) -> Self {
        let min = min.max(1);
        let max = max.max(min);
        Self {
            min,
            base: base.clamp(min, max),
            max,
        }
    }
}

/// Why a tenant's limit moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Its operations waited at its own limit.
    QueueWait,
    /// Other tenants waited for the capacity its slots held.
    OthersWaited,
    /// Calm for a while: back toward its base.
    Settled,
    /// Unused for a while: back to its base, and forgotten.
    Idle,
    /// Its tier's bounds moved (a reload or an override) past its limit.
    Bounds,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::QueueWait => "queue_wait",
            Reason::OthersWaited => "others_waited",
            Reason::Settled => "settled",
            Reason::Idle => "idle",
            Reason::Bounds => "bounds",
        }
    }
}

/// One change of one tenant's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub tenant: Uuid,
    pub from: u32,
    pub to: u32,
    pub reason: Reason,
    /// The limit is the tenant's base again (the share may forget it).
    pub at_base: bool,
}

/// How the scaler moves (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScalingConfig {
    /// The control interval (what `contention` is a fraction of).
    pub interval: Duration,
    /// Mean wait per operation at the tenant's own limit that raises it.
    pub wait: Duration,
    /// Others' waiting blamed on a tenant, as a fraction of the interval,
    /// that lowers it.
    pub contention: f64,
    pub settle_after: u32,
    pub idle_after: u32,
}

impl Default for ScalingConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            wait: Duration::from_millis(2),
            contention: 0.05,
            settle_after: 30,
            idle_after: 60,
        }
    }
}

/// A tenant whose limit is not its base.
#[derive(Debug, Clone, Copy)]
struct Scaled {
    limit: u32,
    /// Intervals in a row without pressure either way.
    calm: u32,
    /// Intervals in a row without any use.
    idle: u32,
}

/// The per-tenant scaler (see the module doc).
#[derive(Debug, Default)]
pub struct Scaler {
    config: ScalingConfig,
    scaled: HashMap<Uuid, Scaled>,
}

impl Scaler {
    pub fn new(config: ScalingConfig) -> Self {
        Self {
            config,
            scaled: HashMap::new(),
        }
    }

    /// Tenants whose limit is not their base, and that limit.
    pub fn scaled(&self) -> impl Iterator<Item = (Uuid, u32)> + '_ {
        self.scaled.iter().map(|(id, s)| (*id, s.limit))
    }

    /// The tenants [`Scaler::step`] will ask the bounds of for `window`.
    pub fn tenants_of(&self, window: &Window) -> Vec<Uuid> {
        let mut ids: Vec<Uuid> = window.tenants.iter().map(|t| t.tenant).collect();
        ids.extend(self.scaled.keys().copied());
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Reads one interval's window; `bounds` gives a tenant's (`None`: the
    /// tenant is gone, and is forgotten). Returns the changes made.
    pub fn step(
        &mut self,
        window: &Window,
        bounds: impl Fn(Uuid) -> Option<Bounds>,
    ) -> Vec<Change> {
        let threshold = self.config.contention * self.config.interval.as_micros() as f64;
        let blamed = move |load: &TenantLoad| load.caused_us as f64 >= threshold;
        // The capacity itself was the queue: some tenant crowded others.
        let capacity_contended = window.tenants.iter().any(blamed);
        let wait_us = self.config.wait.as_micros() as f64;
        let mut changes = Vec::new();
        let mut seen = Vec::with_capacity(window.tenants.len());
        for load in &window.tenants {
            seen.push(load.tenant);
            let Some(b) = bounds(load.tenant) else {
                self.scaled.remove(&load.tenant);
                continue;
            };
            let entry = self.scaled.get(&load.tenant).copied();
            let current = entry.map_or(b.base, |s| s.limit);
            let step = (current / 4).max(1);
            let ops = (load.admitted + load.timeouts).max(1) as f64;
            let own_wait = load.limit_wait_us as f64 / ops;
            let (to, reason) = if current < b.min || current > b.max {
                (current.clamp(b.min, b.max), Some(Reason::Bounds))
            } else if blamed(load) && current > b.min {
                (
                    current.saturating_sub(step).max(b.min),
                    Some(Reason::OthersWaited),
                )
            } else if own_wait >= wait_us && current < b.max && !capacity_contended {
                ((current + step).min(b.max), Some(Reason::QueueWait))
            } else {
                let calm = entry.map_or(0, |s| s.calm) + 1;
                let unused = load.peak < current;
                if entry.is_some()
                    && calm >= self.config.settle_after
                    && (current < b.base || unused)
                {
                    let to = if current < b.base {
                        (current + step).min(b.base)
                    } else {
                        current.saturating_sub(step).max(b.base).max(load.peak)
                    };
                    (to, (to != current).then_some(Reason::Settled))
                } else {
                    if let Some(s) = self.scaled.get_mut(&load.tenant) {
                        s.calm = calm;
                        s.idle = 0;
                    }
                    (current, None)
                }
            };
            if let Some(reason) = reason
                && to != current
            {
                changes.push(self.set(load.tenant, current, to, b.base, reason));
            } else if let Some(s) = self.scaled.get_mut(&load.tenant) {
                s.idle = 0;
            }
        }
        // Scaled tenants that did nothing this interval.
        let idle: Vec<Uuid> = self
            .scaled
            .keys()
            .filter(|id| !seen.contains(id))
            .copied()
            .collect();
        for id in idle {
            let Some(b) = bounds(id) else {
                self.scaled.remove(&id);
                continue;
            };
            let s = self.scaled.get_mut(&id).expect("listed above");
            s.idle += 1;
            if s.idle >= self.config.idle_after {
                let from = s.limit;
                changes.push(self.set(id, from, b.base, b.base, Reason::Idle));
            }
        }
        changes
    }

    fn set(&mut self, tenant: Uuid, from: u32, to: u32, base: u32, reason: Reason) -> Change {
        if to == base {
            self.scaled.remove(&tenant);
        } else {
            self.scaled.insert(
                tenant,
                Scaled {
                    limit: to,
                    calm: 0,
                    idle: 0,
                },
            );
        }
        Change {
            tenant,
            from,
            to,
            reason,
            at_base: to == base,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(tenant: Uuid, limit: u32) -> TenantLoad {
        TenantLoad {
            tenant,
            limit,
            admitted: 100,
            limit_wait_us: 0,
            capacity_wait_us: 0,
            caused_us: 0,
            timeouts: 0,
            peak: limit,
        }
    }

    fn window(tenants: Vec<TenantLoad>) -> Window {
        Window {
            capacity: 16,
            held: 100,
            mean_held_us: 1_000.0,
            peak: 8,
            waiting: 0,
            tenants,
        }
    }

    const B: Bounds = Bounds {
        min: 1,
        base: 2,
        max: 8,
    };

    fn quick() -> ScalingConfig {
        ScalingConfig {
            settle_after: 3,
            idle_after: 2,
            ..ScalingConfig::default()
        }
    }

    #[test]
    fn a_tenant_waiting_at_its_own_limit_is_raised_up_to_its_max() {
        let mut scaler = Scaler::new(quick());
        let t = Uuid::now_v7();
        let mut limits = Vec::new();
        for _ in 0..12 {
            let limit = scaler.scaled().next().map_or(B.base, |(_, l)| l);
            let mut l = load(t, limit);
            l.limit_wait_us = 100 * 5_000; // 5 ms per operation
            for c in scaler.step(&window(vec![l]), |_| Some(B)) {
                assert_eq!(c.reason, Reason::QueueWait);
                assert_eq!(c.from, limit);
                limits.push(c.to);
            }
        }
        assert_eq!(
            limits,
            vec![3, 4, 5, 6, 7, 8],
            "by a quarter, at least one, up to max"
        );
    }

    #[test]
    fn waiting_for_the_capacity_does_not_raise_a_limit() {
        let mut scaler = Scaler::new(quick());
        let (t, crowd) = (Uuid::now_v7(), Uuid::now_v7());
        let mut l = load(t, 2);
        l.limit_wait_us = 100 * 5_000;
        let mut c = load(crowd, 2);
        c.caused_us = 200_000; // others waited a fifth of the interval on it
        let changes = scaler.step(&window(vec![l, c]), |_| Some(B));
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(
            (changes[0].tenant, changes[0].to, changes[0].reason),
            (crowd, 1, Reason::OthersWaited)
        );
    }

    #[test]
    fn a_raised_tenant_settles_back_when_calm_and_returns_to_its_base_when_idle() {
        let mut scaler = Scaler::new(quick());
        let t = Uuid::now_v7();
        let mut l = load(t, 2);
        l.limit_wait_us = 100 * 5_000;
        scaler.step(&window(vec![l]), |_| Some(B)); // 2 → 3
        l.limit = 3;
        scaler.step(&window(vec![l]), |_| Some(B)); // 3 → 4
        assert_eq!(scaler.scaled().collect::<Vec<_>>(), vec![(t, 4)]);
        // Calm, using only two of its four: after three calm intervals it
        // comes down a step.
        let mut calm = load(t, 4);
        calm.peak = 2;
        let mut changes = Vec::new();
        for _ in 0..3 {
            changes.extend(scaler.step(&window(vec![calm]), |_| Some(B)));
        }
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(
            (changes[0].from, changes[0].to, changes[0].reason),
            (4, 3, Reason::Settled)
        );
        // Then silence: back to the base, and forgotten.
        let mut changes = Vec::new();
        for _ in 0..2 {
            changes.extend(scaler.step(&window(vec![]), |_| Some(B)));
        }
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(
            (changes[0].to, changes[0].reason, changes[0].at_base),
            (2, Reason::Idle, true)
        );
        assert_eq!(scaler.scaled().count(), 0, "an idle tenant costs nothing");
    }

    #[test]
    fn a_busy_tenant_at_its_raised_limit_keeps_it() {
        let mut scaler = Scaler::new(quick());
        let t = Uuid::now_v7();
        let mut l = load(t, 2);
        l.limit_wait_us = 100 * 5_000;
        scaler.step(&window(vec![l]), |_| Some(B));
        // Busy at 3 (peak 3), no waiting: stays, however long.
        for _ in 0..10 {
            assert!(
                scaler
                    .step(&window(vec![load(t, 3)]), |_| Some(B))
                    .is_empty()
            );
        }
        assert_eq!(scaler.scaled().collect::<Vec<_>>(), vec![(t, 3)]);
    }

    #[test]
    fn bounds_that_move_past_a_limit_bring_it_back_within() {
        let mut scaler = Scaler::new(quick());
        let t = Uuid::now_v7();
        let mut l = load(t, 2);
        l.limit_wait_us = 100 * 5_000;
        for _ in 0..3 {
            scaler.step(&window(vec![l]), |_| Some(B));
        }
        assert_eq!(scaler.scaled().collect::<Vec<_>>(), vec![(t, 5)]);
        let tighter = Bounds::new(1, 2, 3);
        let changes = scaler.step(&window(vec![load(t, 5)]), |_| Some(tighter));
        assert_eq!((changes[0].to, changes[0].reason), (3, Reason::Bounds));
        // A tenant that is gone is forgotten without a change.
        assert!(scaler.step(&window(vec![load(t, 3)]), |_| None).is_empty());
        assert_eq!(scaler.scaled().count(), 0);
    }
}
