//! A stand-in SSO OIDC service: `POST /token` with the refresh token grant,
//! checking the client credentials and the refresh token like the real one,
//! recording every request, and failing on request, including the ways a
//! hostile endpoint fails (redirects, malformed grants, endless bodies,
//! error text that echoes secrets and carries escape sequences).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// How the stand-in answers the next token requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OidcBehavior {
    /// Issue tokens valid for `expires_in` seconds, rotating the refresh
    /// token when `rotate` is set.
    Issue { expires_in: i64, rotate: bool },
    /// Answer 400 `invalid_grant`.
    InvalidGrant,
    /// Answer with this 5xx status.
    ServerError(u16),
    /// Answer 200 with a body that is not a token.
    Garbage,
    /// Answer this 3xx status with this `Location`.
    Redirect { status: u16, location: String },
    /// Answer 200 with exactly this JSON, whatever its shape.
    Grant(Value),
    /// Answer 400 with this OIDC error code and description, verbatim.
    Error { code: String, description: String },
    /// Answer `status` with a body of `bytes` bytes that starts like a
    /// token answer and never ends it, streamed in 64 KiB chunks so the
    /// stand-in itself holds no more than one.
    Endless { status: u16, bytes: u64 },
}

/// One request the stand-in received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub body: Value,
    /// When it arrived.
    pub at: std::time::SystemTime,
}

#[derive(Debug)]
struct Inner {
    client_id: String,
    client_secret: String,
    refresh_token: String,
    behavior: OidcBehavior,
    issued: u64,
    requests: Vec<RecordedRequest>,
    /// How long each request waits before it is judged (a slow service,
    /// so that two parties' requests are in flight together).
    delay: std::time::Duration,
}

/// A running stand-in OIDC service. Dropping it stops the server.
#[derive(Debug)]
pub struct StandinOidc {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    _server: tokio::task::JoinHandle<()>,
}

impl StandinOidc {
    /// Starts on an ephemeral loopback port, accepting `client_id` /
    /// `client_secret` and the refresh token `refresh_token`.
    pub async fn start(
        client_id: &str,
        client_secret: &str,
        refresh_token: &str,
    ) -> std::io::Result<Self> {
        let inner = Arc::new(Mutex::new(Inner {
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            refresh_token: refresh_token.to_owned(),
            behavior: OidcBehavior::Issue {
                expires_in: 3600,
                rotate: true,
            },
            issued: 0,
            requests: Vec::new(),
            delay: std::time::Duration::ZERO,
        }));
        let app = axum::Router::new()
            .route("/token", post(create_token))
            .with_state(inner.clone());
        let (addr, server) = super::serve_on_loopback(app).await?;
        Ok(Self {
            addr,
            inner,
            _server: server,
        })
    }

    /// The base URL to put in `QBOX_OIDC_ENDPOINT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_behavior(&self, behavior: OidcBehavior) {
        self.lock().behavior = behavior;
    }

    /// Makes every request wait `delay` before it is judged, in the order
    /// of arrival.
    pub fn set_delay(&self, delay: std::time::Duration) {
        self.lock().delay = delay;
    }

    /// The refresh token the stand-in currently accepts.
    pub fn current_refresh_token(&self) -> String {
        self.lock().refresh_token.clone()
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn oidc_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

async fn create_token(State(inner): State<Arc<Mutex<Inner>>>, body: String) -> Response {
    let delay = inner.lock().unwrap_or_else(|p| p.into_inner()).delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut inner = inner.lock().unwrap_or_else(|p| p.into_inner());
    let Ok(body) = serde_json::from_str::<Value>(&body) else {
        return oidc_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "body is not json",
        );
    };
    inner.requests.push(RecordedRequest {
        body: body.clone(),
        at: std::time::SystemTime::now(),
    });
    let field = |name: &str| body.get(name).and_then(Value::as_str).unwrap_or_default();
    let (expires_in, rotate) = match inner.behavior.clone() {
        OidcBehavior::InvalidGrant => {
            return oidc_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "Invalid refresh token provided",
            );
        }
        OidcBehavior::ServerError(status) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return (status, "internal failure").into_response();
        }
        OidcBehavior::Garbage => {
            return (StatusCode::OK, "<html>proxy login</html>").into_response();
        }
        OidcBehavior::Redirect { status, location } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::TEMPORARY_REDIRECT);
            return (status, [(header::LOCATION, location)]).into_response();
        }
        OidcBehavior::Grant(answer) => return (StatusCode::OK, Json(answer)).into_response(),
        OidcBehavior::Error { code, description } => {
            return oidc_error(StatusCode::BAD_REQUEST, &code, &description);
        }
        OidcBehavior::Endless { status, bytes } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            return (status, endless_body(bytes)).into_response();
        }
        OidcBehavior::Issue { expires_in, rotate } => (expires_in, rotate),
    };
    if field("grantType") != "refresh_token" {
        return oidc_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only refresh_token",
        );
    }
    if field("clientId") != inner.client_id || field("clientSecret") != inner.client_secret {
        return oidc_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Invalid client credentials",
        );
    }
    if field("refreshToken") != inner.refresh_token {
        return oidc_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Invalid refresh token provided",
        );
    }
    inner.issued += 1;
    let access_token = format!("standin-access-{}", inner.issued);
    let mut answer = json!({
        "accessToken": access_token,
        "expiresIn": expires_in,
        "tokenType": "Bearer",
    });
    if rotate {
        let refresh_token = format!("standin-refresh-{}", inner.issued);
        inner.refresh_token = refresh_token.clone();
        answer["refreshToken"] = json!(refresh_token);
    }
    (StatusCode::OK, Json(answer)).into_response()
}

/// `{"accessToken":"aaaa…` for `bytes` bytes, produced as it is sent.
fn endless_body(bytes: u64) -> Body {
    const CHUNK: usize = 64 * 1024;
    let head = Bytes::from_static(b"{\"accessToken\":\"");
    let chunk = Bytes::from(vec![b'a'; CHUNK]);
    let chunks = bytes
        .saturating_sub(head.len() as u64)
        .div_ceil(CHUNK as u64);
    let chunks = usize::try_from(chunks).unwrap_or(usize::MAX);
    let parts = std::iter::once(head)
        .chain(std::iter::repeat_n(chunk, chunks))
        .map(Ok::<_, std::convert::Infallible>);
    Body::from_stream(futures_util::stream::iter(parts))
}
