//! The agent tool against a hostile or careless CLI and a hostile local
//! user (issue #13): the CLI never sees qbox's secrets, one endless line of
//! output cannot exhaust the sidecar's memory, no process a call started
//! outlives it (not even one that left the process group), the sidecar's
//! memory and environment are closed to other processes of the user, and a
//! locked store does not stall the server while a call prepares its login.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use qbox::store::Flavor;
use serde_json::{Value, json};

use crate::mcp_client::{StdioMcp, fake_q};
use crate::util::{TestHome, running_as_root, valid_login, wait_until};

const TOOL: &str = "q-developer-agent";
/// The unprivileged user that plays "another process of the same user"
/// when the tests run as root (root may read any process's memory).
const NOBODY: u32 = 65534;

fn agent_env(record: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("ENABLE_ADDITIONAL_TOOLS", TOOL.into()),
        ("QBOX_AGENT_CLI", fake_q()),
        ("FAKE_Q_RECORD", record.display().to_string()),
        ("QBOX_AGENT_PASS_ENV", "FAKE_Q_RECORD".into()),
    ]
}

/// The `NAME=value` lines the fake CLI printed for the prompt `env`.
fn environment_of_the_cli(
    home: &TestHome,
    env: &[(&str, String)],
) -> (Vec<(String, String)>, String) {
    let mut mcp = StdioMcp::start(home.path(), env);
    let (text, is_error, _) = mcp.call(TOOL, json!({"prompt": "env"}));
    assert!(!is_error, "{text}");
    let vars = text
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    (vars, text)
}

fn has(vars: &[(String, String)], name: &str) -> bool {
    vars.iter().any(|(k, _)| k == name)
}

#[test]
fn issue_13_the_cli_gets_an_allow_listed_environment_without_qboxs_secrets() {
    const MCP_SECRET: &str = "mcp-bearer-secret-9f3a";
    const ACCESS_SECRET: &str = "aoa-bare-access-secret-77c1";
    const AWS_SECRET: &str = "aws-secret-key-41d0";
    const GITHUB_SECRET: &str = "ghp_unrelated_secret_e2b9";
    let home = TestHome::new();
    let mut env = vec![
        ("ENABLE_ADDITIONAL_TOOLS", TOOL.into()),
        ("QBOX_AGENT_CLI", fake_q()),
        ("QBOX_MCP_TOKEN", MCP_SECRET.into()),
        ("QBOX_ACCESS_TOKEN", ACCESS_SECRET.into()),
        ("AWS_SECRET_ACCESS_KEY", AWS_SECRET.into()),
        ("GITHUB_TOKEN", GITHUB_SECRET.into()),
        ("LANG", "C.UTF-8".into()),
        ("HTTPS_PROXY", "http://proxy.invalid:3128".into()),
        ("Q_LOG_LEVEL", "debug".into()),
        ("AWS_REGION", "eu-central-1".into()),
        ("SSH_AUTH_SOCK", "/tmp/agent.sock".into()),
    ];

    let (vars, text) = environment_of_the_cli(&home, &env);
    for secret in [MCP_SECRET, ACCESS_SECRET, AWS_SECRET, GITHUB_SECRET] {
        assert!(!text.contains(secret), "{secret} reached the CLI:\n{text}");
    }
    assert!(
        !vars.iter().any(|(k, _)| k.starts_with("QBOX_")),
        "a QBOX_ variable reached the CLI:\n{text}"
    );
    for needed in [
        "PATH",
        "HOME",
        "LANG",
        "HTTPS_PROXY",
        "Q_LOG_LEVEL",
        "AWS_REGION",
    ] {
        assert!(has(&vars, needed), "{needed} is missing:\n{text}");
    }
    assert!(
        vars.contains(&("NO_COLOR".into(), "1".into())),
        "the runner's own variable is set:\n{text}"
    );
    assert!(
        !has(&vars, "SSH_AUTH_SOCK"),
        "not named, not passed:\n{text}"
    );

    // Named extras pass; a QBOX_ name does not, even when named.
    env.push(("QBOX_AGENT_PASS_ENV", "SSH_AUTH_SOCK,QBOX_MCP_TOKEN".into()));
    let (vars, text) = environment_of_the_cli(&home, &env);
    assert!(
        vars.contains(&("SSH_AUTH_SOCK".into(), "/tmp/agent.sock".into())),
        "{text}"
    );
    assert!(!text.contains(MCP_SECRET), "{text}");
    assert!(!has(&vars, "GITHUB_TOKEN"), "{text}");
}

/// The peak resident set of a process (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status"))
}

#[test]
fn issue_13_a_huge_output_line_keeps_the_sidecars_memory_bounded() {
    /// One line of this many bytes, without a newline.
    const HUGE: u64 = 200_000_000;
    /// The default response limit.
    const LIMIT: u64 = 2_097_152;
    /// What the call may add to the sidecar's peak memory: the kept output
    /// and its copies are a few times the limit; the line itself would be
    /// hundreds of megabytes.
    const BOUND_KIB: u64 = 64 * 1024;
    let home = TestHome::new();
    let record = home.path().join("record");
    let mut mcp = StdioMcp::start(home.path(), &agent_env(&record));
    let (text, is_error, _) = mcp.call(TOOL, json!({"prompt": "warm up"}));
    assert!(!is_error, "{text}");
    let sidecar = crate::sidecar::recorded_pid(&record, "ppid");
    let before = peak_rss_kib(sidecar);

    let (text, is_error, _) = mcp.call(TOOL, json!({"prompt": format!("huge:{HUGE}")}));
    let after = peak_rss_kib(sidecar);
    assert!(!is_error, "{}", &text[text.len().saturating_sub(300)..]);
    assert!(
        after.saturating_sub(before) < BOUND_KIB,
        "peak memory grew by {} KiB (from {before} to {after} KiB) for one line of {HUGE} bytes",
        after - before
    );
    assert!(
        text.len() > LIMIT as usize && text.len() < LIMIT as usize + 1024,
        "the answer has {} bytes",
        text.len()
    );
    let notice = &text[LIMIT as usize..];
    assert!(text[..LIMIT as usize].bytes().all(|b| b == b'x'));
    assert!(
        notice.contains(&format!("truncated from {HUGE} bytes to {LIMIT} bytes")),
        "{notice}"
    );
    assert!(
        notice.contains(&format!("{} bytes dropped", HUGE - LIMIT)),
        "{notice}"
    );
    assert!(notice.contains("AGENT_MAX_RESPONSE_SIZE"), "{notice}");
}

/// A process the fake CLI left behind, named by pid and start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Escapee {
    pid: u32,
    start: u64,
}

/// The processes the fake CLI's grandchildren recorded.
fn escapees(record: &Path) -> Vec<Escapee> {
    let text = std::fs::read_to_string(record.join("escaped")).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let (pid, start) = line.split_once(' ')?;
            Some(Escapee {
                pid: pid.parse().ok()?,
                start: start.trim().parse().ok()?,
            })
        })
        .collect()
}

/// `(start time, parent, state)` of a process, from `/proc/PID/stat`.
fn stat_of(pid: u32) -> Option<(u64, u32, String)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    Some((
        fields.get(19)?.parse().ok()?,
        fields.get(1)?.parse().ok()?,
        (*fields.first()?).to_owned(),
    ))
}

/// Whether the process is still there, running or as a zombie nobody
/// reaped (a reused pid with another start time is another process).
fn still_there(escapee: Escapee) -> bool {
    stat_of(escapee.pid).is_some_and(|(start, _, _)| start == escapee.start)
}

/// The zombie children of `parent`.
fn zombie_children(parent: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| stat_of(*pid).is_some_and(|(_, ppid, state)| ppid == parent && state == "Z"))
        .collect()
}

/// Runs `prompt` with a one-second timeout and checks that everything the
/// fake CLI left behind is gone soon after the call, reaped.
fn assert_nothing_outlives(prompt: &str, expect_timeout: bool) {
    let home = TestHome::new();
    let record = home.path().join("record");
    let mut env = agent_env(&record);
    env.push(("AGENT_TIMEOUT", "1".into()));
    let mut mcp = StdioMcp::start(home.path(), &env);
    let (text, is_error, _) = mcp.call(TOOL, json!({"prompt": prompt}));
    assert!(text.contains("started"), "{prompt}: {text}");
    if expect_timeout {
        assert!(is_error, "{prompt}: {text}");
        assert!(
            text.contains("did not finish within 1s"),
            "{prompt}: {text}"
        );
    } else {
        assert!(!is_error, "{prompt}: {text}");
    }
    let escapees = escapees(&record);
    assert!(
        !escapees.is_empty(),
        "{prompt}: the fake CLI left nothing to check"
    );
    wait_until(
        Duration::from_secs(5),
        &format!("{prompt}: every process the CLI left is gone: {escapees:?}"),
        || escapees.iter().all(|e| !still_there(*e)),
    );
    // Nothing new is started after the call either.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        self::escapees(&record).len(),
        escapees.len(),
        "{prompt}: processes were still being started after the call"
    );
    let sidecar = crate::sidecar::recorded_pid(&record, "ppid");
    assert_eq!(
        zombie_children(sidecar),
        Vec::<u32>::new(),
        "{prompt}: the sidecar left zombies unreaped"
    );
}

#[test]
fn issue_13_a_setsid_grandchild_is_gone_after_the_timeout() {
    assert_nothing_outlives("setsid:30", true);
}

#[test]
fn issue_13_a_double_forked_daemon_is_gone_after_the_timeout() {
    assert_nothing_outlives("daemon:30", true);
}

#[test]
fn issue_13_a_daemon_left_by_a_call_that_finished_is_gone() {
    assert_nothing_outlives("daemon-exit:30", false);
}

#[test]
fn issue_13_a_process_that_keeps_forking_is_stopped_with_all_it_started() {
    assert_nothing_outlives("swarm:30", true);
}

/// Runs `forkloop:30` (a detached process that forks the next of its kind
/// and exits, in a loop) with a two-second timeout, `extra` added to the
/// sidecar's environment; checks that the sidecar's zombies stay few while
/// the call runs, that nothing of the loop outlives the call and that no
/// zombie is left; returns the sidecar's log.
fn assert_a_fork_loop_ends_with_its_call(extra: &[(&'static str, String)]) -> String {
    /// The most zombies the sidecar may hold at one time: the loop leaves
    /// one per generation, hundreds a second, which only reaping bounds.
    const ZOMBIES_AT_MOST: usize = 100;
    let home = TestHome::new();
    let record = home.path().join("record");
    let log = home.path().join("sidecar.log");
    let mut env = agent_env(&record);
    env.push(("AGENT_TIMEOUT", "2".into()));
    env.push(("RUST_LOG", "qbox=info".into()));
    env.extend(extra.iter().cloned());
    let mut mcp = StdioMcp::start_with_stderr(
        home.path(),
        &env,
        Stdio::from(std::fs::File::create(&log).unwrap()),
    );
    let sidecar = mcp.pid();
    let id = mcp.send_request(
        "tools/call",
        json!({"name": TOOL, "arguments": {"prompt": "forkloop:30"}}),
    );
    // While the call runs, the loop leaves zombie after zombie to the
    // sidecar.
    let mut most = 0;
    let sampling = Instant::now();
    while sampling.elapsed() < Duration::from_millis(1500) {
        most = most.max(zombie_children(sidecar).len());
        std::thread::sleep(Duration::from_millis(50));
    }
    let response = mcp.wait_response(id, Duration::from_secs(30));
    let text = response["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(text.contains("started"), "{response}");
    assert!(text.contains("did not finish within 2s"), "{response}");
    let generations = escapees(&record);
    assert!(
        generations.len() > 20,
        "the loop ran {} generations only",
        generations.len()
    );
    wait_until(
        Duration::from_secs(5),
        "every generation of the loop is gone",
        || generations.iter().all(|e| !still_there(*e)),
    );
    std::thread::sleep(Duration::from_millis(500));
    let after = escapees(&record).len();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        escapees(&record).len(),
        after,
        "the loop still forks after its call ended"
    );
    let last = escapees(&record);
    assert!(
        last.iter().all(|e| !still_there(*e)),
        "a generation is left"
    );
    wait_until(
        Duration::from_secs(3),
        "the sidecar has reaped every zombie",
        || zombie_children(sidecar).is_empty(),
    );
    assert!(
        most <= ZOMBIES_AT_MOST,
        "the sidecar held {most} zombies at one time while the call ran"
    );
    drop(mcp);
    std::fs::read_to_string(&log).unwrap()
}

#[test]
fn issue_30_a_fork_loop_ends_with_its_call_and_leaves_no_zombies() {
    let log = assert_a_fork_loop_ends_with_its_call(&[]);
    // Where the sidecar may make cgroups (root, or a delegated cgroup) this
    // is the cgroup mode, elsewhere the walk; the log says which.
    let cgroup = log.contains("contained in a cgroup each");
    let walk = log.contains("contained by walking /proc");
    assert!(cgroup != walk, "the log names one mode:\n{log}");
    eprintln!(
        "contained by {}",
        if cgroup { "a cgroup" } else { "the /proc walk" }
    );
}

#[test]
fn issue_30_a_fork_loop_ends_with_its_call_without_cgroups() {
    let log = assert_a_fork_loop_ends_with_its_call(&[("QBOX_AGENT_CGROUP", "off".into())]);
    assert!(
        log.contains(
            "contained by walking /proc (no cgroup per call: turned off by QBOX_AGENT_CGROUP=off)"
        ),
        "{log}"
    );
}

/// A `qbox-sidecar serve` over stdio that has answered `initialize`.
struct BareSidecar {
    child: std::process::Child,
    _stdin: std::process::ChildStdin,
}

impl BareSidecar {
    fn start(agent: bool, uid: Option<u32>) -> Self {
        Self::start_from(
            crate::util::Qbox::sidecar(Path::new("/nonexistent")),
            agent,
            uid,
        )
    }

    /// The sidecar's `serve`, run by `qbox` (its hidden `sidecar` command)
    /// rather than by `qbox-sidecar`.
    fn start_in_qbox(uid: Option<u32>) -> Self {
        let qbox = crate::util::Qbox::new(Path::new("/nonexistent")).args(["sidecar"]);
        Self::start_from(qbox, false, uid)
    }

    fn start_from(program: crate::util::Qbox, agent: bool, uid: Option<u32>) -> Self {
        let mut command = program
            .args(["serve"])
            .current_dir("/")
            .env("QBOX_MCP_TOKEN", "mcp-bearer-secret")
            .command();
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if agent {
            command.env("ENABLE_ADDITIONAL_TOOLS", TOOL);
        }
        if let Some(uid) = uid {
            command.uid(uid).gid(uid);
        }
        let mut child = command.spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "qbox-tests", "version": "1"}}});
        writeln!(stdin, "{initialize}").unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let answer: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(answer["result"]["serverInfo"]["name"], "qbox-sidecar");
        Self {
            child,
            _stdin: stdin,
        }
    }

    /// Whether another process of the sidecar's user can read its
    /// environment, where the MCP bearer token is.
    fn environment_readable_by(&self, uid: Option<u32>) -> bool {
        let path = format!("/proc/{}/environ", self.child.id());
        match uid {
            Some(uid) => Command::new("cat")
                .arg(&path)
                .uid(uid)
                .gid(uid)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap()
                .success(),
            None => std::fs::read(&path).is_ok(),
        }
    }
}

impl Drop for BareSidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether the kernel treats process `pid` as dumpable: its `/proc/PID`
/// files belong to its own user then, and to root when it is not (which
/// is also what keeps a core dump from being written).
fn dumpable(pid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    let status = std::fs::metadata(format!("/proc/{pid}/status")).unwrap();
    let process_uid = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().next().map(str::to_owned))
        .unwrap()
        .parse::<u32>()
        .unwrap();
    assert_ne!(
        process_uid, 0,
        "the check needs a process of a user other than root"
    );
    status.uid() == process_uid
}

#[test]
fn issue_13_with_the_agent_enabled_other_processes_of_the_user_cannot_read_the_sidecar() {
    // Root may read any process: play the user with `nobody` then.
    let user = running_as_root().then_some(NOBODY);
    // The check itself sees the environment of a plain process of the user.
    let mut control = Command::new("sleep");
    control.arg("60").stdout(Stdio::null());
    if let Some(uid) = user {
        control.uid(uid).gid(uid);
    }
    let mut control = control.spawn().unwrap();
    let path = format!("/proc/{}/environ", control.id());
    let control_readable = match user {
        Some(uid) => Command::new("cat")
            .arg(&path)
            .uid(uid)
            .gid(uid)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success(),
        None => std::fs::read(&path).is_ok(),
    };
    let control_dumpable = dumpable(control.id());
    let _ = control.kill();
    let _ = control.wait();
    assert!(
        control_readable && control_dumpable,
        "the check must see a plain process"
    );
    let guarded = BareSidecar::start(true, user);
    assert!(
        !guarded.environment_readable_by(user),
        "a process of the same user read the environment of a sidecar that runs the agent"
    );
}

#[test]
fn issue_30_both_binaries_are_non_dumpable_with_or_without_the_agent() {
    // Root may read any process: play the user with `nobody` then.
    let user = running_as_root().then_some(NOBODY);
    for (what, sidecar) in [
        ("qbox-sidecar serve", BareSidecar::start(false, user)),
        (
            "qbox-sidecar serve with the agent",
            BareSidecar::start(true, user),
        ),
        ("qbox sidecar serve", BareSidecar::start_in_qbox(user)),
    ] {
        assert!(
            !dumpable(sidecar.child.id()),
            "{what} is dumpable: a core dump could hold the login"
        );
        assert!(
            !sidecar.environment_readable_by(user),
            "a process of the same user read the environment of {what}"
        );
    }
}

/// A read-write snapshot (the test takes its lock) of a valid login.
fn snapshot(home: &TestHome) -> PathBuf {
    let source = home.login(Flavor::AmazonQ, &valid_login("locked"));
    let rows = qbox::store::db::read_snapshot_rows(&source).unwrap();
    qbox::store::snapshot::write_snapshot(
        &rows,
        &home.path().join("auth"),
        0o600,
        qbox::store::snapshot::SnapshotScope::Refreshable,
    )
    .unwrap()
}

#[test]
fn issue_13_a_locked_snapshot_does_not_stall_the_server_while_a_call_prepares() {
    /// How long the store may stay locked before a read gives up.
    const LOCK_TIMEOUT: Duration = Duration::from_secs(10);
    let home = TestHome::new();
    let snapshot = snapshot(&home);
    let record = home.path().join("record");
    let mut env = agent_env(&record);
    env.push(("QBOX_DB", snapshot.display().to_string()));
    env.push(("QBOX_LOCK_TIMEOUT", LOCK_TIMEOUT.as_secs().to_string()));
    let mut mcp = StdioMcp::start(home.path(), &env);

    let lock = rusqlite::Connection::open(&snapshot).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    assert!(
        !crate::util::waits_for_a_lock_on(mcp.pid(), &snapshot),
        "an idle sidecar does not look like one waiting for a lock"
    );
    let call = mcp.send_request(
        "tools/call",
        json!({"name": TOOL, "arguments": {"prompt": "after the lock"}}),
    );
    // The call has reached its read of the locked snapshot, and waits.
    let pid = mcp.pid();
    wait_until(
        Duration::from_secs(30),
        "the call waits for the snapshot's lock",
        || crate::util::waits_for_a_lock_on(pid, &snapshot),
    );
    let asked = Instant::now();
    let list = mcp.request("tools/list", json!({}));
    let waited = asked.elapsed();
    lock.execute_batch("COMMIT").unwrap();
    assert!(list["result"]["tools"].is_array(), "{list}");
    assert!(
        waited < LOCK_TIMEOUT / 2,
        "tools/list waited {waited:?} behind an agent call's read of a locked store"
    );
    // Once the lock is gone, the call goes on.
    let response = mcp.wait_response(call, Duration::from_secs(30));
    assert_eq!(response["result"]["isError"], json!(false), "{response}");
    assert_eq!(
        response["result"]["content"][0]["text"],
        json!("after the lock\n")
    );
}
