//! The agent image (`qbox image build --agent`) against the real engine and
//! the official MCP Python SDK, and the bad inputs for the agent in
//! containers: each a clear error before anything is created, with no
//! container, image or temporary directory left behind.
//!
//! The CLI in the image is the fake CLI (`tests/fixtures/fake-q`, a shell
//! script) behind a tiny static ELF compiled here with `gcc -static`: it
//! execs `/bin/sh -c <the script>` with its arguments, so the image's CLI is
//! an executable ELF file as a real `q` is, and the base is busybox (a
//! shell for the script).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use qbox::store::Flavor;

use crate::util::{TestHome, valid_login};

/// An image that is removed when the test ends, however it ends.
pub(crate) struct RemoveImage(pub(crate) String);

impl Drop for RemoveImage {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["image", "rm", "-f", &self.0])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A tag no other test (or earlier run) uses.
pub(crate) fn unique_tag(what: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "qbox-test-{what}-{}-{}:latest",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

/// A busybox image (every applet, `/work`), removed when dropped; `None`
/// with a visible skip when there is no engine.
fn busybox_base() -> Option<RemoveImage> {
    let tag = unique_tag("agent-base");
    crate::util::import_busybox_image(&tag, &[], "/usr/local/bin:/bin", |root| {
        std::fs::create_dir_all(root.join("work")).unwrap();
    })
    .then(|| RemoveImage(tag))
}

/// The fake CLI as a static ELF executable named `name` in `dir`; `None`
/// with a visible skip when no C compiler with a static libc is here (a
/// failure under QBOX_REQUIRE_DOCKER, where these tests must run).
fn fake_cli_elf(dir: &Path, name: &str) -> Option<PathBuf> {
    let script =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake-q")).unwrap();
    let bytes: Vec<String> = script.iter().map(|b| format!("0x{b:02x}")).collect();
    let source = format!(
        "#include <stdlib.h>\n#include <unistd.h>\n\
         static const char script[] = {{{}, 0}};\n\
         int main(int argc, char **argv) {{\n\
           char **args = calloc((size_t)argc + 4, sizeof *args);\n\
           if (!args) return 127;\n\
           args[0] = \"sh\"; args[1] = \"-c\"; args[2] = (char *)script; args[3] = \"q\";\n\
           for (int i = 1; i < argc; i++) args[i + 3] = argv[i];\n\
           execv(\"/bin/sh\", args);\n\
           return 127;\n\
         }}\n",
        bytes.join(",")
    );
    let c = dir.join("fake-q.c");
    std::fs::write(&c, source).unwrap();
    let out = dir.join(name);
    let compiled = Command::new("gcc")
        .args(["-static", "-O1", "-o"])
        .arg(&out)
        .arg(&c)
        .output();
    match compiled {
        Ok(result) if result.status.success() => Some(out),
        other => {
            assert!(
                std::env::var_os("QBOX_REQUIRE_DOCKER").is_none(),
                "QBOX_REQUIRE_DOCKER is set but gcc -static failed: {other:?}"
            );
            eprintln!("SKIPPED: no gcc with a static libc (apt-get install gcc libc6-dev)");
            None
        }
    }
}

/// The CPU this machine is not, in Docker's spelling.
fn foreign_arch() -> &'static str {
    if std::env::consts::ARCH == "aarch64" {
        "amd64"
    } else {
        "arm64"
    }
}

/// An image whose configuration says it is for another CPU, loaded with
/// `docker load` from an archive written here (nothing is pulled, and
/// `docker import --platform` is ignored by older engines).
fn foreign_image(dir: &Path) -> RemoveImage {
    let tag = unique_tag("foreign");
    let image = dir.join("foreign-image");
    std::fs::create_dir_all(image.join("layer")).unwrap();
    let mut layer = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_mode(0o1777);
    header.set_size(0);
    header.set_cksum();
    layer
        .append_data(&mut header, "tmp/", std::io::empty())
        .unwrap();
    let layer_path = image.join("layer/layer.tar");
    std::fs::write(&layer_path, layer.into_inner().unwrap()).unwrap();
    let sum = Command::new("sha256sum").arg(&layer_path).output().unwrap();
    let digest = String::from_utf8(sum.stdout).unwrap();
    let digest = digest.split_whitespace().next().unwrap().to_owned();
    let config = serde_json::json!({
        "architecture": foreign_arch(),
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{digest}")]},
    });
    std::fs::write(image.join("config.json"), config.to_string()).unwrap();
    let manifest = serde_json::json!([
        {"Config": "config.json", "RepoTags": [tag], "Layers": ["layer/layer.tar"]}
    ]);
    std::fs::write(image.join("manifest.json"), manifest.to_string()).unwrap();
    let mut tar = Command::new("tar")
        .arg("-C")
        .arg(&image)
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let loaded = Command::new("docker")
        .arg("load")
        .stdin(tar.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(tar.wait().unwrap().success());
    assert!(
        loaded.status.success(),
        "{}",
        String::from_utf8_lossy(&loaded.stderr)
    );
    RemoveImage(tag)
}

fn docker_lines(args: &[&str]) -> BTreeSet<String> {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Every image on the engine, intermediate ones too, and every container:
/// what was there before a test is never counted as its leftover (a user's
/// `qbox run -d qbox-sidecar:latest` may run beside the tests).
fn all_images() -> Before {
    Before {
        images: docker_lines(&["image", "ls", "-a", "-q", "--no-trunc"]),
        containers: docker_lines(&["ps", "-a", "-q", "--no-trunc"]),
    }
}

/// The engine's images and containers when a test began.
struct Before {
    images: BTreeSet<String>,
    containers: BTreeSet<String>,
}

/// What a refused build or run left that it could have made: containers of
/// `base` (or of images built on it) that appeared since `before`, and
/// images that appeared since `before` and descend from `base` (the builder's intermediate images) or
/// are labelled as an agent image. Other processes may use the engine at
/// the same time, so the rest of the engine is not compared.
fn leftovers(base: &str, before: &Before) -> Vec<String> {
    let mut left = Vec::new();
    let base_id = image_id(base);
    if base_id.is_some() {
        let of_base = docker_lines(&[
            "ps",
            "-a",
            "-q",
            "--no-trunc",
            "--filter",
            &format!("ancestor={base}"),
        ]);
        left.extend(of_base.difference(&before.containers).cloned());
    }
    for image in all_images().images.difference(&before.images) {
        let agent_label = inspect(
            image,
            "{{index .Config.Labels \"org.opencontainers.image.title\"}}",
        ) == "qbox-agent";
        let mut ancestor = Some(image.clone());
        let mut from_base = false;
        for _ in 0..64 {
            let Some(id) = ancestor.take() else { break };
            if Some(&id) == base_id.as_ref() {
                from_base = true;
                break;
            }
            ancestor = Some(inspect(&id, "{{.Parent}}")).filter(|p| !p.is_empty());
        }
        if agent_label || from_base {
            left.push(image.clone());
        }
    }
    left
}

fn image_id(image: &str) -> Option<String> {
    Some(inspect(image, "{{.Id}}")).filter(|id| !id.is_empty())
}

fn image_exists(tag: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", tag])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

fn inspect(image: &str, format: &str) -> String {
    let out = Command::new("docker")
        .args(["image", "inspect", "--format", format, image])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// `qbox` with this home, the engine and the toolchain (the static
/// sidecar may be built with cargo), and a temporary directory of its own
/// (`tmp`), so a test can see that nothing was left in it.
fn qbox(home: &TestHome, tmp: &Path) -> crate::util::Qbox {
    std::fs::create_dir_all(tmp).unwrap();
    home.qbox()
        .env_remove("DOCKER_HOST")
        .envs(docker_host())
        .envs(crate::util::toolchain_vars())
        .env("TMPDIR", tmp)
        .env("XDG_RUNTIME_DIR", crate::util::runtime_dir(home.path()))
}

/// DOCKER_HOST as the tests were given it (unset: the default socket).
fn docker_host() -> Vec<(&'static str, std::ffi::OsString)> {
    std::env::var_os("DOCKER_HOST")
        .map(|host| vec![("DOCKER_HOST", host)])
        .unwrap_or_default()
}

/// Drives `program args` as an MCP server over stdio with the official
/// Python SDK (`tests/python/run_mcp.py`: the tool list, one agent call
/// that asks the fake CLI to print "from the image", one `q-chat` call)
/// and returns its report and the server's stderr.
fn drive(
    python: &Path,
    home: &TestHome,
    program: &Path,
    args: &[String],
) -> (serde_json::Value, String) {
    let mut command = Command::new(python);
    command
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/run_mcp.py"))
        .arg(program)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("XDG_DATA_HOME", home.path().join(".local/share"))
        .env("XDG_RUNTIME_DIR", crate::util::runtime_dir(home.path()))
        .env("NO_COLOR", "1")
        .envs(docker_host())
        .envs(crate::util::toolchain_vars());
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    let report = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{stderr}", String::from_utf8_lossy(&output.stdout)));
    (report, stderr)
}

/// What the fake CLI recorded: the prompt came after `--`, the workspace
/// was its working directory, and the login it saw holds `token`.
pub(crate) fn assert_the_cli_saw(record: &Path, token: &str) {
    let argv = std::fs::read(record.join("argv")).unwrap();
    let argv: Vec<&[u8]> = argv.split(|b| *b == 0).filter(|a| !a.is_empty()).collect();
    let dashes = argv
        .iter()
        .position(|a| *a == b"--")
        .expect("a `--` before the prompt");
    assert_eq!(argv[dashes + 1..], [b"print:from the image".as_slice()]);
    assert_eq!(
        std::fs::read_to_string(record.join("cwd")).unwrap().trim(),
        "/work"
    );
    let seen = qbox::store::read_login(&record.join("store.sqlite3"), None).unwrap();
    assert_eq!(seen.token.unwrap().token.access_token.expose(), token);
}

pub(crate) fn assert_both_tools_answered(report: &serde_json::Value, stderr: &str, chat: &str) {
    assert_eq!(
        report["tools"],
        serde_json::json!(crate::mcp_client::offered_tools(true)),
        "{report}"
    );
    assert_eq!(report["agent"]["is_error"], false, "{report} {stderr}");
    assert!(
        report["agent"]["text"]
            .as_str()
            .unwrap()
            .contains("from the image"),
        "{report}"
    );
    assert_eq!(report["chat"]["is_error"], false, "{report} {stderr}");
    assert_eq!(report["chat"]["text"], chat, "{report}");
}

fn uid_gid() -> String {
    format!("{}:{}", nix::unistd::getuid(), nix::unistd::getgid())
}

/// Issue 24: a fresh install (the debug `qbox` copied alone into a
/// directory of its own, the PATH holding only that directory: no cargo)
/// builds the agent image without compiling anything: the running qbox goes
/// in under /opt/qbox with its loader and libraries and is started through
/// that loader, as non-root, read-only and hardened, in a busybox base that
/// has no C library of its own.
#[test]
fn an_agent_image_serves_both_tools_through_qbox_run_and_docker_run() {
    let _turn = crate::util::engine_turn();
    let Some(base) = busybox_base() else { return };
    let Some(python) = crate::util::python_mcp() else {
        return;
    };
    let home = TestHome::new();
    let Some(cli) = fake_cli_elf(home.path(), "q") else {
        return;
    };
    let token = "aoa-access-agentimg";
    let mut login = valid_login("agentimg");
    login.access_token = token.into();
    let store = home.login(Flavor::AmazonQ, &login);
    let before = std::fs::read(&store).unwrap();

    let tag = unique_tag("agent");
    let tmp = home.path().join("tmp");
    let images_before = all_images();
    let install = crate::run_mcp::fresh_install(home.path());
    let install_dir = install.parent().unwrap().to_owned();
    assert!(!install_dir.join("cargo").exists());
    std::fs::create_dir_all(&tmp).unwrap();
    let built = crate::util::Qbox::at(&install, home.path())
        .env("PATH", &install_dir)
        .env_remove("DOCKER_HOST")
        .envs(docker_host())
        .env("TMPDIR", &tmp)
        .args(["image", "build", "--agent", "--cli"])
        .args([cli.as_os_str()])
        .args(["--base", &base.0, "--tag", &tag, "--json"])
        .run();
    let _image = RemoveImage(tag.clone());
    built.assert_code(0);
    let report: serde_json::Value = serde_json::from_str(&built.stdout).unwrap();
    assert_eq!(report["tag"], tag.as_str());
    assert_eq!(report["cli"], "/usr/local/bin/q");
    assert_eq!(report["base"], base.0.as_str());
    // This qbox went in, with its loader and libraries; nothing compiled.
    assert_eq!(report["kind"], "packed", "{report}");
    assert_eq!(
        report["binary"],
        std::fs::canonicalize(&install)
            .unwrap()
            .display()
            .to_string()
    );
    assert!(report["libraries"].as_u64().unwrap() >= 2, "{report}");
    assert!(built.stderr.contains("Step 1/"), "{}", built.stderr);
    assert!(built.stderr.contains("under /opt/qbox"), "{}", built.stderr);
    assert!(!built.stderr.contains("cargo"), "{}", built.stderr);
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
    // What the refusal tests look for finds what a build makes.
    assert!(leftovers(&base.0, &images_before).contains(&image_id(&tag).unwrap()));

    // Non-root, HOME in /tmp, the agent enabled, a healthcheck, `serve`.
    assert_eq!(inspect(&tag, "{{.Config.User}}"), "65532:65532");
    let env = inspect(&tag, "{{json .Config.Env}}");
    for wanted in [
        "HOME=/tmp",
        "ENABLE_ADDITIONAL_TOOLS=q-developer-agent",
        "QBOX_AGENT_CLI=/usr/local/bin/q",
        "QBOX_DB=/run/qbox/auth/data.sqlite3",
    ] {
        assert!(env.contains(wanted), "{wanted} in {env}");
    }
    // Started through the packed loader, under the sidecar's name, with
    // only the packed libraries: the base's are never replaced.
    let entrypoint: Vec<String> =
        serde_json::from_str(&inspect(&tag, "{{json .Config.Entrypoint}}")).unwrap();
    assert!(
        entrypoint[0].starts_with("/opt/qbox/lib/ld-linux"),
        "{entrypoint:?}"
    );
    assert_eq!(
        entrypoint[1..],
        [
            "--library-path",
            "/opt/qbox/lib",
            "--inhibit-cache",
            "--argv0",
            "/opt/qbox/bin/qbox-sidecar",
            "/opt/qbox/bin/qbox-sidecar"
        ]
    );
    let healthcheck: Vec<String> =
        serde_json::from_str(&inspect(&tag, "{{json .Config.Healthcheck.Test}}")).unwrap();
    assert_eq!(healthcheck[0], "CMD");
    assert_eq!(healthcheck[1..=entrypoint.len()], entrypoint[..]);
    assert_eq!(healthcheck[entrypoint.len() + 1..], ["health"]);
    assert_eq!(inspect(&tag, "{{json .Config.Cmd}}"), r#"["serve"]"#);
    // The base's layer plus one: the sidecar's files, the CLI and /tmp.
    assert_eq!(
        inspect(&tag, "{{len .RootFS.Layers}}"),
        (inspect(&base.0, "{{len .RootFS.Layers}}")
            .parse::<usize>()
            .unwrap()
            + 1)
        .to_string()
    );

    let (_runtime, q) =
        crate::sidecar_image::standin_for_containers(token, &["answered ", "by qbox run"]);
    q.push(qbox::standin::q::Reply::Answer(
        qbox::standin::q::Answer::text(&["answered by docker run"]),
    ));
    let workspace = home.path().join("workspace");
    std::fs::create_dir_all(&workspace).unwrap();
    let agent_env = |record: &Path| {
        vec![
            "-v".to_owned(),
            format!("{}:/work", workspace.display()),
            "-w".into(),
            "/work".into(),
            "-v".into(),
            format!("{}:/record", record.display()),
            "-e".into(),
            "FAKE_Q_RECORD=/record".into(),
            "-e".into(),
            "QBOX_AGENT_PASS_ENV=FAKE_Q_RECORD".into(),
            "-e".into(),
            format!("QBOX_Q_ENDPOINT={}", q.url()),
        ]
    };

    // Through `qbox run -i IMAGE -- serve`, read-only with a tmpfs at /tmp.
    let record = home.path().join("record-run");
    std::fs::create_dir_all(&record).unwrap();
    let mut args = vec!["run".to_owned(), "-i".into(), "--hardened".into()];
    args.extend(agent_env(&record));
    args.extend([tag.clone(), "--".into(), "serve".into()]);
    let (report, stderr) = drive(&python, &home, Path::new(env!("CARGO_BIN_EXE_qbox")), &args);
    assert_both_tools_answered(&report, &stderr, "answered by qbox run");
    assert_the_cli_saw(&record, token);

    // Through plain `docker run` with a mount made by `qbox snapshot`, as
    // docs/compose.md shows it.
    let snapshot = home.path().join("snapshot");
    qbox(&home, &tmp)
        .args(["snapshot"])
        .args([snapshot.as_os_str()])
        .run()
        .assert_code(0);
    let record = home.path().join("record-docker");
    std::fs::create_dir_all(&record).unwrap();
    let name = unique_tag("agent-run").replace(":latest", "");
    let mut args = vec![
        "run".to_owned(),
        "-i".into(),
        "--rm".into(),
        "--name".into(),
        name.clone(),
        "--read-only".into(),
        "--tmpfs".into(),
        "/tmp".into(),
        "--cap-drop".into(),
        "ALL".into(),
        "--security-opt".into(),
        "no-new-privileges".into(),
        "--user".into(),
        uid_gid(),
        "-v".into(),
        format!("{}:/run/qbox/auth:ro", snapshot.display()),
    ];
    args.extend(agent_env(&record));
    args.push(tag.clone());
    let docker = which("docker");
    let (report, stderr) = drive(&python, &home, &docker, &args);
    assert_both_tools_answered(&report, &stderr, "answered by docker run");
    assert_the_cli_saw(&record, token);

    // Both chats carried the snapshot's token; the host store is untouched;
    // no container is left.
    let requests = q.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    for request in &requests {
        assert_eq!(
            request.authorization.as_deref(),
            Some(format!("Bearer {token}").as_str())
        );
    }
    assert_eq!(std::fs::read(&store).unwrap(), before);
    assert!(docker_lines(&["ps", "-a", "-q", "--filter", &format!("name=^{name}$")]).is_empty());
    assert!(docker_lines(&["ps", "-a", "-q", "--filter", &format!("ancestor={tag}")]).is_empty());
}

fn which(program: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("{program} is not on PATH"))
}

#[test]
fn bad_inputs_to_image_build_are_refused_before_anything_is_created() {
    let _turn = crate::util::engine_turn();
    let Some(base) = busybox_base() else { return };
    let home = TestHome::new();
    let Some(elf) = fake_cli_elf(home.path(), "q") else {
        return;
    };
    let script = home.path().join("script-q");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake-q"),
        &script,
    )
    .unwrap();
    let not_executable = home.path().join("plain-q");
    std::fs::copy(&elf, &not_executable).unwrap();
    std::fs::set_permissions(
        &not_executable,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let foreign_cli = home.path().join("foreign-q");
    let mut bytes = std::fs::read(&elf).unwrap();
    let machine: u16 = if foreign_arch() == "arm64" { 183 } else { 62 };
    bytes[0x12..0x14].copy_from_slice(&machine.to_le_bytes());
    std::fs::write(&foreign_cli, bytes).unwrap();
    std::fs::set_permissions(
        &foreign_cli,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let foreign_base = foreign_image(home.path());
    let absent = unique_tag("absent-base");

    let dynamic = home.path().join("dynamic-q");
    std::fs::copy(which("true"), &dynamic).unwrap();

    let cases: Vec<(&Path, &str, Vec<String>)> = vec![
        (
            &dynamic,
            "",
            vec![
                format!("{} is dynamically linked", dynamic.display()),
                "the base image `qbox-sidecar:latest` has no C library".into(),
            ],
        ),
        (
            &script,
            &base.0,
            vec![
                format!(
                    "{} is not an ELF executable (it is a script)",
                    script.display()
                ),
                "hint: give --cli the CLI's executable itself".into(),
            ],
        ),
        (
            &not_executable,
            &base.0,
            vec![
                format!("{} is not executable (mode 0644)", not_executable.display()),
                format!("chmod +x {}", not_executable.display()),
            ],
        ),
        (
            &foreign_cli,
            &base.0,
            vec![format!(
                "{} is built for {}",
                foreign_cli.display(),
                foreign_arch()
            )],
        ),
        (
            &elf,
            &absent,
            vec![
                format!("the base image `{absent}` is not on this machine"),
                format!("docker pull {absent}"),
                "docker load".into(),
            ],
        ),
        (
            &elf,
            &foreign_base.0,
            vec![format!(
                "the base image `{}` is built for linux/{}",
                foreign_base.0,
                foreign_arch()
            )],
        ),
    ];
    for (cli, base, expected) in cases {
        let tag = unique_tag("refused");
        let tmp = home.path().join("tmp");
        let before = all_images();
        let run = qbox(&home, &tmp)
            .args(["image", "build", "--agent", "--cli"])
            .args([cli.as_os_str()])
            .args(if base.is_empty() {
                vec![]
            } else {
                vec!["--base", base]
            })
            .args(["--tag", &tag])
            .run();
        let _image = RemoveImage(tag.clone());
        run.assert_code(1).assert_one_line_error();
        for text in &expected {
            run.assert_stderr_contains(text);
        }
        assert!(!run.stderr.contains("Step 1/"), "{}", run.stderr);
        assert!(!image_exists(&tag), "{tag} was created");
        let effective_base = if base.is_empty() {
            "qbox-sidecar:latest"
        } else {
            base
        };
        let left = leftovers(effective_base, &before);
        assert!(left.is_empty(), "left behind: {left:?}\n{}", run.stderr);
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
    }
}

#[test]
fn run_mcp_refuses_an_image_for_another_cpu_before_creating_a_container() {
    let _turn = crate::util::engine_turn();
    if busybox_base().is_none() {
        return;
    }
    let home = TestHome::new();
    home.login(Flavor::AmazonQ, &valid_login("foreign"));
    let image = foreign_image(home.path());
    let tmp = home.path().join("tmp");
    let before = all_images();
    let run = qbox(&home, &tmp).args(["run", "--mcp", &image.0]).run();
    run.assert_code(125).assert_one_line_error();
    run.assert_stderr_contains(&format!(
        "image `{}` is built for linux/{}, but the qbox-sidecar that --mcp mounts is for linux/",
        image.0,
        foreign_arch()
    ));
    run.assert_stderr_contains("hint: use an image built for linux/");
    let left = leftovers(&image.0, &before);
    assert!(left.is_empty(), "left behind: {left:?}");
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
    // No run directory (and so no snapshot) was made.
    let runs: Vec<_> = std::fs::read_dir(crate::util::runtime_dir(home.path()))
        .unwrap()
        .flatten()
        .flat_map(|entry| std::fs::read_dir(entry.path()).into_iter().flatten())
        .flatten()
        .collect();
    assert!(runs.is_empty(), "{runs:?}");
}

#[test]
fn run_mcp_on_an_image_without_a_cli_names_the_image_and_q_chat_still_works() {
    let _turn = crate::util::engine_turn();
    let Some(base) = busybox_base() else { return };
    let Some(python) = crate::util::python_mcp() else {
        return;
    };
    let home = TestHome::new();
    let token = "aoa-access-nocli";
    let mut login = valid_login("nocli");
    login.access_token = token.into();
    home.login(Flavor::AmazonQ, &login);
    let (_runtime, q) = crate::sidecar_image::standin_for_containers(token, &["chat ", "works"]);
    let args = vec![
        "run".to_owned(),
        "-e".into(),
        format!("QBOX_Q_ENDPOINT={}", q.url()),
        "--mcp".into(),
        base.0.clone(),
    ];
    let (report, stderr) = drive(&python, &home, Path::new(env!("CARGO_BIN_EXE_qbox")), &args);
    assert_eq!(report["agent"]["is_error"], true, "{report}");
    let text = report["agent"]["text"].as_str().unwrap();
    assert!(
        text.starts_with(&format!(
            "no Kiro CLI was found on PATH in the image `{}`",
            base.0
        )),
        "{text}"
    );
    assert!(text.contains("qbox image build --agent"), "{text}");
    assert_eq!(report["chat"]["is_error"], false, "{report} {stderr}");
    assert_eq!(report["chat"]["text"], "chat works");
    assert!(
        docker_lines(&[
            "ps",
            "-a",
            "-q",
            "--filter",
            &format!("ancestor={}", base.0)
        ])
        .is_empty()
    );
}
