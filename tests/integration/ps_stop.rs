//! `qbox ps` and `qbox stop` against the real engine: a running `qbox run`
//! is listed with its keeper and its login's expiry, a killed keeper shows
//! as dead, `qbox stop` ends the container (and so its `qbox run`), and
//! containers qbox did not start are never touched.

use std::process::Command;
use std::time::Duration;

use qbox::store::Flavor;
use serde_json::Value;

use crate::container::{engine_image, qbox_engine, qbox_run, spawn_until_ready, wait_within};
use crate::util::{TestHome, valid_login, wait_until};

fn ps(home: &TestHome) -> Vec<Value> {
    let run = qbox_engine(home).args(["ps", "--json"]).run();
    run.assert_code(0);
    serde_json::from_str(&run.stdout).unwrap()
}

fn listed<'a>(rows: &'a [Value], name: &str) -> Option<&'a Value> {
    rows.iter().find(|row| row["name"] == name)
}

fn gone(name: &str) -> bool {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("name=^{name}$")])
        .output()
        .unwrap();
    out.stdout.is_empty()
}

#[test]
fn ps_lists_the_keeper_and_stop_ends_the_run() {
    let Some(image) = engine_image() else { return };
    let _turn = crate::util::engine_turn();
    let home = TestHome::new();
    home.login(Flavor::AmazonQ, &valid_login("ps"));
    let name = format!("qbox-test-ps-{}", std::process::id());
    let script = "echo ready; exec sleep 300";
    let (mut child, _stdout) = spawn_until_ready(qbox_run(
        &home,
        &["--name", &name, image, "--", "sh", "-c", script],
    ));

    let rows = ps(&home);
    let row = listed(&rows, &name).unwrap_or_else(|| panic!("{name} not in {rows:?}"));
    assert_eq!(row["state"], "running");
    assert_eq!(row["keeper"]["state"], "running", "{row}");
    assert_eq!(row["keeper"]["pid"], child.id());
    let expires = row["token_expires_at"]
        .as_str()
        .expect("the snapshot's expiry");
    assert!(
        time::OffsetDateTime::parse(expires, &time::format_description::well_known::Rfc3339)
            .is_ok()
    );
    let table = qbox_engine(&home).args(["ps"]).run();
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.contains(&name) && l.contains(&format!("running (pid {})", child.id()))),
        "{}",
        table.stdout
    );

    // PID 1 ignores SIGTERM: the engine kills it after -t seconds, and the
    // `qbox run` in charge exits with the container's 137.
    let stop = qbox_engine(&home).args(["stop", "-t", "1", &name]).run();
    stop.assert_code(0);
    assert_eq!(stop.stdout.trim(), name);
    let status = wait_within(&mut child, Duration::from_secs(30), "qbox run");
    assert_eq!(status.code(), Some(137));
    wait_until(Duration::from_secs(20), "the container is removed", || {
        gone(&name)
    });
}

#[test]
fn a_killed_keeper_shows_as_dead_and_the_container_can_still_be_stopped() {
    let Some(image) = engine_image() else { return };
    let _turn = crate::util::engine_turn();
    let home = TestHome::new();
    home.login(Flavor::AmazonQ, &valid_login("ps-gone"));
    let name = format!("qbox-test-ps-gone-{}", std::process::id());
    let (mut child, _stdout) = spawn_until_ready(qbox_run(
        &home,
        &[
            "--name",
            &name,
            image,
            "--",
            "sh",
            "-c",
            "echo ready; exec sleep 300",
        ],
    ));
    child.kill().unwrap();
    child.wait().unwrap();
    let rows = ps(&home);
    let row = listed(&rows, &name).expect("the container outlives its killed keeper");
    assert_eq!(row["keeper"]["state"], "dead", "{row}");
    let stop = qbox_engine(&home).args(["stop", "-t", "0", &name]).run();
    stop.assert_code(0);
    wait_until(Duration::from_secs(20), "the container is removed", || {
        gone(&name)
    });
}

#[test]
fn stop_refuses_containers_qbox_did_not_start() {
    let Some(image) = engine_image() else { return };
    let _turn = crate::util::engine_turn();
    let home = TestHome::new();
    let name = format!("qbox-test-foreign-{}", std::process::id());
    let created = Command::new("docker")
        .args(["create", "--name", &name, image, "sleep", "1"])
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let stop = qbox_engine(&home).args(["stop", &name]).run();
    stop.assert_code(1)
        .assert_one_line_error()
        .assert_stderr_contains(&format!("`{name}`"));
    assert!(!gone(&name), "a container qbox did not start was touched");
    let unknown = home
        .qbox()
        .env_remove("DOCKER_HOST")
        .args(["stop", "qbox-test-no-such-container"])
        .run();
    unknown.assert_code(1);
    let _ = Command::new("docker").args(["rm", "-f", &name]).output();
}
