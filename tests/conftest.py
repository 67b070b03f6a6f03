"""Shared pytest fixtures."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from datetime import timedelta

import pytest

try:
    from hypothesis import settings
except ImportError:  # the property tests skip or fail on their own
    pass
else:
    # Hypothesis's default deadline (200 ms per example) assumes a fast, idle machine; on a
    # loaded one (shared cores, libfaketime's overhead) a slow example of the session
    # property tests would fail as DeadlineExceeded. 2 s still catches an input that hangs.
    # Tests with their own @settings(deadline=...) keep it. HYPOTHESIS_PROFILE=default
    # restores Hypothesis's own defaults.
    settings.register_profile("stktagg", deadline=timedelta(seconds=2))
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "stktagg"))


#: Longest test id part made of a parameter's text (``pytest_make_parametrize_id``).
ID_TEXT = 40


def pytest_make_parametrize_id(config, val, argname):
    """A readable id for a text parameter without ``ids=``: one line of printable ASCII, at
    most ``ID_TEXT`` characters. Config lines, requests and error messages are parameters
    here; pytest would put their newlines, escapes and ten-thousand-digit numbers in the ids,
    which a terminal or ``pytest <node id>`` then cannot take back (pytest numbers ids that
    come out alike)."""
    if not isinstance(val, (str, bytes)):
        return None
    text = val.decode("latin-1") if isinstance(val, bytes) else val
    text = " ".join(text.split())
    text = "".join(c if c.isascii() and c.isprintable() and c not in "[]\\" else "?" for c in text) or "empty"
    return text if len(text) <= ID_TEXT else text[:ID_TEXT - 3] + "..."


def open_fd_count() -> int:
    """The fds open once garbage is collected: under PyPy, sockets and files dropped by
    earlier tests stay open until its GC runs, which could be in the middle of a test.
    Twice: the first collection may run finalizers that free more."""
    gc.collect()
    gc.collect()
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def no_fd_leak() -> Iterator[None]:
    """Fail a test that leaves file descriptors open (use with pytestmark)."""
    before = open_fd_count()
    yield
    assert open_fd_count() == before, "the test leaked file descriptors"


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """Certificates for TLS tests: CAs 'ca' and 'rogue-ca', leaves made on demand."""
    from pki import PKI

    return PKI(tmp_path_factory.mktemp("pki"))
