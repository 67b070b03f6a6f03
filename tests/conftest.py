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
