//! `qbox-sidecar serve --http` against hostile local clients (issue 13): a
//! token on every bind, back-off for wrong tokens, `/health` and the
//! protocol while the store is locked, capped sessions and connections,
//! and clients that send slowly or not at all. Real sidecar processes on
//! loopback, real sockets, a real SQLite lock.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use qbox::store::Flavor;
use serde_json::{Value, json};

use crate::util::{
    KillOnDrop, Qbox, StderrLines, TestHome, runtime_dir, spawn_serving, valid_login, wait_until,
    wait_until_async, waits_for_a_lock_on,
};

const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;

/// A long enough token for the tests that give one.
const TOKEN: &str = "issue-13-test-token-0123456789";

/// A running `qbox-sidecar serve --http 127.0.0.1:0` (or another address),
/// with its stderr collected.
struct Served {
    child: Child,
    port: u16,
    stderr: StderrLines,
}

impl Served {
    /// Starts with a clean environment: `HOME` and `XDG_RUNTIME_DIR` in
    /// `home`, no login, then `env`.
    fn start(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = Qbox::sidecar(home)
            .args(["serve"])
            .args(args.iter().copied())
            .current_dir(home)
            .env("XDG_RUNTIME_DIR", runtime_dir(home))
            .env("XDG_DATA_HOME", home.join("no-data"))
            .envs(env.iter().copied())
            .command();
        if !args.contains(&"--http") {
            command.args(["--http", "127.0.0.1:0"]);
        }
        let (child, port, stderr) = spawn_serving(&mut command);
        Self {
            child,
            port,
            stderr,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn stderr(&self) -> String {
        self.stderr.text()
    }

    fn connect(&self) -> TcpStream {
        TcpStream::connect(("127.0.0.1", self.port)).unwrap()
    }

    /// Resident memory of the server process, in KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// SIGTERM, as a service manager stops it; returns the exit code.
    fn stop(&mut self) -> Option<i32> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        wait_until(Duration::from_secs(20), "the sidecar stops", || {
            self.child.try_wait().unwrap()
        })
        .code()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How many sockets process `pid` has open (each accepted connection is
/// one).
fn sockets_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.flatten()
                .filter(|fd| {
                    std::fs::read_link(fd.path())
                        .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"))
                })
                .count()
        })
        .unwrap_or(0)
}

/// `qbox-sidecar call` of `q-chat` as the user, with no token given: the
/// client looks for a generated one.
async fn call_without_a_token(home: &Path, url: String) -> std::process::Output {
    let runtime = runtime_dir(home);
    let home = home.to_owned();
    tokio::task::spawn_blocking(move || {
        Qbox::sidecar(&home)
            .args(["call", "--url", &url, "q-chat", "-a", "prompt=hi"])
            .env("XDG_RUNTIME_DIR", &runtime)
            .command()
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// One request on a fresh connection (made `Connection: close`); the whole
/// answer, or what arrived before the server closed or reset it.
fn raw_exchange(port: u16, request: &str) -> String {
    let request = request.replacen("\r\n", "\r\nConnection: close\r\n", 1);
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = stream.write_all(request.as_bytes());
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

fn post_request(token: Option<&str>, body: &str) -> String {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Reads one HTTP/1.1 response with a `Content-Length` from a kept-alive
/// connection; `None` when the server closed it first.
fn read_response(stream: &mut TcpStream) -> Option<(u16, String)> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_owned())
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    stream.read_exact(&mut body).ok()?;
    Some((status, head))
}

/// Whether the server has closed (or reset) `stream`, waiting up to `within`.
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 512];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

/// The JSON-RPC message with an `id` in an SSE (or JSON) response body.
fn rpc_answer(body: &str) -> Value {
    body.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .chain(std::iter::once(body))
        .filter_map(|data| serde_json::from_str::<Value>(data.trim()).ok())
        .find(|m| m.get("id").is_some())
        .unwrap_or_else(|| panic!("no JSON-RPC answer in {body:?}"))
}

/// An MCP session over HTTP, with reqwest.
async fn initialize(http: &reqwest::Client, url: &str, token: &str) -> reqwest::Response {
    http.post(url)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(INIT)
        .send()
        .await
        .unwrap()
}

async fn session_request(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    session: &str,
    body: Value,
) -> reqwest::Response {
    http.post(url)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", session)
        .header("mcp-protocol-version", "2025-06-18")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

fn session_id(response: &reqwest::Response) -> String {
    response.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned()
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_a_tokenless_loopback_bind_requires_the_generated_token() {
    let home = TestHome::new();
    let q = qbox::standin::q::StandinQ::start("q-token").await.unwrap();
    let q_url = q.url();
    let mut served = Served::start(
        home.path(),
        &[],
        &[
            ("QBOX_Q_ENDPOINT", &q_url),
            ("QBOX_ACCESS_TOKEN", "q-token"),
        ],
    );
    let token_file = runtime_dir(home.path())
        .join("qbox")
        .join(format!("sidecar-127.0.0.1-{}.token", served.port));
    let stderr = served.stderr();
    assert!(
        stderr.contains(&token_file.display().to_string()),
        "the token's place is not printed:\n{stderr}"
    );
    assert_eq!(mode_of(&token_file), 0o600);
    assert_eq!(mode_of(token_file.parent().unwrap()), 0o700);
    let token = std::fs::read_to_string(&token_file).unwrap();
    let token = token.trim();
    assert!(token.len() >= 43, "a short generated token: {token:?}");
    assert!(!stderr.contains(token), "the token itself was printed");

    // Without the token (what any other local user has): 401.
    let answer = raw_exchange(served.port, &post_request(None, INIT));
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    let answer = raw_exchange(served.port, &post_request(Some("guess"), INIT));
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    let answer = raw_exchange(served.port, &post_request(Some(token), INIT));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // A client of the same user finds it by the URL's port.
    let call = call_without_a_token(home.path(), served.url("/mcp")).await;
    assert_eq!(
        call.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&call.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&call.stdout).trim(), "You said: hi");

    // Another user can listen on the same port at another loopback
    // address: a URL naming that address must not get the token.
    let decoy = std::net::TcpListener::bind(("127.0.0.2", served.port)).unwrap();
    let decoy_url = format!("http://127.0.0.2:{}/mcp", served.port);
    let received = std::thread::spawn(move || {
        use std::io::Read;
        let (mut conn, _) = decoy.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut request = vec![0u8; 8192];
        let n = conn.read(&mut request).unwrap_or(0);
        String::from_utf8_lossy(&request[..n]).into_owned()
    });
    let _ = call_without_a_token(home.path(), decoy_url).await;
    let request = received.join().unwrap();
    assert!(request.starts_with("POST"), "{request}");
    assert!(
        !request.contains(token),
        "the generated token went to another address: {request}"
    );

    // A clean stop takes the token with it.
    assert_eq!(served.stop(), Some(0));
    assert!(!token_file.exists(), "the token file outlived the server");
}

#[test]
fn issue_13_the_explicit_opt_out_serves_without_a_token_and_says_so() {
    let home = TestHome::new();
    let served = Served::start(home.path(), &["--allow-unauthenticated"], &[]);
    let answer = raw_exchange(served.port, &post_request(None, INIT));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        served.stderr().contains("WITHOUT AUTHENTICATION"),
        "{}",
        served.stderr()
    );
    assert!(!runtime_dir(home.path()).join("qbox").exists());
}

#[test]
fn issue_13_short_tokens_and_readable_token_files_are_refused_or_warned_about() {
    let home = TestHome::new();
    let mut refused = KillOnDrop::new(
        home.sidecar()
            .args(["serve", "--http", "0.0.0.0:0"])
            .env("QBOX_MCP_TOKEN", "short-token")
            .command()
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let status = refused.wait(
        Duration::from_secs(20),
        "a public bind with a short token is refused (and not served)",
    );
    assert_eq!(status.code(), Some(2));
    let mut stderr = String::new();
    refused
        .child()
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        stderr.contains("with a bearer token of 11 bytes"),
        "{stderr}"
    );
    assert!(stderr.contains("hint: use at least 16"), "{stderr}");
    assert!(!stderr.contains("short-token"), "the token was printed");

    let on_loopback = Served::start(home.path(), &[], &[("QBOX_MCP_TOKEN", "short-token")]);
    assert!(
        on_loopback
            .stderr()
            .contains("warning: the bearer token is only 11 bytes"),
        "{}",
        on_loopback.stderr()
    );
    drop(on_loopback);

    let file = home.path().join("token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let readable = Served::start(home.path(), &["--token-file", file.to_str().unwrap()], &[]);
    assert!(
        readable.stderr().contains(&format!(
            "every user can read the token file {}",
            file.display()
        )),
        "{}",
        readable.stderr()
    );
    let answer = raw_exchange(readable.port, &post_request(Some(TOKEN), INIT));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[test]
fn issue_13_wrong_tokens_slow_down_and_then_close_the_connection() {
    let home = TestHome::new();
    let served = Served::start(home.path(), &[], &[("QBOX_MCP_TOKEN", TOKEN)]);
    let mut stream = served.connect();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    for attempt in 1..=5 {
        stream
            .write_all(post_request(Some(&format!("guess-{attempt}")), INIT).as_bytes())
            .unwrap();
        let (status, head) =
            read_response(&mut stream).unwrap_or_else(|| panic!("no answer to attempt {attempt}"));
        assert_eq!(status, 401, "{head}");
    }
    // 0.1 + 0.2 + 0.4 + 0.8 + 1.6 s of back-off: a floor, not a benchmark.
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "five wrong tokens took only {:?}",
        started.elapsed()
    );
    let _ = stream.write_all(post_request(Some(TOKEN), INIT).as_bytes());
    assert!(
        read_response(&mut stream).is_none(),
        "the connection still answers after five wrong tokens"
    );
    // Another connection with the right token is served at once.
    let answer = raw_exchange(served.port, &post_request(Some(TOKEN), INIT));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_health_and_tools_list_answer_while_the_store_is_locked() {
    let home = TestHome::new();
    let store = home.login(Flavor::AmazonQ, &valid_login("locked"));
    let q = qbox::standin::q::StandinQ::start("aoa-access-locked")
        .await
        .unwrap();
    let q_url = q.url();
    let store_text = store.display().to_string();
    let served = Served::start(
        home.path(),
        &[],
        &[
            ("QBOX_MCP_TOKEN", TOKEN),
            ("QBOX_DB", &store_text),
            ("QBOX_Q_ENDPOINT", &q_url),
            // A store read waits this long for the lock: far longer than
            // any answer below may take.
            ("QBOX_LOCK_TIMEOUT", "30"),
        ],
    );
    let http = qbox::http::client(Some(Duration::from_secs(5))).unwrap();
    let health: Value = http
        .get(served.url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["login"], true);

    // The CLI holds the store's write lock.
    let lock = rusqlite::Connection::open(&store).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();

    assert!(
        !waits_for_a_lock_on(served.child.id(), &store),
        "an idle server does not look like one waiting for a lock"
    );

    // A q-chat call that must read the store, and so waits for the lock.
    let url = served.url("/mcp");
    // Killed if the test fails before it ends.
    let chat = tokio::process::Command::from(
        home.sidecar()
            .args(["call", "--url", &url, "q-chat", "-a", "prompt=locked"])
            .env("QBOX_MCP_TOKEN", TOKEN)
            .command(),
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true)
    .spawn()
    .unwrap();
    let chat = tokio::spawn(chat.wait_with_output());
    // The server has reached its read of the locked store, and waits.
    let pid = served.child.id();
    let locked_store = store.clone();
    wait_until_async(
        Duration::from_secs(30),
        "the chat call waits for the store's lock",
        move || waits_for_a_lock_on(pid, &locked_store),
    )
    .await;

    // Unauthenticated health checks, one after another, each answered
    // (from memory) while the lock is held.
    for _ in 0..3 {
        let health: Value = http
            .get(served.url("/health"))
            .send()
            .await
            .expect("/health answers while the store is locked")
            .json()
            .await
            .unwrap();
        assert_eq!(health["status"], "ok");
        assert_eq!(health["login"], true, "a locked store is not a lost login");
    }
    let url = served.url("/mcp");
    let init = initialize(&http, &url, TOKEN).await;
    assert_eq!(init.status(), 200);
    let session = session_id(&init);
    let _ = init.text().await;
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let _ = session_request(&http, &url, TOKEN, &session, initialized).await;
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    let listed = session_request(&http, &url, TOKEN, &session, list)
        .await
        .text()
        .await
        .expect("tools/list answers while the store is locked");
    let tools = rpc_answer(&listed);
    assert_eq!(tools["result"]["tools"][0]["name"], "q-chat", "{tools}");

    // The lock was held throughout; released, the waiting call completes.
    assert!(
        !chat.is_finished(),
        "the chat call did not wait for the lock"
    );
    lock.execute_batch("ROLLBACK").unwrap();
    let chat = chat.await.unwrap().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&chat.stdout).trim(),
        "You said: locked",
        "{}",
        String::from_utf8_lossy(&chat.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_sessions_over_the_cap_get_503_with_retry_after_and_memory_stays_bounded() {
    let home = TestHome::new();
    let served = Served::start(
        home.path(),
        &[],
        &[("QBOX_MCP_TOKEN", TOKEN), ("QBOX_MCP_MAX_SESSIONS", "4")],
    );
    let http = qbox::http::client(Some(Duration::from_secs(10))).unwrap();
    let url = served.url("/mcp");
    let mut sessions = Vec::new();
    for _ in 0..4 {
        let response = initialize(&http, &url, TOKEN).await;
        assert_eq!(response.status(), 200);
        sessions.push(session_id(&response));
        let _ = response.text().await;
    }
    let before = served.rss_kib();
    // Each session held about 50 KiB before the cap: 3000 of them would
    // add well over 100 MiB.
    let mut refused = 0;
    for _ in 0..3000 {
        let response = initialize(&http, &url, TOKEN).await;
        if response.status() == 503 {
            refused += 1;
            assert_eq!(response.headers()["retry-after"], "5");
        }
        let _ = response.bytes().await;
    }
    assert_eq!(refused, 3000);
    let after = served.rss_kib();
    assert!(
        after < before + 24 * 1024,
        "resident memory grew from {before} KiB to {after} KiB"
    );

    // Ending a session frees its slot.
    let deleted = http
        .delete(&url)
        .bearer_auth(TOKEN)
        .header("mcp-session-id", &sessions[0])
        .send()
        .await
        .unwrap();
    assert!(deleted.status().is_success(), "{}", deleted.status());
    let response = initialize(&http, &url, TOKEN).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_an_idle_session_expires_and_frees_its_slot() {
    let home = TestHome::new();
    let served = Served::start(
        home.path(),
        &[],
        &[
            ("QBOX_MCP_TOKEN", TOKEN),
            ("QBOX_MCP_MAX_SESSIONS", "1"),
            ("QBOX_MCP_SESSION_IDLE_TIMEOUT", "2"),
        ],
    );
    let http = qbox::http::client(Some(Duration::from_secs(10))).unwrap();
    let url = served.url("/mcp");
    let first = initialize(&http, &url, TOKEN).await;
    assert_eq!(first.status(), 200);
    let idle_session = session_id(&first);
    let _ = first.text().await;
    let over = initialize(&http, &url, TOKEN).await;
    assert_eq!(over.status(), 503, "the cap of one session did not hold");

    // Within the idle timeout plus slack, the slot is free again.
    let port = served.port;
    wait_until_async(
        Duration::from_secs(15),
        "the idle session expires and a new one is let in",
        move || raw_exchange(port, &post_request(Some(TOKEN), INIT)).starts_with("HTTP/1.1 200"),
    )
    .await;
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    let gone = session_request(&http, &url, TOKEN, &idle_session, list).await;
    assert_eq!(gone.status(), 404, "the expired session still answers");
}

#[test]
fn issue_13_slow_header_clients_are_closed_after_the_header_timeout() {
    let home = TestHome::new();
    let served = Served::start(
        home.path(),
        &[],
        &[("QBOX_MCP_TOKEN", TOKEN), ("QBOX_MCP_HEADER_TIMEOUT", "1")],
    );
    let port = served.port;
    let clients: Vec<_> = (0..10)
        .map(|_| {
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                let started = Instant::now();
                stream
                    .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                    .unwrap();
                let mut buf = [0u8; 256];
                // One byte every 200 ms, never the end of the headers.
                while started.elapsed() < Duration::from_secs(20) {
                    if stream.write_all(b"a").is_err() {
                        return Some(started.elapsed());
                    }
                    match stream.read(&mut buf) {
                        Ok(0) => return Some(started.elapsed()),
                        Ok(_) => {}
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) => {}
                        Err(_) => return Some(started.elapsed()),
                    }
                }
                None
            })
        })
        .collect();
    for client in clients {
        let closed_after = client
            .join()
            .unwrap()
            .expect("a slow client was never closed");
        // The configured second, plus generous slack for a busy machine.
        assert!(
            closed_after < Duration::from_secs(6),
            "closed only after {closed_after:?}"
        );
    }
    // The server still serves everyone else.
    let answer = raw_exchange(port, "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[test]
fn issue_13_a_connection_on_which_nothing_moves_is_closed_after_the_idle_timeout() {
    let home = TestHome::new();
    let served = Served::start(
        home.path(),
        &[],
        &[
            ("QBOX_MCP_TOKEN", TOKEN),
            ("QBOX_MCP_IDLE_TIMEOUT", "2"),
            ("QBOX_MCP_HEADER_TIMEOUT", "60"),
        ],
    );
    // Complete headers that promise a body which never comes.
    let mut stream = served.connect();
    let headers = format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n\
         Content-Length: 100\r\n\r\n"
    );
    stream.write_all(headers.as_bytes()).unwrap();
    assert!(
        closed_within(&mut stream, Duration::from_secs(2 + 6)),
        "a connection with nothing moving stayed open"
    );
}

#[test]
fn issue_13_connections_over_the_cap_are_refused() {
    let home = TestHome::new();
    let served = Served::start(
        home.path(),
        &[],
        &[
            ("QBOX_MCP_TOKEN", TOKEN),
            ("QBOX_MCP_MAX_CONNECTIONS", "3"),
            ("QBOX_MCP_HEADER_TIMEOUT", "60"),
        ],
    );
    let health = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    let pid = served.child.id();
    let sockets_before = sockets_of(pid);
    let mut held: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut stream = served.connect();
            stream.write_all(b"GET /health HTTP/1.1\r\n").unwrap();
            stream
        })
        .collect();
    // The three are accepted (each holds a slot) before the fourth comes.
    wait_until(
        Duration::from_secs(10),
        "the server has accepted the three connections",
        || sockets_of(pid) >= sockets_before + 3,
    );
    let answer = raw_exchange(served.port, health);
    assert!(
        !answer.contains("200 OK"),
        "a fourth connection was served: {answer}"
    );
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 503"),
        "{answer}"
    );
    assert!(
        answer.is_empty() || answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );

    // A closed connection frees its slot.
    drop(held.pop());
    wait_until(Duration::from_secs(10), "the freed slot is reused", || {
        raw_exchange(served.port, health).starts_with("HTTP/1.1 200")
    });
}

#[test]
fn issue_13_a_call_whose_server_dies_fails_instead_of_hanging() {
    let home = TestHome::new();
    let fake_q = crate::mcp_client::fake_q();
    let record = home.path().join("record");
    let mut served = Served::start(
        home.path(),
        &[],
        &[
            ("QBOX_MCP_TOKEN", TOKEN),
            ("ENABLE_ADDITIONAL_TOOLS", "q-developer-agent"),
            ("QBOX_AGENT_CLI", &fake_q),
            ("FAKE_Q_RECORD", record.to_str().unwrap()),
            ("QBOX_AGENT_PASS_ENV", "FAKE_Q_RECORD"),
        ],
    );
    let mut call = KillOnDrop::new(
        home.sidecar()
            .args(["call", "--url", &served.url("/mcp"), "q-developer-agent"])
            .args(["-a", "prompt=sleep:60"])
            .env("QBOX_MCP_TOKEN", TOKEN)
            .command()
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // The call is under way once the server has started the CLI for it.
    wait_until(
        Duration::from_secs(30),
        "the call's CLI has started",
        || record.join("pid").exists(),
    );
    served.child.kill().unwrap();
    let status = call.wait(
        Duration::from_secs(45),
        "the call fails instead of waiting for a server that is gone",
    );
    assert_eq!(status.code(), Some(1));
}

#[test]
fn issue_13_a_long_silent_answer_is_not_taken_for_an_idle_client() {
    let home = TestHome::new();
    let fake_q = crate::mcp_client::fake_q();
    let served = Served::start(
        home.path(),
        &[],
        &[
            ("QBOX_MCP_TOKEN", TOKEN),
            ("QBOX_MCP_IDLE_TIMEOUT", "1"),
            ("ENABLE_ADDITIONAL_TOOLS", "q-developer-agent"),
            ("QBOX_AGENT_CLI", &fake_q),
        ],
    );
    // A per-request (stateless) call: nothing is sent until the tool ends,
    // three idle timeouts later.
    let body = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "q-developer-agent", "arguments": {"prompt": "sleep:3"},
        "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                  "io.modelcontextprotocol/clientCapabilities": {}}}})
    .to_string();
    let request = post_request(Some(TOKEN), &body).replacen(
        "\r\n",
        "\r\nMCP-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/call\r\nMcp-Name: q-developer-agent\r\n",
        1,
    );
    let answer = raw_exchange(served.port, &request);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r"working\ndone"), "{answer}");
}

#[test]
fn issue_30_health_refuses_foreign_hosts_and_origins_like_mcp() {
    let home = TestHome::new();
    let served = Served::start(home.path(), &[], &[("QBOX_MCP_TOKEN", TOKEN)]);
    let port = served.port;
    let ask = |headers: &str| raw_exchange(port, &format!("GET /health HTTP/1.1\r\n{headers}\r\n"));
    for headers in [
        format!("Host: 127.0.0.1:{port}\r\n"),
        format!("Host: localhost:{port}\r\n"),
        format!("Host: [::1]:{port}\r\n"),
        format!("Host: 127.0.0.1:{port}\r\nOrigin: http://localhost:3000\r\n"),
    ] {
        let answer = ask(&headers);
        assert!(answer.starts_with("HTTP/1.1 200"), "{headers}: {answer}");
        assert!(answer.contains("\"login\""), "{answer}");
    }
    // What a DNS-rebinding page sends: its own name as Host, its own
    // origin. It learns nothing: not that a sidecar runs, nor its login.
    for headers in [
        format!("Host: rebind.evil.example:{port}\r\n"),
        format!(
            "Host: rebind.evil.example:{port}\r\nOrigin: http://rebind.evil.example:{port}\r\n"
        ),
        format!("Host: 127.0.0.1:{port}\r\nOrigin: https://evil.example\r\n"),
        "Host: localhost.evil.example\r\n".to_owned(),
    ] {
        let answer = ask(&headers);
        assert!(answer.starts_with("HTTP/1.1 403"), "{headers}: {answer}");
        for leak in ["\"login\"", "agentEnabled", "version", "\"ok\""] {
            assert!(!answer.contains(leak), "{headers}: {answer}");
        }
    }
}
