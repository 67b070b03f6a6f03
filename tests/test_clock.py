"""The one clock: its three forms, the conversion to table time, the manual clock for tests,
and the rule that nobody else reads the system clock for protocol or table time."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from stktagg.clock import CLOCK_BASE_MS, Clock, ManualClock, table_ms
from stktagg.loop import Reactor

PACKAGE = Path(__file__).resolve().parents[1] / "stktagg"
#: Modules that may read the system clock, and why. Nothing else may.
CLOCK_READERS = {
    "clock": "the one clock: its default sources",
    "loop": "the Reactor's default clock argument, and run_until's real-time deadline (tests)",
    "workers": "a worker's wake-up pacing in its own thread (not protocol or table time)",
}


class TestTableMilliseconds:
    def test_the_origin_is_the_clock_base(self) -> None:
        assert table_ms(0.0) == CLOCK_BASE_MS == 1 << 36

    @pytest.mark.parametrize("seconds, ms", [(1.0, 1000), (1.2345, 1234), (0.0019, 1), (86_400.5, 86_400_500)])
    def test_seconds_become_truncated_milliseconds_above_the_base(self, seconds: float, ms: int) -> None:
        assert table_ms(seconds) == CLOCK_BASE_MS + ms

    def test_now_minus_the_largest_age_a_peer_can_announce_stays_positive(self) -> None:
        # A machine booted a moment ago: a 32-bit age in ms must not go below the origin.
        assert table_ms(0.001) - (2**32 - 1) > 0

    def test_table_time_never_goes_back_as_seconds_grow(self) -> None:
        instants = [i * 0.0007 for i in range(5000)]
        converted = [table_ms(t) for t in instants]
        assert converted == sorted(converted)


class TestClock:
    def test_reads_come_from_the_injected_sources(self) -> None:
        clock = Clock(monotonic=lambda: 12.5, wall=lambda: 1_000_000_000.25)
        assert clock.now() == 12.5
        assert clock.now_ms() == table_ms(12.5) == CLOCK_BASE_MS + 12_500
        assert clock.wall() == 1_000_000_000.25

    def test_the_default_clock_is_monotonic_and_its_table_form_agrees(self) -> None:
        clock = Clock()
        first, ms, second = clock.now(), clock.now_ms(), clock.now()
        assert first <= second and table_ms(first) <= ms <= table_ms(second)


class TestManualClock:
    def test_moves_only_when_told_and_wall_time_moves_with_it(self) -> None:
        clock = ManualClock(start=50.0, wall_start=2_000_000_000.0)
        assert (clock.now(), clock.wall()) == (50.0, 2_000_000_000.0)
        clock.advance(1.5)
        assert (clock.now(), clock.wall(), clock.now_ms()) == (51.5, 2_000_000_001.5, CLOCK_BASE_MS + 51_500)

    def test_refuses_to_go_back(self) -> None:
        with pytest.raises(ValueError):
            ManualClock().advance(-0.1)

    def test_drives_the_reactor_timers(self) -> None:
        clock = ManualClock()
        reactor = Reactor(clock=clock.now)
        try:
            fired: list[float] = []
            reactor.call_later(2.0, lambda: fired.append(clock.now()))
            reactor.run_once(0)
            assert fired == []
            clock.advance(2.0)
            reactor.run_once(0)
            assert fired == [1002.0]
        finally:
            reactor.close()


def _clock_reads(path: Path) -> list[str]:
    """``time.monotonic``/``time.time`` (and their ``_ns`` forms) a module reads or imports."""
    names = {"monotonic", "time", "monotonic_ns", "time_ns"}
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (isinstance(node, ast.Attribute) and node.attr in names and isinstance(node.value, ast.Name)
                and node.value.id == "time"):
            found.append(f"time.{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module == "time":
            found += [f"from time import {a.name}" for a in node.names if a.name in names]
    return found


def test_only_the_clock_reads_the_system_clock() -> None:
    readers = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = path.relative_to(PACKAGE).with_suffix("").as_posix().replace("/", ".")
        reads = _clock_reads(path)
        if reads and module not in CLOCK_READERS:
            readers[module] = reads
    assert readers == {}, "read the system clock; take a clock.Clock (or `now`) instead"
