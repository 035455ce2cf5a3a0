#!/usr/bin/env bash
# `qbox run IMG true` next to `docker run --rm IMG true` on the same local
# image, side by side in interleaved rounds (medians and their ratio).
# Needs: a Docker engine, the docker CLI, python3, busybox-static, sqlite3.
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
source benches/store.sh
bench_store "$store"

export QBOX_DB="$store"
# Interleaved rounds rather than one block per command: on a machine whose
# speed drifts (shared hosts, CPU steal), every command sees the same drift.
python3 - "$runs" "$image" <<'PY'
import statistics, subprocess, sys, time
runs, image = int(sys.argv[1]), sys.argv[2]
commands = {
    "docker run --rm": ["docker", "run", "--rm", image, "true"],
    "qbox run --auth none": ["target/release/qbox", "run", "--auth", "none", image, "true"],
    "qbox run (snapshot)": ["target/release/qbox", "run", image, "true"],
}
times = {name: [] for name in commands}
names = list(commands)
for round_ in range(3 + runs):  # 3 warm-up rounds, not counted
    order = names[round_ % 3:] + names[:round_ % 3]
    for name in order:
        start = time.perf_counter()
        subprocess.run(commands[name], check=True, stdout=subprocess.DEVNULL)
        if round_ >= 3:
            times[name].append(time.perf_counter() - start)
base = statistics.median(times["docker run --rm"])
for name in names:
    median = statistics.median(times[name])
    print(f"{name}: median {median*1000:.1f} ms, ratio {median/base:.2f}x "
          f"(min {min(times[name])*1000:.0f}, max {max(times[name])*1000:.0f} ms, {runs} runs)")
PY
docker rmi "$image" >/dev/null
