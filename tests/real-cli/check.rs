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
//!    snapshot, and the agent turns that into its message.
//!
//! Usage: `cargo run --example real-cli -- CLI_BINARY [--flavor kiro|q]`.
//! Prints one line per check (`ok` / `FAILED` with what was seen) and exits
//! 1 if any failed.

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
        let dir = tempfile::Builder::new()
            .prefix("qbox-real-cli-")
            .tempdir()
            .unwrap();
        let home = Self { dir, flavor };
        let settings = flavor.settings_path(home.path(), &home.data());
        std::fs::create_dir_all(settings.parent().unwrap()).unwrap();
        std::fs::write(
            &settings,
            json!({"api.codewhisperer.service": {"endpoint": q_url, "region": "us-east-1"},
                   "telemetry.enabled": false})
            .to_string(),
        )
        .unwrap();
        home
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

fn output(mut command: Command) -> (i32, String, String) {
    let out = command.output().expect("the program starts");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

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
        eprintln!("usage: real-cli CLI_BINARY [--flavor kiro|q]");
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
    let kinds: &[Kind] = if flavor == Flavor::Kiro {
        &Kind::KIRO
    } else {
        &[Kind::BuilderId, Kind::IdentityCenter]
    };
    for &kind in kinds {
        runtime.block_on(check_kind(&tools, flavor, kind, &mut report));
    }
    if flavor == Flavor::Kiro {
        runtime.block_on(check_api_key(&tools, &mut report));
    }
    runtime.block_on(check_agent(&tools, flavor, &mut report));
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
