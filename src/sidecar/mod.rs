//! The `qbox-sidecar` command line: the in-container side of qbox.

use std::ffi::OsString;

use clap::Parser;

use crate::exit;

/// The in-container side of qbox: serves Amazon Q to MCP hosts using the
/// login snapshot mounted at QBOX_DB.
#[derive(Debug, Parser)]
#[command(name = "qbox-sidecar", version, max_term_width = 100)]
pub struct SidecarCli {}

/// Parses `args`, runs the command, and returns the process exit code.
pub fn run(args: impl IntoIterator<Item = OsString>) -> u8 {
    match SidecarCli::try_parse_from(args) {
        Ok(SidecarCli {}) => {
            eprintln!("qbox-sidecar: no command given");
            eprintln!("hint: run `qbox-sidecar --help`");
            exit::USAGE
        }
        Err(err) => {
            let _ = err.print();
            if err.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            }
        }
    }
}
