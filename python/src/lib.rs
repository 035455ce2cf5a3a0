//! `qbox._qbox`: the native part of the `qbox` Python package. It binds the
//! `qbox` library crate (its client, login store and event-stream decoder)
//! and adds nothing of its own to the protocol: Python code sees typed
//! events and `qbox.Error` subclasses.
//!
//! Every request runs on one shared tokio runtime, without the GIL; Python
//! awaits an asyncio future that the runtime completes. Cancelling that
//! future drops the Rust future, and with it the HTTP connection. A panic
//! is caught at this boundary and raised as `qbox.Error`, never as a Rust
//! panic in Python.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;
use pyo3::prelude::*;
use pyo3::types::PyString;

use qbox::qapi::{ApiError, ChatTurn, ClientOptions, Credentials, QClient};
use qbox::store::{Flavor, StoreQuery};

mod errors;
mod events;
mod json;

use errors::{Failure, PyResultExt};
use events::{Batch, ChatOutcome};

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

/// Turns `future` into an awaitable on the shared runtime; its panics
/// become `qbox.Error`, its errors the matching `qbox.Error` subclass.
fn awaitable<'py, T>(
    py: Python<'py>,
    future: impl Future<Output = Result<T, Failure>> + Send + 'static,
) -> PyResult<Bound<'py, PyAny>>
where
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    pyo3_async_runtimes::tokio::future_into_py(py, async move {
        AssertUnwindSafe(future)
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| Err(Failure::panic(panic)))
            .into_py_result()
    })
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
        let prompt = prompt_text(prompt)?;
        let conversation_id = self::conversation_id(conversation_id)?;
        Ok(NativeStream {
            state: Arc::new(Mutex::new(StreamState::NotStarted {
                client: self.client.clone(),
                prompt,
                conversation_id,
                model,
            })),
        })
    }

    /// The whole answer to `prompt` (an awaitable of `ChatResponse`).
    #[pyo3(signature = (prompt, conversation_id=None, model=None))]
    fn chat<'py>(
        &self,
        py: Python<'py>,
        prompt: &Bound<'py, PyAny>,
        conversation_id: Option<&Bound<'py, PyAny>>,
        model: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let prompt = prompt_text(prompt)?;
        let conversation_id = self::conversation_id(conversation_id)?;
        let client = self.client.clone();
        awaitable(py, async move {
            let mut turn = client
                .chat(&prompt, model, conversation_id.as_deref())
                .await?;
            let mut outcome = ChatOutcome::default();
            while let Some(event) = turn.next_event().await? {
                outcome.add(event);
            }
            outcome.conversation_id = turn.conversation_id().to_owned();
            outcome.text = turn.take_answer();
            Ok(outcome)
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

/// Where a stream is.
enum StreamState {
    /// Created; the request goes out on the first read.
    NotStarted {
        client: QClient,
        prompt: String,
        conversation_id: Option<String>,
        model: Option<String>,
    },
    /// Answering; the turn holds the connection.
    Running(Box<ChatTurn>),
    /// A read is in progress (the turn is with it).
    Reading { conversation_id: Option<String> },
    /// Events were handed out and then the answer failed: the error comes
    /// with the next read.
    Failed(ApiError, String),
    /// Ended, failed, closed or cancelled.
    Finished { conversation_id: Option<String> },
}

impl StreamState {
    fn conversation_id(&self) -> Option<String> {
        match self {
            Self::NotStarted {
                conversation_id, ..
            }
            | Self::Reading { conversation_id }
            | Self::Finished { conversation_id } => conversation_id.clone(),
            Self::Running(turn) => Some(turn.conversation_id().to_owned()),
            Self::Failed(_, id) => Some(id.clone()),
        }
    }
}

/// The native side of `qbox.EventStream`: hands out events in batches (all
/// that one wait brought), so a long answer of small events costs one
/// hand-over per network read, not one per event.
#[pyclass(module = "qbox._qbox", frozen)]
struct NativeStream {
    state: Arc<Mutex<StreamState>>,
}

/// Puts a stream in `Finished` if the read holding its turn is dropped
/// before it ends (the Python task was cancelled): the turn, and so the
/// connection, is gone with it.
struct ReadGuard {
    state: Arc<Mutex<StreamState>>,
    conversation_id: Option<String>,
    armed: bool,
}

impl Drop for ReadGuard {
    fn drop(&mut self) {
        if self.armed {
            *lock(&self.state) = StreamState::Finished {
                conversation_id: self.conversation_id.take(),
            };
        }
    }
}

fn lock(state: &Mutex<StreamState>) -> std::sync::MutexGuard<'_, StreamState> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[pymethods]
impl NativeStream {
    /// An awaitable of `(events, ended)`: the events that are there after
    /// one wait (at least one unless `ended`).
    fn next_batch<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let state = self.state.clone();
        awaitable(py, read_batch(state))
    }

    /// Ends the stream now: the connection is closed, the turn not saved.
    fn close(&self) {
        let mut state = lock(&self.state);
        if !matches!(*state, StreamState::Reading { .. }) {
            let conversation_id = state.conversation_id();
            *state = StreamState::Finished { conversation_id };
        }
    }

    /// The conversation's id, once known (a new conversation's id is made
    /// when the request is sent).
    #[getter]
    fn conversation_id(&self) -> Option<String> {
        lock(&self.state).conversation_id()
    }
}

/// One read: starts the request if needed, waits for the next event, then
/// takes every event already decoded without waiting again.
async fn read_batch(state: Arc<Mutex<StreamState>>) -> Result<Batch, Failure> {
    let taken = {
        let mut guard = lock(&state);
        let conversation_id = guard.conversation_id();
        match std::mem::replace(&mut *guard, StreamState::Reading { conversation_id }) {
            StreamState::Reading { conversation_id } => {
                *guard = StreamState::Reading { conversation_id };
                return Err(Failure::invalid(
                    "the stream is already being read by another task".to_owned(),
                ));
            }
            StreamState::Failed(error, id) => {
                *guard = StreamState::Finished {
                    conversation_id: Some(id),
                };
                return Err(error.into());
            }
            StreamState::Finished { conversation_id } => {
                *guard = StreamState::Finished { conversation_id };
                return Ok(Batch::ended());
            }
            other => other,
        }
    };
    let mut read = ReadGuard {
        state: state.clone(),
        conversation_id: taken.conversation_id(),
        armed: true,
    };
    let mut turn = match taken {
        StreamState::NotStarted {
            client,
            prompt,
            conversation_id,
            model,
        } => Box::new(
            client
                .chat(&prompt, model, conversation_id.as_deref())
                .await?,
        ),
        StreamState::Running(turn) => turn,
        _ => return Ok(Batch::ended()),
    };
    read.conversation_id = Some(turn.conversation_id().to_owned());
    let mut batch = Batch::default();
    let mut next = turn.next_event().await;
    loop {
        match next {
            Ok(Some(event)) => batch.events.push(event),
            Ok(None) => {
                batch.ended = true;
                break;
            }
            Err(error) if batch.events.is_empty() => return Err(error.into()),
            Err(error) => {
                read.armed = false;
                *lock(&state) = StreamState::Failed(error, turn.conversation_id().to_owned());
                return Ok(batch);
            }
        }
        // Events whose frames are already here, without waiting: a poll
        // that would wait is dropped, which loses nothing (no bytes are
        // taken from the connection unless they are decoded).
        match turn.next_event().now_or_never() {
            Some(result) => next = result,
            None => break,
        }
    }
    read.armed = false;
    *lock(&state) = if batch.ended {
        StreamState::Finished {
            conversation_id: Some(turn.conversation_id().to_owned()),
        }
    } else {
        StreamState::Running(turn)
    };
    Ok(batch)
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
        pyo3_async_runtimes::tokio::get_runtime()
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
        let report = pyo3_async_runtimes::tokio::get_runtime()
            .block_on(qbox::doctor::report(&query, runtime_dir.as_deref()));
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
