"""Who is connected: the open peer connections and each peer's established link.

Imports ``counters``, ``links`` and ``peerlink``. Runs in the I/O thread.

``LinkRegistry`` is the connections' ``links.LinkOwner``. It keeps every
started connection (for the session tick, backpressure and shutdown) and,
per peer, its established link: the newest established session of a peer
replaces an older one (HAProxy's rule), which is closed. When a connection
is lost it ends its session, adds an established session's traffic to the
peer's totals (``counters``), forgets it, and has a dialled peer redialled.
"""

from __future__ import annotations

import logging

from .counters import Counters, PeerKey
from .links import PeerConnection
from .peerlink import PeerLink
from .transport import StreamTransport

__all__ = ["LinkRegistry"]

log = logging.getLogger(__name__)


class LinkRegistry:
    """The open peer connections, and each peer's established link (the newest wins)."""

    def __init__(self, counters: Counters) -> None:
        self._counters = counters
        self.connections: set[PeerConnection] = set()  #: every connection past connection_made
        self.established: dict[PeerKey, PeerLink] = {}

    def add(self, conn: PeerConnection) -> None:
        self.connections.add(conn)

    def transports(self) -> list[StreamTransport]:
        return [conn.transport for conn in self.connections]

    def establish(self, link: PeerLink) -> None:
        """Register a newly established link as its peer's, replacing an older one."""
        old = self.established.get(link.key)
        if old is not None and old is not link:
            # The newest hello wins (HAProxy's rule): drop the older session.
            log.info("%s: peer %s reconnected; closing its previous session", *link.key)
            old.session.close("replaced by a newer session")
            old.transport.abort()
        self.established[link.key] = link

    def lost(self, conn: PeerConnection, exc: Exception | None) -> None:
        """A connection is gone: end its session, keep its traffic, forget it, redial if ours."""
        if not conn.started:
            # Never got as far as connection_made: the TLS handshake failed or timed out.
            log.warning("%s: TLS handshake with peer %s (%s) failed: %s",
                        conn.sections[0].name, conn.describe_peer(), conn.address, exc or "timeout")
        else:
            self.connections.discard(conn)
            stage = conn.stage
            stage.lost(exc)
            if isinstance(stage, PeerLink):
                self._counters.session_ended(stage.key, stage.session.stats)
                if self.established.get(stage.key) is stage:
                    del self.established[stage.key]
        if conn.dialled is not None:
            conn.dialled.redial()

    def abort_all(self) -> None:
        for conn in list(self.connections):
            conn.transport.abort()
