//! The stdio transport with the two bounds a client that misbehaves needs:
//!
//! - **Backpressure.** Answers wait in a queue while the client does not
//!   read stdout; with [`MAX_QUEUED_MESSAGES`] waiting, the server stops
//!   reading requests until one has been written. A client that sends
//!   20,000 requests and reads nothing used to grow the sidecar by hundreds
//!   of megabytes; now it fills its own pipe and waits.
//! - **A cap on a request line.** A line on stdin longer than
//!   [`MAX_LINE_BYTES`] (4 MiB, the HTTP request body cap) ends the server
//!   with a clear error on stderr and exit status 1, instead of buffering it
//!   (rmcp's own cap is larger and only drops the line).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use rmcp::RoleServer;
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

/// The count of messages being written, and a wake-up when one is done.
#[derive(Debug, Default)]
struct Queue {
    queued: AtomicUsize,
    freed: Notify,
}

/// One queued message; dropping it (written, or failed) frees its slot.
struct Slot(Arc<Queue>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::AcqRel);
        self.0.freed.notify_waiters();
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
        let slot = Slot(self.queue.clone());
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
            if self.queue.queued.load(Ordering::Acquire) < MAX_QUEUED_MESSAGES {
                break;
            }
            freed.await;
        }
        self.inner.receive().await
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
