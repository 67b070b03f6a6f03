"""Stick-table schema: key types, data types, and the per-table value codec.

No I/O. Imports ``errors`` and ``codec`` only.

A table definition (message 0x82) announces a key type, a key length and a
bitfield of data types; every update of that table then carries the key and
one value per announced data type, in increasing type id order. This module
holds the catalog of both (peers-protocol.md §4.3 and §5.7) and compiles a
definition into a ``TableCodec`` that encodes and decodes keys and values.

Value representation (what decoded updates carry, per data type):
- SINT, UINT, ULL: ``int`` (SINT sign-extended from 64 bits, so -1 is -1);
- FRQP (frequency counter): ``(age, curr, prev)``, a plain tuple of ints;
- DICT (``server_key``): ``bytes`` of the server name, or ``None`` for "no
  value";
- arrays (``gpt``, ``gpc``, ``gpc_rate``): a tuple of the element values.
Keys are always ``bytes``: the 4 or 16 raw address bytes for ``ip``/``ipv6``,
the big-endian 4 bytes for ``integer``, the characters for ``string``, the
zero-padded bytes for ``binary``.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass

from .codec import DecodeError, Reader, be32, encode_varint
from .errors import LocalProtocolError

#: Array types hold 1 to 100 elements (HAProxy's STKTABLE_MAX_DT_ARRAY_SIZE).
MAX_ARRAY_SIZE = 100
#: The dictionary cache (server_key) has 128 slots per session and direction.
DICT_CACHE_SIZE = 128
_U64 = 1 << 64


class KeyType(enum.IntEnum):
    """Wire key-type numbers (frozen since HAProxy 2.2, issue #548)."""

    INTEGER = 2  #: be32 on the wire, key length 4
    IP = 4  #: 4 raw bytes, network order
    IPV6 = 5  #: 16 raw bytes
    STRING = 6  #: varint(length) + bytes; key length is ``len N`` + 1
    BINARY = 7  #: exactly key-length bytes, zero-padded


#: The key length HAProxy announces for the fixed-size key types.
FIXED_KEY_LENGTHS = {KeyType.INTEGER: 4, KeyType.IP: 4, KeyType.IPV6: 16}


class StdType(enum.Enum):
    """How one value of a data type is stored and encoded."""

    SINT = "sint"  #: signed 32-bit; varint of the value sign-extended to 64 bits
    UINT = "uint"  #: unsigned 32-bit; varint
    ULL = "ull"  #: unsigned 64-bit; varint
    FRQP = "frqp"  #: frequency counter: varint age, curr, prev
    DICT = "dict"  #: server_key: dictionary-cached string


class Combine(enum.Enum):
    """How the aggregator combines the peers' values of a type (DESIGN.md §3.2)."""

    SUM = "sum"  #: counters
    RATE = "rate"  #: frequency counters, summed after period alignment
    MAX = "max"  #: tags (gpt0, gpt elements)
    LATEST = "latest"  #: server_id, server_key: the most recently received


@dataclass(frozen=True, slots=True)
class DataTypeInfo:
    id: int
    name: str  #: the HAProxy config keyword
    std: StdType
    is_array: bool
    combine: Combine

    @property
    def has_period(self) -> bool:
        return self.std is StdType.FRQP

    @property
    def has_params(self) -> bool:
        """Whether a definition with an expire field must carry parameters."""
        return self.is_array or self.std is StdType.FRQP


def _info(id: int, name: str, std: StdType, combine: Combine, is_array: bool = False) -> DataTypeInfo:
    return DataTypeInfo(id, name, std, is_array, combine)


_S, _U, _L, _F, _D = StdType.SINT, StdType.UINT, StdType.ULL, StdType.FRQP, StdType.DICT
_SUM, _RATE, _MAX, _LATEST = Combine.SUM, Combine.RATE, Combine.MAX, Combine.LATEST

#: Every data type of HAProxy 2.6 to 3.x, by wire id (bit n of the bitfield).
DATA_TYPES: dict[int, DataTypeInfo] = {
    info.id: info
    for info in (
        _info(0, "server_id", _S, _LATEST),
        _info(1, "gpt0", _U, _MAX),
        _info(2, "gpc0", _U, _SUM),
        _info(3, "gpc0_rate", _F, _RATE),
        _info(4, "conn_cnt", _U, _SUM),
        _info(5, "conn_rate", _F, _RATE),
        _info(6, "conn_cur", _U, _SUM),
        _info(7, "sess_cnt", _U, _SUM),
        _info(8, "sess_rate", _F, _RATE),
        _info(9, "http_req_cnt", _U, _SUM),
        _info(10, "http_req_rate", _F, _RATE),
        _info(11, "http_err_cnt", _U, _SUM),
        _info(12, "http_err_rate", _F, _RATE),
        _info(13, "bytes_in_cnt", _L, _SUM),
        _info(14, "bytes_in_rate", _F, _RATE),
        _info(15, "bytes_out_cnt", _L, _SUM),
        _info(16, "bytes_out_rate", _F, _RATE),
        _info(17, "gpc1", _U, _SUM),
        _info(18, "gpc1_rate", _F, _RATE),
        _info(19, "server_key", _D, _LATEST),
        _info(20, "http_fail_cnt", _U, _SUM),
        _info(21, "http_fail_rate", _F, _RATE),
        _info(22, "gpt", _U, _MAX, is_array=True),
        _info(23, "gpc", _U, _SUM, is_array=True),
        _info(24, "gpc_rate", _F, _RATE, is_array=True),
        _info(25, "glitch_cnt", _U, _SUM),
        _info(26, "glitch_rate", _F, _RATE),
    )
}
DATA_TYPES_BY_NAME = {info.name: info for info in DATA_TYPES.values()}
DATA_TYPES_BY_NAME["server_name"] = DATA_TYPES[19]  # HAProxy's alias


def mask_ids(mask: int) -> list[int]:
    """The data type ids set in a definition's bitfield, in increasing order."""
    ids = []
    bit = 0
    while mask:
        if mask & 1:
            ids.append(bit)
        mask >>= 1
        bit += 1
    return ids


@dataclass(frozen=True, slots=True)
class Field:
    """One value slot of an update, as a compiled definition lays it out."""

    info: DataTypeInfo
    count: int  #: number of elements for arrays, 1 otherwise
    period: int | None  #: frequency counters: the period in ms, if announced


class DictCache:
    """One direction's 128-slot server_key cache (peers-protocol.md §5.6)."""

    __slots__ = ("slots", "index", "next_slot")

    def __init__(self) -> None:
        self.slots: list[bytes | None] = [None] * DICT_CACHE_SIZE
        self.index: dict[bytes, int] = {}
        self.next_slot = 0

    def encode(self, value: bytes | None) -> bytes:
        """Short form if ``value`` already has a slot, else the full form in the next slot."""
        if value is None:
            return b"\x00"
        slot = self.index.get(value)
        if slot is not None:
            return b"\x01" + encode_varint(slot + 1)
        slot = self.next_slot
        self.next_slot = (slot + 1) % DICT_CACHE_SIZE
        evicted = self.slots[slot]
        if evicted is not None:
            del self.index[evicted]
        self.slots[slot] = value
        self.index[value] = slot
        body = encode_varint(slot + 1) + encode_varint(len(value)) + value
        return encode_varint(len(body)) + body

    def decode(self, reader: Reader) -> bytes | None:
        length = reader.read_varint("server_key length")
        if length == 0:
            return None
        end = reader.pos + length
        if end > reader.end:
            raise DecodeError("server_key runs past the end of the message")
        ident = reader.read_varint("server_key id")
        if not 1 <= ident <= DICT_CACHE_SIZE:
            raise DecodeError(f"server_key cache id {ident} is outside 1..{DICT_CACHE_SIZE}")
        if reader.pos == end:
            value = self.slots[ident - 1]
            if value is None:
                raise DecodeError(f"server_key cache id {ident} refers to an empty slot")
            return value
        size = reader.read_varint("server_key value length")
        value = reader.read_bytes(size, "server_key value")
        if reader.pos != end:
            raise DecodeError("server_key length does not match its content")
        old = self.slots[ident - 1]
        if old is not None and self.index.get(old) == ident - 1:
            del self.index[old]
        self.slots[ident - 1] = value
        self.index[value] = ident - 1
        return value


class TableCodec:
    """Keys and values of one table definition, compiled once.

    ``decodable`` is False when HAProxy would ignore the definition's updates
    (unknown key type, or an array type whose size was not announced); the
    decoder then leaves that table's updates unparsed.
    """

    def __init__(self, key_type: int, key_len: int, mask: int, params: tuple[tuple[int, ...], ...]) -> None:
        self.key_type = key_type
        self.key_len = key_len
        self.mask = mask
        sizes = {rec[0]: rec[1] for rec in params if DATA_TYPES.get(rec[0]) and DATA_TYPES[rec[0]].is_array}
        periods = {rec[0]: rec[-1] for rec in params if DATA_TYPES.get(rec[0]) and DATA_TYPES[rec[0]].has_period}
        fields = []
        self.unknown_types = False
        self.decodable = key_type in KeyType.__members__.values()
        for type_id in mask_ids(mask):
            info = DATA_TYPES.get(type_id)
            if info is None:
                # Unknown (newer) types come last: their values are left in the
                # message's unparsed tail, as HAProxy does.
                self.unknown_types = True
                break
            count = sizes.get(type_id, 1)
            if info.is_array and type_id not in sizes:
                self.decodable = False
            if not 1 <= count <= MAX_ARRAY_SIZE:
                self.decodable = False
            fields.append(Field(info, count, periods.get(type_id)))
        self.fields: tuple[Field, ...] = tuple(fields)

    # -- keys ---------------------------------------------------------------

    def decode_key(self, reader: Reader) -> bytes:
        if self.key_type == KeyType.STRING:
            size = reader.read_varint("string key length")
            return reader.read_bytes(size, "string key")
        if self.key_type == KeyType.INTEGER:
            return reader.read_bytes(4, "integer key")
        return reader.read_bytes(self.key_len, "key")

    def encode_key(self, key: bytes) -> bytes:
        if not isinstance(key, (bytes, bytearray)):
            raise LocalProtocolError(f"a key must be bytes, not {type(key).__name__}: {key!r}")
        if self.key_type == KeyType.STRING:
            return encode_varint(len(key)) + key
        expected = 4 if self.key_type == KeyType.INTEGER else self.key_len
        if len(key) != expected:
            raise LocalProtocolError(f"key of {len(key)} bytes for a key length of {expected}")
        return key

    # -- values -------------------------------------------------------------

    def decode_values(self, reader: Reader, dcache: DictCache) -> tuple:
        values = []
        for field in self.fields:
            if field.info.is_array:
                values.append(tuple(_decode_one(reader, field.info, dcache) for _ in range(field.count)))
            else:
                values.append(_decode_one(reader, field.info, dcache))
        return tuple(values)

    def encode_values(self, values: tuple, dcache: DictCache) -> bytes:
        """The values of one update, in field order.

        Server keys go through the dictionary cache only once every other
        field has encoded: a refused update must not take a cache slot the
        receiver never hears of.

        Raises:
            LocalProtocolError: values that do not fit the layout or the wire.
        """
        if len(values) != len(self.fields):
            raise LocalProtocolError(f"{len(values)} values for a table with {len(self.fields)} data types")
        parts: list[bytes | None] = []
        dict_values: list[tuple[int, object]] = []
        for field, value in zip(self.fields, values):
            elements = value if field.info.is_array else (value,)
            if field.info.is_array and (not isinstance(value, (tuple, list)) or len(value) != field.count):
                raise LocalProtocolError(f"{field.info.name} needs {field.count} elements, got {value!r}")
            for element in elements:
                if field.info.std is StdType.DICT:
                    if element is not None and not isinstance(element, bytes):
                        raise LocalProtocolError(f"server_key value must be bytes or None: {element!r}")
                    dict_values.append((len(parts), element))
                    parts.append(None)
                else:
                    parts.append(_encode_one(element, field.info))
        for index, element in dict_values:
            parts[index] = dcache.encode(element)  # type: ignore[arg-type]
        return b"".join(parts)  # type: ignore[arg-type]


def _decode_one(reader: Reader, info: DataTypeInfo, dcache: DictCache) -> object:
    std = info.std
    if std is StdType.FRQP:
        return (reader.read_varint(info.name), reader.read_varint(info.name), reader.read_varint(info.name))
    if std is StdType.DICT:
        return dcache.decode(reader)
    value = reader.read_varint(info.name)
    if std is StdType.SINT and value >= 1 << 63:
        value -= _U64
    return value


def _encode_one(value: object, info: DataTypeInfo) -> bytes:
    """One element on the wire, after checking it is what its type holds."""
    if info.std is StdType.FRQP:
        if not isinstance(value, (tuple, list)) or len(value) != 3:
            raise LocalProtocolError(f"{info.name} needs (age, curr, prev), got {value!r}")
        return b"".join(_encode_unsigned(v, info) for v in value)
    if info.std is StdType.SINT and isinstance(value, int) and -(1 << 63) <= value < 0:
        value += _U64
    return _encode_unsigned(value, info)


def _encode_unsigned(value: object, info: DataTypeInfo) -> bytes:
    if not isinstance(value, int) or not 0 <= value < _U64:
        raise LocalProtocolError(f"{info.name}: {value!r} is not a 64-bit integer of its type")
    return encode_varint(value)


@functools.lru_cache(maxsize=1024)
def compile_codec(key_type: int, key_len: int, mask: int, params: tuple[tuple[int, ...], ...]) -> TableCodec:
    """The (cached) codec of a definition's key and value layout."""
    return TableCodec(key_type, key_len, mask, params)


def expected_params(mask: int) -> list[DataTypeInfo]:
    """The known data types of ``mask`` that carry definition parameters, in order."""
    return [DATA_TYPES[i] for i in mask_ids(mask) if i in DATA_TYPES and DATA_TYPES[i].has_params]


def format_ipv6(packed: bytes) -> str:
    """16 bytes as HAProxy prints an IPv6 key: glibc's ``inet_ntop`` form, written out here
    (the protocol core does no I/O, and Python's own form differs for IPv4-mapped addresses,
    and between 3.11 and 3.13).

    The longest run of two or more zero words (the first of equal runs) becomes ``::``;
    words are lowercase hex without leading zeros; the last 32 bits are written as an
    IPv4 address after ``::ffff:`` and after six zero words, or after seven unless the
    last word is 1 (``::1``).
    """
    words = [packed[i] << 8 | packed[i + 1] for i in range(0, 16, 2)]
    best_base, best_len, base = -1, 0, -1
    for i, word in enumerate([*words, 1]):  # the 1 ends a run that reaches the end
        if word == 0:
            if base < 0:
                base = i
        elif base >= 0:
            if i - base > best_len:
                best_base, best_len = base, i - base
            base = -1
    if best_len < 2:
        best_base, best_len = -1, 0
    out = []
    i = 0
    while i < 8:
        if i == best_base:
            out.append(":" if i == 0 else "")
            i += best_len
            if i == 8:
                out.append("")
            continue
        if i == 6 and best_base == 0 and (best_len == 6 or (best_len == 7 and words[7] != 1)
                                          or (best_len == 5 and words[5] == 0xFFFF)):
            out.append(".".join(str(b) for b in packed[12:]))
            break
        out.append(f"{words[i]:x}")
        i += 1
    return ":".join(out)


def format_key(key_type: int, key: bytes) -> str:
    """A key as HAProxy's ``show table`` prints it."""
    if key_type == KeyType.IP and len(key) == 4:
        return f"{key[0]}.{key[1]}.{key[2]}.{key[3]}"  # ipaddress' form, 5 times faster (dumps, scans)
    if key_type == KeyType.IPV6 and len(key) == 16:
        return format_ipv6(key)
    if key_type == KeyType.INTEGER and len(key) == 4:
        return str(int.from_bytes(key, "big"))
    if key_type == KeyType.STRING:
        return key.decode("utf-8", "backslashreplace")
    return key.hex().upper()


def integer_key(value: int) -> bytes:
    """The 4 key bytes of an ``integer`` table key."""
    return be32(value & 0xFFFFFFFF)
