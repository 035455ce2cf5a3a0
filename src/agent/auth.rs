//! Giving the CLI a login. The CLI writes to its store, so a read-only
//! snapshot (QBOX_DB) cannot be handed to it directly: the sidecar keeps a
//! private writable copy (mode 0600 in a 0700 directory), points the child's
//! data directory at it, and copies the snapshot's login rows into it before
//! every call so the host's refreshes reach the CLI. An access-only snapshot
//! whose token expired is reported as such before the CLI starts.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

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
        snapshot: PathBuf,
        dir: tempfile::TempDir,
        /// Held while the copy is brought up to date: concurrent calls
        /// would otherwise write the same file at once.
        updating: Mutex<()>,
    },
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
        let dir = store::snapshot::private_temp_dir("qbox-agent-")?;
        let auth = Self::PrivateCopy {
            snapshot,
            dir,
            updating: Mutex::new(()),
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

    /// [`Self::prepare`]; with `check_expiry`, an access-only snapshot
    /// whose token expired is an error rather than a copy.
    fn sync(&self, check_expiry: bool) -> Result<Prepared, StoreError> {
        let (snapshot, dir, updating) = match self {
            Self::Inherit { flavor } => {
                return Ok(Prepared {
                    env: HashMap::new(),
                    flavor: *flavor,
                });
            }
            Self::PrivateCopy {
                snapshot,
                dir,
                updating,
            } => (snapshot, dir, updating),
        };
        let _one_at_a_time = updating.lock().unwrap_or_else(|p| p.into_inner());
        let rows = db::read_snapshot_rows(snapshot)?;
        let detected = store::Login::detect_flavor(&rows.auth);
        let flavor = store::Login::flavor_of(&rows.auth, snapshot);
        // The CLI would meet an expired token with no refresh token and say
        // "not logged in"; the snapshot's host keeper is what is missing.
        if check_expiry && rows.auth.is_access_only() {
            let login = store::Login::from_rows(snapshot.clone(), flavor, &rows.auth)?;
            if let Some(error) = login.unusable(time::OffsetDateTime::now_utc()) {
                return Err(error);
            }
        }
        let store_dir = dir.path().join(flavor.dir_name());
        store::snapshot::update_private_copy(&rows, &store_dir)?;
        let mut env = HashMap::new();
        // The CLI finds its store under the XDG data directory on Linux.
        env.insert("XDG_DATA_HOME".to_owned(), dir.path().display().to_string());
        Ok(Prepared {
            env,
            flavor: detected,
        })
    }
}
