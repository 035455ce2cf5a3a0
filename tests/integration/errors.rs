//! Bad input: every case is one clear lowercase line with the path involved,
//! a hint where one helps, the documented exit code, and no damage.

use std::path::Path;
use std::time::Duration;

use qbox::store::Flavor;
use qbox::store::schema::StoreBuilder;

use crate::util::{
    TestHome, expired_login, file_bytes, running_as_root, valid_login, wait_until,
    waits_for_a_lock_on,
};

fn export_with_db(home: &TestHome, db: &Path) -> crate::util::Run {
    home.qbox()
        .args(["--db", db.to_str().unwrap(), "export-token"])
        .run()
}

#[test]
fn missing_store_lists_the_searched_paths() {
    let home = TestHome::new();
    let run = home.qbox().args(["export-token"]).run();
    run.assert_code(4).assert_one_line_error();
    for flavor in Flavor::ALL {
        run.assert_stderr_contains(home.store_path(flavor).to_str().unwrap());
    }
    run.assert_stderr_contains("hint: log in with `kiro-cli login`");
    assert_eq!(run.stdout, "");
}

#[test]
fn missing_explicit_store() {
    let home = TestHome::new();
    let path = home.path().join("nope.sqlite3");
    let run = export_with_db(&home, &path);
    run.assert_code(4)
        .assert_one_line_error()
        .assert_stderr_contains("no auth store at")
        .assert_stderr_contains("nope.sqlite3");
}

#[test]
fn store_without_a_token() {
    let home = TestHome::new();
    let path = home.store_path(Flavor::Kiro);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    StoreBuilder::create(&path, Flavor::Kiro).unwrap();
    let run = home.qbox().args(["export-token"]).run();
    run.assert_code(4)
        .assert_one_line_error()
        .assert_stderr_contains("holds no login")
        .assert_stderr_contains("hint: log in again with `kiro-cli login`");
}

#[test]
fn not_an_sqlite_file() {
    let home = TestHome::new();
    let path = home.path().join("data.sqlite3");
    std::fs::write(&path, b"this is a text file, not a database at all, no sir").unwrap();
    let before = file_bytes(&path);
    let run = export_with_db(&home, &path);
    run.assert_code(1)
        .assert_one_line_error()
        .assert_stderr_contains("is not an sqlite database")
        .assert_stderr_contains(path.to_str().unwrap());
    assert_eq!(file_bytes(&path), before);
}

#[test]
fn corrupt_database() {
    let home = TestHome::new();
    let path = home.path().join("data.sqlite3");
    StoreBuilder::create(&path, Flavor::AmazonQ)
        .unwrap()
        .login(&valid_login("c"))
        .unwrap();
    // Keep the header, wreck every page after the first.
    let mut bytes = file_bytes(&path);
    assert!(bytes.len() > 8192);
    for b in &mut bytes[4096..] {
        *b = 0xA5;
    }
    std::fs::write(&path, &bytes).unwrap();
    let run = export_with_db(&home, &path);
    run.assert_code(1)
        .assert_one_line_error()
        .assert_stderr_contains("is corrupt")
        .assert_stderr_contains("hint: ");
    assert_eq!(file_bytes(&path), bytes, "qbox never repairs or rewrites");
}

#[test]
fn missing_table() {
    let home = TestHome::new();
    let path = home.path().join("data.sqlite3");
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE unrelated (x)")
        .unwrap();
    let run = export_with_db(&home, &path);
    run.assert_code(1)
        .assert_one_line_error()
        .assert_stderr_contains("has no table `auth_kv`");
}

#[test]
fn directory_instead_of_file() {
    let home = TestHome::new();
    let run = export_with_db(&home, home.path());
    run.assert_code(1)
        .assert_one_line_error()
        .assert_stderr_contains("is not a file");
}

#[test]
fn unparsable_token_json_never_echoes_the_value() {
    let home = TestHome::new();
    let path = home.path().join("data.sqlite3");
    let builder = StoreBuilder::create(&path, Flavor::AmazonQ).unwrap();
    builder
        .auth_kv(
            Flavor::AmazonQ.token_key(),
            r#"{"access_token": 12345, "expires_at": "aoa-leaky-secret-value"}"#,
        )
        .unwrap();
    let run = export_with_db(&home, &path);
    run.assert_code(1)
        .assert_one_line_error()
        .assert_stderr_contains("codewhisperer:odic:token")
        .assert_stderr_contains("is not valid");
    assert!(
        !run.stderr.contains("aoa-leaky-secret-value"),
        "{}",
        run.stderr
    );

    builder
        .auth_kv(Flavor::AmazonQ.token_key(), "{not json")
        .unwrap();
    let run = export_with_db(&home, &path);
    run.assert_code(1).assert_stderr_contains("malformed json");
}

#[test]
fn expired_without_refresh_token_or_with_expired_registration() {
    let home = TestHome::new();
    let mut login = expired_login("x");
    login.refresh_token = None;
    home.login(Flavor::AmazonQ, &login);
    let run = home.qbox().args(["export-token"]).run();
    run.assert_code(4)
        .assert_one_line_error()
        .assert_stderr_contains("cannot be refreshed: the token has no refresh token")
        .assert_stderr_contains("hint: log in again with `q login`");

    let home = TestHome::new();
    let mut login = expired_login("y");
    login.registration_expires_at = Some(time::OffsetDateTime::now_utc() - time::Duration::days(1));
    home.login(Flavor::Kiro, &login);
    let run = home.qbox().args(["export-token"]).run();
    run.assert_code(4)
        .assert_one_line_error()
        .assert_stderr_contains("registration has expired")
        .assert_stderr_contains("kiro-cli login");
}

#[test]
fn permission_denied() {
    use std::os::unix::fs::PermissionsExt;
    let home = TestHome::new();
    let path = home.path().join("data.sqlite3");
    StoreBuilder::create(&path, Flavor::AmazonQ)
        .unwrap()
        .login(&valid_login("p"))
        .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
    let mut command = home
        .qbox()
        .args(["--db", path.to_str().unwrap(), "export-token"])
        .command();
    if running_as_root() {
        // Root ignores file modes: run qbox as `nobody`, who may enter the
        // directory but not read the file.
        use std::os::unix::process::CommandExt;
        std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        command.uid(65534).gid(65534);
    }
    let output = command.output().unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("permission denied reading"), "{stderr}");
    assert!(
        stderr.contains("hint: the CLI keeps its store at mode 0600"),
        "{stderr}"
    );
}

#[test]
fn a_lock_held_too_long_is_reported() {
    let home = TestHome::new();
    let path = home.login(Flavor::AmazonQ, &valid_login("lock"));
    let holder = rusqlite::Connection::open(&path).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let run = home
        .qbox()
        .env("QBOX_LOCK_TIMEOUT", "0.3")
        .args(["export-token"])
        .run();
    run.assert_code(1)
        .assert_one_line_error()
        .assert_stderr_contains("stayed locked for 0.3s")
        .assert_stderr_contains("QBOX_LOCK_TIMEOUT");
    holder.execute_batch("ROLLBACK").unwrap();
}

#[test]
fn a_brief_lock_is_waited_out() {
    let home = TestHome::new();
    let path = home.login(Flavor::AmazonQ, &valid_login("brief"));
    // The CLI holds the write lock before qbox starts, and changes the token
    // inside its transaction: qbox can only print the new one by reading
    // after the commit.
    let holder = rusqlite::Connection::open(&path).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let mut changed = valid_login("brief");
    changed.access_token = "aoa-access-after-the-lock".into();
    holder
        .execute(
            "UPDATE auth_kv SET value = ?1 WHERE key = ?2",
            [changed.token_json().as_str(), Flavor::AmazonQ.token_key()],
        )
        .unwrap();
    let child = home
        .qbox()
        .env("QBOX_LOCK_TIMEOUT", "60")
        .args(["export-token", "--field", "access"])
        .command()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // qbox has opened the store and sleeps between tries while the lock is
    // still held: it met the lock, and waits.
    let pid = child.id();
    wait_until(
        Duration::from_secs(30),
        "qbox has the store open and waits for the lock",
        || waits_for_a_lock_on(pid, &path),
    );
    let reader = rusqlite::Connection::open(&path).unwrap();
    assert!(
        reader
            .query_row("SELECT count(*) FROM auth_kv", [], |row| row
                .get::<_, i64>(0))
            .is_err(),
        "the lock is still held while qbox waits"
    );
    holder.execute_batch("COMMIT").unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        "aoa-access-after-the-lock\n"
    );
}

#[test]
fn issue_30_a_huge_lock_timeout_is_capped_with_a_warning_not_a_panic() {
    let home = TestHome::new();
    let path = home.login(Flavor::AmazonQ, &valid_login("huge"));
    let holder = rusqlite::Connection::open(&path).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let mut child = home
        .qbox()
        .env("QBOX_LOCK_TIMEOUT", "1e308")
        .args(["export-token", "--field", "access"])
        .command()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The timeout is read when the lock is first met: `1e308` seconds used
    // to overflow a `Duration` there and abort (exit 134).
    let pid = child.id();
    wait_until(
        Duration::from_secs(30),
        "qbox has the store open and waits for the lock",
        || waits_for_a_lock_on(pid, &path),
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "qbox ended while the lock was held"
    );
    holder.execute_batch("COMMIT").unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains(
            "QBOX_LOCK_TIMEOUT=1e308 is longer than qbox waits for a lock; waiting at most 86400 s"
        ),
        "{stderr}"
    );
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        "aoa-access-huge\n"
    );
}

/// Runs `qbox` to its end, or kills it and fails the test when it has not
/// ended after `limit` (the bug this guards against is a hang).
fn run_or_fail_if_it_hangs(qbox: crate::util::Qbox, what: &str) -> crate::util::Run {
    let mut child = qbox
        .command()
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let ended = (0..600).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        child.try_wait().unwrap().is_some()
    });
    if !ended {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{what} hangs on a FIFO");
    }
    let output = child.wait_with_output().unwrap();
    crate::util::Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

#[test]
fn issue_30_a_fifo_as_store_or_token_file_is_refused_at_once() {
    let home = TestHome::new();
    let fifo = home.path().join("fifo");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let fifo_arg = fifo.to_str().unwrap();
    for (what, qbox) in [
        (
            "qbox --db FIFO export-token",
            home.qbox().args(["--db", fifo_arg, "export-token"]),
        ),
        (
            "qbox --db FIFO chat",
            home.qbox().args(["--db", fifo_arg, "chat", "hi"]),
        ),
        (
            "qbox-sidecar --db FIFO chat",
            home.sidecar().args(["--db", fifo_arg, "chat", "hi"]),
        ),
        (
            "qbox-sidecar --db FIFO health",
            home.sidecar().args(["--db", fifo_arg, "health"]),
        ),
    ] {
        let run = run_or_fail_if_it_hangs(qbox, what);
        run.assert_code(1)
            .assert_one_line_error()
            .assert_stderr_contains(&format!("{fifo_arg} is not a file"));
    }
    let run = run_or_fail_if_it_hangs(
        home.sidecar()
            .args(["serve", "--http", "127.0.0.1:0", "--token-file", fifo_arg]),
        "qbox-sidecar serve --token-file FIFO",
    );
    run.assert_code(2)
        .assert_one_line_error()
        .assert_stderr_contains(&format!("the token file {fifo_arg} is not a regular file"));
}
