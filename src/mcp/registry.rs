//! Publishable metadata: the MCP registry's `server.json` and a server card,
//! both built from the tools' own definitions (every row of
//! [`super::tools::TOOLS`]) and the pinned protocol revisions, so what they say
//! cannot drift from what the server answers. `docs/server.json` and
//! `docs/server-card.json` in the repository are these functions' output,
//! checked by a test.

use serde_json::{Value, json};

use super::server::{NEWEST_HANDSHAKE_REVISION, PROTOCOL_VERSIONS};
use super::tools::TOOLS;

/// The registry's schema this `server.json` follows.
pub const SERVER_SCHEMA: &str =
    "https://static.modelcontextprotocol.io/schemas/2025-12-11/server.schema.json";

/// The name the server is published under (reverse-DNS namespace, then the
/// server); a publisher whose namespace differs passes its own.
pub const DEFAULT_REGISTRY_NAME: &str = "io.github.qbox/qbox-sidecar";

const TITLE: &str = "qbox sidecar (Amazon Q)";

/// At most 100 characters, as the registry asks.
const DESCRIPTION: &str =
    "Amazon Q Developer for MCP hosts: ask Q or run the Kiro CLI agent with your CLI login";

fn tools() -> Vec<Value> {
    TOOLS
        .iter()
        .map(|row| serde_json::to_value((row.tool)()).unwrap_or(Value::Null))
        .collect()
}

fn env_var(name: &str, description: &str, secret: bool) -> Value {
    json!({"name": name, "description": description, "isRequired": false, "isSecret": secret})
}

/// The registry's `server.json` for this version: the sidecar image run over
/// stdio, its variables, and (publisher-provided) the tools it serves.
pub fn server_json(name: &str) -> Value {
    let version = env!("CARGO_PKG_VERSION");
    json!({
        "$schema": SERVER_SCHEMA,
        "name": name,
        "title": TITLE,
        "description": DESCRIPTION,
        "version": version,
        "packages": [{
            "registryType": "oci",
            "identifier": format!("qbox-sidecar:{version}"),
            "transport": {"type": "stdio"},
            "runtimeHint": "docker",
            "packageArguments": [{"type": "positional", "value": "serve"}],
            "environmentVariables": [
                env_var("QBOX_DB", "The login snapshot's data.sqlite3 (qbox snapshot DIR --watch keeps it fresh)", false),
                env_var("ENABLE_ADDITIONAL_TOOLS", "q-developer-agent to offer the agent tool (needs the Kiro CLI in the image)", false),
                env_var("KIRO_API_KEY", "A Kiro API key, when no login snapshot is mounted", true),
            ],
        }],
        "_meta": {
            "io.modelcontextprotocol.registry/publisher-provided": {
                "protocolVersions": PROTOCOL_VERSIONS.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "tools": tools(),
            }
        }
    })
}

/// A server card: who the server is, how to reach it over HTTP, how it
/// authenticates, and its tools (`q-developer-agent` only when enabled).
pub fn server_card() -> Value {
    json!({
        "$schema": "https://static.modelcontextprotocol.io/schemas/mcp-server-card/v1.json",
        "version": "1.0",
        "protocolVersion": NEWEST_HANDSHAKE_REVISION.to_string(),
        "supportedProtocolVersions": PROTOCOL_VERSIONS.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "serverInfo": {"name": "qbox-sidecar", "title": TITLE, "version": env!("CARGO_PKG_VERSION")},
        "description": DESCRIPTION,
        "transport": {"type": "streamable-http", "endpoint": "/mcp"},
        "authentication": {"required": true, "schemes": ["bearer"]},
        "capabilities": {"tools": {"listChanged": false}},
        "tools": tools(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metadata_carries_the_served_tools_and_revisions() {
        let card = server_card();
        let names: Vec<&str> = card["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, super::super::tools::tool_names());
        assert!(card["tools"][0]["inputSchema"]["properties"]["prompt"].is_object());
        assert!(card["tools"][0]["outputSchema"].is_object());
        let server = server_json(DEFAULT_REGISTRY_NAME);
        assert!(DESCRIPTION.len() <= 100);
        assert_eq!(server["version"], env!("CARGO_PKG_VERSION"));
        let meta = &server["_meta"]["io.modelcontextprotocol.registry/publisher-provided"];
        assert_eq!(meta["tools"], card["tools"]);
        assert_eq!(
            meta["protocolVersions"].as_array().unwrap().len(),
            PROTOCOL_VERSIONS.len()
        );
    }
}
