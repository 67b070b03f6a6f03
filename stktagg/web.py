"""The ``http <ip:port>`` listener (issue 19): the dashboard, its JSON API and the metrics.

Imports ``dashboard``, ``errors``, ``httpwire``, ``metrics`` and ``status``. Runs
in the I/O thread: served by the daemon's own event loop, no thread, no
``http.server``. One request per connection, answered whole, then closed.

=====================  ==========================================================
``/``                  the page (``static/index.html``), its ``/dashboard.js`` and
                       ``/dashboard.css``: shipped in the package, nothing loaded
                       from elsewhere
``/metrics``           the Prometheus text (``metrics.render``)
``/api/overview``      sections, peers, tables, rates (``dashboard.overview``)
``/api/table``         a table's top keys by a column, filtered (``dashboard``:
                       a scan in slices, answered when it is done)
``/api/key``           one key, its parts and history values
=====================  ==========================================================

Read-only: ``GET`` and ``HEAD`` only (405 otherwise), nothing served changes
state. Keys come from attackers: the page writes them as text only, and every
answer forbids what an injected markup could do (``SECURITY_HEADERS``: a
content security policy allowing this origin's own script and style only, no
framing, no type sniffing). Whoever reaches the address sees the clients'
addresses: bind it to loopback or a management network.
"""

from __future__ import annotations

import importlib.resources
import logging

from .dashboard import Dashboard, to_json
from .errors import ApiError
from .httpwire import MAX_REQUEST, HttpError, Request, head_complete, parse_request, response
from .metrics import CONTENT_TYPE as METRICS_TYPE
from .metrics import render as render_metrics

__all__ = ["STATIC", "SECURITY_HEADERS", "WebConnection"]

log = logging.getLogger(__name__)

JSON_TYPE = "application/json"
#: Sent with every answer: the page runs only its own script and style, is never framed,
#: and no answer is read as another type than it says (keys are attacker-controlled text).
SECURITY_HEADERS = (
    ("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
                                " connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)


def _static(name: str) -> bytes:
    return importlib.resources.files(__package__).joinpath("static", name).read_bytes()


#: path -> (media type, the file's name in ``stktagg/static``)
STATIC = {
    "/": ("text/html; charset=utf-8", "index.html"),
    "/index.html": ("text/html; charset=utf-8", "index.html"),
    "/dashboard.js": ("text/javascript; charset=utf-8", "dashboard.js"),
    "/dashboard.css": ("text/css; charset=utf-8", "dashboard.css"),
}
_FILES: dict[str, bytes] = {}  #: read once, at the first request for each


class WebConnection:
    """One HTTP/1.x connection to the ``http`` listener: one request, one answer, close."""

    def __init__(self, dashboard: Dashboard) -> None:
        self.dashboard = dashboard
        self.transport = None
        self._buffer = bytearray()
        self._request: Request | None = None  #: the request being answered (a table scan under way)

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self._request is not None:
            return  # a body, or a second request: never read (one request per connection)
        self._buffer += data
        if len(self._buffer) > MAX_REQUEST:
            self._request = Request(False, "")
            self._send(431, "text/plain", b"request header too large\n")
        elif head_complete(self._buffer):
            self._answer(bytes(self._buffer))

    def eof_received(self) -> bool:
        return True  # half closed: the answer is still written, then the connection closed

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def _answer(self, head: bytes) -> None:
        verdict = parse_request(head)
        if isinstance(verdict, HttpError):
            self._send(verdict.status, "text/plain", verdict.body.encode())
            return
        self._request = verdict
        try:
            self._route(verdict)
        except ApiError as exc:
            self._send(exc.status, JSON_TYPE, _error_body(str(exc)))

    def _route(self, request: Request) -> None:
        path = request.path
        dashboard = self.dashboard
        if path in STATIC:
            media, name = STATIC[path]
            body = _FILES.get(name)
            if body is None:
                body = _FILES[name] = _static(name)
            self._send(200, media, body)
        elif path == "/metrics":
            self._send(200, METRICS_TYPE, render_metrics(dashboard.source.status()).encode())
        elif path == "/api/overview":
            self._send(200, JSON_TYPE, dashboard.overview())
        elif path == "/api/key":
            self._send(200, JSON_TYPE, dashboard.key(request.params))
        elif path == "/api/table":
            dashboard.table(request.params, lambda status, body: self._send(status, JSON_TYPE, body))
        else:
            self._send(404, "text/plain", b"not found: see / for the dashboard, /metrics for the metrics\n")

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        if self.transport is None:
            return  # the client went away (while a table scan was under way)
        head_only = self._request is not None and self._request.head_only
        wall = self.dashboard.source.clock.wall()
        self.transport.write(response(status, content_type, body, wall, head_only, SECURITY_HEADERS))
        self.transport.close()
        self.transport = None


def _error_body(message: str) -> bytes:
    return to_json({"error": message})
