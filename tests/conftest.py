"""Shared pytest fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


def open_fd_count() -> int:
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
