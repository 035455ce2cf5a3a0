"""The first MCP answer of `qbox run --mcp IMAGE` from a fresh install: the
time from starting the command to the reply to `initialize`, container start
included, with nothing compiled (the running qbox is mounted as the sidecar).

Each round copies QBOX into a new directory of its own (a fresh install: no
static qbox-sidecar beside it, no source tree, a PATH without cargo) and
starts it there once ("fresh"), then once more from the same copy ("warm");
with QBOX_SIDECAR_BINARY set, a third start mounts that static sidecar
instead ("static"). Spawned directly (no shell), one after the other, never
at once; prints the median and the slowest of each.

Usage: python3 benches/run-mcp-first-answer.py QBOX IMAGE [ROUNDS]
The engine should be warm (one `docker run` before). With QBOX_DB naming a
store with a valid login the login is snapshotted as in real use; without
it the run uses `--auth none`, which the answer to `initialize` does not need.
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

INITIALIZE = json.dumps({
    "jsonrpc": "2.0", "id": 0, "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {},
               "clientInfo": {"name": "bench", "version": "1"}},
}) + "\n"


def first_answer(qbox, image, env, extra):
    auth = [] if env.get("QBOX_DB") else ["--auth", "none"]
    started = time.perf_counter_ns()
    child = subprocess.Popen(
        [qbox, "run", *auth, *extra, "--mcp", image],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )
    child.stdin.write(INITIALIZE.encode())
    child.stdin.flush()
    line = child.stdout.readline()
    elapsed = time.perf_counter_ns() - started
    child.stdin.close()
    child.wait(timeout=60)
    if b'"result"' not in line:
        sys.exit(f"no answer from the sidecar: {line!r} {child.stderr.read().decode()}")
    return elapsed


def main():
    qbox, image = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    static = os.environ.get("QBOX_SIDECAR_BINARY")
    samples = {"fresh": [], "warm": []}
    if static:
        samples["static"] = []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as home:
            bin_dir = os.path.join(home, "bin")
            os.mkdir(bin_dir)
            copy = os.path.join(bin_dir, "qbox")
            shutil.copy2(qbox, copy)
            env = {
                "PATH": bin_dir,
                "HOME": home,
                "XDG_RUNTIME_DIR": home,
                "NO_COLOR": "1",
            }
            for name in ("QBOX_DB", "DOCKER_HOST"):
                if os.environ.get(name):
                    env[name] = os.environ[name]
            samples["fresh"].append(first_answer(copy, image, env, []))
            samples["warm"].append(first_answer(copy, image, env, []))
            if static:
                samples["static"].append(
                    first_answer(copy, image, env, ["--sidecar-binary", static]))
    for side, taken in samples.items():
        print(f"{side}: median {statistics.median(taken) / 1e6:.1f} ms, "
              f"slowest {max(taken) / 1e6:.1f} ms ({len(taken)} runs)")


if __name__ == "__main__":
    main()
