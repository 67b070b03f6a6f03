"""How values combine (DESIGN.md §3.2), including the rate alignment of peers-protocol.md §6.5."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from stktagg.datatypes import U32_MAX, align_sum, freq_from_wire, freq_to_wire, read_rate

P = 10000


def exact_reading(counter, now, period):
    """HAProxy's reading of a kept counter at ``now``, without rounding."""
    start, curr, prev = counter
    elapsed = now - start
    if elapsed >= 2 * period:
        return 0.0
    if elapsed >= period:
        start, curr, prev = start + period, 0, curr
        elapsed -= period
    return curr + prev * (period - elapsed) / period


class TestFrequencyCounters:
    def test_worked_example_of_the_reference(self):
        now = 1_000_000
        counters = [freq_from_wire(*w, now, P) for w in [(2000, 30, 50), (7000, 10, 20), (14000, 8, 4)]]
        wire, deadline = align_sum(counters, now, P)
        assert wire == (7000, 67, 78)
        assert deadline == 993_000 + P
        assert read_rate(wire, P) == 90 == 70 + 16 + 4

    def test_untouched_counter_with_a_raw_clock_age_is_empty(self):
        assert freq_from_wire(4233758769, 0, 0, 5000, P) is None
        assert freq_from_wire(2 * P, 5, 5, 50_000, P) is None

    def test_sent_age_is_always_below_the_period(self):
        kept = freq_from_wire(9000, 4, 2, 100_000, P)
        assert freq_to_wire(*kept, 103_000, P) == (2000, 0, 4)  # rotated once
        assert freq_to_wire(*kept, 200_000, P) == (0, 0, 0)  # gone after 2P

    @settings(max_examples=400, deadline=None)
    @given(st.lists(st.tuples(st.integers(0, 3 * P), st.integers(0, 1000), st.integers(0, 1000)), min_size=1, max_size=5),
           st.integers(0, P - 1))
    def test_haproxys_reading_of_the_sum_equals_the_sum_of_readings(self, peers, later):
        now = 10_000_000
        counters = [c for c in (freq_from_wire(a, c, p, now, P) for a, c, p in peers) if c is not None]
        wire, deadline = align_sum(counters, now, P)
        assert wire[0] < P
        # At any time until the re-push deadline the two readings agree within rounding.
        t = now + (later % max(1, (deadline or now + 1) - now))
        expected = sum(exact_reading(c, t, P) for c in counters)
        sent = (wire[0] + (t - now), wire[1], wire[2])
        got = read_rate(sent, P) if sent[0] < 2 * P else 0
        assert abs(got - expected) <= 1.5

    def test_sums_are_clamped_to_32_bits(self):
        now = 100_000
        counters = [freq_from_wire(0, U32_MAX, U32_MAX, now, P)] * 2
        wire, _ = align_sum(counters, now, P)
        assert wire[1] == U32_MAX and wire[2] == U32_MAX
