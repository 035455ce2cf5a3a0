//! The store and qbox's private files against a crashed writer and another
//! local user (issue 30): where the refresh lock and `qbox run`'s runtime
//! directory live without `XDG_RUNTIME_DIR`, what killed snapshot writers
//! leave, and stores a writer died in the middle of writing.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use qbox::standin::oidc::StandinOidc;
use qbox::store::Flavor;

use crate::util::{TestHome, expired_login, running_as_root};

/// The unprivileged user that plays another local user when the tests run
/// as root.
const NOBODY: u32 = 65534;

async fn standin() -> StandinOidc {
    StandinOidc::start(
        "fixture-client-id",
        "fixture-client-secret",
        "aor-refresh-old",
    )
    .await
    .unwrap()
}

/// A directory another local user created at `path` before qbox: theirs
/// (as root the test can make it so) and open to everyone.
fn planted_by_another_user(path: &Path) {
    std::fs::create_dir(path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).unwrap();
    if running_as_root() {
        std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY)).unwrap();
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_30_names_planted_in_tmp_neither_disable_the_refresh_lock_nor_stop_qbox_run() {
    let home = TestHome::new();
    // A shared temporary directory (sticky, writable by all), in which
    // another user created the names qbox used to take there.
    let tmp = home.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let euid = rustix::process::geteuid().as_raw();
    for name in [format!("qbox-refresh-{euid}"), format!("qbox-{euid}")] {
        planted_by_another_user(&tmp.join(name));
    }
    let state = home.path().join(".local").join("state").join("qbox");

    // A refresh (no XDG_RUNTIME_DIR) takes its lock in the user's own
    // state directory.
    refresh_beside(&home, &tmp, None).await;
    let locks = state.join("refresh");
    assert_eq!(mode(&locks), 0o700);
    let lock_files: Vec<_> = std::fs::read_dir(&locks)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        lock_files.len() == 1 && lock_files[0].ends_with(".lock"),
        "{lock_files:?}"
    );

    // `qbox run` gets past its runtime directory (and then finds no engine).
    run_beside(&home, &tmp, None).await;
    assert_eq!(mode(&state.join("runtime")), 0o700);
    // Nothing of qbox's went into the shared directory.
    for entry in std::fs::read_dir(&tmp).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        assert!(
            !running_as_root() || meta.uid() == NOBODY,
            "qbox wrote {} into the shared temporary directory",
            entry.path().display()
        );
        assert_eq!(std::fs::read_dir(entry.path()).unwrap().count(), 0);
    }

    // XDG_RUNTIME_DIR set to the shared directory (as containers and CI
    // often set it to /tmp), with qbox's names planted in it: it is passed
    // over for the state directory, so neither is disabled.
    for name in ["qbox-refresh", "qbox"] {
        planted_by_another_user(&tmp.join(name));
    }
    refresh_beside(&home, &tmp, Some(&tmp)).await;
    run_beside(&home, &tmp, Some(&tmp)).await;
    for name in ["qbox-refresh", "qbox"] {
        assert_eq!(
            std::fs::read_dir(tmp.join(name)).unwrap().count(),
            0,
            "qbox wrote into {name} in the shared directory"
        );
    }
}

/// A refresh of a fresh expired login with `TMPDIR` (and, if given,
/// `XDG_RUNTIME_DIR`) at `tmp`, against a stand-in of its own: it succeeds
/// and its lock is used.
async fn refresh_beside(home: &TestHome, tmp: &Path, runtime: Option<&Path>) {
    let store = home.store_path(Flavor::AmazonQ);
    if store.exists() {
        std::fs::remove_file(&store).unwrap();
    }
    home.login(Flavor::AmazonQ, &expired_login("old"));
    let oidc = standin().await;
    let mut qbox = home.qbox().env("TMPDIR", tmp);
    if let Some(runtime) = runtime {
        qbox = qbox.env("XDG_RUNTIME_DIR", runtime);
    }
    let run = qbox
        .env("QBOX_OIDC_ENDPOINT", oidc.url())
        .args(["export-token", "--field", "access"])
        .run_async()
        .await;
    run.assert_code(0);
    assert!(
        !run.stderr.contains("refresh lock"),
        "the lock was not used: {}",
        run.stderr
    );
}

/// `qbox run` with `TMPDIR` (and, if given, `XDG_RUNTIME_DIR`) at `tmp`
/// gets past its runtime directory, and then finds no engine.
async fn run_beside(home: &TestHome, tmp: &Path, runtime: Option<&Path>) {
    let mut qbox = home.qbox().env("TMPDIR", tmp);
    if let Some(runtime) = runtime {
        qbox = qbox.env("XDG_RUNTIME_DIR", runtime);
    }
    let run = qbox
        .args(["run", "qbox-test-no-such-image"])
        .run_async()
        .await;
    run.assert_code(125);
    assert!(
        !run.stderr.contains("runtime directory"),
        "qbox run was stopped by a directory others can write: {}",
        run.stderr
    );
}

/// A pid that runs nothing now: a child that has exited and been reaped.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[test]
fn issue_30_a_snapshot_write_removes_what_killed_writers_left_and_nothing_else() {
    let home = TestHome::new();
    home.login(Flavor::AmazonQ, &crate::util::valid_login("sweep"));
    let dir = home.path().join("snap");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let dead = dead_pid();
    let alive = std::process::id();
    // What a `qbox snapshot --refreshable` killed before its rename left:
    // the refresh token under a temporary name.
    let stale = dir.join(format!(".data.sqlite3.{dead}.0.1f.tmp"));
    std::fs::write(&stale, "aor-refresh-sweep").unwrap();
    // A write in progress in a live process: kept.
    let live = dir.join(format!(".data.sqlite3.{alive}.0.2f.tmp"));
    std::fs::write(&live, "in progress").unwrap();
    // A symlink with a temporary's name: neither followed nor removed.
    let outside = home.path().join("outside");
    std::fs::write(&outside, "keep me").unwrap();
    let link = dir.join(format!(".data.sqlite3.{dead}.2.4f.tmp"));
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    // Another user's file: not ours to remove.
    let theirs = dir.join(format!(".data.sqlite3.{dead}.1.3f.tmp"));
    if running_as_root() {
        std::fs::write(&theirs, "theirs").unwrap();
        std::os::unix::fs::chown(&theirs, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let other = dir.join("notes.txt");
    std::fs::write(&other, "notes").unwrap();

    home.qbox()
        .args(["snapshot", dir.to_str().unwrap()])
        .run()
        .assert_code(0);

    assert!(
        !stale.exists(),
        "the dead writer's temporary file is still there"
    );
    assert!(live.exists(), "a live writer's file was removed");
    assert!(
        std::fs::symlink_metadata(&link).is_ok(),
        "a symlink was removed"
    );
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "keep me");
    assert!(
        !running_as_root() || theirs.exists(),
        "another user's file was removed"
    );
    assert!(other.exists());
    // The write itself left no temporary file.
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut expected = vec![
        "data.sqlite3".to_owned(),
        "notes.txt".to_owned(),
        live.file_name().unwrap().to_string_lossy().into_owned(),
        link.file_name().unwrap().to_string_lossy().into_owned(),
    ];
    if running_as_root() {
        expected.push(theirs.file_name().unwrap().to_string_lossy().into_owned());
    }
    expected.sort();
    assert_eq!(names, expected);
}

/// Leaves a hot journal in the store at `path`: a writer (SQLite's default
/// rollback journal, as the CLIs use) changes the login and enough more to
/// spill changed pages into the file, and is killed before its commit.
fn die_mid_transaction(path: &Path) {
    let script = r#"
import os, signal, sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("PRAGMA journal_mode=DELETE")
c.execute("PRAGMA cache_size=4")
c.execute("BEGIN IMMEDIATE")
c.execute("UPDATE auth_kv SET value = 'half-written' WHERE key LIKE '%token%'")
c.execute("CREATE TABLE spill (x BLOB)")
for _ in range(300):
    c.execute("INSERT INTO spill VALUES (?)", (os.urandom(3000),))
os.kill(os.getpid(), signal.SIGKILL)
"#;
    let status = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .status()
        .unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "{status}"
    );
}

fn journal_of(path: &Path) -> std::path::PathBuf {
    let mut journal = path.as_os_str().to_owned();
    journal.push("-journal");
    journal.into()
}

#[test]
fn issue_30_a_hot_journal_is_rolled_back_and_the_login_read() {
    let home = TestHome::new();
    let path = home.login(Flavor::AmazonQ, &crate::util::valid_login("journal"));
    let before = crate::util::file_bytes(&path);
    die_mid_transaction(&path);
    let journal = journal_of(&path);
    assert!(journal.exists(), "no journal left");
    assert_ne!(crate::util::file_bytes(&path), before, "nothing spilled");
    // What every read-only reader (qbox before this fix) meets.
    let probe =
        rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let err = probe
        .query_row("SELECT count(*) FROM auth_kv", [], |row| {
            row.get::<_, i64>(0)
        })
        .unwrap_err();
    assert_eq!(
        err.sqlite_error().map(|e| e.extended_code),
        Some(rusqlite::ffi::SQLITE_READONLY_ROLLBACK),
        "{err}"
    );
    drop(probe);

    let run = home
        .qbox()
        .args(["export-token", "--field", "access"])
        .run();
    run.assert_code(0);
    assert_eq!(run.stdout, "aoa-access-journal\n");
    assert!(!journal.exists(), "the journal is still there");
    assert_eq!(
        crate::util::file_bytes(&path),
        before,
        "the store is not as it was before the dead writer began"
    );
}

/// Whether the store file itself is writable where its directory is not.
#[derive(Clone, Copy, PartialEq)]
enum StoreFile {
    ReadOnly,
    Writable,
}

/// Leaves a hot journal, then runs `export-token` where the store's
/// directory is not writable (as another user when the test runs as root,
/// since root writes anything), the store file `store` as said. Returns
/// the exit code and stderr, after checking that nothing was changed: a
/// rollback that could restore the store's pages but not delete the
/// journal must not be begun.
fn export_beside_an_unwritable_directory(store: StoreFile) -> (Option<i32>, String) {
    let home = TestHome::new();
    let path = home.login(Flavor::AmazonQ, &crate::util::valid_login("journal"));
    die_mid_transaction(&path);
    let left = crate::util::file_bytes(&path);
    let store_dir = path.parent().unwrap().to_owned();
    let mut command = home
        .qbox()
        .args(["export-token", "--field", "access"])
        .command();
    if running_as_root() {
        let mut dir = store_dir.clone();
        while dir.starts_with(home.path()) {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
            dir.pop();
        }
        for file in [path.clone(), journal_of(&path)] {
            match store {
                StoreFile::ReadOnly => {
                    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))
                        .unwrap();
                }
                StoreFile::Writable => {
                    std::os::unix::fs::chown(&file, Some(NOBODY), Some(NOBODY)).unwrap();
                }
            }
        }
        std::os::unix::process::CommandExt::uid(&mut command, NOBODY);
        std::os::unix::process::CommandExt::gid(&mut command, NOBODY);
    } else {
        if store == StoreFile::ReadOnly {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
        }
        std::fs::set_permissions(&store_dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    }
    let output = command.output().unwrap();
    std::fs::set_permissions(&store_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.stdout.is_empty());
    assert!(journal_of(&path).exists());
    assert_eq!(
        crate::util::file_bytes(&path),
        left,
        "the store was changed: {stderr}"
    );
    (output.status.code(), stderr)
}

#[test]
fn issue_30_a_hot_journal_qbox_may_not_roll_back_is_an_error_with_a_hint() {
    let (code, stderr) = export_beside_an_unwritable_directory(StoreFile::ReadOnly);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("left mid-write"), "{stderr}");
    assert!(
        stderr.contains("hint:") && stderr.contains("-journal") && stderr.contains("read-only"),
        "{stderr}"
    );
}

/// A writable store in a directory that is not: SQLite could restore the
/// store's pages and then fail to delete the journal (a disk I/O error),
/// so the rollback is not begun and the files stay as they are.
#[test]
fn issue_30_a_store_whose_directory_is_not_writable_is_left_as_it_is() {
    let (code, stderr) = export_beside_an_unwritable_directory(StoreFile::Writable);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("left mid-write"), "{stderr}");
    assert!(!stderr.contains("disk I/O error"), "{stderr}");
}

/// A journal another user put beside a store in a directory anyone can
/// write is never rolled back into it: that would write their rows.
#[test]
fn issue_30_a_planted_journal_is_not_rolled_back_into_the_store() {
    let home = TestHome::new();
    let path = home.login(Flavor::AmazonQ, &crate::util::valid_login("journal"));
    die_mid_transaction(&path);
    let left = crate::util::file_bytes(&path);
    let store_dir = path.parent().unwrap().to_owned();
    // A shared directory, as /tmp is.
    std::fs::set_permissions(&store_dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    if running_as_root() {
        std::os::unix::fs::chown(journal_of(&path), Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let run = home
        .qbox()
        .args(["export-token", "--field", "access"])
        .run();
    // Reached through a link from a private directory: the journal SQLite
    // would roll back is the one beside the real file.
    let link = home.path().join("link.sqlite3");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    let through_link = home
        .qbox()
        .args([
            "--db",
            link.to_str().unwrap(),
            "export-token",
            "--field",
            "access",
        ])
        .run();
    std::fs::set_permissions(&store_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for run in [&run, &through_link] {
        run.assert_code(1)
            .assert_stderr_contains("hot journal qbox does not trust")
            .assert_stderr_contains("hint:");
        assert!(run.stdout.is_empty());
    }
    assert!(journal_of(&path).exists());
    assert_eq!(
        crate::util::file_bytes(&path),
        left,
        "the planted journal was rolled back into the store"
    );
}

/// The token row's JSON in the store at `path`.
fn stored_token(path: &Path) -> serde_json::Value {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let raw: String = conn
        .query_row(
            "SELECT value FROM auth_kv WHERE key = ?1",
            [Flavor::AmazonQ.token_key()],
            |row| row.get(0),
        )
        .unwrap();
    serde_json::from_str(&raw).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_30_a_rotated_refresh_token_survives_a_kill_before_the_write_back() {
    let oidc = standin().await;
    let home = TestHome::new();
    let path = home.login(Flavor::AmazonQ, &expired_login("old"));
    let records = home.path().join(".local/state/qbox/refresh");
    let grant_recorded = || {
        std::fs::read_dir(&records).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|entry| entry.file_name().to_string_lossy().ends_with(".grant"))
        })
    };

    // The test holds the store's write lock (readers still read), so
    // qbox's write-back waits after the service has answered.
    let blocker = rusqlite::Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let mut qbox = home
        .qbox()
        .env("QBOX_OIDC_ENDPOINT", oidc.url())
        .env("QBOX_LOCK_TIMEOUT", "120")
        .args(["export-token", "--field", "access"])
        .command()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let answered = loop {
        if oidc.requests().len() == 1 && grant_recorded() {
            break true;
        }
        if std::time::Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    // Killed between the service's answer and the commit.
    qbox.kill().unwrap();
    qbox.wait().unwrap();
    blocker.execute_batch("ROLLBACK").unwrap();
    drop(blocker);
    assert!(
        answered,
        "the service answered ({} requests) but no grant was recorded",
        oidc.requests().len()
    );
    assert_eq!(
        stored_token(&path)["refresh_token"],
        "aor-refresh-old",
        "the write-back happened after all"
    );

    // The next command writes the recorded grant instead of spending the
    // old refresh token again.
    let run = home
        .qbox()
        .env("QBOX_OIDC_ENDPOINT", oidc.url())
        .args(["export-token", "--field", "access"])
        .run_async()
        .await;
    run.assert_code(0);
    assert_eq!(run.stdout, "standin-access-1\n");
    assert_eq!(
        oidc.requests().len(),
        1,
        "the old refresh token was sent again"
    );
    let stored = stored_token(&path);
    assert_eq!(stored["access_token"], "standin-access-1");
    assert_eq!(stored["refresh_token"], "standin-refresh-1");
    assert!(!grant_recorded(), "the record outlived its recovery");
}
