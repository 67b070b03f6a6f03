"""Primitive codecs of the peers protocol: HAProxy's varint and a read cursor.

No I/O, no state beyond the cursor. Imports only ``stktagg.errors``.

The varint ("encoded integer", peers-protocol.md §2.2) is not LEB128: a first
byte below 240 is the whole value; otherwise the first byte carries 4 value
bits (top nibble 1111 means "more follows"), each continuation byte 7 bits
(bit 7 means "more follows"), and the encoder subtracts a bias at each step
that the decoder's plain additions cancel. The encoding is bijective: every
value has exactly one encoding, so there is no "non-minimal form" to reject.
"""

from __future__ import annotations

import struct

from .errors import RemoteProtocolError

#: Largest value the protocol carries (HAProxy encodes 64-bit integers).
VARINT_MAX_VALUE = (1 << 64) - 1
#: Any 64-bit value fits in 10 bytes; a longer run of continuation bytes is
#: garbage, and bounding it keeps a hostile peer from making us loop.
VARINT_MAX_LENGTH = 10

_BE32 = struct.Struct("!I")


class DecodeError(RemoteProtocolError):
    """A message body does not parse (truncated, overlong or out of range)."""


def encode_varint(value: int) -> bytes:
    """Encode ``value`` (0 .. 2**64-1) as a peers varint.

    Raises:
        ValueError: the value is negative or wider than 64 bits.
    """
    if value < 240:
        if value < 0:
            raise ValueError(f"varint cannot encode a negative value: {value}")
        return bytes((value,))
    if value > VARINT_MAX_VALUE:
        raise ValueError(f"varint cannot encode more than 64 bits: {value}")
    out = bytearray(((value & 0xFF) | 0xF0,))
    value = (value - 240) >> 4
    while value >= 128:
        out.append((value & 0xFF) | 0x80)
        value = (value - 128) >> 7
    out.append(value)
    return bytes(out)


def decode_varint(data: bytes | bytearray | memoryview, pos: int = 0) -> tuple[int, int] | None:
    """Decode one varint of ``data`` starting at ``pos``.

    Returns:
        ``(value, new_pos)``, or ``None`` when ``data`` ends before the varint
        does (the caller waits for more bytes).

    Raises:
        DecodeError: the varint is longer than VARINT_MAX_LENGTH bytes or its
            value is wider than 64 bits.
    """
    end = len(data)
    if pos >= end:
        return None
    value = data[pos]
    pos += 1
    if value < 240:
        return value, pos
    shift = 4
    start = pos - 1
    while True:
        if pos >= end:
            return None
        byte = data[pos]
        pos += 1
        value += byte << shift
        if byte < 128:
            break
        shift += 7
        if pos - start >= VARINT_MAX_LENGTH:
            raise DecodeError(f"varint longer than {VARINT_MAX_LENGTH} bytes")
    if value > VARINT_MAX_VALUE:
        raise DecodeError(f"varint value {value:#x} is wider than 64 bits")
    return value, pos


class Reader:
    """A bounds-checked cursor over one message body.

    Every ``read_*`` raises ``DecodeError`` naming the field when the body is
    too short, so a truncated message is a typed error and never an
    ``IndexError``.
    """

    __slots__ = ("data", "pos", "end")

    def __init__(self, data: bytes | memoryview, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def remaining(self) -> int:
        return self.end - self.pos

    def at_end(self) -> bool:
        return self.pos >= self.end

    def read_varint(self, field: str) -> int:
        decoded = decode_varint(self.data[: self.end], self.pos)
        if decoded is None:
            raise DecodeError(f"message ends inside {field}")
        value, self.pos = decoded
        return value

    def read_bytes(self, count: int, field: str) -> bytes:
        if count > self.end - self.pos:
            raise DecodeError(
                f"{field} needs {count} bytes, only {self.end - self.pos} left"
            )
        start = self.pos
        self.pos += count
        return bytes(self.data[start : self.pos])

    def read_be32(self, field: str) -> int:
        if self.end - self.pos < 4:
            raise DecodeError(f"message ends inside {field} (4 bytes)")
        (value,) = _BE32.unpack_from(self.data, self.pos)
        self.pos += 4
        return value

    def read_rest(self) -> bytes:
        start = self.pos
        self.pos = self.end
        return bytes(self.data[start : self.end])


def be32(value: int) -> bytes:
    """Four bytes, big-endian, of a 32-bit unsigned value."""
    return _BE32.pack(value)
