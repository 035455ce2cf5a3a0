//! Multi-turn conversations kept by the client, as the CLI keeps them
//! (`cli/chat/conversation.rs`): the client makes the conversation id (a
//! UUID), and every turn sends the whole history in
//! `conversationState.history`, alternating user and assistant messages and
//! starting with a user message. Nothing suggests the service remembers
//! turns by id, so a continued conversation must carry its own context.
//!
//! History is stored as user/assistant pairs, so it alternates by
//! construction and trimming can never split a pair.

use serde::{Deserialize, Serialize};

use crate::exit::{self, Diagnose};
use time::OffsetDateTime;

use super::model::{
    AssistantResponseMessage, ChatMessage, ChatTriggerType, ConversationState,
    GenerateAssistantResponseRequest, UserInputMessage,
};

/// The most messages the CLI sends as history (`MAX_CONVERSATION_STATE_HISTORY_LEN`).
pub const MAX_HISTORY_MESSAGES: usize = 10_000;
/// Slots the CLI keeps free for its context messages when trimming.
const RESERVED_HISTORY_MESSAGES: usize = 6;
/// The most user/assistant pairs sent as history.
pub const MAX_HISTORY_PAIRS: usize = (MAX_HISTORY_MESSAGES - RESERVED_HISTORY_MESSAGES) / 2;
/// The most bytes of one user message the CLI keeps (`MAX_USER_MESSAGE_SIZE`).
pub const MAX_USER_MESSAGE_BYTES: usize = 400_000;
/// What the CLI appends to a message it cut.
pub const TRUNCATED_SUFFIX: &str = "...content truncated due to length";

/// The version of the conversation file format.
const FORMAT_VERSION: u32 = 1;

/// One question and its answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    pub user: UserInputMessage,
    pub assistant: AssistantResponseMessage,
}

/// A conversation: its id and its turns, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Conversation {
    pub version: u32,
    pub conversation_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    pub turns: Vec<Turn>,
}

impl Conversation {
    /// A new, empty conversation with a fresh UUID.
    pub fn new() -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            version: FORMAT_VERSION,
            conversation_id: new_uuid(),
            created_at: now,
            updated_at: now,
            turns: Vec::new(),
        }
    }

    /// The request for the next turn: the history, then `prompt`.
    pub fn request(
        &self,
        prompt: &str,
        model_id: Option<String>,
    ) -> GenerateAssistantResponseRequest {
        GenerateAssistantResponseRequest {
            conversation_state: ConversationState {
                conversation_id: Some(self.conversation_id.clone()),
                history: self.history(),
                current_message: ChatMessage::UserInputMessage(UserInputMessage {
                    content: prompt.to_owned(),
                    origin: Some(ORIGIN.to_owned()),
                    model_id,
                    ..UserInputMessage::default()
                }),
                chat_trigger_type: ChatTriggerType::Manual,
            },
            profile_arn: None,
        }
    }

    /// The history as sent: user and assistant messages alternating,
    /// oldest first.
    pub fn history(&self) -> Vec<ChatMessage> {
        self.turns
            .iter()
            .flat_map(|turn| {
                [
                    ChatMessage::UserInputMessage(turn.user.clone()),
                    ChatMessage::AssistantResponseMessage(turn.assistant.clone()),
                ]
            })
            .collect()
    }

    /// Adds a finished turn (trimmed to the limits).
    pub fn push(&mut self, prompt: &str, answer: String) {
        let mut content = prompt.to_owned();
        truncate_with_suffix(&mut content, MAX_USER_MESSAGE_BYTES);
        self.turns.push(Turn {
            // As in the CLI, history entries carry no model id.
            user: UserInputMessage {
                content,
                origin: Some(ORIGIN.to_owned()),
                ..UserInputMessage::default()
            },
            // The CLI makes its own message id for every answer.
            assistant: AssistantResponseMessage {
                message_id: Some(new_uuid()),
                content: answer,
                // qbox offers the model no tools, so an answer's tool uses
                // are not kept: one without its result makes the next turn invalid.
                tool_uses: None,
            },
        });
        self.updated_at = OffsetDateTime::now_utc();
        self.enforce_limits();
    }

    /// Keeps the history within the CLI's limits: whole pairs are dropped,
    /// oldest first, until the messages fit with the CLI's reserve; user
    /// messages over the size limit are cut at a character boundary.
    pub fn enforce_limits(&mut self) {
        if self.turns.len() > MAX_HISTORY_PAIRS {
            let excess = self.turns.len() - MAX_HISTORY_PAIRS;
            self.turns.drain(..excess);
        }
        for turn in &mut self.turns {
            truncate_with_suffix(&mut turn.user.content, MAX_USER_MESSAGE_BYTES);
        }
    }

    /// The first prompt, shortened for listings.
    pub fn title(&self) -> String {
        let first = self.turns.first().map_or("", |t| t.user.content.as_str());
        let line = first.lines().next().unwrap_or("").trim();
        match line.char_indices().nth(60) {
            Some((cut, _)) => format!("{}…", &line[..cut]),
            None => line.to_owned(),
        }
    }

    /// Checks what a file may hold: the id it claims, the format, messages
    /// that the history shape needs.
    pub(crate) fn validate(&self, expected_id: &str) -> Result<(), String> {
        if self.version != FORMAT_VERSION {
            return Err(format!(
                "format version {} is not {FORMAT_VERSION} (written by another qbox version)",
                self.version
            ));
        }
        if self.conversation_id != expected_id {
            return Err(format!(
                "it holds conversation {} instead",
                self.conversation_id
            ));
        }
        if self.turns.iter().any(|t| t.assistant.message_id.is_none()) {
            return Err("an answer has no message id".into());
        }
        Ok(())
    }
}

impl Default for Conversation {
    fn default() -> Self {
        Self::new()
    }
}

/// Every user message says it comes from the CLI, as the CLI's do.
const ORIGIN: &str = "CLI";

/// Cuts `text` to at most `max_bytes` (suffix included) at a character
/// boundary and appends [`TRUNCATED_SUFFIX`], as the CLI's `truncate_safe` does.
pub fn truncate_with_suffix(text: &mut String, max_bytes: usize) {
    if text.len() <= max_bytes {
        return;
    }
    let mut cut = max_bytes.saturating_sub(TRUNCATED_SUFFIX.len());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text.push_str(TRUNCATED_SUFFIX);
}

/// A random (version 4) UUID from the operating system's secure generator,
/// so ids cannot be guessed by another user of a sidecar.
pub fn new_uuid() -> String {
    crate::random::uuid_v4().unwrap_or_else(|_| {
        // Practically unreachable (the OS generator failed); a time-based
        // id is still unique on this machine.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        crate::random::format_uuid(&(nanos ^ u128::from(std::process::id()) << 64).to_be_bytes())
    })
}

/// Checks a conversation id given by a user: a hyphenated UUID (any case);
/// returns it lowercase. Only such ids become file names.
pub fn parse_conversation_id(text: &str) -> Result<String, ConversationError> {
    let id = text.trim().to_ascii_lowercase();
    let groups: Vec<&str> = id.split('-').collect();
    let lengths_ok = groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len);
    if lengths_ok
        && groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        Ok(id)
    } else {
        Err(ConversationError::InvalidId {
            id: crate::http::sanitize_remote(text),
        })
    }
}

/// How errors name the memory store (`ConversationStore`'s, in the sidecar).
pub(crate) const MEMORY_PLACE: &str = "this sidecar's memory";

/// Why a conversation could not be continued, listed, saved or forgotten.
#[derive(Debug, thiserror::Error)]
pub enum ConversationError {
    #[error("`{id}` is not a conversation id (a UUID like 0f8fad5b-d9cb-469f-a165-70867728950e)")]
    InvalidId { id: String },
    #[error("no conversation {id} in {place}")]
    Unknown { id: String, place: String },
    #[error("the conversation file {} is unreadable: {detail}", .path.display())]
    Corrupt {
        path: std::path::PathBuf,
        detail: String,
    },
    #[error("conversation {id} is answering another prompt right now")]
    Busy { id: String },
    #[error("{action} {}", .path.display())]
    Io {
        action: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot save conversation {id}")]
    Write {
        id: String,
        #[source]
        source: crate::store::StoreError,
    },
    #[error("cannot keep conversations")]
    Directory {
        #[source]
        source: crate::store::StoreError,
    },
    #[error("no data directory to keep conversations in (no home directory)")]
    NoDataDir,
}

impl Diagnose for ConversationError {
    /// Mistakes in what the user gave are usage errors (exit code 2).
    fn exit_code(&self) -> u8 {
        match self {
            Self::InvalidId { .. } | Self::Unknown { .. } => exit::USAGE,
            Self::Write { source, .. } | Self::Directory { source } => source.exit_code(),
            _ => exit::ERROR,
        }
    }

    fn hint(&self) -> Option<String> {
        Some(match self {
            Self::InvalidId { .. } => {
                "use an id printed after an earlier answer (`conversation: ID`), or leave it out to start a new conversation".into()
            }
            Self::Unknown { place, .. } if place == MEMORY_PLACE => {
                "this sidecar keeps conversations in memory only: they end when it restarts; set QBOX_STATE_DIR to a writable directory to keep them".into()
            }
            Self::Unknown { .. } => {
                "`qbox chat --list-conversations` lists them; leave the id out to start a new conversation".into()
            }
            Self::Corrupt { .. } => {
                "the file is left as it is; `qbox chat --forget ID` removes it".into()
            }
            Self::Busy { .. } => "wait for the other answer to finish, then ask again".into(),
            Self::Write { source, .. } | Self::Directory { source } => return source.hint(),
            Self::Io { .. } => "check the directory's permissions, or set QBOX_STATE_DIR".into(),
            Self::NoDataDir => "set QBOX_STATE_DIR to a writable directory".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_version_4_and_parse_back() {
        let id = new_uuid();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(id, new_uuid());
        assert_eq!(parse_conversation_id(&id.to_uppercase()).unwrap(), id);
        for bad in [
            "",
            "standin-conversation-1",
            "../../etc/passwd",
            "0f8fad5b-d9cb-469f-a165-70867728950",
            "0f8fad5bd9cb469fa16570867728950e",
            "0f8fad5b-d9cb-469f-a165-70867728950g",
        ] {
            assert!(
                matches!(
                    parse_conversation_id(bad),
                    Err(ConversationError::InvalidId { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn history_alternates_and_starts_with_the_user() {
        let mut conversation = Conversation::new();
        conversation.push("one", "answer one".into());
        conversation.push("two", "answer two".into());
        let request = conversation.request("three", Some("m".into()));
        let json = serde_json::to_value(&request).unwrap();
        let state = &json["conversationState"];
        assert_eq!(state["conversationId"], conversation.conversation_id);
        let history = state["history"].as_array().unwrap();
        assert_eq!(history.len(), 4);
        assert_eq!(history[0]["userInputMessage"]["content"], "one");
        assert_eq!(history[0]["userInputMessage"]["origin"], "CLI");
        assert!(history[0]["userInputMessage"].get("modelId").is_none());
        assert_eq!(
            history[1]["assistantResponseMessage"]["content"],
            "answer one"
        );
        assert!(history[1]["assistantResponseMessage"]["messageId"].is_string());
        assert_eq!(history[2]["userInputMessage"]["content"], "two");
        assert_eq!(
            state["currentMessage"]["userInputMessage"],
            serde_json::json!({"content": "three", "origin": "CLI", "modelId": "m"})
        );
    }

    #[test]
    fn limits_drop_whole_pairs_oldest_first_and_cut_long_messages() {
        let mut conversation = Conversation::new();
        let max_pairs = MAX_HISTORY_PAIRS;
        for i in 0..max_pairs + 3 {
            conversation.turns.push(Turn {
                user: UserInputMessage {
                    content: format!("q{i}"),
                    ..UserInputMessage::default()
                },
                assistant: AssistantResponseMessage {
                    message_id: Some(format!("m{i}")),
                    content: format!("a{i}"),
                    tool_uses: None,
                },
            });
        }
        conversation.enforce_limits();
        assert_eq!(conversation.turns.len(), max_pairs);
        assert_eq!(conversation.turns[0].user.content, "q3");
        assert_eq!(conversation.turns[0].assistant.content, "a3");
        assert!(conversation.history().len() <= MAX_HISTORY_MESSAGES);

        let mut long = Conversation::new();
        long.push(&"é".repeat(MAX_USER_MESSAGE_BYTES), "ok".into());
        let content = &long.turns[0].user.content;
        assert!(content.len() <= MAX_USER_MESSAGE_BYTES);
        assert!(content.ends_with(TRUNCATED_SUFFIX));
    }

    #[test]
    fn titles_are_short_single_lines() {
        let mut conversation = Conversation::new();
        assert_eq!(conversation.title(), "");
        conversation.push(&format!("{}\nsecond line", "x".repeat(80)), "a".into());
        assert_eq!(conversation.title(), format!("{}…", "x".repeat(60)));
    }
}
