"""The history file (issue 18, in progress): the aggregates' samples in one SQLite database.

Imports nothing of ``stktagg``; the standard library's ``sqlite3`` only.
``HistoryStore`` is meant to be used from one thread of its own, ``HistoryWriter``'s
(not wired into the daemon yet), never from the I/O thread: every call of it may
wait for the disk.

Layout: one table ``samples``, a row per (stream, bucket, key) holding the sample,
each data type's value as a signed 64-bit integer (``array('q')``: a counter past
2^63 - 1 is stored as that); a stream is a (line, source table) pair, numbered in
the table ``streams``. The primary key starts with the stream and the bucket, so
that what a statistic reads (every key of a table over a run of buckets) and what
retention deletes (the oldest buckets) are each one range of the B-tree; ``WITHOUT
ROWID`` stores the rows in that tree. ``definitions`` keeps each source table's
definition (the caller's encoding). The file is in WAL
mode with ``synchronous=NORMAL``: a crash loses at most the last commits, never
the file, and readers do not wait for the writer. Lines are named by a text of
their own (``HistoryStore.line_name``), so a file outlives a reordered
configuration: a line keeps its samples as long as its section, suffixes and
resolution stay.
"""

from __future__ import annotations

import contextlib
import queue
import sqlite3
import threading
import urllib.parse
from array import array
from collections.abc import Iterable, Iterator

__all__ = ["HistoryStore", "HistoryWriter", "MAX_SAMPLE", "TRIM_STEP", "pack", "unpack"]

#: The largest value a sample keeps (a signed 64-bit column).
MAX_SAMPLE = (1 << 63) - 1

_SCHEMA = ("""
CREATE TABLE IF NOT EXISTS streams (
    id INTEGER PRIMARY KEY,
    line TEXT NOT NULL,
    tbl BLOB NOT NULL,
    UNIQUE (line, tbl)
)
""", """
CREATE TABLE IF NOT EXISTS samples (
    stream INTEGER NOT NULL,
    bucket INTEGER NOT NULL,
    key BLOB NOT NULL,
    vals BLOB NOT NULL,
    PRIMARY KEY (stream, bucket, key)
) WITHOUT ROWID
""", """
CREATE TABLE IF NOT EXISTS definitions (
    line TEXT NOT NULL,
    tbl BLOB NOT NULL,
    definition BLOB NOT NULL,
    PRIMARY KEY (line, tbl)
) WITHOUT ROWID
""")
#: Rows a ``window_stream`` fetches per call: its memory, whatever the window's size.
FETCH_ROWS = 4096


def pack(values: Iterable[int]) -> bytes:
    return array("q", (min(MAX_SAMPLE, max(-MAX_SAMPLE - 1, v)) for v in values)).tobytes()


def unpack(data: bytes) -> tuple[int, ...]:
    return tuple(array("q", data))


class HistoryStore:
    """One history file, opened (and created) at ``path``."""

    def __init__(self, path: str, readonly: bool = False) -> None:
        """``readonly``: a reader's connection to an existing file (the CLI's), which never
        changes the file, so that it cannot compete with the writer's for its locks."""
        if readonly:
            uri = "file:" + urllib.parse.quote(path) + "?mode=ro"
            self._db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            self._streams = {}
            return
        self._streams: dict[tuple[str, bytes], int] = {}
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for statement in ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", *_SCHEMA):
            self._run(statement, ())

    @staticmethod
    def line_name(section: str, source: str, resolution_ms: int) -> str:
        """The name samples are stored under: every history line of a section with the same
        source suffix and resolution shares them (``.yday`` and ``.peak`` of ``.aggr``)."""
        return f"{section} {source} {resolution_ms}"

    def close(self) -> None:
        self._db.close()

    def write(self, line: str, table: bytes, bucket: int, rows: Iterable[tuple[bytes, bytes]]) -> int:
        """One bucket's samples ``(key, packed values)`` of a table, in one transaction
        (a sample written again replaces the first); returns the rows written."""
        stream = self._stream(line, table, create=True)
        with self._transaction():
            return self._run_many(
                "INSERT OR REPLACE INTO samples (stream, bucket, key, vals) VALUES (?, ?, ?, ?)",
                ((stream, bucket, key, vals) for key, vals in rows))

    def window(self, line: str, table: bytes, buckets: range) -> dict[bytes, list[tuple[int, ...]]]:
        """Every key's samples over ``buckets`` (a key absent from a bucket has no sample there)."""
        found: dict[bytes, list[tuple[int, ...]]] = {}
        stream = self._stream(line, table)
        if not buckets or stream is None:
            return found
        rows = self._db.execute("SELECT key, vals FROM samples WHERE stream = ? AND bucket >= ? AND bucket < ?",
                                (stream, buckets.start, buckets.stop))
        for key, vals in rows:
            found.setdefault(key, []).append(unpack(vals))
        return found

    def window_stream(self, line: str, table: bytes, buckets: range) -> Iterator[tuple[bytes, list[tuple[int, ...]]]]:
        """``window``, a key at a time, in key order: ``(key, its samples oldest first)``.

        The rows come sorted by key (SQLite's sorter, which spills to a temporary
        file), ``FETCH_ROWS`` at a time: the memory is one key's samples, whatever
        the window's size. The cursor is closed when the iteration ends or stops.
        """
        stream = self._stream(line, table)
        if not buckets or stream is None:
            return
        cursor = self._db.execute(
            "SELECT key, vals FROM samples WHERE stream = ? AND bucket >= ? AND bucket < ? ORDER BY key, bucket",
            (stream, buckets.start, buckets.stop))
        try:
            key, samples = None, []
            while rows := cursor.fetchmany(FETCH_ROWS):
                for row_key, vals in rows:
                    if row_key != key:
                        if samples:
                            yield key, samples
                        key, samples = row_key, []
                    samples.append(unpack(vals))
            if samples:
                yield key, samples
        finally:
            cursor.close()

    def key_buckets(self, line: str, table: bytes, key: bytes,
                    buckets: range | None = None) -> list[tuple[int, tuple[int, ...]]]:
        """One key's stored ``(bucket, values)`` in ``buckets`` (all when None), oldest first
        (``show history``). With ``buckets``, one lookup of the primary key per bucket: a
        few microseconds each, whatever the file holds of other keys."""
        stream = self._stream(line, table)
        if stream is None:
            return []
        if buckets is None:
            rows = self._db.execute("SELECT bucket, vals FROM samples WHERE stream = ? AND key = ? ORDER BY bucket",
                                    (stream, key)).fetchall()
            return [(bucket, unpack(vals)) for bucket, vals in rows]
        found = []
        for bucket in buckets:
            cursor = self._db.execute("SELECT vals FROM samples WHERE stream = ? AND bucket = ? AND key = ?",
                                      (stream, bucket, key))
            row = cursor.fetchone()
            cursor.close()
            if row is not None:
                found.append((bucket, unpack(row[0])))
        return found

    def bucket_range(self, line: str, table: bytes) -> range:
        """The buckets stored of ``line``'s ``table``: from the oldest to the newest (empty: none)."""
        stream = self._stream(line, table)
        if stream is None:
            return range(0)
        cursor = self._db.execute("SELECT min(bucket), max(bucket) FROM samples WHERE stream = ?", (stream,))
        first, last = cursor.fetchone()
        cursor.close()
        return range(0) if first is None else range(first, last + 1)

    def save_definition(self, line: str, table: bytes, definition: bytes) -> None:
        """Keep what a table of ``line`` is (the caller's encoding): a restarted daemon serves its
        history before any peer has defined the table again."""
        with self._transaction():
            self._run("INSERT OR REPLACE INTO definitions (line, tbl, definition) VALUES (?, ?, ?)",
                      (line, table, definition))

    def definitions(self, line: str) -> dict[bytes, bytes]:
        rows = self._db.execute("SELECT tbl, definition FROM definitions WHERE line = ?", (line,)).fetchall()
        return dict(rows)

    def delete_before(self, line: str, table: bytes, bucket: int, limit: int) -> int:
        """Delete at most ``limit`` samples of ``line``'s ``table`` older than ``bucket`` (the
        oldest first: the start of the key range); returns how many went. Retention in
        bounded steps, never one long delete."""
        stream = self._stream(line, table)
        if stream is None:
            return 0
        with self._transaction():
            return self._run(
                "DELETE FROM samples WHERE (stream, bucket, key) IN ("
                " SELECT stream, bucket, key FROM samples WHERE stream = ? AND bucket < ?"
                " ORDER BY bucket, key LIMIT ?)", (stream, bucket, limit))

    def tables(self, line: str) -> list[bytes]:
        rows = self._db.execute("SELECT tbl FROM streams WHERE line = ? ORDER BY tbl", (line,)).fetchall()
        return [name for (name,) in rows]

    def lines(self) -> list[str]:
        return [name for (name,) in self._db.execute("SELECT DISTINCT line FROM streams ORDER BY line").fetchall()]

    def _stream(self, line: str, table: bytes, create: bool = False) -> int | None:
        """The number a (line, table) is stored under: each row carries it, not the two names
        (about 30 bytes a sample less); None when the file has none and ``create`` is false."""
        found = self._streams.get((line, table))
        if found is None:
            cursor = self._db.execute("SELECT id FROM streams WHERE line = ? AND tbl = ?", (line, table))
            row = cursor.fetchone()
            cursor.close()
            if row is None:
                if not create:
                    return None
                with self._transaction():
                    cursor = self._db.execute("INSERT INTO streams (line, tbl) VALUES (?, ?)", (line, table))
                    row = (cursor.lastrowid,)
                    cursor.close()
            found = self._streams[(line, table)] = row[0]
        return found

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # Every statement's cursor is closed at once (a PRAGMA's unread answer included): PyPy's
    # sqlite3 refuses to commit while one is open ("SQL statements in progress").
    def _run(self, sql: str, args: tuple) -> int:
        cursor = self._db.execute(sql, args)
        try:
            return cursor.rowcount
        finally:
            cursor.close()

    def _run_many(self, sql: str, rows: Iterable[tuple]) -> int:
        cursor = self._db.executemany(sql, rows)
        try:
            return cursor.rowcount
        finally:
            cursor.close()


#: Samples one trim step deletes at most, before the writer looks at its other jobs.
TRIM_STEP = 10_000


class HistoryWriter:
    """The history file's own thread: every write, trim and read of the file runs there.

    The I/O thread only queues jobs (``write``, ``trim``, ``read``), which never wait
    for the disk. A trim deletes ``TRIM_STEP`` samples at most, then queues its rest
    behind the jobs that came meanwhile, so retention never holds the writes back for
    long. A job that fails is reported to ``on_error`` (from the writer's thread) and
    the writer goes on; the file is opened in the thread at the first job, so a file
    that cannot be opened fails that job, and the next job tries again.
    """

    def __init__(self, path: str, on_error=None) -> None:
        self._path = path
        self._on_error = on_error or (lambda exc: None)
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="stktagg-history", daemon=True)
        self._thread.start()

    def write(self, line: str, table: bytes, bucket: int, rows: list[tuple[bytes, bytes]]) -> None:
        self._jobs.put(lambda store: store.write(line, table, bucket, rows))

    def trim(self, line: str, table: bytes, before: int, step: int = TRIM_STEP) -> None:
        def job(store: HistoryStore) -> None:
            if store.delete_before(line, table, before, step) == step:
                self.trim(line, table, before, step)  # more to delete: behind what came meanwhile
        self._jobs.put(job)

    def call(self, job) -> None:
        """Run ``job(store)`` in the writer's thread (it hands its results on itself)."""
        self._jobs.put(job)

    def read(self, query, deliver) -> None:
        """Run ``query(store)`` in the writer's thread and hand its result to ``deliver`` there
        (the caller passes on to its own thread, e.g. with ``call_soon_threadsafe``)."""
        self._jobs.put(lambda store: deliver(query(store)))

    def close(self, timeout: float | None = None) -> None:
        """Run what is queued, then close the file and end the thread."""
        self._jobs.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        store = None
        closing = False
        while True:
            if closing:  # what is left, the steps a trim queues again behind the close included
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
            else:
                job = self._jobs.get()
            if job is None:
                closing = True
                continue
            try:
                if store is None:  # at the first job, and again after the file could not be opened
                    store = HistoryStore(self._path)
                job(store)
            except Exception as exc:
                self._on_error(exc)
        if store is not None:
            store.close()
