//! A string that must never reach a log, an error message or a debug dump.
//!
//! Tokens, refresh tokens and client secrets are wrapped in [`Secret`] as soon
//! as they are parsed. Its `Debug` prints a fixed placeholder and it has no
//! `Display`, so `tracing::debug!(?token)` or `{:?}` on a containing struct
//! cannot leak the value; reading it takes an explicit [`Secret::expose`].
//!
//! Text qbox did not write itself can still carry a secret: a server that
//! echoes the refresh token in its error description, a path or argument
//! that holds a token. So every secret of [`MIN_REDACTED_LEN`] characters or
//! more is also remembered in a process-wide registry the moment it is
//! created or parsed, and [`redact`] replaces each of them in any text. The
//! error report and the log writer pass everything through it.

use std::sync::Mutex;

use serde::{Deserialize, Deserializer, Serialize};

/// What [`redact`] puts in place of a secret.
pub const REDACTED: &str = "[redacted]";

/// Shorter values are not registered: replacing a short string everywhere
/// would mangle ordinary text, and real tokens and client secrets are
/// hundreds of characters long.
pub const MIN_REDACTED_LEN: usize = 8;

/// Most secrets the registry remembers. A long-running sidecar parses the
/// rotated tokens of every refresh; past this many, the oldest (long since
/// replaced in the store) are forgotten so the registry stays bounded.
const MAX_REGISTERED: usize = 256;

/// The secrets this process has seen, oldest first, at most `capacity`.
#[derive(Debug)]
struct Registry {
    known: Vec<String>,
    capacity: usize,
}

impl Registry {
    const fn new(capacity: usize) -> Self {
        Self {
            known: Vec::new(),
            capacity,
        }
    }

    fn register(&mut self, value: &str) {
        if value.chars().count() < MIN_REDACTED_LEN || self.known.iter().any(|k| k == value) {
            return;
        }
        if self.known.len() >= self.capacity {
            self.known.remove(0);
        }
        self.known.push(value.to_owned());
    }

    fn redact(&self, text: &str) -> String {
        let mut present: Vec<&str> = self
            .known
            .iter()
            .map(String::as_str)
            .filter(|secret| text.contains(secret))
            .collect();
        if present.is_empty() {
            return text.to_owned();
        }
        // Longest first: when one secret contains another, replacing the
        // short one first would leave the rest of the long one in the text.
        present.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
        let mut out = text.to_owned();
        for secret in present {
            out = out.replace(secret, REDACTED);
        }
        out
    }
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry::new(MAX_REGISTERED));

/// A secret string (token, refresh token, client secret).
#[derive(Clone, PartialEq, Eq, Serialize, Default)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value that must stay secret, and registers it so that
    /// [`redact`] removes it from any text from now on.
    pub fn new(value: impl Into<String>) -> Self {
        let value = value.into();
        register(&value);
        Self(value)
    }

    /// Wraps text whose secrets are registered when it is parsed (a store
    /// row's raw JSON, which holds tokens): it never prints, and it stays
    /// out of the registry, where a large blob would crowd out the tokens.
    pub fn containing_parsed(value: impl Into<String>) -> Self {
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

// Parsing goes through `Secret::new`, so a secret read from the store or
// from a token grant is registered before anything can print it.
impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret::new)
    }
}

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    // A panic elsewhere while holding the lock leaves a consistent registry.
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}

/// Remembers `value` as a secret for [`redact`] (values shorter than
/// [`MIN_REDACTED_LEN`] are ignored).
pub fn register(value: &str) {
    registry().register(value);
}

/// `text` with every registered secret replaced by [`REDACTED`].
pub fn redact(text: &str) -> String {
    registry().redact(text)
}

/// Text a remote party wrote (an error description, a redirect location),
/// made safe to show: secrets redacted, then control characters replaced
/// and the length capped by [`crate::http::sanitize_remote`]. Redacting
/// first matters: a cap that cut a secret in half would leave a piece no
/// later redaction recognises.
pub fn redact_remote(text: &str) -> String {
    crate::http::sanitize_remote(&redact(text))
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

    #[test]
    fn created_and_parsed_secrets_are_redacted_everywhere() {
        let _created = Secret::new("unit-created-secret-1");
        let _parsed: Secret = serde_json::from_str("\"unit-parsed-secret-2\"").unwrap();
        let text = "a unit-created-secret-1 b unit-parsed-secret-2 unit-created-secret-1";
        assert_eq!(redact(text), "a [redacted] b [redacted] [redacted]");
    }

    #[test]
    fn short_values_are_not_registered() {
        let _short = Secret::new("1234567");
        assert_eq!(redact("x 1234567 y"), "x 1234567 y");
    }

    #[test]
    fn a_secret_inside_another_leaves_nothing_of_either() {
        register("unit-inner-secret");
        register("prefix-unit-inner-secret-suffix");
        assert_eq!(redact("<prefix-unit-inner-secret-suffix>"), "<[redacted]>");
        assert_eq!(redact("<unit-inner-secret>"), "<[redacted]>");
    }

    #[test]
    fn remote_text_is_redacted_before_it_is_cut() {
        register("unit-remote-secret-value");
        // The cap falls eight characters into the secret.
        let padding = "x".repeat(crate::http::REMOTE_TEXT_MAX_CHARS - 10);
        let shown = redact_remote(&format!("\x1b[{padding}unit-remote-secret-value"));
        assert!(!shown.contains("unit-rem"), "{shown}");
        assert!(!shown.contains('\x1b'), "{shown}");
    }

    #[test]
    fn the_registry_forgets_the_oldest_past_its_capacity() {
        let mut registry = Registry::new(3);
        for n in 0..5 {
            registry.register(&format!("bounded-secret-{n}"));
        }
        assert_eq!(registry.known.len(), 3);
        assert_eq!(registry.redact("bounded-secret-1"), "bounded-secret-1");
        assert_eq!(registry.redact("bounded-secret-4"), REDACTED);
    }
}
