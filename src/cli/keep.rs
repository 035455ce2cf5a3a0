//! `qbox keep NAME|ID`: the keeper of a detached container's login, and
//! starting one. `qbox run -d` starts the first; `qbox keep` starts a new
//! one for a container whose keeper died (killed, crashed). The keeper is
//! this executable as `qbox --db STORE --cli CLI keep --foreground ID`, in a
//! session of its own, with stdin from /dev/null and its output in
//! `<state dir>/qbox/keepers/<container id>.log`: it keeps the snapshot
//! fresh with the same `SnapshotKeeper` a foreground `qbox run` uses, and
//! ends (removing the snapshot) when the engine reports the container died
//! or was removed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use anyhow::Context;

use crate::app::events::{self, Weight};
use crate::app::report::printable_line;
use crate::app::term::Palette;
use crate::container::detached::{
    self, DetachedDir, KEEPER_CLI_LABEL, KEEPER_DB_LABEL, KEEPER_SCOPE_LABEL, KeeperState,
    RecordedSettings,
};
use crate::container::image;
use crate::container::manage::{self, Managed};
use crate::container::runtime_dir::RuntimeDir;
use crate::exit::{self, CommandError};
use crate::store::snapshot::SnapshotScope;
use crate::store::watch::{SnapshotKeeper, WatchEvent, WatchOptions};
use crate::store::{Flavor, StoreQuery};
use crate::timefmt::rfc3339_seconds;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  qbox keep web           # web's keeper was killed: start a new one
  qbox ps                 # KEEPER says running (pid N), dead or none

Only containers started with qbox run -d have a keeper of their own (a foreground
qbox run keeps its container's login itself). The keeper ends, and removes the
container's login snapshot, when the container stops or is removed. Its log:
$XDG_STATE_HOME/qbox/keepers/<container id>.log (~/.local/state/qbox/keepers/...);
a keeper that starts removes the logs nothing has written to for 30 days.
`qbox run --attach-keeper NAME|ID` is the same command.

Exit codes: 0 a keeper runs, 1 the container is not one qbox run -d started and
that runs, a keeper already runs, or the keeper did not start.")]
pub struct KeepArgs {
    /// The container: name or id (an id prefix of at least 4 characters).
    #[arg(value_name = "NAME|ID")]
    pub container: String,
    /// Be the keeper, in this process (what `qbox run -d` and `qbox keep` start).
    #[arg(long, hide = true)]
    pub foreground: bool,
    /// How long a keeper waits for an engine that does not answer before it
    /// ends (removing the login it kept): a keeper started by `qbox run -d`
    /// or `qbox keep` inherits the variable.
    #[arg(
        long,
        hide = true,
        env = "QBOX_KEEPER_ENGINE_TIMEOUT",
        value_name = "SECONDS",
        default_value_t = DEFAULT_ENGINE_PATIENCE,
        value_parser = clap::value_parser!(u64).range(1..=MAX_ENGINE_PATIENCE)
    )]
    pub engine_timeout: u64,
}

/// Seconds a keeper waits for an engine that does not answer (an engine
/// restarting comes back within seconds).
pub const DEFAULT_ENGINE_PATIENCE: u64 = 300;
/// The most a keeper may be told to wait: a day.
const MAX_ENGINE_PATIENCE: u64 = 24 * 60 * 60;

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
    fn global_args(&self) -> Vec<std::ffi::OsString> {
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
fn open_log(id: &str) -> anyhow::Result<(PathBuf, std::fs::File)> {
    let dir = log_dir().ok_or_else(|| {
        CommandError::new(exit::ERROR, "no state directory for the keeper's log")
            .hint("set XDG_STATE_HOME (or HOME)")
    })?;
    open_log_in(&dir, id)
}

/// [`open_log`] in `dir`. Every directory missing on the way is created
/// 0700, `<state dir>/qbox` included: the sidecar may put a generated
/// bearer token there.
fn open_log_in(dir: &Path, id: &str) -> anyhow::Result<(PathBuf, std::fs::File)> {
    crate::store::private_file::prepare_private_dir(dir)?;
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
    let file = options
        .open(&path)
        .map_err(|e| anyhow::anyhow!("opening the keeper's log {}: {e}", path.display()))?;
    Ok((path, file))
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
) -> anyhow::Result<Started> {
    let (log, file) = open_log(id)?;
    let exe =
        std::env::current_exe().map_err(|e| anyhow::anyhow!("finding the qbox executable: {e}"))?;
    let mut child = Command::new(exe)
        // Every refresh attempt and outcome is logged at info.
        .arg("-v")
        .args(settings.global_args())
        .args(["keep", "--foreground", id])
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        // The keeper must not hold the caller's working directory.
        .current_dir("/")
        .spawn()
        .map_err(|e| anyhow::anyhow!("starting the keeper: {e}"))?;
    let pid = child.id();
    let deadline = tokio::time::Instant::now() + START_PATIENCE;
    loop {
        if dir.keeper_state() == (KeeperState::Running { pid }) {
            // Not waited for: the keeper outlives this process.
            drop(child);
            return Ok(Started { pid, log });
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(CommandError::new(
                exit::ERROR,
                format!("the keeper of {} exited at start ({status})", short(id)),
            )
            .hint(format!("its log says why: {}", log.display()))
            .into());
        }
        if tokio::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(CommandError::new(
                exit::ERROR,
                format!(
                    "the keeper of {} did not start within {}s",
                    short(id),
                    START_PATIENCE.as_secs()
                ),
            )
            .hint(format!("its log may say why: {}", log.display()))
            .into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// The runtime directory of `qbox run`, if it exists and is private.
fn runtime() -> anyhow::Result<Option<RuntimeDir>> {
    Ok(RuntimeDir::existing(super::run::runtime_dir_path())?)
}

/// Removes the snapshot directories of detached containers that are gone
/// and whose keeper is dead (a keeper killed before its container ended).
pub(crate) fn sweep(containers: &[Managed]) {
    let Ok(Some(runtime)) = runtime() else { return };
    let keys = containers
        .iter()
        .filter_map(|c| c.detached.clone())
        .collect();
    detached::sweep(&runtime, &keys);
}

/// The snapshot directory of a detached container, if it has one.
pub(crate) fn detached_dir(container: &Managed) -> Option<DetachedDir> {
    let key = container.detached.as_ref()?;
    DetachedDir::find(&runtime().ok()??, key)
}

pub async fn run(args: KeepArgs, query: StoreQuery, palette: Palette) -> anyhow::Result<u8> {
    if args.foreground {
        let patience = Duration::from_secs(args.engine_timeout);
        return foreground(&args.container, query, patience).await;
    }
    let docker = image::connect().await?;
    let containers = manage::list(&docker).await?;
    sweep(&containers);
    let wanted = &args.container;
    let Some(container) = manage::find(&containers, wanted) else {
        return Err(CommandError::new(
            exit::ERROR,
            format!("no container that qbox run started is named `{wanted}`"),
        )
        .hint("`qbox ps -a` lists them")
        .into());
    };
    let name = &container.name;
    if container.run.is_some() {
        return Err(CommandError::new(
            exit::ERROR,
            format!("`{name}` was started by a foreground qbox run, which keeps its login itself"),
        )
        .hint("only containers started with qbox run -d get a keeper of their own; if its qbox run was killed, stop the container and start it again with qbox run -d")
        .into());
    }
    if container.state != "running" {
        return Err(CommandError::new(
            exit::ERROR,
            format!("`{name}` is not running ({})", container.state),
        )
        .hint("a stopped container needs no login; start a new one with qbox run -d")
        .into());
    }
    if container.detached.is_none() {
        return Err(CommandError::new(
            exit::ERROR,
            format!("`{name}` has no login snapshot to keep fresh"),
        )
        .hint("it was started with --auth none or --auth live, which need no keeper")
        .into());
    }
    let Some(dir) = detached_dir(container) else {
        return Err(CommandError::new(
            exit::ERROR,
            format!("the login snapshot of `{name}` is gone"),
        )
        .hint(format!(
            "its directory under {} was removed (a reboot empties the runtime directory): stop the container and start it again with qbox run -d",
            super::run::runtime_dir_path().display()
        ))
        .into());
    };
    if let KeeperState::Running { pid } = dir.keeper_state() {
        return Err(CommandError::new(
            exit::ERROR,
            format!("a keeper already runs for `{name}` (pid {pid})"),
        )
        .hint("`qbox ps` shows it; a container has one keeper at a time")
        .into());
    }
    let settings = keeper_settings(&dir, &container.id).ok_or_else(|| {
        CommandError::new(
            exit::ERROR,
            format!(
                "the login snapshot of `{name}` records no keeper settings for it ({})",
                dir.path().join("keeper.json").display()
            ),
        )
        .hint("stop the container and start it again with qbox run -d")
    })?;
    let started = spawn(&container.id, &settings, &dir).await?;
    eprintln!(
        "{} keeping the login of {name} fresh (keeper pid {}, log {})",
        palette.bold("qbox:"),
        started.pid,
        started.log.display()
    );
    crate::app::output::println(format_args!("{name}"))?;
    Ok(exit::OK)
}

/// The settings recorded in `dir` for container `id`: `None` when there are
/// none, or when the record names another container (a label can point a
/// container at another one's directory).
fn keeper_settings(dir: &DetachedDir, id: &str) -> Option<KeeperSettings> {
    let record = dir.record()?;
    if !record.container.is_empty() && record.container != id {
        return None;
    }
    KeeperSettings::from_record(record.settings.as_ref()?)
}

/// A timestamped line in the keeper's log.
fn log_line(text: &str) {
    eprintln!(
        "{} {}",
        rfc3339_seconds(time::OffsetDateTime::now_utc()),
        printable_line(text)
    );
}

/// A warning in the keeper's log, with the prefix warnings have on a
/// terminal.
fn log_warning(text: &str) {
    log_line(&format!("{} {text}", crate::app::report::WARNING));
}

/// The keeper itself: records itself, keeps the snapshot fresh until the
/// container is gone, then removes the snapshot directory. SIGTERM or
/// SIGINT end it without removing anything (the container still runs, and
/// `qbox keep` can start another keeper).
async fn foreground(id: &str, query: StoreQuery, patience: Duration) -> anyhow::Result<u8> {
    // Out of the starting terminal's session: closing it does not end the
    // keeper. (A process that already leads a group cannot: it is fine.)
    let _ = rustix::process::setsid();
    let docker = image::connect().await?;
    let containers = manage::list(&docker).await?;
    let container = containers.iter().find(|c| c.id == id).ok_or_else(|| {
        CommandError::new(
            exit::ERROR,
            format!("no container that qbox run started has the id {id}"),
        )
    })?;
    let Some(dir) = detached_dir(container) else {
        return Err(CommandError::new(
            exit::ERROR,
            format!("container {} has no detached login snapshot", short(id)),
        )
        .into());
    };
    let Some(_lock) = dir
        .lock()
        .with_context(|| format!("locking {}", dir.path().display()))?
    else {
        return Err(CommandError::new(
            exit::ERROR,
            format!("another keeper holds {}", dir.path().display()),
        )
        .into());
    };
    dir.record_this_process(id)
        .with_context(|| format!("recording the keeper in {}", dir.path().display()))?;
    log_line(&format!(
        "keeping the login snapshot {} of container {} fresh",
        dir.auth_dir().display(),
        short(id)
    ));
    // The scope `qbox run -d` chose, from the record it left in the
    // container's private directory.
    let scope = keeper_settings(&dir, id).map_or(SnapshotScope::AccessOnly, |s| s.scope);
    let options = WatchOptions {
        scope,
        ..WatchOptions::default()
    };
    let mut keeper = SnapshotKeeper::new(query, dir.auth_dir(), options);
    // The container's writable copy, where `qbox run -d` made one (a
    // container started by an older qbox has none).
    let copy = crate::store::watch::CopyDirs::under(dir.path());
    if copy.data_home.is_dir() {
        keeper = keeper.with_private_copy(copy);
    }
    // The log keeps every event, the warnings marked as on a terminal.
    let mut on_event = |event: WatchEvent<'_>| {
        let said = events::describe(&event, time::OffsetDateTime::now_utc());
        match said.weight {
            Weight::Progress => log_line(&said.text),
            Weight::Warning => {
                log_warning(&said.text);
                if let Some(hint) = said.hint {
                    log_line(&format!("hint: {hint}"));
                }
            }
        }
    };
    let (ended_tx, ended_rx) = tokio::sync::oneshot::channel::<String>();
    let (lost_tx, lost_rx) = tokio::sync::oneshot::channel::<Duration>();
    let watch = async {
        let why = tokio::select! {
            gone = detached::wait_until_gone(&docker, id, patience) => match gone {
                detached::Gone::Event(action) => format!("the engine reported `{action}`"),
                detached::Gone::NotRunning => "it is not running".to_owned(),
                detached::Gone::EngineLost(silent) => {
                    let _ = lost_tx.send(silent);
                    return;
                }
            },
            signal = stop_signal() => {
                let _ = ended_tx.send(signal);
                return;
            }
        };
        log_line(&format!("container {} has ended: {why}", short(id)));
    };
    if let Err(err) = keeper.run(watch, &mut on_event).await {
        log_line(&format!(
            "error: the snapshot can no longer be written: {}",
            exit::chain(&err)
        ));
        return Ok(exit::ERROR);
    }
    if let Ok(silent) = lost_rx.await {
        return Ok(engine_lost(&dir, id, silent));
    }
    if let Ok(signal) = ended_rx.await {
        log_line(&format!(
            "stopped by {signal}; the container still runs with its last snapshot (`qbox keep` starts a new keeper)"
        ));
        return Ok(exit::OK);
    }
    match dir.remove() {
        Ok(()) => log_line(&format!(
            "removed {}; the keeper ends",
            dir.path().display()
        )),
        Err(err) => log_warning(&format!("could not remove {}: {err}", dir.path().display())),
    }
    Ok(exit::OK)
}

/// The keeper's end when the engine has not answered for `silent`: whether
/// the container still runs is unknown, so the login is not kept fresh for
/// it any longer. The token goes (the snapshot file; the directory stays,
/// mounted, for a later `qbox keep`), and the reason is recorded for `qbox
/// ps` and logged. Exits 1.
fn engine_lost(dir: &DetachedDir, id: &str, silent: Duration) -> u8 {
    let why = format!(
        "the docker engine did not answer for {} s",
        silent.as_secs()
    );
    let snapshot = dir
        .auth_dir()
        .join(crate::store::snapshot::SNAPSHOT_FILE_NAME);
    match std::fs::remove_file(&snapshot) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => log_warning(&format!("could not remove {}: {err}", snapshot.display())),
    }
    if let Err(err) = dir.record_end(id, &why) {
        log_warning(&format!(
            "could not record why the keeper ends in {}: {err}",
            dir.path().display()
        ));
    }
    log_line(&format!(
        "error: {why}; the keeper ends and removed the login snapshot of container {} (`qbox keep` starts a new keeper once the engine is back)",
        short(id)
    ));
    exit::ERROR
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
        assert_eq!(keeper_settings(&dir, "c1"), None, "nothing recorded");
        let settings = KeeperSettings {
            db: "/home/u/.local/share/kiro-cli/data.sqlite3".into(),
            cli: Flavor::Kiro,
            scope: SnapshotScope::AccessOnly,
        };
        dir.record_run(settings.recorded()).unwrap();
        // Before its keeper recorded itself, and after.
        assert_eq!(keeper_settings(&dir, "c1"), Some(settings.clone()));
        dir.record_this_process("c1").unwrap();
        assert_eq!(keeper_settings(&dir, "c1"), Some(settings));
        // Another container whose labels name this directory gets nothing.
        assert_eq!(keeper_settings(&dir, "c2"), None);
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
    use super::*;

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
