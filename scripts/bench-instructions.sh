#!/usr/bin/env bash
# User-space instructions per FTP session (issue 13): ftpgate and HAProxy 2.6
# in TCP mode in front of vsftpd, each under valgrind's callgrind, driven by
# the same load generator one session at a time (connect, login, PASV, LIST
# of 5 entries, QUIT).
#
#   scripts/bench-instructions.sh                        # builds ftpgate, ~2 min
#   FTPGATE_BIN=/tmp/a FTPGATE_BIN_B=/tmp/b scripts/bench-instructions.sh   # A/B
#
# Why: CPU time per session on a shared 2-vCPU machine moves by +-15 %
# from one run to the next (docs/PERFORMANCE.md), which hides any change
# smaller than that. callgrind counts the instructions a process executes
# in user space, which do not depend on what else the machine does: the
# same binary and workload give the same count within about 1 %. What it
# does not see is the kernel's side (system calls, TCP), which strace -c
# and bench-control.sh measure; on this workload the kernel's share is
# about the same for ftpgate and HAProxy (perf, docs/PERFORMANCE.md), so
# this figure is where the two differ.
#
# Each proxy gets BENCH_WARMUP_SECONDS of sessions first, then its counters
# are zeroed (callgrind_control -z), BENCH_SECONDS of sessions run (one
# client), and the counters are dumped (callgrind_control -d): startup and
# warm-up are not counted. Prints instructions per session for each, and
# the ratios; then, for ftpgate, the same split by the origin of the code
# (tokio, the standard library, malloc, ftpgate's own, ...: self cost by
# source file, scripts/lib/callgrind-origin.py; HAProxy's binary has no
# debug information to split by).
#
# Environment:
#   BENCH_SECONDS          measured sessions per proxy, in seconds (default 8)
#   BENCH_WARMUP_SECONDS   sessions before the counters are zeroed (default 2)
#   FTPGATE_BIN            ftpgate binary (default: build one, release)
#   FTPGATE_BIN_B          a second ftpgate binary, measured the same way (A/B)
#   CONTROL_LOAD_BIN       the load generator (default: build benches/control_load.rs)
#   BENCH_KEEP=1           keep the temp dir (configs, logs, callgrind files
#                          for callgrind_annotate)
#
# Needs root (vsftpd's anonymous sessions; unshare), vsftpd, haproxy,
# valgrind (callgrind_control), unshare and ip. Runs in a private network
# namespace; kills what it started, by PID, and removes its temp dir.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
SECONDS_MEASURED=${BENCH_SECONDS:-8}
WARMUP=${BENCH_WARMUP_SECONDS:-2}

log() { printf '[bench-instructions] %s\n' "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }
[[ "$SECONDS_MEASURED" =~ ^[1-9][0-9]*$ ]] || die "BENCH_SECONDS must be a positive integer"
[[ "$WARMUP" =~ ^[1-9][0-9]*$ ]] || die "BENCH_WARMUP_SECONDS must be a positive integer"
(( SECONDS_MEASURED <= 600 )) || die "BENCH_SECONDS must be at most 600"

(( $(id -u) == 0 )) || die "run as root: vsftpd's anonymous sessions switch to the ftp user"
VSFTPD=$(command -v vsftpd || echo /usr/sbin/vsftpd)
[[ -x "$VSFTPD" ]] || die "vsftpd not found (apt-get install vsftpd, or scripts/install-test-deps.sh)"
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
[[ -x "$HAPROXY" ]] || die "haproxy not found (apt-get install haproxy, or scripts/install-test-deps.sh)"
command -v valgrind >/dev/null && command -v callgrind_control >/dev/null \
    || die "valgrind not found (apt-get install valgrind)"

# --- build, then a network namespace of its own ------------------------------------
if [[ "${BENCH_IN_NETNS:-0}" != 1 ]]; then
    # shellcheck source=lib/ftpgate-bin.sh
    source "$ROOT/scripts/lib/ftpgate-bin.sh"
    ftpgate_binary
    if [[ -n "${FTPGATE_BIN_B:-}" ]]; then
        [[ -x "$FTPGATE_BIN_B" ]] || die "no ftpgate binary at FTPGATE_BIN_B=$FTPGATE_BIN_B"
    fi
    LOAD=${CONTROL_LOAD_BIN:-}
    if [[ -z "$LOAD" ]]; then
        log "building the load generator (benches/control_load.rs, release)"
        LOAD=$(timeout 1800 cargo build --release --bench control_load --message-format=json 2>/dev/null \
            | grep '"name":"control_load"' | grep -o '"executable":"[^"]*"' | tail -1 | cut -d'"' -f4) \
            || true
        [[ -n "$LOAD" ]] || die "building control_load failed"
    fi
    [[ -x "$LOAD" ]] || die "no load generator at $LOAD"
    command -v unshare >/dev/null || die "unshare not found (util-linux)"
    log "continuing in a private network namespace (unshare -n)"
    exec unshare --net env BENCH_IN_NETNS=1 FTPGATE_BIN="$BIN" CONTROL_LOAD_BIN="$LOAD" \
        "$ROOT/scripts/bench-instructions.sh"
fi
BIN=$FTPGATE_BIN
LOAD=$CONTROL_LOAD_BIN
ip link set lo up || die "cannot bring up lo in the namespace"
# As in bench-control.sh: vsftpd's lingering data close waits for the
# client's ACK; delayed ACKs would only slow the run down.
for dst in 127.0.0.0/8 127.0.0.1; do
    ip route replace local "$dst" dev lo table local proto kernel scope host src 127.0.0.1 quickack 1 \
        || die "cannot set quickack on the namespace's loopback route $dst"
done

# --- cleanup: only what this script started ---------------------------------------------
# shellcheck source=lib/bench-cleanup.sh
source "$ROOT/scripts/lib/bench-cleanup.sh"
# shellcheck source=lib/bench-vsftpd.sh
source "$ROOT/scripts/lib/bench-vsftpd.sh"
bench_cleanup_traps

WORK=$(mktemp -d "${TMPDIR:-/tmp}/ftpgate-bench-instructions.XXXXXX")
chmod 755 "$WORK"
mkdir -p "$WORK/root" "$WORK/empty"
chmod 755 "$WORK/root" "$WORK/empty"
for f in a b c d e; do head -c 1024 /dev/zero >"$WORK/root/file-$f"; done
chmod 644 "$WORK/root"/file-*

# Addresses: the namespace is private, so fixed ports cannot collide.
V=127.0.0.1:2121      # vsftpd, passive 40000-40499, its 227 names HAProxy
H=127.0.0.20:2121     # HAProxy, the passive range forwarded port for port
A=127.0.0.11:2121     # ftpgate
B=127.0.0.12:2121     # ftpgate B (FTPGATE_BIN_B)

bench_vsftpd "${V%:*}" "${V#*:}" <<EOF
write_enable=NO
xferlog_enable=NO
max_per_ip=0
max_clients=0
pasv_address=${H%:*}
pasv_min_port=40000
pasv_max_port=40499
EOF

cat >"$WORK/haproxy.cfg" <<EOF
global
    maxconn 4096
defaults
    mode tcp
    timeout connect 5s
    timeout client 10m
    timeout server 10m
frontend ftp_control
    bind $H
    default_backend ftp_control
backend ftp_control
    server s $V
frontend ftp_passive
    bind ${H%:*}:40000-40499
    default_backend ftp_passive
backend ftp_passive
    server s ${V%:*}
EOF

ftpgate_config() {   # listen passive-range
    cat <<EOF
listen = ["$1"]
backends = ["$V"]
public_address = "${1%:*}"
passive_ports = "$2"
passive_bind_address = "${1%:*}"
health_check = false
max_sessions_per_client = 1000000
max_connection_rate_per_client = 1000000
shutdown_drain_timeout = "1s"
EOF
}
ftpgate_config "$A" 41000-41199 >"$WORK/a.toml"
ftpgate_config "$B" 42000-42199 >"$WORK/b.toml"
"$BIN" check --config "$WORK/a.toml" >/dev/null || die "ftpgate check rejected $WORK/a.toml"

declare -A PID_OF ADDR_OF
start() {   # name addr command...
    local name=$1 addr=$2
    shift 2
    valgrind --tool=callgrind --callgrind-out-file="$WORK/cg-$name.out" "$@" \
        </dev/null >"$WORK/$name.log" 2>&1 &
    PIDS+=("$!")
    PID_OF[$name]=$!
    ADDR_OF[$name]=$addr
}
NAMES=(haproxy ftpgate)
start haproxy "$H" "$HAPROXY" -f "$WORK/haproxy.cfg" -db
start ftpgate "$A" "$BIN" --config "$WORK/a.toml"
if [[ -n "${FTPGATE_BIN_B:-}" ]]; then
    start ftpgate_b "$B" "$FTPGATE_BIN_B" --config "$WORK/b.toml"
    NAMES+=(ftpgate_b)
fi

wait_greeting() {   # addr pid name (valgrind starts slowly: up to 60 s)
    for _ in $(seq 600); do
        kill -0 "$2" 2>/dev/null || { tail -n 20 "$WORK"/*.log >&2; die "$3 exited"; }
        if timeout 2 bash -c "exec 3<>/dev/tcp/${1%:*}/${1#*:} && head -c 3 <&3" 2>/dev/null | grep -q 220; then
            return
        fi
        sleep 0.1
    done
    die "$3 did not greet on $1"
}
for n in "${NAMES[@]}"; do wait_greeting "${ADDR_OF[$n]}" "${PID_OF[$n]}" "$n"; done

# --- measuring -------------------------------------------------------------------------------
declare -A PER_SESSION DUMP_OF SESSIONS_OF
for n in "${NAMES[@]}"; do
    pid=${PID_OF[$n]}
    timeout $(( WARMUP * 10 + 60 )) "$LOAD" sessions --target "${ADDR_OF[$n]}" --clients 1 \
        --warmup 0 --seconds "$WARMUP" --data-host reply >/dev/null \
        || die "$n: warm-up sessions failed"
    callgrind_control -z "$pid" >/dev/null 2>&1 || die "$n: callgrind_control -z failed"
    out=$(timeout $(( SECONDS_MEASURED * 10 + 60 )) "$LOAD" sessions --target "${ADDR_OF[$n]}" \
        --clients 1 --warmup 0 --seconds "$SECONDS_MEASURED" --data-host reply) \
        || die "$n: sessions failed"
    callgrind_control -d "$pid" >/dev/null 2>&1 || die "$n: callgrind_control -d failed"
    sessions=$(grep -o 'sessions=[0-9]*' <<<"$out" | head -1 | cut -d= -f2)
    errors=$(grep -o 'errors=[0-9]*' <<<"$out" | head -1 | cut -d= -f2)
    [[ "$errors" == 0 ]] || die "$n: $errors failed sessions"
    (( sessions > 0 )) || die "$n: no session completed"
    dump=""
    for _ in $(seq 100); do
        dump=$(ls -t "$WORK/cg-$n.out."* 2>/dev/null | head -1 || true)
        [[ -n "$dump" ]] && grep -q '^totals:' "$dump" && break
        sleep 0.1
    done
    [[ -n "$dump" ]] || die "$n: no callgrind dump"
    ir=$(awk '/^totals:/ { print $2; exit }' "$dump")
    [[ "$ir" =~ ^[0-9]+$ ]] || die "$n: no instruction total in $dump"
    PER_SESSION[$n]=$(( ir / sessions ))
    DUMP_OF[$n]=$dump; SESSIONS_OF[$n]=$sessions
    log "$n: $sessions sessions, $ir instructions"
done

printf '\nUser-space instructions per session (callgrind; connect, login, PASV, LIST of 5, QUIT; one client; %ss after %ss of warm-up):\n\n' \
    "$SECONDS_MEASURED" "$WARMUP"
printf '| proxy | instructions per session | vs HAProxy |\n|---|---|---|\n'
for n in "${NAMES[@]}"; do
    printf '| %s | %s | %s |\n' "$n" "${PER_SESSION[$n]}" \
        "$(awk -v a="${PER_SESSION[$n]}" -v b="${PER_SESSION[haproxy]}" 'BEGIN { printf "%.2fx", a / b }')"
done
if [[ -n "${FTPGATE_BIN_B:-}" ]]; then
    printf '\nftpgate_b / ftpgate: %s\n' \
        "$(awk -v a="${PER_SESSION[ftpgate_b]}" -v b="${PER_SESSION[ftpgate]}" 'BEGIN { printf "%.3f", a / b }')"
fi
# Where ftpgate's instructions come from (HAProxy's binary has no debug
# information to tell).
for n in "${NAMES[@]}"; do
    [[ "$n" == haproxy ]] && continue
    printf '\n%s, by the origin of the code (self cost; code inlined from a crate counts to it):\n\n' "$n"
    python3 "$ROOT/scripts/lib/callgrind-origin.py" "${DUMP_OF[$n]}" "${SESSIONS_OF[$n]}" \
        || log "$n: the breakdown by origin failed (the figures above stand)"
done
printf '\nftpgate: %s\nftpgate_b: %s\n' "$BIN" "${FTPGATE_BIN_B:--}"
