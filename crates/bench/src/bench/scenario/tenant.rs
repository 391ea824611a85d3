//! `tenant`: `GET /v1/tenant` as authenticated members, with tenants chosen
//! Zipf-skewed (a few busy tenants, a long tail), and `GET /healthz`, taking
//! turns of 200 ms over the same run. What it shows (in the scenario's notes): the
//! cached tenant read's throughput as a fraction of the HTTP stack's
//! ceiling, the database statements per `GET /v1/tenant` at steady state,
//! and the tenant-metadata cache hit rate — the last two read from the
//! server's `/metrics` before and after the measured window.

use std::time::Duration;

use hyper::Method;
use rand_chacha::ChaCha8Rng;

use super::{Call, PlanContext, ScenarioPlan, Stream, TenantRole, Turns, any_user};
use crate::bench::workload::TenantTarget;

/// The Zipf exponent of the tenants' popularity.
pub const ZIPF_EXPONENT: f64 = 1.0;

pub fn plan(ctx: &PlanContext<'_>) -> anyhow::Result<ScenarioPlan> {
    let n = ctx.workload.tenants.len();
    anyhow::ensure!(n > 0, "the tenant scenario needs at least one tenant");
    // Each operation gets `duration` of measured time, taking turns.
    let end = ctx.warmup + ctx.duration * 2;
    let turn = |turn| {
        Some(Turns {
            slice: TURN,
            turn,
            of: 2,
        })
    };
    Ok(ScenarioPlan {
        streams: vec![
            Stream {
                name: "get-tenant",
                tenants: zipf_tenants(n, ZIPF_EXPONENT),
                load: ctx.load(),
                start: Duration::ZERO,
                end,
                pick,
                turns: turn(0),
            },
            Stream {
                name: "healthz",
                tenants: Vec::new(),
                load: ctx.load(),
                start: Duration::ZERO,
                end,
                pick: super::healthz::pick,
                turns: turn(1),
            },
        ],
        warmup: ctx.warmup,
        end,
        loaded_from: None,
        roles: vec![TenantRole::Tenant; n],
        noisy: None,
    })
}

/// How long each of the two streams sends before handing over: short enough
/// that both see the same conditions, long against the sub-millisecond
/// requests in flight at a hand-over.
const TURN: Duration = Duration::from_millis(200);

/// The throughput of `GET /v1/tenant` as a fraction of `/healthz`'s: each
/// operation's answers over the measured time that was its turn.
pub fn throughput_ratio(
    plan: &ScenarioPlan,
    tenant_answers: u64,
    health_answers: u64,
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
    let health = rate("healthz", health_answers).filter(|r| *r > 0.0)?;
    Some(rate("get-tenant", tenant_answers)? / health)
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

pub fn pick(rng: &mut ChaCha8Rng, tenant: Option<&TenantTarget>) -> Call {
    Call {
        op: "get-tenant",
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
                "tenant-metadata cache hit rate (Zipf s={ZIPF_EXPONENT}): {:.2} % ({hits} hits, {misses} misses; goal >= 99 %)",
                100.0 * hits / (hits + misses)
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
                stream("get-tenant", 0, pick),
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
        let ratio = throughput_ratio(&plan, 800, 1_000).expect("a ratio");
        assert!((ratio - 0.8).abs() < 1e-9, "{ratio}");
        // Warm-up ending 100 ms into a /healthz turn: it had 4.9 s, the
        // tenant stream 5 s, so equal answers are not an equal rate.
        let plan = taking_turns(Duration::from_millis(15_100));
        let ratio = throughput_ratio(&plan, 1_000, 1_000).expect("a ratio");
        assert!((ratio - 4.9 / 5.0).abs() < 1e-9, "{ratio}");
        assert_eq!(
            throughput_ratio(&plan, 1_000, 0),
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
    fn counters_are_read_from_the_exposition() {
        let text = "\
# TYPE http_requests_total counter
http_requests_total{route=\"/v1/tenant\",method=\"GET\",tier=\"free\",status=\"200\"} 10
http_requests_total{route=\"/healthz\",method=\"GET\",tier=\"none\",status=\"200\"} 99
tenantry_db_statements_total{route=\"/v1/tenant\"} 3
tenantry_cache_hits_total{cache=\"tenant\",level=\"l1\"} 97
tenantry_cache_hits_total{cache=\"member\",level=\"l1\"} 50
tenantry_cache_misses_total{cache=\"names:slug\"} 3
";
        let c = CacheCounters::parse(text);
        assert_eq!(
            c,
            CacheCounters {
                requests: 10.0,
                statements: 3.0,
                hits: 97.0,
                misses: 3.0
            }
        );
        let notes = c.notes(&CacheCounters::default());
        assert!(notes[0].contains("0.3000"), "{notes:?}");
        assert!(notes[1].contains("97.00 %"), "{notes:?}");
    }
}
