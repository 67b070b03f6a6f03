"""The dashboard's read-only JSON API (issue 19): what the page shows, made from ``status.Status``.

Imports ``cli`` (rows, columns and keys as ``show table`` makes them), ``clock``
(table time), ``datatypes`` (rates as HAProxy reads them), ``errors``, ``schema``
(key text) and ``status``. Runs in the I/O thread. Nothing here changes state.

- ``overview(status, now, wall)``: the sections, their peers (role, state, last
  hello, traffic, updates per second) and tables (with the history tables made
  of each aggregate), the update rates of the last five minutes, the loop's
  figures.
- ``key_data(status, params, now, wall)``: one key of a table: its aggregate,
  each peer's part (expired parts marked), its history tables' values.
- ``TableScan``: the top ``limit`` keys of a table by one column, among those
  whose text holds ``filter``. A table of a million keys cannot be read in a
  loop turn, so the scan is a ``slices`` job: each step reads one batch of
  keys under its stripe's lock (``TableStatus.column``: the sorted column of
  the aggregate only, no peers' parts) and keeps the best ``limit`` so far; the peers' parts and history
  values are read for those keys only, at the end. So a sorted view of any
  size costs the loop a bounded amount per turn (``SCAN_TURN_BUDGET``, on a
  slicer of its own: the dashboard waits, the peers do not).
- ``Dashboard``: the service the HTTP connections share: answers of
  ``/api/table`` kept ``CACHE_SECONDS``, or twice as long as they took to
  make (a page polls; several pages polling the same view cost one scan),
  a scan under way shared by identical queries, at most ``MAX_SCANS``
  different scans at once (then 503).
"""

from __future__ import annotations

import heapq
import json
import logging
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .cli import _RATE, RUNTIME, _columns, _named_values, _rows_of, loop_info, parse_key
from .clock import table_ms
from .datatypes import read_rate
from .errors import ApiError, CliError
from .schema import StdType, format_key
from .status import SectionStatus, Status, StatusSource, TableStatus

__all__ = ["CACHE_SECONDS", "DEFAULT_LIMIT", "Dashboard", "MAX_LIMIT", "MAX_SCANS", "SCAN_TURN_BUDGET",
           "SCAN_TURN_KEYS", "TableQuery", "TableScan", "key_data", "overview"]

#: Keys a table view lists unless the query says otherwise, and at most.
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
#: Longest filter accepted (a key's text is at most a few hundred characters).
MAX_FILTER = 256
#: How long an ``/api/table`` answer is served again to the same query (s): at least this,
#: and at least ``CACHE_PER_SCAN`` times as long as the scan took. A big table under load
#: takes seconds to read a part per turn; pages polling it every 2 s would otherwise keep a
#: scan running all the time. So the dashboard takes a third of the loop's spare time at most.
CACHE_SECONDS = 1.0
CACHE_PER_SCAN = 2.0
#: The dashboard's scans run on a slicer of their own, with a smaller share of each loop turn
#: than the teaches and clears (``slices.TURN_BUDGET``, 10 ms): under load a view of a big
#: table comes later (its answer is then kept longer, ``CACHE_PER_SCAN``), the peers do not wait.
SCAN_TURN_BUDGET = 0.004
SCAN_TURN_KEYS = 4000
#: Different table scans under way at once, at most; another query gets 503 meanwhile.
MAX_SCANS = 4
#: Answers kept at most (the oldest go first).
MAX_CACHED = 32

#: A finished answer: the JSON body, as bytes.
Body = bytes
#: Gets an answer: its HTTP status and its JSON body.
Answer = Callable[[int, Body], None]

log = logging.getLogger(__name__)


def _text(name: bytes) -> str:
    return name.decode("utf-8", "backslashreplace")


def _history_tables(section: SectionStatus, table: TableStatus) -> list[TableStatus]:
    """The history tables made of ``table`` (a ``history`` line's, issue 18)."""
    return [t for t in section.tables if t.mode.value == "history" and t.source == table.name]


# -- /api/overview ---------------------------------------------------------------------------------


def overview(status: Status, now: float, wall: float) -> dict:
    """Everything the page shows besides a table's keys (see the module docstring)."""
    from . import __version__

    sections = []
    for section in status.sections:
        peers = []
        for peer in section.peers:
            traffic = peer.traffic
            peers.append({
                "name": peer.name, "role": peer.role.value,
                "state": peer.state.value if peer.state is not None else "idle",
                "address": peer.address, "tls": peer.tls, "last_hello": peer.last_hello,
                "updates_in": traffic.updates_in, "updates_out": traffic.updates_out,
                "updates_in_per_s": peer.updates_in_per_s, "updates_out_per_s": peer.updates_out_per_s,
                "last_error": peer.last_error,
            })
        tables = [{
            "name": _text(t.name), "mode": t.mode.value, "source": _text(t.source), "entries": t.entries,
            "expire_ms": t.expire_ms, "updates": t.changes, "dropped": t.dropped,
            "history": [_text(h.name) for h in _history_tables(section, t)],
        } for t in section.tables]
        sections.append({"name": section.name, "peers": peers, "tables": tables})
    loop = loop_info(status.loop)
    history = None
    if status.history is not None:
        history = {"path": status.history.path, "errors": status.history.errors,
                   "last_error": status.history.last_error,
                   "lines": [{"section": line.section, "source": line.source, "target": line.target,
                              "stat": line.stat, "window_ms": line.window_ms, "offset_ms": line.offset_ms}
                             for line in status.history.lines]}
    return {
        "version": __version__, "python": RUNTIME, "pid": status.pid, "now": wall,
        "uptime_s": int(now - status.started_at),
        "updates_received_total": status.updates_in, "updates_pushed_total": status.updates_out,
        "rates": dict(status.rates),
        # seconds before now, received/s, pushed/s: the page's chart, oldest first
        "trend": [[round(t - now, 1), received, pushed] for t, received, pushed in status.trend],
        "loop": {"longest_turn_ms_1m": loop["loop_longest_turn_ms_1m"],
                 "slowest_callback_1m": loop["loop_slowest_callback_1m"]},
        "sections": sections, "history": history,
    }


# -- what the table API reads ----------------------------------------------------------------------


def find_table(status: Status, params: Mapping[str, str]) -> tuple[SectionStatus, TableStatus]:
    """The section and table a query names (``section=``, ``table=``), or a 404."""
    section = status.section(params.get("section", ""))
    if section is None:
        raise ApiError(404, f"no such aggregations section: {params.get('section', '')!r}")
    name = params.get("table", "").encode("utf-8", "surrogateescape")
    table = section.table(name)
    if table is None:
        raise ApiError(404, f"no such table: {params.get('table', '')!r}")
    return section, table


def _history_values(section: SectionStatus, table: TableStatus, key: bytes, now_ms: int) -> dict:
    """``{history table: its displayed values for key, or None}`` for the history tables of ``table``."""
    out = {}
    for history in _history_tables(section, table):
        found = history.table.lookup(key, now_ms)
        values = found[0] if found is not None else None
        out[_text(history.name)] = _named_values(_columns(history), values) if values is not None else None
    return out


def _full_rows(section: SectionStatus, table: TableStatus, keys: list[bytes], now_ms: int) -> list[dict]:
    """The rows of ``keys`` as ``show table ... json`` gives them, with their history values."""
    raw = []
    for key in keys:
        raw += table.rows(now_ms, key)
    rows = _rows_of(section, table, raw, now_ms, [])
    for key, row in zip([r[0] for r in raw], rows):
        row.pop("_columns", None)
        row["history"] = _history_values(section, table, key, now_ms)
    return rows


def column_names(table: TableStatus) -> list[str]:
    """The data columns as ``show table`` names them, in order."""
    return [column[2] for column in _columns(table)]


def key_data(status: Status, params: Mapping[str, str], now: float, wall: float) -> dict:
    """``/api/key?section=&table=&key=``: one key's row (``found`` false when it is not there)."""
    section, table = find_table(status, params)
    if "key" not in params:
        raise ApiError(400, "key= is required")
    try:
        key = parse_key(table, params["key"])
    except CliError as exc:
        raise ApiError(400, str(exc)) from None
    rows = _full_rows(section, table, [key], table_ms(now))
    return {"section": section.name, "table": _text(table.name), "columns": column_names(table), "now": wall,
            "found": bool(rows), "row": rows[0] if rows else None}


# -- /api/table --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TableQuery:
    """What ``/api/table`` is asked: a table, its order, a filter on the key's text, how many keys."""

    section: SectionStatus
    table: TableStatus
    sort: str  #: ``key``, ``expire`` or a data column's name
    descending: bool
    filter: str  #: kept when the key's text holds it, case ignored ("" keeps every key)
    limit: int

    @property
    def identity(self) -> tuple:
        """What two queries with the same answer share (the cache's key)."""
        return (self.section.name, self.table.name, self.sort, self.descending, self.filter, self.limit)

    @classmethod
    def parse(cls, status: Status, params: Mapping[str, str]) -> "TableQuery":
        section, table = find_table(status, params)
        columns = _columns(table)
        names = [column[2] for column in columns]
        default = next((c[2] for c in columns if c[3] == _RATE), names[0] if names else "key")
        sort = params.get("sort") or default
        if sort not in ("key", "expire", *names):
            raise ApiError(400, f"cannot sort by {sort!r} (key, expire, {', '.join(names)})")
        order = params.get("order") or ("asc" if sort == "key" else "desc")
        if order not in ("asc", "desc"):
            raise ApiError(400, "order= is asc or desc")
        try:
            limit = int(params.get("limit") or DEFAULT_LIMIT)
        except ValueError:
            raise ApiError(400, "limit= is a number") from None
        if not 1 <= limit <= MAX_LIMIT:
            raise ApiError(400, f"limit= is from 1 to {MAX_LIMIT}")
        text = params.get("filter", "")
        if len(text) > MAX_FILTER:
            raise ApiError(400, f"filter= is at most {MAX_FILTER} characters")
        return cls(section, table, sort, order == "desc", text.lower(), limit)


def _sort_column(query: TableQuery) -> tuple[tuple[int, int] | None, Callable[[bytes, object, int], object]]:
    """What the scan reads of each key (``TableStatus.column``'s column: (field, element), or
    None for the expiry alone), and ``value(key, wire value, expiry)``: what it orders keys by
    (ints, or bytes for keys and text)."""
    if query.sort == "key":
        return None, lambda key, wire, expire: key
    if query.sort == "expire":
        return None, lambda key, wire, expire: expire
    index, element, _, kind, period, _ = next(c for c in _columns(query.table) if c[2] == query.sort)
    text = query.table.fields[index].info.std is StdType.DICT

    def value(key: bytes, wire: object, expire: int) -> object:
        if wire is None:
            return b"" if text else 0
        if kind == _RATE:
            return read_rate(wire, period) if period else 0
        return wire
    return (index, element or 0), value


class TableScan:
    """A ``slices`` job: the top keys of a ``TableQuery`` (see the module docstring)."""

    def __init__(self, query: TableQuery, clock, wall: Callable[[], float], done: Answer) -> None:
        self.query = query
        self.cancelled = False
        self._clock = clock
        self._wall = wall
        self._done = done
        self._column, self._value = _sort_column(query)
        self._key_type = query.table.definition.key_type
        self._batches = None  #: the table's key batches, made at the first step
        self._best: list[tuple[object, bytes]] = []
        self.scanned = 0  #: keys read
        self.matched = 0  #: keys whose text holds the filter
        self._started = clock.now()

    def ready(self) -> bool:
        return True

    def step(self, now: float, keys: int) -> bool:
        """Read one batch of about ``keys`` keys; at the end, answer. True once answered.

        The table's times are read on the dashboard's clock (the status source's), not the
        slicer's ``now``: in the daemon they are one clock; a slicer may keep its budget on another.
        """
        try:
            return self._step(self._clock.now(), keys)
        except Exception:  # a bug here must cost this answer only, never the loop
            log.exception("dashboard: the scan of %s failed", _text(self.query.table.name))
            self._done(500, to_json({"error": "the table scan failed (see the daemon's log)"}))
            return True

    def _step(self, now: float, keys: int) -> bool:
        if self._batches is None:
            self._batches = self.query.table.batches(keys)
        batch = next(self._batches, None)
        if batch is None:
            self._finish(now)
            return True
        stripe, names = batch
        rows = self.query.table.column(stripe, names, table_ms(now), self._column)
        self.scanned += len(rows)
        wanted = self.query.filter
        if wanted:
            key_type = self._key_type
            rows = [row for row in rows if wanted in format_key(key_type, row[0]).lower()]
        self.matched += len(rows)
        value = self._value
        candidates = [(value(key, wire, expire), key) for key, wire, expire in rows]
        pick = heapq.nlargest if self.query.descending else heapq.nsmallest
        self._best = pick(self.query.limit, self._best + candidates)
        return False

    def _finish(self, now: float) -> None:
        query = self.query
        rows = _full_rows(query.section, query.table, [key for _, key in self._best], table_ms(now))
        body = {
            "section": query.section.name, "table": _text(query.table.name), "mode": query.table.mode.value,
            "columns": column_names(query.table), "peers": [p.name for p in query.section.peers],
            "history_tables": [_text(h.name) for h in _history_tables(query.section, query.table)],
            "sort": query.sort, "order": "desc" if query.descending else "asc", "filter": query.filter,
            "limit": query.limit, "entries": len(query.table.table), "scanned": self.scanned,
            "matched": self.matched, "scan_ms": round((self._clock.now() - self._started) * 1000, 1),
            "now": self._wall(), "rows": rows,
        }
        self._done(200, to_json(body))


def to_json(data: object) -> Body:
    """The API's JSON: compact, ASCII (every other character escaped), and ``<``, ``>`` and ``&``
    escaped too: keys are attacker-controlled, and no reader may take the answer for markup."""
    text = json.dumps(data, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode()


class _Slicer(typing.Protocol):
    def add(self, job: object) -> None: ...


class Dashboard:
    """What the HTTP connections share: the status source, the slicer, the table answers cached."""

    def __init__(self, source: StatusSource, slices: _Slicer) -> None:
        self.source = source
        self._slices = slices
        self._cache: dict[tuple, tuple[float, Body]] = {}  #: identity -> (served until, body)
        self._running: dict[tuple, list[Answer]] = {}  #: identity -> waiters

    def table(self, params: Mapping[str, str], answer: Answer) -> None:
        """Answer ``/api/table`` through ``answer`` (now, from the cache, or once the scan is done).

        Raises ``ApiError`` for a bad query, or 503 while ``MAX_SCANS`` other scans are under way.
        """
        status = self.source.status()
        query = TableQuery.parse(status, params)
        identity = query.identity
        now = self.source.clock.now()
        cached = self._cache.get(identity)
        if cached is not None and cached[0] > now:
            answer(200, cached[1])
            return
        waiters = self._running.get(identity)
        if waiters is not None:
            waiters.append(answer)
            return
        if len(self._running) >= MAX_SCANS:
            raise ApiError(503, f"{MAX_SCANS} table scans are under way; try again in a second")
        self._running[identity] = [answer]

        def done(code: int, body: Body) -> None:
            if code == 200:
                finished = self.source.clock.now()
                keep = max(CACHE_SECONDS, CACHE_PER_SCAN * (finished - now))
                self._cache[identity] = (finished + keep, body)
                while len(self._cache) > MAX_CACHED:
                    del self._cache[next(iter(self._cache))]
            for waiter in self._running.pop(identity, []):
                waiter(code, body)

        self._slices.add(TableScan(query, self.source.clock, self.source.clock.wall, done))

    def overview(self) -> Body:
        clock = self.source.clock
        return to_json(overview(self.source.status(), clock.now(), clock.wall()))

    def key(self, params: Mapping[str, str]) -> Body:
        clock = self.source.clock
        return to_json(key_data(self.source.status(), params, clock.now(), clock.wall()))
