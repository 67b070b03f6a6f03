#!/usr/bin/env python3
"""Run the benchmark matrix of the README and print it as a markdown table.

    python3 contrib/bench_matrix.py [--runs 3] [--duration 10] [--quick]

Each figure is the median of ``--runs`` runs of ``python3 contrib/bench.py``
(one fresh target per run, on its own loopback address). Rows: the targets of
issue 6 (4 peers, 100k keys, aggregator and HAProxy side by side), latency at
50,000 updates/s offered, rebuild after a restart, and the scaling rows
(1/4/16/64 peers at 100k keys; 10k/100k/1M keys at 4 peers).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "contrib" / "bench.py"


def bench(*args: str) -> dict:
    address = f"127.{random.randint(16, 250)}.{random.randint(1, 250)}.{random.randint(2, 250)}:11100"
    out = subprocess.run([sys.executable, str(BENCH), "--target", address, "--json", *args],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    return json.loads(out.stdout.splitlines()[0])


def median(reports: list[dict], *path: str):
    values = []
    for report in reports:
        value = report
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        if value is not None:
            values.append(value)
    return statistics.median(values) if values else None


def row(label: str, runs: int, *args: str) -> dict:
    reports = [bench(*args) for _ in range(runs)]
    return {
        "label": label,
        "acked": median(reports, "acked_per_s"),
        "pushed": median(reports, "pushed_back_per_s_per_session"),
        "p50": median(reports, "latency_ms", "p50"),
        "p99": median(reports, "latency_ms", "p99"),
        "cpu": median(reports, "target_cpu_cores"),
        "rss_key": median(reports, "rss_per_key_bytes"),
        "bottleneck": reports[-1]["bottleneck"],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--quick", action="store_true", help="one run each, 3 s, no 1M-key row")
    args = p.parse_args()
    runs, duration = (1, "3") if args.quick else (args.runs, str(args.duration))
    rows = [
        row("aggregator, 4 peers, 100k keys", runs, "--spawn", "stktagg", "--peers", "4", "--keys", "100000", "--duration", duration),
        row("HAProxy 2.6, 4 peers, 100k keys", runs, "--spawn", "haproxy", "--peers", "4", "--keys", "100000", "--duration", duration),
        row("aggregator, 50k/s offered (latency)", runs, "--spawn", "stktagg", "--peers", "4", "--keys", "100000",
            "--duration", duration, "--rate", "50000"),
    ]
    for peers in (1, 4, 16, 64):
        rows.append(row(f"aggregator, {peers} peers, 100k keys", 1, "--spawn", "stktagg", "--peers", str(peers),
                        "--keys", "100000", "--duration", duration, "--processes", "1"))
    for keys in (10_000, 100_000) + (() if args.quick else (1_000_000,)):
        rows.append(row(f"aggregator, 4 peers, {keys} keys", 1, "--spawn", "stktagg", "--peers", "4",
                        "--keys", str(keys), "--duration", duration if keys < 1_000_000 else "110"))
    rebuild = [bench("--rebuild", "--peers", "4", "--keys", "100000") for _ in range(runs)]
    print("| run | acked updates/s | pushed back /s per session | latency p50 / p99 ms | target CPU | RSS/key | bottleneck |")
    print("| --- | ---: | ---: | --- | ---: | ---: | --- |")
    for r in rows:
        print(f"| {r['label']} | {r['acked']} | {r['pushed']} | {r['p50']} / {r['p99']} | {r['cpu']} | {r['rss_key']} | {r['bottleneck']} |")
    print(f"\nrebuild of 100k keys from 4 peers after a restart: {median(rebuild, 'rebuild_s')} s (median of {runs})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
