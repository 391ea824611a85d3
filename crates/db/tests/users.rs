//! User provisioning: a new user is written, a changed email or name is
//! refreshed, and a user already as the token says is only read (no row
//! lock, no write: the commit waits for no WAL flush).

use tenantry_db::testing::FreshDatabase;
use tenantry_db::{Db, DbOptions};
use uuid::Uuid;

const TIMEOUT_MS: u32 = 5_000;

/// The user's row: email, name, and its `xmax` (0 unless a transaction
/// locked or updated it since it was written).
async fn row(fresh: &FreshDatabase, id: Uuid) -> Option<(Option<String>, Option<String>, String)> {
    let client = fresh.connect().await;
    client
        .query_opt(
            "SELECT email, display_name, xmax::text FROM users WHERE id = $1",
            &[&id],
        )
        .await
        .expect("read the user")
        .map(|r| (r.get(0), r.get(1), r.get(2)))
}

#[tokio::test]
async fn provisioning_writes_only_what_is_new_or_changed() {
    let fresh = FreshDatabase::migrated().await;
    let db = Db::connect(&fresh.url, &DbOptions::default()).expect("pool");
    let id = Uuid::now_v7();
    let provision = |email: Option<&'static str>, name: Option<&'static str>| {
        let db = db.clone();
        async move {
            tenantry_db::users::provision(&db, id, email, name, TIMEOUT_MS)
                .await
                .expect("provision")
        }
    };

    provision(Some("ada@example.com"), Some("Ada")).await;
    let (email, name, xmax) = row(&fresh, id).await.expect("the user is created");
    assert_eq!(email.as_deref(), Some("ada@example.com"));
    assert_eq!(name.as_deref(), Some("Ada"));
    assert_eq!(xmax, "0");

    // Seen again as before, or by a token that carries no email or name:
    // nothing is written, and the row is not even locked.
    provision(Some("ada@example.com"), Some("Ada")).await;
    provision(None, None).await;
    provision(None, Some("Ada")).await;
    let (email, name, xmax) = row(&fresh, id).await.expect("the user is kept");
    assert_eq!(
        (email.as_deref(), name.as_deref()),
        (Some("ada@example.com"), Some("Ada"))
    );
    assert_eq!(xmax, "0", "an unchanged user was locked or written");

    // A changed email is refreshed; the name the token leaves out is kept.
    provision(Some("ada@lovelace.example"), None).await;
    let (email, name, _) = row(&fresh, id).await.expect("the user is kept");
    assert_eq!(email.as_deref(), Some("ada@lovelace.example"));
    assert_eq!(name.as_deref(), Some("Ada"));

    // Nothing written, no community told; a change tells each of theirs.
    assert_eq!(provision(None, None).await, Vec::<Uuid>::new());
    let tenant = tenantry_db::tenants::create(
        &db,
        &tenantry_db::tenants::NewTenant {
            slug: "ada".to_owned(),
            name: "Ada's".to_owned(),
            tier: "free".to_owned(),
            domain: None,
            owner_user_id: id,
            settings: serde_json::json!({}),
            features: serde_json::json!({}),
            join_policy: tenantry_core::JoinPolicy::Invite,
            api_version: "2026-12-06".to_owned(),
        },
        TIMEOUT_MS,
    )
    .await
    .expect("create a tenant");
    assert_eq!(provision(None, Some("Ada")).await, Vec::<Uuid>::new());
    assert_eq!(provision(None, Some("Ada L.")).await, vec![tenant.id]);

    // Two nodes seeing a new user at once: one row, no error.
    let other = Uuid::now_v7();
    let (a, b) = tokio::join!(
        tenantry_db::users::provision(&db, other, Some("b@example.com"), None, TIMEOUT_MS),
        tenantry_db::users::provision(&db, other, Some("b@example.com"), None, TIMEOUT_MS),
    );
    a.expect("first");
    b.expect("second");
    let (email, _, _) = row(&fresh, other).await.expect("the user is created");
    assert_eq!(email.as_deref(), Some("b@example.com"));
}
