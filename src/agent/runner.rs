//! Running `q chat` for one tool call: an argument vector (never a shell),
//! its own process group, progress as lines arrive, a timeout and
//! cancellation that take down the whole group, and a tool result that
//! says clearly what went wrong.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::mpsc;

use super::args::AgentArgs;
use super::auth::AgentAuth;
use super::config::{AgentConfig, MAX_RESPONSE_ENV, TIMEOUT_ENV};
use super::output::{strip_ansi, truncate_at_line, truncation_notice};

/// What the caller hears while a call runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// A line of the CLI's output (styling removed).
    Line(String),
    /// Nothing new for a while; the call is still running.
    StillRunning { elapsed: Duration },
}

/// The tool result of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub text: String,
    pub is_error: bool,
}

impl Outcome {
    fn error(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            is_error: true,
        }
    }
}

/// Keeps at most this much stderr (it only feeds error messages).
const STDERR_LIMIT: usize = 64 * 1024;
/// After the CLI exits, how long its output may still take to arrive
/// (a grandchild may hold the pipe open; it is killed after this).
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(300);

/// Runs agent calls; calls in the same working directory take turns,
/// because the CLI keeps one conversation per directory.
#[derive(Debug)]
pub struct AgentRunner {
    config: AgentConfig,
    auth: AgentAuth,
    directory_locks: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
}

enum Event {
    Line(Vec<u8>),
    StdoutClosed,
}

impl AgentRunner {
    pub fn new(config: AgentConfig, auth: AgentAuth) -> Self {
        Self {
            config,
            auth,
            directory_locks: Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    fn lock_for(&self, cwd: &Path) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .directory_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        locks.entry(cwd.to_owned()).or_default().clone()
    }

    /// Runs one call in `cwd`. `cancel` completing (the client sent
    /// `notifications/cancelled`, or went away) kills the process group.
    pub async fn run(
        &self,
        args: &AgentArgs,
        cwd: &Path,
        progress: Option<mpsc::UnboundedSender<Progress>>,
        cancel: impl Future<Output = ()>,
    ) -> Outcome {
        let lock = self.lock_for(cwd);
        tokio::pin!(cancel);
        let _turn = tokio::select! {
            turn = lock.lock() => turn,
            () = &mut cancel => return Outcome::error("cancelled before it started"),
        };
        let mut warnings = Vec::new();
        let refs = args.at_file_references();
        if !refs.is_empty() {
            warnings.push(format!(
                "warning: Amazon Q does not read files named with `@` ({}); the text was passed as it is. Name the files in words, or let Q read them with its tools.",
                refs.join(", ")
            ));
        }
        let auth_env = match self.auth.prepare() {
            Ok(env) => env,
            Err(err) => {
                return Outcome::error(format!("cannot prepare the login for the CLI: {err}"));
            }
        };
        let mut command = tokio::process::Command::new(&self.config.cli);
        command
            .args(args.argv())
            .current_dir(cwd)
            .envs(auth_env)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so that a timeout or a cancellation
            // can end the CLI and everything it started in one signal.
            .process_group(0)
            .kill_on_drop(true);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(err) => return Outcome::error(spawn_error(&self.config.cli, &err)),
        };
        let group = child.id().map(|id| Pid::from_raw(id as i32));
        let (events, mut event_rx) = mpsc::unbounded_channel();
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(read_lines(stdout, events));
        }
        let stderr_task = child.stderr.take().map(|mut stderr| {
            tokio::spawn(async move {
                let mut bytes = Vec::new();
                let mut chunk = [0u8; 8192];
                while let Ok(n) = stderr.read(&mut chunk).await {
                    if n == 0 {
                        break;
                    }
                    if bytes.len() < STDERR_LIMIT {
                        bytes.extend_from_slice(&chunk[..n.min(STDERR_LIMIT - bytes.len())]);
                    }
                }
                bytes
            })
        });

        let started = Instant::now();
        let deadline = tokio::time::sleep(self.config.timeout);
        tokio::pin!(deadline);
        let mut keep_alive = tokio::time::interval(self.config.keep_alive);
        keep_alive.tick().await;
        let mut stdout = Vec::new();
        let mut stdout_bytes = 0usize;
        let mut stdout_open = true;
        let mut status: Option<ExitStatus> = None;
        let mut drain_until: Option<tokio::time::Instant> = None;
        let mut timed_out = false;
        let mut cancelled = false;
        let keep_limit = self.config.max_response.saturating_add(64 * 1024);
        while stdout_open || status.is_none() {
            tokio::select! {
                () = &mut cancel => { cancelled = true; break; }
                () = &mut deadline => { timed_out = true; break; }
                exited = child.wait(), if status.is_none() => {
                    status = exited.ok();
                    drain_until = Some(tokio::time::Instant::now() + DRAIN_AFTER_EXIT);
                }
                () = tokio::time::sleep_until(drain_until.unwrap_or_else(tokio::time::Instant::now)), if drain_until.is_some() && stdout_open => {
                    // The CLI is gone but something it started holds stdout.
                    break;
                }
                event = event_rx.recv(), if stdout_open => match event {
                    Some(Event::Line(line)) => {
                        stdout_bytes += line.len();
                        if stdout.len() < keep_limit {
                            stdout.extend_from_slice(&line);
                        }
                        if let Some(progress) = &progress {
                            let text = strip_ansi(&String::from_utf8_lossy(&line));
                            let _ = progress.send(Progress::Line(text.trim_end_matches(['\n', '\r']).to_owned()));
                        }
                        keep_alive.reset();
                    }
                    Some(Event::StdoutClosed) | None => stdout_open = false,
                },
                _ = keep_alive.tick() => {
                    if let Some(progress) = &progress {
                        let _ = progress.send(Progress::StillRunning { elapsed: started.elapsed() });
                    }
                }
            }
        }
        self.end_group(group, &mut child, status.is_none()).await;
        let stderr = match stderr_task {
            Some(task) => tokio::time::timeout(Duration::from_millis(500), task)
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default(),
            None => Vec::new(),
        };
        let stderr = strip_ansi(&String::from_utf8_lossy(&stderr))
            .trim()
            .to_owned();
        let (mut text, invalid_utf8) = match String::from_utf8(stdout) {
            Ok(text) => (text, false),
            Err(err) => (String::from_utf8_lossy(err.as_bytes()).into_owned(), true),
        };
        text = strip_ansi(&text);
        if invalid_utf8 {
            warnings.push(
                "warning: the CLI printed bytes that are not UTF-8; they were replaced with U+FFFD"
                    .into(),
            );
        }
        let truncated = truncate_at_line(text, self.config.max_response);
        let mut text = truncated.text;
        if let Some((original, kept)) = truncated.cut {
            let original = original.max(stdout_bytes);
            text.push_str(&format!(
                "\n{}",
                truncation_notice(original, kept, MAX_RESPONSE_ENV)
            ));
        }
        if cancelled {
            return Outcome::error("cancelled: the CLI and everything it started were stopped");
        }
        if timed_out {
            text.push_str(&format!(
                "\n[qbox: q chat did not finish within {}s ({TIMEOUT_ENV}); it was stopped and the output above is partial]",
                self.config.timeout.as_secs()
            ));
            return Outcome::error(with_warnings(text, &warnings));
        }
        match status {
            Some(status) if status.success() => Outcome {
                text: with_warnings(text, &warnings),
                is_error: false,
            },
            other => Outcome::error(with_warnings(
                failure_message(other, &stderr, &text, &self.config.cli),
                &warnings,
            )),
        }
    }

    /// Ends the process group: SIGTERM first if the CLI still runs, SIGKILL
    /// after the grace period, and SIGKILL to the group in any case so that
    /// nothing the CLI started outlives the call.
    async fn end_group(
        &self,
        group: Option<Pid>,
        child: &mut tokio::process::Child,
        running: bool,
    ) {
        let Some(group) = group else { return };
        if running {
            let _ = killpg(group, Signal::SIGTERM);
            if tokio::time::timeout(self.config.kill_grace, child.wait())
                .await
                .is_err()
            {
                tracing::debug!("the CLI ignored SIGTERM; killing its process group");
            }
        }
        let _ = killpg(group, Signal::SIGKILL);
        let _ = child.wait().await;
    }
}

async fn read_lines(stdout: tokio::process::ChildStdout, events: mpsc::UnboundedSender<Event>) {
    let mut reader = BufReader::new(stdout);
    loop {
        let mut line = Vec::new();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                if events.send(Event::Line(line)).is_err() {
                    return;
                }
            }
        }
    }
    let _ = events.send(Event::StdoutClosed);
}

fn with_warnings(text: String, warnings: &[String]) -> String {
    if warnings.is_empty() {
        return text;
    }
    format!("{}\n\n{text}", warnings.join("\n"))
}

fn spawn_error(cli: &str, err: &std::io::Error) -> String {
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

fn failure_message(status: Option<ExitStatus>, stderr: &str, stdout: &str, cli: &str) -> String {
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
