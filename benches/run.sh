#!/usr/bin/env bash
# `qbox run IMG true` next to `docker run --rm IMG true` on the same local
# image, side by side in one hyperfine run (medians and their ratio).
# Needs: a Docker engine, the docker CLI, hyperfine, busybox-static, sqlite3.
# Usage: bash benches/run.sh [RUNS]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
runs=${1:-30}
image=qbox-bench-busybox:latest

cargo build --release --quiet --bin qbox
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/root/bin"
cp /bin/busybox "$work/root/bin/"
ln -s busybox "$work/root/bin/true"
tar -C "$work/root" -c . | docker import -c 'ENV PATH=/bin' - "$image" >/dev/null

store="$work/data.sqlite3"
expires=$(date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%SZ)
sqlite3 "$store" <<SQL
CREATE TABLE migrations (id INTEGER PRIMARY KEY, version INTEGER NOT NULL, migration_time INTEGER NOT NULL);
CREATE TABLE state (key TEXT PRIMARY KEY, value BLOB);
CREATE TABLE auth_kv (key TEXT PRIMARY KEY, value TEXT);
INSERT INTO auth_kv VALUES ('codewhisperer:odic:token', '{"access_token":"aoa-bench","expires_at":"$expires","refresh_token":"aor-bench","region":"us-east-1","oauth_flow":"DeviceCode"}');
SQL

export QBOX_DB="$store"
hyperfine --warmup 3 --runs "$runs" -N --export-json "$work/result.json" \
  --command-name "docker run --rm" "docker run --rm $image true" \
  --command-name "qbox run --auth none" "target/release/qbox run --auth none $image true" \
  --command-name "qbox run (snapshot)" "target/release/qbox run $image true" \
  | grep -v '^$'

python3 - "$work/result.json" <<'PY'
import json, sys
r = {x["command"]: x["median"] for x in json.load(open(sys.argv[1]))["results"]}
base = r["docker run --rm"]
for name, median in r.items():
    print(f"{name}: median {median*1000:.1f} ms, ratio {median/base:.2f}x")
PY
docker rmi "$image" >/dev/null
