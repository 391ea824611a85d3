//! The workloads `tenantry bench` can drive, one module per scenario.
//!
//! A scenario turns the discovered [`Workload`] into a [`ScenarioPlan`]:
//! one or more [`Stream`]s of requests, each with its tenants, its way of
//! offering load (closed or open loop), its time window and a [`PickFn`]
//! that chooses the next request. Adding a scenario is adding a variant to
//! [`Scenario`] and a module with a `plan` function; the driver, the
//! recorder and the reports need no change.

pub mod deep_page;
pub mod feed;
pub mod healthz;
pub mod ingest;
pub mod mixed;
pub mod noisy_neighbor;
pub mod read;
pub mod search;
pub mod tenant;
pub mod write;

use std::time::Duration;

use bytes::Bytes;
use hyper::Method;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::workload::{TenantTarget, Workload};

/// The scenarios, by their command-line names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Tenant info, member lists, post lists, single posts and comments.
    Read,
    /// The first page of posts (`GET /v1/posts?limit=20`) alone, as a
    /// random member: the database path's row of BENCHMARKS.md
    /// (`scripts/bench/dbpath`).
    List,
    /// New posts, likes, unlikes and comments.
    Write,
    /// 80% read, 20% write.
    Mixed,
    /// Quiet tenants at a fixed rate, first alone, then while one tenant
    /// floods: how much of the flood reaches them.
    NoisyNeighbor,
    /// Cross-community feeds (`GET /v1/feed`) as each tenant's lowest-id
    /// member (the hub user of `tenantry seed --hub-communities`).
    Feed,
    /// Full-text search (`GET /v1/search`) for words of the seeded posts.
    Search,
    /// The first page of posts against a page `--deep-rows` deep.
    DeepPage,
    /// Analytics ingestion: batches of 100 events per request, group-committed.
    Ingest,
    /// `GET /healthz`: the HTTP framework's ceiling on this machine, for
    /// reading the other results as ratios.
    Healthz,
    /// Cached `GET /v1/tenant` for the 10 hot tenants, all tenants uniformly
    /// and all tenants Zipf-skewed, and `GET /healthz`, taking turns: the
    /// ratios to the hot tenants, the server's resident bytes per tenant,
    /// the DB statements per request and the tenant cache hit rate.
    Tenant,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Read => "read",
            Scenario::List => "list",
            Scenario::Write => "write",
            Scenario::Mixed => "mixed",
            Scenario::NoisyNeighbor => "noisy-neighbor",
            Scenario::Feed => "feed",
            Scenario::Search => "search",
            Scenario::DeepPage => "deep-page",
            Scenario::Ingest => "ingest",
            Scenario::Healthz => "healthz",
            Scenario::Tenant => "tenant",
        }
    }

    /// Whether the scenario sends tenant-scoped requests.
    pub fn needs_tenants(self) -> bool {
        !matches!(self, Scenario::Healthz)
    }

    pub fn plan(self, ctx: &PlanContext<'_>) -> anyhow::Result<ScenarioPlan> {
        match self {
            Scenario::Read => read::plan(ctx),
            Scenario::List => ctx.single_stream("list", read::pick_list),
            Scenario::Write => write::plan(ctx),
            Scenario::Mixed => mixed::plan(ctx),
            Scenario::NoisyNeighbor => noisy_neighbor::plan(ctx),
            Scenario::Feed => feed::plan(ctx),
            Scenario::Search => search::plan(ctx),
            Scenario::DeepPage => deep_page::plan(ctx),
            Scenario::Ingest => ingest::plan(ctx),
            Scenario::Healthz => healthz::plan(ctx),
            Scenario::Tenant => tenant::plan(ctx),
        }
    }
}

/// What a scenario plans with.
pub struct PlanContext<'a> {
    pub workload: &'a Workload,
    pub duration: Duration,
    pub warmup: Duration,
    pub connections: usize,
    /// Open-loop rate for the whole scenario; `None`: closed loop.
    pub rate: Option<f64>,
    /// noisy-neighbor: each quiet tenant's rate, the solo phase, the flood.
    pub quiet_rate: f64,
    pub solo: Duration,
    pub noisy: Option<usize>,
    /// tenant: how many tenants are the hot ones.
    pub hot_tenants: usize,
    /// tenant: how requests spread over all the tenants.
    pub tenant_choices: &'a [tenant::TenantChoice],
}

impl PlanContext<'_> {
    /// The load of a single-stream scenario, from `--rate`/`--connections`.
    pub fn load(&self) -> Load {
        match self.rate {
            Some(rate) => Load::Open {
                rate,
                connections: self.connections,
            },
            None => Load::Closed {
                connections: self.connections,
            },
        }
    }

    /// One stream over every tenant for the whole run (read, write, mixed).
    pub fn single_stream(&self, name: &'static str, pick: PickFn) -> anyhow::Result<ScenarioPlan> {
        anyhow::ensure!(
            !self.workload.tenants.is_empty(),
            "the {name} scenario needs at least one tenant"
        );
        let end = self.warmup + self.duration;
        Ok(ScenarioPlan {
            streams: vec![Stream {
                name,
                tenants: (0..self.workload.tenants.len()).collect(),
                load: self.load(),
                start: Duration::ZERO,
                end,
                pick,
                turns: None,
            }],
            warmup: self.warmup,
            end,
            loaded_from: None,
            roles: vec![TenantRole::Tenant; self.workload.tenants.len()],
            noisy: None,
        })
    }
}

/// How a stream offers load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    /// `connections` workers, each sending its next request as soon as the
    /// previous one is answered. Latency is measured from the send.
    Closed { connections: usize },
    /// `rate` requests per second on a fixed schedule, spread over
    /// `connections` workers. Latency is measured from the *scheduled*
    /// time, so a stalled server is charged for the requests it delayed
    /// (no coordinated omission).
    Open { rate: f64, connections: usize },
}

impl Load {
    pub fn connections(&self) -> usize {
        match self {
            Load::Closed { connections } | Load::Open { connections, .. } => *connections,
        }
    }
}

/// One request to send.
#[derive(Debug, Clone)]
pub struct Call {
    /// The operation's name in the results, e.g. `list-posts`.
    pub op: &'static str,
    pub method: Method,
    pub path: String,
    pub body: Option<Bytes>,
    /// Index into the tenant's users (0 = owner).
    pub user: usize,
}

/// Chooses the next request for a tenant (`None` for scenarios without one).
pub type PickFn = fn(&mut ChaCha8Rng, Option<&TenantTarget>) -> Call;

/// A stream of requests.
#[derive(Clone)]
pub struct Stream {
    pub name: &'static str,
    /// Indexes into the workload's tenants; empty for tenant-less requests.
    /// Closed loop picks one at random per request; open loop goes round
    /// robin, so each tenant gets an equal share of the rate.
    pub tenants: Vec<usize>,
    pub load: Load,
    /// The window the stream sends in, from the scenario's start.
    pub start: Duration,
    pub end: Duration,
    pub pick: PickFn,
    /// Streams that take turns within their window (`None`: always on).
    pub turns: Option<Turns>,
}

/// Equal slices of time handed round `of` streams in order: the stream
/// whose `turn` it is sends, the others wait. Streams compared with each
/// other take turns so that both see the same conditions (the machine's
/// background work, the scheduler's mood) rather than one each half of the
/// run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Turns {
    pub slice: Duration,
    pub turn: u32,
    pub of: u32,
}

impl Turns {
    fn slice_ns(&self) -> u128 {
        self.slice.as_nanos().max(1)
    }

    /// Whether it is this stream's turn at `at` from the scenario's start.
    pub fn is_open(&self, at: Duration) -> bool {
        (at.as_nanos() / self.slice_ns()) % u128::from(self.of.max(1)) == u128::from(self.turn)
    }

    /// The first moment at or after `at` that is this stream's turn.
    pub fn next_open(&self, at: Duration) -> Duration {
        if self.is_open(at) {
            return at;
        }
        let (slice, of) = (self.slice_ns(), u128::from(self.of.max(1)));
        let index = at.as_nanos() / slice;
        let ahead = (u128::from(self.turn) + of - index % of) % of;
        nanos((index + ahead) * slice)
    }

    /// How long it is this stream's turn between `from` and `to`.
    pub fn open_time(&self, from: Duration, to: Duration) -> Duration {
        let upto = |t: Duration| {
            let (slice, of) = (self.slice_ns(), u128::from(self.of.max(1)));
            let t = t.as_nanos();
            let (rounds, rest) = (t / (slice * of), t % (slice * of));
            let start = u128::from(self.turn) * slice;
            rounds * slice + rest.saturating_sub(start).min(slice)
        };
        nanos(upto(to).saturating_sub(upto(from)))
    }
}

fn nanos(n: u128) -> Duration {
    Duration::from_nanos(u64::try_from(n).unwrap_or(u64::MAX))
}

/// A tenant's part in a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantRole {
    Tenant,
    Quiet,
    Noisy,
}

impl TenantRole {
    pub fn as_str(self) -> &'static str {
        match self {
            TenantRole::Tenant => "tenant",
            TenantRole::Quiet => "quiet",
            TenantRole::Noisy => "noisy",
        }
    }
}

/// A whole scenario.
pub struct ScenarioPlan {
    pub streams: Vec<Stream>,
    /// Requests before this are not recorded.
    pub warmup: Duration,
    /// When the last stream stops.
    pub end: Duration,
    /// noisy-neighbor: when the flood starts.
    pub loaded_from: Option<Duration>,
    /// Per workload tenant.
    pub roles: Vec<TenantRole>,
    /// noisy-neighbor: the flooding tenant.
    pub noisy: Option<usize>,
}

impl ScenarioPlan {
    /// The measured seconds in which `tenant` was sent requests: from the
    /// first of its streams' starts (or the warm-up's end) to the last of
    /// their ends. A noisy tenant that floods only after the solo phase is
    /// measured over the flood, not the whole run.
    pub fn active_secs(&self, tenant: usize) -> f64 {
        let mut mine = self.streams.iter().filter(|s| s.tenants.contains(&tenant));
        let (start, end) = mine
            .clone()
            .fold((None, Duration::ZERO), |(start, end), s| {
                let start = Some(start.map_or(s.start, |t: Duration| t.min(s.start)));
                (start, end.max(s.end))
            });
        let start = start.unwrap_or(self.warmup).max(self.warmup);
        // Streams that take the same turns send only in them.
        let first = mine.next().and_then(|s| s.turns);
        match first {
            Some(turns) if mine.all(|s| s.turns == Some(turns)) => {
                turns.open_time(start, end).as_secs_f64()
            }
            _ => end.saturating_sub(start).as_secs_f64(),
        }
    }

    /// How the results describe the load.
    pub fn load_mode(&self) -> (&'static str, usize, Option<f64>) {
        let connections = self.streams.iter().map(|s| s.load.connections()).sum();
        let open: Vec<f64> = self
            .streams
            .iter()
            .filter_map(|s| match s.load {
                Load::Open { rate, .. } => Some(rate),
                Load::Closed { .. } => None,
            })
            .collect();
        let mode = match (open.len(), self.streams.len()) {
            (0, _) => "closed",
            (n, m) if n == m => "open",
            _ => "mixed",
        };
        let rate = (!open.is_empty()).then(|| open.iter().sum());
        (mode, connections, rate)
    }
}

/// A uniformly chosen element (`None` when empty).
pub(crate) fn choose<'a, T>(rng: &mut ChaCha8Rng, items: &'a [T]) -> Option<&'a T> {
    use rand::Rng as _;
    (!items.is_empty()).then(|| &items[rng.random_range(0..items.len())])
}

/// A uniformly chosen user index of `tenant`.
pub(crate) fn any_user(rng: &mut ChaCha8Rng, tenant: &TenantTarget) -> usize {
    use rand::Rng as _;
    rng.random_range(0..tenant.users.len().max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(_: &mut ChaCha8Rng, _: Option<&TenantTarget>) -> Call {
        Call {
            op: "test",
            method: Method::GET,
            path: "/".to_owned(),
            body: None,
            user: 0,
        }
    }

    fn stream(tenants: Vec<usize>, start: u64, end: u64) -> Stream {
        Stream {
            name: "s",
            tenants,
            load: Load::Closed { connections: 1 },
            start: Duration::from_secs(start),
            end: Duration::from_secs(end),
            pick,
            turns: None,
        }
    }

    #[test]
    fn a_tenant_is_measured_over_its_own_window() {
        // Warm-up 1 s; quiet tenant 0 from 0 to 31 s; noisy tenant 1 floods
        // from 11 to 31 s.
        let plan = ScenarioPlan {
            streams: vec![stream(vec![0], 0, 31), stream(vec![1], 11, 31)],
            warmup: Duration::from_secs(1),
            end: Duration::from_secs(31),
            loaded_from: Some(Duration::from_secs(11)),
            roles: vec![TenantRole::Quiet, TenantRole::Noisy],
            noisy: Some(1),
        };
        assert_eq!(plan.active_secs(0), 30.0);
        assert_eq!(plan.active_secs(1), 20.0);
        assert_eq!(plan.active_secs(2), 0.0, "a tenant in no stream");
    }

    #[test]
    fn streams_taking_turns_send_in_their_own_slices_only() {
        let ms = Duration::from_millis;
        let (a, b) = (
            Turns {
                slice: ms(200),
                turn: 0,
                of: 2,
            },
            Turns {
                slice: ms(200),
                turn: 1,
                of: 2,
            },
        );
        assert!(a.is_open(ms(0)) && a.is_open(ms(199)) && !a.is_open(ms(200)));
        assert!(!b.is_open(ms(199)) && b.is_open(ms(200)) && b.is_open(ms(399)));
        assert!(a.is_open(ms(400)) && !b.is_open(ms(400)));
        assert_eq!(a.next_open(ms(50)), ms(50));
        assert_eq!(a.next_open(ms(250)), ms(400));
        assert_eq!(b.next_open(ms(50)), ms(200));
        assert_eq!(b.next_open(ms(450)), ms(600));
        // Over any window each gets its slices, partial ones included.
        assert_eq!(a.open_time(ms(0), ms(1000)), ms(600));
        assert_eq!(b.open_time(ms(0), ms(1000)), ms(400));
        assert_eq!(a.open_time(ms(150), ms(1050)), ms(450));
        assert_eq!(b.open_time(ms(150), ms(1050)), ms(450));
        assert_eq!(a.open_time(ms(15_000), ms(25_000)), ms(5_000));
        assert_eq!(b.open_time(ms(15_000), ms(25_000)), ms(5_000));
        assert_eq!(a.open_time(ms(300), ms(300)), Duration::ZERO);
    }

    #[test]
    fn a_tenant_of_a_stream_taking_turns_is_active_in_its_turns_only() {
        let mut s = stream(vec![0], 0, 21);
        s.turns = Some(Turns {
            slice: Duration::from_millis(200),
            turn: 0,
            of: 2,
        });
        let plan = ScenarioPlan {
            streams: vec![s],
            warmup: Duration::from_secs(1),
            end: Duration::from_secs(21),
            loaded_from: None,
            roles: vec![TenantRole::Tenant],
            noisy: None,
        };
        assert!((plan.active_secs(0) - 10.0).abs() < 1e-9);
    }
}
