//! A tenant's data as one verifiable archive: export, import, restore.
//!
//! An export is a gzip-compressed tar of `manifest.json` followed by one
//! NDJSON file per table (`<table>.ndjson`, one JSON object per row, keys
//! the column names). The manifest names the format
//! ([`FORMAT`]), the schema it was taken from, the tenant's record and, per
//! table, its row count and the SHA-256 of its file:
//!
//! ```json
//! {"format": "tenantry-export/v1", "schema_version": 70, "schema_fingerprint": "…",
//!  "created_at": "…", "tenant": {…},
//!  "tables": [{"name": "users", "rows": 12, "sha256": "…"}, {"name": "posts", …}]}
//! ```
//!
//! - Which tables: every tenant table the catalog names
//!   (`tenantry_tenant_tables()`, partitioned tables through their parent),
//!   less the deployment's own machinery listed in `tenantry_lifecycle_skip`
//!   (the job queue); columns from the catalog too, less `tenant_id` (the
//!   archive is one tenant's; an import writes its own), generated columns
//!   (derived) and identity columns (numbered by the database that holds
//!   the row). Plus `users`: the users the tenant's rows reference by
//!   foreign key and its owner, so an import can provision them.
//! - [`export`] reads them all in one `REPEATABLE READ READ ONLY`
//!   transaction (one snapshot: the archive is the tenant at one instant),
//!   as the app role in the tenant's context (row-level security is the
//!   safety net under `WHERE tenant_id = …`), each table through `COPY …
//!   TO STDOUT` straight into a file: memory stays constant however big the
//!   tenant is. Rows come in primary-key order and `TimeZone` is UTC, so the
//!   same data gives the same bytes, and the same hashes.
//! - [`load`] streams an archive back in one transaction: each table's file
//!   goes through `COPY … FROM STDIN` into a temporary staging table while
//!   its hash and row count are checked against the manifest; only when
//!   every table checked out are the rows inserted (parents before
//!   children), the tenant's record brought in line and the transaction
//!   committed. A truncated, tampered or foreign archive fails on the
//!   table it is wrong in, and writes nothing.
//! - [`Ids::New`] gives every row a new id: the `id` columns of the
//!   archive's primary keys are the tenant's own ids; each gets a new UUIDv7
//!   (keeping the old one's time, so order and index locality stay), and
//!   every uuid column of every table is rewritten through that map, so
//!   foreign keys and soft references (`job_id`, `origin_id` within the
//!   tenant) stay consistent. User ids are people, not rows: never remapped.
//! - A restore that replaces a tenant's data does the swap in that same
//!   transaction after taking the tenant's row `FOR UPDATE`: every write
//!   that inserts a row referencing the tenant takes `FOR KEY SHARE` on it,
//!   so writes wait for the swap, and readers see all old rows until the
//!   commit and all new ones after.

pub mod exports;
pub mod owner;
mod tar;

use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use futures::{SinkExt as _, StreamExt as _};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::pool::OwnerSession;
use crate::tenants::Tenant;
use crate::{Db, DbError};

/// The archive format this code writes and reads.
pub const FORMAT: &str = "tenantry-export/v1";

/// The manifest's name in the archive (its first entry).
pub const MANIFEST: &str = "manifest.json";

/// The global table of users the tenant's rows reference.
const USERS: &str = "users";

/// What an archive holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    /// The newest migration of the schema the rows were read from.
    pub schema_version: i32,
    /// [`crate::migrate::fingerprint`] of that schema, in hex.
    pub schema_fingerprint: String,
    pub created_at: DateTime<Utc>,
    /// The tenant's record as it was in the snapshot.
    pub tenant: Tenant,
    /// `users` first, then the tenant tables (children before parents).
    pub tables: Vec<TableEntry>,
}

/// One table's file in the archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableEntry {
    pub name: String,
    pub rows: u64,
    /// SHA-256 of the table's NDJSON file, hex.
    pub sha256: String,
}

impl Manifest {
    pub fn table(&self, name: &str) -> Option<&TableEntry> {
        self.tables.iter().find(|t| t.name == name)
    }

    /// All rows of every table.
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }
}

/// Why an export, an import or a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// The archive is not a valid export, or does not match its manifest;
    /// `table` names the table it is wrong in, when it is one.
    #[error("{}", archive_message(.table, .reason))]
    Archive {
        table: Option<String>,
        reason: String,
    },
    /// Keeping the archive's ids would collide with rows already here.
    #[error("{0}")]
    Collision(String),
    #[error("the tenant was not found")]
    NotFound,
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

fn archive_message(table: &Option<String>, reason: &str) -> String {
    match table {
        Some(t) => format!("table {t}: {reason}"),
        None => reason.to_owned(),
    }
}

impl From<tokio_postgres::Error> for LifecycleError {
    fn from(e: tokio_postgres::Error) -> Self {
        LifecycleError::Db(e.into())
    }
}

fn bad(table: Option<&str>, reason: impl Into<String>) -> LifecycleError {
    LifecycleError::Archive {
        table: table.map(str::to_owned),
        reason: reason.into(),
    }
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> LifecycleError {
    let context = context.into();
    move |source| LifecycleError::Io { context, source }
}

/// A table as the lifecycle reads and writes it, from the catalog.
#[derive(Debug, Clone)]
struct Table {
    /// As SQL names it (`regclass` output).
    name: String,
    /// Foreign-key depth among tenant tables (0: nothing references it).
    depth: i32,
    /// Exported columns, in table order, with whether each is a uuid.
    columns: Vec<(String, bool)>,
    /// The row order: the primary key's exported columns, or every column
    /// when the key has one that is not exported.
    order: Vec<String>,
    /// Its primary key has a uuid `id`: the tenant's own ids, remapped by
    /// [`Ids::New`].
    keyed: bool,
    /// Columns with a foreign key to `users`.
    user_refs: Vec<String>,
}

/// The lifecycle's tables, `users` last: every tenant table but those in
/// `tenantry_lifecycle_skip`, children before parents.
const TABLES: &str = "
    WITH t AS (
        SELECT tbl, depth FROM tenantry_tenant_tables()
        WHERE tbl NOT IN (SELECT tbl FROM tenantry_lifecycle_skip)
        UNION ALL
        SELECT 'users'::regclass, -1
    )
    SELECT t.tbl::text, t.depth,
           array_agg(a.attname::text ORDER BY a.attnum),
           array_agg(a.atttypid = 'uuid'::regtype ORDER BY a.attnum),
           coalesce((SELECT array_agg(pa.attname::text ORDER BY k.ord)
                     FROM pg_index i
                     CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
                     JOIN pg_attribute pa ON pa.attrelid = i.indrelid AND pa.attnum = k.attnum
                     WHERE i.indrelid = t.tbl AND i.indisprimary), '{}'),
           coalesce((SELECT array_agg(DISTINCT fa.attname::text)
                     FROM pg_constraint c
                     JOIN pg_attribute fa ON fa.attrelid = c.conrelid AND fa.attnum = c.conkey[1]
                     WHERE c.conrelid = t.tbl AND c.contype = 'f'
                       AND c.confrelid = 'users'::regclass), '{}')
    FROM t
    JOIN pg_attribute a ON a.attrelid = t.tbl AND a.attnum > 0 AND NOT a.attisdropped
    WHERE a.attname <> 'tenant_id' AND a.attgenerated = '' AND a.attidentity = ''
    GROUP BY t.tbl, t.depth
    ORDER BY t.depth DESC, t.tbl::text";

async fn tables(conn: &tokio_postgres::Client) -> Result<Vec<Table>, LifecycleError> {
    let rows = conn.query(TABLES, &[]).await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let name: String = r.try_get(0)?;
        let columns: Vec<String> = r.try_get(2)?;
        let uuids: Vec<bool> = r.try_get(3)?;
        let pk: Vec<String> = r.try_get(4)?;
        let key: Vec<String> = pk.into_iter().filter(|c| c != "tenant_id").collect();
        let exported = |c: &String| columns.contains(c);
        let order = if !key.is_empty() && key.iter().all(exported) {
            key.clone()
        } else {
            columns.clone()
        };
        let keyed = name != USERS
            && key.iter().any(|c| c == "id")
            && columns.iter().zip(&uuids).any(|(c, u)| c == "id" && *u);
        out.push(Table {
            depth: r.try_get(1)?,
            columns: columns.into_iter().zip(uuids).collect(),
            order,
            keyed,
            user_refs: r.try_get(5)?,
            name,
        });
    }
    // Users first: an import provisions them before the rows naming them.
    out.sort_by_key(|t| (t.name != USERS, -t.depth, t.name.clone()));
    Ok(out)
}

/// Quotes an identifier for SQL.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn file_name(table: &str) -> String {
    format!("{}.ndjson", table.trim_matches('"'))
}

/// COPY options that pass each line through untouched: CSV whose quote and
/// delimiter are control characters JSON text never holds raw (JSON escapes
/// every control character), so nothing is ever quoted or escaped.
const RAW_LINES: &str = "(FORMAT csv, QUOTE e'\\x01', DELIMITER e'\\x02')";

/// A connection in a transaction of the lifecycle's own, as the app role in
/// one tenant's context ([`OwnerSession`]: dropped before it commits, it
/// rolls back whatever await it stopped at).
struct Session;

impl Session {
    async fn begin(db: &Db, tenant: Uuid, snapshot: bool) -> Result<OwnerSession, LifecycleError> {
        let begin = if snapshot {
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
        } else {
            "BEGIN"
        };
        // A uuid formatted by Rust: nothing to inject.
        let prelude = format!(
            "{begin}; SELECT set_config('role', '{}', true), \
             set_config('tenantry.tenant_ids', '{{{tenant}}}', true), \
             set_config('tenantry.user_id', '', true), \
             set_config('TimeZone', 'UTC', true), \
             set_config('statement_timeout', '0', true)",
            crate::pool::APP_ROLE
        );
        Ok(OwnerSession::begin(db, &prelude).await?)
    }
}

/// What [`export`] made.
#[derive(Debug, Clone)]
pub struct Exported {
    pub manifest: Manifest,
    /// Size of the archive file.
    pub bytes: u64,
}

/// Writes the tenant's archive to `dest` (through `dest` + `.part`, renamed
/// when complete, so a file at `dest` is always a whole archive).
pub async fn export(db: &Db, tenant: Uuid, dest: &Path) -> Result<Exported, LifecycleError> {
    let session = Session::begin(db, tenant, true).await?;
    let conn = session.client();
    let found = crate::tenants::find_on(conn, tenant).await?;
    let Some(record) = found else {
        return Err(LifecycleError::NotFound);
    };
    let tables = tables(conn).await?;
    let work = tempdir_beside(dest)?;
    let mut entries = Vec::with_capacity(tables.len());
    for table in &tables {
        let path = work.join(file_name(&table.name));
        let entry = copy_out(conn, tenant, table, &tables, &path).await?;
        entries.push((entry, path));
    }
    // Nothing more to read: end the snapshot before the compression.
    session.commit().await?;
    let manifest = Manifest {
        format: FORMAT.to_owned(),
        schema_version: crate::migrate::latest_version(),
        schema_fingerprint: format!("{:016x}", crate::migrate::fingerprint()),
        created_at: Utc::now(),
        tenant: record,
        tables: entries.iter().map(|(e, _)| e.clone()).collect(),
    };
    let files: Vec<(String, PathBuf)> = entries
        .into_iter()
        .map(|(e, p)| (file_name(&e.name), p))
        .collect();
    let dest = dest.to_owned();
    let manifest_json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| LifecycleError::Db(DbError::Other(e.into())))?;
    let bytes = tokio::task::spawn_blocking(move || {
        let result = write_archive(&dest, &manifest_json, &files);
        let _ = std::fs::remove_dir_all(&work);
        result
    })
    .await
    .map_err(|e| LifecycleError::Db(DbError::Other(e.into())))??;
    Ok(Exported { manifest, bytes })
}

/// A scratch directory next to `dest` (same file system, so no copy across
/// devices), removed by the caller.
fn tempdir_beside(dest: &Path) -> Result<PathBuf, LifecycleError> {
    let parent = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io(format!("create {}", parent.display())))?;
    let dir = parent.join(format!(".work-{}", Uuid::new_v4().simple()));
    std::fs::create_dir(&dir).map_err(io(format!("create {}", dir.display())))?;
    Ok(dir)
}

/// The SELECT whose rows are a table's NDJSON lines for `tenant`.
fn select_lines(tenant: Uuid, table: &Table, all: &[Table]) -> String {
    let cols: Vec<String> = table.columns.iter().map(|(c, _)| ident(c)).collect();
    let order: Vec<String> = table
        .order
        .iter()
        .map(|c| format!("x.{}", ident(c)))
        .collect();
    let filter = if table.name == USERS {
        // The users the tenant's rows reference by foreign key, and its owner.
        let mut refs = vec![format!(
            "SELECT owner_user_id FROM tenants WHERE id = '{tenant}'"
        )];
        for t in all.iter().filter(|t| t.name != USERS) {
            for c in &t.user_refs {
                refs.push(format!(
                    "SELECT {} FROM {} WHERE tenant_id = '{tenant}'",
                    ident(c),
                    t.name
                ));
            }
        }
        format!("id IN ({})", refs.join(" UNION "))
    } else {
        format!("tenant_id = '{tenant}'")
    };
    format!(
        "SELECT row_to_json(x)::text FROM (SELECT {} FROM {} WHERE {filter}) x ORDER BY {}",
        cols.join(", "),
        table.name,
        order.join(", ")
    )
}

/// Streams one table's rows into `path`; its entry in the manifest.
async fn copy_out(
    conn: &tokio_postgres::Client,
    tenant: Uuid,
    table: &Table,
    all: &[Table],
    path: &Path,
) -> Result<TableEntry, LifecycleError> {
    use tokio::io::AsyncWriteExt as _;
    let sql = format!(
        "COPY ({}) TO STDOUT {RAW_LINES}",
        select_lines(tenant, table, all)
    );
    let stream = conn.copy_out(sql.as_str()).await?;
    futures::pin_mut!(stream);
    let file = tokio::fs::File::create(path)
        .await
        .map_err(io(format!("create {}", path.display())))?;
    let mut out = tokio::io::BufWriter::with_capacity(1 << 20, file);
    let mut hash = Sha256::new();
    let mut rows = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        hash.update(&chunk);
        rows += memchr_count(&chunk);
        out.write_all(&chunk)
            .await
            .map_err(io(format!("write {}", path.display())))?;
    }
    out.flush()
        .await
        .map_err(io(format!("write {}", path.display())))?;
    Ok(TableEntry {
        name: table.name.clone(),
        rows,
        sha256: hex::encode(hash.finalize()),
    })
}

fn memchr_count(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

fn write_archive(
    dest: &Path,
    manifest: &[u8],
    files: &[(String, PathBuf)],
) -> Result<u64, LifecycleError> {
    let part = dest.with_extension("part");
    let file = std::fs::File::create(&part).map_err(io(format!("create {}", part.display())))?;
    let mtime = Utc::now().timestamp().max(0) as u64;
    let mut gz = flate2::write::GzEncoder::new(
        BufWriter::with_capacity(1 << 20, file),
        // Fast: an export is bound by how quickly it is written, and NDJSON
        // still shrinks several times at this level.
        flate2::Compression::fast(),
    );
    let write = |gz: &mut flate2::write::GzEncoder<BufWriter<std::fs::File>>| {
        tar::write_header(gz, MANIFEST, manifest.len() as u64, mtime)?;
        gz.write_all(manifest)?;
        tar::pad(gz, manifest.len() as u64)?;
        for (name, path) in files {
            let mut f = std::fs::File::open(path)?;
            let size = f.metadata()?.len();
            tar::write_header(gz, name, size, mtime)?;
            let copied = std::io::copy(&mut f, gz)?;
            if copied != size {
                return Err(std::io::Error::other(format!(
                    "{name} changed while archived"
                )));
            }
            tar::pad(gz, size)?;
        }
        tar::finish(gz)
    };
    write(&mut gz).map_err(io(format!("write {}", part.display())))?;
    let out = gz
        .finish()
        .map_err(io(format!("write {}", part.display())))?;
    let file = out.into_inner().map_err(|e| LifecycleError::Io {
        context: format!("write {}", part.display()),
        source: e.into_error(),
    })?;
    file.sync_all()
        .map_err(io(format!("sync {}", part.display())))?;
    let bytes = file
        .metadata()
        .map_err(io(format!("stat {}", part.display())))?
        .len();
    std::fs::rename(&part, dest).map_err(io(format!("rename to {}", dest.display())))?;
    Ok(bytes)
}

/// Reads the archive entry by entry: its manifest, then each table's file
/// with its hash and row count. Used by [`verify`] and [`load`].
struct Reader {
    input: tar_input::Input,
    /// Tables read so far: the archive holds them in manifest order, so the
    /// next one is where a damaged or truncated archive breaks off.
    done: usize,
}

mod tar_input {
    pub type Input = flate2::read::GzDecoder<std::io::BufReader<std::fs::File>>;
}

impl Reader {
    fn open(path: &Path) -> Result<(Self, Manifest), LifecycleError> {
        let file = std::fs::File::open(path).map_err(io(format!("open {}", path.display())))?;
        let mut input = flate2::read::GzDecoder::new(BufReader::with_capacity(1 << 20, file));
        let header = tar::read_header(&mut input)
            .map_err(|e| bad(None, format!("not an export archive: {e}")))?
            .ok_or_else(|| bad(None, "the archive is empty"))?;
        if header.name != MANIFEST {
            return Err(bad(
                None,
                format!("the first entry is {}, not {MANIFEST}", header.name),
            ));
        }
        if header.size > 64 << 20 {
            return Err(bad(None, "the manifest is implausibly large"));
        }
        let mut text = vec![0; header.size as usize];
        if tar::read_full(&mut input, &mut text).map_err(|e| bad(None, e.to_string()))?
            != text.len()
        {
            return Err(bad(
                None,
                "the archive ends inside the manifest (truncated)",
            ));
        }
        tar::skip_pad(&mut input, header.size).map_err(|e| bad(None, e.to_string()))?;
        let manifest: Manifest = serde_json::from_slice(&text)
            .map_err(|e| bad(None, format!("the manifest is not valid: {e}")))?;
        check_schema(&manifest)?;
        Ok((Self { input, done: 0 }, manifest))
    }

    /// The next table's name and size, or `None` at the end.
    fn next_table(&mut self, manifest: &Manifest) -> Result<Option<(String, u64)>, LifecycleError> {
        let next = manifest.tables.get(self.done).map(|t| t.name.as_str());
        let header = tar::read_header(&mut self.input)
            .map_err(|e| bad(next, format!("the archive breaks off before or in it: {e}")))?;
        let Some(header) = header else {
            return Ok(None);
        };
        let table = manifest
            .tables
            .iter()
            .find(|t| file_name(&t.name) == header.name)
            .ok_or_else(|| {
                bad(
                    None,
                    format!("entry {} is not in the manifest", header.name),
                )
            })?;
        Ok(Some((table.name.clone(), header.size)))
    }

    /// Reads one table's bytes in chunks, handing each to `sink`; checks
    /// them against the manifest at the end.
    fn read_table(
        &mut self,
        manifest: &Manifest,
        name: &str,
        size: u64,
        mut sink: impl FnMut(bytes::Bytes) -> Result<(), LifecycleError>,
    ) -> Result<(), LifecycleError> {
        let entry = manifest
            .table(name)
            .ok_or_else(|| bad(Some(name), "not in the manifest"))?;
        let mut hash = Sha256::new();
        let mut rows = 0u64;
        let mut left = size;
        while left > 0 {
            let mut buf = vec![0u8; left.min(256 << 10) as usize];
            let n = tar::read_full(&mut self.input, &mut buf)
                .map_err(|e| bad(Some(name), format!("cannot be read: {e}")))?;
            if n < buf.len() {
                return Err(bad(Some(name), "the archive ends inside it (truncated)"));
            }
            hash.update(&buf);
            rows += memchr_count(&buf);
            left -= n as u64;
            sink(bytes::Bytes::from(buf))?;
        }
        tar::skip_pad(&mut self.input, size)
            .map_err(|e| bad(Some(name), format!("cannot be read: {e}")))?;
        self.done += 1;
        let sha = hex::encode(hash.finalize());
        if rows != entry.rows {
            return Err(bad(
                Some(name),
                format!("{rows} rows where the manifest says {}", entry.rows),
            ));
        }
        if sha != entry.sha256 {
            return Err(bad(
                Some(name),
                "its SHA-256 does not match the manifest (altered)",
            ));
        }
        Ok(())
    }
}

/// Refuses an archive of another format or of a newer schema than this
/// server's (an older one loads as far as its columns still exist here).
fn check_schema(manifest: &Manifest) -> Result<(), LifecycleError> {
    if manifest.format != FORMAT {
        return Err(bad(
            None,
            format!("format {:?} is not {FORMAT:?}", manifest.format),
        ));
    }
    let ours = crate::migrate::latest_version();
    if manifest.schema_version > ours {
        return Err(bad(
            None,
            format!(
                "schema version {} is newer than this server's ({ours})",
                manifest.schema_version
            ),
        ));
    }
    Ok(())
}

/// Reads a whole archive and checks every table against the manifest
/// (format, schema version, each table present once, row counts, hashes),
/// writing nothing anywhere. Blocking: call from a blocking thread.
pub fn verify(path: &Path) -> Result<Manifest, LifecycleError> {
    let (mut reader, manifest) = Reader::open(path)?;
    let mut seen = std::collections::HashSet::new();
    while let Some((name, size)) = reader.next_table(&manifest)? {
        if !seen.insert(name.clone()) {
            return Err(bad(Some(&name), "appears twice in the archive"));
        }
        reader.read_table(&manifest, &name, size, |_| Ok(()))?;
    }
    if let Some(missing) = manifest.tables.iter().find(|t| !seen.contains(&t.name)) {
        return Err(bad(
            Some(&missing.name),
            "missing from the archive (truncated?)",
        ));
    }
    Ok(manifest)
}

/// Reads only the manifest of an archive (blocking).
pub fn read_manifest(path: &Path) -> Result<Manifest, LifecycleError> {
    Reader::open(path).map(|(_, m)| m)
}

/// Whether an import keeps the archive's ids or gives every row a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Ids {
    #[default]
    Keep,
    New,
}

/// Where an archive's rows go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// A tenant made for this import ([`create_importing`]), `importing`
    /// until the load commits and makes it `active`.
    New,
    /// An existing tenant whose data is replaced, atomically for readers.
    Replace,
}

/// What a load did.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub manifest: Manifest,
    /// Rows written, users provisioned included.
    pub rows: u64,
}

/// Creates the tenant an import or clone loads into: the archive's record
/// under a new slug, `importing`, with no rows. With [`Ids::Keep`] it keeps
/// the archive's tenant id, and refuses ([`LifecycleError::Collision`]) when
/// that id is taken: every tenant table's key leads with `tenant_id`, so no
/// other row can collide. With [`Ids::New`] the tenant gets a new id.
pub async fn create_importing(
    db: &Db,
    manifest: &Manifest,
    slug: &str,
    ids: Ids,
) -> Result<Uuid, LifecycleError> {
    let id = match ids {
        Ids::Keep => manifest.tenant.id,
        Ids::New => crate::new_id(),
    };
    let t = &manifest.tenant;
    let tx = db.begin(&crate::TenantContext::platform(30_000)).await?;
    let rows = tx
        .query_and_commit(
            "INSERT INTO tenants (id, slug, name, tier, owner_user_id, settings, features,
                                  join_policy, limits, api_version, status)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'importing')
             ON CONFLICT (id) DO NOTHING
             RETURNING id",
            &[
                &id,
                &slug,
                &t.name,
                &t.tier,
                &t.owner_user_id,
                &t.settings,
                &t.features,
                &t.join_policy.as_str(),
                &serde_json::to_value(&t.limits).unwrap_or_default(),
                &t.api_version,
            ],
        )
        .await
        .map_err(|e| match e {
            DbError::Conflict { constraint } if constraint.contains("slug") => {
                LifecycleError::Collision("a tenant with this slug already exists".to_owned())
            }
            other => other.into(),
        })?;
    if rows.is_empty() {
        return Err(LifecycleError::Collision(format!(
            "tenant {id} already exists here: its ids would collide (import with ids=new)"
        )));
    }
    Ok(id)
}

/// Loads the archive at `path` into tenant `target`, all or nothing (see
/// the module's notes). [`Target::New`]: `target` was made by
/// [`create_importing`] and becomes `active`. [`Target::Replace`]: `target`'s
/// rows in every exported table are replaced by the archive's, and its
/// record takes the archive's name, owner, settings, features, join policy
/// and counters (its slug, domain, tier and limits stay).
pub async fn load(
    db: &Db,
    path: &Path,
    target: Uuid,
    into: Target,
    ids: Ids,
) -> Result<Loaded, LifecycleError> {
    let session = Session::begin(db, target, false).await?;
    let conn = session.client();
    let tables = tables(conn).await?;

    // The archive is read on a blocking thread and handed over in chunks,
    // a few at a time: memory stays bounded whatever its size.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Message>(8);
    let path = path.to_owned();
    let reader = tokio::task::spawn_blocking(move || read_into(&path, &tx));

    let Some(Message::Manifest(manifest)) = rx.recv().await else {
        return Err(reader_error(reader).await);
    };
    let manifest = *manifest;
    for entry in &manifest.tables {
        if !tables.iter().any(|t| t.name == entry.name) {
            return Err(bad(Some(&entry.name), "no such table in this schema"));
        }
    }
    // Stage every table: COPY into a temporary table, checked as it goes.
    let mut staged = Vec::new();
    while let Some(message) = rx.recv().await {
        match message {
            Message::Table(name) => {
                let stage = format!("lifecycle_stage_{}", staged.len());
                conn.batch_execute(&format!(
                    "CREATE TEMP TABLE {stage} (j jsonb) ON COMMIT DROP"
                ))
                .await?;
                let sink = conn
                    .copy_in::<_, bytes::Bytes>(
                        format!("COPY {stage} (j) FROM STDIN {RAW_LINES}").as_str(),
                    )
                    .await?;
                futures::pin_mut!(sink);
                let mut ended = false;
                while let Some(m) = rx.recv().await {
                    match m {
                        Message::Chunk(b) => sink
                            .send(b)
                            .await
                            .map_err(|e| bad(Some(&name), format!("not valid NDJSON: {e}")))?,
                        Message::TableEnd => {
                            ended = true;
                            break;
                        }
                        _ => break,
                    }
                }
                if !ended {
                    return Err(reader_error(reader).await);
                }
                sink.as_mut().finish().await.map_err(|e| {
                    bad(Some(&name), format!("not valid NDJSON: {}", db_message(&e)))
                })?;
                staged.push((name, stage));
            }
            Message::Done => break,
            _ => return Err(reader_error(reader).await),
        }
    }
    // The reader checked every table's hash and count; it must also have
    // ended cleanly (every table of the manifest present).
    match reader.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(e) => return Err(LifecycleError::Db(DbError::Other(e.into()))),
    }

    let old_tenant = manifest.tenant.id;
    if ids == Ids::New {
        remap(conn, &tables, &staged, old_tenant, target).await?;
    }
    if into == Target::Replace {
        // The fence: writes that reference the tenant wait from here until
        // the commit; readers keep seeing the old rows until then.
        conn.execute("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE", &[&target])
            .await?;
        // Children first, so no foreign key is left dangling mid-way.
        for table in tables.iter().rev().filter(|t| t.name != USERS) {
            conn.execute(
                &format!("DELETE FROM {} WHERE tenant_id = $1", table.name),
                &[&target],
            )
            .await?;
        }
    }
    let mut rows = 0;
    for table in &tables {
        let Some((_, stage)) = staged.iter().find(|(n, _)| n == &table.name) else {
            continue;
        };
        rows += insert(conn, table, stage, target, ids == Ids::New)
            .await
            .map_err(|e| match e {
                LifecycleError::Db(DbError::Conflict { constraint }) => {
                    LifecycleError::Collision(format!(
                        "table {}: rows collide with rows already here ({constraint}); \
                         import with ids=new",
                        table.name
                    ))
                }
                other => other,
            })?;
    }
    let t = &manifest.tenant;
    let status_sql = match into {
        Target::New => {
            "UPDATE tenants SET status = 'active', member_count = $2, post_count = $3,
                          storage_bytes = $4, updated_at = now()
                      WHERE id = $1 AND status = 'importing' RETURNING id"
        }
        Target::Replace => {
            "UPDATE tenants SET member_count = $2, post_count = $3,
                              storage_bytes = $4, name = $5, owner_user_id = $6,
                              settings = $7, features = $8, join_policy = $9,
                              updated_at = now()
                          WHERE id = $1 AND status <> 'deleted' RETURNING id"
        }
    };
    let updated = match into {
        Target::New => {
            conn.query(
                status_sql,
                &[&target, &t.member_count, &t.post_count, &t.storage_bytes],
            )
            .await?
        }
        Target::Replace => {
            conn.query(
                status_sql,
                &[
                    &target,
                    &t.member_count,
                    &t.post_count,
                    &t.storage_bytes,
                    &t.name,
                    &t.owner_user_id,
                    &t.settings,
                    &t.features,
                    &t.join_policy.as_str(),
                ],
            )
            .await?
        }
    };
    if updated.is_empty() {
        return Err(LifecycleError::NotFound);
    }
    session.commit().await?;
    Ok(Loaded { manifest, rows })
}

enum Message {
    Manifest(Box<Manifest>),
    Table(String),
    Chunk(bytes::Bytes),
    TableEnd,
    Done,
}

/// The reader thread: the manifest, then each table's chunks; any error
/// ends the channel and is the thread's result.
fn read_into(path: &Path, tx: &tokio::sync::mpsc::Sender<Message>) -> Result<(), LifecycleError> {
    let gone = || bad(None, "the import stopped");
    let (mut reader, manifest) = Reader::open(path)?;
    tx.blocking_send(Message::Manifest(Box::new(manifest.clone())))
        .map_err(|_| gone())?;
    let mut seen = std::collections::HashSet::new();
    while let Some((name, size)) = reader.next_table(&manifest)? {
        if !seen.insert(name.clone()) {
            return Err(bad(Some(&name), "appears twice in the archive"));
        }
        tx.blocking_send(Message::Table(name.clone()))
            .map_err(|_| gone())?;
        reader.read_table(&manifest, &name, size, |chunk| {
            tx.blocking_send(Message::Chunk(chunk)).map_err(|_| gone())
        })?;
        tx.blocking_send(Message::TableEnd).map_err(|_| gone())?;
    }
    if let Some(missing) = manifest.tables.iter().find(|t| !seen.contains(&t.name)) {
        return Err(bad(
            Some(&missing.name),
            "missing from the archive (truncated?)",
        ));
    }
    tx.blocking_send(Message::Done).map_err(|_| gone())?;
    Ok(())
}

async fn reader_error(
    reader: tokio::task::JoinHandle<Result<(), LifecycleError>>,
) -> LifecycleError {
    match reader.await {
        Ok(Err(e)) => e,
        Ok(Ok(())) => bad(None, "the archive's entries are out of order"),
        Err(e) => LifecycleError::Db(DbError::Other(e.into())),
    }
}

fn db_message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map_or_else(|| e.to_string(), |d| d.message().to_owned())
}

/// Builds the id map of an [`Ids::New`] import: every `id` of a keyed
/// table, and the tenant's own id, gets a new one. The new ids keep the old
/// ones' first 48 bits (a UUIDv7's millisecond timestamp) and take random
/// bits for the rest, as UUIDv7 does.
async fn remap(
    conn: &tokio_postgres::Client,
    tables: &[Table],
    staged: &[(String, String)],
    old_tenant: Uuid,
    new_tenant: Uuid,
) -> Result<(), LifecycleError> {
    conn.batch_execute(
        "CREATE TEMP TABLE lifecycle_ids (old uuid PRIMARY KEY, new uuid NOT NULL) ON COMMIT DROP",
    )
    .await?;
    conn.execute(
        "INSERT INTO lifecycle_ids VALUES ($1, $2)",
        &[&old_tenant, &new_tenant],
    )
    .await?;
    for table in tables.iter().filter(|t| t.keyed) {
        let Some((_, stage)) = staged.iter().find(|(n, _)| n == &table.name) else {
            continue;
        };
        conn.execute(
            &format!(
                "INSERT INTO lifecycle_ids (old, new)
                 SELECT old, (substr(encode(uuid_send(old), 'hex'), 1, 12) || '7'
                              || substr(encode(uuid_send(gen_random_uuid()), 'hex'), 14, 19))::uuid
                 FROM (SELECT (j->>'id')::uuid AS old FROM {stage}) s
                 ON CONFLICT (old) DO NOTHING"
            ),
            &[],
        )
        .await?;
    }
    conn.batch_execute("ANALYZE lifecycle_ids").await?;
    Ok(())
}

/// Inserts a staged table's rows into its table for `tenant` (through the
/// id map when `remap`); how many.
async fn insert(
    conn: &tokio_postgres::Client,
    table: &Table,
    stage: &str,
    tenant: Uuid,
    remap: bool,
) -> Result<u64, LifecycleError> {
    let users = table.name == USERS;
    let mut cols: Vec<String> = Vec::new();
    let mut exprs: Vec<String> = Vec::new();
    if !users {
        cols.push("tenant_id".to_owned());
        exprs.push("$1".to_owned());
    }
    for (c, is_uuid) in &table.columns {
        let col = ident(c);
        let value = format!("r.{col}");
        let expr = if remap && *is_uuid && !users && !table.user_refs.contains(c) {
            format!("coalesce((SELECT new FROM lifecycle_ids WHERE old = {value}), {value})")
        } else {
            value
        };
        cols.push(col);
        exprs.push(expr);
    }
    let conflict = if users {
        " ON CONFLICT (id) DO NOTHING"
    } else {
        ""
    };
    let sql = format!(
        "INSERT INTO {} ({}) SELECT {} FROM {stage} s, jsonb_populate_record(NULL::{}, s.j) r{conflict}",
        table.name,
        cols.join(", "),
        exprs.join(", "),
        table.name,
    );
    let n = if users {
        conn.execute(sql.as_str(), &[]).await
    } else {
        conn.execute(sql.as_str(), &[&tenant]).await
    };
    n.map_err(|e| match e.code() {
        Some(c) if *c == tokio_postgres::error::SqlState::UNIQUE_VIOLATION => {
            LifecycleError::Db(e.into())
        }
        _ => bad(
            Some(&table.name),
            format!("cannot be loaded: {}", db_message(&e)),
        ),
    })
}
