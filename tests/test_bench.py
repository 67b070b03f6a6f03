"""A short run of the load generator: it must produce sane numbers (not a speed test)."""

from __future__ import annotations

import importlib.util
import json
import struct
import subprocess
import sys

import pytest

from harness import ROOT, fresh_loopback, haproxy_binaries

BENCH = ROOT / "contrib" / "bench.py"


def _bench_module():
    spec = importlib.util.spec_from_file_location("contrib_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


class _TrickleSocket:
    """Takes a few bytes per send(), in a fixed cycle of sizes, to cut messages anywhere."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.sizes = [1000, 37, 4096, 15, 1, 333]
        self.calls = 0

    def send(self, data) -> int:
        n = min(len(data), self.sizes[self.calls % len(self.sizes)])
        self.calls += 1
        self.data += bytes(data[:n])
        return n


def test_explicit_stream_ids_are_the_update_ordinals_across_passes_and_probes():
    bench = _bench_module()
    keys = 50
    sock = _TrickleSocket()
    s = bench._Session("bench0", sock, observer=False, prober=True, explicit=True)
    s.passes = tuple(bytearray(bench.explicit_template(keys, value)) for value in (1, 2))
    for turn in range(400):  # about 3 passes, with a probe now and then
        if turn % 97 == 0:
            bench._queue_update(s, bench.PROBE_PREFIX + bytes((0, turn % 256)), 7)
        bench._write(s, bench.EXPLICIT_LEN, 5)
    data, pos, ids, bulk = sock.data, 0, [], []
    while pos < len(data):
        assert data[pos:pos + 2] == b"\x0a\x80"
        length = data[pos + 2]
        uid, key = struct.unpack_from("!I4s", data, pos + 3)
        ids.append(uid)
        if not key.startswith(bench.PROBE_PREFIX):
            bulk.append((key, data[pos + 11]))  # after header, id and key
        pos += 3 + length
    assert pos == len(data) and s.sent == len(ids)
    assert ids == list(range(1, len(ids) + 1)) and s.next_id == len(ids) + 1  # the ack's id counts the updates
    assert len(bulk) > 2 * keys
    for i, (key, value) in enumerate(bulk):  # every key in turn, values alternating between passes
        assert key == bench.bulk_key(i % keys) and value == 1 + (i // keys) % 2


@pytest.mark.parametrize("target,updates", [("stktagg", "explicit"), ("stktagg", "implied"),
                                            ("naive", "explicit"), ("haproxy", "explicit")])
def test_bench_smoke_run_reports_sane_figures(target, updates):
    if target == "haproxy" and not haproxy_binaries():
        pytest.skip("HAProxy is not installed")
    out = subprocess.run(
        [sys.executable, str(BENCH), "--spawn", target, "--target", f"{fresh_loopback()}:11100",
         "--peers", "2", "--keys", "2000", "--duration", "2", "--rate", "4000", "--probe-rate", "20",
         "--updates", updates, "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.splitlines()[0])
    assert report["errors"] == [] and report["updates"] == updates
    if updates == "explicit":  # acks carry the last explicit id, the number of updates sent so far
        assert 0 < report["acked_per_s"] <= report["offered_per_s"]
    # Offered at 4000/s for about 2 s. The rate limit must hold (never above it); the
    # lower bounds are loose, for a loaded machine where the generator (and the start-up
    # counted in the elapsed time) is slow: it sent, and the target took, a fair share.
    assert 1000 <= report["offered_per_s"] <= 6000
    assert report["acked_per_s"] >= 0.5 * report["offered_per_s"]
    assert report["target_rss_bytes"] > 0 and report["target_cpu_cores"] is not None
    assert report["target_cpu_us_per_update"] > 0
    if target in ("stktagg", "naive"):
        assert report["pushed_back_per_s_per_session"] > 0  # aggregates come back
        assert report["probes"] >= 10 and 0 < report["latency_ms"]["p50"] < 1000
    else:
        assert report["pushed_back_per_s_per_session"] == 0  # HAProxy does not relay learned entries


def test_bench_compare_runs_each_target_and_prints_one_row_each():
    out = subprocess.run(
        [sys.executable, str(BENCH), "--compare", "stktagg,naive", "--target", f"{fresh_loopback()}:11100",
         "--peers", "2", "--keys", "500", "--duration", "1", "--rate", "2000"],
        cwd=ROOT, capture_output=True, text=True, timeout=90,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    reports = [json.loads(line) for line in lines[:2]]
    assert [r["target"] for r in reports] == ["stktagg", "naive"]
    for r in reports:
        assert r["errors"] == [] and r["acked_per_s"] > 0 and r["pushed_back_per_s_per_session"] > 0
        assert r["keys"] == 500 and r["peers"] == 2 and r["updates"] == "explicit"
    table = lines[2:]
    assert table[1].split()[:2] == ["target", "acked/s"]
    assert [row.split()[0] for row in table[3:]] == ["stktagg", "naive"]
