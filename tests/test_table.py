"""AggTable: per-peer entries, aggregates, expiry, dirty keys, bounds, how values combine."""

from __future__ import annotations

import threading

import pytest

from stktagg.datatypes import U32_MAX
from stktagg.table import NO_EXPIRE_LIFETIME, AggTable, TableMode
from stktagg.wire import TableDefinition

MASK = (1 << 9) | (1 << 10)  # http_req_cnt, http_req_rate
DEF = TableDefinition(0, b"t.aggr", 6, 33, MASK, 60_000, ((10, 10_000),))


def table(definition=DEF, **kw) -> AggTable:
    return AggTable(definition, TableMode.AGGREGATE, **kw)


def apply(t: AggTable, peer: int, key: bytes, values, now: int, expire=None, fields=None):
    t.apply(t.stripe_of(key), peer, fields or t.fields, [(key, values, expire)], now)


def hit(t: AggTable, peer: int, key: bytes, cnt: int, now: int, expire=None, rate=(0, 1, 0)):
    apply(t, peer, key, (cnt, rate), now, expire)


def dirty(t: AggTable, now: int) -> dict:
    """What a push round would send: the keys peers changed, then those due on their own."""
    return {k: (values, exp) for due in (False, True) for s in range(len(t.stripes))
            for k, values, exp in t.take_dirty(s, now, due=due)}


def test_peers_entries_are_summed_and_pushed_once():
    t = table()
    hit(t, 0, b"alice", 3, 1000)
    hit(t, 1, b"alice", 4, 1001)
    hit(t, 0, b"alice", 5, 1002)  # peer 0's newer value replaces its older one
    changed = dirty(t, 1002)
    assert list(changed) == [b"alice"]
    values, expire_at = changed[b"alice"]
    assert values[0] == 9 and expire_at == 1002 + 60_000
    assert dirty(t, 1003) == {}


def test_expired_peer_entry_contributes_nothing_and_stays_visible():
    t = table()
    hit(t, 0, b"k", 3, 0, expire=1000)
    hit(t, 1, b"k", 4, 0)
    dirty(t, 0)
    t.refresh(t.stripe_of(b"k"), 1000)
    changed = dirty(t, 1000)
    assert changed[b"k"][0][0] == 4
    agg, _, peers = t.lookup(b"k", 1000)
    assert agg[0] == 4 and set(peers) == {0, 1} and peers[0][1] == 1000


def test_all_expired_gives_no_aggregate_and_no_push():
    t = table()
    hit(t, 0, b"k", 3, 0, expire=500)
    assert t.lookup(b"k", 600)[0] is None
    assert dirty(t, 600) == {}


def test_timed_expire_is_capped_at_the_table_expire():
    t = table()
    hit(t, 0, b"k", 1, 0, expire=10_000_000)
    assert t.lookup(b"k", 0)[1] == 60_000


@pytest.mark.parametrize("fast", [True, False], ids=["generated", "general"])
def test_a_table_without_expire_keeps_its_entries(fast):
    """HAProxy never expires the entries of a table without ``expire``: neither may we (they
    used to get a life of 0 ms, and no aggregate was ever pushed)."""
    t = table(TableDefinition(0, b"t.aggr", 6, 33, MASK, 0, ((10, 10_000),)))
    if not fast:
        t.layout.fast_apply = None
    hit(t, 0, b"live", 3, 0)
    hit(t, 1, b"timed", 4, 0, expire=5_000)  # a timed update still says how long
    assert t.lookup(b"live", 86_400_000)[0] is not None  # a day later
    assert t.lookup(b"timed", 4_999)[0] is not None and t.lookup(b"timed", 5_000)[0] is None
    assert dirty(t, 1)[b"live"][1] == NO_EXPIRE_LIFETIME


def test_rate_is_pushed_again_at_the_end_of_its_aligned_period():
    t = table()
    hit(t, 0, b"k", 1, 0, rate=(0, 5, 0))
    dirty(t, 0)
    t.refresh(t.stripe_of(b"k"), 9_999)
    assert dirty(t, 9_999) == {}
    t.refresh(t.stripe_of(b"k"), 10_000)
    assert dirty(t, 10_000)[b"k"][0][1] == (0, 0, 5)  # rotated: the 5 are now the previous period


def test_forward_table_keeps_the_latest_entry():
    t = AggTable(DEF, TableMode.FORWARD)
    hit(t, 0, b"k", 10, 0)
    hit(t, 1, b"k", 7, 5)
    assert t.lookup(b"k", 5)[0][0] == 7


def test_full_table_evicts_expired_entries_first_then_drops():
    t = table(stripes=1, max_entries=2)
    hit(t, 0, b"a", 1, 0, expire=10)
    hit(t, 0, b"b", 1, 0)
    hit(t, 0, b"c", 1, 100)  # a expired: evicted
    assert t.lookup(b"a", 100) is None and t.lookup(b"c", 100) is not None
    hit(t, 0, b"d", 1, 100)  # nothing expired: dropped and counted
    assert t.lookup(b"d", 100) is None and t.dropped == 1


def test_concurrent_writers_on_different_stripes_lose_nothing():
    t = table()
    keys = [f"k{i}".encode() for i in range(2000)]

    def writer(peer):
        for key in keys:
            hit(t, peer, key, 1, 0)

    threads = [threading.Thread(target=writer, args=(p,)) for p in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(t) == 2000
    assert all(t.lookup(k, 0)[0][0] == 4 for k in keys)


class TestCombine:
    def definition(self, mask, params=()):
        return TableDefinition(0, b"t", 6, 33, mask, 60000, tuple(params))

    def test_counters_sum_tags_max_server_id_latest(self):
        t = table(self.definition((1 << 9) | (1 << 1) | (1 << 0) | (1 << 2)))  # server_id gpt0 gpc0 http_req_cnt
        apply(t, 0, b"k", (5, 9, 20, 200), 0)
        apply(t, 1, b"k", (7, 3, 10, 100), 1)
        assert t.lookup(b"k", 1)[0] == (7, 9, 30, 300)

    def test_negative_server_id_and_server_key_round_trip(self):
        t = table(self.definition((1 << 0) | (1 << 19)))
        apply(t, 0, b"k", (-1, b"srv1"), 0)
        apply(t, 1, b"k", (4, None), 1)
        assert t.lookup(b"k", 1)[2][0][0] == (-1, b"srv1")
        assert t.lookup(b"k", 1)[0] == (4, None)

    def test_uint_sum_is_clamped_ull_is_not(self):
        t = table(self.definition((1 << 9) | (1 << 13)))  # http_req_cnt (UINT), bytes_in_cnt (ULL)
        apply(t, 0, b"k", (U32_MAX, U32_MAX), 0)
        apply(t, 1, b"k", (5, 5), 0)
        assert t.lookup(b"k", 0)[0] == (U32_MAX, U32_MAX + 5)

    def test_arrays_combine_element_by_element(self):
        t = table(self.definition((1 << 22) | (1 << 23) | (1 << 24), [(22, 2), (23, 2), (24, 2, 10_000)]))
        now = 50_000
        apply(t, 0, b"k", ((1, 9), (3, 4), ((0, 2, 0), (0, 0, 0))), now)
        apply(t, 1, b"k", ((5, 2), (1, 1), ((0, 1, 0), (0, 3, 0))), now)
        agg = t.lookup(b"k", now)[0]
        assert agg == ((5, 9), (4, 5), ((0, 3, 0), (0, 3, 0)))

    def test_values_of_another_layout_are_mapped_by_type(self):
        t = table(self.definition((1 << 9) | (1 << 2)))  # gpc0, http_req_cnt
        other = self.definition((1 << 9) | (1 << 4)).codec.fields  # conn_cnt=7, http_req_cnt=3 (id order)
        apply(t, 0, b"k", (7, 3), 0, fields=other)
        assert t.lookup(b"k", 0)[0] == (0, 3)


class TestGeneratedFastPaths:
    """The generated combine and pack compute what the general ones compute."""

    def test_same_aggregates_as_the_general_code_on_random_entries(self):
        import random

        mask = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 9) | (1 << 10) | (1 << 13) | (1 << 23) | (1 << 24)
        definition = TableDefinition(0, b"t", 6, 33, mask, 60000, ((10, 10_000), (23, 2), (24, 2, 10_000)))
        rng = random.Random(3)
        fast, slow = table(definition), table(definition)
        slow.layout.fast_combine = slow.layout.fast_pack = slow.layout.fast_apply = None
        assert fast.layout.fast_combine is not None
        for step in range(3000):
            key = f"k{rng.randrange(50)}".encode()
            freq = lambda: (rng.choice([0, rng.randrange(30_000), 4233758769]), rng.randrange(50), rng.randrange(50))
            values = (rng.choice([-1, 0, 7]), rng.randrange(9), rng.randrange(100), rng.randrange(1000), freq(),
                      rng.randrange(1 << 40), (rng.randrange(5), rng.randrange(5)), (freq(), freq()))
            expire = rng.choice([None, rng.randrange(1, 5000)])
            peer, now = rng.randrange(4), step * 7
            apply(fast, peer, key, values, now, expire)
            apply(slow, peer, key, values, now, expire)
            if step % 97 == 0:
                later = now + rng.randrange(20_000)
                for s in range(len(fast.stripes)):
                    fast.refresh(s, later)
                    slow.refresh(s, later)
                assert dirty(fast, later) == dirty(slow, later)


def test_a_table_storing_no_data_type_works():
    """A definition with an empty bitfield is legal; the generated code must cope."""
    from stktagg.wire import MessageDecoder, MessageEncoder, UpdateBatch, compile_body_encoder

    definition = TableDefinition(3, b"bare.local", 6, 33, 0, 60_000, ())
    t = table(definition)
    apply(t, 0, b"k", (), 0)
    assert t.lookup(b"k", 0)[0] == ()
    encode = compile_body_encoder(6, 33, 0, ())
    decoder = MessageDecoder()
    decoder.feed(MessageEncoder().encode(definition) + UpdateBatch([(encode(b"k", ()), 10)]).frame(1, True))
    decoder.next_message()
    assert decoder.next_run()[1] == [(b"k", (), 10)]


#: gpt0 (max), http_req_cnt (sum), http_req_rate(10s), gpc0 (sum): every way a column combines
#: but the latest value (server_id), which takes the whole aggregate's path as rates do.
WIDE = TableDefinition(0, b"w.aggr", 6, 33, (1 << 1) | (1 << 2) | (1 << 9) | (1 << 10), 60_000, ((10, 10_000),))


@pytest.mark.parametrize("mode", [TableMode.AGGREGATE, TableMode.FORWARD])
def test_one_column_read_is_the_aggregate_s_element(mode):
    """``read_column`` (the dashboard's scans) gives each column's element of the aggregate
    that ``read_keys`` gives, and its expiry; None for a key whose entries all expired."""
    t = AggTable(WIDE, mode)
    for peer in range(3):
        for i in range(40):
            values = (i * (peer + 1) % 7, i + peer, i * 3 + peer, (0, i % 5 + peer, 1))
            apply(t, peer, b"k%02d" % i, values, 1000, expire=500 if i % 10 == 0 and peer else None)
    now = 1600  # the entries given 500 ms (at 1000) are expired then; the others live on
    apply(t, 0, b"gone", (1, 1, 1, (0, 1, 0)), 0, expire=100)
    for stripe in range(len(t.stripes)):
        keys = t.stripe_keys(stripe)
        full = {key: (agg, expire) for key, agg, expire, _ in t.read_keys(stripe, keys, now)}
        for index in range(len(t.fields)):
            got = {key: (value, expire) for key, value, expire in t.read_column(stripe, keys, now, (index, 0))}
            want = {key: (None if agg is None else agg[index], expire if agg is not None else 0)
                    for key, (agg, expire) in full.items()}
            assert got == want, (mode, index)
        expiries = {key: expire for key, _, expire in t.read_column(stripe, keys, now, None)}
        assert expiries == {key: expire if agg is not None else 0 for key, (agg, expire) in full.items()}
    assert t.read_column(t.stripe_of(b"gone"), [b"gone", b"absent"], now, (1, 0)) == [(b"gone", None, 0)]
