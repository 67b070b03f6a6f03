"""Where connections come from: the listening sockets, and the up peers we dial.

Imports ``aggregation``, ``config``, ``links``, ``loop``, ``peerlink``,
``tls``, ``transport`` and ``connect``. Runs in the I/O thread.

- ``Listeners`` opens, before privileges are dropped, one listener per
  distinct peers address (the sections sharing it are told apart by the
  hello, see ``links``), the stats sockets (CLI) and the metrics endpoint,
  and turns each accepted peer socket into a ``links.PeerConnection`` (TLS
  when the local peer line says ``ssl``).
- ``Dialer`` dials each up peer, and again 1 to 1.5 s after a failed connect
  or a lost connection (``RECONNECT_DELAY`` plus a random part, so that two
  aggregators do not redial in lockstep). It remembers the peers that
  answered 502 to our 2.1 hello, and announces 2.0 to them from then on.
  HAProxy nodes dial us: down peers' addresses are never dialled.
"""

from __future__ import annotations

import logging
import random
import socket
from collections.abc import Callable
from typing import Any

from .aggregation import Section
from .config import Config, Peer
from .links import Dialled, LinkOwner, PeerConnection, format_address
from .loop import Reactor
from .peerlink import LinkContext
from .tls import SectionTLS, TLSLayer
from .connect import PendingConnect, connect
from .transport import Listener, StreamTransport

__all__ = ["Dialer", "Listeners", "RECONNECT_DELAY", "RECONNECT_JITTER"]

log = logging.getLogger(__name__)

#: Delay before redialing an up peer after a failed or closed session; a
#: random part avoids two aggregators redialing in lockstep.
RECONNECT_DELAY = 1.0
RECONNECT_JITTER = 0.5

#: Makes the transport protocol of a stats or metrics connection; given the server.
ProtocolFactory = Callable[[Any], Any]


class Listeners:
    """Every listening socket of the process."""

    def __init__(self, reactor: Reactor, ctx: LinkContext, registry: LinkOwner,
                 tls: dict[str, SectionTLS]) -> None:
        self._reactor = reactor
        self._ctx = ctx
        self._registry = registry
        self._tls = tls
        self.listeners: list[Listener] = []

    def bind(self, config: Config, sections: list[Section], owner: object, cli_factory: ProtocolFactory | None,
             metrics_factory: ProtocolFactory | None) -> None:
        """Open every listening socket; stats and metrics protocols are made with ``owner``."""
        by_address: dict[tuple[str, int], list[Section]] = {}
        for section in sections:
            address = section.local.address
            by_address.setdefault((address.host, address.port), []).append(section)
        for address, shared in by_address.items():
            self.listeners.append(Listener(self._reactor, address, self._peer_acceptor(shared)))
        if cli_factory is not None:
            for stats in config.global_.stats_sockets:
                where = stats.path if stats.path is not None else (stats.address.host, stats.address.port)
                mode = stats.mode if stats.mode is not None else 0o600
                self.listeners.append(Listener(self._reactor, where, self._protocol_acceptor(cli_factory, owner),
                                               unix_mode=mode))
        prometheus = config.global_.prometheus
        if prometheus is not None and metrics_factory is not None:
            self.listeners.append(Listener(self._reactor, (prometheus.host, prometheus.port),
                                           self._protocol_acceptor(metrics_factory, owner)))

    def close(self) -> None:
        for listener in self.listeners:
            listener.close()

    def accept_peer(self, sock: socket.socket, address: object, sections: list[Section]) -> PeerConnection:
        """Make an accepted socket a peer connection for one of ``sections`` (which share its address)."""
        context = self._tls[sections[0].name].server
        layer = TLSLayer(context, server_side=True) if context is not None else None
        return PeerConnection(self._ctx, self._registry, self._reactor, sock, sections, format_address(address),
                              layer=layer)

    def _peer_acceptor(self, sections: list[Section]) -> Callable[[socket.socket, object], None]:
        def on_accept(sock: socket.socket, address: object) -> None:
            self.accept_peer(sock, address, sections)
        return on_accept

    def _protocol_acceptor(self, factory: ProtocolFactory, owner: object) -> Callable[[socket.socket, object], None]:
        def on_accept(sock: socket.socket, address: object) -> None:
            StreamTransport(self._reactor, sock, factory(owner))
        return on_accept


class Dialer:
    """Dials the up peers and redials them (see the module docstring)."""

    def __init__(self, reactor: Reactor, ctx: LinkContext, registry: LinkOwner, tls: dict[str, SectionTLS],
                 source: tuple[str, int] | None) -> None:
        self._reactor = reactor
        self._ctx = ctx
        self._registry = registry
        self._tls = tls
        self._source = source
        self._connecting: dict[tuple[str, str], PendingConnect] = {}
        self._downgraded: set[tuple[str, str]] = set()  #: peers that answered 502 to 2.1
        self._stopping = False

    def start(self, sections: list[Section]) -> None:
        for section in sections:
            for peer in section.config.up_peers:
                self.dial(section, peer)

    def stop(self) -> None:
        """Cancel the connects under way; dial nothing any more."""
        self._stopping = True
        for pending in self._connecting.values():
            pending.cancel()

    def dial(self, section: Section, peer: Peer) -> None:
        if self._stopping:
            return
        key = (section.name, peer.name)
        context = self._tls[section.name].clients.get(peer.name)

        def connected(sock: socket.socket) -> None:
            self._connecting.pop(key, None)
            layer = TLSLayer(context, server_side=False) if context is not None else None
            dialled = Dialled(peer, key in self._downgraded, lambda: self._downgraded.add(key),
                              lambda: self.redial_later(section, peer))
            PeerConnection(self._ctx, self._registry, self._reactor, sock, [section], str(peer.address),
                           layer=layer, dialled=dialled)

        def failed(exc: Exception) -> None:
            self._connecting.pop(key, None)
            log.info("%s: cannot connect to peer %s (%s): %s", section.name, peer.name, peer.address, exc)
            self.redial_later(section, peer)

        self._connecting[key] = connect(self._reactor, (peer.address.host, peer.address.port), connected, failed,
                                        source=self._source)

    def redial_later(self, section: Section, peer: Peer) -> None:
        delay = RECONNECT_DELAY + random.random() * RECONNECT_JITTER
        self._reactor.call_later(delay, self.dial, section, peer)
