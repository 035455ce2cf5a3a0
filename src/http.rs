//! The HTTPS client qbox uses for AWS services: rustls with the ring
//! provider and Mozilla's root certificates compiled in, so the same binary
//! verifies servers on a desktop and in a `FROM scratch` image that has no
//! CA bundle.

use std::sync::Arc;
use std::time::Duration;

/// Builds the shared HTTP client. `timeout` bounds a whole request
/// (connect, send, response headers and body).
pub fn client(timeout: Option<Duration>) -> Result<reqwest::Client, reqwest::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut builder = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .user_agent(concat!("qbox/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        // Every write leaves at once: with Nagle's algorithm, a write that
        // follows an unacknowledged one on a reused connection (a request
        // whose head and body leave apart) waits for the server's delayed
        // ACK, about 40 ms, which a long-lived client (the sidecar, the
        // Python package) would pay per request.
        .tcp_nodelay(true)
        // A redirect would resend the refresh token, client secret or
        // bearer token to an address the user never named: a 3xx answer
        // reaches the caller, which reports it as an error.
        .redirect(reqwest::redirect::Policy::none());
    if let Some(timeout) = timeout {
        builder = builder.timeout(timeout);
    }
    builder.build()
}

/// Most bytes qbox reads from an OIDC answer (tokens, registration).
pub const OIDC_BODY_LIMIT: usize = 1 << 20;
/// Most bytes qbox reads from any error answer before reporting it.
pub const ERROR_BODY_LIMIT: usize = 1 << 20;
/// Most characters of text written by a remote party that qbox shows.
pub const REMOTE_TEXT_MAX_CHARS: usize = 512;

/// Why a body could not be read in full.
#[derive(Debug)]
pub enum BodyError {
    /// The body is longer than the caller's limit; reading stopped there.
    TooLarge { limit: usize },
    /// The connection failed while reading.
    Transport(reqwest::Error),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooLarge { limit } => write!(f, "the answer is larger than {limit} bytes"),
            Self::Transport(err) => f.write_str(&crate::exit::chain(err)),
        }
    }
}

impl std::error::Error for BodyError {}

/// Reads a response body chunk by chunk and stops as soon as it passes
/// `limit`, so a hostile server cannot make qbox hold more than that.
pub async fn read_body_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, BodyError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Text a remote party wrote, made safe to print: control characters
/// (escape sequences, CR, LF) become spaces ([`clean_remote`]), so a server
/// cannot move the cursor or forge a `hint:` line, and the text is cut to
/// [`REMOTE_TEXT_MAX_CHARS`] characters.
pub fn sanitize_remote(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(REMOTE_TEXT_MAX_CHARS * 4));
    for (count, c) in clean_remote(text).chars().enumerate() {
        if count == REMOTE_TEXT_MAX_CHARS {
            out.push('…');
            break;
        }
        out.push(c);
    }
    out
}

/// `text` without terminal controls, at full length: an escape sequence
/// (CSI `ESC [ ... final`, OSC `ESC ] ... BEL` or `ESC \`, any other
/// `ESC X`, the 8-bit CSI) becomes one space, and so does every other
/// control character. Whole sequences go, not only their `ESC`: the rest
/// of one (`[0m`) would otherwise stay in the text, between the pieces of
/// a secret that redaction must still see as one.
pub fn clean_remote(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if !c.is_control() {
            out.push(c);
            continue;
        }
        match (c, chars.peek()) {
            ('\x1b', Some('[')) | ('\u{9b}', _) => {
                if c == '\x1b' {
                    chars.next();
                }
                // Parameters and intermediates, then one final byte.
                while chars.next_if(|c| ('\x20'..='\x3f').contains(c)).is_some() {}
                chars.next_if(|c| ('\x40'..='\x7e').contains(c));
            }
            ('\x1b', Some(']')) => {
                chars.next();
                while let Some(c) = chars.next() {
                    if c == '\x07'
                        || c == '\u{9c}'
                        || (c == '\x1b' && chars.next_if_eq(&'\\').is_some())
                    {
                        break;
                    }
                }
            }
            ('\x1b', Some(next)) if !next.is_control() => {
                chars.next();
            }
            _ => {}
        }
        out.push(' ');
    }
    out
}

/// True for an `https` URL, or plain `http` to the loopback interface
/// (stand-ins, a local proxy): the only addresses qbox sends a token to
/// when the address comes from a file rather than from the user's command
/// line or environment.
pub fn https_or_loopback(text: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(text) else {
        return false;
    };
    let loopback = url.host_str().is_some_and(|host| {
        host == "localhost"
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    });
    url.scheme() == "https" || (url.scheme() == "http" && loopback)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_text_loses_control_characters_and_length() {
        assert_eq!(sanitize_remote("bad\x1b[2J\r\nhint: x"), "bad   hint: x");
        assert_eq!(
            clean_remote("a\x1b[1;31mb\x1b]0;title\x07c\x1b]8;;x\x1b\\d\x1bMe\u{9b}2Jf"),
            "a b c d e f"
        );
        let long = "a".repeat(REMOTE_TEXT_MAX_CHARS + 10);
        let cut = sanitize_remote(&long);
        assert_eq!(cut.chars().count(), REMOTE_TEXT_MAX_CHARS + 1);
        assert!(cut.ends_with('…'));
    }
}
