"""Whole-process timing of two or more commands, spawned directly and in turn.

Each command is started with posix_spawn (no shell in between) with its
output sent to /dev/null, and timed from just before the spawn to the
return of wait4; the child's CPU time (user + system, from wait4) is
reported too, as it moves less than wall time when other work competes for
the CPUs. The commands take turns, the order rotating every round, so drift
in the machine's speed hits all alike. Prints each command's medians and
their ratio to the first command's.

Usage: python3 benches/spawn_compare.py RUNS WARMUP NAME_A ARGV_A NAME_B ARGV_B [NAME ARGV ...]
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
    pairs = sys.argv[3:]
    if len(pairs) < 4 or len(pairs) % 2:
        sys.exit(__doc__)
    commands = [(pairs[i], json.loads(pairs[i + 1])) for i in range(0, len(pairs), 2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    wall = {name: [] for name, _ in commands}
    cpu = {name: [] for name, _ in commands}
    for round_number in range(warmup + runs):
        # Rotated and, every other round, reversed: each command runs
        # before and after each other one equally often.
        shift = round_number % len(commands)
        order = commands[shift:] + commands[:shift]
        if (round_number // len(commands)) % 2:
            order = order[::-1]
        for name, argv in order:
            elapsed, used = run_once(argv, devnull)
            if round_number >= warmup:
                wall[name].append(elapsed)
                cpu[name].append(used)
    base = commands[0][0]
    for what, samples in (("wall time", wall), ("CPU time (user+sys)", cpu)):
        base_median = statistics.median(samples[base]) / 1e6
        for name, _ in commands[1:]:
            median = statistics.median(samples[name]) / 1e6
            print(
                f"{runs} rounds in turn, {what}: median {base} {base_median:.3f} ms, "
                f"{name} {median:.3f} ms, ratio {median / base_median:.2f}x"
            )


if __name__ == "__main__":
    main()
