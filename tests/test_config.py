"""Tests of stktagg.config: data-driven files, unit tests and properties.

The file-driven part follows CPython's ``test_tomllib``: every
``data/config/valid/*.cfg`` has a sibling ``.json`` holding the expected model
(positions left out), every ``data/config/invalid/*.cfg`` a sibling ``.err``
holding the exact error, with ``{path}`` standing for the file's path.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from stktagg import config as cfg
from stktagg.config import (
    Address,
    Aggregations,
    Config,
    FromRule,
    Peer,
    PeerRole,
    Position,
    Verify,
    check_cpus,
    check_files,
    dump,
    load,
    parse,
    strip_positions,
    table_suffix,
)
from stktagg.errors import ConfigError

DATA = Path(__file__).parent / "data" / "config"
VALID = sorted((DATA / "valid").glob("*.cfg"))
INVALID = sorted((DATA / "invalid").glob("*.cfg"))
HERE = Position("<string>", 1, 1)


def to_jsonable(value: Any) -> Any:
    """The model as plain JSON data, without positions."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple):
        return [to_jsonable(item) for item in value]
    if dataclasses.is_dataclass(value):
        return {
            f.name: to_jsonable(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if not f.name.endswith("position")
            and not (f.name == "path" and isinstance(value, Config))
        }
    return value


# --------------------------------------------------------------------------
# Data files
# --------------------------------------------------------------------------


def test_data_files_exist() -> None:
    assert len(VALID) >= 15
    assert len(INVALID) >= 30


@pytest.mark.parametrize("path", VALID, ids=[p.stem for p in VALID])
def test_valid(path: Path) -> None:
    expected = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    assert to_jsonable(load(str(path))) == expected


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid(path: Path) -> None:
    template = path.with_suffix(".err").read_text(encoding="utf-8")
    assert template.count("\n") == 1, "one line of expected error"
    expected = template.strip().replace("{path}", str(path))
    with pytest.raises(ConfigError) as info:
        load(str(path))
    assert str(info.value) == expected
    error = info.value
    assert f"{error.path}:{error.lineno}:{error.colno}: {error.msg}" == expected


@pytest.mark.parametrize("path", VALID, ids=[p.stem for p in VALID])
def test_dump_round_trip(path: Path) -> None:
    config = load(str(path))
    text = dump(config)
    again = parse(text, str(path))
    assert strip_positions(again) == strip_positions(config)
    assert dump(again) == text  # canonical: a fixed point


@pytest.mark.parametrize("path", VALID, ids=[p.stem for p in VALID])
def test_positions_point_at_keywords(path: Path) -> None:
    config = load(str(path))
    lines = path.read_text(encoding="utf-8").split("\n")
    for section in config.aggregations:
        for where, word in [(section.position, "aggregations"),
                            (section.from_rule.position, "from")]:
            assert lines[where.lineno - 1][where.colno - 1:].strip("'\"").startswith(word)
        for peer in section.peers:
            at = peer.position
            assert lines[at.lineno - 1][at.colno - 1:].startswith("peer")


# --------------------------------------------------------------------------
# Lexical rules
# --------------------------------------------------------------------------


def words(text: str) -> list[list[tuple[str, int, int]]]:
    return [[(t.text, t.at.lineno, t.at.colno) for t in line]
            for line in cfg.tokenize(text)]


def test_tokenize_basic_positions() -> None:
    assert words("a  b\tc\n\n  d # x\n") == [
        [("a", 1, 1), ("b", 1, 4), ("c", 1, 6)], [("d", 3, 3)]]


def test_tokenize_continuation_keeps_physical_positions() -> None:
    assert words("a \\\n  b \\\nc\nd") == [
        [("a", 1, 1), ("b", 2, 3), ("c", 3, 1)], [("d", 4, 1)]]


def test_tokenize_continuation_inside_a_word_joins_it() -> None:
    assert words("ab\\\ncd e") == [[("abcd", 1, 1), ("e", 2, 4)]]


def test_tokenize_comment_ending_in_backslash_continues() -> None:
    assert words("# c \\\nhidden\nshown") == [[("shown", 3, 1)]]


def test_tokenize_backslash_at_end_of_file() -> None:
    assert words("a \\") == [[("a", 1, 1)]]


def test_tokenize_quotes_and_escapes() -> None:
    text = r'''"a b" 'c\d' e\ f \#g "h\"i" x"y"'z' ""'''
    assert [w for w, _, _ in words(text)[0]] == [
        "a b", "c\\d", "e f", "#g", 'h"i', "xyz", ""]


def test_tokenize_comment_in_a_word() -> None:
    assert [w for w, _, _ in words("ab#cd ef")[0]] == ["ab"]


def test_tokenize_lone_backslash_is_literal() -> None:
    # The last backslash continues the line, into nothing; the first one is
    # then alone at the end of the logical line and stays literal.
    assert words("a\\\\") == [[("a\\", 1, 1)]]
    with pytest.raises(ConfigError, match=r"1:3: unterminated double quote"):
        cfg.tokenize('a "b\\')


def test_tokenize_crlf() -> None:
    assert words("a b\r\nc\r\n") == [[("a", 1, 1), ("b", 1, 3)], [("c", 2, 1)]]


def test_tokenize_only_space_and_tab_separate() -> None:
    assert [w for w, _, _ in words("a\x0bb\x0cc")[0]] == ["a\x0bb\x0cc"]


@pytest.mark.parametrize("text, message", [
    ("a 'b", "<string>:1:3: unterminated single quote"),
    ('x\n  "a\\" b', "<string>:2:3: unterminated double quote"),
    ("a \\\n 'b", "<string>:2:2: unterminated single quote"),
])
def test_tokenize_unterminated_quotes(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        cfg.tokenize(text)
    assert str(info.value) == message


def test_bom_is_ignored() -> None:
    config = parse("\ufeffaggregations A\n peer A 127.0.0.1:1 local\n from any to .b\n")
    assert config.aggregations[0].position.colno == 1


# --------------------------------------------------------------------------
# load()
# --------------------------------------------------------------------------


def test_load_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.cfg"
    with pytest.raises(ConfigError) as info:
        load(str(path))
    assert str(info.value) == (f"{path}:1:1: cannot read the configuration file: "
                               "No such file or directory")


def test_load_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r":1:1: cannot read the configuration file: "):
        load(str(tmp_path))


def test_load_accepts_pathlike(tmp_path: Path) -> None:
    path = tmp_path / "a.cfg"
    path.write_text("aggregations A\n peer A 127.0.0.1:1 local\n from any to .b\n")
    assert load(path).path == str(path)


def test_load_decode_error_column_counts_characters(tmp_path: Path) -> None:
    path = tmp_path / "bad.cfg"
    path.write_bytes("# é\n  é".encode() + b"\xc3\x28 x")
    with pytest.raises(ConfigError) as info:
        load(str(path))
    assert (info.value.lineno, info.value.colno) == (2, 4)
    assert info.value.msg == "invalid UTF-8 byte 0xc3 (the file must be UTF-8 encoded)"


# --------------------------------------------------------------------------
# Address
# --------------------------------------------------------------------------


@pytest.mark.parametrize("text, host, port, family", [
    ("192.0.2.1:10000", "192.0.2.1", 10000, socket.AF_INET),
    ("[2001:db8::1]:10000", "2001:db8::1", 10000, socket.AF_INET6),
    ("2001:db8::1:10000", "2001:db8::1", 10000, socket.AF_INET6),
    ("::1:80", "::1", 80, socket.AF_INET6),
    ("[2001:0DB8:0:0::1]:1", "2001:db8::1", 1, socket.AF_INET6),
    ("[::ffff:192.0.2.1]:65535", "::ffff:192.0.2.1", 65535, socket.AF_INET6),
    ("[fe80::1%eth0]:7", "fe80::1%eth0", 7, socket.AF_INET6),
])
def test_address_parse(text: str, host: str, port: int, family: int) -> None:
    address = Address.parse(text)
    assert (address.host, address.port, address.family) == (host, port, family)


@pytest.mark.parametrize("text, kwargs, expected", [
    ("192.0.2.1", {"default_port": 0, "allow_zero_port": True}, Address("192.0.2.1", 0)),
    ("192.0.2.1:0", {"default_port": 0, "allow_zero_port": True}, Address("192.0.2.1", 0)),
    ("[::1]", {"default_port": 514}, Address("::1", 514)),
    ("10.0.0.1", {"default_port": 514}, Address("10.0.0.1", 514)),
])
def test_address_parse_optional_port(text: str, kwargs: dict[str, Any],
                                     expected: Address) -> None:
    assert Address.parse(text, **kwargs) == expected


@pytest.mark.parametrize("text, message", [
    ("localhost:80", "invalid address 'localhost:80': expected an IP address and port "
                     "like 192.0.2.1:10000 or [2001:db8::1]:10000"),
    ("192.0.2.1", "missing port in '192.0.2.1': expected an IP address and port "
                  "like 192.0.2.1:10000 or [2001:db8::1]:10000"),
    ("[::1]", "missing port in '[::1]': expected an IP address and port "
              "like 192.0.2.1:10000 or [2001:db8::1]:10000"),
    ("192.0.2.1:0", "invalid port '0' in '192.0.2.1:0' (expected 1..65535)"),
    ("192.0.2.1:65536", "invalid port '65536' in '192.0.2.1:65536' (expected 1..65535)"),
    ("192.0.2.1:+80", "invalid port '+80' in '192.0.2.1:+80' (expected 1..65535)"),
    ("192.0.2.1:", "invalid port '' in '192.0.2.1:' (expected 1..65535)"),
    ("192.0.2.1:" + "9" * 5000, None),
    ("1.2.3:80", None), ("1.2.3.256:80", None), ("01.2.3.4:80", None),
    ("[192.0.2.1]:80", None), ("[::1]x", None), ("[::1", None), ("2001:db8::1", None),
    ("", None), ("*:80", None), (":80", None),
])
def test_address_parse_errors(text: str, message: str | None) -> None:
    with pytest.raises(ValueError) as info:
        Address.parse(text)
    if message is not None:
        assert str(info.value) == message


def test_address_str() -> None:
    assert str(Address("192.0.2.1", 80)) == "192.0.2.1:80"
    assert str(Address("::1", 80)) == "[::1]:80"
    assert str(Address("192.0.2.1", 0)) == "192.0.2.1:0"
    for text in ("192.0.2.1:80", "[2001:db8::1]:10000"):
        assert str(Address.parse(text)) == text


def test_source_port_zero_only_for_source() -> None:
    text = "global\n source 192.0.2.1:0\naggregations A\n peer A 127.0.0.1:1 local\n" \
           " from any to .b\n"
    assert parse(text).global_.source == Address("192.0.2.1", 0)


# --------------------------------------------------------------------------
# FromRule.output_name (DESIGN.md 3.1)
# --------------------------------------------------------------------------


def rule(suffixes: tuple[str, ...], to: str = ".aggr", accept: bool = False) -> FromRule:
    return FromRule(suffixes, to, accept, HERE)


@pytest.mark.parametrize("name, expected", [
    ("mytable.local", "mytable.aggr"),
    ("mytable", "mytable.aggr"),
    ("mytable.cpu", "mytable.aggr"),
    ("/mytable.local", "/mytable.aggr"),
    ("/mytable", "/mytable.aggr"),
    ("my.table.local", "my.table.aggr"),
    ("mytable.aggr", None),           # an output is never an input
    ("/mytable.aggr", None),
    ("x.aggr.local", "x.aggr.aggr"),  # only the last suffix counts
    (".local", ".aggr"),
    ("a.", "a.aggr"),
    ("", ".aggr"),
])
def test_output_name_any(name: str, expected: str | None) -> None:
    assert rule(()).output_name(name) == expected


@pytest.mark.parametrize("name, expected, accepted", [
    ("mytable1.cpu", "mytable1.aggr", "mytable1.aggr"),
    ("mytable2.proc", "mytable2.aggr", "mytable2.aggr"),
    ("/mytable.cpu", "/mytable.aggr", "/mytable.aggr"),
    ("mytable", None, "mytable.aggr"),
    ("/mytable", None, "/mytable.aggr"),
    ("mytable.local", None, None),
    ("mytable.aggr", None, None),
    ("mytable.cpu.x", None, None),
    ("a.", None, None),
    (".cpu", ".aggr", ".aggr"),
])
def test_output_name_list(name: str, expected: str | None, accepted: str | None) -> None:
    assert rule((".cpu", ".proc")).output_name(name) == expected
    assert rule((".cpu", ".proc"), accept=True).output_name(name) == accepted


def test_output_name_reference_single_level() -> None:
    assert rule((".local",)).output_name("mytable.local") == "mytable.aggr"
    assert rule((".aggr",), ".l2").output_name("mytable.aggr") == "mytable.l2"
    assert rule((".aggr",), ".l2").output_name("mytable.l2") is None


def test_aggregations_output_name_skips_forwarded() -> None:
    config = load(str(DATA / "valid" / "ref_middle_level.cfg"))
    section = config.aggregations[0]
    assert section.output_name("t.local") == "t.aggr"
    assert section.output_name("t") == "t.aggr"
    assert section.output_name("t.l2") is None
    assert section.is_forwarded("t.l2")
    assert not section.is_forwarded("t.aggr")
    assert not section.is_forwarded("l2")


@pytest.mark.parametrize("name, suffix", [
    ("a.b", ".b"), ("a", ""), ("/a.b.c", ".c"), (".x", ".x"), ("a.", "."), ("", "")])
def test_table_suffix(name: str, suffix: str) -> None:
    assert table_suffix(name) == suffix


# --------------------------------------------------------------------------
# Model helpers
# --------------------------------------------------------------------------


def test_aggregations_peer_views() -> None:
    config = load(str(DATA / "valid" / "ref_multilevel_a.cfg"))
    section = config.section("level1")
    assert section is not None and config.section("nope") is None
    assert section.local_peer.name == "A"
    assert [p.name for p in section.remote_peers] == ["AGGR.1", "AGGR.2", "hA.1", "hA.2"]
    assert [p.name for p in section.up_peers] == ["AGGR.1", "AGGR.2"]
    assert [p.name for p in section.down_peers] == ["hA.1", "hA.2"]
    assert {k: [p.name for p in v] for k, v in section.groups.items()} == {
        "1": ["AGGR.1", "AGGR.2"]}
    assert section.peer("hA.1") is section.peers[3]
    assert section.peer("hA.3") is None


def test_groups_ungrouped_up_peers_stand_alone() -> None:
    config = load(str(DATA / "valid" / "ssl_peers.cfg"))
    middle = load(str(DATA / "valid" / "ref_middle_level.cfg"))
    assert list(config.aggregations[0].groups) == ["top"]
    assert list(middle.aggregations[0].groups) == ["peer:upstream"]


def test_local_peer_missing_raises_lookup_error() -> None:
    section = Aggregations("x", (), rule(()), (), HERE)
    with pytest.raises(LookupError):
        section.local_peer


def test_model_is_frozen() -> None:
    config = load(str(DATA / "valid" / "ref_single_level.cfg"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.path = "x"  # type: ignore[misc]
    assert isinstance(config.aggregations, tuple)
    assert isinstance(config.aggregations[0].peers, tuple)


def test_peer_defaults_and_positions() -> None:
    config = parse("aggregations A\n  peer A 127.0.0.1:1 ssl crt  /c ca-file 'x y' local\n"
                   "  from any to .b\n", "f.cfg")
    peer = config.aggregations[0].peers[0]
    assert peer == Peer("A", Address("127.0.0.1", 1), PeerRole.LOCAL, None, True, "/c",
                        "x y", None, Position("f.cfg", 2, 3), Position("f.cfg", 2, 31),
                        Position("f.cfg", 2, 42))


def test_global_defaults_when_absent() -> None:
    config = parse("aggregations A\n peer A 127.0.0.1:1 local\n from any to .b\n")
    assert config.global_ == cfg.EMPTY_GLOBAL
    assert "global" not in dump(config)


def test_cpu_map_value_and_position() -> None:
    config = load(str(DATA / "valid" / "full_global.cfg"))
    assert config.global_.cpu_map == (0, 5, 6, 7, 8)
    assert config.global_.cpu_map_position is not None
    assert (config.global_.cpu_map_position.lineno,
            config.global_.cpu_map_position.colno) == (2, 5)


def test_verify_enum() -> None:
    config = load(str(DATA / "valid" / "ssl_peers.cfg"))
    assert [p.verify for p in config.aggregations[0].peers] == [
        Verify.REQUIRED, Verify.OPTIONAL, Verify.NONE, None, None]


# --------------------------------------------------------------------------
# check_files / check_cpus
# --------------------------------------------------------------------------


def test_check_files(tmp_path: Path) -> None:
    good = tmp_path / "good.pem"
    good.write_text("x")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    text = (f"aggregations A\n"
            f"  peer A 127.0.0.1:1 local ssl crt {good} ca-file {good}\n"
            f"  peer B 127.0.0.1:2 ssl crt {tmp_path}/missing.pem\n"
            f"  peer C 127.0.0.1:3 ssl ca-file {tmp_path}\n"
            f"  peer D 127.0.0.1:4 ssl crt {fifo}\n"
            f"  peer E 127.0.0.1:5 ssl ca-file {good}/x crt {good}\n"
            f"  from any to .b\n")
    errors = check_files(parse(text, "t.cfg"))
    assert [str(e) for e in errors] == [
        f"t.cfg:3:30: cannot read crt file '{tmp_path}/missing.pem': "
        "No such file or directory",
        f"t.cfg:4:34: cannot read ca-file file '{tmp_path}': not a regular file",
        f"t.cfg:5:30: cannot read crt file '{fifo}': not a regular file",
        f"t.cfg:6:34: cannot read ca-file file '{good}/x': Not a directory",
    ]


def test_check_files_unreadable(tmp_path: Path) -> None:
    secret = tmp_path / "secret.pem"
    secret.write_text("x")
    secret.chmod(0)
    if os.access(secret, os.R_OK):
        pytest.skip("running as root: every file is readable")
    config = parse(f"aggregations A\n peer A 127.0.0.1:1 local ssl crt {secret}\n"
                   " from any to .b\n", "t.cfg")
    (error,) = check_files(config)
    assert str(error) == f"t.cfg:2:35: cannot read crt file '{secret}': Permission denied"


def test_check_files_nothing_to_check() -> None:
    assert check_files(load(str(DATA / "valid" / "ref_single_level.cfg"))) == []


def test_check_cpus() -> None:
    config = load(str(DATA / "valid" / "full_global.cfg"))  # cpu-map 0,5-8 at 2:5
    check_cpus(config, set(range(16)))
    with pytest.raises(ConfigError) as info:
        check_cpus(config, {0, 1, 2, 3, 5, 6})
    assert str(info.value) == (f"{config.path}:2:5: CPUs 7-8 are not available "
                               "(available CPUs: 0-3,5-6)")
    with pytest.raises(ConfigError, match=r"CPU 0 is not available \(available CPUs: 5-8\)"):
        check_cpus(config, {5, 6, 7, 8})
    with pytest.raises(ConfigError, match=r"\(available CPUs: none\)"):
        check_cpus(config, set())


def test_check_cpus_without_cpu_map() -> None:
    check_cpus(load(str(DATA / "valid" / "ref_single_level.cfg")), set())


@pytest.mark.parametrize("cpus, text", [
    ([], ""), ([3], "3"), ([0, 1, 2], "0-2"), ([0, 2, 3, 5], "0,2-3,5")])
def test_format_cpu_set(cpus: list[int], text: str) -> None:
    assert cfg.format_cpu_set(cpus) == text


# --------------------------------------------------------------------------
# dump
# --------------------------------------------------------------------------


def test_dump_canonical_text() -> None:
    config = load(str(DATA / "valid" / "quoted_words.cfg"))
    assert dump(config) == (
        "global\n"
        '    stats socket "/tmp/a socket" user haproxy\n'
        '    pidfile "/run/my stktagg.pid"\n'
        "    user haproxy\n"
        "\n"
        "aggregations AGGR\n"
        "    peer A 192.0.2.1:54321\n"
        '    peer up.1 192.0.2.2:54321 up group "g\\"1"\n'
        '    peer AGGR 192.0.2.13:54321 local ssl crt "/etc/ssl/with space.pem" '
        'ca-file "/etc/ssl/back\\\\slash.pem"\n'
        "    from .local to .aggr\n")


@pytest.mark.parametrize("word, quoted", [
    ("plain", "plain"), ("", '""'), ("a b", '"a b"'), ("a#b", '"a#b"'),
    ("it's", '"it\'s"'), ('say "x"', '"say \\"x\\""'), ("back\\", '"back\\\\"'),
    ("tab\there", '"tab\there"'), ("cr\r", '"cr\r"'),
])
def test_quote_word(word: str, quoted: str) -> None:
    assert cfg.quote_word(word) == quoted
    assert [t.text for t in cfg.tokenize(f"x {quoted}")[0]] == ["x", word]


def test_strip_positions() -> None:
    a = parse("aggregations A\n peer A 127.0.0.1:1 local\n from any to .b\n", "a")
    b = parse("\n\naggregations  A\n   peer A 127.0.0.1:1 local\n from any to .b\n", "a")
    assert a != b
    assert strip_positions(a) == strip_positions(b)
    assert strip_positions(a).aggregations[0].position == cfg.NOWHERE


# --------------------------------------------------------------------------
# Properties: parse() returns a Config or raises ConfigError, nothing else
# --------------------------------------------------------------------------

VOCABULARY = [
    "global", "aggregations", "peer", "from", "to", "any", "forward", "local", "up",
    "down", "group", "ssl", "crt", "ca-file", "verify", "none", "required", "cpu-map",
    "source", "stats", "socket", "log", "pidfile", "user", "mode", "level", "admin",
    "accept-no-suffix", ".local", ".aggr", ".a,.b", "0-3", "1,2", "127.0.0.1:1",
    "[::1]:2", "::1:3", "1.2.3.4", "/tmp/x", "unix@x", "stderr", "daemon", "info",
    " ", " ", "\t", "\n", "\n", "\\\n", "#", '"', "'", "\\", ",", ":", ".", "-", "x", "0",
    "\x00", "é", "\r",
]

fragments = st.lists(st.sampled_from(VOCABULARY), max_size=60).map("".join)


def parse_or_config_error(text: str) -> None:
    try:
        config = parse(text)
    except ConfigError as exc:
        assert exc.lineno >= 1 and exc.colno >= 1
        assert exc.path == "<string>"
        return
    assert isinstance(config, Config)
    assert strip_positions(parse(dump(config))) == strip_positions(config)


@settings(max_examples=120, deadline=None)
@given(st.one_of(st.text(max_size=200), fragments))
@example("aggregations A\npeer A 1.2.3.4:5 local\nfrom any to .b")
@example("aggregations A\npeer A 1.2.3.4:5 local\nfrom any to .b\npeer \"\\\0")
@example("global\ncpu-map 0-99999999999999")
@example("aggregations A\npeer A 1.2.3.4:" + "9" * 5000)
@example("global\nstats socket /x mode " + "7" * 5000)
def test_parse_random_text(text: str) -> None:
    parse_or_config_error(text)


VALID_TEXTS = [p.read_text(encoding="utf-8") for p in VALID]


@st.composite
def mutated_valid_text(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(VALID_TEXTS))
    for _ in range(draw(st.integers(1, 4))):
        start = draw(st.integers(0, len(text)))
        end = draw(st.integers(start, min(len(text), start + 12)))
        insert = draw(st.one_of(st.just(""), st.sampled_from(VOCABULARY),
                                st.text(max_size=4)))
        text = text[:start] + insert + text[end:]
    return text


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_valid_text())
def test_parse_mutated_valid_files(text: str) -> None:
    parse_or_config_error(text)


# --------------------------------------------------------------------------
# Property: any model the parser can produce survives dump() and parse()
# --------------------------------------------------------------------------

names = st.text(min_size=1, max_size=8).filter(lambda s: not any(c.isspace() for c in s))
group_ids = names.filter(lambda s: not s.startswith("peer:"))
paths = st.text(min_size=1, max_size=10).filter(lambda s: "\n" not in s)
suffixes = st.text(min_size=1, max_size=5).filter(
    lambda s: not any(c.isspace() or c in ".," for c in s)).map(lambda s: "." + s)
# Hosts in the parser's normal form: IPv6 as the C library writes it (inet_ntop).
hosts = st.ip_addresses().map(lambda ip: socket.inet_ntop(socket.AF_INET6, ip.packed) if ip.version == 6 else str(ip))
addresses = st.builds(Address, hosts, st.integers(1, 65535))


@st.composite
def peers(draw: st.DrawFn, name: str, role: PeerRole) -> Peer:
    ssl = draw(st.booleans())
    maybe = (lambda s: st.none() | s) if ssl else (lambda s: st.none())
    crt, ca_file = draw(maybe(paths)), draw(maybe(paths))
    return Peer(name, draw(addresses), role,
                draw(st.none() | group_ids) if role is PeerRole.UP else None,
                ssl, crt, ca_file, draw(maybe(st.sampled_from(Verify))), HERE,
                crt and HERE, ca_file and HERE)


@st.composite
def sections(draw: st.DrawFn, name: str) -> Aggregations:
    peer_names = draw(st.lists(names, min_size=1, max_size=4, unique=True))
    roles = [PeerRole.LOCAL] + draw(st.lists(st.sampled_from([PeerRole.UP, PeerRole.DOWN]),
                                             min_size=len(peer_names) - 1,
                                             max_size=len(peer_names) - 1))
    order = draw(st.permutations(range(len(peer_names))))
    members = tuple(draw(peers(peer_names[i], roles[i])) for i in order)
    to = draw(suffixes)
    others = st.lists(suffixes.filter(lambda s: s != to), max_size=3, unique=True)
    sources = tuple(draw(others))
    accept = bool(sources) and draw(st.booleans())
    return Aggregations(name, members, FromRule(sources, to, accept, HERE),
                        tuple(draw(others)), HERE)


@st.composite
def configs(draw: st.DrawFn) -> Config:
    section_names = draw(st.lists(names, min_size=1, max_size=3, unique=True))
    sockets = st.builds(
        cfg.StatsSocket, st.none(), addresses, st.none() | st.integers(0, 0o7777),
        st.none() | names, st.none() | names, st.none() | st.sampled_from(cfg.STATS_LEVELS),
        st.just(HERE)) | st.builds(
        cfg.StatsSocket, paths, st.none(), st.none(), st.none(), st.none(), st.none(),
        st.just(HERE))
    levels = st.none() | st.sampled_from(cfg.SYSLOG_LEVELS)
    logs = st.builds(cfg.LogTarget, st.sampled_from(["stderr", "stdout", "/dev/log",
                                                     "192.0.2.1:514", "[::1]:1514"]),
                     st.sampled_from(cfg.SYSLOG_FACILITIES), levels, st.none(), st.just(HERE))
    cpus = draw(st.none() | st.lists(st.integers(0, cfg.MAX_CPU), min_size=1, max_size=6)
                .map(lambda c: tuple(sorted(set(c)))))
    global_ = cfg.GlobalSection(
        cpus, HERE if cpus else None, draw(st.none() | st.builds(Address, hosts,
                                                                 st.integers(0, 65535))),
        tuple(draw(st.lists(sockets, max_size=2))), tuple(draw(st.lists(logs, max_size=2))),
        draw(st.none() | paths), draw(st.none() | names), draw(st.none() | names))
    return Config("<string>", global_, tuple(draw(sections(n)) for n in section_names))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs())
def test_dump_parse_round_trip_of_generated_models(config: Config) -> None:
    assert strip_positions(parse(dump(config))) == strip_positions(config)


# --------------------------------------------------------------------------
# The package (issue 13): one public surface, modules of a readable size
# --------------------------------------------------------------------------

#: What other modules, tools and tests import from ``stktagg.config``.
PUBLIC_NAMES = (
    "Address", "Aggregations", "Config", "ConfigError", "FromRule", "GlobalSection", "LogTarget",
    "Peer", "PeerRole", "Position", "StatsSocket", "Token", "Verify",
    "check_cpus", "check_files", "config_error", "dump", "format_cpu_set", "load", "parse",
    "quote_word", "strip_positions", "table_suffix", "tokenize",
    "EMPTY_GLOBAL", "MAX_CPU", "NOWHERE", "STATS_LEVELS", "SYSLOG_FACILITIES", "SYSLOG_LEVELS",
)
PACKAGE_DIR = Path(cfg.__file__).parent
MAX_MODULE_LINES = 800


def test_package_exposes_the_public_names() -> None:
    missing = [name for name in PUBLIC_NAMES if not hasattr(cfg, name)]
    assert missing == []
    assert sorted(cfg.__all__) == sorted(PUBLIC_NAMES)
    assert cfg.ConfigError is ConfigError
    assert cfg.parse("aggregations a\n    peer A 127.0.0.1:1 local\n    from any to .aggr\n").aggregations


def test_package_is_a_directory_of_small_modules() -> None:
    assert PACKAGE_DIR.name == "config" and (PACKAGE_DIR / "__init__.py").is_file()
    sizes = {p.name: len(p.read_text().splitlines()) for p in PACKAGE_DIR.glob("*.py")}
    assert len(sizes) > 1
    assert {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES} == {}


def test_grammar_comment_names_every_keyword() -> None:
    from stktagg.config import _aggregations_section, _global_section, _parser

    grammar = Path(_parser.__file__).read_text().split("# Grammar", 1)[1].split("\nfrom ", 1)[0]
    keywords = (set(_global_section.GLOBAL_RULES) | set(_global_section.STATS_OPTION_RULES)
                | set(_aggregations_section.AGGREGATIONS_RULES) | set(_aggregations_section.PEER_OPTION_RULES))
    assert sorted(k for k in keywords if f'"{k}"' not in grammar) == []
