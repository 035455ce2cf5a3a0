//! `qbox doctor`: where qbox looked, what it found, whether the login is
//! usable, where chat requests would go, and whether a Docker engine answers
//! (the findings come from `crate::doctor`; this renders them).

use std::path::Path;

use time::OffsetDateTime;

use crate::app::term::Palette;
use crate::doctor::{ChatEndpointReport, RegistrationInfo, Report};
use crate::store::{StoreQuery, TokenStatus};
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

/// `xdg_runtime_dir` is the session's runtime directory, if usable (it
/// locates `qbox run`'s).
pub async fn run(
    args: DoctorArgs,
    query: StoreQuery,
    xdg_runtime_dir: Option<&Path>,
    palette: Palette,
) -> anyhow::Result<u8> {
    let now = OffsetDateTime::now_utc();
    let report = crate::doctor::report(&query, xdg_runtime_dir).await;
    let code = report.exit_code;
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
