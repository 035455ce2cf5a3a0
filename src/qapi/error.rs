//! Errors of the Amazon Q streaming API, typed by what a caller can do
//! about them, classified as the CLI classifies them
//! (`api_client/error.rs`, `api_client/retry_classifier.rs`).

use super::api_key::{API_KEY_ENV, API_KEY_FILE_ENV, API_KEY_PREFIX, ApiKeyError};
use crate::eventstream::FrameError;
use crate::exit::{self, Diagnose};
use crate::store::AuthError;
use crate::store::Flavor;

use super::conversation::ConversationError;

/// Marks a throttling answer that no retry can help: the login's monthly
/// allowance is used up (the CLI never retries it).
pub const MONTHLY_LIMIT_MARKER: &str = "MONTHLY_REQUEST_COUNT";
/// The service's words for a conversation that no longer fits the model.
const INPUT_TOO_LONG_MARKER: &str = "Input is too long";
/// The service's words for a model without capacity right now.
const MODEL_CAPACITY_MARKER: &str = "INSUFFICIENT_MODEL_CAPACITY";

/// What kind of failure the service reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Throttling,
    /// The monthly request allowance is used up (`MONTHLY_REQUEST_COUNT`).
    MonthlyLimit,
    AccessDenied,
    /// The bearer token has expired or is not valid (any more).
    ExpiredToken,
    Validation,
    /// The conversation no longer fits ("Input is too long.").
    InputTooLong,
    /// The model has no capacity right now (`INSUFFICIENT_MODEL_CAPACITY`).
    ModelOverloaded,
    ServiceQuotaExceeded,
    InternalServer,
    ServiceUnavailable,
    Other,
}

impl ErrorKind {
    /// Classifies an error code (either spelling) and the text that came
    /// with it (the whole error body or exception payload). Markers in the
    /// text win over the code, as they do in the CLI.
    pub fn classify(code: &str, text: &str) -> Self {
        if text.contains(INPUT_TOO_LONG_MARKER) {
            return Self::InputTooLong;
        }
        if text.contains(MODEL_CAPACITY_MARKER) {
            return Self::ModelOverloaded;
        }
        if text.contains(MONTHLY_LIMIT_MARKER) {
            return Self::MonthlyLimit;
        }
        match code {
            "ThrottlingException" | "ThrottlingError" => Self::Throttling,
            "AccessDeniedException" | "AccessDeniedError" => {
                let lower = text.to_ascii_lowercase();
                if lower.contains("expired") || lower.contains("token") && lower.contains("invalid")
                {
                    Self::ExpiredToken
                } else {
                    Self::AccessDenied
                }
            }
            "ExpiredTokenException" | "UnauthorizedException" => Self::ExpiredToken,
            "ValidationException" | "ValidationError" => Self::Validation,
            "ServiceQuotaExceededException" | "ServiceQuotaExceededError" => {
                Self::ServiceQuotaExceeded
            }
            "InternalServerException" | "InternalServerError" => Self::InternalServer,
            "ServiceUnavailableException" | "ServiceUnavailableError" => Self::ServiceUnavailable,
            _ => Self::Other,
        }
    }

    /// Worth another try before the stream starts. The monthly limit never
    /// is: retrying only spends time (and, in the CLI, is forbidden).
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Self::Throttling
                | Self::ModelOverloaded
                | Self::InternalServer
                | Self::ServiceUnavailable
        )
    }
}

/// Normalizes an error code as the SDK does: `aws.protocol#ThrottlingException:http://...`
/// becomes `ThrottlingException` (cut at the first `:`, then after the first `#`).
pub fn normalize_code(raw: &str) -> &str {
    let before_colon = raw.split_once(':').map_or(raw, |(code, _)| code);
    before_colon
        .split_once('#')
        .map_or(before_colon, |(_, code)| code)
        .trim()
}

/// Why a chat request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{}", describe_service(*.kind, &format!("answered http {status} ({code})"), .message))]
    Http {
        status: u16,
        kind: ErrorKind,
        code: String,
        message: String,
    },
    #[error("{}", describe_service(*.kind, &format!("ended the answer with {code}"), .message))]
    Exception {
        kind: ErrorKind,
        code: String,
        message: String,
    },
    #[error("cannot reach amazon q at {url}: {detail}")]
    Transport { url: String, detail: String },
    #[error(
        "amazon q at {url} answered http {status} with a redirect to {location}; qbox does not follow redirects"
    )]
    Redirect {
        url: String,
        status: u16,
        /// The `Location` header, sanitized.
        location: String,
    },
    #[error("amazon q at {url} sent nothing for {seconds} s {waiting_for}")]
    Timeout {
        url: String,
        seconds: u64,
        /// "before answering" or "in the middle of the answer".
        waiting_for: &'static str,
    },
    #[error(
        "amazon q at {url} answered with content type `{content_type}` that is not an event stream: {detail}"
    )]
    NotEventStream {
        url: String,
        content_type: String,
        detail: String,
    },
    #[error("broken event stream from amazon q")]
    Frame(#[from] FrameError),
    #[error("event `{event_type}` from amazon q is not valid json: {detail}")]
    BadEvent { event_type: String, detail: String },
    #[error("frame without `:message-type` from amazon q")]
    MissingMessageType,
    #[error("amazon q's answer is larger than {limit} bytes; qbox stopped reading it")]
    AnswerTooLarge { limit: usize },
    #[error("environment variable {name}=`{value}` {problem}")]
    BadSetting {
        name: &'static str,
        value: String,
        problem: String,
    },
    #[error(transparent)]
    Conversation(#[from] ConversationError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("no amazon q login: {0}")]
    NoLogin(String),
    #[error(transparent)]
    ApiKey(#[from] ApiKeyError),
    #[error("amazon q refused the Kiro API key in {source_name}: {detail}")]
    ApiKeyRejected { source_name: String, detail: String },
    #[error("the token in QBOX_ACCESS_TOKEN expired at {expires_at} (QBOX_TOKEN_EXPIRES_AT)")]
    BareTokenExpired { expires_at: String },
}

fn describe_service(kind: ErrorKind, what: &str, message: &str) -> String {
    let detail = if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    };
    match kind {
        ErrorKind::MonthlyLimit => {
            format!("monthly request limit reached: amazon q {what}{detail}")
        }
        _ => format!("amazon q {what}{detail}"),
    }
}

impl ApiError {
    /// The service's verdict, if the service gave one.
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            Self::Http { kind, .. } | Self::Exception { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

impl Diagnose for ApiError {
    /// 4 when the user must log in again; 2 when what the user gave is
    /// wrong (a setting, a conversation id); else 1.
    fn exit_code(&self) -> u8 {
        match self {
            Self::Auth(e) => e.exit_code(),
            Self::Conversation(e) => e.exit_code(),
            Self::NoLogin(_) | Self::BareTokenExpired { .. } | Self::ApiKeyRejected { .. } => {
                exit::NO_LOGIN
            }
            Self::ApiKey(_) => exit::USAGE,
            Self::BadSetting { .. } => exit::USAGE,
            _ => exit::no_login_or_error(self.kind() == Some(ErrorKind::ExpiredToken)),
        }
    }

    fn hint(&self) -> Option<String> {
        Some(match self {
            Self::Auth(e) => return e.hint(),
            Self::NoLogin(_) => format!(
                "log in with {}, mount a snapshot and set QBOX_DB, or set {API_KEY_ENV} (a Kiro API key)",
                Flavor::any_login_command()
            ),
            Self::ApiKey(_) => format!(
                "give a key made on the Kiro portal (it starts with `{API_KEY_PREFIX}`), or unset {API_KEY_ENV} and {API_KEY_FILE_ENV}"
            ),
            Self::ApiKeyRejected { .. } => "the key may be revoked, expired or mistyped: make a new one on the Kiro portal, or log in with `kiro-cli login` (a stored login wins over the key)".into(),
            Self::BareTokenExpired { .. } => "export a fresh token where the login lives (`qbox export-token --format env`), or mount a snapshot".into(),
            Self::Transport { .. } => "check the network or proxy; QBOX_Q_ENDPOINT overrides the endpoint".into(),
            Self::Redirect { .. } => "a proxy or captive portal may be answering instead of amazon q; point QBOX_Q_ENDPOINT at the service itself".into(),
            Self::Timeout { .. } => "the service or the network stalled: try again; QBOX_Q_TIMEOUT sets the wait in seconds".into(),
            Self::NotEventStream { .. } => "a proxy or captive portal may be answering instead of amazon q".into(),
            Self::AnswerTooLarge { .. } => format!("ask for a shorter answer, or raise {} (bytes)", super::MAX_ANSWER_ENV),
            Self::BadSetting { name, .. } => match *name {
                super::PROFILE_ARN_ENV => "use the value `qbox export-token --format env` prints, or unset it (Builder ID logins have no profile)".into(),
                super::TIMEOUT_ENV => "give a whole number of seconds greater than zero, or unset it for 300".into(),
                super::MAX_ANSWER_ENV => format!("give a whole number of bytes from 1 to {}, or unset it for {}", super::MAX_ANSWER_CEILING, super::DEFAULT_MAX_ANSWER_BYTES),
                _ => format!("fix or unset {name}"),
            },
            Self::Conversation(e) => return e.hint(),
            _ => match self.kind()? {
                ErrorKind::Throttling => "too many requests: wait a little and try again".into(),
                ErrorKind::MonthlyLimit => "the login's monthly amazon q allowance is used up: it renews next month, or upgrade the subscription".into(),
                ErrorKind::ExpiredToken => format!("the login has expired: log in again with {}", Flavor::any_login_command()),
                ErrorKind::AccessDenied => "this login may not use amazon q with this profile".into(),
                ErrorKind::InputTooLong => "the conversation is too long: start a new one".into(),
                ErrorKind::ModelOverloaded => "the model is busy: try again later or pick another model".into(),
                ErrorKind::ServiceQuotaExceeded => "a usage quota is used up for now".into(),
                ErrorKind::InternalServer | ErrorKind::ServiceUnavailable => "the service failed: try again later".into(),
                ErrorKind::Validation | ErrorKind::Other => return None,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_normalize_and_classify_in_both_spellings() {
        assert_eq!(
            normalize_code("com.amazon.coral#ThrottlingException:http://internal"),
            "ThrottlingException"
        );
        assert_eq!(normalize_code("ValidationError"), "ValidationError");
        assert_eq!(
            ErrorKind::classify("ThrottlingError", ""),
            ErrorKind::Throttling
        );
        assert_eq!(
            ErrorKind::classify("ThrottlingException", ""),
            ErrorKind::Throttling
        );
        assert_eq!(
            ErrorKind::classify("ValidationException", "Input is too long."),
            ErrorKind::InputTooLong
        );
        assert_eq!(
            ErrorKind::classify(
                "ThrottlingException",
                r#"{"__type":"ThrottlingException","message":"Maximum Request reached for this month.","reason":"MONTHLY_REQUEST_COUNT"}"#
            ),
            ErrorKind::MonthlyLimit
        );
        assert!(!ErrorKind::MonthlyLimit.is_retryable());
        assert_eq!(
            ErrorKind::classify("InternalServerException", "INSUFFICIENT_MODEL_CAPACITY"),
            ErrorKind::ModelOverloaded
        );
        assert_eq!(
            ErrorKind::classify("ValidationError", "bad"),
            ErrorKind::Validation
        );
        assert_eq!(
            ErrorKind::classify(
                "AccessDeniedError",
                "The bearer token included in the request is expired"
            ),
            ErrorKind::ExpiredToken
        );
        assert_eq!(
            ErrorKind::classify("AccessDeniedException", "not subscribed"),
            ErrorKind::AccessDenied
        );
        assert_eq!(
            ErrorKind::classify("ServiceQuotaExceededError", "quota"),
            ErrorKind::ServiceQuotaExceeded
        );
        assert_eq!(
            ErrorKind::classify("InternalServerError", ""),
            ErrorKind::InternalServer
        );
        assert_eq!(
            ErrorKind::classify("ServiceUnavailableException", ""),
            ErrorKind::ServiceUnavailable
        );
        assert!(ErrorKind::Throttling.is_retryable());
        assert!(!ErrorKind::Validation.is_retryable());
    }
}
