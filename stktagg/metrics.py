"""Prometheus metrics over HTTP: ``prometheus <ip:port>`` in ``global``.

Stdlib only, served by the daemon's own event loop (no thread, no
http.server) at ``/metrics`` of the ``http`` listener (``web``; ``prometheus``
is the older name of ``http``). ``render(status)`` builds the text exposition
format (version 0.0.4) from a ``status.Status`` snapshot and the process's own
figures (``/proc``, ``getrusage``). ``read_request`` and ``http_response`` are
what a sharded daemon's main process answers with (``shardproxy``: metrics
only). Imports ``httpwire`` and ``status``. Names follow Prometheus conventions: ``hapee_stktagg_``
prefix, ``_total`` counters (monotonic across reconnections), base units
(``_seconds``, ``_bytes``), and the standard ``process_*`` metrics.

Scrape config::

    scrape_configs:
      - job_name: hapee-stktagg
        static_configs:
          - targets: ['127.0.0.1:9100']
"""

from __future__ import annotations

import os
import resource

from .httpwire import MAX_REQUEST, HttpError, parse_request, response
from .status import Status

__all__ = ["CONTENT_TYPE", "MAX_REQUEST", "HttpError", "http_response", "read_request", "render"]

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _labels(**labels: str) -> str:
    inner = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
    return "{" + inner + "}" if inner else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class _Writer:
    """Collects samples; every family's samples come out together, as the format requires."""

    def __init__(self) -> None:
        self._families: dict[str, list[str]] = {}

    def metric(self, name: str, kind: str, help_text: str, value: float, **labels: str) -> None:
        family = self._families.get(name)
        if family is None:
            family = self._families[name] = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        family.append(f"{name}{_labels(**labels)} {value}")

    def histogram(self, name: str, help_text: str, bounds: tuple[float, ...], counts: tuple[int, ...],
                  total: float) -> None:
        """A histogram family: cumulative ``_bucket`` samples by ``le``, then ``_sum`` and ``_count``."""
        family = self._families[name] = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        cumulative = 0
        for bound, count in zip([repr(float(b)) for b in bounds] + ["+Inf"], counts or (0,) * (len(bounds) + 1)):
            cumulative += count
            family.append(f"{name}_bucket{_labels(le=bound)} {cumulative}")
        family += [f"{name}_sum {round(total, 6)}", f"{name}_count {cumulative}"]

    @property
    def lines(self) -> list[str]:
        return [line for family in self._families.values() for line in family]


def render(status: Status) -> str:
    """The metrics of the whole process, in Prometheus' text format."""
    from . import __version__

    w = _Writer()
    w.metric("hapee_stktagg_info", "gauge", "Version of the running aggregator.", 1, version=__version__)
    w.metric("hapee_stktagg_updates_received_total", "counter", "Updates received from peers.",
             status.updates_in)
    w.metric("hapee_stktagg_updates_pushed_total", "counter", "Aggregate updates sent to peers.",
             status.updates_out)
    loop = status.loop
    w.histogram("hapee_stktagg_loop_turn_seconds", "Event loop turns by the time their callbacks ran.",
                loop.bounds, loop.counts, loop.seconds)
    w.metric("hapee_stktagg_loop_longest_turn_seconds", "gauge", "The longest event loop turn of the last minute.",
             round(loop.recent_longest, 6))
    for section in status.sections:
        for peer in section.peers:
            up = int(peer.established)
            labels = {"section": section.name, "peer": peer.name, "role": peer.role.value}
            w.metric("hapee_stktagg_peer_up", "gauge", "1 when the peer's session is established.", up, **labels)
            stats = peer.traffic
            for field, help_text in (
                ("messages_in", "Messages received from the peer."), ("messages_out", "Messages sent to the peer."),
                ("updates_in", "Updates received from the peer."), ("updates_out", "Updates sent to the peer."),
                ("heartbeats_in", "Heartbeats received from the peer."),
                ("heartbeats_out", "Heartbeats sent to the peer."),
            ):
                direction = "received" if field.endswith("_in") else "sent"
                name = f"hapee_stktagg_peer_{field[:-3] if field.endswith('_in') else field[:-4]}_{direction}_total"
                w.metric(name, "counter", help_text, getattr(stats, field), **labels)
            w.metric("hapee_stktagg_peer_bytes_received_total", "counter", "Bytes received from the peer.",
                     stats.bytes_in, **labels)
            w.metric("hapee_stktagg_peer_bytes_sent_total", "counter", "Bytes sent to the peer.",
                     stats.bytes_out, **labels)
        for table in section.tables:
            labels = {"section": section.name, "table": table.name.decode("utf-8", "backslashreplace"),
                      "mode": table.mode.value}
            w.metric("hapee_stktagg_table_entries", "gauge", "Keys in the table.", table.entries, **labels)
            w.metric("hapee_stktagg_table_updates_total", "counter", "Peer updates applied to the table.",
                     table.changes, **labels)
            w.metric("hapee_stktagg_table_dropped_total", "counter", "New keys dropped because the table was full.",
                     table.dropped, **labels)
    _process(w, status)
    return "\n".join(w.lines) + "\n"


def _process(w: _Writer, status: Status) -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    w.metric("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.",
             round(usage.ru_utime + usage.ru_stime, 3))
    rss = 0
    try:
        with open("/proc/self/statm") as statm:
            rss = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        pass
    w.metric("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", rss)
    try:
        fds = len(os.listdir("/proc/self/fd"))
    except OSError:
        fds = 0
    w.metric("process_open_fds", "gauge", "Number of open file descriptors.", fds)
    w.metric("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.",
             round(status.started_wall, 3))


#: The metrics' media type (Prometheus text format 0.0.4).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def read_request(request: bytes) -> HttpError | bool:
    """The verdict on a request for the metrics alone (a sharded daemon's main process): an
    ``HttpError``, or whether only the head is wanted (``HEAD``)."""
    verdict = parse_request(request)
    if isinstance(verdict, HttpError):
        return verdict
    if verdict.path != "/metrics":
        return HttpError(404, "see /metrics\n")
    return verdict.head_only


def http_response(status: int, content_type: str, body: str, wall: float, head_only: bool = False) -> bytes:
    """A whole HTTP/1.1 answer of a text body that closes the connection."""
    return response(status, content_type, body.encode(), wall, head_only)
