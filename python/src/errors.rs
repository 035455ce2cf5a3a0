//! qbox's errors as `qbox.Error` subclasses (defined in `qbox/_errors.py`),
//! sorted by what a caller can do about them: log in (`NoLoginError`), wait
//! or give up on the service (`ServiceError`, with its code, status and
//! whether a retry may help), suspect the connection (`TransportError`,
//! `ProtocolError`), or fix what was passed (`InvalidInputError`,
//! `StoreError`). The message is the error's whole chain, then its hint.

use pyo3::prelude::*;
use pyo3::types::PyDict;

use qbox::exit::{self, Diagnose};
use qbox::qapi::{ApiError, ConversationError};
use qbox::store::AuthError;

/// An error on its way to Python.
#[derive(Debug)]
pub enum Failure {
    Api(ApiError),
    Auth(AuthError),
    /// An error of this package's own checks: the class and the message.
    Plain {
        class: &'static str,
        message: String,
    },
}

impl From<ApiError> for Failure {
    fn from(error: ApiError) -> Self {
        Self::Api(error)
    }
}

impl From<ConversationError> for Failure {
    fn from(error: ConversationError) -> Self {
        Self::Api(error.into())
    }
}

impl From<AuthError> for Failure {
    fn from(error: AuthError) -> Self {
        Self::Auth(error)
    }
}

impl Failure {
    pub fn invalid(message: String) -> Self {
        Self::Plain {
            class: "InvalidInputError",
            message,
        }
    }

    pub fn store(message: String) -> Self {
        Self::Plain {
            class: "StoreError",
            message,
        }
    }

    pub fn no_login(message: String) -> Self {
        Self::Plain {
            class: "NoLoginError",
            message,
        }
    }

    /// A panic caught at the boundary: a bug, reported as `qbox.Error`.
    pub fn panic(payload: Box<dyn std::any::Any + Send>) -> Self {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown cause".to_owned());
        Self::Plain {
            class: "Error",
            message: format!("internal error in qbox (a bug, please report it): {what}"),
        }
    }

    /// The `qbox.Error` subclass, its message and its keyword attributes.
    fn describe(&self) -> (&'static str, String, Vec<(&'static str, Attr)>) {
        match self {
            Self::Plain { class, message } => (class, message.clone(), Vec::new()),
            Self::Auth(error) => {
                let class = auth_class(error);
                (class, with_hint(error), Vec::new())
            }
            Self::Api(error) => {
                let (class, attrs) = api_class(error);
                (class, with_hint(error), attrs)
            }
        }
    }

    /// The Python exception (takes the GIL for the moment it is built).
    pub fn into_pyerr(self) -> PyErr {
        let (class, message, attrs) = self.describe();
        Python::attach(|py| match build(py, class, &message, &attrs) {
            Ok(error) => error,
            Err(error) => error,
        })
    }
}

/// A keyword attribute of an exception.
#[derive(Debug)]
enum Attr {
    Text(String),
    Number(u64),
    Flag(bool),
    Nothing,
}

fn build(py: Python<'_>, class: &str, message: &str, attrs: &[(&str, Attr)]) -> PyResult<PyErr> {
    let module = py.import("qbox._errors")?;
    let class = module.getattr(class)?;
    let kwargs = PyDict::new(py);
    for (name, value) in attrs {
        match value {
            Attr::Text(text) => kwargs.set_item(*name, text)?,
            Attr::Number(n) => kwargs.set_item(*name, *n)?,
            Attr::Flag(b) => kwargs.set_item(*name, *b)?,
            Attr::Nothing => kwargs.set_item(*name, py.None())?,
        }
    }
    let instance = class.call((message,), Some(&kwargs))?;
    Ok(PyErr::from_value(instance))
}

/// The error's chain on one line, then `hint: ...` on the next when it has one.
fn with_hint<E: Diagnose>(error: &E) -> String {
    let text = exit::chain(error);
    match error.hint() {
        Some(hint) => format!("{text}\nhint: {hint}"),
        None => text,
    }
}

fn auth_class(error: &AuthError) -> &'static str {
    if error.exit_code() == exit::NO_LOGIN {
        "NoLoginError"
    } else if matches!(error, AuthError::Store(_)) {
        "StoreError"
    } else {
        "Error"
    }
}

fn api_class(error: &ApiError) -> (&'static str, Vec<(&'static str, Attr)>) {
    let service = |code: &str, status: Option<u16>, kind: qbox::qapi::ErrorKind| {
        vec![
            ("code", Attr::Text(code.to_owned())),
            (
                "status",
                status.map_or(Attr::Nothing, |s| Attr::Number(u64::from(s))),
            ),
            ("retryable", Attr::Flag(kind.is_retryable())),
            ("kind", Attr::Text(format!("{kind:?}"))),
        ]
    };
    match error {
        ApiError::Http {
            status, kind, code, ..
        } => ("ServiceError", service(code, Some(*status), *kind)),
        ApiError::Exception { kind, code, .. } => ("ServiceError", service(code, None, *kind)),
        ApiError::Transport { .. } | ApiError::Redirect { .. } | ApiError::Timeout { .. } => {
            ("TransportError", Vec::new())
        }
        ApiError::NotEventStream { .. }
        | ApiError::Frame(_)
        | ApiError::BadEvent { .. }
        | ApiError::MissingMessageType => ("ProtocolError", Vec::new()),
        ApiError::AnswerTooLarge { limit } => (
            "AnswerTooLargeError",
            vec![("limit", Attr::Number(*limit as u64))],
        ),
        ApiError::BadSetting { .. } | ApiError::ApiKey(_) => ("InvalidInputError", Vec::new()),
        ApiError::Conversation(e) => match e {
            ConversationError::InvalidId { .. }
            | ConversationError::Unknown { .. }
            | ConversationError::Busy { .. } => ("InvalidInputError", Vec::new()),
            _ => ("Error", Vec::new()),
        },
        ApiError::Auth(e) => (auth_class(e), Vec::new()),
        ApiError::NoLogin(_)
        | ApiError::BareTokenExpired { .. }
        | ApiError::ApiKeyRejected { .. } => ("NoLoginError", Vec::new()),
        // A variant added later: the base class until it is sorted.
        #[allow(unreachable_patterns)]
        _ => match error.exit_code() {
            exit::NO_LOGIN => ("NoLoginError", Vec::new()),
            _ => ("Error", Vec::new()),
        },
    }
}

/// `Result<T, Failure>` to `PyResult<T>`.
pub trait PyResultExt<T> {
    fn into_py_result(self) -> PyResult<T>;
}

impl<T> PyResultExt<T> for Result<T, Failure> {
    fn into_py_result(self) -> PyResult<T> {
        self.map_err(Failure::into_pyerr)
    }
}
