"""The reactor: one ``selectors`` event loop and its single dispatch point.

Imports ``errors`` only. It knows nothing about peers, sessions or tables:
it runs callbacks, watches file descriptors and keeps timers.

Contract
--------
- Everything runs in the thread that calls ``run_once``/``run_forever``/
  ``run_until`` (the *loop thread*). Every method except
  ``call_soon_threadsafe`` must be called from that thread.
- One turn (``run_once``) does, in order: purge cancelled timers when they
  are most of the heap; compute the select timeout (0 if a callback is
  ready, else the time to the next timer, else the caller's timeout);
  ``select``; queue the callbacks of ready file descriptors, of other
  threads and of signals; move the due timers to the ready queue; run
  exactly the callbacks queued so far. A callback queued while they run
  waits for the next turn, so a callback that reschedules itself cannot
  starve I/O.
- The loop measures itself (``turn_stats``, a ``TurnStats``): each turn's
  time from the end of ``select`` to the end of its last callback, and the
  slowest callback of the turn; a turn over ``SLOW_TURN`` is a warning in
  the log naming that callback.
- Other threads wake the loop only through the self-pipe (a socketpair):
  ``call_soon_threadsafe`` appends under a lock and writes one byte.
- Signals arrive through ``signal.set_wakeup_fd`` on that same pipe. The
  Python-level handler only records the signal number; the callback runs
  later, inside the loop, never inside the handler.
- A callback that raises an ``Exception`` is logged with its repr and the
  loop goes on. ``BaseException`` (``KeyboardInterrupt``, ``SystemExit``)
  is never caught: it leaves ``run_once``.
- Timers live in a heap of ``(when, seq, handle)``; ``seq`` keeps equal
  deadlines FIFO. Cancelling is lazy: the entry stays in the heap until it
  is popped or purged.
- Three kinds of queued callback share one base, ``Handle`` (a callback
  that ``cancel()`` stops from ever running): ``TimerHandle`` for what the
  ``call_*`` methods schedule, ``FdRegistration`` for a reader or writer
  registered on a file descriptor, and plain ``Handle`` for what other
  threads and signals queue.
- ``stop()`` may be called from any thread: it writes to the self-pipe, so a
  ``select`` that waits with no timer due returns at once.
- Coalescing (``coalesce`` seconds, off by default): while the loop was busy
  less than ``CALM_BUSY`` of the last second, the file descriptors are
  polled at most once per ``coalesce`` seconds. In between, turns run what
  is ready and the timers that fall due, and the loop sleeps until the
  next of those or the next poll. At low rates each read then finds
  several messages and each push round carries several changes: fewer
  wake-ups and system calls, for at most ``coalesce`` more latency. A busy
  loop polls as usual; a first event after a quiet spell is seen at once.
"""

from __future__ import annotations

import heapq
import logging
from bisect import bisect_left
import selectors
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from .errors import StktaggError

__all__ = [
    "FdRegistration", "Handle", "MAX_SELECT_TIMEOUT", "Reactor", "ReactorError", "SLOW_TURN", "TURN_BUCKETS",
    "TURN_WINDOW", "TimerHandle", "TurnStats",
]

log = logging.getLogger(__name__)

#: Longest single ``select`` wait. A far timer (or a clock jump in an
#: injected clock) must not turn into a wait that overflows the selector.
MAX_SELECT_TIMEOUT = 24 * 3600.0
#: Purge cancelled timers only when there are more than this many...
MIN_CANCELLED_TO_PURGE = 64
#: ...and they are more than this fraction of the heap. Rebuilding the heap
#: is O(n), so it is worth it only when most of it is dead weight.
CANCELLED_FRACTION_TO_PURGE = 0.5
#: Bytes read from the self-pipe per ``recv`` when draining it.
_SELF_PIPE_READ = 4096
#: Upper bounds (s) of the buckets of the turn-duration histogram; one more
#: bucket, +Inf, holds the longer turns. Issue 14's budget is 50 ms a turn.
TURN_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
#: A turn longer than this is logged as a warning naming its slowest callback.
SLOW_TURN = 1.0
#: The recent figures cover this many seconds, one slot per second.
TURN_WINDOW = 60
#: Coalescing applies while the loop ran callbacks less than this fraction
#: of the last second (measured each second): at that load a wait of a few
#: milliseconds costs nothing but that latency.
CALM_BUSY = 0.3

Callback = Callable[..., object]


class ReactorError(StktaggError):
    """The reactor was used in a way it does not allow (closed, re-entered)."""


class Handle:
    """A callback queued to run in the loop.

    ``cancel()`` may be called any number of times, from the loop thread
    only; a cancelled callback never runs.
    """

    __slots__ = ("_callback", "_args", "_cancelled")

    def __init__(self, callback: Callback, args: tuple[Any, ...]) -> None:
        self._callback: Callback | None = callback
        self._args: tuple[Any, ...] = args
        self._cancelled = False

    @property
    def cancelled(self) -> bool:
        """True once ``cancel()`` has been called."""
        return self._cancelled

    def cancel(self) -> None:
        """Make sure the callback never runs (no-op if already cancelled)."""
        if self._cancelled:
            return
        self._cancelled = True
        # Drop the references now: a cancelled timer may stay in the heap
        # for a long time and must not keep big objects alive.
        self._callback = None
        self._args = ()

    def _run(self) -> None:
        callback = self._callback
        if callback is None:
            return
        try:
            callback(*self._args)
        except Exception:
            # The loop must survive a buggy callback; BaseException is not
            # caught so that KeyboardInterrupt and SystemExit still stop it.
            log.exception("Exception in callback %r", self)

    def _describe(self) -> str:
        return f"{self._callback!r}{self._args!r}"

    def __repr__(self) -> str:
        state = " cancelled" if self._cancelled else ""
        return f"<{type(self).__name__}{state} {self._describe()}>"


class TimerHandle(Handle):
    """A scheduled callback: returned by every ``call_*`` method.

    ``when`` is the loop time the callback is due at (for ``call_soon``, the
    time it was queued).
    """

    __slots__ = ("when", "_reactor")

    def __init__(self, when: float, callback: Callback, args: tuple[Any, ...],
                 reactor: Reactor | None = None) -> None:
        super().__init__(callback, args)
        self.when = when
        # Set only while the handle sits in the timer heap, so that cancel()
        # can keep the reactor's count of dead heap entries right.
        self._reactor = reactor

    def cancel(self) -> None:
        if self._cancelled:
            return
        super().cancel()
        if self._reactor is not None:
            self._reactor._timer_cancelled()
            self._reactor = None

    def __repr__(self) -> str:
        state = " cancelled" if self._cancelled else ""
        return f"<TimerHandle when={self.when:.6f}{state} {self._describe()}>"


class FdRegistration(Handle):
    """The callback registered for one file object, for reading or for writing.

    Made by ``add_reader``/``add_writer``; queued each time the selector
    reports the file object ready; cancelled by ``remove_*`` or when a new
    callback replaces it, so that one already queued in this turn does not run.
    """

    __slots__ = ("fileobj", "event")

    def __init__(self, fileobj: Any, event: int, callback: Callback) -> None:
        super().__init__(callback, ())
        self.fileobj = fileobj
        self.event = event  #: ``selectors.EVENT_READ`` or ``selectors.EVENT_WRITE``

    def __repr__(self) -> str:
        state = " cancelled" if self._cancelled else ""
        kind = "reader" if self.event == selectors.EVENT_READ else "writer"
        return f"<FdRegistration {kind} {self.fileobj!r}{state} {self._describe()}>"


def callback_name(callback: Callback | None) -> str:
    """What a callback is, in a few words (``Server._session_tick``), for logs and figures."""
    if callback is None:
        return ""
    return getattr(callback, "__qualname__", None) or type(callback).__qualname__


class TurnStats:
    """How long the loop's turns take: the time spent running callbacks, not waiting in select.

    Totals since the start (a histogram over ``TURN_BUCKETS``, the count, the
    sum, the longest), and the same per second over the last ``TURN_WINDOW``
    seconds in a ring of slots, each with the slowest callback of its longest
    turn. ``record`` is O(1) (a bisect and a few list updates; a slot is
    reset when the ring comes back to it): it runs every turn.
    """

    def __init__(self) -> None:
        width = len(TURN_BUCKETS) + 1
        self.counts = [0] * width  #: turns per bucket since the start (not cumulative)
        self.turns = 0
        self.seconds = 0.0  #: the sum of all turn durations
        self.longest = 0.0
        self._second = [-1] * TURN_WINDOW  #: the clock second each slot holds
        self._counts = [[0] * width for _ in range(TURN_WINDOW)]
        self._longest = [0.0] * TURN_WINDOW
        self._what = [""] * TURN_WINDOW

    def record(self, ended: float, duration: float, slowest: Callback | None = None) -> None:
        """One turn that ended at clock time ``ended`` and ran for ``duration`` seconds."""
        bucket = bisect_left(TURN_BUCKETS, duration)
        self.counts[bucket] += 1
        self.turns += 1
        self.seconds += duration
        if duration > self.longest:
            self.longest = duration
        second = int(ended)
        slot = second % TURN_WINDOW
        if self._second[slot] != second:
            self._second[slot] = second
            self._counts[slot] = [0] * len(self.counts)
            self._longest[slot] = -1.0
        self._counts[slot][bucket] += 1
        if duration > self._longest[slot]:
            self._longest[slot] = duration
            self._what[slot] = callback_name(slowest)

    def recent(self, now: float) -> tuple[list[int], float, str]:
        """Over the last ``TURN_WINDOW`` seconds: turns per bucket, the longest turn, its slowest callback."""
        last = int(now)
        counts = [0] * len(self.counts)
        longest, what = 0.0, ""
        for slot, second in enumerate(self._second):
            if last - TURN_WINDOW < second <= last:
                counts = [a + b for a, b in zip(counts, self._counts[slot])]
                if self._longest[slot] > longest:
                    longest, what = self._longest[slot], self._what[slot]
        return counts, longest, what


class Reactor:
    """A single-threaded event loop over ``selectors.DefaultSelector``.

    Args:
        clock: returns the loop time in seconds (monotonic). Inject a fake
            clock in tests to drive timers exactly.
        selector: the selector to use (default ``selectors.DefaultSelector()``);
            injectable so tests can observe the timeouts passed to ``select``.
        coalesce: while the loop is calm, poll the descriptors at most once
            per this many seconds (see the module docstring); 0: always.
        sleep: how the loop waits between polls (injectable for tests).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 selector: selectors.BaseSelector | None = None, coalesce: float = 0.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._clock = clock
        self._coalesce = coalesce
        self._sleep = sleep
        self._busy = 0.0  #: seconds spent running callbacks since _busy_since
        self._busy_since = clock()
        self._calm = False  #: the last measured second was calm: coalesce
        self._next_poll = 0.0  #: while calm, the descriptors wait until then
        self._selector = selector if selector is not None else selectors.DefaultSelector()
        self._ready: deque[Handle] = deque()
        self._timers: list[tuple[float, int, TimerHandle]] = []
        self._timer_seq = 0
        self._cancelled_timers = 0
        self._running = False
        self._stopping = False
        self._closed = False
        # Guards _threadsafe and the self-pipe write end against close().
        self._threadsafe_lock = threading.Lock()
        self._threadsafe: deque[Handle] = deque()
        # signum -> (callback, args); _signal_previous: signum -> old handler.
        self._signal_callbacks: dict[int, tuple[Callback, tuple[Any, ...]]] = {}
        self._signal_previous: dict[int, Any] = {}
        # Filled by the Python-level handler only; drained inside the loop.
        self._signals_received: deque[int] = deque()
        self._previous_wakeup_fd: int | None = None
        self._rsock, self._wsock = self._make_self_pipe()
        self.turn_stats = TurnStats()  #: how long the turns take (read by the status view)

    def _make_self_pipe(self) -> tuple[socket.socket, socket.socket]:
        rsock, wsock = socket.socketpair()
        rsock.setblocking(False)
        # The write end must never block: neither call_soon_threadsafe nor
        # the C-level signal handler may wait on a full pipe.
        wsock.setblocking(False)
        self._selector.register(rsock, selectors.EVENT_READ, None)
        return rsock, wsock

    # -- time and callbacks -------------------------------------------------

    def time(self) -> float:
        """The loop time, from the injected clock."""
        return self._clock()

    def call_soon(self, callback: Callback, *args: Any) -> TimerHandle:
        """Run ``callback(*args)`` on the next turn; callbacks run FIFO."""
        self._check_open()
        handle = TimerHandle(self.time(), callback, args)
        self._ready.append(handle)
        return handle

    def call_later(self, delay: float, callback: Callback, *args: Any) -> TimerHandle:
        """Run ``callback(*args)`` once ``delay`` seconds have passed."""
        return self.call_at(self.time() + delay, callback, *args)

    def call_at(self, when: float, callback: Callback, *args: Any) -> TimerHandle:
        """Run ``callback(*args)`` at loop time ``when`` (next turn if past)."""
        self._check_open()
        handle = TimerHandle(when, callback, args, self)
        self._timer_seq += 1
        heapq.heappush(self._timers, (when, self._timer_seq, handle))
        return handle

    def call_soon_threadsafe(self, callback: Callback, *args: Any) -> None:
        """Run ``callback(*args)`` in the loop; callable from any thread.

        Wakes the loop through the self-pipe. After ``close()`` this is a
        silent no-op, so a worker thread racing shutdown cannot crash.
        """
        with self._threadsafe_lock:
            if self._closed:
                return
            self._threadsafe.append(Handle(callback, args))
            self._wake()

    def _wake(self) -> None:
        try:
            self._wsock.send(b"\0")
        except (BlockingIOError, InterruptedError):
            pass  # the pipe is full: the loop is due to wake up anyway

    @property
    def scheduled_timers(self) -> int:
        """Entries in the timer heap, cancelled ones included until purged."""
        return len(self._timers)

    def _timer_cancelled(self) -> None:
        self._cancelled_timers += 1

    # -- file descriptors ---------------------------------------------------

    def add_reader(self, fileobj: Any, callback: Callback) -> None:
        """Call ``callback()`` whenever ``fileobj`` is readable (replaces any)."""
        self._set_fd_callback(fileobj, 0, callback)

    def add_writer(self, fileobj: Any, callback: Callback) -> None:
        """Call ``callback()`` whenever ``fileobj`` is writable (replaces any)."""
        self._set_fd_callback(fileobj, 1, callback)

    def remove_reader(self, fileobj: Any) -> bool:
        """Stop watching ``fileobj`` for reading; False if it was not watched."""
        return self._clear_fd_callback(fileobj, 0)

    def remove_writer(self, fileobj: Any) -> bool:
        """Stop watching ``fileobj`` for writing; False if it was not watched."""
        return self._clear_fd_callback(fileobj, 1)

    def has_reader(self, fileobj: Any) -> bool:
        """True if a reader callback is registered for ``fileobj``."""
        return self._fd_handles(fileobj)[0] is not None

    def has_writer(self, fileobj: Any) -> bool:
        """True if a writer callback is registered for ``fileobj``."""
        return self._fd_handles(fileobj)[1] is not None

    # A reader and a writer on one fd share one selector key whose data is
    # [reader handle, writer handle]; index 0 is the reader, 1 the writer.
    _EVENTS = (selectors.EVENT_READ, selectors.EVENT_WRITE)

    def _fd_handles(self, fileobj: Any) -> list[FdRegistration | None]:
        key = self._lookup_key(fileobj)
        return key.data if key is not None else [None, None]

    def _lookup_key(self, fileobj: Any) -> selectors.SelectorKey | None:
        if self._closed:
            return None
        try:
            return self._selector.get_map().get(fileobj)
        except ValueError:
            return None  # a closed file object that was never registered

    def _set_fd_callback(self, fileobj: Any, index: int, callback: Callback) -> None:
        self._check_open()
        handle = FdRegistration(fileobj, self._EVENTS[index], callback)
        key = self._lookup_key(fileobj)
        if key is None:
            data: list[FdRegistration | None] = [None, None]
            data[index] = handle
            self._selector.register(fileobj, self._EVENTS[index], data)
            return
        old = key.data[index]
        if old is not None:
            old.cancel()
        key.data[index] = handle
        self._selector.modify(fileobj, key.events | self._EVENTS[index], key.data)

    def _clear_fd_callback(self, fileobj: Any, index: int) -> bool:
        key = self._lookup_key(fileobj)
        if key is None or key.data[index] is None:
            return False
        # Cancelling matters: the handle may already sit in the ready queue
        # of this turn, and its fd may be closed before it would run.
        key.data[index].cancel()
        key.data[index] = None
        events = key.events & ~self._EVENTS[index]
        if events:
            self._selector.modify(fileobj, events, key.data)
        else:
            self._selector.unregister(fileobj)
        return True

    # -- signals --------------------------------------------------------------

    def add_signal_handler(self, signum: int, callback: Callback, *args: Any) -> None:
        """Run ``callback(*args)`` in the loop each time ``signum`` arrives.

        Must be called from the main thread (a ``signal`` module rule).
        Replaces any callback already set for ``signum``.
        """
        self._check_open()
        if self._previous_wakeup_fd is None:
            # Signals write their number to the self-pipe, so a signal that
            # lands while select() waits wakes it at once.
            self._previous_wakeup_fd = signal.set_wakeup_fd(
                self._wsock.fileno(), warn_on_full_buffer=False)
        if signum not in self._signal_previous:
            self._signal_previous[signum] = signal.getsignal(signum)
        self._signal_callbacks[signum] = (callback, args)
        signal.signal(signum, self._on_signal)

    def remove_signal_handler(self, signum: int) -> bool:
        """Restore the handler ``signum`` had before; False if none was set."""
        if signum not in self._signal_callbacks:
            return False
        del self._signal_callbacks[signum]
        previous = self._signal_previous.pop(signum)
        signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        return True

    def _on_signal(self, signum: int, frame: object) -> None:
        # Runs between two bytecodes of whatever the main thread was doing:
        # only record the number (no logging, no locks, no callbacks).
        self._signals_received.append(signum)

    # -- running ------------------------------------------------------------

    def run_once(self, timeout: float | None = None) -> None:
        """Run one turn of the loop.

        Args:
            timeout: the longest wait when nothing is ready and no timer is
                due sooner; ``None`` waits until an event arrives.
        """
        self._check_open()
        self._maybe_purge_timers()
        events = self._poll(self._select_timeout(timeout))
        clock = self._clock
        started = clock()
        self._queue_fd_callbacks(events)
        self._queue_threadsafe_callbacks()
        self._queue_signal_callbacks()
        self._queue_due_timers(started)
        # Run only what is queued now: callbacks added meanwhile wait for
        # the next turn (after a fresh select), so I/O is never starved.
        # Each callback is timed (one clock read), to name the slowest.
        ready = self._ready
        then, slowest, slowest_for = started, None, -1.0
        for _ in range(len(ready)):
            handle = ready.popleft()
            callback = handle._callback
            handle._run()
            ended = clock()
            if ended - then > slowest_for:
                slowest, slowest_for = callback, ended - then
            then = ended
        self.turn_stats.record(then, then - started, slowest)
        if then - started > SLOW_TURN:
            log.warning("event loop turn took %.3f s (budget 0.05 s); its slowest callback, %s, took %.3f s",
                        then - started, callback_name(slowest) or "?", slowest_for)
        if self._coalesce:
            self._measure_load(started, then)

    def _poll(self, wait: float | None) -> list[tuple[selectors.SelectorKey, int]]:
        """``select`` for at most ``wait`` seconds; while coalescing, not before the next poll is due."""
        if self._calm and not self._stopping:
            hold = self._next_poll - self._clock()
            if hold > 0:
                if wait is not None and wait < hold:
                    if wait > 0:  # a timer first; the descriptors wait for their turn
                        self._sleep(wait)
                    return []
                self._sleep(hold)
                if wait is not None:
                    wait -= hold
        events = self._selector.select(wait)
        if events and self._coalesce:
            self._next_poll = self._clock() + self._coalesce
        return events

    def _measure_load(self, started: float, ended: float) -> None:
        """Coalescing (see the module docstring): is the loop calm? Measured about every second."""
        self._busy += ended - started
        if ended - self._busy_since >= 1.0:
            self._calm = self._busy < CALM_BUSY * (ended - self._busy_since)
            self._busy, self._busy_since = 0.0, ended

    def _select_timeout(self, timeout: float | None) -> float | None:
        if self._ready or self._stopping:
            return 0.0
        if self._timers:
            until_next = max(0.0, self._timers[0][0] - self.time())
            if timeout is not None:
                until_next = min(until_next, timeout)
            return min(until_next, MAX_SELECT_TIMEOUT)
        if timeout is None:
            return None
        return min(max(0.0, timeout), MAX_SELECT_TIMEOUT)

    def _maybe_purge_timers(self) -> None:
        # A cancelled head would make select wake up for nothing.
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
            self._cancelled_timers -= 1
        cancelled = self._cancelled_timers
        if (cancelled > MIN_CANCELLED_TO_PURGE
                and cancelled > CANCELLED_FRACTION_TO_PURGE * len(self._timers)):
            self._timers = [entry for entry in self._timers if not entry[2].cancelled]
            heapq.heapify(self._timers)
            self._cancelled_timers = 0

    def _queue_fd_callbacks(self, events: list[tuple[selectors.SelectorKey, int]]) -> None:
        for key, mask in events:
            if key.fileobj is self._rsock:
                self._drain_self_pipe()
                continue
            reader, writer = key.data
            if mask & selectors.EVENT_READ and reader is not None:
                self._ready.append(reader)
            if mask & selectors.EVENT_WRITE and writer is not None:
                self._ready.append(writer)

    def _drain_self_pipe(self) -> None:
        # The bytes carry no information (the callbacks and signal numbers
        # are recorded elsewhere); they only exist to end the select.
        while True:
            try:
                if not self._rsock.recv(_SELF_PIPE_READ):
                    return
            except (BlockingIOError, InterruptedError):
                return

    def _queue_threadsafe_callbacks(self) -> None:
        # Unlocked emptiness check: a racing append also writes to the pipe,
        # so it is picked up on the next turn at the latest.
        if not self._threadsafe:
            return
        with self._threadsafe_lock:
            self._ready.extend(self._threadsafe)
            self._threadsafe.clear()

    def _queue_signal_callbacks(self) -> None:
        while self._signals_received:
            signum = self._signals_received.popleft()
            entry = self._signal_callbacks.get(signum)
            if entry is not None:
                self._ready.append(Handle(entry[0], entry[1]))

    def _queue_due_timers(self, now: float) -> None:
        while self._timers and self._timers[0][0] <= now:
            handle = heapq.heappop(self._timers)[2]
            if handle.cancelled:
                self._cancelled_timers -= 1
                continue
            handle._reactor = None  # out of the heap: cancel() no longer counts it
            self._ready.append(handle)

    def run_forever(self) -> None:
        """Run turns until ``stop()`` is called (from a callback or a thread)."""
        self._enter_run()
        try:
            while True:
                self.run_once()
                if self._stopping:
                    break
        finally:
            self._leave_run()

    def run_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Run turns until ``predicate()`` is true or ``timeout`` seconds pass.

        Meant for tests. The deadline is measured with ``time.monotonic``
        (not the loop clock), so it bounds real waiting even with a fake
        clock. Also returns early if ``stop()`` is called.

        Returns:
            ``predicate()`` at the end.
        """
        deadline = time.monotonic() + timeout
        self._enter_run()
        try:
            while not predicate() and not self._stopping:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.run_once(remaining)
        finally:
            self._leave_run()
        return predicate()

    def stop(self) -> None:
        """Make ``run_forever`` return after the current turn.

        Callable from any thread: it wakes a ``select`` that waits (through
        the self-pipe), so the loop returns at once, not at its next timer.
        A no-op wake-up after ``close()``.
        """
        self._stopping = True
        with self._threadsafe_lock:
            if not self._closed:
                self._wake()

    def _enter_run(self) -> None:
        self._check_open()
        if self._running:
            raise ReactorError("the reactor is already running")
        self._running = True

    def _leave_run(self) -> None:
        self._running = False
        self._stopping = False

    # -- shutdown -----------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once ``close()`` has been called."""
        return self._closed

    def close(self) -> None:
        """Close the selector and the self-pipe; restore signal handling.

        Registered file objects are not closed (their owners close them).
        Pending callbacks and timers are dropped. Idempotent.
        """
        if self._closed:
            return
        if self._running:
            raise ReactorError("cannot close a running reactor")
        for signum in list(self._signal_callbacks):
            self.remove_signal_handler(signum)
        if self._previous_wakeup_fd is not None:
            # Restore before closing the pipe: the C handler must never write
            # to a closed (or reused) descriptor.
            signal.set_wakeup_fd(self._previous_wakeup_fd)
            self._previous_wakeup_fd = None
        with self._threadsafe_lock:
            self._closed = True
            self._threadsafe.clear()
            self._wsock.close()
        self._selector.close()
        self._rsock.close()
        self._ready.clear()
        self._timers.clear()

    def _check_open(self) -> None:
        if self._closed:
            raise ReactorError("the reactor is closed")
