//! A stand-in Amazon Q streaming service: `POST /` with the real target
//! header, bearer token check and event-stream framing, answering from a
//! script (split at awkward chunk boundaries, pauses, stalls, exception
//! frames with the code in a header or the payload, events with missing
//! fields, HTTP errors, the monthly limit, redirects, wrong content types,
//! connections cut mid-frame). When told, it also answers the CLIs'
//! `ListAvailableModels`, which decides the model they ask for.
//!
//! Like a service that keeps no conversations itself, it checks what a
//! client sends as history: it remembers what it answered in each
//! conversation id and rejects a turn whose history is not exactly that
//! (less only the oldest pairs that the CLI's history limit drops).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use crate::eventstream::{Header, HeaderValue, encode};
use crate::qapi::conversation::MAX_HISTORY_PAIRS;
use crate::qapi::model::ChatMessage;
use crate::qapi::{EVENT_STREAM_CONTENT_TYPE, GenerateAssistantResponseRequest, TARGET};

/// The target of `ListAvailableModels` (the CLIs' model list, on the same
/// endpoint as the chat).
pub const LIST_MODELS_TARGET: &str = "AmazonCodeWhispererService.ListAvailableModels";

/// One scripted answer.
// Replies are few and short-lived (queued by a test or the demo): boxing
// the large variant would only make every script longer.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Reply {
    /// A streamed answer.
    Answer(Answer),
    /// A non-2xx answer with `x-amzn-errortype: code` and a JSON body.
    HttpError {
        status: u16,
        code: String,
        message: String,
    },
    /// 200 with a content type that is not an event stream.
    WrongContentType,
    /// A redirect (`status` 3xx) to `location`.
    Redirect { status: u16, location: String },
}

/// An exception frame as the service sends it: the modelled member in the
/// `:exception-type` header, the real code in the payload's `__type`.
#[derive(Debug, Clone)]
pub struct ExceptionFrame {
    pub header_type: String,
    pub payload: Value,
}

/// A streamed answer: metadata, text pieces, extra events, maybe an
/// exception, written `split_every` bytes at a time.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The `messageMetadataEvent`'s conversation id when the request names
    /// none (otherwise the request's own id is echoed).
    pub conversation_id: String,
    pub pieces: Vec<String>,
    /// Extra events sent after the text: (event type, JSON payload).
    pub extra_events: Vec<(String, Value)>,
    /// An exception frame after everything else: (exception type, message),
    /// the type in the header only.
    pub exception: Option<(String, String)>,
    /// An exception frame after everything else, payload given whole.
    pub exception_frame: Option<ExceptionFrame>,
    /// After the first text event, send nothing more and hold the
    /// connection open until the client hangs up.
    pub stall_after_first: bool,
    /// The response's content type.
    pub content_type: String,
    /// Bytes per write; small values split frames at every kind of place.
    pub split_every: usize,
    /// Pause after the bytes of the first text event (time-to-first-token tests).
    pub pause_after_first: Duration,
    /// Stop in the middle of the last frame and close the connection.
    pub cut_mid_frame: bool,
}

impl Answer {
    /// An answer of `pieces`, 7 bytes per write.
    pub fn text(pieces: &[&str]) -> Self {
        Self {
            conversation_id: "standin-conversation-1".into(),
            pieces: pieces.iter().map(|p| (*p).to_owned()).collect(),
            extra_events: Vec::new(),
            exception: None,
            exception_frame: None,
            stall_after_first: false,
            content_type: EVENT_STREAM_CONTENT_TYPE.into(),
            split_every: 7,
            pause_after_first: Duration::ZERO,
            cut_mid_frame: false,
        }
    }

    /// An answer of `pieces` followed by events whose fields the client
    /// must default: text and code events without `content`, a tool use
    /// without `toolUseId` and `name`.
    pub fn with_missing_fields(pieces: &[&str]) -> Self {
        let mut answer = Self::text(pieces);
        answer.extra_events = vec![
            ("assistantResponseEvent".into(), json!({})),
            ("codeEvent".into(), json!({})),
            (
                "toolUseEvent".into(),
                json!({"input": "{\"path\":\"a\"}", "stop": true}),
            ),
        ];
        answer
    }

    /// Whether the client receives the whole answer (and so remembers it).
    fn completes(&self) -> bool {
        self.exception.is_none()
            && self.exception_frame.is_none()
            && !self.stall_after_first
            && !self.cut_mid_frame
    }
}

/// A request the stand-in received.
#[derive(Debug, Clone)]
pub struct RecordedQRequest {
    pub target: Option<String>,
    pub authorization: Option<String>,
    pub optout: Option<String>,
    pub user_agent: Option<String>,
    /// The `TokenType` header (any spelling of its name).
    pub token_type: Option<String>,
    /// The SDKs' `amz-sdk-invocation-id` (one per operation) and
    /// `amz-sdk-request` (`attempt=N; max=M`).
    pub invocation_id: Option<String>,
    pub sdk_request: Option<String>,
    pub body: Value,
}

#[derive(Debug)]
struct Inner {
    token: String,
    /// The `TokenType` the accepted token must come with (none: the header
    /// must be absent), as the Kiro CLI sends it per kind of login.
    token_type: Option<String>,
    replies: VecDeque<Reply>,
    requests: Vec<RecordedQRequest>,
    /// When the bytes of each answer's first text event were handed to the
    /// connection (for time-to-first-token measurements).
    first_text_sent: Vec<std::time::Instant>,
    /// What it answered in each conversation: (prompt, answer text) pairs.
    conversations: HashMap<String, Vec<(String, String)>>,
    /// Requests allowed before every answer is `MONTHLY_REQUEST_COUNT`.
    monthly_limit: Option<usize>,
    /// Answers whose client hung up before they were sent whole.
    hangups: usize,
    /// What `ListAvailableModels` answers (model ids, then the default),
    /// when set; otherwise it is an unknown operation, as every target but
    /// the chat's is.
    models: Option<(Vec<String>, String)>,
}

/// A running stand-in Q service. Dropping it stops the server.
#[derive(Debug)]
pub struct StandinQ {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    _server: tokio::task::JoinHandle<()>,
}

impl StandinQ {
    /// Starts on an ephemeral loopback port, accepting bearer `token`.
    pub async fn start(token: &str) -> std::io::Result<Self> {
        Self::start_on(std::net::Ipv4Addr::LOCALHOST.into(), token).await
    }

    /// Starts on an ephemeral port of `ip`, accepting bearer `token`.
    pub async fn start_on(ip: std::net::IpAddr, token: &str) -> std::io::Result<Self> {
        let inner = Arc::new(Mutex::new(Inner {
            token: token.to_owned(),
            token_type: None,
            replies: VecDeque::new(),
            requests: Vec::new(),
            first_text_sent: Vec::new(),
            conversations: HashMap::new(),
            monthly_limit: None,
            hangups: 0,
            models: None,
        }));
        let app = axum::Router::new()
            .route("/", post(generate))
            .with_state(inner.clone());
        let (addr, server) = super::serve_on(ip, app).await?;
        Ok(Self {
            addr,
            inner,
            _server: server,
        })
    }

    /// The base URL to put in `QBOX_Q_ENDPOINT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queues a reply; with none queued the stand-in echoes the prompt.
    pub fn push(&self, reply: Reply) {
        self.lock().replies.push_back(reply);
    }

    /// Changes the accepted bearer token.
    pub fn set_token(&self, token: &str) {
        self.lock().token = token.to_owned();
    }

    /// The `TokenType` header the accepted token must come with:
    /// `EXTERNAL_IDP` for an external identity provider's token, `API_KEY`
    /// for a Kiro API key, none (the header absent) for Builder ID, IAM
    /// Identity Center and social logins. A request that differs is
    /// refused as an invalid token.
    pub fn set_token_type(&self, token_type: Option<&str>) {
        self.lock().token_type = token_type.map(str::to_owned);
    }

    /// Makes `ListAvailableModels` (the CLIs ask it before a chat, and
    /// send `chat.defaultModel` only when it is listed) answer `models`,
    /// with `default` as the service's default.
    pub fn set_models(&self, models: &[&str], default: &str) {
        self.lock().models = Some((
            models.iter().map(|m| (*m).to_owned()).collect(),
            default.to_owned(),
        ));
    }

    pub fn requests(&self) -> Vec<RecordedQRequest> {
        self.lock().requests.clone()
    }

    /// After `requests` requests (counting every one received), answers
    /// every request with the monthly-limit throttling error.
    pub fn set_monthly_limit(&self, requests: usize) {
        self.lock().monthly_limit = Some(requests);
    }

    /// The (prompt, answer) pairs it answered in conversation `id`.
    pub fn conversation(&self, id: &str) -> Vec<(String, String)> {
        self.lock()
            .conversations
            .get(id)
            .cloned()
            .unwrap_or_default()
    }

    /// How many answers the client hung up on before they were sent whole
    /// (a cancelled request closes its connection).
    pub fn hangups(&self) -> usize {
        self.lock().hangups
    }

    /// When the first text event of each answer so far was sent.
    pub fn first_text_sent(&self) -> Vec<std::time::Instant> {
        self.lock().first_text_sent.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        [
            ("x-amzn-errortype", code),
            ("content-type", "application/x-amz-json-1.0"),
        ],
        json!({"__type": code, "message": message}).to_string(),
    )
        .into_response()
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn generate(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let (token, token_type, over_monthly_limit, models) = {
        let mut inner = inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.requests.push(RecordedQRequest {
            target: header(&headers, "x-amz-target"),
            authorization: header(&headers, "authorization"),
            optout: header(&headers, "x-amzn-codewhisperer-optout"),
            user_agent: header(&headers, "user-agent"),
            token_type: header(&headers, "tokentype"),
            invocation_id: header(&headers, "amz-sdk-invocation-id"),
            sdk_request: header(&headers, "amz-sdk-request"),
            body: serde_json::from_str(&body).unwrap_or(Value::Null),
        });
        let over = inner
            .monthly_limit
            .is_some_and(|limit| inner.requests.len() > limit);
        (
            inner.token.clone(),
            inner.token_type.clone(),
            over,
            inner.models.clone(),
        )
    };
    if let Some((models, default)) = models
        && header(&headers, "x-amz-target").as_deref() == Some(LIST_MODELS_TARGET)
    {
        let model = |id: &String| json!({"modelId": id, "modelName": id});
        return (
            StatusCode::OK,
            [("content-type", "application/x-amz-json-1.0")],
            json!({
                "models": models.iter().map(model).collect::<Vec<_>>(),
                "defaultModel": model(&default),
            })
            .to_string(),
        )
            .into_response();
    }
    if header(&headers, "x-amz-target").as_deref() != Some(TARGET) {
        return error_response(
            StatusCode::BAD_REQUEST,
            "UnknownOperationException",
            "unknown operation",
        );
    }
    if header(&headers, "authorization") != Some(format!("Bearer {token}")) {
        return error_response(
            StatusCode::FORBIDDEN,
            "AccessDeniedException",
            "The bearer token included in the request is invalid",
        );
    }
    if header(&headers, "tokentype") != token_type {
        return error_response(
            StatusCode::FORBIDDEN,
            "AccessDeniedException",
            "The bearer token is not valid for the token type of the request",
        );
    }
    let Ok(request) = serde_json::from_str::<GenerateAssistantResponseRequest>(&body) else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "ValidationException",
            "request body does not match the model",
        );
    };
    if over_monthly_limit {
        // The body the service sends (the CLI's retry classifier reads `reason`).
        return (
            StatusCode::BAD_REQUEST,
            [("content-type", "application/x-amz-json-1.0")],
            json!({
                "__type": "com.amazon.aws.codewhisperer#ThrottlingException",
                "message": "Maximum Request reached for this month.",
                "reason": "MONTHLY_REQUEST_COUNT"
            })
            .to_string(),
        )
            .into_response();
    }
    let state = &request.conversation_state;
    let prompt = match &state.current_message {
        ChatMessage::UserInputMessage(m) => m.content.clone(),
        ChatMessage::AssistantResponseMessage(m) => m.content.clone(),
    };
    let reply = {
        let mut inner = inner.lock().unwrap_or_else(|p| p.into_inner());
        // The service keeps no turns and takes any well-formed history; the
        // stand-in holds qbox's own client (its user agent) to the history
        // it answered, so a test sees a turn lost or changed. The CLIs send
        // context turns of their own (without message ids) and pass.
        let from_qbox = header(&headers, "user-agent").is_some_and(|ua| ua.starts_with("qbox/"));
        if let (Some(id), true) = (&state.conversation_id, from_qbox) {
            let answered = inner.conversations.get(id).map_or(&[][..], Vec::as_slice);
            if let Err(problem) = check_history(&state.history, answered) {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "ValidationException",
                    &format!("the history of conversation {id} does not match: {problem}"),
                );
            }
        }
        let reply = inner
            .replies
            .pop_front()
            .unwrap_or_else(|| Reply::Answer(Answer::text(&["You said: ", &prompt])));
        if let (Some(id), Reply::Answer(answer)) = (&state.conversation_id, &reply)
            && answer.completes()
        {
            inner
                .conversations
                .entry(id.clone())
                .or_default()
                .push((prompt, answer.pieces.concat()));
        }
        reply
    };
    match reply {
        Reply::HttpError {
            status,
            code,
            message,
        } => error_response(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &code,
            &message,
        ),
        Reply::WrongContentType => (
            StatusCode::OK,
            [("content-type", "text/html")],
            "<html>sign in</html>",
        )
            .into_response(),
        Reply::Redirect { status, location } => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::FOUND),
            [("location", location)],
        )
            .into_response(),
        Reply::Answer(answer) => {
            let conversation_id = state
                .conversation_id
                .clone()
                .unwrap_or_else(|| answer.conversation_id.clone());
            stream_answer(&answer, &conversation_id, inner)
        }
    }
}

/// Checks a request's history against what was answered before: user and
/// assistant messages alternating from a user message, every answer with a
/// message id, and the pairs exactly the answered ones, less only the
/// oldest that the CLI's limit drops (a pair is never split or changed).
fn check_history(history: &[ChatMessage], answered: &[(String, String)]) -> Result<(), String> {
    if !history.len().is_multiple_of(2) {
        return Err(format!(
            "{} messages do not make whole pairs",
            history.len()
        ));
    }
    let mut pairs = Vec::new();
    for (index, pair) in history.chunks(2).enumerate() {
        match pair {
            [
                ChatMessage::UserInputMessage(user),
                ChatMessage::AssistantResponseMessage(assistant),
            ] => {
                if assistant.message_id.as_deref().is_none_or(str::is_empty) {
                    return Err(format!("answer {index} has no messageId"));
                }
                pairs.push((user.content.clone(), assistant.content.clone()));
            }
            _ => {
                return Err(format!(
                    "messages {} and {} are not a user message and its answer",
                    index * 2,
                    index * 2 + 1
                ));
            }
        }
    }
    let expected = &answered[answered.len().saturating_sub(MAX_HISTORY_PAIRS)..];
    if pairs != expected {
        return Err(format!(
            "it sent {} turns where {} were answered",
            pairs.len(),
            expected.len()
        ));
    }
    Ok(())
}

fn event_frame(out: &mut Vec<u8>, event_type: &str, payload: &Value) {
    let headers = [
        Header {
            name: ":event-type",
            value: HeaderValue::String(event_type),
        },
        Header {
            name: ":content-type",
            value: HeaderValue::String("application/json"),
        },
        Header {
            name: ":message-type",
            value: HeaderValue::String("event"),
        },
    ];
    // Stand-in frames are small and valid by construction.
    let _ = encode(&headers, payload.to_string().as_bytes(), out);
}

fn exception_frame(out: &mut Vec<u8>, header_type: &str, payload: &Value) {
    let headers = [
        Header {
            name: ":exception-type",
            value: HeaderValue::String(header_type),
        },
        Header {
            name: ":content-type",
            value: HeaderValue::String("application/json"),
        },
        Header {
            name: ":message-type",
            value: HeaderValue::String("exception"),
        },
    ];
    // Stand-in frames are small and valid by construction.
    let _ = encode(&headers, payload.to_string().as_bytes(), out);
}

fn stream_answer(answer: &Answer, conversation_id: &str, inner: Arc<Mutex<Inner>>) -> Response {
    let mut first = Vec::new();
    event_frame(
        &mut first,
        "messageMetadataEvent",
        &json!({"conversationId": conversation_id, "utteranceId": "u-1"}),
    );
    let mut pieces = answer.pieces.iter();
    if let Some(piece) = pieces.next() {
        event_frame(
            &mut first,
            "assistantResponseEvent",
            &json!({"content": piece}),
        );
    }
    let mut rest = Vec::new();
    for piece in pieces {
        event_frame(
            &mut rest,
            "assistantResponseEvent",
            &json!({"content": piece}),
        );
    }
    for (event_type, payload) in &answer.extra_events {
        event_frame(&mut rest, event_type, payload);
    }
    if let Some((code, message)) = &answer.exception {
        exception_frame(&mut rest, code, &json!({"message": message}));
    }
    if let Some(frame) = &answer.exception_frame {
        exception_frame(&mut rest, &frame.header_type, &frame.payload);
    }
    if answer.cut_mid_frame {
        event_frame(
            &mut rest,
            "assistantResponseEvent",
            &json!({"content": "never arrives"}),
        );
        rest.truncate(rest.len() - 9);
    }
    let split = answer.split_every.max(1);
    let pause = answer.pause_after_first;
    let stall = answer.stall_after_first;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(16);
    tokio::spawn(async move {
        let hung_up = |inner: &Arc<Mutex<Inner>>| {
            inner.lock().unwrap_or_else(|p| p.into_inner()).hangups += 1;
        };
        for chunk in first.chunks(split) {
            if tx.send(Ok(chunk.to_vec())).await.is_err() {
                hung_up(&inner);
                return;
            }
        }
        inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .first_text_sent
            .push(std::time::Instant::now());
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        if stall {
            // Nothing more until the client gives up and hangs up.
            tx.closed().await;
            hung_up(&inner);
            return;
        }
        for chunk in rest.chunks(split) {
            if tx.send(Ok(chunk.to_vec())).await.is_err() {
                hung_up(&inner);
                return;
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", answer.content_type.as_str())
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
