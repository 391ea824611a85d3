//! Bounded per-tenant series for `/metrics`: only the top K tenants by a
//! decayed load score get their own `tenant="<slug>"` series, everything else
//! is summed under `tenant="_other"`, so 100,000 tenants never mean 100,000
//! label values (`TENANTRY_METRICS_TOP_K`, default 20).
//!
//! The score is the tenant's load (requests plus milliseconds holding the
//! database) decayed with a half-life of [`HALF_LIFE`], as
//! `citus_stat_tenants` ranks by decayed counts: a tenant that was busy an
//! hour ago sinks, one busy now rises within an interval or two. The series
//! are gauges of the last interval (per second, and p99s), rendered once per
//! interval: a tenant leaving the top K leaves no counter going backwards,
//! and scraping costs a copy of a small string.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use uuid::Uuid;

use super::meter::{Hist, Interval, MAX_TENANTS};

pub const DEFAULT_TOP_K: usize = 20;
/// The decay's half-life.
pub const HALF_LIFE: Duration = Duration::from_secs(300);
/// The label value of everything outside the top K.
pub const OTHER: &str = "_other";

struct Scored {
    score: f64,
    slug: String,
}

/// Decayed scores and the rendered families.
pub struct TopK {
    k: usize,
    scores: HashMap<Uuid, Scored>,
    rendered: String,
}

/// The families rendered, each a gauge: (name, help).
pub const FAMILIES: [(&str, &str); 8] = [
    (
        "tenantry_tenant_requests_per_second",
        "Requests per second over the last interval, top K tenants and _other.",
    ),
    (
        "tenantry_tenant_errors_per_second",
        "Server errors (5xx) per second over the last interval.",
    ),
    (
        "tenantry_tenant_throttled_per_second",
        "Requests answered 429 per second over the last interval.",
    ),
    (
        "tenantry_tenant_shed_per_second",
        "Requests answered 503 overloaded per second over the last interval.",
    ),
    (
        "tenantry_tenant_db_time_seconds_per_second",
        "Seconds holding a database slot per second over the last interval.",
    ),
    (
        "tenantry_tenant_latency_p99_seconds",
        "Request latency, 99th percentile, over the last interval.",
    ),
    (
        "tenantry_tenant_db_wait_p99_seconds",
        "Wait for the fair database share, 99th percentile, over the last interval.",
    ),
    (
        "tenantry_tenant_load_score",
        "Decayed load score (requests plus database milliseconds) that ranks tenants.",
    ),
];

#[derive(Default, Clone)]
struct Row {
    requests: u64,
    errors: u64,
    throttled: u64,
    shed: u64,
    db_time_us: u64,
    latency: Hist,
    db_wait: Hist,
    score: f64,
}

impl Row {
    fn add(&mut self, i: &Interval) {
        self.requests += i.requests;
        self.errors += i.errors;
        self.throttled += i.throttled;
        self.shed += i.shed;
        self.db_time_us += i.db_time_us;
        self.latency.add(&i.latency);
        self.db_wait.add(&i.db_wait);
    }
}

impl TopK {
    pub fn new(k: usize) -> Self {
        Self {
            k,
            scores: HashMap::new(),
            rendered: String::new(),
        }
    }

    pub fn rendered(&self) -> &str {
        &self.rendered
    }

    /// Decays every score, adds the interval's load, and renders.
    pub fn update(&mut self, intervals: &[Interval], interval: Duration) {
        let decay = 0.5f64.powf(interval.as_secs_f64() / HALF_LIFE.as_secs_f64());
        for s in self.scores.values_mut() {
            s.score *= decay;
        }
        for i in intervals {
            let load = i.requests as f64 + i.db_time_us as f64 / 1_000.0;
            if let Some(s) = self.scores.get_mut(&i.tenant_id) {
                s.score += load;
                if s.slug != i.slug {
                    s.slug.clone_from(&i.slug);
                }
            } else if self.scores.len() < MAX_TENANTS {
                self.scores.insert(
                    i.tenant_id,
                    Scored {
                        score: load,
                        slug: i.slug.clone(),
                    },
                );
            }
        }
        self.scores.retain(|_, s| s.score >= 0.01);
        tenantry_cache::shrink_if_sparse(&mut self.scores, 256);
        let mut ranked: Vec<(&Uuid, &Scored)> = self.scores.iter().collect();
        ranked.sort_by(|a, b| b.1.score.total_cmp(&a.1.score));
        let top: HashMap<Uuid, &str> = ranked
            .iter()
            .take(self.k)
            .map(|(id, s)| (**id, s.slug.as_str()))
            .collect();
        let mut rows: Vec<(String, Row)> = Vec::new();
        let mut index: HashMap<Uuid, usize> = HashMap::new();
        let mut other = Row::default();
        for i in intervals {
            if let Some(slug) = top.get(&i.tenant_id) {
                let at = *index.entry(i.tenant_id).or_insert_with(|| {
                    rows.push(((*slug).to_owned(), Row::default()));
                    rows.len() - 1
                });
                rows[at].1.add(i);
            } else {
                other.add(i);
            }
        }
        // Top tenants quiet in this interval still show (at 0) with their score.
        for (id, slug) in &top {
            let score = self.scores.get(id).map_or(0.0, |s| s.score);
            match index.get(id) {
                Some(at) => rows[*at].1.score = score,
                None => rows.push((
                    (*slug).to_owned(),
                    Row {
                        score,
                        ..Row::default()
                    },
                )),
            }
        }
        other.score = self
            .scores
            .iter()
            .filter(|(id, _)| !top.contains_key(id))
            .map(|(_, s)| s.score)
            .sum();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        rows.push((OTHER.to_owned(), other));
        self.rendered = render(&rows, interval.as_secs_f64().max(0.001));
    }
}

fn render(rows: &[(String, Row)], secs: f64) -> String {
    let mut out = String::new();
    for (name, help) in FAMILIES {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (slug, r) in rows {
            let value = match name {
                "tenantry_tenant_requests_per_second" => r.requests as f64 / secs,
                "tenantry_tenant_errors_per_second" => r.errors as f64 / secs,
                "tenantry_tenant_throttled_per_second" => r.throttled as f64 / secs,
                "tenantry_tenant_shed_per_second" => r.shed as f64 / secs,
                "tenantry_tenant_db_time_seconds_per_second" => r.db_time_us as f64 / 1e6 / secs,
                "tenantry_tenant_latency_p99_seconds" => r.latency.quantile_ms(0.99) / 1_000.0,
                "tenantry_tenant_db_wait_p99_seconds" => r.db_wait.quantile_ms(0.99) / 1_000.0,
                _ => r.score,
            };
            // Slugs are [a-z0-9-]: nothing to escape in a label value.
            let _ = writeln!(out, "{name}{{tenant=\"{slug}\"}} {value}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::meter::{Meters, Outcome};

    #[test]
    fn the_busiest_tenants_get_series_and_the_rest_are_summed_as_other() {
        let meters = Meters::default();
        let tenants: Vec<(Uuid, String)> =
            (0..50).map(|n| (Uuid::now_v7(), format!("t{n}"))).collect();
        for (n, (id, slug)) in tenants.iter().enumerate() {
            for _ in 0..=n {
                meters.request(
                    (*id, slug, "free"),
                    Duration::from_millis(1),
                    Outcome::Ok,
                    || (0, 0),
                );
            }
        }
        let mut top = TopK::new(3);
        top.update(&meters.take(|_| (0, 0)), Duration::from_secs(60));
        let text = top.rendered();
        for slug in ["t49", "t48", "t47", "_other"] {
            assert!(
                text.contains(&format!(
                    "tenantry_tenant_requests_per_second{{tenant=\"{slug}\"}}"
                )),
                "{slug}"
            );
        }
        assert!(!text.contains("tenant=\"t46\""));
        // The sum of everyone else: 1 + 2 + ... + 47 requests over 60 s.
        let other: f64 = (1..=47).sum::<u32>().into();
        assert!(text.contains(&format!(
            "tenantry_tenant_requests_per_second{{tenant=\"_other\"}} {}",
            other / 60.0
        )));
    }
}
