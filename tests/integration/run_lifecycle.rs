//! `qbox run` under the signals a CI runner sends, and when qbox itself is
//! killed: the container is stopped (and killed after `--stop-timeout`), the
//! engine removes it, and the snapshot directories of killed runs are swept.
//! Real engine, real processes; each test has its own runtime directory
//! (`XDG_RUNTIME_DIR`) and names its containers, so that tests running at
//! the same time cannot see (or sweep) each other's.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use qbox::store::Flavor;

use crate::container::{engine_image, qbox_run, serial, spawn_until_ready, wait_within};
use crate::util::{TestHome, running_as_root, valid_login, wait_until};

/// Rounds per test (the issue's count); they run at the same time, so a
/// test costs about one round.
const ROUNDS: usize = 20;
/// `--stop-timeout` in these tests.
const STOP_TIMEOUT: u64 = 2;

/// A home with a login and a runtime directory of its own.
struct Isolated {
    home: TestHome,
    tag: String,
}

impl Isolated {
    fn new(tag: &str) -> Self {
        let home = TestHome::new();
        home.login(Flavor::AmazonQ, &valid_login(tag));
        std::fs::create_dir(home.path().join("xdg")).unwrap();
        Self {
            home,
            tag: format!("qbox-lifecycle-{tag}-{}", std::process::id()),
        }
    }

    fn xdg(&self) -> PathBuf {
        self.home.path().join("xdg")
    }

    /// `$XDG_RUNTIME_DIR/qbox`.
    fn runtime_dir(&self) -> PathBuf {
        self.xdg().join("qbox")
    }

    fn qbox_run(&self, args: &[&str]) -> crate::util::Qbox {
        qbox_run(&self.home, args).env("XDG_RUNTIME_DIR", self.xdg())
    }

    /// `qbox run --name <tag>-<round> ...`.
    fn named_run(&self, round: usize, args: &[&str]) -> crate::util::Qbox {
        let name = format!("{}-{round}", self.tag);
        let mut all = vec!["--name", &name];
        all.extend_from_slice(args);
        self.qbox_run(&all)
    }

    /// Names in the runtime directory.
    fn runtime_entries(&self) -> Vec<String> {
        std::fs::read_dir(self.runtime_dir()).map_or_else(
            |_| Vec::new(),
            |entries| {
                entries
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            },
        )
    }

    /// This test's containers that qbox created (by label), in any state.
    fn containers(&self) -> Vec<String> {
        let output = Command::new("docker")
            .args(["ps", "-a", "--format", "{{.Names}}"])
            .args(["--filter", "label=qbox.managed=true"])
            .args(["--filter", &format!("name={}", self.tag)])
            .output()
            .unwrap();
        assert!(output.status.success());
        String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// `qbox doctor --json`'s runtime directory report.
    fn doctor_runtime_dir(&self) -> serde_json::Value {
        let run = self
            .home
            .qbox()
            .env("XDG_RUNTIME_DIR", self.xdg())
            .args(["doctor", "--json"])
            .run();
        let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        report["runtime_dir"].clone()
    }
}

fn signal(child: &Child, name: &str) {
    let sent = Command::new("kill")
        .args([name, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

fn rest_of(stream: Option<impl Read>) -> String {
    let mut text = String::new();
    if let Some(mut stream) = stream {
        stream.read_to_string(&mut text).unwrap();
    }
    text
}

/// Runs `round` for 0..ROUNDS on threads of their own and returns their
/// results in order.
fn all_rounds<T: Send>(round: impl Fn(usize) -> T + Sync) -> Vec<T> {
    std::thread::scope(|scope| {
        let round = &round;
        let handles: Vec<_> = (0..ROUNDS).map(|i| scope.spawn(move || round(i))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// The end of every test: no container of this test, no snapshot directory.
#[track_caller]
fn assert_nothing_left(test: &Isolated) {
    assert_eq!(test.containers(), Vec::<String>::new(), "containers left");
    assert_eq!(
        test.runtime_entries(),
        Vec::<String>::new(),
        "snapshot directories left in {}",
        test.runtime_dir().display()
    );
}

#[test]
fn issue_10_sigterm_stops_a_pid_1_that_ignores_it_within_the_stop_timeout() {
    let Some(image) = engine_image() else { return };
    let _turn = serial();
    let test = Isolated::new("term");
    let timeout = STOP_TIMEOUT.to_string();
    let results = all_rounds(|round| {
        // `sleep` as PID 1 has no handler: the kernel drops SIGTERM for it.
        let (mut child, stdout) = spawn_until_ready(test.named_run(
            round,
            &[
                "--stop-timeout",
                &timeout,
                image,
                "--",
                "sh",
                "-c",
                "echo ready; exec sleep 300",
            ],
        ));
        signal(&child, "-TERM");
        let status = wait_within(
            &mut child,
            Duration::from_secs(STOP_TIMEOUT + 5),
            "qbox run after SIGTERM (within --stop-timeout + 5 s)",
        );
        drop(stdout);
        (status.code(), rest_of(child.stderr.take()))
    });
    for (round, (code, stderr)) in results.iter().enumerate() {
        assert_eq!(*code, Some(143), "round {round}: {stderr}");
        assert!(
            stderr.contains("passed SIGTERM on to the container")
                && stderr.contains(
                    "killing the container (still running 2 s after SIGTERM); exiting 143"
                ),
            "round {round}: {stderr}"
        );
    }
    assert_nothing_left(&test);
}

#[test]
fn issue_10_a_second_sigint_kills_at_once() {
    let Some(image) = engine_image() else { return };
    let _turn = serial();
    let test = Isolated::new("int");
    let results = all_rounds(|round| {
        // A stop timeout no test waits for: only the second SIGINT ends it.
        let (mut child, _stdout) = spawn_until_ready(test.named_run(
            round,
            &[
                "--stop-timeout",
                "600",
                image,
                "--",
                "sh",
                "-c",
                "echo ready; exec sleep 300",
            ],
        ));
        signal(&child, "-INT");
        // The first one is passed on before the second is sent (two
        // signals close together would arrive as one).
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut seen = String::new();
        while !seen.contains("passed SIGINT on to the container") {
            assert_ne!(stderr.read_line(&mut seen).unwrap(), 0, "{seen}");
        }
        signal(&child, "-INT");
        let status = wait_within(
            &mut child,
            Duration::from_secs(30),
            "qbox run after a second SIGINT",
        );
        (status.code(), seen + &rest_of(Some(stderr)))
    });
    for (round, (code, stderr)) in results.iter().enumerate() {
        assert_eq!(*code, Some(130), "round {round}: {stderr}");
        assert!(
            stderr.contains("killing the container (a second SIGINT); exiting 130"),
            "round {round}: {stderr}"
        );
    }
    assert_nothing_left(&test);
}

#[test]
fn issue_10_a_sigkilled_qbox_run_leaves_no_container_and_its_snapshot_is_swept() {
    let Some(image) = engine_image() else { return };
    let _turn = serial();
    let test = Isolated::new("kill");
    all_rounds(|round| {
        // The container outlives its qbox by a few seconds, then exits.
        let (mut child, _stdout) = spawn_until_ready(
            test.named_run(round, &[image, "--", "sh", "-c", "echo ready; sleep 4"]),
        );
        signal(&child, "-KILL");
        // Reaped: a zombie would still look like a running owner.
        child.wait().unwrap();
    });
    // Nothing could clean up: every run's snapshot is still there, and
    // `qbox doctor` names them.
    let runtime = test.doctor_runtime_dir();
    assert_eq!(
        runtime["orphaned"].as_array().map(Vec::len),
        Some(ROUNDS),
        "{runtime}"
    );
    assert_eq!(runtime["path"], test.runtime_dir().to_str().unwrap());
    assert_eq!(test.runtime_entries().len(), ROUNDS);
    // The engine removes each container when it exits.
    wait_until(
        Duration::from_secs(60),
        "the engine did not remove the containers of the killed runs",
        || test.containers().is_empty(),
    );
    // The next run sweeps the snapshots of the killed ones.
    test.qbox_run(&["--auth", "none", image, "--", "true"])
        .run()
        .assert_code(0);
    assert_nothing_left(&test);
    let runtime = test.doctor_runtime_dir();
    assert_eq!(runtime["orphaned"], serde_json::json!([]), "{runtime}");
}

/// A pid that no process has now (and that a reused one would not match:
/// the start time in the name is 1 tick after boot).
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[test]
fn issue_10_the_sweep_removes_only_what_killed_runs_left() {
    let Some(image) = engine_image() else { return };
    let _turn = serial();
    let test = Isolated::new("sweep");
    let runtime = test.runtime_dir();
    std::fs::create_dir(&runtime).unwrap();
    std::fs::set_permissions(
        &runtime,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let dead = dead_pid();
    // A killed run's snapshot: removed.
    let orphan = runtime.join(format!("run-{dead}-1"));
    std::fs::create_dir(&orphan).unwrap();
    std::fs::write(orphan.join("data.sqlite3"), "stale").unwrap();
    // A symlink with a run's name, pointing outside: neither it nor its
    // target is touched.
    let outside = test.home.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("precious"), "keep").unwrap();
    std::os::unix::fs::symlink(&outside, runtime.join(format!("run-{dead}-2"))).unwrap();
    // Names qbox does not give: kept.
    std::fs::create_dir(runtime.join("mine")).unwrap();
    std::fs::write(runtime.join(format!("run-{dead}-3")), "a file").unwrap();
    // Another user's directory with a run's name (root can make one): kept.
    let foreign = runtime.join(format!("run-{dead}-4"));
    if running_as_root() {
        std::fs::create_dir(&foreign).unwrap();
        std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
    }

    // A live run, waiting on its stdin while another run sweeps.
    let mut live = test
        .qbox_run(&[
            "-i",
            image,
            "--",
            "sh",
            "-c",
            "echo ready; read line; test -r \"$QBOX_DB\" && echo still-readable",
        ])
        .command()
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(live.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    let live_dir = runtime.join(format!("run-{}-", live.id()));
    let live_entry = |test: &Isolated| {
        test.runtime_entries()
            .into_iter()
            .filter(|name| name.starts_with(live_dir.file_name().unwrap().to_str().unwrap()))
            .count()
    };
    assert_eq!(live_entry(&test), 1, "{:?}", test.runtime_entries());

    test.qbox_run(&["--auth", "none", image, "--", "true"])
        .run()
        .assert_code(0);

    assert!(!orphan.exists(), "the killed run's snapshot is swept");
    assert_eq!(live_entry(&test), 1, "the live run's snapshot is kept");
    assert_eq!(std::fs::read(outside.join("precious")).unwrap(), b"keep");
    assert!(
        std::fs::symlink_metadata(runtime.join(format!("run-{dead}-2")))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(runtime.join("mine").is_dir());
    assert!(runtime.join(format!("run-{dead}-3")).is_file());
    if running_as_root() {
        assert!(foreign.is_dir(), "another user's directory is kept");
    }

    {
        use std::io::Write;
        live.stdin.take().unwrap().write_all(b"go\n").unwrap();
    }
    let status = wait_within(&mut live, Duration::from_secs(30), "the live run");
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert_eq!(status.code(), Some(0), "{}", rest_of(live.stderr.take()));
    assert_eq!(rest, "still-readable\n");
    assert_eq!(live_entry(&test), 0, "a run removes its own snapshot");
    assert!(test.containers().is_empty());
}

#[test]
fn issue_10_a_runtime_directory_others_could_reach_is_refused() {
    let test = Isolated::new("refuse");
    let runtime = test.runtime_dir();
    std::fs::create_dir(&runtime).unwrap();
    // Wide open: another user could plant or read what qbox puts there.
    std::fs::set_permissions(
        &runtime,
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let check = |what: &str| {
        let run = test.qbox_run(&["qbox-never-reached:1", "--", "true"]).run();
        run.assert_code(125)
            .assert_one_line_error()
            .assert_stderr_contains(&format!(
                "the runtime directory {} cannot be used",
                runtime.display()
            ))
            .assert_stderr_contains("hint: qbox keeps each run's login snapshot there");
        assert_eq!(test.runtime_entries(), Vec::<String>::new(), "{what}");
        let doctor = test.doctor_runtime_dir();
        assert!(
            doctor["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("cannot be used")),
            "{what}: {doctor}"
        );
    };
    check("mode 0777");
    if running_as_root() {
        // Another user's, private to them: refused too.
        std::fs::set_permissions(
            &runtime,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        std::os::unix::fs::chown(&runtime, Some(65534), Some(65534)).unwrap();
        check("owned by another user");
    }
    // A symlink in its place: refused, and its target left alone.
    std::fs::remove_dir(&runtime).unwrap();
    let elsewhere = test.home.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &runtime).unwrap();
    let run = test.qbox_run(&["qbox-never-reached:1", "--", "true"]).run();
    run.assert_code(125).assert_stderr_contains("symbolic link");
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
}
