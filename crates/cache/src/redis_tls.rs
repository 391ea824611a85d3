//! A Redis client for `REDIS_URL`, TLS included: `rediss://` connects with
//! rustls and checks the server's certificate against the system's trusted
//! roots, or against the PEM file of `TENANTRY_REDIS_CA_FILE` when given
//! (a self-run Redis with a CA of its own); `rediss://…/#insecure` encrypts
//! without checking (the redis crate's convention).

use std::path::Path;

use anyhow::Context as _;

/// A client for `url`; `ca_file` replaces the system's roots for
/// `rediss://`. Nothing is connected yet.
pub fn redis_client(url: &str, ca_file: Option<&Path>) -> anyhow::Result<redis::Client> {
    // The redis crate builds its TLS setup from rustls's process default.
    tenantry_db::tls::install_crypto_provider();
    let Some(ca_file) = ca_file else {
        return redis::Client::open(url).context("Failed to read REDIS_URL");
    };
    if !url.starts_with("rediss://") {
        anyhow::bail!("TENANTRY_REDIS_CA_FILE is set but REDIS_URL is not a rediss:// (TLS) URL");
    }
    let root_cert = std::fs::read(ca_file)
        .with_context(|| format!("Failed to read the Redis CA file {}", ca_file.display()))?;
    redis::Client::build_with_tls(
        url,
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(root_cert),
        },
    )
    .context("Failed to set up TLS to Redis (REDIS_URL, TENANTRY_REDIS_CA_FILE)")
}
