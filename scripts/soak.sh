#!/usr/bin/env bash
# Soak test, bounded in time, loopback only: ftpgate in front of two vsftpd
# of its own, SOAK_CLIENTS clients doing mixed uploads and downloads of random
# files (0 B to a few MiB) in PASV, EPSV, PORT and EPRT, each checked by
# SHA-256, while backends are killed and restarted, clients abort transfers
# (ABOR, data connection reset), the small passive range is exhausted by
# bursts of PASV, ftpgate reloads on SIGHUP every few seconds, and the run
# ends with SIGTERM while transfers are in flight.
#
#   nice -n 19 scripts/soak.sh                   # 600 s, 16 clients
#   SOAK_SECONDS=60 SOAK_CLIENTS=4 scripts/soak.sh
#
# Environment:
#   SOAK_SECONDS        run time before the final SIGTERM (default 600)
#   SOAK_CLIENTS        concurrent client sessions (default 16)
#   SOAK_PASSIVE_PORTS  size of ftpgate's passive range (default 20)
#   SOAK_KILL_EVERY     seconds between backend kills (default 45)
#   SOAK_RELOAD_EVERY   seconds between SIGHUPs (default 5)
#   SOAK_BURST_EVERY    seconds between PASV bursts (default 20)
#   SOAK_SEED           random seed (default: the time)
#   SOAK_KEEP=1         keep the work directory (configs, logs, report.json)
#   SOAK_VERBOSE=1      log every failed transfer
#   CARGO_TARGET_DIR    where the release build goes (default: target/)
#   FTPGATE_BIN         use this binary instead of building one
#
# Prints transfers attempted, completed (2xx and right bytes), failed (error
# reply or connection error), aborted on purpose, and the figure that must be
# zero: transfers answered 2xx with wrong bytes. Exits non-zero if that figure
# or the count of panics in ftpgate's log is not zero, or if ftpgate does not
# exit 0 after the SIGTERM. The driver is scripts/soak-driver.py (ftplib,
# threads); it starts every server itself and kills them by process group id;
# this script kills the driver and anything it left, by id, on exit.
#
# Needs root (vsftpd's anonymous sessions switch to the ftp user), vsftpd
# and python3. Bounded: the build gets 30 min, the driver SOAK_SECONDS + 300 s.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
SECONDS_=${SOAK_SECONDS:-600}
CLIENTS=${SOAK_CLIENTS:-16}

log() { printf '[soak] %s\n' "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

[[ "$SECONDS_" =~ ^[1-9][0-9]*$ ]] || die "SOAK_SECONDS must be a positive integer"
[[ "$CLIENTS" =~ ^[1-9][0-9]*$ ]] || die "SOAK_CLIENTS must be a positive integer"
(( $(id -u) == 0 )) || die "run as root: vsftpd's anonymous sessions switch to the ftp user"
VSFTPD=$(command -v vsftpd || echo /usr/sbin/vsftpd)
[[ -x "$VSFTPD" ]] || die "vsftpd not found (scripts/install-test-deps.sh)"
command -v python3 >/dev/null || die "python3 not found"
id ftp >/dev/null 2>&1 || die "system user ftp missing (made by the vsftpd package)"

# --- cleanup: the driver, then whatever it left (process groups it listed) ---
DRIVER_PID=""
WORK=""
cleanup() {
    local pid
    if [[ -n "$DRIVER_PID" ]] && kill -0 "$DRIVER_PID" 2>/dev/null; then
        kill -TERM "$DRIVER_PID" 2>/dev/null || true
        for _ in $(seq 300); do kill -0 "$DRIVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$DRIVER_PID" 2>/dev/null || true
    fi
    if [[ -n "$WORK" && -f "$WORK/pids" ]]; then
        while read -r pid; do
            [[ "$pid" =~ ^[0-9]+$ ]] && kill -KILL -- "-$pid" 2>/dev/null || true
        done <"$WORK/pids"
    fi
    # vsftpd's session processes leave their group (setsid) but keep the
    # listener's command line, which names a config file in $WORK.
    if [[ -n "$WORK" ]]; then
        for pid in $(grep -lsF "$WORK/" /proc/[0-9]*/cmdline | cut -d/ -f3); do
            kill -KILL "$pid" 2>/dev/null || true
        done
    fi
    if [[ -n "$WORK" && -d "$WORK" ]]; then
        if [[ "${SOAK_KEEP:-0}" == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- build -------------------------------------------------------------------
# shellcheck source=lib/ftpgate-bin.sh
source "$ROOT/scripts/lib/ftpgate-bin.sh"
ftpgate_binary

# tmpfs if it has room for the files and uploads in flight (~ 200 MiB)
if [[ -d /dev/shm ]] && (( $(df -Pk /dev/shm | awk 'NR==2 {print $4}') > 400000 )); then
    base=/dev/shm
else
    base=${TMPDIR:-/tmp}
fi
WORK=$(mktemp -d "$base/ftpgate-soak.XXXXXX")
chmod 755 "$WORK"
log "work directory $WORK; ftpgate $BIN"

args=(--work "$WORK" --ftpgate "$BIN" --vsftpd "$VSFTPD" --seconds "$SECONDS_" --clients "$CLIENTS"
      --passive-ports "${SOAK_PASSIVE_PORTS:-20}" --kill-every "${SOAK_KILL_EVERY:-45}"
      --reload-every "${SOAK_RELOAD_EVERY:-5}" --burst-every "${SOAK_BURST_EVERY:-20}")
[[ -n "${SOAK_SEED:-}" ]] && args+=(--seed "$SOAK_SEED")
[[ "${SOAK_VERBOSE:-0}" == 1 ]] && args+=(--verbose)

rc=0
timeout --kill-after=10 $(( SECONDS_ + 300 )) python3 scripts/soak-driver.py "${args[@]}" &
DRIVER_PID=$!
wait "$DRIVER_PID" || rc=$?
DRIVER_PID=""
(( rc == 0 )) || die "soak failed (driver exit $rc): see the figures above${SOAK_KEEP:+ and $WORK}"
log "soak passed: no 2xx with wrong bytes, no panic, clean exit after SIGTERM"
