#!/usr/bin/env bash
# Whole-process benchmark: `qbox export-token --field access` on a valid token
# versus the sqlite3 shell reading the same row. Both are spawned directly (no
# shell in between) and alternately by benches/spawn_compare.py, which prints
# the medians and their ratio.
# Needs: python3, sqlite3 (the Debian package of that name).
# Usage: bash benches/export-token.sh [RUNS]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
runs=${1:-300}

cargo build --release --quiet --bin qbox
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
store="$work/data.sqlite3"
source benches/store.sh
bench_store "$store"

export QBOX_DB="$store" NO_COLOR=1
query="select value from auth_kv where key='codewhisperer:odic:token'"
python3 benches/spawn_compare.py "$runs" 30 \
  sqlite3 "$(python3 -c 'import json,sys; print(json.dumps(sys.argv[1:]))' "$(command -v sqlite3)" "$store" "$query")" \
  qbox "$(python3 -c 'import json,sys; print(json.dumps(sys.argv[1:]))' "$PWD/target/release/qbox" export-token --field access)"
