//! A string that must never reach a log, an error message or a debug dump.
//!
//! Tokens, refresh tokens and client secrets are wrapped in [`Secret`] as soon
//! as they are parsed. Its `Debug` prints a fixed placeholder and it has no
//! `Display`, so `tracing::debug!(?token)` or `{:?}` on a containing struct
//! cannot leak the value; reading it takes an explicit [`Secret::expose`].

use serde::{Deserialize, Serialize};

/// A secret string (token, refresh token, client secret).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value that must stay secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value itself. Every call site is a place where the value
    /// leaves qbox's control: keep them few and obvious.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when the secret is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let secret = Secret::new("aoa-very-secret");
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
        assert!(!format!("{:?}", Some(&secret)).contains("very-secret"));
    }

    #[test]
    fn serializes_as_a_plain_string() {
        let secret = Secret::new("abc");
        assert_eq!(serde_json::to_string(&secret).unwrap(), "\"abc\"");
        let back: Secret = serde_json::from_str("\"abc\"").unwrap();
        assert_eq!(back.expose(), "abc");
    }
}
