//! The keeper of a detached container's login: starting one, its log, and
//! the keeper itself. `qbox run -d` starts the first; `qbox keep` starts a
//! new one for a container whose keeper died (killed, crashed). The keeper
//! is the running executable as `qbox --db STORE --cli CLI keep --foreground
//! ID`, in a session of its own, with stdin from /dev/null and its output in
//! `<state dir>/qbox/keepers/<container id>.log`: it keeps the snapshot
//! fresh with the same `SnapshotKeeper` a foreground `qbox run` uses, and
//! ends (removing the snapshot) when the engine reports the container died
//! or was removed.
//!
//! What the keeper says goes to its caller as [`KeeperNote`]s: the command
//! line words and timestamps them.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use super::detached::{
    self, DetachedDir, KEEPER_CLI_LABEL, KEEPER_DB_LABEL, KEEPER_SCOPE_LABEL, KeeperState,
    RecordedSettings,
};
use super::manage::{self, Managed};
use super::run::RunError;
use super::runtime_dir::RuntimeDir;
use crate::exit::{self, Diagnose};
use crate::store::snapshot::{SNAPSHOT_FILE_NAME, SnapshotScope};
use crate::store::watch::{CopyDirs, SnapshotKeeper, WatchEvent, WatchOptions};
use crate::store::{Flavor, StoreError, StoreQuery};

/// Seconds a keeper waits for an engine that does not answer (an engine
/// restarting comes back within seconds).
pub const DEFAULT_ENGINE_PATIENCE: u64 = 300;
/// The most a keeper may be told to wait: a day.
pub const MAX_ENGINE_PATIENCE: u64 = 24 * 60 * 60;

/// Why a keeper could not be started, or could not start keeping.
#[derive(Debug, thiserror::Error)]
pub enum KeeperError {
    #[error("no state directory for the keeper's log")]
    NoLogDir,
    #[error(transparent)]
    LogDir(StoreError),
    #[error("opening the keeper's log {}", .path.display())]
    OpenLog {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("finding the qbox executable")]
    CurrentExe(#[source] std::io::Error),
    #[error("starting the keeper")]
    Start(#[source] std::io::Error),
    #[error("the keeper of {container} exited at start ({status})")]
    ExitedAtStart {
        container: String,
        status: String,
        log: PathBuf,
    },
    #[error("the keeper of {container} did not start within {seconds}s")]
    NotStarted {
        container: String,
        seconds: u64,
        log: PathBuf,
    },
    #[error(transparent)]
    Engine(RunError),
    #[error("no container that qbox run started has the id {0}")]
    NoContainer(String),
    #[error("container {0} has no detached login snapshot")]
    NoSnapshot(String),
    #[error("locking {}", .path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("another keeper holds {}", .0.display())]
    Held(PathBuf),
    #[error("recording the keeper in {}", .path.display())]
    Record {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Diagnose for KeeperError {
    fn exit_code(&self) -> u8 {
        match self {
            Self::LogDir(err) => err.exit_code(),
            Self::Engine(err) => err.exit_code(),
            _ => exit::ERROR,
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            Self::NoLogDir => Some("set XDG_STATE_HOME (or HOME)".to_owned()),
            Self::LogDir(err) => err.hint(),
            Self::Engine(err) => err.hint(),
            Self::ExitedAtStart { log, .. } => Some(format!("its log says why: {}", log.display())),
            Self::NotStarted { log, .. } => Some(format!("its log may say why: {}", log.display())),
            _ => None,
        }
    }
}

impl From<RunError> for KeeperError {
    fn from(err: RunError) -> Self {
        Self::Engine(err)
    }
}

/// The snapshot settings a keeper needs: which store it reads, written by
/// which CLI, and what the snapshot carries. `qbox run -d` records them in
/// the container's private directory (`keeper.json`), so a keeper started
/// later by `qbox keep` reads the same login, and passes them to the keeper
/// process as arguments. The container's labels show them too, but are
/// never read back: an image can carry labels of any value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeeperSettings {
    pub db: PathBuf,
    pub cli: Flavor,
    pub scope: SnapshotScope,
}

impl KeeperSettings {
    /// The container labels that record them.
    pub fn labels(&self) -> [(String, String); 3] {
        [
            (KEEPER_DB_LABEL.to_owned(), self.db.display().to_string()),
            (KEEPER_CLI_LABEL.to_owned(), flavor_name(self.cli)),
            (KEEPER_SCOPE_LABEL.to_owned(), self.scope.name().to_owned()),
        ]
    }

    /// As `keeper.json` records them.
    pub fn recorded(&self) -> RecordedSettings {
        RecordedSettings {
            db: self.db.clone(),
            cli: flavor_name(self.cli),
            scope: self.scope.name().to_owned(),
        }
    }

    /// Read back from the record in the container's private directory.
    fn from_record(recorded: &RecordedSettings) -> Option<Self> {
        let cli = Flavor::from_name(&recorded.cli)?;
        // Anything but an explicit `refreshable` keeps the least privilege.
        let scope = if recorded.scope == SnapshotScope::Refreshable.name() {
            SnapshotScope::Refreshable
        } else {
            SnapshotScope::AccessOnly
        };
        recorded.db.is_absolute().then(|| Self {
            db: recorded.db.clone(),
            cli,
            scope,
        })
    }

    /// The keeper's command line before the subcommand.
    fn global_args(&self) -> Vec<OsString> {
        vec![
            "--db".into(),
            self.db.clone().into_os_string(),
            "--cli".into(),
            flavor_name(self.cli).into(),
        ]
    }
}

fn flavor_name(flavor: Flavor) -> String {
    flavor.name().to_owned()
}

/// The settings recorded in `dir` for container `id`: `None` when there are
/// none, or when the record names another container (a label can point a
/// container at another one's directory).
pub fn recorded_settings(dir: &DetachedDir, id: &str) -> Option<KeeperSettings> {
    let record = dir.record()?;
    if !record.container.is_empty() && record.container != id {
        return None;
    }
    KeeperSettings::from_record(record.settings.as_ref()?)
}

/// Where keepers write their logs: `<state dir>/qbox/keepers`
/// (`$XDG_STATE_HOME`, else `~/.local/state`; the data directory where the
/// platform has no state directory).
fn log_dir() -> Option<PathBuf> {
    dirs::state_dir()
        .or_else(dirs::data_local_dir)
        .map(|dir| dir.join("qbox").join("keepers"))
}

/// The log of the keeper of container `id`.
pub fn log_path(id: &str) -> Option<PathBuf> {
    log_dir().map(|dir| dir.join(format!("{id}.log")))
}

/// Opens (appending) the keeper log of container `id`: 0600 in a 0700
/// directory that is the user's alone, never through a symbolic link.
fn open_log(id: &str) -> Result<(PathBuf, std::fs::File), KeeperError> {
    let dir = log_dir().ok_or(KeeperError::NoLogDir)?;
    open_log_in(&dir, id)
}

/// [`open_log`] in `dir`. Every directory missing on the way is created
/// 0700, `<state dir>/qbox` included: the sidecar may put a generated
/// bearer token there.
fn open_log_in(dir: &Path, id: &str) -> Result<(PathBuf, std::fs::File), KeeperError> {
    crate::store::private_file::prepare_private_dir(dir).map_err(KeeperError::LogDir)?;
    prune_logs(dir, id, SystemTime::now());
    let path = dir.join(format!("{id}.log"));
    let mut options = std::fs::OpenOptions::new();
    options.append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32);
    }
    match options.open(&path) {
        Ok(file) => Ok((path, file)),
        Err(source) => Err(KeeperError::OpenLog { path, source }),
    }
}

/// How long a keeper's log is kept after its last line.
const LOG_RETENTION: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// Removes the keeper logs in `dir` that nothing has written to for
/// [`LOG_RETENTION`], except `keep`'s: without it, every container ever
/// started with `qbox run -d` would leave its log behind for good. Only
/// regular files named like a keeper's log (`<64 hex digits>.log`) are
/// touched; anything else in the directory is the user's. Best effort: a
/// file that cannot be read or removed stays.
fn prune_logs(dir: &Path, keep: &str, now: SystemTime) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(id) = name.to_str().and_then(|name| name.strip_suffix(".log")) else {
            continue;
        };
        if id == keep || id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        // The entry itself, never what a link points to.
        let Ok(metadata) = entry.metadata() else {
            continue;
        };
        let stale = metadata
            .modified()
            .ok()
            .and_then(|modified| now.duration_since(modified).ok())
            .is_some_and(|age| age > LOG_RETENTION);
        if metadata.is_file() && stale {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => tracing::debug!("removed the old keeper log {}", entry.path().display()),
                Err(err) => tracing::debug!("keeping {}: {err}", entry.path().display()),
            }
        }
    }
}

/// A keeper that has recorded itself.
#[derive(Debug)]
pub struct Started {
    pub pid: u32,
    pub log: PathBuf,
}

/// How long a new keeper has to record itself.
const START_PATIENCE: Duration = Duration::from_secs(20);

/// Starts the keeper of container `id` as a detached process and waits
/// until it has recorded itself in `dir` (so that `qbox ps` shows it from
/// the moment this returns).
pub async fn spawn(
    id: &str,
    settings: &KeeperSettings,
    dir: &DetachedDir,
) -> Result<Started, KeeperError> {
    let (log, file) = open_log(id)?;
    let exe = std::env::current_exe().map_err(KeeperError::CurrentExe)?;
    let stdout = file.try_clone().map_err(|source| KeeperError::OpenLog {
        path: log.clone(),
        source,
    })?;
    let mut child = Command::new(exe)
        // Every refresh attempt and outcome is logged at info.
        .arg("-v")
        .args(settings.global_args())
        .args(["keep", "--foreground", id])
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(file)
        // The keeper must not hold the caller's working directory.
        .current_dir("/")
        .spawn()
        .map_err(KeeperError::Start)?;
    let pid = child.id();
    let deadline = tokio::time::Instant::now() + START_PATIENCE;
    loop {
        if dir.keeper_state() == (KeeperState::Running { pid }) {
            // Not waited for: the keeper outlives this process.
            drop(child);
            return Ok(Started { pid, log });
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(KeeperError::ExitedAtStart {
                container: short(id).to_owned(),
                status: status.to_string(),
                log,
            });
        }
        if tokio::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(KeeperError::NotStarted {
                container: short(id).to_owned(),
                seconds: START_PATIENCE.as_secs(),
                log,
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A container id as `docker ps` shortens it.
pub fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// Removes the snapshot directories, under the runtime directory `runtime`,
/// of detached containers that are gone and whose keeper is dead (a keeper
/// killed before its container ended). `containers` are the containers
/// qbox started that the engine still has.
pub fn sweep(runtime: &Path, containers: &[Managed]) {
    let Ok(Some(runtime)) = RuntimeDir::existing(runtime.to_owned()) else {
        return;
    };
    let keys = containers
        .iter()
        .filter_map(|c| c.detached.clone())
        .collect();
    detached::sweep(&runtime, &keys);
}

/// The snapshot directory of a detached container under the runtime
/// directory `runtime`, if it has one.
pub fn detached_dir(runtime: &Path, container: &Managed) -> Option<DetachedDir> {
    let key = container.detached.as_ref()?;
    DetachedDir::find(&RuntimeDir::existing(runtime.to_owned()).ok()??, key)
}

/// What a keeper says while it runs, for its log.
#[derive(Debug)]
pub enum KeeperNote<'a> {
    /// What it does.
    Line(String),
    /// Something that needs attention.
    Warning(String),
    /// What the snapshot keeper did.
    Watch(WatchEvent<'a>),
}

/// How a keeper ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeeperEnd {
    /// The container ended: its snapshot directory is removed.
    ContainerGone,
    /// SIGTERM or SIGINT (named): the container keeps its last snapshot.
    Stopped(String),
    /// The engine did not answer for its patience: the token is removed.
    EngineLost,
    /// The snapshot could no longer be written.
    SnapshotFailed,
}

/// The keeper itself: records itself in the snapshot directory of
/// container `id` (under the runtime directory `runtime`), keeps the
/// snapshot fresh until the container is gone, then removes the snapshot
/// directory. SIGTERM or SIGINT end it without removing anything (the
/// container still runs, and `qbox keep` can start another keeper); an
/// engine silent for `patience` ends it too ([`KeeperEnd::EngineLost`]).
pub async fn keep(
    id: &str,
    query: StoreQuery,
    runtime: &Path,
    patience: Duration,
    note: &mut dyn FnMut(KeeperNote<'_>),
) -> Result<KeeperEnd, KeeperError> {
    // Out of the starting terminal's session: closing it does not end the
    // keeper. (A process that already leads a group cannot: it is fine.)
    let _ = rustix::process::setsid();
    let docker = super::image::connect().await?;
    let containers = manage::list(&docker).await?;
    let container = containers
        .iter()
        .find(|c| c.id == id)
        .ok_or_else(|| KeeperError::NoContainer(id.to_owned()))?;
    let dir = detached_dir(runtime, container)
        .ok_or_else(|| KeeperError::NoSnapshot(short(id).to_owned()))?;
    let lock = dir.lock().map_err(|source| KeeperError::Lock {
        path: dir.path().to_owned(),
        source,
    })?;
    let Some(_lock) = lock else {
        return Err(KeeperError::Held(dir.path().to_owned()));
    };
    dir.record_this_process(id)
        .map_err(|source| KeeperError::Record {
            path: dir.path().to_owned(),
            source,
        })?;
    note(KeeperNote::Line(format!(
        "keeping the login snapshot {} of container {} fresh",
        dir.auth_dir().display(),
        short(id)
    )));
    // The scope `qbox run -d` chose, from the record it left in the
    // container's private directory.
    let scope = recorded_settings(&dir, id).map_or(SnapshotScope::AccessOnly, |s| s.scope);
    let options = WatchOptions {
        scope,
        ..WatchOptions::default()
    };
    let mut keeper = SnapshotKeeper::new(query, dir.auth_dir(), options);
    // The container's writable copy, where `qbox run -d` made one (a
    // container started by an older qbox has none).
    let copy = CopyDirs::under(dir.path());
    if copy.data_home.is_dir() {
        keeper = keeper.with_private_copy(copy);
    }
    let (ended_tx, ended_rx) = tokio::sync::oneshot::channel::<KeeperEnd>();
    let (gone_tx, gone_rx) = tokio::sync::oneshot::channel::<String>();
    let watch = async {
        let why = tokio::select! {
            gone = detached::wait_until_gone(&docker, id, patience) => match gone {
                detached::Gone::Event(action) => format!("the engine reported `{action}`"),
                detached::Gone::NotRunning => "it is not running".to_owned(),
                detached::Gone::EngineLost(silent) => {
                    let _ = ended_tx.send(KeeperEnd::EngineLost);
                    let _ = gone_tx.send(format!(
                        "the docker engine did not answer for {} s",
                        silent.as_secs()
                    ));
                    return;
                }
            },
            signal = stop_signal() => {
                let _ = ended_tx.send(KeeperEnd::Stopped(signal));
                return;
            }
        };
        let _ = gone_tx.send(why);
    };
    let mut on_event = |event: WatchEvent<'_>| note(KeeperNote::Watch(event));
    if let Err(err) = keeper.run(watch, &mut on_event).await {
        note(KeeperNote::Line(format!(
            "error: the snapshot can no longer be written: {}",
            exit::chain(&err)
        )));
        return Ok(KeeperEnd::SnapshotFailed);
    }
    let why = gone_rx.await.unwrap_or_default();
    match ended_rx.await {
        Ok(KeeperEnd::EngineLost) => {
            engine_lost(&dir, id, &why, note);
            return Ok(KeeperEnd::EngineLost);
        }
        Ok(KeeperEnd::Stopped(signal)) => {
            note(KeeperNote::Line(format!(
                "stopped by {signal}; the container still runs with its last snapshot (`qbox keep` starts a new keeper)"
            )));
            return Ok(KeeperEnd::Stopped(signal));
        }
        _ => {}
    }
    note(KeeperNote::Line(format!(
        "container {} has ended: {why}",
        short(id)
    )));
    match dir.remove() {
        Ok(()) => note(KeeperNote::Line(format!(
            "removed {}; the keeper ends",
            dir.path().display()
        ))),
        Err(err) => note(KeeperNote::Warning(format!(
            "could not remove {}: {err}",
            dir.path().display()
        ))),
    }
    Ok(KeeperEnd::ContainerGone)
}

/// The keeper's end when the engine has not answered (`why`): whether the
/// container still runs is unknown, so the login is not kept fresh for it
/// any longer. The token goes (the snapshot file; the directory stays,
/// mounted, for a later `qbox keep`), and the reason is recorded for `qbox
/// ps` and logged.
fn engine_lost(dir: &DetachedDir, id: &str, why: &str, note: &mut dyn FnMut(KeeperNote<'_>)) {
    let snapshot = dir.auth_dir().join(SNAPSHOT_FILE_NAME);
    match std::fs::remove_file(&snapshot) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => note(KeeperNote::Warning(format!(
            "could not remove {}: {err}",
            snapshot.display()
        ))),
    }
    if let Err(err) = dir.record_end(id, why) {
        note(KeeperNote::Warning(format!(
            "could not record why the keeper ends in {}: {err}",
            dir.path().display()
        )));
    }
    note(KeeperNote::Line(format!(
        "error: {why}; the keeper ends and removed the login snapshot of container {} (`qbox keep` starts a new keeper once the engine is back)",
        short(id)
    )));
}

/// SIGTERM or SIGINT: the keeper stops without touching the snapshot.
async fn stop_signal() -> String {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = terminate.recv() => "SIGTERM".to_owned(),
        _ = interrupt.recv() => "SIGINT".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn keeper_settings_come_from_the_record_of_the_same_container_only() {
        use std::os::unix::fs::PermissionsExt;
        let base = tempfile::tempdir().unwrap();
        let runtime_path = base.path().join("qbox");
        std::fs::create_dir(&runtime_path).unwrap();
        std::fs::set_permissions(&runtime_path, std::fs::Permissions::from_mode(0o700)).unwrap();
        let runtime = RuntimeDir::open(runtime_path).unwrap();
        let dir = DetachedDir::create(&runtime).unwrap();
        assert_eq!(recorded_settings(&dir, "c1"), None, "nothing recorded");
        let settings = KeeperSettings {
            db: "/home/u/.local/share/kiro-cli/data.sqlite3".into(),
            cli: Flavor::Kiro,
            scope: SnapshotScope::AccessOnly,
        };
        dir.record_run(settings.recorded()).unwrap();
        // Before its keeper recorded itself, and after.
        assert_eq!(recorded_settings(&dir, "c1"), Some(settings.clone()));
        dir.record_this_process("c1").unwrap();
        assert_eq!(recorded_settings(&dir, "c1"), Some(settings));
        // Another container whose labels name this directory gets nothing.
        assert_eq!(recorded_settings(&dir, "c2"), None);
        // A relative store path is no setting.
        let mut relative = RecordedSettings {
            db: "data.sqlite3".into(),
            cli: "kiro".into(),
            scope: "refreshable".into(),
        };
        assert_eq!(KeeperSettings::from_record(&relative), None);
        relative.db = "/abs/data.sqlite3".into();
        assert_eq!(
            KeeperSettings::from_record(&relative).map(|s| s.scope),
            Some(SnapshotScope::Refreshable)
        );
    }

    #[cfg(unix)]
    #[test]
    fn every_directory_the_keeper_log_needs_is_created_private() {
        use std::os::unix::fs::PermissionsExt;
        let home = tempfile::tempdir().unwrap();
        let state = home.path().join(".local/state");
        let dir = state.join("qbox").join("keepers");
        let (path, _file) = open_log_in(&dir, &"a".repeat(64)).unwrap();
        assert!(path.starts_with(&dir));
        // `.local`, `state`, `qbox` (where a generated sidecar token may
        // go) and `keepers`: none may be 0755 with a umask of 022.
        for created in [
            home.path().join(".local"),
            state.clone(),
            state.join("qbox"),
            dir,
        ] {
            let mode = std::fs::metadata(&created).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{} is {mode:o}", created.display());
        }
    }

    #[test]
    fn only_old_keeper_logs_other_than_the_current_one_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let old = now - LOG_RETENTION - Duration::from_secs(3600);
        let recent = now - LOG_RETENTION + Duration::from_secs(3600);
        let id = |c: char| c.to_string().repeat(64);
        let write = |name: &str, modified: SystemTime| {
            let file = std::fs::File::create(dir.path().join(name)).unwrap();
            file.set_modified(modified).unwrap();
        };
        write(&format!("{}.log", id('a')), old); // stale: removed
        write(&format!("{}.log", id('b')), recent); // recent: kept
        write(&format!("{}.log", id('c')), old); // the current keeper's: kept
        write("notes.log", old); // not a keeper's name: kept
        write(&format!("{}.txt", id('d')), old); // not a log: kept
        std::fs::create_dir(dir.path().join(format!("{}.log", id('e')))).unwrap();
        #[cfg(unix)]
        {
            // A link named like a stale log: the link is judged, not its target.
            let target = dir.path().join("target");
            write("target", old);
            std::os::unix::fs::symlink(&target, dir.path().join(format!("{}.log", id('f'))))
                .unwrap();
        }

        prune_logs(dir.path(), &id('c'), now);

        let left: std::collections::BTreeSet<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(!left.contains(&format!("{}.log", id('a'))), "{left:?}");
        for kept in [
            format!("{}.log", id('b')),
            format!("{}.log", id('c')),
            "notes.log".to_owned(),
            format!("{}.txt", id('d')),
            format!("{}.log", id('e')),
        ] {
            assert!(left.contains(&kept), "{kept} was removed: {left:?}");
        }
        #[cfg(unix)]
        assert!(left.contains("target"), "{left:?}");
    }
}
