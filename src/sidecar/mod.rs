//! The `qbox-sidecar` command line: the in-container side of qbox.

use std::ffi::OsString;

use clap::{Parser, Subcommand};

use crate::cli::GlobalArgs;
use crate::exit;
use crate::term::Palette;

/// The in-container side of qbox: serves Amazon Q using the login snapshot
/// mounted at QBOX_DB.
#[derive(Debug, Parser)]
#[command(name = "qbox-sidecar", version, max_term_width = 100)]
pub struct SidecarCli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: SidecarCommand,
}

#[derive(Debug, Subcommand)]
enum SidecarCommand {
    /// Ask Amazon Q through qbox's own streaming client; the answer streams to stdout.
    Chat(crate::cli::chat::ChatArgs),
}

/// Parses `args`, runs the command, and returns the process exit code.
pub fn run(args: impl IntoIterator<Item = OsString>) -> u8 {
    let cli = match SidecarCli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
        }
    };
    let palette = Palette::stderr();
    crate::logging::init(cli.global.verbose, cli.global.quiet, palette);
    let query = cli.global.store_query();
    let result = match cli.command {
        SidecarCommand::Chat(args) => {
            // A read-only snapshot is refreshed by the host that wrote it;
            // refreshing here would spend the host's refresh token.
            let refresh = crate::store::writable_store(&query);
            crate::cli::block_on(crate::cli::chat::run(
                args,
                query,
                refresh,
                cli.global.quiet,
            ))
        }
    };
    match result {
        Ok(code) => code,
        Err(err) => exit::report(&err, palette),
    }
}
