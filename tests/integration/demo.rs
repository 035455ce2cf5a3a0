//! `qbox demo` without a container: the sidecar as a local process, when
//! asked to or when no engine answers.

use crate::util::TestHome;

/// `qbox demo` with a private temporary directory, to check what it leaves.
pub fn demo_in(home: &TestHome) -> crate::util::Qbox {
    let tmp = home.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    home.qbox().env("TMPDIR", &tmp).args(["demo"])
}

fn assert_local_run_and_clean(home: &TestHome, run: &crate::util::Run) {
    run.assert_code(0);
    assert!(
        run.stdout.contains("running as a local process"),
        "{}",
        run.stdout
    );
    assert_verified_and_clean(home, run);
}

/// The demo checked its answer and token, and left no temporary files.
pub fn assert_verified_and_clean(home: &TestHome, run: &crate::util::Run) {
    assert!(
        run.stderr.contains("the stand-in saw the demo token"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("cleaned up"), "{}", run.stderr);
    // The per-user runtime directory (where `qbox run` keeps its runs'
    // snapshots) and the refresh records live in the user's state directory
    // and outlive a run by design; no run may be left in the first.
    let left: Vec<_> = std::fs::read_dir(home.path().join("tmp"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
    let runtime = home.path().join(".local/state/qbox/runtime");
    let runs: Vec<_> = std::fs::read_dir(&runtime)
        .map(|entries| entries.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(
        runs.is_empty(),
        "runs left in {}: {runs:?}",
        runtime.display()
    );
}

#[test]
fn without_an_engine_the_demo_says_so_and_runs_the_sidecar_locally() {
    let home = TestHome::new();
    let run = demo_in(&home)
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .run();
    assert!(
        run.stderr
            .contains("no Docker engine answers at unix:///nonexistent/docker.sock"),
        "{}",
        run.stderr
    );
    assert_local_run_and_clean(&home, &run);
}

#[test]
fn no_docker_runs_the_sidecar_locally_and_prints_only_the_answer_on_stdout() {
    let home = TestHome::new();
    let run = demo_in(&home)
        .args(["--no-docker", "--prompt", "ping"])
        .run();
    assert_local_run_and_clean(&home, &run);
    assert_eq!(
        run.stdout.trim_end(),
        "This answer comes from the stand-in Amazon Q service, framed as AWS event-stream messages. \
         qbox-sidecar, running as a local process, read the demo login from a least-privilege snapshot, \
         called the service with its token, and streamed the text back to qbox as MCP progress notifications."
    );
}
