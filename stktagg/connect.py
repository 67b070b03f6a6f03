"""Outgoing TCP connects on a reactor, never blocking (IP literals only, no name resolution).

Imports ``transport`` only. ``connect`` returns a ``PendingConnect``; exactly
one of its callbacks runs, from the loop, with a connected non-blocking
socket (tuned as ``transport.tune_tcp`` does) or with the error.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable

from .transport import Cancellable, EventLoop, ip_family, tune_tcp

__all__ = ["CONNECT_TIMEOUT", "PendingConnect", "connect"]

#: Default time allowed for a TCP connect.
CONNECT_TIMEOUT = 5.0


class PendingConnect:
    """An outgoing TCP connect in progress (returned by ``connect``).

    Exactly one of ``on_connected`` / ``on_error`` is called, from the loop
    and never from inside ``connect()``, unless ``cancel()`` comes first.
    """

    def __init__(self, reactor: EventLoop, sock: socket.socket, address: tuple[str, int],
                 on_connected: Callable[[socket.socket], None],
                 on_error: Callable[[Exception], None]) -> None:
        self._reactor = reactor
        self._sock: socket.socket | None = sock
        self._address = address
        self._on_connected = on_connected
        self._on_error = on_error
        self._timeout_timer: Cancellable | None = None
        self._deferred: Cancellable | None = None  # an outcome known at once, reported soon

    @property
    def address(self) -> tuple[str, int]:
        """The address being connected to."""
        return self._address

    @property
    def done(self) -> bool:
        """True once the outcome was reported or the connect cancelled."""
        return self._sock is None

    def cancel(self) -> None:
        """Give up: close the socket; no callback will be called."""
        if self._sock is None:
            return
        sock = self._release()
        sock.close()

    def _start(self, timeout: float | None, source: tuple[str, int] | None) -> None:
        assert self._sock is not None
        try:
            self._sock.setblocking(False)
            tune_tcp(self._sock)
            if source is not None:
                self._bind_source(source)
            self._sock.connect(self._address)
        except (BlockingIOError, InterruptedError):
            # EINPROGRESS: the outcome comes with writability (SO_ERROR).
            self._reactor.add_writer(self._sock, self._on_writable)
            if timeout is not None:
                self._timeout_timer = self._reactor.call_later(timeout, self._on_timeout, timeout)
            return
        except OSError as exc:
            self._deferred = self._reactor.call_soon(self._fail, exc)
            return
        self._deferred = self._reactor.call_soon(self._succeed)

    def _bind_source(self, source: tuple[str, int]) -> None:
        assert self._sock is not None
        if source[1] != 0:
            # A fixed source port is reused across reconnects; without this
            # the previous connection's TIME_WAIT would block the bind.
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(source)

    def _on_writable(self) -> None:
        if self._sock is None:
            return
        err = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            # OSError(errno, ...) builds the matching subclass, for example
            # ConnectionRefusedError for ECONNREFUSED.
            self._fail(OSError(err, os.strerror(err)))
        else:
            self._succeed()

    def _on_timeout(self, timeout: float) -> None:
        self._timeout_timer = None
        host, port = self._address
        self._fail(TimeoutError(errno.ETIMEDOUT, f"connect to {host} port {port} timed out after {timeout:g} s"))

    def _release(self) -> socket.socket:
        sock = self._sock
        assert sock is not None
        self._sock = None
        for handle in (self._timeout_timer, self._deferred):
            if handle is not None:
                handle.cancel()
        self._timeout_timer = self._deferred = None
        self._reactor.remove_writer(sock)
        return sock

    def _succeed(self) -> None:
        sock = self._release()
        self._on_connected(sock)

    def _fail(self, exc: Exception) -> None:
        sock = self._release()
        sock.close()
        self._on_error(exc)


def connect(reactor: EventLoop, address: tuple[str, int],
            on_connected: Callable[[socket.socket], None],
            on_error: Callable[[Exception], None], *, timeout: float | None = CONNECT_TIMEOUT,
            source: tuple[str, int] | None = None) -> PendingConnect:
    """Start a non-blocking TCP connect to an IP literal.

    Args:
        reactor: the event loop.
        address: ``(ip, port)``; the ip must be a literal (no DNS, which
            would block the loop).
        on_connected: called with the connected socket (non-blocking,
            TCP_NODELAY), which then belongs to the callee.
        on_error: called with the error: an ``OSError`` such as
            ``ConnectionRefusedError``, or ``TimeoutError`` after ``timeout``.
        timeout: seconds before giving up (None: the kernel's own limit).
        source: optional local ``(ip, port)`` to bind first.

    Returns:
        A ``PendingConnect`` whose ``cancel()`` gives up silently.

    Raises:
        TransportError: ``address`` is not an IP literal.
    """
    sock = socket.socket(ip_family(address[0]), socket.SOCK_STREAM)
    pending = PendingConnect(reactor, sock, address, on_connected, on_error)
    pending._start(timeout, source)
    return pending
