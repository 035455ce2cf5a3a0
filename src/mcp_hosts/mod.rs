//! The MCP hosts people run the sidecar from: where each keeps its servers,
//! and the entry each expects, in its own format (JSON, TOML or YAML).
//!
//! Pure: the command line resolves the home and project directories, the
//! sidecar's command and any token, and passes them in. `install` merges an
//! entry into a host's file.

pub mod install;

use std::path::PathBuf;

use serde_json::{Map, Value, json};

use crate::exit::{self, CommandError};
use crate::secret::Secret;

/// The variable a host expands into the bearer token of an HTTP entry
/// (the same one `qbox-sidecar serve` reads its token from).
pub const TOKEN_VAR: &str = "QBOX_MCP_TOKEN";

/// The VS Code input that prompts for the token (kept in VS Code's secret
/// storage, never in the file).
pub const VSCODE_INPUT: &str = "qbox-mcp-token";

/// Stands in for a token in printed configurations of hosts that cannot
/// reference one (a token is only ever written by `--install`, into a
/// file only its owner can read).
pub const TOKEN_PLACEHOLDER: &str = "<QBOX_MCP_TOKEN>";

/// An MCP host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Host {
    /// Claude Desktop: claude_desktop_config.json
    ClaudeDesktop,
    /// Claude Code: .mcp.json (project) or ~/.claude.json (user)
    ClaudeCode,
    /// Cursor: .cursor/mcp.json or ~/.cursor/mcp.json
    Cursor,
    /// Codex CLI: .codex/config.toml or ~/.codex/config.toml
    Codex,
    /// Gemini CLI: .gemini/settings.json or ~/.gemini/settings.json
    Gemini,
    /// Zed: .zed/settings.json or ~/.config/zed/settings.json
    Zed,
    /// Goose: ~/.config/goose/config.yaml
    Goose,
    /// VS Code: .vscode/mcp.json or the user profile's mcp.json
    Vscode,
    /// Amazon Q Developer CLI: .amazonq/mcp.json or ~/.aws/amazonq/mcp.json
    Q,
    /// Kiro: .kiro/settings/mcp.json or ~/.kiro/settings/mcp.json
    Kiro,
}

/// A host file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Toml,
    Yaml,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Toml => "toml",
            Self::Yaml => "yaml",
        }
    }
}

/// Which of a host's files: the project's (in the working directory) or
/// the user's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scope {
    Project,
    User,
}

/// How the host reaches the sidecar.
#[derive(Debug)]
pub enum Launch {
    /// The host starts a process and speaks MCP over its stdin/stdout.
    Command {
        command: String,
        args: Vec<String>,
        env: Map<String, Value>,
    },
    /// The host connects to a running sidecar's streamable HTTP endpoint.
    Http {
        url: String,
        /// The token itself, for hosts that cannot reference a variable;
        /// `None` prints a placeholder instead.
        literal: Option<Secret>,
    },
}

/// How a host's HTTP entry carries the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenStyle {
    /// A reference the host expands from its environment (or prompts for).
    Reference,
    /// The token itself: the host expands nothing in its headers.
    Literal,
}

/// What to add to a host's file.
#[derive(Debug)]
pub struct Entry {
    pub host: Host,
    pub name: String,
    /// The server entry, in the host's shape.
    pub server: Value,
    /// VS Code's `inputs` entry for the token prompt.
    pub input: Option<Value>,
    /// The entry holds a token in clear: only a file its owner alone can
    /// read may take it.
    pub holds_secret: bool,
}

/// The directories the host files are found in.
#[derive(Debug)]
pub struct Places {
    pub home: PathBuf,
    /// The platform's configuration directory (`~/.config` on Linux,
    /// `~/Library/Application Support` on macOS).
    pub config: PathBuf,
    pub project: PathBuf,
    /// `CODEX_HOME`, when set.
    pub codex_home: Option<PathBuf>,
}

impl Host {
    pub fn format(self) -> Format {
        match self {
            Self::Codex => Format::Toml,
            Self::Goose => Format::Yaml,
            _ => Format::Json,
        }
    }

    /// The key under which the host keeps its servers.
    pub fn servers_key(self) -> &'static str {
        match self {
            Self::Vscode => "servers",
            Self::Zed => "context_servers",
            Self::Codex => "mcp_servers",
            Self::Goose => "extensions",
            _ => "mcpServers",
        }
    }

    /// How the token reaches an HTTP entry; `None`: no HTTP entries.
    pub fn token_style(self) -> Option<TokenStyle> {
        match self {
            // The Amazon Q CLI's mcp.json runs commands only.
            Self::Q => None,
            // Claude Desktop takes no remote entry with headers from its
            // file: a stdio bridge carries the header, from its `env`.
            Self::Zed | Self::Goose | Self::ClaudeDesktop => Some(TokenStyle::Literal),
            _ => Some(TokenStyle::Reference),
        }
    }

    /// The host's file for `scope`, or why it has none there.
    pub fn path(self, scope: Scope, places: &Places) -> Result<PathBuf, CommandError> {
        let home = &places.home;
        let project = &places.project;
        let user = |parts: &[&str]| parts.iter().fold(home.clone(), |p, s| p.join(s));
        let in_project = |parts: &[&str]| parts.iter().fold(project.clone(), |p, s| p.join(s));
        let no_project = || {
            CommandError::new(
                exit::USAGE,
                format!("{} has no project configuration file", self.title()),
            )
            .hint("use --scope user")
        };
        Ok(match (self, scope) {
            (Self::ClaudeCode, Scope::Project) => in_project(&[".mcp.json"]),
            (Self::ClaudeCode, Scope::User) => user(&[".claude.json"]),
            (Self::Cursor, Scope::Project) => in_project(&[".cursor", "mcp.json"]),
            (Self::Cursor, Scope::User) => user(&[".cursor", "mcp.json"]),
            (Self::Codex, Scope::Project) => in_project(&[".codex", "config.toml"]),
            (Self::Codex, Scope::User) => places
                .codex_home
                .clone()
                .unwrap_or_else(|| home.join(".codex"))
                .join("config.toml"),
            (Self::Gemini, Scope::Project) => in_project(&[".gemini", "settings.json"]),
            (Self::Gemini, Scope::User) => user(&[".gemini", "settings.json"]),
            (Self::Zed, Scope::Project) => in_project(&[".zed", "settings.json"]),
            // Zed keeps ~/.config/zed on macOS too.
            (Self::Zed, Scope::User) => xdg_config(places).join("zed").join("settings.json"),
            (Self::Goose, Scope::Project) | (Self::ClaudeDesktop, Scope::Project) => {
                return Err(no_project());
            }
            (Self::Goose, Scope::User) => {
                if cfg!(windows) {
                    places
                        .config
                        .join("Block")
                        .join("goose")
                        .join("config")
                        .join("config.yaml")
                } else {
                    xdg_config(places).join("goose").join("config.yaml")
                }
            }
            (Self::ClaudeDesktop, Scope::User) => places
                .config
                .join("Claude")
                .join("claude_desktop_config.json"),
            (Self::Vscode, Scope::Project) => in_project(&[".vscode", "mcp.json"]),
            (Self::Vscode, Scope::User) => places.config.join("Code").join("User").join("mcp.json"),
            (Self::Q, Scope::Project) => in_project(&[".amazonq", "mcp.json"]),
            (Self::Q, Scope::User) => user(&[".aws", "amazonq", "mcp.json"]),
            (Self::Kiro, Scope::Project) => in_project(&[".kiro", "settings", "mcp.json"]),
            (Self::Kiro, Scope::User) => user(&[".kiro", "settings", "mcp.json"]),
        })
    }

    /// The host's name for people.
    pub fn title(self) -> &'static str {
        match self {
            Self::ClaudeDesktop => "Claude Desktop",
            Self::ClaudeCode => "Claude Code",
            Self::Cursor => "Cursor",
            Self::Codex => "Codex CLI",
            Self::Gemini => "Gemini CLI",
            Self::Zed => "Zed",
            Self::Goose => "Goose",
            Self::Vscode => "VS Code",
            Self::Q => "the Amazon Q Developer CLI",
            Self::Kiro => "Kiro",
        }
    }

    /// The value `--client` takes.
    pub fn flag(self) -> &'static str {
        match self {
            Self::ClaudeDesktop => "claude-desktop",
            Self::ClaudeCode => "claude-code",
            Self::Cursor => "cursor",
            Self::Codex => "codex",
            Self::Gemini => "gemini",
            Self::Zed => "zed",
            Self::Goose => "goose",
            Self::Vscode => "vscode",
            Self::Q => "q",
            Self::Kiro => "kiro",
        }
    }
}

/// `$XDG_CONFIG_HOME` on Linux (what `places.config` is there), else `~/.config`.
fn xdg_config(places: &Places) -> PathBuf {
    if cfg!(target_os = "linux") {
        places.config.clone()
    } else {
        places.home.join(".config")
    }
}

/// The header value for a token reference in `host`'s own syntax.
fn bearer_reference(host: Host) -> String {
    match host {
        Host::Cursor => format!("Bearer ${{env:{TOKEN_VAR}}}"),
        Host::Vscode => format!("Bearer ${{input:{VSCODE_INPUT}}}"),
        // Claude Code, Gemini CLI and Kiro expand `${VAR}`.
        _ => format!("Bearer ${{{TOKEN_VAR}}}"),
    }
}

/// The entry `host` needs to run the sidecar as `launch` says, under `name`.
pub fn entry(host: Host, name: &str, launch: &Launch) -> Result<Entry, CommandError> {
    let mut input = None;
    let mut holds_secret = false;
    let server = match launch {
        Launch::Command { command, args, env } => stdio_entry(host, name, command, args, env),
        Launch::Http { url, literal } => {
            let Some(style) = host.token_style() else {
                return Err(CommandError::new(
                    exit::USAGE,
                    format!("{} takes no HTTP servers in its mcp.json", host.title()),
                )
                .hint("use --client kiro (the Kiro CLI replaces the Amazon Q CLI), or the stdio form without --url"));
            };
            let token = match style {
                TokenStyle::Reference => bearer_reference(host),
                TokenStyle::Literal => {
                    holds_secret = literal.is_some();
                    format!(
                        "Bearer {}",
                        literal.as_ref().map_or(TOKEN_PLACEHOLDER, Secret::expose)
                    )
                }
            };
            if host == Host::Vscode {
                input = Some(json!({
                    "type": "promptString",
                    "id": VSCODE_INPUT,
                    "description": "qbox-sidecar bearer token (QBOX_MCP_TOKEN)",
                    "password": true
                }));
            }
            http_entry(host, name, url, &token)
        }
    };
    Ok(Entry {
        host,
        name: name.to_owned(),
        server,
        input,
        holds_secret,
    })
}

fn stdio_entry(
    host: Host,
    name: &str,
    command: &str,
    args: &[String],
    env: &Map<String, Value>,
) -> Value {
    let mut server = Map::new();
    match host {
        Host::Goose => {
            server.insert("enabled".into(), json!(true));
            server.insert("type".into(), json!("stdio"));
            server.insert("name".into(), json!(name));
            server.insert("description".into(), json!(DESCRIPTION));
            server.insert("cmd".into(), json!(command));
            server.insert("args".into(), json!(args));
            server.insert("envs".into(), Value::Object(env.clone()));
            server.insert("env_keys".into(), json!([]));
            // Seconds; agent calls can take minutes.
            server.insert("timeout".into(), json!(AGENT_TIMEOUT_SECS));
            return Value::Object(server);
        }
        Host::Vscode => {
            server.insert("type".into(), json!("stdio"));
        }
        _ => {}
    }
    server.insert("command".into(), json!(command));
    server.insert("args".into(), json!(args));
    if !env.is_empty() {
        server.insert("env".into(), Value::Object(env.clone()));
    }
    match host {
        Host::Q => {
            // Agent calls can take minutes; Q's default tool timeout is shorter.
            server.insert("timeout".into(), json!(AGENT_TIMEOUT_SECS * 1000));
        }
        Host::Kiro => {
            server.insert("disabled".into(), json!(false));
            server.insert("autoApprove".into(), json!([]));
        }
        Host::Codex => {
            server.insert("tool_timeout_sec".into(), json!(AGENT_TIMEOUT_SECS));
        }
        _ => {}
    }
    Value::Object(server)
}

fn http_entry(host: Host, name: &str, url: &str, bearer: &str) -> Value {
    let headers = json!({ "Authorization": bearer });
    match host {
        Host::ClaudeCode => json!({"type": "http", "url": url, "headers": headers}),
        Host::Vscode => json!({"type": "http", "url": url, "headers": headers}),
        // `url` would mean the older SSE transport to the Gemini CLI.
        Host::Gemini => json!({"httpUrl": url, "headers": headers}),
        Host::Codex => json!({
            "url": url,
            "bearer_token_env_var": TOKEN_VAR,
            "tool_timeout_sec": AGENT_TIMEOUT_SECS,
        }),
        Host::Kiro => json!({"url": url, "headers": headers, "disabled": false, "autoApprove": []}),
        Host::Goose => json!({
            "enabled": true,
            "type": "streamable_http",
            "name": name,
            "description": DESCRIPTION,
            "uri": url,
            "headers": headers,
            "envs": {},
            "env_keys": [],
            "timeout": AGENT_TIMEOUT_SECS,
        }),
        // A stdio bridge: `mcp-remote` expands `${VAR}` in its arguments
        // from the environment the host gives it.
        Host::ClaudeDesktop => json!({
            "command": "npx",
            "args": ["-y", "mcp-remote", url, "--header", "Authorization:${QBOX_MCP_AUTHORIZATION}"],
            "env": {"QBOX_MCP_AUTHORIZATION": bearer},
        }),
        // Cursor, Zed.
        _ => json!({"url": url, "headers": headers}),
    }
}

/// How long a host should wait for a tool call (the agent's default timeout).
const AGENT_TIMEOUT_SECS: u64 = 300;

const DESCRIPTION: &str = "Amazon Q through qbox-sidecar";

/// The whole document holding only `entry`, in the host's format.
pub fn document(entry: &Entry) -> String {
    let key = entry.host.servers_key();
    match entry.host.format() {
        Format::Json => {
            let mut doc = Map::new();
            if let Some(input) = &entry.input {
                doc.insert("inputs".into(), json!([input]));
            }
            doc.insert(key.into(), json!({ entry.name.clone(): entry.server }));
            let mut text = serde_json::to_string_pretty(&Value::Object(doc)).unwrap_or_default();
            text.push('\n');
            text
        }
        Format::Toml => {
            let mut doc = toml_edit::DocumentMut::new();
            let mut servers = toml_edit::Table::new();
            servers.set_implicit(true);
            servers.insert(
                &entry.name,
                toml_edit::Item::Table(install::toml_table(&entry.server)),
            );
            doc.insert(key, toml_edit::Item::Table(servers));
            doc.to_string()
        }
        Format::Yaml => format!(
            "{key}:\n{}",
            install::yaml_block(&entry.name, &entry.server, 2)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn stdio() -> Launch {
        let mut env = Map::new();
        env.insert("ENABLE_ADDITIONAL_TOOLS".into(), json!("q-developer-agent"));
        Launch::Command {
            command: "/opt/qbox/qbox-sidecar".into(),
            args: vec!["serve".into()],
            env,
        }
    }

    fn http(literal: Option<&str>) -> Launch {
        Launch::Http {
            url: "http://127.0.0.1:8080/mcp".into(),
            literal: literal.map(Secret::new),
        }
    }

    fn places() -> Places {
        Places {
            home: "/home/me".into(),
            config: "/home/me/.config".into(),
            project: "/src/app".into(),
            codex_home: None,
        }
    }

    #[test]
    fn claude_style_hosts_take_command_args_env_under_mcp_servers() {
        for host in [
            Host::ClaudeDesktop,
            Host::ClaudeCode,
            Host::Cursor,
            Host::Gemini,
            Host::Kiro,
        ] {
            let entry = entry(host, "qbox", &stdio()).unwrap();
            let doc: Value = serde_json::from_str(&document(&entry)).unwrap();
            let server = &doc["mcpServers"]["qbox"];
            assert_eq!(server["command"], "/opt/qbox/qbox-sidecar", "{host:?}");
            assert_eq!(server["args"], json!(["serve"]));
            assert_eq!(
                server["env"]["ENABLE_ADDITIONAL_TOOLS"],
                "q-developer-agent"
            );
        }
        let kiro = entry(Host::Kiro, "qbox", &stdio()).unwrap();
        assert_eq!(kiro.server["disabled"], false);
        assert_eq!(kiro.server["autoApprove"], json!([]));
    }

    #[test]
    fn http_entries_reference_the_token_in_each_hosts_syntax() {
        let header = |host| {
            entry(host, "qbox", &http(None)).unwrap().server["headers"]["Authorization"].clone()
        };
        assert_eq!(header(Host::ClaudeCode), "Bearer ${QBOX_MCP_TOKEN}");
        assert_eq!(header(Host::Gemini), "Bearer ${QBOX_MCP_TOKEN}");
        assert_eq!(header(Host::Kiro), "Bearer ${QBOX_MCP_TOKEN}");
        assert_eq!(header(Host::Cursor), "Bearer ${env:QBOX_MCP_TOKEN}");
        assert_eq!(header(Host::Vscode), "Bearer ${input:qbox-mcp-token}");
        let code = entry(Host::ClaudeCode, "qbox", &http(None)).unwrap();
        assert_eq!(code.server["type"], "http");
        let gemini = entry(Host::Gemini, "qbox", &http(None)).unwrap();
        assert_eq!(gemini.server["httpUrl"], "http://127.0.0.1:8080/mcp");
        assert!(
            gemini.server.get("url").is_none(),
            "url is SSE to the Gemini CLI"
        );
        let vscode = entry(Host::Vscode, "qbox", &http(None)).unwrap();
        let doc: Value = serde_json::from_str(&document(&vscode)).unwrap();
        assert_eq!(doc["inputs"][0]["password"], true);
        assert_eq!(doc["inputs"][0]["id"], VSCODE_INPUT);
        assert_eq!(doc["servers"]["qbox"]["type"], "http");
    }

    #[test]
    fn hosts_that_expand_nothing_print_a_placeholder_and_mark_a_real_token() {
        for host in [Host::Zed, Host::Goose, Host::ClaudeDesktop] {
            let printed = entry(host, "qbox", &http(None)).unwrap();
            assert!(!printed.holds_secret);
            assert!(document(&printed).contains(TOKEN_PLACEHOLDER), "{host:?}");
            let installed = entry(host, "qbox", &http(Some("s3cr3t-token-value"))).unwrap();
            assert!(installed.holds_secret);
            assert!(document(&installed).contains("s3cr3t-token-value"));
        }
        assert!(entry(Host::Q, "qbox", &http(None)).is_err());
    }

    #[test]
    fn codex_is_toml_with_a_bearer_token_variable() {
        let stdio = entry(Host::Codex, "qbox", &stdio()).unwrap();
        let doc: toml_edit::DocumentMut = document(&stdio).parse().unwrap();
        let server = &doc["mcp_servers"]["qbox"];
        assert_eq!(server["command"].as_str(), Some("/opt/qbox/qbox-sidecar"));
        assert_eq!(server["args"][0].as_str(), Some("serve"));
        assert_eq!(
            server["env"]["ENABLE_ADDITIONAL_TOOLS"].as_str(),
            Some("q-developer-agent")
        );
        let http = entry(Host::Codex, "qbox", &http(None)).unwrap();
        let doc: toml_edit::DocumentMut = document(&http).parse().unwrap();
        let server = &doc["mcp_servers"]["qbox"];
        assert_eq!(server["url"].as_str(), Some("http://127.0.0.1:8080/mcp"));
        assert_eq!(server["bearer_token_env_var"].as_str(), Some(TOKEN_VAR));
        assert!(server.get("http_headers").is_none());
    }

    #[test]
    fn goose_is_yaml_with_cmd_envs_and_streamable_http() {
        use yaml_rust2::{Yaml, YamlLoader};
        let stdio = entry(Host::Goose, "qbox", &stdio()).unwrap();
        let docs = YamlLoader::load_from_str(&document(&stdio)).unwrap();
        let server = &docs[0]["extensions"]["qbox"];
        assert_eq!(server["type"].as_str(), Some("stdio"));
        assert_eq!(server["cmd"].as_str(), Some("/opt/qbox/qbox-sidecar"));
        assert_eq!(server["args"][0].as_str(), Some("serve"));
        assert_eq!(
            server["envs"]["ENABLE_ADDITIONAL_TOOLS"].as_str(),
            Some("q-developer-agent")
        );
        assert_eq!(server["enabled"], Yaml::Boolean(true));
        let http = entry(Host::Goose, "qbox", &http(None)).unwrap();
        let docs = YamlLoader::load_from_str(&document(&http)).unwrap();
        let server = &docs[0]["extensions"]["qbox"];
        assert_eq!(server["type"].as_str(), Some("streamable_http"));
        assert_eq!(server["uri"].as_str(), Some("http://127.0.0.1:8080/mcp"));
    }

    #[test]
    fn zed_and_vscode_use_their_own_keys() {
        let zed = entry(Host::Zed, "qbox", &stdio()).unwrap();
        let doc: Value = serde_json::from_str(&document(&zed)).unwrap();
        assert_eq!(doc["context_servers"]["qbox"]["args"], json!(["serve"]));
        let vscode = entry(Host::Vscode, "qbox", &stdio()).unwrap();
        let doc: Value = serde_json::from_str(&document(&vscode)).unwrap();
        assert_eq!(doc["servers"]["qbox"]["type"], "stdio");
    }

    #[test]
    fn each_host_file_is_where_its_documentation_says() {
        let p = places();
        let path = |host: Host, scope| host.path(scope, &p).unwrap();
        assert_eq!(
            path(Host::ClaudeCode, Scope::Project),
            Path::new("/src/app/.mcp.json")
        );
        assert_eq!(
            path(Host::ClaudeCode, Scope::User),
            Path::new("/home/me/.claude.json")
        );
        assert_eq!(
            path(Host::Cursor, Scope::User),
            Path::new("/home/me/.cursor/mcp.json")
        );
        assert_eq!(
            path(Host::Codex, Scope::User),
            Path::new("/home/me/.codex/config.toml")
        );
        assert_eq!(
            path(Host::Gemini, Scope::Project),
            Path::new("/src/app/.gemini/settings.json")
        );
        assert_eq!(
            path(Host::Kiro, Scope::User),
            Path::new("/home/me/.kiro/settings/mcp.json")
        );
        assert_eq!(
            path(Host::Vscode, Scope::Project),
            Path::new("/src/app/.vscode/mcp.json")
        );
        if cfg!(target_os = "linux") {
            assert_eq!(
                path(Host::Goose, Scope::User),
                Path::new("/home/me/.config/goose/config.yaml")
            );
            assert_eq!(
                path(Host::Zed, Scope::User),
                Path::new("/home/me/.config/zed/settings.json")
            );
        }
        assert!(Host::Goose.path(Scope::Project, &p).is_err());
        assert!(Host::ClaudeDesktop.path(Scope::Project, &p).is_err());
    }
}
