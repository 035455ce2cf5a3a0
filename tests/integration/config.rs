//! Configuration is resolved once, at the command line, and passed down:
//! `qbox-sidecar --db X serve` serves `/health`, `q-chat` and the agent
//! from X, with no `QBOX_DB` in the environment.

use std::path::{Path, PathBuf};

use qbox::standin::q::{Answer, Reply, StandinQ};
use qbox::store::Flavor;

use crate::mcp_client::fake_q;
use crate::util::{Qbox, TestHome, runtime_dir, spawn_serving, valid_login};

/// Runs `qbox-sidecar call --url URL TOOL -a prompt=PROMPT --json`.
async fn call(
    home: PathBuf,
    url: String,
    tool: &'static str,
    prompt: &'static str,
) -> serde_json::Value {
    tokio::task::spawn_blocking(move || {
        let output = Qbox::sidecar(&home)
            .env("XDG_RUNTIME_DIR", runtime_dir(&home))
            .args([
                "call",
                "--url",
                &url,
                tool,
                "-a",
                &format!("prompt={prompt}"),
                "--json",
            ])
            .command()
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_db_flag_serves_health_chat_and_the_agent() {
    let home = TestHome::new();
    let token = "aoa-access-dbflag";
    let q = StandinQ::start(token).await.unwrap();
    // The store lives where no default search looks, and QBOX_DB is unset:
    // only `--db` can name it.
    let store = home.path().join("elsewhere").join("data.sqlite3");
    let written = home.login(Flavor::AmazonQ, &valid_login("dbflag"));
    std::fs::create_dir_all(store.parent().unwrap()).unwrap();
    std::fs::rename(&written, &store).unwrap();
    let record = home.path().join("record");
    let mut command = home
        .sidecar()
        .args(["--db".as_ref(), store.as_os_str()])
        .args(["serve", "--http", "127.0.0.1:0"])
        .env("QBOX_Q_ENDPOINT", q.url())
        .env("ENABLE_ADDITIONAL_TOOLS", "q-developer-agent")
        .env("QBOX_AGENT_CLI", fake_q())
        .env("FAKE_Q_RECORD", &record)
        .env("QBOX_AGENT_PASS_ENV", "FAKE_Q_RECORD")
        .command();
    let (mut server, port, _stderr) = spawn_serving(&mut command);
    let base = format!("http://127.0.0.1:{port}");

    let health: serde_json::Value = qbox::http::client(None)
        .unwrap()
        .get(format!("{base}/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["login"], true, "{health}");

    q.push(Reply::Answer(Answer::text(&["from ", "the db flag"])));
    let chat = call(
        home.path().to_owned(),
        format!("{base}/mcp"),
        "q-chat",
        "hi",
    )
    .await;
    assert_eq!(chat["isError"], false, "{chat}");
    assert_eq!(chat["text"], "from the db flag");

    let agent = call(
        home.path().to_owned(),
        format!("{base}/mcp"),
        "q-developer-agent",
        "hi",
    )
    .await;
    assert_eq!(agent["isError"], false, "{agent}");
    // The CLI ran on a private copy of the store `--db` named.
    let env_dump = std::fs::read_to_string(record.join("env")).unwrap();
    let data_home = env_dump
        .lines()
        .find_map(|l| l.strip_prefix("XDG_DATA_HOME="))
        .expect("the agent got a private copy of the login");
    let copy = Path::new(data_home).join("amazon-q").join("data.sqlite3");
    let login = qbox::store::read_login(&copy, None).unwrap();
    assert_eq!(login.token.unwrap().token.access_token.expose(), token);

    server.kill().unwrap();
    server.wait().unwrap();
}
