//! Usage metering: counted in the request path, flushed in batches, read per
//! tenant per UTC day as JSON or CSV with stable ids.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Fetch as _, TestApp, assert_json, assert_problem, items};

async fn flush(app: &TestApp) {
    tenantry_api::ops::usage::flush(&app.state.db, &app.state.usage)
        .await
        .expect("flush");
}

async fn usage(app: &TestApp, query: &str) -> Value {
    assert_json(
        app.admin(Method::GET, &format!("/v1/admin/usage{query}"))
            .fetch()
            .await,
        StatusCode::OK,
    )
    .await
}

fn today() -> String {
    chrono::Utc::now().date_naive().to_string()
}

#[tokio::test]
async fn usage_is_counted_per_tenant_per_day_and_flushed_in_batches() {
    let app = TestApp::spawn().await;
    let (a, owner) = app.tenant("metered").await;
    let (b, other) = app.tenant("quiet").await;
    let a_id = a["id"].as_str().expect("as set up");
    for i in 0..3 {
        app.post(&owner, &format!("post number {i}")).await;
    }
    let res = app.as_user(&owner, Method::GET, "/v1/posts").fetch().await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = app
        .as_user(&owner, Method::POST, "/v1/analytics/events")
        .json(&json!({"events": [{"type": "a"}, {"type": "b"}, {"type": "c"}]}))
        .fetch()
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let res = app.as_user(&other, Method::GET, "/v1/tenant").fetch().await;
    assert_eq!(res.status(), StatusCode::OK);
    // Nothing is written until a flush.
    assert_eq!(app.count("SELECT count(*) FROM usage_daily").await, 0);
    flush(&app).await;

    let page = usage(&app, &format!("?tenant={a_id}")).await;
    let rows = items(&page);
    assert_eq!(rows.len(), 1, "{page}");
    let row = &rows[0];
    assert_eq!(row["tenant_id"], a["id"]);
    assert_eq!(row["day"], today());
    assert_eq!(row["requests"], 5, "{row}");
    assert_eq!(row["analytics_events"], 3);
    // Three posts (and their counter rows), three analytics events.
    assert!(
        row["rows_written"].as_i64().expect("as set up") >= 6,
        "{row}"
    );
    assert!(
        row["egress_bytes"].as_i64().expect("as set up") > 100,
        "{row}"
    );
    assert!(row["storage_bytes"].as_i64().expect("as set up") >= "post number 0".len() as i64 * 3);
    assert!(row["db_time_ms"].is_i64());
    let held = app
        .count(&format!(
            "SELECT db_time_us FROM usage_daily WHERE tenant_id = '{a_id}'"
        ))
        .await;
    assert!(held > 0, "database time is measured");
    assert_eq!(row["jobs_run"], 0);

    // More requests, another flush: added to the same row, same id.
    let id = row["id"].clone();
    app.post(&owner, "one more").await;
    flush(&app).await;
    let again = usage(&app, &format!("?tenant={a_id}")).await;
    assert_eq!(items(&again)[0]["id"], id);
    assert_eq!(items(&again)[0]["requests"], 6);

    let all = usage(&app, "").await;
    let tenants: Vec<&Value> = items(&all).iter().map(|r| &r["tenant_id"]).collect();
    assert!(tenants.contains(&&a["id"]) && tenants.contains(&&b["id"]));
}

#[tokio::test]
async fn jobs_run_are_counted_from_the_finished_jobs() {
    let app = TestApp::spawn().await;
    let (tenant, owner) = app.tenant("jobby").await;
    let id = tenant["id"].as_str().expect("as set up");
    let res = app
        .as_user(&owner, Method::POST, "/v1/announcements")
        .json(&json!({"title": "Hi", "message": "All"}))
        .fetch()
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    crate::helpers::eventually("the announcement job finished", || async {
        app.count(&format!(
            "SELECT count(*) FROM job_history WHERE tenant_id = '{id}'"
        ))
        .await
            == 1
    })
    .await;
    flush(&app).await;
    let page = usage(&app, &format!("?tenant={id}")).await;
    assert_eq!(items(&page)[0]["jobs_run"], 1, "{page}");
}

#[tokio::test]
async fn usage_reads_as_csv_and_in_keyset_pages() {
    let app = TestApp::spawn().await;
    for slug in ["one", "two", "three"] {
        let (_, owner) = app.tenant(slug).await;
        app.as_user(&owner, Method::GET, "/v1/tenant").fetch().await;
    }
    flush(&app).await;
    let first = usage(&app, "?limit=2").await;
    assert_eq!(items(&first).len(), 2);
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let second = usage(&app, &format!("?limit=2&cursor={cursor}")).await;
    assert_eq!(items(&second).len(), 1);
    assert_eq!(second["next_cursor"], Value::Null);
    let mut seen: Vec<Value> = items(&first).to_vec();
    seen.extend(items(&second).iter().cloned());
    let mut ids: Vec<String> = seen.iter().map(|r| r["id"].to_string()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 3);
    // A cursor belongs to the list (and filters) that issued it.
    let res = app
        .admin(
            Method::GET,
            &format!(
                "/v1/admin/usage?limit=2&from={}&cursor={cursor}",
                chrono::Utc::now().date_naive() - chrono::Days::new(10)
            ),
        )
        .fetch()
        .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);

    let res = app
        .admin(Method::GET, "/v1/admin/usage?format=csv&limit=2")
        .fetch()
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        crate::helpers::content_type(&res).starts_with("text/csv"),
        "{res:?}"
    );
    let next = res
        .headers()
        .get("next-cursor")
        .expect("a CSV page names the next one")
        .to_str()
        .expect("as set up")
        .to_owned();
    let text = res.text().await.expect("as set up");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "id,tenant_id,day,requests,db_time_ms,rows_written,storage_bytes,analytics_events,jobs_run,egress_bytes"
    );
    assert_eq!(lines.len(), 3);
    assert!(lines[1].starts_with(first["items"][0]["id"].as_str().expect("as set up")));
    let res = app
        .admin(
            Method::GET,
            &format!("/v1/admin/usage?format=csv&limit=2&cursor={next}"),
        )
        .fetch()
        .await;
    assert_eq!(res.text().await.expect("as set up").lines().count(), 2);
}

#[tokio::test]
async fn bad_usage_queries_are_refused() {
    let app = TestApp::spawn().await;
    // Query parameters answer 400 naming what is wrong, as every list's.
    for (query, says) in [
        ("from=yesterday&format=xml", vec!["from", "format"]),
        (
            "from=2026-02-02&to=2026-02-01",
            vec!["from must not be after to"],
        ),
        ("from=2020-01-01&to=2026-01-01", vec!["at most 366 days"]),
    ] {
        let res = app
            .admin(Method::GET, &format!("/v1/admin/usage?{query}"))
            .fetch()
            .await;
        let problem = assert_problem(res, StatusCode::BAD_REQUEST, "bad_request").await;
        let detail = problem["detail"].as_str().expect("detail");
        for said in says {
            assert!(detail.contains(said), "{query}: {detail}");
        }
    }
    let res = app
        .admin(Method::GET, "/v1/admin/usage?tenant=nope")
        .fetch()
        .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let res = app.request(Method::GET, "/v1/admin/usage").fetch().await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}
