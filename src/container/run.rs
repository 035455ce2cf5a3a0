//! Running one container the way `docker run` does: attach before start so
//! no output is lost, stdout and stderr kept apart, stdin and its EOF
//! forwarded, signals passed on, the container's exit code returned, and
//! the container removed afterwards unless asked to keep it.
//!
//! Stopping follows `docker stop`: SIGINT, SIGTERM and SIGHUP are passed on,
//! and a container still running `stop_timeout` seconds later is killed;
//! `qbox run` then exits 128 + the signal it received. The engine removes
//! the container when it exits (`AutoRemove`, unless kept), so a qbox that
//! is itself killed with SIGKILL leaves no container behind: reading the
//! exit code therefore waits for the removal (the `removed` condition, as
//! the docker CLI does for `--rm`), and falls back to the engine's event log
//! when the container was gone before the wait reached the engine.

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerWaitResponse, EventMessage};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, EventsOptionsBuilder,
    KillContainerOptionsBuilder, RemoveContainerOptionsBuilder, ResizeContainerTTYOptionsBuilder,
    WaitContainerOptionsBuilder,
};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::engine;
use super::spec::RunSpec;
use crate::exit::{self, Diagnose};

/// Why a container could not be run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot talk to the docker engine at {endpoint}: {detail}")]
    Engine { endpoint: String, detail: String },
    #[error("image `{image}` is not on this machine")]
    ImageMissing { image: String },
    #[error("a container named `{name}` already exists")]
    NameConflict { name: String },
    #[error("cannot invoke the command in `{image}`: {detail}")]
    CannotInvoke { image: String, detail: String },
    #[error("command not found in `{image}`: {detail}")]
    CommandNotFound { image: String, detail: String },
    #[error("the docker engine failed: {0}")]
    Failed(String),
    #[error("lost the docker engine while container {id} ran: {detail}")]
    EngineLost { id: String, detail: String },
    #[error("{} came before the container was started; nothing was left running", .0.name)]
    Interrupted(StopSignal),
}

/// How a container ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exited {
    /// What `qbox run` exits with: the container's exit code, or 128 + the
    /// signal qbox received when qbox had to kill the container.
    pub code: u8,
    /// The kernel killed it for exceeding its memory limit.
    pub oom_killed: bool,
    /// qbox killed it: it was still running `stop_timeout` seconds after
    /// this signal was passed on, or a second SIGINT came.
    pub killed_after: Option<StopSignal>,
}

/// A signal that asks `qbox run` to stop, passed on to the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopSignal {
    pub name: &'static str,
    pub number: u8,
}

impl StopSignal {
    pub const HANGUP: Self = Self {
        name: "SIGHUP",
        number: 1,
    };
    pub const INTERRUPT: Self = Self {
        name: "SIGINT",
        number: 2,
    };
    pub const TERMINATE: Self = Self {
        name: "SIGTERM",
        number: 15,
    };

    /// 128 + the signal's number, as a shell reports a process the signal
    /// ended: 129, 130, 143.
    pub fn exit_code(self) -> u8 {
        exit::signalled(i32::from(self.number))
    }
}

impl Diagnose for RunError {
    fn exit_code(&self) -> u8 {
        match self {
            Self::CannotInvoke { .. } => exit::CANNOT_INVOKE,
            Self::CommandNotFound { .. } => exit::COMMAND_NOT_FOUND,
            Self::Interrupted(signal) => signal.exit_code(),
            _ => exit::ENGINE,
        }
    }

    fn hint(&self) -> Option<String> {
        Some(match self {
            Self::Engine { detail, .. } if detail.to_ascii_lowercase().contains("permission denied") => {
                "add your user to the `docker` group (then log in again), or run with access to the socket".into()
            }
            Self::Engine { detail, .. } if detail.contains("URI scheme is not supported") => {
                "qbox speaks to an engine over unix://, tcp:// or http:// (npipe:// on Windows); forward an ssh or TLS engine to a local socket (for example `ssh -NL /tmp/docker.sock:/var/run/docker.sock HOST`) and set DOCKER_HOST=unix:///tmp/docker.sock".into()
            }
            Self::Engine { .. } => "start the docker engine, or point DOCKER_HOST at it".into(),
            Self::ImageMissing { .. } => {
                "qbox never pulls images: build it (`docker build`) or `docker load` it".into()
            }
            Self::NameConflict { .. } => "choose another --name, or remove the old container".into(),
            Self::CannotInvoke { .. } => "check that the command is executable in the image".into(),
            Self::CommandNotFound { .. } => "check the command's name and PATH in the image".into(),
            Self::EngineLost { id, .. } => format!(
                "the engine restarted or went away; if `docker ps -a` still lists {id}, remove it: docker rm -f {id}"
            ),
            Self::Failed(_) | Self::Interrupted(_) => return None,
        })
    }
}

fn server_error(err: &DockerError) -> Option<(u16, &str)> {
    match err {
        DockerError::DockerResponseServerError {
            status_code,
            message,
        } => Some((*status_code, message)),
        _ => None,
    }
}

/// An engine answer as a `RunError`: its own message when it answered,
/// else "cannot talk to the engine" with the endpoint.
pub(crate) fn engine_error(err: DockerError) -> RunError {
    match err {
        DockerError::DockerResponseServerError { message, .. } => RunError::Failed(message),
        // The causes too: a capped or timed-out answer says so in its source.
        other => RunError::Engine {
            endpoint: engine::endpoint(),
            detail: exit::chain(&other),
        },
    }
}

/// Classifies a failed start as `docker run` does (126, 127, else 125).
fn start_error(image: &str, err: DockerError) -> RunError {
    let detail = match &err {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    };
    let lower = detail.to_ascii_lowercase();
    if lower.contains("executable file not found") || lower.contains("no such file or directory") {
        RunError::CommandNotFound {
            image: image.to_owned(),
            detail,
        }
    } else if lower.contains("permission denied") || lower.contains("exec format error") {
        RunError::CannotInvoke {
            image: image.to_owned(),
            detail,
        }
    } else {
        engine_error(err)
    }
}

/// The signals `qbox run` passes on to its container, and (with `-t`) the
/// window-size changes it mirrors. Installed before anything is asked of the
/// engine, so a signal never ends qbox while a container may exist that it
/// has not removed.
pub struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
    window: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    pub fn install(tty: bool) -> Result<Self, RunError> {
        use tokio::signal::unix::{SignalKind, signal};
        let install = |kind| signal(kind).map_err(|e| RunError::Failed(e.to_string()));
        Ok(Self {
            interrupt: install(SignalKind::interrupt())?,
            terminate: install(SignalKind::terminate())?,
            hangup: install(SignalKind::hangup())?,
            quit: install(SignalKind::quit())?,
            window: if tty {
                Some(install(SignalKind::window_change())?)
            } else {
                None
            },
        })
    }
}

impl Signals {
    /// The next SIGINT, SIGTERM or SIGHUP.
    pub async fn stop(&mut self) -> StopSignal {
        tokio::select! {
            _ = self.interrupt.recv() => StopSignal::INTERRUPT,
            _ = self.terminate.recv() => StopSignal::TERMINATE,
            _ = self.hangup.recv() => StopSignal::HANGUP,
        }
    }

    /// `work`, unless a stop signal comes first.
    pub async fn or_stop<T>(&mut self, work: impl Future<Output = T>) -> Result<T, RunError> {
        tokio::select! {
            done = work => Ok(done),
            signal = self.stop() => Err(RunError::Interrupted(signal)),
        }
    }
}

/// How long qbox still waits for the engine's answer to a create it gave
/// up on after a signal, to remove what the engine created.
const LATE_CREATE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// Connects and creates the container, both raced against the stop
/// signals. A signal during the create does not leave the container to the
/// engine: its answer is awaited a little longer and what it created is
/// removed (one created later still is labelled with its creator, and the
/// next `qbox run` removes it: `runtime_dir`'s sweep).
async fn connect_and_create(
    spec: &RunSpec,
    signals: &mut Signals,
) -> Result<(Docker, String), RunError> {
    let docker = signals
        .or_stop(engine::connect())
        .await?
        .map_err(engine_error)?;
    let creating = create(&docker, spec);
    tokio::pin!(creating);
    let signal = tokio::select! {
        created = &mut creating => return Ok((docker.clone(), created?)),
        signal = signals.stop() => signal,
    };
    if let Ok(Ok(id)) = tokio::time::timeout(LATE_CREATE_PATIENCE, creating).await {
        tracing::debug!(container = %id, "removing the container created after {}", signal.name);
        remove(&docker, &id).await;
    }
    Err(RunError::Interrupted(signal))
}

/// Gives the container's terminal the host terminal's size. Right after
/// start the engine may not have the terminal yet, so a failure is retried
/// briefly, as the docker CLI does.
async fn mirror_window_size(docker: &Docker, id: &str) {
    let Some((rows, columns)) = crate::container::tty::window_size() else {
        return;
    };
    let options = ResizeContainerTTYOptionsBuilder::default()
        .h(i32::from(rows))
        .w(i32::from(columns))
        .build();
    for _ in 0..5 {
        match docker.resize_container_tty(id, options.clone()).await {
            Ok(()) => return,
            Err(err) => tracing::debug!("resizing the container's terminal: {err}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Runs `spec` to completion and returns how the container ended.
pub async fn run(spec: &RunSpec) -> Result<Exited, RunError> {
    // First of all: from here on a signal cannot kill qbox before it has
    // cleaned up; it is passed on to the container instead.
    let mut signals = Signals::install(spec.options.tty)?;
    // The engine's event log is read back from here on (the exit code of a
    // container removed before the wait reached the engine, an OOM kill); a
    // minute earlier than now allows for an engine whose clock is behind.
    let since = unix_now() - 60;
    let (docker, id) = connect_and_create(spec, &mut signals).await?;
    let result = attach_start_wait(&docker, &id, spec, &mut signals, since)
        .await
        .map_err(|err| match err {
            // The container exists: not reaching the engine now means losing it.
            RunError::Engine { detail, .. } => RunError::EngineLost {
                id: id.clone(),
                detail,
            },
            other => other,
        });
    let result = match result {
        Ok(Ended::Exited(code)) => Ok(Exited {
            code,
            oom_killed: code == 137 && oom_killed(&docker, &id, since).await,
            killed_after: None,
        }),
        Ok(Ended::Killed(signal)) => Ok(Exited {
            code: signal.exit_code(),
            oom_killed: false,
            killed_after: Some(signal),
        }),
        Err(err) => Err(err),
    };
    // Normally the engine has removed it already (AutoRemove); this covers
    // a run that ended without the engine confirming the exit, and one
    // stopped by a signal before it started (even with --keep: nothing ran).
    if !spec.keep || matches!(result, Err(RunError::Interrupted(_))) {
        remove(&docker, &id).await;
    }
    result
}

/// Checks that the image is on this machine and creates the container
/// (never pulling); returns its id.
async fn create(docker: &Docker, spec: &RunSpec) -> Result<String, RunError> {
    match docker.inspect_image(&spec.image).await {
        Ok(_) => {}
        Err(err) if server_error(&err).is_some_and(|(status, _)| status == 404) => {
            return Err(RunError::ImageMissing {
                image: spec.image.clone(),
            });
        }
        Err(err) => return Err(engine_error(err)),
    }
    let options = (spec.options.name.is_some() || spec.options.platform.is_some()).then(|| {
        let mut options = CreateContainerOptionsBuilder::default();
        if let Some(name) = &spec.options.name {
            options = options.name(name);
        }
        if let Some(platform) = &spec.options.platform {
            options = options.platform(platform);
        }
        options.build()
    });
    match docker.create_container(options, spec.create_body()).await {
        // The id is printed (`run -d`) and used in paths: only what an
        // engine really answers, hex digits, is taken.
        Ok(created) if is_container_id(&created.id) => Ok(created.id),
        Ok(created) => Err(RunError::Failed(format!(
            "the engine answered a malformed container id `{}`",
            crate::http::sanitize_remote(&created.id)
        ))),
        Err(err) if server_error(&err).is_some_and(|(status, _)| status == 409) => {
            Err(RunError::NameConflict {
                name: spec.options.name.clone().unwrap_or_default(),
            })
        }
        Err(err) => Err(engine_error(err)),
    }
}

/// Whether `id` looks like an engine's container id (hex digits).
fn is_container_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Removes container `id` by force (a detached container whose keeper
/// could not be started).
pub async fn discard(id: &str) {
    if let Ok(docker) = engine::connect().await {
        remove(&docker, id).await;
    }
}

/// `qbox run -d`: creates and starts the container without attaching to it
/// and returns its id. A container that cannot be started is removed (the
/// start failure classified as `docker run` does: 125, 126, 127).
///
/// Every wait on the engine is raced against `signals`: on SIGINT, SIGTERM
/// or SIGHUP the container (if created) is removed and the signal returned
/// as [`RunError::Interrupted`], as the foreground run does.
pub async fn start_detached(spec: &RunSpec, signals: &mut Signals) -> Result<String, RunError> {
    let (docker, id) = connect_and_create(spec, signals).await?;
    let start = docker.start_container(
        &id,
        None::<bollard::query_parameters::StartContainerOptions>,
    );
    match signals.or_stop(start).await {
        Ok(Ok(())) => Ok(id),
        Ok(Err(err)) => {
            remove(&docker, &id).await;
            Err(start_error(&spec.image, err))
        }
        Err(interrupted) => {
            remove(&docker, &id).await;
            Err(interrupted)
        }
    }
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The engine's events about container `id` since `since`, up to the one
/// that says it died, and when no OOM kill was reported by then, up to
/// `after_death` longer for one (the engine usually reports it before the
/// death, but the two come from different sources and a loaded machine can
/// swap them).
/// Bounded: the engine is asked for nothing later than a few seconds from now.
async fn container_events(
    docker: &Docker,
    id: &str,
    since: i64,
    after_death: std::time::Duration,
) -> Vec<EventMessage> {
    const PATIENCE_SECONDS: u64 = 5;
    let filters =
        std::collections::HashMap::from([("type", vec!["container"]), ("container", vec![id])]);
    let until = unix_now() + PATIENCE_SECONDS as i64;
    let options = EventsOptionsBuilder::default()
        .since(&since.to_string())
        .until(&until.to_string())
        .filters(&filters)
        .build();
    let mut stream = docker.events(Some(options));
    let mut events = Vec::new();
    let collect = async {
        while let Some(Ok(event)) = stream.next().await {
            let died = event.action.as_deref() == Some("die");
            events.push(event);
            if died {
                break;
            }
        }
        // Only an OOM report is worth waiting for: it is the one late event
        // that changes what qbox says.
        if !events.iter().any(is_oom) {
            let late = async {
                while let Some(Ok(event)) = stream.next().await {
                    let oom = is_oom(&event);
                    events.push(event);
                    if oom {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(after_death, late).await;
        }
    };
    let patience = std::time::Duration::from_secs(PATIENCE_SECONDS + 1);
    let _ = tokio::time::timeout(patience, collect).await;
    events
}

/// Whether the kernel killed the container for its memory limit (read from
/// the engine's events: an auto-removed container cannot be inspected once
/// it has exited).
async fn oom_killed(docker: &Docker, id: &str, since: i64) -> bool {
    const LATE_OOM_REPORT: std::time::Duration = std::time::Duration::from_secs(1);
    container_events(docker, id, since, LATE_OOM_REPORT)
        .await
        .iter()
        .any(is_oom)
}

/// Whether `event` reports an OOM kill.
fn is_oom(event: &EventMessage) -> bool {
    event.action.as_deref() == Some("oom")
}

/// The exit code the engine logged when container `id` died.
async fn logged_exit_code(docker: &Docker, id: &str, since: i64) -> Option<u8> {
    container_events(docker, id, since, std::time::Duration::ZERO)
        .await
        .iter()
        .filter(|event| event.action.as_deref() == Some("die"))
        .find_map(|event| {
            let attributes = event.actor.as_ref()?.attributes.as_ref()?;
            attributes.get("exitCode")?.parse::<i64>().ok()
        })
        .map(exit_code)
}

/// How long removal keeps trying while the engine does not answer (a
/// restarting engine comes back within seconds).
const REMOVE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(20);

/// Removes the container, waiting out an engine that is briefly away.
async fn remove(docker: &Docker, id: &str) {
    let options = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    let deadline = tokio::time::Instant::now() + REMOVE_PATIENCE;
    loop {
        match docker.remove_container(id, Some(options.clone())).await {
            Ok(()) => return,
            // The engine answered: gone already (404), being removed by the
            // engine itself (409, AutoRemove), or it says why not.
            Err(err) if server_error(&err).is_some() => {
                if server_error(&err).is_some_and(|(status, _)| status != 404 && status != 409) {
                    tracing::warn!(container = %id, "could not remove the container: {err}");
                }
                return;
            }
            Err(err) if tokio::time::Instant::now() >= deadline => {
                tracing::warn!(
                    container = %id,
                    "could not remove the container, the engine does not answer ({err}): remove it with `docker rm -f {id}`"
                );
                return;
            }
            Err(err) => {
                tracing::debug!("removing {id}: {err}; trying again");
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
        }
    }
}

/// How the wait for the container ended.
enum Ended {
    /// It exited by itself, with this code.
    Exited(u8),
    /// qbox killed it after passing on this signal.
    Killed(StopSignal),
}

/// What the engine's wait answers (or why it did not), from a task of its own.
type WaitOutcome =
    Result<Option<Result<ContainerWaitResponse, DockerError>>, tokio::task::JoinError>;

/// Waits for the container on a task of its own, so that the request can
/// reach the engine while the container starts.
fn spawn_wait(
    docker: &Docker,
    id: &str,
    condition: &str,
) -> tokio::task::JoinHandle<Option<Result<ContainerWaitResponse, DockerError>>> {
    let docker = docker.clone();
    let id = id.to_owned();
    let options = WaitContainerOptionsBuilder::default()
        .condition(condition)
        .build();
    tokio::spawn(async move { docker.wait_container(&id, Some(options)).next().await })
}

async fn attach_start_wait(
    docker: &Docker,
    id: &str,
    spec: &RunSpec,
    signals: &mut Signals,
    since: i64,
) -> Result<Ended, RunError> {
    // Attach before start: output written in the first microseconds is kept.
    let attach = AttachContainerOptionsBuilder::default()
        .stream(true)
        .stdin(spec.options.interactive)
        .stdout(true)
        .stderr(true)
        .build();
    // Until the start is asked for, a stop signal ends the run at once (the
    // caller removes the container): an engine slow to attach must not make
    // qbox deaf to it.
    let attached = signals
        .or_stop(docker.attach_container(id, Some(attach)))
        .await?
        .map_err(engine_error)?;
    let mut output = attached.output;
    let mut input = attached.input;
    // The engine removes the container when it exits, so wait for the
    // removal (the exit code comes with it), asked before the start. A
    // kept container is waited for after the start with "not-running",
    // which also counts one that exited before the wait was polled.
    let mut wait = (!spec.keep).then(|| spawn_wait(docker, id, "removed"));
    let pump_output = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        let mut stderr = tokio::io::stderr();
        while let Some(Ok(chunk)) = output.next().await {
            let written = match chunk {
                LogOutput::StdErr { message } => {
                    stderr.write_all(&message).await.and(stderr.flush().await)
                }
                LogOutput::StdOut { message } | LogOutput::Console { message } => {
                    stdout.write_all(&message).await.and(stdout.flush().await)
                }
                LogOutput::StdIn { .. } => Ok(()),
            };
            if written.is_err() {
                break;
            }
        }
    });
    let pump_input = spec.options.interactive.then(|| {
        tokio::spawn(async move {
            let mut stdin = tokio::io::stdin();
            let mut buffer = vec![0u8; 16 * 1024];
            loop {
                match stdin.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if input.write_all(&buffer[..n]).await.is_err() {
                            return;
                        }
                        let _ = input.flush().await;
                    }
                }
            }
            // EOF on our stdin becomes EOF on the container's.
            let _ = input.shutdown().await;
        })
    });
    // With -it the container's terminal does the echoing and line editing;
    // the host's steps aside until the run ends (the guard restores it).
    let raw_mode = if spec.options.tty && spec.options.interactive {
        crate::container::tty::RawMode::enable()
            .map_err(|e| RunError::Failed(format!("the terminal: {e}")))?
    } else {
        None
    };
    // Not raced: the container may run (and print) before the engine
    // answers the start, so a signal now is one for the container; it stays
    // queued and is passed on below. The transport bounds this wait.
    docker
        .start_container(id, None::<bollard::query_parameters::StartContainerOptions>)
        .await
        .map_err(|err| start_error(&spec.image, err))?;
    if spec.options.tty {
        mirror_window_size(docker, id).await;
    }
    let mut wait = match wait.take() {
        Some(wait) => wait,
        None => spawn_wait(docker, id, "not-running"),
    };
    let stop_timeout = std::time::Duration::from_secs(u64::from(spec.options.stop_timeout));
    let ended =
        forward_signals_until_exit(docker, id, &mut wait, signals, stop_timeout, since).await;
    drop(raw_mode);
    let ended = ended?;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), pump_output).await;
    if let Some(task) = pump_input {
        task.abort();
    }
    Ok(ended)
}

/// How long qbox waits for the engine to confirm a kill before it stops
/// waiting and removes the container by force.
const KILL_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// What a received signal makes qbox do.
enum Step {
    /// Pass the signal on and start the stop timeout (SIGINT, SIGTERM, SIGHUP).
    Stop(StopSignal),
    /// Pass the signal on, nothing more (SIGQUIT).
    Forward(&'static str),
    /// Kill the container now (a second SIGINT, or the stop timeout ran out).
    Kill,
}

/// Completes at `deadline`, or never without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Waits for the container, passing SIGINT, SIGTERM, SIGHUP and SIGQUIT on
/// to it. The first SIGINT, SIGTERM or SIGHUP starts `stop_timeout`: a
/// container still running when it runs out is killed, as is one that gets
/// a second SIGINT. A container that exits by itself keeps its own exit
/// code; one that qbox killed ends as [`Ended::Killed`].
async fn forward_signals_until_exit(
    docker: &Docker,
    id: &str,
    wait: &mut tokio::task::JoinHandle<Option<Result<ContainerWaitResponse, DockerError>>>,
    signals: &mut Signals,
    stop_timeout: std::time::Duration,
    since: i64,
) -> Result<Ended, RunError> {
    let mut interrupts = 0;
    // The first stop signal, and when the container is killed if still running.
    let mut stopping: Option<(StopSignal, tokio::time::Instant)> = None;
    // The stop signal qbox killed the container after, and until when it
    // waits for the engine to confirm.
    let mut killed: Option<(StopSignal, tokio::time::Instant)> = None;
    loop {
        let stop_deadline = stopping.filter(|_| killed.is_none()).map(|(_, at)| at);
        let step = tokio::select! {
            outcome = &mut *wait => {
                let code = wait_outcome(docker, id, outcome, since).await?;
                return Ok(match killed {
                    Some((signal, _)) => Ended::Killed(signal),
                    None => Ended::Exited(code),
                });
            }
            _ = signals.interrupt.recv() => {
                interrupts += 1;
                if interrupts > 1 { Step::Kill } else { Step::Stop(StopSignal::INTERRUPT) }
            }
            _ = signals.terminate.recv() => Step::Stop(StopSignal::TERMINATE),
            _ = signals.hangup.recv() => Step::Stop(StopSignal::HANGUP),
            _ = signals.quit.recv() => Step::Forward("SIGQUIT"),
            () = sleep_until(stop_deadline) => Step::Kill,
            () = sleep_until(killed.map(|(_, at)| at)) => {
                // The engine did not confirm the kill: the caller removes
                // the container by force.
                if let Some((signal, _)) = killed {
                    tracing::warn!(container = %id, "the engine did not confirm the kill in time");
                    return Ok(Ended::Killed(signal));
                }
                continue;
            }
            Some(()) = async {
                match signals.window.as_mut() {
                    Some(window) => window.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                mirror_window_size(docker, id).await;
                continue;
            }
        };
        match step {
            Step::Stop(signal) => {
                forward(docker, id, signal.name).await;
                if stopping.is_none() {
                    stopping = Some((signal, tokio::time::Instant::now() + stop_timeout));
                    eprintln!(
                        "qbox: passed {} on to the container; it is killed if still running in {} s (a second Ctrl-C kills it now)",
                        signal.name,
                        stop_timeout.as_secs()
                    );
                }
            }
            Step::Forward(name) => forward(docker, id, name).await,
            Step::Kill if killed.is_some() => {}
            Step::Kill => {
                let signal = stopping.map_or(StopSignal::INTERRUPT, |(signal, _)| signal);
                let why = if interrupts > 1 {
                    "a second SIGINT".to_owned()
                } else {
                    format!(
                        "still running {} s after {}",
                        stop_timeout.as_secs(),
                        signal.name
                    )
                };
                eprintln!(
                    "qbox: killing the container ({why}); exiting {}",
                    signal.exit_code()
                );
                killed = Some((signal, tokio::time::Instant::now() + KILL_PATIENCE));
                forward(docker, id, "SIGKILL").await;
            }
        }
    }
}

/// Sends `signal` to the container.
async fn forward(docker: &Docker, id: &str, signal: &str) {
    tracing::info!(signal, "forwarding a signal to the container");
    let options = KillContainerOptionsBuilder::default()
        .signal(signal)
        .build();
    if let Err(err) = docker.kill_container(id, Some(options)).await {
        tracing::debug!("forwarding {signal} failed: {err}");
    }
}

/// The container's exit code from the engine's answer to the wait.
async fn wait_outcome(
    docker: &Docker,
    id: &str,
    outcome: WaitOutcome,
    since: i64,
) -> Result<u8, RunError> {
    let lost = |detail: String| RunError::EngineLost {
        id: id.to_owned(),
        detail,
    };
    match outcome {
        Ok(Some(Ok(response))) => Ok(exit_code(response.status_code)),
        Ok(Some(Err(DockerError::DockerContainerWaitError { code, .. }))) => Ok(exit_code(code)),
        // Exited and removed before the wait reached the engine: the
        // engine's event log still has the exit code.
        Ok(Some(Err(err))) if server_error(&err).is_some_and(|(status, _)| status == 404) => {
            tracing::debug!(container = %id, "removed before the wait reached the engine; reading its exit code from the engine's events");
            logged_exit_code(docker, id, since).await.ok_or_else(|| {
                RunError::Failed(format!(
                    "container {id} was removed before its exit code could be read"
                ))
            })
        }
        Ok(Some(Err(err))) if server_error(&err).is_some() => Err(engine_error(err)),
        Ok(Some(Err(err))) => Err(lost(exit::chain(&err))),
        Ok(None) | Err(_) => Err(lost("the engine stopped reporting on the container".into())),
    }
}

fn exit_code(code: i64) -> u8 {
    (code & 0xFF) as u8
}
