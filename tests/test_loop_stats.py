"""Issue 14: the loop measures itself, and shows it in ``show info`` and the metrics.

Turn durations are the time spent running callbacks (from the end of
``select`` to the end of the last callback), never the time blocked in
``select``. Everything runs on a ``ManualClock``: a callback that "takes"
0.3 s moves the clock by 0.3 s, so the figures are exact.
"""

from __future__ import annotations

import json
import logging
import selectors
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from stktagg import cli, metrics
from stktagg.clock import ManualClock
from stktagg.loop import SLOW_TURN, TURN_BUCKETS, TURN_WINDOW, Reactor, TurnStats
from stktagg.status import LoopStats, Status
from test_cli_handlers import RecordingCommands, snapshot
from test_server_parts import Bed

pytestmark = pytest.mark.usefixtures("no_fd_leak")


def busy_for(clock: ManualClock, seconds: float):
    def busy() -> None:
        clock.advance(seconds)

    return busy


class SlowSelector(selectors.DefaultSelector):
    """A selector whose every ``select`` lasts ``wait`` seconds of the manual clock."""

    def __init__(self, clock: ManualClock, wait: float) -> None:
        super().__init__()
        self.clock, self.wait = clock, wait

    def select(self, timeout=None):
        self.clock.advance(self.wait)
        return super().select(0)


@pytest.fixture
def clocked() -> Iterator[tuple[ManualClock, Reactor]]:
    clock = ManualClock()
    reactor = Reactor(clock=clock.now)
    yield clock, reactor
    reactor.close()


class TestTurnStats:
    def test_each_turn_lands_in_the_first_bucket_whose_bound_it_does_not_exceed(self) -> None:
        stats = TurnStats()
        for duration in (0.0, 0.001, 0.0011, 0.05, 0.0501, 1.0, 1.5, 60.0):
            stats.record(100.0, duration)
        assert stats.counts == [2, 1, 0, 0, 1, 1, 0, 0, 1, 2]
        assert stats.turns == 8 and stats.longest == 60.0
        assert stats.seconds == pytest.approx(sum((0.0, 0.001, 0.0011, 0.05, 0.0501, 1.0, 1.5, 60.0)))

    def test_the_recent_figures_cover_the_last_minute_only(self) -> None:
        stats = TurnStats()
        stats.record(100.2, 0.7, busy_for)
        stats.record(130.0, 0.002)
        stats.record(159.9, 0.3)
        counts, longest, slowest = stats.recent(159.9)
        assert sum(counts) == 3 and longest == 0.7 and slowest == "busy_for"
        counts, longest, slowest = stats.recent(160.0)  # second 100 is more than a minute ago
        assert sum(counts) == 2 and longest == 0.3 and slowest == ""
        assert stats.recent(100.0 + 2 * TURN_WINDOW) == ([0] * (len(TURN_BUCKETS) + 1), 0.0, "")
        assert stats.turns == 3 and stats.longest == 0.7  # the totals keep everything

    def test_a_slot_is_reset_when_the_ring_comes_back_to_it(self) -> None:
        stats = TurnStats()
        stats.record(10.5, 0.9)
        stats.record(10.5 + TURN_WINDOW, 0.001)  # the same slot, a minute later
        counts, longest, _ = stats.recent(10.5 + TURN_WINDOW)
        assert sum(counts) == 1 and longest == 0.001

    def test_the_memory_does_not_grow_with_the_turns(self) -> None:
        stats = TurnStats()
        for turn in range(20_000):
            stats.record(turn * 0.01, 0.0001)
        assert len(stats._second) == TURN_WINDOW and len(stats.counts) == len(TURN_BUCKETS) + 1
        assert sum(stats.recent(199.99)[0]) == TURN_WINDOW * 100


class TestReactorMeasuresItsTurns:
    def test_a_turn_lasts_as_long_as_its_callbacks(self, clocked) -> None:
        clock, reactor = clocked
        reactor.call_soon(busy_for(clock, 0.02))
        reactor.call_soon(busy_for(clock, 0.1))
        reactor.run_once(0)
        stats = reactor.turn_stats
        assert stats.turns == 1 and stats.longest == pytest.approx(0.12)
        assert stats.counts[TURN_BUCKETS.index(0.25)] == 1
        assert stats.recent(clock.now())[2] == "busy_for.<locals>.busy"

    def test_the_time_blocked_in_select_is_not_a_turn(self) -> None:
        clock = ManualClock()
        reactor = Reactor(clock=clock.now, selector=SlowSelector(clock, 5.0))
        try:
            reactor.call_soon(busy_for(clock, 0.003))
            reactor.run_once(0)
            reactor.run_once(0)  # nothing to run: a turn of no time at all
        finally:
            reactor.close()
        assert reactor.turn_stats.turns == 2 and reactor.turn_stats.longest == pytest.approx(0.003)
        assert reactor.turn_stats.counts[:2] == [1, 1]

    def test_a_turn_over_a_second_is_a_warning_naming_its_slowest_callback(self, clocked, caplog) -> None:
        clock, reactor = clocked

        def teach_a_big_table() -> None:
            clock.advance(SLOW_TURN + 0.5)

        reactor.call_soon(busy_for(clock, 0.01))
        reactor.call_soon(teach_a_big_table)
        with caplog.at_level(logging.WARNING, logger="stktagg.loop"):
            reactor.run_once(0)
            reactor.call_soon(busy_for(clock, SLOW_TURN - 0.001))  # within the limit: no warning
            reactor.run_once(0)
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "1.510 s" in warnings[0] and "teach_a_big_table" in warnings[0] and "1.500 s" in warnings[0]


class TestShowInfo:
    LOOP = LoopStats(TURN_BUCKETS, (5, 1, 0, 0, 0, 0, 0, 0, 1, 2), 9, 4.0, 2.5,
                     (3, 0, 0, 0, 1, 0, 0, 0, 0, 1), 1.2345, "Server._session_tick")

    def run(self, line: str, loop: LoopStats) -> str:
        status = Status(*[getattr(snapshot(), f) for f in ("sections", "pid", "started_at", "started_wall",
                                                             "updates_in", "updates_out", "rates")], loop)
        return cli.run_command(line.split(), status, 1002.5, RecordingCommands())

    def test_json_has_the_longest_turn_and_the_cumulative_histogram_of_the_last_minute(self) -> None:
        info = json.loads(self.run("show info json", self.LOOP))
        assert info["loop_longest_turn_ms_1m"] == 1234.5
        assert info["loop_slowest_callback_1m"] == "Server._session_tick"
        turns = {k: v for k, v in info.items() if k.startswith("loop_turns_")}
        assert list(turns) == [f"loop_turns_le_{ms}ms_1m" for ms in (1, 5, 10, 25, 50, 100, 250, 500, 1000)] + [
            "loop_turns_le_inf_1m"]
        assert list(turns.values()) == [3, 3, 3, 3, 4, 4, 4, 4, 4, 5]
        assert list(info)[-4:] == ["updates_received_per_s_1s", "updates_pushed_per_s_1s",
                                   "updates_received_per_s_1m", "updates_pushed_per_s_1m"]

    def test_text_has_the_same_fields(self) -> None:
        text = self.run("show info", self.LOOP)
        assert "loop_longest_turn_ms_1m: 1234.5\n" in text and "loop_turns_le_50ms_1m: 4\n" in text
        assert "loop_slowest_callback_1m: Server._session_tick\n" in text

    def test_a_status_without_loop_figures_shows_zeros(self) -> None:
        info = json.loads(self.run("show info json", LoopStats()))
        assert info["loop_longest_turn_ms_1m"] == 0 and info["loop_turns_le_inf_1m"] == 0


class TestMetrics:
    def test_the_turn_histogram_parses_with_the_reference_parser(self) -> None:
        loop = TestShowInfo.LOOP
        status = Status(*[getattr(snapshot(), f) for f in ("sections", "pid", "started_at", "started_wall",
                                                             "updates_in", "updates_out", "rates")], loop)
        families = {f.name: f for f in text_string_to_metric_families(metrics.render(status))}
        turns = families["hapee_stktagg_loop_turn_seconds"]
        assert turns.type == "histogram"
        buckets = [(s.labels["le"], s.value) for s in turns.samples if s.name.endswith("_bucket")]
        assert buckets == [("0.001", 5), ("0.005", 6), ("0.01", 6), ("0.025", 6), ("0.05", 6), ("0.1", 6),
                           ("0.25", 6), ("0.5", 6), ("1.0", 7), ("+Inf", 9)]
        samples = {s.name: s.value for s in turns.samples}
        assert samples["hapee_stktagg_loop_turn_seconds_count"] == 9
        assert samples["hapee_stktagg_loop_turn_seconds_sum"] == 4.0
        assert families["hapee_stktagg_loop_longest_turn_seconds"].samples[0].value == 1.2345


class TestServerStatus:
    def test_the_status_carries_the_reactors_figures(self) -> None:
        bed = Bed()
        try:
            bed.reactor.call_soon(busy_for(bed.clock, 0.3))
            bed.reactor.run_once(0)
            loop = bed.status().loop
            assert loop.bounds == TURN_BUCKETS and loop.turns >= 1
            assert loop.recent_longest == pytest.approx(0.3) and loop.recent_slowest == "busy_for.<locals>.busy"
            assert sum(loop.recent_counts) == sum(loop.counts) == loop.turns
            info = json.loads(cli.run_command(["show", "info", "json"], bed.status(), bed.clock.now(),
                                              RecordingCommands()))
            assert info["loop_longest_turn_ms_1m"] == 300.0
        finally:
            bed.close()
