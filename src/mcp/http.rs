//! The streamable HTTP transport at `/mcp`, an unauthenticated `/health`,
//! and the rules the MCP specification asks of HTTP servers: validate
//! `Origin` (403), authenticate (401 with `WWW-Authenticate: Bearer`), and
//! bind to loopback unless told otherwise. Failed authentications slow down
//! and then end their connection; sessions and connections are capped
//! ([`super::sessions`], [`super::listener`]); `/health` answers from memory
//! ([`super::login_watch`]).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::json;
use tokio::net::TcpListener;

use super::limits::HttpLimits;
use super::listener::ConnectionState;
use super::login_watch::{LOGIN_CHECK_INTERVAL, LoginWatch};
use super::server::SidecarHandler;
use super::sessions::{BoundedSessionManager, limit_sessions};
use super::tools::Sidecar;
use crate::secret::Secret;
use crate::store::StoreQuery;

/// Who may talk to `/mcp`.
#[derive(Debug, Clone, Default)]
pub struct HttpSecurity {
    /// Required bearer token; `None` serves without authentication.
    pub token: Option<Secret>,
    /// Browser origins allowed besides loopback ones (`https://app.example`).
    pub allowed_origins: Vec<String>,
}

/// Failed authentications one connection may make; the last one's answer
/// closes it.
pub const MAX_AUTH_FAILURES_PER_CONNECTION: u32 = 5;

/// The pause before answering the `failures`-th failed authentication on a
/// connection: 100 ms, doubling each time (1.6 s for the fifth).
pub fn auth_failure_delay(failures: u32) -> Duration {
    Duration::from_millis(100) * 2u32.saturating_pow(failures.saturating_sub(1).min(10))
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

/// The 403 for a request whose `Origin` is neither local nor allowed.
fn refused_origin(security: &HttpSecurity, request: &Request) -> Option<Response> {
    let origin = request.headers().get(header::ORIGIN)?;
    let origin = origin.to_str().unwrap_or("");
    let allowed = is_local_origin(origin) || security.allowed_origins.iter().any(|o| o == origin);
    if allowed {
        return None;
    }
    tracing::warn!(origin, "refused a request from a non-local origin");
    Some(json_error(
        StatusCode::FORBIDDEN,
        "origin not allowed (see --allow-origin)",
    ))
}

/// True when the request names this machine as its host (`localhost`,
/// `127.0.0.1`, `[::1]`, any port): what a loopback bind accepts, as
/// rmcp does for `/mcp`. A DNS-rebinding page reaches 127.0.0.1 under its
/// own name, which is what gives it away.
fn names_a_local_host(request: &Request) -> bool {
    let authority = request
        .headers()
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .and_then(|host| host.parse::<axum::http::uri::Authority>().ok())
        .or_else(|| request.uri().authority().cloned());
    authority.is_some_and(|authority| {
        let host = authority
            .host()
            .trim_matches(['[', ']'])
            .to_ascii_lowercase();
        matches!(host.as_str(), "localhost" | "127.0.0.1" | "::1")
    })
}

/// What guards `/health`: the `Origin` rule of `/mcp`, and on a loopback
/// bind the `Host` rule rmcp applies to `/mcp`. No token: health checks
/// (Docker's, Kubernetes') have none.
#[derive(Debug)]
struct HealthGuard {
    security: Arc<HttpSecurity>,
    check_host: bool,
}

async fn health_guard(
    State(guard): State<Arc<HealthGuard>>,
    request: Request,
    next: Next,
) -> Response {
    if guard.check_host && !names_a_local_host(&request) {
        tracing::warn!("refused a /health request for a host that is not this machine");
        return json_error(StatusCode::FORBIDDEN, "host not allowed");
    }
    if let Some(refused) = refused_origin(&guard.security, &request) {
        return refused;
    }
    next.run(request).await
}

async fn guard(
    State(security): State<Arc<HttpSecurity>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(refused) = refused_origin(&security, &request) {
        return refused;
    }
    if let Some(expected) = &security.token {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !constant_time_eq(presented.as_bytes(), expected.expose().as_bytes()) {
            return unauthorized(request.extensions().get::<ConnectionState>()).await;
        }
    }
    next.run(request).await
}

/// The answer to a missing or wrong token, after a pause that grows with
/// each failure on the same connection; the last allowed failure also
/// closes the connection, so guessing costs a new connection every few tries.
async fn unauthorized(connection: Option<&ConnectionState>) -> Response {
    let failures = connection.map(ConnectionState::record_auth_failure);
    if let Some(failures) = failures {
        tokio::time::sleep(auth_failure_delay(failures)).await;
    }
    let mut response = json_error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"qbox-sidecar\""),
    );
    if failures.is_some_and(|f| f >= MAX_AUTH_FAILURES_PER_CONNECTION) {
        tracing::warn!(
            "closing a connection after {MAX_AUTH_FAILURES_PER_CONNECTION} failed authentications"
        );
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// What `/health` reports: nothing it has to read from disk.
#[derive(Debug)]
struct Health {
    login: LoginWatch,
    agent_enabled: bool,
}

async fn health(State(health): State<Arc<Health>>) -> Response {
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "login": health.login.usable(),
        "agentEnabled": health.agent_enabled,
    }))
    .into_response()
}

/// The whole HTTP application. Cancelling `config.cancellation_token` ends
/// every MCP session.
fn router(
    state: Arc<Sidecar>,
    security: HttpSecurity,
    config: StreamableHttpServerConfig,
    limits: &HttpLimits,
    login: LoginWatch,
) -> axum::Router {
    let health_state = Arc::new(Health {
        login,
        agent_enabled: state.agent.config().enabled,
    });
    let security = Arc::new(security);
    let health_guard_state = Arc::new(HealthGuard {
        security: security.clone(),
        // Empty only when the bind is not loopback (see `serve`).
        check_host: !config.allowed_hosts.is_empty(),
    });
    let sessions = Arc::new(BoundedSessionManager::new(
        limits.max_sessions,
        limits.session_idle_timeout,
    ));
    let mcp = StreamableHttpService::new(
        move || {
            Ok(SidecarHandler {
                state: state.clone(),
            })
        },
        sessions.clone(),
        config,
    );
    // Layers run outside in: the guard (origin, token) first, so that an
    // unauthenticated request never holds a session slot.
    let guarded = axum::Router::new()
        .nest_service("/mcp", mcp)
        .layer(axum::middleware::from_fn_with_state(
            sessions,
            limit_sessions,
        ))
        .layer(axum::middleware::from_fn_with_state(security, guard));
    axum::Router::new()
        .route("/health", get(health))
        .with_state(health_state)
        .layer(axum::middleware::from_fn_with_state(
            health_guard_state,
            health_guard,
        ))
        .merge(guarded)
}

/// Serves on `listener` within `limits` until `shutdown` completes. The
/// login `/health` reports is read from `query` before the first request
/// and every few seconds after.
pub async fn serve(
    state: Arc<Sidecar>,
    listener: TcpListener,
    security: HttpSecurity,
    limits: &HttpLimits,
    query: StoreQuery,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let bound = listener.local_addr()?;
    let mut config = StreamableHttpServerConfig::default();
    if !bound.ip().is_loopback() {
        // Reached by a container or host name; the bearer token, not the
        // Host header, is what keeps strangers out.
        config = config.disable_allowed_hosts();
    }
    let end_sessions = config.cancellation_token.clone();
    let login = LoginWatch::start(query, LOGIN_CHECK_INTERVAL).await;
    let app = router(state, security, config, limits, login);
    eprintln!("qbox-sidecar: serving MCP at http://{bound}/mcp (health at /health)");
    super::listener::serve(listener, app, limits, async move {
        shutdown.await;
        // Open event streams end with their sessions, so connections can
        // finish instead of waiting out the grace period.
        end_sessions.cancel();
    })
    .await;
    Ok(())
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
    fn failed_authentications_wait_longer_each_time() {
        let delays: Vec<_> = (1..=MAX_AUTH_FAILURES_PER_CONNECTION)
            .map(auth_failure_delay)
            .collect();
        assert_eq!(delays[0], Duration::from_millis(100));
        assert!(delays.windows(2).all(|pair| pair[1] > pair[0]));
        assert!(auth_failure_delay(u32::MAX) <= Duration::from_secs(103));
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
