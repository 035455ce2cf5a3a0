#!/usr/bin/env bash
# The whole test suite with nothing skipped: installs what the tests need
# when it is missing (saying what it installs), then runs `cargo test` and
# the Python package's pytest suite (python/tests) against the build.
#
#   bash tests/run.sh            # everything
#   bash tests/run.sh kiro       # arguments go to the integration tests' filter
#
# Needs: a Docker engine that answers (the container tests), and the right to
# install Debian packages (root, or sudo) the first time.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Tests that need a Docker engine or the MCP Python SDK fail instead of skipping.
export QBOX_REQUIRE_DOCKER=1
export QBOX_REQUIRE_PYTHON_MCP=1

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
[ -x /bin/busybox ] || missing+=(busybox-static)
command -v musl-gcc >/dev/null || missing+=(musl-tools)
command -v python3 >/dev/null || missing+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing ${missing[*]} (a static busybox for the container test image, musl-gcc for the static sidecar, Python for the MCP interoperability tests)"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq
    as_root apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
    echo "== installing the musl target (the static qbox-sidecar of the FROM scratch image)"
    # Without it, `qbox image build` falls back on its own to a statically
    # linked glibc build with the Rust resolver (feature static-dns).
    rustup target add x86_64-unknown-linux-musl || echo "warning: no musl target; the sidecar image will hold a static glibc build"
fi

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import mcp, fastmcp' 2>/dev/null || [ ! -x .venv/bin/fastmcp ]; then
    echo "== installing the official MCP Python SDK and FastMCP into .venv (tests/python/requirements.txt)"
    [ -x .venv/bin/python ] || python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
fi

if ! .venv/bin/python -c 'import maturin, pytest' 2>/dev/null; then
    echo "== installing maturin and pytest into .venv (python/tests/requirements.txt)"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -r python/tests/requirements.txt
fi

if ! docker info >/dev/null 2>&1; then
    echo "error: no Docker engine answers (docker info); the container tests need one" >&2
    exit 1
fi

echo "== the sidecar image, built once before the tests"
# The static binary takes minutes (whole-program optimisation); building it
# here keeps that load away from the timing-sensitive tests, which then find
# it up to date.
cargo build --locked --quiet --bins --example standin
target/debug/qbox image build --static --tag qbox-sidecar:latest

echo "== the Python package (python/), built into .venv"
# As `pip install ./python` builds it, with the debug profile and this
# checkout's target directory, so the crates the extension shares with
# qbox are compiled once and kept between runs. maturin (the build
# backend) comes from .venv, not from a download per build.
PATH="$PWD/.venv/bin:$PATH" CARGO_TARGET_DIR="$PWD/target" MATURIN_PEP517_ARGS="--profile dev --locked" \
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-build-isolation --force-reinstall --no-deps ./python

echo "== tests"
log=$(mktemp)
pylog=$(mktemp)
trap 'rm -f "$log" "$pylog"' EXIT
status=0
if [ $# -gt 0 ]; then
    cargo test --locked --test integration -- "$@" 2>&1 | tee "$log" || status=$?
else
    cargo test --locked 2>&1 | tee "$log" || status=$?
fi

echo "== the Python package's tests (pytest, python/tests)"
pystatus=0
.venv/bin/python -m pytest -p no:cacheprovider -ra python/tests 2>&1 | tee "$pylog" || pystatus=$?
if [ "$pystatus" = 5 ]; then
    echo "error: pytest collected no tests in python/tests" >&2
fi
[ "$pystatus" = 0 ] || status=1
# pytest's summary, e.g. "== 1 failed, 20 passed, 1 skipped in 9.1s ==".
py_counts() {
    tail -n 1 "$pylog" | grep -oE "[0-9]+ $1" | grep -oE '^[0-9]+' || echo 0
}
py_passed=$(py_counts passed)
py_failed=$(( $(py_counts failed) + $(py_counts error) ))
py_skipped=$(py_counts skipped)

# One closing line for the whole run: cargo prints one per test binary, and
# the last of them (doc tests) can be small; pytest's counts are added.
awk -v pp="$py_passed" -v pf="$py_failed" -v ps="$py_skipped" \
    '/^test result:/ { p += $4; f += $6; s += $8 }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p + pp, f + pf, s + ps; if (p == 0 || pp == 0) exit 1 }' "$log" || status=1
exit "$status"
