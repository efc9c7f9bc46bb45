//! Serving connections: accepting them, bounding what a slow or hostile client can hold, and
//! closing them on a stop signal.
//!
//! `axum::serve` gives no say over these, and each one was a way to take the service down
//! without a token:
//! - **Headers must arrive in time.** A client that sends part of its request head (or
//!   nothing, or nothing more after a finished request) is closed after
//!   [`ServeSettings::header_read_timeout`]. Bodies are bounded by the router's body-read
//!   deadline (`HttpSettings::body_read_timeout`).
//! - **Connections are capped.** Past [`ServeSettings::max_connections`] a connection gets an
//!   immediate `503` with the API's JSON error body and is closed, so the service never runs
//!   out of file descriptors for its database, AWS and files. The cap defaults to the
//!   process's open-file limit less a reserve.
//! - **Accepting goes on after exhaustion.** `EMFILE` and kin are logged (once in a while, not
//!   once per attempt) and accepting resumes as soon as descriptors free up.
//! - **The parser's own errors are JSON too.** hyper answers a request line or header it
//!   cannot parse (`414`, `431`, `400`) itself, with an empty body; [`ErrorHeads`] gives those
//!   answers the API's error shape.
//!
//! HTTP/1.1 only: HTTP/2 has no request-head deadline to give slow clients, and a proxy in
//! front speaks it to clients where it is wanted.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// How connections are served.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    /// Longest wait for a request's head (request line and headers), counted from when the
    /// connection is ready for a request: its start, or the end of the previous answer.
    pub header_read_timeout: Duration,
    /// Connections served at once; more are answered `503` and closed.
    pub max_connections: usize,
}

impl ServeSettings {
    pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
    /// File descriptors kept for everything but client connections: the database pool,
    /// AWS and Guance connections, CloudTrail files, logs.
    pub const FD_RESERVE: u64 = 512;

    /// The open-file limit less [`Self::FD_RESERVE`]: the most connections that can be
    /// held without starving the rest of the process.
    pub fn default_max_connections() -> usize {
        #[cfg(unix)]
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        #[cfg(not(unix))]
        let limit: Option<u64> = None;
        let limit = limit.unwrap_or(65_536).min(1 << 20);
        limit.saturating_sub(Self::FD_RESERVE).max(16) as usize
    }
}

impl Default for ServeSettings {
    fn default() -> Self {
        ServeSettings {
            header_read_timeout: Self::DEFAULT_HEADER_READ_TIMEOUT,
            max_connections: Self::default_max_connections(),
        }
    }
}

/// Over-the-cap answers written at once; past this a connection is closed without one.
const MAX_REFUSALS: usize = 256;
/// How long an over-the-cap answer may take, reading what the client sent included.
const REFUSAL_TIME: Duration = Duration::from_secs(1);
/// The pause after an accept error that is not the client's (out of descriptors, memory).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// At most one log line per this much time about accept errors.
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `stop` resolves, then closes the listener at once and
/// waits for the open connections: each finishes the request it is answering, idle ones
/// close. The caller bounds that wait.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    settings: ServeSettings,
    stop: impl Future<Output = ()>,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(settings.header_read_timeout);
    let service =
        TowerToHyperService::new(app.map_request(|req: axum::http::Request<hyper::body::Incoming>| req.map(Body::new)));
    let mut accept_errors = AcceptErrors::default();
    tokio::pin!(stop);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_errors.note(e).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refuse(stream, &refusals);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = http.serve_connection(TokioIo::new(ErrorHeads::new(stream)), service.clone());
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            // Errors here are the client's (a reset, a timeout, garbage): nothing to log.
            let _ = conn.await;
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Answers a connection over the cap with `503` and closes it, without delaying the accept
/// loop. Reads (and drops) what the client sent first, so that closing does not reset the
/// connection before the answer is read.
fn refuse(mut stream: TcpStream, refusals: &Arc<Semaphore>) {
    let Ok(permit) = refusals.clone().try_acquire_owned() else { return };
    tokio::spawn(async move {
        let answer = error_answer(
            503,
            "Service Unavailable",
            "too_many_connections",
            "the service is serving as many connections as it may; try again shortly",
            &["retry-after: 1"],
        );
        let _ = tokio::time::timeout(REFUSAL_TIME, async {
            stream.write_all(&answer).await?;
            stream.shutdown().await?;
            let mut sink = [0u8; 4096];
            while stream.read(&mut sink).await? > 0 {}
            io::Result::Ok(())
        })
        .await;
        drop(permit);
    });
}

/// A complete HTTP/1.1 answer with the API's JSON error body, closing the connection.
fn error_answer(status: u16, reason: &str, code: &str, message: &str, headers: &[&str]) -> Vec<u8> {
    let body = serde_json::json!({"error": {"code": code, "message": message}}).to_string();
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

/// Accept errors, counted and logged once in a while. Errors of one connection (reset before
/// it was accepted) are skipped; the others (`EMFILE`, `ENFILE`, `ENOMEM`, `ENOBUFS`) mean the
/// process or machine is out of something: pause briefly so the loop does not spin, and go on.
#[derive(Default)]
struct AcceptErrors {
    since_logged: u64,
    logged_at: Option<tokio::time::Instant>,
}

impl AcceptErrors {
    async fn note(&mut self, e: io::Error) {
        use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset, Interrupted};
        if matches!(e.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset | Interrupted) {
            return;
        }
        self.since_logged += 1;
        let now = tokio::time::Instant::now();
        if self.logged_at.is_none_or(|t| now - t >= ACCEPT_LOG_EVERY) {
            tracing::warn!(
                error = %e,
                errors = self.since_logged,
                "cannot accept connections for now (out of file descriptors?); retrying"
            );
            self.since_logged = 0;
            self.logged_at = Some(now);
        }
        tokio::time::sleep(ACCEPT_BACKOFF).await;
    }
}

/// A connection whose parse-error answers hyper writes itself are rewritten in the API's
/// JSON error shape. hyper answers a request it cannot parse before any service sees it, with
/// a status and an empty body, then closes: such an answer is the only one without an
/// `x-request-id` header (the router puts one on every answer of its own), which is how it is
/// told apart. Everything else passes through untouched.
struct ErrorHeads<S> {
    inner: S,
    /// The replacement being written, and how much of it is out.
    replacing: Option<(Vec<u8>, usize)>,
}

impl<S> ErrorHeads<S> {
    fn new(inner: S) -> Self {
        ErrorHeads { inner, replacing: None }
    }
}

/// The JSON answer to send instead of hyper's own answer `head`, if `head` is one.
fn replacement(head: &[u8]) -> Option<Vec<u8>> {
    let end = memchr::memmem::find(head, b"\r\n\r\n")?;
    let head = std::str::from_utf8(&head[..end]).ok()?.to_ascii_lowercase();
    if head.lines().any(|l| l.starts_with("x-request-id:")) {
        return None;
    }
    let status = head.strip_prefix("http/1.1 ").or_else(|| head.strip_prefix("http/1.0 "))?.get(..3)?;
    let (status, reason, code, message) = match status {
        "400" => (400, "Bad Request", "bad_request", "the request line or a header could not be parsed"),
        "414" => (414, "URI Too Long", "uri_too_long", "the request's URI is too long"),
        "431" => (431, "Request Header Fields Too Large", "headers_too_large", "the request's headers are too large"),
        _ => return None,
    };
    Some(error_answer(status, reason, code, message, &[]))
}

impl<S: AsyncWrite + Unpin> ErrorHeads<S> {
    /// Writes out the replacement; `Ready` once it is all out.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, done)) = &mut self.replacing {
            if *done == bytes.len() {
                break;
            }
            let n = std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*done..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *done += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ErrorHeads<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ErrorHeads<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.replacing.is_some() {
            // After its error answer hyper only closes; whatever else it writes is its own.
            std::task::ready!(this.poll_replacement(cx))?;
            return Poll::Ready(Ok(buf.len()));
        }
        if let Some(answer) = replacement(buf) {
            this.replacing = Some((answer, 0));
            // Taken whole: hyper is done with these bytes; ours go out here or on flush.
            let _ = this.poll_replacement(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        std::task::ready!(this.poll_replacement(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        std::task::ready!(this.poll_replacement(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_own_answers_are_replaced() {
        let hyper_414 =
            b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\ndate: Sun, 30 Nov 2025 10:00:00 GMT\r\n\r\n";
        let answer = String::from_utf8(replacement(hyper_414).unwrap()).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 414 URI Too Long\r\ncontent-type: application/json"), "{head}");
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["error"]["code"], "uri_too_long");
        assert!(head.contains(&format!("content-length: {}", answer.len() - head.len() - 4)));

        for ours in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nx-request-id: 1\r\n\r\n{}"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            b"{\"error\": \"HTTP/1.1 400 \"}",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n",
        ] {
            assert!(replacement(ours).is_none(), "{}", String::from_utf8_lossy(ours));
        }
    }

    #[test]
    fn the_connection_cap_leaves_a_reserve() {
        let cap = ServeSettings::default_max_connections();
        assert!(cap >= 16);
        #[cfg(unix)]
        if let Some(limit) = rustix::process::getrlimit(rustix::process::Resource::Nofile).current {
            assert!((cap as u64) < limit.max(ServeSettings::FD_RESERVE + 16));
        }
    }
}
