//! The sidecar's MCP tools, one file each, and [`TOOLS`], the one table
//! that `tools/list`, `tools/call`, the "this server offers" text of an
//! unknown tool's error and the published metadata ([`super::registry`]) all
//! read.
//!
//! A tool is a [`ToolRow`]: its `Tool` as `tools/list` shows it, whose
//! `inputSchema` is derived from the tool's parameter type ([`params`]);
//! whether this server offers it; and its call, which answers every
//! failure as an `isError` result. Progress goes through [`progress`].
//! Adding a tool is a file here and its row in [`TOOLS`].

pub mod agent;
pub mod chat;
pub mod params;
pub mod progress;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use rmcp::RoleServer;
use rmcp::model::{CallToolResult, ContentBlock, JsonObject, Tool};
use rmcp::service::RequestContext;

use crate::agent::AgentRunner;
use crate::qapi::QClient;

/// What every tool call shares, for the life of the server.
#[derive(Debug)]
pub struct Sidecar {
    pub agent: AgentRunner,
    /// The chat client, or why there is none (said in each `q-chat` result).
    pub chat: Result<QClient, String>,
    /// Where agent calls run (the CLI keeps one conversation per directory).
    pub cwd: PathBuf,
}

/// One running tool call.
pub type CallFuture<'a> = Pin<Box<dyn Future<Output = CallToolResult> + Send + 'a>>;

/// One tool of the table.
pub struct ToolRow {
    /// The tool as `tools/list` shows it (built once per process).
    pub tool: fn() -> &'static Tool,
    /// `Err(why)` when this server does not offer the tool (settings fixed
    /// at start): it is left out of `tools/list`, and a call to it gets
    /// `why` as an error result instead of "unknown tool".
    pub offered: fn(&Sidecar) -> Result<(), &'static str>,
    /// Runs one call of an offered tool with the request's arguments.
    pub call: for<'a> fn(
        &'a Sidecar,
        Option<JsonObject>,
        &'a RequestContext<RoleServer>,
    ) -> CallFuture<'a>,
}

/// Every tool, in the order `tools/list` answers them.
pub static TOOLS: &[ToolRow] = &[chat::ROW, agent::ROW];

impl ToolRow {
    /// The tool's name, as clients call it.
    pub fn name(&self) -> &'static str {
        &(self.tool)().name
    }
}

/// Every tool's name, in table order.
pub fn tool_names() -> Vec<&'static str> {
    TOOLS.iter().map(ToolRow::name).collect()
}

/// For [`ToolRow::offered`]: a tool every server offers.
pub fn always_offered(_: &Sidecar) -> Result<(), &'static str> {
    Ok(())
}

/// The row of the tool called `name`, offered or not.
pub fn find(name: &str) -> Option<&'static ToolRow> {
    TOOLS.iter().find(|row| row.name() == name)
}

/// The rows this server offers, in table order.
pub fn offered(state: &Sidecar) -> impl Iterator<Item = &'static ToolRow> + '_ {
    TOOLS.iter().filter(|row| (row.offered)(state).is_ok())
}

/// A result of one text block.
pub fn text_result(text: impl Into<String>, is_error: bool) -> CallToolResult {
    let content = vec![ContentBlock::text(text.into())];
    if is_error {
        CallToolResult::error(content)
    } else {
        CallToolResult::success(content)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn every_row_has_its_own_name_and_an_object_schema_that_refuses_unknown_parameters() {
        let names: BTreeSet<&str> = TOOLS.iter().map(ToolRow::name).collect();
        assert_eq!(names.len(), TOOLS.len(), "two rows share a name");
        for row in TOOLS {
            let tool = (row.tool)();
            assert!(find(row.name()).is_some_and(|found| std::ptr::eq(found, row)));
            let schema = &tool.input_schema;
            assert_eq!(schema["type"], "object", "{}", row.name());
            assert_eq!(schema["additionalProperties"], false, "{}", row.name());
            let properties = schema["properties"].as_object().unwrap();
            assert!(!properties.is_empty(), "{}", row.name());
            for (name, property) in properties {
                let description = property["description"].as_str().unwrap_or_default();
                // A doc comment wrapped in the source would break the text.
                assert!(
                    !description.is_empty() && !description.contains('\n'),
                    "{}: parameter `{name}`: {description:?}",
                    row.name()
                );
            }
        }
        assert!(find("no-such-tool").is_none());
    }
}
