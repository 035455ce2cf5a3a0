"""Whole-process timing of two commands, spawned directly and alternately.

Each command is started with posix_spawn (no shell in between) with its
output sent to /dev/null, and timed from just before the spawn to the
return of wait4; the child's CPU time (user + system, from wait4) is
reported too, as it moves less than wall time when other work competes for
the CPUs. The two commands alternate, the order swapping every
round, so drift in the machine's speed hits both alike. Prints the medians
and their ratio; with --json, the samples too.

Usage: python3 benches/spawn_compare.py RUNS WARMUP NAME_A ARGV_A NAME_B ARGV_B
where each ARGV is one JSON array (the program first).
"""

import json
import os
import statistics
import sys
import time


def run_once(argv, devnull):
    actions = [
        (os.POSIX_SPAWN_DUP2, devnull, 1),
        (os.POSIX_SPAWN_DUP2, devnull, 2),
    ]
    started = time.perf_counter_ns()
    pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=actions)
    _, status, usage = os.wait4(pid, 0)
    elapsed = time.perf_counter_ns() - started
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{argv[0]} failed: exit status {status}")
    return elapsed, (usage.ru_utime + usage.ru_stime) * 1e9


def main():
    runs, warmup = int(sys.argv[1]), int(sys.argv[2])
    commands = [(sys.argv[3], json.loads(sys.argv[4])), (sys.argv[5], json.loads(sys.argv[6]))]
    devnull = os.open(os.devnull, os.O_WRONLY)
    wall = {name: [] for name, _ in commands}
    cpu = {name: [] for name, _ in commands}
    for round_number in range(warmup + runs):
        order = commands if round_number % 2 == 0 else commands[::-1]
        for name, argv in order:
            elapsed, used = run_once(argv, devnull)
            if round_number >= warmup:
                wall[name].append(elapsed)
                cpu[name].append(used)
    (name_a, _), (name_b, _) = commands
    for what, samples in (("wall time", wall), ("CPU time (user+sys)", cpu)):
        median_a = statistics.median(samples[name_a]) / 1e6
        median_b = statistics.median(samples[name_b]) / 1e6
        print(
            f"{runs} alternating rounds, {what}: median {name_a} {median_a:.3f} ms, "
            f"{name_b} {median_b:.3f} ms, ratio {median_b / median_a:.2f}x"
        )


if __name__ == "__main__":
    main()
