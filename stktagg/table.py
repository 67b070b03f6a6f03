"""The aggregator's tables: lock-striped, per key each peer's entry and the aggregate.

No I/O, no logging under a lock. Imports ``errors``, ``schema``, ``datatypes``
and ``wire`` (for the definition type only).

Locks. A table is cut into stripes by key hash; each stripe has one lock that
protects its ``entries`` dict, every ``Entry`` in it, and its ``dirty`` set.
Never hold two stripe locks at once. Worker threads own the stripes (worker
``i`` applies the updates of stripes ``s`` with ``s % workers == i``), so the
locks are contended only by the I/O thread's short reads (pushes, teaches,
the CLI). Methods whose names end in ``_locked`` are called with the stripe
lock held.

Times are integer milliseconds of the aggregator's monotonic clock.
"""

from __future__ import annotations

import enum
import heapq
import threading
from dataclasses import dataclass, field

from .datatypes import combine, empty_value, field_to_wire, wire_to_field_values
from .schema import Field
from .wire import TableDefinition

#: Stripes per table: enough that workers and the I/O thread rarely meet.
STRIPES = 16
#: Entries kept per table at most. A definition carries no table size, so the
#: bound is ours; when a table is full, expired entries make room (oldest
#: expiry first) and a new key that finds no room is dropped and counted.
MAX_ENTRIES = 2_000_000


class TableMode(enum.Enum):
    AGGREGATE = "aggregate"  #: sum the down peers' entries (the ``from`` rule)
    FORWARD = "forward"  #: latest entry from any up peer wins (the ``forward`` rule)


class Entry:
    """One key: each peer's latest entry and the aggregate derived from them."""

    __slots__ = ("contribs", "agg", "agg_expire", "deadline")

    def __init__(self) -> None:
        #: peer index -> (stored values, expire_at, received_at)
        self.contribs: dict[int, tuple[tuple, int, int]] = {}
        #: the aggregate in stored form, or None when no peer entry is live
        self.agg: tuple | None = None
        self.agg_expire = 0  #: when the aggregate expires (max of live expiries)
        self.deadline: int | None = None  #: next time the aggregate changes on its own


@dataclass(slots=True)
class Stripe:
    lock: threading.Lock = field(default_factory=threading.Lock)
    entries: dict[bytes, Entry] = field(default_factory=dict)
    dirty: set[bytes] = field(default_factory=set)  #: keys whose aggregate changed since the last push
    timers: list[tuple[int, bytes]] = field(default_factory=list)  #: heap of (deadline, key)
    changes: int = 0
    dropped: int = 0


class AggTable:
    """An output table: an aggregate of down peers' tables, or a forwarded table."""

    def __init__(
        self,
        definition: TableDefinition,
        mode: TableMode,
        *,
        stripes: int = STRIPES,
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        self.definition = definition
        self.name = definition.name
        self.mode = mode
        self.fields: tuple[Field, ...] = definition.codec.fields
        self.expire_ms = definition.expire or 0
        self.stripes = [Stripe() for _ in range(stripes)]
        self._per_stripe_max = max(1, max_entries // stripes)

    def stripe_of(self, key: bytes) -> int:
        return hash(key) % len(self.stripes)

    # -- writes (worker threads) ----------------------------------------------------

    def apply(self, stripe_index: int, peer: int, in_fields: tuple[Field, ...], items: list, now: int) -> None:
        """Store one peer's updates of keys that all belong to ``stripe_index``.

        ``items`` are ``(key, values, expire)`` with values in the peer's
        layout (``in_fields``) and wire form; ``expire`` is the remaining ms of
        a timed update, or None for a live one (the table's expire applies).
        """
        stripe = self.stripes[stripe_index]
        with stripe.lock:
            for key, values, expire in items:
                self._apply_locked(stripe, peer, key, in_fields, values, expire, now)

    def _apply_locked(self, stripe: Stripe, peer: int, key: bytes, in_fields, values, expire, now: int) -> None:
        entry = stripe.entries.get(key)
        if entry is None:
            if len(stripe.entries) >= self._per_stripe_max and not self._evict_locked(stripe, now):
                stripe.dropped += 1
                return
            entry = stripe.entries[key] = Entry()
        stored = wire_to_field_values(in_fields, self.fields, values, now)
        lifetime = self.expire_ms if expire is None else (min(expire, self.expire_ms) if self.expire_ms else expire)
        entry.contribs[peer] = (stored, now + lifetime, now)
        self._recompute_locked(stripe, key, entry, now)

    def _recompute_locked(self, stripe: Stripe, key: bytes, entry: Entry, now: int) -> None:
        live = [c for c in entry.contribs.values() if c[1] > now]
        if not live:
            changed = entry.agg is not None
            entry.agg, entry.deadline = None, None
        else:
            if self.mode is TableMode.FORWARD:
                latest = max(live, key=lambda c: c[2])
                agg, deadline = latest[0], None
            else:
                live.sort(key=lambda c: c[2], reverse=True)
                wire, deadline = combine(self.fields, [c[0] for c in live], [c[0] for c in live], now)
                agg = _wire_to_stored(self.fields, wire, now)
            changed = agg != entry.agg or max(c[1] for c in live) != entry.agg_expire
            entry.agg = agg
            entry.agg_expire = max(c[1] for c in live)
            next_expiry = min(c[1] for c in live)
            entry.deadline = next_expiry if deadline is None else min(deadline, next_expiry)
        if entry.deadline is not None:
            heapq.heappush(stripe.timers, (entry.deadline, key))
        if changed:
            stripe.dirty.add(key)
            stripe.changes += 1

    def _evict_locked(self, stripe: Stripe, now: int) -> bool:
        oldest_key, oldest = None, None
        for key, entry in stripe.entries.items():
            if entry.agg is None or entry.agg_expire <= now:
                if oldest is None or entry.agg_expire < oldest:
                    oldest_key, oldest = key, entry.agg_expire
        if oldest_key is None:
            return False
        del stripe.entries[oldest_key]
        stripe.dirty.discard(oldest_key)
        return True

    def refresh(self, stripe_index: int, now: int) -> None:
        """Recompute the keys whose aggregate changes on its own by ``now``.

        That is a contribution expiring, or a rate reaching the end of its
        aligned period, after which it must be pushed again (datatypes).
        """
        stripe = self.stripes[stripe_index]
        with stripe.lock:
            timers = stripe.timers
            while timers and timers[0][0] <= now:
                due, key = heapq.heappop(timers)
                entry = stripe.entries.get(key)
                if entry is not None and entry.deadline == due:
                    self._recompute_locked(stripe, key, entry, now)

    # -- reads (I/O thread) ----------------------------------------------------------

    def take_dirty(self, stripe_index: int) -> list[tuple[bytes, tuple, int]]:
        """The changed keys of a stripe since the last call, with their aggregate and expiry."""
        stripe = self.stripes[stripe_index]
        with stripe.lock:
            if not stripe.dirty:
                return []
            dirty, stripe.dirty = stripe.dirty, set()
            entries = stripe.entries
            return [(k, e.agg, e.agg_expire) for k in dirty if (e := entries.get(k)) is not None and e.agg is not None]

    def snapshot(self, stripe_index: int) -> list[tuple[bytes, tuple | None, int, dict]]:
        """(key, aggregate, expiry, contributions) of every entry of a stripe.

        A copy taken under the stripe's lock; not atomic across stripes.
        """
        stripe = self.stripes[stripe_index]
        with stripe.lock:
            return [(k, e.agg, e.agg_expire, dict(e.contribs)) for k, e in stripe.entries.items()]

    def lookup(self, key: bytes) -> tuple[tuple | None, int, dict] | None:
        stripe = self.stripes[self.stripe_of(key)]
        with stripe.lock:
            entry = stripe.entries.get(key)
            return None if entry is None else (entry.agg, entry.agg_expire, dict(entry.contribs))

    def __len__(self) -> int:
        """Entries in the table (approximate: not reliable while workers write)."""
        return sum(len(s.entries) for s in self.stripes)

    @property
    def changes(self) -> int:
        return sum(s.changes for s in self.stripes)

    @property
    def dropped(self) -> int:
        return sum(s.dropped for s in self.stripes)

    def to_wire(self, stored: tuple, now: int) -> tuple:
        """Stored values as the values of an update sent at ``now``."""
        return tuple(field_to_wire(f, v, now) for f, v in zip(self.fields, stored))

    def empty(self) -> tuple:
        return tuple(empty_value(f) for f in self.fields)


def _wire_to_stored(fields: tuple[Field, ...], wire: tuple, now: int) -> tuple:
    """The combined values (wire form, ages relative to ``now``) in stored form."""
    return wire_to_field_values(fields, fields, wire, now)
