//! Cells: tenants placed across databases (`TENANTRY_CELLS`), requests
//! routed to their tenant's cell, and the user-scoped reads (feed,
//! `/v1/me/communities`, shares) across cells.

use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{
    Fetch as _, FreshDatabase, TestApp, User, assert_json, assert_problem, ids_of, invalid_fields,
    items,
};

/// A user-scoped GET (no tenant named).
async fn get(app: &TestApp, user: &User, path: &str) -> reqwest::Response {
    app.request(Method::GET, path)
        .bearer_auth(&user.token)
        .fetch()
        .await
}

/// Walks a user-scoped list to its end with `limit`; returns every item and
/// the pages' sizes.
async fn walk(app: &TestApp, user: &User, path: &str, limit: u32) -> (Vec<Value>, Vec<usize>) {
    let mut all = Vec::new();
    let mut sizes = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut url = format!("{path}{sep}limit={limit}");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page = assert_json(get(app, user, &url).await, StatusCode::OK).await;
        sizes.push(items(&page).len());
        all.extend(items(&page).iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return (all, sizes),
        }
    }
    panic!("the list never ends");
}

/// The database of cell `name` (the control database for `main`).
fn cell_db<'a>(app: &'a TestApp, name: &str) -> &'a Arc<FreshDatabase> {
    if name == "main" {
        return &app.db;
    }
    &app.cells
        .iter()
        .find(|(n, _)| n == name)
        .expect("a configured cell")
        .1
}

/// The single number `sql` selects in cell `name`'s database, as the owner.
async fn count_in(app: &TestApp, name: &str, sql: &str, id: &str) -> i64 {
    let id: uuid::Uuid = id.parse().expect("a uuid");
    cell_db(app, name)
        .connect()
        .await
        .query_one(sql, &[&id])
        .await
        .expect("count")
        .get(0)
}

#[tokio::test]
async fn new_tenants_go_to_the_least_loaded_cell_unless_one_is_named() {
    let app = TestApp::spawn_cells(&["east", "west"]).await;
    // Empty cells: main first (the first configured on a tie), then each in
    // turn.
    let mut placed = Vec::new();
    for slug in ["one", "two", "three", "four"] {
        let (t, _) = app.tenant(slug).await;
        placed.push(t["cell"].as_str().expect("cell").to_owned());
    }
    assert_eq!(placed, ["main", "east", "west", "main"]);
    // Named: wherever it is told, however loaded.
    let (t, _) = app.tenant_with("five", json!({"cell": "main"})).await;
    assert_eq!(t["cell"], "main");
    let (t, _) = app.tenant_with("six", json!({"cell": "west"})).await;
    assert_eq!(t["cell"], "west");
    assert_eq!(
        app.admin_tenant(t["id"].as_str().expect("a string")).await["cell"],
        "west"
    );

    // An unknown cell is a 422 on `cell`, and nothing is created.
    let res = app
        .admin(Method::POST, "/v1/admin/tenants")
        .json(
            &json!({"slug": "seven", "name": "Seven", "owner_user_id": uuid::Uuid::now_v7(),
                      "cell": "nowhere"}),
        )
        .fetch()
        .await;
    assert_eq!(invalid_fields(res).await, ["cell"]);
    let res = app.admin(Method::GET, "/v1/admin/tenants").fetch().await;
    let page = assert_json(res, StatusCode::OK).await;
    assert!(!ids_of(&page, "slug").contains(&"seven".to_owned()));

    // The cells as the operator sees them.
    let cells = assert_json(
        app.admin(Method::GET, "/v1/admin/cells").fetch().await,
        StatusCode::OK,
    )
    .await;
    let seen: Vec<(String, i64, bool)> = items(&cells)
        .iter()
        .map(|c| {
            assert!(c["size_bytes"].as_i64().expect("a size") > 0, "{c}");
            (
                c["name"].as_str().expect("name").to_owned(),
                c["tenants"].as_i64().expect("tenants"),
                c["healthy"].as_bool().expect("healthy"),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("main".to_owned(), 3, true),
            ("east".to_owned(), 1, true),
            ("west".to_owned(), 2, true)
        ]
    );
    // The admin's list only.
    let res = app.request(Method::GET, "/v1/admin/cells").fetch().await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_tenants_requests_go_to_its_cell_and_its_rows_live_only_there() {
    let app = TestApp::spawn_cells(&["east"]).await;
    let (t, owner) = app.tenant_with("acme", json!({"cell": "east"})).await;
    let id = t["id"].as_str().expect("id").to_owned();
    let (home, home_owner) = app.tenant_with("home", json!({"cell": "main"})).await;
    let home_id = home["id"].as_str().expect("id").to_owned();

    let member = app.member(&owner, "member").await;
    let post = app.post(&member, "hello from the east").await;
    app.post(&home_owner, "hello from main").await;
    let listed = assert_json(
        app.as_user(&member, Method::GET, "/v1/posts").fetch().await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(ids_of(&listed, "id"), std::slice::from_ref(&post));

    // Rows in the tenant's cell, none in the control database; the registry
    // row (with the directory entry) in the control database.
    let posts = "SELECT count(*) FROM posts WHERE tenant_id = $1";
    let members = "SELECT count(*) FROM memberships WHERE tenant_id = $1";
    assert_eq!(count_in(&app, "east", posts, &id).await, 1);
    assert_eq!(count_in(&app, "main", posts, &id).await, 0);
    assert_eq!(count_in(&app, "east", members, &id).await, 2);
    assert_eq!(count_in(&app, "main", members, &id).await, 0);
    assert_eq!(count_in(&app, "main", posts, &home_id).await, 1);
    assert_eq!(count_in(&app, "east", posts, &home_id).await, 0);
    let directory = "SELECT count(*) FROM tenants WHERE id = $1 AND cell = 'east'";
    assert_eq!(count_in(&app, "main", directory, &id).await, 1);

    // Counters come from the cell.
    let view = app.tenant_view(&owner).await;
    assert_eq!(view["tenant"]["member_count"], 2);
    let admin = app.admin_tenant(&id).await;
    assert_eq!(
        (admin["member_count"].clone(), admin["cell"].clone()),
        (json!(2), json!("east"))
    );

    // An admin change reaches the cell's copy, with its audit entry there.
    let res = app
        .admin(Method::PATCH, &format!("/v1/admin/tenants/{id}"))
        .json(&json!({"name": "Acme East"}))
        .fetch()
        .await;
    let changed = assert_json(res, StatusCode::OK).await;
    assert_eq!(
        (changed["name"].clone(), changed["member_count"].clone()),
        (json!("Acme East"), json!(2))
    );
    assert_eq!(app.tenant_view(&owner).await["tenant"]["name"], "Acme East");
    let audited =
        "SELECT count(*) FROM audit_log WHERE tenant_id = $1 AND action = 'tenant.update'";
    assert_eq!(count_in(&app, "east", audited, &id).await, 1);
    assert_eq!(count_in(&app, "main", audited, &id).await, 0);
    let copy = "SELECT count(*) FROM tenants WHERE id = $1 AND name = 'Acme East'";
    assert_eq!(count_in(&app, "east", copy, &id).await, 1);

    // Another tenant's post is a 404 in either direction.
    let res = app
        .as_user(&home_owner, Method::GET, &format!("/v1/posts/{post}"))
        .fetch()
        .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);

    // Deleted: gone at once, purged from its cell.
    let res = app
        .admin(Method::DELETE, &format!("/v1/admin/tenants/{id}"))
        .fetch()
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let res = app.as_user(&owner, Method::GET, "/v1/posts").fetch().await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    for _ in 0..50 {
        if count_in(&app, "east", posts, &id).await == 0
            && count_in(
                &app,
                "east",
                "SELECT count(*) FROM tenants WHERE id = $1",
                &id,
            )
            .await
                == 0
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the deleted tenant's rows were not purged from its cell");
}

/// Four tenants over three cells: acme (main), bravo (east), charlie and
/// delta (west). `reader` belongs to acme, bravo and charlie, not delta.
/// Posts interleaved in time across all four.
async fn three_cells(app: &TestApp) -> (User, [User; 4]) {
    let (_, a) = app.tenant_with("acme", json!({"cell": "main"})).await;
    let (_, b) = app.tenant_with("bravo", json!({"cell": "east"})).await;
    let (_, c) = app.tenant_with("charlie", json!({"cell": "west"})).await;
    let (_, d) = app.tenant_with("delta", json!({"cell": "west"})).await;
    let reader = app.member(&a, "member").await;
    for owner in [&b, &c] {
        let res = app
            .as_user(owner, Method::POST, "/v1/members")
            .json(&json!({"user_id": reader.id, "role": "member"}))
            .fetch()
            .await;
        assert_eq!(res.status(), StatusCode::CREATED);
    }
    for i in 0..4 {
        for owner in [&a, &b, &c, &d] {
            app.post(owner, &format!("{} post {i}", owner.tenant)).await;
        }
    }
    (reader, [a, b, c, d])
}

#[tokio::test]
async fn the_feed_and_my_communities_merge_three_cells_by_the_keyset() {
    let app = TestApp::spawn_cells(&["east", "west"]).await;
    let (reader, _) = three_cells(&app).await;

    for limit in [1, 2, 5, 100] {
        let (all, _) = walk(&app, &reader, "/v1/feed", limit).await;
        assert_eq!(all.len(), 12, "acme's, bravo's and charlie's 4 posts each");
        let slugs: Vec<&str> = all
            .iter()
            .map(|p| p["tenant_slug"].as_str().expect("slug"))
            .collect();
        assert!(
            slugs
                .iter()
                .all(|s| ["acme", "bravo", "charlie"].contains(s)),
            "{slugs:?}"
        );
        for slug in ["acme", "bravo", "charlie"] {
            assert_eq!(slugs.iter().filter(|s| **s == slug).count(), 4, "{slug}");
        }
        // One order across cells, newest first, no repeats.
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
        sorted.dedup();
        assert_eq!(keys, sorted, "limit {limit}");
    }
    // Named communities in two cells; a community in a cell of the caller's
    // but not theirs is a 404 like an unknown one.
    let (named, _) = walk(&app, &reader, "/v1/feed?tenants=bravo,charlie", 3).await;
    assert_eq!(named.len(), 8);
    let res = get(&app, &reader, "/v1/feed?tenants=delta").await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);

    let (communities, sizes) = walk(&app, &reader, "/v1/me/communities", 1).await;
    assert_eq!(sizes, [1, 1, 1]);
    let mut slugs: Vec<(String, i64)> = communities
        .iter()
        .map(|c| {
            (
                c["slug"].as_str().expect("slug").to_owned(),
                c["member_count"].as_i64().expect("count"),
            )
        })
        .collect();
    let ids: Vec<&str> = communities
        .iter()
        .map(|c| c["tenant_id"].as_str().expect("id"))
        .collect();
    let mut in_order = ids.clone();
    in_order.sort();
    assert_eq!(ids, in_order, "tenant id order across cells");
    slugs.sort();
    assert_eq!(
        slugs,
        [
            ("acme".to_owned(), 2),
            ("bravo".to_owned(), 2),
            ("charlie".to_owned(), 2)
        ]
    );
}

#[tokio::test]
async fn content_is_shared_between_communities_in_different_cells() {
    let app = TestApp::spawn_cells(&["east", "west"]).await;
    let (reader, [_a, b, c, _d]) = three_cells(&app).await;
    let source = assert_json(
        app.as_user(&b, Method::GET, "/v1/posts?limit=1")
            .fetch()
            .await,
        StatusCode::OK,
    )
    .await;
    let post = items(&source)[0]["id"].as_str().expect("id").to_owned();
    let share = |target: &'static str, id: String| {
        app.request(Method::POST, "/v1/shares")
            .bearer_auth(&reader.token)
            .json(&json!({"content_type": "post", "content_id": id,
                          "source_tenant": "bravo", "target_tenant": target}))
            .fetch()
    };
    let res = share("charlie", post.clone()).await;
    let created = assert_json(res, StatusCode::CREATED).await;
    assert_eq!(created["post"]["content"], items(&source)[0]["content"]);
    // Once per target.
    let again = assert_json(share("charlie", post.clone()).await, StatusCode::OK).await;
    assert_eq!(again["post"]["id"], created["post"]["id"]);
    // The copy is charlie's, in charlie's cell, and counted there.
    let listed = assert_json(
        app.as_user(&c, Method::GET, "/v1/posts").fetch().await,
        StatusCode::OK,
    )
    .await;
    assert!(
        ids_of(&listed, "id")
            .contains(&created["post"]["id"].as_str().expect("a string").to_owned())
    );
    let counted: i64 = cell_db(&app, "west")
        .connect()
        .await
        .query_one("SELECT post_count FROM tenants WHERE slug = 'charlie'", &[])
        .await
        .expect("charlie's copy")
        .get(0);
    assert_eq!(
        counted, 5,
        "4 posts and the copy, counted in charlie's cell"
    );
    // Not into a community the caller is not in, nor from a post that is
    // not there.
    let res = share("delta", post.clone()).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let res = share("acme", uuid::Uuid::now_v7().to_string()).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}

/// Polls the job until it is done (or dead: the test fails with its error).
async fn finished(app: &TestApp, job: &str) -> Value {
    for _ in 0..600 {
        let res = app
            .admin(Method::GET, &format!("/v1/admin/jobs/{job}"))
            .fetch()
            .await;
        let view = assert_json(res, StatusCode::OK).await;
        match view["state"].as_str() {
            Some("done") => return view,
            Some("dead") => panic!("the move failed: {view}"),
            _ => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
    panic!("the move did not finish");
}

#[tokio::test]
async fn a_tenant_moves_to_another_cell_online_with_every_acknowledged_write() {
    let app = TestApp::spawn_cells(&["east"]).await;
    let (t, owner) = app.tenant_with("acme", json!({"cell": "main"})).await;
    let id = t["id"].as_str().expect("id").to_owned();
    let (_, bystander) = app.tenant_with("other", json!({"cell": "main"})).await;
    app.post(&bystander, "stays in main").await;
    let member = app.member(&owner, "member").await;
    for i in 0..50 {
        app.post(&member, &format!("before {i}")).await;
    }

    // Wrong requests first.
    let res = app
        .admin(Method::POST, &format!("/v1/admin/tenants/{id}/move"))
        .json(&json!({"cell": "main"}))
        .fetch()
        .await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    let res = app
        .admin(Method::POST, &format!("/v1/admin/tenants/{id}/move"))
        .json(&json!({"cell": "nowhere"}))
        .fetch()
        .await;
    assert_eq!(invalid_fields(res).await, ["cell"]);
    let res = app
        .admin(
            Method::POST,
            &format!("/v1/admin/tenants/{}/move", uuid::Uuid::now_v7()),
        )
        .json(&json!({"cell": "east"}))
        .fetch()
        .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);

    // Four clients write and read throughout the move.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..4 {
        let (client, url, user, stop) = (
            app.client.clone(),
            app.url("/v1/posts"),
            member.clone(),
            stop.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut longest = std::time::Duration::ZERO;
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let started = std::time::Instant::now();
                let res = client
                    .post(&url)
                    .bearer_auth(&user.token)
                    .header("x-tenant", &user.tenant)
                    .json(&json!({"content": format!("client {c} post {i}")}))
                    .send()
                    .await
                    .expect("request");
                longest = longest.max(started.elapsed());
                if res.status() == StatusCode::CREATED {
                    let body: Value = res.json().await.expect("json");
                    acked.push(body["id"].as_str().expect("id").to_owned());
                }
                let read = client
                    .get(&url)
                    .bearer_auth(&user.token)
                    .header("x-tenant", &user.tenant)
                    .send()
                    .await
                    .expect("request");
                if read.status() == StatusCode::OK {
                    let page: Value = read.json().await.expect("json");
                    for p in items(&page) {
                        assert!(
                            !p["content"]
                                .as_str()
                                .unwrap_or("")
                                .contains("stays in main"),
                            "another tenant's post read: {p}"
                        );
                    }
                }
                i += 1;
            }
            (acked, longest)
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let res = app
        .admin(Method::POST, &format!("/v1/admin/tenants/{id}/move"))
        .json(&json!({"cell": "east"}))
        .fetch()
        .await;
    let accepted = assert_json(res, StatusCode::ACCEPTED).await;
    let job = accepted["job_id"].as_str().expect("job id").to_owned();
    let done = finished(&app, &job).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = Vec::new();
    let mut longest = std::time::Duration::ZERO;
    for client in clients {
        let (a, l) = client.await.expect("client");
        acked.extend(a);
        longest = longest.max(l);
    }
    let report = &done["result"]["report"];
    eprintln!(
        "move: {} acknowledged writes during it, longest client request {longest:?}, \
         engine write pause {} ms, duration {} ms",
        acked.len(),
        report["write_pause"],
        report["duration"]
    );
    assert!(!acked.is_empty(), "writes went on during the move");

    // The directory names east; the rows are there and nowhere else.
    assert_eq!(app.admin_tenant(&id).await["cell"], "east");
    let posts = "SELECT count(*) FROM posts WHERE tenant_id = $1";
    let total = 50 + acked.len() as i64;
    assert!(count_in(&app, "east", posts, &id).await >= total);
    assert_eq!(
        count_in(&app, "main", posts, &id).await,
        0,
        "the old copy is purged"
    );
    let bystander_posts = "SELECT count(*) FROM posts WHERE tenant_id <> $1";
    assert_eq!(
        count_in(&app, "main", bystander_posts, &id).await,
        1,
        "others untouched"
    );
    // Every acknowledged write is served from the new cell.
    let mut listed = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = "/v1/posts?limit=100".to_owned();
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page = assert_json(
            app.as_user(&member, Method::GET, &url).fetch().await,
            StatusCode::OK,
        )
        .await;
        listed.extend(ids_of(&page, "id"));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    for id in &acked {
        assert!(listed.contains(id), "acknowledged post {id} lost");
    }
    // Counters followed, and the tenant keeps working.
    assert_eq!(app.tenant_view(&owner).await["tenant"]["member_count"], 2);
    app.post(&member, "after the move").await;
    let cells = assert_json(
        app.admin(Method::GET, "/v1/admin/cells").fetch().await,
        StatusCode::OK,
    )
    .await;
    let east = items(&cells)
        .iter()
        .find(|c| c["name"] == "east")
        .expect("east")
        .clone();
    assert_eq!(east["tenants"], 1);
}

/// A big tenant gets a cell of its own: moved online to an empty cell,
/// which then takes no new tenants; with no empty cell left, 409.
#[tokio::test]
async fn a_dedicated_tenant_gets_an_empty_cell_to_itself() {
    let app = TestApp::spawn_cells(&["east", "west"]).await;
    let (big, owner) = app.tenant_with("big", json!({"cell": "main"})).await;
    let id = big["id"].as_str().expect("id").to_owned();
    app.tenant_with("small", json!({"cell": "main"})).await;
    app.tenant_with("neighbour", json!({"cell": "east"})).await;
    let post = app.post(&owner, "a post that moves with its tenant").await;

    // East holds a tenant: the empty cell is west.
    let started = assert_json(
        app.admin(Method::POST, &format!("/v1/admin/tenants/{id}/dedicate"))
            .fetch()
            .await,
        StatusCode::ACCEPTED,
    )
    .await;
    assert_eq!(started["cell"], "west");
    finished(&app, started["job_id"].as_str().expect("job id")).await;
    assert_eq!(app.admin_tenant(&id).await["cell"], "west");
    let res = app
        .as_user(&owner, Method::GET, &format!("/v1/posts/{post}"))
        .fetch()
        .await;
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "the post is read in its new cell"
    );
    assert_eq!(
        count_in(
            &app,
            "west",
            "SELECT count(*) FROM posts WHERE tenant_id = $1",
            &id
        )
        .await,
        1
    );

    // New tenants are placed beside anyone but the dedicated one.
    for slug in ["new-one", "new-two", "new-three"] {
        let (t, _) = app.tenant(slug).await;
        assert_ne!(t["cell"], "west", "{slug} was placed in the dedicated cell");
    }
    let cells = assert_json(
        app.admin(Method::GET, "/v1/admin/cells").fetch().await,
        StatusCode::OK,
    )
    .await;
    let west = items(&cells)
        .iter()
        .find(|c| c["name"] == "west")
        .cloned()
        .expect("west");
    assert_eq!(
        (west["tenants"].as_i64(), west["dedicated"].as_bool()),
        (Some(1), Some(true))
    );

    // Again: it has its cell. Another tenant: no cell is empty.
    let res = app
        .admin(Method::POST, &format!("/v1/admin/tenants/{id}/dedicate"))
        .fetch()
        .await;
    assert_problem(res, StatusCode::CONFLICT, "conflict").await;
    let (other, _) = app.tenant("other").await;
    let res = app
        .admin(
            Method::POST,
            &format!(
                "/v1/admin/tenants/{}/dedicate",
                other["id"].as_str().expect("id")
            ),
        )
        .fetch()
        .await;
    assert_problem(res, StatusCode::CONFLICT, "conflict").await;
    let res = app
        .admin(
            Method::POST,
            &format!("/v1/admin/tenants/{}/dedicate", uuid::Uuid::now_v7()),
        )
        .fetch()
        .await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
}
