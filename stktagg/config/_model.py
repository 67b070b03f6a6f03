"""The configuration's model: frozen dataclasses, and nothing that reads text.

What a parsed configuration file is: :class:`Config` holds one
:class:`GlobalSection` and one or more :class:`Aggregations` sections, made
of :class:`Peer`, :class:`FromRule`, :class:`HistoryLine`, :class:`StatsSocket`,
:class:`LogTarget` and :class:`Address` values. Every node is immutable and keeps the
:class:`Position` it was written at, so later checks (``_probes``) can
report at the right line and column. Also here, because every other part of
the package needs them: :func:`config_error`, the one place a
:class:`~stktagg.errors.ConfigError` is made; :func:`table_suffix`, the one
definition of a table name's suffix; :func:`format_time`, the one spelling
of a time (HAProxy's units, :data:`TIME_UNITS`); and :func:`strip_positions`.

Imports nothing from stktagg but ``errors``; no I/O.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

from stktagg.errors import ConfigError

DIGITS = frozenset("0123456789")
#: Group ids of ungrouped up peers (:attr:`Aggregations.groups`); reserved in ``group``.
GROUP_KEY_PREFIX = "peer:"
#: How a ``stats socket`` path starts (anything else is an address).
SOCKET_PATH_PREFIXES = ("/", "./", "unix@")

PEER_ADDRESS_HINT = "like 192.0.2.1:10000 or [2001:db8::1]:10000"
#: HAProxy's time units and their length in ms, largest first; a bare number is ms.
TIME_UNITS = {"d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1_000, "ms": 1}


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
    if ip.version == 6:  # as the C library writes it (HAProxy's form), whatever the Python
        # (3.13 changed str() of ::ffff:a.b.c.d); the zone (``%eth0``) is not in the bytes
        return socket.inet_ntop(socket.AF_INET6, ip.packed) + (f"%{ip.scope_id}" if ip.scope_id else "")
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
    #: the key shard (1..``shards``) this peer serves (``shard <i>``); None: every key
    shard: int | None = None


def table_suffix(table_name: str) -> str:
    """Return the suffix of a table name: from its last "." on, or "" if none.

    The one definition of a suffix (DESIGN.md §3.1), for the ``from`` and
    ``forward`` rules here and the routing in ``aggregation``. A name without
    a "." has the suffix "" (never None), which no valid suffix equals.
    """
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
class HistoryLine:
    """A ``history`` line: keep the statistic of the ``source`` aggregates in ``target`` tables.

    ``history .aggr to .yday stat avg window 1h offset 1d``: the ``.yday`` table
    of each ``.aggr`` table holds, per key, the statistic of its aggregate over
    ``[now - offset - window, now - offset]`` (see ``stktagg.history``).
    ``position`` is the ``history`` keyword's.
    """

    #: the suffix of the aggregates: the section's ``from ... to`` suffix (".aggr")
    source: str
    #: the suffix of the history tables (".yday"), no other suffix of the section
    target: str
    #: "avg", "max", "min" or "pNN" (1..100), as written (``history.parse_stat``)
    stat: str
    #: the length of the window, in ms (> 0)
    window_ms: int
    #: how far back the window ends, in ms (0: now)
    offset_ms: int
    position: Position


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
    #: where to serve the dashboard, its JSON API and the Prometheus metrics over HTTP
    #: (``http <ip:port>``, or its alias ``prometheus <ip:port>``)
    http: Address | None = None
    #: the file the ``history`` lines keep their samples in (``history-file <path>``)
    history_file: str | None = None
    #: where the ``history-file`` path word is (None without it)
    history_file_position: Position | None = None


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
    #: how many shards HAProxy splits the keys into (``shards <n>``); None: no shards
    shards: int | None = None
    #: where the ``shards`` keyword is (None without it)
    shards_position: Position | None = None
    #: the ``history`` lines, in file order
    history: tuple[HistoryLine, ...] = ()

    @property
    def local_peer(self) -> Peer:
        """The (first) peer marked ``local`` (this aggregator)."""
        for peer in self.peers:
            if peer.role is PeerRole.LOCAL:
                return peer
        raise LookupError(f"aggregations section '{self.name}' has no local peer")

    @property
    def local_peers(self) -> tuple[Peer, ...]:
        """Every peer marked ``local``, in file order: one, or one per local shard."""
        return tuple(p for p in self.peers if p.role is PeerRole.LOCAL)

    @property
    def remote_peers(self) -> tuple[Peer, ...]:
        """Every peer but the local ones, in file order."""
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


def config_error(at: Position, msg: str) -> ConfigError:
    """Build the ConfigError for *msg* at *at*: the one place errors are made."""
    return ConfigError(msg, at.path, at.lineno, at.colno)


def format_cpu_set(cpus: Iterable[int]) -> str:
    """Render sorted CPU numbers compactly: [0, 5, 6, 7] -> "0,5-7"."""
    ranges: list[list[int]] = []
    for cpu in cpus:
        if ranges and ranges[-1][1] == cpu - 1:
            ranges[-1][1] = cpu
        else:
            ranges.append([cpu, cpu])
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in ranges)


def format_time(ms: int) -> str:
    """Render a time in the largest unit that divides it: 3600000 -> "1h", 1500 -> "1500ms", 0 -> "0"."""
    if ms == 0:
        return "0"
    unit, size = next((u, n) for u, n in TIME_UNITS.items() if ms % n == 0)
    return f"{ms // size}{unit}"


_T = TypeVar("_T")


def strip_positions(value: _T) -> _T:
    """Return *value* (a ``Config``, or any part of one: a ``Peer``, a ``FromRule``...) with
    every Position replaced by :data:`NOWHERE`.

    Two values that differ only in where things were written compare equal after
    this: what the dump round trip checks, and what a reload compares.
    """
    return _strip(value)


def _strip(value: _T) -> _T:
    if isinstance(value, Position):
        return NOWHERE  # type: ignore[return-value]
    if isinstance(value, tuple):
        return tuple(_strip(item) for item in value)  # type: ignore[return-value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {f.name: _strip(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return dataclasses.replace(value, **changes)
    return value
