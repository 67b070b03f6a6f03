"""Issue 14: decoding a read costs time linear in its size, whatever the mix of messages.

Two kinds of checks: the bytes copied out of the receive buffer, counted
(exact, machine-independent: at most a few times the bytes read), and the
time of one read of 32,000 messages against one of 4,000, as a ratio measured
in the same run (CPU time, best of three, collector off), never a wall-clock
threshold: linear time gives about 8, the quadratic copying of the tail gave
14 to 40 (more when every copy of the tail faulted its pages in).
"""

from __future__ import annotations

import gc
import time
from typing import Callable

from stktagg.session import AckReceived, PeerSession, Role, TableDefined, UpdatesReceived
from stktagg.wire import Ack, Control, ControlType, MessageDecoder, MessageEncoder, StkType, TableDefinition, Update

MASK = (1 << 9) | (1 << 10)  # http_req_cnt, http_req_rate
DEFINITION = TableDefinition(1, b"/t.local", 2, 4, MASK, 60_000, ((10, 10_000),))
SMALL, LARGE = 4_000, 32_000
#: Linear is 8, quadratic 64: room for a noisy machine shared with others.
MAX_RATIO = 16.0
#: Each byte is copied at most: once into the run decoder's frozen copy, and
#: twice by the general decoder (payload and frame bytes).
MAX_COPIES_PER_BYTE = 3


def _encoder() -> tuple[MessageEncoder, bytes]:
    encoder = MessageEncoder()
    return encoder, encoder.encode(DEFINITION)


def acks(count: int) -> bytes:
    encoder, definition = _encoder()
    return definition + encoder.encode(Ack(1, 5)) * count


def mixed(count: int) -> bytes:
    """``count`` messages: acks, heartbeats, definitions and updates in turn."""
    encoder, definition = _encoder()
    ack, heartbeat = encoder.encode(Ack(1, 5)), encoder.encode(Control(ControlType.HEARTBEAT))
    parts = [definition]
    for i in range(1, count // 4 + 1):
        update = Update(StkType.UPDATE_TIMED, 1, i, i.to_bytes(4, "big"), (i, (0, i, 0)), 1000)
        parts += [ack, heartbeat, encoder.encode(DEFINITION), encoder.encode(update)]
    return b"".join(parts)


def established() -> PeerSession:
    session = PeerSession(Role.ACCEPTING, "AGGR", 0.0, is_declared=lambda name: name == "A")
    session.receive_data(b"HAProxyS 2.1\nAGGR\nA 4242 1\n", 0.0)
    session.data_to_send()
    return session


def best_time(run: Callable[[], object], tries: int = 3) -> float:
    best = float("inf")
    for _ in range(tries):
        gc.collect()
        gc.disable()
        try:
            start = time.process_time()
            run()
            best = min(best, time.process_time() - start)
        finally:
            gc.enable()
    return best


def session_read(data: bytes) -> Callable[[], list]:
    return lambda: established().receive_data(data, 1.0)


class CountingBuffer(bytearray):
    """A receive buffer that counts the bytes sliced out of it."""

    copied = 0

    def __getitem__(self, index):  # type: ignore[no-untyped-def]
        got = super().__getitem__(index)
        if isinstance(index, slice):
            self.copied += len(got)
        return got


def decoder_read(data: bytes, buffer: bytearray | None = None) -> Callable[[], list]:
    def run() -> list:
        decoder = MessageDecoder()
        if buffer is not None:
            decoder.frames._buf = buffer
        decoder.feed(data)
        out = []
        while True:
            run_ = decoder.next_run()
            if run_ is not None:
                out.append(run_)
                continue
            msg = decoder.next_message()
            if msg is None:
                return out
            out.append(msg)

    return run


def ratio(build: Callable[[int], bytes], reader: Callable[[bytes], Callable[[], object]]) -> float:
    small, large = build(SMALL), build(LARGE)
    reader(small)()  # warm up: generated run decoder, caches
    return best_time(reader(large)) / best_time(reader(small))


class TestOneReadOfManyMessages:
    def test_32k_acks_in_one_read_all_come_out(self) -> None:
        events = established().receive_data(acks(LARGE), 1.0)
        assert isinstance(events[0], TableDefined)
        assert sum(isinstance(e, AckReceived) for e in events) == LARGE

    def test_a_mix_in_one_read_all_comes_out_in_order(self) -> None:
        events = established().receive_data(mixed(SMALL), 1.0)
        updates = [u for e in events if isinstance(e, UpdatesReceived) for u in e.updates]
        assert [key for key, _, _ in updates] == [i.to_bytes(4, "big") for i in range(1, SMALL // 4 + 1)]
        assert sum(isinstance(e, AckReceived) for e in events) == SMALL // 4
        assert sum(isinstance(e, TableDefined) for e in events) == SMALL // 4 + 1

    def test_acks_cost_time_linear_in_their_number_in_a_session(self) -> None:
        assert ratio(acks, session_read) < MAX_RATIO

    def test_a_mix_costs_time_linear_in_its_size_in_a_session(self) -> None:
        assert ratio(mixed, session_read) < MAX_RATIO

    def test_acks_cost_time_linear_in_their_number_in_the_decoder(self) -> None:
        assert ratio(acks, decoder_read) < MAX_RATIO

    def test_a_mix_costs_time_linear_in_its_size_in_the_decoder(self) -> None:
        assert ratio(mixed, decoder_read) < MAX_RATIO


class TestBytesCopied:
    def test_32k_acks_copy_each_byte_a_bounded_number_of_times(self) -> None:
        data, buffer = acks(LARGE), CountingBuffer()
        assert len(decoder_read(data, buffer)()) == LARGE + 1
        assert buffer.copied <= MAX_COPIES_PER_BYTE * len(data)

    def test_a_mix_copies_each_byte_a_bounded_number_of_times(self) -> None:
        data, buffer = mixed(LARGE), CountingBuffer()
        decoder_read(data, buffer)()
        assert buffer.copied <= MAX_COPIES_PER_BYTE * len(data)

    def test_many_small_reads_copy_each_byte_a_bounded_number_of_times(self) -> None:
        data, buffer = mixed(SMALL), CountingBuffer()
        decoder = MessageDecoder()
        decoder.frames._buf = buffer
        for i in range(0, len(data), 7):
            decoder.feed(data[i : i + 7])
            while decoder.next_run() is not None or decoder.next_message() is not None:
                pass
        assert decoder.frames.buffered() == 0
        assert buffer.copied <= MAX_COPIES_PER_BYTE * len(data)


class TestTheFrozenCopy:
    def test_is_made_at_most_once_per_feed(self) -> None:
        decoder = MessageDecoder()
        decoder.feed(mixed(400))
        copies = set()
        while True:
            run = decoder.next_run()
            copies.add(id(decoder.frames._frozen))
            if run is None and decoder.next_message() is None:
                break
        assert len(copies - {id(None)}) == 1

    def test_is_not_made_for_an_incomplete_update_frame(self) -> None:
        encoder, definition = _encoder()
        update = encoder.encode(Update(StkType.UPDATE, 1, 1, b"\x01\x02\x03\x04", (1, (0, 1, 0))))
        decoder = MessageDecoder()
        decoder.feed(definition)
        assert isinstance(decoder.next_message(), TableDefinition)
        for byte in update[:-1]:
            decoder.feed(bytes((byte,)))
            assert decoder.next_run() is None and decoder.next_message() is None
            assert decoder.frames._frozen is None
        decoder.feed(update[-1:])
        table, items, last = decoder.next_run()
        assert items == [(b"\x01\x02\x03\x04", (1, (0, 1, 0)), None)] and last == 1
