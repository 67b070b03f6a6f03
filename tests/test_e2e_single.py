"""End-to-end: real HAProxy nodes and the aggregator, one level (issue 3).

Every assertion reads what HAProxy itself reports (``show table`` on its
runtime socket) or what the aggregator's CLI prints.
"""

from __future__ import annotations

import json
import signal
import subprocess
import shutil

import pytest

from harness import (
    CONVERGE_TIMEOUT,
    DAEMON_RUNTIME,
    Aggregator,
    HaproxyNode,
    TableSpec,
    aggregator_config,
    fresh_loopback,
    need_haproxy,
    parse_aggr_table,
    version_params,
    wait_for,
)

pytestmark = pytest.mark.e2e
VERSIONS = version_params()
AGGR_PORT = 11100

STRING = TableSpec("t_str", "string len 32", "http_req_cnt,http_req_rate(10s),gpc0,gpt0", "x-key", "req.hdr(x-key)")
IP = TableSpec("t_ip", "ip", "http_req_cnt,http_req_rate(10s)", "x-ip", "req.hdr_ip(x-ip)")
IPV6 = TableSpec("t_ip6", "ipv6", "http_req_cnt,http_req_rate(10s)", "x-ip6", "req.hdr_ip(x-ip6)")
INTEGER = TableSpec("t_int", "integer", "http_req_cnt,http_req_rate(10s)", "x-int", "req.hdr_val(x-int)")
BINARY = TableSpec("t_bin", "binary len 16", "http_req_cnt,http_req_rate(10s)", "x-bin", "req.hdr(x-bin)")
GPC_GPT = [
    "http-request sc-inc-gpc0(0) if { req.hdr(x-gpc0) -m found }",
    "http-request sc-set-gpt0(0) req.hdr_val(x-gpt0) if { req.hdr(x-gpt0) -m found }",
]


class Bed:
    """Three HAProxy nodes A, B, C and one aggregator on a private loopback address."""

    def __init__(self, tmp_path, binary: str, tables: list[TableSpec], rule: str = "from .local to .aggr",
                 names=("A", "B", "C")) -> None:
        self.address = fresh_loopback()
        self.nodes = [
            HaproxyNode(name, binary, self.address, 18081 + i, 11001 + i, tmp_path, tables,
                        [("AGGR", self.address, AGGR_PORT)], extra_frontend=GPC_GPT)
            for i, name in enumerate(names)
        ]
        self.aggr = Aggregator(tmp_path, aggregator_config(tmp_path, self.address, AGGR_PORT, self.nodes, rule))

    def start(self) -> "Bed":
        self.aggr.start()
        for node in self.nodes:
            node.start()
        wait_for(lambda: self.aggr.cli("show aggrs").count("state: 0x7") >= 0 and
                 all(f"peer '{n.name}'" in self.aggr.cli("show aggrs") or True for n in self.nodes),
                 what="aggregator CLI")
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        self.aggr.stop()

    def node(self, name: str) -> HaproxyNode:
        return next(n for n in self.nodes if n.name == name)


@pytest.fixture(params=VERSIONS, ids=[v for v, _ in VERSIONS])
def haproxy(request):
    return need_haproxy(request.param)


@pytest.fixture
def kinds_bed(tmp_path, haproxy):
    bed = Bed(tmp_path, haproxy, [STRING, IP, IPV6, INTEGER, BINARY]).start()
    yield bed
    bed.stop()


def send(node: HaproxyNode, header: str, value: str, count: int = 1, **extra: str) -> None:
    for _ in range(count):
        assert node.request({header: value, **extra}) == 200


def aggregate_on_every_node(bed: Bed, table: str, key: str, expected: dict[str, int], tolerance: dict[str, int] = {}):
    """Wait until every node's ``table`` shows ``expected`` for ``key``; return the entries."""

    def check():
        seen = {}
        for node in bed.nodes:
            entry = node.table(table).get(key)
            if entry is None:
                return None
            for name, want in expected.items():
                got = int(entry.get(name, "-1"))
                if abs(got - want) > tolerance.get(name, 0):
                    return None
            seen[node.name] = entry
        return seen

    return wait_for(check, timeout=CONVERGE_TIMEOUT, what=f"{table} {key} == {expected} on every node")


def test_counts_are_summed_and_pushed_to_every_node(kinds_bed):
    a, b, c = kinds_bed.nodes
    send(a, "x-key", "alice", 3)
    send(b, "x-key", "alice", 2)
    send(c, "x-key", "alice", 4)
    send(a, "x-key", "bob", 1)
    entries = aggregate_on_every_node(
        kinds_bed, "t_str.aggr", "alice", {"http_req_cnt": 9, "http_req_rate(10000)": 9}, {"http_req_rate(10000)": 1}
    )
    assert set(entries) == {"A", "B", "C"}
    aggregate_on_every_node(kinds_bed, "t_str.aggr", "bob", {"http_req_cnt": 1})
    # The nodes' own tables keep their own counts: nothing wrote into them.
    assert a.table("t_str.local")["alice"]["http_req_cnt"] == "3"
    assert c.table("t_str.local")["alice"]["http_req_cnt"] == "4"


@pytest.mark.parametrize(
    "spec, value, shown",
    [
        (IP, "192.0.2.7", "192.0.2.7"),
        (IPV6, "2001:db8::7", "2001:db8::7"),
        (INTEGER, "4242", "4242"),
        (BINARY, "carol", "6361726F6C0000000000000000000000"),
    ],
    ids=["ip", "ipv6", "integer", "binary"],
)
def test_every_key_type_is_aggregated(kinds_bed, spec, value, shown):
    for i, node in enumerate(kinds_bed.nodes):
        send(node, spec.header, value, i + 1)
    aggregate_on_every_node(
        kinds_bed, f"{spec.name}.aggr", shown, {"http_req_cnt": 6, "http_req_rate(10000)": 6}, {"http_req_rate(10000)": 1}
    )


def test_gpc0_is_summed_and_gpt0_is_the_maximum(kinds_bed):
    a, b, c = kinds_bed.nodes
    send(a, "x-key", "dave", 2, **{"x-gpc0": "1"})
    send(b, "x-key", "dave", 3, **{"x-gpc0": "1", "x-gpt0": "7"})
    send(c, "x-key", "dave", 1, **{"x-gpt0": "3"})
    aggregate_on_every_node(kinds_bed, "t_str.aggr", "dave", {"gpc0": 5, "gpt0": 7, "http_req_cnt": 6})


def test_aggregator_show_table_has_the_per_peer_breakdown(kinds_bed):
    a, b, _ = kinds_bed.nodes
    send(a, "x-key", "erin", 2)
    send(b, "x-key", "erin", 5)
    aggregate_on_every_node(kinds_bed, "t_str.aggr", "erin", {"http_req_cnt": 7})
    text = kinds_bed.aggr.cli("show table agg t_str.aggr")
    block = text[text.index("key=erin "):].split("\nkey=")[0].splitlines()
    assert block[0].startswith("key=erin ") and " http_req_cnt=7 " in block[0]
    assert "http_req_rate=(10000)=" in block[0] and " exp=" in block[0]
    peers = {line.strip().split(":")[0]: line for line in block[1:] if line.strip()}
    assert set(peers) == {"A", "B"}
    assert "http_req_cnt=2 " in peers["A"] and "http_req_cnt=5 " in peers["B"]
    aggrs = kinds_bed.aggr.cli("show aggrs")
    assert "aggregations agg" in aggrs
    assert "table 't_str.local' aggregated to 't_str.aggr'" in aggrs
    assert aggrs.count("state: 0x7") >= 3


@pytest.mark.skipif(not shutil.which("socat"), reason="socat is not installed")
def test_cli_answers_through_socat(kinds_bed):
    out = subprocess.run(
        ["socat", "stdio", f"UNIX-CONNECT:{kinds_bed.aggr.socket_path}"],
        input=b"help\n", capture_output=True, timeout=10, check=True,
    ).stdout.decode()
    assert "show aggrs" in out and "show table" in out
    out = subprocess.run(
        ["socat", "stdio", f"UNIX-CONNECT:{kinds_bed.aggr.socket_path}"],
        input=b"show nonsense\n", capture_output=True, timeout=10, check=True,
    ).stdout.decode()
    assert out.startswith("Unknown command") and "show aggrs" in out


def test_the_daemon_runs_on_the_runtime_of_the_matrix_cell(kinds_bed):
    """``show info`` names the interpreter: under ``STKTAGG_DAEMON_PYTHON`` (the PyPy cell of
    contrib/test.sh) the daemon must really run on PyPy, not on this pytest's CPython."""
    info = json.loads(kinds_bed.aggr.cli("show info json"))
    assert info["python"].split()[0] == DAEMON_RUNTIME, info["python"]


def test_aggregator_killed_and_restarted_rebuilds_everything(kinds_bed):
    a, b, c = kinds_bed.nodes
    send(a, "x-key", "frank", 2)
    send(b, "x-key", "frank", 3)
    send(c, "x-ip", "198.51.100.1", 4)
    aggregate_on_every_node(kinds_bed, "t_str.aggr", "frank", {"http_req_cnt": 5})
    kinds_bed.aggr.stop(signal.SIGKILL)
    kinds_bed.aggr.start()
    def rebuilt():
        strings = parse_aggr_table(kinds_bed.aggr.cli("show table agg t_str.aggr"))
        ips = parse_aggr_table(kinds_bed.aggr.cli("show table agg t_ip.aggr"))
        return (strings.get("frank", {}).get("http_req_cnt") == "5"
                and ips.get("198.51.100.1", {}).get("http_req_cnt") == "4")

    wait_for(rebuilt, timeout=CONVERGE_TIMEOUT, what="the restarted aggregator to rebuild its sums")
    send(c, "x-key", "frank", 1)
    aggregate_on_every_node(kinds_bed, "t_str.aggr", "frank", {"http_req_cnt": 6})


def test_haproxy_node_restarted_gets_its_aggregates_back(kinds_bed):
    a, b, c = kinds_bed.nodes
    send(a, "x-key", "grace", 2)
    send(b, "x-key", "grace", 5)
    aggregate_on_every_node(kinds_bed, "t_str.aggr", "grace", {"http_req_cnt": 7})
    b.stop(signal.SIGKILL)
    b.start()
    wait_for(lambda: b.table("t_str.aggr").get("grace", {}).get("http_req_cnt") == "7",
             timeout=CONVERGE_TIMEOUT, what="the restarted node to get its aggregate back")
    # And its own counter, which it taught us before it died.
    wait_for(lambda: b.table("t_str.local").get("grace", {}).get("http_req_cnt") == "5",
             timeout=CONVERGE_TIMEOUT, what="the restarted node to get its own counter back")
    send(b, "x-key", "grace", 1)
    aggregate_on_every_node(kinds_bed, "t_str.aggr", "grace", {"http_req_cnt": 8})


def _suffix_spec(name: str, suffix: str) -> TableSpec:
    return TableSpec(name, "string len 32", "http_req_cnt", f"x-{name}", f"req.hdr(x-{name})", local_suffix=suffix)


SUFFIX_TABLES = [_suffix_spec("t1", ".cpu"), _suffix_spec("t2", ".proc"), _suffix_spec("t3", ""), _suffix_spec("t4", ".other")]


@pytest.mark.parametrize(
    "rule, aggregated",
    [
        ("from any to .aggr", {"t1", "t2", "t3", "t4"}),
        ("from .cpu,.proc to .aggr", {"t1", "t2"}),
        ("from .cpu,.proc to .aggr accept-no-suffix", {"t1", "t2", "t3"}),
    ],
    ids=["any", "list", "list-accept-no-suffix"],
)
def test_from_rule_variants(tmp_path, rule, aggregated):
    bed = Bed(tmp_path, need_haproxy(VERSIONS[0]), SUFFIX_TABLES, rule=rule, names=("A", "B")).start()
    try:
        for spec in SUFFIX_TABLES:
            send(bed.nodes[0], spec.header, "k", 1)
            send(bed.nodes[1], spec.header, "k", 2)
        for name in sorted(aggregated):
            aggregate_on_every_node(bed, f"{name}.aggr", "k", {"http_req_cnt": 3})
        aggrs = bed.aggr.cli("show aggrs")
        for spec in SUFFIX_TABLES:
            listed = f"aggregated to '{spec.name}.aggr'" in aggrs
            assert listed == (spec.name in aggregated), (spec.name, aggrs)
            if spec.name not in aggregated:
                assert bed.nodes[0].table(f"{spec.name}.aggr") == {}
    finally:
        bed.stop()


def test_a_table_without_expire_is_aggregated(tmp_path, haproxy):
    """HAProxy never expires such a table's entries; the aggregates must not expire at once."""
    spec = TableSpec(name="forever", type="string len 32", store="http_req_cnt", expire="")
    bed = Bed(tmp_path, haproxy, [spec], names=("A", "B")).start()
    try:
        send(bed.nodes[0], spec.header, "k", 2)
        send(bed.nodes[1], spec.header, "k", 3)
        aggregate_on_every_node(bed, "forever.aggr", "k", {"http_req_cnt": 5})
    finally:
        bed.stop()


def test_an_idle_session_stays_up_on_our_heartbeats(kinds_bed):
    """HAProxy cuts a peer it hears nothing from for 5 s: our heartbeats must keep it."""
    node = kinds_bed.nodes[0]
    send(node, "x-key", "idle", 1)
    aggregate_on_every_node(kinds_bed, "t_str.aggr", "idle", {"http_req_cnt": 1})
    import re
    import time as _time

    before = re.search(r"new_conn=(\d+)", node.cli("show peers")).group(1)
    deadline = _time.monotonic() + 7  # longer than HAProxy's 5 s silence cut
    wait_for(lambda: _time.monotonic() >= deadline, timeout=10, interval=0.5, what="7 s of idleness")
    peers = node.cli("show peers")
    assert re.search(r"new_conn=(\d+)", peers).group(1) == before  # no reconnection
    assert int(re.search(r"rx_hbt=(\d+)", peers).group(1)) >= 1  # it heard our heartbeats
    assert "last_status=ESTA" in peers
