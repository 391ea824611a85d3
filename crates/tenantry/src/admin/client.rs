//! The admin API over HTTP, with the errors an operator can act on: a
//! server that is not there names the URL, a refused token says which
//! settings give one, and a problem+json answer is shown by its detail.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use futures::StreamExt as _;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::Value;
use tokio::io::AsyncWriteExt as _;

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    pub fn new(base: &str, token: String) -> anyhow::Result<Self> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("--url must start with http:// or https://, not `{base}`");
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .context("Failed to set up the HTTP client")?;
        Ok(Self { http, base, token })
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(60))
    }

    /// Sends and reads a JSON answer; `feature` names the capability for a
    /// server that does not have this route ("exports", "database health").
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        feature: &str,
    ) -> anyhow::Result<Value> {
        let mut req = self.request(method.clone(), path);
        if let Some(body) = body {
            req = req.json(body);
        }
        let res = self.send(req, &method, path, feature).await?;
        res.json()
            .await
            .with_context(|| format!("{method} {path}: the answer is not JSON"))
    }

    /// Streams `file` as the request body.
    pub async fn upload(
        &self,
        path: &str,
        file: &Path,
        content_type: &str,
        feature: &str,
    ) -> anyhow::Result<Value> {
        let opened = tokio::fs::File::open(file)
            .await
            .with_context(|| format!("Failed to open {}", file.display()))?;
        let len = opened.metadata().await.map(|m| m.len()).ok();
        let stream = tokio_util_stream(opened);
        let mut req = self
            .request(Method::POST, path)
            .timeout(Duration::from_secs(3600))
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(reqwest::Body::wrap_stream(stream));
        if let Some(len) = len {
            req = req.header(reqwest::header::CONTENT_LENGTH, len);
        }
        let res = self.send(req, &Method::POST, path, feature).await?;
        res.json()
            .await
            .with_context(|| format!("POST {path}: the answer is not JSON"))
    }

    /// Streams the answer's body into `file`; returns the bytes written.
    pub async fn download(&self, path: &str, file: &Path, feature: &str) -> anyhow::Result<u64> {
        let req = self
            .request(Method::GET, path)
            .timeout(Duration::from_secs(3600));
        let res = self.send(req, &Method::GET, path, feature).await?;
        let partial = file.with_extension("partial");
        let mut out = tokio::fs::File::create(&partial)
            .await
            .with_context(|| format!("Failed to create {}", partial.display()))?;
        let mut written = 0u64;
        let mut body = res.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.with_context(|| format!("GET {path}: the download broke off"))?;
            out.write_all(&chunk)
                .await
                .with_context(|| format!("Failed to write {}", partial.display()))?;
            written += chunk.len() as u64;
        }
        out.flush().await?;
        out.sync_all().await?;
        tokio::fs::rename(&partial, file)
            .await
            .with_context(|| format!("Failed to move the download to {}", file.display()))?;
        Ok(written)
    }

    async fn send(
        &self,
        req: RequestBuilder,
        method: &Method,
        path: &str,
        feature: &str,
    ) -> anyhow::Result<Response> {
        let res = req.send().await.map_err(|e| self.unreachable(&e))?;
        if res.status().is_success() {
            return Ok(res);
        }
        Err(self.refused(res, method, path, feature).await)
    }

    fn unreachable(&self, err: &reqwest::Error) -> anyhow::Error {
        let why = if err.is_connect() {
            "connection refused or host unreachable"
        } else if err.is_timeout() {
            "timed out"
        } else {
            "the request failed"
        };
        // The innermost cause says it plainly ("Connection refused").
        let mut cause = String::new();
        let mut next = std::error::Error::source(err);
        while let Some(e) = next {
            cause = format!(" ({e})");
            next = e.source();
        }
        anyhow!(
            "cannot reach Tenantry at {}: {why}{cause}; is the server running there (--url, \
             TENANTRY_URL)?",
            self.base
        )
    }

    async fn refused(
        &self,
        res: Response,
        method: &Method,
        path: &str,
        feature: &str,
    ) -> anyhow::Error {
        let status = res.status();
        let problem: Option<Value> = res.json().await.ok();
        let field = |name: &str| {
            problem
                .as_ref()
                .and_then(|p| p.get(name))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let detail = field("detail").or_else(|| field("title"));
        if status == StatusCode::UNAUTHORIZED {
            return anyhow!(
                "the server at {} refused the admin token (401): give the server's token with \
                 --token or TENANTRY_ADMIN_TOKEN, or --data-dir of the server",
                self.base
            );
        }
        // The router's own answers (no route, or not this method): the
        // server predates the endpoint, which is not the same as a missing
        // tenant or job.
        let no_route =
            status == StatusCode::NOT_FOUND && detail.as_deref() == Some("no such route");
        if no_route || status == StatusCode::METHOD_NOT_ALLOWED {
            return anyhow!(
                "this server does not offer {feature} ({method} {path} answered {}): it is \
                 older than this command",
                status.as_u16()
            );
        }
        let mut message = format!(
            "{method} {path}: {} ({})",
            detail.unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned()),
            status.as_u16()
        );
        if let Some(errors) = problem
            .as_ref()
            .and_then(|p| p.get("errors"))
            .and_then(Value::as_array)
        {
            for e in errors {
                let f = e.get("field").and_then(Value::as_str).unwrap_or("?");
                let m = e.get("message").and_then(Value::as_str).unwrap_or("");
                message.push_str(&format!("; {f}: {m}"));
            }
        }
        anyhow!(message)
    }
}

/// A file as a stream of chunks, without holding it in memory.
fn tokio_util_stream(
    file: tokio::fs::File,
) -> impl futures::Stream<Item = std::io::Result<Vec<u8>>> + Send + 'static {
    futures::stream::unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt as _;
        let mut buf = vec![0u8; 64 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(buf), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    })
}
