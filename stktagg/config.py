"""The aggregator's configuration file: tokenizer, parser, model, dumper.

A hand-written recursive-descent parser in the style of CPython's
``tomllib/_parser.py``: every grammar rule is a small pure function
``parse_<rule>(line, pos) -> (pos, node)`` over the tokens of one logical
line, and every failure goes through :func:`config_error`, which builds a
:class:`~stktagg.errors.ConfigError` rendered ``file:line:col: message``
(1-based line and column of the offending token). The result is an
immutable model of frozen dataclasses.

This module imports nothing from stktagg but ``errors``, and does no I/O
except in :func:`load` (read the file) and :func:`check_files` (probe the
TLS files named in the configuration).
"""

# Lexical rules (HAProxy style)
# -----------------------------
# - A physical line whose very last character is a backslash continues on the
#   next physical line; the backslash is removed and nothing is inserted. This
#   happens before anything else (as in HAProxy and C), so a comment ending in
#   a backslash swallows the next line too. A trailing "\r" (CRLF files) is
#   dropped first.
# - A logical line is split into words on spaces and tabs.
# - "#" starts a comment that runs to the end of the logical line, even in the
#   middle of a word, unless it is quoted or escaped ("\#").
# - "..." and '...' group a word (the quotes are removed; quoted and unquoted
#   parts next to each other form one word). Outside single quotes, "\" makes
#   the next character literal. A lone "\" at the very end stays literal.
# - Every token keeps the physical line and column (a tab is one column) of
#   its first character, so errors on continued lines point at the right place.
# - Keywords are case-sensitive.
#
# Grammar (one logical line per rule; upper case names are single words)
# -----------------------------------------------------------------------
#   config        = { global-section | aggregations-section }
#                   (at most one global section, at least one aggregations)
#   global-section = "global" { global-line }
#   global-line   = "cpu-map" CPUSET                         (once)
#                 | "source" ADDRESS                         (once; port optional)
#                 | "stats" "socket" SOCKET { stats-option }  (repeatable)
#                 | "log" LOG-TARGET [ FACILITY [ LEVEL [ LEVEL ] ] ]  (repeatable)
#                 | "pidfile" PATH | "user" WORD | "group" WORD  (once each)
#                 | "max-entries" N | "max-tables" N | "peer-address-check"
#                 | "prometheus" IP:PORT  (once each)
#   stats-option  = "mode" OCTAL | "user" WORD | "group" WORD
#                 | "level" ( "user" | "operator" | "admin" )
#   SOCKET        = PATH ("/..." | "./..." | "unix@...") | ADDRESS (port required)
#   LOG-TARGET    = "stderr" | "stdout" | "/..." | ADDRESS (port default 514)
#   aggregations-section = "aggregations" ID { aggregations-line }
#   aggregations-line
#                 = "peer" NAME ADDRESS { peer-option }
#                 | "from" ( "any" | SUFFIX-LIST ) "to" SUFFIX [ "accept-no-suffix" ]
#                 | "forward" SUFFIX-LIST
#   peer-option   = "local" | "up" | "down" | "group" ID | "ssl"
#                 | "crt" PATH | "ca-file" PATH
#                 | "verify" ( "none" | "optional" | "required" )
#   SUFFIX-LIST   = SUFFIX { "," SUFFIX }
#   SUFFIX        = "." 1*( any character but ".", "," and whitespace )
#   CPUSET        = CPU [ "-" CPU ] { "," CPU [ "-" CPU ] }
#   ADDRESS       = IPV4 [ ":" PORT ] | "[" IPV6 "]" [ ":" PORT ] | IPV6 ":" PORT

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import os
import socket
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from stktagg.errors import ConfigError

__all__ = [
    "Address",
    "Aggregations",
    "Config",
    "FromRule",
    "GlobalSection",
    "LogTarget",
    "Peer",
    "PeerRole",
    "Position",
    "StatsSocket",
    "Token",
    "Verify",
    "check_cpus",
    "check_files",
    "config_error",
    "dump",
    "load",
    "parse",
    "strip_positions",
    "table_suffix",
    "tokenize",
]

BLANKS = frozenset(" \t")
WORD_ENDS = BLANKS | frozenset("#")
QUOTES = frozenset("\"'")
DIGITS = frozenset("0123456789")
OCTAL_DIGITS = frozenset("01234567")
# Characters that force dump() to quote a word.
SPECIAL_CHARS = WORD_ENDS | QUOTES | frozenset("\\")

SECTION_KEYWORDS = frozenset({"global", "aggregations"})
ROLE_KEYWORDS = frozenset({"local", "up", "down"})
SSL_OPTIONS = frozenset({"crt", "ca-file", "verify"})
REPEATABLE_GLOBALS = frozenset({"stats", "log"})
LOG_STREAMS = frozenset({"stderr", "stdout"})
SOCKET_PATH_PREFIXES = ("/", "./", "unix@")

# Kept as tuples: error messages list them in this order.
SYSLOG_FACILITIES = (
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp",
    "cron", "auth2", "ftp", "ntp", "audit", "alert", "cron2",
    "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
)
STATS_LEVELS = ("user", "operator", "admin")
SYSLOG_LEVELS = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")

DEFAULT_LOG_FACILITY = "daemon"
DEFAULT_LOG_PORT = 514
MAX_CPU = 4095
MAX_MODE = 0o7777
GROUP_KEY_PREFIX = "peer:"

PEER_ADDRESS_HINT = "like 192.0.2.1:10000 or [2001:db8::1]:10000"


# --------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Position:
    """Where a token starts: file path, 1-based line and column."""

    path: str
    lineno: int
    colno: int


#: Stands for "no position" in :func:`strip_positions` output.
NOWHERE = Position("", 0, 0)


class PeerRole(enum.Enum):
    """How a peer relates to this aggregator (DESIGN.md §3.4)."""

    LOCAL = "local"
    UP = "up"
    DOWN = "down"


class Verify(enum.Enum):
    """TLS peer certificate verification mode."""

    NONE = "none"
    OPTIONAL = "optional"
    REQUIRED = "required"


@dataclass(frozen=True, slots=True)
class Address:
    """An IP literal (no brackets, normalized by ``ipaddress``) and a port.

    Port 0 means "unspecified" and only occurs for ``source``.
    """

    host: str
    port: int

    @property
    def family(self) -> socket.AddressFamily:
        """``socket.AF_INET6`` for an IPv6 host, else ``socket.AF_INET``."""
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    def __str__(self) -> str:
        if self.family is socket.AF_INET6:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"

    @classmethod
    def parse(
        cls, text: str, *, default_port: int | None = None, allow_zero_port: bool = False
    ) -> Address:
        """Parse ``a.b.c.d[:port]``, ``[v6][:port]`` or ``v6:port``.

        The port is mandatory when *default_port* is None; an unbracketed
        IPv6 address always takes its last colon-separated part as the port.
        Raises ValueError with a message naming *text*.
        """
        host_text, port_text, bracketed = _split_host_port(text)
        host = _parse_ip(host_text, bracketed)
        if host is None:
            raise ValueError(_address_help(text, default_port))
        if port_text is not None:
            return cls(host, _parse_port(text, port_text, allow_zero_port))
        if default_port is None:
            raise ValueError(f"missing port in '{text}': expected an IP address and port "
                             f"{PEER_ADDRESS_HINT}")
        return cls(host, default_port)


def _split_host_port(text: str) -> tuple[str, str | None, bool]:
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return "", None, True
        return host, (rest[1:] if rest else None), True
    if ":" not in text:
        return text, None, False
    host, _, port = text.rpartition(":")
    return host, port, False


def _parse_ip(text: str, bracketed: bool) -> str | None:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if bracketed and ip.version != 6:
        return None
    return str(ip)


def _parse_port(text: str, port_text: str, allow_zero: bool) -> int:
    low = 0 if allow_zero else 1
    if port_text and set(port_text) <= DIGITS and len(port_text) <= 5:
        if low <= int(port_text) <= 65535:
            return int(port_text)
    raise ValueError(f"invalid port '{port_text}' in '{text}' (expected {low}..65535)")


def _address_help(text: str, default_port: int | None) -> str:
    if default_port is None:
        return f"invalid address '{text}': expected an IP address and port {PEER_ADDRESS_HINT}"
    return (f"invalid address '{text}': expected an IP address with an optional port, "
            "like 192.0.2.1, 192.0.2.1:4000 or [2001:db8::1]:4000")


@dataclass(frozen=True, slots=True)
class Peer:
    """A ``peer`` line. ``position`` is the ``peer`` keyword's.

    ``role`` is DOWN when no role keyword is given. ``crt_position`` and
    ``ca_file_position`` locate the path words, for :func:`check_files`.
    """

    name: str
    address: Address
    role: PeerRole
    group: str | None
    ssl: bool
    crt: str | None
    ca_file: str | None
    verify: Verify | None
    position: Position
    crt_position: Position | None = None
    ca_file_position: Position | None = None


def table_suffix(table_name: str) -> str:
    """Return the suffix of a table name: from its last "." on, or "" if none."""
    dot = table_name.rfind(".")
    return "" if dot < 0 else table_name[dot:]


@dataclass(frozen=True, slots=True)
class FromRule:
    """A ``from`` line; empty ``suffixes`` means ``from any``."""

    suffixes: tuple[str, ...]
    to: str
    accept_no_suffix: bool
    position: Position

    def output_name(self, table_name: str) -> str | None:
        """Name of the aggregate table for input table *table_name*, or None.

        The suffix is the part from the last "." on (DESIGN.md §3.1); any
        leading "/" (HAProxy peers-section tables) is part of the name and
        kept: "/mytable.local" -> "/mytable.aggr". A table whose suffix is
        ``to`` is an output and gives None. ``from any`` replaces the suffix
        or, if there is none, appends ``to``. The list form replaces listed
        suffixes, appends ``to`` to suffix-less names only with
        ``accept_no_suffix``, and ignores everything else. Edge cases: in
        ".local" the suffix is the whole name (-> ".aggr"); in "a." the
        suffix is "." (``any``: -> "a.aggr"; never listed, so the list form
        gives None). ``forward`` suffixes are the caller's business (see
        :meth:`Aggregations.output_name`).
        """
        suffix = table_suffix(table_name)
        if suffix == self.to:
            return None
        stem = table_name[: len(table_name) - len(suffix)]
        if not self.suffixes or suffix in self.suffixes:
            return stem + self.to
        if not suffix and self.accept_no_suffix:
            return table_name + self.to
        return None


@dataclass(frozen=True, slots=True)
class StatsSocket:
    """A ``stats socket`` line: exactly one of ``path`` and ``address`` is set.

    A ``unix@`` prefix is removed from ``path``; ``mode`` is the octal value.
    """

    path: str | None
    address: Address | None
    mode: int | None
    user: str | None
    group: str | None
    level: str | None
    position: Position


@dataclass(frozen=True, slots=True)
class LogTarget:
    """A ``log`` line. An IP target is stored as ``str(Address)`` with its port."""

    target: str
    facility: str
    level: str | None
    minlevel: str | None
    position: Position


@dataclass(frozen=True, slots=True)
class GlobalSection:
    """The ``global`` section (all empty when the file has none)."""

    cpu_map: tuple[int, ...] | None
    cpu_map_position: Position | None
    source: Address | None
    stats_sockets: tuple[StatsSocket, ...]
    logs: tuple[LogTarget, ...]
    pidfile: str | None
    user: str | None
    group: str | None
    #: keys kept per table at most (``max-entries``); None: the built-in bound
    max_entries: int | None = None
    #: tables per aggregations section at most (``max-tables``); None: the built-in bound
    max_tables: int | None = None
    #: accept a peer only from the address of its ``peer`` line (``peer-address-check``)
    peer_address_check: bool = False
    #: where to serve Prometheus metrics over HTTP (``prometheus <ip:port>``)
    prometheus: Address | None = None


EMPTY_GLOBAL = GlobalSection(None, None, None, (), (), None, None, None)


@dataclass(frozen=True, slots=True)
class Aggregations:
    """An ``aggregations`` section. ``position`` is the keyword's."""

    name: str
    peers: tuple[Peer, ...]
    from_rule: FromRule
    forward: tuple[str, ...]
    position: Position
    #: undeclared peers accepted at most (``dynamic-peers <n>``); 0: only declared peers
    dynamic_peers: int = 0

    @property
    def local_peer(self) -> Peer:
        """The peer marked ``local`` (this aggregator)."""
        for peer in self.peers:
            if peer.role is PeerRole.LOCAL:
                return peer
        raise LookupError(f"aggregations section '{self.name}' has no local peer")

    @property
    def remote_peers(self) -> tuple[Peer, ...]:
        """Every peer but the local one, in file order."""
        return tuple(p for p in self.peers if p.role is not PeerRole.LOCAL)

    @property
    def up_peers(self) -> tuple[Peer, ...]:
        """The ``up`` peers, in file order."""
        return tuple(p for p in self.peers if p.role is PeerRole.UP)

    @property
    def down_peers(self) -> tuple[Peer, ...]:
        """The downward peers (``down`` or no role), in file order."""
        return tuple(p for p in self.peers if p.role is PeerRole.DOWN)

    @property
    def groups(self) -> dict[str, tuple[Peer, ...]]:
        """Up peers by group id; an ungrouped up peer is alone under "peer:<name>"."""
        groups: dict[str, tuple[Peer, ...]] = {}
        for peer in self.up_peers:
            key = peer.group if peer.group is not None else GROUP_KEY_PREFIX + peer.name
            groups[key] = groups.get(key, ()) + (peer,)
        return groups

    def peer(self, name: str) -> Peer | None:
        """The peer called *name*, or None."""
        return next((p for p in self.peers if p.name == name), None)

    def is_forwarded(self, table_name: str) -> bool:
        """True when the table's suffix is on the ``forward`` line."""
        suffix = table_suffix(table_name)
        return bool(suffix) and suffix in self.forward

    def output_name(self, table_name: str) -> str | None:
        """Like :meth:`FromRule.output_name`, but None for forwarded tables too."""
        if self.is_forwarded(table_name):
            return None
        return self.from_rule.output_name(table_name)


@dataclass(frozen=True, slots=True)
class Config:
    """A whole configuration file."""

    path: str
    global_: GlobalSection
    aggregations: tuple[Aggregations, ...]

    def section(self, name: str) -> Aggregations | None:
        """The aggregations section called *name*, or None."""
        return next((s for s in self.aggregations if s.name == name), None)


# --------------------------------------------------------------------------
# Errors and tokens
# --------------------------------------------------------------------------


def config_error(at: Position, msg: str) -> ConfigError:
    """Build the ConfigError for *msg* at *at*: the one place errors are made."""
    return ConfigError(msg, at.path, at.lineno, at.colno)


@dataclass(frozen=True, slots=True)
class Token:
    """A word of a logical line (quotes and escapes resolved) and where it starts."""

    text: str
    at: Position


Line = tuple[Token, ...]
Cell = tuple[str, int, int]  # one character with its physical line and column


def tokenize(text: str, path: str = "<string>") -> tuple[Line, ...]:
    """Split *text* into logical lines of tokens; blank and comment lines are dropped."""
    lines = (lex_line(cells, path) for cells in join_continuations(text))
    return tuple(line for line in lines if line)


def join_continuations(text: str) -> list[list[Cell]]:
    """Join physical lines ending with a backslash; keep each character's place."""
    logical: list[list[Cell]] = []
    current: list[Cell] = []
    for lineno, raw in enumerate(text.split("\n"), 1):
        raw = raw.removesuffix("\r")
        continued = raw.endswith("\\")
        if continued:
            raw = raw[:-1]
        current.extend((ch, lineno, colno) for colno, ch in enumerate(raw, 1))
        if not continued:
            logical.append(current)
            current = []
    if current:
        logical.append(current)
    return logical


def lex_line(cells: list[Cell], path: str) -> Line:
    """Split one logical line into tokens, stopping at a comment."""
    tokens: list[Token] = []
    pos = skip_blanks(cells, 0)
    while pos < len(cells) and cells[pos][0] != "#":
        pos, token = lex_word(cells, pos, path)
        tokens.append(token)
        pos = skip_blanks(cells, pos)
    return tuple(tokens)


def skip_blanks(cells: list[Cell], pos: int) -> int:
    """Return the position of the next non-blank character."""
    while pos < len(cells) and cells[pos][0] in BLANKS:
        pos += 1
    return pos


def lex_word(cells: list[Cell], pos: int, path: str) -> tuple[int, Token]:
    """Read one word: plain, quoted and escaped pieces until a blank or "#"."""
    _, lineno, colno = cells[pos]
    pieces: list[str] = []
    while pos < len(cells) and cells[pos][0] not in WORD_ENDS:
        char = cells[pos][0]
        if char in QUOTES:
            pos, piece = lex_quoted(cells, pos, path)
        elif char == "\\":
            pos, piece = lex_escape(cells, pos)
        else:
            pos, piece = pos + 1, char
        pieces.append(piece)
    return pos, Token("".join(pieces), Position(path, lineno, colno))


def lex_quoted(cells: list[Cell], pos: int, path: str) -> tuple[int, str]:
    """Read a quoted piece starting at the quote at *pos*; return it unquoted."""
    quote, lineno, colno = cells[pos]
    pieces: list[str] = []
    pos += 1
    while pos < len(cells) and cells[pos][0] != quote:
        if cells[pos][0] == "\\" and quote == '"':
            pos, piece = lex_escape(cells, pos)
        else:
            pos, piece = pos + 1, cells[pos][0]
        pieces.append(piece)
    if pos >= len(cells):
        kind = "double" if quote == '"' else "single"
        raise config_error(Position(path, lineno, colno), f"unterminated {kind} quote")
    return pos + 1, "".join(pieces)


def lex_escape(cells: list[Cell], pos: int) -> tuple[int, str]:
    """Read a backslash and the character it makes literal."""
    if pos + 1 < len(cells):
        return pos + 2, cells[pos + 1][0]
    return pos + 1, "\\"


# --------------------------------------------------------------------------
# Line-level helpers
# --------------------------------------------------------------------------


def take(line: Line, pos: int, owner: Token, what: str) -> tuple[int, Token]:
    """Return the token at *pos*, or fail with "'<owner>' needs <what>"."""
    if pos >= len(line):
        raise config_error(owner.at, f"'{owner.text}' needs {what}")
    return pos + 1, line[pos]


def take_value(line: Line, pos: int, owner: Token, what: str) -> tuple[int, Token]:
    """Like :func:`take`, but the word must not be empty."""
    pos, token = take(line, pos, owner, what)
    if not token.text:
        raise config_error(token.at, f"'{owner.text}' needs {what}, not an empty word")
    return pos, token


def take_name(line: Line, pos: int, owner: Token, noun: str) -> tuple[int, Token]:
    """Like :func:`take_value`, and the word must hold no whitespace."""
    article = "an" if noun[0] in "aeiou" else "a"
    pos, token = take_value(line, pos, owner, f"{article} {noun}")
    if any(char.isspace() for char in token.text):
        raise config_error(token.at, f"invalid {noun} '{token.text}': "
                                     "whitespace is not allowed")
    return pos, token


def expect_end(line: Line, pos: int) -> None:
    """Fail on the first token after *pos*, if any."""
    if pos < len(line):
        raise config_error(line[pos].at, f"unexpected extra argument '{line[pos].text}' "
                                         f"to '{line[0].text}'")


def one_of(words: Iterable[str]) -> str:
    """Render choices for a message: "a, b, c"."""
    return ", ".join(words)


def parse_address(token: Token, *, default_port: int | None = None,
                  allow_zero_port: bool = False) -> Address:
    """Parse *token* as an :class:`Address`, failing at the token."""
    try:
        return Address.parse(token.text, default_port=default_port,
                             allow_zero_port=allow_zero_port)
    except ValueError as exc:
        raise config_error(token.at, str(exc)) from None


def parse_choice(token: Token, choices: Iterable[str], what: str) -> str:
    """Return the token's text if it is one of *choices*."""
    choices = tuple(choices)
    if token.text not in choices:
        raise config_error(token.at, f"invalid {what} '{token.text}' "
                                     f"(expected {one_of(choices)})")
    return token.text


@dataclass(frozen=True, slots=True)
class _Option:
    """An option found on a line: its value and its keyword token."""

    value: Any
    keyword: Token


OptionRule = Callable[[Line, int, Token], tuple[int, Any]]


def parse_options(line: Line, pos: int, rules: Mapping[str, OptionRule],
                  what: str) -> tuple[int, dict[str, _Option]]:
    """Parse ``keyword [value]`` options in any order, each at most once."""
    found: dict[str, _Option] = {}
    while pos < len(line):
        keyword = line[pos]
        rule = rules.get(keyword.text)
        if rule is None:
            raise config_error(keyword.at, f"unknown {what} '{keyword.text}' "
                                           f"(expected {one_of(rules)})")
        if keyword.text in found:
            raise config_error(keyword.at, f"duplicate {what} '{keyword.text}'")
        pos, value = rule(line, pos + 1, keyword)
        found[keyword.text] = _Option(value, keyword)
    return pos, found


def option_flag(line: Line, pos: int, keyword: Token) -> tuple[int, bool]:
    """An option without a value."""
    return pos, True


def option_path(line: Line, pos: int, keyword: Token) -> tuple[int, Token]:
    """An option taking a non-empty path (returned as its token, for its position)."""
    return take_value(line, pos, keyword, "a path")


def option_name(line: Line, pos: int, keyword: Token) -> tuple[int, str]:
    """An option taking a name (a user or a group: no whitespace)."""
    pos, token = take_name(line, pos, keyword, "name")
    return pos, token.text


def _value(options: Mapping[str, _Option], key: str, default: Any = None) -> Any:
    option = options.get(key)
    return default if option is None else option.value


# --------------------------------------------------------------------------
# global section rules
# --------------------------------------------------------------------------


def parse_cpu_map(line: Line, pos: int) -> tuple[int, tuple[int, ...]]:
    """``cpu-map <cpuset>`` -> sorted, de-duplicated CPU numbers."""
    pos, token = take(line, pos, line[0], "a CPU set like 0,5-8")
    cpus: set[int] = set()
    for item in token.text.split(","):
        cpus.update(parse_cpu_range(token, item))
    return pos, tuple(sorted(cpus))


def parse_cpu_range(token: Token, item: str) -> range:
    """One ``N`` or ``N-M`` item of a CPU set."""
    first, dash, last = item.partition("-")
    low = parse_cpu_number(token, first)
    high = parse_cpu_number(token, last) if dash else low
    if low > high:
        raise config_error(token.at, f"invalid CPU set '{token.text}': "
                                     f"range '{item}' goes backwards")
    return range(low, high + 1)


def parse_cpu_number(token: Token, text: str) -> int:
    """A CPU number in a CPU set, 0..MAX_CPU."""
    if not text or not set(text) <= DIGITS:
        raise config_error(token.at, f"invalid CPU set '{token.text}': expected "
                                     "CPU numbers and ranges like 0,5-8")
    if len(text) > 4 or int(text) > MAX_CPU:
        raise config_error(token.at, f"invalid CPU set '{token.text}': "
                                     f"CPU {text} is over {MAX_CPU}")
    return int(text)


def parse_source(line: Line, pos: int) -> tuple[int, Address]:
    """``source <addr>``: the port is optional (0 = any)."""
    pos, token = take(line, pos, line[0], "an address like 192.0.2.1 or [2001:db8::1]:4000")
    return pos, parse_address(token, default_port=0, allow_zero_port=True)


def option_mode(line: Line, pos: int, keyword: Token) -> tuple[int, int]:
    """``mode <octal>`` of a stats socket."""
    pos, token = take(line, pos, keyword, "octal permissions like 0600")
    text = token.text
    if not text or not set(text) <= OCTAL_DIGITS or len(text) > 5 or int(text, 8) > MAX_MODE:
        raise config_error(token.at, f"invalid mode '{text}' "
                                     "(expected octal permissions like 600 or 0660)")
    return pos, int(text, 8)


def option_level(line: Line, pos: int, keyword: Token) -> tuple[int, str]:
    """``level user|operator|admin`` of a stats socket."""
    pos, token = take(line, pos, keyword, "a level (user, operator or admin)")
    return pos, parse_choice(token, STATS_LEVELS, "stats socket level")


STATS_OPTION_RULES: dict[str, OptionRule] = {
    "mode": option_mode,
    "user": option_name,
    "group": option_name,
    "level": option_level,
}


def parse_stats_socket(line: Line, pos: int) -> tuple[int, StatsSocket]:
    """``stats socket <ip:port | path> [mode ...] [user ...] [group ...] [level ...]``."""
    keyword = line[0]
    pos, sub = take(line, pos, keyword, "'socket' and an address or a path")
    if sub.text != "socket":
        raise config_error(sub.at, f"unknown 'stats' keyword '{sub.text}' (expected socket)")
    pos, target = take_value(line, pos, sub, "an address like 127.0.0.1:9999 or a path")
    path, address = parse_socket_target(target)
    pos, opts = parse_options(line, pos, STATS_OPTION_RULES, "stats socket option")
    return pos, StatsSocket(path, address, _value(opts, "mode"), _value(opts, "user"),
                            _value(opts, "group"), _value(opts, "level"), keyword.at)


def parse_socket_target(token: Token) -> tuple[str | None, Address | None]:
    """A unix path ("/...", "./...", "unix@...") or an address with a port."""
    text = token.text
    if text.startswith(SOCKET_PATH_PREFIXES):
        path = text.removeprefix("unix@")
        if not path:
            raise config_error(token.at, "'unix@' needs a path after it")
        return path, None
    if ":" not in text:
        raise config_error(token.at, f"invalid stats socket '{text}': expected a path "
                                     "starting with '/', './' or 'unix@', or an IP "
                                     "address and port like 127.0.0.1:9999")
    return None, parse_address(token)


LOG_ARGUMENTS = (
    (SYSLOG_FACILITIES, "syslog facility"),
    (SYSLOG_LEVELS, "syslog level"),
    (SYSLOG_LEVELS, "syslog minimum level"),
)


def parse_log(line: Line, pos: int) -> tuple[int, LogTarget]:
    """``log <target> [<facility> [<level> [<minlevel>]]]``."""
    keyword = line[0]
    pos, token = take_value(line, pos, keyword, "a target (stderr, stdout, a path or an address)")
    target = parse_log_target(token)
    words: list[str | None] = [None, None, None]
    for index, (choices, what) in enumerate(LOG_ARGUMENTS):
        if pos < len(line):
            words[index] = parse_choice(line[pos], choices, what)
            pos += 1
    facility = words[0] or DEFAULT_LOG_FACILITY
    return pos, LogTarget(target, facility, words[1], words[2], keyword.at)


def parse_log_target(token: Token) -> str:
    """A log target: kept as given, except addresses are normalized with a port."""
    if token.text in LOG_STREAMS or token.text.startswith("/"):
        return token.text
    return str(parse_address(token, default_port=DEFAULT_LOG_PORT))


def parse_pidfile(line: Line, pos: int) -> tuple[int, str]:
    """``pidfile <path>``."""
    pos, token = take_value(line, pos, line[0], "a path")
    return pos, token.text


def parse_id_keyword(line: Line, pos: int) -> tuple[int, str]:
    """``user <name|uid>`` and ``group <name|gid>``."""
    pos, token = take_name(line, pos, line[0], "name or id")
    return pos, token.text


def parse_count(line: Line, pos: int) -> tuple[int, int]:
    """``max-entries <n>`` and ``max-tables <n>``: a whole number from 1."""
    pos, token = take_value(line, pos, line[0], "a number")
    if not token.text.isdigit() or int(token.text) < 1 or not token.text.isascii():
        raise config_error(token.at, f"'{line[0].text}' expects a whole number of at least 1, not '{token.text}'")
    return pos, int(token.text)


def parse_prometheus(line: Line, pos: int) -> tuple[int, Address]:
    """``prometheus <ip:port>``: the metrics endpoint's address (port mandatory)."""
    pos, token = take_value(line, pos, line[0], "an address like 127.0.0.1:9100")
    return pos, parse_address(token)


def parse_flag(line: Line, pos: int) -> tuple[int, bool]:
    """A keyword on its own (``peer-address-check``)."""
    return pos, True


LineRule = Callable[[Line, int], tuple[int, Any]]

GLOBAL_RULES: dict[str, LineRule] = {
    "cpu-map": parse_cpu_map,
    "source": parse_source,
    "stats": parse_stats_socket,
    "log": parse_log,
    "pidfile": parse_pidfile,
    "user": parse_id_keyword,
    "group": parse_id_keyword,
    "max-entries": parse_count,
    "max-tables": parse_count,
    "peer-address-check": parse_flag,
    "prometheus": parse_prometheus,
}
GLOBAL_KEYWORDS_HELP = ("cpu-map, source, stats socket, log, pidfile, user, group, max-entries, max-tables, "
                        "peer-address-check, prometheus")


@dataclass
class _GlobalState:
    """What the global section has seen so far (mutable, private)."""

    first: dict[str, Token] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    lists: dict[str, list[Any]] = field(default_factory=lambda: {"stats": [], "log": []})

    def add(self, keyword: Token, value: Any) -> None:
        if keyword.text in REPEATABLE_GLOBALS:
            self.lists[keyword.text].append(value)
            return
        if keyword.text in self.first:
            first = self.first[keyword.text].at.lineno
            raise config_error(keyword.at, f"duplicate '{keyword.text}' "
                                           f"(already set at line {first})")
        self.first[keyword.text] = keyword
        self.values[keyword.text] = value

    def build(self) -> GlobalSection:
        cpu_map = self.first.get("cpu-map")
        return GlobalSection(
            self.values.get("cpu-map"), cpu_map.at if cpu_map else None,
            self.values.get("source"), tuple(self.lists["stats"]), tuple(self.lists["log"]),
            self.values.get("pidfile"), self.values.get("user"), self.values.get("group"),
            self.values.get("max-entries"), self.values.get("max-tables"),
            bool(self.values.get("peer-address-check")), self.values.get("prometheus"))


def parse_global_section(lines: tuple[Line, ...], pos: int) -> tuple[int, GlobalSection]:
    """The ``global`` header line at *pos* and its lines, up to the next section."""
    expect_end(lines[pos], 1)
    state = _GlobalState()
    pos += 1
    while pos < len(lines) and lines[pos][0].text not in SECTION_KEYWORDS:
        keyword = lines[pos][0]
        rule = GLOBAL_RULES.get(keyword.text)
        if rule is None:
            raise config_error(keyword.at, f"unknown keyword '{keyword.text}' in global "
                                           f"section (expected {GLOBAL_KEYWORDS_HELP})")
        end, value = rule(lines[pos], 1)
        expect_end(lines[pos], end)
        state.add(keyword, value)
        pos += 1
    return pos, state.build()


# --------------------------------------------------------------------------
# aggregations section rules
# --------------------------------------------------------------------------


def option_group(line: Line, pos: int, keyword: Token) -> tuple[int, str]:
    """``group <group_id>`` of a peer."""
    pos, token = take_name(line, pos, keyword, "group identifier")
    if token.text.startswith(GROUP_KEY_PREFIX):
        raise config_error(token.at, f"invalid group identifier '{token.text}': "
                                     f"'{GROUP_KEY_PREFIX}' is reserved")
    return pos, token.text


def option_verify(line: Line, pos: int, keyword: Token) -> tuple[int, Verify]:
    """``verify none|optional|required`` of a peer."""
    pos, token = take(line, pos, keyword, "none, optional or required")
    return pos, Verify(parse_choice(token, (v.value for v in Verify), "verify value"))


PEER_OPTION_RULES: dict[str, OptionRule] = {
    "local": option_flag,
    "up": option_flag,
    "down": option_flag,
    "group": option_group,
    "ssl": option_flag,
    "crt": option_path,
    "ca-file": option_path,
    "verify": option_verify,
}


@dataclass(frozen=True, slots=True)
class _PeerDecl:
    """A parsed peer line, with the places the section-level checks report at."""

    peer: Peer
    name_at: Position
    role_at: Position | None


def parse_peer(line: Line, pos: int) -> tuple[int, _PeerDecl]:
    """``peer <name> <ip:port> [options]``, options in any order (see PEER_OPTION_RULES)."""
    keyword = line[0]
    pos, name = take_name(line, pos, keyword, "peer name")
    pos, where = take(line, pos, keyword, f"an address after the name, {PEER_ADDRESS_HINT}")
    address = parse_address(where)
    pos, opts = parse_options(line, pos, PEER_OPTION_RULES, "peer option")
    role = check_peer_options(opts)
    (crt, crt_at), (ca_file, ca_file_at) = path_option(opts, "crt"), path_option(opts, "ca-file")
    peer = Peer(name.text, address, role, _value(opts, "group"), "ssl" in opts,
                crt, ca_file, _value(opts, "verify"), keyword.at, crt_at, ca_file_at)
    role_option = opts.get(role.value)
    return pos, _PeerDecl(peer, name.at, role_option.keyword.at if role_option else None)


def path_option(opts: Mapping[str, _Option], key: str) -> tuple[str | None, Position | None]:
    """The text and position of a path option, or (None, None)."""
    token = _value(opts, key)
    return (token.text, token.at) if token is not None else (None, None)


def check_peer_options(opts: Mapping[str, _Option]) -> PeerRole:
    """Check how peer options combine; return the peer's role."""
    roles = [option.keyword for key, option in opts.items() if key in ROLE_KEYWORDS]
    if len(roles) > 1:
        raise config_error(roles[1].at, f"'{roles[1].text}' conflicts with '{roles[0].text}' "
                                        "(a peer is local, up or down)")
    role = PeerRole(roles[0].text) if roles else PeerRole.DOWN
    if "group" in opts and role is not PeerRole.UP:
        raise config_error(opts["group"].keyword.at, "group is only allowed on up peers")
    for key, option in opts.items():
        if key in SSL_OPTIONS and "ssl" not in opts:
            raise config_error(option.keyword.at, f"'{key}' needs 'ssl'")
    return role


def parse_suffix(token: Token, text: str | None = None) -> str:
    """A table suffix: "." then one or more characters, none "." "," or blank."""
    text = token.text if text is None else text
    reason = suffix_problem(text)
    if reason:
        raise config_error(token.at, f"invalid suffix '{text}': {reason}")
    return text


def suffix_problem(text: str) -> str | None:
    """Why *text* is not a valid suffix, or None."""
    if len(text) < 2 or not text.startswith("."):
        return "a suffix is a '.' followed by at least one character, like .local"
    if "," in text:
        return "a single suffix is expected here, not a list"
    if "." in text[1:]:
        return "a suffix has a single '.' (a table's suffix starts at its last '.')"
    if any(char.isspace() for char in text):
        return "whitespace is not allowed"
    return None


def parse_suffix_list(token: Token) -> tuple[str, ...]:
    """A comma-separated list of suffixes in one word, without empty items or repeats."""
    suffixes: list[str] = []
    for item in token.text.split(","):
        if not item:
            raise config_error(token.at, f"empty item in suffix list '{token.text}'")
        if item in suffixes:
            raise config_error(token.at, f"duplicate suffix '{item}' in list '{token.text}'")
        suffixes.append(parse_suffix(token, item))
    return tuple(suffixes)


def parse_from(line: Line, pos: int) -> tuple[int, FromRule]:
    """``from any to <.s>`` or ``from <.a,.b> to <.s> [accept-no-suffix]``."""
    keyword = line[0]
    pos, source = take(line, pos, keyword, "'any' or a suffix list, then 'to' and a suffix")
    suffixes = () if source.text == "any" else parse_suffix_list(source)
    pos, to = take(line, pos, keyword, f"'to' and an output suffix after '{source.text}'")
    if to.text != "to":
        raise config_error(to.at, f"expected 'to', found '{to.text}'")
    pos, target = take(line, pos, to, "an output suffix like .aggr")
    output = parse_suffix(target)
    if output in suffixes:
        raise config_error(target.at, f"output suffix '{output}' is also in the 'from' list")
    pos, accept = parse_accept_no_suffix(line, pos, bool(suffixes))
    return pos, FromRule(suffixes, output, accept, keyword.at)


def parse_accept_no_suffix(line: Line, pos: int, has_list: bool) -> tuple[int, bool]:
    """The optional ``accept-no-suffix`` word, only allowed after a suffix list."""
    if pos >= len(line) or line[pos].text != "accept-no-suffix":
        return pos, False
    if not has_list:
        raise config_error(line[pos].at, "'accept-no-suffix' is not allowed with 'from any' "
                                         "(any already takes tables without a suffix)")
    return pos + 1, True


@dataclass(frozen=True, slots=True)
class _ForwardDecl:
    """A parsed forward line: its suffixes, where the list and the line start."""

    suffixes: tuple[str, ...]
    list_at: Position
    position: Position


def parse_forward(line: Line, pos: int) -> tuple[int, _ForwardDecl]:
    """``forward <.a,.b,...>``."""
    pos, token = take(line, pos, line[0], "a suffix list like .l2 or .a,.b")
    return pos, _ForwardDecl(parse_suffix_list(token), token.at, line[0].at)


@dataclass(frozen=True, slots=True)
class _DynamicDecl:
    """A parsed dynamic-peers line."""

    count: int
    position: Position


def parse_dynamic_peers(line: Line, pos: int) -> tuple[int, _DynamicDecl]:
    """``dynamic-peers <n>``: accept up to n peers not declared in the file."""
    pos, count = parse_count(line, pos)
    return pos, _DynamicDecl(count, line[0].at)


AGGREGATIONS_RULES: dict[str, LineRule] = {
    "peer": parse_peer,
    "from": parse_from,
    "forward": parse_forward,
    "dynamic-peers": parse_dynamic_peers,
}


@dataclass
class _AggregationsState:
    """What an aggregations section has seen so far (mutable, private)."""

    header: Token
    name: str
    peers: list[Peer] = field(default_factory=list)
    names: dict[str, Position] = field(default_factory=dict)
    local: Peer | None = None
    from_rule: FromRule | None = None
    forward: _ForwardDecl | None = None
    dynamic: _DynamicDecl | None = None

    def add(self, node: _PeerDecl | FromRule | _ForwardDecl | _DynamicDecl) -> None:
        match node:
            case _PeerDecl():
                self.add_peer(node)
            case FromRule():
                check_once("from", self.from_rule, node.position)
                self.from_rule = node
            case _ForwardDecl():
                check_once("forward", self.forward, node.position)
                self.forward = node
            case _DynamicDecl():
                check_once("dynamic-peers", self.dynamic, node.position)
                self.dynamic = node
        self.check_forward()

    def add_peer(self, decl: _PeerDecl) -> None:
        peer, local = decl.peer, self.local
        if peer.name in self.names:
            first = self.names[peer.name].lineno
            raise config_error(decl.name_at, f"duplicate peer name '{peer.name}' "
                                             f"(first declared at line {first})")
        if peer.role is PeerRole.LOCAL and local is not None:
            raise config_error(decl.role_at or decl.name_at,
                               f"more than one local peer ('{local.name}' is local "
                               f"at line {local.position.lineno})")
        if peer.role is PeerRole.LOCAL:
            self.local = peer
        self.names[peer.name] = decl.name_at
        self.peers.append(peer)

    def check_forward(self) -> None:
        if self.forward and self.from_rule and self.from_rule.to in self.forward.suffixes:
            raise config_error(self.forward.list_at,
                               f"forward suffix '{self.from_rule.to}' is the output suffix "
                               f"of the 'from' line (line {self.from_rule.position.lineno})")

    def build(self) -> Aggregations:
        where = Position(self.header.at.path, self.header.at.lineno, 1)
        if self.from_rule is None:
            raise config_error(where, f"aggregations section '{self.name}' has no 'from' line")
        if self.local is None:
            raise config_error(where, f"aggregations section '{self.name}' has no local peer "
                                      "(mark this aggregator's peer line with 'local')")
        forward = self.forward.suffixes if self.forward else ()
        dynamic = self.dynamic.count if self.dynamic else 0
        return Aggregations(self.name, tuple(self.peers), self.from_rule, forward, self.header.at, dynamic)


def check_once(keyword: str, previous: FromRule | _ForwardDecl | _DynamicDecl | None, at: Position) -> None:
    """Fail at *at* if a line that may appear once per section was already seen."""
    if previous is not None:
        raise config_error(at, f"duplicate '{keyword}' line "
                               f"(first at line {previous.position.lineno})")


def parse_aggregations_section(lines: tuple[Line, ...], pos: int,
                               taken: Mapping[str, Position]) -> tuple[int, Aggregations]:
    """The ``aggregations <id>`` line at *pos* and its lines, up to the next section.

    *taken* maps the ids of the sections already parsed to their positions.
    """
    header = lines[pos]
    end, ident = take_name(header, 1, header[0], "aggregations identifier")
    expect_end(header, end)
    if ident.text in taken:
        raise config_error(ident.at, f"duplicate aggregations section '{ident.text}' "
                                     f"(first at line {taken[ident.text].lineno})")
    state = _AggregationsState(header[0], ident.text)
    pos += 1
    while pos < len(lines) and lines[pos][0].text not in SECTION_KEYWORDS:
        state.add(parse_aggregations_line(lines[pos]))
        pos += 1
    return pos, state.build()


def parse_aggregations_line(line: Line) -> Any:
    """One line inside an aggregations section."""
    keyword = line[0]
    rule = AGGREGATIONS_RULES.get(keyword.text)
    if rule is None:
        raise config_error(keyword.at, f"unknown keyword '{keyword.text}' in aggregations "
                                       f"section (expected {one_of(AGGREGATIONS_RULES)})")
    end, node = rule(line, 1)
    expect_end(line, end)
    return node


# --------------------------------------------------------------------------
# Whole file
# --------------------------------------------------------------------------


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
    return Config(path, global_ or EMPTY_GLOBAL, tuple(sections.values()))


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


# --------------------------------------------------------------------------
# Checks that need the system
# --------------------------------------------------------------------------


def check_files(config: Config) -> list[ConfigError]:
    """Return one error per ``crt``/``ca-file`` that is not a readable regular file.

    Relative paths are taken from the current directory. Errors point at the
    path's word and come in file order.
    """
    errors: list[ConfigError] = []
    for section in config.aggregations:
        for peer in section.peers:
            for what, name, at in (("crt", peer.crt, peer.crt_position),
                                   ("ca-file", peer.ca_file, peer.ca_file_position)):
                problem = None if name is None else file_problem(name)
                if problem:
                    errors.append(config_error(at or peer.position,
                                               f"cannot read {what} file '{name}': {problem}"))
    return errors


def file_problem(path: str) -> str | None:
    """Why *path* cannot be read as a regular file, or None (never blocks on FIFOs)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        return exc.strerror or str(exc)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return "not a regular file"
    finally:
        os.close(fd)
    return None


def check_cpus(config: Config, available: set[int]) -> None:
    """Raise ConfigError at ``cpu-map`` if it names a CPU not in *available*."""
    cpu_map, at = config.global_.cpu_map, config.global_.cpu_map_position
    if cpu_map is None or at is None:
        return
    missing = sorted(set(cpu_map) - available)
    if missing:
        cpus = format_cpu_set(missing)
        verb = "CPU {} is" if len(missing) == 1 else "CPUs {} are"
        have = format_cpu_set(sorted(available)) or "none"
        raise config_error(at, f"{verb.format(cpus)} not available (available CPUs: {have})")


def format_cpu_set(cpus: Iterable[int]) -> str:
    """Render sorted CPU numbers compactly: [0, 5, 6, 7] -> "0,5-7"."""
    ranges: list[list[int]] = []
    for cpu in cpus:
        if ranges and ranges[-1][1] == cpu - 1:
            ranges[-1][1] = cpu
        else:
            ranges.append([cpu, cpu])
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in ranges)


# --------------------------------------------------------------------------
# Dump and compare
# --------------------------------------------------------------------------


def quote_word(word: str) -> str:
    """Quote *word* for the config syntax if it needs it."""
    if word and word.isprintable() and not SPECIAL_CHARS.intersection(word):
        return word
    escaped = word.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def dump(config: Config) -> str:
    """Render *config* as canonical configuration text.

    ``parse(dump(c))`` equals ``c`` once both go through :func:`strip_positions`.
    """
    blocks = [dump_global(config.global_)] if config.global_ != EMPTY_GLOBAL else []
    blocks += [dump_aggregations(section) for section in config.aggregations]
    return "\n".join(blocks)


def _line(*words: str | None) -> str:
    return "    " + " ".join(w for w in words if w is not None) + "\n"


def dump_global(section: GlobalSection) -> str:
    """Render the global section."""
    out = "global\n"
    if section.cpu_map is not None:
        out += _line("cpu-map", format_cpu_set(section.cpu_map))
    if section.source is not None:
        out += _line("source", dump_source(section.source))
    out += "".join(dump_stats_socket(s) for s in section.stats_sockets)
    out += "".join(_line("log", quote_word(log.target), log.facility, log.level, log.minlevel)
                   for log in section.logs)
    for keyword, value in (("pidfile", section.pidfile), ("user", section.user),
                           ("group", section.group)):
        if value is not None:
            out += _line(keyword, quote_word(value))
    for keyword, number in (("max-entries", section.max_entries), ("max-tables", section.max_tables)):
        if number is not None:
            out += _line(keyword, str(number))
    if section.peer_address_check:
        out += _line("peer-address-check")
    if section.prometheus is not None:
        out += _line("prometheus", str(section.prometheus))
    return out


def dump_source(address: Address) -> str:
    """A source address, without the port when it is 0 (any)."""
    if address.port:
        return str(address)
    return f"[{address.host}]" if address.family is socket.AF_INET6 else address.host


def dump_stats_socket(sock: StatsSocket) -> str:
    """Render one ``stats socket`` line."""
    if sock.path is not None:
        prefixed = sock.path.startswith(SOCKET_PATH_PREFIXES[:2])
        target = sock.path if prefixed else "unix@" + sock.path
    else:
        target = str(sock.address)
    words = ["stats", "socket", quote_word(target)]
    if sock.mode is not None:
        words += ["mode", f"{sock.mode:04o}"]
    for keyword, value in (("user", sock.user), ("group", sock.group), ("level", sock.level)):
        if value is not None:
            words += [keyword, quote_word(value)]
    return _line(*words)


def dump_aggregations(section: Aggregations) -> str:
    """Render one aggregations section."""
    out = f"aggregations {quote_word(section.name)}\n"
    out += "".join(dump_peer(peer) for peer in section.peers)
    rule = section.from_rule
    source = ",".join(rule.suffixes) or "any"
    out += _line("from", quote_word(source), "to", quote_word(rule.to),
                 "accept-no-suffix" if rule.accept_no_suffix else None)
    if section.forward:
        out += _line("forward", quote_word(",".join(section.forward)))
    if section.dynamic_peers:
        out += _line("dynamic-peers", str(section.dynamic_peers))
    return out


def dump_peer(peer: Peer) -> str:
    """Render one ``peer`` line (no role word for a down peer)."""
    words = ["peer", quote_word(peer.name), str(peer.address)]
    if peer.role is not PeerRole.DOWN:
        words.append(peer.role.value)
    if peer.group is not None:
        words += ["group", quote_word(peer.group)]
    if peer.ssl:
        words.append("ssl")
    for keyword, value in (("crt", peer.crt), ("ca-file", peer.ca_file)):
        if value is not None:
            words += [keyword, quote_word(value)]
    if peer.verify is not None:
        words += ["verify", peer.verify.value]
    return _line(*words)


def strip_positions(config: Config) -> Config:
    """Return *config* with every Position replaced by :data:`NOWHERE`.

    Two configurations that differ only in where things were written compare
    equal after this.
    """
    return _strip(config)


_T = TypeVar("_T")


def _strip(value: _T) -> _T:
    if isinstance(value, Position):
        return NOWHERE  # type: ignore[return-value]
    if isinstance(value, tuple):
        return tuple(_strip(item) for item in value)  # type: ignore[return-value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {f.name: _strip(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return dataclasses.replace(value, **changes)
    return value
