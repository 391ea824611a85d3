//! One HTTP/1.1 connection per load worker, on hyper's low-level client.
//!
//! Why not a pooled client: a load generator must know how many connections
//! it holds (closed-loop concurrency *is* the connection count) and must not
//! hide a reconnect inside a request's latency without saying so. Each
//! [`Connection`] sends one request at a time and reconnects, visibly,
//! when the server closes it.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Where requests go: a loopback address and the `Host` header to send.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub host: HeaderValue,
}

impl Endpoint {
    pub fn new(addr: SocketAddr) -> anyhow::Result<Self> {
        anyhow::ensure!(
            addr.ip().is_loopback(),
            "tenantry bench only sends load to loopback addresses, not {addr}"
        );
        Ok(Self {
            addr,
            host: HeaderValue::from_str(&addr.to_string()).context("a socket address is ASCII")?,
        })
    }
}

/// What a request carries besides method and path.
#[derive(Debug, Clone, Default)]
pub struct Headers {
    pub auth: Option<HeaderValue>,
    pub tenant: Option<HeaderValue>,
}

/// The answer to one request: status and body (read in full, so the
/// connection can carry the next request).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Io(#[from] anyhow::Error),
}

/// A lazily (re)opened HTTP/1.1 connection.
pub struct Connection {
    endpoint: Endpoint,
    sender: Option<SendRequest<Full<Bytes>>>,
    timeout: Duration,
}

impl Connection {
    pub fn new(endpoint: Endpoint, timeout: Duration) -> Self {
        Self {
            endpoint,
            sender: None,
            timeout,
        }
    }

    /// Opens the connection now (so the first measured request does not pay
    /// for the handshake).
    pub async fn open(&mut self) -> anyhow::Result<()> {
        if self.sender.is_none() {
            self.sender = Some(self.connect().await?);
        }
        Ok(())
    }

    async fn connect(&self) -> anyhow::Result<SendRequest<Full<Bytes>>> {
        let stream = TcpStream::connect(self.endpoint.addr)
            .await
            .with_context(|| format!("Failed to connect to {}", self.endpoint.addr))?;
        stream
            .set_nodelay(true)
            .context("Failed to set TCP_NODELAY")?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake failed")?;
        tokio::spawn(async move {
            // Ends when the server or this side closes the connection.
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// Sends one request and reads the whole answer, within the timeout.
    /// A failed connection is dropped and reopened by the next call.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &Headers,
        body: Option<Bytes>,
    ) -> Result<Answer, Failure> {
        let result =
            match tokio::time::timeout(self.timeout, self.exchange(method, path, headers, body))
                .await
            {
                Ok(Ok(answer)) => Ok(answer),
                Ok(Err(e)) => Err(Failure::Io(e)),
                Err(_) => Err(Failure::Timeout(self.timeout)),
            };
        if result.is_err() {
            self.sender = None;
        }
        result
    }

    async fn exchange(
        &mut self,
        method: Method,
        path: &str,
        headers: &Headers,
        body: Option<Bytes>,
    ) -> anyhow::Result<Answer> {
        let usable = match &mut self.sender {
            Some(sender) => sender.ready().await.is_ok(),
            None => false,
        };
        if !usable {
            self.sender = Some(self.connect().await?);
        }
        let sender = self
            .sender
            .as_mut()
            .context("a connection was just opened")?;
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.endpoint.host.clone());
        if let Some(auth) = &headers.auth {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        if let Some(tenant) = &headers.tenant {
            request = request.header("x-tenant", tenant.clone());
        }
        let body = match body {
            Some(b) => {
                request =
                    request.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                b
            }
            None => Bytes::new(),
        };
        let request = request
            .body(Full::new(body))
            .context("Failed to build a request")?;
        let response = sender
            .send_request(request)
            .await
            .context("The request failed")?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .context("Failed to read the response body")?
            .to_bytes();
        Ok(Answer { status, body })
    }
}

/// A bearer credential as a header value.
pub fn bearer(token: &str) -> anyhow::Result<HeaderValue> {
    HeaderValue::from_str(&format!("Bearer {token}")).context("a token is a valid header value")
}
