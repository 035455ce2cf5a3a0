//! Running one container the way `docker run` does: attach before start so
//! no output is lost, stdout and stderr kept apart, stdin and its EOF
//! forwarded, signals passed on, the container's exit code returned, and
//! the container removed afterwards unless asked to keep it.

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, KillContainerOptionsBuilder,
    RemoveContainerOptionsBuilder, ResizeContainerTTYOptionsBuilder, WaitContainerOptionsBuilder,
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
}

/// How a container ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exited {
    /// The container's exit code (what `qbox run` exits with).
    pub code: u8,
    /// The kernel killed it for exceeding its memory limit.
    pub oom_killed: bool,
}

impl Diagnose for RunError {
    fn exit_code(&self) -> u8 {
        match self {
            Self::CannotInvoke { .. } => exit::CANNOT_INVOKE,
            Self::CommandNotFound { .. } => exit::COMMAND_NOT_FOUND,
            _ => exit::ENGINE,
        }
    }

    fn hint(&self) -> Option<String> {
        Some(match self {
            Self::Engine { detail, .. } if detail.to_ascii_lowercase().contains("permission denied") => {
                "add your user to the `docker` group (then log in again), or run with access to the socket".into()
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
            Self::Failed(_) => return None,
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
pub(super) fn engine_error(err: DockerError) -> RunError {
    match err {
        DockerError::DockerResponseServerError { message, .. } => RunError::Failed(message),
        other => RunError::Engine {
            endpoint: engine::endpoint(),
            detail: other.to_string(),
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
/// window-size changes it mirrors.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
    window: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install(tty: bool) -> Result<Self, RunError> {
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
    let mut signals = Signals::install(spec.tty)?;
    let docker = engine::connect().await.map_err(engine_error)?;
    match docker.inspect_image(&spec.image).await {
        Ok(_) => {}
        Err(err) if server_error(&err).is_some_and(|(status, _)| status == 404) => {
            return Err(RunError::ImageMissing {
                image: spec.image.clone(),
            });
        }
        Err(err) => return Err(engine_error(err)),
    }
    let options = (spec.name.is_some() || spec.options.platform.is_some()).then(|| {
        let mut options = CreateContainerOptionsBuilder::default();
        if let Some(name) = &spec.name {
            options = options.name(name);
        }
        if let Some(platform) = &spec.options.platform {
            options = options.platform(platform);
        }
        options.build()
    });
    let created = match docker.create_container(options, spec.create_body()).await {
        Ok(created) => created,
        Err(err) if server_error(&err).is_some_and(|(status, _)| status == 409) => {
            return Err(RunError::NameConflict {
                name: spec.name.clone().unwrap_or_default(),
            });
        }
        Err(err) => return Err(engine_error(err)),
    };
    let id = created.id;
    let result = attach_start_wait(&docker, &id, spec, &mut signals)
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
        Ok(code) => Ok(Exited {
            code,
            oom_killed: code == 137 && oom_killed(&docker, &id).await,
        }),
        Err(err) => Err(err),
    };
    if !spec.keep {
        remove(&docker, &id).await;
    }
    result
}

/// Whether the kernel killed the container for its memory limit.
async fn oom_killed(docker: &Docker, id: &str) -> bool {
    docker
        .inspect_container(id, None)
        .await
        .ok()
        .and_then(|c| c.state)
        .and_then(|state| state.oom_killed)
        .unwrap_or(false)
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
            // The engine answered: gone already (404), or it says why not.
            Err(err) if server_error(&err).is_some() => {
                if server_error(&err).is_some_and(|(status, _)| status != 404) {
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

async fn attach_start_wait(
    docker: &Docker,
    id: &str,
    spec: &RunSpec,
    signals: &mut Signals,
) -> Result<u8, RunError> {
    // Attach before start: output written in the first microseconds is kept.
    let attach = AttachContainerOptionsBuilder::default()
        .stream(true)
        .stdin(spec.interactive)
        .stdout(true)
        .stderr(true)
        .build();
    let attached = docker
        .attach_container(id, Some(attach))
        .await
        .map_err(engine_error)?;
    let mut output = attached.output;
    let mut input = attached.input;
    // "not-running": a container that exits before the wait is polled still counts.
    let mut wait = docker.wait_container(
        id,
        Some(
            WaitContainerOptionsBuilder::default()
                .condition("not-running")
                .build(),
        ),
    );
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
    let pump_input = spec.interactive.then(|| {
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
    let raw_mode = if spec.tty && spec.interactive {
        crate::container::tty::RawMode::enable()
            .map_err(|e| RunError::Failed(format!("the terminal: {e}")))?
    } else {
        None
    };
    docker
        .start_container(id, None::<bollard::query_parameters::StartContainerOptions>)
        .await
        .map_err(|err| start_error(&spec.image, err))?;
    if spec.tty {
        mirror_window_size(docker, id).await;
    }
    let code = forward_signals_until_exit(docker, id, &mut wait, signals).await;
    drop(raw_mode);
    let code = code?;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), pump_output).await;
    if let Some(task) = pump_input {
        task.abort();
    }
    Ok(code)
}

/// Waits for the container, passing SIGINT, SIGTERM, SIGHUP and SIGQUIT on
/// to it; a second SIGINT kills it.
async fn forward_signals_until_exit(
    docker: &Docker,
    id: &str,
    wait: &mut (
             impl futures_util::Stream<
        Item = Result<bollard::models::ContainerWaitResponse, DockerError>,
    > + Unpin
         ),
    signals: &mut Signals,
) -> Result<u8, RunError> {
    let mut interrupts = 0;
    loop {
        let forward = tokio::select! {
            exited = wait.next() => {
                let lost = |detail: String| RunError::EngineLost { id: id.to_owned(), detail };
                return match exited {
                    Some(Ok(response)) => Ok(exit_code(response.status_code)),
                    Some(Err(DockerError::DockerContainerWaitError { code, .. })) => Ok(exit_code(code)),
                    Some(Err(err)) if server_error(&err).is_some() => Err(engine_error(err)),
                    Some(Err(err)) => Err(lost(exit::chain(&err))),
                    None => Err(lost("the engine stopped reporting on the container".into())),
                };
            }
            _ = signals.interrupt.recv() => {
                interrupts += 1;
                if interrupts > 1 { "SIGKILL" } else { "SIGINT" }
            }
            _ = signals.terminate.recv() => "SIGTERM",
            _ = signals.hangup.recv() => "SIGHUP",
            _ = signals.quit.recv() => "SIGQUIT",
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
        tracing::info!(signal = forward, "forwarding a signal to the container");
        let options = KillContainerOptionsBuilder::default()
            .signal(forward)
            .build();
        if let Err(err) = docker.kill_container(id, Some(options)).await {
            tracing::debug!("forwarding {forward} failed: {err}");
        }
    }
}

fn exit_code(code: i64) -> u8 {
    (code & 0xFF) as u8
}
