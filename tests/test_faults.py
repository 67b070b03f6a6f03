"""Faults (issue 7): a link cut and restored, wall-clock jumps. After each, exact sums.

(kill -9 of a HAProxy node, of the aggregator and of a redundant group member
are in test_e2e_single.py and test_e2e_multilevel.py.)
"""

from __future__ import annotations

import datetime
import os
import signal
import time

import pytest

from faultproxy import FaultProxy
from harness import (
    CONVERGE_TIMEOUT,
    LIBFAKETIME,
    Aggregator,
    HaproxyNode,
    TableSpec,
    fresh_loopback,
    haproxy_binaries,
    wait_for,
)

pytestmark = pytest.mark.e2e
TABLE = TableSpec("mytable", "string len 32", "http_req_cnt,http_req_rate(10s)", "x-key", "req.hdr(x-key)")
DAY = 86400
SIGHUP_LINE = "received SIGHUP: reloading "


def aggregator(tmp_path, address, nodes, env=None) -> Aggregator:
    config = "\n".join([
        "global", f"    stats socket {tmp_path / 'aggr.sock'}", "aggregations agg",
        f"    peer AGGR {address}:11100 local", *[f"    peer {n.name} {address}:{n.peer_port}" for n in nodes],
        "    from .local to .aggr",
    ]) + "\n"
    return Aggregator(tmp_path, config, env=env)


def hit(node: HaproxyNode, key: str, count: int) -> None:
    for _ in range(count):
        assert node.request({"x-key": key}) == 200


def sums_everywhere(nodes, key: str, total: int, timeout: float = CONVERGE_TIMEOUT) -> None:
    wait_for(lambda: all(n.table("mytable.aggr").get(key, {}).get("http_req_cnt") == str(total) for n in nodes),
             timeout=timeout, what=f"{key} == {total} on every node")


def test_link_cut_and_restored(tmp_path):
    address = fresh_loopback()
    binary = haproxy_binaries()[0][1]
    # Node A reaches the aggregator through a proxy on port 11150; B directly.
    a = HaproxyNode("A", binary, address, 18081, 11001, tmp_path, [TABLE], [("AGGR", address, 11150)])
    b = HaproxyNode("B", binary, address, 18082, 11002, tmp_path, [TABLE], [("AGGR", address, 11100)])
    aggr = aggregator(tmp_path, address, [a, b])
    aggr.start()
    proxy = FaultProxy((address, 11150), (address, 11100))
    try:
        a.start()
        b.start()
        hit(a, "k", 2)
        hit(b, "k", 3)
        sums_everywhere([a, b], "k", 5)
        proxy.cut()
        wait_for(lambda: "peer 'A' (0) state: 0x0" in aggr.cli("show aggrs"), what="the cut to be seen")
        hit(a, "k", 4)  # counted by A while it cannot reach the aggregator
        hit(b, "k", 1)
        # During the cut B's side keeps being summed, with A's last known count
        # (2): a peer's entry counts until it expires, not until its session ends.
        sums_everywhere([b], "k", 6)
        proxy.restore()
        # HAProxy redials a lost peer on its 5 s cycle; then the sums are exact again.
        sums_everywhere([a, b], "k", 10)
    finally:
        proxy.close()
        a.stop()
        b.stop()
        aggr.stop()


def fake_dates(real_start: float, real_end: float, days: int) -> set[str]:
    """The dates (as the daemon's log prints them, local time) of a wall clock ``days``
    ahead of the real one between two real instants: one date, or two across a midnight."""
    return {datetime.datetime.fromtimestamp(t + days * DAY).strftime("%Y-%m-%d") for t in (real_start, real_end)}


@pytest.mark.skipif(LIBFAKETIME is None, reason="libfaketime (Debian package faketime) is not installed")
def test_wall_clock_jumps_change_nothing(tmp_path):
    address = fresh_loopback()
    binary = haproxy_binaries()[0][1]
    clock = tmp_path / "faketime"
    clock.write_text("+0\n")
    # Only the wall clock jumps: the daemon's timers run on the monotonic clock, left alone
    # (FAKETIME_DONT_FAKE_MONOTONIC; DONT_FAKE_MONOTONIC is the older libfaketime's name).
    env = dict(os.environ, LD_PRELOAD=str(LIBFAKETIME), FAKETIME_TIMESTAMP_FILE=str(clock),
               FAKETIME_NO_CACHE="1", FAKETIME_DONT_FAKE_MONOTONIC="1", DONT_FAKE_MONOTONIC="1")
    for inherited in ("FAKETIME", "FAKETIME_SHARED"):  # the file decides, even under a faketime wrapper
        env.pop(inherited, None)
    nodes = [HaproxyNode(n, binary, address, 18081 + i, 11001 + i, tmp_path, [TABLE], [("AGGR", address, 11100)])
             for i, n in enumerate(("A", "B"))]
    aggr = aggregator(tmp_path, address, nodes, env=env)
    aggr.start()
    try:
        for node in nodes:
            node.start()
        hit(nodes[0], "k", 1)
        hit(nodes[1], "k", 2)
        sums_everywhere(nodes, "k", 3)
        total = 3
        for number, (jump, days) in enumerate((("+1d", 1), ("-3d", -3), ("+400d", 400)), 1):
            clock.write_text(jump + "\n")
            real_start = time.time()
            aggr.process.send_signal(signal.SIGHUP)  # logs a line stamped with the (fake) wall time

            def sighup_line():
                lines = [line for line in aggr.log_path.read_text().splitlines() if SIGHUP_LINE in line]
                return lines[number - 1] if len(lines) >= number else None

            line = wait_for(sighup_line, what=f"the SIGHUP log line after the {jump} jump")
            real_end = time.time()
            # The jump reached the daemon's wall clock: its log line carries the shifted date,
            # computed from today's real date (never a fixed year).
            expected = fake_dates(real_start, real_end, days)
            assert line[:10] in expected, f"{jump}: logged {line[:23]!r}, expected a date in {sorted(expected)}"
            hit(nodes[0], "k", 1)
            hit(nodes[1], "k", 1)
            total += 2
            sums_everywhere(nodes, "k", total)
            assert "state: 0x7" in aggr.cli("show aggrs")
    finally:
        for node in nodes:
            node.stop()
        aggr.stop()
