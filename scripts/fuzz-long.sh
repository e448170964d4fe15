#!/usr/bin/env bash
# The long fuzz run, by hand (not in CI, which runs scripts/fuzz-smoke.sh):
# every cargo-fuzz target in fuzz/ for FUZZ_MINUTES each, one after the
# other, then a table per target (executions, libFuzzer's cov and ft from its
# last stats line, corpus, result). Fails, naming the target and the crash
# input, if any target crashes, times out on an input or fails to build.
#
#   nice -n 19 scripts/fuzz-long.sh                 # 10 min per target (9 targets: ~90 min)
#   FUZZ_MINUTES=30 FUZZ_TARGETS="session_script" scripts/fuzz-long.sh
#
# Environment:
#   FUZZ_MINUTES      run time per target in minutes (default 10)
#   and those of scripts/lib/fuzz-common.sh: FUZZ_TARGETS, FUZZ_SANITIZER,
#   FUZZ_BUILD_TIMEOUT, CARGO_TARGET_DIR.
#
# Same setup, seeds and places as the smoke run (scripts/lib/fuzz-common.sh):
# seeds from fuzz/corpus/<target>/ (read-only), new inputs to
# fuzz/work/corpus/<target>/ (kept for the next run), each target's libFuzzer
# output in fuzz/work/<target>.log, crash inputs in fuzz/artifacts/<target>/.
set -euo pipefail

cd "$(dirname "$0")/.."
FUZZ_LOG_TAG=fuzz-long
. scripts/lib/fuzz-common.sh

FUZZ_MINUTES=${FUZZ_MINUTES:-10}
[[ "$FUZZ_MINUTES" =~ ^[0-9]+$ ]] && (( FUZZ_MINUTES > 0 )) || die "FUZZ_MINUTES must be a positive integer"

started=$(date -u +%FT%TZ)
# The commit at the start: HEAD may move while the run goes on.
commit=$(git rev-parse --short HEAD 2>/dev/null || echo '?')
fuzz_setup
log "${#TARGETS[@]} targets x ${FUZZ_MINUTES} min: done about $(date -u -d "+$(( ${#TARGETS[@]} * FUZZ_MINUTES )) min" +%H:%MZ)"
fuzz_run_targets $(( FUZZ_MINUTES * 60 ))
log "started $started, ended $(date -u +%FT%TZ), commit at the start $commit"
fuzz_print_table
fuzz_finish "${FUZZ_MINUTES} min"
