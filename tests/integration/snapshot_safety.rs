//! Where snapshots may be written (issue #13, items 1 and 10): another local
//! user must never receive the login's secrets nor replace the snapshot, and
//! every directory qbox makes for a snapshot is private.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use qbox::store::Flavor;
use serde_json::json;

use crate::mcp_client::{StdioMcp, fake_q};
use crate::util::{TestHome, running_as_root, valid_login};

/// The unprivileged user that plays the attacker when the tests run as root.
const NOBODY: u32 = 65534;

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mode_of(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

/// A home the attacker can traverse (but not list or write).
fn traversable_home(tag: &str) -> TestHome {
    let home = TestHome::new();
    set_mode(home.path(), 0o711);
    home.login(Flavor::AmazonQ, &valid_login(tag));
    home
}

/// True when the file exists and holds any of the login's secrets.
fn holds_secret(path: &Path, tag: &str) -> bool {
    std::fs::read(path).is_ok_and(|bytes| {
        let text = String::from_utf8_lossy(&bytes);
        text.contains(&format!("aoa-access-{tag}")) || text.contains(&format!("aor-refresh-{tag}"))
    })
}

/// Prints a visible skip, or fails when the tests must not skip.
fn skip_unless_root(what: &str) -> bool {
    if running_as_root() {
        return false;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{what} needs root to play a second user, and CI runs as root"
    );
    eprintln!("SKIPPED: {what} needs root to switch to a second user");
    true
}

/// A process of the user `nobody` that, until `stop` exists, keeps planting
/// symlinks to `bait` under every name a snapshot writer uses in `dir`:
/// the final name and each temporary file it can see.
fn start_symlink_racer(dir: &Path, bait: &Path, stop: &Path) -> Child {
    let script = r#"
        dir=$1 bait=$2 stop=$3
        while [ ! -e "$stop" ]; do
            for f in "$dir"/.data.sqlite3.*; do
                [ -e "$f" ] && ln -sf "$bait" "$f" 2>/dev/null
            done
            ln -s "$bait" "$dir/data.sqlite3" 2>/dev/null
        done
    "#;
    Command::new("/bin/sh")
        .args(["-c", script, "racer"])
        .arg(dir)
        .arg(bait)
        .arg(stop)
        .uid(NOBODY)
        .gid(NOBODY)
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

/// A bait file the attacker owns, in a directory of its own.
fn bait_file(home: &TestHome) -> PathBuf {
    let lair = home.path().join("lair");
    std::fs::create_dir(&lair).unwrap();
    let bait = lair.join("bait");
    std::fs::write(&bait, "").unwrap();
    for path in [&lair, &bait] {
        std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    set_mode(&lair, 0o755);
    set_mode(&bait, 0o666);
    bait
}

#[test]
fn issue_13_a_directory_others_can_write_is_refused_before_anything_is_written() {
    let home = traversable_home("wide");
    let dir = home.path().join("shared");
    std::fs::create_dir(&dir).unwrap();
    for mode in [0o777, 0o775] {
        set_mode(&dir, mode);
        let run = home.qbox().args(["snapshot", dir.to_str().unwrap()]).run();
        run.assert_code(1)
            .assert_stderr_contains("refusing to write secrets into")
            .assert_stderr_contains("hint: use a directory that only you can change");
        assert!(
            std::fs::read_dir(&dir).unwrap().next().is_none(),
            "nothing may be written into a directory others can write (mode {mode:o})"
        );
    }
}

#[test]
fn issue_13_a_symlinked_directory_is_refused() {
    let home = traversable_home("link");
    let real = home.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let link = home.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let run = home.qbox().args(["snapshot", link.to_str().unwrap()]).run();
    run.assert_code(1)
        .assert_stderr_contains("it is a symbolic link");
    assert!(!real.join("data.sqlite3").exists());
}

#[test]
fn issue_13_a_planted_symlink_at_the_snapshot_name_is_replaced_not_followed() {
    let home = traversable_home("plant");
    let dir = home.path().join("auth");
    std::fs::create_dir(&dir).unwrap();
    set_mode(&dir, 0o700);
    let bait = home.path().join("bait");
    std::fs::write(&bait, "").unwrap();
    set_mode(&bait, 0o644);
    std::os::unix::fs::symlink(&bait, dir.join("data.sqlite3")).unwrap();

    home.qbox()
        .args(["snapshot", dir.to_str().unwrap()])
        .run()
        .assert_code(0);
    let snapshot = dir.join("data.sqlite3");
    let meta = std::fs::symlink_metadata(&snapshot).unwrap();
    assert!(meta.file_type().is_file(), "the snapshot is a regular file");
    assert_eq!(mode_of(&snapshot), 0o600);
    assert!(holds_secret(&snapshot, "plant"));
    assert!(!holds_secret(&bait, "plant"), "the bait got the secrets");
    assert_eq!(mode_of(&bait), 0o644, "the bait's mode was changed");
}

#[test]
fn issue_13_a_directory_of_another_user_is_refused() {
    if skip_unless_root("a directory owned by another user") {
        return;
    }
    let home = traversable_home("foreign");
    let dir = home.path().join("theirs");
    std::fs::create_dir(&dir).unwrap();
    set_mode(&dir, 0o700);
    std::os::unix::fs::chown(&dir, Some(NOBODY), Some(NOBODY)).unwrap();
    let run = home.qbox().args(["snapshot", dir.to_str().unwrap()]).run();
    run.assert_code(1)
        .assert_stderr_contains(&format!("belongs to another user (uid {NOBODY})"));
    assert!(std::fs::read_dir(&dir).unwrap().next().is_none());
}

/// The reproduction of the report: another user swaps names for symlinks
/// while snapshots are written. In a world-writable directory qbox now
/// refuses at once; in a sticky one (like /tmp) it writes, and the racer
/// never gets a byte of the login, however the race falls.
#[test]
fn issue_13_a_racing_user_never_receives_the_secrets() {
    if skip_unless_root("the symlink race as a second user") {
        return;
    }
    let home = traversable_home("race");
    let bait = bait_file(&home);
    let stop = home.path().join("stop");
    for (name, mode, attempts) in [("open", 0o777, 5), ("sticky", 0o1777, 40)] {
        let dir = home.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        set_mode(&dir, mode);
        let mut racer = start_symlink_racer(&dir, &bait, &stop);
        let mut written = 0;
        for _ in 0..attempts {
            let run = home.qbox().args(["snapshot", dir.to_str().unwrap()]).run();
            if run.code == 0 {
                written += 1;
            } else {
                run.assert_code(1);
            }
            assert!(
                !holds_secret(&bait, "race"),
                "{name}: the racer got the secrets"
            );
        }
        std::fs::write(&stop, "").unwrap();
        racer.wait().unwrap();
        std::fs::remove_file(&stop).unwrap();
        if mode == 0o777 {
            assert_eq!(written, 0, "a world-writable directory must be refused");
        }
        // Whatever stands at the snapshot name now: if it is qbox's, it is a
        // private regular file; no temporary file is left holding secrets.
        let snapshot = dir.join("data.sqlite3");
        if let Ok(meta) = std::fs::symlink_metadata(&snapshot)
            && meta.uid() == 0
        {
            assert!(meta.file_type().is_file());
            assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        }
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.uid() == NOBODY {
                assert!(!holds_secret(&path, "race"), "{}", path.display());
            }
        }
    }
    assert!(!holds_secret(&bait, "race"));
}

#[test]
fn issue_13_modes_that_share_the_secrets_need_force_mode() {
    let home = traversable_home("mode");
    let dir = home.path().join("auth");
    let refused = home
        .qbox()
        .args(["snapshot", dir.to_str().unwrap(), "--mode", "0640"])
        .run();
    refused
        .assert_code(2)
        .assert_stderr_contains("refusing --mode 0640")
        .assert_stderr_contains("--force-mode");
    assert!(!dir.exists(), "nothing is created for a refused mode");

    let forced = home
        .qbox()
        .args([
            "snapshot",
            dir.to_str().unwrap(),
            "--mode",
            "0640",
            "--force-mode",
        ])
        .run();
    forced.assert_code(0);
    assert_eq!(mode_of(&dir.join("data.sqlite3")), 0o640);
    assert_eq!(mode_of(&dir), 0o700, "a new directory is private");
}

#[test]
fn issue_13_a_directory_others_can_read_gets_a_warning() {
    let home = traversable_home("readable");
    let dir = home.path().join("auth");
    std::fs::create_dir(&dir).unwrap();
    set_mode(&dir, 0o755);
    let run = home.qbox().args(["snapshot", dir.to_str().unwrap()]).run();
    run.assert_code(0)
        .assert_stderr_contains("has mode 0755: other users can see what is in it");
    set_mode(&dir, 0o700);
    let quiet = home.qbox().args(["snapshot", dir.to_str().unwrap()]).run();
    quiet.assert_code(0);
    assert!(!quiet.stderr.contains("has mode"), "{}", quiet.stderr);
}

#[test]
fn issue_13_the_agents_private_copy_lives_in_a_private_directory() {
    let home = traversable_home("agent");
    let snapshot_dir = home.path().join("auth");
    home.qbox()
        .args(["snapshot", snapshot_dir.to_str().unwrap()])
        .run()
        .assert_code(0);
    let record = home.path().join("record");
    let mut mcp = StdioMcp::start(
        home.path(),
        &[
            ("ENABLE_ADDITIONAL_TOOLS", "q-developer-agent".into()),
            ("QBOX_AGENT_CLI", fake_q()),
            ("FAKE_Q_RECORD", record.display().to_string()),
            ("QBOX_AGENT_PASS_ENV", "FAKE_Q_RECORD".into()),
            (
                "QBOX_DB",
                snapshot_dir.join("data.sqlite3").display().to_string(),
            ),
        ],
    );
    let (_, is_error, _) = mcp.call("q-developer-agent", json!({"prompt": "hello"}));
    assert!(!is_error);
    let env = std::fs::read_to_string(record.join("env")).unwrap();
    let data_home = env
        .lines()
        .find_map(|l| l.strip_prefix("XDG_DATA_HOME="))
        .expect("the CLI is pointed at the private copy");
    // The copy's directory exists while the sidecar runs.
    assert_eq!(mode_of(Path::new(data_home)), 0o700, "{data_home}");
}
