"""Streamed ``show table`` (issue 14) through a real ``CliConnection`` on a reactor.

The server side is a ``StreamTransport`` over one end of a unix socketpair
running ``CliConnection``; the client end is a plain socket that the same
reactor reads (or does not read, for the slow client). The status source is
hand-made, as in ``test_cli_handlers``, over real ``AggTable``s; its clock is
a ``ManualClock``, so the streamed answers can be compared byte for byte with
the non-streamed rendering.

How "the loop stays responsive" is measured: a timer re-armed every
``TICK`` seconds records the thread's CPU time between two of its runs (the
work of the loop turns in between; immune to the machine's other load) and
the wall time, which is also printed.
"""

from __future__ import annotations

import json
import platform
import socket
import time
from collections.abc import Callable, Iterator

import pytest

from stktagg import cli
from stktagg.clock import ManualClock, table_ms
from stktagg.config import PeerRole
from stktagg.loop import Reactor
from stktagg.session import State
from stktagg.status import ClearTable, PeerStatus, SectionStatus, Status, TableStatus
from stktagg.table import AggTable, TableMode
from stktagg.transport import StreamTransport
from stktagg.wire import TableDefinition

pytestmark = pytest.mark.usefixtures("no_fd_leak")

MASK = (1 << 9) | (1 << 10)  # http_req_cnt, http_req_rate(10s)
#: type ip, expire 1 h (nothing expires while a test runs)
DEFINITION = TableDefinition(0, b"big.aggr", 4, 4, MASK, 3_600_000, ((10, 10_000),))
FILLED = 1000.0
NOW = FILLED + 2.5
BIG = 200_000
TICK = 0.005
#: The longest loop turn accepted (CPU time between two ticks).
MAX_TURN = 0.100 if platform.python_implementation() == "CPython" else 0.150
#: (PyPy: its major collection steps over a heap of 200,000 keys land inside turns; measured
#: 72 to 110 ms for the longest under a full unit run, the dump's own chunks being ~2 ms.)
TIMEOUT = 120.0


class CountingTable(AggTable):
    """An ``AggTable`` that counts the reads of a streamed dump (one per chunk)."""

    reads = 0

    def read_keys(self, stripe_index: int, keys: list[bytes], now: int) -> list:
        self.reads += 1
        return super().read_keys(stripe_index, keys, now)


def fill(keys: int, peers: int, base: int = 0x0A000000, at: float = FILLED) -> CountingTable:
    """A table of ``keys`` IPv4 keys from ``base``, each with an entry of every peer, written at ``at``."""
    table = CountingTable(DEFINITION, TableMode.AGGREGATE)
    by_stripe: dict[int, list[bytes]] = {}
    for i in range(keys):
        key = (base + i).to_bytes(4, "big")
        by_stripe.setdefault(table.stripe_of(key), []).append(key)
    for peer in range(peers):
        for stripe, ks in by_stripe.items():
            items = [(k, ((i + peer) % 97, (0, 1 + peer, 0)), None) for i, k in enumerate(ks)]
            table.apply(stripe, peer, table.fields, items, table_ms(at))
    return table


class Source:
    """A ``status.StatusSource`` over one section holding ``table``, at a manual clock."""

    def __init__(self, table: AggTable, peers: int, clock: ManualClock | None = None,
                 started: tuple[float, float] = (0.0, 0.0)) -> None:
        self.table = table
        self.clock = clock if clock is not None else ManualClock(NOW)
        self.started = started  #: the process's start: clock and wall time
        self.peers = tuple(PeerStatus(f"P{i}", i, PeerRole.DOWN, "127.0.0.1:1", State.ESTABLISHED)
                           for i in range(peers))

    def status(self) -> Status:
        t = self.table
        tables = (TableStatus(b"big.aggr", TableMode.AGGREGATE, b"big.local", 3_600_000, len(t), t.changes, t.dropped,
                              t),)
        return Status((SectionStatus("agg", self.peers, tables),), 1, *self.started, 0, 0)

    def clear_table(self, command: ClearTable) -> int:
        return len(self.table.clear(command.key))


class Bed:
    """A reactor, and CLI connections to ``source`` over socketpairs."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.reactor = Reactor()
        self.clients: list[Client] = []
        self.ticks: list[tuple[float, float]] = []  #: (CPU, wall) time since the previous tick
        self._last: tuple[float, float] | None = None
        self._timer = None

    def connect(self, read: bool = True) -> Client:
        server_end, client_end = socket.socketpair()
        protocol = cli.CliConnection(self.source)
        transport = StreamTransport(self.reactor, server_end, protocol)
        client = Client(self.reactor, client_end, protocol, transport, read)
        self.clients.append(client)
        return client

    def start_ticking(self) -> None:
        self._last = (time.thread_time(), time.monotonic())
        self._timer = self.reactor.call_later(TICK, self._tick)

    def _tick(self) -> None:
        now = (time.thread_time(), time.monotonic())
        assert self._last is not None
        self.ticks.append((now[0] - self._last[0], now[1] - self._last[1]))
        self._last = now
        self._timer = self.reactor.call_later(TICK, self._tick)

    def run_until(self, predicate: Callable[[], object], timeout: float = TIMEOUT) -> bool:
        return self.reactor.run_until(lambda: bool(predicate()), timeout)

    def longest_turn(self) -> float:
        return max(cpu for cpu, _ in self.ticks)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for client in self.clients:
            client.close()
        for _ in range(5):
            self.reactor.run_once(0)
        self.reactor.close()


class Client:
    """The client end of a CLI connection: collects what arrives (when reading)."""

    def __init__(self, reactor: Reactor, sock: socket.socket, protocol: cli.CliConnection,
                 transport: StreamTransport, read: bool) -> None:
        self.reactor = reactor
        self.sock = sock
        self.protocol = protocol
        self.transport = transport
        self.data = bytearray()
        self.eof = False
        self.most_queued = 0  #: the most bytes the server had queued for us when we read
        sock.setblocking(False)
        if read:
            self.start_reading()

    def start_reading(self) -> None:
        self.reactor.add_reader(self.sock, self._on_readable)

    def _on_readable(self) -> None:
        self.most_queued = max(self.most_queued, self.transport.buffered())
        try:
            chunk = self.sock.recv(256 * 1024)
        except BlockingIOError:
            return
        if chunk:
            self.data += chunk
        else:
            self.eof = True
            self.reactor.remove_reader(self.sock)

    def send(self, text: str, shut: bool = False) -> None:
        self.sock.sendall(text.encode())
        if shut:
            self.sock.shutdown(socket.SHUT_WR)

    @property
    def text(self) -> str:
        return self.data.decode()

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            self.reactor.remove_reader(self.sock)
            self.sock.close()
        self.transport.abort()


@pytest.fixture
def bed_of() -> Iterator[Callable[[Source], Bed]]:
    beds: list[Bed] = []

    def make(source: Source) -> Bed:
        beds.append(Bed(source))
        return beds[-1]

    yield make
    for bed in beds:
        bed.close()


@pytest.fixture(scope="module")
def big_table() -> CountingTable:
    return fill(BIG, 1)


def reference(source: Source, args: str) -> str:
    """The non-streamed rendering of ``show table agg big.aggr <args>`` (rows all at once)."""
    status = source.status()
    section, table = status.sections[0], status.sections[0].tables[0]
    words = args.split()
    json_out = words[-1:] == ["json"]
    key, filters = cli._table_options(table, words[:-1] if json_out else words)
    rows = cli.table_rows(section, table, table_ms(NOW), key, filters)
    if json_out:
        return json.dumps([cli._public(row) for row in rows], separators=(",", ":")) + "\n"
    return cli.render_table(rows)


class TestSameOutput:
    """A streamed answer is the non-streamed one, byte for byte, in every mode."""

    @pytest.mark.parametrize("args", ["", "json", "key 10.0.0.7", "key 10.0.0.7 json", "key 10.9.9.9 json",
                                      "data.http_req_cnt gt 90", "data.http_req_cnt gt 90 json",
                                      "data.http_req_cnt gt 1000 json",
                                      "data.http_req_rate ge 2 data.http_req_cnt lt 5"])
    def test_one_shot_answer_equals_the_rendering(self, bed_of: Callable[[Source], Bed], args: str) -> None:
        source = Source(fill(3000, 3), 3)  # ~12,000 lines: dozens of chunks
        bed = bed_of(source)
        client = bed.connect()
        client.send(f"show table agg big.aggr {args}\n")
        assert bed.run_until(lambda: client.eof)
        expected = reference(source, args)
        assert client.text == expected + "\n"
        if args.endswith("json"):
            json.loads(client.text)  # one valid array
        assert source.table.reads > 1 or "key" in args

    def test_half_closed_client_gets_the_whole_answer(self, bed_of: Callable[[Source], Bed]) -> None:
        source = Source(fill(3000, 3), 3)
        bed = bed_of(source)
        client = bed.connect()
        client.send("show table agg big.aggr json\n", shut=True)  # as socat and nc do
        assert bed.run_until(lambda: client.eof)
        assert client.text == reference(source, "json") + "\n"

    def test_prompt_mode_answers_in_order_after_each_dump(self, bed_of: Callable[[Source], Bed]) -> None:
        source = Source(fill(2000, 2), 2)
        bed = bed_of(source)
        client = bed.connect()
        # All lines at once: the second dump and "show info" wait for the first dump.
        client.send("prompt\nshow table agg big.aggr\nshow table agg big.aggr json; help\nquit\n")
        assert bed.run_until(lambda: client.eof)
        help_text = cli.HELP
        assert client.text == ("> " + reference(source, "") + "\n> " + reference(source, "json") + help_text
                               + "\n> " + "\n")

    def test_prompt_mode_line_by_line(self, bed_of: Callable[[Source], Bed]) -> None:
        source = Source(fill(2000, 2), 2)
        bed = bed_of(source)
        client = bed.connect()
        client.send("prompt\n")
        assert bed.run_until(lambda: client.data == b"> ")
        for line, expected in (("show table agg big.aggr key 10.0.0.1", reference(source, "key 10.0.0.1")),
                               ("show table agg big.aggr json", reference(source, "json")), ("help", cli.HELP)):
            client.data.clear()
            client.send(line + "\n")
            assert bed.run_until(lambda: client.data.endswith(b"\n> "))
            bed.run_until(lambda: False, timeout=0.05)  # nothing more comes
            assert client.text == expected + "\n> "
        client.send("quit\n")
        assert bed.run_until(lambda: client.eof)

    def test_many_lines_sent_during_a_dump_wait_for_it(self, bed_of: Callable[[Source], Bed]) -> None:
        source = Source(fill(2000, 2), 2)
        bed = bed_of(source)
        client = bed.connect()
        # More than MAX_COMMAND_LINE of pipelined lines: reading pauses until the dump is written.
        client.send("prompt\nshow table agg big.aggr\n" + "help\n" * 2000 + "quit\n")
        assert bed.run_until(lambda: client.eof)
        assert client.text == "> " + reference(source, "") + "\n> " + (cli.HELP + "\n> ") * 2000 + "\n"

    def test_semicolons_and_errors_between_dumps(self, bed_of: Callable[[Source], Bed]) -> None:
        source = Source(fill(500, 1), 1)
        bed = bed_of(source)
        client = bed.connect()
        client.send("show table agg big.aggr data.nope gt 1; show table agg big.aggr key 10.0.0.1; show table x y\n")
        assert bed.run_until(lambda: client.eof)
        assert client.text.startswith("Unknown data type 'nope'")
        assert reference(source, "key 10.0.0.1") in client.text
        assert client.text.endswith("No such aggregations section: x\n\n")


class TestBigDump:
    def test_the_loop_keeps_turning_during_a_big_dump(self, bed_of: Callable[[Source], Bed],
                                                      big_table: CountingTable) -> None:
        bed = bed_of(Source(big_table, 1))
        bed.start_ticking()
        client = bed.connect()
        started = time.monotonic()
        client.send("show table agg big.aggr\n")
        # Meanwhile another client is answered at once.
        assert bed.run_until(lambda: len(client.data) > 1_000_000)
        other = bed.connect()
        asked = time.monotonic()
        other.send("help\n")
        assert bed.run_until(lambda: other.eof)
        answered = time.monotonic() - asked
        assert other.text == cli.HELP + "\n"
        assert bed.run_until(lambda: client.eof)
        took = time.monotonic() - started
        assert client.text.count("\nkey=") + client.text.startswith("key=") == BIG
        ticks = len(bed.ticks)
        print(f"\n{BIG} keys in {took:.2f} s, {big_table.reads} chunks, {ticks} ticks, longest turn (CPU)"
              f" {bed.longest_turn() * 1e3:.1f} ms, longest wall gap {max(w for _, w in bed.ticks) * 1e3:.1f} ms,"
              f" help answered in {answered * 1e3:.1f} ms")
        assert bed.longest_turn() < MAX_TURN
        assert ticks > took / (TICK + MAX_TURN) / 2  # the timer really ran throughout
        assert answered < 1.0

    def test_a_client_that_does_not_read_holds_a_bounded_buffer(self, bed_of: Callable[[Source], Bed],
                                                               big_table: CountingTable) -> None:
        bed = bed_of(Source(big_table, 1))
        client = bed.connect(read=False)
        reads = big_table.reads
        client.send("show table agg big.aggr\n")
        bed.start_ticking()
        # The dump goes on until the socket buffers are full, then waits.
        bed.run_until(lambda: False, timeout=1.0)
        stalled_at = big_table.reads
        cpu = time.thread_time()
        bed.run_until(lambda: False, timeout=1.0)
        idle_cpu = time.thread_time() - cpu
        queued = client.transport.buffered()
        print(f"\nnot reading: {stalled_at - reads} chunks made, {queued} bytes queued, "
              f"{idle_cpu * 1e3:.0f} ms CPU in the next second, longest turn {bed.longest_turn() * 1e3:.1f} ms")
        assert big_table.reads == stalled_at  # waiting, not spinning
        assert stalled_at - reads < 200
        assert queued < 2 * cli.STREAM_LOW_WATER
        assert idle_cpu < 0.3
        assert bed.longest_turn() < MAX_TURN
        # Once the client reads, the dump goes on.
        client.start_reading()
        assert bed.run_until(lambda: len(client.data) > 2_000_000)
        assert big_table.reads > stalled_at

    def test_a_client_that_goes_away_ends_the_dump(self, bed_of: Callable[[Source], Bed],
                                                   big_table: CountingTable) -> None:
        bed = bed_of(Source(big_table, 1))
        client = bed.connect()
        reads = big_table.reads
        client.send("show table agg big.aggr json\n")
        assert bed.run_until(lambda: len(client.data) > 200_000)
        bed.reactor.remove_reader(client.sock)
        client.sock.close()
        lost = bed.run_until(lambda: client.protocol.transport is None and client.transport.closed, timeout=10.0)
        made = big_table.reads - reads
        bed.run_until(lambda: False, timeout=0.5)
        print(f"\nclosed mid-dump after {made} chunks")
        assert lost
        assert big_table.reads - reads == made  # nothing more is read
        assert made < BIG // 100  # far from the end
