//! The MCP server of `qbox-sidecar`: the tools, the stdio and streamable
//! HTTP transports, HTTP security and limits.
//!
//! **Architecture invariant:** this is the only module that knows rmcp types.

pub mod client;
pub mod http;
pub mod limits;
pub mod listener;
pub mod login_watch;
pub mod registry;
pub mod server;
pub mod sessions;
pub mod stdio;
pub mod token;
pub mod tools;

use std::sync::Arc;

use rmcp::ServiceExt;

pub use server::SidecarHandler;
pub use tools::Sidecar;

use crate::agent::{AgentAuth, AgentConfig, AgentRunner};
use crate::qapi::QClient;
use crate::store::{self, StoreQuery};

/// Builds the shared state: `query` is the store the command line chose
/// (`--db` / `QBOX_DB`), used alike by `/health`, `q-chat` and the agent;
/// the tools' own settings come from their documented variables.
pub fn sidecar_from_env(query: &StoreQuery) -> Result<Arc<Sidecar>, store::StoreError> {
    let refresh = store::writable_store(query);
    let chat = QClient::from_env(query.clone(), refresh).map_err(|e| crate::exit::chain(&e));
    let config = AgentConfig::from_env();
    let auth = if config.enabled {
        AgentAuth::for_store(query)?
    } else {
        AgentAuth::Inherit { flavor: None }
    };
    let cwd = std::env::current_dir().unwrap_or_else(|_| std::env::temp_dir());
    Ok(Arc::new(Sidecar {
        agent: AgentRunner::new(config, auth),
        chat,
        cwd,
    }))
}

/// Serves MCP over stdin/stdout until the client closes the connection,
/// with backpressure and a cap on a request line ([`stdio`]).
pub async fn serve_stdio(state: Arc<Sidecar>) -> anyhow::Result<()> {
    let handler = SidecarHandler { state };
    let (service, overlong) = match stdio_pipes() {
        Some((read, write)) => {
            let (transport, overlong) = stdio::BoundedStdio::new(read, write);
            (handler.serve(transport).await, overlong)
        }
        None => {
            let (read, write) = rmcp::transport::stdio();
            let (transport, overlong) = stdio::BoundedStdio::new(read, write);
            (handler.serve(transport).await, overlong)
        }
    };
    let ended = match service {
        Ok(service) => service
            .waiting()
            .await
            .map(drop)
            .map_err(anyhow::Error::from),
        Err(err) => Err(err.into()),
    };
    if overlong.happened() {
        return Err(crate::exit::CommandError::new(
            crate::exit::ERROR,
            format!(
                "a request line on stdin was longer than {} MiB; the server stopped",
                stdio::MAX_LINE_BYTES >> 20
            ),
        )
        .hint("send one JSON-RPC message per line; put large inputs in files and pass their paths")
        .into());
    }
    ended
}

/// stdin and stdout as non-blocking pipes on the runtime's own reactor, when
/// they are pipes (as MCP hosts start servers). Tokio's general stdin and
/// stdout go through a blocking thread each, which costs a thread hand-off
/// per message; with a terminal or a file, that is what is used instead.
#[cfg(unix)]
fn stdio_pipes() -> Option<(
    tokio::net::unix::pipe::Receiver,
    tokio::net::unix::pipe::Sender,
)> {
    use std::os::fd::AsFd;
    let input = std::io::stdin().as_fd().try_clone_to_owned().ok()?;
    let output = std::io::stdout().as_fd().try_clone_to_owned().ok()?;
    let receiver = tokio::net::unix::pipe::Receiver::from_owned_fd(input).ok()?;
    let sender = tokio::net::unix::pipe::Sender::from_owned_fd(output).ok()?;
    Some((receiver, sender))
}

#[cfg(not(unix))]
fn stdio_pipes() -> Option<(tokio::io::Stdin, tokio::io::Stdout)> {
    None
}
