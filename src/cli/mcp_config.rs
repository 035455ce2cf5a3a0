//! `qbox mcp-config`: an MCP host's configuration for the sidecar (a local
//! process, a container, or a running HTTP sidecar), printed in the host's
//! format or merged into the host's file (`--install`); and the registry's
//! `server.json` and server card.

use std::path::PathBuf;

use serde_json::{Map, Value, json};

use crate::app::term::Palette;
use crate::exit::{self, CommandError};
use crate::mcp_hosts::install::{self, Action};
use crate::mcp_hosts::{self, Host, Launch, Places, Scope, TokenStyle};

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  qbox mcp-config                                  # Claude Desktop, local process
  qbox mcp-config --client claude-code --install   # merged into ~/.claude.json
  qbox mcp-config --client cursor --install --scope project   # .cursor/mcp.json here
  qbox mcp-config --client codex                   # TOML for ~/.codex/config.toml
  qbox mcp-config --client goose --install         # ~/.config/goose/config.yaml
  qbox mcp-config --client vscode --url http://127.0.0.1:8080/mcp   # a running sidecar
  qbox mcp-config --client gemini --url http://127.0.0.1:8080/mcp --install --json
  qbox mcp-config --client q --docker              # Amazon Q's mcp.json, sidecar in a container
  qbox mcp-config --docker --image my-dev-image --workspace ~/src/app   # the agent in your image
  qbox mcp-config --client kiro --enable-agent     # also offer q-developer-agent
  qbox mcp-config --docker --snapshot-dir ~/.qbox/auth   # plain `docker run`, no qbox needed
  qbox mcp-config --server-json > server.json      # the MCP registry's metadata

With --docker the host runs `qbox run --mcp IMAGE`: the static sidecar is mounted into the
image, which serves both tools (its own q or kiro-cli answers q-developer-agent), and qbox
keeps the login fresh while it runs. With --snapshot-dir the host runs `docker run` on the
sidecar image instead; then keep the snapshot fresh: qbox snapshot DIR --watch

With --url the host connects to a sidecar already serving HTTP. The token is referenced,
never written: the host expands QBOX_MCP_TOKEN from its environment (Claude Code, Cursor,
Gemini CLI, Kiro; Codex through bearer_token_env_var) or prompts for it (VS Code). Zed, Goose
and Claude Desktop (through the mcp-remote bridge) cannot reference one: printed, their entry
holds a placeholder; with --install the token (--token-file, QBOX_MCP_TOKEN, or the token a
loopback sidecar generated) is written only into a file no one else can read.

--install merges into the host's file: other servers and settings are kept, the previous file
is saved as FILE.qbox-backup, running it twice changes nothing, and a different server of the
same name is replaced only with --force.")]
pub struct McpConfigArgs {
    /// Which MCP host the configuration is for.
    #[arg(long, value_enum, default_value_t = Host::ClaudeDesktop)]
    client: Host,
    /// Serve from a container: `qbox run --mcp IMAGE` (or, with --snapshot-dir, `docker run`).
    #[arg(long, conflicts_with = "url")]
    docker: bool,
    /// With --docker: run the sidecar image with plain `docker run -i`, mounting this
    /// snapshot directory read-only (kept fresh by `qbox snapshot DIR --watch`).
    #[arg(long, requires = "docker", conflicts_with = "workspace")]
    snapshot_dir: Option<String>,
    /// The image to serve from with --docker (any image; its `q`/`kiro-cli` serves the agent).
    #[arg(long, default_value = "qbox-sidecar:latest", requires = "docker")]
    image: String,
    /// With --docker: mount this directory at the same path and work in it.
    #[arg(long, value_name = "DIR", requires = "docker")]
    workspace: Option<String>,
    /// Connect to a running sidecar's streamable HTTP endpoint (http://HOST:PORT/mcp).
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// With --url --install, for hosts that cannot reference the token: read it from
    /// this file (else QBOX_MCP_TOKEN, else the token a loopback sidecar generated).
    #[arg(long, value_name = "FILE", requires = "url")]
    token_file: Option<PathBuf>,
    /// Also enable the q-developer-agent tool (it runs the Kiro CLI, or the legacy `q`).
    #[arg(long, conflicts_with = "url")]
    enable_agent: bool,
    /// The server's name in the host's file.
    #[arg(long, default_value = "qbox", value_parser = server_name)]
    name: String,
    /// Merge the entry into the host's file instead of printing it.
    #[arg(long)]
    install: bool,
    /// With --install: the project's file (in this directory) or the user's.
    #[arg(long, value_enum, default_value_t = Scope::User, requires = "install")]
    scope: Scope,
    /// With --install: replace a different server of the same name.
    #[arg(long, requires = "install")]
    force: bool,
    /// Print a JSON description for scripts (the configuration, or what --install changed).
    #[arg(long)]
    json: bool,
    /// Print the MCP registry's server.json (from the tools' definitions) and nothing else.
    #[arg(long, conflicts_with_all = ["server_card", "install", "url", "docker"])]
    server_json: bool,
    /// The registry name for --server-json (reverse-DNS namespace/server).
    #[arg(long, value_name = "NAME", requires = "server_json",
          default_value = crate::mcp::registry::DEFAULT_REGISTRY_NAME)]
    registry_name: String,
    /// Print the server card (identity, transport, authentication, tools) and nothing else.
    #[arg(long, conflicts_with_all = ["install", "url", "docker"])]
    server_card: bool,
}

/// A server name every host takes as a key: letters, digits, `-`, `_`, `.`.
fn server_name(value: &str) -> Result<String, String> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(value.to_owned())
    } else {
        Err("use letters, digits, '-', '_' or '.' (at most 64)".into())
    }
}

/// The sidecar binary next to this `qbox`, else the bare name (from PATH).
fn sidecar_command() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("qbox-sidecar")))
        .filter(|path| path.exists())
        .map(|path: PathBuf| path.display().to_string())
        .unwrap_or_else(|| "qbox-sidecar".to_owned())
}

/// This `qbox`, by absolute path (MCP hosts start servers without a
/// shell's PATH), else the bare name.
fn qbox_command() -> String {
    std::env::current_exe()
        .ok()
        .map(|path| path.display().to_string())
        .unwrap_or_else(|| "qbox".to_owned())
}

/// Expands a leading `~/` with the home directory (MCP hosts do not).
fn expand_home(path: &str) -> String {
    match (path.strip_prefix("~/"), dirs::home_dir()) {
        (Some(rest), Some(home)) => home.join(rest).display().to_string(),
        _ => path.to_owned(),
    }
}

/// The server entry: command, args and env.
pub fn server_entry(args: &McpConfigArgs) -> (String, Vec<String>, Map<String, Value>) {
    let mut env = Map::new();
    if args.enable_agent {
        env.insert("ENABLE_ADDITIONAL_TOOLS".into(), json!("q-developer-agent"));
    }
    if !args.docker {
        return (sidecar_command(), vec!["serve".into()], env);
    }
    let Some(snapshot_dir) = &args.snapshot_dir else {
        // `qbox run --mcp` enables the agent itself.
        let mut run_args = vec!["run".to_owned()];
        if let Some(workspace) = &args.workspace {
            let dir = std::path::absolute(expand_home(workspace))
                .map_or_else(|_| expand_home(workspace), |p| p.display().to_string());
            run_args.extend(["-v".into(), format!("{dir}:{dir}"), "-w".into(), dir]);
        }
        run_args.extend(["--mcp".into(), args.image.clone()]);
        return (qbox_command(), run_args, Map::new());
    };
    let mut docker_args: Vec<String> = [
        "run",
        "-i",
        "--rm",
        "--read-only",
        "--cap-drop=ALL",
        "--security-opt=no-new-privileges",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    // The snapshot is 0600 and yours: the container runs as you to read it.
    docker_args.push(format!(
        "--user={}:{}",
        nix::unistd::getuid(),
        nix::unistd::getgid()
    ));
    docker_args.push("-v".into());
    docker_args.push(format!("{}:/run/qbox/auth:ro", expand_home(snapshot_dir)));
    docker_args.extend(["-e".into(), "QBOX_DB=/run/qbox/auth/data.sqlite3".into()]);
    // Variables go to the container by name only: docker takes the values
    // from the environment the MCP host gives it.
    for key in env.keys() {
        docker_args.extend(["-e".into(), key.clone()]);
    }
    docker_args.extend([args.image.clone(), "serve".into()]);
    ("docker".into(), docker_args, env)
}

/// Where the host files are: this user's home and configuration
/// directories, and the working directory as the project.
fn places() -> anyhow::Result<Places> {
    let home = dirs::home_dir()
        .ok_or_else(|| CommandError::new(exit::ERROR, "no home directory").hint("set HOME"))?;
    Ok(Places {
        config: dirs::config_dir().unwrap_or_else(|| home.join(".config")),
        home,
        project: std::env::current_dir()?,
        codex_home: std::env::var_os("CODEX_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from),
    })
}

/// The URL checked: http or https, with a host.
fn checked_url(url: &str) -> Result<String, CommandError> {
    let parsed = reqwest::Url::parse(url).map_err(|_| {
        CommandError::new(exit::USAGE, format!("--url {url} is not a URL"))
            .hint("give the sidecar's endpoint, e.g. http://127.0.0.1:8080/mcp")
    })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(
            CommandError::new(exit::USAGE, format!("--url {url} is not an http(s) URL"))
                .hint("give the sidecar's endpoint, e.g. http://127.0.0.1:8080/mcp"),
        );
    }
    Ok(url.to_owned())
}

/// The token for a host that must hold it: --token-file, QBOX_MCP_TOKEN,
/// else what a sidecar on this machine generated for `url`.
fn literal_token(
    args: &McpConfigArgs,
    url: &str,
    palette: Palette,
) -> anyhow::Result<crate::secret::Secret> {
    if let Some(given) = crate::mcp::token::given_token(args.token_file.as_deref())? {
        for warning in &given.warnings {
            crate::app::report::warn(palette, warning, None);
        }
        return Ok(given.secret);
    }
    if let Some((token, _)) = crate::mcp::token::generated_token_for(url) {
        return Ok(token);
    }
    Err(CommandError::new(
        exit::USAGE,
        format!(
            "{} needs the token itself, and there is none to write",
            args.client.title()
        ),
    )
    .hint("give --token-file FILE or set QBOX_MCP_TOKEN (a loopback sidecar's generated token is found by itself)")
    .into())
}

pub fn run(args: &McpConfigArgs, palette: Palette) -> anyhow::Result<u8> {
    if args.server_json || args.server_card {
        let value = if args.server_json {
            crate::mcp::registry::server_json(&args.registry_name)
        } else {
            crate::mcp::registry::server_card()
        };
        crate::app::output::println(format_args!("{}", serde_json::to_string_pretty(&value)?))?;
        return Ok(exit::OK);
    }
    let host = args.client;
    let launch = match &args.url {
        Some(url) => {
            let url = checked_url(url)?;
            let literal = if args.install && host.token_style() == Some(TokenStyle::Literal) {
                Some(literal_token(args, &url, palette)?)
            } else {
                None
            };
            Launch::Http { url, literal }
        }
        None => {
            let (command, args, env) = server_entry(args);
            Launch::Command { command, args, env }
        }
    };
    let entry = mcp_hosts::entry(host, &args.name, &launch)?;
    let places = places()?;
    if args.install {
        let path = host.path(args.scope, &places)?;
        let done = install::install(&path, &entry, args.force)?;
        if args.json {
            let report = json!({
                "client": host.flag(),
                "name": args.name,
                "file": done.path,
                "action": done.action.name(),
                "backup": done.backup,
            });
            crate::app::output::println(format_args!("{report}"))?;
        }
        let shown = done.path.display();
        match done.action {
            Action::Unchanged => eprintln!("{shown}: {} is already there, unchanged", args.name),
            action => {
                eprintln!("{shown}: {} {}", action.name(), args.name);
                if let Some(backup) = &done.backup {
                    eprintln!("the previous file is in {}", backup.display());
                }
            }
        }
    } else {
        let text = mcp_hosts::document(&entry);
        let file = host
            .path(Scope::User, &places)
            .or_else(|_| host.path(Scope::Project, &places))
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        if args.json {
            let report = json!({
                "client": host.flag(),
                "name": args.name,
                "format": host.format().name(),
                "file": file,
                "config": text,
            });
            crate::app::output::println(format_args!("{report}"))?;
        } else {
            crate::app::output::print(&text)?;
        }
        eprintln!(
            "add to {file} (merge with the servers already there), or run again with --install"
        );
    }
    if args.url.is_some() {
        match host.token_style() {
            Some(TokenStyle::Reference) if host == Host::Vscode => {
                eprintln!("VS Code asks for the token once and keeps it in its secret storage");
            }
            Some(TokenStyle::Reference) => {
                eprintln!(
                    "start {} with the token in {} (the file holds only the reference)",
                    host.title(),
                    mcp_hosts::TOKEN_VAR
                );
            }
            _ if !args.install => eprintln!(
                "{} cannot reference the token: replace {} with it, in a file only you can read (--install does that)",
                host.title(),
                mcp_hosts::TOKEN_PLACEHOLDER
            ),
            _ => {}
        }
    }
    if let Some(snapshot_dir) = args.snapshot_dir.as_ref().filter(|_| args.docker) {
        eprintln!("keep the snapshot fresh on the host: qbox snapshot {snapshot_dir} --watch");
    }
    Ok(exit::OK)
}
