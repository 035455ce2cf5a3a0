//! The `qbox-sidecar` command line: the in-container side of qbox.
//!
//! Subcommands: `serve [--http]` (or `QBOX_SIDECAR_HTTP`); `health`, which asks
//! `/health` where `serve` listens and wants a usable login (over stdio it
//! checks the login itself); `call`, one tool call, streamed; and `chat`, which
//! never refreshes a read-only snapshot (its host does). Its global options
//! (`--db`, `--cli`, `-v`, `-q`) and help are its own.

use std::ffi::OsString;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::app::report::warn;
use crate::app::term::Palette;
use crate::app::{block_on, chat};
use crate::exit::{self, CommandError};
use crate::mcp::{self, token};
use crate::store::{Flavor, StoreQuery};

const EXAMPLES: &str = "\
Examples:
  qbox-sidecar serve                                   # MCP over stdio
  qbox-sidecar serve --http 8080                       # loopback, with a generated token
  QBOX_MCP_TOKEN=$(openssl rand -hex 32) qbox-sidecar serve --http 0.0.0.0:8080
  qbox-sidecar health --url http://127.0.0.1:8080/health
  qbox-sidecar chat \"what is a monad?\"

Environment: QBOX_DB (a login snapshot), QBOX_MCP_TOKEN, QBOX_SIDECAR_HTTP (serve --http), ENABLE_ADDITIONAL_TOOLS=q-developer-agent,
AGENT_TIMEOUT, AGENT_MAX_RESPONSE_SIZE, QBOX_AGENT_CLI, QBOX_AGENT_PASS_ENV, QBOX_Q_ENDPOINT, QBOX_Q_TIMEOUT,
QBOX_ACCESS_TOKEN, QBOX_PROFILE_ARN, QBOX_REGION, QBOX_STATE_DIR (keeps q-chat conversations), RUST_LOG;
HTTP limits: QBOX_MCP_MAX_CONNECTIONS, QBOX_MCP_HEADER_TIMEOUT, QBOX_MCP_IDLE_TIMEOUT, QBOX_MCP_MAX_SESSIONS,
QBOX_MCP_SESSION_IDLE_TIMEOUT. A variable set to the empty string counts as unset.
Exit codes: 0 ok, 1 error, 2 usage, 4 no usable login.";

/// The in-container side of qbox: serves Amazon Q to MCP hosts using the
/// login snapshot mounted at QBOX_DB.
#[derive(Debug, Parser)]
#[command(name = "qbox-sidecar", version, after_help = EXAMPLES, max_term_width = 100)]
pub struct SidecarCli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: SidecarCommand,
}

/// Options every `qbox-sidecar` subcommand accepts.
#[derive(Debug, clap::Args)]
struct GlobalArgs {
    /// The login to serve with: a snapshot `qbox snapshot` or `qbox run` wrote (the image
    /// sets QBOX_DB to its mount point), or a CLI's own store.
    #[arg(long, global = true, env = "QBOX_DB", value_name = "PATH")]
    db: Option<PathBuf>,
    /// Which CLI's store to use when both are installed and --db is not given.
    #[arg(long, global = true, env = "QBOX_CLI", value_parser = Flavor::parse_name)]
    cli: Option<Flavor>,
    /// More log output on stderr (-v info, -vv debug, -vvv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true)]
    quiet: bool,
}

impl GlobalArgs {
    fn store_query(&self) -> StoreQuery {
        StoreQuery {
            db: self.db.clone(),
            cli: self.cli,
        }
    }
}

#[derive(Debug, Subcommand)]
enum SidecarCommand {
    /// Serve MCP: over stdio, or over streamable HTTP at /mcp with --http.
    Serve(ServeArgs),
    /// Health check: asks the HTTP server's /health, or (stdio) checks the login is readable.
    #[command(after_help = "\
The URL is --url, else QBOX_SIDECAR_HEALTH_URL, else derived from QBOX_SIDECAR_HTTP (the
address `serve` listens on). With none of them the sidecar serves stdio, which has no
endpoint to ask: then the check is that the mounted login (QBOX_DB) can be read.
Exit 0 when healthy, 1 when not, 4 when there is no usable login.")]
    Health {
        /// The health URL (e.g. http://127.0.0.1:8080/health).
        #[arg(long, env = "QBOX_SIDECAR_HEALTH_URL")]
        url: Option<String>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 5)]
        timeout: u64,
    },
    /// Ask Amazon Q through qbox's own streaming client; the answer streams to stdout.
    Chat(chat::ChatArgs),
    /// Call one tool on an MCP server: a sidecar over HTTP, or a command over stdio.
    Call(CallArgs),
}

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  qbox-sidecar call --url http://qbox-sidecar:8080/mcp --token-file /run/secrets/token \\
      q-chat -a prompt=\"What is MCP?\" --stream
  qbox-sidecar call q-chat -a prompt=hi -- qbox-sidecar serve     # over stdio
  qbox-sidecar call --url http://127.0.0.1:8080/mcp q-developer-agent \\
      --arguments '{\"prompt\":\"list the files\",\"timeout\":60}' --json

stdout gets the result's text (or, with --json, {isError,text,structuredContent,progressMessages});
progress messages go to stderr as they arrive, or to stdout with --stream (for q-chat they are
the answer itself, streamed). Exit 0 when the tool succeeded, 1 when it reported an error.")]
struct CallArgs {
    /// The server's streamable HTTP endpoint.
    #[arg(long, env = "QBOX_MCP_URL", conflicts_with = "command")]
    url: Option<String>,
    /// Read the bearer token from this file (else QBOX_MCP_TOKEN, else the token a
    /// server on this machine generated for a loopback URL's port).
    #[arg(long, value_name = "FILE", requires = "url")]
    token_file: Option<PathBuf>,
    /// The tool to call.
    tool: String,
    /// A string argument (repeatable).
    #[arg(short = 'a', long = "arg", value_name = "KEY=VALUE")]
    args: Vec<String>,
    /// All arguments as one JSON object (merged under the -a ones).
    #[arg(long, value_name = "JSON")]
    arguments: Option<String>,
    /// Write progress messages to stdout as they arrive, instead of the final text.
    #[arg(long)]
    stream: bool,
    /// Print the whole outcome as JSON.
    #[arg(long, conflicts_with = "stream")]
    json: bool,
    /// Instead of --url: a command that serves MCP on its stdin and stdout.
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Serve streamable HTTP on ADDR (`127.0.0.1:8080`, `0.0.0.0:8080`, or a port) instead of stdio.
    #[arg(long, value_name = "ADDR", env = HTTP_ENV, value_parser = parse_addr)]
    http: Option<SocketAddr>,
    /// Read the bearer token from this file (else QBOX_MCP_TOKEN; on loopback, else a
    /// generated one, written 0600 to $XDG_RUNTIME_DIR/qbox/sidecar-ADDRESS-PORT.token).
    #[arg(long, value_name = "FILE", requires = "http")]
    token_file: Option<PathBuf>,
    /// Also accept browser requests from this Origin (repeatable); loopback origins are always accepted.
    #[arg(long = "allow-origin", value_name = "ORIGIN", requires = "http")]
    allowed_origins: Vec<String>,
    /// Serve without a token (anyone who can reach the address, other local users
    /// included, can use your login): only behind a proxy that authenticates.
    #[arg(long, requires = "http")]
    allow_unauthenticated: bool,
}

/// Where `serve` listens when `--http` is not given; `health` reads it too.
const HTTP_ENV: &str = "QBOX_SIDECAR_HTTP";

fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    text.parse()
        .map_err(|_| format!("`{text}` is not an address like 127.0.0.1:8080 or a port"))
}

/// Parses `args`, runs the command, and returns the process exit code.
pub fn run(args: impl IntoIterator<Item = OsString>) -> u8 {
    let cli = match crate::app::parse_args::<SidecarCli>(args) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    crate::app::finish(cli.global.verbose, cli.global.quiet, |palette| {
        dispatch(cli, palette)
    })
}

fn dispatch(cli: SidecarCli, palette: Palette) -> anyhow::Result<u8> {
    let query = cli.global.store_query();
    let quiet = cli.global.quiet;
    match cli.command {
        SidecarCommand::Serve(args) => block_on(serve(args, query, palette)),
        SidecarCommand::Health { url, timeout } => block_on(health(url, timeout, query)),
        SidecarCommand::Call(args) => block_on(call(args, quiet, palette)),
        SidecarCommand::Chat(args) => {
            // A read-only snapshot is refreshed by the host that wrote it;
            // refreshing here would spend the host's refresh token.
            let refresh = crate::store::writable_store(&query);
            block_on(chat::run(
                args,
                query,
                refresh,
                quiet,
                chat::ChatSide::Sidecar,
            ))
        }
    }
}

/// The token given with `--token-file` or `QBOX_MCP_TOKEN`, its warnings
/// printed.
fn given_token(
    token_file: Option<&std::path::Path>,
    palette: Palette,
) -> anyhow::Result<Option<crate::secret::Secret>> {
    let Some(given) = token::given_token(token_file)? else {
        return Ok(None);
    };
    for warning in &given.warnings {
        warn(palette, warning, None);
    }
    Ok(Some(given.secret))
}

async fn serve(args: ServeArgs, query: StoreQuery, palette: Palette) -> anyhow::Result<u8> {
    let state = mcp::sidecar_from_env(&query)?;
    let Some(addr) = args.http else {
        // A stop signal ends the server as the end of its input does: the
        // state goes (the agent's private copy of the login with it, which
        // holds the refresh token of a refreshable snapshot), and with it
        // any call still running.
        tokio::select! {
            served = mcp::serve_stdio(Arc::clone(&state)) => served?,
            () = crate::app::signals::shutdown() => {
                tracing::info!("stopping on a signal; the agent's private copy of the login is removed");
            }
        }
        drop(state);
        return Ok(exit::OK);
    };
    let limits = mcp::limits::HttpLimits::from_env().map_err(|err| {
        CommandError::new(exit::USAGE, err.to_string()).hint(format!(
            "unset {} for its default (docs/mcp.md, Limits)",
            err.name
        ))
    })?;
    let agent = state.agent.config();
    if agent.enabled && limits.session_idle_timeout <= agent.timeout {
        // A session's idle clock runs during a call that sends nothing
        // (no progress token), and ends the call with the session.
        warn(
            palette,
            &format!(
                "{} ({} s) is not above AGENT_TIMEOUT ({} s): an agent call without progress notifications may lose its session first",
                mcp::limits::SESSION_IDLE_TIMEOUT_ENV,
                limits.session_idle_timeout.as_secs(),
                agent.timeout.as_secs()
            ),
            None,
        );
    }
    let given = given_token(args.token_file.as_deref(), palette)?;
    match &given {
        Some(secret) => {
            if let Some(warning) = token::check_strength(secret, addr)? {
                warn(palette, &warning, None);
            }
        }
        None if args.allow_unauthenticated => warn(
            palette,
            &format!(
                "SERVING {addr} WITHOUT AUTHENTICATION: anyone who can reach this address, other users of this machine included, can use the Amazon Q login"
            ),
            None,
        ),
        // A generated token helps only clients on this machine; others
        // need one they were given.
        None if !addr.ip().is_loopback() => {
            return Err(CommandError::new(
                exit::USAGE,
                format!("refusing to serve {addr} without a bearer token: anyone who can reach it could use your Amazon Q login"),
            )
            .hint("set QBOX_MCP_TOKEN or --token-file, bind 127.0.0.1, or pass --allow-unauthenticated if a proxy authenticates")
            .into());
        }
        None => {}
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let bound = listener.local_addr()?;
    let mut generated_file = None;
    let token = match given {
        Some(secret) => Some(secret),
        None if args.allow_unauthenticated => None,
        None => {
            let secret = token::generate()?;
            let file = token::store_generated(&secret, bound)?;
            eprintln!(
                "qbox-sidecar: the bearer token is in {} (readable by you only; clients on this machine find it there; removed when the server stops)",
                file.path().display()
            );
            generated_file = Some(file);
            Some(secret)
        }
    };
    let security = mcp::http::HttpSecurity {
        token,
        allowed_origins: args.allowed_origins,
    };
    mcp::http::serve(
        state,
        listener,
        security,
        &limits,
        query,
        crate::app::signals::shutdown(),
    )
    .await
    .with_context(|| format!("serving on {addr}"))?;
    // Stopped cleanly: the generated token goes with the server.
    drop(generated_file);
    Ok(exit::OK)
}

/// The health URL of a server listening on `addr`, asked from the same
/// machine (a wildcard address is reached through loopback).
fn local_health_url(addr: SocketAddr) -> String {
    let host = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_owned(),
        ip if ip.is_unspecified() => "[::1]".to_owned(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        std::net::IpAddr::V4(ip) => ip.to_string(),
    };
    format!("http://{host}:{}/health", addr.port())
}

async fn health(url: Option<String>, timeout: u64, query: StoreQuery) -> anyhow::Result<u8> {
    let listen = std::env::var(HTTP_ENV).ok().filter(|v| !v.is_empty());
    let url = match (url, listen) {
        (Some(url), _) => url,
        (None, Some(listen)) => {
            let addr = parse_addr(&listen)
                .map_err(|e| CommandError::new(exit::USAGE, format!("{HTTP_ENV}: {e}")))?;
            local_health_url(addr)
        }
        (None, None) => return stdio_health(&query),
    };
    let client = crate::http::client(Some(Duration::from_secs(timeout)))?;
    let response = client
        .get(&url)
        .send()
        .await
        .map_err(|e| CommandError::new(exit::ERROR, format!("no answer from {url}: {e}")))?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    if status.is_success() && body["status"] == "ok" {
        // Answering is not enough: without a login (and without the agent,
        // which has its own) every tool call would fail.
        if body["login"] == false && body["agentEnabled"] != true {
            // Said more precisely when the store is here too (a healthcheck
            // beside `serve`): an access-only copy that its keeper let expire.
            if let Ok(login) = query.resolve(time::OffsetDateTime::now_utc())
                && login.access_only
                && let Some(error) = login.unusable(time::OffsetDateTime::now_utc())
            {
                return Err(error.into());
            }
            return Err(CommandError::new(
                exit::NO_LOGIN,
                format!("{url} answers, but the server has no usable login"),
            )
            .hint("mount a fresh snapshot at the directory of QBOX_DB (qbox snapshot DIR --watch on the host)")
            .into());
        }
        crate::app::output::println(format_args!("{body}"))?;
        return Ok(exit::OK);
    }
    Err(CommandError::new(exit::ERROR, format!("{url} answered http {status}")).into())
}

/// Over stdio there is no endpoint to ask; a sidecar is healthy when the
/// login it serves with can be read and its token used (valid, or expired
/// and refreshable here).
fn stdio_health(query: &StoreQuery) -> anyhow::Result<u8> {
    let now = time::OffsetDateTime::now_utc();
    let checked = query.resolve(now).and_then(|login| {
        login.require_token()?;
        match login.unusable(now) {
            Some(error) => Err(error),
            None => Ok(login),
        }
    });
    let login = match (checked, crate::qapi::ApiKey::from_env()) {
        (Ok(login), _) => login,
        // A stored login wins; without one, a Kiro API key serves.
        (Err(_), Ok(Some(key))) => {
            crate::app::output::println(format_args!(
                "{}",
                serde_json::json!({"status": "ok", "transport": "stdio", "credentials": key.source.describe()})
            ))?;
            return Ok(exit::OK);
        }
        (Err(_), Err(key_error)) => return Err(crate::qapi::ApiError::from(key_error).into()),
        (Err(error), Ok(None)) => return Err(error.into()),
    };
    crate::app::output::println(format_args!(
        "{}",
        serde_json::json!({"status": "ok", "transport": "stdio", "store": login.path.display().to_string()})
    ))?;
    Ok(exit::OK)
}

/// The tool arguments of `call`: the JSON object, then each `-a KEY=VALUE`.
fn call_arguments(
    args: &CallArgs,
) -> Result<serde_json::Map<String, serde_json::Value>, CommandError> {
    let mut arguments = match &args.arguments {
        None => serde_json::Map::new(),
        Some(text) => match serde_json::from_str(text) {
            Ok(serde_json::Value::Object(object)) => object,
            _ => {
                return Err(CommandError::new(
                    exit::USAGE,
                    format!("--arguments must be a JSON object, got `{text}`"),
                )
                .hint(r#"for example --arguments '{"prompt":"hi","timeout":60}'"#));
            }
        },
    };
    for pair in &args.args {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(
                CommandError::new(exit::USAGE, format!("-a `{pair}` is not KEY=VALUE"))
                    .hint("for example -a prompt=\"What is MCP?\""),
            );
        };
        arguments.insert(key.to_owned(), value.into());
    }
    Ok(arguments)
}

async fn call(args: CallArgs, quiet: bool, palette: Palette) -> anyhow::Result<u8> {
    let arguments = call_arguments(&args)?;
    let endpoint = match (&args.url, args.command.split_first()) {
        (Some(url), _) => mcp::client::Endpoint::Http {
            url: url.clone(),
            token: given_token(args.token_file.as_deref(), palette)?,
        },
        (None, Some((program, rest))) => mcp::client::Endpoint::Command {
            program: program.clone(),
            args: rest.to_vec(),
            env: Vec::new(),
        },
        (None, None) => {
            return Err(CommandError::new(
                exit::USAGE,
                "call needs --url URL or `-- COMMAND` that serves MCP on stdio",
            )
            .hint("qbox-sidecar call --url http://127.0.0.1:8080/mcp q-chat -a prompt=hi")
            .into());
        }
    };
    let stream = args.stream;
    let outcome = mcp::client::call_tool(&endpoint, &args.tool, arguments, |message| {
        if stream {
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(message.as_bytes());
            let _ = stdout.flush();
        } else if !quiet {
            // Progress is the server's text on the user's terminal: no
            // escape sequences, no forged lines, no known secrets.
            eprintln!("{}", crate::app::report::printable_line(message));
        }
    })
    .await?;
    if args.json {
        crate::app::output::println(format_args!("{}", serde_json::to_string_pretty(&outcome)?))?;
    } else if !stream {
        crate::app::output::println(format_args!("{}", outcome.text))?;
    } else if outcome.progress_messages > 0 {
        crate::app::output::print("\n")?;
    }
    if outcome.is_error {
        if !args.json {
            eprintln!("qbox-sidecar: the tool `{}` reported an error", args.tool);
            if stream {
                eprintln!("{}", crate::app::report::printable_line(&outcome.text));
            }
        }
        return Ok(exit::ERROR);
    }
    Ok(exit::OK)
}
