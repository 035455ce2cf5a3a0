//! Issue 11: the native client behaves as the Amazon Q Developer CLI does
//! against the real service: the endpoint rule, bare tokens with their
//! profile, conversations that carry their history, service errors as the
//! CLI classifies them, lenient events, the idle timeout, redirects, and
//! empty environment variables counting as unset. Every case runs the real
//! binaries against the stand-in Q service, which checks the history it
//! receives against what it answered.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use qbox::qapi::conversation::parse_conversation_id;
use qbox::standin::q::{Answer, ExceptionFrame, Reply, StandinQ};
use qbox::store::Flavor;
use qbox::store::schema::FixtureLogin;
use serde_json::{Value, json};

use crate::chat::chat;
use crate::mcp_client::StdioMcp;
use crate::util::{Run, TestHome, valid_login};

const IDC_START_URL: &str = "https://d-9067642ac7.awsapps.com/start";

fn idc_login(tag: &str, region: &str, profile_region: Option<&str>) -> FixtureLogin {
    let mut login = valid_login(tag);
    login.start_url = IDC_START_URL.into();
    login.region = region.into();
    login.profile_arn =
        profile_region.map(|r| format!("arn:aws:codewhisperer:{r}:123456789012:profile/IDC"));
    login
}

async fn run_command(mut command: Command) -> Run {
    tokio::task::spawn_blocking(move || {
        let output = command.output().expect("the binary runs");
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8(output.stdout).unwrap(),
            stderr: String::from_utf8(output.stderr).unwrap(),
        }
    })
    .await
    .unwrap()
}

/// The id `qbox chat` printed on stderr.
fn conversation_id(run: &Run) -> String {
    let id = run
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("conversation: "))
        .unwrap_or_else(|| panic!("no conversation id on stderr:\n{}", run.stderr));
    parse_conversation_id(id).expect("a UUID")
}

fn doctor_endpoint(home: &TestHome, env: &[(&str, &str)]) -> Value {
    let mut qbox = home.qbox().args(["doctor", "--json"]);
    for (name, value) in env {
        qbox = qbox.env(name, value);
    }
    let run = qbox.run();
    let report: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("doctor --json is json ({e}):\n{}", run.stdout));
    report["chatEndpoint"].clone()
}

#[test]
fn issue_11_doctor_shows_the_endpoint_rule_for_every_kind_of_login() {
    let us = "https://q.us-east-1.amazonaws.com";
    let eu = "https://q.eu-central-1.amazonaws.com";
    let cases = [
        ("builder id", valid_login("b"), us, "default"),
        (
            "identity center, profile in us-east-1",
            idc_login("i1", "us-east-1", Some("us-east-1")),
            us,
            "from profile ARN",
        ),
        (
            "identity center, profile in eu-central-1",
            idc_login("i2", "eu-west-1", Some("eu-central-1")),
            eu,
            "from profile ARN",
        ),
        (
            "identity center, profile in another region",
            idc_login("i3", "eu-west-1", Some("eu-west-1")),
            us,
            "default",
        ),
        (
            "identity center signed in from eu-west-1 without a profile",
            idc_login("i4", "eu-west-1", None),
            us,
            "default",
        ),
    ];
    for (name, login, url, reason) in cases {
        let home = TestHome::new();
        home.login(Flavor::AmazonQ, &login);
        let endpoint = doctor_endpoint(&home, &[]);
        assert_eq!(endpoint["url"], url, "{name}: {endpoint}");
        assert_eq!(endpoint["reason"], reason, "{name}: {endpoint}");
        assert_eq!(endpoint["credentials"], "store", "{name}");
        if name.contains("another region") {
            assert!(
                endpoint["note"].as_str().unwrap().contains("eu-west-1"),
                "{endpoint}"
            );
        }
        let text = home.qbox().args(["doctor"]).run();
        let line = text
            .stdout
            .lines()
            .find(|l| l.starts_with("q endpoint "))
            .unwrap_or_else(|| panic!("{name}: no endpoint line:\n{}", text.stdout));
        assert!(
            line.ends_with(&format!("{url} ({reason})")) || name.contains("another region"),
            "{name}: {line}"
        );
        assert!(
            line.contains(&format!(" {url} ({reason}")),
            "{name}: {line}"
        );
    }

    let home = TestHome::new();
    home.login(
        Flavor::AmazonQ,
        &idc_login("o", "us-east-1", Some("eu-central-1")),
    );
    let endpoint = doctor_endpoint(&home, &[("QBOX_Q_ENDPOINT", "http://127.0.0.1:9/")]);
    assert_eq!(endpoint["url"], "http://127.0.0.1:9");
    assert_eq!(endpoint["reason"], "QBOX_Q_ENDPOINT");

    // No store: the bare token's profile decides, and a broken one is named.
    let bare = TestHome::new();
    let endpoint = doctor_endpoint(
        &bare,
        &[
            ("QBOX_ACCESS_TOKEN", "t"),
            (
                "QBOX_PROFILE_ARN",
                "arn:aws:codewhisperer:eu-central-1:1:profile/P",
            ),
        ],
    );
    assert_eq!(endpoint["url"], eu);
    assert_eq!(endpoint["credentials"], "QBOX_ACCESS_TOKEN");
    let endpoint = doctor_endpoint(
        &bare,
        &[
            ("QBOX_ACCESS_TOKEN", "t"),
            ("QBOX_PROFILE_ARN", "profile/P"),
        ],
    );
    assert!(
        endpoint["error"]["message"]
            .as_str()
            .unwrap()
            .contains("QBOX_PROFILE_ARN=`profile/P` is not an ARN"),
        "{endpoint}"
    );
}

/// `qbox export-token --format env` as NAME=value pairs.
fn exported_env(home: &TestHome) -> Vec<(String, String)> {
    let run = home.qbox().args(["export-token", "--format", "env"]).run();
    run.assert_code(0);
    run.stdout
        .lines()
        .map(|line| {
            let (name, value) = line.split_once('=').unwrap();
            (name.to_owned(), value.to_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_11_export_env_round_trips_to_chat_for_builder_id_and_identity_center() {
    let cases = [
        ("builder id", valid_login("rt-b"), None),
        (
            "identity center",
            idc_login("rt-i", "eu-west-1", Some("eu-central-1")),
            Some("arn:aws:codewhisperer:eu-central-1:123456789012:profile/IDC"),
        ),
    ];
    for (name, login, profile_arn) in cases {
        let q = StandinQ::start(&login.access_token).await.unwrap();
        let host = TestHome::new();
        host.login(Flavor::AmazonQ, &login);
        let env = exported_env(&host);
        // Another machine: no store, only the exported variables.
        let ci = TestHome::new();
        let mut qbox = ci.qbox().env("QBOX_Q_ENDPOINT", q.url());
        let mut sidecar_chat = ci.sidecar().command();
        sidecar_chat.env("QBOX_Q_ENDPOINT", q.url());
        for (key, value) in &env {
            qbox = qbox.env(key, value);
            sidecar_chat.env(key, value);
        }
        let run = qbox.args(["chat", "from ci"]).run_async().await;
        run.assert_code(0);
        assert_eq!(run.stdout, "You said: from ci\n", "{name}");
        sidecar_chat.args(["chat", "from a sidecar"]);
        let run = run_command(sidecar_chat).await;
        run.assert_code(0);
        assert_eq!(run.stdout, "You said: from a sidecar\n", "{name}");

        let requests = q.requests();
        assert_eq!(requests.len(), 2, "{name}");
        for request in &requests {
            assert_eq!(
                request.authorization.as_deref(),
                Some(format!("Bearer {}", login.access_token).as_str())
            );
            match profile_arn {
                Some(arn) => assert_eq!(request.body["profileArn"], arn, "{name}"),
                None => assert!(request.body.get("profileArn").is_none(), "{name}"),
            }
        }
        // Without the override, the profile picks the endpoint, as on the host.
        let env_refs: Vec<(&str, &str)> =
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let endpoint = doctor_endpoint(&ci, &env_refs);
        let expected = if profile_arn.is_some() {
            "https://q.eu-central-1.amazonaws.com"
        } else {
            "https://q.us-east-1.amazonaws.com"
        };
        assert_eq!(endpoint["url"], expected, "{name}");
        assert_eq!(endpoint["credentials"], "QBOX_ACCESS_TOKEN");
    }

    // A profile that is not an ARN is a usage error before anything is sent.
    let q = StandinQ::start("t").await.unwrap();
    let ci = TestHome::new();
    let run = ci
        .qbox()
        .env("QBOX_Q_ENDPOINT", q.url())
        .env("QBOX_ACCESS_TOKEN", "t")
        .env("QBOX_PROFILE_ARN", "my-profile")
        .args(["chat", "hi"])
        .run_async()
        .await;
    run.assert_code(2)
        .assert_one_line_error()
        .assert_stderr_contains("QBOX_PROFILE_ARN=`my-profile` is not an ARN")
        .assert_stderr_contains("hint: use the value `qbox export-token --format env` prints");
    assert!(q.requests().is_empty());

    // An exported token past its expiry is refused before anything is sent.
    let expired = ci
        .qbox()
        .env("QBOX_Q_ENDPOINT", q.url())
        .env("QBOX_ACCESS_TOKEN", "t")
        .env("QBOX_TOKEN_EXPIRES_AT", "2020-01-01T00:00:00Z")
        .args(["chat", "hi"])
        .run_async()
        .await;
    expired
        .assert_code(4)
        .assert_one_line_error()
        .assert_stderr_contains("expired at 2020-01-01T00:00:00Z")
        .assert_stderr_contains("hint: export a fresh token");
    assert!(q.requests().is_empty());
}

fn history_contents(request: &Value) -> Vec<String> {
    request["conversationState"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let message = m
                .get("userInputMessage")
                .or_else(|| m.get("assistantResponseMessage"))
                .unwrap();
            message["content"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_11_three_turns_through_qbox_chat_carry_the_history() {
    let q = StandinQ::start("aoa-access-turns").await.unwrap();
    let home = TestHome::new();
    home.login(Flavor::AmazonQ, &valid_login("turns"));
    let first = chat(&home, &q, &["chat", "one"]).await;
    first.assert_code(0);
    let id = conversation_id(&first);
    for prompt in ["two", "three"] {
        let run = chat(&home, &q, &["chat", "--conversation-id", &id, prompt]).await;
        run.assert_code(0);
        assert_eq!(run.stdout, format!("You said: {prompt}\n"));
        assert_eq!(conversation_id(&run), id);
    }
    let requests = q.requests();
    assert_eq!(requests.len(), 3);
    for request in &requests {
        assert_eq!(request.body["conversationState"]["conversationId"], id);
    }
    assert!(history_contents(&requests[0].body).is_empty());
    assert_eq!(
        history_contents(&requests[2].body),
        ["one", "You said: one", "two", "You said: two"]
    );
    let history = requests[2].body["conversationState"]["history"]
        .as_array()
        .unwrap();
    assert!(history[0].get("userInputMessage").is_some());
    assert!(history[1]["assistantResponseMessage"]["messageId"].is_string());
    assert_eq!(
        q.conversation(&id).len(),
        3,
        "the stand-in accepted each history"
    );

    // The file: private, in a private directory, with all three turns.
    let dir = home.data_dir().join("qbox").join("conversations");
    let file = dir.join(format!("{id}.json"));
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&dir), 0o700);
    }
    let list = home
        .qbox()
        .args(["chat", "--list-conversations", "--format", "json"])
        .run();
    list.assert_code(0);
    let listed: Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(listed[0]["conversationId"], id);
    assert_eq!(listed[0]["turns"], 3);
    assert_eq!(listed[0]["title"], "one");
    let text = home.qbox().args(["chat", "--list-conversations"]).run();
    assert!(
        text.stdout.starts_with(&format!("{id}    3 turns")),
        "{}",
        text.stdout
    );

    // Bad ids: exit 2, nothing sent, nothing started.
    let not_uuid = chat(
        &home,
        &q,
        &["chat", "--conversation-id", "standin-conversation-1", "x"],
    )
    .await;
    not_uuid
        .assert_code(2)
        .assert_one_line_error()
        .assert_stderr_contains("is not a conversation id");
    let unknown_id = "0f8fad5b-d9cb-469f-a165-70867728950e";
    let unknown = chat(&home, &q, &["chat", "--conversation-id", unknown_id, "x"]).await;
    unknown
        .assert_code(2)
        .assert_one_line_error()
        .assert_stderr_contains(&format!("no conversation {unknown_id} in"));
    assert_eq!(q.requests().len(), 3);

    // A truncated file: a clear error, and the file is left as it was.
    let whole = std::fs::read(&file).unwrap();
    std::fs::write(&file, &whole[..whole.len() / 2]).unwrap();
    let corrupt = chat(&home, &q, &["chat", "--conversation-id", &id, "four"]).await;
    corrupt
        .assert_code(1)
        .assert_one_line_error()
        .assert_stderr_contains("is unreadable")
        .assert_stderr_contains("hint: the file is left as it is");
    assert_eq!(std::fs::read(&file).unwrap(), &whole[..whole.len() / 2]);
    std::fs::write(&file, &whole).unwrap();

    let forget = home.qbox().args(["chat", "--forget", &id]).run();
    forget.assert_code(0);
    assert!(!file.exists());
    let gone = chat(&home, &q, &["chat", "--conversation-id", &id, "four"]).await;
    gone.assert_code(2).assert_one_line_error();
    let forget_again = home.qbox().args(["chat", "--forget", &id]).run();
    forget_again.assert_code(2).assert_one_line_error();
}

/// Calls `q-chat`; returns (text, isError, conversationId).
fn q_chat(mcp: &mut StdioMcp, arguments: Value) -> (String, bool, String) {
    let (text, is_error, result) = mcp.call("q-chat", arguments);
    let id = result["structuredContent"]["conversationId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (text, is_error, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_11_three_turns_through_q_chat_over_mcp_carry_the_history() {
    let q = StandinQ::start("aoa-access-mcpturns").await.unwrap();
    let home = TestHome::new();
    home.login(Flavor::AmazonQ, &valid_login("mcpturns"));
    let state_dir = home.path().join("state");
    std::fs::create_dir(&state_dir).unwrap();
    let base_env = vec![
        ("QBOX_Q_ENDPOINT", q.url()),
        ("XDG_DATA_HOME", home.data_dir().display().to_string()),
    ];
    let mut with_state = base_env.clone();
    with_state.push(("QBOX_STATE_DIR", state_dir.display().to_string()));
    let home_path = home.path().to_owned();
    let id = tokio::task::spawn_blocking(move || {
        let mut mcp = StdioMcp::start(&home_path, &with_state);
        let (text, is_error, id) = q_chat(&mut mcp, json!({"prompt": "one"}));
        assert!(!is_error, "{text}");
        parse_conversation_id(&id).expect("a UUID");
        let (text, is_error, same) =
            q_chat(&mut mcp, json!({"prompt": "two", "conversation-id": id}));
        assert!(!is_error, "{text}");
        assert_eq!(
            (text.as_str(), same.as_str()),
            ("You said: two", id.as_str())
        );
        let (text, is_error, _) = q_chat(
            &mut mcp,
            json!({"prompt": "x", "conversation-id": "not-a-uuid"}),
        );
        assert!(
            is_error && text.contains("is not a conversation id"),
            "{text}"
        );
        let (text, is_error, _) = q_chat(
            &mut mcp,
            json!({"prompt": "x", "conversation-id": "0f8fad5b-d9cb-469f-a165-70867728950e"}),
        );
        assert!(is_error && text.contains("no conversation"), "{text}");
        drop(mcp);
        // A new sidecar process continues from QBOX_STATE_DIR.
        let mut again = StdioMcp::start(&home_path, &with_state);
        let (text, is_error, _) = q_chat(
            &mut again,
            json!({"prompt": "three", "conversation-id": id}),
        );
        assert!(!is_error, "{text}");
        assert_eq!(text, "You said: three");
        id
    })
    .await
    .unwrap();
    let requests = q.requests();
    assert_eq!(requests.len(), 3, "bad ids send nothing");
    assert_eq!(
        history_contents(&requests[2].body),
        ["one", "You said: one", "two", "You said: two"]
    );
    assert_eq!(q.conversation(&id).len(), 3);
    assert!(
        state_dir
            .join("conversations")
            .join(format!("{id}.json"))
            .exists()
    );

    // Without QBOX_STATE_DIR, conversations live in memory: a new process
    // does not know the id, and says how to keep conversations.
    let home_path = home.path().to_owned();
    tokio::task::spawn_blocking(move || {
        let mut memory = StdioMcp::start(&home_path, &base_env);
        let (text, is_error, _) = q_chat(
            &mut memory,
            json!({"prompt": "four", "conversation-id": id}),
        );
        assert!(is_error, "{text}");
        assert!(text.contains("QBOX_STATE_DIR"), "{text}");
        let (text, is_error, id) = q_chat(&mut memory, json!({"prompt": "a"}));
        assert!(!is_error, "{text}");
        let (text, is_error, _) =
            q_chat(&mut memory, json!({"prompt": "b", "conversation-id": id}));
        assert!(!is_error, "{text}");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_11_the_monthly_limit_is_reported_and_never_retried() {
    let q = StandinQ::start("aoa-access-monthly").await.unwrap();
    let home = TestHome::new();
    home.login(Flavor::AmazonQ, &valid_login("monthly"));
    q.set_monthly_limit(1);
    let chat = || chat(&home, &q, &["chat", "hi"]);
    chat().await.assert_code(0);
    let limited = chat().await;
    limited
        .assert_code(1)
        .assert_one_line_error()
        .assert_stderr_contains("error: monthly request limit reached")
        .assert_stderr_contains("hint: the login's monthly amazon q allowance is used up");
    assert_eq!(q.requests().len(), 2, "the limited request was sent once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_11_exception_frames_are_classified_from_their_payload() {
    let q = StandinQ::start("aoa-access-exc").await.unwrap();
    let home = TestHome::new();
    home.login(Flavor::AmazonQ, &valid_login("exc"));
    let cases = [
        (
            json!({"__type": "ThrottlingException", "message": "Maximum Request reached for this month.", "reason": "MONTHLY_REQUEST_COUNT"}),
            "monthly request limit reached",
            "hint: the login's monthly",
        ),
        (
            json!({"__type": "com.amazon.coral#ValidationException", "message": "Input is too long."}),
            "ended the answer with ValidationException: Input is too long.",
            "hint: the conversation is too long",
        ),
        (
            json!({"code": "ThrottlingException", "Message": "Too many requests"}),
            "ended the answer with ThrottlingException: Too many requests",
            "hint: too many requests",
        ),
    ];
    for (payload, message, hint) in cases {
        let mut answer = Answer::text(&["partial"]);
        // The header names only the modelled member, as the service's does.
        answer.exception_frame = Some(ExceptionFrame {
            header_type: "error".into(),
            payload: payload.clone(),
        });
        q.push(Reply::Answer(answer));
        let run = chat(&home, &q, &["chat", "hi"]).await;
        run.assert_code(1)
            .assert_one_line_error()
            .assert_stderr_contains(message)
            .assert_stderr_contains(hint);
        assert_eq!(run.stdout, "partial\n", "{payload}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_11_events_with_missing_fields_and_other_content_types_are_accepted() {
    let q = StandinQ::start("aoa-access-lenient").await.unwrap();
    let home = TestHome::new();
    home.login(Flavor::AmazonQ, &valid_login("lenient"));
    q.push(Reply::Answer(Answer::with_missing_fields(&["fine"])));
    let run = chat(&home, &q, &["chat", "--format", "json", "hi"]).await;
    run.assert_code(0);
    let events: Vec<Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let tool = events.iter().find(|e| e["type"] == "toolUseEvent").unwrap();
    assert_eq!(tool["payload"]["toolUseId"], "");
    assert_eq!(tool["payload"]["name"], "");
    let code = events.iter().find(|e| e["type"] == "codeEvent").unwrap();
    assert_eq!(code["payload"]["content"], "");

    let mut answer = Answer::text(&["typed ", "loosely"]);
    answer.content_type = "application/json".into();
    q.push(Reply::Answer(answer));
    let run = chat(&home, &q, &["chat", "hi"]).await;
    run.assert_code(0);
    assert_eq!(run.stdout, "typed loosely\n");

    q.push(Reply::WrongContentType);
    let run = chat(&home, &q, &["chat", "hi"]).await;
    run.assert_code(1)
        .assert_one_line_error()
        .assert_stderr_contains("content type `text/html` that is not an event stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_11_a_stalled_stream_times_out_within_the_configured_time() {
    let q = StandinQ::start("aoa-access-stall").await.unwrap();
    let home = TestHome::new();
    home.login(Flavor::AmazonQ, &valid_login("stall"));
    let mut answer = Answer::text(&["before the stall", "never sent"]);
    answer.stall_after_first = true;
    q.push(Reply::Answer(answer));
    let started = Instant::now();
    let run = home
        .qbox()
        .env("QBOX_Q_ENDPOINT", q.url())
        .env("QBOX_Q_TIMEOUT", "1")
        .args(["chat", "hi"])
        .run_async()
        .await;
    // One second of silence is the limit; the generous bound only proves
    // that the client gave up by itself instead of hanging.
    assert!(started.elapsed() < Duration::from_secs(30));
    run.assert_code(1)
        .assert_one_line_error()
        .assert_stderr_contains("sent nothing for 1 s in the middle of the answer")
        .assert_stderr_contains("QBOX_Q_TIMEOUT");
    assert_eq!(run.stdout, "before the stall\n");
    assert_eq!(
        q.requests().len(),
        1,
        "nothing is retried once the answer started"
    );

    let bad = home
        .qbox()
        .env("QBOX_Q_ENDPOINT", q.url())
        .env("QBOX_Q_TIMEOUT", "soon")
        .args(["chat", "hi"])
        .run_async()
        .await;
    bad.assert_code(2)
        .assert_one_line_error()
        .assert_stderr_contains("QBOX_Q_TIMEOUT=`soon`");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_11_a_redirect_is_an_error_naming_the_location() {
    let q = StandinQ::start("aoa-access-redirect").await.unwrap();
    let home = TestHome::new();
    home.login(Flavor::AmazonQ, &valid_login("redirect"));
    q.push(Reply::Redirect {
        status: 307,
        location: "https://login.example.com/sso?next=q".into(),
    });
    let run = chat(&home, &q, &["chat", "hi"]).await;
    run.assert_code(1)
        .assert_one_line_error()
        .assert_stderr_contains(
            "answered http 307 with a redirect to https://login.example.com/sso?next=q",
        )
        .assert_stderr_contains("hint: a proxy or captive portal");
    assert!(!run.stderr.contains("aoa-access"), "no token in errors");
    assert_eq!(q.requests().len(), 1, "neither followed nor retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_11_requests_carry_a_user_agent_in_the_sdk_style() {
    let q = StandinQ::start("aoa-access-ua").await.unwrap();
    let home = TestHome::new();
    home.login(Flavor::AmazonQ, &valid_login("ua"));
    chat(&home, &q, &["chat", "hi"]).await.assert_code(0);
    let request = &q.requests()[0];
    let agent = request.user_agent.as_deref().unwrap();
    assert!(
        agent.starts_with(concat!("qbox/", env!("CARGO_PKG_VERSION"), " os/")),
        "{agent}"
    );
    assert!(agent.ends_with(" lang/rust"), "{agent}");
    assert_eq!(
        request.optout.as_deref(),
        Some("true"),
        "the opt-out header stays"
    );
}

/// The variables in the README's environment table.
fn readme_variables() -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split("\n## Environment\n")
        .nth(1)
        .expect("README has an Environment section");
    let mut names = Vec::new();
    for line in section.lines().take_while(|l| !l.starts_with("## ")) {
        let Some(first_cell) = line.strip_prefix("| ").and_then(|l| l.split(" |").next()) else {
            continue;
        };
        for name in first_cell.split('`').skip(1).step_by(2) {
            names.push(name.to_owned());
        }
    }
    assert!(names.len() >= 10, "the table was read: {names:?}");
    names
}

/// Variables only the sidecar reads (its `--help` lists them).
const SIDECAR_VARIABLES: [&str; 8] = [
    "QBOX_SIDECAR_HTTP",
    "QBOX_SIDECAR_HEALTH_URL",
    "QBOX_MCP_URL",
    "QBOX_MCP_TOKEN",
    "QBOX_AGENT_CLI",
    "ENABLE_ADDITIONAL_TOOLS",
    "AGENT_TIMEOUT",
    "AGENT_MAX_RESPONSE_SIZE",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_11_empty_variables_count_as_unset() {
    let variables = readme_variables();
    for needed in [
        "QBOX_DB",
        "QBOX_Q_ENDPOINT",
        "QBOX_PROFILE_ARN",
        "QBOX_STATE_DIR",
    ] {
        assert!(variables.iter().any(|v| v == needed), "{needed} in README");
    }
    let q = StandinQ::start("aoa-access-empty").await.unwrap();
    let home = TestHome::new();
    home.login(Flavor::AmazonQ, &valid_login("empty"));

    // The issue's example: an empty QBOX_DB is no --db.
    let run = home
        .qbox()
        .env("QBOX_DB", "")
        .env("QBOX_Q_ENDPOINT", q.url())
        .args(["chat", "hi"])
        .run_async()
        .await;
    run.assert_code(0);

    // Every variable of the table empty at once: doctor finds the default
    // store and the default endpoint.
    let mut doctor = home.qbox().args(["doctor", "--json"]);
    for name in &variables {
        doctor = doctor.env(name, "");
    }
    let run = doctor.run_async().await;
    let report: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", run.stdout, run.stderr));
    assert_eq!(report["ok"], true, "{}", run.stdout);
    assert!(report["db_override"].is_null());
    assert_eq!(report["chatEndpoint"]["reason"], "default");
    assert!(!run.stderr.contains("warning"), "{}", run.stderr);

    // Chat through both binaries with every variable empty but the endpoint.
    let mut qbox = home.qbox();
    let mut sidecar_chat = home.sidecar().command();
    for name in variables
        .iter()
        .map(String::as_str)
        .chain(SIDECAR_VARIABLES)
    {
        qbox = qbox.env(name, "");
        sidecar_chat.env(name, "");
    }
    let run = qbox
        .env("QBOX_Q_ENDPOINT", q.url())
        .args(["chat", "all empty"])
        .run_async()
        .await;
    run.assert_code(0);
    assert_eq!(run.stdout, "You said: all empty\n");
    sidecar_chat
        .env("QBOX_Q_ENDPOINT", q.url())
        .args(["chat", "sidecar, all empty"]);
    let run = run_command(sidecar_chat).await;
    run.assert_code(0);
    assert_eq!(run.stdout, "You said: sidecar, all empty\n");

    // The sidecar's own options: empty means stdio, not a parse error.
    let mut health = home.sidecar().command();
    for name in variables
        .iter()
        .map(String::as_str)
        .chain(SIDECAR_VARIABLES)
    {
        health.env(name, "");
    }
    health.arg("health");
    let run = run_command(health).await;
    run.assert_code(0);
    assert!(
        run.stdout.contains("\"transport\":\"stdio\""),
        "{}",
        run.stdout
    );
}

/// The stand-in's check is what makes the conversation tests able to fail:
/// a history that is not what it answered is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_11_the_stand_in_refuses_a_history_it_did_not_answer() {
    use qbox::qapi::model::{AssistantResponseMessage, ChatMessage, UserInputMessage};
    use qbox::qapi::{ClientOptions, Conversation, Credentials, ErrorKind, QClient};

    let q = StandinQ::start("t").await.unwrap();
    let client = QClient::new(
        Credentials::bare("t"),
        ClientOptions {
            endpoint: Some(q.url()),
            ..ClientOptions::default()
        },
    )
    .unwrap();
    let mut turn = client.chat("one", None, None).await.unwrap();
    while turn.next_event().await.unwrap().is_some() {}
    let id = turn.conversation_id().to_owned();
    drop(turn);

    let mut forged = Conversation::new();
    forged.conversation_id = id.clone();
    let user = |content: &str| {
        ChatMessage::UserInputMessage(UserInputMessage {
            content: content.into(),
            ..UserInputMessage::default()
        })
    };
    let answer = |content: &str| {
        ChatMessage::AssistantResponseMessage(AssistantResponseMessage {
            message_id: Some("m".into()),
            content: content.into(),
            tool_uses: None,
        })
    };
    let histories = [
        vec![],
        vec![user("one"), answer("something else")],
        vec![answer("You said: one"), user("one")],
        vec![user("one")],
    ];
    for history in histories {
        let mut request = forged.request("two", None);
        request.conversation_state.history = history.clone();
        let err = client.generate(request).await.unwrap_err();
        assert_eq!(
            err.kind(),
            Some(ErrorKind::Validation),
            "{history:?}: {err}"
        );
    }
    let mut request = forged.request("two", None);
    request.conversation_state.history = vec![user("one"), answer("You said: one")];
    assert!(client.generate(request).await.is_ok());
}
