//! SQLite access to the CLI's store: short read transactions on a read-only
//! connection, and the one write qbox ever makes (a refreshed token).
//!
//! The CLI uses SQLite's default rollback journal and sets no busy timeout,
//! so the rules here are: read everything a command needs inside one
//! transaction (a shared lock gives a consistent view: a half-committed write
//! is never visible), release the lock at once (the CLI would get
//! `SQLITE_BUSY` if qbox held it), and wait a bounded time when the CLI holds
//! the lock itself.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::types::Value;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior};

use super::error::StoreError;
use super::flavor::Flavor;
use crate::secret::Secret;

/// How long to wait for a lock held by another program, unless
/// `QBOX_LOCK_TIMEOUT` (seconds, fractions allowed) says otherwise.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// `state` key qbox adds to an access-only snapshot (JSON string
/// `"access-only"`), so that whoever reads the copy knows that its token
/// cannot be refreshed there and that a host keeper rewrites it. The CLIs
/// ignore `state` keys they do not know.
pub const SNAPSHOT_SCOPE_KEY: &str = "qbox.snapshot.scope";
/// The value of [`SNAPSHOT_SCOPE_KEY`] in an access-only snapshot.
pub const ACCESS_ONLY_MARK: &str = "\"access-only\"";

/// `state` keys that belong to a login (and travel with it into snapshots
/// and the agent's private copy).
pub const AUTH_STATE_KEYS: [&str; 4] = [
    "api.codewhisperer.profile",
    "auth.idc.start-url",
    "auth.idc.region",
    SNAPSHOT_SCOPE_KEY,
];

/// The longest lock wait `QBOX_LOCK_TIMEOUT` can ask for: a day is longer
/// than any CLI holds the store, and a bound keeps `1e308` from overflowing
/// a `Duration` (a panic, and with `panic = "abort"` a core dump).
pub const MAX_LOCK_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// The lock timeout in force (read once per process).
pub fn lock_timeout() -> Duration {
    static TIMEOUT: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *TIMEOUT.get_or_init(|| {
        std::env::var("QBOX_LOCK_TIMEOUT")
            .ok()
            .and_then(|v| bounded_lock_timeout(&v))
            .unwrap_or(DEFAULT_LOCK_TIMEOUT)
    })
}

/// `QBOX_LOCK_TIMEOUT`'s value as a wait, capped at [`MAX_LOCK_TIMEOUT`]
/// with a warning; `None` (the default applies) when it is no number of
/// seconds at all.
fn bounded_lock_timeout(text: &str) -> Option<Duration> {
    let seconds = text.trim().parse::<f64>().ok()?;
    if seconds.is_nan() || seconds < 0.0 {
        return None;
    }
    match Duration::try_from_secs_f64(seconds) {
        Ok(wait) if wait <= MAX_LOCK_TIMEOUT => Some(wait),
        _ => {
            tracing::warn!(
                "QBOX_LOCK_TIMEOUT={} is longer than qbox waits for a lock; waiting at most {} s",
                text.trim(),
                MAX_LOCK_TIMEOUT.as_secs()
            );
            Some(MAX_LOCK_TIMEOUT)
        }
    }
}

/// The rows of a login, read in one transaction.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AuthRows {
    /// `auth_kv` rows whose key is one of the known auth keys.
    pub auth_kv: Vec<(String, Secret)>,
    /// `state` rows that belong to the login (profile, IdC start URL, region).
    pub state: Vec<(String, Value)>,
}

impl AuthRows {
    pub fn auth_value(&self, key: &str) -> Option<&str> {
        self.auth_kv
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.expose())
    }

    /// True for the rows of an access-only snapshot (see
    /// [`SNAPSHOT_SCOPE_KEY`]).
    pub fn is_access_only(&self) -> bool {
        self.state_text(SNAPSHOT_SCOPE_KEY).as_deref() == Some(ACCESS_ONLY_MARK)
    }

    /// A `state` value as text; the CLI stores JSON there as TEXT or BLOB.
    pub fn state_text(&self, key: &str) -> Option<String> {
        match self.state.iter().find(|(k, _)| k == key).map(|(_, v)| v)? {
            Value::Text(text) => Some(text.clone()),
            Value::Blob(bytes) => String::from_utf8(bytes.clone()).ok(),
            _ => None,
        }
    }
}

/// Everything a snapshot holds: the schema, the migration history (so the
/// CLI sees an up-to-date database and runs no migration) and the auth rows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SnapshotRows {
    /// The store they were read from (named in errors about them).
    pub source: PathBuf,
    /// `CREATE` statements of the source's tables and indexes, in order.
    pub schema: Vec<String>,
    /// `migrations` rows: (id, version, migration_time).
    pub migrations: Vec<(i64, i64, i64)>,
    pub auth: AuthRows,
}

/// Every `auth_kv` key qbox copies or reads, for both CLIs.
fn known_auth_keys() -> Vec<&'static str> {
    Flavor::ALL
        .into_iter()
        .flat_map(Flavor::auth_keys)
        .collect()
}

/// Checks the file before SQLite sees it, so that a missing file, a
/// directory or a permission problem gets its own message (SQLite would say
/// "unable to open database file" for all three).
fn check_readable(path: &Path) -> Result<(), StoreError> {
    let metadata = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => StoreError::ExplicitPathMissing {
            path: path.to_owned(),
        },
        std::io::ErrorKind::PermissionDenied => StoreError::PermissionDenied {
            path: path.to_owned(),
        },
        _ => StoreError::io("reading", path, e),
    })?;
    if !metadata.is_file() {
        return Err(StoreError::NotAFile {
            path: path.to_owned(),
        });
    }
    // Non-blocking and checked on the descriptor: a FIFO swapped in after
    // the `stat` would otherwise hang this open.
    crate::regular_file::open(path, false).map_err(|e| match e.kind() {
        _ if crate::regular_file::is_not_regular(&e) => StoreError::NotAFile {
            path: path.to_owned(),
        },
        std::io::ErrorKind::PermissionDenied => StoreError::PermissionDenied {
            path: path.to_owned(),
        },
        _ => StoreError::io("opening", path, e),
    })?;
    Ok(())
}

/// Turns an SQLite error into the store error a person can act on.
pub(crate) fn map_sqlite_error(path: &Path, err: rusqlite::Error) -> StoreError {
    let path = path.to_owned();
    if let rusqlite::Error::SqliteFailure(failure, message) = &err {
        match failure.code {
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
                return StoreError::Locked {
                    path,
                    waited: lock_timeout(),
                };
            }
            ErrorCode::NotADatabase => return StoreError::NotSqlite { path },
            ErrorCode::DatabaseCorrupt => {
                return StoreError::Corrupt {
                    path,
                    detail: message
                        .clone()
                        .unwrap_or_else(|| "malformed database".into()),
                };
            }
            ErrorCode::PermissionDenied => return StoreError::PermissionDenied { path },
            _ => {}
        }
        if failure.extended_code == rusqlite::ffi::SQLITE_READONLY_ROLLBACK {
            return StoreError::HotJournal { path, source: err };
        }
        if let Some(table) = message
            .as_deref()
            .and_then(|m| m.strip_prefix("no such table: "))
        {
            return StoreError::MissingTable {
                path,
                table: table.trim_start_matches("main.").to_owned(),
            };
        }
    }
    StoreError::Sqlite { path, source: err }
}

/// Opens the store read-only with the lock timeout in force.
pub(crate) fn open_read_only(path: &Path) -> Result<Connection, StoreError> {
    check_readable(path)?;
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| map_sqlite_error(path, e))?;
    wait_for_locks(&mut conn).map_err(|e| map_sqlite_error(path, e))?;
    Ok(conn)
}

/// Installs a busy handler that retries every half millisecond until the
/// lock timeout. SQLite's own timeout backs off to 100 ms sleeps, and a CLI
/// that commits often can then starve a reader for seconds; the CLI's write
/// locks last microseconds, so polling often is the fair strategy.
fn wait_for_locks(conn: &mut Connection) -> rusqlite::Result<()> {
    conn.busy_handler(Some(retry_while_locked))
}

std::thread_local! {
    /// When the current wait for a lock began (SQLite calls the handler with
    /// attempt 0 at the start of each wait).
    static LOCK_WAIT_STARTED: std::cell::Cell<Option<std::time::Instant>> =
        const { std::cell::Cell::new(None) };
}

fn retry_while_locked(attempt: i32) -> bool {
    let now = std::time::Instant::now();
    let started = LOCK_WAIT_STARTED.with(|cell| {
        if attempt == 0 || cell.get().is_none() {
            cell.set(Some(now));
        }
        cell.get().unwrap_or(now)
    });
    if now.duration_since(started) >= lock_timeout() {
        return false;
    }
    std::thread::sleep(Duration::from_micros(500));
    true
}

/// Opens an existing store for writing (never creates one) with the lock
/// timeout in force.
fn open_read_write(path: &Path) -> Result<Connection, StoreError> {
    // A read-write open rolls back any hot journal it finds, silently: one
    // that is not the store owner's own must not get that far.
    let beside_a_journal = std::fs::canonicalize(path)
        .ok()
        .filter(|real| std::fs::symlink_metadata(journal_path(real)).is_ok());
    if let Some(real) = beside_a_journal
        && let JournalTrust::Untrusted(reason) = journal_trust_resolved(&real)
    {
        return Err(StoreError::UntrustedJournal {
            path: path.to_owned(),
            reason,
        });
    }
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| map_sqlite_error(path, e))?;
    wait_for_locks(&mut conn).map_err(|e| map_sqlite_error(path, e))?;
    Ok(conn)
}

/// `?, ?, ?` for an `IN` list of `n` values.
fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

fn read_auth_rows_in(conn: &Connection) -> rusqlite::Result<AuthRows> {
    let auth_kv = lookup_each::<String>(
        conn,
        "SELECT value FROM auth_kv WHERE key = ?1",
        known_auth_keys(),
    )?;
    Ok(AuthRows {
        auth_kv: auth_kv
            .into_iter()
            .map(|(key, value)| (key, Secret::containing_parsed(value)))
            .collect(),
        state: lookup_each(
            conn,
            "SELECT value FROM state WHERE key = ?1",
            AUTH_STATE_KEYS.to_vec(),
        )?,
    })
}

/// The rows `query` (one `?1` key parameter) finds for each of `keys`, in
/// key order. One indexed lookup per key rather than one `key IN (...)`:
/// SQLite answers an IN list with a temporary b-tree whose page cache alone
/// costs a short command such as `export-token` a score of page faults.
fn lookup_each<T: rusqlite::types::FromSql>(
    conn: &Connection,
    query: &str,
    mut keys: Vec<&'static str>,
) -> rusqlite::Result<Vec<(String, T)>> {
    keys.sort_unstable();
    keys.dedup();
    let mut statement = conn.prepare(query)?;
    let mut rows = Vec::new();
    for key in keys {
        if let Some(value) = statement.query_row([key], |row| row.get(0)).optional()? {
            rows.push((key.to_owned(), value));
        }
    }
    Ok(rows)
}

/// Runs the read `read` of the store at `path`; when it finds a hot journal
/// (a writer died mid-transaction, so a read-only connection cannot go on:
/// `SQLITE_READONLY_ROLLBACK`), rolls the journal back and reads again.
fn read_rolling_back<T>(
    path: &Path,
    read: impl Fn(&Path) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    match read(path) {
        Err(err @ StoreError::HotJournal { .. }) => {
            match journal_trust(path) {
                JournalTrust::Trusted => {}
                // Nothing is touched: a rollback that could restore pages but
                // not delete the journal would rewrite the store and then fail.
                JournalTrust::CannotWrite => return Err(err),
                JournalTrust::Untrusted(reason) => {
                    return Err(StoreError::UntrustedJournal {
                        path: path.to_owned(),
                        reason,
                    });
                }
            }
            roll_back_hot_journal(path)?;
            read(path)
        }
        other => other,
    }
}

/// `STORE-journal`, where SQLite keeps a rollback journal.
fn journal_path(store: &Path) -> PathBuf {
    let mut name = store.as_os_str().to_owned();
    name.push("-journal");
    PathBuf::from(name)
}

/// Whether the hot journal beside a store may be rolled back by qbox.
#[derive(Debug, PartialEq, Eq)]
enum JournalTrust {
    Trusted,
    /// The store or its directory is not writable here.
    CannotWrite,
    /// Rolling it back would write someone else's pages into the store.
    Untrusted(String),
}

/// A rollback copies the journal's pages into the store, so the journal
/// must be the store owner's own: a regular file (not a link) of the
/// store's owner with no second name, in a directory not everyone can write
/// (else another user of a shared directory could plant one, and the
/// rollback would write their rows into the victim's store).
fn journal_trust(path: &Path) -> JournalTrust {
    // Judged where SQLite looks: beside the store once links are resolved
    // (a store reached through a link into a shared directory has its
    // journal there, not beside the link).
    match std::fs::canonicalize(path) {
        Ok(real) => journal_trust_resolved(&real),
        Err(_) => JournalTrust::CannotWrite,
    }
}

/// [`journal_trust`] of a store path whose links are resolved.
fn journal_trust_resolved(path: &Path) -> JournalTrust {
    let journal = journal_path(path);
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let (Ok(store), Ok(dir_meta)) = (std::fs::metadata(path), std::fs::metadata(dir)) else {
            return JournalTrust::CannotWrite;
        };
        // No journal file (a WAL store, or it went): SQLite decides.
        if let Ok(found) = std::fs::symlink_metadata(&journal) {
            if !found.file_type().is_file() {
                return JournalTrust::Untrusted(format!(
                    "{} is not a regular file",
                    journal.display()
                ));
            }
            if found.uid() != store.uid() {
                return JournalTrust::Untrusted(format!(
                    "{} belongs to uid {}, not to the store's owner (uid {})",
                    journal.display(),
                    found.uid(),
                    store.uid()
                ));
            }
            if found.nlink() != 1 {
                return JournalTrust::Untrusted(format!(
                    "{} has other names (hard links)",
                    journal.display()
                ));
            }
        }
        // Group-writable is left to the owner check above (a user's own
        // group, under a umask of 002); anyone may write a world-writable
        // directory, `/tmp` among them, sticky or not.
        if dir_meta.mode() & 0o002 != 0 {
            return JournalTrust::Untrusted(format!(
                "{} can be written by anyone, who could have put the journal there",
                dir.display()
            ));
        }
        let writable = |p: &Path| rustix::fs::access(p, rustix::fs::Access::WRITE_OK).is_ok();
        if !writable(path) || !writable(dir) {
            return JournalTrust::CannotWrite;
        }
    }
    #[cfg(not(unix))]
    let _ = (journal, dir);
    JournalTrust::Trusted
}

/// Rolls back the hot journal of the store at `path`, as the CLI itself
/// would at its next start: one read-write connection (never creating the
/// file) reads inside a transaction, which makes SQLite restore the pages
/// the dead writer changed and delete its journal. Nothing else is written.
/// Under the refresh lock, so that qbox's own writer (and the recovery of a
/// recorded grant) never runs beside it. Fails with
/// [`StoreError::HotJournal`] when the store or its directory is not
/// writable (SQLite then opens the file read-only and refuses again).
fn roll_back_hot_journal(path: &Path) -> Result<(), StoreError> {
    let _lock =
        super::refresh_lock::RefreshLock::acquire_blocking(path, super::refresh_lock::LOCK_WAIT);
    tracing::warn!(
        path = %path.display(),
        "the store was left mid-write by a program that died (a hot journal): rolling it back"
    );
    let map = |e| map_sqlite_error(path, e);
    let mut conn = open_read_write(path)?;
    let tx = conn.transaction().map_err(map)?;
    tx.query_row("SELECT count(*) FROM sqlite_master", [], |row| {
        row.get::<_, i64>(0)
    })
    .map_err(map)?;
    tx.commit().map_err(map)?;
    tracing::info!(path = %path.display(), "the store's hot journal is rolled back");
    Ok(())
}

/// Reads the login rows in one short read transaction.
pub fn read_auth_rows(path: &Path) -> Result<AuthRows, StoreError> {
    read_rolling_back(path, read_auth_rows_once)
}

fn read_auth_rows_once(path: &Path) -> Result<AuthRows, StoreError> {
    let conn = open_read_only(path)?;
    let tx = conn
        .unchecked_transaction()
        .map_err(|e| map_sqlite_error(path, e))?;
    let rows = read_auth_rows_in(&tx).map_err(|e| map_sqlite_error(path, e))?;
    // Ending the transaction releases the shared lock before any parsing.
    tx.commit().map_err(|e| map_sqlite_error(path, e))?;
    Ok(rows)
}

/// Reads schema, migrations and login rows in one short read transaction.
pub fn read_snapshot_rows(path: &Path) -> Result<SnapshotRows, StoreError> {
    read_rolling_back(path, read_snapshot_rows_once)
}

fn read_snapshot_rows_once(path: &Path) -> Result<SnapshotRows, StoreError> {
    let conn = open_read_only(path)?;
    read_snapshot_rows_on(&conn, path).map(|(rows, _)| rows)
}

/// The snapshot's rows read through `conn`, with the connection's
/// `data_version` inside the same read transaction.
fn read_snapshot_rows_on(
    conn: &Connection,
    path: &Path,
) -> Result<(SnapshotRows, i64), StoreError> {
    let tx = conn
        .unchecked_transaction()
        .map_err(|e| map_sqlite_error(path, e))?;
    let read = || -> rusqlite::Result<(SnapshotRows, i64)> {
        let mut schema = tx.prepare(
            "SELECT sql FROM sqlite_master \
             WHERE type IN ('table', 'index') AND sql IS NOT NULL AND name NOT LIKE 'sqlite_%' \
             ORDER BY rowid",
        )?;
        let schema = schema
            .query_map([], |row| row.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut migrations =
            tx.prepare("SELECT id, version, migration_time FROM migrations ORDER BY id")?;
        let migrations = migrations
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let rows = SnapshotRows {
            source: path.to_owned(),
            schema,
            migrations,
            auth: read_auth_rows_in(&tx)?,
        };
        Ok((rows, data_version(&tx)?))
    };
    let read = read().map_err(|e| map_sqlite_error(path, e))?;
    tx.commit().map_err(|e| map_sqlite_error(path, e))?;
    Ok(read)
}

/// `PRAGMA data_version`: a number that changes when another connection
/// (in any process) has committed to the database since this connection
/// last looked, in rollback-journal and WAL mode alike.
fn data_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA data_version", [], |row| row.get(0))
}

/// A snapshot that is read on every use (the agent's private copy is
/// brought up to date before every call) but read whole only when it may
/// have changed; otherwise the rows of the last read are given again.
///
/// It keeps the read-only connection of its last read open. That pins the
/// file (its inode cannot be given to another file while it is open), so
/// a path that names a file with the same device and inode names the same
/// file; and SQLite's `PRAGMA data_version` on that connection changes
/// with every commit any other connection makes to it. So a use costs a
/// `stat` and one short read transaction (a shared lock and the 16 bytes of
/// the header SQLite compares) instead of an open, the schema parsed and
/// the rows read. A snapshot replaced by a rename (how qbox writes one) is
/// another file; a store written in place (the user's own, given with
/// `--db`) is seen through `data_version`; any change of the file's size
/// or times is read again as well. What this cannot see is a write in
/// place that bypasses SQLite and keeps the header's change counter, size
/// and times: SQLite's own page cache would serve such a file stale too.
#[derive(Debug)]
pub struct SnapshotReader {
    path: PathBuf,
    last: Option<LastSnapshotRead>,
}

#[derive(Debug)]
struct LastSnapshotRead {
    rows: SnapshotRows,
    /// `None`: the read is not to be reused (the path named another file
    /// after it than before).
    open: Option<OpenSnapshot>,
}

#[derive(Debug)]
struct OpenSnapshot {
    conn: Connection,
    identity: crate::regular_file::Identity,
    data_version: i64,
}

impl SnapshotReader {
    pub fn new(path: PathBuf) -> Self {
        Self { path, last: None }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The snapshot's rows as they are now, and whether they were read
    /// anew (`false`: the same as the last call gave, the file unchanged).
    pub fn rows(&mut self) -> Result<(&SnapshotRows, bool), StoreError> {
        // A read not reused is dropped, and its connection closed, before
        // the next: a hot journal is rolled back by a connection of its own.
        let previous = self.last.take().filter(|last| {
            last.open
                .as_ref()
                .is_some_and(|open| open.unchanged(&self.path))
        });
        let (last, fresh) = match previous {
            Some(last) => (last, false),
            None => (self.read()?, true),
        };
        Ok((&self.last.insert(last).rows, fresh))
    }

    fn read(&self) -> Result<LastSnapshotRead, StoreError> {
        let path = self.path.as_path();
        read_rolling_back(path, |path| {
            let before = crate::regular_file::Identity::of_path(path);
            let conn = open_read_only(path)?;
            let (rows, data_version) = read_snapshot_rows_on(&conn, path)?;
            let after = crate::regular_file::Identity::of_path(path);
            // Kept only when the path named one file, unchanged, from
            // before the open to after the read: that is the file read.
            let open = match (before, after) {
                (Some(before), Some(after)) if before == after => Some(OpenSnapshot {
                    conn,
                    identity: after,
                    data_version,
                }),
                _ => None,
            };
            Ok(LastSnapshotRead { rows, open })
        })
    }
}

impl OpenSnapshot {
    /// Whether `path` still names this file, unchanged: the same identity
    /// and no commit since (any failure to tell counts as a change).
    fn unchanged(&self, path: &Path) -> bool {
        crate::regular_file::Identity::of_path(path) == Some(self.identity)
            && data_version(&self.conn).is_ok_and(|version| version == self.data_version)
    }
}

/// What happened to a token write-back.
#[derive(Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The new token is in the store.
    Written,
    /// Someone else changed the token since qbox read it; nothing was written.
    ChangedMeanwhile,
}

/// A user's store, as a resolved login names it: the only kind of file
/// [`replace_token_if_unchanged`] writes to. Only `store` can make one, and
/// only from a [`Login`](super::Login) it read.
#[derive(Debug, Clone)]
pub struct UserStore(PathBuf);

impl UserStore {
    pub(super) fn of(login: &super::Login) -> Self {
        Self(login.path.clone())
    }
}

/// A store qbox created for the agent's CLI (a private, writable copy of a
/// snapshot): the only kind of file [`replace_auth_rows`] writes to. Made
/// only by [`super::snapshot::private_copy`], which creates the file.
#[derive(Debug, Clone)]
pub struct PrivateCopy(PathBuf);

impl PrivateCopy {
    pub(super) fn created_at(path: PathBuf) -> Self {
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

/// Replaces the token under `key` with `new_value`, but only if the stored
/// value is still `expected` (compare-and-swap inside one immediate
/// transaction). This is the same `INSERT OR REPLACE` the CLI performs; it
/// never deletes anything, and it never overwrites a token another program
/// refreshed in the meantime.
pub fn replace_token_if_unchanged(
    store: &UserStore,
    key: &str,
    expected: &str,
    new_value: &str,
) -> Result<WriteOutcome, StoreError> {
    let path = store.0.as_path();
    check_readable(path)?;
    let map = |e| map_sqlite_error(path, e);
    let mut conn = open_read_write(path)?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(map)?;
    let current: Option<String> = tx
        .query_row("SELECT value FROM auth_kv WHERE key = ?1", [key], |row| {
            row.get(0)
        })
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            other => Err(other),
        })
        .map_err(map)?;
    if current.as_deref() != Some(expected) {
        return Ok(WriteOutcome::ChangedMeanwhile);
    }
    tx.execute(
        "INSERT OR REPLACE INTO auth_kv (key, value) VALUES (?1, ?2)",
        [key, new_value],
    )
    .map_err(map)?;
    tx.commit().map_err(map)?;
    Ok(WriteOutcome::Written)
}

/// Replaces the login rows of a store qbox owns (the agent's private copy
/// of a snapshot) with `rows`, in one transaction. Never used on a user's
/// store.
pub(super) fn replace_auth_rows(copy: &PrivateCopy, rows: &AuthRows) -> Result<(), StoreError> {
    let path = copy.path();
    let map = |e| map_sqlite_error(path, e);
    let mut conn = open_read_write(path)?;
    // The rows replaced hold the previous tokens: zero their bytes rather
    // than leave them in the file's free space.
    conn.pragma_update(None, "secure_delete", true)
        .map_err(map)?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(map)?;
    let keys = known_auth_keys();
    tx.execute(
        &format!(
            "DELETE FROM auth_kv WHERE key IN ({})",
            placeholders(keys.len())
        ),
        rusqlite::params_from_iter(keys.iter()),
    )
    .map_err(map)?;
    tx.execute(
        &format!(
            "DELETE FROM state WHERE key IN ({})",
            placeholders(AUTH_STATE_KEYS.len())
        ),
        rusqlite::params_from_iter(AUTH_STATE_KEYS.iter()),
    )
    .map_err(map)?;
    for (key, value) in &rows.auth_kv {
        tx.execute(
            "INSERT INTO auth_kv (key, value) VALUES (?1, ?2)",
            [key.as_str(), value.expose()],
        )
        .map_err(map)?;
    }
    for (key, value) in &rows.state {
        tx.execute(
            "INSERT INTO state (key, value) VALUES (?1, ?2)",
            rusqlite::params![key, value],
        )
        .map_err(map)?;
    }
    tx.commit().map_err(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::schema::{FixtureLogin, StoreBuilder};

    fn snapshot_with(path: &Path, access_token: &str) {
        StoreBuilder::create(path, Flavor::Kiro)
            .unwrap()
            .login(&FixtureLogin::builder_id(access_token, "refresh"))
            .unwrap();
    }

    fn access_token(rows: &SnapshotRows) -> String {
        let token = rows.auth.auth_value(Flavor::Kiro.token_key()).unwrap();
        serde_json::from_str::<serde_json::Value>(token).unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn a_snapshot_is_read_again_only_after_it_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.sqlite3");
        snapshot_with(&path, "first");
        let mut reader = SnapshotReader::new(path.clone());
        let (rows, fresh) = reader.rows().unwrap();
        assert_eq!((access_token(rows).as_str(), fresh), ("first", true));
        let (rows, fresh) = reader.rows().unwrap();
        assert_eq!((access_token(rows).as_str(), fresh), ("first", false));

        // Written in place by another connection (as the CLI writes its
        // own store), the token the same length: seen.
        let writer = Connection::open(&path).unwrap();
        let token = rows
            .auth
            .auth_value(Flavor::Kiro.token_key())
            .unwrap()
            .replace("first", "again");
        writer
            .execute(
                "UPDATE auth_kv SET value = ?1 WHERE key = ?2",
                [token.as_str(), Flavor::Kiro.token_key()],
            )
            .unwrap();
        drop(writer);
        // Whatever the file's times say (a write within one timestamp
        // tick keeps them), the kept connection sees the commit.
        let open = reader.last.as_ref().unwrap().open.as_ref().unwrap();
        assert_ne!(data_version(&open.conn).unwrap(), open.data_version);
        let (rows, fresh) = reader.rows().unwrap();
        assert_eq!((access_token(rows).as_str(), fresh), ("again", true));

        // Replaced by a rename, as qbox writes a snapshot: seen, although
        // the reader still holds the old file open.
        let next = dir.path().join("next.sqlite3");
        snapshot_with(&next, "third");
        std::fs::rename(&next, &path).unwrap();
        let (rows, fresh) = reader.rows().unwrap();
        assert_eq!((access_token(rows).as_str(), fresh), ("third", true));
        assert!(!reader.rows().unwrap().1);
    }

    #[test]
    fn a_snapshot_that_went_is_an_error_and_one_that_came_back_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.sqlite3");
        snapshot_with(&path, "first");
        let mut reader = SnapshotReader::new(path.clone());
        reader.rows().unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(
            reader.rows().unwrap_err(),
            StoreError::ExplicitPathMissing { .. }
        ));
        snapshot_with(&path, "back");
        let (rows, fresh) = reader.rows().unwrap();
        assert_eq!((access_token(rows).as_str(), fresh), ("back", true));
    }
}
