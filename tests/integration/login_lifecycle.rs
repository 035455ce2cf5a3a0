//! The login lifecycle under real timing: the refresh rule (window capped at
//! half the token's lifetime, one attempt per 30 s per login across
//! processes, a failed refresh keeps the old token and backs off), Kiro
//! social and external-IdP logins refreshed through a stand-in auth
//! service, and `snapshot --watch` surviving a replaced store, a deleted
//! directory and a full disk.
//!
//! The timing tests run at the real scale (30 s between attempts, tokens of
//! 75 to 150 s) for one to two minutes each; they wait on the stand-ins,
//! not on the CPU, so they overlap with the rest of the suite.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime};

use qbox::standin::kiro::{KiroBehavior, STANDIN_IDP_CLIENT_ID, STANDIN_PROFILE_ARN, StandinKiro};
use qbox::standin::oidc::{OidcBehavior, StandinOidc};
use qbox::store::Flavor;
use qbox::store::schema::{FixtureLogin, StoreBuilder};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::util::{TestHome, file_bytes, running_as_root, valid_login};

const SOCIAL_KEY: &str = "kirocli:social:token";
const IDP_KEY: &str = "kirocli:external-idp:token";

/// Polls `condition` every 100 ms until it holds or `limit` passes.
async fn wait_until(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The token row under `key` in the store (or snapshot) at `path`.
fn token_at(path: &Path, key: &str) -> Option<Value> {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .ok()?;
    conn.busy_timeout(Duration::from_secs(5)).ok()?;
    let raw: String = conn
        .query_row("SELECT value FROM auth_kv WHERE key = ?1", [key], |r| {
            r.get(0)
        })
        .ok()?;
    serde_json::from_str(&raw).ok()
}

fn expires_at(token: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(
        token["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
}

fn access(token: &Value) -> String {
    token["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// A `qbox -v snapshot DIR --watch` child whose stderr goes to a file (so
/// a test can wait for what it reports), killed when dropped.
struct Watcher {
    child: Child,
    log: PathBuf,
}

impl Watcher {
    fn start(home: &TestHome, dir: &Path, name: &str, env: &[(&str, String)]) -> Self {
        let log = home.path().join(format!("{name}.log"));
        let mut qbox = home
            .qbox()
            .args(["-v", "snapshot", dir.to_str().unwrap(), "--watch"])
            .args(["--interval", "1s"]);
        for (key, value) in env {
            qbox = qbox.env(key, value);
        }
        let child = qbox
            .command()
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self { child, log }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGTERM, then the exit code (within 10 s).
    async fn stop(mut self) -> Option<i32> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "watch did not stop on SIGTERM");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Builder ID login whose token expires `seconds` from now.
fn login_expiring_in(tag: &str, refresh_token: &str, seconds: i64) -> FixtureLogin {
    let mut login = valid_login(tag);
    login.refresh_token = Some(refresh_token.to_owned());
    login.expires_at = OffsetDateTime::now_utc() + time::Duration::seconds(seconds);
    login
}

/// Asserts the stand-in saw no two attempts closer than 30 s.
fn assert_spaced(times: &[SystemTime]) {
    for pair in times.windows(2) {
        let gap = pair[1].duration_since(pair[0]).unwrap_or_default();
        // The attempts are 30 s apart where qbox starts them; their arrival
        // may differ by a few milliseconds of loopback latency.
        assert!(
            gap >= Duration::from_millis(29_800),
            "two refresh attempts {gap:?} apart"
        );
    }
}

/// Two keepers of one store, tokens of 75 s: over two minutes, at most one
/// refresh per 30 s in all, no refresh token sent twice (nor refused), and
/// neither snapshot ever holds a token close to its expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_tokens_are_refreshed_at_most_every_30s_by_two_keepers() {
    let oidc = StandinOidc::start("fixture-client-id", "fixture-client-secret", "aor-short-0")
        .await
        .unwrap();
    oidc.set_behavior(OidcBehavior::Issue {
        expires_in: 75,
        rotate: true,
    });
    let home = TestHome::new();
    let source = home.login(Flavor::Kiro, &login_expiring_in("short", "aor-short-0", 75));
    // Tokens of 75 s live inside the CLI's real minute: the CLI's window is
    // scaled down with them (qbox keeps out of its last 15 s instead).
    let env = [
        ("QBOX_OIDC_ENDPOINT", oidc.url()),
        ("QBOX_CLI_WINDOW", "10".to_owned()),
    ];
    let dirs = [home.path().join("auth-a"), home.path().join("auth-b")];
    let mut watchers = [
        Watcher::start(&home, &dirs[0], "a", &env),
        Watcher::start(&home, &dirs[1], "b", &env),
    ];
    let snapshots: Vec<PathBuf> = dirs.iter().map(|d| d.join("data.sqlite3")).collect();
    let key = Flavor::Kiro.token_key();
    wait_until(Duration::from_secs(20), "both first snapshots", || {
        snapshots.iter().all(|s| token_at(s, key).is_some())
    })
    .await;
    let started = Instant::now();
    let mut least_left = Duration::MAX;
    let mut seen = std::collections::BTreeSet::new();
    while started.elapsed() < Duration::from_secs(120) {
        for snapshot in &snapshots {
            // A snapshot being replaced is read on the next round.
            if let Some(token) = token_at(snapshot, key) {
                let left = expires_at(&token) - OffsetDateTime::now_utc();
                least_left = least_left.min(Duration::try_from(left).unwrap_or_default());
                seen.insert(access(&token));
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for watcher in &mut watchers {
        assert!(watcher.running(), "{}", watcher.stderr());
    }
    let requests = oidc.requests();
    let sent: Vec<&str> = requests
        .iter()
        .map(|r| r.body["refreshToken"].as_str().unwrap())
        .collect();
    // Each attempt presented the refresh token the one before it produced.
    let mut expected = vec!["aor-short-0".to_owned()];
    expected.extend((1..sent.len()).map(|i| format!("standin-refresh-{i}")));
    assert_eq!(sent, expected, "a refresh token was spent twice or refused");
    assert_spaced(&requests.iter().map(|r| r.at).collect::<Vec<_>>());
    // 75 s tokens refreshed at half their life: one at the start, then
    // about every 37 s.
    assert!(requests.len() >= 3, "{} refreshes", requests.len());
    assert!(seen.len() >= 3, "the snapshots followed the refreshes");
    assert!(
        least_left > Duration::from_secs(20),
        "a snapshot held a token with only {least_left:?} left"
    );
    let host = token_at(&source, key).unwrap();
    assert_eq!(access(&host), format!("standin-access-{}", requests.len()));
    for watcher in watchers {
        let stderr = watcher.stderr();
        assert!(!stderr.contains("aor-") && !stderr.contains("standin-refresh"));
        assert!(!stderr.contains("standin-access"), "{stderr}");
        assert_eq!(watcher.stop().await, Some(0));
    }
}

/// A token service that fails for a minute: the snapshot keeps the old,
/// still valid token, attempts stay 30 s or more apart, `export-token`
/// serves the old token meanwhile, and the keeper recovers once the
/// service does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_token_service_keeps_the_old_token_and_the_keeper_recovers() {
    let oidc = StandinOidc::start("fixture-client-id", "fixture-client-secret", "aor-outage")
        .await
        .unwrap();
    oidc.set_behavior(OidcBehavior::ServerError(503));
    let home = TestHome::new();
    home.login(
        Flavor::AmazonQ,
        &login_expiring_in("outage", "aor-outage", 150),
    );
    let dir = home.path().join("auth");
    let snapshot = dir.join("data.sqlite3");
    let key = Flavor::AmazonQ.token_key();
    let env = [
        ("QBOX_OIDC_ENDPOINT", oidc.url()),
        ("QBOX_CLI_WINDOW", "10".to_owned()),
    ];
    let mut watcher = Watcher::start(&home, &dir, "outage", &env);
    let outage = Instant::now();
    // The pass that failed to refresh goes on to write the snapshot.
    wait_until(
        Duration::from_secs(20),
        "a failed attempt and a snapshot",
        || {
            !oidc.requests().is_empty()
                && watcher.stderr().contains("retrying in")
                && token_at(&snapshot, key).is_some()
        },
    )
    .await;
    assert_eq!(
        access(&token_at(&snapshot, key).unwrap()),
        "aoa-access-outage"
    );
    // A command meanwhile gets the old token (inside the window, still valid).
    let export = home
        .qbox()
        .args(["export-token", "--field", "access"])
        .env("QBOX_OIDC_ENDPOINT", oidc.url())
        .run_async()
        .await;
    export.assert_code(0);
    assert_eq!(export.stdout.trim(), "aoa-access-outage");
    while outage.elapsed() < Duration::from_secs(60) {
        assert!(watcher.running(), "{}", watcher.stderr());
        let token = token_at(&snapshot, key).unwrap();
        assert_eq!(access(&token), "aoa-access-outage");
        assert!(expires_at(&token) > OffsetDateTime::now_utc());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let failed = oidc.requests().len();
    assert!(failed >= 2, "{failed} attempts in a minute of outage");
    oidc.set_behavior(OidcBehavior::Issue {
        expires_in: 3600,
        rotate: true,
    });
    wait_until(Duration::from_secs(90), "recovery", || {
        token_at(&snapshot, key).is_some_and(|t| access(&t) == "standin-access-1")
    })
    .await;
    let times: Vec<SystemTime> = oidc.requests().iter().map(|r| r.at).collect();
    assert_spaced(&times);
    let stderr = watcher.stderr();
    assert!(stderr.contains("refreshing the login's token"), "{stderr}");
    assert!(stderr.contains("token refresh failed"), "{stderr}");
    assert!(!stderr.contains("aor-outage"), "{stderr}");
    assert_eq!(watcher.stop().await, Some(0));
}

/// A Kiro store holding a social login (as `kiro-cli login` with GitHub
/// writes it), expiring at `expires_at`.
fn social_store(home: &TestHome, refresh_token: &str, expires_at: OffsetDateTime) -> PathBuf {
    let path = home.store_path(Flavor::Kiro);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let token = json!({
        "access_token": "social-access-old",
        "expires_at": qbox::timefmt::rfc3339(expires_at),
        "refresh_token": refresh_token,
        "provider": "github",
        "profile_arn": "arn:aws:codewhisperer:us-east-1:111122223333:profile/OLD",
    });
    let builder = StoreBuilder::create(&path, Flavor::Kiro).unwrap();
    builder.auth_kv(SOCIAL_KEY, &token.to_string()).unwrap();
    builder
        .state(
            "api.codewhisperer.profile",
            &json!({"arn": "arn:aws:codewhisperer:us-east-1:111122223333:profile/OLD",
                    "profile_name": "Social_Default_Profile"})
            .to_string(),
        )
        .unwrap();
    path
}

/// Replaces the token row under `key`, as the CLI would.
fn set_token(path: &Path, key: &str, json: &str) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.execute("UPDATE auth_kv SET value = ?1 WHERE key = ?2", [json, key])
        .unwrap();
}

fn expired() -> OffsetDateTime {
    OffsetDateTime::now_utc() - time::Duration::minutes(5)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kiro_social_logins_are_refreshed_and_rotated_like_the_cli_does() {
    let kiro = StandinKiro::start("social-refresh-0").await.unwrap();
    let home = TestHome::new();
    let path = social_store(&home, "social-refresh-0", expired());
    let export = || {
        home.qbox()
            .args(["-v", "export-token", "--field", "access"])
            .env("QBOX_KIRO_AUTH_ENDPOINT", kiro.url())
            // A social login never goes to sso oidc.
            .env("QBOX_OIDC_ENDPOINT", "http://127.0.0.1:9/unused")
            .run_async()
    };
    let run = export().await;
    run.assert_code(0);
    assert_eq!(run.stdout.trim(), "standin-social-access-1");
    assert!(!run.stderr.contains("social-refresh-0"), "{}", run.stderr);
    let requests = kiro.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].body,
        json!({"refreshToken": "social-refresh-0"})
    );
    assert_eq!(requests[0].user_agent.as_deref(), Some("Kiro-CLI"));
    // Written back in the CLI's own shape: the same five fields.
    let stored = token_at(&path, SOCIAL_KEY).unwrap();
    let mut fields: Vec<&str> = stored
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "access_token",
            "expires_at",
            "profile_arn",
            "provider",
            "refresh_token"
        ]
    );
    assert_eq!(stored["refresh_token"], "standin-social-refresh-1");
    assert_eq!(stored["provider"], "github");
    assert_eq!(stored["profile_arn"], STANDIN_PROFILE_ARN);
    let left = expires_at(&stored) - OffsetDateTime::now_utc();
    assert!(left > time::Duration::minutes(55), "{left}");

    // Expired again: the rotated refresh token is the one presented.
    let mut again = stored.clone();
    again["expires_at"] = json!(qbox::timefmt::rfc3339(expired()));
    set_token(&path, SOCIAL_KEY, &again.to_string());
    kiro.set_behavior(KiroBehavior::Issue {
        expires_in: 3600,
        rotate: true,
        // No profile in the answer: the stored one stays.
        profile_arn: String::new(),
    });
    let run = export().await;
    run.assert_code(0);
    assert_eq!(run.stdout.trim(), "standin-social-access-2");
    assert_eq!(
        kiro.requests()[1].body["refreshToken"],
        "standin-social-refresh-1"
    );
    let stored = token_at(&path, SOCIAL_KEY).unwrap();
    assert_eq!(stored["profile_arn"], STANDIN_PROFILE_ARN);

    // A valid social token is served as it is, with its profile.
    let doctor = home.qbox().args(["doctor", "--json"]).run_async().await;
    let report: Value = serde_json::from_str(&doctor.stdout).unwrap();
    assert_eq!(report["login_kind"], "kiro-social");
    assert_eq!(report["login_description"], "Kiro social login (GitHub)");
    assert_eq!(report["refresh"]["refreshable"], true);
    assert!(report["refresh"]["next_at"].is_string(), "{report}");
    assert!(report["refresh"]["last_attempt_at"].is_string(), "{report}");
    let text = home.qbox().args(["doctor"]).run_async().await;
    assert!(
        text.stdout.contains("Kiro social login (GitHub)"),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("next at"), "{}", text.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_social_refresh_token_leaves_the_store_as_it_was() {
    // The service knows another refresh token: ours was revoked.
    let kiro = StandinKiro::start("social-refresh-current").await.unwrap();
    let home = TestHome::new();
    let path = social_store(&home, "social-refresh-revoked", expired());
    let before = file_bytes(&path);
    let run = home
        .qbox()
        .args(["export-token"])
        .env("QBOX_KIRO_AUTH_ENDPOINT", kiro.url())
        .run_async()
        .await;
    run.assert_code(4).assert_one_line_error();
    run.assert_stderr_contains("http 401")
        .assert_stderr_contains("kiro-cli login");
    assert!(!run.stderr.contains("social-refresh-revoked"));
    assert_eq!(kiro.requests().len(), 1);
    // Unlike the CLI, qbox never deletes the token it could not refresh.
    assert_eq!(file_bytes(&path), before);

    // A server failure: an error (exit 1), the store untouched as well.
    kiro.set_behavior(KiroBehavior::ServerError(502));
    let run = home
        .qbox()
        .args(["export-token"])
        .env("QBOX_KIRO_AUTH_ENDPOINT", kiro.url())
        .run_async()
        .await;
    run.assert_code(1).assert_stderr_contains("http 502");
    assert_eq!(file_bytes(&path), before);
}

/// A Kiro store with an external-IdP login at `token_endpoint`.
fn idp_store(home: &TestHome, token_endpoint: &str) -> PathBuf {
    let path = home.store_path(Flavor::Kiro);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let token = json!({
        "access_token": "idp-access-old",
        "expires_at": qbox::timefmt::rfc3339(expired()),
        "refresh_token": "idp-refresh-0",
        "issuer_url": "https://login.example.com/tenant",
        "token_endpoint": token_endpoint,
        "client_id": STANDIN_IDP_CLIENT_ID,
    });
    let builder = StoreBuilder::create(&path, Flavor::Kiro).unwrap();
    builder.auth_kv(IDP_KEY, &token.to_string()).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_idp_logins_are_refreshed_at_the_providers_token_endpoint() {
    let idp = StandinKiro::start("idp-refresh-0").await.unwrap();
    let home = TestHome::new();
    let path = idp_store(&home, &idp.idp_token_endpoint());
    let run = home
        .qbox()
        .args(["export-token", "--field", "access"])
        .run_async()
        .await;
    run.assert_code(0);
    assert_eq!(run.stdout.trim(), "standin-idp-access-1");
    let sent = &idp.requests()[0].body;
    assert_eq!(sent["grant_type"], "refresh_token");
    assert_eq!(sent["refresh_token"], "idp-refresh-0");
    assert_eq!(sent["client_id"], STANDIN_IDP_CLIENT_ID);
    let stored = token_at(&path, IDP_KEY).unwrap();
    assert_eq!(stored["refresh_token"], "standin-idp-refresh-1");
    assert_eq!(stored["token_endpoint"], idp.idp_token_endpoint());
    assert_eq!(stored["issuer_url"], "https://login.example.com/tenant");
    let report: Value = serde_json::from_str(
        &home
            .qbox()
            .args(["doctor", "--json"])
            .run_async()
            .await
            .stdout,
    )
    .unwrap();
    assert_eq!(report["login_kind"], "external-idp");
    assert_eq!(report["refresh"]["refreshable"], true);
}

#[test]
fn a_login_qbox_cannot_refresh_says_which_command_can() {
    // Plain http to a remote host: qbox will not send a refresh token there.
    let home = TestHome::new();
    let path = idp_store(&home, "http://idp.example.com/token");
    let before = file_bytes(&path);
    let doctor = home.qbox().args(["doctor", "--json"]).run();
    let report: Value = serde_json::from_str(&doctor.stdout).unwrap();
    assert_eq!(report["login_kind"], "external-idp");
    assert_eq!(report["refresh"]["refreshable"], false);
    assert!(
        report["refresh"]["blocker"]
            .as_str()
            .unwrap()
            .contains("https"),
        "{report}"
    );
    assert_eq!(
        report["refresh"]["fix"],
        "log in again with `kiro-cli login`"
    );
    let text = home.qbox().args(["doctor"]).run();
    assert!(text.stdout.contains("kiro-cli login"), "{}", text.stdout);
    let run = home.qbox().args(["export-token"]).run();
    run.assert_code(4)
        .assert_stderr_contains("kiro-cli login")
        .assert_one_line_error();
    assert_eq!(file_bytes(&path), before);
}

/// Writes a new store file over `path` by rename, as a CLI logging out and
/// in again leaves it: a new inode holding a new token.
fn replace_store_file(path: &Path, flavor: Flavor, tag: &str) {
    let fresh = path.with_extension("new");
    StoreBuilder::create(&fresh, flavor)
        .unwrap()
        .login(&valid_login(tag))
        .unwrap();
    std::fs::rename(&fresh, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_survives_a_replaced_store_and_a_deleted_directory() {
    let home = TestHome::new();
    let source = home.login(Flavor::AmazonQ, &valid_login("first"));
    let dir = home.path().join("auth");
    let snapshot = dir.join("data.sqlite3");
    let key = Flavor::AmazonQ.token_key();
    let mut watcher = Watcher::start(&home, &dir, "survive", &[]);
    let holds = |tag: &str| {
        token_at(&snapshot, key).is_some_and(|t| access(&t) == format!("aoa-access-{tag}"))
    };
    wait_until(Duration::from_secs(20), "the first snapshot", || {
        holds("first")
    })
    .await;

    replace_store_file(&source, Flavor::AmazonQ, "second");
    wait_until(Duration::from_secs(20), "the new store's login", || {
        holds("second")
    })
    .await;

    std::fs::remove_dir_all(&dir).unwrap();
    wait_until(
        Duration::from_secs(20),
        "the snapshot written again",
        || holds("second"),
    )
    .await;
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "recreated with the same rules");
    assert!(watcher.running());
    assert!(
        watcher.stderr().contains("wrote it again"),
        "{}",
        watcher.stderr()
    );
    assert_eq!(watcher.stop().await, Some(0));
}

/// Mounts a tmpfs of `size` at `at`; `None` (with a visible skip) where
/// mounting is not possible. Required as root under `QBOX_REQUIRE_DOCKER=1`,
/// where CI runs with the privileges the container tests need anyway.
fn tmpfs(at: &Path, size: &str) -> Option<Mount> {
    std::fs::create_dir_all(at).unwrap();
    let mounted = running_as_root()
        && std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
    if mounted {
        return Some(Mount(at.to_owned()));
    }
    let why = "cannot mount a tmpfs (needs root and CAP_SYS_ADMIN)";
    if std::env::var_os("QBOX_REQUIRE_DOCKER").is_some_and(|v| v == "1") && running_as_root() {
        panic!("{why}, and QBOX_REQUIRE_DOCKER=1 requires it");
    }
    eprintln!("SKIPPED: {why}");
    None
}

struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_survives_a_full_disk_and_keeps_the_old_snapshot() {
    let home = TestHome::new();
    let Some(mount) = tmpfs(&home.path().join("small"), "256k") else {
        return;
    };
    let source = home.login(Flavor::AmazonQ, &valid_login("before"));
    let dir = mount.0.join("auth");
    let snapshot = dir.join("data.sqlite3");
    let key = Flavor::AmazonQ.token_key();
    let mut watcher = Watcher::start(&home, &dir, "full", &[]);
    let holds = |tag: &str| {
        token_at(&snapshot, key).is_some_and(|t| access(&t) == format!("aoa-access-{tag}"))
    };
    wait_until(Duration::from_secs(20), "the first snapshot", || {
        holds("before")
    })
    .await;
    // Fill the file system to the last byte.
    let filler = mount.0.join("filler");
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 4096];
        while file.write_all(&block).is_ok() {}
        while file.write_all(&[0]).is_ok() {}
    }
    crate::util::replace_stored_token(&source, Flavor::AmazonQ, &valid_login("after").token_json());
    wait_until(Duration::from_secs(20), "the failed write reported", || {
        watcher.stderr().contains("the previous snapshot stays")
    })
    .await;
    assert!(holds("before"), "the old snapshot is intact");
    assert!(watcher.running(), "{}", watcher.stderr());
    std::fs::remove_file(&filler).unwrap();
    wait_until(Duration::from_secs(20), "the write retried", || {
        holds("after")
    })
    .await;
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, ["data.sqlite3"], "no temporary file left behind");
    assert_eq!(watcher.stop().await, Some(0));
    drop(mount);
}
