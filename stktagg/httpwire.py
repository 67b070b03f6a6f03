"""HTTP/1.x as the daemon's HTTP listener speaks it: request heads in, whole answers out (sans-IO).

Imports nothing of ``stktagg``. The listener (``web``, and ``shardproxy`` for a
sharded daemon's metrics) reads one request head per connection, answers it
whole and closes: ``parse_request`` gives a ``Request`` or the ``HttpError`` to
answer, ``response`` the bytes of an answer. Only ``GET`` and ``HEAD`` exist
(nothing served changes state); a body sent with a request is never read.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

__all__ = ["HttpError", "MAX_REQUEST", "Request", "head_complete", "http_date", "parse_request", "response"]

#: Longest request head read before answering 431.
MAX_REQUEST = 8192
#: Query parameters read at most (the API takes a handful).
MAX_PARAMS = 16
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            431: "Request Header Fields Too Large", 500: "Internal Server Error", 503: "Service Unavailable"}


@dataclass(frozen=True, slots=True)
class HttpError:
    """A request refused: the status and the plain-text body to answer."""

    status: int
    body: str


@dataclass(frozen=True, slots=True)
class Request:
    """A request's line: ``HEAD`` or ``GET``, the path and the query's parameters (the last of a name wins)."""

    head_only: bool
    path: str
    params: dict[str, str] = field(default_factory=dict)


def head_complete(buffer: bytes | bytearray) -> bool:
    """The request head has come whole (a blank line ends it)."""
    return b"\r\n\r\n" in buffer or b"\n\n" in buffer


def parse_request(head: bytes) -> Request | HttpError:
    """The verdict on a request head: the ``Request``, or the ``HttpError`` to answer."""
    parts = head.split(b"\n", 1)[0].decode("latin-1").strip().split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[1].startswith("/"):
        return HttpError(400, "bad request\n")
    if parts[0] not in ("GET", "HEAD"):
        return HttpError(405, "only GET and HEAD: nothing here changes state\n")
    target = urlsplit(parts[1])
    try:
        params = dict(parse_qsl(target.query, keep_blank_values=True, max_num_fields=MAX_PARAMS,
                                errors="surrogateescape"))
    except ValueError:
        return HttpError(400, "too many query parameters\n")
    return Request(parts[0] == "HEAD", target.path, params)


def response(status: int, content_type: str, body: bytes, wall: float, head_only: bool = False,
             headers: Iterable[tuple[str, str]] = ()) -> bytes:
    """A whole HTTP/1.1 answer that closes the connection, with ``headers`` besides the usual ones."""
    lines = [f"HTTP/1.1 {status} {_REASONS[status]}", f"Content-Type: {content_type}",
             f"Content-Length: {len(body)}", "Connection: close", f"Date: {http_date(wall)}"]
    if status == 405:
        lines.append("Allow: GET, HEAD")
    lines += [f"{name}: {value}" for name, value in headers]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + body


def http_date(wall: float) -> str:
    """An HTTP ``Date`` header's value for the wall time ``wall``."""
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(wall))
