#!/usr/bin/env bash
# Whole-process benchmark: `qbox export-token` on a valid token versus the
# sqlite3 shell reading the same row, side by side in one hyperfine run.
# Needs: hyperfine, sqlite3 (Debian packages of the same names).
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
hyperfine --warmup 30 --runs "$runs" -N \
  --export-json "$work/result.json" \
  --command-name sqlite3 "sqlite3 $store \"select value from auth_kv where key='codewhisperer:odic:token'\"" \
  --command-name qbox "target/release/qbox export-token" \
  | grep -v "^$"

python3 - "$work/result.json" <<'PY'
import json, sys
results = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
sq, qb = results["sqlite3"]["median"], results["qbox"]["median"]
print(f"median sqlite3 {sq*1000:.3f} ms, qbox export-token {qb*1000:.3f} ms, ratio {qb/sq:.2f}x")
PY
