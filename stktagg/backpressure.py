"""Read backpressure: stop reading from peers while the workers are behind, or
while the pushes are.

Imports ``transport`` (for its type only). Runs in the I/O thread.

The I/O thread hands each read's updates to the workers; when more than
``MAX_PENDING_UPDATES`` are waiting to be applied it stops reading from every
peer, and reads again once the workers are below half of that. Memory stays
bounded, acks keep meaning "taken", and a peer whose socket we do not read
slows down on its own (TCP flow control). While reading is paused, sessions
are told so (``PeerSession.not_reading``), so that a peer we do not read is
not declared silent.

Pacing (issue 15). Under overload the pushes fall behind too: every update
read makes a key dirty, and when the rounds cannot push them as fast as they
come the dirty keys pile up, so an aggregate reaches the other peers later
and later. So when more than ``PACE_HIGH`` peers' changes wait to be pushed
after a round, reading pauses (the same pause as above) until fewer than
``PACE_LOW`` do: loop turns then alternate between reading and pushing, and
how stale an aggregate gets is bounded by that backlog (a key waits behind
the changes made before it), not by the offered load. The rest of the load
waits in the kernel, in a bounded socket buffer
(``transport.RECEIVE_BUFFER``), and in the peer, which under TCP's flow
control sends each key's latest state (HAProxy does) instead of a backlog.
A smaller backlog is normal (one turn's reads) and pauses nothing.
Reads stay whole (``READ_SIZE``) while they happen: small reads of a small
buffer reopen TCP's window in small steps, which on loopback (64 kB
segments) stalls the sender on delayed acknowledgements.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from .transport import StreamTransport

__all__ = ["Backpressure", "MAX_PENDING_UPDATES", "PACE_HIGH", "PACE_LOW"]

#: Updates read but not yet applied by the workers above which the I/O thread
#: stops reading from peers (and resumes below half): bounded memory under overload.
MAX_PENDING_UPDATES = 50_000
#: Keys waiting to be pushed above which reading pauses (pacing), and below which it goes on.
PACE_HIGH = 30_000
PACE_LOW = 10_000


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
            self._pause()

    def release(self, backlog: int = 0) -> None:
        """After a push round that left ``backlog`` peers' changes for later: pause reading
        above PACE_HIGH (pacing); else read again once the backlog is below PACE_LOW and the
        workers below half their limit."""
        if backlog > PACE_HIGH:
            if not self.paused:
                self._pause()
        elif self.paused and backlog < PACE_LOW and self._pending() < self.limit // 2:
            self.paused = False
            for transport in self._transports():
                if not transport.closed:
                    transport.resume_reading()

    def _pause(self) -> None:
        self.paused = True
        for transport in self._transports():
            transport.pause_reading()
