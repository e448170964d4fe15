# Shared by scripts/fuzz-smoke.sh (short, CI) and scripts/fuzz-long.sh (long,
# by hand): tools, toolchain, target list and build, the per-target run loop,
# and the summary table. Sourced, not run; the caller sets FUZZ_LOG_TAG and
# `set -euo pipefail`, and runs from the repository root.
#
# Environment (read by fuzz_setup):
#   FUZZ_TARGETS        space-separated subset (default: all in fuzz/Cargo.toml)
#   FUZZ_SANITIZER      address (default) | none | leak | memory | thread
#   FUZZ_BUILD_TIMEOUT  seconds for `cargo fuzz build` (default 1800)
#   CARGO_TARGET_DIR    if set, fuzz builds go to $CARGO_TARGET_DIR/fuzz
#                       (default: fuzz/target)
#
# Installs what it needs, idempotently: cargo-fuzz (cargo install). Uses a
# nightly toolchain if one is installed, else the stable toolchain with
# RUSTC_BOOTSTRAP=1 (cargo-fuzz needs -Z flags).
#
# Seeds come from fuzz/corpus/<target>/ (committed, read-only here); inputs the
# fuzzer finds go to fuzz/work/corpus/<target>/ (git-ignored) and are reused by
# the next run. A crash input lands in fuzz/artifacts/<target>/: turn it into a
# unit test and a descriptively named seed (see docs/testing.md).

ROOT=$(pwd)
SANITIZER=${FUZZ_SANITIZER:-address}
BUILD_TIMEOUT=${FUZZ_BUILD_TIMEOUT:-1800}

log() { printf '[%s] %s\n' "${FUZZ_LOG_TAG:-fuzz}" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

# Tools, toolchain, the target list (TARGETS) and the build.
fuzz_setup() {
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

    # fuzz/Cargo.lock is committed and used as it is. cargo-fuzz has no --locked
    # (rust-fuzz/cargo-fuzz#312), so check first that the lock still fits the
    # manifests: a stale lock fails here instead of being rewritten (and new
    # crates fetched) on every run.
    cargo "${TOOLCHAIN[@]}" metadata --locked --format-version 1 --manifest-path "$ROOT/fuzz/Cargo.toml" >/dev/null \
        || die "fuzz/Cargo.lock does not fit fuzz/Cargo.toml and Cargo.toml: run (cd fuzz && cargo metadata --format-version 1 >/dev/null) and commit fuzz/Cargo.lock"
    log "building ${#TARGETS[@]} targets (sanitizer: $SANITIZER)"
    timeout "$BUILD_TIMEOUT" cargo "${TOOLCHAIN[@]}" fuzz build -s "$SANITIZER" "${TARGET_DIR_ARGS[@]}" >&2 \
        || die "cargo fuzz build failed"
}

# Runs every target in TARGETS for $1 seconds, one after the other. Fills, per
# target: EXECS, RATE (execs/s), COV and FT (from libFuzzer's last stats line),
# CORP (libFuzzer's in-memory corpus, units/bytes), FILES (files in
# fuzz/work/corpus/<target> afterwards), ARTIFACT (a crash input, if any);
# FAILED lists the targets that crashed, timed out on an input or did not run.
fuzz_run_targets() {
    local seconds=$1 t seeds work out rc stats
    declare -gA EXECS=() RATE=() COV=() FT=() CORP=() FILES=() ARTIFACT=()
    FAILED=()
    for t in "${TARGETS[@]}"; do
        seeds="$ROOT/fuzz/corpus/$t"
        work="$ROOT/fuzz/work/corpus/$t"
        mkdir -p "$work" "$ROOT/fuzz/artifacts/$t"
        [[ -d "$seeds" ]] && (( $(ls -A "$seeds" | wc -l) > 0 )) || die "$t: no seeds in fuzz/corpus/$t"
        out="$ROOT/fuzz/work/$t.log"
        log "running $t for ${seconds}s (log: $out)"
        rc=0
        # The outer timeout is a backstop: libFuzzer stops itself at max_total_time.
        timeout --kill-after=10 $(( seconds + 120 )) \
            cargo "${TOOLCHAIN[@]}" fuzz run -s "$SANITIZER" "${TARGET_DIR_ARGS[@]}" "$t" "$work" "$seeds" -- \
                -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
            >"$out" 2>&1 || rc=$?
        EXECS[$t]=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out" | tail -1)
        RATE[$t]=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$out" | tail -1)
        # Stats lines look like "#123 pulse  cov: 1 ft: 2 corp: 3/4b ..."; the
        # last one is the DONE line of a finished run.
        stats=$(grep -E '^#[0-9]+[[:space:]].* cov: ' "$out" | tail -1 || true)
        COV[$t]=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$stats")
        FT[$t]=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$stats")
        CORP[$t]=$(sed -n 's/.* corp: \([^ ]*\).*/\1/p' <<<"$stats")
        FILES[$t]=$(find "$work" -maxdepth 1 -type f | wc -l)
        ARTIFACT[$t]=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$out" | tail -1)
        if (( rc != 0 )); then
            FAILED+=("$t")
            log "$t: FAILED (exit $rc)${ARTIFACT[$t]:+, input: ${ARTIFACT[$t]}}; last lines of $out:"
            tail -40 "$out" >&2
            ls -1 "$ROOT/fuzz/artifacts/$t" >&2 || true
        fi
    done
}

# The summary of fuzz_run_targets, one row per target, on stdout.
fuzz_print_table() {
    local t r
    printf '\n%-16s %12s %8s %6s %7s %14s %8s  %s\n' \
        target executions execs/s cov ft corp work-files result
    for t in "${TARGETS[@]}"; do
        r=ok
        [[ " ${FAILED[*]-} " == *" $t "* ]] && r="FAILED${ARTIFACT[$t]:+ ${ARTIFACT[$t]}}"
        printf '%-16s %12s %8s %6s %7s %14s %8s  %s\n' "$t" "${EXECS[$t]:-?}" "${RATE[$t]:-?}" \
            "${COV[$t]:-?}" "${FT[$t]:-?}" "${CORP[$t]:-?}" "${FILES[$t]}" "$r"
    done
}

# Exits non-zero, naming the targets and their inputs, if any target failed.
fuzz_finish() {
    local t names=()
    for t in "${FAILED[@]-}"; do
        [[ -n "$t" ]] && names+=("$t${ARTIFACT[$t]:+ (${ARTIFACT[$t]})}")
    done
    (( ${#names[@]} == 0 )) || die "crashes in: ${names[*]} (inputs in fuzz/artifacts/)"
    log "all ${#TARGETS[@]} targets ran $1 without a crash"
}
