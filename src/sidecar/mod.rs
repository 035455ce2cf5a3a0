//! The `qbox-sidecar` command line: the in-container side of qbox.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::cli::GlobalArgs;
use crate::exit::{self, CommandError};
use crate::mcp;
use crate::secret::Secret;
use crate::term::Palette;

const EXAMPLES: &str = "\
Examples:
  qbox-sidecar serve                                   # MCP over stdio
  QBOX_MCP_TOKEN=... qbox-sidecar serve --http 0.0.0.0:8080
  qbox-sidecar health --url http://127.0.0.1:8080/health
  qbox-sidecar chat \"what is a monad?\"

Environment: QBOX_DB (a login snapshot), QBOX_MCP_TOKEN, ENABLE_ADDITIONAL_TOOLS=q-developer-agent,
AGENT_TIMEOUT, AGENT_MAX_RESPONSE_SIZE, QBOX_AGENT_CLI, QBOX_Q_ENDPOINT, QBOX_ACCESS_TOKEN, RUST_LOG.
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

#[derive(Debug, Subcommand)]
enum SidecarCommand {
    /// Serve MCP: over stdio, or over streamable HTTP at /mcp with --http.
    Serve(ServeArgs),
    /// Check a running HTTP server's /health; exit 0 when it answers ok.
    Health {
        /// The health URL.
        #[arg(
            long,
            env = "QBOX_SIDECAR_HEALTH_URL",
            default_value = "http://127.0.0.1:8080/health"
        )]
        url: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 5)]
        timeout: u64,
    },
    /// Ask Amazon Q through qbox's own streaming client; the answer streams to stdout.
    Chat(crate::cli::chat::ChatArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Serve streamable HTTP on ADDR (`127.0.0.1:8080`, `0.0.0.0:8080`, or a port) instead of stdio.
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    http: Option<SocketAddr>,
    /// Read the bearer token from this file (else QBOX_MCP_TOKEN).
    #[arg(long, value_name = "FILE", requires = "http")]
    token_file: Option<PathBuf>,
    /// Also accept browser requests from this Origin (repeatable); loopback origins are always accepted.
    #[arg(long = "allow-origin", value_name = "ORIGIN", requires = "http")]
    allowed_origins: Vec<String>,
    /// Allow a non-loopback address without a token (anyone who can reach it can use your login).
    #[arg(long, requires = "http")]
    allow_unauthenticated: bool,
}

fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    text.parse()
        .map_err(|_| format!("`{text}` is not an address like 127.0.0.1:8080 or a port"))
}

/// Parses `args`, runs the command, and returns the process exit code.
pub fn run(args: impl IntoIterator<Item = OsString>) -> u8 {
    let cli = match crate::cli::parse_args::<SidecarCli>(args) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let palette = Palette::stderr();
    crate::logging::init(cli.global.verbose, cli.global.quiet, palette);
    let query = cli.global.store_query();
    let result = match cli.command {
        SidecarCommand::Serve(args) => crate::cli::block_on(serve(args, query)),
        SidecarCommand::Health { url, timeout } => crate::cli::block_on(health(url, timeout)),
        SidecarCommand::Chat(args) => {
            // A read-only snapshot is refreshed by the host that wrote it;
            // refreshing here would spend the host's refresh token.
            let refresh = crate::store::writable_store(&query);
            crate::cli::block_on(crate::cli::chat::run(
                args,
                query,
                refresh,
                cli.global.quiet,
            ))
        }
    };
    match result {
        Ok(code) => code,
        Err(err) => exit::report(&err, palette),
    }
}

fn bearer_token(args: &ServeArgs) -> anyhow::Result<Option<Secret>> {
    if let Some(path) = &args.token_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the token file {}", path.display()))?;
        let token = text.trim();
        if token.is_empty() {
            return Err(CommandError::new(
                exit::USAGE,
                format!("the token file {} is empty", path.display()),
            )
            .into());
        }
        return Ok(Some(Secret::new(token)));
    }
    Ok(std::env::var("QBOX_MCP_TOKEN")
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .map(Secret::new))
}

async fn serve(args: ServeArgs, query: crate::store::StoreQuery) -> anyhow::Result<u8> {
    let state = mcp::sidecar_from_env(query)?;
    let Some(addr) = args.http else {
        mcp::serve_stdio(state).await?;
        return Ok(exit::OK);
    };
    let token = bearer_token(&args)?;
    if !addr.ip().is_loopback() && token.is_none() {
        if !args.allow_unauthenticated {
            return Err(CommandError::new(
                exit::USAGE,
                format!("refusing to serve {addr} without a bearer token: anyone who can reach it could use your Amazon Q login"),
            )
            .hint("set QBOX_MCP_TOKEN or --token-file, bind 127.0.0.1, or pass --allow-unauthenticated if a proxy authenticates")
            .into());
        }
        tracing::warn!(
            "SERVING {addr} WITHOUT AUTHENTICATION: anyone who can reach this address can use the Amazon Q login"
        );
    }
    let security = mcp::http::HttpSecurity {
        token,
        allowed_origins: args.allowed_origins,
    };
    mcp::http::serve(state, addr, security, crate::signals::shutdown())
        .await
        .with_context(|| format!("serving on {addr}"))?;
    Ok(exit::OK)
}

async fn health(url: String, timeout: u64) -> anyhow::Result<u8> {
    let client = crate::http::client(Some(Duration::from_secs(timeout)))?;
    let response = client
        .get(&url)
        .send()
        .await
        .map_err(|e| CommandError::new(exit::ERROR, format!("no answer from {url}: {e}")))?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    if status.is_success() && body["status"] == "ok" {
        println!("{body}");
        return Ok(exit::OK);
    }
    Err(CommandError::new(exit::ERROR, format!("{url} answered http {status}")).into())
}
