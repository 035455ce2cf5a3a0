#!/usr/bin/env bash
# First run from a fresh clone: `cargo run --release --bin qbox -- demo` from a
# cold target directory, next to `cargo build --release --bins` from another
# cold target directory (the crates themselves already downloaded: nothing is
# fetched here, so both builds time compilation only). Prints both
# wall times and their ratio. Each side gets its own CARGO_TARGET_DIR under a
# temporary directory, removed at the end; the two builds run one after the
# other, never at once.
# Needs: a Docker engine for the demo's container mode (without one the demo
# runs the sidecar as a local process, which builds less: the figure is then
# not the one to compare).
# Usage: bash benches/first-run.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

seconds() {
  local started ended
  started=$(date +%s.%N)
  "$@" >"$work/last.log" 2>&1 || { tail -20 "$work/last.log"; exit 1; }
  ended=$(date +%s.%N)
  python3 -c "print(f'{$ended - $started:.1f}')"
}

build=$(CARGO_TARGET_DIR="$work/build" seconds cargo build --release --bins)
echo "cargo build --release --bins (cold): ${build} s"
rm -rf "$work/build"
demo=$(CARGO_TARGET_DIR="$work/demo" seconds cargo run --release --bin qbox -- demo)
echo "cargo run --release --bin qbox -- demo (cold): ${demo} s"
# The figure is the container mode's, with the image packed from the qbox that
# cargo just built (nothing compiled twice); say so when it was anything else.
grep -q "running in a container" "$work/last.log" || echo "warning: the demo did not run in a container"
grep -q "it holds this qbox as qbox-sidecar" "$work/last.log" ||
  echo "warning: the demo's image was not packed from the running qbox"
python3 -c "print(f'ratio {$demo / $build:.2f}x')"
