//! Running `q chat` for one tool call: an argument vector (never a shell),
//! an environment of its own ([`super::child_env`]), its own process group,
//! progress as lines arrive, output kept under a bound
//! ([`super::capture`]), a timeout and cancellation, and at the end every
//! process the call started stopped ([`super::tracker`]).

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::args::AgentArgs;
use super::auth::{AgentAuth, Prepared};
use super::capture::{self, Capture};
use super::child_env::ChildEnv;
use super::cli_choice::{ChosenCli, CliChooser};
use super::config::AgentConfig;
use super::output::Captured;
use super::report::{self, CallRecord, Ending, Outcome, RunEnd};
use super::tracker::{self, CallTracker, SCAN_INTERVAL};

/// What the caller hears while a call runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// A line of the CLI's output (styling removed, at most
    /// [`capture::PROGRESS_LINE_LIMIT`] bytes of it).
    Line(String),
    /// Nothing new for a while; the call is still running.
    StillRunning { elapsed: Duration },
}

/// Keeps at most this much stderr (it only feeds error messages).
const STDERR_LIMIT: usize = 64 * 1024;
/// After the CLI exits, how long its output may still take to arrive
/// (a grandchild may hold the pipe open; it is killed after this).
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(300);
/// How long stderr may still take to arrive once the call ended.
const STDERR_AFTER_END: Duration = Duration::from_millis(500);

/// Runs agent calls; calls in the same working directory take turns,
/// because the CLI keeps one conversation per directory.
#[derive(Debug)]
pub struct AgentRunner {
    config: AgentConfig,
    auth: Arc<AgentAuth>,
    child_env: ChildEnv,
    chooser: CliChooser,
    /// A home of its own for the CLI when the sidecar's `HOME` is missing
    /// or cannot be written (a read-only root, `--hardened`, a user with no
    /// home): the CLIs write their settings and history under `HOME` and
    /// panic when they cannot. Removed with the runner.
    private_home: Option<tempfile::TempDir>,
    /// A Kiro API key from a file (`QBOX_API_KEY_FILE`), given to the CLI
    /// as `KIRO_API_KEY` in its own environment only (one in the
    /// sidecar's environment reaches it through the allow-list).
    api_key: Option<crate::secret::Secret>,
    directory_locks: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
}

/// A started CLI, as [`AgentRunner::spawn`] leaves it for the pump.
struct Running {
    child: tokio::process::Child,
    tracker: CallTracker,
    /// The CLI's process group (its pid), when it could be read.
    group: Option<Pid>,
    stdout: Stdout,
    stderr: Option<JoinHandle<Vec<u8>>>,
}

/// The CLI's stdout as a call reads it.
struct Stdout {
    chunks: mpsc::Receiver<Vec<u8>>,
    reader: Option<JoinHandle<()>>,
}

/// How a call ended and what the CLI printed: the input of
/// [`report::outcome`], apart from the runner's settings.
struct Ended {
    ending: Ending,
    stdout: Captured,
    stderr: Vec<u8>,
}

impl Ended {
    /// A call that ended before the CLI printed anything.
    fn before_start(ending: Ending) -> Self {
        Self {
            ending,
            stdout: Captured {
                kept: Vec::new(),
                total: 0,
            },
            stderr: Vec::new(),
        }
    }
}

impl AgentRunner {
    /// A runner with `config`. When the tool is enabled this also prepares
    /// the process to track the CLI's descendants ([`tracker`]), and the
    /// CLI's environment is chosen from this process's, once.
    pub fn new(config: AgentConfig, auth: AgentAuth) -> Self {
        if config.enabled {
            tracker::prepare_process();
            // What sidecars killed with SIGKILL left: their copies of the
            // login go before this one serves.
            super::leftovers::sweep();
        }
        let child_env = ChildEnv::from_process(&config.pass_env);
        let chooser = CliChooser::new(config.cli.clone(), config.search_path.clone());
        let api_key = match crate::qapi::ApiKey::from_env() {
            Ok(Some(key)) if key.source != crate::qapi::api_key::KeySource::Env => Some(key.key),
            Ok(_) => None,
            Err(err) => {
                if config.enabled {
                    tracing::warn!("the agent's CLI gets no API key: {err}");
                }
                None
            }
        };
        let private_home = if config.enabled && !writable_dir(child_env.get("HOME")) {
            match super::leftovers::private_dir() {
                Ok(home) => {
                    tracing::info!(
                        home = %home.path().display(),
                        "HOME is missing or read-only: the agent's CLI gets a private one"
                    );
                    Some(home)
                }
                Err(err) => {
                    tracing::warn!("no private HOME for the agent's CLI: {err}");
                    None
                }
            }
        } else {
            None
        };
        Self {
            config,
            auth: Arc::new(auth),
            child_env,
            chooser,
            private_home,
            api_key,
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
    /// `notifications/cancelled`, or went away) ends the call.
    pub async fn run(
        &self,
        args: &AgentArgs,
        cwd: &Path,
        progress: Option<mpsc::UnboundedSender<Progress>>,
        cancel: impl Future<Output = ()>,
    ) -> Outcome {
        let (ended, cli) = self.call(args, cwd, progress.as_ref(), cancel).await;
        report::outcome(CallRecord {
            ending: ended.ending,
            stdout: ended.stdout,
            stderr: ended.stderr,
            max_response: self.config.max_response,
            cli: &cli,
            image: self.config.image.as_deref(),
            warnings: prompt_warnings(args),
        })
    }

    /// Waits for the directory's turn, prepares the login, starts the CLI
    /// and pumps it to its end.
    async fn call(
        &self,
        args: &AgentArgs,
        cwd: &Path,
        progress: Option<&mpsc::UnboundedSender<Progress>>,
        cancel: impl Future<Output = ()>,
    ) -> (Ended, ChosenCli) {
        let lock = self.lock_for(cwd);
        tokio::pin!(cancel);
        let _turn = tokio::select! {
            turn = lock.lock() => turn,
            () = &mut cancel => {
                return (Ended::before_start(Ending::CancelledBeforeStart), self.chooser.choose(None));
            }
        };
        let prepared = match self.prepare_auth().await {
            Ok(prepared) => prepared,
            Err(reason) => {
                return (
                    Ended::before_start(Ending::NoLogin(reason)),
                    self.chooser.choose(None),
                );
            }
        };
        let cli = self.chooser.choose(prepared.flavor);
        let mut auth_env = prepared.env;
        if let Some(key) = &self.api_key {
            auth_env.insert(crate::qapi::API_KEY_ENV.to_owned(), key.expose().to_owned());
        }
        let ended = match self.spawn(&cli, args, cwd, auth_env) {
            Ok(running) => self.pump(running, progress, cancel).await,
            Err(err) => Ended::before_start(Ending::NotStarted(err)),
        };
        (ended, cli)
    }

    /// Starts the CLI with its pipes read by tasks of their own.
    fn spawn(
        &self,
        cli: &ChosenCli,
        args: &AgentArgs,
        cwd: &Path,
        auth_env: HashMap<String, String>,
    ) -> std::io::Result<Running> {
        let mut command = self.command(cli, args, cwd, auth_env);
        let (mut child, tracker) = tracker::spawn(&mut command)?;
        let group = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw);
        let stdout = match child.stdout.take() {
            Some(pipe) => {
                let (chunks, reader) = capture::spawn_reader(pipe);
                Stdout {
                    chunks,
                    reader: Some(reader),
                }
            }
            None => Stdout {
                chunks: mpsc::channel(1).1,
                reader: None,
            },
        };
        let stderr = child
            .stderr
            .take()
            .map(|pipe| capture::spawn_limited_reader(pipe, STDERR_LIMIT));
        Ok(Running {
            child,
            tracker,
            group,
            stdout,
            stderr,
        })
    }

    /// Follows the started CLI until its run ends, ends everything it
    /// started, and collects what it printed.
    async fn pump(
        &self,
        running: Running,
        progress: Option<&mpsc::UnboundedSender<Progress>>,
        cancel: Pin<&mut impl Future<Output = ()>>,
    ) -> Ended {
        let Running {
            mut child,
            tracker,
            group,
            mut stdout,
            stderr,
        } = running;
        let (how, capture) = self
            .watch(&mut child, &mut stdout, &tracker, progress, cancel)
            .await;
        self.end_call(group, &mut child, tracker, how.cli_may_run())
            .await;
        if let Some(reader) = stdout.reader.take() {
            // Whatever still holds the pipe, the call has what it keeps.
            reader.abort();
        }
        let stderr = match stderr {
            Some(task) => tokio::time::timeout(STDERR_AFTER_END, task)
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default(),
            None => Vec::new(),
        };
        Ended {
            ending: Ending::Ran(how),
            stdout: capture.into_captured(),
            stderr,
        }
    }

    /// Brings the CLI's login up to date off the async runtime: the store
    /// is SQLite, whose reads can wait seconds for a lock the CLI holds,
    /// and the runtime has one thread that also serves every other request.
    async fn prepare_auth(&self) -> Result<Prepared, String> {
        if let Some(prepared) = self.auth.without_store_work() {
            return Ok(prepared);
        }
        let auth = Arc::clone(&self.auth);
        match tokio::task::spawn_blocking(move || auth.prepare()).await {
            Ok(Ok(env)) => Ok(env),
            Ok(Err(err)) => Err(crate::exit::chain(&err)),
            Err(err) => Err(crate::exit::chain(&err)),
        }
    }

    fn command(
        &self,
        cli: &ChosenCli,
        args: &AgentArgs,
        cwd: &Path,
        auth_env: HashMap<String, String>,
    ) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&cli.program);
        self.child_env.apply(&mut command);
        if let Some(home) = &self.private_home {
            command.env("HOME", home.path());
        }
        command
            .args(args.argv())
            .current_dir(cwd)
            .envs(auth_env)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so that a timeout or a cancellation
            // can end the CLI and what stays in its group in one signal.
            .process_group(0)
            .kill_on_drop(true);
        command
    }

    /// Follows the CLI until it exits and its output ends, the timeout
    /// passes, or the call is cancelled; returns which, with the output.
    async fn watch(
        &self,
        child: &mut tokio::process::Child,
        stdout: &mut Stdout,
        tracker: &CallTracker,
        progress: Option<&mpsc::UnboundedSender<Progress>>,
        mut cancel: Pin<&mut impl Future<Output = ()>>,
    ) -> (RunEnd, Capture) {
        let send = |update: Progress| {
            if let Some(progress) = progress {
                let _ = progress.send(update);
            }
        };
        let mut capture = Capture::new(self.config.max_response);
        let started = Instant::now();
        let deadline = tokio::time::sleep(self.config.timeout);
        tokio::pin!(deadline);
        let mut keep_alive = tokio::time::interval(self.config.keep_alive);
        keep_alive.tick().await;
        // The first walk of /proc one interval in: a CLI that was just
        // started has started nothing yet, and what it starts and leaves
        // is adopted by the sidecar (a subreaper) all the same.
        let mut scan =
            tokio::time::interval_at(tokio::time::Instant::now() + SCAN_INTERVAL, SCAN_INTERVAL);
        scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stdout_open = true;
        // The CLI's exit status (when it could be read), and until when its
        // output may still arrive.
        let mut exited: Option<(Option<ExitStatus>, tokio::time::Instant)> = None;
        let ending = loop {
            if let (false, Some((status, _))) = (stdout_open, exited) {
                break RunEnd::Exited(status);
            }
            let drain_until = exited.map(|(_, until)| until);
            tokio::select! {
                () = &mut cancel => break RunEnd::Cancelled,
                () = &mut deadline => break RunEnd::TimedOut { after: self.config.timeout },
                status = child.wait(), if exited.is_none() => {
                    exited = Some((status.ok(), tokio::time::Instant::now() + DRAIN_AFTER_EXIT));
                }
                () = tokio::time::sleep_until(drain_until.unwrap_or_else(tokio::time::Instant::now)), if drain_until.is_some() && stdout_open => {
                    // The CLI is gone but something it started holds stdout.
                    break RunEnd::Exited(exited.and_then(|(status, _)| status));
                }
                chunk = stdout.chunks.recv(), if stdout_open => match chunk {
                    Some(chunk) => {
                        for line in capture.push(&chunk) {
                            send(Progress::Line(line));
                            keep_alive.reset();
                        }
                    }
                    None => {
                        if let Some(line) = capture.finish() {
                            send(Progress::Line(line));
                        }
                        stdout_open = false;
                    }
                },
                _ = keep_alive.tick() => send(Progress::StillRunning { elapsed: started.elapsed() }),
                _ = scan.tick() => tracker.scan().await,
            }
        };
        (ending, capture)
    }

    /// Ends everything the call started: SIGTERM to the process group if
    /// the CLI still runs and SIGKILL after the grace period; then every
    /// process of the call, in the group or not, is stopped and killed,
    /// and those the sidecar adopted are reaped.
    async fn end_call(
        &self,
        group: Option<Pid>,
        child: &mut tokio::process::Child,
        tracker: CallTracker,
        may_run: bool,
    ) {
        if let (Some(group), true) = (group, may_run) {
            let _ = killpg(group, Signal::SIGTERM);
            if tokio::time::timeout(self.config.kill_grace, child.wait())
                .await
                .is_err()
            {
                tracing::debug!("the CLI ignored SIGTERM; killing its process group");
            }
        }
        let killed = tracker.freeze_and_kill().await;
        if let Some(group) = group {
            let _ = killpg(group, Signal::SIGKILL);
        }
        let _ = child.wait().await;
        tracker.finish(killed).await;
    }
}

/// Whether `dir` is a directory this process can write (false for a
/// missing one, and for one on a read-only filesystem even as root).
fn writable_dir(dir: Option<&std::ffi::OsStr>) -> bool {
    let Some(dir) = dir.map(Path::new).filter(|d| d.is_absolute()) else {
        return false;
    };
    dir.is_dir() && rustix::fs::access(dir, rustix::fs::Access::WRITE_OK).is_ok()
}

/// Warnings about the prompt, shown before the output.
fn prompt_warnings(args: &AgentArgs) -> Vec<String> {
    let refs = args.at_file_references();
    if refs.is_empty() {
        return Vec::new();
    }
    vec![format!(
        "warning: Amazon Q does not read files named with `@` ({}); the text was passed as it is. Name the files in words, or let Q read them with its tools.",
        refs.join(", ")
    )]
}
