"""The history file (issue 18, in progress): the aggregates' samples in one SQLite database.

Imports nothing of ``stktagg``; the standard library's ``sqlite3`` only.
``HistoryStore`` is meant to be used from one thread of its own, ``HistoryWriter``'s
(not wired into the daemon yet), never from the I/O thread: every call of it may
wait for the disk.

Layout: one table ``samples``, a row per (line, output table, bucket, key) holding
the sample, each data type's value as a signed 64-bit integer (``array('q')``: a
counter past 2^63 - 1 is stored as that). The primary key starts with the line and
the bucket, so that what a statistic reads (every key of a table over a run of
buckets) and what retention deletes (the oldest buckets) are each one range of
the B-tree; ``WITHOUT ROWID`` stores the rows in that tree. The file is in WAL
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
from array import array
from collections.abc import Iterable, Iterator

__all__ = ["HistoryStore", "HistoryWriter", "MAX_SAMPLE", "TRIM_STEP", "pack", "unpack"]

#: The largest value a sample keeps (a signed 64-bit column).
MAX_SAMPLE = (1 << 63) - 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    line TEXT NOT NULL,
    tbl BLOB NOT NULL,
    bucket INTEGER NOT NULL,
    key BLOB NOT NULL,
    vals BLOB NOT NULL,
    PRIMARY KEY (line, tbl, bucket, key)
) WITHOUT ROWID
"""


def pack(values: Iterable[int]) -> bytes:
    return array("q", (min(MAX_SAMPLE, max(-MAX_SAMPLE - 1, v)) for v in values)).tobytes()


def unpack(data: bytes) -> tuple[int, ...]:
    return tuple(array("q", data))


class HistoryStore:
    """One history file, opened (and created) at ``path``."""

    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for statement in ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", _SCHEMA):
            self._run(statement, ())

    @staticmethod
    def line_name(section: str, source: str, target: str, resolution_ms: int) -> str:
        return f"{section} {source} {target} {resolution_ms}"

    def close(self) -> None:
        self._db.close()

    def write(self, line: str, table: bytes, bucket: int, rows: Iterable[tuple[bytes, bytes]]) -> int:
        """One bucket's samples ``(key, packed values)`` of a table, in one transaction
        (a sample written again replaces the first); returns the rows written."""
        with self._transaction():
            return self._run_many(
                "INSERT OR REPLACE INTO samples (line, tbl, bucket, key, vals) VALUES (?, ?, ?, ?, ?)",
                ((line, table, bucket, key, vals) for key, vals in rows))

    def window(self, line: str, table: bytes, buckets: range) -> dict[bytes, list[tuple[int, ...]]]:
        """Every key's samples over ``buckets`` (a key absent from a bucket has no sample there)."""
        found: dict[bytes, list[tuple[int, ...]]] = {}
        if not buckets:
            return found
        rows = self._db.execute(
            "SELECT key, vals FROM samples WHERE line = ? AND tbl = ? AND bucket >= ? AND bucket < ?",
            (line, table, buckets.start, buckets.stop))
        for key, vals in rows:
            found.setdefault(key, []).append(unpack(vals))
        return found

    def key_buckets(self, line: str, table: bytes, key: bytes) -> list[tuple[int, tuple[int, ...]]]:
        """One key's stored ``(bucket, values)``, oldest first (``show history``)."""
        rows = self._db.execute(
            "SELECT bucket, vals FROM samples WHERE line = ? AND tbl = ? AND key = ? ORDER BY bucket",
            (line, table, key))
        return [(bucket, unpack(vals)) for bucket, vals in rows]

    def delete_before(self, line: str, table: bytes, bucket: int, limit: int) -> int:
        """Delete at most ``limit`` samples of ``line``'s ``table`` older than ``bucket`` (the
        oldest first: the start of the key range); returns how many went. Retention in
        bounded steps, never one long delete."""
        with self._transaction():
            return self._run(
                "DELETE FROM samples WHERE (line, tbl, bucket, key) IN ("
                " SELECT line, tbl, bucket, key FROM samples WHERE line = ? AND tbl = ? AND bucket < ?"
                " ORDER BY bucket, key LIMIT ?)", (line, table, bucket, limit))

    def tables(self, line: str) -> list[bytes]:
        return [name for (name,) in self._db.execute("SELECT DISTINCT tbl FROM samples WHERE line = ?", (line,))]

    def lines(self) -> list[str]:
        return [name for (name,) in self._db.execute("SELECT DISTINCT line FROM samples")]

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
    the writer goes on; the file is opened in the thread, so a file that cannot be
    opened is such an error too, and every later job is then skipped.
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

    def read(self, query, deliver) -> None:
        """Run ``query(store)`` in the writer's thread and hand its result to ``deliver`` there
        (the caller passes on to its own thread, e.g. with ``call_soon_threadsafe``)."""
        self._jobs.put(lambda store: deliver(query(store)))

    def close(self, timeout: float | None = None) -> None:
        """Run what is queued, then close the file and end the thread."""
        self._jobs.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            store = HistoryStore(self._path)
        except Exception as exc:  # the file cannot be opened: report it, skip every job
            self._on_error(exc)
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
            if store is None:
                continue
            try:
                job(store)
            except Exception as exc:
                self._on_error(exc)
        if store is not None:
            store.close()
