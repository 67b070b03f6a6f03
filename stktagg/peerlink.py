"""An established peer link: a session whose peer and section are known, and its traffic.

Imports ``aggregation``, ``clock``, ``config``, ``counters``,
``backpressure``, ``schema``, ``session``, ``slices``, ``table``,
``transport`` and ``workers``. Runs in the I/O thread.

- ``SessionStage`` is what any connection that has a ``PeerSession`` does,
  in the handshake or established: write what the session queued (at the end
  of the loop turn, through the ``Outbox``), report the session's end, close
  the session when the connection is lost.
- ``PeerLink`` is the established one (``links.Handshaking`` becomes one on
  the session's ``Established`` event). It acts on the session's events:
  routes each table the peer defines (``Section.route``), hands each read's
  updates to the workers as one batch per table, answers the peer's resync
  request (a ``Teach``, sent a part per loop turn), asks for a resync itself
  at every new session. It sends pushes: when its socket buffer is above its
  high-water mark the changed keys are parked in a per-table set instead, so
  what waits for a slow peer is a set of keys, never a queue of messages.
  The parked keys and the teach are sent by one slice job per link
  (``_Sending``, run by ``slices.Slicer``) while the socket takes them: a
  part per step, paused above the high-water mark until ``writable()``,
  dropped when the session ends (issue 14).

Every method that acts takes ``now``, the clock's seconds (``clock``); the
tables' milliseconds are derived from it with ``clock.table_ms``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .aggregation import Route, RouteKind, Section, Teach
from .backpressure import Backpressure
from .clock import Clock, table_ms
from .config import Peer
from .counters import Counters, PeerKey
from .schema import KeyType
from .session import (
    Closed,
    Event,
    Ignored,
    PeerSession,
    ResyncRequested,
    State,
    Status,
    TableDefined,
    TeachFinished,
    UpdatesReceived,
)
from .slices import Slicer
from .table import AggTable, TableMode
from .transport import EventLoop, StreamTransport
from .wire import TableDefinition, UpdateBatch
from .workers import Workers

__all__ = ["LinkContext", "Outbox", "PeerLink", "SessionStage"]

log = logging.getLogger(__name__)


class Outbox:
    """Writes what sessions queued once per loop turn: many sends in one turn make one write.

    What can wait a little (acks) is written within ``LATER`` seconds instead,
    or with the next write to that peer: at low rates a read is one update, and
    its ack alone was one system call of its own (~80 us of CPU on loopback);
    the push round that follows a few milliseconds later writes to that peer
    anyway (issue 15).
    """

    LATER = 0.05

    def __init__(self, reactor: EventLoop) -> None:
        self._reactor = reactor
        self._waiting: set[SessionStage] = set()
        self._later: set[SessionStage] = set()

    def want(self, stage: SessionStage) -> None:
        if not self._waiting:
            self._reactor.call_soon(self._write)
        self._waiting.add(stage)

    def want_later(self, stage: SessionStage) -> None:
        if not self._later:
            self._reactor.call_later(self.LATER, self._write_later)
        self._later.add(stage)

    def _write(self) -> None:
        stages, self._waiting = self._waiting, set()
        for stage in stages:
            stage.write_now()

    def _write_later(self) -> None:
        stages, self._later = self._later, set()
        for stage in stages:
            stage.write_now()  # nothing when a write went out meanwhile


@dataclass(frozen=True, slots=True)
class LinkContext:
    """What links need from the rest of the server; made once by ``Server``."""

    clock: Clock
    counters: Counters
    workers: Workers
    backpressure: Backpressure
    outbox: Outbox
    peer_address_check: bool  #: accept a declared peer only from its declared address
    slices: Slicer  #: runs teaches and parked pushes a part per loop turn (issue 14)


class SessionStage:
    """A connection's stage that has a session: the handshake or an established link."""

    def __init__(self, ctx: LinkContext, transport: StreamTransport, section: Section, session: PeerSession,
                 address: str, tls: bool) -> None:
        self.ctx = ctx
        self.transport = transport
        self.section = section
        self.session = session
        self.address = address
        self.tls = tls

    def receive(self, data: bytes, now: float) -> None:
        """Bytes from the peer (``b""``: it closed)."""
        self.handle(self.session.receive_data(data, now), now)

    def handle(self, events: list[Event], now: float) -> None:
        raise NotImplementedError

    def poll(self, now: float) -> None:
        """The session tick: the session's timers, and backpressure's news.

        Our own delays never count against the peer: while we do not read
        (backpressure) it is not silent, and when a timeout is due while its
        bytes wait unread in the socket (a long loop turn of ours), the
        verdict waits for the read.
        """
        if self.ctx.backpressure.paused:
            self.session.not_reading(now)
        pending = self.session.timed_out(now) and self.transport.has_unread()
        events = self.session.poll(now, data_pending=pending)
        if events or self.session.has_data_to_send():
            self.handle(events, now)

    def writable(self) -> None:
        """The socket buffer went down below its low-water mark."""

    def flush(self) -> None:
        """Have what the session queued written at the end of this loop turn (one send per turn)."""
        if self.session.has_data_to_send():
            self.ctx.outbox.want(self)

    def write_now(self) -> None:
        if not self.transport.closed:
            data = self.session.data_to_send()
            if data:
                self.transport.write(data)

    def closed(self, event: Closed, peer: Peer | None) -> None:
        """The session ended (``peer``: whom it was with, when known): log, record a failure, close."""
        failed = event.error is not None or event.status not in (None, Status.SUCCESS)
        if peer is not None and failed:
            self.ctx.counters.error((self.section.name, peer.name), event.reason)
        log.log(logging.WARNING if failed else logging.INFO, "%s: session with peer %s (%s) closed: %s",
                self.section.name, self.session.peer_name or "?", self.address, event.reason)
        self.write_now()  # the status or error message goes out before the close
        self.transport.close()

    def lost(self, exc: Exception | None) -> None:
        """The connection is gone: end the session if it was not ended yet."""
        if self.session.state is not State.CLOSED:
            self.session.close(f"connection lost: {exc}" if exc else "connection lost")
            log.info("%s: session with peer %s (%s) lost%s", self.section.name, self.session.peer_name or "?",
                     self.address, f": {exc}" if exc else "")


class PeerLink(SessionStage):
    """An established session with a known peer (see the module docstring)."""

    def __init__(self, ctx: LinkContext, transport: StreamTransport, section: Section, session: PeerSession,
                 peer: Peer, address: str, tls: bool) -> None:
        super().__init__(ctx, transport, section, session, address, tls)
        self.peer = peer
        self.key: PeerKey = (section.name, peer.name)
        self.routes: dict[int, Route] = {}
        self.definitions: dict[int, TableDefinition] = {}  #: the peer's tables, for ``reroute``
        self.declared: set[bytes] = set()  #: the names of the tables the peer defined (history tables go to those)
        self.wholes: list[tuple[AggTable, int]] = []  #: tables to send whole (``send_whole``), from this stripe on
        self.backlog: dict[bytes, set[bytes]] = {}  #: table name -> keys waiting for a slow peer
        self.synced = False  #: the peer taught us after our resync request
        self.teach: Teach | None = None  #: our resync answer, while it is under way
        self._sending: _Sending | None = None  #: the slice job sending the backlog and the teach

    def start(self, now: float) -> None:
        """The session was just established (and the link registered)."""
        self.ctx.counters.hello(self.key, self.ctx.clock.wall())
        log.info("%s: session with peer %s (%s) established, protocol %d.%d",
                 self.section.name, self.peer.name, self.address, *self.session.version)
        # A restarted aggregator has nothing: ask every peer for a full copy
        # at every new session (DESIGN.md §3.5).
        self.session.request_resync(now)

    def is_established(self) -> bool:
        return self.session.state is State.ESTABLISHED

    # -- session events ---------------------------------------------------------------

    def handle(self, events: list[Event], now: float) -> None:
        batches: dict[int, tuple[Route, list]] = {}
        urgent = not events  # a poll's heartbeat, say
        for event in events:
            if not isinstance(event, UpdatesReceived):
                urgent = True
            if isinstance(event, UpdatesReceived):
                route = self.routes.get(event.table.table_id)
                if route is not None and route.table is not None:
                    batch = batches.setdefault(event.table.table_id, (route, []))
                    batch[1].extend(self._keys(route.table, event.updates))
            elif isinstance(event, TableDefined):
                self._define(event.definition)
            elif isinstance(event, ResyncRequested):
                self._start_teach()
            elif isinstance(event, TeachFinished):
                self.synced = True
                log.info("%s: resync from peer %s finished%s", self.section.name, self.peer.name,
                         " (partial)" if event.partial else "")
            elif isinstance(event, Closed):
                self.closed(event, self.peer)
            elif isinstance(event, Ignored):
                log.debug("%s: peer %s: ignored message (%s)", self.section.name, self.peer.name,
                          event.message.reason)
        if batches:
            self._submit(batches, now)
        if urgent:
            self.flush()
        elif self.session.has_data_to_send():
            self.ctx.outbox.want_later(self)  # acks only: with the next push, or soon

    @staticmethod
    def _keys(table: AggTable, updates: list) -> list:
        # HAProxy stores at most len - 1 characters of a string key; so must we,
        # or a long key would aggregate apart from what the nodes count.
        definition = table.definition
        if definition.key_type != KeyType.STRING:
            return updates
        limit = max(0, definition.key_len - 1)
        return [(k[:limit], v, e) if len(k) > limit else (k, v, e) for k, v, e in updates]

    def _submit(self, batches: dict[int, tuple[Route, list]], now: float) -> None:
        index = self.section.peer_index[self.peer.name]
        ms = table_ms(now)
        workers = self.ctx.workers
        for route, items in batches.values():
            workers.submit_updates(route.table, index, route.in_fields, items, ms)
        self.ctx.counters.updates_in += sum(len(items) for _, items in batches.values())
        self.ctx.backpressure.check()

    def declares(self, table: AggTable) -> bool:
        """Whether the peer is sent ``table`` in this session: a history table only once the
        peer defined it (HAProxy defines every table it has when it teaches us, §8.2)."""
        return table.mode is not TableMode.HISTORY or table.name in self.declared

    def _define(self, definition: TableDefinition) -> None:
        if definition.name not in self.declared:
            self.declared.add(definition.name)
            history = self.section.tables.get(definition.name)
            if history is not None and history.mode is TableMode.HISTORY:
                self.send_whole(history)
        route = self.section.route(self.peer, definition)
        previous = self.routes.get(definition.table_id)
        self.routes[definition.table_id] = route
        self.definitions[definition.table_id] = definition
        if route.kind is RouteKind.IGNORE and (previous is None or previous.kind is not RouteKind.IGNORE):
            log.info("%s: peer %s: table %r ignored: %s", self.section.name, self.peer.name,
                     definition.name.decode("utf-8", "backslashreplace"), route.reason)

    def reroute(self, now: float) -> None:
        """The section's rules changed (a reload): route each table the peer defined again.

        A table that becomes an input had its updates ignored until now: the peer is asked
        for a resync (HAProxy answers one at any time), so its sum starts from the peer's
        whole table, not from the next changes.
        """
        gained = False
        for table_id, definition in self.definitions.items():
            before = self.routes.get(table_id)
            self._define(definition)
            after = self.routes[table_id]
            if after.table is not None and (before is None or before.table is not after.table):
                gained = True
        if gained and self.is_established():
            self.session.request_resync(now)
            self.synced = False
            self.flush()

    # -- pushes, teaches ----------------------------------------------------------------

    def push(self, table: AggTable, changed: list, now: float, batch: UpdateBatch | None = None) -> None:
        """Send changed aggregates ``(key, values, expire_at)`` (pre-encoded ``batch`` when given),
        or park their keys while the socket buffer is above its high-water mark."""
        if self._parked(table, (k for k, _, _ in changed)):
            return
        if batch is not None:
            sent = self.section.push_batch(self.session, table, batch, now)
        else:
            sent = self.section.push(self.session, table, changed, now)
        self.ctx.counters.updates_out += sent
        self.flush()

    def push_encoded(self, table: AggTable, keys: list[bytes], now: float, batch: UpdateBatch) -> None:
        """``push`` of keys whose updates are encoded in ``batch`` (``AggTable.take_encoded``)."""
        if self._parked(table, keys):
            return
        self.ctx.counters.updates_out += self.section.push_batch(self.session, table, batch, now)
        self.flush()

    def send_whole(self, table: AggTable) -> None:
        """Send every entry of ``table``, a part at a time: a stripe's keys are parked at a step
        (``send_some``) and go out as parked keys do (``_drain_backlog``, with their values then)."""
        self.wholes.append((table, 0))
        self._want_sending()

    def _parked(self, table: AggTable, keys) -> bool:
        """Park ``keys`` for later when the socket buffer is above its high-water mark."""
        if not self.transport.above_high_water():
            return False
        self.backlog.setdefault(table.name, set()).update(keys)
        self._want_sending()
        return True

    def writable(self) -> None:
        """The socket buffer went down below its low-water mark: the parked keys and the teach go on."""
        self.ctx.slices.wake()

    def lost(self, exc: Exception | None) -> None:
        super().lost(exc)
        self._stop_sending()

    def _start_teach(self) -> None:
        """Answer the peer's resync request, a part per loop turn (``send_some``).

        A new request while a teach is under way starts it again from the
        beginning; the peer gets one ``00 01``, at the end.
        """
        self.teach = self.section.teach(self.session, self.peer)
        log.debug("%s: teaching peer %s", self.section.name, self.peer.name)
        self._want_sending()

    def _want_sending(self) -> None:
        if self._sending is None:
            self._sending = _Sending(self)
            self.ctx.slices.add(self._sending)

    def _stop_sending(self) -> None:
        self.teach = None
        self.backlog = {}
        self.wholes = []
        if self._sending is not None:
            self._sending.cancelled = True
            self.ctx.slices.discard(self._sending)
            self._sending = None

    def send_some(self, now: float, keys: int) -> bool:
        """One slice of what waits to be sent: about ``keys`` parked keys, else of the teach.

        Returns:
            True once nothing waits (the slice job ends; a new one starts when
            something is parked or taught again).
        """
        if not self.is_established():
            self._stop_sending()
            return True
        if self.backlog:
            self._drain_backlog(now, keys)
        elif self.wholes:
            table, stripe = self.wholes[0]
            found = table.stripe_keys(stripe)
            if found:
                self.backlog.setdefault(table.name, set()).update(found)
            self.wholes[0] = (table, stripe + 1)
            if stripe + 1 >= len(table.stripes):
                del self.wholes[0]
        elif self.teach is not None and self.teach.step(now, keys):
            log.info("%s: taught peer %s %d entries", self.section.name, self.peer.name, self.teach.sent)
            self.teach = None
        self.flush()
        if self.backlog or self.wholes or self.teach is not None:
            return False
        self._sending = None
        return True

    def _drain_backlog(self, now: float, keys: int) -> None:
        """Push the current aggregates of up to ``keys`` parked keys of one table.

        A parked key no longer in the table was cleared (``clear table``) or
        evicted since: the peer is sent zeros expiring at once, as a clear
        sends, so that it does not keep an aggregate we no longer have.
        """
        name, parked = next(iter(self.backlog.items()))
        taken = [parked.pop() for _ in range(min(keys, len(parked)))]
        if not parked:
            del self.backlog[name]
        table = self.section.tables.get(name)
        if table is None:
            return
        ms = table_ms(now)
        changed = []
        empty = None
        for key in taken:
            found = table.lookup(key, ms)
            if found is None:
                empty = table.empty() if empty is None else empty
                changed.append((key, empty, ms + 1))
            elif found[0] is not None:
                changed.append((key, found[0], found[1]))
        if changed:
            self.push(table, changed, now, self.section.encode_changes(table, changed, now))


class _Sending:
    """A link's ``slices.SliceJob``: its parked keys and its teach, sent while its socket takes them."""

    def __init__(self, link: PeerLink) -> None:
        self.link = link
        self.cancelled = False

    def ready(self) -> bool:
        return not self.link.transport.above_high_water()

    def step(self, now: float, keys: int) -> bool:
        return self.link.send_some(now, keys)
