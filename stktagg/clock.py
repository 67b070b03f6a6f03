"""The process's one clock, and the three forms its time takes.

Imports nothing of ``stktagg``. The daemon makes one ``Clock`` and hands it
down (the reactor, the server and its parts); tests hand a ``ManualClock``.
Nobody else reads the system clock for protocol or table time, and the
conversions between the forms are the functions below, nowhere else:

- **seconds** (``Clock.now()``): float seconds of a monotonic clock, from an
  arbitrary origin. The reactor's timers and every ``PeerSession`` deadline
  (handshake, heartbeat, silence) run on it; a ``now`` passed around between
  modules is always this form.
- **table milliseconds** (``table_ms(now)``, ``Clock.now_ms()``): integer
  milliseconds of that same clock plus ``CLOCK_BASE_MS``. The tables keep
  unsigned times, and "now minus an age a peer announced" (up to 2**32 ms)
  must never fall before the origin, even on a machine booted seconds ago.
  Only the tables and what computes their arguments use this form.
- **wall time** (``Clock.wall()``): seconds since the Unix epoch, read when
  something happens that an operator wants to see dated (a peer's hello,
  the start of the process). For display only, never a deadline: it jumps
  when the system time is set.
"""

from __future__ import annotations

import time
from typing import Callable

__all__ = ["CLOCK_BASE_MS", "Clock", "ManualClock", "table_ms"]

#: Added to the clock's milliseconds for the tables: 2**36 ms (about 2 years),
#: above any period or expiry a peer can announce (32-bit milliseconds).
CLOCK_BASE_MS = 1 << 36


def table_ms(now: float) -> int:
    """The tables' time (integer ms from ``CLOCK_BASE_MS``) of the clock instant ``now`` (s)."""
    return int(now * 1000) + CLOCK_BASE_MS


class Clock:
    """The one source of time: monotonic seconds, their table form, and wall time.

    Args:
        monotonic: returns monotonic seconds (default ``time.monotonic``).
        wall: returns seconds since the epoch (default ``time.time``).
    """

    def __init__(self, monotonic: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self._monotonic = monotonic
        self._wall = wall

    def now(self) -> float:
        """The current instant, in seconds (sessions, the reactor, timers)."""
        return self._monotonic()

    def now_ms(self) -> int:
        """The current instant in the tables' form: ``table_ms(now())``."""
        return table_ms(self._monotonic())

    def wall(self) -> float:
        """Seconds since the epoch, for display only."""
        return self._wall()


class ManualClock(Clock):
    """A clock that moves only when told to: tests drive time exactly with it.

    Wall time moves with it, from ``wall_start``; neither depends on the
    machine's date.
    """

    def __init__(self, start: float = 1000.0, wall_start: float = 1_000_000_000.0) -> None:
        super().__init__(self._read, self._read_wall)
        self.seconds = start
        self._wall_offset = wall_start - start

    def _read(self) -> float:
        return self.seconds

    def _read_wall(self) -> float:
        return self.seconds + self._wall_offset

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (never back: it is a monotonic clock)."""
        if seconds < 0:
            raise ValueError(f"a monotonic clock cannot go back ({seconds} s)")
        self.seconds += seconds
