//! A cap on MCP sessions over HTTP. Each `initialize` creates a session that
//! holds memory until the client deletes it or it expires; without a cap,
//! nine thousand `initialize` calls held 472 MB. Sessions are rmcp's own
//! ([`LocalSessionManager`], whose idle timeout expires silent ones); this
//! wrapper gives each one a slot of a fixed number, and the HTTP layer turns
//! a request that finds no free slot into `503` with `Retry-After`.
//!
//! The slot is taken by the HTTP layer before the request reaches rmcp and
//! handed to [`BoundedSessionManager::create_session`] through a task-local
//! (rmcp handles the request in the same task), so a request over the cap is
//! answered 503 rather than reaching rmcp, whose own error would be a 500.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::streamable_http_server::SessionManager;
use rmcp::transport::streamable_http_server::session::local::{
    LocalSessionManager, LocalSessionManagerError,
};
use rmcp::transport::streamable_http_server::session::{ServerSseMessage, SessionId};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The header that names an existing session.
const SESSION_HEADER: &str = "mcp-session-id";

/// What a client over the cap is told to wait, in seconds.
const RETRY_AFTER_SECONDS: &str = "5";

tokio::task_local! {
    /// The slot the HTTP layer reserved for the request being handled.
    static RESERVED_SLOT: Cell<Option<OwnedSemaphorePermit>>;
}

/// Why a session could not be created or used.
#[derive(Debug, thiserror::Error)]
pub enum SessionLimitError {
    #[error("every one of the {0} MCP session slots is in use")]
    Full(usize),
    #[error(transparent)]
    Local(#[from] LocalSessionManagerError),
}

/// rmcp's in-memory sessions, at most `max` at once.
#[derive(Debug)]
pub struct BoundedSessionManager {
    inner: LocalSessionManager,
    max: usize,
    slots: Arc<Semaphore>,
    held: Mutex<HashMap<SessionId, OwnedSemaphorePermit>>,
}

impl BoundedSessionManager {
    /// At most `max` sessions; a session without a message for `idle` ends.
    pub fn new(max: usize, idle: Duration) -> Self {
        let mut inner = LocalSessionManager::default();
        inner.session_config.keep_alive = Some(idle);
        Self {
            inner,
            max,
            slots: Arc::new(Semaphore::new(max)),
            held: Mutex::new(HashMap::new()),
        }
    }

    /// A free slot for a request that may create a session, if any.
    fn reserve(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().ok()
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, OwnedSemaphorePermit>> {
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl SessionManager for BoundedSessionManager {
    type Error = SessionLimitError;
    type Transport = <LocalSessionManager as SessionManager>::Transport;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        // The slot reserved by [`limit_sessions`]; a caller that did not go
        // through it (none today) still cannot pass the cap.
        let slot = RESERVED_SLOT
            .try_with(Cell::take)
            .ok()
            .flatten()
            .or_else(|| self.reserve())
            .ok_or(SessionLimitError::Full(self.max))?;
        let (id, transport) = self.inner.create_session().await?;
        self.held().insert(id.clone(), slot);
        Ok((id, transport))
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        Ok(self.inner.initialize_session(id, message).await?)
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        Ok(self.inner.has_session(id).await?)
    }

    /// Called when the client deletes the session and again when its
    /// worker ends (expired, or closed); the slot is freed once.
    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        let closed = self.inner.close_session(id).await;
        self.held().remove(id);
        Ok(closed?)
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        Ok(SessionManager::create_stream(&self.inner, id, message).await?)
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        Ok(self.inner.accept_message(id, message).await?)
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        Ok(SessionManager::create_standalone_stream(&self.inner, id).await?)
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        Ok(SessionManager::resume(&self.inner, id, last_event_id).await?)
    }
}

/// Middleware in front of rmcp: a POST without a session id is the only
/// request that can open a session, so it needs a free slot or gets 503.
pub async fn limit_sessions(
    State(sessions): State<Arc<BoundedSessionManager>>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() != Method::POST || request.headers().contains_key(SESSION_HEADER) {
        return next.run(request).await;
    }
    let Some(slot) = sessions.reserve() else {
        tracing::warn!(
            limit = sessions.max,
            "refused a new MCP session: the cap is reached"
        );
        return over_capacity(sessions.max);
    };
    // An unused slot (the request was no `initialize`, or failed) goes
    // back when the scope ends.
    RESERVED_SLOT
        .scope(Cell::new(Some(slot)), next.run(request))
        .await
}

fn over_capacity(max: usize) -> Response {
    let mut response = (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(serde_json::json!({
            "error": format!("the server holds its maximum of {max} MCP sessions; retry later, or end an unused session (HTTP DELETE)")
        })),
    )
        .into_response();
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from_static(RETRY_AFTER_SECONDS),
    );
    response
}
