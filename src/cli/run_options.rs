//! Every `docker run` option of `qbox run`, as clap sees it, turned into
//! checked [`HostOptions`] (see `container::options`). qbox's own options
//! (`--auth`, `--keep`, `-d`, `--mcp`, ...) are `RunArgs`' in `run.rs`.

use std::path::{Path, PathBuf};

use crate::container::options::{self, HostOptions, OptionError};

/// Options with `docker run`'s spelling and meaning.
#[derive(Debug, clap::Args)]
pub struct DockerOptions {
    /// Set an environment variable (NAME=value, or NAME to pass the host's value).
    #[arg(short = 'e', long = "env", value_name = "NAME[=VALUE]")]
    env: Vec<String>,
    /// Bind mount SRC:DST[:ro|rw].
    #[arg(short = 'v', long = "volume", value_name = "SRC:DST[:ro]")]
    volumes: Vec<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long)]
    workdir: Option<String>,
    /// User inside the container (default: your uid:gid, so the 0600 snapshot is readable).
    #[arg(short = 'u', long)]
    user: Option<String>,
    /// Keep stdin open and forward it.
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Allocate a terminal (stdin must be one).
    #[arg(short = 't', long)]
    pub(super) tty: bool,
    /// Container name.
    #[arg(long)]
    name: Option<String>,
    /// Network to connect to.
    #[arg(long)]
    network: Option<String>,
    /// Run an init process as PID 1 (signal handling, zombie reaping).
    #[arg(long)]
    init: bool,
    /// Override the image's entrypoint.
    #[arg(long)]
    entrypoint: Option<String>,
    /// Memory limit (e.g. 512m, 2g); no swap beyond it. Exceeding it kills the container (exit 137).
    #[arg(short = 'm', long, value_name = "SIZE")]
    pub(super) memory: Option<String>,
    /// Seconds to wait after passing on SIGINT/SIGTERM/SIGHUP before killing the container.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    stop_timeout: u32,
    /// Publish a container port: [IP:][HOST_PORT:]CONTAINER_PORT[/tcp|udp|sctp].
    #[arg(short = 'p', long = "publish", value_name = "[IP:][HOST:]PORT")]
    publish: Vec<String>,
    /// Publish every exposed port to a random host port.
    #[arg(short = 'P', long = "publish-all")]
    publish_all: bool,
    /// Read environment variables from a file (docker's rules: `#` comments, NAME=VALUE
    /// taken literally, NAME alone from the environment); -e wins over it.
    #[arg(long = "env-file", value_name = "FILE")]
    env_files: Vec<PathBuf>,
    /// A mount: type=bind|volume|tmpfs,source=…,target=…[,readonly].
    #[arg(long = "mount", value_name = "SPEC")]
    mounts: Vec<String>,
    /// Mount the container's root filesystem read-only.
    #[arg(long)]
    read_only: bool,
    /// Mount a tmpfs at PATH[:OPTIONS].
    #[arg(long, value_name = "PATH[:OPTIONS]")]
    tmpfs: Vec<String>,
    /// Add a Linux capability (or ALL).
    #[arg(long, value_name = "CAP")]
    cap_add: Vec<String>,
    /// Drop a Linux capability (or ALL).
    #[arg(long, value_name = "CAP")]
    cap_drop: Vec<String>,
    /// A security option: no-new-privileges, seccomp=…, apparmor=…, label=….
    #[arg(long, value_name = "OPT")]
    security_opt: Vec<String>,
    /// Set a label on the container (KEY[=VALUE]).
    #[arg(short = 'l', long = "label", value_name = "KEY[=VALUE]")]
    labels: Vec<String>,
    /// Add a line to /etc/hosts: NAME:IP or NAME:host-gateway.
    #[arg(long, value_name = "NAME:IP")]
    add_host: Vec<String>,
    /// The image's platform (os[/arch[/variant]]).
    #[arg(long, value_name = "PLATFORM")]
    platform: Option<String>,
    /// CPUs the container may use (e.g. 1.5).
    #[arg(long, value_name = "N")]
    cpus: Option<String>,
    /// Most processes the container may run (-1: no limit).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pids_limit: Option<String>,
    /// Pull policy: only `never` (qbox never pulls).
    #[arg(long, value_name = "never")]
    pull: Option<String>,
    /// Shorthand for --read-only --cap-drop ALL --security-opt no-new-privileges --tmpfs /tmp.
    #[arg(long)]
    hardened: bool,
}

impl DockerOptions {
    /// The checked options: `cwd` resolves relative bind sources, `host`
    /// gives `-e NAME` and `--env-file` their host values, and a container
    /// that gets a login (`login_mounted`) is refused what would undo its
    /// read-only mount.
    pub fn host_options(
        &self,
        cwd: &Path,
        host: impl Fn(&str) -> Option<String> + Copy,
        login_mounted: bool,
    ) -> Result<HostOptions, OptionError> {
        let mut checked = HostOptions {
            workdir: self.workdir.clone(),
            interactive: self.interactive,
            tty: self.tty,
            name: self.name.clone(),
            network: self.network.clone(),
            init: self.init,
            entrypoint: self.entrypoint.clone().map(|e| vec![e]),
            stop_timeout: self.stop_timeout,
            publish_all: self.publish_all,
            read_only: self.read_only,
            ..HostOptions::default()
        };
        for raw in &self.publish {
            options::parse_publish(raw, &mut checked)?;
        }
        for raw in &self.mounts {
            checked.mounts.push(options::parse_mount(raw, cwd)?);
        }
        for raw in &self.tmpfs {
            options::parse_tmpfs(raw, &mut checked)?;
        }
        for raw in &self.cap_add {
            checked
                .cap_add
                .push(options::parse_capability("--cap-add", raw)?);
        }
        for raw in &self.cap_drop {
            checked
                .cap_drop
                .push(options::parse_capability("--cap-drop", raw)?);
        }
        for raw in &self.security_opt {
            checked.security_opt.push(options::parse_security_opt(raw)?);
        }
        for raw in &self.labels {
            options::parse_label(raw, &mut checked)?;
        }
        for raw in &self.add_host {
            checked.extra_hosts.push(options::parse_add_host(raw)?);
        }
        checked.platform = self
            .platform
            .as_deref()
            .map(options::parse_platform)
            .transpose()?;
        checked.nano_cpus = self.cpus.as_deref().map(options::parse_cpus).transpose()?;
        checked.pids_limit = self
            .pids_limit
            .as_deref()
            .map(options::parse_pids_limit)
            .transpose()?;
        if let Some(pull) = &self.pull {
            options::parse_pull(pull)?;
        }
        if self.hardened {
            checked.harden();
        }
        checked.guard_login(login_mounted)?;
        // As docker: the files first, so that -e overrides what they set.
        checked.env = self.env_file_entries(host)?;
        for raw in &self.env {
            if let Some(entry) = options::parse_env(raw, host)? {
                checked.env.push(entry);
            }
        }
        checked.binds = self
            .volumes
            .iter()
            .map(|raw| options::parse_volume(raw, cwd))
            .collect::<Result<_, _>>()?;
        checked.user = self.user.as_deref().map(options::parse_user).transpose()?;
        checked.memory = self
            .memory
            .as_deref()
            .map(options::parse_memory)
            .transpose()?;
        Ok(checked)
    }

    /// The variables of every `--env-file`, in order (before any `-e`).
    fn env_file_entries(
        &self,
        host: impl Fn(&str) -> Option<String> + Copy,
    ) -> Result<Vec<String>, OptionError> {
        let mut entries = Vec::new();
        for path in &self.env_files {
            let text = std::fs::read_to_string(path).map_err(|err| OptionError::Invalid {
                option: "--env-file",
                value: path.display().to_string(),
                expected: format!("a readable text file ({err})"),
            })?;
            entries.extend(options::parse_env_file(path, &text, host)?);
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::super::run::{RunArgs, spec};

    #[derive(Debug, clap::Parser)]
    struct Run {
        #[command(flatten)]
        run: RunArgs,
    }

    /// `value` with every object's keys sorted: the engine's maps are
    /// hash maps, whose order says nothing.
    fn sorted(value: serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Object(map) => {
                let mut entries: Vec<_> = map.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                serde_json::Value::Object(
                    entries
                        .into_iter()
                        .map(|(key, value)| (key, sorted(value)))
                        .collect(),
                )
            }
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.into_iter().map(sorted).collect())
            }
            other => other,
        }
    }

    /// What `qbox run ARGS` asks the engine for, and how it attaches: the
    /// create call's name and platform, the create body, and the settings
    /// the run itself follows.
    fn create_call(args: &[&str]) -> serde_json::Value {
        let parsed = Run::try_parse_from(std::iter::once("run").chain(args.iter().copied()))
            .unwrap_or_else(|err| panic!("{args:?}: {err}"));
        let spec = spec(&parsed.run).unwrap_or_else(|err| panic!("{args:?}: {err:#}"));
        let mut body = serde_json::to_value(spec.create_body()).unwrap();
        // Your uid:gid, the default user, differs from machine to machine.
        let me = format!("{}:{}", nix::unistd::getuid(), nix::unistd::getgid());
        if body["User"] == me.as_str() {
            body["User"] = "UID:GID".into();
        }
        sorted(serde_json::json!({
            "name": spec.options.name,
            "platform": spec.options.platform,
            "interactive": spec.options.interactive,
            "tty": spec.options.tty,
            "keep": spec.keep,
            "detach": spec.detach,
            "stop_timeout": spec.options.stop_timeout,
            "copy_sets_home": spec.copy_sets_home,
            "body": body,
        }))
    }

    #[test]
    fn every_docker_flag_reaches_the_create_call_as_it_always_has() {
        let dir = tempfile::tempdir().unwrap();
        let env_file = dir.path().join("vars.env");
        std::fs::write(&env_file, "# a comment\nFROM_FILE=1\nOVERRIDDEN=file\n").unwrap();
        let profile = dir.path().join("seccomp.json");
        std::fs::write(&profile, r#"{"defaultAction":"SCMP_ACT_ERRNO"}"#).unwrap();
        let env_file = env_file.display().to_string();
        let seccomp = format!("seccomp={}", profile.display());
        let every_flag: Vec<&str> = vec![
            "-e",
            "A=1",
            "-e",
            "OVERRIDDEN=flag",
            "-e",
            "QBOX_SURELY_UNSET_VARIABLE",
            "--env-file",
            &env_file,
            "-v",
            "/tmp:/data:ro",
            "-v",
            "named:/vol",
            "-w",
            "/work",
            "-u",
            "1000:1000",
            "-i",
            "--name",
            "box",
            "--network",
            "none",
            "--init",
            "--entrypoint",
            "/bin/sh",
            "-m",
            "64m",
            "--keep",
            "--stop-timeout",
            "3",
            "-p",
            "127.0.0.1:9000:8080",
            "-p",
            "53/udp",
            "-P",
            "--mount",
            "type=tmpfs,target=/cache,tmpfs-size=1m",
            "--mount",
            "type=bind,source=/tmp,target=/src,readonly",
            "--read-only",
            "--tmpfs",
            "/scratch:size=1m",
            "--cap-add",
            "NET_ADMIN",
            "--cap-drop",
            "chown",
            "--security-opt",
            "label=disable",
            "--security-opt",
            &seccomp,
            "-l",
            "team=infra",
            "--add-host",
            "db:10.0.0.5",
            "--platform",
            "linux/amd64",
            "--cpus",
            "1.5",
            "--pids-limit",
            "100",
            "--pull",
            "never",
            "--hardened",
            "img",
            "--",
            "sh",
            "-c",
            "true",
        ];
        let calls = serde_json::json!({
            "every flag": create_call(&every_flag),
            "defaults": create_call(&["img"]),
            "detached with a terminal": create_call(&["-d", "-t", "--auth", "none", "img"]),
            "mcp": create_call(&["--mcp", "-e", "ENABLE_ADDITIONAL_TOOLS=mine", "img", "--", "--http"]),
        });
        let expected: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/data/run-create-calls.json")).unwrap();
        assert!(
            calls == expected,
            "the create calls changed; if on purpose, tests/data/run-create-calls.json is now:\n{}",
            serde_json::to_string_pretty(&calls).unwrap()
        );
    }
}
