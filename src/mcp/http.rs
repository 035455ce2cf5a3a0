//! The streamable HTTP transport at `/mcp`, an unauthenticated `/health`,
//! and the rules the MCP specification asks of HTTP servers: validate
//! `Origin` (403), authenticate (401 with `WWW-Authenticate: Bearer`), and
//! bind to loopback unless told otherwise.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::json;

use super::server::{Sidecar, SidecarHandler};
use crate::secret::Secret;

/// Who may talk to `/mcp`.
#[derive(Debug, Clone, Default)]
pub struct HttpSecurity {
    /// Required bearer token; `None` serves without authentication.
    pub token: Option<Secret>,
    /// Browser origins allowed besides loopback ones (`https://app.example`).
    pub allowed_origins: Vec<String>,
}

/// Compares two secrets in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// True for origins on this machine (`http://localhost:3000`, `http://127.0.0.1`, `http://[::1]:8080`).
pub fn is_local_origin(origin: &str) -> bool {
    let Some((_, rest)) = origin.split_once("://") else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or("");
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.split(':').next().unwrap_or("")
    };
    matches!(host, "localhost" | "127.0.0.1" | "::1")
}

fn json_error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"error": message}))).into_response()
}

async fn guard(
    State(security): State<Arc<HttpSecurity>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(origin) = request.headers().get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let allowed =
            is_local_origin(origin) || security.allowed_origins.iter().any(|o| o == origin);
        if !allowed {
            tracing::warn!(origin, "refused a request from a non-local origin");
            return json_error(
                StatusCode::FORBIDDEN,
                "origin not allowed (see --allow-origin)",
            );
        }
    }
    if let Some(expected) = &security.token {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !constant_time_eq(presented.as_bytes(), expected.expose().as_bytes()) {
            let mut response =
                json_error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"qbox-sidecar\""),
            );
            return response;
        }
    }
    next.run(request).await
}

async fn health(State(state): State<Arc<Sidecar>>) -> Response {
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "login": super::login_available(),
        "agentEnabled": state.agent.config().enabled,
    }))
    .into_response()
}

/// The whole HTTP application.
pub fn router(state: Arc<Sidecar>, security: HttpSecurity, loopback: bool) -> axum::Router {
    let mut config = StreamableHttpServerConfig::default();
    if !loopback {
        // Reached by a container or host name; the bearer token, not the
        // Host header, is what keeps strangers out.
        config = config.disable_allowed_hosts();
    }
    let handler_state = state.clone();
    let mcp = StreamableHttpService::new(
        move || {
            Ok(SidecarHandler {
                state: handler_state.clone(),
            })
        },
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let guarded =
        axum::Router::new()
            .nest_service("/mcp", mcp)
            .layer(axum::middleware::from_fn_with_state(
                Arc::new(security),
                guard,
            ));
    axum::Router::new()
        .route("/health", get(health))
        .with_state(state)
        .merge(guarded)
}

/// Serves until `shutdown` completes.
pub async fn serve(
    state: Arc<Sidecar>,
    addr: SocketAddr,
    security: HttpSecurity,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    eprintln!("qbox-sidecar: serving MCP at http://{bound}/mcp (health at /health)");
    let app = router(state, security, addr.ip().is_loopback());
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_origins() {
        assert!(is_local_origin("http://localhost:3000"));
        assert!(is_local_origin("https://127.0.0.1"));
        assert!(is_local_origin("http://[::1]:8080"));
        assert!(!is_local_origin("https://evil.example"));
        assert!(!is_local_origin("http://localhost.evil.example"));
        assert!(!is_local_origin("null"));
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
