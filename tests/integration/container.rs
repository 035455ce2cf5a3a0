//! `qbox run` against the real Docker Engine, with a small image built here
//! from the static busybox binary (no registry is needed or used).

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use qbox::standin::oidc::StandinOidc;
use qbox::store::Flavor;

use crate::util::{StderrLines, TestHome, clean_command, file_bytes, valid_login, wait_until};

const IMAGE: &str = "qbox-test-busybox:latest";

/// Builds the test image once; `None` (with a visible skip) when no engine.
pub(crate) fn engine_image() -> Option<&'static str> {
    static READY: OnceLock<bool> = OnceLock::new();
    let tools = [
        "sh", "cat", "echo", "sleep", "id", "true", "false", "touch", "ls", "grep", "seq", "env",
        "test", "stty", "tail",
    ];
    let ready = *READY.get_or_init(|| {
        crate::util::import_busybox_image(IMAGE, &tools, "/bin", |root| {
            // A file that is there but not executable (exit 126).
            std::fs::write(root.join("bin/not-executable"), "#!/bin/sh\n").unwrap();
        })
    });
    ready.then_some(IMAGE)
}

/// `qbox` for a test that uses the engine: the real engine, and the home's
/// own runtime directory ([`crate::util::runtime_dir`]), where its runs'
/// snapshots go, apart from the user's own runs.
pub(crate) fn qbox_engine(home: &TestHome) -> crate::util::Qbox {
    home.qbox()
        .env_remove("DOCKER_HOST")
        .env("XDG_RUNTIME_DIR", crate::util::runtime_dir(home.path()))
}

/// `qbox run` with [`qbox_engine`], its container labelled as this test's
/// ([`TestHome::label`]).
pub(crate) fn qbox_run(home: &TestHome, args: &[&str]) -> crate::util::Qbox {
    qbox_engine(home)
        .args(["run", "--label", &home.label()])
        .args(args.iter().copied())
}

/// What this test left: its own containers (by its label, in any state)
/// and run directories in its own runtime directory. A user's `qbox run`
/// or `qbox run -d` beside the tests is never counted.
fn leftovers(home: &TestHome) -> (usize, usize) {
    let containers = Command::new("docker")
        .args(["ps", "-aq", "--filter", "label=qbox.managed=true"])
        .args(["--filter", &format!("label={}", home.label())])
        .output()
        .unwrap();
    let containers = String::from_utf8(containers.stdout)
        .unwrap()
        .lines()
        .count();
    let runtime = crate::util::runtime_dir(home.path()).join("qbox");
    let snapshots = std::fs::read_dir(runtime).map_or(0, |entries| {
        entries
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("run-")
            })
            .count()
    });
    (containers, snapshots)
}

/// The start of most engine tests: the image, this test's turn at the
/// engine, and a home whose store holds a valid login tagged `tag`.
fn engine_test(tag: &str) -> Option<(&'static str, std::sync::MutexGuard<'static, ()>, TestHome)> {
    let image = engine_image()?;
    let turn = serial();
    let home = TestHome::new();
    home.login(Flavor::AmazonQ, &valid_login(tag));
    Some((image, turn, home))
}

/// Starts `qbox` with piped output and waits until the container prints
/// `ready`; returns the child and the rest of its stdout.
pub(crate) fn spawn_until_ready(
    qbox: crate::util::Qbox,
) -> (std::process::Child, std::process::ChildStdout) {
    let mut child = qbox
        .command()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut ready = [0u8; 6];
    std::io::Read::read_exact(&mut stdout, &mut ready).unwrap();
    assert_eq!(&ready, b"ready\n");
    (child, stdout)
}

/// Waits for `child` to end, failing the test after `limit`.
pub(crate) fn wait_within(
    child: &mut std::process::Child,
    limit: Duration,
    what: &str,
) -> std::process::ExitStatus {
    wait_until(limit, &format!("{what} ends"), || child.try_wait().unwrap())
}

/// Container tests share the engine; they run one at a time.
pub(crate) fn serial() -> std::sync::MutexGuard<'static, ()> {
    crate::util::engine_turn()
}

#[test]
fn the_login_is_mounted_read_only_where_documented_and_the_host_store_is_untouched() {
    let Some((image, _turn, home)) = engine_test("ctr") else {
        return;
    };
    let store = home.store_path(Flavor::AmazonQ);
    let before = file_bytes(&store);
    let run = qbox_run(
        &home,
        &[image, "--", "sh", "-c",
          "echo \"db=$QBOX_DB\"; grep -q aoa-access-ctr \"$QBOX_DB\" && echo token-readable; \
           ls -ld /run/qbox/auth; \
           touch /run/qbox/auth/x 2>&1; echo tampered > \"$QBOX_DB\" 2>&1; echo to-stderr >&2; exit 0"],
    )
    .run();
    run.assert_code(0);
    assert!(
        run.stdout.contains("db=/run/qbox/auth/data.sqlite3"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("token-readable"), "{}", run.stdout);
    // Issue #13: the snapshot's directory on the host is private (0700).
    assert!(run.stdout.contains("drwx------"), "{}", run.stdout);
    let both = format!("{}{}", run.stdout, run.stderr);
    assert_eq!(both.matches("Read-only file system").count(), 2, "{both}");
    assert!(
        run.stderr.contains("to-stderr") && !run.stdout.contains("to-stderr"),
        "streams kept apart"
    );
    assert_eq!(file_bytes(&store), before, "the host store is unchanged");
    assert_eq!(leftovers(&home), (0, 0));
}

#[test]
fn issue_30_auth_live_mounts_only_the_cli_data_directory_and_qbox_db_names_the_file() {
    let Some((image, _turn, home)) = engine_test("live") else {
        return;
    };
    // The Kiro CLI's directory holding a store under another name.
    let store = home.data_dir().join("kiro-cli").join("custom.sqlite3");
    std::fs::create_dir_all(store.parent().unwrap()).unwrap();
    qbox::store::schema::StoreBuilder::create(&store, Flavor::Kiro)
        .unwrap()
        .login(&valid_login("live"))
        .unwrap();
    let before = file_bytes(&store);
    let run = qbox_engine(&home)
        .args(["--db", store.to_str().unwrap(), "--cli", "kiro", "run"])
        .args(["--label", &home.label()])
        .args([
            "--auth",
            "live",
            image,
            "--",
            "sh",
            "-c",
            "echo \"db=$QBOX_DB\"; grep -q aoa-access-live \"$QBOX_DB\" && echo token-readable; \
             echo tampered > \"$QBOX_DB\" 2>&1; exit 0",
        ])
        .run();
    run.assert_code(0);
    assert!(
        run.stdout.contains("db=/run/qbox/auth/custom.sqlite3"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("token-readable"), "{}", run.stdout);
    let both = format!("{}{}", run.stdout, run.stderr);
    assert!(both.contains("Read-only file system"), "{both}");
    assert_eq!(file_bytes(&store), before, "the host store is unchanged");
    assert_eq!(leftovers(&home), (0, 0));
}

/// Removes a container when the test ends, however it ends.
struct RemoveContainer(String);

impl Drop for RemoveContainer {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

#[test]
fn issue_30_a_users_own_qbox_container_beside_the_tests_is_not_counted_as_theirs() {
    let Some((image, _turn, home)) = engine_test("beside") else {
        return;
    };
    // What a user's `qbox run -d` sidecar looks like to the engine.
    let name = format!("qbox-test-users-own-{}", std::process::id());
    let _remove = RemoveContainer(name.clone());
    let created = Command::new("docker")
        .args(["create", "--name", &name, "--label", "qbox.managed=true"])
        .args([image, "sleep", "300"])
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let run = qbox_run(&home, &[image, "--", "true"]).run();
    run.assert_code(0);
    assert_eq!(leftovers(&home), (0, 0));
    // The check can fail: this test's own container, kept, is counted.
    let kept = qbox_run(&home, &["--keep", "--auth", "none", image, "--", "true"]).run();
    kept.assert_code(0);
    assert_eq!(leftovers(&home).0, 1);
    let _ = Command::new("docker")
        .args(["rm", "-f"])
        .args(
            String::from_utf8(
                Command::new("docker")
                    .args(["ps", "-aq", "--filter", &format!("label={}", home.label())])
                    .output()
                    .unwrap()
                    .stdout,
            )
            .unwrap()
            .split_whitespace(),
        )
        .output();
}

#[test]
fn exit_codes_propagate() {
    let Some((image, _turn, home)) = engine_test("codes") else {
        return;
    };
    for (cmd, code) in [("exit 0", 0), ("exit 1", 1), ("exit 7", 7)] {
        let run = qbox_run(&home, &[image, "--", "sh", "-c", cmd]).run();
        assert_eq!(run.code, code, "{cmd}: {}", run.stderr);
    }
    let not_found = qbox_run(&home, &[image, "--", "no-such-command"]).run();
    not_found.assert_code(127).assert_one_line_error();
    let not_executable = qbox_run(&home, &[image, "--", "/bin/not-executable"]).run();
    not_executable.assert_code(126).assert_one_line_error();
    let missing_image = qbox_run(&home, &["qbox-no-such-image:1"]).run();
    missing_image
        .assert_code(125)
        .assert_stderr_contains("never pulls");
    let bad_volume = qbox_run(&home, &["-v", "relative-only", image]).run();
    bad_volume
        .assert_code(125)
        .assert_stderr_contains("invalid --volume");
    let no_engine = home
        .qbox()
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .args(["run", "--auth", "none", image])
        .run();
    no_engine
        .assert_code(125)
        .assert_stderr_contains("hint: start the docker engine");
    assert_eq!(leftovers(&home), (0, 0));
}

#[test]
fn stdin_is_forwarded_with_its_eof() {
    let Some(image) = engine_image() else { return };
    let _turn = serial();
    let home = TestHome::new();
    let mut child = qbox_run(
        &home,
        &[
            "-i",
            "--auth",
            "none",
            image,
            "--",
            "sh",
            "-c",
            "cat; echo eof-seen",
        ],
    )
    .command()
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"line one\nline two\n").unwrap();
    }
    let output = child.wait_with_output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        "line one\nline two\neof-seen\n"
    );
}

#[test]
fn signals_are_forwarded_and_interrupted_runs_leave_nothing_behind() {
    let Some((image, _turn, home)) = engine_test("sig") else {
        return;
    };
    let script = "trap 'echo got-term; exit 3' TERM; echo ready; while true; do sleep 0.1; done";
    for round in 0..20 {
        // At info level qbox says when it forwards a signal.
        let (mut child, mut stdout) = spawn_until_ready(
            qbox_run(&home, &[image, "--", "sh", "-c", script]).env("RUST_LOG", "qbox=info"),
        );
        let log = StderrLines::read(child.stderr.take().unwrap());
        let signal = if round % 2 == 0 { "-TERM" } else { "-INT" };
        Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        if signal == "-INT" {
            // sh ignores SIGINT while waiting; the second Ctrl-C kills the
            // container. It is sent once qbox has taken the first.
            log.wait_for(
                Duration::from_secs(20),
                "qbox forwards the first SIGINT",
                |line| line.contains("forwarding a signal").then_some(()),
            );
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
        }
        let status = wait_within(
            &mut child,
            Duration::from_secs(20),
            "qbox run after a signal",
        );
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
        if signal == "-TERM" {
            assert_eq!(
                status.code(),
                Some(3),
                "the container saw SIGTERM and exited 3"
            );
            assert!(rest.contains("got-term"), "{rest}");
        } else {
            // SIGINT reached the container (130), or the second one killed it (137).
            assert!(matches!(status.code(), Some(130 | 137)), "{status:?}");
        }
        assert_eq!(leftovers(&home), (0, 0), "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// The guard only keeps other engine tests out while this one runs; nothing
// else in this test takes it, so holding it across awaits cannot deadlock.
#[allow(clippy::await_holding_lock)]
async fn the_snapshot_is_refreshed_inside_a_running_container() {
    let Some(image) = engine_image() else { return };
    let _turn = serial();
    let oidc = StandinOidc::start(
        "fixture-client-id",
        "fixture-client-secret",
        "aor-refresh-short",
    )
    .await
    .unwrap();
    let home = TestHome::new();
    let mut login = valid_login("short");
    login.refresh_token = Some("aor-refresh-short".into());
    // Enters the 5-minute refresh margin about 3 s from now, while the
    // container runs: the container first sees the old token, then the new.
    login.expires_at =
        time::OffsetDateTime::now_utc() + time::Duration::minutes(5) + time::Duration::seconds(3);
    home.login(Flavor::AmazonQ, &login);
    let run = qbox_run(
        &home,
        &[image, "--", "sh", "-c",
          "grep -q aoa-access-short \"$QBOX_DB\" || exit 8; \
           for i in $(seq 1 150); do grep -q standin-access-1 \"$QBOX_DB\" && break; sleep 0.1; done; \
           grep -q standin-access-1 \"$QBOX_DB\" || exit 9; \
           grep -q -e aor-refresh-short -e standin-refresh \"$QBOX_DB\" && exit 7; exit 0"],
    )
    .env("QBOX_OIDC_ENDPOINT", oidc.url())
    .run_async()
    .await;
    assert_eq!(
        run.code, 0,
        "the refreshed token reached the container, and no refresh token did (7): {}",
        run.stderr
    );
    assert_eq!(oidc.requests().len(), 1);
    assert_eq!(leftovers(&home), (0, 0));
}

#[test]
fn with_it_the_terminal_is_raw_follows_the_window_size_and_is_restored() {
    let Some((image, _turn, home)) = engine_test("tty") else {
        return;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/tty_session.py");
    let session = clean_command("python3", home.path())
        .env("XDG_RUNTIME_DIR", crate::util::runtime_dir(home.path()))
        .arg(script)
        .args([env!("CARGO_BIN_EXE_qbox"), image, &home.label()])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&session.stdout).unwrap_or_else(|_| {
        panic!(
            "{}{}",
            String::from_utf8_lossy(&session.stdout),
            String::from_utf8_lossy(&session.stderr)
        )
    });
    assert!(session.status.success(), "{report}");
    assert_eq!(
        report["sizes"],
        serde_json::json!(["33 101", "40 120"]),
        "{}",
        report["output"]
    );
    assert_eq!(report["raw_during"], true, "{}", report["output"]);
    assert_eq!(report["qbox_exit"], 0, "{}", report["output"]);
    assert_eq!(report["restored"], true, "{}", report["output"]);
    assert_eq!(leftovers(&home), (0, 0));
}

#[test]
fn a_container_killed_for_memory_exits_137_with_a_reason() {
    let Some((image, _turn, home)) = engine_test("oom") else {
        return;
    };
    // `tail` keeps the last line of a file without newlines in memory.
    let run = qbox_run(&home, &["-m", "8m", image, "--", "tail", "/dev/zero"]).run();
    run.assert_code(137);
    assert!(
        run.stderr
            .contains("the container ran out of memory (--memory 8m) and was killed (exit 137)"),
        "{}",
        run.stderr
    );
    assert_eq!(leftovers(&home), (0, 0));

    let bad = qbox_run(&home, &["-m", "lots", image, "--", "true"]).run();
    bad.assert_code(125);
    bad.assert_stderr_contains("invalid --memory `lots`");
}

/// A stand-in for the engine's socket that forwards to the real one and can
/// be cut off and brought back, as when the engine restarts.
pub(crate) struct EngineProxy {
    path: std::path::PathBuf,
    runtime: tokio::runtime::Runtime,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl EngineProxy {
    pub(crate) fn start(path: &Path) -> Self {
        let mut proxy = Self {
            path: path.to_owned(),
            runtime: tokio::runtime::Runtime::new().unwrap(),
            server: None,
        };
        proxy.resume();
        proxy
    }

    /// Starts forwarding again on the same path.
    pub(crate) fn resume(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let listener = {
            let _guard = self.runtime.enter();
            tokio::net::UnixListener::bind(&self.path).unwrap()
        };
        self.server = Some(self.runtime.spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    break;
                };
                connections.spawn(async move {
                    if let Ok(mut engine) =
                        tokio::net::UnixStream::connect("/var/run/docker.sock").await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut engine).await;
                    }
                });
            }
        }));
    }

    /// Drops the listener and every connection: the engine is gone.
    pub(crate) fn cut(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
            // Aborting the accept loop drops the JoinSet, which aborts the
            // forwarding tasks and closes both sides of each connection.
            let _ = self.runtime.block_on(server);
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

#[test]
fn an_engine_that_goes_away_mid_run_is_reported_and_nothing_is_left_behind() {
    let Some((image, _turn, home)) = engine_test("lost") else {
        return;
    };
    let socket = home.path().join("engine.sock");
    let mut proxy = EngineProxy::start(&socket);
    let (mut child, _stdout) = spawn_until_ready(
        qbox_engine(&home)
            .env("DOCKER_HOST", format!("unix://{}", socket.display()))
            // At debug level qbox says when removal found no engine.
            .env("RUST_LOG", "qbox=debug")
            .args(["run", "--label", &home.label(), image])
            .args(["--", "sh", "-c", "echo ready; sleep 30"]),
    );
    let log = StderrLines::read(child.stderr.take().unwrap());

    proxy.cut();
    // The engine comes back once qbox has found it gone and tries again.
    log.wait_for(
        Duration::from_secs(30),
        "qbox tries again to remove the container of an engine that is gone",
        |line| line.contains("trying again").then_some(()),
    );
    proxy.resume();
    let status = wait_within(
        &mut child,
        Duration::from_secs(30),
        "qbox run without its engine",
    );
    wait_until(
        Duration::from_secs(10),
        "qbox's stderr is read to its end",
        || log.ended(),
    );
    let stderr = log.text();
    assert_eq!(status.code(), Some(125), "{stderr}");
    assert!(
        stderr.contains("lost the docker engine while container"),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: the engine restarted or went away"),
        "{stderr}"
    );
    // Removal waited for the engine to come back.
    assert_eq!(leftovers(&home), (0, 0), "{stderr}");
}

/// A docker CLI configuration whose current context points at `host`.
fn docker_config_with_context(dir: &Path, host: &str) {
    let meta = dir.join("contexts/meta/0a1b2c");
    std::fs::create_dir_all(&meta).unwrap();
    std::fs::write(
        dir.join("config.json"),
        r#"{"auths":{},"currentContext":"qbox-test"}"#,
    )
    .unwrap();
    let json = serde_json::json!({"Name": "qbox-test", "Metadata": {}, "Endpoints": {"docker": {"Host": host}}});
    std::fs::write(meta.join("meta.json"), json.to_string()).unwrap();
}

#[test]
fn the_current_docker_context_is_honoured_when_docker_host_is_unset() {
    let Some((image, _turn, home)) = engine_test("ctx") else {
        return;
    };
    let elsewhere = home.path().join("elsewhere");
    docker_config_with_context(&elsewhere, "unix:///nonexistent/qbox-context.sock");
    let run = home
        .qbox()
        .env_remove("DOCKER_HOST")
        .env("DOCKER_CONFIG", &elsewhere)
        .args(["run", image, "--", "true"])
        .run();
    run.assert_code(125);
    run.assert_stderr_contains(
        "cannot talk to the docker engine at unix:///nonexistent/qbox-context.sock",
    );

    let real = home.path().join("real");
    docker_config_with_context(&real, "unix:///var/run/docker.sock");
    let run = qbox_engine(&home)
        .env("DOCKER_CONFIG", &real)
        .args(["run", "--label", &home.label(), image])
        .args(["--", "echo", "through-the-context"])
        .run();
    run.assert_code(0);
    assert_eq!(run.stdout, "through-the-context\n");
    // DOCKER_HOST still wins over the context.
    let run = qbox_engine(&home)
        .env("DOCKER_CONFIG", &elsewhere)
        .env("DOCKER_HOST", "unix:///var/run/docker.sock")
        .args(["run", "--label", &home.label(), image, "--", "true"])
        .run();
    run.assert_code(0);
    assert_eq!(leftovers(&home), (0, 0));
}
