#!/usr/bin/env python3
"""Peers load generator: ``python3 contrib/bench.py`` (see ``--help``).

Opens N peer sessions to a target as HAProxy nodes would (hello, resync
answer, table definition, acks, heartbeats), streams updates over K distinct
``ip`` keys as fast as the target takes them (or at ``--rate``), reads what
the target sends back, and reports one JSON line and a readable table:

- offered: updates/s written to the sockets;
- acked: updates/s the target acknowledged (its ingest rate);
- pushed back: aggregate updates/s received, per session;
- latency: from an update of a probe key on session 0 to the aggregate
  showing it on session 1 (p50/p95/p99), probes at a low rate during the load;
- target CPU (share of one core, and per acked update) and RSS; the
  benchmark's own CPU, and which side was the bottleneck.

``--spawn stktagg``, ``--spawn naive`` or ``--spawn haproxy`` starts the
target itself on loopback with a generated configuration (the same table for
all: ``type ip`` storing ``http_req_cnt,http_req_rate(10s)``), so one command
gives comparable figures for the aggregator, for the naive reference
aggregator (``contrib/naive_aggregator.py``: decode, sum, re-encode, push,
nothing more) and for HAProxy's own ingest. ``--compare stktagg,naive`` runs
the same measurement (same peers, keys, duration and stream) against each
target in turn and prints one row per target.

The stream (``--updates explicit``, the default) is made of 0x80 updates,
each with its own 4-byte update id, as recommended to talk to every HAProxy
version (peers-protocol.md §5.2). A pass over the keys is a pre-built
template; the ids are patched into it just before each write (an array of
ids spread over the messages with strided slice assignment, all in C), so
ids increase across passes and the ack's id is the session's number of
updates taken. ``--updates implied`` sends the older stream: one 0x80, then
0x81 updates with implied ids, a fixed byte string re-sent as is. Either way
the values alternate between passes so every pass changes every aggregate.
Sessions run in several processes (``--processes``) so that the benchmark is
not the bottleneck; when it is anyway, the report says so. Probe keys
(10.255.0.0/16) never collide with bulk keys (20.0.0.0/8).

``--warmup S``: the sessions stream for S seconds before the measured window
(``--duration``) starts, and every figure (sent, acked, pushed, latencies,
target and benchmark CPU) covers the window only: the fill of a fresh
aggregator (every key new) is left out. All processes share the parent's start
time: each session process takes its counters and CPU at start + S and reports
the differences, the parent samples the target's CPU then (and at the end).

``--shards N``: the target serves N key shards (``shards N``, peers
``AGGR.1 .. AGGR.N`` on consecutive ports from ``--target``'s, one process
each; ``--spawn stktagg`` generates that). Each bench node then has N
connections, one per shard under its own name, and sends each key to exactly
one shard (key index mod N: a fixed split, as HAProxy's hash of the key is);
its acks and pushes are summed over its connections. Probe key k goes to
shard k mod N, from node 0 to node 1's connection to that shard. The target's
CPU and RSS are summed over its process tree (``target_processes``). In
``--compare``, ``stktagg:2`` is the aggregator with 2 shards.

``--python CMD`` (default: this interpreter) starts ``--spawn stktagg`` and
``--spawn naive`` targets with that command prefix (split like a shell), e.g.
``--python pypy3``. In ``--compare``, ``stktagg@LABEL`` (``naive@LABEL``) uses
the prefix in the environment variable ``STKTAGG_BENCH_<LABEL>`` (else the
program ``LABEL`` on the PATH): ``--compare stktagg,stktagg@pypy3``.

``--dashboard``: every spawned stktagg target gets ``http <ip>:<free port>``
(the ``--target``'s IPv4 address, else 127.0.0.1) in its global section, and
during the measured window a thread of the parent uses its web dashboard as
an outsider would, every ``--dashboard-interval`` seconds, over plain HTTP
(``http.client``, a new connection per request, 60 s timeout): a page load
(``/``, ``/dashboard.js``, ``/dashboard.css``, ``/api/overview``, then
``/api/table`` of ``bench`` / ``mytable.aggr``, top 100), a sorted and
filtered ``/api/table`` and one ``/api/key``, each timed; answers other than
a 200 (with JSON where JSON is due) and timeouts count as failures. The report
gets ``dashboard_*`` figures, and with ``--spawn stktagg`` the loop's longest
turn too (as ``--compare`` always reports it), to hold against the 50 ms
budget.
"""

from __future__ import annotations

import argparse
import array
import http.client
import ipaddress
import json
import multiprocessing
import os
import re
import selectors
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run from a checkout: the stktagg package next to contrib/

from stktagg.codec import decode_varint, encode_varint  # noqa: E402

TABLE = b"mytable.local"
PERIOD = 10000
EXPIRE = 3_600_000
MASK = (1 << 9) | (1 << 10)  # http_req_cnt, http_req_rate
KEY_TYPE_IP = 4
PROBE_PREFIX = b"\x0a\xff"
#: Bytes written per send() call: big enough to amortise the system call.
SEND_CHUNK = 256 * 1024
#: ``--dashboard``: the generated config's section and aggregated table, the data column
#: (as ``show table`` names it: the table stores ``http_req_cnt,http_req_rate(10s)``) the
#: sorted call sorts on, and each request's timeout (seconds).
DASHBOARD_SECTION = "bench"
DASHBOARD_TABLE = "mytable.aggr"
DASHBOARD_SORT = "http_req_cnt"
DASHBOARD_TIMEOUT = 60.0


def definition_message(table_id: int = 1) -> bytes:
    body = (encode_varint(table_id) + encode_varint(len(TABLE)) + TABLE + encode_varint(KEY_TYPE_IP)
            + encode_varint(4) + encode_varint(MASK) + encode_varint(EXPIRE) + encode_varint(10) + encode_varint(PERIOD))
    return b"\x0a\x82" + encode_varint(len(body)) + body


def bulk_key(index: int) -> bytes:
    return bytes((20, (index >> 16) & 0xFF, (index >> 8) & 0xFF, index & 0xFF))


def update_body(key: bytes, value: int) -> bytes:
    return key + encode_varint(value) + b"\x00" + encode_varint(value) + b"\x00"


def incremental(key: bytes, value: int) -> bytes:
    body = update_body(key, value)
    return b"\x0a\x81" + encode_varint(len(body)) + body


def explicit(update_id: int, key: bytes, value: int) -> bytes:
    body = struct.pack("!I", update_id) + update_body(key, value)
    return b"\x0a\x80" + encode_varint(len(body)) + body


def pass_buffer(keys: int, offset: int, value: int) -> bytes:
    """Every key once, starting at ``offset`` (sessions start at different keys)."""
    return b"".join(incremental(bulk_key((offset + i) % keys), value) for i in range(keys))


#: Every bulk 0x80 message has this length (values 1 and 2 are one-byte varints) and its
#: be32 id at this offset (after class, type and the one-byte length).
EXPLICIT_LEN = len(explicit(0, bulk_key(0), 1))
EXPLICIT_ID_AT = 3


def explicit_template(keys: int, value: int, indexes=None) -> bytes:
    """Every key once (or the keys of ``indexes``) as 0x80 updates whose ids are left to ``patch_ids``."""
    return b"".join(explicit(0, bulk_key(i), value) for i in (range(keys) if indexes is None else indexes))


def implied_template(indexes, value: int) -> bytes:
    """The keys of ``indexes`` once each, as 0x81 updates (implied ids)."""
    return b"".join(incremental(bulk_key(i), value) for i in indexes)


def shard_of(index: int, shards: int) -> int:
    """The shard (0-based) that bulk key (or probe) ``index`` goes to: fixed per key."""
    return index % shards


def shard_keys(keys: int, shard: int, shards: int) -> range:
    """The bulk key indexes that go to ``shard`` (0-based) of ``shards``."""
    return range(shard, keys, shards)


def shard_peers(target: str, target_name: str, shards: int) -> list[tuple[str, int, str]]:
    """(host, port, peer name) of each shard of a target: ``AGGR.1 .. AGGR.N`` on consecutive
    ports from the target's; unsharded, the target itself under its own name."""
    host, port = target.rsplit(":", 1)
    if shards <= 1:
        return [(host, int(port), target_name)]
    return [(host, int(port) + i, f"{target_name}.{i + 1}") for i in range(shards)]


def patch_ids(buf: bytearray, start: int, count: int, first_id: int) -> None:
    """Write ids ``first_id``, ``first_id + 1``, ... into the ``count`` messages at ``start``.

    The ids are built as one big-endian array, and each of its 4 byte columns is
    assigned to the template with a strided slice: a few C calls per write,
    about 4 times cheaper than a ``struct.pack_into`` per message.
    """
    if count <= 0:
        return
    ids = array.array("I", range(first_id, first_id + count)) if first_id + count <= 1 << 32 else \
        array.array("I", ((first_id + i) & 0xFFFFFFFF for i in range(count)))
    if sys.byteorder == "little":
        ids.byteswap()
    raw = ids.tobytes()
    at = start + EXPLICIT_ID_AT
    stop = start + count * EXPLICIT_LEN
    for byte in range(4):
        buf[at + byte:stop:EXPLICIT_LEN] = raw[byte::4]


@dataclass
class SessionResult:
    """One connection's counts in the measured window (a node has one per shard)."""

    name: str
    shard: int = 0
    sent: int = 0
    acked: int = 0
    pushed: int = 0
    error: str = ""


@dataclass
class _Session:
    name: str
    sock: socket.socket
    observer: bool
    prober: bool
    inbuf: bytearray = field(default_factory=bytearray)
    out: list = field(default_factory=list)  #: pending bytes to write
    passes: tuple = ()
    pass_index: int = 0
    pos: int = 0
    sent: int = 0
    acked: int = 0
    pushed: int = 0
    tokens: float = 0.0  #: updates this session may still send (fixed-rate mode)
    explicit: bool = False  #: ids patched into the pass buffers before each write
    next_id: int = 1  #: explicit mode: the id of the next update written (ids = update ordinals)
    patched: int = 0  #: explicit mode: ids are right up to this offset of the current pass
    shard: int = 0  #: the target's shard this connection goes to (0-based)


def _frame_walk(session: _Session, probes_seen: dict | None, out_control: list) -> None:
    """Parse whole frames from ``inbuf``: acks, pushes, control messages; an observer's
    ``probes_seen`` gets the time each probe value first came back."""
    buf = session.inbuf
    pos, end = 0, len(buf)
    now = time.monotonic()
    while end - pos >= 2:
        cls, typ = buf[pos], buf[pos + 1]
        if typ < 0x80:
            if cls == 0 and typ in (0, 1, 2):
                out_control.append(typ)
            pos += 2
            continue
        got = decode_varint(buf, pos + 2)
        if got is None:
            break
        length, start = got
        if start + length > end:
            break
        if cls == 10 and typ == 0x84:
            _, p = decode_varint(buf, start)
            session.acked = struct.unpack_from("!I", buf, p)[0]
        elif cls == 10 and typ in (0x80, 0x85, 0x81, 0x86):
            session.pushed += 1
            if probes_seen is not None:
                _check_probe(buf, typ, start, probes_seen, now)
        pos = start + length
    del buf[:pos]


def _check_probe(buf, typ: int, start: int, seen: dict, now: float) -> None:
    p = start + (4 if typ in (0x80, 0x85) else 0) + (4 if typ in (0x85, 0x86) else 0)
    key = bytes(buf[p : p + 4])
    if key[:2] != PROBE_PREFIX:
        return
    got = decode_varint(buf, p + 4)
    if got is None:
        return
    seen.setdefault(got[0], now)  # probe values are unique: only node 0 writes probe keys


def _handshake(sock: socket.socket, target: str, name: str) -> bytes:
    sock.sendall(f"HAProxyS 2.1\n{target}\n{name} {os.getpid()} 1\n".encode())
    data = b""
    deadline = time.monotonic() + 5
    while b"\n" not in data:
        if time.monotonic() > deadline:
            raise TimeoutError("no status line")
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed during the handshake")
        data += chunk
    status, _, rest = data.partition(b"\n")
    if status != b"200":
        raise ConnectionError(f"target answered {status!r}")
    return rest


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def run_sessions(args: argparse.Namespace, names: list[str], indexes: list[int], results,
                 start: float | None = None) -> None:
    """One benchmark process: its share of the nodes (each one connection per shard), in one
    selectors loop, from the parent's ``start`` to start + warmup + duration; it reports one
    message: each connection's counts in the measured window, its CPU then, its probes."""
    entered, cpu_entered = time.monotonic(), _own_cpu()
    start = entered if start is None else start
    mark = start + getattr(args, "warmup", 0.0)
    end = mark + args.duration
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    shards = getattr(args, "shards", 1)
    peers = shard_peers(args.target, args.target_name, shards)
    sel = selectors.DefaultSelector()
    sessions = []
    # Built before connecting (a million keys take seconds; a silent session
    # would be dropped): one pass per value and shard, each session a rotation of it.
    explicit_ids = args.updates == "explicit"
    message_len = EXPLICIT_LEN if explicit_ids else len(incremental(bulk_key(0), 1))
    build = (lambda keys, value: explicit_template(0, value, keys)) if explicit_ids else implied_template
    bases = [tuple(build(shard_keys(args.keys, j, shards), value) for value in (1, 2)) for j in range(shards)]
    for name, index in zip(names, indexes):
        for j, (host, port, peer_name) in enumerate(peers):
            sock = socket.create_connection((host.strip("[]"), port), timeout=5)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if args.sndbuf:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, args.sndbuf)
            rest = _handshake(sock, peer_name, name)
            sock.setblocking(False)
            s = _Session(name, sock, observer=(index == 1 or args.peers == 1), prober=(index == 0), shard=j)
            s.inbuf += rest
            keys = shard_keys(args.keys, j, shards)
            offset = (index * len(keys)) // max(1, args.peers)
            cut = offset * message_len
            if explicit_ids:
                s.explicit = True
                s.passes = tuple(bytearray(base[cut:] + base[:cut]) for base in bases[j])
                s.out.append(definition_message())
            else:
                s.passes = tuple(base[cut:] + base[:cut] for base in bases[j])
                s.out.append(definition_message() + explicit(1, bulk_key(keys[offset]), 1))
                s.pos = message_len  # the explicit update stood for the first key
                s.sent = 1
            sessions.append(s)
            sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, s)
    probers = {s.shard: s for s in sessions if s.prober}  # node 0's connection to each shard
    probes_sent: dict = {}  # probe value -> when written (node 0)
    probes_seen: dict = {}  # probe value -> when its aggregate first came back (node 1)
    probe_value = 0
    now = last = time.monotonic()
    ready = now - start
    if mark <= entered:  # no warmup: as ever, ``duration`` of stream once this process is ready
        end = now + args.duration

    def counts() -> list:
        return [(s.sent, s.acked, s.pushed) for s in sessions]

    # Started after the mark (no warmup): everything counts, the setup's CPU too (as always).
    baseline = ([(0, 0, 0)] * len(sessions), cpu_entered) if mark <= entered else None
    next_probe = now + 0.5
    next_beat = now + 1.0
    # --rate is the total over every process: this one's connections get their share of it.
    per_session = args.rate / (args.peers * shards) if args.rate else 0.0
    while True:
        now = time.monotonic()
        if baseline is None and now >= mark:
            baseline = (counts(), _own_cpu())
        if now >= end:
            break
        if per_session:  # token bucket: at most 50 ms of burst
            for s in sessions:
                s.tokens = min(s.tokens + (now - last) * per_session, per_session * 0.05 + 1)
                # Ask for write readiness only with something to write: a socket
                # is nearly always writable, and select() would spin.
                wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if s.tokens >= 1 or s.out else 0)
                sel.modify(s.sock, wanted, s)
        last = now
        if now >= next_probe and probers:
            probe_value += 1
            key = PROBE_PREFIX + bytes((probe_value >> 8 & 0xFF, probe_value & 0xFF))
            probes_sent[probe_value] = now
            _queue_update(probers[shard_of(probe_value, shards)], key, probe_value)
            next_probe = now + 1.0 / args.probe_rate
        if now >= next_beat:
            for s in sessions:
                s.out.append(b"\x00\x04")
            next_beat = now + 1.0
        for key, events in sel.select(timeout=0.001 if per_session else 0.002):
            s = key.data
            if events & selectors.EVENT_READ:
                try:
                    chunk = s.sock.recv(1 << 20)
                except BlockingIOError:
                    chunk = None
                if chunk == b"":
                    raise ConnectionError(f"{s.name}: target closed the session (shard {s.shard + 1})")
                if chunk:
                    s.inbuf += chunk
                    controls: list = []
                    _frame_walk(s, probes_seen if s.observer else None, controls)
                    for typ in controls:  # answer a resync request; confirm a teach
                        s.out.append(b"\x00\x01" if typ == 0 else b"\x00\x03")
            if events & selectors.EVENT_WRITE:
                s.tokens -= _write(s, message_len, s.tokens if per_session else None)
    if baseline is None:  # no window at all (duration 0)
        baseline = (counts(), _own_cpu())
    before, cpu_before = baseline
    results.put({
        "sessions": [asdict(SessionResult(s.name, s.shard, s.sent - b[0], s.acked - b[1], s.pushed - b[2]))
                     for s, b in zip(sessions, before)],
        "cpu": _own_cpu() - cpu_before, "ready_s": ready,
        "probes_sent": probes_sent, "probes_seen": probes_seen,
    })
    for s in sessions:
        s.sock.close()


def _queue_update(s: _Session, key: bytes, value: int) -> None:
    """Queue one update (a probe) before the bulk stream, with the next id in explicit mode."""
    if s.explicit:  # it takes the next id: the pass's ids after it move on by one
        s.out.append(explicit(s.next_id, key, value))
        s.next_id += 1
        s.patched = s.pos
    else:
        s.out.append(incremental(key, value))
    s.sent += 1


def _write(s: _Session, message_len: int, budget: float | None) -> int:
    """Write queued control bytes, then up to ``budget`` bulk updates; returns the updates written."""
    while s.out:
        data = s.out[0]
        try:
            n = s.sock.send(data)
        except BlockingIOError:
            return 0
        if n < len(data):
            s.out[0] = data[n:]
            return 0
        s.out.pop(0)
    count = SEND_CHUNK // message_len if budget is None else int(budget)
    if count <= 0:
        return 0
    buf = s.passes[s.pass_index]
    stop = min(len(buf), s.pos + count * message_len)
    if s.explicit and s.patched < stop:  # ids = the session's update ordinals, from next_id on
        start = max(s.pos, s.patched)
        patch_ids(buf, start, (stop - start) // message_len, s.next_id + (start - s.pos) // message_len)
        s.patched = stop
    try:
        n = s.sock.send(memoryview(buf)[s.pos:stop])
    except BlockingIOError:
        return 0
    whole = n - n % message_len
    if whole != n:  # keep message boundaries: queue the rest of a cut message
        s.out.append(bytes(buf[s.pos + n : s.pos + whole + message_len]))
        whole += message_len
    s.pos += whole
    s.sent += whole // message_len
    s.next_id += whole // message_len
    if s.pos >= len(buf):
        s.pos = s.patched = 0
        s.pass_index ^= 1
    return whole // message_len


# -- targets ---------------------------------------------------------------------


def _proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (the shard processes of a sharded aggregator, the
    interpreter under a wrapper command): from ``/proc/<pid>/task/*/children`` when the
    kernel has them, else from every process's parent in ``/proc/*/stat``."""
    tree, todo = [pid], [pid]
    children_files = os.path.exists(f"/proc/{pid}/task/{pid}/children")
    parents: dict[int, list[int]] = {}
    if not children_files:
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue  # gone meanwhile
                parents.setdefault(ppid, []).append(int(entry))
    while todo:
        current = todo.pop()
        if children_files:
            kids = []
            try:
                for task in os.listdir(f"/proc/{current}/task"):
                    kids += [int(k) for k in Path(f"/proc/{current}/task/{task}/children").read_text().split()]
            except OSError:
                pass  # gone meanwhile
        else:
            kids = parents.get(current, [])
        for kid in kids:
            if kid not in tree:
                tree.append(kid)
                todo.append(kid)
    return tree


def tree_cpu_by_pid(pids: list[int]) -> dict[int, float]:
    """CPU seconds of each of these processes and of the children it has reaped (cutime,
    cstime), so a child that exited meanwhile still counts, once."""
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        cpu[pid] = sum(int(f) for f in fields[11:15]) / ticks
    return cpu


def tree_cpu(pids: list[int]) -> float:
    return sum(tree_cpu_by_pid(pids).values())


def tree_rss(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += _proc_rss(pid)
        except OSError:
            continue
    return total


def python_prefix(args: argparse.Namespace) -> list[str]:
    """The command prefix that starts a Python target: ``--python`` split like a shell, or this
    interpreter."""
    spec = getattr(args, "python", None)
    return shlex.split(spec) if spec else [sys.executable]


def stktagg_config(args: argparse.Namespace, workdir: str) -> str:
    """The aggregator's configuration: the bench nodes and the target peer, or with
    ``--shards N`` its N local shard peers ``AGGR.1 .. AGGR.N`` on consecutive ports."""
    host = args.target.rsplit(":", 1)[0]
    shards = getattr(args, "shards", 1)
    lines = ["global", f"    stats socket {workdir}/aggr.sock", "aggregations bench"]
    if shards > 1:
        lines.append(f"    shards {shards}")
        lines += [f"    peer {name} {h}:{port} local shard {i + 1}"
                  for i, (h, port, name) in enumerate(shard_peers(args.target, args.target_name, shards))]
    else:
        lines.append(f"    peer {args.target_name} {args.target} local")
    lines += [f"    peer bench{i} {host}:{20000 + i}" for i in range(args.peers)]
    lines.append("    from .local to .aggr")
    history = getattr(args, "history", None) or []
    if history:  # issue 18: the history file in the run's own directory
        lines.insert(2, f"    history-file {workdir}/history.db")
        lines += [f"    {line}" for line in history]
    if getattr(args, "dashboard", False):  # issue 19: the dashboard's listener
        lines.insert(2, f"    http {dashboard_address(args)}")
    return "\n".join(lines) + "\n"


def free_port(host: str) -> int:
    """A TCP port nobody listens on at ``host`` now (the kernel's pick; free until someone takes it)."""
    with socket.socket(socket.AF_INET) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def dashboard_address(args: argparse.Namespace) -> str:
    """``ip:port`` of the spawned aggregator's ``http`` listener, chosen once per run's options:
    the ``--target``'s IPv4 address (127.0.0.1 by default), else 127.0.0.1, and a free port."""
    if not getattr(args, "dashboard_address", None):
        host = args.target.rsplit(":", 1)[0].strip("[]")
        try:
            ipv4 = isinstance(ipaddress.ip_address(host), ipaddress.IPv4Address)
        except ValueError:
            ipv4 = False
        host = host if ipv4 else "127.0.0.1"
        args.dashboard_address = f"{host}:{free_port(host)}"
    return args.dashboard_address


def spawn_target(kind: str, args: argparse.Namespace, workdir: str) -> subprocess.Popen:
    """Start a target (in a process group of its own, see ``stop_target``) and wait until every
    shard listens."""
    host, port = args.target.rsplit(":", 1)
    names = [f"bench{i}" for i in range(args.peers)]
    if kind == "stktagg":
        path = os.path.join(workdir, "aggr.cfg")
        Path(path).write_text(stktagg_config(args, workdir))  # closed: PyPy flushes on GC only
        entry = str(ROOT / "hapee_stktagg.py")
        argv = [*python_prefix(args), entry, "-f", path,
                *(["-W", str(args.workers)] if args.workers is not None else [])]
    elif kind == "naive":  # the reference aggregator takes any peer name: no config
        argv = [*python_prefix(args), str(ROOT / "contrib" / "naive_aggregator.py"),
                "--listen", args.target, "--name", args.target_name]
    else:
        lines = ["global", f"    localpeer {args.target_name}", "    nbthread 1",
                 f"    stats socket {workdir}/hap.sock", "backend mytable.local",
                 f"    stick-table type ip size {max(args.keys * 2, 1000)} expire 1h "
                 "store http_req_cnt,http_req_rate(10s) peers mypeers",
                 "peers mypeers", f"    peer {args.target_name} {args.target}"]
        lines += [f"    peer {n} {host}:{20000 + i}" for i, n in enumerate(names)]
        path = os.path.join(workdir, "hap.cfg")
        Path(path).write_text("\n".join(lines) + "\n")
        argv = [shutil.which("haproxy") or "/usr/sbin/haproxy", "-db", "-f", path]
    log = open(os.path.join(workdir, f"{kind}.log"), "wb")
    process = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
    listeners = shard_peers(args.target, args.target_name, getattr(args, "shards", 1) if kind == "stktagg" else 1)
    if kind == "stktagg" and getattr(args, "dashboard", False):  # its listener too, to be used at once
        h, p = dashboard_address(args).rsplit(":", 1)
        listeners.append((h, int(p), "http"))
    deadline = time.monotonic() + 10 + 2 * len(listeners)
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            for h, p, _ in listeners:
                socket.create_connection((h.strip("[]"), p), timeout=1).close()
            return process
        except OSError:
            time.sleep(0.05)  # polling for the listeners; the deadline decides
    stop_target(process)
    raise RuntimeError(f"{kind} did not start listening on {args.target} (see {log.name})")


def stop_target(process: subprocess.Popen) -> None:
    """SIGTERM to the target and wait; then whatever is left of its process group (what a
    wrapper command such as a container runner or ``bash script`` would leave behind)."""
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.2)


# -- dashboard (issue 19) ---------------------------------------------------------------


def dashboard_requests(key: str, section: str = DASHBOARD_SECTION, table: str = DASHBOARD_TABLE) -> dict:
    """The paths of one round: the page load's five in order, the sorted and filtered table
    call, the one-key call."""
    def api(path: str, **query) -> str:
        return f"{path}?{urllib.parse.urlencode({'section': section, 'table': table, **query})}"

    return {
        "page": ["/", "/dashboard.js", "/dashboard.css", "/api/overview", api("/api/table", limit=100)],
        "sorted": api("/api/table", sort=DASHBOARD_SORT, order="asc", filter="1", limit=100),
        "key": api("/api/key", key=key),
    }


class DashboardProbe(threading.Thread):
    """Uses the web dashboard as a browser would, every ``interval`` seconds until ``stop()``:
    a page load, a sorted and filtered table, one key (see ``dashboard_requests``). Each
    request is timed from connect to the last byte of the answer; a failure is anything but
    a 200 of a whole answer (JSON for ``/api/*``), or a timeout. No new request starts once
    stopped, and a page load cut short by the stop is left out."""

    def __init__(self, address: str, interval: float, key: str, timeout: float = DASHBOARD_TIMEOUT,
                 first_after: float = 0.0) -> None:
        super().__init__(name="dashboard", daemon=True)
        host, port = address.rsplit(":", 1)
        self.host, self.port = host.strip("[]"), int(port)
        self.interval, self.timeout, self.first_after = interval, timeout, first_after
        self.requests = dashboard_requests(key)
        self._halt = threading.Event()
        self.page_ms: list[float] = []  #: whole page loads (all five answered)
        self.table_ms: list[float] = []  #: the page load's /api/table
        self.overview_ms: list[float] = []
        self.sorted_ms: list[float] = []
        self.key_ms: list[float] = []
        self.rounds = self.calls = self.failures = 0
        self.scanned = None  #: ``scanned`` of the last /api/table answer
        self.failure_kinds: dict[str, int] = {}

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        next_round = time.monotonic() + self.first_after
        while not self._halt.wait(max(0.0, next_round - time.monotonic())):
            self.one_round()
            next_round = max(next_round + self.interval, time.monotonic())

    def one_round(self) -> None:
        self.rounds += 1
        page_ok, started = True, time.perf_counter()
        for path in self.requests["page"]:
            if self._halt.is_set():
                return
            ms, body = self.get(path)
            page_ok = page_ok and body is not None
            if path.startswith("/api/overview") and body is not None:
                self.overview_ms.append(ms)
            elif path.startswith("/api/table") and body is not None:
                self.table_ms.append(ms)
        if page_ok:  # one after another, as the page's script does: the wall time of the five
            self.page_ms.append((time.perf_counter() - started) * 1000)
        for name, times in (("sorted", self.sorted_ms), ("key", self.key_ms)):
            if self._halt.is_set():
                return
            ms, body = self.get(self.requests[name])
            if body is not None:
                times.append(ms)

    def get(self, path: str):
        """One request on a connection of its own: (ms, the answer: JSON for /api/*) or (ms, None)."""
        self.calls += 1
        started = time.perf_counter()
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
            status = response.status
        except (OSError, http.client.HTTPException) as exc:  # timeouts are OSErrors
            return self._failed(started, path, type(exc).__name__)
        finally:
            conn.close()
        ms = (time.perf_counter() - started) * 1000
        if status != 200:
            return self._failed(started, path, f"HTTP {status}", ms)
        if path.startswith("/api/"):
            try:
                body = json.loads(body)
            except ValueError:
                return self._failed(started, path, "not JSON", ms)
            if path.startswith("/api/table"):
                if not isinstance(body, dict) or not isinstance(body.get("rows"), list):
                    return self._failed(started, path, "no rows", ms)
                self.scanned = body.get("scanned")
        return ms, body

    def _failed(self, started: float, path: str, why: str, ms: float | None = None):
        self.failures += 1
        kind = f"{path.split('?')[0]}: {why}"
        self.failure_kinds[kind] = self.failure_kinds.get(kind, 0) + 1
        return (time.perf_counter() - started) * 1000 if ms is None else ms, None

    def figures(self) -> dict:
        def ms(values: list[float], p: float | None = None):
            value = (max(values) if values else None) if p is None else percentile(values, p)
            return round(value, 1) if value is not None else None

        return {
            "dashboard_interval_s": self.interval, "dashboard_rounds": self.rounds,
            "dashboard_page_ms_p50": ms(self.page_ms, 50), "dashboard_page_ms_max": ms(self.page_ms),
            "dashboard_api_table_ms_p50": ms(self.table_ms, 50), "dashboard_api_table_ms_max": ms(self.table_ms),
            "dashboard_api_overview_ms_max": ms(self.overview_ms),
            "dashboard_api_sorted_ms_p50": ms(self.sorted_ms, 50), "dashboard_api_sorted_ms_max": ms(self.sorted_ms),
            "dashboard_api_key_ms_p50": ms(self.key_ms, 50), "dashboard_api_key_ms_max": ms(self.key_ms),
            "dashboard_calls": self.calls, "dashboard_failures": self.failures,
            "dashboard_scanned": self.scanned,
            "dashboard_failure_kinds": dict(sorted(self.failure_kinds.items())),
        }


def start_dashboard_probe(args: argparse.Namespace, first_after: float = 0.0) -> DashboardProbe | None:
    """With ``--dashboard``, against a spawned aggregator's listener: the probe, started (its
    first round ``first_after`` seconds from now). Its key is the first that node 0 sends."""
    address = getattr(args, "dashboard_address", None) if getattr(args, "dashboard", False) else None
    if not address:
        return None
    probe = DashboardProbe(address, args.dashboard_interval, socket.inet_ntoa(bulk_key(0)), first_after=first_after)
    probe.start()
    return probe


def render_dashboard(r: dict) -> str | None:
    """One line of a report's ``dashboard_*`` figures (None without them)."""
    if "dashboard_calls" not in r:
        return None

    def pair(name: str) -> str:
        return f"{_ms(r.get(name + '_p50'))}/{_ms(r.get(name + '_max'))}"

    failed = r["dashboard_failures"]
    kinds = r.get("dashboard_failure_kinds") or {}
    return (f"p50/max page {pair('dashboard_page_ms')} ms, api/table {pair('dashboard_api_table_ms')} ms"
            f" ({_ms(r.get('dashboard_scanned'))} keys scanned), sorted {pair('dashboard_api_sorted_ms')} ms,"
            f" api/key {pair('dashboard_api_key_ms')} ms;"
            f" {r['dashboard_calls']} calls in {r.get('dashboard_rounds', '?')} rounds, {failed} failed"
            + (f" ({'; '.join(f'{k} x{n}' for k, n in kinds.items())})" if failed else ""))


def _ms(value) -> str:
    return "-" if value is None else format(value, ",") if isinstance(value, int) else format(value, "g")


# -- report -------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def _sleep_until(moment: float) -> None:
    while (left := moment - time.monotonic()) > 0:
        time.sleep(min(left, 0.5))


def measure(args: argparse.Namespace) -> dict:
    target_pid = args.target_pid
    warmup = getattr(args, "warmup", 0.0)
    shards = getattr(args, "shards", 1)
    names = [f"bench{i}" for i in range(args.peers)]
    processes = max(1, min(args.processes, args.peers))
    shares = [list(range(i, args.peers, processes)) for i in range(processes)]
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    start = time.monotonic()  # shared by every process: with a warmup, the window is start + warmup .. + duration
    mark, stop = start + warmup, start + warmup + args.duration
    if not warmup:  # as ever: from before the sessions start
        cpu_before = tree_cpu_by_pid(process_tree(target_pid)) if target_pid else {}
    workers = []
    for share in shares:
        proc = context.Process(target=_run_share, args=(args, [names[i] for i in share], share, results, start))
        proc.start()
        workers.append(proc)
    dashboard = None  # a thread of this process: started after the forks, in the window only
    if warmup:  # the target's CPU from the mark to the stop, as every session process counts
        _sleep_until(mark)
        cpu_before = tree_cpu_by_pid(process_tree(target_pid)) if target_pid else {}
        begun = time.monotonic()
        dashboard = start_dashboard_probe(args)
        _sleep_until(stop)
    else:  # as ever: until every session process is done (each streamed ``duration`` once ready)
        begun = start
        # Not at once: the sessions are still connecting (and the table empty).
        dashboard = start_dashboard_probe(args, first_after=getattr(args, "dashboard_interval", 0.0))
        collected = [results.get(timeout=args.duration + 60) for _ in shares]
    if dashboard is not None:
        dashboard.stop()  # no new request; one under way ends (or times out) below
    tree = process_tree(target_pid) if target_pid else []
    cpu_after = tree_cpu_by_pid(tree)
    elapsed = time.monotonic() - begun
    rss = tree_rss(tree) if target_pid else None
    if warmup:
        collected = [results.get(timeout=60) for _ in shares]
    for proc in workers:
        proc.join()
    if dashboard is not None:
        dashboard.join(2 * DASHBOARD_TIMEOUT)
    sessions = [s for c in collected for s in c["sessions"]]
    bench_cpu = sum(c.get("cpu", 0.0) for c in collected)
    target_cpu = (sum(cpu_after.values()) - sum(cpu_before.values())) / elapsed if target_pid else None
    busiest = max((cpu - cpu_before.get(pid, 0.0) for pid, cpu in cpu_after.items()), default=None)
    sent = sum(s["sent"] for s in sessions)
    acked = sum(s["acked"] for s in sessions)
    pushed_by_node: dict[str, int] = {}
    for s in sessions:
        pushed_by_node[s["name"]] = pushed_by_node.get(s["name"], 0) + s["pushed"]
    pushed = list(pushed_by_node.values())
    probes_seen = {v: t for c in collected for v, t in c.get("probes_seen", {}).items()}
    probes_sent = [(v, t) for c in collected for v, t in c.get("probes_sent", {}).items() if t >= mark]
    latencies = [probes_seen[v] - t for v, t in probes_sent if v in probes_seen]  # probes written in the window
    bench_share = bench_cpu / elapsed / processes
    errors = sorted({s["error"] for s in sessions if s["error"]})
    report = {
        "target": getattr(args, "label", None) or args.spawn or args.target, "updates": args.updates,
        "peers": args.peers, "keys": args.keys, "duration_s": round(elapsed, 2),
        "warmup_s": warmup, "target_shards": shards, "connections": len(sessions),
        "offered_rate": args.rate or None, "sndbuf": args.sndbuf or None,
        "offered_per_s": round(sent / elapsed), "acked_per_s": round(acked / elapsed),
        "pushed_back_per_s_per_session": round(max(pushed) / elapsed) if pushed else 0,
        "latency_ms": {p: (round(v * 1000, 2) if v is not None else None)
                       for p, v in (("p50", percentile(latencies, 50)), ("p95", percentile(latencies, 95)),
                                    ("p99", percentile(latencies, 99)))},
        "probes": len(latencies), "probes_sent": len(probes_sent),
        "target_cpu_cores": round(target_cpu, 2) if target_cpu is not None else None,
        "target_cpu_us_per_update": (round(target_cpu * elapsed / acked * 1e6, 2)
                                     if target_cpu is not None and acked else None),
        "target_cpu_busiest_process_cores": round(busiest / elapsed, 2) if target_pid and busiest is not None else None,
        "target_rss_bytes": rss, "target_processes": len(tree) if target_pid else None,
        "bench_cpu_per_process": round(bench_share, 2), "bench_processes": processes,
        "sessions_ready_s": round(max((c.get("ready_s", 0.0) for c in collected), default=0.0), 2),
        "errors": errors,
    }
    if shards > 1:  # per shard: what every node sent it, and the most one node got back from it
        report["per_shard"] = [{
            "shard": j + 1,
            "acked_per_s": round(sum(s["acked"] for s in sessions if s["shard"] == j) / elapsed),
            "pushed_back_per_s_per_session": round(max((s["pushed"] for s in sessions if s["shard"] == j),
                                                       default=0) / elapsed),
        } for j in range(shards)]
    report["idle_connections"] = sum(1 for s in sessions if not s["acked"] and not s["error"])
    report["rss_per_key_bytes"] = round(report["target_rss_bytes"] / args.keys) if target_pid else None
    report["python"] = (shlex.join(python_prefix(args))
                        if target_pid and (args.spawn or "") in ("stktagg", "naive") else None)
    report["bottleneck"] = _bottleneck(report)
    if dashboard is not None:
        report.update(dashboard.figures())
    return report


def _run_share(args, share, indexes, results, start=None) -> None:
    # A freshly started HAProxy may drop a session in its first second (it is
    # still dialling its declared peers, reference §1.6): try again then.
    for attempt in range(3):
        started = time.monotonic()
        try:
            run_sessions(args, share, indexes, results, start)
            return
        except Exception as exc:  # report, never hang the parent
            if attempt < 2 and time.monotonic() - started < 1.5:
                continue
            results.put({"sessions": [asdict(SessionResult(name, error=f"{type(exc).__name__}: {exc}"))
                                      for name in share]})
            return


def _bottleneck(report: dict) -> str:
    if report["offered_rate"] and report["acked_per_s"] >= 0.95 * report["offered_rate"]:
        return "none (the offered rate was taken)"
    if report["bench_cpu_per_process"] >= 0.9:
        return "benchmark (its processes were CPU-bound: the figures are a lower bound)"
    busiest = report.get("target_cpu_busiest_process_cores", report["target_cpu_cores"])
    if busiest is not None and busiest >= 0.9:
        return "target (one core busy)" if (report.get("target_processes") or 1) == 1 else \
            "target (a process with one core busy)"
    return "undetermined (neither side CPU-bound: socket buffers or scheduling)"


def render(report: dict) -> str:
    rows = [
        ("target", report["target"]), ("peers / keys", f"{report['peers']} / {report['keys']}"),
        ("offered updates/s", report["offered_per_s"]), ("acked updates/s", report["acked_per_s"]),
        ("pushed back /s per session", report["pushed_back_per_s_per_session"]),
        ("latency p50/p95/p99 ms", "/".join(str(report["latency_ms"][p]) for p in ("p50", "p95", "p99"))
         + f" ({report['probes']} of {report.get('probes_sent', '?')} probes back)"),
        ("updates", report["updates"]),
        ("target CPU (cores)", report["target_cpu_cores"]),
        ("target processes / shards", f"{report['target_processes']} / {report['target_shards']}"),
        ("target CPU per update (us)", report["target_cpu_us_per_update"]),
        ("target RSS", report["target_rss_bytes"]), ("target RSS per key", report["rss_per_key_bytes"]),
        ("benchmark CPU per process", f"{report['bench_cpu_per_process']} x {report['bench_processes']}"),
        ("bottleneck", report["bottleneck"]),
    ]
    if report.get("warmup_s"):
        late = report.get("sessions_ready_s", 0) > report["warmup_s"]  # the window began before the stream
        rows.insert(1, ("measured", f"{report['duration_s']} s after a {report['warmup_s']:g} s warmup"
                        + (f" (but the sessions were ready only after {report['sessions_ready_s']} s)" if late else "")))
    if report.get("loop_longest_turn_ms_1m") is not None:  # --spawn stktagg
        rows.append(("loop longest turn (1 min) ms", report["loop_longest_turn_ms_1m"]))
    dashboard = render_dashboard(report)
    if dashboard:
        rows.append(("dashboard", dashboard))
    if report.get("errors"):
        rows.append(("errors", "; ".join(report["errors"])))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def render_comparison(reports: list[dict]) -> str:
    """One row per target of ``--compare``."""
    def fmt(value, spec: str = ",") -> str:
        return "-" if value is None else format(value, spec)

    head = ("target", "acked/s", "pushed/s/session", "latency p50/p99 ms", "CPU us/update",
            "target CPU", "procs", "RSS MB", "longest turn ms", "bench CPU", "bottleneck")
    rows = [head]
    for r in reports:
        rss = r["target_rss_bytes"]
        rows.append((
            r["target"], fmt(r["acked_per_s"]), fmt(r["pushed_back_per_s_per_session"]),
            f"{fmt(r['latency_ms']['p50'])} / {fmt(r['latency_ms']['p99'])}",
            fmt(r["target_cpu_us_per_update"], ".2f"), fmt(r["target_cpu_cores"], ".2f"),
            fmt(r.get("target_processes"), "d"), fmt(rss / 1e6 if rss else None, ".0f"),
            fmt(r.get("loop_longest_turn_ms_1m")), f"{r['bench_cpu_per_process']} x {r['bench_processes']}",
            r["bottleneck"].split(" (")[0] + (" (errors)" if r["errors"] else ""),
        ))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) if i in (0, len(head) - 1) else str(c).rjust(w)
                       for i, (c, w) in enumerate(zip(row, widths))).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    r = reports[0]
    window = format(round(sum(x["duration_s"] for x in reports) / len(reports), 1), "g")
    warmup = f", measured {window} s after a {r['warmup_s']:g} s warmup" if r.get("warmup_s") else ""
    for r in reports:  # issue 18: what each history line did, and the file
        history = r.get("history")
        if not history:
            continue
        lines.append(f"{r['target']}: history file {history['file_bytes'] / 1e6:.1f} MB, {history['samples_stored']:,}"
                     f" samples in {history['buckets_stored']} buckets, {fmt(history['bytes_per_key_per_bucket'])}"
                     " bytes per key per bucket")
        for line in history["lines"]:
            lines.append(f"  {line['line']}: resolution {fmt(line['resolution_ms'])} ms, sampled"
                         f" {fmt(line['buckets_sampled'])} buckets ({fmt(line['buckets_skipped'])} skipped),"
                         f" computed {fmt(line['computed'])} ({fmt(line['computed_skipped'])} skipped),"
                         f" last {fmt(line['last_keys'])} keys in {fmt(line['last_seconds'])} s")
    for r in reports:  # issue 19: the dashboard as an outsider saw it
        dashboard = render_dashboard(r)
        if dashboard:
            lines.append(f"{r['target']}: dashboard {dashboard}")
    return "\n".join([f"{r['peers']} peers, {r['keys']} keys, {r['updates']} ids, "
                      f"offered {'as fast as taken' if not r['offered_rate'] else r['offered_rate']}"
                      + warmup] + lines)


def measure_rebuild(args: argparse.Namespace, workdir: str) -> dict:
    """Time for a freshly started aggregator to rebuild every key from every peer.

    The sessions act as HAProxy nodes that survived the aggregator's restart:
    they connect at once and answer its resync request with their whole
    table. The clock starts when the aggregator process is started and stops
    when its ``show aggrs`` counts every peer's update of every key applied.
    (A real HAProxy redials a lost peer within 1 to 5 s, to add.)
    """
    names = [f"bench{i}" for i in range(args.peers)]
    teach = [pass_buffer(args.keys, 0, 1)] * len(names)
    started = time.monotonic()
    target = spawn_target("stktagg", args, workdir)
    try:
        host, port = args.target.rsplit(":", 1)
        socks = []
        for name in names:
            sock = socket.create_connection((host, int(port)), timeout=5)
            rest = _handshake(sock, args.target_name, name)
            socks.append([sock, bytearray(rest), False])
        expected = len(names) * args.keys
        deadline = time.monotonic() + 120
        applied = 0
        while time.monotonic() < deadline:
            for entry, body in zip(socks, teach):
                sock, buf, taught = entry
                sock.settimeout(0.01)
                try:
                    buf += sock.recv(1 << 20)
                except (socket.timeout, BlockingIOError):
                    pass
                if not taught and b"\x00\x00" in buf:  # its resync request
                    sock.settimeout(30)
                    sock.sendall(definition_message() + explicit(1, bulk_key(0), 1) + body[11:] + b"\x00\x01")
                    entry[2] = True
                del buf[:-2]
            applied = _applied_updates(os.path.join(workdir, "aggr.sock"))
            if applied >= expected:
                return {"rebuild_s": round(time.monotonic() - started, 2), "keys": args.keys, "peers": args.peers}
        return {"rebuild_s": None, "applied": applied, "expected": expected}
    finally:
        stop_target(target)


def _applied_updates(socket_path: str) -> int:
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(2)
            sock.connect(socket_path)
            sock.sendall(b"show aggrs\n")
            text = b""
            while chunk := sock.recv(65536):
                text += chunk
    except OSError:
        return 0
    total = 0
    for line in text.decode().splitlines():
        if line.strip().startswith("update: 0x"):
            total += int(line.split()[1], 16)
    return total


SPAWNABLE = ("stktagg", "naive", "haproxy")
#: The most key shards a section may have (stktagg's config: ``shards 1..64``).
MAX_SHARDS = 64


@dataclass(frozen=True)
class TargetSpec:
    """A target of ``--compare``: ``KIND[:SHARDS][@LABEL]``, e.g. ``stktagg:2@pypy``."""

    kind: str
    shards: int = 1
    label: str = ""  #: an interpreter label: ``STKTAGG_BENCH_<LABEL>``, else the program LABEL
    history: bool = False  #: ``stktagg+history``: with the ``--history`` lines (the others run without)

    def __str__(self) -> str:
        return (self.kind + ("+history" if self.history else "") + (f":{self.shards}" if self.shards > 1 else "")
                + (f"@{self.label}" if self.label else ""))


def parse_target(text: str) -> TargetSpec:
    """``stktagg``, ``stktagg:2``, ``naive@pypy``, ``stktagg:4@pypy3``; ValueError otherwise."""
    match = re.fullmatch(r"([a-z]+)(\+history)?(?::(\d+))?(?:@([\w.+-]+))?", text.strip())
    if not match or match[1] not in SPAWNABLE:
        raise ValueError(f"{text!r}: a target is {'|'.join(SPAWNABLE)}[+history][:SHARDS][@LABEL]")
    kind, history, shards, label = match[1], bool(match[2]), int(match[3] or 1), match[4] or ""
    if history and (kind != "stktagg" or shards > 1):
        raise ValueError(f"{text!r}: +history is for stktagg without shards")
    if not 1 <= shards <= MAX_SHARDS:
        raise ValueError(f"{text!r}: shards are 1 to {MAX_SHARDS}")
    if shards > 1 and kind != "stktagg":
        raise ValueError(f"{text!r}: only stktagg has shards")
    if label and kind == "haproxy":
        raise ValueError(f"{text!r}: an interpreter label is for stktagg or naive")
    return TargetSpec(kind, shards, label, history)


def interpreter_for(label: str, environ=os.environ) -> str:
    """The command prefix of an interpreter label: ``$STKTAGG_BENCH_<LABEL>`` (upper case,
    other characters as ``_``), else the program ``label`` on the PATH."""
    variable = "STKTAGG_BENCH_" + re.sub(r"\W", "_", label.upper())
    if environ.get(variable):
        return environ[variable]
    found = shutil.which(label)
    if found:
        return shlex.quote(found)
    raise ValueError(f"@{label}: set {variable} to its interpreter (a command prefix), or install {label}")


def target_args(args: argparse.Namespace, spec: TargetSpec, environ=os.environ) -> argparse.Namespace:
    """The options of one ``--compare`` run: ``args`` with that target, its shards, its interpreter."""
    one = argparse.Namespace(**vars(args))
    one.spawn, one.shards, one.label = spec.kind, spec.shards, str(spec)
    if any(t.history for t in args.compare):  # then only the +history targets get the lines
        one.history = args.history if spec.history else []
    if spec.label:
        one.python = interpreter_for(spec.label, environ)
    return one


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python3 contrib/bench.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--target", default="127.0.0.1:11100", help="ip:port of the target's peers listener")
    p.add_argument("--target-name", default="AGGR", help="the target's local peer name")
    p.add_argument("--target-pid", type=int, help="pid of the target, for its CPU and RSS (with its children)")
    p.add_argument("--spawn", choices=SPAWNABLE, help="start the target with a generated config")
    p.add_argument("--compare", metavar="T1,T2,...",
                   help="run the same measurement against each of these spawned targets in turn (e.g. "
                        "stktagg,naive; stktagg:2: with 2 shards; stktagg@pypy: under $STKTAGG_BENCH_PYPY)")
    p.add_argument("--shards", type=int, default=1,
                   help="the target's key shards: peers TARGET_NAME.1..N on consecutive ports from --target's "
                        "(with --spawn stktagg: generated so); each node connects to every shard")
    p.add_argument("--warmup", type=float, default=0.0, metavar="SECONDS",
                   help="stream this long before the measured --duration starts (default 0: measure from the start)")
    p.add_argument("--python", metavar="CMD",
                   help="interpreter (a command prefix, split like a shell) that starts --spawn stktagg|naive "
                        "(default: this one)")
    p.add_argument("--updates", choices=("explicit", "implied"), default="explicit",
                   help="explicit: 0x80 updates, each with its id (default); implied: one 0x80 then 0x81 updates")
    p.add_argument("--history", action="append", default=[], metavar="LINE",
                   help="with --spawn stktagg: a history line of its section (repeatable; adds a history-file); "
                        "in --compare, only stktagg+history targets get them")
    p.add_argument("--dashboard", action="store_true",
                   help="spawned stktagg targets (--spawn stktagg, or those of --compare) serve their web "
                        "dashboard (http <ip>:<free port>), and during the measured window a client loads its "
                        "page and calls its API every --dashboard-interval seconds: report its timings")
    p.add_argument("--dashboard-interval", type=float, default=5.0, metavar="SECONDS",
                   help="with --dashboard: seconds between the starts of two rounds (default 5)")
    p.add_argument("--workers", type=int, help="with --spawn stktagg: its worker threads (-W; 0: none, apply in the I/O thread)")
    p.add_argument("--peers", type=int, default=4)
    p.add_argument("--keys", type=int, default=100_000)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--rate", type=int, default=0, help="offered updates/s in total (0: as fast as taken)")
    p.add_argument("--probe-rate", type=float, default=20.0, help="latency probes per second")
    p.add_argument("--sndbuf", type=int, default=0, metavar="BYTES",
                   help="SO_SNDBUF of each session (0: the kernel's autotuning, up to tcp_wmem's maximum). "
                        "Under overload a probe waits behind what the session's send buffer holds: a node "
                        "that sends each key's latest state, as HAProxy does, holds little; this generator "
                        "streams a fixed pass, so bound it to measure the target rather than the buffer")
    p.add_argument("--processes", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    p.add_argument("--json", action="store_true", help="print only the JSON line")
    p.add_argument("--rebuild", action="store_true",
                   help="measure how fast a freshly started aggregator rebuilds every key (implies --spawn stktagg)")
    args = p.parse_args(argv)
    args.label = None
    if args.warmup < 0:
        p.error("--warmup: seconds, 0 or more")
    if not 1 <= args.shards <= MAX_SHARDS:
        p.error(f"--shards: 1 to {MAX_SHARDS}")
    if args.shards > args.keys:
        p.error("--shards: at most one shard per key (--keys)")
    if args.shards > 1 and (args.spawn in ("naive", "haproxy") or args.rebuild):
        p.error("--shards: only with --spawn stktagg (or a target of your own), not naive, haproxy or --rebuild")
    if args.dashboard_interval <= 0:
        p.error("--dashboard-interval: seconds, more than 0")
    if args.dashboard and (args.rebuild or not args.compare and args.spawn != "stktagg"):
        p.error("--dashboard: only with --spawn stktagg or --compare (its stktagg targets), not --rebuild")
    if args.compare:
        try:
            args.compare = [parse_target(t) for t in args.compare.split(",") if t.strip()]
        except ValueError as exc:
            p.error(f"--compare: {exc}")
        if not args.compare:
            p.error(f"--compare: spawnable targets are {', '.join(SPAWNABLE)} (got none)")
        if args.dashboard and not any(t.kind == "stktagg" for t in args.compare):
            p.error("--dashboard: --compare has no stktagg target")
        if args.spawn or args.rebuild:
            p.error("--compare spawns its targets itself: no --spawn or --rebuild with it")
        if args.shards > 1:
            p.error("--compare: spell a target's shards in it (stktagg:2), not with --shards")
        if max(t.shards for t in args.compare) > args.keys:
            p.error("--compare: at most one shard per key (--keys)")
        try:
            for t in args.compare:
                if t.label:
                    interpreter_for(t.label)
        except ValueError as exc:
            p.error(f"--compare: {exc}")
    elif args.spawn and args.shards > 1:
        args.label = f"{args.spawn}:{args.shards}"
    return args


def _measure_spawned(args: argparse.Namespace, workdir: str) -> dict:
    os.makedirs(workdir, exist_ok=True)
    target = spawn_target(args.spawn, args, workdir)
    args.target_pid = target.pid
    try:
        report = measure(args)
        if args.spawn == "stktagg" and getattr(args, "shards", 1) == 1:
            report.update(target_figures(args, workdir))
        return report
    finally:
        stop_target(target)
        args.target_pid = None


def cli_json(socket_path: str, command: str):
    """One JSON answer of the aggregator's CLI, or None."""
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(socket_path)
            sock.sendall(command.encode() + b"\n")
            text = b""
            while chunk := sock.recv(65536):
                text += chunk
        return json.loads(text)
    except (OSError, ValueError):
        return None


def target_figures(args: argparse.Namespace, workdir: str) -> dict:
    """What the spawned aggregator says of itself at the end of the window: its loop's longest
    turn over the last minute, and with ``--history``, each line's work and the file's size."""
    sock = os.path.join(workdir, "aggr.sock")
    info = cli_json(sock, "show info json") or {}
    figures: dict = {"loop_longest_turn_ms_1m": info.get("loop_longest_turn_ms_1m"),
                     "loop_slowest_callback_1m": info.get("loop_slowest_callback_1m")}
    history = getattr(args, "history", None) or []
    if not history:
        return figures
    lines = []
    for line in history:
        target = line.split()[3]  # history <.from> to <.to> ...
        data = cli_json(sock, f"show history bench mytable{target} json") or {}
        lines.append({"line": line, **{k: data.get(k) for k in (
            "resolution_ms", "retention_buckets", "buckets_sampled", "buckets_skipped", "samples",
            "computed", "computed_skipped", "last_keys", "last_seconds")}})
    path = os.path.join(workdir, "history.db")
    size = sum(os.path.getsize(path + end) for end in ("", "-wal") if os.path.exists(path + end))
    rows = buckets = 0
    try:
        import sqlite3
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        rows, buckets = db.execute("SELECT count(*), count(DISTINCT stream || ' ' || bucket) FROM samples").fetchone()
        db.close()
    except Exception as exc:  # reported, not fatal: the other figures stand
        figures["history_file_error"] = str(exc)
    figures["history"] = {
        "lines": lines, "file_bytes": size, "samples_stored": rows, "buckets_stored": buckets,
        "bytes_per_key_per_bucket": round(size / rows, 1) if rows else None,
    }
    return figures


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    target = None
    workdir = tempfile.mkdtemp(prefix="stktagg-bench-")
    if args.rebuild:
        report = measure_rebuild(args, workdir)
        print(json.dumps(report))
        return 0 if report.get("rebuild_s") is not None else 1
    if args.compare:  # the same stream against each target in turn, each started afresh
        reports = []
        for spec in args.compare:
            one = target_args(args, spec)
            reports.append(_measure_spawned(one, os.path.join(workdir, str(spec))))
            print(json.dumps(reports[-1]), flush=True)
        if not args.json:
            print(render_comparison(reports))
        return 0 if not any(r["errors"] for r in reports) else 1
    try:
        if args.spawn:
            target = spawn_target(args.spawn, args, workdir)
            args.target_pid = target.pid
        report = measure(args)
        if args.spawn == "stktagg" and args.shards == 1:  # the loop's longest turn (the 50 ms budget)
            report.update(target_figures(args, workdir))
    finally:
        if target is not None:
            stop_target(target)
    print(json.dumps(report))
    if not args.json:
        print(render(report))
    return 0 if not report["errors"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
