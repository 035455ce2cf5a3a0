//! Errors of the Amazon Q streaming API, typed by what a caller can do
//! about them.

use crate::eventstream::FrameError;
use crate::store::AuthError;

/// What kind of failure the service reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Throttling,
    AccessDenied,
    /// The bearer token has expired or is not valid (any more).
    ExpiredToken,
    Validation,
    /// A validation error saying the conversation no longer fits ("Input is too long.").
    InputTooLong,
    ServiceQuotaExceeded,
    InternalServer,
    ServiceUnavailable,
    Other,
}

impl ErrorKind {
    /// Classifies an error code (either spelling) and its message.
    pub fn classify(code: &str, message: &str) -> Self {
        match code {
            "ThrottlingException" | "ThrottlingError" => Self::Throttling,
            "AccessDeniedException" | "AccessDeniedError" => {
                let lower = message.to_ascii_lowercase();
                if lower.contains("expired") || lower.contains("token") && lower.contains("invalid")
                {
                    Self::ExpiredToken
                } else {
                    Self::AccessDenied
                }
            }
            "ExpiredTokenException" | "UnauthorizedException" => Self::ExpiredToken,
            "ValidationException" | "ValidationError" => {
                if message.contains("Input is too long") {
                    Self::InputTooLong
                } else {
                    Self::Validation
                }
            }
            "ServiceQuotaExceededException" | "ServiceQuotaExceededError" => {
                Self::ServiceQuotaExceeded
            }
            "InternalServerException" | "InternalServerError" => Self::InternalServer,
            "ServiceUnavailableException" | "ServiceUnavailableError" => Self::ServiceUnavailable,
            _ => Self::Other,
        }
    }

    /// Worth another try before the stream starts.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Self::Throttling | Self::InternalServer | Self::ServiceUnavailable
        )
    }
}

/// Normalizes an error code: `aws.protocol#ThrottlingException:http://...`
/// becomes `ThrottlingException`.
pub fn normalize_code(raw: &str) -> &str {
    let after_hash = raw.rsplit_once('#').map_or(raw, |(_, rest)| rest);
    after_hash
        .split_once(':')
        .map_or(after_hash, |(code, _)| code)
        .trim()
}

/// Why a chat request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("amazon q answered http {status} ({code}){}", describe(.message))]
    Http {
        status: u16,
        kind: ErrorKind,
        code: String,
        message: String,
    },
    #[error("amazon q ended the answer with {code}{}", describe(.message))]
    Exception {
        kind: ErrorKind,
        code: String,
        message: String,
    },
    #[error("cannot reach amazon q at {url}: {detail}")]
    Transport { url: String, detail: String },
    #[error("amazon q at {url} answered with content type `{content_type}`, not an event stream")]
    NotEventStream { url: String, content_type: String },
    #[error("broken event stream from amazon q: {0}")]
    Frame(#[from] FrameError),
    #[error("event `{event_type}` from amazon q is not valid json: {detail}")]
    BadEvent { event_type: String, detail: String },
    #[error("frame without `:message-type` from amazon q")]
    MissingMessageType,
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("no amazon q login: {0}")]
    NoLogin(String),
}

fn describe(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
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

    /// True when the user must log in again (exit code 4).
    pub fn is_no_login(&self) -> bool {
        match self {
            Self::Auth(e) => e.is_no_login(),
            Self::NoLogin(_) => true,
            _ => self.kind() == Some(ErrorKind::ExpiredToken),
        }
    }

    pub fn hint(&self) -> Option<String> {
        Some(match self {
            Self::Auth(e) => return e.hint(),
            Self::NoLogin(_) => "log in with `q login` or `kiro-cli login`, mount a snapshot and set QBOX_DB, or set QBOX_ACCESS_TOKEN".into(),
            Self::Transport { .. } => "check the network or proxy; QBOX_Q_ENDPOINT overrides the endpoint".into(),
            Self::NotEventStream { .. } => "a proxy or captive portal may be answering instead of amazon q".into(),
            _ => match self.kind()? {
                ErrorKind::Throttling => "too many requests: wait a little and try again".into(),
                ErrorKind::ExpiredToken => "the login has expired: log in again (`q login`)".into(),
                ErrorKind::AccessDenied => "this login may not use amazon q with this profile".into(),
                ErrorKind::InputTooLong => "the conversation is too long: start a new one".into(),
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
            ErrorKind::classify("ServiceQuotaExceededError", "MONTHLY_REQUEST_COUNT"),
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
