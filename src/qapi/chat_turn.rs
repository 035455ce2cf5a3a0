//! One turn of a kept conversation: the stored history goes out with the
//! prompt, the answer streams back, and the finished pair is saved. What
//! `qbox chat`, `qbox-sidecar chat` and the `q-chat` tool share.

use super::client::{QClient, ResponseStream};
use super::conversation::{Conversation, parse_conversation_id};
use super::conversation_store::{ConversationClaim, ConversationStore};
use super::error::ApiError;
use super::model::ChatEvent;

/// A turn in flight. Its events come from [`ChatTurn::next_event`]; the
/// turn is saved when the answer has ended without error, so a failed or
/// abandoned turn leaves the conversation as it was.
#[derive(Debug)]
pub struct ChatTurn {
    stream: ResponseStream,
    conversation: Conversation,
    prompt: String,
    /// The answer's text as the history keeps it (the CLI keeps the text
    /// of `assistantResponseEvent`s).
    answer: String,
    store: ConversationStore,
    saved: bool,
    /// Bytes of the answer received so far (text, tool input, other
    /// events' payloads), and the most it may have ([`super::max_answer_bytes`]).
    received: usize,
    limit: usize,
    _claim: ConversationClaim,
}

impl QClient {
    /// Asks `prompt` in the conversation `conversation_id` (a UUID from an
    /// earlier turn), or in a new conversation. An id that is not a UUID or
    /// names no stored conversation is an error, never a new conversation;
    /// so is a store that could not save the answer. Nothing is sent then.
    pub async fn chat(
        &self,
        prompt: &str,
        model_id: Option<String>,
        conversation_id: Option<&str>,
    ) -> Result<ChatTurn, ApiError> {
        let limit = super::max_answer_bytes()?;
        let store = self.conversations().clone();
        let (conversation, claim) = match conversation_id {
            Some(text) => {
                let id = parse_conversation_id(text)?;
                let claim = store.claim(&id)?;
                (store.load(&id)?, claim)
            }
            None => {
                let conversation = Conversation::new();
                let claim = store.claim(&conversation.conversation_id)?;
                (conversation, claim)
            }
        };
        store.check_writable()?;
        let stream = self
            .generate(conversation.request(prompt, model_id))
            .await?;
        Ok(ChatTurn {
            stream,
            conversation,
            prompt: prompt.to_owned(),
            answer: String::new(),
            store,
            saved: false,
            received: 0,
            limit,
            _claim: claim,
        })
    }
}

impl ChatTurn {
    /// The conversation's id, to continue it with.
    pub fn conversation_id(&self) -> &str {
        &self.conversation.conversation_id
    }

    /// The answer's text, once [`Self::next_event`] has returned
    /// `Ok(None)` (the turn is saved; empty before), moved out of this
    /// turn's copy of the conversation: a caller that wants the whole
    /// answer needs no second copy of it.
    pub fn take_answer(&mut self) -> String {
        if !self.saved {
            return String::new();
        }
        self.conversation
            .turns
            .last_mut()
            .map(|turn| std::mem::take(&mut turn.assistant.content))
            .unwrap_or_default()
    }

    /// The next event; `Ok(None)` once the answer has ended and the turn is
    /// saved. An answer past the cap ends with [`ApiError::AnswerTooLarge`]
    /// and is not saved: the stream is not read further (dropping the turn
    /// closes the connection).
    pub async fn next_event(&mut self) -> Result<Option<ChatEvent>, ApiError> {
        match self.stream.next_event().await? {
            Some(event) => {
                self.received = self.received.saturating_add(event_bytes(&event));
                if self.received > self.limit {
                    self.answer = String::new();
                    return Err(ApiError::AnswerTooLarge { limit: self.limit });
                }
                if let ChatEvent::AssistantResponse(text) = &event {
                    self.answer.push_str(&text.content);
                }
                Ok(Some(event))
            }
            None => {
                if !self.saved {
                    self.saved = true;
                    let answer = std::mem::take(&mut self.answer);
                    self.conversation.push(&self.prompt, answer);
                    self.store.save(&self.conversation)?;
                }
                Ok(None)
            }
        }
    }
}

/// What an event adds to an answer's size: its text, a tool use's input,
/// another event's payload.
fn event_bytes(event: &ChatEvent) -> usize {
    match event {
        ChatEvent::AssistantResponse(e) => e.content.len(),
        ChatEvent::Code(e) => e.content.len(),
        ChatEvent::ToolUse(e) => e.input.as_ref().map_or(0, String::len) + e.name.len(),
        ChatEvent::Json { payload, .. } => serde_json::to_vec(payload).map_or(0, |v| v.len()),
        ChatEvent::Unknown { payload, .. } => payload.len(),
        ChatEvent::MessageMetadata(_) | ChatEvent::InvalidState(_) => 0,
    }
}
