"""The server's counters for the CLI and the metrics, kept across sessions.

Imports ``session`` (a session's own counters) and ``status`` (the frozen
form handed out). Runs in the I/O thread only; no locks.

- Updates received from peers and pushed to them, process-wide.
- Per peer (keyed by section and peer name): the traffic of its ended
  sessions, added up when each one ends, so that a Prometheus counter never
  goes back when a peer reconnects; the wall time of its last hello; the
  reason its last failed session was closed.
- Update rates: one sample of the two update counters per second (the
  server's timer calls ``sample``), from which ``rates`` gives the last
  second's and the last minute's rates, and ``trend`` the rate of each
  second of the last five minutes (the dashboard's chart); with each
  sample, every peer's update totals, from which ``peer_rates`` gives its
  rates over the last second.
"""

from __future__ import annotations

import collections
from types import MappingProxyType
from typing import Mapping

from .session import SessionStats
from .status import Traffic

__all__ = ["Counters", "PeerKey", "TRAFFIC_FIELDS"]

#: (section name, peer name)
PeerKey = tuple[str, str]
#: The counters of ``session.SessionStats`` that add up across sessions.
TRAFFIC_FIELDS = ("messages_in", "messages_out", "bytes_in", "bytes_out", "updates_in", "updates_out",
                  "heartbeats_in", "heartbeats_out")
#: Samples kept: one a second, enough for the rate over the last minute and the trend.
RATE_SAMPLES = 302
#: The trend's span: the rates of each of the last this many seconds.
TREND_SECONDS = 300


class Counters:
    """Process-wide and per-peer counters (see the module docstring)."""

    def __init__(self) -> None:
        self.updates_in = 0  #: updates received from peers
        self.updates_out = 0  #: aggregate updates sent to peers
        self._ended: dict[PeerKey, list[int]] = {}
        self._last_hello: dict[PeerKey, float] = {}
        self._last_error: dict[PeerKey, str] = {}
        self._samples: collections.deque[tuple[float, int, int]] = collections.deque(maxlen=RATE_SAMPLES)
        #: the last two samples of each peer's update totals: (time, {peer: (received, sent)})
        self._peer_samples: collections.deque[tuple[float, Mapping[PeerKey, tuple[int, int]]]] = \
            collections.deque(maxlen=2)

    # -- per peer ---------------------------------------------------------------------

    def session_ended(self, peer: PeerKey, stats: SessionStats) -> None:
        """Add an established session's traffic to its peer's totals, once, when it ends."""
        total = self._ended.setdefault(peer, [0] * len(TRAFFIC_FIELDS))
        for i, name in enumerate(TRAFFIC_FIELDS):
            total[i] += getattr(stats, name)

    def traffic(self, peer: PeerKey, current: SessionStats | None) -> Traffic:
        """The peer's traffic over every session: the ended ones and ``current``, if any."""
        ended = self._ended.get(peer, [0] * len(TRAFFIC_FIELDS))
        if current is None:
            return Traffic(*ended)
        return Traffic(*(n + getattr(current, name) for n, name in zip(ended, TRAFFIC_FIELDS)))

    def hello(self, peer: PeerKey, wall: float) -> None:
        """A session with ``peer`` was established at wall time ``wall``."""
        self._last_hello[peer] = wall

    def last_hello(self, peer: PeerKey) -> float | None:
        return self._last_hello.get(peer)

    def error(self, peer: PeerKey, reason: str) -> None:
        """A session with ``peer`` failed (refused, or closed on an error) for ``reason``."""
        self._last_error[peer] = reason

    def last_error(self, peer: PeerKey) -> str:
        return self._last_error.get(peer, "")

    # -- rates ------------------------------------------------------------------------

    def sample(self, now: float, peers: Mapping[PeerKey, tuple[int, int]] | None = None) -> None:
        """Record the update counters at clock time ``now`` (s), and each peer's (updates
        received, sent) over all its sessions, ``peers``; called once a second."""
        self._samples.append((now, self.updates_in, self.updates_out))
        if peers is not None:
            self._peer_samples.append((now, peers))

    def peer_rates(self, peer: PeerKey) -> tuple[int, int] | None:
        """The peer's updates received and sent per second over the last second (None: not known)."""
        if len(self._peer_samples) < 2:
            return None
        (t0, old), (t1, new) = self._peer_samples
        if peer not in old or peer not in new:
            return None
        span = max(t1 - t0, 1e-9)
        return (round((new[peer][0] - old[peer][0]) / span), round((new[peer][1] - old[peer][1]) / span))

    def trend(self) -> tuple[tuple[float, int, int], ...]:
        """``(clock time, updates received/s, pushed/s)`` of each second of the last
        ``TREND_SECONDS`` (oldest first), from successive samples."""
        samples = list(self._samples)[-TREND_SECONDS - 1:]
        out = []
        for (t0, in0, out0), (t1, in1, out1) in zip(samples, samples[1:]):
            span = max(t1 - t0, 1e-9)
            out.append((t1, round((in1 - in0) / span), round((out1 - out0) / span)))
        return tuple(out)

    def rates(self) -> Mapping[str, int | None]:
        """Updates received and pushed per second, over the last second and the last minute."""
        out: dict[str, int | None] = {}
        samples = self._samples
        for label, back in (("1s", 1), ("1m", 60)):
            if len(samples) > back:
                (t0, in0, out0), (t1, in1, out1) = samples[-1 - back], samples[-1]
                span = max(t1 - t0, 1e-9)
                out[f"updates_received_per_s_{label}"] = round((in1 - in0) / span)
                out[f"updates_pushed_per_s_{label}"] = round((out1 - out0) / span)
            else:
                out[f"updates_received_per_s_{label}"] = out[f"updates_pushed_per_s_{label}"] = None
        return MappingProxyType(out)
