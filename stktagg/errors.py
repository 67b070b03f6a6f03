"""The exception hierarchy of stktagg.

This module must not import any other stktagg module: every other module
imports it, so it stays a leaf.

Rules (see docs/ARCHITECTURE.md):
- every error raised on purpose by stktagg derives from ``StktaggError``;
- a protocol error carries the peers error message to send before closing
  (``error_code``), so the layer that owns the socket never has to guess;
- ``RemoteProtocolError`` means the peer broke the protocol,
  ``LocalProtocolError`` means our own code asked for something the protocol
  forbids (a bug, or an API misuse).
"""

from __future__ import annotations

import enum


class PeersErrorCode(enum.IntEnum):
    """Type byte of the peers "error" class (class 1) messages."""

    #: ``01 00``: a message was malformed; the sender closes right after.
    PROTOCOL_ERROR = 0
    #: ``01 01``: a message length was over the receiver's buffer size.
    SIZE_LIMIT = 1


class StktaggError(Exception):
    """Root of every error stktagg raises on purpose."""


class ProtocolError(StktaggError):
    """The peers protocol was broken. Do not raise this class directly."""

    error_code: PeersErrorCode | None = PeersErrorCode.PROTOCOL_ERROR

    def __init__(self, message: str, error_code: PeersErrorCode | None = None) -> None:
        super().__init__(message)
        if error_code is not None:
            self.error_code = error_code


class RemoteProtocolError(ProtocolError):
    """The remote peer sent something the protocol does not allow."""


class MessageTooLarge(RemoteProtocolError):
    """A message announced a payload larger than our size limit."""

    error_code = PeersErrorCode.SIZE_LIMIT

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(f"message length {length} is over the limit of {limit} bytes")
        self.length = length
        self.limit = limit


class LocalProtocolError(ProtocolError):
    """Our own code tried to send something the protocol does not allow."""

    error_code = None


class HandshakeError(RemoteProtocolError):
    """The hello or status line exchange failed.

    ``status`` is the status code to answer with when we are the accepting
    side (``None`` when the right answer is to close without a word, as
    HAProxy does for an unterminated line), or the code the remote answered
    when we are the connecting side.
    """

    error_code = None

    def __init__(self, message: str, status: int | None) -> None:
        super().__init__(message)
        self.status = status


class ConfigError(StktaggError):
    """A configuration file is invalid.

    Rendered as ``<path>:<line>:<col>: <message>`` (lines and columns count
    from 1), like a compiler, so editors can jump to it.
    """

    def __init__(self, msg: str, path: str, lineno: int, colno: int) -> None:
        super().__init__(f"{path}:{lineno}:{colno}: {msg}")
        self.msg = msg
        self.path = path
        self.lineno = lineno
        self.colno = colno


class CliError(StktaggError):
    """A runtime CLI command could not be carried out (reported to the client)."""


class ApiError(StktaggError):
    """A dashboard API request could not be answered: the HTTP status to answer, and why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
