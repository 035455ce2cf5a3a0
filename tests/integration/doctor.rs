//! `qbox doctor`: text and JSON reports, and exit codes.

use qbox::store::Flavor;
use serde_json::Value;

use crate::util::{TestHome, expired_login, valid_login};

fn doctor_json(home: &TestHome) -> (i32, Value) {
    let run = home.qbox().args(["doctor", "--json"]).run();
    let report: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("doctor --json is json ({e}):\n{}", run.stdout));
    (run.code, report)
}

#[test]
fn valid_login_is_ok() {
    let home = TestHome::new();
    let mut login = valid_login("doc");
    login.profile_arn = Some("arn:aws:codewhisperer:us-east-1:123456789012:profile/XYZ".into());
    let path = home.login(Flavor::Kiro, &login);
    let (code, report) = doctor_json(&home);
    assert_eq!(code, 0);
    assert_eq!(report["ok"], true);
    assert_eq!(report["store"]["path"], path.to_str().unwrap());
    assert_eq!(report["store"]["flavor"], "kiro");
    assert_eq!(report["token"]["state"], "valid");
    assert_eq!(report["registration"]["state"], "valid");
    assert_eq!(report["login_kind"], "identity-center");
    assert_eq!(report["profile"]["arn"], login.profile_arn.unwrap());
    assert_eq!(report["searched"].as_array().unwrap().len(), 2);
    // The Kiro CLI's store is searched first.
    assert_eq!(report["searched"][0]["flavor"], "kiro");
    assert_eq!(report["searched"][0]["exists"], true);
    assert_eq!(report["searched"][1]["exists"], false);
    assert_eq!(report["docker"]["available"], false);

    let text = home.qbox().args(["doctor"]).run();
    text.assert_code(0);
    assert!(text.stdout.contains("valid until"), "{}", text.stdout);
    assert!(text.stdout.contains("Kiro CLI"), "{}", text.stdout);
    assert!(text.stdout.contains("ok: a usable login is available"));
    assert!(
        !text.stdout.contains("aoa-access"),
        "doctor never prints tokens"
    );
}

#[test]
fn refreshable_and_unusable_tokens() {
    let home = TestHome::new();
    home.login(Flavor::AmazonQ, &expired_login("r"));
    let (code, report) = doctor_json(&home);
    assert_eq!(code, 0, "a refreshable login is usable");
    assert_eq!(report["token"]["state"], "refreshable");
    assert_eq!(report["login_kind"], "builder-id");

    let home = TestHome::new();
    let mut login = expired_login("u");
    login.refresh_token = None;
    home.login(Flavor::AmazonQ, &login);
    let (code, report) = doctor_json(&home);
    assert_eq!(code, 4);
    assert_eq!(report["token"]["state"], "unusable");
    assert_eq!(report["token"]["reason"], "the token has no refresh token");
}

#[test]
fn nothing_found_reports_searched_paths() {
    let home = TestHome::new();
    let (code, report) = doctor_json(&home);
    assert_eq!(code, 4);
    assert_eq!(report["ok"], false);
    assert!(report["store"].is_null());
    assert!(
        report["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no amazon q or kiro cli auth store found")
    );
    let text = home.qbox().args(["doctor"]).run();
    text.assert_code(4);
    assert!(text.stdout.contains("missing"), "{}", text.stdout);
    assert!(text.stdout.contains("not ready"), "{}", text.stdout);
}

#[test]
fn broken_store_exits_one() {
    let home = TestHome::new();
    let path = home.store_path(Flavor::AmazonQ);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, vec![7u8; 5000]).unwrap();
    let (code, report) = doctor_json(&home);
    assert_eq!(code, 1);
    assert!(
        report["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not an sqlite database")
    );
}

#[test]
fn reports_a_real_docker_engine() {
    let socket = std::path::Path::new("/var/run/docker.sock");
    if std::env::var_os("DOCKER_HOST").is_none() && !socket.exists() {
        assert!(
            std::env::var_os("QBOX_REQUIRE_DOCKER").is_none(),
            "QBOX_REQUIRE_DOCKER is set but no Docker engine socket exists"
        );
        eprintln!("SKIPPED reports_a_real_docker_engine: no Docker engine");
        return;
    }
    let home = TestHome::new();
    home.login(Flavor::AmazonQ, &valid_login("d"));
    let mut qbox = home.qbox().env_remove("DOCKER_HOST");
    if let Some(host) = std::env::var_os("DOCKER_HOST") {
        qbox = qbox.env("DOCKER_HOST", host);
    }
    let run = qbox.args(["doctor", "--json"]).run();
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["docker"]["available"], true, "{}", run.stdout);
    assert!(report["docker"]["version"].is_string());
}
