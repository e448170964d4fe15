#!/usr/bin/env bash
# Installs the real FTP servers and clients that ftpgate's integration tests
# (tests/it/peers.rs, tests/it/clients.rs) drive. Debian 12, run as root.
# Idempotent and non-interactive: safe to run on every CI run.
#
# - vsftpd, lftp, tnftp ("ftp" is only a transitional package for tnftp on
#   Debian 12: netkit-ftp no longer exists there), curl, python3 from apt.
# - proftpd-core and pure-ftpd conflict with vsftpd as packages (all provide
#   ftp-server), so they are fetched with `apt-get download` and unpacked with
#   `dpkg -x` into $PEERS_DIR (default /opt/ftpgate-peers); their shared-library
#   dependencies are installed from apt. proftpd-mod-crypto (mod_tls, for the
#   FTPS tests: proftpd-core has no TLS module) is unpacked the same way, and
#   proftpd-mod-proxy (ProFTPD's own FTP proxy, a peer that
#   scripts/bench-control.sh measures ftpgate against; the tests never load it).
# - openssl (the command) for the TLS rig's checks of what a server negotiates.
# - openssh-server and openssh-client for the plain TCP listener tests
#   (tests/it/sftp.rs): each test runs its own sshd on 127.0.0.1:<free port>
#   and drives it with sftp; and for the SFTP backend tests
#   (tests/it/sftp_backend.rs), whose sshd serves internal-sftp to two
#   chrooted password users made here (below).
# - gcc, g++, libc6-dev and make: cargo builds C code (ring, a dependency
#   of rustls) and C++ code (libFuzzer, for scripts/fuzz-smoke.sh).
#
# The tests never use port 21 and never talk to a system-wide FTP daemon: each
# test starts its own server on 127.0.0.1:<free port> with a generated config.
# The FTP servers run their sessions as "nobody" (uid/gid 65534 "nogroup"),
# which every Debian system has. The SFTP backend tests need password users:
# ftpgate-sftp and ftpgate-sftp2 (system accounts, no home, nologin shell,
# password "sftp-Test-pw1"), created if missing and given that password on
# every run; the tests do the same when run as root without this script.
set -euo pipefail

PEERS_DIR="${FTPGATE_PEERS_DIR:-/opt/ftpgate-peers}"
export DEBIAN_FRONTEND=noninteractive

if [ "$(id -u)" -ne 0 ]; then
    echo "install-test-deps.sh: must run as root" >&2
    exit 1
fi

# Don't let package installation start daemons (vsftpd's postinst would start
# one on port 21, openssh-server's one on port 22). policy-rc.d is only created if absent, and removed again.
POLICY=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$POLICY"
    chmod 755 "$POLICY"
    created_policy=1
fi
cleanup() {
    if [ "$created_policy" = 1 ]; then rm -f "$POLICY"; fi
}
trap cleanup EXIT

apt-get update -q
apt-get install -y -q --no-install-recommends \
    vsftpd lftp ftp tnftp curl python3 python3-yaml ca-certificates iproute2 iptables nftables openssl haproxy \
    openssh-server openssh-client \
    libhiredis0.14 libmemcached11 libmemcachedutil2 libpcre2-posix3 \
    libsodium23 libsqlite3-0 \
    gcc g++ libc6-dev make

# If an earlier install started the packaged vsftpd on port 21, stop it (the
# tests never use it or port 21). Only the packaged service is stopped: its
# init script matches the pid in /var/run/vsftpd/vsftpd.pid, so vsftpd
# processes started by running tests are left alone.
if command -v ss >/dev/null 2>&1 && ss -Hltn 'sport = :21' | grep -q .; then
    service vsftpd stop >/dev/null 2>&1 || true
fi
# A system sshd on port 22 is left alone (it may be how this machine is
# reached): the tests' own sshd processes use other ports and their own
# configs, so they do not conflict with it.

# proftpd-core, proftpd-mod-crypto, proftpd-mod-proxy and pure-ftpd, unpacked side by side. The marker file records
# the exact package versions, so a Debian point release re-unpacks.
want_versions="$(apt-cache policy proftpd-core proftpd-mod-crypto proftpd-mod-proxy pure-ftpd | awk '/^[a-z]/{p=$1; sub(/:$/, "", p)} /Candidate:/{print p"="$2}' | tr '\n' ' ')"
marker="$PEERS_DIR/.unpacked"
if [ -f "$marker" ] && [ "$(cat "$marker")" = "$want_versions" ] \
    && [ -x "$PEERS_DIR/usr/sbin/proftpd" ] && [ -x "$PEERS_DIR/usr/sbin/pure-ftpd" ] \
    && [ -f "$PEERS_DIR/usr/lib/proftpd/mod_tls.so" ] && [ -f "$PEERS_DIR/usr/lib/proftpd/mod_proxy.so" ]; then
    echo "peers already unpacked in $PEERS_DIR ($want_versions)"
else
    dl="$(mktemp -d)"
    # apt-get download fetches as the _apt user where it can write.
    chown _apt "$dl" 2>/dev/null || true
    (cd "$dl" && apt-get download -q proftpd-core proftpd-mod-crypto proftpd-mod-proxy pure-ftpd)
    rm -rf "$PEERS_DIR"
    mkdir -p "$PEERS_DIR"
    for deb in "$dl"/*.deb; do
        dpkg -x "$deb" "$PEERS_DIR"
    done
    rm -rf "$dl"
    echo "$want_versions" >"$marker"
fi

# Every binary the tests run must have all of its libraries.
missing=0
for bin in "$PEERS_DIR/usr/sbin/proftpd" "$PEERS_DIR/usr/sbin/pure-ftpd" \
    "$PEERS_DIR/usr/bin/pure-pw" "$PEERS_DIR"/usr/lib/proftpd/*.so /usr/sbin/vsftpd; do
    if ldd "$bin" 2>&1 | grep -q 'not found'; then
        echo "MISSING LIBRARIES for $bin:" >&2
        ldd "$bin" | grep 'not found' >&2
        missing=1
    fi
done
if [ "$missing" -ne 0 ]; then
    echo "install-test-deps.sh: unpacked FTP servers have missing libraries" >&2
    exit 1
fi

for bin in /usr/sbin/vsftpd "$PEERS_DIR/usr/sbin/proftpd" "$PEERS_DIR/usr/sbin/pure-ftpd" \
    /usr/bin/lftp /usr/bin/tnftp /usr/bin/curl /usr/bin/python3 /usr/bin/openssl \
    /usr/sbin/sshd /usr/bin/sftp /usr/bin/ssh-keygen \
    /usr/bin/cc /usr/bin/c++ /usr/bin/make; do
    if [ ! -x "$bin" ]; then
        echo "install-test-deps.sh: $bin is missing after install" >&2
        exit 1
    fi
done
if [ ! -f "$PEERS_DIR/usr/lib/proftpd/mod_tls.so" ]; then
    echo "install-test-deps.sh: mod_tls.so (proftpd-mod-crypto) is missing after install" >&2
    exit 1
fi
if [ ! -f "$PEERS_DIR/usr/lib/proftpd/mod_proxy.so" ]; then
    echo "install-test-deps.sh: mod_proxy.so (proftpd-mod-proxy) is missing after install" >&2
    exit 1
fi

# NAT topologies (tests/it/nat.rs, tests/it/netns.rs): network namespaces,
# veth pairs and iptables MASQUERADE/DNAT/SNAT/REDIRECT rules, all inside
# namespaces the tests create. Debian 12's iptables is iptables-nft.
for bin in /usr/sbin/ip /usr/bin/ss /usr/sbin/iptables /usr/sbin/nft; do
    if [ ! -x "$bin" ]; then
        echo "install-test-deps.sh: $bin is missing after install (NAT tests)" >&2
        exit 1
    fi
done
echo "NAT tests: $(iptables -V 2>&1 | head -n1), $(ip -V 2>&1 | head -n1)"

echo "== versions"
# vsftpd -v prints its version on stdin's fd (fd 0), not stdout.
echo "vsftpd:    $(/usr/sbin/vsftpd -v 0>&1 2>&1 | head -n1)"
echo "proftpd:   $("$PEERS_DIR/usr/sbin/proftpd" -v 2>&1 | head -n1)"
echo "pure-ftpd: $("$PEERS_DIR/usr/sbin/pure-ftpd" --help 2>&1 | head -n1)"
echo "lftp:      $(lftp --version | head -n1)"
echo "tnftp:     $(dpkg-query -W -f='${Version}' tnftp)"
echo "curl:      $(curl --version | head -n1)"
echo "python3:   $(/usr/bin/python3 --version 2>&1)"
echo "openssh:   $(dpkg-query -W -f='${Version}' openssh-server)"

# ---- SFTP backend test users (tests/it/sftp_backend.rs) ---------------------
for u in ftpgate-sftp ftpgate-sftp2; do
    if ! id "$u" >/dev/null 2>&1; then
        useradd --system --no-create-home --shell /usr/sbin/nologin "$u"
    fi
    echo "$u:sftp-Test-pw1" | chpasswd
done
echo "sftp users: ftpgate-sftp, ftpgate-sftp2"

# ---- More real clients (issue 16; tests/it/more_clients.rs) ----------------
# Node's basic-ftp, Python's aioftp and Java's Apache Commons Net, the client
# libraries that operators' own applications embed. Each lives in a fixed
# place, so the tests never depend on what else is installed globally:
# - basic-ftp: `npm ci` of tests/clients/node/package-lock.json (exact
#   version and integrity hash) into $CLIENTS_DIR/node. Node and npm come from
#   Debian (nodejs, npm) unless a node is already installed.
# - aioftp: tests/clients/requirements-aioftp.txt (exact version and hash) in
#   a venv of Debian's /usr/bin/python3 at $CLIENTS_DIR/python. Debian's
#   interpreter, not whatever python3 comes first on PATH (a pyenv one on some
#   developer machines, absent on CI): it is the one the ftplib tests use and
#   the one every Debian 12 machine has.
# - Commons Net: Debian's libcommons-net-java (/usr/share/java/commons-net.jar)
#   and a JDK (default-jdk-headless: javac compiles the driver at test time).
CLIENTS_DIR="${FTPGATE_CLIENTS_DIR:-/opt/ftpgate-clients}"
CLIENTS_SRC="$(cd "$(dirname "$0")/.." && pwd)/tests/clients"
more_clients_pkgs=(libcommons-net-java default-jdk-headless python3-venv)
command -v node >/dev/null 2>&1 || more_clients_pkgs+=(nodejs)
command -v npm >/dev/null 2>&1 || more_clients_pkgs+=(npm)
apt-get install -y -q --no-install-recommends "${more_clients_pkgs[@]}"

mkdir -p "$CLIENTS_DIR/node"
if cmp -s "$CLIENTS_SRC/node/package-lock.json" "$CLIENTS_DIR/node/package-lock.json" \
    && [ -f "$CLIENTS_DIR/node/node_modules/basic-ftp/package.json" ]; then
    echo "basic-ftp already installed in $CLIENTS_DIR/node"
else
    cp "$CLIENTS_SRC/node/package.json" "$CLIENTS_SRC/node/package-lock.json" "$CLIENTS_DIR/node/"
    (cd "$CLIENTS_DIR/node" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund)
fi

venv="$CLIENTS_DIR/python"
want_aioftp="$(sed -n 's/^aioftp==\([^ ]*\).*/\1/p' "$CLIENTS_SRC/requirements-aioftp.txt")"
if "$venv/bin/python" -c "import sys, aioftp; sys.exit(aioftp.__version__ != '$want_aioftp')" 2>/dev/null; then
    echo "aioftp $want_aioftp already installed in $venv"
else
    rm -rf "$venv"
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-input \
        --require-hashes -r "$CLIENTS_SRC/requirements-aioftp.txt"
fi

# Usable, not just present: each library loads in the runtime the tests use.
for bin in /usr/bin/java /usr/bin/javac /usr/share/java/commons-net.jar "$venv/bin/python"; do
    if [ ! -e "$bin" ]; then
        echo "install-test-deps.sh: $bin is missing after install (more clients)" >&2
        exit 1
    fi
done
basic_ftp_version="$(cd "$CLIENTS_DIR/node" && node -e 'console.log(require("basic-ftp/package.json").version); require("basic-ftp").Client')"
aioftp_version="$("$venv/bin/python" -c 'import aioftp; print(aioftp.__version__)')"
commons_net_version="$(dpkg-query -W -f='${Version}' libcommons-net-java)"
probe="$(mktemp -d)"
cat >"$probe/Probe.java" <<'JAVA'
public class Probe {
    public static void main(String[] a) {
        System.out.println(new org.apache.commons.net.ftp.FTPSClient(true).getClass().getName());
    }
}
JAVA
javac -d "$probe" -cp /usr/share/java/commons-net.jar "$probe/Probe.java"
java -cp "$probe:/usr/share/java/commons-net.jar" Probe >/dev/null
rm -rf "$probe"
echo "== more clients ($CLIENTS_DIR)"
echo "node:        $(node --version), basic-ftp $basic_ftp_version"
echo "aioftp:      $aioftp_version ($("$venv/bin/python" --version 2>&1))"
echo "commons-net: $commons_net_version ($(java -version 2>&1 | head -n1))"

# === Kubernetes manifests and Grafana dashboard (tests/it/kubernetes.rs) ===
# kubernetes-validate, promql-parser and kubectl in a venv under /opt/ftpgate-tools.
"$(dirname "$0")/install-test-tools.sh"
