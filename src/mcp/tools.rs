//! The sidecar's tools: `q-developer-agent` (drives the CLI) and `q-chat`
//! (qbox's own streaming client), with progress and cancellation.

use std::collections::BTreeMap;
use std::sync::Arc;

use rmcp::model::{
    CallToolResult, ContentBlock, JsonObject, ProgressNotificationParam, ProgressToken, Tool,
    ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::{Peer, RoleServer};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::Sidecar;
use crate::agent::{AgentArgs, Progress, TOOL_NAME};
use crate::exit::Diagnose;
use crate::qapi::{ChatEvent, QClient};

/// The native chat tool's name.
pub const CHAT_TOOL: &str = "q-chat";

fn schema(value: Value) -> Arc<JsonObject> {
    Arc::new(match value {
        Value::Object(map) => map,
        _ => JsonObject::new(),
    })
}

/// `q-developer-agent`. Its hints: it changes things (the CLI writes its
/// conversation and, when a call trusts its tools, files and commands of
/// the model's choosing), so it is neither read-only nor idempotent, and
/// destructive, since any call may trust the CLI's tools; open-world
/// because the CLI talks to Amazon Q and whatever its tools reach.
pub fn agent_tool() -> Tool {
    const TITLE: &str = "Amazon Q Developer agent";
    Tool::new(
        TOOL_NAME,
        "Hand a task to Amazon Q Developer: runs `kiro-cli chat --no-interactive` (or the legacy `q chat`) in the \
         sidecar's working directory and returns its answer. Q may use its own tools (read files, run \
         commands) when trusted with `trust-tools` or `yolo-mode`. Progress notifications carry the \
         output as it appears.",
        Arc::new(crate::agent::args::input_schema()),
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
}

/// `q-chat`: it only asks Amazon Q (read-only, not destructive), an
/// outside service whose answers change (open-world). Its `outputSchema`
/// is derived from [`ChatResult`], the type its structured content is
/// serialised from, so the two cannot drift apart.
pub fn chat_tool() -> Tool {
    const TITLE: &str = "Ask Amazon Q";
    Tool::new(
        CHAT_TOOL,
        "Ask Amazon Q a question through qbox's native client (no CLI, runs nothing locally). Returns \
         the answer, the conversation id to continue with, and any tool-use or code-reference events \
         as structured content. Partial text arrives as progress notifications.",
        schema(json!({
            "type": "object",
            "properties": {
                "prompt": {"type": "string", "description": "The question or task (required, non-empty)."},
                "conversation-id": {"type": "string", "description": "Continue this conversation: the conversationId of an earlier result. The earlier turns go to Amazon Q as history; an unknown id is an error."},
                "model": {"type": "string", "description": "Model id to use instead of the default."}
            },
            "required": ["prompt"],
            "additionalProperties": false
        })),
    )
    .with_title(TITLE)
    .with_output_schema::<ChatResult>()
    .with_annotations(
        ToolAnnotations::with_title(TITLE)
            .read_only(true)
            .destructive(false)
            .open_world(true),
    )
}

fn text_result(text: impl Into<String>, is_error: bool) -> CallToolResult {
    let content = vec![ContentBlock::text(text.into())];
    if is_error {
        CallToolResult::error(content)
    } else {
        CallToolResult::success(content)
    }
}

/// The longest progress token (as JSON) the sidecar echoes. Every progress
/// notification repeats the token, so a 3 MiB one would turn a call into
/// gigabytes sent back; real clients use a number or a short string.
pub const MAX_PROGRESS_TOKEN_BYTES: usize = 256;

/// The request's progress token, if it has one of at most
/// [`MAX_PROGRESS_TOKEN_BYTES`]. A longer one is refused by ignoring it: the
/// call runs and answers as usual, without progress notifications (a
/// warning in the log says why), over stdio and HTTP alike.
fn progress_token(context: &RequestContext<RoleServer>) -> Option<ProgressToken> {
    let token = context.meta.get_progress_token()?;
    let length = serde_json::to_string(&token).map_or(usize::MAX, |json| json.len());
    if length > MAX_PROGRESS_TOKEN_BYTES {
        tracing::warn!(
            "ignoring a progress token of {length} bytes (at most {MAX_PROGRESS_TOKEN_BYTES}): this call sends no progress notifications"
        );
        return None;
    }
    Some(token)
}

/// Progress messages waiting for the client before the sender waits.
const PROGRESS_QUEUE: usize = 64;

/// Sends progress notifications for `token` until the channel closes.
fn forward_progress(
    peer: Peer<RoleServer>,
    token: ProgressToken,
    mut updates: mpsc::Receiver<String>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut step = 0.0;
        while let Some(message) = updates.recv().await {
            step += 1.0;
            let _ = peer
                .notify_progress(
                    ProgressNotificationParam::new(token.clone(), step).with_message(message),
                )
                .await;
        }
    })
}

/// Runs `q-developer-agent`.
pub async fn call_agent(
    state: &Arc<Sidecar>,
    arguments: Option<&JsonObject>,
    context: &RequestContext<RoleServer>,
) -> CallToolResult {
    if !state.agent.config().enabled {
        return text_result(
            "the tool q-developer-agent is not enabled on this server. Start the sidecar with \
             ENABLE_ADDITIONAL_TOOLS=q-developer-agent to enable it (it runs the Kiro CLI, which can \
             read files and run commands when trusted).",
            true,
        );
    }
    let args = match AgentArgs::parse(arguments) {
        Ok(args) => args,
        Err(err) => return text_result(format!("invalid arguments: {err}"), true),
    };
    let (progress, forwarder) = match progress_token(context) {
        Some(token) => {
            let (lines_tx, mut lines_rx) = mpsc::unbounded_channel::<Progress>();
            let (text_tx, text_rx) = mpsc::channel::<String>(PROGRESS_QUEUE);
            let forwarder = forward_progress(context.peer.clone(), token, text_rx);
            tokio::spawn(async move {
                while let Some(update) = lines_rx.recv().await {
                    let text = match update {
                        Progress::Line(line) => line,
                        Progress::StillRunning { elapsed } => {
                            format!("still running ({}s)", elapsed.as_secs())
                        }
                    };
                    if text_tx.send(text).await.is_err() {
                        break;
                    }
                }
            });
            (Some(lines_tx), Some(forwarder))
        }
        None => (None, None),
    };
    let state = state.clone();
    let cancelled = context.ct.clone().cancelled_owned();
    // The runner does its own store work on the blocking pool.
    let outcome = state
        .agent
        .run(&args, &state.cwd, progress, cancelled)
        .await;
    if let Some(forwarder) = forwarder {
        // Every progress notification goes out before the result.
        let _ = forwarder.await;
    }
    text_result(outcome.text, outcome.is_error)
}

/// Runs `q-chat`.
pub async fn call_chat(
    client: Result<&QClient, &str>,
    arguments: Option<&JsonObject>,
    context: &RequestContext<RoleServer>,
) -> CallToolResult {
    let empty = JsonObject::new();
    let args = arguments.unwrap_or(&empty);
    if let Some(unknown) = args
        .keys()
        .find(|k| !["prompt", "conversation-id", "model"].contains(&k.as_str()))
    {
        return text_result(
            format!(
                "invalid arguments: unknown parameter `{unknown}`; known: prompt, conversation-id, model"
            ),
            true,
        );
    }
    let string = |name: &str| -> Result<Option<String>, String> {
        match args.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!(
                "invalid arguments: parameter `{name}` must be a string"
            )),
        }
    };
    let parsed = (|| {
        Ok::<_, String>((
            string("prompt")?,
            string("conversation-id")?,
            string("model")?,
        ))
    })();
    let (prompt, conversation_id, model) = match parsed {
        Ok(values) => values,
        Err(message) => return text_result(message, true),
    };
    let Some(prompt) = prompt.filter(|p| !p.trim().is_empty()) else {
        return text_result(
            "invalid arguments: parameter `prompt` is required and must not be empty",
            true,
        );
    };
    let client = match client {
        Ok(client) => client,
        Err(problem) => return text_result(problem.to_owned(), true),
    };
    // Bounded: a client that reads progress slower than Amazon Q answers
    // slows the stream down instead of piling the answer up in memory.
    let (text_tx, forwarder) = match progress_token(context) {
        Some(token) => {
            let (text_tx, text_rx) = mpsc::channel::<String>(PROGRESS_QUEUE);
            let forwarder = forward_progress(context.peer.clone(), token, text_rx);
            (Some(text_tx), Some(forwarder))
        }
        None => (None, None),
    };
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
    if let Some(forwarder) = forwarder {
        let _ = forwarder.await;
    }
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
        let tool = chat_tool();
        let schema = tool.output_schema.expect("q-chat has an outputSchema");
        assert_eq!(schema["type"], "object");
        let properties: Vec<&String> = schema["properties"].as_object().unwrap().keys().collect();
        let fields: Vec<&String> = value.as_object().unwrap().keys().collect();
        assert_eq!(properties, fields);
        assert_eq!(schema["required"], json!(fields));
    }
}
