//! The texts of a call's tool result: warnings put before the output, and
//! one clear message for each way the CLI can fail.

use std::process::ExitStatus;
use std::time::Duration;

use super::capture::Captured;
use super::config::{MAX_RESPONSE_ENV, TIMEOUT_ENV};
use super::output::{shape_output, strip_ansi, truncation_notice};

/// The tool result of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub text: String,
    pub is_error: bool,
}

impl Outcome {
    pub fn error(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            is_error: true,
        }
    }
}

/// How a call's watch over the CLI ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The CLI exited (with this status, when it could be read) and its
    /// output was read to the end, or for as long as it may be after exit.
    Exited(Option<ExitStatus>),
    TimedOut {
        after: Duration,
    },
    Cancelled,
}

/// Everything a finished call produced, for [`outcome`].
#[derive(Debug)]
pub struct CallRecord<'a> {
    pub ending: Ending,
    pub stdout: Captured,
    pub stderr: Vec<u8>,
    pub max_response: usize,
    pub cli: &'a str,
    pub warnings: Vec<String>,
}

/// The tool result of a call.
pub fn outcome(record: CallRecord<'_>) -> Outcome {
    let CallRecord {
        ending,
        stdout,
        stderr,
        max_response,
        cli,
        mut warnings,
    } = record;
    let stderr = strip_ansi(&String::from_utf8_lossy(&stderr))
        .trim()
        .to_owned();
    let shaped = shape_output(stdout, max_response);
    if shaped.invalid_utf8 {
        warnings.push(
            "warning: the CLI printed bytes that are not UTF-8; they were replaced with U+FFFD"
                .into(),
        );
    }
    let mut text = shaped.text;
    if let Some(cut) = shaped.cut {
        text.push_str(&format!("\n{}", truncation_notice(cut, MAX_RESPONSE_ENV)));
    }
    match ending {
        Ending::Cancelled => {
            Outcome::error("cancelled: the CLI and everything it started were stopped")
        }
        Ending::TimedOut { after } => {
            text.push_str(&format!(
                "\n[qbox: q chat did not finish within {}s ({TIMEOUT_ENV}); it was stopped and the output above is partial]",
                after.as_secs()
            ));
            Outcome::error(with_warnings(text, &warnings))
        }
        Ending::Exited(Some(status)) if status.success() => Outcome {
            text: with_warnings(text, &warnings),
            is_error: false,
        },
        Ending::Exited(status) => Outcome::error(with_warnings(
            failure_message(status, &stderr, &text, cli),
            &warnings,
        )),
    }
}

/// Puts the warnings before the text, separated by a blank line.
pub fn with_warnings(text: String, warnings: &[String]) -> String {
    if warnings.is_empty() {
        return text;
    }
    format!("{}\n\n{text}", warnings.join("\n"))
}

/// Why the CLI could not be started, and what to do about it.
pub fn spawn_error(cli: &str, err: &std::io::Error) -> String {
    match err.kind() {
        std::io::ErrorKind::NotFound => format!(
            "the Amazon Q CLI `{cli}` was not found on PATH. Install the Amazon Q Developer CLI (binary `q`) or the Kiro CLI (binary `kiro-cli`, then set QBOX_AGENT_CLI=kiro-cli), or set QBOX_AGENT_CLI to the binary's full path."
        ),
        std::io::ErrorKind::PermissionDenied => {
            format!(
                "the Amazon Q CLI `{cli}` cannot be run (permission denied); check that it is executable"
            )
        }
        _ => format!("cannot start the Amazon Q CLI `{cli}`: {err}"),
    }
}

/// Texts the CLIs print when no one is logged in.
const AUTH_PATTERNS: [&str; 5] = [
    "not logged in",
    "not authenticated",
    "please log in",
    "login required",
    "token has expired",
];

/// The message for a CLI that exited unsuccessfully: not logged in, a
/// settings directory it cannot write, a tool that needs approval, or else
/// its exit code with what it printed.
pub fn failure_message(
    status: Option<ExitStatus>,
    stderr: &str,
    stdout: &str,
    cli: &str,
) -> String {
    let said = format!("{stderr}\n{stdout}").to_ascii_lowercase();
    if AUTH_PATTERNS.iter().any(|p| said.contains(p)) {
        return format!(
            "the Amazon Q CLI is not logged in. Log in on this machine with `{cli} login`, or give the sidecar a login: mount a qbox snapshot read-only and set QBOX_DB (see `qbox snapshot --help`).\nCLI said: {}",
            first_lines(stderr, 5)
        );
    }
    if said.contains("permission denied")
        && (said.contains(".q") || said.contains("amazonq") || said.contains(".kiro"))
    {
        return format!(
            "the Amazon Q CLI cannot write its settings directory (~/.aws/amazonq, .amazonq or .kiro): permission denied. Make the home directory writable for the sidecar's user, or run the sidecar as the directory's owner.\nCLI said: {}",
            first_lines(stderr, 5)
        );
    }
    if said.contains("tool approval required") {
        return format!(
            "Amazon Q wanted to use a tool that needs approval, which a non-interactive call cannot give. Allow it with `trust-tools` (e.g. \"fs_read\") or `yolo-mode`.\nCLI said: {}",
            first_lines(stderr, 5)
        );
    }
    let how = match status.and_then(|s| s.code()) {
        Some(code) => format!("exited with code {code}"),
        None => "was killed by a signal".to_owned(),
    };
    let mut text = format!("q chat {how}.");
    if !stderr.is_empty() {
        text.push_str(&format!("\nstderr:\n{stderr}"));
    }
    if !stdout.trim().is_empty() {
        text.push_str(&format!("\noutput:\n{stdout}"));
    }
    text
}

fn first_lines(text: &str, n: usize) -> String {
    text.lines().take(n).collect::<Vec<_>>().join("\n")
}
