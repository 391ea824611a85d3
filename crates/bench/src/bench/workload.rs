//! Who the load is sent as: tenants, their members (with minted tokens) and
//! some of their posts, discovered through the HTTP API itself.
//!
//! Discovering over HTTP (admin list, then each tenant's members and newest
//! posts as its owner) works the same against a self-hosted server and a
//! running one, and needs no database access from the bench. Tokens are
//! minted locally with the server's JWT secret, as `tenantry token` does.

use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use hyper::Method;
use hyper::header::HeaderValue;
use serde_json::{Value, json};
use tenantry_api::request::auth::JwtKeys;
use uuid::Uuid;

use super::client::{Connection, Endpoint, Headers, bearer};

/// A member the bench acts as.
#[derive(Debug, Clone)]
pub struct UserTarget {
    pub id: Uuid,
    pub auth: HeaderValue,
}

/// A tenant under load.
#[derive(Debug, Clone)]
pub struct TenantTarget {
    pub id: Uuid,
    pub slug: String,
    pub tier: String,
    pub member_count: i64,
    pub header: HeaderValue,
    /// The owner first, then other members (up to 100).
    pub users: Vec<UserTarget>,
    /// Some of the newest posts (up to 100); may be empty.
    pub posts: Vec<Uuid>,
    /// A `/v1/posts` cursor `Discovery::deep_rows` rows deep (the deep-page
    /// scenario), issued by the server itself while walking the list.
    pub deep_cursor: Option<String>,
}

/// The tenants a run uses.
#[derive(Debug, Clone, Default)]
pub struct Workload {
    pub tenants: Vec<TenantTarget>,
    /// Tenants whose rate limits were lifted, with the overrides they had
    /// before (`null` where they had none), for [`restore_limits`].
    pub lifted: Vec<(Uuid, Value)>,
}

impl Workload {
    /// The tenant with the most members (the natural noisy neighbour), or
    /// the one named.
    pub fn pick_noisy(&self, slug: Option<&str>) -> anyhow::Result<usize> {
        match slug {
            Some(slug) => self
                .tenants
                .iter()
                .position(|t| t.slug == slug)
                .with_context(|| {
                    format!("--noisy-tenant {slug} is not among the benchmarked tenants")
                }),
            None => self
                .tenants
                .iter()
                .enumerate()
                .max_by_key(|(i, t)| (t.member_count, std::cmp::Reverse(*i)))
                .map(|(i, _)| i)
                .context("no tenants to choose a noisy neighbour from"),
        }
    }
}

/// How discovery finds and prepares tenants.
pub struct Discovery<'a> {
    pub endpoint: Endpoint,
    pub admin_token: &'a str,
    pub jwt_secret: &'a str,
    /// How many tenants to use (fewer if the server has fewer).
    pub tenants: usize,
    /// Tenants that must be included if they exist (e.g. `--noisy-tenant`).
    pub include: Vec<String>,
    /// Raise the tenants' rate limits out of the way.
    pub lift_limits: bool,
    /// Lift only the first this many tenants' limits (the busy ones of a
    /// skewed spread); `usize::MAX`: all.
    pub lift_first: usize,
    /// Each tenant's owner only: no member or post lists (the tenant
    /// scenario over 100,000 tenants needs nothing else, and a visit per
    /// tenant would warm the server before it is measured).
    pub light: bool,
    pub token_ttl: Duration,
    /// Walk each tenant's post list this many rows deep and keep the
    /// cursor there (0: don't).
    pub deep_rows: usize,
}

/// What `--limits lift` sets on each benchmarked tenant: rates far above
/// what two cores can serve, so the limiter still runs but never rejects.
pub const LIFTED_RATE: u32 = 1_000_000;

/// Finds tenants, their members and posts; mints tokens.
pub async fn discover(d: &Discovery<'_>) -> anyhow::Result<Workload> {
    let mut conn = Connection::new(d.endpoint.clone(), Duration::from_secs(30));
    let admin = Headers {
        auth: Some(bearer(d.admin_token)?),
        tenant: None,
    };
    let keys = JwtKeys::new(d.jwt_secret.as_bytes());

    let mut listed: Vec<Value> = Vec::new();
    let mut cursor: Option<String> = None;
    let enough = |listed: &Vec<Value>| {
        listed.len() >= d.tenants
            && d.include
                .iter()
                .all(|s| listed.iter().any(|t| t["slug"].as_str() == Some(s)))
    };
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/admin/tenants?limit=100&cursor={c}"),
            None => "/v1/admin/tenants?limit=100".to_owned(),
        };
        let page = get_json(&mut conn, &path, &admin)
            .await
            .context("Failed to list tenants through the admin API (is --admin-token right?)")?;
        for t in page["items"].as_array().into_iter().flatten() {
            if t["status"].as_str() == Some("active") {
                listed.push(t.clone());
            }
        }
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        if cursor.is_none() || enough(&listed) {
            break;
        }
    }
    // The named tenants first, then the others in list order.
    listed.sort_by_key(|t| {
        !d.include
            .iter()
            .any(|s| t["slug"].as_str() == Some(s.as_str()))
    });
    listed.truncate(d.tenants.max(d.include.len()));

    let mut tenants = Vec::with_capacity(listed.len());
    let mut lifted = Vec::new();
    for (i, t) in listed.into_iter().enumerate() {
        let id: Uuid = parse_field(&t, "id")?;
        let slug = t["slug"]
            .as_str()
            .context("a tenant has a slug")?
            .to_owned();
        let owner: Uuid = parse_field(&t, "owner_user_id")?;
        let header = HeaderValue::from_str(&slug).context("a slug is a valid header value")?;
        let token = |user: Uuid| -> anyhow::Result<UserTarget> {
            let jwt = keys
                .issue(user, d.token_ttl, None, None)
                .context("Failed to mint a token")?;
            Ok(UserTarget {
                id: user,
                auth: bearer(&jwt)?,
            })
        };
        let as_owner = Headers {
            auth: Some(token(owner)?.auth),
            tenant: Some(header.clone()),
        };
        if d.lift_limits && i < d.lift_first {
            let before: serde_json::Map<String, Value> = LIFTED_KEYS
                .iter()
                .map(|k| ((*k).to_owned(), t["limits"][*k].clone()))
                .collect();
            let body = json!({"limits": {
                "rate_per_sec": LIFTED_RATE, "burst": LIFTED_RATE, "user_rate_per_sec": LIFTED_RATE,
                "analytics_events_per_day": LIFTED_EVENTS_PER_DAY,
            }});
            let answer = conn
                .send(
                    Method::PATCH,
                    &format!("/v1/admin/tenants/{id}"),
                    &admin,
                    Some(Bytes::from(body.to_string())),
                )
                .await?;
            anyhow::ensure!(
                answer.status.is_success(),
                "Failed to lift the limits of {slug}: {} {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            );
            lifted.push((id, Value::Object(before)));
        }
        if d.light {
            tenants.push(TenantTarget {
                id,
                slug,
                tier: t["tier"].as_str().unwrap_or_default().to_owned(),
                member_count: t["member_count"].as_i64().unwrap_or(0),
                header,
                users: vec![token(owner)?],
                posts: Vec::new(),
                deep_cursor: None,
            });
            continue;
        }
        let members = get_json(&mut conn, "/v1/members?limit=100", &as_owner)
            .await
            .with_context(|| format!("Failed to list the members of {slug} as its owner"))?;
        let mut users = vec![token(owner)?];
        for m in members["items"].as_array().into_iter().flatten() {
            let user: Uuid = parse_field(m, "user_id")?;
            if user != owner {
                users.push(token(user)?);
            }
        }
        let posts = get_json(&mut conn, "/v1/posts?limit=100", &as_owner)
            .await
            .with_context(|| format!("Failed to list the posts of {slug}"))?;
        let posts = posts["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| parse_field(p, "id"))
            .collect::<anyhow::Result<Vec<Uuid>>>()?;
        let deep_cursor = if d.deep_rows > 0 {
            deep_cursor(&mut conn, &as_owner, d.deep_rows)
                .await
                .with_context(|| format!("Failed to walk the posts of {slug}"))?
        } else {
            None
        };
        tenants.push(TenantTarget {
            id,
            slug,
            tier: t["tier"].as_str().unwrap_or_default().to_owned(),
            member_count: t["member_count"].as_i64().unwrap_or(0),
            header,
            users,
            posts,
            deep_cursor,
        });
    }
    Ok(Workload { tenants, lifted })
}

/// Follows `next_cursor` through the post list, 100 rows a page, until
/// `rows` rows lie behind it; `None` if the list is shorter.
async fn deep_cursor(
    conn: &mut Connection,
    headers: &Headers,
    rows: usize,
) -> anyhow::Result<Option<String>> {
    let mut cursor: Option<String> = None;
    for _ in 0..rows.div_ceil(100) {
        let path = match &cursor {
            Some(c) => format!("/v1/posts?limit=100&cursor={c}"),
            None => "/v1/posts?limit=100".to_owned(),
        };
        let page = get_json(conn, &path, headers).await?;
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return Ok(None),
        }
    }
    Ok(cursor)
}

/// The limit overrides `--limits lift` sets (and restores afterwards).
const LIFTED_KEYS: &[&str] = &[
    "rate_per_sec",
    "burst",
    "user_rate_per_sec",
    "analytics_events_per_day",
];

/// The daily analytics quota `--limits lift` sets: the ingest scenario
/// sends millions of events.
pub const LIFTED_EVENTS_PER_DAY: u64 = 1_000_000_000_000;

/// Puts back the rate-limit overrides the tenants had before the run (a key
/// they did not override is removed again), so a bench leaves the target's
/// tenants as it found them.
pub async fn restore_limits(
    endpoint: &Endpoint,
    admin_token: &str,
    workload: &Workload,
) -> anyhow::Result<()> {
    let mut conn = Connection::new(endpoint.clone(), Duration::from_secs(30));
    let admin = Headers {
        auth: Some(bearer(admin_token)?),
        tenant: None,
    };
    for (id, before) in &workload.lifted {
        let body = json!({ "limits": before });
        let answer = conn
            .send(
                Method::PATCH,
                &format!("/v1/admin/tenants/{id}"),
                &admin,
                Some(Bytes::from(body.to_string())),
            )
            .await?;
        anyhow::ensure!(
            answer.status.is_success(),
            "Failed to restore the limits of tenant {id}: {} {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
    }
    Ok(())
}

async fn get_json(conn: &mut Connection, path: &str, headers: &Headers) -> anyhow::Result<Value> {
    let answer = conn.send(Method::GET, path, headers, None).await?;
    anyhow::ensure!(
        answer.status.is_success(),
        "GET {path} answered {}: {}",
        answer.status,
        String::from_utf8_lossy(&answer.body)
    );
    serde_json::from_slice(&answer.body).with_context(|| format!("GET {path} did not answer JSON"))
}

fn parse_field(v: &Value, field: &str) -> anyhow::Result<Uuid> {
    v[field]
        .as_str()
        .and_then(|s| Uuid::parse_str(s).ok())
        .with_context(|| format!("expected a UUID in `{field}`"))
}
