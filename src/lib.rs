//! qbox: use an Amazon Q Developer CLI / Kiro CLI login outside the CLI.
//!
//! Crate map (one line per module; see `docs/ARCHITECTURE.md`):

/// The `q-developer-agent` tool: runs `q chat` for one prompt.
pub mod agent;
/// `qbox` command line: clap definitions and one handler per subcommand.
pub mod cli;
/// Docker Engine access (the only user of bollard).
pub mod container;
/// AWS event-stream framing: incremental zero-copy decoder and encoder.
pub mod eventstream;
/// Exit codes and error reporting with hints.
pub mod exit;
/// The HTTPS client (rustls, embedded roots).
pub mod http;
/// Tracing setup: logs to stderr only.
pub mod logging;
/// The MCP server of the sidecar (the only user of rmcp).
pub mod mcp;
/// The Amazon Q streaming API: models and client.
pub mod qapi;
/// Unpredictable bytes: tokens, delimiters, ids.
pub mod random;
/// The `Secret` string type that never prints its value.
pub mod secret;
/// `qbox-sidecar` command line.
pub mod sidecar;
/// Signals that stop long-running commands.
pub mod signals;
/// Stand-in AWS services on loopback, for tests and the demo.
pub mod standin;
/// Finding or building the static `qbox-sidecar` for the scratch image.
pub mod static_binary;
/// The CLI's SQLite auth store (the only user of SQLite).
pub mod store;
/// Terminal styling that honours NO_COLOR.
pub mod term;
/// Time formatting helpers.
pub mod timefmt;
/// The host terminal under `qbox run -t`: raw mode and window size.
pub mod tty;
