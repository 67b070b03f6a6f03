"""Workers: batches applied by the stripes' owners (or inline), with a wake-up when done."""

from __future__ import annotations

import threading
import time

import pytest

from stktagg.table import AggTable, TableMode
from stktagg.wire import TableDefinition
from stktagg.workers import GIL, Workers

DEF = TableDefinition(0, b"t.aggr", 6, 33, 1 << 9, 60_000, ())


@pytest.mark.parametrize("count", [0, 1, 3])
def test_every_update_is_applied_and_the_loop_is_woken(count):
    table = AggTable(DEF, TableMode.AGGREGATE)
    woken = threading.Event()
    workers = Workers(count, woken.set)
    workers.start()
    try:
        for peer in range(4):
            workers.submit_updates(table, peer, table.fields, [(f"k{i}".encode(), (1,), None) for i in range(500)], 0)
        assert woken.wait(30)
        deadline = time.monotonic() + 30  # generous for a loaded machine: normally milliseconds
        while workers.pending() and time.monotonic() < deadline:
            time.sleep(0.01)  # polling interval; the deadline decides
        assert workers.pending() == 0 and workers.applied == 2000
        assert len(table) == 500 and table.lookup(b"k7", 0)[0] == (4,)
    finally:
        workers.stop()


def test_inline_mode_applies_before_returning():
    table = AggTable(DEF, TableMode.AGGREGATE)
    workers = Workers(0, lambda: None)
    workers.submit_updates(table, 0, table.fields, [(b"x", (3,), None)], 0)
    assert table.lookup(b"x", 0)[0] == (3,)


def test_a_small_batch_with_nothing_queued_is_applied_at_once_in_the_calling_thread():
    table = AggTable(DEF, TableMode.AGGREGATE)
    here, there = [], []
    workers = Workers(1, lambda: there.append(threading.get_ident()), lambda: here.append(threading.get_ident()))
    workers.start()
    try:
        workers.submit_updates(table, 0, table.fields, [(b"x", (3,), None)], 0)
        assert table.lookup(b"x", 0)[0] == (3,)  # no wait: applied before returning
        assert here == [threading.get_ident()] and not there and workers.pending() == 0
    finally:
        workers.stop()


def test_a_batch_behind_queued_updates_waits_its_turn():
    table = AggTable(DEF, TableMode.AGGREGATE)
    release = threading.Event()
    workers = Workers(1, lambda: None)
    workers.start()
    try:
        # An update job the worker is busy with (it counts one update)...
        workers._queues[0].put((lambda: release.wait(30), (), 1))
        workers.submitted += 1
        workers.submit_updates(table, 0, table.fields, [(b"x", (1,), None)], 0)  # ...so these queue
        workers.submit_updates(table, 0, table.fields, [(b"x", (2,), None)], 0)
        assert workers.pending() == 3 and table.lookup(b"x", 0) is None
        release.set()
        deadline = time.monotonic() + 30
        while workers.pending() and time.monotonic() < deadline:
            time.sleep(0.01)  # polling interval; the deadline decides
        assert table.lookup(b"x", 0)[0] == (2,)  # applied in order: the later update won
    finally:
        release.set()
        workers.stop()


@pytest.mark.skipif(not GIL, reason="a free-threaded interpreter hands big batches to the workers")
def test_under_a_gil_a_big_batch_is_applied_at_once_too():
    table = AggTable(DEF, TableMode.AGGREGATE)
    workers = Workers(1, lambda: None)
    workers.start()
    try:
        workers.submit_updates(table, 0, table.fields, [(f"k{i}".encode(), (1,), None) for i in range(1000)], 0)
        assert workers.pending() == 0 and len(table) == 1000
    finally:
        workers.stop()
