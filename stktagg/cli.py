"""The runtime CLI on the stats socket: ``help``, ``show aggrs``, ``show table``.

Handlers are pure functions of a read-only view of the server that return
text; ``CliConnection`` is the transport protocol that reads a command line
and writes the answer (as HAProxy's runtime API: one line per connection,
several commands separated by ``;``, the connection closed after the answer).

Layouts follow the reference document (seeds/000, "show aggrs", "show table"):

    aggregations <id>
      table '<source>' aggregated to '<output>' (expire: <ms> nb_entries: <n>)
        update: 0x<changes> used: 0x<entries>
        peer '<name>' (<index>) state: 0x<bits> push: 0x<id> ack: 0x<id> sync: 0x<id>

``state`` bits: 0x1 connected, 0x2 handshake done, 0x4 resync done (the peer
taught us after our request): a working session shows 0x7. ``push`` and
``ack`` are the last update id sent to the peer for that table and the last
one it acknowledged; ``sync`` the last id sent in a resync answer.
"""

from __future__ import annotations

import shlex
import time
from typing import Callable

from .datatypes import read_rate
from .schema import Field, StdType, format_key
from .table import AggTable, TableMode, now_ms

HELP = """\
help                              : this message
show aggrs                        : list the aggregations sections, their tables and peers
show table <aggregations> <table> : dump an aggregate table: each key's aggregate and each peer's entry
quit                              : close the connection
"""

#: Longest command line accepted; the answer to a longer one is an error.
MAX_COMMAND_LINE = 4096


# -- handlers (pure: server view in, text out) ---------------------------------------------


def cmd_help(server, args: list[str]) -> str:
    return HELP


def cmd_show_aggrs(server, args: list[str]) -> str:
    out = []
    for section in server.sections:
        out.append(f"aggregations {section.name}")
        for table in section.tables.values():
            out.append("  " + _table_line(section, table))
            out.append(f"    update: 0x{table.changes:08x} used: 0x{len(table):08x}")
            for index, peer in enumerate(section.remote_peers):
                out.append("    " + _peer_line(server, section, table, index, peer))
    return "\n".join(out) + "\n"


def _table_line(section, table: AggTable) -> str:
    name = table.name.decode("utf-8", "backslashreplace")
    summary = f"(expire: {table.expire_ms} nb_entries: {len(table)})"
    if table.mode is TableMode.FORWARD:
        return f"table '{name}' forwarded {summary}"
    source = section.sources.get(table.name, b"").decode("utf-8", "backslashreplace")
    return f"table '{source}' aggregated to '{name}' {summary}"


def _peer_line(server, section, table: AggTable, index: int, peer) -> str:
    link = server.established.get((section.name, peer.name))
    state = push = ack = sync = 0
    if link is not None and link.session is not None:
        state = 0x1 | (0x2 if link.is_established() else 0) | (0x4 if link.synced else 0)
        out = link.session.out_tables.get(table.name)
        if out is not None:
            push, ack, sync = out.last_pushed, out.last_acked, out.last_pushed if link.session.awaiting_teach_confirm is False else 0
    return f"peer '{peer.name}' ({index}) state: 0x{state:x} push: 0x{push:08x} ack: 0x{ack:08x} sync: 0x{sync:08x}"


def cmd_show_table(server, args: list[str]) -> str:
    if len(args) != 2:
        return "Usage: show table <aggregations> <table>\n"
    section = next((s for s in server.sections if s.name == args[0]), None)
    if section is None:
        return f"No such aggregations section: {args[0]}\n"
    name = args[1].encode("utf-8", "surrogateescape")
    table = section.tables.get(name) or section.tables.get(b"/" + name)
    if table is None:
        return f"No such table: {args[1]}\n"
    now = now_ms()
    peers = section.remote_peers
    out = []
    for stripe in range(len(table.stripes)):
        for key, agg, agg_expire, contribs in table.snapshot(stripe, now):
            values = agg if agg is not None else table.empty()
            out.append(f"key={format_key(table.definition.key_type, key)} "
                       f"{_values(table, values)} {_expiry(agg is not None, agg_expire, now)}")
            for index in sorted(contribs):
                own, expire_at, _ = contribs[index]
                live = expire_at > now
                shown = own if live else table.empty()
                out.append(f"    {peers[index].name}: {_values(table, shown)} {_expiry(live, expire_at, now)}")
    return "\n".join(out) + ("\n" if out else "")


def _expiry(live: bool, expire_at: int, now: int) -> str:
    return f"exp={expire_at - now}" if live else "expired"


def _values(table: AggTable, wire: tuple) -> str:
    return " ".join(_field_text(f, v) for f, v in zip(table.fields, wire))


def _field_text(field: Field, value: object) -> str:
    info = field.info
    if info.is_array:
        base = info.name.replace("_rate", "")
        suffix = "_rate" if info.std is StdType.FRQP else ""
        return " ".join(_scalar_text(field, f"{base}{i}{suffix}", v) for i, v in enumerate(value))  # type: ignore[arg-type]
    return _scalar_text(field, info.name, value)


def _scalar_text(field: Field, name: str, value: object) -> str:
    if field.info.std is StdType.FRQP:
        period = field.period or 0
        return f"{name}=({period})={read_rate(value, period) if period else 0}"  # type: ignore[arg-type]
    if field.info.std is StdType.DICT:
        return f"{name}={value.decode('utf-8', 'backslashreplace') if value else ''}"  # type: ignore[union-attr]
    return f"{name}={value}"


COMMANDS: dict[tuple[str, ...], Callable] = {
    ("help",): cmd_help,
    ("show", "aggrs"): cmd_show_aggrs,
    ("show", "table"): cmd_show_table,
}


def execute(server, line: str) -> str:
    """Run one command line (commands separated by ``;``) and return the answer."""
    answers = []
    for command in line.split(";"):
        try:
            words = shlex.split(command)
        except ValueError as exc:
            answers.append(f"Invalid command: {exc}\n")
            continue
        if not words:
            continue
        answers.append(_dispatch(server, words))
    return "".join(answers)


def _dispatch(server, words: list[str]) -> str:
    for length in (2, 1):
        handler = COMMANDS.get(tuple(words[:length]))
        if handler is not None:
            return handler(server, words[length:])
    return f"Unknown command: '{' '.join(words)[:80]}'\n" + HELP


class CliConnection:
    """Transport protocol of one stats socket connection."""

    def __init__(self, server) -> None:
        self.server = server
        self.transport = None
        self._buffer = bytearray()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if b"\n" in self._buffer:
            line, _, _ = bytes(self._buffer).partition(b"\n")
            self._answer(line)
        elif len(self._buffer) > MAX_COMMAND_LINE:
            self._reply("Command line too long\n")

    def eof_received(self) -> None:
        if self._buffer:
            self._answer(bytes(self._buffer))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def _answer(self, line: bytes) -> None:
        if len(line) > MAX_COMMAND_LINE:
            self._reply("Command line too long\n")
            return
        text = line.decode("utf-8", "replace").strip()
        self._reply(execute(self.server, text) if text and text != "quit" else "")

    def _reply(self, text: str) -> None:
        self._buffer.clear()
        if self.transport is not None:
            self.transport.write(text.encode() + b"\n")
            self.transport.close()
            self.transport = None
