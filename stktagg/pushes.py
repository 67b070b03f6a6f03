"""Push rounds: each changed aggregate sent once to every peer that takes its table.

Imports ``aggregation``, ``clock``, ``loop``, ``registry`` and ``table``. Runs in the I/O thread, except ``wake``.

Workers mark changed keys dirty in their stripes and call ``wake`` once per
burst (from their threads). A round is then scheduled in the loop: at once
after a quiet spell, else ``PUSH_INTERVAL`` after the previous one, so that
under load each round carries more keys (fewer, larger writes; a key changed
several times goes out once). A round takes each stripe's dirty keys, has
their aggregates encoded once per table, and hands them to every established
link of the section that is sent the table. It stops after ``PUSH_BUDGET``
keys (never cutting a stripe) and goes on at the next loop turn, after
reads, timers and heartbeats, starting with the next table: a huge backlog
never blocks the loop for long. After a round, ``after_round`` runs (the
backpressure's release).
"""

from __future__ import annotations

from collections.abc import Callable

from .aggregation import Section
from .clock import Clock, table_ms
from .loop import Reactor
from .registry import LinkRegistry
from .table import AggTable

__all__ = ["PUSH_BUDGET", "PUSH_INTERVAL", "PushScheduler"]

#: Keys pushed per loop turn at most (a stripe is never cut): the rest goes on
#: at the next turn, after reads, timers and heartbeats.
PUSH_BUDGET = 20_000
#: Push rounds are at least this far apart (s); the first after a quiet spell goes at once.
PUSH_INTERVAL = 0.005


class PushScheduler:
    """Schedules and runs push rounds (see the module docstring)."""

    def __init__(self, reactor: Reactor, clock: Clock, sections: list[Section], registry: LinkRegistry,
                 after_round: Callable[[], None]) -> None:
        self._reactor = reactor
        self._clock = clock
        self._sections = sections
        self._registry = registry
        self._after_round = after_round
        self._pending = False  #: a round is scheduled
        self._last = 0.0  #: clock time of the last round
        self._cursor = 0

    def wake(self) -> None:
        """Called by worker threads: schedule one push round in the loop.

        Nothing to do when a round is already pending: it reads the dirty
        keys when it runs, so it includes what the worker just applied. (A
        plain read of a flag another thread writes; a stale False only costs
        one needless wake-up.)
        """
        if not self._pending:
            self._reactor.call_soon_threadsafe(self._schedule)

    def _schedule(self) -> None:
        """A push round soon: at once after a quiet spell, else PUSH_INTERVAL after the last one."""
        if not self._pending:
            self._pending = True
            delay = self._last + PUSH_INTERVAL - self._clock.now()
            if delay > 0:
                self._reactor.call_later(delay, self.round)
            else:
                self._reactor.call_soon(self.round)

    def round(self) -> None:
        """Push changed aggregates, at most PUSH_BUDGET keys in this loop turn."""
        self._pending = False
        now = self._last = self._clock.now()
        ms = table_ms(now)
        budget = PUSH_BUDGET
        for section, table in self._tables_in_turn():
            for stripe in range(len(table.stripes)):
                changed = table.take_dirty(stripe, ms)
                if changed:
                    self.push(section, table, changed, now)
                    budget -= len(changed)
                if budget <= 0:
                    self._schedule()
                    self._after_round()
                    return
        self._after_round()

    def push(self, section: Section, table: AggTable, changed: list, now: float) -> None:
        """Send changed keys ``(key, values, expire_at)`` to every established peer that takes
        ``table``, encoded once."""
        receivers = [link for (name, _), link in self._registry.established.items()
                     if name == section.name and link.is_established() and section.sends(table, link.peer)]
        if receivers:
            batch = section.encode_changes(table, changed, now)
            for link in receivers:
                link.push(table, changed, now, batch)

    def _tables_in_turn(self) -> list[tuple[Section, AggTable]]:
        """Every (section, table), starting after the one a cut-short round ended with."""
        pairs = [(section, table) for section in self._sections for table in list(section.tables.values())]
        if pairs:
            self._cursor = (self._cursor + 1) % len(pairs)
            pairs = pairs[self._cursor:] + pairs[: self._cursor]
        return pairs
