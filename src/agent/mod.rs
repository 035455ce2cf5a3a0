//! The `q-developer-agent` tool: drives `kiro-cli chat --no-interactive`
//! (or the legacy `q chat`) for one prompt and shapes its output into a
//! tool result.
//!
//! **Invariants:** the CLI is started from an argument vector, never a
//! shell, with the prompt after `--`; it gets an environment chosen from an
//! allow-list that never holds a `QBOX_*` variable; it runs in its own
//! process group, and no process it started outlives the call; a call holds
//! at most about the response limit of its output in memory.

pub mod args;
pub mod auth;
pub mod capture;
#[cfg(target_os = "linux")]
pub mod cgroup;
pub mod child_env;
pub mod cli_choice;
pub mod config;
pub mod leftovers;
pub mod output;
#[cfg(target_os = "linux")]
pub mod proc_table;
pub mod report;
pub mod runner;
pub mod tracker;

pub use args::AgentArgs;
pub use auth::AgentAuth;
pub use config::{AgentConfig, TOOL_NAME};
pub use runner::{AgentRunner, Progress};
