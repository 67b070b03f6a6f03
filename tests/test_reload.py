"""Reload (issue 17): SIGHUP applies a changed configuration in place, with real HAProxy nodes.

Each test changes the aggregator's file, sends SIGHUP and asserts on what HAProxy itself
shows (``show table``) and on the aggregator's own view (``show peers json``: a session
that was kept has the same ``last_hello``).
"""

from __future__ import annotations

import json
import signal

import pytest

from harness import (CONVERGE_TIMEOUT, Aggregator, Cluster, HaproxyNode, TableSpec, aggregator_config, fresh_loopback,
                     need_haproxy, unix_query, version_params, wait_for)

pytestmark = pytest.mark.e2e
VERSIONS = version_params()
TABLE = TableSpec("mytable", "string len 32", "http_req_cnt", "x-key", "req.hdr(x-key)")
OTHER = TableSpec("other", "string len 32", "http_req_cnt", "x-other", "req.hdr(x-other)", local_suffix=".cpu")
PORT = 11100


class Bed(Cluster):
    """Nodes A, B, C dialling one aggregator, whose file names only some of them at first."""

    def __init__(self, tmp_path, binary: str, declared: tuple[str, ...], tables=(TABLE,)) -> None:
        self.tmp_path = tmp_path
        self.address = fresh_loopback()
        self.nodes = {name: HaproxyNode(name, binary, self.address, 18081 + i, 11001 + i, tmp_path, list(tables),
                                        [("AGGR", self.address, PORT)])
                      for i, name in enumerate(("A", "B", "C"))}
        self.aggr = Aggregator(tmp_path, self.config(declared))

    def config(self, declared: tuple[str, ...], rule: str = "from .local to .aggr", extra_global: str = "") -> str:
        text = aggregator_config(self.tmp_path, self.address, PORT, [self.nodes[n] for n in declared], rule)
        return text.replace("global\n", "global\n" + extra_global, 1)

    def reload(self, text: str) -> None:
        self.aggr.config_path.write_text(text)
        self.aggr.process.send_signal(signal.SIGHUP)

    def hit(self, node: str, key: str, count: int, header: str = "x-key") -> None:
        for _ in range(count):
            assert self.nodes[node].request({header: key}) == 200

    def peers(self) -> dict[str, dict]:
        return {p["name"]: p for p in json.loads(self.aggr.cli("show peers json"))}

    def sum_on(self, node: str, key: str, table: str = "mytable.aggr") -> str | None:
        return self.nodes[node].table(table).get(key, {}).get("http_req_cnt")



def established(bed: Bed, *names: str) -> bool:
    peers = bed.peers()
    return all(peers.get(n, {}).get("state") == "established" for n in names)


@pytest.fixture(params=VERSIONS, ids=[v for v, _ in VERSIONS])
def haproxy(request):
    return need_haproxy(request.param)


def test_a_reload_adds_a_peer_and_keeps_the_sums_and_the_other_sessions(tmp_path, haproxy):
    with Bed(tmp_path, haproxy, ("A", "B")) as bed:
        bed.hit("A", "alice", 2)
        bed.hit("B", "alice", 3)
        bed.hit("C", "alice", 4)  # C is not declared yet: refused, not summed
        wait_for(lambda: all(bed.sum_on(n, "alice") == "5" for n in "AB"), timeout=CONVERGE_TIMEOUT,
                 what="A + B on A and B")
        before = bed.peers()
        assert "C" not in before
        pid = bed.aggr.process.pid
        bed.reload(bed.config(("A", "B", "C")))
        # C dials again within HAProxy's reconnect delay, and its own count joins the sum.
        wait_for(lambda: all(bed.sum_on(n, "alice") == "9" for n in "ABC"), timeout=CONVERGE_TIMEOUT,
                 what="A + B + C on every node after the reload")
        after = bed.peers()
        assert bed.aggr.process.pid == pid and bed.aggr.process.poll() is None
        for name in "AB":  # the same sessions: hellos from before the reload
            assert after[name]["state"] == "established" and after[name]["last_hello"] == before[name]["last_hello"]
        log = bed.aggr.log_path.read_text()
        assert "reload: section agg: peers added: C" in log and "reloaded " in log


def test_a_broken_file_is_refused_at_its_line_and_the_running_configuration_stays(tmp_path, haproxy):
    with Bed(tmp_path, haproxy, ("A", "B")) as bed:
        bed.hit("A", "k", 1)
        bed.hit("B", "k", 1)
        wait_for(lambda: bed.sum_on("A", "k") == "2", timeout=CONVERGE_TIMEOUT, what="the first sum")
        broken = bed.config(("A", "B")).replace("    from .local to .aggr\n", "    peer X\n    from .local to .aggr\n")
        bed.reload(broken)
        line = broken.splitlines().index("    peer X") + 1
        wait_for(lambda: f"aggr.cfg:{line}:" in bed.aggr.log_path.read_text(), what="the error at its line")
        assert "reload refused, the running configuration stays" in bed.aggr.log_path.read_text()
        bed.hit("A", "k", 1)  # still aggregating, with the old file
        wait_for(lambda: bed.sum_on("B", "k") == "3", timeout=CONVERGE_TIMEOUT, what="a sum after the refusal")
        assert established(bed, "A", "B")


def test_a_removed_peer_loses_its_session_and_its_part_stays_until_it_expires(tmp_path, haproxy):
    with Bed(tmp_path, haproxy, ("A", "B", "C")) as bed:
        for node, count in (("A", 1), ("B", 2), ("C", 4)):
            bed.hit(node, "k", count)
        wait_for(lambda: bed.sum_on("A", "k") == "7", timeout=CONVERGE_TIMEOUT, what="the sum of three")
        bed.reload(bed.config(("A", "B")))
        wait_for(lambda: "C" not in bed.peers(), what="C gone from show peers")
        bed.hit("A", "k", 1)  # C's part (4) stays: as a node that went away, until its entries expire
        wait_for(lambda: bed.sum_on("B", "k") == "8", timeout=CONVERGE_TIMEOUT, what="the sum, C's part kept")
        assert established(bed, "A", "B")
        # C dials again and is refused: not declared any more.
        wait_for(lambda: "hello from undeclared peer 'C'" in bed.aggr.log_path.read_text(),
                 timeout=CONVERGE_TIMEOUT, what="C refused")


def test_a_changed_from_rule_aggregates_a_new_table_from_what_the_nodes_already_hold(tmp_path, haproxy):
    with Bed(tmp_path, haproxy, ("A", "B"), tables=(TABLE, OTHER)) as bed:
        bed.hit("A", "k", 1)
        bed.hit("B", "k", 2)
        bed.hit("A", "o", 3, header="x-other")
        bed.hit("B", "o", 4, header="x-other")
        wait_for(lambda: bed.sum_on("A", "k") == "3", timeout=CONVERGE_TIMEOUT, what="mytable summed")
        assert bed.sum_on("A", "o", "other.aggr") is None  # .cpu is not an input yet
        before = bed.peers()
        bed.reload(bed.config(("A", "B"), rule="from .local,.cpu to .aggr"))
        # No new traffic: the sum comes from the resync the reload asked each node for.
        wait_for(lambda: all(bed.sum_on(n, "o", "other.aggr") == "7" for n in "AB"), timeout=CONVERGE_TIMEOUT,
                 what="other.cpu summed into other.aggr after the reload")
        after = bed.peers()
        assert all(after[n]["last_hello"] == before[n]["last_hello"] for n in "AB")  # no session restarted
        assert bed.sum_on("B", "k") == "3"


def test_a_stats_socket_added_by_a_reload_answers(tmp_path):
    binary = need_haproxy(VERSIONS[0])
    with Bed(tmp_path, binary, ("A",)) as bed:
        second = tmp_path / "second.sock"
        bed.reload(bed.config(("A",), extra_global=f"    stats socket {second}\n"))
        wait_for(lambda: second.exists(), what="the new stats socket")
        assert "aggregations agg" in unix_query(second, "show aggrs")
        assert "aggregations agg" in bed.aggr.cli("show aggrs")  # the first one still there


def test_a_section_added_then_removed_by_reloads(tmp_path):
    """A second section on a port of its own: its listener opens with the reload and its node is
    summed; removed again, its session ends and the first section never noticed."""
    binary = need_haproxy(VERSIONS[0])
    with Bed(tmp_path, binary, ("A", "B")) as bed:
        other = HaproxyNode("D", binary, bed.address, 18091, 11011, tmp_path, [TABLE], [("AGGR2", bed.address, 11101)])
        other.start()
        try:
            bed.hit("A", "k", 1)
            wait_for(lambda: bed.sum_on("B", "k") == "1", timeout=CONVERGE_TIMEOUT, what="the first section")
            first = bed.config(("A", "B"))
            second = "\n".join(["aggregations agg2", f"    peer AGGR2 {bed.address}:11101 local",
                                f"    peer D {bed.address}:11011", "    from .local to .aggr", ""])
            before = bed.peers()
            bed.reload(first + second)
            other.request({"x-key": "k"})
            # D was refused at the TCP level before (no listener): HAProxy dials again by itself.
            wait_for(lambda: other.table("mytable.aggr").get("k", {}).get("http_req_cnt") == "1",
                     timeout=CONVERGE_TIMEOUT, what="D summed by the added section (apart from agg's)")
            assert bed.sum_on("A", "k") == "1"  # the sections do not mix
            bed.reload(first)
            wait_for(lambda: "reload: section agg2 removed" in bed.aggr.log_path.read_text(), what="agg2 removed")
            after = bed.peers()
            assert all(after[n]["last_hello"] == before[n]["last_hello"] for n in "AB")
            assert "aggregations agg2" not in bed.aggr.cli("show aggrs")
        finally:
            other.stop()
