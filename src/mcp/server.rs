//! The rmcp server handler: lists and calls the tools of
//! [`super::tools::TOOLS`] that this server offers, and says which protocol
//! revisions the server speaks.

use std::borrow::Cow;
use std::sync::Arc;

use rmcp::model::{
    CacheScope, CallToolRequestParams, CallToolResponse, Implementation, ListToolsResult,
    PaginatedRequestParams, ProtocolVersion, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};

use super::tools::{self, Sidecar, ToolRow, text_result};

/// The protocol revisions the server speaks, oldest first. Each one is
/// exercised by a test (`tests/integration/mcp_versions.rs` and the Python
/// SDK's interop test), and the list is pinned here instead of taken from
/// rmcp, so that a newer rmcp cannot make the server advertise a revision
/// no test has seen. Adding one means adding its test.
pub const PROTOCOL_VERSIONS: &[ProtocolVersion] = &[
    ProtocolVersion::V_2024_11_05,
    ProtocolVersion::V_2025_03_26,
    ProtocolVersion::V_2025_06_18,
    ProtocolVersion::V_2025_11_25,
    ProtocolVersion::V_2026_07_28,
];

/// The newest revision: no handshake, every request carries its version
/// (and the client's identity) in `_meta`; `server/discover` finds it.
pub const NEWEST_REVISION: ProtocolVersion = ProtocolVersion::V_2026_07_28;

/// The newest revision with the `initialize` handshake: what `initialize`
/// answers a client that asks for a revision the server does not speak.
pub const NEWEST_HANDSHAKE_REVISION: ProtocolVersion = ProtocolVersion::V_2025_11_25;

/// How long a client may keep the tool list (the `ttlMs` of `tools/list`,
/// 2026-07-28). The list is fixed for the life of the process (the agent
/// tool is enabled at start or not at all), so the hint is long; a server
/// restarted with other settings is seen by a client within this time, or
/// at once when it reconnects or a call fails.
pub const TOOL_LIST_TTL_MS: u64 = 60 * 60 * 1000;

/// One MCP session's handler (cheap to clone; the state is shared).
#[derive(Debug, Clone)]
pub struct SidecarHandler {
    pub state: Arc<Sidecar>,
}

impl ServerHandler for SidecarHandler {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_protocol_version(NEWEST_HANDSHAKE_REVISION)
            .with_server_info(Implementation::new("qbox-sidecar", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Amazon Q Developer through qbox. `q-chat` asks Amazon Q directly; `q-developer-agent` \
                 (when enabled) hands a task to the Kiro CLI.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let tools = tools::offered(&self.state)
            .map(|row| (row.tool)().clone())
            .collect();
        // The same list for every caller and token: "public" lets a shared
        // gateway cache it (it holds no user data).
        Ok(ListToolsResult::with_all_items(tools)
            .with_ttl_ms(TOOL_LIST_TTL_MS)
            .with_cache_scope(CacheScope::Public))
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Borrowed(PROTOCOL_VERSIONS)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let Some(row) = tools::find(&request.name) else {
            let offered: Vec<&str> = tools::offered(&self.state).map(ToolRow::name).collect();
            return Err(ErrorData::invalid_params(
                format!(
                    "unknown tool `{}`; this server offers: {}",
                    request.name,
                    offered.join(", ")
                ),
                None,
            ));
        };
        let result = match (row.offered)(&self.state) {
            Ok(()) => (row.call)(&self.state, request.arguments, &context).await,
            Err(why) => text_result(why, true),
        };
        Ok(result.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pinned_revisions_are_known_to_rmcp_and_name_both_newest_ones() {
        for version in PROTOCOL_VERSIONS {
            assert!(
                ProtocolVersion::KNOWN_VERSIONS.contains(version),
                "{version}"
            );
        }
        assert!(PROTOCOL_VERSIONS.contains(&NEWEST_REVISION));
        assert!(PROTOCOL_VERSIONS.contains(&NEWEST_HANDSHAKE_REVISION));
        assert!(!NEWEST_REVISION.has_initialize());
        assert!(NEWEST_HANDSHAKE_REVISION.has_initialize());
        let newest_handshake = PROTOCOL_VERSIONS
            .iter()
            .filter(|v| v.has_initialize())
            .max_by(|a, b| a.as_str().cmp(b.as_str()));
        assert_eq!(newest_handshake, Some(&NEWEST_HANDSHAKE_REVISION));
    }
}
