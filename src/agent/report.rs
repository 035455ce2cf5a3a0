//! The texts of a call's tool result: warnings put before the output, and
//! one clear message for each way the CLI can fail.

use std::process::ExitStatus;
use std::time::Duration;

use super::cli_choice::ChosenCli;
use super::config::{CLI_ENV, MAX_RESPONSE_ENV, TIMEOUT_ENV};
use super::output::{Captured, shape_output, strip_ansi, truncation_notice};
use crate::store::Flavor;

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

/// How a call ended: before the CLI ran, or how its run ended.
#[derive(Debug)]
pub enum Ending {
    /// The call was cancelled while it waited for an earlier call in the
    /// same directory.
    CancelledBeforeStart,
    /// The CLI's login could not be prepared (the reason).
    NoLogin(String),
    /// The CLI could not be started.
    NotStarted(std::io::Error),
    /// The CLI was started; how the watch over it ended.
    Ran(RunEnd),
}

/// How the watch over a started CLI ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    /// The CLI exited (with this status, when it could be read) and its
    /// output was read to the end, or for as long as it may be after exit.
    Exited(Option<ExitStatus>),
    TimedOut {
        after: Duration,
    },
    Cancelled,
}

impl RunEnd {
    /// Whether the CLI may still run: it has not been seen to exit.
    pub fn cli_may_run(self) -> bool {
        !matches!(self, Self::Exited(_))
    }
}

/// Everything a finished call produced, for [`outcome`].
#[derive(Debug)]
pub struct CallRecord<'a> {
    pub ending: Ending,
    pub stdout: Captured,
    pub stderr: Vec<u8>,
    pub max_response: usize,
    pub cli: &'a ChosenCli,
    /// The container image the CLI was looked for in, when known.
    pub image: Option<&'a str>,
    pub warnings: Vec<String>,
}

/// The tool result of a call: a pure function of how it ended and what the
/// CLI printed. A call that never ran the CLI says only why.
pub fn outcome(record: CallRecord<'_>) -> Outcome {
    let CallRecord {
        ending,
        stdout,
        stderr,
        max_response,
        cli,
        image,
        mut warnings,
    } = record;
    let how = match ending {
        Ending::CancelledBeforeStart => return Outcome::error("cancelled before it started"),
        Ending::NoLogin(reason) => {
            return Outcome::error(format!("cannot prepare the login for the CLI: {reason}"));
        }
        Ending::NotStarted(err) => return Outcome::error(spawn_error(cli, image, &err)),
        Ending::Ran(how) => how,
    };
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
    match how {
        RunEnd::Cancelled => {
            Outcome::error("cancelled: the CLI and everything it started were stopped")
        }
        RunEnd::TimedOut { after } => {
            text.push_str(&format!(
                "\n[qbox: {} chat did not finish within {}s ({TIMEOUT_ENV}); it was stopped and the output above is partial]",
                cli.name(),
                after.as_secs()
            ));
            Outcome::error(with_warnings(text, &warnings))
        }
        // Both CLIs exit 0 when the service fails in a non-interactive
        // run, with the error only on stderr: no answer is no success.
        RunEnd::Exited(Some(status))
            if status.success() && text.trim().is_empty() && !stderr.is_empty() =>
        {
            Outcome::error(with_warnings(silent_failure(&stderr, cli), &warnings))
        }
        // An answer the service broke off: the CLI printed part of it,
        // then its "having trouble responding" error, and exited 0.
        RunEnd::Exited(Some(status))
            if status.success() && stderr.to_ascii_lowercase().contains(TROUBLE_RESPONDING) =>
        {
            Outcome::error(with_warnings(
                format!(
                    "{} chat was cut off by an error after part of its answer; it printed this on stderr:\n{}\npartial output:\n{}",
                    cli.name(),
                    crate::secret::redact(&stderr),
                    text.trim_end()
                ),
                &warnings,
            ))
        }
        RunEnd::Exited(Some(status)) if status.success() => Outcome {
            text: with_warnings(text, &warnings),
            is_error: false,
        },
        RunEnd::Exited(status) => Outcome::error(with_warnings(
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

/// Why the CLI could not be started, and what to do about it. In a
/// container whose image is known (`qbox run --mcp IMAGE`), a missing CLI is
/// the image's, and the way out is another image.
pub fn spawn_error(cli: &ChosenCli, image: Option<&str>, err: &std::io::Error) -> String {
    let (what, name) = (cli.flavor.display_name(), cli.name());
    let looked_for = || {
        Flavor::ALL
            .into_iter()
            .flat_map(|f| f.release_binaries().iter().copied())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match err.kind() {
        std::io::ErrorKind::NotFound if cli.explicit => format!(
            "the CLI `{name}` was not found{} ({CLI_ENV} names it). Set {CLI_ENV} to the full path of `kiro-cli` (or the legacy `q`), or unset it to look for one on PATH.",
            image
                .map(|i| format!(" in the image `{i}`"))
                .unwrap_or_default()
        ),
        std::io::ErrorKind::NotFound if image.is_some() => format!(
            "no Kiro CLI was found on PATH in the image `{}` (looked for {}). Use an image that has the Kiro CLI (`kiro-cli`, or `kiro-cli-chat`) or the legacy Amazon Q Developer CLI (`q`), or build one: qbox image build --agent --cli PATH. The q-chat tool works without it.",
            image.unwrap_or_default(),
            looked_for()
        ),
        std::io::ErrorKind::NotFound => format!(
            "no Kiro CLI was found on PATH (looked for {}). Install the Kiro CLI (`kiro-cli`; the Amazon Q Developer CLI `q` still works but is no longer maintained), or set {CLI_ENV} to the binary's full path.",
            looked_for()
        ),
        std::io::ErrorKind::PermissionDenied => {
            format!(
                "the {what} `{name}` cannot be run (permission denied); check that it is executable"
            )
        }
        _ => format!("cannot start the {what} `{name}`: {err}"),
    }
}

/// Texts the CLIs print when no one is logged in or the login was refused.
const AUTH_PATTERNS: [&str; 6] = [
    "not logged in",
    "not authenticated",
    "please log in",
    "login required",
    "token has expired",
    "authentication failed",
];

/// What both CLIs print (after "Kiro" or "Amazon Q") when the service
/// fails a turn, also after part of the answer was printed.
const TROUBLE_RESPONDING: &str = "is having trouble responding right now";

/// What the Kiro CLI says when the service refuses its API key.
const API_KEY_REFUSED: &str = "api key may be invalid";

/// The Kiro CLI's exit code for a usage error (clap's).
const EXIT_USAGE: i32 = 2;
/// The Kiro CLI's exit code when `--require-mcp-startup` is given and an
/// MCP server of its agent failed to start.
const EXIT_MCP_STARTUP: i32 = 3;
/// The exit code of a Rust program that panicked.
const EXIT_PANIC: i32 = 101;

/// The message for a CLI that exited unsuccessfully: not logged in, a
/// refused API key, a settings directory it cannot write, a tool that
/// needs approval, a usage error, an MCP server that failed, or else its
/// exit code with what it printed. Hints are in the CLI's own words.
pub fn failure_message(
    status: Option<ExitStatus>,
    stderr: &str,
    stdout: &str,
    cli: &ChosenCli,
) -> String {
    let said = format!("{stderr}\n{stdout}").to_ascii_lowercase();
    let what = cli.flavor.display_name();
    if said.contains(API_KEY_REFUSED) {
        return format!(
            "the {what} was refused its Kiro API key: check KIRO_API_KEY (or the file QBOX_API_KEY_FILE names), or make a new key on the Kiro portal.\nCLI said: {}",
            first_lines(stderr, 5)
        );
    }
    if AUTH_PATTERNS.iter().any(|p| said.contains(p)) {
        return format!(
            "the {what} is not logged in. Log in on this machine with `{}`{}, or give the sidecar a login: mount a qbox snapshot read-only and set QBOX_DB (see `qbox snapshot --help`).\nCLI said: {}",
            cli.flavor.login_command(),
            if cli.flavor == Flavor::Kiro {
                ", set KIRO_API_KEY"
            } else {
                ""
            },
            first_lines(stderr, 5)
        );
    }
    if said.contains("permission denied")
        && (said.contains(".q") || said.contains("amazonq") || said.contains(".kiro"))
    {
        return format!(
            "the {what} cannot write its settings directory (~/.kiro, ~/.aws/amazonq or .amazonq): permission denied. Make the home directory writable for the sidecar's user, or run the sidecar as the directory's owner.\nCLI said: {}",
            first_lines(stderr, 5)
        );
    }
    if said.contains("tool approval required") {
        return format!(
            "Amazon Q wanted to use a tool that needs approval, which a non-interactive call cannot give. Allow it with `trust-tools` (e.g. \"fs_read\") or `yolo-mode`.\nCLI said: {}",
            first_lines(stderr, 5)
        );
    }
    let name = cli.name();
    let code = status.and_then(|s| s.code());
    let mut text = match code {
        Some(EXIT_USAGE) => format!(
            "{name} chat refused its arguments (exit 2, a usage error): this {what} may be too old for a flag qbox passed; update it."
        ),
        Some(EXIT_MCP_STARTUP) => format!(
            "{name} chat stopped because an MCP server of its agent failed to start (exit 3); check the agent's MCP servers (`{name} mcp list`)."
        ),
        Some(EXIT_PANIC) => format!(
            "{name} chat crashed (exit 101, a panic in the CLI); its last lines on stderr follow. A CLI that cannot write its HOME (settings, history) crashes so: run the sidecar with a writable HOME or a tmpfs there."
        ),
        Some(code) => format!("{name} chat exited with code {code}."),
        None => format!("{name} chat was killed by a signal."),
    };
    if !stderr.is_empty() {
        text.push_str(&format!("\nstderr:\n{stderr}"));
    }
    if !stdout.trim().is_empty() {
        text.push_str(&format!("\noutput:\n{stdout}"));
    }
    text
}

/// A run that exited 0 with no answer and something on stderr: the CLI
/// met an error it only printed (access denied, throttling, no network).
fn silent_failure(stderr: &str, cli: &ChosenCli) -> String {
    let said = stderr.to_ascii_lowercase();
    if said.contains(API_KEY_REFUSED) || AUTH_PATTERNS.iter().any(|p| said.contains(p)) {
        return failure_message(None, stderr, "", cli);
    }
    format!(
        "{} chat exited 0 without an answer; it printed only this on stderr:\n{}",
        cli.name(),
        crate::secret::redact(stderr)
    )
}

fn first_lines(text: &str, n: usize) -> String {
    text.lines().take(n).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    fn q_cli() -> ChosenCli {
        ChosenCli {
            program: "/usr/bin/q".into(),
            flavor: Flavor::AmazonQ,
            explicit: false,
        }
    }

    fn kiro_cli() -> ChosenCli {
        ChosenCli {
            program: "/usr/local/bin/kiro-cli".into(),
            flavor: Flavor::Kiro,
            explicit: false,
        }
    }

    fn exited(code: i32) -> Ending {
        Ending::Ran(RunEnd::Exited(Some(ExitStatus::from_raw(code << 8))))
    }

    fn outcome_of(ending: Ending, stdout: &[u8], stderr: &[u8]) -> Outcome {
        outcome_with(ending, stdout, stderr, 1000, Vec::new())
    }

    fn outcome_with(
        ending: Ending,
        stdout: &[u8],
        stderr: &[u8],
        max_response: usize,
        warnings: Vec<String>,
    ) -> Outcome {
        outcome_by(&q_cli(), ending, stdout, stderr, max_response, warnings)
    }

    fn outcome_by(
        cli: &ChosenCli,
        ending: Ending,
        stdout: &[u8],
        stderr: &[u8],
        max_response: usize,
        warnings: Vec<String>,
    ) -> Outcome {
        outcome(CallRecord {
            ending,
            stdout: Captured {
                kept: stdout.to_vec(),
                total: stdout.len() as u64,
            },
            stderr: stderr.to_vec(),
            max_response,
            cli,
            image: None,
            warnings,
        })
    }

    #[test]
    fn exit_zero_returns_the_output_as_it_is() {
        let result = outcome_of(exited(0), b"the answer\n", b"chatter on stderr");
        assert_eq!(
            result,
            Outcome {
                text: "the answer\n".into(),
                is_error: false
            }
        );
    }

    #[test]
    fn exit_zero_puts_the_warnings_first_and_removes_styling() {
        let result = outcome_with(
            exited(0),
            b"\x1b[1mbold\x1b[0m answer\n",
            b"",
            1000,
            vec!["warning: one".into()],
        );
        assert!(!result.is_error);
        assert_eq!(result.text, "warning: one\n\nbold answer\n");
    }

    #[test]
    fn a_non_zero_exit_names_the_code_and_carries_stderr_and_output() {
        let result = outcome_of(exited(5), b"partial\n", b"\x1b[31msomething broke\x1b[0m\n");
        assert!(result.is_error);
        assert_eq!(
            result.text,
            "q chat exited with code 5.\nstderr:\nsomething broke\noutput:\npartial\n"
        );
    }

    #[test]
    fn a_non_zero_exit_without_output_says_only_the_code() {
        let result = outcome_of(exited(1), b"", b"");
        assert_eq!(result, Outcome::error("q chat exited with code 1."));
    }

    #[test]
    fn a_kill_by_signal_or_an_unreadable_status_is_not_a_code() {
        for ending in [
            Ending::Ran(RunEnd::Exited(Some(ExitStatus::from_raw(9)))),
            Ending::Ran(RunEnd::Exited(None)),
        ] {
            let result = outcome_of(ending, b"", b"");
            assert_eq!(result, Outcome::error("q chat was killed by a signal."));
        }
    }

    #[test]
    fn a_failure_that_is_a_missing_login_says_how_to_log_in() {
        let result = outcome_of(exited(1), b"", b"error: You are not logged in\n");
        assert!(result.is_error);
        assert!(
            result.text.starts_with(
                "the Amazon Q Developer CLI is not logged in. Log in on this machine with `q login`, or"
            ),
            "{}",
            result.text
        );
        assert!(
            result
                .text
                .ends_with("CLI said: error: You are not logged in")
        );
    }

    #[test]
    fn a_timeout_keeps_the_partial_output_and_says_which_setting_to_raise() {
        let ending = Ending::Ran(RunEnd::TimedOut {
            after: Duration::from_secs(7),
        });
        let result = outcome_with(ending, b"working\n", b"", 1000, vec!["warning: w".into()]);
        assert_eq!(
            result,
            Outcome::error(
                "warning: w\n\nworking\n\n[qbox: q chat did not finish within 7s (AGENT_TIMEOUT); it was stopped and the output above is partial]"
            )
        );
    }

    #[test]
    fn a_cancelled_run_says_everything_was_stopped_and_nothing_else() {
        let result = outcome_with(
            Ending::Ran(RunEnd::Cancelled),
            b"half an answer\n",
            b"some stderr",
            1000,
            vec!["warning: w".into()],
        );
        assert_eq!(
            result,
            Outcome::error("cancelled: the CLI and everything it started were stopped")
        );
    }

    #[test]
    fn a_call_cancelled_before_its_turn_says_so() {
        let result = outcome_with(
            Ending::CancelledBeforeStart,
            b"",
            b"",
            1000,
            vec!["warning: w".into()],
        );
        assert_eq!(result, Outcome::error("cancelled before it started"));
    }

    #[test]
    fn output_over_the_limit_is_cut_at_a_line_with_a_notice() {
        let line = format!("{}\n", "x".repeat(99));
        let stdout = line.repeat(50);
        let result = outcome_with(exited(0), stdout.as_bytes(), b"", 1000, Vec::new());
        assert!(!result.is_error);
        let (kept, notice) = result.text.split_once("\n[qbox: ").unwrap();
        assert_eq!(kept, line.repeat(10));
        assert_eq!(
            notice,
            "output truncated from 5000 bytes to 1000 bytes at a line boundary; 4000 bytes dropped; raise AGENT_MAX_RESPONSE_SIZE to get more]"
        );
    }

    #[test]
    fn output_cut_while_reading_counts_every_byte_the_cli_printed() {
        let line = format!("{}\n", "y".repeat(99));
        let result = outcome(CallRecord {
            ending: exited(0),
            stdout: Captured {
                kept: line.repeat(20).into_bytes(),
                total: 1_000_000,
            },
            stderr: Vec::new(),
            max_response: 1000,
            cli: &q_cli(),
            image: None,
            warnings: Vec::new(),
        });
        assert!(
            result
                .text
                .ends_with("truncated from 1000000 bytes to 1000 bytes at a line boundary; 999000 bytes dropped; raise AGENT_MAX_RESPONSE_SIZE to get more]"),
            "{}",
            result.text
        );
    }

    #[test]
    fn bytes_that_are_not_utf8_are_replaced_with_a_warning() {
        let result = outcome_of(exited(0), b"ok \xff\xfe bytes\n", b"");
        assert!(!result.is_error);
        assert_eq!(
            result.text,
            "warning: the CLI printed bytes that are not UTF-8; they were replaced with U+FFFD\n\nok \u{fffd}\u{fffd} bytes\n"
        );
    }

    #[test]
    fn a_cli_that_is_not_found_says_what_to_install() {
        let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
        let result = outcome_with(
            Ending::NotStarted(missing),
            b"",
            b"",
            1000,
            vec!["warning: w".into()],
        );
        assert!(result.is_error);
        assert!(
            result
                .text
                .starts_with("no Kiro CLI was found on PATH (looked for kiro-cli, kiro-cli-chat, q, qchat). Install the Kiro CLI"),
            "{}",
            result.text
        );
        assert!(result.text.contains("QBOX_AGENT_CLI"), "{}", result.text);
        assert!(!result.text.contains("warning: w"), "{}", result.text);
    }

    #[test]
    fn a_cli_missing_from_an_image_names_the_image_and_the_binary() {
        let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
        let text = spawn_error(&kiro_cli(), Some("my-dev-image:1"), &missing);
        assert!(
            text.starts_with("no Kiro CLI was found on PATH in the image `my-dev-image:1`"),
            "{text}"
        );
        let named = ChosenCli {
            program: "/opt/kiro".into(),
            flavor: Flavor::Kiro,
            explicit: true,
        };
        let named_text = spawn_error(&named, None, &missing);
        assert!(
            named_text.starts_with("the CLI `/opt/kiro` was not found (QBOX_AGENT_CLI names it)."),
            "{named_text}"
        );
        assert!(
            text.contains("qbox image build --agent --cli PATH"),
            "{text}"
        );
    }

    #[test]
    fn a_cli_that_cannot_be_run_says_to_check_it_is_executable() {
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let result = outcome_of(Ending::NotStarted(denied), b"", b"");
        assert_eq!(
            result,
            Outcome::error(
                "the Amazon Q Developer CLI `q` cannot be run (permission denied); check that it is executable"
            )
        );
    }

    #[test]
    fn the_kiro_clis_own_failures_are_named_in_its_words() {
        let kiro = |ending: Ending, stdout: &[u8], stderr: &[u8]| {
            outcome_by(&kiro_cli(), ending, stdout, stderr, 1000, Vec::new())
        };
        // The Kiro CLI 2.2.1's own lines (cli/mod.rs, cli/chat/mod.rs).
        let not_logged_in = kiro(
            exited(1),
            b"",
            b"error: Not logged in. Set the KIRO_API_KEY environment variable or run `kiro-cli login` first.\n",
        );
        assert!(not_logged_in.is_error);
        assert!(
            not_logged_in.text.starts_with(
                "the Kiro CLI is not logged in. Log in on this machine with `kiro-cli login`, set KIRO_API_KEY,"
            ),
            "{}",
            not_logged_in.text
        );
        let usage = kiro(exited(2), b"", b"error: unexpected argument '--x' found\n");
        assert!(
            usage
                .text
                .starts_with("kiro-cli chat refused its arguments (exit 2, a usage error)")
        );
        let mcp = kiro(
            exited(3),
            b"",
            b"Error: One or more MCP servers failed to start (--require-mcp-startup enabled)\n",
        );
        assert!(mcp.text.starts_with(
            "kiro-cli chat stopped because an MCP server of its agent failed to start (exit 3)"
        ));
        let panic = kiro(
            exited(101),
            b"",
            b"thread 'main' panicked: Read-only file system\n",
        );
        assert!(
            panic
                .text
                .starts_with("kiro-cli chat crashed (exit 101, a panic in the CLI)"),
            "{}",
            panic.text
        );
        assert!(
            panic.text.contains("Read-only file system"),
            "{}",
            panic.text
        );
        // Exit 0, nothing on stdout, the service's refusal on stderr.
        let key = kiro(
            exited(0),
            b"",
            b"Authentication failed. Your API key may be invalid or expired. Check your KIRO_API_KEY value.\n",
        );
        assert!(key.is_error);
        assert!(
            key.text
                .starts_with("the Kiro CLI was refused its Kiro API key"),
            "{}",
            key.text
        );
        let throttled = kiro(
            exited(0),
            b"\n",
            b"Request quota exceeded. Please wait a moment and try again.\n",
        );
        assert!(throttled.is_error);
        assert_eq!(
            throttled.text,
            "kiro-cli chat exited 0 without an answer; it printed only this on stderr:\nRequest quota exceeded. Please wait a moment and try again."
        );
        // Exit 0 after part of an answer, then the CLI's error (the
        // Kiro CLI 2.2.1's words for an exception in the stream).
        let cut = kiro(
            exited(0),
            b"> a partial\n",
            b"\x1b[1mKiro is having trouble responding right now:\n   0: Failed to receive the next message: InternalServerError: Encountered an unexpected error\n",
        );
        assert!(cut.is_error, "{}", cut.text);
        assert!(
            cut.text
                .starts_with("kiro-cli chat was cut off by an error after part of its answer")
                && cut.text.contains("InternalServerError")
                && cut.text.ends_with("partial output:\n> a partial"),
            "{}",
            cut.text
        );
        let timeout = kiro(
            Ending::Ran(RunEnd::TimedOut {
                after: Duration::from_secs(2),
            }),
            b"",
            b"",
        );
        assert!(
            timeout
                .text
                .contains("kiro-cli chat did not finish within 2s"),
            "{}",
            timeout.text
        );
    }

    #[test]
    fn a_login_that_cannot_be_prepared_says_why() {
        let result = outcome_of(
            Ending::NoLogin("the snapshot is unreadable".into()),
            b"",
            b"",
        );
        assert_eq!(
            result,
            Outcome::error("cannot prepare the login for the CLI: the snapshot is unreadable")
        );
    }

    #[test]
    fn only_a_run_that_was_not_seen_to_exit_may_leave_the_cli_running() {
        assert!(!RunEnd::Exited(None).cli_may_run());
        assert!(RunEnd::Cancelled.cli_may_run());
        assert!(
            RunEnd::TimedOut {
                after: Duration::from_secs(1)
            }
            .cli_may_run()
        );
    }
}
