"""History lines at work (issue 18): the aggregates sampled, statistics computed off the loop.

Runs in the I/O thread, except the jobs it hands the ``historystore.HistoryWriter``
(which run in the writer's thread and never touch a table). Imports
``aggregation``, ``clock``, ``config``, ``datatypes``, ``history``,
``historystore``, ``schema``, ``slices``, ``status``, ``table``, ``wire`` and ``workers``.

The history lines of a section with the same source suffix and resolution make
one *series*: they share their samples (``HistoryStore.line_name``), so
``.yday`` and ``.peak`` of ``.aggr`` cost one sample per key and bucket between
them. At the end of each of a series' buckets (wall time, ``history.bucket_of``):

1. **Sampling**: a slice job (``slices.Slicer``) reads every source table's
   aggregates a part of a stripe per step (``AggTable.teach_rows``: one read
   under the stripe's lock, the generated combine), turns each into a sample
   (``Samples``: a rate is the rate HAProxy displays, a counter or tag its
   value, a server id or name nothing) and queues each part for the writer
   (one transaction per part); then the buckets older than the series'
   retention are trimmed, in bounded steps.
2. **Statistics**: for each line, a job in the writer's thread reads the
   window's samples a key at a time (``HistoryStore.window_stream``) and
   computes each key's statistic; the results come back to the loop in
   chunks (``call_soon_threadsafe``) and the workers write them into the
   history table under ``table.HISTORY_PEER``, which makes them pushed as any
   change is. Every key is written at every bucket, with a life of
   ``ENTRY_LIFE_BUCKETS`` buckets: a key whose samples have all left the
   window is not computed again, and its entry expires, here and on the nodes.

Nothing waits without bound: a series still sampling when its next bucket
ends skips that bucket, and a line still computing skips its next computation
(both counted), so the writer's queue holds about one bucket's rows.

At start the statistics are computed at once from the file, before any peer
connects: the file keeps each source table's definition too, so a history
table exists before any node has defined its source again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .aggregation import Section
from .clock import Clock, table_ms
from .config import HistoryLine, table_suffix
from .datatypes import U32_MAX, U64_MAX, read_rate
from .history import bucket_of, parse_stat, resolution_ms, retention_buckets, statistic_function, window_buckets
from .historystore import HistoryStore, HistoryWriter, pack
from .schema import Combine, Field, StdType
from .slices import Slicer
from .status import HistoryLineStatus, HistoryStatus
from .table import HISTORY_PEER, AggTable, TableMode
from .wire import Reader, decode_definition, encode_definition
from .workers import Workers

__all__ = ["ENTRY_LIFE_BUCKETS", "RESULT_CHUNK", "YIELD_KEYS", "YIELD_PAUSE", "Recorder", "SAMPLE_PART", "Samples", "Series"]

log = logging.getLogger(__name__)

#: A history entry lives this many buckets after it was written (it is written again at each).
ENTRY_LIFE_BUCKETS = 2
#: Keys a sampling step reads (under one stripe's lock) and writes (one transaction).
SAMPLE_PART = 2_000
#: Keys' statistics handed back to the loop at once.
RESULT_CHUNK = 2_000
#: The writer's thread computes statistics in Python, holding the GIL: every YIELD_KEYS keys
#: (about a millisecond of work) it sleeps YIELD_PAUSE, so that the I/O thread, which gives
#: the GIL up at every system call, gets it back at once instead of after the interpreter's
#: switch interval (5 ms) each time. Measured with a million keys: without it the loop's p50
#: latency went from 5 to 50 ms while a computation ran (see docs/ARCHITECTURE.md).
YIELD_KEYS = 100
YIELD_PAUSE = 0.0005
#: A bucket's sampling starts this long after its end (s): the loop's timers may fire early by
#: up to its poll coalescing, and the bucket must be over.
SETTLE = 0.02


class Samples:
    """How one table's aggregates become samples, and statistics become its entries again.

    A sample is one integer per element of each data type, in the table's order:
    a frequency counter's displayed rate (``datatypes.read_rate``), a counter's or
    tag's value, and 0 for server ids and names (the latest of something is no
    statistic). An entry of a history table is the reverse: each rate as
    (age 0, curr = the statistic, prev 0), which HAProxy reads as the statistic
    (``AggTable`` keeps it so: ``_steady_locked``); server ids 0, names none.
    """

    def __init__(self, fields: tuple[Field, ...]) -> None:
        self.fields = fields

    def sample(self, values: tuple) -> list[int]:
        out = []
        for f, value in zip(self.fields, values):
            elements = value if f.info.is_array else (value,)
            for i in range(f.count):
                v = elements[i] if i < len(elements) else None
                if v is None or f.info.combine is Combine.LATEST:
                    out.append(0)
                elif f.info.std is StdType.FRQP:
                    out.append(read_rate(v, f.period or 1))
                else:
                    out.append(v)
        return out

    def entry(self, stats: list[int]) -> tuple:
        values = []
        at = 0
        for f in self.fields:
            elements = []
            for stat in stats[at:at + f.count]:
                std = f.info.std
                if std is StdType.DICT:
                    elements.append(None)
                elif f.info.combine is Combine.LATEST:
                    elements.append(0)
                elif std is StdType.FRQP:
                    elements.append((0, min(max(stat, 0), U32_MAX), 0))
                elif std is StdType.SINT:
                    elements.append(max(-(1 << 31), min(stat, (1 << 31) - 1)))
                else:
                    elements.append(max(0, min(stat, U64_MAX if std is StdType.ULL else U32_MAX)))
            at += f.count
            values.append(tuple(elements) if f.info.is_array else elements[0])
        return tuple(values)


@dataclass(slots=True)
class _Line:
    """One history line at work."""

    config: HistoryLine
    stat: str
    rank: int | None
    computing: bool = False  #: a computation is under way in the writer
    computed: int = 0  #: computations done
    skipped: int = 0  #: computations skipped (the previous one was not done)
    last_keys: int = 0  #: keys the last computation gave
    last_seconds: float = 0.0  #: how long it took (wall time, in the writer)


@dataclass(slots=True)
class Series:
    """The lines of a section with the same source suffix and resolution, and their samples."""

    section: Section
    source: str
    resolution: int
    name: str
    lines: list[_Line] = field(default_factory=list)
    sampling: bool = False  #: a sampling job is under way
    saved: set = field(default_factory=set)  #: source tables whose definition the file has (this run)
    samples: int = 0  #: samples written
    buckets: int = 0  #: buckets sampled
    skipped: int = 0  #: buckets skipped (the previous one was still being sampled)
    timer: object = None
    ended: bool = False  #: a reload removed it

    @property
    def retention(self) -> int:
        return max(retention_buckets(line.config.window_ms, line.config.offset_ms, self.resolution)
                   for line in self.lines)


class Recorder:
    """Every section's history lines (see the module docstring).

    Args:
        path: the history file (``global history-file``).
        sections: the server's sections (the list it keeps; a reload changes it).
    """

    def __init__(self, path: str, reactor, clock: Clock, sections: list[Section], slices: Slicer,
                 workers: Workers, writer: Callable[..., HistoryWriter] = HistoryWriter) -> None:
        self.path = path
        self._reactor = reactor
        self._clock = clock
        self._sections = sections
        self._slices = slices
        self._workers = workers
        self.errors = 0
        self.last_error = ""
        self.series: dict[tuple[str, str, int], Series] = {}
        self.writer = writer(path, self._failed)
        self._reader: HistoryStore | None = None

    # -- start, reload, stop ------------------------------------------------------------

    def start(self) -> None:
        """Take the sections' lines: each series' history tables are made from the file and
        their statistics computed at once (before any peer connects), then sampled at every
        bucket's end."""
        self.refresh()

    def refresh(self) -> None:
        """Take the sections' history lines as they are now (at start, and after a reload); a
        new series starts as ``start`` says."""
        wanted: dict[tuple[str, str, int], list[HistoryLine]] = {}
        for section in self._sections:
            for line in section.history:
                res = resolution_ms(line.window_ms)
                wanted.setdefault((section.name, line.source, res), []).append(line)
        for key, series in list(self.series.items()):
            if key not in wanted:
                series.ended = True
                if series.timer is not None:
                    series.timer.cancel()
                del self.series[key]
        for key, lines in wanted.items():
            section = next(s for s in self._sections if s.name == key[0])
            series = self.series.get(key)
            new = series is None
            if new:
                series = self.series[key] = Series(section, key[1], key[2], HistoryStore.line_name(*key))
            series.section = section
            kept = {line.config: line for line in series.lines}
            series.lines = [kept.get(line) or _Line(line, *parse_stat(line.stat)) for line in lines]
            if new:
                self._load(series)
                self._schedule(series)

    def close(self, timeout: float | None = None) -> None:
        """Stop sampling; the writer finishes what is queued, then closes the file."""
        for series in self.series.values():
            series.ended = True
            if series.timer is not None:
                series.timer.cancel()
        self.writer.close(timeout)
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _load(self, series: Series) -> None:
        """Have the writer read the source tables' definitions the file keeps (``_loaded``)."""
        deliver = self._reactor.call_soon_threadsafe
        self.writer.call(lambda store: deliver(self._loaded, series, store.definitions(series.name)))

    def _loaded(self, series: Series, stored: dict[bytes, bytes]) -> None:
        """Make the history tables of every source table the file knows of, then compute the
        statistics of the window of the last bucket's end, as if computed then."""
        if series.ended:
            return
        for name, blob in stored.items():
            try:
                definition = decode_definition(Reader(blob))
            except Exception as exc:
                log.warning("history file %s: table %r: bad definition ignored: %s", self.path, name, exc)
                continue
            series.section.add_history_tables(definition)
            series.saved.add(name)
        wall_ms = int(self._clock.wall() * 1000)
        for line in series.lines:
            self._compute(series, line, wall_ms // series.resolution * series.resolution)

    def _failed(self, exc: Exception) -> None:
        """A writer job failed (called from the writer's thread)."""
        self.errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        log.error("history file %s: %s", self.path, self.last_error)

    # -- sampling -------------------------------------------------------------------------

    def _schedule(self, series: Series) -> None:
        wall_ms = int(self._clock.wall() * 1000)
        end = (bucket_of(wall_ms, series.resolution) + 1) * series.resolution
        series.timer = self._reactor.call_later((end - wall_ms) / 1000 + SETTLE, self._bucket_ended, series)

    def _bucket_ended(self, series: Series) -> None:
        if series.ended:
            return
        self._schedule(series)
        wall_ms = int(self._clock.wall() * 1000)
        bucket = bucket_of(wall_ms, series.resolution) - 1
        if series.sampling:
            series.skipped += 1
            return
        series.sampling = True
        self._slices.add(_Sampling(self, series, bucket))

    def sampled(self, series: Series, bucket: int, tables: list[bytes]) -> None:
        """A bucket's samples are all queued: trim, then compute each line's statistics."""
        series.sampling = False
        series.buckets += 1
        for name in tables:
            self.writer.trim(series.name, name, bucket - series.retention + 1)
        end_ms = (bucket + 1) * series.resolution
        for line in series.lines:
            self._compute(series, line, end_ms)

    def source_tables(self, series: Series) -> list[AggTable]:
        return [t for t in series.section.tables.values()
                if t.mode is TableMode.AGGREGATE and table_suffix(t.name.decode("utf-8", "surrogateescape")) == series.source]

    def save_definition(self, series: Series, table: AggTable) -> None:
        if table.name not in series.saved:
            series.saved.add(table.name)
            blob = encode_definition(table.definition)
            self.writer.call(lambda store: store.save_definition(series.name, table.name, blob))

    # -- statistics -----------------------------------------------------------------------

    def _compute(self, series: Series, line: _Line, end_ms: int) -> None:
        """Compute ``line``'s statistics for the window ending ``offset`` before ``end_ms``."""
        if line.computing:
            line.skipped += 1
            return
        targets = self._targets(series, line)
        if not targets:
            return
        line.computing = True
        config, res = line.config, series.resolution
        buckets = window_buckets(end_ms, config.window_ms, config.offset_ms, res)
        life = ENTRY_LIFE_BUCKETS * res
        jobs = [(source, target, Samples(target.fields)) for source, target in targets]
        deliver = self._reactor.call_soon_threadsafe
        stat = statistic_function(line.stat, line.rank)

        def job(store: HistoryStore) -> None:
            started = self._clock.wall()
            keys = 0
            try:
                for source, target, samples in jobs:
                    chunk = []
                    entry = samples.entry
                    for key, found in store.window_stream(series.name, source, buckets):
                        chunk.append((key, entry([stat(values) for values in zip(*found)]), life))
                        if len(chunk) % YIELD_KEYS == 0:
                            time.sleep(YIELD_PAUSE)  # the GIL to the loop (see YIELD_KEYS)
                        if len(chunk) >= RESULT_CHUNK:
                            deliver(self._apply, target, chunk)
                            keys += len(chunk)
                            chunk = []
                    if chunk:
                        deliver(self._apply, target, chunk)
                        keys += len(chunk)
            finally:
                deliver(self._computed, line, keys, self._clock.wall() - started)

        self.writer.call(job)

    def _targets(self, series: Series, line: _Line) -> list[tuple[bytes, AggTable]]:
        """(source table name, history table) of ``line``: every history table made for it."""
        tables = series.section.tables
        return [(source, tables[name]) for name, source in series.section.history_sources.items()
                if name in tables and table_suffix(name.decode("utf-8", "surrogateescape")) == line.config.target]

    def _apply(self, table: AggTable, chunk: list) -> None:
        self._workers.submit_updates(table, HISTORY_PEER, table.fields, chunk, table_ms(self._clock.now()))

    @staticmethod
    def _computed(line: _Line, keys: int, seconds: float) -> None:
        line.computing = False
        line.computed += 1
        line.last_keys = keys
        line.last_seconds = seconds

    # -- the status, and reads for the CLI (the I/O thread: a few primary-key lookups) -----

    def status(self) -> HistoryStatus:
        lines = []
        for series in self.series.values():
            for line in series.lines:
                config = line.config
                lines.append(HistoryLineStatus(
                    series.section.name, config.source, config.target, config.stat, config.window_ms,
                    config.offset_ms, series.resolution, series.retention, series.buckets, series.skipped,
                    series.samples, line.computed, line.skipped, line.last_keys, line.last_seconds,
                    lambda source, key, series=series: self.key_buckets(series, source, key)))
        return HistoryStatus(self.path, tuple(lines), self.errors, self.last_error)

    def key_buckets(self, series: Series, source: bytes, key: bytes) -> list[tuple[int, tuple[int, ...]]]:
        """One key's stored samples of ``source``, oldest first: one lookup per bucket of the
        retention (``HistoryStore.key_buckets``), in a connection of the I/O thread's own."""
        if self._reader is None:
            self._reader = HistoryStore(self.path, readonly=True)
        wall_ms = int(self._clock.wall() * 1000)
        last = bucket_of(wall_ms, series.resolution)
        return self._reader.key_buckets(series.name, source, key, range(last - series.retention, last + 1))


class _Sampling:
    """One bucket's sampling of a series (a ``slices.SliceJob``): a part of a stripe per step."""

    def __init__(self, recorder: Recorder, series: Series, bucket: int) -> None:
        self.recorder = recorder
        self.series = series
        self.bucket = bucket
        self.cancelled = False
        self._tables = recorder.source_tables(series)
        self._names = [t.name for t in self._tables]
        self._samples = [Samples(t.fields) for t in self._tables]
        self._table = 0
        self._stripe = -1
        self._keys: list[bytes] = []
        self._at = 0

    def ready(self) -> bool:
        return True

    def step(self, now: float, keys: int) -> bool:
        series = self.series
        if series.ended:
            return True
        while self._at >= len(self._keys):
            if not self._next_stripe():
                self.recorder.sampled(series, self.bucket, self._names)
                return True
        table = self._tables[self._table]
        part = self._keys[self._at:self._at + min(keys, SAMPLE_PART)]
        self._at += len(part)
        rows = table.teach_rows(self._stripe, part, table_ms(now))
        if rows:
            sample = self._samples[self._table].sample
            packed = [(key, pack(sample(values))) for key, values, _ in rows]
            self.recorder.writer.write(series.name, table.name, self.bucket, packed)
            series.samples += len(packed)
        return False

    def _next_stripe(self) -> bool:
        self._keys, self._at = [], 0
        while self._table < len(self._tables):
            table = self._tables[self._table]
            if self._stripe < 0:
                self.recorder.save_definition(self.series, table)
            self._stripe += 1
            if self._stripe < len(table.stripes):
                self._keys = table.stripe_keys(self._stripe)
                return True
            self._table, self._stripe = self._table + 1, -1
        return False

