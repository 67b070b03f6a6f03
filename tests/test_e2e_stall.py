"""Issue 14 with real HAProxy: a big table must not stop the aggregator from serving its peers.

Two real HAProxy nodes and a peer fed by the load generator's message helpers
(contrib/bench.py) share one aggregator. Once the peer has written 300,000
keys and both nodes hold their aggregates, the CLI dumps the aggregate table and then a second bench peer is
taught all of it. Meanwhile a probe runs every 0.3 s: a request on node A
with a new client address, and the time until node B's own ``show table``
shows that address's aggregate. Every probe must arrive within 1 s, and
neither node may reconnect (``new_conn`` in HAProxy's ``show peers``).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time

import pytest

from harness import ROOT, Aggregator, HaproxyNode, TableSpec, fresh_loopback, haproxy_binaries, unix_query, wait_for

sys.path.insert(0, str(ROOT / "contrib"))
from stallcheck import Background, BenchPeer  # noqa: E402  (a peer made of the load generator's message helpers)

pytestmark = pytest.mark.e2e
#: The table's size; ``STKTAGG_STALL_KEYS=1000000`` runs the same check at 1M keys (about 2 min).
KEYS = int(os.environ.get("STKTAGG_STALL_KEYS", "300000"))
PROBE_INTERVAL = 0.3
PROBE_DEADLINE = 1.0
TABLE = TableSpec("mytable", "ip", "http_req_cnt,http_req_rate(10s)", "x-ip", "req.hdr_ip(x-ip)", size="2m")


class Probes(Background):
    """Requests on node A with fresh client addresses; how long until node B's aggregate shows each."""

    def __init__(self, sender: HaproxyNode, receiver: HaproxyNode) -> None:
        super().__init__()
        self.sender, self.receiver = sender, receiver
        self.latencies: list[float] = []
        self.missed = 0
        self._serial = 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self._serial += 1
            address = f"10.250.{self._serial // 250}.{self._serial % 250 + 1}"
            started = time.monotonic()
            assert self.sender.request({"x-ip": address}) == 200
            deadline = started + 10 * PROBE_DEADLINE
            while time.monotonic() < deadline:
                shown = self.receiver.cli(f"show table mytable.aggr key {address}")
                if "http_req_cnt=1" in shown:
                    self.latencies.append(time.monotonic() - started)
                    break
                time.sleep(0.01)  # polling the receiver; the deadline decides
            else:
                self.missed += 1
            self._stop.wait(PROBE_INTERVAL)

    def summary(self) -> str:
        lat = sorted(self.latencies)
        if not lat:
            return f"no probe arrived ({self.missed} missed)"
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        return f"{len(lat)} probes, p50 {lat[len(lat) // 2] * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, " \
               f"max {lat[-1] * 1000:.0f} ms, {self.missed} missed"


def new_conn(node: HaproxyNode) -> int:
    return int(re.search(r"id=AGGR.*?new_conn=(\d+)", node.cli("show peers"), re.S).group(1))


def used(node: HaproxyNode) -> int:
    """Entries in the node's aggregate table, as HAProxy's ``show table`` header counts them."""
    match = re.search(r"table: mytable\.aggr,.*?used:(\d+)", node.cli("show table"))
    return int(match.group(1)) if match else 0


def entries(aggr: Aggregator) -> int:
    sections = json.loads(aggr.cli("show aggrs json"))
    return sum(t["entries"] for s in sections for t in s["tables"] if t["name"] == "mytable.aggr")


def dump(path, command: str) -> tuple[int, float]:
    """Read a whole CLI answer as a client reading as fast as it can: (lines, seconds)."""
    started = time.monotonic()
    text = unix_query(path, command, timeout=300)
    return text.count("\n"), time.monotonic() - started


@pytest.mark.skipif(not haproxy_binaries(), reason="no HAProxy installed")
def test_a_big_table_dumped_and_taught_does_not_stall_the_other_sessions(tmp_path):
    address = fresh_loopback()
    binary = haproxy_binaries()[-1][1]
    nodes = [HaproxyNode(name, binary, address, 18181 + i, 11201 + i, tmp_path, [TABLE], [("AGGR", address, 11300)])
             for i, name in enumerate(("A", "B"))]
    config = "\n".join([
        "global", f"    stats socket {tmp_path / 'aggr.sock'}", "aggregations agg",
        f"    peer AGGR {address}:11300 local", *[f"    peer {n.name} {address}:{n.peer_port}" for n in nodes],
        f"    peer FILL {address}:11298", f"    peer LEARN {address}:11299", "    from .local to .aggr",
    ]) + "\n"
    aggr = Aggregator(tmp_path, config)
    aggr.start()
    filler = learner = None
    try:
        for node in nodes:
            node.start()
        wait_for(lambda: all(new_conn(n) == 1 for n in nodes), what="both nodes connected")
        filler = BenchPeer(address, 11300, "FILL")
        filler.fill(KEYS)
        wait_for(lambda: entries(aggr) >= KEYS, timeout=120, what=f"{KEYS} keys applied")
        # The fill itself is an overload (every key new, pushed to every node): the check is
        # of the dump and the teach, so it starts once both nodes hold every key's aggregate.
        wait_for(lambda: all(used(n) >= KEYS for n in nodes), timeout=120, what="every aggregate pushed")
        with Probes(*nodes) as probes:
            lines, dump_s = dump(aggr.socket_path, "show table agg mytable.aggr")
            learner = BenchPeer(address, 11300, "LEARN")
            started = time.monotonic()
            learner.send(b"\x00\x00")  # a resync request: teach me everything
            wait_for(lambda: learner.teaches_finished >= 1, timeout=300, what="the teach of every key")
            teach_s = time.monotonic() - started
        reconnects = [new_conn(n) for n in nodes]
        print(f"\ndump: {lines} lines in {dump_s:.1f} s; teach: {learner.updates_in} updates in {teach_s:.1f} s; "
              f"probes: {probes.summary()}; nodes' new_conn: {reconnects}")
        assert lines >= KEYS  # every key dumped (plus its per-peer lines)
        assert learner.updates_in >= KEYS
        assert probes.latencies and probes.missed == 0, probes.summary()
        assert max(probes.latencies) < PROBE_DEADLINE, probes.summary()
        assert reconnects == [1, 1], "a node's session dropped and reconnected"
    finally:
        for peer in (filler, learner):
            if peer is not None:
                peer.close()
        for node in nodes:
            node.stop()
        aggr.stop()
