//! The environment of the CLI's process: built from an allow-list, never
//! inherited whole.
//!
//! The sidecar's own environment holds secrets (`QBOX_MCP_TOKEN`, the bearer
//! token of the HTTP transport; `QBOX_ACCESS_TOKEN`, a bare Amazon Q token)
//! and whatever else the operator's shell exported. The CLI is a program a
//! model drives, and with `yolo-mode` it runs commands that can print their
//! environment, so it gets only what it needs to run, to find its settings
//! and to reach the network, plus what the operator names in
//! `QBOX_AGENT_PASS_ENV`. No `QBOX_*` variable ever reaches it.
//!
//! **Invariant:** [`is_qbox_variable`] names are never passed, whatever the
//! lists below or `QBOX_AGENT_PASS_ENV` say.

use std::ffi::OsString;

/// Variables passed when set: what a process needs to run (search path,
/// home, user, shell, terminal, temporary directory, time zone), the proxy
/// settings in both spellings that tools read, certificate bundles for
/// proxies that intercept TLS, the editor and CI markers the CLI reads, and
/// the AWS SDK settings that choose a region, a profile and endpoints.
///
/// AWS credentials given as variables (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, ...) are left out on
/// purpose: `q chat` logs in with its own store, and keys in the environment
/// would be handed to every command the model runs. A profile
/// (`AWS_PROFILE`) still works through the files it names; an operator who
/// wants the keys themselves passed names them in `QBOX_AGENT_PASS_ENV`.
const PASSED_NAMES: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "TERM",
    "TMPDIR",
    "TZ",
    "LANG",
    "LANGUAGE",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "EDITOR",
    "VISUAL",
    "CI",
    "CODESPACES",
    "QTERM_SESSION_ID",
    "PROCESS_LAUNCHED_BY_Q",
    "PROCESS_LAUNCHED_BY_KIRO",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CA_BUNDLE",
    "AWS_ENDPOINT_URL",
    "AWS_USE_FIPS_ENDPOINT",
    "AWS_USE_DUALSTACK_ENDPOINT",
    "AWS_MAX_ATTEMPTS",
    "AWS_RETRY_MODE",
    "AWS_EC2_METADATA_DISABLED",
    "AWS_STS_REGIONAL_ENDPOINTS",
    "AWS_SDK_LOAD_CONFIG",
];

/// Prefixes of passed variables: locale categories, the XDG base
/// directories (where the CLI keeps its store and settings), and the CLIs'
/// own settings (`Q_LOG_LEVEL`, `KIRO_API_KEY`, `AMAZON_Q_SIGV4`, ...).
const PASSED_PREFIXES: &[&str] = &["LC_", "XDG_", "Q_", "KIRO_", "AMAZON_Q_"];

/// True for qbox's own variables, which hold its secrets and settings.
pub fn is_qbox_variable(name: &str) -> bool {
    name.starts_with("QBOX_")
}

/// Whether a variable of the sidecar's environment reaches the CLI.
fn passes(name: &str, pass_env: &[String]) -> bool {
    if is_qbox_variable(name) {
        return false;
    }
    PASSED_NAMES.contains(&name)
        || PASSED_PREFIXES.iter().any(|p| name.starts_with(p))
        || pass_env.iter().any(|n| n == name)
}

/// The variables the CLI starts with (before the runner adds its own).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChildEnv {
    vars: Vec<(OsString, OsString)>,
}

impl ChildEnv {
    /// Chooses from `parent` (the sidecar's environment) what the CLI gets;
    /// `pass_env` holds the extra names the operator allowed.
    pub fn from_vars(
        parent: impl IntoIterator<Item = (OsString, OsString)>,
        pass_env: &[String],
    ) -> Self {
        let vars = parent
            .into_iter()
            .filter(|(name, _)| name.to_str().is_some_and(|name| passes(name, pass_env)))
            .collect();
        Self { vars }
    }

    /// Chooses from this process's environment.
    pub fn from_process(pass_env: &[String]) -> Self {
        Self::from_vars(std::env::vars_os(), pass_env)
    }

    /// The value of `name`, if it is passed.
    pub fn get(&self, name: &str) -> Option<&std::ffi::OsStr> {
        self.vars
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_os_str())
    }

    /// Replaces `command`'s whole environment with these variables.
    pub fn apply(&self, command: &mut tokio::process::Command) {
        command
            .env_clear()
            .envs(self.vars.iter().map(|(k, v)| (k, v)));
    }

    /// The names chosen, in the parent's order.
    #[cfg(test)]
    fn names(&self) -> impl Iterator<Item = &str> {
        self.vars.iter().filter_map(|(name, _)| name.to_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chosen(parent: &[(&str, &str)], pass_env: &[&str]) -> Vec<String> {
        let parent = parent
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let pass_env: Vec<String> = pass_env.iter().map(|n| (*n).to_owned()).collect();
        ChildEnv::from_vars(parent, &pass_env)
            .names()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn issue_13_secrets_stay_and_what_the_cli_needs_goes() {
        let names = chosen(
            &[
                ("PATH", "/usr/bin"),
                ("HOME", "/home/u"),
                ("QBOX_MCP_TOKEN", "secret"),
                ("QBOX_ACCESS_TOKEN", "aoa"),
                ("QBOX_AGENT_PASS_ENV", "X"),
                ("LC_ALL", "C.UTF-8"),
                ("XDG_CONFIG_HOME", "/c"),
                ("HTTPS_PROXY", "http://proxy:3128"),
                ("no_proxy", "localhost"),
                ("Q_LOG_LEVEL", "debug"),
                ("KIRO_API_KEY", "kiro"),
                ("AMAZON_Q_SIGV4", "1"),
                ("AWS_REGION", "eu-central-1"),
                ("AWS_PROFILE", "dev"),
                ("AWS_SECRET_ACCESS_KEY", "s"),
                ("AWS_SESSION_TOKEN", "t"),
                ("AWS_ACCESS_KEY_ID", "AKIA"),
                ("GITHUB_TOKEN", "ghp"),
                ("SSH_AUTH_SOCK", "/tmp/agent"),
            ],
            &[],
        );
        assert_eq!(
            names,
            [
                "PATH",
                "HOME",
                "LC_ALL",
                "XDG_CONFIG_HOME",
                "HTTPS_PROXY",
                "no_proxy",
                "Q_LOG_LEVEL",
                "KIRO_API_KEY",
                "AMAZON_Q_SIGV4",
                "AWS_REGION",
                "AWS_PROFILE"
            ]
        );
    }

    #[test]
    fn issue_13_pass_env_adds_names_but_never_qbox_ones() {
        let names = chosen(
            &[
                ("PATH", "/usr/bin"),
                ("SSH_AUTH_SOCK", "/tmp/agent"),
                ("QBOX_MCP_TOKEN", "secret"),
                ("UNRELATED", "x"),
            ],
            &["SSH_AUTH_SOCK", "QBOX_MCP_TOKEN"],
        );
        assert_eq!(names, ["PATH", "SSH_AUTH_SOCK"]);
    }
}
