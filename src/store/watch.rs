//! Keeping a snapshot fresh: the host is the single writer of refreshed
//! tokens (so no two parties ever spend the same refresh token), and every
//! change of the host's login reaches the snapshot within one interval.
//!
//! A keeper outlives what happens around it: the host store replaced (the
//! CLI logged out and in: a new file) is read anew on every pass, because
//! every pass opens it by path; a deleted snapshot directory is recreated
//! (with the same checks as the first write); a failed write (a full disk)
//! leaves the previous snapshot in place, is reported, and is retried on the
//! next pass. Only a directory that became unsafe stops it.
//!
//! The CLI's settings travel with the login: every pass reads the user's
//! settings file and, when what a copy carries of it changed, rewrites it
//! beside the snapshot (a bad file is warned about once and its copy
//! removed). A keeper may also keep a writable copy of the login for a CLI
//! run in a container ([`SnapshotKeeper::with_private_copy`]): the same
//! rows, the same scope, its settings where that CLI reads them.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use time::OffsetDateTime;

use super::db::{SnapshotRows, read_snapshot_rows};
use super::keeper::{KeeperEvent, LoginKeeper, Need, RefreshPolicy};
use super::settings::CliSettings;
use super::snapshot::{SnapshotScope, write_settings, write_snapshot};
use super::{AuthError, StoreError, StoreQuery};

/// How a [`SnapshotKeeper`] behaves.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// How often the host store is read.
    pub interval: Duration,
    /// When to refresh the host token.
    pub policy: RefreshPolicy,
    /// File mode of the snapshot.
    pub mode: u32,
    /// What the snapshot carries: access-only by default, since this
    /// keeper rewrites it before the token expires.
    pub scope: SnapshotScope,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(2),
            policy: RefreshPolicy::default(),
            mode: super::snapshot::DEFAULT_MODE,
            scope: SnapshotScope::AccessOnly,
        }
    }
}

/// What happened during one pass, for progress displays.
#[derive(Debug)]
pub enum WatchEvent<'a> {
    /// The snapshot file was (re)written.
    Written {
        path: &'a Path,
        expires_at: Option<OffsetDateTime>,
    },
    /// The snapshot was missing (its directory deleted) and was written
    /// again; a `Written` event follows.
    Recreated { path: &'a Path },
    /// The snapshot could not be written; the previous one stays and the
    /// write is tried again on the next pass.
    WriteFailed { error: &'a StoreError },
    /// The host token was refreshed and written back to the host store.
    Refreshed { expires_at: OffsetDateTime },
    /// A refresh failed; the next try is after `retry_in`.
    RefreshFailed {
        error: &'a AuthError,
        retry_in: Duration,
    },
    /// The host token is due for a refresh that only the CLI can do.
    Unrefreshable { error: &'a StoreError },
    /// The host store cannot be read right now (reported once per problem).
    SourceProblem { error: &'a StoreError },
}

/// Writes and keeps refreshing one snapshot directory.
#[derive(Debug)]
pub struct SnapshotKeeper {
    query: StoreQuery,
    dir: PathBuf,
    options: WatchOptions,
    login: LoginKeeper,
    last_rows: Option<SnapshotRows>,
    /// The settings last written beside the snapshot (outer `None`: none
    /// written yet).
    last_settings: Option<Option<Vec<u8>>>,
    last_settings_problem: Option<String>,
    last_problem: Option<String>,
    last_write_error: Option<String>,
    copy: Option<CopyDirs>,
}

/// A writable copy of the login for a CLI: its `XDG_DATA_HOME` and `HOME`.
#[derive(Debug, Clone)]
pub struct CopyDirs {
    pub data_home: PathBuf,
    pub home: PathBuf,
}

impl CopyDirs {
    /// The copy under `dir`: `dir/data` and `dir/home`.
    pub fn under(dir: &Path) -> Self {
        Self {
            data_home: dir.join("data"),
            home: dir.join("home"),
        }
    }

    /// Writes `rows` (already reduced to the copy's scope) and `settings`
    /// into the copy for `flavor`'s CLI: the store written whole the
    /// first time, its login rows replaced in place afterwards (the CLI
    /// may hold it open and has written its own rows).
    pub fn update(
        &self,
        flavor: super::Flavor,
        rows: &SnapshotRows,
        settings: Option<Option<&[u8]>>,
    ) -> Result<(), StoreError> {
        super::private_file::prepare_private_dir(&self.home)?;
        super::snapshot::update_private_copy(rows, &self.data_home.join(flavor.dir_name()))?;
        if let Some(settings) = settings {
            super::snapshot::place_settings(flavor, settings, &self.data_home, &self.home)?;
        }
        Ok(())
    }
}

impl CopyDirs {
    /// Prepares the copy for `flavor`'s CLI when there is no stored login
    /// (a Kiro API key serves): its data directory and home, empty but for
    /// `settings`, where the CLI creates its own store and writes what it
    /// writes, as it would under a home of its own.
    pub fn prepare_without_login(
        &self,
        flavor: super::Flavor,
        settings: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        super::private_file::prepare_private_dir(&self.data_home)?;
        super::private_file::prepare_private_dir(&self.home)?;
        super::snapshot::place_settings(flavor, settings, &self.data_home, &self.home)
    }
}

impl SnapshotKeeper {
    pub fn new(query: StoreQuery, dir: PathBuf, options: WatchOptions) -> Self {
        Self {
            query,
            dir,
            login: LoginKeeper::new(options.policy.clone()),
            options,
            last_rows: None,
            last_settings: None,
            last_settings_problem: None,
            last_problem: None,
            last_write_error: None,
            copy: None,
        }
    }

    /// Tells the keeper what [`super::snapshot::take`] already wrote, so
    /// its first pass rewrites nothing unless the host's login or the
    /// user's settings changed, and does not warn again about a bad
    /// settings file.
    pub fn with_written(mut self, taken: super::snapshot::Taken) -> Self {
        self.last_rows = Some(taken.rows);
        self.last_settings = Some(taken.settings);
        self.last_settings_problem = taken.settings_warning;
        self
    }

    /// Also keeps the writable copy in `copy` up to date (written on the
    /// first pass, then whenever the snapshot is).
    pub fn with_private_copy(mut self, copy: CopyDirs) -> Self {
        self.copy = Some(copy);
        self
    }

    /// The snapshot file this keeper maintains.
    pub fn snapshot_path(&self) -> PathBuf {
        self.dir.join(super::snapshot::SNAPSHOT_FILE_NAME)
    }

    /// One pass: refresh the host token if the policy says so, then
    /// rewrite the snapshot if the host's login rows changed or the
    /// snapshot is gone. Problems a later pass may not see (store missing,
    /// locked, logged out; a failed write) are reported as events; only an
    /// unsafe snapshot directory is returned as an error.
    pub async fn tick(
        &mut self,
        on_event: &mut dyn FnMut(WatchEvent<'_>),
    ) -> Result<(), StoreError> {
        let now = OffsetDateTime::now_utc();
        let login = match self.query.resolve(now) {
            Ok(login) => login,
            Err(error) => {
                self.report_problem(&error, on_event);
                return Ok(());
            }
        };
        let login = match self.login.check(login, Need::Ahead).await {
            Ok(checked) => {
                match &checked.event {
                    Some(KeeperEvent::Refreshed { expires_at }) => {
                        on_event(WatchEvent::Refreshed {
                            expires_at: *expires_at,
                        });
                    }
                    Some(KeeperEvent::Failed { error, retry_in }) => {
                        on_event(WatchEvent::RefreshFailed {
                            error,
                            retry_in: *retry_in,
                        });
                    }
                    Some(KeeperEvent::Unrefreshable { error }) => {
                        on_event(WatchEvent::Unrefreshable { error });
                    }
                    None => {}
                }
                checked.login
            }
            Err(AuthError::Store(error)) => {
                self.report_problem(&error, on_event);
                return Ok(());
            }
            Err(error @ AuthError::Refresh(_)) => {
                // `Need::Ahead` reports refresh failures as events; this
                // arm only keeps the match whole.
                on_event(WatchEvent::RefreshFailed {
                    error: &error,
                    retry_in: self.options.interval,
                });
                return Ok(());
            }
        };
        let rows = match read_snapshot_rows(&login.path) {
            Ok(rows) => rows,
            Err(error) => {
                self.report_problem(&error, on_event);
                return Ok(());
            }
        };
        self.last_problem = None;
        let settings = self.settings(login.flavor);
        let missing = self.last_rows.is_some() && !self.snapshot_exists();
        let copy_missing = self.copy.as_ref().is_some_and(|copy| {
            std::fs::symlink_metadata(
                copy.data_home
                    .join(login.flavor.dir_name())
                    .join(super::snapshot::SNAPSHOT_FILE_NAME),
            )
            .is_err()
        });
        let settings_changed = self.last_settings.as_ref() != Some(&settings);
        if self.last_rows.as_ref() == Some(&rows) && !missing && !copy_missing {
            if settings_changed {
                self.write_settings(login.flavor, &settings, on_event);
            }
            return Ok(());
        }
        let path = match write_snapshot(&rows, &self.dir, self.options.mode, self.options.scope) {
            Ok(path) => path,
            Err(error @ StoreError::UnsafeDirectory { .. }) => return Err(error),
            Err(error) => {
                let text = crate::exit::chain(&error);
                if self.last_write_error.as_deref() != Some(&text) {
                    tracing::warn!("the snapshot could not be written: {text}");
                    on_event(WatchEvent::WriteFailed { error: &error });
                    self.last_write_error = Some(text);
                }
                return Ok(());
            }
        };
        self.last_write_error = None;
        if let Some(copy) = &self.copy {
            let copied = self
                .options
                .scope
                .rows(&rows)
                .and_then(|scoped| copy.update(login.flavor, &scoped, None));
            if let Err(error) = copied {
                tracing::warn!(
                    "the writable copy of the login could not be updated: {}",
                    crate::exit::chain(&error)
                );
                on_event(WatchEvent::WriteFailed { error: &error });
            }
        }
        if settings_changed || missing || copy_missing {
            self.write_settings(login.flavor, &settings, on_event);
        }
        if missing {
            tracing::info!(path = %path.display(), "the snapshot was missing; wrote it again");
            on_event(WatchEvent::Recreated { path: &path });
        }
        on_event(WatchEvent::Written {
            path: &path,
            expires_at: login.token.as_ref().map(|t| t.token.expires_at),
        });
        self.last_rows = Some(rows);
        Ok(())
    }

    /// What a copy carries of the user's settings for `flavor`'s CLI; a bad
    /// file is warned about once (until its problem changes).
    fn settings(&mut self, flavor: super::Flavor) -> Option<Vec<u8>> {
        let settings = CliSettings::of_quiet(flavor);
        let warning = settings.warning();
        if warning != self.last_settings_problem {
            if let Some(warning) = &warning {
                tracing::warn!("{warning}");
            }
            self.last_settings_problem = warning;
        }
        settings.carried_bytes()
    }

    /// Writes the settings beside the snapshot (and into the writable
    /// copy); a failure is reported and tried again on the next pass.
    fn write_settings(
        &mut self,
        flavor: super::Flavor,
        settings: &Option<Vec<u8>>,
        on_event: &mut dyn FnMut(WatchEvent<'_>),
    ) {
        let mut written = write_settings(&self.dir, flavor, settings.as_deref(), self.options.mode);
        if let (Ok(()), Some(copy)) = (&written, &self.copy) {
            written = super::snapshot::place_settings(
                flavor,
                settings.as_deref(),
                &copy.data_home,
                &copy.home,
            );
        }
        match written {
            Ok(()) => {
                tracing::info!(dir = %self.dir.display(), "the CLI's settings were written beside the snapshot");
                self.last_settings = Some(settings.clone());
            }
            Err(error) => {
                tracing::warn!(
                    "the CLI's settings could not be written: {}",
                    crate::exit::chain(&error)
                );
                on_event(WatchEvent::WriteFailed { error: &error });
                self.last_settings = None;
            }
        }
    }

    /// True when the snapshot file is where this keeper wrote it.
    fn snapshot_exists(&self) -> bool {
        std::fs::symlink_metadata(self.snapshot_path()).is_ok()
    }

    fn report_problem(&mut self, error: &StoreError, on_event: &mut dyn FnMut(WatchEvent<'_>)) {
        let text = crate::exit::chain(error);
        if self.last_problem.as_deref() != Some(&text) {
            on_event(WatchEvent::SourceProblem { error });
            self.last_problem = Some(text);
        }
    }

    /// Runs passes every interval until `shutdown` completes. A pass that is
    /// refreshing a token is allowed to finish first: dropping it could lose
    /// a rotated refresh token.
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()>,
        on_event: &mut dyn FnMut(WatchEvent<'_>),
    ) -> Result<(), StoreError> {
        tokio::pin!(shutdown);
        loop {
            self.tick(on_event).await?;
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                () = tokio::time::sleep(self.options.interval) => {}
            }
        }
    }
}
