"""History (issue 18) with real HAProxy nodes: history tables as HAProxy shows them.

Nodes A and B count requests per key in ``mytable.local``; the aggregator sums them into
``mytable.aggr`` and keeps history lines of it, which the nodes declare as tables of their
own (``mytable.hmax`` ...). Every check reads what HAProxy itself shows (``show table``),
against what the test computes: from the sums it made, and from the samples the aggregator
stored (``show history ... key ... json``), never from the statistic the aggregator reports.
"""

from __future__ import annotations

import json
import signal
import time

import pytest

from harness import (CONVERGE_TIMEOUT, Aggregator, Cluster, HaproxyNode, TableSpec, aggregator_config, fresh_loopback,
                     need_haproxy, version_params, wait_for)

pytestmark = pytest.mark.e2e
VERSIONS = version_params()
PORT = 11200
#: window 2 s, offset 3 s (the issue's line); the others over 4 s, so that their samples differ;
#: .hday keeps a long window, to be served still after a restart.
HISTORY = (
    "history .aggr to .hmax stat max window 2s offset 3s",
    "history .aggr to .havg stat avg window 4s offset 3s",
    "history .aggr to .hmin stat min window 4s offset 3s",
    "history .aggr to .hp75 stat p75 window 4s offset 3s",
    "history .aggr to .hday stat max window 30s offset 1s",
)
SUFFIXES = (".aggr", ".hmax", ".havg", ".hmin", ".hp75", ".hday")
TABLE = TableSpec("mytable", "string len 32", "http_req_cnt,http_req_rate(10s)", aggr_suffixes=SUFFIXES)
#: The README's worked rule, on node A, keyed by the header instead of the source address: deny
#: a key whose cluster rate is at least 50 and over five times its history's (.hday here).
RULE = [
    "http-request set-var(txn.now) req.hdr(x-key),table_http_req_rate(mytable.aggr)",
    "http-request set-var(txn.yday) req.hdr(x-key),table_http_req_rate(mytable.hday),mul(5)",
    "http-request set-var(txn.excess) var(txn.now),sub(txn.yday)",
    "http-request deny deny_status 429 if { var(txn.now) -m int ge 50 } { var(txn.excess) -m int gt 0 }",
]


class Bed(Cluster):
    def __init__(self, tmp_path, binary: str) -> None:
        self.tmp_path = tmp_path
        address = fresh_loopback()
        self.nodes = {name: HaproxyNode(name, binary, address, 18181 + i, 11201 + i, tmp_path, [TABLE],
                                        [("AGGR", address, PORT)], extra_frontend=RULE if name == "A" else [])
                      for i, name in enumerate("AB")}
        text = aggregator_config(tmp_path, address, PORT, list(self.nodes.values()))
        text = text.replace("global\n", f"global\n    history-file {tmp_path / 'history.db'}\n", 1)
        self.config = text + "".join(f"    {line}\n" for line in HISTORY)
        self.aggr = Aggregator(tmp_path, self.config)

    def hit(self, node: str, key: str, count: int) -> None:
        for _ in range(count):
            assert self.nodes[node].request({"x-key": key}) == 200

    def on(self, node: str, suffix: str, key: str, column: str = "http_req_cnt") -> int | None:
        value = self.nodes[node].table("mytable" + suffix).get(key, {}).get(column)
        return None if value is None else int(value)

    def everywhere(self, suffix: str, key: str) -> set:
        return {self.on(n, suffix, key) for n in self.nodes}

    def samples(self, suffix: str, key: str) -> list[int]:
        """The counts the aggregator stored for the statistics served now (``in_window``)."""
        data = json.loads(self.aggr.cli(f"show history agg mytable{suffix} key {key} json"))
        return [b["values"]["http_req_cnt"] for b in data["buckets"] if b["in_window"]]



@pytest.fixture(params=VERSIONS, ids=[v for v, _ in VERSIONS])
def haproxy(request):
    return need_haproxy(request.param)


def nearest_rank(samples: list[int], rank: int) -> int:
    ordered = sorted(samples)
    return ordered[max(1, -(-rank * len(ordered) // 100)) - 1]


def test_history_tables_on_real_nodes_and_after_a_restart(tmp_path, haproxy):
    with Bed(tmp_path, haproxy) as bed:
        wait_for(lambda: all(n.table("mytable.aggr") == {} for n in bed.nodes.values()), what="nodes up")
        # 1. The sum shows in .hmax only once the offset (3 s) has passed since it was made.
        first = time.time()
        bed.hit("A", "alice", 2)
        bed.hit("B", "alice", 3)
        wait_for(lambda: bed.everywhere(".aggr", "alice") == {5}, timeout=CONVERGE_TIMEOUT, what="the sum 5")
        while bed.everywhere(".hmax", "alice") != {5}:
            assert bed.everywhere(".hmax", "alice") <= {None, 5}
            assert time.time() < first + CONVERGE_TIMEOUT, "the sum never reached .hmax"
            time.sleep(0.05)  # polling interval; the clock checks below decide
        assert time.time() > first + 3.0, "the history showed the sum before the offset had passed"

        # 2. ...then follows it: a new sum shows there no sooner than 3 s after it was made.
        second = time.time()
        bed.hit("A", "alice", 4)
        while bed.everywhere(".hmax", "alice") != {9}:
            seen = bed.everywhere(".hmax", "alice")
            assert seen <= {5, 9}, seen
            assert time.time() < second + CONVERGE_TIMEOUT, "the new sum never reached .hmax"
            time.sleep(0.05)
        assert time.time() > second + 3.0

        # 3. avg, min, p75 over 4 s: sums that grow second after second, so that the window
        # holds different samples; HAProxy's values are checked against the test's own
        # statistics of the samples stored, read between two readings of the nodes that agree.
        def consistent():
            before = {s: bed.everywhere(s, "bob") for s in (".havg", ".hmin", ".hp75")}
            samples = bed.samples(".havg", "bob")
            after = {s: bed.everywhere(s, "bob") for s in (".havg", ".hmin", ".hp75")}
            if before != after or len(set(samples)) < 3:
                return None
            expected = {".havg": (2 * sum(samples) + len(samples)) // (2 * len(samples)),
                        ".hmin": min(samples), ".hp75": nearest_rank(samples, 75)}
            return all(after[s] == {v} for s, v in expected.items()) and (samples, after)

        found = None
        deadline = time.time() + CONVERGE_TIMEOUT
        turn = 0
        while found is None and time.time() < deadline:
            bed.hit("AB"[turn % 2], "bob", 1)
            turn += 1
            found = consistent() or None
            time.sleep(0.25)  # traffic pacing (about 4 requests a second, under the rule's 50 per 10 s)
        assert found, "avg, min and p75 on the nodes never matched the stored samples"
        samples, shown = found
        assert shown[".hmin"] != shown[".hp75"], (samples, shown)  # 3 different samples: not one value

        # A rate's statistic reads, on the nodes, as the rate the aggregator sampled.
        def rate_matches():
            mine = json.loads(bed.aggr.cli("show table agg mytable.hday key alice json"))
            want = mine[0]["values"]["http_req_rate"] if mine else None
            return want is not None and all(bed.on(n, ".hday", "alice", "http_req_rate(10000)") == want
                                            for n in bed.nodes)
        wait_for(rate_matches, timeout=CONVERGE_TIMEOUT, what="the .hday rate on the nodes")

        # 4. The README's rule: a burst with no history is denied once the cluster's rate reaches
        # 50; once .hday holds that burst's rate, the same rate is allowed again.
        statuses = []
        deadline = time.time() + CONVERGE_TIMEOUT
        while 429 not in statuses and time.time() < deadline:
            statuses.append(bed.nodes["A"].request({"x-key": "mallory"}))
        assert 429 in statuses and statuses.index(429) >= 49, statuses  # not before 50 requests

        def allowed_again():  # about 10 requests a second keep the cluster's rate near 100
            rate = bed.on("A", ".aggr", "mallory", "http_req_rate(10000)") or 0
            return rate >= 50 and bed.nodes["A"].request({"x-key": "mallory"}) == 200 \
                and (bed.on("A", ".hday", "mallory", "http_req_rate(10000)") or 0) * 5 >= rate
        wait_for(allowed_again, timeout=CONVERGE_TIMEOUT, interval=0.1, what="the burst allowed once in .hday")

        # 5. SIGKILL with every node stopped: the restarted aggregator serves .hday from its file.
        wait_for(lambda: bed.everywhere(".hday", "alice") == {9}, timeout=CONVERGE_TIMEOUT, what=".hday 9")
        for node in bed.nodes.values():
            node.stop()
        bed.aggr.stop(signal.SIGKILL)
        bed.aggr = Aggregator(tmp_path, bed.config, name="aggr")
        bed.aggr.start()

        def served():
            rows = json.loads(bed.aggr.cli("show table agg mytable.hday key alice json"))
            return rows and rows[0]["values"]["http_req_cnt"]
        assert wait_for(served, timeout=CONVERGE_TIMEOUT, what=".hday served after the restart") == 9
        peers = json.loads(bed.aggr.cli("show peers json"))
        assert all(p["state"] != "established" for p in peers)  # no node has reconnected
