#![allow(clippy::unwrap_used)]
//! qbox against the real Kiro CLI (or Amazon Q CLI), built from its public
//! source: not part of the test suite (the CLI takes 20 minutes to build
//! and is not in CI), run by hand with `tests/real-cli/run.sh PATH` whenever
//! the client, the store code or the agent changes, and its report recorded
//! in docs/real-cli.md.
//!
//! Every check runs the CLI in a home of its own, against stand-in Amazon Q
//! and SSO OIDC services on loopback (its endpoint override in
//! `~/.kiro/settings/cli.json`, or `settings.json` beside the Amazon Q CLI's
//! store), with stores in the real schema for each kind of login:
//!
//! 1. it accepts qbox's snapshots (refreshable and access-only) of its store
//!    (`whoami --format json` names the kind of login);
//! 2. qbox reads the store after the CLI wrote to it (`export-token`);
//! 3. its chat request matches `qbox chat`'s for the same login: the
//!    `TokenType` header and the body's `profileArn`;
//! 4. the sidecar's `q-developer-agent` drives it end to end over MCP;
//! 5. it says "not logged in" in its own words for an expired access-only
//!    snapshot, and the agent turns that into its message;
//! 6. the user's settings travel with the login: a snapshot carries the
//!    allow-listed keys only, and the CLI reading them (from the snapshot,
//!    or driven by the agent) sends `x-amzn-codewhisperer-optout: true` for
//!    a user who does not share content and the user's `chat.defaultModel`
//!    as `modelId` (the stand-in lists it in `ListAvailableModels`, which
//!    the CLI consults), through the endpoint override;
//! 7. each service failure the stand-in produces (access denied,
//!    throttling, an exception mid-stream, no connection): the CLI's exit
//!    code, stdout and stderr in `--no-interactive` mode, the fake CLI's
//!    `service-fail:KIND` printing the same lines, and the agent's
//!    `isError` answer quoting the CLI's error;
//! 8. `qbox chat`'s request beside the CLI's on the same login and
//!    settings: `modelId`, `envState`, the opt-out header,
//!    `amz-sdk-request`, `amz-sdk-invocation-id`;
//! 9. in containers (`container.rs`): docs/run.md's `qbox run IMAGE --
//!    kiro-cli chat --no-interactive "hello"` as written, `qbox run --mcp
//!    --hardened IMAGE` started by a user that is not root, and the agent
//!    image (`qbox image build --agent`).
//!
//! Usage: `cargo run --example real-cli -- CLI_BINARY [--flavor kiro|q]
//! [--only PART,...]` (parts: logins, api-key, agent, settings, failures,
//! parity, container).
//! Prints one line per check (`ok` / `FAILED` with what was seen) and exits
//! 1 if any failed.

mod container;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use qbox::standin::q::StandinQ;
use qbox::store::Flavor;
use qbox::store::schema::{FixtureLogin, StoreBuilder};
use serde_json::{Value, json};

const IDC_ARN: &str = "arn:aws:codewhisperer:us-east-1:111122223333:profile/REALCLI";

/// The kinds of login a store can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    BuilderId,
    IdentityCenter,
    Social,
    ExternalIdp,
}

impl Kind {
    const KIRO: [Kind; 4] = [
        Kind::BuilderId,
        Kind::IdentityCenter,
        Kind::Social,
        Kind::ExternalIdp,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::BuilderId => "builder-id",
            Self::IdentityCenter => "identity-center",
            Self::Social => "social",
            Self::ExternalIdp => "external-idp",
        }
    }

    /// What `whoami --format json` says (`accountType`).
    fn account_type(self) -> &'static str {
        match self {
            Self::BuilderId => "BuilderId",
            Self::IdentityCenter => "IamIdentityCenter",
            Self::Social => "Social",
            Self::ExternalIdp => "ExternalIdP",
        }
    }
}

struct Report {
    failed: usize,
}

impl Report {
    fn check(&mut self, name: &str, ok: bool, seen: impl std::fmt::Display) {
        if ok {
            println!("ok      {name}");
        } else {
            self.failed += 1;
            println!("FAILED  {name}: {seen}");
        }
    }
}

/// A home of its own, with the CLI's settings pointing at the stand-in.
struct Home {
    dir: tempfile::TempDir,
    flavor: Flavor,
}

impl Home {
    fn new(flavor: Flavor, q_url: &str) -> Self {
        Self::with_settings(
            flavor,
            &json!({"api.codewhisperer.service": {"endpoint": q_url, "region": "us-east-1"},
                   "telemetry.enabled": false}),
        )
    }

    /// A home whose CLI settings file holds `settings`.
    fn with_settings(flavor: Flavor, settings: &Value) -> Self {
        let home = Self::bare(flavor);
        let path = home.settings_path();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, settings.to_string()).unwrap();
        home
    }

    /// A home with no settings and no store.
    fn bare(flavor: Flavor) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("qbox-real-cli-")
            .tempdir()
            .unwrap();
        Self { dir, flavor }
    }

    /// Where the CLI reads its settings.
    fn settings_path(&self) -> PathBuf {
        self.flavor.settings_path(self.path(), &self.data())
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn data(&self) -> PathBuf {
        self.path().join(".local/share")
    }

    fn store(&self) -> PathBuf {
        self.data()
            .join(self.flavor.dir_name())
            .join("data.sqlite3")
    }

    /// A command with only this home in its environment.
    fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.path())
            .env("XDG_DATA_HOME", self.data())
            .env("XDG_RUNTIME_DIR", self.path())
            .env("NO_COLOR", "1")
            .env("KIRO_DISABLE_TELEMETRY", "1")
            .env("Q_DISABLE_TELEMETRY", "1")
            .current_dir(self.path())
            .stdin(Stdio::null());
        command
    }

    /// Writes a store of `kind` with access token `access` at the CLI's place.
    fn login(&self, kind: Kind, access: &str, expires_in: time::Duration) {
        let path = self.store();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let _ = std::fs::remove_file(&path);
        let expires_at = time::OffsetDateTime::now_utc() + expires_in;
        let mut fixture = FixtureLogin::builder_id(access, "aor-real-cli-refresh");
        fixture.expires_at = expires_at;
        let builder = StoreBuilder::create(&path, self.flavor).unwrap();
        let expires = qbox::timefmt::rfc3339(expires_at);
        let profile = json!({"arn": IDC_ARN, "profile_name": "RealCli"}).to_string();
        match kind {
            Kind::BuilderId => {
                builder.login(&fixture).unwrap();
            }
            Kind::IdentityCenter => {
                fixture.start_url = "https://d-90000real.awsapps.com/start".into();
                fixture.profile_arn = Some(IDC_ARN.into());
                builder.login(&fixture).unwrap();
            }
            Kind::Social => {
                let token = json!({"access_token": access, "expires_at": expires,
                    "refresh_token": "social-real-cli", "provider": "github", "profile_arn": IDC_ARN});
                builder
                    .auth_kv("kirocli:social:token", &token.to_string())
                    .unwrap();
                builder
                    .state("api.codewhisperer.profile", &profile)
                    .unwrap();
            }
            Kind::ExternalIdp => {
                let token = json!({"access_token": access, "expires_at": expires,
                    "refresh_token": "idp-real-cli", "issuer_url": "https://idp.example.com",
                    "token_endpoint": "https://idp.example.com/token", "client_id": "real-cli"});
                builder
                    .auth_kv("kirocli:external-idp:token", &token.to_string())
                    .unwrap();
                builder
                    .state("api.codewhisperer.profile", &profile)
                    .unwrap();
            }
        }
    }
}

struct Tools {
    cli: PathBuf,
    qbox: PathBuf,
    sidecar: PathBuf,
}

/// Runs `command` to its end, or kills it after [`RUN_LIMIT`] (exit -1):
/// a CLI that hangs fails its check instead of the whole run.
fn output(mut command: Command) -> (i32, String, String) {
    use std::io::Read;
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the program starts");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = std::time::Instant::now() + RUN_LIMIT;
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code().unwrap_or(-1);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break -1;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    (code, stdout.join().unwrap(), stderr.join().unwrap())
}

/// The longest any one program may run.
const RUN_LIMIT: std::time::Duration = std::time::Duration::from_secs(240);

/// `whoami --format json`'s `accountType` (the CLI may print more after
/// the JSON object).
fn whoami(tools: &Tools, home: &Home) -> (Option<String>, String) {
    let mut command = home.command(&tools.cli);
    command.args(["whoami", "--format", "json"]);
    let (_, stdout, stderr) = output(command);
    let account = stdout
        .lines()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .and_then(|v| v["accountType"].as_str().map(str::to_owned));
    (account, format!("{stdout} {stderr}"))
}

/// Replaces the store with qbox's snapshot of it (`scope`: `--access-only`
/// or `--refreshable`), writable, as the agent's private copy is.
fn use_snapshot(tools: &Tools, home: &Home, scope: &str) -> Result<(), String> {
    let dir = home.path().join(format!("snapshot{scope}"));
    let _ = std::fs::remove_dir_all(&dir);
    let mut command = home.command(&tools.qbox);
    command
        .arg("--db")
        .arg(home.store())
        .arg("snapshot")
        .arg(&dir)
        .arg(scope);
    let (code, _, stderr) = output(command);
    if code != 0 {
        return Err(stderr);
    }
    std::fs::copy(dir.join("data.sqlite3"), home.store()).map_err(|e| e.to_string())?;
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cli) = args.first().map(PathBuf::from) else {
        eprintln!("usage: real-cli CLI_BINARY [--flavor kiro|q] [--only PART,...]");
        std::process::exit(2);
    };
    let flavor = match args.iter().position(|a| a == "--flavor") {
        Some(i) => Flavor::from_name(&args[i + 1]).expect("--flavor kiro or q"),
        None => Flavor::Kiro,
    };
    let bin_dir = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .to_owned();
    let tools = Tools {
        cli: std::fs::canonicalize(&cli).expect("the CLI binary exists"),
        qbox: bin_dir.join("qbox"),
        sidecar: bin_dir.join("qbox-sidecar"),
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut report = Report { failed: 0 };
    let version = output({
        let mut c = Command::new(&tools.cli);
        c.arg("--version");
        c
    })
    .1;
    println!("# {} ({})", version.trim(), flavor.display_name());
    // `--only PART[,PART]` runs some parts: logins, api-key, agent,
    // settings, failures, parity, container.
    let only: Option<Vec<String>> = args
        .iter()
        .position(|a| a == "--only")
        .map(|i| args[i + 1].split(',').map(str::to_owned).collect());
    let runs = |part: &str| {
        only.as_ref()
            .is_none_or(|parts| parts.iter().any(|p| p == part))
    };
    let kinds: &[Kind] = if flavor == Flavor::Kiro {
        &Kind::KIRO
    } else {
        &[Kind::BuilderId, Kind::IdentityCenter]
    };
    if runs("logins") {
        for &kind in kinds {
            runtime.block_on(check_kind(&tools, flavor, kind, &mut report));
        }
    }
    if flavor == Flavor::Kiro && runs("api-key") {
        runtime.block_on(check_api_key(&tools, &mut report));
    }
    if runs("agent") {
        runtime.block_on(check_agent(&tools, flavor, &mut report));
    }
    if runs("settings") {
        runtime.block_on(check_settings(&tools, flavor, &mut report));
    }
    if runs("failures") {
        runtime.block_on(check_failures(&tools, flavor, &mut report));
    }
    if runs("parity") {
        runtime.block_on(check_request_parity(&tools, flavor, &mut report));
    }
    if runs("container") {
        runtime.block_on(container::check(&tools, flavor, &mut report));
    }
    println!("{} checks failed", report.failed);
    std::process::exit(i32::from(report.failed > 0));
}

async fn check_kind(tools: &Tools, flavor: Flavor, kind: Kind, report: &mut Report) {
    let name = kind.name();
    let access = format!("aoa-real-cli-{name}");
    let q = StandinQ::start(&access).await.unwrap();
    // The header the CLI must send for this kind (the stand-in refuses a
    // request without it), as read in its source.
    q.set_token_type((kind == Kind::ExternalIdp).then_some("EXTERNAL_IDP"));
    let home = Home::new(flavor, &q.url());
    let hour = time::Duration::hours(1);

    // 1. qbox's snapshots of the store, each read by the CLI.
    for scope in ["--refreshable", "--access-only"] {
        home.login(kind, &access, hour);
        let taken = use_snapshot(tools, &home, scope);
        let (account, seen) = whoami(tools, &home);
        report.check(
            &format!("{name}: the CLI reads qbox's {scope} snapshot"),
            taken.is_ok() && account.as_deref() == Some(kind.account_type()),
            format!("{taken:?} {seen}"),
        );
    }

    // 2. qbox reads the store after the CLI wrote to it.
    home.login(kind, &access, hour);
    let _ = whoami(tools, &home);
    let mut export = home.command(&tools.qbox);
    export.arg("--db").arg(home.store()).args([
        "export-token",
        "--field",
        "access",
        "--no-refresh",
    ]);
    let (code, stdout, stderr) = output(export);
    report.check(
        &format!("{name}: qbox reads the store the CLI wrote"),
        code == 0 && stdout.trim() == access,
        format!("exit {code}: {stdout} {stderr}"),
    );

    // 3. The CLI's chat request and qbox's, for the same login.
    let mut chat = home.command(&tools.cli);
    chat.env("KIRO_CHAT_LOG_FILE", home.path().join("chat.log"))
        .env("KIRO_LOG_LEVEL", "debug")
        .args(["chat", "--no-interactive", "--", "hello from the real cli"]);
    let (code, stdout, stderr) = output(chat);
    let theirs = q
        .requests()
        .into_iter()
        .rfind(|r| r.target.as_deref() == Some(qbox::qapi::TARGET));
    let mut ours_cmd = home.command(&tools.qbox);
    ours_cmd
        .env("QBOX_Q_ENDPOINT", q.url())
        .args(["chat", "--", "hello from qbox"]);
    q.set_token_type(theirs.as_ref().and_then(|r| r.token_type.as_deref()));
    let (our_code, _, our_stderr) = output(ours_cmd);
    let ours = q
        .requests()
        .into_iter()
        .rfind(|r| r.target.as_deref() == Some(qbox::qapi::TARGET));
    match (&theirs, &ours) {
        (Some(theirs), Some(ours)) => {
            let log = std::fs::read_to_string(home.path().join("chat.log")).unwrap_or_default();
            let errors: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("ERROR") || l.contains("WARN"))
                .take(8)
                .collect();
            report.check(
                &format!("{name}: the CLI's chat reached the stand-in"),
                // The CLI puts its agent's context before the prompt; the
                // stand-in echoes the whole message.
                stdout.contains("You said: ") && stdout.contains("hello from the real cli"),
                format!(
                    "exit {code}: {stdout} {stderr}\n  log: {}",
                    errors.join("\n  log: ")
                ),
            );
            report.check(
                &format!(
                    "{name}: TokenType as the CLI sends it ({:?})",
                    theirs.token_type
                ),
                theirs.token_type == ours.token_type && our_code == 0,
                format!(
                    "qbox sent {:?} (exit {our_code}: {our_stderr})",
                    ours.token_type
                ),
            );
            report.check(
                &format!(
                    "{name}: profileArn as the CLI sends it ({})",
                    theirs.body["profileArn"]
                ),
                theirs.body["profileArn"] == ours.body["profileArn"],
                format!("qbox sent {}", ours.body["profileArn"]),
            );
            report.check(
                &format!("{name}: the same bearer token"),
                theirs.authorization == ours.authorization,
                format!(
                    "{:?} / {:?}",
                    theirs.authorization.is_some(),
                    ours.authorization.is_some()
                ),
            );
        }
        _ => report.check(
            &format!("{name}: both chat requests reached the stand-in"),
            false,
            format!("the CLI: exit {code} {stdout} {stderr}; qbox: exit {our_code} {our_stderr}"),
        ),
    }
}

/// A Kiro API key and no store: the CLI's request beside qbox's, and the
/// agent handing the key (from a key file, as `qbox run` gives it) to the CLI.
async fn check_api_key(tools: &Tools, report: &mut Report) {
    const KEY: &str = "ksk_realCliCheckKey0123456789";
    let q = StandinQ::start(KEY).await.unwrap();
    q.set_token_type(Some("API_KEY"));
    let home = Home::new(Flavor::Kiro, &q.url());
    let mut chat = home.command(&tools.cli);
    chat.env("KIRO_API_KEY", KEY)
        .args(["chat", "--no-interactive", "--", "hello with a key"]);
    let (code, stdout, stderr) = output(chat);
    let last = |q: &StandinQ| {
        q.requests()
            .into_iter()
            .rfind(|r| r.target.as_deref() == Some(qbox::qapi::TARGET))
    };
    let theirs = last(&q);
    let mut ours = home.command(&tools.qbox);
    ours.env("KIRO_API_KEY", KEY)
        .args(["chat", "--", "hello from qbox with a key"]);
    let (our_code, _, our_stderr) = output(ours);
    let ours = last(&q);
    report.check(
        "api-key: the CLI's chat with KIRO_API_KEY reached the stand-in",
        code == 0 && stdout.contains("hello with a key"),
        format!("exit {code}: {stdout} {stderr}"),
    );
    match (theirs, ours) {
        (Some(theirs), Some(ours)) => report.check(
            "api-key: TokenType, profileArn and bearer as the CLI sends them",
            theirs.token_type == ours.token_type
                && theirs.body.get("profileArn") == ours.body.get("profileArn")
                && theirs.authorization == ours.authorization
                && our_code == 0,
            format!(
                "the CLI {:?} {:?}, qbox {:?} {:?} (exit {our_code}: {our_stderr})",
                theirs.token_type,
                theirs.body.get("profileArn"),
                ours.token_type,
                ours.body.get("profileArn")
            ),
        ),
        _ => report.check(
            "api-key: both requests reached the stand-in",
            false,
            our_stderr,
        ),
    }
    let key_file = home.path().join("kiro-api-key");
    std::fs::write(&key_file, KEY).unwrap();
    std::fs::set_permissions(
        &key_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let mut command = home.command(&tools.sidecar);
    command
        .env("QBOX_API_KEY_FILE", &key_file)
        .env("ENABLE_ADDITIONAL_TOOLS", "q-developer-agent")
        .env("QBOX_AGENT_CLI", &tools.cli)
        .arg("serve")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let (text, is_error) = mcp_call(
        command,
        "q-developer-agent",
        &json!({"prompt": "hello through the agent with a key"}),
    );
    report.check(
        "api-key: the agent hands a key file's key to the CLI",
        !is_error && text.contains("hello through the agent with a key"),
        &text,
    );
}

/// The sidecar's agent tool over stdio MCP, driving the CLI.
async fn check_agent(tools: &Tools, flavor: Flavor, report: &mut Report) {
    let access = "aoa-real-cli-agent";
    let q = StandinQ::start(access).await.unwrap();
    let home = Home::new(flavor, &q.url());
    home.login(Kind::BuilderId, access, time::Duration::hours(1));
    let snapshot_dir = home.path().join("agent-snapshot");
    let mut take = home.command(&tools.qbox);
    take.arg("--db")
        .arg(home.store())
        .arg("snapshot")
        .arg(&snapshot_dir)
        .arg("--access-only");
    let (code, _, stderr) = output(take);
    assert_eq!(code, 0, "{stderr}");
    // The CLI's own store is gone: only the snapshot serves.
    std::fs::remove_file(home.store()).unwrap();
    let call = |prompt: &str, snapshot: &Path| {
        let mut command = home.command(&tools.sidecar);
        command
            .env("QBOX_DB", snapshot.join("data.sqlite3"))
            .env("ENABLE_ADDITIONAL_TOOLS", "q-developer-agent")
            .env("QBOX_AGENT_CLI", &tools.cli)
            .env("AGENT_TIMEOUT", "120")
            .arg("serve")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        mcp_call(command, "q-developer-agent", &json!({"prompt": prompt}))
    };
    let (text, is_error) = call("hello through the agent", &snapshot_dir);
    report.check(
        "agent: q-developer-agent drives the CLI on an access-only snapshot",
        !is_error && text.contains("You said: ") && text.contains("hello through the agent"),
        &text,
    );

    // An access-only snapshot whose token expired: the sidecar names its
    // keeper before the CLI runs; the CLI itself says "not logged in".
    // Taken while valid, then left to expire (as when its keeper stopped).
    home.login(Kind::BuilderId, access, time::Duration::hours(1));
    let expired_dir = home.path().join("expired-snapshot");
    let mut take = home.command(&tools.qbox);
    take.arg("--db")
        .arg(home.store())
        .arg("snapshot")
        .arg(&expired_dir)
        .arg("--access-only");
    let (code, _, stderr) = output(take);
    assert_eq!(code, 0, "{stderr}");
    expire_token(&expired_dir.join("data.sqlite3"), flavor);
    let (text, is_error) = call("hello", &expired_dir);
    report.check(
        "agent: an expired access-only snapshot is reported with its keeper",
        is_error && text.contains("keeper"),
        &text,
    );
    std::fs::copy(expired_dir.join("data.sqlite3"), home.store()).unwrap();
    let mut chat = home.command(&tools.cli);
    chat.args(["chat", "--no-interactive", "--", "hello"]);
    let (code, stdout, stderr) = output(chat);
    let words = format!("{stdout}{stderr}").to_ascii_lowercase();
    report.check(
        "the CLI: an expired access-only copy is \"not logged in\", exit 1",
        code == 1 && words.contains("not logged in"),
        format!("exit {code}: {stdout} {stderr}"),
    );
}

/// The model the user chose in the CLI's settings, and the service's
/// default: the stand-in lists both, so a request naming the user's shows
/// that the setting reached the CLI.
const USER_MODEL: &str = "realcli-user-model";
const SERVICE_DEFAULT_MODEL: &str = "realcli-service-default";

/// A user's settings that must travel with the login, and two keys that
/// must stay behind (not on qbox's allow-list).
fn users_settings(q_url: &str) -> Value {
    json!({
        "api.codewhisperer.service": {"endpoint": q_url, "region": "us-east-1"},
        "telemetry.enabled": false,
        "chat.defaultModel": USER_MODEL,
        "codeWhisperer.shareCodeWhispererContentWithAWS": false,
        "chat.greeting.enabled": false,
        "mcp.noInteractiveTimeout": 30000,
    })
}

/// What a copy of [`users_settings`] must hold: the allow-listed keys.
fn carried_settings(q_url: &str) -> Value {
    let mut all = users_settings(q_url);
    let map = all.as_object_mut().unwrap();
    map.remove("chat.greeting.enabled");
    map.remove("mcp.noInteractiveTimeout");
    all
}

/// The last chat request the stand-in received.
fn last_chat(q: &StandinQ) -> Option<qbox::standin::q::RecordedQRequest> {
    q.requests()
        .into_iter()
        .rfind(|r| r.target.as_deref() == Some(qbox::qapi::TARGET))
}

/// The last chat request among those after the first `before`.
fn chat_since(q: &StandinQ, before: usize) -> Option<qbox::standin::q::RecordedQRequest> {
    q.requests()
        .into_iter()
        .skip(before)
        .rfind(|r| r.target.as_deref() == Some(qbox::qapi::TARGET))
}

/// The `modelId` of a chat request's current message.
fn model_id(request: &qbox::standin::q::RecordedQRequest) -> Option<String> {
    request.body["conversationState"]["currentMessage"]["userInputMessage"]["modelId"]
        .as_str()
        .map(str::to_owned)
}

/// The opt-out header and model a request carried, for a report line.
fn sent(request: Option<&qbox::standin::q::RecordedQRequest>) -> String {
    match request {
        Some(r) => format!("optout {:?}, modelId {:?}", r.optout, model_id(r)),
        None => "no chat request reached the stand-in".into(),
    }
}

/// Whether `request` is opted out and names the user's model.
fn follows_users_settings(request: Option<&qbox::standin::q::RecordedQRequest>) -> bool {
    request.is_some_and(|r| {
        r.optout.as_deref() == Some("true") && model_id(r).as_deref() == Some(USER_MODEL)
    })
}

/// `chat --no-interactive -- PROMPT` by the CLI in `home`.
fn cli_chat(tools: &Tools, home: &Home, prompt: &str) -> (i32, String, String) {
    let mut chat = home.command(&tools.cli);
    chat.args(["chat", "--no-interactive", "--", prompt]);
    output(chat)
}

/// Takes `qbox snapshot DIR SCOPE` of `home`'s store.
fn snapshot_of(tools: &Tools, home: &Home, name: &str, scope: &str) -> PathBuf {
    let dir = home.path().join(name);
    let mut take = home.command(&tools.qbox);
    take.arg("--db")
        .arg(home.store())
        .arg("snapshot")
        .arg(&dir)
        .arg(scope);
    let (code, _, stderr) = output(take);
    assert_eq!(code, 0, "{stderr}");
    dir
}

/// The sidecar serving the agent on stdio with the snapshot in `dir`, in
/// `home` (whose own settings it may not have).
fn agent_command(tools: &Tools, home: &Home, snapshot_dir: &Path) -> Command {
    let mut command = home.command(&tools.sidecar);
    command
        .env("QBOX_DB", snapshot_dir.join("data.sqlite3"))
        .env("ENABLE_ADDITIONAL_TOOLS", "q-developer-agent")
        .env("QBOX_AGENT_CLI", &tools.cli)
        .env("AGENT_TIMEOUT", "200")
        .arg("serve")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    command
}

/// Item 1: the user's settings travel with the login (snapshot, a home
/// made of nothing but the snapshot, the agent's private copy), and the
/// real CLI reading them sends what the user chose.
async fn check_settings(tools: &Tools, flavor: Flavor, report: &mut Report) {
    let access = "aoa-real-cli-settings";
    let q = StandinQ::start(access).await.unwrap();
    q.set_models(&[SERVICE_DEFAULT_MODEL, USER_MODEL], SERVICE_DEFAULT_MODEL);
    let home = Home::with_settings(flavor, &users_settings(&q.url()));
    home.login(Kind::BuilderId, access, time::Duration::hours(1));

    // The CLI with the user's own file: the behaviour to keep.
    let (code, stdout, stderr) = cli_chat(tools, &home, "hello with my settings");
    let own = last_chat(&q);
    report.check(
        "settings: the CLI with the user's own file sends optout true and the user's modelId",
        follows_users_settings(own.as_ref()),
        format!("{} (exit {code}: {stdout} {stderr})", sent(own.as_ref())),
    );

    // The snapshot carries the allow-listed keys and nothing else.
    let dir = snapshot_of(tools, &home, "settings-snapshot", "--access-only");
    let carried_path = dir.join(flavor.snapshot_settings_name());
    let carried: Value = std::fs::read(&carried_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    report.check(
        &format!(
            "settings: the snapshot's {} holds the allow-listed keys and nothing else",
            flavor.snapshot_settings_name()
        ),
        carried == carried_settings(&q.url()),
        &carried,
    );

    // A home made of nothing but the snapshot: its store, and its settings
    // file where this CLI reads it.
    let bare = Home::bare(flavor);
    std::fs::create_dir_all(bare.store().parent().unwrap()).unwrap();
    std::fs::copy(dir.join("data.sqlite3"), bare.store()).unwrap();
    std::fs::create_dir_all(bare.settings_path().parent().unwrap()).unwrap();
    let _ = std::fs::copy(&carried_path, bare.settings_path());
    let before = q.requests().len();
    let (code, stdout, stderr) = cli_chat(tools, &bare, "hello from the snapshot");
    let from_snapshot = chat_since(&q, before);
    report.check(
        "settings: the CLI reading the snapshot's settings reaches the endpoint override",
        from_snapshot.is_some() && stdout.contains("hello from the snapshot"),
        format!("exit {code}: {stdout} {stderr}"),
    );
    report.check(
        "settings: the CLI reading the snapshot sends optout true and the user's modelId",
        follows_users_settings(from_snapshot.as_ref()),
        sent(from_snapshot.as_ref()),
    );

    // The agent, given the snapshot, in a home with no settings of its own.
    let agent_home = Home::bare(flavor);
    let before = q.requests().len();
    let (text, is_error) = mcp_call(
        agent_command(tools, &agent_home, &dir),
        "q-developer-agent",
        &json!({"prompt": "hello through the agent with settings"}),
    );
    let through_agent = chat_since(&q, before);
    report.check(
        "settings: the agent's CLI reaches the endpoint override from the snapshot",
        !is_error && text.contains("hello through the agent with settings"),
        &text,
    );
    report.check(
        "settings: the agent's CLI sends optout true and the user's modelId",
        follows_users_settings(through_agent.as_ref()),
        sent(through_agent.as_ref()),
    );
}

/// The ways the service can fail that the stand-in produces and the fake
/// CLI's `service-fail:KIND` stands for.
#[derive(Debug, Clone, Copy)]
enum Failure {
    AccessDenied,
    Throttled,
    MidStream,
    NoConnection,
}

impl Failure {
    const ALL: [Failure; 4] = [
        Failure::AccessDenied,
        Failure::Throttled,
        Failure::MidStream,
        Failure::NoConnection,
    ];

    /// The fake CLI's name for it (`service-fail:NAME`).
    fn name(self) -> &'static str {
        match self {
            Self::AccessDenied => "access-denied",
            Self::Throttled => "throttled",
            Self::MidStream => "exception",
            Self::NoConnection => "dispatch",
        }
    }

    /// Queues what the stand-in answers (enough for the CLI's retries).
    fn script(self, q: &StandinQ) {
        use qbox::standin::q::{Answer, ExceptionFrame, Reply};
        for _ in 0..6 {
            match self {
                Self::AccessDenied => q.push(Reply::HttpError {
                    status: 403,
                    code: "AccessDeniedException".into(),
                    message: "User is not authorized to make this call.".into(),
                }),
                Self::Throttled => q.push(Reply::HttpError {
                    status: 429,
                    code: "ThrottlingException".into(),
                    message: "Rate exceeded".into(),
                }),
                Self::MidStream => {
                    let mut answer = Answer::text(&["a partial ", "answer"]);
                    answer.exception_frame = Some(ExceptionFrame {
                        header_type: "error".into(),
                        payload: json!({"__type": "InternalServerException",
                            "message": "Encountered an unexpected error when processing the request, please try again."}),
                    });
                    q.push(Reply::Answer(answer));
                }
                Self::NoConnection => {}
            }
        }
    }
}

/// Text without ANSI sequences, one trimmed non-empty line each.
fn clean_lines(text: &str) -> Vec<String> {
    qbox::strip_ansi(text)
        .split(['\n', '\r'])
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

/// `lines` with each run of digits as `N` (ports differ from run to run).
fn without_numbers(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|line| {
            let mut out = String::new();
            for c in line.chars() {
                if !c.is_ascii_digit() {
                    out.push(c);
                } else if !out.ends_with('N') {
                    out.push('N');
                }
            }
            out
        })
        .collect()
}

/// An address on loopback where nothing listens.
fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    url
}

/// The fake CLI (`tests/fixtures/fake-q`) under this flavor's binary name.
fn fake_cli(home: &Home) -> PathBuf {
    let bin = home.path().join("fake-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let path = bin.join(home.flavor.binary());
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake-q"),
        &path,
    )
    .unwrap();
    path
}

/// Item 2: each failure of the service, met by the real CLI in
/// `--no-interactive` mode, by the fake CLI standing in for it, and by the
/// agent driving the real CLI.
async fn check_failures(tools: &Tools, flavor: Flavor, report: &mut Report) {
    for failure in Failure::ALL {
        let name = failure.name();
        let access = format!("aoa-real-cli-fail-{name}");
        let q = StandinQ::start(&access).await.unwrap();
        q.set_models(&[SERVICE_DEFAULT_MODEL], SERVICE_DEFAULT_MODEL);
        let url = match failure {
            Failure::NoConnection => closed_port_url(),
            _ => q.url(),
        };
        let home = Home::new(flavor, &url);
        home.login(Kind::BuilderId, &access, time::Duration::hours(1));
        failure.script(&q);
        let (code, stdout, stderr) = cli_chat(tools, &home, "hello");
        let real_out = clean_lines(&stdout);
        let real_err = clean_lines(&stderr);
        // Cut off mid-stream, the CLI has printed the start of the answer.
        let cut_off = matches!(failure, Failure::MidStream);
        report.check(
            &format!(
                "failure {name}: the CLI exits 0 with {} on stdout",
                if cut_off {
                    "the start of the answer"
                } else {
                    "nothing"
                }
            ),
            code == 0 && real_out.is_empty() != cut_off,
            format!("exit {code}, stdout {real_out:?}, stderr {real_err:?}"),
        );
        println!("        the CLI's stderr: {real_err:?}");

        // The fake prints the very lines the real CLI prints.
        let fake = fake_cli(&home);
        let mut command = home.command(&fake);
        command.args([
            "chat",
            "--no-interactive",
            "--",
            &format!("service-fail:{name}"),
        ]);
        let (fake_code, fake_stdout, fake_stderr) = output(command);
        let fake_err = clean_lines(&fake_stderr);
        report.check(
            &format!("failure {name}: the fake CLI prints the CLI's lines, exit and stdout"),
            fake_code == code
                && clean_lines(&fake_stdout) == real_out
                && !fake_err.is_empty()
                && without_numbers(&fake_err) == without_numbers(&real_err),
            format!("fake: exit {fake_code}, stderr {fake_err:?}"),
        );

        // The agent driving the real CLI: an error, with the CLI's words.
        failure.script(&q);
        let dir = snapshot_of(tools, &home, "failure-snapshot", "--access-only");
        let (text, is_error) = mcp_call(
            agent_command(tools, &home, &dir),
            "q-developer-agent",
            &json!({"prompt": "hello"}),
        );
        let words = real_err.last().cloned().unwrap_or_default();
        report.check(
            &format!("failure {name}: the agent answers isError with the CLI's error"),
            is_error && !words.is_empty() && text.contains(&words),
            &text,
        );
    }
}

/// Item 5: the CLI's chat request and `qbox chat`'s, on the same login and
/// settings, header by header and field by field.
async fn check_request_parity(tools: &Tools, flavor: Flavor, report: &mut Report) {
    let access = "aoa-real-cli-parity";
    let q = StandinQ::start(access).await.unwrap();
    q.set_models(&[SERVICE_DEFAULT_MODEL, USER_MODEL], SERVICE_DEFAULT_MODEL);
    for (label, settings) in [
        ("user's settings", users_settings(&q.url())),
        (
            "no model or sharing setting",
            json!({"api.codewhisperer.service": {"endpoint": q.url(), "region": "us-east-1"}}),
        ),
    ] {
        let home = Home::with_settings(flavor, &settings);
        home.login(Kind::BuilderId, access, time::Duration::hours(1));
        let before = q.requests().len();
        let _ = cli_chat(tools, &home, "same conversation");
        let theirs = chat_since(&q, before);
        let before = q.requests().len();
        let mut ours = home.command(&tools.qbox);
        ours.args(["chat", "--", "same conversation"]);
        let (our_code, _, our_stderr) = output(ours);
        let ours = chat_since(&q, before);
        let (Some(theirs), Some(ours)) = (theirs, ours) else {
            report.check(
                &format!("parity ({label}): both requests reached the stand-in"),
                false,
                format!("qbox: exit {our_code} {our_stderr}"),
            );
            continue;
        };
        let env_state = |r: &qbox::standin::q::RecordedQRequest| {
            r.body["conversationState"]["currentMessage"]["userInputMessage"]
                ["userInputMessageContext"]["envState"]
                .clone()
        };
        let pairs = [
            ("modelId", json!(model_id(&theirs)), json!(model_id(&ours))),
            ("envState", env_state(&theirs), env_state(&ours)),
            (
                "x-amzn-codewhisperer-optout",
                json!(theirs.optout),
                json!(ours.optout),
            ),
            (
                "amz-sdk-request",
                json!(theirs.sdk_request),
                json!(ours.sdk_request),
            ),
        ];
        for (field, cli, qbox) in pairs {
            report.check(
                &format!("parity ({label}): {field} as the CLI sends it ({cli})"),
                cli == qbox,
                format!("qbox sent {qbox}"),
            );
        }
        let uuid = |id: &Option<String>| {
            id.as_deref()
                .is_some_and(|id| id.len() == 36 && id.chars().filter(|c| *c == '-').count() == 4)
        };
        report.check(
            &format!("parity ({label}): amz-sdk-invocation-id a UUID from both"),
            uuid(&theirs.invocation_id) && uuid(&ours.invocation_id),
            format!("{:?} / {:?}", theirs.invocation_id, ours.invocation_id),
        );
    }
}

/// Moves the token's expiry of the store at `path` five minutes into the past.
fn expire_token(path: &Path, flavor: Flavor) {
    let conn = rusqlite::Connection::open(path).unwrap();
    let raw: String = conn
        .query_row(
            "SELECT value FROM auth_kv WHERE key = ?1",
            [flavor.token_key()],
            |row| row.get(0),
        )
        .unwrap();
    let mut token: Value = serde_json::from_str(&raw).unwrap();
    token["expires_at"] =
        qbox::timefmt::rfc3339(time::OffsetDateTime::now_utc() - time::Duration::minutes(5)).into();
    conn.execute(
        "UPDATE auth_kv SET value = ?1 WHERE key = ?2",
        [token.to_string().as_str(), flavor.token_key()],
    )
    .unwrap();
}

/// Starts `command` (an MCP server on stdio), calls one tool and returns
/// its text and `isError`.
fn mcp_call(mut command: Command, tool: &str, arguments: &Value) -> (String, bool) {
    let mut child = command.stdin(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut send = |message: Value| {
        writeln!(stdin, "{message}").unwrap();
        stdin.flush().unwrap();
    };
    send(
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "qbox-real-cli", "version": "1"}}}),
    );
    let _ = lines.next();
    send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    send(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": tool, "arguments": arguments}}));
    let mut answer = None;
    for line in lines.by_ref() {
        let Ok(line) = line else { break };
        let Ok(message) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if message["id"] == 2 {
            answer = Some(message);
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let answer = answer.unwrap_or_default();
    let result = &answer["result"];
    (
        result["content"][0]["text"]
            .as_str()
            .unwrap_or(&answer.to_string())
            .to_owned(),
        result["isError"] == true,
    )
}
