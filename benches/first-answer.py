"""Start-up of the sidecar image through qbox: the time from starting
`qbox run -i IMAGE -- serve` to the first MCP answer (the reply to
`initialize`), next to `docker run --rm -i IMAGE --version` run to its end.

Both are spawned directly (no shell), alternately, the order swapping every
round; prints the medians and their ratio. The qbox side is stopped by closing
its stdin once the answer is read, and waited for before the next start, so
the two never overlap.

Usage: python3 benches/first-answer.py QBOX IMAGE [ROUNDS]
(QBOX_DB should name a store with a valid login: qbox run mounts a snapshot;
with QBOX_BENCH_AUTH=none the run mounts no login, which the answer to
`initialize` does not need.)
"""

import json
import os
import statistics
import subprocess
import sys
import time

AUTH = ["--auth", "none"] if os.environ.get("QBOX_BENCH_AUTH") == "none" else []

INITIALIZE = json.dumps({
    "jsonrpc": "2.0", "id": 0, "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {},
               "clientInfo": {"name": "bench", "version": "1"}},
}) + "\n"


def first_answer(qbox, image):
    started = time.perf_counter_ns()
    child = subprocess.Popen(
        [qbox, "run", "-i", *AUTH, image, "--", "serve"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    child.stdin.write(INITIALIZE.encode())
    child.stdin.flush()
    line = child.stdout.readline()
    elapsed = time.perf_counter_ns() - started
    if b'"result"' not in line:
        sys.exit(f"no answer from the sidecar: {line!r}")
    child.stdin.close()
    child.wait(timeout=30)
    return elapsed


def docker_version(image):
    started = time.perf_counter_ns()
    subprocess.run(
        ["docker", "run", "--rm", "-i", image, "--version"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True,
    )
    return time.perf_counter_ns() - started


def main():
    qbox, image = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    samples = {"qbox": [], "docker": []}
    for round_number in range(rounds + 2):
        order = ["qbox", "docker"] if round_number % 2 == 0 else ["docker", "qbox"]
        for side in order:
            took = first_answer(qbox, image) if side == "qbox" else docker_version(image)
            if round_number >= 2:
                samples[side].append(took)
    qbox_ms = statistics.median(samples["qbox"]) / 1e6
    docker_ms = statistics.median(samples["docker"]) / 1e6
    print(
        f"{rounds} alternating rounds: median docker run --version {docker_ms:.1f} ms, "
        f"qbox run first MCP answer {qbox_ms:.1f} ms, ratio {qbox_ms / docker_ms:.2f}x"
    )


if __name__ == "__main__":
    main()
