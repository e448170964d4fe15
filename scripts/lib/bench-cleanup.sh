# Sourced by the bench scripts (after they define log): what each started
# is stopped on exit, and only that.
#
# PIDS: processes to stop (append with PIDS+=("$!")); WORK: the temp dir,
# removed unless BENCH_KEEP=1. stop_pid stops one process (TERM, up to 5 s,
# then KILL). bench_stop_all stops every PIDS entry and removes WORK; a
# script with more to undo defines its own cleanup() that calls it, and
# bench_cleanup_traps installs cleanup on EXIT (INT and TERM exit 130).
PIDS=()
WORK=""
stop_pid() {   # pid
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
bench_stop_all() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    if [[ -n "$WORK" && -d "$WORK" ]]; then
        if [[ "${BENCH_KEEP:-0}" == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
    fi
}
cleanup() { bench_stop_all; }
bench_cleanup_traps() {
    trap cleanup EXIT
    trap 'exit 130' INT TERM
}
