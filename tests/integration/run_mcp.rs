//! `qbox run --mcp IMAGE`: a user's image (busybox with the fake CLI as
//! `/usr/local/bin/q`) becomes an MCP server over stdio, driven by the
//! official Python SDK: the agent tool runs the image's CLI in the mounted
//! workspace with the snapshot's login, and `q-chat` answers from the
//! stand-in service in the same session. The qbox that does it is a copy of
//! the built one in a directory of its own, with no cargo on its PATH: the
//! sidecar is this qbox, mounted with its loader and libraries, and nothing
//! is compiled (issue 24).

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

/// A fresh install: the debug `qbox` copied alone into a directory of its
/// own (no static `qbox-sidecar` beside it, no source tree next to it).
pub(crate) fn fresh_install(home: &Path) -> std::path::PathBuf {
    let bin = home.join("install/bin");
    std::fs::create_dir_all(&bin).unwrap();
    let qbox = bin.join("qbox");
    std::fs::copy(env!("CARGO_BIN_EXE_qbox"), &qbox).unwrap();
    qbox
}

#[test]
fn issue_24_a_copied_qbox_without_cargo_serves_both_tools_in_a_busybox_image() {
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
    let qbox = fresh_install(home.path());
    // The PATH holds the install's own directory and nothing else: no cargo.
    let path = qbox.parent().unwrap().to_owned();
    assert!(!path.join("cargo").exists());
    let mut command = Command::new(python);
    command
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/run_mcp.py"))
        .arg(&qbox)
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
        .env("PATH", &path)
        .env("HOME", home.path())
        .env("XDG_DATA_HOME", home.path().join(".local/share"))
        .env("NO_COLOR", "1");
    if let Some(host) = std::env::var_os("DOCKER_HOST") {
        command.env("DOCKER_HOST", host);
    }
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(!stderr.contains("cargo"), "{stderr}");

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

const EMPTY_IMAGE: &str = "qbox-test-empty-image:latest";

/// An image with nothing but `/tmp`: no shell, no C library, no CLI.
fn empty_image() -> Option<&'static str> {
    static READY: OnceLock<bool> = OnceLock::new();
    let ready = *READY.get_or_init(|| {
        // The busybox image's checks (engine, busybox) decide the skip.
        if dev_image().is_none() {
            return false;
        }
        let mut layer = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o1777);
        header.set_size(0);
        header.set_cksum();
        layer
            .append_data(&mut header, "tmp/", std::io::empty())
            .unwrap();
        let mut import = Command::new("docker")
            .args(["import", "-", EMPTY_IMAGE])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::io::Write::write_all(
            &mut import.stdin.take().unwrap(),
            &layer.into_inner().unwrap(),
        )
        .unwrap();
        assert!(import.wait().unwrap().success());
        true
    });
    ready.then_some(EMPTY_IMAGE)
}

/// The bad inputs of issue 24 that work: an image with no `/bin/sh` and no
/// C library, a read-only root with every capability dropped and
/// no-new-privileges (`--hardened`), and a user that is not root. The
/// mounted qbox starts there through its own loader and answers both tools:
/// the agent tool names the image and the CLI it lacks, and `q-chat` that
/// there is no login (`--auth none`: the 0600 snapshot is the host user's,
/// which the container's user 65532 is not).
#[test]
fn issue_24_the_mounted_qbox_serves_in_an_empty_hardened_image_as_a_non_root_user() {
    let Some(image) = empty_image() else { return };
    let Some(python) = crate::util::python_mcp() else {
        return;
    };
    let _turn = crate::util::engine_turn();
    let home = TestHome::new();
    let qbox = fresh_install(home.path());
    let output = Command::new(python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/run_mcp.py"))
        .arg(&qbox)
        .args(["run", "--auth", "none", "--hardened", "-u", "65532:65532"])
        .args(["--mcp", image])
        .env_clear()
        .env("PATH", qbox.parent().unwrap())
        .env("HOME", home.path())
        .env("XDG_DATA_HOME", home.path().join(".local/share"))
        .env("NO_COLOR", "1")
        .envs(std::env::var_os("DOCKER_HOST").map(|h| ("DOCKER_HOST", h)))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        report["tools"],
        serde_json::json!(crate::mcp_client::offered_tools(true)),
        "{report} {stderr}"
    );
    assert_eq!(report["agent"]["is_error"], true, "{report}");
    let text = report["agent"]["text"].as_str().unwrap();
    assert!(
        text.starts_with(&format!(
            "no Kiro CLI was found on PATH in the image `{image}`"
        )),
        "{text}"
    );
    assert_eq!(report["chat"]["is_error"], true, "{report}");
    let chat = report["chat"]["text"].as_str().unwrap();
    assert!(chat.contains("auth store found"), "{chat}");
    assert_eq!(
        crate::sidecar_image::managed_containers(&format!("ancestor={image}")),
        0,
        "a container was left behind"
    );
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

/// `qbox image build` from a fresh install with no cargo on the PATH packs
/// the running qbox (issue 24) and says so; the image's sidecar starts.
#[test]
fn issue_24_image_build_without_cargo_packs_the_running_qbox_and_says_so() {
    // The busybox image's checks (engine, busybox) decide the skip.
    if dev_image().is_none() {
        return;
    }
    let _turn = crate::util::engine_turn();
    let home = TestHome::new();
    let qbox = fresh_install(home.path());
    let image = crate::agent_image::RemoveImage(crate::agent_image::unique_tag("packed"));
    let output = Command::new(&qbox)
        .args(["image", "build", "--tag", &image.0, "--json"])
        .env_clear()
        .env("PATH", qbox.parent().unwrap())
        .env("HOME", home.path())
        .env("NO_COLOR", "1")
        .envs(std::env::var_os("DOCKER_HOST").map(|h| ("DOCKER_HOST", h)))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("cargo"), "{stderr}");
    let built: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(built["tag"], image.0.as_str(), "{built}");
    assert_eq!(built["kind"], "packed", "{built}");
    assert!(built["libraries"].as_u64().unwrap() >= 2, "{built}");
    assert_eq!(built["binary"], qbox.display().to_string(), "{built}");
    // The packed qbox starts under the sidecar's name in the scratch image.
    let version = Command::new("docker")
        .args(["run", "--rm", &image.0, "--version"])
        .output()
        .unwrap();
    assert!(
        version.status.success(),
        "{}",
        String::from_utf8_lossy(&version.stderr)
    );
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("qbox-sidecar "));
}
