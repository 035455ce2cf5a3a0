//! `q-developer-agent`: hands a task to the Kiro CLI (or the legacy `q`)
//! through [`crate::agent`], which knows no MCP types. Its parameters are
//! [`AgentParams`]; offered only when `ENABLE_ADDITIONAL_TOOLS` names it.

use std::sync::LazyLock;
use std::task::{Context, Poll};

use rmcp::RoleServer;
use rmcp::model::{CallToolResult, JsonObject, Tool, ToolAnnotations};
use rmcp::service::RequestContext;
use tokio::sync::mpsc;

use super::params::{self, Mistake};
use super::progress::{self, ProgressSource};
use super::{CallFuture, Sidecar, ToolRow, text_result};
use crate::agent::args::AgentParams;
use crate::agent::{AgentArgs, Progress, TOOL_NAME};

pub const ROW: ToolRow = ToolRow {
    tool,
    offered,
    call,
};

/// Its hints: it changes things (the CLI writes its conversation and, when
/// a call trusts its tools, files and commands of the model's choosing), so
/// it is neither read-only nor idempotent, and destructive, since any call
/// may trust the CLI's tools; open-world because the CLI talks to Amazon Q
/// and whatever its tools reach.
fn tool() -> &'static Tool {
    static TOOL: LazyLock<Tool> = LazyLock::new(|| {
        const TITLE: &str = "Amazon Q Developer agent";
        Tool::new(
            TOOL_NAME,
            "Hand a task to Amazon Q Developer: runs `kiro-cli chat --no-interactive` (or the legacy `q chat`) in the \
             sidecar's working directory and returns its answer. Q may use its own tools (read files, run \
             commands) when trusted with `trust-tools` or `yolo-mode`. Progress notifications carry the \
             output as it appears.",
            params::input_schema::<AgentParams>(),
        )
        .with_title(TITLE)
        // The title also goes into the annotations, where hosts of the
        // 2025-03-26 revision (which has no `title` on a tool) look for it.
        .with_annotations(
            ToolAnnotations::with_title(TITLE)
                .read_only(false)
                .destructive(true)
                .idempotent(false)
                .open_world(true),
        )
    });
    &TOOL
}

fn offered(state: &Sidecar) -> Result<(), &'static str> {
    if state.agent.config().enabled {
        return Ok(());
    }
    Err(
        "the tool q-developer-agent is not enabled on this server. Start the sidecar with \
         ENABLE_ADDITIONAL_TOOLS=q-developer-agent to enable it (it runs the Kiro CLI, which can \
         read files and run commands when trusted).",
    )
}

fn call<'a>(
    state: &'a Sidecar,
    arguments: Option<JsonObject>,
    context: &'a RequestContext<RoleServer>,
) -> CallFuture<'a> {
    Box::pin(run(state, arguments, context))
}

/// The arguments as the agent takes them, or the call's error text.
fn agent_args(arguments: Option<JsonObject>) -> Result<AgentArgs, String> {
    let refused = |why: &dyn std::fmt::Display| format!("invalid arguments: {why}");
    let params =
        params::parse::<AgentParams>(&tool().input_schema, arguments).map_err(|mistake| {
            match mistake {
                Mistake::Missing { name } => refused(&format!(
                    "missing required parameter `{name}` (a non-empty string)"
                )),
                other => refused(&other),
            }
        })?;
    AgentArgs::try_from(params).map_err(|err| refused(&err))
}

/// The CLI's output lines, relayed as they come (the runner never waits on
/// the client).
impl ProgressSource for mpsc::UnboundedReceiver<Progress> {
    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Option<String>> {
        self.poll_recv(cx).map(|update| {
            Some(match update? {
                Progress::Line(line) => line,
                Progress::StillRunning { elapsed } => {
                    format!("still running ({}s)", elapsed.as_secs())
                }
            })
        })
    }
}

async fn run(
    state: &Sidecar,
    arguments: Option<JsonObject>,
    context: &RequestContext<RoleServer>,
) -> CallToolResult {
    let args = match agent_args(arguments) {
        Ok(args) => args,
        Err(message) => return text_result(message, true),
    };
    let (progress, relay) = progress::relay(context, mpsc::unbounded_channel::<Progress>);
    let cancelled = context.ct.clone().cancelled_owned();
    // The runner does its own store work on the blocking pool.
    let outcome = state
        .agent
        .run(&args, &state.cwd, progress, cancelled)
        .await;
    relay.finish().await;
    text_result(outcome.text, outcome.is_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn parse(value: &Value) -> Result<AgentArgs, String> {
        agent_args(value.as_object().cloned())
    }

    #[test]
    fn every_mistake_has_its_message() {
        let cases = [
            (
                json!({}),
                "invalid arguments: missing required parameter `prompt` (a non-empty string)",
            ),
            (
                json!({"prompt": null}),
                "invalid arguments: missing required parameter `prompt` (a non-empty string)",
            ),
            (
                json!({"prompt": "  \n"}),
                "invalid arguments: parameter `prompt` is empty; give the task for Amazon Q in words",
            ),
            (
                json!({"prompt": 3}),
                "invalid arguments: parameter `prompt` must be a string, got a number",
            ),
            (
                json!({"prompt": "x", "resume": "yes"}),
                "invalid arguments: parameter `resume` must be a boolean, got a string",
            ),
            (
                json!({"prompt": "x", "promt": "y"}),
                "invalid arguments: unknown parameter `promt`; known: prompt, resume, agent, \
                 override-model, yolo-mode, trust-tools, verbose",
            ),
        ];
        for (arguments, message) in cases {
            assert_eq!(parse(&arguments), Err(message.to_owned()), "{arguments}");
        }
        assert_eq!(
            parse(&json!({"prompt": "hi", "resume": null}))
                .unwrap()
                .prompt,
            "hi"
        );
    }

    #[test]
    fn the_schema_names_every_parameter_with_its_type() {
        let schema = &tool().input_schema;
        let types: Vec<(&str, &str)> = schema["properties"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(name, p)| (name.as_str(), p["type"].as_str().unwrap()))
            .collect();
        assert_eq!(
            types,
            [
                ("prompt", "string"),
                ("resume", "boolean"),
                ("agent", "string"),
                ("override-model", "string"),
                ("yolo-mode", "boolean"),
                ("trust-tools", "string"),
                ("verbose", "boolean"),
            ]
        );
        assert_eq!(schema["required"], json!(["prompt"]));
    }
}
