"""The arithmetic of combining peers' values (DESIGN.md §3.2), as pure functions.

No I/O, no locks, no clock (times are ``now`` arguments, ms on the
aggregator's monotonic clock). ``table.Layout`` applies these per field:
counters are summed (clamped to their width), tags take the maximum, server
ids the latest; frequency counters are summed with the alignment recipe of
peers-protocol.md §6.5, implemented here.

A frequency counter is kept as ``(start, curr, prev)``: ``start`` is the
start of the peer's current period on *our* clock (receive time minus the age
it sent). HAProxy reads a counter as curr + prev × (time left in the period)
/ P. To sum several, each is first rotated to "now" the way HAProxy rotates on
read, then moved onto the earliest period start B among them: for t in
[now, B + P), HAProxy's reading of (B, ΣC', ΣQ) equals the sum of the peers'
readings. After B + P the sum must be pushed again; ``align_sum`` returns
that deadline.
"""

from __future__ import annotations

U32_MAX = 0xFFFFFFFF
U64_MAX = 0xFFFFFFFFFFFFFFFF
EMPTY_FREQ = (0, 0, 0)


def freq_from_wire(age: int, curr: int, prev: int, now: int, period: int) -> tuple[int, int, int] | None:
    """A received (age, curr, prev) as (start, curr, prev), or None when empty or stale.

    An untouched counter arrives with the sender's raw clock as its age (often
    above 2**31), which the ``age >= 2 * period`` test also catches (§6.3).
    """
    if period <= 0 or age >= 2 * period or (curr == 0 and prev == 0):
        return None
    return (max(now - age, 0), curr, prev)  # a start before our clock's origin is clamped to it


def rotate(start: int, curr: int, prev: int, now: int, period: int) -> tuple[int, int, int] | None:
    """HAProxy's rotate-on-read: the counter with its current period brought up to ``now``."""
    if curr == 0 and prev == 0:
        return None
    elapsed = now - start
    if elapsed >= 2 * period:
        return None
    if elapsed >= period:
        return (start + period, 0, curr) if curr else None
    return (start, curr, prev)


def freq_to_wire(start: int, curr: int, prev: int, now: int, period: int) -> tuple[int, int, int]:
    """A kept counter as the (age, curr, prev) to send at ``now``: always age < period."""
    rotated = rotate(start, curr, prev, now, period)
    return EMPTY_FREQ if rotated is None else (now - rotated[0], rotated[1], rotated[2])


def align_sum(counters: list[tuple[int, int, int]], now: int, period: int) -> tuple[tuple[int, int, int], int]:
    """Sum kept counters: ((age, curr, prev) to send, re-push deadline B + P, or 0 if empty)."""
    rotated = [r for r in (rotate(s, c, p, now, period) for s, c, p in counters) if r is not None]
    return sum_rotated(rotated, now, period)


def sum_rotated(rotated: list[tuple[int, int, int]], now: int, period: int) -> tuple[tuple[int, int, int], int]:
    """``align_sum`` of counters already rotated to ``now`` (none empty)."""
    if not rotated:
        return EMPTY_FREQ, 0
    boundary = min(r[0] for r in rotated)
    total_curr = 0.0
    total_prev = 0
    for start, curr, prev in rotated:
        total_curr += curr + prev * (start - boundary) / period
        total_prev += prev
    return (now - boundary, min(int(total_curr + 0.5), U32_MAX), min(total_prev, U32_MAX)), boundary + period


def read_rate(wire: tuple[int, int, int], period: int) -> int:
    """The rate HAProxy displays for a counter sent as (age, curr, prev) (§6.4)."""
    age, curr, prev = wire
    remain = period - age
    if remain < 0:
        remain += period
        past = curr if remain >= 0 else 0
        curr = 0
    else:
        past = prev
    if remain < 0:
        return 0
    if curr == 0 and past <= 1:
        return past
    return (past * remain + curr * period) // period
