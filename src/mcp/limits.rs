//! The HTTP server's limits: how many connections and MCP sessions it keeps,
//! and how long it waits for a slow or silent client. Each has a safe
//! default and an environment variable; an empty variable counts as unset.

use std::time::Duration;

/// Connections served at once; more are answered 503 and closed.
pub const MAX_CONNECTIONS_ENV: &str = "QBOX_MCP_MAX_CONNECTIONS";
/// Seconds a client may take to send a request's headers (and a kept-alive
/// connection may wait for its next request).
pub const HEADER_TIMEOUT_ENV: &str = "QBOX_MCP_HEADER_TIMEOUT";
/// Seconds a connection may stay open with no byte moving either way.
pub const IDLE_TIMEOUT_ENV: &str = "QBOX_MCP_IDLE_TIMEOUT";
/// MCP sessions kept at once; an `initialize` over the cap gets 503.
pub const MAX_SESSIONS_ENV: &str = "QBOX_MCP_MAX_SESSIONS";
/// Seconds an MCP session may go without a message before it is closed.
pub const SESSION_IDLE_TIMEOUT_ENV: &str = "QBOX_MCP_SESSION_IDLE_TIMEOUT";

/// What the HTTP server allows a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_sessions: usize,
    pub session_idle_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: 64,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            max_sessions: 64,
            session_idle_timeout: Duration::from_secs(300),
        }
    }
}

/// A limit variable that does not hold a usable value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name} must be a whole number from 1 to {max}, got `{value}`")]
pub struct LimitError {
    pub name: &'static str,
    pub value: String,
    pub max: u64,
}

/// Counts and seconds above this are surely typos (a day, a million).
const MAX_SECONDS: u64 = 24 * 60 * 60;
const MAX_COUNT: u64 = 1_000_000;

impl HttpLimits {
    /// The defaults, overridden by the environment.
    pub fn from_env() -> Result<Self, LimitError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// The defaults, overridden by `lookup` (the environment, or a test's map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, LimitError> {
        let defaults = Self::default();
        let count = |name: &'static str, default: usize| -> Result<usize, LimitError> {
            Ok(match parse(name, lookup(name), MAX_COUNT)? {
                Some(value) => usize::try_from(value).unwrap_or(usize::MAX),
                None => default,
            })
        };
        let seconds = |name: &'static str, default: Duration| -> Result<Duration, LimitError> {
            Ok(parse(name, lookup(name), MAX_SECONDS)?
                .map(Duration::from_secs)
                .unwrap_or(default))
        };
        Ok(Self {
            max_connections: count(MAX_CONNECTIONS_ENV, defaults.max_connections)?,
            header_timeout: seconds(HEADER_TIMEOUT_ENV, defaults.header_timeout)?,
            idle_timeout: seconds(IDLE_TIMEOUT_ENV, defaults.idle_timeout)?,
            max_sessions: count(MAX_SESSIONS_ENV, defaults.max_sessions)?,
            session_idle_timeout: seconds(SESSION_IDLE_TIMEOUT_ENV, defaults.session_idle_timeout)?,
        })
    }
}

/// `None` when unset or empty; zero is refused, since no limit of zero
/// leaves a usable server.
fn parse(name: &'static str, value: Option<String>, max: u64) -> Result<Option<u64>, LimitError> {
    let Some(value) = value.filter(|v| !v.trim().is_empty()) else {
        return Ok(None);
    };
    match value.trim().parse::<u64>() {
        Ok(number) if (1..=max).contains(&number) => Ok(Some(number)),
        _ => Err(LimitError { name, value, max }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(pairs: &[(&str, &str)]) -> Result<HttpLimits, LimitError> {
        HttpLimits::from_lookup(|name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn unset_and_empty_variables_keep_the_defaults() {
        assert_eq!(limits(&[]).unwrap(), HttpLimits::default());
        assert_eq!(
            limits(&[(MAX_SESSIONS_ENV, ""), (HEADER_TIMEOUT_ENV, "  ")]).unwrap(),
            HttpLimits::default()
        );
    }

    #[test]
    fn variables_override_each_limit() {
        let set = limits(&[
            (MAX_CONNECTIONS_ENV, "8"),
            (HEADER_TIMEOUT_ENV, "2"),
            (IDLE_TIMEOUT_ENV, "30"),
            (MAX_SESSIONS_ENV, " 4 "),
            (SESSION_IDLE_TIMEOUT_ENV, "1"),
        ])
        .unwrap();
        assert_eq!(set.max_connections, 8);
        assert_eq!(set.header_timeout, Duration::from_secs(2));
        assert_eq!(set.idle_timeout, Duration::from_secs(30));
        assert_eq!(set.max_sessions, 4);
        assert_eq!(set.session_idle_timeout, Duration::from_secs(1));
    }

    #[test]
    fn zero_negative_and_words_are_refused_with_the_variable_named() {
        for bad in ["0", "-1", "ten", "1.5", "99999999"] {
            let err = limits(&[(IDLE_TIMEOUT_ENV, bad)]).unwrap_err();
            assert_eq!(err.name, IDLE_TIMEOUT_ENV);
            assert!(err.to_string().contains(bad), "{err}");
        }
    }
}
