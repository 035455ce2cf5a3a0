//! A small MCP client: calls one tool on a sidecar, over streamable HTTP
//! (with a bearer token) or over a child process's stdio, and hands each
//! progress message to the caller as it arrives. `qbox-sidecar call` and
//! `qbox demo` use it; for `q-chat` the progress messages are the answer,
//! streamed.
//!
//! It negotiates as the official SDKs do: a `server/discover` probe at the
//! newest revision first, and the `initialize` handshake (offering the
//! newest revision that has one) when the server does not answer it as a
//! server of that revision would.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::handler::client::ClientHandler;
use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientConfig, ClientJsonRpcMessage, ClientRequest,
    Implementation, JsonObject, JsonRpcMessage, ProgressNotificationParam, RequestId,
    ServerJsonRpcMessage,
};
use rmcp::service::{ClientLifecycleMode, ClientServiceExt, NotificationContext, RoleClient};
use rmcp::transport;
use rmcp::transport::common::client_side_sse::ExponentialBackoff;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, Transport};
use serde::Serialize;
use tokio::sync::mpsc;

use super::server::{NEWEST_HANDSHAKE_REVISION, NEWEST_REVISION};
use crate::exit::Diagnose;
use crate::secret::Secret;

/// How often an event stream that broke is reopened before the call fails.
const SSE_RECONNECT_ATTEMPTS: usize = 3;

/// Where the server is.
#[derive(Debug)]
pub enum Endpoint {
    /// Streamable HTTP at this URL, with an optional bearer token. Without
    /// one, a loopback URL gets the token its server generated, if the user
    /// can find it (`qbox-sidecar serve --http` on this machine).
    Http { url: String, token: Option<Secret> },
    /// A command whose stdin and stdout speak MCP (stderr is passed through),
    /// with extra environment variables.
    Command {
        program: String,
        args: Vec<String>,
        env: Vec<(String, String)>,
    },
}

/// What a tool call returned.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolOutcome {
    pub is_error: bool,
    /// The text blocks of the result, joined.
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub structured_content: Option<serde_json::Value>,
    /// How many progress messages arrived before the result.
    pub progress_messages: usize,
    /// The protocol revision the client and the server agreed on.
    pub protocol_version: String,
}

/// Why a call failed before the tool could answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("cannot start `{program}`")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("the MCP handshake with {endpoint} failed: {detail}")]
    Connect { endpoint: String, detail: String },
    #[error("{endpoint} turned the request away (HTTP 401): the bearer token is missing or wrong")]
    Unauthorized { endpoint: String },
    #[error("calling `{tool}` failed: {detail}")]
    Call { tool: String, detail: String },
}

impl Diagnose for CallError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            Self::Spawn { .. } => "check the command after `--`".into(),
            Self::Connect { .. } => {
                "check the URL (it ends in /mcp) and that the server is running".into()
            }
            Self::Unauthorized { .. } => {
                "pass the server's token with --token-file FILE or QBOX_MCP_TOKEN (a server on this machine that generated its token keeps it in $XDG_RUNTIME_DIR/qbox/sidecar-ADDRESS-PORT.token)".into()
            }
            Self::Call { .. } => return None,
        })
    }
}

/// Forwards progress messages into a channel the caller drains.
struct ProgressForwarder {
    updates: mpsc::UnboundedSender<String>,
}

impl ClientHandler for ProgressForwarder {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        if let Some(message) = params.message {
            let _ = self.updates.send(message);
        }
    }

    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("qbox", env!("CARGO_PKG_VERSION")),
        )
    }
}

/// Discovery at the newest revision, the handshake as the fallback: what
/// the SDKs call "auto". rmcp falls back when the probe gets a JSON-RPC
/// error that is not one a server of the new revision sends (a server of
/// an older one answers "method not found"), or no answer in 10 s; a
/// server that names other revisions it speaks is asked again with one of
/// them.
fn lifecycle() -> ClientLifecycleMode {
    ClientLifecycleMode::Auto {
        preferred_versions: vec![NEWEST_REVISION],
        legacy_version: Some(NEWEST_HANDSHAKE_REVISION),
    }
}

/// A transport that drops the answer to a `server/discover` probe once the
/// client has fallen back to `initialize`. rmcp gives the probe 10 s; a
/// server that starts more slowly (a container, a cold interpreter) reads
/// the probe late and answers it before the handshake, and rmcp would take
/// that answer for the handshake's and fail. The SDKs read past it too.
struct LateProbeFilter<T> {
    inner: T,
    probes: Arc<Mutex<Probes>>,
}

#[derive(Debug, Default)]
struct Probes {
    /// The ids of the `server/discover` requests sent.
    ids: Vec<RequestId>,
    /// An `initialize` went out after them: their answers are stale.
    fell_back: bool,
}

impl<T> LateProbeFilter<T> {
    fn new(inner: T) -> Self {
        Self {
            inner,
            probes: Arc::default(),
        }
    }

    fn is_stale_probe_answer(&self, message: &ServerJsonRpcMessage) -> bool {
        let id = match message {
            JsonRpcMessage::Response(response) => &response.id,
            JsonRpcMessage::Error(error) => match &error.id {
                Some(id) => id,
                None => return false,
            },
            _ => return false,
        };
        let probes = self.probes.lock().unwrap_or_else(|p| p.into_inner());
        // Some servers echo a numeric id as a string.
        probes.fell_back
            && probes
                .ids
                .iter()
                .any(|probe| probe == id || probe.to_string() == id.to_string())
    }
}

impl<T: Transport<RoleClient>> Transport<RoleClient> for LateProbeFilter<T> {
    type Error = T::Error;

    fn send(
        &mut self,
        item: ClientJsonRpcMessage,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        if let JsonRpcMessage::Request(request) = &item {
            let mut probes = self.probes.lock().unwrap_or_else(|p| p.into_inner());
            match &request.request {
                ClientRequest::DiscoverRequest(_) => probes.ids.push(request.id.clone()),
                ClientRequest::InitializeRequest(_) => probes.fell_back = true,
                _ => {}
            }
        }
        self.inner.send(item)
    }

    async fn receive(&mut self) -> Option<ServerJsonRpcMessage> {
        loop {
            let message = self.inner.receive().await?;
            if self.is_stale_probe_answer(&message) {
                tracing::debug!("dropped the late answer to the server/discover probe");
                continue;
            }
            return Some(message);
        }
    }

    fn close(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.inner.close()
    }
}

impl Endpoint {
    fn describe(&self) -> String {
        match self {
            Self::Http { url, .. } => url.clone(),
            Self::Command { program, .. } => format!("`{program}`"),
        }
    }
}

/// Calls `tool` with `arguments` on `endpoint`; `on_progress` sees every
/// progress message, in order, before this returns.
pub async fn call_tool(
    endpoint: &Endpoint,
    tool: &str,
    arguments: JsonObject,
    mut on_progress: impl FnMut(&str),
) -> Result<ToolOutcome, CallError> {
    let (updates, mut received) = mpsc::unbounded_channel();
    let handler = ProgressForwarder { updates };
    let connect_error = |detail: String| CallError::Connect {
        endpoint: endpoint.describe(),
        detail,
    };
    let mut child = None;
    let service = match endpoint {
        Endpoint::Http { url, token } => {
            let http = crate::http::client(None).map_err(|e| connect_error(e.to_string()))?;
            // A generated token goes only to the literal address that
            // wrote it (see `generated_token_for`).
            let (token, url) = match token {
                Some(token) => (Some(token.clone()), url.clone()),
                None => match super::token::generated_token_for(url) {
                    Some((token, exact)) => (Some(token), exact.to_string()),
                    None => (None, url.clone()),
                },
            };
            let mut config = StreamableHttpClientTransportConfig::with_uri(url.as_str());
            if let Some(token) = token {
                config = config.auth_header(token.expose());
            }
            // A server that went away is given a few reconnections, not
            // an endless doubling wait: the call then fails instead of
            // hanging.
            let mut reconnect = ExponentialBackoff::default();
            reconnect.max_times = Some(SSE_RECONNECT_ATTEMPTS);
            reconnect.max_delay = Some(Duration::from_secs(4));
            config.retry_config = Arc::new(reconnect);
            let transport = StreamableHttpClientTransport::with_client(http, config);
            handler
                .serve_with_lifecycle(LateProbeFilter::new(transport), lifecycle())
                .await
        }
        Endpoint::Command { program, args, env } => {
            let mut spawned = tokio::process::Command::new(program)
                .args(args)
                .envs(env.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .map_err(|source| CallError::Spawn {
                    program: program.clone(),
                    source,
                })?;
            let (Some(stdout), Some(stdin)) = (spawned.stdout.take(), spawned.stdin.take()) else {
                return Err(connect_error("the child's pipes are missing".into()));
            };
            child = Some(spawned);
            handler
                .serve_with_lifecycle(
                    LateProbeFilter::new(transport::async_rw::AsyncRwTransport::new_client(
                        stdout, stdin,
                    )),
                    lifecycle(),
                )
                .await
        }
    }
    .map_err(|e| {
        let detail = crate::exit::chain(&e);
        // rmcp reports a 401 as "Auth required"; say what it means here.
        if detail.contains("Auth required") {
            CallError::Unauthorized {
                endpoint: endpoint.describe(),
            }
        } else {
            connect_error(detail)
        }
    })?;
    let protocol_version = service
        .peer_info()
        .map(|info| info.protocol_version.to_string())
        .unwrap_or_default();
    tracing::debug!("{} speaks MCP {protocol_version}", endpoint.describe());
    let request = CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments);
    let mut progress_messages = 0;
    // Progress is shown while the call runs, not after it.
    let result = {
        let call = service.call_tool(request);
        tokio::pin!(call);
        loop {
            tokio::select! {
                biased;
                Some(message) = received.recv() => {
                    progress_messages += 1;
                    on_progress(&message);
                }
                result = &mut call => break result,
            }
        }
    };
    while let Ok(message) = received.try_recv() {
        progress_messages += 1;
        on_progress(&message);
    }
    let result = result.map_err(|e| CallError::Call {
        tool: tool.to_owned(),
        detail: crate::exit::chain(&e),
    })?;
    // Closing stdin ends a stdio server; the HTTP session is deleted.
    let _ = service.cancel().await;
    if let Some(mut child) = child {
        let _ = child.wait().await;
    }
    let text = result
        .content
        .iter()
        .filter_map(|block| block.as_text().map(|t| t.text.as_str()))
        .collect::<Vec<_>>()
        .join("\n");
    Ok(ToolOutcome {
        is_error: result.is_error.unwrap_or(false),
        text,
        structured_content: result.structured_content,
        progress_messages,
        protocol_version,
    })
}
