"""The rules of the ``global`` section: one function per keyword, and the section.

:data:`GLOBAL_RULES` maps each keyword to its rule; :func:`parse_global_section`
reads the section's lines into a :class:`~stktagg.config._model.GlobalSection`,
checking that keywords other than ``stats socket`` and ``log`` appear once.
The grammar is in ``_parser``'s header comment.

Imports ``_model``, ``_lexer`` and ``_rules``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._lexer import Line, Token
from ._model import DIGITS, SOCKET_PATH_PREFIXES, Address, GlobalSection, LogTarget, StatsSocket, config_error
from ._rules import (
    SECTION_KEYWORDS,
    LineRule,
    OptionRule,
    expect_end,
    option_name,
    option_value,
    parse_address,
    parse_choice,
    parse_count,
    parse_options,
    take,
    take_name,
    take_value,
)

OCTAL_DIGITS = frozenset("01234567")
REPEATABLE_GLOBALS = frozenset({"stats", "log"})
#: Keywords that set the same thing as another: ``prometheus`` is the older name of ``http``
#: (one listener serves the metrics and the dashboard), so only one of the two may be given.
SAME_SETTING = {"prometheus": "http"}
LOG_STREAMS = frozenset({"stderr", "stdout"})

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
    return pos, StatsSocket(path, address, option_value(opts, "mode"), option_value(opts, "user"),
                            option_value(opts, "group"), option_value(opts, "level"), keyword.at)


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


def parse_history_file(line: Line, pos: int) -> tuple[int, Token]:
    """``history-file <path>``: the history lines' samples (returned as its token, for its position)."""
    return take_value(line, pos, line[0], "a path")


def parse_id_keyword(line: Line, pos: int) -> tuple[int, str]:
    """``user <name|uid>`` and ``group <name|gid>``."""
    pos, token = take_name(line, pos, line[0], "name or id")
    return pos, token.text


def parse_http(line: Line, pos: int) -> tuple[int, Address]:
    """``http <ip:port>`` (or its alias ``prometheus``): the dashboard's and the metrics' listener
    (port mandatory)."""
    pos, token = take_value(line, pos, line[0], "an address like 127.0.0.1:9100")
    return pos, parse_address(token)


def parse_flag(line: Line, pos: int) -> tuple[int, bool]:
    """A keyword on its own (``peer-address-check``)."""
    return pos, True


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
    "http": parse_http,
    "prometheus": parse_http,
    "history-file": parse_history_file,
}
GLOBAL_KEYWORDS_HELP = ("cpu-map, source, stats socket, log, pidfile, user, group, max-entries, max-tables, "
                        "peer-address-check, http, prometheus, history-file")


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
        slot = SAME_SETTING.get(keyword.text, keyword.text)
        if slot in self.first:
            first = self.first[slot]
            alias = f": '{first.text}' is the same listener" if first.text != keyword.text else ""
            raise config_error(keyword.at, f"duplicate '{keyword.text}' "
                                           f"(already set at line {first.at.lineno}{alias})")
        self.first[slot] = keyword
        self.values[slot] = value

    def build(self) -> GlobalSection:
        cpu_map = self.first.get("cpu-map")
        history_file: Token | None = self.values.get("history-file")
        return GlobalSection(
            self.values.get("cpu-map"), cpu_map.at if cpu_map else None,
            self.values.get("source"), tuple(self.lists["stats"]), tuple(self.lists["log"]),
            self.values.get("pidfile"), self.values.get("user"), self.values.get("group"),
            self.values.get("max-entries"), self.values.get("max-tables"),
            bool(self.values.get("peer-address-check")), self.values.get("http"),
            history_file.text if history_file else None, history_file.at if history_file else None)


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

