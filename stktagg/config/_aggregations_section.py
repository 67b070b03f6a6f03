"""The rules of an ``aggregations`` section: peers, ``from``, ``forward``, ``dynamic-peers``, ``shards``, ``history``.

:data:`AGGREGATIONS_RULES` maps each keyword to its rule;
:func:`parse_aggregations_section` reads one section's lines into an
:class:`~stktagg.config._model.Aggregations`, with the checks that span
lines (peer names, one local peer or one per shard, ``from``/``forward``/
``dynamic-peers``/``shards`` once, a ``forward`` suffix that is not the
output, peer ``shard`` numbers, ``history`` lines of the output suffix into
suffixes of their own, and not with ``shards``). The grammar is in
``_parser``'s header comment.

Imports ``_model``, ``_lexer``, ``_rules`` and, to check a ``history`` line's
statistic, ``stktagg.history.parse_stat`` (sans-IO, importing nothing of stktagg).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stktagg.history import parse_stat

from ._lexer import Line, Token
from ._model import (
    GROUP_KEY_PREFIX,
    PEER_ADDRESS_HINT,
    TIME_UNITS,
    Aggregations,
    FromRule,
    HistoryLine,
    Peer,
    PeerRole,
    Position,
    Verify,
    config_error,
    format_time,
)
from ._rules import (
    SECTION_KEYWORDS,
    LineRule,
    Option,
    OptionRule,
    expect_end,
    number_in_range,
    one_of,
    option_flag,
    option_path,
    option_value,
    parse_address,
    parse_choice,
    parse_count,
    parse_options,
    parse_time,
    take,
    take_keyword,
    take_name,
    take_value,
)

ROLE_KEYWORDS = frozenset({"local", "up", "down"})
SSL_OPTIONS = frozenset({"crt", "ca-file", "verify"})
#: The most key shards a section may have (``shards <n>``).
MAX_SHARDS = 64
#: How far back a ``history`` line may look at most: its ``window`` plus its ``offset`` (ms).
MAX_HISTORY_MS = 400 * TIME_UNITS["d"]


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


def option_shard(line: Line, pos: int, keyword: Token) -> tuple[int, Token]:
    """``shard <i>`` of a peer, 1..MAX_SHARDS (returned as its token, for its position).

    Whether *i* is at most the section's ``shards`` is checked at the section's
    end: the ``shards`` line may come after the peers.
    """
    pos, token = take_value(line, pos, keyword, "a shard number")
    number_in_range(token, keyword, 1, MAX_SHARDS)
    return pos, token


PEER_OPTION_RULES: dict[str, OptionRule] = {
    "local": option_flag,
    "up": option_flag,
    "down": option_flag,
    "group": option_group,
    "ssl": option_flag,
    "crt": option_path,
    "ca-file": option_path,
    "verify": option_verify,
    "shard": option_shard,
}


@dataclass(frozen=True, slots=True)
class _PeerDecl:
    """A parsed peer line, with the places the section-level checks report at."""

    peer: Peer
    name_at: Position
    role_at: Position | None
    #: the ``shard`` keyword's and its number's positions (None without ``shard``)
    shard_keyword_at: Position | None = None
    shard_at: Position | None = None


def parse_peer(line: Line, pos: int) -> tuple[int, _PeerDecl]:
    """``peer <name> <ip:port> [options]``, options in any order (see PEER_OPTION_RULES)."""
    keyword = line[0]
    pos, name = take_name(line, pos, keyword, "peer name")
    pos, where = take(line, pos, keyword, f"an address after the name, {PEER_ADDRESS_HINT}")
    address = parse_address(where)
    pos, opts = parse_options(line, pos, PEER_OPTION_RULES, "peer option")
    role = check_peer_options(opts)
    (crt, crt_at), (ca_file, ca_file_at) = path_option(opts, "crt"), path_option(opts, "ca-file")
    shard = opts.get("shard")
    peer = Peer(name.text, address, role, option_value(opts, "group"), "ssl" in opts,
                crt, ca_file, option_value(opts, "verify"), keyword.at, crt_at, ca_file_at,
                int(shard.value.text) if shard else None)
    role_option = opts.get(role.value)
    return pos, _PeerDecl(peer, name.at, role_option.keyword.at if role_option else None,
                          shard.keyword.at if shard else None, shard.value.at if shard else None)


def path_option(opts: Mapping[str, Option], key: str) -> tuple[str | None, Position | None]:
    """The text and position of a path option, or (None, None)."""
    token = option_value(opts, key)
    return (token.text, token.at) if token is not None else (None, None)


def check_peer_options(opts: Mapping[str, Option]) -> PeerRole:
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
    pos, to = take_keyword(line, pos, keyword, "to", f"an output suffix after '{source.text}'")
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


@dataclass(frozen=True, slots=True)
class _ShardsDecl:
    """A parsed shards line."""

    count: int
    position: Position


def parse_shards(line: Line, pos: int) -> tuple[int, _ShardsDecl]:
    """``shards <n>``: HAProxy splits the keys into n shards (1..MAX_SHARDS)."""
    pos, token = take_value(line, pos, line[0], "a number of shards")
    return pos, _ShardsDecl(number_in_range(token, line[0], 1, MAX_SHARDS), line[0].at)


@dataclass(frozen=True, slots=True)
class _HistoryDecl:
    """A parsed history line, with where its suffixes are (the section's checks report there)."""

    line: HistoryLine
    source_at: Position
    target_at: Position


def parse_history(line: Line, pos: int) -> tuple[int, _HistoryDecl]:
    """``history <.from> to <.to> stat <avg|max|min|pNN> window <time> [offset <time>]``.

    The words in this order; the window is over 0, the offset 0 when absent,
    window + offset at most MAX_HISTORY_MS. Which suffixes are allowed is the
    section's business (:meth:`_AggregationsState.check_history`).
    """
    keyword = line[0]
    pos, source = take(line, pos, keyword, "the output suffix of the 'from' line, like .aggr")
    parse_suffix(source)
    pos, to = take_keyword(line, pos, keyword, "to", f"a history suffix after '{source.text}'")
    pos, target = take(line, pos, to, "a history suffix like .yday")
    parse_suffix(target)
    pos, stat_word = take_keyword(line, pos, keyword, "stat", f"a statistic after '{target.text}'")
    pos, stat = take(line, pos, stat_word, "a statistic: avg, max, min or p1..p100")
    try:
        parse_stat(stat.text)
    except ValueError as exc:
        raise config_error(stat.at, str(exc)) from None
    pos, window_word = take_keyword(line, pos, keyword, "window", f"a time after '{stat.text}'")
    pos, span = take_value(line, pos, window_word, "a time like 1h")
    window = parse_time(span, window_word, 1, MAX_HISTORY_MS)
    pos, offset = parse_history_offset(line, pos, window, span)
    return pos, _HistoryDecl(HistoryLine(source.text, target.text, stat.text, window, offset, keyword.at),
                             source.at, target.at)


def parse_history_offset(line: Line, pos: int, window: int, span: Token) -> tuple[int, int]:
    """The optional ``offset <time>`` ending a history line (0 without it)."""
    if pos >= len(line):
        return pos, 0
    word = line[pos]
    if word.text != "offset":
        raise config_error(word.at, f"unexpected extra argument '{word.text}' to 'history' "
                                    "(expected 'offset' and a time, or the end of the line)")
    pos, back = take_value(line, pos + 1, word, "a time like 1d")
    offset = parse_time(back, word, 0, MAX_HISTORY_MS)
    if window + offset > MAX_HISTORY_MS:
        limit = format_time(MAX_HISTORY_MS)
        raise config_error(back.at, f"'window {span.text}' and 'offset {back.text}' look back over {limit} "
                                    f"(window + offset is at most {limit})")
    return pos, offset


AGGREGATIONS_RULES: dict[str, LineRule] = {
    "peer": parse_peer,
    "from": parse_from,
    "forward": parse_forward,
    "dynamic-peers": parse_dynamic_peers,
    "shards": parse_shards,
    "history": parse_history,
}


@dataclass
class _AggregationsState:
    """What an aggregations section has seen so far (mutable, private)."""

    header: Token
    name: str
    peers: list[_PeerDecl] = field(default_factory=list)
    names: dict[str, Position] = field(default_factory=dict)
    from_rule: FromRule | None = None
    forward: _ForwardDecl | None = None
    dynamic: _DynamicDecl | None = None
    shards: _ShardsDecl | None = None
    history: list[_HistoryDecl] = field(default_factory=list)

    def add(self, node: _PeerDecl | FromRule | _ForwardDecl | _DynamicDecl | _ShardsDecl | _HistoryDecl) -> None:
        match node:
            case _PeerDecl():
                self.add_peer(node)
            case _HistoryDecl():
                self.history.append(node)
            case FromRule():
                check_once("from", self.from_rule, node.position)
                self.from_rule = node
            case _ForwardDecl():
                check_once("forward", self.forward, node.position)
                self.forward = node
            case _DynamicDecl():
                check_once("dynamic-peers", self.dynamic, node.position)
                self.dynamic = node
            case _ShardsDecl():
                check_once("shards", self.shards, node.position)
                self.shards = node
        self.check_forward()

    def add_peer(self, decl: _PeerDecl) -> None:
        peer = decl.peer
        if peer.name in self.names:
            first = self.names[peer.name].lineno
            raise config_error(decl.name_at, f"duplicate peer name '{peer.name}' "
                                             f"(first declared at line {first})")
        self.names[peer.name] = decl.name_at
        self.peers.append(decl)

    def check_peers(self) -> None:
        """The checks that need the whole section: ``shards`` may follow the peers.

        Peers are checked in file order, so the first offending line is reported.
        """
        local: Peer | None = None
        shards = self.shards
        served: dict[int, Peer] = {}
        for decl in self.peers:
            peer = decl.peer
            if shards is None:
                if decl.shard_keyword_at is not None:
                    raise config_error(decl.shard_keyword_at, "'shard' needs a 'shards <n>' line "
                                                              "in the aggregations section")
                if peer.role is PeerRole.LOCAL and local is not None:
                    raise config_error(decl.role_at or decl.name_at,
                                       f"more than one local peer ('{local.name}' is local "
                                       f"at line {local.position.lineno})")
            else:
                self.check_shard(decl, shards, served)
            if peer.role is PeerRole.LOCAL and local is None:
                local = peer

    @staticmethod
    def check_shard(decl: _PeerDecl, shards: _ShardsDecl, served: dict[int, Peer]) -> None:
        """One peer of a sharded section: its shard in range and not taken; a local one has one."""
        peer, shard = decl.peer, decl.peer.shard
        declared = f"'shards {shards.count}' at line {shards.position.lineno}"
        if shard is None:
            if peer.role is PeerRole.LOCAL:
                raise config_error(decl.role_at or decl.name_at,
                                   f"local peer '{peer.name}' needs 'shard <i>' "
                                   f"(the section has {declared})")
            return
        at = decl.shard_at or decl.name_at
        if shard > shards.count:
            raise config_error(at, f"invalid shard {shard} (expected 1..{shards.count}, from {declared})")
        if shard in served:
            first = served[shard]
            raise config_error(at, f"duplicate shard {shard} (first on peer '{first.name}' "
                                   f"at line {first.position.lineno})")
        served[shard] = peer

    def check_forward(self) -> None:
        if self.forward and self.from_rule and self.from_rule.to in self.forward.suffixes:
            raise config_error(self.forward.list_at,
                               f"forward suffix '{self.from_rule.to}' is the output suffix "
                               f"of the 'from' line (line {self.from_rule.position.lineno})")

    def check_history(self, rule: FromRule) -> None:
        """The history lines against the whole section (``from``, ``forward``, ``shards`` may follow them).

        Lines are checked in file order, so the first offending line is reported.
        """
        if not self.history:
            return
        if self.shards is not None:
            raise config_error(self.history[0].line.position,
                               f"history is not supported with 'shards' yet ('shards {self.shards.count}' "
                               f"at line {self.shards.position.lineno})")
        targets: dict[str, Position] = {}
        for decl in self.history:
            line = decl.line
            if line.source != rule.to:
                raise config_error(decl.source_at, f"history source '{line.source}' is not the output suffix "
                                                   f"of the 'from' line (line {rule.position.lineno}): "
                                                   f"expected '{rule.to}' (history is kept of the aggregates)")
            clash = self.history_clash(line.target, rule, targets)
            if clash:
                raise config_error(decl.target_at, clash)
            targets[line.target] = line.position

    def history_clash(self, target: str, rule: FromRule, targets: Mapping[str, Position]) -> str | None:
        """Why a history line's suffix clashes with another suffix of the section, or None."""
        from_line = rule.position.lineno
        if target == rule.to:
            return f"history suffix '{target}' is the output suffix of the 'from' line (line {from_line})"
        if target in rule.suffixes:
            return f"history suffix '{target}' is an input suffix of the 'from' line (line {from_line})"
        if self.forward and target in self.forward.suffixes:
            return (f"history suffix '{target}' is a 'forward' suffix "
                    f"(line {self.forward.position.lineno})")
        if target in targets:
            return f"duplicate history suffix '{target}' (first at line {targets[target].lineno})"
        return None

    def build(self) -> Aggregations:
        where = Position(self.header.at.path, self.header.at.lineno, 1)
        if self.from_rule is None:
            raise config_error(where, f"aggregations section '{self.name}' has no 'from' line")
        peers = tuple(decl.peer for decl in self.peers)
        if not any(peer.role is PeerRole.LOCAL for peer in peers):
            raise config_error(where, f"aggregations section '{self.name}' has no local peer "
                                      "(mark this aggregator's peer line with 'local')")
        self.check_peers()
        self.check_history(self.from_rule)
        forward = self.forward.suffixes if self.forward else ()
        dynamic = self.dynamic.count if self.dynamic else 0
        shards, shards_at = (self.shards.count, self.shards.position) if self.shards else (None, None)
        return Aggregations(self.name, peers, self.from_rule, forward, self.header.at, dynamic,
                            shards, shards_at, tuple(decl.line for decl in self.history))


def check_once(keyword: str, previous: FromRule | _ForwardDecl | _DynamicDecl | _ShardsDecl | None,
               at: Position) -> None:
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

