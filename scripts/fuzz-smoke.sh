#!/usr/bin/env bash
# Builds every cargo-fuzz target in fuzz/ and runs each for a bounded time;
# fails if any target crashes, times out on an input, or fails to build.
#
#   scripts/fuzz-smoke.sh                    # 20 s per target
#   FUZZ_SECONDS=60 scripts/fuzz-smoke.sh    # longer
#   FUZZ_TARGETS="host_port reply_lines" scripts/fuzz-smoke.sh
#
# Environment:
#   FUZZ_SECONDS      run time per target (default 20)
#   FUZZ_TARGETS      space-separated subset (default: all in fuzz/Cargo.toml)
#   FUZZ_SANITIZER    address (default) | none | leak | memory | thread
#   CARGO_TARGET_DIR  if set, fuzz builds go to $CARGO_TARGET_DIR/fuzz
#                     (default: fuzz/target)
#
# Installs what it needs, idempotently: cargo-fuzz (cargo install). Uses a
# nightly toolchain if one is installed, else the stable toolchain with
# RUSTC_BOOTSTRAP=1 (cargo-fuzz needs -Z flags).
#
# Seeds come from fuzz/corpus/<target>/ (committed, read-only here); inputs the
# fuzzer finds go to fuzz/work/corpus/<target>/ (git-ignored) and are reused by
# the next run. A crash input lands in fuzz/artifacts/<target>/: turn it into a
# unit test and a descriptively named seed (see docs/testing.md).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
FUZZ_SECONDS=${FUZZ_SECONDS:-20}
SANITIZER=${FUZZ_SANITIZER:-address}
BUILD_TIMEOUT=${FUZZ_BUILD_TIMEOUT:-1800}

log() { printf '[fuzz-smoke] %s\n' "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

[[ "$FUZZ_SECONDS" =~ ^[0-9]+$ ]] && (( FUZZ_SECONDS > 0 )) || die "FUZZ_SECONDS must be a positive integer"

# --- tools -------------------------------------------------------------------
command -v cargo >/dev/null || die "cargo not found (install Rust via rustup)"
if ! cargo fuzz --version >/dev/null 2>&1; then
    log "installing cargo-fuzz (cargo install cargo-fuzz --locked)"
    timeout 1200 cargo install cargo-fuzz --locked >&2 || die "cannot install cargo-fuzz"
fi
log "$(cargo fuzz --version)"

TOOLCHAIN=()
# A nightly toolchain is used only if already installed (or FUZZ_INSTALL_NIGHTLY=1):
# CI machines can fetch no other toolchain, and stable with RUSTC_BOOTSTRAP=1
# builds the targets the same way.
if command -v rustup >/dev/null && rustup toolchain list | grep -q '^nightly'; then
    TOOLCHAIN=(+nightly)
elif [[ "${FUZZ_INSTALL_NIGHTLY:-0}" == 1 ]] && command -v rustup >/dev/null \
    && timeout 600 rustup toolchain install nightly --profile minimal >&2; then
    TOOLCHAIN=(+nightly)
else
    log "no nightly toolchain: using stable with RUSTC_BOOTSTRAP=1"
    export RUSTC_BOOTSTRAP=1
fi
log "toolchain: $(cargo "${TOOLCHAIN[@]}" --version) ${RUSTC_BOOTSTRAP:+(RUSTC_BOOTSTRAP=1)}"

TARGET_DIR_ARGS=()
if [[ -n "${CARGO_TARGET_DIR:-}" ]]; then
    TARGET_DIR_ARGS=(--target-dir "$CARGO_TARGET_DIR/fuzz")
fi

if [[ -n "${FUZZ_TARGETS:-}" ]]; then
    read -r -a TARGETS <<<"$FUZZ_TARGETS"
else
    mapfile -t TARGETS < <(cargo fuzz list)
fi
(( ${#TARGETS[@]} > 0 )) || die "no fuzz targets found"

# --- build -------------------------------------------------------------------
# fuzz/Cargo.lock is committed and used as it is. cargo-fuzz has no --locked
# (rust-fuzz/cargo-fuzz#312), so check first that the lock still fits the
# manifests: a stale lock fails here instead of being rewritten (and new
# crates fetched) on every run.
cargo "${TOOLCHAIN[@]}" metadata --locked --format-version 1 --manifest-path "$ROOT/fuzz/Cargo.toml" >/dev/null \
    || die "fuzz/Cargo.lock does not fit fuzz/Cargo.toml and Cargo.toml: run (cd fuzz && cargo metadata --format-version 1 >/dev/null) and commit fuzz/Cargo.lock"
log "building ${#TARGETS[@]} targets (sanitizer: $SANITIZER)"
timeout "$BUILD_TIMEOUT" cargo "${TOOLCHAIN[@]}" fuzz build -s "$SANITIZER" "${TARGET_DIR_ARGS[@]}" >&2 \
    || die "cargo fuzz build failed"

# --- run ---------------------------------------------------------------------
declare -A EXECS RATE
failed=()
for t in "${TARGETS[@]}"; do
    seeds="$ROOT/fuzz/corpus/$t"
    work="$ROOT/fuzz/work/corpus/$t"
    mkdir -p "$work" "$ROOT/fuzz/artifacts/$t"
    [[ -d "$seeds" ]] && (( $(ls -A "$seeds" | wc -l) > 0 )) || die "$t: no seeds in fuzz/corpus/$t"
    out="$ROOT/fuzz/work/$t.log"
    log "running $t for ${FUZZ_SECONDS}s"
    rc=0
    # The outer timeout is a backstop: libFuzzer stops itself at max_total_time.
    timeout --kill-after=10 $(( FUZZ_SECONDS + 120 )) \
        cargo "${TOOLCHAIN[@]}" fuzz run -s "$SANITIZER" "${TARGET_DIR_ARGS[@]}" "$t" "$work" "$seeds" -- \
            -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$out" 2>&1 || rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out" | tail -1)
    EXECS[$t]=${execs:-?}
    RATE[$t]=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$out" | tail -1)
    if (( rc != 0 )); then
        failed+=("$t")
        log "$t: FAILED (exit $rc); last lines of $out:"
        tail -40 "$out" >&2
        ls -1 "$ROOT/fuzz/artifacts/$t" >&2 || true
    fi
done

printf '\n%-16s %14s %10s  %s\n' target executions execs/s result
for t in "${TARGETS[@]}"; do
    r=ok
    [[ " ${failed[*]-} " == *" $t "* ]] && r=FAILED
    printf '%-16s %14s %10s  %s\n' "$t" "${EXECS[$t]}" "${RATE[$t]:-?}" "$r"
done
(( ${#failed[@]} == 0 )) || die "crashes in: ${failed[*]} (inputs in fuzz/artifacts/)"
log "all ${#TARGETS[@]} targets ran ${FUZZ_SECONDS}s without a crash"
