//! `qbox snapshot`: least-privilege contents in the real schema, atomic
//! replacement, and `--watch` keeping it fresh until a signal.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use qbox::standin::oidc::StandinOidc;
use qbox::store::Flavor;
use qbox::store::schema::StoreBuilder;

use crate::util::{Qbox, StderrLines, TestHome, valid_login, wait_until, wait_until_async};

fn schema(path: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name")
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn count(path: &Path, table: &str) -> i64 {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

fn snapshot_access_token(path: &Path, flavor: Flavor) -> rusqlite::Result<String> {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let raw: String = conn.query_row(
        "SELECT value FROM auth_kv WHERE key = ?1",
        [flavor.token_key()],
        |r| r.get(0),
    )?;
    let json: serde_json::Value = serde_json::from_str(&raw).expect("complete token json");
    Ok(json["access_token"].as_str().unwrap().to_owned())
}

#[test]
fn holds_only_auth_rows_in_the_real_schema() {
    for flavor in Flavor::ALL {
        let home = TestHome::new();
        let mut login = valid_login("snap");
        login.profile_arn = Some("arn:aws:codewhisperer:us-east-1:123456789012:profile/S".into());
        let source = home.login(flavor, &login);
        let builder = StoreBuilder::create(&home.path().join("scratch.sqlite3"), flavor).unwrap();
        drop(builder);
        // Private data the snapshot must not carry.
        {
            let conn = rusqlite::Connection::open(&source).unwrap();
            conn.execute(
                "INSERT INTO conversations (key, value) VALUES ('/home/ana/secret-project', '{\"history\":[\"private\"]}')",
                [],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO history (command) VALUES ('aws s3 ls private')",
                [],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO state (key, value) VALUES ('telemetryClientId', '\"abc\"')",
                [],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO auth_kv (key, value) VALUES ('unrelated:key', 'x')",
                [],
            )
            .unwrap();
        }
        let dir = home.path().join("out").join("auth");
        let run = home.qbox().args(["snapshot", dir.to_str().unwrap()]).run();
        run.assert_code(0);
        let snapshot = dir.join("data.sqlite3");
        assert_eq!(run.stdout, format!("{}\n", snapshot.display()));

        assert_eq!(
            schema(&snapshot),
            schema(&source),
            "same schema as the source"
        );
        assert_eq!(count(&snapshot, "conversations"), 0);
        assert_eq!(count(&snapshot, "history"), 0);
        assert_eq!(count(&snapshot, "migrations"), count(&source, "migrations"));
        assert_eq!(
            count(&snapshot, "auth_kv"),
            2,
            "token and registration only"
        );
        assert_eq!(count(&snapshot, "state"), 3, "profile, start url, region");
        assert_eq!(
            snapshot_access_token(&snapshot, flavor).unwrap(),
            "aoa-access-snap"
        );

        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&snapshot).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "no temporary files left: {leftovers:?}");

        // The snapshot is a store qbox itself can use.
        let from_snapshot = home
            .qbox()
            .args([
                "--db",
                snapshot.to_str().unwrap(),
                "export-token",
                "--field",
                "access",
            ])
            .run();
        assert_eq!(from_snapshot.stdout, "aoa-access-snap\n");
    }
}

#[test]
fn mode_option_and_bad_mode() {
    // Modes that share the file with others are covered in snapshot_safety;
    // a narrower one is simply applied.
    let home = TestHome::new();
    home.login(Flavor::AmazonQ, &valid_login("m"));
    let dir = home.path().join("auth");
    let run = home
        .qbox()
        .args(["snapshot", dir.to_str().unwrap(), "--mode", "0400"])
        .run();
    run.assert_code(0);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("data.sqlite3"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o400);
    let bad = home
        .qbox()
        .args(["snapshot", dir.to_str().unwrap(), "--mode", "999"])
        .run();
    bad.assert_code(2);
    assert!(
        bad.stderr.contains("not an octal file mode"),
        "{}",
        bad.stderr
    );
}

#[test]
fn no_login_writes_nothing() {
    let home = TestHome::new();
    let dir = home.path().join("auth");
    let run = home.qbox().args(["snapshot", dir.to_str().unwrap()]).run();
    run.assert_code(4).assert_one_line_error();
    assert!(!dir.join("data.sqlite3").exists());
}

/// A `qbox snapshot --watch` child that is stopped when dropped, its
/// stderr read as it comes.
struct Watcher {
    child: Child,
    stderr: StderrLines,
}

impl Watcher {
    fn start(home: &TestHome, dir: &Path, extra: &[&str], oidc_url: Option<String>) -> Self {
        Self::start_with(home.qbox(), dir, extra, oidc_url)
    }

    /// [`Watcher::start`] from a `qbox` invocation the caller prepared.
    fn start_with(qbox: Qbox, dir: &Path, extra: &[&str], oidc_url: Option<String>) -> Self {
        let mut qbox = qbox
            .args(["snapshot", dir.to_str().unwrap(), "--watch"])
            .args(extra.iter().copied());
        if let Some(url) = oidc_url {
            qbox = qbox.env("QBOX_OIDC_ENDPOINT", url);
        }
        let mut child = qbox
            .command()
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = StderrLines::read(child.stderr.take().unwrap());
        Self { child, stderr }
    }

    fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the child to exit after a signal; returns code and stderr.
    fn wait(mut self, limit: Duration) -> (Option<i32>, String) {
        let status = wait_until(limit, "watch exits after the signal", || {
            self.child.try_wait().unwrap()
        });
        // The reader has all of stderr once the pipe closes.
        let stderr = self.stderr.clone();
        wait_until(limit, "watch's stderr is read to its end", || {
            stderr.ended()
        });
        (status.code(), stderr.text())
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn set_host_token(path: &Path, flavor: Flavor, access: &str) {
    let mut login = valid_login("x");
    login.access_token = access.to_owned();
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.execute(
        "INSERT OR REPLACE INTO auth_kv (key, value) VALUES (?1, ?2)",
        [flavor.token_key(), &login.token_json()],
    )
    .unwrap();
}

#[test]
fn watch_picks_up_a_new_login_and_stops_on_sigterm_and_sigint() {
    for signal in ["TERM", "INT"] {
        let home = TestHome::new();
        let source = home.login(Flavor::AmazonQ, &valid_login("first"));
        let dir = home.path().join("auth");
        let snapshot = dir.join("data.sqlite3");
        let watcher = Watcher::start(&home, &dir, &["--interval", "200ms"], None);
        wait_until(
            Duration::from_secs(10),
            "the first snapshot is written",
            || {
                snapshot_access_token(&snapshot, Flavor::AmazonQ)
                    .is_ok_and(|t| t == "aoa-access-first")
            },
        );
        set_host_token(&source, Flavor::AmazonQ, "aoa-access-second");
        wait_until(
            Duration::from_secs(5),
            "a new host login reaches the snapshot within seconds",
            || {
                snapshot_access_token(&snapshot, Flavor::AmazonQ)
                    .is_ok_and(|t| t == "aoa-access-second")
            },
        );
        watcher.signal(signal);
        let (code, stderr) = watcher.wait(Duration::from_secs(10));
        assert_eq!(code, Some(0), "clean exit on SIG{signal}: {stderr}");
        assert!(stderr.contains("snapshot written"), "{stderr}");
        assert!(
            !stderr.contains("aoa-access"),
            "no tokens in progress output"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_refreshes_on_the_host_before_expiry() {
    let oidc = StandinOidc::start(
        "fixture-client-id",
        "fixture-client-secret",
        "aor-refresh-soon",
    )
    .await
    .unwrap();
    let home = TestHome::new();
    let mut login = valid_login("soon");
    // Valid by the CLI's rule, but inside the 5-minute refresh margin.
    login.expires_at = time::OffsetDateTime::now_utc() + time::Duration::minutes(2);
    let source = home.login(Flavor::Kiro, &login);
    let dir = home.path().join("auth");
    let snapshot = dir.join("data.sqlite3");
    // At debug level the watcher says each time it reads the host store.
    let watcher = Watcher::start_with(
        home.qbox().env("RUST_LOG", "qbox=debug"),
        &dir,
        &["--interval", "200ms"],
        Some(oidc.url()),
    );
    let reads = {
        let stderr = watcher.stderr.clone();
        move || stderr.text().matches("reading auth store").count()
    };
    wait_until_async(
        Duration::from_secs(10),
        "the snapshot carries the refreshed token",
        move || {
            snapshot_access_token(&snapshot, Flavor::Kiro).is_ok_and(|t| t == "standin-access-1")
        },
    )
    .await;
    let host = qbox::store::read_login(&source, None).unwrap();
    assert_eq!(
        host.token.unwrap().token.access_token.expose(),
        "standin-access-1",
        "host store written back"
    );
    // Let it make more passes, each reading the host store: a fresh token
    // must not be refreshed again. Five more reads finish at least one
    // whole pass that began after the refreshed token was in place.
    let seen = reads();
    wait_until_async(
        Duration::from_secs(10),
        "the watcher reads the host store five more times",
        move || reads() >= seen + 5,
    )
    .await;
    assert_eq!(oidc.requests().len(), 1);
    watcher.signal("TERM");
    let (code, _) = tokio::task::spawn_blocking(move || watcher.wait(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(code, Some(0));
}

#[test]
fn readers_never_see_a_partial_snapshot() {
    let home = TestHome::new();
    let source = home.login(Flavor::AmazonQ, &valid_login("gen0"));
    let dir = home.path().join("auth");
    let snapshot: PathBuf = dir.join("data.sqlite3");
    let watcher = Watcher::start(&home, &dir, &["--interval", "20ms"], None);
    wait_until(
        Duration::from_secs(10),
        "the first snapshot is written",
        || snapshot.exists(),
    );

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut generation = 0;
            while !stop.load(Ordering::Relaxed) {
                generation += 1;
                set_host_token(&source, Flavor::AmazonQ, &format!("aoa-gen-{generation}"));
                std::thread::sleep(Duration::from_millis(15));
            }
            generation
        })
    };
    let reads = Arc::new(AtomicUsize::new(0));
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        // Any error here (torn file, missing table, bad json) fails the test.
        let token = snapshot_access_token(&snapshot, Flavor::AmazonQ)
            .unwrap_or_else(|e| panic!("partial snapshot seen: {e}"));
        seen.insert(token);
        reads.fetch_add(1, Ordering::Relaxed);
    }
    stop.store(true, Ordering::Relaxed);
    let generations = writer.join().unwrap();
    assert!(
        reads.load(Ordering::Relaxed) > 200,
        "enough reads to mean something"
    );
    assert!(generations > 20);
    assert!(
        seen.len() > 5,
        "the snapshot was rewritten many times while read: {}",
        seen.len()
    );
    drop(watcher);
}
