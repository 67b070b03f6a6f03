"""Read backpressure: stop reading from peers while the workers are behind.

Imports ``transport`` (for its type only). Runs in the I/O thread.

The I/O thread hands each read's updates to the workers; when more than
``MAX_PENDING_UPDATES`` are waiting to be applied it stops reading from every
peer, and reads again once the workers are below half of that. Memory stays
bounded, acks keep meaning "taken", and a peer whose socket we do not read
slows down on its own (TCP flow control). While reading is paused, sessions
are told so (``PeerSession.not_reading``), so that a peer we do not read is
not declared silent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from .transport import StreamTransport

__all__ = ["Backpressure", "MAX_PENDING_UPDATES"]

#: Updates read but not yet applied by the workers above which the I/O thread
#: stops reading from peers (and resumes below half): bounded memory under overload.
MAX_PENDING_UPDATES = 50_000


class Backpressure:
    """Pauses and resumes reading on every peer connection.

    Args:
        pending: the updates handed to the workers and not applied yet.
        transports: the transports of the peer connections now open.
        limit: the pending count above which reading stops.
    """

    def __init__(self, pending: Callable[[], int], transports: Callable[[], Iterable[StreamTransport]],
                 limit: int = MAX_PENDING_UPDATES) -> None:
        self._pending = pending
        self._transports = transports
        self.limit = limit
        self.paused = False  #: reading from peers is stopped

    def check(self) -> None:
        """After updates were handed over: stop reading if the workers have too much to apply."""
        if not self.paused and self._pending() > self.limit:
            self.paused = True
            for transport in self._transports():
                transport.pause_reading()

    def release(self) -> None:
        """After a push round: read again once the workers are below half the limit."""
        if self.paused and self._pending() < self.limit // 2:
            self.paused = False
            for transport in self._transports():
                if not transport.closed:
                    transport.resume_reading()
