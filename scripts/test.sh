#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls this). Debian 12, as root.
#
# 1. installs the real FTP servers and clients (scripts/install-test-deps.sh);
# 2. checks formatting and lints;
# 3. runs every unit, property and integration test with FTPGATE_REQUIRE_PEERS=1,
#    so a test that needs a real server fails instead of skipping;
# 4. runs each fuzz target for a bounded time (scripts/fuzz-smoke.sh).
#
# Environment: FUZZ_SECONDS (per fuzz target, default 20; 0 skips fuzzing),
# SKIP_INSTALL=1 (servers already installed).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${SKIP_INSTALL:-0}" != 1 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        scripts/install-test-deps.sh
    else
        sudo scripts/install-test-deps.sh
    fi
fi

export FTPGATE_REQUIRE_PEERS=1
export CARGO_TERM_COLOR=never

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings

echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# Three threads: each real-peer test starts servers and clients of its own.
# `|| status=$?` keeps `set -e` from ending the script on a failed run before
# the message below; with pipefail the pipeline's status is cargo's.
status=0
cargo test --lib --bins --tests -- --test-threads="${TEST_THREADS:-3}" 2>&1 | tee "$log" || status=$?
if [ "$status" -ne 0 ]; then
    echo "cargo test failed" >&2
    exit "$status"
fi
echo "== benches run once as tests (criterion test mode)"
cargo test --benches
# A real-peer test must never skip in CI (peers::available panics under
# FTPGATE_REQUIRE_PEERS=1; this catches any other path).
if grep -q '^SKIP' "$log"; then
    echo "some real-peer tests were skipped:" >&2
    grep '^SKIP' "$log" >&2
    exit 1
fi
real=$(grep -cE '^test real_peers::.* ok$' "$log" || true)
if [ "$real" -lt 20 ]; then
    echo "expected at least 20 real-peer tests to pass, saw $real" >&2
    exit 1
fi

if [ "${FUZZ_SECONDS:-20}" != 0 ]; then
    echo "== fuzz smoke"
    scripts/fuzz-smoke.sh
fi
echo "== all tests passed"
