"""What the CLI and the metrics may see of the server, and what they may ask of it.

Imports ``clock`` (for the interface's type), ``config`` (peer roles),
``session`` (session states), ``table`` (table modes, entries), and
``schema`` and ``wire`` for types.

The server publishes a ``Status``: plain frozen objects copied from its
state in the I/O thread at one moment — the sections, their peers (state,
address, TLS, last hello, traffic over every session, last error, the update
ids of each table sent) and their tables (counts, and read access to the
entries through the table's own locked reads). Readers (``cli``,
``metrics``) render a ``Status`` and never touch links, sessions or the
server. What changes state is a command object (``ClearTable``) handed to
``Commands``, which the server implements.

Times in a ``Status``: ``started_at`` is in clock seconds (``clock.Clock.now``),
``started_wall`` and ``PeerStatus.last_hello`` are wall times for display.
"""

from __future__ import annotations

import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from .clock import Clock
from .config import PeerRole
from .schema import Field
from .session import State
from .table import AggTable, TableMode
from .wire import TableDefinition

__all__ = [
    "ClearTable", "Commands", "LoopStats", "PeerStatus", "SectionStatus", "SentTable", "Status", "StatusSource",
    "TableStatus", "Traffic",
]

_NOTHING_SENT: Mapping[bytes, "SentTable"] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Traffic:
    """A peer's traffic over all its sessions (ended ones and the current one): never goes back."""

    messages_in: int = 0
    messages_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    updates_in: int = 0
    updates_out: int = 0
    heartbeats_in: int = 0
    heartbeats_out: int = 0


@dataclass(frozen=True, slots=True)
class SentTable:
    """One of our tables as the current session sends it: the last update ids."""

    last_pushed: int = 0  #: the last update id sent
    last_acked: int = 0  #: the last update id the peer acknowledged


@dataclass(frozen=True, slots=True)
class PeerStatus:
    """One remote peer of a section, and its current session if it has one."""

    name: str
    index: int  #: the peer's index in its section (the records in the tables are keyed by it)
    role: PeerRole
    address: str  #: the session's address, else the declared one
    state: State | None = None  #: the current session's state; None: no session
    synced: bool = False  #: the peer taught us after our resync request
    tls: bool = False
    last_hello: float | None = None  #: wall time of the last session established, if any
    last_error: str = ""  #: why the last session that failed was closed
    traffic: Traffic = Traffic()
    #: updates received from the peer and sent to it per second, over the last second (None: not known)
    updates_in_per_s: int | None = None
    updates_out_per_s: int | None = None
    #: per table name, the current session's update ids
    sent: Mapping[bytes, SentTable] = field(default_factory=lambda: _NOTHING_SENT)

    @property
    def connected(self) -> bool:
        """There is a session (in any state, until its connection is gone)."""
        return self.state is not None

    @property
    def established(self) -> bool:
        return self.state is State.ESTABLISHED


@dataclass(frozen=True, slots=True)
class TableStatus:
    """One output table of a section: its counts now, and read access to its entries."""

    name: bytes
    mode: TableMode
    source: bytes  #: the table aggregated into this one (empty for a forwarded table)
    expire_ms: int
    entries: int  #: keys in the table (approximate while the workers write)
    changes: int  #: peer updates applied
    dropped: int  #: new keys dropped because the table was full
    table: AggTable  #: read only through the methods below

    @property
    def definition(self) -> TableDefinition:
        """The table's definition (key type and length, data types)."""
        return self.table.definition

    @property
    def fields(self) -> tuple[Field, ...]:
        return self.table.fields

    def rows(self, now_ms: int, key: bytes | None = None) -> list[tuple[bytes, tuple | None, int, dict]]:
        """``(key, aggregate or None, its expiry, {peer index: (values, expire_at, received_at)})``.

        Every key, or only ``key``; values at the table time ``now_ms``. Each
        stripe is read under its lock; not atomic across stripes. For a large
        table, read it a part at a time instead (``batches`` and ``read``).
        """
        table = self.table
        if key is not None:
            found = table.lookup(key, now_ms)
            return [] if found is None else [(key, *found)]
        return [row for stripe, keys in self.batches(len(table)) for row in self.read(stripe, keys, now_ms)]

    def batches(self, size: int) -> Iterator[tuple[int, list[bytes]]]:
        """The table's keys as ``(stripe, at most size keys of it)``, stripe after stripe.

        Lazy: a stripe's keys are copied (under its lock) when the iteration
        reaches it, so the only copy held is one stripe's key list. A key
        added to a stripe after that is not seen.
        """
        size = max(1, size)
        for stripe in range(len(self.table.stripes)):
            keys = self.table.stripe_keys(stripe)
            for start in range(0, len(keys), size):
                yield stripe, keys[start:start + size]

    def read(self, stripe: int, keys: list[bytes], now_ms: int) -> list[tuple[bytes, tuple | None, int, dict]]:
        """``rows`` of those of ``keys`` (a batch of ``stripe``) still in the table: one read under its lock."""
        return self.table.read_keys(stripe, keys, now_ms)

    def column(self, stripe: int, keys: list[bytes], now_ms: int,
               column: tuple[int, int] | None) -> list[tuple[bytes, object, int]]:
        """``(key, the aggregate's wire value of column = (field, element), its expiry)`` of those
        of ``keys`` (a batch of ``stripe``) still in the table: one value per key, for a scan
        of every key (None without a live entry, or with ``column`` None)."""
        return self.table.read_column(stripe, keys, now_ms, column)

    def empty(self) -> tuple:
        """Wire values of an entry nobody contributed to."""
        return self.table.empty()


@dataclass(frozen=True, slots=True)
class SectionStatus:
    """One ``aggregations`` section: its remote peers (in index order) and its tables."""

    name: str
    peers: tuple[PeerStatus, ...]
    tables: tuple[TableStatus, ...]

    def table(self, name: bytes) -> TableStatus | None:
        return next((t for t in self.tables if t.name == name), None)


@dataclass(frozen=True, slots=True)
class LoopStats:
    """How long the event loop's turns take (running callbacks, not waiting in select).

    ``counts`` and ``recent_counts`` are turns per bucket, not cumulative:
    bucket ``i`` holds the turns up to ``bounds[i]`` seconds (and over the
    bound before it); the last one, past every bound, is +Inf.
    """

    bounds: tuple[float, ...] = ()  #: the buckets' upper bounds (s)
    counts: tuple[int, ...] = ()  #: turns per bucket since the start
    turns: int = 0  #: turns since the start
    seconds: float = 0.0  #: their total duration
    longest: float = 0.0  #: the longest turn since the start (s)
    recent_counts: tuple[int, ...] = ()  #: turns per bucket over the last minute
    recent_longest: float = 0.0  #: the longest turn of the last minute (s)
    recent_slowest: str = ""  #: the slowest callback of that turn


@dataclass(frozen=True, slots=True)
class HistoryLineStatus:
    """One ``history`` line at work: its settings, and what its sampling and statistics did."""

    section: str
    source: str  #: the source suffix (``.aggr``)
    target: str  #: the history tables' suffix (``.yday``)
    stat: str
    window_ms: int
    offset_ms: int
    resolution_ms: int
    retention: int  #: buckets kept (the longest ``offset + window`` of its series, and one)
    buckets: int  #: buckets sampled (shared with the lines of the same source and resolution)
    buckets_skipped: int  #: buckets not sampled (the previous one was still being sampled)
    samples: int  #: samples written
    computed: int  #: statistics computations done
    computed_skipped: int  #: computations skipped (the previous one was not done)
    last_keys: int  #: keys the last computation gave
    last_seconds: float  #: how long it took
    #: ``read(source table, key)``: that key's stored samples ``(bucket, values)``, oldest first
    read: typing.Callable[[bytes, bytes], list] = field(compare=False, repr=False, default=lambda t, k: [])


@dataclass(frozen=True, slots=True)
class HistoryStatus:
    """The history file and its lines."""

    path: str
    lines: tuple[HistoryLineStatus, ...]
    errors: int  #: the file's failed operations
    last_error: str

    def line(self, section: str, target: str) -> HistoryLineStatus | None:
        return next((line for line in self.lines if line.section == section and line.target == target), None)


@dataclass(frozen=True, slots=True)
class Status:
    """The whole process at one moment (see the module docstring)."""

    sections: tuple[SectionStatus, ...]
    pid: int
    started_at: float  #: clock seconds
    started_wall: float  #: wall time
    updates_in: int  #: updates received from peers
    updates_out: int  #: aggregate updates sent to peers
    #: updates received and pushed per second, over the last second and minute (None: not yet known)
    rates: Mapping[str, int | None] = field(default_factory=lambda: MappingProxyType({}))
    loop: LoopStats = field(default_factory=lambda: LoopStats())  #: the event loop's own figures
    history: HistoryStatus | None = None  #: the history lines (None: no ``history-file``)
    #: ``(clock time, updates received/s, pushed/s)`` of each second of the last five minutes
    trend: tuple[tuple[float, int, int], ...] = ()

    def section(self, name: str) -> SectionStatus | None:
        return next((s for s in self.sections if s.name == name), None)


@dataclass(frozen=True, slots=True)
class ClearTable:
    """Forget a table's entries (all of them, or one key) and clear the nodes' aggregates of them."""

    section: str
    table: bytes
    key: bytes | None = None


class Commands(typing.Protocol):
    """What the CLI may ask the server to change."""

    def clear_table(self, command: ClearTable) -> int:
        """Run ``command``; returns the number of entries cleared."""
        ...


class StatusSource(Commands, typing.Protocol):
    """What a CLI or metrics connection gets: fresh snapshots, the clock, the commands."""

    clock: Clock

    def status(self) -> Status:
        """A snapshot of the process now."""
        ...
