"""The configuration's parser: a whole file, from text (or a path) to a :class:`Config`.

A hand-written recursive-descent parser in the style of CPython's
``tomllib/_parser.py``: every grammar rule is a small pure function
``parse_<rule>(line, pos) -> (pos, node)`` over the tokens of one logical
line (``_rules``, ``_global_section``, ``_aggregations_section``), and
every failure goes through :func:`~stktagg.config._model.config_error`,
which builds a :class:`~stktagg.errors.ConfigError` rendered
``file:line:col: message`` (1-based line and column of the offending
token). The result is the immutable model of ``_model``. The checks that
span sections are here: a ``history`` line needs the global ``history-file``.

This module does no I/O except in :func:`load` (read the file).
"""

# Grammar (one logical line per rule; upper case names are single words)
# -----------------------------------------------------------------------
#   config        = { global-section | aggregations-section }
#                   (at most one global section, at least one aggregations;
#                   a line before the first section is an error; "history" lines
#                   need "history-file")
#   global-section = "global" { global-line }
#   global-line   = "cpu-map" CPUSET                         (once)
#                 | "source" ADDRESS                         (once; port optional)
#                 | "stats" "socket" SOCKET { stats-option }  (repeatable)
#                 | "log" LOG-TARGET [ FACILITY [ LEVEL [ LEVEL ] ] ]  (repeatable)
#                 | "pidfile" PATH | "user" NAME | "group" NAME  (once each)
#                 | "max-entries" N | "max-tables" N | "peer-address-check"
#                 | "http" ADDRESS | "prometheus" ADDRESS     (once each; port required;
#                                                             the same listener: one of the two)
#                 | "history-file" PATH                       (once; needed by "history")
#   stats-option  = "mode" OCTAL | "user" NAME | "group" NAME
#                 | "level" ( "user" | "operator" | "admin" )
#                   (any order, each at most once)
#   SOCKET        = PATH ("/..." | "./..." | "unix@...") | ADDRESS (port required)
#   LOG-TARGET    = "stderr" | "stdout" | "/..." | ADDRESS (port default 514)
#   FACILITY      = "kern" | "user" | ... | "local7"  (syslog's names; default "daemon")
#   LEVEL         = "emerg" | "alert" | "crit" | "err" | "warning" | "notice"
#                 | "info" | "debug"                  (the level, then the minimum level)
#   aggregations-section = "aggregations" ID { aggregations-line }
#                   (ids unique; exactly one "local" peer, or with "shards" at least one
#                   and each with "shard"; exactly one "from" line)
#   aggregations-line
#                 = "peer" NAME ADDRESS { peer-option }  (names unique; port required)
#                 | "from" "any" "to" SUFFIX
#                 | "from" SUFFIX-LIST "to" SUFFIX [ "accept-no-suffix" ]
#                   (the "to" suffix is not in the list)
#                 | "forward" SUFFIX-LIST             (once; not the "to" suffix)
#                 | "dynamic-peers" N                 (once; default 0: declared peers only)
#                 | "shards" N                        (once, anywhere in the section; 1..64)
#                 | "history" SUFFIX "to" SUFFIX "stat" STAT "window" TIME [ "offset" TIME ]
#                   (repeatable; the first suffix is the "from" line's "to" suffix, the
#                   second none of the section's others: not the "to" suffix, a "from"
#                   or "forward" suffix, or another "history" line's; window > 0,
#                   window + offset at most 400d, offset default 0; not with "shards")
#   peer-option   = "local" | "up" | "down"           (at most one; none means "down")
#                 | "group" ID                        (up peers only; not "peer:...")
#                 | "shard" N                         (needs "shards"; 1..shards; one peer
#                                                      per shard, local or not)
#                 | "ssl" | "crt" PATH | "ca-file" PATH
#                 | "verify" ( "none" | "optional" | "required" )
#                   (any order, each at most once; "crt", "ca-file", "verify" need "ssl")
#   SUFFIX-LIST   = SUFFIX { "," SUFFIX }             (no empty item, no repeat)
#   SUFFIX        = "." 1*( any character but ".", "," and whitespace )
#   CPUSET        = CPU [ "-" CPU ] { "," CPU [ "-" CPU ] }   (CPU 0..4095, ranges upwards)
#   ADDRESS       = IPV4 [ ":" PORT ] | "[" IPV6 "]" [ ":" PORT ] | IPV6 ":" PORT
#   STAT          = "avg" | "max" | "min" | "p" 1..100  (no leading zero: p90, p100)
#   TIME          = 1*DIGIT [ "ms" | "s" | "m" | "h" | "d" ]  (HAProxy's; no unit: ms)
#   N             = 1*DIGIT                           (at least 1)
#   OCTAL         = 1*5 octal digits                  (at most 7777)
#   NAME, ID      = a word without whitespace; PATH = a non-empty word

from __future__ import annotations

import os

from stktagg.errors import ConfigError

from ._aggregations_section import AGGREGATIONS_RULES, parse_aggregations_section
from ._global_section import GLOBAL_RULES, parse_global_section
from ._lexer import Line, Token, tokenize
from ._model import EMPTY_GLOBAL, Aggregations, Config, GlobalSection, Position, config_error


def parse_config(lines: tuple[Line, ...], path: str) -> Config:
    """Parse the sections of a tokenized file."""
    global_: GlobalSection | None = None
    global_at: Position | None = None
    sections: dict[str, Aggregations] = {}
    pos = 0
    while pos < len(lines):
        keyword = lines[pos][0]
        if keyword.text == "global":
            if global_at is not None:
                raise config_error(keyword.at, f"duplicate global section "
                                               f"(first at line {global_at.lineno})")
            global_at = keyword.at
            pos, global_ = parse_global_section(lines, pos)
        elif keyword.text == "aggregations":
            taken = {name: s.position for name, s in sections.items()}
            pos, section = parse_aggregations_section(lines, pos, taken)
            sections[section.name] = section
        else:
            raise outside_section_error(keyword)
    if not sections:
        raise config_error(Position(path, 1, 1), "no aggregations section")
    config = Config(path, global_ or EMPTY_GLOBAL, tuple(sections.values()))
    check_history_file(config)
    return config


def check_history_file(config: Config) -> None:
    """A ``history`` line needs ``history-file`` (the global section may come after it)."""
    if config.global_.history_file is not None:
        return
    first = next((line for section in config.aggregations for line in section.history), None)
    if first is not None:
        raise config_error(first.position, "history needs 'history-file' in the global section")


def outside_section_error(keyword: Token) -> ConfigError:
    """The error for a line that comes before any section."""
    if keyword.text in GLOBAL_RULES or keyword.text in AGGREGATIONS_RULES:
        return config_error(keyword.at, f"'{keyword.text}' is outside any section (start "
                                        "a 'global' or 'aggregations' section first)")
    return config_error(keyword.at, f"unknown section '{keyword.text}' "
                                    "(expected global or aggregations)")


def parse(text: str, path: str = "<string>") -> Config:
    """Parse configuration *text*; *path* is only used in error messages.

    Raises ConfigError (``path:line:col: message``) on any invalid input.
    A leading byte order mark is ignored.
    """
    return parse_config(tokenize(text.removeprefix("\ufeff"), path), path)


def load(path: str | os.PathLike[str]) -> Config:
    """Read and parse the UTF-8 configuration file at *path*.

    An unreadable file is reported at 1:1, a byte that is not UTF-8 at its
    own line and column.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as exc:
        raise config_error(Position(path, 1, 1), "cannot read the configuration file: "
                                                 f"{exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise decode_error(path, data, exc) from None
    return parse(text, path)


def decode_error(path: str, data: bytes, exc: UnicodeDecodeError) -> ConfigError:
    """Locate the first byte that is not UTF-8."""
    line_start = data.rfind(b"\n", 0, exc.start) + 1
    lineno = data.count(b"\n", 0, exc.start) + 1
    colno = len(data[line_start:exc.start].decode("utf-8")) + 1
    return config_error(Position(path, lineno, colno),
                        f"invalid UTF-8 byte 0x{data[exc.start]:02x} "
                        "(the file must be UTF-8 encoded)")

