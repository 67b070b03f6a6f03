"""Where connections come from: the listening sockets, and the up peers we dial.

Imports ``aggregation``, ``config``, ``links``, ``loop``, ``peerlink``,
``tls``, ``transport`` and ``connect``. Runs in the I/O thread.

- ``Listeners`` opens, before privileges are dropped, one listener per
  distinct peers address (the sections sharing it are told apart by the
  hello, see ``links``), the stats sockets (CLI) and the ``http`` listener (dashboard, metrics),
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
from .config import Config, Peer, PeerRole
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

#: Makes the transport protocol of a stats socket or ``http`` connection; given the server.
ProtocolFactory = Callable[[Any], Any]


class Listeners:
    """Every listening socket of the process.

    Peer listeners are keyed by address and find the sections they serve when a
    connection comes, so a reload (``rebind``) only opens what is new and closes
    what is gone; a listener whose settings did not change is kept, and with it
    every connection it accepted.
    """

    def __init__(self, reactor: Reactor, ctx: LinkContext, registry: LinkOwner,
                 tls: dict[str, SectionTLS]) -> None:
        self._reactor = reactor
        self._ctx = ctx
        self._registry = registry
        self._tls = tls
        self._sections: list[Section] = []
        self.peers: dict[tuple[str, int], Listener] = {}
        #: stats sockets and the ``http`` listener, by what opened them (their settings)
        self.services: dict[tuple, Listener] = {}
        self._owner: object = None
        self._factories: tuple[ProtocolFactory | None, ProtocolFactory | None] = (None, None)

    @property
    def listeners(self) -> list[Listener]:
        return [*self.peers.values(), *self.services.values()]

    def bind(self, config: Config, sections: list[Section], owner: object, cli_factory: ProtocolFactory | None,
             http_factory: ProtocolFactory | None) -> None:
        """Open every listening socket; stats and ``http`` protocols are made with ``owner``.
        ``sections`` is the server's list, read again at each accept (a reload changes it)."""
        self._sections, self._owner, self._factories = sections, owner, (cli_factory, http_factory)
        for address in self._peer_addresses():
            self.peers[address] = Listener(self._reactor, address, self._peer_acceptor(address))
        for spec in self._service_specs(config):
            self.services[spec] = self._open_service(spec)

    def rebind(self, config: Config) -> list[str]:
        """After a reload: open the listeners that are new, close those no longer wanted.

        Returns the failures (an address that cannot be bound now, say a port below 1024
        once privileges are dropped); what failed stays closed, the rest is applied.
        """
        failures: list[str] = []
        wanted = set(self._peer_addresses())
        for address in [a for a in self.peers if a not in wanted]:
            self.peers.pop(address).close()
        for address in wanted - set(self.peers):
            try:
                self.peers[address] = Listener(self._reactor, address, self._peer_acceptor(address))
            except OSError as exc:
                failures.append(f"cannot listen for peers on {format_address(address)}: {exc}")
        specs = self._service_specs(config)
        for spec in [s for s in self.services if s not in specs]:
            self.services.pop(spec).close()
        for spec in [s for s in specs if s not in self.services]:
            try:
                self.services[spec] = self._open_service(spec)
            except OSError as exc:
                failures.append(f"cannot open {spec[0]} {spec[1]}: {exc}")
        return failures

    def close(self) -> None:
        for listener in self.listeners:
            listener.close()

    def _peer_addresses(self) -> list[tuple[str, int]]:
        return list(dict.fromkeys((s.local.address.host, s.local.address.port) for s in self._sections))

    def _sections_at(self, address: tuple[str, int]) -> list[Section]:
        return [s for s in self._sections if (s.local.address.host, s.local.address.port) == address]

    def _service_specs(self, config: Config) -> list[tuple]:
        """What each stats socket and the ``http`` listener are opened with: compared at a reload."""
        cli_factory, http_factory = self._factories
        specs: list[tuple] = []
        if cli_factory is not None:
            for stats in config.global_.stats_sockets:
                where = stats.path if stats.path is not None else (stats.address.host, stats.address.port)
                specs.append(("stats socket", where, stats.mode if stats.mode is not None else 0o600))
        http = config.global_.http
        if http is not None and http_factory is not None:
            specs.append(("http", (http.host, http.port), None))
        return specs

    def _open_service(self, spec: tuple) -> Listener:
        kind, where, mode = spec
        factory = self._factories[0] if kind == "stats socket" else self._factories[1]
        return Listener(self._reactor, where, self._protocol_acceptor(factory, self._owner), unix_mode=mode)

    def accept_peer(self, sock: socket.socket, address: object, sections: list[Section]) -> PeerConnection:
        """Make an accepted socket a peer connection for one of ``sections`` (which share its address)."""
        context = self._tls[sections[0].name].server
        layer = TLSLayer(context, server_side=True) if context is not None else None
        return PeerConnection(self._ctx, self._registry, self._reactor, sock, sections, format_address(address),
                              layer=layer)

    def _peer_acceptor(self, local: tuple[str, int]) -> Callable[[socket.socket, object], None]:
        def on_accept(sock: socket.socket, address: object) -> None:
            sections = self._sections_at(local)
            if sections:
                self.accept_peer(sock, address, sections)
            else:  # its last section was removed by a reload in this very turn
                sock.close()
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
        self._sections: list[Section] = []

    def start(self, sections: list[Section]) -> None:
        """Dial every up peer of ``sections`` (the server's list, which a reload changes)."""
        self._sections = sections
        for section in sections:
            for peer in section.config.up_peers:
                self.dial(section, peer)

    def forget(self, section: Section, peer: Peer) -> None:
        """A reload removed or changed ``peer``: cancel its connect under way (a redial that is
        due later finds it gone or dials its new address)."""
        pending = self._connecting.pop((section.name, peer.name), None)
        if pending is not None:
            pending.cancel()
        self._downgraded.discard((section.name, peer.name))

    def stop(self) -> None:
        """Cancel the connects under way; dial nothing any more."""
        self._stopping = True
        for pending in self._connecting.values():
            pending.cancel()

    def dial(self, section: Section, peer: Peer, *, once: bool = False) -> None:
        """Dial an up peer (again after any failure), or with ``once`` a down peer, one time.

        A HAProxy node never dials again a peer that answered its hello with an error
        status (peers-protocol.md §1.5): a node a reload adds may have been refused as
        undeclared before it, and only a session we open sets it right. So a reload
        dials each added down peer once (``once``); after that the node dials us as usual.
        """
        if self._stopping:
            return
        # What the configuration says now: a reload may have removed the peer or its
        # section, or changed its address, since this dial was planned.
        current = section.peer(peer.name)
        if section not in self._sections or current is None or current.role is PeerRole.LOCAL \
                or (current.role is not PeerRole.UP and not once):
            return
        peer = current
        key = (section.name, peer.name)
        if key in self._connecting:
            return  # a connect is under way already
        context = self._tls[section.name].clients.get(peer.name)
        if peer.ssl and context is None:
            return  # a down peer over TLS: we have no client context for it; it dials us

        def again() -> None:
            if not once:
                self.redial_later(section, peer)

        def connected(sock: socket.socket) -> None:
            self._connecting.pop(key, None)
            layer = TLSLayer(context, server_side=False) if context is not None else None
            dialled = Dialled(peer, key in self._downgraded, lambda: self._downgraded.add(key), again)
            PeerConnection(self._ctx, self._registry, self._reactor, sock, [section], str(peer.address),
                           layer=layer, dialled=dialled)

        def failed(exc: Exception) -> None:
            self._connecting.pop(key, None)
            log.info("%s: cannot connect to peer %s (%s): %s", section.name, peer.name, peer.address, exc)
            again()

        self._connecting[key] = connect(self._reactor, (peer.address.host, peer.address.port), connected, failed,
                                        source=self._source)

    def redial_later(self, section: Section, peer: Peer) -> None:
        delay = RECONNECT_DELAY + random.random() * RECONNECT_JITTER
        self._reactor.call_later(delay, self.dial, section, peer)
