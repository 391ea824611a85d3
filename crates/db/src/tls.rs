//! TLS to PostgreSQL, read from the connection string the way libpq reads it.
//!
//! tokio-postgres knows `sslmode=disable|prefer|require` and nothing about
//! certificates, while managed databases (RDS, Cloud SQL, Supabase, Neon)
//! expect `verify-full` against their CA. So the TLS keys are taken out of
//! the connection string here — `sslmode`, `sslrootcert`, `sslcert`,
//! `sslkey`, in a `postgres://` URL's query or a `key=value` string, else
//! libpq's `PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY` — and turned
//! into a rustls configuration that every connection of a [`crate::Db`]
//! uses (pool and LISTEN alike):
//!
//! | `sslmode` | TLS | certificate chain | host name |
//! |---|---|---|---|
//! | `disable` | never | – | – |
//! | `allow`, `prefer` (default, except on this machine: below) | when the server offers it, else plain | checked only when a root certificate is given | no |
//! | `require` | always | checked only when a root certificate is given (as libpq) | no |
//! | `verify-ca` | always | checked | no |
//! | `verify-full` | always | checked | checked |
//!
//! `sslrootcert` is a PEM file of CA certificates, or `system` for the
//! operating system's trusted roots, which (as in libpq 16) implies
//! `verify-full` and refuses weaker modes. Without it, libpq's default file
//! `~/.postgresql/root.crt` is used if it exists; `verify-ca` and
//! `verify-full` refuse to start with neither. `sslcert` and `sslkey` name a
//! client certificate and its key (for `cert` authentication).
//!
//! `allow` (libpq: plain first, TLS if the server insists) is read as
//! `prefer`: both connect to either kind of server. Unix sockets never use
//! TLS (PostgreSQL offers none there), whatever the mode.
//!
//! Where libpq differs: with no TLS key at all (none in the string, no
//! `PGSSL*` variable, no `~/.postgresql/root.crt`) and every host on this
//! machine (`localhost`, `127.0.0.0/8`, `::1`), the default is `disable`
//! rather than `prefer`. Loopback bytes never leave the kernel; TLS there
//! protects nothing, and without it an uncached list ran 14–21 % faster.
//! `sslmode=prefer` (or stronger) asks for TLS as libpq would.
//!
//! A certificate that fails its check is refused with a message that says
//! which check failed and against which roots, e.g. "the database server's
//! certificate is not signed by a CA in sslrootcert=/etc/ca.pem".

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};
pub use tokio_postgres_rustls::MakeRustlsConnect;

/// How hard a connection insists on TLS and what it checks (libpq's
/// `sslmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(raw: &str) -> anyhow::Result<Self> {
        Ok(match raw {
            "disable" => Self::Disable,
            "allow" | "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            other => bail!(
                "sslmode is one of disable, allow, prefer, require, verify-ca, verify-full, \
                 not `{other}`"
            ),
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

/// A connection string made ready to connect: tokio-postgres's settings and
/// the TLS connector they go with.
#[derive(Clone)]
pub struct ConnectConfig {
    pub config: tokio_postgres::Config,
    pub tls: MakeRustlsConnect,
    pub ssl_mode: SslMode,
}

impl fmt::Debug for ConnectConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectConfig")
            .field("ssl_mode", &self.ssl_mode)
            .finish_non_exhaustive()
    }
}

impl ConnectConfig {
    /// Reads `url` (a `postgres://` URL or a libpq `key=value` string) and
    /// its TLS settings, falling back to libpq's environment variables.
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        Self::parse_with_env(url, |name| std::env::var(name).ok())
    }

    fn parse_with_env(url: &str, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let (rest, mut params) = split(url).context("Failed to parse the database URL")?;
        params.fill_from(&env);
        let mut config =
            tokio_postgres::Config::from_str(&rest).context("Failed to parse the database URL")?;
        let home_root = env("HOME").map(|home| Path::new(&home).join(".postgresql/root.crt"));
        if params == TlsParams::default()
            && home_root.as_deref().is_none_or(|p| !p.is_file())
            && only_loopback(&config)
        {
            // Nothing asks for TLS and the server is on this machine: the
            // bytes never leave the kernel, so encrypting them protects
            // nothing; without it an uncached list ran 14–21 % faster
            // (BENCHMARKS.md, session 16).
            params.mode = Some("disable".to_owned());
        }
        let settings = params.resolve(home_root.as_deref())?;
        config.ssl_mode(match settings.mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        let tls = settings.connector()?;
        Ok(Self {
            config,
            tls,
            ssl_mode: settings.mode,
        })
    }

    /// Opens one connection outside any pool and drives it on a task of its
    /// own (for tools and one-off sessions).
    pub async fn connect(&self) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, connection) = self.config.connect(self.tls.clone()).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "database connection ended");
            }
        });
        Ok(client)
    }
}

/// Whether every host `config` names is this machine: a loopback address
/// or `localhost` (Unix sockets never use TLS either way).
fn only_loopback(config: &tokio_postgres::Config) -> bool {
    use tokio_postgres::config::Host;
    // `hostaddr`, when given, is where the connection goes.
    if !config.get_hostaddrs().is_empty() {
        return config.get_hostaddrs().iter().all(|ip| ip.is_loopback());
    }
    config.get_hosts().iter().all(|host| match host {
        Host::Tcp(name) => {
            name.eq_ignore_ascii_case("localhost")
                || name
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        Host::Unix(_) => true,
    })
}

/// The TLS keys of a connection string, as written.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct TlsParams {
    mode: Option<String>,
    root_cert: Option<String>,
    cert: Option<String>,
    key: Option<String>,
}

impl TlsParams {
    /// Takes `key` if it is a TLS key; says whether it was.
    fn take(&mut self, key: &str, value: String) -> bool {
        let slot = match key {
            "sslmode" => &mut self.mode,
            "sslrootcert" => &mut self.root_cert,
            "sslcert" => &mut self.cert,
            "sslkey" => &mut self.key,
            _ => return false,
        };
        *slot = Some(value);
        true
    }

    /// libpq's environment variables, for what the string leaves unset.
    fn fill_from(&mut self, env: &impl Fn(&str) -> Option<String>) {
        let pairs = [
            (&mut self.mode, "PGSSLMODE"),
            (&mut self.root_cert, "PGSSLROOTCERT"),
            (&mut self.cert, "PGSSLCERT"),
            (&mut self.key, "PGSSLKEY"),
        ];
        for (slot, name) in pairs {
            if slot.is_none() {
                *slot = env(name).filter(|v| !v.is_empty());
            }
        }
    }

    /// The mode and roots these settings mean, refused where libpq refuses.
    fn resolve(self, home_root: Option<&Path>) -> anyhow::Result<Settings> {
        let roots = match self.root_cert.as_deref() {
            Some("system") => Some(Roots::System),
            Some(path) => Some(Roots::File(PathBuf::from(path))),
            // libpq's default file, when there is one.
            None => home_root
                .filter(|p| p.is_file())
                .map(|p| Roots::File(p.to_owned())),
        };
        let mode = match self.mode.as_deref() {
            Some(raw) => SslMode::parse(raw)?,
            None if matches!(roots, Some(Roots::System)) => SslMode::VerifyFull,
            None => SslMode::Prefer,
        };
        if matches!(roots, Some(Roots::System)) && mode != SslMode::VerifyFull {
            bail!(
                "sslmode={} may not be used with sslrootcert=system: the system's roots vouch \
                 for any host they signed, so only verify-full (checking the host name) is safe",
                mode.name()
            );
        }
        if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) && roots.is_none() {
            bail!(
                "sslmode={} needs the CA certificate to check the server's against: add \
                 sslrootcert=<PEM file> to the database URL (or sslrootcert=system for the \
                 system's trusted roots), or use sslmode=require to encrypt without checking",
                mode.name()
            );
        }
        let client = match (self.cert, self.key) {
            (Some(cert), Some(key)) => Some((PathBuf::from(cert), PathBuf::from(key))),
            (None, None) => None,
            _ => bail!("sslcert and sslkey go together: give both or neither"),
        };
        Ok(Settings {
            mode,
            roots: if mode == SslMode::Disable {
                None
            } else {
                roots
            },
            client,
        })
    }
}

enum Roots {
    System,
    File(PathBuf),
}

impl fmt::Display for Roots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Roots::System => f.write_str("sslrootcert=system (the system's trusted roots)"),
            Roots::File(path) => write!(f, "sslrootcert={}", path.display()),
        }
    }
}

struct Settings {
    mode: SslMode,
    roots: Option<Roots>,
    client: Option<(PathBuf, PathBuf)>,
}

impl Settings {
    fn connector(&self) -> anyhow::Result<MakeRustlsConnect> {
        let provider = Arc::new(provider());
        let chain = match &self.roots {
            None => None,
            Some(roots) => {
                let store = load_roots(roots)?;
                let verifier =
                    WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
                        .build()
                        .with_context(|| format!("Failed to use the CA certificates of {roots}"))?;
                Some((verifier, roots.to_string()))
            }
        };
        let verifier = Verifier {
            chain,
            check_name: self.mode == SslMode::VerifyFull,
            algorithms: provider.signature_verification_algorithms,
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("Failed to set up TLS")?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier));
        let config = match &self.client {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .with_context(|| {
                        format!(
                            "Failed to read the client certificate sslcert={}",
                            cert.display()
                        )
                    })?;
                let key = PrivateKeyDer::from_pem_file(key).with_context(|| {
                    format!("Failed to read the client key sslkey={}", key.display())
                })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .context("The client certificate (sslcert) and key (sslkey) do not fit")?
            }
        };
        Ok(MakeRustlsConnect::new(config))
    }
}

fn load_roots(roots: &Roots) -> anyhow::Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    match roots {
        Roots::System => {
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                bail!(
                    "sslrootcert=system: no trusted root certificates found on this system \
                     (install ca-certificates, or name a PEM file)"
                );
            }
        }
        Roots::File(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .with_context(|| {
                    format!(
                        "Failed to read the CA certificates sslrootcert={}",
                        path.display()
                    )
                })?;
            let (added, _) = store.add_parsable_certificates(certs);
            if added == 0 {
                bail!(
                    "sslrootcert={} holds no usable CA certificate (a PEM file is expected)",
                    path.display()
                );
            }
        }
    }
    Ok(store)
}

/// Checks the server's certificate as the mode says: not at all without
/// roots (encryption only, as libpq's `require`), the chain with roots, and
/// the host name too for `verify-full`. Handshake signatures are always
/// checked.
#[derive(Debug)]
struct Verifier {
    chain: Option<(Arc<WebPkiServerVerifier>, String)>,
    check_name: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

/// Why a server certificate was refused, in an operator's words.
#[derive(Debug)]
struct Refused(String);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

fn is_name_error(e: &CertificateError) -> bool {
    matches!(
        e,
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
    )
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some((chain, roots)) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        // The chain is checked before the name, so a name error means the
        // chain is good: enough for verify-ca.
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Ok(verified) => Ok(verified),
            Err(rustls::Error::InvalidCertificate(e)) if is_name_error(&e) && !self.check_name => {
                Ok(ServerCertVerified::assertion())
            }
            Err(rustls::Error::InvalidCertificate(e)) => {
                let why = match &e {
                    CertificateError::UnknownIssuer => {
                        format!(
                            "the database server's certificate is not signed by a CA in {roots}"
                        )
                    }
                    e if is_name_error(e) => format!(
                        "the database server's certificate is not valid for the host name \
                         `{}` (sslmode=verify-full checks it; connect by a name the \
                         certificate lists)",
                        server_name.to_str()
                    ),
                    CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                        "the database server's certificate has expired".to_owned()
                    }
                    other => {
                        format!(
                            "the database server's certificate was refused ({other}), checked against {roots}"
                        )
                    }
                };
                Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                    OtherError(Arc::new(Refused(why))),
                )))
            }
            Err(other) => Err(other),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The crypto provider of every TLS client here: ring, which builds with no
/// toolchain beyond a C compiler (aws-lc-rs needs cmake). rustls 0.23.48
/// deprecates it for lacking post-quantum key exchange, which links to a
/// database or a cache inside one's own network can do without for now.
#[allow(deprecated)]
fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// Makes [`provider`] the process default, so libraries that ask for the
/// default (the Redis client) find it. Idempotent.
pub fn install_crypto_provider() {
    let _ = CryptoProvider::install_default(provider());
}

/// Splits a connection string into what tokio-postgres reads and the TLS
/// keys, which it does not (or not fully).
fn split(url: &str) -> anyhow::Result<(String, TlsParams)> {
    let mut params = TlsParams::default();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return Ok((url.to_owned(), params));
        };
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if !params.take(&percent_decode(key)?, percent_decode(value)?) {
                kept.push(pair);
            }
        }
        let rest = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return Ok((rest, params));
    }
    let mut kept = Vec::new();
    for (key, value, raw) in key_values(url)? {
        if !params.take(&key, value) {
            kept.push(raw);
        }
    }
    Ok((kept.join(" "), params))
}

fn percent_decode(raw: &str) -> anyhow::Result<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = raw
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .with_context(|| format!("`{raw}`: a % must be followed by two hex digits"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).with_context(|| format!("`{raw}` is not UTF-8 once decoded"))
}

/// The `key = value` pairs of a libpq string, each with its raw text.
/// Values may be single-quoted; a backslash escapes the next character.
fn key_values(s: &str) -> anyhow::Result<Vec<(String, String, &str)>> {
    let chars: Vec<(usize, char)> = s.char_indices().collect();
    let at = |i: usize| chars.get(i).map(|&(_, c)| c);
    let offset = |i: usize| chars.get(i).map_or(s.len(), |&(o, _)| o);
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        while at(i).is_some_and(char::is_whitespace) {
            i += 1;
        }
        if i >= chars.len() {
            return Ok(out);
        }
        let start = i;
        while at(i).is_some_and(|c| c != '=' && !c.is_whitespace()) {
            i += 1;
        }
        let key = s[offset(start)..offset(i)].to_owned();
        while at(i).is_some_and(char::is_whitespace) {
            i += 1;
        }
        if at(i) != Some('=') {
            bail!("`{key}` in the connection string has no `=value`");
        }
        i += 1;
        while at(i).is_some_and(char::is_whitespace) {
            i += 1;
        }
        let mut value = String::new();
        if at(i) == Some('\'') {
            i += 1;
            loop {
                match at(i) {
                    None => bail!("the value of `{key}` has no closing quote"),
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some('\\') if at(i + 1).is_some() => {
                        value.extend(at(i + 1));
                        i += 2;
                    }
                    Some(c) => {
                        value.push(c);
                        i += 1;
                    }
                }
            }
        } else {
            while let Some(c) = at(i).filter(|c| !c.is_whitespace()) {
                if c == '\\' && at(i + 1).is_some() {
                    value.extend(at(i + 1));
                    i += 2;
                } else {
                    value.push(c);
                    i += 1;
                }
            }
        }
        out.push((key, value, &s[offset(start)..offset(i)]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn url_query_loses_its_tls_keys_and_keeps_the_rest() {
        let (rest, params) = split(
            "postgres://u:p@db.example.com:5433/app?sslmode=verify-full&application_name=x\
             &sslrootcert=%2Fetc%2Fca.pem",
        )
        .expect("split");
        assert_eq!(
            rest,
            "postgres://u:p@db.example.com:5433/app?application_name=x"
        );
        assert_eq!(params.mode.as_deref(), Some("verify-full"));
        assert_eq!(params.root_cert.as_deref(), Some("/etc/ca.pem"));
        let (rest, _) = split("postgresql://h/db?sslmode=require").expect("split");
        assert_eq!(rest, "postgresql://h/db");
    }

    #[test]
    fn key_value_strings_lose_their_tls_keys_and_keep_quoting() {
        let (rest, params) = split(
            "host=db port=5432 sslmode = verify-ca password='a b\\'c' sslrootcert='/tmp/my ca.pem'",
        )
        .expect("split");
        assert_eq!(rest, "host=db port=5432 password='a b\\'c'");
        assert_eq!(params.mode.as_deref(), Some("verify-ca"));
        assert_eq!(params.root_cert.as_deref(), Some("/tmp/my ca.pem"));
        let config = tokio_postgres::Config::from_str(&rest).expect("tokio-postgres reads it");
        assert_eq!(config.get_password(), Some(&b"a b'c"[..]));
        assert!(split("host=db sslmode").is_err());
        assert!(split("host='db").is_err());
    }

    #[test]
    fn modes_default_and_refuse_as_libpq_does() {
        let parsed = ConnectConfig::parse_with_env("host=db", no_env).expect("parse");
        assert_eq!(parsed.ssl_mode, SslMode::Prefer);
        let parsed =
            ConnectConfig::parse_with_env("host=db sslmode=require", no_env).expect("parse");
        assert_eq!(parsed.ssl_mode, SslMode::Require);
        assert_eq!(
            parsed.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
        let parsed = ConnectConfig::parse_with_env("host=db sslmode=allow", no_env).expect("parse");
        assert_eq!(parsed.ssl_mode, SslMode::Prefer);

        let err = ConnectConfig::parse_with_env("host=db sslmode=verify-full", no_env)
            .expect_err("no CA to check with");
        assert!(format!("{err:#}").contains("sslrootcert"), "{err:#}");
        let err = ConnectConfig::parse_with_env("host=db sslmode=verify-everything", no_env)
            .expect_err("unknown mode");
        assert!(format!("{err:#}").contains("verify-full"), "{err:#}");
        let err =
            ConnectConfig::parse_with_env("host=db sslmode=require sslrootcert=system", no_env)
                .expect_err("weak mode with the system roots");
        assert!(format!("{err:#}").contains("verify-full"), "{err:#}");
        let err = ConnectConfig::parse_with_env("host=db sslcert=/a.pem", no_env)
            .expect_err("a certificate without its key");
        assert!(format!("{err:#}").contains("sslkey"), "{err:#}");
        let err = ConnectConfig::parse_with_env(
            "host=db sslmode=verify-ca sslrootcert=/nonexistent/ca.pem",
            no_env,
        )
        .expect_err("a missing CA file");
        assert!(
            format!("{err:#}").contains("/nonexistent/ca.pem"),
            "{err:#}"
        );
    }

    #[test]
    fn libpq_environment_fills_what_the_string_leaves_out() {
        let env = |name: &str| match name {
            "PGSSLMODE" => Some("require".to_owned()),
            _ => None,
        };
        let parsed = ConnectConfig::parse_with_env("host=db", env).expect("parse");
        assert_eq!(parsed.ssl_mode, SslMode::Require);
        let parsed = ConnectConfig::parse_with_env("host=db sslmode=disable", env).expect("parse");
        assert_eq!(parsed.ssl_mode, SslMode::Disable);
    }

    #[test]
    fn this_machine_defaults_to_plain_unless_tls_is_asked_for() {
        use SslMode::{Disable, Prefer, Require};
        let cases = [
            // Every host on this machine, nothing asked: plain.
            ("host=127.0.0.1", Disable),
            ("host=localhost", Disable),
            ("postgres://u@[::1]:5432/db", Disable),
            ("postgres://u@127.0.0.2/db", Disable),
            ("host=/var/run/postgresql", Disable),
            ("host=localhost,127.0.0.1", Disable),
            ("host=db hostaddr=127.0.0.1", Disable),
            // Any host elsewhere: libpq's prefer.
            ("host=db", Prefer),
            ("host=10.0.0.5", Prefer),
            ("host=localhost,db", Prefer),
            ("host=localhost hostaddr=10.0.0.5", Prefer),
            ("postgres://u@[2001:db8::1]/db", Prefer),
            // A TLS key asks for TLS as libpq reads it.
            ("host=127.0.0.1 sslmode=prefer", Prefer),
            ("host=localhost sslmode=allow", Prefer),
            ("host=127.0.0.1 sslmode=require", Require),
        ];
        for (url, mode) in cases {
            let parsed = ConnectConfig::parse_with_env(url, no_env).expect("parse");
            assert_eq!(parsed.ssl_mode, mode, "{url}");
        }
        let env = |name: &str| (name == "PGSSLMODE").then(|| "prefer".to_owned());
        let parsed = ConnectConfig::parse_with_env("host=127.0.0.1", env).expect("parse");
        assert_eq!(parsed.ssl_mode, SslMode::Prefer);
    }

    #[test]
    fn the_system_roots_mean_verify_full() {
        let parsed =
            ConnectConfig::parse_with_env("host=db sslrootcert=system", no_env).expect("parse");
        assert_eq!(parsed.ssl_mode, SslMode::VerifyFull);
    }
}
