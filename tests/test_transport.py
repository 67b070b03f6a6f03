"""StreamTransport, Listener and connect over real loopback and unix sockets.

Synchronisation is always ``reactor.run_until(predicate, timeout)``, never a
sleep. Every test checks that no file descriptor leaks.

The connect timeout is tested for real, without a non-routable address: a
listener with ``backlog=0`` that never accepts holds one connection in its
accept queue, and Linux then drops further SYNs (the accept queue is full),
so the next connect stays in SYN_SENT until our timer fires. The test
connects until one attempt times out, so it does not depend on exactly how
many connections the kernel queues.
"""

from __future__ import annotations

import hashlib
import logging
import os
import resource
import socket
import stat
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from stktagg.loop import Reactor
from stktagg.connect import PendingConnect, connect
from stktagg.transport import Listener, StreamTransport, TransportError, ip_family

#: The deadline of every wait (normally milliseconds; generous for a loaded machine).
TIMEOUT = 30.0


pytestmark = pytest.mark.usefixtures("no_fd_leak")


# -- helpers ------------------------------------------------------------------------


class Recorder:
    """A protocol that records what happens to it."""

    def __init__(self) -> None:
        self.transport: StreamTransport | None = None
        self.data = bytearray()
        self.events: list[str] = []
        self.exc: Exception | None = None

    def connection_made(self, transport: StreamTransport) -> None:
        self.events.append("made")
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.events[-1:] != ["data"]:
            self.events.append("data")
        self.data += data

    def eof_received(self) -> None:
        self.events.append("eof")

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append("lost")
        self.exc = exc

    def writable(self) -> None:
        self.events.append("writable")

    @property
    def lost(self) -> bool:
        return "lost" in self.events


class Echo(Recorder):
    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        assert self.transport is not None
        self.transport.write(data)


class HashingSink(Recorder):
    """Counts and hashes what it receives instead of keeping it."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.digest = hashlib.sha256()

    def data_received(self, data: bytes) -> None:
        self.count += len(data)
        self.digest.update(data)


HELLO = b"XORHELLO"


def xor(data: bytes, key: int = 0x5A) -> bytes:
    return bytes(b ^ key for b in data)


class XorLayer:
    """A toy Layer: a HELLO exchange as handshake, then XOR both ways."""

    def __init__(self, client: bool) -> None:
        self.client = client
        self.done = False
        self.hello_sent = False
        self.received = 0
        self._pending = bytearray()

    def feed_incoming(self, data: bytes) -> tuple[bytes, bytes]:
        self.received += len(data)
        out = b""
        if self.client and not self.hello_sent:
            self.hello_sent = True
            out = HELLO
        if self.done:
            return xor(data), out
        self._pending += data
        if len(self._pending) < len(HELLO):
            return b"", out
        if self._pending[:len(HELLO)] != HELLO:
            raise ValueError("bad hello")
        rest = bytes(self._pending[len(HELLO):])
        self._pending.clear()
        self.done = True
        if not self.client:
            out += HELLO
        return xor(rest), out

    def feed_outgoing(self, data: bytes) -> bytes:
        assert self.done, "the transport fed application data before the handshake"
        return xor(data)

    def handshake_done(self) -> bool:
        return self.done


class Net:
    """Owns everything a test opens and closes it all, then the reactor."""

    def __init__(self) -> None:
        self.reactor = Reactor()
        self._owned: list[Any] = []

    def own(self, obj: Any) -> Any:
        self._owned.append(obj)
        return obj

    def run_until(self, predicate: Callable[[], object]) -> bool:
        return self.reactor.run_until(lambda: bool(predicate()), timeout=TIMEOUT)

    def serve(self, factory: Callable[[], Recorder], address: tuple[str, int] | str = ("127.0.0.1", 0),
              layer: Callable[[], XorLayer] | None = None, **kwargs: Any) -> tuple[Listener, list[Recorder]]:
        accepted: list[Recorder] = []

        def on_accept(sock: socket.socket, addr: object) -> None:
            protocol = factory()
            protocol.peer_address = addr  # type: ignore[attr-defined]
            self.own(StreamTransport(self.reactor, sock, protocol,
                                     layer=layer() if layer else None))
            accepted.append(protocol)

        return self.own(Listener(self.reactor, address, on_accept, **kwargs)), accepted

    def dial(self, address: tuple[str, int], protocol: Recorder, *, layer: XorLayer | None = None,
             source: tuple[str, int] | None = None, **kwargs: Any) -> None:
        def on_connected(sock: socket.socket) -> None:
            self.own(StreamTransport(self.reactor, sock, protocol, layer=layer, **kwargs))

        self.own(connect(self.reactor, address, on_connected, pytest.fail, source=source))

    def pair(self, server: Callable[[], Recorder] = Recorder, client: Recorder | None = None,
             **kwargs: Any) -> tuple[Recorder, Recorder]:
        listener, accepted = self.serve(server)
        client = client if client is not None else Recorder()
        self.dial(listener.sockname, client, **kwargs)
        assert self.run_until(lambda: client.transport and accepted and accepted[0].transport)
        return client, accepted[0]

    def raw_client(self, address: Any, family: int = socket.AF_INET) -> socket.socket:
        sock = self.own(socket.socket(family, socket.SOCK_STREAM))
        sock.connect(address)  # loopback/unix: completes through the backlog
        sock.setblocking(False)
        return sock

    def close(self) -> None:
        for obj in reversed(self._owned):
            if isinstance(obj, StreamTransport):
                obj.abort()
            elif isinstance(obj, PendingConnect):
                obj.cancel()
            else:
                obj.close()
        self.reactor.close()


@pytest.fixture
def net() -> Iterator[Net]:
    n = Net()
    yield n
    n.close()


def recv_into(sock: socket.socket, buf: bytearray) -> bytearray:
    """Append whatever ``sock`` has ready (non-blocking) to ``buf``."""
    try:
        while chunk := sock.recv(65536):
            buf += chunk
    except BlockingIOError:
        pass
    return buf


# -- StreamTransport ---------------------------------------------------------------


class TestStreamTransport:
    def test_echo_through_listener_and_connect(self, net: Net) -> None:
        client, server = net.pair(server=Echo)
        assert client.transport is not None and server.transport is not None
        assert client.transport.peername == server.transport.sockname
        client.transport.write(b"hello, ")
        client.transport.write(bytearray(b"world"))
        client.transport.write(memoryview(b"!"))
        assert net.run_until(lambda: client.data == b"hello, world!")
        assert server.data == b"hello, world!"
        assert client.events == ["made", "data"]

    def test_large_write_is_buffered_and_writer_registered_only_while_needed(self, net: Net) -> None:
        client, server = net.pair(server=HashingSink)
        transport = client.transport
        assert transport is not None
        payload = bytes(range(256)) * (50 * 1024 * 1024 // 256)
        transport.write(payload)
        assert transport.buffered() > 0
        assert transport.above_high_water()
        assert net.reactor.has_writer(transport.fileno())
        sink = server
        assert isinstance(sink, HashingSink)
        assert net.run_until(lambda: sink.count == len(payload))
        assert sink.digest.digest() == hashlib.sha256(payload).digest()
        assert transport.buffered() == 0
        assert not transport.above_high_water()
        assert not net.reactor.has_writer(transport.fileno())
        assert net.reactor.has_reader(transport.fileno())
        assert client.events.count("writable") == 1

    def test_protocol_without_writable_hook(self, net: Net) -> None:
        class Minimal:
            transport: StreamTransport | None = None

            def connection_made(self, transport: StreamTransport) -> None:
                self.transport = transport

            def data_received(self, data: bytes) -> None: ...
            def eof_received(self) -> None: ...
            def connection_lost(self, exc: Exception | None) -> None: ...

        minimal = Minimal()
        _, server = net.pair(server=HashingSink, client=minimal,  # type: ignore[arg-type]
                             high_water=1024, low_water=0)
        assert minimal.transport is not None
        minimal.transport.write(b"m" * (8 * 1024 * 1024))
        assert minimal.transport.above_high_water()
        assert isinstance(server, HashingSink)
        assert net.run_until(lambda: server.count == 8 * 1024 * 1024)
        assert not minimal.transport.above_high_water()

    def test_queued_bytearray_is_copied(self, net: Net) -> None:
        client, server = net.pair(server=HashingSink)
        transport = client.transport
        assert transport is not None
        filler = b"f" * (16 * 1024 * 1024)
        transport.write(filler)
        assert transport.buffered() > 0  # so the next write is queued, not sent
        reused = bytearray(b"original")
        transport.write(reused)
        reused[:] = b"CLOBBERED"
        sink = server
        assert isinstance(sink, HashingSink)
        assert net.run_until(lambda: sink.count == len(filler) + len(b"original"))
        assert sink.digest.digest() == hashlib.sha256(filler + b"original").digest()

    def test_peer_close_gives_eof_then_one_connection_lost(self, net: Net) -> None:
        client, server = net.pair()
        assert client.transport is not None
        client.transport.close()
        assert client.transport.closed
        assert net.run_until(lambda: server.lost and client.lost)
        for _ in range(3):
            net.reactor.run_once(0)
        assert server.events == ["made", "eof", "lost"]
        assert client.events == ["made", "lost"]
        assert server.exc is None and client.exc is None

    def test_eof_from_raw_peer_closes_our_side(self, net: Net) -> None:
        listener, accepted = net.serve(Recorder)
        raw = net.raw_client(listener.sockname)
        assert net.run_until(lambda: accepted and accepted[0].transport)
        raw.sendall(b"last words")
        raw.shutdown(socket.SHUT_WR)
        assert net.run_until(lambda: accepted[0].lost)
        assert accepted[0].events == ["made", "data", "eof", "lost"]
        assert accepted[0].data == b"last words"
        raw.setblocking(True)
        assert raw.recv(10) == b""  # we closed too

    def test_close_flushes_the_buffer_first(self, net: Net) -> None:
        client, server = net.pair(server=HashingSink)
        assert client.transport is not None
        payload = os.urandom(8 * 1024 * 1024)
        client.transport.write(payload)
        assert client.transport.buffered() > 0
        client.transport.close()
        client.transport.write(b"ignored after close")
        assert net.run_until(lambda: server.lost)
        assert isinstance(server, HashingSink)
        assert server.count == len(payload)
        assert server.digest.digest() == hashlib.sha256(payload).digest()
        assert client.lost and client.exc is None

    def test_request_writable_calls_back_on_a_later_turn_when_the_queue_is_small(self, net: Net) -> None:
        client, _ = net.pair(server=HashingSink)
        transport = client.transport
        assert transport is not None
        transport.request_writable(1024)
        assert "writable" not in client.events  # never from inside the call
        assert net.run_until(lambda: "writable" in client.events)
        for _ in range(3):
            net.reactor.run_once(0)
        assert client.events.count("writable") == 1  # one call per request

    def test_request_writable_waits_for_the_queue_to_drain_to_the_mark(self, net: Net) -> None:
        class Measuring(Recorder):
            queued_then: list[int] = []

            def writable(self) -> None:
                super().writable()
                assert self.transport is not None
                self.queued_then.append(self.transport.buffered())

        client = Measuring()
        _, server = net.pair(server=HashingSink, client=client, high_water=64 * 1024 * 1024)
        transport = client.transport
        assert transport is not None and isinstance(server, HashingSink)
        transport.write(b"w" * (8 * 1024 * 1024))
        assert transport.buffered() > 64 * 1024
        transport.request_writable(64 * 1024)
        assert net.run_until(lambda: client.queued_then)
        assert client.queued_then[0] <= 64 * 1024  # called once drained to the mark...
        assert net.run_until(lambda: server.count == 8 * 1024 * 1024)
        assert len(client.queued_then) == 1  # ...and only once

    def test_request_writable_on_a_closed_transport_calls_nothing(self, net: Net) -> None:
        client, _ = net.pair()
        transport = client.transport
        assert transport is not None
        transport.request_writable()
        transport.abort()
        assert net.run_until(lambda: client.lost)
        for _ in range(3):
            net.reactor.run_once(0)
        assert "writable" not in client.events

    def test_eof_received_returning_true_keeps_the_write_side_open(self, net: Net) -> None:
        class HalfOpen(Recorder):
            def eof_received(self) -> bool:
                super().eof_received()
                return True

        listener, accepted = net.serve(HalfOpen)
        raw = net.raw_client(listener.sockname)
        assert net.run_until(lambda: accepted and accepted[0].transport)
        raw.shutdown(socket.SHUT_WR)
        assert net.run_until(lambda: "eof" in accepted[0].events)
        transport = accepted[0].transport
        assert transport is not None and not transport.closed
        transport.write(b"answer after eof")
        transport.close()
        assert net.run_until(lambda: accepted[0].lost)
        raw.setblocking(True)
        assert raw.recv(100) == b"answer after eof" and raw.recv(10) == b""

    def test_abort_drops_buffer_and_reports_lost_from_the_loop(self, net: Net) -> None:
        client, server = net.pair()
        transport = client.transport
        assert transport is not None
        transport.write(b"x" * (16 * 1024 * 1024))
        transport.abort()
        assert not client.lost  # never re-entrant: reported on a later turn
        assert transport.buffered() == 0 and transport.fileno() == -1
        assert net.run_until(lambda: client.lost and server.lost)
        assert client.events == ["made", "lost"] and client.exc is None

    def test_connection_reset_reaches_connection_lost(self, net: Net) -> None:
        listener, accepted = net.serve(Recorder)
        raw = net.raw_client(listener.sockname)
        assert net.run_until(lambda: accepted and accepted[0].transport)
        # SO_LINGER with a zero timeout: close() sends a RST.
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        raw.close()
        assert net.run_until(lambda: accepted[0].lost)
        assert isinstance(accepted[0].exc, ConnectionResetError)

    def test_protocol_exception_aborts_with_that_exception(
            self, net: Net, caplog: pytest.LogCaptureFixture) -> None:
        class Faulty(Recorder):
            def data_received(self, data: bytes) -> None:
                raise RuntimeError("bug in protocol")

        client, server = net.pair(server=Faulty)
        assert client.transport is not None
        with caplog.at_level(logging.ERROR, logger="stktagg.transport"):
            client.transport.write(b"trigger")
            assert net.run_until(lambda: server.lost and client.lost)
        assert isinstance(server.exc, RuntimeError)
        assert any("bug in protocol" in r.exc_text for r in caplog.records if r.exc_text)

    def test_pause_and_resume_reading(self, net: Net) -> None:
        client, server = net.pair()
        assert client.transport is not None and server.transport is not None
        server.transport.pause_reading()
        client.transport.write(b"held back")
        for _ in range(5):
            net.reactor.run_once(0)
        assert server.data == b""
        server.transport.resume_reading()
        assert net.run_until(lambda: server.data == b"held back")

    def test_rejects_inverted_water_marks(self, net: Net) -> None:
        a, b = socket.socketpair()
        with a, b, pytest.raises(ValueError):
            StreamTransport(net.reactor, a, Recorder(), high_water=10, low_water=20)


# -- connect -------------------------------------------------------------------------


class TestConnect:
    def test_refused(self, net: Net) -> None:
        # Bound but not listening: the kernel answers the SYN with a RST.
        closed_port = net.own(socket.socket())
        closed_port.bind(("127.0.0.1", 0))
        errors: list[Exception] = []
        net.own(connect(net.reactor, closed_port.getsockname(), pytest.fail, errors.append))
        assert net.run_until(lambda: errors)
        assert isinstance(errors[0], ConnectionRefusedError)

    def test_timeout(self, net: Net) -> None:
        never_accepts = net.own(socket.socket())
        never_accepts.bind(("127.0.0.1", 0))
        never_accepts.listen(0)
        outcomes: list[object] = []
        for _ in range(16):
            before = len(outcomes)
            net.own(connect(net.reactor, never_accepts.getsockname(),
                            lambda s: outcomes.append(net.own(s)), outcomes.append, timeout=0.2))
            assert net.run_until(lambda: len(outcomes) > before)
            if isinstance(outcomes[-1], TimeoutError):
                break
        assert isinstance(outcomes[-1], TimeoutError), outcomes
        assert "timed out" in str(outcomes[-1])

    def test_source_address_is_bound(self, net: Net) -> None:
        listener, accepted = net.serve(Recorder)
        net.dial(listener.sockname, Recorder(), source=("127.0.0.2", 0))
        assert net.run_until(lambda: accepted)
        assert accepted[0].peer_address[0] == "127.0.0.2"  # type: ignore[attr-defined]

    def test_cancel_calls_nothing_and_closes_the_socket(self, net: Net) -> None:
        listener, _ = net.serve(Recorder)
        pending = connect(net.reactor, listener.sockname, pytest.fail, pytest.fail)
        pending.cancel()
        pending.cancel()  # idempotent
        assert pending.done
        for _ in range(3):
            net.reactor.run_once(0.01)

    def test_ipv6_loopback(self, net: Net) -> None:
        try:
            listener, accepted = net.serve(Echo, address=("::1", 0))
        except OSError:
            pytest.skip("no IPv6 loopback here")
        client = Recorder()
        net.dial(listener.sockname[:2], client)
        assert net.run_until(lambda: client.transport)
        assert client.transport is not None
        client.transport.write(b"v6")
        assert net.run_until(lambda: client.data == b"v6")

    def test_names_are_refused(self, net: Net) -> None:
        with pytest.raises(TransportError):
            connect(net.reactor, ("localhost", 80), pytest.fail, pytest.fail)
        assert ip_family("127.0.0.1") == socket.AF_INET
        assert ip_family("::1") == socket.AF_INET6


# -- Listener -----------------------------------------------------------------------


class TestListener:
    def test_unix_socket_mode(self, net: Net, tmp_path: Any) -> None:
        path = str(tmp_path / "cli.sock")
        listener, accepted = net.serve(Echo, address=path, unix_mode=0o600)
        st = os.stat(path)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
        raw = net.raw_client(path, socket.AF_UNIX)
        raw.sendall(b"ping")
        buf = bytearray()
        assert net.run_until(lambda: recv_into(raw, buf) == b"ping")
        assert listener.sockname == path

    def test_stale_unix_socket_is_replaced(self, net: Net, tmp_path: Any) -> None:
        path = str(tmp_path / "stale.sock")
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(path)
        stale.close()  # leaves the file behind, as a crashed daemon would
        os.chmod(path, 0o777)
        with pytest.raises(ConnectionRefusedError):
            with socket.socket(socket.AF_UNIX) as probe:
                probe.connect(path)
        # bind() would fail with EADDRINUSE had the file not been removed.
        listener, accepted = net.serve(Recorder, address=path)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        net.raw_client(path, socket.AF_UNIX)
        assert net.run_until(lambda: accepted)

    def test_regular_file_is_not_removed(self, net: Net, tmp_path: Any) -> None:
        path = tmp_path / "precious"
        path.write_text("keep me")
        with pytest.raises(TransportError):
            Listener(net.reactor, str(path), pytest.fail)
        assert path.read_text() == "keep me"

    def test_close_removes_its_own_socket_file_only(self, net: Net, tmp_path: Any) -> None:
        path = str(tmp_path / "a.sock")
        listener = Listener(net.reactor, path, pytest.fail)
        listener.close()
        listener.close()  # idempotent
        assert not os.path.exists(path)
        listener = Listener(net.reactor, path, pytest.fail)
        os.unlink(path)
        other = net.own(socket.socket(socket.AF_UNIX))
        other.bind(path)  # someone else's socket now lives at that path
        listener.close()
        assert os.path.exists(path)

    def test_emfile_pauses_accepting_then_resumes(
            self, net: Net, caplog: pytest.LogCaptureFixture) -> None:
        accepted: list[socket.socket] = []
        listener = net.own(Listener(net.reactor, ("127.0.0.1", 0),
                                    lambda s, a: accepted.append(net.own(s)), accept_retry_delay=0.05))
        net.raw_client(listener.sockname)
        probe = os.open("/dev/null", os.O_RDONLY)
        os.close(probe)  # probe is now the lowest free descriptor number
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        with caplog.at_level(logging.WARNING, logger="stktagg.transport"):
            resource.setrlimit(resource.RLIMIT_NOFILE, (probe, hard))
            try:
                paused = net.run_until(lambda: listener.paused)
            finally:
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            assert paused and accepted == []
            assert not net.reactor.has_reader(listener.fileno())
            assert net.run_until(lambda: accepted)
        assert not listener.paused
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "Too many open files" in warnings[0].getMessage()

    def test_accept_is_bounded_per_readiness(self, net: Net) -> None:
        accepted: list[socket.socket] = []
        listener = net.own(Listener(net.reactor, ("127.0.0.1", 0),
                                    lambda s, a: accepted.append(net.own(s)), backlog=200))
        for _ in range(100):
            net.raw_client(listener.sockname)
        net.reactor.run_once(TIMEOUT)
        assert len(accepted) == 64
        assert net.run_until(lambda: len(accepted) == 100)


# -- layers ---------------------------------------------------------------------------


class TestLayer:
    def test_data_is_transformed_both_ways_on_the_wire(self, net: Net) -> None:
        listener, accepted = net.serve(Recorder, layer=lambda: XorLayer(client=False))
        raw = net.raw_client(listener.sockname)
        raw.sendall(HELLO + xor(b"ping"))  # the end of the handshake and data together
        assert net.run_until(lambda: accepted and accepted[0].data == b"ping")
        server = accepted[0]
        assert server.events == ["made", "data"]
        assert server.transport is not None
        server.transport.write(b"pong")
        buf = bytearray()
        assert net.run_until(lambda: recv_into(raw, buf) == HELLO + xor(b"pong"))

    def test_connection_made_waits_for_the_handshake(self, net: Net) -> None:
        layers: list[XorLayer] = []

        def make_layer() -> XorLayer:
            layers.append(XorLayer(client=False))
            return layers[-1]

        listener, accepted = net.serve(Recorder, layer=make_layer)
        raw = net.raw_client(listener.sockname)
        raw.sendall(HELLO[:4])
        assert net.run_until(lambda: layers and layers[0].received == 4)
        assert accepted[0].events == []
        raw.sendall(HELLO[4:])
        assert net.run_until(lambda: accepted[0].events == ["made"])

    def test_writes_before_the_handshake_are_held(self, net: Net) -> None:
        a, b = socket.socketpair()
        net.own(b)
        b.setblocking(False)
        protocol = Recorder()
        transport = net.own(StreamTransport(net.reactor, a, protocol, layer=XorLayer(client=False)))
        transport.write(b"early")
        b.sendall(HELLO)
        buf = bytearray()
        assert net.run_until(lambda: recv_into(b, buf) == HELLO + xor(b"early"))
        assert protocol.events == ["made"]

    def test_layer_pair_echo(self, net: Net) -> None:
        listener, accepted = net.serve(Echo, layer=lambda: XorLayer(client=False))
        client = Recorder()
        net.dial(listener.sockname, client, layer=XorLayer(client=True))
        assert net.run_until(lambda: client.transport)
        assert client.transport is not None
        client.transport.write(b"secret")
        assert net.run_until(lambda: client.data == b"secret")
        assert accepted[0].data == b"secret"

    def test_eof_during_handshake_is_an_error_without_connection_made(self, net: Net) -> None:
        listener, accepted = net.serve(Recorder, layer=lambda: XorLayer(client=False))
        raw = net.raw_client(listener.sockname)
        raw.sendall(HELLO[:3])
        raw.shutdown(socket.SHUT_WR)
        assert net.run_until(lambda: accepted and accepted[0].lost)
        assert accepted[0].events == ["lost"]
        assert isinstance(accepted[0].exc, TransportError)

    def test_layer_error_aborts_the_connection(self, net: Net) -> None:
        listener, accepted = net.serve(Recorder, layer=lambda: XorLayer(client=False))
        raw = net.raw_client(listener.sockname)
        raw.sendall(b"NOTHELLO!")
        assert net.run_until(lambda: accepted and accepted[0].lost)
        assert isinstance(accepted[0].exc, ValueError)


def test_tcp_connections_get_a_bounded_receive_buffer() -> None:
    """Without a bound Linux grows it to tcp_rmem's maximum (32 MB here): seconds of updates."""
    from stktagg.transport import RECEIVE_BUFFER, tune_tcp

    with socket.socket() as sock:
        tune_tcp(sock)
        assert RECEIVE_BUFFER <= sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) <= 2 * RECEIVE_BUFFER
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
