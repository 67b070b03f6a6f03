"""One peers session (one TCP connection to one peer), sans-IO.

Imports ``errors``, ``codec``, ``schema``, ``wire`` and ``handshake``; never
``socket``, ``ssl``, ``selectors``, ``threading`` or ``time``.

Theory of operation
-------------------
The owner feeds received bytes with ``receive_data(data, now)`` (``b""`` for
end of input), calls ``poll(now)`` when ``next_deadline()`` passes, and writes
whatever ``data_to_send()`` returns. Time is a float of seconds from any
monotonic origin, always passed in, never read. Both calls return a list of
events for the application (the aggregator): tables defined, updates, acks,
resync requests, and finally ``Closed``.

Rules:
1. The session-level states and their legal moves are the ``_TRANSITIONS``
   table below and nothing else. A move not in the table is a bug in our own
   code: ``LocalProtocolError``, and the session is closed.
2. The peer misbehaving is not an exception for the caller: the session
   queues the peers error message due (``01 00`` or ``01 01``), moves to
   CLOSED and returns a ``Closed`` event carrying the error, *after* the
   events of every message that was whole before the bad one. Nothing the
   peer sent correctly is lost.
3. What the protocol obliges a peer to do on its own is done here, so that no
   application can forget it: acks (one per table per received batch, with
   the newest id, as HAProxy does), the resync confirm (``00 03``) after every
   teach received, heartbeats after 3 s without sending, closing after 5 s
   without receiving, and the handshake timeout. Our own delays never count
   against the peer: the owner tells ``poll`` when the peer's bytes wait
   unread (``data_pending``), and while we do not read (``not_reading``).
4. What needs the application's knowledge is an event: a resync request
   (``ResyncRequested``: the application teaches with ``send_update`` /
   ``send_batch``, in parts between loop turns, and ends with ``finish_teach``), updates to apply, tables defined.

Table ids are per direction (peers-protocol.md §4.1): the peer's ids are in
the decoder's context; ours are handed out by ``define_table`` (1, 2, ...).
``send_update`` always sends an explicit update id (0x80/0x85). A push
round's ``send_batch`` sends its first update with an explicit id and the
rest with implied ids (0x81/0x86), the same bytes for every peer (see
``wire.UpdateBatch``). HAProxy 3.3+ byte-swaps implied ids in its acks
(§5.2); acks are information only to us (the ``ack`` column of ``show
aggrs``), so nothing else is affected.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Callable, Union

from .errors import HandshakeError, LocalProtocolError, PeersErrorCode, RemoteProtocolError
from .handshake import (
    DOWNGRADED_MINOR,
    PROTOCOL_MAJOR,
    PROTOCOL_MINOR,
    Hello,
    LineBuffer,
    Status,
    check_hello,
    encode_status,
    parse_status,
)
from .wire import (
    MAX_MESSAGE_SIZE,
    Ack,
    Control,
    ControlType,
    MessageDecoder,
    MessageEncoder,
    PeerError,
    RawMessage,
    StkType,
    TableDefinition,
    Update,
    UpdateBatch,
)

#: Send a heartbeat after this long without sending anything (HAProxy's
#: PEER_HEARTBEAT_TIMEOUT).
HEARTBEAT_INTERVAL = 3.0
#: Close a session after this long without receiving anything. HAProxy sends
#: a heartbeat every 3 s when idle and cuts a silent peer after 5 s.
SILENCE_TIMEOUT = 5.0
#: The hello and status must be exchanged within this time (HAProxy 2.7+
#: allows 5 s for the status line).
HANDSHAKE_TIMEOUT = 5.0


class Role(enum.Enum):
    ACCEPTING = "accepting"  #: the peer connected to us; we answer the hello
    CONNECTING = "connecting"  #: we connected; we send the hello


class State(enum.Enum):
    AWAIT_HELLO = "await-hello"
    AWAIT_STATUS = "await-status"
    ESTABLISHED = "established"
    CLOSED = "closed"


class Input(enum.Enum):
    HELLO_ACCEPTED = "hello-accepted"
    HELLO_REFUSED = "hello-refused"
    STATUS_SUCCESS = "status-success"
    STATUS_REFUSED = "status-refused"
    PROTOCOL_ERROR = "protocol-error"
    TIMEOUT = "timeout"
    END_OF_INPUT = "end-of-input"
    LOCAL_CLOSE = "local-close"


_ENDINGS = (Input.PROTOCOL_ERROR, Input.TIMEOUT, Input.END_OF_INPUT, Input.LOCAL_CLOSE)

_TRANSITIONS: dict[tuple[State, Input], State] = {
    (State.AWAIT_HELLO, Input.HELLO_ACCEPTED): State.ESTABLISHED,
    (State.AWAIT_HELLO, Input.HELLO_REFUSED): State.CLOSED,
    (State.AWAIT_STATUS, Input.STATUS_SUCCESS): State.ESTABLISHED,
    (State.AWAIT_STATUS, Input.STATUS_REFUSED): State.CLOSED,
    **{(state, cause): State.CLOSED for state in State for cause in _ENDINGS},
}


# -- events ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Established:
    peer_name: str
    version: tuple[int, int]


@dataclass(frozen=True, slots=True)
class TableDefined:
    definition: TableDefinition


@dataclass(frozen=True, slots=True)
class UpdatesReceived:
    """Consecutive updates of one table: ``(key, values, expire)`` each.

    One event per run, not per update: a peer streams thousands of updates
    per read, and an object per update is what the hot path cannot afford.
    ``last_id`` is the last update id of the run.
    """

    table: TableDefinition
    updates: list
    last_id: int


@dataclass(frozen=True, slots=True)
class AckReceived:
    table: TableDefinition | None  #: our definition the ack names, if any
    update_id: int


@dataclass(frozen=True, slots=True)
class ResyncRequested:
    """The peer asks to be taught everything: teach, then ``finish_teach()``."""


@dataclass(frozen=True, slots=True)
class TeachFinished:
    """The peer finished teaching us (``partial``: it was not up to date itself)."""

    partial: bool


@dataclass(frozen=True, slots=True)
class TeachConfirmed:
    """The peer confirmed the teach we sent it."""


@dataclass(frozen=True, slots=True)
class ErrorReceived:
    type: PeersErrorCode


@dataclass(frozen=True, slots=True)
class Ignored:
    message: RawMessage


@dataclass(frozen=True, slots=True)
class Closed:
    reason: str
    #: The handshake status involved: the one we answered (accepting) or the
    #: one we received (connecting); None when no status was exchanged.
    status: int | None = None
    error: Exception | None = None


Event = Union[
    Established, TableDefined, UpdatesReceived, AckReceived, ResyncRequested,
    TeachFinished, TeachConfirmed, ErrorReceived, Ignored, Closed,
]


@dataclass(slots=True)
class SessionStats:
    messages_in: int = 0
    messages_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    updates_in: int = 0
    updates_out: int = 0
    heartbeats_in: int = 0
    heartbeats_out: int = 0
    last_error: str = ""


@dataclass(slots=True)
class OutTable:
    """One of our tables as this session sends it."""

    definition: TableDefinition
    last_pushed: int = 0  #: last update id we sent
    last_acked: int = 0  #: last update id the peer acked


@dataclass(slots=True)
class _InTable:
    last_get: int = 0  #: the newest update id received (HAProxy's last_get)
    unacked: bool = False  #: updates arrived since our last ack


class PeerSession:
    """The protocol state of one peer connection. See the module docstring."""

    def __init__(
        self,
        role: Role,
        local_name: str,
        now: float,
        *,
        remote_name: str | None = None,
        is_declared: Callable[[str], bool] | None = None,
        downgraded: bool = False,
        max_message_size: int = MAX_MESSAGE_SIZE,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
        silence_timeout: float = SILENCE_TIMEOUT,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        pid: int = 1,
    ) -> None:
        """
        Args:
            role: whether we accepted the connection or opened it.
            local_name: our own peer name.
            now: the current time (seconds, monotonic).
            remote_name: connecting role: the name the peer has for itself
                (line 2 of our hello). Accepting role: learned from the hello.
            is_declared: accepting role: tells whether a caller name may
                connect (a declared peer).
            downgraded: connecting role: announce protocol 2.0 (after a 502).
        """
        if role is Role.CONNECTING and not remote_name:
            raise LocalProtocolError("a connecting session needs the remote peer's name")
        if role is Role.ACCEPTING and is_declared is None:
            raise LocalProtocolError("an accepting session needs is_declared")
        self.role = role
        self.local_name = local_name
        self.peer_name = remote_name
        self._is_declared = is_declared
        self.version = (PROTOCOL_MAJOR, DOWNGRADED_MINOR if downgraded else PROTOCOL_MINOR)
        self.heartbeat_interval = heartbeat_interval
        self.silence_timeout = silence_timeout
        self.stats = SessionStats()
        self.close_reason = ""
        self._lines = LineBuffer()
        self._hello_lines: list[str] = []
        self._decoder = MessageDecoder(max_message_size)
        self._encoder = MessageEncoder()
        self._out = bytearray()
        self._in_tables: dict[int, _InTable] = {}
        self.out_tables: dict[bytes, OutTable] = {}
        self._out_by_id: dict[int, OutTable] = {}
        self.teaching = False  #: the peer asked for a resync; our teach is under way
        self.awaiting_teach_confirm = False
        self.learning = False  #: we asked for a resync and wait for its end
        self.established_at: float | None = None
        self._deadline_handshake = now + handshake_timeout
        self._last_sent = now
        self._last_received = now
        if role is Role.ACCEPTING:
            self.state = State.AWAIT_HELLO
        else:
            self.state = State.AWAIT_STATUS
            hello = Hello(self.version, remote_name, local_name, f"{pid} 1")  # type: ignore[arg-type]
            self._queue(hello.encode(), now)

    # -- state table ----------------------------------------------------------

    def _process_input(self, cause: Input) -> None:
        try:
            self.state = _TRANSITIONS[(self.state, cause)]
        except KeyError:
            old = self.state
            self.state = State.CLOSED
            raise LocalProtocolError(f"input {cause.value} in state {old.value}") from None

    # -- I/O boundary ---------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        """Feed bytes received from the peer (``b""``: the peer closed)."""
        if self.state is State.CLOSED:
            return []
        self.stats.bytes_in += len(data)
        if not data:
            return [self._close(Input.END_OF_INPUT, "connection closed by peer")]
        self._last_received = now
        events: list[Event] = []
        if self.state is not State.ESTABLISHED:
            data = self._receive_handshake(data, now, events)
            if self.state is not State.ESTABLISHED:
                return events
        self._decoder.feed(data)
        self._receive_messages(now, events)
        if self.state is State.ESTABLISHED:
            self._send_acks(now)
        return events

    def data_to_send(self) -> bytes:
        """Everything queued for the peer since the last call."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def has_data_to_send(self) -> bool:
        return bool(self._out)

    def next_deadline(self) -> float | None:
        """When ``poll`` must run next, or None once closed."""
        if self.state is State.CLOSED:
            return None
        if self.state is not State.ESTABLISHED:
            return self._deadline_handshake
        return min(self._last_sent + self.heartbeat_interval, self._last_received + self.silence_timeout)

    def timed_out(self, now: float) -> bool:
        """Whether ``poll(now)`` would close the session: handshake timeout or peer silence.

        Lets the owner look for facts it alone knows (unread bytes in the
        socket) only when a verdict is due.
        """
        if self.state is State.CLOSED:
            return False
        if self.state is not State.ESTABLISHED:
            return now >= self._deadline_handshake
        return now >= self._last_received + self.silence_timeout

    def poll(self, now: float, data_pending: bool = False) -> list[Event]:
        """Run the timers: handshake timeout, heartbeat, peer silence.

        Args:
            now: the current time.
            data_pending: the owner's word that the peer's socket holds bytes
                (or its end of stream) not read yet. The peer has spoken and
                the delay is ours (a long loop turn): neither timeout fires
                now; both are checked again at the next poll, after the read.
        """
        if self.state is State.CLOSED:
            return []
        if self.state is not State.ESTABLISHED:
            if now >= self._deadline_handshake and not data_pending:
                return [self._close(Input.TIMEOUT, "handshake timeout")]
            return []
        if now >= self._last_received + self.silence_timeout and not data_pending:
            return [self._close(Input.TIMEOUT, f"peer silent for {self.silence_timeout:g} s")]
        if now >= self._last_sent + self.heartbeat_interval:
            self._send(Control(ControlType.HEARTBEAT), now)
            self.stats.heartbeats_out += 1
        return []

    def not_reading(self, now: float) -> None:
        """We are not reading the peer's socket (backpressure): its silence is ours, not its."""
        self._last_received = now

    def close(self, reason: str = "closed locally") -> Closed:
        """End the session from our side (no message is sent; the owner closes the socket)."""
        if self.state is State.CLOSED:
            return Closed(self.close_reason)
        return self._close(Input.LOCAL_CLOSE, reason)

    # -- handshake --------------------------------------------------------------

    def _receive_handshake(self, data: bytes, now: float, events: list[Event]) -> bytes:
        self._lines.feed(data)
        try:
            if self.state is State.AWAIT_HELLO:
                self._receive_hello(now, events)
            else:
                self._receive_status(events)
        except HandshakeError as exc:
            if self.state is State.AWAIT_HELLO and exc.status is not None:
                self._queue(encode_status(exc.status), now)
                events.append(self._close(Input.HELLO_REFUSED, str(exc), exc.status, exc))
            else:
                events.append(self._close(Input.PROTOCOL_ERROR, str(exc), exc.status, exc))
            return b""
        return self._lines.take_rest() if self.state is State.ESTABLISHED else b""

    def _receive_hello(self, now: float, events: list[Event]) -> None:
        while len(self._hello_lines) < 3:
            line = self._lines.next_line()
            if line is None:
                return
            self._hello_lines.append(line)
        hello = check_hello(self._hello_lines, self.local_name, self._is_declared)  # type: ignore[arg-type]
        self.peer_name = hello.caller
        self.version = hello.version
        self._queue(encode_status(Status.SUCCESS), now)
        self._establish(Input.HELLO_ACCEPTED, now, events)

    def _receive_status(self, events: list[Event]) -> None:
        line = self._lines.next_line()
        if line is None:
            return
        status = parse_status(line)
        if status != Status.SUCCESS:
            events.append(self._close(Input.STATUS_REFUSED, f"peer answered status {status}", status))
            return
        self._establish(Input.STATUS_SUCCESS, self._last_received, events)

    def _establish(self, cause: Input, now: float, events: list[Event]) -> None:
        self._process_input(cause)
        self.established_at = now
        events.append(Established(self.peer_name, self.version))  # type: ignore[arg-type]

    # -- established: receiving ---------------------------------------------------

    def _receive_messages(self, now: float, events: list[Event]) -> None:
        decoder = self._decoder
        while self.state is State.ESTABLISHED:
            try:
                run = decoder.next_run()
                if run is not None:
                    table, items, last_id = run
                    self.stats.messages_in += 1
                    self._updates(events, table, items, last_id)
                    continue
                msg = decoder.next_message()
            except RemoteProtocolError as exc:
                if exc.error_code is not None:
                    self._send(PeerError(exc.error_code), now)
                events.append(self._close(Input.PROTOCOL_ERROR, str(exc), None, exc))
                return
            if msg is None:
                return
            self.stats.messages_in += 1
            event = self._handle_message(msg, now, events)
            if event is not None:
                events.append(event)

    def _updates(self, events: list[Event], table: TableDefinition, items: list, last_id: int) -> None:
        """Record received updates for the acks, and add them to the batch event of their table."""
        count = len(items)
        self.stats.updates_in += count
        self.stats.messages_in += count - 1  # the caller counts one message
        state = self._in_tables.get(table.table_id)
        if state is None:
            state = self._in_tables[table.table_id] = _InTable()
        state.last_get = last_id
        state.unacked = True
        last = events[-1] if events else None
        if isinstance(last, UpdatesReceived) and last.table is table:
            last.updates.extend(items)
            events[-1] = UpdatesReceived(table, last.updates, last_id)
        else:
            events.append(UpdatesReceived(table, items, last_id))

    def _handle_message(self, msg: object, now: float, events: list[Event]) -> Event | None:
        if isinstance(msg, Update):
            table = self._decoder.tables[msg.table_id]
            self._updates(events, table, [(msg.key, msg.values, msg.expire)], msg.update_id)
            return None
        if isinstance(msg, Control):
            return self._handle_control(msg.type, now)
        if isinstance(msg, TableDefinition):
            self._in_tables.setdefault(msg.table_id, _InTable())
            return TableDefined(msg)
        if isinstance(msg, Ack):
            out = self._out_by_id.get(msg.table_id)
            if out is not None:
                out.last_acked = msg.update_id
            return AckReceived(out.definition if out else None, msg.update_id)
        if isinstance(msg, PeerError):
            self.stats.last_error = f"peer sent error {msg.type.name}"
            return ErrorReceived(msg.type)
        if isinstance(msg, RawMessage):
            return Ignored(msg)
        return None  # TableSwitch: the decoder already moved its current table

    def _handle_control(self, ctype: ControlType, now: float) -> Event | None:
        if ctype is ControlType.HEARTBEAT:
            self.stats.heartbeats_in += 1
            return None
        if ctype is ControlType.RESYNC_REQUEST:
            self.teaching = True
            return ResyncRequested()
        if ctype in (ControlType.RESYNC_FINISHED, ControlType.RESYNC_PARTIAL):
            # HAProxy confirms every teach, asked for or not; without it the
            # teacher stays mute for the rest of the session (§8.2).
            self.learning = False
            self._send(Control(ControlType.RESYNC_CONFIRM), now)
            return TeachFinished(partial=ctype is ControlType.RESYNC_PARTIAL)
        self.awaiting_teach_confirm = False  # RESYNC_CONFIRM
        return TeachConfirmed()

    def _send_acks(self, now: float) -> None:
        # One ack per table that received updates in this batch, with the
        # newest id: what the reference recommends and the recorded working
        # peer does (HAProxy itself skips an ack equal to its previous one).
        for table_id, table in self._in_tables.items():
            if table.unacked:
                table.unacked = False
                self._send(Ack(table_id, table.last_get), now)

    # -- established: sending -----------------------------------------------------

    def define_table(
        self,
        name: bytes,
        key_type: int,
        key_len: int,
        data_types: int,
        expire: int,
        params: tuple[tuple[int, ...], ...],
    ) -> OutTable:
        """Register one of our tables for this session (sent before its first update)."""
        table = self.out_tables.get(name)
        if table is None:
            table_id = len(self.out_tables) + 1
            definition = TableDefinition(table_id, name, key_type, key_len, data_types, expire, params)
            table = self.out_tables[name] = OutTable(definition)
            self._out_by_id[table_id] = table
        return table

    def send_update(self, table: OutTable, key: bytes, values: tuple, now: float, expire: int | None = None) -> int:
        """Queue one update of ``table`` (timed when ``expire`` is given).

        The table's definition goes first whenever it is not the current
        table of this direction, as HAProxy does (never a 0x83 switch).

        Returns:
            The update id used.
        """
        self._require_established()
        if self._encoder.current is not table.definition:
            self._send(table.definition, now)
        update_id = (table.last_pushed + 1) & 0xFFFFFFFF or 1
        timed = expire is not None and self.version[1] >= 1
        kind = StkType.UPDATE_TIMED if timed else StkType.UPDATE
        update = Update(kind, table.definition.table_id, update_id, key, values, expire if timed else None)
        self._send(update, now)
        table.last_pushed = update_id
        self.stats.updates_out += 1
        return update_id

    def send_batch(self, table: OutTable, batch: UpdateBatch, now: float) -> None:
        """Queue a push round's updates, framed once for all sessions (``wire.UpdateBatch``)."""
        self._require_established()
        if not len(batch):
            return
        if self._encoder.current is not table.definition:
            self._send(table.definition, now)
        first = (table.last_pushed + 1) & 0xFFFFFFFF or 1
        self._queue(batch.frame(first, timed=self.version[1] >= 1), now)
        last = (first + len(batch) - 1) & 0xFFFFFFFF
        table.last_pushed = last
        self._encoder.last_update_id[table.definition.table_id] = last
        self.stats.messages_out += len(batch)
        self.stats.updates_out += len(batch)

    def request_resync(self, now: float) -> None:
        """Ask the peer to teach us its whole tables (``00 00``)."""
        self._require_established()
        self.learning = True
        self._send(Control(ControlType.RESYNC_REQUEST), now)

    def finish_teach(self, now: float, partial: bool = False) -> None:
        """End the teach that answers a ``ResyncRequested`` (``00 01``/``00 02``)."""
        self._require_established()
        self.teaching = False
        self.awaiting_teach_confirm = True
        ctype = ControlType.RESYNC_PARTIAL if partial else ControlType.RESYNC_FINISHED
        self._send(Control(ctype), now)

    def send_heartbeat(self, now: float) -> None:
        self._require_established()
        self._send(Control(ControlType.HEARTBEAT), now)
        self.stats.heartbeats_out += 1

    # -- internals ------------------------------------------------------------

    def _require_established(self) -> None:
        if self.state is not State.ESTABLISHED:
            raise LocalProtocolError(f"cannot send in state {self.state.value}")

    def _send(self, msg: object, now: float) -> None:
        self._queue(self._encoder.encode(msg), now)  # type: ignore[arg-type]
        self.stats.messages_out += 1

    def _queue(self, data: bytes, now: float) -> None:
        self._out += data
        self.stats.bytes_out += len(data)
        self._last_sent = now

    def _close(self, cause: Input, reason: str, status: int | None = None, error: Exception | None = None) -> Closed:
        self._process_input(cause)
        self.close_reason = reason
        if error is not None:
            self.stats.last_error = reason
        return Closed(reason, status, error)

    @property
    def in_tables(self) -> dict[int, TableDefinition]:
        """The peer's table definitions by its own ids."""
        return self._decoder.tables


__all__ = [
    "PeerSession", "Role", "State", "Input", "Event", "Established", "TableDefined", "UpdatesReceived",
    "AckReceived", "ResyncRequested", "TeachFinished", "TeachConfirmed", "ErrorReceived", "Ignored",
    "Closed", "SessionStats", "OutTable", "PeersErrorCode", "Status",
]
