#!/usr/bin/env bash
# Checks qbox against a real Kiro CLI (or Amazon Q CLI) binary built from
# its public source. Not part of the test suite: the CLI takes about 20
# minutes to build on two cores and is not in CI. Run it by hand whenever
# the client, the store code or the agent changes, and record the report in
# docs/real-cli.md with the date and the CLI's version.
#
#   tests/real-cli/run.sh PATH/TO/chat_cli            # the Kiro CLI (default)
#   tests/real-cli/run.sh PATH/TO/chat_cli --flavor q # the Amazon Q CLI 1.x
#
# Building the Kiro CLI 2.2.1 (branch sync-prod-from-main of
# aws/amazon-q-developer-cli): git archive it into a directory, delete
# rust-toolchain.toml, add #![recursion_limit = "256"] at the top of
# crates/chat-cli-v2/src/lib.rs, crates/chat-cli/src/lib.rs and
# crates/chat-cli/src/main.rs, then
#   nice cargo build --release -p chat_cli --locked
# The binary is target/release/chat_cli.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
if [ $# -lt 1 ]; then
    sed -n '2,20p' "$0" >&2
    exit 2
fi
cli=$(realpath "$1")
shift
cargo build --locked --quiet --bins
cargo run --locked --quiet --example real-cli -- "$cli" "$@"
