//! The Amazon Q streaming API (`GenerateAssistantResponse`, awsJson 1.0 with
//! an event-stream response): request and event models, and the client.

mod client;
mod error;
pub mod model;

pub use client::{
    ACCESS_TOKEN_ENV, ClientOptions, Credentials, EVENT_STREAM_CONTENT_TYPE, Q_ENDPOINT_ENV,
    QClient, ResponseStream, TARGET, event_from_message,
};
pub use error::{ApiError, ErrorKind, normalize_code};
pub use model::{ChatEvent, GenerateAssistantResponseRequest};
