"""Operator features beyond the reference (issue 9): show table filters and JSON, show peers,
show info, Prometheus metrics, dynamic peers, prompt mode, several commands per line,
clear table. Against the running daemon with real HAProxy nodes."""

from __future__ import annotations

import http.client
import json
import socket

import pytest

from harness import (
    CONVERGE_TIMEOUT,
    Aggregator,
    HaproxyNode,
    TableSpec,
    fresh_loopback,
    haproxy_binaries,
    parse_aggr_table,
    wait_for,
)

pytestmark = pytest.mark.e2e
TABLE = TableSpec("mytable", "string len 32", "http_req_cnt,http_req_rate(10s),gpc0", "x-key", "req.hdr(x-key)")
GPC = ["http-request sc-inc-gpc0(0) if { req.hdr(x-gpc0) -m found }"]


class Bed:
    def __init__(self, tmp_path, dynamic: int = 0, declared=("A", "B")) -> None:
        self.address = fresh_loopback()
        binary = haproxy_binaries()[0][1]
        self.nodes = [HaproxyNode(n, binary, self.address, 18081 + i, 11001 + i, tmp_path, [TABLE],
                                  [("AGGR", self.address, 11100)], extra_frontend=GPC) for i, n in enumerate(("A", "B"))]
        lines = ["global", f"    stats socket {tmp_path / 'aggr.sock'}", f"    prometheus {self.address}:9100",
                 "aggregations agg", f"    peer AGGR {self.address}:11100 local"]
        lines += [f"    peer {n.name} {self.address}:{n.peer_port}" for n in self.nodes if n.name in declared]
        lines += ["    from .local to .aggr"] + ([f"    dynamic-peers {dynamic}"] if dynamic else [])
        self.aggr = Aggregator(tmp_path, "\n".join(lines) + "\n")

    def __enter__(self):
        self.aggr.start()
        for node in self.nodes:
            node.start()
        return self

    def __exit__(self, *exc):
        for node in self.nodes:
            node.stop()
        self.aggr.stop()

    def hit(self, name: str, key: str, count: int, **headers) -> None:
        node = next(n for n in self.nodes if n.name == name)
        for _ in range(count):
            assert node.request({"x-key": key, **headers}) == 200

    def converge(self, key: str, count: int) -> None:
        wait_for(lambda: all(n.table("mytable.aggr").get(key, {}).get("http_req_cnt") == str(count)
                             for n in self.nodes), timeout=CONVERGE_TIMEOUT, what=f"{key} == {count} on the nodes")

    def metrics(self) -> str:
        conn = http.client.HTTPConnection(self.address, 9100, timeout=5)
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        assert response.status == 200 and response.getheader("Content-Type").startswith("text/plain; version=0.0.4")
        return response.read().decode()


@pytest.fixture
def bed(tmp_path):
    with Bed(tmp_path) as b:
        b.hit("A", "alice", 3, **{"x-gpc0": "1"})
        b.hit("B", "alice", 4)
        b.hit("A", "bob", 1)
        b.converge("alice", 7)
        b.converge("bob", 1)
        yield b


def test_show_table_key_filters_and_json(bed):
    one = parse_aggr_table(bed.aggr.cli("show table agg mytable.aggr key alice"))
    assert list(one) == ["alice"] and one["alice"]["http_req_cnt"] == "7"
    assert list(parse_aggr_table(bed.aggr.cli("show table agg mytable.aggr data.http_req_cnt gt 5"))) == ["alice"]
    assert list(parse_aggr_table(bed.aggr.cli("show table agg mytable.aggr data.http_req_cnt le 1"))) == ["bob"]
    both = parse_aggr_table(bed.aggr.cli("show table agg mytable.aggr data.gpc0 eq 0 data.http_req_cnt lt 9"))
    assert list(both) == ["bob"]
    rows = json.loads(bed.aggr.cli("show table agg mytable.aggr key alice json"))
    assert set(rows[0]) == {"key", "values", "expire", "peers"}
    assert rows[0]["key"] == "alice" and rows[0]["values"]["http_req_cnt"] == 7 and rows[0]["values"]["gpc0"] == 3
    assert {p["name"]: p["values"]["http_req_cnt"] for p in rows[0]["peers"]} == {"A": 3, "B": 4}
    assert "Unknown data type 'nope'" in bed.aggr.cli("show table agg mytable.aggr data.nope gt 1")
    assert "Unknown operator" in bed.aggr.cli("show table agg mytable.aggr data.gpc0 bigger 1")


def test_show_aggrs_json_matches_the_text_form(bed):
    data = json.loads(bed.aggr.cli("show aggrs json"))
    table = data[0]["tables"][0]
    assert data[0]["name"] == "agg" and table["name"] == "mytable.aggr" and table["entries"] == 2
    assert [p["state"] for p in table["peers"]] == [7, 7]
    assert f"used: 0x{table['entries']:08x}" in bed.aggr.cli("show aggrs")


def test_show_peers_and_show_info(bed):
    peers = json.loads(bed.aggr.cli("show peers json"))
    a = next(p for p in peers if p["name"] == "A")
    assert a["state"] == "established" and a["role"] == "down" and a["tls"] is False
    assert a["messages_in"] > 0 and a["bytes_out"] > 0 and a["last_hello"] is not None and a["updates_in"] >= 2
    text = bed.aggr.cli("show peers")
    assert "agg/A role=down state=established" in text and "last_error=" in text
    info = json.loads(bed.aggr.cli("show info json"))
    assert info["version"] and info["pid"] == bed.aggr.process.pid and info["tables"] == 1 and info["entries"] == 2
    assert info["updates_received_total"] >= 4 and "updates_pushed_per_s_1m" in info
    assert "uptime_s: " in bed.aggr.cli("show info")


def test_prometheus_metrics_parse_with_the_reference_parser(bed):
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(bed.metrics())}
    up = {s.labels["peer"]: s.value for s in families["hapee_stktagg_peer_up"].samples}
    assert up == {"A": 1.0, "B": 1.0}
    entries = families["hapee_stktagg_table_entries"].samples[0]
    assert entries.labels == {"section": "agg", "table": "mytable.aggr", "mode": "aggregate"} and entries.value == 2
    assert families["hapee_stktagg_updates_received"].type == "counter"
    assert families["process_resident_memory_bytes"].samples[0].value > 0
    assert families["process_open_fds"].samples[0].value > 0
    conn = http.client.HTTPConnection(bed.address, 9100, timeout=5)
    conn.request("GET", "/other")
    assert conn.getresponse().status == 404


def test_several_commands_per_line_and_prompt_mode(bed):
    answer = bed.aggr.cli("show info; show aggrs")
    assert "uptime_s" in answer and "aggregations agg" in answer
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(bed.aggr.socket_path))
        sock.sendall(b"prompt\n")
        assert _read_until(sock, b"> ").endswith(b"> ")
        sock.sendall(b"show table agg mytable.aggr key bob\n")
        answer = _read_until(sock, b"> ")
        assert answer.startswith(b"key=bob ") and b" http_req_cnt=1 " in answer
        sock.sendall(b"help\n")
        assert b"show peers" in _read_until(sock, b"> ")
        sock.sendall(b"quit\n")
        assert sock.recv(100) in (b"\n", b"")


def _read_until(sock: socket.socket, end: bytes) -> bytes:
    data = b""
    while not data.endswith(end):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_clear_table_forgets_and_clears_the_nodes_aggregates(bed):
    assert bed.aggr.cli("clear table agg mytable.aggr key bob").strip() == "Cleared 1 entry."
    assert "bob" not in parse_aggr_table(bed.aggr.cli("show table agg mytable.aggr"))
    wait_for(lambda: all("bob" not in n.table("mytable.aggr") for n in bed.nodes), timeout=CONVERGE_TIMEOUT,
             what="the nodes' bob aggregate to be cleared")
    assert "alice" in bed.nodes[0].table("mytable.aggr")  # other keys untouched
    assert bed.aggr.cli("clear table agg mytable.aggr").strip() == "Cleared 1 entry."
    bed.hit("B", "alice", 1)  # B's own counter (5) comes back with its next update
    bed.converge("alice", 5)


def test_dynamic_peers_accepts_undeclared_peers_up_to_the_limit(tmp_path):
    with Bed(tmp_path, dynamic=2, declared=("A",)) as bed:  # B is not declared
        bed.hit("A", "k", 1)
        bed.hit("B", "k", 2)
        bed.converge("k", 3)
        assert "accepted undeclared peer B" in bed.aggr.log_path.read_text()
        for name, expected in (("X1", b"200\n"), ("X2", b"504\n")):  # B took one of the 2 places
            with socket.create_connection((bed.address, 11100), timeout=5) as sock:
                sock.sendall(f"HAProxyS 2.1\nAGGR\n{name} 1 1\n".encode())
                assert sock.recv(4) == expected


def test_dynamic_peers_are_off_by_default(tmp_path):
    with Bed(tmp_path, declared=("A",)) as bed:
        with socket.create_connection((bed.address, 11100), timeout=5) as sock:
            sock.sendall(b"HAProxyS 2.1\nAGGR\nB 1 1\n")
            assert sock.recv(4) == b"504\n"
