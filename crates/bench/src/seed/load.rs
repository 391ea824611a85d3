//! Writing a planned data set into PostgreSQL: one binary COPY per table,
//! content tables streamed in parallel on their own connections, `ANALYZE`
//! at the end.
//!
//! Why COPY as the connecting user: the tenant tables have row-level
//! security enabled *and forced*, so an ordinary role would see its COPY
//! refused ("COPY FROM not supported with row-level security"). Seeding is
//! an operator's job and runs as a superuser or a `BYPASSRLS` role (the
//! embedded cluster's `tenantry` user and a local `postgres` are
//! superusers); [`check_role`] says so up front rather than failing midway.
//!
//! Why foreign keys are not checked row by row by default: a foreign-key
//! check is a trigger that runs an index lookup per row; for a million posts
//! and their likes that is several million lookups, most of the load time on
//! two cores, and it forces the content tables to load one after the other
//! (a like may only reference a committed post). The generator makes every
//! reference valid by construction, so a superuser session sets
//! `session_replication_role = replica` (as `pg_restore --disable-triggers`
//! does), which skips those triggers for this session only, and the three
//! content tables load at once. `--checked` keeps the triggers (and the
//! ordering), and `--verify` re-checks every reference and counter with SQL
//! afterwards. Nothing is dropped or altered: the schema stays as migrated.
//! If a later migration adds a trigger that maintains derived data, the
//! generator must produce that data itself (or seed with `--checked`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use futures::SinkExt as _;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio_postgres::Client;

use super::binary::CopyEncoder;
use super::content::{self, TenantContent};
use super::plan::{self, Plan, SeedConfig};

/// Tables that later migrations will add and that the seeder does not fill
/// yet; named in the summary so a reader knows what the data set lacks.
pub const NOT_YET_SEEDED: &[&str] = &["events", "analytics_events", "journeys"];

/// How references are checked while loading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FkChecks {
    /// Foreign-key triggers skipped for the session; content tables load in
    /// parallel. Needs a superuser.
    Trusted,
    /// Foreign-key triggers run; content tables that reference posts wait
    /// for the posts to commit.
    Checked,
}

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub fk_checks: FkChecks,
    pub progress: bool,
}

/// Rows and time of one table.
#[derive(Debug, Clone, Serialize)]
pub struct TableLoad {
    pub table: &'static str,
    pub rows: u64,
    pub seconds: f64,
}

/// What a seed run wrote.
#[derive(Debug, Clone, Serialize)]
pub struct SeedSummary {
    pub tables: Vec<TableLoad>,
    pub total_rows: u64,
    pub plan_seconds: f64,
    pub analyze_seconds: f64,
    pub seconds: f64,
    pub fk_checks: FkChecks,
    /// The largest tenants: (slug, posts, members).
    pub largest: Vec<(String, u64, usize)>,
    /// Share of all posts held by the largest 1% of tenants.
    pub top_percent_share: f64,
    /// Tables of [`NOT_YET_SEEDED`] that already exist in the database.
    pub existing_unseeded: Vec<String>,
}

impl SeedSummary {
    pub fn rows_per_second(&self) -> f64 {
        self.total_rows as f64 / self.seconds.max(1e-9)
    }
}

/// Opens a connection for loading, its driver task spawned; TLS as the URL's
/// `sslmode` says (as the server's pool does).
pub async fn connect(url: &str) -> anyhow::Result<Client> {
    tenantry_db::tls::ConnectConfig::parse(url)?
        .connect()
        .await
        .context("Failed to connect to PostgreSQL to seed")
}

/// Fails unless the connecting role may COPY into tables with forced RLS;
/// returns whether it is a superuser (and so may skip foreign-key triggers).
pub async fn check_role(client: &Client) -> anyhow::Result<bool> {
    let row = client
        .query_one(
            "SELECT rolsuper, rolbypassrls, current_user::text FROM pg_roles
             WHERE rolname = current_user",
            &[],
        )
        .await
        .context("Failed to read the connecting role's attributes")?;
    let superuser: bool = row.get(0);
    let bypass: bool = row.get(1);
    let name: String = row.get(2);
    if !superuser && !bypass {
        anyhow::bail!(
            "the role `{name}` can neither bypass row-level security nor is it a superuser: \
             COPY into the tenant tables (RLS forced) needs one of them. Seed as a superuser \
             (the embedded cluster's `tenantry` user, or `postgres` locally) or a role with \
             BYPASSRLS, e.g. DATABASE_URL=postgres://postgres@127.0.0.1:5432/<db>"
        );
    }
    Ok(superuser)
}

/// Refuses a database that already holds tenants: seeded rows never mix
/// with existing ones.
pub async fn check_empty(client: &Client) -> anyhow::Result<()> {
    let row = client
        .query_one("SELECT EXISTS (SELECT 1 FROM tenants)", &[])
        .await
        .context("Failed to look for existing tenants (are the migrations applied?)")?;
    if row.get::<_, bool>(0) {
        anyhow::bail!(
            "the database already holds tenants; seed a fresh database \
             (e.g. `createdb seedbench`), seeded rows never mix with existing ones"
        );
    }
    Ok(())
}

/// One COPY stream: chunks of an encoded table and their row counts.
type Chunks = mpsc::Receiver<(Bytes, u64)>;

/// Writes the data set `config` describes. The database must be migrated
/// and hold no tenants.
pub async fn load(
    url: &str,
    config: &SeedConfig,
    options: &LoadOptions,
) -> anyhow::Result<SeedSummary> {
    config.validate()?;
    let started = Instant::now();
    let control = connect(url).await?;
    let superuser = check_role(&control).await?;
    check_empty(&control).await?;
    let fk_checks = if superuser {
        options.fk_checks
    } else {
        // Skipping triggers needs a superuser; a BYPASSRLS role loads checked.
        FkChecks::Checked
    };
    let existing_unseeded = existing_tables(&control, NOT_YET_SEEDED).await?;

    let bars = Bars::new(options.progress);
    let plan_bar = bars.spinner("planning users, tenants, memberships");
    let plan_started = Instant::now();
    let config = Arc::new(config.clone());
    let plan = {
        let config = config.clone();
        Arc::new(
            tokio::task::spawn_blocking(move || plan::plan(&config))
                .await
                .context("The planning task failed")?,
        )
    };
    let plan_seconds = plan_started.elapsed().as_secs_f64();
    plan_bar.finish_with_message(format!("planned in {plan_seconds:.1}s"));

    let mut conns = Vec::new();
    for _ in 0..3 {
        let c = connect(url).await?;
        prepare_session(&c, fk_checks).await?;
        conns.push(c);
    }

    // Users and tenants (no references between them) side by side, then
    // memberships, which reference both.
    let users_bar = bars.bar("users", plan.users.len() as u64);
    let tenants_bar = bars.bar("tenants", plan.tenants.len() as u64);
    let (users, tenants) = tokio::try_join!(
        copy_encoded(
            &conns[0],
            "users",
            content::USERS_COLUMNS,
            encode_all(|e| content::encode_users(e, &plan)),
            &users_bar,
        ),
        copy_encoded(
            &conns[1],
            "tenants",
            content::TENANTS_COLUMNS,
            encode_all(|e| content::encode_tenants(e, &plan)),
            &tenants_bar,
        ),
    )?;
    let members_bar = bars.bar("memberships", plan.memberships() as u64);
    let memberships = copy_encoded(
        &conns[0],
        "memberships",
        content::MEMBERSHIPS_COLUMNS,
        encode_all(|e| {
            for t in &plan.tenants {
                content::encode_memberships(e, &plan, t);
            }
        }),
        &members_bar,
    )
    .await?;

    // The full-text GIN indexes are built once after the load rather than
    // entry by entry during it (a third of the posts COPY's time otherwise).
    // A load that fails in between leaves them missing, with the rest of a
    // half-seeded database that seeding refuses anyway (it has tenants).
    let deferred = drop_gin_indexes(&control).await?;

    // Content: one generator thread feeding three COPY streams.
    let posts_total: u64 = plan.tenants.iter().map(|t| t.posts).sum();
    let posts_bar = bars.bar("posts", posts_total);
    let likes_bar = bars.counter("post_likes");
    let comments_bar = bars.counter("comments");
    let (posts_tx, posts_rx) = mpsc::channel(8);
    let (likes_tx, likes_rx) = mpsc::channel(8);
    let (comments_tx, comments_rx) = mpsc::channel(8);
    let generator = {
        let (plan, config) = (plan.clone(), config.clone());
        std::thread::Builder::new()
            .name("seed-generator".to_owned())
            .spawn(move || generate(&config, &plan, posts_tx, likes_tx, comments_tx))
            .context("Failed to start the generator thread")?
    };
    let (posts_done_tx, posts_done_rx) = watch::channel(false);
    let gate = (fk_checks == FkChecks::Checked).then_some(posts_done_rx);
    let posts_copy = async {
        let r = copy_stream(
            &conns[0],
            "posts",
            content::POSTS_COLUMNS,
            posts_rx,
            &posts_bar,
            None,
        )
        .await;
        let _ = posts_done_tx.send(true);
        r
    };
    let content = tokio::try_join!(
        posts_copy,
        copy_stream(
            &conns[1],
            "post_likes",
            content::LIKES_COLUMNS,
            likes_rx,
            &likes_bar,
            gate.clone(),
        ),
        copy_stream(
            &conns[2],
            "comments",
            content::COMMENTS_COLUMNS,
            comments_rx,
            &comments_bar,
            gate,
        ),
    );
    // The generator stops by itself once its channels close.
    let generated = generator
        .join()
        .map_err(|_| anyhow::anyhow!("the generator thread panicked"))?;
    let (posts, likes, comments) = content?;
    let storage = generated?;
    set_storage_bytes(&control, &plan, &storage).await?;

    for (name, definition) in &deferred {
        let bar = bars.spinner(&format!("index {name}"));
        control
            .batch_execute(definition)
            .await
            .with_context(|| format!("Failed to rebuild the index {name}"))?;
        bar.finish_with_message(format!("index {name} rebuilt"));
    }

    // The per-user directory of memberships (V20) is kept by a trigger that
    // the loading sessions skip (session_replication_role = replica): fill
    // it in one statement. The loader bypasses row-level security (see
    // `check_role`), so the directory's policy (V51) filters neither this
    // nor the `verify` checks below.
    control
        .batch_execute(
            "INSERT INTO user_communities (user_id, tenant_id, role, display_in_feed, joined_at)
             SELECT user_id, tenant_id, role, display_in_feed, created_at FROM memberships
             ON CONFLICT DO NOTHING",
        )
        .await
        .context("Failed to fill the user_communities directory")?;
    let analyze_bar = bars.spinner("ANALYZE");
    let analyze_started = Instant::now();
    control
        .batch_execute(
            "ANALYZE users, tenants, memberships, user_communities, posts, post_likes, comments",
        )
        .await
        .context("Failed to ANALYZE the seeded tables")?;
    let analyze_seconds = analyze_started.elapsed().as_secs_f64();
    analyze_bar.finish_with_message(format!("ANALYZE in {analyze_seconds:.1}s"));

    let tables = vec![users, tenants, memberships, posts, likes, comments];
    let total_rows = tables.iter().map(|t| t.rows).sum();
    let mut by_size: Vec<&plan::TenantRow> = plan.tenants.iter().collect();
    by_size.sort_by(|a, b| b.posts.cmp(&a.posts).then(a.id.cmp(&b.id)));
    let top = by_size.len().div_ceil(100);
    let top_posts: u64 = by_size[..top].iter().map(|t| t.posts).sum();
    Ok(SeedSummary {
        tables,
        total_rows,
        plan_seconds,
        analyze_seconds,
        seconds: started.elapsed().as_secs_f64(),
        fk_checks,
        largest: by_size
            .iter()
            .take(5)
            .map(|t| (t.slug.clone(), t.posts, t.members.len()))
            .collect(),
        top_percent_share: top_posts as f64 / posts_total.max(1) as f64,
        existing_unseeded,
    })
}

async fn prepare_session(client: &Client, fk_checks: FkChecks) -> anyhow::Result<()> {
    // Seeding is repeatable from the seed: losing the last commit to a crash
    // costs nothing, so do not wait for the WAL flush.
    let mut sql = String::from("SET synchronous_commit = off;");
    if fk_checks == FkChecks::Trusted {
        sql.push_str("SET session_replication_role = replica;");
    }
    client
        .batch_execute(&sql)
        .await
        .context("Failed to prepare a seeding session")
}

async fn existing_tables(client: &Client, names: &[&str]) -> anyhow::Result<Vec<String>> {
    let mut found = Vec::new();
    for name in names {
        let row = client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[name])
            .await
            .context("Failed to look up a table")?;
        if row.get::<_, bool>(0) {
            found.push((*name).to_owned());
        }
    }
    Ok(found)
}

/// Encodes a whole (small) table in memory.
fn encode_all(f: impl FnOnce(&mut CopyEncoder)) -> Vec<(Bytes, u64)> {
    let mut enc = CopyEncoder::new();
    f(&mut enc);
    let mut chunks = Vec::new();
    while let Some(chunk) = enc.take_full() {
        chunks.push(chunk);
    }
    chunks.push(enc.finish());
    chunks
}

async fn copy_encoded(
    client: &Client,
    table: &'static str,
    columns: &str,
    chunks: Vec<(Bytes, u64)>,
    bar: &ProgressBar,
) -> anyhow::Result<TableLoad> {
    let (tx, rx) = mpsc::channel(chunks.len().max(1));
    for chunk in chunks {
        tx.try_send(chunk)
            .map_err(|_| anyhow::anyhow!("the chunk channel has room for every chunk"))?;
    }
    drop(tx);
    copy_stream(client, table, columns, rx, bar, None).await
}

/// COPYs every chunk from `rx` into `table`. With a `gate`, chunks are held
/// in memory until the gate opens (the rows reference rows another COPY is
/// still writing).
async fn copy_stream(
    client: &Client,
    table: &'static str,
    columns: &str,
    mut rx: Chunks,
    bar: &ProgressBar,
    gate: Option<watch::Receiver<bool>>,
) -> anyhow::Result<TableLoad> {
    let mut held = Vec::new();
    if let Some(mut gate) = gate {
        loop {
            tokio::select! {
                opened = gate.wait_for(|open| *open) => {
                    opened.context("the posts COPY ended without opening the gate")?;
                    break;
                }
                Some(chunk) = rx.recv() => held.push(chunk),
            }
        }
    }
    let started = Instant::now();
    let sink = client
        .copy_in::<_, Bytes>(&format!(
            "COPY {table} ({columns}) FROM STDIN (FORMAT binary)"
        ))
        .await
        .map_err(|e| copy_error(table, e))?;
    futures::pin_mut!(sink);
    let mut rows = 0;
    let mut held = held.into_iter();
    loop {
        let next = match held.next() {
            Some(chunk) => Some(chunk),
            None => rx.recv().await,
        };
        let Some((chunk, n)) = next else { break };
        sink.send(chunk).await.map_err(|e| copy_error(table, e))?;
        rows += n;
        bar.inc(n);
    }
    let written = sink.finish().await.map_err(|e| copy_error(table, e))?;
    debug_assert_eq!(written, rows);
    let seconds = started.elapsed().as_secs_f64();
    bar.finish_with_message(format!("{table}: {written} rows in {seconds:.1}s"));
    Ok(TableLoad {
        table,
        rows: written,
        seconds,
    })
}

fn copy_error(table: &str, e: tokio_postgres::Error) -> anyhow::Error {
    let hint = match e.as_db_error() {
        Some(db) if db.message().contains("row-level security") => {
            " (COPY into a table with row-level security needs a superuser or a BYPASSRLS role)"
        }
        _ => "",
    };
    anyhow::Error::new(e).context(format!("Failed to COPY into {table}{hint}"))
}

/// The generator thread: tenants in id order, each tenant's content encoded
/// into the three streams, chunks handed over as they fill.
/// Returns each tenant's storage bytes, which the tenants row must carry.
fn generate(
    config: &SeedConfig,
    plan: &Plan,
    posts: mpsc::Sender<(Bytes, u64)>,
    likes: mpsc::Sender<(Bytes, u64)>,
    comments: mpsc::Sender<(Bytes, u64)>,
) -> anyhow::Result<Vec<i64>> {
    let closed = || anyhow::anyhow!("a COPY stream closed early (see its error)");
    let mut enc = [CopyEncoder::new(), CopyEncoder::new(), CopyEncoder::new()];
    let senders = [posts, likes, comments];
    let mut storage = Vec::with_capacity(plan.tenants.len());
    for (i, tenant) in plan.tenants.iter().enumerate() {
        let generated = content::tenant_content(config, plan, i);
        storage.push(generated.storage_bytes());
        let TenantContent {
            posts,
            likes,
            comments,
        } = generated;
        content::encode_posts(&mut enc[0], plan, tenant, &posts);
        content::encode_likes(&mut enc[1], plan, tenant, &likes);
        content::encode_comments(&mut enc[2], plan, tenant, &comments);
        for (e, tx) in enc.iter_mut().zip(&senders) {
            if let Some(chunk) = e.take_full() {
                tx.blocking_send(chunk).map_err(|_| closed())?;
            }
        }
    }
    for (e, tx) in enc.into_iter().zip(&senders) {
        tx.blocking_send(e.finish()).map_err(|_| closed())?;
    }
    Ok(storage)
}

/// Sets `tenants.storage_bytes` (quotas) from the generated content, in one
/// set-based statement.
async fn set_storage_bytes(client: &Client, plan: &Plan, storage: &[i64]) -> anyhow::Result<()> {
    let ids: Vec<uuid::Uuid> = plan.tenants.iter().map(|t| t.id).collect();
    client
        .execute(
            "UPDATE tenants t SET storage_bytes = u.bytes
             FROM unnest($1::uuid[], $2::int8[]) AS u(id, bytes)
             WHERE t.id = u.id AND u.bytes <> 0",
            &[&ids, &storage],
        )
        .await
        .context("Failed to set the tenants' storage bytes")?;
    Ok(())
}

/// Progress bars, one per phase; hidden when progress is off or stderr is
/// not a terminal.
struct Bars {
    multi: MultiProgress,
}

impl Bars {
    fn new(visible: bool) -> Self {
        let target = if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        Self {
            multi: MultiProgress::with_draw_target(target),
        }
    }

    fn bar(&self, name: &str, len: u64) -> ProgressBar {
        let bar = self.multi.add(ProgressBar::new(len));
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>12} [{bar:30}] {human_pos:>10}/{human_len:10} {per_sec:>14} {msg}",
            )
            .expect("a valid progress template")
            .progress_chars("=> "),
        );
        bar.set_prefix(name.to_owned());
        bar.enable_steady_tick(Duration::from_millis(250));
        bar
    }

    fn counter(&self, name: &str) -> ProgressBar {
        let bar = self.multi.add(ProgressBar::no_length());
        bar.set_style(
            ProgressStyle::with_template("{prefix:>12} {human_pos:>10} rows {per_sec:>14} {msg}")
                .expect("a valid progress template"),
        );
        bar.set_prefix(name.to_owned());
        bar.enable_steady_tick(Duration::from_millis(250));
        bar
    }

    fn spinner(&self, message: &str) -> ProgressBar {
        let bar = self.multi.add(ProgressBar::new_spinner());
        bar.set_message(message.to_owned());
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    }
}

/// Drops the GIN indexes of the content tables, returning their names and
/// definitions to rebuild them after the load.
async fn drop_gin_indexes(control: &Client) -> anyhow::Result<Vec<(String, String)>> {
    let rows = control
        .query(
            "SELECT c.relname::text, pg_get_indexdef(i.indexrelid)
             FROM pg_index i
             JOIN pg_class c ON c.oid = i.indexrelid
             JOIN pg_am am ON am.oid = c.relam
             WHERE i.indrelid IN ('posts'::regclass, 'comments'::regclass)
               AND am.amname = 'gin'",
            &[],
        )
        .await
        .context("Failed to list the content tables' GIN indexes")?;
    let mut deferred = Vec::new();
    for row in rows {
        let (name, definition): (String, String) = (row.get(0), row.get(1));
        control
            .batch_execute(&format!("DROP INDEX \"{}\"", name.replace('"', "\"\"")))
            .await
            .with_context(|| format!("Failed to drop the index {name} for the load"))?;
        deferred.push((name, definition));
    }
    Ok(deferred)
}

/// Re-checks a seeded database with SQL: every reference resolves, every
/// counter matches its rows, every tenant has exactly its owner as owner.
/// Returns the checks that failed (empty when all hold).
pub async fn verify(client: &Client) -> anyhow::Result<Vec<String>> {
    const CHECKS: &[(&str, &str)] = &[
        (
            "tenants.member_count equals the number of memberships",
            "SELECT count(*) FROM tenants t
             LEFT JOIN (SELECT tenant_id, count(*) AS n FROM memberships GROUP BY 1) m
                    ON m.tenant_id = t.id
             WHERE t.member_count <> coalesce(m.n, 0)",
        ),
        (
            "user_communities mirrors memberships",
            "SELECT (SELECT count(*) FROM memberships m WHERE NOT EXISTS (
                         SELECT 1 FROM user_communities u
                         WHERE u.user_id = m.user_id AND u.tenant_id = m.tenant_id
                           AND u.role = m.role))
                  + (SELECT count(*) FROM user_communities u WHERE NOT EXISTS (
                         SELECT 1 FROM memberships m
                         WHERE m.user_id = u.user_id AND m.tenant_id = u.tenant_id))",
        ),
        (
            "tenants.post_count and storage_bytes equal their posts",
            "SELECT count(*) FROM tenants t
             LEFT JOIN (SELECT tenant_id, count(*) AS n, sum(octet_length(content)) AS bytes
                        FROM posts WHERE deleted_at IS NULL GROUP BY 1) p
                    ON p.tenant_id = t.id
             WHERE t.post_count <> coalesce(p.n, 0) OR t.storage_bytes <> coalesce(p.bytes, 0)",
        ),
        (
            "every tenant's owner has the owner membership",
            "SELECT count(*) FROM tenants t
             WHERE NOT EXISTS (SELECT 1 FROM memberships m WHERE m.tenant_id = t.id
                               AND m.user_id = t.owner_user_id AND m.role = 'owner')
                OR (SELECT count(*) FROM memberships m
                    WHERE m.tenant_id = t.id AND m.role = 'owner') <> 1",
        ),
        (
            "memberships reference existing users",
            "SELECT count(*) FROM memberships m
             WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.id = m.user_id)",
        ),
        (
            "posts reference existing tenants and users",
            "SELECT count(*) FROM posts p
             WHERE NOT EXISTS (SELECT 1 FROM tenants t WHERE t.id = p.tenant_id)
                OR NOT EXISTS (SELECT 1 FROM users u WHERE u.id = p.author_id)",
        ),
        (
            "post authors are members of the post's tenant",
            "SELECT count(*) FROM posts p
             WHERE NOT EXISTS (SELECT 1 FROM memberships m
                               WHERE m.tenant_id = p.tenant_id AND m.user_id = p.author_id)",
        ),
        (
            "likes and comments reference existing posts",
            "SELECT (SELECT count(*) FROM post_likes l WHERE NOT EXISTS
                        (SELECT 1 FROM posts p WHERE p.tenant_id = l.tenant_id AND p.id = l.post_id))
                  + (SELECT count(*) FROM comments c WHERE NOT EXISTS
                        (SELECT 1 FROM posts p WHERE p.tenant_id = c.tenant_id AND p.id = c.post_id))",
        ),
        (
            "posts.like_count and comment_count equal their rows",
            "SELECT count(*) FROM posts p
             LEFT JOIN (SELECT tenant_id, post_id, count(*) AS n FROM post_likes GROUP BY 1, 2) l
                    ON l.tenant_id = p.tenant_id AND l.post_id = p.id
             LEFT JOIN (SELECT tenant_id, post_id, count(*) AS n FROM comments GROUP BY 1, 2) c
                    ON c.tenant_id = p.tenant_id AND c.post_id = p.id
             WHERE p.like_count <> coalesce(l.n, 0) OR p.comment_count <> coalesce(c.n, 0)",
        ),
    ];
    let mut failed = Vec::new();
    for (what, sql) in CHECKS {
        let row = client
            .query_one(*sql, &[])
            .await
            .with_context(|| format!("Failed to check that {what}"))?;
        let bad: i64 = row.get(0);
        if bad != 0 {
            failed.push(format!("{what}: {bad} violations"));
        }
    }
    Ok(failed)
}
