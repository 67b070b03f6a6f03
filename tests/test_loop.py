"""Reactor: callbacks, timers, thread and signal wakeups, error handling.

Synchronisation is always ``run_until(predicate, timeout)``, never a sleep.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from stktagg.loop import MAX_SELECT_TIMEOUT, Reactor, ReactorError


pytestmark = pytest.mark.usefixtures("no_fd_leak")


@pytest.fixture
def reactor() -> Iterator[Reactor]:
    r = Reactor()
    yield r
    r.close()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class RecordingSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """Records each timeout asked for, and never actually waits."""

    def __init__(self) -> None:
        super().__init__()
        self.timeouts: list[float | None] = []

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        self.timeouts.append(timeout)
        return super().select(0)


@pytest.fixture
def fake() -> Iterator[tuple[Reactor, FakeClock, RecordingSelector]]:
    clock, selector = FakeClock(), RecordingSelector()
    r = Reactor(clock=clock, selector=selector)
    yield r, clock, selector
    r.close()


class TestCallbacks:
    def test_call_soon_runs_fifo_on_next_turn(self, reactor: Reactor) -> None:
        seen: list[int] = []
        for i in range(5):
            reactor.call_soon(seen.append, i)
        assert seen == []
        reactor.run_once(0)
        assert seen == [0, 1, 2, 3, 4]

    def test_callback_queued_by_a_callback_waits_for_next_turn(self, reactor: Reactor) -> None:
        seen: list[str] = []

        def first() -> None:
            seen.append("first")
            reactor.call_soon(seen.append, "second")

        reactor.call_soon(first)
        reactor.run_once(0)
        assert seen == ["first"]
        reactor.run_once(0)
        assert seen == ["first", "second"]

    def test_cancelled_call_soon_never_runs(self, reactor: Reactor) -> None:
        seen: list[int] = []
        handle = reactor.call_soon(seen.append, 1)
        handle.cancel()
        handle.cancel()  # idempotent
        reactor.run_once(0)
        assert seen == [] and handle.cancelled

    def test_raising_callback_is_logged_and_loop_continues(
            self, reactor: Reactor, caplog: pytest.LogCaptureFixture) -> None:
        seen: list[str] = []

        def boom() -> None:
            raise ValueError("kaput")

        reactor.call_soon(boom)
        reactor.call_soon(seen.append, "after")
        with caplog.at_level(logging.ERROR, logger="stktagg.loop"):
            reactor.run_once(0)
        assert seen == ["after"]
        [record] = caplog.records
        assert "boom" in record.getMessage()
        assert record.exc_info is not None and record.exc_info[0] is ValueError

    def test_base_exception_propagates(self, reactor: Reactor) -> None:
        def interrupt() -> None:
            raise KeyboardInterrupt

        reactor.call_soon(interrupt)
        with pytest.raises(KeyboardInterrupt):
            reactor.run_once(0)

    def test_closed_reactor_refuses_work_but_threadsafe_is_a_noop(self) -> None:
        r = Reactor()
        r.close()
        r.close()  # idempotent
        r.call_soon_threadsafe(print, "never")
        with pytest.raises(ReactorError):
            r.call_soon(print)
        with pytest.raises(ReactorError):
            r.run_once(0)

    def test_run_forever_is_not_reentrant(self, reactor: Reactor) -> None:
        errors: list[Exception] = []

        def nested() -> None:
            try:
                reactor.run_forever()
            except ReactorError as exc:
                errors.append(exc)
            reactor.stop()

        reactor.call_soon(nested)
        reactor.run_forever()
        assert len(errors) == 1


class TestTimers:
    def test_call_later_runs_in_deadline_order(self, reactor: Reactor) -> None:
        seen: list[str] = []
        reactor.call_later(0.03, seen.append, "c")
        reactor.call_later(0.01, seen.append, "a")
        reactor.call_later(0.02, seen.append, "b")
        assert reactor.run_until(lambda: len(seen) == 3, timeout=5)
        assert seen == ["a", "b", "c"]

    def test_cancelled_timer_does_not_run(self, reactor: Reactor) -> None:
        seen: list[str] = []
        handle = reactor.call_later(0.01, seen.append, "cancelled")
        reactor.call_later(0.02, seen.append, "kept")
        handle.cancel()
        assert reactor.run_until(lambda: seen == ["kept"], timeout=5)
        assert handle.cancelled

    def test_call_at_in_the_past_runs_on_next_turn(self, reactor: Reactor) -> None:
        seen: list[str] = []
        reactor.call_at(reactor.time() - 100, seen.append, "late")
        reactor.run_once(None)  # must not block: the timer is already due
        assert seen == ["late"]

    def test_fake_clock_fires_timers_in_order(self, fake: tuple[Reactor, FakeClock, RecordingSelector]) -> None:
        r, clock, _ = fake
        seen: list[str] = []
        r.call_later(3, seen.append, "three")
        r.call_at(clock.now + 1, seen.append, "one")
        r.call_later(2, seen.append, "two-a")
        r.call_later(2, seen.append, "two-b")  # same deadline: FIFO
        r.run_once()
        assert seen == []
        clock.now += 2
        r.run_once()
        assert seen == ["one", "two-a", "two-b"]
        clock.now += 0.5
        r.run_once()
        assert seen == ["one", "two-a", "two-b"]
        clock.now += 0.5
        r.run_once()
        assert seen == ["one", "two-a", "two-b", "three"]

    def test_select_timeout_computation(self, fake: tuple[Reactor, FakeClock, RecordingSelector]) -> None:
        r, clock, selector = fake
        r.run_once(7.5)                       # nothing scheduled: the caller's timeout
        r.run_once(None)                      # ... or block
        handle = r.call_later(10, print)
        r.run_once()                          # next deadline
        clock.now += 4
        r.run_once()                          # the deadline got closer
        r.run_once(2)                         # the caller's shorter timeout wins
        r.call_soon(lambda: None)
        r.run_once(30)                        # something ready: do not wait
        handle.cancel()
        r.call_later(10 * MAX_SELECT_TIMEOUT, print)
        r.run_once()                          # far timers are capped
        assert selector.timeouts == [7.5, None, 10, 6, 2, 0, MAX_SELECT_TIMEOUT]

    def test_cancelled_timers_are_purged(self, reactor: Reactor) -> None:
        handles = [reactor.call_later(3600 + i, print) for i in range(10_000)]
        kept = reactor.call_later(1800, print)
        for handle in handles:
            handle.cancel()
        assert reactor.scheduled_timers == 10_001
        reactor.run_once(0)
        assert reactor.scheduled_timers == 1
        assert not kept.cancelled

    def test_few_cancelled_timers_are_left_for_lazy_removal(self, reactor: Reactor) -> None:
        reactor.call_later(1800, print)
        handles = [reactor.call_later(3600 + i, print) for i in range(50)]
        for handle in handles:
            handle.cancel()
        reactor.run_once(0)
        assert reactor.scheduled_timers == 51  # under the purge threshold: O(1) cancel only

    def test_cancelled_head_timers_are_dropped(self, reactor: Reactor) -> None:
        handles = [reactor.call_later(3600 + i, print) for i in range(5)]
        reactor.call_later(7200, print)
        for handle in handles:
            handle.cancel()
        reactor.run_once(0)
        assert reactor.scheduled_timers == 1


class TestThreadsAndSignals:
    def test_call_soon_threadsafe_wakes_blocked_run_forever(self, reactor: Reactor) -> None:
        blocked = threading.Event()
        timings: dict[str, float] = {}
        # Safety net: if the wakeup were broken, the test fails instead of hanging.
        watchdog = reactor.call_later(60, reactor.stop)

        def from_thread() -> None:
            blocked.wait(30)
            timings["sent"] = time.monotonic()
            reactor.call_soon_threadsafe(woken)

        def woken() -> None:
            timings["woken"] = time.monotonic()
            reactor.stop()

        thread = threading.Thread(target=from_thread)
        thread.start()
        # Runs in the first turn; the loop then blocks in select (only the
        # 5 s watchdog is scheduled) before the thread calls in.
        reactor.call_soon(blocked.set)
        reactor.run_forever()
        thread.join()
        watchdog.cancel()
        # Woken by the call, not by the 60 s watchdog (generous for a loaded machine).
        assert "woken" in timings and timings["woken"] - timings["sent"] < 10.0

    def test_stop_through_call_soon_threadsafe(self, reactor: Reactor) -> None:
        watchdog = reactor.call_later(30, pytest.fail, "stop() never arrived")  # generous for a loaded machine
        started = threading.Event()
        thread = threading.Thread(target=lambda: (started.wait(30), reactor.call_soon_threadsafe(reactor.stop)))
        thread.start()
        reactor.call_soon(started.set)
        reactor.run_forever()
        thread.join()
        watchdog.cancel()

    def test_stop_from_another_thread_wakes_a_select_with_no_timer_pending(self) -> None:
        blocked = threading.Event()

        class SignallingSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
            """Tells when the loop is about to wait with no timeout (nothing due, no timer)."""

            def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
                if timeout is None:
                    blocked.set()
                return super().select(timeout)

        reactor = Reactor(selector=SignallingSelector())
        stopped_from_thread: list[float] = []
        thread = threading.Thread(target=lambda: (blocked.wait(30), stopped_from_thread.append(time.monotonic()),
                                                  reactor.stop()))
        # Safety net, outside the reactor (no timer may be pending): if stop() did not wake
        # select, this ends the wait instead of hanging the suite, and the test fails.
        watchdog = threading.Timer(60, reactor.call_soon_threadsafe, (reactor.stop,))
        try:
            thread.start()
            watchdog.start()
            reactor.run_forever()
            returned = time.monotonic()
        finally:
            watchdog.cancel()
            thread.join()
            watchdog.join()
            reactor.close()
        assert reactor.scheduled_timers == 0
        # Woken by stop() itself, not by the 60 s watchdog (generous for a loaded machine).
        assert stopped_from_thread and returned - stopped_from_thread[0] < 10.0

    def test_many_threads_all_callbacks_arrive(self, reactor: Reactor) -> None:
        seen: list[int] = []

        def worker(base: int) -> None:
            for i in range(1000):
                reactor.call_soon_threadsafe(seen.append, base + i)

        threads = [threading.Thread(target=worker, args=(k * 1000,)) for k in range(4)]
        for thread in threads:
            thread.start()
        assert reactor.run_until(lambda: len(seen) == 4000, timeout=5)
        for thread in threads:
            thread.join()
        assert sorted(seen) == list(range(4000))

    def test_signal_callback_runs_inside_the_loop(self, reactor: Reactor) -> None:
        previous = signal.getsignal(signal.SIGUSR1)
        calls: list[tuple[str, bool]] = []
        reactor.add_signal_handler(signal.SIGUSR1, lambda tag: calls.append((tag, in_loop[0])), "usr1")
        in_loop = [False]

        def predicate() -> bool:
            in_loop[0] = True  # run_until is driving the loop from here on
            return bool(calls)

        os.kill(os.getpid(), signal.SIGUSR1)
        # The Python-level handler has run by now: it only recorded the number.
        assert calls == []
        assert reactor.run_until(predicate, timeout=5)
        assert calls == [("usr1", True)]
        assert reactor.remove_signal_handler(signal.SIGUSR1)
        assert not reactor.remove_signal_handler(signal.SIGUSR1)
        assert signal.getsignal(signal.SIGUSR1) is previous

    def test_close_restores_signal_handler_and_wakeup_fd(self) -> None:
        previous = signal.getsignal(signal.SIGUSR2)
        r = Reactor()
        r.add_signal_handler(signal.SIGUSR2, print)
        r.close()
        assert signal.getsignal(signal.SIGUSR2) is previous
        old = signal.set_wakeup_fd(-1)
        signal.set_wakeup_fd(old)
        assert old == -1


class TestFileDescriptors:
    def test_reader_and_writer_share_one_key(self, reactor: Reactor) -> None:
        a, b = socket.socketpair()
        with a, b:
            events: list[str] = []
            reactor.add_reader(a, lambda: (events.append("read"), a.recv(100)))
            reactor.add_writer(a, lambda: events.append("write"))
            assert reactor.has_reader(a) and reactor.has_writer(a)
            assert reactor.run_until(lambda: "write" in events, timeout=5)
            assert reactor.remove_writer(a)
            assert not reactor.remove_writer(a)
            assert reactor.has_reader(a) and not reactor.has_writer(a)
            b.send(b"x")
            assert reactor.run_until(lambda: "read" in events, timeout=5)
            assert reactor.remove_reader(a)
            assert not reactor.has_reader(a)
            assert not reactor.remove_reader(a)

    def test_a_failing_reader_is_logged_as_an_fd_registration(
            self, reactor: Reactor, caplog: pytest.LogCaptureFixture) -> None:
        a, b = socket.socketpair()
        try:
            def fail() -> None:
                raise RuntimeError("bug in a reader")

            reactor.add_reader(a, fail)
            b.send(b"x")
            with caplog.at_level(logging.ERROR, logger="stktagg.loop"):
                assert reactor.run_until(lambda: bool(caplog.records), timeout=5)
            assert "<FdRegistration reader " in caplog.records[0].getMessage()
            reactor.remove_reader(a)
        finally:
            a.close()
            b.close()

    def test_removed_reader_queued_in_same_turn_does_not_run(self, reactor: Reactor) -> None:
        a, b = socket.socketpair()
        c, d = socket.socketpair()
        with a, b, c, d:
            seen: list[str] = []
            # Both fds are ready in the same turn; whichever runs first
            # removes the other, which must then not run.
            reactor.add_reader(a, lambda: (seen.append("a"), reactor.remove_reader(c)))
            reactor.add_reader(c, lambda: (seen.append("c"), reactor.remove_reader(a)))
            b.send(b"x")
            d.send(b"x")
            reactor.run_once(5)
            assert len(seen) == 1
            reactor.remove_reader(a)
            reactor.remove_reader(c)


class TestCoalescing:
    """At low load the descriptors are polled at most once per ``coalesce`` seconds (issue 15)."""

    COALESCE = 0.01

    @pytest.fixture
    def calm(self) -> Iterator[tuple[Reactor, FakeClock, RecordingSelector, list[float]]]:
        clock, selector, sleeps = FakeClock(), RecordingSelector(), []

        def sleep(seconds: float) -> None:  # the fake clock moves by what the loop sleeps
            sleeps.append(seconds)
            clock.now += seconds

        r = Reactor(clock=clock, selector=selector, coalesce=self.COALESCE, sleep=sleep)
        clock.now += 1.0  # a quiet second: the load is measured at the end of a turn
        r.run_once(0)
        yield r, clock, selector, sleeps
        r.close()

    @staticmethod
    def first_read(r: Reactor, sleeps: list[float]) -> tuple[socket.socket, socket.socket, list[bytes]]:
        """A reader, and a first byte read by a poll at once (the first event after a quiet spell)."""
        a, b = socket.socketpair()
        got: list[bytes] = []
        r.add_reader(a, lambda: got.append(a.recv(100)))
        b.send(b"1")
        r.run_once(5)
        assert got == [b"1"] and sleeps == []
        return a, b, got

    def test_after_a_poll_with_events_the_next_poll_waits(self, calm) -> None:
        r, clock, selector, sleeps = calm
        a, b, got = self.first_read(r, sleeps)
        with a, b:
            polled_at = clock.now
            b.send(b"2")
            r.run_once(5)
            assert got == [b"1", b"2"]
            assert sleeps == [pytest.approx(self.COALESCE)]
            assert clock.now == pytest.approx(polled_at + self.COALESCE)
            assert selector.timeouts[-1] == pytest.approx(5 - self.COALESCE)  # the rest of the caller's wait
            r.remove_reader(a)

    def test_a_timer_due_before_the_next_poll_runs_without_polling(self, calm) -> None:
        r, clock, selector, sleeps = calm
        a, b, got = self.first_read(r, sleeps)
        with a, b:
            fired: list[float] = []
            r.call_later(0.004, lambda: fired.append(clock.now))
            b.send(b"2")
            polls = len(selector.timeouts)
            r.run_once(5)
            assert fired and got == [b"1"]  # the timer ran; the waiting byte was not read yet
            assert len(selector.timeouts) == polls
            r.run_once(5)
            assert got == [b"1", b"2"]
            assert sleeps == [pytest.approx(0.004), pytest.approx(self.COALESCE - 0.004)]
            r.remove_reader(a)

    def test_a_busy_loop_polls_at_once(self, calm) -> None:
        r, clock, selector, sleeps = calm
        a, b = socket.socketpair()
        got: list[bytes] = []
        r.add_reader(a, lambda: got.append(a.recv(100)))
        with a, b:
            def busy() -> None:  # a callback that takes half a second of loop time
                clock.now += 0.5
            for _ in range(3):
                r.call_soon(busy)
                r.run_once(0)
            for n in range(3):
                b.send(b"x")
                r.run_once(5)
            assert len(got) == 3 and sleeps == []
            r.remove_reader(a)

    def test_off_by_default(self) -> None:
        clock, selector, sleeps = FakeClock(), RecordingSelector(), []
        r = Reactor(clock=clock, selector=selector, sleep=sleeps.append)
        a, b = socket.socketpair()
        with a, b:
            got: list[bytes] = []
            r.add_reader(a, lambda: got.append(a.recv(100)))
            clock.now += 1.0
            for n in range(3):
                b.send(b"x")
                r.run_once(5)
            assert len(got) == 3 and sleeps == []
            r.remove_reader(a)
        r.close()
