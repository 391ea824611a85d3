//! `GET /v1/me/communities` and the cross-community feed.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::events::event;
use crate::helpers::{Fetch as _, TestApp, User, assert_json, assert_problem, ids_of, items};

/// A user-scoped GET (no tenant named).
async fn get(app: &TestApp, user: &User, path: &str) -> reqwest::Response {
    app.request(Method::GET, path)
        .bearer_auth(&user.token)
        .fetch()
        .await
}

/// Walks a user-scoped list to its end; returns every item.
async fn walk(app: &TestApp, user: &User, path: &str, limit: u32) -> Vec<Value> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut url = format!("{path}{sep}limit={limit}");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page = assert_json(get(app, user, &url).await, StatusCode::OK).await;
        all.extend(items(&page).iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return all,
        }
    }
    panic!("the list never ends");
}

/// Three tenants; `reader` is a member of acme and bravo, not of charlie.
/// Each tenant gets posts interleaved in time.
async fn three_tenants(app: &TestApp) -> (User, [User; 3]) {
    let (_, a) = app.tenant("acme").await;
    let (_, b) = app.tenant("bravo").await;
    let (_, c) = app.tenant("charlie").await;
    let reader = app.member(&a, "member").await;
    app.as_user(&b, Method::POST, "/v1/members")
        .json(&json!({"user_id": reader.id, "role": "admin"}))
        .fetch()
        .await;
    for i in 0..4 {
        for owner in [&a, &b, &c] {
            app.post(owner, &format!("{} post {i}", owner.tenant)).await;
        }
    }
    (reader, [a, b, c])
}

#[tokio::test]
async fn my_communities_show_role_and_member_counts_kept_as_members_come_and_go() {
    let app = TestApp::spawn().await;
    let (reader, [a, b, _c]) = three_tenants(&app).await;
    let all = walk(&app, &reader, "/v1/me/communities", 1).await;
    let mut seen: Vec<(String, String, i64)> = all
        .iter()
        .map(|c| {
            (
                c["slug"].as_str().expect("slug").to_owned(),
                c["role"].as_str().expect("role").to_owned(),
                c["member_count"].as_i64().expect("count"),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("acme".to_owned(), "member".to_owned(), 2),
            ("bravo".to_owned(), "admin".to_owned(), 2)
        ]
    );

    // A new member raises the count; a removed one leaves the directory.
    app.member(&a, "member").await;
    let res = app
        .as_user(&b, Method::DELETE, &format!("/v1/members/{}", reader.id))
        .fetch()
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let page = assert_json(
        get(&app, &reader, "/v1/me/communities").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(ids_of(&page, "slug"), ["acme"]);
    assert_eq!(items(&page)[0]["member_count"], 3);

    let res = app.request(Method::GET, "/v1/me/communities").fetch().await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_feed_merges_the_newest_posts_of_the_callers_communities_only() {
    let app = TestApp::spawn().await;
    let (reader, _) = three_tenants(&app).await;
    let all = walk(&app, &reader, "/v1/feed", 3).await;
    let tenants: Vec<&str> = all
        .iter()
        .map(|p| p["tenant_slug"].as_str().expect("slug"))
        .collect();
    assert_eq!(all.len(), 8, "acme's and bravo's 4 posts each");
    assert!(
        tenants.iter().all(|t| *t == "acme" || *t == "bravo"),
        "{tenants:?}"
    );
    // Newest first, one global order across tenants.
    let keys: Vec<(String, String)> = all
        .iter()
        .map(|p| {
            (
                p["created_at"].as_str().expect("at").to_owned(),
                p["id"].as_str().expect("id").to_owned(),
            )
        })
        .collect();
    let mut sorted = keys.clone();
    sorted.sort_by(|x, y| y.cmp(x));
    assert_eq!(keys, sorted);
    assert!(all.iter().all(|p| p["content"].is_string()));

    // A named subset.
    let only = walk(&app, &reader, "/v1/feed?tenants=bravo", 10).await;
    assert_eq!(only.len(), 4);
    assert!(only.iter().all(|p| p["tenant_slug"] == "bravo"));
}

#[tokio::test]
async fn naming_a_tenant_the_caller_does_not_belong_to_answers_404_like_an_unknown_one() {
    let app = TestApp::spawn().await;
    let (reader, _) = three_tenants(&app).await;
    for named in ["charlie", "acme,charlie", "nope", "acme,nope"] {
        let res = get(&app, &reader, &format!("/v1/feed?tenants={named}")).await;
        assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    }
    let res = get(&app, &reader, "/v1/feed?type=videos").await;
    assert_problem(res, StatusCode::BAD_REQUEST, "bad_request").await;
    // A cursor of another user's feed does not work.
    let (other, _) = (app.user("acme"), ());
    let page = assert_json(get(&app, &reader, "/v1/feed?limit=1").await, StatusCode::OK).await;
    let cursor = page["next_cursor"].as_str().expect("cursor");
    let res = get(&app, &other, &format!("/v1/feed?cursor={cursor}")).await;
    assert_problem(res, StatusCode::BAD_REQUEST, "bad_request").await;
}

#[tokio::test]
async fn communities_hidden_from_the_feed_are_left_out_unless_named() {
    let app = TestApp::spawn().await;
    let (reader, _) = three_tenants(&app).await;
    let db = app.raw_db().await;
    db.execute(
        "UPDATE memberships SET display_in_feed = false
         WHERE user_id = $1 AND tenant_id = (SELECT id FROM tenants WHERE slug = 'acme')",
        &[&reader.id],
    )
    .await
    .expect("hide acme");
    let all = walk(&app, &reader, "/v1/feed", 20).await;
    assert_eq!(all.len(), 4);
    assert!(all.iter().all(|p| p["tenant_slug"] == "bravo"));
    let named = walk(&app, &reader, "/v1/feed?tenants=acme", 20).await;
    assert_eq!(named.len(), 4);
}

#[tokio::test]
async fn a_member_removed_from_a_community_no_longer_reads_it_in_the_feed() {
    let app = TestApp::spawn().await;
    let (reader, [a, _b, _c]) = three_tenants(&app).await;
    let res = app
        .as_user(&a, Method::DELETE, &format!("/v1/members/{}", reader.id))
        .fetch()
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let all = walk(&app, &reader, "/v1/feed", 20).await;
    assert!(all.iter().all(|p| p["tenant_slug"] == "bravo"), "{all:?}");
    let res = get(&app, &reader, "/v1/feed?tenants=acme").await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn the_events_feed_lists_upcoming_events_across_communities_soonest_first() {
    let app = TestApp::spawn().await;
    let (reader, [a, b, c]) = three_tenants(&app).await;
    let a2 = event(&app, &a, "acme in 2h", 2).await;
    let b1 = event(&app, &b, "bravo in 1h", 1).await;
    let b3 = event(&app, &b, "bravo in 3h", 3).await;
    let _past = event(&app, &a, "acme past", -1).await;
    let _c = event(&app, &c, "charlie in 1h", 1).await;
    let all = walk(&app, &reader, "/v1/feed?type=events", 2).await;
    let ids: Vec<&str> = all.iter().map(|e| e["id"].as_str().expect("id")).collect();
    assert_eq!(ids, [b1.as_str(), a2.as_str(), b3.as_str()]);
    assert_eq!(all[0]["tenant_slug"], "bravo");
    assert_eq!(all[0]["title"], "bravo in 1h");
}
