//! The stand-in services as a process of their own, for test suites and
//! benchmarks in other languages (the Python package's pytest suite,
//! `benches/python_client.py`): `cargo build --example standin`.
//!
//! `standin serve TOKEN` starts the stand-in Amazon Q service (accepting
//! bearer TOKEN) and the stand-in SSO OIDC service (accepting the fixture
//! client and the refresh token `standin-refresh-0`) on 127.0.0.1, prints
//! one JSON line `{"q": URL, "oidc": URL}`, then answers one JSON command
//! per line of stdin with one JSON line on stdout, until stdin ends:
//!
//! - `{"cmd": "push", "reply": REPLY}` queues a reply, where REPLY is
//!   `{"answer": {"pieces": [..], "split_every": N, "extra_events": [[TYPE,
//!   PAYLOAD], ..], "exception": [TYPE, MESSAGE], "cut_mid_frame": BOOL,
//!   "stall_after_first": BOOL}}` or `{"http_error": {"status": N, "code":
//!   CODE, "message": TEXT}}`
//! - `{"cmd": "requests"}`: the requests received (`authorization`, `body`)
//! - `{"cmd": "conversation", "id": ID}`: the (prompt, answer) pairs it
//!   answered in conversation ID
//! - `{"cmd": "set_token", "token": TOKEN[, "token_type": TYPE]}`
//! - `{"cmd": "oidc_requests"}`: how many token requests the OIDC stand-in got
//! - `{"cmd": "hangups"}`: how many answers the client hung up on
//!
//! `standin store PATH ACCESS_TOKEN [--expired] [--cli q|kiro]` writes a
//! store in the CLI's schema with a Builder ID login (refresh token
//! `standin-refresh-0`, the fixture client), valid for an hour or expired
//! ten minutes ago.

use std::io::{BufRead, Write};
use std::time::Duration;

use qbox::standin::oidc::StandinOidc;
use qbox::standin::q::{Answer, Reply, StandinQ};
use qbox::store::Flavor;
use qbox::store::schema::{FixtureLogin, StoreBuilder};
use serde_json::{Value, json};

const REFRESH_TOKEN: &str = "standin-refresh-0";

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("serve") if args.len() == 2 => serve(&args[1]),
        Some("store") if args.len() >= 3 => store(&args[1..]),
        _ => Err("usage: standin serve TOKEN | standin store PATH ACCESS_TOKEN [--expired] [--cli q|kiro]".into()),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn store(args: &[String]) -> Result<(), String> {
    let path = std::path::Path::new(&args[0]);
    let mut login = FixtureLogin::builder_id(&args[1], REFRESH_TOKEN);
    let mut flavor = Flavor::Kiro;
    let mut rest = args[2..].iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--expired" => {
                login.expires_at = time::OffsetDateTime::now_utc() - time::Duration::minutes(10);
            }
            "--cli" => {
                let name = rest.next().ok_or("--cli needs q or kiro")?;
                flavor = Flavor::parse_name(name)?;
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    StoreBuilder::create(path, flavor)
        .and_then(|builder| builder.login(&login))
        .map(drop)
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

fn serve(token: &str) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let (q, oidc) = runtime
        .block_on(async {
            let q = StandinQ::start(token).await?;
            let oidc =
                StandinOidc::start("fixture-client-id", "fixture-client-secret", REFRESH_TOKEN)
                    .await?;
            std::io::Result::Ok((q, oidc))
        })
        .map_err(|e| format!("starting the stand-ins: {e}"))?;
    let mut stdout = std::io::stdout().lock();
    let mut say = |value: Value| writeln!(stdout, "{value}").and_then(|()| stdout.flush());
    say(json!({"q": q.url(), "oidc": oidc.url()})).map_err(|e| e.to_string())?;
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| e.to_string())?;
        if line.trim().is_empty() {
            continue;
        }
        let answer = match serde_json::from_str::<Value>(&line) {
            Ok(command) => run(&command, &q, &oidc),
            Err(e) => Err(format!("not JSON: {e}")),
        };
        let answer = answer.unwrap_or_else(|error| json!({"error": error}));
        say(answer).map_err(|e| e.to_string())?;
    }
    drop(q);
    drop(oidc);
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

fn run(command: &Value, q: &StandinQ, oidc: &StandinOidc) -> Result<Value, String> {
    let text = |name: &str| command.get(name).and_then(Value::as_str).unwrap_or("");
    match text("cmd") {
        "push" => {
            q.push(reply(command.get("reply").ok_or("push needs a reply")?)?);
            Ok(json!({"ok": true}))
        }
        "requests" => Ok(json!({"requests": q.requests().iter().map(|r| json!({
            "authorization": r.authorization,
            "user_agent": r.user_agent,
            "token_type": r.token_type,
            "body": r.body,
        })).collect::<Vec<_>>()})),
        "conversation" => Ok(json!({"pairs": q.conversation(text("id"))})),
        "set_token" => {
            q.set_token(text("token"));
            // The `TokenType` header the token must come with (`API_KEY`
            // for a Kiro API key); none when not given.
            let token_type = command.get("token_type").and_then(Value::as_str);
            q.set_token_type(token_type);
            Ok(json!({"ok": true}))
        }
        "oidc_requests" => Ok(json!({"count": oidc.requests().len()})),
        "hangups" => Ok(json!({"count": q.hangups()})),
        other => Err(format!("unknown command `{other}`")),
    }
}

fn reply(spec: &Value) -> Result<Reply, String> {
    if let Some(error) = spec.get("http_error") {
        return Ok(Reply::HttpError {
            status: error.get("status").and_then(Value::as_u64).unwrap_or(500) as u16,
            code: error
                .get("code")
                .and_then(Value::as_str)
                .unwrap_or("InternalServerException")
                .to_owned(),
            message: error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
        });
    }
    let spec = spec
        .get("answer")
        .ok_or("a reply is an answer or an http_error")?;
    let pieces: Vec<&str> = spec
        .get("pieces")
        .and_then(Value::as_array)
        .map(|p| p.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut answer = Answer::text(&pieces);
    let flag = |name: &str| spec.get(name).and_then(Value::as_bool).unwrap_or(false);
    answer.cut_mid_frame = flag("cut_mid_frame");
    answer.stall_after_first = flag("stall_after_first");
    if let Some(split) = spec.get("split_every").and_then(Value::as_u64) {
        answer.split_every = split as usize;
    }
    if let Some(events) = spec.get("extra_events").and_then(Value::as_array) {
        for event in events {
            let event_type = event
                .get(0)
                .and_then(Value::as_str)
                .ok_or("an extra event is [TYPE, PAYLOAD]")?;
            answer.extra_events.push((
                event_type.to_owned(),
                event.get(1).cloned().unwrap_or(Value::Null),
            ));
        }
    }
    if let Some(exception) = spec.get("exception").and_then(Value::as_array) {
        let part = |i: usize| {
            exception
                .get(i)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        answer.exception = Some((part(0), part(1)));
    }
    Ok(Reply::Answer(answer))
}
