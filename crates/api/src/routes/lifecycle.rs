//! The tenant lifecycle's routes: exports and their downloads, imports,
//! backups, restores and clones (platform admin), and ownership transfer
//! (platform admin, or the current owner).

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tenantry_core::{Role, TenantSlug};
use tenantry_db::TenantContext;
use tenantry_db::lifecycle::{self, Ids, LifecycleError, Target, exports};
use tenantry_jobs::lifecycle::{LoadPayload, enqueue_export, enqueue_load};
use tokio::io::AsyncWriteExt as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::config::PLATFORM_STATEMENT_TIMEOUT_MS;
use crate::pagination::{Page, PageParams, TimeKey};
use crate::problem::{ApiError, FieldError, Json, Path, Query};
use crate::request::{PlatformAdmin, Scope};
use crate::state::AppState;

/// This module's routes, each registered once with its OpenAPI operation.
pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(create_export))
        .routes(routes!(get_export))
        .routes(routes!(download_export))
        .routes(routes!(import_tenant))
        .routes(routes!(list_backups))
        .routes(routes!(restore))
        .routes(routes!(admin_transfer_owner))
        .routes(routes!(transfer_owner))
}

/// The largest archive an import accepts.
pub const IMPORT_LIMIT: u64 = 64 << 30;

/// An export as the admin API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExportView {
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// `manual` or `scheduled` (a backup).
    pub kind: String,
    /// `running`, `ready` or `failed`.
    pub status: String,
    pub job_id: Option<Uuid>,
    /// The archive's size, once ready.
    pub bytes: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Why it failed.
    pub error: Option<String>,
    /// `{format, schema_version, schema_fingerprint, created_at, tenant, tables: [{name, rows, sha256}]}`, once ready.
    #[schema(value_type = Option<Object>)]
    pub manifest: Option<Value>,
}

impl From<exports::Export> for ExportView {
    fn from(e: exports::Export) -> Self {
        Self {
            id: e.id,
            tenant_id: e.tenant_id,
            kind: e.kind,
            status: e.status,
            job_id: e.job_id,
            bytes: e.bytes,
            created_at: e.created_at,
            finished_at: e.finished_at,
            error: e.error,
            manifest: e.manifest,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExportStarted {
    pub export_id: Uuid,
    pub job_id: Uuid,
}

async fn tenant(state: &AppState, id: Uuid) -> Result<tenantry_db::tenants::Tenant, ApiError> {
    let t = tenantry_db::tenants::find(
        &state.db,
        tenantry_db::tenants::Lookup::Id(id),
        PLATFORM_STATEMENT_TIMEOUT_MS,
    )
    .await?
    .ok_or_else(|| ApiError::not_found("tenant"))?;
    // Exports, backups, restores and transfers read and write the tenant's
    // rows through the control database's queue and records: a tenant of
    // another cell is refused rather than exported empty.
    if t.cell != crate::cells::MAIN {
        return Err(ApiError::Conflict(format!(
            "the tenant lives in the cell {:?}: exports, backups, restores and transfers \
             run for tenants of the cell main (move it there first)",
            t.cell
        )));
    }
    Ok(t)
}

/// Starts an export: one consistent snapshot of every row of the tenant.
#[utoipa::path(post, path = "/v1/admin/tenants/{id}/exports", tag = "lifecycle",
    responses((status = 409, body = crate::problem::Problem, description = "The tenant lives in another cell than `main` (`conflict`)."), (status = 202, body = ExportStarted), (status = 404, body = crate::problem::Problem)),
    security(("admin_token" = [])))]
pub async fn create_export(
    _: PlatformAdmin,
    State(state): State<Arc<AppState>>,
    Path(id): Path<Uuid>,
) -> Result<(StatusCode, Json<ExportStarted>), ApiError> {
    let t = tenant(&state, id).await?;
    if t.status == tenantry_core::TenantStatus::Importing {
        return Err(ApiError::Conflict(
            "the tenant is still being imported".to_owned(),
        ));
    }
    let mut tx = state
        .db
        .begin(&TenantContext::tenant(id, PLATFORM_STATEMENT_TIMEOUT_MS))
        .await?;
    let Some((export, job)) = enqueue_export(&mut tx, id, "manual", None, None).await? else {
        unreachable!("an export without an idempotency key is always enqueued");
    };
    tx.commit().await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(ExportStarted {
            export_id: export.id,
            job_id: job.id,
        }),
    ))
}

async fn export(state: &AppState, id: Uuid) -> Result<exports::Export, ApiError> {
    exports::get(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::not_found("export"))
}

#[utoipa::path(get, path = "/v1/admin/exports/{id}", tag = "lifecycle",
    responses((status = 200, body = ExportView), (status = 404, body = crate::problem::Problem)),
    security(("admin_token" = [])))]
pub async fn get_export(
    _: PlatformAdmin,
    State(state): State<Arc<AppState>>,
    Path(id): Path<Uuid>,
) -> Result<Json<ExportView>, ApiError> {
    Ok(Json(export(&state, id).await?.into()))
}

/// The archive, streamed: a gzip-compressed tar of `manifest.json` and one
/// NDJSON file per table.
#[utoipa::path(get, path = "/v1/admin/exports/{id}/download", tag = "lifecycle",
    responses((status = 200, content_type = "application/gzip", body = Vec<u8>),
              (status = 404, body = crate::problem::Problem),
              (status = 409, body = crate::problem::Problem, description = "The export is not ready (`conflict`).")),
    security(("admin_token" = [])))]
pub async fn download_export(
    _: PlatformAdmin,
    State(state): State<Arc<AppState>>,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    let e = export(&state, id).await?;
    if e.status != "ready" {
        return Err(ApiError::Conflict(format!(
            "the export is {}, not ready",
            e.status
        )));
    }
    let path = state
        .batch
        .export_dir
        .join(e.file.unwrap_or_else(|| exports::file_name(id)));
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|_| ApiError::NotFound("the export's archive is gone".to_owned()))?;
    let len = file
        .metadata()
        .await
        .map_err(|e| ApiError::Internal(e.into()))?
        .len();
    let stream = tokio_util_stream(file);
    Ok((
        [
            (header::CONTENT_TYPE, "application/gzip".to_owned()),
            (header::CONTENT_LENGTH, len.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"tenant-{}-{id}.tar.gz\"",
                    e.tenant_id
                ),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// A file as a stream of chunks (constant memory).
fn tokio_util_stream(
    file: tokio::fs::File,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send {
    use tokio::io::AsyncReadExt as _;
    futures::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0u8; 256 << 10];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    })
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ImportParams {
    /// The new tenant's slug.
    pub slug: String,
    /// `keep` (default): the archive's ids, refused (409) if they collide
    /// with rows here; `new`: every id replaced, references kept consistent.
    pub ids: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ImportStarted {
    pub tenant_id: Uuid,
    pub job_id: Uuid,
}

fn lifecycle_error(e: LifecycleError) -> ApiError {
    match e {
        LifecycleError::Archive { .. } => {
            ApiError::Validation(vec![FieldError::new("archive", e.to_string())])
        }
        LifecycleError::Collision(m) => ApiError::Conflict(m),
        LifecycleError::NotFound => ApiError::not_found("tenant"),
        LifecycleError::Db(e) => e.into(),
        LifecycleError::Io { .. } => ApiError::Internal(anyhow::anyhow!("{e}")),
    }
}

/// Removes a file when dropped, unless kept.
struct Upload {
    path: PathBuf,
    keep: bool,
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Imports an export archive (the request body, streamed) as a new tenant.
/// The archive is checked against its manifest before anything is written;
/// the tenant is `importing` until its rows are in, then `active`.
#[utoipa::path(post, path = "/v1/admin/tenants/import", tag = "lifecycle", params(ImportParams),
    request_body(content = Vec<u8>, content_type = "application/gzip",
                 description = "An export archive (`GET /v1/admin/exports/{id}/download`)."),
    responses((status = 202, body = ImportStarted),
              (status = 409, body = crate::problem::Problem, description = "The slug is taken, or the archive's ids collide with rows here (`conflict`)."),
              (status = 413, body = crate::problem::Problem),
              (status = 422, body = crate::problem::Problem, description = "Not a valid archive, or it does not match its manifest: the error names the table.")),
    security(("admin_token" = [])))]
pub async fn import_tenant(
    _: PlatformAdmin,
    State(state): State<Arc<AppState>>,
    Query(params): Query<ImportParams>,
    body: Body,
) -> Result<(StatusCode, Json<ImportStarted>), ApiError> {
    let slug =
        TenantSlug::parse(&params.slug).map_err(|e| ApiError::validation("slug", e.to_string()))?;
    let ids = match params.ids.as_deref() {
        None | Some("keep") => Ids::Keep,
        Some("new") => Ids::New,
        Some(_) => return Err(ApiError::validation("ids", "must be keep or new")),
    };
    let dir = state.batch.export_dir.join("imports");
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("create {}: {e}", dir.display())))?;
    let name = format!("imports/{}.tar.gz", Uuid::new_v4());
    let mut upload = Upload {
        path: state.batch.export_dir.join(&name),
        keep: false,
    };
    receive(body, &upload.path).await?;
    let path = upload.path.clone();
    let manifest = tokio::task::spawn_blocking(move || lifecycle::verify(&path))
        .await
        .map_err(|e| ApiError::Internal(e.into()))?
        .map_err(lifecycle_error)?;
    let tenant_id = lifecycle::create_importing(&state.db, &manifest, slug.as_str(), ids)
        .await
        .map_err(lifecycle_error)?;
    let mut tx = state
        .db
        .begin(&TenantContext::tenant(
            tenant_id,
            PLATFORM_STATEMENT_TIMEOUT_MS,
        ))
        .await?;
    let job = enqueue_load(
        &mut tx,
        tenant_id,
        &LoadPayload {
            file: name,
            into: Target::New,
            ids,
            remove_file: true,
        },
    )
    .await?;
    tx.commit().await?;
    upload.keep = true;
    state.registry.invalidate(None, tenant_id).await;
    Ok((
        StatusCode::ACCEPTED,
        Json(ImportStarted {
            tenant_id,
            job_id: job.id,
        }),
    ))
}

/// Streams a request body into `path`, up to [`IMPORT_LIMIT`] bytes.
async fn receive(body: Body, path: &std::path::Path) -> Result<(), ApiError> {
    let file = tokio::fs::File::create(path)
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("create {}: {e}", path.display())))?;
    let mut out = tokio::io::BufWriter::with_capacity(1 << 20, file);
    let mut stream = body.into_data_stream();
    let mut size = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::BadRequest(format!("could not read the request body: {e}")))?;
        size += chunk.len() as u64;
        if size > IMPORT_LIMIT {
            return Err(ApiError::PayloadTooLarge {
                limit: usize::try_from(IMPORT_LIMIT).unwrap_or(usize::MAX),
            });
        }
        out.write_all(&chunk)
            .await
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("write the upload: {e}")))?;
    }
    out.flush()
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("write the upload: {e}")))?;
    Ok(())
}

/// The tenant's exports, newest first: scheduled backups (tier
/// `backup_every_hours`, `backups_kept`) and manual exports.
#[utoipa::path(get, path = "/v1/admin/tenants/{id}/backups", tag = "lifecycle", params(PageParams),
    responses((status = 409, body = crate::problem::Problem, description = "The tenant lives in another cell than `main` (`conflict`)."), (status = 200, body = Page<ExportView>), (status = 404, body = crate::problem::Problem)),
    security(("admin_token" = [])))]
pub async fn list_backups(
    _: PlatformAdmin,
    State(state): State<Arc<AppState>>,
    Path(id): Path<Uuid>,
    Query(page): Query<PageParams>,
) -> Result<Json<Page<ExportView>>, ApiError> {
    let limit = page.limit()?;
    let after: Option<TimeKey> = page.after(id, "backups")?;
    tenant(&state, id).await?;
    let rows = exports::list(&state.db, id, after.map(Into::into), limit + 1).await?;
    Ok(Json(Page::from_rows(
        rows,
        limit,
        id,
        "backups",
        |e| TimeKey::from(e.keyset()),
        ExportView::from,
    )))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Restore {
    /// A ready export (of this tenant or another).
    pub export_id: Uuid,
    /// `replace`: the tenant's data becomes exactly the export's, atomically
    /// for readers. `clone`: a new tenant (slug required) with new ids.
    #[schema(schema_with = restore_mode)]
    pub mode: String,
    /// The clone's slug.
    #[schema(schema_with = crate::openapi::slug)]
    pub slug: Option<String>,
}

fn restore_mode() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(["replace", "clone"]))
        .build()
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RestoreStarted {
    pub job_id: Uuid,
    /// The tenant whose data the job writes (the new one for a clone).
    pub tenant_id: Uuid,
}

/// Restores an export into the tenant (`replace`) or into a new tenant
/// (`clone`).
#[utoipa::path(post, path = "/v1/admin/tenants/{id}/restore", tag = "lifecycle", request_body = Restore,
    responses((status = 202, body = RestoreStarted), (status = 404, body = crate::problem::Problem),
              (status = 409, body = crate::problem::Problem, description = "The export is not ready, or the clone's slug is taken (`conflict`)."),
              (status = 422, body = crate::problem::Problem)),
    security(("admin_token" = [])))]
pub async fn restore(
    _: PlatformAdmin,
    State(state): State<Arc<AppState>>,
    Path(id): Path<Uuid>,
    Json(body): Json<Restore>,
) -> Result<(StatusCode, Json<RestoreStarted>), ApiError> {
    let into = match body.mode.as_str() {
        "replace" => Target::Replace,
        "clone" => Target::New,
        _ => return Err(ApiError::validation("mode", "must be replace or clone")),
    };
    let slug = match (into, &body.slug) {
        (Target::New, Some(s)) => {
            Some(TenantSlug::parse(s).map_err(|e| ApiError::validation("slug", e.to_string()))?)
        }
        (Target::New, None) => return Err(ApiError::validation("slug", "a clone needs a slug")),
        (Target::Replace, _) => None,
    };
    tenant(&state, id).await?;
    let e = exports::get(&state.db, body.export_id)
        .await?
        .ok_or_else(|| ApiError::not_found("export"))?;
    if e.status != "ready" {
        return Err(ApiError::Conflict(format!(
            "the export is {}, not ready",
            e.status
        )));
    }
    let file = e.file.unwrap_or_else(|| exports::file_name(e.id));
    let (target, ids) = match slug {
        None => (id, Ids::Keep),
        Some(slug) => {
            let path = state.batch.export_dir.join(&file);
            let manifest = tokio::task::spawn_blocking(move || lifecycle::read_manifest(&path))
                .await
                .map_err(|e| ApiError::Internal(e.into()))?
                .map_err(lifecycle_error)?;
            let new = lifecycle::create_importing(&state.db, &manifest, slug.as_str(), Ids::New)
                .await
                .map_err(lifecycle_error)?;
            (new, Ids::New)
        }
    };
    let mut tx = state
        .db
        .begin(&TenantContext::tenant(
            target,
            PLATFORM_STATEMENT_TIMEOUT_MS,
        ))
        .await?;
    let job = enqueue_load(
        &mut tx,
        target,
        &LoadPayload {
            file,
            into,
            ids,
            remove_file: false,
        },
    )
    .await?;
    tx.commit().await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(RestoreStarted {
            job_id: job.id,
            tenant_id: target,
        }),
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferOwner {
    /// The new owner: a member of the tenant.
    pub user_id: Uuid,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OwnerView {
    pub tenant_id: Uuid,
    pub owner_user_id: Uuid,
    /// The previous owner, now an admin.
    pub previous_owner_user_id: Uuid,
}

fn transfer_error(e: lifecycle::owner::TransferError) -> ApiError {
    use lifecycle::owner::TransferError;
    match e {
        TransferError::NotFound => ApiError::not_found("tenant"),
        TransferError::NotAMember => {
            ApiError::validation("user_id", "the new owner must be a member of the tenant")
        }
        TransferError::NotOwner => {
            ApiError::Forbidden("only the tenant's owner may transfer ownership".to_owned())
        }
        TransferError::Db(e) => e.into(),
    }
}

/// Transfers a tenant's ownership (platform admin). The old owner becomes
/// an admin; audited.
#[utoipa::path(post, path = "/v1/admin/tenants/{id}/owner", tag = "lifecycle", request_body = TransferOwner,
    responses((status = 409, body = crate::problem::Problem, description = "The tenant lives in another cell than `main` (`conflict`)."), (status = 200, body = OwnerView), (status = 404, body = crate::problem::Problem),
              (status = 422, body = crate::problem::Problem)),
    security(("admin_token" = [])))]
pub async fn admin_transfer_owner(
    _: PlatformAdmin,
    State(state): State<Arc<AppState>>,
    Path(id): Path<Uuid>,
    Json(body): Json<TransferOwner>,
) -> Result<Json<OwnerView>, ApiError> {
    let before = tenant(&state, id).await?;
    let mut tx = state
        .db
        .begin(&TenantContext::tenant(id, PLATFORM_STATEMENT_TIMEOUT_MS))
        .await?;
    let done = lifecycle::owner::transfer(&mut tx, id, body.user_id, None)
        .await
        .map_err(transfer_error)?;
    tx.commit().await?;
    state.tenant_changed(Some(&before), id).await;
    state.cache.bump_list(id, "").await;
    Ok(Json(OwnerView {
        tenant_id: id,
        owner_user_id: done.to,
        previous_owner_user_id: done.from,
    }))
}

/// Hands the tenant to another member (the current owner only). The old
/// owner becomes an admin; audited.
#[utoipa::path(post, path = "/v1/tenant/owner", tag = "lifecycle", request_body = TransferOwner,
    responses((status = 200, body = OwnerView), (status = 403, body = crate::problem::Problem),
              (status = 422, body = crate::problem::Problem)),
    security(("user_jwt" = [], "tenant" = [])))]
pub async fn transfer_owner(
    State(state): State<Arc<AppState>>,
    mut scope: Scope,
    Json(body): Json<TransferOwner>,
) -> Result<Json<OwnerView>, ApiError> {
    scope.require(Role::Owner).await?;
    let (id, actor) = (scope.tenant.id, scope.user.id);
    let done = lifecycle::owner::transfer(&mut scope.tx, id, body.user_id, Some(actor))
        .await
        .map_err(transfer_error)?;
    let before = scope.tenant.clone();
    scope.tx.commit().await?;
    state.tenant_changed(Some(&before), id).await;
    state.cache.bump_list(id, "").await;
    Ok(Json(OwnerView {
        tenant_id: id,
        owner_user_id: done.to,
        previous_owner_user_id: done.from,
    }))
}
