//! Members and roles: who may add, promote, demote and remove whom.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{Fetch as _, TestApp, User, assert_json, assert_problem, ids_of};

async fn add(app: &TestApp, actor: &User, user: Uuid, role: &str) -> reqwest::Response {
    app.as_user(actor, Method::POST, "/v1/members")
        .json(&json!({"user_id": user, "role": role}))
        .fetch()
        .await
}

async fn change_role(app: &TestApp, actor: &User, target: &User, role: &str) -> reqwest::Response {
    app.as_user(actor, Method::PATCH, &format!("/v1/members/{}", target.id))
        .json(&json!({"role": role}))
        .fetch()
        .await
}

async fn remove(app: &TestApp, actor: &User, target: &User) -> reqwest::Response {
    app.as_user(actor, Method::DELETE, &format!("/v1/members/{}", target.id))
        .fetch()
        .await
}

async fn role_of(app: &TestApp, user: &User) -> Value {
    app.tenant_view(user).await["membership"]["role"].clone()
}

#[tokio::test]
async fn an_admin_adds_a_member_and_a_second_add_is_a_conflict() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let admin = app.member(&owner, "admin").await;
    let newcomer = app.user("acme");

    let member = assert_json(
        add(&app, &admin, newcomer.id, "moderator").await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(member["user_id"], newcomer.id.to_string());
    assert_eq!(member["role"], "moderator");
    assert!(member["joined_at"].is_string());
    assert_eq!(role_of(&app, &newcomer).await, "moderator");

    let res = add(&app, &admin, newcomer.id, "member").await;
    assert_problem(res, StatusCode::CONFLICT, "conflict").await;
    assert_eq!(role_of(&app, &newcomer).await, "moderator", "unchanged");
}

#[tokio::test]
async fn members_and_moderators_cannot_add_members() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    for role in ["member", "moderator"] {
        let actor = app.member(&owner, role).await;
        let res = add(&app, &actor, Uuid::now_v7(), "member").await;
        assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    }
}

#[tokio::test]
async fn an_admin_cannot_grant_owner_but_an_owner_can() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let admin = app.member(&owner, "admin").await;
    let res = add(&app, &admin, Uuid::now_v7(), "owner").await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;

    let res = add(&app, &admin, Uuid::now_v7(), "admin").await;
    assert_json(res, StatusCode::CREATED).await;
    let res = add(&app, &owner, Uuid::now_v7(), "owner").await;
    assert_json(res, StatusCode::CREATED).await;
}

#[tokio::test]
async fn an_unknown_role_is_refused() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    for role in ["superuser", "Owner", ""] {
        let res = add(&app, &owner, Uuid::now_v7(), role).await;
        let body = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert_eq!(body["errors"][0]["field"], "role");
    }
    let member = app.member(&owner, "member").await;
    let res = change_role(&app, &owner, &member, "boss").await;
    let body = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "role");
}

#[tokio::test]
async fn anyone_may_join_an_open_tenant_once() {
    let app = TestApp::spawn().await;
    app.tenant_with("club", json!({"join_policy": "open"}))
        .await;
    let joiner = app.user("club");
    let member = assert_json(
        app.as_user(&joiner, Method::POST, "/v1/members/me")
            .fetch()
            .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(member["role"], "member");
    assert_eq!(role_of(&app, &joiner).await, "member");

    let res = app
        .as_user(&joiner, Method::POST, "/v1/members/me")
        .fetch()
        .await;
    assert_problem(res, StatusCode::CONFLICT, "conflict").await;
}

#[tokio::test]
async fn an_invite_only_tenant_cannot_be_joined() {
    let app = TestApp::spawn().await;
    app.tenant("acme").await;
    let stranger = app.user("acme");
    let res = app
        .as_user(&stranger, Method::POST, "/v1/members/me")
        .fetch()
        .await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    assert_eq!(app.tenant_view(&stranger).await["membership"], Value::Null);
}

#[tokio::test]
async fn a_member_joining_again_is_a_conflict() {
    let app = TestApp::spawn().await;
    let (_, owner) = app
        .tenant_with("club", json!({"join_policy": "open"}))
        .await;
    let res = app
        .as_user(&owner, Method::POST, "/v1/members/me")
        .fetch()
        .await;
    assert_problem(res, StatusCode::CONFLICT, "conflict").await;
    assert_eq!(
        role_of(&app, &owner).await,
        "owner",
        "not demoted to member"
    );
}

#[tokio::test]
async fn members_are_listed_by_keyset_each_exactly_once() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let mut expected = vec![owner.id.to_string()];
    for role in ["admin", "moderator", "member", "member"] {
        expected.push(app.member(&owner, role).await.id.to_string());
    }
    let plain = app.member(&owner, "member").await;
    expected.push(plain.id.to_string());
    let res = remove(&app, &owner, &plain).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    expected.pop();

    let (sizes, all) = app.walk(&owner, "/v1/members", 2).await;
    assert_eq!(sizes, [2, 2, 1]);
    let ids: Vec<String> = all
        .iter()
        .map(|m| m["user_id"].as_str().expect("user_id").to_owned())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "listed in user id order");
    expected.sort();
    assert_eq!(sorted, expected, "every member once, the removed one gone");
    let roles: Vec<&str> = all
        .iter()
        .map(|m| m["role"].as_str().expect("role"))
        .collect();
    assert_eq!(roles.iter().filter(|r| **r == "owner").count(), 1);

    // Any member may read the list.
    let member = app.member(&owner, "member").await;
    let page = assert_json(
        app.as_user(&member, Method::GET, "/v1/members?limit=100")
            .fetch()
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(ids_of(&page, "user_id").len(), 6);
    assert_eq!(page["next_cursor"], Value::Null);
}

#[tokio::test]
async fn an_admin_changes_lower_roles_but_not_another_admin() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let admin = app.member(&owner, "admin").await;
    let other_admin = app.member(&owner, "admin").await;
    let member = app.member(&owner, "member").await;

    let changed = assert_json(
        change_role(&app, &admin, &member, "moderator").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(changed["role"], "moderator");
    assert_eq!(role_of(&app, &member).await, "moderator");

    let res = change_role(&app, &admin, &other_admin, "member").await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    let res = change_role(&app, &admin, &member, "owner").await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    let res = change_role(&app, &admin, &owner, "member").await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    assert_eq!(role_of(&app, &other_admin).await, "admin");
    assert_eq!(role_of(&app, &owner).await, "owner");
}

#[tokio::test]
async fn an_owner_changes_any_role() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let admin = app.member(&owner, "admin").await;
    let member = app.member(&owner, "member").await;
    let res = change_role(&app, &owner, &admin, "member").await;
    assert_eq!(assert_json(res, StatusCode::OK).await["role"], "member");
    let res = change_role(&app, &owner, &member, "owner").await;
    assert_eq!(assert_json(res, StatusCode::OK).await["role"], "owner");
    assert_eq!(role_of(&app, &member).await, "owner");
}

#[tokio::test]
async fn moderators_and_members_change_no_roles() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let moderator = app.member(&owner, "moderator").await;
    let member = app.member(&owner, "member").await;
    let res = change_role(&app, &moderator, &member, "moderator").await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    let res = change_role(&app, &member, &member, "admin").await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    assert_eq!(role_of(&app, &member).await, "member");
}

#[tokio::test]
async fn the_last_owner_can_neither_step_down_nor_leave() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let res = change_role(&app, &owner, &owner, "admin").await;
    assert_problem(res, StatusCode::CONFLICT, "conflict").await;
    let res = remove(&app, &owner, &owner).await;
    assert_problem(res, StatusCode::CONFLICT, "conflict").await;
    assert_eq!(role_of(&app, &owner).await, "owner");

    // With a second owner, both work.
    let second = app.member(&owner, "owner").await;
    let res = change_role(&app, &owner, &owner, "admin").await;
    assert_eq!(assert_json(res, StatusCode::OK).await["role"], "admin");
    let res = change_role(&app, &second, &owner, "owner").await;
    assert_json(res, StatusCode::OK).await;
    let res = remove(&app, &owner, &owner).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.tenant_view(&owner).await["membership"], Value::Null);
    // Now `second` is the last owner again.
    let res = remove(&app, &second, &second).await;
    assert_problem(res, StatusCode::CONFLICT, "conflict").await;
}

#[tokio::test]
async fn an_owner_may_remove_another_owner() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let second = app.member(&owner, "owner").await;
    let res = remove(&app, &owner, &second).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.tenant_view(&second).await["membership"], Value::Null);
}

#[tokio::test]
async fn a_member_may_leave() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    for role in ["member", "moderator", "admin"] {
        let member = app.member(&owner, role).await;
        let res = remove(&app, &member, &member).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT, "a {role} leaves");
        assert_eq!(app.tenant_view(&member).await["membership"], Value::Null);
        let res = app.as_user(&member, Method::GET, "/v1/posts").fetch().await;
        assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    }
}

#[tokio::test]
async fn only_higher_roles_remove_members() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let admin = app.member(&owner, "admin").await;
    let other_admin = app.member(&owner, "admin").await;
    let moderator = app.member(&owner, "moderator").await;
    let member = app.member(&owner, "member").await;

    for (actor, target) in [
        (&member, &moderator),
        (&moderator, &member),
        (&admin, &other_admin),
        (&admin, &owner),
    ] {
        let res = remove(&app, actor, target).await;
        assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    }
    let res = remove(&app, &admin, &moderator).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = remove(&app, &owner, &other_admin).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(role_of(&app, &member).await, "member");
}

#[tokio::test]
async fn changing_or_removing_a_non_member_is_404() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let stranger = app.user("acme");
    let res = remove(&app, &owner, &stranger).await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    let res = change_role(&app, &owner, &stranger, "member").await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;

    let member = app.member(&owner, "member").await;
    assert_eq!(
        remove(&app, &owner, &member).await.status(),
        StatusCode::NO_CONTENT
    );
    let res = remove(&app, &owner, &member).await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn the_admin_member_count_follows_adds_and_removals() {
    let app = TestApp::spawn().await;
    let (t, owner) = app.tenant("acme").await;
    let id = t["id"].as_str().expect("id");
    let count = || async { app.admin_tenant(id).await["member_count"].clone() };
    assert_eq!(count().await, 1);
    let a = app.member(&owner, "member").await;
    let b = app.member(&owner, "member").await;
    assert_eq!(count().await, 3);
    assert_eq!(
        remove(&app, &owner, &a).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(remove(&app, &b, &b).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(count().await, 1);
    // Failed adds and removals count nothing.
    add(&app, &owner, owner.id, "member").await;
    remove(&app, &owner, &a).await;
    assert_eq!(count().await, 1);
}

#[tokio::test]
async fn the_member_count_in_get_tenant_follows_adds_and_removals() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let count = || async { app.tenant_view(&owner).await["tenant"]["member_count"].clone() };
    assert_eq!(count().await, 1);
    let member = app.member(&owner, "member").await;
    assert_eq!(count().await, 2, "after an add");
    app.tenant_with("club", json!({"join_policy": "open"}))
        .await;
    let joiner = app.user("club");
    app.as_user(&joiner, Method::POST, "/v1/members/me")
        .fetch()
        .await;
    let club = app.tenant_view(&joiner).await;
    assert_eq!(club["tenant"]["member_count"], 2, "after a join");
    assert_eq!(
        remove(&app, &owner, &member).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(count().await, 1, "after a removal");
}

#[tokio::test]
async fn the_member_quota_refuses_members_beyond_it() {
    let app = TestApp::spawn().await;
    let (t, owner) = app
        .tenant_with("club", json!({"join_policy": "open"}))
        .await;
    let res = app
        .admin(
            Method::PATCH,
            &format!("/v1/admin/tenants/{}", t["id"].as_str().expect("id")),
        )
        .json(&json!({"limits": {"max_members": 2}}))
        .fetch()
        .await;
    assert_json(res, StatusCode::OK).await;
    let second = app.member(&owner, "member").await;
    let res = add(&app, &owner, Uuid::now_v7(), "member").await;
    assert_problem(res, StatusCode::FORBIDDEN, "quota_exceeded").await;
    let joiner = app.user("club");
    let res = app
        .as_user(&joiner, Method::POST, "/v1/members/me")
        .fetch()
        .await;
    assert_problem(res, StatusCode::FORBIDDEN, "quota_exceeded").await;

    assert_eq!(
        remove(&app, &second, &second).await.status(),
        StatusCode::NO_CONTENT
    );
    let res = app
        .as_user(&joiner, Method::POST, "/v1/members/me")
        .fetch()
        .await;
    assert_json(res, StatusCode::CREATED).await;
}
