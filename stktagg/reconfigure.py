"""A reload applied in place: the running server takes a new, already checked configuration.

Imports ``aggregation``, ``config``, ``peerlink``, ``tls`` and ``server`` (its parts).
Runs in the I/O thread, in one loop turn (a reload touches sessions and
listeners, never a table's entries: its cost does not grow with the tables).

What a reload changes in place (issue 17; the daemon checks the file first and
keeps the running configuration when it is invalid):

- sections added (their listener opened, their up peers dialled) and removed
  (their sessions ended, their tables dropped);
- in a section: peers added (an up peer is dialled; a down peer is dialled once, since
  a HAProxy node never dials again a peer that refused its hello, as an undeclared
  one was refused before the reload);
  peers removed (their session ends; their part of each sum stays until its
  entries expire, as a node that went away, and ``clear table`` drops it at
  once); peers whose address, role, group or TLS options changed (their session
  restarts under the new settings); the ``from`` rule and ``forward`` (every link
  is routed again; a table that becomes an input is resynchronised from its
  peer); the local peer's name, address or ``ssl`` (every session of the section
  restarts, on the new listener if its address changed);
- TLS files: read again for every section; new handshakes use them, established
  sessions keep theirs (a changed ``crt``, ``ca-file`` or ``verify`` of the local
  peer line restarts nothing; on a remote peer's line it restarts that session);
- the stats sockets and the metrics endpoint, opened and closed as they differ.

Unchanged peers keep their sessions, and every table keeps its entries. What
only a restart applies is reported (``user``, ``group``, ``pidfile``,
``cpu-map``, ``source``, ``max-entries``, ``max-tables``,
``peer-address-check``), and the running value stays.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .aggregation import Section, SectionChanges
from .config import Config, Peer, PeerRole, strip_positions
from .peerlink import PeerLink
from .tls import section_contexts

__all__ = ["Note", "apply", "RESTART_ONLY"]

#: The ``global`` settings a reload cannot change in place: (keyword, model attribute).
RESTART_ONLY = (
    ("user", "user"), ("group", "group"), ("pidfile", "pidfile"), ("cpu-map", "cpu_map"), ("source", "source"),
    ("max-entries", "max_entries"), ("max-tables", "max_tables"), ("peer-address-check", "peer_address_check"),
    ("history-file", "history_file"),
)


@dataclass(frozen=True, slots=True)
class Note:
    """One line of what a reload did: a ``logging`` level and the message."""

    level: int
    message: str


def apply(server, config: Config) -> list[Note]:
    """Apply ``config`` to ``server`` (a ``server.Server``) in place; what was done, as notes.

    Raises ``ConfigError`` before anything changes when a section's TLS files
    cannot be loaded now (``tls.section_contexts``).
    """
    contexts = {section.name: section_contexts(section) for section in config.aggregations}
    notes = [Note(logging.WARNING, f"'{keyword}' changed: it applies at the next restart; the running value stays")
             for keyword, attribute in RESTART_ONLY
             if strip_positions(getattr(config.global_, attribute)) != strip_positions(getattr(server.config.global_, attribute))]
    now = server.clock.now()
    wanted = {section.name for section in config.aggregations}
    for section in [s for s in server.sections if s.name not in wanted]:
        server.sections.remove(section)
        _end_sessions(server, section, None, "its section was removed by a reload")
        for peer in section.config.up_peers:
            server.dialer.forget(section, peer)  # a connect under way; later redials find it gone
        notes.append(Note(logging.INFO, f"section {section.name} removed"))
    running = {section.name: section for section in server.sections}
    for aggregations in config.aggregations:
        server.tls[aggregations.name] = contexts[aggregations.name]  # new handshakes use the files as they are
        section = running.get(aggregations.name)
        if section is None:
            section = server.add_section(aggregations)
            for peer in aggregations.up_peers:
                server.dialer.dial(section, peer)
            notes.append(Note(logging.INFO, f"section {section.name} added"))
            continue
        changes = section.reconfigure(aggregations)
        if changes:
            _apply_section(server, section, changes, now)
            notes.append(Note(logging.INFO, f"section {section.name}: {describe(changes)}"))
    notes += [Note(logging.ERROR, failure) for failure in server.listeners.rebind(config)]
    if server.recorder is not None:
        server.recorder.refresh()
    elif any(section.history for section in config.aggregations):
        notes.append(Note(logging.WARNING, "'history' lines need 'history-file' at start: they apply at the next restart"))
    server.config = config
    return notes


def _apply_section(server, section: Section, changes: SectionChanges, now: float) -> None:
    ended = changes.removed + changes.changed
    if changes.local:
        _end_sessions(server, section, None, "the local peer line was changed by a reload")
    else:
        for peer in ended:
            _end_sessions(server, section, peer.name, "its peer line was changed or removed by a reload")
        if changes.rules:
            for link in _links(server, section):
                link.reroute(now)
    for peer in ended:
        server.dialer.forget(section, peer)
    for peer in changes.changed + changes.added:
        # A down peer too, once: HAProxy never redials a peer that refused it (Dialer.dial).
        server.dialer.dial(section, peer, once=peer.role is not PeerRole.UP)


def describe(changes: SectionChanges) -> str:
    def names(peers: tuple[Peer, ...]) -> str:
        return ", ".join(p.name for p in peers)

    parts = [f"{label} {names(peers)}" for label, peers in
             (("peers added:", changes.added), ("removed:", changes.removed), ("changed:", changes.changed)) if peers]
    if changes.rules:
        parts.append("'from'/'forward' changed: tables routed again")
    if changes.local:
        parts.append("local peer changed: sessions restarted")
    if changes.history:
        parts.append("'history' lines changed")
    return "; ".join(parts)


def _links(server, section: Section) -> list[PeerLink]:
    return [link for link in server.registry.established.values() if link.section is section]


def _end_sessions(server, section: Section, peer_name: str | None, reason: str) -> None:
    """End the connections of ``section`` (all, or ``peer_name``'s), handshakes included."""
    for conn in list(server.registry.connections):
        stage = conn.stage
        if isinstance(stage, PeerLink):
            if stage.section is not section or (peer_name is not None and stage.peer.name != peer_name):
                continue
            stage.session.close(reason)
            stage.write_now()
        elif peer_name is not None or section not in conn.sections:
            continue  # a handshake under way: its peer is not known yet, a restart of its section ends it
        conn.transport.abort()
