"""How the peers' values of one key combine into the aggregate (DESIGN.md §3.2).

Pure functions over ints and tuples; no I/O, no locks, no clock (times are
``now`` arguments in milliseconds of the aggregator's monotonic clock).

Stored form of a peer's values ("contribution"), one slot per field of the
output table's layout, in field order:
- counters and tags: ``int``;
- frequency counters: ``(start, curr, prev)`` where ``start`` is the start of
  the peer's current period on *our* clock (receive time minus the age it
  sent), or ``None`` when the counter is empty or stale;
- server key: ``bytes`` or ``None``;
- arrays: a tuple of the element forms above.

Frequency counters are summed with the alignment recipe of
peers-protocol.md §6.5: each peer's counter is rotated to "now" the way
HAProxy rotates on read, then moved onto the earliest period start B among
the peers, so that HAProxy's reading of (B, ΣC, ΣQ) equals the sum of the
peers' readings until B + P. The aggregate must be pushed again by B + P;
``combine`` returns that deadline.
"""

from __future__ import annotations

from .schema import Combine, Field, StdType

U32_MAX = 0xFFFFFFFF
U64_MAX = 0xFFFFFFFFFFFFFFFF
_EMPTY_FREQ = (0, 0, 0)


def freq_from_wire(age: int, curr: int, prev: int, now: int, period: int) -> tuple[int, int, int] | None:
    """A received frequency counter in stored form, or None when empty or stale.

    An untouched counter arrives with the sender's raw clock as its age (often
    above 2**31), which the ``age >= 2 * period`` test also catches (§6.3).
    """
    if period <= 0 or age >= 2 * period or (curr == 0 and prev == 0):
        return None
    return (now - age, curr, prev)


def freq_to_wire(stored: tuple[int, int, int] | None, now: int, period: int) -> tuple[int, int, int]:
    """A stored counter as (age, curr, prev) to send, rotated so that age < period."""
    rotated = _rotate(stored, now, period)
    if rotated is None:
        return _EMPTY_FREQ
    start, curr, prev = rotated
    return (now - start, curr, prev)


def _rotate(stored: tuple[int, int, int] | None, now: int, period: int) -> tuple[int, int, int] | None:
    """HAProxy's rotate-on-read: bring the counter's current period up to ``now``."""
    if stored is None:
        return None
    start, curr, prev = stored
    elapsed = now - start
    if elapsed >= 2 * period:
        return None
    if elapsed >= period:
        return (start + period, 0, curr) if curr else None
    return stored


def sum_freq(counters: list, now: int, period: int) -> tuple[tuple[int, int, int], int | None]:
    """Sum stored counters: ((age, curr, prev) to send, re-push deadline or None).

    The deadline is B + P, when HAProxy's reading of the sum starts to drift
    from the sum of the readings; None when nothing is left to decay.
    """
    rotated = []
    for counter in counters:
        r = _rotate(counter, now, period)
        if r is not None:
            rotated.append(r)
    if not rotated:
        return _EMPTY_FREQ, None
    boundary = min(r[0] for r in rotated)
    total_curr = 0.0
    total_prev = 0
    for start, curr, prev in rotated:
        total_curr += curr + prev * (start - boundary) / period
        total_prev += prev
    curr_out = min(int(total_curr + 0.5), U32_MAX)
    return (now - boundary, curr_out, min(total_prev, U32_MAX)), boundary + period


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


def field_to_wire(field: Field, value: object, now: int) -> object:
    """One stored value in wire form (frequency counters rotated to ``now``)."""
    if field.info.std is StdType.FRQP:
        period = field.period or 0
        if field.info.is_array:
            return tuple(freq_to_wire(v, now, period) for v in value)  # type: ignore[union-attr]
        return freq_to_wire(value, now, period)  # type: ignore[arg-type]
    return value


def empty_value(field: Field) -> object:
    """The stored form of a field nobody contributed (zero, empty, no server)."""
    single = _empty_single(field)
    return (single,) * field.count if field.info.is_array else single


def _clamp(field: Field, total: int) -> int:
    return min(total, U64_MAX if field.info.std is StdType.ULL else U32_MAX)


def _combine_scalar(field: Field, values: list, latest_first: list, now: int) -> tuple[object, int | None]:
    combine = field.info.combine
    if combine is Combine.SUM:
        return _clamp(field, sum(values)), None
    if combine is Combine.MAX:
        return max(values, default=0), None
    if combine is Combine.LATEST:
        for value in latest_first:
            if value is not None and value != 0:
                return value, None
        return latest_first[0] if latest_first else empty_value(field), None
    return sum_freq(values, now, field.period or 0)


def combine(fields: tuple[Field, ...], contributions: list[tuple], latest_first: list[tuple], now: int) -> tuple[tuple, int | None]:
    """The aggregate, in wire form, of live contributions.

    Args:
        fields: the output table's layout.
        contributions: the live peers' stored values (any order).
        latest_first: the same, most recently received first (for LATEST types).
        now: our clock, ms.

    Returns:
        (values to send, the earliest re-push deadline of its rates, or None).
    """
    out = []
    deadline = None
    for index, field in enumerate(fields):
        column = [c[index] for c in contributions]
        recent = [c[index] for c in latest_first]
        if field.info.is_array:
            elements = []
            for element in range(field.count):
                value, due = _combine_scalar(field, [v[element] for v in column], [v[element] for v in recent], now)
                elements.append(value)
                deadline = _earliest(deadline, due)
            out.append(tuple(elements))
        else:
            value, due = _combine_scalar(field, column, recent, now)
            out.append(value)
            deadline = _earliest(deadline, due)
    return tuple(out), deadline


def _earliest(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def wire_to_field_values(in_fields: tuple[Field, ...], out_fields: tuple[Field, ...], values: tuple, now: int) -> tuple:
    """A received update's values (the peer's layout) in stored form, in the output layout.

    Types the output table lacks are dropped; output types the peer did not
    send are empty. Arrays are cut or padded to the output's element count.
    """
    by_type = {f.info.id: v for f, v in zip(in_fields, values)}
    stored = []
    for field in out_fields:
        if field.info.id not in by_type:
            stored.append(empty_value(field))
            continue
        value = by_type[field.info.id]
        if field.info.is_array:
            elements = [_single_from_wire(field, v, now) for v in value[: field.count]]  # type: ignore[index]
            elements += [_empty_single(field)] * (field.count - len(elements))
            stored.append(tuple(elements))
        else:
            stored.append(_single_from_wire(field, value, now))
    return tuple(stored)


def _single_from_wire(field: Field, value: object, now: int) -> object:
    if field.info.std is StdType.FRQP:
        return freq_from_wire(*value, now, field.period or 0)  # type: ignore[misc]
    return value


def _empty_single(field: Field) -> object:
    return None if field.info.std in (StdType.FRQP, StdType.DICT) else 0
