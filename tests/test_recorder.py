"""History lines at work (issue 18): history tables, samples, statistics, from the file again."""

from __future__ import annotations

import json

import pytest

from stktagg.aggregation import RouteKind, Section
from stktagg.cli import run_command
from stktagg.clock import ManualClock, table_ms
from stktagg.config import Peer, parse
from stktagg.datatypes import read_rate
from stktagg.loop import Reactor
from stktagg.recorder import ENTRY_LIFE_BUCKETS, Recorder, Samples
from stktagg.slices import Slicer
from stktagg.status import SectionStatus, Status, TableStatus
from stktagg.hotpath import TIMER_SLICE
from stktagg.table import HISTORY_PEER, REPUSH_EARLY, TableMode
from stktagg.wire import TableDefinition
from stktagg.workers import Workers
from test_table import apply, dirty

CONFIG = """
global
    history-file {path}
aggregations agg
    peer me 127.0.0.1:10000 local
    peer n1 127.0.0.1:10001 down
    peer n2 127.0.0.1:10002 down
    from .local to .aggr
    history .aggr to .hmax stat max window 2s offset 3s
    history .aggr to .havg stat avg window 2s offset 3s
    history .aggr to .hp50 stat p50 window 2s offset 3s
    history .aggr to .hmin stat min window 2s offset 3s
"""
MASK = (1 << 9) | (1 << 10)  # http_req_cnt, http_req_rate(10s)
LOCAL = TableDefinition(1, b"t.local", 6, 33, MASK, 60_000, ((10, 10_000),))
RATE_PERIOD = 10_000


class Bed:
    """A section with history lines, its recorder on a manual clock, and the workers inline."""

    def __init__(self, path: str) -> None:
        self.config = parse(CONFIG.format(path=path))
        # Half a second past a whole second: each second() passes one bucket's end.
        self.clock = ManualClock(start=1000.0, wall_start=2_000_000_000.5)
        self.reactor = Reactor(clock=self.clock.now)
        self.section = Section(self.config.aggregations[0])
        self.slices = Slicer(self.reactor, self.clock)
        self.workers = Workers(0, lambda: None, lambda: None)
        self.recorder = Recorder(path, self.reactor, self.clock, [self.section], self.slices, self.workers)

    def peer(self, name: str) -> Peer:
        return self.section.peer(name)

    def feed(self, peer: int, key: bytes, count: int) -> None:
        table = self.section.tables[b"t.aggr"]
        apply(table, peer, key, (count, (0, count, 0)), table_ms(self.clock.now()))

    def second(self) -> None:
        """One second of wall time, the bucket's sampling and the statistics run to their end."""
        series = list(self.recorder.series.values())
        sampled = [s.buckets for s in series]
        computed = [line.computed + line.skipped for s in series for line in s.lines]
        self.clock.advance(1.0)

        def done() -> bool:  # the bucket sampled, and each line's computation of it over
            return ([s.buckets for s in series] == [n + 1 for n in sampled]
                    and all(line.computed + line.skipped > before for line, before
                            in zip([line for s in series for line in s.lines], computed))
                    and not any(line.computing for s in series for line in s.lines))
        assert self.reactor.run_until(done, 10.0)

    def entry(self, suffix: str, key: bytes):
        table = self.section.tables[b"t" + suffix.encode()]
        found = table.lookup(key, table_ms(self.clock.now()))
        return None if found is None or found[0] is None else found[0]

    def close(self) -> None:
        self.recorder.close(5.0)
        self.reactor.close()


@pytest.fixture
def bed(tmp_path):
    made = Bed(str(tmp_path / "history.db"))
    yield made
    made.close()


def test_each_aggregate_gets_a_history_table_per_line(bed):
    route = bed.section.route(bed.peer("n1"), LOCAL)
    assert route.kind is RouteKind.AGGREGATE
    names = sorted(n for n, t in bed.section.tables.items() if t.mode is TableMode.HISTORY)
    assert names == [b"t.havg", b"t.hmax", b"t.hmin", b"t.hp50"]
    hist = bed.section.tables[b"t.hmax"]
    assert (hist.definition.key_type, hist.definition.data_types) == (LOCAL.key_type, LOCAL.data_types)
    assert bed.section.sources[b"t.hmax"] == b"t.aggr"
    # A node's own table with a history suffix is not an input.
    assert bed.section.route(bed.peer("n1"), TableDefinition(2, b"t.hmax", 6, 33, MASK, 0, ((10, 10_000),))).kind \
        is RouteKind.IGNORE


def test_statistics_of_the_window_offset_back(bed):
    bed.section.route(bed.peer("n1"), LOCAL)
    bed.recorder.start()
    values = [5, 9, 2, 7, 4, 4, 4, 4]  # the sum of the two nodes at each second
    seen = []
    for value in values:
        bed.feed(0, b"k", value - 1)
        bed.feed(1, b"k", 1)
        bed.second()  # the bucket that just ended holds `value`
        seen.append({s: bed.entry(s, b"k") for s in (".hmax", ".havg", ".hp50", ".hmin")})
    # window 2 s, offset 3 s: after bucket i ends, the window is buckets i-3 and i-4.
    for i, found in enumerate(seen):
        window = values[max(0, i - 4):max(0, i - 2)]
        if not window:
            assert all(v is None for v in found.values()), (i, found)
            continue
        ordered = sorted(window)
        expected = {".hmax": max(window), ".hmin": min(window), ".hp50": ordered[(len(ordered) + 1) // 2 - 1],
                    ".havg": (2 * sum(window) + len(window)) // (2 * len(window))}
        for suffix, stat in expected.items():
            count, rate = found[suffix]
            assert count == stat, (i, suffix, found)
            assert read_rate(rate, RATE_PERIOD) == stat  # a rate's statistic reads as such


def test_a_history_rate_holds_its_value_across_periods(bed):
    bed.section.route(bed.peer("n1"), LOCAL)
    hist = bed.section.tables[b"t.hmax"]
    now = table_ms(bed.clock.now())
    apply(hist, HISTORY_PEER, b"k", (3, (0, 40, 0)), now, expire=10 * RATE_PERIOD)
    assert dirty(hist, now)[b"k"][0] == (3, (0, 40, 0))
    pushed_at = now
    for _ in range(5):
        assert dirty(hist, pushed_at + RATE_PERIOD - REPUSH_EARLY - 1) == {}  # not pushed before it is due
        later = pushed_at + RATE_PERIOD - REPUSH_EARLY + TIMER_SLICE  # due, and its timer's slice reached
        for stripe in range(len(hist.stripes)):
            hist.refresh(stripe, later)
        pushed = dirty(hist, later)  # pushed again before the node's period ends, reading the same
        assert pushed[b"k"][0] == (3, (0, 40, 0)), pushed  # a period starting now
        pushed_at = later


def test_entries_expire_once_the_samples_left_the_window(bed):
    bed.section.route(bed.peer("n1"), LOCAL)
    bed.recorder.start()
    bed.feed(0, b"gone", 6)
    bed.second()
    bed.section.tables[b"t.aggr"].clear(b"gone")  # no aggregate any more: no sample after this one
    found = []
    for _ in range(10):
        bed.second()
        found.append(bed.entry(".hmax", b"gone"))
    present = [v is not None for v in found]
    assert present[2] and present[3]  # served while its sample is in the window...
    assert not any(present[3 + ENTRY_LIFE_BUCKETS + 1:])  # ...and gone within the entry's life after


def test_a_restarted_recorder_serves_the_file_before_any_peer(bed, tmp_path):
    bed.section.route(bed.peer("n1"), LOCAL)
    bed.recorder.start()
    for _ in range(5):
        bed.feed(0, b"k", 8)
        bed.second()
    assert bed.entry(".hmax", b"k")[0] == 8
    path = bed.recorder.path
    bed.recorder.close(5.0)
    again = Bed(path)
    again.clock.seconds = bed.clock.seconds  # the same moment: no bucket has passed
    again.clock._wall_offset = bed.clock._wall_offset
    try:
        assert b"t.hmax" not in again.section.tables
        again.recorder.start()
        assert again.reactor.run_until(lambda: b"t.hmax" in again.section.tables, 5.0)
        assert again.section.tables[b"t.hmax"].mode is TableMode.HISTORY  # from the file's definitions
        # every line's statistics come from the file, in chunks: wait for both tables'
        assert again.reactor.run_until(lambda: again.entry(".hmax", b"k") is not None
                                       and again.entry(".havg", b"k") is not None, 5.0)
        assert again.entry(".hmax", b"k")[0] == 8 and again.entry(".havg", b"k")[0] == 8
    finally:
        again.close()
    bed.recorder = Recorder(path, bed.reactor, bed.clock, [bed.section], bed.slices, bed.workers)


def test_a_sample_and_an_entry_of_each_kind_of_type():
    mask = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 3) | (1 << 9)  # server_id, gpt0, gpc0, gpc0_rate, http_req_cnt
    definition = TableDefinition(0, b"x", 6, 33, mask, 0, ((3, 1000),))
    fields = definition.codec.fields
    samples = Samples(fields)
    entry = samples.entry([7] * len(fields))
    assert samples.sample(entry) == [0 if f.info.name == "server_id" else 7 for f in fields]
    rate = entry[[f.info.name for f in fields].index("gpc0_rate")]
    assert rate == (0, 7, 0)  # read by HAProxy as 7 for the whole period
    assert samples.entry([-5, -1, 2**70, 2**40, 3]) == (0, 0, 2**32 - 1, (0, 2**32 - 1, 0), 3)  # clamped


def status_of(bed: Bed) -> Status:
    section = bed.section
    tables = tuple(TableStatus(t.name, t.mode, section.sources.get(t.name, b""), t.expire_ms, len(t), t.changes,
                               t.dropped, t) for t in section.tables.values())
    return Status((SectionStatus("agg", (), tables),), 1, bed.clock.now(), bed.clock.wall(), 0, 0,
                  history=bed.recorder.status())


def test_show_history_lists_a_keys_samples_and_the_window_served(bed):
    bed.section.route(bed.peer("n1"), LOCAL)
    bed.recorder.start()
    for value in (3, 6, 1, 8, 2, 2):
        bed.feed(0, b"k", value)
        bed.second()
    status = status_of(bed)
    data = json.loads(run_command(["show", "history", "agg", "t.hmax", "key", "k", "json"], status,
                                  bed.clock.now(), None))
    assert (data["stat"], data["window_ms"], data["offset_ms"], data["resolution_ms"]) == ("max", 2000, 3000, 1000)
    assert [b["values"]["http_req_cnt"] for b in data["buckets"]] == [3, 6, 1, 8, 2, 2]
    assert [b["in_window"] for b in data["buckets"]] == [False, True, True, False, False, False]  # 5 and 4 s back
    assert data["buckets_sampled"] == 6 and data["computed"] >= 6 and data["last_keys"] == 1
    text = run_command(["show", "history", "agg", "t.hmax", "key", "k"], status, bed.clock.now(), None)
    assert "stat max window 2000ms offset 3000ms (resolution 1000ms" in text
    assert text.count("(in window)") == 2 and "http_req_cnt=8" in text
    assert run_command(["show", "history", "agg", "t.aggr"], status, bed.clock.now(), None) \
        == "Not a history table: t.aggr\n"
    aggrs = run_command(["show", "aggrs"], status, bed.clock.now(), None)
    assert "table 't.aggr' history in 't.hmax'" in aggrs
