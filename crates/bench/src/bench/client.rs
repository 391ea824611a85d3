//! One HTTP/1.1 connection per load worker, written and read by the worker
//! itself.
//!
//! Why not a pooled client: a load generator must know how many connections
//! it holds (closed-loop concurrency *is* the connection count) and must not
//! hide a reconnect inside a request's latency without saying so. Each
//! [`Connection`] sends one request at a time and reconnects, visibly,
//! when the server closes it.
//!
//! Why not hyper's client: the load generator shares the machine's cores
//! with the server it measures, and hyper's connection runs as a second task
//! beside the worker (a channel hand-off and a wake-up each way per request)
//! and parses every answer into a `HeaderMap`. On two cores that was about
//! half the CPU of a run. This client writes the request from the worker's
//! task and reads back only what it needs: the status, `Content-Length` or
//! chunked framing, and `Connection: close`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use bytes::{Buf as _, Bytes, BytesMut};
use hyper::header::HeaderValue;
use hyper::{Method, StatusCode};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
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
    stream: Option<TcpStream>,
    timeout: Duration,
    /// The request being written, kept for its capacity.
    out: Vec<u8>,
    /// Bytes read and not yet consumed.
    input: BytesMut,
    /// Connections opened after the first: the server closed one, or a
    /// request failed on it.
    reconnects: u64,
}

/// The most response headers read.
const MAX_HEADERS: usize = 64;
/// The longest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// The longest response body accepted.
const MAX_BODY: usize = 64 << 20;

impl Connection {
    pub fn new(endpoint: Endpoint, timeout: Duration) -> Self {
        Self {
            endpoint,
            stream: None,
            timeout,
            out: Vec::with_capacity(1024),
            input: BytesMut::with_capacity(16 * 1024),
            reconnects: 0,
        }
    }

    /// Connections opened after the first (see the module's comment).
    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }

    /// Opens the connection now (so the first measured request does not pay
    /// for the handshake).
    pub async fn open(&mut self) -> anyhow::Result<()> {
        if self.stream.is_none() {
            self.stream = Some(self.connect().await?);
        }
        Ok(())
    }

    /// Opens a new connection in place of the current one, counted.
    async fn reconnect(&mut self) -> anyhow::Result<()> {
        self.close();
        self.stream = Some(self.connect().await?);
        self.reconnects += 1;
        Ok(())
    }

    fn close(&mut self) {
        self.stream = None;
        self.input.clear();
    }

    /// Whether the kept-alive connection can carry the next request: the
    /// server has not closed it and sent nothing no request asked for
    /// (e.g. a `408` before closing an idle connection). Checked without
    /// waiting: tokio answers from the readiness it already knows.
    fn usable(&self) -> bool {
        let Some(stream) = &self.stream else {
            return false;
        };
        if !self.input.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        matches!(stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    async fn connect(&self) -> anyhow::Result<TcpStream> {
        let stream = TcpStream::connect(self.endpoint.addr)
            .await
            .with_context(|| format!("Failed to connect to {}", self.endpoint.addr))?;
        stream
            .set_nodelay(true)
            .context("Failed to set TCP_NODELAY")?;
        Ok(stream)
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
            self.close();
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
        self.out.clear();
        write_request(
            &mut self.out,
            &method,
            path,
            &self.endpoint.host,
            headers,
            body.as_deref(),
        )?;
        // A connection the server closed while idle is reopened before the
        // request goes out. If it closes between that check and the write,
        // the request fails before any answer: an idempotent one is sent
        // again on a new connection, once, as HTTP clients do for idle
        // keep-alive connections; any other fails (and counts).
        let fresh = if self.usable() {
            false
        } else {
            match self.stream {
                Some(_) => self.reconnect().await?,
                None => self.stream = Some(self.connect().await?),
            }
            true
        };
        match self.round_trip(&method).await {
            Ok(answer) => Ok(answer),
            Err(Exchange::NotStarted(e)) if !fresh && method.is_idempotent() => {
                tracing::debug!(error = %e, "kept-alive connection closed; reconnecting");
                self.reconnect().await?;
                self.round_trip(&method).await.map_err(Exchange::into_error)
            }
            Err(e) => Err(e.into_error()),
        }
    }

    /// Writes the request in `out` and reads its answer.
    async fn round_trip(&mut self, method: &Method) -> Result<Answer, Exchange> {
        let stream = self
            .stream
            .as_mut()
            .ok_or_else(|| Exchange::NotStarted(anyhow::anyhow!("no connection")))?;
        stream
            .write_all(&self.out)
            .await
            .map_err(|e| Exchange::NotStarted(anyhow::Error::new(e).context("Failed to send")))?;
        let Head {
            status,
            framing,
            close,
        } = loop {
            match parse_head(&self.input).map_err(Exchange::Failed)? {
                // An interim answer (100 Continue, 103 Early Hints): the
                // final one follows.
                Some((consumed, head))
                    if head.status.is_informational()
                        && head.status != StatusCode::SWITCHING_PROTOCOLS =>
                {
                    self.input.advance(consumed);
                }
                Some((consumed, head)) => {
                    self.input.advance(consumed);
                    break head;
                }
                None if self.input.len() > MAX_HEAD => {
                    return Err(Exchange::Failed(anyhow::anyhow!(
                        "the response head is longer than {MAX_HEAD} bytes"
                    )));
                }
                None => {
                    let started = !self.input.is_empty();
                    let read = fill(stream, &mut self.input).await;
                    match read {
                        Ok(0) if !started => {
                            return Err(Exchange::NotStarted(anyhow::anyhow!(
                                "the server closed the connection"
                            )));
                        }
                        Ok(0) => {
                            return Err(Exchange::Failed(anyhow::anyhow!(
                                "the server closed the connection mid-answer"
                            )));
                        }
                        Ok(_) => {}
                        Err(e) if !started => return Err(Exchange::NotStarted(e.into())),
                        Err(e) => return Err(Exchange::Failed(e.into())),
                    }
                }
            }
        };
        let no_body = *method == Method::HEAD
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let body = if no_body {
            Bytes::new()
        } else {
            read_body(stream, &mut self.input, framing)
                .await
                .map_err(Exchange::Failed)?
        };
        if close || (!no_body && framing == Framing::UntilClose) {
            self.close();
        }
        Ok(Answer { status, body })
    }
}

/// How a request failed: before any of the answer arrived (safe to send
/// again on a new connection: the server saw nothing or dropped it) or after.
enum Exchange {
    NotStarted(anyhow::Error),
    Failed(anyhow::Error),
}

impl Exchange {
    fn into_error(self) -> anyhow::Error {
        match self {
            Exchange::NotStarted(e) | Exchange::Failed(e) => e,
        }
    }
}

/// How the answer's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

/// Appends the request's bytes to `out`. A path with a space or a control
/// character would break the request line: refused.
fn write_request(
    out: &mut Vec<u8>,
    method: &Method,
    path: &str,
    host: &HeaderValue,
    headers: &Headers,
    body: Option<&[u8]>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        path.starts_with('/') && !path.bytes().any(|b| b <= b' ' || b == 0x7f),
        "not a request path: {path:?}"
    );
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(host.as_bytes());
    let mut header = |name: &[u8], value: &[u8]| {
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
    };
    if let Some(auth) = &headers.auth {
        header(b"authorization", auth.as_bytes());
    }
    if let Some(tenant) = &headers.tenant {
        header(b"x-tenant", tenant.as_bytes());
    }
    if let Some(body) = body {
        header(b"content-type", b"application/json");
        header(
            b"content-length",
            itoa::Buffer::new().format(body.len()).as_bytes(),
        );
    }
    out.extend_from_slice(b"\r\n\r\n");
    if let Some(body) = body {
        out.extend_from_slice(body);
    }
    Ok(())
}

/// What the client needs of a response head.
struct Head {
    status: StatusCode,
    framing: Framing,
    /// The server closes the connection after this answer.
    close: bool,
}

/// The complete response head at the start of `input`, with its length;
/// `None` if it is incomplete.
fn parse_head(input: &[u8]) -> anyhow::Result<Option<(usize, Head)>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let consumed = match response
        .parse(input)
        .context("The server's answer is not HTTP/1.1")?
    {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let status = StatusCode::from_u16(response.code.unwrap_or(0))
        .context("The server answered an invalid status")?;
    let mut framing = Framing::UntilClose;
    let mut close = response.version == Some(0);
    for h in response.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") && framing != Framing::Chunked {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .context("The server sent an invalid Content-Length")?;
            framing = Framing::Length(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let chunked = h
                .value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            if chunked {
                framing = Framing::Chunked;
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            close |= h
                .value
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        }
    }
    Ok(Some((
        consumed,
        Head {
            status,
            framing,
            close,
        },
    )))
}

/// Reads more of the connection into `input`: the bytes read, 0 at its end.
async fn fill(stream: &mut TcpStream, input: &mut BytesMut) -> std::io::Result<usize> {
    if input.capacity() - input.len() < 4096 {
        input.reserve(16 * 1024);
    }
    stream.read_buf(input).await
}

/// Reads the body that follows the head.
async fn read_body(
    stream: &mut TcpStream,
    input: &mut BytesMut,
    framing: Framing,
) -> anyhow::Result<Bytes> {
    let short = || anyhow::anyhow!("the server closed the connection mid-body");
    match framing {
        Framing::Length(n) => {
            anyhow::ensure!(
                n <= MAX_BODY,
                "a body of {n} bytes is over the client's limit"
            );
            while input.len() < n {
                if fill(stream, input).await? == 0 {
                    return Err(short());
                }
            }
            Ok(input.split_to(n).freeze())
        }
        Framing::UntilClose => {
            while fill(stream, input).await? != 0 {
                anyhow::ensure!(input.len() <= MAX_BODY, "a body over the client's limit");
            }
            Ok(input.split().freeze())
        }
        Framing::Chunked => {
            let mut body = BytesMut::new();
            loop {
                // `<hex size>[;extensions]\r\n<data>\r\n`, ending with size 0
                // and optional trailers up to an empty line.
                let line = loop {
                    if let Some(end) = input.windows(2).position(|w| w == b"\r\n") {
                        break input.split_to(end + 2);
                    }
                    anyhow::ensure!(input.len() < MAX_HEAD, "a chunk header is too long");
                    if fill(stream, input).await? == 0 {
                        return Err(short());
                    }
                };
                let size = line[..line.len() - 2]
                    .split(|&b| b == b';')
                    .next()
                    .and_then(|s| std::str::from_utf8(s).ok())
                    .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
                    .context("The server sent an invalid chunk size")?;
                anyhow::ensure!(
                    body.len().saturating_add(size) <= MAX_BODY,
                    "a chunked body over the client's limit"
                );
                if size == 0 {
                    // Trailers, if any, then the empty line.
                    loop {
                        if let Some(end) = input.windows(2).position(|w| w == b"\r\n") {
                            let trailer = input.split_to(end + 2);
                            if trailer.len() == 2 {
                                return Ok(body.freeze());
                            }
                            continue;
                        }
                        anyhow::ensure!(input.len() < MAX_HEAD, "the trailers are too long");
                        if fill(stream, input).await? == 0 {
                            return Err(short());
                        }
                    }
                }
                while input.len() < size + 2 {
                    if fill(stream, input).await? == 0 {
                        return Err(short());
                    }
                }
                body.extend_from_slice(&input[..size]);
                anyhow::ensure!(
                    &input[size..size + 2] == b"\r\n",
                    "a chunk does not end with CRLF"
                );
                input.advance(size + 2);
            }
        }
    }
}

/// A bearer credential as a header value.
pub fn bearer(token: &str) -> anyhow::Result<HeaderValue> {
    HeaderValue::from_str(&format!("Bearer {token}")).context("a token is a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A server that answers each connection's requests with `answers`
    /// in turn (one per request read), then closes that connection; returns
    /// the endpoint and what it read.
    async fn server(
        answers: Vec<Vec<&'static [u8]>>,
    ) -> (Endpoint, tokio::task::JoinHandle<Vec<Vec<u8>>>) {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let endpoint = Endpoint::new(listener.local_addr().expect("bound")).expect("loopback");
        let task = tokio::spawn(async move {
            let mut requests = Vec::new();
            for connection in answers {
                let (mut socket, _) = listener.accept().await.expect("a connection");
                for answer in connection {
                    let mut request = Vec::new();
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        let mut buf = [0u8; 4096];
                        let n = socket.read(&mut buf).await.expect("the request");
                        assert!(n > 0, "the client closed early");
                        request.extend_from_slice(&buf[..n]);
                    }
                    requests.push(request);
                    socket.write_all(answer).await.expect("the answer sent");
                }
            }
            requests
        });
        (endpoint, task)
    }

    async fn get(conn: &mut Connection) -> Result<Answer, Failure> {
        conn.send(Method::GET, "/x", &Headers::default(), None)
            .await
    }

    #[tokio::test]
    async fn answers_are_read_by_length_and_by_chunks_on_one_connection() {
        let (endpoint, server) = server(vec![vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
            b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nx-trailer: 1\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n\r\n",
        ]])
        .await;
        let mut conn = Connection::new(endpoint, Duration::from_secs(5));
        let a = get(&mut conn).await.expect("an answer");
        assert_eq!((a.status, &a.body[..]), (StatusCode::OK, &b"hello"[..]));
        let b = get(&mut conn).await.expect("an answer");
        assert_eq!(
            (b.status, &b.body[..]),
            (StatusCode::NOT_FOUND, &b"abcde"[..])
        );
        let c = get(&mut conn).await.expect("an answer");
        assert_eq!((c.status, c.body.len()), (StatusCode::NO_CONTENT, 0));
        assert_eq!(server.await.expect("the server task").len(), 3);
    }

    #[tokio::test]
    async fn requests_carry_host_credentials_tenant_and_body() {
        let (endpoint, server) = server(vec![vec![
            b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}",
        ]])
        .await;
        let host = endpoint.host.clone();
        let mut conn = Connection::new(endpoint, Duration::from_secs(5));
        let headers = Headers {
            auth: Some(bearer("t0k3n").expect("a header value")),
            tenant: Some(HeaderValue::from_static("acme")),
        };
        let answer = conn
            .send(
                Method::POST,
                "/v1/posts",
                &headers,
                Some(Bytes::from_static(b"{\"a\":1}")),
            )
            .await
            .expect("an answer");
        assert_eq!(answer.status, StatusCode::CREATED);
        let request =
            String::from_utf8(server.await.expect("the server task").remove(0)).expect("ASCII");
        let expected = format!(
            "POST /v1/posts HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer t0k3n\r\nx-tenant: acme\r\ncontent-type: application/json\r\ncontent-length: 7\r\n\r\n",
            host.to_str().expect("ASCII")
        );
        // The body follows the head, in the same read or a later one.
        let rest = request
            .strip_prefix(&expected)
            .expect("the head as expected");
        assert!(r#"{"a":1}"#.starts_with(rest), "{rest:?}");
    }

    #[tokio::test]
    async fn a_closed_connection_is_reopened_for_the_next_request() {
        // The first connection says it closes; the second is closed by the
        // server without a word after one answer, while idle.
        let (endpoint, server) = server(vec![
            vec![b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\na"],
            vec![b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nb"],
            vec![b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nc"],
        ])
        .await;
        let mut conn = Connection::new(endpoint, Duration::from_secs(5));
        for expected in [b"a", b"b", b"c"] {
            let answer = get(&mut conn).await.expect("an answer");
            assert_eq!(&answer.body[..], expected);
        }
        assert_eq!(server.await.expect("the server task").len(), 3);
    }

    #[tokio::test]
    async fn a_body_cut_short_is_a_failure_not_an_answer() {
        let (endpoint, _server) = server(vec![vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
        ]])
        .await;
        let mut conn = Connection::new(endpoint, Duration::from_secs(5));
        assert!(matches!(get(&mut conn).await, Err(Failure::Io(_))));
    }

    #[tokio::test]
    async fn a_connection_closed_while_idle_is_reopened_before_a_post_is_sent() {
        let (endpoint, server) = server(vec![
            vec![b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"],
            vec![b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n"],
        ])
        .await;
        let mut conn = Connection::new(endpoint, Duration::from_secs(5));
        get(&mut conn).await.expect("an answer");
        // Idle long enough for the server's close to arrive.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let body = Some(Bytes::from_static(b"{}"));
        let post = conn
            .send(Method::POST, "/x", &Headers::default(), body)
            .await
            .expect("sent on a new connection");
        assert_eq!(post.status, StatusCode::CREATED);
        assert_eq!(conn.reconnects(), 1);
        assert_eq!(server.await.expect("the server task").len(), 2);
    }

    #[tokio::test]
    async fn interim_answers_are_skipped_and_a_204_keeps_the_connection() {
        let (endpoint, server) = server(vec![vec![
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        ]])
        .await;
        let mut conn = Connection::new(endpoint, Duration::from_secs(5));
        let first = get(&mut conn).await.expect("an answer");
        assert_eq!(first.status, StatusCode::NO_CONTENT);
        let second = get(&mut conn).await.expect("an answer");
        assert_eq!(&second.body[..], b"ok");
        assert_eq!(conn.reconnects(), 0, "one connection for both");
        assert_eq!(server.await.expect("the server task").len(), 2);
    }

    #[tokio::test]
    async fn a_path_that_would_break_the_request_line_is_refused() {
        let (endpoint, _server) = server(vec![]).await;
        let mut conn = Connection::new(endpoint, Duration::from_secs(5));
        for path in ["/a b", "/a\r\nx-evil: 1", "relative"] {
            let sent = conn
                .send(Method::GET, path, &Headers::default(), None)
                .await;
            assert!(matches!(sent, Err(Failure::Io(_))), "{path:?}: {sent:?}");
        }
    }

    #[tokio::test]
    async fn an_oversized_chunk_is_a_failure_not_a_panic() {
        let (endpoint, _server) = server(vec![vec![
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nffffffffffffffff\r\n",
        ]])
        .await;
        let mut conn = Connection::new(endpoint, Duration::from_secs(5));
        assert!(matches!(get(&mut conn).await, Err(Failure::Io(_))));
    }
}
