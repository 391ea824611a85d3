//! The human table printed at the end of a run.

use std::fmt::Write as _;

use super::{Percentiles, Report, ScenarioResult};

/// How many tenants the table lists per scenario (the JSON has them all).
const TENANT_ROWS: usize = 12;

pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\ntenantry bench — {} ({} cores), target {} ({}, tier limits {}){}",
        report.started_at.format("%Y-%m-%d %H:%M UTC"),
        report.machine.cores,
        report.target.url,
        report.target.mode,
        report.target.limits,
        report
            .label
            .as_deref()
            .map(|l| format!(", label {l}"))
            .unwrap_or_default()
    );
    for s in &report.scenarios {
        scenario(&mut out, s);
    }
    if let Some(cmp) = &report.baseline {
        let _ = writeln!(
            out,
            "\nbaseline {} (threshold {:.0}%):",
            cmp.source,
            cmp.threshold * 100.0
        );
        for c in &cmp.comparisons {
            let _ = writeln!(
                out,
                "  {:<16} {:<15} {:>12.2} → {:>12.2}  {:>+7.1}%  {}",
                c.scenario,
                c.metric,
                c.baseline,
                c.current,
                c.change * 100.0,
                if c.regression { "REGRESSION" } else { "ok" }
            );
        }
        for name in &cmp.unmatched {
            let _ = writeln!(out, "  {name:<16} not in the baseline");
        }
        let _ = writeln!(out, "  {} regression(s)", cmp.regressions);
    }
    out
}

fn header(out: &mut String, first: &str) {
    let _ = writeln!(
        out,
        "  {first:<28} {:>9} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8}  errors",
        "requests", "req/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
    );
}

fn row(out: &mut String, name: &str, requests: u64, rps: f64, l: &Percentiles, errors: &str) {
    let _ = writeln!(
        out,
        "  {name:<28} {requests:>9} {rps:>10.1} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}  {errors}",
        l.p50, l.p90, l.p99, l.p999, l.max
    );
}

fn errors(map: &std::collections::BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return "0".to_owned();
    }
    map.iter()
        .map(|(k, v)| format!("{k}×{v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn scenario(out: &mut String, s: &ScenarioResult) {
    let load = match s.load.rate {
        Some(rate) => format!("{} loop, {rate:.0} req/s", s.load.mode),
        None => format!("{} loop", s.load.mode),
    };
    let _ = writeln!(
        out,
        "\n{} — {load}, {} connections, {:.1} s measured: {:.1} req/s, {} errors ({:.2}%)",
        s.name,
        s.load.connections,
        s.measured_s,
        s.throughput_rps,
        s.errors,
        s.error_rate * 100.0
    );
    header(out, "operation");
    row(
        out,
        "all",
        s.requests,
        s.throughput_rps,
        &s.latency_ms,
        &errors(&s.errors_by_status),
    );
    for op in &s.operations {
        row(
            out,
            &op.name,
            op.requests,
            op.throughput_rps,
            &op.latency_ms,
            &errors(&op.errors_by_status),
        );
    }
    if !s.tenants.is_empty() {
        let mut tenants: Vec<_> = s.tenants.iter().collect();
        tenants.sort_by_key(|t| std::cmp::Reverse(t.requests));
        header(out, "tenant");
        for t in tenants.iter().take(TENANT_ROWS) {
            let name = if t.role == "tenant" {
                t.slug.clone()
            } else {
                format!("{} ({})", t.slug, t.role)
            };
            row(
                out,
                &name,
                t.requests,
                t.throughput_rps,
                &t.latency_ms,
                &errors(&t.errors_by_status),
            );
        }
        if tenants.len() > TENANT_ROWS {
            let _ = writeln!(
                out,
                "  … and {} more tenants (all in the JSON)",
                tenants.len() - TENANT_ROWS
            );
        }
    }
    if let Some(iso) = &s.isolation {
        let _ = writeln!(
            out,
            "  isolation: {} floods with {} connections for {:.0} s after {:.0} s solo; \
             quiet tenants at {:.0} req/s each",
            iso.noisy_tenant, iso.noisy_connections, iso.loaded_s, iso.solo_s, iso.quiet_rate
        );
        let _ = writeln!(
            out,
            "  {:<28} {:>12} {:>14} {:>8} {:>10} {:>12}",
            "quiet tenant", "solo p99 ms", "loaded p99 ms", "ratio", "r(noisy)", "r(load)"
        );
        for q in &iso.quiet {
            let r = iso
                .correlations
                .iter()
                .find(|c| c.b == q.slug)
                .and_then(|c| c.r);
            let _ = writeln!(
                out,
                "  {:<28} {:>12.2} {:>14.2} {:>8} {:>10} {:>12}",
                q.slug,
                q.solo_p99_ms,
                q.loaded_p99_ms,
                opt(q.ratio, 2),
                opt(r, 2),
                opt(q.load_coupling, 2)
            );
        }
        let _ = writeln!(
            out,
            "  degradation (loaded ÷ solo p99): median {}, worst {}; correlations > {}: {} \
             (quiet pairs: {} of {}, mean r {})",
            opt(iso.median_ratio, 2),
            opt(iso.worst_ratio, 2),
            iso.correlation_threshold,
            iso.flagged,
            iso.quiet_pairs.flagged,
            iso.quiet_pairs.pairs,
            opt(iso.quiet_pairs.mean_r, 2)
        );
    }
    for note in &s.notes {
        let _ = writeln!(out, "  note: {note}");
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{v:.digits$}"))
}
