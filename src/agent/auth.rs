//! Giving the CLI a login. The CLI writes to its store, so a read-only
//! snapshot (QBOX_DB) cannot be handed to it directly: the sidecar keeps a
//! private writable copy (mode 0600 in a 0700 directory), points the child's
//! data directory at it, and copies the snapshot's login rows into it before
//! every call so the host's refreshes reach the CLI. An access-only snapshot
//! whose token expired is reported as such before the CLI starts.
//!
//! The copy carries the CLI's settings where that CLI reads them: the
//! Amazon Q CLI's `settings.json` beside its store, the Kiro CLI's
//! `~/.kiro/settings/cli.json` under a home of the copy's own (the child's
//! `HOME`). They come from beside the snapshot (`qbox snapshot` and
//! `qbox run` write them there), else from the CLI's own file on this
//! machine, reduced to the keys of [`store::settings::CARRIED_KEYS`].
//!
//! A call rewrites nothing that did not change: the login rows are written
//! when the snapshot's differ from what the copy was last given (or the
//! copy is gone), the settings when the source's differ. This also keeps a
//! refreshable copy's rotated refresh token, which the CLI wrote, from
//! being replaced by the spent one the snapshot still holds. Nor does a
//! call read what did not change: the snapshot is read whole only when
//! SQLite says another connection committed to it or the path names
//! another file ([`db::SnapshotReader`]), the settings file only when its
//! identity changed ([`store::settings::SettingsReader`]).
//!
//! The directory is named after the sidecar ([`super::leftovers`]), so
//! that one a SIGKILLed sidecar left is removed by the next.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::store::settings::{CliSettings, SettingsReader};
use crate::store::watch::CopyDirs;
use crate::store::{self, Flavor, StoreError, db};

/// What a call's CLI needs of the login: variables, and which CLI's login
/// it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prepared {
    pub env: HashMap<String, String>,
    pub flavor: Option<Flavor>,
}

/// Where the CLI's login comes from.
#[derive(Debug)]
pub enum AgentAuth {
    /// The CLI's own store, as it finds it; the flavor of the login found
    /// there when the sidecar started, if any.
    Inherit { flavor: Option<Flavor> },
    /// A private copy of the snapshot at `snapshot`.
    PrivateCopy {
        dir: tempfile::TempDir,
        /// Held while the copy is brought up to date: concurrent calls
        /// would otherwise write the same file at once. The snapshot's
        /// reader and what the copy was last given (boxed: it holds the
        /// snapshot's last rows and an open connection).
        updating: Mutex<Box<CopyState>>,
    },
}

/// The snapshot and settings as last read, and what the private copy was
/// last given.
#[derive(Debug)]
pub struct CopyState {
    snapshot: db::SnapshotReader,
    settings_reader: SettingsReader,
    flavor: Option<Flavor>,
    rows: Option<db::AuthRows>,
    /// Outer `None`: not placed yet.
    settings: Option<Option<Vec<u8>>>,
    settings_warning: Option<String>,
}

impl AgentAuth {
    /// A private copy when the sidecar was given a store (`--db` /
    /// `QBOX_DB`), else the CLI's own.
    pub fn for_store(query: &store::StoreQuery) -> Result<Self, StoreError> {
        match &query.db {
            Some(snapshot) => Self::private_copy(snapshot.clone()),
            None => Ok(Self::Inherit {
                flavor: query
                    .resolve(time::OffsetDateTime::now_utc())
                    .ok()
                    .filter(|login| login.token.is_some())
                    .map(|login| login.flavor),
            }),
        }
    }

    pub fn private_copy(snapshot: PathBuf) -> Result<Self, StoreError> {
        let dir = super::leftovers::private_dir()?;
        let auth = Self::PrivateCopy {
            dir,
            updating: Mutex::new(Box::new(CopyState {
                snapshot: db::SnapshotReader::new(snapshot),
                settings_reader: SettingsReader::default(),
                flavor: None,
                rows: None,
                settings: None,
                settings_warning: None,
            })),
        };
        // Made at start-up, when an expired token is no reason to refuse
        // to serve: the keeper may bring a fresh one before the first call.
        auth.sync(false)?;
        Ok(auth)
    }

    /// Brings the private copy up to date and returns the environment the
    /// child needs, with the flavor of the login it serves (none: no
    /// stored login). This reads and writes SQLite files: call it off the
    /// async runtime.
    pub fn prepare(&self) -> Result<Prepared, StoreError> {
        self.sync(true)
    }

    /// What [`Self::prepare`] returns when it needs no store work (the
    /// CLI's own login: nothing to copy), so that the caller can skip the
    /// trip to the blocking pool.
    pub fn without_store_work(&self) -> Option<Prepared> {
        match self {
            Self::Inherit { flavor } => Some(Prepared {
                env: HashMap::new(),
                flavor: *flavor,
            }),
            Self::PrivateCopy { .. } => None,
        }
    }

    /// [`Self::prepare`]; with `check_expiry`, an access-only snapshot
    /// whose token expired is an error rather than a copy.
    fn sync(&self, check_expiry: bool) -> Result<Prepared, StoreError> {
        let (dir, updating) = match self {
            Self::Inherit { .. } => {
                return Ok(self.without_store_work().unwrap_or_default());
            }
            Self::PrivateCopy { dir, updating } => (dir, updating),
        };
        let mut guard = updating.lock().unwrap_or_else(|p| p.into_inner());
        let state = &mut **guard;
        let snapshot = state.snapshot.path().to_owned();
        let (rows, _) = state.snapshot.rows()?;
        let detected = store::Login::detect_flavor(&rows.auth);
        let flavor = store::Login::flavor_of(&rows.auth, &snapshot);
        // The CLI would meet an expired token with no refresh token and say
        // "not logged in"; the snapshot's host keeper is what is missing.
        if check_expiry && rows.auth.is_access_only() {
            let login = store::Login::from_rows(snapshot.clone(), flavor, &rows.auth)?;
            if let Some(error) = login.unusable(time::OffsetDateTime::now_utc()) {
                return Err(error);
            }
        }
        let copy = CopyDirs::under(dir.path());
        let store_file = copy
            .data_home
            .join(flavor.dir_name())
            .join(store::snapshot::SNAPSHOT_FILE_NAME);
        let unchanged = state.flavor == Some(flavor)
            && state.rows.as_ref() == Some(&rows.auth)
            && std::fs::symlink_metadata(&store_file).is_ok();
        if !unchanged {
            // As the snapshot holds it: an access-only snapshot stays one.
            copy.update(flavor, rows, None)?;
            state.flavor = Some(flavor);
            state.rows = Some(rows.auth.clone());
        }
        let settings = state.settings_for(&snapshot, flavor);
        let settings_changed = !unchanged || state.settings.as_ref() != Some(&settings);
        if settings_changed {
            store::snapshot::place_settings(
                flavor,
                settings.as_deref(),
                &copy.data_home,
                &copy.home,
            )?;
            state.settings = Some(settings);
        }
        let mut env = HashMap::new();
        // The CLI finds its store under the XDG data directory on Linux.
        env.insert(
            "XDG_DATA_HOME".to_owned(),
            copy.data_home.display().to_string(),
        );
        // The Kiro CLI reads its settings under HOME only.
        if flavor == Flavor::Kiro {
            env.insert("HOME".to_owned(), copy.home.display().to_string());
        }
        Ok(Prepared {
            env,
            flavor: detected,
        })
    }
}

impl CopyState {
    /// What the copy carries of the CLI's settings: the file beside the
    /// snapshot when there is one, else the CLI's own on this machine; a
    /// bad file is warned about once (until its problem changes).
    fn settings_for(&mut self, snapshot: &Path, flavor: Flavor) -> Option<Vec<u8>> {
        let beside = snapshot
            .parent()
            .map(|dir| dir.join(flavor.snapshot_settings_name()));
        let source = match beside {
            Some(path) if std::fs::symlink_metadata(&path).is_ok() => Some(path),
            _ => CliSettings::own_path(flavor),
        };
        let no_settings = CliSettings::default();
        let settings = match source {
            Some(source) => self.settings_reader.load_quiet(&source),
            None => &no_settings,
        };
        let warning = settings.warning();
        if warning != self.settings_warning {
            if let Some(warning) = &warning {
                tracing::warn!("{warning}");
            }
            self.settings_warning = warning;
        }
        settings.carried_bytes()
    }
}
