//! Posts, likes and comments within one tenant.

use std::collections::HashSet;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{Fetch as _, TestApp, User, assert_json, assert_problem, items};

async fn get_post(app: &TestApp, user: &User, id: &str) -> reqwest::Response {
    app.as_user(user, Method::GET, &format!("/v1/posts/{id}"))
        .fetch()
        .await
}

async fn edit(app: &TestApp, user: &User, id: &str, content: &str) -> reqwest::Response {
    app.as_user(user, Method::PATCH, &format!("/v1/posts/{id}"))
        .json(&json!({"content": content}))
        .fetch()
        .await
}

async fn delete(app: &TestApp, user: &User, id: &str) -> reqwest::Response {
    app.as_user(user, Method::DELETE, &format!("/v1/posts/{id}"))
        .fetch()
        .await
}

async fn like(app: &TestApp, user: &User, id: &str, method: Method) -> Value {
    assert_json(
        app.as_user(user, method, &format!("/v1/posts/{id}/like"))
            .fetch()
            .await,
        StatusCode::OK,
    )
    .await
}

async fn comment(app: &TestApp, user: &User, id: &str, content: &str) -> reqwest::Response {
    app.as_user(user, Method::POST, &format!("/v1/posts/{id}/comments"))
        .json(&json!({"content": content}))
        .fetch()
        .await
}

fn id_of(item: &Value) -> String {
    item["id"].as_str().expect("an id").to_owned()
}

#[tokio::test]
async fn a_post_is_created_read_edited_and_deleted() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let author = app.member(&owner, "member").await;

    let res = app
        .as_user(&author, Method::POST, "/v1/posts")
        .json(&json!({"content": "  Hello, acme!  "}))
        .fetch()
        .await;
    let created = assert_json(res, StatusCode::CREATED).await;
    let id = id_of(&created);
    Uuid::parse_str(&id).expect("the id is a UUID");
    assert_eq!(created["author_id"], author.id.to_string());
    assert_eq!(created["content"], "Hello, acme!");
    assert_eq!(created["like_count"], 0);
    assert_eq!(created["comment_count"], 0);
    chrono::DateTime::parse_from_rfc3339(created["created_at"].as_str().expect("created_at"))
        .expect("RFC 3339");

    let read = assert_json(get_post(&app, &owner, &id).await, StatusCode::OK).await;
    assert_eq!(read, created);

    let edited = assert_json(edit(&app, &author, &id, "Edited").await, StatusCode::OK).await;
    assert_eq!(edited["content"], "Edited");
    assert_eq!(edited["created_at"], created["created_at"]);
    let created_at =
        chrono::DateTime::parse_from_rfc3339(created["updated_at"].as_str().expect("updated_at"))
            .expect("RFC 3339");
    let updated_at =
        chrono::DateTime::parse_from_rfc3339(edited["updated_at"].as_str().expect("updated_at"))
            .expect("RFC 3339");
    assert!(updated_at > created_at, "an edit moves updated_at");
    let read = assert_json(get_post(&app, &author, &id).await, StatusCode::OK).await;
    assert_eq!(read["content"], "Edited");

    assert_eq!(
        delete(&app, &author, &id).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_problem(
        get_post(&app, &author, &id).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn a_deleted_post_is_gone_everywhere() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let kept = app.post(&owner, "kept").await;
    let gone = app.post(&owner, "gone").await;
    assert_eq!(
        delete(&app, &owner, &gone).await.status(),
        StatusCode::NO_CONTENT
    );

    let (_, all) = app.walk(&owner, "/v1/posts", 10).await;
    let ids: Vec<String> = all.iter().map(id_of).collect();
    assert_eq!(ids, [kept]);

    for res in [
        get_post(&app, &owner, &gone).await,
        edit(&app, &owner, &gone, "back").await,
        delete(&app, &owner, &gone).await,
        app.as_user(&owner, Method::POST, &format!("/v1/posts/{gone}/like"))
            .fetch()
            .await,
        app.as_user(&owner, Method::DELETE, &format!("/v1/posts/{gone}/like"))
            .fetch()
            .await,
        comment(&app, &owner, &gone, "hello?").await,
        app.as_user(&owner, Method::GET, &format!("/v1/posts/{gone}/comments"))
            .fetch()
            .await,
    ] {
        assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    }
}

#[tokio::test]
async fn empty_or_whitespace_content_is_refused() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let id = app.post(&owner, "fine").await;
    for content in ["", "   ", "\n\t "] {
        let res = app
            .as_user(&owner, Method::POST, "/v1/posts")
            .json(&json!({"content": content}))
            .fetch()
            .await;
        let body = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert_eq!(body["errors"][0]["field"], "content");
        let res = edit(&app, &owner, &id, content).await;
        assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    }
    let (_, all) = app.walk(&owner, "/v1/posts", 10).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["content"], "fine");
}

#[tokio::test]
async fn content_over_ten_thousand_characters_is_refused() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let res = app
        .as_user(&owner, Method::POST, "/v1/posts")
        .json(&json!({"content": "a".repeat(10_001)}))
        .fetch()
        .await;
    let body = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "content");

    // The limit counts characters, not bytes.
    for content in ["a".repeat(10_000), "é".repeat(10_000)] {
        let res = app
            .as_user(&owner, Method::POST, "/v1/posts")
            .json(&json!({"content": content}))
            .fetch()
            .await;
        assert_json(res, StatusCode::CREATED).await;
    }
    let id = app.post(&owner, "short").await;
    let res = edit(&app, &owner, &id, &"b".repeat(10_001)).await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
}

/// Asserts posts are in strictly descending `(created_at, id)` order.
fn assert_newest_first(posts: &[Value]) {
    let keys: Vec<(chrono::DateTime<chrono::FixedOffset>, String)> = posts
        .iter()
        .map(|p| {
            (
                chrono::DateTime::parse_from_rfc3339(p["created_at"].as_str().expect("at"))
                    .expect("RFC 3339"),
                id_of(p),
            )
        })
        .collect();
    for pair in keys.windows(2) {
        assert!(pair[0] > pair[1], "newest first: {pair:?}");
    }
}

#[tokio::test]
async fn posts_are_listed_newest_first_by_keyset() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let mut created = Vec::new();
    for i in 0..25 {
        created.push(app.post(&owner, &format!("post {i}")).await);
    }

    let (sizes, all) = app.walk(&owner, "/v1/posts", 10).await;
    assert_eq!(sizes, [10, 10, 5]);
    assert_newest_first(&all);
    let ids: Vec<String> = all.iter().map(id_of).collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), 25, "no post listed twice");
    created.reverse();
    assert_eq!(ids, created, "newest first, every post once");
}

#[tokio::test]
async fn a_post_created_between_pages_does_not_shift_them() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    for i in 0..25 {
        app.post(&owner, &format!("post {i}")).await;
    }
    let (_, before) = app.walk(&owner, "/v1/posts", 100).await;
    let before: Vec<String> = before.iter().map(id_of).collect();

    let first = assert_json(
        app.as_user(&owner, Method::GET, "/v1/posts?limit=10")
            .fetch()
            .await,
        StatusCode::OK,
    )
    .await;
    let cursor = first["next_cursor"].as_str().expect("a second page");
    let newcomer = app.post(&owner, "arrived in between").await;
    let second = assert_json(
        app.as_user(
            &owner,
            Method::GET,
            &format!("/v1/posts?limit=10&cursor={cursor}"),
        )
        .fetch()
        .await,
        StatusCode::OK,
    )
    .await;

    let first_ids: Vec<String> = items(&first).iter().map(id_of).collect();
    let second_ids: Vec<String> = items(&second).iter().map(id_of).collect();
    assert_eq!(first_ids, before[..10]);
    assert_eq!(second_ids, before[10..20], "the second page is not shifted");
    assert!(!second_ids.contains(&newcomer));

    let (_, after) = app.walk(&owner, "/v1/posts", 100).await;
    assert_eq!(id_of(&after[0]), newcomer, "the new post is first now");
}

#[tokio::test]
async fn only_the_author_or_a_moderator_may_edit_or_delete() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let author = app.member(&owner, "member").await;
    let other = app.member(&owner, "member").await;
    let moderator = app.member(&owner, "moderator").await;
    let id = app.post(&author, "original").await;

    let res = edit(&app, &other, &id, "vandalised").await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    let res = delete(&app, &other, &id).await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    let read = assert_json(get_post(&app, &other, &id).await, StatusCode::OK).await;
    assert_eq!(read["content"], "original");

    let by_author = assert_json(edit(&app, &author, &id, "by author").await, StatusCode::OK).await;
    assert_eq!(by_author["content"], "by author");
    let by_moderator = assert_json(
        edit(&app, &moderator, &id, "moderated").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(by_moderator["content"], "moderated");
    assert_eq!(
        by_moderator["author_id"],
        author.id.to_string(),
        "the author stays"
    );
    let by_owner = assert_json(edit(&app, &owner, &id, "owned").await, StatusCode::OK).await;
    assert_eq!(by_owner["content"], "owned");

    assert_eq!(
        delete(&app, &moderator, &id).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_problem(
        get_post(&app, &author, &id).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn an_edit_of_a_missing_post_is_404() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let missing = Uuid::now_v7().to_string();
    assert_problem(
        edit(&app, &owner, &missing, "x").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_problem(
        delete(&app, &owner, &missing).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn likes_are_idempotent_per_user() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let fan = app.member(&owner, "member").await;
    let id = app.post(&owner, "likeable").await;

    for _ in 0..2 {
        let state = like(&app, &fan, &id, Method::POST).await;
        assert_eq!(state, json!({"liked": true, "like_count": 1}));
    }
    let post = assert_json(get_post(&app, &owner, &id).await, StatusCode::OK).await;
    assert_eq!(post["like_count"], 1);

    let state = like(&app, &owner, &id, Method::POST).await;
    assert_eq!(state["like_count"], 2, "two users liking count twice");

    for expected in [1, 1] {
        let state = like(&app, &fan, &id, Method::DELETE).await;
        assert_eq!(state, json!({"liked": false, "like_count": expected}));
    }
    for _ in 0..2 {
        let state = like(&app, &owner, &id, Method::DELETE).await;
        assert_eq!(state["like_count"], 0);
    }
    let post = assert_json(get_post(&app, &owner, &id).await, StatusCode::OK).await;
    assert_eq!(post["like_count"], 0);
}

#[tokio::test]
async fn concurrent_likes_are_all_counted() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let id = app.post(&owner, "popular").await;
    let mut fans = Vec::new();
    for _ in 0..8 {
        fans.push(app.member(&owner, "member").await);
    }
    let likes = fans.iter().map(|fan| like(&app, fan, &id, Method::POST));
    futures::future::join_all(likes).await;
    let post = assert_json(get_post(&app, &owner, &id).await, StatusCode::OK).await;
    assert_eq!(post["like_count"], 8);
}

#[tokio::test]
async fn liking_a_missing_post_is_404() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let missing = Uuid::now_v7();
    for method in [Method::POST, Method::DELETE] {
        let res = app
            .as_user(&owner, method, &format!("/v1/posts/{missing}/like"))
            .fetch()
            .await;
        assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    }
}

#[tokio::test]
async fn comments_are_created_and_listed_oldest_first() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let member = app.member(&owner, "member").await;
    let id = app.post(&owner, "discuss").await;

    let mut created = Vec::new();
    for i in 0..5 {
        let author = if i % 2 == 0 { &member } else { &owner };
        let res = comment(&app, author, &id, &format!("  comment {i} ")).await;
        let c = assert_json(res, StatusCode::CREATED).await;
        assert_eq!(c["post_id"], id);
        assert_eq!(c["author_id"], author.id.to_string());
        assert_eq!(c["content"], format!("comment {i}"));
        created.push(id_of(&c));
    }

    let post = assert_json(get_post(&app, &owner, &id).await, StatusCode::OK).await;
    assert_eq!(post["comment_count"], 5);

    let (sizes, all) = app
        .walk(&member, &format!("/v1/posts/{id}/comments"), 2)
        .await;
    assert_eq!(sizes, [2, 2, 1]);
    let ids: Vec<String> = all.iter().map(id_of).collect();
    assert_eq!(ids, created, "oldest first, each once");
    let contents: Vec<&str> = all
        .iter()
        .map(|c| c["content"].as_str().expect("content"))
        .collect();
    assert_eq!(
        contents,
        [
            "comment 0",
            "comment 1",
            "comment 2",
            "comment 3",
            "comment 4"
        ]
    );
}

#[tokio::test]
async fn comments_on_other_posts_are_not_listed() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let first = app.post(&owner, "first").await;
    let second = app.post(&owner, "second").await;
    assert_json(
        comment(&app, &owner, &first, "on first").await,
        StatusCode::CREATED,
    )
    .await;
    let (_, all) = app
        .walk(&owner, &format!("/v1/posts/{second}/comments"), 10)
        .await;
    assert!(all.is_empty());
    let post = assert_json(get_post(&app, &owner, &second).await, StatusCode::OK).await;
    assert_eq!(post["comment_count"], 0);
}

#[tokio::test]
async fn commenting_on_a_missing_post_is_404() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let missing = Uuid::now_v7().to_string();
    assert_problem(
        comment(&app, &owner, &missing, "anyone?").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let res = app
        .as_user(
            &owner,
            Method::GET,
            &format!("/v1/posts/{missing}/comments"),
        )
        .fetch()
        .await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn bad_comments_are_refused() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let id = app.post(&owner, "discuss").await;
    for content in ["".to_owned(), "  ".to_owned(), "c".repeat(5_001)] {
        let res = comment(&app, &owner, &id, &content).await;
        let body = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert_eq!(body["errors"][0]["field"], "content");
    }
    let post = assert_json(get_post(&app, &owner, &id).await, StatusCode::OK).await;
    assert_eq!(post["comment_count"], 0, "refused comments are not counted");
}

async fn set_limits(app: &TestApp, tenant: &Value, limits: Value) {
    let res = app
        .admin(
            Method::PATCH,
            &format!("/v1/admin/tenants/{}", tenant["id"].as_str().expect("id")),
        )
        .json(&json!({ "limits": limits }))
        .fetch()
        .await;
    assert_json(res, StatusCode::OK).await;
}

#[tokio::test]
async fn the_post_quota_refuses_posts_beyond_it_and_deleting_frees_a_slot() {
    let app = TestApp::spawn().await;
    let (t, owner) = app.tenant("acme").await;
    set_limits(&app, &t, json!({"max_posts": 2})).await;
    let first = app.post(&owner, "one").await;
    app.post(&owner, "two").await;
    let res = app
        .as_user(&owner, Method::POST, "/v1/posts")
        .json(&json!({"content": "three"}))
        .fetch()
        .await;
    assert_problem(res, StatusCode::FORBIDDEN, "quota_exceeded").await;
    let (_, all) = app.walk(&owner, "/v1/posts", 10).await;
    assert_eq!(all.len(), 2, "nothing was written");

    assert_eq!(
        delete(&app, &owner, &first).await.status(),
        StatusCode::NO_CONTENT
    );
    app.post(&owner, "three").await;
}

#[tokio::test]
async fn storage_usage_matches_the_stored_posts_after_edits_and_deletes() {
    let app = TestApp::spawn().await;
    let (t, owner) = app.tenant("acme").await;
    let id = app.post(&owner, "x").await;
    let gone = app.post(&owner, "to be deleted").await;
    assert_json(
        edit(&app, &owner, &id, "é longer now").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        delete(&app, &owner, &gone).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_usage_matches(&app, &t).await;
}

#[tokio::test]
async fn storage_usage_matches_the_stored_posts_after_concurrent_edits() {
    let app = TestApp::spawn().await;
    let (t, owner) = app.tenant("acme").await;
    let id = app.post(&owner, "x").await;
    let edits = (1..=40).map(|n| {
        let content = "y".repeat(n * 10);
        let (app, owner, id) = (&app, &owner, &id);
        async move {
            let res = edit(app, owner, id, &content).await;
            assert_eq!(res.status(), StatusCode::OK);
        }
    });
    futures::future::join_all(edits).await;
    assert_usage_matches(&app, &t).await;
}

/// The tenant's counted posts and bytes equal what its live posts hold.
async fn assert_usage_matches(app: &TestApp, tenant: &Value) {
    let id = Uuid::parse_str(tenant["id"].as_str().expect("id")).expect("uuid");
    let db = app.raw_db().await;
    let row = db
        .query_one(
            "SELECT t.post_count, t.storage_bytes,
                    (SELECT count(*) FROM posts p WHERE p.tenant_id = t.id AND p.deleted_at IS NULL),
                    (SELECT coalesce(sum(octet_length(p.content)), 0)::bigint FROM posts p
                     WHERE p.tenant_id = t.id AND p.deleted_at IS NULL)
             FROM tenants t WHERE t.id = $1",
            &[&id],
        )
        .await
        .expect("usage");
    let (posts, bytes, real_posts, real_bytes): (i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(posts, real_posts, "post_count");
    assert_eq!(bytes, real_bytes, "storage_bytes");
}
