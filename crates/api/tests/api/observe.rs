//! Observe every tenant: performance history, top tenants, alerts, the
//! noisy-neighbour detector and the bounded per-tenant metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tenantry_api::observe::ObserveConfig;
use tenantry_api::observe::meter::Outcome;
use uuid::Uuid;

use crate::helpers::{TestApp, assert_json, assert_problem};

fn fast(interval_ms: u64) -> impl FnOnce(tenantry_api::AppState) -> tenantry_api::AppState {
    move |s| {
        s.with_observe(ObserveConfig {
            interval: Duration::from_millis(interval_ms),
            storage_every: Duration::from_millis(interval_ms),
            ..ObserveConfig::default()
        })
    }
}

async fn get(app: &TestApp, path: &str) -> Value {
    let res = app.admin(Method::GET, path).send().await.expect("request");
    assert_json(res, StatusCode::OK).await
}

/// Polls `check` every 200 ms for up to `secs` seconds.
async fn within<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < until {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test]
async fn observe_performance_top_and_alerts_show_a_tenants_traffic() {
    let app = TestApp::spawn_configured(None, fast(300)).await;
    let (tenant, owner) = app.tenant("perf-a").await;
    let id = tenant["id"].as_str().expect("id").to_owned();
    // A threshold no request meets, judged over one interval.
    let res = app
        .admin(Method::PATCH, &format!("/v1/admin/tenants/{id}"))
        .json(&json!({"thresholds": {"p99_ms": 0.001, "for_minutes": 1}}))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);
    let res = app
        .admin(Method::PATCH, &format!("/v1/admin/tenants/{id}"))
        .json(&json!({"thresholds": {"error_rate": 5}}))
        .send()
        .await
        .expect("request");
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;

    within(
        60,
        "the performance view shows the traffic and storage",
        || async {
            for n in 0..10 {
                app.post(&owner, &format!("post {n}")).await;
            }
            let perf = get(
                &app,
                &format!("/v1/admin/tenants/{id}/performance?window=15m"),
            )
            .await;
            perf["summary"]["requests"].as_u64().unwrap_or(0) >= 20
                && !perf["series"].as_array().expect("series").is_empty()
                && perf["storage"]["rows"]["posts"].as_u64().unwrap_or(0) >= 10
        },
    )
    .await;
    let perf = get(&app, &format!("/v1/admin/tenants/{id}/performance")).await;
    assert_eq!(perf["window"], "15m");
    assert_eq!(perf["tenant_id"], id.as_str());
    assert_eq!(perf["thresholds"]["p99_ms"], 0.001);
    assert!(perf["summary"]["p99_ms"].as_f64().expect("p99") > 0.0);
    assert!(perf["summary"]["db_time_ms"].as_f64().expect("db time") > 0.0);
    let point = &perf["series"][0];
    for field in [
        "at",
        "requests",
        "errors",
        "throttled",
        "shed",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "db_time_ms",
        "db_wait_p99_ms",
    ] {
        assert!(!point[field].is_null(), "{field}");
    }
    let week = get(
        &app,
        &format!("/v1/admin/tenants/{id}/performance?window=7d"),
    )
    .await;
    assert!(week["summary"]["requests"].as_u64().expect("requests") >= 20);

    let res = app
        .admin(
            Method::GET,
            &format!("/v1/admin/tenants/{id}/performance?window=2h"),
        )
        .send()
        .await
        .expect("request");
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let res = app
        .admin(
            Method::GET,
            &format!("/v1/admin/tenants/{}/performance", Uuid::now_v7()),
        )
        .send()
        .await
        .expect("request");
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;

    let top = get(&app, "/v1/admin/tenants/top?by=requests&window=15m&limit=5").await;
    assert_eq!(top["items"][0]["slug"], "perf-a");
    assert!(top["items"][0]["value"].as_f64().expect("value") >= 20.0);
    let res = app
        .admin(Method::GET, "/v1/admin/tenants/top?by=luck")
        .send()
        .await
        .expect("request");
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;

    within(30, "a p99 alert is open", || async {
        for n in 0..10 {
            app.post(&owner, &format!("more {n}")).await;
        }
        let alerts = get(&app, &format!("/v1/admin/alerts?tenant={id}")).await;
        alerts["items"].as_array().expect("items").iter().any(|a| {
            a["kind"] == "threshold" && a["metric"] == "p99_ms" && a["tenant_slug"] == "perf-a"
        })
    })
    .await;
    let perf = get(&app, &format!("/v1/admin/tenants/{id}/performance")).await;
    assert!(!perf["alerts"].as_array().expect("alerts").is_empty());
    let res = app
        .admin(Method::GET, "/v1/admin/alerts?state=closed")
        .send()
        .await
        .expect("request");
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
}

#[tokio::test]
async fn observe_the_noisy_neighbour_alert_names_the_flood_within_two_minutes_and_no_quiet_tenant()
{
    let app = Arc::new(TestApp::spawn_configured(None, |s| fast(3_000)(s.with_db_share(4))).await);
    let mut ids = Vec::new();
    let mut users = Vec::new();
    for slug in ["flood", "quiet-a", "quiet-b"] {
        let (t, owner) = app.tenant(slug).await;
        let id = t["id"].as_str().expect("id").to_owned();
        let mut patch = json!({"thresholds": {"db_wait_p99_ms": 0.5, "for_minutes": 2}});
        if slug == "flood" {
            // Its own limit no lower than the capacity: alone it takes it all.
            patch["limits"] = json!({"db_concurrency": 16});
        }
        let res = app
            .admin(Method::PATCH, &format!("/v1/admin/tenants/{id}"))
            .json(&patch)
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), StatusCode::OK);
        ids.push(id);
        users.push(owner);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (app, user, stop) = (app.clone(), users[0].clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let _ = app
                    .as_user(&user, Method::POST, "/v1/posts")
                    .json(&json!({"content": "flood"}))
                    .send()
                    .await;
            }
        }));
    }
    for user in &users[1..] {
        let (app, user, stop) = (app.clone(), user.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            // A burst now and then, after a pause long enough for the flood
            // to have taken every slot.
            while !stop.load(Ordering::Relaxed) {
                let burst = (0..4).map(|_| {
                    app.as_user(&user, Method::POST, "/v1/posts")
                        .json(&json!({"content": "quiet"}))
                        .send()
                });
                let _ = futures::future::join_all(burst).await;
                tokio::time::sleep(Duration::from_millis(1_200)).await;
            }
        }));
    }
    let noisy = |alerts: &Value| -> Vec<Value> {
        alerts["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter(|a| a["kind"] == "noisy_neighbour")
            .cloned()
            .collect()
    };
    let started = std::time::Instant::now();
    within(120, "a noisy_neighbour alert opens", || async {
        !noisy(&get(&app, "/v1/admin/alerts?state=all").await).is_empty()
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    assert!(started.elapsed() < Duration::from_secs(120));
    let alerts = noisy(&get(&app, "/v1/admin/alerts?state=all&limit=100").await);
    for a in &alerts {
        assert_eq!(
            a["tenant_id"],
            ids[0].as_str(),
            "only the flood is blamed: {a}"
        );
        assert_eq!(a["tenant_slug"], "flood");
        let victims = a["detail"]["victims"].as_array().expect("victims");
        assert!(!victims.is_empty());
        for v in victims {
            assert!(
                v["tenant_id"] == ids[1].as_str() || v["tenant_id"] == ids[2].as_str(),
                "{v}"
            );
        }
    }
}

#[tokio::test]
async fn observe_metrics_carry_at_most_k_plus_one_tenant_label_values_with_ten_thousand_tenants() {
    let app = TestApp::spawn_configured(None, |s| {
        s.with_observe(ObserveConfig {
            interval: Duration::from_millis(200),
            top_k: 20,
            ..ObserveConfig::default()
        })
    })
    .await;
    let meters = &app.state.observe.meters;
    let tenants: Vec<(Uuid, String)> = (0..10_000)
        .map(|n| (Uuid::now_v7(), format!("t-{n}")))
        .collect();
    for (n, (id, slug)) in tenants.iter().enumerate() {
        for _ in 0..(1 + n % 7) {
            meters.request(
                (*id, slug, "free"),
                Duration::from_millis(3),
                Outcome::Ok,
                || (0, 0),
            );
        }
    }
    within(30, "the meters were drained", || async {
        !app.state.observe.prometheus().is_empty()
    })
    .await;
    let text = app
        .request(Method::GET, "/metrics")
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("text");
    let mut labels: std::collections::HashMap<&str, std::collections::HashSet<&str>> =
        Default::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        if let Some((name, rest)) = line.split_once("{")
            && let Some(at) = rest.find("tenant=\"")
        {
            let value = rest[at + 8..].split('"').next().expect("closed");
            labels.entry(name).or_default().insert(value);
        }
    }
    assert!(
        labels.contains_key("tenantry_tenant_requests_per_second"),
        "{text}"
    );
    for (metric, values) in &labels {
        assert!(
            values.len() <= 21,
            "{metric}: {} tenant values",
            values.len()
        );
    }
    assert!(labels["tenantry_tenant_requests_per_second"].contains("_other"));
}

/// The metric names a PromQL expression reads (identifiers that are not
/// functions, keywords or label names).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut word = String::new();
    let mut in_braces = 0;
    let mut in_string = false;
    let chars: Vec<char> = expr.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        if in_string {
            in_string = *c != '"';
            continue;
        }
        if c.is_ascii_alphanumeric() || *c == '_' || *c == ':' {
            word.push(*c);
            continue;
        }
        let next = chars[i..].iter().find(|c| !c.is_whitespace()).copied();
        if !word.is_empty()
            && in_braces == 0
            && next != Some('(')
            && word.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && (word.starts_with("tenantry_") || word.starts_with("http_"))
        {
            names.push(word.clone());
        }
        word.clear();
        match c {
            '{' => in_braces += 1,
            '}' => in_braces -= 1,
            '"' => in_string = true,
            _ => {}
        }
    }
    if word.starts_with("tenantry_") || word.starts_with("http_") {
        names.push(word);
    }
    names
}

#[tokio::test]
async fn observe_every_metric_the_grafana_dashboard_queries_is_in_metrics() {
    let dashboard: Value =
        serde_json::from_str(include_str!("../../../../deploy/grafana/tenantry.json"))
            .expect("the dashboard is JSON");
    let mut wanted = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            wanted.extend(metric_names(target["expr"].as_str().expect("expr")));
        }
    }
    assert!(wanted.len() >= 15, "{wanted:?}");
    let app = TestApp::spawn_configured(None, fast(300)).await;
    let (tenant, owner) = app.tenant("graf").await;
    let id = tenant["id"].as_str().expect("id");
    app.post(&owner, "hello").await;
    let res = app
        .as_user(&owner, Method::POST, "/v1/announcements")
        .json(&json!({"title": "hi", "message": "all"}))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    crate::helpers::limit(&app, id, json!({"rate_per_sec": 1, "burst": 1})).await;
    for _ in 0..5 {
        let _ = app.as_user(&owner, Method::GET, "/v1/posts").send().await;
    }
    within(
        30,
        "every metric the dashboard reads is exported",
        || async {
            let text = app
                .request(Method::GET, "/metrics")
                .send()
                .await
                .expect("request")
                .text()
                .await
                .expect("text");
            let missing: Vec<&String> = wanted
                .iter()
                .filter(|m| {
                    !text.lines().any(|l| {
                        l.starts_with(&format!("{m}{{")) || l.starts_with(&format!("{m} "))
                    })
                })
                .collect();
            if !missing.is_empty() {
                eprintln!("not yet in /metrics: {missing:?}");
            }
            missing.is_empty()
        },
    )
    .await;
}

/// What the webhook received: (signature header, body).
type Deliveries = Vec<(String, Vec<u8>)>;

#[tokio::test]
async fn observe_an_opened_alert_is_posted_to_the_webhook_signed_through_the_job_queue() {
    let received: Arc<tokio::sync::Mutex<Deliveries>> = Arc::default();
    let sink = received.clone();
    let hook = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let sink = sink.clone();
                async move {
                    let sig = headers
                        .get("tenantry-signature")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    sink.lock().await.push((sig, body.to_vec()));
                    "ok"
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, hook).await });
    let app = TestApp::spawn_configured(None, move |s| {
        s.with_observe(ObserveConfig {
            interval: Duration::from_millis(300),
            webhook: Some(tenantry_api::observe::webhook::Webhook {
                url,
                secret: "hook-secret".into(),
            }),
            ..ObserveConfig::default()
        })
    })
    .await;
    let (tenant, owner) = app.tenant("hooked").await;
    let id = tenant["id"].as_str().expect("id").to_owned();
    let res = app
        .admin(Method::PATCH, &format!("/v1/admin/tenants/{id}"))
        .json(&json!({"thresholds": {"p99_ms": 0.001, "for_minutes": 1}}))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);
    within(60, "the webhook received the opened alert", || async {
        for n in 0..10 {
            app.post(&owner, &format!("post {n}")).await;
        }
        !received.lock().await.is_empty()
    })
    .await;
    let (sig, body) = received.lock().await[0].clone();
    assert_eq!(
        sig,
        tenantry_api::observe::webhook::signature("hook-secret", &body)
    );
    let event: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(event["event"], "alert.opened");
    assert_eq!(event["alert"]["tenant_id"], id.as_str());
    assert_eq!(event["alert"]["kind"], "threshold");
}

#[tokio::test]
async fn observe_a_flush_of_more_tenants_than_one_statement_carries_writes_and_merges_every_row() {
    use tenantry_api::observe::{history, meter};
    let app = TestApp::spawn().await;
    let db = &app.state.db;
    history::maintain_partitions(db).await.expect("partitions");
    let minute = history::minute_of(chrono::Utc::now());
    let n = 2 * history::FLUSH_ROWS + 1;
    let rows: Vec<meter::Interval> = (0..n)
        .map(|i| meter::Interval {
            tenant_id: Uuid::now_v7(),
            slug: format!("t{i}"),
            tier: "free".to_owned(),
            requests: i as u64 + 1,
            errors: 0,
            throttled: 0,
            shed: 0,
            latency: meter::Hist::default(),
            db_time_us: 0,
            db_wait: meter::Hist::default(),
            cache_hits: 0,
            cache_misses: 0,
        })
        .collect();
    history::flush(db, minute, &rows).await.expect("flush");
    history::flush(db, minute, &rows)
        .await
        .expect("flush again");
    let ids: Vec<Uuid> = rows.iter().map(|r| r.tenant_id).collect();
    let got = history::as_observer(
        db,
        "SELECT count(*), sum(requests)::bigint FROM tenant_perf_minute
          WHERE minute = $1 AND tenant_id = ANY($2)",
        &[&minute, &ids],
    )
    .await
    .expect("read back");
    let (count, sum): (i64, i64) = (got[0].get(0), got[0].get(1));
    assert_eq!(count, n as i64, "every tenant's row, in every chunk");
    let once: i64 = (1..=n as i64).sum();
    assert_eq!(sum, 2 * once, "the second flush merged into the first");
}
