#!/usr/bin/env python3
"""Soak test: a steady load on the aggregator, its RSS and open descriptors every 10 s.

    python3 contrib/soak.py --minutes 30 [--rate 50000] [--peers 4] [--keys 100000]

Starts the aggregator on a private loopback address, drives it with the
benchmark's peers (``contrib/bench.py``) at a fixed rate, and prints one line
every 10 s: elapsed time, RSS, open file descriptors, and the acked rate of
the last interval (from the aggregator's own counter). A final JSON line
gives the first and last samples and the growth, so "flat" is a number.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import bench  # noqa: E402  (contrib/bench.py, next to this file)


def sample(pid: int) -> tuple[int, int]:
    rss = 0
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=30)
    p.add_argument("--rate", type=int, default=50_000)
    p.add_argument("--peers", type=int, default=4)
    p.add_argument("--keys", type=int, default=100_000)
    p.add_argument("--interval", type=float, default=10.0)
    a = p.parse_args()
    address = f"127.{random.randint(16, 250)}.{random.randint(1, 250)}.{random.randint(2, 250)}:11100"
    args = bench.parse_args(["--target", address, "--peers", str(a.peers), "--keys", str(a.keys),
                             "--rate", str(a.rate), "--duration", str(a.minutes * 60), "--probe-rate", "5"])
    workdir = tempfile.mkdtemp(prefix="stktagg-soak-")
    target = bench.spawn_target("stktagg", args, workdir)
    args.target_pid = target.pid
    load = multiprocessing.get_context("fork").Process(target=_load, args=(args,))
    load.start()
    samples = []
    started = time.monotonic()
    applied_before = bench._applied_updates(os.path.join(workdir, "aggr.sock"))
    try:
        while load.is_alive():
            load.join(a.interval)
            if target.poll() is not None:
                print("aggregator exited!", flush=True)
                return 1
            rss, fds = sample(target.pid)
            applied = bench._applied_updates(os.path.join(workdir, "aggr.sock"))
            rate = (applied - applied_before) / a.interval
            applied_before = applied
            elapsed = time.monotonic() - started
            samples.append((round(elapsed), rss, fds, round(rate)))
            print(f"t={elapsed:7.0f}s rss={rss / 1e6:8.1f} MB fds={fds:4d} applied={rate:9.0f}/s", flush=True)
    finally:
        target.terminate()
        target.wait(10)
    steady = samples[len(samples) // 3 :] or samples  # after the first third: keys loaded, buffers grown
    summary = {
        "minutes": a.minutes, "rate": a.rate, "samples": len(samples),
        "rss_first_mb": round(steady[0][1] / 1e6, 1), "rss_last_mb": round(steady[-1][1] / 1e6, 1),
        "rss_max_mb": round(max(s[1] for s in steady) / 1e6, 1),
        "fds_min": min(s[2] for s in samples), "fds_max": max(s[2] for s in samples),
        "applied_per_s_median": sorted(s[3] for s in steady)[len(steady) // 2],
    }
    print(json.dumps(summary))
    return 0


def _load(args) -> None:
    report = bench.measure(args)
    print(json.dumps({"load": report}), flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
