//! The answer's events as Python classes, one per kind, built from the
//! library's `ChatEvent` (which the crate's own decoder produced), and the
//! whole answer of `Client.chat` (`ChatResponse`).

use pyo3::prelude::*;
use pyo3::types::{PyList, PyString};
use serde_json::Value;

use qbox::qapi::ChatEvent;

use crate::json;

/// Declares an event class: frozen, its fields readable, its wire name as
/// the class attribute `event_type`, and a repr of its fields.
macro_rules! event_class {
    ($name:ident, $wire:literal, { $($field:ident : $ty:ty),* $(,)? }) => {
        #[pyclass(module = "qbox", frozen, get_all)]
        pub struct $name {
            $(pub $field: $ty,)*
        }

        #[pymethods]
        impl $name {
            /// The event's name on the wire.
            #[classattr]
            fn event_type() -> &'static str {
                $wire
            }

            fn __repr__(&self, py: Python<'_>) -> String {
                let fields: Vec<String> = vec![
                    $(format!(
                        "{}={}",
                        stringify!($field),
                        repr_of(py, &self.$field)
                    ),)*
                ];
                format!("{}({})", stringify!($name), fields.join(", "))
            }
        }
    };
}

/// Python's `repr` of a field.
trait Repr {
    fn repr(&self, py: Python<'_>) -> String;
}

fn repr_any(object: &Bound<'_, PyAny>) -> String {
    object
        .repr()
        .map_or_else(|_| "?".to_owned(), |r| r.to_string())
}

impl Repr for String {
    fn repr(&self, py: Python<'_>) -> String {
        repr_any(PyString::new(py, self).as_any())
    }
}

impl Repr for Option<String> {
    fn repr(&self, py: Python<'_>) -> String {
        self.as_ref()
            .map_or_else(|| "None".to_owned(), |text| text.repr(py))
    }
}

impl Repr for bool {
    fn repr(&self, _py: Python<'_>) -> String {
        if *self { "True" } else { "False" }.to_owned()
    }
}

impl<T> Repr for Py<T> {
    fn repr(&self, py: Python<'_>) -> String {
        repr_any(self.bind(py).as_any())
    }
}

fn repr_of(py: Python<'_>, value: &impl Repr) -> String {
    value.repr(py)
}

event_class!(AssistantResponseEvent, "assistantResponseEvent", {
    content: String,
    model_id: Option<String>,
});
event_class!(MessageMetadataEvent, "messageMetadataEvent", {
    conversation_id: Option<String>,
    utterance_id: Option<String>,
});
event_class!(ToolUseEvent, "toolUseEvent", {
    tool_use_id: String,
    name: String,
    input: Option<String>,
    stop: bool,
});
event_class!(CodeEvent, "codeEvent", {
    content: String,
});
event_class!(CodeReferenceEvent, "codeReferenceEvent", {
    references: Py<PyAny>,
    payload: Py<PyAny>,
});
event_class!(CitationEvent, "citationEvent", {
    citation_text: Option<String>,
    citation_link: Option<String>,
    target: Py<PyAny>,
    payload: Py<PyAny>,
});
event_class!(FollowupPromptEvent, "followupPromptEvent", {
    content: Option<String>,
    user_intent: Option<String>,
    payload: Py<PyAny>,
});
event_class!(InvalidStateEvent, "invalidStateEvent", {
    reason: Option<String>,
    message: Option<String>,
});

/// Any other event (reasoning, web links, metering, ..., and event types
/// this version does not know): its wire name and JSON payload.
#[pyclass(module = "qbox", frozen, get_all)]
pub struct OtherEvent {
    pub event_type: String,
    pub payload: Py<PyAny>,
}

#[pymethods]
impl OtherEvent {
    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "OtherEvent(event_type={}, payload={})",
            repr_of(py, &self.event_type),
            repr_of(py, &self.payload)
        )
    }
}

/// A tool the model asked for in `Client.chat`'s answer: its fragments of
/// input joined.
#[pyclass(module = "qbox", frozen, get_all)]
pub struct ToolUse {
    pub tool_use_id: String,
    pub name: String,
    /// The input as the model wrote it (JSON text).
    pub input: String,
}

#[pymethods]
impl ToolUse {
    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "ToolUse(tool_use_id={}, name={}, input={})",
            repr_of(py, &self.tool_use_id),
            repr_of(py, &self.name),
            repr_of(py, &self.input)
        )
    }
}

/// `Client.chat`'s result.
#[pyclass(module = "qbox", frozen, get_all)]
pub struct ChatResponse {
    /// The answer's text (its `assistantResponseEvent`s), as the
    /// conversation keeps it.
    pub text: String,
    /// Pass it to a later call to continue the conversation.
    pub conversation_id: String,
    pub tool_uses: Py<PyList>,
    /// The `references` of every `codeReferenceEvent`, in order.
    pub code_references: Py<PyList>,
}

#[pymethods]
impl ChatResponse {
    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "ChatResponse(conversation_id={}, text={}, tool_uses={}, code_references={})",
            repr_of(py, &self.conversation_id),
            repr_of(py, &self.text),
            repr_of(py, &self.tool_uses),
            repr_of(py, &self.code_references)
        )
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<AssistantResponseEvent>()?;
    m.add_class::<MessageMetadataEvent>()?;
    m.add_class::<ToolUseEvent>()?;
    m.add_class::<CodeEvent>()?;
    m.add_class::<CodeReferenceEvent>()?;
    m.add_class::<CitationEvent>()?;
    m.add_class::<FollowupPromptEvent>()?;
    m.add_class::<InvalidStateEvent>()?;
    m.add_class::<OtherEvent>()?;
    m.add_class::<ToolUse>()?;
    m.add_class::<ChatResponse>()?;
    m.add_class::<Batch>()?;
    Ok(())
}

/// The string field `name` of `value`.
fn text_field(value: &Value, name: &str) -> Option<String> {
    value.get(name).and_then(Value::as_str).map(str::to_owned)
}

fn py_json(py: Python<'_>, value: &Value) -> PyResult<Py<PyAny>> {
    json::to_python(py, value).map(Bound::unbind)
}

/// One event as its Python class.
pub fn to_python<'py>(py: Python<'py>, event: ChatEvent) -> PyResult<Bound<'py, PyAny>> {
    let object = match event {
        ChatEvent::AssistantResponse(e) => Bound::new(
            py,
            AssistantResponseEvent {
                content: e.content,
                model_id: e.model_id,
            },
        )?
        .into_any(),
        ChatEvent::MessageMetadata(e) => Bound::new(
            py,
            MessageMetadataEvent {
                conversation_id: e.conversation_id,
                utterance_id: e.utterance_id,
            },
        )?
        .into_any(),
        ChatEvent::ToolUse(e) => Bound::new(
            py,
            ToolUseEvent {
                tool_use_id: e.tool_use_id,
                name: e.name,
                input: e.input,
                stop: e.stop.unwrap_or(false),
            },
        )?
        .into_any(),
        ChatEvent::Code(e) => Bound::new(py, CodeEvent { content: e.content })?.into_any(),
        ChatEvent::InvalidState(e) => Bound::new(
            py,
            InvalidStateEvent {
                reason: e.reason,
                message: e.message,
            },
        )?
        .into_any(),
        ChatEvent::Json {
            event_type,
            payload,
        } => match event_type.as_str() {
            "codeReferenceEvent" => Bound::new(
                py,
                CodeReferenceEvent {
                    references: py_json(
                        py,
                        payload
                            .get("references")
                            .unwrap_or(&Value::Array(Vec::new())),
                    )?,
                    payload: py_json(py, &payload)?,
                },
            )?
            .into_any(),
            "citationEvent" => Bound::new(
                py,
                CitationEvent {
                    citation_text: text_field(&payload, "citationText"),
                    citation_link: text_field(&payload, "citationLink"),
                    target: py_json(py, payload.get("target").unwrap_or(&Value::Null))?,
                    payload: py_json(py, &payload)?,
                },
            )?
            .into_any(),
            "followupPromptEvent" => {
                let prompt = payload.get("followupPrompt").unwrap_or(&Value::Null);
                Bound::new(
                    py,
                    FollowupPromptEvent {
                        content: text_field(prompt, "content"),
                        user_intent: text_field(prompt, "userIntent"),
                        payload: py_json(py, &payload)?,
                    },
                )?
                .into_any()
            }
            _ => Bound::new(
                py,
                OtherEvent {
                    payload: py_json(py, &payload)?,
                    event_type,
                },
            )?
            .into_any(),
        },
        ChatEvent::Unknown {
            event_type,
            payload,
        } => {
            let value = serde_json::from_slice(&payload)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&payload).into_owned()));
            Bound::new(
                py,
                OtherEvent {
                    event_type,
                    payload: py_json(py, &value)?,
                },
            )?
            .into_any()
        }
    };
    Ok(object)
}

/// Events handed to Python as an iterator that makes each into its
/// Python class when it is reached, not all at once: each event's object
/// is made just before it is used and freed just after, so the garbage
/// collector's youngest generation never holds a batch's worth of them
/// (a list of a few thousand live events made its collections the largest
/// cost of a long answer).
#[pyclass(module = "qbox._qbox")]
pub struct Batch {
    events: std::vec::IntoIter<ChatEvent>,
}

impl Batch {
    pub fn new(events: Vec<ChatEvent>) -> Self {
        Self {
            events: events.into_iter(),
        }
    }
}

#[pymethods]
impl Batch {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.events
            .next()
            .map(|event| to_python(py, event))
            .transpose()
    }

    /// Events not yet reached.
    fn __len__(&self) -> usize {
        self.events.len()
    }
}

/// `Client.chat`'s answer as it is gathered.
#[derive(Default)]
pub struct ChatOutcome {
    pub text: String,
    pub conversation_id: String,
    /// (id, name, input) in the order the tools first appeared.
    tool_uses: Vec<(String, String, String)>,
    code_references: Vec<Value>,
}

impl ChatOutcome {
    pub fn add(&mut self, event: ChatEvent) {
        match event {
            ChatEvent::ToolUse(e) => {
                let input = e.input.unwrap_or_default();
                match self
                    .tool_uses
                    .iter_mut()
                    .find(|(id, _, _)| *id == e.tool_use_id)
                {
                    Some((_, name, joined)) => {
                        if name.is_empty() {
                            *name = e.name;
                        }
                        joined.push_str(&input);
                    }
                    None => self.tool_uses.push((e.tool_use_id, e.name, input)),
                }
            }
            ChatEvent::Json {
                event_type,
                payload,
            } if event_type == "codeReferenceEvent" => {
                if let Some(Value::Array(references)) = payload.get("references") {
                    self.code_references.extend(references.iter().cloned());
                }
            }
            _ => {}
        }
    }
}

impl<'py> IntoPyObject<'py> for ChatOutcome {
    type Target = ChatResponse;
    type Output = Bound<'py, ChatResponse>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Self::Output> {
        let tool_uses = PyList::empty(py);
        for (tool_use_id, name, input) in self.tool_uses {
            tool_uses.append(Bound::new(
                py,
                ToolUse {
                    tool_use_id,
                    name,
                    input,
                },
            )?)?;
        }
        let code_references = PyList::empty(py);
        for reference in &self.code_references {
            code_references.append(json::to_python(py, reference)?)?;
        }
        Bound::new(
            py,
            ChatResponse {
                text: self.text,
                conversation_id: self.conversation_id,
                tool_uses: tool_uses.unbind(),
                code_references: code_references.unbind(),
            },
        )
    }
}
