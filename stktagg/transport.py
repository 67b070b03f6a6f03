"""Non-blocking stream sockets on a reactor: transports and listeners (``connect``: connects).

Imports ``errors`` only. It knows nothing about peers or sessions: it moves
bytes between a socket and a ``Protocol`` object, and the application wires
the two together. The reactor is any object with the ``EventLoop`` methods
(``stktagg.loop.Reactor`` in production).

Contract
--------
- **Protocol callbacks** are ``connection_made`` (once, first), then any
  number of ``data_received``, then maybe ``eof_received``, and finally
  ``connection_lost`` exactly once. ``connection_lost`` always comes from a
  ``call_soon``, never from inside ``write()``, ``close()`` or ``abort()``,
  so a protocol never sees itself re-entered. If ``connection_made`` never
  ran (closed before start, or a layer handshake that never finished),
  ``connection_lost`` is still called, so the owner always learns the end.
- A protocol callback that raises an ``Exception`` is logged and the
  connection is aborted with that exception passed to ``connection_lost``.
- **Writes** go to the socket at once; what the kernel does not take is
  queued (zero-copy for immutable data) and the writer is registered only
  while something is queued. ``close()`` stops reading and closes once the
  queue drains; ``abort()`` closes now and drops the queue.
- **Errors**: ``BlockingIOError``/``InterruptedError`` mean "retry on the
  next readiness"; any other ``OSError`` aborts the connection and reaches
  ``connection_lost(exc)``.
- **Layers** (TLS later) sit between the socket and the protocol: received
  bytes go through ``feed_incoming``, application writes through
  ``feed_outgoing``, and ``connection_made`` waits for ``handshake_done()``.
- **Listener** accepts at most ``ACCEPT_BATCH`` connections per readiness
  and pauses on a timer when the process runs out of descriptors or memory.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import socket
import stat
import typing
from collections import deque
from collections.abc import Callable
from typing import Any

from .errors import StktaggError

__all__ = [
    "ACCEPT_BATCH", "ACCEPT_RETRY_DELAY", "HIGH_WATER", "LOW_WATER", "READ_SIZE", "RECEIVE_BUFFER",
    "Cancellable", "EventLoop", "Layer", "Listener", "Protocol", "StreamTransport",
    "TransportError", "ip_family", "tune_tcp",
]

log = logging.getLogger(__name__)

#: Bytes read per readiness event: a burst of updates from a peer, but one read
#: must fit the loop's turn budget (issue 14): 64 kB is ~6,000 updates, ~20 ms.
READ_SIZE = 64 * 1024
#: SO_RCVBUF of TCP connections (the kernel doubles it for its bookkeeping).
#: Measured at saturation on loopback (4 peers, issue 15): 64 kB holds about
#: 94 kB, 4,000 updates; 32 kB stalled the senders (our CPU at 0.78 core, on
#: loopback's 64 kB segments); 128 and 256 kB only made probes wait longer.
RECEIVE_BUFFER = 64 * 1024
#: Queued bytes above which ``above_high_water()`` is true...
HIGH_WATER = 4 * 1024 * 1024
#: ...and below which the protocol's ``writable()`` hook is called again.
LOW_WATER = 1024 * 1024
#: Buffers handed to one ``sendmsg`` (far below Linux's IOV_MAX of 1024).
SENDMSG_MAX_BUFFERS = 64
#: Bytes handed to one ``sendmsg``, more than a loopback socket takes at once.
#: PyPy's ``sendmsg`` copies each buffer whole: 50 ms for a 50 MB view (CPython:
#: 0.19 ms), so an uncapped large queue made loop turns of 1-2 s.
SENDMSG_MAX_BYTES = 256 * 1024
#: Connections accepted per readiness event, so that a connection storm
#: cannot starve the sockets already established.
ACCEPT_BATCH = 64
#: Pause before accepting again after EMFILE/ENFILE/ENOBUFS/ENOMEM: retrying
#: at once would spin, since the pending connection keeps the listener ready.
ACCEPT_RETRY_DELAY = 1.0

#: accept() errors that mean "out of resources": back off, then retry.
_ACCEPT_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: accept() errors about one connection that died in the queue: skip it.
_ACCEPT_SKIP_ERRNOS = frozenset({errno.ECONNABORTED, errno.EPROTO})


class TransportError(StktaggError):
    """A listener or connection could not be set up as asked."""


class Cancellable(typing.Protocol):
    """What the event loop's ``call_*`` methods return."""

    def cancel(self) -> None: ...


class EventLoop(typing.Protocol):
    """The part of ``stktagg.loop.Reactor`` this module uses."""

    def call_soon(self, callback: Callable[..., object], *args: Any) -> Cancellable: ...
    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> Cancellable: ...
    def add_reader(self, fileobj: Any, callback: Callable[[], object]) -> None: ...
    def add_writer(self, fileobj: Any, callback: Callable[[], object]) -> None: ...
    def remove_reader(self, fileobj: Any) -> bool: ...
    def remove_writer(self, fileobj: Any) -> bool: ...


class Protocol(typing.Protocol):
    """What the application plugs into a ``StreamTransport``."""

    def connection_made(self, transport: StreamTransport) -> None:
        """The connection is ready (after the layer handshake, if any)."""

    def data_received(self, data: bytes) -> None:
        """Application bytes arrived."""

    def eof_received(self) -> bool | None:
        """The peer closed its write side; the transport closes then, unless this returns True."""

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection is closed (``exc`` is None for a clean close)."""

    def writable(self) -> None:
        """Optional: the write queue fell to the low-water mark after having
        been above the high-water mark, or as asked (``request_writable``). Called only if present."""


class Layer(typing.Protocol):
    """A byte-transforming layer between socket and protocol (the TLS seam).

    ``feed_incoming(b"")`` is called once when the transport starts, so a
    client-side layer can emit its first handshake bytes.
    """

    def feed_incoming(self, data: bytes) -> tuple[bytes, bytes]:
        """Network bytes in -> (application bytes, network bytes to send)."""

    def feed_outgoing(self, data: bytes) -> bytes:
        """Application bytes -> network bytes to send."""

    def handshake_done(self) -> bool:
        """True once application data may flow."""


def ip_family(host: str) -> socket.AddressFamily:
    """The address family of an IP literal, without any name resolution.

    Raises:
        TransportError: ``host`` is not an IPv4 or IPv6 literal.
    """
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except (OSError, ValueError):
            continue
        return family
    raise TransportError(f"{host!r} is not an IPv4 or IPv6 address literal")


def tune_tcp(sock: socket.socket) -> None:
    # Peers messages are small and latency matters more than packet count. A
    # bounded receive buffer (Linux would grow it to tcp_rmem's maximum, 32 MB
    # here): bytes waiting in it are updates as old as the buffer is long, so
    # under overload a peer waits on TCP instead of queueing seconds (issue 15).
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)


def _address_of(query: Callable[[], Any]) -> Any:
    try:
        return query()
    except OSError:
        return None  # e.g. ENOTCONN: the peer is already gone


class StreamTransport:
    """A connected non-blocking stream socket driven by an event loop.

    The transport takes ownership of ``sock`` (it closes it). It starts on
    the next loop turn: the layer (if any) is primed, reading begins, and
    ``connection_made`` is called once the layer's handshake is done.

    Args:
        reactor: the event loop.
        sock: a connected stream socket (it is made non-blocking).
        protocol: receives the callbacks described in ``Protocol``.
        read_size: most bytes read per readiness event.
        high_water: queued bytes above which ``above_high_water()`` is true.
        low_water: queued bytes at or below which ``writable()`` is called
            again after the queue went above ``high_water``.
        layer: an optional ``Layer`` (TLS) between socket and protocol.
    """

    def __init__(self, reactor: EventLoop, sock: socket.socket, protocol: Protocol, *,
                 read_size: int = READ_SIZE, high_water: int = HIGH_WATER,
                 low_water: int = LOW_WATER, layer: Layer | None = None) -> None:
        if not 0 <= low_water <= high_water:
            raise ValueError(f"need 0 <= low_water <= high_water, got {low_water}, {high_water}")
        sock.setblocking(False)
        self._reactor = reactor
        self._sock: socket.socket | None = sock
        self._protocol = protocol
        self._layer = layer
        self._read_size = read_size
        self._high_water = high_water
        self._low_water = low_water
        self._buffer: deque[memoryview] = deque()
        self._buffer_size = 0
        # Application writes made before the layer handshake finished.
        self._pending_app = bytearray()
        self._started = False
        self._made = False
        self._paused = False
        self._eof = False
        self._closing = False
        self._above_high = False
        self._writable_wanted: int | None = None  # request_writable()'s mark, until called
        self._peername = _address_of(sock.getpeername)
        self._sockname = _address_of(sock.getsockname)
        reactor.call_soon(self._start)

    # -- public API -----------------------------------------------------------

    @property
    def peername(self) -> Any:
        """The remote address (None if it could not be read)."""
        return self._peername

    @property
    def sockname(self) -> Any:
        """The local address (None if it could not be read)."""
        return self._sockname

    @property
    def closed(self) -> bool:
        """True once ``close()`` or ``abort()`` was called, or the connection
        failed. Writes are then ignored; the socket may still be flushing."""
        return self._closing

    def fileno(self) -> int:
        """The socket's descriptor (-1 once closed)."""
        return self._sock.fileno() if self._sock is not None else -1

    def buffered(self) -> int:
        """Network bytes queued and not yet accepted by the kernel."""
        return self._buffer_size

    def has_unread(self) -> bool:
        """Whether bytes, an end of stream or an error wait unread in the socket (peeked, not consumed)."""
        if self._sock is None or self._eof:
            return False
        try:
            self._sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True  # an error: the next read reports it
        return True  # bytes, or b"" (the end of stream)

    def above_high_water(self) -> bool:
        """True while more than ``high_water`` bytes are queued."""
        return self._buffer_size > self._high_water

    def request_writable(self, low_water: int | None = None) -> None:
        """One ``writable()`` call, on a later turn, once at most ``low_water`` (None: the mark) bytes are queued."""
        if not self._closing:
            self._writable_wanted = self._low_water if low_water is None else low_water
            if self._buffer_size <= self._writable_wanted:
                self._reactor.call_soon(self._maybe_call_writable)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data``, queueing what the socket does not take now.

        Ignored once the transport is closed. Errors are not raised here:
        they abort the connection and reach ``connection_lost``.
        """
        if self._closing:
            return
        view = memoryview(data).cast("B")
        if not view:
            return
        if self._layer is None:
            self._send_network(view)
        elif not self._made:
            self._pending_app += view  # the layer cannot take data yet
        else:
            self._write_through_layer(bytes(view))

    def close(self) -> None:
        """Stop reading; close once the write queue has drained.

        Best effort and non-blocking: if the peer never reads, the queue
        never drains; call ``abort()`` to give up.
        """
        if self._closing:
            return
        self._closing = True
        self._pending_app.clear()
        if self._sock is not None:
            self._reactor.remove_reader(self._sock)
        if not self._buffer:
            self._force_close(None)

    def abort(self) -> None:
        """Close at once, dropping the write queue."""
        self._closing = True
        self._force_close(None)

    def pause_reading(self) -> None:
        """Stop reading from the socket until ``resume_reading()``."""
        if self._paused:
            return
        self._paused = True
        if self._sock is not None:
            self._reactor.remove_reader(self._sock)

    def resume_reading(self) -> None:
        """Read from the socket again (no-op after EOF or close)."""
        if not self._paused:
            return
        self._paused = False
        self._maybe_start_reading()

    def __repr__(self) -> str:
        state = "closing" if self._closing else "open"
        return f"<StreamTransport fd={self.fileno()} peer={self._peername!r} {state} buffered={self._buffer_size}>"

    # -- starting and reading ---------------------------------------------------

    def _start(self) -> None:
        if self._closing:
            return
        self._started = True
        if self._layer is None:
            self._connection_made()
        else:
            self._feed_layer(b"")  # lets a TLS client send its ClientHello
        self._maybe_start_reading()

    def _maybe_start_reading(self) -> None:
        if self._started and not (self._paused or self._eof or self._closing):
            self._reactor.add_reader(self._sock, self._on_readable)

    def _connection_made(self) -> None:
        self._made = True
        if self._pending_app:
            data = bytes(self._pending_app)
            self._pending_app.clear()
            self._write_through_layer(data)
        if not self._closing:
            self._call_protocol(self._protocol.connection_made, self)

    def _on_readable(self) -> None:
        if self._sock is None:
            return
        try:
            data = self._sock.recv(self._read_size)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fatal(exc)
            return
        if not data:
            self._on_eof()
        elif self._layer is None:
            self._call_protocol(self._protocol.data_received, data)
        else:
            self._feed_layer(data)

    def _feed_layer(self, data: bytes) -> None:
        assert self._layer is not None
        try:
            app, net = self._layer.feed_incoming(data)
        except Exception as exc:  # a broken layer (bad TLS record) ends the connection
            self._fatal(exc)
            return
        self._send_network(net)
        if not self._made and not self._closing and self._layer.handshake_done():
            self._connection_made()
        # connection_made comes first, so bytes that arrived along with the
        # end of the handshake are delivered to a protocol that is ready.
        if app and self._made and not self._closing:
            self._call_protocol(self._protocol.data_received, app)

    def _on_eof(self) -> None:
        self._eof = True
        self._reactor.remove_reader(self._sock)
        if not self._made:
            self._fatal(TransportError("the peer closed the connection before the handshake completed"))
            return
        if self._call_protocol(self._protocol.eof_received) is not True:
            self.close()  # (a no-op if the callback failed: it aborted)

    def _call_protocol(self, callback: Callable[..., object], *args: Any) -> object:
        try:
            return callback(*args)
        except Exception as exc:
            log.exception("%r: protocol callback %r failed; aborting", self, callback)
            self._force_close(exc)
            return None

    # -- writing ----------------------------------------------------------------

    def _write_through_layer(self, data: bytes) -> None:
        assert self._layer is not None
        try:
            net = self._layer.feed_outgoing(data)
        except Exception as exc:
            self._fatal(exc)
            return
        self._send_network(net)

    def _send_network(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        if not view or self._sock is None:
            return
        if not self._buffer:
            try:
                sent = self._sock.send(view)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                self._fatal(exc)
                return
            if sent == len(view):
                return
            view = view[sent:]
            self._reactor.add_writer(self._sock, self._on_writable)
        self._enqueue(view)

    def _enqueue(self, view: memoryview) -> None:
        if not view.readonly:
            # The caller may reuse its bytearray once write() returns.
            view = memoryview(bytes(view))
        self._buffer.append(view)
        self._buffer_size += len(view)
        if self._buffer_size > self._high_water:
            self._above_high = True

    def _on_writable(self) -> None:
        if self._sock is None:
            return
        while self._buffer:
            chunks, size = [], 0
            for chunk in itertools.islice(self._buffer, SENDMSG_MAX_BUFFERS):
                if size + len(chunk) >= SENDMSG_MAX_BYTES:  # slice the last view (no copy)
                    chunks.append(chunk[:SENDMSG_MAX_BYTES - size])
                    size = SENDMSG_MAX_BYTES
                    break
                chunks.append(chunk)
                size += len(chunk)
            try:
                sent = self._sock.sendmsg(chunks)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self._fatal(exc)
                return
            self._consume(sent)
            if sent < size:
                break  # the kernel buffer is full: wait for the next readiness
        if not self._buffer:
            self._reactor.remove_writer(self._sock)
            if self._closing:
                self._force_close(None)
                return
        self._maybe_call_writable()

    def _consume(self, sent: int) -> None:
        self._buffer_size -= sent
        while sent:
            head = self._buffer[0]
            if len(head) > sent:
                self._buffer[0] = head[sent:]
                return
            sent -= len(head)
            self._buffer.popleft()

    def _maybe_call_writable(self) -> None:
        wanted = self._writable_wanted
        if wanted is not None and self._buffer_size <= wanted and not self._closing:
            self._writable_wanted = None
        elif self._above_high and self._buffer_size <= self._low_water:
            self._above_high = False
        else:
            return
        hook = getattr(self._protocol, "writable", None)
        if hook is not None:
            self._call_protocol(hook)

    # -- closing ----------------------------------------------------------------

    def _fatal(self, exc: Exception) -> None:
        log.debug("%r: connection failed: %r", self, exc)
        self._force_close(exc)

    def _force_close(self, exc: Exception | None) -> None:
        self._closing = True
        sock = self._sock
        if sock is None:
            return  # already closed: connection_lost is already scheduled
        self._sock = None
        self._reactor.remove_reader(sock)
        self._reactor.remove_writer(sock)
        self._buffer.clear()
        self._buffer_size = 0
        self._pending_app.clear()
        sock.close()
        self._reactor.call_soon(self._connection_lost, exc)

    def _connection_lost(self, exc: Exception | None) -> None:
        protocol, self._protocol, self._layer = self._protocol, None, None  # no cycle left (collector)
        protocol.connection_lost(exc)


class Listener:
    """A listening TCP or unix stream socket that hands out accepted sockets.

    Args:
        reactor: the event loop.
        address: ``(host, port)`` for TCP (an IPv4 or IPv6 literal; port 0
            picks a free port), or a filesystem path for a unix socket.
        on_accept: called as ``on_accept(sock, address)`` for each accepted
            connection; ``sock`` is non-blocking (TCP_NODELAY for TCP) and
            belongs to the callee.
        backlog: the ``listen()`` backlog.
        unix_mode: permissions of the unix socket file (None: leave umask's).
        reuse_address: set SO_REUSEADDR on a TCP socket.
        accept_retry_delay: pause after running out of descriptors or memory.

    Raises:
        TransportError: the host is not an IP literal, or the unix path
            exists and is not a socket.
        OSError: bind or listen failed.
    """

    def __init__(self, reactor: EventLoop, address: tuple[str, int] | str,
                 on_accept: Callable[[socket.socket, object], None], *, backlog: int = 128,
                 unix_mode: int | None = 0o600, reuse_address: bool = True,
                 accept_retry_delay: float = ACCEPT_RETRY_DELAY) -> None:
        self._reactor = reactor
        self._on_accept = on_accept
        self._retry_delay = accept_retry_delay
        self._retry_timer: Cancellable | None = None
        self._paused = False
        self._closed = False
        self._path: str | None = None
        self._file_id: tuple[int, int] | None = None  # (st_dev, st_ino) of our socket file
        if isinstance(address, str):
            self._sock = self._bind_unix(address, unix_mode)
        else:
            self._sock = self._bind_tcp(address, reuse_address)
        try:
            self._sock.setblocking(False)
            self._sock.listen(backlog)
        except BaseException:
            self.close()
            raise
        self._sockname = self._sock.getsockname()
        reactor.add_reader(self._sock, self._on_readable)

    @property
    def sockname(self) -> Any:
        """The bound address (the real port when 0 was asked for)."""
        return self._sockname

    @property
    def paused(self) -> bool:
        """True while accepting is paused after a resource error."""
        return self._paused

    def fileno(self) -> int:
        """The listening socket's descriptor (-1 once closed)."""
        return self._sock.fileno()

    def close(self) -> None:
        """Stop listening; remove the unix socket file if it is still ours."""
        if self._closed:
            return
        self._closed = True
        if self._retry_timer is not None:
            self._retry_timer.cancel()
            self._retry_timer = None
        self._reactor.remove_reader(self._sock)
        self._sock.close()
        self._unlink_if_ours()

    # -- binding ----------------------------------------------------------------

    @staticmethod
    def _bind_tcp(address: tuple[str, int], reuse_address: bool) -> socket.socket:
        host, port = address
        sock = socket.socket(ip_family(host), socket.SOCK_STREAM)
        try:
            if reuse_address:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
        except BaseException:
            sock.close()
            raise
        return sock

    def _bind_unix(self, path: str, mode: int | None) -> socket.socket:
        abstract = path.startswith("\0")  # Linux abstract namespace: no file
        if not abstract:
            _remove_stale_socket(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
            if not abstract:
                self._path = path
                st = os.lstat(path)
                self._file_id = (st.st_dev, st.st_ino)
                # Until listen() nobody can connect, so the umask-made
                # permissions between bind and chmod expose nothing.
                if mode is not None:
                    os.chmod(path, mode)
        except BaseException:
            sock.close()
            self._unlink_if_ours()
            raise
        return sock

    def _unlink_if_ours(self) -> None:
        if self._path is None or self._file_id is None:
            return
        try:
            st = os.lstat(self._path)
            # Another process may have replaced the file since: leave theirs.
            if (st.st_dev, st.st_ino) == self._file_id:
                os.unlink(self._path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            # Typically EACCES after privileges were dropped. Closing must
            # go on (shutdown closes every listener in turn), and a stale
            # file is replaced at the next start anyway.
            log.warning("cannot remove unix socket %s: %s", self._path, exc)

    # -- accepting ----------------------------------------------------------------

    def _on_readable(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, addr = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _ACCEPT_SKIP_ERRNOS:
                    continue
                self._pause(exc)
                return
            conn.setblocking(False)
            tune_tcp(conn)
            self._on_accept(conn, addr)
            if self._closed:
                return  # on_accept closed us (shutdown)

    def _pause(self, exc: OSError) -> None:
        # Stop reading the listener: the pending connection keeps it ready,
        # so retrying at once would spin. An unknown error pauses too, for
        # the same reason.
        self._paused = True
        self._reactor.remove_reader(self._sock)
        if exc.errno in _ACCEPT_RESOURCE_ERRNOS:
            log.warning("accept on %s failed (%s); pausing accepts for %.3g s",
                        self._sockname, exc, self._retry_delay)
        else:
            log.error("accept on %s failed (%r); pausing accepts for %.3g s",
                      self._sockname, exc, self._retry_delay)
        self._retry_timer = self._reactor.call_later(self._retry_delay, self._resume)

    def _resume(self) -> None:
        self._retry_timer = None
        if self._closed:
            return
        self._paused = False
        self._reactor.add_reader(self._sock, self._on_readable)


def _remove_stale_socket(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise TransportError(f"{path} exists and is not a socket; not removing it")
    os.unlink(path)
