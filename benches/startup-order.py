"""Writes the link order of the functions a short qbox command runs.

Reads an lld link map (`-Map`) of the release qbox and a valgrind lackey
trace of `qbox export-token` (`--trace-superblocks=yes`), and prints, one per
line and in the order they first ran, the symbol of every function section
the command executed. build.rs hands that list to the linker
(`--symbol-ordering-file`), which then lays those functions out next to each
other at the start of `.text`: a command whose whole life is its start-up
touches a few dozen pages of code instead of scattering page faults over
13 MB. See docs/performance.md.

Usage: python3 benches/startup-order.py MAP TRACE > benches/startup.order
"""

import bisect
import re
import sys

# An input section line of an lld map: VMA LMA SIZE ALIGN FILE:(SECTION).
SECTION = re.compile(r"^\s*([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)\s+\d+\s+\S.*:\((\.text\.[^)]+)\)$")
# Prefixes compilers put before a function's name in its section's name.
PREFIXES = (".text.unlikely.", ".text.hot.", ".text.startup.", ".text.exit.", ".text.")


def function_sections(map_path):
    sections = []
    with open(map_path, encoding="utf-8", errors="replace") as lines:
        for line in lines:
            match = SECTION.match(line)
            if not match:
                continue
            start, size = int(match[1], 16), int(match[2], 16)
            name = match[3]
            for prefix in PREFIXES:
                if name.startswith(prefix):
                    name = name[len(prefix):]
                    break
            if size and name:
                sections.append((start, start + size, name))
    sections.sort()
    return sections


def executed(trace_path, sections):
    starts = [start for start, _, _ in sections]
    seen = set()
    with open(trace_path, encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if not line.startswith("SB "):
                continue
            address = int(line.split()[1], 16)
            at = bisect.bisect_right(starts, address) - 1
            if at < 0:
                continue
            start, end, name = sections[at]
            if start <= address < end and name not in seen:
                seen.add(name)
                yield name


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sections = function_sections(sys.argv[1])
    if not sections:
        sys.exit(f"error: no function sections in {sys.argv[1]}\nhint: is it an lld -Map file?")
    names = list(executed(sys.argv[2], sections))
    if not names:
        sys.exit(f"error: no traced address falls in qbox's functions\nhint: was {sys.argv[2]} traced from the binary the map describes?")
    print("\n".join(names))


if __name__ == "__main__":
    main()
