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
pub(crate) mod manage;
pub(crate) mod options;
pub(crate) mod run;
pub(crate) mod runtime_dir;
pub(crate) mod spec;
pub(crate) mod static_binary;
pub(crate) mod transport;
pub(crate) mod tty;
