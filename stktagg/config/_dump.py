"""The configuration back to text: :func:`dump` renders a :class:`Config` canonically.

One line per model node, in file order, four spaces of indentation, words
quoted only when the lexer needs it (:func:`quote_word`), times in the
largest unit that divides them (``format_time``: ``1h``, ``90s``,
``1500ms``), a ``history`` line's ``offset`` left out when it is 0. ``parse(dump(c))``
equals ``c`` once both go through
:func:`~stktagg.config._model.strip_positions`. Imports ``_model`` and, for
the characters that need quoting, ``_lexer``.
"""

from __future__ import annotations

import socket

from ._lexer import QUOTES, WORD_ENDS
from ._model import (
    EMPTY_GLOBAL,
    SOCKET_PATH_PREFIXES,
    Address,
    Aggregations,
    Config,
    GlobalSection,
    HistoryLine,
    Peer,
    PeerRole,
    StatsSocket,
    format_cpu_set,
    format_time,
)

# Characters that force dump() to quote a word.
SPECIAL_CHARS = WORD_ENDS | QUOTES | frozenset("\\")


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
    for keyword, value in (("pidfile", section.pidfile), ("history-file", section.history_file),
                           ("user", section.user), ("group", section.group)):
        if value is not None:
            out += _line(keyword, quote_word(value))
    for keyword, number in (("max-entries", section.max_entries), ("max-tables", section.max_tables)):
        if number is not None:
            out += _line(keyword, str(number))
    if section.peer_address_check:
        out += _line("peer-address-check")
    if section.http is not None:
        out += _line("http", str(section.http))
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
    if section.shards is not None:
        out += _line("shards", str(section.shards))
    out += "".join(dump_peer(peer) for peer in section.peers)
    rule = section.from_rule
    source = ",".join(rule.suffixes) or "any"
    out += _line("from", quote_word(source), "to", quote_word(rule.to),
                 "accept-no-suffix" if rule.accept_no_suffix else None)
    if section.forward:
        out += _line("forward", quote_word(",".join(section.forward)))
    if section.dynamic_peers:
        out += _line("dynamic-peers", str(section.dynamic_peers))
    out += "".join(dump_history(line) for line in section.history)
    return out


def dump_history(line: HistoryLine) -> str:
    """Render one ``history`` line (no ``offset`` when it is 0)."""
    offset = ("offset", format_time(line.offset_ms)) if line.offset_ms else ()
    return _line("history", quote_word(line.source), "to", quote_word(line.target), "stat", line.stat,
                 "window", format_time(line.window_ms), *offset)


def dump_peer(peer: Peer) -> str:
    """Render one ``peer`` line (no role word for a down peer)."""
    words = ["peer", quote_word(peer.name), str(peer.address)]
    if peer.role is not PeerRole.DOWN:
        words.append(peer.role.value)
    if peer.group is not None:
        words += ["group", quote_word(peer.group)]
    if peer.shard is not None:
        words += ["shard", str(peer.shard)]
    if peer.ssl:
        words.append("ssl")
    for keyword, value in (("crt", peer.crt), ("ca-file", peer.ca_file)):
        if value is not None:
            words += [keyword, quote_word(value)]
    if peer.verify is not None:
        words += ["verify", peer.verify.value]
    return _line(*words)

