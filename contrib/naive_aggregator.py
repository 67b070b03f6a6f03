#!/usr/bin/env python3
"""A deliberately naive peers aggregator: the reference point of ``contrib/bench.py``.

Usage: ``python3 contrib/naive_aggregator.py --listen 127.0.0.1:11100 --name AGGR``

What it is for: a yardstick. It does what an aggregator must do in the
plainest way, so the bench can put the product's figures next to "the first
thing anyone would write": one thread, one ``selectors`` loop, decode every
update message, keep each peer's latest values per key, sum them, re-encode
the sum and push it to every session. It is written from
``shared/docs/peers-protocol.md`` and uses only the standard library (plus
the varint helpers of ``stktagg.codec``).

What it does:

- accepts peer sessions (hello of protocol 2.0/2.1, answers ``200``; any peer
  name is accepted), answers a resync request (``00 00``) with "resync
  finished" (``00 01``) since it has nothing to teach, confirms a teach it is
  given (``00 03``), and sends a heartbeat (``00 04``) after 3 s without
  sending anything;
- parses table definitions (0x82) and updates (0x80, 0x81, 0x85, 0x86) of
  tables whose values are scalars or frequency counters (no arrays, no
  dictionary type); tables named ``*.local`` are aggregated into ``*.aggr``;
- acks each table once per read with the newest update id (0x84);
- sums each key over peers (contributions keyed by peer name): counters are
  added (UINT sums clamped to 32 bits), a frequency counter is the sum of the
  ``curr`` and of the ``prev`` counters with the newest period start;
- coalesces: the keys changed while reading are collected in a set, and at
  most every ``--push-interval`` (default 50 ms) up to ``--push-max`` of them
  (default 5,000, oldest change first) have their sum pushed to every session
  (its own definition of the output table first, then one explicit id and
  implied ids): a key that changes often is pushed once per interval, and
  under load the pushes take a bounded share of the time, the rest waiting
  (and coalescing) in the set.

What it omits, on purpose: expiry of contributions, rate period alignment
(peers-protocol.md §6.5), teaching (a new session receives only keys that
change later), backpressure (output buffers grow if a peer does not read),
liveness checks, TLS, peer name checks, and every other operational concern.
Do not run it in production.
"""

from __future__ import annotations

import argparse
import itertools
import selectors
import socket
import struct
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from stktagg.codec import decode_varint, encode_varint  # noqa: E402

FREQ_TYPES = frozenset((3, 5, 8, 10, 12, 14, 16, 18, 21, 26))  #: FRQP: age, curr, prev
ULL_TYPES = frozenset((13, 15))  #: 64-bit counters; every other scalar is 32-bit
UNSUPPORTED_TYPES = frozenset((19, 22, 23, 24))  #: dictionary and arrays
U32 = 0xFFFFFFFF
HEARTBEAT_AFTER = 3.0
PUSH_INTERVAL = 0.05
PUSH_MAX = 5000
BE32 = struct.Struct("!I")


class ProtocolError(Exception):
    pass


class Layout:
    """A received table definition: what an update of that table carries."""

    def __init__(self, payload: bytes) -> None:
        self.sender_id, p = decode_varint(payload, 0)
        n, p = decode_varint(payload, p)
        if n == 0 or p + n > len(payload):
            raise ProtocolError("bad table name")
        self.name = bytes(payload[p:p + n])
        self.key_type, p = decode_varint(payload, p + n)
        self.key_len, p = decode_varint(payload, p)
        self.mask, p = decode_varint(payload, p)
        self.tail = bytes(payload[p:])  # expire and per-type parameters, copied into our definition
        self.fields = [t in FREQ_TYPES for t in range(64) if self.mask >> t & 1]  # True: a freq counter
        self.types = [t for t in range(64) if self.mask >> t & 1]
        self.usable = (self.name.endswith(b".local") and not UNSUPPORTED_TYPES & set(self.types)
                       and self.key_type in (2, 4, 5, 6, 7))

    def shape(self) -> tuple:
        return self.key_type, self.key_len, self.mask


class Conn:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbuf = bytearray()
        self.out = bytearray()
        self.name: bytes | None = None  #: the peer's name, once its hello is accepted
        self.tables: dict[int, Layout] = {}  #: sender's table id -> its definition
        self.current: Layout | None = None
        self.last_get: dict[int, int] = {}  #: sender's table id -> newest update id received
        self.acked: dict[int, int] = {}
        self.out_current: bytes | None = None  #: our output table selected on this session
        self.pushed: dict[bytes, int] = {}  #: output table -> our last update id
        self.last_send = time.monotonic()
        self.writing = False


class NaiveAggregator:
    def __init__(self, listen: str, name: str, push_interval: float = PUSH_INTERVAL,
                 push_max: int = PUSH_MAX) -> None:
        host, port = listen.rsplit(":", 1)
        self.push_interval = push_interval
        self.push_max = push_max
        self.next_push = 0.0
        self.name = name.encode()
        self.sel = selectors.DefaultSelector()
        self.listener = socket.create_server((host.strip("[]"), int(port)), backlog=128)
        self.listener.setblocking(False)
        self.sel.register(self.listener, selectors.EVENT_READ, None)
        self.conns: list[Conn] = []
        self.layouts: dict[bytes, Layout] = {}  #: input table name -> the first definition seen
        self.out_ids: dict[bytes, int] = {}  #: input table name -> our id for its output table
        self.store: dict[bytes, dict[bytes, dict[bytes, list]]] = {}  #: table -> key -> peer -> values
        self.changed: dict[tuple[bytes, bytes], None] = {}  #: insertion order: oldest change first

    # -- loop ---------------------------------------------------------------------

    def run(self) -> None:
        while True:
            wait = max(0.0, self.next_push - time.monotonic()) if self.changed else 1.0
            for key, events in self.sel.select(timeout=wait):
                if key.data is None:
                    self.accept()
                    continue
                conn = key.data
                try:
                    if events & selectors.EVENT_READ:
                        self.read(conn)
                    if events & selectors.EVENT_WRITE:
                        self.flush(conn)
                except (OSError, ProtocolError, ValueError, IndexError, TypeError, struct.error) as exc:
                    print(f"naive: closing {conn.name!r}: {type(exc).__name__}: {exc}", file=sys.stderr)
                    if isinstance(exc, ProtocolError) and conn.name is not None:
                        conn.out += b"\x01\x00"
                        self.flush(conn)
                    self.close(conn)
            now = time.monotonic()
            if now >= self.next_push and self.changed:
                self.push_changes()
                self.next_push = now + self.push_interval
            for conn in list(self.conns):
                if conn.name is not None and now - conn.last_send >= HEARTBEAT_AFTER:
                    conn.out += b"\x00\x04"
                if conn.out:
                    try:
                        self.flush(conn)
                    except OSError:
                        self.close(conn)

    def accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except BlockingIOError:
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = Conn(sock)
        self.conns.append(conn)
        self.sel.register(sock, selectors.EVENT_READ, conn)

    def close(self, conn: Conn) -> None:
        if conn in self.conns:
            self.conns.remove(conn)
            self.sel.unregister(conn.sock)
            conn.sock.close()

    def flush(self, conn: Conn) -> None:
        if conn.out:
            try:
                sent = conn.sock.send(conn.out)
            except BlockingIOError:
                sent = 0
            del conn.out[:sent]
            conn.last_send = time.monotonic()
        want = bool(conn.out)
        if want != conn.writing:
            conn.writing = want
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if want else 0)
            self.sel.modify(conn.sock, events, conn)

    # -- input --------------------------------------------------------------------

    def read(self, conn: Conn) -> None:
        chunk = conn.sock.recv(1 << 18)
        if not chunk:
            raise OSError("peer closed")
        conn.inbuf += chunk
        if conn.name is None and not self.hello(conn):
            return
        self.messages(conn)
        for table_id, last in conn.last_get.items():  # one ack per table per read
            if conn.acked.get(table_id) != last:
                conn.acked[table_id] = last
                conn.out += b"\x0a\x84" + encode_varint(len(encode_varint(table_id)) + 4) \
                    + encode_varint(table_id) + BE32.pack(last)

    def hello(self, conn: Conn) -> bool:
        if conn.inbuf.count(b"\n") < 3:
            if len(conn.inbuf) > 1024:
                raise ProtocolError("no hello")
            return False
        lines = conn.inbuf.split(b"\n", 3)
        version, callee, caller = (bytes(line.rstrip(b"\r")) for line in lines[:3])
        status = b"200"
        if not version.startswith(b"HAProxyS ") or b" " not in caller:
            status = b"501"
        elif version[9:] not in (b"2.0", b"2.1"):
            status = b"502"
        elif callee != self.name:
            status = b"503"
        conn.sock.sendall(status + b"\n")
        if status != b"200":
            raise OSError(f"refused with {status.decode()}")
        conn.name = caller.split(b" ", 1)[0]
        conn.inbuf = bytearray(lines[3])
        return True

    def messages(self, conn: Conn) -> None:
        buf = conn.inbuf
        pos, end = 0, len(buf)
        now_ms = int(time.monotonic() * 1000)
        while end - pos >= 2:
            cls, typ = buf[pos], buf[pos + 1]
            if typ < 0x80:
                pos += 2
                if cls == 0 and typ == 0:
                    conn.out += b"\x00\x01"  # resync request: nothing to teach, finished
                elif cls == 0 and typ in (1, 2):
                    conn.out += b"\x00\x03"  # confirm a teach
                elif cls == 255:
                    raise ProtocolError("reserved class")
                continue
            got = decode_varint(buf, pos + 2)
            if got is None:
                break
            length, start = got
            if length > 1 << 20:
                raise ProtocolError("message too long")
            if start + length > end:
                break
            pos = start + length
            if cls != 10:
                continue
            if typ in (0x80, 0x81, 0x85, 0x86):
                self.update(conn, typ, buf, start, now_ms)
            elif typ == 0x82:
                self.define(conn, bytes(buf[start:pos]))
            elif typ == 0x83:
                conn.current = conn.tables.get(decode_varint(buf, start)[0])
        del buf[:pos]

    def define(self, conn: Conn, payload: bytes) -> None:
        layout = Layout(payload)
        known = self.layouts.setdefault(layout.name, layout)
        if known.shape() != layout.shape():
            layout.usable = False  # another peer declared this table differently: ignore this one
        conn.tables[layout.sender_id] = layout
        conn.current = layout
        conn.last_get.setdefault(layout.sender_id, 0)
        if layout.usable:
            self.out_ids.setdefault(layout.name, len(self.out_ids) + 1)
            self.store.setdefault(layout.name, {})

    def update(self, conn: Conn, typ: int, buf: bytearray, p: int, now_ms: int) -> None:
        layout = conn.current
        if layout is None:
            return  # no table selected: dropped, as HAProxy does
        if typ in (0x80, 0x85):
            uid = BE32.unpack_from(buf, p)[0]
            p += 4
        else:
            uid = (conn.last_get[layout.sender_id] + 1) & U32
        conn.last_get[layout.sender_id] = uid
        if typ in (0x85, 0x86):
            p += 4  # the expiry: ignored (no expiry here)
        if not layout.usable:
            return
        if layout.key_type == 6:
            n, p = decode_varint(buf, p)
        else:
            n = layout.key_len
        key = bytes(buf[p:p + n])
        p += n
        values = []
        for freq in layout.fields:
            if freq:
                age, p = decode_varint(buf, p)
                curr, p = decode_varint(buf, p)
                prev, p = decode_varint(buf, p)
                values.append((now_ms - age if age < 1 << 31 else None, curr, prev))  # huge age: untouched
            else:
                value, p = decode_varint(buf, p)
                values.append(value)
        self.store[layout.name].setdefault(key, {})[conn.name] = values
        self.changed[layout.name, key] = None

    # -- output -------------------------------------------------------------------

    def push_changes(self) -> None:
        if not self.changed:
            return
        by_table: dict[bytes, list[bytes]] = {}
        changed = self.changed
        taken = list(itertools.islice(changed, self.push_max))
        for name, key in taken:
            del changed[name, key]
            by_table.setdefault(name, []).append(key)
        now_ms = int(time.monotonic() * 1000)
        receivers = [c for c in self.conns if c.name is not None]
        for name, keys in by_table.items():
            layout = self.layouts[name]
            bodies = [self.encode_key(layout, key) + self.encode_sum(layout, self.store[name][key], now_ms)
                      for key in keys]
            tail = b"".join(b"\x0a\x81" + encode_varint(len(body)) + body for body in bodies[1:])
            definition = self.definition(name)
            for conn in receivers:
                if conn.out_current != name:
                    conn.out += definition
                    conn.out_current = name
                uid = (conn.pushed.get(name, 0) + 1) & U32 or 1
                conn.out += b"\x0a\x80" + encode_varint(len(bodies[0]) + 4) + BE32.pack(uid) + bodies[0] + tail
                conn.pushed[name] = (uid + len(bodies) - 1) & U32

    def definition(self, name: bytes) -> bytes:
        layout = self.layouts[name]
        out_name = name[: -len(b".local")] + b".aggr"
        body = (encode_varint(self.out_ids[name]) + encode_varint(len(out_name)) + out_name
                + encode_varint(layout.key_type) + encode_varint(layout.key_len) + encode_varint(layout.mask)
                + layout.tail)
        return b"\x0a\x82" + encode_varint(len(body)) + body

    @staticmethod
    def encode_key(layout: Layout, key: bytes) -> bytes:
        return encode_varint(len(key)) + key if layout.key_type == 6 else key

    @staticmethod
    def encode_sum(layout: Layout, contributions: dict, now_ms: int) -> bytes:
        out = bytearray()
        for i, (dtype, freq) in enumerate(zip(layout.types, layout.fields)):
            if freq:
                ticks = [v[i][0] for v in contributions.values() if v[i][0] is not None]
                curr = min(U32, sum(v[i][1] for v in contributions.values()))
                prev = min(U32, sum(v[i][2] for v in contributions.values()))
                age = max(0, now_ms - max(ticks)) if ticks else 0
                out += encode_varint(age) + encode_varint(curr) + encode_varint(prev)
            else:
                total = sum(v[i] for v in contributions.values())
                out += encode_varint(total if dtype in ULL_TYPES else min(U32, total))
        return bytes(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 contrib/naive_aggregator.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--listen", default="127.0.0.1:11100", help="ip:port of the peers listener")
    p.add_argument("--name", default="AGGR", help="our local peer name (line 2 of the hellos we accept)")
    p.add_argument("--push-interval", type=float, default=PUSH_INTERVAL * 1000, metavar="MS",
                   help="push changed keys at most this often (default %(default)s ms)")
    p.add_argument("--push-max", type=int, default=PUSH_MAX, metavar="KEYS",
                   help="keys pushed at most each time (default %(default)s)")
    args = p.parse_args(argv)
    try:
        NaiveAggregator(args.listen, args.name, args.push_interval / 1000, args.push_max).run()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
