# Sourced by the bench and soak scripts (after they define ROOT, log and die).
#
# ftpgate_binary: sets BIN to $FTPGATE_BIN if given, else builds ftpgate in
# release mode (CARGO_TARGET_DIR respected, default $ROOT/target) and sets
# BIN to the result; dies if there is no executable there.
ftpgate_binary() {
    if [[ -n "${FTPGATE_BIN:-}" ]]; then
        BIN=$FTPGATE_BIN
    else
        log "building ftpgate (release)"
        timeout 1800 cargo build --release --bin ftpgate >&2 || die "cargo build failed"
        BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/ftpgate"
    fi
    [[ -x "$BIN" ]] || die "no ftpgate binary at $BIN"
}
