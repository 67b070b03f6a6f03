"""Peers protocol messages: bytes <-> message objects, incrementally.

No I/O, no clock, no threads. Imports ``errors``, ``codec`` and ``schema``.

Layers, bottom up:
- ``FrameDecoder`` cuts a byte stream into frames (class, type, payload). It
  returns ``None`` until a whole frame is buffered, never loses partial
  input, and checks a frame's announced length against the size limit
  *before* buffering its body.
- ``MessageDecoder`` turns frames into message objects for one direction of
  one session. Updates can only be parsed with the definition of the table
  they belong to, and ``server_key`` values with the direction's dictionary
  cache, so the decoder keeps that context (peers-protocol.md §5.8).
- ``MessageEncoder`` is its mirror for the sending direction: message
  objects to bytes, keeping the same context so that what it writes is what
  a ``MessageDecoder`` on the other end reads back.

Messages are frozen dataclasses. A message the decoder does not understand
(an unknown class or type, or an update of a table it cannot parse) comes out
as ``RawMessage`` with its exact bytes, which HAProxy ignores too (§2.1).
"""

from __future__ import annotations

import enum
import functools
import struct
from dataclasses import dataclass
from typing import Union

from .codec import VARINT_MAX_LENGTH, VARINT_MAX_VALUE, DecodeError, Reader, be32, decode_varint, encode_varint
from .codegen import compile_function
from .errors import LocalProtocolError, MessageTooLarge, PeersErrorCode
from .schema import DictCache, KeyType, StdType, TableCodec, compile_codec, expected_params

#: Largest payload we accept. HAProxy builds its messages in a buffer of
#: ``tune.bufsize`` (16384 by default) and refuses larger ones with ``01 01``;
#: the biggest real message (a gpc_rate(100) array) is under 2 kB.
MAX_MESSAGE_SIZE = 16384
#: HAProxy reads at most 5 bytes of length varint (PEER_MSG_ENC_LENGTH_MAXLEN).
LENGTH_VARINT_MAX = 5
#: Compact the receive buffer once this much of it has been consumed.
_COMPACT_THRESHOLD = 65536


class MsgClass(enum.IntEnum):
    CONTROL = 0  #: resync and heartbeat, 2 bytes
    ERROR = 1  #: protocol error / size limit, 2 bytes
    STICK_TABLE = 10  #: definitions, updates, acks
    RESERVED = 255  #: HAProxy answers a protocol error


class ControlType(enum.IntEnum):
    RESYNC_REQUEST = 0  #: "teach me all you know"
    RESYNC_FINISHED = 1  #: end of a teach, teacher up to date
    RESYNC_PARTIAL = 2  #: end of a teach, teacher not up to date itself
    RESYNC_CONFIRM = 3  #: the learner received the teach
    HEARTBEAT = 4  #: keepalive after 3 s without sending


class StkType(enum.IntEnum):
    UPDATE = 0x80  #: be32 id, key, values
    INCREMENTAL_UPDATE = 0x81  #: key, values; id = previous + 1
    DEFINITION = 0x82
    SWITCH = 0x83  #: never sent by HAProxy
    ACK = 0x84  #: varint table id, be32 update id
    UPDATE_TIMED = 0x85  #: be32 id, be32 expire ms, key, values
    INCREMENTAL_UPDATE_TIMED = 0x86  #: be32 expire ms, key, values


UPDATE_TYPES = frozenset(
    (StkType.UPDATE, StkType.INCREMENTAL_UPDATE, StkType.UPDATE_TIMED, StkType.INCREMENTAL_UPDATE_TIMED)
)
_TIMED = frozenset((StkType.UPDATE_TIMED, StkType.INCREMENTAL_UPDATE_TIMED))
_INCREMENTAL = frozenset((StkType.INCREMENTAL_UPDATE, StkType.INCREMENTAL_UPDATE_TIMED))
#: Plain ints for the per-frame check of the run decoder's path.
_RUN_TYPES = frozenset(int(t) for t in UPDATE_TYPES)
_STICK_TABLE = int(MsgClass.STICK_TABLE)


# -- messages ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Control:
    type: ControlType


@dataclass(frozen=True, slots=True)
class PeerError:
    type: PeersErrorCode


@dataclass(frozen=True, slots=True)
class TableDefinition:
    """Message 0x82 (peers-protocol.md §4).

    ``params`` holds the per-type parameter records as on the wire:
    ``(type, period)``, ``(type, count)`` or ``(type, count, period)``.
    ``trailing`` holds bytes after the fields we know (records of unknown
    types, future extensions); HAProxy skips them and so do we.
    """

    table_id: int
    name: bytes
    key_type: int
    key_len: int
    data_types: int
    expire: int | None = None
    params: tuple[tuple[int, ...], ...] = ()
    trailing: bytes = b""

    @property
    def codec(self) -> TableCodec:
        return compile_codec(self.key_type, self.key_len, self.data_types, self.params)

    @property
    def params_complete(self) -> bool:
        """Whether HAProxy accepts the definition's parameters (peers-protocol.md §4.5 step 6).

        With an expire field, every rate and array type needs its record;
        without one (the old short form), no array type may be present.
        """
        if self.expire is None:
            return not any(info.is_array for info in expected_params(self.data_types))
        announced = {rec[0] for rec in self.params}
        return all(info.id in announced for info in expected_params(self.data_types))

    def periods(self) -> dict[int, int]:
        from .schema import DATA_TYPES

        return {r[0]: r[-1] for r in self.params if r[0] in DATA_TYPES and DATA_TYPES[r[0]].has_period}


@dataclass(frozen=True, slots=True)
class TableSwitch:
    table_id: int


@dataclass(frozen=True, slots=True)
class Ack:
    table_id: int  #: the id the *sender of the updates* gave the table
    update_id: int


@dataclass(frozen=True, slots=True)
class Update:
    """Messages 0x80, 0x81, 0x85, 0x86 (peers-protocol.md §5).

    ``update_id`` is explicit for 0x80/0x85 and implied (previous + 1 in that
    table) for 0x81/0x86; the decoder fills it in either way. ``expire`` is
    the remaining ms of timed updates, ``None`` otherwise.
    """

    type: StkType
    table_id: int
    update_id: int
    key: bytes
    values: tuple
    expire: int | None = None
    trailing: bytes = b""


@dataclass(frozen=True, slots=True)
class RawMessage:
    """A message kept as bytes: unknown class or type, or an unparsable update."""

    msg_class: int
    msg_type: int
    payload: bytes = b""
    reason: str = ""


Message = Union[Control, PeerError, TableDefinition, TableSwitch, Ack, Update, RawMessage]


# -- framing --------------------------------------------------------------------


class FrameDecoder:
    """Cuts a byte stream into ``(class, type, payload)`` frames."""

    def __init__(self, max_size: int = MAX_MESSAGE_SIZE) -> None:
        self.max_size = max_size
        self._buf = bytearray()
        self._pos = 0
        # A bytes copy of the buffer from ``_frozen_base`` on, for the run
        # decoder (slicing bytes yields bytes: one copy per key, not two).
        # Made at most once per feed, whatever the frames in between, so a
        # read costs time linear in its size (issue 14).
        self._frozen: bytes | None = None
        self._frozen_base = 0

    def feed(self, data: bytes) -> None:
        if self._pos >= _COMPACT_THRESHOLD or self._pos == len(self._buf):
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data
        self._frozen = None

    def buffered(self) -> int:
        """Bytes received but not yet returned as a frame."""
        return len(self._buf) - self._pos

    def take_buffered(self) -> bytes:
        """Remove and return the unparsed input (used when a session ends)."""
        data = bytes(self._buf[self._pos :])
        self._buf.clear()
        self._pos = 0
        self._frozen = None
        return data

    def frozen(self) -> tuple[bytes, int]:
        """The unparsed input as ``bytes``, and the read position in it.

        The copy is made at most once per ``feed``; consume from it with
        ``advance``.
        """
        if self._frozen is None:
            self._frozen = bytes(self._buf[self._pos :])
            self._frozen_base = self._pos
        return self._frozen, self._pos - self._frozen_base

    def advance(self, count: int) -> None:
        """Mark ``count`` bytes after the read position as consumed."""
        self._pos += count

    def update_frame_ahead(self) -> bool:
        """Whether an update frame starts at the read position and may be whole.

        Cheap (no copy): lets the run decoder skip acks, heartbeats,
        definitions and incomplete frames without freezing the buffer.
        """
        buf, pos = self._buf, self._pos
        if len(buf) - pos < 3 or buf[pos] != _STICK_TABLE or buf[pos + 1] not in _RUN_TYPES:
            return False
        length = buf[pos + 2]
        return length >= 240 or pos + 3 + length <= len(buf)

    def next_frame(self) -> tuple[int, int, bytes, bytes] | None:
        """The next whole frame as ``(class, type, payload, frame_bytes)``, or None.

        Raises:
            DecodeError: the length varint is longer than 5 bytes.
            MessageTooLarge: the announced length is over ``max_size``.
        """
        buf, pos = self._buf, self._pos
        if len(buf) - pos < 2:
            return None
        msg_class, msg_type = buf[pos], buf[pos + 1]
        if msg_type < 0x80:
            self._pos = pos + 2
            return msg_class, msg_type, b"", bytes(buf[pos : pos + 2])
        decoded = decode_varint(buf, pos + 2)
        if decoded is None:
            if len(buf) - pos - 2 >= LENGTH_VARINT_MAX:
                raise DecodeError(f"length varint longer than {LENGTH_VARINT_MAX} bytes")
            return None
        length, start = decoded
        if start - pos - 2 > LENGTH_VARINT_MAX:
            raise DecodeError(f"length varint longer than {LENGTH_VARINT_MAX} bytes")
        if length > self.max_size:
            raise MessageTooLarge(length, self.max_size)
        end = start + length
        if end > len(buf):
            return None
        self._pos = end
        return msg_class, msg_type, bytes(buf[start:end]), bytes(buf[pos:end])


def frame(msg_class: int, msg_type: int, payload: bytes = b"") -> bytes:
    """The bytes of one message: header, then length and payload if type >= 0x80."""
    if msg_type < 0x80:
        return bytes((msg_class, msg_type))
    return bytes((msg_class, msg_type)) + encode_varint(len(payload)) + payload


# -- decoding --------------------------------------------------------------------


class MessageDecoder:
    """Decodes one direction of one session: bytes in, messages out.

    Keeps the receiver's context of peers-protocol.md §5.8: the table
    definitions by the sender's id, the current table, the last update id per
    table (for implied ids) and the dictionary cache.
    """

    def __init__(self, max_size: int = MAX_MESSAGE_SIZE) -> None:
        self.frames = FrameDecoder(max_size)
        self.tables: dict[int, TableDefinition] = {}
        self.current: TableDefinition | None = None
        self.last_update_id: dict[int, int] = {}
        self.dcache = DictCache()

    def feed(self, data: bytes) -> None:
        self.frames.feed(data)

    def next_message(self) -> Message | None:
        """The next whole message, or None until more bytes arrive.

        Raises:
            RemoteProtocolError (DecodeError, MessageTooLarge): the stream is
                broken; the error's ``error_code`` is the message to send
                before closing.
        """
        got = self.frames.next_frame()
        if got is None:
            return None
        msg_class, msg_type, payload, _ = got
        return self.decode_frame(msg_class, msg_type, payload)

    def next_run(self, limit: int = 1 << 20) -> tuple[TableDefinition, list, int] | None:
        """A run of whole update frames of the current table, decoded fast.

        Returns ``(table, [(key, values, expire), ...], last update id)``, or
        None when the next frame is anything else (then call ``next_message``).
        """
        table = self.current
        frames = self.frames
        if table is None or not frames.update_frame_ahead():
            return None
        decode = compile_run_decoder(table.key_type, table.key_len, table.data_types, table.params)
        if decode is None:
            return None
        last = self.last_update_id.get(table.table_id, 0)
        data, start = frames.frozen()
        items, pos, last = decode(data, start, len(data), last, limit, frames.max_size)
        if not items:
            return None
        frames.advance(pos - start)
        self.last_update_id[table.table_id] = last
        return table, items, last

    def decode_frame(self, msg_class: int, msg_type: int, payload: bytes) -> Message:
        if msg_class == MsgClass.STICK_TABLE:
            return self._decode_stick_table(msg_type, payload)
        if msg_class == MsgClass.CONTROL and msg_type in ControlType._value2member_map_:
            return Control(ControlType(msg_type))
        if msg_class == MsgClass.ERROR and msg_type in PeersErrorCode._value2member_map_:
            return PeerError(PeersErrorCode(msg_type))
        if msg_class == MsgClass.RESERVED:
            raise DecodeError("message class 255 is reserved")
        return RawMessage(msg_class, msg_type, payload, "unknown message")

    def _decode_stick_table(self, msg_type: int, payload: bytes) -> Message:
        reader = Reader(payload)
        if msg_type in UPDATE_TYPES:
            return self._decode_update(StkType(msg_type), reader)
        if msg_type == StkType.DEFINITION:
            definition = decode_definition(reader)
            self.tables[definition.table_id] = definition
            self.current = definition
            return definition
        if msg_type == StkType.ACK:
            table_id = reader.read_varint("ack table id")
            return Ack(table_id, reader.read_be32("ack update id"))
        if msg_type == StkType.SWITCH:
            table_id = reader.read_varint("switch table id")
            self.current = self.tables.get(table_id)
            return TableSwitch(table_id)
        return RawMessage(MsgClass.STICK_TABLE, msg_type, payload, "unknown stick-table message")

    def _decode_update(self, msg_type: StkType, reader: Reader) -> Message:
        table = self.current
        if table is None or not table.codec.decodable:
            why = "update without a table definition" if table is None else "update of an unparsable table"
            return RawMessage(MsgClass.STICK_TABLE, msg_type, bytes(reader.data), why)
        if msg_type in _INCREMENTAL:
            update_id = (self.last_update_id.get(table.table_id, 0) + 1) & 0xFFFFFFFF
        else:
            update_id = reader.read_be32("update id")
        expire = reader.read_be32("update expire") if msg_type in _TIMED else None
        codec = table.codec
        key = codec.decode_key(reader)
        values = codec.decode_values(reader, self.dcache)
        self.last_update_id[table.table_id] = update_id
        return Update(msg_type, table.table_id, update_id, key, values, expire, reader.read_rest())


def decode_definition(reader: Reader) -> TableDefinition:
    """Parse the payload of a 0x82 message (peers-protocol.md §4.1)."""
    table_id = reader.read_varint("table id")
    name_len = reader.read_varint("table name length")
    if name_len == 0:
        raise DecodeError("table definition with an empty name")
    name = reader.read_bytes(name_len, "table name")
    key_type = reader.read_varint("key type")
    key_len = reader.read_varint("key length")
    mask = reader.read_varint("data types")
    if reader.at_end():
        return TableDefinition(table_id, name, key_type, key_len, mask)
    expire = reader.read_varint("expire")
    params = []
    for info in expected_params(mask):
        mark = reader.pos
        decoded = decode_varint(reader.data, reader.pos)
        if decoded is None or decoded[0] != info.id:
            reader.pos = mark  # missing record: HAProxy ignores the definition
            break
        reader.pos = decoded[1]
        record: tuple[int, ...] = (info.id,)
        if info.is_array:
            record += (reader.read_varint(f"{info.name} size"),)
        if info.has_period:
            record += (reader.read_varint(f"{info.name} period"),)
        params.append(record)
    return TableDefinition(table_id, name, key_type, key_len, mask, expire, tuple(params), reader.read_rest())


# -- encoding --------------------------------------------------------------------


class MessageEncoder:
    """Encodes one direction of one session: messages in, bytes out.

    Mirrors ``MessageDecoder``'s context so the bytes are exactly what the
    receiver expects: an update is encoded with the layout of the table
    defined last, an incremental update only when its id is previous + 1,
    and server keys through this direction's dictionary cache.
    """

    def __init__(self) -> None:
        self.tables: dict[int, TableDefinition] = {}
        self.current: TableDefinition | None = None
        self.last_update_id: dict[int, int] = {}
        self.dcache = DictCache()

    def encode(self, msg: Message) -> bytes:
        """The bytes of ``msg``.

        Raises:
            LocalProtocolError: the message cannot be sent in this context
                (an update of a table that is not the current one, an implied
                id that is not previous + 1, values not matching the layout).
        """
        if isinstance(msg, Update):
            return self._encode_update(msg)
        if isinstance(msg, Control):
            return frame(MsgClass.CONTROL, msg.type)
        if isinstance(msg, Ack):
            return frame(MsgClass.STICK_TABLE, StkType.ACK, encode_varint(msg.table_id) + be32(msg.update_id))
        if isinstance(msg, TableDefinition):
            data = frame(MsgClass.STICK_TABLE, StkType.DEFINITION, encode_definition(msg))
            self.tables[msg.table_id] = msg  # only once encoding succeeded
            self.current = msg
            return data
        if isinstance(msg, PeerError):
            return frame(MsgClass.ERROR, msg.type)
        if isinstance(msg, TableSwitch):
            self.current = self.tables.get(msg.table_id)
            return frame(MsgClass.STICK_TABLE, StkType.SWITCH, encode_varint(msg.table_id))
        if isinstance(msg, RawMessage):
            if msg.msg_type < 0x80 and msg.payload:
                raise LocalProtocolError("a message of type below 0x80 cannot carry a payload")
            return frame(msg.msg_class, msg.msg_type, msg.payload)
        raise LocalProtocolError(f"not a peers message: {msg!r}")

    def _encode_update(self, msg: Update) -> bytes:
        table = self.current
        if table is None or table.table_id != msg.table_id:
            raise LocalProtocolError(f"update of table {msg.table_id} while the current table is not it")
        parts = []
        if msg.type in _INCREMENTAL:
            implied = (self.last_update_id.get(msg.table_id, 0) + 1) & 0xFFFFFFFF
            if msg.update_id != implied:
                raise LocalProtocolError(f"incremental update id {msg.update_id}, expected {implied}")
        else:
            parts.append(be32(_u32(msg.update_id, "update id")))
        if msg.type in _TIMED:
            if msg.expire is None:
                raise LocalProtocolError("a timed update needs an expire value")
            parts.append(be32(_u32(msg.expire, "expire")))
        codec = table.codec
        parts.append(codec.encode_key(msg.key))
        parts.append(codec.encode_values(msg.values, self.dcache))
        parts.append(msg.trailing)
        self.last_update_id[msg.table_id] = msg.update_id
        return frame(MsgClass.STICK_TABLE, msg.type, b"".join(parts))


def _u32(value: object, what: str) -> int:
    if not isinstance(value, int) or not 0 <= value <= 0xFFFFFFFF:
        raise LocalProtocolError(f"{what} {value!r} is not a 32-bit unsigned integer")
    return value


def encode_definition(msg: TableDefinition) -> bytes:
    """The payload of a 0x82 message."""
    if not msg.name:
        raise LocalProtocolError("a table definition needs a name")
    parts = [
        encode_varint(msg.table_id),
        encode_varint(len(msg.name)),
        msg.name,
        encode_varint(msg.key_type),
        encode_varint(msg.key_len),
        encode_varint(msg.data_types),
    ]
    if msg.expire is not None:
        parts.append(encode_varint(msg.expire))
        parts.extend(encode_varint(v) for record in msg.params for v in record)
    elif msg.params or msg.trailing:
        # Without an expire field, parameters or extra bytes would be read
        # back as the expire: refuse rather than send another message.
        raise LocalProtocolError("a definition without expire cannot carry parameters or trailing bytes")
    parts.append(msg.trailing)
    return b"".join(parts)


# -- fast path: runs of updates --------------------------------------------------------
#
# Most of what a peer sends is updates of one table, back to back. Decoding
# each into an ``Update`` object costs several microseconds; the run decoder
# below, generated once per table layout, turns a run of update frames into
# ``(key, values, expire)`` tuples in one loop with the one-byte varint case
# inlined. It stops, leaving the frame to the general decoder, at the first
# frame it does not handle exactly (another message, an incomplete frame, a
# layout it was not generated for, extra bytes, anything unusual), so every
# error keeps the general decoder's precise semantics. ``buf`` is ``bytes``
# (``FrameDecoder.frozen``): a slice of it is the key, with no copy of a copy.

_RUN_TEMPLATE = '''
def decode_run(buf, pos, end, last_id, limit, max_size):
    items = []
    append = items.append
    while len(items) < limit and end - pos >= 3 and buf[pos] == 10:
        typ = buf[pos + 1]
        if typ < 0x80 or typ > 0x86 or typ == 0x82 or typ == 0x83 or typ == 0x84:
            break
        n = buf[pos + 2]
        if n < 240:
            p = pos + 3
        else:
            got = varint(buf, pos + 2)
            if got is None:
                break
            n, p = got
        if n > max_size:
            break
        stop = p + n
        if stop > end:
            break
        try:
            if typ == 0x80 or typ == 0x85:
                uid = be32(buf, p)[0]
                p += 4
            else:
                uid = (last_id + 1) & 0xFFFFFFFF
            if typ >= 0x85:
                expire = be32(buf, p)[0]
                p += 4
            else:
                expire = None
{body}
        except (IndexError, StructError):  # a short frame: the general decoder says why
            break
        if p != stop:
            break
        append((key, values, expire))
        last_id = uid
        pos = stop
    return items, pos, last_id
'''


def _gen_varint(target: str, indent: str) -> list[str]:
    # The multi-byte case inlined too: counters soon pass 240, and a call
    # returning a tuple costs as much as the rest of a field's decoding. A
    # varint longer than VARINT_MAX_LENGTH, or wider than 64 bits, stops the
    # run (IndexError): the general decoder then raises the typed error.
    return [
        f"{indent}{target} = buf[p]",
        f"{indent}p += 1",
        f"{indent}if {target} >= 240:",
        f"{indent}    shift = 4",
        f"{indent}    while True:",
        f"{indent}        b = buf[p]",
        f"{indent}        p += 1",
        f"{indent}        {target} += b << shift",
        f"{indent}        if b < 128:",
        f"{indent}            break",
        f"{indent}        shift += 7",
        f"{indent}        if shift > {4 + 7 * (VARINT_MAX_LENGTH - 2)}:",
        f"{indent}            raise IndexError",
        f"{indent}    if {target} > {VARINT_MAX_VALUE}:",
        f"{indent}        raise IndexError",
    ]


def _value_layout(codec: TableCodec) -> tuple[str, list[tuple[str, StdType]]] | None:
    """For the code generators: the source of a layout's values tuple, and its scalars in
    wire order with their storage type. None for a layout with a server key."""
    shapes, scalars = [], []
    for index, f in enumerate(codec.fields):
        if f.info.std is StdType.DICT:
            return None
        elements = []
        for element in range(f.count):
            base = f"f{index}_{element}"
            if f.info.std is StdType.FRQP:
                trio = [f"{base}_{k}" for k in range(3)]
                scalars += [(name, StdType.UINT) for name in trio]
                elements.append(f"({', '.join(trio)})")
            else:
                scalars.append((base, f.info.std))
                elements.append(base)
        shapes.append(f"({', '.join(elements)},)" if f.info.is_array else elements[0])
    return (f"({', '.join(shapes)},)" if shapes else "()"), scalars


@functools.lru_cache(maxsize=256)
def compile_run_decoder(key_type: int, key_len: int, mask: int, params: tuple[tuple[int, ...], ...]):
    """The generated run decoder of a table layout, or None when it has none.

    Server keys (dictionary cache) and newer unknown types are left to the
    general decoder.
    """
    codec = compile_codec(key_type, key_len, mask, params)
    if not codec.decodable or codec.unknown_types:
        return None
    indent = " " * 12
    lines = []
    if key_type == KeyType.STRING:
        lines += _gen_varint("klen", indent)
        lines += [f"{indent}key = buf[p:p + klen]", f"{indent}p += klen",
                  f"{indent}if p > stop:", f"{indent}    break"]
    else:
        size = 4 if key_type == KeyType.INTEGER else key_len
        lines += [f"{indent}key = buf[p:p + {size}]", f"{indent}p += {size}"]
    layout = _value_layout(codec)
    if layout is None:
        return None
    shape, scalars = layout
    for name, std in scalars:
        lines += _gen_varint(name, indent)
        if std is StdType.SINT:
            lines += [f"{indent}if {name} >= 1 << 63:", f"{indent}    {name} -= 1 << 64"]
    lines.append(f"{indent}values = {shape}")
    namespace = {"varint": decode_varint, "be32": _BE32_FROM.unpack_from, "StructError": struct.error}
    return compile_function(_RUN_TEMPLATE.format(body="\n".join(lines)), "decode_run", namespace,
                            f"run decoder, {_layout_label(key_type, key_len, mask, params)}")


def _layout_label(key_type: int, key_len: int, mask: int, params: tuple[tuple[int, ...], ...]) -> str:
    """A table layout in words, for the file names of generated code."""
    kind = KeyType(key_type).name.lower() if key_type in KeyType._value2member_map_ else str(key_type)
    return f"key {kind}/{key_len}, data types {mask:#x}, params {params}"


_BE32_FROM = struct.Struct("!I")


_SMALL_VARINTS = [bytes((v,)) for v in range(240)]


def _varint_bytes(value: int) -> bytes:
    return _SMALL_VARINTS[value] if 0 <= value < 240 else encode_varint(value)


@functools.lru_cache(maxsize=256)
def compile_body_encoder(key_type: int, key_len: int, mask: int, params: tuple[tuple[int, ...], ...]):
    """A function (key, values) -> the key and values part of an update, or None.

    Generated once per table layout; the aggregator encodes a changed key's
    body once and sends the same bytes to every peer, each with its own
    header and update id. None for layouts with server keys (their encoding
    depends on each session's dictionary cache).
    """
    codec = compile_codec(key_type, key_len, mask, params)
    if not codec.decodable or codec.unknown_types:
        return None
    layout = _value_layout(codec)
    if layout is None:
        return None
    shape, scalars = layout
    parts = [f"V({n} + (1 << 64) if {n} < 0 else {n})" if std is StdType.SINT
             else f"(S[{n}] if 0 <= {n} < 240 else V({n}))" for n, std in scalars]
    if key_type == KeyType.STRING:
        key_part = "V(len(key)) + key"
    else:
        size = 4 if key_type == KeyType.INTEGER else key_len
        key_part = f"key if len(key) == {size} else bad(key)"
    values_part = ", ".join(parts) if parts else "b''"
    unpack_line = f"        {shape} = values\n" if scalars else ""
    # No checks on the way: values the table made are right. Whatever fails is
    # explained by the general codec, which names the wrong value (a typed
    # error); a failure it finds nothing wrong with is ours and goes on as is.
    source = (
        "def encode_body(key, values):\n"
        "    try:\n"
        f"{unpack_line}"
        f"        return b''.join(({key_part}, {values_part}))\n"
        "    except LocalProtocolError:\n"
        "        raise\n"
        "    except Exception as exc:\n"
        "        explain(key, values, exc)\n"
        "        raise\n"
    )

    def explain(key: bytes, values: tuple, exc: Exception) -> None:
        codec.encode_key(key)
        codec.encode_values(values, DictCache())  # raises LocalProtocolError for a wrong value

    namespace = {"V": _varint_bytes, "S": _SMALL_VARINTS, "bad": _bad_key, "explain": explain,
                 "LocalProtocolError": LocalProtocolError}
    return compile_function(source, "encode_body", namespace,
                            f"body encoder, {_layout_label(key_type, key_len, mask, params)}")


def _bad_key(key: bytes) -> bytes:
    raise LocalProtocolError(f"key of {len(key)} bytes does not fit the table's key length")


class UpdateBatch:
    """Update bodies framed once for every receiver of a push round.

    Each session sends the first body with its own explicit id (0x85, or
    0x80 to a 2.0 peer) and then the shared tail, whose ids are implied
    (0x86 / 0x81): the tail's bytes are the same for every session, so a
    round costs one framing however many peers it goes to. (HAProxy 3.3+
    byte-swaps implied ids in its acks, reference §5.2; acks are information
    only to us, so only the ``ack`` column of ``show aggrs`` is affected.)
    """

    def __init__(self, bodies: list[tuple[bytes, int]]) -> None:
        self.bodies = bodies
        self._tails: dict[bool, bytes] = {}

    def __len__(self) -> int:
        return len(self.bodies)

    def frame(self, first_id: int, timed: bool) -> bytes:
        """The whole batch for one session whose next update id is ``first_id``."""
        body, expire = self.bodies[0]
        if timed:
            head = b"\x0a\x85" + _varint_bytes(8 + len(body)) + _BE32X2.pack(first_id, expire) + body
        else:
            head = b"\x0a\x80" + _varint_bytes(4 + len(body)) + _BE32_FROM.pack(first_id) + body
        tail = self._tails.get(timed)
        if tail is None:
            tail = self._tails[timed] = self._frame_tail(timed)
        return head + tail

    def _frame_tail(self, timed: bool) -> bytes:
        parts = []
        pack = _BE32_FROM.pack
        for body, expire in self.bodies[1:]:
            if timed:
                parts.append(b"\x0a\x86" + _varint_bytes(4 + len(body)) + pack(expire) + body)
            else:
                parts.append(b"\x0a\x81" + _varint_bytes(len(body)) + body)
        return b"".join(parts)


_BE32X2 = struct.Struct("!II")
