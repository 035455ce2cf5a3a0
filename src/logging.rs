//! Tracing setup shared by both binaries: logs go to stderr only (stdout is
//! for data, and on the MCP stdio transport it is the protocol itself).
//!
//! `RUST_LOG` wins when set; otherwise `-v` raises qbox's own level
//! (info, debug, trace) and `-q` lowers it to errors only. `RUST_LOG` takes
//! `level` and `target=level` directives, comma-separated: target filters
//! without the regular-expression engine keep the static sidecar small.

use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::term::Palette;

/// Installs the global subscriber. Safe to call once per process.
pub fn init(verbose: u8, quiet: bool, palette: Palette) {
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|spec| !spec.trim().is_empty())
        .map(|spec| {
            spec.parse::<Targets>().unwrap_or_else(|err| {
                eprintln!("qbox: warning: ignoring RUST_LOG={spec:?}: {err}");
                default_filter("warn")
            })
        });
    let filter = match from_env {
        Some(filter) => filter,
        None => {
            let level = match (quiet, verbose) {
                (true, _) => "error",
                (false, 0) => "warn",
                (false, 1) => "info",
                (false, 2) => "debug",
                (false, _) => "trace",
            };
            default_filter(level)
        }
    };
    let output = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(palette.enabled())
        .with_target(verbose >= 2);
    let _ = tracing_subscriber::registry()
        .with(output.with_filter(filter))
        .try_init();
}

/// Everything at `warn`, qbox's own targets at `level`.
fn default_filter(level: &str) -> Targets {
    let level = level
        .parse()
        .unwrap_or(tracing::level_filters::LevelFilter::WARN);
    Targets::new()
        .with_default(tracing::level_filters::LevelFilter::WARN)
        .with_target("qbox", level)
        .with_target("qbox_sidecar", level)
}
