//! Kiro API keys: the Kiro CLI's credential for headless use and CI
//! (`KIRO_API_KEY`, a `ksk_...` key made on the Kiro portal), sent as a
//! bearer token with `TokenType: API_KEY` and no profile ARN.
//!
//! As in the Kiro CLI, a login in a store wins over a key: the key serves
//! only when no store login is usable. A container started by `qbox run`
//! gets the key as a read-only file (`QBOX_API_KEY_FILE`), never in its
//! environment; the file is refused, as a store would be, when it is not a
//! regular file of the user's own or when others can read it.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::secret::Secret;

/// The Kiro CLI's variable.
pub const API_KEY_ENV: &str = "KIRO_API_KEY";
/// A file holding the key (what `qbox run` mounts into a container).
pub const API_KEY_FILE_ENV: &str = "QBOX_API_KEY_FILE";
/// Every Kiro API key starts with this.
pub const API_KEY_PREFIX: &str = "ksk_";
/// No key is longer; a larger file is not a key.
const MAX_KEY_BYTES: u64 = 4096;

/// Where a key came from, for messages (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Env,
    File(PathBuf),
}

impl KeySource {
    /// "KIRO_API_KEY" or "the file /run/... (QBOX_API_KEY_FILE)".
    pub fn describe(&self) -> String {
        match self {
            Self::Env => API_KEY_ENV.to_owned(),
            Self::File(path) => format!("the file {} ({API_KEY_FILE_ENV})", path.display()),
        }
    }
}

/// A Kiro API key and where it came from.
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub key: Secret,
    pub source: KeySource,
}

/// Why a key could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the Kiro API key in {source_name} {problem}")]
pub struct ApiKeyError {
    pub source_name: String,
    pub problem: String,
}

impl ApiKey {
    /// The key of `KIRO_API_KEY`, else of the file `QBOX_API_KEY_FILE`
    /// names; `None` when neither is set. A variable that is set but empty
    /// is an error: someone meant to give a key.
    pub fn from_env() -> Result<Option<ApiKey>, ApiKeyError> {
        Self::from_vars(|name| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned()))
    }

    /// The variable [`Self::from_env`] takes the key from: `KIRO_API_KEY`
    /// when it is set (even empty), else `QBOX_API_KEY_FILE`.
    pub fn env_variable() -> &'static str {
        if std::env::var_os(API_KEY_ENV).is_some() {
            API_KEY_ENV
        } else {
            API_KEY_FILE_ENV
        }
    }

    /// [`Self::from_env`] with the environment read through `var`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<ApiKey>, ApiKeyError> {
        if let Some(value) = var(API_KEY_ENV) {
            return Self::parse(&value, KeySource::Env).map(Some);
        }
        match var(API_KEY_FILE_ENV) {
            Some(path) if !path.trim().is_empty() => {
                Self::from_file(Path::new(path.trim())).map(Some)
            }
            Some(_) => Err(ApiKeyError {
                source_name: API_KEY_FILE_ENV.into(),
                problem: "is set but empty".into(),
            }),
            None => Ok(None),
        }
    }

    /// True when a key is given (whether or not it is valid).
    pub fn given() -> bool {
        std::env::var_os(API_KEY_ENV).is_some() || std::env::var_os(API_KEY_FILE_ENV).is_some()
    }

    /// The key in `path`: a regular file of the user's own that no one else
    /// can read, opened without following a symlink or blocking on a FIFO.
    pub fn from_file(path: &Path) -> Result<ApiKey, ApiKeyError> {
        let source = KeySource::File(path.to_owned());
        let refuse = |problem: String| ApiKeyError {
            source_name: source.describe(),
            problem,
        };
        let text = read_private_file(path).map_err(refuse)?;
        Self::parse(&text, source.clone())
    }

    /// Checks the key's shape: `ksk_` and printable ASCII without spaces.
    /// The key is registered as a secret first, so no message can show it.
    pub fn parse(text: &str, source: KeySource) -> Result<ApiKey, ApiKeyError> {
        let key = Secret::new(text.trim());
        let refuse = |problem: &str| ApiKeyError {
            source_name: source.describe(),
            problem: problem.to_owned(),
        };
        let value = key.expose();
        if value.is_empty() {
            return Err(refuse("is set but empty"));
        }
        if !value.starts_with(API_KEY_PREFIX)
            || value.len() <= API_KEY_PREFIX.len()
            || value.len() as u64 > MAX_KEY_BYTES
            || !value.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(refuse(
                "is not one (a Kiro API key is one line: `ksk_` followed by letters and digits)",
            ));
        }
        Ok(ApiKey { key, source })
    }
}

/// The key file's text, if it is a regular file (not a link, FIFO or
/// device: opened with `O_NOFOLLOW` and `O_NONBLOCK`, checked on the
/// descriptor) of this user or root that no one else can read or write.
fn read_private_file(path: &Path) -> Result<String, String> {
    let file = crate::regular_file::open_no_follow(path).map_err(|e| {
        if crate::regular_file::is_symlink(&e) {
            "is a symbolic link, which qbox does not follow".to_owned()
        } else if crate::regular_file::is_not_regular(&e) {
            "is not a regular file".to_owned()
        } else {
            match e.kind() {
                std::io::ErrorKind::NotFound => "does not exist".to_owned(),
                std::io::ErrorKind::PermissionDenied => {
                    "cannot be read (permission denied)".to_owned()
                }
                _ => format!("cannot be opened: {e}"),
            }
        }
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let metadata = file
            .metadata()
            .map_err(|e| format!("cannot be read: {e}"))?;
        let euid = rustix::process::geteuid().as_raw();
        if metadata.uid() != euid && metadata.uid() != 0 {
            return Err(format!(
                "belongs to another user (uid {}), who could replace the key",
                metadata.uid()
            ));
        }
        if metadata.mode() & 0o077 != 0 {
            return Err(format!(
                "can be read or written by others (mode {:04o}); make it 0600",
                metadata.mode() & 0o7777
            ));
        }
    }
    let mut text = String::new();
    file.take(MAX_KEY_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot be read: {e}"))?;
    if text.len() as u64 > MAX_KEY_BYTES {
        return Err(format!(
            "is larger than a key ({MAX_KEY_BYTES} bytes at most)"
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn keys_are_checked_for_their_shape_and_never_echoed() {
        let good = ApiKey::from_vars(vars(&[(API_KEY_ENV, " ksk_Abc123xyz\n")]))
            .unwrap()
            .unwrap();
        assert_eq!(good.key.expose(), "ksk_Abc123xyz");
        assert_eq!(good.source, KeySource::Env);
        assert!(ApiKey::from_vars(vars(&[])).unwrap().is_none());

        let empty = ApiKey::from_vars(vars(&[(API_KEY_ENV, "")])).unwrap_err();
        assert_eq!(
            empty.to_string(),
            "the Kiro API key in KIRO_API_KEY is set but empty"
        );
        for bad in [
            "aoaAAAAsecretvalue123",
            "ksk_",
            "ksk_with space",
            "ksk_\u{1b}[2J",
        ] {
            let error = ApiKey::from_vars(vars(&[(API_KEY_ENV, bad)])).unwrap_err();
            assert!(
                error
                    .to_string()
                    .starts_with("the Kiro API key in KIRO_API_KEY is not one")
            );
            assert!(!error.to_string().contains("secretvalue"), "{error}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn key_files_must_be_private_regular_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "ksk_fromafile01\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let read =
            |path: &Path| ApiKey::from_vars(vars(&[(API_KEY_FILE_ENV, path.to_str().unwrap())]));
        let key = read(&path).unwrap().unwrap();
        assert_eq!(key.key.expose(), "ksk_fromafile01");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let loose = read(&path).unwrap_err().to_string();
        assert!(loose.contains("mode 0644"), "{loose}");
        assert!(loose.contains("QBOX_API_KEY_FILE"), "{loose}");

        let fifo = dir.path().join("fifo");
        crate::regular_file::make_fifo(&fifo);
        assert!(
            read(&fifo)
                .unwrap_err()
                .to_string()
                .contains("not a regular file")
        );

        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(
            read(&link)
                .unwrap_err()
                .to_string()
                .contains("symbolic link")
        );
        assert!(
            read(&dir.path().join("none"))
                .unwrap_err()
                .to_string()
                .contains("does not exist")
        );
    }
}
