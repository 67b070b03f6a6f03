"""Tests of stktagg.codec: HAProxy's varint (peers-protocol.md §2.2) and the Reader cursor."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from stktagg.codec import (
    VARINT_MAX_LENGTH,
    VARINT_MAX_VALUE,
    DecodeError,
    Reader,
    be32,
    decode_varint,
    encode_varint,
)
from stktagg.errors import PeersErrorCode, RemoteProtocolError

#: The worked-example table of peers-protocol.md §2.2 (plus the "trailing zero" 3000 example).
WORKED_EXAMPLES = [
    (0, "00"),
    (239, "ef"),
    (240, "f0 00"),
    (255, "ff 00"),
    (1000, "f8 2f"),
    (1536, "f0 51"),
    (2287, "ff 7f"),
    (2288, "f0 80 00"),
    (0x1234, "f4 94 01"),
    (10000, "f0 e2 03"),
    (3600000, "f0 d9 dc 0c"),
    (2**32 - 1, "ff f0 fe fe 7e"),
    (2**64 - 1, "ff f0 fe fe fe fe fe fe fe 0e"),
    (3000, "f8 ac 00"),
]

#: Smallest values taking 2, 3, ... 10 bytes (the PEER_ENC_nBYTES_MIN thresholds, §2.2).
THRESHOLDS = {
    2: 240,
    3: 2288,
    4: 264432,
    5: 33818864,
    6: 4328786160,
    7: 554084600048,
    8: 70922828777712,
    9: 9078122083518704,
    10: 1161999626690365680,
}


def _ids(rows):
    return [str(value) for value, _ in rows]


class TestVarintEncode:
    @pytest.mark.parametrize(("value", "wire"), WORKED_EXAMPLES, ids=_ids(WORKED_EXAMPLES))
    def test_encode_matches_worked_example(self, value, wire):
        assert encode_varint(value) == bytes.fromhex(wire)

    @pytest.mark.parametrize(("length", "value"), sorted(THRESHOLDS.items()))
    def test_threshold_is_smallest_value_of_its_length(self, length, value):
        assert len(encode_varint(value)) == length
        assert len(encode_varint(value - 1)) == length - 1

    @pytest.mark.parametrize(("length", "value"), sorted(THRESHOLDS.items()))
    def test_threshold_encodes_as_f0_then_80s_then_00(self, length, value):
        assert encode_varint(value) == b"\xf0" + b"\x80" * (length - 2) + b"\x00"

    @pytest.mark.parametrize(("length", "value"), sorted(THRESHOLDS.items())[1:])
    def test_value_below_threshold_encodes_as_ff_run_then_7f(self, length, value):
        assert encode_varint(value - 1) == b"\xff" * (length - 2) + b"\x7f"

    def test_one_byte_range_ends_at_239(self):
        assert encode_varint(239) == b"\xef"
        assert encode_varint(240) == b"\xf0\x00"

    def test_max_value_takes_ten_bytes(self):
        assert len(encode_varint(VARINT_MAX_VALUE)) == VARINT_MAX_LENGTH == 10

    @pytest.mark.parametrize("value", [-1, -239, -240, -(2**64)])
    def test_encode_rejects_negative_value(self, value):
        with pytest.raises(ValueError):
            encode_varint(value)

    @pytest.mark.parametrize("value", [2**64, 2**64 + 1, 2**80])
    def test_encode_rejects_value_wider_than_64_bits(self, value):
        with pytest.raises(ValueError):
            encode_varint(value)


class TestVarintDecode:
    @pytest.mark.parametrize(("value", "wire"), WORKED_EXAMPLES, ids=_ids(WORKED_EXAMPLES))
    def test_decode_matches_worked_example(self, value, wire):
        data = bytes.fromhex(wire)
        assert decode_varint(data) == (value, len(data))

    @pytest.mark.parametrize(("length", "value"), sorted(THRESHOLDS.items()))
    def test_decode_thresholds_and_their_predecessors(self, length, value):
        assert decode_varint(b"\xf0" + b"\x80" * (length - 2) + b"\x00") == (value, length)
        below = encode_varint(value - 1)
        assert decode_varint(below) == (value - 1, length - 1)

    @pytest.mark.parametrize(
        "value", [v for v, _ in WORKED_EXAMPLES] + [t for t in THRESHOLDS.values()] + [t - 1 for t in THRESHOLDS.values()]
    )
    def test_decode_returns_none_for_every_strict_prefix(self, value):
        data = encode_varint(value)
        for cut in range(len(data)):
            assert decode_varint(data[:cut]) is None, data[:cut].hex()

    def test_decode_of_empty_input_is_none(self):
        assert decode_varint(b"") is None

    def test_decode_at_end_of_input_is_none(self):
        assert decode_varint(b"\x05", 1) is None

    def test_decode_at_nonzero_pos_returns_absolute_end(self):
        data = b"\xaa\xbb" + bytes.fromhex("f0 d9 dc 0c") + b"\xcc"
        assert decode_varint(data, 2) == (3600000, 6)
        assert decode_varint(data, 6) == (0xCC, 7)

    def test_decode_at_nonzero_pos_ignores_bytes_before_pos(self):
        # the bytes before pos look like an unfinished varint: they must not be read
        assert decode_varint(b"\xff\xff\x2a", 2) == (42, 3)

    def test_decode_stops_at_the_end_of_the_varint(self):
        assert decode_varint(bytes.fromhex("f8 2f 00 00")) == (1000, 2)

    def test_decode_accepts_bytearray_and_memoryview(self):
        data = bytes.fromhex("f4 94 01")
        assert decode_varint(bytearray(data)) == (0x1234, 3)
        assert decode_varint(memoryview(data)) == (0x1234, 3)

    def test_decode_rejects_11_byte_run(self):
        with pytest.raises(DecodeError):
            decode_varint(b"\xf0" + b"\x80" * 9 + b"\x00")

    def test_decode_rejects_10_bytes_still_continuing_without_waiting(self):
        # a 10th byte with bit 7 set can never end a valid varint: error, not None
        with pytest.raises(DecodeError):
            decode_varint(b"\xf0" + b"\x80" * 9)

    def test_decode_rejects_endless_continuation_run(self):
        with pytest.raises(DecodeError):
            decode_varint(b"\xff" * 1000)

    @pytest.mark.parametrize(
        "wire",
        [
            "ff f0 fe fe fe fe fe fe fe 0f",  # 2^64 - 1 + 2^60
            "f0 f1 fe fe fe fe fe fe fe 0e",  # 2^64: one more than the max, in the same shape
            "ff ff ff ff ff ff ff ff ff 7f",  # the largest 10-byte pattern
        ],
    )
    def test_decode_rejects_10_byte_value_over_64_bits(self, wire):
        with pytest.raises(DecodeError):
            decode_varint(bytes.fromhex(wire))

    def test_decode_error_is_a_remote_protocol_error(self):
        with pytest.raises(RemoteProtocolError) as info:
            decode_varint(b"\xff" * 11)
        assert info.value.error_code is PeersErrorCode.PROTOCOL_ERROR


class TestVarintProperties:
    @settings(max_examples=500)
    @given(st.integers(min_value=0, max_value=VARINT_MAX_VALUE))
    @example(0)
    @example(239)  # last 1-byte value
    @example(240)  # first 2-byte value
    @example(3000)  # encoding ends with a zero byte
    @example(VARINT_MAX_VALUE)  # 10 bytes, the top of the range
    def test_decode_inverts_encode(self, value):
        data = encode_varint(value)
        assert decode_varint(data) == (value, len(data))
        assert decode_varint(b"\x00" + data + b"\xff", 1) == (value, len(data) + 1)

    @settings(max_examples=300)
    @given(st.integers(min_value=0, max_value=VARINT_MAX_VALUE))
    @example(THRESHOLDS[10] - 1)  # last 9-byte value
    def test_encoded_length_follows_thresholds(self, value):
        expected = 1 + sum(1 for threshold in THRESHOLDS.values() if value >= threshold)
        assert len(encode_varint(value)) == expected

    @settings(max_examples=1000)
    @given(st.binary(max_size=14))
    @example(b"\xff" * 10)  # 10 continuation bytes
    @example(bytes.fromhex("ff f0 fe fe fe fe fe fe fe 0f"))  # 10 bytes, over 64 bits
    def test_random_bytes_give_value_none_or_decode_error(self, data):
        try:
            result = decode_varint(data)
        except DecodeError:
            return
        if result is None:
            assert len(data) < VARINT_MAX_LENGTH
            return
        value, end = result
        assert 0 <= value <= VARINT_MAX_VALUE
        assert 1 <= end <= min(len(data), VARINT_MAX_LENGTH)
        # the encoding is bijective: what decodes re-encodes to the same bytes
        assert encode_varint(value) == data[:end]


class TestReader:
    def test_read_varint_advances_position(self):
        reader = Reader(bytes.fromhex("01 f0 e2 03 2a"))
        assert reader.read_varint("a") == 1
        assert reader.read_varint("b") == 10000
        assert reader.pos == 4
        assert reader.remaining() == 1
        assert not reader.at_end()
        assert reader.read_varint("c") == 42
        assert reader.at_end()

    def test_read_varint_past_end_raises_decode_error_naming_field(self):
        reader = Reader(b"")
        with pytest.raises(DecodeError, match="table id"):
            reader.read_varint("table id")

    def test_read_varint_truncated_raises_decode_error(self):
        with pytest.raises(DecodeError):
            Reader(b"\xf0\x80").read_varint("x")

    def test_read_varint_respects_end_bound(self):
        # the varint continues in data[2], which is outside the reader's window
        reader = Reader(b"\x00\xf0\x00", pos=1, end=2)
        with pytest.raises(DecodeError):
            reader.read_varint("x")

    def test_read_bytes_returns_bytes_and_advances(self):
        reader = Reader(memoryview(b"alice!"))
        value = reader.read_bytes(5, "name")
        assert value == b"alice" and type(value) is bytes
        assert reader.pos == 5

    def test_read_bytes_past_end_raises_decode_error_not_index_error(self):
        reader = Reader(b"\x01\x02")
        with pytest.raises(DecodeError, match="key"):
            reader.read_bytes(3, "key")
        assert reader.pos == 0

    def test_read_bytes_respects_end_bound(self):
        with pytest.raises(DecodeError):
            Reader(b"abcdef", end=3).read_bytes(4, "x")

    def test_read_zero_bytes_at_end_is_empty(self):
        reader = Reader(b"")
        assert reader.read_bytes(0, "x") == b""

    def test_read_be32(self):
        reader = Reader(bytes.fromhex("de ad be ef 00 00 00 2a"))
        assert reader.read_be32("a") == 0xDEADBEEF
        assert reader.read_be32("b") == 42
        assert reader.at_end()

    @pytest.mark.parametrize("size", [0, 1, 2, 3])
    def test_read_be32_short_raises_decode_error(self, size):
        with pytest.raises(DecodeError, match="update id"):
            Reader(b"\x00" * size).read_be32("update id")

    def test_read_be32_respects_end_bound(self):
        with pytest.raises(DecodeError):
            Reader(b"\x00\x00\x00\x01\x02", pos=2, end=5).read_be32("x")

    def test_read_rest_returns_remaining_bytes_and_ends(self):
        reader = Reader(b"\x01abc")
        reader.read_varint("x")
        assert reader.read_rest() == b"abc"
        assert reader.at_end()
        assert reader.read_rest() == b""

    def test_read_rest_stops_at_end_bound(self):
        reader = Reader(b"abcdef", pos=1, end=4)
        assert reader.read_rest() == b"bcd"

    def test_be32_is_big_endian(self):
        assert be32(0x01020304) == b"\x01\x02\x03\x04"
        assert be32(0) == b"\x00\x00\x00\x00"
        assert be32(0xFFFFFFFF) == b"\xff\xff\xff\xff"

    @settings(max_examples=300)
    @given(st.binary(max_size=12), st.lists(st.sampled_from(["varint", "bytes", "be32", "rest"]), max_size=6), st.integers(0, 8))
    def test_reader_only_raises_decode_error(self, data, ops, count):
        reader = Reader(data)
        for op in ops:
            try:
                if op == "varint":
                    reader.read_varint("f")
                elif op == "bytes":
                    reader.read_bytes(count, "f")
                elif op == "be32":
                    reader.read_be32("f")
                else:
                    reader.read_rest()
            except DecodeError:
                pass
            assert 0 <= reader.pos <= reader.end
