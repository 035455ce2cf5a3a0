//! Tokens never appear in logs, at any level, on any path (including a
//! refresh, where every secret crosses the process): every command of both
//! binaries runs at trace level with known tokens in the store and the
//! stand-ins, and none of their text is in what it printed.

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::Duration;

use qbox::standin::oidc::StandinOidc;
use qbox::standin::q::StandinQ;
use qbox::store::Flavor;
use serde_json::{Value, json};

use crate::util::{
    KillOnDrop, Run, StderrLines, TestHome, expired_login, spawn_serving, wait_until,
};

/// Every secret of the tests below: the stored login before and after its
/// refresh, the OIDC client's secret, and the MCP bearer token.
const SECRETS: [&str; 6] = [
    "aoa-access-old",
    "aor-refresh-old",
    "fixture-client-secret",
    "standin-access-1",
    "standin-refresh-1",
    MCP_TOKEN,
];
const MCP_TOKEN: &str = "mcp-bearer-secret-0123456789abcdef";

/// Asserts that `what` logged at trace level and printed no secret (on
/// stdout too, unless printing a token there is its job: `None`).
#[track_caller]
fn assert_no_secret(what: &str, stdout: Option<&str>, stderr: &str) {
    assert!(
        stderr.lines().count() > 2,
        "trace logging is on for {what}, so there is output to search:\n{stderr}"
    );
    for secret in SECRETS {
        for (stream, text) in [("stdout", stdout.unwrap_or_default()), ("stderr", stderr)] {
            assert!(
                !text.contains(secret),
                "{secret} leaked into the {stream} of {what}:\n{text}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_logs_never_contain_tokens() {
    let oidc = StandinOidc::start(
        "fixture-client-id",
        "fixture-client-secret",
        "aor-refresh-old",
    )
    .await
    .unwrap();
    // After the first command's refresh the store holds standin-access-1.
    let q = StandinQ::start("standin-access-1").await.unwrap();
    let home = TestHome::new();
    let store = home.login(Flavor::AmazonQ, &expired_login("old"));
    let snapshot_dir = home.path().join("auth");
    let snapshot_dir = snapshot_dir.to_str().unwrap();
    for args in [
        vec!["-vvv", "export-token"],
        vec!["-vvv", "doctor"],
        vec!["-vvv", "export-token", "--format", "github"],
        vec!["-vvv", "chat", "hello at trace level"],
        vec!["-vvv", "snapshot", snapshot_dir],
    ] {
        let run = home
            .qbox()
            .env("GITHUB_ENV", home.path().join("github_env"))
            .env("RUST_LOG", "trace")
            .env("QBOX_OIDC_ENDPOINT", oidc.url())
            .env("QBOX_Q_ENDPOINT", q.url())
            .args(&args)
            .run_async()
            .await;
        run.assert_code(0);
        // export-token prints a token on stdout: that is what it is for.
        let stdout = (args[1] != "export-token").then_some(run.stdout.as_str());
        assert_no_secret(&format!("qbox {args:?}"), stdout, &run.stderr);
    }
    assert!(q.requests().len() == 1, "the chat reached the stand-in");
    assert_eq!(oidc.requests().len(), 1, "the refresh happened once");

    // The sidecar, with the store's login and an MCP bearer token.
    let sidecar = |args: &[&str]| {
        home.sidecar()
            .args(["-vvv"])
            .args(args.iter().copied())
            .env("RUST_LOG", "trace")
            .env("QBOX_DB", &store)
            .env("QBOX_Q_ENDPOINT", q.url())
            .env("QBOX_MCP_TOKEN", MCP_TOKEN)
    };
    let chat = sidecar(&["chat", "hello from the sidecar"])
        .run_async()
        .await;
    chat.assert_code(0);
    assert_no_secret("qbox-sidecar chat", Some(&chat.stdout), &chat.stderr);

    let stdio = {
        let command = sidecar(&["serve"]).command();
        tokio::task::spawn_blocking(move || serve_stdio_one_chat(command))
            .await
            .unwrap()
    };
    assert!(
        stdio.stdout.contains("You said: over stdio"),
        "{}",
        stdio.stdout
    );
    assert_no_secret(
        "qbox-sidecar serve (stdio)",
        Some(&stdio.stdout),
        &stdio.stderr,
    );

    let (server, port, server_log) =
        spawn_serving(&mut sidecar(&["serve", "--http", "127.0.0.1:0"]).command());
    let mut server = KillOnDrop::new(server);
    let call = sidecar(&[
        "call",
        "--url",
        &format!("http://127.0.0.1:{port}/mcp"),
        "q-chat",
        "-a",
        "prompt=over http",
    ])
    .run_async()
    .await;
    call.assert_code(0);
    assert!(
        call.stdout.contains("You said: over http"),
        "{}",
        call.stdout
    );
    assert_no_secret("qbox-sidecar call", Some(&call.stdout), &call.stderr);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.child().id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let served = tokio::task::spawn_blocking(move || {
        let status = server.wait(Duration::from_secs(20), "the server stops on SIGTERM");
        wait_until(Duration::from_secs(10), "the server's stderr ends", || {
            server_log.ended()
        });
        (status, server_log.text())
    })
    .await
    .unwrap();
    assert_no_secret("qbox-sidecar serve --http", None, &served.1);
    assert!(
        q.requests().len() == 4,
        "every sidecar chat reached the stand-in"
    );
}

/// `command` (`qbox-sidecar serve` over stdio) answers `initialize` and one
/// q-chat call, then stdin closes and it exits.
fn serve_stdio_one_chat(mut command: std::process::Command) -> Run {
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let log = StderrLines::read(child.stderr.take().unwrap());
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut answers = String::new();
    let mut answer_to = |id: u64, stdin: &mut std::process::ChildStdin, request: Value| {
        writeln!(stdin, "{request}").unwrap();
        loop {
            let mut line = String::new();
            assert!(stdout.read_line(&mut line).unwrap() > 0, "stdout ended");
            answers.push_str(&line);
            let message: Value = serde_json::from_str(&line).unwrap();
            if message["id"] == json!(id) {
                return;
            }
        }
    };
    answer_to(
        1,
        &mut stdin,
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "qbox-tests", "version": "1"}}}),
    );
    writeln!(
        stdin,
        "{}",
        json!({"jsonrpc": "2.0", "method": "notifications/initialized", "params": {}})
    )
    .unwrap();
    answer_to(
        2,
        &mut stdin,
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "q-chat", "arguments": {"prompt": "over stdio"}}}),
    );
    drop(stdin);
    let status = child.wait().unwrap();
    wait_until(Duration::from_secs(10), "the server's stderr ends", || {
        log.ended()
    });
    Run {
        code: status.code().unwrap_or(-1),
        stdout: answers,
        stderr: log.text(),
    }
}

/// `qbox run` at trace level: the engine's API traffic (the container's
/// configuration, the snapshot's mount) is logged, its tokens are not, and
/// the container's environment holds none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// The guard only keeps other engine tests out while this one runs; nothing
// else in this test takes it, so holding it across awaits cannot deadlock.
#[allow(clippy::await_holding_lock)]
async fn trace_logs_of_run_never_contain_tokens() {
    let Some(image) = crate::container::engine_image() else {
        return;
    };
    let _turn = crate::container::serial();
    let oidc = StandinOidc::start(
        "fixture-client-id",
        "fixture-client-secret",
        "aor-refresh-old",
    )
    .await
    .unwrap();
    let home = TestHome::new();
    home.login(Flavor::AmazonQ, &expired_login("old"));
    let run = home
        .qbox()
        .env_remove("DOCKER_HOST")
        .env("RUST_LOG", "trace")
        .env("QBOX_OIDC_ENDPOINT", oidc.url())
        .args(["-vvv", "run", image, "--", "env"])
        .run_async()
        .await;
    run.assert_code(0);
    assert!(run.stdout.contains("QBOX_DB="), "{}", run.stdout);
    assert_no_secret("qbox run", Some(&run.stdout), &run.stderr);
    assert_eq!(oidc.requests().len(), 1, "run refreshed the login");
}
