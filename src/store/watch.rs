//! Keeping a snapshot fresh: the host is the single writer of refreshed
//! tokens (so no two parties ever spend the same refresh token), and every
//! change of the host's login reaches the snapshot within one interval.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use super::db::{SnapshotRows, read_snapshot_rows};
use super::snapshot::write_snapshot;
use super::{AuthError, Login, OidcClient, StoreError, StoreQuery};

/// How a [`SnapshotKeeper`] behaves.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// How often the host store is read.
    pub interval: Duration,
    /// Refresh the host token when it expires within this margin.
    pub refresh_before: Duration,
    /// File mode of the snapshot.
    pub mode: u32,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(2),
            refresh_before: Duration::from_secs(5 * 60),
            mode: super::snapshot::DEFAULT_MODE,
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
    /// The host token was refreshed and written back to the host store.
    Refreshed { expires_at: OffsetDateTime },
    /// A refresh failed; the next try is after `retry_in`.
    RefreshFailed {
        error: &'a AuthError,
        retry_in: Duration,
    },
    /// The host store cannot be read right now (reported once per problem).
    SourceProblem { error: &'a StoreError },
}

/// Upper bound of the refresh retry backoff.
const MAX_RETRY: Duration = Duration::from_secs(300);
/// First refresh retry delay.
const FIRST_RETRY: Duration = Duration::from_secs(5);

/// Writes and keeps refreshing one snapshot directory.
#[derive(Debug)]
pub struct SnapshotKeeper {
    query: StoreQuery,
    dir: PathBuf,
    options: WatchOptions,
    oidc: Option<OidcClient>,
    last_rows: Option<SnapshotRows>,
    last_problem: Option<String>,
    refresh_failures: u32,
    next_refresh_try: Instant,
}

impl SnapshotKeeper {
    pub fn new(query: StoreQuery, dir: PathBuf, options: WatchOptions) -> Self {
        Self {
            query,
            dir,
            options,
            oidc: None,
            last_rows: None,
            last_problem: None,
            refresh_failures: 0,
            next_refresh_try: Instant::now(),
        }
    }

    /// Tells the keeper that `rows` are already in the snapshot, so its first
    /// pass rewrites nothing unless the host's login changed.
    pub fn with_written(mut self, rows: SnapshotRows) -> Self {
        self.last_rows = Some(rows);
        self
    }

    /// The snapshot file this keeper maintains.
    pub fn snapshot_path(&self) -> PathBuf {
        self.dir.join(super::snapshot::SNAPSHOT_FILE_NAME)
    }

    /// One pass: refresh the host token if it is close to expiry, then
    /// rewrite the snapshot if the host's login rows changed. Errors that a
    /// later pass may not see (store missing, locked, logged out) are
    /// reported as events; an error writing the snapshot is returned.
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
        let login = self.refresh_if_due(login, now, on_event).await;
        let rows = match read_snapshot_rows(&login.path) {
            Ok(rows) => rows,
            Err(error) => {
                self.report_problem(&error, on_event);
                return Ok(());
            }
        };
        self.last_problem = None;
        if self.last_rows.as_ref() != Some(&rows) {
            let path = write_snapshot(&rows, &self.dir, self.options.mode)?;
            on_event(WatchEvent::Written {
                path: &path,
                expires_at: login.token.as_ref().map(|t| t.token.expires_at),
            });
            self.last_rows = Some(rows);
        }
        Ok(())
    }

    fn report_problem(&mut self, error: &StoreError, on_event: &mut dyn FnMut(WatchEvent<'_>)) {
        let text = crate::exit::chain(error);
        if self.last_problem.as_deref() != Some(&text) {
            on_event(WatchEvent::SourceProblem { error });
            self.last_problem = Some(text);
        }
    }

    async fn refresh_if_due(
        &mut self,
        login: Login,
        now: OffsetDateTime,
        on_event: &mut dyn FnMut(WatchEvent<'_>),
    ) -> Login {
        let due = login.token.as_ref().is_some_and(|entry| {
            entry.token.expires_within(
                now,
                time::Duration::try_from(self.options.refresh_before)
                    .unwrap_or(time::Duration::MAX),
            )
        });
        if !due || login.refresh_blocker(now).is_some() || Instant::now() < self.next_refresh_try {
            return login;
        }
        let oidc = match &self.oidc {
            Some(client) => client.clone(),
            None => match OidcClient::from_env() {
                Ok(client) => self.oidc.insert(client).clone(),
                Err(error) => {
                    self.refresh_failed(&AuthError::Refresh(error), on_event);
                    return login;
                }
            },
        };
        match super::refresh(login.clone(), &oidc).await {
            Ok(fresh) => {
                self.refresh_failures = 0;
                if let Some(entry) = &fresh.token {
                    on_event(WatchEvent::Refreshed {
                        expires_at: entry.token.expires_at,
                    });
                }
                fresh
            }
            Err(error) => {
                self.refresh_failed(&error, on_event);
                login
            }
        }
    }

    fn refresh_failed(&mut self, error: &AuthError, on_event: &mut dyn FnMut(WatchEvent<'_>)) {
        self.refresh_failures += 1;
        let factor = 1u32 << self.refresh_failures.min(8).saturating_sub(1);
        let retry_in = (FIRST_RETRY * factor).min(MAX_RETRY);
        self.next_refresh_try = Instant::now() + retry_in;
        on_event(WatchEvent::RefreshFailed { error, retry_in });
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
