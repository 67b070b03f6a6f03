"""Issue 14: our own delays never count against a peer.

A long loop turn (a teach of a big table, say) must not make the aggregator
close sessions as "peer silent" while their bytes wait unread in our sockets.
The session stays sans-IO: the link tells it (``poll(now, data_pending=...)``)
when the socket holds unread bytes, which it peeks only when a verdict is due.

The server tests run a real ``Server`` on a ``ManualClock``: a stalled loop is
a callback that moves the clock on by 50 s in the turn where the session tick
is due, after the peer wrote; socketpairs, no worker threads, no sleeps.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from stktagg.links import Handshaking, Sniffing
from stktagg.peerlink import PeerLink
from stktagg.server import SESSION_TICK
from stktagg.session import HANDSHAKE_TIMEOUT, SILENCE_TIMEOUT, Closed, PeerSession, Role, State
from stktagg.wire import Control, ControlType, MessageEncoder
from test_server_parts import Bed, hello, read_until

pytestmark = pytest.mark.usefixtures("no_fd_leak")

HEARTBEAT = MessageEncoder().encode(Control(ControlType.HEARTBEAT))
STALL = 50.0


@pytest.fixture
def bed() -> Iterator[Bed]:
    b = Bed()
    yield b
    b.close()


def established(bed: Bed) -> tuple[PeerLink, socket.socket]:
    conn, theirs = bed.accept(sections="agg")
    theirs.sendall(hello("AGGR", "A"))
    bed.until(lambda: isinstance(conn.stage, PeerLink))
    read_until(bed, theirs, b"200\n")
    return conn.stage, theirs


def stall_during_the_next_tick(bed: Bed, theirs: socket.socket, data: bytes | None) -> None:
    """In the turn of the next session tick, before it: the peer writes ``data``
    (None: nothing; b"": it closes) and the loop is busy for STALL seconds."""

    def busy() -> None:
        if data:
            theirs.sendall(data)
        elif data == b"":
            theirs.shutdown(socket.SHUT_WR)
        bed.clock.advance(STALL)

    bed.reactor.call_later(SESSION_TICK / 2, busy)
    bed.clock.advance(SESSION_TICK)  # busy and the tick are due in the same turn, busy first
    bed.reactor.run_once(0)


class TestSessionVerdict:
    """The sans-IO rule: ``data_pending`` postpones the verdict, nothing else changes."""

    def session(self) -> PeerSession:
        session = PeerSession(Role.ACCEPTING, "AGGR", 0.0, is_declared=lambda name: name == "A")
        session.receive_data(hello("AGGR", "A"), 0.0)
        session.data_to_send()
        return session

    def test_a_silent_peer_whose_bytes_wait_unread_is_not_closed(self) -> None:
        session = self.session()
        late = SILENCE_TIMEOUT + STALL
        assert session.timed_out(late)
        assert session.poll(late, data_pending=True) == []
        assert session.state is State.ESTABLISHED
        session.receive_data(HEARTBEAT, late)  # the read, once the loop is back
        assert not session.timed_out(late + 0.1) and session.poll(late + 0.1) == []
        assert session.stats.heartbeats_in == 1

    def test_a_silent_peer_is_still_closed_when_nothing_waits(self) -> None:
        session = self.session()
        assert session.poll(SILENCE_TIMEOUT - 0.1) == [] and not session.timed_out(SILENCE_TIMEOUT - 0.1)
        assert session.poll(SILENCE_TIMEOUT, data_pending=False) == [Closed("peer silent for 5 s")]

    def test_the_heartbeat_goes_out_while_the_verdict_waits(self) -> None:
        session = self.session()
        session.poll(SILENCE_TIMEOUT + STALL, data_pending=True)
        assert session.data_to_send() == HEARTBEAT

    def test_the_handshake_timeout_waits_for_unread_bytes_too(self) -> None:
        session = PeerSession(Role.ACCEPTING, "AGGR", 0.0, is_declared=lambda name: name == "A")
        assert session.timed_out(HANDSHAKE_TIMEOUT + STALL)
        assert session.poll(HANDSHAKE_TIMEOUT + STALL, data_pending=True) == []
        session.receive_data(hello("AGGR", "A"), HANDSHAKE_TIMEOUT + STALL)
        assert session.state is State.ESTABLISHED

    def test_a_closed_session_has_no_verdict_due(self) -> None:
        session = self.session()
        session.close()
        assert not session.timed_out(SILENCE_TIMEOUT * 10)


class TestStalledLoop:
    def test_a_peer_whose_data_waits_unread_through_a_stall_is_not_closed_and_is_read(self, bed: Bed) -> None:
        link, theirs = established(bed)
        stall_during_the_next_tick(bed, theirs, HEARTBEAT)
        assert link.session.state is State.ESTABLISHED  # the tick ran, after the stall
        bed.until(lambda: link.session.stats.heartbeats_in == 1)  # the next turn reads it
        assert link.session.state is State.ESTABLISHED
        assert bed.server.registry.established[("agg", "A")] is link
        bed.clock.advance(SESSION_TICK)
        bed.reactor.run_once(0)
        assert link.session.state is State.ESTABLISHED

    def test_a_peer_silent_through_the_stall_is_still_closed(self, bed: Bed) -> None:
        link, theirs = established(bed)
        stall_during_the_next_tick(bed, theirs, None)
        assert link.session.state is State.CLOSED
        assert link.session.close_reason == "peer silent for 5 s"

    def test_a_peer_that_closed_during_the_stall_is_closed_for_that_not_for_silence(self, bed: Bed) -> None:
        link, theirs = established(bed)
        stall_during_the_next_tick(bed, theirs, b"")
        assert link.session.state is State.ESTABLISHED  # the end of stream waits unread
        bed.until(lambda: link.session.state is State.CLOSED)
        assert link.session.close_reason == "connection closed by peer"

    def test_a_hello_that_waits_unread_through_a_stall_is_answered(self, bed: Bed) -> None:
        conn, theirs = bed.accept(sections="agg")
        bed.until(lambda: isinstance(conn.stage, Handshaking))

        def busy() -> None:
            theirs.sendall(hello("AGGR", "A"))
            bed.clock.advance(HANDSHAKE_TIMEOUT + STALL)

        bed.reactor.call_later(SESSION_TICK / 2, busy)
        bed.clock.advance(SESSION_TICK)
        bed.reactor.run_once(0)
        assert conn in bed.server.registry.connections
        bed.until(lambda: isinstance(conn.stage, PeerLink))
        read_until(bed, theirs, b"200\n")

    def test_a_sniffed_connection_whose_hello_waits_unread_is_not_dropped(self, bed: Bed) -> None:
        conn, theirs = bed.accept()
        bed.until(lambda: isinstance(conn.stage, Sniffing))

        def busy() -> None:
            theirs.sendall(hello("OTHER", "C"))
            bed.clock.advance(HANDSHAKE_TIMEOUT + STALL)

        bed.reactor.call_later(SESSION_TICK / 2, busy)
        bed.clock.advance(SESSION_TICK)
        bed.reactor.run_once(0)
        assert conn in bed.server.registry.connections and not conn.transport.closed
        bed.until(lambda: isinstance(conn.stage, PeerLink))
        assert conn.stage.section.name == "other"


class TestPeek:
    def test_has_unread_peeks_without_consuming(self, bed: Bed) -> None:
        link, theirs = established(bed)
        transport = link.transport
        assert not transport.has_unread()
        theirs.sendall(HEARTBEAT)
        assert transport.has_unread() and transport.has_unread()
        bed.until(lambda: link.session.stats.heartbeats_in == 1)
        assert not transport.has_unread()
