//! Issue 28: the CLI's settings travel with the login (snapshots, `--watch`,
//! the agent's private copy, `qbox run`'s writable copy), reduced to an
//! allow-list and placed where each CLI reads them; a private copy a
//! SIGKILLed sidecar left is listed by `doctor` and swept by the next
//! sidecar; `qbox run IMAGE -- q chat` and `-- kiro-cli chat` find the login
//! with no extra flag. The fake CLI (tests/fixtures/fake-q) reads its
//! settings and its store only where the real CLIs do and needs its store
//! writable, as the real ones do.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use qbox::store::Flavor;

use crate::mcp_client::{StdioMcp, fake_q, process_alive};
use crate::util::{TestHome, file_bytes, valid_login, wait_until};

/// What a user's settings file holds: the keys qbox copies, and some it
/// must not (an MCP server's command line with a secret in it, an unknown
/// key, a copied key of the wrong type).
fn users_settings() -> Value {
    json!({
        "api.codewhisperer.service": {"endpoint": "https://q.example.test", "region": "eu-central-1", "extra": "dropped"},
        "chat.defaultModel": "claude-sonnet-4",
        "telemetry.enabled": false,
        "codeWhisperer.shareCodeWhispererContentWithAWS": false,
        "api.kiroauth.service": 7,
        "mcpServers": {"db": {"command": "psql", "env": {"PGPASSWORD": "secret-in-settings"}}},
        "chat.enableKnowledge": true
    })
}

fn allowed() -> Value {
    json!({
        "api.codewhisperer.service": {"endpoint": "https://q.example.test", "region": "eu-central-1"},
        "chat.defaultModel": "claude-sonnet-4",
        "telemetry.enabled": false,
        "codeWhisperer.shareCodeWhispererContentWithAWS": false
    })
}

/// Where the user's CLI of `flavor` reads its settings in `home`.
fn settings_path(home: &TestHome, flavor: Flavor) -> PathBuf {
    flavor.settings_path(home.path(), &home.data_dir())
}

fn write_settings(home: &TestHome, flavor: Flavor, text: &str) -> PathBuf {
    let path = settings_path(home, flavor);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, text).unwrap();
    path
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn issue_28_a_snapshot_carries_the_allow_listed_settings_where_each_cli_reads_them() {
    for (flavor, name) in [
        (Flavor::AmazonQ, "settings.json"),
        (Flavor::Kiro, "cli.json"),
    ] {
        let home = TestHome::new();
        home.login(flavor, &valid_login("set"));
        write_settings(&home, flavor, &users_settings().to_string());
        let dir = home.path().join("snap");
        home.qbox()
            .args(["snapshot", dir.to_str().unwrap()])
            .run()
            .assert_code(0);
        let carried = dir.join(name);
        assert_eq!(read_json(&carried), allowed(), "{flavor:?}");
        let text = std::fs::read_to_string(&carried).unwrap();
        assert!(!text.contains("secret-in-settings") && !text.contains("mcpServers"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&carried).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // Only the CLI's own name: no stale file of the other CLI.
        let other = if name == "cli.json" {
            "settings.json"
        } else {
            "cli.json"
        };
        assert!(!dir.join(other).exists());
        // doctor says which settings a copy carries.
        let doctor = home.qbox().args(["doctor"]).run();
        assert!(
            doctor.stdout.contains("settings copied")
                && doctor
                    .stdout
                    .contains("chat.defaultModel=\"claude-sonnet-4\"")
                && !doctor.stdout.contains("mcpServers"),
            "{}",
            doctor.stdout
        );
    }
}

/// Makes a bad settings file at the path it is given.
type MakeFile = Box<dyn Fn(&Path)>;

#[test]
fn issue_28_a_bad_settings_file_is_ignored_with_one_warning_and_the_login_still_works() {
    let cases: Vec<(&str, MakeFile)> = vec![
        (
            "not json",
            Box::new(|p: &Path| std::fs::write(p, "{not json").unwrap()),
        ),
        (
            "huge",
            Box::new(|p: &Path| {
                let big = format!("{{\"chat.defaultModel\":\"{}\"}}", "x".repeat(2 << 20));
                std::fs::write(p, big).unwrap();
            }),
        ),
        ("fifo", Box::new(|p: &Path| make_fifo(p))),
        (
            "symlink to a fifo",
            Box::new(|p: &Path| {
                let fifo = p.with_file_name("elsewhere.fifo");
                make_fifo(&fifo);
                std::os::unix::fs::symlink(&fifo, p).unwrap();
            }),
        ),
        (
            "a directory",
            Box::new(|p: &Path| std::fs::create_dir(p).unwrap()),
        ),
    ];
    for (what, make) in cases {
        let home = TestHome::new();
        home.login(Flavor::AmazonQ, &valid_login("bad"));
        let path = settings_path(&home, Flavor::AmazonQ);
        make(&path);
        let dir = home.path().join("snap");
        let run = home.qbox().args(["snapshot", dir.to_str().unwrap()]).run();
        run.assert_code(0);
        assert!(dir.join("data.sqlite3").is_file(), "{what}");
        assert!(
            !dir.join("settings.json").exists(),
            "{what}: a bad file was copied"
        );
        let warnings = run.stderr.matches("ignoring the CLI's settings").count();
        assert_eq!(warnings, 1, "{what}: {}", run.stderr);
    }
}

fn make_fifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn issue_28_snapshot_watch_follows_the_users_settings_and_warns_once_about_a_bad_file() {
    let home = TestHome::new();
    home.login(Flavor::AmazonQ, &valid_login("watch"));
    let settings = write_settings(&home, Flavor::AmazonQ, r#"{"chat.defaultModel":"m1"}"#);
    let dir = home.path().join("snap");
    let log = home.path().join("watch.log");
    let mut watch = home
        .qbox()
        .args([
            "snapshot",
            dir.to_str().unwrap(),
            "--watch",
            "--interval",
            "100ms",
        ])
        .command();
    watch.stderr(std::fs::File::create(&log).unwrap());
    let mut child = watch.spawn().unwrap();
    let carried = dir.join("settings.json");
    let model = || {
        std::fs::read(&carried)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
            .and_then(|v| v["chat.defaultModel"].as_str().map(str::to_owned))
    };
    wait_until(Duration::from_secs(20), "the first settings", || {
        model().as_deref() == Some("m1")
    });
    std::fs::write(&settings, r#"{"chat.defaultModel":"m2","mcpServers":{}}"#).unwrap();
    wait_until(Duration::from_secs(20), "the changed settings", || {
        model().as_deref() == Some("m2")
    });
    // A bad file: its copy goes, one warning however many passes see it.
    std::fs::write(&settings, "{oops").unwrap();
    wait_until(Duration::from_secs(20), "the copy to go", || {
        !carried.exists()
    });
    std::thread::sleep(Duration::from_millis(800));
    std::fs::write(&settings, r#"{"chat.defaultModel":"m3"}"#).unwrap();
    wait_until(Duration::from_secs(20), "the repaired settings", || {
        model().as_deref() == Some("m3")
    });
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        text.matches("ignoring the CLI's settings").count(),
        1,
        "{text}"
    );
}

/// A snapshot made by `qbox snapshot` (with the settings beside it), as a
/// sidecar's `QBOX_DB`.
fn snapshot_with_settings(home: &TestHome, flavor: Flavor) -> PathBuf {
    home.login(flavor, &valid_login("agent"));
    write_settings(home, flavor, &users_settings().to_string());
    let dir = home.path().join("snap");
    home.qbox()
        .args(["snapshot", dir.to_str().unwrap(), "--refreshable"])
        .run()
        .assert_code(0);
    dir.join("data.sqlite3")
}

/// The fake CLI under the name of `flavor`'s binary.
fn fake_cli_named(home: &TestHome, flavor: Flavor) -> String {
    let bin = home.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let path = bin.join(flavor.binary());
    std::fs::copy(fake_q(), &path).unwrap();
    path.display().to_string()
}

#[test]
fn issue_28_the_agents_private_copy_carries_the_settings_where_each_cli_reads_them() {
    for flavor in [Flavor::AmazonQ, Flavor::Kiro] {
        let home = TestHome::new();
        let snapshot = snapshot_with_settings(&home, flavor);
        let tmp = home.path().join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        let env = vec![
            ("ENABLE_ADDITIONAL_TOOLS", "q-developer-agent".to_owned()),
            ("QBOX_AGENT_CLI", fake_cli_named(&home, flavor)),
            ("QBOX_DB", snapshot.display().to_string()),
            ("TMPDIR", tmp.display().to_string()),
        ];
        let mut mcp = StdioMcp::start(home.path(), &env);
        for _ in 0..2 {
            let (text, is_error, _) = mcp.call("q-developer-agent", json!({"prompt": "settings"}));
            assert!(!is_error, "{flavor:?}: {text}");
            assert!(
                text.contains("x-amzn-codewhisperer-optout=true")
                    && text.contains("chat.defaultModel=\"claude-sonnet-4\"")
                    && text.contains("telemetry.enabled=false")
                    && !text.contains("mcpServers"),
                "{flavor:?}: {text}"
            );
        }
        // A service failure the CLI reports only on stderr is an error.
        let (text, is_error, _) = mcp.call(
            "q-developer-agent",
            json!({"prompt": "service-fail:throttled"}),
        );
        assert!(is_error, "{flavor:?}: {text}");
    }
}

#[test]
fn issue_28_a_private_copy_a_sigkilled_sidecar_left_is_listed_then_swept() {
    let home = TestHome::new();
    let snapshot = snapshot_with_settings(&home, Flavor::AmazonQ);
    let tmp = home.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let record = home.path().join("record");
    let env = vec![
        ("ENABLE_ADDITIONAL_TOOLS", "q-developer-agent".to_owned()),
        ("QBOX_AGENT_CLI", fake_q()),
        ("FAKE_Q_RECORD", record.display().to_string()),
        ("QBOX_AGENT_PASS_ENV", "FAKE_Q_RECORD".to_owned()),
        ("QBOX_DB", snapshot.display().to_string()),
        ("TMPDIR", tmp.display().to_string()),
    ];
    let copies = || -> Vec<PathBuf> {
        std::fs::read_dir(&tmp)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("qbox-agent-"))
            .map(|e| e.path())
            .collect()
    };
    let mut first = StdioMcp::start(home.path(), &env);
    let left = copies();
    assert_eq!(left.len(), 1, "{left:?}");
    // Mid-call: the CLI runs when the sidecar is killed.
    first.send_request(
        "tools/call",
        json!({"name": "q-developer-agent", "arguments": {"prompt": "sleep:30"}}),
    );
    wait_until(Duration::from_secs(20), "the CLI to start", || {
        record.join("pid").is_file()
    });
    let sidecar = first.pid();
    let cli = crate::sidecar::recorded_pid(&record, "pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sidecar as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_until(Duration::from_secs(10), "the sidecar to die", || {
        !process_alive(sidecar)
    });
    drop(first);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(cli as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    assert_eq!(copies(), left, "SIGKILL cannot clean up");
    // doctor lists it ...
    let doctor = home
        .qbox()
        .env("TMPDIR", &tmp)
        .args(["doctor", "--json"])
        .run();
    let report: Value = serde_json::from_str(&doctor.stdout).unwrap();
    assert_eq!(
        report["agent_leftovers"],
        json!([left[0].display().to_string()]),
        "{}",
        doctor.stdout
    );
    // ... and the next sidecar of the user removes it, keeping its own.
    let second = StdioMcp::start(home.path(), &env);
    let now = copies();
    assert_eq!(now.len(), 1, "{now:?}");
    assert_ne!(now[0], left[0]);
    assert!(!left[0].exists());
    drop(second);
}

#[test]
fn issue_28_qbox_run_gives_the_cli_a_writable_copy_where_it_looks_with_its_settings() {
    let Some(image) = crate::run_mcp::dev_image() else {
        return;
    };
    let _turn = crate::util::engine_turn();
    for (flavor, binary) in [(Flavor::AmazonQ, "q"), (Flavor::Kiro, "kiro-cli")] {
        let home = TestHome::new();
        let store = home.login(flavor, &valid_login("runcli"));
        write_settings(&home, flavor, &users_settings().to_string());
        let before = file_bytes(&store);
        // As docs/run.md shows it: the CLI, no extra flag.
        let run = crate::container::qbox_run(
            &home,
            &[image, "--", binary, "chat", "--no-interactive", "settings"],
        )
        .run();
        run.assert_code(0);
        assert!(
            run.stdout.contains("x-amzn-codewhisperer-optout=true")
                && run.stdout.contains("chat.defaultModel=\"claude-sonnet-4\"")
                && !run.stdout.contains("mcpServers"),
            "{flavor:?}\n{}\n{}",
            run.stdout,
            run.stderr
        );
        // The snapshot for consumers that read it stays, read-only.
        let run = crate::container::qbox_run(
            &home,
            &[
                image,
                "--",
                "sh",
                "-c",
                "test -f \"$QBOX_DB\" && echo snapshot-there; touch /run/qbox/auth/x 2>/dev/null || echo read-only",
            ],
        )
        .run();
        run.assert_code(0);
        assert!(
            run.stdout.contains("snapshot-there") && run.stdout.contains("read-only"),
            "{}",
            run.stdout
        );
        assert_eq!(file_bytes(&store), before, "the host store was written");
    }
    // A bad settings file: the CLI still finds its login, one warning.
    let home = TestHome::new();
    home.login(Flavor::AmazonQ, &valid_login("runbad"));
    write_settings(&home, Flavor::AmazonQ, "{not json");
    let run = crate::container::qbox_run(
        &home,
        &[
            image,
            "--",
            "q",
            "chat",
            "--no-interactive",
            "login:still-works",
        ],
    )
    .run();
    run.assert_code(0);
    assert!(run.stdout.contains("still-works"), "{}", run.stderr);
    assert_eq!(
        run.stderr.matches("ignoring the CLI's settings").count(),
        1,
        "{}",
        run.stderr
    );
}

/// `qbox run` with a Kiro API key and no store login gives the CLI what a
/// login's run gives it, minus the store: a writable data directory and
/// home with its settings, so that `kiro-cli chat` works there too. The key
/// stays a read-only file (`QBOX_API_KEY_FILE`): the command hands it to
/// the CLI, and neither `docker inspect` nor the image holds it.
#[test]
fn qbox_run_with_only_a_kiro_api_key_gives_the_cli_a_writable_home_with_its_settings() {
    let Some(image) = crate::run_mcp::dev_image() else {
        return;
    };
    let _turn = crate::util::engine_turn();
    let key = "ksk_standinKeyForTheRunCopy42";
    let home = TestHome::new();
    write_settings(&home, Flavor::Kiro, &users_settings().to_string());
    let name = format!("qbox-test-key-copy-{}", std::process::id());
    // As docs/run.md shows it: the key read from its file for the CLI.
    let script = "KIRO_API_KEY=$(cat \"$QBOX_API_KEY_FILE\") kiro-cli chat --no-interactive settings \
        && KIRO_API_KEY=$(cat \"$QBOX_API_KEY_FILE\") kiro-cli chat --no-interactive login:second-call \
        && ls /run/qbox/data/kiro-cli && echo \"home=$HOME data=$XDG_DATA_HOME\"; \
        echo \"auth:$(ls -A /run/qbox/auth)\"; touch /run/qbox/auth/x 2>/dev/null && echo AUTH-WRITABLE; true";
    let run = crate::container::qbox_run(
        &home,
        &["--keep", "--name", &name, image, "--", "sh", "-c", script],
    )
    .env("KIRO_API_KEY", key)
    .run();
    let inspect = std::process::Command::new("docker")
        .args(["inspect", &name])
        .output()
        .unwrap();
    let _ = std::process::Command::new("docker")
        .args(["rm", "-f", &name])
        .output();
    run.assert_code(0);
    assert!(
        run.stdout.contains("x-amzn-codewhisperer-optout=true")
            && run.stdout.contains("chat.defaultModel=\"claude-sonnet-4\"")
            && !run.stdout.contains("mcpServers"),
        "{}\n{}",
        run.stdout,
        run.stderr
    );
    // The CLI made its store in the copy and uses the key again after.
    assert!(run.stdout.contains("second-call"), "{}", run.stdout);
    assert!(run.stdout.contains("data.sqlite3"), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("home=/run/qbox/home data=/run/qbox/data"),
        "{}",
        run.stdout
    );
    // The read-only mount holds the key file alone.
    assert!(run.stdout.contains("auth:kiro-api-key\n"), "{}", run.stdout);
    assert!(!run.stdout.contains("AUTH-WRITABLE"), "{}", run.stdout);
    assert!(!run.stdout.contains(key) && !run.stderr.contains(key));
    let inspect = String::from_utf8_lossy(&inspect.stdout);
    assert!(
        inspect.contains("QBOX_API_KEY_FILE=/run/qbox/auth/kiro-api-key")
            && inspect.contains("XDG_DATA_HOME=/run/qbox/data"),
        "{inspect}"
    );
    assert!(!inspect.contains(key), "docker inspect shows the key");
}
