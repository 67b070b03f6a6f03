"""Issue 14, never stall: teaches, clears, expiry and whole-table pushes in slices.

A real ``Server`` on a real ``Reactor`` and the real clock (the time budgets
are real time), with a table of 300,000 keys; peers are the other end of
socketpairs, driven by the test between loop turns (``Bed.run``): their
bytes are written and read there, never inside a turn. Each turn's CPU time
(``time.thread_time``: what a turn costs the loop, which other processes on
a loaded machine do not inflate) must stay under ``TURN_LIMIT``, and a probe
peer's updates must keep being acknowledged and pushed back within
``PROBE_LIMIT`` while the big operation runs. Waiting is polling with a
deadline, never a sleep.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable, Iterator

import pytest

from stktagg.clock import Clock, ManualClock
from stktagg.codec import decode_varint
from stktagg.config import parse
from stktagg.loop import Reactor
from stktagg.schema import KeyType
from stktagg.server import Server
from stktagg.slices import Slicer
from stktagg.status import ClearTable
from stktagg.transport import HIGH_WATER
from stktagg.wire import MessageEncoder, TableDefinition

pytestmark = pytest.mark.usefixtures("no_fd_leak")

KEYS = 300_000
#: CPU time of one loop turn at most (the budgets aim at a few tens of ms).
TURN_LIMIT = 0.100
#: A probe update's ack, and its aggregate pushed back, within this (wall time).
PROBE_LIMIT = 1.0
#: Generous real-time bound for each phase on a loaded two-core machine.
WAIT = 120.0
TEACHERS = ("T1", "T2", "T3", "T4")
CONFIG = "aggregations agg\n    peer AGGR 127.0.0.1:11100 local\n" + "".join(
    f"    peer {name} 127.0.0.{i + 2}:11001\n" for i, name in enumerate(("F", "G", "P", "N") + TEACHERS)
) + "    from .local to .aggr\n"
HEARTBEAT = b"\x00\x04"
RESYNC_REQUEST = b"\x00\x00"
RESYNC_FINISHED = 1
HTTP_REQ_CNT = 1 << 9


def definition(name: bytes, expire: int = 3_600_000) -> bytes:
    return MessageEncoder().encode(TableDefinition(1, name, KeyType.IP, 4, HTTP_REQ_CNT, expire, ()))


def key(i: int) -> bytes:
    return struct.pack("!I", 0x14000000 + i)  # 20.0.0.0/8


def updates(count: int, value: int) -> bytes:
    """Keys 0..count-1 set to ``value`` (< 240: one varint byte): one explicit id, then implied ones."""
    head = b"\x0a\x80\x09" + struct.pack("!I", 1) + key(0) + bytes((value,))
    return head + b"".join(b"\x0a\x81\x05" + key(i) + bytes((value,)) for i in range(1, count))


class Received:
    """What a peer was sent, walked frame by frame (independently of stktagg's decoder)."""

    def __init__(self) -> None:
        self.tables: dict[int, bytes] = {}
        self.current: bytes = b""
        self.values: dict[bytes, dict[bytes, int]] = {}  #: table -> key -> last http_req_cnt
        self.first_update: dict[bytes, int] = {}  #: table -> index of its first update
        self.last_update: dict[bytes, int] = {}  #: table -> index of its last update
        self.controls: list[tuple[int, int]] = []  #: (control type, message index)
        self.acks: list[int] = []
        self.messages = 0

    def walk(self, buf: bytearray, on_update: Callable[[bytes, bytes, int], None] | None = None) -> None:
        """Consume the whole frames at the start of ``buf``."""
        pos, end = 0, len(buf)
        while end - pos >= 2:
            cls, typ = buf[pos], buf[pos + 1]
            if typ < 0x80:
                if cls == 0:
                    self.controls.append((typ, self.messages))
                self.messages += 1
                pos += 2
                continue
            got = decode_varint(buf, pos + 2)
            if got is None or got[1] + got[0] > end:
                break
            length, start = got
            if typ == 0x82:
                table_id, at = decode_varint(buf, start)
                size, at = decode_varint(buf, at)
                self.current = self.tables[table_id] = bytes(buf[at:at + size])
            elif typ == 0x84:
                _, at = decode_varint(buf, start)
                self.acks.append(struct.unpack_from("!I", buf, at)[0])
            elif typ in (0x80, 0x81, 0x85, 0x86):
                at = start + (4 if typ in (0x80, 0x85) else 0) + (4 if typ in (0x85, 0x86) else 0)
                k = bytes(buf[at:at + 4])
                value = decode_varint(buf, at + 4)[0]
                self.values.setdefault(self.current, {})[k] = value
                self.first_update.setdefault(self.current, self.messages)
                self.last_update[self.current] = self.messages
                if on_update is not None:
                    on_update(self.current, k, value)
            self.messages += 1
            pos = start + length
        del buf[:pos]

    def finished_after_every_update_of(self, *tables: bytes) -> bool:
        """A ``00 01`` came after the last update of each of ``tables``."""
        finishes = [at for typ, at in self.controls if typ == RESYNC_FINISHED]
        return bool(finishes) and all(finishes[-1] > self.last_update.get(t, -1) for t in tables)


class Peer:
    """The far end of one peer connection: bytes out and in, heartbeats, nothing parsed live."""

    def __init__(self, bed: Bed, name: str) -> None:
        ours, self.sock = socket.socketpair()
        self.sock.setblocking(False)
        self.name = name
        self.out = bytearray(f"HAProxyS 2.1\nAGGR\n{name} 1 1\n".encode())
        self.data = bytearray()
        self.total = 0  #: bytes received
        self.reading = True  #: False: a peer that stops reading its socket
        self.status: bytes | None = None
        self.connected_at = time.monotonic()
        self.status_after: float | None = None
        self._beat = time.monotonic()
        bed.server.listeners.accept_peer(ours, ("127.0.0.1", 40000), bed.server.sections)

    def pump(self, now: float) -> None:
        if now - self._beat > 1.0 and self.status is not None:
            self._beat = now
            self.out += HEARTBEAT
        if self.out:
            try:
                del self.out[:self.sock.send(self.out)]
            except BlockingIOError:
                pass
        while self.reading:
            try:
                chunk = self.sock.recv(1 << 20)
            except BlockingIOError:
                break
            if not chunk:
                break
            self.data += chunk
            self.total += len(chunk)
        if self.status is None and b"\n" in self.data:
            line, _, rest = bytes(self.data).partition(b"\n")
            self.status, self.data = line, bytearray(rest)
            self.status_after = now - self.connected_at

    def received(self) -> Received:
        got = Received()
        got.walk(self.data)
        return got


class Probe(Peer):
    """A peer that updates its own key every 10 ms and times the ack and the aggregate pushed back."""

    def __init__(self, bed: Bed, name: str = "P") -> None:
        super().__init__(bed, name)
        self.out += definition(b"probe.local")
        self.got = Received()
        self.sent: dict[int, float] = {}  #: update id -> when sent
        self.pending: list[tuple[int, float]] = []  #: (value, when sent), oldest first
        self.ack_latency: list[float] = []
        self.push_latency: list[float] = []
        self._next = 0.0
        self._id = 0

    def pump(self, now: float) -> None:
        super().pump(now)
        if self.status is None:
            return
        self.got.walk(self.data, lambda table, k, value: self._pushed(table, value, now))
        for acked in self.got.acks:
            for i in [i for i in self.sent if i <= acked]:
                self.ack_latency.append(now - self.sent.pop(i))
        self.got.acks.clear()
        if now >= self._next:
            self._next = now + 0.01
            self._id += 1
            value = self._id % 200 + 1
            self.out += b"\x0a\x80\x09" + struct.pack("!I", self._id) + b"\x0a\xff\x00\x01" + bytes((value,))
            self.sent[self._id] = now
            self.pending.append((value, now))

    def _pushed(self, table: bytes, value: int, now: float) -> None:
        if table != b"probe.aggr":
            return
        for i in range(len(self.pending) - 1, -1, -1):
            if self.pending[i][0] == value:
                self.push_latency += [now - sent for _, sent in self.pending[:i + 1]]
                del self.pending[:i + 1]
                return

    def reset(self) -> None:
        """Time only what is sent from now on."""
        self.ack_latency, self.push_latency = [], []
        self.sent.clear()
        self.pending.clear()

    def assert_served(self, now: float) -> None:
        """Acks and pushes kept coming: none took over PROBE_LIMIT, none is overdue."""
        assert len(self.ack_latency) > 10 and len(self.push_latency) > 10
        assert max(self.ack_latency) < PROBE_LIMIT, f"an ack took {max(self.ack_latency):.3f} s"
        assert max(self.push_latency) < PROBE_LIMIT, f"a push took {max(self.push_latency):.3f} s"
        assert all(now - sent < PROBE_LIMIT for sent in self.sent.values())


class Bed:
    def __init__(self, workers: int) -> None:
        self.clock = Clock()
        self.reactor = Reactor(clock=self.clock.now)
        self.server = Server(parse(CONFIG), self.reactor, self.clock, workers=workers)
        self.server.start()
        self.peers: list[Peer] = []
        self.turns: list[float] = []  #: CPU seconds of each loop turn since the last reset

    def connect(self, name: str, probe: bool = False) -> Peer:
        peer = Probe(self, name) if probe else Peer(self, name)
        self.peers.append(peer)
        return peer

    def run(self, until: Callable[[], bool], timeout: float = WAIT) -> None:
        """Loop turns, and the peers' I/O between them, until ``until()``."""
        deadline = time.monotonic() + timeout
        while not until():
            assert time.monotonic() < deadline, "timed out"
            self.turn()

    def turn(self) -> None:
        """One loop turn (its CPU time recorded), then the peers' I/O."""
        started = time.thread_time()
        self.reactor.run_once(0.002)
        self.turns.append(time.thread_time() - started)
        now = time.monotonic()
        for peer in self.peers:
            peer.pump(now)

    def established(self, *names: str) -> Callable[[], bool]:
        return lambda: all(("agg", n) in self.server.registry.established for n in names)

    def link(self, name: str):
        return self.server.registry.established[("agg", name)]

    def drained(self, *names: str) -> Callable[[], bool]:
        """Nothing waits to be sent to ``names``, and every byte their sessions queued has arrived."""
        peers = {p.name: p for p in self.peers}

        def check() -> bool:
            for name in names:
                link = self.link(name)
                if link.teach is not None or link.backlog or peers[name].total < link.session.stats.bytes_out:
                    return False
            return True

        return check

    def fill(self, peer: Peer, table: bytes = b"big.local", value: int = 1) -> None:
        """``KEYS`` keys from ``peer``, through its session; waits until applied and pushed."""
        peer.out += definition(table) + updates(KEYS, value)
        self.run(lambda: self.table().changes >= KEYS if self.table() is not None else False)
        self.run(lambda: not self.server.workers.pending() and not any(s.dirty for s in self.table().stripes))

    def table(self):
        return self.server.sections[0].tables.get(b"big.aggr")

    def reset(self) -> None:
        self.turns = []
        for peer in self.peers:
            if isinstance(peer, Probe):
                peer.reset()

    def assert_responsive(self) -> None:
        assert self.turns and max(self.turns) < TURN_LIMIT, f"a loop turn took {max(self.turns) * 1000:.0f} ms of CPU"

    def close(self) -> None:
        self.server.stop()
        self.reactor.run_until(lambda: not self.server.registry.connections, timeout=10)
        self.reactor.run_once(0)
        for peer in self.peers:
            peer.sock.close()
        self.reactor.close()


@pytest.fixture
def bed(request) -> Iterator[Bed]:
    b = Bed(getattr(request, "param", 1))
    yield b
    b.close()


class CountingJob:
    """A slice job of ``total`` keys that records its steps."""

    def __init__(self, total: int, log: list) -> None:
        self.left, self.log, self.cancelled, self.waiting = total, log, False, False

    def ready(self) -> bool:
        return not self.waiting

    def step(self, now: float, keys: int) -> bool:
        self.log.append(self)
        self.left -= keys
        return self.left <= 0


def test_the_slicer_steps_every_ready_job_in_turn_within_its_bounds() -> None:
    clock = ManualClock()  # does not move within a turn: the key bound alone holds
    reactor = Reactor(clock=clock.now)
    try:
        slicer = Slicer(reactor, clock, turn_keys=1_000, step_keys=100)
        log: list = []
        a, b, c = CountingJob(450, log), CountingJob(10_000, log), CountingJob(10_000, log)
        for job in (a, b, c):
            slicer.add(job)
        c.waiting = True
        reactor.run_once(0)
        assert log == [a, b] * 5  # 1,000 keys: a and b in turn, c skipped while it waits
        log.clear()
        reactor.run_once(0)
        assert log[:3] == [b, b, b] and len(log) == 10 and len(slicer) == 2  # a finished (450 keys)
        b.cancelled = True
        c.waiting = False
        slicer.wake()
        log.clear()
        reactor.run_once(0)
        assert log == [c] * 10 and len(slicer) == 1  # b dropped
        c.waiting = True
        log.clear()
        reactor.run_once(0)
        reactor.run_once(0)
        assert log == []  # nothing ready: no turn is scheduled until wake()
        slicer.discard(c)
        assert len(slicer) == 0
    finally:
        reactor.close()


def test_a_teach_streams_every_key_then_finishes_while_another_peer_is_served(bed: Bed) -> None:
    f, probe = bed.connect("F"), bed.connect("P", probe=True)
    bed.run(bed.established("F", "P"))
    bed.fill(f)
    bed.run(bed.drained("F"))
    f.received()  # the pushes of its own fill
    bed.reset()
    f.out += RESYNC_REQUEST  # as a node restarted hard asks: everything, its own entries first
    bed.run(lambda: bed.link("F").teach is not None)
    bed.run(bed.drained("F"))
    probe.assert_served(time.monotonic())
    bed.assert_responsive()
    got = f.received()
    assert got.values[b"big.local"] == {key(i): 1 for i in range(KEYS)}  # F's own entries, under its name
    assert got.values[b"big.aggr"] == {key(i): 1 for i in range(KEYS)}
    assert got.last_update[b"big.local"] < got.first_update[b"big.aggr"]
    assert got.finished_after_every_update_of(b"big.local", b"big.aggr")


def test_four_teaches_at_once_all_complete_and_a_new_hello_is_answered_meanwhile(bed: Bed) -> None:
    f, probe = bed.connect("F"), bed.connect("P", probe=True)
    bed.run(bed.established("F", "P"))
    bed.fill(f, value=3)
    teachers = [bed.connect(name) for name in TEACHERS]
    bed.run(bed.established(*TEACHERS))
    bed.reset()
    for teacher in teachers:
        teacher.out += RESYNC_REQUEST
    bed.run(lambda: all(bed.link(t).teach is not None for t in TEACHERS))
    newcomer = bed.connect("N")
    bed.run(lambda: newcomer.status is not None)
    assert newcomer.status == b"200" and newcomer.status_after < 1.0, newcomer.status_after
    assert any(bed.link(t).teach is not None for t in TEACHERS)  # it came during the teaches
    bed.run(lambda: all(bed.link(t).teach is None for t in TEACHERS) and bed.drained(*TEACHERS)())
    probe.assert_served(time.monotonic())
    bed.assert_responsive()
    for teacher in teachers:
        got = teacher.received()
        assert got.values[b"big.aggr"] == {key(i): 3 for i in range(KEYS)}
        assert got.finished_after_every_update_of(b"big.aggr")


def test_clear_table_on_a_big_table_pushes_every_key_cleared_and_keeps_the_loop_responsive(bed: Bed) -> None:
    f, g, probe = bed.connect("F"), bed.connect("G"), bed.connect("P", probe=True)
    bed.run(bed.established("F", "G", "P"))
    bed.fill(f, value=2)
    bed.run(bed.drained("G"))
    g.received()  # what came before the clear
    bed.reset()
    answer: list[int] = []
    bed.reactor.call_soon(lambda: answer.append(bed.server.clear_table(ClearTable("agg", b"big.aggr"))))
    bed.run(lambda: bool(answer))
    assert answer == [KEYS] and len(bed.table()) == 0  # gone at once, counted exactly
    bed.run(lambda: len(bed.server.slices) == 0 and bed.drained("G")())
    probe.assert_served(time.monotonic())
    bed.assert_responsive()
    got = g.received()
    assert got.values[b"big.aggr"] == {key(i): 0 for i in range(KEYS)}  # every key, as zeros


def test_a_teach_waits_while_its_peer_does_not_read_and_ends_with_its_session(bed: Bed) -> None:
    slow = bed.connect("F")  # its own entries and the aggregates: more than the high-water mark
    bed.run(bed.established("F"))
    bed.fill(slow, value=4)
    bed.run(bed.drained("F"))
    slow.received()
    gone = bed.connect("T2")
    bed.run(bed.established("T2"))
    slow.reading = False
    slow.out += RESYNC_REQUEST
    bed.run(lambda: bed.link("F").transport.above_high_water())
    gone.out += RESYNC_REQUEST
    bed.run(lambda: bed.link("T2").teach is not None)
    bed.turn()
    gone.sock.close()  # T2 goes away in the middle of its teach: the teach is dropped
    bed.peers.remove(gone)
    bed.run(lambda: ("agg", "T2") not in bed.server.registry.established)
    assert len(bed.server.slices) == 1  # F's teach alone, waiting
    for _ in range(100):
        bed.turn()
    link = bed.link("F")
    assert link.teach is not None and not link.teach.done
    assert link.transport.buffered() < HIGH_WATER + 1_000_000  # it waits: what is queued stays bounded
    slow.reading = True
    bed.run(bed.drained("F"))
    got = slow.received()
    assert got.values[b"big.local"] == got.values[b"big.aggr"] == {key(i): 4 for i in range(KEYS)}
    assert got.finished_after_every_update_of(b"big.local", b"big.aggr")
    assert len(bed.server.slices) == 0


@pytest.mark.parametrize("bed", [0], indirect=True)  # -W 0: the expiry runs in the I/O thread
def test_a_whole_table_then_all_its_entries_expiring_at_once_are_pushed_in_slices(bed: Bed) -> None:
    g, probe = bed.connect("G"), bed.connect("P", probe=True)
    bed.run(bed.established("G", "P"))
    section = bed.server.sections[0]
    table_def = TableDefinition(1, b"big.local", KeyType.IP, 4, HTTP_REQ_CNT, 3_600_000, ())
    table = section.route(section.peer("F"), table_def).table
    section.route(section.peer("G"), table_def)
    bed.reset()
    for stripe, items in _by_stripe(table, lambda k: (k, (2,), None)).items():  # G's: an hour
        table.apply(stripe, section.peer_index["G"], table.fields, items, bed.clock.now_ms())
        bed.turn()  # the peers are served meanwhile
    now = bed.clock.now_ms()
    for stripe, items in _by_stripe(table, lambda k: (k, (1,), LIFE)).items():  # F's: all expire together
        table.apply(stripe, section.peer_index["F"], table.fields, items, now)
        bed.turn()
    bed.run(lambda: not any(s.dirty for s in table.stripes) and bed.drained("G")())  # every key was dirty
    bed.assert_responsive()
    assert g.received().values[b"big.aggr"] == {key(i): 3 for i in range(KEYS)}
    assert bed.clock.now_ms() < now + LIFE, "too slow to see the entries expire together"
    bed.run(lambda: bed.clock.now_ms() > now + LIFE - 1_000)
    bed.reset()
    bed.run(lambda: bed.clock.now_ms() > now + LIFE + 200)
    got, left = Received(), {key(i) for i in range(KEYS)}  # keys not yet pushed with G's part alone
    bed.run(lambda: got.walk(g.data, lambda table, k, value: value == 2 and left.discard(k)) or not left)
    probe.assert_served(time.monotonic())
    bed.assert_responsive()
    assert got.values[b"big.aggr"] == {key(i): 2 for i in range(KEYS)}  # F's part expired: every key pushed


#: The life of F's entries in test d: long enough for the fill and the first push on a slow machine.
LIFE = 12_000


def _by_stripe(table, item: Callable[[bytes], tuple]) -> dict[int, list]:
    parts: dict[int, list] = {}
    for i in range(KEYS):
        k = key(i)
        parts.setdefault(table.stripe_of(k), []).append(item(k))
    return parts
