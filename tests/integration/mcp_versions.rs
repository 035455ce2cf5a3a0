//! MCP protocol revisions: every revision the sidecar advertises is spoken
//! (the handshake ones through `initialize`, 2026-07-28 through
//! `server/discover` and per-request `_meta`), nothing else is advertised,
//! the tool list carries its titles, hints, output schema and cache
//! lifetime, and `qbox-sidecar call` negotiates the newest revision first
//! and falls back to the handshake with a server that has only that.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::mcp_client::{fake_q, offered_tools};
use crate::util::TestHome;

/// The revisions the tests below exercise, oldest first. The sidecar must
/// advertise exactly these: a revision added without a test fails here.
const COVERED: [&str; 5] = [
    "2024-11-05",
    "2025-03-26",
    "2025-06-18",
    "2025-11-25",
    "2026-07-28",
];
const HANDSHAKE_REVISIONS: [&str; 4] = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];
const NEWEST: &str = "2026-07-28";

/// `qbox-sidecar serve` on stdio, spoken to line by line with no handshake
/// of its own (the tests choose the first message).
struct Raw {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Raw {
    fn start(home: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_qbox-sidecar"))
            .arg("serve")
            .current_dir(home)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home)
            .env("XDG_DATA_HOME", home.join("no-data"))
            .env("ENABLE_ADDITIONAL_TOOLS", "q-developer-agent")
            .env("QBOX_AGENT_CLI", fake_q())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("sidecar starts");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            stdin,
            lines,
        }
    }

    fn send(&mut self, message: &Value) {
        writeln!(self.stdin, "{message}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// Sends a request and waits for its response (notifications are skipped).
    fn request(&mut self, id: u64, method: &str, params: Value) -> Value {
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no answer to {method} within 30 s"));
            let message: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("stdout is not JSON-RPC ({e}): {line}"));
            if message["id"] == json!(id) {
                return message;
            }
        }
    }

    fn initialize(&mut self, version: &str) -> Value {
        let answer = self.request(
            1,
            "initialize",
            json!({"protocolVersion": version, "capabilities": {},
                   "clientInfo": {"name": "qbox-tests", "version": "1"}}),
        );
        self.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        answer
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The per-request `_meta` of the 2026-07-28 revision at `version`.
fn envelope(version: &str) -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": version,
        "io.modelcontextprotocol/clientInfo": {"name": "qbox-tests", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {}
    })
}

/// What every revision must see in the tool list (the cache hints are
/// defined from 2026-07-28 on).
fn assert_tool_list(list: &Value, context: &str) {
    let tools = list["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{context}: {list}"));
    let tool = |name: &str| {
        tools
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("{context}: no {name} in {list}"))
            .clone()
    };
    let chat = tool("q-chat");
    assert_eq!(chat["title"], "Ask Amazon Q", "{context}");
    assert_eq!(
        chat["annotations"],
        json!({"title": "Ask Amazon Q", "readOnlyHint": true, "destructiveHint": false,
               "openWorldHint": true}),
        "{context}"
    );
    let schema = &chat["outputSchema"];
    assert_eq!(schema["type"], "object", "{context}: {schema}");
    assert_eq!(
        schema["required"],
        json!([
            "answer",
            "conversationId",
            "toolUses",
            "codeReferences",
            "followupPrompts"
        ]),
        "{context}: {schema}"
    );
    let agent = tool("q-developer-agent");
    assert_eq!(agent["title"], "Amazon Q Developer agent", "{context}");
    assert_eq!(
        agent["annotations"],
        json!({"title": "Amazon Q Developer agent", "readOnlyHint": false,
               "destructiveHint": true, "idempotentHint": false, "openWorldHint": true}),
        "{context}"
    );
    assert_eq!(agent["outputSchema"], Value::Null, "{context}");
    if context == NEWEST {
        assert_eq!(list["result"]["ttlMs"], 3_600_000, "{context}: {list}");
        assert_eq!(list["result"]["cacheScope"], "public", "{context}: {list}");
    }
}

#[test]
fn every_handshake_revision_is_answered_in_kind() {
    let home = TestHome::new();
    for version in HANDSHAKE_REVISIONS {
        let mut server = Raw::start(home.path());
        let answer = server.initialize(version);
        assert_eq!(answer["result"]["protocolVersion"], version, "{answer}");
        assert_eq!(answer["result"]["serverInfo"]["name"], "qbox-sidecar");
        let list = server.request(2, "tools/list", json!({}));
        assert_tool_list(&list, version);
        let call = server.request(
            3,
            "tools/call",
            json!({"name": "q-developer-agent", "arguments": {"prompt": format!("print:{version}")}}),
        );
        assert_eq!(call["result"]["isError"], false, "{version}: {call}");
        assert_eq!(call["result"]["content"][0]["text"], format!("{version}\n"));
    }
}

/// A client that offers a revision the handshake cannot give (2026-07-28
/// has none; an unknown one) gets the newest handshake revision, which it
/// may accept or not: never a revision outside the pinned list.
#[test]
fn a_handshake_for_another_revision_gets_the_newest_handshake_one() {
    let home = TestHome::new();
    for offered in [NEWEST, "2099-01-01", "2024-10-07"] {
        let mut server = Raw::start(home.path());
        let answer = server.initialize(offered);
        assert_eq!(
            answer["result"]["protocolVersion"], "2025-11-25",
            "{offered}: {answer}"
        );
    }
}

#[test]
fn the_newest_revision_is_discovered_and_advertises_only_the_covered_ones() {
    let home = TestHome::new();
    let mut server = Raw::start(home.path());
    let discover = server.request(1, "server/discover", json!({"_meta": envelope(NEWEST)}));
    assert_eq!(
        discover["result"]["supportedVersions"],
        json!(COVERED),
        "the advertised revisions are those the tests cover: {discover}"
    );
    assert_eq!(
        discover["result"]["_meta"]["io.modelcontextprotocol/serverInfo"]["name"], "qbox-sidecar",
        "{discover}"
    );
    let list = server.request(2, "tools/list", json!({"_meta": envelope(NEWEST)}));
    assert_tool_list(&list, NEWEST);
    let call = server.request(
        3,
        "tools/call",
        json!({"name": "q-developer-agent", "arguments": {"prompt": "print:modern"},
               "_meta": envelope(NEWEST)}),
    );
    assert_eq!(call["result"]["isError"], false, "{call}");
    assert_eq!(call["result"]["content"][0]["text"], "modern\n");

    // A revision the server does not speak is refused with the list it does.
    let mut server = Raw::start(home.path());
    let refused = server.request(
        1,
        "server/discover",
        json!({"_meta": envelope("2099-01-01")}),
    );
    assert_eq!(refused["error"]["code"], -32022, "{refused}");
    assert_eq!(
        refused["error"]["data"]["supported"],
        json!(COVERED),
        "{refused}"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

const HTTP_TOKEN: &str = "versions-token-0123456789";

/// `qbox-sidecar serve --http` with the agent tool and a token.
struct Http {
    child: Child,
    url: String,
}

impl Http {
    fn start(home: &Path) -> Self {
        Self::start_with(
            home,
            &[
                ("XDG_DATA_HOME", home.join("no-data").display().to_string()),
                ("ENABLE_ADDITIONAL_TOOLS", "q-developer-agent".to_owned()),
                ("QBOX_AGENT_CLI", fake_q()),
            ],
        )
    }

    fn start_with(home: &Path, env: &[(&str, String)]) -> Self {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_qbox-sidecar"))
            .args(["serve", "--http", &format!("127.0.0.1:{port}")])
            .current_dir(home)
            .env("HOME", home)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("QBOX_MCP_TOKEN", HTTP_TOKEN)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the sidecar did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            url: format!("http://127.0.0.1:{port}/mcp"),
        }
    }
}

impl Drop for Http {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `qbox-sidecar call ... --json`, parsed.
fn call_json(home: &Path, args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_qbox-sidecar"))
        .arg("call")
        .args(args)
        .current_dir(home)
        .env("HOME", home)
        .env("XDG_DATA_HOME", home.join("no-data"))
        .env("ENABLE_ADDITIONAL_TOOLS", "q-developer-agent")
        .env("QBOX_AGENT_CLI", fake_q())
        .env("QBOX_MCP_TOKEN", HTTP_TOKEN)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "call {args:?}: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn call_negotiates_the_newest_revision_and_falls_back_to_the_handshake() {
    let home = TestHome::new();
    let sidecar = env!("CARGO_BIN_EXE_qbox-sidecar");
    let stdio = call_json(
        home.path(),
        &[
            "q-developer-agent",
            "-a",
            "prompt=print:stdio",
            "--json",
            "--",
            sidecar,
            "serve",
        ],
    );
    assert_eq!(stdio["protocolVersion"], NEWEST, "{stdio}");
    assert_eq!(stdio["text"], "stdio\n", "{stdio}");

    let http = Http::start(home.path());
    let over_http = call_json(
        home.path(),
        &[
            "--url",
            &http.url,
            "q-developer-agent",
            "-a",
            "prompt=print:http",
            "--json",
        ],
    );
    assert_eq!(over_http["protocolVersion"], NEWEST, "{over_http}");
    assert_eq!(over_http["text"], "http\n", "{over_http}");

    // A server of the official Python SDK that knows only the handshake:
    // the probe is refused, and the call goes on after `initialize`.
    let Some(python) = crate::util::python_mcp() else {
        eprintln!("SKIPPED the handshake fallback: no .venv with the Python MCP SDK");
        return;
    };
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/mcp_interop.py");
    let legacy = call_json(
        home.path(),
        &[
            "echo",
            "-a",
            "text=hi",
            "--json",
            "--",
            python.to_str().unwrap(),
            script.to_str().unwrap(),
            "legacy-server",
        ],
    );
    assert_eq!(legacy["protocolVersion"], "2025-11-25", "{legacy}");
    assert_eq!(legacy["text"], "echo: hi", "{legacy}");
}

/// A server that starts after `call` gave up waiting for its probe (rmcp
/// waits 10 s, then falls back to the handshake) reads the probe late and
/// answers it before the handshake: `call` reads past that answer.
#[test]
fn call_reads_past_a_late_answer_to_its_probe() {
    let home = TestHome::new();
    let slow_server = format!(
        "sleep 11; exec '{}' serve",
        env!("CARGO_BIN_EXE_qbox-sidecar")
    );
    let outcome = call_json(
        home.path(),
        &[
            "q-developer-agent",
            "-a",
            "prompt=print:late",
            "--json",
            "--",
            "sh",
            "-c",
            &slow_server,
        ],
    );
    assert_eq!(outcome["text"], "late\n", "{outcome}");
    assert!(
        ["2025-11-25", NEWEST].contains(&outcome["protocolVersion"].as_str().unwrap_or_default()),
        "{outcome}"
    );
}

/// A q-chat answer with every kind of structured part (tool uses, one not
/// JSON, code references, follow-up prompts), from the stand-in service,
/// checked by the official SDK's client against the listed outputSchema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_q_chat_result_validates_against_its_output_schema() {
    let Some(python) = crate::util::python_mcp() else {
        eprintln!("SKIPPED a_real_q_chat_result_validates_against_its_output_schema: no .venv");
        return;
    };
    let home = TestHome::new();
    let q = qbox::standin::q::StandinQ::start("schema-q-token")
        .await
        .unwrap();
    let mut answer = qbox::standin::q::Answer::text(&["Here ", "it is"]);
    answer.extra_events = vec![
        (
            "toolUseEvent".into(),
            json!({"toolUseId": "t1", "name": "fs_read", "input": "{\"path\":", "stop": false}),
        ),
        (
            "toolUseEvent".into(),
            json!({"toolUseId": "t1", "name": "fs_read", "input": "\"a.txt\"}", "stop": true}),
        ),
        (
            "toolUseEvent".into(),
            json!({"toolUseId": "t2", "name": "shell", "input": "not json", "stop": true}),
        ),
        (
            "codeReferenceEvent".into(),
            json!({"references": [{"licenseName": "MIT", "repository": "example"}]}),
        ),
        (
            "followupPromptEvent".into(),
            json!({"followupPrompt": {"content": "And then?"}}),
        ),
    ];
    q.push(qbox::standin::q::Reply::Answer(answer));
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/mcp_interop.py");
    let home_path = home.path().to_owned();
    let q_url = q.url();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(&python)
            .arg(&script)
            .args(["describe", env!("CARGO_BIN_EXE_qbox-sidecar")])
            .current_dir(&home_path)
            .env("HOME", &home_path)
            .env("XDG_DATA_HOME", home_path.join("no-data"))
            .env("QBOX_Q_ENDPOINT", &q_url)
            .env("QBOX_ACCESS_TOKEN", "schema-q-token")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let chat = &report["chat"];
    assert_eq!(chat["is_error"], false, "{report}");
    assert_eq!(chat["schema_errors"], json!([]), "{report}");
    let structured = &chat["structured"];
    assert_eq!(structured["answer"], "Here it is");
    assert_eq!(
        structured["toolUses"],
        json!([
            {"toolUseId": "t1", "name": "fs_read", "input": {"path": "a.txt"}},
            {"toolUseId": "t2", "name": "shell", "input": "not json"}
        ])
    );
    assert_eq!(
        structured["codeReferences"],
        json!([{"references": [{"licenseName": "MIT", "repository": "example"}]}])
    );
    assert_eq!(
        structured["followupPrompts"],
        json!([{"followupPrompt": {"content": "And then?"}}])
    );
    assert!(
        structured["conversationId"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "{structured}"
    );
}

/// The official Python SDK's `Client` in each of its modes (`auto`, its
/// default: discovery first; `legacy`: the handshake; `2026-07-28`: the
/// revision adopted without a probe), over stdio and over HTTP: the whole
/// interop exercise, what was negotiated, and what the tool list says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_sdk_interoperates_in_each_mode() {
    let Some(python) = crate::util::python_mcp() else {
        eprintln!("SKIPPED the_official_python_sdk_interoperates_in_each_mode: no .venv");
        return;
    };
    let home = TestHome::new();
    let q = qbox::standin::q::StandinQ::start("modes-q-token")
        .await
        .unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/mcp_interop.py");
    let record = home.path().join("record");
    let env = [
        (
            "XDG_DATA_HOME",
            home.path().join("no-data").display().to_string(),
        ),
        ("ENABLE_ADDITIONAL_TOOLS", "q-developer-agent".to_owned()),
        ("QBOX_AGENT_CLI", fake_q()),
        ("QBOX_Q_ENDPOINT", q.url()),
        ("QBOX_ACCESS_TOKEN", "modes-q-token".to_owned()),
        ("FAKE_Q_RECORD", record.display().to_string()),
        ("QBOX_AGENT_PASS_ENV", "FAKE_Q_RECORD".to_owned()),
    ];
    let http = Http::start_with(home.path(), &env);
    for (mode, negotiated) in [("auto", NEWEST), ("legacy", "2025-11-25"), (NEWEST, NEWEST)] {
        for transport in ["stdio", "http"] {
            let mut command = Command::new(&python);
            command
                .arg(&script)
                .current_dir(home.path())
                .env("HOME", home.path())
                .envs(env.iter().map(|(k, v)| (k, v)));
            match transport {
                "stdio" => command.args(["stdio", env!("CARGO_BIN_EXE_qbox-sidecar"), mode]),
                _ => command.args(["http", &http.url, HTTP_TOKEN, mode]),
            };
            let output = tokio::task::spawn_blocking(move || command.output().unwrap())
                .await
                .unwrap();
            let context = format!("mode {mode} over {transport}");
            assert!(
                output.status.success(),
                "{context}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            let report: Value =
                serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{context}: {e}"));
            assert_eq!(
                report["protocol_version"], negotiated,
                "{context}: {report}"
            );
            assert_eq!(report["tools"], json!(offered_tools(true)), "{context}");
            assert_eq!(
                report["call"]["text"], "line 1\nline 2\nline 3\n",
                "{context}"
            );
            assert_eq!(
                report["progress"],
                json!(["line 1", "line 2", "line 3"]),
                "{context}"
            );
            assert_eq!(report["bad_args"]["is_error"], true, "{context}");
            if let Some(cancelled) = report["cancelled"].as_object() {
                // The script reports what cancelling did: no result, the CLI stopped.
                assert_eq!(cancelled["call_ended"], "cancelled", "{context}: {report}");
                assert_eq!(cancelled["cli_stopped"], true, "{context}: {report}");
            }
            assert_eq!(report["after_cancel"], "still serving\n", "{context}");
            assert_eq!(report["chat"]["is_error"], false, "{context}: {report}");
            assert_eq!(report["chat"]["text"], "You said: from python", "{context}");
            assert_eq!(
                report["chat"]["progress"],
                json!(["You said: ", "from python"]),
                "{context}"
            );
            let described = &report["described"];
            let chat = &described["tools"]["q-chat"];
            assert_eq!(chat["title"], "Ask Amazon Q", "{context}");
            assert_eq!(
                chat["annotations"],
                json!({"title": "Ask Amazon Q", "readOnlyHint": true,
                       "destructiveHint": false, "openWorldHint": true}),
                "{context}"
            );
            let agent = &described["tools"]["q-developer-agent"];
            assert_eq!(agent["title"], "Amazon Q Developer agent", "{context}");
            assert_eq!(
                agent["annotations"],
                json!({"title": "Amazon Q Developer agent", "readOnlyHint": false,
                       "destructiveHint": true, "idempotentHint": false,
                       "openWorldHint": true}),
                "{context}"
            );
            // Cache hints are a 2026-07-28 field: the SDK reads them only there.
            if negotiated == NEWEST {
                assert_eq!(described["ttl_ms"], 3_600_000, "{context}: {described}");
                assert_eq!(described["cache_scope"], "public", "{context}: {described}");
            }
            assert_eq!(
                described["chat"]["schema_errors"],
                json!([]),
                "{context}: {described}"
            );
        }
    }
}

/// The revision each host `qbox mcp-config` writes for speaks today, and
/// over which transports it reaches the sidecar, from the hosts' sources
/// and reports (December 2026; docs/mcp.md, "Protocol versions"). Each pair
/// is spoken below, so a host that still sends an older revision keeps
/// working when the pinned list changes.
const HOST_REVISIONS: &[(&str, &str, &[Transport])] = &[
    (
        "claude-code",
        "2025-11-25",
        &[Transport::Stdio, Transport::Http],
    ),
    ("claude-desktop", "2025-11-25", &[Transport::Stdio]),
    (
        "claude-desktop (older builds)",
        "2025-06-18",
        &[Transport::Stdio],
    ),
    ("cursor", "2025-11-25", &[Transport::Stdio, Transport::Http]),
    ("codex", "2025-06-18", &[Transport::Stdio, Transport::Http]),
    ("gemini", "2025-11-25", &[Transport::Stdio, Transport::Http]),
    ("zed", "2025-11-25", &[Transport::Stdio, Transport::Http]),
    (
        "zed (before April 2026)",
        "2025-03-26",
        &[Transport::Stdio, Transport::Http],
    ),
    ("goose", NEWEST, &[Transport::Stdio, Transport::Http]),
    ("vscode", "2025-11-25", &[Transport::Stdio, Transport::Http]),
    ("kiro", "2025-06-18", &[Transport::Stdio, Transport::Http]),
    ("q", "2024-11-05", &[Transport::Stdio]),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Stdio,
    Http,
}

/// One JSON-RPC message over streamable HTTP: its answer (from a JSON body
/// or the event stream's `data:` lines) and the session the server named.
async fn http_rpc(
    client: &reqwest::Client,
    url: &str,
    version: &str,
    session: Option<&str>,
    message: Value,
) -> (Option<Value>, Option<String>) {
    let mut request = client
        .post(url)
        .bearer_auth(HTTP_TOKEN)
        .header("Accept", "application/json, text/event-stream")
        .header("Content-Type", "application/json")
        .json(&message);
    // 2024-11-05 and 2025-03-26 clients send no version header.
    if !["2024-11-05", "2025-03-26"].contains(&version) && message["method"] != "initialize" {
        request = request.header("MCP-Protocol-Version", version);
    }
    if let Some(session) = session {
        request = request.header("Mcp-Session-Id", session);
    }
    // 2026-07-28 names the method (and a call's tool) in headers too.
    if version == NEWEST {
        request = request.header("Mcp-Method", message["method"].as_str().unwrap());
        if let Some(name) = message["params"]["name"].as_str() {
            request = request.header("Mcp-Name", name);
        }
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let session = response
        .headers()
        .get("mcp-session-id")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.text().await.unwrap();
    assert!(
        status.is_success(),
        "{version} {}: {status} {body}",
        message["method"]
    );
    let answer = body
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .chain(std::iter::once(body.as_str()))
        .filter_map(|text| serde_json::from_str::<Value>(text.trim()).ok())
        .find(|v| v.get("id") == message.get("id") && message.get("id").is_some());
    (answer, session)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_hosts_revision_is_spoken_over_its_transports() {
    let home = TestHome::new();
    let http = Http::start(home.path());
    let client = qbox::http::client(Some(Duration::from_secs(60))).unwrap();
    for (host, version, transports) in HOST_REVISIONS {
        assert!(
            COVERED.contains(version),
            "{host}: {version} is not advertised"
        );
        let prompt = format!("print:{host}");
        let call = json!({"name": "q-developer-agent", "arguments": {"prompt": prompt}});
        for transport in *transports {
            let context = format!("{host} at {version} over {transport:?}");
            let (list, result) = match transport {
                Transport::Stdio => {
                    let path = home.path().to_owned();
                    let (version, call) = (version.to_string(), call.clone());
                    tokio::task::spawn_blocking(move || {
                        let mut server = Raw::start(&path);
                        let (list, called) = if version == NEWEST {
                            let mut call = call;
                            call["_meta"] = envelope(NEWEST);
                            (
                                server.request(2, "tools/list", json!({"_meta": envelope(NEWEST)})),
                                server.request(3, "tools/call", call),
                            )
                        } else {
                            let answer = server.initialize(&version);
                            assert_eq!(answer["result"]["protocolVersion"], version.as_str());
                            (
                                server.request(2, "tools/list", json!({})),
                                server.request(3, "tools/call", call),
                            )
                        };
                        (list, called)
                    })
                    .await
                    .unwrap()
                }
                Transport::Http => {
                    let url = http.url.as_str();
                    if *version == NEWEST {
                        let mut call = call.clone();
                        call["_meta"] = envelope(NEWEST);
                        let rpc = |id: u64, method: &str, params: Value| json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
                        let (list, _) = http_rpc(
                            &client,
                            url,
                            NEWEST,
                            None,
                            rpc(2, "tools/list", json!({"_meta": envelope(NEWEST)})),
                        )
                        .await;
                        let (called, _) =
                            http_rpc(&client, url, NEWEST, None, rpc(3, "tools/call", call)).await;
                        (list.unwrap(), called.unwrap())
                    } else {
                        let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                            "params": {"protocolVersion": version, "capabilities": {},
                                       "clientInfo": {"name": host, "version": "1"}}});
                        let (answer, session) = http_rpc(&client, url, version, None, init).await;
                        let answer = answer.unwrap();
                        assert_eq!(answer["result"]["protocolVersion"], *version, "{context}");
                        let session = session.expect("a handshake opens a session");
                        http_rpc(
                            &client,
                            url,
                            version,
                            Some(&session),
                            json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
                        )
                        .await;
                        let (list, _) = http_rpc(&client, url, version, Some(&session),
                            json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}})).await;
                        let (called, _) = http_rpc(&client, url, version, Some(&session),
                            json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": call})).await;
                        (list.unwrap(), called.unwrap())
                    }
                }
            };
            assert_tool_list(&list, if *version == NEWEST { NEWEST } else { &context });
            assert_eq!(result["result"]["isError"], false, "{context}: {result}");
            assert_eq!(
                result["result"]["content"][0]["text"],
                format!("{host}\n"),
                "{context}"
            );
        }
    }
}
