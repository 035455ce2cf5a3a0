//! `qbox._qbox`: the native part of the `qbox` Python package. It binds the
//! `qbox` library crate (its client, login store and event-stream decoder)
//! and adds nothing of its own to the protocol: Python code sees typed
//! events and `qbox.Error` subclasses.
//!
//! Every request runs on one shared tokio runtime, without the GIL; its
//! answer reaches Python's event loop as `handover` describes. Closing or
//! dropping a stream (a cancelled task does) aborts the request, and with
//! it the HTTP connection. A panic is caught at this boundary and raised
//! as `qbox.Error`, never as a Rust panic in Python.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::PyString;

use qbox::qapi::{ApiError, ClientOptions, Credentials, QClient};
use qbox::store::{Flavor, StoreQuery};

mod errors;
mod events;
mod handover;
mod json;

use errors::{Failure, PyResultExt};
use handover::{Mode, NativeStream, Request};

/// `QBOX_DB` and `QBOX_CLI`, read where the CLI reads them: at the edge,
/// here, as `qbox` reads them on its command line.
const DB_ENV: &str = "QBOX_DB";
const CLI_ENV: &str = "QBOX_CLI";

/// The value of `name`, unless unset or empty (an empty value means
/// "unset" for every qbox variable).
fn env_value(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Runs `f` with the GIL released and any panic turned into `qbox.Error`.
fn detached<T: Send>(py: Python<'_>, f: impl FnOnce() -> Result<T, Failure> + Send) -> PyResult<T> {
    py.detach(|| {
        std::panic::catch_unwind(AssertUnwindSafe(f))
            .unwrap_or_else(|panic| Err(Failure::panic(panic)))
    })
    .into_py_result()
}

/// The store the user chose: `db`, else `QBOX_DB`; `QBOX_CLI` picks the
/// CLI's store when no path is given, as for `qbox`.
fn store_query(db: Option<PathBuf>) -> Result<StoreQuery, Failure> {
    let cli = match env_value(CLI_ENV) {
        Some(name) => Some(Flavor::parse_name(name.trim()).map_err(|problem| {
            Failure::invalid(format!(
                "environment variable {CLI_ENV}=`{name}`: {problem}"
            ))
        })?),
        None => None,
    };
    let db = db.or_else(|| env_value(DB_ENV).map(PathBuf::from));
    if let Some(path) = &db {
        check_store_path(path)?;
    }
    Ok(StoreQuery { db, cli })
}

/// Refuses a store path that cannot be a store before anything is read:
/// a symbolic link (the store is named by its own path), a directory, a
/// FIFO (which would block a reader) or any other file that is not a
/// regular file. A path that does not exist is left to the store, which
/// reports it as no login.
fn check_store_path(path: &std::path::Path) -> Result<(), Failure> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    let file_type = meta.file_type();
    let what = if file_type.is_symlink() {
        "a symbolic link; give the store's own path"
    } else if file_type.is_dir() {
        "a directory; give the path of the CLI's data.sqlite3 in it"
    } else if is_fifo(&file_type) {
        "a FIFO, not a store"
    } else if !file_type.is_file() {
        "not a regular file"
    } else {
        return Ok(());
    };
    Err(Failure::store(format!(
        "the store path {} is {what}",
        path.display()
    )))
}

#[cfg(unix)]
fn is_fifo(file_type: &std::fs::FileType) -> bool {
    std::os::unix::fs::FileTypeExt::is_fifo(file_type)
}

#[cfg(not(unix))]
fn is_fifo(_file_type: &std::fs::FileType) -> bool {
    false
}

/// A prompt as the service takes it: a non-empty `str`.
fn prompt_text(prompt: &Bound<'_, PyAny>) -> PyResult<String> {
    let Ok(text) = prompt.cast::<PyString>() else {
        let type_name = prompt
            .get_type()
            .name()
            .map_or_else(|_| "?".to_owned(), |n| n.to_string());
        return Err(
            Failure::invalid(format!("the prompt must be a str, not {type_name}")).into_pyerr(),
        );
    };
    let text: String = text.extract()?;
    if text.trim().is_empty() {
        return Err(Failure::invalid("the prompt is empty".to_owned()).into_pyerr());
    }
    Ok(text)
}

/// A conversation id checked as `qbox chat` checks it (a UUID), before
/// anything is sent.
fn conversation_id(id: Option<&Bound<'_, PyAny>>) -> PyResult<Option<String>> {
    let Some(id) = id.filter(|id| !id.is_none()) else {
        return Ok(None);
    };
    let Ok(text) = id.cast::<PyString>() else {
        return Err(
            Failure::invalid("conversation_id must be a str (a UUID)".to_owned()).into_pyerr(),
        );
    };
    let text: String = text.extract()?;
    qbox::qapi::conversation::parse_conversation_id(&text)
        .map(Some)
        .map_err(|e| Failure::from(ApiError::from(e)).into_pyerr())
}

/// The native client behind `qbox.Client`.
#[pyclass(module = "qbox._qbox", frozen)]
struct NativeClient {
    client: QClient,
}

#[pymethods]
impl NativeClient {
    #[new]
    #[pyo3(signature = (db=None, endpoint=None, access_token=None, profile_arn=None))]
    fn new(
        py: Python<'_>,
        db: Option<PathBuf>,
        endpoint: Option<String>,
        access_token: Option<String>,
        profile_arn: Option<String>,
    ) -> PyResult<Self> {
        detached(py, move || {
            let client = build_client(db, endpoint, access_token, profile_arn)?;
            Ok(Self { client })
        })
    }

    /// A stream of the answer to `prompt`; nothing is sent until it is
    /// first read.
    #[pyo3(signature = (prompt, conversation_id=None, model=None))]
    fn stream(
        &self,
        prompt: &Bound<'_, PyAny>,
        conversation_id: Option<&Bound<'_, PyAny>>,
        model: Option<String>,
    ) -> PyResult<NativeStream> {
        NativeStream::new(self.request(prompt, conversation_id, model)?, Mode::Events)
    }

    /// The whole answer to `prompt`: a stream whose `result()` is the
    /// `ChatResponse`; nothing is sent until it is first asked.
    #[pyo3(signature = (prompt, conversation_id=None, model=None))]
    fn chat(
        &self,
        prompt: &Bound<'_, PyAny>,
        conversation_id: Option<&Bound<'_, PyAny>>,
        model: Option<String>,
    ) -> PyResult<NativeStream> {
        NativeStream::new(self.request(prompt, conversation_id, model)?, Mode::Whole)
    }
}

impl NativeClient {
    /// A request, its prompt and conversation id checked before anything
    /// is sent.
    fn request(
        &self,
        prompt: &Bound<'_, PyAny>,
        conversation_id: Option<&Bound<'_, PyAny>>,
        model: Option<String>,
    ) -> PyResult<Request> {
        Ok(Request {
            client: self.client.clone(),
            prompt: prompt_text(prompt)?,
            conversation_id: self::conversation_id(conversation_id)?,
            model,
        })
    }
}

/// The client `qbox.Client(...)` describes: a bare token when one is
/// given, else the given store (with a Kiro API key as the fallback, as
/// `qbox chat`), else the login found as the CLI finds it; conversations
/// where `qbox chat` keeps them.
fn build_client(
    db: Option<PathBuf>,
    endpoint: Option<String>,
    access_token: Option<String>,
    profile_arn: Option<String>,
) -> Result<QClient, Failure> {
    if let Some(url) = &endpoint
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        return Err(Failure::invalid(format!(
            "endpoint `{url}` is not an http:// or https:// URL"
        )));
    }
    let conversations = qbox::qapi::ConversationStore::from_env_or_data_dir()?;
    let client = match access_token {
        Some(token) => {
            if db.is_some() {
                return Err(Failure::invalid(
                    "give either db or access_token, not both".to_owned(),
                ));
            }
            let token = token.trim().to_owned();
            if token.is_empty() {
                return Err(Failure::invalid("access_token is empty".to_owned()));
            }
            let mut bare = qbox::qapi::BareLogin::new(token);
            if let Some(arn) = profile_arn {
                let arn = arn.trim().to_owned();
                qbox::qapi::check_profile_arn(&arn).map_err(|problem| {
                    Failure::invalid(format!("profile_arn `{arn}` {problem}"))
                })?;
                bare.profile_arn = Some(arn);
            }
            QClient::new(Credentials::Bare(bare), ClientOptions::from_env()?)?
        }
        None => {
            if profile_arn.is_some() {
                return Err(Failure::invalid(
                    "profile_arn goes with access_token (a stored login brings its own profile)"
                        .to_owned(),
                ));
            }
            let query = store_query(db)?;
            QClient::from_env(query, true)?
        }
    };
    Ok(client
        .with_endpoint(endpoint)
        .with_conversations(conversations))
}

/// `qbox.export_token`: the login's token (refreshed first when it is due,
/// as `qbox export-token` does), or all it exports as a dict.
#[pyfunction]
#[pyo3(signature = (db=None, field=Some("access".to_owned())))]
fn export_token(py: Python<'_>, db: Option<PathBuf>, field: Option<String>) -> PyResult<Py<PyAny>> {
    if let Some(name) = field.as_deref()
        && !matches!(name, "access" | "refresh")
    {
        return Err(Failure::invalid(format!(
            "field must be \"access\", \"refresh\" or None, not {name:?}"
        ))
        .into_pyerr());
    }
    let exported = detached(py, move || {
        let query = store_query(db)?;
        handover::runtime()
            .block_on(qbox::store::export::fresh_export(query))
            .map_err(Failure::from)
    })?;
    match field.as_deref() {
        Some("access") => Ok(PyString::new(py, exported.access_token.expose())
            .into_any()
            .unbind()),
        Some(_) => match &exported.refresh_token {
            Some(token) => Ok(PyString::new(py, token.expose()).into_any().unbind()),
            None => Err(Failure::no_login(format!(
                "the login in {} has no refresh token",
                exported.path.display()
            ))
            .into_pyerr()),
        },
        None => json::to_python(py, &exported.to_json()).map(Bound::unbind),
    }
}

/// `qbox.doctor`: what `qbox doctor --json` reports, as a dict.
#[pyfunction]
fn doctor(py: Python<'_>) -> PyResult<Py<PyAny>> {
    let report = detached(py, || {
        let query = store_query(None)?;
        // The runtime directory as `qbox doctor` decides it: a session
        // directory others may write is passed over there, so here too.
        let runtime_dir = qbox::store::user_dirs::private_runtime_dir();
        let report =
            handover::runtime().block_on(qbox::doctor::report(&query, runtime_dir.as_deref()));
        Ok(report.to_json())
    })?;
    json::to_python(py, &report).map(Bound::unbind)
}

#[pymodule]
fn _qbox(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeClient>()?;
    m.add_class::<NativeStream>()?;
    events::register(m)?;
    m.add_function(wrap_pyfunction!(export_token, m)?)?;
    m.add_function(wrap_pyfunction!(doctor, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
