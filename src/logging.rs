//! Tracing setup shared by both binaries: logs go to stderr only (stdout is
//! for data, and on the MCP stdio transport it is the protocol itself).
//!
//! `RUST_LOG` wins when set; otherwise `-v` raises qbox's own level
//! (info, debug, trace) and `-q` lowers it to errors only.

use tracing_subscriber::EnvFilter;

use crate::term::Palette;

/// Installs the global subscriber. Safe to call once per process.
pub fn init(verbose: u8, quiet: bool, palette: Palette) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::new(spec),
        _ => {
            let level = match (quiet, verbose) {
                (true, _) => "error",
                (false, 0) => "warn",
                (false, 1) => "info",
                (false, 2) => "debug",
                (false, _) => "trace",
            };
            EnvFilter::new(format!("warn,qbox={level},qbox_sidecar={level}"))
        }
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(palette.enabled())
        .with_target(verbose >= 2)
        .try_init();
}
