//! How an answer crosses from the tokio runtime to Python's event loop.
//!
//! A task on the runtime sends the request and reads the answer ahead
//! into a bounded queue; Python takes whatever is queued without waiting
//! (one call, no future, when the runtime is ahead, as it is on a long
//! answer). Only when the queue is empty does Python wait: the event loop
//! watches one end of a socket pair (`loop.add_reader`), and the task
//! writes a byte to the other end once it has queued something. So the
//! runtime's threads never take the GIL, the event loop sleeps without it,
//! and a wait costs one wake-up of the event loop: no future handed
//! between threads per batch, no thread of the blocking pool in between.
//! Dropping or closing the stream aborts the task, and with it the
//! request and its connection.

use std::io::{Read, Write};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use futures_util::FutureExt;
use pyo3::prelude::*;
use tokio::runtime::Runtime;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use qbox::qapi::{ChatEvent, QClient};

use crate::errors::Failure;
use crate::events::{Batch, ChatOutcome};

/// Most events read ahead and not yet taken by Python; the task stops
/// reading the connection (and TCP holds the server back) until Python
/// takes them.
const MAX_QUEUED: usize = 16 * 1024;
/// Most events gathered before they are queued: a network read that
/// brings many is handed over in parts, so Python can start on the first
/// while the rest are decoded.
const MAX_GATHERED: usize = 256;

/// The runtime every request of the package runs on (its threads never
/// hold the GIL).
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .thread_name("qbox")
            .enable_all()
            .build()
            .expect("a tokio runtime can be built")
    })
}

/// What a stream asks, kept until it is first read.
pub struct Request {
    pub client: QClient,
    pub prompt: String,
    pub conversation_id: Option<String>,
    pub model: Option<String>,
}

/// What Python gets from the task: events one by one, or the whole
/// answer at the end.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Events,
    Whole,
}

/// How the answer ended, as far as Python has been told.
enum End {
    /// Still coming.
    Open,
    /// Complete (and the turn saved).
    Ended,
    /// Failed; the error comes after the events queued before it.
    Failed(Failure),
    /// The error was raised, or the stream closed: nothing more.
    Over,
}

/// What the task and Python share, under one lock.
struct Queue {
    events: Vec<ChatEvent>,
    /// `Client.chat`'s answer, once complete.
    outcome: Option<ChatOutcome>,
    end: End,
    conversation_id: Option<String>,
    /// Python found nothing and waits on the socket: the next thing queued
    /// writes the byte that wakes it.
    waiting: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when Python empties a full queue.
    room: Notify,
    wakeup: Wakeup,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `batch` and wakes Python if it waits.
    fn push(&self, batch: &mut Vec<ChatEvent>) {
        if batch.is_empty() {
            return;
        }
        let mut queue = self.lock();
        if queue.events.is_empty() {
            std::mem::swap(&mut queue.events, batch);
        } else {
            queue.events.append(batch);
        }
        self.wake_if_waiting(&mut queue);
    }

    fn finish(&self, end: End, outcome: Option<ChatOutcome>) {
        let mut queue = self.lock();
        if matches!(queue.end, End::Open) {
            queue.end = end;
            queue.outcome = outcome;
        }
        self.wake_if_waiting(&mut queue);
    }

    fn wake_if_waiting(&self, queue: &mut Queue) {
        if std::mem::take(&mut queue.waiting) {
            self.wakeup.signal();
        }
    }

    /// Waits while the queue is full.
    async fn room(&self) {
        loop {
            let notified = self.room.notified();
            if self.lock().events.len() < MAX_QUEUED {
                return;
            }
            notified.await;
        }
    }
}

/// Where a stream is.
enum Task {
    /// Created; the request goes out on the first read.
    NotStarted(Box<Request>),
    Running(AbortHandle),
    Closed,
}

/// The native side of `qbox.EventStream` and of `Client.chat`: an answer
/// being read on the runtime, and what Python needs to take it.
#[pyclass(module = "qbox._qbox", frozen)]
pub struct NativeStream {
    shared: Arc<Shared>,
    task: Mutex<Task>,
    mode: Mode,
}

impl NativeStream {
    pub fn new(request: Request, mode: Mode) -> PyResult<Self> {
        let wakeup = Wakeup::new().map_err(|e| {
            Failure::Plain {
                class: "Error",
                message: format!("cannot make the socket pair that wakes the event loop: {e}"),
            }
            .into_pyerr()
        })?;
        Ok(Self {
            shared: Arc::new(Shared {
                queue: Mutex::new(Queue {
                    events: Vec::new(),
                    outcome: None,
                    end: End::Open,
                    conversation_id: request.conversation_id.clone(),
                    waiting: false,
                }),
                room: Notify::new(),
                wakeup,
            }),
            task: Mutex::new(Task::NotStarted(Box::new(request))),
            mode,
        })
    }

    fn task(&self) -> MutexGuard<'_, Task> {
        self.task
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sends the request, on the first read.
    fn start(&self) {
        let mut task = self.task();
        if !matches!(*task, Task::NotStarted(_)) {
            return;
        }
        let Task::NotStarted(request) = std::mem::replace(&mut *task, Task::Closed) else {
            return;
        };
        let shared = self.shared.clone();
        let mode = self.mode;
        let handle = runtime().spawn(async move {
            let read = AssertUnwindSafe(read_answer(&shared, *request, mode))
                .catch_unwind()
                .await;
            match read {
                Ok(Ok(outcome)) => shared.finish(End::Ended, outcome),
                Ok(Err(failure)) => shared.finish(End::Failed(failure), None),
                Err(panic) => shared.finish(End::Failed(Failure::panic(panic)), None),
            }
        });
        *task = Task::Running(handle.abort_handle());
    }
}

impl Drop for NativeStream {
    fn drop(&mut self) {
        if let Task::Running(handle) = &*self.task() {
            handle.abort();
        }
    }
}

#[pymethods]
impl NativeStream {
    /// `(events, ended)`: every event queued, as an iterator (`None` when
    /// nothing is: then wait on `fileno()` unless `ended`, and take
    /// again). The answer's error is raised once the events before it are
    /// taken.
    fn take(&self) -> PyResult<(Option<Batch>, bool)> {
        self.start();
        let mut queue = self.shared.lock();
        let events = std::mem::take(&mut queue.events);
        if events.len() >= MAX_QUEUED {
            self.shared.room.notify_one();
        }
        let ended = match &queue.end {
            End::Open => {
                queue.waiting = events.is_empty();
                false
            }
            End::Ended | End::Over => true,
            End::Failed(_) if !events.is_empty() => false,
            End::Failed(_) => {
                let End::Failed(failure) = std::mem::replace(&mut queue.end, End::Over) else {
                    unreachable!("matched above");
                };
                drop(queue);
                return Err(failure.into_pyerr());
            }
        };
        drop(queue);
        let events = (!events.is_empty()).then(|| Batch::new(events));
        Ok((events, ended))
    }

    /// `Client.chat`'s `ChatResponse` once the answer is complete, else
    /// `None` (then wait on `fileno()`); the answer's error is raised.
    fn result<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.start();
        let mut queue = self.shared.lock();
        match std::mem::replace(&mut queue.end, End::Over) {
            End::Open => {
                queue.end = End::Open;
                queue.waiting = true;
                Ok(None)
            }
            End::Ended => {
                let outcome = queue.outcome.take().unwrap_or_default();
                drop(queue);
                Ok(Some(outcome.into_pyobject(py)?.into_any()))
            }
            End::Failed(failure) => {
                drop(queue);
                Err(failure.into_pyerr())
            }
            End::Over => {
                Err(Failure::invalid("the answer was already taken".to_owned()).into_pyerr())
            }
        }
    }

    /// The socket the event loop watches while this stream waits.
    fn fileno(&self) -> i64 {
        self.shared.wakeup.fileno()
    }

    /// The event loop's callback when the socket is readable: empties it
    /// and completes `waiter` (an asyncio future), unless it is done.
    fn wake(&self, waiter: &Bound<'_, PyAny>) -> PyResult<()> {
        self.shared.wakeup.drain();
        let py = waiter.py();
        if !waiter
            .call_method0(pyo3::intern!(py, "done"))?
            .is_truthy()?
        {
            waiter.call_method1(pyo3::intern!(py, "set_result"), (py.None(),))?;
        }
        Ok(())
    }

    /// Ends the stream now: the request is cancelled and its connection
    /// closed, the turn not saved. Nothing happens to an answer that has
    /// ended.
    fn close(&self) {
        let mut task = self.task();
        if let Task::Running(handle) = &*task {
            handle.abort();
        }
        *task = Task::Closed;
        drop(task);
        let mut queue = self.shared.lock();
        queue.events.clear();
        if matches!(queue.end, End::Open | End::Failed(_)) {
            queue.end = End::Over;
        }
    }

    /// The conversation's id, once known (a new conversation's id is made
    /// when the request is sent).
    #[getter]
    fn conversation_id(&self) -> Option<String> {
        self.shared.lock().conversation_id.clone()
    }
}

/// The task: sends the request and reads the answer to its end, queueing
/// its events (or gathering the whole answer). The events decoded before
/// an error are queued before it.
async fn read_answer(
    shared: &Shared,
    request: Request,
    mode: Mode,
) -> Result<Option<ChatOutcome>, Failure> {
    let mut turn = request
        .client
        .chat(
            &request.prompt,
            request.model,
            request.conversation_id.as_deref(),
        )
        .await?;
    shared.lock().conversation_id = Some(turn.conversation_id().to_owned());
    if mode == Mode::Whole {
        let mut outcome = ChatOutcome::default();
        while let Some(event) = turn.next_event().await? {
            outcome.add(event);
        }
        outcome.conversation_id = turn.conversation_id().to_owned();
        outcome.text = turn.take_answer();
        return Ok(Some(outcome));
    }
    let mut batch = Vec::new();
    loop {
        shared.room().await;
        let mut next = turn.next_event().await;
        // With the first event, every one already decoded, without
        // waiting: a poll that would wait is dropped, which loses nothing
        // (no bytes are taken from the connection unless they are decoded).
        loop {
            match next {
                Ok(Some(event)) => batch.push(event),
                Ok(None) => {
                    shared.push(&mut batch);
                    return Ok(None);
                }
                Err(error) => {
                    shared.push(&mut batch);
                    return Err(error.into());
                }
            }
            if batch.len() >= MAX_GATHERED {
                break;
            }
            match turn.next_event().now_or_never() {
                Some(result) => next = result,
                None => break,
            }
        }
        shared.push(&mut batch);
    }
}

/// The socket pair that wakes the event loop: Python watches `reader`,
/// the task writes a byte to `writer`.
struct Wakeup {
    reader: Socket,
    writer: Socket,
}

#[cfg(unix)]
type Socket = std::os::unix::net::UnixStream;
#[cfg(not(unix))]
type Socket = std::net::TcpStream;

impl Wakeup {
    #[cfg(unix)]
    fn new() -> std::io::Result<Self> {
        let (reader, writer) = Socket::pair()?;
        Self::nonblocking(reader, writer)
    }

    /// Without Unix sockets: a connection to ourselves on the loopback.
    #[cfg(not(unix))]
    fn new() -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))?;
        let writer = Socket::connect(listener.local_addr()?)?;
        let (reader, _) = listener.accept()?;
        writer.set_nodelay(true)?;
        Self::nonblocking(reader, writer)
    }

    fn nonblocking(reader: Socket, writer: Socket) -> std::io::Result<Self> {
        reader.set_nonblocking(true)?;
        writer.set_nonblocking(true)?;
        Ok(Self { reader, writer })
    }

    #[cfg(unix)]
    fn fileno(&self) -> i64 {
        i64::from(std::os::fd::AsRawFd::as_raw_fd(&self.reader))
    }

    #[cfg(windows)]
    fn fileno(&self) -> i64 {
        std::os::windows::io::AsRawSocket::as_raw_socket(&self.reader) as i64
    }

    /// One byte; a full buffer already reads as readable, so a failed
    /// write loses nothing.
    fn signal(&self) {
        let _ = (&self.writer).write(&[1]);
    }

    /// Empties the socket: one read takes every byte there (one is
    /// written per wait); a byte that comes later wakes the loop again,
    /// harmlessly.
    fn drain(&self) {
        let mut buffer = [0u8; 64];
        let _ = (&self.reader).read(&mut buffer);
    }
}
