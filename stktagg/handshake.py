"""The peers hello / status handshake: a line codec, no I/O.

Imports ``errors`` only.

The connecting side sends three lines (peers-protocol.md §1.2)::

    HAProxyS 2.1\\n
    <name of the peer being called>\\n
    <name of the caller> <pid> <relative pid>\\n

and the accepting side answers one status line, ``200\\n`` on success. The
checks, in HAProxy's order (§1.4), and the code each failure gets:

- line 1 does not start with ``HAProxyS `` -> 501;
- the version is not ``<digits>.<digits>``, or major != 2, or minor > 1 -> 502;
- line 2 is not our own local name -> 503;
- line 3 has no space -> 501; its name is not a declared peer -> 504;
- line 3 names our own local name -> 300 (HAProxy keeps that name for the
  handover between an old and a new process of one node; we never do one).

A line is read up to LF, one CR before it dropped. A line longer than
MAX_LINE, or input that ends before the LF, is closed without a status, as
HAProxy does.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .errors import HandshakeError

#: Longest handshake line we wait for. Peer names are short; HAProxy reads a
#: line from its 16 kB buffer, but nothing legitimate comes near this.
MAX_LINE = 512
#: Protocol version we speak and announce (HAProxy 2.6 to 3.x send 2.1).
PROTOCOL_MAJOR = 2
PROTOCOL_MINOR = 1
#: Minor version announced to a peer that answered 502 (HAProxy's downgrade).
DOWNGRADED_MINOR = 0
SIGNATURE = "HAProxyS"


class Status(enum.IntEnum):
    """Status codes of the handshake (peers-protocol.md §1.3)."""

    SUCCESS = 200  #: handshake succeeded
    TRY_AGAIN = 300  #: try again later
    PROTOCOL_ERROR = 501  #: malformed hello
    BAD_VERSION = 502  #: unsupported protocol version
    BAD_LOCAL_NAME = 503  #: line 2 is not the callee's local name
    UNKNOWN_PEER = 504  #: line 3 names no declared peer


@dataclass(frozen=True, slots=True)
class Hello:
    version: tuple[int, int]
    callee: str  #: the name the caller has for us (line 2)
    caller: str  #: the caller's own name (line 3)
    rest: str = "1 1"  #: what follows the caller's name: pid and relative pid

    def encode(self) -> bytes:
        major, minor = self.version
        return f"{SIGNATURE} {major}.{minor}\n{self.callee}\n{self.caller} {self.rest}\n".encode()


class LineBuffer:
    """Accumulates bytes and hands out whole lines (h11's receive buffer, in small)."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._buf = bytearray()
        self._scan_from = 0

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next_line(self) -> str | None:
        """The next line without its LF (and CR), or None if not complete yet.

        Raises:
            HandshakeError: the line is over ``max_line`` bytes (status None:
                close without answering).
        """
        idx = self._buf.find(b"\n", self._scan_from)
        if idx < 0:
            if len(self._buf) > self.max_line:
                raise HandshakeError(f"handshake line longer than {self.max_line} bytes", None)
            self._scan_from = len(self._buf)
            return None
        if idx > self.max_line:
            raise HandshakeError(f"handshake line longer than {self.max_line} bytes", None)
        raw = bytes(self._buf[:idx])
        del self._buf[: idx + 1]
        self._scan_from = 0
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        return raw.decode("utf-8", "surrogateescape")

    def take_rest(self) -> bytes:
        """What was received after the last line (the first protocol bytes)."""
        rest = bytes(self._buf)
        self._buf.clear()
        self._scan_from = 0
        return rest


def parse_version(line: str) -> tuple[int, int]:
    """Line 1 -> (major, minor).

    Raises:
        HandshakeError: 501 without the signature, 502 for a bad version.
    """
    prefix = SIGNATURE + " "
    if not line.startswith(prefix):
        raise HandshakeError(f"hello does not start with {prefix!r}: {line[:40]!r}", Status.PROTOCOL_ERROR)
    text = line[len(prefix) :]
    major, dot, minor = text.partition(".")
    if not (dot and major.isdigit() and minor.isdigit() and major.isascii() and minor.isascii()):
        raise HandshakeError(f"malformed protocol version {text[:20]!r}", Status.BAD_VERSION)
    if int(major) != PROTOCOL_MAJOR or int(minor) > PROTOCOL_MINOR:
        raise HandshakeError(f"unsupported protocol version {text}", Status.BAD_VERSION)
    return int(major), int(minor)


def check_hello(lines: list[str], local_name: str, is_declared: "callable[[str], bool]") -> Hello:
    """Validate the three hello lines as the accepting side.

    Args:
        lines: the three lines, without line ends.
        local_name: our own peer name (line 2 must equal it).
        is_declared: tells whether a caller name is a declared peer.

    Raises:
        HandshakeError: carrying the status code to answer.
    """
    version = parse_version(lines[0])
    if lines[1] != local_name:
        raise HandshakeError(
            f"hello is for peer {lines[1][:64]!r}, we are {local_name!r}", Status.BAD_LOCAL_NAME
        )
    caller, space, rest = lines[2].partition(" ")
    if not space:
        raise HandshakeError(f"hello line 3 has no pid: {lines[2][:64]!r}", Status.PROTOCOL_ERROR)
    if caller == local_name:
        raise HandshakeError(f"hello from a peer using our own name {caller!r}", Status.TRY_AGAIN)
    if not is_declared(caller):
        raise HandshakeError(f"hello from undeclared peer {caller[:64]!r}", Status.UNKNOWN_PEER)
    return Hello(version, lines[1], caller, rest)


def encode_status(status: int) -> bytes:
    return f"{status}\n".encode()


def parse_status(line: str) -> int:
    """The status line the accepting side sent (connecting role).

    Raises:
        HandshakeError: the line is not a three-digit code (status None).
    """
    if len(line) != 3 or not line.isdigit() or not line.isascii():
        raise HandshakeError(f"malformed status line {line[:40]!r}", None)
    return int(line)
