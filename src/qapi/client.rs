//! A client for `GenerateAssistantResponse`: credentials from the auth
//! store (or a bare token), bounded retries before the stream starts, and
//! events handed out as soon as their frame is complete.

use std::collections::VecDeque;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap};
use time::OffsetDateTime;

use super::error::{ApiError, ErrorKind, normalize_code};
use super::model::{ChatEvent, GenerateAssistantResponseRequest};
use crate::eventstream::{Decoder, FrameError, Message};
use crate::secret::Secret;
use crate::store::{self, OidcClient, StoreError, StoreQuery};

/// Environment variable overriding the API endpoint (tests, proxies).
pub const Q_ENDPOINT_ENV: &str = "QBOX_Q_ENDPOINT";
/// Environment variable with a bare access token, used when no store exists.
pub const ACCESS_TOKEN_ENV: &str = "QBOX_ACCESS_TOKEN";
/// The operation's `X-Amz-Target`.
pub const TARGET: &str = "AmazonCodeWhispererStreamingService.GenerateAssistantResponse";
/// The response content type.
pub const EVENT_STREAM_CONTENT_TYPE: &str = "application/vnd.amazon.eventstream";

/// Where the access token comes from.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// The CLI's store or a snapshot. `refresh` allows refreshing an expired
    /// token (off for read-only snapshots, whose host refreshes them).
    Store { query: StoreQuery, refresh: bool },
    /// A bare token (CI); never refreshed.
    Bare(Secret),
}

/// Tuning of a [`QClient`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Base URL instead of `https://q.{region}.amazonaws.com`.
    pub endpoint: Option<String>,
    /// Attempts before giving up on throttling, 5xx and connection errors.
    pub max_attempts: u32,
    /// First backoff; each retry waits a random time up to twice the last.
    pub base_backoff: Duration,
    /// Sent as `x-amzn-codewhisperer-optout`.
    pub telemetry_optout: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            endpoint: std::env::var(Q_ENDPOINT_ENV)
                .ok()
                .filter(|v| !v.trim().is_empty()),
            max_attempts: 3,
            base_backoff: Duration::from_millis(250),
            telemetry_optout: true,
        }
    }
}

/// The access token and what goes with it for one request.
#[derive(Debug, Clone)]
struct Auth {
    token: Secret,
    profile_arn: Option<String>,
    region: String,
}

/// A client for the Amazon Q streaming API.
#[derive(Debug, Clone)]
pub struct QClient {
    http: reqwest::Client,
    credentials: Credentials,
    options: ClientOptions,
}

impl QClient {
    pub fn new(credentials: Credentials, options: ClientOptions) -> Result<Self, ApiError> {
        let http = crate::http::client(None).map_err(|e| ApiError::Transport {
            url: "(client set-up)".into(),
            detail: e.to_string(),
        })?;
        Ok(Self {
            http,
            credentials,
            options,
        })
    }

    /// Credentials from the store `query` designates, falling back to
    /// `QBOX_ACCESS_TOKEN` when no store exists at all.
    pub fn from_env(query: StoreQuery, refresh: bool) -> Result<Self, ApiError> {
        let bare = std::env::var(ACCESS_TOKEN_ENV)
            .ok()
            .filter(|v| !v.trim().is_empty());
        let credentials = match bare {
            Some(token) if !store_exists(&query) => Credentials::Bare(Secret::new(token.trim())),
            _ => Credentials::Store { query, refresh },
        };
        Self::new(credentials, ClientOptions::default())
    }

    /// Reads the current token; refreshes it if it has expired and refresh
    /// is allowed. The store is read anew every time, so a token someone
    /// else refreshed (the host, for a snapshot) is picked up first.
    async fn auth(&self) -> Result<Auth, ApiError> {
        let (query, refresh) = match &self.credentials {
            Credentials::Bare(token) => {
                return Ok(Auth {
                    token: token.clone(),
                    profile_arn: None,
                    region: store::token::DEFAULT_REGION.into(),
                });
            }
            Credentials::Store { query, refresh } => (query, *refresh),
        };
        let now = OffsetDateTime::now_utc();
        let mut login = query.resolve(now).map_err(|e| ApiError::Auth(e.into()))?;
        let entry = login
            .require_token()
            .map_err(|e| ApiError::Auth(e.into()))?;
        if entry.token.is_expired_at(now) {
            if !refresh {
                return Err(ApiError::NoLogin(format!(
                    "the token in {} has expired and this store is not refreshed here",
                    login.path.display()
                )));
            }
            let oidc = OidcClient::from_env().map_err(|e| ApiError::Auth(e.into()))?;
            login = store::refresh(login, &oidc).await?;
        }
        let entry = login
            .require_token()
            .map_err(|e| ApiError::Auth(e.into()))?;
        Ok(Auth {
            token: entry.token.access_token.clone(),
            profile_arn: login.profile.as_ref().map(|p| p.arn.clone()),
            region: login
                .api_region()
                .unwrap_or(store::token::DEFAULT_REGION)
                .to_owned(),
        })
    }

    fn url(&self, region: &str) -> String {
        match &self.options.endpoint {
            Some(base) => format!("{}/", base.trim_end_matches('/')),
            None => format!("https://q.{region}.amazonaws.com/"),
        }
    }

    /// Sends the request and returns the event stream once the service has
    /// accepted it. Throttling, 5xx and connection failures are retried
    /// with jittered backoff up to `max_attempts`; an expired token is
    /// reloaded (and refreshed if allowed) once. Nothing is retried after
    /// the response has started.
    pub async fn generate(
        &self,
        mut request: GenerateAssistantResponseRequest,
    ) -> Result<ResponseStream, ApiError> {
        let mut auth = self.auth().await?;
        let mut reauthenticated = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            if request.profile_arn.is_none() {
                request.profile_arn = auth.profile_arn.clone();
            }
            let url = self.url(&auth.region);
            tracing::debug!(%url, attempt, "sending GenerateAssistantResponse");
            let sent = self
                .http
                .post(&url)
                .header(CONTENT_TYPE, "application/x-amz-json-1.0")
                .header("x-amz-target", TARGET)
                .header(AUTHORIZATION, format!("Bearer {}", auth.token.expose()))
                .header(
                    "x-amzn-codewhisperer-optout",
                    self.options.telemetry_optout.to_string(),
                )
                .json(&request)
                .send()
                .await;
            let response = match sent {
                Ok(response) => response,
                Err(err) => {
                    let error = ApiError::Transport {
                        url: url.clone(),
                        detail: crate::http::error_chain(&err),
                    };
                    if attempt < self.options.max_attempts && (err.is_connect() || err.is_timeout())
                    {
                        self.backoff(attempt).await;
                        continue;
                    }
                    return Err(error);
                }
            };
            let status = response.status();
            if status.is_success() {
                let content_type = response
                    .headers()
                    .get(CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                if !content_type.starts_with(EVENT_STREAM_CONTENT_TYPE) {
                    return Err(ApiError::NotEventStream { url, content_type });
                }
                return Ok(ResponseStream::new(response));
            }
            let headers = response.headers().clone();
            let body = response.bytes().await.unwrap_or_default();
            let error = http_error(status.as_u16(), &headers, &body);
            match error.kind() {
                Some(kind) if kind.is_retryable() && attempt < self.options.max_attempts => {
                    tracing::debug!(status = status.as_u16(), "retrying after {error}");
                    self.backoff(attempt).await;
                }
                Some(ErrorKind::ExpiredToken) if !reauthenticated => {
                    reauthenticated = true;
                    let fresh = self.auth().await?;
                    if fresh.token == auth.token {
                        return Err(error);
                    }
                    auth = fresh;
                }
                _ => return Err(error),
            }
        }
    }

    /// Waits a random time up to `base * 2^(attempt-1)`, at most 5 s.
    async fn backoff(&self, attempt: u32) {
        let cap = self
            .options
            .base_backoff
            .saturating_mul(1 << attempt.saturating_sub(1).min(10))
            .min(Duration::from_secs(5));
        let wait = cap.mul_f64(jitter());
        tokio::time::sleep(wait).await;
    }
}

/// A number in [0, 1) that differs between calls and processes ("full
/// jitter", so clients throttled together do not retry together).
fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

fn store_exists(query: &StoreQuery) -> bool {
    match &query.db {
        Some(path) => path.exists(),
        None => query.searched_paths().iter().any(|p| p.exists),
    }
}

/// Builds the typed error of a non-2xx answer: the code from
/// `x-amzn-errortype`, else `__type` or `code` in the body.
fn http_error(status: u16, headers: &HeaderMap, body: &[u8]) -> ApiError {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let field = |name: &str| {
        json.as_ref()
            .and_then(|j| j.get(name))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let raw_code = headers
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| field("__type"))
        .or_else(|| field("code"))
        .unwrap_or_else(|| format!("http {status}"));
    let code = normalize_code(&raw_code).to_owned();
    let message = field("message")
        .or_else(|| field("Message"))
        .or_else(|| field("reason"))
        .unwrap_or_else(|| {
            String::from_utf8_lossy(&body[..body.len().min(200)])
                .trim()
                .to_owned()
        });
    let mut kind = ErrorKind::classify(&code, &message);
    if kind == ErrorKind::Other && status >= 500 {
        kind = if status == 503 {
            ErrorKind::ServiceUnavailable
        } else {
            ErrorKind::InternalServer
        };
    }
    ApiError::Http {
        status,
        kind,
        code,
        message,
    }
}

/// Turns one frame into an event, or into the error an exception frame carries.
pub fn event_from_message(message: &Message<'_>) -> Result<ChatEvent, ApiError> {
    let headers = &message.headers;
    match headers.get_str(":message-type") {
        Some("event") => {
            let event_type = headers.get_str(":event-type").unwrap_or("unknown");
            ChatEvent::parse(event_type, message.payload).map_err(|e| ApiError::BadEvent {
                event_type: event_type.to_owned(),
                detail: store::error::describe_json_error(&e),
            })
        }
        Some("exception") | Some("error") => {
            let code = headers
                .get_str(":exception-type")
                .or_else(|| headers.get_str(":error-code"))
                .unwrap_or("UnknownException")
                .to_owned();
            let json: Option<serde_json::Value> = serde_json::from_slice(message.payload).ok();
            let message_text = json
                .as_ref()
                .and_then(|j| j.get("message").or_else(|| j.get("Message")))
                .and_then(|v| v.as_str())
                .map(str::to_owned)
                .or_else(|| headers.get_str(":error-message").map(str::to_owned))
                .unwrap_or_default();
            Err(ApiError::Exception {
                kind: ErrorKind::classify(normalize_code(&code), &message_text),
                code: normalize_code(&code).to_owned(),
                message: message_text,
            })
        }
        _ => Err(ApiError::MissingMessageType),
    }
}

/// The events of one answer, in order, as their frames complete.
#[derive(Debug)]
pub struct ResponseStream {
    response: reqwest::Response,
    decoder: Decoder,
    ready: VecDeque<Result<ChatEvent, ApiError>>,
    finished: bool,
}

impl ResponseStream {
    fn new(response: reqwest::Response) -> Self {
        Self {
            response,
            decoder: Decoder::new(),
            ready: VecDeque::new(),
            finished: false,
        }
    }

    /// The next event; `Ok(None)` at the end of the answer. A cut
    /// connection, a broken frame or an exception frame is an error.
    pub async fn next_event(&mut self) -> Result<Option<ChatEvent>, ApiError> {
        loop {
            if let Some(ready) = self.ready.pop_front() {
                return ready.map(Some);
            }
            if self.finished {
                return Ok(None);
            }
            match self.response.chunk().await {
                Ok(Some(chunk)) => {
                    let ready = &mut self.ready;
                    self.decoder.feed(&chunk, |message| {
                        ready.push_back(event_from_message(&message));
                        Ok::<_, FrameError>(())
                    })?;
                }
                Ok(None) => {
                    self.finished = true;
                    self.decoder.finish()?;
                }
                Err(err) => {
                    self.finished = true;
                    let url = err.url().map(|u| u.to_string()).unwrap_or_default();
                    return Err(ApiError::Transport {
                        url,
                        detail: crate::http::error_chain(&err),
                    });
                }
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        Self::Auth(err.into())
    }
}
