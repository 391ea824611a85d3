//! Servers that speak TLS, for the tests of TLS to PostgreSQL and Redis: a
//! certificate authority made on the spot (with the `openssl` command), a
//! private PostgreSQL cluster on a free TCP port with `ssl = on`, and a
//! `redis-server --tls-port`. Everything lives in a temporary directory
//! removed on drop; the servers are stopped on drop.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::unistd::{Gid, Uid, User, chown, geteuid};

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("tenantry-{what}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("create a scratch directory");
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A test CA, a second CA that signed nothing of ours (the "wrong CA"), a
/// server certificate for `localhost` only, and a client certificate for
/// the user `certuser`.
pub struct Certificates {
    pub ca: PathBuf,
    pub wrong_ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    dir: Scratch,
}

/// The user name the client certificate is issued to.
pub const CERT_USER: &str = "certuser";

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn new_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-subj",
            &format!("/CN=Tenantry test {name}"),
        ],
    );
}

fn new_leaf(dir: &Path, name: &str, subject: &str, extensions: &str) {
    std::fs::write(dir.join(format!("{name}.ext")), extensions).expect("write extensions");
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            subject,
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            &format!("{}", rand::random::<u32>()),
            "-days",
            "2",
            "-out",
            &format!("{name}.crt"),
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
}

impl Certificates {
    pub fn generate() -> Self {
        let dir = Scratch::new("certs");
        let d = dir.0.clone();
        new_ca(&d, "ca");
        new_ca(&d, "wrong-ca");
        new_leaf(
            &d,
            "server",
            "/CN=localhost",
            "subjectAltName=DNS:localhost\nbasicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        );
        new_leaf(
            &d,
            "client",
            &format!("/CN={CERT_USER}"),
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=clientAuth\n",
        );
        Self {
            ca: d.join("ca.pem"),
            wrong_ca: d.join("wrong-ca.pem"),
            server_cert: d.join("server.crt"),
            server_key: d.join("server.key"),
            client_cert: d.join("client.crt"),
            client_key: d.join("client.key"),
            dir,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir.0
    }
}

/// A free TCP port on 127.0.0.1 (free when asked; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Who runs the servers: PostgreSQL refuses root, so as root they run as
/// `postgres` (the Debian package's user).
fn run_as() -> Option<(Uid, Gid)> {
    if !geteuid().is_root() {
        return None;
    }
    let user = User::from_name("postgres")
        .ok()
        .flatten()
        .or_else(|| User::from_name("nobody").ok().flatten())
        .expect("a postgres or nobody user to run PostgreSQL as");
    Some((user.uid, user.gid))
}

fn give(path: &Path, owner: Option<(Uid, Gid)>, mode: u32) {
    if let Some((uid, gid)) = owner {
        chown(path, Some(uid), Some(gid)).expect("chown");
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn command(program: &Path, owner: Option<(Uid, Gid)>, dir: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(dir);
    if let Some((uid, gid)) = owner {
        cmd.uid(uid.as_raw()).gid(gid.as_raw());
    }
    cmd
}

/// A private PostgreSQL cluster on 127.0.0.1:`port`, trust authentication
/// (TLS or not) except for [`CERT_USER`], who must present the client
/// certificate. `ssl` says whether the server offers TLS at all.
pub struct TlsCluster {
    pub port: u16,
    bin: PathBuf,
    data: PathBuf,
    owner: Option<(Uid, Gid)>,
    dir: Scratch,
}

impl TlsCluster {
    pub fn start(certs: &Certificates, ssl: bool) -> Self {
        let bin = crate::embedded::find_binaries().expect("PostgreSQL server binaries");
        let dir = Scratch::new("tls-pg");
        let owner = run_as();
        give(&dir.0, owner, 0o700);
        let data = dir.0.join("data");
        let out = command(&bin.join("initdb"), owner, &dir.0)
            .args(["-D"])
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for (from, to) in [
            (&certs.server_cert, "server.crt"),
            (&certs.server_key, "server.key"),
            (&certs.ca, "ca.pem"),
        ] {
            let target = data.join(to);
            std::fs::copy(from, &target).expect("copy a certificate");
            give(&target, owner, 0o600);
        }
        let hba = data.join("pg_hba.conf");
        std::fs::write(
            &hba,
            format!(
                "local all all trust\n\
                 hostssl all {CERT_USER} 127.0.0.1/32 cert\n\
                 host all {CERT_USER} 127.0.0.1/32 reject\n\
                 host all all 127.0.0.1/32 trust\n"
            ),
        )
        .expect("write pg_hba.conf");
        give(&hba, owner, 0o600);
        let port = free_port();
        let options = format!(
            "-c port={port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} \
             -c ssl={} -c ssl_cert_file=server.crt -c ssl_key_file=server.key \
             -c ssl_ca_file=ca.pem -c fsync=off",
            dir.0.display(),
            if ssl { "on" } else { "off" }
        );
        let out = command(&bin.join("pg_ctl"), owner, &dir.0)
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.0.join("postgres.log"))
            .args(["-w", "-t", "60", "-o", &options, "start"])
            .output()
            .expect("run pg_ctl");
        let cluster = Self {
            port,
            bin,
            data,
            owner,
            dir,
        };
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(cluster.dir.0.join("postgres.log")).unwrap_or_default()
        );
        cluster
    }

    /// A key=value connection string as the superuser over TCP, `extra`
    /// appended (e.g. `sslmode=verify-full sslrootcert=...`).
    pub fn url(&self, host: &str, extra: &str) -> String {
        format!(
            "host={host} port={} user=postgres dbname=postgres {extra}",
            self.port
        )
    }

    fn superuser_url(&self) -> String {
        self.url("127.0.0.1", "sslmode=disable")
    }

    /// Creates a login role (for the client-certificate user).
    pub async fn create_role(&self, name: &str) {
        let (client, conn) = tokio_postgres::connect(&self.superuser_url(), tokio_postgres::NoTls)
            .await
            .expect("connect to the TLS cluster");
        tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE ROLE {name} LOGIN"))
            .await
            .expect("create the role");
    }
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        let _ = command(&self.bin.join("pg_ctl"), self.owner, &self.dir.0)
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// `redis-server` with only a TLS port, the server certificate of
/// [`Certificates`], clients not asked for certificates.
pub struct TlsRedis {
    pub port: u16,
    child: Child,
    _dir: Scratch,
}

impl TlsRedis {
    /// `None` when this machine's `redis-server` was built without TLS.
    pub fn start(certs: &Certificates) -> Option<Self> {
        let dir = Scratch::new("tls-redis");
        let port = free_port();
        let mut child = Command::new("redis-server")
            .current_dir(&dir.0)
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .arg("--tls-cert-file")
            .arg(&certs.server_cert)
            .arg("--tls-key-file")
            .arg(&certs.server_key)
            .arg("--tls-ca-cert-file")
            .arg(&certs.ca)
            .args([
                "--tls-auth-clients",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run redis-server");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(Self {
                    port,
                    child,
                    _dir: dir,
                });
            }
            if let Ok(Some(_)) = child.try_wait() {
                let _ = child.wait();
                // It exited: an unknown option means no TLS in this build.
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("redis-server --tls-port did not start listening");
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
