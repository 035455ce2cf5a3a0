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
expires=$(date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%SZ)
sqlite3 "$store" <<SQL
CREATE TABLE migrations (id INTEGER PRIMARY KEY, version INTEGER NOT NULL, migration_time INTEGER NOT NULL);
CREATE TABLE state (key TEXT PRIMARY KEY, value BLOB);
CREATE TABLE auth_kv (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE conversations (key TEXT PRIMARY KEY, value TEXT);
INSERT INTO auth_kv VALUES ('codewhisperer:odic:token', '{"access_token":"aoa-bench","expires_at":"$expires","refresh_token":"aor-bench","region":"us-east-1","start_url":"https://view.awsapps.com/start","oauth_flow":"DeviceCode","scopes":["codewhisperer:completions"]}');
SQL

export QBOX_DB="$store" NO_COLOR=1
query="select value from auth_kv where key='codewhisperer:odic:token'"
python3 benches/spawn_compare.py "$runs" 30 \
  sqlite3 "$(python3 -c 'import json,sys; print(json.dumps(sys.argv[1:]))' "$(command -v sqlite3)" "$store" "$query")" \
  qbox "$(python3 -c 'import json,sys; print(json.dumps(sys.argv[1:]))' "$PWD/target/release/qbox" export-token --field access)"
