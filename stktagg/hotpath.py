"""Code generated per table layout: the tables' hot path.

Imports ``codegen``, ``collector``, ``datatypes`` and ``schema``; ``table``
uses what it generates (``Layout.fast_combine``, ``fast_pack``, ``fast_apply``).

``table.Layout.combine`` and ``Layout.pack`` are general; the functions here
are generated once per layout (straight code, no generators or per-field
dispatch) and used whenever the layout has no server key. They compute
exactly what the general ones do; the tests run both on the same inputs.
Where the names below appear in generated source (``arr``, ``at``, ``now``)
they mean what they mean in ``table``: a key's array, a record's offset in
it, the time in table milliseconds.
"""

from __future__ import annotations

import heapq
from array import array
from typing import Any

from .codec import encode_varint
from .codegen import compile_function
from .collector import untracked
from .datatypes import ALIGNED_CURR, FREQ_DISCARDED, FREQ_START, ROTATE, U32_MAX, U64_MAX
from .schema import Combine, StdType

#: A ``table.Layout`` (not imported: ``table`` imports this module).
Layout = Any

__all__ = ["EXPIRE_MASK", "PEER_SHIFT", "TIMER_SLICE", "gen_apply", "gen_collect", "gen_combine", "gen_pack"]

#: A record's first slot holds the peer's index above PEER_SHIFT and its
#: entry's expiry (ms, well under 2**48 with ``clock.CLOCK_BASE_MS``) below.
PEER_SHIFT = 48
EXPIRE_MASK = (1 << PEER_SHIFT) - 1
#: Timer granularity (ms): keys due in the same slice are recomputed together.
TIMER_SLICE = 100

#: The live records of a key's array ``arr``, combined (function-body level): shared by
#: the two templates below.
_RECORDS = """\
    live = 0
    newest = -1
    newest_at = 0
    expire_max = 0
    expire_min = 0
{init}
    for at in range(1, len(arr), size):
        expire_at = arr[at] & EXPIRE_MASK
        if expire_at <= now:
            continue
        live += 1
        if expire_at > expire_max:
            expire_max = expire_at
        if not expire_min or expire_at < expire_min:
            expire_min = expire_at
{track_newest}
{loop}"""

_COMBINE_TEMPLATE = """
def combine(arr, now, size):
{records}
    if not live:
        return None
    due = 0
{finish}
    return ({values}), expire_max, expire_min, due
"""


def _combine_parts(layout: Layout) -> dict:
    """The pieces of the combine templates: init, loop and finish lines, the values, and the
    encodings of each aggregate element in wire order (``_COLLECT_TEMPLATE``)."""
    init, loop, finish, values, encoded = [], [], [], [], []
    pad = "        "
    for c, (slot, count, width, std, combine, period, is_array) in enumerate(layout.columns):
        elements = []
        for e in range(count):
            off, name = slot + e * width, f"c{c}_{e}"
            if combine is Combine.SUM:
                init.append(f"    {name} = 0")
                loop.append(f"{pad}{name} += arr[at + {off}]")
                limit = U64_MAX if std is StdType.ULL else U32_MAX
                finish.append(f"    if {name} > {limit}: {name} = {limit}")
            elif combine is Combine.MAX:
                init.append(f"    {name} = 0")
                loop.append(f"{pad}if arr[at + {off}] > {name}: {name} = arr[at + {off}]")
            elif combine is Combine.LATEST:
                finish.append(f"    {name} = arr[newest_at + {off}]")
                if std is StdType.SINT:
                    finish.append(f"    if {name} >= 1 << 63: {name} -= 1 << 64")
            else:
                # Rates: rotate each counter to now, then sum after aligning on
                # the earliest start B (datatypes.sum_rotated), in one pass:
                # C = sum(c) + (sum(p * s) - B * sum(p)) / P.
                sc, sp, sps, b = f"{name}c", f"{name}p", f"{name}ps", f"{name}b"
                init.append(f"    {sc} = {sp} = {sps} = 0; {b} = -1")
                rotate = ROTATE.format(start="start", curr="curr", prev="prev", now="now", period=period)
                loop += [
                    f"{pad}start = arr[at + {off}]; curr = arr[at + {off + 1}]; prev = arr[at + {off + 2}]",
                    *(pad + line for line in rotate.splitlines()),
                    f"{pad}if curr or prev:",
                    f"{pad}    {sc} += curr; {sp} += prev; {sps} += prev * start",
                    f"{pad}    if {b} < 0 or start < {b}: {b} = start",
                ]
                aligned = ALIGNED_CURR.format(sum_curr=sc, sum_prev_start=sps, boundary=b, sum_prev=sp, period=period)
                finish += [
                    f"    if {b} < 0:",
                    f"        {name} = (0, 0, 0)",
                    "    else:",
                    f"        {sc} = {aligned}",
                    f"        {name} = (now - {b}, {sc} if {sc} < {U32_MAX} else {U32_MAX}, {sp} if {sp} < {U32_MAX} else {U32_MAX})",
                    f"        if not due or {b} + {period} < due: due = {b} + {period}",
                ]
            elements.append(name)
            if combine is Combine.RATE:
                encoded += [_encoding(f"{name}[{k}]") for k in range(3)]
            elif std is StdType.SINT:
                encoded.append(f"V({name} + (1 << 64) if {name} < 0 else {name})")
            else:
                encoded.append(_encoding(name))
        values.append(f"({', '.join(elements)},)" if is_array else elements[0])
    track = ("        if arr[at + 1] > newest:\n            newest = arr[at + 1]\n            newest_at = at"
             if layout.keep_received else "")
    return {"track_newest": track, "init": "\n".join(init) or "    pass", "loop": "\n".join(loop) or "        pass",
            "finish": "\n".join(finish) or "    pass", "values": _tuple_source(values), "encoded": encoded}


def gen_combine(layout: Layout):
    parts = _combine_parts(layout)
    source = _COMBINE_TEMPLATE.format(records=_records(parts, ""), finish=parts["finish"], values=parts["values"])
    return compile_function(source, "combine", {"EXPIRE_MASK": EXPIRE_MASK}, f"combine, {layout.describe()}")


_COLLECT_TEMPLATE = """
def collect(stripe, keys, now, size):
    entries = stripe.entries
    timers = stripe.timers
    taken = []
    bodies = []
    for key in keys:
        arr = entries.get(key)
        if arr is None:
            continue
{records}
        if not live:
            arr[0] = 0
            continue
        due = 0
{finish}
        deadline = expire_min if not due or expire_min < due else due
        slot = -(-deadline // TIMER_SLICE) * TIMER_SLICE
        filed = arr[0]
        arr[0] = deadline
        if not filed or -(-filed // TIMER_SLICE) * TIMER_SLICE != slot:  # else: in that slot already
            bucket = timers.get(slot)
            if bucket is None:
                timers[slot] = [key]
                heappush(stripe.timer_order, slot)
            else:
                bucket.append(key)
        taken.append(key)
        bodies.append((b"".join(({key}, {encoded})), expire_max - now))
    return taken, bodies
"""


def gen_collect(layout: Layout, string_key: bool, key_size: int):
    """``collect(stripe, keys, now, size) -> (keys, [(body, remaining ms), ...])``: for an
    aggregated table, ``AggTable.take_dirty``'s aggregation of each key (``combine``), the
    scheduling of its next change and the encoding of its update's body (key and values,
    what ``wire.compile_body_encoder`` makes) in one loop, with the stripe's lock held."""
    parts = _combine_parts(layout)
    source = _COLLECT_TEMPLATE.format(
        records=_records(parts, "    "), finish=_indented(parts["finish"], "    "),
        key="V(len(key)) + key" if string_key else "key",
        encoded=", ".join(parts["encoded"]) if parts["encoded"] else "b''")
    namespace = {"EXPIRE_MASK": EXPIRE_MASK, "TIMER_SLICE": TIMER_SLICE, "heappush": heapq.heappush,
                 "T": _varint_table(), "V": encode_varint}
    return compile_function(source, "collect", namespace,
                            f"collect, key {'string' if string_key else key_size}, {layout.describe()}")


def _records(parts: dict, more: str) -> str:
    """``_RECORDS`` with a layout's parts, indented by ``more``."""
    return _indented(_RECORDS.format(init=parts["init"], track_newest=parts["track_newest"], loop=parts["loop"]), more)


def _indented(text: str, more: str) -> str:
    return "\n".join(more + line if line else line for line in text.splitlines())


def _encoding(value: str) -> str:
    """Source of a non-negative value's varint: from a table below 2**16 (most counters and
    rates; 3 MB once per process, built on the first use), else ``codec.encode_varint``."""
    return f"(T[{value}] if {value} < {_VARINT_TABLE_SIZE} else V({value}))"


_VARINT_TABLE_SIZE = 1 << 16
_varints: list[bytes] = []


def _varint_table() -> list[bytes]:
    if not _varints:
        _varints.extend(encode_varint(v) for v in range(_VARINT_TABLE_SIZE))
    return _varints


def _pack_source(layout: Layout, indent: str) -> list[str]:
    """Lines that write ``values`` (a peer's wire values) into ``arr`` at ``at``."""
    lines, targets = [], []
    for c, (slot, count, width, std, _, period, is_array) in enumerate(layout.columns):
        names = []
        for e in range(count):
            off, name = slot + e * width, f"v{c}_{e}"
            if std is StdType.FRQP:
                a, cu, pr = f"{name}a", f"{name}c", f"{name}p"
                names.append(f"({a}, {cu}, {pr})")
                # datatypes.freq_from_wire, inlined: what it drops is stored as zeros
                names_ = {"age": a, "curr": cu, "prev": pr, "now": "now", "period": period}
                lines += [
                    f"if {FREQ_DISCARDED.format(**names_)}:",
                    f"    arr[at + {off}] = arr[at + {off + 1}] = arr[at + {off + 2}] = 0",
                    "else:",
                    f"    arr[at + {off}] = {FREQ_START.format(**names_)}",
                    f"    arr[at + {off + 1}] = {cu}; arr[at + {off + 2}] = {pr}",
                ]
            else:
                names.append(name)
                value = f"({name} + (1 << 64) if {name} < 0 else {name})" if std is StdType.SINT else name
                lines.append(f"arr[at + {off}] = {value}")
        targets.append(f"({', '.join(names)},)" if is_array else names[0])
    if targets:
        lines.insert(0, f"({', '.join(targets)},) = values")
    return [indent + line for line in lines]


def gen_pack(layout: Layout):
    source = "def pack(values, arr, at, now):\n" + ("\n".join(_pack_source(layout, "    ")) or "    pass") + "\n"
    return compile_function(source, "pack", {}, f"pack, {layout.describe()}")


_APPLY_TEMPLATE = """
def apply(table, stripe, peer, items, now):
    entries = stripe.entries
    dirty = stripe.dirty
    table_expire = table.lifetime_ms
    tag = peer << PEER_SHIFT
    for key, values, expire in items:
        if expire is None or expire > table_expire:
            lifetime = table_expire
        else:
            lifetime = expire
        arr = entries.get(key)
        if arr is None:
            arr = table.new_entry_locked(stripe, key, now, lifetime)
            if arr is None:
                continue
        for at in range(1, len(arr), {size}):
            if arr[at] >> PEER_SHIFT == peer:
                break
        else:
            # A new array of the exact size: extend() would over-allocate.
            at = len(arr)
            arr = entries[key] = untracked(arr + BLANK)
        arr[at] = tag | (now + lifetime)
{received}
{pack}
        dirty[key] = None
    stripe.changes += len(items)
"""


def gen_apply(layout: Layout):
    """``apply(table, stripe, peer, items, now)``: ``AggTable.apply``'s loop with the record's
    lookup and ``pack`` inlined, for a peer whose layout is the table's (the lock is held)."""
    source = _APPLY_TEMPLATE.format(
        size=layout.record, received="        arr[at + 1] = now" if layout.keep_received else "",
        pack="\n".join(_pack_source(layout, " " * 8)))
    blank = array("Q", bytes(8 * layout.record))
    return compile_function(source, "apply", {"PEER_SHIFT": PEER_SHIFT, "untracked": untracked, "BLANK": blank},
                            f"apply, {layout.describe()}")


def _tuple_source(items: list[str]) -> str:
    """Source of a tuple display: ``()``, ``(a,)``, ``(a, b)`` (a table may store no data type)."""
    return f"({', '.join(items)},)" if items else "()"
