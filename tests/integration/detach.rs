//! `qbox run -d` against the real engine: the container runs after qbox
//! has exited, its keeper (a process of its own) refreshes the snapshot,
//! `qbox ps` shows the keeper, a keeper killed with SIGKILL shows as dead
//! and `qbox keep` starts a new one, and the container's end (by `qbox
//! stop` or `docker rm -f`) ends its keeper and leaves nothing behind.
//! Each test has its own runtime and state directories (XDG_RUNTIME_DIR,
//! XDG_STATE_HOME) in its home, so keepers' files land there.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use qbox::standin::oidc::{OidcBehavior, StandinOidc};
use qbox::store::Flavor;
use serde_json::Value;

use crate::container::engine_image;
use crate::util::{TestHome, valid_login, wait_until, wait_until_async};

/// A home with private runtime and state directories, and the detached
/// containers a test started, removed (with their keepers) however the
/// test ends.
struct Detached {
    home: TestHome,
    names: Vec<String>,
    env: Vec<(String, String)>,
}

impl Detached {
    fn new() -> Self {
        let home = TestHome::new();
        let xdg = home.path().join("xdg");
        std::fs::create_dir(&xdg).unwrap();
        std::fs::set_permissions(&xdg, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        Self {
            home,
            names: Vec::new(),
            env: Vec::new(),
        }
    }

    fn name(&mut self, tag: &str) -> String {
        let name = format!("qbox-test-detach-{tag}-{}", std::process::id());
        self.names.push(name.clone());
        name
    }

    fn runtime_dir(&self) -> PathBuf {
        self.home.path().join("xdg/qbox")
    }

    fn keeper_logs(&self) -> PathBuf {
        self.home.path().join("state/qbox/keepers")
    }

    fn qbox(&self) -> crate::util::Qbox {
        let mut qbox = self
            .home
            .qbox()
            .env_remove("DOCKER_HOST")
            .env("XDG_RUNTIME_DIR", self.home.path().join("xdg"))
            .env("XDG_STATE_HOME", self.home.path().join("state"));
        for (key, value) in &self.env {
            qbox = qbox.env(key, value);
        }
        qbox
    }

    fn ps(&self) -> Vec<Value> {
        let run = self.qbox().args(["ps", "-a", "--json"]).run();
        run.assert_code(0);
        serde_json::from_str(&run.stdout).unwrap()
    }

    fn row(&self, name: &str) -> Option<Value> {
        self.ps().into_iter().find(|row| row["name"] == name)
    }

    /// The detached containers' directories left in the runtime directory.
    fn detached_dirs(&self) -> Vec<String> {
        std::fs::read_dir(self.runtime_dir()).map_or_else(
            |_| Vec::new(),
            |entries| {
                entries
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .filter(|name| name.starts_with("detached-"))
                    .collect()
            },
        )
    }

    /// Every keeper pid recorded in this home's runtime directory.
    fn recorded_keepers(&self) -> Vec<u32> {
        self.detached_dirs()
            .iter()
            .filter_map(|dir| {
                let text =
                    std::fs::read_to_string(self.runtime_dir().join(dir).join("keeper.json"))
                        .ok()?;
                let record: Value = serde_json::from_str(&text).ok()?;
                u32::try_from(record["pid"].as_u64()?).ok()
            })
            .collect()
    }
}

impl Drop for Detached {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = Command::new("docker").args(["rm", "-f", name]).output();
        }
        for pid in self.recorded_keepers() {
            if pid != std::process::id() && alive(pid) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

/// Whether process `pid` runs (a zombie, which only waits to be reaped by
/// whoever adopted it, does not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_owned));
        !matches!(state.as_deref(), Some("Z" | "X"))
    })
}

/// Process `pid`'s arguments.
fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

fn container_state(name: &str) -> Option<String> {
    let out = Command::new("docker")
        .args(["inspect", "--format", "{{.State.Status}}", name])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn keeper_pid(row: &Value) -> Option<u32> {
    (row["keeper"]["state"] == "running")
        .then(|| u32::try_from(row["keeper"]["pid"].as_u64()?).ok())
        .flatten()
}

fn expiry(row: &Value) -> Option<String> {
    row["token_expires_at"].as_str().map(str::to_owned)
}

fn snapshot_holds(name: &str, needle: &str) -> bool {
    Command::new("docker")
        .args([
            "exec",
            name,
            "sh",
            "-c",
            &format!("grep -q {needle} \"$QBOX_DB\""),
        ])
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// The guard only keeps other engine tests out while this one runs; nothing
// else in this test takes it, so holding it across awaits cannot deadlock.
#[allow(clippy::await_holding_lock)]
async fn issue_14_a_detached_container_is_kept_fresh_shown_restored_and_stopped_clean() {
    let Some(image) = engine_image() else { return };
    let _turn = crate::util::engine_turn();
    let oidc = StandinOidc::start(
        "fixture-client-id",
        "fixture-client-secret",
        "aor-refresh-detach",
    )
    .await
    .unwrap();
    // Short-lived tokens: the keeper refreshes each at half its life, and
    // no sooner than 30 s after the one before.
    oidc.set_behavior(OidcBehavior::Issue {
        expires_in: 40,
        rotate: true,
    });
    let mut test = Detached::new();
    test.env.push(("QBOX_OIDC_ENDPOINT".into(), oidc.url()));
    // The keepers inherit it: their logs are written at trace level, and
    // must hold no token all the same.
    test.env.push(("RUST_LOG".into(), "trace".into()));
    let mut login = valid_login("detach");
    login.refresh_token = Some("aor-refresh-detach".into());
    // Enters the 5-minute refresh window a few seconds from now: the first
    // refresh happens while the container runs detached.
    login.expires_at =
        time::OffsetDateTime::now_utc() + time::Duration::minutes(5) + time::Duration::seconds(4);
    test.home.login(Flavor::AmazonQ, &login);
    let name = test.name("fresh");

    let run = test
        .qbox()
        .args(["run", "-d", "--name", &name, image, "--", "sleep", "600"])
        .run_async()
        .await;
    // qbox has exited; the container runs on.
    run.assert_code(0);
    let id = run.stdout.trim().to_owned();
    assert!(
        id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "the container's id on stdout: {:?}",
        run.stdout
    );
    assert_eq!(container_state(&name).as_deref(), Some("running"));
    assert!(
        snapshot_holds(&name, "aoa-access-detach"),
        "the first snapshot is mounted"
    );

    let row = test
        .row(&name)
        .expect("qbox ps lists the detached container");
    assert_eq!(row["id"], id);
    let first_keeper = keeper_pid(&row).unwrap_or_else(|| panic!("keeper running: {row}"));
    let args = cmdline(first_keeper);
    assert!(
        args.windows(3)
            .any(|w| w == ["keep", "--foreground", id.as_str()]),
        "the keeper is recognisable: {args:?}"
    );
    assert!(
        row["keeper"]["log"]
            .as_str()
            .is_some_and(|log| Path::new(log).starts_with(test.keeper_logs())),
        "{row}"
    );
    let first_expiry = expiry(&row).expect("the snapshot's expiry");

    // Refreshed while detached: the snapshot's expiry changes, and the
    // container sees the stand-in's token.
    let refreshed = {
        let test_home = test.home.path().to_owned();
        let env = test.env.clone();
        let name = name.clone();
        let first = first_expiry.clone();
        wait_until_async(
            Duration::from_secs(60),
            "the detached snapshot is refreshed",
            move || expiry_of(&test_home, &env, &name).filter(|e| *e != first),
        )
        .await
    };
    assert_ne!(refreshed, first_expiry);
    assert!(
        snapshot_holds(&name, "standin-access-1"),
        "the container sees the new token"
    );
    assert_eq!(oidc.requests().len(), 1);

    // The keeper killed with SIGKILL: shown as dead, the container runs on.
    Command::new("kill")
        .args(["-KILL", &first_keeper.to_string()])
        .status()
        .unwrap();
    wait_until(Duration::from_secs(10), "the killed keeper is gone", || {
        !alive(first_keeper)
    });
    let row = test.row(&name).unwrap();
    assert_eq!(row["keeper"]["state"], "dead", "{row}");
    assert_eq!(row["state"], "running");
    let table = test.qbox().args(["ps"]).run();
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.contains(&name) && l.trim_end().ends_with("dead")),
        "{}",
        table.stdout
    );

    // `qbox keep` starts a new keeper; a second one is refused.
    let keep = test.qbox().args(["keep", &name]).run_async().await;
    keep.assert_code(0);
    assert_eq!(keep.stdout.trim(), name);
    let row = test.row(&name).unwrap();
    let second_keeper = keeper_pid(&row).unwrap_or_else(|| panic!("keeper restored: {row}"));
    assert_ne!(second_keeper, first_keeper);
    let again = test
        .qbox()
        .env_remove("RUST_LOG")
        .args(["keep", &name])
        .run_async()
        .await;
    again
        .assert_code(1)
        .assert_one_line_error()
        .assert_stderr_contains(&format!(
            "a keeper already runs for `{name}` (pid {second_keeper})"
        ));
    // ...and refreshing goes on: the next short-lived token replaces the last.
    let restored = {
        let test_home = test.home.path().to_owned();
        let env = test.env.clone();
        let name = name.clone();
        let last = refreshed.clone();
        wait_until_async(
            Duration::from_secs(90),
            "the new keeper refreshes",
            move || expiry_of(&test_home, &env, &name).filter(|e| *e != last),
        )
        .await
    };
    assert_ne!(restored, refreshed);
    assert!(snapshot_holds(&name, "standin-access-2"));
    // The keeper writes access-only snapshots: nothing inside mints tokens.
    assert!(!snapshot_holds(&name, "standin-refresh-"));
    assert!(!snapshot_holds(&name, "fixture-client-secret"));
    let sent: Vec<String> = oidc
        .requests()
        .iter()
        .map(|r| r.body["refreshToken"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        sent,
        ["aor-refresh-detach", "standin-refresh-1"],
        "no refresh token spent twice"
    );

    // `qbox stop` ends the container, and with it the keeper; nothing stays.
    let stop = test
        .qbox()
        .args(["stop", "-t", "0", &name])
        .run_async()
        .await;
    stop.assert_code(0);
    assert_eq!(stop.stdout.trim(), name);
    assert!(
        !alive(second_keeper),
        "qbox stop waited for the keeper to end"
    );
    assert_eq!(
        test.detached_dirs(),
        Vec::<String>::new(),
        "snapshot directory left"
    );
    wait_until(Duration::from_secs(20), "the container is removed", || {
        container_state(&name).is_none()
    });
    let log = std::fs::read_to_string(test.keeper_logs().join(format!("{id}.log"))).unwrap();
    assert!(log.contains("login refreshed"), "{log}");
    assert!(log.contains("removed"), "{log}");
    for token in [
        "aoa-access-detach",
        "aor-refresh-detach",
        "standin-access-",
        "standin-refresh-",
        "fixture-client-secret",
    ] {
        assert!(!log.contains(token), "{token} in the keeper's log:\n{log}");
    }
}

/// The snapshot expiry `qbox ps --json` shows for container `name`, run
/// with the test home's environment.
fn expiry_of(home: &Path, env: &[(String, String)], name: &str) -> Option<String> {
    let mut qbox = crate::util::Qbox::new(home)
        .env_remove("DOCKER_HOST")
        .env("XDG_RUNTIME_DIR", home.join("xdg"))
        .env("XDG_STATE_HOME", home.join("state"));
    for (key, value) in env {
        qbox = qbox.env(key, value);
    }
    let run = qbox.args(["ps", "-a", "--json"]).run();
    let rows: Vec<Value> = serde_json::from_str(&run.stdout).ok()?;
    rows.iter().find(|row| row["name"] == name).and_then(expiry)
}

#[test]
fn issue_14_docker_rm_f_ends_the_keeper_within_seconds_and_usage_is_checked() {
    let Some(image) = engine_image() else { return };
    let _turn = crate::util::engine_turn();
    let mut test = Detached::new();
    test.home.login(Flavor::AmazonQ, &valid_login("detach-rm"));

    // -d with --mcp is a usage error: --mcp serves on stdio.
    let mcp = test.qbox().args(["run", "-d", "--mcp", image]).run();
    mcp.assert_code(2);
    assert!(
        mcp.stderr
            .contains("'--detach' cannot be used with '--mcp'"),
        "{}",
        mcp.stderr
    );

    // --refreshable: the detached container gets the full copy, and its
    // keeper (which reads the scope from the container's labels) keeps it so.
    let name = test.name("rm");
    let run = test
        .qbox()
        .args([
            "run",
            "-d",
            "--refreshable",
            "--name",
            &name,
            image,
            "--",
            "sleep",
            "600",
        ])
        .run();
    run.assert_code(0);
    let row = test.row(&name).unwrap();
    let keeper = keeper_pid(&row).unwrap_or_else(|| panic!("{row}"));
    assert!(
        snapshot_holds(&name, "aor-refresh-detach-rm"),
        "a --refreshable snapshot carries the refresh token"
    );
    let label = Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{index .Config.Labels \"qbox.keeper.scope\"}}",
            &name,
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&label.stdout).trim(), "refreshable");
    assert_eq!(test.detached_dirs().len(), 1);
    let removed = Command::new("docker")
        .args(["rm", "-f", &name])
        .output()
        .unwrap();
    assert!(removed.status.success());
    wait_until(
        Duration::from_secs(10),
        "the keeper ends after docker rm -f",
        || !alive(keeper),
    );
    wait_until(
        Duration::from_secs(5),
        "its snapshot directory is removed",
        || test.detached_dirs().is_empty(),
    );

    // Without a snapshot there is no keeper: shown as none, and `qbox
    // keep` says why it will not start one.
    let bare = test.name("bare");
    test.qbox()
        .args([
            "run", "-d", "--auth", "none", "--name", &bare, image, "--", "sleep", "600",
        ])
        .run()
        .assert_code(0);
    let row = test.row(&bare).unwrap();
    assert_eq!(row["keeper"]["state"], "none", "{row}");
    test.qbox()
        .args(["keep", &bare])
        .run()
        .assert_code(1)
        .assert_one_line_error()
        .assert_stderr_contains("has no login snapshot to keep fresh");
    test.qbox()
        .args(["run", "--attach-keeper", "qbox-test-no-such-container"])
        .run()
        .assert_code(1)
        .assert_stderr_contains("no container that qbox run started is named");
    test.qbox()
        .args(["stop", "-t", "0", &bare])
        .run()
        .assert_code(0);
    wait_until(
        Duration::from_secs(20),
        "the bare container is removed",
        || container_state(&bare).is_none(),
    );
    assert_eq!(test.detached_dirs(), Vec::<String>::new());
}

/// The host port `docker port` says container `name`'s `port` is published on.
fn published_port(name: &str, port: &str) -> u16 {
    let out = Command::new("docker")
        .args(["port", name, port])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|line| line.strip_prefix("127.0.0.1:")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no 127.0.0.1 port for {name} {port}: {text}"))
}

#[test]
fn issue_14_a_detached_sidecar_answers_mcp_through_a_published_port() {
    let Some(python) = crate::util::python_mcp() else {
        return;
    };
    let Some(image) = crate::sidecar_image::sidecar_image() else {
        return;
    };
    let _turn = crate::util::engine_turn();
    let mut test = Detached::new();
    let login = valid_login("publish");
    test.home.login(Flavor::AmazonQ, &login);
    let (_runtime, standin) = crate::sidecar_image::standin_for_containers(
        &login.access_token,
        &["through ", "the published ", "port"],
    );
    // The bearer token as a file, mounted read-only (the container runs as
    // this user, so 0600 is enough).
    let secrets = test.home.path().join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    let token = "detach-publish-bearer-token-0123456789abcdef";
    std::fs::write(secrets.join("mcp-token"), token).unwrap();
    std::fs::set_permissions(
        secrets.join("mcp-token"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let name = test.name("publish");
    let volume = format!("{}:/run/secrets:ro", secrets.display());
    let endpoint = format!("QBOX_Q_ENDPOINT={}", standin.url());
    let run = test
        .qbox()
        .args(["run", "-d", "--name", &name, "-p", "127.0.0.1:0:8080"])
        .args(["-v", &volume, "-e", &endpoint, image, "--"])
        .args([
            "serve",
            "--http",
            "0.0.0.0:8080",
            "--token-file",
            "/run/secrets/mcp-token",
        ])
        .run();
    run.assert_code(0);
    wait_until(Duration::from_secs(30), "the sidecar serves", || {
        let logs = Command::new("docker")
            .args(["logs", &name])
            .output()
            .unwrap();
        String::from_utf8_lossy(&logs.stderr).contains("serving MCP at")
    });
    let port = published_port(&name, "8080/tcp");
    let url = format!("http://127.0.0.1:{port}/mcp");

    let call = Command::new(&python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/http_call.py"))
        .args([&url, token, "hello through the port"])
        .output()
        .unwrap();
    assert!(
        call.status.success(),
        "{}",
        String::from_utf8_lossy(&call.stderr)
    );
    let report: Value = serde_json::from_slice(&call.stdout).unwrap();
    assert!(
        report["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "q-chat"),
        "{report}"
    );
    assert_eq!(report["chat"]["is_error"], false, "{report}");
    assert_eq!(
        report["chat"]["text"], "through the published port",
        "{report}"
    );
    let requests = standin.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].body["conversationState"]["currentMessage"]["userInputMessage"]["content"],
        "hello through the port"
    );

    // Without the token the published port answers 401.
    let anonymous = Command::new(&python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/http_call.py"))
        .args([&url, "not-the-token", "x"])
        .output()
        .unwrap();
    assert!(!anonymous.status.success());
    assert_eq!(standin.requests().len(), 1);

    test.qbox()
        .args(["stop", "-t", "2", &name])
        .run()
        .assert_code(0);
    wait_until(Duration::from_secs(20), "the sidecar is removed", || {
        container_state(&name).is_none()
    });
    assert_eq!(test.detached_dirs(), Vec::<String>::new());
}

/// A process that has ended, as `PID-START`: a creator or keeper that died.
fn dead_process() -> (u32, String) {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    (pid, format!("{pid}-1"))
}

/// A detached container's directory under `runtime` with the key `key`, its
/// `auth/` and a keeper record naming `keeper_pid` (started at tick 1).
fn detached_dir(runtime: &Path, key: &str, keeper_pid: u32) -> PathBuf {
    use std::os::unix::fs::DirBuilderExt;
    let dir = runtime.join(format!("detached-{key}"));
    let mut builder = std::fs::DirBuilder::new();
    builder.mode(0o700).recursive(true);
    builder.create(dir.join("auth")).unwrap();
    std::fs::write(
        dir.join("keeper.json"),
        format!(r#"{{"pid":{keeper_pid},"start":1,"container":""}}"#),
    )
    .unwrap();
    dir
}

#[test]
fn issue_30_a_container_its_dead_creator_left_created_is_removed_then_its_directory() {
    let Some(image) = engine_image() else { return };
    let _turn = crate::util::engine_turn();
    let mut test = Detached::new();
    let runtime = test.runtime_dir();
    std::fs::create_dir_all(&runtime).unwrap();
    std::fs::set_permissions(
        &runtime,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let (dead_pid, dead) = dead_process();
    // The label binds the creator to this user and this boot: a dead pid
    // of another machine (a shared engine) or another user, or a label an
    // image brought, is not this sweep's to judge.
    let uid = rustix::process::geteuid().as_raw();
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let boot = boot.trim();
    let dead_here = format!("{dead}:{uid}:{boot}");
    let dead_elsewhere = format!("{dead}:{uid}:00000000-0000-4000-8000-000000000000");
    let dead_other_user = format!("{dead}:{}:{boot}", uid + 1);
    let alive = format!("{}-0:{uid}:{boot}", std::process::id());
    // A `qbox run -d` killed between the engine's create and start: its
    // container stays `Created` (AutoRemove acts on exited ones only) and
    // its directory is kept for it.
    let key = "0123456789abcdef";
    let dir = detached_dir(&runtime, key, dead_pid);
    let abandoned = test.name("abandoned");
    let in_progress = test.name("in-progress");
    let foreign = test.name("foreign");
    let elsewhere = test.name("elsewhere");
    let other_user = test.name("other-user");
    let pid_only = test.name("pid-only");
    for (name, labels) in [
        (
            &abandoned,
            vec![
                "qbox.managed=true".to_owned(),
                format!("qbox.creator={dead_here}"),
                format!("qbox.detached={key}"),
            ],
        ),
        (
            &elsewhere,
            vec![
                "qbox.managed=true".to_owned(),
                format!("qbox.creator={dead_elsewhere}"),
            ],
        ),
        (
            &other_user,
            vec![
                "qbox.managed=true".to_owned(),
                format!("qbox.creator={dead_other_user}"),
            ],
        ),
        // The label's old form, a bare pid: judged by nothing.
        (
            &pid_only,
            vec![
                "qbox.managed=true".to_owned(),
                format!("qbox.creator={dead}"),
            ],
        ),
        // Its creator still runs: between create and start right now.
        (
            &in_progress,
            vec![
                "qbox.managed=true".to_owned(),
                format!("qbox.creator={alive}"),
            ],
        ),
        // Not created by qbox: never touched.
        (&foreign, vec!["qbox.managed=true".to_owned()]),
    ] {
        let mut create = Command::new("docker");
        create.args(["create", "--name", name]);
        for label in labels {
            create.args(["--label", &label]);
        }
        let out = create.args([image, "true"]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(container_state(name).as_deref(), Some("created"));
    }
    assert!(dir.exists());
    // The next `qbox run` sweeps.
    let run = test
        .qbox()
        .args(["run", "--auth", "none", image, "--", "true"])
        .run();
    run.assert_code(0);
    assert_eq!(container_state(&abandoned), None, "{}", run.stderr);
    assert!(
        !dir.exists(),
        "the directory of the removed container stays"
    );
    assert_eq!(container_state(&in_progress).as_deref(), Some("created"));
    assert_eq!(container_state(&foreign).as_deref(), Some("created"));
    for kept in [&elsewhere, &other_user, &pid_only] {
        assert_eq!(
            container_state(kept).as_deref(),
            Some("created"),
            "{kept} was removed"
        );
    }
}

#[test]
fn issue_30_doctor_lists_the_directories_of_dead_detached_keepers() {
    let test = Detached::new();
    let runtime = test.runtime_dir();
    std::fs::create_dir_all(&runtime).unwrap();
    std::fs::set_permissions(
        &runtime,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let (dead_pid, _) = dead_process();
    let dead = detached_dir(&runtime, "fedcba9876543210", dead_pid);
    let alive = detached_dir(&runtime, "00112233445566ff", std::process::id());
    // Recorded with start 0 (unknown): a live pid counts as running.
    std::fs::write(
        alive.join("keeper.json"),
        format!(
            r#"{{"pid":{},"start":0,"container":""}}"#,
            std::process::id()
        ),
    )
    .unwrap();
    let run = test
        .qbox()
        .env("DOCKER_HOST", "unix:///nonexistent/qbox-test.sock")
        .args(["doctor", "--json"])
        .run();
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    let orphaned: Vec<&str> = report["runtime_dir"]["orphaned"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(orphaned, [dead.to_str().unwrap()], "{report}");
    assert_eq!(report["runtime_dir"]["in_use"], 1, "{report}");
}

#[test]
fn issue_30_a_keeper_that_loses_its_engine_ends_says_so_and_ps_shows_why() {
    let Some(image) = engine_image() else { return };
    let _turn = crate::util::engine_turn();
    let mut test = Detached::new();
    test.home
        .login(Flavor::AmazonQ, &valid_login("detach-lost"));
    let socket = test.home.path().join("engine.sock");
    let mut proxy = crate::container::EngineProxy::start(&socket);
    // The keeper inherits both: it talks to the engine through the proxy,
    // and gives up 3 s after the engine stops answering.
    test.env
        .push(("DOCKER_HOST".into(), format!("unix://{}", socket.display())));
    test.env
        .push(("QBOX_KEEPER_ENGINE_TIMEOUT".into(), "3".into()));
    let name = test.name("lost");
    let run = test
        .qbox()
        .args(["run", "-d", "--name", &name, image, "--", "sleep", "600"])
        .run();
    run.assert_code(0);
    let id = run.stdout.trim().to_owned();
    let log = test.keeper_logs().join(format!("{id}.log"));
    wait_until(
        Duration::from_secs(30),
        "the keeper writes the snapshot",
        || {
            std::fs::read_to_string(&log)
                .is_ok_and(|text| text.contains("snapshot written"))
                .then_some(())
        },
    );
    proxy.cut();
    let text = wait_until(Duration::from_secs(60), "the keeper gives up", || {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|text| text.contains("did not answer"))
    });
    assert!(
        text.contains("error: the docker engine did not answer for"),
        "{text}"
    );
    // ps, on the real engine: the container runs, its keeper is dead and
    // says why; the token it kept is gone.
    let ps = test
        .qbox()
        .env("DOCKER_HOST", "unix:///var/run/docker.sock")
        .args(["ps", "--json"])
        .run();
    let rows: Vec<Value> = serde_json::from_str(&ps.stdout).unwrap();
    let row = rows
        .iter()
        .find(|row| row["name"] == name.as_str())
        .unwrap_or_else(|| panic!("{name} in {rows:?}"));
    assert_eq!(row["keeper"]["state"], "dead", "{row}");
    assert!(
        row["keeper"]["ended"]
            .as_str()
            .is_some_and(|why| why.contains("the docker engine did not answer")),
        "{row}"
    );
    assert!(!snapshot_holds(&name, "aoa-access-detach-lost"));
    let table = test
        .qbox()
        .env("DOCKER_HOST", "unix:///var/run/docker.sock")
        .args(["ps"])
        .run();
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.contains(&name) && l.contains("dead: the docker engine did not answer")),
        "{}",
        table.stdout
    );
}
