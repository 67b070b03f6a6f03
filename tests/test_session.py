"""PeerSession: replays of real HAProxy sessions, and the state machine's rules."""

from __future__ import annotations

import datetime
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stktagg.errors import LocalProtocolError
from stktagg.session import (
    _TRANSITIONS,
    AckReceived,
    Closed,
    Established,
    Ignored,
    Input,
    PeerSession,
    ResyncRequested,
    Role,
    State,
    TableDefined,
    TeachConfirmed,
    TeachFinished,
    UpdatesReceived,
)
from stktagg.wire import MessageDecoder, TableDefinition, Update
from vectors import RECORDED_VERSIONS, VECTORS_DIR, read_trace, reads, trace_files

PEERS = {"A", "B", "C", "K"}

#: Recordings where the capture peer misbehaved on purpose (no resync answer,
#: no heartbeat, no acks, a 502 refusal, hand-made definitions and switches):
#: a working session must *not* reproduce what it sent there.
DELIBERATE_MISBEHAVIOUR = (
    "resync-not-answered", "no-heartbeat-from-us", "reconnect-unacked", "status-502", "write-variants",
)
REPLAYED = [p for p in trace_files() if not any(tag in p.name for tag in DELIBERATE_MISBEHAVIOUR)]


def _time(unit_text_time: str) -> float:
    return datetime.datetime.fromisoformat(unit_text_time).timestamp()


def accepting(now: float = 0.0, **kw) -> PeerSession:
    return PeerSession(Role.ACCEPTING, "AGGR", now, is_declared=lambda name: name in PEERS, **kw)


def hello(caller: str = "A", callee: str = "AGGR", version: str = "2.1") -> bytes:
    return f"HAProxyS {version}\n{callee}\n{caller} 4242 1\n".encode()


def established(now: float = 0.0, **kw) -> PeerSession:
    session = accepting(now, **kw)
    events = session.receive_data(hello(), now)
    assert events == [Established("A", (2, 1))]
    assert session.data_to_send() == b"200\n"
    return session


def flatten(events: list) -> list:
    """Events with update batches cut into single updates (batching follows read boundaries)."""
    out = []
    for event in events:
        if isinstance(event, UpdatesReceived):
            out += [("update", event.table.name, *u) for u in event.updates]
        else:
            out.append(event)
    return out


class Replay:
    """Plays the aggregator side of one recorded connection through a PeerSession.

    HAProxy's bytes ('<') are fed at their recorded times. The capture peer's
    own initiatives ('>' definitions, updates, resync requests, heartbeats)
    are asked of the session at their recorded times; everything else it sent
    (status, acks, resync answers and confirms) must come out of the session
    on its own. At the end, what the session sent must equal, byte for byte,
    what the capture peer sent.
    """

    def __init__(self, start: float) -> None:
        # The capture peer sent heartbeats after 2 s without sending.
        self.session = PeerSession(
            Role.ACCEPTING, "AGGR", start, is_declared=lambda name: name != "AGGR",
            heartbeat_interval=2.0, silence_timeout=60.0,
        )
        self.produced = bytearray()
        self.expected = bytearray()
        self.out_decoder = MessageDecoder()
        self.out_tables: dict[int, object] = {}
        self.events: list = []

    def incoming(self, data: bytes, now: float) -> None:
        events = self.session.receive_data(data, now)
        self.events += events
        for event in events:
            if isinstance(event, ResyncRequested):
                self.session.finish_teach(now)  # our policy: answer at once
        self.produced += self.session.data_to_send()

    def outgoing(self, unit, now: float) -> None:
        if unit.is_handshake:
            pass
        elif unit.text.startswith("control/heartbeat"):
            self.session.poll(now)
        elif unit.text.startswith("control/resync-request"):
            self.session.request_resync(now)
        elif unit.text.startswith("stick-table/table-definition") or unit.text.startswith("stick-table/update"):
            self.out_decoder.feed(unit.data)
            msg = self.out_decoder.next_message()
            if isinstance(msg, TableDefinition):
                self.out_tables[msg.table_id] = self.session.define_table(
                    msg.name, msg.key_type, msg.key_len, msg.data_types, msg.expire, msg.params
                )
            else:
                assert isinstance(msg, Update)
                self.session.send_update(self.out_tables[msg.table_id], msg.key, msg.values, now, msg.expire)
        self.produced += self.session.data_to_send()
        self.expected += unit.data


@pytest.mark.parametrize("path", REPLAYED, ids=lambda p: p.name)
def test_replay_emits_what_a_working_peer_sent(path):
    replays: dict[int, Replay] = {}
    checked = 0
    for read in reads(read_trace(path)):
        first = read[0]
        now = _time(first.time)
        if first.is_raw:
            continue  # hand-made garbage the capture peer sent on purpose
        replay = replays.get(first.connection)
        if replay is None:
            replay = replays[first.connection] = Replay(now)
        if first.direction == "<":
            # what HAProxy's bytes of one read gave the capture peer, in one call
            replay.incoming(b"".join(unit.data for unit in read), now)
            continue
        replay.outgoing(first, now)
        checked += 1
        if first.text.startswith("stick-table/table-definition"):
            continue  # the session sends it just before the table's first update
        # Everything expected so far must already have been produced, in order.
        assert bytes(replay.produced[: len(replay.expected)]) == bytes(replay.expected), f"{path.name}:{first.lineno}"
    for replay in replays.values():
        assert bytes(replay.produced) == bytes(replay.expected)
        assert replay.session.state is State.ESTABLISHED
        assert not any(isinstance(e, Closed) for e in replay.events)
    assert checked > 0


def test_replay_covers_the_session_traces():
    names = {p.name for p in REPLAYED}
    for version in RECORDED_VERSIONS:
        for kind in ("session-basic", "session-abc", "session-kinds", "session-peers-section-tables"):
            assert f"haproxy-{version}-{kind}.hex" in names


def test_replayed_updates_carry_the_recorded_values():
    units = [u for u in read_trace(VECTORS_DIR / "haproxy-2.6-session-basic.hex") if u.connection == 1]
    replay = Replay(0.0)
    for unit in units:
        if unit.direction == "<":
            replay.incoming(unit.data, 1.0)
    batches = [e for e in replay.events if isinstance(e, UpdatesReceived)]
    assert batches[0].updates[0] == (b"\x7f\x00\x00\x01", (1, (0, 1, 0)), None) and batches[0].last_id == 2
    taught_back = [b for b in batches if b.table.name == b"mytable.aggr"]
    assert taught_back[0].last_id == 2147483649  # learned entries come back with 2^31 + n
    key, values, expire = taught_back[0].updates[0]
    assert key == b"alice" and values[0] == 42 and expire is not None  # a teach uses timed updates


class TestAcceptingHandshake:
    def test_hello_split_byte_by_byte_is_answered_once_complete(self):
        session = accepting()
        data = hello() + b"\x00\x00"
        events = []
        for i in range(len(data)):
            events += session.receive_data(data[i : i + 1], 0.0)
        assert events == [Established("A", (2, 1)), ResyncRequested()]
        assert session.data_to_send() == b"200\n"

    def test_crlf_lines_are_accepted(self):
        session = accepting()
        session.receive_data(b"HAProxyS 2.1\r\nAGGR\r\nB 1 1\r\n", 0.0)
        assert session.state is State.ESTABLISHED and session.peer_name == "B"

    @pytest.mark.parametrize(
        "data, status",
        [
            (b"HELLO 2.1\nAGGR\nA 1 1\n", 501),
            (b"HAProxyS2.1\nAGGR\nA 1 1\n", 501),
            (b"HAProxyS 2.2\nAGGR\nA 1 1\n", 502),
            (b"HAProxyS 3.0\nAGGR\nA 1 1\n", 502),
            (b"HAProxyS 1.0\nAGGR\nA 1 1\n", 502),
            (b"HAProxyS 2.1.0\nAGGR\nA 1 1\n", 502),
            (b"HAProxyS x.1\nAGGR\nA 1 1\n", 502),
            (b"HAProxyS 2.1\nA\nA 1 1\n", 503),
            (b"HAProxyS 2.1\naggr\nA 1 1\n", 503),
            (b"HAProxyS 2.1\nAGGR\nA\n", 501),
            (b"HAProxyS 2.1\nAGGR\nZ 1 1\n", 504),
            (b"HAProxyS 2.1\nAGGR\nAGGR 1 1\n", 300),
        ],
    )
    def test_bad_hello_gets_its_status_and_closes(self, data, status):
        session = accepting()
        events = session.receive_data(data, 0.0)
        assert session.data_to_send() == f"{status}\n".encode()
        assert session.state is State.CLOSED
        assert len(events) == 1 and isinstance(events[0], Closed) and events[0].status == status

    def test_version_2_0_is_accepted_and_remembered(self):
        session = accepting()
        session.receive_data(hello(version="2.0"), 0.0)
        assert session.version == (2, 0)
        table = session.define_table(b"t.aggr", 6, 33, 0x200, 1000, ())
        session.data_to_send()
        session.send_update(table, b"k", (1,), 0.0, expire=500)
        # No timed updates toward a 2.0 peer: 0x80, not 0x85.
        assert session.data_to_send().endswith(bytes.fromhex("0a800700000001016b01"))

    def test_overlong_line_closes_without_status(self):
        session = accepting()
        events = session.receive_data(b"H" * 600, 0.0)
        assert session.data_to_send() == b""
        assert isinstance(events[0], Closed) and events[0].status is None

    def test_handshake_timeout(self):
        session = accepting(10.0)
        session.receive_data(b"HAProxyS 2.1\n", 11.0)
        assert session.next_deadline() == 15.0
        assert session.poll(14.9) == []
        events = session.poll(15.0)
        assert isinstance(events[0], Closed) and "handshake timeout" in events[0].reason

    def test_messages_in_the_hello_segment_are_not_lost(self):
        session = accepting()
        definition = bytes.fromhex("0a821b010d6d797461626c652e6c6f63616c0621f051f0d9dc0c0af0e203")
        update = bytes.fromhex("0a800e0000000205616c69636501000100")
        events = session.receive_data(hello() + definition + update, 0.0)
        assert [type(e) for e in events] == [Established, TableDefined, UpdatesReceived]
        assert session.data_to_send() == b"200\n" + bytes.fromhex("0a84050100000002")


class TestConnectingHandshake:
    def connecting(self, **kw) -> PeerSession:
        return PeerSession(Role.CONNECTING, "AGGR", 0.0, remote_name="A", pid=77, **kw)

    def test_sends_hello_at_once(self):
        assert self.connecting().data_to_send() == b"HAProxyS 2.1\nA\nAGGR 77 1\n"

    def test_downgraded_hello_announces_2_0(self):
        assert self.connecting(downgraded=True).data_to_send().startswith(b"HAProxyS 2.0\n")

    def test_status_200_establishes_and_following_bytes_are_messages(self):
        session = self.connecting()
        session.data_to_send()
        events = session.receive_data(b"200\n\x00\x00", 1.0)
        assert events == [Established("A", (2, 1)), ResyncRequested()]

    @pytest.mark.parametrize("status", [300, 501, 502, 503, 504])
    def test_refusal_closes_with_the_status(self, status):
        session = self.connecting()
        events = session.receive_data(f"{status}\n".encode(), 1.0)
        assert session.state is State.CLOSED and events[0].status == status

    def test_garbage_status_closes_without_status(self):
        events = self.connecting().receive_data(b"hello\n", 1.0)
        assert isinstance(events[0], Closed) and events[0].status is None


class TestEstablished:
    def test_update_is_acked_once_per_batch_with_newest_id(self):
        session = established()
        definition = bytes.fromhex("0a8218030a6d7969702e6c6f63616c0404f051f0d9dc0c0af0e203")
        up1 = bytes.fromhex("0a800c000000027f00000101000100")
        up2 = bytes.fromhex("0a800c000000057f00000102000200")
        events = session.receive_data(definition + up1 + up2, 1.0)
        assert [type(e) for e in events] == [TableDefined, UpdatesReceived]
        assert [k for k, _, _ in events[1].updates] == [b"\x7f\x00\x00\x01"] * 2 and events[1].last_id == 5
        assert session.data_to_send() == bytes.fromhex("0a84050300000005")

    def test_malformed_message_sends_protocol_error_after_earlier_events(self):
        session = established()
        events = session.receive_data(b"\x00\x04" + bytes.fromhex("0a820301054d"), 1.0)
        assert isinstance(events[-1], Closed) and events[-1].error is not None
        assert session.data_to_send() == b"\x01\x00"
        assert session.state is State.CLOSED
        assert session.receive_data(b"\x00\x04", 2.0) == []

    def test_oversized_message_sends_size_limit(self):
        session = established()
        events = session.receive_data(bytes.fromhex("0a80f0d308"), 1.0)
        assert isinstance(events[-1], Closed)
        assert session.data_to_send() == b"\x01\x01"

    def test_unknown_messages_are_ignored_not_fatal(self):
        session = established()
        events = session.receive_data(bytes.fromhex("0500") + bytes.fromhex("0ac80100"), 1.0)
        assert [type(e) for e in events] == [Ignored, Ignored]
        assert session.state is State.ESTABLISHED

    def test_resync_request_is_answered_by_finish_teach_then_confirmed(self):
        session = established()
        assert session.receive_data(b"\x00\x00", 1.0) == [ResyncRequested()]
        assert session.teaching
        session.finish_teach(1.0)
        assert session.data_to_send() == b"\x00\x01" and not session.teaching
        assert session.receive_data(b"\x00\x03", 1.1) == [TeachConfirmed()]
        assert not session.awaiting_teach_confirm

    def test_every_teach_received_is_confirmed(self):
        session = established()
        session.request_resync(1.0)
        assert session.data_to_send() == b"\x00\x00" and session.learning
        assert session.receive_data(b"\x00\x02", 1.5) == [TeachFinished(partial=True)]
        assert session.data_to_send() == b"\x00\x03" and not session.learning
        # Unasked teaches are confirmed too, as HAProxy does.
        assert session.receive_data(b"\x00\x01", 2.0) == [TeachFinished(partial=False)]
        assert session.data_to_send() == b"\x00\x03"

    def test_heartbeat_after_3s_without_sending(self):
        session = established(0.0)
        assert session.next_deadline() == 3.0
        session.poll(2.99)
        assert session.data_to_send() == b""
        session.poll(3.0)
        assert session.data_to_send() == b"\x00\x04"
        assert session.next_deadline() == 5.0  # silence deadline comes first now

    def test_peer_silent_for_5s_is_closed(self):
        session = established(0.0)
        session.receive_data(b"\x00\x04", 1.0)
        assert session.poll(5.99) == []
        events = session.poll(6.0)
        assert isinstance(events[0], Closed) and "silent" in events[0].reason

    def test_silence_while_we_do_not_read_is_not_the_peers(self):
        session = established(0.0)
        for t in (2.0, 4.0, 6.0, 8.0):
            session.not_reading(t)  # backpressure: the owner is not reading the socket
            assert session.poll(t) == []
        assert session.state is State.ESTABLISHED

    def test_end_of_input_closes(self):
        session = established()
        events = session.receive_data(b"", 1.0)
        assert isinstance(events[0], Closed) and session.state is State.CLOSED

    def test_our_updates_are_preceded_by_their_definition_on_each_switch(self):
        session = established()
        t1 = session.define_table(b"a.aggr", 6, 33, 0x200, 1000, ())
        t2 = session.define_table(b"b.aggr", 6, 33, 0x200, 1000, ())
        assert (t1.definition.table_id, t2.definition.table_id) == (1, 2)
        session.send_update(t1, b"x", (1,), 1.0)
        session.send_update(t1, b"y", (1,), 1.0)
        session.send_update(t2, b"x", (1,), 1.0)
        session.send_update(t1, b"z", (1,), 1.0)
        decoder = MessageDecoder()
        decoder.feed(session.data_to_send())
        kinds = []
        while (msg := decoder.next_message()) is not None:
            kinds.append((type(msg).__name__, msg.table_id, getattr(msg, "update_id", None)))
        assert kinds == [
            ("TableDefinition", 1, None), ("Update", 1, 1), ("Update", 1, 2),
            ("TableDefinition", 2, None), ("Update", 2, 1),
            ("TableDefinition", 1, None), ("Update", 1, 3),
        ]

    def test_acks_of_our_updates_are_recorded(self):
        session = established()
        table = session.define_table(b"a.aggr", 6, 33, 0x200, 1000, ())
        session.send_update(table, b"x", (1,), 1.0)
        events = session.receive_data(bytes.fromhex("0a84050100000001"), 1.2)
        assert events == [AckReceived(table.definition, 1)] and table.last_acked == 1

    def test_sending_before_established_is_a_local_error(self):
        session = accepting()
        with pytest.raises(LocalProtocolError):
            session.request_resync(0.0)

    def test_random_chunking_gives_the_same_events(self):
        units = read_trace(VECTORS_DIR / "haproxy-2.6-session-kinds.hex")
        stream = b"".join(u.data for u in units if u.direction == "<" and u.connection == 1)
        reference = flatten(accepting().receive_data(stream, 0.0))
        rng = random.Random(7)
        for _ in range(5):
            session = accepting()
            events, pos = [], 0
            while pos < len(stream):
                step = rng.randint(1, 40)
                events += session.receive_data(stream[pos : pos + step], 0.0)
                pos += step
            assert flatten(events) == reference


@settings(max_examples=300, deadline=None)
@given(state=st.sampled_from(State), cause=st.sampled_from(Input))
def test_every_state_input_pair_is_a_move_or_a_local_error_to_closed(state, cause):
    session = accepting()
    session.state = state
    if (state, cause) in _TRANSITIONS:
        session._process_input(cause)
        assert session.state is _TRANSITIONS[(state, cause)]
    else:
        with pytest.raises(LocalProtocolError):
            session._process_input(cause)
        assert session.state is State.CLOSED


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_after_hello_never_raise(data):
    session = established()
    events = session.receive_data(data, 1.0)
    assert all(not isinstance(e, Closed) or e.reason for e in events)
