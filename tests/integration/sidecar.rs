//! `qbox-sidecar serve`: both tools over stdio with a fake `q` that records
//! how it was run, every failure mode of the CLI, cancellation, progress,
//! concurrency, the snapshot login, and the HTTP transport's security.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use qbox::store::Flavor;
use serde_json::{Value, json};

use crate::mcp_client::{StdioMcp, fake_q, offered_tools, process_alive};
use crate::util::{TestHome, clean_command, refusing_port, spawn_serving, valid_login, wait_until};

fn agent_env(record: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("ENABLE_ADDITIONAL_TOOLS", "q-developer-agent".into()),
        ("QBOX_AGENT_CLI", fake_q()),
        ("FAKE_Q_RECORD", record.display().to_string()),
        ("QBOX_AGENT_PASS_ENV", "FAKE_Q_RECORD".into()),
    ]
}

pub(crate) fn recorded_pid(record: &Path, file: &str) -> u32 {
    std::fs::read_to_string(record.join(file))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn the_agent_tool_is_offered_only_when_enabled() {
    let home = TestHome::new();
    let mut plain = StdioMcp::start(home.path(), &[]);
    assert_eq!(plain.tool_names(), offered_tools(false));
    let (text, is_error, _) = plain.call("q-developer-agent", json!({"prompt": "hi"}));
    assert!(is_error);
    assert!(
        text.contains("ENABLE_ADDITIONAL_TOOLS=q-developer-agent"),
        "{text}"
    );

    let record = home.path().join("record");
    let mut enabled = StdioMcp::start(home.path(), &agent_env(&record));
    assert_eq!(enabled.tool_names(), offered_tools(true));
    assert!(offered_tools(true).contains(&"q-developer-agent"));
    assert!(!offered_tools(false).contains(&"q-developer-agent"));
    let schema = enabled.request("tools/list", json!({}))["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "q-developer-agent")
        .unwrap()["inputSchema"]
        .clone();
    assert_eq!(schema["required"], json!(["prompt"]));
    for param in [
        "prompt",
        "resume",
        "agent",
        "override-model",
        "yolo-mode",
        "trust-tools",
        "verbose",
    ] {
        assert!(schema["properties"][param].is_object(), "{param} in schema");
    }
}

#[test]
fn the_cli_gets_an_argument_vector_and_runs_in_the_sidecar_directory() {
    let home = TestHome::new();
    let record = home.path().join("record");
    let mut mcp = StdioMcp::start(home.path(), &agent_env(&record));
    let (text, is_error, _) = mcp.call(
        "q-developer-agent",
        json!({
            "prompt": "-rf --help; $(touch /tmp/pwned) `id`",
            "resume": true,
            "agent": "reviewer",
            "override-model": "claude-x",
            "yolo-mode": true,
            "trust-tools": "fs_read,execute_bash",
            "verbose": true
        }),
    );
    assert!(!is_error, "{text}");
    assert_eq!(
        text, "-rf --help; $(touch /tmp/pwned) `id`\n",
        "the prompt reached the CLI verbatim"
    );
    let argv: Vec<String> = std::fs::read(record.join("argv"))
        .unwrap()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8(a.to_vec()).unwrap())
        .collect();
    assert_eq!(
        argv,
        [
            "chat",
            "--no-interactive",
            "--resume",
            "--agent",
            "reviewer",
            "--model",
            "claude-x",
            "--trust-all-tools",
            "--trust-tools=fs_read,execute_bash",
            "-v",
            "--",
            "-rf --help; $(touch /tmp/pwned) `id`"
        ]
    );
    let cwd = std::fs::read_to_string(record.join("cwd")).unwrap();
    assert_eq!(
        PathBuf::from(cwd.trim()).canonicalize().unwrap(),
        home.path().canonicalize().unwrap()
    );
    assert!(
        !Path::new("/tmp/pwned").exists(),
        "no shell ever saw the prompt"
    );
}

#[test]
fn output_is_cleaned_and_cut_at_a_line() {
    let home = TestHome::new();
    let record = home.path().join("record");
    let mut env = agent_env(&record);
    env.push(("AGENT_MAX_RESPONSE_SIZE", "1000".into()));
    let mut mcp = StdioMcp::start(home.path(), &env);
    let (text, is_error, _) = mcp.call(
        "q-developer-agent",
        json!({"prompt": "print:styled answer"}),
    );
    assert!(!is_error);
    assert_eq!(text, "styled answer\n", "ANSI styling removed");

    let (text, is_error, _) = mcp.call("q-developer-agent", json!({"prompt": "big:50"}));
    assert!(!is_error);
    // 50 lines of 100 bytes; 1000 bytes keep exactly 10 whole lines.
    let kept: Vec<&str> = text.lines().take_while(|l| !l.is_empty()).collect();
    assert_eq!(kept.len(), 10);
    assert!(kept.iter().all(|l| l.len() == 99));
    assert!(
        text.contains("truncated from 5000 bytes to 1000 bytes"),
        "{text}"
    );
    assert!(text.contains("AGENT_MAX_RESPONSE_SIZE"), "{text}");

    let (text, _, _) = mcp.call("q-developer-agent", json!({"prompt": "badutf8"}));
    assert!(text.contains("ok \u{fffd}\u{fffd} bytes"), "{text}");
    assert!(text.contains("not UTF-8"), "{text}");

    let (text, _, _) = mcp.call(
        "q-developer-agent",
        json!({"prompt": "please review @src/main.rs"}),
    );
    assert!(
        text.contains("does not read files named with `@`"),
        "{text}"
    );
}

#[test]
fn every_cli_failure_is_a_clear_tool_error() {
    let home = TestHome::new();
    let record = home.path().join("record");
    let mut mcp = StdioMcp::start(home.path(), &agent_env(&record));
    let cases = [
        (
            json!({"prompt": "fail:5"}),
            vec!["exited with code 5", "something broke"],
        ),
        (
            // The Kiro CLI's exit code when an MCP server of its agent failed.
            json!({"prompt": "fail:3"}),
            vec!["MCP server", "exit 3", "something broke"],
        ),
        (json!({"prompt": "auth"}), vec!["not logged in", "QBOX_DB"]),
        (
            json!({"prompt": "approval"}),
            vec!["trust-tools", "yolo-mode"],
        ),
        (json!({"prompt": "   "}), vec!["`prompt` is empty"]),
        (json!({}), vec!["missing required parameter `prompt`"]),
        (
            json!({"prompt": ["x"]}),
            vec!["must be a string, got an array"],
        ),
        (
            json!({"prompt": "x", "verbose": "yes"}),
            vec!["`verbose` must be a boolean"],
        ),
        (
            json!({"prompt": "x", "model": "m"}),
            vec!["unknown parameter `model`"],
        ),
    ];
    for (arguments, needles) in cases {
        let (text, is_error, _) = mcp.call("q-developer-agent", arguments.clone());
        assert!(is_error, "{arguments} should fail: {text}");
        for needle in needles {
            assert!(text.contains(needle), "{arguments}: {text}");
        }
    }
    // A huge prompt is passed as one argument, not refused or split.
    let huge = "y".repeat(100_000);
    let (text, is_error, _) = mcp.call("q-developer-agent", json!({"prompt": huge}));
    assert!(!is_error);
    assert_eq!(text.len(), 100_001);

    let unknown = mcp.request(
        "tools/call",
        json!({"name": "no-such-tool", "arguments": {}}),
    );
    assert!(
        unknown["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown tool `no-such-tool`"),
        "{unknown}"
    );

    // Malformed JSON-RPC does not stop the server.
    mcp.send_raw("{this is not json");
    mcp.send_raw(r#"{"jsonrpc":"2.0","id":"x","method":"no/such/method"}"#);
    assert_eq!(mcp.tool_names(), ["q-chat", "q-developer-agent"]);
}

#[test]
fn a_missing_cli_says_what_to_install() {
    let home = TestHome::new();
    let mut mcp = StdioMcp::start(
        home.path(),
        &[
            ("ENABLE_ADDITIONAL_TOOLS", "q-developer-agent".into()),
            ("QBOX_AGENT_CLI", "/nonexistent/kiro-cli".into()),
        ],
    );
    let (text, is_error, _) = mcp.call("q-developer-agent", json!({"prompt": "hi"}));
    assert!(is_error);
    assert!(
        text.contains("`/nonexistent/kiro-cli` was not found"),
        "{text}"
    );
    assert!(text.contains("QBOX_AGENT_CLI"), "{text}");
}

#[test]
fn timeouts_kill_the_whole_group_and_return_partial_output() {
    let home = TestHome::new();
    let record = home.path().join("record");
    let mut env = agent_env(&record);
    env.push(("AGENT_TIMEOUT", "1".into()));
    let mut mcp = StdioMcp::start(home.path(), &env);
    for prompt in ["sleep:30", "ignore-term:30"] {
        let started = Instant::now();
        let (text, is_error, _) = mcp.call("q-developer-agent", json!({"prompt": prompt}));
        assert!(is_error, "{text}");
        assert!(
            text.contains("did not finish within 1s (AGENT_TIMEOUT)"),
            "{text}"
        );
        assert!(
            text.contains("working") || text.contains("stubborn"),
            "partial output kept: {text}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{prompt} took {:?}",
            started.elapsed()
        );
        let pid = recorded_pid(&record, "pid");
        assert!(
            !process_alive(pid),
            "{prompt}: the CLI (pid {pid}) outlived its call"
        );
    }
}

#[test]
fn a_grandchild_holding_stdout_neither_blocks_the_call_nor_survives_it() {
    let home = TestHome::new();
    let record = home.path().join("record");
    let mut mcp = StdioMcp::start(home.path(), &agent_env(&record));
    let started = Instant::now();
    let (text, is_error, _) = mcp.call("q-developer-agent", json!({"prompt": "fork:30"}));
    assert!(!is_error, "{text}");
    assert_eq!(text, "parent done\n");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let grandchild = recorded_pid(&record, "grandchild");
    wait_until(
        Duration::from_secs(10),
        &format!("the grandchild (pid {grandchild}) is gone after the call"),
        || !process_alive(grandchild),
    );
}

#[test]
fn cancellation_kills_the_cli_and_the_server_keeps_serving() {
    let home = TestHome::new();
    let record = home.path().join("record");
    let mut mcp = StdioMcp::start(home.path(), &agent_env(&record));
    let id = mcp.send_request(
        "tools/call",
        json!({"name": "q-developer-agent", "arguments": {"prompt": "sleep:30"}}),
    );
    wait_until(Duration::from_secs(10), "the CLI has started", || {
        record.join("pid").exists()
    });
    let pid = recorded_pid(&record, "pid");
    assert!(process_alive(pid));
    mcp.notify(
        "notifications/cancelled",
        json!({"requestId": id, "reason": "user pressed stop"}),
    );
    wait_until(
        Duration::from_secs(10),
        "the CLI is stopped by the cancellation",
        || !process_alive(pid),
    );
    let (text, is_error, _) = mcp.call("q-developer-agent", json!({"prompt": "print:after"}));
    assert!(!is_error);
    assert_eq!(text, "after\n");
}

#[test]
fn progress_notifications_carry_the_output_before_the_result() {
    let home = TestHome::new();
    let record = home.path().join("record");
    let mut mcp = StdioMcp::start(home.path(), &agent_env(&record));
    let response = mcp.request(
        "tools/call",
        json!({"name": "q-developer-agent", "arguments": {"prompt": "lines:3"}, "_meta": {"progressToken": "tok-1"}}),
    );
    assert_eq!(response["result"]["isError"], json!(false), "{response}");
    let progress: Vec<&Value> = mcp
        .notifications
        .iter()
        .filter(|n| n["method"] == "notifications/progress")
        .collect();
    let messages: Vec<&str> = progress
        .iter()
        .map(|n| n["params"]["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages, ["line 1", "line 2", "line 3"]);
    assert!(
        progress
            .iter()
            .all(|n| n["params"]["progressToken"] == "tok-1")
    );
    let values: Vec<f64> = progress
        .iter()
        .map(|n| n["params"]["progress"].as_f64().unwrap())
        .collect();
    assert!(
        values.windows(2).all(|w| w[0] < w[1]),
        "progress increases: {values:?}"
    );
}

#[test]
fn many_concurrent_calls_all_complete() {
    let home = TestHome::new();
    let mut mcp = StdioMcp::start(
        home.path(),
        &[
            ("ENABLE_ADDITIONAL_TOOLS", "q-developer-agent".into()),
            ("QBOX_AGENT_CLI", "/bin/echo".into()),
        ],
    );
    let ids: Vec<u64> = (0..100)
        .map(|i| {
            mcp.send_request(
                "tools/call",
                json!({"name": "q-developer-agent", "arguments": {"prompt": format!("call {i}")}}),
            )
        })
        .collect();
    for (i, id) in ids.into_iter().enumerate() {
        let response = mcp.wait_response(id, Duration::from_secs(60));
        assert_eq!(response["result"]["isError"], json!(false), "{response}");
        let text = response["result"]["content"][0]["text"].as_str().unwrap();
        assert_eq!(text, format!("chat --no-interactive -- call {i}\n"));
    }
}

#[test]
fn a_read_only_snapshot_is_given_to_the_cli_as_a_private_copy() {
    let home = TestHome::new();
    let source = home.login(Flavor::AmazonQ, &valid_login("snap1"));
    let snapshot_dir = home.path().join("auth");
    let snapshot = snapshot_dir.join("data.sqlite3");
    let write_snapshot = || {
        let rows = qbox::store::db::read_snapshot_rows(&source).unwrap();
        qbox::store::snapshot::write_snapshot(
            &rows,
            &snapshot_dir,
            0o400,
            qbox::store::snapshot::SnapshotScope::Refreshable,
        )
        .unwrap();
    };
    write_snapshot();
    let record = home.path().join("record");
    let mut env = agent_env(&record);
    env.push(("QBOX_DB", snapshot.display().to_string()));
    let mut mcp = StdioMcp::start(home.path(), &env);
    let read_copy_token = |record: &Path| -> String {
        let env_dump = std::fs::read_to_string(record.join("env")).unwrap();
        let data_home = env_dump
            .lines()
            .find_map(|l| l.strip_prefix("XDG_DATA_HOME="))
            .unwrap()
            .to_owned();
        let copy = PathBuf::from(data_home)
            .join("amazon-q")
            .join("data.sqlite3");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777,
            0o600
        );
        qbox::store::read_login(&copy, None)
            .unwrap()
            .token
            .unwrap()
            .token
            .access_token
            .expose()
            .to_owned()
    };
    let (_, is_error, _) = mcp.call("q-developer-agent", json!({"prompt": "hi"}));
    assert!(!is_error);
    assert_eq!(read_copy_token(&record), "aoa-access-snap1");

    // The host refreshes the snapshot; the next call sees the new token.
    let mut fresh = valid_login("snap2");
    fresh.access_token = "aoa-access-snap2".into();
    crate::util::replace_stored_token(&source, Flavor::AmazonQ, &fresh.token_json());
    write_snapshot();
    let (_, is_error, _) = mcp.call("q-developer-agent", json!({"prompt": "again"}));
    assert!(!is_error);
    assert_eq!(read_copy_token(&record), "aoa-access-snap2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_native_chat_tool_answers_with_structured_content() {
    let q = qbox::standin::q::StandinQ::start("aoa-access-mcpchat")
        .await
        .unwrap();
    let mut answer = qbox::standin::q::Answer::text(&["Native ", "answer"]);
    answer.extra_events = vec![
        (
            "toolUseEvent".into(),
            json!({"toolUseId": "t1", "name": "fs_read", "input": "{\"path\":", "stop": false}),
        ),
        (
            "toolUseEvent".into(),
            json!({"toolUseId": "t1", "name": "fs_read", "input": "\"a.rs\"}", "stop": true}),
        ),
        (
            "codeReferenceEvent".into(),
            json!({"references": [{"licenseName": "MIT"}]}),
        ),
    ];
    q.push(qbox::standin::q::Reply::Answer(answer));
    let home = TestHome::new();
    home.login(Flavor::AmazonQ, &valid_login("mcpchat"));
    let url = q.url();
    let home_path = home.path().to_owned();
    let (text, is_error, result, notes) = tokio::task::spawn_blocking(move || {
        let mut mcp = StdioMcp::start(
            &home_path,
            &[
                ("QBOX_Q_ENDPOINT", url),
                ("XDG_DATA_HOME", home_path.join(".local/share").display().to_string()),
            ],
        );
        let response = mcp.request(
            "tools/call",
            json!({"name": "q-chat", "arguments": {"prompt": "hello"}, "_meta": {"progressToken": 9}}),
        );
        let result = response["result"].clone();
        let text = result["content"][0]["text"].as_str().unwrap_or_default().to_owned();
        (text, result["isError"] == json!(true), result, mcp.notifications.clone())
    })
    .await
    .unwrap();
    assert!(!is_error, "{result}");
    assert_eq!(text, "Native answer");
    let structured = &result["structuredContent"];
    assert_eq!(
        structured["conversationId"],
        q.requests()[0].body["conversationState"]["conversationId"],
        "the result names the conversation the client made"
    );
    assert_eq!(structured["toolUses"][0]["input"]["path"], "a.rs");
    assert_eq!(
        structured["codeReferences"][0]["references"][0]["licenseName"],
        "MIT"
    );
    let partial: Vec<&str> = notes
        .iter()
        .filter_map(|n| n["params"]["message"].as_str())
        .collect();
    assert_eq!(partial, ["Native ", "answer"]);
}

/// `qbox-sidecar serve --http 127.0.0.1:0`: the server picks its port and
/// says which on stderr.
struct HttpSidecar {
    child: std::process::Child,
    base: String,
}

impl HttpSidecar {
    fn start(home: &TestHome, extra_env: &[(&str, &str)]) -> Self {
        let mut command = home
            .sidecar()
            .args(["serve", "--http", "127.0.0.1:0"])
            .env("XDG_DATA_HOME", home.path().join("no-data"))
            .env("ENABLE_ADDITIONAL_TOOLS", "q-developer-agent")
            .env("QBOX_AGENT_CLI", fake_q())
            .envs(extra_env.iter().copied())
            .command();
        let (child, port, _) = spawn_serving(&mut command);
        let base = format!("http://127.0.0.1:{port}");
        Self { child, base }
    }
}

impl Drop for HttpSidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_requires_the_token_and_a_local_origin() {
    let home = TestHome::new();
    let sidecar = HttpSidecar::start(&home, &[("QBOX_MCP_TOKEN", "s3cret-token")]);
    let http = qbox::http::client(None).unwrap();
    let mcp = format!("{}/mcp", sidecar.base);
    let post = |token: Option<&str>, origin: Option<&str>| {
        let mut request = http
            .post(&mcp)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(INIT);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.send()
    };
    let missing = post(None, None).await.unwrap();
    assert_eq!(missing.status(), 401);
    assert!(
        missing.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    assert_eq!(post(Some("wrong"), None).await.unwrap().status(), 401);
    assert_eq!(
        post(Some("s3cret-token"), Some("https://evil.example"))
            .await
            .unwrap()
            .status(),
        403
    );
    let ok = post(Some("s3cret-token"), Some("http://localhost:5173"))
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let body = ok.text().await.unwrap();
    assert!(body.contains("qbox-sidecar"), "{body}");

    let health: Value = http
        .get(format!("{}/health", sidecar.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["agentEnabled"], true);
    assert_eq!(health["login"], false);

    let checked = home
        .sidecar()
        .args(["health", "--url", &format!("{}/health", sidecar.base)])
        .run_async()
        .await;
    assert_eq!(checked.code, 0, "{}", checked.stderr);
    // A port that refuses connections for as long as the test holds it.
    let (_refusing, port) = refusing_port();
    let dead = home
        .sidecar()
        .args([
            "health",
            "--url",
            &format!("http://127.0.0.1:{port}/health"),
            "--timeout",
            "2",
        ])
        .run_async()
        .await;
    assert_eq!(dead.code, 1, "{}", dead.stderr);
}

#[test]
fn a_public_address_without_a_token_is_refused() {
    let home = TestHome::new();
    let run = home.sidecar().args(["serve", "--http", "0.0.0.0:0"]).run();
    assert_eq!(run.code, 2);
    let stderr = run.stderr;
    assert!(
        stderr.contains("refusing to serve 0.0.0.0:0 without a bearer token"),
        "{stderr}"
    );
    assert!(stderr.contains("hint: set QBOX_MCP_TOKEN"), "{stderr}");
}

/// The official MCP Python SDK as the client, over stdio and over HTTP,
/// with both tools (q-chat against the stand-in Q service).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_sdk_interoperates() {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    if !python.exists() {
        assert!(
            std::env::var_os("QBOX_REQUIRE_PYTHON_MCP").is_none(),
            "QBOX_REQUIRE_PYTHON_MCP is set but .venv has no python with the mcp package"
        );
        eprintln!(
            "SKIPPED the_official_python_sdk_interoperates: no .venv (python3 -m venv .venv && .venv/bin/pip install mcp)"
        );
        return;
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/mcp_interop.py");
    let home = TestHome::new();
    let q = qbox::standin::q::StandinQ::start("py-q-token")
        .await
        .unwrap();
    let q_url = q.url();
    let check = |report: &str| {
        let report: Value =
            serde_json::from_str(report.trim()).unwrap_or_else(|e| panic!("{e}: {report}"));
        assert_eq!(report["tools"], json!(offered_tools(true)));
        assert_eq!(report["call"]["is_error"], false);
        assert_eq!(report["call"]["text"], "line 1\nline 2\nline 3\n");
        assert_eq!(report["progress"], json!(["line 1", "line 2", "line 3"]));
        assert_eq!(report["bad_args"]["is_error"], true);
        assert_eq!(report["cancelled"]["cli_ran"], true, "{report}");
        assert_eq!(
            report["cancelled"]["call_ended"], "cancelled",
            "the cancelled call produced no result: {report}"
        );
        assert_eq!(
            report["cancelled"]["cli_stopped"], true,
            "the cancellation stopped the CLI: {report}"
        );
        assert_eq!(report["after_cancel"], "still serving\n");
        assert_eq!(report["chat"]["is_error"], false, "{report}");
        assert_eq!(report["chat"]["text"], "You said: from python");
        let id = report["chat"]["conversation_id"]
            .as_str()
            .unwrap_or_default();
        qbox::qapi::conversation::parse_conversation_id(id).expect("a client-made UUID");
        assert_eq!(
            report["chat"]["progress"],
            json!(["You said: ", "from python"])
        );
    };
    let home_path = home.path().to_owned();
    // The fake CLI writes its pid there, for the script's cancellation check.
    let record = home.path().join("record");
    let record_stdio = record.clone();
    let (python_stdio, script_stdio, url_stdio) = (python.clone(), script.clone(), q_url.clone());
    let stdio = tokio::task::spawn_blocking(move || {
        // The sidecar gets the script's environment: the harness's, cleared.
        clean_command(&python_stdio, &home_path)
            .arg(&script_stdio)
            .args(["stdio", env!("CARGO_BIN_EXE_qbox-sidecar")])
            .current_dir(&home_path)
            .env("XDG_DATA_HOME", home_path.join("no-data"))
            .env("ENABLE_ADDITIONAL_TOOLS", "q-developer-agent")
            .env("QBOX_AGENT_CLI", fake_q())
            .env("QBOX_Q_ENDPOINT", &url_stdio)
            .env("QBOX_ACCESS_TOKEN", "py-q-token")
            .env("FAKE_Q_RECORD", &record_stdio)
            .env("QBOX_AGENT_PASS_ENV", "FAKE_Q_RECORD")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        stdio.status.success(),
        "{}",
        String::from_utf8_lossy(&stdio.stderr)
    );
    check(&String::from_utf8(stdio.stdout).unwrap());

    let sidecar = HttpSidecar::start(
        &home,
        &[
            ("QBOX_MCP_TOKEN", "py-token"),
            ("QBOX_Q_ENDPOINT", &q_url),
            ("QBOX_ACCESS_TOKEN", "py-q-token"),
            ("FAKE_Q_RECORD", record.to_str().unwrap()),
            ("QBOX_AGENT_PASS_ENV", "FAKE_Q_RECORD"),
        ],
    );
    let mcp_url = format!("{}/mcp", sidecar.base);
    let home_path = home.path().to_owned();
    let http = tokio::task::spawn_blocking(move || {
        clean_command(&python, &home_path)
            .env("FAKE_Q_RECORD", &record)
            .arg(&script)
            .args(["http", &mcp_url, "py-token"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        http.status.success(),
        "{}",
        String::from_utf8_lossy(&http.stderr)
    );
    check(&String::from_utf8(http.stdout).unwrap());
}

#[test]
fn mcp_config_prints_ready_to_paste_configurations() {
    let home = TestHome::new();
    let vscode = home.qbox().args(["mcp-config", "--client", "vscode"]).run();
    vscode.assert_code(0);
    let config: Value = serde_json::from_str(&vscode.stdout).unwrap();
    let server = &config["servers"]["qbox"];
    assert_eq!(server["type"], "stdio");
    assert!(
        server["command"]
            .as_str()
            .unwrap()
            .ends_with("qbox-sidecar")
    );
    assert_eq!(server["args"], json!(["serve"]));

    let docker = home
        .qbox()
        .args([
            "mcp-config",
            "--client",
            "claude-desktop",
            "--docker",
            "--snapshot-dir",
            "/srv/auth",
            "--enable-agent",
        ])
        .run();
    docker.assert_code(0);
    let config: Value = serde_json::from_str(&docker.stdout).unwrap();
    let server = &config["mcpServers"]["qbox"];
    assert_eq!(server["command"], "docker");
    let args: Vec<&str> = server["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(args.contains(&"/srv/auth:/run/qbox/auth:ro"), "{args:?}");
    assert!(args.contains(&"QBOX_DB=/run/qbox/auth/data.sqlite3"));
    let me = format!("--user={}:{}", nix::unistd::getuid(), nix::unistd::getgid());
    assert!(args.contains(&me.as_str()), "{args:?}");
    assert_eq!(
        server["env"]["ENABLE_ADDITIONAL_TOOLS"],
        "q-developer-agent"
    );
    assert!(docker.stderr.contains("qbox snapshot /srv/auth --watch"));

    for client in ["q", "kiro"] {
        let run = home.qbox().args(["mcp-config", "--client", client]).run();
        run.assert_code(0);
        let config: Value = serde_json::from_str(&run.stdout).unwrap();
        assert!(config["mcpServers"]["qbox"]["command"].is_string());
    }
}

/// `qbox-sidecar serve` with only environment variables, as the image runs
/// it, on port 0 of `address`; returns the server and the port it bound.
fn serve_from_env(home: &TestHome, address: &str, db: Option<&Path>) -> (std::process::Child, u16) {
    let mut sidecar = home
        .sidecar()
        .args(["serve"])
        .env("QBOX_SIDECAR_HTTP", format!("{address}:0"))
        .env("QBOX_MCP_TOKEN", "health-test-token")
        .env("XDG_DATA_HOME", home.path().join("no-data"));
    if let Some(db) = db {
        sidecar = sidecar.env("QBOX_DB", db);
    }
    let (child, port, _) = spawn_serving(&mut sidecar.command());
    (child, port)
}

#[test]
fn health_asks_where_serve_listens_and_wants_a_usable_login() {
    let home = TestHome::new();
    let health = |listen: &str| {
        home.sidecar()
            .args(["health"])
            .env("QBOX_SIDECAR_HTTP", listen)
            .run()
    };

    // A wildcard address is asked through loopback; no login: unhealthy (4).
    let (mut server, port) = serve_from_env(&home, "0.0.0.0", None);
    let without_login = health(&format!("0.0.0.0:{port}"));
    server.kill().unwrap();
    server.wait().unwrap();
    assert_eq!(without_login.code, 4);
    let stderr = &without_login.stderr;
    assert!(
        stderr.contains(&format!(
            "http://127.0.0.1:{port}/health answers, but the server has no usable login"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("hint: mount a fresh snapshot"), "{stderr}");

    // With a login mounted: healthy.
    let store = home.login(Flavor::AmazonQ, &valid_login("health"));
    let (mut server, port) = serve_from_env(&home, "127.0.0.1", Some(&store));
    let with_login = health(&format!("127.0.0.1:{port}"));
    server.kill().unwrap();
    server.wait().unwrap();
    assert_eq!(with_login.code, 0, "{}", with_login.stderr);
    let report: Value = serde_json::from_str(&with_login.stdout).unwrap();
    assert_eq!(report["login"], true);

    // Over stdio there is nothing to ask: the login itself is checked.
    let stdio = home.sidecar().args(["health"]).env("QBOX_DB", &store).run();
    assert_eq!(stdio.code, 0);
    let report: Value = serde_json::from_str(&stdio.stdout).unwrap();
    assert_eq!(report["transport"], "stdio");
}

/// qbox is a multi-call binary: the same file started as `qbox-sidecar` is
/// the sidecar (the demo's image relies on it).
#[test]
fn qbox_started_as_qbox_sidecar_is_the_sidecar() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("qbox-sidecar");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_qbox"), &link).unwrap();
    let run = |exe: &Path| {
        std::process::Command::new(exe)
            .arg("--help")
            .output()
            .unwrap()
    };
    let as_sidecar = run(&link);
    let real_sidecar = run(Path::new(env!("CARGO_BIN_EXE_qbox-sidecar")));
    assert!(as_sidecar.status.success());
    assert_eq!(
        String::from_utf8_lossy(&as_sidecar.stdout),
        String::from_utf8_lossy(&real_sidecar.stdout)
    );
    let as_qbox = run(Path::new(env!("CARGO_BIN_EXE_qbox")));
    assert_ne!(as_qbox.stdout, as_sidecar.stdout);
}

#[test]
fn issue_30_a_progress_token_over_256_bytes_gets_no_progress_notifications() {
    let home = TestHome::new();
    let record = home.path().join("record");
    let mut mcp = StdioMcp::start(home.path(), &agent_env(&record));
    // 254 characters: 256 bytes as JSON, echoed as usual.
    let short = "s".repeat(254);
    // Every notification would repeat a huge token (a 3 MiB one cost
    // gigabytes): a call with one runs and answers, without progress.
    let long = "l".repeat(255);
    for (token, expected) in [(&short, 3), (&long, 0)] {
        mcp.notifications.clear();
        let response = mcp.request(
            "tools/call",
            json!({"name": "q-developer-agent", "arguments": {"prompt": "lines:3"}, "_meta": {"progressToken": token}}),
        );
        assert_eq!(response["result"]["isError"], json!(false), "{response}");
        let progress: Vec<&Value> = mcp
            .notifications
            .iter()
            .filter(|n| n["method"] == "notifications/progress")
            .collect();
        assert_eq!(
            progress.len(),
            expected,
            "token of {} characters",
            token.len()
        );
        assert!(
            progress
                .iter()
                .all(|n| n["params"]["progressToken"] == json!(token))
        );
    }
}

/// `qbox-sidecar serve` over stdio, every pipe the test's, after the
/// `initialize` handshake.
fn raw_stdio_sidecar(home: &TestHome) -> std::process::Child {
    use std::io::{BufRead, Write};
    let mut child = home
        .sidecar()
        .args(["serve"])
        .command()
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.as_mut().unwrap();
    writeln!(
        stdin,
        "{}",
        json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "qbox-tests", "version": "1"}}})
    )
    .unwrap();
    writeln!(
        stdin,
        "{}",
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
    )
    .unwrap();
    let mut reader = std::io::BufReader::new(child.stdout.as_mut().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.contains("qbox-sidecar"), "{line}");
    child
}

#[test]
fn issue_30_a_request_line_over_4_mib_ends_the_stdio_server_with_an_error() {
    use std::io::Write;
    let home = TestHome::new();
    let mut child = raw_stdio_sidecar(&home);
    let mut stdin = child.stdin.take().unwrap();
    // 5 MiB and no newline, and the pipe stays open: the server must not
    // wait for the end of the line, nor hold it.
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'x'; 64 << 10];
        for _ in 0..80 {
            if stdin.write_all(&chunk).is_err() {
                break;
            }
        }
        stdin
    });
    let mut ended = None;
    wait_until(Duration::from_secs(60), "the server ends", || {
        ended = child.try_wait().unwrap();
        ended.is_some()
    });
    drop(writer.join().unwrap());
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(ended.unwrap().code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("error: a request line on stdin was longer than 4 MiB; the server stopped"),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: send one JSON-RPC message per line"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("Resource temporarily unavailable"),
        "{stderr}"
    );
}

#[test]
fn issue_30_the_stdio_server_stops_reading_while_its_answers_are_not_read() {
    use std::io::{BufRead, Write};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    const REQUESTS: usize = 20_000;
    let home = TestHome::new();
    let mut child = raw_stdio_sidecar(&home);
    let mut stdin = child.stdin.take().unwrap();
    let written = Arc::new(AtomicUsize::new(0));
    let progress = written.clone();
    let writer = std::thread::spawn(move || {
        for id in 1..=REQUESTS {
            let ping = json!({"jsonrpc": "2.0", "id": id, "method": "ping"});
            if writeln!(stdin, "{ping}").is_err() {
                return;
            }
            progress.store(id, Ordering::Relaxed);
        }
        drop(stdin);
    });
    // Nothing reads stdout: once its pipe and the server's queue are full,
    // the server reads no more, and the writer is stuck with requests left.
    // (Before, the server read them all and kept every answer in memory.)
    let mut last = 0;
    wait_until(
        Duration::from_secs(120),
        "the writer is held back with requests unsent",
        || {
            std::thread::sleep(Duration::from_millis(500));
            let now = written.load(Ordering::Relaxed);
            let stuck = now == last && now < REQUESTS;
            last = now;
            stuck
        },
    );
    // Held back early: what the pipes hold and a few hundred requests in
    // the server, not every request read and held as a stuck task (on
    // today's runtime the loop reading stdin outran the tasks answering).
    let held_at = written.load(Ordering::Relaxed);
    assert!(
        held_at < REQUESTS / 2,
        "the server read {held_at} of {REQUESTS} requests while its answers were not read"
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let peak_kb: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(
        peak_kb < 100 << 10,
        "the server grew to {} MB while its answers were not read",
        peak_kb >> 10
    );
    // Reading again lets everything through: no request is lost.
    let mut answered = 0;
    let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while answered < REQUESTS {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "stdout ended after {answered} answers"
        );
        if line.contains("\"result\"") {
            answered += 1;
        }
    }
    writer.join().unwrap();
    let _ = child.kill();
    let _ = child.wait();
}

/// The agent's private copy of the login (with a refreshable snapshot it
/// holds the refresh token and the client secret) goes with the stdio
/// sidecar when a signal stops it, as when its input ends.
#[test]
fn a_stdio_sidecar_stopped_by_a_signal_removes_the_agents_private_copy() {
    for signal in ["TERM", "INT", "HUP"] {
        let home = TestHome::new();
        let snapshot_dir = home.path().join("snap");
        std::fs::create_dir_all(&snapshot_dir).unwrap();
        let snapshot = snapshot_dir.join("data.sqlite3");
        qbox::store::schema::StoreBuilder::create(&snapshot, Flavor::Kiro)
            .unwrap()
            .login(&valid_login("signal"))
            .unwrap();
        let tmp = home.path().join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        let mut env = agent_env(&home.path().join("record"));
        env.push(("QBOX_DB", snapshot.display().to_string()));
        env.push(("TMPDIR", tmp.display().to_string()));
        let mcp = StdioMcp::start(home.path(), &env);
        let copies = || {
            std::fs::read_dir(&tmp)
                .unwrap()
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("qbox-agent-"))
                .count()
        };
        assert_eq!(copies(), 1, "the sidecar made its private copy");
        let pid = mcp.pid();
        std::process::Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()
            .unwrap();
        wait_until(Duration::from_secs(10), "the sidecar to stop", || {
            !process_alive(pid)
        });
        assert_eq!(copies(), 0, "SIG{signal} left the private copy behind");
    }
}

/// The CLIs write under HOME and panic when they cannot: a sidecar whose
/// HOME is missing or read-only gives its CLI a private one; a writable
/// HOME is the CLI's as it is (its settings live there).
#[test]
fn the_agents_cli_always_gets_a_writable_home() {
    let home = TestHome::new();
    let tmp = home.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let cli_home = |sidecar_home: &str| {
        let mut env = agent_env(&home.path().join("record"));
        env.push(("HOME", sidecar_home.to_owned()));
        env.push(("TMPDIR", tmp.display().to_string()));
        let mut mcp = StdioMcp::start(home.path(), &env);
        let (text, is_error, _) = mcp.call("q-developer-agent", json!({"prompt": "env"}));
        assert!(!is_error, "{text}");
        text.lines()
            .find_map(|l| l.strip_prefix("HOME="))
            .map(str::to_owned)
            .unwrap_or_default()
    };
    let private = cli_home("/nonexistent/home");
    assert!(
        private.starts_with(tmp.to_str().unwrap()) && private.contains("qbox-agent-"),
        "{private}"
    );
    let own = home.path().display().to_string();
    assert_eq!(cli_home(&own), own);
}
