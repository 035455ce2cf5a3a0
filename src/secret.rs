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

/// A secret as the registry keeps it: the value, and its normalised
/// spelling (see [`normalise`]) that [`Registry::redact`] looks for.
#[derive(Debug)]
struct Known {
    value: String,
    normalised: Vec<u8>,
    /// A searcher for `normalised`, built once at registration.
    finder: memchr::memmem::Finder<'static>,
}

/// The secrets this process has seen, oldest first, at most `capacity`.
#[derive(Debug)]
struct Registry {
    known: Vec<Known>,
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
        if value.chars().count() < MIN_REDACTED_LEN || self.known.iter().any(|k| k.value == value) {
            return;
        }
        if self.known.len() >= self.capacity {
            self.known.remove(0);
        }
        let normalised = normalise(value).bytes;
        let finder = memchr::memmem::Finder::new(&normalised).into_owned();
        self.known.push(Known {
            value: value.to_owned(),
            normalised,
            finder,
        });
    }

    /// `text` with every known secret replaced, in whatever spelling it
    /// appears: exactly, with whitespace or control characters between its
    /// characters (`a o r R E F`, a tab), or percent-encoded in part or
    /// whole (`%61or`, `fixtur%09e`). The text is normalised once; each
    /// secret's normalised form is looked for in it with a SIMD substring
    /// search, and each match is mapped back to the span of the original
    /// text it came from. The cost is a few passes over the text per known
    /// secret: it runs on error and log lines, never on answers.
    fn redact(&self, text: &str) -> String {
        if self.known.is_empty() {
            return text.to_owned();
        }
        let view = normalise(text);
        let mut spans: Vec<(usize, usize)> = Vec::new();
        for known in &self.known {
            if known.normalised.len() >= MIN_REDACTED_LEN {
                let length = known.normalised.len();
                for at in known.finder.find_iter(&view.bytes) {
                    spans.push((view.origin[at].0, view.origin[at + length - 1].1));
                }
            } else {
                // A secret that is mostly escapes or spaces: its exact
                // spelling only, as anything shorter would mangle text.
                spans.extend(
                    text.match_indices(known.value.as_str())
                        .map(|(at, found)| (at, at + found.len())),
                );
            }
        }
        if spans.is_empty() {
            return text.to_owned();
        }
        // Overlapping or touching matches (one secret inside another, a
        // secret twice in a row) become one `[redacted]`.
        spans.sort_unstable();
        let mut out = String::with_capacity(text.len());
        let mut copied = 0;
        let mut current: Option<(usize, usize)> = None;
        for (start, end) in spans {
            match &mut current {
                Some((_, open_end)) if start <= *open_end => *open_end = (*open_end).max(end),
                _ => {
                    if let Some((open_start, open_end)) = current.take() {
                        out.push_str(&text[copied..open_start]);
                        out.push_str(REDACTED);
                        copied = open_end;
                    }
                    current = Some((start, end));
                }
            }
        }
        if let Some((open_start, open_end)) = current {
            out.push_str(&text[copied..open_start]);
            out.push_str(REDACTED);
            copied = open_end;
        }
        out.push_str(&text[copied..]);
        out
    }
}

/// Text reduced to what a secret is made of, with where each byte came
/// from: `origin[i]` is the byte span of `text` that produced `bytes[i]`
/// (always on character boundaries).
#[derive(Debug)]
struct Normalised {
    bytes: Vec<u8>,
    origin: Vec<(usize, usize)>,
}

/// Rounds of percent-decoding: a token escaped twice (`%2541`) is still
/// found; more layers than this are not an accident.
const DECODE_ROUNDS: usize = 3;

/// Drops whitespace, control and invisible formatting characters, then
/// percent-decodes (`%XX`), and repeats while a round changes something
/// (a decoded `%09` is a control character again, `%25` starts an escape).
fn normalise(text: &str) -> Normalised {
    let mut view = Normalised {
        bytes: Vec::with_capacity(text.len()),
        origin: Vec::with_capacity(text.len()),
    };
    for (at, c) in text.char_indices() {
        if ignorable(c) {
            continue;
        }
        let end = at + c.len_utf8();
        let mut utf8 = [0; 4];
        for byte in c.encode_utf8(&mut utf8).bytes() {
            view.bytes.push(byte);
            view.origin.push((at, end));
        }
    }
    for _ in 0..DECODE_ROUNDS {
        if !view.bytes.contains(&b'%') {
            break;
        }
        let mut next = Normalised {
            bytes: Vec::with_capacity(view.bytes.len()),
            origin: Vec::with_capacity(view.bytes.len()),
        };
        let mut changed = false;
        let mut i = 0;
        while i < view.bytes.len() {
            let escape = (view.bytes[i] == b'%')
                .then(|| view.bytes.get(i + 1..i + 3))
                .flatten()
                .and_then(|hex| Some(hex_value(hex[0])? << 4 | hex_value(hex[1])?));
            match escape {
                Some(byte) => {
                    changed = true;
                    // A decoded space or control character is dropped as
                    // one in the text would be.
                    if !(byte.is_ascii_whitespace() || byte.is_ascii_control()) {
                        next.bytes.push(byte);
                        next.origin.push((view.origin[i].0, view.origin[i + 2].1));
                    }
                    i += 3;
                }
                None => {
                    next.bytes.push(view.bytes[i]);
                    next.origin.push(view.origin[i]);
                    i += 1;
                }
            }
        }
        view = next;
        if !changed {
            break;
        }
    }
    view
}

/// Characters that can sit between a secret's characters without a reader
/// noticing: whitespace, control characters, zero-width ones.
fn ignorable(c: char) -> bool {
    c.is_whitespace()
        || c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{2060}'..='\u{2064}' | '\u{feff}' | '\u{ad}')
}

fn hex_value(byte: u8) -> Option<u8> {
    (byte as char).to_digit(16).map(|d| d as u8)
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
/// made safe to show: control characters replaced first
/// ([`crate::http::clean_remote`]), then secrets redacted in every spelling
/// [`redact`] knows, then the length capped
/// ([`crate::http::sanitize_remote`]). Redacting before the cap matters: a
/// cap that cut a secret in half would leave a piece no later redaction
/// recognises.
pub fn redact_remote(text: &str) -> String {
    crate::http::sanitize_remote(&redact(&crate::http::clean_remote(text)))
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
    fn spaced_controlled_and_percent_encoded_spellings_are_redacted() {
        register("aorREFRESHunit-normalised");
        register("fixture-client-secret-unit");
        register("aoa-access-unit-encoded");
        for text in [
            "a o r R E F R E S H u n i t - n o r m a l i s e d",
            "aorREFRESH\tunit-\u{200b}normalised",
            "aorREFRESH\x1b[0munit-normalised",
            "fixtur%09e-client-secret-unit",
            "fixtur%2509e-client-secret-unit",
            "%61%6F%61%2Daccess-unit-encoded",
            "aoa-access-unit%2dencoded",
        ] {
            let shown = redact_remote(&format!("said: {text} (end)"));
            assert!(shown.starts_with("said: "), "{text:?} -> {shown}");
            assert!(shown.contains(REDACTED), "{text:?} -> {shown}");
            for piece in ["REFRESH", "E F R", "client-secret", "access-unit", "%61%6F"] {
                assert!(!shown.contains(piece), "{text:?} -> {shown}");
            }
            assert!(shown.ends_with(" (end)"), "{text:?} -> {shown}");
        }
        assert_eq!(
            redact("x aoa-access-unit-encoded y"),
            "x [redacted] y",
            "the exact spelling, with nothing around it touched"
        );
        assert_eq!(
            redact("no secret here: 100% sure"),
            "no secret here: 100% sure"
        );
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
