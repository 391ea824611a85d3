//! `tenantry admin …`: the platform admin API of a running server from the
//! command line. Tables for people, `--json` (the server's answer as is)
//! for scripts. The token comes from `--token` / `TENANTRY_ADMIN_TOKEN`, else
//! from the file the server keeps it in (`<data dir>/admin_token`).

mod client;
mod output;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use client::Client;

#[derive(Args)]
pub struct AdminArgs {
    /// The server's base URL.
    #[arg(
        long,
        env = "TENANTRY_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    url: String,
    /// The platform admin token (default: the server's data dir's).
    #[arg(
        long,
        env = "TENANTRY_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    token: Option<String>,
    /// The server's data dir, whose `admin_token` file is read when no token
    /// is given.
    #[arg(
        long,
        env = "TENANTRY_DATA_DIR",
        default_value = ".tenantry",
        global = true
    )]
    data_dir: PathBuf,
    /// Print the server's JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Tenants: list, show, create, update, suspend, resume, delete.
    #[command(subcommand)]
    Tenants(TenantsCommand),
    /// Members of a tenant.
    #[command(subcommand)]
    Members(MembersCommand),
    /// Exports a tenant (a consistent snapshot) into a .tar.gz file.
    Export(ExportArgs),
    /// Imports an export archive as a new tenant.
    Import(ImportArgs),
    /// Background jobs.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// The database.
    #[command(subcommand)]
    Db(DbCommand),
}

#[derive(Subcommand)]
enum TenantsCommand {
    /// Lists tenants, oldest first.
    List {
        /// Tenants per page (1–100).
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Continue after this cursor (printed by the previous page).
        #[arg(long)]
        cursor: Option<String>,
        /// Follow every page.
        #[arg(long)]
        all: bool,
    },
    /// Shows one tenant.
    Show { id: Uuid },
    /// Creates a tenant.
    Create {
        #[arg(long)]
        slug: String,
        #[arg(long)]
        name: String,
        /// The owner's user id (the JWT `sub`).
        #[arg(long)]
        owner: Uuid,
        #[arg(long)]
        tier: Option<String>,
        #[arg(long)]
        domain: Option<String>,
        /// `open` or `invite`.
        #[arg(long)]
        join_policy: Option<String>,
    },
    /// Changes a tenant's name, tier, domain, join policy or limits.
    Update {
        id: Uuid,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        tier: Option<String>,
        /// A custom domain; `none` removes it.
        #[arg(long)]
        domain: Option<String>,
        #[arg(long)]
        join_policy: Option<String>,
        /// A limit override, `name=value` (`name=` removes it); repeatable.
        #[arg(long = "limit", value_name = "NAME=VALUE")]
        limits: Vec<String>,
    },
    /// Suspends a tenant: its requests answer 403 `tenant_suspended`.
    Suspend { id: Uuid },
    /// Lifts a suspension.
    Resume { id: Uuid },
    /// Deletes a tenant; its data is purged in the background.
    Delete { id: Uuid },
}

#[derive(Subcommand)]
enum MembersCommand {
    /// Adds a user to a tenant with a role.
    Add {
        /// The tenant's id.
        tenant: Uuid,
        #[arg(long)]
        user: Uuid,
        /// owner, admin, moderator or member.
        #[arg(long, default_value = "member")]
        role: String,
    },
}

#[derive(Args)]
struct ExportArgs {
    /// The tenant's id.
    tenant: Uuid,
    /// Where to write the archive (default: `<tenant>-<export>.tar.gz`).
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// Longest wait for the export to be ready, in seconds.
    #[arg(long, default_value_t = 600)]
    wait_secs: u64,
}

#[derive(Args)]
struct ImportArgs {
    /// An archive made by `tenantry admin export`.
    file: PathBuf,
    /// The new tenant's slug.
    #[arg(long)]
    slug: String,
    /// Give every row a new id instead of keeping the export's.
    #[arg(long)]
    new_ids: bool,
    /// Return once the upload is accepted instead of waiting for the job.
    #[arg(long)]
    no_wait: bool,
    /// Longest wait for the import job, in seconds.
    #[arg(long, default_value_t = 600)]
    wait_secs: u64,
}

#[derive(Subcommand)]
enum JobsCommand {
    /// Shows one job: state, attempts, progress, result, last error.
    Show { id: Uuid },
}

#[derive(Subcommand)]
enum DbCommand {
    /// The database's health checks.
    Health,
}

/// The token to send: given, else the server's data dir's.
fn token(args: &AdminArgs) -> anyhow::Result<String> {
    if let Some(token) = args.token.as_ref().filter(|t| !t.is_empty()) {
        return Ok(token.clone());
    }
    let file = args.data_dir.join("admin_token");
    match std::fs::read_to_string(&file) {
        Ok(token) if !token.trim().is_empty() => Ok(token.trim().to_owned()),
        _ => bail!(
            "no admin token: pass --token or set TENANTRY_ADMIN_TOKEN, or point --data-dir at \
             the server's data dir (there is no {})",
            file.display()
        ),
    }
}

/// Runs the command; a failure is one line on stderr and exit status 1
/// (no backtrace, no cause chain: the message says it all).
pub async fn run(args: AdminArgs) -> anyhow::Result<()> {
    if let Err(e) = execute(args).await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
    Ok(())
}

async fn execute(args: AdminArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.url, token(&args)?)?;
    let json_out = args.json;
    match args.command {
        AdminCommand::Tenants(cmd) => tenants(&client, cmd, json_out).await,
        AdminCommand::Members(MembersCommand::Add { tenant, user, role }) => {
            let member = client
                .json(
                    Method::POST,
                    &format!("/v1/admin/tenants/{tenant}/members"),
                    Some(&json!({"user_id": user, "role": role})),
                    "adding members as the platform admin",
                )
                .await?;
            if json_out {
                output::json(&member);
            } else {
                println!(
                    "added {} to tenant {tenant} as {}",
                    output::cell(member.get("user_id")),
                    output::cell(member.get("role"))
                );
            }
            Ok(())
        }
        AdminCommand::Export(export_args) => export(&client, export_args, json_out).await,
        AdminCommand::Import(import_args) => import(&client, import_args, json_out).await,
        AdminCommand::Jobs(JobsCommand::Show { id }) => {
            let job = client
                .json(
                    Method::GET,
                    &format!("/v1/admin/jobs/{id}"),
                    None,
                    "job lookup",
                )
                .await?;
            show(&job, json_out);
            Ok(())
        }
        AdminCommand::Db(DbCommand::Health) => {
            let health = client
                .json(Method::GET, "/v1/admin/db/health", None, "database health")
                .await?;
            if json_out {
                output::json(&health);
                return Ok(());
            }
            println!("status: {}", output::cell(health.get("status")));
            let rows: Vec<Vec<String>> = items(&health, "checks")
                .iter()
                .map(|c| {
                    ["name", "status", "value", "detail"]
                        .iter()
                        .map(|k| output::cell(c.get(*k)))
                        .collect()
                })
                .collect();
            output::table(&["CHECK", "STATUS", "VALUE", "DETAIL"], &rows);
            Ok(())
        }
    }
}

fn items<'a>(value: &'a Value, key: &str) -> &'a [Value] {
    value
        .get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn show(value: &Value, json_out: bool) {
    if json_out {
        output::json(value);
    } else {
        output::record(value);
    }
}

const TENANTS: &str = "tenant administration";

async fn tenants(client: &Client, cmd: TenantsCommand, json_out: bool) -> anyhow::Result<()> {
    let tenant_path = |id: &Uuid| format!("/v1/admin/tenants/{id}");
    let answer = match cmd {
        TenantsCommand::List { limit, cursor, all } => {
            return list_tenants(client, limit, cursor, all, json_out).await;
        }
        TenantsCommand::Show { id } => {
            client
                .json(Method::GET, &tenant_path(&id), None, TENANTS)
                .await?
        }
        TenantsCommand::Create {
            slug,
            name,
            owner,
            tier,
            domain,
            join_policy,
        } => {
            let mut body = json!({"slug": slug, "name": name, "owner_user_id": owner});
            insert(&mut body, "tier", tier.map(Value::from));
            insert(&mut body, "domain", domain.map(Value::from));
            insert(&mut body, "join_policy", join_policy.map(Value::from));
            client
                .json(Method::POST, "/v1/admin/tenants", Some(&body), TENANTS)
                .await?
        }
        TenantsCommand::Update {
            id,
            name,
            tier,
            domain,
            join_policy,
            limits,
        } => {
            let mut body = json!({});
            insert(&mut body, "name", name.map(Value::from));
            insert(&mut body, "tier", tier.map(Value::from));
            insert(
                &mut body,
                "domain",
                domain.map(|d| match d.as_str() {
                    "none" | "" => Value::Null,
                    _ => Value::from(d),
                }),
            );
            insert(&mut body, "join_policy", join_policy.map(Value::from));
            if !limits.is_empty() {
                insert(&mut body, "limits", Some(parse_limits(&limits)?));
            }
            if body.as_object().is_some_and(Map::is_empty) {
                bail!("nothing to change: give --name, --tier, --domain, --join-policy or --limit");
            }
            client
                .json(Method::PATCH, &tenant_path(&id), Some(&body), TENANTS)
                .await?
        }
        TenantsCommand::Suspend { id } => {
            client
                .json(
                    Method::PATCH,
                    &tenant_path(&id),
                    Some(&json!({"status": "suspended"})),
                    TENANTS,
                )
                .await?
        }
        TenantsCommand::Resume { id } => {
            client
                .json(
                    Method::PATCH,
                    &tenant_path(&id),
                    Some(&json!({"status": "active"})),
                    TENANTS,
                )
                .await?
        }
        TenantsCommand::Delete { id } => {
            let deleted = client
                .json(Method::DELETE, &tenant_path(&id), None, TENANTS)
                .await?;
            if json_out {
                output::json(&deleted);
            } else {
                println!("tenant {id} deleted; its data is purged in the background");
            }
            return Ok(());
        }
    };
    if json_out {
        output::json(&answer);
    } else {
        tenant_record(&answer);
    }
    Ok(())
}

fn insert(body: &mut Value, key: &str, value: Option<Value>) {
    if let (Some(map), Some(value)) = (body.as_object_mut(), value) {
        map.insert(key.to_owned(), value);
    }
}

/// `name=value` pairs into a limits object: a number, or null for `name=`.
fn parse_limits(pairs: &[String]) -> anyhow::Result<Value> {
    let mut limits = Map::new();
    for pair in pairs {
        let Some((name, value)) = pair.split_once('=') else {
            bail!("--limit takes NAME=VALUE (e.g. rate_per_sec=50), not `{pair}`");
        };
        let value = if value.is_empty() {
            Value::Null
        } else {
            Value::from(
                value
                    .parse::<u64>()
                    .with_context(|| format!("--limit {name}: `{value}` is not a whole number"))?,
            )
        };
        limits.insert(name.to_owned(), value);
    }
    Ok(Value::Object(limits))
}

/// A tenant for people: the identifying fields first, then the rest.
fn tenant_record(t: &Value) {
    let mut shown = Map::new();
    for key in [
        "id",
        "slug",
        "name",
        "tier",
        "status",
        "domain",
        "join_policy",
        "owner_user_id",
        "member_count",
        "created_at",
        "updated_at",
        "limits",
        "settings",
        "features",
    ] {
        if let Some(v) = t.get(key) {
            shown.insert(key.to_owned(), v.clone());
        }
    }
    output::record(&Value::Object(shown));
}

async fn list_tenants(
    client: &Client,
    limit: u32,
    mut cursor: Option<String>,
    all: bool,
    json_out: bool,
) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    let mut items_seen = Vec::new();
    loop {
        let mut path = format!("/v1/admin/tenants?limit={limit}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={}", encode(c)));
        }
        let page = client.json(Method::GET, &path, None, TENANTS).await?;
        for t in items(&page, "items") {
            rows.push(
                [
                    "id",
                    "slug",
                    "name",
                    "tier",
                    "status",
                    "member_count",
                    "created_at",
                ]
                .iter()
                .map(|k| output::cell(t.get(*k)))
                .collect(),
            );
            items_seen.push(t.clone());
        }
        cursor = page
            .get("next_cursor")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if !all || cursor.is_none() {
            break;
        }
    }
    if json_out {
        output::json(&json!({"items": items_seen, "next_cursor": cursor}));
        return Ok(());
    }
    output::table(
        &["ID", "SLUG", "NAME", "TIER", "STATUS", "MEMBERS", "CREATED"],
        &rows,
    );
    if let Some(c) = cursor {
        eprintln!("more: --cursor {c}");
    }
    Ok(())
}

/// Percent-encodes a query value (cursors are base64url, but be safe).
fn encode(raw: &str) -> String {
    raw.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

const EXPORTS: &str = "tenant exports";

async fn export(client: &Client, args: ExportArgs, json_out: bool) -> anyhow::Result<()> {
    let started = client
        .json(
            Method::POST,
            &format!("/v1/admin/tenants/{}/exports", args.tenant),
            None,
            EXPORTS,
        )
        .await?;
    let export_id = started
        .get("export_id")
        .and_then(Value::as_str)
        .context("the server's answer has no export_id")?
        .to_owned();
    if !json_out {
        eprintln!("export {export_id} started; waiting for it to be ready");
    }
    let deadline = Instant::now() + Duration::from_secs(args.wait_secs);
    let export = loop {
        let export = client
            .json(
                Method::GET,
                &format!("/v1/admin/exports/{export_id}"),
                None,
                EXPORTS,
            )
            .await?;
        match export.get("status").and_then(Value::as_str) {
            Some("ready") => break export,
            Some("failed") => bail!("export {export_id} failed: {}", output::cell(Some(&export))),
            _ if Instant::now() >= deadline => bail!(
                "export {export_id} is not ready after {} s (see `tenantry admin jobs show {}`)",
                args.wait_secs,
                output::cell(started.get("job_id"))
            ),
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    };
    let file = args
        .out
        .unwrap_or_else(|| PathBuf::from(format!("{}-{export_id}.tar.gz", args.tenant)));
    let bytes = client
        .download(
            &format!("/v1/admin/exports/{export_id}/download"),
            &file,
            EXPORTS,
        )
        .await?;
    if json_out {
        let mut export = export;
        insert(
            &mut export,
            "file",
            Some(Value::from(file.display().to_string())),
        );
        output::json(&export);
    } else {
        let tables = export
            .pointer("/manifest/tables")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        println!(
            "exported tenant {} ({tables} tables, {bytes} bytes) to {}",
            args.tenant,
            file.display()
        );
    }
    Ok(())
}

async fn import(client: &Client, args: ImportArgs, json_out: bool) -> anyhow::Result<()> {
    let mut path = format!("/v1/admin/tenants/import?slug={}", encode(&args.slug));
    if args.new_ids {
        path.push_str("&ids=new");
    }
    let accepted = client
        .upload(&path, &args.file, "application/gzip", "tenant imports")
        .await?;
    let job = accepted
        .get("job_id")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let (Some(job), false) = (job, args.no_wait) else {
        show(&accepted, json_out);
        return Ok(());
    };
    if !json_out {
        eprintln!(
            "uploaded; tenant {} is importing (job {job})",
            output::cell(accepted.get("tenant_id"))
        );
    }
    let finished = wait_for_job(client, &job, args.wait_secs).await?;
    if json_out {
        output::json(&json!({"tenant_id": accepted.get("tenant_id"), "job": finished}));
        return Ok(());
    }
    match finished.get("state").and_then(Value::as_str) {
        Some("done") => {
            println!(
                "imported {} as tenant {} ({})",
                args.file.display(),
                output::cell(accepted.get("tenant_id")),
                args.slug
            );
            Ok(())
        }
        _ => bail!(
            "the import failed: {}",
            output::cell(finished.get("last_error"))
        ),
    }
}

async fn wait_for_job(client: &Client, job: &str, wait_secs: u64) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(wait_secs);
    loop {
        let state = client
            .json(
                Method::GET,
                &format!("/v1/admin/jobs/{job}"),
                None,
                "job lookup",
            )
            .await?;
        match state.get("state").and_then(Value::as_str) {
            Some("done" | "dead") => return Ok(state),
            _ if Instant::now() >= deadline => bail!(
                "job {job} has not finished after {wait_secs} s (`tenantry admin jobs show {job}`)"
            ),
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_into_numbers_and_nulls() {
        let limits =
            parse_limits(&["rate_per_sec=50".to_owned(), "burst=".to_owned()]).expect("parse");
        assert_eq!(limits, json!({"rate_per_sec": 50, "burst": null}));
        assert!(parse_limits(&["rate_per_sec".to_owned()]).is_err());
        assert!(parse_limits(&["rate_per_sec=fast".to_owned()]).is_err());
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
        assert_eq!(encode("abc-_.~"), "abc-_.~");
    }

    #[test]
    fn a_token_comes_from_the_data_dir_when_not_given() {
        let dir = tempfile::tempdir().expect("dir");
        let args = |data_dir: &std::path::Path, token: Option<&str>| AdminArgs {
            url: "http://127.0.0.1:1".to_owned(),
            token: token.map(str::to_owned),
            data_dir: data_dir.to_owned(),
            json: false,
            command: AdminCommand::Db(DbCommand::Health),
        };
        let err = token(&args(dir.path(), None)).expect_err("no token anywhere");
        assert!(err.to_string().contains("TENANTRY_ADMIN_TOKEN"), "{err}");
        std::fs::write(dir.path().join("admin_token"), "kept-token\n").expect("write");
        assert_eq!(token(&args(dir.path(), None)).expect("read"), "kept-token");
        assert_eq!(
            token(&args(dir.path(), Some("given"))).expect("given"),
            "given"
        );
    }
}
