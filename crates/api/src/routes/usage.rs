//! `GET /v1/admin/usage`: usage per tenant per UTC day, as JSON or CSV, for
//! cost attribution and billing exports (`crate::ops::usage`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::{Days, NaiveDate, Utc};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::ops::usage::{self, UsageKey, UsageRow};
use crate::pagination::{Page, PageParams};
use crate::problem::{ApiError, FieldError, Json, Query};
use crate::request::PlatformAdmin;
use crate::state::AppState;

/// This module's routes, each registered once with its OpenAPI operation.
pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(list_usage))
}

/// The longest range one request may ask for.
const MAX_DAYS: u64 = 366;
/// The header carrying a CSV page's next cursor.
pub const NEXT_CURSOR_HEADER: &str = "next-cursor";

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageParams {
    /// First day (UTC, `YYYY-MM-DD`), default 30 days before `to`.
    #[param(format = Date)]
    pub from: Option<String>,
    /// Last day, inclusive (default today, UTC).
    #[param(format = Date)]
    pub to: Option<String>,
    /// One tenant's rows only.
    pub tenant: Option<Uuid>,
    /// `json` (default) or `csv`.
    #[param(pattern = "^(json|csv)$")]
    pub format: Option<String>,
    #[param(schema_with = crate::pagination::limit_schema)]
    pub limit: Option<String>,
    /// The `next_cursor` (CSV: the `Next-Cursor` header) of the previous page.
    #[param(schema_with = crate::pagination::cursor_schema)]
    pub cursor: Option<String>,
}

fn day(field: &str, raw: Option<&str>) -> Result<Option<NaiveDate>, FieldError> {
    raw.map(|r| {
        NaiveDate::parse_from_str(r, "%Y-%m-%d")
            .map_err(|_| FieldError::new(field, "must be a date, YYYY-MM-DD"))
    })
    .transpose()
}

/// Usage per tenant per UTC day: requests, database time, rows written,
/// storage, analytics events, jobs run and egress bytes. Each row's `id` is
/// stable for its (tenant, day), so an export can be re-read idempotently.
/// Ordered by day, then tenant; keyset pages. Counts reach the table within
/// about 10 s (each server flushes its counters in batches).
#[utoipa::path(get, path = "/v1/admin/usage", tag = "admin", params(UsageParams),
    responses((status = 200,
               description = "JSON, or `text/csv` with `format=csv` (next page in the `Next-Cursor` header)",
               content((Page<UsageRow> = "application/json"), (String = "text/csv")))),
    security(("admin_token" = [])))]
pub async fn list_usage(
    _: PlatformAdmin,
    State(state): State<Arc<AppState>>,
    Query(params): Query<UsageParams>,
) -> Result<Response, ApiError> {
    let mut errors = Vec::new();
    let to = day("to", params.to.as_deref()).unwrap_or_else(|e| {
        errors.push(e);
        None
    });
    let from = day("from", params.from.as_deref()).unwrap_or_else(|e| {
        errors.push(e);
        None
    });
    let csv = match params.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => {
            errors.push(FieldError::new("format", "must be json or csv"));
            false
        }
    };
    // Query parameters: 400, as every list's (API.md, "Conventions").
    if !errors.is_empty() {
        let why: Vec<String> = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect();
        return Err(ApiError::BadRequest(why.join("; ")));
    }
    let to = to.unwrap_or_else(|| Utc::now().date_naive());
    let from = from.unwrap_or_else(|| to.checked_sub_days(Days::new(30)).unwrap_or(to));
    if from > to {
        return Err(ApiError::BadRequest("from must not be after to".to_owned()));
    }
    if (to - from).num_days() as u64 >= MAX_DAYS {
        return Err(ApiError::BadRequest(format!(
            "from and to may be at most {MAX_DAYS} days apart"
        )));
    }
    let limit = PageParams {
        limit: params.limit.clone(),
        cursor: None,
    }
    .limit()?;
    // A cursor belongs to this very list: the same range and tenant.
    let list = format!(
        "usage:{from}:{to}:{}",
        params.tenant.map(|t| t.to_string()).unwrap_or_default()
    );
    let page = PageParams {
        limit: None,
        cursor: params.cursor.clone(),
    };
    let after: Option<UsageKey> = page.after(Uuid::nil(), &list)?;
    let rows = usage::list(&state.db, from, to, params.tenant, after, limit + 1).await?;
    let page = Page::from_rows(
        rows,
        limit,
        Uuid::nil(),
        &list,
        |r: &UsageRow| (r.day, r.tenant_id),
        |r| r,
    );
    if !csv {
        return Ok(Json(page).into_response());
    }
    let mut response = (
        [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
        usage::csv(&page.items),
    )
        .into_response();
    if let Some(next) = page.next_cursor
        && let Ok(value) = HeaderValue::from_str(&next)
    {
        response.headers_mut().insert(NEXT_CURSOR_HEADER, value);
    }
    Ok(response)
}
