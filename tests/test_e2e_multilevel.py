"""End-to-end: aggregator trees with a redundant top level, and several sections (issue 4).

Topology (the reference's "Redundancy" example)::

    hA.1  hA.2        hB.1  hB.2          HAProxy nodes: mytable.local, .aggr, .l2
       \\  /              \\  /
        A                  B              level 1: from any to .aggr, forward .l2,
        |\\________  ______/|                       up AGGR.1 and AGGR.2 in group 1
        |    ___ \\/ ___    |
        |   /    /\\    \\   |
      AGGR.1            AGGR.2            level 2: from .aggr to .l2, down A and B

Every node must see its region's sum in mytable.aggr and the global sum in
mytable.l2, as HAProxy itself reports it.
"""

from __future__ import annotations

import signal

import pytest

from harness import CONVERGE_TIMEOUT, Aggregator, HaproxyNode, TableSpec, fresh_loopback, need_haproxy, version_params, wait_for

pytestmark = pytest.mark.e2e
VERSIONS = version_params()
TABLE = TableSpec("mytable", "string len 32", "http_req_cnt,http_req_rate(10s)", "x-key", "req.hdr(x-key)",
                  aggr_suffixes=(".aggr", ".l2"))
L1_PORTS = {"A": 11100, "B": 11101}
L2_PORTS = {"AGGR.1": 11201, "AGGR.2": 11202}


def level1_config(workdir, address, name, nodes) -> str:
    lines = ["global", f"    stats socket {workdir / (name + '.sock')}", f"aggregations region_{name}"]
    lines += [f"    peer {l2} {address}:{port} up group 1" for l2, port in L2_PORTS.items()]
    lines.append(f"    peer {name} {address}:{L1_PORTS[name]} local")
    lines += [f"    peer {n.name} {address}:{n.peer_port}" for n in nodes]
    lines += ["    from any to .aggr", "    forward .l2"]
    return "\n".join(lines) + "\n"


def level2_config(workdir, address, name) -> str:
    lines = ["global", f"    stats socket {workdir / (name + '.sock')}", "aggregations top"]
    lines += [f"    peer {l1} {address}:{port} down" for l1, port in L1_PORTS.items()]
    lines.append(f"    peer {name} {address}:{L2_PORTS[name]} local")
    lines.append("    from .aggr to .l2")
    return "\n".join(lines) + "\n"


class Tree:
    def __init__(self, workdir, binary: str) -> None:
        address = self.address = fresh_loopback()
        self.nodes: dict[str, HaproxyNode] = {}
        self.level1: dict[str, Aggregator] = {}
        for r, region in enumerate(("A", "B")):
            regional = []
            for i in (1, 2):
                name = f"h{region}.{i}"
                index = 2 * r + i
                node = HaproxyNode(name, binary, address, 18080 + index, 11000 + index, workdir, [TABLE],
                                   [(region, address, L1_PORTS[region])])
                self.nodes[name] = node
                regional.append(node)
            self.level1[region] = Aggregator(workdir, level1_config(workdir, address, region, regional), name=region)
        self.level2 = {name: Aggregator(workdir, level2_config(workdir, address, name), name=name) for name in L2_PORTS}

    def start(self) -> "Tree":
        for aggr in (*self.level2.values(), *self.level1.values()):
            aggr.start()
        for node in self.nodes.values():
            node.start()
        return self

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()
        for aggr in (*self.level1.values(), *self.level2.values()):
            aggr.stop()

    def send(self, node: str, key: str, count: int) -> None:
        for _ in range(count):
            assert self.nodes[node].request({"x-key": key}) == 200

    def wait_sums(self, key: str, regional: dict[str, int], total: int, timeout: float = CONVERGE_TIMEOUT) -> None:
        def converged():
            for name, node in self.nodes.items():
                aggr = node.table("mytable.aggr").get(key, {}).get("http_req_cnt")
                l2 = node.table("mytable.l2").get(key, {}).get("http_req_cnt")
                if aggr != str(regional[name[1]]) or l2 != str(total):
                    return None
            return True

        wait_for(converged, timeout=timeout, what=f"{key}: regions {regional}, total {total} on every node")


@pytest.fixture(params=VERSIONS, ids=[v for v, _ in VERSIONS])
def tree(request, tmp_path):
    tree = Tree(tmp_path, need_haproxy(request.param)).start()
    yield tree
    tree.stop()


def test_every_node_sees_its_region_and_the_global_sum(tree):
    tree.send("hA.1", "alice", 1)
    tree.send("hA.2", "alice", 2)
    tree.send("hB.1", "alice", 3)
    tree.send("hB.2", "alice", 4)
    tree.wait_sums("alice", {"A": 3, "B": 7}, 10)
    # Level 1 shows the forwarded table; level 2 shows the sum of the regions.
    assert "table 'mytable.l2' forwarded" in tree.level1["A"].cli("show aggrs")
    top = tree.level2["AGGR.1"].cli("show table top mytable.l2")
    assert "key=alice http_req_cnt=10 " in top and "    A: http_req_cnt=3 " in top and "    B: http_req_cnt=7 " in top


def test_losing_one_top_member_needs_no_action_and_it_converges_back(tree):
    tree.send("hA.1", "bob", 2)
    tree.send("hB.2", "bob", 1)
    tree.wait_sums("bob", {"A": 2, "B": 1}, 3)
    tree.level2["AGGR.1"].stop(signal.SIGKILL)
    tree.send("hA.2", "bob", 5)
    tree.send("hB.1", "bob", 4)
    tree.wait_sums("bob", {"A": 7, "B": 5}, 12)
    tree.level2["AGGR.1"].start()
    wait_for(lambda: "key=bob http_req_cnt=12 " in tree.level2["AGGR.1"].cli("show table top mytable.l2"),
             timeout=CONVERGE_TIMEOUT, what="the restarted top member to rebuild the global sum")
    tree.send("hB.2", "bob", 1)
    tree.wait_sums("bob", {"A": 7, "B": 6}, 13)


def test_level1_ignores_forwarded_tables_from_down_peers_and_other_tables_from_up_peers(tree):
    # A node writing into its own copy of mytable.l2 must not reach the other nodes.
    tree.nodes["hA.1"].cli("set table mytable.l2 key mallory data.http_req_cnt 999")
    tree.send("hA.1", "carol", 1)
    wait_for(lambda: tree.nodes["hB.1"].table("mytable.l2").get("carol", {}).get("http_req_cnt") == "1",
             timeout=CONVERGE_TIMEOUT, what="carol to reach hB.1's global table")
    assert "mallory" not in tree.nodes["hA.2"].table("mytable.l2")
    assert "mallory" not in tree.nodes["hB.1"].table("mytable.l2")


@pytest.mark.parametrize("shared_port", [False, True], ids=["own-ports", "one-port"])
def test_two_sections_in_one_process_do_not_leak(tmp_path, shared_port):
    """Two sections with the same table name: each sums only its own nodes."""
    address = fresh_loopback()
    ports = {"AGG1": 11100, "AGG2": 11100 if shared_port else 11101}
    binary = need_haproxy(VERSIONS[0])
    nodes = {
        name: HaproxyNode(name, binary, address, 18080 + i, 11000 + i, tmp_path, [TABLE],
                          [(section, address, ports[section])])
        for i, (name, section) in enumerate([("X1", "AGG1"), ("X2", "AGG1"), ("Y1", "AGG2"), ("Y2", "AGG2")], 1)
    }
    lines = ["global", f"    stats socket {tmp_path / 'aggr.sock'}"]
    for section, members in (("AGG1", ("X1", "X2")), ("AGG2", ("Y1", "Y2"))):
        lines.append(f"aggregations s_{section}")
        lines.append(f"    peer {section} {address}:{ports[section]} local")
        lines += [f"    peer {m} {address}:{nodes[m].peer_port}" for m in members]
        lines.append("    from .local to .aggr")
    aggr = Aggregator(tmp_path, "\n".join(lines) + "\n")
    aggr.start()
    try:
        for node in nodes.values():
            node.start()
        for name, count in (("X1", 1), ("X2", 2), ("Y1", 10), ("Y2", 20)):
            for _ in range(count):
                assert nodes[name].request({"x-key": "k"}) == 200

        def sums():
            return {n: node.table("mytable.aggr").get("k", {}).get("http_req_cnt") for n, node in nodes.items()}

        wait_for(lambda: sums() == {"X1": "3", "X2": "3", "Y1": "30", "Y2": "30"}, timeout=CONVERGE_TIMEOUT,
                 what="each section's sum on its own nodes only")
        aggrs = aggr.cli("show aggrs")
        assert "aggregations s_AGG1" in aggrs and "aggregations s_AGG2" in aggrs
        first = aggr.cli("show table s_AGG1 mytable.aggr")
        assert "key=k http_req_cnt=3 " in first and "X1:" in first and "Y1:" not in first
    finally:
        for node in nodes.values():
            node.stop()
        aggr.stop()
