"""History of the aggregates (issue 18, in progress): buckets and statistics."""

from __future__ import annotations

import math
import random
import threading

import pytest

from stktagg.history import (
    RESOLUTIONS,
    bucket_of,
    parse_stat,
    resolution_ms,
    retention_buckets,
    statistic,
    window_buckets,
)
from stktagg.historystore import MAX_SAMPLE, HistoryStore, HistoryWriter, pack, unpack


@pytest.mark.parametrize("window, resolution", [
    (2_000, 1_000), (12_000, 1_000), (13_000, 5_000), (600_000, 60_000), (3_600_000, 300_000),
    (86_400_000, 3_600_000), (30 * 86_400_000, 3_600_000),
])
def test_a_window_gets_at_most_12_buckets(window, resolution):
    assert resolution_ms(window) == resolution
    assert resolution in RESOLUTIONS
    assert window // resolution <= 12 or resolution == RESOLUTIONS[-1]


def test_the_window_is_the_buckets_wholly_inside_it():
    # now 10.5 s, window 2 s, offset 3 s: [5.5 s, 7.5 s] holds only the bucket [6 s, 7 s)
    assert list(window_buckets(10_500, 2_000, 3_000, 1_000)) == [6]
    assert list(window_buckets(10_000, 2_000, 3_000, 1_000)) == [5, 6]  # [5 s, 7 s] exactly
    assert list(window_buckets(10_000, 500, 0, 1_000)) == []  # narrower than a bucket: none
    for _ in range(1000):
        now, window, offset = random.randrange(10**12), random.randrange(1, 10**8), random.randrange(10**8)
        res = resolution_ms(window)
        for b in window_buckets(now, window, offset, res):
            assert now - offset - window <= b * res and (b + 1) * res <= now - offset
        assert bucket_of(now, res) - retention_buckets(window, offset, res) < window_buckets(now, window, offset, res).start


@pytest.mark.parametrize("text, parsed", [("avg", ("avg", None)), ("max", ("max", None)), ("min", ("min", None)),
                                          ("p90", ("p", 90)), ("p1", ("p", 1)), ("p100", ("p", 100))])
def test_statistics_are_named_as_the_issue_says(text, parsed):
    assert parse_stat(text) == parsed


@pytest.mark.parametrize("text", ["mean", "p0", "p101", "p09", "p", "P90", "p9.5", ""])
def test_a_bad_statistic_is_refused(text):
    with pytest.raises(ValueError, match="unknown statistic"):
        parse_stat(text)


def test_statistics_of_samples():
    samples = [5, 1, 4, 2, 3]
    assert statistic("avg", None, samples) == 3
    assert statistic("avg", None, [1, 2]) == 2  # 1.5, half up
    assert statistic("avg", None, [1, 1, 2]) == 1  # 1.33
    assert statistic("max", None, samples) == 5 and statistic("min", None, samples) == 1
    assert statistic("p", 50, samples) == 3 and statistic("p", 100, samples) == 5 and statistic("p", 1, samples) == 1
    assert statistic("p", 90, list(range(1, 11))) == 9  # nearest rank: the 9th of 10
    assert statistic("avg", None, []) is None


def test_percentiles_are_nearest_rank():
    rng = random.Random(5)
    for _ in range(500):
        samples = [rng.randrange(1000) for _ in range(rng.randrange(1, 80))]
        rank = rng.randrange(1, 101)
        value = statistic("p", rank, samples)
        # the smallest sample with at least rank % of the samples at or below it
        at_or_below = sum(1 for s in samples if s <= value)
        assert at_or_below >= math.ceil(rank * len(samples) / 100)
        assert all(sum(1 for s in samples if s <= smaller) < math.ceil(rank * len(samples) / 100)
                   for smaller in samples if smaller < value)


# -- the history file ---------------------------------------------------------------------


@pytest.fixture
def opened():
    """Open history files, closed at the end even when a check failed (PyPy closes files only
    when it collects them, which the next test's descriptor count would see)."""
    stores: list[HistoryStore] = []

    def open_store(path) -> HistoryStore:
        stores.append(HistoryStore(str(path)))
        return stores[-1]

    yield open_store
    for store in stores:
        store.close()


def test_samples_are_kept_across_a_reopen_and_read_per_window(tmp_path, opened):
    path = tmp_path / "history.db"
    store = opened(path)
    line = HistoryStore.line_name("agg", ".aggr", 1000)
    for bucket in range(10):
        assert store.write(line, b"t.aggr", bucket, [(b"alice", pack((bucket, 2 * bucket))), (b"bob", pack((7, 7)))]) == 2
    store.write(line, b"t.aggr", 3, [(b"alice", pack((30, 60)))])  # written again: replaced
    store.close()
    store = opened(path)  # a restart finds everything where it was
    got = store.window(line, b"t.aggr", range(2, 5))
    assert got == {b"alice": [(2, 4), (30, 60), (4, 8)], b"bob": [(7, 7)] * 3}
    assert store.window(line, b"t.aggr", range(5, 5)) == {}
    assert store.window(line, b"other.aggr", range(0, 10)) == {}
    assert [b for b, _ in store.key_buckets(line, b"t.aggr", b"alice")] == list(range(10))
    assert store.lines() == [line] and store.tables(line) == [b"t.aggr"]


def test_retention_deletes_the_oldest_in_bounded_steps(tmp_path, opened):
    store = opened(tmp_path / "history.db")
    line = "agg .aggr .peak 10000"
    for bucket in range(5):
        store.write(line, b"t", bucket, [(f"k{i}".encode(), pack((i,))) for i in range(100)])
    assert store.delete_before(line, b"t", 3, limit=120) == 120  # bucket 0 whole, 20 keys of bucket 1
    assert store.delete_before(line, b"t", 3, limit=1000) == 180
    assert store.delete_before(line, b"t", 3, limit=1000) == 0
    assert sorted(store.window(line, b"t", range(0, 10))[b"k5"]) == [(5,), (5,)]  # buckets 3 and 4 left


def test_values_are_signed_64_bit_and_clamped():
    assert unpack(pack((0, -1, 2**40, 2**64 - 1))) == (0, -1, 2**40, MAX_SAMPLE)


def test_the_writer_thread_writes_trims_in_steps_and_reads(tmp_path, opened):
    path = str(tmp_path / "history.db")
    errors: list[Exception] = []
    writer = HistoryWriter(path, errors.append)
    gate = threading.Event()  # the writer waits until every job below is queued: a fixed order
    writer.read(lambda store: gate.wait(30), lambda _: None)
    for bucket in range(4):
        writer.write("l", b"t", bucket, [(f"k{i}".encode(), pack((bucket,))) for i in range(250)])
    writer.trim("l", b"t", 2, step=100)  # 500 samples to delete, 100 a step
    found: list = []
    writer.read(lambda store: store.window("l", b"t", range(0, 2)), found.append)
    gate.set()
    writer.close(timeout=30)
    assert errors == []
    # The read was queued before the trim's second step: it ran between two steps.
    assert len(found) == 1 and sum(len(samples) for samples in found[0].values()) == 400
    store = opened(path)
    assert store.window("l", b"t", range(0, 2)) == {}  # every step ran before the close
    assert store.window("l", b"t", range(2, 4))[b"k7"] == [(2,), (3,)]


def test_a_writer_that_cannot_open_its_file_reports_it_and_skips_its_jobs(tmp_path):
    errors: list[Exception] = []
    writer = HistoryWriter(str(tmp_path / "no" / "such" / "dir" / "history.db"), errors.append)
    writer.write("l", b"t", 0, [(b"k", pack((1,)))])
    writer.close(timeout=30)
    assert len(errors) == 1 and "unable to open" in str(errors[0])
