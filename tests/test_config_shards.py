"""HAProxy's key shards in an ``aggregations`` section: ``shards <n>`` and the peer option ``shard <i>``.

HAProxy 2.8+ splits a table's keys over the peers of a ``peers`` section that
have ``shard <i>`` (``shards <n>`` in the section); see
``../shared/docs/haproxy-shards.md`` (beside the project root). The aggregator's file names the
same shard peers, with ``local`` on the ones this host serves.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stktagg.config import (
    EMPTY_GLOBAL,
    Address,
    Aggregations,
    Config,
    FromRule,
    Peer,
    PeerRole,
    Position,
    dump,
    parse,
    strip_positions,
)
from stktagg.errors import ConfigError

HERE = Position("<string>", 1, 1)
EXAMPLE = """\
aggregations agg1
    shards 2
    peer AGGR.1 10.0.0.50:10001 local shard 1
    peer AGGR.2 10.0.0.50:10002 local shard 2
    peer A 10.0.0.11:10000
    from .local to .aggr
"""


def error_of(text: str) -> str:
    """The ``path:line:col: message`` of parsing *text* (which must fail)."""
    with pytest.raises(ConfigError) as info:
        parse(text)
    error = info.value
    assert f"{error.path}:{error.lineno}:{error.colno}: {error.msg}" == str(error)
    return str(error)


# --------------------------------------------------------------------------
# Valid sections and the model
# --------------------------------------------------------------------------


def test_example_model() -> None:
    section = parse(EXAMPLE, "s.cfg").aggregations[0]
    assert section.shards == 2
    assert section.shards_position == Position("s.cfg", 2, 5)
    assert [(p.name, p.role, p.shard) for p in section.peers] == [
        ("AGGR.1", PeerRole.LOCAL, 1), ("AGGR.2", PeerRole.LOCAL, 2), ("A", PeerRole.DOWN, None)]
    assert section.peers[0].address == Address("10.0.0.50", 10001)
    assert [p.name for p in section.local_peers] == ["AGGR.1", "AGGR.2"]
    assert section.local_peer is section.peers[0]  # the first local peer: existing code unchanged
    assert [p.name for p in section.remote_peers] == ["A"]
    assert [p.name for p in section.down_peers] == ["A"]


def test_unsharded_section_defaults() -> None:
    section = parse("aggregations a\n    peer A 127.0.0.1:1 local\n    from any to .b\n").aggregations[0]
    assert section.shards is None and section.shards_position is None
    assert section.peers[0].shard is None
    assert section.local_peers == (section.local_peer,)


def test_shards_may_come_after_the_peers() -> None:
    text = ("aggregations a\n    peer AGGR.1 10.0.0.50:10001 local shard 1\n"
            "    peer AGGR.2 10.0.0.50:10002 local shard 2\n    from any to .b\n    shards 2\n")
    section = parse(text).aggregations[0]
    assert section.shards == 2 and section.shards_position == Position("<string>", 5, 5)
    assert [p.shard for p in section.local_peers] == [1, 2]


def test_other_hosts_shards_are_peers_without_local() -> None:
    # The same file on every host, only the 'local' words moved.
    text = ("aggregations a\n    shards 3\n    peer S1 10.0.0.50:10001 shard 1\n"
            "    peer S2 10.0.0.51:10002 local shard 2\n    peer S3 10.0.0.52:10003 shard 3\n"
            "    peer A 10.0.0.11:10000\n    from any to .b\n")
    section = parse(text).aggregations[0]
    assert [p.name for p in section.local_peers] == ["S2"]
    assert section.local_peer.name == "S2"
    assert [(p.name, p.role, p.shard) for p in section.remote_peers] == [
        ("S1", PeerRole.DOWN, 1), ("S3", PeerRole.DOWN, 3), ("A", PeerRole.DOWN, None)]


def test_shards_1_and_64_are_accepted() -> None:
    one = parse("aggregations a\n    shards 1\n    peer A 127.0.0.1:1 local shard 1\n"
                "    from any to .b\n").aggregations[0]
    assert (one.shards, one.local_peer.shard) == (1, 1)
    top = parse("aggregations a\n    shards 64\n    peer A 127.0.0.1:1 shard 64 local\n"
                "    from any to .b\n").aggregations[0]
    assert (top.shards, top.local_peer.shard) == (64, 64)


def test_shard_option_in_any_order_with_the_others() -> None:
    text = ("aggregations a\n    shards 2\n    peer A 127.0.0.1:1 shard 2 ssl local crt /c\n"
            "    from any to .b\n")
    peer = parse(text).aggregations[0].peers[0]
    assert (peer.role, peer.shard, peer.ssl, peer.crt) == (PeerRole.LOCAL, 2, True, "/c")


def test_model_fields_are_frozen() -> None:
    section = parse(EXAMPLE).aggregations[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        section.shards = 3  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        section.peers[0].shard = 2  # type: ignore[misc]


# --------------------------------------------------------------------------
# Errors, each at the offending word
# --------------------------------------------------------------------------

PEERS = "    peer A 127.0.0.1:1 local shard 1\n    from any to .b\n"


@pytest.mark.parametrize("value", ["0", "-1", "65", "2x", "1.5", "+2", "٢", "9" * 5000])
def test_shards_value_out_of_range_or_not_a_number(value: str) -> None:
    assert error_of(f"aggregations a\n    shards {value}\n{PEERS}") == (
        f"<string>:2:12: 'shards' expects a whole number from 1 to 64, not '{value}'")


def test_shards_needs_a_value_and_only_one() -> None:
    assert error_of(f"aggregations a\n    shards\n{PEERS}") == (
        "<string>:2:5: 'shards' needs a number of shards")
    assert error_of(f"aggregations a\n    shards 2 3\n{PEERS}") == (
        "<string>:2:14: unexpected extra argument '3' to 'shards'")


def test_second_shards_line_names_the_first() -> None:
    assert error_of(f"aggregations a\n    shards 2\n{PEERS}    shards 2\n") == (
        "<string>:5:5: duplicate 'shards' line (first at line 2)")


@pytest.mark.parametrize("value", ["0", "-1", "65", "x", "01x"])
def test_shard_value_not_a_number(value: str) -> None:
    assert error_of(f"aggregations a\n    shards 2\n    peer A 127.0.0.1:1 local shard {value}\n"
                    "    from any to .b\n") == (
        f"<string>:3:36: 'shard' expects a whole number from 1 to 64, not '{value}'")


def test_shard_needs_a_value_and_only_one() -> None:
    assert error_of("aggregations a\n    shards 2\n    peer A 127.0.0.1:1 local shard\n") == (
        "<string>:3:30: 'shard' needs a shard number")
    assert error_of("aggregations a\n    shards 2\n    peer A 127.0.0.1:1 local shard 1 shard 2\n") == (
        "<string>:3:38: duplicate peer option 'shard'")


def test_shard_beyond_shards() -> None:
    assert error_of("aggregations a\n    shards 2\n    peer A 127.0.0.1:1 local shard 3\n"
                    "    from any to .b\n") == (
        "<string>:3:36: invalid shard 3 (expected 1..2, from 'shards 2' at line 2)")


def test_shard_beyond_shards_when_shards_comes_last() -> None:
    assert error_of("aggregations a\n    peer A 127.0.0.1:1 local shard 1\n"
                    "    peer B 127.0.0.1:2 shard 3\n    from any to .b\n    shards 2\n") == (
        "<string>:3:30: invalid shard 3 (expected 1..2, from 'shards 2' at line 5)")


def test_two_local_peers_for_one_shard() -> None:
    assert error_of("aggregations a\n    shards 2\n    peer A 127.0.0.1:1 local shard 1\n"
                    "    peer B 127.0.0.1:2 local shard 1\n    from any to .b\n") == (
        "<string>:4:36: duplicate shard 1 (first on peer 'A' at line 3)")


def test_two_peers_for_one_shard_local_or_not() -> None:
    assert error_of("aggregations a\n    shards 2\n    peer A 127.0.0.1:1 shard 2\n"
                    "    peer B 127.0.0.1:2 local shard 1\n    peer C 127.0.0.1:3 shard 2\n"
                    "    from any to .b\n") == (
        "<string>:5:30: duplicate shard 2 (first on peer 'A' at line 3)")


def test_local_peer_without_shard_in_a_sharded_section() -> None:
    assert error_of("aggregations a\n    shards 2\n    peer A 127.0.0.1:1 local shard 1\n"
                    "    peer B 127.0.0.1:2 local\n    from any to .b\n") == (
        "<string>:4:24: local peer 'B' needs 'shard <i>' (the section has 'shards 2' at line 2)")


def test_local_peer_without_shard_when_shards_comes_last() -> None:
    assert error_of("aggregations a\n    peer A 127.0.0.1:1 local\n    from any to .b\n"
                    "    shards 2\n") == (
        "<string>:2:24: local peer 'A' needs 'shard <i>' (the section has 'shards 2' at line 4)")


def test_shard_without_shards() -> None:
    assert error_of("aggregations a\n    peer A 127.0.0.1:1 local\n"
                    "    peer B 127.0.0.1:2 shard 1\n    from any to .b\n") == (
        "<string>:3:24: 'shard' needs a 'shards <n>' line in the aggregations section")


def test_shards_in_one_section_do_not_count_for_the_next() -> None:
    assert error_of(EXAMPLE + "aggregations b\n    peer B 127.0.0.1:2 local shard 1\n"
                              "    from any to .b\n") == (
        "<string>:8:30: 'shard' needs a 'shards <n>' line in the aggregations section")


def test_more_than_one_local_peer_without_shards_is_still_an_error() -> None:
    assert error_of("aggregations a\n    peer A 127.0.0.1:1 local\n    peer B 127.0.0.1:2 local\n"
                    "    from any to .b\n") == (
        "<string>:3:24: more than one local peer ('A' is local at line 2)")


def test_a_sharded_section_still_needs_a_local_peer() -> None:
    assert error_of("aggregations a\n    shards 2\n    peer A 127.0.0.1:1 shard 1\n"
                    "    from any to .b\n") == (
        "<string>:1:1: aggregations section 'a' has no local peer "
        "(mark this aggregator's peer line with 'local')")


def test_first_offending_peer_line_is_reported() -> None:
    # Line 3 has a shard out of range, line 4 a local peer without shard: line 3 wins.
    assert error_of("aggregations a\n    shards 1\n    peer A 127.0.0.1:1 shard 2\n"
                    "    peer B 127.0.0.1:2 local\n    from any to .b\n") == (
        "<string>:3:30: invalid shard 2 (expected 1..1, from 'shards 1' at line 2)")


# --------------------------------------------------------------------------
# dump() and YAML round trips
# --------------------------------------------------------------------------


def test_dump_renders_shards_first_and_shard_after_the_role() -> None:
    text = ("aggregations agg1\n    peer AGGR.1 10.0.0.50:10001 shard 1 local\n"
            "    peer AGGR.2 10.0.0.50:10002 ssl shard 2\n    from .local to .aggr\n    shards 2\n")
    assert dump(parse(text)) == (
        "aggregations agg1\n"
        "    shards 2\n"
        "    peer AGGR.1 10.0.0.50:10001 local shard 1\n"
        "    peer AGGR.2 10.0.0.50:10002 shard 2 ssl\n"
        "    from .local to .aggr\n")


def test_dump_round_trip() -> None:
    config = parse(EXAMPLE, "s.cfg")
    text = dump(config)
    assert text == EXAMPLE
    assert strip_positions(parse(text, "s.cfg")) == strip_positions(config)


def test_yaml_round_trip() -> None:
    pytest.importorskip("ruamel.yaml")
    from stktagg.yamlconf import cfg_to_yaml, yaml_to_cfg

    yaml_text = cfg_to_yaml(EXAMPLE)
    assert "shards: '2'" in yaml_text and "- AGGR.2 10.0.0.50:10002 local shard 2" in yaml_text
    assert strip_positions(parse(yaml_to_cfg(yaml_text))) == strip_positions(parse(EXAMPLE))


@st.composite
def sharded_configs(draw: st.DrawFn) -> Config:
    shards = draw(st.integers(1, 8))
    served = draw(st.lists(st.integers(1, shards), min_size=1, max_size=shards, unique=True))
    local_count = draw(st.integers(1, len(served)))
    peers = [Peer(f"S{shard}", Address("192.0.2.1", 10000 + shard),
                  PeerRole.LOCAL if i < local_count else PeerRole.DOWN,
                  None, False, None, None, None, HERE, shard=shard) for i, shard in enumerate(served)]
    peers += [Peer(f"H{i}", Address("192.0.2.2", 20000 + i), draw(st.sampled_from([PeerRole.UP, PeerRole.DOWN])),
                   None, False, None, None, None, HERE) for i in range(draw(st.integers(0, 3)))]
    order = draw(st.permutations(peers))
    section = Aggregations("a", tuple(order), FromRule((), ".aggr", False, HERE), (), HERE,
                           shards=shards, shards_position=HERE)
    return Config("<string>", EMPTY_GLOBAL, (section,))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sharded_configs())
def test_dump_parse_round_trip_of_generated_sharded_sections(config: Config) -> None:
    again = parse(dump(config))
    assert strip_positions(again) == strip_positions(config)
    section = again.aggregations[0]
    assert section.local_peers == tuple(p for p in section.peers if p.role is PeerRole.LOCAL)
    assert section.local_peer is section.local_peers[0]
