//! Least-privilege snapshots: a new store file holding only the rows a
//! consumer needs to act as the logged-in user (token, client registration,
//! the login's `state` rows, the migration history), in the source's own
//! schema, so the real CLI can open it. No conversations, no history.
//!
//! Files are replaced atomically (temporary file in the same directory,
//! fsync, rename, fsync of the directory): a reader sees the old snapshot or
//! the new one, never a partial file. Consumers must mount the directory,
//! not the file, because a bind-mounted file stays pinned to its old inode.

use std::fs;
use std::path::{Path, PathBuf};

use rusqlite::Connection;

use super::db::{SnapshotRows, map_sqlite_error};
use super::error::StoreError;

/// File name of the snapshot inside its directory (the same as the CLI's, so
/// a consumer can point the CLI's data directory at it).
pub const SNAPSHOT_FILE_NAME: &str = "data.sqlite3";

/// Default file mode: readable by the owner only, like the CLI's store.
pub const DEFAULT_MODE: u32 = 0o600;

/// Writes `rows` as `dir/data.sqlite3`, replacing any previous snapshot
/// atomically. Creates `dir` (mode 0700) if needed. Returns the file's path.
pub fn write_snapshot(rows: &SnapshotRows, dir: &Path, mode: u32) -> Result<PathBuf, StoreError> {
    create_private_dir(dir)?;
    let target = dir.join(SNAPSHOT_FILE_NAME);
    let temp = tempfile::Builder::new()
        .prefix(".data.sqlite3.")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| StoreError::io("creating a temporary file in", dir, e))?;
    fill(temp.path(), rows).map_err(|e| map_sqlite_error(temp.path(), e))?;
    set_mode(temp.path(), mode)?;
    temp.as_file()
        .sync_all()
        .map_err(|e| StoreError::io("syncing", temp.path(), e))?;
    temp.persist(&target)
        .map_err(|e| StoreError::io("replacing", &target, e.error))?;
    sync_dir(dir);
    Ok(target)
}

/// Builds the snapshot database in a file nobody else reads yet.
fn fill(path: &Path, rows: &SnapshotRows) -> rusqlite::Result<()> {
    let mut conn = Connection::open(path)?;
    // The file is private until the rename, which is what makes the
    // snapshot atomic: no journal is needed while building it.
    conn.execute_batch("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;")?;
    let tx = conn.transaction()?;
    for statement in &rows.schema {
        tx.execute_batch(statement)?;
    }
    for (id, version, time) in &rows.migrations {
        tx.execute(
            "INSERT INTO migrations (id, version, migration_time) VALUES (?1, ?2, ?3)",
            [id, version, time],
        )?;
    }
    for (key, value) in &rows.auth.auth_kv {
        tx.execute(
            "INSERT INTO auth_kv (key, value) VALUES (?1, ?2)",
            [key, value],
        )?;
    }
    for (key, value) in &rows.auth.state {
        tx.execute(
            "INSERT INTO state (key, value) VALUES (?1, ?2)",
            rusqlite::params![key, value],
        )?;
    }
    tx.commit()?;
    conn.close().map_err(|(_, e)| e)
}

fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(|e| StoreError::io("creating", dir, e))
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| StoreError::io("setting the mode of", path, e))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> Result<(), StoreError> {
    Ok(())
}

/// Makes the rename durable. Best effort: some filesystems refuse to sync a
/// directory, and the rename itself is already atomic.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(handle) = fs::File::open(dir) {
        let _ = handle.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// Parses an octal file mode such as `600` or `0640`.
pub fn parse_mode(text: &str) -> Result<u32, String> {
    let digits = text.trim_start_matches("0o");
    let mode = u32::from_str_radix(digits, 8)
        .map_err(|_| format!("`{text}` is not an octal file mode (like 600 or 0640)"))?;
    if mode > 0o777 {
        return Err(format!("`{text}` is not a file mode: at most 777"));
    }
    if mode & 0o400 == 0 {
        return Err(format!(
            "mode `{text}` would not let the owner read the snapshot"
        ));
    }
    Ok(mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(parse_mode("600"), Ok(0o600));
        assert_eq!(parse_mode("0640"), Ok(0o640));
        assert!(parse_mode("999").is_err());
        assert!(parse_mode("1777").is_err());
        assert!(parse_mode("200").is_err());
    }
}
