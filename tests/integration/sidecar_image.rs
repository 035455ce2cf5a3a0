//! The sidecar image, the compose stack and `qbox demo`, against the real
//! Docker Engine. The image is built once, by `qbox image build --static`
//! itself (from QBOX_SIDECAR_BINARY when set, else with cargo for musl).

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use qbox::standin::q::{Answer, Reply, StandinQ};
use qbox::store::Flavor;

use crate::util::{TestHome, valid_login};

const TAG: &str = "qbox-sidecar:test";
/// The image's size target (issue 15: 8 MB with musl and with the glibc
/// fallback; docs/performance.md).
const MAX_IMAGE_BYTES: u64 = 8_000_000;

fn docker_answers() -> bool {
    Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The static binary the image was built from.
static BINARY: OnceLock<String> = OnceLock::new();

/// `qbox image build --static` runs cargo when no binary is given: it needs the
/// toolchain's own variables, which the test harness's clean environment
/// drops.
fn with_toolchain_env(mut qbox: crate::util::Qbox) -> crate::util::Qbox {
    for (key, value) in crate::util::toolchain_vars() {
        qbox = qbox.env(key, value);
    }
    qbox
}

/// Builds the sidecar image once; `None` (with a visible skip) when no
/// engine answers.
pub(crate) fn sidecar_image() -> Option<&'static str> {
    static BUILT: OnceLock<bool> = OnceLock::new();
    let built = *BUILT.get_or_init(|| {
        if !docker_answers() {
            return false;
        }
        let home = TestHome::new();
        let run = with_toolchain_env(home.qbox())
            .env_remove("DOCKER_HOST")
            .args(["image", "build", "--static", "--tag", TAG, "--json"])
            .run();
        run.assert_code(0);
        let built: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        assert_eq!(built["tag"], TAG);
        assert_eq!(built["kind"], "static", "{built}");
        assert!(
            built["id"].as_str().unwrap().starts_with("sha256:"),
            "{built}"
        );
        assert!(
            run.stderr.contains("Step 1/"),
            "build progress shown: {}",
            run.stderr
        );
        BINARY
            .set(built["binary"].as_str().unwrap().to_owned())
            .unwrap();
        true
    });
    if built {
        return Some(TAG);
    }
    assert!(
        std::env::var_os("QBOX_REQUIRE_DOCKER").is_none(),
        "QBOX_REQUIRE_DOCKER is set but no Docker engine answers"
    );
    eprintln!("SKIPPED: no Docker engine");
    None
}

/// Tests that use the engine run one at a time (they share images and the
/// bridge network, and the machine has two cores).
fn serial() -> std::sync::MutexGuard<'static, ()> {
    crate::util::engine_turn()
}

fn inspect(image: &str, format: &str) -> String {
    let out = Command::new("docker")
        .args(["image", "inspect", "--format", format, image])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A stand-in Amazon Q reachable from containers, on its own runtime.
pub(crate) fn standin_for_containers(
    token: &str,
    answer: &[&str],
) -> (tokio::runtime::Runtime, StandinQ) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let standin = runtime
        .block_on(async {
            let docker = qbox::container::engine::connect().await.unwrap();
            let gateway = qbox::container::engine::bridge_gateway(&docker)
                .await
                .unwrap();
            StandinQ::start_on(gateway.expect("an IPv4 bridge"), token).await
        })
        .unwrap();
    standin.push(Reply::Answer(Answer::text(answer)));
    (runtime, standin)
}

/// The qbox-managed containers that match `filter` (a `docker ps`
/// filter naming this test's own containers: the engine is shared with
/// whatever else runs on the machine).
pub(crate) fn managed_containers(filter: &str) -> usize {
    let out = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            "label=qbox.managed=true",
            "--filter",
            filter,
        ])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().lines().count()
}

#[test]
fn the_image_is_scratch_small_non_root_with_the_documented_entrypoint_and_healthcheck() {
    let Some(image) = sidecar_image() else { return };
    let _turn = serial();
    let size: u64 = inspect(image, "{{.Size}}").parse().unwrap();
    assert!(size <= MAX_IMAGE_BYTES, "the image is {size} bytes");
    assert_eq!(inspect(image, "{{.Config.User}}"), "65532:65532");
    assert_eq!(
        inspect(image, "{{json .Config.Entrypoint}}"),
        r#"["qbox-sidecar"]"#
    );
    assert_eq!(inspect(image, "{{json .Config.Cmd}}"), r#"["serve"]"#);
    assert_eq!(
        inspect(image, "{{json .Config.Healthcheck.Test}}"),
        r#"["CMD","qbox-sidecar","health"]"#
    );
    // One layer: the binary. FROM scratch brings nothing else.
    assert_eq!(inspect(image, "{{len .RootFS.Layers}}"), "1");
    assert!(inspect(image, "{{json .Config.Env}}").contains("QBOX_DB=/run/qbox/auth/data.sqlite3"));
}

#[test]
fn in_a_container_the_sidecar_reads_the_mounted_snapshot_and_streams_an_answer() {
    let Some(image) = sidecar_image() else { return };
    let _turn = serial();
    let home = TestHome::new();
    let login = valid_login("img");
    home.login(Flavor::AmazonQ, &login);
    let (_runtime, standin) =
        standin_for_containers(&login.access_token, &["static ", "and ", "streamed"]);

    // The stdio healthcheck: the login at QBOX_DB is readable.
    let health = home
        .qbox()
        .env_remove("DOCKER_HOST")
        .args(["run", image, "--", "health"])
        .run();
    health.assert_code(0);
    let report: serde_json::Value = serde_json::from_str(health.stdout.trim()).unwrap();
    assert_eq!(report["status"], "ok");
    assert_eq!(report["transport"], "stdio");
    assert_eq!(report["store"], "/run/qbox/auth/data.sqlite3");

    // Without a login mounted the same check fails with the no-login code.
    let unhealthy = home
        .qbox()
        .env_remove("DOCKER_HOST")
        .args(["run", "--auth", "none", image, "--", "health"])
        .run();
    unhealthy.assert_code(4);

    // The static binary resolves nothing and needs no C library: a chat
    // against the stand-in on the bridge gateway.
    let own_label = format!("test.own=image-chat-{}", std::process::id());
    let chat = home
        .qbox()
        .env_remove("DOCKER_HOST")
        .args([
            "run",
            "--label",
            &own_label,
            "-e",
            &format!("QBOX_Q_ENDPOINT={}", standin.url()),
            image,
            "--",
            "chat",
            "hello from the image",
        ])
        .run();
    chat.assert_code(0);
    assert_eq!(chat.stdout.trim_end(), "static and streamed");
    let requests = standin.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].authorization.as_deref(),
        Some(format!("Bearer {}", login.access_token).as_str())
    );
    assert_eq!(managed_containers(&format!("label={own_label}")), 0);
}

/// Runs `docker-compose` for one project; `down` on drop, whatever happened.
struct ComposeProject {
    name: String,
    file: std::path::PathBuf,
    env: Vec<(String, String)>,
}

impl ComposeProject {
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("docker-compose");
        command
            .args(["-p", &self.name, "-f"])
            .arg(&self.file)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("DOCKER_HOST")
            .stdin(Stdio::null());
        command
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        self.command(args).output().unwrap()
    }

    fn containers(&self) -> Vec<String> {
        let out = Command::new("docker")
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("label=com.docker.compose.project={}", self.name),
            ])
            .output()
            .unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for ComposeProject {
    fn drop(&mut self) {
        let _ = self.run(&["down", "--volumes", "--remove-orphans", "--timeout", "5"]);
    }
}

fn health_status(container: &str) -> String {
    let out = Command::new("docker")
        .args(["inspect", "--format", "{{.State.Health.Status}}", container])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn wait_for_file(path: &Path, within: Duration) {
    crate::util::wait_until(within, &format!("{} appears", path.display()), || {
        path.exists()
    });
}

#[test]
fn the_compose_stack_comes_up_healthy_answers_its_client_and_goes_down_clean() {
    let Some(image) = sidecar_image() else { return };
    let _turn = serial();
    if Command::new("docker-compose")
        .arg("version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("QBOX_REQUIRE_DOCKER").is_none(),
            "QBOX_REQUIRE_DOCKER is set but docker-compose is missing"
        );
        eprintln!("SKIPPED: no docker-compose");
        return;
    }
    let home = TestHome::new();
    let login = valid_login("compose");
    let store = home.login(Flavor::AmazonQ, &login);
    let (_runtime, standin) =
        standin_for_containers(&login.access_token, &["answered ", "through ", "compose"]);

    // The host side, as documented: a watcher keeps the snapshot fresh.
    let qbox_dir = home.path().join("project/.qbox");
    let auth_dir = qbox_dir.join("auth");
    let mut watcher = home
        .qbox()
        .args(["snapshot"])
        .args([auth_dir.to_str().unwrap(), "--watch", "--interval", "200ms"])
        .args(["--db", store.to_str().unwrap()])
        .command();
    let mut watcher = watcher
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_file(&auth_dir.join("data.sqlite3"), Duration::from_secs(20));
    let token_file = qbox_dir.join("mcp-token");
    std::fs::write(&token_file, "compose-test-bearer-token\n").unwrap();
    std::fs::set_permissions(
        &token_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();

    let project = ComposeProject {
        name: format!("qboxtest{}", std::process::id()),
        file: Path::new(env!("CARGO_MANIFEST_DIR")).join("compose/docker-compose.yml"),
        env: vec![
            ("QBOX_UID".into(), id_of("-u")),
            ("QBOX_GID".into(), id_of("-g")),
            ("QBOX_SIDECAR_IMAGE".into(), image.into()),
            ("QBOX_AUTH_DIR".into(), auth_dir.display().to_string()),
            (
                "QBOX_MCP_TOKEN_FILE".into(),
                token_file.display().to_string(),
            ),
            ("QBOX_Q_ENDPOINT".into(), standin.url()),
            ("QBOX_PROMPT".into(), "are you there?".into()),
        ],
    };
    let up = project.run(&["up", "-d", "sidecar"]);
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let sidecar = project.containers();
    assert_eq!(sidecar.len(), 1, "{sidecar:?}");
    crate::util::wait_until(
        Duration::from_secs(90),
        "the sidecar's health check says healthy",
        || {
            let status = health_status(&sidecar[0]);
            assert_ne!(status, "unhealthy", "the sidecar became unhealthy");
            status == "healthy"
        },
    );

    let client = project.run(&["run", "--rm", "client"]);
    let stdout = String::from_utf8_lossy(&client.stdout);
    assert!(
        client.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&client.stderr)
    );
    assert_eq!(stdout.trim_end(), "answered through compose");
    let requests = standin.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].body["conversationState"]["currentMessage"]["userInputMessage"]["content"],
        "are you there?"
    );

    // A client with the wrong bearer token is turned away.
    let wrong = qbox_dir.join("wrong-token");
    std::fs::write(&wrong, "not-the-token").unwrap();
    let intruder = project
        .command(&[
            "run",
            "--rm",
            "-v",
            &format!("{}:/wrong:ro", wrong.display()),
            "client",
        ])
        .args([
            "call",
            "--url",
            "http://sidecar:8080/mcp",
            "--token-file",
            "/wrong",
            "q-chat",
            "-a",
            "prompt=x",
        ])
        .output()
        .unwrap();
    assert!(!intruder.status.success());
    assert!(
        String::from_utf8_lossy(&intruder.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&intruder.stderr)
    );

    let down = project.run(&["down", "--timeout", "5"]);
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert!(
        project.containers().is_empty(),
        "containers left after down"
    );
    watcher.kill().unwrap();
    watcher.wait().unwrap();
}

fn id_of(flag: &str) -> String {
    let out = Command::new("id").arg(flag).output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn the_demo_runs_the_whole_chain_in_a_container_and_cleans_up() {
    let Some(image) = sidecar_image() else { return };
    let _turn = serial();
    let home = TestHome::new();
    let run = crate::demo::demo_in(&home)
        .env_remove("DOCKER_HOST")
        .args(["--image", image, "--binary", BINARY.get().unwrap()])
        .run();
    run.assert_code(0);
    assert!(
        run.stdout
            .contains("running in a container that `qbox run` started"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("qbox run -i --name qbox-demo-"),
        "{}",
        run.stderr
    );
    crate::demo::assert_verified_and_clean(&home, &run);
    assert_eq!(managed_containers(&demo_container(&run.stderr)), 0);
}

/// A filter for the container this demo ran (`--name qbox-demo-PID`, as its
/// log says), not a user's demo beside the tests.
fn demo_container(stderr: &str) -> String {
    let at = stderr
        .find("--name qbox-demo-")
        .unwrap_or_else(|| panic!("the demo names its container: {stderr}"));
    let name = stderr[at + "--name ".len()..]
        .split_whitespace()
        .next()
        .unwrap();
    format!("name=^{name}$")
}

/// The first run's path: no static sidecar given or beside qbox, so the
/// demo packs the running (dynamically linked) qbox as qbox-sidecar with its
/// loader and libraries instead of compiling one; the whole chain then runs
/// in that image.
#[test]
fn without_a_static_sidecar_the_demo_packs_the_running_qbox() {
    let Some(_) = sidecar_image() else { return };
    let _turn = serial();
    let home = TestHome::new();
    let tag = crate::agent_image::unique_tag("packed");
    let _remove = crate::agent_image::RemoveImage(tag.clone());
    let run = crate::demo::demo_in(&home)
        .env_remove("DOCKER_HOST")
        .env_remove("QBOX_SIDECAR_BINARY")
        .args(["--image", &tag])
        .run();
    run.assert_code(0);
    assert!(
        run.stderr
            .contains("it holds this qbox as qbox-sidecar with its loader"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("with cargo"),
        "nothing compiled: {}",
        run.stderr
    );
    assert!(
        run.stdout
            .contains("running in a container that `qbox run` started"),
        "{}",
        run.stdout
    );
    crate::demo::assert_verified_and_clean(&home, &run);
    // The image runs the sidecar under its own name, from a scratch root
    // whose only files are the binary, its loader and its libraries.
    let history = Command::new("docker")
        .args([
            "image",
            "inspect",
            "--format",
            "{{json .Config.Entrypoint}}",
            &tag,
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&history.stdout).trim(),
        r#"["qbox-sidecar"]"#
    );
    assert_eq!(managed_containers(&demo_container(&run.stderr)), 0);
}
