//! The platform admin API: creating, listing, changing and deleting tenants.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{
    Fetch as _, TestApp, assert_json, assert_problem, assert_unauthenticated, eventually,
    invalid_fields, items,
};

fn new_tenant(slug: &str) -> Value {
    json!({"slug": slug, "name": format!("Tenant {slug}"), "owner_user_id": Uuid::now_v7()})
}

async fn create(app: &TestApp, body: &Value) -> reqwest::Response {
    app.admin(Method::POST, "/v1/admin/tenants")
        .json(body)
        .fetch()
        .await
}

async fn patch(app: &TestApp, id: &str, body: Value) -> reqwest::Response {
    app.admin(Method::PATCH, &format!("/v1/admin/tenants/{id}"))
        .json(&body)
        .fetch()
        .await
}

#[tokio::test]
async fn creating_a_tenant_answers_201_with_all_its_fields() {
    let app = TestApp::spawn().await;
    let owner = Uuid::now_v7();
    let res = create(
        &app,
        &json!({
            "slug": "acme",
            "name": "  Acme Corp  ",
            "tier": "pro",
            "domain": "Community.Acme.ORG",
            "owner_user_id": owner,
            "settings": {"theme": "dark"},
            "features": {"events": true},
            "join_policy": "open",
        }),
    )
    .await;
    let t = assert_json(res, StatusCode::CREATED).await;

    Uuid::parse_str(t["id"].as_str().expect("id")).expect("the id is a UUID");
    assert_eq!(t["slug"], "acme");
    assert_eq!(t["name"], "Acme Corp", "the name is trimmed");
    assert_eq!(t["tier"], "pro");
    assert_eq!(
        t["domain"], "community.acme.org",
        "the domain is normalised"
    );
    assert_eq!(t["status"], "active");
    assert_eq!(t["join_policy"], "open");
    assert_eq!(t["owner_user_id"], owner.to_string());
    assert_eq!(t["settings"], json!({"theme": "dark"}));
    assert_eq!(t["features"], json!({"events": true}));
    assert_eq!(t["limits"], json!({}));
    assert!(
        t["effective_limits"]["rate_per_sec"]
            .as_u64()
            .expect("a rate")
            > 0
    );
    assert_eq!(t["member_count"], 1, "the owner is the first member");
    for field in ["created_at", "updated_at"] {
        let at = t[field].as_str().expect("a timestamp");
        chrono::DateTime::parse_from_rfc3339(at).expect("an RFC 3339 timestamp");
        assert!(at.ends_with('Z'), "{field} is UTC: {at}");
    }
}

#[tokio::test]
async fn a_new_tenant_gets_the_default_tier_invite_policy_and_empty_settings() {
    let app = TestApp::spawn().await;
    let t = assert_json(
        create(&app, &new_tenant("plain")).await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(t["tier"], "free");
    assert_eq!(t["join_policy"], "invite");
    assert_eq!(t["domain"], Value::Null);
    assert_eq!(t["settings"], json!({}));
    assert_eq!(t["features"], json!({}));
}

#[tokio::test]
async fn the_owner_of_a_new_tenant_is_its_owner_member() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let view = app.tenant_view(&owner).await;
    assert_eq!(view["membership"]["role"], "owner");
}

#[tokio::test]
async fn a_duplicate_slug_is_a_conflict() {
    let app = TestApp::spawn().await;
    app.tenant("acme").await;
    let res = create(&app, &new_tenant("acme")).await;
    assert_problem(res, StatusCode::CONFLICT, "conflict").await;
}

#[tokio::test]
async fn a_duplicate_domain_is_a_conflict() {
    let app = TestApp::spawn().await;
    app.tenant_with("acme", json!({"domain": "club.example.org"}))
        .await;
    let mut body = new_tenant("other");
    body["domain"] = json!("CLUB.example.org");
    let res = create(&app, &body).await;
    assert_problem(res, StatusCode::CONFLICT, "conflict").await;
}

#[tokio::test]
async fn bad_slugs_are_refused_naming_the_slug_field() {
    let app = TestApp::spawn().await;
    let too_long = "a".repeat(64);
    for slug in [
        "Acme", "admin", "www", "ab", "ac--me", "acme-", "1acme", "ac_me", "", &too_long,
    ] {
        let fields = invalid_fields(create(&app, &new_tenant(slug)).await).await;
        assert_eq!(fields, ["slug"], "slug {slug:?}");
    }
}

#[tokio::test]
async fn an_unknown_tier_is_refused_naming_the_tier_field() {
    let app = TestApp::spawn().await;
    let mut body = new_tenant("acme");
    body["tier"] = json!("platinum");
    assert_eq!(invalid_fields(create(&app, &body).await).await, ["tier"]);
}

#[tokio::test]
async fn a_bad_domain_is_refused_naming_the_domain_field() {
    let app = TestApp::spawn().await;
    for domain in [
        "localhost",
        "not a domain.com",
        "a..b",
        "-a.example.com",
        "x.com:80",
    ] {
        let mut body = new_tenant("acme");
        body["domain"] = json!(domain);
        let fields = invalid_fields(create(&app, &body).await).await;
        assert_eq!(fields, ["domain"], "domain {domain:?}");
    }
}

#[tokio::test]
async fn a_bad_join_policy_or_non_object_settings_are_refused() {
    let app = TestApp::spawn().await;
    let mut body = new_tenant("acme");
    body["join_policy"] = json!("anyone");
    assert_eq!(
        invalid_fields(create(&app, &body).await).await,
        ["join_policy"]
    );
    let mut body = new_tenant("acme");
    body["settings"] = json!([1, 2]);
    assert_eq!(
        invalid_fields(create(&app, &body).await).await,
        ["settings"]
    );
}

#[tokio::test]
async fn several_invalid_fields_are_reported_at_once() {
    let app = TestApp::spawn().await;
    let body = json!({
        "slug": "Bad Slug",
        "name": "   ",
        "tier": "gold",
        "domain": "nope",
        "owner_user_id": Uuid::now_v7(),
    });
    let mut fields = invalid_fields(create(&app, &body).await).await;
    fields.sort();
    assert_eq!(fields, ["domain", "name", "slug", "tier"]);
}

#[tokio::test]
async fn an_unknown_body_field_is_refused() {
    let app = TestApp::spawn().await;
    let mut body = new_tenant("acme");
    body["colour"] = json!("blue");
    let res = create(&app, &body).await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
}

#[tokio::test]
async fn a_missing_owner_is_refused() {
    let app = TestApp::spawn().await;
    let res = create(&app, &json!({"slug": "acme", "name": "Acme"})).await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
}

#[tokio::test]
async fn tenants_are_listed_by_keyset_each_exactly_once() {
    let app = TestApp::spawn().await;
    let mut created = Vec::new();
    for slug in ["one", "two", "three", "four", "five"] {
        let (t, _) = app.tenant(slug).await;
        created.push(t["id"].as_str().expect("id").to_owned());
    }

    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut path = "/v1/admin/tenants?limit=2".to_owned();
    loop {
        let page = assert_json(app.admin(Method::GET, &path).fetch().await, StatusCode::OK).await;
        sizes.push(items(&page).len());
        for t in items(&page) {
            seen.push(t["id"].as_str().expect("id").to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/admin/tenants?limit=2&cursor={cursor}"),
            None => {
                assert_eq!(page["next_cursor"], Value::Null);
                break;
            }
        }
    }
    assert_eq!(sizes, [2, 2, 1]);
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "listed in id order");
    sorted.dedup();
    assert_eq!(sorted.len(), 5, "no tenant listed twice");
    created.sort();
    assert_eq!(sorted, created, "every tenant listed");
}

#[tokio::test]
async fn the_tenant_list_refuses_bad_limits_and_cursors() {
    let app = TestApp::spawn().await;
    for query in ["limit=0", "limit=101", "limit=x", "cursor=garbage"] {
        let res = app
            .admin(Method::GET, &format!("/v1/admin/tenants?{query}"))
            .fetch()
            .await;
        assert_problem(res, StatusCode::BAD_REQUEST, "bad_request").await;
    }
}

#[tokio::test]
async fn a_tenant_reads_back_as_created() {
    let app = TestApp::spawn().await;
    let (created, _) = app.tenant("acme").await;
    let read = app.admin_tenant(created["id"].as_str().expect("id")).await;
    assert_eq!(read, created);
}

#[tokio::test]
async fn an_unknown_or_malformed_tenant_id_is_404() {
    let app = TestApp::spawn().await;
    for path in [
        format!("/v1/admin/tenants/{}", Uuid::now_v7()),
        "/v1/admin/tenants/not-a-uuid".to_owned(),
    ] {
        let res = app.admin(Method::GET, &path).fetch().await;
        assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    }
}

#[tokio::test]
async fn patch_changes_name_tier_and_status() {
    let app = TestApp::spawn().await;
    let (t, _) = app.tenant("acme").await;
    let id = t["id"].as_str().expect("id");
    let free_rate = t["effective_limits"]["rate_per_sec"].clone();

    let changed = assert_json(
        patch(&app, id, json!({"name": "Acme Two", "tier": "pro"})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(changed["name"], "Acme Two");
    assert_eq!(changed["tier"], "pro");
    assert_ne!(
        changed["effective_limits"]["rate_per_sec"], free_rate,
        "the pro tier's limits apply"
    );

    let suspended = assert_json(
        patch(&app, id, json!({"status": "suspended"})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(suspended["status"], "suspended");
    assert_eq!(app.admin_tenant(id).await["status"], "suspended");

    let active = assert_json(
        patch(&app, id, json!({"status": "active"})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(active["status"], "active");
    assert_eq!(
        active["name"], "Acme Two",
        "fields not named stay as they were"
    );
}

#[tokio::test]
async fn patch_refuses_status_deleted_and_bad_values() {
    let app = TestApp::spawn().await;
    let (t, _) = app.tenant("acme").await;
    let id = t["id"].as_str().expect("id");
    let fields = invalid_fields(patch(&app, id, json!({"status": "deleted"})).await).await;
    assert_eq!(fields, ["status"]);
    let fields = invalid_fields(patch(&app, id, json!({"tier": "gold"})).await).await;
    assert_eq!(fields, ["tier"]);
    let fields = invalid_fields(patch(&app, id, json!({"name": ""})).await).await;
    assert_eq!(fields, ["name"]);
    let res = patch(&app, id, json!({"slug": "renamed"})).await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
}

#[tokio::test]
async fn patch_sets_and_removes_the_domain() {
    let app = TestApp::spawn().await;
    let (t, _) = app.tenant("acme").await;
    let id = t["id"].as_str().expect("id");

    let set = assert_json(
        patch(&app, id, json!({"domain": "Club.Example.org"})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(set["domain"], "club.example.org");

    let untouched = assert_json(
        patch(&app, id, json!({"name": "Acme"})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        untouched["domain"], "club.example.org",
        "an absent domain leaves it"
    );

    let removed = assert_json(
        patch(&app, id, json!({"domain": null})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(removed["domain"], Value::Null);

    let fields = invalid_fields(patch(&app, id, json!({"domain": "nope"})).await).await;
    assert_eq!(fields, ["domain"]);
}

#[tokio::test]
async fn patch_to_a_domain_another_tenant_uses_is_a_conflict() {
    let app = TestApp::spawn().await;
    app.tenant_with("acme", json!({"domain": "club.example.org"}))
        .await;
    let (other, _) = app.tenant("other").await;
    let res = patch(
        &app,
        other["id"].as_str().expect("id"),
        json!({"domain": "club.example.org"}),
    )
    .await;
    assert_problem(res, StatusCode::CONFLICT, "conflict").await;
}

#[tokio::test]
async fn patch_merges_settings_and_null_removes_a_key() {
    let app = TestApp::spawn().await;
    let (t, _) = app
        .tenant_with("acme", json!({"settings": {"theme": "dark", "lang": "en"}}))
        .await;
    let id = t["id"].as_str().expect("id");
    let changed = assert_json(
        patch(
            &app,
            id,
            json!({"settings": {"lang": null, "motd": "hello"}}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        changed["settings"],
        json!({"theme": "dark", "motd": "hello"})
    );
    assert_eq!(app.admin_tenant(id).await["settings"], changed["settings"]);
}

#[tokio::test]
async fn patch_merges_features_too() {
    let app = TestApp::spawn().await;
    let (t, _) = app
        .tenant_with(
            "acme",
            json!({"features": {"events": true, "search": true}}),
        )
        .await;
    let id = t["id"].as_str().expect("id");
    let changed = assert_json(
        patch(
            &app,
            id,
            json!({"features": {"search": null, "journeys": false}}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        changed["features"],
        json!({"events": true, "journeys": false})
    );
}

#[tokio::test]
async fn limit_overrides_show_in_the_effective_limits() {
    let app = TestApp::spawn().await;
    let (t, _) = app.tenant("acme").await;
    let id = t["id"].as_str().expect("id");
    let tier_burst = t["effective_limits"]["burst"].clone();

    let changed = assert_json(
        patch(&app, id, json!({"limits": {"rate_per_sec": 7}})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(changed["limits"], json!({"rate_per_sec": 7}));
    assert_eq!(changed["effective_limits"]["rate_per_sec"], 7);
    assert_eq!(
        changed["effective_limits"]["burst"], tier_burst,
        "limits not overridden keep the tier's value"
    );

    let dropped = assert_json(
        patch(&app, id, json!({"limits": {"rate_per_sec": null}})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(dropped["limits"], json!({}));
    assert_eq!(
        dropped["effective_limits"]["rate_per_sec"],
        t["effective_limits"]["rate_per_sec"]
    );
}

#[tokio::test]
async fn unknown_or_invalid_limit_overrides_are_refused() {
    let app = TestApp::spawn().await;
    let (t, _) = app.tenant("acme").await;
    let id = t["id"].as_str().expect("id");
    for limits in [
        json!({"rate_per_second": 7}),
        json!({"rate_per_sec": 0}),
        json!({"rate_per_sec": -1}),
        json!({"rate_per_sec": "fast"}),
        json!([7]),
    ] {
        let fields = invalid_fields(patch(&app, id, json!({"limits": limits})).await).await;
        assert_eq!(fields, ["limits"], "limits {limits}");
    }
    assert_eq!(app.admin_tenant(id).await["limits"], json!({}));
}

#[tokio::test]
async fn patching_an_unknown_tenant_is_404() {
    let app = TestApp::spawn().await;
    let res = patch(&app, &Uuid::now_v7().to_string(), json!({"name": "x"})).await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn a_deleted_tenant_is_gone_at_once_and_its_slug_is_free_again() {
    let app = TestApp::spawn().await;
    let (t, owner) = app.tenant("acme").await;
    let id = t["id"].as_str().expect("id");
    app.post(&owner, "soon gone").await;

    let res = app
        .admin(Method::DELETE, &format!("/v1/admin/tenants/{id}"))
        .fetch()
        .await;
    let body = assert_json(res, StatusCode::ACCEPTED).await;
    assert_eq!(body["id"], id);

    let res = app
        .admin(Method::GET, &format!("/v1/admin/tenants/{id}"))
        .fetch()
        .await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    let res = app.as_user(&owner, Method::GET, "/v1/posts").fetch().await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    let res = app
        .admin(Method::DELETE, &format!("/v1/admin/tenants/{id}"))
        .fetch()
        .await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    let list = assert_json(
        app.admin(Method::GET, "/v1/admin/tenants").fetch().await,
        StatusCode::OK,
    )
    .await;
    assert!(items(&list).is_empty(), "a deleted tenant is not listed");

    let (again, new_owner) = app.tenant("acme").await;
    assert_ne!(again["id"], t["id"]);
    let posts = assert_json(
        app.as_user(&new_owner, Method::GET, "/v1/posts")
            .fetch()
            .await,
        StatusCode::OK,
    )
    .await;
    assert!(items(&posts).is_empty(), "the new tenant starts empty");
    let res = app.as_user(&owner, Method::GET, "/v1/posts").fetch().await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
}

#[tokio::test]
async fn the_purge_worker_removes_a_deleted_tenants_rows() {
    let app = TestApp::spawn().await;
    let (t, owner) = app.tenant("acme").await;
    let (kept, kept_owner) = app.tenant("kept").await;
    let post = app.post(&owner, "to be purged").await;
    app.as_user(&owner, Method::POST, &format!("/v1/posts/{post}/like"))
        .fetch()
        .await;
    app.as_user(&owner, Method::POST, &format!("/v1/posts/{post}/comments"))
        .json(&json!({"content": "a comment"}))
        .fetch()
        .await;
    let soon = (chrono::Utc::now() + chrono::Duration::days(3)).to_rfc3339();
    let res = app
        .as_user(&owner, Method::POST, "/v1/events")
        .json(&json!({"title": "a meetup", "start_date": soon}))
        .fetch()
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let journey: serde_json::Value = app
        .as_user(&owner, Method::POST, "/v1/journeys")
        .json(&json!({"title": "a trip"}))
        .fetch()
        .await
        .json()
        .await
        .expect("journey");
    let res = app
        .as_user(
            &owner,
            Method::POST,
            &format!(
                "/v1/journeys/{}/activities",
                journey["id"].as_str().expect("id")
            ),
        )
        .json(&json!({"title": "a walk", "start_datetime": soon}))
        .fetch()
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = app
        .as_user(&owner, Method::POST, "/v1/analytics/events")
        .json(&json!({"events": [{"type": "page_view"}]}))
        .fetch()
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    app.post(&kept_owner, "stays").await;
    let id = Uuid::parse_str(t["id"].as_str().expect("id")).expect("uuid");
    let kept_id = Uuid::parse_str(kept["id"].as_str().expect("id")).expect("uuid");

    let res = app
        .admin(Method::DELETE, &format!("/v1/admin/tenants/{id}"))
        .fetch()
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);

    let db = app.raw_db().await;
    let count = |sql: &'static str, tenant: Uuid| {
        let db = &db;
        async move {
            let row = db.query_one(sql, &[&tenant]).await.expect("count");
            row.get::<_, i64>(0)
        }
    };
    eventually("the deleted tenant's rows are purged", || async {
        count("SELECT count(*) FROM tenants WHERE id = $1", id).await == 0
    })
    .await;
    // Every table with a tenant_id column (partitioned tables through their
    // parent), so a table added later cannot be forgotten by the purge.
    let tables: Vec<String> = db
        .query(
            "SELECT c.relname::text FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
               JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id'
              WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')
                AND NOT c.relispartition",
            &[],
        )
        .await
        .expect("tables")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(tables.len() >= 10, "found the tenant tables: {tables:?}");
    for table in &tables {
        let row = db
            .query_one(
                &format!("SELECT count(*) FROM {table} WHERE tenant_id = $1"),
                &[&id],
            )
            .await
            .expect("count");
        assert_eq!(
            row.get::<_, i64>(0),
            0,
            "{table} still holds the tenant's rows"
        );
    }
    assert_eq!(
        count("SELECT count(*) FROM posts WHERE tenant_id = $1", kept_id).await,
        1,
        "other tenants keep their rows"
    );
}

#[tokio::test]
async fn admin_endpoints_need_the_admin_token() {
    let app = TestApp::spawn().await;
    let (t, _) = app.tenant("acme").await;
    let id = t["id"].as_str().expect("id");
    let paths = [
        (Method::GET, "/v1/admin/tenants".to_owned()),
        (Method::POST, "/v1/admin/tenants".to_owned()),
        (Method::GET, format!("/v1/admin/tenants/{id}")),
        (Method::PATCH, format!("/v1/admin/tenants/{id}")),
        (Method::DELETE, format!("/v1/admin/tenants/{id}")),
    ];
    for (method, path) in &paths {
        let res = app
            .request(method.clone(), path)
            .json(&json!({"name": "x"}))
            .fetch()
            .await;
        assert_unauthenticated(res).await;
        let res = app
            .request(method.clone(), path)
            .bearer_auth("test-admin-token-0123456788")
            .json(&json!({"name": "x"}))
            .fetch()
            .await;
        assert_unauthenticated(res).await;
    }
    assert_eq!(
        app.admin_tenant(id).await["name"],
        "Tenant acme",
        "unchanged"
    );
}

#[tokio::test]
async fn a_user_jwt_is_not_an_admin_token() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let res = app
        .request(Method::GET, "/v1/admin/tenants")
        .bearer_auth(&owner.token)
        .fetch()
        .await;
    assert_unauthenticated(res).await;
    let res = app
        .request(Method::POST, "/v1/admin/tenants")
        .bearer_auth(&owner.token)
        .json(&new_tenant("mine"))
        .fetch()
        .await;
    assert_unauthenticated(res).await;
}

#[tokio::test]
async fn the_admin_token_is_not_a_user_token() {
    let app = TestApp::spawn().await;
    app.tenant("acme").await;
    let res = app
        .admin(Method::GET, "/v1/posts")
        .header("x-tenant", "acme")
        .fetch()
        .await;
    assert_unauthenticated(res).await;
}

#[tokio::test]
async fn patching_one_setting_leaves_the_others_exactly_as_they_were() {
    let app = TestApp::spawn().await;
    let settings = json!({"theme": {"accent": null, "font": "serif"}, "tags": [null, 1]});
    let (t, _) = app
        .tenant_with("acme", json!({ "settings": settings }))
        .await;
    assert_eq!(t["settings"], settings);
    let id = t["id"].as_str().expect("id");
    let changed = assert_json(
        patch(&app, id, json!({"settings": {"motd": "hi"}})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        changed["settings"],
        json!({"theme": {"accent": null, "font": "serif"}, "tags": [null, 1], "motd": "hi"})
    );
}
