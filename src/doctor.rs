//! `qbox doctor`'s findings, as data: where qbox looked, what it found,
//! whether the login is usable and when it is refreshed, where chat
//! requests would go, whether a Docker engine answers, and what runs left
//! in the runtime directory. `qbox doctor` renders it (text or JSON); the
//! Python package's `qbox.doctor()` returns its JSON.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;

use crate::container::detached;
use crate::container::engine::{self, EngineStatus};
use crate::container::runtime_dir::{self, Owner, RuntimeDir};
use crate::exit::{self, Diagnose};
use crate::qapi::api_key::{ApiKey, ApiKeyError, KeySource};
use crate::qapi::{self, BareLogin, ChatEndpoint};
use crate::store::settings::CliSettings;
use crate::store::snapshot::SnapshotScope;
use crate::store::token::Profile;
use crate::store::{
    self, Flavor, Login, LoginKind, RefreshPolicy, SearchedPath, StoreQuery, TokenStatus,
};

/// The whole report (`qbox doctor --json` prints it as it serializes).
#[derive(Debug, Serialize)]
pub struct Report {
    /// The exit code `qbox doctor` ends with: 0 a usable login (or a Kiro
    /// API key that serves), 1 the store could not be read, 4 no usable login.
    #[serde(skip)]
    pub exit_code: u8,
    pub(crate) ok: bool,
    /// The path given with --db / QBOX_DB, when there was one.
    pub(crate) db_override: Option<PathBuf>,
    pub(crate) searched: Vec<SearchedPath>,
    pub(crate) store: Option<StoreInfo>,
    pub(crate) error: Option<ErrorInfo>,
    pub(crate) token: Option<TokenStatus>,
    pub(crate) registration: Option<RegistrationInfo>,
    /// `builder-id`, `identity-center`, `kiro-social` or `external-idp`.
    pub(crate) login_kind: Option<&'static str>,
    /// The kind for people, with the social login's provider.
    pub(crate) login_description: Option<String>,
    /// When and how the token is refreshed.
    pub(crate) refresh: Option<RefreshInfo>,
    pub(crate) profile: Option<Profile>,
    /// Logins in the store the CLI would not use, each with why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) passed_over: Vec<String>,
    /// The CLI's settings file and the endpoints it names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cli_settings: Option<CliSettings>,
    /// A Kiro API key in the environment: whether it is used (never its value).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) api_key: Option<ApiKeyReport>,
    /// Where `qbox chat` would send requests, and why (no network needed).
    #[serde(rename = "chatEndpoint")]
    pub(crate) chat_endpoint: ChatEndpointReport,
    pub(crate) docker: EngineStatus,
    /// `qbox run`'s per-user runtime directory and what runs left in it.
    pub(crate) runtime_dir: RuntimeDirReport,
    /// Private copies of the login that sidecars killed with SIGKILL left
    /// in the temporary directory (the next sidecar with the agent
    /// enabled removes them).
    pub(crate) agent_leftovers: Vec<PathBuf>,
}

/// The snapshot directories in `qbox run`'s runtime directory.
#[derive(Debug, Serialize)]
pub struct RuntimeDirReport {
    pub(crate) path: PathBuf,
    /// Left by runs whose process is gone (killed): the next `qbox run`
    /// removes them.
    pub(crate) orphaned: Vec<PathBuf>,
    /// How many belong to runs in progress.
    pub(crate) in_use: usize,
    /// Why the directory cannot be used, when it cannot.
    pub(crate) error: Option<ErrorInfo>,
}

impl RuntimeDirReport {
    fn new(path: PathBuf) -> Self {
        let mut report = Self {
            path: path.clone(),
            orphaned: Vec::new(),
            in_use: 0,
            error: None,
        };
        let entries = RuntimeDir::existing(path)
            .and_then(|dir| dir.map_or_else(|| Ok(Vec::new()), |dir| detached::entries(&dir)));
        match entries {
            Ok(entries) => {
                for entry in entries {
                    match entry.owner {
                        Owner::Gone => report.orphaned.push(entry.path),
                        Owner::Alive => report.in_use += 1,
                    }
                }
            }
            Err(err) => {
                report.error = Some(ErrorInfo {
                    message: err.to_string(),
                    hint: err.hint(),
                });
            }
        }
        report
    }
}

/// The endpoint chat would use, with the login it would use, or why the
/// environment's bare login is unusable.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum ChatEndpointReport {
    Resolved {
        #[serde(flatten)]
        endpoint: ChatEndpoint,
        /// `store`, `QBOX_ACCESS_TOKEN`, `KIRO_API_KEY`,
        /// `QBOX_API_KEY_FILE`, or `none`.
        credentials: &'static str,
    },
    Invalid {
        error: ErrorInfo,
    },
}

/// A Kiro API key given to qbox: where it is, whether it is used, and why
/// not. Never the key.
#[derive(Debug, Serialize)]
pub struct ApiKeyReport {
    /// `KIRO_API_KEY` or `QBOX_API_KEY_FILE`.
    pub(crate) variable: &'static str,
    /// The key file, when it came from one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) file: Option<PathBuf>,
    /// Whether chat would use it (only when no store login is usable).
    pub(crate) used: bool,
    /// Why it is not used or cannot be.
    pub(crate) note: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<ErrorInfo>,
}

impl ApiKeyReport {
    /// The key of the environment, if any, judged against the store's
    /// login (which wins, as in the Kiro CLI).
    fn new(key: Result<Option<ApiKey>, ApiKeyError>, login_usable: bool) -> Option<Self> {
        let variable = ApiKey::env_variable();
        let (file, error) = match key {
            Ok(None) => return None,
            Ok(Some(key)) => match key.source {
                KeySource::File(path) => (Some(path), None),
                KeySource::Env => (None, None),
            },
            Err(err) => (
                None,
                Some(ErrorInfo {
                    message: err.to_string(),
                    hint: qapi::ApiError::from(err).hint(),
                }),
            ),
        };
        let (used, note) = match (&error, login_usable) {
            (_, true) => (
                false,
                "a login in the store is usable, and a stored login wins over a key (as in the Kiro CLI)".to_owned(),
            ),
            (Some(_), false) => (false, "the key cannot be used".to_owned()),
            (None, false) => (true, "no usable login in a store: chat uses the key".to_owned()),
        };
        Some(Self {
            variable,
            file,
            used,
            note,
            error,
        })
    }
}

impl ChatEndpointReport {
    /// Follows `QClient::from_env`: the store's login when it is usable
    /// (its profile, its CLI's settings), else `QBOX_ACCESS_TOKEN` with
    /// `QBOX_PROFILE_ARN` when no store exists, else a Kiro API key.
    fn new(
        query: &StoreQuery,
        login: Option<&Login>,
        login_usable: bool,
        key: Option<&ApiKeyReport>,
    ) -> Self {
        let store = qapi::store_exists(query);
        let from_login = |login: &Login| {
            let settings = CliSettings::of(login.flavor);
            ChatEndpoint::from_env(
                settings.endpoint.as_ref(),
                login.profile.as_ref().map(|p| p.arn.as_str()),
            )
        };
        if let (true, Some(login)) = (login_usable, login) {
            return Self::Resolved {
                endpoint: from_login(login),
                credentials: "store",
            };
        }
        if !store {
            match BareLogin::from_env() {
                Ok(Some(bare)) => {
                    return Self::Resolved {
                        endpoint: ChatEndpoint::from_env(None, bare.profile_arn.as_deref()),
                        credentials: "QBOX_ACCESS_TOKEN",
                    };
                }
                Ok(None) => {}
                Err(err) => {
                    return Self::Invalid {
                        error: ErrorInfo {
                            message: exit::chain(&err),
                            hint: err.hint(),
                        },
                    };
                }
            }
        }
        if let Some(key) = key.filter(|k| k.used) {
            return Self::Resolved {
                endpoint: ChatEndpoint::from_env(
                    CliSettings::of(Flavor::Kiro).endpoint.as_ref(),
                    None,
                ),
                credentials: key.variable,
            };
        }
        match login {
            Some(login) => Self::Resolved {
                endpoint: from_login(login),
                credentials: "store",
            },
            None => Self::Resolved {
                endpoint: ChatEndpoint::from_env(None, None),
                credentials: "none",
            },
        }
    }
}

/// When a keeper (`snapshot --watch`, `qbox run`, the sidecar) would
/// refresh the token, or why it cannot.
#[derive(Debug, Serialize)]
pub struct RefreshInfo {
    /// Whether qbox can refresh this login by itself.
    pub(crate) refreshable: bool,
    /// Why not, when it cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) blocker: Option<String>,
    /// What fixes it, when it cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) fix: Option<String>,
    /// The start of the refresh window with the default `--refresh-before`
    /// (5 minutes, at most half the token's lifetime when a qbox refresh
    /// recorded it), or the end of the 30 s pause after the last attempt
    /// if that is later.
    #[serde(with = "time::serde::rfc3339::option")]
    pub(crate) next_at: Option<OffsetDateTime>,
    /// When the last refresh attempt of any qbox process began.
    #[serde(with = "time::serde::rfc3339::option")]
    pub(crate) last_attempt_at: Option<OffsetDateTime>,
}

impl RefreshInfo {
    fn new(login: &Login, now: OffsetDateTime) -> Option<Self> {
        let entry = login.token.as_ref()?;
        let blocker = login.refresh_blocker(now);
        let (last_attempt, lifetime) = store::refresh_record(&login.path, entry.token.expires_at);
        let last_attempt_at = last_attempt.map(OffsetDateTime::from);
        let policy = RefreshPolicy::default();
        let next_at = blocker.is_none().then(|| {
            let at = policy.refresh_at(entry.token.expires_at, lifetime);
            let after_attempt = last_attempt_at.map(|last| {
                last + time::Duration::try_from(policy.min_interval).unwrap_or_default()
            });
            after_attempt.map_or(at, |after| after.max(at)).max(now)
        });
        Some(Self {
            refreshable: blocker.is_none(),
            fix: blocker.as_ref().map(|_| {
                if login.access_only {
                    "keep the host keeper (`qbox snapshot --watch` / `qbox run`) running, \
                     or take a --refreshable snapshot"
                        .to_owned()
                } else {
                    format!("log in again with `{}`", login.flavor.login_command())
                }
            }),
            blocker,
            next_at,
            last_attempt_at,
        })
    }
}

#[derive(Debug, Serialize)]
pub struct StoreInfo {
    pub(crate) path: PathBuf,
    pub(crate) flavor: Flavor,
    pub(crate) cli: &'static str,
    /// `access-only` for a snapshot without refresh token or client
    /// registration, which its host keeper refreshes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) snapshot_scope: Option<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct ErrorInfo {
    pub(crate) message: String,
    pub(crate) hint: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RegistrationInfo {
    Valid {
        #[serde(with = "time::serde::rfc3339")]
        expires_at: OffsetDateTime,
    },
    Expired,
    Missing,
}

impl Report {
    /// The report as JSON, as `qbox doctor --json` prints it.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// Looks at everything doctor reports. `xdg_runtime_dir` is the session's
/// `XDG_RUNTIME_DIR`, which the caller reads at its edge (it locates `qbox
/// run`'s runtime directory).
pub async fn report(query: &StoreQuery, xdg_runtime_dir: Option<&Path>) -> Report {
    let now = OffsetDateTime::now_utc();
    let docker = engine::probe(Duration::from_secs(3));
    let resolved = query.resolve(now);
    let login_usable = resolved
        .as_ref()
        .is_ok_and(|login| login.status(now).is_usable());
    let api_key = ApiKeyReport::new(ApiKey::from_env(), login_usable);
    let chat_endpoint = ChatEndpointReport::new(
        query,
        resolved.as_ref().ok(),
        login_usable,
        api_key.as_ref(),
    );
    let mut report = Report {
        exit_code: exit::NO_LOGIN,
        ok: false,
        db_override: query.db.clone(),
        searched: query.searched_paths(),
        store: None,
        error: None,
        token: None,
        registration: None,
        login_kind: None,
        login_description: None,
        refresh: None,
        profile: None,
        passed_over: Vec::new(),
        cli_settings: None,
        api_key,
        chat_endpoint,
        docker: docker.await,
        runtime_dir: RuntimeDirReport::new(runtime_dir::locate(xdg_runtime_dir)),
        agent_leftovers: crate::agent::leftovers::entries()
            .into_iter()
            .filter(|entry| entry.owner == Owner::Gone)
            .map(|entry| entry.path)
            .collect(),
    };
    let mut code = exit::NO_LOGIN;
    match resolved {
        Ok(login) => {
            let status = login.status(now);
            report.ok = status.is_usable();
            code = if report.ok { exit::OK } else { exit::NO_LOGIN };
            report.registration = Some(match &login.registration {
                None => RegistrationInfo::Missing,
                Some(r) if r.is_expired_at(now) => RegistrationInfo::Expired,
                Some(r) => RegistrationInfo::Valid {
                    expires_at: r.client_secret_expires_at.unwrap_or(now),
                },
            });
            let kind = login.kind();
            report.login_kind = kind.as_ref().map(LoginKind::name);
            report.login_description = kind.as_ref().map(LoginKind::describe);
            report.refresh = RefreshInfo::new(&login, now);
            report.token = Some(status);
            report.profile = login.profile.clone();
            report.passed_over = login.passed_over.clone();
            report.cli_settings = Some(CliSettings::of(login.flavor));
            report.store = Some(StoreInfo {
                path: login.path.clone(),
                flavor: login.flavor,
                cli: login.flavor.display_name(),
                snapshot_scope: login
                    .access_only
                    .then_some(SnapshotScope::AccessOnly.name()),
            });
        }
        Err(err) => {
            if !err.is_no_login() {
                code = exit::ERROR;
            }
            report.error = Some(ErrorInfo {
                message: exit::chain(&err),
                hint: err.hint(),
            });
        }
    }
    // No usable login in a store, but a key that serves instead.
    if !report.ok && report.api_key.as_ref().is_some_and(|k| k.used) {
        report.ok = true;
        code = exit::OK;
    }
    report.exit_code = code;
    report
}
