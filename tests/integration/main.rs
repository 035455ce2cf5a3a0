//! Integration tests: the built binaries against real SQLite stores, real
//! loopback servers and real child processes. One test binary, one harness.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::needless_pass_by_value
)]

mod access_only;
mod agent_hardening;
mod agent_image;
mod chat;
mod chat_compat;
mod cli_settings;
mod closed_pipe;
mod config;
mod container;
mod debug_decode;
mod demo;
mod detach;
mod doctor;
mod errors;
mod eventstream;
mod export;
mod hostile_engine;
mod http_hardening;
mod invariants;
mod kiro;
mod login_lifecycle;
mod mcp_client;
mod mcp_hosts;
mod mcp_versions;
mod net_hardening;
mod ps_stop;
mod refresh;
mod refresh_race;
mod run_lifecycle;
mod run_mcp;
mod run_options;
mod secrets;
mod sidecar;
mod sidecar_image;
mod snapshot;
mod snapshot_safety;
mod store_hardening;
mod store_safety;
mod util;
