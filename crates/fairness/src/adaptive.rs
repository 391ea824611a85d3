//! Adaptive capacity: a gradient limiter that sizes a fair share to what the
//! resource behind it can run, from the latency it measures.
//!
//! Little's law says how much to admit: throughput × the time one operation
//! takes when nothing queues. Admit less and the resource idles; admit more
//! and operations only queue inside it (PostgreSQL's backends, the OS run
//! queue, the async runtime), out of fair order, adding latency and no
//! throughput. Neither number is known in advance, and both move with the
//! load, so the capacity follows the measurements, as Envoy's adaptive
//! concurrency filter does:
//!
//! - The baseline is the latency (how long a permit is held) with little in
//!   flight. It is measured by a probe: every `probe_every` intervals the
//!   capacity drops to `min` for one short interval and the latency then is
//!   the new baseline. (Measured at the current capacity instead, a capacity
//!   that is too high would never see the true baseline.)
//! - Every interval, `gradient = baseline × (1 + tolerance) ÷ latency`,
//!   clamped to 0.5..2, and `capacity = capacity × gradient`, plus
//!   `√capacity` of headroom while the gradient is at least 1: latency near
//!   the baseline grows it, latency past the tolerance shrinks it in
//!   proportion (half of each step is taken, against noise). It settles where latency
//!   is the baseline plus the tolerance: the knee of the throughput curve.
//! - It grows only when the window used most of the capacity (otherwise the
//!   latency says nothing about more), and it never leaves `min..=max`.
//!
//! The limiter is plain arithmetic over [`Window`]s: the API's controller
//! feeds it every interval; the tests feed it made-up windows.

use std::time::Duration;

use crate::share::Window;

/// How a [`Gradient`] moves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GradientConfig {
    pub min: u32,
    pub max: u32,
    /// How far above the baseline latency may rise before the capacity
    /// shrinks (0.5: 50 %).
    pub tolerance: f64,
    /// A probe for the baseline every so many intervals.
    pub probe_every: u32,
    /// Permits a probe needs to measure: with fewer, it runs one more
    /// interval (at most three).
    pub probe_samples: u64,
}

impl Default for GradientConfig {
    fn default() -> Self {
        Self {
            min: 1,
            max: 1_024,
            // Netflix's gradient limiter allows 1.5× its long-term latency.
            // With 0.25 the database share settled at 3–5 on two cores, where
            // pinned capacities showed throughput flat only from 6 (0.88 of
            // the best; BENCHMARKS.md, issue 16): the held time of a statement
            // grows with what runs beside it long before the throughput stops.
            tolerance: 0.5,
            probe_every: 30,
            probe_samples: 20,
        }
    }
}

/// What the limiter is doing.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Following the gradient; intervals since the last probe.
    Tracking(u32),
    /// Measuring the baseline at `min`; the capacity to go back to and the
    /// intervals probed so far.
    Probing { resume: f64, intervals: u32 },
}

/// A capacity that tracks measured latency (see the module doc).
#[derive(Debug, Clone)]
pub struct Gradient {
    config: GradientConfig,
    limit: f64,
    /// The baseline latency, µs; `None` until the first probe measured it.
    baseline_us: Option<f64>,
    phase: Phase,
}

/// Why the capacity changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    /// Dropped to the minimum to measure the baseline.
    Probe,
    /// Back from a probe.
    Resume,
    /// Latency near the baseline with the capacity in use: grown.
    Grow,
    /// Latency past the tolerance: shrunk.
    Shrink,
}

impl Gradient {
    /// Starts at `initial` (clamped), probing first: a capacity set too high
    /// is found out in the first intervals.
    pub fn new(initial: u32, config: GradientConfig) -> Self {
        let config = GradientConfig {
            min: config.min.max(1),
            max: config.max.max(config.min.max(1)),
            ..config
        };
        Self {
            limit: f64::from(initial.clamp(config.min, config.max)),
            config,
            baseline_us: None,
            phase: Phase::Tracking(config.probe_every),
        }
    }

    /// The capacity to run at now.
    pub fn capacity(&self) -> u32 {
        match self.phase {
            Phase::Probing { .. } => self.config.min,
            Phase::Tracking(_) => self.limit.round() as u32,
        }
    }

    /// The baseline latency, once measured.
    pub fn baseline(&self) -> Option<Duration> {
        self.baseline_us.map(|us| Duration::from_micros(us as u64))
    }

    /// Whether the next interval is a probe (the controller may make it
    /// shorter: a probe costs throughput).
    pub fn probing(&self) -> bool {
        matches!(self.phase, Phase::Probing { .. })
    }

    /// Reads one interval's window and returns the capacity to run at
    /// next, with why it moved (`None`: it did not).
    pub fn update(&mut self, window: &Window) -> (u32, Option<Move>) {
        let before = self.capacity();
        let moved = match self.phase {
            Phase::Probing { resume, intervals } => {
                if window.held >= self.config.probe_samples || intervals >= 2 {
                    if window.held > 0 {
                        self.baseline_us = Some(window.mean_held_us.max(1.0));
                    }
                    self.limit = resume;
                    self.phase = Phase::Tracking(0);
                    Some(Move::Resume)
                } else {
                    self.phase = Phase::Probing {
                        resume,
                        intervals: intervals + 1,
                    };
                    None
                }
            }
            Phase::Tracking(since) if since >= self.config.probe_every => {
                // Nothing in use: nothing to measure; try again next time.
                if window.held == 0 {
                    None
                } else {
                    self.phase = Phase::Probing {
                        resume: self.limit,
                        intervals: 0,
                    };
                    Some(Move::Probe)
                }
            }
            Phase::Tracking(since) => {
                self.phase = Phase::Tracking(since + 1);
                self.track(window)
            }
        };
        let after = self.capacity();
        match moved {
            Some(Move::Grow | Move::Shrink) if after == before => (after, None),
            _ => (after, moved),
        }
    }

    fn track(&mut self, window: &Window) -> Option<Move> {
        let baseline = self.baseline_us?;
        if window.held == 0 {
            return None;
        }
        let latency = window.mean_held_us.max(1.0);
        let gradient = (baseline * (1.0 + self.config.tolerance) / latency).clamp(0.5, 2.0);
        // The headroom only while latency is within the tolerance: past it
        // the capacity comes down to what the gradient says, no further.
        let headroom = if gradient >= 1.0 {
            self.limit.sqrt()
        } else {
            0.0
        };
        let mut next = self.limit * gradient + headroom;
        // Growing needs the evidence of a capacity in use: the peak within
        // a slot or two of it, or operations left waiting.
        let used = f64::from(window.peak) + 2.0 >= self.limit || window.waiting > 0;
        if next > self.limit && !used {
            return None;
        }
        // Smoothed, so that one noisy interval moves it only part of the way.
        next = self.limit * 0.5 + next * 0.5;
        let next = next.clamp(f64::from(self.config.min), f64::from(self.config.max));
        let moved = if next > self.limit {
            Move::Grow
        } else {
            Move::Shrink
        };
        self.limit = next;
        Some(moved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A resource that runs `knee` operations at once in `service_us` each:
    /// with `capacity` admitted and always full, each is held
    /// `service_us × max(1, capacity ÷ knee)` (the rest queue inside).
    fn window(capacity: u32, knee: u32, service_us: f64) -> Window {
        let held_us = service_us * (f64::from(capacity) / f64::from(knee)).max(1.0);
        Window {
            capacity,
            held: 1_000,
            mean_held_us: held_us,
            peak: capacity,
            waiting: 10,
            tenants: Vec::new(),
        }
    }

    fn run(initial: u32, intervals: usize) -> Vec<u32> {
        let mut g = Gradient::new(
            initial,
            GradientConfig {
                min: 1,
                max: 256,
                ..GradientConfig::default()
            },
        );
        let mut seen = Vec::new();
        for _ in 0..intervals {
            let (c, _) = g.update(&window(g.capacity(), 8, 1_000.0));
            seen.push(c);
        }
        seen
    }

    #[test]
    fn a_capacity_set_too_high_comes_down_to_the_knee() {
        let seen = run(256, 30);
        let last = *seen.last().expect("ran");
        // The knee is 8; the tolerance lets it settle a little above.
        assert!((8..=14).contains(&last), "{seen:?}");
    }

    #[test]
    fn a_capacity_set_too_low_grows_to_the_knee() {
        let seen = run(1, 30);
        let last = *seen.last().expect("ran");
        assert!((8..=14).contains(&last), "{seen:?}");
    }

    #[test]
    fn it_probes_for_the_baseline_first_and_then_every_so_often() {
        let mut g = Gradient::new(
            10,
            GradientConfig {
                probe_every: 5,
                ..GradientConfig::default()
            },
        );
        let (c, moved) = g.update(&window(10, 8, 1_000.0));
        assert_eq!((c, moved), (1, Some(Move::Probe)));
        assert!(g.probing());
        let (c, moved) = g.update(&window(1, 8, 1_000.0));
        assert_eq!((c, moved), (10, Some(Move::Resume)));
        assert_eq!(g.baseline(), Some(Duration::from_millis(1)));
        let mut probes = 0;
        // Five intervals tracking, a probe, its resume: twice.
        for _ in 0..14 {
            let (_, moved) = g.update(&window(g.capacity(), 8, 1_000.0));
            probes += usize::from(moved == Some(Move::Probe));
        }
        assert_eq!(probes, 2, "one after every five intervals of tracking");
    }

    #[test]
    fn it_does_not_grow_without_the_capacity_in_use() {
        let mut g = Gradient::new(4, GradientConfig::default());
        g.update(&window(4, 8, 1_000.0));
        g.update(&window(1, 8, 1_000.0));
        let idle = Window {
            capacity: 4,
            held: 100,
            mean_held_us: 1_000.0,
            peak: 1,
            waiting: 0,
            tenants: Vec::new(),
        };
        for _ in 0..10 {
            assert_eq!(g.update(&idle), (4, None));
        }
        // And with nothing held at all, nothing moves.
        assert_eq!(g.update(&Window::default()), (4, None));
    }

    #[test]
    fn it_stays_within_its_bounds() {
        let mut g = Gradient::new(
            500,
            GradientConfig {
                min: 2,
                max: 6,
                ..GradientConfig::default()
            },
        );
        assert_eq!(g.capacity(), 6);
        for _ in 0..40 {
            let (c, _) = g.update(&window(g.capacity(), 100, 1_000.0));
            assert!((2..=6).contains(&c), "{c}");
        }
        assert_eq!(g.capacity(), 6, "below the knee it grows to the max");
    }
}
