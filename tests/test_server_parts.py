"""The server's parts in one process: connection stages, the registry, the status view, clear.

A real ``Server`` on a real ``Reactor`` running on a ``ManualClock``; peers are the other
end of socketpairs, fed hello lines by hand. No listening sockets, no HAProxy, no
worker threads (``workers=0`` applies updates in the loop). Synchronisation is
``run_until(predicate, timeout)``, never a sleep.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from stktagg.clock import ManualClock
from stktagg.config import parse
from stktagg.links import Handshaking, PeerConnection, Sniffing
from stktagg.loop import Reactor
from stktagg.peerlink import PeerLink
from stktagg.server import Server
from stktagg.session import HANDSHAKE_TIMEOUT, State
from stktagg.status import ClearTable, Status
from stktagg.table import TableMode
from stktagg.wire import TableDefinition

pytestmark = pytest.mark.usefixtures("no_fd_leak")

CONFIG = """
aggregations agg
    peer AGGR 127.0.0.1:11100 local
    peer A 127.0.0.1:11001
    peer B 127.0.0.1:11002
    from .local to .aggr
aggregations other
    peer OTHER 127.0.0.1:11100 local
    peer C 127.0.0.1:11003
    from .local to .aggr
"""
WAIT = 10.0  # generous real-time bound for a loaded machine


class Bed:
    def __init__(self) -> None:
        self.clock = ManualClock()
        self.reactor = Reactor(clock=self.clock.now)
        self.server = Server(parse(CONFIG), self.reactor, self.clock, workers=0)
        self.server.start()
        self.peers: list[socket.socket] = []

    def accept(self, sections: str = "both") -> tuple[PeerConnection, socket.socket]:
        """A connection as a listener would hand it over; returns it and the peer's end."""
        ours, theirs = socket.socketpair()
        theirs.setblocking(False)
        self.peers.append(theirs)
        chosen = self.server.sections if sections == "both" else [self.server.sections[0]]
        return self.server.listeners.accept_peer(ours, ("127.0.0.1", 40000), chosen), theirs

    def until(self, predicate) -> None:
        assert self.reactor.run_until(predicate, timeout=WAIT)

    def status(self) -> Status:
        return self.server.status()

    def peer(self, section: str, name: str):
        found = self.status().section(section)
        assert found is not None
        return next(p for p in found.peers if p.name == name)

    def close(self) -> None:
        self.server.stop()
        self.reactor.run_until(lambda: not self.server.registry.connections, timeout=WAIT)
        self.reactor.run_once(0)  # the last connection_lost callbacks
        for sock in self.peers:
            sock.close()
        self.reactor.close()


@pytest.fixture
def bed() -> Iterator[Bed]:
    b = Bed()
    yield b
    b.close()


def hello(callee: str, caller: str) -> bytes:
    return f"HAProxyS 2.1\n{callee}\n{caller} 1 1\n".encode()


def read_until(bed: Bed, sock: socket.socket, prefix: bytes) -> bytes:
    """What the aggregator sent to ``sock``, once it starts with ``prefix``."""
    data = bytearray()

    def arrived() -> bool:
        try:
            data.extend(sock.recv(65536))
        except BlockingIOError:
            pass
        return len(data) >= len(prefix)

    bed.until(arrived)
    assert data.startswith(prefix), bytes(data)
    return bytes(data)


def test_a_shared_address_sniffs_the_hello_then_establishes_in_the_named_section(bed: Bed) -> None:
    conn, theirs = bed.accept()
    bed.until(lambda: conn.started)
    assert isinstance(conn.stage, Sniffing)
    theirs.sendall(hello("OTHER", "C"))
    bed.until(lambda: isinstance(conn.stage, PeerLink))
    assert conn.stage.section.name == "other" and conn.stage.peer.name == "C"
    read_until(bed, theirs, b"200\n")
    c = bed.peer("other", "C")
    assert c.established and c.address == "unix" and not c.tls
    assert c.last_hello == bed.clock.wall() and bed.peer("agg", "A").state is None


def test_one_section_starts_the_handshake_at_once_and_the_status_tracks_it(bed: Bed) -> None:
    conn, theirs = bed.accept(sections="agg")
    bed.until(lambda: conn.started)
    assert isinstance(conn.stage, Handshaking)
    assert bed.peer("agg", "A").state is None  # not a peer's link before its hello
    theirs.sendall(hello("AGGR", "A"))
    bed.until(lambda: bed.peer("agg", "A").established)
    a = bed.peer("agg", "A")
    assert a.connected and not a.synced and a.traffic.bytes_in == len(hello("AGGR", "A"))
    assert bed.status().sections[0].peers[1].state is None  # B: idle


def test_a_refused_hello_closes_and_leaves_no_link(bed: Bed) -> None:
    conn, theirs = bed.accept(sections="agg")
    theirs.sendall(hello("AGGR", "NOBODY"))
    bed.until(lambda: conn not in bed.server.registry.connections and conn.started)
    read_until(bed, theirs, b"504\n")
    assert bed.server.registry.established == {}


def test_the_newest_session_of_a_peer_replaces_the_older(bed: Bed) -> None:
    first, theirs1 = bed.accept(sections="agg")
    theirs1.sendall(hello("AGGR", "A"))
    bed.until(lambda: isinstance(first.stage, PeerLink))
    second, theirs2 = bed.accept(sections="agg")
    theirs2.sendall(hello("AGGR", "A"))
    bed.until(lambda: isinstance(second.stage, PeerLink) and first not in bed.server.registry.connections)
    assert bed.server.registry.established[("agg", "A")] is second.stage
    assert first.stage.session.state is State.CLOSED


def test_traffic_survives_the_session_and_the_peer_goes_idle(bed: Bed) -> None:
    conn, theirs = bed.accept(sections="agg")
    theirs.sendall(hello("AGGR", "A"))
    bed.until(lambda: bed.peer("agg", "A").established)
    hello_at = bed.peer("agg", "A").last_hello
    theirs.shutdown(socket.SHUT_WR)
    bed.until(lambda: not bed.server.registry.connections)
    a = bed.peer("agg", "A")
    assert a.state is None and a.last_hello == hello_at
    assert a.traffic.bytes_in == len(hello("AGGR", "A")) and a.traffic.bytes_out > 0


def test_no_hello_within_the_handshake_timeout_on_the_manual_clock(bed: Bed) -> None:
    conn, _ = bed.accept()
    bed.until(lambda: isinstance(conn.stage, Sniffing))
    bed.clock.advance(HANDSHAKE_TIMEOUT - 0.5)
    bed.reactor.run_once(0)
    assert conn in bed.server.registry.connections
    bed.clock.advance(1.0)
    bed.until(lambda: conn not in bed.server.registry.connections)


def test_clear_table_is_a_command_that_pushes_zeros_to_the_established_peers(bed: Bed) -> None:
    conn, theirs = bed.accept(sections="agg")
    theirs.sendall(hello("AGGR", "A"))
    bed.until(lambda: bed.peer("agg", "A").established)
    section = bed.server.sections[0]
    definition = TableDefinition(1, b"mytable.local", 6, 33, 1 << 9, 60_000, ())
    route = section.route(section.peer("A"), definition)
    assert route.table is not None and route.table.mode is TableMode.AGGREGATE
    table = route.table
    for key in (b"alice", b"bob"):
        table.apply(table.stripe_of(key), 0, table.fields, [(key, (3,), None)], bed.clock.now_ms())
    assert bed.server.clear_table(ClearTable("agg", b"nope")) == 0
    assert bed.server.clear_table(ClearTable("agg", b"mytable.aggr", b"alice")) == 1
    bed.until(lambda: bed.peer("agg", "A").sent.get(b"mytable.aggr") is not None)
    assert bed.peer("agg", "A").sent[b"mytable.aggr"].last_pushed == 1  # alice, as zeros expiring at once
    assert len(table) == 1 and bed.status().section("agg").table(b"mytable.aggr").entries == 1
