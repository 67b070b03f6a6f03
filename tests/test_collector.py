"""Issue 14: the cycle collector never walks a big table in one loop turn.

With a million keys a full collection took 0.3-0.8 s, every second or so:
every entry was a tracked ``array``, and the tables' containers held a million
references. ``collector.untracked`` takes the arrays out; ``LongLived``
freezes what lives long. Freezing is only free if closed connections leave no
reference cycle behind (a frozen cycle is never reclaimed): checked here on a
real ``Server`` with ``gc.DEBUG_SAVEALL``.
"""

from __future__ import annotations

import gc
import platform

import pytest

from stktagg.collector import SMALL_TABLES, LongLived, untracked
from stktagg.peerlink import PeerLink
from test_server_parts import Bed, hello, read_until
from test_table import hit, table

cpython_only = pytest.mark.skipif(platform.python_implementation() != "CPython",
                                  reason="the C API of CPython's collector")


@pytest.fixture
def gc_state():
    """Leave the collector as it was: nothing frozen, no debug flags."""
    yield
    gc.set_debug(0)
    gc.unfreeze()
    gc.garbage.clear()


@cpython_only
def test_entry_arrays_are_not_tracked() -> None:
    t = table()
    hit(t, 0, b"k", 5, 1000)
    assert not gc.is_tracked(t.stripes[t.stripe_of(b"k")].entries[b"k"])
    hit(t, 1, b"k", 6, 1000)  # a second peer: a new, longer array
    assert not gc.is_tracked(t.stripes[t.stripe_of(b"k")].entries[b"k"])
    assert t.lookup(b"k", 1000)[0][0] == 11


@cpython_only
def test_untracked_returns_the_object_itself() -> None:
    from array import array

    a = array("Q", (1, 2))
    assert gc.is_tracked(a)
    assert untracked(a) is a and not gc.is_tracked(a)
    untracked(a)  # twice is harmless
    del a
    gc.collect()


@cpython_only
def test_big_tables_are_frozen_small_ones_thawed(gc_state) -> None:
    entries = [SMALL_TABLES]
    policy = LongLived(lambda: entries[0])
    policy.tick()
    assert gc.get_freeze_count() > 0 and policy.freezes == 1
    young = [object() for _ in range(3)], {}  # a container made after the freeze
    assert gc.is_tracked(young[0]) and gc.get_freeze_count() > 0
    entries[0] = SMALL_TABLES - 1
    policy.tick()
    assert gc.get_freeze_count() == 0 and policy.freezes == 1


@cpython_only  # gc.set_debug: PyPy has none
def test_closed_peer_sessions_leave_no_reference_cycle(gc_state) -> None:
    bed = Bed()
    try:
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        for _ in range(5):
            conn, theirs = bed.accept(sections="agg")
            theirs.sendall(hello("AGGR", "A"))
            bed.until(lambda: isinstance(conn.stage, PeerLink))
            read_until(bed, theirs, b"200\n")
            theirs.close()
            bed.until(lambda: conn.transport.closed and not bed.server.registry.connections)
            bed.reactor.run_once(0)
        conn = theirs = None  # the test's own references gone too
        gc.collect()
        cyclic = sorted({type(o).__qualname__ for o in gc.garbage if type(o).__module__.startswith("stktagg")})
        assert cyclic == []
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        bed.close()
