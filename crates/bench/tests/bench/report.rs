//! The report renders from a recorded run (tests/fixtures/report-v1.json,
//! written by `tenantry bench --out`).

use tenantry_bench::report::{self, Report};

fn fixture() -> Report {
    Report::from_json(include_str!("../fixtures/report-v1.json")).expect("the fixture parses")
}

#[test]
fn a_recorded_report_keeps_its_schema_through_a_round_trip() {
    let report = fixture();
    assert_eq!(report.schema, report::SCHEMA);
    let again = Report::from_json(&serde_json::to_string(&report).expect("serialize"))
        .expect("parse again");
    assert_eq!(report, again);
}

#[test]
fn reports_of_another_schema_are_refused() {
    let mut value: serde_json::Value =
        serde_json::from_str(include_str!("../fixtures/report-v1.json")).expect("json");
    value["schema"] = "tenantry-bench/v0".into();
    let err = Report::from_json(&value.to_string()).expect_err("another schema");
    assert!(
        err.to_string().contains("unsupported report schema"),
        "{err}"
    );
}

#[test]
fn the_html_report_renders_self_contained_from_a_recorded_run() {
    let report = fixture();
    let html = report::html::render(&report);
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.trim_end().ends_with("</html>"));
    // Self-contained: nothing is fetched.
    for outside in ["<script", "src=", "href=\"http", "@import", "url("] {
        assert!(
            !html.contains(outside),
            "the report must not contain {outside}"
        );
    }
    for s in &report.scenarios {
        assert!(
            html.contains(&format!("id=\"{}\"", s.name)),
            "section {}",
            s.name
        );
        for t in &s.tenants {
            assert!(html.contains(&t.slug), "tenant {}", t.slug);
        }
    }
    // Charts: percentile bars, latency over time, and for noisy-neighbor
    // the degradation ratios and correlations.
    assert!(html.matches("<svg").count() >= 3 * report.scenarios.len() - 1);
    assert!(html.contains("<polyline"));
    let noisy = report
        .scenario("noisy-neighbor")
        .expect("the fixture has noisy-neighbor");
    let iso = noisy.isolation.as_ref().expect("isolation analysis");
    assert!(html.contains(&format!("Isolation: {} floods", iso.noisy_tenant)));
    assert!(html.contains("Degradation ratio"));
}

#[test]
fn the_text_table_lists_scenarios_operations_and_tenants() {
    let report = fixture();
    let text = report::text::render(&report);
    for s in &report.scenarios {
        assert!(text.contains(&format!("\n{} — ", s.name)), "{}", s.name);
        for op in &s.operations {
            assert!(text.contains(&op.name));
        }
    }
    assert!(text.contains("quiet tenant"));
    assert!(text.contains("degradation (loaded ÷ solo p99)"));
}

#[test]
fn a_run_compared_with_itself_has_no_regression_and_a_slower_one_does() {
    let before = fixture();
    let same = report::baseline::compare(&before, &before, "self", 0.1);
    assert_eq!(same.regressions, 0);
    assert_eq!(same.comparisons.len(), 2 * before.scenarios.len());

    let mut slower = before.clone();
    slower.scenarios[0].latency_ms.p99 *= 1.5;
    let cmp = report::baseline::compare(&slower, &before, "prev.json", 0.1);
    assert_eq!(cmp.regressions, 1);
    assert!(
        cmp.comparisons
            .iter()
            .any(|c| c.regression && c.metric == "p99_ms")
    );
}
