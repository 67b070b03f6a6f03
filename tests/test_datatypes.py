"""How values combine (DESIGN.md §3.2), including the rate alignment of peers-protocol.md §6.5."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from stktagg.datatypes import U32_MAX, combine, freq_from_wire, freq_to_wire, read_rate, sum_freq, wire_to_field_values
from stktagg.wire import TableDefinition

P = 10000


def fields_of(mask: int, params=()):
    return TableDefinition(1, b"t", 6, 33, mask, 60000, tuple(params)).codec.fields


def exact_reading(counter, now, period):
    """HAProxy's reading of a stored counter at ``now``, without rounding."""
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
        wire, deadline = sum_freq(counters, now, P)
        assert wire == (7000, 67, 78)
        assert deadline == 993_000 + P
        assert read_rate(wire, P) == 90 == 70 + 16 + 4

    def test_untouched_counter_with_a_raw_clock_age_is_empty(self):
        assert freq_from_wire(4233758769, 0, 0, 5000, P) is None
        assert freq_from_wire(2 * P, 5, 5, 50_000, P) is None

    def test_sent_age_is_always_below_the_period(self):
        stored = freq_from_wire(9000, 4, 2, 100_000, P)
        assert freq_to_wire(stored, 103_000, P) == (2000, 0, 4)  # rotated once
        assert freq_to_wire(stored, 200_000, P) == (0, 0, 0)  # gone after 2P

    @settings(max_examples=400, deadline=None)
    @given(st.lists(st.tuples(st.integers(0, 3 * P), st.integers(0, 1000), st.integers(0, 1000)), min_size=1, max_size=5),
           st.integers(0, P - 1))
    def test_haproxys_reading_of_the_sum_equals_the_sum_of_readings(self, peers, later):
        now = 10_000_000
        counters = [freq_from_wire(a, c, p, now, P) for a, c, p in peers]
        wire, deadline = sum_freq(counters, now, P)
        assert wire[0] < P
        # At any time until the re-push deadline the two readings agree within rounding.
        t = now + (later % max(1, (deadline or now + 1) - now))
        expected = sum(exact_reading(c, t, P) for c in counters if c is not None)
        sent = (wire[0] + (t - now), wire[1], wire[2])
        got = read_rate(sent, P) if sent[0] < 2 * P else 0
        assert abs(got - expected) <= 1.5

    def test_sums_are_clamped_to_32_bits(self):
        now = 100_000
        counters = [freq_from_wire(0, U32_MAX, U32_MAX, now, P)] * 2
        wire, _ = sum_freq(counters, now, P)
        assert wire[1] == U32_MAX and wire[2] == U32_MAX


class TestCombine:
    def test_counters_sum_tags_max_server_id_latest(self):
        fields = fields_of((1 << 9) | (1 << 1) | (1 << 0) | (1 << 2))  # server_id, gpt0, gpc0, http_req_cnt
        newest = (7, 3, 10, 100)
        older = (5, 9, 20, 200)
        values, deadline = combine(fields, [older, newest], [newest, older], 0)
        assert values == (7, 9, 30, 300) and deadline is None

    def test_uint_sum_is_clamped_ull_is_not(self):
        fields = fields_of((1 << 9) | (1 << 13))  # http_req_cnt (UINT), bytes_in_cnt (ULL)
        values, _ = combine(fields, [(U32_MAX, U32_MAX), (5, 5)], [], 0)
        assert values == (U32_MAX, U32_MAX + 5)

    def test_arrays_combine_element_by_element(self):
        mask = (1 << 22) | (1 << 23) | (1 << 24)
        fields = fields_of(mask, [(22, 2), (23, 2), (24, 2, P)])
        now = 50_000
        a = wire_to_field_values(fields, fields, ((1, 9), (3, 4), ((0, 2, 0), (0, 0, 0))), now)
        b = wire_to_field_values(fields, fields, ((5, 2), (1, 1), ((0, 1, 0), (0, 3, 0))), now)
        values, deadline = combine(fields, [a, b], [b, a], now)
        assert values[0] == (5, 9) and values[1] == (4, 5)
        assert values[2] == ((0, 3, 0), (0, 3, 0)) and deadline == now + P

    def test_values_of_another_layout_are_mapped_by_type(self):
        out_fields = fields_of((1 << 9) | (1 << 2))
        in_fields = fields_of((1 << 9) | (1 << 4))  # conn_cnt=7, http_req_cnt=3 (id order); no gpc0
        assert wire_to_field_values(in_fields, out_fields, (7, 3), 0) == (0, 3)
