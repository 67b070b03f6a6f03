"""The server: wires the parts that run the aggregator on one reactor and one clock.

Runs in the I/O thread, except what the workers do. Each part has one job:

- ``endpoints``: the listening sockets, and the up peers we dial;
- ``links``: each peer connection from its socket to an established
  ``peerlink.PeerLink``; ``registry``: the connections and links open;
- ``pushes``: push rounds (changed aggregates to the peers taking them);
- ``backpressure``: stop reading while the workers are behind;
- ``counters``: traffic, last hello and error per peer, update rates;
- ``workers``: the threads that apply updates to the tables;
- ``recorder``: the history lines (issue 18), when ``history-file`` is set;
- ``dashboard``: what the ``http`` listener's connections share (issue 19).

``Server`` itself owns the sections (``aggregations``), starts and stops the
parts, runs the periodic timers (session timers, table timers, rate samples)
and is the CLI's and metrics' ``status.StatusSource``: it publishes
``status.Status`` snapshots and runs the commands (``clear table``).
"""

from __future__ import annotations

import os
from types import MappingProxyType
from typing import Callable

from .aggregation import Section
from .backpressure import Backpressure
from .clock import Clock, table_ms
from .collector import FREEZE_INTERVAL, LongLived
from .config import Aggregations, Config, Peer
from .counters import Counters
from .dashboard import SCAN_TURN_BUDGET, SCAN_TURN_KEYS, Dashboard
from .endpoints import Dialer, Listeners
from .loop import TURN_BUCKETS, Reactor
from .peerlink import LinkContext, Outbox
from .pushes import PushScheduler, TableClear
from .recorder import Recorder
from .registry import LinkRegistry
from .slices import Slicer
from .status import ClearTable, LoopStats, PeerStatus, SectionStatus, SentTable, Status, TableStatus
from .tls import section_contexts
from .workers import Workers

__all__ = ["REFRESH_TICK", "SESSION_TICK", "Server"]

#: How often sessions' timers (heartbeat, silence, handshake) are checked.
SESSION_TICK = 0.1
#: How often the tables' own changes (expiries, rate period ends) are computed.
REFRESH_TICK = 0.1
#: How often the update counters are sampled for the rates.
RATE_SAMPLE_INTERVAL = 1.0
#: At stop, how long the history file's writer may take to write what is queued (s).
HISTORY_CLOSE_TIMEOUT = 10.0


class Server:
    """Everything the daemon runs, wired on one reactor and one clock.

    Args:
        config: the configuration.
        reactor: the event loop (running on ``clock.now``).
        clock: the process's clock.
        workers: worker threads (0: apply updates in the I/O thread).
        cli_factory, http_factory: make the protocol of a stats socket or
            ``http`` listener connection; called with the server.
    """

    def __init__(self, config: Config, reactor: Reactor, clock: Clock, *, workers: int = 1,
                 cli_factory: Callable | None = None, http_factory: Callable | None = None) -> None:
        self.config = config
        self.reactor = reactor
        self.clock = clock
        limits = {}
        if config.global_.max_tables is not None:
            limits["max_tables"] = config.global_.max_tables
        if config.global_.max_entries is not None:
            limits["max_entries"] = config.global_.max_entries
        self._limits = limits
        #: the sections, in configuration order; one list for good (the parts read it; a reload changes it)
        self.sections = [Section(s, **limits) for s in config.aggregations]
        #: each section's TLS contexts, shared with the listeners and the dialer (a reload replaces entries)
        self.tls = tls = {s.name: section_contexts(s) for s in config.aggregations}
        self.counters = Counters()
        self.registry = LinkRegistry(self.counters)
        self.workers = Workers(workers, self._updates_applied, self._updates_applied_here)
        self.backpressure = Backpressure(self.workers.pending, self.registry.transports)
        self.pushes = PushScheduler(reactor, clock, self.sections, self.registry, self.backpressure.release)
        #: what grows with a table (teaches, parked pushes, clears) runs here, a part per loop turn
        self.slices = Slicer(reactor, clock)
        #: what the ``http`` listener's connections share (its table scans: slices of their own, smaller)
        self.dashboard = Dashboard(self, Slicer(reactor, clock, budget=SCAN_TURN_BUDGET, turn_keys=SCAN_TURN_KEYS))
        #: the history lines' sampling and statistics (None: no ``history-file``)
        self.recorder: Recorder | None = None
        if config.global_.history_file:
            self.recorder = Recorder(config.global_.history_file, reactor, clock, self.sections, self.slices,
                                     self.workers)
        ctx = LinkContext(clock, self.counters, self.workers, self.backpressure, Outbox(reactor),
                          config.global_.peer_address_check, self.slices)
        self.listeners = Listeners(reactor, ctx, self.registry, tls)
        source = config.global_.source
        self.dialer = Dialer(reactor, ctx, self.registry, tls, (source.host, source.port) if source else None)
        self._cli_factory = cli_factory
        self._http_factory = http_factory
        self.started_at = clock.now()
        self.started_wall = clock.wall()
        #: keeps the cycle collector from walking the tables (collector)
        self.long_lived = LongLived(lambda: sum(len(t) for s in self.sections for t in s.tables.values()))

    # -- start / stop -------------------------------------------------------------------

    def bind(self) -> None:
        """Open every listening socket (before privileges are dropped)."""
        self.listeners.bind(self.config, self.sections, self, self._cli_factory, self._http_factory)

    def add_section(self, config: Aggregations) -> Section:
        """A section a reload added (``reconfigure``): its tables start empty."""
        section = Section(config, **self._limits)
        self.sections.append(section)
        return section

    def start(self) -> None:
        """Start the workers, the periodic timers and the history (its tables are served from the
        file at once); dial the up peers."""
        self.workers.start()
        if self.recorder is not None:
            self.recorder.start()
        self.reactor.call_later(SESSION_TICK, self._session_tick)
        self.reactor.call_later(REFRESH_TICK, self._refresh_tick)
        self._sample_rates()
        self.reactor.call_later(FREEZE_INTERVAL, self._freeze_tick)
        self.dialer.start(self.sections)

    def stop(self) -> None:
        """Dial no more, close the listeners, abort every connection, stop the workers."""
        self.dialer.stop()
        self.listeners.close()
        self.registry.abort_all()
        if self.recorder is not None:
            self.recorder.close(HISTORY_CLOSE_TIMEOUT)
        self.workers.stop()

    # -- timers -------------------------------------------------------------------------

    def _updates_applied(self) -> None:
        """Called by the worker threads once they have applied a burst: a push round soon."""
        self.pushes.wake()

    def _updates_applied_here(self) -> None:
        """The I/O thread applied a batch itself (``Workers.submit_updates``): a push round soon."""
        self.pushes.soon()

    def _session_tick(self) -> None:
        now = self.clock.now()
        for conn in list(self.registry.connections):
            conn.stage.poll(now)
        self.reactor.call_later(SESSION_TICK, self._session_tick)

    def _refresh_tick(self) -> None:
        ms = self.clock.now_ms()
        for section in self.sections:
            for table in list(section.tables.values()):
                self.workers.submit_refresh(table, ms)
        self.reactor.call_later(REFRESH_TICK, self._refresh_tick)

    def _freeze_tick(self) -> None:
        self.long_lived.tick()
        self.reactor.call_later(FREEZE_INTERVAL, self._freeze_tick)

    def _sample_rates(self) -> None:
        counters = self.counters
        totals = {}
        for section in self.sections:
            for _, peer in section.declared_peers():
                key = (section.name, peer.name)
                link = self.registry.established.get(key)
                traffic = counters.traffic(key, link.session.stats if link is not None else None)
                totals[key] = (traffic.updates_in, traffic.updates_out)
        counters.sample(self.clock.now(), totals)
        self.reactor.call_later(RATE_SAMPLE_INTERVAL, self._sample_rates)

    # -- the status view and the commands (status.StatusSource) ---------------------------

    def status(self) -> Status:
        """A snapshot of every section, peer and table, and of the counters, now."""
        counters = self.counters
        return Status(tuple(self._section_status(s) for s in self.sections), os.getpid(), self.started_at,
                      self.started_wall, counters.updates_in, counters.updates_out, counters.rates(),
                      self._loop_stats(), self.recorder.status() if self.recorder is not None else None,
                      counters.trend())

    def _loop_stats(self) -> LoopStats:
        turns = self.reactor.turn_stats
        recent, longest, slowest = turns.recent(self.clock.now())
        return LoopStats(TURN_BUCKETS, tuple(turns.counts), turns.turns, turns.seconds, turns.longest,
                         tuple(recent), longest, slowest)

    def _section_status(self, section: Section) -> SectionStatus:
        peers = tuple(self._peer_status(section, index, peer) for index, peer in section.declared_peers())
        tables = tuple(
            TableStatus(t.name, t.mode, section.sources.get(t.name, b""), t.expire_ms, len(t), t.changes, t.dropped, t)
            for t in section.tables.values()
        )
        return SectionStatus(section.name, peers, tables)

    def _peer_status(self, section: Section, index: int, peer: Peer) -> PeerStatus:
        key = (section.name, peer.name)
        counters = self.counters
        link = self.registry.established.get(key)
        rates = counters.peer_rates(key) or (None, None)
        if link is None:
            return PeerStatus(peer.name, index, peer.role, str(peer.address), last_hello=counters.last_hello(key),
                              last_error=counters.last_error(key), traffic=counters.traffic(key, None),
                              updates_in_per_s=rates[0], updates_out_per_s=rates[1])
        session = link.session
        sent = {name: SentTable(out.last_pushed, out.last_acked) for name, out in session.out_tables.items()}
        return PeerStatus(peer.name, index, peer.role, link.address, session.state, link.synced, link.tls,
                          counters.last_hello(key), counters.last_error(key), counters.traffic(key, session.stats),
                          *rates, MappingProxyType(sent))

    def clear_table(self, command: ClearTable) -> int:
        """Forget entries, and push each cleared key to its receivers as zeros expiring at once.

        A whole table is forgotten at once (``AggTable.clear_all``: the
        answer's count is exact, and a ``show table`` right after finds it
        empty); its keys' zeros go out a part per loop turn
        (``pushes.TableClear``, run by the slicer).
        """
        section = next((s for s in self.sections if s.name == command.section), None)
        table = section.tables.get(command.table) if section is not None else None
        if section is None or table is None:
            return 0
        if command.key is None:
            detached = table.clear_all()
            count = sum(len(entries) for entries in detached)
            if count:
                self.slices.add(TableClear(self.pushes, section, table, detached))
            return count
        cleared = table.clear(command.key)
        if cleared:
            now = self.clock.now()
            self.pushes.push(section, table, [(k, table.empty(), table_ms(now) + 1) for k in cleared], now)
        return len(cleared)
