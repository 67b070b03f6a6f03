"""Routing rules of one aggregations section: which table goes where, from whom (DESIGN.md §3.1, §3.4)."""

from __future__ import annotations

import pytest

from stktagg.aggregation import RouteKind, Section
from stktagg.config import parse
from stktagg.table import TableMode
from stktagg.wire import TableDefinition

CONFIG = """
aggregations mid
    peer hA 127.0.0.1:10001
    peer hB 127.0.0.1:10002 down
    peer MID 127.0.0.1:10100 local
    peer TOP1 127.0.0.1:10201 up group 1
    peer TOP2 127.0.0.1:10202 up group 1
    from {rule}
    forward .l2
"""


def section(rule: str = "any to .aggr") -> Section:
    return Section(parse(CONFIG.format(rule=rule)).aggregations[0])


def definition(name: str, key_len: int = 33) -> TableDefinition:
    return TableDefinition(1, name.encode(), 6, key_len, 1 << 9, 60000, ())


def route(sec: Section, peer: str, name: str, **kw):
    return sec.route(sec.peer(peer), definition(name, **kw))


@pytest.mark.parametrize(
    "rule, table, output",
    [
        ("any to .aggr", "mytable.local", b"mytable.aggr"),
        ("any to .aggr", "mytable", b"mytable.aggr"),
        ("any to .aggr", "/mytable.local", b"/mytable.aggr"),  # peers-section tables keep their slash
        (".cpu,.proc to .aggr", "t.cpu", b"t.aggr"),
        (".cpu,.proc to .aggr", "t.proc", b"t.aggr"),
        (".cpu,.proc to .aggr accept-no-suffix", "t", b"t.aggr"),
    ],
)
def test_down_peer_tables_are_aggregated_per_the_from_rule(rule, table, output):
    sec = section(rule)
    r = route(sec, "hA", table)
    assert r.kind is RouteKind.AGGREGATE and r.table.name == output and r.table.mode is TableMode.AGGREGATE


@pytest.mark.parametrize(
    "rule, table",
    [
        ("any to .aggr", "mytable.aggr"),  # an output is never an input
        (".cpu,.proc to .aggr", "t.mem"),
        (".cpu,.proc to .aggr", "t"),  # no suffix without accept-no-suffix
        ("any to .aggr", "mytable.l2"),  # forwarded tables are not taken from down peers
    ],
)
def test_tables_that_are_not_inputs_are_ignored(rule, table):
    assert route(section(rule), "hB", table).kind is RouteKind.IGNORE


def test_up_peers_forward_tables_are_kept_and_others_ignored():
    sec = section()
    r = route(sec, "TOP1", "mytable.l2")
    assert r.kind is RouteKind.FORWARD and r.table.mode is TableMode.FORWARD and r.table.name == b"mytable.l2"
    assert route(sec, "TOP2", "mytable.l2").table is r.table  # any member of the group feeds the same table
    assert route(sec, "TOP1", "mytable.local").kind is RouteKind.IGNORE
    assert route(sec, "TOP1", "mytable.aggr").kind is RouteKind.IGNORE


def test_who_is_sent_what():
    sec = section()
    route(sec, "hA", "mytable.local")
    route(sec, "TOP1", "mytable.l2")
    names = lambda peer: sorted(t.name for t in sec.tables_for(sec.peer(peer)))
    assert names("hA") == [b"mytable.aggr", b"mytable.l2"]  # down peers: aggregates and forwarded
    assert names("TOP1") == [b"mytable.aggr"]  # up peers: our outputs only


def test_a_peer_with_a_different_key_layout_is_ignored():
    sec = section()
    assert route(sec, "hA", "mytable.local").kind is RouteKind.AGGREGATE
    assert route(sec, "hB", "mytable.local", key_len=17).kind is RouteKind.IGNORE


def test_definition_without_rate_periods_is_ignored():
    sec = section()
    incomplete = TableDefinition(1, b"x.local", 6, 33, (1 << 9) | (1 << 10), 60000, ())
    assert sec.route(sec.peer("hA"), incomplete).kind is RouteKind.IGNORE


# -- reload (issue 17): Section.reconfigure --------------------------------------------


def reloaded(text: str):
    return parse(text).aggregations[0]


def test_a_reload_keeps_indexes_for_good_and_names_what_changed():
    sec = section()
    tables = sec.tables
    indexes = dict(sec.peer_index)
    text = CONFIG.format(rule="any to .aggr")
    # hB removed, hC added, hA's address changed; TOP1 and TOP2 only moved down a line
    new = text.replace("    peer hB 127.0.0.1:10002 down\n", "\n").replace("127.0.0.1:10001", "127.0.0.1:10009")
    new = new.replace("    from any", "    peer hC 127.0.0.1:10003\n    from any")
    changes = sec.reconfigure(reloaded(new))
    assert [p.name for p in changes.removed] == ["hB"]
    assert [p.name for p in changes.added] == ["hC"]
    assert [p.name for p in changes.changed] == ["hA"]
    assert not changes.rules and not changes.local
    assert sec.tables is tables  # every table and its entries kept
    assert {n: sec.peer_index[n] for n in indexes} == indexes and sec.peer_index["hC"] == len(indexes)
    assert sec.peer("hB") is None and "hB" in sec.removed
    assert [p.name for _, p in sec.declared_peers()] == ["hA", "TOP1", "TOP2", "hC"]
    assert str(sec.peer("hA").address) == "127.0.0.1:10009"
    # declared again: its old index back, not a new one
    again = sec.reconfigure(reloaded(text))
    assert [p.name for p in again.added] == ["hB"] and sec.peer_index["hB"] == indexes["hB"]
    assert [p.name for p in again.removed] == ["hC"]


def test_a_reload_that_only_moves_lines_changes_nothing():
    sec = section()
    moved = "\n\n# a comment\n" + CONFIG.format(rule="any to .aggr").replace("    forward .l2\n", "") \
        .replace("aggregations mid\n", "aggregations mid\n    forward .l2\n")
    assert not sec.reconfigure(reloaded(moved))


def test_rules_and_the_local_peer_are_reported():
    sec = section()
    assert route(sec, "hA", "t.cpu").kind is RouteKind.AGGREGATE
    changes = sec.reconfigure(reloaded(CONFIG.format(rule=".proc to .aggr")))
    assert changes.rules and not changes.local
    assert route(sec, "hA", "t.cpu").kind is RouteKind.IGNORE  # routed by the new rule
    moved = CONFIG.format(rule=".proc to .aggr").replace("10100 local", "10101 local")
    changes = sec.reconfigure(reloaded(moved))
    assert changes.local and not changes.rules and str(sec.local.address) == "127.0.0.1:10101"
