//! Docker Engine access through its API.
//!
//! **Architecture invariant:** this is the only module that imports
//! `bollard`; every mount of auth state it creates is read-only.
//!
//! **Architecture invariant:** `qbox run --mcp` never compiles anything: it
//! mounts a static sidecar (given, or beside qbox) or the running qbox with its
//! loader and libraries (`bundle::mountable_current_exe`), read-only at
//! `/run/qbox/bin/qbox-sidecar` (and `/run/qbox/lib`), as the entrypoint with
//! `serve`.
//!
//! `docker run`'s flags have two homes: qbox's own settings and the core
//! flags (`-e`, `-v`, `-w`, `-u`, `-i`, `-t`, `--name`, `--network`,
//! `--init`, `--entrypoint`) go through `spec` (`RunSpec`, `SpecError`); the
//! rest, and any new flag, through `options` (`HostOptions`, `OptionError`,
//! exit 125), whose clap side is `cli/run_options.rs`.

pub(crate) mod agent_image;
pub(crate) mod bundle;
pub(crate) mod detached;
pub mod engine;
pub(crate) mod image;
pub(crate) mod keeper;
pub(crate) mod manage;
pub(crate) mod options;
pub(crate) mod run;
pub(crate) mod runtime_dir;
pub(crate) mod sidecar_image;
pub(crate) mod spec;
pub(crate) mod static_binary;
pub(crate) mod transport;
pub(crate) mod tty;

// What both `spec` (qbox's own mounts) and `options` (the rest of
// `docker run`'s flags) guard: here, so neither file imports the other.

/// Where the login snapshot appears inside containers.
pub const AUTH_MOUNT: &str = "/run/qbox/auth";
/// The label on every container qbox creates.
pub const MANAGED_LABEL: &str = "qbox.managed";

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
