"""AggTable: per-peer entries, aggregates, expiry, dirty keys, bounds."""

from __future__ import annotations

import threading

from stktagg.table import AggTable, TableMode
from stktagg.wire import TableDefinition

MASK = (1 << 9) | (1 << 10)  # http_req_cnt, http_req_rate
DEF = TableDefinition(0, b"t.aggr", 6, 33, MASK, 60_000, ((10, 10_000),))


def table(**kw) -> AggTable:
    return AggTable(DEF, TableMode.AGGREGATE, **kw)


def apply(t: AggTable, peer: int, key: bytes, cnt: int, now: int, expire=None, rate=(0, 1, 0)):
    t.apply(t.stripe_of(key), peer, t.fields, [(key, (cnt, rate), expire)], now)


def dirty(t: AggTable) -> dict:
    return {k: (agg, exp) for s in range(len(t.stripes)) for k, agg, exp in t.take_dirty(s)}


def test_peers_entries_are_summed_and_marked_dirty_once():
    t = table()
    apply(t, 0, b"alice", 3, 1000)
    apply(t, 1, b"alice", 4, 1001)
    apply(t, 0, b"alice", 5, 1002)  # peer 0's newer value replaces its older one
    changed = dirty(t)
    assert list(changed) == [b"alice"]
    agg, expire_at = changed[b"alice"]
    assert agg[0] == 9 and expire_at == 1002 + 60_000
    assert dirty(t) == {}


def test_expired_peer_entry_contributes_nothing_and_stays_visible():
    t = table()
    apply(t, 0, b"k", 3, 0, expire=1000)
    apply(t, 1, b"k", 4, 0)
    dirty(t)
    t.refresh(t.stripe_of(b"k"), 1000)
    agg, _, contribs = t.lookup(b"k")
    assert agg[0] == 4 and set(contribs) == {0, 1}
    assert b"k" in dirty(t)


def test_all_expired_gives_no_aggregate():
    t = table()
    apply(t, 0, b"k", 3, 0, expire=500)
    t.refresh(t.stripe_of(b"k"), 600)
    assert t.lookup(b"k")[0] is None


def test_timed_expire_is_capped_at_the_table_expire():
    t = table()
    apply(t, 0, b"k", 1, 0, expire=10_000_000)
    assert t.lookup(b"k")[1] == 60_000


def test_rate_is_pushed_again_at_the_end_of_its_aligned_period():
    t = table()
    apply(t, 0, b"k", 1, 0, rate=(0, 5, 0))
    dirty(t)
    t.refresh(t.stripe_of(b"k"), 9_999)
    assert dirty(t) == {}
    t.refresh(t.stripe_of(b"k"), 10_000)
    assert b"k" in dirty(t)


def test_forward_table_keeps_the_latest_entry():
    t = AggTable(DEF, TableMode.FORWARD)
    apply(t, 0, b"k", 10, 0)
    apply(t, 1, b"k", 7, 5)
    assert t.lookup(b"k")[0][0] == 7


def test_full_table_evicts_expired_entries_first_then_drops():
    t = table(stripes=1, max_entries=2)
    apply(t, 0, b"a", 1, 0, expire=10)
    apply(t, 0, b"b", 1, 0)
    apply(t, 0, b"c", 1, 100)  # a expired: evicted
    assert t.lookup(b"a") is None and t.lookup(b"c") is not None
    apply(t, 0, b"d", 1, 100)  # nothing expired: dropped and counted
    assert t.lookup(b"d") is None and t.dropped == 1


def test_concurrent_writers_on_different_stripes_lose_nothing():
    t = table()
    keys = [f"k{i}".encode() for i in range(2000)]

    def writer(peer):
        for key in keys:
            apply(t, peer, key, 1, 0)

    threads = [threading.Thread(target=writer, args=(p,)) for p in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(t) == 2000
    assert all(t.lookup(k)[0][0] == 4 for k in keys)
