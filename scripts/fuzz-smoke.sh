#!/usr/bin/env bash
# Builds every cargo-fuzz target in fuzz/ and runs each for a bounded time;
# fails if any target crashes, times out on an input, or fails to build.
# CI runs this (scripts/test.sh); scripts/fuzz-long.sh is the long run by hand.
#
#   scripts/fuzz-smoke.sh                    # 20 s per target
#   FUZZ_SECONDS=60 scripts/fuzz-smoke.sh    # longer
#   FUZZ_TARGETS="host_port reply_lines" scripts/fuzz-smoke.sh
#
# Environment:
#   FUZZ_SECONDS      run time per target (default 20)
#   and those of scripts/lib/fuzz-common.sh: FUZZ_TARGETS, FUZZ_SANITIZER,
#   FUZZ_BUILD_TIMEOUT, CARGO_TARGET_DIR.
#
# Installs cargo-fuzz if missing (cargo install, in fuzz-common.sh). Seeds
# come from fuzz/corpus/<target>/ (read-only); new inputs go to
# fuzz/work/corpus/<target>/; a crash input to fuzz/artifacts/<target>/.
set -euo pipefail

cd "$(dirname "$0")/.."
FUZZ_LOG_TAG=fuzz-smoke
. scripts/lib/fuzz-common.sh

FUZZ_SECONDS=${FUZZ_SECONDS:-20}
[[ "$FUZZ_SECONDS" =~ ^[0-9]+$ ]] && (( FUZZ_SECONDS > 0 )) || die "FUZZ_SECONDS must be a positive integer"

fuzz_setup
fuzz_run_targets "$FUZZ_SECONDS"
fuzz_print_table
fuzz_finish "${FUZZ_SECONDS}s"
