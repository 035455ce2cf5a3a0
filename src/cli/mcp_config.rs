//! `qbox mcp-config`: a ready-to-paste MCP client configuration that runs
//! the sidecar as a local process or in a container.

use std::path::PathBuf;

use serde_json::{Map, Value, json};

use crate::exit;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  qbox mcp-config                                  # Claude Desktop, local process
  qbox mcp-config --client vscode > .vscode/mcp.json
  qbox mcp-config --client q --docker              # Amazon Q's mcp.json, sidecar in a container
  qbox mcp-config --docker --image my-dev-image --workspace ~/src/app   # the agent in your image
  qbox mcp-config --client kiro --enable-agent     # also offer q-developer-agent
  qbox mcp-config --docker --snapshot-dir ~/.qbox/auth   # plain `docker run`, no qbox needed

With --docker the host runs `qbox run --mcp IMAGE`: the static sidecar is mounted into the
image, which serves both tools (its own q or kiro-cli answers q-developer-agent), and qbox
keeps the login fresh while it runs. With --snapshot-dir the host runs `docker run` on the
sidecar image instead; then keep the snapshot fresh: qbox snapshot DIR --watch")]
pub struct McpConfigArgs {
    /// Which MCP host the configuration is for.
    #[arg(long, value_enum, default_value_t = McpClient::ClaudeDesktop)]
    client: McpClient,
    /// Serve from a container: `qbox run --mcp IMAGE` (or, with --snapshot-dir, `docker run`).
    #[arg(long)]
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
    /// Also enable the q-developer-agent tool (it runs the Kiro CLI, or the legacy `q`).
    #[arg(long)]
    enable_agent: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum McpClient {
    /// claude_desktop_config.json
    ClaudeDesktop,
    /// .vscode/mcp.json
    Vscode,
    /// Amazon Q Developer CLI: ~/.aws/amazonq/mcp.json
    Q,
    /// Kiro: .kiro/settings/mcp.json
    Kiro,
}

impl McpClient {
    fn file(self) -> &'static str {
        match self {
            Self::ClaudeDesktop => {
                "claude_desktop_config.json (macOS: ~/Library/Application Support/Claude/, Windows: %APPDATA%\\Claude\\)"
            }
            Self::Vscode => ".vscode/mcp.json in your workspace",
            Self::Q => "~/.aws/amazonq/mcp.json (or .amazonq/mcp.json in a workspace)",
            Self::Kiro => {
                ".kiro/settings/mcp.json in your workspace (or ~/.kiro/settings/mcp.json)"
            }
        }
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

pub fn run(args: &McpConfigArgs) -> anyhow::Result<u8> {
    let (command, argv, env) = server_entry(args);
    let mut server = json!({"command": command, "args": argv});
    if !env.is_empty() {
        server["env"] = Value::Object(env);
    }
    let config = match args.client {
        McpClient::ClaudeDesktop => json!({"mcpServers": {"qbox": server}}),
        McpClient::Vscode => {
            server["type"] = json!("stdio");
            json!({"servers": {"qbox": server}})
        }
        McpClient::Q => {
            // Agent calls can take minutes; Q's default tool timeout is shorter.
            server["timeout"] = json!(300_000);
            json!({"mcpServers": {"qbox": server}})
        }
        McpClient::Kiro => {
            server["disabled"] = json!(false);
            server["autoApprove"] = json!([]);
            json!({"mcpServers": {"qbox": server}})
        }
    };
    crate::app::output::println(format_args!("{}", serde_json::to_string_pretty(&config)?))?;
    eprintln!(
        "paste into {} (merge with servers already there)",
        args.client.file()
    );
    if let Some(snapshot_dir) = args.snapshot_dir.as_ref().filter(|_| args.docker) {
        eprintln!("keep the snapshot fresh on the host: qbox snapshot {snapshot_dir} --watch");
    }
    Ok(exit::OK)
}
