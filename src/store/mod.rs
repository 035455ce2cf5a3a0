//! The CLI's SQLite auth store: finding it, reading logins safely while the
//! CLI may be writing, refreshing tokens, and least-privilege snapshots.
//!
//! **Architecture invariant:** this is the only module that touches SQLite.
//! It writes to a user's store in exactly one place
//! ([`db::replace_token_if_unchanged`]), and never deletes from it.

pub mod db;
pub(crate) mod discovery;
pub(crate) mod error;
pub mod export;
pub mod flavor;
pub(crate) mod keeper;
pub mod login;
pub mod private_file;
pub(crate) mod refresh;
mod refresh_lock;
pub mod schema;
pub mod settings;
pub mod snapshot;
pub(crate) mod token;
pub mod user_dirs;
pub(crate) mod watch;

use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use crate::exit::Diagnose;
use crate::secret;

pub use error::StoreError;
pub use flavor::Flavor;
pub use keeper::{KeeperEvent, LoginKeeper, Need, RefreshPolicy, ensure_fresh};
pub use login::{Login, LoginKind, TokenStatus};
pub use refresh::{KiroAuthClient, OidcClient, RefreshError};

/// Environment variable naming the store (same as `--db`).
pub const DB_ENV: &str = "QBOX_DB";
/// Environment variable picking the CLI (same as `--cli`).
pub const CLI_ENV: &str = "QBOX_CLI";

/// Which store the user asked for.
#[derive(Debug, Clone, Default)]
pub struct StoreQuery {
    /// `--db` / `QBOX_DB`: use this file and search nothing.
    pub db: Option<PathBuf>,
    /// `--cli` / `QBOX_CLI`: use this CLI's store (and keys).
    pub cli: Option<Flavor>,
}

/// One place qbox looked for a store.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SearchedPath {
    pub path: PathBuf,
    pub flavor: Flavor,
    pub exists: bool,
}

/// Errors of commands that read and refresh a login.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Refresh(#[from] RefreshError),
}

impl Diagnose for AuthError {
    fn hint(&self) -> Option<String> {
        match self {
            Self::Store(e) => e.hint(),
            Self::Refresh(e) => e.hint(),
        }
    }

    fn exit_code(&self) -> u8 {
        match self {
            Self::Store(e) => e.exit_code(),
            Self::Refresh(e) => e.exit_code(),
        }
    }
}

impl StoreQuery {
    /// The default locations this query searches (nothing when `--db` is set).
    pub fn searched_paths(&self) -> Vec<SearchedPath> {
        if self.db.is_some() {
            return Vec::new();
        }
        discovery::default_store_paths()
            .into_iter()
            .filter(|(flavor, _)| self.cli.is_none_or(|c| c == *flavor))
            .map(|(flavor, path)| SearchedPath {
                exists: path.exists(),
                path,
                flavor,
            })
            .collect()
    }

    /// Reads the login this query designates.
    ///
    /// With `--db`, that file. Otherwise the CLIs' default stores: the one
    /// `--cli` names, or, when both exist, the one whose token is usable
    /// (valid beats refreshable; on a tie, the later expiry wins, which is
    /// the most recent login).
    pub fn resolve(&self, now: OffsetDateTime) -> Result<Login, StoreError> {
        if let Some(path) = &self.db {
            return read_login(path, self.cli);
        }
        let searched = self.searched_paths();
        let mut best: Option<Login> = None;
        let mut errors = Vec::new();
        for candidate in searched.iter().filter(|s| s.exists) {
            match read_login(&candidate.path, Some(candidate.flavor)) {
                Ok(login) => {
                    let better = match &best {
                        None => true,
                        Some(current) => prefer(&login, current, now),
                    };
                    if better {
                        best = Some(login);
                    }
                }
                Err(err) => errors.push(err),
            }
        }
        match best {
            Some(login) => {
                for err in &errors {
                    tracing::warn!("skipped a store: {}", crate::exit::chain(err));
                }
                tracing::debug!(path = %login.path.display(), flavor = ?login.flavor, "using store");
                Ok(login)
            }
            None if !errors.is_empty() => Err(errors.swap_remove(0)),
            None => Err(StoreError::NotFound {
                searched: searched.into_iter().map(|s| s.path).collect(),
            }),
        }
    }
}

/// True when `candidate` should be used instead of `current`.
fn prefer(candidate: &Login, current: &Login, now: OffsetDateTime) -> bool {
    let (a, b) = (candidate.status(now), current.status(now));
    if a.rank() != b.rank() {
        return a.rank() > b.rank();
    }
    let expiry = |l: &Login| l.token.as_ref().map(|t| t.token.expires_at);
    expiry(candidate) > expiry(current)
}

/// True when the store the query names can be written (so refreshed tokens
/// can be written back). Probes by opening for writing, which changes
/// nothing; a read-only mount or file mode answers no.
pub fn writable_store(query: &StoreQuery) -> bool {
    let path = match &query.db {
        Some(path) => path.clone(),
        None => match query.searched_paths().into_iter().find(|p| p.exists) {
            Some(found) => found.path,
            None => return false,
        },
    };
    // Non-blocking: a FIFO named by --db must not hang the probe.
    crate::regular_file::open(&path, true).is_ok()
}

/// The path of a store for messages, made absolute when possible (the
/// refresh lock hashes the same form, so that every spelling of one store
/// shares its lock).
pub fn display_path(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

/// Reads the login in the store at `path`. The flavor is `flavor` if given,
/// else the one whose keys the store holds, else the one its directory names.
pub fn read_login(path: &Path, flavor: Option<Flavor>) -> Result<Login, StoreError> {
    tracing::debug!(path = %path.display(), "reading auth store");
    let rows = db::read_auth_rows(path)?;
    tracing::trace!(
        auth_rows = rows.auth_kv.len(),
        state_rows = rows.state.len(),
        "auth rows read"
    );
    let flavor = flavor.unwrap_or_else(|| Login::flavor_of(&rows, path));
    let mut login = Login::from_rows(display_path(path), flavor, &rows)?;
    // One file holding both CLIs' logins (a store the Kiro CLI took over
    // from the Amazon Q CLI): say which one is used and why.
    for other in Flavor::ALL.into_iter().filter(|f| *f != flavor) {
        if let Some(key) = other
            .token_keys()
            .iter()
            .find(|key| rows.auth_value(key).is_some())
        {
            login.passed_over.push(format!(
                "{key}: a login of the {}; the {} login in the same store is used (the Kiro CLI first, or --cli)",
                other.display_name(),
                flavor.display_name()
            ));
        }
    }
    Ok(login)
}

/// When the last refresh attempt of the store at `path` began (by any qbox
/// process), and the lifetime of the token expiring at `expires_at` if a
/// refresh recorded it. For reports.
pub fn refresh_record(
    path: &Path,
    expires_at: OffsetDateTime,
) -> (Option<std::time::SystemTime>, Option<std::time::Duration>) {
    let record = refresh_lock::record(path);
    (record.last_attempt(), record.lifetime_of(expires_at))
}

/// Runs store work on the blocking pool and waits for it. SQLite calls
/// block, and a store locked by the CLI is waited out for up to
/// `QBOX_LOCK_TIMEOUT`: on the async reactor that wait would stall every
/// other task (a sidecar's other clients), here it stalls only its caller.
pub async fn off_reactor<T, F>(work: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(output) => output,
        Err(err) => match err.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            // Cancelled: the runtime is shutting down and no one awaits this.
            Err(_) => std::future::pending().await,
        },
    }
}

/// The clients that refresh each kind of login.
#[derive(Debug, Clone)]
pub struct Refreshers {
    pub oidc: OidcClient,
    pub kiro: KiroAuthClient,
}

impl Refreshers {
    /// Clients that honour `QBOX_OIDC_ENDPOINT` and `QBOX_KIRO_AUTH_ENDPOINT`.
    pub fn from_env() -> Result<Self, RefreshError> {
        Ok(Self {
            oidc: OidcClient::from_env()?,
            kiro: KiroAuthClient::from_env()?,
        })
    }
}

/// A new token from a token service, before it is written back.
struct Grant {
    access_token: secret::Secret,
    expires_at: OffsetDateTime,
    refresh_token: Option<secret::Secret>,
    profile_arn: Option<String>,
}

/// The stored JSON of a Kiro social or external-IdP token after a refresh:
/// the CLI's own object with the new access token, expiry, rotated refresh
/// token and (social) profile ARN, every other field kept as it was.
fn patched_token_json(raw: &str, grant: &Grant) -> Result<String, StoreError> {
    let mut object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(raw)
        .map_err(|e| StoreError::BadJson {
            path: PathBuf::new(),
            key: "token".into(),
            detail: error::describe_json_error(&e),
        })?;
    object.insert(
        "access_token".into(),
        grant.access_token.expose().to_owned().into(),
    );
    object.insert(
        "expires_at".into(),
        crate::timefmt::rfc3339(grant.expires_at).into(),
    );
    if let Some(refresh_token) = &grant.refresh_token {
        object.insert(
            "refresh_token".into(),
            refresh_token.expose().to_owned().into(),
        );
    }
    if let Some(arn) = &grant.profile_arn {
        object.insert("profile_arn".into(), arn.clone().into());
    }
    Ok(serde_json::Value::Object(object).to_string())
}

/// Refreshes the login's token now, whatever its expiry, through the
/// service its kind uses, and writes it back (compare-and-swap). Callers
/// go through [`LoginKeeper`], which decides when.
pub(crate) async fn refresh(login: Login, clients: &Refreshers) -> Result<Login, AuthError> {
    let now = OffsetDateTime::now_utc();
    let entry = login.require_token()?.clone();
    let unrefreshable = |reason: String| login.unrefreshable(entry.token.expires_at, reason);
    if let Some(reason) = login.refresh_blocker(now) {
        return Err(unrefreshable(reason).into());
    }
    // `refresh_blocker` has checked these; saying so again costs nothing
    // and keeps this path free of panics.
    let Some(refresh_token) = &entry.token.refresh_token else {
        return Err(unrefreshable("the token has no refresh token".into()).into());
    };
    let answer = match entry.key {
        token::SOCIAL_TOKEN_KEY => clients
            .kiro
            .refresh_social(refresh_token)
            .await
            .map(|social| (social.grant, social.profile_arn)),
        token::EXTERNAL_IDP_TOKEN_KEY => {
            let fields = token::ExternalIdpFields::of(&entry.token).map_err(unrefreshable)?;
            clients
                .kiro
                .refresh_external(&fields.endpoint, &fields.client_id, refresh_token)
                .await
                .map(|grant| (grant, None))
        }
        _ => {
            let Some(registration) = &login.registration else {
                return Err(
                    unrefreshable("the store holds no oidc client registration".into()).into(),
                );
            };
            let region = entry.token.region_or_default().to_owned();
            clients
                .oidc
                .refresh(&region, registration, refresh_token)
                .await
                .map(|grant| (grant, None))
        }
    };
    let (grant, profile_arn) = match answer {
        Ok(answer) => answer,
        Err(err @ RefreshError::Rejected { .. }) => {
            // Another program may have refreshed (and rotated the refresh
            // token) between our read and our call: its token is good.
            let (stored, raw) = (login.clone(), entry.raw.clone());
            return match off_reactor(move || reread_if_changed(&stored, raw.expose())).await? {
                Some(current) if matches!(current.status(now), TokenStatus::Valid { .. }) => {
                    Ok(current)
                }
                _ => Err(err.into()),
            };
        }
        Err(err) => return Err(err.into()),
    };
    let issued_at = OffsetDateTime::now_utc();
    let grant = Grant {
        access_token: grant.access_token,
        expires_at: issued_at + time::Duration::seconds(grant.expires_in),
        refresh_token: grant.refresh_token,
        profile_arn,
    };
    let fresh_raw = if entry.key == login.flavor.token_key() {
        let fresh = entry.token.refreshed(
            grant.access_token.clone(),
            grant.expires_at,
            grant.refresh_token.clone(),
        );
        serde_json::to_string(&fresh).expect("a token always serializes")
    } else {
        patched_token_json(entry.raw.expose(), &grant)
            .map_err(|_| unrefreshable("the stored token is not a json object".into()))?
    };
    let fresh: token::StoredToken =
        serde_json::from_str(&fresh_raw).expect("qbox writes tokens it can read");
    // The service has spent the old refresh token if it rotated it: record
    // the grant durably before the write-back, so that a kill before the
    // commit (or a rollback of the store) does not lose the login.
    let pending = refresh_lock::PendingGrant {
        key: entry.key.to_owned(),
        replaces: refresh_lock::digest(refresh_token.expose()),
        row: secret::Secret::containing_parsed(fresh_raw.clone()),
    };
    let recorded = {
        let path = login.path.clone();
        off_reactor(move || refresh_lock::record_pending_grant(&path, &pending)).await
    };
    if let Err(err) = &recorded {
        tracing::warn!(path = %login.path.display(), "cannot record the new grant before writing it: {err}");
    }
    let outcome = {
        let (store, key, raw, fresh_raw) = (
            db::UserStore::of(&login),
            entry.key,
            entry.raw.clone(),
            fresh_raw.clone(),
        );
        off_reactor(move || db::replace_token_if_unchanged(&store, key, raw.expose(), &fresh_raw))
            .await?
    };
    // Written, or the store moved on without it: either way the record has
    // served. (A failed write keeps it for the next start.)
    if recorded.is_ok() {
        refresh_lock::clear_pending_grant(&login.path);
    }
    match outcome {
        db::WriteOutcome::Written => {
            tracing::info!(path = %login.path.display(), "refreshed token written back to the store");
            Ok(Login {
                token: Some(login::TokenEntry {
                    key: entry.key,
                    raw: secret::Secret::containing_parsed(fresh_raw),
                    token: fresh,
                }),
                ..login
            })
        }
        db::WriteOutcome::ChangedMeanwhile => {
            tracing::info!("the store's token changed during the refresh; using the stored one");
            let (path, flavor) = (login.path.clone(), login.flavor);
            Ok(off_reactor(move || read_login(&path, Some(flavor))).await?)
        }
    }
}

/// Writes a grant that a killed qbox recorded but did not write back, when
/// the store still holds the token whose refresh token it replaced; then
/// removes the record. Under the refresh lock, after reading the store
/// again. Returns the login as it is afterwards; any failure is logged and
/// leaves the record for the next start. Every refresh check begins here,
/// so the rotated-away refresh token is never spent again.
pub(crate) async fn recover_recorded_grant(login: Login) -> Login {
    if !refresh_lock::has_pending_grant(&login.path) {
        return login;
    }
    let _lock = refresh_lock::RefreshLock::acquire(&login.path, refresh_lock::LOCK_WAIT).await;
    let (path, flavor) = (login.path.clone(), login.flavor);
    match off_reactor(move || write_recorded_grant(&path, flavor)).await {
        Ok(Some(current)) => current,
        Ok(None) => login,
        Err(err) => {
            tracing::warn!(path = %login.path.display(), "cannot recover the recorded grant: {err}");
            login
        }
    }
}

fn write_recorded_grant(path: &Path, flavor: Flavor) -> Result<Option<Login>, StoreError> {
    let Some(grant) = refresh_lock::pending_grant(path) else {
        return Ok(None);
    };
    let current = read_login(path, Some(flavor))?;
    let stored = current
        .token
        .as_ref()
        .filter(|entry| entry.key == grant.key);
    let replaced = stored.is_some_and(|entry| {
        entry
            .token
            .refresh_token
            .as_ref()
            .is_some_and(|t| refresh_lock::digest(t.expose()) == grant.replaces)
    });
    let Some(entry) = stored.filter(|_| replaced) else {
        // The write-back happened, or the CLI has logged in since.
        refresh_lock::clear_pending_grant(path);
        return Ok(Some(current));
    };
    let outcome = db::replace_token_if_unchanged(
        &db::UserStore::of(&current),
        entry.key,
        entry.raw.expose(),
        grant.row.expose(),
    )?;
    refresh_lock::clear_pending_grant(path);
    if outcome == db::WriteOutcome::Written {
        tracing::info!(
            path = %path.display(),
            "wrote the refreshed token a killed qbox had received but not written back"
        );
    }
    read_login(path, Some(flavor)).map(Some)
}

/// Re-reads the store; returns the login if its token is no longer `raw`.
fn reread_if_changed(login: &Login, raw: &str) -> Result<Option<Login>, StoreError> {
    let current = read_login(&login.path, Some(login.flavor))?;
    let changed = current
        .token
        .as_ref()
        .is_some_and(|t| t.raw.expose() != raw);
    Ok(changed.then_some(current))
}
