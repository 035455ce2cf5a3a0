//! Least-privilege snapshots: a new store file holding only the rows a
//! consumer needs to act as the logged-in user (token, client registration,
//! the login's `state` rows, the migration history), in the source's own
//! schema, so the real CLI can open it. No conversations, no history.
//!
//! A snapshot has a [`SnapshotScope`]. An access-only one (what `qbox run`
//! and `qbox snapshot --watch` write, for consumers a host keeper looks
//! after) carries the access token and its expiry but no refresh token and
//! no client registration: whoever reads it can act as the user until the
//! token expires, and cannot mint new tokens. Its rows are shaped after
//! the Amazon Q CLI's own reader (`crates/chat-cli/src/auth/builder_id.rs`
//! in `aws/amazon-q-developer-cli`: `BuilderIdToken::load` and
//! `refresh_token`; `social.rs` and `external_idp.rs` alike): the token's
//! `refresh_token` is `Option<Secret>`, so the field is left out (an empty
//! string would be `Some("")`, which the CLI would send to the token service
//! once the token expired); a valid token is used as it is, without reading
//! the registration; an expired token without a refresh token is "not
//! logged in" (the CLI also tries to delete it, which fails on a read-only
//! mount and is harmless in the agent's private copy, rewritten before every
//! call).
//!
//! Files are written as [`super::private_file`] writes every private file:
//! atomically, through descriptors, into a directory no one else can change.
//! Consumers must mount the directory, not the file, because a bind-mounted
//! file stays pinned to its old inode.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, MAIN_DB};

use super::db::{self, SnapshotRows, map_sqlite_error};
use super::error::StoreError;
use super::private_file::{self, write_private_file};
use crate::secret::Secret;

/// File name of the snapshot inside its directory (the same as the CLI's, so
/// a consumer can point the CLI's data directory at it).
pub const SNAPSHOT_FILE_NAME: &str = "data.sqlite3";

/// Default file mode: readable by the owner only, like the CLI's store.
pub const DEFAULT_MODE: u32 = 0o600;

/// Mode bits that share a file with the group or others. `qbox snapshot`
/// refuses them without `--force-mode`: a snapshot holds a refresh token
/// and the client secret, which mint new tokens for weeks.
pub const SHARING_MODE_BITS: u32 = 0o077;

/// What a snapshot carries of the login's secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotScope {
    /// The access token, its expiry, the profile and the `state` rows; no
    /// refresh token, no client registration (whose client id and secret
    /// would let a holder start logins and, with a refresh token, mint
    /// tokens). For a consumer whose host keeper rewrites the snapshot
    /// before the token expires. Marked with [`db::SNAPSHOT_SCOPE_KEY`].
    AccessOnly,
    /// Everything the source holds for the login, refresh token and client
    /// registration included: for a consumer that must refresh on its own.
    Refreshable,
}

impl SnapshotScope {
    /// The rows a snapshot of this scope holds, made from the source's.
    pub fn rows(self, source: &SnapshotRows) -> Result<SnapshotRows, StoreError> {
        match self {
            Self::Refreshable => Ok(source.clone()),
            Self::AccessOnly => access_only_rows(source),
        }
    }

    /// A name for messages and `--json` output.
    pub fn name(self) -> &'static str {
        match self {
            Self::AccessOnly => "access-only",
            Self::Refreshable => "refreshable",
        }
    }
}

/// The source's rows without what refreshes a login: registrations are
/// dropped, each token loses its `refresh_token` field, and the scope mark
/// is added.
fn access_only_rows(source: &SnapshotRows) -> Result<SnapshotRows, StoreError> {
    let registration_keys: Vec<&str> = super::Flavor::ALL
        .into_iter()
        .map(super::Flavor::registration_key)
        .collect();
    let mut auth_kv = Vec::with_capacity(source.auth.auth_kv.len());
    for (key, value) in &source.auth.auth_kv {
        if registration_keys.contains(&key.as_str()) {
            continue;
        }
        let mut token: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(value.expose()).map_err(|e| StoreError::BadJson {
                path: source.source.clone(),
                key: key.clone(),
                detail: super::error::describe_json_error(&e),
            })?;
        token.remove("refresh_token");
        auth_kv.push((
            key.clone(),
            Secret::containing_parsed(serde_json::Value::Object(token).to_string()),
        ));
    }
    let mut state: Vec<_> = source
        .auth
        .state
        .iter()
        .filter(|(key, _)| key != db::SNAPSHOT_SCOPE_KEY)
        .cloned()
        .collect();
    state.push((
        db::SNAPSHOT_SCOPE_KEY.to_owned(),
        rusqlite::types::Value::Text(db::ACCESS_ONLY_MARK.to_owned()),
    ));
    Ok(SnapshotRows {
        source: source.source.clone(),
        schema: source.schema.clone(),
        migrations: source.migrations.clone(),
        auth: db::AuthRows { auth_kv, state },
    })
}

/// A snapshot written by [`take`].
#[derive(Debug)]
pub struct Taken {
    /// The snapshot file.
    pub path: PathBuf,
    /// What the source held (for a keeper that rewrites the snapshot only
    /// when the source changes).
    pub rows: SnapshotRows,
    /// The CLI's settings written beside it (see [`write_settings`]).
    pub settings: Option<Vec<u8>>,
    /// The warning a bad settings file was given (once), if any.
    pub settings_warning: Option<String>,
}

/// Takes a snapshot of the store `login` was read from: its schema,
/// migrations and login rows, read in one transaction and written to
/// `dir/data.sqlite3` with `mode` and `scope` (see [`write_snapshot`]).
pub fn take(
    login: &super::Login,
    dir: &Path,
    mode: u32,
    scope: SnapshotScope,
) -> Result<Taken, StoreError> {
    let rows = db::read_snapshot_rows(&login.path)?;
    let path = write_snapshot(&rows, dir, mode, scope)?;
    let settings = super::settings::CliSettings::of(login.flavor);
    let (settings_warning, settings) = (settings.warning(), settings.carried_bytes());
    write_settings(dir, login.flavor, settings.as_deref(), mode)?;
    Ok(Taken {
        path,
        rows,
        settings,
        settings_warning,
    })
}

/// Writes (0600, atomically, directories created 0700) or, with `None`,
/// removes the settings a copy of the login carries for `flavor`, where
/// its CLI looks for them ([`super::settings::placed_path`]).
pub fn place_settings(
    flavor: super::Flavor,
    bytes: Option<&[u8]>,
    data_home: &Path,
    home: &Path,
) -> Result<(), StoreError> {
    let path = super::settings::placed_path(flavor, data_home, home);
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Ok(());
    };
    match bytes {
        Some(bytes) => write_private_file(dir, name, bytes).map(drop),
        None => match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(StoreError::io("removing", &path, e))
            }
            _ => Ok(()),
        },
    }
}

/// Writes the CLI's carried settings beside a snapshot as
/// [`super::Flavor::snapshot_settings_name`] (atomically, with the
/// snapshot's mode), or removes them with `None`; a settings file of
/// another CLI's name is removed, so a directory never holds stale ones.
pub fn write_settings(
    dir: &Path,
    flavor: super::Flavor,
    bytes: Option<&[u8]>,
    mode: u32,
) -> Result<(), StoreError> {
    for other in super::Flavor::ALL {
        let name = other.snapshot_settings_name();
        match bytes {
            Some(bytes) if other == flavor => private_file::replace_file(dir, name, bytes, mode)?,
            _ => match std::fs::remove_file(dir.join(name)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(StoreError::io("removing", dir.join(name), e));
                }
                _ => {}
            },
        }
    }
    Ok(())
}

/// Writes what `scope` keeps of the source's `rows` as `dir/data.sqlite3`,
/// replacing any previous snapshot atomically. Creates `dir` (mode 0700) if
/// needed and refuses one that [`private_file::check_dir`] refuses. Returns the file's
/// path.
pub fn write_snapshot(
    rows: &SnapshotRows,
    dir: &Path,
    mode: u32,
    scope: SnapshotScope,
) -> Result<PathBuf, StoreError> {
    let rows = scope.rows(rows)?;
    let image =
        database_image(&rows).map_err(|e| map_sqlite_error(&dir.join(SNAPSHOT_FILE_NAME), e))?;
    private_file::replace_file(dir, SNAPSHOT_FILE_NAME, &image, mode)?;
    Ok(dir.join(SNAPSHOT_FILE_NAME))
}

/// Brings the agent's private copy `dir/data.sqlite3` up to date with
/// `rows`: written (0600) the first time, its login rows replaced in place
/// afterwards (the CLI may hold it open). The only way to get a
/// [`db::PrivateCopy`], the only kind of file `replace_auth_rows` writes.
pub fn update_private_copy(rows: &SnapshotRows, dir: &Path) -> Result<db::PrivateCopy, StoreError> {
    let copy = db::PrivateCopy::created_at(dir.join(SNAPSHOT_FILE_NAME));
    if copy.path().exists() {
        db::replace_auth_rows(&copy, &rows.auth)?;
    } else {
        // As the snapshot holds it: an access-only snapshot stays one.
        write_snapshot(rows, dir, 0o600, SnapshotScope::Refreshable)?;
    }
    Ok(copy)
}

/// Builds the snapshot database in memory and returns the bytes of its file.
fn database_image(rows: &SnapshotRows) -> rusqlite::Result<Vec<u8>> {
    let mut conn = Connection::open_in_memory()?;
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
            [key.as_str(), value.expose()],
        )?;
    }
    for (key, value) in &rows.auth.state {
        tx.execute(
            "INSERT INTO state (key, value) VALUES (?1, ?2)",
            rusqlite::params![key, value],
        )?;
    }
    tx.commit()?;
    let image = conn.serialize(MAIN_DB)?.to_vec();
    Ok(image)
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

    fn source_rows() -> SnapshotRows {
        let token = r#"{"access_token":"aoa","expires_at":"2026-01-01T00:00:00Z","refresh_token":"aor","region":"us-east-1","oauth_flow":"DeviceCode","future_field":1}"#;
        let registration = r#"{"client_id":"cid","client_secret":"csecret","client_secret_expires_at":"2027-01-01T00:00:00Z"}"#;
        SnapshotRows {
            source: PathBuf::from("/store/data.sqlite3"),
            schema: vec!["CREATE TABLE auth_kv (key TEXT PRIMARY KEY, value TEXT)".into()],
            migrations: vec![(1, 1, 0)],
            auth: db::AuthRows {
                auth_kv: vec![
                    (
                        "codewhisperer:odic:device-registration".into(),
                        Secret::containing_parsed(registration),
                    ),
                    (
                        "codewhisperer:odic:token".into(),
                        Secret::containing_parsed(token),
                    ),
                ],
                state: vec![(
                    "api.codewhisperer.profile".into(),
                    rusqlite::types::Value::Text(r#"{"arn":"arn:x"}"#.into()),
                )],
            },
        }
    }

    #[test]
    fn access_only_rows_keep_the_access_token_and_drop_what_refreshes() {
        let source = source_rows();
        let rows = SnapshotScope::AccessOnly.rows(&source).unwrap();
        assert_eq!(rows.auth.auth_kv.len(), 1, "the registration is gone");
        let (key, value) = &rows.auth.auth_kv[0];
        assert_eq!(key, "codewhisperer:odic:token");
        let token: serde_json::Value = serde_json::from_str(value.expose()).unwrap();
        assert_eq!(token["access_token"], "aoa");
        assert_eq!(token["expires_at"], "2026-01-01T00:00:00Z");
        assert_eq!(token["future_field"], 1, "other fields are kept");
        assert!(token.get("refresh_token").is_none(), "absent, not empty");
        assert!(rows.auth.is_access_only());
        assert_eq!(rows.auth.state.len(), 2, "the profile and the mark");
        assert_eq!(rows.schema, source.schema);
        assert_eq!(rows.migrations, source.migrations);
        // Scoping an access-only copy again changes nothing.
        assert_eq!(SnapshotScope::AccessOnly.rows(&rows).unwrap(), rows);
        // A refreshable copy is the source as it is.
        assert_eq!(SnapshotScope::Refreshable.rows(&source).unwrap(), source);
        assert!(!source.auth.is_access_only());
    }

    #[test]
    fn an_access_only_login_cannot_be_refreshed_and_says_where_its_keeper_is() {
        let rows = SnapshotScope::AccessOnly.rows(&source_rows()).unwrap();
        let login = crate::store::Login::from_rows(
            rows.source.clone(),
            crate::store::Flavor::AmazonQ,
            &rows.auth,
        )
        .unwrap();
        assert!(login.access_only);
        assert!(login.registration.is_none());
        let now = time::macros::datetime!(2026-06-01 00:00:00 UTC);
        let reason = login.refresh_blocker(now).unwrap();
        assert!(reason.contains("access-only"), "{reason}");
        assert!(matches!(
            login.unusable(now),
            Some(StoreError::AccessOnlyExpired { .. })
        ));
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode("600"), Ok(0o600));
        assert_eq!(parse_mode("0640"), Ok(0o640));
        assert!(parse_mode("999").is_err());
        assert!(parse_mode("1777").is_err());
        assert!(parse_mode("200").is_err());
    }
}
