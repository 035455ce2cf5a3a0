//! Issue 30: a broken or hostile Docker Engine. A stand-in engine on a Unix
//! socket (plain threads, HTTP/1.1 by hand) serves an endless
//! `/containers/json`, answers a byte a second, answers a create only after
//! qbox was asked to stop, and puts escape sequences in names; qbox must
//! stay bounded, hear its signals, remove what was created late, and print
//! only clean text.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use qbox::store::Flavor;

use crate::util::{KillOnDrop, TestHome, valid_login};

/// One request as the stand-in read it.
#[derive(Debug, Clone)]
struct Request {
    method: String,
    /// Without the `/v1.NN` prefix and the query.
    path: String,
}

/// What the stand-in saw and sent, shared with its connection threads.
#[derive(Default)]
struct Seen {
    requests: Mutex<Vec<Request>>,
    /// Bytes of the endless answer written before the reader went away.
    endless_sent: AtomicU64,
}

type Handler = dyn Fn(&Request, &mut UnixStream, &Seen) + Send + Sync;

/// A stand-in engine listening at `path` until the test ends.
struct Engine {
    path: PathBuf,
    seen: Arc<Seen>,
    arrived: mpsc::Receiver<Request>,
}

impl Engine {
    fn start(
        dir: &Path,
        handler: impl Fn(&Request, &mut UnixStream, &Seen) + Send + Sync + 'static,
    ) -> Self {
        let path = dir.join("engine.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let seen = Arc::new(Seen::default());
        let (tell, arrived) = mpsc::channel();
        let handler: Arc<Handler> = Arc::new(handler);
        let shared = Arc::clone(&seen);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let (seen, handler, tell) =
                    (Arc::clone(&shared), Arc::clone(&handler), tell.clone());
                std::thread::spawn(move || {
                    let Some(request) = read_request(&mut stream) else {
                        return;
                    };
                    seen.requests.lock().unwrap().push(request.clone());
                    let _ = tell.send(request.clone());
                    handler(&request, &mut stream, &seen);
                });
            }
        });
        Self {
            path,
            seen,
            arrived,
        }
    }

    fn host(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    fn requests(&self) -> Vec<Request> {
        self.seen.requests.lock().unwrap().clone()
    }

    /// Waits for a request to `path` (`method`), failing after a minute.
    fn wait_for(&self, method: &str, path: &str) {
        loop {
            let request = self
                .arrived
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("no {method} {path} came: {:?}", self.requests()));
            if request.method == method && request.path == path {
                return;
            }
        }
    }
}

fn read_request(stream: &mut UnixStream) -> Option<Request> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let target = parts.next()?;
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    let path = target.split('?').next().unwrap_or(target);
    let path = match path.strip_prefix("/v") {
        Some(rest) if rest.starts_with(|c: char| c.is_ascii_digit()) => {
            rest.find('/').map_or(path, |at| &rest[at..])
        }
        _ => path,
    };
    Some(Request {
        method,
        path: path.to_owned(),
    })
}

fn respond(stream: &mut UnixStream, status: &str, body: &str) {
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

const VERSION: &str = r#"{"Version":"27.0.0","ApiVersion":"1.45","MinAPIVersion":"1.24","Os":"linux","Arch":"amd64"}"#;

/// How much of the endless answer the stand-in writes at most: far more
/// than qbox's cap, far less than would hurt the machine running the test.
const ENDLESS_AT_MOST: u64 = 256 << 20;

/// `/containers/json` that never ends (up to [`ENDLESS_AT_MOST`]).
fn endless_list(request: &Request, stream: &mut UnixStream, seen: &Seen) {
    match request.path.as_str() {
        "/version" => respond(stream, "200 OK", VERSION),
        "/containers/json" => {
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n["
            );
            let item = br#"{"Id":"0123456789ab","Names":["/x"],"Labels":{"qbox.managed":"true"}},"#;
            let chunk: Vec<u8> = item.iter().copied().cycle().take(1 << 20).collect();
            let mut sent = 0u64;
            while sent < ENDLESS_AT_MOST {
                if stream.write_all(&chunk).is_err() {
                    break;
                }
                sent += chunk.len() as u64;
                seen.endless_sent.store(sent, Ordering::SeqCst);
            }
        }
        _ => respond(stream, "404 Not Found", r#"{"message":"no"}"#),
    }
}

fn home_with_engine(
    handler: impl Fn(&Request, &mut UnixStream, &Seen) + Send + Sync + 'static,
) -> (TestHome, Engine) {
    let home = TestHome::new();
    let engine = Engine::start(home.path(), handler);
    (home, engine)
}

fn qbox(home: &TestHome, engine: &Engine) -> crate::util::Qbox {
    home.qbox()
        .env("DOCKER_HOST", engine.host())
        .env("XDG_RUNTIME_DIR", crate::util::runtime_dir(home.path()))
}

#[test]
fn issue_30_an_endless_container_list_is_cut_at_the_cap() {
    for command in [&["ps"][..], &["ps", "-a", "--json"], &["stop", "web"]] {
        let (home, engine) = home_with_engine(endless_list);
        let run = qbox(&home, &engine).args(command.iter().copied()).run();
        assert_ne!(run.code, 0, "{command:?}: {}", run.stdout);
        run.assert_stderr_contains("larger than 16 MiB");
        // What the stand-in could write before qbox stopped reading: the
        // cap plus what the socket buffers hold, not the whole answer.
        let sent = engine.seen.endless_sent.load(Ordering::SeqCst);
        assert!(
            sent < 64 << 20,
            "{command:?}: qbox read {} MiB of an endless answer",
            sent >> 20
        );
    }
}

/// Answers `/version` one byte a second, for ever.
fn a_byte_a_second(request: &Request, stream: &mut UnixStream, _: &Seen) {
    let answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{VERSION}",
        VERSION.len()
    );
    if request.path == "/version" {
        for byte in answer.bytes() {
            if stream.write_all(&[byte]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

fn signal(child: &Child, name: &str) {
    let sent = std::process::Command::new("kill")
        .args([name, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

fn spawn(qbox: crate::util::Qbox) -> KillOnDrop {
    KillOnDrop::new(
        qbox.command()
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

fn output(child: KillOnDrop) -> (Option<i32>, String, String) {
    let out = child.into_inner().wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn issue_30_a_slow_engine_does_not_make_qbox_run_deaf_to_signals() {
    for (flags, signal_name, code) in [
        (&[][..], "-TERM", 143),
        (&[][..], "-INT", 130),
        (&["-d"][..], "-TERM", 143),
    ] {
        let (home, engine) = home_with_engine(a_byte_a_second);
        let mut args = vec!["run"];
        args.extend(flags);
        args.extend(["--auth", "none", "img", "--", "true"]);
        let mut child = spawn(qbox(&home, &engine).args(args));
        engine.wait_for("GET", "/version");
        signal(child.child(), signal_name);
        let status = child.wait(Duration::from_secs(30), "qbox run after a signal");
        let (_, _, stderr) = output(child);
        assert_eq!(
            status.code(),
            Some(code),
            "{flags:?} {signal_name}: {stderr}"
        );
        assert!(
            stderr.contains("came before the container was started"),
            "{stderr}"
        );
    }
}

/// Answers a create only a while after it came (when qbox has been told
/// to stop), and records the rest.
fn a_late_create(request: &Request, stream: &mut UnixStream, _: &Seen) {
    match (request.method.as_str(), request.path.as_str()) {
        (_, "/version") => respond(stream, "200 OK", VERSION),
        ("GET", "/images/img/json") => respond(stream, "200 OK", r#"{"Id":"sha256:00"}"#),
        ("POST", "/containers/create") => {
            std::thread::sleep(Duration::from_millis(1500));
            respond(
                stream,
                "201 Created",
                r#"{"Id":"abc123def456","Warnings":[]}"#,
            );
        }
        ("DELETE", _) => respond(stream, "204 No Content", ""),
        ("GET", "/containers/json") => respond(stream, "200 OK", "[]"),
        _ => respond(
            stream,
            "500 Internal Server Error",
            r#"{"message":"not here"}"#,
        ),
    }
}

#[test]
fn issue_30_a_container_created_after_a_signal_is_removed_and_never_started() {
    // The foreground run without a login, the detached one with its
    // snapshot, which must not outlive the run either.
    for flags in [&["--auth", "none"][..], &["-d"][..]] {
        let (home, engine) = home_with_engine(a_late_create);
        home.login(Flavor::AmazonQ, &valid_login("late"));
        let mut args = vec!["run"];
        args.extend(flags);
        args.extend(["img", "--", "true"]);
        let mut child = spawn(qbox(&home, &engine).args(args));
        engine.wait_for("POST", "/containers/create");
        signal(child.child(), "-TERM");
        let status = child.wait(Duration::from_secs(30), "qbox run after SIGTERM");
        let (_, stdout, stderr) = output(child);
        assert_eq!(status.code(), Some(143), "{flags:?}: {stderr}");
        assert!(stdout.is_empty(), "{flags:?}: no id is printed: {stdout}");
        let requests = engine.requests();
        assert!(
            requests
                .iter()
                .any(|r| r.method == "DELETE" && r.path == "/containers/abc123def456"),
            "{flags:?}: the late container was not removed: {requests:?}"
        );
        assert!(
            !requests
                .iter()
                .any(|r| r.path.ends_with("/start") || r.path.ends_with("/attach")),
            "{flags:?}: {requests:?}"
        );
        let runtime = crate::util::runtime_dir(home.path()).join("qbox");
        let left: Vec<_> = std::fs::read_dir(&runtime)
            .map(|entries| entries.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(
            left.is_empty(),
            "{flags:?}: left in {}: {left:?}",
            runtime.display()
        );
    }
}

/// A list whose names and statuses carry escape sequences and line breaks.
fn escapes(request: &Request, stream: &mut UnixStream, _: &Seen) {
    match request.path.as_str() {
        "/version" => respond(stream, "200 OK", VERSION),
        "/containers/json" => respond(
            stream,
            "200 OK",
            r#"[{"Id":"0123456789abcdef","Names":["/web\u001b[2J\nhint: run rm -rf ~"],"Image":"img\u001b]0;title\u0007","State":"running","Status":"Up\r\nerror: forged","Created":1,"Labels":{"qbox.managed":"true"}}]"#,
        ),
        _ => respond(stream, "404 Not Found", r#"{"message":"no"}"#),
    }
}

#[test]
fn issue_30_engine_text_reaches_stdout_only_clean() {
    let (home, engine) = home_with_engine(escapes);
    for args in [&["ps"][..], &["ps", "--json"]] {
        let run = qbox(&home, &engine).args(args.iter().copied()).run();
        run.assert_code(0);
        for text in [&run.stdout, &run.stderr] {
            assert!(!text.contains('\x1b'), "{args:?}: {text:?}");
            assert!(!text.contains('\x07'), "{args:?}: {text:?}");
            assert!(!text.contains('\r'), "{args:?}: {text:?}");
            assert!(
                !text
                    .lines()
                    .any(|l| l.trim_start().starts_with("hint:") || l.starts_with("error:")),
                "{args:?}: {text}"
            );
        }
        assert!(run.stdout.contains("web"), "{}", run.stdout);
    }
}

/// Creates at once, then never answers the attach that comes before the
/// start.
fn a_silent_attach(request: &Request, stream: &mut UnixStream, _: &Seen) {
    match (request.method.as_str(), request.path.as_str()) {
        ("POST", "/containers/abc123def456/attach") => {
            std::thread::sleep(Duration::from_secs(600));
        }
        _ => a_late_create_without_delay(request, stream),
    }
}

fn a_late_create_without_delay(request: &Request, stream: &mut UnixStream) {
    match (request.method.as_str(), request.path.as_str()) {
        (_, "/version") => respond(stream, "200 OK", VERSION),
        ("GET", "/images/img/json") => respond(stream, "200 OK", r#"{"Id":"sha256:00"}"#),
        ("POST", "/containers/create") => {
            respond(
                stream,
                "201 Created",
                r#"{"Id":"abc123def456","Warnings":[]}"#,
            );
        }
        ("DELETE", _) => respond(stream, "204 No Content", ""),
        ("GET", "/containers/json") => respond(stream, "200 OK", "[]"),
        _ => respond(
            stream,
            "500 Internal Server Error",
            r#"{"message":"not here"}"#,
        ),
    }
}

#[test]
fn issue_30_an_engine_that_never_attaches_does_not_make_qbox_run_deaf() {
    // With --keep too: a container that never ran is not kept.
    for flags in [&[][..], &["--keep"][..]] {
        let (home, engine) = home_with_engine(a_silent_attach);
        let mut args = vec!["run", "--auth", "none"];
        args.extend(flags);
        args.extend(["img", "--", "true"]);
        let mut child = spawn(qbox(&home, &engine).args(args));
        engine.wait_for("POST", "/containers/abc123def456/attach");
        signal(child.child(), "-TERM");
        let status = child.wait(Duration::from_secs(30), "qbox run after SIGTERM");
        let (_, _, stderr) = output(child);
        assert_eq!(status.code(), Some(143), "{flags:?}: {stderr}");
        let requests = engine.requests();
        assert!(
            requests
                .iter()
                .any(|r| r.method == "DELETE" && r.path == "/containers/abc123def456"),
            "{flags:?}: {requests:?}"
        );
        assert!(
            !requests.iter().any(|r| r.path.ends_with("/start")),
            "{flags:?}: {requests:?}"
        );
    }
}

/// An engine qbox cannot bound (`ssh://`, `https://`) is refused with a
/// hint, never reached through a connector without a cap or a deadline.
#[test]
fn issue_30_an_engine_endpoint_qbox_cannot_bound_is_refused_with_a_hint() {
    for host in ["ssh://me@127.0.0.1", "https://127.0.0.1:2376"] {
        let home = TestHome::new();
        let run = home
            .qbox()
            .env("DOCKER_HOST", host)
            .env("XDG_RUNTIME_DIR", crate::util::runtime_dir(home.path()))
            .args(["ps"])
            .run();
        run.assert_code(125);
        run.assert_stderr_contains("URI scheme is not supported");
        run.assert_stderr_contains("hint: qbox speaks to an engine over unix://");
    }
}
