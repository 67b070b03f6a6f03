"""Issue 14: a full table makes room cheaply, with the documented semantics.

When a stripe is full, the entry that expired first makes room; when none has
expired, the new key is dropped and counted. Both cost about what an insertion
into an empty table costs (ratios measured in the same run, CPU time, best of
three: never wall-clock thresholds). Before the expiry index each new key
scanned the whole stripe under its lock: 0.24 s per key at 125,000 keys.
"""

from __future__ import annotations

import gc
import time

from stktagg.schema import DATA_TYPES_BY_NAME
from stktagg.table import EVICT_BUDGET, AggTable, TableMode
from stktagg.wire import TableDefinition

MASK = (1 << 9) | (1 << 10)  # http_req_cnt, http_req_rate
EXPIRE = 60_000
DEF = TableDefinition(0, b"t.aggr", 6, 33, MASK, EXPIRE, ((10, 10_000),))
STRIPE = 125_000
NEW = 2_000
#: Measured about 0.5 (dropping) and 1.3 (evicting); the scan was 10,000+.
MAX_RATIO = 4.0


def table(size: int = STRIPE, definition: TableDefinition = DEF) -> AggTable:
    return AggTable(definition, TableMode.AGGREGATE, stripes=1, max_entries=size)


def key(i: int) -> bytes:
    return i.to_bytes(4, "big")


def fill(t: AggTable, count: int, now: int, first: int = 0, peer: int = 0) -> None:
    items = [(key(first + i), (1, (0, 1, 0)), None) for i in range(count)]
    for start in range(0, count, 1000):
        t.apply(0, peer, t.fields, items[start : start + 1000], now)


def hit(t: AggTable, k: bytes, now: int, expire: int | None = None, peer: int = 0) -> None:
    t.apply(0, peer, t.fields, [(k, (1, (0, 1, 0)), expire)], now)


def insertion_cost(t: AggTable, now: int, first: int) -> float:
    """CPU seconds per new key, inserting NEW keys one update at a time."""
    items = [[(key(first + i), (1, (0, 1, 0)), None)] for i in range(NEW)]
    gc.collect()
    gc.disable()
    try:
        start = time.process_time()
        for item in items:
            t.apply(0, 0, t.fields, item, now)
        return (time.process_time() - start) / NEW
    finally:
        gc.enable()


def best_ratio(make_full, now: int) -> float:
    ratios = []
    for attempt in range(3):
        empty = insertion_cost(table(), 1000, 10_000_000)
        full = make_full()
        ratios.append(insertion_cost(full, now, 20_000_000 + attempt * NEW) / empty)
    return min(ratios)


class TestCost:
    def test_new_keys_into_a_full_live_stripe_cost_what_they_cost_into_an_empty_one(self) -> None:
        def full() -> AggTable:
            t = table()
            fill(t, STRIPE, 1000)
            return t

        t = full()
        assert len(t) == STRIPE
        assert best_ratio(full, 2000) < MAX_RATIO
        insertion_cost(t, 2000, 30_000_000)
        assert len(t) == STRIPE and t.dropped == NEW

    def test_new_keys_into_a_full_expired_stripe_cost_what_they_cost_into_an_empty_one(self) -> None:
        def full() -> AggTable:
            t = table()
            fill(t, STRIPE, 1000)
            return t

        assert best_ratio(full, 1000 + EXPIRE + 1) < MAX_RATIO
        t = full()
        insertion_cost(t, 1000 + EXPIRE + 1, 30_000_000)
        assert len(t) == STRIPE and t.dropped == 0
        assert t.lookup(key(0), 1000 + EXPIRE + 1) is None  # the oldest went first
        assert t.lookup(key(NEW), 1000 + EXPIRE + 1) is not None

    def test_a_stripe_whose_keys_were_all_updated_since_they_were_filed_stays_cheap(self) -> None:
        t = table(size=20_000)
        fill(t, 20_000, 0)
        fill(t, 20_000, EXPIRE - 1)  # every key updated: all filed too early
        stripe = t.stripes[0]
        hit(t, key(10_000_000), EXPIRE + 1)  # re-files EVICT_BUDGET keys, no more
        assert len(stripe.expiry_index[(EXPIRE - 1 + EXPIRE) // t._bucket_ms]) == EVICT_BUDGET
        for i in range(1, NEW):  # the next ones go on where it stopped
            hit(t, key(10_000_000 + i), EXPIRE + 1)
        assert t.dropped == NEW and len(t) == 20_000
        assert stripe.indexed == 20_000 and list(stripe.expiry_index) == [(2 * EXPIRE - 1) // t._bucket_ms]


class TestSemantics:
    def test_the_entries_that_expired_first_make_room_in_order(self) -> None:
        t = table(size=5)
        for i in range(5):
            hit(t, key(i), i * 1000)  # key i expires at i * 1000 + EXPIRE
        now = 3000 + EXPIRE  # keys 0..3 have expired (3 just now), 4 has not
        for new in range(10, 14):
            hit(t, key(new), now)
        assert [t.lookup(key(i), now) is not None for i in range(5)] == [False] * 4 + [True]
        hit(t, key(20), now)  # nothing expired any more: dropped and counted
        assert t.lookup(key(20), now) is None and t.dropped == 1 and len(t) == 5

    def test_a_key_updated_since_it_was_filed_is_not_evicted(self) -> None:
        t = table(size=2)
        hit(t, b"old", 0)
        hit(t, b"next", 10)
        hit(t, b"old", EXPIRE // 2)  # live again until EXPIRE * 1.5
        now = EXPIRE + 20
        hit(t, b"new", now)
        assert t.lookup(b"old", now) is not None and t.lookup(b"next", now) is None
        hit(t, b"newer", now)
        assert t.lookup(b"newer", now) is None and t.dropped == 1

    def test_a_key_lives_while_any_peer_entry_does(self) -> None:
        t = table(size=2)
        hit(t, b"shared", 0, peer=0)
        hit(t, b"other", 10)
        hit(t, b"shared", 5000, peer=1)  # peer 1's entry lives until 5000 + EXPIRE
        now = EXPIRE + 100
        hit(t, b"new", now)
        assert t.lookup(b"shared", now) is not None and t.lookup(b"other", now) is None

    def test_a_short_timed_update_expires_first(self) -> None:
        t = table(size=2)
        hit(t, b"long", 0)
        hit(t, b"short", 10, expire=500)
        now = 1000
        hit(t, b"new", now)
        assert t.lookup(b"short", now) is None and t.lookup(b"long", now) is not None

    def test_an_evicted_key_is_not_pushed(self) -> None:
        t = table(size=1)
        hit(t, b"gone", 0)
        hit(t, b"new", EXPIRE + 1)
        pushed = [k for k, _, _ in t.take_dirty(0, EXPIRE + 1)]
        assert pushed == [b"new"]

    def test_an_evicted_key_leaves_no_server_key_behind(self) -> None:
        server_key = DATA_TYPES_BY_NAME["server_key"]
        definition = TableDefinition(0, b"s.aggr", 6, 33, 1 << server_key.id, EXPIRE)
        t = table(size=1, definition=definition)
        t.apply(0, 0, t.fields, [(b"gone", (b"srv1",), None)], 0)
        assert t.stripes[0].server_keys
        t.apply(0, 0, t.fields, [(b"new", (b"srv2",), None)], EXPIRE + 1)
        assert list(t.stripes[0].server_keys.values()) == [b"srv2"]


class TestTheIndexStaysSmall:
    def test_cleared_keys_do_not_pile_up_in_the_index(self) -> None:
        t = table(size=1_000)
        for round_ in range(20):
            fill(t, 1_000, round_ * 10)
            t.clear()
        fill(t, 10, 500)
        stripe = t.stripes[0]
        assert stripe.indexed <= 2 * len(stripe.entries) + 1024
        assert stripe.indexed == sum(len(b) for b in stripe.expiry_index.values())

    def test_cleared_keys_are_skipped_when_making_room(self) -> None:
        t = table(size=3)
        for name in (b"a", b"b", b"c"):
            hit(t, name, 0)
        t.clear(b"a")
        t.clear(b"b")
        hit(t, b"a", 5000)  # filed again, later
        hit(t, b"b", 5000)
        now = EXPIRE + 50  # c expired; the first filings of a and b, before it, are stale
        hit(t, b"new", now)
        assert t.lookup(b"c", now) is None
        assert all(t.lookup(k, now) is not None for k in (b"a", b"b", b"new"))

    def test_one_insertion_does_bounded_work(self) -> None:
        assert 1 <= EVICT_BUDGET <= 64
