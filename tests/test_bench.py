"""A short run of the load generator: it must produce sane numbers (not a speed test)."""

from __future__ import annotations

import importlib.util
import json
import os
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


# -- the pure parts of --shards, --warmup, --python, --compare spellings (fast, no load) ----------


def test_shard_split_is_fixed_per_key_and_covers_every_key_once():
    bench = _bench_module()
    keys, shards = 1001, 3
    parts = [list(bench.shard_keys(keys, j, shards)) for j in range(shards)]
    assert sorted(i for part in parts for i in part) == list(range(keys))  # each key in exactly one shard
    assert all(bench.shard_of(i, shards) == j for j, part in enumerate(parts) for i in part)
    assert [len(p) for p in parts] == [334, 334, 333]
    assert list(bench.shard_keys(10, 0, 1)) == list(range(10))  # unsharded: every key


def test_shard_templates_hold_only_that_shards_keys():
    bench = _bench_module()
    data = bench.explicit_template(0, 2, bench.shard_keys(10, 1, 2))
    keys = [data[i + 7:i + 11] for i in range(0, len(data), bench.EXPLICIT_LEN)]
    assert keys == [bench.bulk_key(i) for i in (1, 3, 5, 7, 9)]
    assert bench.explicit_template(4, 1) == bench.explicit_template(0, 1, range(4))  # the old spelling
    assert bench.implied_template(range(5), 1) == bench.pass_buffer(5, 0, 1)


def test_shard_peers_are_consecutive_ports_with_numbered_names():
    bench = _bench_module()
    assert bench.shard_peers("127.0.0.9:11100", "AGGR", 1) == [("127.0.0.9", 11100, "AGGR")]
    assert bench.shard_peers("127.0.0.9:11100", "AGGR", 3) == [
        ("127.0.0.9", 11100, "AGGR.1"), ("127.0.0.9", 11101, "AGGR.2"), ("127.0.0.9", 11102, "AGGR.3")]


def test_generated_sharded_config_parses_to_n_local_shards(tmp_path):
    from stktagg.config import parse

    bench = _bench_module()
    args = bench.parse_args(["--spawn", "stktagg", "--shards", "3", "--peers", "2", "--target", "127.0.0.9:11100"])
    assert args.label == "stktagg:3"
    section = parse(bench.stktagg_config(args, str(tmp_path)), "aggr.cfg").aggregations[0]
    assert section.shards == 3
    assert [(p.name, p.address.port, p.shard) for p in section.local_peers] == [
        ("AGGR.1", 11100, 1), ("AGGR.2", 11101, 2), ("AGGR.3", 11102, 3)]
    assert [p.name for p in section.remote_peers] == ["bench0", "bench1"]
    unsharded = bench.parse_args(["--spawn", "stktagg", "--peers", "2", "--target", "127.0.0.9:11100"])
    section = parse(bench.stktagg_config(unsharded, str(tmp_path)), "aggr.cfg").aggregations[0]
    assert section.shards is None and [p.name for p in section.local_peers] == ["AGGR"]


def test_target_spellings():
    bench = _bench_module()
    assert bench.parse_target("stktagg") == bench.TargetSpec("stktagg")
    assert bench.parse_target("stktagg:2") == bench.TargetSpec("stktagg", 2)
    assert bench.parse_target("naive@pypy") == bench.TargetSpec("naive", 1, "pypy")
    assert str(bench.parse_target("stktagg:4@pypy3")) == "stktagg:4@pypy3"
    assert str(bench.parse_target("stktagg:1")) == "stktagg"
    for bad in ("naive:2", "haproxy:2", "haproxy@pypy", "stktagg:0", "stktagg:65", "nginx", "stktagg:x", ""):
        with pytest.raises(ValueError):
            bench.parse_target(bad)


def test_compare_targets_carry_their_shards_and_interpreter():
    bench = _bench_module()
    args = bench.parse_args(["--compare", "stktagg, stktagg:2 ,naive", "--python", "python3 -X dev"])
    assert [str(t) for t in args.compare] == ["stktagg", "stktagg:2", "naive"]
    runs = [bench.target_args(args, t) for t in args.compare]
    assert [(r.spawn, r.shards, r.label) for r in runs] == [
        ("stktagg", 1, "stktagg"), ("stktagg", 2, "stktagg:2"), ("naive", 1, "naive")]
    assert bench.python_prefix(runs[0]) == ["python3", "-X", "dev"]
    assert args.shards == 1 and args.spawn is None  # the options themselves untouched
    env = {"STKTAGG_BENCH_PYPY": "bash contrib/testbeds.sh run trixie pypy3"}
    run = bench.target_args(args, bench.parse_target("stktagg:2@pypy"), env)
    assert bench.python_prefix(run) == ["bash", "contrib/testbeds.sh", "run", "trixie", "pypy3"]
    with pytest.raises(ValueError, match="STKTAGG_BENCH_NO_SUCH_PY"):
        bench.interpreter_for("no-such.py", {})


def test_default_python_is_this_interpreter_and_bad_options_are_refused(capsys):
    bench = _bench_module()
    assert bench.python_prefix(bench.parse_args([])) == [sys.executable]
    args = bench.parse_args([])
    assert (args.warmup, args.shards, args.label) == (0.0, 1, None)
    for argv in (["--spawn", "naive", "--shards", "2"], ["--compare", "stktagg", "--shards", "2"],
                 ["--compare", "naive:2"], ["--warmup", "-1"], ["--shards", "3", "--keys", "2"],
                 ["--rebuild", "--shards", "2"]):
        with pytest.raises(SystemExit):
            bench.parse_args(argv)
    capsys.readouterr()


def test_process_tree_sums_the_cpu_of_children_too():
    bench = _bench_module()
    busy = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n" \
           "print('done', flush=True)\nimport sys; sys.stdin.read()"
    child = subprocess.Popen([sys.executable, "-c", busy], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "done\n"  # it has burnt its CPU and still lives
        tree = bench.process_tree(os.getpid())
        assert tree[0] == os.getpid() and child.pid in tree
        by_pid = bench.tree_cpu_by_pid(tree)
        assert by_pid[child.pid] >= 0.25
        assert bench.tree_cpu(tree) >= by_pid[child.pid] + bench._proc_cpu(os.getpid()) - 0.02
        # Our RSS can grow between the two reads (~100 kB seen under PyPy): 1 MB of slack, far
        # less than the child's RSS (an interpreter: several MB), whose sum this checks.
        assert bench.tree_rss(tree) >= bench._proc_rss(os.getpid()) + bench._proc_rss(child.pid) - 1024 * 1024
    finally:
        child.stdin.close()
        child.wait(5)
    assert child.pid not in bench.process_tree(os.getpid())


def report_row(**changes) -> dict:
    """A measured target's report as ``measure`` makes it (the figures the renderers read)."""
    row = {"target": "stktagg", "acked_per_s": 1000, "pushed_back_per_s_per_session": 10,
           "latency_ms": {"p50": 1.0, "p95": 2.0, "p99": 3.0}, "target_cpu_us_per_update": 5.0,
           "target_cpu_cores": 0.5, "target_processes": 1, "target_rss_bytes": 30e6, "bench_cpu_per_process": 0.4,
           "bench_processes": 1, "bottleneck": "none (the offered rate was taken)", "errors": [],
           "peers": 4, "keys": 100, "updates": "explicit", "offered_rate": 1000, "warmup_s": 0, "duration_s": 4.0}
    return {**row, **changes}


def test_comparison_table_has_procs_and_says_warmup():
    bench = _bench_module()
    row = report_row(target="stktagg:2", target_processes=3, bottleneck="target (a process with one core busy)",
                     offered_rate=None, warmup_s=2.0)
    lines = bench.render_comparison([row]).splitlines()
    assert lines[0].endswith("measured 4 s after a 2 s warmup")
    assert lines[1].split()[:8] == ["target", "acked/s", "pushed/s/session", "latency", "p50/p99", "ms",
                                    "CPU", "us/update"]
    assert "procs" in lines[1].split()
    assert lines[3].split()[0] == "stktagg:2" and lines[3].split()[8] == "3"
    assert "warmup" not in bench.render_comparison([dict(row, warmup_s=0)]).splitlines()[0]


def test_observer_notes_when_each_probe_value_first_comes_back():
    bench = _bench_module()
    s = bench._Session("bench1", None, observer=True, prober=False)
    probe = bench.PROBE_PREFIX + b"\x00\x07"
    s.inbuf += (bench.explicit(41, bench.bulk_key(3), 9) + bench.explicit(42, probe, 7)
                + bench.incremental(bench.PROBE_PREFIX + b"\x00\x08", 8) + b"\x00\x00")
    seen, controls = {}, []
    bench._frame_walk(s, seen, controls)
    assert sorted(seen) == [7, 8] and s.pushed == 3 and controls == [0] and not s.inbuf
    first = dict(seen)
    s.inbuf += bench.explicit(43, probe, 7)
    bench._frame_walk(s, seen, controls)
    assert seen == first  # the first arrival counts
    bench._frame_walk(s, None, controls)  # not an observer: pushes counted only


# -- --dashboard (issue 19): the generated listener and the client that times the dashboard -------


def test_dashboard_option_adds_the_http_listener_to_stktagg_configs_only(tmp_path, capsys):
    from stktagg.config import parse

    bench = _bench_module()
    args = bench.parse_args(["--spawn", "stktagg", "--dashboard", "--target", "127.0.0.9:11100"])
    assert args.dashboard and args.dashboard_interval == 5.0
    text = bench.stktagg_config(args, str(tmp_path))
    host, port = args.dashboard_address.rsplit(":", 1)
    assert host == "127.0.0.9" and f"    http {args.dashboard_address}\n" in text
    assert bench.stktagg_config(args, str(tmp_path)) == text  # one port per run
    config = parse(text, "aggr.cfg")
    assert (config.global_.http.host, config.global_.http.port) == ("127.0.0.9", int(port))
    assert "http" not in bench.stktagg_config(bench.parse_args(["--spawn", "stktagg"]), str(tmp_path))
    compare = bench.parse_args(["--compare", "stktagg,naive,stktagg:2", "--dashboard", "--dashboard-interval", "2"])
    runs = [bench.target_args(compare, t) for t in compare.compare]
    assert all(r.dashboard and r.dashboard_interval == 2.0 for r in runs)
    ports = {bench.dashboard_address(r) for r in (runs[0], runs[2])}
    assert len(ports) == 2 and not getattr(compare, "dashboard_address", None)  # each target its own
    for argv in (["--dashboard"], ["--spawn", "naive", "--dashboard"], ["--compare", "naive", "--dashboard"],
                 ["--rebuild", "--dashboard"], ["--spawn", "stktagg", "--dashboard", "--dashboard-interval", "0"]):
        with pytest.raises(SystemExit):
            bench.parse_args(argv)
    capsys.readouterr()


def _dashboard_stub(answers: dict):
    """A tiny HTTP server: path (without the query) -> (status, body); it notes every request."""
    import http.server
    import threading

    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.path)
            status, body = answers.get(self.path.split("?")[0], (404, b"no such page"))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, seen


def test_dashboard_probe_times_each_call_and_counts_failures():
    bench = _bench_module()
    table = json.dumps({"rows": [{"key": "20.0.0.1"}], "scanned": 1234}).encode()
    server, seen = _dashboard_stub({"/": (200, b"<html>"), "/dashboard.js": (200, b"//"),
                                    "/dashboard.css": (200, b""), "/api/overview": (200, b"{}"),
                                    "/api/table": (200, table), "/api/key": (500, b"oops")})
    try:
        probe = bench.DashboardProbe(f"127.0.0.1:{server.server_address[1]}", 0.05, "20.0.0.0", timeout=5)
        probe.one_round()
        assert seen[:5] == ["/", "/dashboard.js", "/dashboard.css", "/api/overview",
                            "/api/table?section=bench&table=mytable.aggr&limit=100"]
        assert seen[5] == "/api/table?section=bench&table=mytable.aggr&sort=http_req_cnt&order=asc&filter=1&limit=100"
        assert seen[6] == "/api/key?section=bench&table=mytable.aggr&key=20.0.0.0"
        figures = probe.figures()
        assert figures["dashboard_calls"] == 7 and figures["dashboard_failures"] == 1
        assert figures["dashboard_failure_kinds"] == {"/api/key: HTTP 500": 1}
        assert figures["dashboard_scanned"] == 1234 and figures["dashboard_api_key_ms_max"] is None
        assert 0 < figures["dashboard_api_table_ms_p50"] <= figures["dashboard_page_ms_max"]
        assert figures["dashboard_api_sorted_ms_max"] > 0
        probe.start()  # as a thread: rounds until stopped, none started after
        bench.time.sleep(0.3)
        probe.stop()
        probe.join(10)
        assert not probe.is_alive() and probe.rounds >= 3 and probe.calls == len(seen)
    finally:
        server.shutdown()
        server.server_close()
    probe = bench.DashboardProbe(f"127.0.0.1:{bench.free_port('127.0.0.1')}", 1, "20.0.0.0", timeout=5)
    probe.one_round()  # nobody listens: every call fails, no page load counted
    figures = probe.figures()
    assert figures["dashboard_failures"] == 7 and figures["dashboard_page_ms_p50"] is None
    assert figures["dashboard_failure_kinds"]["/: ConnectionRefusedError"] == 1
    line = bench.render_dashboard(dict(figures, dashboard_scanned=1_000_000))
    assert "1,000,000 keys scanned" in line and "7 failed" in line


def test_comparison_and_single_reports_say_the_dashboard_figures():
    bench = _bench_module()
    row = report_row(probes=10, probes_sent=10, target_shards=1, target_cpu_busiest_process_cores=0.5,
                     rss_per_key_bytes=300, offered_per_s=1000, loop_longest_turn_ms_1m=12.5)
    dashboard = {"dashboard_page_ms_p50": 20.5, "dashboard_page_ms_max": 80.0, "dashboard_api_table_ms_p50": 10.0,
                 "dashboard_api_table_ms_max": 70.0, "dashboard_api_sorted_ms_p50": 11.0,
                 "dashboard_api_sorted_ms_max": 71.0, "dashboard_api_key_ms_p50": 1.0, "dashboard_api_key_ms_max": 2.0,
                 "dashboard_calls": 14, "dashboard_failures": 0, "dashboard_scanned": 100, "dashboard_rounds": 2}
    lines = bench.render_comparison([dict(row, **dashboard), dict(row, target="naive")]).splitlines()
    assert lines[-1] == ("stktagg: dashboard p50/max page 20.5/80 ms, api/table 10/70 ms (100 keys scanned),"
                         " sorted 11/71 ms, api/key 1/2 ms; 14 calls in 2 rounds, 0 failed")
    assert not any(line.startswith("naive: dashboard") for line in lines)
    text = bench.render(dict(row, **dashboard))
    assert "dashboard" in text and "page 20.5/80 ms" in text and "12.5" in text
    assert "dashboard" not in bench.render(row)
