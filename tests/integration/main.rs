//! Integration tests: the built binaries against real SQLite stores, real
//! loopback servers and real child processes. One test binary, one harness.
//!
//! The harness is `util.rs`: a temporary home with stores in the real schema,
//! and a builder that runs the built `qbox` with a clean environment.
//! `mcp_client.rs` is a small JSON-RPC-over-stdio MCP client.
//! `tests/fixtures/fake-q` is a stand-in CLI that records its argv, environment
//! and working directory and can print, sleep, fork, fail or complain about
//! logins on request, or check its login as the real CLI does (`login:TEXT`);
//! it runs under busybox too. `tests/python/mcp_interop.py` drives the sidecar
//! with the official MCP Python SDK, and `mcp_hosts.rs` has `FastMCP`'s command
//! line (`.venv/bin/fastmcp`) load the host files `qbox mcp-config --install`
//! writes. Stand-in services run inside the test process on loopback ports.
//!
//! `sidecar_image.rs` builds the image once with `qbox image build --static`
//! (through cargo for musl, or from `QBOX_SIDECAR_BINARY`) and runs it through
//! `qbox run`, docker-compose and `qbox demo`. `agent_image.rs` builds agent
//! images on busybox with the fake CLI behind a static ELF compiled in the test
//! (`gcc -static`), from a copy of the debug `qbox` with no cargo on its `PATH`
//! (the packed sidecar under `/opt/qbox`), drives them with the Python SDK
//! through `qbox run` and plain `docker run`, and checks every bad input (a
//! foreign-CPU image is made with `docker load` from an archive written in the
//! test). No test pulls an image, and none asserts a wall-clock time.
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
