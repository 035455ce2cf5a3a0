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
  qbox mcp-config --client kiro --enable-agent     # also offer q-developer-agent

With --docker, keep the snapshot fresh on the host: qbox snapshot ~/.qbox/auth --watch")]
pub struct McpConfigArgs {
    /// Which MCP host the configuration is for.
    #[arg(long, value_enum, default_value_t = McpClient::ClaudeDesktop)]
    client: McpClient,
    /// Run the sidecar with `docker run -i` and a read-only snapshot mount.
    #[arg(long)]
    docker: bool,
    /// The snapshot directory to mount with --docker.
    #[arg(long, default_value = "~/.qbox/auth", requires = "docker")]
    snapshot_dir: String,
    /// The sidecar image to run with --docker.
    #[arg(long, default_value = "qbox-sidecar:latest", requires = "docker")]
    image: String,
    /// Also enable the q-developer-agent tool (it runs the Amazon Q CLI).
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
    docker_args.push(format!(
        "{}:/run/qbox/auth:ro",
        expand_home(&args.snapshot_dir)
    ));
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
    println!("{}", serde_json::to_string_pretty(&config)?);
    eprintln!(
        "paste into {} (merge with servers already there)",
        args.client.file()
    );
    if args.docker {
        eprintln!(
            "keep the snapshot fresh on the host: qbox snapshot {} --watch",
            args.snapshot_dir
        );
    }
    Ok(exit::OK)
}
