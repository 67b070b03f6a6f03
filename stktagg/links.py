"""Peer connections, from the accepted or dialled socket to an established link.

Imports ``aggregation``, ``config``, ``errors``, ``peerlink``, ``session``
and ``transport``. Runs in the I/O thread.

A ``PeerConnection`` is the transport protocol of one peer connection. It
makes its ``StreamTransport`` and goes through stages, each an object that
holds exactly what is known at that point:

1. waiting for ``connection_made`` (a TLS handshake, bounded by
   ``HANDSHAKE_TIMEOUT``);
2. ``Sniffing``: only for a connection accepted on an address that several
   sections share. The hello is buffered until its second line (the name the
   caller has for us) picks the section; no match picks the first section,
   whose session then answers 503. No session yet;
3. ``Handshaking``: the section is known, so the ``PeerSession`` exists and
   runs the hello and status. The peer is known if we dialled it (``Dialled``);
4. ``peerlink.PeerLink``: established; section, session and peer all known.

A connection reports its start, its link's establishment and its end to
its ``LinkOwner`` (``registry.LinkRegistry``).
"""

from __future__ import annotations

import logging
import os
import socket
import typing
from collections.abc import Callable
from dataclasses import dataclass

from .aggregation import Section
from .config import Peer, PeerRole
from .errors import LocalProtocolError
from .peerlink import LinkContext, PeerLink, SessionStage
from .session import HANDSHAKE_TIMEOUT, Closed, Established, Event, PeerSession, Role, Status
from .transport import EventLoop, Layer, StreamTransport

__all__ = ["Dialled", "HELLO_SNIFF_LIMIT", "Handshaking", "LinkOwner", "PeerConnection", "Sniffing",
           "format_address"]

log = logging.getLogger(__name__)

#: Bytes of hello read, at most, to find which section a connection is for.
HELLO_SNIFF_LIMIT = 1024
#: A TLS handshake deadline that finds the peer's bytes unread (our loop was
#: late) looks again after this long, once they are read.
RECHECK_DELAY = 0.1


@dataclass(frozen=True, slots=True)
class Dialled:
    """What a connection we dialled knows of its peer, and how it reports back to the dialer."""

    peer: Peer
    downgraded: bool  #: announce protocol 2.0: the peer answered 502 to 2.1 before
    refused_version: Callable[[], None]  #: the peer answered 502: announce 2.0 next time
    redial: Callable[[], None]  #: the connection is gone: dial again later


class LinkOwner(typing.Protocol):
    """Who keeps track of the connections (``registry.LinkRegistry``)."""

    def add(self, conn: PeerConnection) -> None:
        """``conn`` is started (``connection_made``)."""

    def establish(self, link: PeerLink) -> None:
        """A connection's session was established: ``link`` is now its peer's."""

    def lost(self, conn: PeerConnection, exc: Exception | None) -> None:
        """``conn`` is gone (``connection_lost``)."""


class Stage(typing.Protocol):
    def receive(self, data: bytes, now: float) -> None: ...
    def poll(self, now: float) -> None: ...
    def writable(self) -> None: ...
    def lost(self, exc: Exception | None) -> None: ...


class _NoSession:
    """A stage without a session (before ``connection_made``; sniffing): nothing to write or end."""

    def receive(self, data: bytes, now: float) -> None:
        pass

    def poll(self, now: float) -> None:
        pass

    def writable(self) -> None:
        pass

    def lost(self, exc: Exception | None) -> None:
        pass


class PeerConnection:
    """The transport protocol of one peer connection (see the module docstring)."""

    def __init__(self, ctx: LinkContext, owner: LinkOwner, reactor: EventLoop, sock: socket.socket,
                 sections: list[Section], address: str, *, layer: Layer | None = None,
                 dialled: Dialled | None = None) -> None:
        self.ctx = ctx
        self.owner = owner
        self.sections = sections  #: the sections this connection may be for (the first: the default)
        self.address = address
        self.tls = layer is not None
        self.dialled = dialled
        self.started = False  #: connection_made came (TLS, if any, is up)
        self.stage: Stage = _NoSession()
        self.transport = StreamTransport(reactor, sock, self, layer=layer)
        self._reactor = reactor
        if layer is not None:
            # connection_made only comes once TLS is up: bound the handshake here.
            reactor.call_later(HANDSHAKE_TIMEOUT, self._tls_deadline)

    def _tls_deadline(self) -> None:
        if not self.started and not self.transport.closed:
            if self.transport.has_unread():  # the peer's bytes wait: the delay is ours (issue 14)
                self._reactor.call_later(RECHECK_DELAY, self._tls_deadline)
                return
            self.transport.abort()

    # -- transport protocol -----------------------------------------------------------

    def connection_made(self, transport: StreamTransport) -> None:
        self.started = True
        self.address = format_address(transport.peername)
        self.owner.add(self)
        now = self.ctx.clock.now()
        if self.dialled is not None:
            stage = Handshaking.dialling(self, self.sections[0], self.dialled, now)
            self.stage = stage
            stage.flush()
        elif len(self.sections) == 1:
            self.stage = Handshaking.accepting(self, self.sections[0], now)
        else:
            self.stage = Sniffing(self, now)

    def data_received(self, data: bytes) -> None:
        self.stage.receive(data, self.ctx.clock.now())

    def eof_received(self) -> None:
        self.stage.receive(b"", self.ctx.clock.now())

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.lost(self, exc)

    def writable(self) -> None:
        self.stage.writable()

    def describe_peer(self) -> str:
        """The peer's name for logs: known if we dialled it, else guessed from the source address."""
        if self.dialled is not None:
            return self.dialled.peer.name
        host = self.address.rsplit(":", 1)[0].strip("[]")
        for section in self.sections:
            for peer in section.remote_peers:
                if peer.address.host == host:
                    return f"{peer.name}?"
        return "?"


class Sniffing(_NoSession):
    """An accepted connection waiting for the hello line that names the section."""

    def __init__(self, conn: PeerConnection, now: float) -> None:
        self.conn = conn
        self.accepted_at = now
        self._buffer = bytearray()

    def receive(self, data: bytes, now: float) -> None:
        if not data:
            return  # closed before a hello: the transport ends it
        self._buffer += data
        lines = bytes(self._buffer).split(b"\n")
        if len(lines) < 3 and len(self._buffer) < HELLO_SNIFF_LIMIT:
            return
        callee = lines[1].rstrip(b"\r").decode("utf-8", "surrogateescape") if len(lines) > 1 else ""
        sections = self.conn.sections
        section = next((s for s in sections if s.local.name == callee), sections[0])
        stage = self.conn.stage = Handshaking.accepting(self.conn, section, now)
        stage.receive(bytes(self._buffer), now)

    def poll(self, now: float) -> None:
        # Still waiting for the hello that picks the section: same deadline as a handshake.
        if now - self.accepted_at >= HANDSHAKE_TIMEOUT and not self.conn.transport.has_unread():
            log.info("connection from %s closed: no hello within %g s", self.conn.address, HANDSHAKE_TIMEOUT)
            self.conn.transport.abort()


class Handshaking(SessionStage):
    """A session exchanging the hello and status; becomes a ``PeerLink`` once established."""

    def __init__(self, conn: PeerConnection, section: Section, session: PeerSession) -> None:
        super().__init__(conn.ctx, conn.transport, section, session, conn.address, conn.tls)
        self.conn = conn

    @classmethod
    def dialling(cls, conn: PeerConnection, section: Section, dialled: Dialled, now: float) -> Handshaking:
        session = PeerSession(Role.CONNECTING, section.local.name, now, remote_name=dialled.peer.name,
                              pid=os.getpid(), downgraded=dialled.downgraded)
        return cls(conn, section, session)

    @classmethod
    def accepting(cls, conn: PeerConnection, section: Section, now: float) -> Handshaking:
        declared = _declared_check(section, conn.address, conn.ctx.peer_address_check)
        return cls(conn, section, PeerSession(Role.ACCEPTING, section.local.name, now, is_declared=declared))

    def handle(self, events: list[Event], now: float) -> None:
        for i, event in enumerate(events):
            if isinstance(event, Established):
                # The events after it (the same read's messages) are the link's.
                self._establish(event, now).handle(events[i + 1:], now)
                return
            if isinstance(event, Closed):
                self.closed(event, self.conn.dialled.peer if self.conn.dialled is not None else None)
        self.flush()

    def closed(self, event: Closed, peer: Peer | None) -> None:
        dialled = self.conn.dialled
        if dialled is not None and event.status == Status.BAD_VERSION:
            dialled.refused_version()  # the peer does not speak 2.1: the next dial says 2.0
        super().closed(event, peer)

    def _establish(self, event: Established, now: float) -> PeerLink:
        dialled = self.conn.dialled
        peer = dialled.peer if dialled is not None else self.section.peer(event.peer_name)
        if peer is None:
            # The hello was checked against the section's peers (_declared_check): a bug.
            raise LocalProtocolError(f"session established with undeclared peer {event.peer_name!r}")
        link = PeerLink(self.ctx, self.transport, self.section, self.session, peer, self.address, self.tls)
        self.conn.stage = link
        self.conn.owner.establish(link)
        link.start(now)
        return link


def _declared_check(section: Section, address: str, peer_address_check: bool) -> Callable[[str], bool]:
    """Whether a hello's caller name may connect from ``address`` (a session's ``is_declared``)."""
    source = address.rsplit(":", 1)[0].strip("[]")

    def is_declared(name: str) -> bool:
        peer = section.peer(name)
        if peer is None and section.config.dynamic_peers and name != section.local.name:
            peer = section.add_dynamic_peer(name, source)
            if peer is not None:
                log.info("%s: accepted undeclared peer %s from %s (dynamic-peers %d/%d)", section.name,
                         name, address, len(section.dynamic), section.config.dynamic_peers)
                return True
        if peer is None or peer.role is PeerRole.LOCAL:
            return False
        if peer_address_check and source != peer.address.host:
            # Only from the declared address: a name alone authenticates nothing.
            log.warning("%s: hello as peer %s from %s, not its declared %s: refused",
                        section.name, name, address, peer.address.host)
            return False
        return True

    return is_declared


def format_address(address: object) -> str:
    """A socket address as logs and the CLI show it: ``host:port``, ``[v6]:port``, or ``unix``."""
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address or "unix")
