//! `tenantry bench`: a load generator for multi-tenant workloads.
//!
//! A run finds its target ([`target`]: a server on `--url`, or one started
//! here on a fresh, seeded database), discovers tenants and members over the
//! API ([`workload`]), then plays each requested [`scenario`] with the
//! [`driver`], recording into [`stats`]. The results become a
//! [`crate::report::Report`]: a table on stdout, `--out` JSON, `--html`, and
//! a `--baseline` comparison whose regressions make the command fail.

pub mod client;
pub mod driver;
pub mod scenario;
pub mod stats;
pub mod target;
pub mod workload;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::Utc;

use crate::report::{
    self, Correlation, Isolation, LoadInfo, PairSummary, QuietTenant, Report, RunSettings,
    ScenarioResult, SeededInfo, TargetInfo, TenantResult, analysis, baseline,
};
use crate::seed::SeedConfig;
use client::Endpoint;
use driver::{DriveOptions, Driven};
use scenario::{PlanContext, Scenario, ScenarioPlan, TenantRole};
use target::{SelfHostOptions, SelfHosted};
use workload::{Discovery, Workload};

/// Pearson correlations above this flag two tenants' latency as coupled.
pub const CORRELATION_THRESHOLD: f64 = 0.7;
/// Fewer common seconds than this give no correlation: r of three points
/// is noise.
pub const MIN_CORRELATION_POINTS: usize = 5;

fn correlate(xs: &[f64], ys: &[f64]) -> Option<f64> {
    if xs.len() < MIN_CORRELATION_POINTS {
        return None;
    }
    analysis::pearson(xs, ys)
}

/// The tenant scenario lifts the limits of this many tenants at most.
const TENANT_LIFTED: usize = 1_000;

/// Whether the benchmarked tenants' rate limits stay in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Limits {
    /// The tenants' tier limits apply (429s are part of the result).
    Keep,
    /// Raise the tenants' rate limits out of the way (admin PATCH of their
    /// limit overrides) to measure capacity rather than policy.
    Lift,
}

/// `tenantry bench` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Scenarios to run, in order (comma-separated): read, write, mixed,
    /// noisy-neighbor, feed, search, deep-page, healthz, ingest, tenant.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "read")]
    pub scenario: Vec<Scenario>,
    /// A running server (loopback only), e.g. http://127.0.0.1:8080. Unset:
    /// start a server here on a fresh embedded cluster (or DATABASE_URL) and
    /// seed it.
    #[arg(long)]
    pub url: Option<String>,
    /// The target's platform admin token (default: read from --data-dir).
    #[arg(long, env = "TENANTRY_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// The target's JWT secret, to mint member tokens (default: read from
    /// --data-dir).
    #[arg(long, env = "TENANTRY_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// The target server's data dir, where its generated secrets are kept.
    #[arg(long, env = "TENANTRY_DATA_DIR", default_value = ".tenantry")]
    pub data_dir: PathBuf,
    /// Self-hosted runs: the database to use instead of a fresh embedded
    /// cluster (seeded only if it has no tenants).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// How long each scenario is measured (noisy-neighbor: the flood).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Load before measuring starts (not recorded).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Connections (closed loop: the concurrency; noisy-neighbor: the
    /// noisy tenant's).
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Open loop: requests per second on a fixed schedule (latency counted
    /// from the scheduled time). Unset: closed loop.
    #[arg(long)]
    pub rate: Option<f64>,
    /// How many tenants to spread the load over.
    #[arg(long, default_value_t = 20)]
    pub tenants: usize,
    /// noisy-neighbor: requests per second of each quiet tenant.
    #[arg(long, default_value_t = 20.0)]
    pub quiet_rate: f64,
    /// noisy-neighbor: how long the quiet tenants are measured alone.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub solo: Duration,
    /// noisy-neighbor: the flooding tenant (default: most members).
    #[arg(long)]
    pub noisy_tenant: Option<String>,
    /// Benchmark these tenants (comma-separated slugs) first, e.g. the
    /// largest for deep-page or search.
    #[arg(long, value_delimiter = ',')]
    pub tenant_slugs: Vec<String>,
    /// deep-page: how deep the deep page is, in rows.
    #[arg(long, default_value_t = 10_000)]
    pub deep_rows: usize,
    /// Keep or lift the tenants' rate limits (default: lift when self-hosted,
    /// keep against --url).
    #[arg(long, value_enum)]
    pub limits: Option<Limits>,
    /// tenant: how many of the tenants are the hot ones the other spreads
    /// are compared with.
    #[arg(long, default_value_t = 10)]
    pub hot_tenants: usize,
    /// tenant: how requests spread over all the `--tenants` (comma-separated:
    /// uniform, zipf).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "uniform,zipf"
    )]
    pub tenant_choice: Vec<scenario::tenant::TenantChoice>,
    /// tenant: after the measured window, keep only the hot tenants busy for
    /// this long, then read the server's memory again: what the tenants
    /// that went idle still cost it. Use 420s or more: an idle tenant's
    /// entries go with the metadata TTL (5 minutes) and the upkeep's
    /// sweep a minute later, and a reading during that fall means little
    /// (BENCHMARKS.md, "Session 12"). 0: skip.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub idle_wait: Duration,
    /// Open loop at rising rates (from `--rate`, default 1,000/s: doubling,
    /// then bisecting) until the highest rate whose p99 stays under
    /// `--p99-target` with errors under 0.1 % is found; each step runs
    /// `--duration`, 10 s apart after a failing one. The result is that
    /// step's, with every step in its notes.
    #[arg(long)]
    pub find_rate: bool,
    /// --find-rate: the p99 a rate must keep.
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    pub p99_target: Duration,
    /// Seed of the request choices (which tenant, user, post).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Self-hosted: tenants to seed.
    #[arg(long, default_value_t = 200)]
    pub seed_tenants: usize,
    /// Self-hosted: posts to seed.
    #[arg(long, default_value_t = 20_000)]
    pub seed_posts: u64,
    /// Self-hosted: the server's database pool size.
    #[arg(long)]
    pub db_pool: Option<usize>,
    /// A request with no answer after this long counts as a timeout.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Write the results as JSON (schema tenantry-bench/v1).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write a self-contained HTML report.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Compare with a previous --out file; regressions fail the command.
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// Relative change of p99 or throughput that counts as a regression.
    #[arg(long, default_value = "10%", value_parser = report::baseline::parse_threshold)]
    pub threshold: f64,
    /// A label stored in the results (e.g. a git revision).
    #[arg(long)]
    pub label: Option<String>,
    /// No live progress line.
    #[arg(long)]
    pub no_progress: bool,
}

/// Parses `10s`, `500ms`, `2m` or a number of seconds.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let (number, scale) = if let Some(n) = raw.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = raw.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = raw.strip_suffix('m') {
        (n, 60.0)
    } else {
        (raw, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("'{raw}' is not a duration like 10s, 500ms or 2m"))?;
    if !(value >= 0.0 && value.is_finite()) {
        return Err(format!("'{raw}' is not a non-negative duration"));
    }
    Ok(Duration::from_secs_f64(value * scale))
}

/// `tenantry bench`: runs, prints, writes, compares. Fails when the
/// baseline comparison finds regressions (after writing everything).
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let mut report = run_report(&args).await?;
    if let Some(path) = &args.baseline {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("Failed to read the baseline {}", path.display()))?;
        let before = Report::from_json(&text)
            .with_context(|| format!("Failed to parse the baseline {}", path.display()))?;
        report.baseline = Some(baseline::compare(
            &report,
            &before,
            &path.display().to_string(),
            args.threshold,
        ));
    }
    print!("{}", report::text::render(&report));
    if let Some(path) = &args.out {
        write(path, &serde_json::to_string_pretty(&report)?)?;
        println!("results written to {}", path.display());
    }
    if let Some(path) = &args.html {
        write(path, &report::html::render(&report))?;
        println!("HTML report written to {}", path.display());
    }
    if let Some(cmp) = &report.baseline
        && cmp.regressions > 0
    {
        anyhow::bail!(
            "{} regression(s) beyond {:.0}% against {}",
            cmp.regressions,
            cmp.threshold * 100.0,
            cmp.source
        );
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("Failed to write {}", path.display()))
}

/// Runs every scenario and returns the report (without baseline).
pub async fn run_report(args: &BenchArgs) -> anyhow::Result<Report> {
    anyhow::ensure!(!args.scenario.is_empty(), "name at least one --scenario");
    anyhow::ensure!(args.connections >= 1, "--connections must be at least 1");
    anyhow::ensure!(args.tenants >= 1, "--tenants must be at least 1");
    if let Some(rate) = args.rate {
        anyhow::ensure!(rate > 0.0 && rate.is_finite(), "--rate must be positive");
    }
    let started_at = Utc::now();
    let progress = !args.no_progress;
    match &args.url {
        Some(url) => {
            let endpoint = target::endpoint_from_url(url).await?;
            let admin_token = secret(&args.admin_token, &args.data_dir, "admin_token")?;
            let jwt_secret = secret(&args.jwt_secret, &args.data_dir, "jwt_secret")?;
            let limits = args.limits.unwrap_or(Limits::Keep);
            let target = TargetInfo {
                mode: "url".to_owned(),
                url: format!("http://{}", endpoint.addr),
                limits: limits_name(limits),
                seeded: None,
            };
            let scenarios =
                run_scenarios(args, &endpoint, &admin_token, &jwt_secret, limits).await?;
            Ok(assemble(args, started_at, target, scenarios))
        }
        None => {
            let server = SelfHosted::start(&SelfHostOptions {
                database_url: args.database_url.clone(),
                seed: self_host_seed(args)?,
                progress,
                db_pool: args.db_pool,
            })
            .await?;
            let limits = args.limits.unwrap_or(Limits::Lift);
            let target = TargetInfo {
                mode: "self-hosted".to_owned(),
                url: server.url.clone(),
                limits: limits_name(limits),
                seeded: server.seeded.as_ref().map(|s| SeededInfo {
                    tenants: args.seed_tenants,
                    posts: args.seed_posts,
                    rows: s.total_rows,
                    seconds: s.seconds,
                }),
            };
            let scenarios = run_scenarios(
                args,
                &server.endpoint,
                &server.admin_token,
                &server.jwt_secret,
                limits,
            )
            .await;
            let stopped = server.stop().await;
            let scenarios = scenarios?;
            stopped?;
            Ok(assemble(args, started_at, target, scenarios))
        }
    }
}

fn limits_name(limits: Limits) -> String {
    match limits {
        Limits::Keep => "kept",
        Limits::Lift => "lifted",
    }
    .to_owned()
}

/// The data set a self-hosted run seeds: small, fixed anchor-free proportions.
fn self_host_seed(args: &BenchArgs) -> anyhow::Result<SeedConfig> {
    // The tenant scenario alone: one member per tenant (its owner), so
    // 100,000 tenants seed in seconds and nothing but tenants grows.
    let tenant_only = args.scenario.iter().all(|s| *s == Scenario::Tenant);
    let config = SeedConfig {
        tenants: args.seed_tenants,
        users: if tenant_only {
            args.seed_tenants
        } else {
            args.seed_tenants.saturating_mul(10)
        },
        memberships_per_user: if tenant_only { 1.0 } else { 3.0 },
        posts: args.seed_posts,
        zipf_exponent: 1.0,
        likes_per_post: 2.0,
        comments_per_post: 0.5,
        days: 90,
        seed: 42,
        anchor_ms: Utc::now().timestamp_millis(),
        hub_communities: 0,
    };
    config.validate()?;
    Ok(config)
}

/// A secret from its flag, or from the server's data dir (never generated:
/// a new secret would not match the running server's).
fn secret(flag: &Option<String>, data_dir: &Path, name: &str) -> anyhow::Result<String> {
    if let Some(s) = flag {
        return Ok(s.clone());
    }
    let path = data_dir.join(name);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "no --{} given and {} is not readable: pass the target server's secret, or its \
             --data-dir",
            name.replace('_', "-"),
            path.display()
        )
    })?;
    let text = text.trim().to_owned();
    anyhow::ensure!(!text.is_empty(), "{} is empty", path.display());
    Ok(text)
}

async fn run_scenarios(
    args: &BenchArgs,
    endpoint: &Endpoint,
    admin_token: &str,
    jwt_secret: &str,
    limits: Limits,
) -> anyhow::Result<Vec<ScenarioResult>> {
    let needs_tenants = args.scenario.iter().any(|s| s.needs_tenants());
    let workload = if needs_tenants {
        let total = args.warmup + args.solo + args.duration;
        let workload = workload::discover(&Discovery {
            endpoint: endpoint.clone(),
            admin_token,
            jwt_secret,
            tenants: args.tenants,
            include: args
                .noisy_tenant
                .iter()
                .chain(&args.tenant_slugs)
                .cloned()
                .collect(),
            lift_limits: limits == Limits::Lift,
            // Alone, the tenant scenario needs owners only, and limits lifted
            // only where its spreads send more than a tier allows (the Zipf
            // spread's head; the 1,000th tenant gets ~1/12,000 of the load).
            light: args.scenario.iter().all(|s| *s == Scenario::Tenant),
            lift_first: if args.scenario.iter().all(|s| *s == Scenario::Tenant) {
                args.hot_tenants.max(TENANT_LIFTED)
            } else {
                usize::MAX
            },
            deep_rows: if args.scenario.contains(&Scenario::DeepPage) {
                args.deep_rows
            } else {
                0
            },
            token_ttl: total * u32::try_from(args.scenario.len()).unwrap_or(1)
                + Duration::from_secs(3_600),
        })
        .await?;
        anyhow::ensure!(
            !workload.tenants.is_empty(),
            "the target has no active tenants: seed its database first (`tenantry seed`)"
        );
        workload
    } else {
        Workload::default()
    };
    let workload = Arc::new(workload);
    let results = drive_all(args, endpoint, &workload, limits).await;
    // Leave the target's tenants as they were, whatever happened.
    let restored = workload::restore_limits(endpoint, admin_token, &workload).await;
    let results = results?;
    restored.context("Failed to restore the tenants' rate limits after the run")?;
    Ok(results)
}

async fn drive_all(
    args: &BenchArgs,
    endpoint: &Endpoint,
    workload: &Arc<Workload>,
    limits: Limits,
) -> anyhow::Result<Vec<ScenarioResult>> {
    let noisy = if args.scenario.contains(&Scenario::NoisyNeighbor) {
        Some(workload.pick_noisy(args.noisy_tenant.as_deref())?)
    } else {
        None
    };
    let mut results = Vec::new();
    for scenario in &args.scenario {
        if args.find_rate && *scenario != Scenario::Tenant {
            results.push(find_rate(args, *scenario, endpoint, workload, noisy).await?);
            continue;
        }
        let ctx = PlanContext {
            workload,
            duration: args.duration,
            warmup: args.warmup,
            connections: args.connections,
            rate: args.rate,
            quiet_rate: args.quiet_rate,
            solo: args.solo,
            noisy,
            hot_tenants: args.hot_tenants,
            tenant_choices: &args.tenant_choice,
        };
        let plan = scenario.plan(&ctx)?;
        // Per-tenant results of 100,000 tenants would be the bench's own
        // memory and the report's bulk: the tenant scenario reports spreads.
        let per_tenant = *scenario != Scenario::Tenant;
        let metrics_before = if *scenario == Scenario::Tenant {
            // Steady state: the hot tenants warm alone, the server's memory
            // is read, every tenant is visited once (memo and caches warm),
            // the memory is read again, then the counters.
            let warm = scenario::tenant::hot_only(&plan, args.warmup.max(Duration::from_secs(1)));
            driver::drive(
                &warm,
                workload,
                endpoint,
                &drive_options(args, "tenant (hot)", args.seed.wrapping_add(1), false),
            )
            .await?;
            let hot = scrape_metrics(endpoint, args.timeout).await?;
            scenario::tenant::visit_all(
                workload,
                endpoint,
                args.connections,
                args.timeout,
                !args.no_progress,
            )
            .await?;
            let all = scrape_metrics(endpoint, args.timeout).await?;
            Some((hot, all))
        } else {
            None
        };
        let driven = driver::drive(
            &plan,
            workload,
            endpoint,
            &drive_options(args, scenario.name(), args.seed, per_tenant),
        )
        .await?;
        let mut result = summarize(*scenario, &plan, workload, &driven);
        if let Some((hot, before)) = metrics_before {
            let after = scrape_metrics(endpoint, args.timeout).await?;
            let hot_tenants = args.hot_tenants.clamp(1, workload.tenants.len());
            result.notes.extend(scenario::tenant::spread_notes(
                &plan,
                &result.operations,
                (&hot, &before, &after),
                hot_tenants,
                workload.tenants.len(),
            ));
            if !args.idle_wait.is_zero() {
                // The others go idle while the hot tenants keep the server
                // (its sweeps, its threads' memos) busy.
                let busy = scenario::tenant::hot_only(&plan, args.idle_wait);
                driver::drive(
                    &busy,
                    workload,
                    endpoint,
                    &drive_options(args, "tenant (idle wait)", args.seed.wrapping_add(2), false),
                )
                .await?;
                let idle = scrape_metrics(endpoint, args.timeout).await?;
                result.notes.extend(scenario::tenant::idle_note(
                    (&hot, &idle),
                    args.idle_wait,
                    hot_tenants,
                    workload.tenants.len(),
                ));
            }
        }
        if limits == Limits::Lift && scenario.needs_tenants() {
            result
                .notes
                .push("tenants' rate limits lifted for the run (--limits lift)".to_owned());
        }
        results.push(result);
    }
    Ok(results)
}

/// The most errors a rate may have and still pass `--find-rate`.
pub const FIND_RATE_MAX_ERRORS: f64 = 0.001;
/// `--find-rate` waits this long after a failing step before the next.
/// Seen on 2 cores: 3,000/s mixed failed with a 4.7 s p99 right after
/// 4,000/s, and passed with 25 ms run on its own.
const FIND_RATE_SETTLE: Duration = Duration::from_secs(10);
/// `--find-rate` doubles up to this rate at most.
const FIND_RATE_CEILING: f64 = 1_000_000.0;
/// Bisections after the first failing rate.
const FIND_RATE_BISECTIONS: u32 = 4;

/// Whether a step of `--find-rate` kept its promise: p99 under the target,
/// errors under 0.1 %, and the schedule kept (requests never sent count as
/// errors: the generator or the server could not keep up).
pub fn rate_passes(result: &ScenarioResult, p99_target_ms: f64) -> bool {
    let sent = result.requests + result.dropped;
    let bad = (result.requests - result.ok) + result.dropped;
    sent > 0
        && result.latency_ms.p99 < p99_target_ms
        && (bad as f64) < FIND_RATE_MAX_ERRORS * sent as f64
}

/// The next rate to try, from the highest that passed and the lowest that
/// failed so far; `None` when done.
pub fn next_rate(
    passed: Option<f64>,
    failed: Option<f64>,
    steps_after_failure: u32,
) -> Option<f64> {
    match (passed, failed) {
        (Some(p), None) => (p * 2.0 <= FIND_RATE_CEILING).then_some(p * 2.0),
        (None, Some(f)) => {
            (steps_after_failure < FIND_RATE_BISECTIONS + 2 && f / 2.0 >= 1.0).then_some(f / 2.0)
        }
        (Some(p), Some(f)) => (steps_after_failure < FIND_RATE_BISECTIONS && f - p > 1.0)
            .then(|| ((p + f) / 2.0).round()),
        (None, None) => None,
    }
}

/// `--find-rate`: the highest open-loop rate of `scenario` that passes.
async fn find_rate(
    args: &BenchArgs,
    scenario: Scenario,
    endpoint: &Endpoint,
    workload: &Arc<Workload>,
    noisy: Option<usize>,
) -> anyhow::Result<ScenarioResult> {
    let target_ms = args.p99_target.as_secs_f64() * 1_000.0;
    let mut rate = args.rate.unwrap_or(1_000.0);
    let (mut passed, mut failed): (Option<(f64, ScenarioResult)>, Option<f64>) = (None, None);
    let mut first: Option<ScenarioResult> = None;
    let mut steps = Vec::new();
    let mut after_failure = 0;
    loop {
        let ctx = PlanContext {
            workload,
            duration: args.duration,
            warmup: args.warmup,
            connections: args.connections,
            rate: Some(rate),
            quiet_rate: args.quiet_rate,
            solo: args.solo,
            noisy,
            hot_tenants: args.hot_tenants,
            tenant_choices: &args.tenant_choice,
        };
        let plan = scenario.plan(&ctx)?;
        let driven = driver::drive(
            &plan,
            workload,
            endpoint,
            &drive_options(args, scenario.name(), args.seed, false),
        )
        .await?;
        let result = summarize(scenario, &plan, workload, &driven);
        let ok = rate_passes(&result, target_ms);
        steps.push(format!(
            "{rate:.0}/s: {:.0} answered/s, p99 {:.1} ms, errors {:.3} %, never sent {}: {}",
            result.throughput_rps,
            result.latency_ms.p99,
            100.0 * result.error_rate,
            result.dropped,
            if ok { "pass" } else { "fail" }
        ));
        if failed.is_some() {
            after_failure += 1;
        }
        if ok {
            if passed.as_ref().is_none_or(|(p, _)| rate > *p) {
                passed = Some((rate, result));
            }
        } else {
            failed = Some(failed.map_or(rate, |f: f64| f.min(rate)));
            if first.is_none() {
                first = Some(result);
            }
        }
        match next_rate(passed.as_ref().map(|(p, _)| *p), failed, after_failure) {
            Some(next) => rate = next,
            None => break,
        }
        if !ok {
            // An overloaded step leaves work behind (queued requests, the
            // writes' background jobs): the next, lower step would measure
            // that backlog rather than its own rate.
            tokio::time::sleep(FIND_RATE_SETTLE).await;
        }
    }
    let (mut result, headline) = match passed {
        Some((rate, result)) => (
            result,
            format!(
                "highest rate passing (p99 < {target_ms:.0} ms, errors < {:.1} %): {rate:.0}/s",
                100.0 * FIND_RATE_MAX_ERRORS
            ),
        ),
        None => (
            first.context("--find-rate ran no step")?,
            format!(
                "no rate passed (p99 < {target_ms:.0} ms, errors < 0.1 %); this is the lowest tried"
            ),
        ),
    };
    result.notes.insert(0, headline);
    result
        .notes
        .extend(steps.into_iter().map(|s| format!("find-rate step {s}")));
    Ok(result)
}

/// How a step of `args`'s run is driven: its name in the progress line, the
/// seed of its request choices, and whether it records per tenant.
fn drive_options(
    args: &BenchArgs,
    name: &'static str,
    seed: u64,
    per_tenant: bool,
) -> DriveOptions {
    DriveOptions {
        name,
        seed,
        timeout: args.timeout,
        progress: !args.no_progress,
        per_tenant,
    }
}

/// The server's cache and statement counters, from `/metrics`.
async fn scrape_metrics(
    endpoint: &Endpoint,
    timeout: Duration,
) -> anyhow::Result<scenario::tenant::CacheCounters> {
    let mut conn = client::Connection::new(endpoint.clone(), timeout);
    let answer = conn
        .send(
            hyper::Method::GET,
            "/metrics",
            &client::Headers::default(),
            None,
        )
        .await
        .map_err(|e| anyhow::anyhow!("Failed to read the server's /metrics: {e}"))?;
    let text = String::from_utf8_lossy(&answer.body);
    Ok(scenario::tenant::CacheCounters::parse(&text))
}

fn assemble(
    args: &BenchArgs,
    started_at: chrono::DateTime<Utc>,
    target: TargetInfo,
    scenarios: Vec<ScenarioResult>,
) -> Report {
    Report {
        schema: report::SCHEMA.to_owned(),
        tool_version: env!("CARGO_PKG_VERSION").to_owned(),
        started_at,
        label: args.label.clone(),
        machine: report::Machine::this(),
        target,
        settings: RunSettings {
            duration_s: args.duration.as_secs_f64(),
            warmup_s: args.warmup.as_secs_f64(),
            connections: args.connections,
            rate: args.rate,
            tenants: args.tenants,
            seed: args.seed,
            quiet_rate: args.quiet_rate,
            solo_s: args.solo.as_secs_f64(),
        },
        scenarios,
        baseline: None,
    }
}

/// Turns what was recorded into a scenario's results, with the isolation
/// analysis for noisy-neighbor.
pub fn summarize(
    scenario: Scenario,
    plan: &ScenarioPlan,
    workload: &Workload,
    driven: &Driven,
) -> ScenarioResult {
    let rec = &driven.recorder;
    let secs = driven.measured_s;
    let (requests, ok, errors_by_status, latency_ms) = rec.total();
    let mut tenants: Vec<TenantResult> = Vec::new();
    for (i, t) in workload.tenants.iter().enumerate() {
        let (requests, ok, errors_by_status, latency_ms) = rec.tenant(i);
        if requests == 0 {
            continue;
        }
        tenants.push(TenantResult {
            slug: t.slug.clone(),
            role: plan
                .roles
                .get(i)
                .copied()
                .unwrap_or(TenantRole::Tenant)
                .as_str()
                .to_owned(),
            requests,
            ok,
            errors: requests - ok,
            // Over the tenant's own window: a flood that ran for half the
            // scenario is not averaged over all of it.
            throughput_rps: ok as f64 / plan.active_secs(i).max(1e-9),
            latency_ms,
            errors_by_status,
            series: rec.series(i),
        });
    }
    let isolation = plan
        .noisy
        .map(|noisy| isolation(plan, workload, driven, noisy));
    let (mode, connections, rate) = plan.load_mode();
    let dropped = rec.dropped.load(std::sync::atomic::Ordering::Relaxed);
    let mut notes = Vec::new();
    if mode != "closed" {
        notes.push(
            "open-loop latency is counted from each request's scheduled time \
             (coordinated-omission corrected)"
                .to_owned(),
        );
    }
    if dropped > 0 {
        notes.push(format!(
            "{dropped} scheduled requests were never sent: the schedule could not be kept"
        ));
    }
    let reconnects = rec.reconnects.load(std::sync::atomic::Ordering::Relaxed);
    if reconnects > 0 {
        notes.push(format!(
            "{reconnects} connections were opened again during the run (the server closed them, or a request failed on them)"
        ));
    }
    ScenarioResult {
        name: scenario.name().to_owned(),
        load: LoadInfo {
            mode: mode.to_owned(),
            connections,
            rate,
        },
        measured_s: secs,
        requests,
        ok,
        errors: requests - ok,
        throughput_rps: ok as f64 / secs.max(1e-9),
        error_rate: if requests > 0 {
            (requests - ok) as f64 / requests as f64
        } else {
            0.0
        },
        latency_ms,
        errors_by_status,
        operations: rec.operations(secs),
        tenants,
        isolation,
        dropped,
        notes,
    }
}

/// Quiet tenants' degradation and the correlation of latency series.
fn isolation(plan: &ScenarioPlan, workload: &Workload, driven: &Driven, noisy: usize) -> Isolation {
    let rec = &driven.recorder;
    let loaded_from = plan.loaded_from.unwrap_or(plan.warmup);
    // Seconds since measurement start at which the flood begins and ends.
    let flood_from = (loaded_from - plan.warmup).as_secs() as u32;
    let flood_to = (plan.end - plan.warmup).as_secs() as u32;
    let noisy_series = rec.series(noisy);
    let quiet_idx: Vec<usize> = (0..workload.tenants.len())
        .filter(|&i| plan.roles.get(i) == Some(&TenantRole::Quiet))
        .collect();
    let mut quiet = Vec::new();
    let mut correlations = Vec::new();
    let mut ratios = Vec::new();
    let series: Vec<_> = quiet_idx.iter().map(|&i| (i, rec.series(i))).collect();
    for (i, s) in &series {
        let slug = workload.tenants[*i].slug.clone();
        let [(solo_n, solo_p99), (loaded_n, loaded_p99)] =
            rec.tenant_phases(*i).unwrap_or([(0, 0.0), (0, 0.0)]);
        let ratio = (solo_n > 0 && loaded_n > 0 && solo_p99 > 0.0).then(|| loaded_p99 / solo_p99);
        if let Some(r) = ratio {
            ratios.push(r);
        }
        let (lat, load) = analysis::latency_against_load(s, &noisy_series);
        quiet.push(QuietTenant {
            slug: slug.clone(),
            solo_requests: solo_n,
            loaded_requests: loaded_n,
            solo_p99_ms: solo_p99,
            loaded_p99_ms: loaded_p99,
            ratio,
            load_coupling: correlate(&lat, &load),
        });
        let (xs, ys) = analysis::aligned_means(&noisy_series, s, flood_from, flood_to);
        let r = correlate(&xs, &ys);
        correlations.push(Correlation {
            a: workload.tenants[noisy].slug.clone(),
            b: slug,
            r,
            points: xs.len(),
            flagged: r.is_some_and(|r| r > CORRELATION_THRESHOLD),
        });
    }
    // Quiet against quiet, bounded so hundreds of tenants stay cheap.
    let mut pair_rs = Vec::new();
    let bounded = &series[..series.len().min(50)];
    for (a, (_, sa)) in bounded.iter().enumerate() {
        for (_, sb) in &bounded[a + 1..] {
            let (xs, ys) = analysis::aligned_means(sa, sb, flood_from, flood_to);
            if let Some(r) = correlate(&xs, &ys) {
                pair_rs.push(r);
            }
        }
    }
    let pairs_flagged = pair_rs
        .iter()
        .filter(|&&r| r > CORRELATION_THRESHOLD)
        .count();
    let quiet_pairs = PairSummary {
        pairs: pair_rs.len(),
        mean_r: (!pair_rs.is_empty()).then(|| pair_rs.iter().sum::<f64>() / pair_rs.len() as f64),
        max_r: pair_rs.iter().copied().reduce(f64::max),
        flagged: pairs_flagged,
    };
    let flagged = correlations.iter().filter(|c| c.flagged).count() + pairs_flagged;
    let worst_ratio = ratios.iter().copied().reduce(f64::max);
    let noisy_connections = plan
        .streams
        .iter()
        .find(|s| s.name == "noisy")
        .map_or(0, |s| s.load.connections());
    let quiet_rate = plan
        .streams
        .iter()
        .find_map(|s| match s.load {
            scenario::Load::Open { rate, .. } if s.name == "quiet" => {
                Some(rate / s.tenants.len().max(1) as f64)
            }
            _ => None,
        })
        .unwrap_or(0.0);
    Isolation {
        noisy_tenant: workload.tenants[noisy].slug.clone(),
        noisy_connections,
        quiet_rate,
        solo_s: (loaded_from - plan.warmup).as_secs_f64(),
        loaded_s: (plan.end - loaded_from).as_secs_f64(),
        quiet,
        worst_ratio,
        median_ratio: analysis::median(&mut ratios),
        correlation_threshold: CORRELATION_THRESHOLD,
        correlations,
        quiet_pairs,
        flagged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_search_doubles_then_bisects_then_stops() {
        assert_eq!(next_rate(Some(1_000.0), None, 0), Some(2_000.0));
        assert_eq!(next_rate(Some(8_000.0), Some(16_000.0), 1), Some(12_000.0));
        assert_eq!(next_rate(Some(12_000.0), Some(16_000.0), 2), Some(14_000.0));
        assert_eq!(
            next_rate(Some(12_000.0), Some(14_000.0), FIND_RATE_BISECTIONS),
            None
        );
        assert_eq!(next_rate(None, Some(1_000.0), 1), Some(500.0));
        assert_eq!(
            next_rate(None, Some(1_000.0), FIND_RATE_BISECTIONS + 2),
            None
        );
        assert_eq!(next_rate(Some(FIND_RATE_CEILING), None, 0), None);
    }

    #[test]
    fn a_rate_passes_under_the_p99_target_with_few_errors_and_its_schedule_kept() {
        let result = |requests: u64, ok: u64, p99: f64, dropped: u64| ScenarioResult {
            name: "mixed".to_owned(),
            load: LoadInfo {
                mode: "open".to_owned(),
                connections: 1,
                rate: Some(1.0),
            },
            measured_s: 1.0,
            requests,
            ok,
            errors: requests - ok,
            throughput_rps: ok as f64,
            error_rate: (requests - ok) as f64 / requests.max(1) as f64,
            latency_ms: report::Percentiles {
                p99,
                ..Default::default()
            },
            errors_by_status: Default::default(),
            operations: Vec::new(),
            tenants: Vec::new(),
            isolation: None,
            dropped,
            notes: Vec::new(),
        };
        assert!(rate_passes(&result(10_000, 9_995, 20.0, 0), 50.0));
        assert!(
            !rate_passes(&result(10_000, 9_985, 20.0, 0), 50.0),
            "0.15 % errors"
        );
        assert!(
            !rate_passes(&result(10_000, 10_000, 50.0, 0), 50.0),
            "p99 not under"
        );
        assert!(
            !rate_passes(&result(10_000, 10_000, 20.0, 100), 50.0),
            "not sent"
        );
        assert!(!rate_passes(&result(0, 0, 0.0, 0), 50.0), "nothing sent");
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("0.5s"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
