"""The runtime CLI on the stats socket, as HAProxy's runtime API.

Commands (``help`` lists them): ``show aggrs``, ``show table``, ``show history``, ``show peers``,
``show info``, each with a ``json`` form; ``show metrics`` (the Prometheus
text of ``metrics.render``: a sharded daemon's main process asks each shard
process for it, see ``shardproxy``); ``clear table``; ``prompt`` and
``quit``. Several commands may share a line, separated by ``;``.

Handlers are pure functions: ``handler(args, status, now, commands)`` reads
a ``status.Status`` snapshot and ``now`` (the clock's seconds, never read
here), builds rows (plain dicts) which one renderer writes as the
reference's text layouts and another as JSON, and changes state only
through a command object handed to ``commands`` (``clear table``). They
never see the server. ``execute`` runs a command line, taking a fresh
snapshot and reading the clock once per command from its
``status.StatusSource``. ``CliConnection`` is the transport protocol:
without ``prompt`` it answers one line and closes (HAProxy's behaviour, what
``socat`` and ``nc -U`` expect); in prompt mode it answers each line followed
by a ``> `` prompt until ``quit``. A large answer (``show table``) is a
generator of text chunks (``Answer``) that the connection writes one chunk
per loop turn, as fast as the client reads (see "Issue 14: streamed dumps"
in docs/ARCHITECTURE.md).

Text layouts of the reference document (seeds/000, "show aggrs", "show table")::

    aggregations <id>
      table '<source>' aggregated to '<output>' (expire: <ms> nb_entries: <n>)
        update: 0x<changes> used: 0x<entries>
        peer '<name>' (<index>) state: 0x<bits> push: 0x<id> ack: 0x<id> sync: 0x<id>

``state`` bits: 0x1 connected, 0x2 handshake done, 0x4 resync done (the peer
taught us after our request): a working session shows 0x7. ``push`` and
``ack`` are the last update ids sent and acknowledged on the current session;
``sync`` repeats ``push`` (the layout has the column; we keep no separate id
for the last resync answer).

Imports ``clock`` (the table-time conversion), ``datatypes``, ``errors``, ``history`` (windows),
``metrics`` (``show metrics``), ``schema``, ``status`` and ``table`` (table modes).
"""

from __future__ import annotations

import ipaddress
import json
import platform
import shlex
import time
from collections.abc import Generator, Iterable
from typing import Callable

from .clock import table_ms
from .datatypes import read_rate
from .history import window_buckets
from .errors import CliError
from .metrics import render as render_metrics
from .schema import Field, KeyType, StdType, format_key, integer_key
from .status import ClearTable, Commands, LoopStats, SectionStatus, Status, StatusSource, TableStatus
from .table import TableMode

HELP = """\
help                                     : this message
prompt                                   : interactive mode (answer each line, until quit)
quit                                     : close the connection
show aggrs [json]                        : the aggregations sections, their tables and peers
show table <aggregations> <table> [key <k>] [data.<type> <op> <value>]... [json]
                                         : each key's aggregate and each peer's entry
                                           (<op>: eq ne le lt ge gt, on the aggregate)
show peers [json]                        : every peer session: state, address, TLS, traffic, errors
show info [json]                         : version, uptime, tables, entries, update rates,
                                           the event loop's turn durations
show metrics                             : the Prometheus metrics (text format), as the
                                           metrics endpoint serves them
clear table <aggregations> <table> [key <k>]
                                         : forget entries (all, or one key), and clear the
                                           nodes' aggregates of them
show history <aggregations> <table> [key <k>] [json]
                                         : a history table's line (stat, window, buckets
                                           sampled, last computation); with a key, its
                                           stored samples, one per bucket, oldest first
"""

#: Longest command line accepted; the answer to a longer one is an error.
MAX_COMMAND_LINE = 4096
_OPS: dict[str, Callable[[int, int], bool]] = {
    "eq": int.__eq__, "ne": int.__ne__, "le": int.__le__, "lt": int.__lt__, "ge": int.__ge__, "gt": int.__gt__,
}
#: Output lines (a key's line and one per peer entry) read and rendered in one chunk
#: of a streamed ``show table``: one chunk is one read under one stripe's lock and
#: about 2 ms of work (6 ms at most, measured), so a dump never holds the loop.
CHUNK_LINES = 256
#: A streamed answer's next chunk is made once the connection's write queue is at
#: most this (besides the kernel's socket buffer): a dump holds about one chunk.
STREAM_LOW_WATER = 64 * 1024
#: An answer made a chunk at a time: a generator of text; a clock time (s) sent
#: into it is the time of the next chunk (iterating it keeps the command's time).
Answer = Generator[str, "float | None", None]
#: ``handler(args, status, now, commands) -> answer`` (a text, or an ``Answer`` for a large one)
Handler = Callable[[list[str], Status, float, Commands], "str | Answer"]


# -- show aggrs -----------------------------------------------------------------------------


def aggrs_rows(status: Status, now: float) -> list[dict]:
    rows = []
    for section in status.sections:
        tables = []
        for table in section.tables:
            peers = []
            for peer in section.peers:
                state = push = ack = sync = 0
                if peer.connected:
                    state = 0x1 | (0x2 if peer.established else 0) | (0x4 if peer.synced else 0)
                    sent = peer.sent.get(table.name)
                    if sent is not None:
                        push, ack, sync = sent.last_pushed, sent.last_acked, sent.last_pushed
                peers.append({"name": peer.name, "index": peer.index, "state": state, "push": push, "ack": ack,
                              "sync": sync})
            tables.append({
                "name": _text(table.name), "mode": table.mode.value, "source": _text(table.source),
                "expire": table.expire_ms, "entries": table.entries, "updates": table.changes,
                "dropped": table.dropped, "peers": peers,
            })
        rows.append({"name": section.name, "tables": tables})
    return rows


def render_aggrs(rows: list[dict]) -> str:
    out = []
    for section in rows:
        out.append(f"aggregations {section['name']}")
        for t in section["tables"]:
            summary = f"(expire: {t['expire']} nb_entries: {t['entries']})"
            if t["mode"] == TableMode.FORWARD.value:
                out.append(f"  table '{t['name']}' forwarded {summary}")
            elif t["mode"] == TableMode.HISTORY.value:
                out.append(f"  table '{t['source']}' history in '{t['name']}' {summary}")
            else:
                out.append(f"  table '{t['source']}' aggregated to '{t['name']}' {summary}")
            out.append(f"    update: 0x{t['updates']:08x} used: 0x{t['entries']:08x}")
            for p in t["peers"]:
                out.append(f"    peer '{p['name']}' ({p['index']}) state: 0x{p['state']:x} push: 0x{p['push']:08x}"
                           f" ack: 0x{p['ack']:08x} sync: 0x{p['sync']:08x}")
    return "\n".join(out) + "\n"


def _show(args: list[str], usage: str, build: Callable, render: Callable, status: Status, now: float) -> str:
    """A ``show`` command without arguments but ``json``: build the data, render or dump it."""
    json_out = _json_flag(args)
    _no_more(args, usage)
    data = build(status, now)
    return _json(data) if json_out else render(data)


def cmd_show_aggrs(args: list[str], status: Status, now: float, commands: Commands) -> str:
    return _show(args, "show aggrs [json]", aggrs_rows, render_aggrs, status, now)


# -- show table ----------------------------------------------------------------------------------


def cmd_show_table(args: list[str], status: Status, now: float, commands: Commands) -> Answer:
    """The table's rows, streamed (``table_answer``); bad arguments raise here, before any output."""
    json_out = _json_flag(args)
    if len(args) < 2:
        raise CliError("Usage: show table <aggregations> <table> [key <k>] [data.<type> <op> <value>]... [json]")
    section, table = _find_table(status, args[0], args[1])
    key, filters = _table_options(table, args[2:])
    return table_answer(section, table, now, key, filters, json_out)


def table_answer(section: SectionStatus, table: TableStatus, now: float, key: bytes | None = None,
                 filters: list = (), json_out: bool = False) -> Answer:
    """``show table``'s answer a chunk at a time: ``render_table(table_rows(...))`` or its JSON, in parts.

    Each chunk is one read under one stripe's lock of at most
    ``CHUNK_LINES`` output lines' worth of keys (see "Issue 14: streamed
    dumps" in docs/ARCHITECTURE.md). The rows are at the clock time ``now``
    (s); a time sent into the generator is the time of the next chunk, so a
    dump that lasts shows each chunk's remaining expiries as of its reading.
    The JSON form is one array: ``[`` before the first row, ``,`` between
    rows, ``]`` at the end.
    """
    if key is not None:
        batches: Iterable[tuple[int, list[bytes]]] = [(-1, [key])]
    else:
        batches = table.batches(max(1, CHUNK_LINES // (1 + len(section.peers))))
    opening = "["  # before the first JSON row; "," before the others
    for stripe, keys in batches:
        now_ms = table_ms(now)
        raw = table.rows(now_ms, key) if key is not None else table.read(stripe, keys, now_ms)
        text, opening = _chunk_text(_rows_of(section, table, raw, now_ms, filters), json_out, opening)
        # Nothing of the chunk but its text stays alive across the yield: a dump
        # would otherwise move its rows into the collector's oldest generation.
        raw = None
        sent = yield text
        if sent is not None:
            now = sent
    if json_out:
        yield "[]\n" if opening == "[" else "]\n"


def _chunk_text(rows: list[dict], json_out: bool, opening: str) -> tuple[str, str]:
    """A chunk's rows as text, or as JSON array elements after ``opening``; and the next opening."""
    if not json_out:
        return render_table(rows), opening
    parts = []
    for row in rows:
        parts.append(opening + json.dumps(_public(row), separators=(",", ":")))
        opening = ","
    return "".join(parts), opening


def table_rows(section: SectionStatus, table: TableStatus, now_ms: int, key: bytes | None = None,
               filters: list = ()) -> list[dict]:
    """Each key's aggregate and each peer's entry at the table time ``now_ms``, all at once."""
    return _rows_of(section, table, table.rows(now_ms, key), now_ms, filters)


def _rows_of(section: SectionStatus, table: TableStatus, raw: list, now_ms: int, filters: list) -> list[dict]:
    """Rows (``table_rows``) of ``TableStatus.rows``' tuples that pass ``filters``."""
    columns = _columns(table)
    empty = _named_values(columns, table.empty())
    key_type = table.definition.key_type
    names = [peer.name for peer in section.peers]
    rows = []
    for k, agg, agg_expire, contribs in raw:
        values = _named_values(columns, agg) if agg is not None else dict(empty)
        if filters and any(not op(values.get(name, 0), ref) for name, op, ref in filters):
            continue
        peers = []
        for index in sorted(contribs):
            own, expire_at, _ = contribs[index]
            live = expire_at > now_ms
            peers.append({"name": names[index], "values": _named_values(columns, own) if live else dict(empty),
                          "expire": expire_at - now_ms if live else None})
        rows.append({"key": format_key(key_type, k), "values": values,
                     "expire": agg_expire - now_ms if agg is not None else None, "peers": peers,
                     "_columns": columns})
    return rows


def _public(row: dict) -> dict:
    """A row as the JSON form shows it (without the renderer's ``_`` entries)."""
    return {k: v for k, v in row.items() if not k.startswith("_")}


def render_table(rows: list[dict]) -> str:
    out = []
    for row in rows:
        columns = row["_columns"]
        out.append(f"key={row['key']} {_values_text(columns, row['values'])} {_expiry_text(row['expire'])}")
        for peer in row["peers"]:
            out.append(f"    {peer['name']}: {_values_text(columns, peer['values'])} {_expiry_text(peer['expire'])}")
    return "\n".join(out) + ("\n" if out else "")


def _expiry_text(remaining: int | None) -> str:
    return f"exp={remaining}" if remaining is not None else "expired"


#: How a displayed value is made from its wire value (``_columns``).
_PLAIN, _RATE, _TEXT = range(3)


def _columns(table: TableStatus) -> list[tuple[int, int | None, str, int, int, str]]:
    """The displayed values of a table's entries, in order, worked out once per read:
    ``(field index, element index or None, name, kind, period, text prefix)``."""
    columns = []
    for index, f in enumerate(table.fields):
        kind = _RATE if f.info.std is StdType.FRQP else _TEXT if f.info.std is StdType.DICT else _PLAIN
        for element, (name, _) in enumerate(_elements(f, (None,) * f.count if f.info.is_array else None)):
            prefix = f"{name}=({f.period or 0})=" if kind == _RATE else f"{name}="
            columns.append((index, element if f.info.is_array else None, name, kind, f.period or 0, prefix))
    return columns


def _named_values(columns: list, wire: tuple) -> dict:
    """Display name -> displayed value (rates as HAProxy reads them), arrays element by element."""
    values: dict = {}
    for index, element, name, kind, period, _ in columns:
        value = wire[index] if element is None else wire[index][element]
        if kind == _RATE:
            value = read_rate(value, period) if period else 0
        elif kind == _TEXT:
            value = value.decode("utf-8", "backslashreplace") if value else ""
        values[name] = value
    return values


def _elements(f: Field, value) -> list[tuple[str, object]]:
    if not f.info.is_array:
        return [(f.info.name, value)]
    base = f.info.name.replace("_rate", "")
    suffix = "_rate" if f.info.std is StdType.FRQP else ""
    return [(f"{base}{i}{suffix}", v) for i, v in enumerate(value)]


def _values_text(columns: list, values: dict) -> str:
    return " ".join([column[5] + str(values[column[2]]) for column in columns])


def _table_options(table: TableStatus, args: list[str]) -> tuple[bytes | None, list]:
    key = None
    filters = []
    names = {name for f in table.fields for name, _ in _elements(f, (None,) * f.count if f.info.is_array else None)}
    i = 0
    while i < len(args):
        word = args[i]
        if word == "key" and i + 1 < len(args):
            key = parse_key(table, args[i + 1])
            i += 2
        elif word.startswith("data.") and i + 2 < len(args):
            name, op, value = word[5:], args[i + 1], args[i + 2]
            if name not in names:
                raise CliError(f"Unknown data type '{name}' for this table (it stores {', '.join(sorted(names))})")
            if op not in _OPS:
                raise CliError(f"Unknown operator '{op}' (expected eq ne le lt ge gt)")
            if not value.lstrip("-").isdigit():
                raise CliError(f"'{value}' is not a number")
            filters.append((name, _OPS[op], int(value)))
            i += 3
        else:
            raise CliError(f"Unexpected '{word}' (expected key <k>, data.<type> <op> <value>, json)")
    return key, filters


def parse_key(table: TableStatus, text: str) -> bytes:
    """A key typed on the CLI, in the table's key type (as HAProxy's ``show table ... key``)."""
    d = table.definition
    try:
        if d.key_type == KeyType.IP:
            return ipaddress.IPv4Address(text).packed
        if d.key_type == KeyType.IPV6:
            return ipaddress.IPv6Address(text).packed
        if d.key_type == KeyType.INTEGER:
            return integer_key(int(text))
        if d.key_type == KeyType.BINARY:
            return bytes.fromhex(text)[: d.key_len].ljust(d.key_len, b"\0")
    except ValueError:
        raise CliError(f"'{text}' is not a key of this table's type") from None
    return text.encode("utf-8", "surrogateescape")[: max(0, d.key_len - 1)]


# -- show history ---------------------------------------------------------------------------------


def cmd_show_history(args: list[str], status: Status, now: float, commands: Commands) -> str:
    usage = "show history <aggregations> <table> [key <k>] [json]"
    json_out = _json_flag(args)
    if len(args) not in (2, 4) or (len(args) == 4 and args[2] != "key"):
        raise CliError(f"Usage: {usage}")
    if status.history is None:
        raise CliError("No history: the configuration has no 'history-file'")
    section, table = _find_table(status, args[0], args[1])
    line = status.history.line(section.name, _suffix(table.name)) if table.mode is TableMode.HISTORY else None
    if line is None:
        raise CliError(f"Not a history table: {args[1]}")
    wall_ms = int((status.started_wall + now - status.started_at) * 1000)
    data = history_line_data(line, table, wall_ms)
    if len(args) == 4:
        key = parse_key(table, args[3])
        columns = _columns(table)
        window = _served_window(line, wall_ms)
        data["key"] = _key_text(table, key)
        data["buckets"] = [
            {"bucket": bucket, "start": _utc(bucket * line.resolution_ms), "in_window": bucket in window,
             "values": {column[2]: value for column, value in zip(columns, values)}}
            for bucket, values in line.read(table.source, key)]
    if json_out:
        return _json(data)
    return render_history(data, _columns(table))


def _served_window(line, wall_ms: int) -> range:
    """The buckets of the statistics served now: those of the last computation, at the end of
    the last bucket (``recorder``), not of this very moment (which may hold one bucket fewer)."""
    res = line.resolution_ms
    return window_buckets(wall_ms // res * res, line.window_ms, line.offset_ms, res)


def history_line_data(line, table: TableStatus, wall_ms: int) -> dict:
    window = _served_window(line, wall_ms)
    return {
        "table": _text(table.name), "source": _text(table.source), "stat": line.stat,
        "window_ms": line.window_ms, "offset_ms": line.offset_ms, "resolution_ms": line.resolution_ms,
        "retention_buckets": line.retention,
        "window": [_utc(window.start * line.resolution_ms), _utc(window.stop * line.resolution_ms)],
        "buckets_sampled": line.buckets, "buckets_skipped": line.buckets_skipped, "samples": line.samples,
        "computed": line.computed, "computed_skipped": line.computed_skipped,
        "last_keys": line.last_keys, "last_seconds": round(line.last_seconds, 6),
    }


def render_history(data: dict, columns: list) -> str:
    out = [
        f"history '{data['table']}' of '{data['source']}': stat {data['stat']} window {data['window_ms']}ms"
        f" offset {data['offset_ms']}ms (resolution {data['resolution_ms']}ms, {data['retention_buckets']} buckets kept)",
        f"  window now: {data['window'][0]} to {data['window'][1]}",
        f"  sampled: {data['buckets_sampled']} buckets ({data['buckets_skipped']} skipped), {data['samples']} samples;"
        f" computed: {data['computed']} ({data['computed_skipped']} skipped), last {data['last_keys']} keys"
        f" in {data['last_seconds']:.3f} s",
    ]
    if "buckets" in data:
        out.append(f"  key={data['key']}: {len(data['buckets'])} samples")
        for row in data["buckets"]:
            values = " ".join(f"{name}={value}" for name, value in row["values"].items())
            out.append(f"    bucket={row['bucket']} start={row['start']}{' (in window)' if row['in_window'] else ''}"
                       f" {values}")
    return "\n".join(out) + "\n"


def _suffix(name: bytes) -> str:
    text = _text(name)
    dot = text.rfind(".")
    return "" if dot < 0 else text[dot:]


def _utc(wall_ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(wall_ms // 1000)) + f".{wall_ms % 1000:03d}Z"


def _key_text(table: TableStatus, key: bytes) -> str:
    return format_key(table.definition.key_type, key)


# -- show peers / show info ------------------------------------------------------------------------


def peers_rows(status: Status, now: float) -> list[dict]:
    rows = []
    for section in status.sections:
        for peer in section.peers:
            traffic = peer.traffic
            rows.append({
                "section": section.name, "name": peer.name, "role": peer.role.value,
                "state": peer.state.value if peer.state is not None else "idle",
                "address": peer.address, "tls": peer.tls, "last_hello": peer.last_hello,
                "messages_in": traffic.messages_in, "messages_out": traffic.messages_out,
                "bytes_in": traffic.bytes_in, "bytes_out": traffic.bytes_out,
                "updates_in": traffic.updates_in, "updates_out": traffic.updates_out,
                "last_error": peer.last_error,
            })
    return rows


def render_peers(rows: list[dict]) -> str:
    out = []
    for r in rows:
        hello = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(r["last_hello"])) if r["last_hello"] else "never"
        out.append(
            f"{r['section']}/{r['name']} role={r['role']} state={r['state']} addr={r['address']}"
            f" tls={'yes' if r['tls'] else 'no'} last_hello={hello}"
            f" msgs_in={r['messages_in']} msgs_out={r['messages_out']}"
            f" bytes_in={r['bytes_in']} bytes_out={r['bytes_out']}"
            f" last_error={json.dumps(r['last_error'])}"
        )
    return "\n".join(out) + ("\n" if out else "")


#: The interpreter the daemon runs on (CPython or PyPy, and its version): ``show info``'s ``python``.
RUNTIME = f"{platform.python_implementation()} {platform.python_version()}"


def info_data(status: Status, now: float) -> dict:
    from . import __version__

    tables = [t for s in status.sections for t in s.tables]
    return {
        "version": __version__, "python": RUNTIME, "pid": status.pid, "uptime_s": int(now - status.started_at),
        "sections": len(status.sections), "tables": len(tables), "entries": sum(t.entries for t in tables),
        "sessions": sum(1 for s in status.sections for p in s.peers if p.established),
        "updates_received_total": status.updates_in, "updates_pushed_total": status.updates_out,
        **loop_info(status.loop), **status.rates,
    }


def loop_info(loop: LoopStats) -> dict:
    """The event loop's figures over the last minute: the longest turn, what ran longest in it,
    and the turns up to each bucket's bound (cumulative, as Prometheus' ``le``)."""
    data: dict = {"loop_longest_turn_ms_1m": round(loop.recent_longest * 1000, 1),
                  "loop_slowest_callback_1m": loop.recent_slowest}
    total = 0
    names = [f"le_{bound * 1000:g}ms" for bound in loop.bounds] + ["le_inf"]
    for name, count in zip(names, loop.recent_counts or (0,) * len(names)):
        total += count
        data[f"loop_turns_{name}_1m"] = total
    return data


def cmd_show_peers(args: list[str], status: Status, now: float, commands: Commands) -> str:
    return _show(args, "show peers [json]", peers_rows, render_peers, status, now)


def render_info(data: dict) -> str:
    return "".join(f"{k}: {v}\n" for k, v in data.items())


def cmd_show_info(args: list[str], status: Status, now: float, commands: Commands) -> str:
    return _show(args, "show info [json]", info_data, render_info, status, now)


def cmd_show_metrics(args: list[str], status: Status, now: float, commands: Commands) -> str:
    """The metrics endpoint's text: how a sharded daemon's main process gets each shard's metrics."""
    _no_more(args, "show metrics")
    return render_metrics(status)


# -- clear table -------------------------------------------------------------------------------------


def cmd_clear_table(args: list[str], status: Status, now: float, commands: Commands) -> str:
    if len(args) not in (2, 4) or (len(args) == 4 and args[2] != "key"):
        raise CliError("Usage: clear table <aggregations> <table> [key <k>]")
    section, table = _find_table(status, args[0], args[1])
    key = parse_key(table, args[3]) if len(args) == 4 else None
    cleared = commands.clear_table(ClearTable(section.name, table.name, key))
    return f"Cleared {cleared} entr{'y' if cleared == 1 else 'ies'}.\n"


# -- dispatch ------------------------------------------------------------------------------------------


def cmd_help(args: list[str], status: Status, now: float, commands: Commands) -> str:
    return HELP


COMMANDS: dict[tuple[str, ...], Handler] = {
    ("help",): cmd_help,
    ("show", "aggrs"): cmd_show_aggrs,
    ("show", "table"): cmd_show_table,
    ("show", "peers"): cmd_show_peers,
    ("show", "info"): cmd_show_info,
    ("show", "metrics"): cmd_show_metrics,
    ("clear", "table"): cmd_clear_table,
    ("show", "history"): cmd_show_history,
}


def execute(source: StatusSource, line: str) -> str:
    """Run one command line (commands separated by ``;``) and return the answer."""
    return "".join(stream_line(source, line))


def stream_line(source: StatusSource, line: str) -> Answer:
    """``execute``'s answer a chunk at a time (an ``Answer``), as ``CliConnection`` sends it.

    Each command gets a fresh snapshot and clock reading when its turn
    comes, so it sees what the commands before it on the line changed.
    """
    for command in line.split(";"):
        try:
            words = shlex.split(command)
        except ValueError as exc:
            yield f"Invalid command: {exc}\n"
            continue
        if words:
            yield from stream_command(words, source.status(), source.clock.now(), source)


def run_command(words: list[str], status: Status, now: float, commands: Commands) -> str:
    """One command (its words), answered from ``status`` at clock time ``now`` (s)."""
    return "".join(stream_command(words, status, now, commands))


def stream_command(words: list[str], status: Status, now: float, commands: Commands) -> Answer:
    """``run_command``'s answer a chunk at a time (one chunk unless the handler streams)."""
    for length in (2, 1):
        handler = COMMANDS.get(tuple(words[:length]))
        if handler is not None:
            try:
                answer = handler(words[length:], status, now, commands)
            except CliError as exc:
                answer = f"{exc}\n"
            if isinstance(answer, str):
                yield answer
            else:
                yield from answer
            return
    yield f"Unknown command: '{' '.join(words)[:80]}'\n" + HELP


def _find_table(status: Status, section_name: str, table_name: str) -> tuple[SectionStatus, TableStatus]:
    section = status.section(section_name)
    if section is None:
        raise CliError(f"No such aggregations section: {section_name}")
    name = table_name.encode("utf-8", "surrogateescape")
    table = section.table(name) or section.table(b"/" + name)
    if table is None:
        raise CliError(f"No such table: {table_name}")
    return section, table


def _json_flag(args: list[str]) -> bool:
    if args and args[-1] == "json":
        args.pop()
        return True
    return False


def _no_more(args: list[str], usage: str) -> None:
    if args:
        raise CliError(f"Usage: {usage}")


def _json(data) -> str:
    return json.dumps(data, separators=(",", ":")) + "\n"


def _text(name: bytes) -> str:
    return name.decode("utf-8", "backslashreplace")


#: ``take_line``'s answer when more than MAX_COMMAND_LINE bytes came without an end of line.
TOO_LONG = b"\0too long"


def take_line(buffer: bytearray, eof: bool) -> bytes | None:
    """The next command line, removed from ``buffer``: up to its newline, or at the end of the
    input what is left; TOO_LONG past MAX_COMMAND_LINE bytes without a newline; None for none yet."""
    end = buffer.find(b"\n")
    if end >= 0:
        line = bytes(buffer[:end])
        del buffer[:end + 1]
        return line
    if len(buffer) > MAX_COMMAND_LINE:
        return TOO_LONG
    if eof and buffer:
        line = bytes(buffer)
        buffer.clear()
        return line
    return None


class LineServer:
    """What the stats socket's protocols share: command lines in, answered one at a time, in order.

    A subclass says when it is busy answering (``_answering``) and answers a line
    (``_answer``); ``_reply`` writes a whole answer and the prompt (``PROMPT``),
    or closes after it. Lines that arrive meanwhile wait;
    reading stops while more than MAX_COMMAND_LINE bytes wait; a client that
    half-closes still gets its answers (``eof_received`` keeps the transport open).
    """

    PROMPT = b"\n> "

    def __init__(self) -> None:
        self.transport = None
        self._buffer = bytearray()
        self._eof = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._serve()

    def eof_received(self) -> bool:
        self._eof = True
        self._serve()
        return True  # half closed: we close once the answers are written

    def _answering(self) -> bool:
        raise NotImplementedError

    def _answer(self, line: bytes) -> None:
        raise NotImplementedError

    def _reply(self, text: str, close: bool = False) -> None:
        if self.transport is None:
            return
        self.transport.write(text.encode() + (self.PROMPT if not close else b"\n"))
        if close:
            self.transport.close()
            self.transport = None

    def _serve(self) -> None:
        """Answer the lines received, in order, while no answer is under way."""
        while self.transport is not None and not self._answering():
            line = take_line(self._buffer, self._eof)
            if line is TOO_LONG:
                self._reply("Command line too long\n", close=True)
            elif line is not None:
                self._answer(line)
            elif self._eof:
                self.transport.close()
                self.transport = None
            else:
                self.transport.resume_reading()  # (if paused while an answer was under way)
                return
        if self.transport is not None and len(self._buffer) > MAX_COMMAND_LINE:
            self.transport.pause_reading()  # until the answer under way is done


class CliConnection(LineServer):
    """Transport protocol of one stats socket connection.

    Answers are streamed (see "Issue 14: streamed dumps" in
    docs/ARCHITECTURE.md): a line's answer is an ``Answer`` (``stream_line``),
    and each step writes one chunk of it, then asks the transport for a
    ``writable()`` call once its write queue is at most ``STREAM_LOW_WATER``
    (``request_writable``), which makes the next step. So a dump costs the
    loop one chunk per turn, and the server about one chunk of memory
    whatever the table's size; a client that reads slowly only slows its own
    answer. Lines that arrive meanwhile wait and are answered in order after
    it (reading stops while more than ``MAX_COMMAND_LINE`` bytes wait); a
    client that half-closes still gets the whole answer, and one that goes
    away ends it (``connection_lost`` closes the generator).
    """

    def __init__(self, source: StatusSource) -> None:
        super().__init__()
        self.source = source
        self.interactive = False
        self._stream: Answer | None = None  #: the answer being written
        self._started = False  #: its first chunk was taken (later ones get a clock time)
        self._close_after = False  #: close once it is written (one-shot mode)
        self._waiting = False  #: a writable() call was asked for its next step

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._waiting = False
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def writable(self) -> None:
        if self._waiting:
            self._waiting = False
            self._step()
            self._serve()

    def _answering(self) -> bool:
        return self._stream is not None

    def _answer(self, line: bytes) -> None:
        if len(line) > MAX_COMMAND_LINE:
            self._reply("Command line too long\n", close=True)
            return
        text = line.decode("utf-8", "replace").strip()
        if text == "quit":
            self._reply("", close=True)
        elif text == "prompt":
            self.interactive = not self.interactive
            if self.interactive:
                self.transport.write(self.PROMPT[1:])
            else:
                self._reply("", close=True)
        else:
            self._stream = stream_line(self.source, text)
            self._started = False
            self._close_after = not self.interactive
            self._step()

    def _step(self) -> None:
        """Write the next chunk of the answer, or its end (the prompt, or the close)."""
        if self._stream is None or self.transport is None:
            return
        try:
            chunk = self._stream.send(self.source.clock.now() if self._started else None)
        except StopIteration:
            self._stream = None
            self._reply("", close=self._close_after)
            return
        self._started = True
        if chunk:
            self.transport.write(chunk.encode())
        self._waiting = True
        self.transport.request_writable(STREAM_LOW_WATER)

