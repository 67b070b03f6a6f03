"""Push rounds: each changed aggregate sent once to every peer that takes its table.

Imports ``aggregation``, ``clock``, ``loop``, ``registry`` and ``table``. Runs in the I/O thread, except ``wake``.

Workers mark changed keys dirty in their stripes and call ``wake`` once per
burst (from their threads). A round is then scheduled in the loop: at once
after a quiet spell, else ``PUSH_INTERVAL`` after the previous one, so that
under load each round carries more keys (fewer, larger writes; a key changed
several times goes out once). A round takes each stripe's dirty keys, has
their aggregates encoded once per table, and hands them to every established
link of the section that is sent the table. It takes ``PUSH_CHUNK`` keys of
a stripe at a time, stops after ``PUSH_BUDGET`` keys or ``PUSH_TIME_BUDGET``
seconds and goes on at the next loop turn, after reads, timers and
heartbeats, starting with the next table: a huge backlog (a whole table
after a restart, a million expiries at once) never blocks the loop for
long. After a round, ``after_round`` runs (the backpressure's release).
``TableClear`` sends a cleared table's zeros through the same path.
"""

from __future__ import annotations

from collections.abc import Callable

from .aggregation import Section
from .clock import Clock, table_ms
from .loop import Reactor
from .registry import LinkRegistry
from .table import AggTable

__all__ = ["PUSH_BUDGET", "PUSH_CHUNK", "PUSH_INTERVAL", "PUSH_TIME_BUDGET", "PushScheduler", "TableClear"]

#: Keys pushed per loop turn at most: the rest goes on at the next turn, after
#: reads, timers and heartbeats...
PUSH_BUDGET = 20_000
#: ...and clock seconds per loop turn at most (issue 14: 20,000 keys took about
#: 100 ms on a shared two-core machine; the round stops after this instead).
PUSH_TIME_BUDGET = 0.020
#: Keys taken from a stripe at once: the unit of a round, checked against the budgets.
PUSH_CHUNK = 250
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
        """Push changed aggregates, at most PUSH_BUDGET keys or PUSH_TIME_BUDGET in this loop turn."""
        self._pending = False
        now = self._last = self._clock.now()
        ms = table_ms(now)
        budget = PUSH_BUDGET
        for section, table in self._tables_in_turn():
            for stripe in range(len(table.stripes)):
                while budget > 0:
                    changed = table.take_dirty(stripe, ms, PUSH_CHUNK)
                    if not changed:
                        break
                    self.push(section, table, changed, now)
                    budget -= len(changed)
                    if self._clock.now() - now >= PUSH_TIME_BUDGET:
                        budget = 0
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


class TableClear:
    """The pushes of a ``clear table`` of a whole table (a ``slices.SliceJob``).

    The entries are already gone (``AggTable.clear_all`` handed over each
    stripe's old entries). Each step takes a part of one stripe's old keys
    and pushes them as zeros expiring at once, through the push rounds' path
    (``PushScheduler.push``: encoded once for every receiver; a slow peer
    parks them), except those created again since: their new aggregate is
    pushed as any change is, and must not be overwritten by zeros.
    """

    def __init__(self, pushes: PushScheduler, section: Section, table: AggTable, detached: list[dict]) -> None:
        self.pushes = pushes
        self.section = section
        self.table = table
        self.cancelled = False
        self._detached = detached  #: per stripe, its entries when the table was cleared
        self._stripe = 0

    def ready(self) -> bool:
        return True

    def step(self, now: float, keys: int) -> bool:
        while self._stripe < len(self._detached) and not self._detached[self._stripe]:
            self._detached[self._stripe] = {}  # free the emptied dict
            self._stripe += 1
        if self._stripe >= len(self._detached):
            return True
        old = self._detached[self._stripe]
        part = [old.popitem()[0] for _ in range(min(keys, len(old)))]
        cleared = self.table.missing(self._stripe, part)
        if cleared:
            empty, expire_at = self.table.empty(), table_ms(now) + 1
            self.pushes.push(self.section, self.table, [(k, empty, expire_at) for k in cleared], now)
        return False
