//! What both binaries stand on: argument parsing (with the rule that an
//! empty environment variable counts as unset), the runtime a command runs
//! on, exit codes and error reporting, logging, terminal styling, the
//! signals that stop long work, and `chat`, the one command both offer.
//!
//! `cli` (`qbox`) and `sidecar` (`qbox-sidecar`) are siblings on top of this
//! module; neither imports the other's command line (the invariants test
//! in `tests/integration/invariants.rs` checks the module graph).

pub mod args;
pub mod chat;
pub mod events;
pub mod logging;
pub mod output;
pub mod report;
pub mod signals;
pub mod term;

use std::ffi::OsString;
use std::future::Future;

use clap::Parser;

/// The first thing both binaries do: make the process non-dumpable
/// (`PR_SET_DUMPABLE` 0), so no core dump (`panic = "abort"` aborts) holds
/// the login and no other process of the user can read this one's memory,
/// `/proc/PID/environ` or its descriptors. The setting is not inherited
/// across `exec`, so the CLIs and containers qbox starts are unaffected.
pub fn protect_process() {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Err(err) =
        rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
    {
        // Logging is not set up yet; this cannot wait for it.
        report::warn(
            term::Palette::stderr(),
            &format!(
                "cannot keep other processes of this user out of qbox's memory (PR_SET_DUMPABLE: {err})"
            ),
            None,
        );
    }
}

/// Parses a command line; on failure returns the exit code after clap has
/// printed help or version (stdout, code 0) or the usage error (stderr, 2).
/// An option's environment variable set to the empty string counts as
/// unset (see [`args::ignore_empty_env`]).
pub fn parse_args<P: Parser>(args: impl IntoIterator<Item = OsString>) -> Result<P, u8> {
    let report = |err: clap::Error| {
        let _ = err.print();
        if err.use_stderr() {
            crate::exit::USAGE
        } else {
            crate::exit::OK
        }
    };
    let mut matches = args::ignore_empty_env(P::command())
        .try_get_matches_from(args)
        .map_err(report)?;
    P::from_arg_matches_mut(&mut matches).map_err(report)
}

/// Runs a command on a single-threaded runtime: qbox's commands are short
/// and mostly wait on I/O, and this keeps start-up cheap.
pub fn block_on<F: Future<Output = anyhow::Result<u8>>>(future: F) -> anyhow::Result<u8> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(future);
    // Everything a command needs has been awaited. What may remain is a
    // blocking read of a terminal's stdin (`qbox run -i`) that only the next
    // keystroke would end: the process exits without waiting for it.
    runtime.shutdown_background();
    result
}

/// Sets up logging, runs `command` and turns its outcome into the process
/// exit code (printing the error and its hint when there is one).
pub fn finish(
    verbose: u8,
    quiet: bool,
    command: impl FnOnce(term::Palette) -> anyhow::Result<u8>,
) -> u8 {
    let palette = term::Palette::stderr();
    logging::init(verbose, quiet, palette);
    match command(palette) {
        Ok(code) => code,
        Err(err) => report::report(&err, palette),
    }
}
