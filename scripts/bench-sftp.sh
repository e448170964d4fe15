#!/usr/bin/env bash
# Throughput of a large download and upload through ftpgate to an SFTP
# backend (FTP client -> ftpgate -> SSH/SFTP -> sshd), against OpenSSH's own
# `sftp` client straight to the same sshd, measured in one run on 127.0.0.1.
#
#   scripts/bench-sftp.sh                          # 1 GiB, 3 runs per cell
#   BENCH_RUNS=5 BENCH_SIZE_MIB=512 scripts/bench-sftp.sh
#
# Environment:
#   BENCH_RUNS         timed transfers per path and direction (default 3)
#   BENCH_SIZE_MIB     file size in MiB (default 1024)
#   BENCH_TRANSFER_TIMEOUT  limit per transfer, seconds (default 300)
#   BENCH_KEEP=1       keep the work directory (configs, logs) afterwards
#   FTPGATE_BIN        use this binary instead of building one
#
# What it does: builds ftpgate in release mode; starts its own sshd on a
# free loopback port serving internal-sftp to the chrooted test user
# ftpgate-sftp (made by scripts/install-test-deps.sh), which may log in by
# password (ftpgate) or by a key made here (the `sftp` client, in batch
# mode); writes a file of random bytes into the user's home (incompressible,
# not sparse); starts ftpgate with `backends = ["sftp://..."]` and the
# server's host key in `sftp_known_hosts`; then times, alternating the two
# paths and swapping which goes first every other round:
#   direct:  sftp -b (get FILE /dev/null, put FILE) with OpenSSH's defaults
#            (chacha20-poly1305, 64 requests of 32 KiB in flight)
#   gcm:     the same with -c aes256-gcm@openssh.com, the cipher ftpgate's
#            SSH client prefers (AES-NI makes it cheaper than ChaCha20)
#   ftpgate: curl ftp://127.0.0.1 (EPSV) RETR to /dev/null and STOR
# It prints the median per cell and the ratios ftpgate/direct and
# ftpgate/gcm (target >= 0.9). The exit status is 0 whatever the ratio (a measurement, not a
# test); non-zero if a transfer fails or moves the wrong size.
#
# The chroot lives under /var/lib/ftpgate-bench (sshd wants every component
# of ChrootDirectory root-owned and not group or world writable, so no
# tmpfs under /dev/shm or /tmp); uploads land in the page cache, so with
# enough free memory the disk stays out of it for both paths alike.
#
# Needs root (sshd with a password user and a chroot), sshd, sftp, curl.
# Kills what it started, by PID, on exit. Bounded: the build gets 30 min,
# each transfer BENCH_TRANSFER_TIMEOUT, every readiness poll 10 s.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
RUNS=${BENCH_RUNS:-3}
SIZE_MIB=${BENCH_SIZE_MIB:-1024}
XFER_TIMEOUT=${BENCH_TRANSFER_TIMEOUT:-300}
USER_NAME=ftpgate-sftp
PASSWORD=sftp-Test-pw1
TARGET=0.9

log() { printf '[bench-sftp] %s\n' "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive integer"
[[ "$SIZE_MIB" =~ ^[1-9][0-9]*$ ]] || die "BENCH_SIZE_MIB must be a positive integer"
(( $(id -u) == 0 )) || die "run as root (sshd with a password user and a chroot)"
[[ -x /usr/sbin/sshd ]] || die "sshd not found (scripts/install-test-deps.sh)"
command -v sftp >/dev/null || die "sftp not found"
command -v curl >/dev/null || die "curl not found"
id "$USER_NAME" >/dev/null 2>&1 || die "user $USER_NAME missing: run scripts/install-test-deps.sh"

# shellcheck source=lib/bench-cleanup.sh
source "$ROOT/scripts/lib/bench-cleanup.sh"
bench_cleanup_traps

# shellcheck source=lib/ftpgate-bin.sh
source "$ROOT/scripts/lib/ftpgate-bin.sh"
ftpgate_binary

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_port() {
    local port=$1
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.1
    done
    die "nothing listens on :$port"
}

mkdir -p /var/lib/ftpgate-bench
chmod 755 /var/lib/ftpgate-bench
WORK=$(mktemp -d /var/lib/ftpgate-bench/run.XXXXXX)
chmod 755 "$WORK"
CHROOT=$WORK/chroot
HOME_DIR=$CHROOT/home
mkdir -p "$HOME_DIR"
chmod 755 "$CHROOT"
chown "$USER_NAME:" "$HOME_DIR"
mkdir -p /run/sshd

log "writing a ${SIZE_MIB} MiB file of random bytes"
FILE=$WORK/big.bin
head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom >"$FILE"
SIZE=$(stat -c %s "$FILE")
cp "$FILE" "$HOME_DIR/big.bin"
chown "$USER_NAME:" "$HOME_DIR/big.bin"

ssh-keygen -q -t ed25519 -N "" -f "$WORK/host_key"
ssh-keygen -q -t ed25519 -N "" -f "$WORK/client_key"
SPORT=$(free_port)
cat >"$WORK/sshd_config" <<EOF
Port $SPORT
ListenAddress 127.0.0.1
HostKey $WORK/host_key
PidFile $WORK/sshd.pid
UsePAM no
StrictModes no
PasswordAuthentication yes
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AuthorizedKeysFile $WORK/client_key.pub
AllowUsers $USER_NAME
Subsystem sftp internal-sftp
LogLevel ERROR
Match User $USER_NAME
  ChrootDirectory $CHROOT
  ForceCommand internal-sftp -d /home
EOF
/usr/sbin/sshd -D -e -f "$WORK/sshd_config" 2>"$WORK/sshd.log" &
SSHD_PID=$!
PIDS+=("$SSHD_PID")
wait_port "$SPORT"

printf '[127.0.0.1]:%s %s\n' "$SPORT" "$(cut -d' ' -f1,2 "$WORK/host_key.pub")" >"$WORK/known_hosts"
GPORT=$(free_port)
PASV=$(( (RANDOM % 1000) * 20 + 30000 ))
cat >"$WORK/ftpgate.toml" <<EOF
listen = ["127.0.0.1:$GPORT"]
backends = ["sftp://127.0.0.1:$SPORT"]
sftp_known_hosts = "$WORK/known_hosts"
passive_ports = "$PASV-$((PASV + 19))"
public_address = "127.0.0.1"
log_level = "warn"
EOF
"$BIN" --config "$WORK/ftpgate.toml" 2>"$WORK/ftpgate.log" &
GATE_PID=$!
PIDS+=("$GATE_PID")
wait_port "$GPORT"

SFTP_OPTS=(-q -i "$WORK/client_key" -P "$SPORT" -F /dev/null
    -o "UserKnownHostsFile=$WORK/known_hosts" -o StrictHostKeyChecking=yes
    -o BatchMode=yes -o IdentitiesOnly=yes -o IdentityAgent=none)

# One timed transfer; prints MiB/s.
timed() {
    local path=$1 dir=$2 t0 t1 got
    rm -f "$HOME_DIR/up.bin"
    t0=$(date +%s.%N)
    if [[ $path == direct || $path == gcm ]]; then
        local cipher=()
        [[ $path == gcm ]] && cipher=(-c aes256-gcm@openssh.com)
        if [[ $dir == get ]]; then
            printf 'get big.bin /dev/null\n' >"$WORK/batch"
        else
            printf 'put %s up.bin\n' "$FILE" >"$WORK/batch"
        fi
        timeout "$XFER_TIMEOUT" sftp "${SFTP_OPTS[@]}" "${cipher[@]}" -b "$WORK/batch" "$USER_NAME@127.0.0.1" >/dev/null \
            || die "sftp $dir failed"
    else
        if [[ $dir == get ]]; then
            got=$(curl -sS --max-time "$XFER_TIMEOUT" -o /dev/null -w '%{size_download}' \
                -u "$USER_NAME:$PASSWORD" "ftp://127.0.0.1:$GPORT/big.bin") || die "curl RETR failed"
            [[ $got == "$SIZE" ]] || die "curl RETR moved $got bytes, not $SIZE"
        else
            curl -sS --max-time "$XFER_TIMEOUT" -o /dev/null -T "$FILE" \
                -u "$USER_NAME:$PASSWORD" "ftp://127.0.0.1:$GPORT/up.bin" || die "curl STOR failed"
        fi
    fi
    t1=$(date +%s.%N)
    if [[ $dir == put ]]; then
        got=$(stat -c %s "$HOME_DIR/up.bin")
        [[ $got == "$SIZE" ]] || die "$path put stored $got bytes, not $SIZE"
    fi
    python3 -c "print(f'{$SIZE / 1048576 / ($t1 - $t0):.1f}')"
}

log "sshd :$SPORT (pid $SSHD_PID), ftpgate :$GPORT (pid $GATE_PID); warming up"
timed direct get >/dev/null
timed gcm get >/dev/null
timed ftpgate get >/dev/null

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
declare -A R
for dir in get put; do
    for path in direct gcm ftpgate; do R[$path-$dir]=""; done
done
for round in $(seq "$RUNS"); do
    for dir in get put; do
        if (( round % 2 )); then order="direct gcm ftpgate"; else order="ftpgate gcm direct"; fi
        for path in $order; do
            v=$(timed "$path" "$dir")
            log "round $round $dir $path: $v MiB/s"
            R[$path-$dir]+="$v "
        done
    done
done

median() { python3 -c "import statistics,sys; print(f'{statistics.median(map(float, sys.argv[1:])):.1f}')" $1; }
echo "SFTP backend throughput, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "commit:   $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "machine:  $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "sshd:     $(/usr/sbin/sshd -V 2>&1 | head -1); file ${SIZE_MIB} MiB; $RUNS runs per cell"
echo "load:     $LOAD_BEFORE before, $(cut -d' ' -f1-3 /proc/loadavg) after (1/5/15 min; 2 cores: other work skews loopback figures)"
printf '%-10s %-8s %-8s %-8s %-9s %-9s %s\n' direction direct gcm ftpgate ftpgate/d ftpgate/g runs
for dir in get put; do
    d=$(median "${R[direct-$dir]}")
    c=$(median "${R[gcm-$dir]}")
    g=$(median "${R[ftpgate-$dir]}")
    rd=$(python3 -c "print(f'{$g / $d:.2f}')")
    rc=$(python3 -c "print(f'{$g / $c:.2f}')")
    name=$([[ $dir == get ]] && echo download || echo upload)
    printf '%-10s %-8s %-8s %-8s %-9s %-9s direct: %s| gcm: %s| ftpgate: %s\n' "$name" "$d" "$c" "$g" "$rd" "$rc" \
        "${R[direct-$dir]}" "${R[gcm-$dir]}" "${R[ftpgate-$dir]}"
done
echo "(MiB/s, medians; direct = sftp with OpenSSH's default cipher, gcm = sftp -c aes256-gcm@openssh.com; target ratio >= $TARGET)"
