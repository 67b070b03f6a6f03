"""The one place where I/O meets the protocol: sockets <-> sessions <-> sections.

Runs entirely in the I/O thread, except what it hands to the workers.

- ``Server`` owns the reactor's listeners (peers, stats sockets), the links to
  peers, the sections (``aggregations``), the workers and the periodic timers.
- ``PeerLink`` is the transport protocol of one peer connection: it feeds the
  socket's bytes to a ``PeerSession``, acts on the session's events (route
  tables, batch updates to the workers, answer resync requests, ask for a
  resync at every new session), and writes what the session queued.
- Pushes: workers mark changed keys dirty and wake the loop once per burst;
  ``push_round`` then sends each changed aggregate once to every peer that
  takes its table. A peer whose socket buffer is above its high-water mark
  gets its changed keys parked in a per-table set instead, drained when the
  buffer goes down: what waits for a slow peer is a set of keys, never a
  queue of messages.
"""

from __future__ import annotations

import collections
import logging
import os
import random
import socket
import time
from typing import Callable

from .aggregation import Route, RouteKind, Section
from .config import Config, Peer, PeerRole
from .loop import Reactor
from .schema import KeyType
from .session import (
    HANDSHAKE_TIMEOUT,
    AckReceived,
    Closed,
    Established,
    Ignored,
    PeerSession,
    ResyncRequested,
    Role,
    SessionStats,
    TableDefined,
    TeachFinished,
    UpdatesReceived,
)
from .table import AggTable, now_ms
from .tls import TLSLayer, section_contexts
from .transport import Listener, StreamTransport, connect
from .workers import Workers

log = logging.getLogger(__name__)

#: How often sessions' timers (heartbeat, silence, handshake) are checked.
SESSION_TICK = 0.1
#: How often the tables' own changes (expiries, rate period ends) are computed.
REFRESH_TICK = 0.1
#: Delay before redialing an up peer after a failed or closed session; a
#: random part avoids two aggregators redialing in lockstep.
RECONNECT_DELAY = 1.0
RECONNECT_JITTER = 0.5
#: Updates read but not yet applied by the workers above which the I/O thread
#: stops reading from peers (resumes below half): bounded memory under overload.
MAX_PENDING_UPDATES = 50_000
#: Keys pushed per loop turn at most (a stripe is never cut): the rest goes on
#: at the next turn, after reads, timers and heartbeats.
PUSH_BUDGET = 20_000
#: Push rounds are at least this far apart (s); the first after a quiet spell goes at once.
PUSH_INTERVAL = 0.005


#: Bytes of hello read, at most, to find which section a connection is for.
HELLO_SNIFF_LIMIT = 1024


class PeerLink:
    """One connection to one peer: transport protocol around a PeerSession.

    An accepted connection may be for any section listening on that address:
    the hello's second line (the name the caller has for us) picks the
    section before its session is made; no match goes to the first section,
    whose session answers 503.
    """

    def __init__(self, server: "Server", sections: list[Section] | Section, role: Role, peer: Peer | None = None,
                 *, address: str = "", tls: bool = False) -> None:
        self.server = server
        self.tls = tls
        self.candidates = sections if isinstance(sections, list) else [sections]
        self.section = self.candidates[0]
        self._sniffed = bytearray()
        self.role = role
        self.peer = peer
        self.transport: StreamTransport | None = None
        self.session: PeerSession | None = None
        self.routes: dict[int, Route] = {}
        self.backlog: dict[bytes, set[bytes]] = {}
        self.synced = False  #: the peer taught us after our resync request
        self.address = address

    # -- transport protocol ---------------------------------------------------------

    def connection_made(self, transport: StreamTransport) -> None:
        self.transport = transport
        self.address = _format_address(transport.peername)
        self.server.links.add(self)
        self._accepted_at = time.monotonic()
        if self.role is Role.CONNECTING:
            assert self.peer is not None
            self.session = PeerSession(
                Role.CONNECTING, self.section.local.name, time.monotonic(), remote_name=self.peer.name,
                pid=os.getpid(), downgraded=self.server.downgraded.get((self.section.name, self.peer.name), False),
            )
            self.flush()
        elif len(self.candidates) == 1:
            self._start_accepting(self.section)

    def _start_accepting(self, section: Section) -> None:
        self.section = section
        self.session = PeerSession(Role.ACCEPTING, section.local.name, time.monotonic(), is_declared=self._is_declared)

    def _sniff(self, data: bytes) -> bytes | None:
        """Buffer the hello until its second line names a section; then start that section's session."""
        self._sniffed += data
        lines = bytes(self._sniffed).split(b"\n")
        if len(lines) < 3 and len(self._sniffed) < HELLO_SNIFF_LIMIT:
            return None
        callee = lines[1].rstrip(b"\r").decode("utf-8", "surrogateescape") if len(lines) > 1 else ""
        section = next((c for c in self.candidates if c.local.name == callee), self.candidates[0])
        self._start_accepting(section)
        data, self._sniffed = bytes(self._sniffed), bytearray()
        return data

    def data_received(self, data: bytes) -> None:
        if self.session is None:
            sniffed = self._sniff(data)
            if sniffed is None:
                return
            data = sniffed
        self.handle(self.session.receive_data(data, time.monotonic()))  # type: ignore[union-attr]

    def eof_received(self) -> None:
        if self.session is not None:
            self.handle(self.session.receive_data(b"", time.monotonic()))

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.link_lost(self, exc)

    def writable(self) -> None:
        self.drain_backlog()

    # -- session events -------------------------------------------------------------

    def _is_declared(self, name: str) -> bool:
        peer = self.section.peer(name)
        if peer is None and self.section.config.dynamic_peers and name != self.section.local.name:
            peer = self.section.add_dynamic_peer(name, self.address.rsplit(":", 1)[0].strip("[]"))
            if peer is not None:
                log.info("%s: accepted undeclared peer %s from %s (dynamic-peers %d/%d)", self.section.name,
                         name, self.address, len(self.section.dynamic), self.section.config.dynamic_peers)
                return True
        if peer is None or peer.role is PeerRole.LOCAL:
            return False
        if self.server.config.global_.peer_address_check:
            # Only from the declared address: a name alone authenticates nothing.
            source = self.address.rsplit(":", 1)[0].strip("[]")
            if source != peer.address.host:
                log.warning("%s: hello as peer %s from %s, not its declared %s: refused",
                            self.section.name, name, self.address, peer.address.host)
                return False
        return True

    def handle(self, events: list) -> None:
        batches: dict[int, tuple[Route, list]] = {}
        for event in events:
            if isinstance(event, UpdatesReceived):
                route = self.routes.get(event.table.table_id)
                if route is not None and route.table is not None:
                    batch = batches.setdefault(event.table.table_id, (route, []))
                    batch[1].extend(self._keys(route.table, event.updates))
            elif isinstance(event, TableDefined):
                self._define(event.definition)
            elif isinstance(event, ResyncRequested):
                sent = self.section.teach(self.session, self.peer, now_ms(), time.monotonic())  # type: ignore[arg-type]
                log.info("%s: taught peer %s %d entries", self.section.name, self.peer.name, sent)  # type: ignore[union-attr]
            elif isinstance(event, TeachFinished):
                self.synced = True
                log.info("%s: resync from peer %s finished%s", self.section.name, self.peer.name, " (partial)" if event.partial else "")  # type: ignore[union-attr]
            elif isinstance(event, Established):
                self._established()
            elif isinstance(event, Closed):
                self._closed(event)
            elif isinstance(event, Ignored):
                log.debug("%s: peer %s: ignored message (%s)", self.section.name, self.session.peer_name, event.message.reason)  # type: ignore[union-attr]
            elif isinstance(event, AckReceived):
                pass
        if batches:
            self._submit(batches)
        self.flush()

    @staticmethod
    def _keys(table: AggTable, updates: list) -> list:
        # HAProxy stores at most len - 1 characters of a string key; so must we,
        # or a long key would aggregate apart from what the nodes count.
        definition = table.definition
        if definition.key_type != KeyType.STRING:
            return updates
        limit = max(0, definition.key_len - 1)
        return [(k[:limit], v, e) if len(k) > limit else (k, v, e) for k, v, e in updates]

    def _submit(self, batches: dict) -> None:
        index = self.section.peer_index[self.peer.name]  # type: ignore[union-attr]
        now = now_ms()
        for route, items in batches.values():
            self.server.workers.submit_updates(route.table, index, route.in_fields, items, now)
        self.server.stats_updates_in += sum(len(items) for _, items in batches.values())
        self.server.throttle_if_behind()

    def _define(self, definition) -> None:
        route = self.section.route(self.peer, definition)  # type: ignore[arg-type]
        previous = self.routes.get(definition.table_id)
        self.routes[definition.table_id] = route
        if route.kind is RouteKind.IGNORE and (previous is None or previous.kind is not RouteKind.IGNORE):
            log.info(
                "%s: peer %s: table %r ignored: %s", self.section.name, self.peer.name,  # type: ignore[union-attr]
                definition.name.decode("utf-8", "backslashreplace"), route.reason,
            )

    def _established(self) -> None:
        session = self.session
        assert session is not None
        self.peer = self.section.peer(session.peer_name)  # type: ignore[arg-type]
        self.server.link_established(self)
        self.server.last_hello[(self.section.name, self.peer.name)] = time.time()  # type: ignore[union-attr]
        log.info(
            "%s: session with peer %s (%s) established, protocol %d.%d",
            self.section.name, self.peer.name, self.address, *session.version,  # type: ignore[union-attr]
        )
        # A restarted aggregator has nothing: ask every peer for a full copy
        # at every new session (DESIGN.md §3.5).
        session.request_resync(time.monotonic())

    def _closed(self, event: Closed) -> None:
        name = self.session.peer_name if self.session else None
        if self.peer is not None and (event.error is not None or event.status not in (None, 200)):
            self.server.last_error[(self.section.name, self.peer.name)] = event.reason
        if event.status is not None and self.role is Role.CONNECTING and event.status == 502 and self.peer:
            self.server.downgraded[(self.section.name, self.peer.name)] = True
        log.log(
            logging.WARNING if event.error is not None or event.status not in (None, 200) else logging.INFO,
            "%s: session with peer %s (%s) closed: %s", self.section.name, name or "?", self.address, event.reason,
        )
        self.write_now()  # the status or error message goes out before the close
        if self.transport is not None:
            self.transport.close()

    # -- sending ----------------------------------------------------------------------

    def flush(self) -> None:
        """Have what the session queued written at the end of this loop turn (one send per turn)."""
        if self.session is not None and self.session.has_data_to_send():
            self.server.want_flush(self)

    def write_now(self) -> None:
        if self.session is not None and self.transport is not None and not self.transport.closed:
            data = self.session.data_to_send()
            if data:
                self.transport.write(data)

    def is_established(self) -> bool:
        return self.session is not None and self.session.state.value == "established"

    def push(self, table: AggTable, changed: list, now: int, bodies: list | None = None) -> None:
        """Send changed aggregates (pre-encoded ``bodies`` when given), or park their keys."""
        if self.transport is None or self.transport.above_high_water():
            self.backlog.setdefault(table.name, set()).update(k for k, _, _ in changed)
            return
        if bodies is not None:
            sent = self.section.push_batch(self.session, table, bodies, time.monotonic())  # type: ignore[arg-type]
        else:
            sent = self.section.push(self.session, table, changed, now, time.monotonic())  # type: ignore[arg-type]
        self.server.stats_updates_out += sent
        self.flush()

    def drain_backlog(self) -> None:
        if not self.backlog or not self.is_established():
            return
        backlog, self.backlog = self.backlog, {}
        now = now_ms()
        for name, keys in backlog.items():
            table = self.section.tables.get(name)
            if table is None:
                continue
            changed = []
            for key in keys:
                found = table.lookup(key, now)
                if found is not None and found[0] is not None:
                    changed.append((key, found[0], found[1]))
            self.push(table, changed, now)

    def poll(self, now: float) -> None:
        if self.session is None:
            # Still waiting for the hello that picks the section: same deadline as a handshake.
            if now - self._accepted_at >= HANDSHAKE_TIMEOUT and self.transport is not None:
                log.info("connection from %s closed: no hello within %g s", self.address, HANDSHAKE_TIMEOUT)
                self.transport.abort()
            return
        if self.session is not None:
            if self.server.reading_paused:
                self.session.not_reading(now)
            events = self.session.poll(now)
            if events or self.session.has_data_to_send():
                self.handle(events)


class Server:
    """Everything the daemon runs, wired on one reactor."""

    def __init__(self, config: Config, reactor: Reactor, *, workers: int = 1, cli_factory: Callable | None = None,
                 metrics_factory: Callable | None = None) -> None:
        self.config = config
        self.reactor = reactor
        limits = {}
        if config.global_.max_tables is not None:
            limits["max_tables"] = config.global_.max_tables
        if config.global_.max_entries is not None:
            limits["max_entries"] = config.global_.max_entries
        self.sections = [Section(s, **limits) for s in config.aggregations]
        self.tls = {s.name: section_contexts(s) for s in config.aggregations}
        self.links: set[PeerLink] = set()
        self.established: dict[tuple[str, str], PeerLink] = {}
        self.downgraded: dict[tuple[str, str], bool] = {}
        self.listeners: list[Listener] = []
        self.workers = Workers(workers, self._wake_for_push)
        self._push_pending = False
        self._last_push = 0.0
        self._to_flush: set[PeerLink] = set()
        self._push_cursor = 0
        self.reading_paused = False
        self._cli_factory = cli_factory
        self._metrics_factory = metrics_factory
        self._connecting: dict[tuple[str, str], object] = {}
        self._stopping = False
        self.started_at = time.time()
        self.stats_updates_in = 0
        self.stats_updates_out = 0
        self.last_hello: dict[tuple[str, str], float] = {}
        self.last_error: dict[tuple[str, str], str] = {}
        self._totals: dict[tuple[str, str], SessionStats] = {}
        self._samples: collections.deque = collections.deque(maxlen=62)

    # -- start / stop -------------------------------------------------------------------

    def bind(self) -> None:
        """Open every listening socket (before privileges are dropped)."""
        by_address: dict[tuple[str, int], list[Section]] = {}
        for section in self.sections:
            address = section.local.address
            by_address.setdefault((address.host, address.port), []).append(section)
        for address, sections in by_address.items():
            self.listeners.append(Listener(self.reactor, address, self._acceptor(sections)))
        if self._cli_factory is not None:
            for stats in self.config.global_.stats_sockets:
                where = stats.path if stats.path is not None else (stats.address.host, stats.address.port)
                mode = stats.mode if stats.mode is not None else 0o600
                self.listeners.append(Listener(self.reactor, where, self._protocol_acceptor(self._cli_factory),
                                               unix_mode=mode))
        prometheus = self.config.global_.prometheus
        if prometheus is not None and self._metrics_factory is not None:
            self.listeners.append(Listener(self.reactor, (prometheus.host, prometheus.port),
                                           self._protocol_acceptor(self._metrics_factory)))

    def start(self) -> None:
        self.workers.start()
        self.reactor.call_later(SESSION_TICK, self._session_tick)
        self.reactor.call_later(REFRESH_TICK, self._refresh_tick)
        self._sample_rates()
        for section in self.sections:
            for peer in section.config.up_peers:
                self._dial(section, peer)

    def stop(self) -> None:
        self._stopping = True
        for listener in self.listeners:
            listener.close()
        for link in list(self.links):
            if link.transport is not None:
                link.transport.abort()
        for pending in self._connecting.values():
            pending.cancel()  # type: ignore[attr-defined]
        self.workers.stop()

    # -- accepting and dialing ----------------------------------------------------------

    def _acceptor(self, sections: list[Section]) -> Callable:
        context = self.tls[sections[0].name].server
        def on_accept(sock: socket.socket, address: object) -> None:
            layer = TLSLayer(context, server_side=True) if context is not None else None
            link = PeerLink(self, sections, Role.ACCEPTING, address=_format_address(address), tls=layer is not None)
            self._start_transport(sock, link, layer)
        return on_accept

    def _start_transport(self, sock: socket.socket, link: PeerLink, layer: TLSLayer | None) -> None:
        transport = StreamTransport(self.reactor, sock, link, layer=layer)
        if layer is not None:
            # connection_made only comes once TLS is up: bound the handshake here.
            def expire() -> None:
                if link.transport is None and not transport.closed:
                    transport.abort()
            self.reactor.call_later(HANDSHAKE_TIMEOUT, expire)

    def _guess_peer(self, link: PeerLink) -> str:
        """The declared peer whose address matches a connection's source, for logs."""
        host = link.address.rsplit(":", 1)[0].strip("[]")
        for section in link.candidates:
            for peer in section.remote_peers:
                if peer.address.host == host:
                    return f"{peer.name}?"
        return "?"

    def _protocol_acceptor(self, factory: Callable) -> Callable:
        def on_accept(sock: socket.socket, address: object) -> None:
            StreamTransport(self.reactor, sock, factory(self))
        return on_accept

    def _dial(self, section: Section, peer: Peer) -> None:
        if self._stopping:
            return
        key = (section.name, peer.name)
        source = self.config.global_.source
        context = self.tls[section.name].clients.get(peer.name)
        def connected(sock: socket.socket) -> None:
            self._connecting.pop(key, None)
            layer = TLSLayer(context, server_side=False) if context is not None else None
            link = PeerLink(self, section, Role.CONNECTING, peer, address=str(peer.address), tls=layer is not None)
            self._start_transport(sock, link, layer)
        def failed(exc: Exception) -> None:
            self._connecting.pop(key, None)
            log.info("%s: cannot connect to peer %s (%s): %s", section.name, peer.name, peer.address, exc)
            self._redial_later(section, peer)
        self._connecting[key] = connect(
            self.reactor, (peer.address.host, peer.address.port), connected, failed,
            source=(source.host, source.port) if source is not None else None,
        )

    def _redial_later(self, section: Section, peer: Peer) -> None:
        delay = RECONNECT_DELAY + random.random() * RECONNECT_JITTER
        self.reactor.call_later(delay, self._dial, section, peer)

    # -- link bookkeeping -----------------------------------------------------------------

    def link_established(self, link: PeerLink) -> None:
        key = (link.section.name, link.peer.name)  # type: ignore[union-attr]
        old = self.established.get(key)
        if old is not None and old is not link:
            # The newest hello wins (HAProxy's rule): drop the older session.
            log.info("%s: peer %s reconnected; closing its previous session", *key)
            if old.session is not None:
                old.session.close("replaced by a newer session")
            if old.transport is not None:
                old.transport.abort()
        self.established[key] = link

    def link_lost(self, link: PeerLink, exc: Exception | None) -> None:
        if link.transport is None:
            # Never got as far as connection_made: the TLS handshake failed or timed out.
            name = link.peer.name if link.peer is not None else self._guess_peer(link)
            log.warning("%s: TLS handshake with peer %s (%s) failed: %s",
                        link.section.name, name, link.address, exc or "timeout")
            if link.role is Role.CONNECTING and link.peer is not None:
                self._redial_later(link.section, link.peer)
            return
        self.links.discard(link)
        if link.session is not None and link.session.state.value != "closed":
            link.session.close(f"connection lost: {exc}" if exc else "connection lost")
            log.info("%s: session with peer %s (%s) lost%s", link.section.name, link.session.peer_name or "?",
                     link.address, f": {exc}" if exc else "")
        if link.peer is not None:
            key = (link.section.name, link.peer.name)
            if link.session is not None and link.session.established_at is not None:
                self._add_totals(key, link.session.stats)
            if self.established.get(key) is link:
                del self.established[key]
            if link.role is Role.CONNECTING:
                self._redial_later(link.section, link.peer)

    # -- timers and pushes -------------------------------------------------------------------

    def _session_tick(self) -> None:
        now = time.monotonic()
        for link in list(self.links):
            link.poll(now)
        self.reactor.call_later(SESSION_TICK, self._session_tick)

    def _refresh_tick(self) -> None:
        now = now_ms()
        for section in self.sections:
            for table in list(section.tables.values()):
                self.workers.submit_refresh(table, now)
        self.reactor.call_later(REFRESH_TICK, self._refresh_tick)

    # -- counters for the CLI and metrics --------------------------------------------------

    def _add_totals(self, key: tuple[str, str], stats: SessionStats) -> None:
        total = self._totals.setdefault(key, SessionStats())
        for name in ("messages_in", "messages_out", "bytes_in", "bytes_out", "updates_in", "updates_out",
                     "heartbeats_in", "heartbeats_out"):
            setattr(total, name, getattr(total, name) + getattr(stats, name))

    def peer_totals(self, section: str, peer: str) -> SessionStats:
        """A peer's traffic over every session (ended ones and the current one): monotonic."""
        total = SessionStats()
        closed = self._totals.get((section, peer))
        link = self.established.get((section, peer))
        for stats in (closed, link.session.stats if link is not None and link.session is not None else None):
            if stats is not None:
                for name in ("messages_in", "messages_out", "bytes_in", "bytes_out", "updates_in", "updates_out",
                             "heartbeats_in", "heartbeats_out"):
                    setattr(total, name, getattr(total, name) + getattr(stats, name))
        return total

    def _sample_rates(self) -> None:
        self._samples.append((time.monotonic(), self.stats_updates_in, self.stats_updates_out))
        self.reactor.call_later(1.0, self._sample_rates)

    def rates(self) -> dict:
        """Updates received and pushed per second, over the last second and the last minute."""
        out = {}
        samples = self._samples
        for label, back in (("1s", 1), ("1m", 60)):
            if len(samples) > back:
                (t0, in0, out0), (t1, in1, out1) = samples[-1 - back], samples[-1]
                span = max(t1 - t0, 1e-9)
                out[f"updates_received_per_s_{label}"] = round((in1 - in0) / span)
                out[f"updates_pushed_per_s_{label}"] = round((out1 - out0) / span)
            else:
                out[f"updates_received_per_s_{label}"] = out[f"updates_pushed_per_s_{label}"] = None
        return out

    def clear_table(self, section: Section, table: AggTable, key: bytes | None) -> int:
        """Forget entries, and push each cleared key to its receivers as zeros expiring at once."""
        cleared = table.clear(key)
        if cleared:
            now = now_ms()
            changed = [(k, table.empty(), now + 1) for k in cleared]
            self._push_to_receivers(section, table, changed, now)
        return len(cleared)

    def throttle_if_behind(self) -> None:
        """Stop reading from peers while the workers have too much to apply.

        Memory stays bounded and acks keep meaning "taken": a peer whose
        socket we do not read slows down on its own (TCP flow control).
        """
        if not self.reading_paused and self.workers.pending() > MAX_PENDING_UPDATES:
            self.reading_paused = True
            for link in self.links:
                if link.transport is not None:
                    link.transport.pause_reading()

    def _resume_if_caught_up(self) -> None:
        if self.reading_paused and self.workers.pending() < MAX_PENDING_UPDATES // 2:
            self.reading_paused = False
            for link in list(self.links):
                if link.transport is not None and not link.transport.closed:
                    link.transport.resume_reading()

    def _wake_for_push(self) -> None:
        """Called by worker threads: schedule one push round in the loop.

        Nothing to do when a round is already pending: it reads the dirty
        keys when it runs, so it includes what the worker just applied. (A
        plain read of a flag another thread writes; a stale False only costs
        one needless wake-up.)
        """
        if not self._push_pending:
            self.reactor.call_soon_threadsafe(self._schedule_push)

    def _schedule_push(self) -> None:
        """A push round soon: at once after a quiet spell, else PUSH_INTERVAL after the last one.

        Spacing rounds lets each carry more keys (fewer, larger writes; a key
        changed several times goes out once) for at most PUSH_INTERVAL of delay.
        """
        if not self._push_pending:
            self._push_pending = True
            delay = self._last_push + PUSH_INTERVAL - self.reactor.time()
            if delay > 0:
                self.reactor.call_later(delay, self.push_round)
            else:
                self.reactor.call_soon(self.push_round)

    def want_flush(self, link: PeerLink) -> None:
        if not self._to_flush:
            self.reactor.call_soon(self._flush_links)
        self._to_flush.add(link)

    def _flush_links(self) -> None:
        links, self._to_flush = self._to_flush, set()
        for link in links:
            link.write_now()

    def push_round(self) -> None:
        """Push changed aggregates, at most PUSH_BUDGET keys per loop turn.

        What is left stays dirty in its stripes and the round goes on at the
        next turn, after the loop has served reads, timers and heartbeats: a
        huge backlog never blocks the loop for long.
        """
        self._push_pending = False
        self._last_push = self.reactor.time()
        now = now_ms()
        budget = PUSH_BUDGET
        for section, table in self._tables_in_turn():
            for stripe in range(len(table.stripes)):
                changed = table.take_dirty(stripe, now)
                if changed:
                    self._push_to_receivers(section, table, changed, now)
                    budget -= len(changed)
                if budget <= 0:
                    self._schedule_push()
                    self._resume_if_caught_up()
                    return
        self._resume_if_caught_up()

    def _push_to_receivers(self, section: Section, table: AggTable, changed: list, now: int) -> None:
        """Send changed keys to every established peer that takes ``table``, encoded once."""
        receivers = [link for (name, _), link in self.established.items()
                     if name == section.name and link.is_established()
                     and section.sends(table, link.peer)]  # type: ignore[arg-type]
        if receivers:
            bodies = section.encode_changes(table, changed, now)
            for link in receivers:
                link.push(table, changed, now, bodies)

    def _tables_in_turn(self) -> list:
        """Every (section, table), starting after the one a cut-short round ended with."""
        pairs = [(section, table) for section in self.sections for table in list(section.tables.values())]
        if pairs:
            self._push_cursor = (self._push_cursor + 1) % len(pairs)
            pairs = pairs[self._push_cursor:] + pairs[: self._push_cursor]
        return pairs


def _format_address(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address or "unix")
