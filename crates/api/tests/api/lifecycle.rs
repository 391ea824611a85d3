//! The tenant lifecycle: export, import, backups, restore, clone, transfer.

use std::io::{Read as _, Write as _};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;

/// A server whose exports go to a directory of the test's own.
async fn spawn(dir: &tempfile::TempDir) -> TestApp {
    let path = dir.path().to_owned();
    TestApp::spawn_configured(None, move |mut state| {
        state.batch.export_dir = path;
        state
    })
    .await
}

/// A tenant with members, posts, comments, likes and an event.
async fn populated(app: &TestApp, slug: &str) -> (Value, User, Vec<String>) {
    let (tenant, owner) = app.tenant(slug).await;
    let member = app.member(&owner, "member").await;
    let mut posts = Vec::new();
    for i in 0..5 {
        posts.push(app.post(&owner, &format!("post {i} of {slug}")).await);
    }
    posts.push(app.post(&member, "a member's post").await);
    for post in &posts[..3] {
        let res = app
            .as_user(&member, Method::POST, &format!("/v1/posts/{post}/comments"))
            .json(&json!({"content": "nice"}))
            .fetch()
            .await;
        assert_eq!(res.status(), StatusCode::CREATED, "comment");
        let res = app
            .as_user(&member, Method::POST, &format!("/v1/posts/{post}/like"))
            .fetch()
            .await;
        assert!(res.status().is_success(), "like: {}", res.status());
    }
    let res = app
        .as_user(&owner, Method::POST, "/v1/events")
        .json(
            &json!({"title": "Meetup", "start_date": "2030-01-01T10:00:00Z",
                      "end_date": "2030-01-01T12:00:00Z"}),
        )
        .fetch()
        .await;
    assert_eq!(res.status(), StatusCode::CREATED, "event");
    // Likes reach the posts' counters in coalesced batches: let them land,
    // so an archive holds settled counts (a pending batch would be applied
    // after an import, and a second export would differ).
    let id = tenant["id"].as_str().expect("id").to_owned();
    eventually("the like counts are applied", || async {
        app.count(&format!(
            "SELECT count(*) FROM post_counter_deltas WHERE tenant_id = '{id}'"
        ))
        .await
            == 0
    })
    .await;
    (tenant, owner, posts)
}

/// Starts an export of `tenant` and waits until it is ready; its view.
async fn export(app: &TestApp, tenant: &str) -> Value {
    let started = assert_json(
        app.admin(Method::POST, &format!("/v1/admin/tenants/{tenant}/exports"))
            .fetch()
            .await,
        StatusCode::ACCEPTED,
    )
    .await;
    assert!(started["job_id"].is_string());
    wait_ready(app, started["export_id"].as_str().expect("export id")).await
}

async fn wait_ready(app: &TestApp, id: &str) -> Value {
    for _ in 0..300 {
        let view = assert_json(
            app.admin(Method::GET, &format!("/v1/admin/exports/{id}"))
                .fetch()
                .await,
            StatusCode::OK,
        )
        .await;
        match view["status"].as_str() {
            Some("ready") => return view,
            Some("failed") => panic!("export failed: {view}"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("export {id} never became ready");
}

async fn download(app: &TestApp, id: &str) -> Vec<u8> {
    let res = app
        .admin(Method::GET, &format!("/v1/admin/exports/{id}/download"))
        .fetch()
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(content_type(&res), "application/gzip");
    let length: usize = res.headers()["content-length"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("a length");
    let body = res.bytes().await.expect("body").to_vec();
    assert_eq!(body.len(), length);
    body
}

async fn import(app: &TestApp, archive: Vec<u8>, query: &str) -> reqwest::Response {
    app.admin(Method::POST, &format!("/v1/admin/tenants/import?{query}"))
        .header("content-type", "application/gzip")
        .body(archive)
        .send()
        .await
        .expect("request")
}

async fn wait_status(app: &TestApp, id: &str, status: &str) {
    for _ in 0..300 {
        let res = app
            .admin(Method::GET, &format!("/v1/admin/tenants/{id}"))
            .fetch()
            .await;
        if res.status() == StatusCode::OK {
            let t: Value = res.json().await.expect("json");
            if t["status"] == status {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("tenant {id} never became {status}");
}

/// Table name → sha256 of a manifest.
fn hashes(manifest: &Value) -> Vec<(String, String, u64)> {
    manifest["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .map(|t| {
            (
                t["name"].as_str().expect("name").to_owned(),
                t["sha256"].as_str().expect("hash").to_owned(),
                t["rows"].as_u64().expect("rows"),
            )
        })
        .collect()
}

fn rows_of(manifest: &Value, table: &str) -> u64 {
    hashes(manifest)
        .into_iter()
        .find(|(n, _, _)| n == table)
        .map_or(0, |(_, _, r)| r)
}

/// The archive's entries (name, bytes).
fn entries(archive: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(archive)
        .read_to_end(&mut raw)
        .expect("gunzip");
    let mut out = Vec::new();
    let mut at = 0;
    while at + 512 <= raw.len() && raw[at] != 0 {
        let h = &raw[at..at + 512];
        let end = h[..100].iter().position(|&b| b == 0).unwrap_or(100);
        let name = String::from_utf8(h[..end].to_vec()).expect("name");
        let size_text: String = h[124..135].iter().map(|&b| b as char).collect();
        let size =
            usize::from_str_radix(size_text.trim_matches(char::from(0)).trim(), 8).expect("size");
        at += 512;
        out.push((name, raw[at..at + size].to_vec()));
        at += size.div_ceil(512) * 512;
    }
    out
}

/// An archive of `entries`, written as the server writes one.
fn archive_of(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut tar = Vec::new();
    for (name, body) in entries {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..107].copy_from_slice(b"0000644");
        h[108..115].copy_from_slice(b"0000000");
        h[116..123].copy_from_slice(b"0000000");
        h[124..135].copy_from_slice(format!("{:011o}", body.len()).as_bytes());
        h[136..147].copy_from_slice(b"00000000000");
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        tar.extend_from_slice(&h);
        tar.extend_from_slice(body);
        tar.resize(tar.len().div_ceil(512) * 512, 0);
    }
    tar.extend_from_slice(&[0u8; 1024]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).expect("gzip");
    gz.finish().expect("gzip")
}

#[tokio::test]
async fn export_then_import_into_an_empty_database_gives_identical_hashes() {
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let a = spawn(&dir_a).await;
    let (tenant, owner, posts) = populated(&a, "acme").await;
    let id = tenant["id"].as_str().expect("id");
    let first = export(&a, id).await;
    let manifest = &first["manifest"];
    assert_eq!(manifest["format"], "tenantry-export/v1");
    assert_eq!(manifest["tenant"]["id"], tenant["id"]);
    assert_eq!(rows_of(manifest, "posts"), 6);
    assert_eq!(rows_of(manifest, "comments"), 3);
    assert_eq!(rows_of(manifest, "post_likes"), 3);
    assert_eq!(rows_of(manifest, "memberships"), 2);
    assert_eq!(rows_of(manifest, "users"), 2);
    assert!(first["bytes"].as_i64().expect("bytes") > 0);
    // Every tenant table the catalog names is in it, but the job queue.
    let tables = a
        .raw_db()
        .await
        .query(
            "SELECT tbl::text FROM tenantry_tenant_tables()
             WHERE tbl NOT IN (SELECT tbl FROM tenantry_lifecycle_skip)",
            &[],
        )
        .await
        .expect("tables");
    for row in tables {
        let name: String = row.get(0);
        assert!(
            manifest.to_string().contains(&format!("\"{name}\"")),
            "{name} exported"
        );
    }
    let archive = download(&a, first["id"].as_str().expect("id")).await;

    let b = spawn(&dir_b).await;
    let started = assert_json(
        import(&b, archive, "slug=acme-copy").await,
        StatusCode::ACCEPTED,
    )
    .await;
    assert_eq!(started["tenant_id"], tenant["id"], "ids kept by default");
    wait_status(&b, id, "active").await;
    let imported = b.admin_tenant(id).await;
    assert_eq!(imported["slug"], "acme-copy");
    assert_eq!(imported["member_count"], 2);
    assert_eq!(imported["owner_user_id"], owner.id.to_string());
    // The owner reads their posts there, with counts intact.
    let owner_b = owner.in_tenant("acme-copy");
    let (_, items) = b.walk(&owner_b, "/v1/posts", 50).await;
    let mut got: Vec<String> = items
        .iter()
        .map(|p| p["id"].as_str().expect("id").to_owned())
        .collect();
    let mut want = posts.clone();
    got.sort();
    want.sort();
    assert_eq!(got, want);

    let second = export(&b, id).await;
    assert_eq!(
        hashes(&second["manifest"]),
        hashes(manifest),
        "the same rows, the same bytes"
    );
}

#[tokio::test]
async fn a_truncated_or_tampered_archive_writes_nothing_and_names_the_table() {
    let dir = tempfile::tempdir().expect("dir");
    let app = spawn(&dir).await;
    let (tenant, _, _) = populated(&app, "acme").await;
    let id = tenant["id"].as_str().expect("id");
    let made = export(&app, id).await;
    let archive = download(&app, made["id"].as_str().expect("id")).await;
    let tenants_before = app.count("SELECT count(*) FROM tenants").await;
    let posts_before = app.count("SELECT count(*) FROM posts").await;

    // Truncated: the gzip stream stops half way.
    let res = import(
        &app,
        archive[..archive.len() / 2].to_vec(),
        "slug=cut&ids=new",
    )
    .await;
    let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert!(
        problem.to_string().contains("table "),
        "names the table: {problem}"
    );

    // Tampered: one post's content changed, the manifest left as it was.
    let mut parts = entries(&archive);
    let posts = parts
        .iter_mut()
        .find(|(n, _)| n == "posts.ndjson")
        .expect("posts");
    let text = String::from_utf8(posts.1.clone()).expect("utf8").replacen(
        "post 1 of acme",
        "post 1 of evil",
        1,
    );
    posts.1 = text.into_bytes();
    let res = import(&app, archive_of(&parts), "slug=evil&ids=new").await;
    let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert!(
        problem.to_string().contains("table posts"),
        "names posts: {problem}"
    );

    // A table dropped from the archive.
    let fewer: Vec<_> = entries(&archive)
        .into_iter()
        .filter(|(n, _)| n != "comments.ndjson")
        .collect();
    let res = import(&app, archive_of(&fewer), "slug=fewer&ids=new").await;
    let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert!(
        problem.to_string().contains("table comments"),
        "names comments: {problem}"
    );

    // Not an archive at all.
    let res = import(&app, b"hello".to_vec(), "slug=junk").await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;

    assert_eq!(
        app.count("SELECT count(*) FROM tenants").await,
        tenants_before
    );
    assert_eq!(app.count("SELECT count(*) FROM posts").await, posts_before);
    // The untouched archive still imports.
    let res = import(&app, archive, "slug=fine&ids=new").await;
    assert_json(res, StatusCode::ACCEPTED).await;
}

#[tokio::test]
async fn importing_with_new_ids_remaps_every_id_and_reference() {
    let dir = tempfile::tempdir().expect("dir");
    let app = spawn(&dir).await;
    let (tenant, owner, posts) = populated(&app, "acme").await;
    let id = tenant["id"].as_str().expect("id");
    let made = export(&app, id).await;
    let archive = download(&app, made["id"].as_str().expect("id")).await;

    // Kept ids collide with the tenant they came from.
    let res = import(&app, archive.clone(), "slug=again").await;
    assert_problem(res, StatusCode::CONFLICT, "conflict").await;
    // A taken slug too.
    let res = import(&app, archive.clone(), "slug=acme&ids=new").await;
    assert_problem(res, StatusCode::CONFLICT, "conflict").await;

    let started = assert_json(
        import(&app, archive, "slug=acme-two&ids=new").await,
        StatusCode::ACCEPTED,
    )
    .await;
    let new_id = started["tenant_id"].as_str().expect("id").to_owned();
    assert_ne!(new_id, id);
    wait_status(&app, &new_id, "active").await;

    let copy = owner.in_tenant("acme-two");
    let (_, items) = app.walk(&copy, "/v1/posts", 50).await;
    assert_eq!(items.len(), posts.len());
    for p in &items {
        assert!(
            !posts.contains(&p["id"].as_str().expect("id").to_owned()),
            "a new id"
        );
    }
    // Comments point at the new posts; the counters came along.
    let db = app.raw_db().await;
    let dangling: i64 = db
        .query_one(
            "SELECT count(*) FROM comments c WHERE c.tenant_id = $1::text::uuid
               AND NOT EXISTS (SELECT 1 FROM posts p WHERE p.tenant_id = c.tenant_id AND p.id = c.post_id)",
            &[&new_id],
        )
        .await
        .expect("query")
        .get(0);
    assert_eq!(dangling, 0);
    let (comments, likes): (i64, i64) = {
        let r = db
            .query_one(
                "SELECT (SELECT count(*) FROM comments WHERE tenant_id = $1::text::uuid),
                        (SELECT count(*) FROM post_likes WHERE tenant_id = $1::text::uuid)",
                &[&new_id],
            )
            .await
            .expect("query");
        (r.get(0), r.get(1))
    };
    assert_eq!((comments, likes), (3, 3));
    let shared: i64 = db
        .query_one(
            "SELECT count(*) FROM posts a JOIN posts b ON a.id = b.id
             WHERE a.tenant_id = $1::text::uuid AND b.tenant_id = $2::text::uuid",
            &[&id, &new_id],
        )
        .await
        .expect("query")
        .get(0);
    assert_eq!(shared, 0, "no id is shared with the original");
    // The members' directory knows the copy.
    let res = app.as_user(&copy, Method::GET, "/v1/tenant").fetch().await;
    let view = assert_json(res, StatusCode::OK).await;
    assert_eq!(view["membership"]["role"], "owner");
}

#[tokio::test]
async fn restore_replace_is_all_old_or_all_new_for_readers() {
    let dir = tempfile::tempdir().expect("dir");
    let app = spawn(&dir).await;
    let (tenant, owner, _) = populated(&app, "acme").await;
    let id = tenant["id"].as_str().expect("id").to_owned();
    let made = export(&app, &id).await;
    for i in 0..20 {
        app.post(&owner, &format!("later {i}")).await;
    }
    let count_sql = format!(
        "SELECT (SELECT count(*) FROM posts WHERE tenant_id = '{id}')
                + 1000 * (SELECT count(*) FROM comments WHERE tenant_id = '{id}')"
    );
    let before = app.count(&count_sql).await;
    assert_eq!(before, 26 + 3000);

    // Readers keep reading while the restore runs.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (db, stop, sql) = (app.raw_db().await, stop.clone(), count_sql.clone());
        tokio::spawn(async move {
            let mut seen = std::collections::BTreeSet::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let n: i64 = db.query_one(sql.as_str(), &[]).await.expect("read").get(0);
                seen.insert(n);
            }
            seen
        })
    };
    let res = app
        .admin(Method::POST, &format!("/v1/admin/tenants/{id}/restore"))
        .json(&json!({"export_id": made["id"], "mode": "replace"}))
        .fetch()
        .await;
    let started = assert_json(res, StatusCode::ACCEPTED).await;
    assert_eq!(started["tenant_id"], id);
    eventually("the restore is done", || async {
        app.count(&count_sql).await == 6 + 3000
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = reader.await.expect("reader");
    assert!(
        seen.iter().all(|n| *n == before || *n == 6 + 3000),
        "a reader saw a mix: {seen:?}"
    );
    // Through the API (caches invalidated): the export's six posts.
    let (_, items) = app.walk(&owner, "/v1/posts", 50).await;
    assert_eq!(items.len(), 6);
    assert!(
        items
            .iter()
            .all(|p| !p["content"].as_str().unwrap_or("").starts_with("later"))
    );
}

#[tokio::test]
async fn clone_makes_a_new_tenant_with_new_ids() {
    let dir = tempfile::tempdir().expect("dir");
    let app = spawn(&dir).await;
    let (tenant, owner, posts) = populated(&app, "acme").await;
    let id = tenant["id"].as_str().expect("id");
    let made = export(&app, id).await;
    let res = app
        .admin(Method::POST, &format!("/v1/admin/tenants/{id}/restore"))
        .json(&json!({"export_id": made["id"], "mode": "clone"}))
        .fetch()
        .await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let res = app
        .admin(Method::POST, &format!("/v1/admin/tenants/{id}/restore"))
        .json(&json!({"export_id": made["id"], "mode": "clone", "slug": "acme-staging"}))
        .fetch()
        .await;
    let started = assert_json(res, StatusCode::ACCEPTED).await;
    let clone = started["tenant_id"].as_str().expect("id").to_owned();
    assert_ne!(clone, id);
    wait_status(&app, &clone, "active").await;
    let (_, items) = app
        .walk(&owner.in_tenant("acme-staging"), "/v1/posts", 50)
        .await;
    assert_eq!(items.len(), posts.len());
    assert!(
        items
            .iter()
            .all(|p| !posts.contains(&p["id"].as_str().expect("id").to_owned()))
    );
    // The original is untouched.
    let (_, original) = app.walk(&owner, "/v1/posts", 50).await;
    assert_eq!(original.len(), posts.len());
    let res = app
        .admin(Method::POST, &format!("/v1/admin/tenants/{id}/restore"))
        .json(&json!({"export_id": made["id"], "mode": "sideways"}))
        .fetch()
        .await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
}

#[tokio::test]
async fn scheduled_backups_are_made_per_tier_and_pruned() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().to_owned();
    let app = TestApp::spawn_configured(None, move |mut state| {
        state.batch.export_dir = path;
        let mut tiers = test_tiers();
        for limits in tiers.tiers.values_mut() {
            limits.backup_every_hours = 0;
        }
        let free = tiers.tiers.get_mut("free").expect("free");
        free.backup_every_hours = 1;
        free.backups_kept = 2;
        state.tiers.store(std::sync::Arc::new(tiers));
        state
    })
    .await;
    // The server's own schedule first looks a minute after start: the test
    // drives it instead.
    let (tenant, _, _) = populated(&app, "acme").await;
    let (pro, _) = app.tenant_with("bigco", json!({"tier": "pro"})).await;
    let id = tenant["id"].as_str().expect("id");
    let db = app.raw_db().await;
    let mut made = Vec::new();
    for round in 0..4 {
        let n = tenantry_api::lifecycle::schedule_backups(&app.state)
            .await
            .expect("schedule");
        let exports: Vec<String> = db
            .query(
                "SELECT kind || ' ' || status || ' ' || created_at::text FROM tenant_exports",
                &[],
            )
            .await
            .expect("exports")
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(n, 1, "round {round}: one free tenant is due ({exports:?})");
        assert_eq!(
            tenantry_api::lifecycle::schedule_backups(&app.state)
                .await
                .expect("schedule"),
            0,
            "not due again at once"
        );
        let page = assert_json(
            app.admin(Method::GET, &format!("/v1/admin/tenants/{id}/backups"))
                .fetch()
                .await,
            StatusCode::OK,
        )
        .await;
        let newest = items(&page)[0].clone();
        assert_eq!(newest["kind"], "scheduled");
        wait_ready(&app, newest["id"].as_str().expect("id")).await;
        made.push(newest["id"].as_str().expect("id").to_owned());
        // An hour and more passes.
        db.execute(
            "UPDATE tenant_exports SET created_at = created_at - interval '2 hours'",
            &[],
        )
        .await
        .expect("age");
    }
    let page = assert_json(
        app.admin(Method::GET, &format!("/v1/admin/tenants/{id}/backups"))
            .fetch()
            .await,
        StatusCode::OK,
    )
    .await;
    let kept = ids_of(&page, "id");
    assert_eq!(
        kept,
        vec![made[3].clone(), made[2].clone()],
        "the newest two are kept"
    );
    let files = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".tar.gz"))
        })
        .count();
    assert_eq!(files, 2, "pruned archives are deleted");
    // The pro tenant's tier takes no backups here.
    let page = assert_json(
        app.admin(
            Method::GET,
            &format!(
                "/v1/admin/tenants/{}/backups",
                pro["id"].as_str().expect("id")
            ),
        )
        .fetch()
        .await,
        StatusCode::OK,
    )
    .await;
    assert!(items(&page).is_empty());
}

#[tokio::test]
async fn ownership_moves_only_by_transfer_and_is_audited() {
    let app = TestApp::spawn().await;
    let (tenant, owner) = app.tenant("acme").await;
    let id = tenant["id"].as_str().expect("id");
    let second_owner = app.member(&owner, "owner").await;
    let member = app.member(&owner, "member").await;

    // Nobody else demotes or removes the tenant's owner, another owner included.
    let res = app
        .as_user(
            &second_owner,
            Method::PATCH,
            &format!("/v1/members/{}", owner.id),
        )
        .json(&json!({"role": "member"}))
        .fetch()
        .await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    let res = app
        .as_user(
            &second_owner,
            Method::DELETE,
            &format!("/v1/members/{}", owner.id),
        )
        .fetch()
        .await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;

    // Only the owner transfers, and only to a member.
    let res = app
        .as_user(&second_owner, Method::POST, "/v1/tenant/owner")
        .json(&json!({"user_id": second_owner.id}))
        .fetch()
        .await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    let res = app
        .as_user(&owner, Method::POST, "/v1/tenant/owner")
        .json(&json!({"user_id": uuid::Uuid::now_v7()}))
        .fetch()
        .await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;

    let res = app
        .as_user(&owner, Method::POST, "/v1/tenant/owner")
        .json(&json!({"user_id": member.id}))
        .fetch()
        .await;
    let moved = assert_json(res, StatusCode::OK).await;
    assert_eq!(moved["owner_user_id"], member.id.to_string());
    assert_eq!(moved["previous_owner_user_id"], owner.id.to_string());
    assert_eq!(
        app.admin_tenant(id).await["owner_user_id"],
        member.id.to_string()
    );
    assert_eq!(
        app.tenant_view(&member).await["membership"]["role"],
        "owner"
    );
    assert_eq!(app.tenant_view(&owner).await["membership"]["role"], "admin");

    // The platform admin moves it back.
    let res = app
        .admin(Method::POST, &format!("/v1/admin/tenants/{id}/owner"))
        .json(&json!({"user_id": owner.id}))
        .fetch()
        .await;
    assert_json(res, StatusCode::OK).await;
    assert_eq!(
        app.admin_tenant(id).await["owner_user_id"],
        owner.id.to_string()
    );
    assert_eq!(
        app.tenant_view(&member).await["membership"]["role"],
        "admin"
    );

    let log = assert_json(
        app.as_user(&owner, Method::GET, "/v1/audit-log")
            .fetch()
            .await,
        StatusCode::OK,
    )
    .await;
    let transfers: Vec<&Value> = items(&log)
        .iter()
        .filter(|e| e["action"] == "tenant.owner")
        .collect();
    assert_eq!(transfers.len(), 2);
    assert_eq!(transfers[0]["actor_id"], Value::Null, "the platform admin");
    assert_eq!(transfers[1]["actor_id"], owner.id.to_string());
    let res = app
        .admin(
            Method::POST,
            &format!("/v1/admin/tenants/{}/owner", uuid::Uuid::now_v7()),
        )
        .json(&json!({"user_id": owner.id}))
        .fetch()
        .await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
}

/// An import in progress ends only by its own job: the admin cannot make
/// the tenant active (or suspended) before its rows are verified.
#[tokio::test]
async fn an_importing_tenant_cannot_be_made_active_by_hand() {
    let app = TestApp::spawn().await;
    let (tenant, _) = app.tenant("halfway").await;
    let id = tenant["id"].as_str().expect("id").to_owned();
    app.raw_db()
        .await
        .execute(
            "UPDATE tenants SET status = 'importing' WHERE id = $1::text::uuid",
            &[&id],
        )
        .await
        .expect("mark importing");
    for status in ["active", "suspended"] {
        let res = app
            .admin(Method::PATCH, &format!("/v1/admin/tenants/{id}"))
            .json(&json!({"status": status}))
            .fetch()
            .await;
        assert_problem(res, StatusCode::CONFLICT, "conflict").await;
    }
    // Other changes are still allowed, and the status stays as it was.
    let view = assert_json(
        app.admin(Method::PATCH, &format!("/v1/admin/tenants/{id}"))
            .json(&json!({"name": "Halfway There"}))
            .fetch()
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(view["status"], "importing");
    assert_eq!(view["name"], "Halfway There");
}
