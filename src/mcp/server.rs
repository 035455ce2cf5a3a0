//! The rmcp server handler: lists the enabled tools and routes calls.

use std::path::PathBuf;
use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, Implementation, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};

use super::tools::{self, CHAT_TOOL};
use crate::agent::{AgentRunner, TOOL_NAME};
use crate::qapi::QClient;

/// Shared state of every session.
#[derive(Debug)]
pub struct Sidecar {
    pub agent: AgentRunner,
    /// The chat client, or why there is none (said in each `q-chat` result).
    pub chat: Result<QClient, String>,
    /// Where agent calls run (the CLI keeps one conversation per directory).
    pub cwd: PathBuf,
}

/// One MCP session's handler (cheap to clone; the state is shared).
#[derive(Debug, Clone)]
pub struct SidecarHandler {
    pub state: Arc<Sidecar>,
}

impl ServerHandler for SidecarHandler {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("qbox-sidecar", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Amazon Q Developer through qbox. `q-chat` asks Amazon Q directly; `q-developer-agent` \
                 (when enabled) hands a task to the Amazon Q CLI.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let mut tools = vec![tools::chat_tool()];
        if self.state.agent.config().enabled {
            tools.push(tools::agent_tool());
        }
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let state = &self.state;
        let arguments = request.arguments.as_ref();
        let result = match request.name.as_ref() {
            TOOL_NAME => tools::call_agent(state, arguments, &context).await,
            CHAT_TOOL => {
                tools::call_chat(
                    state.chat.as_ref().map_err(String::as_str),
                    arguments,
                    &context,
                )
                .await
            }
            other => {
                let offered = if state.agent.config().enabled {
                    format!("{CHAT_TOOL}, {TOOL_NAME}")
                } else {
                    CHAT_TOOL.to_owned()
                };
                return Err(ErrorData::invalid_params(
                    format!("unknown tool `{other}`; this server offers: {offered}"),
                    None,
                ));
            }
        };
        Ok(result.into())
    }
}
