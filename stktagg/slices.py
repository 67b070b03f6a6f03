"""Work that grows with a table, done in slices between the loop's other work (issue 14).

Imports nothing of ``stktagg``: a ``Slicer`` needs an event loop with
``call_soon`` and a clock with ``now()`` (``clock.Clock``), both passed in.
Runs in the I/O thread.

A job is anything with ``step(now, keys) -> bool`` (do about ``keys`` keys of
work; True once finished), ``ready() -> bool`` (False while it waits, for
example for its peer's socket buffer to drain) and ``cancelled`` (a job
whose session ended). The ``Slicer`` runs the ready jobs in turns: in each
loop turn it gives every ready job one step of ``STEP_KEYS`` keys, round
after round, until ``TURN_BUDGET`` seconds or ``TURN_KEYS`` keys are spent
(the key bound is what holds on a clock that does not move, as in tests),
then goes on at the next loop turn, after reads, timers and the CLI. So
several jobs progress together, and the loop turn stays bounded whatever
the tables' sizes or the number of jobs. A job that is not ready is skipped
until ``wake()`` (its socket became writable); finished and cancelled jobs
are dropped.
"""

from __future__ import annotations

import typing
from collections import deque
from collections.abc import Callable

__all__ = ["STEP_KEYS", "Slicer", "SliceJob", "TURN_BUDGET", "TURN_KEYS"]

#: Keys one step of a job handles (a step is the unit of interleaving).
STEP_KEYS = 500
#: Clock seconds of job steps per loop turn at most (then the loop goes on).
TURN_BUDGET = 0.010
#: Keys per loop turn at most, over all jobs, whatever the clock says.
TURN_KEYS = 10_000


class SliceJob(typing.Protocol):
    cancelled: bool

    def ready(self) -> bool:
        """False while the job waits (``Slicer.wake`` is called when that may have changed)."""

    def step(self, now: float, keys: int) -> bool:
        """Do about ``keys`` keys of work; True once the job is finished."""


class _Loop(typing.Protocol):
    def call_soon(self, callback: Callable[..., object], *args: typing.Any) -> object: ...


class _Clock(typing.Protocol):
    def now(self) -> float: ...


class Slicer:
    """Runs slice jobs a bounded amount per loop turn (see the module docstring)."""

    def __init__(self, loop: _Loop, clock: _Clock, *, budget: float = TURN_BUDGET, turn_keys: int = TURN_KEYS,
                 step_keys: int = STEP_KEYS) -> None:
        self._loop = loop
        self._clock = clock
        self._budget = budget
        self._turn_keys = turn_keys
        self._step_keys = step_keys
        self._jobs: deque[SliceJob] = deque()  #: round-robin order: the next to step first
        self._scheduled = False

    def __len__(self) -> int:
        """Jobs not finished yet (waiting ones included)."""
        return len(self._jobs)

    def add(self, job: SliceJob) -> None:
        """Start ``job``: its first step runs at the next loop turn."""
        self._jobs.append(job)
        self.wake()

    def discard(self, job: SliceJob) -> None:
        """Forget ``job`` now (its session ended), whether it was waiting or not."""
        try:
            self._jobs.remove(job)
        except ValueError:
            pass

    def wake(self) -> None:
        """A job may be ready again: have a turn run soon (nothing if one is scheduled)."""
        if not self._scheduled and self._jobs:
            self._scheduled = True
            self._loop.call_soon(self._turn)

    def _turn(self) -> None:
        self._scheduled = False
        jobs = self._jobs
        start = self._clock.now()  # the one ``now`` of this callback, for every step
        spent = 0
        skipped = 0  # jobs in a row found waiting: once all are, the turn is over
        while jobs and skipped < len(jobs) and spent < self._turn_keys:
            job = jobs.popleft()
            if job.cancelled:
                continue
            if not job.ready():
                jobs.append(job)
                skipped += 1
                continue
            skipped = 0
            if not job.step(start, self._step_keys):
                jobs.append(job)  # the next job steps first: every job progresses
            spent += self._step_keys
            if self._clock.now() - start >= self._budget:
                break
        if any(not job.cancelled and job.ready() for job in jobs):
            self.wake()
