//! `qbox chat` and the streaming client against the stand-in Q service:
//! real HTTP on loopback, real framing split at awkward boundaries.

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use qbox::qapi::{
    ApiError, ClientOptions, Credentials, ErrorKind, GenerateAssistantResponseRequest, QClient,
};
use qbox::standin::q::{Answer, Reply, StandinQ};
use qbox::store::Flavor;
use serde_json::json;

use crate::util::{TestHome, valid_login};

const TOKEN: &str = "aoa-access-chat";

/// Runs `qbox ARGS` against the stand-in service.
pub(crate) async fn chat(home: &TestHome, q: &StandinQ, args: &[&str]) -> crate::util::Run {
    home.qbox()
        .env("QBOX_Q_ENDPOINT", q.url())
        .args(args.iter().copied())
        .run_async()
        .await
}

async fn setup() -> (StandinQ, TestHome) {
    let q = StandinQ::start(TOKEN).await.unwrap();
    let home = TestHome::new();
    let mut login = valid_login("chat");
    login.profile_arn = Some("arn:aws:codewhisperer:us-east-1:123456789012:profile/CHAT".into());
    home.login(Flavor::AmazonQ, &login);
    (q, home)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_a_full_answer_with_correct_text() {
    let (q, home) = setup().await;
    let pieces = ["Hello", ", wor", "ld! ", "Ünïcödé ✓ ", "split\nlines", "\n"];
    let mut answer = Answer::text(&pieces);
    answer.split_every = 3;
    q.push(Reply::Answer(answer));
    let run = chat(&home, &q, &["chat", "say hello"]).await;
    run.assert_code(0);
    assert_eq!(run.stdout, pieces.concat());
    let id = run
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("conversation: "))
        .unwrap_or_else(|| panic!("no conversation id:\n{}", run.stderr));
    qbox::qapi::conversation::parse_conversation_id(id).expect("the client makes a UUID");

    let requests = q.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.target.as_deref(), Some(qbox::qapi::TARGET));
    assert_eq!(
        request.authorization.as_deref(),
        Some("Bearer aoa-access-chat")
    );
    assert_eq!(request.optout.as_deref(), Some("true"));
    assert_eq!(
        request.body["conversationState"]["currentMessage"]["userInputMessage"]["content"],
        "say hello"
    );
    assert_eq!(
        request.body["conversationState"]["chatTriggerType"],
        "MANUAL"
    );
    assert_eq!(
        request.body["profileArn"],
        "arn:aws:codewhisperer:us-east-1:123456789012:profile/CHAT"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_split_size_gives_the_same_answer() {
    let (q, _home) = setup().await;
    let client = QClient::new(
        Credentials::bare(TOKEN),
        ClientOptions {
            endpoint: Some(q.url()),
            ..ClientOptions::default()
        },
    )
    .unwrap();
    for split in [1, 2, 5, 11, 12, 13, 64, 4096] {
        let mut answer = Answer::text(&["one ", "two ", "three"]);
        answer.split_every = split;
        answer.extra_events = vec![
            (
                "codeReferenceEvent".into(),
                json!({"references": [{"licenseName": "MIT"}]}),
            ),
            ("brandNewEvent".into(), json!({"x": 1})),
        ];
        q.push(Reply::Answer(answer));
        let mut stream = client
            .generate(GenerateAssistantResponseRequest::prompt("p", None, None))
            .await
            .unwrap();
        let mut text = String::new();
        let mut types = Vec::new();
        while let Some(event) = stream.next_event().await.unwrap() {
            text.push_str(event.text().unwrap_or(""));
            types.push(event.event_type().to_owned());
        }
        assert_eq!(text, "one two three", "split {split}");
        assert_eq!(
            types,
            [
                "messageMetadataEvent",
                "assistantResponseEvent",
                "assistantResponseEvent",
                "assistantResponseEvent",
                "codeReferenceEvent",
                "brandNewEvent"
            ],
            "split {split}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_format_prints_one_object_per_event() {
    let (q, home) = setup().await;
    q.push(Reply::Answer(Answer::text(&["a", "b"])));
    let run = chat(
        &home,
        &q,
        &["chat", "--format", "json", "--model", "m-1", "hi"],
    )
    .await;
    run.assert_code(0);
    let lines: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["type"], "messageMetadataEvent");
    assert_eq!(
        lines[0]["payload"]["conversationId"],
        q.requests()[0].body["conversationState"]["conversationId"],
        "the service answers in the conversation the client made"
    );
    assert_eq!(lines[2]["payload"]["content"], "b");
    assert_eq!(
        q.requests()[0].body["conversationState"]["currentMessage"]["userInputMessage"]["modelId"],
        "m-1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_from_stdin_and_usage_errors() {
    let (q, home) = setup().await;
    let mut child = home
        .qbox()
        .env("QBOX_Q_ENDPOINT", q.url())
        .args(["chat", "-"])
        .command()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(b"-- a prompt that starts with dashes")
            .unwrap();
    }
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        "You said: -- a prompt that starts with dashes\n"
    );

    let empty = chat(&home, &q, &["chat", "   "]).await;
    empty
        .assert_code(2)
        .assert_one_line_error()
        .assert_stderr_contains("the prompt is empty");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_text_is_printed_before_the_answer_finishes() {
    let (q, home) = setup().await;
    let mut answer = Answer::text(&["first", " second"]);
    answer.pause_after_first = Duration::from_secs(3);
    q.push(Reply::Answer(answer));
    let mut child = home
        .qbox()
        .env("QBOX_Q_ENDPOINT", q.url())
        .args(["chat", "hi"])
        .command()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let started = Instant::now();
    let first = tokio::task::spawn_blocking(move || {
        let mut buf = [0u8; 5];
        stdout.read_exact(&mut buf).unwrap();
        (buf, stdout)
    })
    .await
    .unwrap();
    // The server holds back the rest for 3 s: seeing "first" before that
    // proves the text was streamed, not buffered until the end.
    assert_eq!(&first.0, b"first");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "first text arrived only at the end"
    );
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_errors_are_typed_with_exit_codes() {
    let (q, home) = setup().await;
    let cases = [
        (
            Reply::HttpError {
                status: 400,
                code: "ValidationException".into(),
                message: "Input is too long.".into(),
            },
            1,
            "start a new one",
        ),
        (
            Reply::HttpError {
                status: 403,
                code: "AccessDeniedError".into(),
                message: "The bearer token included in the request is expired".into(),
            },
            4,
            "log in again",
        ),
        (
            Reply::HttpError {
                status: 402,
                code: "com.amazon#ServiceQuotaExceededError:x".into(),
                message: "MONTHLY_REQUEST_COUNT".into(),
            },
            1,
            "monthly request limit reached",
        ),
        (Reply::WrongContentType, 1, "not an event stream"),
    ];
    for (reply, code, needle) in cases {
        q.push(reply);
        let run = chat(&home, &q, &["chat", "hi"]).await;
        run.assert_code(code)
            .assert_one_line_error()
            .assert_stderr_contains(needle);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_retried_before_the_stream_but_not_forever() {
    let (q, _home) = setup().await;
    let client = QClient::new(
        Credentials::bare(TOKEN),
        ClientOptions {
            endpoint: Some(q.url()),
            base_backoff: Duration::from_millis(5),
            ..ClientOptions::default()
        },
    )
    .unwrap();
    let throttle = || Reply::HttpError {
        status: 400,
        code: "ThrottlingException".into(),
        message: "slow down".into(),
    };
    q.push(throttle());
    q.push(Reply::HttpError {
        status: 500,
        code: "InternalServerError".into(),
        message: String::new(),
    });
    q.push(Reply::Answer(Answer::text(&["ok"])));
    let mut stream = client
        .generate(GenerateAssistantResponseRequest::prompt("p", None, None))
        .await
        .unwrap();
    stream.next_event().await.unwrap();
    assert_eq!(
        stream.next_event().await.unwrap().unwrap().text(),
        Some("ok")
    );
    assert_eq!(q.requests().len(), 3, "two retries, then success");

    for _ in 0..3 {
        q.push(throttle());
    }
    let err = client
        .generate(GenerateAssistantResponseRequest::prompt("p", None, None))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::Throttling));
    assert_eq!(q.requests().len(), 6, "three attempts at most");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mid_stream_failures_keep_the_text_and_are_never_retried() {
    let (q, home) = setup().await;
    let mut answer = Answer::text(&["partial answer"]);
    answer.exception = Some(("ThrottlingException".into(), "Too many requests".into()));
    q.push(Reply::Answer(answer));
    let run = chat(&home, &q, &["chat", "hi"]).await;
    run.assert_code(1)
        .assert_stderr_contains("ended the answer with ThrottlingException");
    assert_eq!(run.stdout, "partial answer\n");
    assert_eq!(q.requests().len(), 1, "no retry after the first event");

    let mut cut = Answer::text(&["cut"]);
    cut.cut_mid_frame = true;
    q.push(Reply::Answer(cut));
    let run = chat(&home, &q, &["chat", "hi"]).await;
    run.assert_code(1)
        .assert_stderr_contains("stream ended inside a frame");
    assert_eq!(run.stdout, "cut\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_refreshed_by_someone_else_is_reloaded_from_the_store() {
    let (q, home) = setup().await;
    let path = home.store_path(Flavor::AmazonQ);
    let client = QClient::new(
        Credentials::Store {
            query: qbox::store::StoreQuery {
                db: Some(path.clone()),
                cli: None,
            },
            refresh: false,
        },
        ClientOptions {
            endpoint: Some(q.url()),
            ..ClientOptions::default()
        },
    )
    .unwrap();
    let mut first = client
        .generate(GenerateAssistantResponseRequest::prompt("p", None, None))
        .await
        .unwrap();
    while first.next_event().await.unwrap().is_some() {}
    // The host refreshes: new token in the store, the old one is rejected.
    let mut fresh = valid_login("fresh");
    fresh.profile_arn = None;
    crate::util::replace_stored_token(&path, Flavor::AmazonQ, &fresh.token_json());
    q.set_token("aoa-access-fresh");
    let mut second = client
        .generate(GenerateAssistantResponseRequest::prompt("p", None, None))
        .await
        .unwrap();
    assert!(second.next_event().await.unwrap().is_some());
    let auths: Vec<_> = q
        .requests()
        .iter()
        .map(|r| r.authorization.clone().unwrap())
        .collect();
    assert_eq!(auths, ["Bearer aoa-access-chat", "Bearer aoa-access-fresh"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_token_from_the_environment_when_no_store_exists() {
    let q = StandinQ::start("ci-token").await.unwrap();
    let home = TestHome::new();
    let run = home
        .qbox()
        .env("QBOX_Q_ENDPOINT", q.url())
        .env("QBOX_ACCESS_TOKEN", "ci-token")
        .args(["chat", "hello"])
        .run_async()
        .await;
    run.assert_code(0);
    assert_eq!(run.stdout, "You said: hello\n");
    let none = chat(&home, &q, &["chat", "hello"]).await;
    none.assert_code(4).assert_one_line_error();
    assert!(matches!(
        QClient::new(
            Credentials::bare("wrong"),
            ClientOptions {
                endpoint: Some(q.url()),
                ..ClientOptions::default()
            }
        )
        .unwrap()
        .generate(GenerateAssistantResponseRequest::prompt("p", None, None))
        .await,
        Err(ApiError::Http { status: 403, .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_30_an_answer_past_the_cap_ends_with_an_error_and_is_not_kept() {
    let (q, home) = setup().await;
    let piece = "y".repeat(100);
    let pieces: Vec<&str> = std::iter::repeat_n(piece.as_str(), 20).collect();
    q.push(Reply::Answer(Answer::text(&pieces)));
    let capped = home
        .qbox()
        .env("QBOX_Q_ENDPOINT", q.url())
        .env("QBOX_Q_MAX_ANSWER_BYTES", "1000")
        .args(["chat", "say a lot"])
        .run_async()
        .await;
    capped
        .assert_code(1)
        .assert_one_line_error()
        .assert_stderr_contains(
            "amazon q's answer is larger than 1000 bytes; qbox stopped reading it",
        )
        .assert_stderr_contains("hint: ask for a shorter answer, or raise QBOX_Q_MAX_ANSWER_BYTES");
    // What came before the cap, and the newline `chat` ends its text with.
    let printed = capped.stdout.trim_end_matches('\n').len();
    assert!(printed <= 1000, "{printed} bytes printed");
    // A capped answer is no turn of a conversation.
    let listed = chat(
        &home,
        &q,
        &["chat", "--list-conversations", "--format", "json"],
    )
    .await;
    listed.assert_code(0);
    assert_eq!(listed.stdout.trim(), "[]");

    // Within the cap, and by default (2 MiB), the whole answer.
    for limit in [Some("2000"), None] {
        q.push(Reply::Answer(Answer::text(&pieces)));
        let mut qbox = home.qbox().env("QBOX_Q_ENDPOINT", q.url());
        if let Some(limit) = limit {
            qbox = qbox.env("QBOX_Q_MAX_ANSWER_BYTES", limit);
        }
        let run = qbox.args(["chat", "say a lot"]).run_async().await;
        run.assert_code(0);
        // `chat` ends text that lacks one with a newline.
        assert_eq!(run.stdout, pieces.concat() + "\n");
    }

    for bad in ["0", "lots", "1e9", "67108865"] {
        let run = home
            .qbox()
            .env("QBOX_Q_ENDPOINT", q.url())
            .env("QBOX_Q_MAX_ANSWER_BYTES", bad)
            .args(["chat", "hi"])
            .run_async()
            .await;
        run.assert_code(2)
            .assert_one_line_error()
            .assert_stderr_contains("QBOX_Q_MAX_ANSWER_BYTES");
    }
}
