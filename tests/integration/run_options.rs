//! `qbox run`'s `docker run` options against the real engine: published
//! ports, `--env-file` with docker's rules, `--hardened`, `--cap-drop`, and
//! bad values refused (exit 125) before anything is created.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use qbox::store::Flavor;

use crate::util::{TestHome, valid_login};

const IMAGE: &str = "qbox-test-options:latest";

/// A busybox image with the tools these tests use and a page to serve;
/// `None` (a visible skip) without an engine or busybox.
fn image() -> Option<&'static str> {
    static READY: OnceLock<bool> = OnceLock::new();
    let tools = [
        "sh", "env", "touch", "chown", "echo", "httpd", "sleep", "cat",
    ];
    let ready = *READY.get_or_init(|| {
        crate::util::import_busybox_image(IMAGE, &tools, "/bin", |root| {
            std::fs::create_dir_all(root.join("www")).unwrap();
            std::fs::write(root.join("www/index.html"), "published through qbox\n").unwrap();
        })
    });
    ready.then_some(IMAGE)
}

fn home() -> TestHome {
    let home = TestHome::new();
    home.login(Flavor::AmazonQ, &valid_login("options"));
    home
}

fn qbox_run(home: &TestHome, args: &[&str]) -> crate::util::Qbox {
    home.qbox()
        .env_remove("DOCKER_HOST")
        .args(["run"])
        .args(args.iter().copied())
}

#[test]
fn env_files_follow_dockers_rules_and_e_wins() {
    let Some(image) = image() else { return };
    let _turn = crate::util::engine_turn();
    let home = home();
    let file = home.path().join("vars.env");
    std::fs::write(
        &file,
        "# a comment\n\nPLAIN=1\nQUOTED=\"kept as is\"\nFROM_HOST\nNOT_ON_HOST\n  # indented comment\nOVERRIDDEN=file\n",
    )
    .unwrap();
    let run = qbox_run(
        &home,
        &[
            "--auth",
            "none",
            "--env-file",
            file.to_str().unwrap(),
            "-e",
            "OVERRIDDEN=flag",
            image,
            "--",
            "env",
        ],
    )
    .env("FROM_HOST", "host value")
    .run();
    run.assert_code(0);
    let lines: Vec<&str> = run.stdout.lines().collect();
    for expected in [
        "PLAIN=1",
        "QUOTED=\"kept as is\"",
        "FROM_HOST=host value",
        "OVERRIDDEN=flag",
    ] {
        assert!(
            lines.contains(&expected),
            "{expected} missing from {lines:?}"
        );
    }
    assert!(!run.stdout.contains("NOT_ON_HOST"), "{}", run.stdout);
    assert!(!run.stdout.contains("OVERRIDDEN=file"), "{}", run.stdout);
}

#[test]
fn hardened_containers_write_only_to_tmp() {
    let Some(image) = image() else { return };
    let _turn = crate::util::engine_turn();
    let home = home();
    let script = "touch /outside 2>/dev/null && echo outside-writable; touch /tmp/inside && echo tmp-writable";
    for flags in [&["--hardened"][..], &["--read-only", "--tmpfs", "/tmp"][..]] {
        let mut args = flags.to_vec();
        args.extend(["--auth", "none", image, "--", "sh", "-c", script]);
        let run = qbox_run(&home, &args).run();
        run.assert_code(0);
        assert_eq!(
            run.stdout.trim(),
            "tmp-writable",
            "{flags:?}: {}",
            run.stdout
        );
    }
    // Without them the root filesystem is writable: the check can fail.
    let run = qbox_run(&home, &["--auth", "none", image, "--", "sh", "-c", script]).run();
    assert!(run.stdout.contains("outside-writable"), "{}", run.stdout);
}

#[test]
fn dropped_capabilities_are_gone_inside() {
    let Some(image) = image() else { return };
    let _turn = crate::util::engine_turn();
    let home = home();
    let chown = "touch /tmp/f && chown 1:1 /tmp/f && echo chowned";
    let allowed = qbox_run(
        &home,
        &[
            "--auth", "none", "-u", "0:0", image, "--", "sh", "-c", chown,
        ],
    )
    .run();
    allowed.assert_code(0);
    assert_eq!(allowed.stdout.trim(), "chowned");
    let dropped = qbox_run(
        &home,
        &[
            "--auth",
            "none",
            "-u",
            "0:0",
            "--cap-drop",
            "ALL",
            image,
            "--",
            "sh",
            "-c",
            chown,
        ],
    )
    .run();
    assert_ne!(dropped.code, 0, "{}", dropped.stdout);
    assert!(!dropped.stdout.contains("chowned"));
}

#[test]
fn a_published_port_reaches_the_container_from_the_host() {
    let Some(image) = image() else { return };
    let _turn = crate::util::engine_turn();
    let home = home();
    let name = format!("qbox-test-publish-{}", std::process::id());
    let mut server = qbox_run(
        &home,
        &[
            "--auth",
            "none",
            "--name",
            &name,
            "-p",
            "127.0.0.1:0:8080",
            image,
            "--",
            "httpd",
            "-f",
            "-p",
            "8080",
            "-h",
            "/www",
        ],
    )
    .command()
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // The engine chose the host port; `docker port` tells which.
    let deadline = Instant::now() + Duration::from_secs(30);
    let address = loop {
        let out = Command::new("docker")
            .args(["port", &name, "8080/tcp"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if out.status.success() && text.starts_with("127.0.0.1:") {
            break text.lines().next().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "the port was never published");
        std::thread::sleep(Duration::from_millis(50));
    };
    let body = loop {
        let fetched = std::net::TcpStream::connect(&address).and_then(|mut stream| {
            stream.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer)?;
            Ok(answer)
        });
        match fetched {
            Ok(answer) if answer.contains("200") => break answer,
            _ => {
                assert!(
                    Instant::now() < deadline,
                    "httpd never answered: {fetched:?}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    assert!(body.contains("published through qbox"), "{body}");
    let _ = Command::new("docker").args(["kill", &name]).output();
    // `docker kill` sends SIGKILL: qbox exits with the container's 137.
    let status = server.wait().unwrap();
    assert_eq!(status.code(), Some(137));
    let left = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("name={name}")])
        .output()
        .unwrap();
    assert!(left.stdout.is_empty(), "the container was left behind");
}

#[test]
fn bad_values_exit_125_naming_the_value_before_the_engine_is_asked() {
    let home = home();
    // An engine that cannot be reached: the options are checked first.
    let cases: &[(&[&str], &str)] = &[
        (&["-p", "70000"], "--publish `70000`"),
        (&["--cpus", "0"], "--cpus `0`"),
        (
            &["--mount", "type=nfs,target=/x"],
            "--mount `type=nfs,target=/x`",
        ),
        (
            &["--security-opt", "privileged"],
            "--security-opt `privileged`",
        ),
        (&["--add-host", "db:nowhere"], "--add-host `db:nowhere`"),
        (
            &["--label", "qbox.managed=false"],
            "--label `qbox.managed=false`",
        ),
        (&["--pull", "always"], "--pull `always`"),
        (&["--pids-limit", "0"], "--pids-limit `0`"),
        (&["--tmpfs", "/run/qbox/auth"], "--tmpfs `/run/qbox/auth`"),
        (
            &["--env-file", "/definitely/not/here.env"],
            "--env-file `/definitely/not/here.env`",
        ),
    ];
    for (flags, named) in cases {
        let mut args = flags.to_vec();
        args.extend(["--auth", "none", "img", "--", "true"]);
        let run = home
            .qbox()
            .env("DOCKER_HOST", "unix:///nonexistent/qbox-options.sock")
            .args(["run"])
            .args(args)
            .run();
        run.assert_code(125)
            .assert_one_line_error()
            .assert_stderr_contains(named);
        assert!(!run.stderr.contains("nonexistent"), "{}", run.stderr);
    }
}

#[test]
fn issue_30_what_would_make_the_login_writable_is_refused_before_the_engine_is_asked() {
    let home = home();
    let refused: &[(&[&str], &str)] = &[
        (&["--cap-add", "SYS_ADMIN"], "--cap-add CAP_SYS_ADMIN"),
        (&["--cap-add", "all"], "--cap-add ALL"),
        // open_by_handle_at through any bind mount reads the host's files.
        (
            &["--cap-add", "dac_read_search"],
            "--cap-add CAP_DAC_READ_SEARCH",
        ),
        (&["--cap-add", "SYS_MODULE"], "--cap-add CAP_SYS_MODULE"),
        (&["--cap-add", "CAP_SYS_RAWIO"], "--cap-add CAP_SYS_RAWIO"),
        (&["--cap-add", "bpf"], "--cap-add CAP_BPF"),
        (&["--cap-add", "perfmon"], "--cap-add CAP_PERFMON"),
        (
            &["--security-opt", "systempaths=unconfined"],
            "--security-opt systempaths=unconfined",
        ),
        (
            &["--security-opt", "apparmor=unconfined"],
            "--security-opt apparmor=unconfined",
        ),
        (
            &["--security-opt", "seccomp:unconfined"],
            "--security-opt seccomp=unconfined",
        ),
        (&["--tmpfs", "/run/qbox//auth"], "--tmpfs `/run/qbox//auth`"),
        (
            &["--tmpfs", "/run/qbox/./auth"],
            "--tmpfs `/run/qbox/./auth`",
        ),
        (&["--tmpfs", "/run//qbox/auth"], "--tmpfs `/run//qbox/auth`"),
        (
            &["--mount", "type=tmpfs,target=/run/qbox"],
            "--mount `type=tmpfs,target=/run/qbox`",
        ),
        (&["-v", "/tmp:/run/qbox"], "/run/qbox is reserved"),
        (&["-v", "/tmp:/run"], "/run is reserved"),
    ];
    for auth in ["snapshot", "live"] {
        for (flags, named) in refused {
            let mut args = flags.to_vec();
            args.extend(["--auth", auth, "img", "--", "true"]);
            let run = home
                .qbox()
                .env("DOCKER_HOST", "unix:///nonexistent/qbox-options.sock")
                .args(["run"])
                .args(args)
                .run();
            run.assert_code(125)
                .assert_stderr_contains(named)
                .assert_stderr_contains("hint:");
            assert!(!run.stderr.contains("nonexistent"), "{}", run.stderr);
        }
    }
    // A seccomp profile of one's own that allows what it does not name is
    // `seccomp=unconfined` by another name; a strict one is the user's
    // choice and passes on to the engine.
    let allowing = home.path().join("allow.json");
    std::fs::write(&allowing, r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#).unwrap();
    let strict = home.path().join("strict.json");
    std::fs::write(
        &strict,
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW"}]}"#,
    )
    .unwrap();
    for (profile, refused) in [(&allowing, true), (&strict, false)] {
        let run = home
            .qbox()
            .env("DOCKER_HOST", "unix:///nonexistent/qbox-options.sock")
            .args(["run", "--security-opt"])
            .args([format!("seccomp={}", profile.display())])
            .args(["img", "--", "true"])
            .run();
        run.assert_code(125);
        assert_eq!(
            run.stderr.contains("defaultAction SCMP_ACT_ALLOW"),
            refused,
            "{}",
            run.stderr
        );
    }
    // Without a login there is nothing to make writable: the capability
    // and the profiles pass, and the run goes on to the engine.
    for flags in [
        &["--cap-add", "SYS_ADMIN"][..],
        &["--security-opt", "apparmor=unconfined"][..],
    ] {
        let mut args = flags.to_vec();
        args.extend(["--auth", "none", "img", "--", "true"]);
        let run = home
            .qbox()
            .env("DOCKER_HOST", "unix:///nonexistent/qbox-options.sock")
            .args(["run"])
            .args(args)
            .run();
        run.assert_code(125);
        assert!(!run.stderr.contains("writable"), "{}", run.stderr);
    }
}

#[test]
fn issue_30_auth_live_refuses_a_store_outside_a_cli_data_directory() {
    let home = home();
    // A store beside the user's keys: mounting its directory would show them.
    let store = home.path().join("my-login.sqlite3");
    std::fs::copy(home.store_path(Flavor::AmazonQ), &store).unwrap();
    let run = home
        .qbox()
        .env("DOCKER_HOST", "unix:///nonexistent/qbox-options.sock")
        .args(["--db", store.to_str().unwrap(), "--cli", "q", "run"])
        .args(["--auth", "live", "img", "--", "true"])
        .run();
    run.assert_code(125)
        .assert_stderr_contains("not a CLI's own data directory")
        .assert_stderr_contains("hint: use the default --auth snapshot");
    assert!(!run.stderr.contains("nonexistent"), "{}", run.stderr);

    // A directory merely named like a CLI's, away from where the CLI keeps
    // its store (a backup beside other files), is refused as well.
    let backup = home.path().join("backup/amazon-q");
    std::fs::create_dir_all(&backup).unwrap();
    std::fs::copy(
        home.store_path(Flavor::AmazonQ),
        backup.join("data.sqlite3"),
    )
    .unwrap();
    std::fs::write(backup.join("id_ed25519"), "a key").unwrap();
    let run = home
        .qbox()
        .env("DOCKER_HOST", "unix:///nonexistent/qbox-options.sock")
        .args(["--db", backup.join("data.sqlite3").to_str().unwrap()])
        .args(["--cli", "q", "run", "--auth", "live", "img", "--", "true"])
        .run();
    run.assert_code(125)
        .assert_stderr_contains("not a CLI's own data directory");
}
