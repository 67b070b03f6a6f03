"""The main process of a sharded daemon (issue 15): its stats sockets and metrics, answered by the shards.

Each HAProxy key shard is served by its own process (an ordinary daemon with a
private unix stats socket). The main process serves the operator's stats
sockets and the Prometheus endpoint by sending each command to every shard in
one-shot mode (connect, ``<command>\n``, read until it closes) and merging the
answers, in its one event loop: no thread, nothing blocks (not even the unix
connect: ``CONNECT_RETRY``). A shard that cannot be connected (restarting),
closes without an answer or sends nothing for ``SHARD_TIMEOUT`` while read is
*unavailable*: text answers say so at its place, JSON skips it (lists) or maps
it to ``null`` (objects), and the answer goes on without it.

Imports ``cli``, ``clock`` (``Date``), ``errors``, ``loop`` (types), ``metrics``
(its limit, label escapes, ``Date`` format) and ``transport``.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import socket
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

from . import cli
from .cli import _json  # one daemon's JSON layout
from .clock import Clock
from .errors import StktaggError
from .loop import Reactor, TimerHandle
from .metrics import CONTENT_TYPE, MAX_REQUEST, HttpError, _escape, http_response, read_request  # as one daemon
from .transport import StreamTransport

log = logging.getLogger(__name__)

#: A shard that sends nothing for this long while read is unavailable; time paused for a slow
#: client does not count (not the shard's doing). Far above a shard's turn budget (50 ms).
SHARD_TIMEOUT = 10.0
#: A connect finding the shard's accept queue full (EAGAIN: busy) is tried again after this,
#: until ``SHARD_TIMEOUT``: a blocking connect would hold the loop meanwhile.
CONNECT_RETRY = 0.05
#: Most bytes of one shard's answer buffered for a merge (``show aggrs``...): past it, an error
#: for that shard (those answers are small; only ``show table`` is streamed).
MAX_SHARD_ANSWER = 4 * 1024 * 1024
#: Most bytes kept of a shard's error message to a streamed ``show table`` (one line, really).
MAX_MESSAGE = 64 * 1024
#: The family this module adds to the merged metrics.
SHARD_UP = "hapee_stktagg_shard_up"
#: Commands whose JSON answer is one object (merged as ``{label: answer}``); others are lists.
_DICT_ANSWERS = {("show", "info")}
_CLEARED = re.compile(r"Cleared (\d+) entr(?:y|ies)\.\n")
#: A sample line of the text exposition format: name, labels (inside the braces), value and timestamp.
_SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?( [^ ]+(?: [^ ]+)?)")
#: Where a JSON row of ``show table`` starts (but the first): ``{"`` is never inside a JSON
#: string (its quote would be escaped) and no nested object of a row has a ``key`` first.
_JSON_ROW = b',{"key":'


class ShardUnavailable(StktaggError):
    """A shard could not be asked, or did not answer in full (restarting, stalled, cut short)."""


@dataclass(frozen=True, slots=True)
class Shard:
    """One shard process, as the main process knows it."""

    label: str  #: what answers call it: ``<section>/<local peer>``, e.g. ``agg/AGGR.1``
    cli_path: str  #: its private unix stats socket


#: The shards to ask, read anew for each command (a restarted shard may have a new socket).
Shards = Callable[[], Sequence[Shard]]


@dataclass(frozen=True, slots=True)
class ShardAnswer:
    """One shard's whole answer (``text``, without one-shot mode's closing empty line), or why there is none."""

    shard: Shard
    text: str | None
    problem: str = ""  #: when ``text`` is None: ``unavailable``, or what went wrong


def _complete(data: bytes | bytearray) -> bool:
    """Whether a one-shot answer is whole: every answer is empty or ends with a newline, then
    ``CliConnection`` adds an empty line."""
    return data == b"\n" or data.endswith(b"\n\n")


class _ShardQuery:
    """One command sent to one shard in one-shot mode (the transport protocol), its answer read to the end.

    ``on_data(data)`` gets the bytes as they come; ``on_end(problem)`` comes
    once, from the loop (never from inside the owner's calls), with None
    when the shard closed after answering, else a ``ShardUnavailable``;
    never after ``cancel()``.
    """

    def __init__(self, reactor: Reactor, shard: Shard, command: str, on_data: Callable[[bytes], None],
                 on_end: Callable[[ShardUnavailable | None], None]) -> None:
        self.shard = shard
        self._reactor = reactor
        self._command = command.encode("utf-8", "surrogateescape") + b"\n"
        self._on_data = on_data
        self._on_end = on_end
        self.transport: StreamTransport | None = None
        self._ended = False
        self._paused = False
        self._last = reactor.time()  #: when the shard last sent (or reading resumed)
        self._retry: TimerHandle | None = None
        self._timer: TimerHandle | None = reactor.call_later(SHARD_TIMEOUT, self._check)
        self._connect()

    def _connect(self) -> None:
        self._retry = None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.connect(self.shard.cli_path)
        except BlockingIOError:
            sock.close()
            self._retry = self._reactor.call_later(CONNECT_RETRY, self._connect)
            return
        except OSError as exc:
            sock.close()
            problem = ShardUnavailable(f"shard {self.shard.label}: cannot connect to {self.shard.cli_path}: {exc}")
            self._reactor.call_soon(self._end, problem)
            return
        self.transport = StreamTransport(self._reactor, sock, self)

    def connection_made(self, transport: StreamTransport) -> None:
        transport.write(self._command)

    def data_received(self, data: bytes) -> None:
        self._last = self._reactor.time()
        self._on_data(data)

    def eof_received(self) -> None:
        pass  # one-shot mode: the shard closes after its answer, and so do we

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._end(ShardUnavailable(f"shard {self.shard.label}: connection failed: {exc}") if exc else None)

    def pause(self) -> None:
        """Stop reading (the client has enough queued); the deadline waits too."""
        self._paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume(self) -> None:
        self._paused = False
        self._last = self._reactor.time()
        if self.transport is not None:
            self.transport.resume_reading()

    def cancel(self) -> None:
        """Give up at once, without an ``on_end`` call."""
        self._on_end = _ignore
        self._end(None)

    def _check(self) -> None:
        self._timer = None
        if self._ended:
            return
        now = self._reactor.time()
        if self._paused:
            self._last = now
        idle = now - self._last
        if idle < SHARD_TIMEOUT:
            self._timer = self._reactor.call_later(SHARD_TIMEOUT - idle, self._check)
            return
        self._end(ShardUnavailable(f"shard {self.shard.label}: nothing received for {SHARD_TIMEOUT:g} s"))

    def _end(self, problem: ShardUnavailable | None) -> None:
        if self._ended:
            return
        self._ended = True
        for handle in (self._timer, self._retry):
            if handle is not None:
                handle.cancel()
        if self.transport is not None:
            self.transport.abort()  # its connection_lost comes later and finds us ended
        # The callbacks into the owner go: no cycle left for the collector.
        on_end, self._on_data, self._on_end = self._on_end, _ignore, _ignore
        if problem is not None:
            log.debug("%s", problem)  # a restarting shard: the supervisor logs its process
        on_end(problem)


def _ignore(_: object) -> None:
    pass


class _Collect:
    """One command asked of every shard at once, answers buffered whole (at most ``MAX_SHARD_ANSWER``).

    ``on_done(answers)``: once, from the loop, one ``ShardAnswer`` per shard in order; never after ``cancel()``.
    """

    def __init__(self, reactor: Reactor, shards: Sequence[Shard], command: str,
                 on_done: Callable[[list[ShardAnswer]], None]) -> None:
        self._shards = list(shards)
        self._on_done: Callable[[list[ShardAnswer]], None] | None = on_done
        self._answers: list[ShardAnswer | None] = [None] * len(self._shards)
        self._data = [bytearray() for _ in self._shards]
        self._left = len(self._shards)
        self._queries = [_ShardQuery(reactor, shard, command, partial(self._received, i), partial(self._ended, i))
                         for i, shard in enumerate(self._shards)]
        if not self._shards:
            reactor.call_soon(self._finish)

    def cancel(self) -> None:
        self._on_done = None
        for query in self._queries:
            query.cancel()
        self._queries = []

    def _received(self, index: int, data: bytes) -> None:
        buffer = self._data[index]
        buffer += data
        if len(buffer) > MAX_SHARD_ANSWER:
            self._queries[index].cancel()
            self._set(index, ShardAnswer(self._shards[index], None,
                                         f"answer over {MAX_SHARD_ANSWER} bytes, not shown"))

    def _ended(self, index: int, problem: ShardUnavailable | None) -> None:
        data, shard = self._data[index], self._shards[index]
        if not data:
            answer = ShardAnswer(shard, None, "unavailable")
        elif problem is not None or not _complete(data):
            answer = ShardAnswer(shard, None, "unavailable (answer cut short)")
        else:
            answer = ShardAnswer(shard, data[:-1].decode("utf-8", "replace"))
        self._set(index, answer)

    def _set(self, index: int, answer: ShardAnswer) -> None:
        self._answers[index] = answer
        self._data[index] = bytearray()
        self._left -= 1
        if self._left == 0:
            self._finish()

    def _finish(self) -> None:
        on_done, self._on_done = self._on_done, None
        self._queries = []
        if on_done is not None:
            on_done([a for a in self._answers if a is not None])


def merge_text(answers: Sequence[ShardAnswer]) -> str:
    """Each shard's answer after a ``# shard <label>`` line; ``# shard <label>: <problem>`` for one without."""
    parts = []
    for answer in answers:
        if answer.text is None:
            parts.append(f"# shard {answer.shard.label}: {answer.problem}\n")
        else:
            text = answer.text
            parts.append(f"# shard {answer.shard.label}\n" + (text if not text or text.endswith("\n") else text + "\n"))
    return "".join(parts)


def merge_json(answers: Sequence[ShardAnswer], keyed: bool) -> str | None:
    """One JSON document of the shards' answers; None when some answered but none in JSON.

    Lists are concatenated, each object in them getting ``"shard": <label>``
    first; objects (``keyed``: ``show info json``) become ``{label: answer}``.
    A shard without an answer, or whose answer is not of that kind (an error
    message), is skipped in a list, ``null`` in an object. None (every shard
    rejected the command, say): the caller shows the messages (``merge_text``).
    """
    values: list[object] = []
    for answer in answers:
        value = None
        if answer.text is not None:
            try:
                value = json.loads(answer.text)
            except ValueError:
                pass
        values.append(value if isinstance(value, dict if keyed else list) else None)
    if all(v is None for v in values) and any(a.text is not None for a in answers):
        return None
    if keyed:
        return _json({a.shard.label: v for a, v in zip(answers, values)})
    rows: list[object] = []
    for answer, value in zip(answers, values):
        for item in value if isinstance(value, list) else ():
            rows.append({"shard": answer.shard.label, **item} if isinstance(item, dict) else item)
    return _json(rows)


def merge_clear(answers: Sequence[ShardAnswer]) -> str:
    """``clear table``: one ``Cleared <sum> entries.`` line (``cli.cmd_clear_table``'s text), then the
    shards that did not clear, as ``merge_text`` shows them. When no shard cleared but some answered,
    all the messages (``merge_text``)."""
    total, cleared, others = 0, False, []
    for answer in answers:
        found = _CLEARED.fullmatch(answer.text) if answer.text is not None else None
        if found is not None:
            total += int(found[1])
            cleared = True
        else:
            others.append(answer)
    if not cleared and any(a.text is not None for a in answers):
        return merge_text(answers)
    return f"Cleared {total} entr{'y' if total == 1 else 'ies'}.\n" + merge_text(others)


@dataclass(slots=True)
class _Family:
    help: str | None = None
    kind: str | None = None
    samples: list[str] = field(default_factory=list)


def merge_metrics(answers: Sequence[ShardAnswer]) -> str:
    """The shards' ``show metrics`` as one text exposition (format 0.0.4).

    Each sample gets ``shard="<label>"`` first in its labels; ``# HELP`` and
    ``# TYPE`` once per family (the first shard's); families in the order
    first seen, each one's samples together (the format requires it), shard
    after shard; histogram and summary samples (``_bucket``, ``_sum``,
    ``_count``) in their family. First comes ``hapee_stktagg_shard_up``: 0 for
    a shard without an answer or whose answer is not of the format (none of
    it is shown then: one bad line would fail the whole scrape).
    """
    families: dict[str, _Family] = {}
    up = []
    for answer in answers:
        label = _escape(answer.shard.label)
        parsed = _parse_exposition(answer.text, label) if answer.text is not None else None
        up.append(f'{SHARD_UP}{{shard="{label}"}} {int(parsed is not None)}')
        for name, family in (parsed or {}).items():
            families.setdefault(name, _Family(family.help, family.kind)).samples += family.samples
    lines = [f"# HELP {SHARD_UP} 1 when the shard's process answered the main process.",
             f"# TYPE {SHARD_UP} gauge", *up]
    for name, family in families.items():
        lines += [f"# HELP {name} {family.help}"] if family.help is not None else []
        lines += [f"# TYPE {name} {family.kind}"] if family.kind is not None else []
        lines += family.samples
    return "\n".join(lines) + "\n"


def _parse_exposition(text: str, label: str) -> dict[str, _Family] | None:
    """The families of one text exposition, each sample with ``shard="<label>"`` (escaped) first;
    None if a line is not of the format."""
    families: dict[str, _Family] = {}
    for line in text.split("\n"):
        if line.startswith("#"):
            words = line.split(None, 3)
            if len(words) >= 3 and words[1] in ("HELP", "TYPE"):
                family = families.setdefault(words[2], _Family())
                if words[1] == "HELP":
                    family.help = words[3] if len(words) > 3 else ""
                else:
                    family.kind = words[3].strip() if len(words) > 3 else "untyped"
        elif line:  # (other comments and empty lines go)
            sample = _SAMPLE.fullmatch(line)
            if sample is None:
                return None
            name, labels, rest = sample.groups()
            labelled = f'{name}{{shard="{label}"{"," + labels if labels else ""}}}{rest}'
            families.setdefault(_family_of(name, families), _Family()).samples.append(labelled)
    return families


def _family_of(name: str, families: dict[str, _Family]) -> str:
    """The family a sample belongs to: its name, or a histogram's or summary's name it has a suffix of."""
    declared = families.get(name)
    if declared is not None and declared.kind is not None:
        return name
    for suffix in ("_bucket", "_sum", "_count"):
        base = families.get(name[: -len(suffix)]) if name.endswith(suffix) else None
        if base is not None and base.kind in ("histogram", "summary"):
            return name[: -len(suffix)]
    return name


class _TableStream:
    """``show table`` asked of the shards one after the other, each answer forwarded as it arrives.

    Never a whole answer in memory: at most a line (text) or a row (JSON) is
    held back, and while the client has more than ``cli.STREAM_LOW_WATER``
    queued the shard is not read (its own dump then waits, as for a slow
    client of its own). The next shard is asked once the previous is done.

    Text: the ``#`` lines of the first shard with data are kept, later
    shards' dropped, and the empty lines (each answer's closing one). Our
    text has no header today; one with a count (HAProxy's ``used:``) would
    show the first shard's count, not the sum, which would need every
    shard's header before the first row: streaming cannot wait for that.
    JSON: each array loses its brackets, commas go between shards' rows,
    one ``[`` ... ``]`` surrounds them all.

    An error message (``No such table``) is shown after ``# shard <label>``
    (text) or left out (JSON; without any rows the answer is the first
    message, as one daemon's). Unavailable: ``# shard <label>: unavailable``
    (text), left out (JSON). An answer that stops short (the process died):
    its whole lines or rows stay, the partial one goes, then ``# shard
    <label>: unavailable (answer cut short)`` (text): the JSON stays valid.
    """

    def __init__(self, conn: ShardedCliConnection, shards: Sequence[Shard], command: str, json_out: bool) -> None:
        self._conn = conn
        self._shards = deque(shards)
        self._command = command
        self._json = json_out
        self._query: _ShardQuery | None = None
        self._rows = False  #: JSON: a row was written (a comma goes before the next one)
        self._headers_kept = False  #: text: a shard's headers were kept (later ones' are dropped)
        self._messages: list[bytes] = []  #: JSON: the shards' error messages
        self._done = False
        self._reset()
        self._next_shard()

    def _reset(self) -> None:
        """The state of one shard's answer."""
        self._received = 0
        self._tail = b""  #: the answer's last two bytes (is it complete?)
        self._kind: str | None = None  #: "data" or "message", once the first bytes tell
        self._pending = bytearray()  #: what is held back
        self._keep_headers = False  #: text: this shard's headers are shown
        self._shard_rows = False  #: JSON: this shard's first row was written

    def cancel(self) -> None:
        self._done = True
        if self._query is not None:
            self._query.cancel()
            self._query = None

    def resume(self) -> None:
        """The client's queue has drained: read the shard again."""
        if self._query is not None:
            self._query.resume()

    def _next_shard(self) -> None:
        if not self._shards:
            self._query = None
            self._conn._reactor.call_soon(self._finish)
            return
        self._reset()
        self._query = _ShardQuery(self._conn._reactor, self._shards[0], self._command, self._data, self._end)

    def _data(self, data: bytes) -> None:
        self._received += len(data)
        self._tail = (self._tail + data[-2:])[-2:]
        pending = self._pending
        pending += data
        if self._kind is None and not self._decide():
            return
        if self._kind == "message":
            del pending[MAX_MESSAGE:]
            return
        self._forward()
        conn = self._conn
        if conn.transport is not None and conn.transport.buffered() > cli.STREAM_LOW_WATER:
            assert self._query is not None
            self._query.pause()
            conn._wait_writable()

    def _decide(self) -> bool:
        """Whether the first bytes tell table data from a message (sets ``_kind``): text may need 4."""
        head = bytes(self._pending[:4])
        if not self._json and len(head) < 4 and b"key=".startswith(head):
            return False
        data = head.startswith(b"[") if self._json else head[:1] in (b"#", b"\n") or head.startswith(b"key=")
        self._kind = "data" if data else "message"
        if data and self._json:
            del self._pending[0]
        elif data:
            self._keep_headers = not self._headers_kept
            self._headers_kept = True
        return True

    def _forward(self) -> None:
        """Write what is complete of the pending bytes: whole lines (text), whole rows (JSON)."""
        pending = self._pending
        if self._json:
            end = pending.rfind(_JSON_ROW)
            if end > 0:
                self._write_rows(bytes(pending[:end]))
                del pending[:end]
            return
        end = pending.rfind(b"\n") + 1
        if end:
            block = bytes(pending[:end])
            del pending[:end]
            block = self._text_lines(block)
            if block:
                self._conn._write(block)

    def _text_lines(self, block: bytes) -> bytes:
        """Whole lines of a text answer, without the empty ones and (but the first shard's) the headers."""
        keep = self._keep_headers
        if not block.startswith(b"\n") and b"\n\n" not in block and (
                keep or (not block.startswith(b"#") and b"\n#" not in block)):
            return block
        lines = [line for line in block.split(b"\n") if line and (keep or not line.startswith(b"#"))]
        return b"\n".join(lines) + b"\n" if lines else b""

    def _write_rows(self, block: bytes) -> None:
        if not self._shard_rows:
            block = block.lstrip()
            if not block:
                return
            block = (b"," if self._rows else b"[") + block
            self._shard_rows = self._rows = True
        self._conn._write(block)

    def _end(self, problem: ShardUnavailable | None) -> None:
        shard = self._shards.popleft()
        # (one-shot mode's closing empty line: see _complete)
        complete = problem is None and (self._tail == b"\n\n" or (self._received == 1 and self._tail == b"\n"))
        pending = bytes(self._pending)
        self._pending = bytearray()
        if self._received == 0:
            self._note(shard, "unavailable")
        elif self._kind == "message":  # (its closing empty line goes)
            if self._json:
                self._messages.append(pending.rstrip(b"\n"))
            else:
                self._conn._write(f"# shard {shard.label}\n".encode() + pending.rstrip(b"\n") + b"\n")
        elif self._json:
            tail = pending.rstrip()
            if complete and tail.endswith(b"]"):
                self._write_rows(tail[:-1])
            else:
                self._note(shard, "unavailable (answer cut short)")
        elif not complete:  # (also an answer too short to tell: "ke")
            self._note(shard, "unavailable (answer cut short)")  # the partial line stays out
        self._next_shard()

    def _note(self, shard: Shard, problem: str) -> None:
        if not self._json:
            self._conn._write(f"# shard {shard.label}: {problem}\n".encode())

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        if self._json:
            last = b"]" if self._rows else self._messages[0] if self._messages else b"[]"
            self._conn._write(last + b"\n")
        self._conn._part_done()


def _command_of(words: list[str]) -> tuple[str, ...] | None:
    """The command ``words`` name, found as ``cli.stream_command`` finds it; None if unknown."""
    for length in (2, 1):
        if tuple(words[:length]) in cli.COMMANDS:
            return tuple(words[:length])
    return None


class ShardedCliConnection(cli.LineServer):
    """Transport protocol of one connection to the main process's stats socket.

    Behaves as ``cli.CliConnection`` (one-shot or ``prompt`` mode, lines and
    their ``;`` commands answered in order, reading paused past
    ``cli.MAX_COMMAND_LINE`` of waiting lines, a half-closed client
    answered); ``help`` and unknown commands are answered here, the others
    by the shards (``shards()`` read per command): ``show table`` streamed,
    ``show metrics`` as the endpoint, ``clear table`` summed, ``json`` forms
    merged, other texts one after the other. No command starts while more
    than ``cli.STREAM_LOW_WATER`` waits for the client.
    """

    def __init__(self, reactor: Reactor, shards: Shards) -> None:
        super().__init__()
        self._reactor = reactor
        self.shards = shards
        self.interactive = False
        self._commands: deque[str] | None = None  #: the rest of the line being answered (None: no line)
        self._part: _TableStream | _Collect | None = None  #: the command being answered by the shards
        self._close_after = False  #: close once the line is answered (one-shot mode)
        self._waiting = False  #: a writable() call was asked for

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._waiting = False
        self._commands = None
        if self._part is not None:
            self._part.cancel()
            self._part = None

    def writable(self) -> None:
        if not self._waiting:
            return
        self._waiting = False
        if isinstance(self._part, _TableStream):
            self._part.resume()
        else:
            self._next()
            self._serve()

    def _answering(self) -> bool:
        return self._commands is not None

    def _answer(self, line: bytes) -> None:
        if len(line) > cli.MAX_COMMAND_LINE:
            self._reply("Command line too long\n", close=True)
            return
        text = line.decode("utf-8", "replace").strip()
        if text == "quit":
            self._reply("", close=True)
        elif text == "prompt":
            self.interactive = not self.interactive
            if self.interactive:
                assert self.transport is not None
                self.transport.write(self.PROMPT[1:])
            else:
                self._reply("", close=True)
        else:
            self._commands = deque(text.split(";"))
            self._close_after = not self.interactive
            self._next()

    def _next(self) -> None:
        """Answer the line's next commands, until one waits for the shards or for the client."""
        while self.transport is not None and self._commands is not None and self._part is None:
            if self.transport.buffered() > cli.STREAM_LOW_WATER:
                self._wait_writable()
                return
            if not self._commands:
                self._commands = None
                self._reply("", close=self._close_after)
                return
            self._start(self._commands.popleft().strip())

    def _start(self, command: str) -> None:
        try:
            words = shlex.split(command)
        except ValueError as exc:
            self._write(f"Invalid command: {exc}\n".encode())
            return
        if not words:
            return
        name = _command_of(words)
        if name is None:
            # stream_command's answer to an unknown command
            self._write((f"Unknown command: '{' '.join(words)[:80]}'\n" + cli.HELP).encode())
        elif name == ("help",):
            self._write(cli.HELP.encode())
        elif name == ("show", "table"):
            self._part = _TableStream(self, self.shards(), command, words[-1] == "json")
        else:
            self._part = _Collect(self._reactor, self.shards(), command, partial(self._collected, words, name))

    def _collected(self, words: list[str], name: tuple[str, ...], answers: list[ShardAnswer]) -> None:
        self._part = None
        if name == ("show", "metrics") and len(words) == 2:
            text = merge_metrics(answers)
        elif name == ("clear", "table"):
            text = merge_clear(answers)
        else:
            merged = merge_json(answers, name in _DICT_ANSWERS) if words[-1] == "json" else None
            text = merged if merged is not None else merge_text(answers)
        self._write(text.encode())
        self._part_done()

    def _part_done(self) -> None:
        """The shards' command is answered: on with the line."""
        self._part = None
        self._next()
        self._serve()

    def _wait_writable(self) -> None:
        self._waiting = True
        if self.transport is not None:
            self.transport.request_writable(cli.STREAM_LOW_WATER)

    def _write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)


class ShardedMetricsConnection:
    """One HTTP/1.x connection to the main's metrics endpoint: one request, one answer, close.

    Answers as ``metrics.MetricsConnection`` (same 400/404/405/431, ``GET`` or
    ``HEAD /metrics``) with the shards' ``show metrics``, asked of all at once
    (``merge_metrics``); a client that half-closes is still answered.
    ``clock`` gives the ``Date`` header (the system's by default).
    """

    def __init__(self, reactor: Reactor, shards: Shards, *, clock: Clock | None = None) -> None:
        self._reactor = reactor
        self.shards = shards
        self.clock = clock if clock is not None else Clock()
        self.transport: StreamTransport | None = None
        self._buffer = bytearray()
        self._asked = False
        self._collect: _Collect | None = None

    def connection_made(self, transport: StreamTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self._asked:
            return  # one request per connection
        self._buffer += data
        if b"\r\n\r\n" in self._buffer or b"\n\n" in self._buffer:
            self._asked = True
            self._answer()
        elif len(self._buffer) > MAX_REQUEST:
            self._asked = True
            self._send(431, "text/plain", "request header too large\n")

    def eof_received(self) -> bool:
        return self._collect is not None  # True: the answer is on its way

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self._collect is not None:
            self._collect.cancel()
            self._collect = None

    def _answer(self) -> None:
        verdict = read_request(bytes(self._buffer))
        self._buffer.clear()
        if isinstance(verdict, HttpError):
            self._send(verdict.status, "text/plain", verdict.body)
        else:
            self._collect = _Collect(self._reactor, self.shards(), "show metrics",
                                     partial(self._collected, verdict))

    def _collected(self, head_only: bool, answers: list[ShardAnswer]) -> None:
        self._collect = None
        self._send(200, CONTENT_TYPE, merge_metrics(answers), head_only)

    def _send(self, status: int, content_type: str, body: str, head_only: bool = False) -> None:
        if self.transport is None:
            return
        self.transport.write(http_response(status, content_type, body, self.clock.wall(), head_only))
        self.transport.close()
        self.transport = None
