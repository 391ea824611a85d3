//! The results of a bench run: a versioned JSON document, and what is made
//! from it — the human table ([`text`]), the self-contained HTML report
//! ([`html`]) and the comparison with a previous run ([`baseline`]).
//!
//! Everything a report shows is in the JSON, so a recorded run can be
//! re-rendered or compared later without rerunning it. The schema is
//! versioned by [`SCHEMA`]: fields may be added within a version, never
//! renamed or removed; readers ignore fields they do not know.
//!
//! Latencies are milliseconds (floating point, microsecond resolution) of
//! successful requests (status below 400); failed ones are counted in
//! `errors_by_status` instead, so a fast 429 never improves a percentile.
//! `throughput_rps` counts successful requests per measured second.

pub mod analysis;
pub mod baseline;
pub mod html;
pub mod text;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The schema identifier written into every report.
pub const SCHEMA: &str = "tenantry-bench/v1";

/// One `tenantry bench` run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Always [`SCHEMA`] for this version.
    pub schema: String,
    /// The version of the tool that wrote it.
    pub tool_version: String,
    pub started_at: DateTime<Utc>,
    /// Free text given with `--label` (e.g. a git revision).
    #[serde(default)]
    pub label: Option<String>,
    pub machine: Machine,
    pub target: TargetInfo,
    pub settings: RunSettings,
    pub scenarios: Vec<ScenarioResult>,
    /// Present when the run was compared with `--baseline`.
    #[serde(default)]
    pub baseline: Option<baseline::BaselineComparison>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub cores: usize,
    pub os: String,
    pub arch: String,
}

impl Machine {
    pub fn this() -> Self {
        Self {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            os: std::env::consts::OS.to_owned(),
            arch: std::env::consts::ARCH.to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetInfo {
    /// `self-hosted` (bench started the server) or `url`.
    pub mode: String,
    pub url: String,
    /// `kept` (the tenants' tier limits were in force) or `lifted`.
    pub limits: String,
    /// What was seeded for a self-hosted run.
    #[serde(default)]
    pub seeded: Option<SeededInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeededInfo {
    pub tenants: usize,
    pub posts: u64,
    pub rows: u64,
    pub seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSettings {
    pub duration_s: f64,
    pub warmup_s: f64,
    pub connections: usize,
    /// Open-loop request rate; `None` for closed loop.
    #[serde(default)]
    pub rate: Option<f64>,
    pub tenants: usize,
    pub seed: u64,
    /// noisy-neighbor: each quiet tenant's request rate, and the solo phase.
    pub quiet_rate: f64,
    pub solo_s: f64,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

/// How load was offered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadInfo {
    /// `closed` (each connection sends back to back), `open` (a fixed
    /// schedule; latency counted from the scheduled send time) or `mixed`
    /// (noisy-neighbor: quiet tenants open, the noisy one closed).
    pub mode: String,
    pub connections: usize,
    #[serde(default)]
    pub rate: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioResult {
    pub name: String,
    pub load: LoadInfo,
    /// Seconds of measurement (after warm-up).
    pub measured_s: f64,
    /// Completed requests, successful or not.
    pub requests: u64,
    pub ok: u64,
    pub errors: u64,
    pub throughput_rps: f64,
    pub error_rate: f64,
    pub latency_ms: Percentiles,
    /// Failed requests by status code, or `io` / `timeout` for requests
    /// that got no answer.
    pub errors_by_status: BTreeMap<String, u64>,
    pub operations: Vec<OperationResult>,
    pub tenants: Vec<TenantResult>,
    /// noisy-neighbor only.
    #[serde(default)]
    pub isolation: Option<Isolation>,
    /// Open-loop sends that were still waiting when the run had to stop
    /// (the generator or server could not keep the schedule).
    #[serde(default)]
    pub dropped: u64,
    #[serde(default)]
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperationResult {
    /// e.g. `list-posts`, `get-post`, `create-post`.
    pub name: String,
    pub requests: u64,
    pub ok: u64,
    pub errors: u64,
    pub throughput_rps: f64,
    pub latency_ms: Percentiles,
    pub errors_by_status: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantResult {
    pub slug: String,
    /// `tenant`, or in noisy-neighbor `quiet` / `noisy`.
    pub role: String,
    pub requests: u64,
    pub ok: u64,
    pub errors: u64,
    /// Successful requests per measured second (the noisy tenant's: per
    /// second of the flood, the only time it sends).
    pub throughput_rps: f64,
    pub latency_ms: Percentiles,
    pub errors_by_status: BTreeMap<String, u64>,
    pub series: Series,
}

/// Per-second values of one tenant, column by column; `t` is the second
/// since measurement started. Seconds without a request are left out.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Series {
    pub t: Vec<u32>,
    pub requests: Vec<u32>,
    pub errors: Vec<u32>,
    pub mean_ms: Vec<f64>,
    pub p99_ms: Vec<f64>,
}

/// noisy-neighbor: how much the flood reached the quiet tenants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Isolation {
    pub noisy_tenant: String,
    pub noisy_connections: usize,
    pub quiet_rate: f64,
    /// Seconds measured before the flood, and during it.
    pub solo_s: f64,
    pub loaded_s: f64,
    pub quiet: Vec<QuietTenant>,
    /// Largest and median loaded ÷ solo p99 over the quiet tenants.
    #[serde(default)]
    pub worst_ratio: Option<f64>,
    #[serde(default)]
    pub median_ratio: Option<f64>,
    /// Pearson correlations above this are flagged as coupling.
    pub correlation_threshold: f64,
    /// Per-second mean latency of the noisy tenant against each quiet
    /// tenant's, during the flood.
    pub correlations: Vec<Correlation>,
    /// The same between quiet tenants (all pairs, summarised).
    pub quiet_pairs: PairSummary,
    pub flagged: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuietTenant {
    pub slug: String,
    pub solo_requests: u64,
    pub loaded_requests: u64,
    pub solo_p99_ms: f64,
    pub loaded_p99_ms: f64,
    /// loaded ÷ solo p99 (1.0: untouched by the flood).
    #[serde(default)]
    pub ratio: Option<f64>,
    /// Correlation of this tenant's per-second mean latency with the noisy
    /// tenant's per-second request count over the whole run (solo seconds
    /// count as zero load): does its latency follow the flood?
    #[serde(default)]
    pub load_coupling: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Correlation {
    pub a: String,
    pub b: String,
    #[serde(default)]
    pub r: Option<f64>,
    /// Seconds in which both had requests.
    pub points: usize,
    pub flagged: bool,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PairSummary {
    pub pairs: usize,
    #[serde(default)]
    pub mean_r: Option<f64>,
    #[serde(default)]
    pub max_r: Option<f64>,
    pub flagged: usize,
}

impl Report {
    /// Reads a report, checking its schema.
    pub fn from_json(text: &str) -> anyhow::Result<Self> {
        let report: Report = serde_json::from_str(text)?;
        anyhow::ensure!(
            report.schema == SCHEMA,
            "unsupported report schema `{}` (this tool reads `{SCHEMA}`)",
            report.schema
        );
        Ok(report)
    }

    pub fn scenario(&self, name: &str) -> Option<&ScenarioResult> {
        self.scenarios.iter().find(|s| s.name == name)
    }
}
