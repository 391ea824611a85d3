//! The operator's view of every tenant: performance, the busiest tenants
//! and alerts (see [`crate::observe`]).

use std::sync::Arc;

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::config::PLATFORM_STATEMENT_TIMEOUT_MS;
use crate::observe::alerts::{ALERT_COLUMNS, AlertView};
use crate::observe::history::{self, Point, Window};
use crate::pagination::Page;
use crate::problem::{ApiError, FieldError, Json, Path, Query};
use crate::request::PlatformAdmin;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(performance))
        .routes(routes!(top))
        .routes(routes!(list_alerts))
        .routes(routes!(dashboard))
}

/// The operator's dashboard: one self-contained page (no external assets),
/// built into the binary. It asks for the admin token once and reads the
/// admin API with it.
const DASHBOARD: &str = include_str!("../observe/dashboard.html");

#[utoipa::path(get, path = "/admin", tag = "ops",
    responses((status = 200, description = "The operator's dashboard (HTML, JavaScript and CSS in one page)",
        content_type = "text/html", body = String)))]
pub async fn dashboard() -> axum::response::Html<&'static str> {
    axum::response::Html(DASHBOARD)
}

/// A window's totals.
#[derive(Debug, Serialize, Default, utoipa::ToSchema)]
pub struct Summary {
    pub requests: u64,
    pub requests_per_sec: f64,
    pub errors: u64,
    pub error_rate: f64,
    pub throttled: u64,
    pub shed: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    /// Time holding a database slot (and its connection), in ms.
    pub db_time_ms: f64,
    /// Time queued for the fair database share, 99th percentile, in ms.
    pub db_wait_p99_ms: f64,
    /// Cache hits ÷ lookups; null without lookups.
    pub cache_hit_rate: Option<f64>,
}

impl Summary {
    fn of(p: &Point, seconds: f64) -> Self {
        let lookups = p.cache_hits + p.cache_misses;
        Self {
            requests: p.requests,
            requests_per_sec: p.requests as f64 / seconds.max(1.0),
            errors: p.errors,
            error_rate: p.errors as f64 / p.requests.max(1) as f64,
            throttled: p.throttled,
            shed: p.shed,
            p50_ms: p.latency.quantile_ms(0.5),
            p95_ms: p.latency.quantile_ms(0.95),
            p99_ms: p.latency.quantile_ms(0.99),
            db_time_ms: p.db_time_us as f64 / 1_000.0,
            db_wait_p99_ms: p.db_wait.quantile_ms(0.99),
            cache_hit_rate: (lookups > 0).then(|| p.cache_hits as f64 / lookups as f64),
        }
    }
}

/// One point of the series: a minute (an hour for `7d`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SeriesPoint {
    pub at: DateTime<Utc>,
    pub requests: u64,
    pub errors: u64,
    pub throttled: u64,
    pub shed: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub db_time_ms: f64,
    pub db_wait_p99_ms: f64,
}

impl From<&Point> for SeriesPoint {
    fn from(p: &Point) -> Self {
        Self {
            at: p.at,
            requests: p.requests,
            errors: p.errors,
            throttled: p.throttled,
            shed: p.shed,
            p50_ms: p.latency.quantile_ms(0.5),
            p95_ms: p.latency.quantile_ms(0.95),
            p99_ms: p.latency.quantile_ms(0.99),
            db_time_ms: p.db_time_us as f64 / 1_000.0,
            db_wait_p99_ms: p.db_wait.quantile_ms(0.99),
        }
    }
}

/// A tenant's storage as the last storage pass counted it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Storage {
    pub bytes: i64,
    /// Rows by tenant table.
    #[schema(value_type = Object)]
    pub rows: Value,
    /// When it was counted; null before the first pass.
    pub computed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Performance {
    pub tenant_id: Uuid,
    pub window: String,
    pub summary: Summary,
    pub series: Vec<SeriesPoint>,
    pub storage: Storage,
    /// The thresholds in force: the tier's with the tenant's own.
    #[schema(value_type = Object)]
    pub thresholds: tenantry_core::Thresholds,
    /// The tenant's open alerts.
    pub alerts: Vec<AlertView>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WindowParams {
    /// `15m` (default), `1h`, `24h` or `7d`.
    #[param(pattern = "^(15m|1h|24h|7d)$")]
    pub window: Option<String>,
}

fn window(raw: Option<&str>) -> Result<(Window, String), ApiError> {
    let raw = raw.unwrap_or("15m");
    Window::parse(raw)
        .map(|w| (w, raw.to_owned()))
        .ok_or_else(|| {
            ApiError::Validation(vec![FieldError::new(
                "window",
                "must be one of 15m, 1h, 24h, 7d",
            )])
        })
}

/// Sums points into one.
fn total(points: impl IntoIterator<Item = Point>) -> Point {
    let mut sum = Point::default();
    for p in points {
        sum.add(&p);
    }
    sum
}

/// A tenant's request rate, latency percentiles, errors, throttles, database
/// time and wait, cache hit rate, storage, thresholds and open alerts over a
/// window; `series` has a point per minute (per hour for `7d`).
#[utoipa::path(get, path = "/v1/admin/tenants/{id}/performance", tag = "admin",
    params(WindowParams),
    responses((status = 200, body = Performance), (status = 404, body = crate::problem::Problem),
              (status = 422, body = crate::problem::Problem)),
    security(("admin_token" = [])))]
pub async fn performance(
    _: PlatformAdmin,
    State(state): State<Arc<AppState>>,
    Path(id): Path<Uuid>,
    Query(params): Query<WindowParams>,
) -> Result<Json<Performance>, ApiError> {
    let (win, name) = window(params.window.as_deref())?;
    let tenant = tenantry_db::tenants::find(
        &state.db,
        tenantry_db::tenants::Lookup::Id(id),
        PLATFORM_STATEMENT_TIMEOUT_MS,
    )
    .await?
    .ok_or_else(|| ApiError::not_found("tenant"))?;
    let points = history::read(&state.db, Some(id), win).await?;
    let series: Vec<SeriesPoint> = points.iter().map(|(_, p)| p.into()).collect();
    let sum = total(points.into_iter().map(|(_, p)| p));
    let storage = crate::observe::storage::of(&state.db, id).await?;
    let own = history::as_observer(
        &state.db,
        "SELECT thresholds FROM tenants WHERE id = $1",
        &[&id],
    )
    .await?
    .first()
    .map_or(Value::Null, |r| r.get(0));
    let alerts = alerts_page(
        &state,
        &AlertFilter {
            state: "open",
            tenant: Some(id),
            after: None,
            limit: 100,
        },
    )
    .await?;
    Ok(Json(Performance {
        tenant_id: id,
        window: name,
        summary: Summary::of(&sum, f64::from(win.minutes) * 60.0),
        series,
        storage: match storage {
            Some((bytes, rows, at)) => Storage {
                bytes,
                rows,
                computed_at: Some(at),
            },
            None => Storage {
                bytes: 0,
                rows: Value::Object(Default::default()),
                computed_at: None,
            },
        },
        thresholds: crate::observe::effective(&state, &tenant.tier, &own),
        alerts,
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TopParams {
    /// `requests` (default), `p99`, `errors`, `throttled`, `db_time` or `db_wait`.
    #[param(pattern = "^(requests|p99|errors|throttled|db_time|db_wait)$")]
    pub by: Option<String>,
    /// `15m` (default), `1h`, `24h` or `7d`.
    #[param(pattern = "^(15m|1h|24h|7d)$")]
    pub window: Option<String>,
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page (the ranking goes on after it).
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TopTenant {
    pub tenant_id: Uuid,
    pub slug: String,
    pub tier: String,
    /// The measure ranked by.
    pub value: f64,
    pub summary: Summary,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TopTenants {
    pub items: Vec<TopTenant>,
    /// More of the ranking after the last item, if any.
    pub next_cursor: Option<String>,
}

/// The busiest tenants by a measure over a window.
#[utoipa::path(get, path = "/v1/admin/tenants/top", tag = "admin",
    params(TopParams),
    responses((status = 200, body = TopTenants), (status = 422, body = crate::problem::Problem)),
    security(("admin_token" = [])))]
pub async fn top(
    _: PlatformAdmin,
    State(state): State<Arc<AppState>>,
    Query(params): Query<TopParams>,
) -> Result<Json<TopTenants>, ApiError> {
    let (win, _) = window(params.window.as_deref())?;
    let by = params.by.as_deref().unwrap_or("requests");
    let measure: fn(&Summary) -> f64 = match by {
        "requests" => |s| s.requests as f64,
        "p99" => |s| s.p99_ms,
        "errors" => |s| s.errors as f64,
        "throttled" => |s| s.throttled as f64,
        "db_time" => |s| s.db_time_ms,
        "db_wait" => |s| s.db_wait_p99_ms,
        _ => {
            return Err(ApiError::Validation(vec![FieldError::new(
                "by",
                "must be one of requests, p99, errors, throttled, db_time, db_wait",
            )]));
        }
    };
    let limit = match params.limit {
        None => 20,
        Some(n @ 1..=100) => n as usize,
        Some(_) => {
            return Err(ApiError::Validation(vec![FieldError::new(
                "limit",
                "must be from 1 to 100",
            )]));
        }
    };
    let points = history::read(&state.db, None, win).await?;
    let mut by_tenant: std::collections::HashMap<Uuid, Point> = Default::default();
    for (id, p) in points {
        by_tenant.entry(id).or_default().add(&p);
    }
    let seconds = f64::from(win.minutes) * 60.0;
    let mut ranked: Vec<(Uuid, Summary)> = by_tenant
        .iter()
        .map(|(id, p)| (*id, Summary::of(p, seconds)))
        .collect();
    ranked.sort_by(|a, b| measure(&b.1).total_cmp(&measure(&a.1)).then(a.0.cmp(&b.0)));
    // Keyset over the ranking: after (value, tenant) of the previous page.
    if let Some(raw) = params.cursor.as_deref() {
        let bad = || ApiError::BadRequest("the cursor is not valid".into());
        let (v, id) = raw.split_once('_').ok_or_else(bad)?;
        let (v, id) = (
            v.parse::<f64>().map_err(|_| bad())?,
            Uuid::parse_str(id).map_err(|_| bad())?,
        );
        ranked.retain(|(t, s)| {
            let m = measure(s);
            m < v || (m == v && *t > id)
        });
    }
    let more = ranked.len() > limit;
    ranked.truncate(limit);
    let next_cursor = more
        .then(|| ranked.last().map(|(id, s)| format!("{}_{id}", measure(s))))
        .flatten();
    let ids: Vec<Uuid> = ranked.iter().map(|(id, _)| *id).collect();
    let names: std::collections::HashMap<Uuid, (String, String)> = history::as_observer(
        &state.db,
        "SELECT id, slug, tier FROM tenants WHERE id = ANY($1) AND status <> 'deleted'",
        &[&ids],
    )
    .await?
    .iter()
    .map(|r| (r.get(0), (r.get(1), r.get(2))))
    .collect();
    let items = ranked
        .into_iter()
        .filter_map(|(id, summary)| {
            let (slug, tier) = names.get(&id)?.clone();
            Some(TopTenant {
                tenant_id: id,
                slug,
                tier,
                value: measure(&summary),
                summary,
            })
        })
        .collect();
    Ok(Json(TopTenants { items, next_cursor }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AlertParams {
    /// `open` (default), `resolved` or `all`.
    #[param(pattern = "^(open|resolved|all)$")]
    pub state: Option<String>,
    /// Only this tenant's alerts.
    pub tenant: Option<Uuid>,
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

struct AlertFilter<'a> {
    state: &'a str,
    tenant: Option<Uuid>,
    /// The last id of the previous page.
    after: Option<Uuid>,
    limit: i64,
}

async fn alerts_page(state: &AppState, f: &AlertFilter<'_>) -> Result<Vec<AlertView>, ApiError> {
    let sql = format!(
        "SELECT {ALERT_COLUMNS} FROM tenant_alerts a JOIN tenants t ON t.id = a.tenant_id
          WHERE ($1::uuid IS NULL OR a.tenant_id = $1)
            AND ($2 = 'all' OR ($2 = 'open') = (a.resolved_at IS NULL))
            AND ($3::uuid IS NULL OR a.id < $3)
          ORDER BY a.id DESC LIMIT $4"
    );
    let rows =
        history::as_observer(&state.db, &sql, &[&f.tenant, &f.state, &f.after, &f.limit]).await?;
    rows.iter()
        .map(AlertView::read)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::from(tenantry_db::DbError::from(e)))
}

/// Alerts, newest first (keyset).
#[utoipa::path(get, path = "/v1/admin/alerts", tag = "admin",
    params(AlertParams),
    responses((status = 200, body = Page<AlertView>), (status = 400, body = crate::problem::Problem),
              (status = 422, body = crate::problem::Problem)),
    security(("admin_token" = [])))]
pub async fn list_alerts(
    _: PlatformAdmin,
    State(state): State<Arc<AppState>>,
    Query(params): Query<AlertParams>,
) -> Result<Json<Page<AlertView>>, ApiError> {
    let which = params.state.as_deref().unwrap_or("open");
    if !matches!(which, "open" | "resolved" | "all") {
        return Err(ApiError::Validation(vec![FieldError::new(
            "state",
            "must be one of open, resolved, all",
        )]));
    }
    let limit = match params.limit {
        None => 20,
        Some(n @ 1..=100) => i64::from(n),
        Some(_) => {
            return Err(ApiError::Validation(vec![FieldError::new(
                "limit",
                "must be from 1 to 100",
            )]));
        }
    };
    let after = params
        .cursor
        .as_deref()
        .map(|c| {
            Uuid::parse_str(c).map_err(|_| ApiError::BadRequest("the cursor is not valid".into()))
        })
        .transpose()?;
    let mut items = alerts_page(
        &state,
        &AlertFilter {
            state: which,
            tenant: params.tenant,
            after,
            limit: limit + 1,
        },
    )
    .await?;
    let next_cursor = if items.len() as i64 > limit {
        items.truncate(usize::try_from(limit).unwrap_or(20));
        items.last().map(|a| a.id.to_string())
    } else {
        None
    };
    Ok(Json(Page { items, next_cursor }))
}
