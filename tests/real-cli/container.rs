//! The real CLI inside containers that `qbox run` starts: `qbox run IMAGE
//! -- kiro-cli chat --no-interactive "hello"` (and `q chat` for the Amazon
//! Q CLI) exactly as docs/run.md writes it, and `qbox run --mcp
//! --hardened IMAGE` as a user that is not root, its agent driving the
//! CLI. The image is built here `FROM scratch`: the CLI under its release
//! name with the loader and libraries `ldd` lists, a static busybox and the
//! system's CA bundle. The stand-in service listens on the Docker bridge's
//! host address, which the user's settings name as the endpoint.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use qbox::standin::q::StandinQ;
use qbox::store::Flavor;
use serde_json::json;

use super::{
    Home, Kind, Report, SERVICE_DEFAULT_MODEL, Tools, USER_MODEL, chat_since,
    follows_users_settings, mcp_call, output, sent, users_settings,
};

/// The user the `--mcp` run is started as (and so the container's user).
const NON_ROOT: u32 = 65532;

/// Copies `from` to `root` + `to` (its directories made), mode `mode`.
fn place(root: &Path, from: &Path, to: &str, mode: u32) -> std::io::Result<()> {
    let target = root.join(to.trim_start_matches('/'));
    std::fs::create_dir_all(target.parent().unwrap())?;
    std::fs::copy(from, &target)?;
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
}

/// The libraries and loader `ldd` names for `binary`, as absolute paths.
fn ldd(binary: &Path) -> Result<Vec<String>, String> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|e| format!("ldd: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| path.to_owned())
        })
        .collect())
}

/// Builds the image holding the real CLI; returns its tag.
fn build_image(tools: &Tools, flavor: Flavor) -> Result<String, String> {
    let context = tempfile::Builder::new()
        .prefix("qbox-real-cli-image-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let root = context.path().join("rootfs");
    let io = |e: std::io::Error| e.to_string();
    place(&root, Path::new("/bin/busybox"), "/bin/busybox", 0o755).map_err(io)?;
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).map_err(io)?;
    let cli_path = format!("/usr/local/bin/{}", flavor.binary());
    place(&root, &tools.cli, &cli_path, 0o755).map_err(io)?;
    for library in ldd(&tools.cli)? {
        place(&root, Path::new(&library), &library, 0o755).map_err(io)?;
    }
    let bundle = Path::new("/etc/ssl/certs/ca-certificates.crt");
    if bundle.exists() {
        place(&root, bundle, "/etc/ssl/certs/ca-certificates.crt", 0o644).map_err(io)?;
    }
    let tmp = root.join("tmp");
    std::fs::create_dir_all(&tmp).map_err(io)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).map_err(io)?;
    std::fs::write(
        context.path().join("Dockerfile"),
        "FROM scratch\nCOPY rootfs/ /\nENV PATH=/usr/local/bin:/bin\n",
    )
    .map_err(io)?;
    let tag = format!("qbox-real-cli-{}:check", flavor.binary());
    let built = Command::new("docker")
        .args(["build", "-q", "-t", &tag])
        .arg(context.path())
        .output()
        .map_err(|e| format!("docker build: {e}"))?;
    if !built.status.success() {
        return Err(String::from_utf8_lossy(&built.stderr).into_owned());
    }
    Ok(tag)
}

/// Items 3 and 4 of the check.
pub async fn check(tools: &Tools, flavor: Flavor, report: &mut Report) {
    let image = match build_image(tools, flavor) {
        Ok(tag) => tag,
        Err(problem) => {
            report.check(
                "container: an image with the real CLI builds",
                false,
                problem,
            );
            return;
        }
    };
    let gateway = async {
        let docker = qbox::container::engine::connect().await.ok()?;
        qbox::container::engine::bridge_gateway(&docker)
            .await
            .ok()
            .flatten()
    }
    .await;
    let Some(gateway) = gateway else {
        report.check(
            "container: the engine has an IPv4 bridge",
            false,
            "no gateway",
        );
        return;
    };
    let access = "aoa-real-cli-container";
    let q = StandinQ::start_on(gateway, access).await.unwrap();
    q.set_models(&[SERVICE_DEFAULT_MODEL, USER_MODEL], SERVICE_DEFAULT_MODEL);

    // docs/run.md's first two examples, as written (the image's name aside).
    let home = Home::with_settings(flavor, &users_settings(&q.url()));
    home.login(Kind::BuilderId, access, time::Duration::hours(1));
    let cli = flavor.binary();
    let mut run = home.command(&tools.qbox);
    run.args([
        "run",
        &image,
        "--",
        cli,
        "chat",
        "--no-interactive",
        "hello",
    ]);
    let before = q.requests().len();
    let (code, stdout, stderr) = output(run);
    let request = chat_since(&q, before);
    report.check(
        &format!("container: `qbox run IMAGE -- {cli} chat --no-interactive \"hello\"` answers"),
        code == 0 && stdout.contains("You said: ") && stdout.contains("hello"),
        format!("exit {code}: {stdout} {stderr}"),
    );
    report.check(
        "container: the CLI there sends optout true and the user's modelId",
        follows_users_settings(request.as_ref()),
        sent(request.as_ref()),
    );

    // `qbox run --mcp --hardened IMAGE` started by a user that is not root
    // (the container runs as that user, read-only, no capabilities).
    let home = Home::with_settings(flavor, &users_settings(&q.url()));
    home.login(Kind::BuilderId, access, time::Duration::hours(1));
    chown_tree(home.path(), NON_ROOT);
    let docker_gid = std::fs::metadata("/var/run/docker.sock").map_or(0, |m| m.gid());
    let mut command = home.command(Path::new("setpriv"));
    command
        .arg(format!("--reuid={NON_ROOT}"))
        .arg(format!("--regid={NON_ROOT}"))
        .arg(format!("--groups={docker_gid}"))
        .arg("--")
        .arg(&tools.qbox)
        .args(["run", "--mcp", "--hardened", &image])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let before = q.requests().len();
    let (text, is_error) = mcp_call(
        command,
        "q-developer-agent",
        &json!({"prompt": "hello from a hardened container"}),
    );
    let request = chat_since(&q, before);
    report.check(
        "container: `qbox run --mcp --hardened IMAGE` as a non-root user: the agent's CLI answers",
        !is_error && text.contains("hello from a hardened container"),
        &text,
    );
    report.check(
        "container: the agent's CLI there sends optout true and the user's modelId",
        follows_users_settings(request.as_ref()),
        sent(request.as_ref()),
    );

    // docs/run.md's agent image: `qbox image build --agent --cli PATH`
    // on this image, then `qbox run -i --hardened -v "$PWD:/work" -w /work
    // qbox-agent -- serve`.
    let agent_tag = format!("qbox-real-cli-agent-{cli}:check");
    let home = Home::with_settings(flavor, &users_settings(&q.url()));
    home.login(Kind::BuilderId, access, time::Duration::hours(1));
    let named = home.path().join("cli-bin").join(cli);
    std::fs::create_dir_all(named.parent().unwrap()).unwrap();
    std::fs::copy(&tools.cli, &named).unwrap();
    let mut build = home.command(&tools.qbox);
    build
        .args(["image", "build", "--agent", "--cli"])
        .arg(&named)
        .args(["--base", &image, "--tag", &agent_tag]);
    let (code, _, stderr) = output(build);
    report.check(
        "container: `qbox image build --agent --cli PATH` packs the real CLI",
        code == 0,
        format!("exit {code}: {stderr}"),
    );
    let work = home.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let mut command = home.command(&tools.qbox);
    command
        .args(["run", "-i", "--hardened", "-v"])
        .arg(format!("{}:/work", work.display()))
        .args(["-w", "/work", &agent_tag, "--", "serve"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let before = q.requests().len();
    let (text, is_error) = mcp_call(
        command,
        "q-developer-agent",
        &json!({"prompt": "hello from the agent image"}),
    );
    let request = chat_since(&q, before);
    report.check(
        "container: the agent image's CLI answers through `qbox run -i --hardened ... -- serve`",
        code == 0 && !is_error && text.contains("hello from the agent image"),
        &text,
    );
    report.check(
        "container: the agent image's CLI sends optout true and the user's modelId",
        follows_users_settings(request.as_ref()),
        sent(request.as_ref()),
    );
    let _ = Command::new("docker")
        .args(["rmi", "-f", &agent_tag, &image])
        .output();
}

/// Gives `dir` and everything under it to `uid` (its group too).
fn chown_tree(dir: &Path, uid: u32) {
    let mut stack: Vec<PathBuf> = vec![dir.to_owned()];
    while let Some(path) = stack.pop() {
        let _ = std::os::unix::fs::lchown(&path, Some(uid), Some(uid));
        if path.is_dir()
            && let Ok(entries) = std::fs::read_dir(&path)
        {
            stack.extend(entries.filter_map(Result::ok).map(|e| e.path()));
        }
    }
}
