//! The per-user runtime directory of `qbox run`, and the sweep that keeps it
//! from filling with the snapshots of runs that were killed.
//!
//! Every `qbox run --auth snapshot` keeps its login snapshot in a directory
//! `run-<pid>-<start>` under one directory per user: `$XDG_RUNTIME_DIR/qbox`,
//! or `qbox/runtime` in the user's own state directory
//! ([`user_dirs::user_state_dir`]) when the session has no runtime directory. `<pid>` and `<start>` name the owning process (its
//! start time in clock ticks since boot, read from `/proc`), so a pid that
//! the kernel has since given to another process is not taken for the owner.
//! A run that ends removes its own directory; one killed with SIGKILL
//! cannot, so every `qbox run` first removes the directories whose owner is
//! gone, and `qbox doctor` lists them.
//!
//! The directory lives in the container module rather than the store's: it
//! is the life cycle of a run (which process owns what, and when it ended),
//! while the store module only decides whether a directory is safe to write
//! a snapshot into, which this module asks it ([`private_file::check_dir`],
//! [`private_file::prepare_private_dir`]).
//!
//! Other local users are adversaries. The directory is never a predictable
//! name under the shared temporary directory, which another user could
//! create first to stop `qbox run` (only a user without a home directory
//! falls back to `qbox-<uid>` there); and a runtime directory that is not ours
//! alone (another owner, a symlink, a mode wider than 0700) is refused with a
//! hint, never used. The
//! sweep removes only entries whose name qbox gives (`run-<pid>-<start>`)
//! and that are real directories owned by the user, never follows a
//! symbolic link (the entry's own type is read without following it, and
//! `remove_dir_all` unlinks links instead of descending), and never removes
//! a directory whose owner is alive, or might be: when liveness cannot be
//! established the directory stays.

use std::path::{Path, PathBuf};

use crate::exit::{self, Diagnose};
use crate::store::StoreError;
use crate::store::private_file::{self, DirVerdict};
use crate::store::user_dirs;

/// The runtime directory's name under `$XDG_RUNTIME_DIR`.
pub const XDG_DIR_NAME: &str = "qbox";
/// The runtime directory's name in qbox's state directory, without
/// `XDG_RUNTIME_DIR`.
pub const STATE_DIR_NAME: &str = "runtime";
/// Where a run's directory holds the snapshot mounted at `/run/qbox/auth`
/// (beside it, `data/` and `home/`: the container's writable copy).
pub const RUN_AUTH_DIR: &str = "auth";
/// The prefix of each run's directory.
const RUN_PREFIX: &str = "run-";

/// Why the runtime directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeDirError {
    #[error("the runtime directory {} cannot be used: {reason}", .path.display())]
    Unsafe { path: PathBuf, reason: String },
    #[error("{action} {}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(StoreError),
}

impl Diagnose for RuntimeDirError {
    /// `qbox run` cannot start without it: a failure of qbox (125).
    fn exit_code(&self) -> u8 {
        exit::ENGINE
    }

    fn hint(&self) -> Option<String> {
        match self {
            Self::Unsafe { path, .. } => Some(format!(
                "qbox keeps each run's login snapshot there, so it must be yours alone (mode 0700): \
                 if it is yours, `chmod 700 {}`; if someone else created it, point XDG_RUNTIME_DIR \
                 (or XDG_STATE_HOME) at a directory only you can write",
                path.display()
            )),
            Self::Io { .. } => None,
            Self::Store(err) => err.hint(),
        }
    }
}

impl RuntimeDirError {
    pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }
}

impl From<StoreError> for RuntimeDirError {
    /// The store's safety check speaks of snapshots; for the runtime
    /// directory its refusal gets this module's message and hint.
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::UnsafeDirectory { path, reason } => Self::Unsafe { path, reason },
            other => Self::Store(other),
        }
    }
}

/// Where the runtime directory is: `$XDG_RUNTIME_DIR/qbox` when the session
/// has a runtime directory (an absolute path, as the XDG specification
/// demands of it), else `qbox/runtime` in the user's state directory
/// ([`user_dirs::user_state_dir`]), created 0700 and checked like any other.
/// Only a user without a home directory gets `qbox-<uid>` under the
/// temporary directory, still refused unless it is theirs alone.
pub fn locate(xdg_runtime_dir: Option<&Path>) -> PathBuf {
    match xdg_runtime_dir.filter(|dir| dir.is_absolute()) {
        Some(dir) => dir.join(XDG_DIR_NAME),
        None => user_dirs::user_state_dir().map_or_else(
            || std::env::temp_dir().join(format!("qbox-{}", euid())),
            |dir| dir.join(STATE_DIR_NAME),
        ),
    }
}

fn euid() -> u32 {
    #[cfg(unix)]
    {
        rustix::process::geteuid().as_raw()
    }
    #[cfg(not(unix))]
    {
        0
    }
}

/// Whether the process that owns a run's directory still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// Running (or possibly running: liveness could not be ruled out).
    Alive,
    /// Gone, or its pid now belongs to a process that started later.
    Gone,
}

/// One run's directory found in the runtime directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunEntry {
    pub path: PathBuf,
    pub pid: u32,
    pub owner: Owner,
}

/// The checked runtime directory.
#[derive(Debug, Clone)]
pub struct RuntimeDir {
    path: PathBuf,
}

impl RuntimeDir {
    /// Creates the directory (mode 0700) if missing, and refuses one that is
    /// not private to the user.
    pub fn open(path: PathBuf) -> Result<Self, RuntimeDirError> {
        private_file::prepare_private_dir(&path)?;
        Self::checked(path)
    }

    /// The directory if it exists and is private; `None` when it does not
    /// exist (nothing is created: for reports).
    pub fn existing(path: PathBuf) -> Result<Option<Self>, RuntimeDirError> {
        if private_file::check_dir(&path)? == DirVerdict::Missing {
            return Ok(None);
        }
        Self::checked(path).map(Some)
    }

    fn checked(path: PathBuf) -> Result<Self, RuntimeDirError> {
        match private_file::check_dir(&path)? {
            DirVerdict::Private => Ok(Self { path }),
            DirVerdict::Wide { mode } => Err(RuntimeDirError::Unsafe {
                reason: format!("others can list or enter it (mode {mode:04o})"),
                path,
            }),
            DirVerdict::Missing => Err(RuntimeDirError::io(
                "opening",
                &path,
                std::io::ErrorKind::NotFound.into(),
            )),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory of the run named `run` (see [`this_run`]).
    pub fn run_dir(&self, run: &str) -> PathBuf {
        self.path.join(format!("{RUN_PREFIX}{run}"))
    }

    /// A new directory (mode 0700) for this process's run, removed when the
    /// handle is dropped; named after this process so that a later sweep can
    /// tell when its owner is gone.
    pub fn create_run_dir(&self) -> Result<tempfile::TempDir, RuntimeDirError> {
        let name = format!("{RUN_PREFIX}{}", this_run());
        let mut builder = tempfile::Builder::new();
        // The exact name, no random part: one run per process.
        builder.prefix(&name).rand_bytes(0);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(std::fs::Permissions::from_mode(0o700));
        }
        builder
            .tempdir_in(&self.path)
            .map_err(|e| RuntimeDirError::io("creating a run directory in", &self.path, e))
    }

    /// The runs' directories in the runtime directory, with whether their
    /// owner is alive. Entries that qbox did not make (another name, not a
    /// directory, a symbolic link, another owner) are not listed.
    pub fn entries(&self) -> Result<Vec<RunEntry>, RuntimeDirError> {
        let mut entries = owned_dirs(&self.path, parse_run_name)
            .map_err(|e| RuntimeDirError::io("listing", &self.path, e))?;
        entries.sort_by_key(|entry| entry.pid);
        Ok(entries)
    }

    /// Removes the directories whose owner is gone and returns them. A
    /// directory that cannot be removed is logged and left for the next run.
    pub fn sweep(&self) -> Result<Vec<RunEntry>, RuntimeDirError> {
        Ok(remove_abandoned(
            self.entries()?,
            "removed the snapshot directory of a run that was killed",
            "could not remove an orphaned snapshot directory",
        ))
    }
}

/// The directories in `dir` named after the process that owns them (`parse`
/// reads a name as that process's `(pid, start)`, or refuses it), with
/// whether it runs: only real directories of this user, never what a
/// symbolic link points to. The runs' directories here, the agent's
/// private directories in the temporary directory (`agent::leftovers`).
pub(crate) fn owned_dirs(
    dir: &Path,
    parse: impl Fn(&str) -> Option<(u32, u64)>,
) -> std::io::Result<Vec<RunEntry>> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Some((pid, start)) = entry.file_name().to_str().and_then(&parse) else {
            continue;
        };
        // `DirEntry::metadata` does not follow a symbolic link.
        let Ok(metadata) = entry.metadata() else {
            continue;
        };
        if !metadata.file_type().is_dir() || !owned_by_user(&metadata) {
            continue;
        }
        entries.push(RunEntry {
            path: entry.path(),
            pid,
            owner: owner_state(pid, start),
        });
    }
    Ok(entries)
}

/// The one sweep of directories whose owner was killed: removes those of
/// `entries` whose owner is gone, and returns them. One that cannot be
/// removed is logged (`failed`) and left for the next sweep; each removal
/// is logged (`removed`).
pub(crate) fn remove_abandoned(
    entries: Vec<RunEntry>,
    removed: &str,
    failed: &str,
) -> Vec<RunEntry> {
    let mut gone = Vec::new();
    for entry in entries {
        if entry.owner != Owner::Gone {
            continue;
        }
        // Does not follow symbolic links: a link is unlinked, not entered.
        match std::fs::remove_dir_all(&entry.path) {
            Ok(()) => {
                tracing::info!(path = %entry.path.display(), pid = entry.pid, "{removed}");
                gone.push(entry);
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                tracing::warn!(path = %entry.path.display(), "{failed}: {err}");
            }
        }
    }
    gone
}

#[cfg(unix)]
pub(crate) fn owned_by_user(metadata: &std::fs::Metadata) -> bool {
    std::os::unix::fs::MetadataExt::uid(metadata) == euid()
}

#[cfg(not(unix))]
pub(crate) fn owned_by_user(_metadata: &std::fs::Metadata) -> bool {
    true
}

/// This process as a run: `PID-START` (its start time in clock ticks since
/// boot, 0 where unknown), which a reused pid cannot take on. It names the
/// run's directory and labels its container (`qbox.run`).
pub fn this_run() -> String {
    let pid = std::process::id();
    format!("{pid}-{}", process_start(pid).unwrap_or(0))
}

/// The `qbox.creator` label of a container this process creates:
/// `PID-START:UID:BOOT`, bound to this user and to this boot of this
/// machine (the kernel's random boot id). A pid says something only about
/// the machine and boot it came from: on an engine shared over TCP another
/// machine's qbox creates containers too, and an image can carry any
/// label, so the sweep judges only the containers whose label names this
/// boot and this user ([`creator_owner`]).
pub fn this_creator() -> String {
    format!(
        "{}:{}:{}",
        this_run(),
        euid(),
        boot_id().unwrap_or_default()
    )
}

/// Whether the creator named by a `qbox.creator` label still runs; `None`
/// when the label is not this user's on this boot (another machine, another
/// user, a label an image brought, or a system without a boot id), which
/// is never this process's to judge.
pub fn creator_owner(label: &str) -> Option<Owner> {
    let mut parts = label.splitn(3, ':');
    let (run, uid, boot) = (parts.next()?, parts.next()?, parts.next()?);
    let here = boot_id()?;
    if boot != here || uid != euid().to_string() {
        return None;
    }
    let (pid, start) = parse_run_name(&format!("{RUN_PREFIX}{run}"))?;
    Some(owner_state(pid, start))
}

/// This boot's random id (Linux's `/proc/sys/kernel/random/boot_id`).
fn boot_id() -> Option<String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id = id.trim();
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'))
        .then(|| id.to_owned())
}

/// Whether the `qbox run` named `run` (`PID-START`) is still running.
pub fn run_owner(run: &str) -> Owner {
    match parse_run_name(&format!("{RUN_PREFIX}{run}")) {
        Some((pid, start)) => owner_state(pid, start),
        None => Owner::Gone,
    }
}

fn parse_run_name(name: &str) -> Option<(u32, u64)> {
    let (pid, start) = name.strip_prefix(RUN_PREFIX)?.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(pid) || !digits(start) {
        return None;
    }
    let pid: u32 = pid.parse().ok()?;
    let start: u64 = start.parse().ok()?;
    // Pids are positive and fit an i32.
    (pid > 0 && i32::try_from(pid).is_ok()).then_some((pid, start))
}

/// Whether the process `pid` that started at `start` (0: unknown) runs:
/// a detached container's keeper, recorded by pid and start time.
pub fn process_owner(pid: u32, start: u64) -> Owner {
    owner_state(pid, start)
}

/// Whether the process `pid` that started at `start` (0: unknown) runs.
fn owner_state(pid: u32, start: u64) -> Owner {
    #[cfg(unix)]
    {
        let Some(raw) = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        else {
            return Owner::Gone;
        };
        // No such process: gone. Permission denied: a process runs under
        // that pid, and its start time decides below.
        if rustix::process::test_kill_process(raw) == Err(rustix::io::Errno::SRCH) {
            return Owner::Gone;
        }
    }
    match process_state(pid) {
        // A zombie has finished: it only waits for its parent to reap it.
        Some(ProcessState { zombie: true, .. }) => Owner::Gone,
        Some(ProcessState { start: actual, .. }) if start != 0 && actual != start => Owner::Gone,
        // Same process, or liveness cannot be ruled out: keep its directory.
        _ => Owner::Alive,
    }
}

struct ProcessState {
    start: u64,
    zombie: bool,
}

/// A process's start time (clock ticks since boot) and whether it is a
/// zombie, from `/proc/<pid>/stat`; `None` where there is no `/proc`.
fn process_state(pid: u32) -> Option<ProcessState> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

pub(crate) fn process_start(pid: u32) -> Option<u64> {
    process_state(pid).map(|state| state.start)
}

/// Field 3 (state) and field 22 (starttime) of a `/proc/<pid>/stat` line.
/// The command name (field 2) is in parentheses and may itself contain
/// spaces and parentheses, so fields are counted from the last `)`.
fn parse_stat(stat: &str) -> Option<ProcessState> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let state = fields.first()?;
    let start = fields.get(22 - 3)?.parse().ok()?;
    Some(ProcessState {
        start,
        zombie: matches!(*state, "Z" | "X"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_creator_of_this_user_on_this_boot_is_judged() {
        let mine = this_creator();
        if boot_id().is_none() {
            // No boot id: no label is ever judged.
            assert_eq!(creator_owner(&mine), None);
            return;
        }
        assert_eq!(creator_owner(&mine), Some(Owner::Alive));
        let (run, rest) = mine.split_once(':').unwrap();
        let (uid, boot) = rest.split_once(':').unwrap();
        // A pid that cannot run: judged gone, but only here.
        let dead = format!("{}-1", i32::MAX);
        assert_eq!(
            creator_owner(&format!("{dead}:{uid}:{boot}")),
            Some(Owner::Gone)
        );
        let other_boot = "00000000-0000-4000-8000-000000000000";
        assert_eq!(creator_owner(&format!("{dead}:{uid}:{other_boot}")), None);
        let other_uid = uid.parse::<u32>().unwrap().wrapping_add(1);
        assert_eq!(creator_owner(&format!("{dead}:{other_uid}:{boot}")), None);
        assert_eq!(creator_owner(run), None);
        assert_eq!(creator_owner(&format!("{dead}:{uid}")), None);
        assert_eq!(creator_owner(&format!("x-1:{uid}:{boot}")), None);
    }

    #[test]
    fn only_names_qbox_gives_are_runs() {
        assert_eq!(parse_run_name("run-123-456"), Some((123, 456)));
        assert_eq!(parse_run_name("run-1-0"), Some((1, 0)));
        for other in [
            "run-",
            "run-1",
            "run-1-",
            "run--1-2",
            "run-+1-2",
            "run-1-2-3",
            "run-0-5",
            "run-4294967295-1",
            "run-1-2 ",
            "qbox-auth-x",
            "ruN-1-2",
            "run-1-x",
        ] {
            assert_eq!(parse_run_name(other), None, "{other}");
        }
    }

    #[test]
    fn stat_lines_are_read_after_the_last_parenthesis() {
        let line = "4242 (a) b) (c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 18446744073709551615";
        let state = parse_stat(line).unwrap();
        assert_eq!(state.start, 987654);
        assert!(!state.zombie);
        let zombie = line.replace(") S 1", ") Z 1");
        assert!(parse_stat(&zombie).unwrap().zombie);
        assert!(parse_stat("garbage").is_none());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_is_alive_and_a_later_start_is_not_it() {
        let pid = std::process::id();
        let start = process_start(pid).unwrap();
        assert_eq!(owner_state(pid, start), Owner::Alive);
        assert_eq!(owner_state(pid, start + 1), Owner::Gone, "a reused pid");
        assert_eq!(owner_state(pid, 0), Owner::Alive, "start unknown: kept");
    }

    #[test]
    fn the_runtime_directory_follows_xdg_or_the_users_state_directory() {
        assert_eq!(
            locate(Some(Path::new("/run/user/1000"))),
            Path::new("/run/user/1000/qbox")
        );
        let fallback = locate(None);
        assert_eq!(
            Some(fallback.clone()),
            user_dirs::user_state_dir().map(|dir| dir.join("runtime"))
        );
        assert_eq!(locate(Some(Path::new("relative"))), fallback);
    }
}
