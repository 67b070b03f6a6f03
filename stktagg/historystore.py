"""The history file (issue 18, in progress): the aggregates' samples in one SQLite database.

Imports nothing of ``stktagg``; the standard library's ``sqlite3`` only. Meant to be
used from one thread of its own (the history writer, still to be wired), never from
the I/O thread: every call here may wait for the disk.

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

import sqlite3
from array import array
from collections.abc import Iterable

__all__ = ["HistoryStore", "MAX_SAMPLE", "pack", "unpack"]

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

    def _transaction(self):
        return _Transaction(self._db)

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


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN")

    def __exit__(self, kind, value, traceback) -> None:
        self._db.execute("COMMIT" if kind is None else "ROLLBACK")
