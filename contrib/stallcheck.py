#!/usr/bin/env python3
"""Does a big table stall the aggregator? Measured from outside, as a peer would see it.

    python3 contrib/stallcheck.py                      # 1,000,000 keys, every operation
    python3 contrib/stallcheck.py --keys 300000 --ops dump,teach1
    python3 contrib/stallcheck.py --root /path/to/other/checkout    # the same against another tree

Starts the aggregator of a checkout (``--root``, default this one) on a private
loopback address, with bench peers made of the load generator's message
helpers (contrib/bench.py): FILL writes ``--keys`` ip keys; PROBE and WATCH are
the "other sessions": every 0.2 s PROBE updates a fresh key and WATCH times
until the aggregate of that key is pushed to it. A CLI ping (``help`` every
0.1 s) times how long the loop takes to answer. Then, one after the other:

- ``dump``: ``show table`` of the whole table, read as fast as possible;
- ``slowdump``: the same read at 256 kB/s for 10 s, then the client closes;
- ``teach1`` / ``teach4``: one / four new peers ask for a resync (``00 00``) and
  are taught every key (until their ``00 01``);
- ``expiry``: FILL sends every key again as a timed update whose expiry is
  chosen so that all of them expire within about a second of one another,
  about 30 s after the last one; once that refill has been pushed and has
  settled, the operation is the 10 s before the expiry moment and the 10 s
  after it.

Before each operation the aggregator is let settle: until WATCH has been sent
nothing for 2 s (a fill, and the end of its rates' periods 10 s later, push
every key again; this reader, one Python thread per peer, takes a million
pushes in a few seconds, and would time its own backlog instead).

For each operation it prints its duration, the other sessions' probe
latencies (p50, p99, max, and probes that never came back within 10 s), the
CLI ping's worst answer time, the aggregator's RSS growth, its loop turns
during the operation (from its metrics' ``hapee_stktagg_loop_turn_seconds``:
the bucket bound they all stayed within, how many took over 100 ms; and
``show info``'s longest turn of the last minute, which may include the
settling before), and whether a session dropped.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
import bench  # noqa: E402
from stktagg.codec import decode_varint  # noqa: E402

PORT = 11400
PROBE_INTERVAL = 0.2
PING_INTERVAL = 0.1
LOST_AFTER = 10.0
#: The refill's entries expire this long (s) after its last update.
EXPIRY_AFTER = 90.0


class BenchPeer:
    """A peer session of our own: writes bench updates, reads everything, answers the protocol.

    ``watch``: keys (4 bytes) whose pushed aggregate we wait for, -> the time it came.
    """

    def __init__(self, address: str, port: int, name: str, callee: str = "AGGR") -> None:
        self.name = name
        self.sock = socket.create_connection((address, port), timeout=30)
        self.sock.sendall(f"HAProxyS 2.1\n{callee}\n{name} 1 1\n".encode())
        status = b""
        while not status.endswith(b"\n"):
            byte = self.sock.recv(1)
            if not byte:
                raise ConnectionError(f"{name}: closed before the status")
            status += byte
        if status != b"200\n":
            raise ConnectionError(f"{name}: status {status!r}")
        self.sock.settimeout(None)
        self.updates_in = 0
        self.teaches_finished = 0
        self.closed = False
        self.watch: dict[bytes, float] = {}
        self.seen: dict[bytes, float] = {}
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._heartbeats, daemon=True).start()

    def send(self, data: bytes) -> None:
        with self._lock:
            self.sock.sendall(data)

    def _heartbeats(self) -> None:
        while not self.closed:
            time.sleep(1.0)  # the protocol's heartbeat timer, not synchronisation
            try:
                self.send(b"\x00\x04")
            except OSError:
                return

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = self.sock.recv(1 << 20)
            except OSError:
                chunk = b""
            if not chunk:
                self.closed = True
                return
            buf += chunk
            pos = 0
            while len(buf) - pos >= 2:
                cls, typ = buf[pos], buf[pos + 1]
                end = body = pos + 2
                if typ >= 0x80:
                    got = decode_varint(buf, pos + 2)
                    if got is None:
                        break
                    length, body = got
                    end = body + length
                    if end > len(buf):
                        break
                if cls == 10 and typ in (0x80, 0x81, 0x85, 0x86):
                    self.updates_in += 1
                    if self.watch:
                        skip = (4 if typ in (0x80, 0x85) else 0) + (4 if typ >= 0x85 else 0)
                        key = bytes(buf[body + skip: body + skip + 4])
                        if key in self.watch and key not in self.seen:
                            self.seen[key] = time.monotonic()
                elif cls == 0 and typ == 0:
                    self.send(b"\x00\x01")  # the aggregator's resync request: nothing to teach
                elif cls == 0 and typ in (1, 2):
                    self.teaches_finished += 1
                    self.send(b"\x00\x03")
                pos = end
            buf = buf[pos:]

    def fill(self, keys: int) -> None:
        """Every key 0..keys-1 once, value 1 (the table's own expiry)."""
        self.send(bench.definition_message() + bench.explicit(1, bench.bulk_key(0), 1) + bench.pass_buffer(keys, 1, 1))

    def close(self) -> None:
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass


def timed_pass(keys: int, first_id: int, expire_of) -> bytes:
    """Every key again as 0x85 updates with ``expire_of(index)`` ms left (explicit ids)."""
    import struct
    parts = []
    for i in range(keys):
        body = struct.pack("!II", first_id + i, max(1, int(expire_of(i)))) + bench.update_body(bench.bulk_key(i), 2)
        parts.append(b"\x0a\x85" + bench.encode_varint(len(body)) + body)
    return b"".join(parts)


class Background:
    """``_run`` (a loop until ``_stop`` is set) in a thread, from ``with`` entry to exit."""

    join_timeout = 30.0

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(self.join_timeout)

    def _run(self) -> None:
        raise NotImplementedError


class Probes(Background):
    """PROBE updates a fresh key every 0.2 s; WATCH times the pushed aggregate."""

    def __init__(self, probe: BenchPeer, watch: BenchPeer) -> None:
        super().__init__()
        self.probe, self.watch = probe, watch
        self.sent: dict[bytes, float] = {}
        self._serial = random.randrange(1 << 12)
        self._uid = 10

    def __enter__(self) -> "Probes":
        self.probe.send(bench.definition_message())
        return super().__enter__()

    def __exit__(self, *exc) -> None:
        super().__exit__(*exc)
        deadline = time.monotonic() + LOST_AFTER
        while time.monotonic() < deadline and len(self.watch.seen.keys() & self.sent.keys()) < len(self.sent):
            time.sleep(0.05)  # polling for the last probes; the deadline decides

    def _run(self) -> None:
        while not self._stop.is_set():
            self._serial = (self._serial + 1) & 0xFFFF
            key = bytes((10, 255, self._serial >> 8, self._serial & 0xFF))
            self.watch.watch[key] = 0.0
            self.watch.seen.pop(key, None)
            self._uid += 1
            self.sent[key] = time.monotonic()
            self.probe.send(bench.explicit(self._uid, key, 1))
            self._stop.wait(PROBE_INTERVAL)

    def figures(self) -> dict:
        latencies = sorted(self.watch.seen[k] - t for k, t in self.sent.items() if k in self.watch.seen)
        lost = sum(1 for k in self.sent if k not in self.watch.seen)
        if not latencies:
            return {"probes": 0, "lost": lost}
        return {"probes": len(latencies), "lost": lost, "p50_ms": round(latencies[len(latencies) // 2] * 1000),
                "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000),
                "max_ms": round(latencies[-1] * 1000)}


def cli(path: str, command: str, timeout: float = 600) -> str:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := sock.recv(1 << 20):
            chunks.append(chunk)
    return b"".join(chunks).decode()


class Pinger(Background):
    """``help`` on the CLI every 0.1 s: the worst answer time is the loop's worst stall, as seen outside."""

    join_timeout = 600.0  # a ping may wait for the whole of a stall

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path, self.worst = path, 0.0

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                cli(self.path, "help")
            except OSError:
                pass
            self.worst = max(self.worst, time.monotonic() - started)
            self._stop.wait(PING_INTERVAL)


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))


def entries(path: str) -> int:
    sections = json.loads(cli(path, "show aggrs json"))
    return sum(t["entries"] for s in sections for t in s["tables"] if t["name"] == "mytable.aggr")


def loop_figures(path: str) -> tuple[float | None, str | None]:
    """The loop's own longest turn over the last minute and what ran longest in it,
    where ``show info json`` has them."""
    try:
        info = json.loads(cli(path, "show info json"))
    except (OSError, ValueError):
        return None, None
    if not isinstance(info, dict):
        return None, None
    value = info.get("loop_longest_turn_ms_1m")
    return (value if isinstance(value, (int, float)) else None), info.get("loop_slowest_callback_1m")


def turn_histogram(address: str, port: int) -> dict[str, float]:
    """The loop's turn histogram since the start, from the metrics: ``le`` -> turns (and "count")."""
    with socket.create_connection((address, port), timeout=30) as sock:
        sock.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        text = b"".join(iter(lambda: sock.recv(1 << 16), b"")).decode()
    found = {}
    for line in text.splitlines():
        if line.startswith("hapee_stktagg_loop_turn_seconds_bucket{"):
            found[line.split('le="')[1].split('"')[0]] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("hapee_stktagg_loop_turn_seconds_count"):
            found["count"] = float(line.rsplit(" ", 1)[1])
    return found


def turns_over(before: dict[str, float], after: dict[str, float]) -> dict[str, int]:
    """Turns of the operation over 50 ms and over 100 ms, and the bound under which all its turns stayed."""
    turns = {le: after[le] - before.get(le, 0) for le in after}
    within = next((le for le in sorted((k for k in turns if k not in ("count", "+Inf")), key=float)
                   if turns[le] == turns["count"]), "+Inf")
    return {"turns": int(turns["count"]), "over_50ms": int(turns["count"] - turns.get("0.05", 0)),
            "over_100ms": int(turns["count"] - turns.get("0.1", 0)),
            "all_within_ms": within if within == "+Inf" else f"{float(within) * 1000:g}"}


def settle(watch: BenchPeer, quiet: float = 2.0, timeout: float = 180.0) -> float:
    """Wait until ``watch`` has been sent no update for ``quiet`` seconds; returns the time waited."""
    started = last_change = time.monotonic()
    seen = watch.updates_in
    while time.monotonic() - last_change < quiet:
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"the aggregator did not settle within {timeout:g} s")
        time.sleep(0.1)  # polling; the quiet spell decides
        if watch.updates_in != seen:
            seen, last_change = watch.updates_in, time.monotonic()
    return time.monotonic() - started


def wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)  # polling; the deadline decides


def slow_read(path: str, seconds: float, rate: int) -> int:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.connect(path)
        sock.sendall(b"show table agg mytable.aggr\n")
        got, started = 0, time.monotonic()
        while time.monotonic() - started < seconds:
            chunk = sock.recv(rate // 10)
            if not chunk:
                break
            got += len(chunk)
            time.sleep(0.1)  # reading slowly on purpose: this is the slow client
    return got


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--ops", default="dump,slowdump,teach1,teach4,expiry")
    parser.add_argument("--root", type=Path, default=HERE.parent, help="the checkout whose aggregator runs")
    parser.add_argument("--json", action="store_true", help="print only the JSON lines")
    args = parser.parse_args(argv)
    address = f"127.{random.randint(16, 250)}.{random.randint(1, 250)}.{random.randint(2, 250)}"
    work = Path(tempfile.mkdtemp(prefix="stallcheck-"))
    sock_path = str(work / "aggr.sock")
    learners = [f"LEARN{i}" for i in range(4)]
    config = "\n".join([
        "global", f"    stats socket {sock_path}", f"    prometheus {address}:{PORT + 20}", "aggregations agg", f"    peer AGGR {address}:{PORT} local",
        *[f"    peer {name} {address}:{PORT + 1 + i}" for i, name in enumerate(["FILL", "PROBE", "WATCH", *learners])],
        "    from .local to .aggr",
    ]) + "\n"
    (work / "aggr.cfg").write_text(config)
    log = open(work / "aggr.log", "wb")
    daemon = subprocess.Popen([sys.executable, str(args.root / "hapee_stktagg.py"), "-f", str(work / "aggr.cfg")],
                              stdout=log, stderr=log)
    results = []
    try:
        wait(lambda: os.path.exists(sock_path), 15, "the aggregator")
        fill, probe, watch = (BenchPeer(address, PORT, name) for name in ("FILL", "PROBE", "WATCH"))
        started = time.monotonic()
        fill.fill(args.keys)
        wait(lambda: entries(sock_path) >= args.keys, 600, f"{args.keys} keys")
        fill_s = time.monotonic() - started
        wait(lambda: watch.updates_in >= args.keys, 600, "the first push of every aggregate")
        print(f"# {args.keys} keys filled in {fill_s:.1f} s ({args.keys / fill_s:,.0f}/s); "
              f"aggregator RSS {rss(daemon.pid) / 1e6:.0f} MB; root {args.root}", flush=True)
        for op in args.ops.split(","):
            expiry_at = None
            if op == "expiry":
                # every key again, timed so that all expire together, EXPIRY_AFTER s after the last one
                rate = max(args.keys / fill_s, 1)
                total_ms = args.keys / rate * 1000 + EXPIRY_AFTER * 1000
                before = watch.updates_in
                fill.send(timed_pass(args.keys, 1 << 20, lambda i: total_ms - i / rate * 1000))
                expiry_at = time.monotonic() + total_ms / 1000
                wait(lambda: watch.updates_in >= before + args.keys, 600, "the refill's pushes")
            waited = settle(watch)
            print(f"# settled in {waited:.1f} s before {op}", flush=True)
            base_rss, peak = rss(daemon.pid), [0]
            histogram = turn_histogram(address, PORT + 20)
            stop = threading.Event()

            def sample() -> None:
                while not stop.is_set():
                    peak[0] = max(peak[0], rss(daemon.pid))
                    stop.wait(0.05)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            detail = ""
            with Pinger(sock_path) as pinger, Probes(probe, watch) as probes:
                started = time.monotonic()
                if op == "dump":
                    lines = cli(sock_path, "show table agg mytable.aggr").count("\n")
                    detail = f"{lines} lines"
                elif op == "slowdump":
                    detail = f"{slow_read(sock_path, 10, 256 * 1024)} bytes read"
                elif op in ("teach1", "teach4"):
                    taught = [BenchPeer(address, PORT, name) for name in learners[: 1 if op == "teach1" else 4]]
                    for peer in taught:
                        peer.send(b"\x00\x00")
                    wait(lambda: all(p.teaches_finished for p in taught), 900, "the teaches")
                    detail = ", ".join(f"{p.updates_in} updates" for p in taught)
                    for peer in taught:
                        peer.close()
                elif op == "expiry":
                    # expired entries may stay listed (as expired) until purged: the operation is
                    # the 10 s before the expiry moment and the 10 s after it, probes throughout
                    if expiry_at - time.monotonic() < 10:
                        raise RuntimeError("the refill took too long: the expiry came before the measurement")
                    time.sleep(expiry_at - time.monotonic() - 10)  # not synchronisation: the window starts then
                    started = time.monotonic()
                    wait(lambda: time.monotonic() > expiry_at + 10, 60, "the expiry")
                    shown = cli(sock_path, "show table agg mytable.aggr key 20.0.0.1")
                    detail = "all expired" if "expired" in shown else f"not expired: {shown.strip()[:80]}"
                duration = time.monotonic() - started
            stop.set()
            sampler.join()
            sessions_up = not any(p.closed for p in (fill, probe, watch))
            longest, slowest = loop_figures(sock_path)
            turns = turns_over(histogram, turn_histogram(address, PORT + 20))
            row = {"op": op, "keys": args.keys, "duration_s": round(duration, 1), **probes.figures(),
                   "cli_ping_worst_ms": round(pinger.worst * 1000), "loop_turns": turns, "longest_turn_1m_ms": longest, "slowest_1m": slowest,
                   "rss_growth_mb": round((peak[0] - base_rss) / 1e6), "sessions_up": sessions_up, "detail": detail}
            results.append(row)
            print(json.dumps(row), flush=True)
            if not sessions_up:
                print("# a session dropped; stopping", flush=True)
                break
    finally:
        daemon.terminate()
        try:
            daemon.wait(10)
        except subprocess.TimeoutExpired:
            daemon.kill()
        log.close()
    if not args.json:
        print("\n| operation | duration | other sessions p50 / p99 / max (lost) | CLI ping worst "
              "| loop turns: all within / over 100 ms | RSS + | sessions |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for r in results:
            lat = f"{r.get('p50_ms', '-')} / {r.get('p99_ms', '-')} / {r.get('max_ms', '-')} ms ({r['lost']})"
            turns = r["loop_turns"]
            print(f"| {r['op']} ({r['detail']}) | {r['duration_s']} s | {lat} | {r['cli_ping_worst_ms']} ms | "
                  f"{turns['all_within_ms']} ms / {turns['over_100ms']} of {turns['turns']} | {r['rss_growth_mb']} MB | "
                  f"{'up' if r['sessions_up'] else 'DROPPED'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
