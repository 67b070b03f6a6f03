"""Backpressure: reading stops while the workers are behind, and while the pushes are (pacing)."""

from __future__ import annotations

from stktagg.backpressure import PACE_HIGH, PACE_LOW, Backpressure


class FakeTransport:
    def __init__(self) -> None:
        self.closed = False
        self.reading = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


def setup(pending=0):
    transports = [FakeTransport(), FakeTransport()]
    state = {"pending": pending}
    return Backpressure(lambda: state["pending"], lambda: transports, limit=100), transports, state


def test_reading_stops_while_the_workers_are_behind_and_resumes_below_half():
    bp, transports, state = setup()
    state["pending"] = 101
    bp.check()
    assert bp.paused and not any(t.reading for t in transports)
    state["pending"] = 60
    bp.release()
    assert bp.paused  # not yet below half
    state["pending"] = 49
    bp.release()
    assert not bp.paused and all(t.reading for t in transports)


def test_a_big_push_backlog_pauses_reading_until_it_is_small_again():
    bp, transports, _ = setup()
    bp.release(PACE_LOW)  # one turn's reads waiting: normal
    assert not bp.paused
    bp.release(PACE_HIGH + 1)
    assert bp.paused and not any(t.reading for t in transports)
    bp.release(PACE_LOW)  # smaller, not small: still paused
    assert bp.paused
    bp.release(PACE_LOW - 1)
    assert not bp.paused and all(t.reading for t in transports)


def test_pushes_caught_up_do_not_resume_while_the_workers_are_behind():
    bp, transports, state = setup(pending=101)
    bp.check()
    bp.release(0)
    assert bp.paused and not any(t.reading for t in transports)
