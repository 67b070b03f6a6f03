"""One ``aggregations`` section: which table goes where, and what each peer is sent.

No sockets, no clock reading: ``now`` is passed in, in the clock's seconds
(``clock.Clock.now``), which is what sessions take; the tables' milliseconds
are derived from it with ``clock.table_ms``, here and nowhere else in this
module. Imports ``clock`` (the conversion only), ``config`` (the model),
``schema``, ``wire``, ``table`` and ``session`` (to call its send methods).

Routing (DESIGN.md §3.1 and §3.4), per table a peer defines:
- from a down peer (a HAProxy node or a lower aggregator): a table whose
  suffix is on the ``forward`` line is ignored; otherwise the ``from`` rule
  names the output table (``mytable.local`` -> ``mytable.aggr``), or says
  the table is not an input (an output suffix, an unlisted suffix);
- from an up peer: a table whose suffix is on the ``forward`` line is kept
  as is (latest entry wins, whichever member of the group sent it) and
  passed to every down peer; anything else is ignored.

What each peer is sent: aggregate tables go to every peer (down and up,
the sender included); forwarded tables go to down peers only. A resync
answer is a ``Teach``, which the caller steps a part at a time (issue 14).

History tables (issue 18): for each ``history`` line, every aggregate table
whose suffix is the line's source gets a table named with the line's
target suffix (``mytable.aggr`` -> ``mytable.yday``), same key and data
types, created with it (``recorder`` fills it). It goes to every peer, as
an aggregate, but only to a peer that declared it (``peerlink``): it is not
in a resync answer. A peer's own table with a history suffix is ignored.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

from .clock import table_ms
from .config import Address, Aggregations, HistoryLine, Peer, PeerRole, strip_positions, table_suffix
from .schema import Field
from .session import OutTable, PeerSession
from .table import AggTable, TableMode
from .wire import TableDefinition, UpdateBatch, compile_body_encoder

log = logging.getLogger(__name__)

#: Tables per section at most, unless ``max-tables`` says otherwise.
MAX_TABLES = 256


class RouteKind(enum.Enum):
    AGGREGATE = "aggregate"
    FORWARD = "forward"
    IGNORE = "ignore"


@dataclass(frozen=True, slots=True)
class Route:
    """What to do with the updates of one table a peer defined."""

    kind: RouteKind
    table: AggTable | None
    in_fields: tuple[Field, ...]
    reason: str = ""


@dataclass(frozen=True, slots=True)
class SectionChanges:
    """What a reload changed in a section (``Section.reconfigure``), for the server to apply."""

    removed: tuple[Peer, ...] = ()  #: declared before, not now: their sessions end
    changed: tuple[Peer, ...] = ()  #: their address, role, group or TLS options changed: sessions restart
    added: tuple[Peer, ...] = ()  #: new remote peers
    rules: bool = False  #: the ``from`` rule or ``forward`` changed: every link is routed again
    local: bool = False  #: the local peer line changed: every session restarts
    history: bool = False  #: the ``history`` lines changed (their tables were made or dropped)

    def __bool__(self) -> bool:
        return bool(self.removed or self.changed or self.added or self.rules or self.local or self.history)


class Section:
    """The state of one ``aggregations`` section: its peers' tables and the outputs."""

    def __init__(self, config: Aggregations, *, max_tables: int = MAX_TABLES, **table_options) -> None:
        self.config = config
        self.name = config.name
        self.local = config.local_peer
        #: declared remote peers, then the dynamic ones as they come (an index is for good)
        self.remote_peers: list[Peer] = list(config.remote_peers)
        self.peer_index = {p.name: i for i, p in enumerate(self.remote_peers)}
        self._by_name = {p.name: p for p in config.peers}
        self.dynamic: list[str] = []
        #: peers a reload removed: their index stays reserved (``reconfigure``)
        self.removed: set[str] = set()
        self.forward = frozenset(config.forward)
        self.tables: dict[bytes, AggTable] = {}
        #: the source table of each aggregate table (for ``show aggrs``)
        self.sources: dict[bytes, bytes] = {}
        #: each peer's own definition of each table it sent us: (peer index, name) -> definition
        self.input_definitions: dict[tuple[int, bytes], TableDefinition] = {}
        self._table_options = table_options
        self.max_tables = max_tables
        self.history: tuple[HistoryLine, ...] = config.history
        #: each history table's source table (its line: the one whose target is its suffix)
        self.history_sources: dict[bytes, bytes] = {}

    def peer(self, name: str) -> Peer | None:
        return self._by_name.get(name)

    def reconfigure(self, config: Aggregations) -> SectionChanges:
        """Take the reloaded configuration of this section (same name), keeping every table.

        A peer's index is for good (the tables' records carry it): a new peer
        gets the next one; a removed peer's index is not reused, and its part of
        each aggregate stays until its entries expire, as that of a node that
        went away (``clear table`` drops it at once); a peer declared again
        later gets its old index back. Dynamic peers stay. What changed is
        returned for the server to act on (sessions to end, peers to dial,
        links to route again); nothing here touches a session.
        """
        old = {p.name: p for p in self.config.peers}
        new = {p.name: p for p in config.peers}
        remote = [p for p in config.peers if p.role is not PeerRole.LOCAL]
        removed = tuple(p for name, p in old.items() if name not in new and p.role is not PeerRole.LOCAL)
        changed = tuple(p for p in remote if p.name in old and strip_positions(old[p.name]) != strip_positions(p))
        added = tuple(p for p in remote if p.name not in old and p.name not in self.peer_index)
        returning = [p for p in remote if p.name not in old and p.name in self.peer_index]
        rules = (strip_positions(config.from_rule) != strip_positions(self.config.from_rule)
                 or config.forward != self.config.forward)
        # The listener's certificate, CA and verify mode only concern new handshakes (the
        # server reloads its TLS contexts): the sessions restart for a new name, address or ssl.
        local = (config.local_peer.name, config.local_peer.address, config.local_peer.ssl) \
            != (self.local.name, self.local.address, self.local.ssl)
        for peer in remote:
            if peer.name in self.peer_index:
                self.remote_peers[self.peer_index[peer.name]] = peer
            else:
                self.peer_index[peer.name] = len(self.remote_peers)
                self.remote_peers.append(peer)
            if peer.name in self.dynamic:  # declared now: no longer counted as dynamic
                self.dynamic.remove(peer.name)
        self.config = config
        self.local = config.local_peer
        self.forward = frozenset(config.forward)
        self._by_name = {p.name: p for p in config.peers}
        for name in self.dynamic:
            self._by_name[name] = self.remote_peers[self.peer_index[name]]
        self.removed = {p.name for p in self.remote_peers} - set(self._by_name)
        history = strip_positions(config.history) != strip_positions(self.history)
        self._rehistory(config.history)
        return SectionChanges(removed, changed, added + tuple(returning), rules, local, history)

    def _rehistory(self, lines: tuple[HistoryLine, ...]) -> None:
        """Take a reload's history lines: the tables of a line gone are dropped (the nodes'
        copies expire within two buckets), those of a new line made for every aggregate."""
        self.history = lines
        pairs = {(line.source, line.target) for line in lines}
        for name, source in list(self.history_sources.items()):
            suffixes = (table_suffix(source.decode("utf-8", "surrogateescape")),
                        table_suffix(name.decode("utf-8", "surrogateescape")))
            if suffixes not in pairs:
                del self.history_sources[name]
                self.tables.pop(name, None)
                self.sources.pop(name, None)
        for table in [t for t in self.tables.values() if t.mode is TableMode.AGGREGATE]:
            self.add_history_tables(table.definition)

    def declared_peers(self) -> list[tuple[int, Peer]]:
        """``(index, peer)`` of the remote peers this section has now (not those a reload removed)."""
        return [(i, p) for i, p in enumerate(self.remote_peers) if p.name not in self.removed]

    def add_dynamic_peer(self, name: str, host: str) -> Peer | None:
        """Accept an undeclared peer (``dynamic-peers``) while there is room; None when full.

        It becomes a down peer known by the address it came from. Names are
        what a hello says: printable, without spaces, at most 64 characters.
        """
        if name in self._by_name:
            return self._by_name[name]
        if len(self.dynamic) >= self.config.dynamic_peers or not (0 < len(name) <= 64 and name.isprintable()):
            return None
        peer = Peer(name, Address(host, 0), PeerRole.DOWN, None, False, None, None, None, self.config.position)
        self._by_name[name] = peer
        self.peer_index[name] = len(self.remote_peers)
        self.remote_peers.append(peer)
        self.dynamic.append(name)
        return peer

    # -- routing ------------------------------------------------------------------

    def route(self, peer: Peer, definition: TableDefinition) -> Route:
        """Decide what to do with a table ``peer`` defined; create its output table."""
        name = definition.name.decode("utf-8", "surrogateescape")
        codec = definition.codec
        if not codec.decodable:
            return Route(RouteKind.IGNORE, None, (), "its updates cannot be parsed")
        is_forwarded = table_suffix(name) in self.forward
        if peer.role is PeerRole.UP:
            if not is_forwarded:
                return Route(RouteKind.IGNORE, None, (), "tables from up peers are only forwarded")
            table = self._table(definition, definition.name, TableMode.FORWARD)
            return self._checked(table, definition, RouteKind.FORWARD)
        if is_forwarded:
            return Route(RouteKind.IGNORE, None, (), "forwarded tables are not taken from down peers")
        if any(table_suffix(name) == line.target for line in self.history):
            return Route(RouteKind.IGNORE, None, (), "it is a history table (ours)")
        output = self.config.from_rule.output_name(name)
        if output is None:
            if table_suffix(name) == self.config.from_rule.to:
                return Route(RouteKind.IGNORE, None, (), "it is an output table (ours)")
            return Route(RouteKind.IGNORE, None, (), "no 'from' rule matches it")
        if not definition.params_complete or any(f.info.has_period and not f.period for f in codec.fields):
            # The sum of rates needs each rate's period (peers-protocol.md §6.5).
            return Route(RouteKind.IGNORE, None, (), "its definition lacks rate periods or array sizes")
        out_name = output.encode("utf-8", "surrogateescape")
        table = self._table(definition, out_name, TableMode.AGGREGATE)
        if table is not None:
            self.sources.setdefault(out_name, definition.name)
            self.input_definitions[(self.peer_index[peer.name], definition.name)] = definition
        return self._checked(table, definition, RouteKind.AGGREGATE)

    def _table(self, definition: TableDefinition, out_name: bytes, mode: TableMode) -> AggTable | None:
        table = self.tables.get(out_name)
        if table is None:
            if len(self.tables) >= self.max_tables:
                return None  # a peer defining thousands of tables must not cost unbounded memory
            out_def = TableDefinition(
                0, out_name, definition.key_type, definition.key_len, definition.data_types,
                definition.expire or 0, definition.params,
            )
            table = self.tables[out_name] = AggTable(out_def, mode, **self._table_options)
            if mode is TableMode.AGGREGATE:
                self.add_history_tables(out_def)
        return table

    def add_history_tables(self, source: TableDefinition) -> list[AggTable]:
        """The history tables of aggregate table ``source`` (made when missing, while there is
        room); each is ``source``'s definition under its line's name."""
        name = source.name.decode("utf-8", "surrogateescape")
        made = []
        for line in self.history:
            if table_suffix(name) != line.source:
                continue
            out_name = (name[: len(name) - len(line.source)] + line.target).encode("utf-8", "surrogateescape")
            table = self.tables.get(out_name)
            if table is None:
                if len(self.tables) >= self.max_tables:
                    continue
                out_def = TableDefinition(0, out_name, source.key_type, source.key_len, source.data_types,
                                          source.expire or 0, source.params)
                table = self.tables[out_name] = AggTable(out_def, TableMode.HISTORY, **self._table_options)
                self.sources[out_name] = source.name
            self.history_sources[out_name] = source.name
            made.append(table)
        return made

    def _checked(self, table: AggTable | None, definition: TableDefinition, kind: RouteKind) -> Route:
        if table is None:
            return Route(RouteKind.IGNORE, None, (), f"the section already has {self.max_tables} tables (max-tables)")
        out = table.definition
        if (definition.key_type, definition.key_len) != (out.key_type, out.key_len):
            return Route(RouteKind.IGNORE, None, (), "its key type or length differs from the other peers'")
        return Route(kind, table, definition.codec.fields)

    @staticmethod
    def sends(table: AggTable, peer: Peer) -> bool:
        """Whether ``peer`` is sent ``table``: aggregates and history tables go to all (history
        tables only once the peer declared them: ``peerlink``), forwarded ones to down peers."""
        return table.mode is not TableMode.FORWARD or peer.role is not PeerRole.UP

    def tables_for(self, peer: Peer) -> list[AggTable]:
        """The tables ``peer`` is sent."""
        return [t for t in self.tables.values() if self.sends(t, peer)]

    # -- sending ------------------------------------------------------------------

    @staticmethod
    def out_table(session: PeerSession, table: AggTable) -> OutTable:
        d = table.definition
        return session.define_table(d.name, d.key_type, d.key_len, d.data_types, d.expire or 0, d.params)

    @staticmethod
    def encode_changes(table: AggTable, changed: list, now: float) -> UpdateBatch | None:
        """The changed keys' updates, encoded and framed once for every peer (None: per peer).

        ``changed`` holds ``(key, values, expire_at)``, ``expire_at`` in table ms.
        """
        d = table.definition
        encode = compile_body_encoder(d.key_type, d.key_len, d.data_types, d.params)
        if encode is None:
            return None
        ms = table_ms(now)
        return UpdateBatch([(encode(k, values), exp - ms) for k, values, exp in changed if exp > ms])

    def push_batch(self, session: PeerSession, table: AggTable, batch: UpdateBatch, now: float) -> int:
        session.send_batch(self.out_table(session, table), batch, now)
        return len(batch)

    def push(self, session: PeerSession, table: AggTable, changed: list, now: float) -> int:
        """Send changed aggregates ``(key, values, expire_at)`` (``expire_at`` in table ms); returns
        the count sent."""
        out = self.out_table(session, table)
        ms = table_ms(now)
        sent = 0
        for key, values, expire_at in changed:
            remaining = expire_at - ms
            if values is None or remaining <= 0:
                continue
            session.send_update(out, key, values, now, expire=remaining)
            sent += 1
        return sent

    def teach(self, session: PeerSession, peer: Peer) -> Teach:
        """Start answering a resync request: the peer's own last entries, then our tables.

        A HAProxy restarted hard asks for this; it gets back its own counters
        (DESIGN.md §3.5) and the current aggregates. Returns the ``Teach``,
        which sends them a part at a time (its ``step``) and then ``00 01``.
        """
        return Teach(self, session, peer)


class Teach:
    """A resync answer under way on one session, sent a part at a time (issue 14).

    What it sends is what a resync answer always sent: first, for each table
    the peer is sent, the peer's own live entries under its own table name,
    then every live aggregate, all as timed updates carrying their remaining
    life, then ``00 01``. Each ``step`` reads the next keys of one stripe
    (listed when the teach reaches the stripe) under the stripe's lock,
    encodes them once (``UpdateBatch``) and queues them on the session. A
    key gone since its stripe was listed is skipped; a key created since is
    not taught, but it is pushed, as every changed key is. Pushes go on to
    the session meanwhile, so a key changed after it was taught is sent
    again with its newer value: what the peer holds at the end is current.
    """

    def __init__(self, section: Section, session: PeerSession, peer: Peer) -> None:
        index = section.peer_index[peer.name]
        # History tables are sent once the peer declares them (peerlink), not in the answer.
        tables = [t for t in section.tables_for(peer) if t.mode is not TableMode.HISTORY]
        #: (table, the peer's own definition of its source and the peer's index, or None: the aggregates)
        self._parts: list[tuple[AggTable, TableDefinition | None, int | None]] = []
        for table in tables:
            source = section.input_definitions.get((index, section.sources.get(table.name, b"")))
            if source is not None and source.data_types == table.definition.data_types:
                self._parts.append((table, source, index))
        self._parts += [(table, None, None) for table in tables]
        self.session = session
        self.sent = 0  #: updates queued so far
        self.done = False  #: ``00 01`` was queued
        self._part = 0
        self._stripe = -1
        self._keys: list[bytes] = []  #: the current stripe's keys...
        self._at = 0  #: ...from this one on still to teach

    def step(self, now: float, keys: int) -> bool:
        """Teach about ``keys`` more keys (``00 01`` after the last one); True once done."""
        ms = table_ms(now)
        while keys > 0 and not self.done:
            if self._at >= len(self._keys):
                self._next_stripe(now)
                continue
            table, source, index = self._parts[self._part]
            part = self._keys[self._at:self._at + keys]
            self._at += len(part)
            keys -= len(part)
            rows = table.teach_rows(self._stripe, part, ms, index)
            if rows:
                self.sent += self._send(table, source, rows, now)
        return self.done

    def _next_stripe(self, now: float) -> None:
        """Move to the next stripe (of the next part when this one is done), or finish."""
        self._keys, self._at = [], 0
        while self._part < len(self._parts):
            table = self._parts[self._part][0]
            self._stripe += 1
            if self._stripe < len(table.stripes):
                self._keys = table.stripe_keys(self._stripe)
                return
            self._part, self._stripe = self._part + 1, -1
        self.session.finish_teach(now)
        self.done = True

    def _send(self, table: AggTable, source: TableDefinition | None, rows: list, now: float) -> int:
        session = self.session
        d = table.definition if source is None else source
        out = session.define_table(d.name, d.key_type, d.key_len, d.data_types, d.expire or 0, d.params)
        ms = table_ms(now)
        encode = compile_body_encoder(d.key_type, d.key_len, d.data_types, d.params)
        if encode is None:  # a layout with a server key: one update at a time
            for key, values, expire_at in rows:
                session.send_update(out, key, values, now, expire=expire_at - ms)
            return len(rows)
        batch = UpdateBatch([(encode(key, values), expire_at - ms) for key, values, expire_at in rows])
        session.send_batch(out, batch, now)
        return len(batch)
