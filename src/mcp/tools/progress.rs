//! The one progress relay every tool uses: a call's progress messages become
//! `notifications/progress` for the request's progress token, numbered in
//! order, and all of them are sent before the call's result.

use std::task::{Context, Poll};

use rmcp::model::{ProgressNotificationParam, ProgressToken};
use rmcp::service::RequestContext;
use rmcp::{Peer, RoleServer};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The longest progress token (as JSON) the sidecar echoes. Every progress
/// notification repeats the token, so a 3 MiB one would turn a call into
/// gigabytes sent back; real clients use a number or a short string.
pub const MAX_PROGRESS_TOKEN_BYTES: usize = 256;

/// Progress messages waiting for the client before a bounded sender waits.
const PROGRESS_QUEUE: usize = 64;

/// Where a relay reads a call's progress messages from (polled, so that
/// one relay serves every kind of source).
pub trait ProgressSource: Send + 'static {
    /// The next message, or `None` once the call's senders are gone.
    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Option<String>>;
}

/// A bounded channel of text: the call waits while the client is behind,
/// instead of piling messages up in memory.
impl ProgressSource for mpsc::Receiver<String> {
    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Option<String>> {
        self.poll_recv(cx)
    }
}

/// A bounded channel for [`relay`]: see the `ProgressSource` impl.
pub fn bounded() -> (mpsc::Sender<String>, mpsc::Receiver<String>) {
    mpsc::channel(PROGRESS_QUEUE)
}

/// The relay of one call; [`ProgressRelay::finish`] waits until every
/// message has gone out.
#[derive(Debug)]
pub struct ProgressRelay(Option<JoinHandle<()>>);

impl ProgressRelay {
    /// Waits until the call's senders are dropped and every message sent.
    pub async fn finish(self) {
        if let Some(task) = self.0 {
            let _ = task.await;
        }
    }
}

/// Starts relaying when the request asked for progress: `open` makes the
/// channel, whose sending end the call gets (`None`: no progress wanted).
pub fn relay<Sender, Source: ProgressSource>(
    context: &RequestContext<RoleServer>,
    open: impl FnOnce() -> (Sender, Source),
) -> (Option<Sender>, ProgressRelay) {
    let Some(token) = progress_token(context) else {
        return (None, ProgressRelay(None));
    };
    let (sender, source) = open();
    let task = tokio::spawn(forward(context.peer.clone(), token, Box::new(source)));
    (Some(sender), ProgressRelay(Some(task)))
}

/// The request's progress token, if it has one of at most
/// [`MAX_PROGRESS_TOKEN_BYTES`]. A longer one is refused by ignoring it: the
/// call runs and answers as usual, without progress notifications (a
/// warning in the log says why), over stdio and HTTP alike.
fn progress_token(context: &RequestContext<RoleServer>) -> Option<ProgressToken> {
    let token = context.meta.get_progress_token()?;
    let length = serde_json::to_string(&token).map_or(usize::MAX, |json| json.len());
    if length > MAX_PROGRESS_TOKEN_BYTES {
        tracing::warn!(
            "ignoring a progress token of {length} bytes (at most {MAX_PROGRESS_TOKEN_BYTES}): this call sends no progress notifications"
        );
        return None;
    }
    Some(token)
}

async fn forward(
    peer: Peer<RoleServer>,
    token: ProgressToken,
    mut source: Box<dyn ProgressSource>,
) {
    let mut step = 0.0;
    while let Some(message) = std::future::poll_fn(|cx| source.poll_message(cx)).await {
        step += 1.0;
        let _ = peer
            .notify_progress(
                ProgressNotificationParam::new(token.clone(), step).with_message(message),
            )
            .await;
    }
}
