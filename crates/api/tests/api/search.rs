//! `GET /v1/search`: full-text search over a tenant's posts and events.

use reqwest::{Method, StatusCode};

use crate::events::event;
use crate::helpers::{Fetch as _, TestApp, User, assert_json, assert_problem, items};

async fn search(app: &TestApp, user: &User, q: &str) -> reqwest::Response {
    app.as_user(user, Method::GET, "/v1/search")
        .query(&[("q", q)])
        .fetch()
        .await
}

#[tokio::test]
async fn search_finds_posts_and_events_best_first_and_pages_by_rank() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let strong = app
        .post(
            &owner,
            "Climbing climbing climbing: the climbing wall reopens",
        )
        .await;
    let weak = app
        .post(
            &owner,
            "Lunch, then some climbing, then a long walk home through the park",
        )
        .await;
    app.post(&owner, "Nothing to see here").await;
    let ev = event(&app, &owner, "Climbing meetup", 24).await;

    let page = assert_json(search(&app, &owner, "climbing").await, StatusCode::OK).await;
    let hits = items(&page);
    assert_eq!(hits.len(), 3);
    assert_eq!(hits[0]["id"], strong.as_str());
    let ranks: Vec<f64> = hits
        .iter()
        .map(|h| h["rank"].as_f64().expect("rank"))
        .collect();
    assert!(ranks.windows(2).all(|w| w[0] >= w[1]), "{ranks:?}");
    assert!(
        hits.iter()
            .any(|h| h["type"] == "event" && h["id"] == ev.as_str())
    );
    assert!(
        hits.iter()
            .any(|h| h["type"] == "post" && h["id"] == weak.as_str())
    );

    // Page by page (limit 1), the same hits in the same order.
    let (sizes, all) = app.walk(&owner, "/v1/search?q=climbing", 1).await;
    assert_eq!(sizes, [1, 1, 1]);
    let walked: Vec<&serde_json::Value> = all.iter().map(|h| &h["id"]).collect();
    let first: Vec<&serde_json::Value> = hits.iter().map(|h| &h["id"]).collect();
    assert_eq!(walked, first);

    // Stemming: "climbs" finds them too; a phrase and exclusion work.
    let page = assert_json(search(&app, &owner, "climbs").await, StatusCode::OK).await;
    assert_eq!(items(&page).len(), 3);
    let page = assert_json(
        search(&app, &owner, "climbing -lunch").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(items(&page).len(), 2);
}

#[tokio::test]
async fn any_query_string_is_safe_and_a_blank_one_is_422() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    app.post(&owner, "O'Brien's route: 5.12a & (hard)").await;
    for q in [
        "\"unterminated",
        "a & b | !c <-> d",
        "'; DROP TABLE posts; --",
        "(((",
        ":*",
        "the",
        "O'Brien",
        "日本語 テスト",
        "-",
        "or or or",
    ] {
        let res = search(&app, &owner, q).await;
        assert_eq!(res.status(), StatusCode::OK, "q = {q:?}");
    }
    let page = assert_json(search(&app, &owner, "O'Brien").await, StatusCode::OK).await;
    assert_eq!(items(&page).len(), 1);
    for q in ["", "   "] {
        let res = search(&app, &owner, q).await;
        assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    }
    let res = app.as_user(&owner, Method::GET, "/v1/search").fetch().await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let long = "x".repeat(501);
    let res = search(&app, &owner, &long).await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let res = search(&app, &owner, "nul\0byte").await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
}

#[tokio::test]
async fn search_never_shows_another_tenants_content() {
    let app = TestApp::spawn().await;
    let (_, a) = app.tenant("acme").await;
    let (_, b) = app.tenant("bravo").await;
    app.post(&a, "secret bouldering spot").await;
    event(&app, &a, "secret bouldering session", 24).await;
    let mine = app.post(&b, "bouldering gym review").await;
    let page = assert_json(search(&app, &b, "bouldering").await, StatusCode::OK).await;
    let hits = items(&page);
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0]["id"], mine.as_str());
    let page = assert_json(search(&app, &b, "secret").await, StatusCode::OK).await;
    assert!(items(&page).is_empty());
    // A cursor of acme's search does not work in bravo.
    app.post(&a, "secret two").await;
    let page = assert_json(
        app.as_user(&a, Method::GET, "/v1/search?q=secret&limit=1")
            .fetch()
            .await,
        StatusCode::OK,
    )
    .await;
    let cursor = page["next_cursor"].as_str().expect("cursor");
    let res = app
        .as_user(
            &b,
            Method::GET,
            &format!("/v1/search?q=secret&cursor={cursor}"),
        )
        .fetch()
        .await;
    assert_problem(res, StatusCode::BAD_REQUEST, "bad_request").await;
    // Non-members: 403.
    let stranger = app.user("acme");
    let res = search(&app, &stranger, "secret").await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
}

#[tokio::test]
async fn a_word_in_hundreds_of_posts_pages_every_match_once_best_first() {
    let app = TestApp::spawn().await;
    let (t, owner) = app.tenant("acme").await;
    // 300 posts with "rope" and one saying it three times: it ranks first,
    // and paging by (rank, id) through many equal ranks finds every match
    // exactly once.
    let db = app.raw_db().await;
    let tenant = uuid::Uuid::parse_str(t["id"].as_str().expect("id")).expect("uuid");
    db.execute(
        "INSERT INTO posts (tenant_id, id, author_id, content, created_at)
         SELECT $1, gen_random_uuid(), $2, 'a rope number ' || n, now() - (n || ' s')::interval
         FROM generate_series(1, 300) n",
        &[&tenant, &owner.id],
    )
    .await
    .expect("posts");
    let best = app.post(&owner, "rope rope rope").await;
    let page = assert_json(search(&app, &owner, "rope").await, StatusCode::OK).await;
    assert_eq!(items(&page)[0]["id"], best.as_str());
    let (sizes, all) = app.walk(&owner, "/v1/search?q=rope", 100).await;
    assert_eq!(sizes, [100, 100, 100, 1]);
    let mut ids: Vec<&str> = all.iter().map(|h| h["id"].as_str().expect("id")).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 301, "every match once across the pages");
}

#[tokio::test]
async fn a_large_community_ranks_common_words_in_its_newest_posts_and_rare_ones_everywhere() {
    let app = TestApp::spawn().await;
    let (a, owner_a) = app.tenant("acme").await;
    let (_, owner_b) = app.tenant("bravo").await;
    let db = app.raw_db().await;
    let acme = uuid::Uuid::parse_str(a["id"].as_str().expect("id")).expect("uuid");
    let window = tenantry_db::search::WINDOW;
    // acme: WINDOW + 100 posts saying "rope", one a minute, and an older
    // one that says it three times (it would rank first) next to a rare
    // word.
    db.execute(
        "INSERT INTO posts (tenant_id, id, author_id, content, created_at)
         SELECT $1, gen_random_uuid(), $2, 'a rope number ' || n, now() - (n || ' minutes')::interval
         FROM generate_series(1, $3::int + 100) n",
        &[&acme, &owner_a.id, &(window as i32)],
    )
    .await
    .expect("posts");
    let old: uuid::Uuid = db
        .query_one(
            "INSERT INTO posts (tenant_id, id, author_id, content, created_at)
             VALUES ($1, gen_random_uuid(), $2, 'rope rope rope by the glacier', now() - interval '30 days')
             RETURNING id",
            &[&acme, &owner_a.id],
        )
        .await
        .expect("the old post")
        .get(0);
    // bravo: the same words, ranked higher than anything in acme.
    let theirs = app
        .post(&owner_b, "rope rope rope rope: glacier glacier glacier")
        .await;

    // A common word: the best of acme's newest WINDOW posts, every one of
    // them exactly once across the pages, none of bravo's, and not the old
    // post (the documented bound).
    let (_, all) = app.walk(&owner_a, "/v1/search?q=rope", 100).await;
    let mut ids: Vec<&str> = all.iter().map(|h| h["id"].as_str().expect("id")).collect();
    assert_eq!(ids.len(), window as usize);
    assert!(!ids.contains(&theirs.as_str()));
    assert!(!ids.contains(&old.to_string().as_str()));
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), window as usize, "every hit once");

    // A rare word (or a rare combination) is found however old its post.
    for q in ["glacier", "rope glacier"] {
        let page = assert_json(search(&app, &owner_a, q).await, StatusCode::OK).await;
        let hits = items(&page);
        assert_eq!(hits.len(), 1, "{q}: {page:#}");
        assert_eq!(hits[0]["id"], old.to_string().as_str());
    }
    // And bravo sees only its own, whichever way its query is answered.
    for q in ["glacier", "rope", "rope glacier"] {
        let page = assert_json(search(&app, &owner_b, q).await, StatusCode::OK).await;
        let hits = items(&page);
        assert_eq!(hits.len(), 1, "{q}: {page:#}");
        assert_eq!(hits[0]["id"], theirs.as_str());
    }
    // A member of acme only is refused bravo's search.
    let in_bravo = User {
        tenant: "bravo".to_owned(),
        ..owner_a
    };
    let res = search(&app, &in_bravo, "glacier").await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
}
