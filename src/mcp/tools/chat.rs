//! `q-chat`: asks Amazon Q through qbox's own streaming client
//! ([`crate::qapi`]); partial text arrives as progress, the answer as text
//! and as structured content ([`ChatResult`]). Its parameters are
//! [`ChatParams`].

use std::collections::BTreeMap;
use std::sync::LazyLock;

use rmcp::RoleServer;
use rmcp::model::{CallToolResult, JsonObject, Tool, ToolAnnotations};
use rmcp::service::RequestContext;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::params::{self, Mistake};
use super::{CallFuture, Sidecar, ToolRow, always_offered, progress, text_result};
use crate::exit::Diagnose;
use crate::qapi::ChatEvent;

/// The tool's name.
pub const CHAT_TOOL: &str = "q-chat";

pub const ROW: ToolRow = ToolRow {
    tool,
    offered: always_offered,
    call,
};

/// The parameters of one `q-chat` call.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ChatParams {
    /// The question or task (required, non-empty).
    pub prompt: String,
    // One line each: a doc comment's line breaks would reach the description.
    /// Continue this conversation: the conversationId of an earlier result. The earlier turns go to Amazon Q as history; an unknown id is an error.
    pub conversation_id: Option<String>,
    /// Model id to use instead of the default.
    pub model: Option<String>,
}

/// It only asks Amazon Q (read-only, not destructive), an outside service
/// whose answers change (open-world). Its `outputSchema` is derived from
/// [`ChatResult`], the type its structured content is serialised from, so
/// the two cannot drift apart.
fn tool() -> &'static Tool {
    static TOOL: LazyLock<Tool> = LazyLock::new(|| {
        const TITLE: &str = "Ask Amazon Q";
        Tool::new(
            CHAT_TOOL,
            "Ask Amazon Q a question through qbox's native client (no CLI, runs nothing locally). Returns \
             the answer, the conversation id to continue with, and any tool-use or code-reference events \
             as structured content. Partial text arrives as progress notifications.",
            params::input_schema::<ChatParams>(),
        )
        .with_title(TITLE)
        .with_output_schema::<ChatResult>()
        .with_annotations(
            ToolAnnotations::with_title(TITLE)
                .read_only(true)
                .destructive(false)
                .open_world(true),
        )
    });
    &TOOL
}

fn call<'a>(
    state: &'a Sidecar,
    arguments: Option<JsonObject>,
    context: &'a RequestContext<RoleServer>,
) -> CallFuture<'a> {
    Box::pin(run(state, arguments, context))
}

/// The parameters with a prompt that has words, or the call's error text.
fn chat_params(arguments: Option<JsonObject>) -> Result<ChatParams, String> {
    const NO_PROMPT: &str =
        "invalid arguments: parameter `prompt` is required and must not be empty";
    match params::parse::<ChatParams>(&tool().input_schema, arguments) {
        Ok(params) if params.prompt.trim().is_empty() => Err(NO_PROMPT.to_owned()),
        Ok(params) => Ok(params),
        Err(Mistake::Missing { .. }) => Err(NO_PROMPT.to_owned()),
        Err(Mistake::WrongType { name, expected, .. }) => Err(format!(
            "invalid arguments: parameter `{name}` must be {expected}"
        )),
        Err(other) => Err(format!("invalid arguments: {other}")),
    }
}

async fn run(
    state: &Sidecar,
    arguments: Option<JsonObject>,
    context: &RequestContext<RoleServer>,
) -> CallToolResult {
    let ChatParams {
        prompt,
        conversation_id,
        model,
    } = match chat_params(arguments) {
        Ok(params) => params,
        Err(message) => return text_result(message, true),
    };
    let client = match &state.chat {
        Ok(client) => client,
        Err(problem) => return text_result(problem.clone(), true),
    };
    // Bounded: a client that reads progress slower than Amazon Q answers
    // slows the stream down instead of piling the answer up in memory.
    let (text_tx, relay) = progress::relay(context, progress::bounded);
    let answer = async {
        // The client reads the store on the blocking pool, so a store
        // locked by the CLI stalls only this call.
        let mut turn = client
            .chat(&prompt, model, conversation_id.as_deref())
            .await?;
        let mut collected = ChatAnswer {
            conversation_id: turn.conversation_id().to_owned(),
            ..ChatAnswer::default()
        };
        while let Some(event) = turn.next_event().await? {
            if let (Some(text_tx), Some(text)) = (&text_tx, event.text()) {
                let _ = text_tx.send(text.to_owned()).await;
            }
            collected.add(event);
        }
        // The answer the turn kept for the conversation, moved, not copied.
        collected.text = turn.take_answer();
        Ok::<_, crate::qapi::ApiError>(collected)
    };
    let result = tokio::select! {
        result = answer => result,
        () = context.ct.cancelled() => return text_result("cancelled", true),
    };
    drop(text_tx);
    relay.finish().await;
    match result {
        Ok(answer) => {
            let mut answer = answer.into_result();
            let structured = match serde_json::to_value(&answer) {
                Ok(structured) => structured,
                // Not reachable: the type holds strings and JSON values only.
                Err(err) => return text_result(format!("cannot encode the answer: {err}"), true),
            };
            let mut result = text_result(std::mem::take(&mut answer.answer), false);
            result.structured_content = Some(structured);
            result
        }
        Err(err) => {
            let hint = err
                .hint()
                .map(|h| format!("\nhint: {h}"))
                .unwrap_or_default();
            text_result(format!("{}{hint}", crate::exit::chain(&err)), true)
        }
    }
}

/// `q-chat`'s structured content. The tool's `outputSchema` is this type's
/// JSON Schema (for what it serialises to), and every answer is serialised
/// from it: change a field here and both change together.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChatResult {
    /// The answer's text (also the result's text content).
    pub answer: String,
    /// The conversation this turn belongs to: pass it as `conversation-id` to continue it.
    pub conversation_id: String,
    /// The tools Amazon Q asked to use, in the order it first named them.
    pub tool_uses: Vec<ChatToolUse>,
    /// Code references (licence and repository of suggested code), as Amazon Q sent them.
    pub code_references: Vec<Value>,
    /// Follow-up prompts Amazon Q suggested, as it sent them.
    pub followup_prompts: Vec<Value>,
}

/// One tool use Amazon Q asked for in a `q-chat` answer.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChatToolUse {
    /// Amazon Q's id for this tool use.
    pub tool_use_id: String,
    /// The tool's name.
    pub name: String,
    /// The tool's input: the JSON Amazon Q streamed, or the raw text when it is not JSON.
    pub input: Value,
}

/// What `q-chat` gathers from the event stream.
#[derive(Debug, Default)]
struct ChatAnswer {
    text: String,
    conversation_id: String,
    tool_uses: BTreeMap<String, (String, String)>,
    tool_use_order: Vec<String>,
    code_references: Vec<Value>,
    followups: Vec<Value>,
}

impl ChatAnswer {
    /// Everything but the text, which the turn keeps (see
    /// [`crate::qapi::ChatTurn::take_answer`]).
    fn add(&mut self, event: ChatEvent) {
        match event {
            ChatEvent::ToolUse(tool) => {
                if !self.tool_uses.contains_key(&tool.tool_use_id) {
                    self.tool_use_order.push(tool.tool_use_id.clone());
                }
                let entry = self
                    .tool_uses
                    .entry(tool.tool_use_id)
                    .or_insert((tool.name, String::new()));
                entry.1.push_str(tool.input.as_deref().unwrap_or(""));
            }
            ChatEvent::Json {
                event_type,
                payload,
            } if event_type == "codeReferenceEvent" => {
                self.code_references.push(payload);
            }
            ChatEvent::Json {
                event_type,
                payload,
            } if event_type == "followupPromptEvent" => {
                self.followups.push(payload);
            }
            _ => {}
        }
    }

    fn into_result(mut self) -> ChatResult {
        let tool_uses = self
            .tool_use_order
            .iter()
            .filter_map(|id| {
                let (name, input) = self.tool_uses.remove(id)?;
                let input = serde_json::from_str::<Value>(&input).unwrap_or(Value::String(input));
                Some(ChatToolUse {
                    tool_use_id: id.clone(),
                    name,
                    input,
                })
            })
            .collect();
        ChatResult {
            answer: self.text,
            conversation_id: self.conversation_id,
            tool_uses,
            code_references: self.code_references,
            followup_prompts: self.followups,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qapi::model::ToolUseEvent;
    use serde_json::json;

    fn tool_use(id: &str, name: &str, input: &str) -> ChatEvent {
        ChatEvent::ToolUse(
            serde_json::from_value::<ToolUseEvent>(
                json!({"toolUseId": id, "name": name, "input": input}),
            )
            .unwrap(),
        )
    }

    #[test]
    fn the_structured_content_has_the_fields_the_output_schema_names() {
        let mut answer = ChatAnswer {
            text: "an answer".into(),
            conversation_id: "c-1".into(),
            ..ChatAnswer::default()
        };
        answer.add(tool_use("t1", "fs_read", "{\"path\":"));
        answer.add(tool_use("t2", "shell", "not json"));
        answer.add(tool_use("t1", "fs_read", "\"a\"}"));
        answer.add(ChatEvent::Json {
            event_type: "followupPromptEvent".into(),
            payload: json!({"followupPrompt": {"content": "next?"}}),
        });
        let value = serde_json::to_value(answer.into_result()).unwrap();
        assert_eq!(
            value,
            json!({
                "answer": "an answer",
                "conversationId": "c-1",
                "toolUses": [
                    {"toolUseId": "t1", "name": "fs_read", "input": {"path": "a"}},
                    {"toolUseId": "t2", "name": "shell", "input": "not json"}
                ],
                "codeReferences": [],
                "followupPrompts": [{"followupPrompt": {"content": "next?"}}]
            })
        );
        let schema = tool()
            .output_schema
            .clone()
            .expect("q-chat has an outputSchema");
        assert_eq!(schema["type"], "object");
        let properties: Vec<&String> = schema["properties"].as_object().unwrap().keys().collect();
        let fields: Vec<&String> = value.as_object().unwrap().keys().collect();
        assert_eq!(properties, fields);
        assert_eq!(schema["required"], json!(fields));
    }
}
