//! Detached containers (`qbox run -d`) and their keepers: where each one's
//! login snapshot lives, how its keeper records itself, how a keeper knows
//! its container is gone, and the sweep of what a dead keeper left.
//!
//! A detached container's snapshot cannot live in a `run-<pid>-<start>`
//! directory: that name ties it to the `qbox run` process, which exits as
//! soon as the container has started, and the next run's sweep would remove
//! it. It lives in `detached-<key>` under the same runtime directory, where
//! `<key>` is random and is also the container's `qbox.detached` label:
//!
//! ```text
//! $XDG_RUNTIME_DIR/qbox/detached-<key>/         0700
//!     auth/data.sqlite3                         mounted read-only at /run/qbox/auth
//!     keeper.json                               {pid, start, container, settings}: who keeps it, and how
//!     keeper.lock                               held (flock) by the live keeper
//! ```
//!
//! Only `auth/` is mounted: the keeper's record stays out of the container.
//! The keeper is `qbox keep --foreground ID`, a process of its own. It holds
//! `keeper.lock` for as long as it runs, so two keepers of one container
//! cannot both refresh, and records its pid with its start time so that a
//! recycled pid is never taken for it (`qbox ps`). It ends when the engine
//! says the container died or was destroyed (its event stream, not a timer)
//! and then removes the whole directory. A keeper that was killed cannot: a
//! directory whose keeper is dead and whose container no longer exists is
//! removed by [`sweep`], which `qbox run -d`, `qbox keep` and `qbox stop`
//! call with the engine's list of containers.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::EventsOptionsBuilder;
use futures_util::StreamExt;

use super::runtime_dir::{self, Owner, RuntimeDir, RuntimeDirError};

/// The label holding a detached container's key (its directory's name).
pub const DETACHED_LABEL: &str = "qbox.detached";
/// The labels holding the store the keeper reads and which CLI wrote it:
/// the snapshot settings a re-attached keeper needs (`qbox keep`).
pub const KEEPER_DB_LABEL: &str = "qbox.keeper.db";
pub const KEEPER_CLI_LABEL: &str = "qbox.keeper.cli";
/// The label holding what the snapshot carries (`access-only` or
/// `refreshable`, [`crate::store::snapshot::SnapshotScope::name`]).
pub const KEEPER_SCOPE_LABEL: &str = "qbox.keeper.scope";

const DIR_PREFIX: &str = "detached-";
const AUTH_DIR: &str = "auth";
const RECORD_FILE: &str = "keeper.json";
const LOCK_FILE: &str = "keeper.lock";
/// Random bytes in a key (hex, twice as many characters).
const KEY_BYTES: usize = 8;

/// Whether a detached container's login is being kept fresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeeperState {
    /// The recorded keeper runs.
    Running { pid: u32 },
    /// No keeper runs: it was killed, crashed, or never recorded itself.
    Dead,
}

/// What a keeper writes about itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeeperRecord {
    pub pid: u32,
    /// Its start time in clock ticks since boot (0 where unknown).
    pub start: u64,
    pub container: String,
    /// Why the keeper ended by itself while its container may still run
    /// (the engine did not answer), for `qbox ps`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<String>,
    /// The snapshot settings `qbox run -d` chose, which every later keeper
    /// of the container uses. They live here, in a directory only the user
    /// can write, and not in the container's labels: an image carries
    /// labels of its own choosing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<RecordedSettings>,
}

/// A keeper's snapshot settings as [`KeeperRecord`] keeps them: the store
/// it reads, the CLI that wrote it, what the snapshot carries
/// ([`crate::store::snapshot::SnapshotScope::name`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RecordedSettings {
    pub db: PathBuf,
    pub cli: String,
    pub scope: String,
}

/// One detached container's directory under the runtime directory.
#[derive(Debug, Clone)]
pub struct DetachedDir {
    path: PathBuf,
    key: String,
}

/// Whether `key` is one qbox gives: lowercase hex of the expected length.
/// A label comes from the engine, so it is checked before it names a path.
fn valid_key(key: &str) -> bool {
    key.len() == 2 * KEY_BYTES
        && key
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl DetachedDir {
    /// A new directory (and its `auth/`, both 0700) with a fresh key.
    pub fn create(runtime: &RuntimeDir) -> Result<Self, RuntimeDirError> {
        let key = crate::random::hex(KEY_BYTES).map_err(|e| RuntimeDirError::Io {
            action: "naming a directory in",
            path: runtime.path().to_owned(),
            source: std::io::Error::other(e),
        })?;
        let path = runtime.path().join(format!("{DIR_PREFIX}{key}"));
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        for dir in [path.clone(), path.join(AUTH_DIR)] {
            builder.create(&dir).map_err(|e| RuntimeDirError::Io {
                action: "creating",
                path: dir,
                source: e,
            })?;
        }
        Ok(Self { path, key })
    }

    /// The directory of `key`, if it is there as qbox made it (a real
    /// directory of the user's, not a symbolic link).
    pub fn find(runtime: &RuntimeDir, key: &str) -> Option<Self> {
        if !valid_key(key) {
            return None;
        }
        let path = runtime.path().join(format!("{DIR_PREFIX}{key}"));
        let metadata = std::fs::symlink_metadata(&path).ok()?;
        (metadata.file_type().is_dir() && runtime_dir::owned_by_user(&metadata)).then(|| Self {
            path,
            key: key.to_owned(),
        })
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory mounted at `/run/qbox/auth`.
    pub fn auth_dir(&self) -> PathBuf {
        self.path.join(AUTH_DIR)
    }

    /// The recorded keeper, if any.
    pub fn record(&self) -> Option<KeeperRecord> {
        let text = std::fs::read_to_string(self.path.join(RECORD_FILE)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Whether the recorded keeper still runs (same pid, same start time).
    pub fn keeper_state(&self) -> KeeperState {
        match self.record() {
            Some(record)
                if runtime_dir::process_owner(record.pid, record.start) == Owner::Alive =>
            {
                KeeperState::Running { pid: record.pid }
            }
            _ => KeeperState::Dead,
        }
    }

    /// Records this process as the keeper of `container`, atomically (a
    /// reader sees the previous record or this one). `qbox run -d` records
    /// itself first, so that no sweep takes the directory for a dead
    /// keeper's while the real keeper starts.
    /// The settings already recorded are kept.
    pub fn record_this_process(&self, container: &str) -> std::io::Result<()> {
        let settings = self.record().and_then(|record| record.settings);
        self.write_record(container, settings, None)
    }

    /// Records this process (`qbox run -d`, before its container exists)
    /// with the settings every keeper of the container will use.
    pub fn record_run(&self, settings: RecordedSettings) -> std::io::Result<()> {
        self.write_record("", Some(settings), None)
    }

    /// Records why this keeper ends while its container may still run.
    pub fn record_end(&self, container: &str, why: &str) -> std::io::Result<()> {
        let settings = self.record().and_then(|record| record.settings);
        self.write_record(container, settings, Some(why.to_owned()))
    }

    /// Why the last keeper ended by itself, if it said.
    pub fn end_reason(&self) -> Option<String> {
        self.record()?.ended
    }

    fn write_record(
        &self,
        container: &str,
        settings: Option<RecordedSettings>,
        ended: Option<String>,
    ) -> std::io::Result<()> {
        let pid = std::process::id();
        let record = KeeperRecord {
            pid,
            start: runtime_dir::process_start(pid).unwrap_or(0),
            container: container.to_owned(),
            ended,
            settings,
        };
        let temporary = self.path.join(format!("{RECORD_FILE}.{pid}"));
        // Left by a process that had this pid before and was killed mid-write.
        let _ = std::fs::remove_file(&temporary);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temporary)?;
        file.write_all(&serde_json::to_vec(&record).map_err(std::io::Error::other)?)?;
        file.sync_all()?;
        std::fs::rename(&temporary, self.path.join(RECORD_FILE))
    }

    /// Takes the keeper's lock, held until the returned file is dropped
    /// (or the process ends, however it ends). `None` when another keeper
    /// holds it.
    pub fn lock(&self) -> std::io::Result<Option<std::fs::File>> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.path.join(LOCK_FILE))?;
        // flock(2): released by the kernel when the process ends, however.
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Some(file)),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    /// Removes the directory with the snapshot in it. Gone already is fine.
    pub fn remove(&self) -> std::io::Result<()> {
        match std::fs::remove_dir_all(&self.path) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        }
    }
}

/// Removes the directories whose keeper is dead and whose container is not
/// among `containers` (the keys of every qbox-managed container the engine
/// has, in any state); returns how many went.
pub fn sweep(runtime: &RuntimeDir, containers: &HashSet<String>) -> usize {
    let Ok(listing) = std::fs::read_dir(runtime.path()) else {
        return 0;
    };
    let mut removed = 0;
    for entry in listing.flatten() {
        let name = entry.file_name();
        let Some(key) = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)) else {
            continue;
        };
        if containers.contains(key) {
            continue;
        }
        let Some(dir) = DetachedDir::find(runtime, key) else {
            continue;
        };
        if dir.keeper_state() != KeeperState::Dead {
            continue;
        }
        match dir.remove() {
            Ok(()) => {
                tracing::info!(path = %dir.path.display(), "removed the snapshot directory of a detached container that is gone");
                removed += 1;
            }
            Err(err) => {
                tracing::warn!(path = %dir.path.display(), "could not remove a detached container's snapshot directory: {err}");
            }
        }
    }
    removed
}

/// The runs' directories ([`RuntimeDir::entries`]) and the detached
/// containers' directories, each with whether its owner (the run, or the
/// keeper) is alive: what `qbox doctor` lists.
pub fn entries(runtime: &RuntimeDir) -> Result<Vec<runtime_dir::RunEntry>, RuntimeDirError> {
    let mut entries = runtime.entries()?;
    let listing = std::fs::read_dir(runtime.path())
        .map_err(|e| RuntimeDirError::io("listing", runtime.path(), e))?;
    for entry in listing.flatten() {
        let name = entry.file_name();
        let Some(key) = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)) else {
            continue;
        };
        let Some(dir) = DetachedDir::find(runtime, key) else {
            continue;
        };
        let (pid, owner) = match dir.keeper_state() {
            KeeperState::Running { pid } => (pid, Owner::Alive),
            KeeperState::Dead => (dir.record().map_or(0, |r| r.pid), Owner::Gone),
        };
        entries.push(runtime_dir::RunEntry {
            path: dir.path,
            pid,
            owner,
        });
    }
    Ok(entries)
}

/// After `qbox stop`: waits (up to `patience`) until the stopped
/// container's keeper has ended, which removes the snapshot; a keeper that
/// was already dead cannot, so the directory is removed here (a stopped
/// container needs no login, as the keeper's own rule says: it ends on
/// `die`). `Ok(false)` when the keeper still runs.
pub async fn settle_after_stop(dir: &DetachedDir, patience: Duration) -> std::io::Result<bool> {
    let deadline = tokio::time::Instant::now() + patience;
    while matches!(dir.keeper_state(), KeeperState::Running { .. }) {
        if tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    dir.remove()?;
    Ok(true)
}

/// Why a keeper stopped waiting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gone {
    /// The engine reported this event (`die`, `destroy`).
    Event(String),
    /// The engine says it is not running, or does not know it.
    NotRunning,
    /// The engine did not answer for this long.
    EngineLost(Duration),
}

/// Waits until container `id` stops running: the engine's `die` (or
/// `destroy`) event, or an inspection that finds it stopped or gone. A
/// stopped container needs no login, and one kept with `--keep` is kept for
/// its logs, not restarted: a keeper ends on `die`. When the engine cannot
/// be reached the wait goes on (an engine restarting comes back), asking
/// again every few seconds, for up to `patience`: a keeper must not keep a
/// login fresh for ever for a container whose engine is gone.
pub async fn wait_until_gone(docker: &Docker, id: &str, patience: Duration) -> Gone {
    const RETRY: Duration = Duration::from_secs(2);
    // Since when the engine has not answered.
    let mut silent_since: Option<tokio::time::Instant> = None;
    loop {
        // Events are replayed from a second before the inspection: one that
        // happens between the two is not lost.
        let since = (time::OffsetDateTime::now_utc().unix_timestamp() - 1).to_string();
        match docker.inspect_container(id, None).await {
            Ok(inspected) => {
                let running = inspected
                    .state
                    .and_then(|state| state.running)
                    .unwrap_or(false);
                if !running {
                    return Gone::NotRunning;
                }
            }
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => return Gone::NotRunning,
            Err(err) => {
                let silent = silent_since
                    .get_or_insert_with(tokio::time::Instant::now)
                    .elapsed();
                if silent >= patience {
                    return Gone::EngineLost(silent);
                }
                tracing::warn!(container = %id, "the engine does not answer ({err}); asking again");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        }
        silent_since = None;
        let filters = HashMap::from([
            ("type", vec!["container"]),
            ("container", vec![id]),
            ("event", vec!["die", "destroy"]),
        ]);
        let options = EventsOptionsBuilder::default()
            .since(&since)
            .filters(&filters)
            .build();
        let mut events = docker.events(Some(options));
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => {
                    if let Some(action) = event.action.filter(|a| a == "die" || a == "destroy") {
                        return Gone::Event(action);
                    }
                }
                Err(err) => {
                    tracing::warn!(container = %id, "the engine's event stream broke ({err}); watching again");
                    break;
                }
            }
        }
        tokio::time::sleep(RETRY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_keys_qbox_gives_name_a_directory() {
        assert!(valid_key("0123456789abcdef"));
        for bad in [
            "",
            "0123456789abcde",
            "0123456789abcdef0",
            "0123456789ABCDEF",
            "../../../../etc/x",
            "0123456789abcde/",
        ] {
            assert!(!valid_key(bad), "{bad}");
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_keeper_is_running_while_its_process_is_and_the_lock_is_exclusive() {
        use std::os::unix::fs::PermissionsExt;
        let base = tempfile::tempdir().unwrap();
        let runtime_path = base.path().join("qbox");
        std::fs::create_dir(&runtime_path).unwrap();
        std::fs::set_permissions(&runtime_path, std::fs::Permissions::from_mode(0o700)).unwrap();
        let runtime = RuntimeDir::open(runtime_path).unwrap();
        let dir = DetachedDir::create(&runtime).unwrap();
        assert_eq!(dir.keeper_state(), KeeperState::Dead, "nothing recorded");
        let settings = RecordedSettings {
            db: "/home/u/.local/share/amazon-q/data.sqlite3".into(),
            cli: "amazon-q".into(),
            scope: "access-only".into(),
        };
        dir.record_run(settings.clone()).unwrap();
        dir.record_this_process("c0ffee").unwrap();
        // The keeper's own record keeps what `qbox run -d` chose.
        assert_eq!(dir.record().unwrap().settings, Some(settings));
        assert_eq!(
            dir.keeper_state(),
            KeeperState::Running {
                pid: std::process::id()
            }
        );
        let found = DetachedDir::find(&runtime, dir.key()).unwrap();
        assert_eq!(found.record().unwrap().container, "c0ffee");
        let held = dir.lock().unwrap().expect("the first lock");
        assert!(
            found.lock().unwrap().is_none(),
            "a second keeper is refused"
        );
        drop(held);
        assert!(found.lock().unwrap().is_some());

        // A live keeper's directory, or one whose container exists, stays.
        assert_eq!(sweep(&runtime, &HashSet::new()), 0);
        // A recycled pid (another start time) is a dead keeper.
        let record = KeeperRecord {
            pid: std::process::id(),
            start: runtime_dir::process_start(std::process::id()).unwrap() + 1,
            container: "c0ffee".into(),
            ended: None,
            settings: None,
        };
        std::fs::write(
            dir.path().join(RECORD_FILE),
            serde_json::to_vec(&record).unwrap(),
        )
        .unwrap();
        assert_eq!(dir.keeper_state(), KeeperState::Dead);
        let containers = HashSet::from([dir.key().to_owned()]);
        assert_eq!(sweep(&runtime, &containers), 0, "its container exists");
        assert_eq!(sweep(&runtime, &HashSet::new()), 1);
        assert!(!dir.path().exists());
    }
}
