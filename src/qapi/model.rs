//! The `GenerateAssistantResponse` request and its response events, as the
//! service's awsJson 1.0 protocol spells them (camelCase JSON).
//!
//! Optional fields are left out of requests when unset; response events
//! keep fields qbox does not model in `extra`, and unknown event types are
//! kept raw, so a service that adds events never breaks a client.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The request body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateAssistantResponseRequest {
    pub conversation_state: ConversationState,
    /// Sent for IAM Identity Center logins; Builder ID logins have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_arn: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversationState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    #[serde(default)]
    pub history: Vec<ChatMessage>,
    pub current_message: ChatMessage,
    pub chat_trigger_type: ChatTriggerType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ChatTriggerType {
    Manual,
}

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ChatMessage {
    UserInputMessage(UserInputMessage),
    AssistantResponseMessage(AssistantResponseMessage),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserInputMessage {
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_input_message_context: Option<UserInputMessageContext>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_intent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<Vec<ImageBlock>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserInputMessageContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_state: Option<EnvState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_state: Option<GitState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_results: Option<Vec<ToolResult>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operating_system: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_working_directory: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GitState {
    pub status: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolResult {
    pub tool_use_id: String,
    pub content: Vec<ToolResultContent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ToolResultStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ToolResultContent {
    Text(String),
    Json(Value),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ToolResultStatus {
    Success,
    Error,
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tool {
    pub tool_specification: ToolSpecification,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolSpecification {
    pub name: String,
    pub description: String,
    pub input_schema: ToolInputSchema,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolInputSchema {
    pub json: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageBlock {
    /// `png`, `jpeg`, `gif` or `webp`.
    pub format: String,
    pub source: ImageSource,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageSource {
    /// Base64 of the image bytes.
    pub bytes: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssistantResponseMessage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_uses: Option<Vec<ToolUse>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolUse {
    pub tool_use_id: String,
    pub name: String,
    pub input: Value,
}

impl GenerateAssistantResponseRequest {
    /// A single-turn request with `prompt`, as the CLI sends it.
    pub fn prompt(prompt: &str, model_id: Option<String>, conversation_id: Option<String>) -> Self {
        Self {
            conversation_state: ConversationState {
                conversation_id,
                history: Vec::new(),
                current_message: ChatMessage::UserInputMessage(UserInputMessage {
                    content: prompt.to_owned(),
                    origin: Some("CLI".to_owned()),
                    model_id,
                    ..UserInputMessage::default()
                }),
                chat_trigger_type: ChatTriggerType::Manual,
            },
            profile_arn: None,
        }
    }
}

/// `messageMetadataEvent`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageMetadataEvent {
    #[serde(default)]
    pub conversation_id: Option<String>,
    #[serde(default)]
    pub utterance_id: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `assistantResponseEvent`: a piece of the answer's text. A missing
/// `content` is empty, as in the CLI's generated client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssistantResponseEvent {
    #[serde(default)]
    pub content: String,
    #[serde(default)]
    pub model_id: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `toolUseEvent`: `input` is a fragment; fragments of one `toolUseId`
/// concatenate until the event with `stop: true`. A missing `toolUseId` or
/// `name` is empty, as in the CLI's generated client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolUseEvent {
    #[serde(default)]
    pub tool_use_id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub input: Option<String>,
    #[serde(default)]
    pub stop: Option<bool>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `codeEvent` (a missing `content` is empty).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CodeEvent {
    #[serde(default)]
    pub content: String,
}

/// `invalidStateEvent`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvalidStateEvent {
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

/// One event of the response stream.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatEvent {
    MessageMetadata(MessageMetadataEvent),
    AssistantResponse(AssistantResponseEvent),
    ToolUse(ToolUseEvent),
    Code(CodeEvent),
    InvalidState(InvalidStateEvent),
    /// Events carried as JSON without a dedicated type: reasoning content,
    /// code references, web links, follow-up prompts, citations, metadata,
    /// metering, intents, interaction components, tool results, dry runs.
    Json {
        event_type: String,
        payload: Value,
    },
    /// An event type this version of qbox does not know (payload kept raw).
    Unknown {
        event_type: String,
        payload: Vec<u8>,
    },
}

/// Event types that are kept as JSON.
const JSON_EVENTS: [&str; 11] = [
    "reasoningContentEvent",
    "codeReferenceEvent",
    "supplementaryWebLinksEvent",
    "followupPromptEvent",
    "citationEvent",
    "metadataEvent",
    "meteringEvent",
    "intentsEvent",
    "interactionComponentsEvent",
    "toolResultEvent",
    "dryRunSucceedEvent",
];

impl ChatEvent {
    /// Parses an event frame's payload by its `:event-type`.
    pub fn parse(event_type: &str, payload: &[u8]) -> Result<Self, serde_json::Error> {
        Ok(match event_type {
            "messageMetadataEvent" => Self::MessageMetadata(serde_json::from_slice(payload)?),
            "assistantResponseEvent" => Self::AssistantResponse(serde_json::from_slice(payload)?),
            "toolUseEvent" => Self::ToolUse(serde_json::from_slice(payload)?),
            "codeEvent" => Self::Code(serde_json::from_slice(payload)?),
            "invalidStateEvent" => Self::InvalidState(serde_json::from_slice(payload)?),
            known if JSON_EVENTS.contains(&known) => Self::Json {
                event_type: known.to_owned(),
                payload: serde_json::from_slice(payload)?,
            },
            other => Self::Unknown {
                event_type: other.to_owned(),
                payload: payload.to_vec(),
            },
        })
    }

    /// The wire name of the event.
    pub fn event_type(&self) -> &str {
        match self {
            Self::MessageMetadata(_) => "messageMetadataEvent",
            Self::AssistantResponse(_) => "assistantResponseEvent",
            Self::ToolUse(_) => "toolUseEvent",
            Self::Code(_) => "codeEvent",
            Self::InvalidState(_) => "invalidStateEvent",
            Self::Json { event_type, .. } | Self::Unknown { event_type, .. } => event_type,
        }
    }

    /// The answer text this event carries, if any.
    pub fn text(&self) -> Option<&str> {
        match self {
            Self::AssistantResponse(e) => Some(&e.content),
            Self::Code(e) => Some(&e.content),
            _ => None,
        }
    }

    /// The event as one JSON object: `{"type": ..., "payload": ...}`.
    pub fn to_json(&self) -> Value {
        let payload = match self {
            Self::MessageMetadata(e) => serde_json::to_value(e),
            Self::AssistantResponse(e) => serde_json::to_value(e),
            Self::ToolUse(e) => serde_json::to_value(e),
            Self::Code(e) => serde_json::to_value(e),
            Self::InvalidState(e) => serde_json::to_value(e),
            Self::Json { payload, .. } => Ok(payload.clone()),
            Self::Unknown { payload, .. } => Ok(serde_json::from_slice(payload)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(payload).into_owned()))),
        }
        .unwrap_or(Value::Null);
        serde_json::json!({"type": self.event_type(), "payload": payload})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_shape_matches_the_protocol() {
        let mut request =
            GenerateAssistantResponseRequest::prompt("hi", Some("claude-x".into()), None);
        request.profile_arn = Some("arn:aws:codewhisperer:us-east-1:1:profile/P".into());
        let json = serde_json::to_value(&request).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "conversationState": {
                    "history": [],
                    "currentMessage": {"userInputMessage": {"content": "hi", "origin": "CLI", "modelId": "claude-x"}},
                    "chatTriggerType": "MANUAL"
                },
                "profileArn": "arn:aws:codewhisperer:us-east-1:1:profile/P"
            })
        );
        let back: GenerateAssistantResponseRequest = serde_json::from_value(json).unwrap();
        assert_eq!(back, request);
    }

    #[test]
    fn tools_and_results_serialize_as_documented() {
        let context = UserInputMessageContext {
            tools: Some(vec![Tool {
                tool_specification: ToolSpecification {
                    name: "read".into(),
                    description: "reads".into(),
                    input_schema: ToolInputSchema {
                        json: serde_json::json!({"type": "object"}),
                    },
                },
            }]),
            tool_results: Some(vec![ToolResult {
                tool_use_id: "t1".into(),
                content: vec![ToolResultContent::Text("ok".into())],
                status: Some(ToolResultStatus::Success),
            }]),
            ..UserInputMessageContext::default()
        };
        let json = serde_json::to_value(&context).unwrap();
        assert_eq!(
            json["tools"][0]["toolSpecification"]["inputSchema"]["json"]["type"],
            "object"
        );
        assert_eq!(json["toolResults"][0]["content"][0]["text"], "ok");
        assert_eq!(json["toolResults"][0]["status"], "success");
    }

    #[test]
    fn events_parse_and_unknown_ones_are_kept() {
        let event = ChatEvent::parse(
            "assistantResponseEvent",
            br#"{"content":"Hel","newField":1}"#,
        )
        .unwrap();
        assert_eq!(event.text(), Some("Hel"));
        let unknown = ChatEvent::parse("brandNewEvent", b"{\"x\":1}").unwrap();
        assert_eq!(unknown.to_json()["payload"]["x"], 1);
        let tool = ChatEvent::parse(
            "toolUseEvent",
            br#"{"toolUseId":"t","name":"n","input":"{\"a\"","stop":false}"#,
        )
        .unwrap();
        assert!(matches!(
            tool,
            ChatEvent::ToolUse(ToolUseEvent {
                stop: Some(false),
                ..
            })
        ));
        assert!(ChatEvent::parse("assistantResponseEvent", b"not json").is_err());
    }

    #[test]
    fn missing_fields_default_as_upstream() {
        let text = ChatEvent::parse("assistantResponseEvent", b"{}").unwrap();
        assert_eq!(text.text(), Some(""));
        let code = ChatEvent::parse("codeEvent", b"{}").unwrap();
        assert_eq!(code.text(), Some(""));
        let tool = ChatEvent::parse("toolUseEvent", br#"{"input":"{}","stop":true}"#).unwrap();
        assert!(matches!(
            tool,
            ChatEvent::ToolUse(ToolUseEvent { ref tool_use_id, ref name, .. }) if tool_use_id.is_empty() && name.is_empty()
        ));
    }
}
