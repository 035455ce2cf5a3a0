//! The connection to the Docker Engine, bounded. bollard reads an answer
//! whole before decoding it and gives it no size limit and no deadline, so a
//! broken or hostile engine (an endless `/containers/json`, a byte a second)
//! could make qbox hold gigabytes or wait for ever. Every request therefore
//! goes over a connection of its own whose reads are counted and timed:
//! past [`ANSWER_LIMIT`] bytes, or [`ANSWER_DEADLINE`] after the request
//! began, the read fails and bollard reports the error. Streams that
//! legitimately last as long as a container (attach, wait, events, a build)
//! have no deadline; those decoded line by line (events, build output) are
//! capped at [`STREAM_LIMIT`] per connection, and `wait`'s single answer at
//! [`ANSWER_LIMIT`]. Only attach, raw output the caller copies chunk by
//! chunk, is not capped.
//!
//! Used for every engine qbox connects to: `unix://`, `tcp://`/`http://`,
//! and on Windows `npipe://`. Other schemes (`ssh://`, `https://`) are
//! refused by `engine::connect`, never handed to a connector without these
//! bounds.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bollard::{BollardRequest, Docker};
use hyper::http::{HeaderValue, Method, Uri, header};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Most bytes qbox reads from one engine answer it reads whole (a listing,
/// an inspection, a creation). A real `/containers/json` for a thousand
/// containers is a few megabytes.
pub const ANSWER_LIMIT: u64 = 16 << 20;

/// Most bytes qbox reads from one stream it decodes line by line (the
/// engine's events, a build's progress).
pub const STREAM_LIMIT: u64 = 64 << 20;

/// How long one answer may take, from the request to its last byte.
pub const ANSWER_DEADLINE: Duration = Duration::from_secs(60);

/// Where the engine listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Unix(PathBuf),
    Tcp(String),
    /// A Windows named pipe (`\\.\pipe\docker_engine`).
    #[cfg(windows)]
    Pipe(String),
}

impl Target {
    /// The target of a `DOCKER_HOST`-style endpoint qbox connects to itself.
    pub fn parse(endpoint: &str) -> Option<Self> {
        if let Some(path) = endpoint.strip_prefix("unix://") {
            return Some(Self::Unix(PathBuf::from(path)));
        }
        // `npipe:////./pipe/docker_engine`: the slashes are the pipe name's
        // backslashes, as the docker CLI writes them.
        #[cfg(windows)]
        if let Some(path) = endpoint.strip_prefix("npipe://") {
            let name = path.replace('/', "\\");
            return (name.len() > 2).then_some(Self::Pipe(name));
        }
        let address = endpoint
            .strip_prefix("tcp://")
            .or_else(|| endpoint.strip_prefix("http://"))?;
        let address = address.trim_end_matches('/');
        (!address.is_empty() && !address.contains('/')).then(|| Self::Tcp(address.to_owned()))
    }
}

/// How one request's answer is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    pub limit: Option<u64>,
    pub deadline: Option<Duration>,
}

/// The bound of a request, from its method and path (`/v1.47/containers/…`).
pub fn bound_for(method: &Method, path: &str, query: Option<&str>) -> Bound {
    // Without the API version prefix.
    let path = match path.strip_prefix("/v") {
        Some(rest) => rest.find('/').map_or(path, |at| &rest[at..]),
        None => path,
    };
    let answer = Bound {
        limit: Some(ANSWER_LIMIT),
        deadline: Some(ANSWER_DEADLINE),
    };
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (_, ["containers", _, "attach"]) => Bound {
            limit: None,
            deadline: None,
        },
        (_, ["containers", _, "wait"]) => Bound {
            limit: Some(ANSWER_LIMIT),
            deadline: None,
        },
        (_, ["events"] | ["build"]) => Bound {
            limit: Some(STREAM_LIMIT),
            deadline: None,
        },
        // The engine answers a stop only when the container has stopped,
        // up to `t` seconds later.
        (&Method::POST, ["containers", _, "stop" | "restart"]) => {
            let seconds = query
                .into_iter()
                .flat_map(|q| q.split('&'))
                .find_map(|pair| pair.strip_prefix("t="))
                .and_then(|t| t.parse::<u64>().ok())
                .unwrap_or(10);
            Bound {
                limit: Some(ANSWER_LIMIT),
                deadline: Some(ANSWER_DEADLINE + Duration::from_secs(seconds)),
            }
        }
        _ => answer,
    }
}

/// A bollard client whose every request goes through [`send`].
pub fn client(target: Target) -> Result<Docker, bollard::errors::Error> {
    Docker::connect_with_custom_transport(
        move |request: BollardRequest| send(target.clone(), request),
        Some("http://docker"),
        // bollard's own limit on the wait for an answer's headers (a year:
        // in effect none); the bound of each request is tighter, or absent
        // on purpose for the streams that last as long as a container.
        365 * 24 * 60 * 60,
        bollard::API_DEFAULT_VERSION,
    )
}

/// Sends one request over a new connection to `target`, reads bounded by
/// [`bound_for`].
async fn send(
    target: Target,
    request: BollardRequest,
) -> Result<hyper::Response<hyper::body::Incoming>, bollard::errors::Error> {
    let (mut parts, body) = request.into_parts();
    let bound = bound_for(&parts.method, parts.uri.path(), parts.uri.query());
    // HTTP/1.1 over a socket: the request line carries only the path.
    let origin = parts
        .uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    parts.uri = origin.parse::<Uri>().map_err(io::Error::other)?;
    parts
        .headers
        .insert(header::HOST, HeaderValue::from_static("docker"));
    let request = hyper::Request::from_parts(parts, body);
    let connect = async {
        Ok::<_, io::Error>(match &target {
            #[cfg(unix)]
            Target::Unix(path) => Io::Unix(tokio::net::UnixStream::connect(path).await?),
            #[cfg(not(unix))]
            Target::Unix(path) => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("no Unix sockets here: {}", path.display()),
                ));
            }
            Target::Tcp(address) => Io::Tcp(tokio::net::TcpStream::connect(address).await?),
            #[cfg(windows)]
            Target::Pipe(name) => Io::Pipe(open_pipe(name).await?),
        })
    };
    let stream = tokio::time::timeout(ANSWER_DEADLINE, connect)
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the engine accepted no connection within {} s",
                    ANSWER_DEADLINE.as_secs()
                ),
            )
        })??;
    let stream = Bounded::new(stream, bound);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(bollard::errors::Error::from)?;
    // The connection is driven on its own task; attach upgrades it.
    tokio::spawn(async move {
        if let Err(err) = connection.with_upgrades().await {
            tracing::debug!("engine connection: {err}");
        }
    });
    Ok(sender.send_request(request).await?)
}

/// Opens the engine's named pipe, waiting while every instance is busy
/// (the caller's deadline bounds the wait).
#[cfg(windows)]
async fn open_pipe(name: &str) -> io::Result<tokio::net::windows::named_pipe::NamedPipeClient> {
    /// `ERROR_PIPE_BUSY`: all instances are in use; another comes shortly.
    const PIPE_BUSY: i32 = 231;
    loop {
        match tokio::net::windows::named_pipe::ClientOptions::new().open(name) {
            Err(err) if err.raw_os_error() == Some(PIPE_BUSY) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

/// A Unix socket, a TCP stream or a named pipe.
enum Io {
    #[cfg(unix)]
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream),
    #[cfg(windows)]
    Pipe(tokio::net::windows::named_pipe::NamedPipeClient),
}

/// The one stream inside an [`Io`], whatever its kind.
macro_rules! each_io {
    ($io:expr, $s:ident => $body:expr) => {
        match $io {
            #[cfg(unix)]
            Io::Unix($s) => $body,
            Io::Tcp($s) => $body,
            #[cfg(windows)]
            Io::Pipe($s) => $body,
        }
    };
}

/// A stream whose reads fail past a byte limit or a deadline.
struct Bounded {
    inner: Io,
    read: u64,
    bound: Bound,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Bounded {
    fn new(inner: Io, bound: Bound) -> Self {
        Self {
            inner,
            read: 0,
            bound,
            deadline: bound.deadline.map(|d| Box::pin(tokio::time::sleep(d))),
        }
    }
}

impl AsyncRead for Bounded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(deadline) = this.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            let seconds = this.bound.deadline.unwrap_or_default().as_secs();
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the engine's answer did not arrive in full within {seconds} s"),
            )));
        }
        let before = buf.filled().len();
        let polled = each_io!(&mut this.inner, s => Pin::new(s).poll_read(cx, buf));
        if let Poll::Ready(Ok(())) = polled {
            this.read += (buf.filled().len() - before) as u64;
            if let Some(limit) = this.bound.limit
                && this.read > limit
            {
                return Poll::Ready(Err(io::Error::other(format!(
                    "the engine's answer is larger than {} MiB",
                    limit >> 20
                ))));
            }
        }
        polled
    }
}

impl AsyncWrite for Bounded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        each_io!(&mut self.get_mut().inner, s => Pin::new(s).poll_write(cx, data))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each_io!(&mut self.get_mut().inner, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each_io!(&mut self.get_mut().inner, s => Pin::new(s).poll_shutdown(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_qbox_connects_to_itself() {
        assert_eq!(
            Target::parse("unix:///var/run/docker.sock"),
            Some(Target::Unix("/var/run/docker.sock".into()))
        );
        assert_eq!(
            Target::parse("tcp://127.0.0.1:2375"),
            Some(Target::Tcp("127.0.0.1:2375".into()))
        );
        assert_eq!(
            Target::parse("http://localhost:2375/"),
            Some(Target::Tcp("localhost:2375".into()))
        );
        assert_eq!(Target::parse("ssh://me@host"), None);
        assert_eq!(Target::parse("npipe:////./pipe/docker_engine"), None);
    }

    #[test]
    fn answers_are_capped_and_timed_streams_are_not_timed() {
        let get = Method::GET;
        let post = Method::POST;
        let answer = bound_for(&get, "/v1.47/containers/json", Some("all=true"));
        assert_eq!(answer.limit, Some(ANSWER_LIMIT));
        assert_eq!(answer.deadline, Some(ANSWER_DEADLINE));
        assert_eq!(bound_for(&get, "/version", None), answer);
        assert_eq!(bound_for(&post, "/v1.47/containers/create", None), answer);
        let attach = bound_for(&post, "/v1.47/containers/abc/attach", None);
        assert_eq!((attach.limit, attach.deadline), (None, None));
        let events = bound_for(&get, "/v1.47/events", Some("filters=x"));
        assert_eq!((events.limit, events.deadline), (Some(STREAM_LIMIT), None));
        let wait = bound_for(&post, "/v1.47/containers/abc/wait", None);
        assert_eq!((wait.limit, wait.deadline), (Some(ANSWER_LIMIT), None));
        let stop = bound_for(&post, "/v1.47/containers/abc/stop", Some("t=300"));
        assert_eq!(
            stop.deadline,
            Some(ANSWER_DEADLINE + Duration::from_secs(300))
        );
    }
}
