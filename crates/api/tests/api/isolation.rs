//! Tenant isolation: another tenant's objects are answered like missing ones,
//! non-members are refused, lists and cursors stay within their tenant, and
//! requests name exactly one tenant.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{Fetch as _, TestApp, User, assert_json, assert_problem, ids_of};

/// Two tenants, `acme` (A) and `bravo` (B), each with an owner, a plain
/// member and three posts.
struct World {
    a_owner: User,
    a_member: User,
    a_posts: Vec<String>,
    b_owner: User,
    b_member: User,
    b_posts: Vec<String>,
}

async fn world(app: &TestApp) -> World {
    let (_, a_owner) = app.tenant("acme").await;
    let (_, b_owner) = app.tenant("bravo").await;
    let a_member = app.member(&a_owner, "member").await;
    let b_member = app.member(&b_owner, "member").await;
    let mut a_posts = Vec::new();
    let mut b_posts = Vec::new();
    for i in 0..3 {
        a_posts.push(app.post(&a_member, &format!("acme post {i}")).await);
        b_posts.push(app.post(&b_member, &format!("bravo post {i}")).await);
    }
    World {
        a_owner,
        a_member,
        a_posts,
        b_owner,
        b_member,
        b_posts,
    }
}

/// Every request that addresses one post, with the body it needs.
fn post_requests(id: &str) -> Vec<(Method, String, Option<Value>)> {
    let edit = Some(json!({"content": "hijacked"}));
    vec![
        (Method::GET, format!("/v1/posts/{id}"), None),
        (Method::PATCH, format!("/v1/posts/{id}"), edit.clone()),
        (Method::DELETE, format!("/v1/posts/{id}"), None),
        (Method::POST, format!("/v1/posts/{id}/like"), None),
        (Method::DELETE, format!("/v1/posts/{id}/like"), None),
        (Method::POST, format!("/v1/posts/{id}/comments"), edit),
        (Method::GET, format!("/v1/posts/{id}/comments"), None),
    ]
}

async fn send(
    app: &TestApp,
    user: &User,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> reqwest::Response {
    let mut req = app.as_user(user, method, path);
    if let Some(body) = body {
        req = req.json(body);
    }
    req.fetch().await
}

/// The parts of a problem that must not tell "another tenant's" from
/// "missing".
fn comparable(problem: &Value) -> Value {
    json!({
        "type": problem["type"],
        "title": problem["title"],
        "status": problem["status"],
        "detail": problem["detail"],
        "code": problem["code"],
        "errors": problem.get("errors"),
    })
}

#[tokio::test]
async fn another_tenants_post_is_answered_exactly_like_a_missing_one() {
    let app = TestApp::spawn().await;
    let w = world(&app).await;
    let theirs = &w.a_posts[0];
    let missing = Uuid::now_v7().to_string();

    for user in [&w.b_owner, &w.b_member] {
        let probes = post_requests(theirs)
            .into_iter()
            .zip(post_requests(&missing));
        for ((method, path, body), (_, missing_path, _)) in probes {
            let res = send(&app, user, method.clone(), &path, body.as_ref()).await;
            let other = assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
            let res = send(&app, user, method.clone(), &missing_path, body.as_ref()).await;
            let absent = assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
            assert_eq!(
                comparable(&other),
                comparable(&absent),
                "{method} {path} must not tell another tenant's post from a missing one"
            );
        }
    }

    // And nothing happened to it.
    let post = assert_json(
        app.as_user(&w.a_member, Method::GET, &format!("/v1/posts/{theirs}"))
            .fetch()
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(post["content"], "acme post 0");
    assert_eq!(post["like_count"], 0);
    assert_eq!(post["comment_count"], 0);
    assert_eq!(post["created_at"], post["updated_at"]);
    let comments = assert_json(
        app.as_user(
            &w.a_member,
            Method::GET,
            &format!("/v1/posts/{theirs}/comments"),
        )
        .fetch()
        .await,
        StatusCode::OK,
    )
    .await;
    assert!(comments["items"].as_array().expect("items").is_empty());

    let db = app.raw_db().await;
    let post_id = Uuid::parse_str(theirs).expect("uuid");
    for sql in [
        "SELECT count(*) FROM post_likes WHERE post_id = $1",
        "SELECT count(*) FROM comments WHERE post_id = $1",
    ] {
        let n: i64 = db.query_one(sql, &[&post_id]).await.expect("count").get(0);
        assert_eq!(n, 0, "{sql}");
    }
}

#[tokio::test]
async fn a_user_in_both_tenants_reaches_a_post_only_through_its_own_tenant() {
    let app = TestApp::spawn().await;
    let w = world(&app).await;
    // A's member also joins B.
    let res = app
        .as_user(&w.b_owner, Method::POST, "/v1/members")
        .json(&json!({"user_id": w.a_member.id, "role": "owner"}))
        .fetch()
        .await;
    assert_json(res, StatusCode::CREATED).await;
    let in_b = w.a_member.in_tenant("bravo");
    let theirs = &w.a_posts[0];

    let res = app
        .as_user(&in_b, Method::GET, &format!("/v1/posts/{theirs}"))
        .fetch()
        .await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    // Even as an owner of B, editing or deleting A's post through B finds nothing.
    let res = app
        .as_user(&in_b, Method::DELETE, &format!("/v1/posts/{theirs}"))
        .fetch()
        .await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    let res = app
        .as_user(&w.a_member, Method::GET, &format!("/v1/posts/{theirs}"))
        .fetch()
        .await;
    assert_json(res, StatusCode::OK).await;
    let res = app
        .as_user(
            &w.a_member,
            Method::GET,
            &format!("/v1/posts/{}", w.b_posts[0]),
        )
        .fetch()
        .await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn a_member_of_another_tenant_is_answered_like_a_missing_member() {
    let app = TestApp::spawn().await;
    let w = world(&app).await;
    let missing = Uuid::now_v7();
    for (method, body) in [
        (Method::PATCH, Some(json!({"role": "member"}))),
        (Method::DELETE, None),
    ] {
        let res = send(
            &app,
            &w.b_owner,
            method.clone(),
            &format!("/v1/members/{}", w.a_owner.id),
            body.as_ref(),
        )
        .await;
        let other = assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
        let res = send(
            &app,
            &w.b_owner,
            method.clone(),
            &format!("/v1/members/{missing}"),
            body.as_ref(),
        )
        .await;
        let absent = assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
        assert_eq!(comparable(&other), comparable(&absent), "{method}");
    }
    let view = app.tenant_view(&w.a_owner).await;
    assert_eq!(
        view["membership"]["role"], "owner",
        "A's owner is untouched"
    );
}

#[tokio::test]
async fn a_non_member_is_forbidden_on_every_member_route() {
    let app = TestApp::spawn().await;
    let w = world(&app).await;
    let outsider = w.b_member.in_tenant("acme");
    let post = &w.a_posts[0];
    let mut requests = post_requests(post);
    requests.extend([
        (Method::GET, "/v1/posts".to_owned(), None),
        (
            Method::POST,
            "/v1/posts".to_owned(),
            Some(json!({"content": "let me in"})),
        ),
        (Method::GET, "/v1/members".to_owned(), None),
        (
            Method::POST,
            "/v1/members".to_owned(),
            Some(json!({"user_id": outsider.id, "role": "owner"})),
        ),
        (
            Method::PATCH,
            format!("/v1/members/{}", w.a_owner.id),
            Some(json!({"role": "member"})),
        ),
        (
            Method::DELETE,
            format!("/v1/members/{}", w.a_member.id),
            None,
        ),
        (Method::DELETE, format!("/v1/members/{}", outsider.id), None),
    ]);
    for (method, path, body) in requests {
        let res = send(&app, &outsider, method.clone(), &path, body.as_ref()).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{method} {path}");
        assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    }

    // Nothing changed in A.
    let view = app.tenant_view(&w.a_owner).await;
    assert_eq!(view["membership"]["role"], "owner");
    let a = app
        .admin_tenant(view["tenant"]["id"].as_str().expect("id"))
        .await;
    assert_eq!(a["member_count"], 2);
    let (_, posts) = app.walk(&w.a_owner, "/v1/posts", 100).await;
    assert_eq!(posts.len(), 3);
    assert!(
        posts
            .iter()
            .all(|p| p["like_count"] == 0 && p["comment_count"] == 0)
    );
}

#[tokio::test]
async fn a_non_member_sees_the_tenant_summary_without_a_membership() {
    let app = TestApp::spawn().await;
    let w = world(&app).await;
    let outsider = w.b_member.in_tenant("acme");
    let view = app.tenant_view(&outsider).await;
    assert_eq!(view["tenant"]["slug"], "acme");
    assert_eq!(view["membership"], Value::Null);
    let mine = app.tenant_view(&w.a_member).await;
    assert_eq!(mine["membership"]["role"], "member");
    assert_eq!(mine["tenant"]["id"], view["tenant"]["id"]);
}

#[tokio::test]
async fn a_non_member_may_join_only_an_open_tenant() {
    let app = TestApp::spawn().await;
    let w = world(&app).await;
    let res = app
        .as_user(
            &w.b_member.in_tenant("acme"),
            Method::POST,
            "/v1/members/me",
        )
        .fetch()
        .await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;

    app.tenant_with("club", json!({"join_policy": "open"}))
        .await;
    let joiner = w.b_member.in_tenant("club");
    let res = app
        .as_user(&joiner, Method::POST, "/v1/members/me")
        .fetch()
        .await;
    let member = assert_json(res, StatusCode::CREATED).await;
    assert_eq!(member["role"], "member");
    assert_eq!(member["user_id"], joiner.id.to_string());
    assert_json(
        app.as_user(&joiner, Method::GET, "/v1/posts").fetch().await,
        StatusCode::OK,
    )
    .await;
}

#[tokio::test]
async fn lists_never_include_another_tenants_posts() {
    let app = TestApp::spawn().await;
    let w = world(&app).await;
    for (user, own, other) in [
        (&w.a_owner, &w.a_posts, &w.b_posts),
        (&w.b_owner, &w.b_posts, &w.a_posts),
    ] {
        let (_, items) = app.walk(user, "/v1/posts", 2).await;
        let mut ids: Vec<String> = items
            .iter()
            .map(|p| p["id"].as_str().expect("id").to_owned())
            .collect();
        ids.sort();
        let mut expected = own.clone();
        expected.sort();
        assert_eq!(ids, expected);
        assert!(ids.iter().all(|id| !other.contains(id)));
    }
}

#[tokio::test]
async fn member_lists_never_include_another_tenants_members() {
    let app = TestApp::spawn().await;
    let w = world(&app).await;
    let page = assert_json(
        app.as_user(&w.a_owner, Method::GET, "/v1/members")
            .fetch()
            .await,
        StatusCode::OK,
    )
    .await;
    let mut ids = ids_of(&page, "user_id");
    ids.sort();
    let mut expected = vec![w.a_owner.id.to_string(), w.a_member.id.to_string()];
    expected.sort();
    assert_eq!(ids, expected);
}

#[tokio::test]
async fn a_cursor_from_one_tenant_is_refused_by_another() {
    let app = TestApp::spawn().await;
    let w = world(&app).await;
    let page = assert_json(
        app.as_user(&w.a_owner, Method::GET, "/v1/posts?limit=1")
            .fetch()
            .await,
        StatusCode::OK,
    )
    .await;
    let cursor = page["next_cursor"].as_str().expect("a next page");
    let res = app
        .as_user(
            &w.b_owner,
            Method::GET,
            &format!("/v1/posts?cursor={cursor}"),
        )
        .fetch()
        .await;
    assert_problem(res, StatusCode::BAD_REQUEST, "bad_request").await;

    let page = assert_json(
        app.as_user(&w.a_owner, Method::GET, "/v1/members?limit=1")
            .fetch()
            .await,
        StatusCode::OK,
    )
    .await;
    let cursor = page["next_cursor"].as_str().expect("a next page");
    let res = app
        .as_user(
            &w.b_owner,
            Method::GET,
            &format!("/v1/members?cursor={cursor}"),
        )
        .fetch()
        .await;
    assert_problem(res, StatusCode::BAD_REQUEST, "bad_request").await;
}

// --- Tenant resolution -----------------------------------------------------

#[tokio::test]
async fn the_tenant_query_parameter_names_a_tenant() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let res = app
        .request(Method::GET, "/v1/tenant?tenant=acme")
        .bearer_auth(&owner.token)
        .fetch()
        .await;
    let view = assert_json(res, StatusCode::OK).await;
    assert_eq!(view["tenant"]["slug"], "acme");
    assert_eq!(view["membership"]["role"], "owner");
}

#[tokio::test]
async fn header_and_query_naming_different_tenants_is_a_bad_request() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    app.tenant("bravo").await;
    let res = app
        .as_user(&owner, Method::GET, "/v1/tenant?tenant=bravo")
        .fetch()
        .await;
    assert_problem(res, StatusCode::BAD_REQUEST, "bad_request").await;
    let res = app
        .as_user(&owner, Method::GET, "/v1/posts?limit=5&tenant=bravo")
        .fetch()
        .await;
    assert_problem(res, StatusCode::BAD_REQUEST, "bad_request").await;

    let res = app
        .as_user(&owner, Method::GET, "/v1/tenant?tenant=acme")
        .fetch()
        .await;
    assert_json(res, StatusCode::OK).await;
}

#[tokio::test]
async fn an_unknown_tenant_is_404() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    for tenant in ["nosuchtenant", "NOPE", "admin", "a"] {
        let res = app
            .as_user(&owner.in_tenant(tenant), Method::GET, "/v1/tenant")
            .fetch()
            .await;
        assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    }
    let res = app
        .request(Method::GET, "/v1/posts?tenant=nosuchtenant")
        .bearer_auth(&owner.token)
        .fetch()
        .await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn a_request_naming_no_tenant_is_a_bad_request() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    for path in ["/v1/tenant", "/v1/posts"] {
        let res = app
            .request(Method::GET, path)
            .bearer_auth(&owner.token)
            .fetch()
            .await;
        assert_problem(res, StatusCode::BAD_REQUEST, "bad_request").await;
    }
}

#[tokio::test]
async fn a_suspended_tenant_is_refused_until_reactivated() {
    let app = TestApp::spawn().await;
    let (t, owner) = app.tenant("acme").await;
    let id = t["id"].as_str().expect("id");
    let post = app.post(&owner, "still here").await;

    let res = app
        .admin(Method::PATCH, &format!("/v1/admin/tenants/{id}"))
        .json(&json!({"status": "suspended"}))
        .fetch()
        .await;
    assert_json(res, StatusCode::OK).await;
    for path in ["/v1/tenant", "/v1/posts", &format!("/v1/posts/{post}")] {
        let res = app.as_user(&owner, Method::GET, path).fetch().await;
        assert_problem(res, StatusCode::FORBIDDEN, "tenant_suspended").await;
    }
    let res = app
        .as_user(&owner, Method::POST, "/v1/posts")
        .json(&json!({"content": "no"}))
        .fetch()
        .await;
    assert_problem(res, StatusCode::FORBIDDEN, "tenant_suspended").await;

    let res = app
        .admin(Method::PATCH, &format!("/v1/admin/tenants/{id}"))
        .json(&json!({"status": "active"}))
        .fetch()
        .await;
    assert_json(res, StatusCode::OK).await;
    let got = assert_json(
        app.as_user(&owner, Method::GET, &format!("/v1/posts/{post}"))
            .fetch()
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(got["content"], "still here");
}

#[tokio::test]
async fn a_custom_domain_in_host_names_its_tenant() {
    let app = TestApp::spawn().await;
    let (_, owner) = app
        .tenant_with("acme", json!({"domain": "club.acme.test"}))
        .await;
    for host in ["club.acme.test", "Club.Acme.Test:8443", "club.acme.test."] {
        let res = app
            .request(Method::GET, "/v1/tenant")
            .header("host", host)
            .bearer_auth(&owner.token)
            .fetch()
            .await;
        let view = assert_json(res, StatusCode::OK).await;
        assert_eq!(view["tenant"]["slug"], "acme", "Host: {host}");
        assert_eq!(view["tenant"]["domain"], "club.acme.test");
        assert_eq!(view["membership"]["role"], "owner");
    }
}

#[tokio::test]
async fn a_custom_domain_and_another_signal_must_agree() {
    let app = TestApp::spawn().await;
    let (_, owner) = app
        .tenant_with("acme", json!({"domain": "club.acme.test"}))
        .await;
    app.tenant("bravo").await;
    let res = app
        .as_user(&owner.in_tenant("bravo"), Method::GET, "/v1/tenant")
        .header("host", "club.acme.test")
        .fetch()
        .await;
    assert_problem(res, StatusCode::BAD_REQUEST, "bad_request").await;
    let res = app
        .request(Method::GET, "/v1/tenant?tenant=bravo")
        .header("host", "club.acme.test")
        .bearer_auth(&owner.token)
        .fetch()
        .await;
    assert_problem(res, StatusCode::BAD_REQUEST, "bad_request").await;
    let res = app
        .as_user(&owner, Method::GET, "/v1/tenant")
        .header("host", "club.acme.test")
        .fetch()
        .await;
    assert_json(res, StatusCode::OK).await;
}

#[tokio::test]
async fn a_removed_or_moved_domain_stops_naming_its_tenant_at_once() {
    let app = TestApp::spawn().await;
    let (t, owner) = app
        .tenant_with("acme", json!({"domain": "club.acme.test"}))
        .await;
    let id = t["id"].as_str().expect("id");
    let via = |host: &'static str| {
        app.request(Method::GET, "/v1/tenant")
            .header("host", host)
            .bearer_auth(&owner.token)
            .fetch()
    };
    assert_json(via("club.acme.test").await, StatusCode::OK).await;

    let res = app
        .admin(Method::PATCH, &format!("/v1/admin/tenants/{id}"))
        .json(&json!({"domain": "new.acme.test"}))
        .fetch()
        .await;
    assert_json(res, StatusCode::OK).await;
    assert_problem(
        via("club.acme.test").await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;
    let view = assert_json(via("new.acme.test").await, StatusCode::OK).await;
    assert_eq!(view["tenant"]["domain"], "new.acme.test");

    let res = app
        .admin(Method::PATCH, &format!("/v1/admin/tenants/{id}"))
        .json(&json!({"domain": null}))
        .fetch()
        .await;
    assert_json(res, StatusCode::OK).await;
    assert_problem(
        via("new.acme.test").await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;
}

#[tokio::test]
async fn a_domain_set_after_a_request_missed_it_names_its_tenant_at_once() {
    let app = TestApp::spawn().await;
    let (t, owner) = app.tenant("acme").await;
    let id = t["id"].as_str().expect("id");
    let via = || {
        app.request(Method::GET, "/v1/tenant")
            .header("host", "club.acme.test")
            .bearer_auth(&owner.token)
            .fetch()
    };
    // The registry remembers that no tenant has this domain...
    assert_problem(via().await, StatusCode::BAD_REQUEST, "bad_request").await;
    let res = app
        .admin(Method::PATCH, &format!("/v1/admin/tenants/{id}"))
        .json(&json!({"domain": "club.acme.test"}))
        .fetch()
        .await;
    assert_json(res, StatusCode::OK).await;
    // ...and must forget it when a tenant takes the domain.
    let view = assert_json(via().await, StatusCode::OK).await;
    assert_eq!(view["tenant"]["slug"], "acme");
}

#[tokio::test]
async fn a_subdomain_of_the_base_domain_names_its_tenant() {
    let app = TestApp::spawn_with(|base| *base = Some("example.test".into())).await;
    let (_, owner) = app.tenant("acme").await;
    app.tenant("bravo").await;
    let via = |host: &'static str| {
        app.request(Method::GET, "/v1/tenant")
            .header("host", host)
            .bearer_auth(&owner.token)
    };
    for host in ["acme.example.test", "ACME.Example.Test:443"] {
        let view = assert_json(via(host).fetch().await, StatusCode::OK).await;
        assert_eq!(view["tenant"]["slug"], "acme", "Host: {host}");
        assert_eq!(view["membership"]["role"], "owner");
    }
    assert_problem(
        via("nosuch.example.test").fetch().await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_problem(
        via("acme.example.test")
            .header("x-tenant", "bravo")
            .fetch()
            .await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;
    assert_json(
        via("acme.example.test")
            .header("x-tenant", "acme")
            .fetch()
            .await,
        StatusCode::OK,
    )
    .await;
    // Deeper names and the base domain itself name no tenant.
    for host in ["a.acme.example.test", "example.test"] {
        assert_problem(
            via(host).fetch().await,
            StatusCode::BAD_REQUEST,
            "bad_request",
        )
        .await;
    }
}

#[tokio::test]
async fn without_a_base_domain_subdomains_name_no_tenant() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let res = app
        .request(Method::GET, "/v1/tenant")
        .header("host", "acme.example.test")
        .bearer_auth(&owner.token)
        .fetch()
        .await;
    assert_problem(res, StatusCode::BAD_REQUEST, "bad_request").await;
}

// --- Shared resources --------------------------------------------------------

#[tokio::test]
async fn slow_uploads_do_not_hold_the_tenants_database_share() {
    use tokio::io::AsyncWriteExt as _;

    let app = TestApp::spawn().await;
    let (t, owner) = app.tenant("acme").await;
    let uploader = app.member(&owner, "member").await;
    let share = t["effective_limits"]["db_concurrency"]
        .as_u64()
        .expect("db_concurrency");

    // As many uploads as the tenant has database slots, each sending its
    // headers and then only the start of its body.
    let mut uploads = Vec::new();
    for _ in 0..share {
        let mut stream = tokio::net::TcpStream::connect(app.addr)
            .await
            .expect("connect");
        let head = format!(
            "POST /v1/posts HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
             X-Tenant: acme\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n\
             {{\"content\": \"",
            uploader.token
        );
        stream.write_all(head.as_bytes()).await.expect("write");
        uploads.push(stream);
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let started = std::time::Instant::now();
    let res = app.as_user(&owner, Method::GET, "/v1/posts").fetch().await;
    assert_json(res, StatusCode::OK).await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "waited {:?} behind slow uploads",
        started.elapsed()
    );
    drop(uploads);
}
