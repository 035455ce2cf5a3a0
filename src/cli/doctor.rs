//! `qbox doctor`: where qbox looked, what it found, whether the login is
//! usable, where chat requests would go, and whether a Docker engine answers.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;

use crate::app::term::Palette;
use crate::container::detached;
use crate::container::engine::{self, EngineStatus};
use crate::container::runtime_dir::{Owner, RuntimeDir};
use crate::exit::{self, Diagnose};
use crate::qapi::api_key::{ApiKey, ApiKeyError, KeySource};
use crate::qapi::{self, API_KEY_ENV, API_KEY_FILE_ENV, BareLogin, ChatEndpoint};
use crate::store::settings::CliSettings;
use crate::store::snapshot::SnapshotScope;
use crate::store::token::Profile;
use crate::store::{
    self, Flavor, Login, LoginKind, RefreshPolicy, SearchedPath, StoreQuery, TokenStatus,
};
use crate::timefmt::{relative, rfc3339_seconds};

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  qbox doctor
  qbox doctor --json | jq .token.state
  qbox --db ./data.sqlite3 doctor

Exit codes: 0 a usable login was found, 1 the store could not be read, 4 no usable login.")]
pub struct DoctorArgs {
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    ok: bool,
    /// The path given with --db / QBOX_DB, when there was one.
    db_override: Option<PathBuf>,
    searched: Vec<SearchedPath>,
    store: Option<StoreInfo>,
    error: Option<ErrorInfo>,
    token: Option<TokenStatus>,
    registration: Option<RegistrationInfo>,
    /// `builder-id`, `identity-center`, `kiro-social` or `external-idp`.
    login_kind: Option<&'static str>,
    /// The kind for people, with the social login's provider.
    login_description: Option<String>,
    /// When and how the token is refreshed.
    refresh: Option<RefreshInfo>,
    profile: Option<Profile>,
    /// Logins in the store the CLI would not use, each with why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    passed_over: Vec<String>,
    /// The CLI's settings file and the endpoints it names.
    #[serde(skip_serializing_if = "Option::is_none")]
    cli_settings: Option<CliSettings>,
    /// A Kiro API key in the environment: whether it is used (never its value).
    #[serde(skip_serializing_if = "Option::is_none")]
    api_key: Option<ApiKeyReport>,
    /// Where `qbox chat` would send requests, and why (no network needed).
    #[serde(rename = "chatEndpoint")]
    chat_endpoint: ChatEndpointReport,
    docker: EngineStatus,
    /// `qbox run`'s per-user runtime directory and what runs left in it.
    runtime_dir: RuntimeDirReport,
    /// Private copies of the login that sidecars killed with SIGKILL left
    /// in the temporary directory (the next sidecar with the agent
    /// enabled removes them).
    agent_leftovers: Vec<PathBuf>,
}

/// The snapshot directories in `qbox run`'s runtime directory.
#[derive(Debug, Serialize)]
struct RuntimeDirReport {
    path: PathBuf,
    /// Left by runs whose process is gone (killed): the next `qbox run`
    /// removes them.
    orphaned: Vec<PathBuf>,
    /// How many belong to runs in progress.
    in_use: usize,
    /// Why the directory cannot be used, when it cannot.
    error: Option<ErrorInfo>,
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
enum ChatEndpointReport {
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
struct ApiKeyReport {
    /// `KIRO_API_KEY` or `QBOX_API_KEY_FILE`.
    variable: &'static str,
    /// The key file, when it came from one.
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<PathBuf>,
    /// Whether chat would use it (only when no store login is usable).
    used: bool,
    /// Why it is not used or cannot be.
    note: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorInfo>,
}

impl ApiKeyReport {
    /// The key of the environment, if any, judged against the store's
    /// login (which wins, as in the Kiro CLI).
    fn new(key: Result<Option<ApiKey>, ApiKeyError>, login_usable: bool) -> Option<Self> {
        let variable = if std::env::var_os(API_KEY_ENV).is_some() {
            API_KEY_ENV
        } else {
            API_KEY_FILE_ENV
        };
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
struct RefreshInfo {
    /// Whether qbox can refresh this login by itself.
    refreshable: bool,
    /// Why not, when it cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    blocker: Option<String>,
    /// What fixes it, when it cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
    /// The start of the refresh window with the default `--refresh-before`
    /// (5 minutes, at most half the token's lifetime when a qbox refresh
    /// recorded it), or the end of the 30 s pause after the last attempt
    /// if that is later.
    #[serde(with = "time::serde::rfc3339::option")]
    next_at: Option<OffsetDateTime>,
    /// When the last refresh attempt of any qbox process began.
    #[serde(with = "time::serde::rfc3339::option")]
    last_attempt_at: Option<OffsetDateTime>,
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
struct StoreInfo {
    path: PathBuf,
    flavor: Flavor,
    cli: &'static str,
    /// `access-only` for a snapshot without refresh token or client
    /// registration, which its host keeper refreshes.
    #[serde(skip_serializing_if = "Option::is_none")]
    snapshot_scope: Option<&'static str>,
}

#[derive(Debug, Serialize)]
struct ErrorInfo {
    message: String,
    hint: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
enum RegistrationInfo {
    Valid {
        #[serde(with = "time::serde::rfc3339")]
        expires_at: OffsetDateTime,
    },
    Expired,
    Missing,
}

pub async fn run(args: DoctorArgs, query: StoreQuery, palette: Palette) -> anyhow::Result<u8> {
    let now = OffsetDateTime::now_utc();
    let docker = engine::probe(Duration::from_secs(3));
    let resolved = query.resolve(now);
    let login_usable = resolved
        .as_ref()
        .is_ok_and(|login| login.status(now).is_usable());
    let api_key = ApiKeyReport::new(ApiKey::from_env(), login_usable);
    let chat_endpoint = ChatEndpointReport::new(
        &query,
        resolved.as_ref().ok(),
        login_usable,
        api_key.as_ref(),
    );
    let mut report = Report {
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
        runtime_dir: RuntimeDirReport::new(super::run::runtime_dir_path()),
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
    if args.json {
        crate::app::output::println(format_args!("{}", serde_json::to_string_pretty(&report)?))?;
    } else {
        crate::app::output::print(render_text(&report, now, palette_for_stdout(palette)))?;
    }
    Ok(code)
}

/// Doctor's text report is data on stdout; it is styled only when stdout is
/// a terminal and colours are allowed.
fn palette_for_stdout(stderr_palette: Palette) -> Palette {
    use std::io::IsTerminal;
    if stderr_palette.enabled() && std::io::stdout().is_terminal() {
        stderr_palette
    } else {
        Palette::plain()
    }
}

fn render_text(report: &Report, now: OffsetDateTime, p: Palette) -> String {
    let mut out = String::new();
    let mut line = |label: &str, value: String| {
        out.push_str(&format!("{label:<13}{value}\n"));
    };
    if let Some(db) = &report.db_override {
        line(
            "store path",
            format!("{} (from --db / QBOX_DB)", db.display()),
        );
    }
    for (i, searched) in report.searched.iter().enumerate() {
        let state = if searched.exists {
            p.good("found")
        } else {
            p.dim("missing")
        };
        line(
            if i == 0 { "searched" } else { "" },
            format!("{} ({state})", searched.path.display()),
        );
    }
    match &report.store {
        Some(store) => line(
            "store",
            match store.snapshot_scope {
                Some(scope) => {
                    format!("{} ({}, {scope} snapshot)", store.path.display(), store.cli)
                }
                None => format!("{} ({})", store.path.display(), store.cli),
            },
        ),
        None => line("store", p.bad("none")),
    }
    if let Some(error) = &report.error {
        line("problem", p.bad(&error.message));
        if let Some(hint) = &error.hint {
            line("hint", hint.clone());
        }
    }
    if let Some(token) = &report.token {
        let text = match token {
            TokenStatus::Valid { expires_at } => p.good(&format!(
                "valid until {} ({})",
                rfc3339_seconds(*expires_at),
                relative(*expires_at, now)
            )),
            TokenStatus::Refreshable { expires_at } => p.good(&format!(
                "expired {} but refreshable (qbox refreshes it on use)",
                relative(*expires_at, now)
            )),
            TokenStatus::Unusable { expires_at, reason } => p.bad(&format!(
                "expired {}, not refreshable: {reason}",
                relative(*expires_at, now)
            )),
            TokenStatus::Missing => p.bad("missing (not logged in)"),
        };
        line("token", text);
    }
    if let Some(kind) = &report.login_description {
        line("login", kind.clone());
    }
    for (i, passed) in report.passed_over.iter().enumerate() {
        line(if i == 0 { "not used" } else { "" }, p.dim(passed));
    }
    if let Some(key) = &report.api_key {
        let source = match &key.file {
            Some(file) => format!("{} ({})", key.variable, file.display()),
            None => key.variable.to_owned(),
        };
        let text = match &key.error {
            Some(error) => p.bad(&format!("{source}: {}", error.message)),
            None if key.used => p.good(&format!("Kiro API key from {source}: {}", key.note)),
            None => format!("Kiro API key from {source}: {}", key.note),
        };
        line("api key", text);
        if let Some(hint) = key.error.as_ref().and_then(|e| e.hint.as_ref()) {
            line("hint", hint.clone());
        }
    }
    if let Some(settings) = &report.cli_settings
        && let Some(path) = &settings.path
    {
        let mut named = Vec::new();
        if let Some(endpoint) = &settings.endpoint {
            named.push(format!(
                "endpoint {}",
                crate::http::sanitize_remote(&endpoint.endpoint)
            ));
        }
        if let Some(auth) = &settings.kiro_auth {
            named.push(format!(
                "auth service {}",
                crate::http::sanitize_remote(auth)
            ));
        }
        let text = match (&settings.ignored, named.is_empty()) {
            (Some(problem), _) => p.bad(&format!("{}: ignored, {problem}", path.display())),
            (None, true) => format!("{}: no endpoint overrides", path.display()),
            (None, false) => format!("{}: {}", path.display(), named.join(", ")),
        };
        line("cli settings", text);
        // Which settings a copy of the login carries (snapshots, the
        // agent's copy, `qbox run`'s writable copy).
        let carried = settings.carried.as_ref().map_or_else(
            || "none".to_owned(),
            |carried| {
                if carried.is_empty() {
                    "none of the keys qbox copies".to_owned()
                } else {
                    carried
                        .iter()
                        .map(|(key, value)| crate::http::sanitize_remote(&format!("{key}={value}")))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            },
        );
        line("settings copied", carried);
    }
    if let Some(refresh) = &report.refresh {
        let text = match (&refresh.blocker, refresh.next_at) {
            (Some(blocker), _) => p.bad(&format!(
                "qbox cannot refresh it: {blocker}; {}",
                refresh.fix.as_deref().unwrap_or("log in again")
            )),
            (None, Some(at)) if at <= now => "due now (qbox refreshes it on use)".to_owned(),
            (None, Some(at)) => format!("next at {} ({})", rfc3339_seconds(at), relative(at, now)),
            (None, None) => p.dim("unknown"),
        };
        line("refresh", text);
    }
    if let Some(registration) = &report.registration {
        let text = match registration {
            RegistrationInfo::Valid { expires_at } => {
                format!("valid until {}", rfc3339_seconds(*expires_at))
            }
            RegistrationInfo::Expired => p.bad("expired (a refresh will need a new login)"),
            RegistrationInfo::Missing => p.dim("missing"),
        };
        line("registration", text);
    }
    if report.store.is_some() {
        let profile = match &report.profile {
            Some(profile) => profile.arn.clone(),
            None => p.dim("none (Builder ID logins have none)"),
        };
        line("profile", profile);
    }
    line(
        "q endpoint",
        match &report.chat_endpoint {
            ChatEndpointReport::Resolved {
                endpoint,
                credentials:
                    credentials @ ("QBOX_ACCESS_TOKEN" | "KIRO_API_KEY" | "QBOX_API_KEY_FILE"),
            } => format!("{} with {credentials}", endpoint.describe()),
            ChatEndpointReport::Resolved { endpoint, .. } => endpoint.describe(),
            ChatEndpointReport::Invalid { error } => p.bad(&error.message),
        },
    );
    let docker = &report.docker;
    // The version and the error are the engine's words: an engine (or what
    // DOCKER_HOST names) must not be able to write to the terminal.
    let engine_text = |text: Option<&str>, missing: &str| {
        text.map_or_else(|| missing.to_owned(), crate::http::sanitize_remote)
    };
    let docker_text = if docker.available {
        p.good(&format!(
            "engine {} answers at {}",
            engine_text(docker.version.as_deref(), "?"),
            docker.endpoint
        ))
    } else {
        format!(
            "{} at {}: {}",
            p.bad("no engine"),
            docker.endpoint,
            engine_text(docker.error.as_deref(), "unknown error")
        )
    };
    line("docker", docker_text);
    let runtime = &report.runtime_dir;
    let runtime_text = match (&runtime.error, runtime.orphaned.len()) {
        (Some(error), _) => p.bad(&error.message),
        (None, 0) => format!(
            "{}: no leftovers ({} in use)",
            runtime.path.display(),
            runtime.in_use
        ),
        (None, orphaned) => format!(
            "{}: {} ({} in use)",
            runtime.path.display(),
            p.bad(&format!(
                "{orphaned} snapshot director{} left by killed runs (the next `qbox run` removes them)",
                if orphaned == 1 { "y" } else { "ies" }
            )),
            runtime.in_use
        ),
    };
    line("runtime dir", runtime_text);
    if let Some(hint) = runtime.error.as_ref().and_then(|e| e.hint.as_ref()) {
        line("hint", hint.clone());
    }
    for orphan in &runtime.orphaned {
        line("", orphan.display().to_string());
    }
    if !report.agent_leftovers.is_empty() {
        let count = report.agent_leftovers.len();
        line(
            "agent copies",
            p.bad(&format!(
                "{count} private cop{} of the login left by killed sidecars (the next sidecar removes them)",
                if count == 1 { "y" } else { "ies" }
            )),
        );
        for leftover in &report.agent_leftovers {
            line("", leftover.display().to_string());
        }
    }
    let verdict = if report.ok && report.api_key.as_ref().is_some_and(|k| k.used) {
        p.good("ok: no store login, the Kiro API key serves")
    } else if report.ok {
        p.good("ok: a usable login is available")
    } else {
        p.bad("not ready: no usable login")
    };
    out.push_str(&verdict);
    out.push('\n');
    out
}
