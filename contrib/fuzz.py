#!/usr/bin/env python3
"""Fuzz campaign over the codec, the handshake, the session and the config parser.

    python3 contrib/fuzz.py --inputs 10000000 [--processes 2] [--seed 1]

Inputs are random bytes and mutations (bit flips, inserted/deleted/duplicated
runs, truncations, splices, interesting varint bytes) of real seeds: the
message streams recorded from HAProxy (tests/data/vectors), hellos, and the
valid configuration files of the test suite. For every input the target must
return normally or raise the typed error its contract allows:

- ``wire.MessageDecoder``: messages, "need more", or ``RemoteProtocolError``;
- ``session.PeerSession`` (accepting, before and after the handshake): never
  raises (protocol violations are ``Closed`` events);
- ``config.parse``: a ``Config`` or ``ConfigError``.

Any other exception is a finding: it is printed with the input (hex) and the
campaign exits 1. The report gives inputs per target, inputs per second, the
slowest single input (a hang would show here) and the RSS before and after
(unbounded memory would show here).

Without seeds for every target (no recorded traces, for instance: set
``STKTAGG_VECTORS`` to their folder) the campaign cannot run: it says so on
stderr and exits 2 at once, as it does when a campaign process dies without
reporting.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import queue
import random
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from stktagg.config import parse  # noqa: E402
from stktagg.errors import ConfigError, RemoteProtocolError  # noqa: E402
from stktagg.session import PeerSession, Role  # noqa: E402
from stktagg.wire import MessageDecoder  # noqa: E402

HELLO = b"HAProxyS 2.1\nAGGR\nA 4242 1\n"
INTERESTING = [b"\x00", b"\xff", b"\xf0", b"\x80", b"\xef", b"\x0a\x82", b"\x0a\x80\xff", b"\xff" * 10, b"\n"]
VALID_CONFIGS = ROOT / "tests/data/config/valid"
#: Exit code when the campaign cannot run (no seeds, a process lost); 1 is for findings.
EXIT_CANNOT_RUN = 2


def seeds() -> dict[str, list[bytes]]:
    from vectors import read_trace, trace_files

    streams = []
    for path in trace_files():
        per_direction: dict = {}
        for unit in read_trace(path):
            if not unit.is_handshake:
                per_direction.setdefault((unit.direction, unit.connection), bytearray()).extend(unit.data)
        streams += [bytes(s) for s in per_direction.values() if s]
    configs = [p.read_bytes() for p in sorted(VALID_CONFIGS.glob("*.cfg"))]
    hellos = [HELLO, b"HAProxyS 2.0\r\nAGGR\r\nB 1 1\r\n", b"HAProxyS 2.1\nAGGR\nAGGR 1 1\n"]
    return {"streams": streams, "configs": configs, "hellos": hellos}


def missing_seeds(pool: dict[str, list[bytes]]) -> list[str]:
    """Why a target has no seeds (one reason per empty list); empty when all have some."""
    import vectors

    reasons = []
    if not pool["streams"]:
        traces = vectors.trace_files()
        where = getattr(vectors, "VECTORS_DIR", "the vectors folder")
        if traces:
            reasons.append(f"the {len(traces)} recorded trace(s) in {where} hold no message streams")
        else:
            reasons.append(f"no recorded traces in {where} (*.hex; set STKTAGG_VECTORS to the folder that holds them)")
    if not pool["configs"]:
        reasons.append(f"no valid configuration files in {VALID_CONFIGS} (*.cfg)")
    if not pool["hellos"]:
        reasons.append("no hellos")
    return reasons


def mutate(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 3, 8))):
        op = rng.randrange(8)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8)))
        elif op == 2 and buf:
            del buf[pos : pos + rng.randrange(1, 16)]
        elif op == 3 and buf:
            chunk = buf[pos : pos + rng.randrange(1, 64)]
            buf[pos:pos] = chunk * rng.randrange(1, 4)
        elif op == 4:
            del buf[rng.randrange(len(buf) + 1) :]
        elif op == 5:
            other = rng.choice(pool)
            start = rng.randrange(len(other) + 1)
            buf[pos:pos] = other[start : start + rng.randrange(1, 256)]
        elif op == 6:
            buf[pos:pos] = rng.choice(INTERESTING)
        elif buf:
            i = rng.randrange(len(buf))
            buf[i] = rng.choice((0, 0xFF, 0xF0, 0xEF, 0x80, 0x7F, 0x0A))
    return bytes(buf[:20000])


def run_decoder(data: bytes) -> None:
    decoder = MessageDecoder()
    decoder.feed(data)
    try:
        while decoder.next_run() is not None or decoder.next_message() is not None:
            pass
    except RemoteProtocolError:
        pass


def run_session(data: bytes, rng: random.Random) -> None:
    session = PeerSession(Role.ACCEPTING, "AGGR", 0.0, is_declared=lambda name: name in ("A", "B"))
    pos = 0
    while pos < len(data):
        step = rng.randint(1, 64)
        session.receive_data(data[pos : pos + step], pos / 1000.0)
        pos += step
    session.poll(100.0)


def run_config(data: bytes) -> None:
    try:
        parse(data.decode("utf-8", "replace"), "fuzz.cfg")
    except ConfigError:
        pass


def campaign(count: int, seed: int, out, pool: dict[str, list[bytes]], worker: int = 0) -> None:
    rng = random.Random(seed)
    streams, configs, hellos = pool["streams"], pool["configs"], pool["hellos"]
    everything = streams + configs + hellos
    counts = {"decoder": 0, "session": 0, "config": 0}
    slowest = (0.0, "", b"")
    for i in range(count):
        kind = ("decoder", "session", "config")[i % 3]
        if kind == "config":
            data = mutate(rng, rng.choice(configs), everything) if rng.random() < 0.9 else rng.randbytes(rng.randrange(200))
        elif kind == "session":
            base = rng.choice(hellos) + rng.choice(streams) if rng.random() < 0.8 else rng.choice(hellos)
            data = mutate(rng, base, everything)
        else:
            data = mutate(rng, rng.choice(streams), everything) if rng.random() < 0.9 else rng.randbytes(rng.randrange(300))
        started = time.perf_counter()
        try:
            if kind == "decoder":
                run_decoder(data)
            elif kind == "session":
                run_session(data, rng)
            else:
                run_config(data)
        except Exception as exc:  # a finding: anything but the contract's typed errors
            out.put({"worker": worker, "finding": f"{kind}: {type(exc).__name__}: {exc}", "input": data.hex()})
            return
        elapsed = time.perf_counter() - started
        if elapsed > slowest[0]:
            slowest = (elapsed, kind, data[:64])
        counts[kind] += 1
    out.put({"worker": worker, "counts": counts, "slowest_s": slowest[0], "slowest_kind": slowest[1],
             "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss})


def collect(procs: list, out) -> list[dict] | None:
    """One result per campaign process; None (said on stderr) if one died without reporting."""
    results: dict[int, dict] = {}
    while len(results) < len(procs):
        try:
            result = out.get(timeout=1.0)
        except queue.Empty:
            lost = [i for i, proc in enumerate(procs) if i not in results and proc.exitcode is not None]
            if not lost:
                continue  # still running
            try:  # a result put just before the process exited may still be in the pipe
                result = out.get(timeout=1.0)
            except queue.Empty:
                codes = ", ".join(f"process {i} exit code {procs[i].exitcode}" for i in lost)
                print(f"fuzz.py: a campaign process died without reporting ({codes})", file=sys.stderr)
                for proc in procs:
                    if proc.exitcode is None:
                        proc.terminate()
                return None
        results[result["worker"]] = result
    return [results[i] for i in sorted(results)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--inputs", type=int, default=100_000)
    p.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    # The seeds, read once (the forked campaign processes share them); a target without
    # any would make every campaign process fail: stop here, at once, saying why.
    try:
        pool = seeds()
    except (OSError, ValueError) as exc:
        print(f"fuzz.py: cannot read the seed inputs: {exc}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    reasons = missing_seeds(pool)
    if reasons:
        print(f"fuzz.py: no seed inputs: {'; '.join(reasons)}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    share = args.inputs // args.processes
    started = time.monotonic()
    procs = [ctx.Process(target=campaign, args=(share, args.seed + i, out, pool, i)) for i in range(args.processes)]
    for proc in procs:
        proc.start()
    results = collect(procs, out)
    for proc in procs:
        proc.join()
    if results is None:
        return EXIT_CANNOT_RUN
    elapsed = time.monotonic() - started
    findings = [r for r in results if "finding" in r]
    totals = {k: sum(r["counts"][k] for r in results if "counts" in r) for k in ("decoder", "session", "config")}
    report = {
        "inputs": sum(totals.values()), "per_target": totals, "seconds": round(elapsed, 1),
        "inputs_per_s": round(sum(totals.values()) / elapsed), "findings": findings,
        "slowest_input_s": round(max((r.get("slowest_s", 0) for r in results), default=0), 4),
        "max_rss_kb_per_process": max((r.get("maxrss_kb", 0) for r in results), default=0),
    }
    print(json.dumps(report))
    return 1 if findings else 0


if __name__ == "__main__":
    raise SystemExit(main())
