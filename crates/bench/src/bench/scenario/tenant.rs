//! `tenant`: `GET /v1/tenant` as authenticated members at three spreads of
//! tenants, and `GET /healthz`, taking turns of 200 ms over the same run:
//!
//! - `hot`: the first `--hot-tenants` (10) tenants only;
//! - `uniform`: every discovered tenant equally likely (`--tenants 100000`
//!   against a server seeded with `--seed-tenants 100000`);
//! - `zipf`: every tenant, Zipf-skewed (s = 1: a few busy tenants, a long
//!   tail).
//!
//! Before the measured window every tenant is visited once (the memo and
//! caches warm, as a server that has seen them all), and the server's
//! resident memory is read from `/metrics` after the hot tenants alone and
//! again after all of them: the difference per tenant is what a tenant the
//! server has seen costs it. What it shows (in the scenario's notes): each
//! spread's throughput and p99 against the hot tenants', the resident bytes
//! per tenant, the cached tenant read's throughput as a fraction of the
//! HTTP stack's ceiling, the database statements per `GET /v1/tenant` at
//! steady state, the tenant-metadata cache hit rate, and the share of
//! requests whose caller came from the server's memo.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use hyper::Method;
use rand_chacha::ChaCha8Rng;

use super::{Call, PlanContext, ScenarioPlan, Stream, TenantRole, Turns, any_user};
use crate::bench::client::{Connection, Endpoint, Headers};
use crate::bench::workload::{TenantTarget, Workload};
use crate::report::OperationResult;

/// The Zipf exponent of the tenants' popularity.
pub const ZIPF_EXPONENT: f64 = 1.0;

/// How the `tenant` scenario spreads requests over all the tenants (besides
/// the hot ones, which it always measures).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TenantChoice {
    /// Every tenant equally likely.
    Uniform,
    /// Tenant `k` in proportion to `1 / k`.
    Zipf,
}

impl TenantChoice {
    pub fn op(self) -> &'static str {
        match self {
            TenantChoice::Uniform => "get-tenant-uniform",
            TenantChoice::Zipf => "get-tenant-zipf",
        }
    }
}

/// The operation name of the hot tenants' stream.
pub const HOT_OP: &str = "get-tenant-hot";

pub fn plan(ctx: &PlanContext<'_>) -> anyhow::Result<ScenarioPlan> {
    let n = ctx.workload.tenants.len();
    anyhow::ensure!(n > 0, "the tenant scenario needs at least one tenant");
    let hot = ctx.hot_tenants.clamp(1, n);
    let mut spreads: Vec<(&'static str, Vec<usize>, super::PickFn)> =
        vec![(HOT_OP, (0..hot).collect(), pick_hot)];
    for choice in ctx.tenant_choices {
        match choice {
            TenantChoice::Uniform => spreads.push((choice.op(), (0..n).collect(), pick_uniform)),
            TenantChoice::Zipf => {
                spreads.push((choice.op(), zipf_tenants(n, ZIPF_EXPONENT), pick_zipf));
            }
        }
    }
    let of = u32::try_from(spreads.len() + 1).unwrap_or(u32::MAX);
    // Each stream gets `duration` of measured time, taking turns.
    let end = ctx.warmup + ctx.duration * of;
    let turn = |turn| {
        Some(Turns {
            slice: TURN,
            turn,
            of,
        })
    };
    let mut streams: Vec<Stream> = spreads
        .into_iter()
        .zip(0..)
        .map(|((name, tenants, pick), t)| Stream {
            name,
            tenants,
            load: ctx.load(),
            start: Duration::ZERO,
            end,
            pick,
            turns: turn(t),
        })
        .collect();
    streams.push(Stream {
        name: "healthz",
        tenants: Vec::new(),
        load: ctx.load(),
        start: Duration::ZERO,
        end,
        pick: super::healthz::pick,
        turns: turn(of - 1),
    });
    Ok(ScenarioPlan {
        streams,
        warmup: ctx.warmup,
        end,
        loaded_from: None,
        roles: vec![TenantRole::Tenant; n],
        noisy: None,
    })
}

/// The plan that warms the hot tenants alone (for `duration`), before the
/// server's memory is first read.
pub fn hot_only(plan: &ScenarioPlan, duration: Duration) -> ScenarioPlan {
    let mut streams: Vec<Stream> = plan
        .streams
        .iter()
        .filter(|s| s.name == HOT_OP)
        .cloned()
        .collect();
    for s in &mut streams {
        s.turns = None;
        s.end = duration;
    }
    ScenarioPlan {
        streams,
        warmup: duration,
        end: duration,
        loaded_from: None,
        roles: plan.roles.clone(),
        noisy: None,
    }
}

/// How long each stream sends before handing over: short enough
/// that all see the same conditions, long against the sub-millisecond
/// requests in flight at a hand-over.
const TURN: Duration = Duration::from_millis(200);

/// The throughput of stream `a` as a fraction of stream `b`'s: each
/// stream's answers over the measured time that was its turn.
pub fn throughput_ratio(
    plan: &ScenarioPlan,
    (a, a_answers): (&str, u64),
    (b, b_answers): (&str, u64),
) -> Option<f64> {
    let rate = |name: &str, answers: u64| {
        let stream = plan.streams.iter().find(|s| s.name == name)?;
        let from = plan.warmup.max(stream.start);
        let open = match stream.turns {
            Some(turns) => turns.open_time(from, stream.end),
            None => stream.end.saturating_sub(from),
        };
        (!open.is_zero()).then(|| answers as f64 / open.as_secs_f64())
    };
    let base = rate(b, b_answers).filter(|r| *r > 0.0)?;
    Some(rate(a, a_answers)? / base)
}

/// Sends one `GET /v1/tenant` as each tenant's first user, every tenant
/// once, over `connections` connections: afterwards the server has seen
/// every tenant (its memo, caches and per-tenant state as at steady state).
pub async fn visit_all(
    workload: &Arc<Workload>,
    endpoint: &Endpoint,
    connections: usize,
    timeout: Duration,
    progress: bool,
) -> anyhow::Result<()> {
    let n = workload.tenants.len();
    let connections = connections.clamp(1, n.max(1));
    let started = std::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..connections {
        let (workload, endpoint) = (workload.clone(), endpoint.clone());
        tasks.spawn(async move {
            let mut conn = Connection::new(endpoint, timeout);
            let (mut failed, mut first) = (0_u64, None);
            for t in (w..workload.tenants.len()).step_by(connections) {
                let tenant = &workload.tenants[t];
                let headers = Headers {
                    auth: tenant.users.first().map(|u| u.auth.clone()),
                    tenant: Some(tenant.header.clone()),
                };
                let why = match conn.send(Method::GET, "/v1/tenant", &headers, None).await {
                    Ok(a) if a.status.is_success() => continue,
                    Ok(a) => format!("{} {}", a.status, String::from_utf8_lossy(&a.body)),
                    Err(e) => format!("{e:?}"),
                };
                failed += 1;
                first.get_or_insert(why);
            }
            (failed, first)
        });
    }
    let (mut failed, mut first) = (0, None);
    while let Some(joined) = tasks.join_next().await {
        let (f, why) = joined.context("a visiting worker panicked")?;
        failed += f;
        first = first.or(why);
    }
    if progress {
        eprintln!(
            "tenant: visited {n} tenants in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    anyhow::ensure!(
        failed == 0,
        "{failed} of {n} first visits of GET /v1/tenant failed, the first with {}",
        first.unwrap_or_default()
    );
    Ok(())
}

/// The scenario's findings: each spread against the hot tenants
/// (throughput and p99, same run, taking turns), the hot tenants against
/// `/healthz`, the server's resident bytes per tenant seen (`hot`: after
/// the hot tenants alone; `before`: after every tenant was visited, when
/// the measured window starts; `after`: when it ends), and the statements
/// and cache figures of the window.
pub fn spread_notes(
    plan: &ScenarioPlan,
    operations: &[OperationResult],
    (hot, before, after): (&CacheCounters, &CacheCounters, &CacheCounters),
    hot_tenants: usize,
    tenants: usize,
) -> Vec<String> {
    let op = |name: &str| operations.iter().find(|o| o.name == name);
    let answered = |name: &str| op(name).map_or(0, |o| o.ok);
    let mut notes = Vec::new();
    for choice in [TenantChoice::Uniform, TenantChoice::Zipf] {
        let name = choice.op();
        if plan.streams.iter().all(|s| s.name != name) {
            continue;
        }
        let ratio = throughput_ratio(plan, (name, answered(name)), (HOT_OP, answered(HOT_OP)));
        let p99 = match (op(name), op(HOT_OP)) {
            (Some(a), Some(h)) if h.latency_ms.p99 > 0.0 => {
                Some((a.latency_ms.p99, h.latency_ms.p99))
            }
            _ => None,
        };
        if let (Some(ratio), Some((p99, hot_p99))) = (ratio, p99) {
            notes.push(format!(
                "{tenants} tenants {} / {hot_tenants} hot tenants (taking turns, same run): \
                 throughput {ratio:.2} ({} vs {} answered), p99 x{:.2} ({p99:.2} vs {hot_p99:.2} ms); \
                 goal throughput >= 0.7, p99 <= 1.5",
                name.trim_start_matches("get-tenant-"),
                answered(name),
                answered(HOT_OP),
                p99 / hot_p99
            ));
        }
    }
    if let Some(ratio) = throughput_ratio(
        plan,
        (HOT_OP, answered(HOT_OP)),
        ("healthz", answered("healthz")),
    ) {
        notes.push(format!(
            "GET /v1/tenant ({hot_tenants} hot tenants) / GET /healthz throughput (taking turns, same run): {ratio:.2} (goal >= 0.8)"
        ));
    }
    if hot.resident > 0.0
        && before.resident > 0.0
        && let Some(per) = bytes_per_tenant(hot.resident, before.resident, hot_tenants, tenants)
    {
        notes.push(format!(
            "server resident memory: {:.1} MiB with {hot_tenants} hot tenants, {:.1} MiB after all {tenants} were seen, {:.1} MiB after the run: {per:.0} bytes per tenant seen (goal <= 1024)",
            hot.resident / 1_048_576.0,
            before.resident / 1_048_576.0,
            after.resident / 1_048_576.0,
        ));
    }
    notes.extend(after.notes(before));
    notes
}

/// What the tenants that went idle still cost the server: its resident
/// memory after `waited` with only the hot tenants busy, over the hot
/// tenants' alone.
pub fn idle_note(
    (hot, idle): (&CacheCounters, &CacheCounters),
    waited: Duration,
    hot_tenants: usize,
    tenants: usize,
) -> Option<String> {
    if hot.resident <= 0.0 || idle.resident <= 0.0 {
        return None;
    }
    let per = bytes_per_tenant(hot.resident, idle.resident, hot_tenants, tenants)?;
    Some(format!(
        "server resident memory after {:.0} s with only the {hot_tenants} hot tenants busy: \
         {:.1} MiB, {per:.0} bytes per idle tenant over the hot tenants alone (goal <= 1024)",
        waited.as_secs_f64(),
        idle.resident / 1_048_576.0,
    ))
}

/// Resident bytes per tenant: the growth from `hot` (the hot tenants alone)
/// to `all` (every tenant seen), over the tenants added.
pub fn bytes_per_tenant(hot: f64, all: f64, hot_tenants: usize, tenants: usize) -> Option<f64> {
    let added = tenants.checked_sub(hot_tenants).filter(|&a| a > 0)?;
    Some((all - hot) / added as f64)
}

/// The stream's tenant list as a multiset in which tenant `i` (0-based)
/// appears in proportion to `1 / (i + 1)^s`, at least once: the driver's
/// uniform choice from it is a Zipf choice of tenant.
pub fn zipf_tenants(n: usize, s: f64) -> Vec<usize> {
    const SLOTS: f64 = 200_000.0;
    let weights: Vec<f64> = (1..=n).map(|k| 1.0 / (k as f64).powf(s)).collect();
    let total: f64 = weights.iter().sum();
    let mut out = Vec::new();
    for (i, w) in weights.iter().enumerate() {
        let copies = ((w / total) * SLOTS).round().max(1.0) as usize;
        out.extend(std::iter::repeat_n(i, copies));
    }
    out
}

fn pick_hot(rng: &mut ChaCha8Rng, tenant: Option<&TenantTarget>) -> Call {
    pick(HOT_OP, rng, tenant)
}

fn pick_uniform(rng: &mut ChaCha8Rng, tenant: Option<&TenantTarget>) -> Call {
    pick(TenantChoice::Uniform.op(), rng, tenant)
}

fn pick_zipf(rng: &mut ChaCha8Rng, tenant: Option<&TenantTarget>) -> Call {
    pick(TenantChoice::Zipf.op(), rng, tenant)
}

pub fn pick(op: &'static str, rng: &mut ChaCha8Rng, tenant: Option<&TenantTarget>) -> Call {
    Call {
        op,
        method: Method::GET,
        path: "/v1/tenant".to_owned(),
        body: None,
        user: tenant.map_or(0, |t| any_user(rng, t)),
    }
}

/// Counters read from the server's `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CacheCounters {
    /// `GET /v1/tenant` requests answered.
    pub requests: f64,
    /// Statements sent while serving them.
    pub statements: f64,
    /// Tenant-metadata lookups (namespaces `tenant` and `names:*`).
    pub hits: f64,
    pub misses: f64,
    /// Tenant-scoped requests whose caller came from the server's memo, and
    /// those that resolved it again (`tenantry_memo_lookups_total`).
    pub memo_hits: f64,
    pub memo_misses: f64,
    /// The server's resident memory in bytes (`process_resident_memory_bytes`),
    /// 0 if it does not say.
    pub resident: f64,
}

impl CacheCounters {
    /// Sums the series of a Prometheus text exposition.
    pub fn parse(text: &str) -> Self {
        let mut c = Self::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(v) = value.parse::<f64>() else {
                continue;
            };
            let route = series.contains("route=\"/v1/tenant\"");
            let metadata = series.contains("cache=\"tenant\"") || series.contains("cache=\"names:");
            if series.starts_with("http_requests_total{") && route {
                c.requests += v;
            } else if series.starts_with("tenantry_db_statements_total{") && route {
                c.statements += v;
            } else if series.starts_with("tenantry_cache_hits_total{") && metadata {
                c.hits += v;
            } else if series.starts_with("tenantry_cache_misses_total{") && metadata {
                c.misses += v;
            } else if series == "tenantry_memo_lookups_total{result=\"hit\"}" {
                c.memo_hits = v;
            } else if series == "tenantry_memo_lookups_total{result=\"miss\"}" {
                c.memo_misses = v;
            } else if series == "process_resident_memory_bytes" {
                c.resident = v;
            }
        }
        c
    }

    /// What happened between `before` and `self`, as notes for the report.
    pub fn notes(&self, before: &Self) -> Vec<String> {
        let requests = self.requests - before.requests;
        let statements = self.statements - before.statements;
        let (hits, misses) = (self.hits - before.hits, self.misses - before.misses);
        let mut notes = Vec::new();
        if requests > 0.0 {
            notes.push(format!(
                "database statements per GET /v1/tenant: {:.4} ({statements} over {requests} requests; goal 0)",
                statements / requests
            ));
        }
        if hits + misses > 0.0 {
            notes.push(format!(
                "tenant-metadata cache hit rate (all spreads): {:.2} % ({hits} hits, {misses} misses; goal >= 99 %)",
                100.0 * hits / (hits + misses)
            ));
        }
        let (memo_hits, memo_misses) = (
            self.memo_hits - before.memo_hits,
            self.memo_misses - before.memo_misses,
        );
        if memo_hits + memo_misses > 0.0 {
            notes.push(format!(
                "requests whose caller came from the memo (all spreads): {:.2} % ({memo_hits} found, {memo_misses} resolved again)",
                100.0 * memo_hits / (memo_hits + memo_misses)
            ));
        }
        notes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::scenario::Load;

    fn taking_turns(warmup: Duration) -> ScenarioPlan {
        let end = Duration::from_secs(25);
        let stream = |name, turn, pick| Stream {
            name,
            tenants: Vec::new(),
            load: Load::Closed { connections: 1 },
            start: Duration::ZERO,
            end,
            pick,
            turns: Some(Turns {
                slice: TURN,
                turn,
                of: 2,
            }),
        };
        ScenarioPlan {
            streams: vec![
                stream(HOT_OP, 0, pick_hot),
                stream("healthz", 1, super::super::healthz::pick),
            ],
            warmup,
            end,
            loaded_from: None,
            roles: Vec::new(),
            noisy: None,
        }
    }

    #[test]
    fn the_ratio_compares_answers_per_second_of_each_operations_own_turns() {
        // Warm-up 15 s, 25 s in all: 5 s of turns each.
        let plan = taking_turns(Duration::from_secs(15));
        let ratio = throughput_ratio(&plan, (HOT_OP, 800), ("healthz", 1_000)).expect("a ratio");
        assert!((ratio - 0.8).abs() < 1e-9, "{ratio}");
        // Warm-up ending 100 ms into a /healthz turn: it had 4.9 s, the
        // tenant stream 5 s, so equal answers are not an equal rate.
        let plan = taking_turns(Duration::from_millis(15_100));
        let ratio = throughput_ratio(&plan, (HOT_OP, 1_000), ("healthz", 1_000)).expect("a ratio");
        assert!((ratio - 4.9 / 5.0).abs() < 1e-9, "{ratio}");
        assert_eq!(
            throughput_ratio(&plan, (HOT_OP, 1_000), ("healthz", 0)),
            None,
            "no /healthz answers"
        );
    }

    #[test]
    fn zipf_multiset_favours_the_first_tenants_and_keeps_every_one() {
        let m = zipf_tenants(1_000, 1.0);
        let count = |i: usize| m.iter().filter(|&&t| t == i).count();
        assert!(count(0) > 10 * count(20));
        assert!((0..1_000).all(|i| count(i) >= 1));
    }

    #[test]
    fn the_plan_measures_the_hot_tenants_each_spread_and_healthz_in_turns() {
        let workload = crate::bench::workload::Workload {
            tenants: (0..50)
                .map(|i| TenantTarget {
                    id: uuid::Uuid::nil(),
                    slug: format!("t{i}"),
                    tier: "free".to_owned(),
                    member_count: 1,
                    header: hyper::header::HeaderValue::from_static("t"),
                    users: Vec::new(),
                    posts: Vec::new(),
                    deep_cursor: None,
                })
                .collect(),
            lifted: Vec::new(),
        };
        let ctx = PlanContext {
            workload: &workload,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            connections: 4,
            rate: None,
            quiet_rate: 1.0,
            solo: Duration::ZERO,
            noisy: None,
            hot_tenants: 10,
            tenant_choices: &[TenantChoice::Uniform, TenantChoice::Zipf],
        };
        let plan = plan(&ctx).expect("a plan");
        let names: Vec<&str> = plan.streams.iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            [HOT_OP, "get-tenant-uniform", "get-tenant-zipf", "healthz"]
        );
        assert_eq!(plan.streams[0].tenants, (0..10).collect::<Vec<_>>());
        assert_eq!(plan.streams[1].tenants, (0..50).collect::<Vec<_>>());
        assert!(
            plan.streams
                .iter()
                .all(|s| s.turns.is_some_and(|t| t.of == 4))
        );
        // Each stream gets the whole `duration` of turns.
        assert_eq!(plan.end, Duration::from_secs(41));
        let warm = hot_only(&plan, Duration::from_secs(2));
        assert_eq!(warm.streams.len(), 1);
        assert_eq!(warm.streams[0].turns, None);
        assert_eq!(warm.end, Duration::from_secs(2));
        assert_eq!(bytes_per_tenant(1_000.0, 11_000.0, 10, 50), Some(250.0));
        assert_eq!(bytes_per_tenant(1_000.0, 11_000.0, 10, 10), None);
    }

    #[test]
    fn counters_are_read_from_the_exposition() {
        let text = "\
# TYPE http_requests_total counter
http_requests_total{route=\"/v1/tenant\",method=\"GET\",tier=\"free\",status=\"200\"} 10
http_requests_total{route=\"/healthz\",method=\"GET\",tier=\"none\",status=\"200\"} 99
tenantry_db_statements_total{route=\"/v1/tenant\"} 3
tenantry_cache_hits_total{cache=\"tenant\",level=\"l1\"} 97
tenantry_cache_hits_total{cache=\"member\",level=\"l1\"} 50
tenantry_cache_misses_total{cache=\"names:slug\"} 3
tenantry_memo_lookups_total{result=\"hit\"} 90
tenantry_memo_lookups_total{result=\"miss\"} 10
process_resident_memory_bytes 123456
";
        let c = CacheCounters::parse(text);
        assert_eq!(
            c,
            CacheCounters {
                requests: 10.0,
                statements: 3.0,
                hits: 97.0,
                misses: 3.0,
                memo_hits: 90.0,
                memo_misses: 10.0,
                resident: 123_456.0,
            }
        );
        let notes = c.notes(&CacheCounters::default());
        assert!(notes[0].contains("0.3000"), "{notes:?}");
        assert!(notes[1].contains("97.00 %"), "{notes:?}");
        assert!(notes[2].contains("90.00 %"), "{notes:?}");
    }

    #[test]
    fn the_idle_note_is_the_growth_over_the_hot_tenants_per_idle_tenant() {
        let at = |resident| CacheCounters {
            resident,
            ..CacheCounters::default()
        };
        // 10 hot tenants at 100 MiB; 100,010 tenants seen; 100 MiB + 100 KB
        // after the wait: 1 byte per idle tenant.
        let note = idle_note(
            (&at(104_857_600.0), &at(104_957_600.0)),
            Duration::from_secs(330),
            10,
            100_010,
        )
        .expect("a note");
        assert!(note.contains("after 330 s"), "{note}");
        assert!(note.contains(", 1 bytes per idle tenant"), "{note}");
        // Without the memory figure (a server without the metric): none.
        assert!(idle_note((&at(0.0), &at(1.0)), Duration::from_secs(1), 10, 20).is_none());
    }
}
