//! A stand-in Kiro auth service: `POST /refreshToken` with
//! `{"refreshToken": ...}`, answering `{accessToken, refreshToken,
//! expiresIn, profileArn}` like the real one, rotating the refresh token,
//! refusing one it did not issue, recording every request, and failing on
//! request.
//!
//! It also plays an external identity provider's token endpoint,
//! `POST /oauth2/token` with the form-encoded OAuth refresh grant of the
//! public client [`STANDIN_IDP_CLIENT_ID`], answering `expires_in` as a
//! string as some providers do.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// How the stand-in answers the next refresh requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KiroBehavior {
    /// Issue tokens valid for `expires_in` seconds, rotating the refresh
    /// token when `rotate` is set, naming `profile_arn` (empty: none).
    Issue {
        expires_in: i64,
        rotate: bool,
        profile_arn: String,
    },
    /// Answer with this 5xx status.
    ServerError(u16),
    /// Answer 200 with exactly this JSON.
    Answer(Value),
}

/// One request the stand-in received.
#[derive(Debug, Clone)]
pub struct KiroRequest {
    pub body: Value,
    pub user_agent: Option<String>,
    /// When it arrived.
    pub at: std::time::SystemTime,
}

#[derive(Debug)]
struct Inner {
    refresh_token: String,
    behavior: KiroBehavior,
    issued: u64,
    requests: Vec<KiroRequest>,
}

/// A running stand-in auth service. Dropping it stops the server.
#[derive(Debug)]
pub struct StandinKiro {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    _server: tokio::task::JoinHandle<()>,
}

/// The client id the identity provider endpoint accepts.
pub const STANDIN_IDP_CLIENT_ID: &str = "standin-idp-client";

/// The profile the stand-in names by default.
pub const STANDIN_PROFILE_ARN: &str =
    "arn:aws:codewhisperer:us-east-1:111122223333:profile/STANDINSOCIAL";

impl StandinKiro {
    /// Starts on an ephemeral loopback port, accepting `refresh_token`.
    pub async fn start(refresh_token: &str) -> std::io::Result<Self> {
        let inner = Arc::new(Mutex::new(Inner {
            refresh_token: refresh_token.to_owned(),
            behavior: KiroBehavior::Issue {
                expires_in: 3600,
                rotate: true,
                profile_arn: STANDIN_PROFILE_ARN.to_owned(),
            },
            issued: 0,
            requests: Vec::new(),
        }));
        let app = axum::Router::new()
            .route("/refreshToken", post(refresh_token_handler))
            .route("/oauth2/token", post(idp_token_handler))
            .with_state(inner.clone());
        let (addr, server) = super::serve_on_loopback(app).await?;
        Ok(Self {
            addr,
            inner,
            _server: server,
        })
    }

    /// The identity provider's token endpoint, for an external-IdP token.
    pub fn idp_token_endpoint(&self) -> String {
        format!("http://{}/oauth2/token", self.addr)
    }

    /// The base URL to put in `QBOX_KIRO_AUTH_ENDPOINT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_behavior(&self, behavior: KiroBehavior) {
        self.lock().behavior = behavior;
    }

    /// The refresh token the stand-in currently accepts.
    pub fn current_refresh_token(&self) -> String {
        self.lock().refresh_token.clone()
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<KiroRequest> {
        self.lock().requests.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "message": message }))).into_response()
}

async fn refresh_token_handler(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let mut inner = inner.lock().unwrap_or_else(|p| p.into_inner());
    let Ok(body) = serde_json::from_str::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "body is not json");
    };
    inner.requests.push(KiroRequest {
        body: body.clone(),
        user_agent: headers
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        at: std::time::SystemTime::now(),
    });
    let (expires_in, rotate, profile_arn) = match inner.behavior.clone() {
        KiroBehavior::ServerError(status) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return (status, "internal failure").into_response();
        }
        KiroBehavior::Answer(answer) => return (StatusCode::OK, Json(answer)).into_response(),
        KiroBehavior::Issue {
            expires_in,
            rotate,
            profile_arn,
        } => (expires_in, rotate, profile_arn),
    };
    let presented = body.get("refreshToken").and_then(Value::as_str);
    if presented != Some(inner.refresh_token.as_str()) {
        return error(StatusCode::UNAUTHORIZED, "Invalid refresh token");
    }
    inner.issued += 1;
    let issued = inner.issued;
    // The real service always sends a refresh token back; without
    // rotation it is the one presented.
    let refresh_token = if rotate {
        format!("standin-social-refresh-{issued}")
    } else {
        inner.refresh_token.clone()
    };
    inner.refresh_token = refresh_token.clone();
    let answer = json!({
        "accessToken": format!("standin-social-access-{issued}"),
        "refreshToken": refresh_token,
        "expiresIn": expires_in,
        "profileArn": profile_arn,
    });
    (StatusCode::OK, Json(answer)).into_response()
}

async fn idp_token_handler(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<std::collections::BTreeMap<String, String>>,
) -> Response {
    let mut inner = inner.lock().unwrap_or_else(|p| p.into_inner());
    inner.requests.push(KiroRequest {
        body: json!(form),
        user_agent: headers
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        at: std::time::SystemTime::now(),
    });
    let field = |name: &str| form.get(name).map(String::as_str);
    if field("grant_type") != Some("refresh_token") {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "unsupported_grant_type"})),
        )
            .into_response();
    }
    if field("client_id") != Some(STANDIN_IDP_CLIENT_ID)
        || field("refresh_token") != Some(inner.refresh_token.as_str())
    {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_grant", "error_description": "refresh token revoked"})),
        )
            .into_response();
    }
    inner.issued += 1;
    let issued = inner.issued;
    let refresh_token = format!("standin-idp-refresh-{issued}");
    inner.refresh_token = refresh_token.clone();
    let answer = json!({
        "access_token": format!("standin-idp-access-{issued}"),
        "refresh_token": refresh_token,
        "expires_in": "3600",
        "token_type": "Bearer",
    });
    (StatusCode::OK, Json(answer)).into_response()
}
