#!/usr/bin/env python3
"""Record peers-protocol sessions of real HAProxy into tests/data/vectors/.

    python3 contrib/record_vectors.py                       # every scenario, every HAProxy found
    python3 contrib/record_vectors.py --haproxy 2.8=/path/to/haproxy --only session-basic
    python3 contrib/record_vectors.py --list

Each scenario starts real HAProxy processes on a private loopback address,
with the aggregator's peer ``AGGR`` played by the capture peer below, drives
them (HTTP requests, runtime-API commands, messages the capture peer sends on
purpose) and writes what crossed the wire, one message a line, to
``haproxy-<version>-<scenario>.hex`` (format: tests/data/vectors/README.md),
plus the HAProxy runtime-API answers to ``.cli.txt`` where the scenario asks.

The capture peer is deliberately independent of the ``stktagg`` package: it
frames, decodes and describes messages with its own small code, so the tests
that compare stktagg's decoder with the comments of these files compare two
implementations, and the replays test stktagg's session against the bytes a
working peer exchanged with HAProxy, not against itself. Its policy as a
working peer (what the session replays expect of ``stktagg.session``):

- status ``200`` to a valid hello;
- after each read from a connection: first the confirms (``00 03``) of the
  teaches finished in that read, in order; then one ack per table that got
  updates in that read (newest id, tables in the order HAProxy defined them);
  then ``00 01`` if HAProxy asked for a resync in that read (we hold nothing
  to teach);
- a heartbeat after 2 s without sending anything;
- its own updates always with an explicit id (0x80/0x85), 1, 2, ... per
  table, the definition sent again before an update whenever another table
  was current.

Scenarios may break any of these on purpose (``proto-*``, ``write-variants``);
the session replays leave those files out.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import ipaddress
import os
import random
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "tests" / "data" / "vectors"
HEARTBEAT_AFTER = 2.0  # seconds without sending, then a heartbeat (HAProxy waits 3 s)
AGGR_PORT = 10100
PEER_PORT = 10001
HTTP_PORT = 8081

# -- an independent decoder, for the comments -------------------------------------------

#: Data type id -> (name, standard type, parameters): the table of peers-protocol.md §5.7.
#: Parameters: "" none, "p" a period, "n" an element count, "np" a count and a period.
DATA_TYPES = {
    0: ("server_id", "sint", ""), 1: ("gpt0", "uint", ""), 2: ("gpc0", "uint", ""),
    3: ("gpc0_rate", "frqp", "p"), 4: ("conn_cnt", "uint", ""), 5: ("conn_rate", "frqp", "p"),
    6: ("conn_cur", "uint", ""), 7: ("sess_cnt", "uint", ""), 8: ("sess_rate", "frqp", "p"),
    9: ("http_req_cnt", "uint", ""), 10: ("http_req_rate", "frqp", "p"), 11: ("http_err_cnt", "uint", ""),
    12: ("http_err_rate", "frqp", "p"), 13: ("bytes_in_cnt", "ull", ""), 14: ("bytes_in_rate", "frqp", "p"),
    15: ("bytes_out_cnt", "ull", ""), 16: ("bytes_out_rate", "frqp", "p"), 17: ("gpc1", "uint", ""),
    18: ("gpc1_rate", "frqp", "p"), 19: ("server_key", "dict", ""), 20: ("http_fail_cnt", "uint", ""),
    21: ("http_fail_rate", "frqp", "p"), 22: ("gpt", "uint", "n"), 23: ("gpc", "uint", "n"),
    24: ("gpc_rate", "frqp", "np"), 25: ("glitch_cnt", "uint", ""), 26: ("glitch_rate", "frqp", "p"),
}
TYPE_IDS = {name: type_id for type_id, (name, _, _) in DATA_TYPES.items()}
KEY_TYPES = {2: "integer", 4: "ip", 5: "ipv6", 6: "string", 7: "binary"}
CONTROL = {0: "resync-request", 1: "resync-finished", 2: "resync-partial", 3: "resync-confirm", 4: "heartbeat"}
ERRORS = {0: "protocol-error", 1: "size-limit"}
UPDATE_KINDS = {0x80: "update", 0x81: "update-incremental", 0x85: "update-timed", 0x86: "update-incremental-timed"}


class Truncated(Exception):
    """The bytes ran out before the field did."""


def varint(value: int) -> bytes:
    """HAProxy's encoded integer (peers-protocol.md §2.2)."""
    if value < 240:
        return bytes([value])
    out = [(value & 0xFF) | 0xF0]
    value = (value - 240) >> 4
    while value >= 128:
        out.append((value & 0xFF) | 0x80)
        value = (value - 128) >> 7
    out.append(value)
    return bytes(out)


class Cursor:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise Truncated(f"{n} bytes wanted at {self.pos}, {len(self.data) - self.pos} left")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def varint(self) -> int:
        value = self.take(1)[0]
        if value >= 240:
            shift = 4
            while True:
                byte = self.take(1)[0]
                value += byte << shift
                shift += 7
                if byte < 128:
                    break
        return value

    def be32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def left(self) -> int:
        return len(self.data) - self.pos


def split_frame(buffer: bytes) -> int | None:
    """Length of the whole message at the start of ``buffer``, or None if incomplete."""
    if len(buffer) < 2:
        return None
    if buffer[1] < 0x80:
        return 2
    cursor = Cursor(buffer[2:])
    try:
        length = cursor.varint()
    except Truncated:
        return None
    total = 2 + cursor.pos + length
    return total if len(buffer) >= total else None


@dataclass
class Table:
    """A table as one direction defined it."""

    table_id: int
    name: bytes
    key_type: int
    key_len: int
    mask: int
    expire: int | None
    params: dict[int, tuple[int, ...]]
    last_get: int = 0

    def types(self) -> list[int]:
        return [i for i in range(64) if self.mask >> i & 1]


@dataclass
class Direction:
    """What one direction of one connection has defined so far."""

    tables: dict[int, Table] = field(default_factory=dict)
    current: Table | None = None
    dictionary: dict[int, bytes] = field(default_factory=dict)


def describe_key(table: Table, cursor: Cursor) -> str:
    kind = KEY_TYPES.get(table.key_type)
    if kind == "string":
        return repr(cursor.take(cursor.varint()).decode("latin-1"))
    if kind == "integer":
        return f"int:{cursor.be32()}"
    if kind == "ip":
        return f"ip:{ipaddress.IPv4Address(cursor.take(4))}"
    if kind == "ipv6":
        return f"ipv6:{ipaddress.IPv6Address(cursor.take(16))}"
    if kind == "binary":
        return f"bin:{cursor.take(table.key_len).hex().upper()}"
    raise Truncated(f"key type {table.key_type} unknown")


def describe_scalar(std: str, cursor: Cursor, direction: Direction) -> str:
    if std == "frqp":
        return f"[tick={cursor.varint()},curr={cursor.varint()},prev={cursor.varint()}]"
    if std == "sint":
        value = cursor.varint() & 0xFFFFFFFF
        return str(value - (1 << 32) if value >= 1 << 31 else value)
    if std == "dict":
        length = cursor.varint()
        if length == 0:
            return "None"
        body = Cursor(cursor.take(length))
        slot = body.varint()
        if body.left():
            direction.dictionary[slot] = body.take(body.varint())
        return repr(direction.dictionary.get(slot, b"?"))
    return str(cursor.varint() & (0xFFFFFFFF if std == "uint" else 0xFFFFFFFFFFFFFFFF))


def describe_update(msg_type: int, cursor: Cursor, direction: Direction) -> str:
    table = direction.current
    if table is None:
        return f"stick-table/{UPDATE_KINDS[msg_type]} before any definition"
    if msg_type in (0x80, 0x85):
        uid, implied = cursor.be32(), ""
    else:
        uid, implied = (table.last_get + 1) & 0xFFFFFFFF, "(implied)"
    table.last_get = uid
    parts = [f"stick-table/{UPDATE_KINDS[msg_type]}", f"table={table.name.decode('latin-1')}", f"uid={uid}{implied}"]
    if msg_type in (0x85, 0x86):
        parts.append(f"expire={cursor.be32()}")
    parts.append(f"key={describe_key(table, cursor)}")
    for type_id in table.types():
        name, std, kind = DATA_TYPES[type_id]
        if "n" in kind:
            count = table.params[type_id][0]
            values = [describe_scalar(std, cursor, direction) for _ in range(count)]
            joined = ",".join(values) if std == "frqp" else ", ".join(values)
            parts.append(f"{name}=[{joined}]")
        else:
            parts.append(f"{name}={describe_scalar(std, cursor, direction)}")
    return " ".join(parts)


def describe_definition(cursor: Cursor, direction: Direction) -> str:
    table_id = cursor.varint()
    name = cursor.take(cursor.varint())
    key_type, key_len, mask = cursor.varint(), cursor.varint(), cursor.varint()
    expire = cursor.varint() if cursor.left() else None
    params: dict[int, tuple[int, ...]] = {}
    while cursor.left():
        type_id = cursor.varint()
        kind = DATA_TYPES.get(type_id, ("?", "?", ""))[2]
        params[type_id] = tuple(cursor.varint() for _ in kind)
    table = direction.tables[table_id] = Table(table_id, name, key_type, key_len, mask, expire, params)
    direction.current = table
    names = []
    for type_id in table.types():
        type_name = DATA_TYPES.get(type_id, (f"type{type_id}",))[0]
        names.append(f"{type_name}({','.join(map(str, params[type_id]))})" if type_id in params else type_name)
    text = (
        f"stick-table/table-definition id={table_id} name={name.decode('latin-1')!r} "
        f"key_type={key_type}({KEY_TYPES.get(key_type, '?')}) key_len={key_len} "
        f"data_types={mask:#x}[{','.join(names)}]"
    )
    return text + (f" expire={expire}" if expire is not None else "")


def describe(message: bytes, direction: Direction) -> str:
    """The text of one whole framed message, as the comment above its hex line."""
    msg_class, msg_type = message[0], message[1]
    if msg_class == 0 and msg_type in CONTROL:
        return f"control/{CONTROL[msg_type]}"
    if msg_class == 1 and msg_type in ERRORS:
        return f"error/{ERRORS[msg_type]}"
    if msg_class != 10 or msg_type < 0x80:
        return f"unknown class={msg_class} type={msg_type}"
    length = Cursor(message[2:])
    length.varint()
    cursor = Cursor(message[2 + length.pos :])
    try:
        if msg_type == 0x82:
            return describe_definition(cursor, direction)
        if msg_type == 0x83:
            table_id = cursor.varint()
            direction.current = direction.tables.get(table_id)
            return f"stick-table/table-switch id={table_id}"
        if msg_type == 0x84:
            return f"stick-table/ack table_id={cursor.varint()} uid={cursor.be32()}"
        if msg_type in UPDATE_KINDS:
            return describe_update(msg_type, cursor, direction)
    except (Truncated, KeyError) as error:
        return f"stick-table/type-{msg_type:#x} DECODE-ERROR {error}"
    return f"stick-table/unknown type={msg_type:#x}"


# -- our own messages -------------------------------------------------------------------


def message(msg_class: int, msg_type: int, payload: bytes = b"") -> bytes:
    if msg_type < 0x80:
        return bytes([msg_class, msg_type])
    return bytes([msg_class, msg_type]) + varint(len(payload)) + payload


@dataclass(frozen=True)
class OurTable:
    """A table the capture peer defines: ``store`` as (type name, params...) in id order."""

    name: str
    key_type: str
    key_len: int
    store: tuple[tuple, ...]
    expire: int | None = 3_600_000
    with_params: bool = True

    def definition(self, table_id: int) -> bytes:
        mask = 0
        params = b""
        for name, *args in sorted(self.store, key=lambda item: TYPE_IDS[item[0]]):
            mask |= 1 << TYPE_IDS[name]
            if args:
                params += varint(TYPE_IDS[name]) + b"".join(varint(a) for a in args)
        kt = {v: k for k, v in KEY_TYPES.items()}[self.key_type]
        payload = varint(table_id) + varint(len(self.name)) + self.name.encode()
        payload += varint(kt) + varint(self.key_len) + varint(mask)
        if self.expire is not None:
            payload += varint(self.expire) + (params if self.with_params else b"")
        return message(10, 0x82, payload)

    def body(self, key: str | int, values: dict[str, object]) -> bytes:
        """Key and values of an update (values: int, (age, curr, prev), or a list of those)."""
        if self.key_type == "string":
            raw = key.encode()  # type: ignore[union-attr]
            out = varint(len(raw)) + raw
        elif self.key_type == "integer":
            out = int(key).to_bytes(4, "big")
        elif self.key_type == "ip":
            out = ipaddress.IPv4Address(key).packed
        else:
            raise ValueError(self.key_type)
        for name, *_ in sorted(self.store, key=lambda item: TYPE_IDS[item[0]]):
            value = values[name]
            items = value if isinstance(value, list) else [value]
            for item in items:
                out += b"".join(varint(v) for v in item) if isinstance(item, tuple) else varint(item)  # type: ignore[arg-type]
        return out


def update(uid: int, body: bytes, expire: int | None = None) -> bytes:
    if expire is None:
        return message(10, 0x80, uid.to_bytes(4, "big") + body)
    return message(10, 0x85, uid.to_bytes(4, "big") + expire.to_bytes(4, "big") + body)


# -- the trace file ---------------------------------------------------------------------


def stamp(now: float) -> str:
    return datetime.datetime.fromtimestamp(now).isoformat(timespec="microseconds")


def clock() -> float:
    """Wall time rounded to what the trace keeps, so decisions and records agree."""
    return round(time.time(), 6)


class Trace:
    def __init__(self, header: list[str]) -> None:
        self.lines = [f"# {line}" if line else "#" for line in header]

    def unit(self, direction: str, now: float, conn: int, text: str, data: bytes) -> None:
        self.lines += [f"# {direction} {stamp(now)} c{conn} {text}", data.hex()]

    def event(self, text: str, conn: int | None = None) -> None:
        where = f" c{conn}" if conn is not None else ""
        self.lines.append(f"# @ {stamp(clock())}{where} {text}")

    def action(self, text: str) -> None:
        self.event(f"action: {text}")


# -- the capture peer -------------------------------------------------------------------


@dataclass
class Policy:
    """How the capture peer behaves on a connection (a working peer by default)."""

    status: int = 200
    heartbeat: bool = True
    ack: bool = True
    answer_resync: bool = True


class Connection:
    def __init__(self, number: int, sock: socket.socket, policy: Policy) -> None:
        self.number, self.sock, self.policy = number, sock, policy
        self.buffer = b""
        self.hello: list[bytes] = []
        self.established = False
        self.closed = False
        self.incoming = Direction()
        self.outgoing = Direction()
        self.received: list[str] = []  # texts of every message from HAProxy
        self.last_sent = clock()
        self.defined_order: list[int] = []  # HAProxy's table ids, in definition order
        self.our_ids: dict[str, int] = {}
        self.our_last_uid: dict[str, int] = {}
        self.our_current: str | None = None


class CapturePeer:
    """Plays peer AGGR for HAProxy nodes; one thread, driven by the scenario's calls."""

    def __init__(self, address: str, trace: Trace) -> None:
        self.trace = trace
        self.listener = socket.create_server((address, AGGR_PORT))
        self.listener.setblocking(False)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ)
        self.connections: list[Connection] = []
        self.policy = Policy()

    # the scenario's view
    def run_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._turn(min(0.05, max(0.0, deadline - time.monotonic())))

    def run_until(self, predicate, timeout: float = 10.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
            self._turn(0.05)

    def connection(self, number: int = 1, timeout: float = 10.0) -> Connection:
        self.run_until(lambda: len(self.connections) >= number and self.connections[number - 1].established,
                       timeout, f"connection c{number}")
        return self.connections[number - 1]

    def received(self, conn: Connection, prefix: str) -> int:
        return sum(text.startswith(prefix) for text in conn.received)

    def send(self, conn: Connection, data: bytes, raw: bool = False) -> None:
        now = clock()
        if raw:
            self.trace.unit(">", now, conn.number, "raw bytes sent by us, unframed (garbage test; may be several or partial messages)", data)
        else:
            self.trace.unit(">", now, conn.number, describe(data, conn.outgoing), data)
        try:
            conn.sock.sendall(data)
        except OSError as error:
            self.trace.event(f"send failed: {error}", conn.number)
        conn.last_sent = now

    def send_update(self, conn: Connection, table: OurTable, key, values: dict, expire: int | None = None) -> None:
        """Our update, with the definition first when another table is current."""
        if table.name not in conn.our_ids:
            conn.our_ids[table.name] = len(conn.our_ids) + 1
            conn.our_last_uid[table.name] = 0
        if conn.our_current != table.name:
            self.send(conn, table.definition(conn.our_ids[table.name]))
            conn.our_current = table.name
        uid = conn.our_last_uid[table.name] = conn.our_last_uid[table.name] + 1
        self.send(conn, update(uid, table.body(key, values), expire))

    def close(self, conn: Connection) -> None:
        self._drop(conn, "closed by us")

    def shutdown(self) -> None:
        for conn in self.connections:
            if not conn.closed:
                self._drop(conn, "closed at the end of the recording")
        self.selector.close()
        self.listener.close()

    # the loop
    def _turn(self, timeout: float) -> None:
        for key, _ in self.selector.select(timeout):
            if key.fileobj is self.listener:
                self._accept()
            else:
                self._read(key.data)
        now = clock()
        for conn in self.connections:
            if conn.established and not conn.closed and conn.policy.heartbeat:
                # a hair over 2 s, so the recorded times (µs) also say >= 2 s
                if now - conn.last_sent >= HEARTBEAT_AFTER + 0.002:
                    self.send(conn, message(0, 4))

    def _accept(self) -> None:
        sock, peer = self.listener.accept()
        sock.setblocking(True)
        sock.settimeout(5.0)
        conn = Connection(len(self.connections) + 1, sock, self.policy)
        self.connections.append(conn)
        self.trace.event(f"ACCEPT from {peer!r}", conn.number)
        self.selector.register(sock, selectors.EVENT_READ, conn)

    def _drop(self, conn: Connection, why: str) -> None:
        if conn.closed:
            return
        conn.closed = True
        self.selector.unregister(conn.sock)
        conn.sock.close()
        self.trace.event(f"CLOSE {why}", conn.number)

    def _read(self, conn: Connection) -> None:
        try:
            data = conn.sock.recv(65536)
        except OSError as error:
            self._drop(conn, f"error {error}")
            return
        now = clock()
        if not data:
            self._drop(conn, "EOF from peer")
            return
        conn.buffer += data
        if not conn.established:
            self._read_hello(conn, now)
            if not conn.established:
                return
        confirms, updated, resync = 0, [], False
        while (size := split_frame(conn.buffer)) is not None:
            unit, conn.buffer = conn.buffer[:size], conn.buffer[size:]
            text = describe(unit, conn.incoming)
            self.trace.unit("<", now, conn.number, text, unit)
            conn.received.append(text)
            if text.startswith("stick-table/table-definition"):
                table_id = conn.incoming.current.table_id  # type: ignore[union-attr]
                if table_id not in conn.defined_order:
                    conn.defined_order.append(table_id)
            elif text.startswith("stick-table/update") and conn.incoming.current is not None:
                if conn.incoming.current.table_id not in updated:
                    updated.append(conn.incoming.current.table_id)
            elif text in ("control/resync-finished", "control/resync-partial"):
                self.send(conn, message(0, 3))
                confirms += 1
            elif text == "control/resync-request":
                resync = True
        if conn.policy.ack:
            for table_id in conn.defined_order:
                if table_id in updated:
                    table = conn.incoming.tables[table_id]
                    self.send(conn, message(10, 0x84, varint(table_id) + table.last_get.to_bytes(4, "big")))
        if resync and conn.policy.answer_resync:
            self.send(conn, message(0, 1))

    def _read_hello(self, conn: Connection, now: float) -> None:
        while len(conn.hello) < 3 and b"\n" in conn.buffer:
            line, conn.buffer = conn.buffer.split(b"\n", 1)
            line += b"\n"
            conn.hello.append(line)
            self.trace.unit("<", now, conn.number, f"handshake line {line!r}", line)
        if len(conn.hello) == 3:
            status = f"{conn.policy.status}\n".encode()
            self.trace.unit(">", clock(), conn.number, f"handshake line {status!r}", status)
            try:
                conn.sock.sendall(status)
            except OSError as error:  # HAProxy 3.4, stopping, resets a connection it just opened
                self._drop(conn, f"error {error} (sending the status)")
                return
            conn.last_sent = clock()
            if conn.policy.status == 200:
                conn.established = True
            else:
                self._drop(conn, f"after status {conn.policy.status}")


# -- HAProxy nodes ----------------------------------------------------------------------

GLOBAL = """global
    localpeer {name}
    stats socket {sock} mode 600 level admin
    nbthread 1
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
"""

RATE_TABLE = "store http_req_cnt,http_req_rate(10s)"

#: Two string and two ip tables; header x-key picks the string key, the source the ip.
NODE = GLOBAL + """frontend mytable.local
    bind {addr}:{http}
    stick-table type string len 32 size 100k expire 1h {store} peers mypeers
    http-request track-sc0 req.hdr(x-key) if {{ req.hdr(x-key) -m found }}
    http-request track-sc1 src table myip.local
    http-request return status 200 content-type text/plain string ok
backend mytable.aggr
    stick-table type string len 32 size 100k expire 1h {store} peers mypeers
backend myip.local
    stick-table type ip size 100k expire 1h {store} peers mypeers
backend myip.aggr
    stick-table type ip size 100k expire 1h {store} peers mypeers
peers mypeers
    peer {name} {addr}:{peer}
    peer AGGR {addr}:{aggr}
"""

#: The tables as `table` lines of the peers section (wire names get a leading slash).
PEERS_SECTION_TABLES = GLOBAL + """frontend fe_http
    bind {addr}:{http}
    http-request track-sc0 req.hdr(x-key) table mypeers/mytable.local if {{ req.hdr(x-key) -m found }}
    http-request return status 200 content-type text/plain string ok
peers mypeers
    bind {addr}:{peer}
    server {name}
    server AGGR {addr}:{aggr}
    table mytable.local type string len 32 size 100k expire 1h {store}
    table mytable.aggr type string len 32 size 100k expire 1h {store}
"""

KIND_STORE = "store http_req_cnt,http_req_rate(10s),conn_cur,conn_cnt,conn_rate(10s),gpc0,gpc0_rate(10s),gpt0,bytes_in_rate(10s),server_id"

#: One table per key type (the header picks it), plus arrays; x-gpc0 / x-gpt0 / x-gpc-idx / x-gpt1 act on them.
KINDS = GLOBAL + """frontend fe_kinds
    bind {addr}:{http}
    http-request track-sc0 req.hdr(x-key) table t_str.local if {{ req.hdr(x-key) -m found }}
    http-request track-sc0 req.hdr_ip(x-ip) table t_ip.local if {{ req.hdr(x-ip) -m found }}
    http-request track-sc0 req.hdr_ip(x-ip6) table t_ipv6.local if {{ req.hdr(x-ip6) -m found }}
    http-request track-sc0 req.hdr_val(x-int) table t_int.local if {{ req.hdr(x-int) -m found }}
    http-request track-sc0 req.hdr(x-bin) table t_bin.local if {{ req.hdr(x-bin) -m found }}
    http-request track-sc0 req.hdr(x-arr) table t_arr.local if {{ req.hdr(x-arr) -m found }}
    http-request sc-inc-gpc0(0) if {{ req.hdr(x-gpc0) -m found }}
    http-request sc-set-gpt0(0) req.hdr_val(x-gpt0) if {{ req.hdr(x-gpt0) -m found }}
    http-request sc-inc-gpc(0,0) if {{ req.hdr_val(x-gpc-idx) eq 0 }}
    http-request sc-inc-gpc(1,0) if {{ req.hdr_val(x-gpc-idx) eq 1 }}
    http-request sc-inc-gpc(2,0) if {{ req.hdr_val(x-gpc-idx) eq 2 }}
    http-request sc-set-gpt(1,0) req.hdr_val(x-gpt1) if {{ req.hdr(x-gpt1) -m found }}
    http-request return status 200 content-type text/plain string ok
backend t_ip.local
    stick-table type ip size 1k expire 1h {kinds} peers mypeers
backend t_ipv6.local
    stick-table type ipv6 size 1k expire 1h {kinds} peers mypeers
backend t_int.local
    stick-table type integer size 1k expire 1h {kinds} peers mypeers
backend t_str.local
    stick-table type string len 32 size 1k expire 1h {kinds} peers mypeers
backend t_bin.local
    stick-table type binary len 16 size 1k expire 1h {kinds} peers mypeers
backend t_arr.local
    stick-table type string len 32 size 1k expire 1h store http_req_cnt,gpc(3),gpc_rate(3,10s),gpt(2) peers mypeers
peers mypeers
    peer {name} {addr}:{peer}
    peer AGGR {addr}:{aggr}
"""

#: Our mytable.aggr, exactly as the nodes declare it (string len 32 -> key length 33).
AGGR_TABLE = OurTable("mytable.aggr", "string", 33, (("http_req_cnt",), ("http_req_rate", 10_000)))
AGGR_IP_TABLE = OurTable("myip.aggr", "ip", 4, (("http_req_cnt",), ("http_req_rate", 10_000)))


class Node:
    """One HAProxy process, its runtime API, and the .cli.txt transcript."""

    def __init__(self, binary: str, template: str, name: str, address: str, offset: int, workdir: Path,
                 trace: Trace, transcript: list[str]) -> None:
        self.binary, self.name, self.address = binary, name, address
        self.http_port = HTTP_PORT + offset
        self.sock = workdir / f"hap{name}.sock"
        self.config_text = template.format(
            name=name, sock=self.sock, addr=address, http=self.http_port, peer=PEER_PORT + offset,
            aggr=AGGR_PORT, store=RATE_TABLE, kinds=KIND_STORE,
        )
        self.config = workdir / f"hap{name}.cfg"
        self.config.write_text(self.config_text)
        self.log = workdir / f"hap{name}.log"
        self.trace, self.transcript = trace, transcript
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen([self.binary, "-db", "-f", str(self.config)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"haproxy {self.name} exited: {self.log.read_text()[-2000:]}")
            try:
                self._query("help")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"haproxy {self.name}: no runtime API after 10 s") from None
                time.sleep(0.02)  # polling for the socket to appear; the deadline decides
        self.trace.event(f"started haproxy {self.name} pid {self.process.pid}")

    def _query(self, command: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5.0)
            sock.connect(str(self.sock))
            sock.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def cli(self, command: str, record: bool = True) -> str:
        """A runtime-API command, noted in the trace; its answer kept for the .cli.txt."""
        self.trace.action(f"cli {self.name}: {command}")
        answer = self._query(command)
        if record:
            self.transcript += [f"$ echo '{command}' | socat stdio UNIX-CONNECT:hap{self.name}.sock", answer]
        return answer

    def request(self, headers: dict[str, str], body: bytes | None = None) -> None:
        shown = " ".join(f"-H '{k}: {v}'" for k, v in headers.items())
        shown += f" --data-binary <{len(body)} bytes>" if body else ""
        self.trace.action(f"curl {shown} http://{self.address}:{self.http_port}/")
        connection = http.client.HTTPConnection(self.address, self.http_port, timeout=5)
        try:
            connection.request("POST" if body else "GET", "/", body=body, headers=headers)
            answer = connection.getresponse()
            answer.read()
            if answer.status != 200:
                raise RuntimeError(f"haproxy {self.name} answered {answer.status}")
        finally:
            connection.close()

    def stop(self, sig: int = signal.SIGUSR1) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.trace.action(f"stop haproxy {self.name} pid {self.process.pid} with {signal.Signals(sig).name}")
        self.process.send_signal(sig)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# -- scenarios --------------------------------------------------------------------------


@dataclass
class Bed:
    """What a scenario works with: the capture peer, the nodes, the transcript."""

    peer: CapturePeer
    nodes: dict[str, Node]
    transcript: list[str]

    @property
    def node(self) -> Node:
        return next(iter(self.nodes.values()))


def wait_updates(bed: Bed, conn: Connection, count: int, what: str) -> None:
    """Until HAProxy has sent ``count`` more updates on ``conn`` than before the call."""
    target = bed.peer.received(conn, "stick-table/update") + count
    bed.peer.run_until(lambda: bed.peer.received(conn, "stick-table/update") >= target, 5.0, what)


def wait_acked(bed: Bed, conn: Connection, table: OurTable) -> None:
    """Until HAProxy has acked our last update of ``table`` on ``conn``."""
    ack = f"stick-table/ack table_id={conn.our_ids[table.name]} uid={conn.our_last_uid[table.name]}"
    bed.peer.run_until(lambda: ack in conn.received, 5.0, f"HAProxy's ack of {table.name}")


def wait_count(bed: Bed, conn: Connection, prefix: str, count: int, what: str, timeout: float = 10.0) -> None:
    bed.peer.run_until(lambda: bed.peer.received(conn, prefix) >= count, timeout, what)


def settle(bed: Bed) -> None:
    """A short quiet spell for late messages (acks, pushes) before the next step."""
    bed.peer.run_for(0.3)


def push_keys(bed: Bed, conn: Connection, keys: tuple[str, ...], pause: bool = True) -> None:
    """A request per key on the first node, each waited for as HAProxy's push on ``conn``."""
    for key in keys:
        bed.node.request({"x-key": key})
        wait_updates(bed, conn, 1, f"the push for {key}")
        if pause:
            settle(bed)


def ask_teach(bed: Bed, conn: Connection) -> None:
    """Our resync request (00 00), and HAProxy's whole teach up to its 00 01."""
    finished = bed.peer.received(conn, "control/resync-finished")
    bed.peer.send(conn, message(0, 0))
    wait_count(bed, conn, "control/resync-finished", finished + 1, "the teach")


def stop_all(bed: Bed, sig: int = signal.SIGTERM) -> None:
    """Stop every node and wait for the capture peer to see each connection close."""
    for node in bed.nodes.values():
        node.stop(sig)
    bed.peer.run_until(lambda: all(c.closed for c in bed.peer.connections), 5.0, "the closes")


def show_tables(bed: Bed, node: Node, tables: list[str]) -> None:
    for table in tables:
        node.cli(f"show table {table}")


def scenario_session_basic(bed: Bed) -> None:
    """Handshake and start-up resync; live pushes after HTTP requests and after `set table`;
    our update of mytable.aggr and HAProxy's ack; our resync request and the teach; heartbeats
    both ways while idle; the runtime API's view; soft stop."""
    peer, node = bed.peer, bed.node
    conn = peer.connection()
    settle(bed)
    push_keys(bed, conn, ("alice", "alice", "alice", "bob"))
    node.cli("set table mytable.local key carol data.http_req_cnt 5")
    wait_updates(bed, conn, 1, "the push of set table")
    settle(bed)
    peer.send_update(conn, AGGR_TABLE, "alice", {"http_req_cnt": 42, "http_req_rate": (0, 7, 3)})
    peer.send_update(conn, AGGR_TABLE, "bob", {"http_req_cnt": 9, "http_req_rate": (0, 2, 1)})
    peer.send_update(conn, AGGR_IP_TABLE, "127.0.0.1", {"http_req_cnt": 12, "http_req_rate": (0, 4, 0)})
    wait_acked(bed, conn, AGGR_TABLE)
    wait_acked(bed, conn, AGGR_IP_TABLE)
    show_tables(bed, node, ["mytable.aggr", "myip.aggr"])
    ask_teach(bed, conn)
    heartbeats = peer.received(conn, "control/heartbeat")
    wait_count(bed, conn, "control/heartbeat", heartbeats + 1, "HAProxy's heartbeat")
    show_tables(bed, node, ["mytable.local", "myip.local", "mytable.aggr", "myip.aggr"])
    node.cli("show peers")
    stop_all(bed, signal.SIGUSR1)


def scenario_session_kinds(bed: Bed) -> None:
    """Every key type (ip, ipv6, integer, string, binary) and data type, arrays too: live
    pushes, then our resync request and the teach; `show table` of each."""
    peer, node = bed.peer, bed.node
    conn = peer.connection()
    settle(bed)
    body = b"0123456789" * 10
    requests = [
        {"x-ip": "192.0.2.1"}, {"x-ip": "192.0.2.1", "x-gpc0": "1", "x-gpt0": "7"},
        {"x-ip6": "2001:db8::1"}, {"x-ip6": "2001:db8::1", "x-gpc0": "1", "x-gpt0": "7"},
        {"x-int": "42"}, {"x-int": "42", "x-gpc0": "1", "x-gpt0": "7"}, {"x-int": "4294967295"},
        {"x-key": "alice"}, {"x-key": "alice", "x-gpc0": "1", "x-gpt0": "7"},
        {"x-bin": "alice"}, {"x-bin": "0123456789abcdef"},
        {"x-arr": "alice", "x-gpc-idx": "0"}, {"x-arr": "alice", "x-gpc-idx": "2", "x-gpt1": "99"},
        {"x-arr": "bob", "x-gpc-idx": "1"},
    ]
    for number, headers in enumerate(requests):
        node.request(headers, body if number % 2 else None)
        wait_updates(bed, conn, 1, f"the push for {headers}")
        settle(bed)
    ask_teach(bed, conn)
    settle(bed)
    show_tables(bed, node, [f"t_{kind}.local" for kind in ("ip", "ipv6", "int", "str", "bin", "arr")])
    stop_all(bed, signal.SIGUSR1)


def scenario_session_abc(bed: Bed) -> None:
    """Three HAProxy nodes A, B, C on one listener; each pushes its counts; we write the
    aggregate to all three; their acks; `show table` on each."""
    peer = bed.peer
    conns = {name: peer.connection(number) for number, name in enumerate(bed.nodes, 1)}
    by_name = {}
    for conn in conns.values():
        caller = conn.hello[2].split()[0].decode()
        by_name[caller] = conn
    settle(bed)
    for name, node in bed.nodes.items():
        node.request({"x-key": "alice"})
        wait_updates(bed, by_name[name], 2, f"{name}'s pushes")  # string and ip tables
        settle(bed)
    for name in bed.nodes:
        conn = by_name[name]
        peer.send_update(conn, AGGR_TABLE, "alice", {"http_req_cnt": 3, "http_req_rate": (0, 3, 0)})
        wait_acked(bed, conn, AGGR_TABLE)
    settle(bed)
    for node in bed.nodes.values():
        show_tables(bed, node, ["mytable.local", "mytable.aggr"])
    stop_all(bed, signal.SIGUSR1)


def scenario_session_peers_section_tables(bed: Bed) -> None:
    """Tables declared in the peers section travel as '/mytable.local': pushes, our write of
    '/mytable.aggr' (acked and stored) and of 'mytable.aggr' (ignored), the teach."""
    peer, node = bed.peer, bed.node
    conn = peer.connection()
    settle(bed)
    push_keys(bed, conn, ("alice", "bob"))
    slashed = OurTable("/mytable.aggr", "string", 33, AGGR_TABLE.store)
    peer.send_update(conn, slashed, "alice", {"http_req_cnt": 42, "http_req_rate": (0, 7, 3)})
    wait_acked(bed, conn, slashed)
    peer.send_update(conn, AGGR_TABLE, "bob", {"http_req_cnt": 9, "http_req_rate": (0, 2, 1)})
    settle(bed)
    ask_teach(bed, conn)
    settle(bed)
    show_tables(bed, node, ["mypeers/mytable.local", "mypeers/mytable.aggr"])
    stop_all(bed, signal.SIGUSR1)


def scenario_write_variants(bed: Bed) -> None:
    """Which of our definitions and updates HAProxy takes (see the .cli.txt after each):
    key length, data types subset/superset, another period, another expire with a timed
    update, wrong key type, unknown table, no parameters, no expire, the local table,
    switch (0x83), incremental updates (0x81/0x86), a smaller counter over a bigger one."""
    peer, node = bed.peer, bed.node
    conn = peer.connection()
    settle(bed)
    rate = ("http_req_rate", 10_000)
    variants = [
        ("exact (key length 33 = len 32 + 1)", OurTable("mytable.aggr", "string", 33, (("http_req_cnt",), rate)), "k_exact", None),
        ("key length 32 instead of 33", OurTable("mytable.aggr", "string", 32, (("http_req_cnt",), rate)), "k_len32", None),
        ("data types subset: only http_req_cnt", OurTable("mytable.aggr", "string", 33, (("http_req_cnt",),)), "k_subset", None),
        ("data types superset: + gpc0", OurTable("mytable.aggr", "string", 33, (("gpc0",), ("http_req_cnt",), rate)), "k_superset", None),
        ("another rate period (20000)", OurTable("mytable.aggr", "string", 33, (("http_req_cnt",), ("http_req_rate", 20_000))), "k_period", None),
        ("expire 60000 and a timed update (30000)", OurTable("mytable.aggr", "string", 33, (("http_req_cnt",), rate), expire=60_000), "k_timed", 30_000),
        ("wrong key type (integer)", OurTable("mytable.aggr", "integer", 4, (("http_req_cnt",), rate)), 77, None),
        ("unknown table name", OurTable("nosuch.aggr", "string", 33, (("http_req_cnt",), rate)), "k_unknown", None),
        ("expire but no parameters", OurTable("mytable.aggr", "string", 33, (("http_req_cnt",), rate), with_params=False), "k_noparams", None),
        ("no expire and no parameters", OurTable("mytable.aggr", "string", 33, (("http_req_cnt",), rate), expire=None), "k_noexpire", None),
        ("the local table", OurTable("mytable.local", "string", 33, (("http_req_cnt",), rate)), "k_local", None),
    ]
    values = {"http_req_cnt": 0, "http_req_rate": (0, 7, 3), "gpc0": 99}
    # each variant gets a table id of its own: send it by hand, not through send_update
    for number, (what, table, key, expire) in enumerate(variants, 1):
        bed.peer.trace.action(f"variant: {what}")
        values["http_req_cnt"] = 10 + number
        peer.send(conn, table.definition(number))
        peer.send(conn, update(number, table.body(key, values), expire))
        settle(bed)
    uid = len(variants)
    exact = variants[0][1]
    peer.trace.action("variant: table switch (0x83) back to id 1")
    peer.send(conn, message(10, 0x83, varint(1)))
    uid += 1
    peer.send(conn, update(uid, exact.body("k_switch", {**values, "http_req_cnt": 22})))
    peer.trace.action("variant: incremental updates (0x81, 0x86) after it")
    uid += 1
    peer.send(conn, message(10, 0x81, exact.body("k_incr", {**values, "http_req_cnt": 23})))
    uid += 1
    peer.send(conn, message(10, 0x86, (50_000).to_bytes(4, "big") + exact.body("k_incr_timed", {**values, "http_req_cnt": 24})))
    settle(bed)
    peer.trace.action("variant: define id 1 again, then k_exact with a smaller counter (5)")
    peer.send(conn, exact.definition(1))
    uid += 1
    peer.send(conn, update(uid, exact.body("k_exact", {**values, "http_req_cnt": 5, "http_req_rate": (0, 1, 0)})))
    settle(bed)
    show_tables(bed, node, ["mytable.aggr", "mytable.local"])
    stop_all(bed, signal.SIGUSR1)


#: (file tag, bytes, what it is): sent raw after a working start; HAProxy's reaction recorded.
GARBAGE = [
    ("garbage-bytes-42424242", b"BBBBGARBAGE\n", "ASCII garbage"),
    ("garbage-error-class-0", bytes.fromhex("0100"), "an error message (protocol error) from us"),
    ("garbage-unknown-class-5", bytes.fromhex("0500"), "a message of unknown class 5"),
    ("garbage-stick-table-type-200", bytes.fromhex("0ac80100"), "unknown stick-table type 200, 1 byte of payload"),
    ("garbage-truncated-length-varint", bytes.fromhex("0a82f0"), "a length varint that never ends"),
    ("garbage-update-before-definition", bytes.fromhex("0a800e0000000105616c6963652a000703"), "an update before any definition"),
    ("malformed-ack-for-unknown-table", bytes.fromhex("0a840563000000" "01"), "an ack for table id 99, never defined"),
    ("malformed-definition-name-truncated", bytes.fromhex("0a820301054d"), "a definition whose name is cut short"),
    ("malformed-message-length-20000-bufsize", bytes.fromhex("0a80f0d308"), "a length of 20000, over HAProxy's 16384 buffer"),
    ("malformed-update-string-key-too-long", None, "a string key of 40 bytes for a len 32 table"),
]


def garbage_scenario(tag: str, data: bytes | None, what: str):
    def scenario(bed: Bed) -> None:
        peer, node = bed.peer, bed.node
        conn = peer.connection()
        settle(bed)
        push_keys(bed, conn, ("alice",))
        raw = data
        if raw is None:
            peer.send_update(conn, AGGR_TABLE, "x" * 40, {"http_req_cnt": 7, "http_req_rate": (0, 1, 0)})
        else:
            peer.trace.action(f"send raw: {what}")
            peer.send(conn, raw, raw=True)
        # what HAProxy does next: an error and a close, or nothing and the session goes on
        peer.run_until(lambda: conn.closed or peer.received(conn, "control/heartbeat") > 0, 8.0, "HAProxy's reaction")
        if not conn.closed:
            node.request({"x-key": "bob"})
            peer.run_until(lambda: conn.closed or peer.received(conn, "stick-table/update") >= 2, 5.0, "a push after it")
            settle(bed)
            show_tables(bed, node, ["mytable.aggr"])
        stop_all(bed, signal.SIGTERM)

    scenario.__doc__ = f"After a working start we send {what}; HAProxy's answer and what follows."
    return scenario


def scenario_no_heartbeat_from_us(bed: Bed) -> None:
    """We never send a heartbeat: when HAProxy closes the silent session, and that it redials."""
    peer = bed.peer
    peer.policy.heartbeat = False
    conn = peer.connection()
    peer.run_until(lambda: conn.closed, 15.0, "HAProxy closing the silent session")
    peer.policy.heartbeat = True
    peer.connection(2, 10.0)
    settle(bed)
    stop_all(bed, signal.SIGTERM)


def scenario_resync_not_answered(bed: Bed) -> None:
    """We leave HAProxy's resync request unanswered (heartbeats still sent): whether it
    pushes a request made meanwhile, when it gives the session up, and that it redials."""
    peer, node = bed.peer, bed.node
    peer.policy.answer_resync = False
    conn = peer.connection()
    peer.run_for(1.0)
    node.request({"x-key": "alice"})
    peer.run_until(lambda: conn.closed, 15.0, "HAProxy giving the session up")
    peer.connection(2, 15.0)
    settle(bed)
    stop_all(bed, signal.SIGTERM)


def reconnect_scenario(acked: bool):
    def scenario(bed: Bed) -> None:
        peer, node = bed.peer, bed.node
        peer.policy.ack = acked
        conn = peer.connection()
        settle(bed)
        push_keys(bed, conn, ("alice", "bob"), pause=False)
        settle(bed)
        peer.trace.action("close the connection")
        peer.close(conn)
        peer.policy.ack = True
        second = peer.connection(2, 10.0)
        settle(bed)
        node.request({"x-key": "carol"})
        wait_updates(bed, second, 1, "the push for carol")
        settle(bed)
        ask_teach(bed, second)
        settle(bed)
        stop_all(bed, signal.SIGTERM)

    word = "acked" if acked else "never acked"
    scenario.__doc__ = f"Pushes {word} by us, then we close: what HAProxy sends again on the next connection."
    return scenario


def scenario_status_502(bed: Bed) -> None:
    """We answer the hello with 502 (bad version): HAProxy does not dial again (watched
    for 12 s, over twice its usual 5 s redial), and the session it shows."""
    peer, node = bed.peer, bed.node
    peer.policy.status = 502
    peer.run_until(lambda: len(peer.connections) >= 1 and peer.connections[0].closed, 10.0, "the refused hello")
    peer.policy.status = 200
    peer.run_for(12.0)
    peer.trace.event(f"connections in all: {len(peer.connections)}")
    node.cli("show peers", record=False)
    stop_all(bed, signal.SIGTERM)


@dataclass(frozen=True)
class Scenario:
    name: str
    run: object
    template: str
    nodes: tuple[str, ...] = ("A",)
    cli: bool = False  # keep a .cli.txt

    @property
    def doc(self) -> str:
        return " ".join((self.run.__doc__ or "").split())  # type: ignore[attr-defined]


SCENARIOS = [
    Scenario("session-basic", scenario_session_basic, NODE, cli=True),
    Scenario("session-kinds", scenario_session_kinds, KINDS, cli=True),
    Scenario("session-abc", scenario_session_abc, NODE, ("A", "B", "C"), cli=True),
    Scenario("session-peers-section-tables", scenario_session_peers_section_tables, PEERS_SECTION_TABLES, cli=True),
    Scenario("write-variants", scenario_write_variants, NODE, cli=True),
    *[Scenario(f"proto-{tag}", garbage_scenario(tag, data, what), NODE) for tag, data, what in GARBAGE],
    Scenario("proto-no-heartbeat-from-us", scenario_no_heartbeat_from_us, NODE),
    Scenario("proto-resync-not-answered", scenario_resync_not_answered, NODE),
    Scenario("proto-reconnect-acked", reconnect_scenario(True), NODE),
    Scenario("proto-reconnect-unacked", reconnect_scenario(False), NODE),
    Scenario("proto-status-502", scenario_status_502, NODE),
]


# -- running ----------------------------------------------------------------------------


def haproxy_version(binary: str) -> tuple[str, str]:
    """(label like '2.8', first line of -v) of a HAProxy binary."""
    first = subprocess.run([binary, "-v"], capture_output=True, text=True, check=True).stdout.splitlines()[0]
    number = first.split("version", 1)[1].split()[0]
    return ".".join(number.split(".")[:2]), first


def record(scenario: Scenario, binary: str, out: Path) -> Path:
    label, version_line = haproxy_version(binary)
    address = f"127.{random.randint(16, 250)}.{random.randint(1, 250)}.{random.randint(2, 250)}"
    header = [
        "HAProxy peers protocol trace recorded from a real HAProxy process (not hand-written)",
        "by contrib/record_vectors.py; format: tests/data/vectors/README.md.",
        f"haproxy: {version_line}",
        f"scenario: {scenario.name}: {scenario.doc}",
        "capture peer: plays AGGR; a working peer unless the scenario says otherwise (status 200,",
        "  acks after each read, 00 01 to a resync request, 00 03 after a teach, heartbeat after 2 s idle).",
        "Addresses, ports, pids, update ids, frequency-counter ticks and expiries change from run to run.",
    ]
    trace = Trace(header)
    transcript: list[str] = []
    with tempfile.TemporaryDirectory(prefix="stktagg-record-") as tmp:
        workdir = Path(tmp)
        peer = CapturePeer(address, trace)
        nodes = {
            name: Node(binary, scenario.template, name, address, offset, workdir, trace, transcript)
            for offset, name in enumerate(scenario.nodes)
        }
        first = next(iter(nodes.values()))
        trace.lines += ["#", f"# HAProxy configuration of node {first.name} (the others differ in names and ports):"]
        trace.lines += [f"#   {line}" for line in first.config_text.replace(str(workdir) + "/", "").splitlines()]
        trace.lines.append("#")
        try:
            for node in nodes.values():
                node.start()
            scenario.run(Bed(peer, nodes, transcript))  # type: ignore[operator]
        finally:
            for node in nodes.values():
                node.stop(signal.SIGTERM)
            peer.shutdown()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"haproxy-{label}-{scenario.name}.hex"
    path.write_text("\n".join(trace.lines) + "\n")
    if scenario.cli:
        text = "\n".join(transcript)
        (out / f"haproxy-{label}-{scenario.name}.cli.txt").write_text(f"# {version_line}\n{text}")
    return path


def default_binaries() -> list[str]:
    found = []
    for candidate in (shutil.which("haproxy"), "/usr/sbin/haproxy", os.environ.get("STKTAGG_HAPROXY28")):
        if candidate and Path(candidate).exists() and candidate not in found:
            found.append(candidate)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--haproxy", action="append", metavar="PATH",
                        help="a HAProxy binary (repeatable; default: the system's and $STKTAGG_HAPROXY28)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--only", action="append", metavar="SCENARIO", help="record only these scenarios")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = parser.parse_args(argv)
    if args.list:
        for scenario in SCENARIOS:
            print(f"{scenario.name}: {scenario.doc}")
        return 0
    binaries = args.haproxy or default_binaries()
    if not binaries:
        print("record_vectors.py: no HAProxy binary found (install haproxy or pass --haproxy)", file=sys.stderr)
        return 2
    chosen = [s for s in SCENARIOS if not args.only or s.name in args.only]
    unknown = set(args.only or ()) - {s.name for s in SCENARIOS}
    if unknown:
        print(f"record_vectors.py: unknown scenario(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    for binary in binaries:
        for scenario in chosen:
            started = time.monotonic()
            path = record(scenario, binary, args.out)
            print(f"{path.relative_to(args.out.parent) if args.out.parent in path.parents else path}  "
                  f"({time.monotonic() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
