//! The agent tool's settings from the environment, with the documented
//! defaults; invalid values fall back to the default with a warning.

use std::time::Duration;

/// The tool's name.
pub const TOOL_NAME: &str = "q-developer-agent";
/// Comma-separated list of extra tools to enable.
pub const ENABLE_ENV: &str = "ENABLE_ADDITIONAL_TOOLS";
/// Seconds a call may run.
pub const TIMEOUT_ENV: &str = "AGENT_TIMEOUT";
/// Bytes of output a call may return.
pub const MAX_RESPONSE_ENV: &str = "AGENT_MAX_RESPONSE_SIZE";
/// The CLI binary to run (default: the login's CLI found on `PATH`, see
/// [`super::cli_choice`]).
pub const CLI_ENV: &str = "QBOX_AGENT_CLI";
/// Comma-separated names of extra variables the CLI may see (see
/// [`super::child_env`]).
pub const PASS_ENV_ENV: &str = "QBOX_AGENT_PASS_ENV";
/// The image the sidecar runs in, set by `qbox run --mcp IMAGE`, so that a
/// CLI missing from that image is reported with the image's name.
pub const IMAGE_ENV: &str = "QBOX_AGENT_IMAGE";

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(180);
pub const DEFAULT_MAX_RESPONSE: usize = 2 * 1024 * 1024;

/// Settings of the `q-developer-agent` tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    pub enabled: bool,
    pub timeout: Duration,
    pub max_response: usize,
    /// The binary `QBOX_AGENT_CLI` names; `None` chooses by the login.
    pub cli: Option<String>,
    /// How long a process group gets between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// Longest silence between progress notifications.
    pub keep_alive: Duration,
    /// Extra variables passed to the CLI ([`PASS_ENV_ENV`]); never a
    /// `QBOX_*` one.
    pub pass_env: Vec<String>,
    /// The container image the sidecar runs in, when known ([`IMAGE_ENV`]).
    pub image: Option<String>,
    /// The `PATH` the CLI is looked for in (the sidecar's own, which the
    /// CLI inherits).
    pub search_path: Option<std::ffi::OsString>,
}

impl AgentConfig {
    /// Reads the settings through `var` (the process environment in
    /// production, a map in tests).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let enabled =
            var(ENABLE_ENV).is_some_and(|list| list.split(',').any(|t| t.trim() == TOOL_NAME));
        let timeout = match var(TIMEOUT_ENV) {
            None => DEFAULT_TIMEOUT,
            Some(text) => match text.trim().parse::<u64>() {
                Ok(seconds) if seconds > 0 => Duration::from_secs(seconds),
                _ => {
                    tracing::warn!(
                        "{TIMEOUT_ENV}={text:?} is not a positive number of seconds; using 180"
                    );
                    DEFAULT_TIMEOUT
                }
            },
        };
        let max_response = match var(MAX_RESPONSE_ENV) {
            None => DEFAULT_MAX_RESPONSE,
            Some(text) => match text.trim().parse::<usize>() {
                Ok(bytes) if bytes > 0 => bytes,
                _ => {
                    tracing::warn!(
                        "{MAX_RESPONSE_ENV}={text:?} is not a positive number of bytes; using 2097152"
                    );
                    DEFAULT_MAX_RESPONSE
                }
            },
        };
        let cli = var(CLI_ENV)
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty());
        let pass_env = var(PASS_ENV_ENV)
            .map(|list| pass_env_names(&list))
            .unwrap_or_default();
        let image = var(IMAGE_ENV)
            .map(|i| i.trim().to_owned())
            .filter(|i| !i.is_empty());
        Self {
            enabled,
            timeout,
            max_response,
            cli,
            kill_grace: Duration::from_secs(2),
            keep_alive: Duration::from_secs(20),
            pass_env,
            image,
            search_path: var("PATH").map(Into::into),
        }
    }

    /// Reads the process environment.
    pub fn from_env() -> Self {
        Self::from_vars(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
    }
}

/// The names in a [`PASS_ENV_ENV`] list. qbox's own variables hold its
/// secrets (the MCP bearer token, a bare access token), so they are refused
/// here with a warning rather than passed; so are names no environment can
/// hold.
fn pass_env_names(list: &str) -> Vec<String> {
    let mut names = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if super::child_env::is_qbox_variable(name) {
            tracing::warn!(
                "{PASS_ENV_ENV} names {name}: qbox's own variables are never passed to the CLI"
            );
        } else if name.contains('=') || name.contains('\0') {
            tracing::warn!("{PASS_ENV_ENV} names {name:?}, which is not a variable name; ignored");
        } else if !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> AgentConfig {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        AgentConfig::from_vars(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_and_overrides() {
        let default = config(&[]);
        assert!(!default.enabled);
        assert_eq!(default.timeout, Duration::from_secs(180));
        assert_eq!(default.max_response, 2_097_152);
        assert_eq!(default.cli, None);
        assert_eq!(default.image, None);
        let set = config(&[
            (ENABLE_ENV, "other, q-developer-agent"),
            (TIMEOUT_ENV, "5"),
            (MAX_RESPONSE_ENV, "100"),
            (CLI_ENV, "kiro-cli"),
            (IMAGE_ENV, "my-dev-image:1"),
        ]);
        assert!(set.enabled);
        assert_eq!(set.timeout, Duration::from_secs(5));
        assert_eq!(set.max_response, 100);
        assert_eq!(set.cli.as_deref(), Some("kiro-cli"));
        assert_eq!(set.image.as_deref(), Some("my-dev-image:1"));
    }

    #[test]
    fn invalid_values_fall_back() {
        let bad = config(&[
            (TIMEOUT_ENV, "soon"),
            (MAX_RESPONSE_ENV, "-1"),
            (ENABLE_ENV, "q-developer"),
        ]);
        assert!(!bad.enabled);
        assert_eq!(bad.timeout, DEFAULT_TIMEOUT);
        assert_eq!(bad.max_response, DEFAULT_MAX_RESPONSE);
    }

    #[test]
    fn issue_13_pass_env_never_names_a_qbox_variable() {
        let set = config(&[(
            PASS_ENV_ENV,
            " FAKE_Q_RECORD, QBOX_MCP_TOKEN,,SSH_AUTH_SOCK,A=B,FAKE_Q_RECORD,QBOX_ACCESS_TOKEN ",
        )]);
        assert_eq!(set.pass_env, ["FAKE_Q_RECORD", "SSH_AUTH_SOCK"]);
        assert!(config(&[]).pass_env.is_empty());
    }
}
