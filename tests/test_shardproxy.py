"""The main process of a sharded daemon: the stats socket and the metrics, answered by the shards.

Everything runs on one ``Reactor`` over a ``ManualClock`` (the per-shard deadline is driven
by moving the clock): the shards are real ``cli.CliConnection``s behind unix listeners, over
hand-made status sources holding real ``AggTable``s (as in ``test_cli_stream``), or two real
``Server``s, or small fake shards answering canned bytes (stalls, cuts, errors). The
operator's client is the other end of a socketpair whose end is a ``StreamTransport`` running
``ShardedCliConnection`` or ``ShardedMetricsConnection``. Synchronisation is
``run_until(predicate, timeout)``, never a sleep.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator

import pytest

from stktagg import cli, metrics, web
from stktagg.dashboard import Dashboard
from stktagg.slices import Slicer
from stktagg.clock import ManualClock
from stktagg.config import parse
from stktagg.loop import Reactor
from stktagg.server import Server
from stktagg.shardproxy import (
    CONNECT_RETRY,
    MAX_SHARD_ANSWER,
    SHARD_TIMEOUT,
    SHARD_UP,
    Shard,
    ShardAnswer,
    ShardedCliConnection,
    ShardedMetricsConnection,
    merge_clear,
    merge_json,
    merge_metrics,
    merge_text,
)
from stktagg.transport import READ_SIZE, Listener, StreamTransport
from test_cli_stream import Client, Source, fill

pytestmark = pytest.mark.usefixtures("no_fd_leak")

START = 1000.0
WAIT = 60.0  # generous real-time bound for a loaded machine
SHOW = "show table agg big.aggr"


class FakeShard:
    """A shard's stats socket answering ``answer(command)``: bytes (then close), or None (silence).

    ``trickle``: the bytes go one per loop turn, so they arrive split anywhere.
    """

    def __init__(self, reactor: Reactor, answer: Callable[[str], bytes | None], trickle: bool = False) -> None:
        self.reactor = reactor
        self.answer = answer
        self.trickle = trickle
        self.commands: list[str] = []
        self.transport: StreamTransport | None = None
        self._buffer = bytearray()

    def connection_made(self, transport: StreamTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if b"\n" in self._buffer and self.transport is not None:
            self.commands.append(self._buffer.split(b"\n", 1)[0].decode())
            reply = self.answer(self.commands[-1])
            if reply is not None:
                if self.trickle:  # not a conditional expression statement: PyPy 7.3.19 ran both (test_style)
                    self._drip(reply)
                else:
                    self._send(reply)

    def _send(self, reply: bytes) -> None:
        if self.transport is not None:
            self.transport.write(reply)
            self.transport.close()

    def _drip(self, rest: bytes) -> None:
        if self.transport is not None and len(rest) > 1:
            self.transport.write(rest[:1])
            self.reactor.call_soon(self._drip, rest[1:])
        else:
            self._send(rest)

    def eof_received(self) -> None:
        pass  # the main process went away: close

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


class Bed:
    """One reactor: shard stats sockets in a temporary directory, and clients of the main process."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="stktagg-shards-")  # short: unix socket paths are limited
        self.clock = ManualClock(START)
        self.reactor = Reactor(clock=self.clock.now)
        self.shards: list[Shard] = []
        self.listeners: list[Listener] = []
        self.served: list[StreamTransport] = []  #: the shards' ends of their connections
        self.clients: list[Client] = []
        self.servers: list[Server] = []

    def _listen(self, label: str, protocol: Callable[[], object]) -> Shard:
        shard = Shard(label, f"{self.dir}/{len(self.shards)}.sock")

        def accept(sock: socket.socket, address: object) -> None:
            self.served.append(StreamTransport(self.reactor, sock, protocol()))

        self.listeners.append(Listener(self.reactor, shard.cli_path, accept))
        self.shards.append(shard)
        return shard

    def real(self, label: str, source: Source) -> Shard:
        """A shard answering as a daemon does (``cli.CliConnection``) from ``source``."""
        return self._listen(label, lambda: cli.CliConnection(source))

    def fake(self, label: str, answer: Callable[[str], bytes | None], trickle: bool = False) -> list[FakeShard]:
        """A shard answering canned bytes; returns the list of its connections' protocols."""
        made: list[FakeShard] = []

        def protocol() -> FakeShard:
            made.append(FakeShard(self.reactor, answer, trickle))
            return made[-1]

        self._listen(label, protocol)
        return made

    def missing(self, label: str) -> Shard:
        """A shard whose socket is not there (its process is restarting)."""
        self.shards.append(Shard(label, f"{self.dir}/missing-{len(self.shards)}.sock"))
        return self.shards[-1]

    def source(self, keys: int, peers: int = 2, base: int = 0x0A000000) -> Source:
        return Source(fill(keys, peers, base, START), peers, self.clock, (START, 1_000_000_000.0))

    def connect(self, read: bool = True) -> Client:
        ours, theirs = socket.socketpair()
        protocol = ShardedCliConnection(self.reactor, lambda: self.shards)
        client = Client(self.reactor, theirs, protocol, StreamTransport(self.reactor, ours, protocol), read)
        self.clients.append(client)
        return client

    def connect_metrics(self) -> Client:
        ours, theirs = socket.socketpair()
        protocol = ShardedMetricsConnection(self.reactor, lambda: self.shards, clock=self.clock)
        client = Client(self.reactor, theirs, protocol, StreamTransport(self.reactor, ours, protocol), True)
        self.clients.append(client)
        return client

    def ask(self, text: str, shut: bool = False) -> str:
        """A one-shot command's whole answer."""
        client = self.connect()
        client.send(text, shut)
        assert self.until(lambda: client.eof)
        return client.text

    def until(self, predicate: Callable[[], object], timeout: float = WAIT) -> bool:
        return self.reactor.run_until(lambda: bool(predicate()), timeout)

    def close(self) -> None:
        for client in self.clients:
            client.close()
        for transport in self.served:
            transport.abort()
        for server in self.servers:
            server.stop()
        for listener in self.listeners:
            listener.close()
        for _ in range(5):
            self.reactor.run_once(0)
        self.reactor.close()
        shutil.rmtree(self.dir)


@pytest.fixture
def bed() -> Iterator[Bed]:
    b = Bed()
    yield b
    b.close()


def answer_of(source: Source, command: str) -> str:
    """What one daemon answers to ``command`` (without one-shot mode's closing empty line)."""
    return cli.execute(source, command)


def canned(text: str) -> Callable[[str], bytes]:
    """A fake shard's answer to any command: ``text`` and the closing empty line."""
    return lambda command: (text + "\n").encode()


def same_rows(got: str, expected: str) -> bool:
    """Whether two dumps are the same but for expiries and rates, which move with the clock (a bool:
    no huge diff on failure)."""
    return re.sub(r"(exp=|\)=)\d+", r"\1", got) == re.sub(r"(exp=|\)=)\d+", r"\1", expected)


def rows_in(text: str) -> int:
    return text.count("\nkey=") + text.startswith("key=")


class TestShowTable:
    def test_text_is_every_shards_rows_in_shard_order(self, bed: Bed) -> None:
        one, two = bed.source(3000), bed.source(2000, base=0x0B000000)
        bed.real("agg/AGGR.1", one)
        bed.real("agg/AGGR.2", two)
        answer = bed.ask(SHOW + "\n")
        assert answer == answer_of(one, SHOW) + answer_of(two, SHOW) + "\n"
        assert rows_in(answer) == 5000
        assert one.table.reads > 1 and two.table.reads > 1  # both shards streamed in chunks

    def test_json_is_one_array_of_every_shards_rows(self, bed: Bed) -> None:
        one, two = bed.source(3000), bed.source(2000, base=0x0B000000)
        bed.real("agg/AGGR.1", one)
        bed.fake("agg/AGGR.9", canned("[]\n"))  # a shard without rows in the middle
        bed.real("agg/AGGR.2", two)
        answer = bed.ask(SHOW + " json\n")
        assert answer.endswith("]\n\n")
        rows = json.loads(answer)
        assert rows == json.loads(answer_of(one, SHOW + " json")) + json.loads(answer_of(two, SHOW + " json"))
        assert len(rows) == 5000

    @pytest.mark.parametrize("args", ["", " json", " key 10.0.0.7", " key 10.9.9.9 json", " data.http_req_cnt gt 90"])
    def test_one_shard_answers_byte_for_byte_as_the_daemon(self, bed: Bed, args: str) -> None:
        source = bed.source(2000)
        bed.real("agg/AGGR.1", source)
        assert bed.ask(SHOW + args + "\n") == answer_of(source, SHOW + args) + "\n"

    def test_empty_answers_merge_to_empty_answers(self, bed: Bed) -> None:
        for label in ("a", "b"):
            bed.real(label, bed.source(0))
        assert bed.ask(SHOW + "\n") == "\n"
        assert bed.ask(SHOW + " json\n") == "[]\n\n"

    def test_only_the_first_shards_header_lines_are_kept(self, bed: Bed) -> None:
        bed.fake("a", canned("# table: big.aggr, used:2\nkey=1 x=1 exp=5\n    P0: x=1 exp=5\nkey=2 x=2 exp=5\n"))
        bed.fake("b", canned("# table: big.aggr, used:1\n# another comment\nkey=3 x=3 exp=5\n"))
        assert bed.ask(SHOW + "\n") == ("# table: big.aggr, used:2\nkey=1 x=1 exp=5\n    P0: x=1 exp=5\n"
                                        "key=2 x=2 exp=5\nkey=3 x=3 exp=5\n\n")

    def test_bytes_split_anywhere_merge_the_same(self, bed: Bed) -> None:
        """Shards whose answers come a byte or two at a time: headers, brackets and commas hold."""
        answers = {"a": ("# h\nkey=1 a\n    P0: b\n", '[{"key":"1","v":{"a":"},{\\"key\\":"}},{"key":"2"}]\n'),
                   "b": ("# h\n# i\nkey=2 c\n", '[{"key":"3"}]\n'), "c": ("", "[]\n"), "d": ("key=4 d\n", '[{"key":"4"}]\n')}
        for label, (text, rows) in answers.items():
            bed.fake(label, lambda command, text=text, rows=rows: ((rows if command.endswith("json") else text)
                                                                   + "\n").encode(), trickle=True)
        assert bed.ask(SHOW + "\n") == "# h\nkey=1 a\n    P0: b\nkey=2 c\nkey=4 d\n\n"
        assert json.loads(bed.ask(SHOW + " json\n")) == [{"key": "1", "v": {"a": '},{"key":'}}, {"key": "2"},
                                                          {"key": "3"}, {"key": "4"}]

    def test_an_error_of_every_shard_is_shown_per_shard_or_once_in_json(self, bed: Bed) -> None:
        for label in ("a", "b"):
            bed.real(label, bed.source(10))
        assert bed.ask("show table agg nope\n") == "# shard a\nNo such table: nope\n# shard b\nNo such table: nope\n\n"
        assert bed.ask("show table agg nope json\n") == "No such table: nope\n\n"

    def test_a_shard_without_the_section_is_shown_as_such(self, bed: Bed) -> None:
        source = bed.source(10)
        bed.real("agg/AGGR.1", source)
        bed.fake("other/OTHER.1", canned("No such aggregations section: agg\n"))
        assert bed.ask(SHOW + "\n") == (answer_of(source, SHOW) + "# shard other/OTHER.1\n"
                                        "No such aggregations section: agg\n\n")
        assert json.loads(bed.ask(SHOW + " json\n")) == json.loads(answer_of(source, SHOW + " json"))


class TestBigDump:
    KEYS = 50_000

    def test_a_slow_client_holds_a_bounded_buffer_and_the_shards_wait(self, bed: Bed) -> None:
        one, two = bed.source(self.KEYS, peers=1), bed.source(self.KEYS, peers=1, base=0x0B000000)
        bed.real("agg/AGGR.1", one)
        bed.real("agg/AGGR.2", two)
        client = bed.connect(read=False)
        client.send(SHOW + "\n")
        stream = client.protocol
        assert bed.until(lambda: stream._part is not None and stream._part._query is not None
                         and stream._part._query._paused)
        bed.until(lambda: False, timeout=0.5)  # it stays stalled
        reads, queued = one.table.reads, client.transport.buffered()
        bed.until(lambda: False, timeout=0.5)
        assert one.table.reads == reads and two.table.reads == 0  # the shard waits, the next is not asked
        assert reads < self.KEYS // 100  # far from its end
        assert client.transport.buffered() == queued <= cli.STREAM_LOW_WATER + READ_SIZE + 4096
        assert len(stream._part._pending) < 4096  # at most a line held back
        # Paused time is not the shard's: it is not given up while the client does not read.
        bed.clock.advance(3 * SHARD_TIMEOUT)
        bed.until(lambda: False, timeout=0.2)
        client.start_reading()
        assert bed.until(lambda: client.eof)
        # (the first chunks are older than the clock now: only their expiries and rates differ)
        assert same_rows(client.text, answer_of(one, SHOW) + answer_of(two, SHOW) + "\n")
        assert "unavailable" not in client.text and rows_in(client.text) == 2 * self.KEYS
        assert client.most_queued <= cli.STREAM_LOW_WATER + READ_SIZE + 4096
        print(f"\n{2 * self.KEYS} rows, {len(client.data)} bytes; at most {client.most_queued} queued for the client")

    def test_a_client_that_goes_away_ends_the_shards_dump(self, bed: Bed) -> None:
        source = bed.source(self.KEYS, peers=1)
        bed.real("agg/AGGR.1", source)
        client = bed.connect()
        client.send(SHOW + " json\n")
        assert bed.until(lambda: len(client.data) > 200_000)
        bed.reactor.remove_reader(client.sock)
        client.sock.close()
        assert bed.until(lambda: client.protocol.transport is None and all(t.closed for t in bed.served))
        reads = source.table.reads
        bed.until(lambda: False, timeout=0.3)
        assert source.table.reads == reads < self.KEYS // 50


class TestUnavailable:
    def test_a_missing_shard_is_marked_at_its_place_and_skipped_in_json(self, bed: Bed) -> None:
        one, two = bed.source(100), bed.source(50, base=0x0B000000)
        bed.real("a", one)
        bed.missing("b")
        bed.real("c", two)
        assert bed.ask(SHOW + "\n") == answer_of(one, SHOW) + "# shard b: unavailable\n" + answer_of(two, SHOW) + "\n"
        assert len(json.loads(bed.ask(SHOW + " json\n"))) == 150
        assert bed.ask("show aggrs\n") == ("# shard a\n" + answer_of(one, "show aggrs") + "# shard b: unavailable\n"
                                           "# shard c\n" + answer_of(two, "show aggrs") + "\n")

    def test_a_shard_that_closes_without_answering_is_unavailable(self, bed: Bed) -> None:
        bed.fake("a", lambda command: b"")
        source = bed.source(5)
        bed.real("b", source)
        assert bed.ask(SHOW + "\n") == "# shard a: unavailable\n" + answer_of(source, SHOW) + "\n"
        assert bed.ask("show info json\n") == json.dumps(
            {"a": None, "b": json.loads(answer_of(source, "show info json"))}, separators=(",", ":")) + "\n\n"

    @pytest.mark.parametrize("command", [SHOW, SHOW + " json", "show aggrs", "show info json", "show metrics"])
    def test_a_silent_shard_is_given_up_after_its_deadline(self, bed: Bed, command: str) -> None:
        silent = bed.fake("a", lambda command: None)
        source = bed.source(5)
        bed.real("b", source)
        client = bed.connect()
        client.send(command + "\n")
        assert bed.until(lambda: silent and silent[0].commands)
        bed.until(lambda: False, timeout=0.2)
        assert not client.eof  # waiting for the shard...
        bed.clock.advance(SHARD_TIMEOUT - 1)
        bed.until(lambda: False, timeout=0.1)
        assert not client.eof  # ...until its deadline
        bed.clock.advance(1.5)
        assert bed.until(lambda: client.eof)
        if command == SHOW:
            assert client.text == "# shard a: unavailable\n" + answer_of(source, SHOW) + "\n"
        elif command == SHOW + " json":
            assert json.loads(client.text) == json.loads(answer_of(source, command))
        elif command == "show info json":  # (b answered when asked: its uptime was 10.5 s shorter)
            expected = json.loads(answer_of(source, command))
            assert json.loads(client.text) == {"a": None, "b": {**expected, "uptime_s": expected["uptime_s"] - 10}}
        elif command == "show metrics":
            assert f'{SHARD_UP}{{shard="a"}} 0\n{SHARD_UP}{{shard="b"}} 1\n' in client.text
        else:
            assert client.text == "# shard a: unavailable\n# shard b\n" + answer_of(source, command) + "\n"

    def test_an_answer_cut_short_keeps_its_whole_lines_and_rows(self, bed: Bed) -> None:
        bed.fake("a", lambda command: b'[{"key":"1","v":[1,2]},{"key":"2","v":[3' if command.endswith("json")
                 else b"key=1 a\n    P0: b\nkey=2 c\n    P0")
        bed.fake("b", lambda command: b'[{"key":"3"}]\n\n' if command.endswith("json") else b"key=3 d\n\n")
        assert bed.ask(SHOW + "\n") == "key=1 a\n    P0: b\nkey=2 c\n# shard a: unavailable (answer cut short)\nkey=3 d\n\n"
        assert json.loads(bed.ask(SHOW + " json\n")) == [{"key": "1", "v": [1, 2]}, {"key": "3"}]
        assert bed.ask("show aggrs\n").startswith("# shard a: unavailable (answer cut short)\n# shard b\n")

    def test_an_answer_too_large_to_merge_is_an_error_for_that_shard(self, bed: Bed) -> None:
        big = bed.fake("a", canned("x" * (MAX_SHARD_ANSWER + 10)))
        source = bed.source(5)
        bed.real("b", source)
        answer = bed.ask("show aggrs\n")
        assert answer == (f"# shard a: answer over {MAX_SHARD_ANSWER} bytes, not shown\n# shard b\n"
                          + answer_of(source, "show aggrs") + "\n")
        assert big[0].commands == ["show aggrs"]

    def test_a_busy_shard_is_connected_once_its_accept_queue_has_room(self, bed: Bed) -> None:
        """A full accept queue (EAGAIN) is tried again (CONNECT_RETRY) until the deadline; nothing blocks."""
        path = f"{bed.dir}/busy.sock"
        listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listening.setblocking(False)
        listening.bind(path)
        listening.listen(0)
        queued: list[socket.socket] = []
        try:
            while True:  # fill its accept queue
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.setblocking(False)
                queued.append(sock)
                sock.connect(path)
        except BlockingIOError:
            pass
        source = bed.source(3)
        bed.shards.append(Shard("busy", path))
        client = bed.connect()
        client.send("show aggrs\n")
        bed.until(lambda: False, timeout=0.2)
        bed.clock.advance(CONNECT_RETRY)  # tried again: still full
        bed.until(lambda: False, timeout=0.1)
        assert not client.eof
        try:  # the shard catches up: its queue empties, and it serves from now on
            while True:
                listening.accept()[0].close()
        except BlockingIOError:
            pass
        for sock in queued:
            sock.close()

        def accept() -> None:
            conn, _ = listening.accept()
            bed.served.append(StreamTransport(bed.reactor, conn, cli.CliConnection(source)))

        bed.reactor.add_reader(listening, accept)
        try:
            bed.clock.advance(CONNECT_RETRY)
            assert bed.until(lambda: client.eof)
            assert client.text == "# shard busy\n" + answer_of(source, "show aggrs") + "\n"
        finally:
            bed.reactor.remove_reader(listening)
            listening.close()

    def test_a_client_that_resets_ends_the_shard_queries_at_once(self, bed: Bed) -> None:
        silent = bed.fake("a", lambda command: None)
        client = bed.connect(read=False)
        client.send("prompt\nshow info\n")
        assert bed.until(lambda: silent and silent[0].commands)
        client.sock.close()  # with "> " unread: the main process's end gets ECONNRESET
        assert bed.until(lambda: silent[0].transport is None and client.protocol.transport is None)
        assert client.protocol._part is None

    def test_a_client_that_closes_is_let_go_at_the_shards_deadline_at_the_latest(self, bed: Bed) -> None:
        """A close reads as a half-close (answered) until a write fails, as with ``CliConnection``."""
        silent = bed.fake("a", lambda command: None)
        client = bed.connect()
        client.send("show info\n")
        assert bed.until(lambda: silent and silent[0].commands)
        bed.reactor.remove_reader(client.sock)
        client.sock.close()
        bed.until(lambda: False, timeout=0.2)
        assert silent[0].transport is not None
        bed.clock.advance(SHARD_TIMEOUT)
        assert bed.until(lambda: silent[0].transport is None and client.transport.closed)

    def test_no_shard_at_all(self, bed: Bed) -> None:
        assert bed.ask(SHOW + "\n") == "\n"
        assert bed.ask(SHOW + " json\n") == "[]\n\n"
        assert bed.ask("show peers json\n") == "[]\n\n"
        assert bed.ask("show info json\n") == "{}\n\n"
        assert bed.ask("clear table agg big.aggr\n") == "Cleared 0 entries.\n\n"


class TestSmallAnswers:
    def test_text_answers_follow_each_other_after_their_shards_label(self, bed: Bed) -> None:
        one, two = bed.source(10), bed.source(20, base=0x0B000000)
        bed.real("agg/AGGR.1", one)
        bed.real("agg/AGGR.2", two)
        for command in ("show aggrs", "show peers", "show info"):
            assert bed.ask(command + "\n") == ("# shard agg/AGGR.1\n" + answer_of(one, command)
                                               + "# shard agg/AGGR.2\n" + answer_of(two, command) + "\n")

    def test_json_lists_are_concatenated_with_the_shard_in_each_object(self, bed: Bed) -> None:
        one, two = bed.source(10), bed.source(20, peers=3, base=0x0B000000)
        bed.real("agg/AGGR.1", one)
        bed.real("agg/AGGR.2", two)
        for command in ("show peers json", "show aggrs json"):
            expected = [{"shard": label, **row} for label, source in (("agg/AGGR.1", one), ("agg/AGGR.2", two))
                        for row in json.loads(answer_of(source, command))]
            answer = bed.ask(command + "\n")
            assert json.loads(answer) == expected and answer.endswith("]\n\n")
            assert list(json.loads(answer)[0])[0] == "shard"
        assert len(json.loads(bed.ask("show peers json\n"))) == 5

    def test_show_info_json_is_one_object_per_shard_label(self, bed: Bed) -> None:
        one = bed.source(10)
        bed.real("agg/AGGR.1", one)
        bed.missing("agg/AGGR.2")
        assert json.loads(bed.ask("show info json\n")) == {"agg/AGGR.1": json.loads(answer_of(one, "show info json")),
                                                           "agg/AGGR.2": None}

    def test_clear_table_sums_the_shards_counts(self, bed: Bed) -> None:
        one, two = bed.source(10), bed.source(20, base=0x0B000000)
        bed.real("a", one)
        bed.real("b", two)
        assert bed.ask("clear table agg big.aggr key 11.0.0.3\n") == "Cleared 1 entry.\n\n"
        assert (len(one.table), len(two.table)) == (10, 19)
        assert bed.ask("clear table agg big.aggr\n") == "Cleared 29 entries.\n\n"
        assert (len(one.table), len(two.table)) == (0, 0)
        assert bed.ask("clear table agg nope\n") == "# shard a\nNo such table: nope\n# shard b\nNo such table: nope\n\n"

    def test_clear_table_names_the_shards_that_did_not_clear(self, bed: Bed) -> None:
        bed.real("a", bed.source(7))
        bed.missing("b")
        bed.fake("c", canned("No such aggregations section: agg\n"))
        assert bed.ask("clear table agg big.aggr\n") == ("Cleared 7 entries.\n# shard b: unavailable\n# shard c\n"
                                                         "No such aggregations section: agg\n\n")

    def test_help_and_unknown_commands_are_answered_without_the_shards(self, bed: Bed) -> None:
        asked = bed.fake("a", canned("nothing\n"))
        unknown = "".join(cli.stream_command(["show", "nope", "x"], None, 0.0, None))  # type: ignore[arg-type]
        assert bed.ask("help\n") == cli.HELP + "\n"
        assert bed.ask("show nope x\n") == unknown + "\n"
        assert bed.ask('show "unclosed\n') == "Invalid command: No closing quotation\n\n"
        assert asked == []

    def test_bad_arguments_are_the_shards_own_answers(self, bed: Bed) -> None:
        source = bed.source(5)
        bed.real("a", source)
        assert bed.ask("show aggrs nope json\n") == "# shard a\nUsage: show aggrs [json]\n\n"
        assert bed.ask("show info nope json\n") == "# shard a\nUsage: show info [json]\n\n"


class TestConnection:
    def test_semicolon_commands_are_answered_in_order(self, bed: Bed) -> None:
        one, two = bed.source(100), bed.source(100, base=0x0B000000)
        bed.real("a", one)
        bed.real("b", two)
        answer = bed.ask(f"help; {SHOW} key 10.0.0.1; clear table agg big.aggr key 11.0.0.1; {SHOW} json\n")
        merged_json = json.dumps(json.loads(answer_of(one, SHOW + " json")) + json.loads(answer_of(two, SHOW + " json")),
                                 separators=(",", ":"))
        assert answer == (cli.HELP + answer_of(one, SHOW + " key 10.0.0.1") + "Cleared 1 entry.\n" + merged_json
                          + "\n\n")
        assert len(json.loads(merged_json)) == 199

    def test_prompt_mode_answers_each_line_until_quit(self, bed: Bed) -> None:
        one, two = bed.source(500), bed.source(300, base=0x0B000000)
        bed.real("a", one)
        bed.real("b", two)
        client = bed.connect()
        client.send(f"prompt\n{SHOW}\nshow peers\n{SHOW} json; help\nquit\n")
        assert bed.until(lambda: client.eof)
        table = answer_of(one, SHOW) + answer_of(two, SHOW)
        peers = "# shard a\n" + answer_of(one, "show peers") + "# shard b\n" + answer_of(two, "show peers")
        rows = json.loads(answer_of(one, SHOW + " json")) + json.loads(answer_of(two, SHOW + " json"))
        expected_json = json.dumps(rows, separators=(",", ":")) + "\n"
        assert client.text == "> " + table + "\n> " + peers + "\n> " + expected_json + cli.HELP + "\n> \n"

    def test_prompt_mode_line_by_line(self, bed: Bed) -> None:
        source = bed.source(50)
        bed.real("a", source)
        client = bed.connect()
        client.send("prompt\n")
        assert bed.until(lambda: client.data == b"> ")
        for line, expected in ((SHOW + " key 10.0.0.1", answer_of(source, SHOW + " key 10.0.0.1")),
                               ("clear table agg big.aggr key 10.0.0.2", "Cleared 1 entry.\n"), ("help", cli.HELP)):
            client.data.clear()
            client.send(line + "\n")
            assert bed.until(lambda: client.data.endswith(b"\n> "))
            bed.until(lambda: False, timeout=0.05)  # nothing more comes
            assert client.text == expected + "\n> "
        client.send("prompt\n")  # prompt again: leaves, as the daemon
        assert bed.until(lambda: client.eof)

    def test_a_half_closed_client_gets_the_whole_answer(self, bed: Bed) -> None:
        one, two = bed.source(2000), bed.source(2000, base=0x0B000000)
        bed.real("a", one)
        bed.real("b", two)
        assert bed.ask(SHOW + "\n", shut=True) == answer_of(one, SHOW) + answer_of(two, SHOW) + "\n"
        assert bed.ask("show aggrs json", shut=True).startswith('[{"shard":"a"')  # no newline: the end is one

    def test_many_lines_sent_during_a_dump_wait_for_it(self, bed: Bed) -> None:
        source = bed.source(2000)
        bed.real("a", source)
        client = bed.connect()
        client.send("prompt\n" + SHOW + "\n" + "help\n" * 2000 + "quit\n")
        assert bed.until(lambda: client.eof)
        assert client.text == "> " + answer_of(source, SHOW) + "\n> " + (cli.HELP + "\n> ") * 2000 + "\n"

    def test_a_line_too_long_is_refused(self, bed: Bed) -> None:
        bed.real("a", bed.source(1))
        assert bed.ask("x" * (cli.MAX_COMMAND_LINE + 10) + "\n") == "Command line too long\n\n"


# -- metrics -----------------------------------------------------------------------------------------------------------

EXPOSITION_A = """\
# HELP hapee_stktagg_info Version.
# TYPE hapee_stktagg_info gauge
hapee_stktagg_info{version="1"} 1
# HELP loop_seconds Turns.
# TYPE loop_seconds histogram
loop_seconds_bucket{le="0.001"} 3
loop_seconds_bucket{le="+Inf"} 4
loop_seconds_sum 0.5
loop_seconds_count 4
# HELP peer_up Up.
# TYPE peer_up gauge
peer_up{section="agg",peer="A"} 1
process_open_fds{} 7
"""
EXPOSITION_B = """\
# HELP hapee_stktagg_info Version.
# TYPE hapee_stktagg_info gauge
hapee_stktagg_info{version="1"} 1
# HELP peer_up Up.
# TYPE peer_up gauge
peer_up{section="agg",peer="B"} 0
# HELP new_family Only here.
# TYPE new_family counter
new_family 12
# HELP loop_seconds Turns.
# TYPE loop_seconds histogram
loop_seconds_bucket{le="0.001"} 1
loop_seconds_bucket{le="+Inf"} 1
loop_seconds_sum 0.25
loop_seconds_count 1
"""
_SAMPLE_LINE = re.compile(r'([a-zA-Z_:][a-zA-Z0-9_:]*)\{shard="((?:[^"\\]|\\.)*)"(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*")*\}'
                          r' [^ ]+')


def check_exposition(text: str) -> dict[str, list[str]]:
    """Fail unless ``text`` is one valid exposition whose samples have ``shard`` first; family -> samples."""
    assert text.endswith("\n") and "\n\n" not in text
    families: dict[str, list[str]] = {}
    helps, types, current = set(), {}, None
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            name = line.split()[2]
            seen = helps if line.startswith("# HELP ") else types
            assert name not in seen, f"{line!r}: a second time"
            if isinstance(seen, set):
                seen.add(name)
            else:
                seen[name] = line.split()[3]
            assert name not in families or name == current, f"{name}: not contiguous"
            families.setdefault(name, [])
            current = name
            continue
        found = _SAMPLE_LINE.fullmatch(line)
        assert found is not None, f"not a sample with shard first: {line!r}"
        name = found[1]
        base = name.rsplit("_", 1)[0]
        family = base if base != name and types.get(base) in ("histogram", "summary") else name
        assert family == current or family not in families, f"{line!r}: family {family} not contiguous"
        families.setdefault(family, []).append(line)
        current = family
    return families


class TestMetrics:
    def test_show_metrics_is_the_metrics_endpoints_text(self) -> None:
        source = Source(fill(3, 1, 0x0A000000, START), 1, ManualClock(START), (START, 1_000_000_000.0))
        status = source.status()
        def steady(text: str) -> str:  # the process's CPU time and memory move between two renderings
            return re.sub(r"(?m)^(process_[a-z_]+) .*$", r"\1", text)

        assert steady(cli.run_command(["show", "metrics"], status, START, source)) == steady(metrics.render(status))
        assert cli.run_command(["show", "metrics", "x"], status, START, source) == "Usage: show metrics\n"
        assert "show metrics" in cli.HELP

    def test_merge_labels_every_sample_and_keeps_families_together(self) -> None:
        a, b, c, d = (Shard(label, "/nowhere") for label in ("agg/A.1", 'odd"label\\', "down", "garbage"))
        text = merge_metrics([ShardAnswer(a, EXPOSITION_A), ShardAnswer(b, EXPOSITION_B), ShardAnswer(c, None),
                              ShardAnswer(d, "Unknown command: 'show metrics'\n")])
        families = check_exposition(text)
        assert list(families) == [SHARD_UP, "hapee_stktagg_info", "loop_seconds", "peer_up", "process_open_fds",
                                  "new_family"]
        assert families[SHARD_UP] == [f'{SHARD_UP}{{shard="agg/A.1"}} 1', f'{SHARD_UP}{{shard="odd\\"label\\\\"}} 1',
                                      f'{SHARD_UP}{{shard="down"}} 0', f'{SHARD_UP}{{shard="garbage"}} 0']
        assert families["loop_seconds"] == [
            'loop_seconds_bucket{shard="agg/A.1",le="0.001"} 3', 'loop_seconds_bucket{shard="agg/A.1",le="+Inf"} 4',
            'loop_seconds_sum{shard="agg/A.1"} 0.5', 'loop_seconds_count{shard="agg/A.1"} 4',
            'loop_seconds_bucket{shard="odd\\"label\\\\",le="0.001"} 1',
            'loop_seconds_bucket{shard="odd\\"label\\\\",le="+Inf"} 1',
            'loop_seconds_sum{shard="odd\\"label\\\\"} 0.25', 'loop_seconds_count{shard="odd\\"label\\\\"} 1']
        assert families["process_open_fds"] == ['process_open_fds{shard="agg/A.1"} 7']
        assert families["new_family"] == ['new_family{shard="odd\\"label\\\\"} 12']
        assert text.count("# HELP peer_up") == text.count("# TYPE peer_up") == 1

    def test_the_merge_of_real_shards_is_valid(self, bed: Bed) -> None:
        one, two = bed.source(10), bed.source(20, base=0x0B000000)
        bed.real("agg/AGGR.1", one)
        bed.real("agg/AGGR.2", two)
        bed.missing("agg/AGGR.3")
        answer = bed.ask("show metrics\n")
        assert answer.endswith("\n\n")
        families = check_exposition(answer[:-1])
        assert families[SHARD_UP] == [f'{SHARD_UP}{{shard="agg/AGGR.{i}"}} {up}' for i, up in ((1, 1), (2, 1), (3, 0))]
        assert families["hapee_stktagg_table_entries"] == [
            'hapee_stktagg_table_entries{shard="agg/AGGR.1",section="agg",table="big.aggr",mode="aggregate"} 10',
            'hapee_stktagg_table_entries{shard="agg/AGGR.2",section="agg",table="big.aggr",mode="aggregate"} 20']
        assert len(families["hapee_stktagg_loop_turn_seconds"]) == 2 * (1 + 2)  # +Inf bucket, sum, count

    def test_the_endpoint_answers_get_and_head_with_every_shard(self, bed: Bed) -> None:
        bed.real("agg/AGGR.1", bed.source(10))
        bed.real("agg/AGGR.2", bed.source(20, base=0x0B000000))
        for method in ("GET", "HEAD"):
            client = bed.connect_metrics()
            client.send(f"{method} /metrics?x=1 HTTP/1.1\r\nHost: x\r\n\r\n")
            assert bed.until(lambda: client.eof)
            head, _, body = client.data.partition(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            assert lines[0] == "HTTP/1.1 200 OK"
            assert "Content-Type: text/plain; version=0.0.4; charset=utf-8" in lines
            assert "Date: Sun, 09 Sep 2001 01:46:40 GMT" in lines  # the injected clock's wall time
            length = int(next(line.split(": ")[1] for line in lines if line.startswith("Content-Length")))
            if method == "HEAD":
                assert body == b""
            else:
                assert len(body) == length
                families = check_exposition(body.decode())
                assert families[SHARD_UP] == [f'{SHARD_UP}{{shard="agg/AGGR.1"}} 1', f'{SHARD_UP}{{shard="agg/AGGR.2"}} 1']

    @pytest.mark.parametrize("request_text", ["POST /metrics HTTP/1.1\r\n\r\n", "GET /other HTTP/1.1\r\n\r\n",
                                              "nonsense\r\n\r\n", "GET /metrics HTTP/1.1\r\n" + "X: y\r\n" * 2000])
    def test_bad_requests_are_answered_as_the_daemons_endpoint(self, bed: Bed, request_text: str) -> None:
        source = bed.source(1)
        bed.real("a", source)
        ours, theirs = socket.socketpair()
        connection = web.WebConnection(Dashboard(source, Slicer(bed.reactor, source.clock)))
        daemon = Client(bed.reactor, theirs, None, StreamTransport(bed.reactor, ours, connection), True)
        bed.clients.append(daemon)
        sharded = bed.connect_metrics()
        for client in (daemon, sharded):
            client.send(request_text)
        assert bed.until(lambda: daemon.eof and sharded.eof)
        # the same status (the daemon's listener serves more paths, with more headers)
        assert sharded.data.split(b"\r\n", 1)[0] == daemon.data.split(b"\r\n", 1)[0]
        assert not sharded.data.startswith(b"HTTP/1.1 200")

    def test_a_client_that_half_closes_gets_the_metrics(self, bed: Bed) -> None:
        bed.real("a", bed.source(1))
        client = bed.connect_metrics()
        client.send("GET /metrics HTTP/1.0\r\n\r\n", shut=True)
        assert bed.until(lambda: client.eof)
        assert client.data.startswith(b"HTTP/1.1 200 OK") and f'{SHARD_UP}{{shard="a"}} 1'.encode() in client.data

    def test_the_metrics_of_a_silent_shard_wait_for_its_deadline_only(self, bed: Bed) -> None:
        bed.fake("a", lambda command: None)
        bed.real("b", bed.source(1))
        client = bed.connect_metrics()
        client.send("GET /metrics HTTP/1.1\r\n\r\n")
        bed.until(lambda: False, timeout=0.2)
        assert not client.eof
        bed.clock.advance(SHARD_TIMEOUT + 0.5)
        assert bed.until(lambda: client.eof)
        assert f'{SHARD_UP}{{shard="a"}} 0\n{SHARD_UP}{{shard="b"}} 1\n'.encode() in client.data


# -- pure merges ------------------------------------------------------------------------------------------------------


def test_merges_of_hand_made_answers() -> None:
    a, b = Shard("a", "/a"), Shard("b", "/b")
    assert merge_text([ShardAnswer(a, "x\n"), ShardAnswer(b, None, "unavailable"), ShardAnswer(a, "")]) == \
        "# shard a\nx\n# shard b: unavailable\n# shard a\n"
    assert merge_json([ShardAnswer(a, '[{"n":1},2]\n'), ShardAnswer(b, "Usage\n")], keyed=False) == \
        '[{"shard":"a","n":1},2]\n'
    assert merge_json([ShardAnswer(a, "Usage\n"), ShardAnswer(b, None, "unavailable")], keyed=False) is None
    assert merge_json([ShardAnswer(a, '{"k":1}\n'), ShardAnswer(b, '[1]\n')], keyed=True) == '{"a":{"k":1},"b":null}\n'
    assert merge_clear([ShardAnswer(a, "Cleared 1 entry.\n"), ShardAnswer(b, "Cleared 0 entries.\n")]) == \
        "Cleared 1 entry.\n"


# -- real daemons as shards ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_real_servers_as_shards(bed: Bed) -> None:
    """Each shard an ordinary ``Server`` with its own private stats socket, on the main's reactor."""
    for index in (1, 2):
        path = f"{bed.dir}/shard{index}.sock"
        config = parse(f"global\n    stats socket {path}\naggregations agg\n    shards 2\n"
                       f"    peer AGGR.{index} 127.0.0.1:{free_port()} local shard {index}\n"
                       f"    peer A 127.0.0.1:{free_port()}\n    from .local to .aggr\n")
        server = Server(config, bed.reactor, bed.clock, workers=0, cli_factory=cli.CliConnection)
        server.bind()
        server.start()
        bed.servers.append(server)
        bed.shards.append(Shard(f"agg/AGGR.{index}", path))
    aggrs = bed.ask("show aggrs\n")
    assert aggrs.startswith("# shard agg/AGGR.1\naggregations agg\n") and "# shard agg/AGGR.2\naggregations agg\n" in aggrs
    info = json.loads(bed.ask("show info json\n"))
    assert set(info) == {"agg/AGGR.1", "agg/AGGR.2"} and all(v["sections"] == 1 for v in info.values())
    peers = json.loads(bed.ask("show peers json\n"))
    assert [(p["shard"], p["name"]) for p in peers] == [("agg/AGGR.1", "A"), ("agg/AGGR.2", "A")]
    families = check_exposition(bed.ask("show metrics\n")[:-1])
    assert families[SHARD_UP] == [f'{SHARD_UP}{{shard="agg/AGGR.1"}} 1', f'{SHARD_UP}{{shard="agg/AGGR.2"}} 1']
    assert len(families["hapee_stktagg_peer_up"]) == 2
