"""Keeping CPython's cycle collector out of the loop's way with big tables (issue 14).

Imports nothing of stktagg.

A full (oldest-generation) collection walks every tracked container of that
generation and every reference they hold. With a million keys that was 0.3 to
0.8 s in one loop turn, every second or so while tables changed (measured
with ``gc.callbacks`` under ``contrib/stallcheck.py --keys 1000000``). Two
things keep it short, whatever the tables' size:

- ``untracked``: CPython tracks every ``array.array`` (since 3.11 its type is
  a heap type with GC support), although an array of integers refers to
  nothing and can never be part of a cycle; a table keeps one per key.
  ``untracked`` takes such an array out of the collector's lists, through the
  C API's ``PyObject_GC_UnTrack`` (by ``ctypes``; about 0.7 µs per call, paid
  once per new key and per peer a key gains). That is safe for an object that
  holds no references: reference counting still frees it, and its
  deallocation calls ``PyObject_GC_UnTrack`` again, which does nothing on an
  untracked object.
- ``LongLived``: the tables' containers (each stripe's dict of entries, its
  timer lists and expiry deques, a million references between them) are
  still walked. ``gc.freeze()`` moves every object alive into the permanent
  generation, which no collection walks, in constant time; the loop calls it
  every ``FREEZE_INTERVAL`` after a young collection (so that the young
  garbage is gone first). Frozen objects are still freed by reference
  counting; what freezing costs is that a reference cycle alive at a freeze
  and dropped later is not reclaimed until ``thaw``. The daemon's own objects
  that live long (sessions, links, listeners) break their cycles when they
  close, so that costs nothing in practice; ``LongLived.thaw`` (reload, or
  a table that is small again) gives the collector everything back.

Where the C API is not there (PyPy, whose collector is incremental and has no
such pause) both do nothing.
"""

from __future__ import annotations

import gc
import platform
from typing import TypeVar

__all__ = ["FREEZE_INTERVAL", "LongLived", "untracked"]

#: Seconds between two freezes of what is alive (``LongLived``).
FREEZE_INTERVAL = 1.0
#: Below this many entries in all tables together a full collection is short
#: (about 10 ms), so ``LongLived`` thaws instead of freezing: nothing frozen stays.
SMALL_TABLES = 50_000
_CPYTHON = platform.python_implementation() == "CPython"

_T = TypeVar("_T")


def _identity(obj: _T) -> _T:
    return obj


def _load():
    if not _CPYTHON:
        return _identity
    try:
        import ctypes

        untrack = ctypes.pythonapi.PyObject_GC_UnTrack
    except (ImportError, AttributeError):  # no ctypes (a minimal build): keep the pauses
        return _identity
    untrack.argtypes = [ctypes.py_object]
    untrack.restype = None
    py_object = ctypes.py_object

    def untracked(obj: _T) -> _T:
        """``obj`` (an object that refers to no other object), no longer tracked by the collector."""
        untrack(py_object(obj))
        return obj

    return untracked


untracked = _load()


class LongLived:
    """Freezes what is alive every ``FREEZE_INTERVAL`` while the tables are big (module docstring).

    Args:
        entries: the number of entries in all tables now.
    """

    def __init__(self, entries) -> None:
        self._entries = entries
        self.enabled = _CPYTHON
        self.freezes = 0  #: freezes done

    def tick(self) -> None:
        """Called by the loop every FREEZE_INTERVAL."""
        if not self.enabled:
            return
        if self._entries() < SMALL_TABLES:
            if gc.get_freeze_count():
                self.thaw()
            return
        gc.collect(1)  # the young generations only: short, and their garbage is not frozen
        gc.freeze()
        self.freezes += 1

    def thaw(self) -> None:
        """Give the collector back everything frozen (its next full collection walks it all)."""
        if self.enabled:
            gc.unfreeze()

    @staticmethod
    def frozen() -> int:
        """Objects in the permanent generation now."""
        return gc.get_freeze_count() if _CPYTHON else 0
