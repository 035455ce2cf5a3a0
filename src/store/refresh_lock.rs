//! Refreshes of one login serialised across processes, and the time of the
//! last attempt shared between them.
//!
//! Two keepers of one store (two `qbox snapshot --watch`, a `qbox run` and a
//! sidecar) would otherwise both see a token inside its window and both
//! spend its refresh token; with rotation, the second one's call is then
//! refused, and a service may take it as token theft. A keeper takes this
//! lock, re-reads the store, and refreshes only if the token it finds is
//! still the one that needed it. The lock file holds the time of the last
//! attempt, so the minimum interval between attempts holds across
//! processes too, failed attempts included, and the lifetime of the token
//! the last refresh produced, so every process caps its refresh window
//! alike. It holds no secret.
//!
//! The lock lives in a private per-user directory (`$XDG_RUNTIME_DIR/
//! qbox-refresh` when that runtime directory is the user's own and no one else can write it,
//! else `qbox/refresh` in the user's own state directory,
//! [`super::user_dirs::user_state_dir`]; never a guessable name in the shared
//! temporary directory, which another user could create first to disable the
//! lock), never next to the user's store, which qbox does not write to. It is
//! advisory: when it cannot be had, the compare-and-swap write-back still
//! keeps the store consistent.
//!
//! Beside the lock, `HASH.grant` records a grant between the token
//! service's answer and its write-back ([`PendingGrant`]): a service that
//! rotates refresh tokens has already spent the old one when it answers, so
//! a qbox killed before its commit (or a store rolled back from a hot
//! journal) would otherwise be left holding a refresh token that no longer
//! works, and the login would be lost. The next refresh check writes the
//! recorded grant if the store still holds the token it replaced. The file
//! holds the new token: 0600 in the 0700 directory, synced before the
//! write-back begins.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The longest a keeper waits for another process's refresh to finish:
/// a little over the refresh request's own timeout.
pub const LOCK_WAIT: Duration = Duration::from_secs(40);

/// The directory holding the lock files (`None` without a runtime
/// directory and without a home).
fn lock_dir() -> Option<PathBuf> {
    match super::user_dirs::private_runtime_dir() {
        Some(dir) => Some(dir.join("qbox-refresh")),
        None => super::user_dirs::user_state_dir().map(|dir| dir.join("refresh")),
    }
}

/// The lock file of the store at `store` (FNV-1a of its absolute path: a
/// name that is the same in every qbox process and version).
fn lock_path(store: &Path) -> Option<PathBuf> {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in super::display_path(store).as_os_str().as_encoded_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    lock_dir().map(|dir| dir.join(format!("{hash:016x}.lock")))
}

/// A grant the token service gave that is not yet known to be in the
/// store: the token row's key, the SHA-256 (hex) of the refresh token it
/// replaces, and the row's new value.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingGrant {
    pub key: String,
    pub replaces: String,
    pub row: crate::secret::Secret,
}

/// The hex SHA-256 of `refresh_token`: how a record names the token it
/// replaces without holding it.
pub fn digest(refresh_token: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, refresh_token.as_bytes())
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The grant record of the store at `store`.
fn grant_path(store: &Path) -> Option<PathBuf> {
    lock_path(store).map(|lock| lock.with_extension("grant"))
}

/// Records `grant` durably (0600, synced, in the checked private directory)
/// before it is written to the store at `store`.
pub fn record_pending_grant(store: &Path, grant: &PendingGrant) -> Result<(), String> {
    let path = grant_path(store).ok_or("no directory for the refresh lock")?;
    let (dir, name) = match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => (dir, name.to_string_lossy().into_owned()),
        _ => return Err("no directory for the refresh lock".into()),
    };
    let text = serde_json::json!({
        "key": grant.key,
        "replaces": grant.replaces,
        "row": grant.row.expose(),
    })
    .to_string();
    super::private_file::write_private_file(dir, &name, text.as_bytes())
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Whether a grant record exists for the store at `store` (one `stat`:
/// the cost every refresh check pays).
pub fn has_pending_grant(store: &Path) -> bool {
    grant_path(store).is_some_and(|path| std::fs::symlink_metadata(path).is_ok())
}

/// The grant recorded for the store at `store`, if any can be read.
pub fn pending_grant(store: &Path) -> Option<PendingGrant> {
    let text = std::fs::read_to_string(grant_path(store)?).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some(PendingGrant {
        key: value.get("key")?.as_str()?.to_owned(),
        replaces: value.get("replaces")?.as_str()?.to_owned(),
        row: crate::secret::Secret::containing_parsed(value.get("row")?.as_str()?),
    })
}

/// Removes the grant record of the store at `store` (its grant is in the
/// store, or the store moved on without it).
pub fn clear_pending_grant(store: &Path) {
    if let Some(path) = grant_path(store)
        && let Err(err) = std::fs::remove_file(&path)
        && err.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), "cannot remove the grant record: {err}");
    }
}

/// What the lock file records (JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    /// When the last attempt began, milliseconds since the epoch.
    #[serde(default)]
    pub attempt_ms: Option<u64>,
    /// The expiry (seconds since the epoch) of the token the last
    /// successful refresh produced...
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// ...and that token's lifetime in milliseconds.
    #[serde(default)]
    pub lifetime_ms: Option<u64>,
}

impl Record {
    fn parse(text: &str) -> Self {
        serde_json::from_str(text).unwrap_or_default()
    }

    /// When the last attempt began.
    pub fn last_attempt(&self) -> Option<SystemTime> {
        SystemTime::UNIX_EPOCH.checked_add(Duration::from_millis(self.attempt_ms?))
    }

    /// The lifetime of the token expiring at `expires_at`, if a refresh
    /// recorded it.
    pub fn lifetime_of(&self, expires_at: time::OffsetDateTime) -> Option<Duration> {
        (self.expires_at? == expires_at.unix_timestamp())
            .then(|| Duration::from_millis(self.lifetime_ms.unwrap_or(0)))
            .filter(|d| !d.is_zero())
    }
}

/// What the lock file of the store at `store` records (read without
/// locking: for reports and lifetimes, never for deciding to refresh).
pub fn record(store: &Path) -> Record {
    lock_path(store)
        .and_then(|path| std::fs::read_to_string(path).ok())
        .map(|text| Record::parse(&text))
        .unwrap_or_default()
}

fn millis(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The exclusive right to refresh one store's login, until dropped.
#[derive(Debug)]
pub struct RefreshLock {
    #[cfg(unix)]
    file: std::fs::File,
    #[cfg(unix)]
    path: PathBuf,
}

/// The lock files this process holds. `flock` locks belong to an open file,
/// so a second open in the same process would wait for the first for ever:
/// a read that must roll back a hot journal while this process refreshes
/// (and so holds the lock already) goes ahead without taking it again.
#[cfg(unix)]
static HELD: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

#[cfg(unix)]
fn held_here(path: &Path) -> bool {
    HELD.lock()
        .map(|held| held.iter().any(|p| p == path))
        .unwrap_or(false)
}

#[cfg(unix)]
impl Drop for RefreshLock {
    fn drop(&mut self) {
        if let Ok(mut held) = HELD.lock()
            && let Some(at) = held.iter().position(|p| *p == self.path)
        {
            held.swap_remove(at);
        }
    }
}

/// How long a waiting process sleeps between attempts at the lock.
#[cfg(unix)]
const RETRY: Duration = Duration::from_millis(50);

/// One non-blocking attempt at the lock file.
#[cfg(unix)]
enum Taken {
    Yes,
    /// Another process holds it, and there is time left to wait.
    Busy,
}

/// Tries the lock once: taken, or busy while `may_wait`; `None` (logged)
/// when it failed, or was still busy when waiting is over. The one step
/// that the async and the blocking waits share.
#[cfg(unix)]
fn try_take(file: &std::fs::File, path: &Path, may_wait: bool) -> Option<Taken> {
    match rustix::fs::flock(file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Some(Taken::Yes),
        Err(rustix::io::Errno::WOULDBLOCK) if may_wait => Some(Taken::Busy),
        Err(errno) => {
            tracing::warn!(
                path = %path.display(),
                "cannot take the refresh lock: {}",
                std::io::Error::from(errno)
            );
            None
        }
    }
}

#[cfg(unix)]
impl RefreshLock {
    /// Takes the lock of the store at `store`, waiting up to `wait` for
    /// another process to release it. `None` (logged) when the lock
    /// directory is unusable or the wait ran out.
    pub async fn acquire(store: &Path, wait: Duration) -> Option<Self> {
        let Some(path) = lock_path(store) else {
            tracing::warn!(
                "cannot use the refresh lock: no runtime directory (XDG_RUNTIME_DIR) and no home directory"
            );
            return None;
        };
        let file = {
            let path = path.clone();
            super::off_reactor(move || open_lock_file(&path)).await
        };
        let file = match file {
            Ok(file) => file,
            Err(err) => {
                tracing::warn!(path = %path.display(), "cannot use the refresh lock: {err}");
                return None;
            }
        };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match try_take(&file, &path, tokio::time::Instant::now() < deadline)? {
                Taken::Yes => return Some(Self::held(file, path)),
                Taken::Busy => tokio::time::sleep(RETRY).await,
            }
        }
    }

    fn held(file: std::fs::File, path: PathBuf) -> Self {
        if let Ok(mut held) = HELD.lock() {
            held.push(path.clone());
        }
        Self { file, path }
    }

    /// [`Self::acquire`] for blocking code (the store's read path). `None`
    /// also when this process holds the lock already: its holder is on the
    /// way to this very store, and waiting for it here would never end.
    pub fn acquire_blocking(store: &Path, wait: Duration) -> Option<Self> {
        let path = lock_path(store)?;
        if held_here(&path) {
            return None;
        }
        let file = match open_lock_file(&path) {
            Ok(file) => file,
            Err(err) => {
                tracing::warn!(path = %path.display(), "cannot use the refresh lock: {err}");
                return None;
            }
        };
        let deadline = std::time::Instant::now() + wait;
        loop {
            match try_take(&file, &path, std::time::Instant::now() < deadline)? {
                Taken::Yes => return Some(Self::held(file, path)),
                Taken::Busy => std::thread::sleep(RETRY),
            }
        }
    }

    /// What the file records now.
    pub fn record(&self) -> Record {
        use std::io::{Read, Seek};
        let mut text = String::new();
        let mut file = &self.file;
        if file
            .rewind()
            .and_then(|()| file.read_to_string(&mut text))
            .is_err()
        {
            return Record::default();
        }
        Record::parse(&text)
    }

    fn write(&self, record: &Record) {
        use std::io::{Seek, Write};
        let text = serde_json::to_string(record).unwrap_or_default();
        let mut file = &self.file;
        let written = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(text.as_bytes()));
        if let Err(err) = written {
            tracing::warn!("cannot record the refresh attempt: {err}");
        }
    }

    /// Records that an attempt begins at `at`.
    pub fn record_attempt(&self, at: SystemTime) {
        let mut record = self.record();
        record.attempt_ms = Some(millis(at));
        self.write(&record);
    }

    /// Records the token a refresh produced: its expiry and lifetime.
    pub fn record_grant(&self, expires_at: time::OffsetDateTime, lifetime: Duration) {
        let mut record = self.record();
        record.expires_at = Some(expires_at.unix_timestamp());
        record.lifetime_ms = Some(u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX));
        self.write(&record);
    }
}

#[cfg(unix)]
fn open_lock_file(path: &Path) -> Result<std::fs::File, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    super::private_file::prepare_private_dir(dir).map_err(|e| e.to_string())?;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc_nofollow())
        .open(path)
        .map_err(|e| e.to_string())
}

#[cfg(unix)]
fn libc_nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

#[cfg(not(unix))]
impl RefreshLock {
    /// No cross-process lock here: the compare-and-swap alone protects
    /// the store.
    pub async fn acquire(_store: &Path, _wait: Duration) -> Option<Self> {
        None
    }

    pub fn acquire_blocking(_store: &Path, _wait: Duration) -> Option<Self> {
        None
    }

    pub fn record(&self) -> Record {
        Record::default()
    }

    pub fn record_attempt(&self, _at: SystemTime) {}

    pub fn record_grant(&self, _expires_at: time::OffsetDateTime, _lifetime: Duration) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_file_is_named_after_the_store() {
        let a = lock_path(Path::new("/home/a/.local/share/kiro-cli/data.sqlite3")).unwrap();
        let b = lock_path(Path::new("/home/b/.local/share/kiro-cli/data.sqlite3")).unwrap();
        assert_ne!(a, b);
        assert_eq!(
            Some(a.clone()),
            lock_path(Path::new("/home/a/.local/share/kiro-cli/data.sqlite3"))
        );
        assert!(a.to_string_lossy().ends_with(".lock"));
    }

    #[test]
    fn records_round_trip() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_790_000_000_123);
        let expires_at = time::macros::datetime!(2026-11-30 12:00:00 UTC);
        let record = Record {
            attempt_ms: Some(millis(at)),
            expires_at: Some(expires_at.unix_timestamp()),
            lifetime_ms: Some(75_000),
        };
        let parsed = Record::parse(&serde_json::to_string(&record).unwrap());
        assert_eq!(parsed.last_attempt(), Some(at));
        assert_eq!(
            parsed.lifetime_of(expires_at),
            Some(Duration::from_secs(75))
        );
        assert_eq!(
            parsed.lifetime_of(expires_at + time::Duration::seconds(1)),
            None
        );
        assert_eq!(Record::parse("garbage"), Record::default());
    }
}
