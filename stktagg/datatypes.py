"""The arithmetic of combining peers' values (DESIGN.md §3.2), as pure functions.

Imports ``codegen`` only (the rules below are compiled from their source text).

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

from textwrap import indent

from .codegen import compile_function

U32_MAX = 0xFFFFFFFF
U64_MAX = 0xFFFFFFFFFFFFFFFF
EMPTY_FREQ = (0, 0, 0)

# -- the rules of frequency counters, written once ----------------------------------------
#
# Each rule is Python source with {placeholders}. The functions below are compiled
# from it, and ``table``'s code generators paste the very same text into the
# per-layout hot path, where a function call per counter would cost more than the
# rule itself. Change a rule here and both follow; the tests compare the two paths.

#: A received (age, curr, prev) is dropped when stale or empty (§6.3). An untouched
#: counter arrives with the sender's raw clock as its age (often above 2**31), which
#: the age test also catches.
FREQ_DISCARDED = "{age} >= 2 * {period} or not ({curr} or {prev})"
#: Where a kept counter's period started, on our clock (a start before its origin is
#: clamped to it).
FREQ_START = "{now} - {age} if {now} > {age} else 0"
#: HAProxy's rotate-on-read, as statements updating the names {start}, {curr}, {prev}
#: (an emptied counter is left with curr = prev = 0).
ROTATE = """\
if {curr} or {prev}:
    elapsed = {now} - {start}
    if elapsed >= {period}:
        if elapsed >= 2 * {period} or not {curr}:
            {curr} = {prev} = 0
        else:
            {start} += {period}; {prev} = {curr}; {curr} = 0"""
#: The current count of counters summed after moving each onto the earliest start B:
#: C = sum(curr) + (sum(prev * start) - B * sum(prev)) / P, rounded half up, in integers.
ALIGNED_CURR = "{sum_curr} + ({sum_prev_start} - {boundary} * {sum_prev} + {period} // 2) // {period}"

_NAMES = {"age": "age", "curr": "curr", "prev": "prev", "now": "now", "period": "period", "start": "start"}

freq_from_wire = compile_function(f'''
def freq_from_wire(age, curr, prev, now, period):
    """A received (age, curr, prev) as (start, curr, prev), or None when empty or stale."""
    if {FREQ_DISCARDED.format(**_NAMES)}:
        return None
    return ({FREQ_START.format(**_NAMES)}, curr, prev)
''', "freq_from_wire", {}, "datatypes.FREQ_DISCARDED, FREQ_START")

rotate = compile_function(f'''
def rotate(start, curr, prev, now, period):
    """HAProxy's rotate-on-read: the counter with its current period brought up to ``now``, or None."""
{indent(ROTATE.format(**_NAMES), "    ")}
    return (start, curr, prev) if curr or prev else None
''', "rotate", {}, "datatypes.ROTATE")

aligned_curr = compile_function(f'''
def aligned_curr(sum_curr, sum_prev_start, boundary, sum_prev, period):
    return {ALIGNED_CURR.format(sum_curr="sum_curr", sum_prev_start="sum_prev_start", boundary="boundary",
                                sum_prev="sum_prev", period="period")}
''', "aligned_curr", {}, "datatypes.ALIGNED_CURR")


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
    sum_curr = sum(curr for _, curr, _ in rotated)
    sum_prev = sum(prev for _, _, prev in rotated)
    sum_prev_start = sum(prev * start for start, _, prev in rotated)
    curr = aligned_curr(sum_curr, sum_prev_start, boundary, sum_prev, period)
    return (now - boundary, min(curr, U32_MAX), min(sum_prev, U32_MAX)), boundary + period


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
