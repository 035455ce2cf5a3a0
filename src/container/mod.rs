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
//! `qbox run` builds a container in one pipeline: every `docker run` flag
//! (docker's spelling and meaning, `-e` and `-v` as much as `--cap-add`) is
//! parsed by `cli/run_options.rs` (`DockerOptions`) and checked in `options`
//! into `HostOptions`, a bad value being an `OptionError` (exit 125, as
//! docker); `spec` (`RunSpec`) adds only qbox's own settings (the login's
//! mount, `--keep`, `-d`, the command) and writes the create body. Adding a
//! flag touches those two files and a test.

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

/// Where the login appears inside containers: nothing may be mounted at,
/// in or above it (`options::is_reserved_target`).
pub const AUTH_MOUNT: &str = "/run/qbox/auth";

/// The label on every container qbox creates; no `-l` may set a `qbox.` one.
pub const MANAGED_LABEL: &str = "qbox.managed";

/// The label naming the `qbox run` (`PID-START`) that keeps a container's
/// login fresh: `qbox ps` shows whether it still runs.
pub const RUN_LABEL: &str = "qbox.run";

/// The label naming the qbox process that created a container
/// (`PID-START`, as [`RUN_LABEL`]), foreground or detached: a container
/// left `Created` by a creator that died before starting it is removed by
/// the next `qbox run` (`manage::remove_abandoned`).
pub const CREATOR_LABEL: &str = "qbox.creator";
