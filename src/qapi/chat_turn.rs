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
            _claim: claim,
        })
    }
}

impl ChatTurn {
    /// The conversation's id, to continue it with.
    pub fn conversation_id(&self) -> &str {
        &self.conversation.conversation_id
    }

    /// The next event; `Ok(None)` once the answer has ended and the turn is saved.
    pub async fn next_event(&mut self) -> Result<Option<ChatEvent>, ApiError> {
        match self.stream.next_event().await? {
            Some(event) => {
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
