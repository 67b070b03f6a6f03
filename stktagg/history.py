"""History of the aggregates (issue 18, in progress): buckets and statistics, sans-IO.

Imports nothing of ``stktagg``. A ``history`` line (``history .aggr to .yday stat
avg window 1h offset 1d``) keeps, for every key of every output table with the
suffix ``.aggr``, one sample of each data type per bucket, and serves the
statistic of the samples of ``[now - offset - window, now - offset]``.

- **Resolution** (``resolution_ms``): a bucket is the window divided by
  ``SAMPLES_PER_WINDOW`` (12), rounded up to the next of ``RESOLUTIONS`` (1 s to
  1 h): ``window 1h`` keeps a sample every 5 minutes, ``window 10m`` one a
  minute, ``window 2s`` one a second. So a window spans at most 12 buckets
  whatever its length (fewer when the rounding widens them), and storage per
  key is bounded by ``(offset + window) / resolution`` samples per line, the
  retention. Why 12 and not more: the statistics of every key are computed
  again at each bucket's end from the window's samples, so the work is keys x
  samples per window per bucket (see "Issue 18" in docs/ARCHITECTURE.md).
- **Buckets** are numbered from the epoch (``bucket_of``): bucket ``b`` covers
  ``[b * res, (b + 1) * res)`` ms of wall time, so a restart finds its samples
  where it left them. The window of a statistic is the buckets wholly inside
  ``[now - offset - window, now - offset]`` (``window_buckets``): a bucket still
  filling is never used.
- **Statistics** (``statistic``) over the samples found, a key's missing
  buckets (it had no aggregate then) being absent, not zeros: ``avg`` (the
  mean, rounded half up to an integer, as counters are integers), ``max``,
  ``min``, and ``pNN`` (the nearest-rank percentile: the smallest sample that
  at least NN % of the samples are not above). No sample: no entry.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "RESOLUTIONS", "SAMPLES_PER_WINDOW", "STATS", "bucket_of", "parse_stat", "resolution_ms", "retention_buckets",
    "statistic", "statistic_function", "window_buckets",
]

#: The bucket widths a line may get (ms): 1 s, 5 s, 10 s, 30 s, 1 m, 5 m, 10 m, 30 m, 1 h.
RESOLUTIONS = (1_000, 5_000, 10_000, 30_000, 60_000, 300_000, 600_000, 1_800_000, 3_600_000)
#: A window holds at most about this many samples.
SAMPLES_PER_WINDOW = 12
#: The statistics besides ``pNN``.
STATS = ("avg", "max", "min")


def resolution_ms(window_ms: int) -> int:
    """The bucket width for a window: ``window / 12``, rounded up to one of ``RESOLUTIONS``
    (and at most the largest: a window over 12 h keeps a sample an hour)."""
    if window_ms <= 0:
        raise ValueError("a window must be longer than 0 ms")
    wanted = -(-window_ms // SAMPLES_PER_WINDOW)
    return next((r for r in RESOLUTIONS if r >= wanted), RESOLUTIONS[-1])


def bucket_of(wall_ms: int, resolution: int) -> int:
    """The bucket that wall time ``wall_ms`` (ms since the epoch) falls in."""
    return wall_ms // resolution


def window_buckets(now_ms: int, window_ms: int, offset_ms: int, resolution: int) -> range:
    """The buckets wholly inside ``[now - offset - window, now - offset]``: those a statistic uses."""
    end = now_ms - offset_ms
    first = -(-(end - window_ms) // resolution)  # the first bucket starting at or after the window's start
    last = end // resolution  # buckets before this one end at or before the window's end
    return range(first, max(first, last))


def retention_buckets(window_ms: int, offset_ms: int, resolution: int) -> int:
    """How many buckets back a line needs (``offset + window``, and the one filling): older ones go."""
    return -(-(window_ms + offset_ms) // resolution) + 1


def parse_stat(text: str) -> tuple[str, int | None]:
    """``avg``/``max``/``min`` -> (name, None); ``p90`` -> ("p", 90); ValueError otherwise."""
    if text in STATS:
        return text, None
    if len(text) >= 2 and text[0] == "p" and text[1:].isdigit() and not (len(text) > 2 and text[1] == "0"):
        rank = int(text[1:])
        if 1 <= rank <= 100:
            return "p", rank
    raise ValueError(f"unknown statistic '{text}' (expected avg, max, min or p1..p100)")


def statistic_function(stat: str, rank: int | None):
    """``statistic`` for one statistic, as a function of the samples (none empty): what the
    recorder calls per key and value, without choosing the statistic each time."""
    if stat == "max":
        return max
    if stat == "min":
        return min
    if stat == "avg":
        return lambda samples: (2 * sum(samples) + len(samples)) // (2 * len(samples))
    if stat == "p" and rank is not None:
        return lambda samples: sorted(samples)[max(1, -(-rank * len(samples) // 100)) - 1]
    raise ValueError(f"unknown statistic {stat!r}")


def statistic(stat: str, rank: int | None, samples: Sequence[int]) -> int | None:
    """The statistic of integer ``samples`` (None when there is none)."""
    if not samples:
        return None
    if stat == "avg":
        total, count = sum(samples), len(samples)
        return (2 * total + count) // (2 * count)  # the mean, half up, in integers
    if stat == "max":
        return max(samples)
    if stat == "min":
        return min(samples)
    if stat == "p" and rank is not None:
        ordered = sorted(samples)
        return ordered[max(1, -(-rank * len(ordered) // 100)) - 1]
    raise ValueError(f"unknown statistic {stat!r}")
