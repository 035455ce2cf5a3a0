//! The HTTP server's own accept loop, with the limits a server open to
//! other local users (or a network) needs and `axum::serve` does not set:
//! a cap on connections, a deadline for a request's headers, and an idle
//! deadline for a connection on which nothing moves.
//!
//! Why each one: a client that sends its headers one byte at a time, or
//! connects and says nothing, or stops reading a response, would otherwise
//! hold its socket and buffers for ever; fifty of them were never closed in a
//! minute. The cap bounds what all clients together can hold.
//!
//! Idle means that nothing moves while the server waits for the client: a
//! request that arrived whole and awaits a tool's answer (which a
//! per-request call sends only at its end) is the server's silence, bounded
//! by the tool's own timeout, and does not count.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::HttpBody;
use axum::extract::Request;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::limits::HttpLimits;

/// How long open connections get to finish after the shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The answer to a connection over the cap: written without waiting (the
/// client may not read), then the socket is closed.
const OVER_CAPACITY_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
retry-after: 1\r\n\
connection: close\r\n\
content-length: 51\r\n\
\r\n\
{\"error\":\"too many connections, retry in a moment\"}";

/// What is known about one connection. The request handlers see it as a
/// request extension: failed authentications are counted per connection, so
/// that guessing the token gets slower and then impossible.
#[derive(Debug, Clone, Default)]
pub struct ConnectionState {
    auth_failures: Arc<AtomicU32>,
    /// Requests whose response head is not out yet.
    responses_pending: Arc<AtomicU32>,
    /// Request bodies not received to their end yet.
    bodies_open: Arc<AtomicU32>,
}

impl ConnectionState {
    /// Records one failed authentication and returns how many there were.
    pub fn record_auth_failure(&self) -> u32 {
        self.auth_failures.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// True while a request has arrived whole and the server is still
    /// working on its answer (a tool call answered only when it ends): the
    /// silence is the server's, not the client's.
    fn server_is_working(&self) -> bool {
        self.responses_pending.load(Ordering::Relaxed) > 0
            && self.bodies_open.load(Ordering::Relaxed) == 0
    }
}

/// Counts one unit in a counter for as long as it lives (or until released).
#[derive(Debug)]
struct Counted(Option<Arc<AtomicU32>>);

impl Counted {
    fn new(counter: &Arc<AtomicU32>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(Some(counter.clone()))
    }

    fn release(&mut self) {
        if let Some(counter) = self.0.take() {
            counter.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.release();
    }
}

/// A request body that says when it has been received to its end (or
/// dropped unread).
#[derive(Debug)]
struct TrackedBody {
    inner: Incoming,
    open: Counted,
}

impl HttpBody for TrackedBody {
    type Data = axum::body::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) || self.inner.is_end_stream() {
            self.open.release();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Serves `app` on `listener` within `limits` until `shutdown` completes;
/// then stops accepting, asks open connections to finish, and waits for
/// them up to a grace period.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: &HttpLimits,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (closing, closing_seen) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            // Finished connections are reaped as they end, not at shutdown.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    wait_after_accept_error(&err).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, limit = limits.max_connections, "refused a connection over the cap");
            // Best effort and never waiting: a client that does not read
            // must not hold up the accept loop.
            let _ = stream.try_write(OVER_CAPACITY_RESPONSE);
            continue;
        };
        let app = app.clone();
        let limits = limits.clone();
        let closing_seen = closing_seen.clone();
        connections.spawn(async move {
            serve_connection(stream, app, &limits, closing_seen).await;
            drop(slot);
        });
    }
    drop(listener);
    let _ = closing.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::debug!("closing connections still open after the shutdown grace period");
    }
}

/// Accept errors are mostly about one connection (reset before it was
/// accepted) and are skipped; running out of descriptors is waited out
/// instead of spinning.
async fn wait_after_accept_error(err: &std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        err.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::warn!("accepting a connection failed: {err}");
    tokio::time::sleep(Duration::from_millis(200)).await;
}

async fn serve_connection(
    stream: TcpStream,
    app: axum::Router,
    limits: &HttpLimits,
    mut closing: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(ActivityTracked {
        inner: stream,
        activity: activity.clone(),
    });
    let state = ConnectionState::default();
    let watched = state.clone();
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let pending = Counted::new(&state.responses_pending);
        let mut request = request.map(|inner| {
            let mut open = Counted::new(&state.bodies_open);
            if inner.is_end_stream() {
                open.release();
            }
            TrackedBody { inner, open }
        });
        request.extensions_mut().insert(state.clone());
        let mut app = app.clone();
        let response = tower_service::Service::call(&mut app, request);
        async move {
            let response = response.await;
            drop(pending);
            response
        }
    });
    // The header deadline also bounds how long a kept-alive connection may
    // wait for its next request: hyper starts it whenever it waits for a
    // request head.
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true)
        .serve_connection(io, service);
    tokio::pin!(connection);
    let mut shutting_down = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!("connection ended: {err}");
                }
                return;
            }
            () = tokio::time::sleep_until(activity.last() + limits.idle_timeout) => {
                if watched.server_is_working() {
                    // The clock starts again; what the server is doing is
                    // bounded by its own limits (AGENT_TIMEOUT).
                    activity.touch();
                } else if activity.last().elapsed() >= limits.idle_timeout {
                    tracing::debug!("closing a connection idle for {:?}", limits.idle_timeout);
                    return;
                }
            }
            changed = closing.changed(), if !shutting_down => {
                shutting_down = true;
                if changed.is_ok() {
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// When a byte last moved on a connection.
#[derive(Debug)]
struct Activity {
    opened: Instant,
    last_millis: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            last_millis: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let millis = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_millis.store(millis, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.opened + Duration::from_millis(self.last_millis.load(Ordering::Relaxed))
    }
}

/// A socket that records every read and write that moved bytes.
#[derive(Debug)]
struct ActivityTracked {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for ActivityTracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl AsyncWrite for ActivityTracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(written)) if written > 0) {
            self.activity.touch();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, data);
        if matches!(result, Poll::Ready(Ok(written)) if written > 0) {
            self.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_over_capacity_answer_has_a_correct_length() {
        let text = std::str::from_utf8(OVER_CAPACITY_RESPONSE).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert!(serde_json::from_str::<serde_json::Value>(body).is_ok());
    }

    #[test]
    fn failures_are_counted_per_connection() {
        let first = ConnectionState::default();
        let second = ConnectionState::default();
        // Clones are the same connection (each request gets one).
        let same_connection = first.clone();
        assert_eq!(first.record_auth_failure(), 1);
        assert_eq!(same_connection.record_auth_failure(), 2);
        assert_eq!(second.record_auth_failure(), 1);
    }
}
