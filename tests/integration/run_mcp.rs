//! `qbox run --mcp IMAGE`: a user's image (busybox with the fake CLI as
//! `/usr/local/bin/q`) becomes an MCP server over stdio, driven by the
//! official Python SDK: the agent tool runs the image's CLI in the mounted
//! workspace with the snapshot's login, and `q-chat` answers from the
//! stand-in service in the same session.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use qbox::store::Flavor;

use crate::util::{TestHome, valid_login};

const IMAGE: &str = "qbox-test-dev-image:latest";

/// A stand-in for a user's dev image: busybox, every applet, and the fake
/// CLI at /usr/local/bin/q and /usr/local/bin/kiro-cli.
pub(crate) fn dev_image() -> Option<&'static str> {
    static READY: OnceLock<bool> = OnceLock::new();
    let ready = *READY.get_or_init(|| {
        crate::util::import_busybox_image(IMAGE, &[], "/usr/local/bin:/bin", |root| {
            std::fs::create_dir_all(root.join("usr/local/bin")).unwrap();
            std::fs::create_dir_all(root.join("work")).unwrap();
            let fake_q = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake-q");
            std::fs::copy(&fake_q, root.join("usr/local/bin/q")).unwrap();
            std::fs::copy(&fake_q, root.join("usr/local/bin/kiro-cli")).unwrap();
        })
    });
    ready.then_some(IMAGE)
}

#[test]
fn a_users_image_serves_both_tools_over_stdio() {
    let Some(image) = dev_image() else { return };
    let Some(python) = crate::util::python_mcp() else {
        return;
    };
    let _turn = crate::util::engine_turn();
    let home = TestHome::new();
    let token = "aoa-access-runmcp";
    let mut login = valid_login("runmcp");
    login.access_token = token.into();
    let store = home.login(Flavor::AmazonQ, &login);
    let before = std::fs::read(&store).unwrap();

    let (runtime, q) =
        crate::sidecar_image::standin_for_containers(token, &["answered ", "in the container"]);

    let workspace = home.path().join("workspace");
    let record = home.path().join("record");
    std::fs::create_dir_all(&workspace).unwrap();
    std::fs::create_dir_all(&record).unwrap();
    let mut command = Command::new(python);
    command
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/run_mcp.py"))
        .arg(env!("CARGO_BIN_EXE_qbox"))
        .args(["run", "-v"])
        .arg(format!("{}:/work", workspace.display()))
        .args(["-w", "/work", "-v"])
        .arg(format!("{}:/record", record.display()))
        .args([
            "-e",
            "FAKE_Q_RECORD=/record",
            "-e",
            "QBOX_AGENT_PASS_ENV=FAKE_Q_RECORD",
        ])
        .arg("-e")
        .arg(format!("QBOX_Q_ENDPOINT={}", q.url()))
        .args(["--mcp", image])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("XDG_DATA_HOME", home.path().join(".local/share"))
        .env("NO_COLOR", "1");
    command.envs(crate::util::toolchain_vars());
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();

    crate::agent_image::assert_both_tools_answered(&report, &stderr, "answered in the container");
    // The prompt came after `--`, the workspace was the working directory,
    // and the CLI's login was the snapshot's.
    crate::agent_image::assert_the_cli_saw(&record, token);
    // The host's store is untouched, and nothing is left behind.
    assert_eq!(std::fs::read(&store).unwrap(), before);
    assert_eq!(
        crate::sidecar_image::managed_containers(&format!("ancestor={image}")),
        0,
        "a container was left behind"
    );
    drop(runtime);
}

#[test]
fn mcp_config_docker_uses_qbox_run_mcp_with_the_workspace() {
    let home = TestHome::new();
    let workspace = home.path().join("src");
    std::fs::create_dir_all(&workspace).unwrap();
    for client in ["claude-desktop", "vscode", "q", "kiro"] {
        let run = home
            .qbox()
            .args([
                "mcp-config",
                "--client",
                client,
                "--docker",
                "--image",
                "my-dev-image",
                "--workspace",
            ])
            .args([workspace.as_os_str()])
            .run();
        run.assert_code(0);
        let config: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        let server = if client == "vscode" {
            &config["servers"]["qbox"]
        } else {
            &config["mcpServers"]["qbox"]
        };
        assert_eq!(
            server["command"],
            env!("CARGO_BIN_EXE_qbox"),
            "{client}: {server}"
        );
        let dir = workspace.display().to_string();
        let expected = serde_json::json!([
            "run",
            "-v",
            format!("{dir}:{dir}"),
            "-w",
            dir,
            "--mcp",
            "my-dev-image"
        ]);
        assert_eq!(server["args"], expected, "{client}");
    }
}
