//! Access-only snapshots (issue #12, items 4 and 5): what `qbox run`,
//! `qbox snapshot --watch` and `qbox snapshot --access-only` write holds the
//! access token but no refresh token and no client secret, read back with
//! SQLite (on the host, and from inside a container); `--refreshable` keeps
//! both; the host store never changes; an expired access-only copy sends
//! every consumer (`qbox-sidecar health`, `q-chat`, the agent) to its host
//! keeper with exit 4 / `isError`; the fake CLI, which checks its login as
//! the real one does, works with such a copy while the token is valid.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use qbox::store::Flavor;

use crate::mcp_client::fake_q;
use crate::util::{KillOnDrop, TestHome, expired_login, file_bytes, valid_login, wait_until};

/// The sentence every consumer of an expired access-only copy reports.
const KEEPER_MESSAGE: &str = "the login expired and this copy cannot refresh it: is the host keeper (`qbox snapshot --watch` / `qbox run`) running?";

/// What a snapshot file holds of a login's secrets, read with SQLite.
#[derive(Debug)]
struct Held {
    /// `auth_kv` keys.
    keys: Vec<String>,
    /// The token row's JSON.
    token: serde_json::Value,
    /// `state` keys.
    state: Vec<String>,
    /// The raw bytes contain the refresh token / the client secret.
    refresh_token_bytes: bool,
    client_secret_bytes: bool,
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

fn held(snapshot: &Path, tag: &str) -> Held {
    let conn =
        rusqlite::Connection::open_with_flags(snapshot, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let rows = |sql: &str| -> Vec<(String, String)> {
        let mut statement = conn.prepare(sql).unwrap();
        statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let auth = rows("SELECT key, value FROM auth_kv ORDER BY key");
    let state = rows("SELECT key, CAST(value AS TEXT) FROM state ORDER BY key");
    let token = auth
        .iter()
        .find(|(key, _)| key == Flavor::AmazonQ.token_key())
        .map(|(_, value)| serde_json::from_str(value).unwrap())
        .expect("a token row");
    let bytes = file_bytes(snapshot);
    Held {
        keys: auth.into_iter().map(|(key, _)| key).collect(),
        token,
        state: state.into_iter().map(|(key, _)| key).collect(),
        refresh_token_bytes: contains(&bytes, &format!("aor-refresh-{tag}")),
        client_secret_bytes: contains(&bytes, "fixture-client-secret"),
    }
}

/// An access-only snapshot: the token and its expiry, no refresh token,
/// no registration, and the scope mark.
fn assert_access_only(held: &Held, tag: &str) {
    assert_eq!(held.keys, [Flavor::AmazonQ.token_key()], "{held:?}");
    assert_eq!(held.token["access_token"], format!("aoa-access-{tag}"));
    assert!(held.token["expires_at"].is_string(), "{held:?}");
    // Absent, not empty: the CLI's `Option` would send an empty one.
    assert!(held.token.get("refresh_token").is_none(), "{held:?}");
    assert!(
        !held.refresh_token_bytes,
        "the refresh token is in the file"
    );
    assert!(
        !held.client_secret_bytes,
        "the client secret is in the file"
    );
    assert!(
        held.state.iter().any(|k| k == "qbox.snapshot.scope"),
        "{held:?}"
    );
}

/// A full snapshot: refresh token and registration.
fn assert_refreshable(held: &Held, tag: &str) {
    assert_eq!(
        held.keys,
        [
            Flavor::AmazonQ.registration_key(),
            Flavor::AmazonQ.token_key()
        ],
        "{held:?}"
    );
    assert_eq!(held.token["refresh_token"], format!("aor-refresh-{tag}"));
    assert!(held.refresh_token_bytes && held.client_secret_bytes);
    assert!(
        !held.state.iter().any(|k| k == "qbox.snapshot.scope"),
        "{held:?}"
    );
}

#[test]
fn snapshot_access_only_leaves_out_the_refresh_token_and_the_client_secret() {
    let home = TestHome::new();
    let store = home.login(Flavor::AmazonQ, &valid_login("ao"));
    let before = file_bytes(&store);

    let dir = home.path().join("access-only");
    home.qbox()
        .args(["snapshot", dir.to_str().unwrap(), "--access-only"])
        .run()
        .assert_code(0);
    let access_only = held(&dir.join("data.sqlite3"), "ao");
    assert_access_only(&access_only, "ao");

    // Plain `snapshot` keeps today's full copy, and so does --refreshable.
    for flags in [&[][..], &["--refreshable"][..]] {
        let dir = home.path().join(format!("full{}", flags.len()));
        home.qbox()
            .args(["snapshot", dir.to_str().unwrap()])
            .args(flags.iter().copied())
            .run()
            .assert_code(0);
        assert_refreshable(&held(&dir.join("data.sqlite3"), "ao"), "ao");
    }

    // The two scopes exclude each other: a usage error, nothing written.
    let both = home.path().join("both");
    let run = home
        .qbox()
        .args([
            "snapshot",
            both.to_str().unwrap(),
            "--access-only",
            "--refreshable",
        ])
        .run();
    run.assert_code(2);
    assert!(run.stderr.contains("cannot be used with"), "{}", run.stderr);
    assert!(!both.exists());

    // doctor names the copy for what it is.
    let doctor = home
        .qbox()
        .args(["--db", dir.join("data.sqlite3").to_str().unwrap(), "doctor"])
        .run();
    doctor.assert_code(0);
    assert!(
        doctor.stdout.contains("access-only snapshot")
            || doctor.stderr.contains("access-only snapshot"),
        "{}{}",
        doctor.stdout,
        doctor.stderr
    );
    assert_eq!(file_bytes(&store), before, "the host store is unchanged");
}

#[test]
fn snapshot_watch_keeps_an_access_only_copy_unless_refreshable() {
    let home = TestHome::new();
    let store = home.login(Flavor::AmazonQ, &valid_login("aow"));
    let before = file_bytes(&store);
    for (flags, refreshable) in [(&[][..], false), (&["--refreshable"][..], true)] {
        let dir = home.path().join(format!("watched-{refreshable}"));
        let snapshot = dir.join("data.sqlite3");
        let child = home
            .qbox()
            .args([
                "snapshot",
                dir.to_str().unwrap(),
                "--watch",
                "--interval",
                "100ms",
            ])
            .args(flags.iter().copied())
            .command()
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let _keeper = KillOnDrop::new(child);
        wait_until(Duration::from_secs(20), "the snapshot is written", || {
            snapshot.exists().then_some(())
        });
        let held = held(&snapshot, "aow");
        if refreshable {
            assert_refreshable(&held, "aow");
        } else {
            assert_access_only(&held, "aow");
        }
    }
    assert_eq!(file_bytes(&store), before, "the host store is unchanged");
}

/// An access-only snapshot of a login whose token expired ten minutes ago,
/// written without refreshing (as a host keeper that stopped leaves it).
fn expired_access_only(home: &TestHome) -> PathBuf {
    home.login(Flavor::AmazonQ, &expired_login("aox"));
    let dir = home.path().join("stale");
    home.qbox()
        .args([
            "snapshot",
            dir.to_str().unwrap(),
            "--access-only",
            "--no-refresh",
        ])
        .run()
        .assert_code(0);
    dir.join("data.sqlite3")
}

#[test]
fn an_expired_access_only_copy_sends_health_to_the_host_keeper() {
    let home = TestHome::new();
    let snapshot = expired_access_only(&home);
    let run = home
        .sidecar()
        .args(["--db", snapshot.to_str().unwrap(), "health"])
        .run();
    run.assert_code(4);
    assert!(run.stderr.contains(KEEPER_MESSAGE), "{}", run.stderr);
    // The hint names the copy and how to get a fresh one.
    assert!(run.stderr.contains("--watch"), "{}", run.stderr);

    // `qbox chat` on the copy says the same, and refreshes nothing.
    let before = file_bytes(&snapshot);
    let chat = home
        .qbox()
        .args(["--db", snapshot.to_str().unwrap(), "chat", "hello"])
        .run();
    chat.assert_code(4);
    assert!(chat.stderr.contains(KEEPER_MESSAGE), "{}", chat.stderr);
    assert_eq!(file_bytes(&snapshot), before);
}

/// Calls `tool` on `qbox-sidecar --db SNAPSHOT serve` over stdio with the
/// agent enabled (the fake CLI as `q`); returns the JSON report.
fn call_over_stdio(
    home: &TestHome,
    snapshot: &Path,
    tool: &str,
    prompt: &str,
) -> serde_json::Value {
    let output = home
        .sidecar()
        .env("ENABLE_ADDITIONAL_TOOLS", "q-developer-agent")
        .env("QBOX_AGENT_CLI", fake_q())
        .args([
            "call",
            tool,
            "-a",
            &format!("prompt={prompt}"),
            "--json",
            "--",
            env!("CARGO_BIN_EXE_qbox-sidecar"),
            "--db",
            snapshot.to_str().unwrap(),
            "serve",
        ])
        .command()
        .output()
        .unwrap();
    serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
        panic!(
            "no JSON report ({:?}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

#[test]
fn an_expired_access_only_copy_is_an_error_result_from_q_chat_and_the_agent() {
    let home = TestHome::new();
    let snapshot = expired_access_only(&home);
    let before = file_bytes(&snapshot);
    for tool in ["q-chat", "q-developer-agent"] {
        let report = call_over_stdio(&home, &snapshot, tool, "login:hello");
        assert_eq!(report["isError"], true, "{tool}: {report}");
        let text = report["text"].as_str().unwrap_or_default();
        assert!(text.contains(KEEPER_MESSAGE), "{tool}: {report}");
    }
    assert_eq!(file_bytes(&snapshot), before, "nothing wrote to the copy");
}

#[test]
fn the_fake_cli_checks_its_login_as_the_real_one_does() {
    // Valid access-only copy: used as it is, no registration needed.
    let home = TestHome::new();
    home.login(Flavor::AmazonQ, &valid_login("aof"));
    let data = home.path().join("cli-data");
    home.qbox()
        .args([
            "snapshot",
            data.join("amazon-q").to_str().unwrap(),
            "--access-only",
        ])
        .run()
        .assert_code(0);
    let fake = |data: &Path| {
        Command::new(fake_q())
            .args(["chat", "--no-interactive", "--", "login:answered"])
            .env("XDG_DATA_HOME", data)
            .output()
            .unwrap()
    };
    let output = fake(&data);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "answered\n");

    // Expired and no refresh token: the upstream "not logged in", exit 1.
    let home = TestHome::new();
    let stale = expired_access_only(&home);
    let stale_data = home.path().join("stale-data");
    std::fs::create_dir_all(stale_data.join("amazon-q")).unwrap();
    std::fs::copy(&stale, stale_data.join("amazon-q/data.sqlite3")).unwrap();
    let output = fake(&stale_data);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("You are not logged in, please log in with q login"),
        "{output:?}"
    );
}

#[test]
fn qbox_run_mounts_an_access_only_snapshot_unless_refreshable() {
    let Some(image) = crate::run_mcp::dev_image() else {
        return;
    };
    let _turn = crate::util::engine_turn();
    let home = TestHome::new();
    let store = home.login(Flavor::AmazonQ, &valid_login("aor"));
    let before = file_bytes(&store);
    // Inside: grep for the secrets, copy the snapshot out through a mount,
    // and let the fake CLI find its writable copy where the real one looks
    // (qbox run points XDG_DATA_HOME at it); the copy holds what the
    // snapshot holds.
    let script = "grep -q aor-refresh-aor \"$QBOX_DB\" && echo has-refresh-token; \
                  grep -q fixture-client-secret \"$QBOX_DB\" && echo has-client-secret; \
                  grep -q aor-refresh-aor \"$XDG_DATA_HOME/amazon-q/data.sqlite3\" && echo copy-has-refresh-token; \
                  cat \"$QBOX_DB\" > /out/data.sqlite3; \
                  q chat --no-interactive -- login:cli-logged-in";
    for refreshable in [false, true] {
        let out = home.path().join(format!("out-{refreshable}"));
        std::fs::create_dir_all(&out).unwrap();
        let mut args = vec!["-v".to_owned(), format!("{}:/out", out.display())];
        if refreshable {
            args.push("--refreshable".to_owned());
        }
        args.extend([image, "--", "sh", "-c", script].map(str::to_owned));
        let run =
            crate::container::qbox_run(&home, &args.iter().map(String::as_str).collect::<Vec<_>>())
                .run();
        run.assert_code(0);
        assert!(
            run.stdout.contains("cli-logged-in"),
            "{}{}",
            run.stdout,
            run.stderr
        );
        assert_eq!(
            run.stdout.contains("has-refresh-token"),
            refreshable,
            "{}",
            run.stdout
        );
        assert_eq!(
            run.stdout.contains("has-client-secret"),
            refreshable,
            "{}",
            run.stdout
        );
        // The container's writable copy keeps the run's least privilege.
        assert_eq!(
            run.stdout.contains("copy-has-refresh-token"),
            refreshable,
            "{}",
            run.stdout
        );
        let held = held(&out.join("data.sqlite3"), "aor");
        if refreshable {
            assert_refreshable(&held, "aor");
        } else {
            assert_access_only(&held, "aor");
        }
    }
    assert_eq!(file_bytes(&store), before, "the host store is unchanged");
}
