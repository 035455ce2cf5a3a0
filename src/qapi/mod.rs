//! The Amazon Q streaming API (`GenerateAssistantResponse`, awsJson 1.0 with
//! an event-stream response): request and event models, the endpoint rule,
//! the client, and conversations kept across turns.
//!
//! ```no_run
//! use qbox::qapi::{ChatEvent, QClient};
//! use qbox::store::StoreQuery;
//!
//! async fn ask() -> Result<(), qbox::qapi::ApiError> {
//!     // Credentials from the CLI's store (the same search as `qbox doctor`), or from
//!     // QBOX_ACCESS_TOKEN (+ QBOX_PROFILE_ARN) when no store exists. `true`: refresh
//!     // an expired token.
//!     let client = QClient::from_env(StoreQuery::default(), true)?;
//!     let mut turn = client.chat("What is a monad?", None, None).await?;
//!     eprintln!("conversation {}", turn.conversation_id());
//!     while let Some(event) = turn.next_event().await? {
//!         if let ChatEvent::ToolUse(tool) = &event {
//!             eprintln!("tool {} wants {:?}", tool.name, tool.input);
//!         }
//!         if let Some(text) = event.text() {
//!             print!("{text}");
//!         }
//!     }
//!     // The turn is stored: `client.chat("And a functor?", None, Some(id))` continues it.
//!     Ok(())
//! }
//! ```
//!
//! See `docs/streaming-client.md` for the behaviour in detail.

pub mod api_key;
mod chat_turn;
mod client;
pub mod conversation;
mod conversation_store;
pub(crate) mod endpoint;
mod error;
pub mod model;

pub use api_key::{API_KEY_ENV, API_KEY_FILE_ENV, ApiKey};
pub use chat_turn::ChatTurn;
pub use client::{
    BareLogin, ClientOptions, Credentials, DEFAULT_IDLE_TIMEOUT, EVENT_STREAM_CONTENT_TYPE,
    QClient, ResponseStream, TARGET, TOKEN_TYPE_API_KEY, TOKEN_TYPE_EXTERNAL_IDP,
    TOKEN_TYPE_HEADER, store_exists, user_agent,
};
pub use conversation::{Conversation, ConversationError};
pub use conversation_store::{ConversationStore, ConversationSummary, STATE_DIR_ENV};
pub use endpoint::{ChatEndpoint, EndpointReason, Q_ENDPOINT_ENV, check_profile_arn};
pub use error::{ApiError, ErrorKind, MONTHLY_LIMIT_MARKER, normalize_code};
pub use model::{ChatEvent, GenerateAssistantResponseRequest};

/// The native client's documented variables (read in `client.rs` and
/// here; `error.rs` names them in its hints).
///
/// Environment variable with a bare access token, used when no store exists.
pub const ACCESS_TOKEN_ENV: &str = "QBOX_ACCESS_TOKEN";
/// The bare token's Identity Center profile (as `export-token` writes it).
pub const PROFILE_ARN_ENV: &str = "QBOX_PROFILE_ARN";
/// The bare token's region (as `export-token` writes it).
pub const REGION_ENV: &str = "QBOX_REGION";
/// The bare token's expiry, RFC 3339 (as `export-token` writes it).
pub const TOKEN_EXPIRES_AT_ENV: &str = "QBOX_TOKEN_EXPIRES_AT";
/// Seconds of silence from the service before a request gives up.
pub const TIMEOUT_ENV: &str = "QBOX_Q_TIMEOUT";

/// The variable capping an answer's bytes (`qbox chat`, `qbox-sidecar
/// chat`, `q-chat`).
pub const MAX_ANSWER_ENV: &str = "QBOX_Q_MAX_ANSWER_BYTES";
/// The cap when it is unset: 2 MiB, like the agent tool's
/// `AGENT_MAX_RESPONSE_SIZE`.
pub const DEFAULT_MAX_ANSWER_BYTES: usize = 2 << 20;
/// The highest cap one may set: an answer is held in memory, kept in the
/// conversation and written with it, so it must fit well within what a
/// conversation file may hold.
pub const MAX_ANSWER_CEILING: usize = 64 << 20;

/// The answer cap in force: `QBOX_Q_MAX_ANSWER_BYTES`, else the default.
pub fn max_answer_bytes() -> Result<usize, ApiError> {
    let Some(text) = env_value(MAX_ANSWER_ENV) else {
        return Ok(DEFAULT_MAX_ANSWER_BYTES);
    };
    match text.trim().parse::<usize>() {
        Ok(bytes) if (1..=MAX_ANSWER_CEILING).contains(&bytes) => Ok(bytes),
        _ => Err(ApiError::BadSetting {
            name: MAX_ANSWER_ENV,
            value: crate::secret::redact_remote(&text),
            problem: format!("is not a whole number of bytes from 1 to {MAX_ANSWER_CEILING}"),
        }),
    }
}

/// True when `QBOX_ACCESS_TOKEN` gives a bare token (which then serves
/// instead of any store).
pub fn bare_token_given() -> bool {
    env_value(ACCESS_TOKEN_ENV).is_some()
}

/// The value of the environment variable `name`, or `None` when it is
/// unset or empty: an empty value means "unset" for every qbox variable,
/// as it does for Docker and the AWS CLI.
pub(crate) fn env_value(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}
