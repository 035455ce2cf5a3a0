//! The HTTP server's own accept loop, with the limits a server open to
//! other local users (or a network) needs and `axum::serve` does not set:
//! a cap on connections, a deadline for a request's headers, and an idle
//! deadline for a connection on which nothing moves.
//!
//! Why each one: a client that sends its headers one byte at a time, or
//! connects and says nothing, or stops reading a response, would otherwise
//! hold its socket and buffers for ever; fifty of them were never closed in a
//! minute. The cap bounds what all clients together can hold.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::Request;
use hyper::body::Incoming;
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

/// What the request handlers know about the connection a request came on
/// (a request extension): failed authentications are counted per
/// connection, so that guessing the token gets slower and then impossible.
#[derive(Debug, Clone, Default)]
pub struct ConnectionState {
    auth_failures: Arc<AtomicU32>,
}

impl ConnectionState {
    /// Records one failed authentication and returns how many there were.
    pub fn record_auth_failure(&self) -> u32 {
        self.auth_failures.fetch_add(1, Ordering::Relaxed) + 1
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
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(state.clone());
        let mut app = app.clone();
        tower_service::Service::call(&mut app, request)
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
                if activity.last().elapsed() >= limits.idle_timeout {
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
