//! Support access: agents registered by the platform admin act in a tenant
//! only under a live grant its owner or admins gave, read-only grants cannot
//! write, and everything done under a grant is in the tenant's activity.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tenantry_db::{DbError, TenantContext};
use uuid::Uuid;

use crate::helpers::{
    Fetch as _, TestApp, User, assert_json, assert_problem, eventually, invalid_fields, items,
};

async fn register(app: &TestApp, agent: &User) {
    let res = app
        .admin(
            Method::POST,
            &format!("/v1/admin/support-agents/{}", agent.id),
        )
        .fetch()
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
}

async fn grant(app: &TestApp, by: &User, agent: &User, scope: &str, minutes: i64) -> String {
    let body = assert_json(
        app.as_user(by, Method::POST, "/v1/support/grants")
            .json(&json!({"agent_user_id": agent.id, "scope": scope,
                          "reason": "ticket #42: posts missing", "ttl_minutes": minutes}))
            .fetch()
            .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(body["live"], true);
    body["id"].as_str().expect("id").to_owned()
}

/// A request as `agent` under `grant` in `agent.tenant`.
fn under(
    app: &TestApp,
    agent: &User,
    grant: &str,
    method: Method,
    path: &str,
) -> reqwest::RequestBuilder {
    app.as_user(agent, method, path)
        .header("x-support-grant", grant)
}

async fn activity(app: &TestApp, owner: &User) -> Vec<Value> {
    let page = assert_json(
        app.as_user(owner, Method::GET, "/v1/support/activity?limit=100")
            .fetch()
            .await,
        StatusCode::OK,
    )
    .await;
    items(&page).clone()
}

#[tokio::test]
async fn a_read_grant_lets_its_agent_read_but_never_write_and_every_use_is_audited() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    app.post(&owner, "visible to support").await;
    let agent = app.user("acme");
    register(&app, &agent).await;

    // Without a grant the agent is a stranger here.
    let res = app
        .as_user(&agent, Method::GET, "/v1/members")
        .fetch()
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);

    let id = grant(&app, &owner, &agent, "read", 60).await;
    let page = assert_json(
        under(&app, &agent, &id, Method::GET, "/v1/posts")
            .fetch()
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(items(&page).len(), 1);
    let res = under(&app, &agent, &id, Method::GET, "/v1/members")
        .fetch()
        .await;
    assert_eq!(res.status(), StatusCode::OK);

    let res = under(&app, &agent, &id, Method::POST, "/v1/posts")
        .json(&json!({"content": "written by support"}))
        .fetch()
        .await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    assert_eq!(app.count("SELECT count(*) FROM posts").await, 1);

    // The tenant's admins see the grant and each request made under it.
    eventually("the activity shows both reads", || async {
        activity(&app, &owner)
            .await
            .iter()
            .filter(|e| e["action"] == "support.access")
            .count()
            == 2
    })
    .await;
    let seen = activity(&app, &owner).await;
    let access: Vec<&Value> = seen
        .iter()
        .filter(|e| e["action"] == "support.access")
        .collect();
    for entry in &access {
        assert_eq!(entry["actor_id"], agent.id.to_string());
        assert_eq!(entry["details"]["grant"], id);
        assert_eq!(entry["details"]["method"], "GET");
        assert_eq!(entry["details"]["status"], 200);
    }
    let created = seen
        .iter()
        .find(|e| e["action"] == "support.grant.create")
        .expect("the grant itself is audited");
    assert_eq!(created["actor_id"], owner.id.to_string());
    assert_eq!(created["details"]["reason"], "ticket #42: posts missing");
}

#[tokio::test]
async fn a_write_grant_writes_but_cannot_manage_support_access() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let agent = app.user("acme");
    register(&app, &agent).await;
    let id = grant(&app, &owner, &agent, "write", 30).await;
    let res = under(&app, &agent, &id, Method::POST, "/v1/posts")
        .json(&json!({"content": "fixed by support"}))
        .fetch()
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = under(&app, &agent, &id, Method::POST, "/v1/support/grants")
        .json(&json!({"agent_user_id": agent.id, "scope": "write",
                      "reason": "more", "ttl_minutes": 480}))
        .fetch()
        .await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    let res = under(
        &app,
        &agent,
        &id,
        Method::POST,
        &format!("/v1/support/grants/{id}/extend"),
    )
    .json(&json!({"ttl_minutes": 60}))
    .fetch()
    .await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
}

#[tokio::test]
async fn revocation_applies_at_once_even_to_a_caller_served_from_the_caches() {
    let app = TestApp::spawn().await;
    let peer = app.spawn_peer(|s| s).await;
    let (_, owner) = app.tenant("acme").await;
    let agent = app.user("acme");
    register(&app, &agent).await;
    let id = grant(&app, &owner, &agent, "read", 60).await;
    for node in [&app, &peer, &app, &peer] {
        let res = under(node, &agent, &id, Method::GET, "/v1/posts")
            .fetch()
            .await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    let res = app
        .as_user(&owner, Method::DELETE, &format!("/v1/support/grants/{id}"))
        .fetch()
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = under(&app, &agent, &id, Method::GET, "/v1/posts")
        .fetch()
        .await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    eventually("the other node refuses the revoked grant", || async {
        under(&peer, &agent, &id, Method::GET, "/v1/posts")
            .fetch()
            .await
            .status()
            == StatusCode::FORBIDDEN
    })
    .await;
    // A revoked grant cannot be extended back to life.
    let res = app
        .as_user(
            &owner,
            Method::POST,
            &format!("/v1/support/grants/{id}/extend"),
        )
        .json(&json!({"ttl_minutes": 60}))
        .fetch()
        .await;
    assert_problem(res, StatusCode::CONFLICT, "conflict").await;
    let page = assert_json(
        app.as_user(&owner, Method::GET, "/v1/support/grants")
            .fetch()
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(items(&page)[0]["live"], false);
    assert!(items(&page)[0]["revoked_at"].is_string());
}

#[tokio::test]
async fn an_expired_grant_another_tenants_grant_or_someone_elses_grant_lets_no_one_in() {
    let app = TestApp::spawn().await;
    let (_, acme) = app.tenant("acme").await;
    let (_, bravo) = app.tenant("bravo").await;
    let agent = app.user("acme");
    let other_agent = app.user("acme");
    register(&app, &agent).await;
    register(&app, &other_agent).await;

    // Expired: its expiry moved into the past before its first use.
    let expired = grant(&app, &acme, &agent, "read", 60).await;
    app.raw_db()
        .await
        .execute(
            "UPDATE support_grants SET expires_at = now() - interval '1 second' WHERE id = $1",
            &[&Uuid::parse_str(&expired).expect("uuid")],
        )
        .await
        .expect("expire it");
    let res = under(&app, &agent, &expired, Method::GET, "/v1/posts")
        .fetch()
        .await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;

    // acme's grant, used in bravo: refused, as is a grant id that is not one.
    let acme_grant = grant(&app, &acme, &agent, "write", 60).await;
    let in_bravo = agent.in_tenant("bravo");
    for id in [
        acme_grant.as_str(),
        &Uuid::now_v7().to_string(),
        "not-a-grant",
    ] {
        let res = under(&app, &in_bravo, id, Method::GET, "/v1/posts")
            .fetch()
            .await;
        assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    }
    // Another agent holding this agent's grant id: refused.
    let res = under(&app, &other_agent, &acme_grant, Method::GET, "/v1/posts")
        .fetch()
        .await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    // The grant works for its own agent in its own tenant…
    let res = under(&app, &agent, &acme_grant, Method::GET, "/v1/posts")
        .fetch()
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    // …until the agent is no longer one.
    let res = app
        .admin(
            Method::DELETE,
            &format!("/v1/admin/support-agents/{}", agent.id),
        )
        .fetch()
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = under(&app, &agent, &acme_grant, Method::GET, "/v1/posts")
        .fetch()
        .await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    let _ = bravo;
}

#[tokio::test]
async fn grants_are_the_owners_and_admins_to_give_for_at_most_eight_hours() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let member = app.member(&owner, "member").await;
    let admin = app.member(&owner, "admin").await;
    let agent = app.user("acme");
    let stranger = app.user("acme");
    register(&app, &agent).await;

    let ask = |by: &User, body: Value| {
        app.as_user(by, Method::POST, "/v1/support/grants")
            .json(&body)
            .fetch()
    };
    let ok =
        json!({"agent_user_id": agent.id, "scope": "read", "reason": "help", "ttl_minutes": 10});
    assert_problem(
        ask(&member, ok.clone()).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    assert_eq!(ask(&admin, ok.clone()).await.status(), StatusCode::CREATED);

    let mut bad = ok.clone();
    bad["agent_user_id"] = json!(stranger.id);
    assert_eq!(
        invalid_fields(ask(&owner, bad).await).await,
        ["agent_user_id"]
    );
    let bad = json!({"agent_user_id": agent.id, "scope": "admin", "reason": " ",
                     "ttl_minutes": 481});
    assert_eq!(
        invalid_fields(ask(&owner, bad).await).await,
        ["scope", "reason", "ttl_minutes"]
    );
    let bad = json!({"agent_user_id": agent.id, "scope": "read", "ttl_minutes": 10});
    assert_eq!(
        ask(&owner, bad).await.status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );

    // Extended within the cap; refused past it; unknown grants are 404.
    let id = grant(&app, &owner, &agent, "read", 400).await;
    let extend = |minutes: i64, id: String| {
        app.as_user(
            &owner,
            Method::POST,
            &format!("/v1/support/grants/{id}/extend"),
        )
        .json(&json!({"ttl_minutes": minutes}))
        .fetch()
    };
    assert_eq!(
        invalid_fields(extend(100, id.clone()).await).await,
        ["ttl_minutes"]
    );
    let before = assert_json(
        app.as_user(&owner, Method::GET, "/v1/support/grants")
            .fetch()
            .await,
        StatusCode::OK,
    )
    .await;
    let extended = assert_json(extend(60, id.clone()).await, StatusCode::OK).await;
    let was: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(items(&before)[0]["expires_at"].clone()).expect("time");
    let now: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(extended["expires_at"].clone()).expect("time");
    assert_eq!((now - was).num_minutes(), 60);
    assert_eq!(
        extend(60, Uuid::now_v7().to_string()).await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_read_only_transaction_refuses_a_write_whatever_the_code_does() {
    let app = TestApp::spawn().await;
    let (tenant, owner) = app.tenant("acme").await;
    let tenant = Uuid::parse_str(tenant["id"].as_str().expect("id")).expect("uuid");
    let mut tx = app
        .state
        .db
        .begin(&TenantContext::tenant(tenant, 2_000))
        .await
        .expect("begin");
    tx.set_read_only();
    let err = tx
        .execute(
            "INSERT INTO posts (tenant_id, id, author_id, content) VALUES ($1, $2, $3, 'x')",
            &[&tenant, &Uuid::now_v7(), &owner.id],
        )
        .await
        .expect_err("a read-only transaction cannot write");
    assert!(matches!(err, DbError::ReadOnly), "{err:?}");
    drop(tx);
    assert_eq!(app.count("SELECT count(*) FROM posts").await, 0);
}
