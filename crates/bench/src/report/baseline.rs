//! Comparing a run with a previous one (`--baseline prev.json`): per
//! scenario, p99 latency and throughput, each against a relative threshold.
//!
//! Why only those two: they are what a change to the server moves and what
//! users feel; p50 and the mean move with them, and error counts are shown
//! beside. A scenario missing from either side is reported, never guessed.

use serde::{Deserialize, Serialize};

use super::Report;

/// The comparison of a run with its baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineComparison {
    /// Where the baseline came from (a file name).
    pub source: String,
    /// Relative change beyond which a metric regressed (0.1 = 10%).
    pub threshold: f64,
    pub comparisons: Vec<Comparison>,
    /// Scenarios of this run the baseline does not have.
    #[serde(default)]
    pub unmatched: Vec<String>,
    pub regressions: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub scenario: String,
    /// `p99_ms` (lower is better) or `throughput_rps` (higher is better).
    pub metric: String,
    pub baseline: f64,
    pub current: f64,
    /// (current − baseline) ÷ baseline.
    pub change: f64,
    pub regression: bool,
}

/// Compares `current` with `baseline`: p99 regresses when it grew by more
/// than `threshold`, throughput when it fell by more than `threshold`.
pub fn compare(
    current: &Report,
    baseline: &Report,
    source: &str,
    threshold: f64,
) -> BaselineComparison {
    let mut comparisons = Vec::new();
    let mut unmatched = Vec::new();
    for scenario in &current.scenarios {
        let Some(before) = baseline.scenario(&scenario.name) else {
            unmatched.push(scenario.name.clone());
            continue;
        };
        let p99 = metric(
            &scenario.name,
            "p99_ms",
            before.latency_ms.p99,
            scenario.latency_ms.p99,
            |change| change > threshold,
        );
        let throughput = metric(
            &scenario.name,
            "throughput_rps",
            before.throughput_rps,
            scenario.throughput_rps,
            |change| change < -threshold,
        );
        comparisons.extend([p99, throughput]);
    }
    let regressions = comparisons.iter().filter(|c| c.regression).count();
    BaselineComparison {
        source: source.to_owned(),
        threshold,
        comparisons,
        unmatched,
        regressions,
    }
}

fn metric(
    scenario: &str,
    name: &str,
    baseline: f64,
    current: f64,
    regressed: impl Fn(f64) -> bool,
) -> Comparison {
    let change = if baseline > 0.0 {
        (current - baseline) / baseline
    } else if current > 0.0 {
        f64::INFINITY
    } else {
        0.0
    };
    Comparison {
        scenario: scenario.to_owned(),
        metric: name.to_owned(),
        baseline,
        current,
        change,
        // A baseline of zero (nothing measured) is no basis for a verdict.
        regression: baseline > 0.0 && regressed(change),
    }
}

/// Parses a threshold like `10%`, `10` (percent) or `0.1`.
pub fn parse_threshold(raw: &str) -> Result<f64, String> {
    let trimmed = raw.trim();
    let value = if let Some(pct) = trimmed.strip_suffix('%') {
        pct.trim().parse::<f64>().map(|v| v / 100.0)
    } else {
        trimmed
            .parse::<f64>()
            .map(|v| if v >= 1.0 { v / 100.0 } else { v })
    }
    .map_err(|_| format!("'{raw}' is not a threshold like 10% or 0.1"))?;
    if !(value > 0.0 && value.is_finite()) {
        return Err("the threshold must be positive".to_owned());
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::ScenarioResult;

    fn report(scenarios: &[(&str, f64, f64)]) -> Report {
        let text = include_str!("../../tests/fixtures/report-v1.json");
        let mut report = Report::from_json(text).expect("fixture parses");
        let template: ScenarioResult = report.scenarios[0].clone();
        report.scenarios = scenarios
            .iter()
            .map(|(name, p99, rps)| {
                let mut s = template.clone();
                s.name = (*name).to_owned();
                s.latency_ms.p99 = *p99;
                s.throughput_rps = *rps;
                s
            })
            .collect();
        report
    }

    #[test]
    fn slower_p99_or_lower_throughput_beyond_the_threshold_regresses() {
        let before = report(&[("read", 10.0, 1_000.0), ("write", 20.0, 500.0)]);
        let now = report(&[("read", 10.9, 950.0), ("write", 23.0, 430.0)]);
        let cmp = compare(&now, &before, "prev.json", 0.10);
        assert_eq!(cmp.regressions, 2);
        let flagged: Vec<_> = cmp
            .comparisons
            .iter()
            .filter(|c| c.regression)
            .map(|c| (c.scenario.as_str(), c.metric.as_str()))
            .collect();
        assert_eq!(
            flagged,
            vec![("write", "p99_ms"), ("write", "throughput_rps")]
        );
    }

    #[test]
    fn improvements_and_unknown_scenarios_do_not_regress() {
        let before = report(&[("read", 10.0, 1_000.0)]);
        let now = report(&[("read", 5.0, 2_000.0), ("mixed", 1.0, 1.0)]);
        let cmp = compare(&now, &before, "prev.json", 0.10);
        assert_eq!(cmp.regressions, 0);
        assert_eq!(cmp.unmatched, vec!["mixed".to_owned()]);
        assert!((cmp.comparisons[0].change + 0.5).abs() < 1e-12);
    }

    #[test]
    fn thresholds_parse_as_percent_or_fraction() {
        assert_eq!(parse_threshold("10%"), Ok(0.10));
        assert_eq!(parse_threshold("25"), Ok(0.25));
        assert_eq!(parse_threshold("0.05"), Ok(0.05));
        assert!(parse_threshold("x").is_err());
        assert!(parse_threshold("0").is_err());
    }
}
