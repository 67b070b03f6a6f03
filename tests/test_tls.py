"""TLS on peer links (issue 5): the sans-IO layer, contexts from peer lines, real HAProxy over TLS."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time

import pytest

from harness import (
    CONVERGE_TIMEOUT,
    LIBFAKETIME,
    ROOT,
    Aggregator,
    HaproxyNode,
    TableSpec,
    fresh_loopback,
    need_haproxy,
    version_params,
    wait_for,
)
from stktagg.config import parse
from stktagg.errors import ConfigError
from stktagg.tls import TLSError, TLSLayer, client_context, section_contexts, server_context

TABLE = TableSpec("mytable", "string len 32", "http_req_cnt,http_req_rate(10s)", "x-key", "req.hdr(x-key)")


def section(local_opts: str, peer_opts: str = "", role: str = "up"):
    text = (f"aggregations s\n    peer ME 127.0.0.1:10000 local {local_opts}\n"
            f"    peer OTHER 127.0.0.1:10001 {role} {peer_opts}\n    from any to .aggr\n")
    return parse(text, "t.cfg").aggregations[0]


def pump(client: TLSLayer, server: TLSLayer, first: bytes = b"") -> None:
    """Shuttle bytes between two layers until neither has anything to say."""
    _, to_server = client.feed_incoming(first)
    for _ in range(20):
        _, to_client = server.feed_incoming(to_server)
        _, to_server = client.feed_incoming(to_client)
        if not to_server and not to_client:
            return


class TestLayerInMemory:
    def layers(self, pki, server_verify="required", client_ca="ca", client_cert="node1", client_ca_name="ca"):
        srv = section(f"ssl crt {pki.leaf('aggr', 'ca')} ca-file {pki.ca('ca')} verify {server_verify}")
        opts = f"ssl ca-file {pki.ca(client_ca)}"
        if client_cert:
            opts += f" crt {pki.leaf(client_cert, client_ca_name)}"
        cli = section("", opts)
        return (TLSLayer(client_context(cli.peer("OTHER")), server_side=False),
                TLSLayer(server_context(srv.local_peer), server_side=True))

    def test_mutual_tls_carries_data_both_ways(self, pki):
        client, server = self.layers(pki)
        pump(client, server)
        assert client.handshake_done() and server.handshake_done()
        app, _ = server.feed_incoming(client.feed_outgoing(b"HAProxyS 2.1\n"))
        assert app == b"HAProxyS 2.1\n"
        app, _ = client.feed_incoming(server.feed_outgoing(b"200\n"))
        assert app == b"200\n"
        assert "commonName=node1" in server.peer_certificate_subject()

    def test_client_certificate_from_another_ca_is_refused(self, pki):
        client, server = self.layers(pki, client_cert="rogue", client_ca_name="rogue-ca")
        with pytest.raises(TLSError, match="certificate verify failed"):
            pump(client, server)

    def test_missing_client_certificate_is_refused_when_required(self, pki):
        client, server = self.layers(pki, client_cert=None)
        with pytest.raises(TLSError):
            pump(client, server)

    def test_optional_accepts_no_certificate_but_refuses_a_foreign_one(self, pki):
        client, server = self.layers(pki, server_verify="optional", client_cert=None)
        pump(client, server)
        assert server.handshake_done() and server.peer_certificate_subject() == ""
        client, server = self.layers(pki, server_verify="optional", client_cert="rogue", client_ca_name="rogue-ca")
        with pytest.raises(TLSError):
            pump(client, server)

    def test_verify_none_accepts_a_foreign_certificate(self, pki):
        client, server = self.layers(pki, server_verify="none", client_cert="rogue", client_ca_name="rogue-ca")
        pump(client, server)
        assert server.handshake_done()

    def test_client_refuses_a_server_from_another_ca(self, pki):
        client, server = self.layers(pki, client_ca="rogue-ca")
        with pytest.raises(TLSError, match="certificate verify failed"):
            pump(client, server)


DAY = 86400

#: A TLS handshake with the test PKI's certificates, in a process whose wall clock
#: libfaketime shifts: argv = ca, server bundle, client bundle.
_HANDSHAKE_UNDER_SHIFTED_CLOCK = """
import sys, time
from stktagg.config import parse
from stktagg.tls import TLSLayer, client_context, server_context
ca, server_crt, client_crt = sys.argv[1:4]
def section(local, peer=""):
    return parse("aggregations s\\n    peer ME 127.0.0.1:10000 local " + local + "\\n    peer OTHER 127.0.0.1:10001 up "
                 + peer + "\\n    from any to .aggr\\n", "t.cfg").aggregations[0]
server = TLSLayer(server_context(section("ssl crt %s ca-file %s verify required" % (server_crt, ca)).local_peer), True)
client = TLSLayer(client_context(section("", "ssl crt %s ca-file %s" % (client_crt, ca)).peer("OTHER")), False)
_, to_server = client.feed_incoming(b"")
for _ in range(20):
    _, to_client = server.feed_incoming(to_server)
    _, to_server = client.feed_incoming(to_client)
assert client.handshake_done() and server.handshake_done()
print(time.strftime("%Y-%m-%d", time.gmtime()))
"""


class TestCertificatesDoNotDependOnTodaysDate:
    """The test PKI must work with the clock a year ahead or days behind the moment it was made."""

    @staticmethod
    def validity(path) -> tuple[float, float]:
        out = subprocess.run(["openssl", "x509", "-in", str(path), "-noout", "-startdate", "-enddate"],
                             capture_output=True, text=True, check=True, timeout=60).stdout
        dates = dict(line.split("=", 1) for line in out.splitlines())
        return ssl.cert_time_to_seconds(dates["notBefore"]), ssl.cert_time_to_seconds(dates["notAfter"])

    def test_every_certificate_is_valid_from_a_year_back_to_ten_years_ahead(self, pki):
        now = time.time()
        for path in (pki.ca("ca"), pki.ca("rogue-ca"), pki.leaf("node1", "ca"), pki.leaf("rogue", "rogue-ca")):
            not_before, not_after = self.validity(path)
            assert not_before <= now - 366 * DAY, (path.name, "not valid a year back")
            assert not_after >= now + 10 * 365 * DAY, (path.name, "not valid ten years ahead")

    @pytest.mark.skipif(LIBFAKETIME is None, reason="libfaketime (Debian package faketime) is not installed")
    @pytest.mark.parametrize("days", [400, -3])
    def test_handshake_with_the_clock_shifted_after_the_certificates_were_made(self, pki, days):
        files = [str(pki.ca("ca")), str(pki.leaf("aggr", "ca")), str(pki.leaf("node1", "ca"))]
        # An absolute start time computed from this process's clock (itself possibly faked).
        shifted = time.gmtime(time.time() + days * DAY)
        env = dict(os.environ, LD_PRELOAD=str(LIBFAKETIME), TZ="UTC", FAKETIME_DONT_FAKE_MONOTONIC="1",
                   FAKETIME=time.strftime("@%Y-%m-%d %H:%M:%S", shifted), PYTHONPATH=str(ROOT))
        for inherited in ("FAKETIME_TIMESTAMP_FILE", "FAKETIME_SHARED"):  # from a faketime wrapper, if any
            env.pop(inherited, None)
        out = subprocess.run([sys.executable, "-c", _HANDSHAKE_UNDER_SHIFTED_CLOCK, *files],
                             capture_output=True, text=True, timeout=60, env=env)
        assert out.returncode == 0, out.stderr[-2000:]
        # The shift did reach the child (the date it saw), so the handshake ran at that date.
        assert out.stdout.strip() in {time.strftime("%Y-%m-%d", shifted),
                                      time.strftime("%Y-%m-%d", time.gmtime(time.time() + days * DAY + 60))}


class TestContextsFromConfig:
    def test_local_ssl_without_crt_is_a_config_error_at_its_line(self):
        with pytest.raises(ConfigError, match=r"^t\.cfg:2:5: 'ssl' on the local peer needs 'crt"):
            section_contexts(section("ssl"))

    def test_up_peer_verify_without_ca_is_refused_like_haproxy(self, pki):
        with pytest.raises(ConfigError, match="no CA file specified"):
            section_contexts(section("", f"ssl crt {pki.leaf('node1', 'ca')}"))

    def test_down_peer_with_ssl_needs_a_tls_listener(self):
        with pytest.raises(ConfigError, match=r"^t\.cfg:3:5: peer 'OTHER' requires 'ssl'"):
            section_contexts(section("", "ssl", role="down"))

    def test_unreadable_pem_is_reported_at_the_crt_word(self, tmp_path):
        bad = tmp_path / "bad.pem"
        bad.write_text("not a certificate\n")
        with pytest.raises(ConfigError, match=r"^t\.cfg:2:\d+: cannot load certificate and key"):
            section_contexts(section(f"ssl crt {bad}"))


# -- real HAProxy over TLS ---------------------------------------------------------------

VERSIONS = version_params()


class TLSBed:
    """Nodes dialling the aggregator over TLS, each with the certificate given."""

    def __init__(self, tmp_path, pki, binary, verify: str, certs: dict[str, str | None]) -> None:
        self.address = fresh_loopback()
        ca = pki.ca("ca")
        self.nodes = []
        for i, (name, cert) in enumerate(certs.items()):
            opts = f"ssl ca-file {ca} verify required"
            if cert is not None:
                opts += f" crt {pki.leaf(cert, 'rogue-ca' if cert.startswith('rogue') else 'ca')}"
            self.nodes.append(HaproxyNode(name, binary, fresh_loopback(), 18081 + i, 11001 + i, tmp_path, [TABLE],
                                          [("AGGR", self.address, 11100)], peer_tls=opts))
        config = "\n".join([
            "global", f"    stats socket {tmp_path / 'aggr.sock'}", "aggregations agg",
            f"    peer AGGR {self.address}:11100 local ssl crt {pki.leaf('aggr', 'ca')} ca-file {ca} verify {verify}",
            *[f"    peer {n.name} {n.address}:{n.peer_port}" for n in self.nodes],
            "    from .local to .aggr",
        ]) + "\n"
        self.aggr = Aggregator(tmp_path, config)

    def __enter__(self) -> "TLSBed":
        self.aggr.start()
        for node in self.nodes:
            node.start()
        return self

    def __exit__(self, *exc) -> None:
        for node in self.nodes:
            node.stop()
        self.aggr.stop()

    def hit(self, name: str, key: str, count: int) -> None:
        node = next(n for n in self.nodes if n.name == name)
        for _ in range(count):
            assert node.request({"x-key": key}) == 200

    def aggr_count(self, name: str, key: str) -> str | None:
        node = next(n for n in self.nodes if n.name == name)
        return node.table("mytable.aggr").get(key, {}).get("http_req_cnt")


@pytest.mark.e2e
@pytest.mark.parametrize("version", VERSIONS, ids=[v for v, _ in VERSIONS])
def test_mutual_tls_sums_flow_and_a_foreign_certificate_is_refused(tmp_path, pki, version):
    binary = need_haproxy(version)
    with TLSBed(tmp_path, pki, binary, "required", {"A": "node-a", "B": "node-b", "R": "rogue-r"}) as bed:
        bed.hit("A", "alice", 2)
        bed.hit("B", "alice", 3)
        bed.hit("R", "alice", 100)
        wait_for(lambda: bed.aggr_count("A", "alice") == "5" and bed.aggr_count("B", "alice") == "5",
                 timeout=CONVERGE_TIMEOUT, what="sums over TLS on A and B")
        wait_for(lambda: "TLS handshake with peer R? " in bed.aggr.log_path.read_text(),
                 timeout=CONVERGE_TIMEOUT, what="the refused handshake to be logged with the peer's name")
        assert "certificate verify failed" in bed.aggr.log_path.read_text()
        assert bed.aggr_count("R", "alice") is None  # contributes nothing, receives nothing
        assert "peer 'R' (2) state: 0x0" in bed.aggr.cli("show aggrs")


@pytest.mark.e2e
def test_a_reload_takes_new_tls_files_for_new_handshakes_and_keeps_the_sessions(tmp_path, pki):
    """Reload (issue 17): the listener's CA changes to one that signed neither node. B's
    established session stays and is summed; A, restarted, is refused by the new CA."""
    binary = need_haproxy(VERSIONS[0])
    with TLSBed(tmp_path, pki, binary, "required", {"A": "node-a", "B": "node-b"}) as bed:
        bed.hit("A", "k", 1)
        bed.hit("B", "k", 2)
        wait_for(lambda: bed.aggr_count("B", "k") == "3", timeout=CONVERGE_TIMEOUT, what="the sum over TLS")
        text = bed.aggr.config_path.read_text()
        assert text.count(f"ca-file {pki.ca('ca')} ") == 1
        bed.aggr.config_path.write_text(text.replace(f"ca-file {pki.ca('ca')} ", f"ca-file {pki.ca('rogue-ca')} "))
        bed.aggr.process.send_signal(signal.SIGHUP)
        wait_for(lambda: "reloaded " in bed.aggr.log_path.read_text(), what="the reload")
        refusals = bed.aggr.log_path.read_text().count("certificate verify failed")
        node_a = bed.nodes[0]
        node_a.stop()
        node_a.start()  # a new handshake: checked against the new CA
        wait_for(lambda: bed.aggr.log_path.read_text().count("certificate verify failed") > refusals,
                 timeout=CONVERGE_TIMEOUT, what="A refused by the reloaded CA")
        bed.hit("B", "k", 1)  # B's session, from before the reload, goes on (A's part stays)
        wait_for(lambda: bed.aggr_count("B", "k") == "4", timeout=CONVERGE_TIMEOUT, what="B still summed")


@pytest.mark.e2e
def test_verify_none_and_optional_behave_as_named(tmp_path, pki):
    binary = need_haproxy(VERSIONS[0])
    (tmp_path / "none").mkdir()
    with TLSBed(tmp_path / "none", pki, binary, "none", {"A": "node-a", "R": "rogue-r"}) as bed:
        bed.hit("A", "k", 1)
        bed.hit("R", "k", 2)
        wait_for(lambda: bed.aggr_count("A", "k") == "3", timeout=CONVERGE_TIMEOUT, what="verify none: foreign cert accepted")
    (tmp_path / "optional").mkdir()
    with TLSBed(tmp_path / "optional", pki, binary, "optional", {"A": "node-a", "N": None, "R": "rogue-r"}) as bed:
        bed.hit("A", "k", 1)
        bed.hit("N", "k", 2)
        bed.hit("R", "k", 4)
        wait_for(lambda: bed.aggr_count("A", "k") == "3", timeout=CONVERGE_TIMEOUT,
                 what="verify optional: no certificate accepted, foreign one refused")
        assert bed.aggr_count("R", "k") is None


@pytest.mark.e2e
def test_outgoing_tls_link_to_an_up_level_aggregator(tmp_path, pki):
    binary = need_haproxy(VERSIONS[0])
    address = fresh_loopback()
    ca = pki.ca("ca")
    node = HaproxyNode("h1", binary, address, 18081, 11001, tmp_path, [TABLE], [("L1", address, 11100)])
    level1 = Aggregator(tmp_path, "\n".join([
        "global", f"    stats socket {tmp_path / 'L1.sock'}", "aggregations region",
        f"    peer TOP {address}:11200 up ssl crt {pki.leaf('l1', 'ca')} ca-file {ca} verify required",
        f"    peer L1 {address}:11100 local", f"    peer h1 {address}:11001",
        "    from any to .aggr", "    forward .l2",
    ]) + "\n", name="L1")
    top = Aggregator(tmp_path, "\n".join([
        "global", f"    stats socket {tmp_path / 'TOP.sock'}", "aggregations top",
        f"    peer L1 {address}:11100 down", f"    peer TOP {address}:11200 local ssl crt {pki.leaf('top', 'ca')} "
        f"ca-file {ca} verify required", "    from .aggr to .l2",
    ]) + "\n", name="TOP")
    top.start()
    level1.start()
    node.start()
    try:
        for _ in range(3):
            assert node.request({"x-key": "z"}) == 200
        wait_for(lambda: "key=z http_req_cnt=3 " in top.cli("show table top mytable.l2"), timeout=CONVERGE_TIMEOUT,
                 what="the region's sum to reach the top over TLS")
    finally:
        node.stop()
        level1.stop()
        top.stop()
