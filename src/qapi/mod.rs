//! The Amazon Q streaming API (`GenerateAssistantResponse`, awsJson 1.0 with
//! an event-stream response): request and event models, and the client.
//!
//! ```no_run
//! use qbox::qapi::{ChatEvent, GenerateAssistantResponseRequest, QClient};
//! use qbox::store::StoreQuery;
//!
//! async fn ask() -> Result<(), qbox::qapi::ApiError> {
//!     // Credentials from the CLI's store (the same search as `qbox doctor`), or from
//!     // QBOX_ACCESS_TOKEN when no store exists. `true`: refresh an expired token.
//!     let client = QClient::from_env(StoreQuery::default(), true)?;
//!     let request = GenerateAssistantResponseRequest::prompt("What is a monad?", None, None);
//!     let mut answer = client.generate(request).await?;
//!     while let Some(event) = answer.next_event().await? {
//!         match &event {
//!             ChatEvent::MessageMetadata(meta) => eprintln!("conversation {:?}", meta.conversation_id),
//!             ChatEvent::ToolUse(tool) => eprintln!("tool {} wants {:?}", tool.name, tool.input),
//!             _ => {}
//!         }
//!         if let Some(text) = event.text() {
//!             print!("{text}");
//!         }
//!     }
//!     Ok(())
//! }
//! ```
//!
//! See `docs/streaming-client.md` for the behaviour in detail.

mod client;
mod error;
pub mod model;

pub use client::{
    ACCESS_TOKEN_ENV, ClientOptions, Credentials, EVENT_STREAM_CONTENT_TYPE, Q_ENDPOINT_ENV,
    QClient, ResponseStream, TARGET, event_from_message,
};
pub use error::{ApiError, ErrorKind, normalize_code};
pub use model::{ChatEvent, GenerateAssistantResponseRequest};
