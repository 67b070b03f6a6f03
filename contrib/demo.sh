#!/usr/bin/env bash
# The demo, on a fresh Debian machine: installs HAProxy and socat if missing,
# then runs three HAProxy nodes and the aggregator on loopback (contrib/demo.py).
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
if ! command -v haproxy >/dev/null || ! command -v socat >/dev/null; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq haproxy socat >/dev/null
fi
exec python3 contrib/demo.py
