//! A client for `GenerateAssistantResponse`: credentials from the auth
//! store (or a bare token with its profile), the CLI's endpoint rule,
//! bounded retries before the stream starts, an idle timeout, and events
//! handed out as soon as their frame is complete.

use std::collections::VecDeque;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, LOCATION, USER_AGENT};
use time::OffsetDateTime;

use super::api_key::{ApiKey, ApiKeyError, KeySource};
use super::conversation_store::ConversationStore;
use super::endpoint::{self, ChatEndpoint};
use super::error::{ApiError, ErrorKind, normalize_code};
use super::model::{ChatEvent, ChatMessage, EnvState, GenerateAssistantResponseRequest};
use super::{ACCESS_TOKEN_ENV, PROFILE_ARN_ENV, REGION_ENV, TIMEOUT_ENV, TOKEN_EXPIRES_AT_ENV};
use crate::eventstream::{ChunkDecoder, FrameError, Headers};
use crate::exit::Diagnose;
use crate::http::{ERROR_BODY_LIMIT, read_body_limited};
use crate::secret::Secret;
use crate::secret::redact_remote;
use crate::store::settings::{CliSettings, EndpointSetting};
use crate::store::{
    self, Flavor, LoginKeeper, LoginKind, Need, RefreshPolicy, StoreError, StoreQuery,
};

/// The CLI's read timeout (5 minutes), also its stalled-stream grace period.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// The operation's `X-Amz-Target`.
pub const TARGET: &str = "AmazonCodeWhispererStreamingService.GenerateAssistantResponse";
/// The header that tells the service what kind of bearer token it gets
/// (the Kiro CLI's `token_type_interceptor.rs`); absent for Builder ID,
/// IAM Identity Center and social logins.
pub const TOKEN_TYPE_HEADER: &str = "TokenType";
/// [`TOKEN_TYPE_HEADER`] for an external identity provider's token.
pub const TOKEN_TYPE_EXTERNAL_IDP: &str = "EXTERNAL_IDP";
/// [`TOKEN_TYPE_HEADER`] for a Kiro API key.
pub const TOKEN_TYPE_API_KEY: &str = "API_KEY";
/// The response content type the service declares (not required: a body
/// that decodes as an event stream is accepted whatever its type says).
pub const EVENT_STREAM_CONTENT_TYPE: &str = "application/vnd.amazon.eventstream";

/// A token given directly (CI), with what `export-token` writes beside it.
#[derive(Debug, Clone)]
pub struct BareLogin {
    pub token: Secret,
    /// Sent as `profileArn`; its region picks the endpoint.
    pub profile_arn: Option<String>,
    /// The login's region (informational: the endpoint follows the profile).
    pub region: Option<String>,
    /// When set, an expired token is refused before anything is sent.
    pub expires_at: Option<OffsetDateTime>,
}

impl BareLogin {
    /// A token without a profile (a Builder ID login).
    pub fn new(token: impl Into<String>) -> Self {
        Self {
            token: Secret::new(token),
            profile_arn: None,
            region: None,
            expires_at: None,
        }
    }

    /// `QBOX_ACCESS_TOKEN` with `QBOX_PROFILE_ARN`, `QBOX_REGION` and
    /// `QBOX_TOKEN_EXPIRES_AT`; `None` without a token.
    pub fn from_env() -> Result<Option<Self>, ApiError> {
        let Some(token) = super::env_value(ACCESS_TOKEN_ENV) else {
            return Ok(None);
        };
        let bad = |name: &'static str, value: &str, problem: String| ApiError::BadSetting {
            name,
            value: redact_remote(value),
            problem,
        };
        let profile_arn = super::env_value(PROFILE_ARN_ENV).map(|v| v.trim().to_owned());
        if let Some(arn) = &profile_arn {
            endpoint::check_profile_arn(arn).map_err(|p| bad(PROFILE_ARN_ENV, arn, p))?;
        }
        let region = super::env_value(REGION_ENV).map(|v| v.trim().to_owned());
        if let Some(region) = &region
            && !region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(bad(
                REGION_ENV,
                region,
                "is not a region name (like us-east-1)".into(),
            ));
        }
        let expires_at = super::env_value(TOKEN_EXPIRES_AT_ENV)
            .map(|text| {
                OffsetDateTime::parse(text.trim(), &time::format_description::well_known::Rfc3339)
                    .map_err(|_| {
                        bad(
                            TOKEN_EXPIRES_AT_ENV,
                            &text,
                            "is not an RFC 3339 time".into(),
                        )
                    })
            })
            .transpose()?;
        Ok(Some(Self {
            token: Secret::new(token.trim()),
            profile_arn,
            region,
            expires_at,
        }))
    }
}

/// Where the access token comes from.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// The CLI's store or a snapshot. `refresh` allows refreshing an expired
    /// token (off for read-only snapshots, whose host refreshes them).
    Store { query: StoreQuery, refresh: bool },
    /// A bare token (CI); never refreshed.
    Bare(BareLogin),
    /// A Kiro API key (`KIRO_API_KEY`), with no store at all.
    ApiKey(ApiKey),
}

impl Credentials {
    /// A bare token without a profile.
    pub fn bare(token: impl Into<String>) -> Self {
        Self::Bare(BareLogin::new(token))
    }
}

/// Tuning of a [`QClient`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Base URL instead of the endpoint the profile picks (`QBOX_Q_ENDPOINT`).
    pub endpoint: Option<String>,
    /// Attempts before giving up on throttling, 5xx and connection errors.
    pub max_attempts: u32,
    /// First backoff; each retry waits a random time up to twice the last.
    pub base_backoff: Duration,
    /// Sent as `x-amzn-codewhisperer-optout`.
    pub telemetry_optout: bool,
    /// The longest silence, before the answer starts or inside it.
    pub idle_timeout: Duration,
}

impl Default for ClientOptions {
    /// The defaults, without looking at the environment.
    fn default() -> Self {
        Self {
            endpoint: None,
            max_attempts: 3,
            base_backoff: Duration::from_millis(250),
            telemetry_optout: true,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

impl ClientOptions {
    /// The defaults with `QBOX_Q_ENDPOINT` and `QBOX_Q_TIMEOUT` applied.
    pub fn from_env() -> Result<Self, ApiError> {
        let mut options = Self {
            endpoint: endpoint::override_from_env(),
            ..Self::default()
        };
        if let Some(text) = super::env_value(TIMEOUT_ENV) {
            options.idle_timeout = match text.trim().parse::<u64>() {
                Ok(seconds) if seconds > 0 => Duration::from_secs(seconds),
                _ => {
                    return Err(ApiError::BadSetting {
                        name: TIMEOUT_ENV,
                        value: redact_remote(&text),
                        problem: "is not a whole number of seconds greater than zero".into(),
                    });
                }
            };
        }
        Ok(options)
    }
}

/// The access token and what goes with it for one request, as the Kiro
/// CLI sends it for the login's kind.
#[derive(Debug, Clone)]
struct Auth {
    token: Secret,
    /// Sent as `profileArn`.
    profile_arn: Option<String>,
    /// The stored profile, whose region picks the endpoint (a Builder ID
    /// login sends a fixed ARN that picks nothing).
    routing_arn: Option<String>,
    /// The CLI's settings endpoint, when its settings name one.
    settings_endpoint: Option<EndpointSetting>,
    /// The CLI's default model (`chat.defaultModel`), used when the request
    /// names none.
    default_model: Option<String>,
    /// The CLI's content-sharing setting, when the user made one.
    share_content: Option<bool>,
    /// [`TOKEN_TYPE_HEADER`]'s value, when the kind has one.
    token_type: Option<&'static str>,
    /// Where an API key came from, when the token is one.
    key_source: Option<KeySource>,
}

impl Auth {
    fn api_key(key: &ApiKey) -> Self {
        let settings = CliSettings::of(Flavor::Kiro);
        Self {
            token: key.key.clone(),
            profile_arn: None,
            routing_arn: None,
            settings_endpoint: settings.endpoint,
            default_model: settings.default_model,
            share_content: settings.share_content,
            token_type: Some(TOKEN_TYPE_API_KEY),
            key_source: Some(key.source.clone()),
        }
    }

    fn bare(bare: &BareLogin) -> Self {
        Self {
            token: bare.token.clone(),
            profile_arn: bare.profile_arn.clone(),
            routing_arn: bare.profile_arn.clone(),
            settings_endpoint: None,
            default_model: None,
            share_content: None,
            token_type: None,
            key_source: None,
        }
    }

    /// What the CLI of `login`'s flavor sends for it.
    fn of_login(login: &store::Login, settings: CliSettings) -> Result<Self, ApiError> {
        let entry = login
            .require_token()
            .map_err(|e| ApiError::Auth(e.into()))?;
        let kind = login.kind();
        let stored_arn = login.profile.as_ref().map(|p| p.arn.clone());
        let profile_arn = match (&stored_arn, &kind) {
            (None, Some(LoginKind::BuilderId)) => {
                login.flavor.builder_id_profile_arn().map(str::to_owned)
            }
            _ => stored_arn.clone(),
        };
        Ok(Self {
            token: entry.token.access_token.clone(),
            profile_arn,
            routing_arn: stored_arn,
            settings_endpoint: settings.endpoint,
            default_model: settings.default_model,
            share_content: settings.share_content,
            token_type: matches!(kind, Some(LoginKind::ExternalIdp))
                .then_some(TOKEN_TYPE_EXTERNAL_IDP),
            key_source: None,
        })
    }
}

/// A client for the Amazon Q streaming API.
#[derive(Debug, Clone)]
pub struct QClient {
    http: reqwest::Client,
    credentials: Credentials,
    options: ClientOptions,
    conversations: ConversationStore,
    /// Decides when the store's token is refreshed (shared by clones).
    keeper: std::sync::Arc<tokio::sync::Mutex<LoginKeeper>>,
    /// A Kiro API key used when the store has no usable login (a stored
    /// login wins, as in the Kiro CLI); the error if the key given is bad.
    key_fallback: Option<Result<ApiKey, ApiKeyError>>,
}

impl QClient {
    /// A client whose conversations live in memory (see [`Self::with_conversations`]).
    pub fn new(credentials: Credentials, options: ClientOptions) -> Result<Self, ApiError> {
        let http = crate::http::client(None).map_err(|e| ApiError::Transport {
            url: "(client set-up)".into(),
            detail: e.to_string(),
        })?;
        Ok(Self {
            http,
            credentials,
            options,
            conversations: ConversationStore::memory(),
            keeper: std::sync::Arc::new(tokio::sync::Mutex::new(LoginKeeper::new(
                RefreshPolicy::default(),
            ))),
            key_fallback: None,
        })
    }

    /// Uses `key` when the store holds no usable login.
    pub fn with_api_key_fallback(mut self, key: Result<ApiKey, ApiKeyError>) -> Self {
        self.key_fallback = Some(key);
        self
    }

    /// Credentials from the store `query` designates, or, when no store
    /// exists at all, the bare token of `QBOX_ACCESS_TOKEN` (with
    /// `QBOX_PROFILE_ARN`), else a Kiro API key (`KIRO_API_KEY` or
    /// `QBOX_API_KEY_FILE`); with a store, the key still serves whenever
    /// the store has no usable login. Options from the environment;
    /// conversations in `$QBOX_STATE_DIR` or memory.
    pub fn from_env(query: StoreQuery, refresh: bool) -> Result<Self, ApiError> {
        let options = ClientOptions::from_env()?;
        let conversations = ConversationStore::from_env_or_memory();
        if store_exists(&query) {
            let client = Self::new(Credentials::Store { query, refresh }, options)?;
            let client = match ApiKey::from_env().transpose() {
                Some(key) => client.with_api_key_fallback(key),
                None => client,
            };
            return Ok(client.with_conversations(conversations));
        }
        let credentials = match BareLogin::from_env()? {
            Some(bare) => Credentials::Bare(bare),
            None => match ApiKey::from_env()? {
                Some(key) => Credentials::ApiKey(key),
                None => Credentials::Store { query, refresh },
            },
        };
        Ok(Self::new(credentials, options)?.with_conversations(conversations))
    }

    /// Sends requests to `endpoint` instead of the endpoint the rule picks
    /// (what `QBOX_Q_ENDPOINT` does; `None` keeps the current choice).
    pub fn with_endpoint(mut self, endpoint: Option<String>) -> Self {
        if endpoint.is_some() {
            self.options.endpoint = endpoint;
        }
        self
    }

    /// Keeps conversations in `store` instead.
    pub fn with_conversations(mut self, store: ConversationStore) -> Self {
        self.conversations = store;
        self
    }

    /// Where this client keeps conversations.
    pub fn conversations(&self) -> &ConversationStore {
        &self.conversations
    }

    /// Reads the current token; refreshes it if it has expired and refresh
    /// is allowed. The store is read anew every time, so a token someone
    /// else refreshed (the host, for a snapshot) is picked up first.
    async fn auth(&self) -> Result<Auth, ApiError> {
        let (query, refresh) = match &self.credentials {
            Credentials::Bare(bare) => {
                if let Some(expires_at) = bare.expires_at
                    && expires_at <= OffsetDateTime::now_utc()
                {
                    return Err(ApiError::BareTokenExpired {
                        expires_at: crate::timefmt::rfc3339_seconds(expires_at),
                    });
                }
                return Ok(Auth::bare(bare));
            }
            Credentials::ApiKey(key) => return Ok(Auth::api_key(key)),
            Credentials::Store { query, refresh } => (query, *refresh),
        };
        match (self.store_auth(query, refresh).await, &self.key_fallback) {
            (Ok(auth), _) => Ok(auth),
            // As the Kiro CLI: a login that cannot serve gives way to the key.
            (Err(error), Some(key)) if error.exit_code() == crate::exit::NO_LOGIN => {
                tracing::debug!("no usable login in the store ({error}); using the API key");
                match key {
                    Ok(key) => Ok(Auth::api_key(key)),
                    Err(key_error) => Err(ApiError::ApiKey(key_error.clone())),
                }
            }
            (Err(error), _) => Err(error),
        }
    }

    /// The store's login, refreshed if allowed and needed.
    async fn store_auth(&self, query: &StoreQuery, refresh: bool) -> Result<Auth, ApiError> {
        let now = OffsetDateTime::now_utc();
        let query = query.clone();
        let mut login = store::off_reactor(move || query.resolve(now))
            .await
            .map_err(|e| ApiError::Auth(e.into()))?;
        let entry = login
            .require_token()
            .map_err(|e| ApiError::Auth(e.into()))?;
        if refresh {
            // One keeper per client: concurrent requests wait for one
            // refresh instead of each starting their own.
            let mut keeper = self.keeper.lock().await;
            login = keeper.check(login, Need::Now).await?.login;
        } else if entry.token.is_expired_at(now) {
            if login.access_only {
                // Its host keeper, not this process, refreshes it.
                return Err(ApiError::Auth(
                    login
                        .unrefreshable(entry.token.expires_at, String::new())
                        .into(),
                ));
            }
            return Err(ApiError::NoLogin(format!(
                "the token in {} has expired and this store is not refreshed here",
                login.path.display()
            )));
        }
        let flavor = login.flavor;
        let settings = store::off_reactor(move || CliSettings::of(flavor)).await;
        Auth::of_login(&login, settings)
    }

    /// Sends the request and returns the event stream once the service has
    /// accepted it. Throttling, 5xx, connection failures and silence before
    /// the answer are retried with jittered backoff up to `max_attempts`;
    /// the monthly limit and redirects never are; an expired token is
    /// reloaded (and refreshed if allowed) once. Nothing is retried after
    /// the response has started.
    pub async fn generate(
        &self,
        mut request: GenerateAssistantResponseRequest,
    ) -> Result<ResponseStream, ApiError> {
        let mut auth = self.auth().await?;
        let mut reauthenticated = false;
        let mut attempt = 0;
        // A profile the caller chose is sent and picks the endpoint.
        let chosen_arn = request.profile_arn.take();
        describe_environment(&mut request);
        // One id for the operation, whatever its attempts (the SDKs').
        let invocation_id = super::conversation::new_uuid();
        loop {
            attempt += 1;
            if let ChatMessage::UserInputMessage(message) =
                &mut request.conversation_state.current_message
                && message.model_id.is_none()
            {
                message.model_id = auth.default_model.clone();
            }
            request.profile_arn = chosen_arn.clone().or_else(|| auth.profile_arn.clone());
            let routing_arn = chosen_arn.clone().or_else(|| auth.routing_arn.clone());
            let endpoint = ChatEndpoint::resolve(
                self.options.endpoint.as_deref(),
                auth.settings_endpoint.as_ref(),
                routing_arn.as_deref(),
            );
            let url = endpoint.request_url();
            tracing::debug!(%url, reason = endpoint.reason.as_str(), attempt, "sending GenerateAssistantResponse");
            let mut post = self
                .http
                .post(&url)
                .header("amz-sdk-invocation-id", &invocation_id)
                .header(
                    "amz-sdk-request",
                    format!("attempt={attempt}; max={}", self.options.max_attempts),
                );
            if let Some(token_type) = auth.token_type {
                post = post.header(TOKEN_TYPE_HEADER, token_type);
            }
            // The user's own setting wins; without one, qbox keeps the
            // content out (the CLI would share it).
            let optout = auth
                .share_content
                .map_or(self.options.telemetry_optout, |share| !share);
            let sent = tokio::time::timeout(
                self.options.idle_timeout,
                post.header(CONTENT_TYPE, "application/x-amz-json-1.0")
                    .header("x-amz-target", TARGET)
                    .header(AUTHORIZATION, format!("Bearer {}", auth.token.expose()))
                    .header(USER_AGENT, user_agent())
                    .header("x-amz-user-agent", user_agent())
                    .header("x-amzn-codewhisperer-optout", optout.to_string())
                    .json(&request)
                    .send(),
            )
            .await;
            let response = match sent {
                Ok(Ok(response)) => response,
                Ok(Err(err)) => {
                    let error = ApiError::Transport {
                        url: url.clone(),
                        detail: crate::exit::chain(&err),
                    };
                    if attempt < self.options.max_attempts && (err.is_connect() || err.is_timeout())
                    {
                        self.backoff(attempt).await;
                        continue;
                    }
                    return Err(error);
                }
                Err(_elapsed) => {
                    if attempt < self.options.max_attempts {
                        self.backoff(attempt).await;
                        continue;
                    }
                    return Err(ApiError::Timeout {
                        url,
                        seconds: self.options.idle_timeout.as_secs(),
                        waiting_for: "before answering",
                    });
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
                return Ok(ResponseStream::new(
                    response,
                    url,
                    content_type,
                    self.options.idle_timeout,
                ));
            }
            if status.is_redirection() {
                // The client never follows redirects: one would resend the
                // bearer token to an address the user never named.
                let location = response
                    .headers()
                    .get(LOCATION)
                    .map(|v| redact_remote(&String::from_utf8_lossy(v.as_bytes())))
                    .unwrap_or_else(|| "(no location)".into());
                return Err(ApiError::Redirect {
                    url,
                    status: status.as_u16(),
                    location,
                });
            }
            let headers = response.headers().clone();
            let body = read_body_limited(response, ERROR_BODY_LIMIT)
                .await
                .unwrap_or_else(|e| format!("(the error body could not be read: {e})").into());
            let error = http_error(status.as_u16(), &headers, &body);
            if let Some(source) = &auth.key_source
                && (status == reqwest::StatusCode::FORBIDDEN
                    || status == reqwest::StatusCode::UNAUTHORIZED)
            {
                return Err(ApiError::ApiKeyRejected {
                    source_name: source.describe(),
                    detail: error.to_string(),
                });
            }
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

/// The longest working directory sent, as the CLI cuts it.
const MAX_WORKING_DIRECTORY_LEN: usize = 256;

/// The environment the CLI describes with every message (`envState`): the
/// operating system and the working directory, cut to 256 bytes at a
/// character boundary. A request that carries its own is left alone.
fn describe_environment(request: &mut GenerateAssistantResponseRequest) {
    let ChatMessage::UserInputMessage(message) = &mut request.conversation_state.current_message
    else {
        return;
    };
    let context = message
        .user_input_message_context
        .get_or_insert_with(Default::default);
    if context.env_state.is_some() {
        return;
    }
    let cwd = std::env::current_dir().ok().map(|dir| {
        let text = dir.to_string_lossy().into_owned();
        let mut end = text.len().min(MAX_WORKING_DIRECTORY_LEN);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text[..end].to_owned()
    });
    context.env_state = Some(EnvState {
        operating_system: Some(std::env::consts::OS.to_owned()),
        current_working_directory: cwd,
    });
}

/// The user agent, in the AWS SDKs' style: product, then `os/` and `lang/`.
pub fn user_agent() -> String {
    format!(
        "qbox/{} os/{} lang/rust",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS
    )
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

/// True when the store `query` designates is there (then a bare token is ignored).
pub fn store_exists(query: &StoreQuery) -> bool {
    match &query.db {
        Some(path) => path.exists(),
        None => query.searched_paths().iter().any(|p| p.exists),
    }
}

/// The first string field of `json` among `names`.
fn first_field(json: Option<&serde_json::Value>, names: &[&str]) -> Option<String> {
    let json = json?;
    names
        .iter()
        .find_map(|name| json.get(*name)?.as_str())
        .map(str::to_owned)
}

/// Message keys, in the order the CLI's SDK reads them.
const MESSAGE_KEYS: [&str; 3] = ["message", "Message", "errorMessage"];

/// Builds the typed error of a non-2xx answer: the code from
/// `x-amzn-errortype`, else the body's `code`, else `__type`.
fn http_error(status: u16, headers: &HeaderMap, body: &[u8]) -> ApiError {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let text = String::from_utf8_lossy(body);
    let raw_code = headers
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| first_field(json.as_ref(), &["code", "__type"]))
        .unwrap_or_else(|| format!("http {status}"));
    let code = redact_remote(normalize_code(&raw_code));
    let message = redact_remote(
        first_field(json.as_ref(), &MESSAGE_KEYS)
            .as_deref()
            .unwrap_or(text.trim()),
    );
    let mut kind = ErrorKind::classify(&code, &text);
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

/// Turns one frame (its headers and whole payload) into an event, or into
/// the error an exception frame carries.
fn event_from(headers: &Headers<'_>, payload: &[u8]) -> Result<ChatEvent, ApiError> {
    match headers.get_str(":message-type") {
        Some("event") => {
            let event_type = headers.get_str(":event-type").unwrap_or("unknown");
            ChatEvent::parse(event_type, payload).map_err(|e| ApiError::BadEvent {
                event_type: event_type.to_owned(),
                detail: store::error::describe_json_error(&e),
            })
        }
        Some("exception") | Some("error") => {
            // The payload says what happened (`code`, else `__type`, as the
            // SDK reads error bodies); the `:exception-type` header
            // only names the modelled member ("error" for an internal
            // failure), so it is the fallback.
            let json: Option<serde_json::Value> = serde_json::from_slice(payload).ok();
            let raw_code = first_field(json.as_ref(), &["code", "__type"])
                .or_else(|| headers.get_str(":exception-type").map(str::to_owned))
                .or_else(|| headers.get_str(":error-code").map(str::to_owned))
                .unwrap_or_else(|| "UnknownException".into());
            let code = redact_remote(normalize_code(&raw_code));
            let message_text = redact_remote(
                &first_field(json.as_ref(), &MESSAGE_KEYS)
                    .or_else(|| headers.get_str(":error-message").map(str::to_owned))
                    .unwrap_or_default(),
            );
            let payload_text = String::from_utf8_lossy(payload);
            let mut kind = ErrorKind::classify(&code, &payload_text);
            if kind == ErrorKind::Other && code == "error" {
                kind = ErrorKind::InternalServer;
            }
            Err(ApiError::Exception {
                kind,
                code,
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
    decoder: ChunkDecoder,
    ready: VecDeque<Result<ChatEvent, ApiError>>,
    finished: bool,
    url: String,
    content_type: String,
    idle_timeout: Duration,
    /// Whether any frame decoded: before the first, a body that does not
    /// decode is reported as "not an event stream".
    decoded_any: bool,
}

impl ResponseStream {
    fn new(
        response: reqwest::Response,
        url: String,
        content_type: String,
        idle_timeout: Duration,
    ) -> Self {
        Self {
            response,
            decoder: ChunkDecoder::new(),
            ready: VecDeque::new(),
            finished: false,
            url,
            content_type,
            idle_timeout,
            decoded_any: false,
        }
    }

    /// The next event; `Ok(None)` at the end of the answer. A cut
    /// connection, a broken frame, an exception frame or a silence longer
    /// than the idle timeout is an error.
    pub async fn next_event(&mut self) -> Result<Option<ChatEvent>, ApiError> {
        loop {
            if let Some(ready) = self.ready.pop_front() {
                return ready.map(Some);
            }
            if self.finished {
                return Ok(None);
            }
            let chunk = tokio::time::timeout(self.idle_timeout, self.response.chunk()).await;
            match chunk {
                Err(_elapsed) => {
                    self.finished = true;
                    return Err(ApiError::Timeout {
                        url: self.url.clone(),
                        seconds: self.idle_timeout.as_secs(),
                        waiting_for: "in the middle of the answer",
                    });
                }
                Ok(Ok(Some(chunk))) => {
                    let ready = &mut self.ready;
                    let decoded_any = &mut self.decoded_any;
                    // The body's own chunks: a frame that spans them is
                    // hashed where it lies, and only an event's payload
                    // that was cut is copied together to be parsed.
                    let fed = self.decoder.feed(&chunk, |message| {
                        *decoded_any = true;
                        let payload = message.payload.contiguous();
                        ready.push_back(event_from(&message.headers, &payload));
                        Ok::<_, FrameError>(())
                    });
                    if let Err(err) = fed {
                        self.finished = true;
                        return Err(self.frame_error(err));
                    }
                }
                Ok(Ok(None)) => {
                    self.finished = true;
                    if let Err(err) = self.decoder.finish() {
                        return Err(self.frame_error(err));
                    }
                }
                Ok(Err(err)) => {
                    self.finished = true;
                    return Err(ApiError::Transport {
                        url: self.url.clone(),
                        detail: crate::exit::chain(&err),
                    });
                }
            }
        }
    }

    /// A framing error; before any frame, with a content type that does
    /// not claim an event stream, the body was never one.
    fn frame_error(&self, err: FrameError) -> ApiError {
        if !self.decoded_any && !self.content_type.starts_with(EVENT_STREAM_CONTENT_TYPE) {
            return ApiError::NotEventStream {
                url: self.url.clone(),
                content_type: redact_remote(&self.content_type),
                detail: err.to_string(),
            };
        }
        ApiError::Frame(err)
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        Self::Auth(err.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::Diagnose;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn http_error_code_comes_from_header_then_code_then_type() {
        let body = br#"{"__type":"a#ValidationException","code":"ThrottlingException","errorMessage":"slow"}"#;
        let from_header = http_error(
            400,
            &headers(&[("x-amzn-errortype", "AccessDeniedException:x")]),
            body,
        );
        assert!(
            matches!(&from_header, ApiError::Http { code, .. } if code == "AccessDeniedException")
        );
        let from_code = http_error(400, &HeaderMap::new(), body);
        assert!(
            matches!(&from_code, ApiError::Http { code, message, kind, .. } if code == "ThrottlingException" && message == "slow" && *kind == ErrorKind::Throttling)
        );
        let from_type = http_error(
            400,
            &HeaderMap::new(),
            br#"{"__type":"x#ValidationException","Message":"bad"}"#,
        );
        assert!(
            matches!(&from_type, ApiError::Http { code, message, .. } if code == "ValidationException" && message == "bad")
        );
    }

    #[test]
    fn monthly_limit_is_its_own_kind_with_its_own_words() {
        let body = br#"{"__type":"ThrottlingException","message":"Maximum Request reached for this month.","reason":"MONTHLY_REQUEST_COUNT"}"#;
        let error = http_error(400, &HeaderMap::new(), body);
        assert_eq!(error.kind(), Some(ErrorKind::MonthlyLimit));
        assert!(
            error
                .to_string()
                .starts_with("monthly request limit reached"),
            "{error}"
        );
        assert!(error.hint().unwrap().contains("monthly"));
    }

    #[test]
    fn remote_text_in_errors_is_sanitized() {
        let error = http_error(
            400,
            &HeaderMap::new(),
            b"{\"message\":\"bad\\u001b[2J\\nhint: fake\"}",
        );
        let text = error.to_string();
        assert!(!text.contains('\n') && !text.contains('\u{1b}'), "{text}");
    }

    #[test]
    fn user_agent_names_qbox_os_and_language() {
        let agent = user_agent();
        assert!(
            agent.starts_with(concat!("qbox/", env!("CARGO_PKG_VERSION"), " os/")),
            "{agent}"
        );
        assert!(agent.ends_with(" lang/rust"), "{agent}");
    }
}
