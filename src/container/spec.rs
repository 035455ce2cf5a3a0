//! What `qbox run` asks the engine for: options checked one by one, then
//! turned into a container create body. Pure and unit-tested: every auth
//! mount is read-only, and no token ever goes into the environment.

use crate::qapi::API_KEY_FILE_ENV;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bollard::models::{ContainerCreateBody, HostConfig};

use super::options::HostOptions;
pub use super::{AUTH_MOUNT, MANAGED_LABEL, is_reserved_target};
use crate::exit::{self, Diagnose};

/// `QBOX_DB` inside containers.
pub const AUTH_DB: &str = "/run/qbox/auth/data.sqlite3";
/// Where a CLI run in the container finds its writable copy of the login:
/// the container's `XDG_DATA_HOME` (`amazon-q/` or `kiro-cli/` under it).
pub const COPY_DATA_MOUNT: &str = "/run/qbox/data";
/// The container's `HOME` with the writable copy: the Kiro CLI reads its
/// settings from `~/.kiro/settings/cli.json`, and both CLIs write history
/// and settings under `HOME`.
pub const COPY_HOME_MOUNT: &str = "/run/qbox/home";
/// The file name of a Kiro API key in a run's private directory.
pub const KEY_FILE_NAME: &str = "kiro-api-key";
/// `QBOX_API_KEY_FILE` inside containers given a key.
pub const AUTH_KEY: &str = "/run/qbox/auth/kiro-api-key";

/// The label naming the `qbox run` (`PID-START`) that keeps a container's
/// login fresh: `qbox ps` shows whether it still runs.
pub const RUN_LABEL: &str = "qbox.run";

/// The label naming the qbox process that created a container
/// (`PID-START`, as [`RUN_LABEL`]), foreground or detached: a container
/// left `Created` by a creator that died before starting it is removed by
/// the next `qbox run` (`manage::remove_abandoned`).
pub const CREATOR_LABEL: &str = "qbox.creator";

/// How the login reaches the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// A least-privilege snapshot (token, registration, profile), kept fresh.
    Snapshot,
    /// The CLI's own data directory, read-only (includes conversations).
    Live,
    /// No login.
    None,
}

/// A bad `qbox run` option.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("invalid --env `{0}`: expected NAME=value or NAME")]
    Env(String),
    #[error("invalid --volume `{0}`: expected SRC:DST[:ro|rw] with an absolute DST")]
    Volume(String),
    #[error("--volume source {} does not exist", .0.display())]
    VolumeSourceMissing(PathBuf),
    #[error("invalid --user `{0}`: expected NAME, UID or UID:GID")]
    User(String),
    #[error("--volume target {0} is reserved for the login snapshot")]
    ReservedTarget(String),
    #[error("{option} {value} would let the container make the read-only login mount writable")]
    UndoesReadOnlyLogin { option: &'static str, value: String },
    #[error("invalid --memory `{0}`: expected a size like 512m or 2g, at least 6m")]
    Memory(String),
    #[error(
        "--auth live mounts the directory holding the store, and {} is not a CLI's own data directory",
        .0.display()
    )]
    LiveNotCliDir(PathBuf),
    #[error("--auth live: the store {} cannot be resolved: {}", .0.display(), .1)]
    LiveUnresolved(PathBuf, String),
}

/// A bad option is a usage error of `qbox run`, which (as `docker run`)
/// exits 125 for those.
impl Diagnose for SpecError {
    fn exit_code(&self) -> u8 {
        exit::ENGINE
    }

    fn hint(&self) -> Option<String> {
        match self {
            Self::ReservedTarget(_) => Some(format!(
                "{AUTH_MOUNT}, what is inside it and the directories above it are qbox's: mount elsewhere"
            )),
            Self::LiveNotCliDir(_) => Some(
                "use the default --auth snapshot (a copy of the login alone); --auth live mounts only the directory where the CLI itself keeps its store".into(),
            ),
            Self::UndoesReadOnlyLogin { .. } => {
                Some("drop it, or run the container without a login (--auth none)".into())
            }
            _ => None,
        }
    }
}

/// `--auth live`: the directory to mount read-only at [`AUTH_MOUNT`] and
/// `QBOX_DB` inside. Only a CLI's own data directory is mounted: one of
/// `cli_dirs` (where the CLIs keep their stores on this machine,
/// `~/.local/share/kiro-cli` and the like), compared once symbolic links
/// are resolved. The directory of any other store may hold anything, keys
/// included, whatever it is called (`--db ~/login.sqlite3`, or
/// `~/backup/amazon-q/data.sqlite3` beside other files). `QBOX_DB` names
/// the store's own file in the mount.
pub fn live_mount(store: &Path, cli_dirs: &[PathBuf]) -> Result<(PathBuf, String), SpecError> {
    let real = std::fs::canonicalize(store)
        .map_err(|e| SpecError::LiveUnresolved(store.to_owned(), e.to_string()))?;
    let (Some(dir), Some(name)) = (real.parent(), real.file_name()) else {
        return Err(SpecError::LiveUnresolved(
            store.to_owned(),
            "no directory holds it".into(),
        ));
    };
    let own = cli_dirs
        .iter()
        .filter_map(|cli_dir| std::fs::canonicalize(cli_dir).ok())
        .any(|cli_dir| cli_dir == dir);
    // And named as one once links are resolved: a CLI directory that is a
    // link to the home directory would otherwise mount the whole home.
    if !own || crate::store::Flavor::from_path(&real).is_none() {
        return Err(SpecError::LiveNotCliDir(dir.to_owned()));
    }
    let db = Path::new(AUTH_MOUNT).join(name);
    Ok((dir.to_owned(), db.display().to_string()))
}

/// `path` with `//`, `/./`, `/../` and a trailing `/` resolved lexically,
/// as the engine cleans a mount target (Go's `filepath.Clean`); `..` at
/// the root stays at the root. `None` for a relat handle (`open_by_handle_at`
/// through any bind mount, as `/etc/hosts` is); `CAP_SYS_MODULE` loads
/// kernel code; `CAP_SYS_RAWIO`, `CAP_BPF` and `CAP_PERFMON` read kernel
/// memory. `ALL` holds them all.
const REACHES_THE_HOST: &[&str] = &[
    "ALL",
    "CAP_SYS_ADMIN",
    "CAP_DAC_READ_SEARCH",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_BPF",
    "CAP_PERFMON",
];

/// Refuses, for a container that gets a login, what would let code in it
/// undo the read-only mount or read the host's store around it: the
/// capabilities of [`REACHES_THE_HOST`], AppArmor's and seccomp's default
/// profiles turned off (they are what block `mount` where they are in
/// force; a profile of one's own that allows what it does not name is the
/// same), and `systempaths=unconfined` (the kernel's files under `/proc`
/// and `/sys` unmasked). Without a login (`--auth none`) there is nothing
/// to protect.
pub fn guard_login(options: &HostOptions, auth: AuthMode) -> Result<(), SpecError> {
    if auth == AuthMode::None {
        return Ok(());
    }
    if let Some(cap) = options
        .cap_add
        .iter()
        .find(|cap| REACHES_THE_HOST.contains(&cap.as_str()))
    {
        return Err(SpecError::UndoesReadOnlyLogin {
            option: "--cap-add",
            value: cap.clone(),
        });
    }
    if let Some(opt) = options.security_opt.iter().find(|opt| {
        matches!(
            opt.as_str(),
            "apparmor=unconfined" | "seccomp=unconfined" | "systempaths=unconfined"
        )
    }) {
        return Err(SpecError::UndoesReadOnlyLogin {
            option: "--security-opt",
            value: opt.clone(),
        });
    }
    if let Some(action) = options
        .security_opt
        .iter()
        .filter_map(|opt| opt.strip_prefix("seccomp="))
        .find_map(allowing_seccomp_profile)
    {
        return Err(SpecError::UndoesReadOnlyLogin {
            option: "--security-opt",
            value: format!("seccomp=PROFILE (defaultAction {action})"),
        });
    }
    Ok(())
}

/// The default action of a seccomp profile (its JSON text, as the option
/// carries it) that lets every system call it does not name through: such
/// a profile is `seccomp=unconfined` by another name.
fn allowing_seccomp_profile(profile: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(profile).ok()?;
    let action = value.get("defaultAction")?.as_str()?;
    matches!(action, "SCMP_ACT_ALLOW" | "SCMP_ACT_LOG" | "SCMP_ACT_TRACE")
        .then(|| action.to_owned())
}

/// A checked request to run a container.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSpec {
    pub image: String,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub binds: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub interactive: bool,
    pub tty: bool,
    pub name: Option<String>,
    pub network: Option<String>,
    pub init: bool,
    /// The entrypoint and its first arguments (`--entrypoint` gives one).
    pub entrypoint: Option<Vec<String>>,
    /// Keep the container after it exits; otherwise the engine removes it
    /// when it exits (`AutoRemove`), even if qbox itself was killed.
    pub keep: bool,
    /// `-d`: started without attaching; with `interactive` its stdin is
    /// kept open (as `docker run -d -i` does) but nothing is written to it.
    pub detach: bool,
    /// Seconds between passing on a stop signal and killing the container.
    pub stop_timeout: u32,
    /// Host directory mounted read-only at [`AUTH_MOUNT`], if any.
    pub auth_dir: Option<PathBuf>,
    /// The database file inside the container, if any.
    pub auth_db: Option<String>,
    /// A host directory holding the run's writable copy of the login
    /// (`data/`, `home/`), mounted read-write at [`COPY_DATA_MOUNT`] and
    /// [`COPY_HOME_MOUNT`], where the CLI looks for its store.
    pub copy_dir: Option<PathBuf>,
    /// Whether the copy's home becomes the container's `HOME`: not when
    /// the user chose the container's user (`-u`), whose home the image
    /// knows, or set `HOME` itself.
    pub copy_sets_home: bool,
    /// The Kiro API key file inside the container (`QBOX_API_KEY_FILE`),
    /// if any: the key itself is never in the container's environment.
    pub auth_key: Option<String>,
    /// With `tty`: the host terminal's (rows, columns), given at creation so
    /// the first output already has it (engines from API 1.42 on; older ones
    /// get it by the resize right after start).
    pub console_size: Option<(u16, u16)>,
    /// Memory limit in bytes (swap included: the container gets no swap).
    pub memory: Option<i64>,
    /// Every other `docker run` option, checked.
    pub options: HostOptions,
}

/// The smallest limit the engine accepts.
const MIN_MEMORY: i64 = 6 * 1024 * 1024;

/// `-m 512m`: bytes with an optional b, k, m or g suffix (powers of 1024, as
/// `docker run -m`).
pub fn parse_memory(raw: &str) -> Result<i64, SpecError> {
    let text = raw.trim().to_ascii_lowercase();
    let text = text
        .strip_suffix('b')
        .filter(|t| !t.is_empty())
        .unwrap_or(&text);
    let (digits, unit) = match text.char_indices().last() {
        Some((at, 'k')) => (&text[..at], 1_i64 << 10),
        Some((at, 'm')) => (&text[..at], 1 << 20),
        Some((at, 'g')) => (&text[..at], 1 << 30),
        _ => (text, 1),
    };
    digits
        .parse::<i64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .filter(|bytes| *bytes >= MIN_MEMORY)
        .ok_or_else(|| SpecError::Memory(raw.to_owned()))
}

/// `-e NAME=value` as given, `-e NAME` with the host's value (skipped when unset).
pub fn parse_env(
    raw: &str,
    host: impl Fn(&str) -> Option<String>,
) -> Result<Option<String>, SpecError> {
    let (name, value) = match raw.split_once('=') {
        Some((name, value)) => (name, Some(value.to_owned())),
        None => (raw, None),
    };
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(SpecError::Env(raw.to_owned()));
    }
    Ok(value
        .or_else(|| host(name))
        .map(|value| format!("{name}={value}")))
}

/// `-v SRC:DST[:ro|rw]`: a host path (made absolute, must exist) or a named volume.
pub fn parse_volume(raw: &str, cwd: &Path) -> Result<String, SpecError> {
    let parts: Vec<&str> = raw.split(':').collect();
    let (src, dst, mode) = match parts.as_slice() {
        [src, dst] => (*src, *dst, None),
        [src, dst, mode @ ("ro" | "rw" | "z" | "Z" | "ro,z" | "ro,Z")] => (*src, *dst, Some(*mode)),
        _ => return Err(SpecError::Volume(raw.to_owned())),
    };
    if src.is_empty() || !dst.starts_with('/') {
        return Err(SpecError::Volume(raw.to_owned()));
    }
    if is_reserved_target(dst) {
        return Err(SpecError::ReservedTarget(dst.to_owned()));
    }
    let is_path = src.starts_with('/') || src.starts_with('.') || src.starts_with('~');
    let src = if is_path {
        let path = match src.strip_prefix("~/") {
            Some(rest) => dirs::home_dir().unwrap_or_default().join(rest),
            None => cwd.join(src),
        };
        if !path.exists() {
            return Err(SpecError::VolumeSourceMissing(path));
        }
        std::path::absolute(&path)
            .unwrap_or(path)
            .display()
            .to_string()
    } else {
        src.to_owned()
    };
    Ok(match mode {
        Some(mode) => format!("{src}:{dst}:{mode}"),
        None => format!("{src}:{dst}"),
    })
}

/// `-u NAME | UID | UID:GID | NAME:GROUP`.
pub fn parse_user(raw: &str) -> Result<String, SpecError> {
    let valid = |part: &str| {
        !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    };
    let ok = match raw.split_once(':') {
        Some((user, group)) => valid(user) && valid(group),
        None => valid(raw),
    };
    if ok {
        Ok(raw.to_owned())
    } else {
        Err(SpecError::User(raw.to_owned()))
    }
}

impl RunSpec {
    /// The engine's create body.
    pub fn create_body(&self) -> ContainerCreateBody {
        let mut env = self.env.clone();
        let mut binds = self.binds.clone();
        if let Some(dir) = &self.auth_dir {
            // Read-only, always: nothing inside may change the login, and
            // the directory (not the file) is mounted so that atomic
            // replacements on the host are visible inside.
            binds.push(format!("{}:{AUTH_MOUNT}:ro", dir.display()));
            for (name, value) in [
                ("QBOX_DB", &self.auth_db),
                (API_KEY_FILE_ENV, &self.auth_key),
            ] {
                if let Some(value) = value {
                    env.retain(|e| !e.starts_with(&format!("{name}=")));
                    env.push(format!("{name}={value}"));
                }
            }
        }
        if let Some(dir) = &self.copy_dir {
            // The container's own copy, written by its CLI: never the host
            // store, and rewritten by the host when the login changes.
            binds.push(format!(
                "{}:{COPY_DATA_MOUNT}:rw",
                dir.join("data").display()
            ));
            binds.push(format!(
                "{}:{COPY_HOME_MOUNT}:rw",
                dir.join("home").display()
            ));
            let mut set_unless_given = |name: &str, value: &str| {
                if !env.iter().any(|e| e.starts_with(&format!("{name}="))) {
                    env.push(format!("{name}={value}"));
                }
            };
            set_unless_given("XDG_DATA_HOME", COPY_DATA_MOUNT);
            if self.copy_sets_home {
                set_unless_given("HOME", COPY_HOME_MOUNT);
            }
        }
        let mut body = ContainerCreateBody {
            image: Some(self.image.clone()),
            cmd: (!self.cmd.is_empty()).then(|| self.cmd.clone()),
            entrypoint: self.entrypoint.clone(),
            env: Some(env),
            working_dir: self.workdir.clone(),
            user: self.user.clone(),
            tty: Some(self.tty),
            open_stdin: Some(self.interactive),
            // A detached container's stdin never closes: nobody attaches.
            stdin_once: Some(self.interactive && !self.detach),
            attach_stdin: Some(self.interactive && !self.detach),
            attach_stdout: Some(!self.detach),
            attach_stderr: Some(!self.detach),
            // Also what `docker stop` on this container waits.
            stop_timeout: Some(i64::from(self.stop_timeout)),
            labels: Some(HashMap::from([(
                MANAGED_LABEL.to_owned(),
                "true".to_owned(),
            )])),
            host_config: Some(HostConfig {
                binds: Some(binds),
                network_mode: self.network.clone(),
                init: self.init.then_some(true),
                // The engine removes the container when it exits, so a qbox
                // killed with SIGKILL cannot leave it behind.
                auto_remove: Some(!self.keep),
                memory: self.memory,
                memory_swap: self.memory,
                console_size: self
                    .console_size
                    .filter(|_| self.tty)
                    .map(|(rows, columns)| vec![usize::from(rows), usize::from(columns)]),
                ..HostConfig::default()
            }),
            ..ContainerCreateBody::default()
        };
        self.options.apply(&mut body);
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RunSpec {
        RunSpec {
            image: "img".into(),
            cmd: vec!["sh".into(), "-c".into(), "true".into()],
            env: vec!["A=1".into(), "QBOX_DB=/elsewhere".into()],
            binds: vec![],
            workdir: Some("/w".into()),
            user: Some("1000:1000".into()),
            interactive: false,
            tty: false,
            name: None,
            network: None,
            init: true,
            entrypoint: None,
            keep: false,
            detach: false,
            stop_timeout: 10,
            auth_dir: Some(PathBuf::from("/tmp/qbox-auth-x")),
            copy_dir: None,
            copy_sets_home: false,
            auth_db: Some(AUTH_DB.into()),
            auth_key: None,
            console_size: Some((33, 101)),
            memory: None,
            options: HostOptions::default(),
        }
    }

    #[test]
    fn memory_sizes_read_as_docker_reads_them() {
        assert_eq!(parse_memory("64m").unwrap(), 64 << 20);
        assert_eq!(parse_memory("2G").unwrap(), 2 << 30);
        assert_eq!(parse_memory("8192k").unwrap(), 8 << 20);
        assert_eq!(parse_memory("7340032").unwrap(), 7 << 20);
        assert_eq!(parse_memory("16mb").unwrap(), 16 << 20);
        for bad in ["", "m", "5m", "-64m", "12x", "1.5g", "99999999999g"] {
            assert!(parse_memory(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_detached_container_is_not_attached_and_its_stdin_stays_open() {
        let mut detached = spec();
        detached.detach = true;
        detached.interactive = true;
        let body = detached.create_body();
        assert_eq!(body.open_stdin, Some(true));
        assert_eq!(body.stdin_once, Some(false));
        assert_eq!(body.attach_stdin, Some(false));
        assert_eq!(body.attach_stdout, Some(false));
        assert_eq!(body.attach_stderr, Some(false));
        assert_eq!(body.host_config.unwrap().auto_remove, Some(true));
    }

    #[test]
    fn the_engine_removes_the_container_unless_it_is_kept() {
        let body = spec().create_body();
        assert_eq!(body.host_config.unwrap().auto_remove, Some(true));
        assert_eq!(body.stop_timeout, Some(10));
        let mut kept = spec();
        kept.keep = true;
        assert_eq!(
            kept.create_body().host_config.unwrap().auto_remove,
            Some(false)
        );
    }

    #[test]
    fn the_console_size_is_given_only_with_a_terminal() {
        let without = spec().create_body();
        assert_eq!(without.host_config.unwrap().console_size, None);
        let mut tty = spec();
        tty.tty = true;
        let with = tty.create_body();
        assert_eq!(with.host_config.unwrap().console_size, Some(vec![33, 101]));
    }

    #[test]
    fn the_auth_mount_is_read_only_and_labelled() {
        let body = spec().create_body();
        let binds = body.host_config.as_ref().unwrap().binds.clone().unwrap();
        assert_eq!(binds, ["/tmp/qbox-auth-x:/run/qbox/auth:ro"]);
        assert!(
            binds
                .iter()
                .all(|b| !b.contains("qbox-auth") || b.ends_with(":ro"))
        );
        let env = body.env.unwrap();
        assert_eq!(env, ["A=1", "QBOX_DB=/run/qbox/auth/data.sqlite3"]);
        assert!(
            env.iter().all(|e| !e.contains("aoa")),
            "no token in the environment"
        );
        assert_eq!(body.labels.unwrap()["qbox.managed"], "true");
        assert_eq!(body.host_config.unwrap().init, Some(true));
    }

    #[test]
    fn issue_28_the_writable_copy_is_where_the_cli_looks_unless_the_user_says_otherwise() {
        let mut copy = spec();
        copy.copy_dir = Some(PathBuf::from("/rt/run-1-2"));
        copy.copy_sets_home = true;
        let body = copy.create_body();
        let binds = body.host_config.unwrap().binds.unwrap();
        assert!(binds.contains(&"/tmp/qbox-auth-x:/run/qbox/auth:ro".to_owned()));
        assert!(binds.contains(&"/rt/run-1-2/data:/run/qbox/data:rw".to_owned()));
        assert!(binds.contains(&"/rt/run-1-2/home:/run/qbox/home:rw".to_owned()));
        let env = body.env.unwrap();
        assert!(env.contains(&"XDG_DATA_HOME=/run/qbox/data".to_owned()));
        assert!(env.contains(&"HOME=/run/qbox/home".to_owned()));
        // `-e` wins, and `-u` leaves HOME to the image.
        copy.env = vec!["XDG_DATA_HOME=/mine".into()];
        copy.copy_sets_home = false;
        let env = copy.create_body().env.unwrap();
        assert!(env.contains(&"XDG_DATA_HOME=/mine".to_owned()));
        assert!(
            !env.iter()
                .any(|e| e.starts_with("HOME=") || e == "XDG_DATA_HOME=/run/qbox/data")
        );
    }

    #[test]
    fn issue_30_every_spelling_of_the_login_mount_and_its_parents_is_reserved() {
        for reserved in [
            "/run/qbox/auth",
            "/run/qbox/auth/",
            "/run/qbox//auth",
            "/run//qbox/auth",
            "/run/qbox/./auth",
            "/run/qbox/x/../auth",
            "/run/qbox/auth/data.sqlite3",
            "/run/qbox/auth/sub/dir",
            "/run/qbox",
            "/run/qbox/",
            "/run",
            "//run",
            "/",
            "/..",
            "/tmp/../run/qbox",
        ] {
            assert!(is_reserved_target(reserved), "{reserved}");
        }
        for free in [
            "/run/qbox/authz",
            "/run/qbox/bin",
            "/run/qboxes",
            "/runner",
            "/tmp",
            "/run/qbox/auth/../bin",
            "relative",
        ] {
            assert!(!is_reserved_target(free), "{free}");
        }
        let cwd = std::env::temp_dir();
        for target in ["/run/qbox//auth", "/run/qbox", "/run", "/run/qbox/./auth/x"] {
            assert!(
                matches!(
                    parse_volume(&format!("/tmp:{target}"), &cwd),
                    Err(SpecError::ReservedTarget(_))
                ),
                "{target}"
            );
        }
    }

    #[test]
    fn issue_30_what_undoes_the_read_only_login_is_refused_unless_there_is_no_login() {
        let with = |cap: &[&str], sec: &[&str]| HostOptions {
            cap_add: cap.iter().map(|c| (*c).to_owned()).collect(),
            security_opt: sec.iter().map(|s| (*s).to_owned()).collect(),
            ..HostOptions::default()
        };
        let refused = [
            with(&["CAP_SYS_ADMIN"], &[]),
            with(&["CAP_CHOWN", "ALL"], &[]),
            with(&[], &["apparmor=unconfined"]),
            with(&[], &["no-new-privileges=true", "seccomp=unconfined"]),
        ];
        for options in &refused {
            for auth in [AuthMode::Snapshot, AuthMode::Live] {
                let err = guard_login(options, auth).unwrap_err();
                assert!(matches!(err, SpecError::UndoesReadOnlyLogin { .. }));
                assert!(err.hint().unwrap().contains("--auth none"), "{err}");
            }
            assert_eq!(guard_login(options, AuthMode::None), Ok(()));
        }
        let allowed = with(
            &["CAP_NET_ADMIN"],
            &["apparmor=docker-default", "seccomp=builtin"],
        );
        assert_eq!(guard_login(&allowed, AuthMode::Snapshot), Ok(()));
    }

    #[test]
    fn issue_30_live_mounts_only_a_cli_data_directory_and_names_the_file() {
        let root = tempfile::tempdir().unwrap();
        let cli = root.path().join("kiro-cli");
        std::fs::create_dir(&cli).unwrap();
        std::fs::write(cli.join("own.sqlite3"), "").unwrap();
        let cli_dirs = [cli.clone()];
        let (dir, db) = live_mount(&cli.join("own.sqlite3"), &cli_dirs).unwrap();
        assert_eq!(dir, std::fs::canonicalize(&cli).unwrap());
        assert_eq!(db, "/run/qbox/auth/own.sqlite3");

        // A store in a directory that holds other things is refused.
        std::fs::write(root.path().join("my-login.sqlite3"), "").unwrap();
        let err = live_mount(&root.path().join("my-login.sqlite3"), &cli_dirs).unwrap_err();
        assert!(matches!(err, SpecError::LiveNotCliDir(_)), "{err}");
        assert!(err.hint().unwrap().contains("--auth snapshot"));
        // So is one reached through a directory link named like a CLI's.
        let decoy = root.path().join("decoy");
        std::fs::create_dir(&decoy).unwrap();
        std::os::unix::fs::symlink(root.path(), decoy.join("amazon-q")).unwrap();
        let err = live_mount(&decoy.join("amazon-q/my-login.sqlite3"), &cli_dirs).unwrap_err();
        assert!(matches!(err, SpecError::LiveNotCliDir(_)), "{err}");
        // And one in a directory merely named like a CLI's.
        let backup = root.path().join("backup/kiro-cli");
        std::fs::create_dir_all(&backup).unwrap();
        std::fs::write(backup.join("data.sqlite3"), "").unwrap();
        let err = live_mount(&backup.join("data.sqlite3"), &cli_dirs).unwrap_err();
        assert!(matches!(err, SpecError::LiveNotCliDir(_)), "{err}");
        // A CLI directory that is a link to a directory holding anything
        // (the home directory) is refused, though it is where the CLI looks.
        let data = root.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::os::unix::fs::symlink(root.path(), data.join("kiro-cli")).unwrap();
        let linked = [data.join("kiro-cli")];
        let err = live_mount(&data.join("kiro-cli/my-login.sqlite3"), &linked).unwrap_err();
        assert!(matches!(err, SpecError::LiveNotCliDir(_)), "{err}");
        // A missing store is said to be one.
        assert!(matches!(
            live_mount(&cli.join("absent.sqlite3"), &cli_dirs),
            Err(SpecError::LiveUnresolved(..))
        ));
    }

    #[test]
    fn option_syntax() {
        let host = |name: &str| (name == "HOSTVAR").then(|| "hv".to_owned());
        assert_eq!(parse_env("K=V=W", host), Ok(Some("K=V=W".into())));
        assert_eq!(parse_env("HOSTVAR", host), Ok(Some("HOSTVAR=hv".into())));
        assert_eq!(parse_env("UNSET", host), Ok(None));
        assert!(parse_env("=x", host).is_err());
        let cwd = std::env::temp_dir();
        assert!(
            parse_volume("/tmp:/data:ro", &cwd)
                .unwrap()
                .ends_with(":/data:ro")
        );
        assert_eq!(parse_volume("named:/data", &cwd), Ok("named:/data".into()));
        assert!(matches!(
            parse_volume("/tmp:relative", &cwd),
            Err(SpecError::Volume(_))
        ));
        assert!(matches!(
            parse_volume("/tmp", &cwd),
            Err(SpecError::Volume(_))
        ));
        assert!(matches!(
            parse_volume("/tmp:/x:bogus", &cwd),
            Err(SpecError::Volume(_))
        ));
        assert!(matches!(
            parse_volume("/no/such/dir:/x", &cwd),
            Err(SpecError::VolumeSourceMissing(_))
        ));
        assert!(matches!(
            parse_volume("/tmp:/run/qbox/auth", &cwd),
            Err(SpecError::ReservedTarget(_))
        ));
        assert_eq!(parse_user("1000:1000"), Ok("1000:1000".into()));
        assert_eq!(parse_user("app"), Ok("app".into()));
        assert!(parse_user("1000:").is_err());
        assert!(parse_user("a b").is_err());
    }
}
