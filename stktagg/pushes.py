"""Push rounds: each changed aggregate sent once to every peer that takes its table.

Imports ``aggregation``, ``clock``, ``loop``, ``registry`` and ``table``. Runs in the I/O thread, except ``wake``.

Workers mark changed keys dirty in their stripes and call ``wake`` once per
burst (from their threads). A round is then scheduled in the loop: at once
after a quiet spell, else ``PUSH_INTERVAL`` after the previous one, so that
under load each round carries more keys (fewer, larger writes; a key changed
several times goes out once). A round takes each stripe's dirty keys, has
their aggregates encoded once per table, and hands them to every established
link of the section that is sent the table. It takes ``STRIPE_TURN`` keys of
a stripe at a time, stops after ``PUSH_BUDGET`` keys or ``PUSH_TIME_BUDGET``
seconds and goes on at the next loop turn, after reads, timers and
heartbeats, starting with the next table: a huge backlog (a whole table
after a restart, a million expiries at once) never blocks the loop for
long. After a round, ``after_round(backlog)`` runs (the backpressure's
release and read pacing; ``backlog``: the peers' changes left for later).
``TableClear`` sends a cleared table's zeros through the same path.
"""

from __future__ import annotations

from collections.abc import Callable

from .aggregation import Section
from .clock import Clock, table_ms
from .loop import Reactor
from .registry import LinkRegistry
from .table import AggTable, TableMode
from .wire import UpdateBatch

__all__ = ["CATCH_UP_TIME_BUDGET", "DUE_SHARE", "PUSH_BUDGET", "PUSH_CHUNK", "PUSH_INTERVAL", "PUSH_TIME_BUDGET", "PushScheduler", "STRIPE_TURN", "TableClear"]

#: Keys pushed per loop turn at most: the rest goes on at the next turn, after
#: reads, timers and heartbeats...
PUSH_BUDGET = 20_000
#: ...and clock seconds per loop turn at most (issue 14: 20,000 keys took about
#: 100 ms on a shared two-core machine; the round stops after this instead).
PUSH_TIME_BUDGET = 0.020
#: ...or, while behind, as long as the rest of the loop took since the last round, up to this.
CATCH_UP_TIME_BUDGET = 0.050
#: Keys per push (encoded once, framed once per session), at most.
PUSH_CHUNK = 250
#: Keys taken from one stripe in its turn of a round (checked against the budgets).
STRIPE_TURN = 64
#: The part of a turn's budgets kept for keys due on their own (expiries, rate
#: periods ended) while peers' changes wait too.
DUE_SHARE = 0.25
#: Push rounds are at least this far apart (s); the first after a quiet spell goes at once.
PUSH_INTERVAL = 0.005


class PushScheduler:
    """Schedules and runs push rounds (see the module docstring)."""

    def __init__(self, reactor: Reactor, clock: Clock, sections: list[Section], registry: LinkRegistry,
                 after_round: Callable[[int], None]) -> None:
        self._reactor = reactor
        self._clock = clock
        self._sections = sections
        self._registry = registry
        self._after_round = after_round
        self._pending = False  #: a round is scheduled
        self._last = 0.0  #: clock time of the last round
        self._ended = 0.0  #: clock time the last round ended
        self._behind = False  #: the last round left peers' changes for later
        self._cursor = 0
        self._stripe_start = 0

    def wake(self) -> None:
        """Called by worker threads: schedule one push round in the loop.

        Nothing to do when a round is already pending: it reads the dirty
        keys when it runs, so it includes what the worker just applied. (A
        plain read of a flag another thread writes; a stale False only costs
        one needless wake-up.)
        """
        if not self._pending:
            self._reactor.call_soon_threadsafe(self._schedule)

    def soon(self) -> None:
        """``wake`` for the loop's own thread: schedules the round without the self-pipe."""
        self._schedule()

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
        """Push changed aggregates, at most PUSH_BUDGET keys or PUSH_TIME_BUDGET in this loop turn.

        First the keys peers changed, then those due on their own (an entry
        expired, a rate period ended): a fresh change never waits behind a
        million due keys. The due keys get at least DUE_SHARE of the turn's
        budget, so that a flood of changes cannot hold them back for ever.
        Each round starts one stripe further on, so that a cut-short round
        does not always favour the first stripes.

        Behind (the previous round was cut short), a round may take as long
        as the loop spent on everything else since it (the reads, mostly), up
        to CATCH_UP_TIME_BUDGET: under load the turns then split evenly
        between reading and pushing, instead of long reads and 20 ms of
        pushes, which let the dirty keys pile up (issue 15).
        """
        self._pending = False
        now = self._last = self._clock.now()
        ms = table_ms(now)
        self._stripe_start += 1
        tables = self._tables_in_turn()
        seconds = PUSH_TIME_BUDGET
        if self._behind:
            seconds = min(CATCH_UP_TIME_BUDGET, max(seconds, now - self._ended))
        fresh_budget = PUSH_BUDGET - int(PUSH_BUDGET * DUE_SHARE)
        fresh_deadline = now + seconds * (1 - DUE_SHARE)
        used, cut = self._drain(tables, ms, now, fresh_budget, fresh_deadline, due=False)
        due_used, due_cut = self._drain(tables, ms, now, PUSH_BUDGET - used, now + seconds, due=True)
        self._behind = cut
        self._ended = self._clock.now()
        if cut or due_cut:
            self._schedule()
        self._after_round(sum(len(s.dirty) for _, t in tables for s in t.stripes) if cut else 0)

    def _drain(self, tables: list[tuple[Section, AggTable]], ms: int, now: float, budget: int,
               deadline: float, due: bool) -> tuple[int, bool]:
        """Push the dirty (or the due) keys of ``tables`` until ``budget`` keys or ``deadline``.

        The stripes are taken in turns, STRIPE_TURN keys each, oldest change
        first in each stripe: when a round cannot push everything, what it
        pushes is about the oldest changes of the whole table, so a key waits
        behind those changed before it, whichever its stripe (issue 15: with
        whole stripes in turn, a key of a stripe the rounds kept missing could
        wait for ever under overload). The keys are gathered into pushes of up
        to PUSH_CHUNK keys: at low rates a round finds a key or two in each of
        a few stripes, and one push per stripe meant one encoding and one
        write per session for each of them (0.86 pushes per update at 1,000
        updates/s). Stripes with nothing to take are skipped without their
        lock. Returns the keys taken and whether some were left for the next
        turn.
        """
        used = 0
        for section, table in tables:
            stripes, count = table.stripes, len(table.stripes)
            if table.mode is TableMode.HISTORY and not self._receivers(section, table):
                table.forget_pending()  # nobody declared it: a peer that does later gets it whole
                continue
            # Only the stripes with something to take (a round at a low rate
            # finds a key or two), starting one further on at each round.
            turn = [i % count for i in range(self._stripe_start, self._stripe_start + count)
                    if (stripes[i % count].due if due else stripes[i % count].dirty)]
            if not turn:
                continue
            gathered = _Gathered(table.encodes_itself)
            while turn:
                again = []
                for stripe in turn:
                    if used >= budget or self._clock.now() >= deadline:
                        self._flush(section, table, gathered, now)
                        return used, True
                    if not (stripes[stripe].due if due else stripes[stripe].dirty):
                        continue
                    used += gathered.take(table, stripe, ms, due)
                    if len(gathered.keys) >= PUSH_CHUNK:
                        self._flush(section, table, gathered, now)
                    again.append(stripe)
                turn = again
            self._flush(section, table, gathered, now)
        return used, False

    def _flush(self, section: Section, table: AggTable, gathered: "_Gathered", now: float) -> None:
        if gathered.keys:
            if gathered.bodies is not None:
                self.push_encoded(section, table, gathered.keys, gathered.bodies, now)
            else:
                self.push(section, table, gathered.keys, now)
            gathered.clear()

    def _receivers(self, section: Section, table: AggTable) -> list:
        return [link for (name, _), link in self._registry.established.items()
                if name == section.name and link.is_established() and section.sends(table, link.peer)
                and link.declares(table)]

    def push_encoded(self, section: Section, table: AggTable, keys: list[bytes], bodies: list, now: float) -> None:
        """Send keys whose update bodies are encoded (``AggTable.take_encoded``) to every
        established peer that takes ``table``."""
        receivers = self._receivers(section, table)
        if receivers:
            batch = UpdateBatch(bodies)
            for link in receivers:
                link.push_encoded(table, keys, now, batch)

    def push(self, section: Section, table: AggTable, changed: list, now: float) -> None:
        """Send changed keys ``(key, values, expire_at)`` to every established peer that takes
        ``table``, encoded once."""
        receivers = self._receivers(section, table)
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


class _Gathered:
    """The keys a round has taken for one push: ``(key, values, expire_at)`` items, or the
    keys and their encoded bodies for a table that encodes them itself."""

    def __init__(self, encoded: bool) -> None:
        self.keys: list = []
        self.bodies: list | None = [] if encoded else None

    def take(self, table: AggTable, stripe: int, ms: int, due: bool) -> int:
        if self.bodies is not None:
            keys, bodies = table.take_encoded(stripe, ms, STRIPE_TURN, due=due)
            self.bodies += bodies
        else:
            keys = table.take_dirty(stripe, ms, STRIPE_TURN, due=due)
        self.keys += keys
        return len(keys)

    def clear(self) -> None:
        self.keys = []
        if self.bodies is not None:
            self.bodies = []


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
