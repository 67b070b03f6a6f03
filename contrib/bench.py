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
"""

from __future__ import annotations

import argparse
import array
import json
import multiprocessing
import os
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
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


def explicit_template(keys: int, value: int) -> bytes:
    """Every key once as 0x80 updates whose ids are left to ``patch_ids``."""
    return b"".join(explicit(0, bulk_key(i), value) for i in range(keys))


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
    name: str
    sent: int = 0
    acked: int = 0
    pushed: int = 0
    latencies: list[float] = field(default_factory=list)
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


def _frame_walk(session: _Session, probes_sent: dict, latencies: list, out_control: list) -> None:
    """Parse whole frames from ``inbuf``: acks, pushes (observer), control messages."""
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
            if session.observer and probes_sent:
                _check_probe(buf, typ, start, probes_sent, latencies, now)
        pos = start + length
    del buf[:pos]


def _check_probe(buf, typ: int, start: int, probes: dict, latencies: list, now: float) -> None:
    p = start + (4 if typ in (0x80, 0x85) else 0) + (4 if typ in (0x85, 0x86) else 0)
    key = bytes(buf[p : p + 4])
    if key[:2] != PROBE_PREFIX:
        return
    got = decode_varint(buf, p + 4)
    if got is None:
        return
    value = got[0]
    sent_at = probes.pop((key, value), None)
    if sent_at is not None:
        latencies.append(now - sent_at)


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


def run_sessions(args: argparse.Namespace, names: list[str], first_index: int, results) -> None:
    """One benchmark process: its share of the sessions, in one selectors loop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    host, port = args.target.rsplit(":", 1)
    sel = selectors.DefaultSelector()
    sessions = []
    # Built before connecting (a million keys take seconds; a silent session
    # would be dropped): one pass per value, each session a rotation of it.
    explicit_ids = args.updates == "explicit"
    if explicit_ids:
        message_len = EXPLICIT_LEN
        bases = (explicit_template(args.keys, 1), explicit_template(args.keys, 2))
    else:
        message_len = len(incremental(bulk_key(0), 1))
        bases = (pass_buffer(args.keys, 0, 1), pass_buffer(args.keys, 0, 2))
    for i, name in enumerate(names):
        index = first_index + i
        sock = socket.create_connection((host.strip("[]"), int(port)), timeout=5)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rest = _handshake(sock, args.target_name, name)
        sock.setblocking(False)
        s = _Session(name, sock, observer=(index == 1 or args.peers == 1), prober=(index == 0))
        s.inbuf += rest
        offset = (index * args.keys) // max(1, args.peers)
        cut = offset * message_len
        if explicit_ids:
            s.explicit = True
            s.passes = tuple(bytearray(base[cut:] + base[:cut]) for base in bases)
            s.out.append(definition_message())
        else:
            s.passes = tuple(base[cut:] + base[:cut] for base in bases)
            s.out.append(definition_message() + explicit(1, bulk_key(offset), 1))
            s.pos = message_len  # the explicit update stood for the first key
            s.sent = 1
        sessions.append(s)
        sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, s)
    probes: dict = {}
    latencies: list = []
    probe_value = 0
    start = last = time.monotonic()
    end = start + args.duration
    next_probe = start + 0.5
    next_beat = start + 1.0
    per_session = args.rate / len(sessions) if args.rate else 0.0
    while True:
        now = time.monotonic()
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
        if now >= next_probe and sessions[0].prober:
            probe_value += 1
            key = PROBE_PREFIX + bytes((probe_value >> 8 & 0xFF, probe_value & 0xFF))
            probes[(key, probe_value)] = now
            _queue_update(sessions[0], key, probe_value)
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
                    raise ConnectionError(f"{s.name}: target closed the session")
                if chunk:
                    s.inbuf += chunk
                    controls: list = []
                    _frame_walk(s, probes, latencies, controls)
                    for typ in controls:  # answer a resync request; confirm a teach
                        s.out.append(b"\x00\x01" if typ == 0 else b"\x00\x03")
            if events & selectors.EVENT_WRITE:
                s.tokens -= _write(s, message_len, s.tokens if per_session else None)
    for s in sessions:
        results.put(asdict(SessionResult(s.name, s.sent, s.acked, s.pushed, latencies if s.observer else [])))
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
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_rss(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def spawn_target(kind: str, args: argparse.Namespace, workdir: str) -> subprocess.Popen:
    host, port = args.target.rsplit(":", 1)
    names = [f"bench{i}" for i in range(args.peers)]
    if kind == "stktagg":
        lines = ["global", f"    stats socket {workdir}/aggr.sock", "aggregations bench",
                 f"    peer {args.target_name} {args.target} local"]
        lines += [f"    peer {n} {host}:{20000 + i}" for i, n in enumerate(names)]
        lines.append("    from .local to .aggr")
        path = os.path.join(workdir, "aggr.cfg")
        open(path, "w").write("\n".join(lines) + "\n")
        entry = str(ROOT / "hapee_stktagg.py")
        argv = [sys.executable, entry, "-f", path, *(["-W", str(args.workers)] if args.workers is not None else [])]
    elif kind == "naive":  # the reference aggregator takes any peer name: no config
        argv = [sys.executable, str(ROOT / "contrib" / "naive_aggregator.py"),
                "--listen", args.target, "--name", args.target_name]
    else:
        lines = ["global", f"    localpeer {args.target_name}", "    nbthread 1",
                 f"    stats socket {workdir}/hap.sock", "backend mytable.local",
                 f"    stick-table type ip size {max(args.keys * 2, 1000)} expire 1h "
                 "store http_req_cnt,http_req_rate(10s) peers mypeers",
                 "peers mypeers", f"    peer {args.target_name} {args.target}"]
        lines += [f"    peer {n} {host}:{20000 + i}" for i, n in enumerate(names)]
        path = os.path.join(workdir, "hap.cfg")
        open(path, "w").write("\n".join(lines) + "\n")
        argv = [shutil.which("haproxy") or "/usr/sbin/haproxy", "-db", "-f", path]
    log = open(os.path.join(workdir, f"{kind}.log"), "wb")
    process = subprocess.Popen(argv, stdout=log, stderr=log)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            return process
        except OSError:
            time.sleep(0.05)  # polling for the listener; the deadline decides
    raise RuntimeError(f"{kind} did not start listening on {args.target}")


# -- report -------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def measure(args: argparse.Namespace) -> dict:
    target_pid = args.target_pid
    names = [f"bench{i}" for i in range(args.peers)]
    processes = max(1, min(args.processes, args.peers))
    shares = [names[i::processes] for i in range(processes)]
    results = multiprocessing.get_context("fork").Queue()
    cpu_before = _proc_cpu(target_pid) if target_pid else None
    own_before = os.times()
    started = time.monotonic()
    workers = []
    first = 0
    for share in shares:
        indexes = [names.index(n) for n in share]
        proc = multiprocessing.get_context("fork").Process(
            target=_run_share, args=(args, share, indexes, results))
        proc.start()
        workers.append(proc)
        first += len(share)
    collected = [results.get(timeout=args.duration + 60) for _ in names]
    for proc in workers:
        proc.join()
    elapsed = time.monotonic() - started
    own_after = os.times()
    bench_cpu = (own_after.children_user + own_after.children_system
                 - own_before.children_user - own_before.children_system)
    target_cpu = (_proc_cpu(target_pid) - cpu_before) / elapsed if target_pid else None
    sent = sum(r["sent"] for r in collected)
    acked = sum(r["acked"] for r in collected)
    pushed = [r["pushed"] for r in collected]
    latencies = [x for r in collected for x in r["latencies"]]
    bench_share = bench_cpu / elapsed / processes
    report = {
        "target": args.spawn or args.target, "updates": args.updates,
        "peers": args.peers, "keys": args.keys, "duration_s": round(elapsed, 2),
        "offered_rate": args.rate or None,
        "offered_per_s": round(sent / elapsed), "acked_per_s": round(acked / elapsed),
        "pushed_back_per_s_per_session": round(max(pushed) / elapsed) if pushed else 0,
        "latency_ms": {p: (round(v * 1000, 2) if v is not None else None)
                       for p, v in (("p50", percentile(latencies, 50)), ("p95", percentile(latencies, 95)),
                                    ("p99", percentile(latencies, 99)))},
        "probes": len(latencies),
        "target_cpu_cores": round(target_cpu, 2) if target_cpu is not None else None,
        "target_cpu_us_per_update": (round(target_cpu * elapsed / acked * 1e6, 2)
                                     if target_cpu is not None and acked else None),
        "target_rss_bytes": _proc_rss(target_pid) if target_pid else None,
        "bench_cpu_per_process": round(bench_share, 2), "bench_processes": processes,
        "errors": [r["error"] for r in collected if r["error"]],
    }
    report["rss_per_key_bytes"] = round(report["target_rss_bytes"] / args.keys) if target_pid else None
    report["bottleneck"] = _bottleneck(report)
    return report


def _run_share(args, share, indexes, results) -> None:
    # A freshly started HAProxy may drop a session in its first second (it is
    # still dialling its declared peers, reference §1.6): try again then.
    for attempt in range(3):
        started = time.monotonic()
        try:
            run_sessions(args, share, indexes[0], results)
            return
        except Exception as exc:  # report, never hang the parent
            if attempt < 2 and time.monotonic() - started < 1.5:
                continue
            for name in share:
                results.put(asdict(SessionResult(name, error=f"{type(exc).__name__}: {exc}")))
            return


def _bottleneck(report: dict) -> str:
    if report["offered_rate"] and report["acked_per_s"] >= 0.95 * report["offered_rate"]:
        return "none (the offered rate was taken)"
    if report["bench_cpu_per_process"] >= 0.9:
        return "benchmark (its processes were CPU-bound: the figures are a lower bound)"
    if report["target_cpu_cores"] is not None and report["target_cpu_cores"] >= 0.9:
        return "target (one core busy)"
    return "undetermined (neither side CPU-bound: socket buffers or scheduling)"


def render(report: dict) -> str:
    rows = [
        ("target", report["target"]), ("peers / keys", f"{report['peers']} / {report['keys']}"),
        ("offered updates/s", report["offered_per_s"]), ("acked updates/s", report["acked_per_s"]),
        ("pushed back /s per session", report["pushed_back_per_s_per_session"]),
        ("latency p50/p95/p99 ms", "/".join(str(report["latency_ms"][p]) for p in ("p50", "p95", "p99"))
         + f" ({report['probes']} probes)"),
        ("updates", report["updates"]),
        ("target CPU (cores)", report["target_cpu_cores"]),
        ("target CPU per update (us)", report["target_cpu_us_per_update"]),
        ("target RSS", report["target_rss_bytes"]), ("target RSS per key", report["rss_per_key_bytes"]),
        ("benchmark CPU per process", f"{report['bench_cpu_per_process']} x {report['bench_processes']}"),
        ("bottleneck", report["bottleneck"]),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def render_comparison(reports: list[dict]) -> str:
    """One row per target of ``--compare``."""
    def fmt(value, spec: str = ",") -> str:
        return "-" if value is None else format(value, spec)

    head = ("target", "acked/s", "pushed/s/session", "latency p50/p99 ms", "CPU us/update",
            "target CPU", "RSS MB", "bench CPU", "bottleneck")
    rows = [head]
    for r in reports:
        rss = r["target_rss_bytes"]
        rows.append((
            r["target"], fmt(r["acked_per_s"]), fmt(r["pushed_back_per_s_per_session"]),
            f"{fmt(r['latency_ms']['p50'])} / {fmt(r['latency_ms']['p99'])}",
            fmt(r["target_cpu_us_per_update"], ".2f"), fmt(r["target_cpu_cores"], ".2f"),
            fmt(rss / 1e6 if rss else None, ".0f"), f"{r['bench_cpu_per_process']} x {r['bench_processes']}",
            r["bottleneck"].split(" (")[0] + (" (errors)" if r["errors"] else ""),
        ))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) if i in (0, 8) else str(c).rjust(w)
                       for i, (c, w) in enumerate(zip(row, widths))).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    r = reports[0]
    return "\n".join([f"{r['peers']} peers, {r['keys']} keys, {r['updates']} ids, "
                      f"offered {'as fast as taken' if not r['offered_rate'] else r['offered_rate']}"] + lines)


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
        target.terminate()
        target.wait(10)


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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python3 contrib/bench.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--target", default="127.0.0.1:11100", help="ip:port of the target's peers listener")
    p.add_argument("--target-name", default="AGGR", help="the target's local peer name")
    p.add_argument("--target-pid", type=int, help="pid of the target, for its CPU and RSS")
    p.add_argument("--spawn", choices=SPAWNABLE, help="start the target with a generated config")
    p.add_argument("--compare", metavar="T1,T2,...",
                   help="run the same measurement against each of these spawned targets in turn (e.g. stktagg,naive)")
    p.add_argument("--updates", choices=("explicit", "implied"), default="explicit",
                   help="explicit: 0x80 updates, each with its id (default); implied: one 0x80 then 0x81 updates")
    p.add_argument("--workers", type=int, help="with --spawn stktagg: its worker threads (-W; 0: none, apply in the I/O thread)")
    p.add_argument("--peers", type=int, default=4)
    p.add_argument("--keys", type=int, default=100_000)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--rate", type=int, default=0, help="offered updates/s in total (0: as fast as taken)")
    p.add_argument("--probe-rate", type=float, default=20.0, help="latency probes per second")
    p.add_argument("--processes", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    p.add_argument("--json", action="store_true", help="print only the JSON line")
    p.add_argument("--rebuild", action="store_true",
                   help="measure how fast a freshly started aggregator rebuilds every key (implies --spawn stktagg)")
    args = p.parse_args(argv)
    if args.compare:
        args.compare = [t.strip() for t in args.compare.split(",") if t.strip()]
        unknown = [t for t in args.compare if t not in SPAWNABLE]
        if unknown or not args.compare:
            p.error(f"--compare: spawnable targets are {', '.join(SPAWNABLE)} (got {', '.join(unknown) or 'none'})")
        if args.spawn or args.rebuild:
            p.error("--compare spawns its targets itself: no --spawn or --rebuild with it")
    return args


def _measure_spawned(args: argparse.Namespace, workdir: str) -> dict:
    os.makedirs(workdir, exist_ok=True)
    target = spawn_target(args.spawn, args, workdir)
    args.target_pid = target.pid
    try:
        return measure(args)
    finally:
        target.terminate()
        target.wait(10)
        args.target_pid = None


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
        for kind in args.compare:
            args.spawn = kind
            reports.append(_measure_spawned(args, os.path.join(workdir, kind)))
            print(json.dumps(reports[-1]), flush=True)
        if not args.json:
            print(render_comparison(reports))
        return 0 if not any(r["errors"] for r in reports) else 1
    try:
        if args.spawn:
            target = spawn_target(args.spawn, args, workdir)
            args.target_pid = target.pid
        report = measure(args)
    finally:
        if target is not None:
            target.terminate()
            target.wait(10)
    print(json.dumps(report))
    if not args.json:
        print(render(report))
    return 0 if not report["errors"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
