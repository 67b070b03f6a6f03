#!/usr/bin/env python3
"""Demo: three real HAProxy nodes and the aggregator on loopback, with traffic.

An "attacker" spreads requests over the three nodes; each node alone sees a
third of them, and every node reads the cluster-wide sum in ``mytable.aggr``.
Run through ``bash contrib/demo.sh`` (which installs HAProxy and socat).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from harness import (  # noqa: E402  (the test harness's process helpers)
    HAPROXY26, Aggregator, HaproxyNode, TableSpec, aggregator_config, fresh_loopback, wait_for,
)

TABLE = TableSpec("mytable", "string len 32", "http_req_cnt,http_req_rate(10s)", "x-client", "req.hdr(x-client)")


def socat(path: Path, command: str) -> str:
    done = subprocess.run(["socat", "stdio", f"UNIX-CONNECT:{path}"], input=command + "\n",
                          capture_output=True, text=True, timeout=10, check=True)
    return done.stdout


def show(title: str, path: Path, command: str) -> None:
    print(f"\n$ echo '{command}' | socat stdio UNIX-CONNECT:{path}    # {title}")
    print(socat(path, command).rstrip())


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="stktagg-demo-"))
    address = fresh_loopback()
    nodes = [
        HaproxyNode(name, HAPROXY26, address, 18081 + i, 11001 + i, workdir, [TABLE], [("AGGR", address, 11100)])
        for i, name in enumerate(("A", "B", "C"))
    ]
    aggr = Aggregator(workdir, aggregator_config(workdir, address, 11100, nodes, section="demo"))
    print(f"Working directory: {workdir}  (configs and logs)")
    print(f"Aggregator configuration ({aggr.config_path}):\n{aggr.config}")
    try:
        aggr.start()
        for node in nodes:
            node.start()
        print(f"Started HAProxy nodes A, B, C and the aggregator on {address}")
        traffic = {"attacker": (20, 20, 20), "alice": (2, 0, 1), "bob": (0, 3, 0)}
        for client, counts in traffic.items():
            for node, count in zip(nodes, counts):
                for _ in range(count):
                    node.request({"x-client": client})
            print(f"  {client}: {' + '.join(f'{c} on {n.name}' for n, c in zip(nodes, counts))}")
        wait_for(lambda: all(n.table("mytable.aggr").get("attacker", {}).get("http_req_cnt") == "60" for n in nodes),
                 timeout=10, what="the sums to reach every node")
        show("node A's own counts", nodes[0].socket_path, "show table mytable.local")
        for node in nodes:
            show(f"node {node.name}: cluster-wide sums", node.socket_path, "show table mytable.aggr")
        show("aggregator: sections, tables, peers", aggr.socket_path, "show aggrs")
        show("aggregator: each key's sum and each node's part", aggr.socket_path, "show table demo mytable.aggr")
        print("\nEvery node sees attacker=60 in mytable.aggr, though each one counted 20 itself.")
        return 0
    finally:
        for node in nodes:
            node.stop()
        aggr.stop()


if __name__ == "__main__":
    raise SystemExit(main())
