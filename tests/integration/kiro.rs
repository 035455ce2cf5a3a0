//! The Kiro CLI as it reads a store and calls the service (2.2.1,
//! `crates/chat-cli/src/auth/mod.rs`, `api_client/`): which login wins, the
//! `TokenType` header and profile ARN per kind of login (checked by the
//! stand-in service, which refuses a mismatch), GovCloud and `cli.json`
//! endpoints, Kiro API keys, and the agent choosing `kiro-cli`.

use std::path::{Path, PathBuf};

use qbox::standin::q::StandinQ;
use qbox::store::Flavor;
use qbox::store::schema::StoreBuilder;
use serde_json::{Value, json};

use crate::mcp_client::{StdioMcp, fake_q};
use crate::util::{TestHome, valid_login};

const SOCIAL_KEY: &str = "kirocli:social:token";
const IDP_KEY: &str = "kirocli:external-idp:token";
const IDC_ARN: &str = "arn:aws:codewhisperer:us-east-1:111122223333:profile/IDC";
const BUILDER_ID_ARN: &str = "arn:aws:codewhisperer:us-east-1:638616132270:profile/AAAACCCCXXXX";
const API_KEY: &str = "ksk_standinKeyForTests0123";

fn in_an_hour() -> String {
    qbox::timefmt::rfc3339(time::OffsetDateTime::now_utc() + time::Duration::hours(1))
}

fn social_token(access: &str, profile_arn: Option<&str>) -> String {
    let mut token = json!({
        "access_token": access,
        "expires_at": in_an_hour(),
        "refresh_token": "social-refresh",
        "provider": "github",
    });
    if let Some(arn) = profile_arn {
        token["profile_arn"] = arn.into();
    }
    token.to_string()
}

fn idp_token(access: &str) -> String {
    json!({
        "access_token": access,
        "expires_at": in_an_hour(),
        "refresh_token": "idp-refresh",
        "issuer_url": "https://idp.example.com",
        "token_endpoint": "https://idp.example.com/token",
        "client_id": "idp-client",
    })
    .to_string()
}

/// An empty Kiro store at its default place, for rows added by hand.
fn kiro_store(home: &TestHome) -> StoreBuilder {
    let path = home.store_path(Flavor::Kiro);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    StoreBuilder::create(&path, Flavor::Kiro).unwrap()
}

/// Adds (or replaces) an `auth_kv` row, as the CLI writes one.
fn put_auth(path: &Path, key: &str, value: &str) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute(
        "INSERT OR REPLACE INTO auth_kv (key, value) VALUES (?1, ?2)",
        [key, value],
    )
    .unwrap();
}

fn profile_row(arn: &str) -> String {
    json!({"arn": arn, "profile_name": "P"}).to_string()
}

async fn chat(home: &TestHome, q: &StandinQ) -> crate::util::Run {
    home.qbox()
        .env("QBOX_Q_ENDPOINT", q.url())
        .args(["chat", "--", "hello kiro"])
        .run_async()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_login_kind_is_sent_as_the_kiro_cli_sends_it() {
    // (kind, access token, TokenType, profileArn in the body)
    type Case = (
        &'static str,
        &'static str,
        Option<&'static str>,
        Option<&'static str>,
    );
    let cases: [Case; 5] = [
        ("builder-id", "aoa-kiro-bid", None, Some(BUILDER_ID_ARN)),
        ("identity-center", "aoa-kiro-idc", None, Some(IDC_ARN)),
        ("kiro-social", "social-access", None, Some(IDC_ARN)),
        (
            "external-idp",
            "idp-access",
            Some("EXTERNAL_IDP"),
            Some(IDC_ARN),
        ),
        ("amazon-q builder-id", "aoa-q-bid", None, None),
    ];
    for (kind, access, token_type, arn) in cases {
        let home = TestHome::new();
        match kind {
            "builder-id" | "identity-center" => {
                let mut login = valid_login("kiro");
                login.access_token = access.into();
                if kind == "identity-center" {
                    login.start_url = "https://d-1234.awsapps.com/start".into();
                    login.profile_arn = Some(IDC_ARN.into());
                }
                home.login(Flavor::Kiro, &login);
            }
            "kiro-social" => {
                let store = kiro_store(&home);
                store
                    .auth_kv(SOCIAL_KEY, &social_token(access, Some(IDC_ARN)))
                    .unwrap();
                store
                    .state("api.codewhisperer.profile", &profile_row(IDC_ARN))
                    .unwrap();
            }
            "external-idp" => {
                let store = kiro_store(&home);
                store.auth_kv(IDP_KEY, &idp_token(access)).unwrap();
                store
                    .state("api.codewhisperer.profile", &profile_row(IDC_ARN))
                    .unwrap();
            }
            _ => {
                let mut login = valid_login("q");
                login.access_token = access.into();
                home.login(Flavor::AmazonQ, &login);
            }
        }
        let q = StandinQ::start(access).await.unwrap();
        q.set_token_type(token_type);
        let run = chat(&home, &q).await;
        assert_eq!(run.code, 0, "{kind}: {}", run.stderr);
        assert_eq!(run.stdout, "You said: hello kiro\n", "{kind}");
        let request = &q.requests()[0];
        assert_eq!(request.token_type.as_deref(), token_type, "{kind}");
        assert_eq!(
            request.body.get("profileArn").and_then(Value::as_str),
            arn,
            "{kind}"
        );

        // The stand-in is strict: a request without the header an external
        // IdP token needs (or with one another kind must not send) fails.
        q.set_token_type(if token_type.is_some() {
            None
        } else {
            Some("EXTERNAL_IDP")
        });
        assert_eq!(chat(&home, &q).await.code, 1, "{kind}");
    }
}

#[test]
fn of_several_logins_the_kiro_cli_uses_the_external_idp_then_oidc_then_social() {
    let home = TestHome::new();
    let mut login = valid_login("both");
    login.access_token = "aoa-oidc-access".into();
    let path = home.login(Flavor::Kiro, &login);
    put_auth(
        &path,
        SOCIAL_KEY,
        &social_token("social-access", Some(IDC_ARN)),
    );
    let run = home
        .qbox()
        .args(["export-token", "--field", "access", "--no-refresh"])
        .run();
    assert_eq!(run.stdout.trim(), "aoa-oidc-access", "{}", run.stderr);

    put_auth(&path, IDP_KEY, &idp_token("idp-access"));
    let run = home
        .qbox()
        .args(["export-token", "--field", "access", "--no-refresh"])
        .run();
    assert_eq!(run.stdout.trim(), "idp-access", "{}", run.stderr);

    let doctor = home.qbox().args(["doctor", "--json"]).run();
    let report: Value = serde_json::from_str(&doctor.stdout).unwrap();
    assert_eq!(report["login_kind"], "external-idp");
    let passed = report["passed_over"].to_string();
    assert!(passed.contains("kirocli:odic:token"), "{passed}");
    assert!(passed.contains("kirocli:social:token"), "{passed}");
    assert!(!passed.contains("aoa-oidc-access"), "{passed}");
    let text = home.qbox().args(["doctor"]).run();
    assert!(text.stdout.contains("not used"), "{}", text.stdout);
}

#[test]
fn a_social_login_without_a_profile_arn_is_no_login() {
    let home = TestHome::new();
    let store = kiro_store(&home);
    store
        .auth_kv(SOCIAL_KEY, &social_token("social-access", None))
        .unwrap();
    let doctor = home.qbox().args(["doctor", "--json"]).run();
    assert_eq!(doctor.code, 4, "{}", doctor.stdout);
    let report: Value = serde_json::from_str(&doctor.stdout).unwrap();
    assert_eq!(report["token"]["state"], "missing");
    assert!(
        report["passed_over"][0]
            .as_str()
            .unwrap()
            .contains("without a profile ARN"),
        "{report}"
    );
    let export = home.qbox().args(["export-token"]).run();
    assert_eq!(export.code, 4);
    assert!(export.stdout.is_empty());
    // qbox never deletes it, as the CLI would.
    let conn = rusqlite::Connection::open(home.store_path(Flavor::Kiro)).unwrap();
    let rows: i64 = conn
        .query_row(
            "SELECT count(*) FROM auth_kv WHERE key = ?1",
            [SOCIAL_KEY],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(rows, 1);
}

#[test]
fn a_store_with_both_clis_logins_is_read_as_the_kiro_clis() {
    let home = TestHome::new();
    let path = home.path().join("both.sqlite3");
    let mut q_login = valid_login("legacy");
    q_login.access_token = "aoa-legacy".into();
    StoreBuilder::create(&path, Flavor::AmazonQ)
        .unwrap()
        .login(&q_login)
        .unwrap();
    let mut kiro_login = valid_login("kiro");
    kiro_login.access_token = "aoa-kiro".into();
    put_auth(&path, Flavor::Kiro.token_key(), &kiro_login.token_json());
    let db = path.to_str().unwrap();
    let run = home
        .qbox()
        .args([
            "--db",
            db,
            "export-token",
            "--field",
            "access",
            "--no-refresh",
        ])
        .run();
    assert_eq!(run.stdout.trim(), "aoa-kiro", "{}", run.stderr);
    let doctor = home.qbox().args(["--db", db, "doctor", "--json"]).run();
    let report: Value = serde_json::from_str(&doctor.stdout).unwrap();
    assert_eq!(report["store"]["flavor"], "kiro");
    assert!(
        report["passed_over"]
            .to_string()
            .contains("Amazon Q Developer CLI"),
        "{report}"
    );
    // --cli q still picks the legacy login.
    let legacy = home
        .qbox()
        .args([
            "--db",
            db,
            "--cli",
            "q",
            "export-token",
            "--field",
            "access",
            "--no-refresh",
        ])
        .run();
    assert_eq!(legacy.stdout.trim(), "aoa-legacy", "{}", legacy.stderr);
}

#[test]
fn govcloud_profiles_go_to_govcloud_and_the_clis_settings_override_the_endpoint() {
    let home = TestHome::new();
    let mut login = valid_login("gov");
    login.start_url = "https://start.us-gov-home.awsapps.com/directory/d-1".into();
    login.profile_arn = Some("arn:aws-us-gov:codewhisperer:us-gov-west-1:1:profile/G".into());
    home.login(Flavor::Kiro, &login);
    let endpoint = |home: &TestHome| {
        let doctor = home.qbox().args(["doctor", "--json"]).run();
        let report: Value = serde_json::from_str(&doctor.stdout).unwrap();
        report["chatEndpoint"].clone()
    };
    let gov = endpoint(&home);
    assert_eq!(gov["url"], "https://q.us-gov-west-1.amazonaws.com", "{gov}");
    assert_eq!(gov["reason"], "from profile ARN");

    let settings = home.path().join(".kiro/settings");
    std::fs::create_dir_all(&settings).unwrap();
    std::fs::write(
        settings.join("cli.json"),
        r#"{"api.codewhisperer.service":{"endpoint":"http://127.0.0.1:9/","region":"us-east-1"}}"#,
    )
    .unwrap();
    let overridden = endpoint(&home);
    assert_eq!(overridden["url"], "http://127.0.0.1:9", "{overridden}");
    assert_eq!(overridden["reason"], "CLI settings");
    // QBOX_Q_ENDPOINT still wins.
    let doctor = home
        .qbox()
        .env("QBOX_Q_ENDPOINT", "http://127.0.0.1:8")
        .args(["doctor", "--json"])
        .run();
    let report: Value = serde_json::from_str(&doctor.stdout).unwrap();
    assert_eq!(report["chatEndpoint"]["reason"], "QBOX_Q_ENDPOINT");

    // A broken settings file is ignored with a warning; the login works.
    std::fs::write(settings.join("cli.json"), "{not json").unwrap();
    let doctor = home.qbox().args(["doctor", "--json"]).run();
    assert_eq!(doctor.code, 0, "{}", doctor.stderr);
    let report: Value = serde_json::from_str(&doctor.stdout).unwrap();
    assert!(
        report["cli_settings"]["ignored"]
            .as_str()
            .unwrap()
            .starts_with("it is not JSON")
    );
    assert_eq!(
        report["chatEndpoint"]["url"],
        "https://q.us-gov-west-1.amazonaws.com"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_follows_the_kiro_clis_endpoint_setting() {
    let home = TestHome::new();
    let mut login = valid_login("settings");
    login.access_token = "aoa-settings".into();
    home.login(Flavor::Kiro, &login);
    let q = StandinQ::start("aoa-settings").await.unwrap();
    let settings = home.path().join(".kiro/settings");
    std::fs::create_dir_all(&settings).unwrap();
    std::fs::write(
        settings.join("cli.json"),
        json!({"api.codewhisperer.service": {"endpoint": q.url(), "region": "us-east-1"}})
            .to_string(),
    )
    .unwrap();
    let run = home
        .qbox()
        .args(["chat", "--", "via settings"])
        .run_async()
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, "You said: via settings\n");
    // The Kiro CLI sends the profile under an override too.
    assert_eq!(q.requests()[0].body["profileArn"], BUILDER_ID_ARN);
}

/// A home with no store at all, as on a hosted CI runner.
fn keyed(home: &TestHome, q: &StandinQ, key: &str) -> crate::util::Qbox {
    home.qbox()
        .env("QBOX_Q_ENDPOINT", q.url())
        .env("KIRO_API_KEY", key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kiro_api_key_serves_chat_and_doctor_when_no_store_login_does() {
    let home = TestHome::new();
    let q = StandinQ::start(API_KEY).await.unwrap();
    q.set_token_type(Some("API_KEY"));
    let run = keyed(&home, &q, API_KEY)
        .args(["chat", "--", "keyed"])
        .run_async()
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, "You said: keyed\n");
    let request = &q.requests()[0];
    assert_eq!(
        request.authorization.as_deref(),
        Some(&*format!("Bearer {API_KEY}"))
    );
    assert_eq!(request.token_type.as_deref(), Some("API_KEY"));
    assert!(request.body.get("profileArn").is_none(), "{}", request.body);

    let doctor = keyed(&home, &q, API_KEY).args(["doctor", "--json"]).run();
    assert_eq!(doctor.code, 0, "{}", doctor.stdout);
    assert!(!doctor.stdout.contains(API_KEY), "doctor printed the key");
    let report: Value = serde_json::from_str(&doctor.stdout).unwrap();
    assert_eq!(report["api_key"]["variable"], "KIRO_API_KEY");
    assert_eq!(report["api_key"]["used"], true);
    assert_eq!(report["chatEndpoint"]["credentials"], "KIRO_API_KEY");
    let text = keyed(&home, &q, API_KEY).args(["doctor"]).run();
    assert!(
        text.stdout.contains("Kiro API key from KIRO_API_KEY"),
        "{}",
        text.stdout
    );
    assert!(!text.stdout.contains(API_KEY));

    // A stored login wins over the key, as in the Kiro CLI.
    let mut login = valid_login("stored");
    login.access_token = "aoa-stored-wins".into();
    home.login(Flavor::Kiro, &login);
    q.set_token("aoa-stored-wins");
    q.set_token_type(None);
    let run = keyed(&home, &q, API_KEY)
        .args(["chat", "--", "stored"])
        .run_async()
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        q.requests().last().unwrap().authorization.as_deref(),
        Some("Bearer aoa-stored-wins")
    );
    let doctor = keyed(&home, &q, API_KEY).args(["doctor", "--json"]).run();
    let report: Value = serde_json::from_str(&doctor.stdout).unwrap();
    assert_eq!(report["api_key"]["used"], false);
    assert!(report["api_key"]["note"].as_str().unwrap().contains("wins"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_and_rejected_keys_are_one_line_errors_that_never_show_the_key() {
    let home = TestHome::new();
    let q = StandinQ::start(API_KEY).await.unwrap();
    q.set_token_type(Some("API_KEY"));
    for (key, code, needle) in [
        ("", 2, "the Kiro API key in KIRO_API_KEY is set but empty"),
        (
            "aoaNotAKiroKey123456",
            2,
            "the Kiro API key in KIRO_API_KEY is not one",
        ),
        (
            "ksk_rejectedByTheService99",
            4,
            "amazon q refused the Kiro API key in KIRO_API_KEY",
        ),
    ] {
        let run = keyed(&home, &q, key)
            .args(["chat", "--", "x"])
            .run_async()
            .await;
        assert_eq!(run.code, code, "{key}: {}", run.stderr);
        run.assert_one_line_error();
        assert!(run.stderr.contains(needle), "{key}: {}", run.stderr);
        if !key.is_empty() {
            assert!(
                !run.stderr.contains(key),
                "the key was echoed: {}",
                run.stderr
            );
        }
        assert!(run.stderr.contains("hint:"), "{}", run.stderr);
    }

    // A key file others can read is refused as a store would be.
    let file = home.path().join("kiro-api-key");
    std::fs::write(&file, API_KEY).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let loose = home
        .qbox()
        .env("QBOX_Q_ENDPOINT", q.url())
        .env("QBOX_API_KEY_FILE", &file)
        .args(["chat", "--", "x"])
        .run_async()
        .await;
    assert_eq!(loose.code, 2, "{}", loose.stderr);
    assert!(loose.stderr.contains("mode 0644"), "{}", loose.stderr);
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let private = home
        .qbox()
        .env("QBOX_Q_ENDPOINT", q.url())
        .env("QBOX_API_KEY_FILE", &file)
        .args(["chat", "--", "from a file"])
        .run_async()
        .await;
    assert_eq!(private.code, 0, "{}", private.stderr);
    assert_eq!(private.stdout, "You said: from a file\n");
}

/// A directory on PATH holding the fake CLI under `names`.
fn cli_dir(home: &TestHome, names: &[&str]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = home.path().join("bin");
    std::fs::create_dir_all(&dir).unwrap();
    for name in names {
        let path = dir.join(name);
        std::fs::copy(fake_q(), &path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_and_q_chat_serve_a_key_and_the_agent_runs_kiro_cli() {
    let home = TestHome::new();
    let q = StandinQ::start(API_KEY).await.unwrap();
    q.set_token_type(Some("API_KEY"));
    let bin = cli_dir(&home, &["q", "kiro-cli"]);
    let record = home.path().join("record");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let mut mcp = StdioMcp::start(
        home.path(),
        &[
            ("PATH", path),
            ("QBOX_Q_ENDPOINT", q.url()),
            ("KIRO_API_KEY", API_KEY.into()),
            ("ENABLE_ADDITIONAL_TOOLS", "q-developer-agent".into()),
            ("QBOX_AGENT_PASS_ENV", "FAKE_Q_RECORD".into()),
            ("FAKE_Q_RECORD", record.display().to_string()),
        ],
    );
    let (text, is_error, _) = mcp.call("q-chat", json!({"prompt": "keyed chat"}));
    assert!(!is_error, "{text}");
    assert_eq!(text, "You said: keyed chat");
    let (text, is_error, _) = mcp.call("q-developer-agent", json!({"prompt": "print:agent"}));
    assert!(!is_error, "{text}");
    // The Kiro CLI ran (not `q`, which is first on PATH's order of names
    // only for an Amazon Q login), with the key in its own environment.
    let ran = std::fs::read_to_string(record.join("self")).unwrap();
    assert_eq!(ran.trim(), bin.join("kiro-cli").display().to_string());
    let env = std::fs::read_to_string(record.join("env")).unwrap();
    assert!(env.contains(&format!("KIRO_API_KEY={API_KEY}")), "{env}");
}

#[test]
fn the_agent_runs_the_cli_of_the_login_it_serves() {
    for (flavor, expected) in [(Flavor::AmazonQ, "q"), (Flavor::Kiro, "kiro-cli")] {
        let home = TestHome::new();
        let bin = cli_dir(&home, &["q", "kiro-cli"]);
        let snapshot_dir = home.path().join("snap");
        std::fs::create_dir_all(&snapshot_dir).unwrap();
        let snapshot = snapshot_dir.join("data.sqlite3");
        StoreBuilder::create(&snapshot, flavor)
            .unwrap()
            .login(&valid_login("agent"))
            .unwrap();
        let record = home.path().join("record");
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
        let mut mcp = StdioMcp::start(
            home.path(),
            &[
                ("PATH", path),
                ("QBOX_DB", snapshot.display().to_string()),
                ("ENABLE_ADDITIONAL_TOOLS", "q-developer-agent".into()),
                ("QBOX_AGENT_PASS_ENV", "FAKE_Q_RECORD".into()),
                ("FAKE_Q_RECORD", record.display().to_string()),
            ],
        );
        let (text, is_error, _) = mcp.call("q-developer-agent", json!({"prompt": "login:ok"}));
        assert!(!is_error, "{flavor:?}: {text}");
        let ran = std::fs::read_to_string(record.join("self")).unwrap();
        assert_eq!(
            ran.trim(),
            bin.join(expected).display().to_string(),
            "{flavor:?}"
        );
    }
}

#[test]
fn an_agent_with_no_cli_on_path_names_the_kiro_cli() {
    let home = TestHome::new();
    let empty = home.path().join("empty-bin");
    std::fs::create_dir_all(&empty).unwrap();
    let mut mcp = StdioMcp::start(
        home.path(),
        &[
            ("PATH", empty.display().to_string()),
            ("ENABLE_ADDITIONAL_TOOLS", "q-developer-agent".into()),
        ],
    );
    let (text, is_error, _) = mcp.call("q-developer-agent", json!({"prompt": "hi"}));
    assert!(is_error);
    assert!(
        text.starts_with(
            "no Kiro CLI was found on PATH (looked for kiro-cli, kiro-cli-chat, q, qchat)"
        ),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_social_login_is_refreshed_at_the_auth_service_the_kiro_clis_settings_name() {
    let kiro = qbox::standin::kiro::StandinKiro::start("social-refresh-s")
        .await
        .unwrap();
    let home = TestHome::new();
    let store = kiro_store(&home);
    let expired =
        qbox::timefmt::rfc3339(time::OffsetDateTime::now_utc() - time::Duration::minutes(5));
    let mut token: Value =
        serde_json::from_str(&social_token("social-old", Some(IDC_ARN))).unwrap();
    token["expires_at"] = expired.into();
    token["refresh_token"] = "social-refresh-s".into();
    store.auth_kv(SOCIAL_KEY, &token.to_string()).unwrap();
    store
        .state("api.codewhisperer.profile", &profile_row(IDC_ARN))
        .unwrap();
    let settings = home.path().join(".kiro/settings");
    std::fs::create_dir_all(&settings).unwrap();
    std::fs::write(
        settings.join("cli.json"),
        json!({"api.kiroauth.service": kiro.url()}).to_string(),
    )
    .unwrap();
    let run = home
        .qbox()
        .args(["export-token", "--field", "access"])
        .run_async()
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout.trim(), "standin-social-access-1");
    assert_eq!(kiro.requests().len(), 1);
}

/// `qbox run` with a Kiro API key and no store: the container reads the key
/// from a read-only file; neither its environment nor `docker inspect`
/// holds it.
#[test]
fn qbox_run_gives_a_container_the_key_as_a_file_and_nowhere_else() {
    let Some(image) = crate::container::engine_image() else {
        return;
    };
    let _turn = crate::util::engine_turn();
    let home = TestHome::new();
    let name = format!("qbox-test-kiro-key-{}", std::process::id());
    let run = crate::container::qbox_run(
        &home,
        &[
            "--keep",
            "--name",
            &name,
            image,
            "--",
            "sh",
            "-c",
            "cat \"$QBOX_API_KEY_FILE\"; echo; echo file=$QBOX_API_KEY_FILE; env; touch /run/qbox/auth/x 2>/dev/null && echo WRITABLE; true",
        ],
    )
    .env("KIRO_API_KEY", API_KEY)
    .run();
    let inspect = std::process::Command::new("docker")
        .args(["inspect", &name])
        .output()
        .unwrap();
    let _ = std::process::Command::new("docker")
        .args(["rm", "-f", &name])
        .output();
    assert_eq!(run.code, 0, "{}", run.stderr);
    let mut lines = run.stdout.lines();
    assert_eq!(lines.next(), Some(API_KEY), "{}", run.stdout);
    assert!(
        run.stdout.contains("file=/run/qbox/auth/kiro-api-key"),
        "{}",
        run.stdout
    );
    assert_eq!(
        run.stdout.matches(API_KEY).count(),
        1,
        "the key is in the environment: {}",
        run.stdout
    );
    assert!(
        !run.stdout.contains("WRITABLE"),
        "the key's mount is writable"
    );
    let inspect = String::from_utf8_lossy(&inspect.stdout);
    assert!(
        inspect.contains("QBOX_API_KEY_FILE=/run/qbox/auth/kiro-api-key"),
        "{inspect}"
    );
    assert!(!inspect.contains(API_KEY), "docker inspect shows the key");
    assert!(!run.stderr.contains(API_KEY));

    // Detached, a key alone is refused with a hint (nothing would remove it).
    let detached = crate::container::qbox_run(&home, &["-d", image, "--", "true"])
        .env("KIRO_API_KEY", API_KEY)
        .run();
    assert_eq!(detached.code, 2, "{}", detached.stderr);
    assert!(detached.stderr.contains("hint:"), "{}", detached.stderr);
}

/// What the Kiro CLI sends with every chat request and the service reads:
/// the model from its settings (a named one wins), the opt-out from its
/// settings, `envState`, and the SDKs' invocation and attempt headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_sends_what_the_kiro_cli_sends_from_its_settings() {
    let home = TestHome::new();
    let mut login = valid_login("settings2");
    login.access_token = "aoa-settings2".into();
    home.login(Flavor::Kiro, &login);
    let q = StandinQ::start("aoa-settings2").await.unwrap();
    let settings = home.path().join(".kiro/settings");
    std::fs::create_dir_all(&settings).unwrap();
    std::fs::write(
        settings.join("cli.json"),
        json!({"chat.defaultModel": "claude-from-settings",
               "codeWhisperer.shareCodeWhispererContentWithAWS": true})
        .to_string(),
    )
    .unwrap();
    let run = chat(&home, &q).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let request = q.requests().pop().unwrap();
    let message = &request.body["conversationState"]["currentMessage"]["userInputMessage"];
    assert_eq!(message["modelId"], "claude-from-settings");
    assert_eq!(request.optout.as_deref(), Some("false"), "the user shares");
    let env = &message["userInputMessageContext"]["envState"];
    assert_eq!(env["operatingSystem"], std::env::consts::OS);
    assert!(
        env["currentWorkingDirectory"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{env}"
    );
    let id = request.invocation_id.unwrap();
    assert!(
        qbox::qapi::conversation::parse_conversation_id(&id).is_ok(),
        "{id}"
    );
    assert_eq!(request.sdk_request.as_deref(), Some("attempt=1; max=3"));

    // A named model wins; the opt-out setting false keeps the content out,
    // and with no setting at all qbox keeps it out too.
    std::fs::write(
        settings.join("cli.json"),
        json!({"chat.defaultModel": "claude-from-settings",
               "codeWhisperer.shareCodeWhispererContentWithAWS": false})
        .to_string(),
    )
    .unwrap();
    let run = home
        .qbox()
        .env("QBOX_Q_ENDPOINT", q.url())
        .args(["chat", "--model", "named-model", "--", "x"])
        .run_async()
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let request = q.requests().pop().unwrap();
    assert_eq!(
        request.body["conversationState"]["currentMessage"]["userInputMessage"]["modelId"],
        "named-model"
    );
    assert_eq!(request.optout.as_deref(), Some("true"));
    std::fs::remove_file(settings.join("cli.json")).unwrap();
    let run = chat(&home, &q).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(q.requests().pop().unwrap().optout.as_deref(), Some("true"));
}
