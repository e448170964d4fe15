#!/usr/bin/env bash
# FTPS throughput: a large RETR and STOR through ftpgate with TLS on both
# sides, against the same transfers made directly to vsftpd over TLS,
# measured in one run on 127.0.0.1. The TLS counterpart of
# scripts/bench-throughput.sh.
#
#   scripts/bench-tls.sh                          # 1 GiB, 3 rounds
#   BENCH_RUNS=7 BENCH_SIZE_MIB=512 scripts/bench-tls.sh
#
# Environment:
#   BENCH_RUNS         rounds; each times RETR and STOR, direct and proxied
#                      (default 3, at most 50)
#   BENCH_SIZE_MIB     file size in MiB (default 1024)
#   BENCH_DIR          parent of the temp dir (default /dev/shm if it has room,
#                      else ${TMPDIR:-/tmp}); tmpfs keeps the disk out of it
#   BENCH_TRANSFER_TIMEOUT  curl --max-time per transfer, seconds (default 300)
#   BENCH_IDLE_WAIT    before each round, wait up to this many seconds for the
#                      machine to be idle (< 15% busy over 3 s), default 60;
#                      0 = don't wait. Rounds started under load are flagged.
#   BENCH_DEADLINE     no new round starts after this many seconds of
#                      measuring (default 3600); the rounds done are reported
#   BENCH_KEEP=1       keep the temp dir (keys, configs, logs) afterwards
#   CARGO_TARGET_DIR   where the release build goes (default: target/)
#   FTPGATE_BIN        use this binary instead of building one
#
# What it does: builds ftpgate in release mode; makes a throwaway CA and a
# server certificate for 127.0.0.1/localhost with openssl (ECDSA P-256, valid
# two days, in the temp dir; the CA key never leaves it); writes a file of
# /dev/urandom bytes; starts its own vsftpd (the tuning of
# bench-throughput.sh plus ssl_enable, allow_anon_ssl, force_anon_logins_ssl,
# force_anon_data_ssl, ssl_ciphers=HIGH, require_ssl_reuse left at its
# default YES) and an ftpgate in front of it with tls = "required" toward
# clients (same certificate) and backend_tls = "explicit" verified against
# the CA. Every transfer is `curl --ssl-reqd --cacert CA` (explicit AUTH TLS,
# PBSZ 0, PROT P: control and data in TLS on every leg). Before timing, one
# verbose probe each way records the TLS version and cipher of each leg:
# curl's view of the client legs, vsftpd's (debug_ssl) of the legs it
# terminates, including whether data connections resumed the control
# session. Then N rounds of RETR and STOR, direct and proxied back to back,
# swapping which goes first every other round.
#
# Through ftpgate every byte is decrypted and encrypted again: a proxied
# transfer is two TLS sessions (curl-ftpgate, ftpgate-vsftpd) against one
# direct, on the same two CPUs, so expect a ratio below the plaintext one.
#
# Output: per-round MiB/s and ratios, the median per path, the ratio of
# medians and the median of per-round ratios (paired), ftpgate's CPU during
# proxied transfers, and marks (*) on transfers during which other work on
# the machine used more than a quarter of a core. Exit status 0 whatever the
# ratio (a measurement, not a test); non-zero if a transfer fails or moves
# the wrong size.
#
# Bounded: the build gets 30 min, each transfer BENCH_TRANSFER_TIMEOUT, each
# round's wait for a quiet machine BENCH_IDLE_WAIT, the rounds BENCH_RUNS and
# BENCH_DEADLINE, every readiness poll 10 s. Only 127.0.0.1 is used.
#
# vsftpd runs with isolate=NO, isolate_network=NO and seccomp_sandbox=NO, as
# in bench-throughput.sh (docs/PERFORMANCE.md). xferlog_enable=YES and
# debug_ssl=YES write a few lines per connection to a log in the temp dir
# (for the TLS details above); nothing per block.
#
# Needs root (vsftpd's anonymous sessions run as the "ftp" user), vsftpd,
# curl and openssl. Kills what it started, by PID, and removes its temp dir
# on exit.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
RUNS=${BENCH_RUNS:-3}
SIZE_MIB=${BENCH_SIZE_MIB:-1024}
XFER_TIMEOUT=${BENCH_TRANSFER_TIMEOUT:-300}
IDLE_WAIT=${BENCH_IDLE_WAIT:-60}
DEADLINE=${BENCH_DEADLINE:-3600}
MAX_RUNS=50

log() { printf '[bench-tls] %s\n' "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive integer"
(( RUNS <= MAX_RUNS )) || die "BENCH_RUNS must be at most $MAX_RUNS"
[[ "$SIZE_MIB" =~ ^[1-9][0-9]*$ ]] || die "BENCH_SIZE_MIB must be a positive integer"
[[ "$XFER_TIMEOUT" =~ ^[1-9][0-9]*$ ]] || die "BENCH_TRANSFER_TIMEOUT must be a positive integer"
[[ "$IDLE_WAIT" =~ ^[0-9]+$ ]] || die "BENCH_IDLE_WAIT must be a non-negative integer"
[[ "$DEADLINE" =~ ^[1-9][0-9]*$ ]] || die "BENCH_DEADLINE must be a positive integer"
(( $(id -u) == 0 )) || die "run as root: vsftpd's anonymous sessions switch to the ftp user"
VSFTPD=$(command -v vsftpd || echo /usr/sbin/vsftpd)
[[ -x "$VSFTPD" ]] || die "vsftpd not found (apt-get install vsftpd, or scripts/install-test-deps.sh)"
command -v curl >/dev/null || die "curl not found"
command -v openssl >/dev/null || die "openssl not found"
curl --version | grep -qi ssl || die "this curl has no TLS support"
id ftp >/dev/null 2>&1 || die "system user ftp missing (made by the vsftpd package)"

# --- cleanup: only what this script started ---------------------------------
# shellcheck source=lib/bench-cleanup.sh
source "$ROOT/scripts/lib/bench-cleanup.sh"
# shellcheck source=lib/bench-vsftpd.sh
source "$ROOT/scripts/lib/bench-vsftpd.sh"
SAMPLER_PID=""
cleanup() {
    [[ -z "$SAMPLER_PID" ]] || kill "$SAMPLER_PID" 2>/dev/null || true
    bench_stop_all
}
bench_cleanup_traps

# --- build (as bench-throughput.sh) ----------------------------------------------
# shellcheck source=lib/ftpgate-bin.sh
source "$ROOT/scripts/lib/ftpgate-bin.sh"
ftpgate_binary

# --- temp dir and test file ------------------------------------------------------
need_kib=$(( SIZE_MIB * 1024 * 3 ))   # source + upload + slack
if [[ -n "${BENCH_DIR:-}" ]]; then
    base=$BENCH_DIR
elif [[ -d /dev/shm ]] && (( $(df -Pk /dev/shm | awk 'NR==2 {print $4}') > need_kib )); then
    base=/dev/shm
else
    base=${TMPDIR:-/tmp}
fi
WORK=$(mktemp -d "$base/ftpgate-bench-tls.XXXXXX")
chmod 755 "$WORK"
mkdir -p "$WORK/root/upload" "$WORK/empty" "$WORK/pki"
chmod 755 "$WORK/root" "$WORK/empty"     # vsftpd: anon root must not be writable
chmod 700 "$WORK/pki"
chown ftp: "$WORK/root/upload"
chmod 755 "$WORK/root/upload"
FILE="$WORK/root/big.bin"
SIZE=$(( SIZE_MIB * 1024 * 1024 ))
log "writing $SIZE_MIB MiB of /dev/urandom data to $FILE"
head -c "$SIZE" /dev/urandom >"$FILE"
chmod 644 "$FILE"
[[ $(stat -c %s "$FILE") == "$SIZE" ]] || die "short test file"
head -c 1048576 /dev/urandom >"$WORK/root/probe.bin"   # for the verbose TLS probe
chmod 644 "$WORK/root/probe.bin"

# --- throwaway PKI ---------------------------------------------------------------------
# CA (CA:TRUE, keyCertSign) and a leaf for IP 127.0.0.1 and DNS localhost
# (CA:FALSE, serverAuth), ECDSA P-256, PKCS#8 key: what rustls/webpki (ftpgate's
# backend verifier), OpenSSL (curl, vsftpd) all accept. vsftpd and ftpgate
# show the same leaf; curl and ftpgate trust only the CA.
PKI=$WORK/pki
CA=$PKI/ca.pem
CERT=$PKI/server.pem
KEY=$PKI/server.key
log "making a throwaway CA and server certificate in $PKI"
{
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$PKI/ca.key"
    openssl req -x509 -new -key "$PKI/ca.key" -sha256 -days 2 \
        -subj "/CN=ftpgate bench-tls throwaway CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" -out "$CA"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$KEY"
    openssl req -new -key "$KEY" -subj "/CN=127.0.0.1" -out "$PKI/server.csr"
    printf '%s\n' "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" \
        "subjectAltName=IP:127.0.0.1,DNS:localhost" >"$PKI/server.ext"
    openssl x509 -req -in "$PKI/server.csr" -CA "$CA" -CAkey "$PKI/ca.key" \
        -set_serial "0x$(openssl rand -hex 8)" -days 2 -sha256 \
        -extfile "$PKI/server.ext" -out "$CERT"
    openssl verify -CAfile "$CA" "$CERT"
} >"$WORK/pki.log" 2>&1 || { cat "$WORK/pki.log" >&2; die "openssl could not make the test certificates"; }
chmod 600 "$PKI"/*.key

# --- ports -----------------------------------------------------------------------
port_in_use() { ss -Htan "( sport = :$1 )" 2>/dev/null | grep -q .; }
pick_port() {
    local p
    for _ in $(seq 200); do
        p=$(( 20000 + RANDOM % 20000 ))
        port_in_use "$p" || { echo "$p"; return; }
    done
    die "no free port found"
}
VPORT=$(pick_port)
GPORT=$(pick_port)
while [[ "$GPORT" == "$VPORT" ]]; do GPORT=$(pick_port); done
# The passive range stays below Linux's ephemeral range (32768-60999), where
# vsftpd's own passive ports and outgoing connections live, and every port of
# it must be free (ftpgate binds them all at start).
range_free() { local p; for p in $(seq "$1" "$2"); do port_in_use "$p" && return 1; done; return 0; }
for _ in $(seq 50); do
    PASV_FIRST=$(( 10000 + RANDOM % 20000 ))
    PASV_LAST=$(( PASV_FIRST + 99 ))
    range_free "$PASV_FIRST" "$PASV_LAST" && break
done
range_free "$PASV_FIRST" "$PASV_LAST" || die "no free 100-port passive range found"

# --- vsftpd ------------------------------------------------------------------------
VLOG=$WORK/vsftpd-xfer.log
bench_vsftpd 127.0.0.1 "$VPORT" <<EOF
write_enable=YES
anon_upload_enable=YES
anon_other_write_enable=YES
anon_world_readable_only=NO
# FTPS: anonymous logins and data must use TLS; require_ssl_reuse stays at
# its default (YES): data connections must resume the control session.
ssl_enable=YES
allow_anon_ssl=YES
force_anon_logins_ssl=YES
force_anon_data_ssl=YES
ssl_ciphers=HIGH
rsa_cert_file=$CERT
rsa_private_key_file=$KEY
# A few lines per connection (TLS version, cipher, resumption), for the report.
xferlog_enable=YES
vsftpd_log_file=$VLOG
debug_ssl=YES
EOF

# --- ftpgate -----------------------------------------------------------------------
cat >"$WORK/ftpgate.toml" <<EOF
listen = ["127.0.0.1:$GPORT"]
backends = ["127.0.0.1:$VPORT"]
public_address = "127.0.0.1"
passive_ports = "$PASV_FIRST-$PASV_LAST"
health_check = false
tls = "required"
tls_cert = "$CERT"
tls_key = "$KEY"
backend_tls = "explicit"
backend_tls_ca = "$CA"
EOF
"$BIN" check --config "$WORK/ftpgate.toml" >"$WORK/ftpgate-check.log" 2>&1 \
    || { cat "$WORK/ftpgate-check.log" >&2; die "ftpgate check rejected the benchmark configuration"; }
"$BIN" --config "$WORK/ftpgate.toml" </dev/null >"$WORK/ftpgate.log" 2>&1 &
GATE_PID=$!
PIDS+=("$GATE_PID")

wait_greeting() {   # port pid name
    for _ in $(seq 100); do
        kill -0 "$2" 2>/dev/null || { cat "$WORK"/*.log >&2; die "$3 exited"; }
        if timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1 && head -c 3 <&3" 2>/dev/null | grep -q 220; then
            return
        fi
        sleep 0.1
    done
    die "$3 did not greet on port $1"
}
wait_greeting "$VPORT" "$VSFTPD_PID" vsftpd
wait_greeting "$GPORT" "$GATE_PID" ftpgate

CURL_TLS=(--ssl-reqd --cacert "$CA")   # explicit FTPS; curl then sends PBSZ 0, PROT P

# --- TLS probe: version and cipher of each leg -------------------------------------------
# curl -v prints "SSL connection using <version> / <cipher>" for the control
# and then the data connection; vsftpd (debug_ssl) logs the same for each
# connection it accepts, plus whether it resumed a session.
vsftpd_lines() { [[ -f "$VLOG" ]] && wc -l <"$VLOG" || echo 0; }
probe() {   # path port -> sets PROBE_CURL, PROBE_VSFTPD
    local n0 out
    n0=$(vsftpd_lines)
    out=$(curl -v "${CURL_TLS[@]}" --max-time 60 -o /dev/null "ftp://127.0.0.1:$2/probe.bin" 2>&1) \
        || { printf '%s\n' "$out" | tail -20 >&2; die "TLS probe ($1) failed"; }
    PROBE_CURL=$(printf '%s\n' "$out" | sed -n 's/^\* SSL connection using //p' | paste -sd ';' | sed 's/;/; /g')
    sleep 0.3   # vsftpd writes its log lines as the session ends
    PROBE_VSFTPD=$(tail -n +"$(( n0 + 1 ))" "$VLOG" 2>/dev/null \
        | sed -n 's/.*"SSL version: \([^,]*\), SSL cipher: \([^,]*\), \([a-z ]*\), .*/\1 \/ \2 (\3)/p' \
        | paste -sd ';' | sed 's/;/; /g')
    [[ -n "$PROBE_CURL" ]] || die "TLS probe ($1): curl reported no TLS connection"
}
log "TLS probe: one verbose 1 MiB RETR each way"
probe direct "$VPORT";  TLS_DIRECT_CURL=$PROBE_CURL;  TLS_DIRECT_VSFTPD=$PROBE_VSFTPD
probe proxied "$GPORT"; TLS_PROXIED_CURL=$PROBE_CURL; TLS_PROXIED_VSFTPD=$PROBE_VSFTPD

# --- measurement (as bench-throughput.sh) ---------------------------------------------
CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# CPU of everything this benchmark runs: ftpgate, vsftpd and its session
# processes, the curls (children of this shell), ksoftirqd (loopback receive
# work deferred from softirq). Anything else busy is "other" load.
#
# Unlike bench-throughput.sh, vsftpd's session CPU is not taken from the
# listener's reaped-children counters: with ssl_enable a session has one more
# process whose CPU never reaches them (measured: up to half of vsftpd's CPU
# in a TLS transfer), so it would show up as "other" load. A sampler reads every session
# process's own CPU (descendants of the listener) every 0.1 s during a
# transfer; the last reading of each counts (it misses at most 0.1 s of each
# process's life).
sampler() {   # out-file stop-file; runs until the stop file exists
    local -a q f kids
    local p line out
    while [[ ! -e "$2" ]]; do
        out=""
        q=()
        read -r -a q <"/proc/$VSFTPD_PID/task/$VSFTPD_PID/children" 2>/dev/null || true
        while (( ${#q[@]} )); do
            p=${q[0]}; q=("${q[@]:1}")
            read -r line <"/proc/$p/stat" 2>/dev/null || continue
            f=(${line##*) })            # fields from 3 (state): utime is [11], stime [12]
            out+="$p $(( f[11] + f[12] ))"$'\n'
            kids=()
            read -r -a kids <"/proc/$p/task/$p/children" 2>/dev/null || true
            q+=("${kids[@]}")
        done
        printf '%s' "$out" >>"$1"
        sleep 0.1
    done
}
start_sampler() {
    : >"$WORK/samples"; rm -f "$WORK/sampler.stop"
    sampler "$WORK/samples" "$WORK/sampler.stop" &
    SAMPLER_PID=$!
}
stop_sampler() {   # sets SESSION_TICKS
    touch "$WORK/sampler.stop"
    for _ in $(seq 30); do kill -0 "$SAMPLER_PID" 2>/dev/null || break; sleep 0.1; done
    kill "$SAMPLER_PID" 2>/dev/null || true
    wait "$SAMPLER_PID" 2>/dev/null || true
    SAMPLER_PID=""
    SESSION_TICKS=$(awk 'NF == 2 { t[$1] = $2 } END { s = 0; for (p in t) s += t[p]; print s }' "$WORK/samples")
}
KSOFTIRQD=()
for d in /proc/[0-9]*; do
    [[ $(cat "$d/comm" 2>/dev/null) == ksoftirqd/* ]] && KSOFTIRQD+=("${d#/proc/}")
done
# Sets OUR to the ticks used so far; not called in $(...), because `times`
# must run in this shell to see the curls it has reaped.
our_ticks() {
    local t=0 pid
    t=$(( t + $(awk '{print $14 + $15}' "/proc/$GATE_PID/stat") ))
    t=$(( t + $(awk '{print $14 + $15}' "/proc/$VSFTPD_PID/stat") ))   # sessions: sampler
    for pid in "${KSOFTIRQD[@]}"; do
        t=$(( t + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0) ))
    done
    times >"$WORK/times"   # second line: user and sys of reaped children (curl, awk)
    t=$(( t + $(awk -v hz="$CLK_TCK" 'NR == 2 {
        n = split($0, f, /[ ms]+/); s = 0
        for (i = 1; i + 1 <= n; i += 2) if (f[i] != "") s += f[i] * 60 + f[i + 1]
        printf "%d", s * hz }' "$WORK/times") ))
    OUR=$t
}
machine_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9; exit}' /proc/stat; }
OTHER_LIMIT=25      # % of one core used by other work that flags a transfer

declare -A SPEEDS   # "retr direct" -> "s1 s2 ..."
declare -A FLAGS    # "retr direct" -> "  * ..." (other load during that run)
GATE_CPU=()         # ftpgate CPU% per proxied transfer
FLAGGED=0

# One timed transfer; appends bytes/s to SPEEDS["$dir $path"].
transfer() {   # dir(retr|stor) path(direct|proxied)
    local dir=$1 path=$2 port t0 t1 c0 c1 o0 o1 m0 m1 out speed size other
    OUR=0
    port=$VPORT; [[ "$path" == proxied ]] && port=$GPORT
    rm -f "$WORK/root/upload/up.bin"
    start_sampler
    c0=$(cpu_ticks "$GATE_PID"); our_ticks; o0=$OUR; m0=$(machine_ticks)
    t0=$(date +%s.%N)
    if [[ "$dir" == retr ]]; then
        out=$(curl -sS "${CURL_TLS[@]}" --max-time "$XFER_TIMEOUT" -o /dev/null \
            -w '%{speed_download} %{size_download}' "ftp://127.0.0.1:$port/big.bin") \
            || die "curl RETR $path failed (logs: BENCH_KEEP=1)"
    else
        out=$(curl -sS "${CURL_TLS[@]}" --max-time "$XFER_TIMEOUT" -o /dev/null -T "$FILE" \
            -w '%{speed_upload} %{size_upload}' "ftp://127.0.0.1:$port/upload/up.bin") \
            || die "curl STOR $path failed (logs: BENCH_KEEP=1)"
        [[ $(stat -c %s "$WORK/root/upload/up.bin" 2>/dev/null) == "$SIZE" ]] \
            || die "STOR $path: uploaded file is not $SIZE bytes"
    fi
    t1=$(date +%s.%N)
    sleep 0.2   # let vsftpd's session end
    stop_sampler
    c1=$(cpu_ticks "$GATE_PID"); our_ticks; o1=$(( OUR + SESSION_TICKS )); m1=$(machine_ticks)
    read -r speed size <<<"$out"
    [[ "${size%.*}" == "$SIZE" ]] || die "$dir $path moved $size bytes, expected $SIZE"
    SPEEDS["$dir $path"]+="${speed%.*} "
    other=$(awk -v m=$(( m1 - m0 )) -v o=$(( o1 - o0 )) -v hz="$CLK_TCK" -v a="$t0" -v b="$t1" \
        'BEGIN { x = 100 * (m - o) / hz / (b - a + 0.2); printf "%.0f", (x < 0) ? 0 : x }')
    if (( other > OTHER_LIMIT )); then
        FLAGS["$dir $path"]+="* "; FLAGGED=$(( FLAGGED + 1 ))
    else
        FLAGS["$dir $path"]+="- "
    fi
    if [[ "$path" == proxied ]]; then
        GATE_CPU+=("$(awk -v c=$(( c1 - c0 )) -v hz="$CLK_TCK" -v a="$t0" -v b="$t1" \
            'BEGIN { printf "%.0f", 100 * c / hz / (b - a) }')")
    fi
    log "$(printf '%-4s %-7s %8.1f MiB/s   other load %3s%% of a core' "$dir" "$path" \
        "$(awk -v s="${speed%.*}" 'BEGIN{print s/1048576}')" "$other")"
}

log "vsftpd on :$VPORT (pid $VSFTPD_PID), ftpgate on :$GPORT (pid $GATE_PID), passive $PASV_FIRST-$PASV_LAST"
log "warm-up: one direct and one proxied RETR, not counted"
curl -sS "${CURL_TLS[@]}" --max-time "$XFER_TIMEOUT" -o /dev/null "ftp://127.0.0.1:$VPORT/big.bin" \
    || die "warm-up direct failed"
curl -sS "${CURL_TLS[@]}" --max-time "$XFER_TIMEOUT" -o /dev/null "ftp://127.0.0.1:$GPORT/big.bin" \
    || die "warm-up proxied failed"

busy_pct() {   # CPU busy % of the whole machine over 3 s
    local u n s i w q sq st b0 t0 b1 t1
    read -r _ u n s i w q sq st _ </proc/stat; b0=$((u+n+s+q+sq+st)); t0=$((b0+i+w))
    sleep 3
    read -r _ u n s i w q sq st _ </proc/stat; b1=$((u+n+s+q+sq+st)); t1=$((b1+i+w))
    echo $(( 100 * (b1 - b0) / (t1 - t0 > 0 ? t1 - t0 : 1) ))
}
LOADED_ROUNDS=()
wait_idle() {   # round
    (( IDLE_WAIT > 0 )) || return 0
    local deadline=$(( SECONDS + IDLE_WAIT )) b
    while :; do
        b=$(busy_pct)
        (( b < 15 )) && return 0
        if (( SECONDS >= deadline )); then
            log "round $1: machine still ${b}% busy after ${IDLE_WAIT}s; measuring anyway"
            LOADED_ROUNDS+=("$1")
            return 0
        fi
    done
}

START=$SECONDS
DONE=0
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for (( r = 1; r <= RUNS; r++ )); do
    if (( SECONDS - START >= DEADLINE )); then
        log "BENCH_DEADLINE (${DEADLINE}s) reached after $DONE rounds; reporting those"
        break
    fi
    wait_idle "$r"
    if (( r % 2 )); then order=(direct proxied); else order=(proxied direct); fi
    for dir in retr stor; do
        for path in "${order[@]}"; do transfer "$dir" "$path"; done
    done
    DONE=$r
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

median() { tr ' ' '\n' | grep . | sort -g | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
mib() { awk -v s="$1" 'BEGIN { printf "%.1f", s / 1048576 }'; }
nth() { awk -v n="$2" '{ print $n }' <<<"$1"; }   # nth word

commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo " (with uncommitted changes)" || true)
cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
echo
echo "ftpgate FTPS throughput, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "commit:   $commit$dirty"
if [[ -n "${FTPGATE_BIN:-}" ]]; then
    echo "binary:   $BIN (FTPGATE_BIN, built $(date -u -r "$BIN" +%Y-%m-%dT%H:%M:%SZ): the commit above is the work tree's, not necessarily the binary's)"
fi
echo "host:     $(nproc) CPUs, $cpu, $(uname -r); load average $LOAD_BEFORE before, $LOAD_AFTER after"
echo "file:     $SIZE_MIB MiB of /dev/urandom data in $base (tmpfs if /dev/shm)"
echo "servers:  vsftpd $("$VSFTPD" -v 0>&1 2>&1 | grep -o '[0-9.]*' | head -1 || true) (ssl_enable, forced anonymous TLS, ssl_ciphers=HIGH, require_ssl_reuse=YES; isolate/seccomp off)"
echo "ftpgate:  tls = required (ECDSA P-256 certificate), backend_tls = explicit, verified against the throwaway CA"
echo "client:   $(curl --version | head -1 | cut -d' ' -f1-2,5) --ssl-reqd (AUTH TLS, PROT P), EPSV; $DONE rounds, direct/proxied alternating"
echo "TLS legs (control; data), from the probe:"
echo "  direct   curl-vsftpd    curl:   ${TLS_DIRECT_CURL:-?}"
echo "                          vsftpd: ${TLS_DIRECT_VSFTPD:-? (no debug_ssl lines)}"
echo "  proxied  curl-ftpgate   curl:   ${TLS_PROXIED_CURL:-?}"
echo "           ftpgate-vsftpd vsftpd: ${TLS_PROXIED_VSFTPD:-? (no debug_ssl lines)}"
echo
echo "per round (MiB/s; * = other work used > ${OTHER_LIMIT}% of a core during that transfer):"
printf '  %-5s %-8s %10s %10s %6s %10s %10s %6s\n' round first "RETR dir" "RETR prox" ratio "STOR dir" "STOR prox" ratio
declare -A LIST FL
for key in "retr direct" "retr proxied" "stor direct" "stor proxied"; do
    LIST[$key]=${SPEEDS[$key]:-}; FL[$key]=${FLAGS[$key]:-}
done
for (( r = 1; r <= DONE; r++ )); do
    if (( r % 2 )); then first=direct; else first=proxied; fi
    row=""
    for dir in retr stor; do
        d=$(nth "${LIST["$dir direct"]}" "$r"); p=$(nth "${LIST["$dir proxied"]}" "$r")
        fd=$(nth "${FL["$dir direct"]}" "$r"); fp=$(nth "${FL["$dir proxied"]}" "$r")
        [[ "$fd" == "-" ]] && fd=" "; [[ "$fp" == "-" ]] && fp=" "
        row+=$(printf ' %9s%s %9s%s %6s' "$(mib "$d")" "$fd" "$(mib "$p")" "$fp" \
            "$(awk -v p="$p" -v d="$d" 'BEGIN { printf "%.2f", p / d }')")
    done
    printf '  %-5s %-8s%s\n' "$r" "$first" "$row"
done
echo
# "ratio": median proxied / median direct. "paired": median over rounds of
# proxied / direct within the same round (back-to-back transfers), less
# sensitive to load that comes and goes during the run.
printf '%-6s %13s %14s %7s %7s\n' median "direct MiB/s" "proxied MiB/s" ratio paired
for dir in retr stor; do
    d=$(median <<<"${SPEEDS["$dir direct"]}")
    p=$(median <<<"${SPEEDS["$dir proxied"]}")
    ratio=$(awk -v p="$p" -v d="$d" 'BEGIN { printf "%.2f", p / d }')
    paired=$(paste -d' ' <(tr ' ' '\n' <<<"${SPEEDS["$dir proxied"]}" | grep .) \
                         <(tr ' ' '\n' <<<"${SPEEDS["$dir direct"]}" | grep .) \
             | awk '{ print $1 / $2 }' | median)
    paired=$(awk -v r="$paired" 'BEGIN { printf "%.2f", r }')
    printf '%-6s %13s %14s %7s %7s\n' "${dir^^}" "$(mib "$d")" "$(mib "$p")" "$ratio" "$paired"
done
echo
echo "ftpgate CPU during proxied transfers (% of one core, RETR/STOR alternating): ${GATE_CPU[*]}"
if (( FLAGGED > 0 )); then
    echo "WARNING: $FLAGGED transfers (marked *) ran while other work used more than ${OTHER_LIMIT}% of a core; rerun on a quiet machine"
fi
if (( ${#LOADED_ROUNDS[@]} > 0 )); then
    echo "WARNING: rounds ${LOADED_ROUNDS[*]} started while other work kept the machine busy; treat the figures with care"
fi
if (( DONE < RUNS )); then
    echo "WARNING: only $DONE of $RUNS rounds ran (BENCH_DEADLINE=${DEADLINE}s)"
fi
echo "command:  BENCH_RUNS=$RUNS BENCH_SIZE_MIB=$SIZE_MIB scripts/bench-tls.sh"
# Exit status is 0 whatever the ratio: this is a measurement, not a test.
exit 0
