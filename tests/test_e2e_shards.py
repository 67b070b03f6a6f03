"""Issue 15 with real HAProxy: key shards served by one process per shard.

Two HAProxy 2.8+ nodes whose ``peers`` section has ``shards 2`` and the two
shard peers AGGR.1 and AGGR.2, and one aggregator whose section serves both
(``local shard 1`` and ``local shard 2``). HAProxy sends each key to one shard
peer only; each shard's process sums its keys and pushes them to both nodes.
Asserted on what HAProxy itself shows (``show table``): every key's sum on
every node; on the aggregator's one stats socket, one ``show table`` with every
key and each node's part; after SIGKILL of one shard's process, the
supervisor starts it again and new traffic is summed exactly again.
"""

from __future__ import annotations

import json
import os
import re
import signal

import pytest

from harness import Aggregator, HaproxyNode, TableSpec, fresh_loopback, need_haproxy, version_params, wait_for

pytestmark = pytest.mark.e2e
TABLE = TableSpec()
KEYS = [f"client-{i}" for i in range(40)]


#: The versions of the matrix that have shards (2.8 and later).
SHARDED = version_params("2.8")


def aggregator_rows(text: str) -> dict[str, dict]:
    """Our ``show table`` text -> {key: {"sum": {name: value}, "parts": {node: {name: value}}}}."""
    rows: dict[str, dict] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("key="):
            words = line.split()
            current = rows[words[0][4:]] = {"sum": dict(w.split("=", 1) for w in words[1:] if "=" in w), "parts": {}}
        elif current is not None and re.match(r"^\s+\S+: ", line):
            node, rest = line.strip().split(": ", 1)
            current["parts"][node] = dict(w.split("=", 1) for w in rest.split() if "=" in w)
    return rows


def counts(node: HaproxyNode) -> dict[str, int]:
    return {k: int(v.get("http_req_cnt", 0)) for k, v in node.table("mytable.aggr").items()}


def shard_pids(aggr: Aggregator) -> dict[str, int]:
    """Each shard's process id, from the main process's merged ``show info json``."""
    info = json.loads(aggr.cli("show info json"))
    return {label: data["pid"] for label, data in info.items() if isinstance(data, dict)}


def sharded_nodes(tmp_path, binary: str, address: str, shard_ports: dict[str, int], spec: TableSpec,
                  http_port: int, peer_port: int) -> list[HaproxyNode]:
    """Nodes A and B with ``shards 2``, the two shard peers of ``shard_ports`` (name -> port)."""
    aggregators = [(name, address, port) for name, port in shard_ports.items()]
    shards = {name: int(name[-1]) for name in shard_ports}
    return [HaproxyNode(name, binary, address, http_port + i, peer_port + i, tmp_path, [spec], aggregators,
                        shards=2, aggregator_shards=shards)
            for i, name in enumerate(("A", "B"))]


def sharded_section(section: str, address: str, shard_ports: dict[str, int], nodes: list[HaproxyNode]) -> list[str]:
    """An aggregations section serving both shards locally, with the nodes as peers."""
    return [f"aggregations {section}", "    shards 2",
            *[f"    peer {name} {address}:{port} local shard {name[-1]}" for name, port in shard_ports.items()],
            *[f"    peer {n.name} {address}:{n.peer_port}" for n in nodes]]


@pytest.mark.parametrize("version", SHARDED, ids=[v for v, _ in SHARDED])
def test_two_shards_are_summed_exactly_and_a_killed_shard_is_repaired(tmp_path, version):
    binary = need_haproxy(version)
    address = fresh_loopback()
    shard_ports = {"AGGR.1": 11501, "AGGR.2": 11502}
    nodes = sharded_nodes(tmp_path, binary, address, shard_ports, TABLE, 18281, 11511)
    config = "\n".join([
        "global", f"    stats socket {tmp_path / 'aggr.sock'}",
        *sharded_section("agg", address, shard_ports, nodes), "    from .local to .aggr",
    ]) + "\n"
    aggr = Aggregator(tmp_path, config)
    aggr.start()
    try:
        for node in nodes:
            node.start()
        wait_for(lambda: len(shard_pids(aggr)) == 2, timeout=30, what="both shard processes answering")
        expected = {}
        for i, key in enumerate(KEYS):
            for node, times in ((nodes[0], 1 + i % 3), (nodes[1], 2)):
                for _ in range(times):
                    assert node.request({"x-key": key}) == 200
            expected[key] = 1 + i % 3 + 2
        for node in nodes:
            wait_for(lambda node=node: counts(node) == expected, timeout=30, what=f"every sum on node {node.name}")

        rows = aggregator_rows(aggr.cli("show table agg mytable.aggr"))
        assert {k: int(r["sum"]["http_req_cnt"]) for k, r in rows.items()} == expected
        for i, key in enumerate(KEYS):
            parts = {n: int(v["http_req_cnt"]) for n, v in rows[key]["parts"].items()}
            assert parts == {"A": 1 + i % 3, "B": 2}
        aggrs = json.loads(aggr.cli("show aggrs json"))
        assert sorted(s["shard"] for s in aggrs) == ["agg/AGGR.1", "agg/AGGR.2"]
        held = {s["shard"]: sum(t["entries"] for t in s["tables"] if t["name"] == "mytable.aggr") for s in aggrs}
        assert sum(held.values()) == len(KEYS) and all(held.values()), held  # disjoint halves, none empty

        # Both shards got keys (HAProxy splits them), so killing one loses a real part.
        first = shard_pids(aggr)
        os.kill(first["agg/AGGR.2"], signal.SIGKILL)
        wait_for(lambda: shard_pids(aggr).get("agg/AGGR.2") not in (None, first["agg/AGGR.2"]), timeout=30,
                 what="shard 2's process started again")
        assert shard_pids(aggr)["agg/AGGR.1"] == first["agg/AGGR.1"]  # the other shard untouched
        for key in KEYS:
            assert nodes[1].request({"x-key": key}) == 200
            expected[key] += 1
        for node in nodes:
            wait_for(lambda node=node: counts(node) == expected, timeout=30,
                     what=f"every sum on node {node.name} after the restart")
        assert "shard agg/AGGR.2: process" in aggr.log_path.read_text()
    finally:
        for node in nodes:
            node.stop()
        aggr.stop()


@pytest.mark.parametrize("version", SHARDED, ids=[v for v, _ in SHARDED])
def test_a_sharded_regional_aggregator_sends_up_under_each_shards_name(tmp_path, version):
    """Multi-level with shards: each shard process dials the upper level as its own peer
    (R.1, R.2), so the upper level declares every shard as a down peer; what comes down
    (``forward .l2``) reaches the nodes from each shard."""
    binary = need_haproxy(version)
    address = fresh_loopback()
    shard_ports = {"R.1": 11521, "R.2": 11522}
    top_port = 11531
    nodes = sharded_nodes(tmp_path, binary, address, shard_ports, TableSpec(aggr_suffixes=(".aggr", ".l2")),
                          18291, 11541)
    region = "\n".join([
        "global", f"    stats socket {tmp_path / 'region.sock'}", *sharded_section("region", address, shard_ports, nodes),
        f"    peer TOP {address}:{top_port} up", "    from .local to .aggr", "    forward .l2",
    ]) + "\n"
    top = "\n".join([
        "global", f"    stats socket {tmp_path / 'top.sock'}", "aggregations top",
        *[f"    peer {name} {address}:{port} down" for name, port in shard_ports.items()],
        f"    peer TOP {address}:{top_port} local", "    from .aggr to .l2",
    ]) + "\n"
    upper, regional = Aggregator(tmp_path, top, name="top"), Aggregator(tmp_path, region, name="region")
    upper.start()
    regional.start()
    try:
        for node in nodes:
            node.start()
        wait_for(lambda: len(shard_pids(regional)) == 2, timeout=30, what="both shard processes answering")
        expected = {}
        for i, key in enumerate(KEYS[:20]):
            for node, times in ((nodes[0], 1 + i % 2), (nodes[1], 1)):
                for _ in range(times):
                    assert node.request({"x-key": key}) == 200
            expected[key] = 1 + i % 2 + 1

        def level2(node: HaproxyNode) -> dict[str, int]:
            return {k: int(v.get("http_req_cnt", 0)) for k, v in node.table("mytable.l2").items()}

        for node in nodes:
            wait_for(lambda node=node: counts(node) == expected, timeout=30, what=f"region sums on {node.name}")
            wait_for(lambda node=node: level2(node) == expected, timeout=30, what=f"top-level sums on {node.name}")
        peers = upper.cli("show aggrs")
        assert "R.1" in peers and "R.2" in peers, peers  # each shard is a peer of its own up there
    finally:
        for node in nodes:
            node.stop()
        regional.stop()
        upper.stop()
