#!/usr/bin/env bash
# The whole test suite with nothing skipped: installs what the tests need
# when it is missing (saying what it installs), then runs `cargo test`.
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

if ! docker info >/dev/null 2>&1; then
    echo "error: no Docker engine answers (docker info); the container tests need one" >&2
    exit 1
fi

echo "== the sidecar image, built once before the tests"
# The static binary takes minutes (whole-program optimisation); building it
# here keeps that load away from the timing-sensitive tests, which then find
# it up to date.
cargo build --locked --quiet --bins
target/debug/qbox image build --static --tag qbox-sidecar:latest

echo "== tests"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
if [ $# -gt 0 ]; then
    cargo test --locked --test integration -- "$@" 2>&1 | tee "$log" || status=$?
else
    cargo test --locked 2>&1 | tee "$log" || status=$?
fi
# One closing line for the whole run: cargo prints one per test binary, and
# the last of them (doc tests) can be small.
awk '/^test result:/ { p += $4; f += $6; s += $8 }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s; if (p == 0) exit 1 }' "$log"
exit "$status"
