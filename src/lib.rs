//! qbox: use an Amazon Q Developer CLI / Kiro CLI login outside the CLI.
//!
//! Crate map (one line per module; see `docs/ARCHITECTURE.md`):

/// The `q-developer-agent` tool: runs `q chat` for one prompt.
mod agent;
/// What both binaries stand on: parsing, runtime, error reports, logging, styling, signals.
mod app;
/// `qbox` command line: clap definitions and one handler per subcommand.
pub mod cli;
/// Docker Engine access (the only user of bollard).
pub mod container;
/// `qbox doctor`'s findings as data (the command line and the Python package render them).
pub mod doctor;
/// AWS event-stream framing: incremental zero-copy decoder and encoder.
pub mod eventstream;
/// Exit codes and the `Diagnose` trait every error type implements (public:
/// the Python package sorts errors by their exit code and shows their hints).
pub mod exit;
/// The HTTPS client (rustls, embedded roots).
pub mod http;
/// The MCP server of the sidecar (the only user of rmcp).
mod mcp;
/// MCP hosts' configuration files: each host's entry, file and format, and merging into it.
mod mcp_hosts;
/// The Amazon Q streaming API: models and client.
pub mod qapi;
/// Unpredictable bytes: tokens, delimiters, ids.
mod random;
/// Opening a named file without hanging on a FIFO: regular files only.
mod regular_file;
/// The `Secret` string type that never prints its value.
mod secret;
/// `qbox-sidecar` command line.
pub mod sidecar;
/// Stand-in AWS services on loopback, for tests and the demo.
pub mod standin;
/// The CLI's SQLite auth store (the only user of SQLite).
pub mod store;
/// Time formatting helpers.
pub mod timefmt;

/// The first call of both binaries' `main`: no core dumps, no reading by
/// other processes of the user.
pub use app::protect_process;

/// The sidecar's MCP tool names from the one table that lists and calls
/// them, and the agent tool's (offered only when `ENABLE_ADDITIONAL_TOOLS`
/// names it): the tests compare what servers answer with these.
pub use agent::TOOL_NAME as AGENT_TOOL_NAME;
pub use mcp::tools::tool_names as mcp_tool_names;

/// The agent's cleaning of a CLI's terminal output (escape sequences
/// removed): the real-CLI check compares the CLI's lines with the fake
/// CLI's after the same cleaning.
pub use agent::output::strip_ansi;
