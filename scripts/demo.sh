#!/usr/bin/env bash
# Builds ftpgate and runs a working demo on loopback: a real vsftpd with its
# default passive settings on 127.0.0.1:2100, and ftpgate in front of it on
# 127.0.0.1:2121 with the passive range 50000-50019. Prints client commands to
# try, in passive and active mode. Ctrl-C stops both. Debian 12, as root
# (vsftpd needs root to start its sessions).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "demo.sh: run as root (vsftpd needs it): sudo scripts/demo.sh" >&2
    exit 1
fi
if [ ! -x /usr/sbin/vsftpd ] || ! command -v curl >/dev/null || ! command -v lftp >/dev/null; then
    echo "== installing vsftpd, curl and lftp"
    export DEBIAN_FRONTEND=noninteractive
    # Keep the package from starting its own daemon on port 21.
    policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; policy=1; fi
    apt-get update -q && apt-get install -y -q --no-install-recommends vsftpd curl lftp
    if [ "$policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
fi
if ! command -v cargo >/dev/null; then
    echo "demo.sh: cargo not found; install Rust from https://rustup.rs" >&2
    exit 1
fi

echo "== building ftpgate (release)"
cargo build --release --quiet

demo=$(pwd)/.demo
rm -rf "$demo"
mkdir -p "$demo/root/upload" "$demo/empty"
chmod 755 "$demo" "$demo/root" "$demo/empty"
chmod 777 "$demo/root/upload"
head -c 20000000 /dev/urandom >"$demo/root/demo.bin"
echo "Hello from vsftpd, through ftpgate." >"$demo/root/hello.txt"
chmod 644 "$demo/root/"*.*
cat >"$demo/vsftpd.conf" <<CONF
listen=YES
listen_address=127.0.0.1
listen_port=2100
background=NO
anonymous_enable=YES
no_anon_password=YES
local_enable=NO
anon_root=$demo/root
write_enable=YES
anon_upload_enable=YES
anon_umask=022
secure_chroot_dir=$demo/empty
isolate=NO
isolate_network=NO
seccomp_sandbox=NO
CONF
chmod 600 "$demo/vsftpd.conf"

pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

# Waits (at most 10 s) until 127.0.0.1:$1 answers with a 220 greeting.
wait_220() {
    local line
    for _ in $(seq 1 100); do
        if { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null; then
            line=""
            read -r -t 2 line <&3 || true
            printf 'QUIT\r\n' >&3 2>/dev/null || true
            exec 3<&- 3>&-
            case "$line" in 220*) return 0 ;; esac
        fi
        sleep 0.1
    done
    echo "demo.sh: no 220 greeting on 127.0.0.1:$1 within 10 s ($2); see $demo" >&2
    exit 1
}

/usr/sbin/vsftpd "$demo/vsftpd.conf" >"$demo/vsftpd.log" 2>&1 &
pids+=($!)
# ftpgate starts once vsftpd answers, so its first health check finds it up.
wait_220 2100 "vsftpd, log in $demo/vsftpd.log"
target/release/ftpgate --listen 127.0.0.1:2121 --backend 127.0.0.1:2100 \
    --public-address 127.0.0.1 --passive-ports 50000-50019 &
pids+=($!)
# Through ftpgate: its 220 is vsftpd's greeting, so a client can log in now.
wait_220 2121 "ftpgate in front of vsftpd"

cat <<TRY

ftpgate is listening on 127.0.0.1:2121 in front of vsftpd on 127.0.0.1:2100
(vsftpd runs with its defaults: it names whatever it likes in its 227 replies;
ftpgate answers with 127.0.0.1 and a port from 50000-50019).
Log in as "anonymous". Try, in another terminal:

  # passive (PASV; curl uses the 227 address as given)
  curl --ftp-pasv --disable-epsv --no-ftp-skip-pasv-ip ftp://127.0.0.1:2121/hello.txt
  # passive (EPSV)
  curl -o /dev/null -w '%{speed_download} bytes/s\n' ftp://127.0.0.1:2121/demo.bin
  # active (PORT, then EPRT)
  curl -P 127.0.0.1 --disable-eprt ftp://127.0.0.1:2121/hello.txt
  curl -P 127.0.0.1 ftp://127.0.0.1:2121/hello.txt
  # upload
  curl -T /etc/hostname ftp://127.0.0.1:2121/upload/
  # lftp, passive then active
  lftp -e 'set ftp:fix-pasv-address off; ls; get hello.txt -o /tmp/hello.txt; bye' -u anonymous, ftp://127.0.0.1:2121
  lftp -e 'set ftp:passive-mode off; ls; bye' -u anonymous, ftp://127.0.0.1:2121

Ctrl-C stops ftpgate and vsftpd.
TRY
wait "${pids[1]}"
