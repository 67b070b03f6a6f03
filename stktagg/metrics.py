"""Prometheus metrics over HTTP: ``prometheus <ip:port>`` in ``global``.

Stdlib only, served by the daemon's own event loop (no thread, no
http.server). ``render(status)`` builds the text exposition format (version
0.0.4) from a ``status.Status`` snapshot and the process's own figures
(``/proc``, ``getrusage``); ``MetricsConnection`` answers ``GET /metrics``
(anything else: 404 or 405) from a fresh snapshot of its
``status.StatusSource``, and closes. Imports ``status`` only. Names follow Prometheus conventions: ``hapee_stktagg_``
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
import time
from dataclasses import dataclass

from .status import Status, StatusSource

#: Longest request head read before answering 431.
MAX_REQUEST = 8192
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


class MetricsConnection:
    """One HTTP/1.x connection to the metrics endpoint: one request, one answer, close."""

    def __init__(self, source: StatusSource) -> None:
        self.source = source
        self.transport = None
        self._buffer = bytearray()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if b"\r\n\r\n" in self._buffer or b"\n\n" in self._buffer:
            self._answer()
        elif len(self._buffer) > MAX_REQUEST:
            self._send(431, "text/plain", "request header too large\n")

    def eof_received(self) -> None:
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def _answer(self) -> None:
        verdict = read_request(bytes(self._buffer))
        if isinstance(verdict, HttpError):
            self._send(verdict.status, "text/plain", verdict.body)
        else:
            self._send(200, CONTENT_TYPE, render(self.source.status()), head_only=verdict)

    def _send(self, status: int, content_type: str, body: str, head_only: bool = False) -> None:
        if self.transport is None:
            return
        self.transport.write(http_response(status, content_type, body, self.source.clock.wall(), head_only))
        self.transport.close()
        self.transport = None


#: The metrics' media type (Prometheus text format 0.0.4).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            431: "Request Header Fields Too Large"}


@dataclass(frozen=True, slots=True)
class HttpError:
    """A request the metrics endpoint refuses: the status and the plain-text body to answer."""

    status: int
    body: str


def read_request(request: bytes) -> HttpError | bool:
    """The verdict on a request's head: an ``HttpError``, or whether only the head is wanted (``HEAD``)."""
    parts = request.split(b"\n", 1)[0].decode("latin-1").strip().split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return HttpError(400, "bad request\n")
    if parts[0] not in ("GET", "HEAD"):
        return HttpError(405, "only GET\n")
    if parts[1].split("?", 1)[0] != "/metrics":
        return HttpError(404, "see /metrics\n")
    return parts[0] == "HEAD"


def http_response(status: int, content_type: str, body: str, wall: float, head_only: bool = False) -> bytes:
    """A whole HTTP/1.1 answer that closes the connection."""
    data = body.encode()
    head = (f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {content_type}\r\nContent-Length: {len(data)}"
            f"\r\nConnection: close\r\nDate: {_http_date(wall)}\r\n\r\n")
    return head.encode() + (b"" if head_only else data)


def _http_date(wall: float) -> str:
    """An HTTP ``Date`` header's value for the wall time ``wall``."""
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(wall))
