"""The aggregator's tables: lock-striped, per key each peer's entry, flat in memory.

No I/O, no logging under a lock. Imports ``schema``, ``datatypes`` and
``wire`` (for the definition type only).

Locks. A table is cut into stripes by key hash; each stripe has one lock that
protects its ``entries`` dict, every entry array in it, its ``dirty`` set and
its timers. Never hold two stripe locks at once. Worker threads own the
stripes (worker ``i`` applies the updates of stripes ``s`` with
``s % workers == i``), so the locks are contended only by the I/O thread's
short reads (pushes, teaches, the CLI). Methods whose names end in
``_locked`` are called with the stripe lock held.

Memory. One key is one ``array('Q')`` (no per-peer or per-value objects):
``[deadline, record, record, ...]`` where a record is one peer's entry laid
out by ``Layout``: ``[peer << 48 | expire_at, received_at (only when needed),
slots of each field]``;
a counter or tag takes one slot, a frequency counter three (its period's
start on our clock, curr, prev). A server key, the only non-integer type, is
kept in a side dict. Applying an update only writes the peer's record and
marks the key dirty; the aggregate is computed when the key is pushed (once
per push round, however many updates came in between).

Times are integer milliseconds in the tables' form of the process's one clock
(``clock.table_ms``: monotonic milliseconds plus ``clock.CLOCK_BASE_MS``),
always passed in as ``now``: nothing here reads a clock.
"""

from __future__ import annotations

import enum
import heapq
import threading
from array import array
from collections import deque
from dataclasses import dataclass, field
from itertools import islice

from .collector import untracked
from .datatypes import U32_MAX, U64_MAX, align_sum, freq_from_wire, freq_to_wire
from .hotpath import EXPIRE_MASK, PEER_SHIFT, TIMER_SLICE, gen_apply, gen_collect, gen_combine, gen_pack
from .schema import Combine, Field, KeyType, StdType
from .wire import TableDefinition

#: Stripes per table: enough that workers and the I/O thread rarely meet.
STRIPES = 16
#: Entries kept per table at most. A definition carries no table size, so the
#: bound is ours; when a table is full, expired entries make room (oldest
#: expiry first) and a new key that finds no room is dropped and counted.
MAX_ENTRIES = 2_000_000
#: Timer items one ``refresh`` call of a stripe looks at, at most (issue 14):
#: under a millisecond under the lock; 16 stripes take 16,000 per tick.
REFRESH_BUDGET = 1_000
#: The expiry index (see ``_evict_locked``) files each key in a bucket of
#: 1/EXPIRY_BUCKETS of the table's expire (at least TIMER_SLICE ms).
EXPIRY_BUCKETS = 32
#: Index items an insertion into a full stripe may re-file before it gives up
#: (the new key is then dropped): bounds the work under the lock.
EVICT_BUDGET = 16
#: The life of an entry of a table without expire: 2**31 - 1 ms (24.8 days), the
#: largest expiry a timed update carries (HAProxy's own bound on expire too).
NO_EXPIRE_LIFETIME = (1 << 31) - 1
_NO_SERVER = object()


class TableMode(enum.Enum):
    AGGREGATE = "aggregate"  #: sum the down peers' entries (the ``from`` rule)
    FORWARD = "forward"  #: latest entry from any up peer wins (the ``forward`` rule)
    #: a ``history`` line's statistics (issue 18): one record per key, written by the
    #: history sampler under ``HISTORY_PEER``; its rates hold their value (``_steady_locked``)
    HISTORY = "history"


#: A history table's rates are pushed again this long before their period ends (``_steady_locked``).
REPUSH_EARLY = 3 * TIMER_SLICE
#: The peer index a history table's records are written under (no peer has it: a
#: section's peers are numbered from 0, far below).
HISTORY_PEER = (1 << 16) - 1


class Layout:
    """Where each field's values sit in a peer record, and how they combine."""

    def __init__(self, fields: tuple[Field, ...], keep_received: bool = True) -> None:
        self.fields = fields
        #: The receive time is kept only when something needs the latest entry
        #: (server ids and keys, forwarded tables): 8 bytes per peer and key.
        self.keep_received = keep_received or any(f.info.combine is Combine.LATEST for f in fields)
        #: per field: (first slot, elements, std type, combine, period)
        self.columns = []
        slot = 2 if self.keep_received else 1  # peer << 48 | expire_at[, received_at]
        for f in fields:
            width = 3 if f.info.std is StdType.FRQP else 1
            self.columns.append((slot, f.count, width, f.info.std, f.info.combine, f.period or 0, f.info.is_array))
            slot += width * f.count
        self.record = slot
        self.has_server_key = any(f.info.std is StdType.DICT for f in fields)
        #: generated fast forms (None: use the general methods)
        self.fast_combine = None if self.has_server_key else gen_combine(self)
        self.fast_pack = None if self.has_server_key else gen_pack(self)
        self.fast_apply = None if self.has_server_key else gen_apply(self)

    def describe(self) -> str:
        """The layout in words (names the generated code's file)."""
        names = ",".join(f.info.name + (f"({f.count})" if f.info.is_array else "") for f in self.fields)
        return f"fields {names or '-'}, record {self.record} slots"

    def pack(self, values: tuple, out: array, at: int, now: int, server_keys: dict, owner: tuple) -> None:
        """Write one peer's wire values into its record's field slots."""
        for (slot, count, width, std, _, period, is_array), value in zip(self.columns, values):
            elements = value if is_array else (value,)
            for i in range(count):
                v = elements[i] if i < len(elements) else None
                p = at + slot + i * width
                if std is StdType.FRQP:
                    kept = freq_from_wire(*v, now, period) if v is not None else None
                    out[p], out[p + 1], out[p + 2] = kept or (0, 0, 0)
                elif std is StdType.DICT:
                    if v is None:
                        server_keys.pop(owner + (i,), None)
                        out[p] = 0
                    else:
                        server_keys[owner + (i,)] = v
                        out[p] = 1
                elif std is StdType.SINT and v is not None and v < 0:
                    out[p] = v + (1 << 64)
                else:
                    out[p] = v or 0

    def unpack(self, arr: array, at: int, now: int, server_keys: dict, owner: tuple) -> tuple:
        """One peer's record as wire values at ``now`` (for the CLI and teaches)."""
        values = []
        for slot, count, width, std, _, period, is_array in self.columns:
            elements = []
            for i in range(count):
                p = at + slot + i * width
                if std is StdType.FRQP:
                    elements.append(freq_to_wire(arr[p], arr[p + 1], arr[p + 2], now, period))
                elif std is StdType.DICT:
                    elements.append(server_keys.get(owner + (i,)) if arr[p] else None)
                elif std is StdType.SINT and arr[p] >= 1 << 63:
                    elements.append(arr[p] - (1 << 64))
                else:
                    elements.append(arr[p])
            values.append(tuple(elements) if is_array else elements[0])
        return tuple(values)

    def combine(self, arr: array, live: list[int], now: int, server_keys: dict, key: bytes) -> tuple[tuple, int]:
        """The aggregate (wire values at ``now``) of the live records at offsets ``live``.

        Returns (values, the earliest end of an aligned rate period, or 0).
        """
        values = []
        deadline = 0
        latest = max(live, key=lambda at: arr[at + 1]) if live and self.keep_received else 0
        for slot, count, width, std, combine, period, is_array in self.columns:
            elements = []
            for i in range(count):
                off = slot + i * width
                if combine is Combine.SUM:
                    total = sum(arr[at + off] for at in live)
                    elements.append(min(total, U64_MAX if std is StdType.ULL else U32_MAX))
                elif combine is Combine.MAX:
                    elements.append(max((arr[at + off] for at in live), default=0))
                elif combine is Combine.LATEST:
                    elements.append(self._latest(arr, latest, off, std, server_keys, key, i))
                else:
                    wire, due = _sum_freq(arr, live, off, now, period)
                    elements.append(wire)
                    if due and (not deadline or due < deadline):
                        deadline = due
            values.append(tuple(elements) if is_array else elements[0])
        return tuple(values), deadline

    @staticmethod
    def _latest(arr: array, at: int, off: int, std: StdType, server_keys: dict, key: bytes, i: int) -> object:
        if std is StdType.DICT:
            return server_keys.get((key, arr[at] >> PEER_SHIFT, i)) if arr[at + off] else None
        value = arr[at + off]
        return value - (1 << 64) if std is StdType.SINT and value >= 1 << 63 else value


def _sum_freq(arr: array, live: list[int], off: int, now: int, period: int) -> tuple[tuple[int, int, int], int]:
    """Sum the peers' frequency counters at ``off`` (datatypes.align_sum)."""
    return align_sum([(arr[at + off], arr[at + off + 1], arr[at + off + 2]) for at in live], now, period)


@dataclass(slots=True)
class Stripe:
    lock: threading.Lock = field(default_factory=threading.Lock)
    entries: dict[bytes, array] = field(default_factory=dict)
    #: Keys to push: a peer changed them. A dict used as an ordered set: the
    #: oldest change is taken first (``take_dirty``), so under overload a
    #: key waits behind the keys changed before it, never for ever.
    dirty: dict[bytes, None] = field(default_factory=dict)
    #: Keys to push because their aggregate changed on its own (an entry
    #: expired, a rate's period ended): pushed after ``dirty`` (``take_dirty``).
    due: dict[bytes, None] = field(default_factory=dict)
    timers: dict[int, list[bytes]] = field(default_factory=dict)  #: time slice -> keys due then
    timer_order: list[int] = field(default_factory=list)  #: heap of the slices in ``timers``
    server_keys: dict = field(default_factory=dict)  #: (key, peer, element) -> server name bytes
    changes: int = 0
    dropped: int = 0
    #: The expiry index, for eviction when full: bucket number -> keys in
    #: filing order; ``expiry_order`` is a heap of the bucket numbers;
    #: ``indexed`` counts the keys in all buckets (stale ones included).
    expiry_index: dict[int, deque] = field(default_factory=dict)
    expiry_order: list[int] = field(default_factory=list)
    indexed: int = 0


class AggTable:
    """An output table: an aggregate of down peers' tables, a forwarded table, or a history table."""

    def __init__(self, definition: TableDefinition, mode: TableMode, *, stripes: int = STRIPES,
                 max_entries: int = MAX_ENTRIES) -> None:
        self.definition = definition
        self.name = definition.name
        self.mode = mode
        self.fields: tuple[Field, ...] = definition.codec.fields
        self.layout = Layout(self.fields, keep_received=mode is TableMode.FORWARD)
        self.expire_ms = definition.expire or 0
        #: How long a peer's entry lives after an update that gives no expiry of
        #: its own: the table's expire, or for a table without one (HAProxy then
        #: never expires its entries) the longest a timed update can say.
        self.lifetime_ms = self.expire_ms or NO_EXPIRE_LIFETIME
        if mode is TableMode.HISTORY:  # each entry gets its own life (the sampler's), whatever the expire
            self.lifetime_ms = NO_EXPIRE_LIFETIME
        self.stripes = [Stripe() for _ in range(stripes)]
        self._per_stripe_max = max(1, max_entries // stripes)
        self._bucket_ms = max(TIMER_SLICE, self.expire_ms // EXPIRY_BUCKETS)
        self._converters: dict[tuple[Field, ...], object] = {}
        self._blank = array("Q", bytes(8 * self.layout.record))
        #: take_encoded's aggregation and encoding in one generated loop (None: no fast form)
        self._collect = None
        if mode is TableMode.AGGREGATE and self.layout.fast_combine is not None:
            self._collect = gen_collect(self.layout, definition.key_type == KeyType.STRING, definition.key_len)

    def stripe_of(self, key: bytes) -> int:
        return hash(key) % len(self.stripes)

    # -- writes (worker threads) ----------------------------------------------------

    def apply(self, stripe_index: int, peer: int, in_fields: tuple[Field, ...], items: list, now: int) -> None:
        """Store one peer's updates of keys that all belong to ``stripe_index``.

        ``items`` are ``(key, values, expire)`` with values in the peer's
        layout (``in_fields``) and wire form; ``expire`` is the remaining ms of
        a timed update, or None for a live one (the table's expire applies).
        """
        convert = self._converter(in_fields)
        stripe = self.stripes[stripe_index]
        layout = self.layout
        if convert is None and layout.fast_apply is not None:
            with stripe.lock:
                layout.fast_apply(self, stripe, peer, items, now)
            return
        keep_received = layout.keep_received
        table_expire = self.lifetime_ms
        size = layout.record
        with stripe.lock:
            entries = stripe.entries
            dirty = stripe.dirty
            for key, values, expire in items:
                lifetime = table_expire if expire is None or expire > table_expire else expire
                arr = entries.get(key)
                if arr is None:
                    arr = self.new_entry_locked(stripe, key, now, lifetime)
                    if arr is None:
                        continue
                at = _find(arr, peer, size)
                if at < 0:
                    # A new array of the exact size: extend() would over-allocate.
                    at = len(arr)
                    arr = entries[key] = untracked(arr + self._blank)
                arr[at] = peer << PEER_SHIFT | (now + lifetime)
                if keep_received:
                    arr[at + 1] = now
                layout.pack(convert(values) if convert else values, arr, at, now, stripe.server_keys, (key, peer))
                dirty[key] = None
            stripe.changes += len(items)

    def new_entry_locked(self, stripe: Stripe, key: bytes, now: int, lifetime: int) -> array | None:
        """A new key's (empty) array, filed in the expiry index; None when the stripe is full
        and nothing in it has expired (the update is dropped and counted)."""
        entries = stripe.entries
        if len(entries) >= self._per_stripe_max and not self._evict_locked(stripe, now):
            stripe.dropped += 1
            return None
        arr = entries[key] = untracked(array("Q", (0,)))
        bucket = stripe.expiry_index.get((now + lifetime) // self._bucket_ms)
        if bucket is not None and stripe.indexed < 2 * len(entries) + 1024:
            bucket.append(key)  # _file_locked's common case, inlined
            stripe.indexed += 1
        else:
            self._file_locked(stripe, key, now + lifetime)
        return arr

    def _converter(self, in_fields: tuple[Field, ...]):
        """None when the peer's layout is ours; else a function mapping its values to ours."""
        if in_fields == self.fields:
            return None
        convert = self._converters.get(in_fields)
        if convert is None:
            position = {f.info.id: i for i, f in enumerate(in_fields)}
            picks = [(position.get(f.info.id), f) for f in self.fields]

            def convert(values, picks=picks):
                return tuple(
                    (values[i] if not f.info.is_array else tuple(values[i][: f.count]))
                    if i is not None else (() if f.info.is_array else None)
                    for i, f in picks
                )

            self._converters[in_fields] = convert
        return convert

    # -- the expiry index: eviction when full (issue 14) -------------------------------
    #
    # A full stripe must not be scanned for each new key (125k keys: 0.24 s
    # per key under the lock). Each key is filed once, when it is created, in
    # the bucket of the time its entry expires (``expire_at // _bucket_ms``,
    # buckets of 1/32 of the table's expire); updates do not move it, so the
    # hot path pays nothing. An insertion into a full stripe looks at the
    # front of the earliest bucket: a key gone (cleared) leaves the index, a
    # key updated since is re-filed under its new expiry, and a key whose
    # every entry has expired is evicted. Keys are filed in time order, so
    # that front is the oldest expiry (to within one bucket for re-filed keys
    # and timed updates of varying life): when it is live, nothing has
    # expired and the new key is dropped, in O(1). The index is kept by the
    # insertion path alone; ``clear`` leaves stale items, which are skipped
    # here and removed by ``_rebuild_index_locked``.

    def _file_locked(self, stripe: Stripe, key: bytes, expire_at: int) -> None:
        number = expire_at // self._bucket_ms
        bucket = stripe.expiry_index.get(number)
        if bucket is None:
            bucket = stripe.expiry_index[number] = deque()
            heapq.heappush(stripe.expiry_order, number)
        bucket.append(key)
        stripe.indexed += 1
        if stripe.indexed > 2 * len(stripe.entries) + 1024:
            self._rebuild_index_locked(stripe)

    def _evict_locked(self, stripe: Stripe, now: int) -> bool:
        """Evict the entry that expired first to make room; False when none has expired."""
        size, bucket_ms = self.layout.record, self._bucket_ms
        for _ in range(EVICT_BUDGET):
            order = stripe.expiry_order
            if not order or order[0] * bucket_ms > now:
                return False  # the earliest bucket starts after now
            number = order[0]
            bucket = stripe.expiry_index[number]
            key = bucket[0]
            arr = stripe.entries.get(key)
            expire_at = 0
            if arr is not None:
                expire_at = max(arr[at] & EXPIRE_MASK for at in range(1, len(arr), size))
                if expire_at > now and expire_at // bucket_ms == number:
                    return False  # the oldest filed entry is live, so is every other
            bucket.popleft()
            stripe.indexed -= 1
            if not bucket:
                del stripe.expiry_index[number]
                heapq.heappop(order)
            if arr is None:
                continue
            if expire_at <= now:
                self._forget_locked(stripe, key, arr)
                return True
            self._file_locked(stripe, key, expire_at)  # updated since it was filed
        return False

    def _forget_locked(self, stripe: Stripe, key: bytes, arr: array) -> None:
        del stripe.entries[key]
        stripe.dirty.pop(key, None)
        stripe.due.pop(key, None)
        if stripe.server_keys and self.layout.has_server_key:
            for at in range(1, len(arr), self.layout.record):
                peer = arr[at] >> PEER_SHIFT
                for _, count, _, std, *_ in self.layout.columns:
                    if std is StdType.DICT:
                        for element in range(count):
                            stripe.server_keys.pop((key, peer, element), None)

    def _rebuild_index_locked(self, stripe: Stripe) -> None:
        """Drop the items of keys gone or filed twice (left by ``clear``): O(n), amortised."""
        entries, seen = stripe.entries, set()
        index: dict[int, deque] = {}
        for number in sorted(stripe.expiry_index):
            kept = deque()
            for key in stripe.expiry_index[number]:
                if key in entries and key not in seen:
                    seen.add(key)
                    kept.append(key)
            if kept:
                index[number] = kept
        stripe.expiry_index = index
        stripe.expiry_order = sorted(index)  # a sorted list is a heap
        stripe.indexed = len(seen)

    def refresh(self, stripe_index: int, now: int, budget: int = REFRESH_BUDGET) -> bool:
        """Mark dirty the keys whose aggregate changes on its own by ``now``.

        That is a peer's entry expiring, or a rate reaching the end of its
        aligned period, after which it must be pushed again (datatypes). One
        call looks at ``budget`` timer items at most, earliest first, so that
        a million keys due at once cost many short calls (one per refresh
        tick), not one long hold of the lock (issue 14). Finding the due
        slices costs nothing per slice not due (a heap of them).

        Returns:
            True when items due by ``now`` remain for the next call.
        """
        stripe = self.stripes[stripe_index]
        with stripe.lock:
            timers, order = stripe.timers, stripe.timer_order
            entries, dirty, due = stripe.entries, stripe.dirty, stripe.due
            while order and order[0] <= now and budget > 0:
                bucket = timers[order[0]]
                if len(bucket) > budget:
                    keys = bucket[-budget:]
                    del bucket[-budget:]
                else:
                    keys = timers.pop(heapq.heappop(order))
                budget -= len(keys)
                for key in keys:
                    arr = entries.get(key)
                    if arr is not None and arr[0] and arr[0] <= now:
                        arr[0] = 0
                        if key not in dirty:
                            due[key] = None
            return bool(order) and order[0] <= now

    # -- reads (I/O thread) ----------------------------------------------------------

    def take_dirty(self, stripe_index: int, now: int, limit: int | None = None,
                   due: bool = False) -> list[tuple[bytes, tuple, int]]:
        """The keys to push since the last call: ``(key, aggregate values, expire_at)``.

        The keys a peer changed, or with ``due`` those whose aggregate changed
        on their own (``refresh``). The two are kept apart so that a push
        round can send what peers changed first: a million rate periods
        ending together, or a million entries expiring, must not make a
        fresh change wait behind them (issue 14).

        A key whose every peer entry has expired is not returned (HAProxy lets
        its copy expire at the same time). Schedules each key's next change.
        At most ``limit`` keys are taken (all when None); the others stay
        for the next call, so a push round can stop within a stripe.
        """
        stripe = self.stripes[stripe_index]
        with stripe.lock:
            out = []
            for key in self._take_keys_locked(stripe, limit, due):
                arr = stripe.entries.get(key)
                if arr is None:
                    continue
                found = self._aggregate_locked(stripe, key, arr, now)
                if found is not None:
                    out.append((key, found[0], found[1]))
            return out

    @property
    def encodes_itself(self) -> bool:
        """Whether ``take_encoded`` is available (an aggregated table without server keys)."""
        return self._collect is not None

    def take_encoded(self, stripe_index: int, now: int, limit: int | None = None,
                     due: bool = False) -> tuple[list[bytes], list[tuple[bytes, int]]]:
        """``take_dirty``, with each key's update body already encoded (``encodes_itself``):
        the keys, and ``(body, remaining ms)`` for each, one generated loop for all of them."""
        stripe = self.stripes[stripe_index]
        with stripe.lock:
            keys = self._take_keys_locked(stripe, limit, due)
            if not keys:
                return [], []
            return self._collect(stripe, keys, now, self.layout.record)

    def _take_keys_locked(self, stripe: Stripe, limit: int | None, due: bool):
        """Up to ``limit`` of the stripe's dirty (or due) keys, oldest first, taken out."""
        pending = stripe.due if due else stripe.dirty
        if not pending:
            return ()
        if limit is None or len(pending) <= limit:
            keys = pending
            if due:
                stripe.due = {}
            else:
                stripe.dirty = {}
        else:
            keys = list(islice(pending, limit))  # the oldest first
            for key in keys:
                del pending[key]
        if not due and stripe.due:
            forget = stripe.due.pop
            for key in keys:
                forget(key, None)  # pushed now: not again as due
        return keys

    def forget_pending(self) -> None:
        """Drop every stripe's dirty and due keys unpushed: a history table no peer takes
        (``pushes``). Their timers stay: a key due again later is dropped again, or pushed."""
        for stripe in self.stripes:
            if stripe.dirty or stripe.due:
                with stripe.lock:
                    stripe.dirty = {}
                    stripe.due = {}

    def _aggregate_locked(self, stripe: Stripe, key: bytes, arr: array, now: int) -> tuple[tuple, int] | None:
        size = self.layout.record
        fast = self.layout.fast_combine
        if fast is not None and self.mode is TableMode.AGGREGATE:
            found = fast(arr, now, size)
            if found is None:
                arr[0] = 0
                return None
            values, expire_at, next_expiry, rate_due = found
            deadline = next_expiry if not rate_due or next_expiry < rate_due else rate_due
            self._schedule_locked(stripe, key, arr, deadline)
            return values, expire_at
        live = [at for at in range(1, len(arr), size) if arr[at] & EXPIRE_MASK > now]
        if not live:
            arr[0] = 0
            return None
        if self.mode is TableMode.HISTORY:
            at = live[0]
            rate_due = self._steady_locked(arr, at, now)
            values = self.layout.unpack(arr, at, now, stripe.server_keys, (key, HISTORY_PEER))
            expire_at = next_expiry = arr[at] & EXPIRE_MASK
        elif self.mode is TableMode.FORWARD:
            newest = max(live, key=lambda at: arr[at + 1])
            values = self.layout.unpack(arr, newest, now, stripe.server_keys, (key, arr[newest] >> PEER_SHIFT))
            expire_at, rate_due = arr[newest] & EXPIRE_MASK, 0
            next_expiry = expire_at
        else:
            values, rate_due = self.layout.combine(arr, live, now, stripe.server_keys, key)
            expire_at = max(arr[at] & EXPIRE_MASK for at in live)
            next_expiry = min(arr[at] & EXPIRE_MASK for at in live)
        deadline = next_expiry if not rate_due or next_expiry < rate_due else rate_due
        self._schedule_locked(stripe, key, arr, deadline)
        return values, expire_at

    def _steady_locked(self, arr: array, at: int, now: int) -> int:
        """Bring a history record's rates to the period holding ``now``, their value unchanged;
        returns the end of the earliest such period (0: no rate), when they are pushed again.

        A history rate is a statistic, not a count that decays: it is kept as
        (start, curr = the statistic, prev = 0), which HAProxy reads as the
        statistic until ``start + period``; after that HAProxy would read it
        decaying. So the key is pushed again ``REPUSH_EARLY`` before that
        (``_aggregate_locked`` schedules it; the timers' slices and the
        refresh tick may delay it by up to 200 ms), its period starting anew:
        the node always holds a period that has not ended.
        """
        due = 0
        for slot, count, width, std, _, period, _ in self.layout.columns:
            if std is not StdType.FRQP or not period:
                continue
            early = min(REPUSH_EARLY, period // 4)
            for i in range(count):
                p = at + slot + i * width
                start = arr[p]
                if now - start >= period - early:
                    arr[p] = start = now
                    arr[p + 2] = 0
                if arr[p + 1] and (not due or start + period - early < due):
                    due = start + period - early
        return due

    def _schedule_locked(self, stripe: Stripe, key: bytes, arr: array, deadline: int) -> None:
        filed, arr[0] = arr[0], deadline
        slice_ = -(-deadline // TIMER_SLICE) * TIMER_SLICE
        if filed and -(-filed // TIMER_SLICE) * TIMER_SLICE == slice_:
            return  # filed in that slice already (a rate's period end stays put for a period)
        bucket = stripe.timers.get(slice_)
        if bucket is None:
            stripe.timers[slice_] = [key]
            heapq.heappush(stripe.timer_order, slice_)
        else:
            bucket.append(key)

    def snapshot(self, stripe_index: int, now: int) -> list[tuple[bytes, tuple | None, int, dict]]:
        """(key, aggregate or None, its expiry, {peer: (values, expire_at, received_at)}).

        Values are wire values at ``now``. A copy taken under the stripe's
        lock; not atomic across stripes.
        """
        stripe = self.stripes[stripe_index]
        with stripe.lock:
            return [self._view_locked(stripe, key, arr, now) for key, arr in stripe.entries.items()]

    def stripe_keys(self, stripe_index: int) -> list[bytes]:
        """The keys of one stripe now (a copy taken under its lock), to read a part at a time."""
        stripe = self.stripes[stripe_index]
        with stripe.lock:
            return list(stripe.entries)

    def read_keys(self, stripe_index: int, keys: list[bytes], now: int) -> list[tuple[bytes, tuple | None, int, dict]]:
        """``snapshot``'s rows of those of ``keys`` (all in ``stripe_index``) still in the table.

        One read under the stripe's lock: a key gone since ``stripe_keys`` is
        skipped, a key added since is not seen.
        """
        stripe = self.stripes[stripe_index]
        with stripe.lock:
            entries = stripe.entries
            return [self._view_locked(stripe, key, arr, now) for key in keys
                    if (arr := entries.get(key)) is not None]

    def read_column(self, stripe_index: int, keys: list[bytes], now: int,
                    column: tuple[int, int] | None) -> list[tuple[bytes, object, int]]:
        """``(key, the aggregate's element column = (field, element) as a wire value, expiry)`` of
        ``keys`` still in the stripe (value None without a live entry, or ``column`` None): the
        dashboard's scans. No peers' entries; one read under the lock; schedules nothing."""
        stripe = self.stripes[stripe_index]
        read = self._column_reader(column, now)
        with stripe.lock:
            entries = stripe.entries
            return [(key, *read(stripe, key, arr)) for key in keys if (arr := entries.get(key)) is not None]

    def _column_reader(self, column: tuple[int, int] | None, now: int):
        """``read(stripe, key, entry) -> (value, expiry)`` for ``read_column``."""
        size, columns = self.layout.record, self.layout.columns
        if self.mode is not TableMode.AGGREGATE or (
                column is not None and columns[column[0]][4] not in (Combine.SUM, Combine.MAX)):
            # Forwarded and history tables, rates and latest values: the whole aggregate (the
            # generated combine of every field is faster than one rate's general code).
            fast = self.layout.fast_combine if self.mode is TableMode.AGGREGATE else None
            index, element = column or (0, 0)
            is_array = column is not None and columns[index][6]

            def whole(stripe: Stripe, key: bytes, arr: array) -> tuple[object, int]:
                found = fast(arr, now, size) if fast is not None else self._view_locked(stripe, key, arr, now)[1:3]
                if found is None or found[0] is None:
                    return None, 0
                if column is None:
                    return None, found[1]
                return (found[0][index][element] if is_array else found[0][index]), found[1]
            return whole
        # Counters and maxima: that one element of the live records, in one pass.
        off, cap, summed = 0, 0, True
        if column is not None:
            slot, _, width, std, combine, _, _ = columns[column[0]]
            off, cap = slot + column[1] * width, U64_MAX if std is StdType.ULL else U32_MAX
            summed = combine is Combine.SUM

        def one(stripe: Stripe, key: bytes, arr: array) -> tuple[object, int]:
            value = expire = 0
            for at in range(1, len(arr), size):
                ends = arr[at] & EXPIRE_MASK
                if ends > now:
                    if ends > expire:
                        expire = ends
                    if summed:
                        value += arr[at + off]
                    elif arr[at + off] > value:
                        value = arr[at + off]
            if not expire:
                return None, 0
            return (None if column is None else value if value < cap else cap), expire
        return one

    def lookup(self, key: bytes, now: int) -> tuple[tuple | None, int, dict] | None:
        stripe = self.stripes[self.stripe_of(key)]
        with stripe.lock:
            arr = stripe.entries.get(key)
            return None if arr is None else self._view_locked(stripe, key, arr, now)[1:]

    def _view_locked(self, stripe: Stripe, key: bytes, arr: array, now: int) -> tuple:
        size = self.layout.record
        peers = {}
        for at in range(1, len(arr), size):
            peer = arr[at] >> PEER_SHIFT
            values = self.layout.unpack(arr, at, now, stripe.server_keys, (key, peer))
            peers[peer] = (values, arr[at] & EXPIRE_MASK, arr[at + 1] if self.layout.keep_received else 0)
        live = [at for at in range(1, len(arr), size) if arr[at] & EXPIRE_MASK > now]
        if not live:
            return key, None, 0, peers
        if self.mode is TableMode.HISTORY:
            # Its rates' next push is scheduled here too: a table sent whole to a peer that just
            # declared it (``PeerLink.send_whole``) is read this way, not through take_dirty.
            due = self._steady_locked(arr, live[0], now)
            if due:
                self._schedule_locked(stripe, key, arr, min(due, arr[live[0]] & EXPIRE_MASK))
            values = self.layout.unpack(arr, live[0], now, stripe.server_keys, (key, HISTORY_PEER))
            return key, values, arr[live[0]] & EXPIRE_MASK, {}  # no peer's entry: the statistic is ours
        if self.mode is TableMode.FORWARD:
            newest = max(live, key=lambda at: arr[at + 1])
            return key, peers[arr[newest] >> PEER_SHIFT][0], arr[newest] & EXPIRE_MASK, peers
        values, _ = self.layout.combine(arr, live, now, stripe.server_keys, key)
        return key, values, max(arr[at] & EXPIRE_MASK for at in live), peers

    def teach_rows(self, stripe_index: int, keys: list[bytes], now: int,
                   peer: int | None = None) -> list[tuple[bytes, tuple, int]]:
        """What a resync answer sends of those of ``keys`` (all in ``stripe_index``): ``(key, values,
        expire_at)``.

        The live aggregate of each key, or with ``peer`` that peer's own live
        entry; keys with none are left out, and so are keys gone since
        ``stripe_keys`` listed them. One read under the stripe's lock, which
        changes nothing (no timer, no dirty key), with the generated
        ``combine`` when the layout has one.
        """
        stripe = self.stripes[stripe_index]
        layout = self.layout
        size = layout.record
        fast = layout.fast_combine if self.mode is TableMode.AGGREGATE else None
        out = []
        with stripe.lock:
            entries = stripe.entries
            for key in keys:
                arr = entries.get(key)
                if arr is None:
                    continue
                if peer is not None:
                    at = _find(arr, peer, size)
                    if at >= 0 and arr[at] & EXPIRE_MASK > now:
                        values = layout.unpack(arr, at, now, stripe.server_keys, (key, peer))
                        out.append((key, values, arr[at] & EXPIRE_MASK))
                elif fast is not None:
                    found = fast(arr, now, size)
                    if found is not None:
                        out.append((key, found[0], found[1]))
                else:
                    _, values, expire_at, _ = self._view_locked(stripe, key, arr, now)
                    if values is not None:
                        out.append((key, values, expire_at))
        return out

    def clear(self, key: bytes | None = None) -> list[bytes]:
        """Forget every entry (or one key); returns the keys forgotten."""
        if key is None:
            return [k for entries in self.clear_all() for k in entries]
        stripe = self.stripes[self.stripe_of(key)]
        with stripe.lock:
            arr = stripe.entries.get(key)
            if arr is None:
                return []
            self._forget_locked(stripe, key, arr)
        return [key]

    def clear_all(self) -> list[dict[bytes, array]]:
        """Forget every entry at once; returns each stripe's entries as they were.

        Each stripe's entries, dirty keys, server keys and timers are swapped
        for empty ones under its lock: a constant time per stripe, whatever
        its size, so that ``clear table`` on a million keys holds no lock and
        no loop turn for long (issue 14). The caller pushes the old keys as
        cleared, a part at a time (``missing`` tells which were created again
        meanwhile). The eviction index keeps stale items, which it skips.
        """
        detached = []
        for stripe in self.stripes:
            with stripe.lock:
                detached.append(stripe.entries)
                stripe.entries = {}
                stripe.dirty = {}
                stripe.due = {}
                stripe.server_keys = {}
                stripe.timers = {}
                stripe.timer_order = []
        return detached

    def missing(self, stripe_index: int, keys: list[bytes]) -> list[bytes]:
        """Those of ``keys`` (all in ``stripe_index``) not in the table now (under its lock)."""
        stripe = self.stripes[stripe_index]
        with stripe.lock:
            entries = stripe.entries
            return [key for key in keys if key not in entries]

    def __len__(self) -> int:
        """Entries in the table (approximate: not reliable while workers write)."""
        return sum(len(s.entries) for s in self.stripes)

    @property
    def changes(self) -> int:
        return sum(s.changes for s in self.stripes)

    @property
    def dropped(self) -> int:
        return sum(s.dropped for s in self.stripes)

    def empty(self) -> tuple:
        """Wire values of an entry nobody contributed to."""
        return self.layout.unpack(self._blank, 0, 0, {}, ())


def _find(arr: array, peer: int, size: int) -> int:
    """The offset of ``peer``'s record in a key's array, or -1."""
    for at in range(1, len(arr), size):
        if arr[at] >> PEER_SHIFT == peer:
            return at
    return -1
