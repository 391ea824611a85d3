//! A private PostgreSQL cluster run from the PostgreSQL binaries installed on
//! the machine, used when Tenantry is started without a `DATABASE_URL`.
//!
//! # Layout
//!
//! Everything lives under `<data_dir>/pg`:
//!
//! * `pg/data` — the cluster (created by `initdb` on first start, reused later,
//!   so data survives restarts);
//! * `pg/socket` — the Unix socket directory (mode 0700);
//! * `pg/postgres.log` — the server log (its tail is included in startup errors).
//!
//! # Why it is safe to use `trust` authentication
//!
//! The cluster is initialised with `--auth=trust` so that no password has to be
//! generated, stored and rotated. That is only acceptable because the server
//! is reachable exclusively through a Unix socket inside a private directory:
//!
//! * `listen_addresses=''` disables TCP entirely, so nothing on the network (or
//!   another local user via `localhost`) can connect;
//! * the socket directory is mode 0700 and owned by the cluster's user, so only
//!   that user and root can reach the socket file at all.
//!
//! The connection settings (`listen_addresses`, `unix_socket_directories`,
//! `port`) are passed on the server command line (`pg_ctl start -o ...`) on every
//! start instead of being written into `postgresql.conf` once. Command-line
//! settings take precedence over `postgresql.conf` and `postgresql.auto.conf`,
//! so neither a hand edit nor an `ALTER SYSTEM SET listen_addresses = '*'` can
//! silently expose the trust-authenticated cluster on the network; and the
//! socket directory is recomputed from the data directory's current location, so
//! the data directory can be moved.
//!
//! The socket path (`<socketdir>/.s.PGSQL.5432`) must fit in `sun_path` (107
//! bytes). If `<data_dir>/pg/socket` is too deep, a private directory
//! `/tmp/tenantry-pg-<hash of the data dir>` (mode 0700, ownership verified) is
//! used instead.
//!
//! # Why an unprivileged user
//!
//! PostgreSQL refuses to run as root. When Tenantry runs as root (typical in
//! containers), `initdb` and `pg_ctl` are executed as the `postgres` user (or
//! `nobody` if there is no such user) by setting the child's uid/gid directly
//! (no `sudo`/`su`, which are often absent). `<data_dir>/pg` is chowned to that
//! user, and `<data_dir>` itself gets `o+x` if that user could not otherwise
//! traverse it. When not root, everything runs as the current user.
//!
//! # Reuse
//!
//! If a server is already running on the data directory (e.g. another Tenantry
//! process, or an orphan of a crashed one), it is reused and left running by
//! [`EmbeddedPostgres::stop`] and `Drop`: only a cluster this value started is
//! stopped.

use std::ffi::OsStr;
use std::fs::{self, DirBuilder, Metadata};
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::{Gid, Pid, Uid, User, geteuid};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

/// Name of the superuser created by `initdb` and of the application database.
const SUPERUSER: &str = "tenantry";
const DATABASE: &str = "tenantry";
/// Port number; with TCP disabled it only names the socket file.
const PORT: u16 = 5432;
/// Longest socket path that fits in `sockaddr_un.sun_path` (108 bytes incl. NUL).
const MAX_SOCKET_PATH: usize = 107;
/// How many lines of `postgres.log` to include in startup errors.
const LOG_TAIL_LINES: usize = 30;
/// How much of the end of `postgres.log` to read for that.
const LOG_TAIL_BYTES: u64 = 64 * 1024;
/// `postgres.log` is moved to `postgres.log.old` at start once it exceeds this
/// (the server writes to it through `pg_ctl -l`, without rotation).
const LOG_ROTATE_BYTES: u64 = 16 * 1024 * 1024;
/// Environment variable naming the directory holding `initdb`/`pg_ctl`.
pub const PG_BIN_ENV: &str = "TENANTRY_PG_BIN";

const NOT_FOUND: &str = "PostgreSQL server binaries (initdb, pg_ctl) not found; install them with \
`apt-get install postgresql` (Debian/Ubuntu) or `dnf install postgresql-server`, or set \
TENANTRY_PG_BIN, or set DATABASE_URL to use an existing server.";

/// A PostgreSQL cluster kept in `<data_dir>/pg`, reachable only through a
/// private Unix socket.
///
/// Obtain one with [`EmbeddedPostgres::start`], connect with
/// [`connection_string`](EmbeddedPostgres::connection_string), and shut it down
/// with [`stop`](EmbeddedPostgres::stop). Dropping a value that started its
/// cluster stops the cluster synchronously (best effort).
#[derive(Debug)]
pub struct EmbeddedPostgres {
    bin_dir: PathBuf,
    /// `<data_dir>/pg`
    pg_dir: PathBuf,
    /// `<data_dir>/pg/data`
    data: PathBuf,
    /// `<data_dir>/pg/postgres.log`
    log_file: PathBuf,
    socket_dir: PathBuf,
    port: u16,
    /// User to run `initdb`/`pg_ctl` as (only when we are root).
    run_as: Option<RunAs>,
    /// Whether this value started the server (and must therefore stop it).
    started: bool,
    /// Whether `socket_dir` is a `/tmp` fallback directory to remove after stop.
    tmp_socket_dir: bool,
}

#[derive(Debug, Clone)]
struct RunAs {
    name: String,
    uid: Uid,
    gid: Gid,
}

/// What `postmaster.pid` says about a server on our data directory.
enum Existing {
    /// No server (no pid file, or a stale one).
    None,
    /// A server is running and accepting connections on this socket.
    Ready { socket_dir: PathBuf, port: u16 },
    /// A server is starting up or shutting down; look again shortly.
    Busy(String),
}

impl EmbeddedPostgres {
    /// Starts (initdb on first run) the cluster kept in `<data_dir>/pg`; reuses
    /// it on later runs so data survives restarts.
    ///
    /// The binaries are located with [`find_binaries`]. If a server is already
    /// running on the data directory it is reused (and not stopped by
    /// [`stop`](Self::stop)). Afterwards the database `tenantry` exists.
    pub async fn start(data_dir: &Path) -> Result<Self> {
        let bin_dir = find_binaries()?;
        Self::start_with_binaries(data_dir, &bin_dir).await
    }

    /// Like [`start`](Self::start), but with an explicit PostgreSQL bin
    /// directory (one containing `initdb`, `pg_ctl` and `postgres`).
    pub async fn start_with_binaries(data_dir: &Path, bin_dir: &Path) -> Result<Self> {
        let mut pg = Self::prepare(data_dir, bin_dir).await?;

        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match pg.inspect_existing().await? {
                Existing::None => break,
                Existing::Ready { socket_dir, port } => {
                    tracing::info!(
                        data_dir = %pg.data.display(),
                        socket_dir = %socket_dir.display(),
                        "reusing the PostgreSQL server already running on this data directory"
                    );
                    pg.socket_dir = socket_dir;
                    pg.port = port;
                    pg.tmp_socket_dir = false;
                    pg.wait_until_accepting().await.with_context(|| {
                        format!(
                            "a PostgreSQL server seems to run on {} (see its postmaster.pid) but \
                             does not accept connections; if no server is running there, \
                             remove {}",
                            pg.data.display(),
                            pg.data.join("postmaster.pid").display()
                        )
                    })?;
                    pg.ensure_database().await?;
                    return Ok(pg);
                }
                Existing::Busy(state) => {
                    if Instant::now() > deadline {
                        bail!(
                            "a PostgreSQL server on {} stayed in state `{state}` for too long; \
                             if no server is running there, remove {}",
                            pg.data.display(),
                            pg.data.join("postmaster.pid").display()
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }

        if pg.tmp_socket_dir {
            prepare_private_dir(&pg.socket_dir, pg.run_as.as_ref())?;
        }
        if !pg.data.join("PG_VERSION").exists() {
            pg.initdb().await?;
        }
        pg.start_server().await?;
        // From here on, `Drop` stops the server if anything below fails.
        pg.wait_until_accepting().await?;
        pg.ensure_database().await?;
        Ok(pg)
    }

    /// libpq key=value connection string for
    /// `tokio_postgres::Config::from_str`, e.g.
    /// `host=/abs/path/to/socketdir port=5432 user=tenantry dbname=tenantry`.
    pub fn connection_string(&self) -> String {
        format!(
            "host={} port={} user={} dbname={}",
            quote_conn_value(&self.socket_dir.to_string_lossy()),
            self.port,
            SUPERUSER,
            DATABASE
        )
    }

    /// The superuser name (`tenantry`) and database name (`tenantry`).
    pub fn database(&self) -> &str {
        DATABASE
    }

    /// The directory containing the server's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The port number (only used to name the socket; TCP is disabled).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's data directory (`<data_dir>/pg/data`).
    pub fn cluster_dir(&self) -> &Path {
        &self.data
    }

    /// Whether this value started the server (and so will stop it), as opposed
    /// to reusing one that was already running.
    pub fn owns_server(&self) -> bool {
        self.started
    }

    /// Stops the cluster it started (`pg_ctl stop -m fast`, waits). No-op if it
    /// did not start it.
    pub async fn stop(mut self) -> Result<()> {
        if !self.started {
            tracing::info!(
                data_dir = %self.data.display(),
                "leaving the reused PostgreSQL server running"
            );
            return Ok(());
        }
        tracing::info!(data_dir = %self.data.display(), "stopping PostgreSQL");
        let out = run(self.stop_command()).await?;
        self.started = false;
        if !out.status.success() && self.data.join("postmaster.pid").exists() {
            bail!(
                "pg_ctl stop failed for {}: {}{}",
                self.data.display(),
                describe_output(&out),
                self.log_tail()
            );
        }
        self.remove_tmp_socket_dir();
        tracing::info!(data_dir = %self.data.display(), "PostgreSQL stopped");
        Ok(())
    }

    // ----------------------------------------------------------------------
    // Startup steps
    // ----------------------------------------------------------------------

    /// Creates the directories, fixes ownership/permissions and computes paths.
    async fn prepare(data_dir: &Path, bin_dir: &Path) -> Result<Self> {
        fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
        let data_dir = fs::canonicalize(data_dir)
            .with_context(|| format!("cannot resolve data directory {}", data_dir.display()))?;
        check_path_usable(&data_dir)?;
        let bin_dir = fs::canonicalize(bin_dir).unwrap_or_else(|_| bin_dir.to_path_buf());

        let run_as = if geteuid().is_root() {
            Some(unprivileged_user()?)
        } else {
            None
        };

        let pg_dir = data_dir.join("pg");
        DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(&pg_dir)
            .with_context(|| format!("cannot create {}", pg_dir.display()))?;

        if let Some(user) = &run_as {
            ensure_traversable(&data_dir, user)?;
            let (dir, uid, gid) = (pg_dir.clone(), user.uid, user.gid);
            tokio::task::spawn_blocking(move || chown_recursive(&dir, uid, gid))
                .await
                .context("chown task failed")??;
        }

        // The socket path must fit in sun_path (107 bytes); if `pg/socket` is
        // too deep, fall back to a private directory in /tmp named after the
        // data directory (created/verified just before the server starts).
        let local_socket_dir = pg_dir.join("socket");
        let (socket_dir, tmp_socket_dir) =
            if socket_file(&local_socket_dir, PORT).as_os_str().len() <= MAX_SOCKET_PATH {
                prepare_private_dir(&local_socket_dir, run_as.as_ref())?;
                (local_socket_dir, false)
            } else {
                let dir = PathBuf::from(format!(
                    "/tmp/tenantry-pg-{:016x}",
                    fnv1a(pg_dir.as_os_str().as_encoded_bytes())
                ));
                (dir, true)
            };

        Ok(Self {
            bin_dir,
            data: pg_dir.join("data"),
            log_file: pg_dir.join("postgres.log"),
            pg_dir,
            socket_dir,
            port: PORT,
            run_as,
            started: false,
            tmp_socket_dir,
        })
    }

    /// Looks at `postmaster.pid` to decide whether a server already runs here.
    async fn inspect_existing(&self) -> Result<Existing> {
        let pid_file = self.data.join("postmaster.pid");
        let contents = match fs::read_to_string(&pid_file) {
            Ok(c) => c,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Existing::None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", pid_file.display())),
        };
        let lines: Vec<&str> = contents.lines().collect();
        let Some(pid) = lines
            .first()
            .and_then(|l| l.trim().parse::<i32>().ok())
            .filter(|p| *p > 0)
        else {
            // Empty or partially written: a server may be creating it right now.
            return Ok(Existing::Busy("pid file incomplete".into()));
        };

        match kill(Pid::from_raw(pid), None) {
            Ok(()) => {}
            // Gone, or owned by another user (so not our postmaster): stale.
            // PostgreSQL itself replaces such a stale file on start.
            Err(Errno::ESRCH) | Err(Errno::EPERM) => {
                tracing::info!(pid, pid_file = %pid_file.display(), "ignoring stale postmaster.pid");
                return Ok(Existing::None);
            }
            Err(e) => return Err(anyhow!(e).context(format!("cannot check process {pid}"))),
        }

        // The pid is alive. After a reboot/container restart it may belong to
        // an unrelated process, which would make PostgreSQL refuse to start
        // ("lock file already exists"). A postmaster is named postgres and has
        // the data directory as its working directory; if /proc proves that
        // this process is something else, the file is stale and removed.
        if !self.process_may_be_our_postmaster(pid) {
            tracing::warn!(
                pid,
                pid_file = %pid_file.display(),
                "postmaster.pid names a live process that is not this cluster's server; \
                 removing the stale pid file"
            );
            match fs::remove_file(&pid_file) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot remove {}", pid_file.display()));
                }
            }
            return Ok(Existing::None);
        }

        let mut status = self.pg_ctl_command();
        status.arg("status").arg("-D").arg(&self.data);
        if !run(status).await?.status.success() {
            return Ok(Existing::None);
        }

        // Lines: pid, datadir, start time, port, socket dir, listen addr, shmem key, status.
        let state = lines.get(7).map(|s| s.trim()).unwrap_or("");
        match state {
            "ready" | "standby" => {
                let port = lines
                    .get(3)
                    .and_then(|p| p.trim().parse::<u16>().ok())
                    .unwrap_or(PORT);
                let socket = lines.get(4).map(|s| s.trim()).unwrap_or("");
                if !socket.starts_with('/') {
                    bail!(
                        "a PostgreSQL server is running on {} without a Unix socket \
                         (postmaster.pid lists none); stop it (pg_ctl stop -D {}) and retry",
                        self.data.display(),
                        self.data.display()
                    );
                }
                Ok(Existing::Ready {
                    socket_dir: PathBuf::from(socket),
                    port,
                })
            }
            "" => Ok(Existing::Busy("starting".into())),
            other => Ok(Existing::Busy(other.to_string())),
        }
    }

    /// False only if /proc shows that `pid` is certainly not a server on our
    /// data directory.
    fn process_may_be_our_postmaster(&self, pid: i32) -> bool {
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        if let Ok(comm) = fs::read_to_string(proc_dir.join("comm")) {
            let comm = comm.trim();
            if !(comm.starts_with("postgres") || comm.starts_with("postmaster")) {
                return false;
            }
        }
        if let Ok(cwd) = fs::read_link(proc_dir.join("cwd")) {
            let data = fs::canonicalize(&self.data).unwrap_or_else(|_| self.data.clone());
            if cwd != data {
                return false;
            }
        }
        true
    }

    async fn initdb(&self) -> Result<()> {
        tracing::info!(data_dir = %self.data.display(), "initializing PostgreSQL cluster (initdb)");
        let mut last = None;
        for locale in ["C.UTF-8", "C"] {
            let mut cmd = self.command("initdb");
            cmd.arg("-D")
                .arg(&self.data)
                .arg("-U")
                .arg(SUPERUSER)
                .arg("--auth=trust")
                .arg("--encoding=UTF8")
                .arg(format!("--locale={locale}"));
            let out = run(cmd).await?;
            if out.status.success() {
                tracing::info!(data_dir = %self.data.display(), locale, "initdb done");
                return Ok(());
            }
            tracing::warn!(
                locale,
                output = %describe_output(&out),
                "initdb failed with this locale"
            );
            last = Some(out);
        }
        let details = last.as_ref().map(describe_output).unwrap_or_default();
        bail!("initdb failed for {}: {details}", self.data.display())
    }

    async fn start_server(&mut self) -> Result<()> {
        tracing::info!(
            data_dir = %self.data.display(),
            socket_dir = %self.socket_dir.display(),
            log = %self.log_file.display(),
            "starting PostgreSQL"
        );
        let options = format!(
            "-c {} -c {} -c {}",
            shell_quote("listen_addresses="),
            shell_quote(&format!("port={}", self.port)),
            // Double quotes: element quoting of the GUC list syntax.
            shell_quote(&format!(
                "unix_socket_directories=\"{}\"",
                self.socket_dir.to_string_lossy()
            )),
        );
        if fs::metadata(&self.log_file).is_ok_and(|m| m.len() > LOG_ROTATE_BYTES) {
            let old = self.pg_dir.join("postgres.log.old");
            if let Err(e) = fs::rename(&self.log_file, &old) {
                tracing::warn!(error = %e, log = %self.log_file.display(), "cannot rotate log");
            }
        }
        let mut cmd = self.pg_ctl_command();
        cmd.arg("start")
            .arg("-D")
            .arg(&self.data)
            .arg("-w")
            .arg("-t")
            .arg("60")
            .arg("-l")
            .arg(&self.log_file)
            .arg("-o")
            .arg(options);
        let out = run(cmd).await?;
        if !out.status.success() {
            bail!(
                "could not start PostgreSQL on {}: {}{}",
                self.data.display(),
                describe_output(&out),
                self.log_tail()
            );
        }
        self.started = true;
        tracing::info!(data_dir = %self.data.display(), "PostgreSQL started");
        Ok(())
    }

    async fn connect(&self, dbname: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(&self.socket_dir)
            .port(self.port)
            .user(SUPERUSER)
            .dbname(dbname)
            .application_name("tenantry-embedded")
            .connect_timeout(Duration::from_secs(5));
        let (client, connection) = config.connect(NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "embedded PostgreSQL admin connection ended");
            }
        });
        Ok(client)
    }

    /// Waits until the server accepts connections (it may still be starting).
    async fn wait_until_accepting(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.connect("postgres").await {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    return Err(anyhow!(e).context(format!(
                        "PostgreSQL does not accept connections on {}{}",
                        self.socket_dir.display(),
                        self.log_tail()
                    )));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Creates the `tenantry` database if it does not exist yet.
    async fn ensure_database(&self) -> Result<()> {
        let client = self
            .connect("postgres")
            .await
            .context("cannot connect to the embedded PostgreSQL")?;
        let exists = client
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&DATABASE])
            .await
            .context("cannot list databases")?
            .is_some();
        if exists {
            return Ok(());
        }
        tracing::info!(data_dir = %self.data.display(), database = DATABASE, "creating database");
        // DATABASE is a constant plain identifier, safe to interpolate.
        match client
            .batch_execute(&format!("CREATE DATABASE {DATABASE}"))
            .await
        {
            Ok(()) => Ok(()),
            // Another process created it concurrently.
            Err(e)
                if e.code() == Some(&SqlState::DUPLICATE_DATABASE)
                    || e.code() == Some(&SqlState::UNIQUE_VIOLATION) =>
            {
                Ok(())
            }
            Err(e) => Err(anyhow!(e).context(format!("cannot create database {DATABASE}"))),
        }
    }

    // ----------------------------------------------------------------------
    // Helpers
    // ----------------------------------------------------------------------

    /// A command for a PostgreSQL binary, run as the cluster's user.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(program));
        cmd.current_dir(&self.pg_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Make sure nothing from our environment redirects the tools.
            .env_remove("PGDATA")
            .env_remove("PGHOST")
            .env_remove("PGPORT")
            .env_remove("PGOPTIONS");
        if let Some(user) = &self.run_as {
            cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
        }
        cmd
    }

    fn pg_ctl_command(&self) -> Command {
        self.command("pg_ctl")
    }

    fn stop_command(&self) -> Command {
        let mut cmd = self.pg_ctl_command();
        cmd.arg("stop")
            .arg("-D")
            .arg(&self.data)
            .arg("-m")
            .arg("fast")
            .arg("-w")
            .arg("-t")
            .arg("60");
        cmd
    }

    fn remove_tmp_socket_dir(&self) {
        if self.tmp_socket_dir {
            // Only succeeds if empty (the server removes its socket on exit).
            let _ = fs::remove_dir(&self.socket_dir);
        }
    }

    /// `"\n--- last lines of <log> ---\n..."`, or empty if there is no log.
    fn log_tail(&self) -> String {
        // Only read the end of the file: the log may be large.
        let read_end = || -> std::io::Result<String> {
            let mut file = fs::File::open(&self.log_file)?;
            let len = file.metadata()?.len();
            file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)))?;
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)?;
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        };
        let Ok(log) = read_end() else {
            return String::new();
        };
        let lines: Vec<&str> = log.lines().collect();
        let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
        if tail.is_empty() {
            return String::new();
        }
        format!(
            "\n--- last lines of {} ---\n{}",
            self.log_file.display(),
            tail.join("\n")
        )
    }
}

impl Drop for EmbeddedPostgres {
    /// Stops a still-running cluster this value started (synchronously, best
    /// effort), e.g. when the server panics before calling `stop`.
    fn drop(&mut self) {
        if !self.started {
            return;
        }
        self.started = false;
        tracing::info!(data_dir = %self.data.display(), "stopping PostgreSQL (drop)");
        match self.stop_command().output() {
            Ok(out) if out.status.success() => {
                tracing::info!(data_dir = %self.data.display(), "PostgreSQL stopped");
            }
            Ok(out) => tracing::warn!(
                data_dir = %self.data.display(),
                output = %describe_output(&out),
                "pg_ctl stop failed"
            ),
            Err(e) => tracing::warn!(
                data_dir = %self.data.display(),
                error = %e,
                "could not run pg_ctl stop"
            ),
        }
        self.remove_tmp_socket_dir();
    }
}

// --------------------------------------------------------------------------
// Locating the binaries
// --------------------------------------------------------------------------

/// Returns the directory holding the PostgreSQL server binaries (`initdb`,
/// `pg_ctl`, `postgres`).
///
/// Order: `$TENANTRY_PG_BIN` (if set, it must be right); `pg_config --bindir`
/// (if it has `initdb`); the highest version in `/usr/lib/postgresql/*/bin`;
/// `/usr/local/pgsql/bin`; `initdb` on `PATH`.
pub fn find_binaries() -> Result<PathBuf> {
    let from_env = std::env::var_os(PG_BIN_ENV).filter(|v| !v.is_empty());
    find_binaries_in(from_env.as_deref().map(Path::new))
}

/// [`find_binaries`] with the `TENANTRY_PG_BIN` override given explicitly
/// (`None` = search the usual places).
pub fn find_binaries_in(override_dir: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = override_dir {
        if has_server_binaries(dir) {
            return Ok(dir.to_path_buf());
        }
        bail!(
            "{PG_BIN_ENV}={} does not contain executable initdb and pg_ctl. {NOT_FOUND}",
            dir.display()
        );
    }

    if let Some(dir) = pg_config_bindir().filter(|d| has_server_binaries(d)) {
        return Ok(dir);
    }

    let mut versions: Vec<(Vec<u64>, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = parse_version(&entry.file_name())?;
            let bin = entry.path().join("bin");
            has_server_binaries(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }

    let local = Path::new("/usr/local/pgsql/bin");
    if has_server_binaries(local) {
        return Ok(local.to_path_buf());
    }

    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let initdb = dir.join("initdb");
            if !is_executable(&initdb) {
                continue;
            }
            // Prefer the real directory behind a symlink (e.g. /usr/local/bin/initdb
            // -> /usr/lib/postgresql/15/bin/initdb), where `postgres` also lives.
            if let Some(real) = fs::canonicalize(&initdb)
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf))
                .filter(|d| has_server_binaries(d))
            {
                return Ok(real);
            }
            if has_server_binaries(&dir) {
                return Ok(dir);
            }
        }
    }

    bail!("{NOT_FOUND}")
}

fn pg_config_bindir() -> Option<PathBuf> {
    let out = Command::new("pg_config")
        .arg("--bindir")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let dir = String::from_utf8(out.stdout).ok()?;
    let dir = dir.trim();
    (!dir.is_empty()).then(|| PathBuf::from(dir))
}

/// "15" -> [15], "9.6" -> [9, 6]; `None` for non-version names.
fn parse_version(name: &OsStr) -> Option<Vec<u64>> {
    name.to_str()?
        .split('.')
        .map(|part| part.parse::<u64>().ok())
        .collect()
}

fn has_server_binaries(dir: &Path) -> bool {
    is_executable(&dir.join("initdb")) && is_executable(&dir.join("pg_ctl"))
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

// --------------------------------------------------------------------------
// Users, permissions, paths
// --------------------------------------------------------------------------

/// The user to run PostgreSQL as when we are root: `postgres`, else `nobody`.
fn unprivileged_user() -> Result<RunAs> {
    for name in ["postgres", "nobody"] {
        if let Some(user) =
            User::from_name(name).with_context(|| format!("cannot look up user {name}"))?
        {
            if user.uid.is_root() {
                continue;
            }
            return Ok(RunAs {
                name: name.to_string(),
                uid: user.uid,
                gid: user.gid,
            });
        }
    }
    bail!(
        "running as root, but PostgreSQL refuses to run as root and neither a `postgres` \
         nor a `nobody` user exists to run it as; create a `postgres` user \
         (e.g. `useradd --system postgres`) or run Tenantry as a non-root user"
    )
}

/// Whether `user` (with only its primary group) may search directory `meta`.
fn can_traverse(meta: &Metadata, user: &RunAs) -> bool {
    let mode = meta.mode();
    if meta.uid() == user.uid.as_raw() {
        mode & 0o100 != 0
    } else if meta.gid() == user.gid.as_raw() {
        mode & 0o010 != 0
    } else {
        mode & 0o001 != 0
    }
}

/// Makes sure `user` can reach `<data_dir>/pg`: fails naming the first
/// ancestor it cannot traverse, and adds `o+x` to `data_dir` itself if needed
/// (never to its ancestors).
fn ensure_traversable(data_dir: &Path, user: &RunAs) -> Result<()> {
    let mut ancestors: Vec<&Path> = data_dir.ancestors().skip(1).collect();
    ancestors.reverse();
    for dir in ancestors {
        let meta = fs::metadata(dir).with_context(|| format!("cannot stat {}", dir.display()))?;
        if !can_traverse(&meta, user) {
            bail!(
                "PostgreSQL runs as user `{}`, which cannot enter {} (mode {:o}, owner uid {}) \
                 on the way to the data directory {}; use a data directory outside it, or \
                 allow traversal (e.g. `chmod o+x {}`)",
                user.name,
                dir.display(),
                meta.mode() & 0o7777,
                meta.uid(),
                data_dir.display(),
                dir.display()
            );
        }
    }
    let meta =
        fs::metadata(data_dir).with_context(|| format!("cannot stat {}", data_dir.display()))?;
    if !can_traverse(&meta, user) {
        let mode = (meta.mode() & 0o7777) | 0o001;
        tracing::info!(
            data_dir = %data_dir.display(),
            user = %user.name,
            "adding o+x to the data directory so the PostgreSQL user can reach its cluster"
        );
        fs::set_permissions(data_dir, fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot chmod o+x {}", data_dir.display()))?;
    }
    Ok(())
}

/// `lchown -R`, touching only entries whose owner differs.
fn chown_recursive(root: &Path, uid: Uid, gid: Gid) -> Result<()> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            // Files can vanish under a running server (e.g. temp files).
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot stat {}", path.display())),
        };
        if meta.uid() != uid.as_raw() || meta.gid() != gid.as_raw() {
            std::os::unix::fs::lchown(&path, Some(uid.as_raw()), Some(gid.as_raw()))
                .with_context(|| format!("cannot chown {}", path.display()))?;
        }
        if meta.is_dir() {
            let entries =
                fs::read_dir(&path).with_context(|| format!("cannot list {}", path.display()))?;
            for entry in entries {
                let entry = entry.with_context(|| format!("cannot list {}", path.display()))?;
                stack.push(entry.path());
            }
        }
    }
    Ok(())
}

/// Creates (or verifies) a mode-0700 directory owned by the cluster's user.
/// Refuses a symlink or a directory owned by anybody else (relevant for the
/// `/tmp` fallback, where another user could have created it first).
fn prepare_private_dir(dir: &Path, run_as: Option<&RunAs>) -> Result<()> {
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", dir.display())),
    }
    let meta =
        fs::symlink_metadata(dir).with_context(|| format!("cannot stat {}", dir.display()))?;
    if !meta.is_dir() {
        bail!(
            "{} exists but is not a directory; remove it so the PostgreSQL socket directory \
             can be created",
            dir.display()
        );
    }
    let owner = meta.uid();
    let ok_owner = owner == geteuid().as_raw() || run_as.is_some_and(|u| owner == u.uid.as_raw());
    if !ok_owner {
        bail!(
            "refusing to use {} as the PostgreSQL socket directory: it is owned by uid {owner}",
            dir.display()
        );
    }
    if let Some(user) = run_as {
        std::os::unix::fs::lchown(dir, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
            .with_context(|| format!("cannot chown {}", dir.display()))?;
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot chmod 0700 {}", dir.display()))?;
    Ok(())
}

/// pg_ctl pastes `-D`/`-l` paths into a `/bin/sh` command line inside double
/// quotes, and the connection string needs text: reject what would break that.
fn check_path_usable(data_dir: &Path) -> Result<()> {
    let Some(text) = data_dir.to_str() else {
        bail!(
            "the data directory path {} is not valid UTF-8",
            data_dir.display()
        );
    };
    if let Some(c) = text
        .chars()
        .find(|c| matches!(c, '"' | '$' | '`' | '\\' | '\n' | '\r'))
    {
        bail!(
            "the data directory path {text:?} contains {c:?}, which pg_ctl cannot handle; \
             choose another data directory"
        );
    }
    Ok(())
}

fn socket_file(dir: &Path, port: u16) -> PathBuf {
    dir.join(format!(".s.PGSQL.{port}"))
}

/// 64-bit FNV-1a: a hash that is stable across Rust versions and processes.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Quotes for `/bin/sh` (single quotes, `'` as `'\''`).
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Quotes a libpq key=value connection-string value if needed.
fn quote_conn_value(s: &str) -> String {
    if !s.is_empty()
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c == '\'' || c == '\\')
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\\', r"\\").replace('\'', r"\'"))
}

// --------------------------------------------------------------------------
// Running commands
// --------------------------------------------------------------------------

async fn run(cmd: Command) -> Result<Output> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    tracing::debug!(command = ?cmd, "running");
    tokio::process::Command::from(cmd)
        .output()
        .await
        .with_context(|| format!("cannot run {program}"))
}

fn describe_output(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut text = format!("{}", out.status);
    for part in [stderr.trim(), stdout.trim()] {
        if !part.is_empty() {
            text.push('\n');
            text.push_str(part);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_value_quoting() {
        assert_eq!(quote_conn_value("/a/b"), "/a/b");
        assert_eq!(quote_conn_value("/a b/c'd"), r"'/a b/c\'d'");
    }

    #[test]
    fn versions_sort_numerically() {
        let mut v = [
            parse_version(OsStr::new("9.6")),
            parse_version(OsStr::new("15")),
            parse_version(OsStr::new("10")),
        ];
        v.sort();
        assert_eq!(v[2], Some(vec![15]));
        assert_eq!(parse_version(OsStr::new("common")), None);
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
    }
}
