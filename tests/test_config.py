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
    GlobalSection,
    HistoryLine,
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
#: How far back a history line may look (window + offset, ms): 400 days.
MAX_LOOK_BACK = 400 * 86_400_000
#: Fields newer than the data files (issue 18): left out at their default, so the files need not
#: spell them out; a file that uses them holds them.
NEWER_FIELDS = frozenset({"history_file", "history"})


def to_jsonable(value: Any) -> Any:
    """The model as plain JSON data, without positions (nor NEWER_FIELDS at their default)."""
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
            and not (f.name in NEWER_FIELDS and getattr(value, f.name) == f.default)
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
    "history", "history-file", "stat", "window", "offset", "avg", "p90", "1h", "90s", "1500",
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
    forward = tuple(draw(others))
    taken = {to, *sources, *forward}
    targets = draw(st.lists(suffixes.filter(lambda s: s not in taken), max_size=2, unique=True))
    return Aggregations(name, members, FromRule(sources, to, accept, HERE), forward, HERE,
                        history=tuple(draw(history_lines(to, target)) for target in targets))


stats = st.sampled_from(["avg", "max", "min"]) | st.integers(1, 100).map(lambda n: f"p{n}")
# Times of every unit: whole days, hours... and odd milliseconds.
times = st.sampled_from([1, 1000, 60_000, 3_600_000, 86_400_000]).flatmap(
    lambda unit: st.integers(1, MAX_LOOK_BACK // unit).map(lambda n: n * unit))


@st.composite
def history_lines(draw: st.DrawFn, source: str, target: str) -> HistoryLine:
    window = draw(times)
    offset = draw(st.just(0) | times.filter(lambda t: t <= MAX_LOOK_BACK - window))
    return HistoryLine(source, target, draw(stats), window, offset, HERE)


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
    aggregations = tuple(draw(sections(n)) for n in section_names)
    needed = any(section.history for section in aggregations)
    history_file = draw(paths if needed else st.none() | paths)
    global_ = cfg.GlobalSection(
        cpus, HERE if cpus else None, draw(st.none() | st.builds(Address, hosts,
                                                                 st.integers(0, 65535))),
        tuple(draw(st.lists(sockets, max_size=2))), tuple(draw(st.lists(logs, max_size=2))),
        draw(st.none() | paths), draw(st.none() | names), draw(st.none() | names),
        history_file=history_file, history_file_position=history_file and HERE)
    return Config("<string>", global_, aggregations)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs())
def test_dump_parse_round_trip_of_generated_models(config: Config) -> None:
    assert strip_positions(parse(dump(config))) == strip_positions(config)


# --------------------------------------------------------------------------
# History lines (issue 18): "history-file" in global, "history" in a section
# --------------------------------------------------------------------------

HISTORY_BASE = (
    "global\n"
    "    history-file /var/lib/stktagg/history.db\n"
    "aggregations agg\n"
    "    peer A 127.0.0.1:1 local\n"
    "    from .local,.cpu to .aggr\n"
    "    forward .l2\n"
)  # a history line added to it is line 7, its keyword at column 5


def error_of(text: str) -> str:
    """The ``path:line:col: message`` of parsing *text* (which must fail)."""
    with pytest.raises(ConfigError) as info:
        parse(text)
    error = info.value
    assert f"{error.path}:{error.lineno}:{error.colno}: {error.msg}" == str(error)
    return str(error)


def history_of(*lines: str) -> tuple[HistoryLine, ...]:
    """The history lines parsed from HISTORY_BASE and *lines* (indented 4)."""
    text = HISTORY_BASE + "".join(f"    {line}\n" for line in lines)
    return parse(text, "h.cfg").aggregations[0].history


def test_history_lines_model_and_positions() -> None:
    config = parse(HISTORY_BASE + "    history .aggr to .yday stat avg window 1h offset 1d\n"
                   "    history .aggr to .peak stat max window 90s\n"
                   "      history   .aggr  to  .p90  stat  p90  window  1500ms  offset 0\n", "h.cfg")
    assert config.global_.history_file == "/var/lib/stktagg/history.db"
    assert config.global_.history_file_position == Position("h.cfg", 2, 18)
    assert config.aggregations[0].history == (
        HistoryLine(".aggr", ".yday", "avg", 3_600_000, 86_400_000, Position("h.cfg", 7, 5)),
        HistoryLine(".aggr", ".peak", "max", 90_000, 0, Position("h.cfg", 8, 5)),
        HistoryLine(".aggr", ".p90", "p90", 1500, 0, Position("h.cfg", 9, 7)),
    )


def test_history_defaults_without_the_directives() -> None:
    config = parse("aggregations A\n peer A 127.0.0.1:1 local\n from any to .b\n")
    assert config.aggregations[0].history == ()
    assert config.global_.history_file is None and config.global_.history_file_position is None
    assert history_of() == ()


def test_history_offset_defaults_to_zero() -> None:
    (line,) = history_of("history .aggr to .now stat min window 10m")
    assert (line.window_ms, line.offset_ms) == (600_000, 0)


@pytest.mark.parametrize("text, ms", [
    ("1500", 1500), ("1500ms", 1500), ("1ms", 1), ("90s", 90_000), ("5m", 300_000), ("2h", 7_200_000),
    ("1d", 86_400_000), ("010s", 10_000), ("400d", MAX_LOOK_BACK), ("34560000000ms", MAX_LOOK_BACK),
])
def test_history_time_units(text: str, ms: int) -> None:
    (line,) = history_of(f"history .aggr to .h stat avg window {text}")
    assert line.window_ms == ms
    if ms < MAX_LOOK_BACK:  # the same words as an offset (window + offset is at most 400d)
        (line,) = history_of(f"history .aggr to .h stat avg window 1ms offset {text}")
        assert line.offset_ms == ms


@pytest.mark.parametrize("text", ["0", "0ms", "0s", "0d", "000"])
def test_history_offset_may_be_zero(text: str) -> None:
    (line,) = history_of(f"history .aggr to .h stat avg window 1h offset {text}")
    assert line.offset_ms == 0


@pytest.mark.parametrize("stat", ["avg", "max", "min", "p1", "p9", "p50", "p90", "p99", "p100"])
def test_history_statistics_are_kept_as_written(stat: str) -> None:
    (line,) = history_of(f"history .aggr to .h stat {stat} window 1h")
    assert line.stat == stat


def test_history_lines_may_come_before_from_and_with_from_any() -> None:
    text = ("aggregations agg\n    history .out to .y stat avg window 1h\n    peer A 127.0.0.1:1 local\n"
            "    from any to .out\n    history .out to .z stat max window 1h\n"
            "global\n    history-file h.db\n")  # the global section may even come last
    section = parse(text).aggregations[0]
    assert [(line.source, line.target) for line in section.history] == [(".out", ".y"), (".out", ".z")]


def test_history_in_two_sections_may_reuse_a_suffix() -> None:
    text = HISTORY_BASE + "    history .aggr to .y stat avg window 1h\n" + (
        "aggregations other\n    peer B 127.0.0.1:2 local\n    from .x to .aggr\n"
        "    history .aggr to .y stat avg window 1h\n")
    assert [len(section.history) for section in parse(text).aggregations] == [1, 1]


def test_history_dump_text() -> None:
    config = parse(HISTORY_BASE + "    history .aggr to .yday stat avg window 1h offset 1d\n"
                   "    history .aggr to .peak stat p90 window 90000 offset 0s\n"
                   "    history .aggr to .odd stat min window 1500 offset 61s\n")
    assert dump(config) == (
        "global\n"
        "    history-file /var/lib/stktagg/history.db\n"
        "\n"
        "aggregations agg\n"
        "    peer A 127.0.0.1:1 local\n"
        "    from .local,.cpu to .aggr\n"
        "    forward .l2\n"
        "    history .aggr to .yday stat avg window 1h offset 1d\n"
        "    history .aggr to .peak stat p90 window 90s\n"
        "    history .aggr to .odd stat min window 1500ms offset 61s\n")
    assert strip_positions(parse(dump(config))) == strip_positions(config)


def test_history_file_dump_quotes_its_path() -> None:
    config = parse('global\n    history-file "/var/lib/my stktagg/h.db"\n'
                   "aggregations A\n    peer A 127.0.0.1:1 local\n    from any to .b\n")
    assert '    history-file "/var/lib/my stktagg/h.db"\n' in dump(config)
    assert strip_positions(parse(dump(config))) == strip_positions(config)


@pytest.mark.parametrize("ms, text", [
    (1, "1ms"), (1500, "1500ms"), (1000, "1s"), (90_000, "90s"), (60_000, "1m"), (5_400_000, "90m"),
    (3_600_000, "1h"), (90_000_000, "25h"), (86_400_000, "1d"), (MAX_LOOK_BACK, "400d"), (0, "0"),
])
def test_format_time(ms: int, text: str) -> None:
    from stktagg.config._model import format_time

    assert format_time(ms) == text


@pytest.mark.parametrize("line, col, message", [
    # missing words and values (reported at the word that needs them)
    ("history", 5, "'history' needs the output suffix of the 'from' line, like .aggr"),
    ("history .aggr", 5, "'history' needs 'to' and a history suffix after '.aggr'"),
    ("history .aggr into .y stat avg window 1h", 19, "expected 'to', found 'into'"),
    ("history .aggr to", 19, "'to' needs a history suffix like .yday"),
    ("history .aggr to .y", 5, "'history' needs 'stat' and a statistic after '.y'"),
    ("history .aggr to .y avg window 1h", 25, "expected 'stat', found 'avg'"),
    ("history .aggr to .y stat", 25, "'stat' needs a statistic: avg, max, min or p1..p100"),
    ("history .aggr to .y stat avg", 5, "'history' needs 'window' and a time after 'avg'"),
    ("history .aggr to .y stat avg 1h", 34, "expected 'window', found '1h'"),
    ("history .aggr to .y stat avg offset 1d window 1h", 34, "expected 'window', found 'offset'"),
    ("history .aggr to .y stat avg window", 34, "'window' needs a time like 1h"),
    ("history .aggr to .y stat avg window ''", 41, "'window' needs a time like 1h, not an empty word"),
    ("history .aggr to .y stat avg window 1h offset", 44, "'offset' needs a time like 1d"),
    # trailing words
    ("history .aggr to .y stat avg window 1h ofset 1d", 44,
     "unexpected extra argument 'ofset' to 'history' (expected 'offset' and a time, or the end of the line)"),
    ("history .aggr to .y stat avg window 1h offset 1d 2d", 54, "unexpected extra argument '2d' to 'history'"),
    # statistics
    ("history .aggr to .y stat mean window 1h", 30, "unknown statistic 'mean' (expected avg, max, min or p1..p100)"),
    ("history .aggr to .y stat p0 window 1h", 30, "unknown statistic 'p0' (expected avg, max, min or p1..p100)"),
    ("history .aggr to .y stat p101 window 1h", 30, "unknown statistic 'p101' (expected avg, max, min or p1..p100)"),
    ("history .aggr to .y stat p09 window 1h", 30, "unknown statistic 'p09' (expected avg, max, min or p1..p100)"),
    ("history .aggr to .y stat P90 window 1h", 30, "unknown statistic 'P90' (expected avg, max, min or p1..p100)"),
    ("history .aggr to .y stat p window 1h", 30, "unknown statistic 'p' (expected avg, max, min or p1..p100)"),
    ("history .aggr to .y stat AVG window 1h", 30, "unknown statistic 'AVG' (expected avg, max, min or p1..p100)"),
    # windows
    ("history .aggr to .y stat avg window 0", 41, "'window' expects a time from 1ms to 400d, not '0'"),
    ("history .aggr to .y stat avg window 0s", 41, "'window' expects a time from 1ms to 400d, not '0s'"),
    ("history .aggr to .y stat avg window 401d", 41, "'window' expects a time from 1ms to 400d, not '401d'"),
    ("history .aggr to .y stat avg window 34560000001", 41,
     "'window' expects a time from 1ms to 400d, not '34560000001'"),
    ("history .aggr to .y stat avg window " + "9" * 5000, 41,
     f"'window' expects a time from 1ms to 400d, not '{'9' * 5000}'"),
    ("history .aggr to .y stat avg window 1x", 41, "invalid time '1x' for 'window' (expected a whole number and "
     "an optional unit ms, s, m, h or d (none: ms), like 90s or 1h)"),
    ("history .aggr to .y stat avg window 1.5s", 41, "invalid time '1.5s' for 'window' (expected a whole number "
     "and an optional unit ms, s, m, h or d (none: ms), like 90s or 1h)"),
    ("history .aggr to .y stat avg window -1s", 41, "invalid time '-1s' for 'window' (expected a whole number "
     "and an optional unit ms, s, m, h or d (none: ms), like 90s or 1h)"),
    ("history .aggr to .y stat avg window 10us", 41, "invalid time '10us' for 'window' (expected a whole number "
     "and an optional unit ms, s, m, h or d (none: ms), like 90s or 1h)"),
    ("history .aggr to .y stat avg window 1H", 41, "invalid time '1H' for 'window' (expected a whole number "
     "and an optional unit ms, s, m, h or d (none: ms), like 90s or 1h)"),
    ("history .aggr to .y stat avg window 1sm", 41, "invalid time '1sm' for 'window' (expected a whole number "
     "and an optional unit ms, s, m, h or d (none: ms), like 90s or 1h)"),
    ("history .aggr to .y stat avg window h", 41, "invalid time 'h' for 'window' (expected a whole number "
     "and an optional unit ms, s, m, h or d (none: ms), like 90s or 1h)"),
    ("history .aggr to .y stat avg window ١s", 41, "invalid time '١s' for 'window' (expected a whole number "
     "and an optional unit ms, s, m, h or d (none: ms), like 90s or 1h)"),
    # offsets
    ("history .aggr to .y stat avg window 1h offset 1y", 51, "invalid time '1y' for 'offset' (expected a whole "
     "number and an optional unit ms, s, m, h or d (none: ms), like 90s or 1h)"),
    ("history .aggr to .y stat avg window 1h offset -1d", 51, "invalid time '-1d' for 'offset' (expected a whole "
     "number and an optional unit ms, s, m, h or d (none: ms), like 90s or 1h)"),
    ("history .aggr to .y stat avg window 1h offset 401d", 51, "'offset' expects a time from 0 to 400d, not '401d'"),
    ("history .aggr to .y stat avg window 1h offset 400d", 51,
     "'window 1h' and 'offset 400d' look back over 400d (window + offset is at most 400d)"),
    ("history .aggr to .y stat avg window 200d offset 4800h1", 53, "invalid time '4800h1' for 'offset' (expected "
     "a whole number and an optional unit ms, s, m, h or d (none: ms), like 90s or 1h)"),
    ("history .aggr to .y stat avg window 200d offset 4801h", 53,
     "'window 200d' and 'offset 4801h' look back over 400d (window + offset is at most 400d)"),
    # suffixes that are not suffixes (the checks of 'from')
    ("history aggr to .y stat avg window 1h", 13,
     "invalid suffix 'aggr': a suffix is a '.' followed by at least one character, like .local"),
    ("history . to .y stat avg window 1h", 13,
     "invalid suffix '.': a suffix is a '.' followed by at least one character, like .local"),
    ("history .aggr,.cpu to .y stat avg window 1h", 13,
     "invalid suffix '.aggr,.cpu': a single suffix is expected here, not a list"),
    ("history .aggr to .y.z stat avg window 1h", 22,
     "invalid suffix '.y.z': a suffix has a single '.' (a table's suffix starts at its last '.')"),
    ("history .aggr to 'y d' stat avg window 1h", 22,
     "invalid suffix 'y d': a suffix is a '.' followed by at least one character, like .local"),
    ("history .aggr to '.y d' stat avg window 1h", 22, "invalid suffix '.y d': whitespace is not allowed"),
    # the source is the section's output, the target no other suffix of the section
    ("history .local to .y stat avg window 1h", 13, "history source '.local' is not the output suffix of the "
     "'from' line (line 5): expected '.aggr' (history is kept of the aggregates)"),
    ("history .l2 to .y stat avg window 1h", 13, "history source '.l2' is not the output suffix of the "
     "'from' line (line 5): expected '.aggr' (history is kept of the aggregates)"),
    ("history .yday to .y stat avg window 1h", 13, "history source '.yday' is not the output suffix of the "
     "'from' line (line 5): expected '.aggr' (history is kept of the aggregates)"),
    ("history .aggr to .aggr stat avg window 1h", 22,
     "history suffix '.aggr' is the output suffix of the 'from' line (line 5)"),
    ("history .aggr to .cpu stat avg window 1h", 22,
     "history suffix '.cpu' is an input suffix of the 'from' line (line 5)"),
    ("history .aggr to .local stat avg window 1h", 22,
     "history suffix '.local' is an input suffix of the 'from' line (line 5)"),
    ("history .aggr to .l2 stat avg window 1h", 22, "history suffix '.l2' is a 'forward' suffix (line 6)"),
])
def test_history_line_errors(line: str, col: int, message: str) -> None:
    assert error_of(HISTORY_BASE + f"    {line}\n") == f"<string>:7:{col}: {message}"


def test_history_duplicate_suffix_is_reported_at_the_second_line() -> None:
    text = HISTORY_BASE + ("    history .aggr to .yday stat avg window 1h offset 1d\n"
                           "    history .aggr to .peak stat max window 1h\n"
                           "    history .aggr to  .yday stat min window 2h\n")
    assert error_of(text) == "<string>:9:23: duplicate history suffix '.yday' (first at line 7)"


def test_history_checks_see_lines_after_them() -> None:
    # 'from' and 'forward' after the history lines: the suffixes are checked once the section is read
    text = ("global\n    history-file h.db\naggregations agg\n    history .aggr to .l2 stat avg window 1h\n"
            "    peer A 127.0.0.1:1 local\n    from any to .aggr\n    forward .l2\n")
    assert error_of(text) == "<string>:4:22: history suffix '.l2' is a 'forward' suffix (line 7)"
    text = ("global\n    history-file h.db\naggregations agg\n    history .local to .y stat avg window 1h\n"
            "    peer A 127.0.0.1:1 local\n    from .local to .aggr\n")
    assert error_of(text) == ("<string>:4:13: history source '.local' is not the output suffix of the 'from' "
                              "line (line 6): expected '.aggr' (history is kept of the aggregates)")


def test_history_without_history_file() -> None:
    body = ("aggregations agg\n    peer A 127.0.0.1:1 local\n    from any to .aggr\n"
            "    history .aggr to .y stat avg window 1h\n    history .aggr to .z stat max window 1h\n")
    assert error_of(body) == "<string>:4:5: history needs 'history-file' in the global section"
    assert error_of("global\n    pidfile /run/x.pid\n" + body) == (
        "<string>:6:5: history needs 'history-file' in the global section")
    # the first history line of the file, whatever section it is in
    first_without = "aggregations nohist\n    peer A 127.0.0.1:1 local\n    from any to .aggr\n"
    assert error_of(first_without + body.replace("agg\n", "agg2\n", 1)) == (
        "<string>:7:5: history needs 'history-file' in the global section")


def test_history_with_shards_is_refused() -> None:
    text = ("global\n    history-file h.db\naggregations agg\n    peer A.1 127.0.0.1:1 local shard 1\n"
            "    from any to .aggr\n    history .aggr to .y stat avg window 1h\n"
            "    history .aggr to .z stat max window 1h\n    shards 1\n")
    assert error_of(text) == "<string>:6:5: history is not supported with 'shards' yet ('shards 1' at line 8)"


@pytest.mark.parametrize("line, message", [
    ("history-file", "<string>:2:5: 'history-file' needs a path"),
    ("history-file ''", "<string>:2:18: 'history-file' needs a path, not an empty word"),
    ("history-file a b", "<string>:2:20: unexpected extra argument 'b' to 'history-file'"),
    ("history-file a\n    history-file b", "<string>:3:5: duplicate 'history-file' (already set at line 2)"),
])
def test_history_file_errors(line: str, message: str) -> None:
    text = f"global\n    {line}\naggregations A\n    peer A 127.0.0.1:1 local\n    from any to .b\n"
    assert error_of(text) == message


def test_unknown_keywords_name_the_history_directives() -> None:
    assert "http, prometheus, history-file)" in error_of("global\n    histroy-file x\n")
    assert "shards, history)" in error_of("aggregations A\n    histroy .a to .b\n")


# --------------------------------------------------------------------------
# The package (issue 13): one public surface, modules of a readable size
# --------------------------------------------------------------------------

#: What other modules, tools and tests import from ``stktagg.config``.
PUBLIC_NAMES = (
    "Address", "Aggregations", "Config", "ConfigError", "FromRule", "GlobalSection", "HistoryLine", "LogTarget",
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


# --------------------------------------------------------------------------
# Issue 19: ``http`` serves the dashboard and the metrics; ``prometheus`` is its alias
# --------------------------------------------------------------------------

_HTTP_TAIL = "aggregations A\n    peer A 127.0.0.1:1 local\n    from any to .b\n"


@pytest.mark.parametrize("keyword", ["http", "prometheus"])
def test_http_and_its_alias_set_the_one_listener(keyword: str) -> None:
    config = parse(f"global\n    {keyword} 127.0.0.1:9100\n" + _HTTP_TAIL)
    assert (config.global_.http.host, config.global_.http.port) == ("127.0.0.1", 9100)
    assert "    http 127.0.0.1:9100\n" in dump(config)


@pytest.mark.parametrize("lines, message", [
    ("http 127.0.0.1:1\n    prometheus 127.0.0.1:2",
     "<string>:3:5: duplicate 'prometheus' (already set at line 2: 'http' is the same listener)"),
    ("prometheus 127.0.0.1:1\n    http 127.0.0.1:2",
     "<string>:3:5: duplicate 'http' (already set at line 2: 'prometheus' is the same listener)"),
    ("http 127.0.0.1:1\n    http 127.0.0.1:2", "<string>:3:5: duplicate 'http' (already set at line 2)"),
    ("http", "<string>:2:5: 'http' needs an address like 127.0.0.1:9100"),
])
def test_http_errors(lines: str, message: str) -> None:
    assert error_of(f"global\n    {lines}\n" + _HTTP_TAIL) == message
