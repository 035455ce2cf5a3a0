//! The stdio transport with the two bounds a client that misbehaves needs:
//!
//! - **Backpressure.** With [`MAX_QUEUED_MESSAGES`] messages waiting to be
//!   written, or [`MAX_AWAITING`] requests read but not yet answered on
//!   stdout, the server stops reading requests until one is done. Counting only the messages being
//!   written is not enough: rmcp runs each request in a task of its own, and
//!   on the single-threaded runtime the loop that reads stdin can read tens
//!   of thousands of buffered requests before those tasks run once (tokio's
//!   budget counts reads from the pipe, and one read brings hundreds of
//!   lines). A client that sends 20,000 requests and reads nothing used to
//!   grow the sidecar by 250 MB, one stuck task per request; now it fills
//!   its own pipe and waits.
//! - **A cap on a request line.** A line on stdin longer than
//!   [`MAX_LINE_BYTES`] (4 MiB, the HTTP request body cap) ends the server
//!   with a clear error on stderr and exit status 1, instead of buffering it
//!   (rmcp's own cap is larger and only drops the line).

use std::collections::HashSet;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use rmcp::RoleServer;
use rmcp::model::{ClientNotification, JsonRpcMessage, RequestId};
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use rmcp::transport::async_rw::AsyncRwTransport;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// The longest request line read from stdin.
pub const MAX_LINE_BYTES: usize = 4 << 20;

/// Messages (answers, notifications) waiting to be written before the
/// server stops reading requests.
pub const MAX_QUEUED_MESSAGES: usize = 64;

/// Requests read and not yet answered before the server stops reading: a
/// few kilobytes each, and more than any host runs at once, so that a
/// client with long tool calls in flight can still ping and cancel.
pub const MAX_AWAITING: usize = 256;

/// Whether stdin brought a line over [`MAX_LINE_BYTES`] (set by
/// [`LineCapped`], read by the caller once the service has ended).
#[derive(Debug, Default)]
pub struct Overlong(AtomicBool);

impl Overlong {
    pub fn happened(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// A reader that fails once a line runs past [`MAX_LINE_BYTES`] bytes.
struct LineCapped<R> {
    inner: R,
    since_newline: usize,
    overlong: Arc<Overlong>,
}

impl<R: AsyncRead + Unpin> AsyncRead for LineCapped<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            let fresh = &buf.filled()[before..];
            this.since_newline = match fresh.iter().rposition(|b| *b == b'\n') {
                Some(at) => fresh.len() - at - 1,
                None => this.since_newline + fresh.len(),
            };
            // A newline inside `fresh` can end an earlier long line too.
            let longest_inside = fresh
                .split(|b| *b == b'\n')
                .map(<[u8]>::len)
                .max()
                .unwrap_or(0);
            if this.since_newline > MAX_LINE_BYTES || longest_inside > MAX_LINE_BYTES {
                this.overlong.0.store(true, Ordering::Relaxed);
                // An error reports nothing read.
                buf.set_filled(before);
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("a request line on stdin is longer than {MAX_LINE_BYTES} bytes"),
                )));
            }
        }
        result
    }
}

/// The requests read and not yet answered, the count of messages being
/// written, and a wake-up when either shrinks.
#[derive(Debug, Default)]
struct Queue {
    /// By id: an answer names the request it answers, and a request the
    /// client cancels gets none (rmcp drops it), so its id is let go then.
    awaiting: Mutex<HashSet<RequestId>>,
    queued: AtomicUsize,
    freed: Notify,
}

impl Queue {
    fn awaiting(&self) -> std::sync::MutexGuard<'_, HashSet<RequestId>> {
        self.awaiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether another request may be read now.
    fn has_room(&self) -> bool {
        self.queued.load(Ordering::Acquire) < MAX_QUEUED_MESSAGES
            && self.awaiting().len() < MAX_AWAITING
    }

    /// The request `id` is answered (or will never be).
    fn settle(&self, id: &RequestId) {
        if self.awaiting().remove(id) {
            self.freed.notify_waiters();
        }
    }
}

/// One queued message; dropping it (written, or failed) frees its slot and
/// settles the request it answers.
struct Slot {
    queue: Arc<Queue>,
    answers: Option<RequestId>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.queue.queued.fetch_sub(1, Ordering::AcqRel);
        if let Some(id) = &self.answers {
            self.queue.awaiting().remove(id);
        }
        self.queue.freed.notify_waiters();
    }
}

/// rmcp's line transport over `read` and `write`, bounded as the module says.
pub struct BoundedStdio<R: AsyncRead + Unpin, W: AsyncWrite> {
    inner: AsyncRwTransport<RoleServer, LineCapped<R>, W>,
    queue: Arc<Queue>,
}

impl<R, W> BoundedStdio<R, W>
where
    R: AsyncRead + Send + Unpin + 'static,
    W: AsyncWrite + Send + Unpin + 'static,
{
    pub fn new(read: R, write: W) -> (Self, Arc<Overlong>) {
        let overlong = Arc::new(Overlong::default());
        let read = LineCapped {
            inner: read,
            since_newline: 0,
            overlong: overlong.clone(),
        };
        let inner = AsyncRwTransport::new_server(read, write);
        (
            Self {
                inner,
                queue: Arc::default(),
            },
            overlong,
        )
    }
}

impl<R, W> Transport<RoleServer> for BoundedStdio<R, W>
where
    R: AsyncRead + Send + Unpin + 'static,
    W: AsyncWrite + Send + Unpin + 'static,
{
    type Error = io::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleServer>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        // Counted when queued, not when first polled: the service spawns
        // each send, and a spawned send waiting for stdout is queued.
        self.queue.queued.fetch_add(1, Ordering::AcqRel);
        let answers = match &item {
            JsonRpcMessage::Response(response) => Some(response.id.clone()),
            JsonRpcMessage::Error(error) => error.id.clone(),
            _ => None,
        };
        let slot = Slot {
            queue: self.queue.clone(),
            answers,
        };
        let sending = self.inner.send(item);
        async move {
            let result = sending.await;
            drop(slot);
            result
        }
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleServer>> {
        // Cancel-safe: the service polls this inside a `select!`.
        loop {
            let freed = self.queue.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.queue.has_room() {
                break;
            }
            freed.await;
        }
        let message = self.inner.receive().await?;
        match &message {
            JsonRpcMessage::Request(request) => {
                self.queue.awaiting().insert(request.id.clone());
            }
            JsonRpcMessage::Notification(notification) => {
                if let ClientNotification::CancelledNotification(cancelled) =
                    &notification.notification
                    && let Some(id) = &cancelled.params.request_id
                {
                    self.queue.settle(id);
                }
            }
            _ => {}
        }
        Some(message)
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.inner.close().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn a_line_over_the_cap_is_an_error_and_shorter_ones_pass() {
        let ok = vec![b'x'; MAX_LINE_BYTES]
            .into_iter()
            .chain([b'\n'])
            .collect::<Vec<_>>();
        let overlong = Arc::new(Overlong::default());
        let mut reader = LineCapped {
            inner: &ok[..],
            since_newline: 0,
            overlong: overlong.clone(),
        };
        let mut sink = Vec::new();
        reader.read_to_end(&mut sink).await.unwrap();
        assert!(!overlong.happened());

        let long = vec![b'x'; MAX_LINE_BYTES + 1];
        let mut reader = LineCapped {
            inner: &long[..],
            since_newline: 0,
            overlong: overlong.clone(),
        };
        let err = reader.read_to_end(&mut Vec::new()).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(overlong.happened());
    }
}
