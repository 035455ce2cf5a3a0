//! Errors of the auth store: each names the file involved and, where one
//! helps, carries a `hint` the command layer prints on its own line.

use std::path::PathBuf;
use std::time::Duration;

use time::OffsetDateTime;

use super::flavor::Flavor;
use crate::exit::{self, Diagnose};
use crate::timefmt::rfc3339;

/// Everything that can go wrong while finding, reading or writing the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no amazon q or kiro cli auth store found (searched {})", join_paths(.searched))]
    NotFound { searched: Vec<PathBuf> },

    #[error("no auth store at {}", .path.display())]
    ExplicitPathMissing { path: PathBuf },

    #[error("{} is not a file", .path.display())]
    NotAFile { path: PathBuf },

    #[error("permission denied reading {}", .path.display())]
    PermissionDenied { path: PathBuf },

    #[error("{} is not an sqlite database", .path.display())]
    NotSqlite { path: PathBuf },

    #[error("{} is corrupt: {detail}", .path.display())]
    Corrupt { path: PathBuf, detail: String },

    #[error("{} has no table `{table}`", .path.display())]
    MissingTable { path: PathBuf, table: String },

    #[error("{} stayed locked for {:.1}s", .path.display(), .waited.as_secs_f64())]
    Locked { path: PathBuf, waited: Duration },

    #[error("{} holds no login (no token in table auth_kv)", .path.display())]
    NoToken { path: PathBuf, flavor: Flavor },

    #[error("the value of `{key}` in {} is not valid: {detail}", .path.display())]
    BadJson {
        path: PathBuf,
        key: String,
        detail: String,
    },

    #[error("the token in {} {} {} and cannot be refreshed: {reason}", .path.display(), expiry_verb(*.expires_at), rfc3339(*.expires_at))]
    Unrefreshable {
        path: PathBuf,
        flavor: Flavor,
        expires_at: OffsetDateTime,
        reason: String,
    },

    /// An access-only snapshot (no refresh token) whose token expired: its
    /// host keeper should have rewritten it before then.
    #[error(
        "the login expired and this copy cannot refresh it: is the host keeper (`qbox snapshot --watch` / `qbox run`) running?"
    )]
    AccessOnlyExpired {
        path: PathBuf,
        expires_at: OffsetDateTime,
    },

    #[error("refusing to write secrets into {}: {reason}", .path.display())]
    UnsafeDirectory { path: PathBuf, reason: String },

    /// A writer died mid-transaction and left a hot journal that qbox
    /// could not roll back (the store or its directory is not writable).
    #[error("{} was left mid-write by a program that died, and its journal cannot be rolled back here", .path.display())]
    HotJournal {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    /// A hot journal that qbox will not roll back into the store: it may
    /// not be the store owner's (see `db::journal_trust`).
    #[error("{} has a hot journal qbox does not trust: {reason}", .path.display())]
    UntrustedJournal { path: PathBuf, reason: String },

    #[error("sqlite error on {}", .path.display())]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    #[error("{action} {}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// "expired at" for a past time, "expires at" for a coming one (a keeper
/// warns before the token runs out).
fn expiry_verb(at: OffsetDateTime) -> &'static str {
    if at <= OffsetDateTime::now_utc() {
        "expired at"
    } else {
        "expires at"
    }
}

impl Diagnose for StoreError {
    fn hint(&self) -> Option<String> {
        let hint = match self {
            Self::NotFound { .. } => format!(
                "log in with {}, name a store with --db PATH or QBOX_DB, or set KIRO_API_KEY (a Kiro API key)",
                Flavor::any_login_command()
            ),
            Self::ExplicitPathMissing { .. } => {
                "check --db / QBOX_DB, or unset it to search the CLI's default locations".to_owned()
            }
            Self::NotAFile { .. } | Self::NotSqlite { .. } => {
                "point --db at the CLI's data.sqlite3 (`qbox doctor` lists where it looks)"
                    .to_owned()
            }
            Self::PermissionDenied { .. } => {
                "the CLI keeps its store at mode 0600: run qbox as the user who owns it".to_owned()
            }
            Self::Corrupt { .. } => format!(
                "qbox did not change the file; logging in again ({}) writes a fresh login",
                Flavor::any_login_command()
            ),
            Self::MissingTable { .. } => {
                "this is not the CLI's auth store, or the CLI never finished starting: run it once"
                    .to_owned()
            }
            Self::Locked { .. } => {
                "another program holds the store's lock; try again, or raise QBOX_LOCK_TIMEOUT (seconds)"
                    .to_owned()
            }
            Self::NoToken { flavor, .. } | Self::Unrefreshable { flavor, .. } => {
                format!("log in again with `{}`", flavor.login_command())
            }
            Self::AccessOnlyExpired { path, expires_at } => format!(
                "{} is an access-only snapshot (no refresh token) whose token expired at {}; \
                 the host that wrote it keeps it fresh: start `qbox snapshot DIR --watch` there again, \
                 or give a consumer that must refresh on its own a `--refreshable` snapshot",
                path.display(),
                rfc3339(*expires_at)
            ),
            Self::BadJson { .. } => {
                "the CLI writes this value; log in again to replace it".to_owned()
            }
            Self::UnsafeDirectory { .. } => {
                "use a directory that only you can change, such as ./.qbox/auth (created with mode 0700)"
                    .to_owned()
            }
            Self::HotJournal { path, .. } => format!(
                "SQLite must roll back {}-journal before anyone can read the store, which needs \
                 write access to the store and its directory (is it a read-only mount or file?): \
                 run the CLI once as the store's owner, or run qbox where the store is writable",
                path.display()
            ),
            Self::UntrustedJournal { path, .. } => format!(
                "rolling it back would copy its pages into the store; if the journal is truly \
                 the store owner's, move the store to a directory only its owner can write and \
                 open it with the CLI; otherwise delete {}-journal",
                path.display()
            ),
            Self::Sqlite { .. } | Self::Io { .. } => return None,
        };
        Some(hint)
    }

    /// "There is no usable login" (4) rather than "something broke" (1).
    fn exit_code(&self) -> u8 {
        exit::no_login_or_error(matches!(
            self,
            Self::NotFound { .. }
                | Self::ExplicitPathMissing { .. }
                | Self::NoToken { .. }
                | Self::Unrefreshable { .. }
                | Self::AccessOnlyExpired { .. }
        ))
    }
}

impl StoreError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

fn join_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Describes a JSON parse failure without echoing the input: serde's messages
/// quote offending values ("invalid type: string \"aoa...\""), and the input
/// here is a token.
pub(crate) fn describe_json_error(err: &serde_json::Error) -> String {
    let message = err.to_string();
    if message.starts_with("missing field") {
        // "missing field `access_token` at line 1 column 40" names only a field.
        return message;
    }
    let kind = match err.classify() {
        serde_json::error::Category::Io => "read error",
        serde_json::error::Category::Syntax => "malformed json",
        serde_json::error::Category::Data => "a field has the wrong type or format",
        serde_json::error::Category::Eof => "truncated json",
    };
    format!("{kind} at line {} column {}", err.line(), err.column())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_never_quote_the_input() {
        let err = serde_json::from_str::<u32>("\"aoa-secret-token\"").unwrap_err();
        let text = describe_json_error(&err);
        assert!(!text.contains("aoa-secret-token"), "{text}");
        assert!(text.contains("wrong type"), "{text}");
    }

    #[test]
    fn missing_field_names_the_field() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct T {
            access_token: String,
        }
        let err = serde_json::from_str::<T>("{}").unwrap_err();
        assert!(describe_json_error(&err).contains("access_token"));
    }
}
