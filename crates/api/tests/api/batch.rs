//! Batch processing through the API: group-committed analytics ingestion,
//! daily statistics, announcements and notifications, the audit log and the
//! admin's view of the job queue.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::*;

fn events(n: usize, kind: &str) -> Value {
    let list: Vec<Value> = (0..n)
        .map(|i| json!({"type": kind, "properties": {"i": i}}))
        .collect();
    json!({ "events": list })
}

#[tokio::test]
async fn analytics_events_are_committed_before_the_202_and_counted_by_day() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let member = app.member(&owner, "member").await;
    let res = app
        .as_user(&member, Method::POST, "/v1/analytics/events")
        .json(&json!({"events": [
            {"type": "page_view", "properties": {"path": "/"}},
            {"type": "click"},
            {"type": "page_view", "occurred_at": "2026-01-02T03:04:05Z"}
        ]}))
        .fetch()
        .await;
    let body = assert_json(res, StatusCode::ACCEPTED).await;
    assert_eq!(body["accepted"], 3);
    // Durable at the moment of the answer: no waiting.
    assert_eq!(app.count("SELECT count(*) FROM analytics_events").await, 3);

    let stats = assert_json(
        app.as_user(
            &owner,
            Method::GET,
            "/v1/stats/daily?from=2026-01-01&to=2026-01-03",
        )
        .fetch()
        .await,
        StatusCode::OK,
    )
    .await;
    let days = stats["items"].as_array().expect("items");
    assert_eq!(days.len(), 3);
    assert_eq!(days[1]["day"], "2026-01-02");
    assert_eq!(days[1]["analytics_events"], 1);
    assert_eq!(days[1]["active_users"], 1);
    assert_eq!(days[0]["analytics_events"], 0);

    crate::events::event(&app, &owner, "Bouldering night", 48).await;
    let today = assert_json(
        app.as_user(&owner, Method::GET, "/v1/stats/daily")
            .fetch()
            .await,
        StatusCode::OK,
    )
    .await;
    let days = today["items"].as_array().expect("items");
    assert_eq!(days.len(), 30);
    assert_eq!(days[29]["analytics_events"], 2);
    assert_eq!(days[29]["active_users"], 1);
    assert_eq!(days[29]["events"], 1, "community events created today");
}

#[tokio::test]
async fn a_failed_group_commit_answers_503_and_writes_nothing_of_it() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    // A deferred constraint trigger fails the transaction at COMMIT, after
    // every statement succeeded: the worst moment for a group commit.
    app.raw_db()
        .await
        .batch_execute(
            "CREATE FUNCTION explode() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF NEW.type = 'explode' THEN RAISE EXCEPTION 'commit refused'; END IF;
                 RETURN NULL;
             END $$;
             CREATE CONSTRAINT TRIGGER explode AFTER INSERT ON analytics_events_default
                 DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION explode();",
        )
        .await
        .expect("trigger");
    // Monthly partitions may exist (maintenance): put the trigger on them too.
    let raw = app.raw_db().await;
    let parts = raw
        .query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'analytics_events'::regclass
               AND c.relname <> 'analytics_events_default'",
            &[],
        )
        .await
        .expect("partitions");
    for p in parts {
        let name: String = p.get(0);
        raw.batch_execute(&format!(
            "CREATE CONSTRAINT TRIGGER explode AFTER INSERT ON {name}
                 DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION explode()"
        ))
        .await
        .expect("trigger on partition");
    }

    let bad = app
        .as_user(&owner, Method::POST, "/v1/analytics/events")
        .json(&json!({"events": [{"type": "fine"}, {"type": "explode"}]}));
    let goods: Vec<_> = (0..5)
        .map(|_| {
            app.as_user(&owner, Method::POST, "/v1/analytics/events")
                .json(&events(10, "fine"))
                .fetch()
        })
        .collect();
    let (bad, goods) = tokio::join!(bad.fetch(), futures::future::join_all(goods));
    assert_problem(bad, StatusCode::SERVICE_UNAVAILABLE, "overloaded").await;
    for good in goods {
        assert_eq!(
            assert_json(good, StatusCode::ACCEPTED).await["accepted"],
            10
        );
    }
    // Nothing of the refused request, everything of the others.
    assert_eq!(app.count("SELECT count(*) FROM analytics_events").await, 50);
    assert_eq!(
        app.count("SELECT coalesce(sum(analytics_received), 0)::int8 FROM tenant_daily_stats")
            .await,
        50
    );
}

#[tokio::test]
async fn the_daily_analytics_quota_refuses_a_request_whole() {
    let app = TestApp::spawn().await;
    let (tenant, owner) = app.tenant("acme").await;
    let id = tenant["id"].as_str().expect("id");
    let res = app
        .admin(Method::PATCH, &format!("/v1/admin/tenants/{id}"))
        .json(&json!({"limits": {"analytics_events_per_day": 5}}))
        .fetch()
        .await;
    assert_json(res, StatusCode::OK).await;
    let send = |n| {
        app.as_user(&owner, Method::POST, "/v1/analytics/events")
            .json(&events(n, "e"))
            .fetch()
    };
    assert_json(send(3).await, StatusCode::ACCEPTED).await;
    assert_problem(send(3).await, StatusCode::FORBIDDEN, "quota_exceeded").await;
    assert_json(send(2).await, StatusCode::ACCEPTED).await;
    assert_problem(send(1).await, StatusCode::FORBIDDEN, "quota_exceeded").await;
    assert_eq!(app.count("SELECT count(*) FROM analytics_events").await, 5);
}

#[tokio::test]
async fn bad_analytics_requests_are_refused_with_problems() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let post = |body: Value| {
        app.as_user(&owner, Method::POST, "/v1/analytics/events")
            .json(&body)
            .fetch()
    };
    assert_problem(
        post(events(1_001, "e")).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_problem(
        post(json!({"events": []})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let body = assert_problem(
        post(json!({"events": [{"type": "ok"}, {"type": "x", "properties": [1]}]})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(body["errors"][0]["field"], "events[1].properties");
    assert_problem(
        post(json!({"events": [{"type": "x", "occurred_at": "1999-01-01T00:00:00Z"}]})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_problem(
        post(json!({"events": [{"type": ""}]})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let stranger = app.user("acme");
    let res = app
        .as_user(&stranger, Method::POST, "/v1/analytics/events")
        .json(&events(1, "e"))
        .fetch()
        .await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    let member = app.member(&owner, "member").await;
    let res = app
        .as_user(&member, Method::GET, "/v1/stats/daily")
        .fetch()
        .await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    let res = app
        .as_user(
            &owner,
            Method::GET,
            "/v1/stats/daily?from=2026-02-01&to=2026-01-01",
        )
        .fetch()
        .await;
    assert_problem(res, StatusCode::BAD_REQUEST, "bad_request").await;
    assert_eq!(app.count("SELECT count(*) FROM analytics_events").await, 0);
}

async fn unread(app: &TestApp, user: &User) -> Vec<Value> {
    let page = assert_json(
        app.as_user(user, Method::GET, "/v1/notifications?unread=true")
            .fetch()
            .await,
        StatusCode::OK,
    )
    .await;
    items(&page).clone()
}

#[tokio::test]
async fn an_announcement_notifies_each_member_once_and_they_can_read_it() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.tenant("acme").await;
    let members = [
        app.member(&owner, "member").await,
        app.member(&owner, "moderator").await,
        app.member(&owner, "member").await,
    ];
    let (_, other_owner) = app.tenant("other").await;

    let res = app
        .as_user(&members[0], Method::POST, "/v1/announcements")
        .json(&json!({"title": "Hi", "message": "Hello"}))
        .fetch()
        .await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    let res = app
        .as_user(&owner, Method::POST, "/v1/announcements")
        .json(&json!({"title": "", "message": "Hello"}))
        .fetch()
        .await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;

    let res = app
        .as_user(&owner, Method::POST, "/v1/announcements")
        .json(&json!({"title": "Season opening", "message": "Saturday at 10"}))
        .fetch()
        .await;
    let accepted = assert_json(res, StatusCode::ACCEPTED).await;
    assert!(accepted["job_id"].is_string());

    for m in &members {
        eventually("the member is notified", || async {
            unread(&app, m).await.len() == 1
        })
        .await;
    }
    // The owner is a member too; the other tenant hears nothing.
    assert_eq!(unread(&app, &owner).await.len(), 1);
    assert!(unread(&app, &other_owner).await.is_empty());
    let raw_count = app.count("SELECT count(*) FROM notifications").await;
    assert_eq!(raw_count, 4, "exactly one per member");

    let note = &unread(&app, &members[0]).await[0];
    assert_eq!(note["title"], "Season opening");
    let read = |user: &User, body: Value| {
        app.as_user(user, Method::POST, "/v1/notifications/read")
            .json(&body)
            .fetch()
    };
    let marked = assert_json(
        read(&members[0], json!({"ids": [note["id"]]})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(marked["marked"], 1);
    assert!(unread(&app, &members[0]).await.is_empty());
    let all = assert_json(
        app.as_user(&members[0], Method::GET, "/v1/notifications")
            .fetch()
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(items(&all).len(), 1);
    assert!(items(&all)[0]["read_at"].is_string());
    // Someone else's notification id changes nothing.
    let other = &unread(&app, &members[1]).await[0];
    let marked = assert_json(
        read(&members[0], json!({"ids": [other["id"]]})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(marked["marked"], 0);
    let marked = assert_json(
        read(&members[1], json!({"all": true})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(marked["marked"], 1);
    assert_problem(
        read(&members[1], json!({})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let res = app
        .as_user(&members[0], Method::GET, "/v1/notifications?unread=maybe")
        .fetch()
        .await;
    assert_problem(res, StatusCode::BAD_REQUEST, "bad_request").await;
}

#[tokio::test]
async fn membership_moderation_and_admin_changes_are_in_the_audit_log() {
    let app = TestApp::spawn().await;
    let (tenant, owner) = app.tenant("acme").await;
    let id = tenant["id"].as_str().expect("id");
    let member = app.member(&owner, "member").await;
    let moderator = app.member(&owner, "moderator").await;
    let res = app
        .as_user(&owner, Method::PATCH, &format!("/v1/members/{}", member.id))
        .json(&json!({"role": "admin"}))
        .fetch()
        .await;
    assert_json(res, StatusCode::OK).await;
    let post = app.post(&owner, "spam?").await;
    let res = app
        .as_user(&moderator, Method::DELETE, &format!("/v1/posts/{post}"))
        .fetch()
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    // The author deleting their own post is not moderation.
    let own = app.post(&moderator, "mine").await;
    let res = app
        .as_user(&moderator, Method::DELETE, &format!("/v1/posts/{own}"))
        .fetch()
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = app
        .admin(Method::PATCH, &format!("/v1/admin/tenants/{id}"))
        .json(&json!({"settings": {"theme": "dark"}}))
        .fetch()
        .await;
    assert_json(res, StatusCode::OK).await;

    let (sizes, entries) = app.walk(&owner, "/v1/audit-log", 2).await;
    assert_eq!(sizes, vec![2, 2, 1]);
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().expect("action"))
        .collect();
    assert_eq!(
        actions,
        vec![
            "tenant.update",
            "post.moderate",
            "member.role",
            "member.add",
            "member.add"
        ]
    );
    assert_eq!(entries[0]["actor_id"], Value::Null);
    assert_eq!(entries[0]["details"]["settings"]["theme"], "dark");
    assert_eq!(entries[1]["actor_id"], json!(moderator.id));
    assert_eq!(entries[1]["target"], json!(post));
    assert_eq!(
        entries[2]["details"],
        json!({"from": "member", "to": "admin"})
    );

    let res = app
        .as_user(&moderator, Method::GET, "/v1/audit-log")
        .fetch()
        .await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    // Another tenant's admin sees only their own log.
    let (_, other) = app.tenant("other").await;
    let page = assert_json(
        app.as_user(&other, Method::GET, "/v1/audit-log")
            .fetch()
            .await,
        StatusCode::OK,
    )
    .await;
    assert!(items(&page).is_empty());
}

#[tokio::test]
async fn the_admin_sees_queue_depth_and_retries_or_discards_dead_letters() {
    let app = TestApp::spawn().await;
    let (tenant, _owner) = app.tenant("acme").await;
    let tenant_id: Uuid = tenant["id"].as_str().expect("id").parse().expect("uuid");
    let raw = app.raw_db().await;
    let job = Uuid::now_v7();
    raw.execute(
        "INSERT INTO jobs (tenant_id, id, queue, kind, max_attempts, state, attempts,
                           last_error, finished_at)
         VALUES ($1, $2, 'default', 'nobody.handles.this', 1, 'dead', 1, 'boom', now())",
        &[&tenant_id, &job],
    )
    .await
    .expect("dead job");
    raw.execute(
        "INSERT INTO jobs (tenant_id, id, kind, run_at)
         VALUES ($1, $2, 'later', now() + interval '1 hour')",
        &[&tenant_id, &Uuid::now_v7()],
    )
    .await
    .expect("waiting job");

    let view = assert_json(
        app.admin(Method::GET, "/v1/admin/jobs").fetch().await,
        StatusCode::OK,
    )
    .await;
    let dead = view["dead_letters"].as_array().expect("dead letters");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["id"], json!(job));
    assert_eq!(dead[0]["last_error"], "boom");
    let depth = view["depth"].as_array().expect("depth");
    assert_eq!(depth.len(), 1);
    assert_eq!(depth[0]["tenant_slug"], "acme");
    assert_eq!(
        (depth[0]["ready"].clone(), depth[0]["dead"].clone()),
        (json!(1), json!(1))
    );

    let res = app
        .admin(Method::POST, &format!("/v1/admin/jobs/{job}/retry"))
        .fetch()
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    // No handler: it runs once more and is dead again.
    eventually("the retried job dies again", || async {
        raw.query_one("SELECT state FROM jobs WHERE id = $1", &[&job])
            .await
            .expect("job")
            .get::<_, String>(0)
            == "dead"
    })
    .await;
    let res = app
        .admin(Method::DELETE, &format!("/v1/admin/jobs/{job}"))
        .fetch()
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = app
        .admin(Method::DELETE, &format!("/v1/admin/jobs/{job}"))
        .fetch()
        .await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    let res = app.request(Method::GET, "/v1/admin/jobs").fetch().await;
    assert_unauthenticated(res).await;
}

#[tokio::test]
async fn likes_on_a_hot_post_are_applied_as_one_update_and_reads_stay_exact() {
    let app = TestApp::spawn_configured(None, |mut state| {
        // The test applies the counters itself.
        state.batch.counter_interval = std::time::Duration::from_secs(3_600);
        state
    })
    .await;
    let (_, owner) = app.tenant("acme").await;
    let post = app.post(&owner, "hot").await;
    let mut fans = Vec::new();
    for _ in 0..8 {
        fans.push(app.member(&owner, "member").await);
    }
    let likes = fans.iter().map(|fan| {
        app.as_user(fan, Method::POST, &format!("/v1/posts/{post}/like"))
            .fetch()
    });
    for res in futures::future::join_all(likes).await {
        assert_eq!(res.status(), StatusCode::OK);
    }
    let res = app
        .as_user(&owner, Method::POST, &format!("/v1/posts/{post}/comments"))
        .json(&json!({"content": "nice"}))
        .fetch()
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let unlike = app
        .as_user(&fans[0], Method::DELETE, &format!("/v1/posts/{post}/like"))
        .fetch()
        .await;
    assert_eq!(assert_json(unlike, StatusCode::OK).await["like_count"], 7);

    // Not applied yet: the stored counter is behind, the post read is exact.
    assert_eq!(
        app.count("SELECT like_count::int8 FROM posts").await,
        0,
        "nothing applied yet"
    );
    let read = assert_json(
        app.as_user(&owner, Method::GET, &format!("/v1/posts/{post}"))
            .fetch()
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (read["like_count"].clone(), read["comment_count"].clone()),
        (json!(7), json!(1))
    );

    let applied = tenantry_jobs::counters::flush(&app.state.db)
        .await
        .expect("flush");
    // 1 new post + 8 likes + 1 unlike + 1 comment, into one UPDATE of the post.
    assert_eq!(applied.deltas, 11);
    assert_eq!(applied.posts, 1);
    assert_eq!(app.count("SELECT like_count::int8 FROM posts").await, 7);
    assert_eq!(app.count("SELECT comment_count::int8 FROM posts").await, 1);
    assert_eq!(
        app.count("SELECT count(*) FROM post_counter_deltas").await,
        0
    );
    let read = assert_json(
        app.as_user(&owner, Method::GET, &format!("/v1/posts/{post}"))
            .fetch()
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(read["like_count"], 7);
    let list = assert_json(
        app.as_user(&owner, Method::GET, "/v1/posts").fetch().await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(items(&list)[0]["like_count"], 7);

    let stats = assert_json(
        app.as_user(&owner, Method::GET, "/v1/stats/daily")
            .fetch()
            .await,
        StatusCode::OK,
    )
    .await;
    let today = &stats["items"][29];
    assert_eq!(today["posts"], 1);
    assert_eq!(
        today["likes"], 8,
        "likes given today (unlikes not subtracted)"
    );
    assert_eq!(today["comments"], 1);
    assert_eq!(today["active_users"], 9, "the owner and eight fans");
    assert_eq!(
        tenantry_jobs::counters::flush(&app.state.db)
            .await
            .expect("flush"),
        Default::default()
    );
}
