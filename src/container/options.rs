//! Every `docker run` option that `qbox run` accepts, with docker's
//! spelling and meaning: `-e`, `--env-file`, `-v`, `--mount`, `--tmpfs`,
//! `--read-only`, `-w`, `-u`, `-i`, `-t`, `--name`, `--network`, `--init`,
//! `--entrypoint`, `-m`, `--stop-timeout`, published ports, capabilities,
//! `--security-opt`, labels, `--add-host`, `--platform`, `--cpus`,
//! `--pids-limit`, `--pull never`, and the `--hardened` shorthand.
//!
//! Every value is checked here, before anything is created, and a bad one
//! is an [`OptionError`] naming the option and the value (exit 125, as
//! docker); so is what would let a container undo its read-only login
//! ([`HostOptions::guard_login`]). Parsing is pure; [`HostOptions::apply`]
//! writes the result into the engine's create body. The clap side is
//! `cli/run_options.rs`; qbox's own settings are `spec`'s.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use bollard::models::{
    ContainerCreateBody, HostConfig, Mount, MountBindOptions, MountBindOptionsPropagationEnum,
    MountTmpfsOptions, MountType, MountVolumeOptions, PortBinding,
};

use crate::exit::{self, Diagnose};

use super::{AUTH_MOUNT, MANAGED_LABEL};

/// A bad `docker run` option of `qbox run`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    /// A value that is not what the option takes: what was given, and
    /// what was expected.
    #[error("invalid {option} `{value}`: {expected}")]
    Invalid {
        option: &'static str,
        value: String,
        expected: String,
    },
    #[error("invalid --env `{0}`: expected NAME=value or NAME")]
    Env(String),
    #[error("invalid --volume `{0}`: expected SRC:DST[:ro|rw] with an absolute DST")]
    Volume(String),
    #[error("--volume source {} does not exist", .0.display())]
    VolumeSourceMissing(PathBuf),
    #[error("--volume target {0} is reserved for the login snapshot")]
    ReservedTarget(String),
    #[error("invalid --user `{0}`: expected NAME, UID or UID:GID")]
    User(String),
    #[error("invalid --memory `{0}`: expected a size like 512m or 2g, at least 6m")]
    Memory(String),
    #[error("{option} {value} would let the container make the read-only login mount writable")]
    UndoesReadOnlyLogin { option: &'static str, value: String },
}

/// A bad option is a usage error of `qbox run`: 125, as `docker run`.
impl Diagnose for OptionError {
    fn exit_code(&self) -> u8 {
        exit::ENGINE
    }

    fn hint(&self) -> Option<String> {
        match self {
            Self::Invalid { .. } => Some(
                "docs/run.md lists every option `qbox run` accepts, with docker's syntax".into(),
            ),
            Self::ReservedTarget(_) => Some(format!(
                "{AUTH_MOUNT}, what is inside it and the directories above it are qbox's: mount elsewhere"
            )),
            Self::UndoesReadOnlyLogin { .. } => {
                Some("drop it, or run the container without a login (--auth none)".into())
            }
            Self::Env(_)
            | Self::Volume(_)
            | Self::VolumeSourceMissing(_)
            | Self::User(_)
            | Self::Memory(_) => None,
        }
    }
}

fn invalid(option: &'static str, value: &str, expected: impl Into<String>) -> OptionError {
    OptionError::Invalid {
        option,
        value: value.to_owned(),
        expected: expected.into(),
    }
}

/// The checked options, ready to go into a create body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostOptions {
    /// `NAME=value`: the `--env-file` entries first, then `-e` (which wins).
    pub env: Vec<String>,
    /// `-v` as the engine takes it, `SRC:DST[:MODE]` with SRC absolute.
    pub binds: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    /// `-i`: stdin kept open (and forwarded, when attached).
    pub interactive: bool,
    /// `-t`: a terminal.
    pub tty: bool,
    /// `--name`, given to the create call (not the body).
    pub name: Option<String>,
    pub network: Option<String>,
    pub init: bool,
    /// The entrypoint and its first arguments (`--entrypoint` gives one).
    pub entrypoint: Option<Vec<String>>,
    /// Memory limit in bytes (swap included: the container gets no swap).
    pub memory: Option<i64>,
    /// Seconds between passing on a stop signal and killing the container;
    /// also what `docker stop` waits for it.
    pub stop_timeout: u32,
    /// `"8080/tcp"` → where it is published on the host.
    pub ports: HashMap<String, Vec<PortBinding>>,
    pub publish_all: bool,
    pub mounts: Vec<Mount>,
    pub read_only: bool,
    pub tmpfs: HashMap<String, String>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub security_opt: Vec<String>,
    pub labels: HashMap<String, String>,
    pub extra_hosts: Vec<String>,
    /// `os[/arch[/variant]]`, given to the create call (not the body).
    pub platform: Option<String>,
    pub nano_cpus: Option<i64>,
    pub pids_limit: Option<i64>,
}

impl HostOptions {
    /// `--hardened`: `--read-only`, `--cap-drop ALL`, `--security-opt
    /// no-new-privileges` and a tmpfs at `/tmp` (unless one is given).
    pub fn harden(&mut self) {
        self.read_only = true;
        if !self.cap_drop.iter().any(|c| c == "ALL") {
            self.cap_drop.push("ALL".into());
        }
        if !self
            .security_opt
            .iter()
            .any(|o| o.starts_with("no-new-privileges"))
        {
            self.security_opt.push("no-new-privileges".into());
        }
        self.tmpfs.entry("/tmp".into()).or_default();
    }

    /// Refuses, for a container that gets a login (`login_mounted`), what
    /// would let code in it undo the read-only mount or read the host's
    /// store around it: the capabilities of [`REACHES_THE_HOST`], AppArmor's
    /// and seccomp's default profiles turned off (they are what block
    /// `mount` where they are in force; a profile of one's own that allows
    /// what it does not name is the same), and `systempaths=unconfined` (the
    /// kernel's files under `/proc` and `/sys` unmasked). Without a login
    /// (`--auth none`) there is nothing to protect.
    pub fn guard_login(&self, login_mounted: bool) -> Result<(), OptionError> {
        if !login_mounted {
            return Ok(());
        }
        if let Some(cap) = self
            .cap_add
            .iter()
            .find(|cap| REACHES_THE_HOST.contains(&cap.as_str()))
        {
            return Err(OptionError::UndoesReadOnlyLogin {
                option: "--cap-add",
                value: cap.clone(),
            });
        }
        if let Some(opt) = self.security_opt.iter().find(|opt| {
            matches!(
                opt.as_str(),
                "apparmor=unconfined" | "seccomp=unconfined" | "systempaths=unconfined"
            )
        }) {
            return Err(OptionError::UndoesReadOnlyLogin {
                option: "--security-opt",
                value: opt.clone(),
            });
        }
        if let Some(action) = self
            .security_opt
            .iter()
            .filter_map(|opt| opt.strip_prefix("seccomp="))
            .find_map(allowing_seccomp_profile)
        {
            return Err(OptionError::UndoesReadOnlyLogin {
                option: "--security-opt",
                value: format!("seccomp=PROFILE (defaultAction {action})"),
            });
        }
        Ok(())
    }

    /// Writes these options into `body`, whose labels and host config
    /// qbox's own settings may already have filled: they are kept (a label
    /// qbox set wins).
    pub fn apply(&self, body: &mut ContainerCreateBody) {
        body.entrypoint = self.entrypoint.clone();
        body.env = Some(self.env.clone());
        body.working_dir = self.workdir.clone();
        body.user = self.user.clone();
        body.tty = Some(self.tty);
        body.open_stdin = Some(self.interactive);
        // Also what `docker stop` on this container waits.
        body.stop_timeout = Some(i64::from(self.stop_timeout));
        if !self.ports.is_empty() {
            let mut exposed: Vec<String> = self.ports.keys().cloned().collect();
            exposed.sort();
            body.exposed_ports = Some(exposed);
        }
        let labels = body.labels.get_or_insert_with(HashMap::new);
        for (key, value) in &self.labels {
            labels.entry(key.clone()).or_insert_with(|| value.clone());
        }
        let host = body.host_config.get_or_insert_with(HostConfig::default);
        let some_vec = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        host.binds = Some(self.binds.clone());
        host.network_mode = self.network.clone();
        host.init = self.init.then_some(true);
        host.memory = self.memory;
        host.memory_swap = self.memory;
        if !self.ports.is_empty() {
            host.port_bindings = Some(
                self.ports
                    .iter()
                    .map(|(port, bindings)| (port.clone(), Some(bindings.clone())))
                    .collect(),
            );
        }
        host.publish_all_ports = self.publish_all.then_some(true);
        host.mounts = (!self.mounts.is_empty()).then(|| self.mounts.clone());
        host.readonly_rootfs = self.read_only.then_some(true);
        host.tmpfs = (!self.tmpfs.is_empty()).then(|| self.tmpfs.clone());
        host.cap_add = some_vec(&self.cap_add);
        host.cap_drop = some_vec(&self.cap_drop);
        host.security_opt = some_vec(&self.security_opt);
        host.extra_hosts = some_vec(&self.extra_hosts);
        host.nano_cpus = self.nano_cpus;
        host.pids_limit = self.pids_limit;
    }
}

/// Capabilities that let code in a container reach past its mounts to the
/// host's files or kernel: `CAP_SYS_ADMIN` remounts the login read-write;
/// `CAP_DAC_READ_SEARCH` opens any host file by handle (`open_by_handle_at`
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

/// The default action of a seccomp profile (its JSON text, as the option
/// carries it) that lets every system call it does not name through: such
/// a profile is `seccomp=unconfined` by another name.
fn allowing_seccomp_profile(profile: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(profile).ok()?;
    let action = value.get("defaultAction")?.as_str()?;
    matches!(action, "SCMP_ACT_ALLOW" | "SCMP_ACT_LOG" | "SCMP_ACT_TRACE")
        .then(|| action.to_owned())
}

/// `path` with `//`, `/./`, `/../` and a trailing `/` resolved lexically,
/// as the engine cleans a mount target (Go's `filepath.Clean`); `..` at
/// the root stays at the root. `None` for a relative path.
pub fn normalise_target(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

/// Whether a mount at `target` would cover, replace or sit inside the
/// login mount: `/run/qbox/auth`, anything under it, or a directory above
/// it (`/run/qbox`, `/run`, `/`), however it is spelled.
pub fn is_reserved_target(target: &str) -> bool {
    let Some(target) = normalise_target(target) else {
        return false;
    };
    let inside = |outer: &str, inner: &str| {
        outer == "/"
            || inner == outer
            || inner
                .strip_prefix(outer)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    inside(AUTH_MOUNT, &target) || inside(&target, AUTH_MOUNT)
}

/// `-e NAME=value` as given, `-e NAME` with the host's value (skipped when unset).
pub fn parse_env(
    raw: &str,
    host: impl Fn(&str) -> Option<String>,
) -> Result<Option<String>, OptionError> {
    let (name, value) = match raw.split_once('=') {
        Some((name, value)) => (name, Some(value.to_owned())),
        None => (raw, None),
    };
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(OptionError::Env(raw.to_owned()));
    }
    Ok(value
        .or_else(|| host(name))
        .map(|value| format!("{name}={value}")))
}

/// `-v SRC:DST[:ro|rw]`: a host path (made absolute, must exist) or a named volume.
pub fn parse_volume(raw: &str, cwd: &Path) -> Result<String, OptionError> {
    let parts: Vec<&str> = raw.split(':').collect();
    let (src, dst, mode) = match parts.as_slice() {
        [src, dst] => (*src, *dst, None),
        [src, dst, mode @ ("ro" | "rw" | "z" | "Z" | "ro,z" | "ro,Z")] => (*src, *dst, Some(*mode)),
        _ => return Err(OptionError::Volume(raw.to_owned())),
    };
    if src.is_empty() || !dst.starts_with('/') {
        return Err(OptionError::Volume(raw.to_owned()));
    }
    if is_reserved_target(dst) {
        return Err(OptionError::ReservedTarget(dst.to_owned()));
    }
    let is_path = src.starts_with('/') || src.starts_with('.') || src.starts_with('~');
    let src = if is_path {
        let path = match src.strip_prefix("~/") {
            Some(rest) => dirs::home_dir().unwrap_or_default().join(rest),
            None => cwd.join(src),
        };
        if !path.exists() {
            return Err(OptionError::VolumeSourceMissing(path));
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
pub fn parse_user(raw: &str) -> Result<String, OptionError> {
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
        Err(OptionError::User(raw.to_owned()))
    }
}

/// The smallest memory limit the engine accepts.
const MIN_MEMORY: i64 = 6 * 1024 * 1024;

/// `-m 512m`: bytes with an optional b, k, m or g suffix (powers of 1024, as
/// `docker run -m`).
pub fn parse_memory(raw: &str) -> Result<i64, OptionError> {
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
        .ok_or_else(|| OptionError::Memory(raw.to_owned()))
}

/// A port number (1-65535) or a range `LOW-HIGH`.
fn port_range(option: &'static str, raw: &str, text: &str) -> Result<(u16, u16), OptionError> {
    let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p > 0);
    let expected = "a port like 8080 or a range like 8000-8010";
    match text.split_once('-') {
        Some((low, high)) => match (port(low), port(high)) {
            (Some(low), Some(high)) if low <= high => Ok((low, high)),
            _ => Err(invalid(option, raw, expected)),
        },
        None => port(text)
            .map(|p| (p, p))
            .ok_or_else(|| invalid(option, raw, expected)),
    }
}

/// `-p [IP:][HOST:]CONTAINER[/PROTO]`, as docker reads it: `8080`,
/// `9000:8080`, `127.0.0.1:9000:8080`, `127.0.0.1::8080`, `[::1]:9000:8080`,
/// ranges of equal length, protocol tcp (default), udp or sctp. An empty or
/// zero host port lets the engine choose.
pub fn parse_publish(raw: &str, options: &mut HostOptions) -> Result<(), OptionError> {
    const OPTION: &str = "--publish";
    let expected = "[IP:][HOST_PORT:]CONTAINER_PORT[/tcp|udp|sctp]";
    let (spec, proto) = match raw.rsplit_once('/') {
        Some((spec, proto @ ("tcp" | "udp" | "sctp"))) => (spec, proto),
        Some(_) => return Err(invalid(OPTION, raw, expected)),
        None => (raw, "tcp"),
    };
    // An IPv6 address is bracketed: split it off before the colons.
    let (ip, rest) = match spec.strip_prefix('[') {
        Some(bracketed) => {
            let (ip, rest) = bracketed
                .split_once("]:")
                .ok_or_else(|| invalid(OPTION, raw, expected))?;
            (Some(ip), rest)
        }
        None => (None, spec),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let (ip, host, container) = match (ip, parts.as_slice()) {
        (None, [container]) => (None, "", *container),
        (None, [host, container]) => (None, *host, *container),
        (None, [ip, host, container]) => (Some(*ip), *host, *container),
        (Some(ip), [host, container]) => (Some(ip), *host, *container),
        _ => return Err(invalid(OPTION, raw, expected)),
    };
    if let Some(ip) = ip
        && ip.parse::<IpAddr>().is_err()
    {
        return Err(invalid(OPTION, raw, "an IP address before the host port"));
    }
    let (low, high) = port_range(OPTION, raw, container)?;
    let host_range = match host {
        "" | "0" => None,
        host => Some(port_range(OPTION, raw, host)?),
    };
    if let Some((host_low, host_high)) = host_range
        && host_high - host_low != high - low
        && host_low != host_high
    {
        return Err(invalid(
            OPTION,
            raw,
            "host and container ranges of the same length",
        ));
    }
    for (i, port) in (low..=high).enumerate() {
        let host_port = host_range.map(|(host_low, host_high)| {
            if host_low == host_high {
                host_low.to_string()
            } else {
                (usize::from(host_low) + i).to_string()
            }
        });
        options
            .ports
            .entry(format!("{port}/{proto}"))
            .or_default()
            .push(PortBinding {
                host_ip: ip.map(str::to_owned),
                host_port: Some(host_port.unwrap_or_default()),
            });
    }
    Ok(())
}

/// The lines of an `--env-file`, read as docker reads them: blank lines and
/// lines starting with `#` are skipped; `NAME=VALUE` is taken literally
/// (quotes and trailing spaces are part of the value); `NAME` alone takes
/// the value from `host` (and is skipped when it is unset there).
pub fn parse_env_file(
    path: &Path,
    text: &str,
    host: impl Fn(&str) -> Option<String>,
) -> Result<Vec<String>, OptionError> {
    const OPTION: &str = "--env-file";
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut entries = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, value) = match line.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (line, None),
        };
        let at = || format!("{}:{}", path.display(), number + 1);
        if name.is_empty() {
            return Err(invalid(OPTION, &at(), "a variable name before `=`"));
        }
        if name.contains(char::is_whitespace) {
            return Err(invalid(
                OPTION,
                &at(),
                format!("a variable name without spaces, not `{name}`"),
            ));
        }
        match value {
            Some(value) => entries.push(format!("{name}={value}")),
            None => {
                if let Some(value) = host(name) {
                    entries.push(format!("{name}={value}"));
                }
            }
        }
    }
    Ok(entries)
}

/// A mount target that would cover, replace or sit inside the login mount
/// is refused however it is spelled (`/run/qbox//auth`, `/run/qbox/./auth`,
/// `/run`): see [`is_reserved_target`].
fn reserved(option: &'static str, raw: &str, target: &str) -> Result<(), OptionError> {
    if is_reserved_target(target) {
        return Err(invalid(
            option,
            raw,
            format!("a target outside {AUTH_MOUNT}, which holds the login, and not above it"),
        ));
    }
    Ok(())
}

/// `true`/`false` for a flag that may stand alone (`readonly`) or carry a
/// value (`readonly=false`).
fn flag_value(option: &'static str, raw: &str, value: Option<&str>) -> Result<bool, OptionError> {
    match value.map(str::to_ascii_lowercase).as_deref() {
        None | Some("true" | "1") => Ok(true),
        Some("false" | "0") => Ok(false),
        Some(_) => Err(invalid(option, raw, "true or false")),
    }
}

/// A size like `64m` (bytes with k, m or g, powers of 1024).
fn size_bytes(option: &'static str, raw: &str, text: &str) -> Result<i64, OptionError> {
    let lower = text.to_ascii_lowercase();
    let lower = lower.strip_suffix('b').unwrap_or(&lower);
    let (digits, unit) = match lower.char_indices().last() {
        Some((at, 'k')) => (&lower[..at], 1_i64 << 10),
        Some((at, 'm')) => (&lower[..at], 1 << 20),
        Some((at, 'g')) => (&lower[..at], 1 << 30),
        _ => (lower, 1),
    };
    digits
        .parse::<i64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .filter(|n| *n > 0)
        .ok_or_else(|| invalid(option, raw, "a size like 64m"))
}

/// `--mount type=bind|volume|tmpfs,source=…,target=…[,readonly][,…]`.
pub fn parse_mount(raw: &str, cwd: &Path) -> Result<Mount, OptionError> {
    const OPTION: &str = "--mount";
    let mut mount = Mount::default();
    let mut kind = None;
    for field in raw.split(',') {
        let (key, value) = match field.split_once('=') {
            Some((key, value)) => (key.trim(), Some(value)),
            None => (field.trim(), None),
        };
        let need = |value: Option<&str>| {
            value
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| invalid(OPTION, raw, format!("a value for `{key}`")))
        };
        match key {
            "type" => {
                kind = Some(match need(value)?.as_str() {
                    "bind" => MountType::BIND,
                    "volume" => MountType::VOLUME,
                    "tmpfs" => MountType::TMPFS,
                    _ => return Err(invalid(OPTION, raw, "type=bind, volume or tmpfs")),
                });
            }
            "source" | "src" => mount.source = Some(need(value)?),
            "target" | "destination" | "dst" => mount.target = Some(need(value)?),
            "readonly" | "ro" => mount.read_only = Some(flag_value(OPTION, raw, value)?),
            "bind-propagation" => {
                let propagation = match need(value)?.as_str() {
                    "private" => MountBindOptionsPropagationEnum::PRIVATE,
                    "rprivate" => MountBindOptionsPropagationEnum::RPRIVATE,
                    "shared" => MountBindOptionsPropagationEnum::SHARED,
                    "rshared" => MountBindOptionsPropagationEnum::RSHARED,
                    "slave" => MountBindOptionsPropagationEnum::SLAVE,
                    "rslave" => MountBindOptionsPropagationEnum::RSLAVE,
                    _ => return Err(invalid(OPTION, raw, "a bind propagation like rprivate")),
                };
                mount.bind_options = Some(MountBindOptions {
                    propagation: Some(propagation),
                    ..MountBindOptions::default()
                });
            }
            "volume-nocopy" => {
                mount.volume_options = Some(MountVolumeOptions {
                    no_copy: Some(flag_value(OPTION, raw, value)?),
                    ..MountVolumeOptions::default()
                });
            }
            "tmpfs-size" => {
                let size = size_bytes(OPTION, raw, &need(value)?)?;
                mount
                    .tmpfs_options
                    .get_or_insert_with(MountTmpfsOptions::default)
                    .size_bytes = Some(size);
            }
            "tmpfs-mode" => {
                let text = need(value)?;
                let mode = i64::from_str_radix(&text, 8)
                    .ok()
                    .filter(|m| (0..=0o7777).contains(m))
                    .ok_or_else(|| invalid(OPTION, raw, "an octal tmpfs-mode like 1777"))?;
                mount
                    .tmpfs_options
                    .get_or_insert_with(MountTmpfsOptions::default)
                    .mode = Some(mode);
            }
            _ => {
                return Err(invalid(
                    OPTION,
                    raw,
                    format!(
                        "known keys (type, source, target, readonly, bind-propagation, volume-nocopy, tmpfs-size, tmpfs-mode), not `{key}`"
                    ),
                ));
            }
        }
    }
    let kind = kind.unwrap_or(MountType::VOLUME);
    let target = mount
        .target
        .clone()
        .filter(|t| t.starts_with('/'))
        .ok_or_else(|| invalid(OPTION, raw, "an absolute target=PATH"))?;
    reserved(OPTION, raw, &target)?;
    match kind {
        MountType::BIND => {
            let source = mount
                .source
                .clone()
                .ok_or_else(|| invalid(OPTION, raw, "source=PATH for a bind mount"))?;
            let path = cwd.join(&source);
            if !path.exists() {
                return Err(invalid(
                    OPTION,
                    raw,
                    format!("a source that exists ({} does not)", path.display()),
                ));
            }
            mount.source = Some(
                std::path::absolute(&path)
                    .unwrap_or(path)
                    .display()
                    .to_string(),
            );
        }
        MountType::TMPFS if mount.source.is_some() => {
            return Err(invalid(OPTION, raw, "no source for a tmpfs mount"));
        }
        _ => {}
    }
    mount.typ = Some(kind);
    Ok(mount)
}

/// A read-only bind mount of `source` at `target`: a mount rather than a
/// `-v` string, so a path with a colon in it stays one path.
pub fn read_only_bind(source: &Path, target: &str) -> Mount {
    Mount {
        typ: Some(MountType::BIND),
        source: Some(source.display().to_string()),
        target: Some(target.to_owned()),
        read_only: Some(true),
        ..Mount::default()
    }
}

/// `--tmpfs PATH[:OPTIONS]` (options as mount(8) takes them, e.g.
/// `rw,noexec,size=64m`).
pub fn parse_tmpfs(raw: &str, options: &mut HostOptions) -> Result<(), OptionError> {
    let (path, opts) = raw.split_once(':').unwrap_or((raw, ""));
    if !path.starts_with('/') {
        return Err(invalid("--tmpfs", raw, "an absolute PATH[:OPTIONS]"));
    }
    reserved("--tmpfs", raw, path)?;
    options.tmpfs.insert(path.to_owned(), opts.to_owned());
    Ok(())
}

/// `--cap-add` / `--cap-drop`: `ALL` or a capability name, with or without
/// the `CAP_` prefix, in any case (sent upper-case, as docker does).
pub fn parse_capability(option: &'static str, raw: &str) -> Result<String, OptionError> {
    let name = raw.trim().to_ascii_uppercase();
    let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c == '_');
    if !valid {
        return Err(invalid(option, raw, "ALL or a capability like NET_ADMIN"));
    }
    Ok(match name.as_str() {
        "ALL" => name,
        _ if name.starts_with("CAP_") => name,
        _ => format!("CAP_{name}"),
    })
}

/// `--security-opt`: what the Engine API takes. `no-new-privileges[=|:true|false]`,
/// `seccomp=unconfined|builtin|PROFILE.json` (the file is read and sent, as
/// docker does), `apparmor=PROFILE`, `label=user:…|role:…|type:…|level:…|disable|nested`,
/// `systempaths=unconfined`.
pub fn parse_security_opt(raw: &str) -> Result<String, OptionError> {
    const OPTION: &str = "--security-opt";
    let (key, value) = match raw.split_once(['=', ':']) {
        Some((key, value)) => (key, Some(value)),
        None => (raw, None),
    };
    match (key, value) {
        ("no-new-privileges", value) => {
            let on = flag_value(OPTION, raw, value)?;
            Ok(format!("no-new-privileges={on}"))
        }
        ("seccomp", Some(profile @ ("unconfined" | "builtin"))) => Ok(format!("seccomp={profile}")),
        ("seccomp", Some(path)) if !path.is_empty() => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| invalid(OPTION, raw, format!("a readable seccomp profile ({e})")))?;
            if serde_json::from_str::<serde_json::Value>(&text).is_err() {
                return Err(invalid(OPTION, raw, "a seccomp profile in JSON"));
            }
            Ok(format!("seccomp={text}"))
        }
        ("apparmor", Some(profile)) if !profile.is_empty() => Ok(format!("apparmor={profile}")),
        ("label", Some(label))
            if matches!(label, "disable" | "nested")
                || ["user:", "role:", "type:", "level:"]
                    .iter()
                    .any(|prefix| label.starts_with(prefix) && label.len() > prefix.len()) =>
        {
            Ok(format!("label={label}"))
        }
        ("systempaths", Some("unconfined")) => Ok("systempaths=unconfined".into()),
        _ => Err(invalid(
            OPTION,
            raw,
            "no-new-privileges, seccomp=unconfined|PROFILE.json, apparmor=PROFILE, label=…, or systempaths=unconfined",
        )),
    }
}

/// `--label KEY[=VALUE]`. qbox's own `qbox.` labels cannot be set.
pub fn parse_label(raw: &str, options: &mut HostOptions) -> Result<(), OptionError> {
    let (key, value) = raw.split_once('=').unwrap_or((raw, ""));
    if key.is_empty() || key.contains(char::is_whitespace) {
        return Err(invalid("--label", raw, "KEY[=VALUE]"));
    }
    if key == MANAGED_LABEL || key.starts_with("qbox.") {
        return Err(invalid(
            "--label",
            raw,
            "a key outside `qbox.`, which qbox sets itself",
        ));
    }
    options.labels.insert(key.to_owned(), value.to_owned());
    Ok(())
}

/// `--add-host NAME:IP`, `NAME=IP` or `NAME:host-gateway`.
pub fn parse_add_host(raw: &str) -> Result<String, OptionError> {
    let expected = "NAME:IP or NAME:host-gateway";
    let (name, address) = raw
        .split_once('=')
        .or_else(|| raw.split_once(':'))
        .ok_or_else(|| invalid("--add-host", raw, expected))?;
    let address = address.trim_start_matches('[').trim_end_matches(']');
    let name_ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
    if !name_ok || (address != "host-gateway" && address.parse::<IpAddr>().is_err()) {
        return Err(invalid("--add-host", raw, expected));
    }
    Ok(format!("{name}:{address}"))
}

/// `--platform os[/arch[/variant]]`, e.g. `linux/amd64`.
pub fn parse_platform(raw: &str) -> Result<String, OptionError> {
    let parts: Vec<&str> = raw.split('/').collect();
    let valid = (1..=3).contains(&parts.len())
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        });
    if valid {
        Ok(raw.to_ascii_lowercase())
    } else {
        Err(invalid(
            "--platform",
            raw,
            "os[/arch[/variant]] like linux/amd64",
        ))
    }
}

/// `--cpus 1.5`: CPUs as a decimal, more than zero (sent in billionths).
pub fn parse_cpus(raw: &str) -> Result<i64, OptionError> {
    raw.trim()
        .parse::<f64>()
        .ok()
        .filter(|cpus| cpus.is_finite() && *cpus > 0.0 && *cpus <= 4096.0)
        .map(|cpus| (cpus * 1e9).round() as i64)
        .filter(|nano| *nano > 0)
        .ok_or_else(|| {
            invalid(
                "--cpus",
                raw,
                "a number of CPUs greater than zero, like 1.5",
            )
        })
}

/// `--pids-limit N`: a positive number of processes, or -1 for no limit.
pub fn parse_pids_limit(raw: &str) -> Result<i64, OptionError> {
    raw.trim()
        .parse::<i64>()
        .ok()
        .filter(|n| *n > 0 || *n == -1)
        .ok_or_else(|| invalid("--pids-limit", raw, "a positive number, or -1 for no limit"))
}

/// `--pull`: qbox never pulls, so only `never` is accepted.
pub fn parse_pull(raw: &str) -> Result<(), OptionError> {
    if raw == "never" {
        Ok(())
    } else {
        Err(invalid(
            "--pull",
            raw,
            "`never`: qbox never pulls images (build or `docker load` them)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The option an [`OptionError::Invalid`] names.
    fn option_of(err: &OptionError) -> &'static str {
        match err {
            OptionError::Invalid { option, .. } => option,
            other => panic!("not an invalid value: {other}"),
        }
    }

    fn published(raw: &str) -> HashMap<String, Vec<PortBinding>> {
        let mut options = HostOptions::default();
        parse_publish(raw, &mut options).unwrap();
        options.ports
    }

    fn binding(ip: Option<&str>, port: &str) -> PortBinding {
        PortBinding {
            host_ip: ip.map(str::to_owned),
            host_port: Some(port.to_owned()),
        }
    }

    #[test]
    fn publish_reads_every_form_docker_reads() {
        assert_eq!(published("8080")["8080/tcp"], [binding(None, "")]);
        assert_eq!(published("9000:8080")["8080/tcp"], [binding(None, "9000")]);
        assert_eq!(
            published("127.0.0.1:9000:8080/udp")["8080/udp"],
            [binding(Some("127.0.0.1"), "9000")]
        );
        assert_eq!(
            published("127.0.0.1::8080")["8080/tcp"],
            [binding(Some("127.0.0.1"), "")]
        );
        assert_eq!(
            published("127.0.0.1:0:8080")["8080/tcp"],
            [binding(Some("127.0.0.1"), "")]
        );
        assert_eq!(
            published("[::1]:9000:8080")["8080/tcp"],
            [binding(Some("::1"), "9000")]
        );
        let range = published("7000-7001:8000-8001");
        assert_eq!(range["8001/tcp"], [binding(None, "7001")]);
        for bad in [
            "",
            "0",
            "x",
            "70000",
            "1:2:3:4",
            "8080/icmp",
            "nothost:1:2",
            "7000-7002:8000-8001",
            "[::1:1:2",
        ] {
            let mut options = HostOptions::default();
            let err = parse_publish(bad, &mut options).unwrap_err();
            assert_eq!(option_of(&err), "--publish", "{bad}");
            assert!(err.to_string().contains(&format!("`{bad}`")), "{err}");
        }
    }

    #[test]
    fn env_files_are_read_as_docker_reads_them() {
        let text = "\u{feff}# a comment\n\n  A=1\nQUOTED=\"kept\" \nEMPTY=\nFROM_HOST\nUNSET_ON_HOST\n   # indented comment\nB=x=y\n";
        let host = |name: &str| (name == "FROM_HOST").then(|| "host value".to_owned());
        let entries = parse_env_file(Path::new("f.env"), text, host).unwrap();
        assert_eq!(
            entries,
            [
                "A=1",
                "QUOTED=\"kept\" ",
                "EMPTY=",
                "FROM_HOST=host value",
                "B=x=y"
            ]
        );
        let err = parse_env_file(Path::new("f.env"), "OK=1\nBAD NAME=2\n", host).unwrap_err();
        assert!(err.to_string().contains("f.env:2"), "{err}");
        let err = parse_env_file(Path::new("f.env"), "=value\n", host).unwrap_err();
        assert!(err.to_string().contains("f.env:1"), "{err}");
    }

    #[test]
    fn mounts_are_checked_and_the_login_target_is_reserved() {
        let cwd = std::env::temp_dir();
        let bind = parse_mount("type=bind,source=.,target=/src,readonly", &cwd).unwrap();
        assert_eq!(bind.typ, Some(MountType::BIND));
        assert_eq!(bind.read_only, Some(true));
        assert!(bind.source.unwrap().starts_with('/'));
        let tmpfs =
            parse_mount("type=tmpfs,dst=/cache,tmpfs-size=64m,tmpfs-mode=1777", &cwd).unwrap();
        let opts = tmpfs.tmpfs_options.unwrap();
        assert_eq!((opts.size_bytes, opts.mode), (Some(64 << 20), Some(0o1777)));
        let volume = parse_mount("source=data,target=/data", &cwd).unwrap();
        assert_eq!(volume.typ, Some(MountType::VOLUME));
        for bad in [
            "type=bind,source=/definitely/not/here,target=/x",
            "type=nfs,target=/x",
            "type=volume,target=relative",
            "type=volume,source=v,target=/run/qbox/auth",
            "type=volume,source=v,target=/run/qbox//auth",
            "type=bind,source=.,target=/run/qbox",
            "type=tmpfs,target=/run/qbox/./auth/",
            "type=tmpfs,source=x,target=/t",
            "type=bind,target=/x",
            "type=volume,target=/x,colour=blue",
            "type=tmpfs,target=/t,tmpfs-mode=999",
        ] {
            assert_eq!(
                option_of(&parse_mount(bad, &cwd).unwrap_err()),
                "--mount",
                "{bad}"
            );
        }
    }

    #[test]
    fn small_options_refuse_bad_values_by_name() {
        let mut options = HostOptions::default();
        parse_tmpfs("/tmp:rw,size=64m", &mut options).unwrap();
        assert_eq!(options.tmpfs["/tmp"], "rw,size=64m");
        assert!(parse_tmpfs("tmp", &mut options).is_err());
        for reserved in [
            "/run/qbox/auth",
            "/run/qbox//auth",
            "/run/qbox/./auth:rw",
            "/run//qbox/auth",
            "/run/qbox",
            "/run/",
        ] {
            assert!(parse_tmpfs(reserved, &mut options).is_err(), "{reserved}");
        }

        assert_eq!(parse_capability("--cap-drop", "all").unwrap(), "ALL");
        assert_eq!(
            parse_capability("--cap-add", "net_admin").unwrap(),
            "CAP_NET_ADMIN"
        );
        assert_eq!(
            parse_capability("--cap-add", "CAP_CHOWN").unwrap(),
            "CAP_CHOWN"
        );
        assert!(parse_capability("--cap-add", "chown;rm").is_err());

        assert_eq!(
            parse_security_opt("no-new-privileges").unwrap(),
            "no-new-privileges=true"
        );
        assert_eq!(
            parse_security_opt("no-new-privileges:false").unwrap(),
            "no-new-privileges=false"
        );
        assert_eq!(
            parse_security_opt("seccomp=unconfined").unwrap(),
            "seccomp=unconfined"
        );
        assert_eq!(
            parse_security_opt("label=type:svirt_t").unwrap(),
            "label=type:svirt_t"
        );
        for bad in [
            "privileged",
            "seccomp=/no/such/profile.json",
            "label=colour:red",
            "no-new-privileges=maybe",
        ] {
            assert_eq!(
                option_of(&parse_security_opt(bad).unwrap_err()),
                "--security-opt",
                "{bad}"
            );
        }

        parse_label("team=infra", &mut options).unwrap();
        assert_eq!(options.labels["team"], "infra");
        assert!(parse_label("qbox.managed=false", &mut options).is_err());
        assert!(parse_label("", &mut options).is_err());

        assert_eq!(parse_add_host("db:10.0.0.5").unwrap(), "db:10.0.0.5");
        assert_eq!(
            parse_add_host("host=host-gateway").unwrap(),
            "host:host-gateway"
        );
        assert_eq!(parse_add_host("v6:[::1]").unwrap(), "v6:::1");
        assert!(parse_add_host("db:not-an-ip").is_err());

        assert_eq!(parse_platform("linux/arm64/v8").unwrap(), "linux/arm64/v8");
        assert!(parse_platform("linux//amd64").is_err());
        assert_eq!(parse_cpus("1.5").unwrap(), 1_500_000_000);
        assert!(parse_cpus("0").is_err() && parse_cpus("many").is_err());
        assert_eq!(parse_pids_limit("-1").unwrap(), -1);
        assert!(parse_pids_limit("0").is_err());
        assert!(parse_pull("never").is_ok() && parse_pull("always").is_err());
    }

    #[test]
    fn hardened_sets_the_four_settings_and_apply_writes_them() {
        let mut options = HostOptions::default();
        options.harden();
        options.harden();
        let mut body = ContainerCreateBody {
            labels: Some(HashMap::from([(
                MANAGED_LABEL.to_owned(),
                "true".to_owned(),
            )])),
            ..ContainerCreateBody::default()
        };
        parse_label("qbox-user=yes", &mut options).unwrap();
        parse_publish("127.0.0.1:0:8080", &mut options).unwrap();
        options.apply(&mut body);
        let host = body.host_config.unwrap();
        assert_eq!(host.readonly_rootfs, Some(true));
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(
            host.security_opt,
            Some(vec!["no-new-privileges".to_owned()])
        );
        assert_eq!(host.tmpfs.unwrap()["/tmp"], "");
        assert!(host.port_bindings.unwrap().contains_key("8080/tcp"));
        assert_eq!(body.exposed_ports.unwrap(), ["8080/tcp"]);
        let labels = body.labels.unwrap();
        assert_eq!(labels[MANAGED_LABEL], "true");
        assert_eq!(labels["qbox-user"], "yes");
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
                    Err(OptionError::ReservedTarget(_))
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
            let err = options.guard_login(true).unwrap_err();
            assert!(matches!(err, OptionError::UndoesReadOnlyLogin { .. }));
            assert!(err.hint().unwrap().contains("--auth none"), "{err}");
            assert_eq!(options.guard_login(false), Ok(()));
        }
        let allowed = with(
            &["CAP_NET_ADMIN"],
            &["apparmor=docker-default", "seccomp=builtin"],
        );
        assert_eq!(allowed.guard_login(true), Ok(()));
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
            Err(OptionError::Volume(_))
        ));
        assert!(matches!(
            parse_volume("/tmp", &cwd),
            Err(OptionError::Volume(_))
        ));
        assert!(matches!(
            parse_volume("/tmp:/x:bogus", &cwd),
            Err(OptionError::Volume(_))
        ));
        assert!(matches!(
            parse_volume("/no/such/dir:/x", &cwd),
            Err(OptionError::VolumeSourceMissing(_))
        ));
        assert!(matches!(
            parse_volume("/tmp:/run/qbox/auth", &cwd),
            Err(OptionError::ReservedTarget(_))
        ));
        assert_eq!(parse_user("1000:1000"), Ok("1000:1000".into()));
        assert_eq!(parse_user("app"), Ok("app".into()));
        assert!(parse_user("1000:").is_err());
        assert!(parse_user("a b").is_err());
    }
}
