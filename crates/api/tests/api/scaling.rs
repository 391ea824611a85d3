//! Adaptive capacity end to end: the controller, on a short step, raises a
//! tenant's database concurrency under a load that waits at its limit, the
//! change is recorded and served by `GET /v1/admin/tenants/{id}/scaling`,
//! and the shares' capacities move with what they measure.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;
use tenantry_api::scaling::AdaptiveConfig;
use tenantry_fairness::scaling::ScalingConfig;

use crate::helpers::*;

/// A server whose controller steps every 50 ms.
async fn spawn_adaptive() -> TestApp {
    TestApp::spawn_configured(None, |state| {
        state.with_adaptive(AdaptiveConfig {
            enabled: true,
            interval: Duration::from_millis(50),
            scaling: ScalingConfig {
                wait: Duration::from_micros(200),
                ..ScalingConfig::default()
            },
        })
    })
    .await
}

/// Sends uncached `GET /v1/posts` as `user` from `clients` connections
/// until `stop` is set; returns the statuses seen.
fn flood(
    app: &TestApp,
    user: &User,
    clients: usize,
    stop: &Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<StatusCode>>> {
    (0..clients)
        .map(|_| {
            let request = app.as_user(user, Method::GET, "/v1/posts?limit=20");
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let res = request
                        .try_clone()
                        .expect("cloneable")
                        .send()
                        .await
                        .expect("request");
                    seen.push(res.status());
                }
                seen
            })
        })
        .collect()
}

#[tokio::test]
async fn a_tenant_waiting_at_its_limit_is_scaled_up_and_the_change_is_served() {
    let app = spawn_adaptive().await;
    let (tenant, owner) = app.tenant("scaled").await;
    let id = tenant["id"].as_str().expect("id").to_owned();
    // Uncached reads, one database operation at a time: eight clients wait
    // at the tenant's own limit while the capacity has room.
    limit(
        &app,
        &id,
        json!({"cache_ttl_secs": 0, "db_concurrency": 1, "rate_per_sec": 1_000_000,
               "burst": 1_000_000, "user_rate_per_sec": 1_000_000}),
    )
    .await;
    for i in 0..20 {
        app.post(&owner, &format!("post {i}")).await;
    }
    // Nothing changed yet.
    let page = assert_json(
        app.admin(Method::GET, &format!("/v1/admin/tenants/{id}/scaling"))
            .send()
            .await
            .expect("request"),
        StatusCode::OK,
    )
    .await;
    assert_eq!(page, json!({"items": [], "next_cursor": null}));

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients = flood(&app, &owner, 8, &stop);
    let path = format!("/v1/admin/tenants/{id}/scaling");
    eventually("the autoscaler records a raise of the tenant", || async {
        let page = assert_json(
            app.admin(Method::GET, &path).send().await.expect("request"),
            StatusCode::OK,
        )
        .await;
        items(&page)
            .iter()
            .any(|c| c["reason"] == "queue_wait" && c["from"] == 1 && c["to"] == 2)
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in clients {
        for status in c.await.expect("join") {
            assert_eq!(status, StatusCode::OK);
        }
    }
    // The change was made, not only written: the share holds the tenant to
    // its raised limit (within the free tier's bounds, 1..=4 here since the
    // override of 1 keeps the tier's maximum). The controller may still be
    // stepping and writes each change after making it, so the newest record
    // and the share are compared until one read falls between two steps.
    let tenant_id: uuid::Uuid = id.parse().expect("uuid");
    eventually(
        "the share holds the tenant to its newest recorded limit",
        || async {
            let page = assert_json(
                app.admin(Method::GET, &format!("{path}?limit=1"))
                    .send()
                    .await
                    .expect("request"),
                StatusCode::OK,
            )
            .await;
            let newest = &items(&page)[0];
            assert!(
                newest["at"].as_str().is_some_and(|at| at.ends_with('Z')),
                "{page}"
            );
            let to = newest["to"].as_u64().expect("to");
            (2..=4).contains(&to)
                && app.state.fairness.db_share.limit_set(tenant_id) == u32::try_from(to).ok()
        },
    )
    .await;
    // Keyset pages: one at a time, every change once, newest first (the
    // controller may still write one while they are read).
    let count_sql = format!("SELECT count(*) FROM tenant_scaling WHERE tenant_id = '{id}'");
    let before = app.count(&count_sql).await;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}?limit=1&cursor={c}"),
            None => format!("{path}?limit=1"),
        };
        let page = assert_json(
            app.admin(Method::GET, &url).send().await.expect("request"),
            StatusCode::OK,
        )
        .await;
        seen.extend(
            items(&page)
                .iter()
                .map(|c| c["at"].as_str().expect("at").to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let after = app.count(&count_sql).await;
    assert!(
        (before..=after).contains(&(seen.len() as i64)),
        "{before} ≤ {} ≤ {after}",
        seen.len()
    );
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, sorted, "newest first");
}

#[tokio::test]
async fn the_scaling_of_an_unknown_tenant_is_404_and_a_bad_cursor_400() {
    let app = TestApp::spawn().await;
    let res = app
        .admin(
            Method::GET,
            &format!("/v1/admin/tenants/{}/scaling", uuid::Uuid::now_v7()),
        )
        .send()
        .await
        .expect("request");
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    let (tenant, owner) = app.tenant("cursor").await;
    let id = tenant["id"].as_str().expect("id");
    let res = app
        .admin(
            Method::GET,
            &format!("/v1/admin/tenants/{id}/scaling?cursor=nonsense"),
        )
        .send()
        .await
        .expect("request");
    assert_problem(res, StatusCode::BAD_REQUEST, "bad_request").await;
    // Not for tenants' users.
    let res = app
        .as_user(
            &owner,
            Method::GET,
            &format!("/v1/admin/tenants/{id}/scaling"),
        )
        .send()
        .await
        .expect("request");
    assert!(res.status().is_client_error());
}

#[tokio::test]
async fn the_shares_capacities_move_with_what_they_measure() {
    let app = spawn_adaptive().await;
    let (tenant, owner) = app.tenant("measured").await;
    let id = tenant["id"].as_str().expect("id").to_owned();
    limit(
        &app,
        &id,
        json!({"cache_ttl_secs": 0, "rate_per_sec": 1_000_000, "burst": 1_000_000,
               "user_rate_per_sec": 1_000_000}),
    )
    .await;
    app.post(&owner, "something").await;
    let fairness = &app.state.fairness;
    let (db_before, cpu_before) = (
        fairness.db_share.stats().capacity,
        fairness.cpu_share.stats().capacity,
    );
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients = flood(&app, &owner, 8, &stop);
    // The first thing the limiters do under load is probe for the baseline
    // latency at their minimum, then resume from it: seen as moves in
    // /metrics, and as capacities that are not where they started.
    eventually("both shares probed and resumed", || async {
        let metrics = app
            .request(Method::GET, "/metrics")
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        ["db", "cpu"].iter().all(|share| {
            metrics.lines().any(|l| {
                l.starts_with("tenantry_share_capacity_moves_total")
                    && l.contains(&format!("share=\"{share}\""))
                    && l.contains("move=\"resume\"")
            })
        })
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in clients {
        c.await.expect("join");
    }
    let (db_after, cpu_after) = (
        fairness.db_share.stats().capacity,
        fairness.cpu_share.stats().capacity,
    );
    assert!(db_after >= 1 && cpu_after >= 1);
    tracing::info!(db_before, db_after, cpu_before, cpu_after, "capacities");
}
