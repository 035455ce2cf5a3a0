#!/usr/bin/env bash
# Writes benches/startup.order: the functions `qbox export-token` runs, in the
# order they first ran, for the linker to place side by side (see build.rs).
# Run it after updating the toolchain or Cargo.lock (Rust symbol names carry
# hashes of both; a stale list only costs start-up speed), then measure with
# benches/export-token.sh.
# Needs: valgrind, python3, sqlite3.
# Usage: bash benches/startup-order.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
source benches/store.sh
bench_store "$work/data.sqlite3"

# The map must describe the very binary traced: build with it, then trace.
QBOX_LINK_MAP="$work/qbox.map" cargo build --release --quiet --bin qbox
QBOX_DB="$work/data.sqlite3" NO_COLOR=1 valgrind --tool=lackey --trace-superblocks=yes \
  --log-file="$work/trace" target/release/qbox export-token --field access >/dev/null
python3 benches/startup-order.py "$work/qbox.map" "$work/trace" >"$work/order"
mv "$work/order" benches/startup.order
echo "benches/startup.order: $(wc -l <benches/startup.order) functions"
