"""The CLI handlers and the metrics renderer on hand-made status snapshots.

No server, no sockets, no clock: each handler gets a ``status.Status`` built
here, ``now`` as a number, and a recording ``Commands``; the system clock is
made to fail while they run. The tables are real ``AggTable``s filled at
fixed table times.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from stktagg import cli, metrics
from stktagg.clock import ManualClock, table_ms
from stktagg.config import PeerRole
from stktagg.session import State
from stktagg.status import (
    ClearTable,
    PeerStatus,
    SectionStatus,
    SentTable,
    Status,
    TableStatus,
    Traffic,
)
from stktagg.table import AggTable, TableMode
from stktagg.wire import TableDefinition

MASK = (1 << 9) | (1 << 10)  # http_req_cnt, http_req_rate(10s)
DEFINITION = TableDefinition(0, b"mytable.aggr", 6, 33, MASK, 60_000, ((10, 10_000),))
#: The clock instant (s) the tables were filled at, and the one the commands run at.
FILLED = 1000.0
NOW = FILLED + 2.5
HELLO = 1_000_000_100.0  # a wall time, far from today's date on purpose


class RecordingCommands:
    """A ``status.Commands`` that records what it is asked and clears ``cleared`` entries."""

    def __init__(self, cleared: int = 2) -> None:
        self.cleared = cleared
        self.asked: list[ClearTable] = []

    def clear_table(self, command: ClearTable) -> int:
        self.asked.append(command)
        return self.cleared


@contextmanager
def no_clock() -> Iterator[None]:
    """Fail if anything reads the system clock meanwhile."""
    saved = time.monotonic, time.time

    def read() -> float:
        raise AssertionError("read the system clock")

    time.monotonic = time.time = read  # type: ignore[assignment]
    try:
        yield
    finally:
        time.monotonic, time.time = saved  # type: ignore[assignment]


def filled_table(empty: bool = False) -> AggTable:
    table = AggTable(DEFINITION, TableMode.AGGREGATE)
    if not empty:
        ms = table_ms(FILLED)
        for peer, key, count in ((0, b"alice", 3), (1, b"alice", 4), (0, b"bob", 1)):
            table.apply(table.stripe_of(key), peer, table.fields, [(key, (count, (0, 1, 0)), None)], ms)
    return table


def snapshot(table: AggTable | None = None) -> Status:
    table = table if table is not None else filled_table()
    tables = (TableStatus(b"mytable.aggr", TableMode.AGGREGATE, b"mytable.local", 60_000, len(table), table.changes,
                          table.dropped, table),)
    a = PeerStatus("A", 0, PeerRole.DOWN, "127.0.0.1:5000", State.ESTABLISHED, synced=True, tls=False,
                   last_hello=HELLO, traffic=Traffic(1, 2, 3, 4, 5, 6, 7, 8),
                   sent={b"mytable.aggr": SentTable(last_pushed=5, last_acked=4)})
    b = PeerStatus("B", 1, PeerRole.DOWN, "127.0.0.2:10000", last_error="peer answered status 503")
    rates = {"updates_received_per_s_1s": 1, "updates_pushed_per_s_1s": 2,
             "updates_received_per_s_1m": None, "updates_pushed_per_s_1m": None}
    return Status((SectionStatus("agg", (a, b), tables),), 4242, FILLED - 100.0, 1_000_000_000.0, 10, 20, rates)


def run(line: str, status: Status | None = None, commands: RecordingCommands | None = None) -> str:
    with no_clock():
        return cli.run_command(line.split(), status or snapshot(), NOW, commands or RecordingCommands())


class TestShowAggrs:
    def test_text_layout_has_state_bits_and_update_ids(self) -> None:
        assert run("show aggrs") == (
            "aggregations agg\n"
            "  table 'mytable.local' aggregated to 'mytable.aggr' (expire: 60000 nb_entries: 2)\n"
            "    update: 0x00000003 used: 0x00000002\n"
            "    peer 'A' (0) state: 0x7 push: 0x00000005 ack: 0x00000004 sync: 0x00000005\n"
            "    peer 'B' (1) state: 0x0 push: 0x00000000 ack: 0x00000000 sync: 0x00000000\n"
        )

    def test_a_session_not_yet_established_shows_connected_only(self) -> None:
        status = snapshot()
        section = status.sections[0]
        handshaking = PeerStatus("B", 1, PeerRole.DOWN, "127.0.0.2:41000", State.AWAIT_HELLO)
        status = dataclasses.replace(status, sections=(SectionStatus("agg", (section.peers[0], handshaking),
                                                                    section.tables),))
        assert "peer 'B' (1) state: 0x1 push: 0x00000000" in run("show aggrs", status)

    def test_json_form_carries_the_same_numbers(self) -> None:
        table = json.loads(run("show aggrs json"))[0]["tables"][0]
        assert (table["name"], table["source"], table["mode"], table["entries"], table["updates"]) == (
            "mytable.aggr", "mytable.local", "aggregate", 2, 3)
        assert table["peers"][0] == {"name": "A", "index": 0, "state": 7, "push": 5, "ack": 4, "sync": 5}

    def test_a_forwarded_table_is_shown_as_forwarded(self) -> None:
        table = filled_table()
        forwarded = TableStatus(b"mytable.l2", TableMode.FORWARD, b"", 60_000, len(table), 3, 0, table)
        status = snapshot()
        status = dataclasses.replace(status, sections=(SectionStatus("agg", status.sections[0].peers, (forwarded,)),))
        assert "  table 'mytable.l2' forwarded (expire: 60000 nb_entries: 2)\n" in run("show aggrs", status)

    def test_extra_arguments_get_the_usage(self) -> None:
        assert run("show aggrs please") == "Usage: show aggrs [json]\n"


class TestShowTable:
    def test_entries_with_remaining_expiry_at_now(self) -> None:
        text = run("show table agg mytable.aggr")
        # 2.5 s after the updates: 57.5 s left of the 60 s expire.
        assert "key=alice http_req_cnt=7 http_req_rate=(10000)=2 exp=57500\n" \
               "    A: http_req_cnt=3 http_req_rate=(10000)=1 exp=57500\n" \
               "    B: http_req_cnt=4 http_req_rate=(10000)=1 exp=57500\n" in text
        assert "key=bob http_req_cnt=1 http_req_rate=(10000)=1 exp=57500\n" in text

    def test_key_and_filters_and_json(self) -> None:
        assert run("show table agg mytable.aggr key bob").startswith("key=bob ")
        assert run("show table agg mytable.aggr data.http_req_cnt gt 5").splitlines()[0].startswith("key=alice ")
        rows = json.loads(run("show table agg mytable.aggr key alice json"))
        assert rows[0]["values"] == {"http_req_cnt": 7, "http_req_rate": 2} and rows[0]["expire"] == 57_500
        assert [p["name"] for p in rows[0]["peers"]] == ["A", "B"]

    def test_expired_entries_show_as_expired(self) -> None:
        status = snapshot()
        late = FILLED + 61.0
        with no_clock():
            text = cli.run_command("show table agg mytable.aggr key bob".split(), status, late, RecordingCommands())
        assert text == "key=bob http_req_cnt=0 http_req_rate=(10000)=0 expired\n" \
                       "    A: http_req_cnt=0 http_req_rate=(10000)=0 expired\n"

    def test_an_existing_empty_table_is_shown_empty(self) -> None:
        assert run("show table agg mytable.aggr", snapshot(filled_table(empty=True))) == ""

    def test_unknown_names_and_bad_filters_are_errors(self) -> None:
        assert run("show table nope mytable.aggr") == "No such aggregations section: nope\n"
        assert run("show table agg nope") == "No such table: nope\n"
        assert run("show table agg mytable.aggr data.nope gt 1").startswith("Unknown data type 'nope'")
        assert run("show table agg mytable.aggr data.http_req_cnt bigger 1").startswith("Unknown operator")


class TestShowPeersAndInfo:
    def test_peers_text_and_json(self) -> None:
        hello = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(HELLO))
        assert run("show peers") == (
            f"agg/A role=down state=established addr=127.0.0.1:5000 tls=no last_hello={hello}"
            " msgs_in=1 msgs_out=2 bytes_in=3 bytes_out=4 last_error=\"\"\n"
            "agg/B role=down state=idle addr=127.0.0.2:10000 tls=no last_hello=never"
            " msgs_in=0 msgs_out=0 bytes_in=0 bytes_out=0 last_error=\"peer answered status 503\"\n"
        )
        a = json.loads(run("show peers json"))[0]
        assert a["last_hello"] == HELLO and a["updates_in"] == 5 and a["updates_out"] == 6

    def test_info_uptime_is_now_minus_the_start(self) -> None:
        info = json.loads(run("show info json"))
        assert info["pid"] == 4242 and info["uptime_s"] == 102 and info["sessions"] == 1
        assert info["python"] == f"{platform.python_implementation()} {platform.python_version()}"
        assert (info["sections"], info["tables"], info["entries"]) == (1, 1, 2)
        assert list(info)[-4:] == ["updates_received_per_s_1s", "updates_pushed_per_s_1s",
                                   "updates_received_per_s_1m", "updates_pushed_per_s_1m"]
        assert "uptime_s: 102\n" in run("show info") and "updates_pushed_per_s_1m: None\n" in run("show info")


class TestClearTable:
    def test_clear_is_a_command_object_for_the_server(self) -> None:
        commands = RecordingCommands(cleared=1)
        assert run("clear table agg mytable.aggr key bob", commands=commands) == "Cleared 1 entry.\n"
        commands.cleared = 2
        assert run("clear table agg mytable.aggr", commands=commands) == "Cleared 2 entries.\n"
        assert commands.asked == [ClearTable("agg", b"mytable.aggr", b"bob"), ClearTable("agg", b"mytable.aggr")]

    def test_bad_clear_commands_ask_nothing(self) -> None:
        commands = RecordingCommands()
        assert run("clear table agg", commands=commands) == "Usage: clear table <aggregations> <table> [key <k>]\n"
        assert run("clear table agg nope", commands=commands) == "No such table: nope\n"
        assert commands.asked == []


class TestExecute:
    def test_each_command_of_a_line_gets_a_fresh_snapshot_and_clock_reading(self) -> None:
        class Source(RecordingCommands):
            clock = ManualClock(NOW)
            taken = 0

            def status(self) -> Status:
                Source.taken += 1
                return snapshot()

        answer = cli.execute(Source(), "show info; clear table agg mytable.aggr ; nope")
        assert "uptime_s: 102\n" in answer and "Cleared 2 entries.\n" in answer and "Unknown command: 'nope'" in answer
        assert Source.taken == 3


def test_metrics_render_from_a_snapshot() -> None:
    with no_clock():
        text = metrics.render(snapshot())
    lines = set(text.splitlines())
    assert 'hapee_stktagg_peer_up{section="agg",peer="A",role="down"} 1' in lines
    assert 'hapee_stktagg_peer_up{section="agg",peer="B",role="down"} 0' in lines
    assert 'hapee_stktagg_peer_messages_received_total{section="agg",peer="A",role="down"} 1' in lines
    assert 'hapee_stktagg_peer_heartbeats_sent_total{section="agg",peer="A",role="down"} 8' in lines
    assert 'hapee_stktagg_table_entries{section="agg",table="mytable.aggr",mode="aggregate"} 2' in lines
    assert "hapee_stktagg_updates_pushed_total 20" in lines
    assert "process_start_time_seconds 1000000000.0" in lines


@pytest.mark.parametrize("now, expected", [(FILLED, 60_000), (FILLED + 0.0004, 60_000), (FILLED + 0.0015, 59_999)])
def test_show_table_converts_now_with_the_clock_rule(now: float, expected: int) -> None:
    """The handler's table time is ``clock.table_ms(now)``: milliseconds truncated, as the tables'."""
    with no_clock():
        rows = json.loads(cli.run_command("show table agg mytable.aggr key bob json".split(), snapshot(), now,
                                          RecordingCommands()))
    assert rows[0]["expire"] == expected
