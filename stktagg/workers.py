"""Worker threads that apply update batches to the tables' stripes.

Imports ``table`` only. Besides ``daemon``, the only module that starts threads.

Ownership: worker ``i`` owns the stripes ``s`` with ``s % count == i``. The
I/O thread cuts each received batch by stripe and queues each piece to the
stripe's owner, so the updates of one key are applied in the order they
arrived. After a worker has drained its queue it calls ``notify()`` once (in
production ``reactor.call_soon_threadsafe`` of the push round), so a burst of
batches costs one wake-up, not one per batch. A batch that finds every queue
drained is applied by the I/O thread itself, under a GIL whatever its size,
else when small (``DIRECT_BATCH``): the stripe locks make that safe, and with
nothing queued the order holds. The workers then take what comes while they
are busy, and the timer work (``submit_refresh``: expiries, rate period
ends), off the I/O thread.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
from typing import Callable

from .table import AggTable

log = logging.getLogger(__name__)

_STOP = object()
#: Longest time a busy worker goes without waking the loop for a push round.
WAKE_INTERVAL = 0.005
#: Batches of at most this many updates are applied in the calling thread
#: when the workers have nothing waiting (``submit_updates``); any batch is,
#: under a GIL (``GIL``).
DIRECT_BATCH = 32
#: The interpreter runs one thread at a time (CPython's GIL, PyPy's): worker
#: threads cannot add CPU, only the cost of handing work over. A free-threaded
#: CPython says otherwise through ``sys._is_gil_enabled``.
GIL = getattr(sys, "_is_gil_enabled", lambda: True)()


class Workers:
    """A fixed pool of threads, each owning a share of every table's stripes."""

    def __init__(self, count: int, notify: Callable[[], None], notify_here: Callable[[], None] | None = None) -> None:
        """``count`` threads; 0 applies every batch in the calling thread (for measurements).

        ``notify`` is called from a worker thread after a burst; ``notify_here``
        (default: ``notify``) after a batch applied in the calling thread, which
        in production is the loop's own thread and needs no self-pipe wake-up.
        """
        if count < 0:
            raise ValueError(f"worker count cannot be negative: {count}")
        self.inline = count == 0
        count = max(count, 1)
        self.count = count
        self._notify = notify
        self._notify_here = notify_here or notify
        self._queues: list[queue.SimpleQueue] = [queue.SimpleQueue() for _ in range(count)]
        self._threads = [
            threading.Thread(target=self._run, args=(i, q), name=f"stktagg-worker-{i}", daemon=True)
            for i, q in enumerate(self._queues)
        ]
        self.submitted = 0  #: updates queued (written by the I/O thread only)
        self._applied = [0] * count  #: updates applied, one counter per worker (no lock needed)
        self._applied_here = 0  #: updates applied in the calling thread (written by it only)

    def start(self) -> None:
        if self.inline:
            return
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        for q in self._queues:
            q.put(_STOP)
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout)

    def submit_updates(self, table: AggTable, peer: int, in_fields: tuple, items: list, now: int) -> None:
        """Queue ``(key, values, expire)`` items of one peer for ``table``, cut by stripe."""
        by_stripe: dict[int, list] = {}
        stripes = len(table.stripes)
        for item in items:
            by_stripe.setdefault(hash(item[0]) % stripes, []).append(item)
        # One queue item per worker per batch: every put wakes a thread, and
        # hand-offs (locks, the GIL) cost more than the work they carry.
        per_worker: dict[int, list] = {}
        for stripe, part in by_stripe.items():
            per_worker.setdefault(stripe % self.count, []).append((stripe, part))
        # A batch that finds every queued update applied goes in at once, in
        # this thread, when that is cheaper: always under a GIL (a worker adds
        # no CPU there, and the hand-off, thread switches and the loop's
        # wake-up cost about 30 % of saturated ingest: 98-109k against 63-70k
        # updates/s, issue 15), else for small batches (at low rates a batch is
        # an update or two). The order of a key's updates holds, since
        # nothing of this peer is waiting in a queue.
        direct = self.inline or (self.submitted == self.applied and (GIL or len(items) <= DIRECT_BATCH))
        self.submitted += len(items)
        for worker, parts in per_worker.items():
            job = (_apply_parts, (table, peer, in_fields, parts, now), sum(len(p) for _, p in parts))
            if direct:
                _apply_parts(*job[1])
                self._applied_here += job[2]
            else:
                self._queues[worker].put(job)
        if direct:
            self._notify_here()

    @property
    def applied(self) -> int:
        return sum(self._applied) + self._applied_here

    def pending(self) -> int:
        """Updates queued and not yet applied (approximate)."""
        return self.submitted - self.applied

    def submit_refresh(self, table: AggTable, now: int) -> None:
        """Queue the timer work (expiries, rate boundaries) of every stripe of ``table``.

        Each stripe's share is bounded (``AggTable.refresh``'s budget): when a
        million keys are due at once, the next ticks take the rest.
        """
        for worker in range(self.count):
            stripes = range(worker, len(table.stripes), self.count)
            if self.inline:
                _refresh(table, stripes, now)
            else:
                self._queues[worker].put((_refresh, (table, stripes, now), 0))
        if self.inline:
            self._notify_here()

    def _run(self, index: int, jobs: queue.SimpleQueue) -> None:
        """A worker's loop: apply queued jobs, wake the loop (see the module docstring)."""
        applied = self._applied
        while True:
            job = jobs.get()
            woke = time.monotonic()
            while True:
                if job is _STOP:
                    return
                func, args, count = job
                try:
                    func(*args)
                except Exception:  # a bug must not kill the worker: log it, go on
                    log.exception("worker job %s failed", getattr(func, "__qualname__", func))
                applied[index] += count
                # Wake the loop when the queue is drained, and at least every
                # WAKE_INTERVAL under sustained load, so pushes never starve.
                now = time.monotonic()
                if now - woke >= WAKE_INTERVAL:
                    self._notify()
                    woke = now
                try:
                    job = jobs.get_nowait()
                except queue.Empty:
                    break
            self._notify()


def _apply_parts(table: AggTable, peer: int, in_fields: tuple, parts: list, now: int) -> None:
    for stripe, items in parts:
        table.apply(stripe, peer, in_fields, items, now)


def _refresh(table: AggTable, stripes: range, now: int) -> None:
    for stripe in stripes:
        table.refresh(stripe, now)
