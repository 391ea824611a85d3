//! The HTML report: one self-contained file (inline CSS and SVG, no script,
//! nothing fetched), so it can be attached to an issue or opened offline.
//!
//! It is rendered from a [`Report`] alone, so any recorded `--out` JSON can
//! be turned into a report again.

use std::fmt::Write as _;

use super::{Report, ScenarioResult, Series};

const PALETTE: &[&str] = &[
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];
/// Tenants drawn per latency chart (the noisy one first).
const CHART_TENANTS: usize = 10;
/// Tenants listed per table.
const TABLE_TENANTS: usize = 50;

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub fn render(report: &Report) -> String {
    let mut html = String::new();
    let title = format!(
        "tenantry bench — {}",
        report.started_at.format("%Y-%m-%d %H:%M UTC")
    );
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{CSS}</style></head><body>\n<h1>{}</h1>\n",
        esc(&title),
        esc(&title)
    );
    let _ = write!(
        html,
        "<p class=\"meta\">target <code>{}</code> ({}), tier limits {}, {} cores ({} {}), \
         tool {}, schema <code>{}</code>{}{}</p>",
        esc(&report.target.url),
        esc(&report.target.mode),
        esc(&report.target.limits),
        report.machine.cores,
        esc(&report.machine.os),
        esc(&report.machine.arch),
        esc(&report.tool_version),
        esc(&report.schema),
        report
            .label
            .as_deref()
            .map(|l| format!(", label <b>{}</b>", esc(l)))
            .unwrap_or_default(),
        report
            .target
            .seeded
            .as_ref()
            .map(|s| format!(
                ", seeded {} tenants / {} posts ({} rows in {:.1} s)",
                s.tenants, s.posts, s.rows, s.seconds
            ))
            .unwrap_or_default()
    );
    summary_table(&mut html, report);
    if let Some(cmp) = &report.baseline {
        let _ = write!(
            html,
            "<h2>Against the baseline</h2><p>{} — threshold {:.0}%: <b>{} regression(s)</b></p>\
             <table><tr><th>scenario</th><th>metric</th><th>baseline</th><th>now</th>\
             <th>change</th><th></th></tr>",
            esc(&cmp.source),
            cmp.threshold * 100.0,
            cmp.regressions
        );
        for c in &cmp.comparisons {
            let _ = write!(
                html,
                "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{:.2}</td><td>{:.2}</td>\
                 <td>{:+.1}%</td><td>{}</td></tr>",
                if c.regression { "bad" } else { "" },
                esc(&c.scenario),
                esc(&c.metric),
                c.baseline,
                c.current,
                c.change * 100.0,
                if c.regression { "regression" } else { "ok" }
            );
        }
        html.push_str("</table>\n");
    }
    for s in &report.scenarios {
        scenario(&mut html, s);
    }
    html.push_str("</body></html>\n");
    html
}

fn summary_table(html: &mut String, report: &Report) {
    html.push_str(
        "<h2>Summary</h2><table><tr><th>scenario</th><th>load</th><th>req/s</th>\
         <th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>p99.9 ms</th><th>errors</th></tr>",
    );
    for s in &report.scenarios {
        let _ = write!(
            html,
            "<tr><td><a href=\"#{}\">{}</a></td><td>{}</td><td>{:.1}</td><td>{:.2}</td>\
             <td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{} ({:.2}%)</td></tr>",
            esc(&s.name),
            esc(&s.name),
            esc(&load_text(s)),
            s.throughput_rps,
            s.latency_ms.p50,
            s.latency_ms.p90,
            s.latency_ms.p99,
            s.latency_ms.p999,
            s.errors,
            s.error_rate * 100.0
        );
    }
    html.push_str("</table>\n");
}

fn load_text(s: &ScenarioResult) -> String {
    match s.load.rate {
        Some(rate) => format!(
            "{} loop, {rate:.0} req/s, {} conns",
            s.load.mode, s.load.connections
        ),
        None => format!("{} loop, {} conns", s.load.mode, s.load.connections),
    }
}

fn scenario(html: &mut String, s: &ScenarioResult) {
    let _ = write!(
        html,
        "<section id=\"{}\"><h2>{}</h2><p class=\"meta\">{}, {:.1} s measured, {} requests, \
         {:.1} req/s, {} errors</p>",
        esc(&s.name),
        esc(&s.name),
        esc(&load_text(s)),
        s.measured_s,
        s.requests,
        s.throughput_rps,
        s.errors
    );

    // Percentile bars per operation.
    html.push_str("<h3>Latency percentiles by operation</h3>");
    let mut rows: Vec<(String, [f64; 4])> = vec![(
        "all".to_owned(),
        [
            s.latency_ms.p50,
            s.latency_ms.p90,
            s.latency_ms.p99,
            s.latency_ms.p999,
        ],
    )];
    for op in &s.operations {
        rows.push((
            op.name.clone(),
            [
                op.latency_ms.p50,
                op.latency_ms.p90,
                op.latency_ms.p99,
                op.latency_ms.p999,
            ],
        ));
    }
    html.push_str(&percentile_bars(&rows));

    // Latency over time per tenant.
    let mut shown: Vec<_> = s.tenants.iter().collect();
    shown.sort_by(|a, b| {
        (b.role == "noisy")
            .cmp(&(a.role == "noisy"))
            .then(b.requests.cmp(&a.requests))
    });
    shown.truncate(CHART_TENANTS);
    let flood = s.isolation.as_ref().map(|i| i.solo_s);
    if !shown.is_empty() {
        let lines: Vec<Line<'_>> = shown
            .iter()
            .enumerate()
            .map(|(i, t)| Line {
                name: if t.role == "tenant" {
                    t.slug.clone()
                } else {
                    format!("{} ({})", t.slug, t.role)
                },
                color: PALETTE[i % PALETTE.len()],
                series: &t.series,
            })
            .collect();
        html.push_str("<h3>p99 latency over time, per tenant (ms)</h3>");
        html.push_str(&line_chart(&lines, |s, i| s.p99_ms[i], "ms", flood));
        html.push_str("<h3>Requests per second, per tenant</h3>");
        html.push_str(&line_chart(
            &lines,
            |s, i| f64::from(s.requests[i]),
            "req/s",
            flood,
        ));
    }

    // Errors.
    html.push_str("<h3>Errors</h3>");
    if s.errors_by_status.is_empty() {
        html.push_str("<p>No errors.</p>");
    } else {
        let rows: Vec<(String, f64)> = s
            .errors_by_status
            .iter()
            .map(|(k, v)| (format!("status {k}"), *v as f64))
            .collect();
        html.push_str(&simple_bars(&rows, None, "#d62728"));
        let _ = write!(
            html,
            "<p>error rate {:.2}% of {} requests</p>",
            s.error_rate * 100.0,
            s.requests
        );
    }

    if let Some(iso) = &s.isolation {
        let _ = write!(
            html,
            "<h3>Isolation: {} floods</h3><p>{} connections for {:.0} s after {:.0} s in \
             which only the quiet tenants ran, at {:.0} req/s each. Degradation ratio = loaded \
             ÷ solo p99 (1.0: untouched): median <b>{}</b>, worst <b>{}</b>. \
             Correlations above {} are flagged: <b>{}</b>.</p>",
            esc(&iso.noisy_tenant),
            iso.noisy_connections,
            iso.loaded_s,
            iso.solo_s,
            iso.quiet_rate,
            opt(iso.median_ratio),
            opt(iso.worst_ratio),
            iso.correlation_threshold,
            iso.flagged
        );
        let rows: Vec<(String, f64)> = iso
            .quiet
            .iter()
            .map(|q| (q.slug.clone(), q.ratio.unwrap_or(0.0)))
            .collect();
        html.push_str(&simple_bars(&rows, Some(1.0), "#9467bd"));
        html.push_str(
            "<table><tr><th>quiet tenant</th><th>solo p99 ms</th><th>loaded p99 ms</th>\
             <th>ratio</th><th>r with noisy latency</th><th>r with noisy load</th></tr>",
        );
        for q in &iso.quiet {
            let c = iso.correlations.iter().find(|c| c.b == q.slug);
            let flagged = c.is_some_and(|c| c.flagged);
            let _ = write!(
                html,
                "<tr class=\"{}\"><td>{}</td><td>{:.2}</td><td>{:.2}</td><td>{}</td>\
                 <td>{}</td><td>{}</td></tr>",
                if flagged { "bad" } else { "" },
                esc(&q.slug),
                q.solo_p99_ms,
                q.loaded_p99_ms,
                opt(q.ratio),
                opt(c.and_then(|c| c.r)),
                opt(q.load_coupling)
            );
        }
        let _ = write!(
            html,
            "</table><p>Quiet tenants among themselves: {} pairs, mean r {}, max r {}, \
             {} flagged.</p>",
            iso.quiet_pairs.pairs,
            opt(iso.quiet_pairs.mean_r),
            opt(iso.quiet_pairs.max_r),
            iso.quiet_pairs.flagged
        );
    }

    // Tenants table (none for tenant-less scenarios such as healthz).
    let mut tenants: Vec<_> = s.tenants.iter().collect();
    if tenants.is_empty() {
        end_section(html, s);
        return;
    }
    tenants.sort_by_key(|t| std::cmp::Reverse(t.requests));
    let _ = write!(
        html,
        "<h3>Tenants ({})</h3><table><tr><th>tenant</th><th>role</th><th>requests</th>\
         <th>req/s</th><th>p50 ms</th><th>p99 ms</th><th>p99.9 ms</th><th>errors</th></tr>",
        tenants.len()
    );
    for t in tenants.iter().take(TABLE_TENANTS) {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.2}</td><td>{:.2}</td>\
             <td>{:.2}</td><td>{}</td></tr>",
            esc(&t.slug),
            esc(&t.role),
            t.requests,
            t.throughput_rps,
            t.latency_ms.p50,
            t.latency_ms.p99,
            t.latency_ms.p999,
            t.errors
        );
    }
    html.push_str("</table>");
    end_section(html, s);
}

/// The scenario's notes, and the end of its section.
fn end_section(html: &mut String, s: &ScenarioResult) {
    for note in &s.notes {
        let _ = write!(html, "<p class=\"note\">{}</p>", esc(note));
    }
    html.push_str("</section>\n");
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{v:.2}"))
}

struct Line<'a> {
    name: String,
    color: &'static str,
    series: &'a Series,
}

/// A "nice" upper bound for an axis: 1, 2 or 5 times a power of ten.
fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if v <= m * p {
            return m * p;
        }
    }
    10.0 * p
}

/// A line chart of per-second values, one polyline per tenant, with a
/// dashed marker at `marker` seconds (the start of a flood).
fn line_chart(
    lines: &[Line<'_>],
    value: impl Fn(&Series, usize) -> f64,
    unit: &str,
    marker: Option<f64>,
) -> String {
    let (w, h, left, right, top, bottom) = (760.0, 260.0, 56.0, 12.0, 10.0, 28.0);
    let max_t = lines
        .iter()
        .filter_map(|l| l.series.t.last())
        .max()
        .copied()
        .unwrap_or(0)
        .max(1) as f64;
    let max_v = nice_max(
        lines
            .iter()
            .flat_map(|l| (0..l.series.t.len()).map(|i| value(l.series, i)))
            .fold(0.0, f64::max),
    );
    let x = |t: f64| left + (w - left - right) * t / max_t;
    let y = |v: f64| top + (h - top - bottom) * (1.0 - v / max_v);
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {w} {}\" role=\"img\">",
        h + 18.0 * lines.len().div_ceil(3) as f64
    );
    for i in 0..=4 {
        let v = max_v * f64::from(i) / 4.0;
        let _ = write!(
            svg,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" class=\"grid\"/>\
             <text x=\"{}\" y=\"{:.1}\" class=\"axis\" text-anchor=\"end\">{}</text>",
            w - right,
            left - 4.0,
            y(v) + 4.0,
            trim(v),
            y = y(v)
        );
    }
    let _ = write!(
        svg,
        "<text x=\"{}\" y=\"{}\" class=\"axis\" text-anchor=\"end\">{} s</text>\
         <text x=\"{left}\" y=\"{}\" class=\"axis\">0</text>\
         <text x=\"4\" y=\"{}\" class=\"axis\">{}</text>",
        w - right,
        h - 8.0,
        trim(max_t),
        h - 8.0,
        top + 10.0,
        esc(unit)
    );
    if let Some(m) = marker {
        let _ = write!(
            svg,
            "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{top}\" y2=\"{}\" class=\"marker\"/>\
             <text x=\"{:.1}\" y=\"{}\" class=\"axis\">flood</text>",
            h - bottom,
            x(m) + 3.0,
            top + 10.0,
            x = x(m)
        );
    }
    for line in lines {
        let points: Vec<String> = (0..line.series.t.len())
            .map(|i| {
                format!(
                    "{:.1},{:.1}",
                    x(f64::from(line.series.t[i]) + 0.5),
                    y(value(line.series, i))
                )
            })
            .collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\" points=\"{}\">\
             <title>{}</title></polyline>",
            line.color,
            points.join(" "),
            esc(&line.name)
        );
    }
    for (i, line) in lines.iter().enumerate() {
        let lx = left + 240.0 * (i % 3) as f64;
        let ly = h + 4.0 + 18.0 * (i / 3) as f64;
        let _ = write!(
            svg,
            "<rect x=\"{lx}\" y=\"{ly}\" width=\"10\" height=\"10\" fill=\"{}\"/>\
             <text x=\"{}\" y=\"{}\" class=\"legend\">{}</text>",
            line.color,
            lx + 14.0,
            ly + 9.0,
            esc(&line.name)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Grouped horizontal bars of p50/p90/p99/p99.9 per row.
fn percentile_bars(rows: &[(String, [f64; 4])]) -> String {
    const NAMES: [&str; 4] = ["p50", "p90", "p99", "p99.9"];
    const COLORS: [&str; 4] = ["#2ca02c", "#1f77b4", "#ff7f0e", "#d62728"];
    let (w, label_w, bar_h, gap) = (760.0, 150.0, 9.0, 10.0);
    let max_v = nice_max(
        rows.iter()
            .flat_map(|(_, v)| v.iter().copied())
            .fold(0.0, f64::max),
    );
    let group_h = 4.0 * bar_h + gap;
    let h = 24.0 + group_h * rows.len() as f64;
    let scale = |v: f64| (w - label_w - 70.0) * v / max_v;
    let mut svg = format!("<svg class=\"chart\" viewBox=\"0 0 {w} {h}\" role=\"img\">");
    for (i, name) in NAMES.iter().enumerate() {
        let lx = label_w + 90.0 * i as f64;
        let _ = write!(
            svg,
            "<rect x=\"{lx}\" y=\"2\" width=\"10\" height=\"10\" fill=\"{}\"/>\
             <text x=\"{}\" y=\"11\" class=\"legend\">{name}</text>",
            COLORS[i],
            lx + 14.0
        );
    }
    for (r, (label, values)) in rows.iter().enumerate() {
        let gy = 20.0 + group_h * r as f64;
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{:.1}\" class=\"axis\" text-anchor=\"end\">{}</text>",
            label_w - 6.0,
            gy + 2.0 * bar_h + 3.0,
            esc(label)
        );
        for (i, v) in values.iter().enumerate() {
            let by = gy + bar_h * i as f64;
            let _ = write!(
                svg,
                "<rect x=\"{label_w}\" y=\"{by:.1}\" width=\"{:.1}\" height=\"{}\" fill=\"{}\">\
                 <title>{} {} {:.3} ms</title></rect>\
                 <text x=\"{:.1}\" y=\"{:.1}\" class=\"value\">{:.2}</text>",
                scale(*v).max(0.5),
                bar_h - 1.0,
                COLORS[i],
                esc(label),
                NAMES[i],
                v,
                label_w + scale(*v) + 4.0,
                by + bar_h - 1.5,
                v
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

/// Horizontal bars, one per row, with an optional reference line.
fn simple_bars(rows: &[(String, f64)], reference: Option<f64>, color: &str) -> String {
    let (w, label_w, bar_h) = (760.0, 190.0, 16.0);
    let max_v = nice_max(
        rows.iter()
            .map(|(_, v)| *v)
            .chain(reference)
            .fold(0.0, f64::max),
    );
    let h = 8.0 + (bar_h + 4.0) * rows.len() as f64;
    let scale = |v: f64| (w - label_w - 60.0) * v / max_v;
    let mut svg = format!("<svg class=\"chart\" viewBox=\"0 0 {w} {h}\" role=\"img\">");
    for (i, (label, v)) in rows.iter().enumerate() {
        let y = 4.0 + (bar_h + 4.0) * i as f64;
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{:.1}\" class=\"axis\" text-anchor=\"end\">{}</text>\
             <rect x=\"{label_w}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{bar_h}\" fill=\"{color}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" class=\"value\">{}</text>",
            label_w - 6.0,
            y + bar_h - 4.0,
            esc(label),
            scale(*v).max(0.5),
            label_w + scale(*v) + 4.0,
            y + bar_h - 4.0,
            trim(*v)
        );
    }
    if let Some(r) = reference {
        let _ = write!(
            svg,
            "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"0\" y2=\"{h}\" class=\"marker\"/>",
            x = label_w + scale(r)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// A number without needless decimals.
fn trim(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

const CSS: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:24px auto;max-width:820px;\
color:#222}h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}\
h3{font-size:15px;margin-top:20px}table{border-collapse:collapse;margin:8px 0;font-size:13px}\
td,th{padding:3px 8px;border-bottom:1px solid #eee;text-align:right}td:first-child,\
th:first-child{text-align:left}tr.bad td{background:#fde8e8}.meta{color:#555}.note{color:#555;\
font-style:italic}code{background:#f4f4f4;padding:0 3px}svg.chart{width:100%;height:auto;\
display:block;margin:6px 0}.grid{stroke:#eee}.marker{stroke:#888;stroke-dasharray:4 3}\
.axis{font-size:11px;fill:#555}.legend{font-size:11px;fill:#333}.value{font-size:10px;fill:#333}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn nice_maxima() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(3.2), 5.0);
        assert_eq!(nice_max(7.0), 10.0);
        assert_eq!(nice_max(120.0), 200.0);
        assert_eq!(nice_max(1.0), 1.0);
    }
}
