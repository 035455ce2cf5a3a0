//! `qbox mcp-config` for every MCP host: `--install` merging into files that
//! already hold the user's servers and settings, in a temporary home and
//! project, and the written files loaded by a client nobody here wrote
//! (FastMCP's command line, from `.venv`), over stdio and HTTP.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use qbox::store::Flavor;
use serde_json::{Value, json};

use crate::util::{TestHome, clean_command, spawn_serving, valid_login};

fn install(home: &TestHome, project: &Path, args: &[&str]) -> crate::util::Run {
    home.qbox()
        .args(["mcp-config", "--install", "--json"])
        .args(args)
        .current_dir(project)
        .run()
}

fn action(run: &crate::util::Run) -> String {
    run.assert_code(0);
    let report: Value = serde_json::from_str(run.stdout.trim()).unwrap();
    report["action"].as_str().unwrap().to_owned()
}

#[test]
fn install_merges_into_each_hosts_file_and_keeps_the_rest() {
    let home = TestHome::new();
    let project = home.path().join("project");
    std::fs::create_dir_all(&project).unwrap();

    // Claude Code's user file holds much more than servers.
    let claude = home.path().join(".claude.json");
    std::fs::write(
        &claude,
        r#"{"numStartups": 7, "mcpServers": {"github": {"type": "http", "url": "https://example.test/mcp"}}, "projects": {"/x": {}}}"#,
    )
    .unwrap();
    std::fs::set_permissions(&claude, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(
        action(&install(&home, &project, &["--client", "claude-code"])),
        "added"
    );
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&claude).unwrap()).unwrap();
    let keys: Vec<&String> = doc.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["numStartups", "mcpServers", "projects"]);
    assert_eq!(
        doc["mcpServers"]["github"]["url"],
        "https://example.test/mcp"
    );
    assert_eq!(doc["mcpServers"]["qbox"]["args"], json!(["serve"]));
    let mode = std::fs::metadata(&claude).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the file keeps its mode");
    assert!(home.path().join(".claude.json.qbox-backup").exists());
    // Twice is once.
    let before = std::fs::read(&claude).unwrap();
    assert_eq!(
        action(&install(&home, &project, &["--client", "claude-code"])),
        "unchanged"
    );
    assert_eq!(std::fs::read(&claude).unwrap(), before);
    // Another server under the name is not replaced without --force.
    let other = install(
        &home,
        &project,
        &["--client", "claude-code", "--url", "http://127.0.0.1:9/mcp"],
    );
    other.assert_code(1);
    assert!(
        other.stderr.contains("hint: add --force"),
        "{}",
        other.stderr
    );
    assert_eq!(std::fs::read(&claude).unwrap(), before);
    let forced = install(
        &home,
        &project,
        &[
            "--client",
            "claude-code",
            "--url",
            "http://127.0.0.1:9/mcp",
            "--force",
        ],
    );
    assert_eq!(action(&forced), "replaced");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&claude).unwrap()).unwrap();
    assert_eq!(
        doc["mcpServers"]["qbox"]["headers"]["Authorization"],
        "Bearer ${QBOX_MCP_TOKEN}"
    );
    assert!(
        !std::fs::read_to_string(&claude)
            .unwrap()
            .contains("Bearer ey")
    );

    // A project file, created with its directory.
    assert_eq!(
        action(&install(
            &home,
            &project,
            &["--client", "cursor", "--scope", "project"]
        )),
        "added"
    );
    assert!(project.join(".cursor/mcp.json").exists());

    // Codex: TOML with comments, kept byte for byte around the new table.
    let codex = home.path().join(".codex/config.toml");
    std::fs::create_dir_all(codex.parent().unwrap()).unwrap();
    let toml = "# mine\nmodel = \"o3\" # keep\n\n[mcp_servers.docs]\ncommand = \"docs\"\n";
    std::fs::write(&codex, toml).unwrap();
    assert_eq!(
        action(&install(&home, &project, &["--client", "codex"])),
        "added"
    );
    let text = std::fs::read_to_string(&codex).unwrap();
    assert!(text.starts_with(toml), "{text}");
    let doc: toml_edit::DocumentMut = text.parse().unwrap();
    assert_eq!(
        doc["mcp_servers"]["qbox"]["args"][0].as_str(),
        Some("serve")
    );
    assert_eq!(doc["mcp_servers"]["docs"]["command"].as_str(), Some("docs"));

    // Goose: YAML with comments; every line of it is still there.
    let goose = home.path().join(".config/goose/config.yaml");
    std::fs::create_dir_all(goose.parent().unwrap()).unwrap();
    let yaml = "GOOSE_PROVIDER: openai # mine\nextensions:\n  developer:\n    enabled: true\n    type: builtin\n    name: developer\n";
    std::fs::write(&goose, yaml).unwrap();
    assert_eq!(
        action(&install(&home, &project, &["--client", "goose"])),
        "added"
    );
    let text = std::fs::read_to_string(&goose).unwrap();
    for line in yaml.lines() {
        assert!(text.contains(line), "{line:?} lost: {text}");
    }
    let doc = &yaml_rust2::YamlLoader::load_from_str(&text).unwrap()[0];
    assert_eq!(doc["extensions"]["qbox"]["type"].as_str(), Some("stdio"));
    assert_eq!(
        doc["extensions"]["developer"]["type"].as_str(),
        Some("builtin")
    );

    // Zed's settings with comments cannot be written back whole: refused, untouched.
    let zed = project.join(".zed/settings.json");
    std::fs::create_dir_all(zed.parent().unwrap()).unwrap();
    let jsonc = "// Zed settings\n{\n  \"theme\": \"One Dark\",\n}\n";
    std::fs::write(&zed, jsonc).unwrap();
    let refused = install(&home, &project, &["--client", "zed", "--scope", "project"]);
    refused.assert_code(1);
    assert!(refused.stderr.starts_with("error: "), "{}", refused.stderr);
    assert!(refused.stderr.contains("hint: "), "{}", refused.stderr);
    assert_eq!(std::fs::read_to_string(&zed).unwrap(), jsonc);

    // A symlinked file is refused, and what it points to is untouched.
    let real = home.path().join("real-settings.json");
    std::fs::write(&real, "{}").unwrap();
    let gemini = home.path().join(".gemini/settings.json");
    std::fs::create_dir_all(gemini.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&real, &gemini).unwrap();
    install(&home, &project, &["--client", "gemini"]).assert_code(1);
    assert_eq!(std::fs::read_to_string(&real).unwrap(), "{}");

    // VS Code over HTTP: the token comes from a password input, never the file.
    let vscode = install(
        &home,
        &project,
        &[
            "--client",
            "vscode",
            "--scope",
            "project",
            "--url",
            "http://127.0.0.1:9/mcp",
        ],
    );
    assert_eq!(action(&vscode), "added");
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(project.join(".vscode/mcp.json")).unwrap())
            .unwrap();
    assert_eq!(doc["inputs"][0]["password"], true);
    assert_eq!(
        doc["servers"]["qbox"]["headers"]["Authorization"],
        "Bearer ${input:qbox-mcp-token}"
    );
}

#[test]
fn hosts_that_cannot_reference_the_token_get_it_only_in_a_private_file() {
    let home = TestHome::new();
    let token = "zed-token-0123456789abcdef";
    // Printed: a placeholder, never the token.
    let printed = home
        .qbox()
        .args([
            "mcp-config",
            "--client",
            "zed",
            "--url",
            "http://127.0.0.1:9/mcp",
        ])
        .env("QBOX_MCP_TOKEN", token)
        .run();
    printed.assert_code(0);
    assert!(!printed.stdout.contains(token));
    assert!(printed.stdout.contains("<QBOX_MCP_TOKEN>"));
    // Installed into a new file: 0600 with the token.
    let installed = home
        .qbox()
        .args([
            "mcp-config",
            "--client",
            "zed",
            "--url",
            "http://127.0.0.1:9/mcp",
            "--install",
        ])
        .env("QBOX_MCP_TOKEN", token)
        .run();
    installed.assert_code(0);
    let file = home.path().join(".config/zed/settings.json");
    assert!(std::fs::read_to_string(&file).unwrap().contains(token));
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(!installed.stderr.contains(token) && !installed.stdout.contains(token));
    // Into a file others can read: refused.
    let goose = home.path().join(".config/goose/config.yaml");
    std::fs::create_dir_all(goose.parent().unwrap()).unwrap();
    std::fs::write(&goose, "GOOSE_MODE: auto\n").unwrap();
    std::fs::set_permissions(&goose, std::fs::Permissions::from_mode(0o644)).unwrap();
    let refused = home
        .qbox()
        .args([
            "mcp-config",
            "--client",
            "goose",
            "--url",
            "http://127.0.0.1:9/mcp",
            "--install",
        ])
        .env("QBOX_MCP_TOKEN", token)
        .run();
    refused.assert_code(1);
    assert!(refused.stderr.contains("chmod 600"), "{}", refused.stderr);
    assert_eq!(
        std::fs::read_to_string(&goose).unwrap(),
        "GOOSE_MODE: auto\n"
    );
}

#[test]
fn the_published_metadata_is_what_the_tools_say() {
    let home = TestHome::new();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for (flag, file) in [
        ("--server-json", "docs/server.json"),
        ("--server-card", "docs/server-card.json"),
    ] {
        let run = home.qbox().args(["mcp-config", flag]).run();
        run.assert_code(0);
        let generated: Value = serde_json::from_str(&run.stdout).unwrap();
        let committed: Value =
            serde_json::from_str(&std::fs::read_to_string(root.join(file)).unwrap()).unwrap();
        assert_eq!(
            generated, committed,
            "{file} is out of date: qbox mcp-config {flag} > {file}"
        );
    }
}

/// FastMCP's command line from `.venv`; `None` with a visible skip, a
/// failure under `QBOX_REQUIRE_PYTHON_MCP`.
fn fastmcp() -> Option<PathBuf> {
    let fastmcp = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/fastmcp");
    if fastmcp.exists() {
        return Some(fastmcp);
    }
    assert!(
        std::env::var_os("QBOX_REQUIRE_PYTHON_MCP").is_none(),
        "QBOX_REQUIRE_PYTHON_MCP is set but .venv has no fastmcp (tests/python/requirements.txt)"
    );
    eprintln!(
        "SKIPPED: no .venv/bin/fastmcp (.venv/bin/pip install -r tests/python/requirements.txt)"
    );
    None
}

/// `fastmcp list` and `fastmcp call q-chat` on the configuration `file`,
/// as the user of `home`; returns the answer's text.
fn fastmcp_lists_and_calls(
    fastmcp: &Path,
    home: &Path,
    file: &Path,
    env: &[(&str, &str)],
) -> String {
    let listed = clean_command(fastmcp, home)
        .arg("list")
        .arg(file)
        .args(["--json", "--timeout", "60"])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.status.success(),
        "{}: {stdout}{}",
        file.display(),
        String::from_utf8_lossy(&listed.stderr)
    );
    let tools: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let mut names: Vec<&str> = tools["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        crate::mcp_client::offered_tools(false),
        "{}",
        file.display()
    );
    let called = clean_command(fastmcp, home)
        .arg("call")
        .arg(file)
        .args(["q-chat", "prompt=from fastmcp", "--json", "--timeout", "60"])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&called.stdout);
    assert!(
        called.status.success(),
        "{}: {stdout}{}",
        file.display(),
        String::from_utf8_lossy(&called.stderr)
    );
    let result: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(result["is_error"], false, "{result}");
    result["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// A home with a login and the Kiro CLI's settings pointing at the stand-in
/// Q service, so a sidecar started with only `HOME` (as MCP clients start
/// servers) answers `q-chat`.
fn home_with_login(q_url: &str) -> TestHome {
    let home = TestHome::new();
    home.login(Flavor::Kiro, &valid_login("fastmcp"));
    let settings = home.path().join(".kiro/settings/cli.json");
    std::fs::create_dir_all(settings.parent().unwrap()).unwrap();
    std::fs::write(
        &settings,
        json!({"api.codewhisperer.service": {"endpoint": q_url, "region": "us-east-1"}})
            .to_string(),
    )
    .unwrap();
    home
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fastmcp_loads_the_stdio_configurations() {
    let Some(fastmcp) = fastmcp() else { return };
    let q = qbox::standin::q::StandinQ::start("aoa-access-fastmcp")
        .await
        .unwrap();
    let home = home_with_login(&q.url());
    let project = home.path().join("project");
    std::fs::create_dir_all(&project).unwrap();
    let home_path = home.path().to_owned();
    tokio::task::spawn_blocking(move || {
        for (client, file) in [
            (
                "claude-desktop",
                ".config/Claude/claude_desktop_config.json",
            ),
            ("claude-code", ".claude.json"),
            ("cursor", ".cursor/mcp.json"),
            ("gemini", ".gemini/settings.json"),
            ("kiro", ".kiro/settings/mcp.json"),
        ] {
            let run = crate::util::Qbox::new(&home_path)
                .args(["mcp-config", "--install", "--client", client])
                .current_dir(&project)
                .run();
            run.assert_code(0);
            let text = fastmcp_lists_and_calls(&fastmcp, &home_path, &home_path.join(file), &[]);
            assert_eq!(text, "You said: from fastmcp", "{client}");
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fastmcp_loads_the_http_configurations() {
    let Some(fastmcp) = fastmcp() else { return };
    let q = qbox::standin::q::StandinQ::start("aoa-access-fastmcp")
        .await
        .unwrap();
    let home = home_with_login(&q.url());
    let token = "fastmcp-http-token-0123456789";
    let (mut sidecar, port, _stderr) = spawn_serving(
        &mut home
            .sidecar()
            .args(["serve", "--http", "127.0.0.1:0"])
            .env("QBOX_MCP_TOKEN", token)
            .command(),
    );
    let url = format!("http://127.0.0.1:{port}/mcp");
    let home_path = home.path().to_owned();
    let result = tokio::task::spawn_blocking(move || {
        for (client, reference) in [
            ("claude-code", "${QBOX_MCP_TOKEN}"),
            ("cursor", "${env:QBOX_MCP_TOKEN}"),
            ("kiro", "${QBOX_MCP_TOKEN}"),
        ] {
            let run = crate::util::Qbox::new(&home_path)
                .args(["mcp-config", "--client", client, "--url", &url])
                .run();
            run.assert_code(0);
            assert!(!run.stdout.contains(token));
            // The host expands its reference from its environment, as its
            // documentation says; FastMCP sends headers as written, so the
            // test does that expansion and nothing else.
            assert!(run.stdout.contains(reference), "{client}: {}", run.stdout);
            let expanded = run.stdout.replace(reference, token);
            let file = home_path.join(format!("{client}-http.json"));
            std::fs::write(&file, expanded).unwrap();
            let text = fastmcp_lists_and_calls(&fastmcp, &home_path, &file, &[]);
            assert_eq!(text, "You said: from fastmcp", "{client}");
        }
    })
    .await;
    let _ = sidecar.kill();
    let _ = sidecar.wait();
    result.unwrap();
}
