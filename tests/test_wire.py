"""Tests of stktagg.wire (and the wire-facing parts of stktagg.schema).

Most tests run against the traces recorded from real HAProxy 2.6 and 2.8 in
tests/data/vectors (made by contrib/record_vectors.py; read by tests/vectors.py);
the rest pin the byte examples of the peers-protocol reference (§3-§6).
"""

from __future__ import annotations

import ast
import ipaddress
import random
import re
import socket
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from stktagg.codec import DecodeError, Reader, encode_varint
from stktagg.errors import (
    LocalProtocolError,
    MessageTooLarge,
    PeersErrorCode,
    RemoteProtocolError,
)
from stktagg.schema import (
    DATA_TYPES,
    DATA_TYPES_BY_NAME,
    DictCache,
    KeyType,
    StdType,
    format_ipv6,
    format_key,
    integer_key,
    mask_ids,
)
from stktagg.wire import (
    MAX_MESSAGE_SIZE,
    Ack,
    Control,
    ControlType,
    FrameDecoder,
    MessageDecoder,
    MessageEncoder,
    PeerError,
    RawMessage,
    StkType,
    TableDefinition,
    TableSwitch,
    Update,
)
from vectors import RECORDED_VERSIONS, VECTORS_DIR, Unit, read_trace, trace_files

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "contrib"))
import record_vectors  # noqa: E402  (the recorder: which scenarios it records)

TRACE_FILES = trace_files()
TRACE_IDS = [path.name for path in TRACE_FILES]


def h(text: str) -> bytes:
    """Wire bytes written as spaced hex, as in peers-protocol.md."""
    return bytes.fromhex(text)


def is_message(unit: Unit) -> bool:
    return not unit.is_handshake and not unit.is_raw


def message_streams(path: Path) -> dict[tuple[str, int], list[Unit]]:
    """The message units of one trace, per (direction, connection), in order."""
    streams: dict[tuple[str, int], list[Unit]] = defaultdict(list)
    for unit in read_trace(path):
        if is_message(unit):
            streams[(unit.direction, unit.connection)].append(unit)
    return dict(streams)


def drain(decoder: MessageDecoder) -> list:
    messages = []
    while (msg := decoder.next_message()) is not None:
        messages.append(msg)
    return messages


def decode_all(chunks, max_size: int = MAX_MESSAGE_SIZE) -> list:
    decoder = MessageDecoder(max_size)
    messages = []
    for chunk in chunks:
        decoder.feed(chunk)
        messages += drain(decoder)
    assert decoder.frames.buffered() == 0
    return messages


def decode_after(*frames: bytes) -> list:
    """Decode a sequence of whole messages with one fresh decoder."""
    return decode_all(frames)


def check_units_one_by_one(path: Path) -> int:
    """Feed every message unit of ``path`` to its stream's decoder; return how many were checked."""
    checked = 0
    for units in message_streams(path).values():
        decoder, encoder = MessageDecoder(), MessageEncoder()
        for unit in units:
            decoder.feed(unit.data)
            got = drain(decoder)
            assert len(got) == 1, f"{path.name}:{unit.lineno}: {len(got)} messages from one unit"
            assert not isinstance(got[0], RawMessage), f"{path.name}:{unit.lineno}: not understood"
            assert decoder.frames.buffered() == 0, f"{path.name}:{unit.lineno}: bytes left over"
            assert encoder.encode(got[0]) == unit.data, f"{path.name}:{unit.lineno}: re-encoding differs"
            checked += 1
    return checked


def count_message_lines_independently(path: Path) -> int:
    """Hex lines whose comment is neither a handshake line nor raw bytes (no use of vectors.py)."""
    lines = path.read_text().splitlines()
    count = 0
    for comment, line in zip(lines, lines[1:]):
        match = re.match(r"# [<>] \S+ c\d+ (.*)$", comment)
        if match and line.strip() and not line.startswith("#"):
            text = match.group(1)
            if not text.startswith("handshake") and not text.startswith("raw bytes"):
                count += 1
    return count


# -- the recorded traces ----------------------------------------------------------


class TestVectorUnits:
    @pytest.mark.parametrize("path", TRACE_FILES, ids=TRACE_IDS)
    def test_each_message_unit_decodes_to_one_message_that_reencodes_identically(self, path):
        checked = check_units_one_by_one(path)
        if count_message_lines_independently(path):
            assert checked > 0
        assert checked == count_message_lines_independently(path)

    def test_every_scenario_of_the_recorder_is_recorded_from_every_version(self):
        names = {path.name for path in TRACE_FILES}
        for version in RECORDED_VERSIONS:
            for scenario in record_vectors.SCENARIOS:
                assert f"haproxy-{version}-{scenario.name}.hex" in names
                if scenario.cli:
                    assert (VECTORS_DIR / f"haproxy-{version}-{scenario.name}.cli.txt").exists()

    def test_every_trace_says_which_haproxy_and_scenario_made_it(self):
        for path in TRACE_FILES:
            head = path.read_text()[:2000]
            version = path.name.split("-")[1]
            assert f"# haproxy: HAProxy version {version}." in head, path.name
            assert "# scenario: " in head and "contrib/record_vectors.py" in head, path.name

    def test_total_units_checked_equals_message_lines_in_files(self):
        total = sum(check_units_one_by_one(path) for path in TRACE_FILES)
        independent = sum(count_message_lines_independently(path) for path in TRACE_FILES)
        assert total == independent
        assert total > 500  # a corpus, not a handful (918 when recorded)


class TestVectorStreams:
    @pytest.mark.parametrize("path", TRACE_FILES, ids=TRACE_IDS)
    def test_stream_fed_at_once_byte_by_byte_or_in_random_chunks_gives_same_messages(self, path):
        for (direction, conn), units in message_streams(path).items():
            stream = b"".join(unit.data for unit in units)
            at_once = decode_all([stream])
            assert len(at_once) == len(units)
            assert decode_all([stream[i : i + 1] for i in range(len(stream))]) == at_once
            for seed in range(4):
                rng = random.Random(f"{path.name}/{direction}/{conn}/{seed}")
                chunks, pos = [], 0
                while pos < len(stream):
                    size = rng.randint(1, 40)
                    chunks.append(stream[pos : pos + size])
                    pos += size
                assert decode_all(chunks) == at_once, f"seed {seed}"

    @pytest.mark.parametrize("path", TRACE_FILES, ids=TRACE_IDS)
    def test_stream_decodes_like_units_fed_one_by_one(self, path):
        for units in message_streams(path).values():
            one_by_one = decode_all([unit.data for unit in units])
            assert decode_all([b"".join(unit.data for unit in units)]) == one_by_one

    @pytest.mark.parametrize("path", TRACE_FILES, ids=TRACE_IDS)
    def test_stream_reencodes_to_the_recorded_bytes(self, path):
        for units in message_streams(path).values():
            stream = b"".join(unit.data for unit in units)
            encoder = MessageEncoder()
            assert b"".join(encoder.encode(m) for m in decode_all([stream])) == stream


# -- cross-check against the capture tool's decoded text -----------------------------

_FRQP_TEXT = re.compile(r"\[tick=(\d+),curr=(\d+),prev=(\d+)\]")
_CONTROL_NAMES = {
    "resync-request": ControlType.RESYNC_REQUEST,
    "resync-finished": ControlType.RESYNC_FINISHED,
    "resync-partial": ControlType.RESYNC_PARTIAL,
    "resync-confirm": ControlType.RESYNC_CONFIRM,
    "heartbeat": ControlType.HEARTBEAT,
}
_ERROR_NAMES = {"protocol-error": PeersErrorCode.PROTOCOL_ERROR, "size-limit": PeersErrorCode.SIZE_LIMIT}
_UPDATE_KINDS = {
    "update": StkType.UPDATE,
    "update-incremental": StkType.INCREMENTAL_UPDATE,
    "update-timed": StkType.UPDATE_TIMED,
    "update-incremental-timed": StkType.INCREMENTAL_UPDATE_TIMED,
}


def split_text(text: str) -> list[str]:
    """Split on spaces outside brackets and quotes (``gpt=[0, 99]`` is one token)."""
    tokens, current, depth, quoted = [], [], 0, False
    for ch in text:
        if quoted:
            quoted = ch != "'"
        elif ch == "'":
            quoted = True
        elif ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == " " and depth == 0:
            if current:
                tokens.append("".join(current))
                current = []
            continue
        current.append(ch)
    if current:
        tokens.append("".join(current))
    return tokens


def text_fields(text: str) -> tuple[str, dict[str, str]]:
    kind, *rest = split_text(text)
    fields = {}
    for token in rest:
        name, _, value = token.partition("=")
        assert name not in fields, f"{name} twice in {text!r}"
        fields[name] = value
    return kind, fields


def text_value(value: str) -> object:
    """``1`` -> 1, ``[tick=..]`` -> (age, curr, prev), ``[0, 99]`` -> (0, 99), nested too."""

    def tuples(obj):
        return tuple(tuples(x) for x in obj) if isinstance(obj, (list, tuple)) else obj

    return tuples(ast.literal_eval(_FRQP_TEXT.sub(r"(\1, \2, \3)", value)))


def text_key(value: str) -> bytes:
    if value.startswith("'"):
        return ast.literal_eval(value).encode()
    kind, _, rest = value.partition(":")
    if kind == "ip":
        return ipaddress.IPv4Address(rest).packed
    if kind == "ipv6":
        return ipaddress.IPv6Address(rest).packed
    if kind == "int":
        return int(rest).to_bytes(4, "big")
    if kind == "bin":
        return bytes.fromhex(rest)
    raise AssertionError(f"unknown key form {value!r}")


def check_definition_text(msg: TableDefinition, fields: dict[str, str]) -> None:
    assert msg.table_id == int(fields.pop("id"))
    assert msg.name == ast.literal_eval(fields.pop("name")).encode()
    assert msg.key_type == int(fields.pop("key_type").split("(")[0])
    assert msg.key_len == int(fields.pop("key_len"))
    mask_text, _, types_text = fields.pop("data_types").partition("[")
    assert msg.data_types == int(mask_text, 16)
    names, records = [], set()
    for name, params in re.findall(r"(\w+)(?:\(([\d,]+)\))?", types_text):
        names.append(name)
        if params:
            records.add((DATA_TYPES_BY_NAME[name].id, *map(int, params.split(","))))
    assert names == [DATA_TYPES[i].name for i in mask_ids(msg.data_types)]
    assert set(msg.params) == records
    assert msg.expire == (int(fields.pop("expire")) if "expire" in fields else None)
    assert not fields, f"unchecked fields {fields}"


def check_update_text(msg: Update, kind: str, fields: dict[str, str], decoder: MessageDecoder) -> None:
    assert msg.type is _UPDATE_KINDS[kind]
    table = decoder.tables[msg.table_id]
    assert table.name == fields.pop("table").encode()
    uid = fields.pop("uid")
    if msg.type in (StkType.INCREMENTAL_UPDATE, StkType.INCREMENTAL_UPDATE_TIMED):
        assert uid.endswith("(implied)")
        uid = uid[: -len("(implied)")]
    assert msg.update_id == int(uid)
    assert msg.expire == (int(fields.pop("expire")) if "expire" in fields else None)
    assert msg.key == text_key(fields.pop("key"))
    names = [field.info.name for field in table.codec.fields]
    assert list(fields) == names
    for field, value in zip(table.codec.fields, msg.values):
        assert value == text_value(fields[field.info.name]), field.info.name
        if field.info.is_array:
            assert len(value) == field.count
        if field.info.std is StdType.FRQP and not field.info.is_array:
            assert len(value) == 3
    assert msg.trailing == b""


def cross_check(path: Path) -> dict[str, int]:
    """Compare every decoded message of ``path`` with the capture tool's text; count by kind."""
    seen: dict[str, int] = defaultdict(int)
    for units in message_streams(path).values():
        decoder = MessageDecoder()
        for unit in units:
            decoder.feed(unit.data)
            (msg,) = drain(decoder)
            kind, fields = text_fields(unit.text)
            where = f"{path.name}:{unit.lineno}"
            cls, _, name = kind.partition("/")
            if cls == "control":
                assert msg == Control(_CONTROL_NAMES[name]), where
            elif cls == "error":
                assert msg == PeerError(_ERROR_NAMES[name]), where
            elif kind == "stick-table/ack":
                assert msg == Ack(int(fields["table_id"]), int(fields["uid"])), where
            elif kind == "stick-table/table-switch":
                assert msg == TableSwitch(int(fields["id"])), where
            elif kind == "stick-table/table-definition":
                assert isinstance(msg, TableDefinition), where
                check_definition_text(msg, fields)
            elif cls == "stick-table" and name in _UPDATE_KINDS:
                assert isinstance(msg, Update), where
                check_update_text(msg, name, fields, decoder)
            else:
                raise AssertionError(f"{where}: unknown text {unit.text!r}")
            seen[kind] += 1
    return seen


#: write-variants, table id 10: fields 1-6 only (no expire, no parameters)
DEF_NO_EXPIRE = h("0a 82 12 0a 0c 6d 79 74 61 62 6c 65 2e 61 67 67 72 06 21 f0 51")


class TestVectorText:
    @pytest.mark.parametrize("path", TRACE_FILES, ids=TRACE_IDS)
    def test_decoded_messages_match_capture_tool_text(self, path):
        seen = cross_check(path)
        assert sum(seen.values()) == count_message_lines_independently(path)

    def test_every_kind_of_message_is_cross_checked(self):
        totals: dict[str, int] = defaultdict(int)
        for path in TRACE_FILES:
            for kind, count in cross_check(path).items():
                totals[kind] += count
        for kind in (
            "stick-table/update", "stick-table/update-timed", "stick-table/update-incremental",
            "stick-table/update-incremental-timed", "stick-table/table-definition", "stick-table/ack",
            "stick-table/table-switch", "control/heartbeat", "control/resync-request",
            "control/resync-finished", "control/resync-confirm", "error/protocol-error", "error/size-limit",
        ):
            assert totals[kind] > 0, kind

    def test_definition_without_expire_decodes(self):
        # write-variants, variant 10: fields 1-6 only, no expire, no parameters (HAProxy acks it)
        (msg,) = decode_after(DEF_NO_EXPIRE)
        assert msg == TableDefinition(10, b"mytable.aggr", KeyType.STRING, 33, 0x600)
        assert msg.expire is None and msg.params == () and msg.trailing == b""
        assert MessageEncoder().encode(msg) == DEF_NO_EXPIRE
        for path in TRACE_FILES:
            if path.name.endswith("write-variants.hex"):
                assert any(u.data == DEF_NO_EXPIRE for u in read_trace(path))

    def test_update_after_definition_without_expire_decodes(self):
        update = h("0a 80 13 00 00 00 0a 0a 6b 5f 6e 6f 65 78 70 69 72 65 14 00 07 03")
        _, msg = decode_after(DEF_NO_EXPIRE, update)
        assert msg == Update(StkType.UPDATE, 10, 10, b"k_noexpire", (20, (0, 7, 3)))


# -- raw garbage units ----------------------------------------------------------------

MESSAGE_TYPES = (Control, PeerError, TableDefinition, TableSwitch, Ack, Update, RawMessage)
RAW_UNITS = [(path, unit) for path in TRACE_FILES for unit in read_trace(path) if unit.is_raw]


def outcome(data: bytes):
    """Feed ``data`` to a fresh decoder: (messages, error or None, bytes still buffered)."""
    decoder = MessageDecoder()
    decoder.feed(data)
    messages = []
    try:
        while (msg := decoder.next_message()) is not None:
            messages.append(msg)
    except RemoteProtocolError as error:
        return messages, error, decoder.frames.buffered()
    return messages, None, decoder.frames.buffered()


class TestRawGarbage:
    def test_each_garbage_trace_has_its_one_raw_unit_and_no_other_trace_has_any(self):
        per_file = defaultdict(int)
        for path, _ in RAW_UNITS:
            per_file[path.name] += 1
        for path in TRACE_FILES:
            garbage = ("proto-garbage-" in path.name or "proto-malformed-" in path.name) and "key-too-long" not in path.name
            assert per_file[path.name] == (1 if garbage else 0), path.name

    @pytest.mark.parametrize(
        ("path", "unit"), RAW_UNITS, ids=[f"{p.name}:{u.lineno}" for p, u in RAW_UNITS]
    )
    def test_raw_unit_gives_messages_none_or_remote_protocol_error(self, path, unit):
        # any other exception propagates out of outcome() and fails the test
        messages, error, buffered = outcome(unit.data)
        assert all(isinstance(m, MESSAGE_TYPES) for m in messages)
        assert 0 <= buffered <= len(unit.data)

    @pytest.mark.parametrize(
        "wire",
        [
            "0a 82 f0",
            "0a 80 f0 d3 08",
            "0a 82 03 01 05 4d",
            "05 00",
            "0a c8 01 00",
            "42 42 42 42 47 41 52 42 41 47 45 0a",
            "01 00",
            "0a 80 0e 00 00 00 01 05 61 6c 69 63 65 2a 00 07 03",
            "0a 84 05 63 00 00 00 01",
        ],
    )
    def test_pinned_garbage_was_recorded_from_every_version(self, wire):
        for version in RECORDED_VERSIONS:
            assert any(
                unit.data == h(wire) for path, unit in RAW_UNITS if path.name.startswith(f"haproxy-{version}-")
            ), version

    def test_truncated_length_varint_waits_for_more(self):
        messages, error, buffered = outcome(h("0a 82 f0"))
        assert (messages, error, buffered) == ([], None, 3)

    def test_truncated_length_varint_swallows_following_heartbeats(self):
        # as in HAProxy: the 00 04 bytes become part of the length, then of the body
        decoder = MessageDecoder()
        decoder.feed(h("0a 82 f0") + h("00 04") * 3)
        assert decoder.next_message() is None

    def test_length_20000_raises_message_too_large_before_body(self):
        messages, error, buffered = outcome(h("0a 80 f0 d3 08"))
        assert messages == []
        assert isinstance(error, MessageTooLarge)
        assert error.error_code is PeersErrorCode.SIZE_LIMIT
        assert (error.length, error.limit) == (20000, 16384)
        assert buffered == 5

    def test_definition_with_name_cut_short_raises_decode_error(self):
        messages, error, _ = outcome(h("0a 82 03 01 05 4d"))
        assert messages == []
        assert isinstance(error, DecodeError)
        assert error.error_code is PeersErrorCode.PROTOCOL_ERROR

    def test_unknown_class_5_is_raw_message(self):
        assert outcome(h("05 00")) == ([RawMessage(5, 0, b"", "unknown message")], None, 0)

    def test_unknown_stick_table_type_200_is_raw_message_with_its_payload(self):
        (messages, error, buffered) = outcome(h("0a c8 01 00"))
        assert (error, buffered) == (None, 0)
        (msg,) = messages
        assert isinstance(msg, RawMessage)
        assert (msg.msg_class, msg.msg_type, msg.payload) == (10, 200, b"\x00")

    def test_ascii_garbage_is_six_raw_two_byte_messages(self):
        messages, error, buffered = outcome(b"BBBBGARBAGE\n")
        assert (error, buffered) == (None, 0)
        assert [(m.msg_class, m.msg_type, m.payload) for m in messages] == [
            (0x42, 0x42, b""),
            (0x42, 0x42, b""),
            (0x47, 0x41, b""),
            (0x52, 0x42, b""),
            (0x41, 0x47, b""),
            (0x45, 0x0A, b""),
        ]
        assert all(isinstance(m, RawMessage) for m in messages)

    def test_error_class_0_is_peer_error_protocol(self):
        assert outcome(h("01 00")) == ([PeerError(PeersErrorCode.PROTOCOL_ERROR)], None, 0)

    def test_update_before_any_definition_is_raw_message_with_reason(self):
        wire = h("0a 80 0e 00 00 00 01 05 61 6c 69 63 65 2a 00 07 03")
        messages, error, buffered = outcome(wire)
        assert (error, buffered) == (None, 0)
        (msg,) = messages
        assert isinstance(msg, RawMessage)
        assert (msg.msg_class, msg.msg_type, msg.payload) == (10, 0x80, wire[3:])
        assert msg.reason

    def test_ack_for_unknown_table_is_an_ack(self):
        assert outcome(h("0a 84 05 63 00 00 00 01")) == ([Ack(99, 1)], None, 0)

    @pytest.mark.parametrize("version", RECORDED_VERSIONS)
    def test_string_key_longer_than_key_length_decodes_whole_key(self, version):
        path = VECTORS_DIR / f"haproxy-{version}-proto-malformed-update-string-key-too-long.hex"
        ours = [unit.data for unit in read_trace(path) if unit.direction == ">" and is_message(unit)]
        messages = decode_all(ours)
        (defn,) = [m for m in messages if isinstance(m, TableDefinition)]
        assert defn.key_len == 33
        # the wire carries 40 bytes; truncating to key_len - 1 is the store's business
        (update,) = [m for m in messages if isinstance(m, Update)]
        assert update == Update(StkType.UPDATE, defn.table_id, 1, b"x" * 40, (7, (0, 1, 0)))


# -- framing --------------------------------------------------------------------------


class TestFraming:
    def test_two_byte_message_needs_both_bytes(self):
        decoder = MessageDecoder()
        decoder.feed(b"\x00")
        assert decoder.next_message() is None
        decoder.feed(b"\x04")
        assert decoder.next_message() == Control(ControlType.HEARTBEAT)

    def test_frame_decoder_returns_class_type_payload_and_frame_bytes(self):
        frames = FrameDecoder()
        frames.feed(h("00 04 0a 84 05 01 00 00 00 02"))
        assert frames.next_frame() == (0, 4, b"", h("00 04"))
        assert frames.next_frame() == (10, 0x84, h("01 00 00 00 02"), h("0a 84 05 01 00 00 00 02"))
        assert frames.next_frame() is None
        assert frames.buffered() == 0

    def test_partial_frame_is_kept_until_complete(self):
        frames = FrameDecoder()
        frames.feed(h("0a 84 05 01 00"))
        assert frames.next_frame() is None
        assert frames.buffered() == 5
        frames.feed(h("00 00 02 00"))
        assert frames.next_frame()[2] == h("01 00 00 00 02")
        assert frames.buffered() == 1

    def test_take_buffered_returns_unparsed_bytes(self):
        frames = FrameDecoder()
        frames.feed(h("00 04 0a 84 05 01"))
        frames.next_frame()
        assert frames.take_buffered() == h("0a 84 05 01")
        assert frames.buffered() == 0

    def test_zero_length_payload(self):
        assert outcome(h("0a c8 00")) == (
            [RawMessage(10, 200, b"", "unknown stick-table message")],
            None,
            0,
        )

    def test_length_varint_of_five_bytes_is_read_as_a_length(self):
        frames = FrameDecoder(max_size=2**40)
        frames.feed(h("0a c8 f0 80 80 80 00"))  # length 33818864, 5 bytes
        assert frames.next_frame() is None  # waits for the body
        messages, error, _ = outcome(h("0a c8 f0 80 80 80 00"))
        assert isinstance(error, MessageTooLarge) and error.length == 33818864

    def test_length_varint_of_six_bytes_raises_decode_error(self):
        decoder = MessageDecoder()
        decoder.feed(h("0a c8 f0 80 80 80 80 00"))
        with pytest.raises(DecodeError):
            decoder.next_message()

    def test_length_varint_unfinished_after_five_bytes_raises_decode_error(self):
        decoder = MessageDecoder()
        decoder.feed(h("0a c8 f0 80 80 80"))
        assert decoder.next_message() is None
        decoder.feed(h("80"))
        with pytest.raises(DecodeError) as info:
            decoder.next_message()
        assert info.value.error_code is PeersErrorCode.PROTOCOL_ERROR

    def test_length_varint_of_eleven_bytes_raises_decode_error(self):
        decoder = MessageDecoder()
        decoder.feed(h("0a c8") + b"\xff" * 11)
        with pytest.raises(DecodeError):
            decoder.next_message()

    def test_length_exactly_max_size_is_accepted(self):
        decoder = MessageDecoder()
        decoder.feed(h("0a c8 f0 f1 06"))  # 16384
        assert decoder.next_message() is None
        decoder.feed(b"\x5a" * 16384)
        msg = decoder.next_message()
        assert isinstance(msg, RawMessage) and msg.payload == b"\x5a" * 16384
        assert decoder.frames.buffered() == 0

    def test_length_one_over_max_size_raises_before_any_body_byte(self):
        decoder = MessageDecoder()
        decoder.feed(h("0a c8 f1 f1"))
        assert decoder.next_message() is None
        decoder.feed(h("06"))  # 16385 complete, no body
        with pytest.raises(MessageTooLarge) as info:
            decoder.next_message()
        assert (info.value.length, info.value.limit) == (16385, 16384)
        assert info.value.error_code is PeersErrorCode.SIZE_LIMIT

    def test_custom_max_size_is_applied(self):
        frames = FrameDecoder(max_size=300)
        frames.feed(h("0a c8 fc 03") + bytes(300))  # 300
        assert frames.next_frame()[2] == bytes(300)
        frames.feed(h("0a c8 fd 03"))  # 301
        with pytest.raises(MessageTooLarge):
            frames.next_frame()

    @pytest.mark.parametrize("wire", ["ff 00", "ff 04", "ff 80 00", "ff 85 03 01 02 03"])
    def test_class_255_raises_decode_error(self, wire):
        decoder = MessageDecoder()
        decoder.feed(h(wire))
        with pytest.raises(DecodeError) as info:
            decoder.next_message()
        assert info.value.error_code is PeersErrorCode.PROTOCOL_ERROR

    @pytest.mark.parametrize(
        ("wire", "msg_class", "msg_type", "payload"),
        [
            ("00 05", 0, 5, ""),  # unknown control type
            ("00 80 01 07", 0, 0x80, "07"),  # control class, long form
            ("01 02", 1, 2, ""),  # unknown error type
            ("7f 90 02 01 02", 0x7F, 0x90, "01 02"),  # unknown class with a payload
            ("0a 01", 10, 1, ""),  # stick-table class, short type
        ],
    )
    def test_unknown_messages_are_raw_and_skipped_whole(self, wire, msg_class, msg_type, payload):
        messages, error, buffered = outcome(h(wire) + h("00 04"))
        assert (error, buffered) == (None, 0)
        raw, heartbeat = messages
        assert (raw.msg_class, raw.msg_type, raw.payload) == (msg_class, msg_type, h(payload))
        assert heartbeat == Control(ControlType.HEARTBEAT)
        assert MessageEncoder().encode(raw) == h(wire)

    def test_trailing_bytes_of_ack_are_ignored(self):
        assert outcome(h("0a 84 07 01 00 00 00 02 ee ff")) == ([Ack(1, 2)], None, 0)

    @pytest.mark.parametrize("wire", ["0a 84 04 01 00 00 00", "0a 84 00", "0a 83 00", "0a 82 00", "0a 82 01 01"])
    def test_truncated_stick_table_payloads_raise_decode_error(self, wire):
        with pytest.raises(DecodeError):
            decode_after(h(wire))

    def test_definition_with_empty_name_raises_decode_error(self):
        with pytest.raises(DecodeError):
            decode_after(h("0a 82 05 01 00 04 04 00"))


# -- worked examples of peers-protocol.md -----------------------------------------------

#: §4.6, constructed: myip.local, ip, http_req_cnt + http_req_rate(1h), expire 1h
DEF_46 = h("0a 82 19 01 0a 6d 79 69 70 2e 6c 6f 63 61 6c 04 04 f0 51 f0 d9 dc 0c 0a f0 d9 dc 0c")
#: §4.6, real (haproxy-2.6-ip-http_req.hex): period 10 s, HAProxy table id 3
DEF_46_REAL = h("0a 82 18 03 0a 6d 79 69 70 2e 6c 6f 63 61 6c 04 04 f0 51 f0 d9 dc 0c 0a f0 e2 03")
#: §4.6, arrays (haproxy-2.6-kind-arrays.hex)
DEF_ARRAYS = h(
    "0a 82 20 06 0b 74 5f 61 72 72 2e 6c 6f 63 61 6c 06 21 f0 91 ff 6e f0 d9 dc 0c"
    "16 02 17 03 18 03 f0 e2 03"
)
#: table 1 "srv", ip, server_key only, no expire
DEF_SERVER_KEY = h("0a 82 0b 01 03 73 72 76 04 04 f0 f1 fe 00")
#: table 2 "sid", ip, server_id only, no expire
DEF_SERVER_ID = h("0a 82 08 02 03 73 69 64 04 04 01")
#: table 3 "rate", ip, http_req_rate(10s)
DEF_RATE = h("0a 82 11 03 04 72 61 74 65 04 04 f0 31 f0 e2 03 0a f0 e2 03")

IP_192_0_2_10 = h("c0 00 02 0a")
IP_198_51_100_7 = h("c6 33 64 07")


class TestWorkedExamples:
    def test_ack_example(self):
        assert decode_after(h("0a 84 05 01 00 00 00 02")) == [Ack(1, 2)]
        assert MessageEncoder().encode(Ack(1, 2)) == h("0a 84 05 01 00 00 00 02")

    def test_switch_example(self):
        assert decode_after(h("0a 83 01 01")) == [TableSwitch(1)]
        assert MessageEncoder().encode(TableSwitch(1)) == h("0a 83 01 01")

    @pytest.mark.parametrize(
        ("wire", "msg"),
        [
            ("00 00", Control(ControlType.RESYNC_REQUEST)),
            ("00 01", Control(ControlType.RESYNC_FINISHED)),
            ("00 02", Control(ControlType.RESYNC_PARTIAL)),
            ("00 03", Control(ControlType.RESYNC_CONFIRM)),
            ("00 04", Control(ControlType.HEARTBEAT)),
            ("01 00", PeerError(PeersErrorCode.PROTOCOL_ERROR)),
            ("01 01", PeerError(PeersErrorCode.SIZE_LIMIT)),
        ],
    )
    def test_control_and_error_messages(self, wire, msg):
        assert decode_after(h(wire)) == [msg]
        assert MessageEncoder().encode(msg) == h(wire)

    def test_constructed_definition(self):
        expected = TableDefinition(1, b"myip.local", KeyType.IP, 4, 0x600, 3600000, ((10, 3600000),))
        assert decode_after(DEF_46) == [expected]
        assert MessageEncoder().encode(expected) == DEF_46
        assert expected.params_complete
        assert expected.periods() == {10: 3600000}

    def test_definition_of_a_peers_section_table_has_slash_name(self):
        msg = TableDefinition(1, b"/myip.local", KeyType.IP, 4, 0x600, 3600000, ((10, 3600000),))
        assert MessageEncoder().encode(msg) == h(
            "0a 82 1a 01 0b 2f 6d 79 69 70 2e 6c 6f 63 61 6c 04 04 f0 51 f0 d9 dc 0c 0a f0 d9 dc 0c"
        )

    def test_real_definition(self):
        expected = TableDefinition(3, b"myip.local", KeyType.IP, 4, 0x600, 3600000, ((10, 10000),))
        assert decode_after(DEF_46_REAL) == [expected]
        assert MessageEncoder().encode(expected) == DEF_46_REAL

    def test_arrays_definition(self):
        (msg,) = decode_after(DEF_ARRAYS)
        assert msg == TableDefinition(
            6, b"t_arr.local", KeyType.STRING, 33, 0x1C00200, 3600000, ((22, 2), (23, 3), (24, 3, 10000))
        )
        assert [(f.info.name, f.count, f.period) for f in msg.codec.fields] == [
            ("http_req_cnt", 1, None),
            ("gpt", 2, None),
            ("gpc", 3, None),
            ("gpc_rate", 3, 10000),
        ]
        assert msg.codec.decodable and msg.params_complete
        assert msg.periods() == {24: 10000}
        assert MessageEncoder().encode(msg) == DEF_ARRAYS

    def test_arrays_update_from_trace(self):
        # haproxy-2.6-kind-arrays.hex: uid=7 key='alice' http_req_cnt=2 gpt=[0, 99] gpc=[1, 0, 1]
        # gpc_rate=[[tick=309,curr=1,prev=0],[tick=4235169233,curr=0,prev=0],[tick=1,curr=1,prev=0]]
        values = (2, (0, 99), (1, 0, 1), ((309, 1, 0), (4235169233, 0, 0), (1, 1, 0)))
        encoder = MessageEncoder()
        encoder.encode(TableDefinition(6, b"t_arr.local", 6, 33, 0x1C00200, 3600000, ((22, 2), (23, 3), (24, 3, 10000))))
        wire = encoder.encode(Update(StkType.UPDATE, 6, 7, b"alice", values))
        assert wire == h(
            "0a 80 1e 00 00 00 07 05 61 6c 69 63 65 02 00 63 01 00 01"
            "f5 04 01 00 f1 ce f0 9a 7d 00 00 01 01 00"
        )
        _, msg = decode_after(DEF_ARRAYS, wire)
        assert msg.values == values

    def test_update_example(self):
        _, msg = decode_after(DEF_46, h("0a 80 0e 00 00 00 01 c0 00 02 0a f8 2f fc 4e 0c 28"))
        assert msg == Update(StkType.UPDATE, 1, 1, IP_192_0_2_10, (1000, (1500, 12, 40)))

    def test_update_then_incremental_update(self):
        messages = decode_after(
            DEF_46,
            h("0a 80 0e 00 00 00 01 c0 00 02 0a f8 2f fc 4e 0c 28"),
            h("0a 81 09 c6 33 64 07 07 fa 00 07 00"),
        )
        expected = [
            Update(StkType.UPDATE, 1, 1, IP_192_0_2_10, (1000, (1500, 12, 40))),
            Update(StkType.INCREMENTAL_UPDATE, 1, 2, IP_198_51_100_7, (7, (250, 7, 0))),
        ]
        assert messages[1:] == expected
        encoder = MessageEncoder()
        assert encoder.encode(messages[0]) == DEF_46
        assert encoder.encode(expected[0]) == h("0a 80 0e 00 00 00 01 c0 00 02 0a f8 2f fc 4e 0c 28")
        assert encoder.encode(expected[1]) == h("0a 81 09 c6 33 64 07 07 fa 00 07 00")

    def test_timed_update_then_incremental_timed_update(self):
        messages = decode_after(
            DEF_46,
            h("0a 85 12 00 00 00 01 00 36 ea 98 c0 00 02 0a f8 2f fc 4e 0c 28"),
            h("0a 86 0d 00 36 ea 98 c6 33 64 07 07 fa 00 07 00"),
        )
        expected = [
            Update(StkType.UPDATE_TIMED, 1, 1, IP_192_0_2_10, (1000, (1500, 12, 40)), 3599000),
            Update(StkType.INCREMENTAL_UPDATE_TIMED, 1, 2, IP_198_51_100_7, (7, (250, 7, 0)), 3599000),
        ]
        assert messages[1:] == expected
        encoder = MessageEncoder()
        encoder.encode(messages[0])
        assert encoder.encode(expected[0]) == h("0a 85 12 00 00 00 01 00 36 ea 98 c0 00 02 0a f8 2f fc 4e 0c 28")
        assert encoder.encode(expected[1]) == h("0a 86 0d 00 36 ea 98 c6 33 64 07 07 fa 00 07 00")

    def test_real_update(self):
        _, msg = decode_after(DEF_46_REAL, h("0a 80 0d 00 00 00 04 7f 00 00 01 02 f4 04 02 00"))
        assert msg == Update(StkType.UPDATE, 3, 4, h("7f 00 00 01"), (2, (308, 2, 0)))

    def test_incremental_update_right_after_definition_has_id_1(self):
        _, msg = decode_after(DEF_46, h("0a 81 09 c6 33 64 07 07 fa 00 07 00"))
        assert msg.update_id == 1

    def test_implied_id_wraps_at_32_bits(self):
        _, _, msg = decode_after(
            DEF_46,
            h("0a 80 0e ff ff ff ff c0 00 02 0a f8 2f fc 4e 0c 28"),
            h("0a 81 09 c6 33 64 07 07 fa 00 07 00"),
        )
        assert msg.update_id == 0
        encoder = MessageEncoder()
        encoder.encode(TableDefinition(1, b"myip.local", 4, 4, 0x600, 3600000, ((10, 3600000),)))
        encoder.encode(Update(StkType.UPDATE, 1, 0xFFFFFFFF, IP_192_0_2_10, (1000, (1500, 12, 40))))
        assert encoder.encode(msg) == h("0a 81 09 c6 33 64 07 07 fa 00 07 00")

    def test_implied_id_is_counted_per_table(self):
        messages = decode_after(
            DEF_46,
            h("0a 80 0e 00 00 00 05 c0 00 02 0a f8 2f fc 4e 0c 28"),
            DEF_46_REAL,
            h("0a 80 0d 00 00 00 64 7f 00 00 01 02 f4 04 02 00"),
            DEF_46,
            h("0a 81 09 c6 33 64 07 07 fa 00 07 00"),
        )
        assert [m.update_id for m in messages if isinstance(m, Update)] == [5, 100, 6]

    def test_switch_selects_an_earlier_table(self):
        messages = decode_after(
            DEF_46,
            DEF_46_REAL,
            h("0a 83 01 01"),
            h("0a 80 0e 00 00 00 01 c0 00 02 0a f8 2f fc 4e 0c 28"),
        )
        assert messages[-1].table_id == 1

    def test_switch_to_unknown_table_makes_updates_raw(self):
        messages = decode_after(DEF_46, h("0a 83 01 07"), h("0a 80 0e 00 00 00 01 c0 00 02 0a f8 2f fc 4e 0c 28"))
        assert isinstance(messages[-1], RawMessage) and messages[-1].reason

    def test_updates_of_array_table_without_sizes_are_raw(self):
        # gpc (type 23) without expire, so without its element count: HAProxy ignores it
        messages = decode_after(h("0a 82 0b 04 03 61 72 72 04 04 f0 f1 fe 1e"), h("0a 80 09 00 00 00 01 01 02 03 04 00"))
        assert not messages[0].codec.decodable
        assert isinstance(messages[1], RawMessage) and messages[1].reason

    def test_updates_of_unknown_key_type_are_raw(self):
        messages = decode_after(h("0a 82 09 05 03 6f 64 64 03 04 f0 11"), h("0a 80 09 00 00 00 01 01 02 03 04 00"))
        assert isinstance(messages[1], RawMessage)

    def test_unknown_data_types_are_left_in_trailing(self):
        # bit 40 is unknown: its value stays in the update's unparsed tail, re-encoded as is
        defn = TableDefinition(1, b"t", KeyType.IP, 4, (1 << 9) | (1 << 40), 0)
        encoder = MessageEncoder()
        wire = encoder.encode(defn) + encoder.encode(
            Update(StkType.UPDATE, 1, 1, IP_192_0_2_10, (5,), trailing=h("2a"))
        )
        _, msg = decode_all([wire])
        assert msg.values == (5,) and msg.trailing == h("2a")
        assert defn.codec.unknown_types

    def test_definition_trailing_bytes_are_kept(self):
        wire = DEF_46[:2] + bytes([DEF_46[2] + 2]) + DEF_46[3:] + h("1b 01")
        (msg,) = decode_after(wire)
        assert msg.trailing == h("1b 01")
        assert MessageEncoder().encode(msg) == wire

    def test_sint_minus_one_takes_ten_bytes(self):
        update = h("0a 80 12 00 00 00 01 c0 00 02 0a ff f0 fe fe fe fe fe fe fe 0e")
        _, msg = decode_after(DEF_SERVER_ID, update)
        assert msg == Update(StkType.UPDATE, 2, 1, IP_192_0_2_10, (-1,))
        encoder = MessageEncoder()
        encoder.encode(TableDefinition(2, b"sid", KeyType.IP, 4, 1))
        assert encoder.encode(msg) == update

    @pytest.mark.parametrize(
        ("value", "wire"),
        [
            (2**63 - 1, "ff f0 fe fe fe fe fe fe fe 06"),
            (-(2**63), "f0 f1 fe fe fe fe fe fe fe 06"),
            (-(2**31), "f0 f1 fe fe be fe fe fe fe 0e"),
            (3, "03"),
        ],
    )
    def test_sint_is_sign_extended_64_bits(self, value, wire):
        encoder = MessageEncoder()
        encoder.encode(TableDefinition(2, b"sid", KeyType.IP, 4, 1))
        encoded = encoder.encode(Update(StkType.UPDATE, 2, 1, IP_192_0_2_10, (value,)))
        assert encoded[11:] == h(wire)
        assert decode_after(DEF_SERVER_ID, encoded)[1].values == (value,)

    def test_frequency_counter_of_the_aggregation_example(self):
        update = h("0a 80 0d 00 00 00 01 c0 00 02 0a f8 a6 02 43 4e")
        _, msg = decode_after(DEF_RATE, update)
        assert msg.values == ((7000, 67, 78),)
        encoder = MessageEncoder()
        encoder.encode(TableDefinition(3, b"rate", KeyType.IP, 4, 1 << 10, 10000, ((10, 10000),)))
        assert encoder.encode(msg) == update


class TestServerKey:
    def test_full_form_then_short_form(self):
        messages = decode_after(
            DEF_SERVER_KEY,
            h("0a 80 0f 00 00 00 01 c0 00 02 0a 06 01 04 73 72 76 31"),
            h("0a 80 0a 00 00 00 02 c0 00 02 0a 01 01"),
            h("0a 80 09 00 00 00 03 c0 00 02 0a 00"),
        )
        assert [m.values for m in messages[1:]] == [(b"srv1",), (b"srv1",), (None,)]

    def test_encoder_sends_full_form_then_short_form(self):
        encoder = MessageEncoder()
        assert encoder.encode(TableDefinition(1, b"srv", KeyType.IP, 4, 1 << 19)) == DEF_SERVER_KEY
        first = encoder.encode(Update(StkType.UPDATE, 1, 1, IP_192_0_2_10, (b"srv1",)))
        second = encoder.encode(Update(StkType.UPDATE, 1, 2, IP_192_0_2_10, (b"srv1",)))
        third = encoder.encode(Update(StkType.UPDATE, 1, 3, IP_192_0_2_10, (None,)))
        assert first == h("0a 80 0f 00 00 00 01 c0 00 02 0a 06 01 04 73 72 76 31")
        assert second == h("0a 80 0a 00 00 00 02 c0 00 02 0a 01 01")
        assert third == h("0a 80 09 00 00 00 03 c0 00 02 0a 00")

    def test_dict_cache_wire_forms(self):
        cache = DictCache()
        assert cache.encode(b"srv1") == h("06 01 04 73 72 76 31")
        assert cache.encode(b"srv1") == h("01 01")
        assert cache.encode(None) == h("00")
        assert cache.encode(b"srv2") == h("06 02 04 73 72 76 32")

    @pytest.mark.parametrize(
        "value",
        [
            "06 00 04 73 72 76 31",  # full form, id 0
            "06 81 04 73 72 76 31",  # full form, id 129
            "01 00",  # short form, id 0
            "01 81",  # short form, id 129
            "01 02",  # short form, slot never filled
            "09 01 04 73 72 76 31",  # length runs past the message
            "07 01 04 73 72 76 31 00",  # length does not match the content
            "06 01 05 73 72 76 31",  # value length runs past the announced length
        ],
    )
    def test_bad_server_key_raises_decode_error(self, value):
        body = h("00 00 00 01 c0 00 02 0a") + h(value)
        update = h("0a 80") + bytes([len(body)]) + body
        with pytest.raises(DecodeError):
            decode_after(DEF_SERVER_KEY, update)
        with pytest.raises(DecodeError):
            DictCache().decode(Reader(h(value)))

    def test_slots_are_used_in_turn_and_wrap_after_128(self):
        encoder, decoder = DictCache(), DictCache()
        names = [b"s%d" % i for i in range(129)]
        for index, name in enumerate(names[:128]):
            wire = encoder.encode(name)
            assert wire[1] == index + 1  # full form, id = slot + 1
            assert decoder.decode(Reader(wire)) == name
        wire = encoder.encode(names[128])
        assert wire == h("06 01 04") + b"s128"  # slot 0 again, evicting s0
        assert decoder.decode(Reader(wire)) == b"s128"
        assert encoder.encode(names[1]) == h("01 02")  # still cached
        again = encoder.encode(names[0])  # evicted: full form again, next slot
        assert again == h("04 02 02") + b"s0"
        assert decoder.decode(Reader(again)) == b"s0"
        assert decoder.decode(Reader(h("01 01"))) == b"s128"

    def test_empty_server_key_is_distinct_from_no_value(self):
        cache = DictCache()
        assert cache.encode(b"") == h("02 01 00")
        assert cache.encode(b"") == h("01 01")
        decoder = DictCache()
        assert decoder.decode(Reader(h("02 01 00"))) == b""
        assert decoder.decode(Reader(h("01 01"))) == b""
        assert decoder.decode(Reader(h("00"))) is None


# -- encoder refusals -----------------------------------------------------------------

RATE_TABLE = TableDefinition(1, b"myip.local", KeyType.IP, 4, 0x600, 3600000, ((10, 3600000),))
ARRAY_TABLE = TableDefinition(6, b"t_arr.local", KeyType.STRING, 33, 0x1C00200, 3600000, ((22, 2), (23, 3), (24, 3, 10000)))


def encoder_with(*definitions: TableDefinition) -> MessageEncoder:
    encoder = MessageEncoder()
    for definition in definitions:
        encoder.encode(definition)
    return encoder


class TestEncoderRefusals:
    def test_update_without_any_definition_is_refused(self):
        with pytest.raises(LocalProtocolError):
            MessageEncoder().encode(Update(StkType.UPDATE, 1, 1, IP_192_0_2_10, (1, (0, 1, 0))))

    def test_update_of_a_table_that_is_not_current_is_refused(self):
        other = TableDefinition(2, b"other", KeyType.IP, 4, 0x200)
        encoder = encoder_with(RATE_TABLE, other)
        with pytest.raises(LocalProtocolError):
            encoder.encode(Update(StkType.UPDATE, 1, 1, IP_192_0_2_10, (1, (0, 1, 0))))
        encoder.encode(TableSwitch(1))
        assert encoder.encode(Update(StkType.UPDATE, 1, 1, IP_192_0_2_10, (1, (0, 1, 0))))

    def test_update_after_switch_to_unknown_table_is_refused(self):
        encoder = encoder_with(RATE_TABLE)
        encoder.encode(TableSwitch(9))
        with pytest.raises(LocalProtocolError):
            encoder.encode(Update(StkType.UPDATE, 1, 1, IP_192_0_2_10, (1, (0, 1, 0))))

    @pytest.mark.parametrize("msg_type", [StkType.INCREMENTAL_UPDATE, StkType.INCREMENTAL_UPDATE_TIMED])
    def test_incremental_update_with_wrong_implied_id_is_refused(self, msg_type):
        encoder = encoder_with(RATE_TABLE)
        encoder.encode(Update(StkType.UPDATE, 1, 7, IP_192_0_2_10, (1, (0, 1, 0))))
        for wrong in (7, 9, 1):
            with pytest.raises(LocalProtocolError):
                encoder.encode(Update(msg_type, 1, wrong, IP_192_0_2_10, (1, (0, 1, 0)), expire=5))
        assert encoder.encode(Update(msg_type, 1, 8, IP_192_0_2_10, (1, (0, 1, 0)), expire=5))

    def test_incremental_update_first_in_table_must_have_id_1(self):
        with pytest.raises(LocalProtocolError):
            encoder_with(RATE_TABLE).encode(Update(StkType.INCREMENTAL_UPDATE, 1, 5, IP_192_0_2_10, (1, (0, 1, 0))))

    @pytest.mark.parametrize("values", [(), (1,), (1, (0, 1, 0), 3)])
    def test_wrong_value_count_is_refused(self, values):
        with pytest.raises(LocalProtocolError):
            encoder_with(RATE_TABLE).encode(Update(StkType.UPDATE, 1, 1, IP_192_0_2_10, values))

    @pytest.mark.parametrize(
        "values",
        [
            (1, (0,), (1, 0, 0), ((0, 0, 0),) * 3),  # gpt: 1 element for 2
            (1, (0, 0), (1, 0), ((0, 0, 0),) * 3),  # gpc: 2 elements for 3
            (1, (0, 0), (1, 0, 0), ((0, 0, 0),) * 4),  # gpc_rate: 4 elements for 3
        ],
    )
    def test_wrong_array_length_is_refused(self, values):
        with pytest.raises(LocalProtocolError):
            encoder_with(ARRAY_TABLE).encode(Update(StkType.UPDATE, 6, 1, b"alice", values))

    @pytest.mark.parametrize("msg_type", [StkType.UPDATE_TIMED, StkType.INCREMENTAL_UPDATE_TIMED])
    def test_timed_update_without_expire_is_refused(self, msg_type):
        with pytest.raises(LocalProtocolError):
            encoder_with(RATE_TABLE).encode(Update(msg_type, 1, 1, IP_192_0_2_10, (1, (0, 1, 0))))

    @pytest.mark.parametrize(
        ("definition", "key"),
        [
            (RATE_TABLE, b"\x01\x02\x03"),
            (TableDefinition(1, b"i", KeyType.INTEGER, 4, 0x200), b"\x00" * 8),
            (TableDefinition(1, b"b", KeyType.BINARY, 16, 0x200), b"alice"),
        ],
    )
    def test_key_of_wrong_size_is_refused(self, definition, key):
        values = (1, (0, 1, 0)) if definition is RATE_TABLE else (1,)
        with pytest.raises(LocalProtocolError):
            encoder_with(definition).encode(Update(StkType.UPDATE, 1, 1, key, values))

    def test_definition_without_name_is_refused(self):
        with pytest.raises(LocalProtocolError):
            MessageEncoder().encode(TableDefinition(1, b"", KeyType.IP, 4, 0x200))

    def test_non_message_is_refused(self):
        with pytest.raises(LocalProtocolError):
            MessageEncoder().encode("00 04")  # type: ignore[arg-type]

    def test_refused_incremental_update_leaves_implied_id_unchanged(self):
        encoder = encoder_with(RATE_TABLE)
        with pytest.raises(LocalProtocolError):
            encoder.encode(Update(StkType.INCREMENTAL_UPDATE, 1, 4, IP_192_0_2_10, (1, (0, 1, 0))))
        assert encoder.encode(Update(StkType.INCREMENTAL_UPDATE, 1, 1, IP_192_0_2_10, (1, (0, 1, 0))))

    def test_refused_definition_leaves_encoder_state_unchanged(self):
        # the refused definition was never sent: the receiver still has table 1 as current
        encoder = encoder_with(RATE_TABLE)
        with pytest.raises(LocalProtocolError):
            encoder.encode(TableDefinition(2, b"", KeyType.IP, 4, 0x200))
        assert encoder.encode(Update(StkType.UPDATE, 1, 1, IP_192_0_2_10, (1, (0, 1, 0))))
        with pytest.raises(LocalProtocolError):
            encoder.encode(Update(StkType.UPDATE, 2, 2, IP_192_0_2_10, (1,)))

    def test_refused_update_leaves_dictionary_cache_unchanged(self):
        # server_key (19) is encoded before gpt (22): a refusal on gpt must not leave
        # "srv1" in the sender's cache, or the next update uses a short form the
        # receiver cannot resolve
        definition = TableDefinition(1, b"t", KeyType.IP, 4, (1 << 19) | (1 << 22), 0, ((22, 2),))
        encoder = encoder_with(definition)
        with pytest.raises(LocalProtocolError):
            encoder.encode(Update(StkType.UPDATE, 1, 1, IP_192_0_2_10, (b"srv1", (1,))))
        wire = encoder.encode(Update(StkType.UPDATE, 1, 2, IP_192_0_2_10, (b"srv1", (1, 2))))
        decoder = MessageDecoder()
        decoder.feed(MessageEncoder().encode(definition) + wire)
        assert drain(decoder)[1].values == (b"srv1", (1, 2))

    @pytest.mark.parametrize(
        "msg",
        [
            pytest.param(
                TableDefinition(1, b"t", KeyType.IP, 4, 0x600, None, ((10, 10000),)), id="definition-params-without-expire"
            ),
            pytest.param(TableDefinition(1, b"t", KeyType.IP, 4, 0x200, None, (), b"\x05"), id="definition-trailing-without-expire"),
            pytest.param(RawMessage(5, 0x10, b"xyz"), id="raw-payload-with-short-type"),
        ],
    )
    def test_encoder_refuses_a_message_it_cannot_write_faithfully(self, msg):
        # either LocalProtocolError, or bytes that decode back to the same message;
        # never bytes that silently mean something else
        try:
            wire = MessageEncoder().encode(msg)
        except LocalProtocolError:
            return
        (decoded,) = decode_after(wire)
        if isinstance(decoded, RawMessage):
            decoded = RawMessage(decoded.msg_class, decoded.msg_type, decoded.payload)
        assert decoded == msg

    @pytest.mark.parametrize(
        "update",
        [
            pytest.param(Update(StkType.UPDATE, 1, 1, IP_192_0_2_10, (-5, (0, 1, 0))), id="negative-uint"),
            pytest.param(Update(StkType.UPDATE, 1, 1, IP_192_0_2_10, (2**64, (0, 1, 0))), id="uint-over-64-bits"),
            pytest.param(Update(StkType.UPDATE, 1, 1, IP_192_0_2_10, (1, (0, 1))), id="frqp-of-two"),
            pytest.param(Update(StkType.UPDATE, 1, 1, IP_192_0_2_10, (1, (0, 1, -1))), id="negative-frqp"),
            pytest.param(Update(StkType.UPDATE, 1, 2**32, IP_192_0_2_10, (1, (0, 1, 0))), id="update-id-33-bits"),
            pytest.param(
                Update(StkType.UPDATE_TIMED, 1, 1, IP_192_0_2_10, (1, (0, 1, 0)), expire=-1), id="negative-expire"
            ),
        ],
    )
    def test_value_that_does_not_fit_the_wire_is_refused_as_local_protocol_error(self, update):
        with pytest.raises(LocalProtocolError):
            encoder_with(RATE_TABLE).encode(update)


# -- schema helpers -------------------------------------------------------------------


class TestParamsComplete:
    def test_rate_with_period_is_complete(self):
        assert TableDefinition(1, b"t", 6, 33, 0x600, 3600000, ((10, 10000),)).params_complete

    def test_expire_without_rate_period_is_incomplete(self):
        # write-variants id 9: HAProxy ignored it (no ack, key absent from show table)
        (msg,) = decode_after(h("0a 82 16 09 0c 6d 79 74 61 62 6c 65 2e 61 67 67 72 06 21 f0 51 f0 d9 dc 0c"))
        assert msg.expire == 3600000 and msg.params == ()
        assert not msg.params_complete

    def test_arrays_with_all_parameters_are_complete(self):
        assert ARRAY_TABLE.params_complete

    def test_arrays_with_a_missing_parameter_are_incomplete(self):
        assert not TableDefinition(6, b"t", 6, 33, 0x1C00200, 0, ((22, 2), (23, 3))).params_complete

    def test_types_without_parameters_are_complete(self):
        assert TableDefinition(1, b"t", 6, 33, 0x200 | 0x4 | 0x1, 0).params_complete

    def test_definition_without_expire_and_without_arrays_is_complete(self):
        # write-variants id 10 (fields 1-6 only): HAProxy accepted it and acked uid 10
        (msg,) = decode_after(DEF_NO_EXPIRE)
        assert msg.params_complete

    def test_definition_without_expire_with_arrays_is_incomplete(self):
        assert not TableDefinition(1, b"t", 6, 33, 1 << 23).params_complete

    def test_missing_record_ends_parameter_parsing(self):
        # expire present, the gpc record announced as type 22: not the expected 23
        (msg,) = decode_after(h("0a 82 0c 01 01 74 04 04 f0 f1 fe 1e 00 16 03"))
        assert msg.params == () and msg.trailing == h("16 03")
        assert not msg.params_complete
        assert not msg.codec.decodable


_CLI_TYPES = {"ip": KeyType.IP, "ipv6": KeyType.IPV6, "integer": KeyType.INTEGER, "string": KeyType.STRING, "binary": KeyType.BINARY}


def show_table_keys(cli_path: Path) -> list[tuple[str, str, str]]:
    """(table, type, key) of every entry line of the ``show table`` outputs in a .cli.txt."""
    rows, table, kind = [], None, None
    for line in cli_path.read_text().splitlines():
        header = re.match(r"# table: ([^,]+), type: (\w+),", line)
        if header:
            table, kind = header.groups()
            continue
        entry = re.match(r"0x[0-9a-f]+: key=(\S+) ", line)
        if entry and table:
            rows.append((table, kind, entry.group(1)))
    return rows


class TestFormatKey:
    @pytest.mark.parametrize("version", RECORDED_VERSIONS)
    def test_format_key_matches_show_table_for_keys_received_over_the_wire(self, version):
        keys: dict[bytes, tuple[int, set[bytes]]] = {}
        path = VECTORS_DIR / f"haproxy-{version}-session-kinds.hex"
        for (direction, _), units in message_streams(path).items():
            if direction != "<":
                continue
            decoder = MessageDecoder()
            for unit in units:
                decoder.feed(unit.data)
                for msg in drain(decoder):
                    if isinstance(msg, Update):
                        table = decoder.tables[msg.table_id]
                        keys.setdefault(table.name, (table.key_type, set()))[1].add(msg.key)
        rows = show_table_keys(VECTORS_DIR / f"haproxy-{version}-session-kinds.cli.txt")
        assert {kind for _, kind, _ in rows} == set(_CLI_TYPES)
        for table, kind, shown in rows:
            key_type, received = keys[table.encode()]
            assert key_type == _CLI_TYPES[kind]
            assert shown in {format_key(key_type, key) for key in received}, (table, shown)

    @pytest.mark.parametrize(
        ("key_type", "key", "shown"),
        [
            (KeyType.IP, "c0 00 02 01", "192.0.2.1"),
            (KeyType.IPV6, "20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 01", "2001:db8::1"),
            # as HAProxy 2.6 and 3.4 print them (inet_ntop), not as Python 3.11's ipaddress did
            (KeyType.IPV6, "00 00 00 00 00 00 00 00 00 00 ff ff c0 00 02 01", "::ffff:192.0.2.1"),
            (KeyType.IPV6, "00 00 00 00 00 00 00 00 00 00 ff ff 00 00 c9 85", "::ffff:0.0.201.133"),
            (KeyType.IPV6, "00 00 00 00 00 00 00 00 00 00 00 00 00 01 ff ff", "::0.1.255.255"),
            (KeyType.INTEGER, "00 00 00 2a", "42"),
            (KeyType.INTEGER, "ff ff ff ff", "4294967295"),  # unsigned, as HAProxy's %u
            (KeyType.STRING, "61 6c 69 63 65", "alice"),
            (KeyType.BINARY, "61 6c 69 63 65 00 00 00 00 00 00 00 00 00 00 00", "616C6963650000000000000000000000"),
        ],
    )
    def test_format_key_literal_forms(self, key_type, key, shown):
        assert format_key(key_type, h(key)) == shown

    def test_ipv6_keys_are_written_as_the_c_library_writes_them(self):
        # HAProxy uses inet_ntop; the protocol core writes the same without the socket module.
        rng = random.Random(7)
        cases = [bytes(16), bytes(15) + b"\x01", bytes(15) + b"\x02", bytes(12) + bytes((1, 2, 3, 4))]
        for _ in range(20_000):
            words = [rng.choice((0, 0, 0, 1, 0xFFFF, rng.randrange(1 << 16))) for _ in range(8)]
            prefix = rng.random()
            if prefix < 0.2:
                words[:6] = [0, 0, 0, 0, 0, 0xFFFF]
            elif prefix < 0.35:
                words[:rng.choice((6, 7))] = [0] * 7
            cases.append(b"".join(w.to_bytes(2, "big") for w in words[:8]))
        for packed in cases:
            assert format_ipv6(packed) == socket.inet_ntop(socket.AF_INET6, packed), packed.hex()

    def test_integer_key_is_be32(self):
        assert integer_key(42) == h("00 00 00 2a")
        assert integer_key(-1) == h("ff ff ff ff")


class TestUpdateBatch:
    """A push round framed once: explicit first id per session, implied ids after."""

    DEFINITION = TableDefinition(1, b"t.aggr", 4, 4, (1 << 9) | (1 << 10), 3_600_000, ((10, 10_000),))

    def decoded(self, first_id: int, timed: bool) -> list:
        from stktagg.wire import UpdateBatch, compile_body_encoder

        d = self.DEFINITION
        encode = compile_body_encoder(d.key_type, d.key_len, d.data_types, d.params)
        bodies = [(encode(bytes((10, 0, 0, i)), (i, (5, i, 1))), 1000 + i) for i in range(3)]
        encoder = MessageEncoder()
        decoder = MessageDecoder()
        decoder.feed(encoder.encode(d) + UpdateBatch(bodies).frame(first_id, timed))
        messages = []
        while (m := decoder.next_message()) is not None:
            messages.append(m)
        return messages[1:]

    def test_timed_batch_decodes_to_consecutive_ids_with_expiries(self):
        updates = self.decoded(41, timed=True)
        assert [(u.type, u.update_id, u.expire, u.values[0]) for u in updates] == [
            (StkType.UPDATE_TIMED, 41, 1000, 0),
            (StkType.INCREMENTAL_UPDATE_TIMED, 42, 1001, 1),
            (StkType.INCREMENTAL_UPDATE_TIMED, 43, 1002, 2),
        ]

    def test_batch_for_a_2_0_peer_has_no_expiries(self):
        updates = self.decoded(7, timed=False)
        assert [(u.type, u.update_id, u.expire) for u in updates] == [
            (StkType.UPDATE, 7, None), (StkType.INCREMENTAL_UPDATE, 8, None), (StkType.INCREMENTAL_UPDATE, 9, None),
        ]


def test_short_update_frame_after_a_definition_is_a_typed_error_not_a_crash():
    """Found by the fuzz campaign: an update frame too short for its id, in a run."""
    decoder = MessageDecoder()
    decoder.feed(bytes.fromhex("0a8218030a6d7969702e6c6f63616c0404f051f0d9dc0c0af0e203" "0a80020000"))
    decoder.next_message()
    assert decoder.next_run() is None  # left to the general decoder...
    with pytest.raises(RemoteProtocolError):
        decoder.next_message()  # ...which says what is wrong


class TestRunDecoderVarints:
    """The run decoder inlines multi-byte varints; anything unusual is left to the general decoder."""

    @staticmethod
    def stream(*raw_values: bytes) -> MessageDecoder:
        name = b"t.local"
        body = bytes((1, len(name))) + name + bytes((4, 4)) + encode_varint(1 << 9) + encode_varint(60_000)
        data = b"\x0a\x82" + encode_varint(len(body)) + body
        for i, raw in enumerate(raw_values):
            update = (i + 1).to_bytes(4, "big") + bytes((10, 0, 0, i)) + raw
            data += b"\x0a\x80" + encode_varint(len(update)) + update
        decoder = MessageDecoder()
        decoder.feed(data)
        assert isinstance(decoder.next_message(), TableDefinition)
        return decoder

    def test_multi_byte_values_decode_as_the_general_decoder_does(self):
        values = [0, 239, 240, 2287, 2288, 264_431, 264_432, (1 << 32) - 1, (1 << 64) - 1]
        fast = self.stream(*map(encode_varint, values)).next_run()[1]
        general = drain(self.stream(*map(encode_varint, values)))
        assert [v for _, v, _ in fast] == [u.values for u in general] == [(v,) for v in values]

    @pytest.mark.parametrize("raw", [b"\xff" * 10 + b"\x01", b"\xff" * 9 + b"\x7f"],
                             ids=["longer than 10 bytes", "wider than 64 bits"])
    def test_a_bad_varint_ends_the_run_and_the_general_decoder_names_it(self, raw):
        decoder = self.stream(encode_varint(7), raw)
        table, items, last = decoder.next_run()
        assert [v for _, v, _ in items] == [(7,)] and last == 1  # the good update before it
        assert decoder.next_run() is None
        with pytest.raises(DecodeError, match="varint"):
            decoder.next_message()
