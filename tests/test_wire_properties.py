"""Property tests of stktagg.wire: round trips of generated messages, and robustness of the decoder."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from stktagg.codec import encode_varint
from stktagg.errors import PeersErrorCode, RemoteProtocolError
from stktagg.schema import DATA_TYPES, MAX_ARRAY_SIZE, KeyType, StdType, expected_params
from stktagg.wire import (
    LENGTH_VARINT_MAX,
    Ack,
    Control,
    ControlType,
    MessageDecoder,
    MessageEncoder,
    PeerError,
    RawMessage,
    StkType,
    TableDefinition,
    TableSwitch,
    Update,
)
from vectors import read_trace, trace_files

U32 = (1 << 32) - 1
U64 = (1 << 64) - 1
MESSAGE_TYPES = (Control, PeerError, TableDefinition, TableSwitch, Ack, Update, RawMessage)
_INCREMENTAL = (StkType.INCREMENTAL_UPDATE, StkType.INCREMENTAL_UPDATE_TIMED)
_TIMED = (StkType.UPDATE_TIMED, StkType.INCREMENTAL_UPDATE_TIMED)
_UPDATE_TYPES = [StkType.UPDATE, StkType.INCREMENTAL_UPDATE, StkType.UPDATE_TIMED, StkType.INCREMENTAL_UPDATE_TIMED]
#: A few server names, so that generated updates hit the dictionary cache.
SERVER_NAMES = [b"srv1", b"srv2", b"web-a", b"10.0.0.1:80", b""]


def normalized(msg):
    """Messages compare on their content; a RawMessage's reason is the decoder's comment."""
    return dataclasses.replace(msg, reason="") if isinstance(msg, RawMessage) else msg


def decode_chunks(chunks, max_size: int = 16384) -> list:
    decoder = MessageDecoder(max_size)
    out = []
    for chunk in chunks:
        decoder.feed(chunk)
        while (msg := decoder.next_message()) is not None:
            out.append(msg)
    assert decoder.frames.buffered() == 0
    return out


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]


# -- strategies -----------------------------------------------------------------------


@st.composite
def key_layouts(draw):
    """(key_type, key_len) as HAProxy announces them."""
    key_type = draw(st.sampled_from(list(KeyType)))
    if key_type in (KeyType.IP, KeyType.INTEGER):
        return key_type, 4
    if key_type is KeyType.IPV6:
        return key_type, 16
    if key_type is KeyType.STRING:
        return key_type, draw(st.integers(1, 64))
    return key_type, draw(st.integers(1, 32))


def keys_for(key_type: int, key_len: int):
    if key_type == KeyType.STRING:
        return st.binary(max_size=key_len + 3)
    if key_type == KeyType.INTEGER:
        return st.binary(min_size=4, max_size=4)
    return st.binary(min_size=key_len, max_size=key_len)


@st.composite
def param_records(draw, mask: int) -> tuple[tuple[int, ...], ...]:
    records = []
    for info in expected_params(mask):
        record: tuple[int, ...] = (info.id,)
        if info.is_array:
            record += (draw(st.integers(1, 4) | st.just(MAX_ARRAY_SIZE)),)
        if info.has_period:
            record += (draw(st.integers(0, 2**32) | st.sampled_from([1000, 10000, 3600000])),)
        records.append(record)
    return tuple(records)


@st.composite
def definitions(draw, table_id=None, for_updates: bool = False):
    """A TableDefinition whose fields are consistent with its data-type mask.

    ``for_updates``: its updates must be decodable (arrays come with their sizes).
    """
    if table_id is None:
        table_id = draw(st.integers(0, U64) | st.integers(1, 10))
    key_type, key_len = draw(key_layouts())
    ids = draw(st.sets(st.sampled_from(sorted(DATA_TYPES)), max_size=8))
    unknown = draw(st.sets(st.integers(27, 63), max_size=2)) if draw(st.booleans()) else set()
    mask = sum(1 << i for i in ids | unknown)
    has_arrays = any(DATA_TYPES[i].is_array for i in ids)
    if for_updates and has_arrays:
        expire = draw(st.integers(0, U32))
    else:
        expire = draw(st.none() | st.integers(0, U32) | st.just(U64))
    params: tuple[tuple[int, ...], ...] = ()
    trailing = b""
    if expire is not None:
        params = draw(param_records(mask))
        if params and not for_updates and draw(st.booleans()):
            params = params[: draw(st.integers(0, len(params) - 1))]  # missing records
        elif draw(st.booleans()):
            trailing = draw(st.binary(min_size=1, max_size=6))  # future extensions
    name = draw(st.binary(min_size=1, max_size=40))
    return TableDefinition(table_id, name, key_type, key_len, mask, expire, params, trailing)


def value_strategy(info, count: int):
    if info.std is StdType.SINT:
        one = st.integers(-(2**63), 2**63 - 1) | st.sampled_from([-1, 0, 1, -(2**31), 2**31 - 1])
    elif info.std is StdType.UINT:
        one = st.integers(0, U32)
    elif info.std is StdType.ULL:
        one = st.integers(0, U64) | st.just(U64)
    elif info.std is StdType.FRQP:
        one = st.tuples(st.integers(0, U32), st.integers(0, U32), st.integers(0, U32))
    else:
        one = st.none() | st.sampled_from(SERVER_NAMES) | st.binary(max_size=20)
    if info.is_array:
        return st.tuples(*[one] * count)
    return one


@st.composite
def updates_for(draw, definition: TableDefinition, last_id: int | None):
    """An Update of ``definition``; incremental ones carry previous + 1 (``last_id`` or 0)."""
    codec = definition.codec
    msg_type = draw(st.sampled_from(_UPDATE_TYPES))
    if msg_type in _INCREMENTAL:
        update_id = ((last_id or 0) + 1) & U32
    else:
        update_id = draw(st.integers(0, U32) | st.just(U32))
    expire = draw(st.integers(0, U32)) if msg_type in _TIMED else None
    key = draw(keys_for(definition.key_type, definition.key_len))
    values = tuple(draw(value_strategy(f.info, f.count)) for f in codec.fields)
    trailing = draw(st.just(b"") | st.binary(max_size=4))
    return Update(msg_type, definition.table_id, update_id, key, values, expire, trailing)


controls = st.builds(Control, st.sampled_from(list(ControlType)))
peer_errors = st.builds(PeerError, st.sampled_from(list(PeersErrorCode)))
acks = st.builds(Ack, st.integers(0, U64) | st.integers(1, 10), st.integers(0, U32))
switches = st.builds(TableSwitch, st.integers(0, U64))


@st.composite
def raw_messages(draw):
    """Messages the decoder does not understand: unknown classes, or unknown types of known ones."""
    msg_class = draw(st.sampled_from([0, 1, 10]) | st.integers(2, 254).filter(lambda c: c != 10))
    if msg_class == 0:
        msg_type = draw(st.integers(5, 255))
    elif msg_class == 1:
        msg_type = draw(st.integers(2, 255))
    elif msg_class == 10:
        msg_type = draw(st.integers(0, 0x7F) | st.integers(0x87, 255))
    else:
        msg_type = draw(st.integers(0, 255))
    payload = draw(st.binary(max_size=30)) if msg_type >= 0x80 else b""
    return RawMessage(msg_class, msg_type, payload)


stateless_messages = controls | peer_errors | acks | raw_messages()


@st.composite
def sessions(draw):
    """A consistent stream of messages: definitions (or switches back) then their updates."""
    messages = []
    defined: dict[int, TableDefinition] = {}
    last_ids: dict[int, int] = {}
    for _ in range(draw(st.integers(1, 4))):
        table_id = draw(st.integers(1, 3))
        if table_id in defined and draw(st.booleans()):
            messages.append(TableSwitch(table_id))
        else:
            defined[table_id] = draw(definitions(table_id, for_updates=True))
            messages.append(defined[table_id])
        for _ in range(draw(st.integers(0, 5))):
            if draw(st.integers(0, 4)) == 0:
                messages.append(draw(stateless_messages))
            update = draw(updates_for(defined[table_id], last_ids.get(table_id)))
            last_ids[table_id] = update.update_id
            messages.append(update)
    return messages


# -- round trips ----------------------------------------------------------------------


def roundtrip(messages: list) -> tuple[bytes, list]:
    encoder = MessageEncoder()
    wire = b"".join(encoder.encode(m) for m in messages)
    return wire, decode_chunks([wire])


class TestRoundTrip:
    @settings(max_examples=200)
    @given(controls | peer_errors)
    def test_control_and_error_round_trip(self, msg):
        assert roundtrip([msg])[1] == [msg]

    @settings(max_examples=200)
    @given(acks)
    @example(Ack(U64, U32))  # widest table id varint and update id
    def test_ack_round_trip(self, msg):
        assert roundtrip([msg])[1] == [msg]

    @settings(max_examples=100)
    @given(switches)
    def test_switch_round_trip(self, msg):
        assert roundtrip([msg])[1] == [msg]

    @settings(max_examples=200)
    @given(raw_messages())
    @example(RawMessage(0x7F, 0x80, b""))  # empty payload still carries a length byte
    def test_raw_message_round_trip(self, msg):
        wire, decoded = roundtrip([msg])
        assert [normalized(m) for m in decoded] == [msg]
        assert MessageEncoder().encode(decoded[0]) == wire

    @settings(max_examples=300)
    @given(definitions())
    @example(TableDefinition(1, b"t", KeyType.STRING, 33, 1 << 24, 0, ((24, MAX_ARRAY_SIZE, 10000),)))  # largest array
    @example(TableDefinition(U64, b"x" * 40, KeyType.BINARY, 32, U64, U64, ()))  # every bit, no params sent
    def test_definition_round_trip(self, msg):
        wire, decoded = roundtrip([msg])
        assert decoded == [msg]
        assert MessageEncoder().encode(decoded[0]) == wire

    @settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(sessions())
    def test_session_round_trip(self, messages):
        wire, decoded = roundtrip(messages)
        assert [normalized(m) for m in decoded] == messages
        encoder = MessageEncoder()
        assert b"".join(encoder.encode(m) for m in decoded) == wire

    @settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(sessions(), st.lists(st.integers(0, 10**6), max_size=30))
    def test_session_round_trip_through_random_chunks(self, messages, cuts):
        wire, whole = roundtrip(messages)
        assert decode_chunks(split(wire, cuts)) == whole

    @settings(max_examples=50, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(sessions())
    def test_session_round_trip_byte_by_byte(self, messages):
        wire, whole = roundtrip(messages)
        assert decode_chunks([wire[i : i + 1] for i in range(len(wire))]) == whole

    def test_server_key_cache_survives_more_than_128_names(self):
        definition = TableDefinition(1, b"srv", KeyType.IP, 4, 1 << 19)
        messages = [definition] + [
            Update(StkType.UPDATE, 1, n + 1, b"\x7f\x00\x00\x01", (b"srv%d" % (n % 150 if n % 3 else n % 7),))
            for n in range(600)
        ]
        assert roundtrip(messages)[1] == messages


# -- robustness -----------------------------------------------------------------------

def _vector_streams() -> list[bytes]:
    """The message bytes of every (direction, connection) of every trace, concatenated."""
    streams = set()
    for path in trace_files():
        per_stream: dict[tuple[str, int], bytes] = {}
        for unit in read_trace(path):
            if not unit.is_handshake and not unit.is_raw:
                key = (unit.direction, unit.connection)
                per_stream[key] = per_stream.get(key, b"") + unit.data
        streams.update(per_stream.values())
    return sorted(streams)


_STREAMS = _vector_streams()


def feed_and_drain(data_chunks, max_size: int = 16384) -> None:
    """Feed ``data_chunks``; only messages, None or a RemoteProtocolError may come out."""
    decoder = MessageDecoder(max_size)
    bound = max_size + 2 + LENGTH_VARINT_MAX
    try:
        for chunk in data_chunks:
            decoder.feed(chunk)
            while (msg := decoder.next_message()) is not None:
                assert isinstance(msg, MESSAGE_TYPES)
            # nothing more to produce: what is buffered is one incomplete frame
            assert decoder.frames.buffered() < bound
    except RemoteProtocolError as error:
        assert error.error_code in (PeersErrorCode.PROTOCOL_ERROR, PeersErrorCode.SIZE_LIMIT)


@st.composite
def mutated_streams(draw):
    data = bytearray(draw(st.sampled_from(_STREAMS)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "overwrite"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        elif data:
            data[pos] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xEF, 0xF0, 0xFF]))
    return bytes(data)


class TestRobustness:
    def test_vector_streams_were_collected(self):
        assert len(_STREAMS) > 30  # 41 when recorded

    @settings(max_examples=1500)
    @given(st.binary(max_size=64), st.lists(st.integers(0, 64), max_size=6))
    @example(b"\x0a\x82\xf0", [])  # truncated length varint
    @example(b"\xff\x00", [])  # reserved class
    @example(b"\x0a\x80" + b"\xff" * 20, [])  # endless length varint
    def test_random_bytes_only_give_messages_none_or_remote_protocol_error(self, data, cuts):
        feed_and_drain(split(data, cuts))

    @settings(max_examples=1500)
    @given(mutated_streams(), st.lists(st.integers(0, 10**5), max_size=8))
    def test_mutated_vector_streams_only_give_messages_none_or_remote_protocol_error(self, data, cuts):
        feed_and_drain(split(data, cuts))

    @settings(max_examples=400)
    @given(st.sampled_from(_STREAMS), st.binary(min_size=1, max_size=40), st.integers(0, 10**5))
    def test_garbage_inside_a_defined_stream_is_handled(self, stream, garbage, at):
        # keeps the definitions before the garbage, so updates are parsed with a table
        pos = at % (len(stream) + 1)
        feed_and_drain([stream[:pos], garbage, stream[pos:]])

    @settings(max_examples=500)
    @given(
        st.integers(0, 300),
        st.lists(
            st.binary(max_size=40) | st.builds(lambda t, n: bytes([10, t]) + bytes([n]), st.integers(0x80, 0xFF), st.integers(0, 239)),
            max_size=20,
        ),
    )
    def test_decoder_buffers_at_most_one_frame(self, max_size, chunks):
        feed_and_drain(chunks, max_size)

    @pytest.mark.parametrize("max_size", [0, 1, 100, 239, 240, 16384])
    def test_byte_by_byte_buffer_stays_under_max_size_plus_header(self, max_size):
        decoder = MessageDecoder(max_size)
        # a frame announcing exactly max_size, fed byte by byte: bounded until it completes
        wire = bytes([10, 0xC8]) + encode_varint(max_size) + bytes(max_size)
        for i, byte in enumerate(wire):
            decoder.feed(bytes([byte]))
            msg = decoder.next_message()
            assert decoder.frames.buffered() <= max_size + 2 + LENGTH_VARINT_MAX
            if i < len(wire) - 1:
                assert msg is None
        assert isinstance(msg, RawMessage) and len(msg.payload) == max_size
        assert decoder.frames.buffered() == 0
