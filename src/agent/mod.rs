//! The `q-developer-agent` tool: drives `q chat --no-interactive` (or
//! `kiro-cli chat`) for one prompt and shapes its output into a tool result.
//!
//! **Invariants:** the CLI is started from an argument vector, never a
//! shell, with the prompt after `--`; it runs in its own process group,
//! and no process it started outlives the call.

pub mod args;
pub mod auth;
pub mod config;
pub mod output;
pub mod runner;

pub use args::{AgentArgs, ArgsError};
pub use auth::AgentAuth;
pub use config::{AgentConfig, TOOL_NAME};
pub use runner::{AgentRunner, Outcome, Progress};
