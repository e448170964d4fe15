#!/usr/bin/env bash
# The control path side by side (issue 13): what ftpgate and HAProxy 2.6 in
# TCP mode (and, for the two latency figures, ProFTPD's mod_proxy) add to
# FTP control sessions over a direct connection to vsftpd, measured in one
# run on loopback.
#
#   scripts/bench-control.sh                       # 5 repetitions, ~7 min after the build
#   BENCH_RUNS=3 BENCH_IDLE_LEVELS=1000,4000 scripts/bench-control.sh
#
# Figures (each the median over BENCH_RUNS repetitions; in each repetition
# the targets take turns, in an order rotated every repetition):
#   - NOOP round trip added over direct: median of BENCH_NOOP_COUNT round
#     trips on one logged-in session per target (after 200 warm-up), one
#     NOOP to each target in turn.
#   - PASV + data connect + LIST of 5 entries + 226, added over direct:
#     median of BENCH_LIST_COUNT rounds on one logged-in session per
#     target, one round to each target in turn.
#   These two also through ProFTPD 1.3.8 with mod_proxy (reverse proxy;
#   BENCH_MODPROXY=0 leaves it out). The other figures leave it out: it
#   runs a process per session (its CPU and memory are not one process's),
#   its master sleeps 200 ms after each session process exits
#   (shared/REAL-SERVERS.md), which caps sessions per second, and its
#   default SQLite store drops sessions under concurrency.
#   - proxy CPU per session (connect, login, PASV, LIST, QUIT) at each of
#     BENCH_CLIENTS concurrent clients: utime + stime of the proxy process
#     (/proc/PID/stat) over a BENCH_SESSION_SECONDS window, divided by the
#     sessions completed in it. The window is cut into BENCH_SESSION_SLICES
#     slices (each after 0.5 s of warm-up), and the targets' slices run in
#     turn, so changing load from other work falls on all of them alike.
#   - sessions per second in the same window, as a ratio to direct in the
#     same repetition; every failed session counts as an error.
#   - memory per idle logged-in session: VmRSS of a fresh proxy process with
#     N sessions open minus its RSS before them (after 64 warm-up sessions),
#     divided by N; at each of BENCH_IDLE_LEVELS (the first is "the" figure,
#     the last is the capacity shown).
# The idle and capacity figures use a light scripted backend (the load
# generator's `backend` subcommand, one async process) instead of vsftpd:
# thousands of vsftpd processes would measure vsftpd.
#
# Environment:
#   BENCH_RUNS             repetitions (default 5, at most 50)
#   BENCH_NOOP_COUNT       NOOPs timed per target and repetition (default 2000)
#   BENCH_LIST_COUNT       PASV+LIST rounds per target and repetition (default 300)
#   BENCH_CLIENTS          concurrency levels (default "1 16 64")
#   BENCH_SESSION_SECONDS  measured window per level and target (default 3)
#   BENCH_SESSION_SLICES   the window is cut into this many slices, the three
#                          targets' slices run in turn (default 3)
#   BENCH_IDLE_LEVELS      idle sessions held, comma-separated (default 1000,9000)
#   BENCH_IDLE_WAIT        before each repetition, wait up to this many seconds
#                          for the machine to be idle (< 15% busy over 3 s);
#                          default 20, 0 = don't wait; busy starts are flagged
#   BENCH_DEADLINE         no new repetition starts after this many seconds of
#                          measuring (default 1200); the ones done are reported
#   BENCH_NETNS            1 (default): run in a private network namespace;
#                          0: on the machine's loopback
#   BENCH_QUICKACK         1 (default, needs BENCH_NETNS=1): the namespace's
#                          loopback acknowledges at once (see "delayed ACKs"
#                          below); 0: the kernel's delayed ACKs
#   BENCH_CLIENT_QUICKACK  1: the load generator alone acknowledges at once
#                          (TCP_QUICKACK before each read); with
#                          BENCH_QUICKACK=0 this shows whether a proxy's
#                          backend leg makes vsftpd's 226 wait (default 0)
#   BENCH_FTPGATE_EXTRA    TOML lines appended to both ftpgate configs
#   BENCH_MODPROXY         1 (default): ProFTPD mod_proxy in the NOOP and LIST
#                          figures (proftpd, mod_tls and mod_proxy unpacked by
#                          scripts/install-test-deps.sh under FTPGATE_PEERS_DIR,
#                          default /opt/ftpgate-peers); 0: without it
#   BENCH_KEEP=1           keep the temp dir (configs, logs, raw results)
#   CARGO_TARGET_DIR       where the release build goes (default: target/)
#   FTPGATE_BIN            use this ftpgate binary instead of building one
#   CONTROL_LOAD_BIN       use this load generator instead of building one
#
# Setup (all on loopback, by default a private network namespace's with
# delayed ACKs off: see "a network namespace of its own" below; 127.x
# addresses keep every listener apart):
#   vsftpd    127.0.0.1:V   anonymous, 5 files in its root, isolate=NO,
#                           isolate_network=NO, seccomp_sandbox=NO (as in the
#                           other bench scripts: namespaces cost ~1 ms of CPU
#                           per session); pasv_address=127.0.0.20 (HAProxy's
#                           address, without which HAProxy cannot carry FTP)
#                           and a 500-port passive range.
#   ftpgate   127.0.0.10:G  -> vsftpd; public_address 127.0.0.10, its own
#                           200-port passive range on 127.0.0.10; defaults
#                           otherwise (log level info, to a file) except
#                           health_check = false and the per-client session
#                           and connection-rate limits raised (every client
#                           here is 127.0.0.1).
#   HAProxy   127.0.0.20:H  -> vsftpd, mode tcp, no logging; the passive
#                           range 127.0.0.20:P0-P1 forwarded port for port to
#                           127.0.0.1 (vsftpd's passive sockets).
#   mod_proxy 127.0.0.40:M  ProFTPD 1.3.8 + mod_proxy 0.9 as a reverse proxy
#                           (ProxyRole reverse, defaults otherwise: it logs
#                           in to the backend with the client's USER/PASS and
#                           opens its own data connections) -> a second
#                           vsftpd, 127.0.0.2:V2, configured like the first
#                           but for its own passive range and no
#                           pasv_address (mod_proxy uses the backend's 227
#                           address, which must not be HAProxy's); its own
#                           100-port passive range on 127.0.0.40.
#   light backend 127.0.0.30, and for the idle figures a fresh ftpgate on
#   127.0.0.11 and a fresh HAProxy on 127.0.0.21 in front of it.
# Direct clients use the control address for data (vsftpd's 227 names
# HAProxy), as curl does by default; clients of a proxy use the 227's
# address, so a wrong rewrite fails.
#
# Output: a Markdown table (figure, direct, ftpgate, HAProxy, ftpgate vs
# HAProxy, issue 13's target for ftpgate) and every repetition's raw
# figures. Exit status 0 when every session succeeded, whatever the figures
# (a measurement, not a test); 1 if any session failed (the table is
# printed anyway, with the error counts).
#
# Bounded: the build gets 30 min, every load-generator run a timeout, the
# repetitions BENCH_RUNS and BENCH_DEADLINE, every readiness poll 10 s.
# Needs root (vsftpd's anonymous sessions switch to the ftp user; unshare),
# vsftpd, haproxy, ss, ip and unshare; raises its open-files soft limit to
# the hard limit (ulimit -n) for everything it starts. Kills what it
# started, by PID, and removes its temp dir on exit; the namespace goes away
# with its last process.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
RUNS=${BENCH_RUNS:-5}
NOOP_COUNT=${BENCH_NOOP_COUNT:-2000}
LIST_COUNT=${BENCH_LIST_COUNT:-300}
CLIENTS=${BENCH_CLIENTS:-"1 16 64"}
SESSION_SECONDS=${BENCH_SESSION_SECONDS:-3}
SLICES=${BENCH_SESSION_SLICES:-3}
IDLE_LEVELS=${BENCH_IDLE_LEVELS:-1000,9000}
IDLE_WAIT=${BENCH_IDLE_WAIT:-20}
DEADLINE=${BENCH_DEADLINE:-1200}
NETNS=${BENCH_NETNS:-1}
QUICKACK=${BENCH_QUICKACK:-1}
CLIENT_QUICKACK=${BENCH_CLIENT_QUICKACK:-0}
MODPROXY=${BENCH_MODPROXY:-1}
PEERS_DIR=${FTPGATE_PEERS_DIR:-/opt/ftpgate-peers}
MAX_RUNS=50

log() { printf '[bench-control] %s\n' "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

posint() { [[ "$2" =~ ^[1-9][0-9]*$ ]] || die "$1 must be a positive integer"; }
posint BENCH_RUNS "$RUNS"
(( RUNS <= MAX_RUNS )) || die "BENCH_RUNS must be at most $MAX_RUNS"
posint BENCH_NOOP_COUNT "$NOOP_COUNT"
posint BENCH_LIST_COUNT "$LIST_COUNT"
posint BENCH_SESSION_SECONDS "$SESSION_SECONDS"
posint BENCH_SESSION_SLICES "$SLICES"
SLICE_SECONDS=$(awk -v a="$SESSION_SECONDS" -v b="$SLICES" 'BEGIN { printf "%.3f", a / b }')
posint BENCH_DEADLINE "$DEADLINE"
[[ "$IDLE_WAIT" =~ ^[0-9]+$ ]] || die "BENCH_IDLE_WAIT must be a non-negative integer"
[[ "$NETNS" =~ ^[01]$ ]] || die "BENCH_NETNS must be 0 or 1"
[[ "$QUICKACK" =~ ^[01]$ ]] || die "BENCH_QUICKACK must be 0 or 1"
[[ "$CLIENT_QUICKACK" =~ ^[01]$ ]] || die "BENCH_CLIENT_QUICKACK must be 0 or 1"
[[ "$MODPROXY" =~ ^[01]$ ]] || die "BENCH_MODPROXY must be 0 or 1"
CLIENT_ACK=no; (( CLIENT_QUICKACK == 0 )) || CLIENT_ACK=yes
(( NETNS == 1 || QUICKACK == 0 )) || die "BENCH_QUICKACK=1 needs BENCH_NETNS=1 (the machine's own routes are left alone); set BENCH_QUICKACK=0"
for c in $CLIENTS; do posint "BENCH_CLIENTS entry" "$c"; done
IFS=, read -r -a LEVELS <<<"$IDLE_LEVELS"
(( ${#LEVELS[@]} > 0 )) || die "BENCH_IDLE_LEVELS is empty"
prev=0
for l in "${LEVELS[@]}"; do
    posint "BENCH_IDLE_LEVELS entry" "$l"
    (( l > prev )) || die "BENCH_IDLE_LEVELS must increase"
    prev=$l
done
TOP=${LEVELS[-1]}
FIRST=${LEVELS[0]}

(( $(id -u) == 0 )) || die "run as root: vsftpd's anonymous sessions switch to the ftp user"
VSFTPD=$(command -v vsftpd || echo /usr/sbin/vsftpd)
[[ -x "$VSFTPD" ]] || die "vsftpd not found (apt-get install vsftpd, or scripts/install-test-deps.sh)"
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
[[ -x "$HAPROXY" ]] || die "haproxy not found (apt-get install haproxy, or scripts/install-test-deps.sh)"
command -v ss >/dev/null || die "ss not found (iproute2)"
PROFTPD=$PEERS_DIR/usr/sbin/proftpd
if (( MODPROXY )); then
    for f in "$PROFTPD" "$PEERS_DIR/usr/lib/proftpd/mod_tls.so" "$PEERS_DIR/usr/lib/proftpd/mod_proxy.so"; do
        [[ -e "$f" ]] || die "$f not found (scripts/install-test-deps.sh unpacks proftpd, mod_tls and mod_proxy); or BENCH_MODPROXY=0"
    done
fi
id ftp >/dev/null 2>&1 || die "system user ftp missing (made by the vsftpd package)"

# Open files: every process started here inherits the raised soft limit.
# A proxy holds two sockets per idle session, the load generator and the
# light backend one each.
HARD=$(ulimit -Hn)
if [[ "$HARD" != unlimited ]]; then
    need=$(( 2 * TOP + 1000 ))
    (( HARD >= need )) || die "the hard open-files limit is $HARD; $TOP idle sessions need about $need (lower BENCH_IDLE_LEVELS)"
fi
ulimit -n "$HARD" || die "cannot raise the open-files soft limit to $HARD"

# --- cleanup: only what this script started ---------------------------------
# shellcheck source=lib/bench-cleanup.sh
source "$ROOT/scripts/lib/bench-cleanup.sh"
# shellcheck source=lib/bench-vsftpd.sh
source "$ROOT/scripts/lib/bench-vsftpd.sh"
bench_cleanup_traps

# --- build ---------------------------------------------------------------------
# shellcheck source=lib/ftpgate-bin.sh
source "$ROOT/scripts/lib/ftpgate-bin.sh"
ftpgate_binary
if [[ -n "${CONTROL_LOAD_BIN:-}" ]]; then
    LOAD=$CONTROL_LOAD_BIN
else
    log "building the load generator (benches/control_load.rs, release)"
    LOAD=$(timeout 1800 cargo build --release --bench control_load --message-format=json 2>/dev/null \
        | grep '"name":"control_load"' | grep -o '"executable":"[^"]*"' | tail -1 | cut -d'"' -f4) \
        || true
    [[ -n "$LOAD" ]] || { timeout 1800 cargo build --release --bench control_load >&2; die "building control_load failed"; }
fi
[[ -x "$LOAD" ]] || die "no load generator at $LOAD"

# --- a network namespace of its own ------------------------------------------------
# Everything from here on runs in a private network namespace (unshare -n):
# its loopback carries only this benchmark's traffic, no port can collide
# with other work on the machine, and the namespace goes away with the last
# process of the run. BENCH_NETNS=0 uses the machine's loopback instead.
#
# Delayed ACKs: vsftpd closes a data connection with SO_LINGER on (seen
# with strace: l_linger=600), so its close() returns, and the 226 goes out,
# only once the peer has acknowledged the listing; a peer whose kernel
# delays that ACK (Linux: 40 ms at least) makes every LIST of a logged-in
# session take ~44 ms, direct and through either proxy alike, which buries
# everything else (docs/PERFORMANCE.md). So by default the namespace's
# loopback acknowledges at once, for every process (route attribute
# quickack 1): the figures are what each path costs, not how its ACK timing
# meets vsftpd's lingering close. BENCH_QUICKACK=0 keeps the kernel's
# delayed ACKs.
if [[ "$NETNS" == 1 && "${BENCH_IN_NETNS:-0}" != 1 ]]; then
    command -v unshare >/dev/null || die "unshare not found (util-linux); or run with BENCH_NETNS=0"
    command -v ip >/dev/null || die "ip not found (iproute2); or run with BENCH_NETNS=0"
    log "continuing in a private network namespace (unshare -n)"
    exec unshare --net env BENCH_IN_NETNS=1 FTPGATE_BIN="$BIN" CONTROL_LOAD_BIN="$LOAD" \
        "$ROOT/scripts/bench-control.sh"
fi
NETWORK="the machine's loopback, kernel-default delayed ACKs"
if [[ "${BENCH_IN_NETNS:-0}" == 1 ]]; then
    ip link set lo up || die "cannot bring up lo in the namespace"
    NETWORK="private network namespace (unshare -n), loopback"
    if [[ "$QUICKACK" == 1 ]]; then
        for dst in 127.0.0.0/8 127.0.0.1; do
            ip route replace local "$dst" dev lo table local proto kernel scope host src 127.0.0.1 quickack 1 \
                || die "cannot set quickack on the namespace's loopback route $dst"
        done
        NETWORK+=", delayed ACKs off (route quickack 1)"
    else
        NETWORK+=", kernel-default delayed ACKs"
    fi
fi
if (( CLIENT_QUICKACK )); then
    NETWORK+="; the load generator acknowledges at once (TCP_QUICKACK)"
fi

# --- temp dir, vsftpd root --------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ftpgate-bench-control.XXXXXX")
chmod 755 "$WORK"
mkdir -p "$WORK/root" "$WORK/empty"
chmod 755 "$WORK/root" "$WORK/empty"     # vsftpd: anon root must not be writable
for f in a b c d e; do head -c 1024 /dev/zero >"$WORK/root/file-$f"; done
chmod 644 "$WORK/root"/file-*
RESULTS=$WORK/results
: >"$RESULTS"

# --- addresses and ports ----------------------------------------------------------
V_IP=127.0.0.1; G_IP=127.0.0.10; H_IP=127.0.0.20
L_IP=127.0.0.30; GB_IP=127.0.0.11; HB_IP=127.0.0.21
M_IP=127.0.0.40; V2_IP=127.0.0.2
# Ports in use on any address; ranges are picked below Linux's ephemeral
# range (32768-60999), where outgoing connections take their ports.
USED=$(ss -Htan | awk '{ n = split($4, a, ":"); print a[n] }' | sort -un)
taken() { grep -qx "$1" <<<"$USED"; }
range_free() {   # first count
    awk -v a="$1" -v b="$(( $1 + $2 - 1 ))" '$1 >= a && $1 <= b { bad = 1 } END { exit bad }' <<<"$USED"
}
CLAIMED=()
pick_range() {   # count -> first port of a free range not claimed before
    local p c ok
    for _ in $(seq 200); do
        p=$(( 10000 + RANDOM % (32000 - 10000 - $1) ))
        range_free "$p" "$1" || continue
        ok=1
        for c in "${CLAIMED[@]}"; do
            local cf=${c%-*} cl=${c#*-}
            (( p + $1 - 1 < cf || p > cl )) || { ok=0; break; }
        done
        (( ok )) || continue
        CLAIMED+=("$p-$(( p + $1 - 1 ))")
        echo "$p"; return
    done
    die "no free range of $1 ports found"
}
VPORT=$(pick_range 1); CLAIMED+=("$VPORT-$VPORT")
GPORT=$(pick_range 1); CLAIMED+=("$GPORT-$GPORT")
HPORT=$(pick_range 1); CLAIMED+=("$HPORT-$HPORT")
LPORT=$(pick_range 1); CLAIMED+=("$LPORT-$LPORT")
GBPORT=$(pick_range 1); CLAIMED+=("$GBPORT-$GBPORT")
HBPORT=$(pick_range 1); CLAIMED+=("$HBPORT-$HBPORT")
VP0=$(pick_range 500); CLAIMED+=("$VP0-$(( VP0 + 499 ))"); VP1=$(( VP0 + 499 ))
GP0=$(pick_range 200); CLAIMED+=("$GP0-$(( GP0 + 199 ))"); GP1=$(( GP0 + 199 ))
GBP0=$(pick_range 10); CLAIMED+=("$GBP0-$(( GBP0 + 9 ))"); GBP1=$(( GBP0 + 9 ))
if (( MODPROXY )); then
    MPORT=$(pick_range 1); CLAIMED+=("$MPORT-$MPORT")
    V2PORT=$(pick_range 1); CLAIMED+=("$V2PORT-$V2PORT")
    MP0=$(pick_range 100); CLAIMED+=("$MP0-$(( MP0 + 99 ))"); MP1=$(( MP0 + 99 ))
    V2P0=$(pick_range 100); CLAIMED+=("$V2P0-$(( V2P0 + 99 ))"); V2P1=$(( V2P0 + 99 ))
fi

# --- vsftpd ------------------------------------------------------------------------
bench_vsftpd "$V_IP" "$VPORT" <<EOF
write_enable=NO
xferlog_enable=NO
# Debian's build limits each client address to 50 sessions (its manual says
# 0, unlimited); every client here is 127.0.0.1.
max_per_ip=0
max_clients=0
# HAProxy knows nothing of FTP: the 227 must name it, and it forwards the
# passive range port for port.
pasv_address=$H_IP
pasv_min_port=$VP0
pasv_max_port=$VP1
EOF

# --- ProFTPD mod_proxy, in front of a vsftpd of its own ---------------------------
if (( MODPROXY )); then
    bench_vsftpd "$V2_IP" "$V2PORT" vsftpd-modproxy <<EOF
write_enable=NO
xferlog_enable=NO
max_per_ip=0
max_clients=0
pasv_min_port=$V2P0
pasv_max_port=$V2P1
EOF
    V2_PID=$VSFTPD_PID
    # ModulePath takes one directory: proftpd's modules are all there.
    mkdir -p "$WORK/modproxy/run" "$WORK/modproxy/tables"
    chown nobody "$WORK/modproxy/tables"    # sessions run as nobody
    cat >"$WORK/modproxy/proftpd.conf" <<EOF
ServerName "bench-modproxy"
ServerType standalone
Port $MPORT
DefaultAddress $M_IP
SocketBindTight on
UseIPv6 off
User nobody
Group nogroup
ModulePath $PEERS_DIR/usr/lib/proftpd
# mod_tls before mod_proxy, or mod_proxy fails on an OpenSSL symbol.
LoadModule mod_tls.c
LoadModule mod_proxy.c
PidFile $WORK/modproxy/run/proftpd.pid
ScoreboardFile $WORK/modproxy/run/proftpd.scoreboard
DelayTable $WORK/modproxy/run/proftpd.delay
SystemLog $WORK/modproxy/run/system.log
TransferLog none
WtmpLog off
ControlsEngine off
DelayEngine off
AuthPAM off
UseReverseDNS off
MaxInstances 500
PassivePorts $MP0 $MP1
<IfModule mod_proxy.c>
  ProxyEngine on
  ProxyLog $WORK/modproxy/run/proxy.log
  ProxyTables $WORK/modproxy/tables
  ProxyRole reverse
  ProxyReverseServers ftp://$V2_IP:$V2PORT
</IfModule>
EOF
    "$PROFTPD" --configtest -c "$WORK/modproxy/proftpd.conf" >"$WORK/modproxy-check.log" 2>&1 \
        || { cat "$WORK/modproxy-check.log" >&2; die "proftpd --configtest rejected $WORK/modproxy/proftpd.conf"; }
    "$PROFTPD" --nodaemon -c "$WORK/modproxy/proftpd.conf" </dev/null >"$WORK/modproxy.log" 2>&1 &
    MODPROXY_PID=$!
    PIDS+=("$MODPROXY_PID")
fi

# --- ftpgate -----------------------------------------------------------------------
ftpgate_config() {   # listen-ip port backend passive-first passive-last
    cat <<EOF
listen = ["$1:$2"]
backends = ["$3"]
public_address = "$1"
passive_ports = "$4-$5"
passive_bind_address = "$1"
# The benchmark's own choices: no health-check sessions in the CPU figures;
# every client here is 127.0.0.1, so the per-client limits are raised.
health_check = false
max_sessions_per_client = 1000000
max_connection_rate_per_client = 1000000
shutdown_drain_timeout = "1s"
${BENCH_FTPGATE_EXTRA:-}
EOF
}
start_ftpgate() {   # name config-text -> sets STARTED_PID
    printf '%s\n' "$2" >"$WORK/$1.toml"
    "$BIN" check --config "$WORK/$1.toml" >"$WORK/$1-check.log" 2>&1 \
        || { cat "$WORK/$1-check.log" >&2; die "ftpgate check rejected $WORK/$1.toml"; }
    "$BIN" --config "$WORK/$1.toml" </dev/null >"$WORK/$1.log" 2>&1 &
    STARTED_PID=$!
    PIDS+=("$STARTED_PID")
}
start_ftpgate ftpgate "$(ftpgate_config "$G_IP" "$GPORT" "$V_IP:$VPORT" "$GP0" "$GP1")"
GATE_PID=$STARTED_PID

# --- HAProxy -------------------------------------------------------------------------
haproxy_config() {   # maxconn front-ip front-port backend-ip backend-port [passive-first passive-last]
    cat <<EOF
global
    maxconn $1

defaults
    mode tcp
    timeout connect 5s
    timeout client 10m
    timeout server 10m

frontend ftp_control
    bind $2:$3
    default_backend ftp_control

backend ftp_control
    server s $4:$5
EOF
    if [[ -n "${6:-}" ]]; then
        cat <<EOF

# The passive range, port for port (a server without a port keeps the
# destination port).
frontend ftp_passive
    bind $2:$6-$7
    default_backend ftp_passive

backend ftp_passive
    server s $4
EOF
    fi
}
start_haproxy() {   # name config-text -> sets STARTED_PID
    printf '%s\n' "$2" >"$WORK/$1.cfg"
    "$HAPROXY" -c -f "$WORK/$1.cfg" >"$WORK/$1-check.log" 2>&1 \
        || { cat "$WORK/$1-check.log" >&2; die "haproxy -c rejected $WORK/$1.cfg"; }
    "$HAPROXY" -f "$WORK/$1.cfg" -db </dev/null >"$WORK/$1.log" 2>&1 &
    STARTED_PID=$!
    PIDS+=("$STARTED_PID")
}
start_haproxy haproxy "$(haproxy_config 4096 "$H_IP" "$HPORT" "$V_IP" "$VPORT" "$VP0" "$VP1")"
HAPROXY_PID=$STARTED_PID

# --- light backend ------------------------------------------------------------------------
"$LOAD" backend --listen "$L_IP:$LPORT" --max-seconds $(( DEADLINE + 1800 )) \
    </dev/null >"$WORK/backend.log" 2>&1 &
BACKEND_PID=$!
PIDS+=("$BACKEND_PID")

wait_greeting() {   # ip port pid name
    for _ in $(seq 100); do
        kill -0 "$3" 2>/dev/null || { tail -n 20 "$WORK"/*.log >&2; die "$4 exited"; }
        if timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2 && head -c 3 <&3" 2>/dev/null | grep -q 220; then
            return
        fi
        sleep 0.1
    done
    die "$4 did not greet on $1:$2"
}
wait_greeting "$V_IP" "$VPORT" "$VSFTPD_PID" vsftpd
wait_greeting "$G_IP" "$GPORT" "$GATE_PID" ftpgate
wait_greeting "$H_IP" "$HPORT" "$HAPROXY_PID" haproxy
wait_greeting "$L_IP" "$LPORT" "$BACKEND_PID" "light backend"
if (( MODPROXY )); then
    wait_greeting "$V2_IP" "$V2PORT" "$V2_PID" "vsftpd (mod_proxy's)"
    wait_greeting "$M_IP" "$MPORT" "$MODPROXY_PID" "ProFTPD mod_proxy"
    log "ProFTPD mod_proxy $M_IP:$MPORT (pid $MODPROXY_PID, passive $MP0-$MP1) -> vsftpd $V2_IP:$V2PORT (pid $V2_PID)"
fi
log "vsftpd $V_IP:$VPORT (pid $VSFTPD_PID, passive $VP0-$VP1), ftpgate $G_IP:$GPORT (pid $GATE_PID), HAProxy $H_IP:$HPORT (pid $HAPROXY_PID), light backend $L_IP:$LPORT"

# --- measuring ---------------------------------------------------------------------------
CLK_TCK=$(getconf CLK_TCK)
declare -A ADDR=([direct]="$V_IP:$VPORT" [ftpgate]="$G_IP:$GPORT" [haproxy]="$H_IP:$HPORT")
if (( MODPROXY )); then ADDR[modproxy]="$M_IP:$MPORT"; fi
declare -A PID_OF=([direct]="$VSFTPD_PID" [ftpgate]="$GATE_PID" [haproxy]="$HAPROXY_PID")
# Direct: vsftpd's 227 names HAProxy, so use the control address (as curl does).
declare -A DATA_HOST=([direct]=control [ftpgate]=reply [haproxy]=reply [modproxy]=reply)
# Direct: vsftpd's CPU counts its reaped session processes (informative only).
declare -A CHILDREN=([direct]=yes [ftpgate]=no [haproxy]=no)
FAILED_RUNS=0

# Runs the load generator; appends "rep=R name=N <its line>" to RESULTS.
# A run that fails outright (no figure) is recorded with errors=1.
load() {   # rep name seconds-limit subcommand args...
    local rep=$1 name=$2 limit=$3 out st=0
    shift 3
    out=$(timeout "$limit" "$LOAD" "$@" 2>>"$WORK/load-errors.log") || st=$?
    if [[ -z "$out" ]]; then
        FAILED_RUNS=$(( FAILED_RUNS + 1 ))
        log "rep $rep $name: '$1' failed (exit $st); see the errors below"
        tail -n 5 "$WORK/load-errors.log" >&2 || true
        printf 'rep=%s name=%s %s %s failed=1 errors=1\n' "$rep" "$name" "$1" "${TAG:-}" >>"$RESULTS"
        return 0
    fi
    while IFS= read -r line; do
        printf 'rep=%s name=%s %s\n' "$rep" "$name" "$line" >>"$RESULTS"
    done <<<"$out"
    (( st == 0 )) || log "rep $rep $name: '$1' reported errors (exit $st)"
}

# The same for a run over all the latency targets at once: each line names its
# target, which gives the name.
declare -A NAME_OF=(["$V_IP:$VPORT"]=direct ["$G_IP:$GPORT"]=ftpgate ["$H_IP:$HPORT"]=haproxy)
if (( MODPROXY )); then NAME_OF["$M_IP:$MPORT"]=modproxy; fi
# The targets of the NOOP and LIST figures (mod_proxy only there).
LATENCY_TARGETS=(direct ftpgate haproxy)
if (( MODPROXY )); then LATENCY_TARGETS+=(modproxy); fi
load_all() {   # rep seconds-limit subcommand args...
    local rep=$1 limit=$2 out st=0 line addr t
    shift 2
    out=$(timeout "$limit" "$LOAD" "$@" 2>>"$WORK/load-errors.log") || st=$?
    if [[ -z "$out" ]]; then
        FAILED_RUNS=$(( FAILED_RUNS + 1 ))
        log "rep $rep: '$1' failed (exit $st); see the errors below"
        tail -n 5 "$WORK/load-errors.log" >&2 || true
        for t in "${LATENCY_TARGETS[@]}"; do
            printf 'rep=%s name=%s %s failed=1 errors=1\n' "$rep" "$t" "$1" >>"$RESULTS"
        done
        return 0
    fi
    while IFS= read -r line; do
        addr=$(grep -o 'target=[^ ]*' <<<"$line" | cut -d= -f2)
        printf 'rep=%s name=%s %s\n' "$rep" "${NAME_OF[$addr]:-unknown}" "$line" >>"$RESULTS"
    done <<<"$out"
    (( st == 0 )) || log "rep $rep: '$1' reported errors (exit $st)"
}

busy_pct() {   # CPU busy % of the whole machine over 3 s
    local u n s i w q sq st b0 t0 b1 t1
    read -r _ u n s i w q sq st _ </proc/stat; b0=$((u+n+s+q+sq+st)); t0=$((b0+i+w))
    sleep 3
    read -r _ u n s i w q sq st _ </proc/stat; b1=$((u+n+s+q+sq+st)); t1=$((b1+i+w))
    echo $(( 100 * (b1 - b0) / (t1 - t0 > 0 ? t1 - t0 : 1) ))
}
LOADED_REPS=()
wait_idle() {   # rep
    (( IDLE_WAIT > 0 )) || return 0
    local deadline=$(( SECONDS + IDLE_WAIT )) b
    while :; do
        b=$(busy_pct)
        (( b < 15 )) && { log "rep $1: machine ${b}% busy"; return 0; }
        if (( SECONDS >= deadline )); then
            log "rep $1: machine still ${b}% busy after ${IDLE_WAIT}s; measuring anyway"
            LOADED_REPS+=("$1(${b}%)")
            return 0
        fi
    done
}

# The idle figures: a fresh proxy in front of the light backend, sessions
# opened up to each level and held, RSS read; then the proxy is stopped.
idle_run() {   # rep name
    local rep=$1 name=$2 pid ip port
    if [[ "$name" == ftpgate ]]; then
        ip=$GB_IP; port=$GBPORT
        start_ftpgate ftpgate-idle "$(ftpgate_config "$GB_IP" "$GBPORT" "$L_IP:$LPORT" "$GBP0" "$GBP1")"
    else
        ip=$HB_IP; port=$HBPORT
        start_haproxy haproxy-idle "$(haproxy_config $(( TOP + 200 )) "$HB_IP" "$HBPORT" "$L_IP" "$LPORT")"
    fi
    pid=$STARTED_PID
    wait_greeting "$ip" "$port" "$pid" "$name (idle)"
    load "$rep" "$name" $(( 120 + TOP / 20 )) idle --target "$ip:$port" --pid "$pid" \
        --levels "$IDLE_LEVELS" --warmup 64 --open-concurrency 64 --settle 1
    if [[ "$name" == ftpgate && "$rep" == 1 ]]; then
        grep -m1 'open-files limit' "$WORK/ftpgate-idle.log" | sed 's/\x1b\[[0-9;]*m//g' >"$WORK/ftpgate-limits" || true
        grep -m1 'max_sessions = ' "$WORK/ftpgate-idle.log" | sed 's/\x1b\[[0-9;]*m//g' >>"$WORK/ftpgate-limits" || true
    fi
    stop_pid "$pid"
    # Reaped: forget it, so the cleanup never signals a reused PID.
    local kept=() p
    for p in "${PIDS[@]}"; do [[ "$p" == "$pid" ]] || kept+=("$p"); done
    PIDS=("${kept[@]}")
}

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
T_START=$SECONDS
DONE=0
for (( r = 1; r <= RUNS; r++ )); do
    if (( r > 1 && SECONDS - T_START > DEADLINE )); then
        log "BENCH_DEADLINE (${DEADLINE}s) passed: stopping after $DONE repetitions"
        break
    fi
    wait_idle "$r"
    case $(( (r - 1) % 3 )) in
        0) order=(direct ftpgate haproxy) ;;
        1) order=(ftpgate haproxy direct) ;;
        *) order=(haproxy direct ftpgate) ;;
    esac
    log "rep $r/$RUNS (order: ${order[*]}; load average $(cut -d' ' -f1-3 /proc/loadavg))"
    # NOOP and LIST: one session per target, the targets in turn round by
    # round (in the load generator), so other work hits all of them alike.
    # mod_proxy takes its turn at a place that moves every repetition too.
    lat_order=("${order[@]}")
    if (( MODPROXY )); then
        at=$(( (r - 1) % 4 ))
        lat_order=("${order[@]:0:at}" modproxy "${order[@]:at}")
    fi
    targets=""; hosts=""
    for t in "${lat_order[@]}"; do targets+="${targets:+,}${ADDR[$t]}"; hosts+="${hosts:+,}${DATA_HOST[$t]}"; done
    load_all "$r" 300 noop --target "$targets" --count "$NOOP_COUNT" --warmup 200 --quickack "$CLIENT_ACK"
    load_all "$r" 600 list --target "$targets" --count "$LIST_COUNT" --warmup 30 --data-host "$hosts" \
        --quickack "$CLIENT_ACK"
    # Sessions: each target's window is cut into slices run in turn, so
    # load from other work that comes and goes falls on all three alike.
    for c in $CLIENTS; do
        for (( s = 1; s <= SLICES; s++ )); do
            for t in "${order[@]}"; do
                TAG="clients=$c slice=$s" load "$r" "$t" $(( SESSION_SECONDS + 150 )) sessions \
                    --target "${ADDR[$t]}" --clients "$c" --warmup 0.5 --seconds "$SLICE_SECONDS" \
                    --pid "${PID_OF[$t]}" --pid-children "${CHILDREN[$t]}" --clk-tck "$CLK_TCK" \
                    --data-host "${DATA_HOST[$t]}" --quickack "$CLIENT_ACK"
            done
        done
    done
    if (( r % 2 )); then idle_order=(ftpgate haproxy); else idle_order=(haproxy ftpgate); fi
    for t in "${idle_order[@]}"; do idle_run "$r" "$t"; done
    DONE=$r
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
ELAPSED=$(( SECONDS - T_START ))

# --- report ------------------------------------------------------------------------------
# The slices of a sessions window add up: sessions, seconds, CPU and errors
# are summed per repetition, target and client count.
mv "$RESULTS" "$RESULTS.slices"
awk '
    { delete f; for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[2] != "") f[kv[1]] = kv[2] } }
    $3 != "sessions" { print; next }
    {
        k = f["rep"] " " f["name"] " " f["clients"]
        if (!(k in n)) order[++keys] = k
        n[k] += f["sessions"]; secs[k] += f["seconds"]; cpu[k] += f["pid_cpu_s"]
        err[k] += f["errors"]; failed[k] += f["failed"]
    }
    END {
        for (i = 1; i <= keys; i++) {
            k = order[i]; split(k, p, " ")
            per = (secs[k] > 0) ? sprintf("%.1f", n[k] / secs[k]) : "nan"
            ms = (n[k] > 0) ? sprintf("%.4f", cpu[k] * 1000 / n[k]) : "nan"
            printf "rep=%s name=%s sessions clients=%s sessions=%d seconds=%.3f per_sec=%s errors=%d pid_cpu_s=%.2f cpu_ms_per_session=%s failed_runs=%d\n", \
                p[1], p[2], p[3], n[k], secs[k], per, err[k], cpu[k], ms, failed[k]
        }
    }' "$RESULTS.slices" >"$RESULTS"
# field kind name key [clients|level] -> that field of every repetition, one per line
field() {
    awk -v kind="$1" -v name="$2" -v key="$3" -v sel="${4:-}" '
        { delete f; for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[2] != "") f[kv[1]] = kv[2] } }
        $3 != kind { next }
        f["name"] != name { next }
        kind == "sessions" && sel != "" && f["clients"] != sel { next }
        kind == "idle" && sel != "" && f["level"] != sel { next }
        { print f["rep"], (key in f) ? f[key] : "nan" }' "$RESULTS"
}
median() { awk '$1 != "nan" && $1 != ""' | sort -g | awk '{ v[NR] = $1 } END {
    if (!NR) print "nan"; else print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
med() { field "$@" | awk '{ print $2 }' | median; }
# paired op: per repetition, A op B of the same repetition; median over them
paired() {   # op "kind name key sel" "kind name key sel"
    local op=$1
    join <(field $2 | sort -k1,1) <(field $3 | sort -k1,1) | awk -v op="$op" '
        $2 == "nan" || $3 == "nan" { next }
        op == "-" { print $2 - $3 } op == "/" && $3 != 0 { print $2 / $3 }' | median
}
sumf() { field "$@" | awk '$2 != "nan" { s += $2 } END { print s + 0 }'; }
fmt() { awk -v v="$1" -v f="$2" 'BEGIN { if (v == "nan" || v == "") print "n/a"; else printf f, v }'; }
signed() { awk -v v="$1" 'BEGIN { if (v == "nan" || v == "") print "n/a"; else printf "%+.0f us", v }'; }
verdict() { awk -v v="$1" -v cmp="$2" -v t="$3" 'BEGIN { if (v == "nan" || v == "") { print "n/a"; exit }
    ok = (cmp == "<=") ? (v <= t) : (cmp == ">=") ? (v >= t) : (v < t); print ok ? "met" : "**not met**" }'; }

commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
branch=$(git -C "$ROOT" rev-parse --abbrev-ref HEAD 2>/dev/null || echo unknown)
dirty=$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo " (with uncommitted changes)" || true)
cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
mem=$(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)
total_errors=0
for k in noop list sessions idle idle-check; do
    for t in "${LATENCY_TARGETS[@]}"; do
        total_errors=$(( total_errors + $(sumf "$k" "$t" errors) ))
    done
done

MODPROXY_VERSION=""
if (( MODPROXY )); then
    MODPROXY_VERSION=$("$PROFTPD" -v 2>&1 | head -1 | grep -o 'ProFTPD Version [0-9.a-z]*' | sed 's/Version //' || true)
fi
echo
echo "ftpgate control path (issue 13), $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "ftpgate:  $branch @ $commit$dirty, $BIN"
echo "host:     $(nproc) CPUs, $cpu, $mem, Linux $(uname -r); load average $LOAD_START at start, $LOAD_END at end"
echo "peers:    vsftpd $("$VSFTPD" -v 0>&1 2>&1 | grep -o '[0-9.]*' | head -1 || true) (isolate=NO isolate_network=NO seccomp_sandbox=NO), $("$HAPROXY" -v | head -1 | cut -d' ' -f1-3) (mode tcp, nbthread default)${MODPROXY_VERSION:+, $MODPROXY_VERSION + mod_proxy (reverse; NOOP and LIST only)}"
echo "network:  $NETWORK"
echo "runs:     $DONE repetitions of: $NOOP_COUNT NOOPs, $LIST_COUNT PASV+LIST, sessions for ${SESSION_SECONDS}s ($SLICES slices) at clients $CLIENTS, idle levels $IDLE_LEVELS; ${ELAPSED}s"
echo

vs() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "nan" || b == "nan" || b == 0) print "n/a"; else printf "%.2fx", a / b }'; }
d_noop=$(med noop direct median_us)
g_noop=$(paired - "noop ftpgate median_us" "noop direct median_us")
h_noop=$(paired - "noop haproxy median_us" "noop direct median_us")
d_list=$(med list direct median_us)
g_list=$(paired - "list ftpgate median_us" "list direct median_us")
h_list=$(paired - "list haproxy median_us" "list direct median_us")
if (( MODPROXY )); then
    m_noop=$(paired - "noop modproxy median_us" "noop direct median_us")
    m_list=$(paired - "list modproxy median_us" "list direct median_us")
    m_noop_col="$(signed "$m_noop") ($(vs "$(paired / "noop modproxy median_us" "noop direct median_us")" 1))"
    m_list_col="$(signed "$m_list") ($(vs "$(paired / "list modproxy median_us" "list direct median_us")" 1))"
else
    m_list=nan; m_noop_col="not run"; m_list_col="not run"
fi

echo "| figure | direct to vsftpd | ftpgate | HAProxy 2.6, TCP mode | ProFTPD mod_proxy | ftpgate / HAProxy | issue 13 target for ftpgate |"
echo "|---|---|---|---|---|---|---|"
echo "| NOOP round trip, added over direct (median) | $(fmt "$d_noop" '%.0f us') | $(signed "$g_noop") ($(vs "$(paired / "noop ftpgate median_us" "noop direct median_us")" 1)) | $(signed "$h_noop") ($(vs "$(paired / "noop haproxy median_us" "noop direct median_us")" 1)) | $m_noop_col | $(vs "$g_noop" "$h_noop") | <= +30 us: $(verdict "$g_noop" "<=" 30) |"
# Below every peer measured: below the smaller of HAProxy's and mod_proxy's.
list_peer=$(awk -v a="$g_list" -v b="$h_list" -v m="$m_list" 'BEGIN {
    if (a == "nan" || b == "nan") { print "nan"; exit }
    if (m != "nan" && m != "" && m < b) b = m; print a - b }')
list_peers="below HAProxy"
if (( MODPROXY )); then list_peers+=" and mod_proxy"; fi
echo "| PASV, connect, LIST of 5, 226; added over direct (median) | $(fmt "$d_list" '%.0f us') | $(signed "$g_list") ($(vs "$(paired / "list ftpgate median_us" "list direct median_us")" 1)) | $(signed "$h_list") ($(vs "$(paired / "list haproxy median_us" "list direct median_us")" 1)) | $m_list_col | $(vs "$g_list" "$h_list") | <= +150 us and $list_peers: $(awk -v a="$(verdict "$g_list" "<=" 150)" -v b="$(verdict "$list_peer" "<" 0)" 'BEGIN { print (a == "met" && b == "met") ? "met" : "**not met**" }') |"
for c in $CLIENTS; do
    g=$(med sessions ftpgate cpu_ms_per_session "$c"); h=$(med sessions haproxy cpu_ms_per_session "$c")
    if (( c == 1 )); then tgt="below HAProxy: $(verdict "$(awk -v a="$g" -v b="$h" 'BEGIN { print (a == "nan" || b == "nan") ? "nan" : a - b }')" "<" 0)"
    else tgt="<= 0.2 ms: $(verdict "$g" "<=" 0.2)"; fi
    echo "| proxy CPU per session, $c client(s) | ($(fmt "$(med sessions direct cpu_ms_per_session "$c")" '%.2f ms') vsftpd) | $(fmt "$g" '%.3f ms') | $(fmt "$h" '%.3f ms') | - | $(vs "$g" "$h") | $tgt |"
done
for c in $CLIENTS; do
    d=$(med sessions direct per_sec "$c")
    gr=$(paired / "sessions ftpgate per_sec $c" "sessions direct per_sec $c")
    hr=$(paired / "sessions haproxy per_sec $c" "sessions direct per_sec $c")
    e_d=$(sumf sessions direct errors "$c"); e_g=$(sumf sessions ftpgate errors "$c"); e_h=$(sumf sessions haproxy errors "$c")
    ok=$(verdict "$gr" ">=" 0.95); (( e_g == 0 )) || ok="**not met** ($e_g errors)"
    echo "| sessions per second, $c client(s) (errors) | $(fmt "$d" '%.0f/s') ($e_d) | $(fmt "$gr" '%.2fx') $(fmt "$(med sessions ftpgate per_sec "$c")" '%.0f/s') ($e_g) | $(fmt "$hr" '%.2fx') $(fmt "$(med sessions haproxy per_sec "$c")" '%.0f/s') ($e_h) | - | $(vs "$(med sessions ftpgate per_sec "$c")" "$(med sessions haproxy per_sec "$c")") | >= 0.95x, 0 errors: $ok |"
done
g=$(med idle ftpgate per_session_kib "$FIRST"); h=$(med idle haproxy per_session_kib "$FIRST")
echo "| memory per idle logged-in session ($FIRST sessions, light backend) | - | $(fmt "$g" '%.1f KiB') | $(fmt "$h" '%.1f KiB') | - | $(vs "$g" "$h") | <= 4 KiB: $(verdict "$g" "<=" 4) |"
for l in "${LEVELS[@]}"; do
    (( l == FIRST )) && continue
    g=$(med idle ftpgate per_session_kib "$l"); h=$(med idle haproxy per_session_kib "$l")
    echo "| memory per idle logged-in session ($l sessions) | - | $(fmt "$g" '%.1f KiB') | $(fmt "$h" '%.1f KiB') | - | $(vs "$g" "$h") | flat from $FIRST: $(awk -v a="$g" -v b="$(med idle ftpgate per_session_kib "$FIRST")" 'BEGIN { if (a == "nan" || b == "nan") print "n/a"; else printf "%.2fx of the %s figure", a / b, "'"$FIRST"'" }') |"
done
capg=$(field idle ftpgate open "$TOP" | awk '{ print $2 }' | sort -n | head -1)
caph=$(field idle haproxy open "$TOP" | awk '{ print $2 }' | sort -n | head -1)
eg=$(( $(sumf idle ftpgate errors "$TOP") + $(sumf idle-check ftpgate errors) ))
eh=$(( $(sumf idle haproxy errors "$TOP") + $(sumf idle-check haproxy errors) ))
alive_g=$(field idle-check ftpgate alive | awk '{ print $2 }' | sort -n | head -1)
alive_h=$(field idle-check haproxy alive | awk '{ print $2 }' | sort -n | head -1)
echo "| capacity: idle logged-in sessions held (fewest of the runs), still answering NOOP; errors | - | ${capg:-n/a} of $TOP, ${alive_g:-n/a} answering ($eg) | ${caph:-n/a} of $TOP, ${alive_h:-n/a} answering ($eh) | - | - | $TOP with 0 errors: $( [[ "${capg:-0}" == "$TOP" && "${alive_g:-0}" == "$TOP" && $eg == 0 ]] && echo met || echo '**not met**') |"
echo
echo "Ratios in brackets after a figure are to direct; medians over $DONE repetitions; 'added' and"
echo "the ratios to direct are per repetition (paired), then the median. vsftpd's CPU per session"
echo "(direct column, for scale) counts its listener and reaped session processes. mod_proxy is"
echo "in the NOOP and LIST figures only (a process per session; its master sleeps 200 ms after each"
echo "session ends; its SQLite store drops sessions under concurrency)."
if [[ -s "$WORK/ftpgate-limits" ]]; then
    echo "ftpgate (idle instance) logged at start:"
    sed 's/^/  /' "$WORK/ftpgate-limits"
fi
echo
echo "Every repetition (NOOP and LIST: median us; sessions: per second / proxy CPU ms per session / errors; idle: KiB per session at each level / open):"
for r in $(seq 1 "$DONE"); do
    printf '  rep %s:' "$r"
    for t in "${LATENCY_TARGETS[@]}"; do
        printf ' %s noop %s list %s;' "$t" \
            "$(field noop "$t" median_us | awk -v r="$r" '$1 == r { print $2 }')" \
            "$(field list "$t" median_us | awk -v r="$r" '$1 == r { print $2 }')"
    done
    echo
    for c in $CLIENTS; do
        printf '    %2s clients:' "$c"
        for t in direct ftpgate haproxy; do
            printf ' %s %s/s %s ms %s err;' "$t" \
                "$(field sessions "$t" per_sec "$c" | awk -v r="$r" '$1 == r { print $2 }')" \
                "$(field sessions "$t" cpu_ms_per_session "$c" | awk -v r="$r" '$1 == r { print $2 }')" \
                "$(field sessions "$t" errors "$c" | awk -v r="$r" '$1 == r { print $2 }')"
        done
        echo
    done
    printf '    idle:'
    for t in ftpgate haproxy; do
        printf ' %s' "$t"
        for l in "${LEVELS[@]}"; do
            printf ' %s KiB@%s (open %s)' \
                "$(field idle "$t" per_session_kib "$l" | awk -v r="$r" '$1 == r { print $2 }')" "$l" \
                "$(field idle "$t" open "$l" | awk -v r="$r" '$1 == r { print $2 }')"
        done
        printf ';'
    done
    echo
done
if (( ${#LOADED_REPS[@]} > 0 )); then
    echo "WARNING: repetitions ${LOADED_REPS[*]} started while other work kept the machine busy (busy % over 3 s); treat the figures with care"
fi
if (( DONE < RUNS )); then
    echo "WARNING: only $DONE of $RUNS repetitions ran (BENCH_DEADLINE=${DEADLINE}s)"
fi
echo "command:  BENCH_NETNS=$NETNS BENCH_QUICKACK=$QUICKACK BENCH_CLIENT_QUICKACK=$CLIENT_QUICKACK BENCH_RUNS=$RUNS BENCH_NOOP_COUNT=$NOOP_COUNT BENCH_LIST_COUNT=$LIST_COUNT BENCH_CLIENTS=\"$CLIENTS\" BENCH_SESSION_SECONDS=$SESSION_SECONDS BENCH_SESSION_SLICES=$SLICES BENCH_IDLE_LEVELS=$IDLE_LEVELS BENCH_MODPROXY=$MODPROXY scripts/bench-control.sh"
if [[ "${BENCH_KEEP:-0}" == 1 ]]; then cp "$RESULTS" "$WORK/results.kept"; fi
if (( total_errors > 0 || FAILED_RUNS > 0 )); then
    echo "ERRORS: $total_errors failed sessions or runs; first messages:"
    head -20 "$WORK/load-errors.log" 2>/dev/null | sed 's/^/  /'
    exit 1
fi
exit 0
