"""The command line: -h -v -c -f, errors and exit codes, clean stop on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys

from harness import ENTRY, ROOT, Aggregator, fresh_loopback

VALID = """\
global
    stats socket {sock}
aggregations agg
    peer AGGR {addr}:11100 local
    peer A {addr}:11001
    from .local to .aggr
"""


def run(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ENTRY), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_help_lists_every_option():
    out = run("-h")
    assert out.returncode == 0
    for option in ("-f <cfgfile>", "-d", "-D", "-u <uid>", "-g <gid>", "-c", "-v", "-h"):
        assert option in out.stdout


def test_version():
    out = run("-v")
    assert out.returncode == 0 and out.stdout.startswith("hapee-stktagg version ")


def test_missing_config_option_is_a_usage_error():
    out = run("-d")
    assert out.returncode == 2 and "-f <cfgfile> is mandatory" in out.stderr


def test_unknown_option_is_a_usage_error():
    out = run("-x")
    assert out.returncode == 2 and "Usage:" in out.stderr


def test_check_accepts_a_valid_file(tmp_path):
    cfg = tmp_path / "ok.cfg"
    cfg.write_text(VALID.format(sock=tmp_path / "s.sock", addr="127.0.0.1"))
    out = run("-c", "-f", str(cfg))
    assert out.returncode == 0 and "valid" in out.stdout


def test_check_reports_file_line_column_and_fails(tmp_path):
    cfg = tmp_path / "bad.cfg"
    cfg.write_text(VALID.format(sock=tmp_path / "s.sock", addr="127.0.0.1").replace("peer A ", "peer A lcoal "))
    out = run("-c", "-f", str(cfg))
    assert out.returncode == 1
    assert out.stderr.startswith(f"{cfg}:5:12: ")


def test_check_accepts_a_sharded_section(tmp_path):
    """Issue 15: several local lines, one per shard served here."""
    cfg = tmp_path / "shards.cfg"
    cfg.write_text("aggregations agg\n    shards 2\n    peer AGGR.1 127.0.0.1:10001 local shard 1\n"
                   "    peer AGGR.2 127.0.0.1:10002 local shard 2\n    peer A 127.0.0.1:10000\n"
                   "    from .local to .aggr\n")
    out = run("-c", "-f", str(cfg))
    assert out.returncode == 0 and "valid" in out.stdout, out.stderr


def test_config_error_stops_startup_without_check_flag(tmp_path):
    cfg = tmp_path / "bad.cfg"
    cfg.write_text("aggregations agg\n    frm any to .aggr\n")
    out = run("-d", "-f", str(cfg))
    assert out.returncode == 1 and out.stderr.startswith(f"{cfg}:2:5: ")


def test_sigterm_stops_cleanly(tmp_path):
    addr = fresh_loopback()
    aggr = Aggregator(tmp_path, VALID.format(sock=tmp_path / "aggr.sock", addr=addr))
    aggr.start()
    assert "aggregations agg" in aggr.cli("show aggrs")
    assert aggr.stop(signal.SIGTERM) == 0
    assert "stopped" in aggr.log_path.read_text()


def test_port_already_in_use_is_reported(tmp_path):
    addr = fresh_loopback()
    first = Aggregator(tmp_path, VALID.format(sock=tmp_path / "aggr.sock", addr=addr))
    first.start()
    try:
        cfg = tmp_path / "second.cfg"
        cfg.write_text(VALID.format(sock=tmp_path / "second.sock", addr=addr))
        out = run("-d", "-f", str(cfg))
        assert out.returncode == 3 and "cannot bind" in out.stderr
    finally:
        first.stop()


def test_stats_socket_on_tcp_answers_and_unix_socket_is_private(tmp_path):
    import socket
    import stat

    addr = fresh_loopback()
    config = VALID.format(sock=tmp_path / "aggr.sock", addr=addr).replace(
        "global\n", f"global\n    stats socket {addr}:11111\n"
    )
    aggr = Aggregator(tmp_path, config)
    aggr.start()
    try:
        assert stat.S_IMODE((tmp_path / "aggr.sock").stat().st_mode) == 0o600
        with socket.create_connection((addr, 11111), timeout=5) as sock:
            sock.sendall(b"show aggrs\n")
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
        assert answer.decode().startswith("aggregations agg\n")
    finally:
        aggr.stop()


def test_connection_without_hello_on_a_shared_port_is_closed(tmp_path):
    import socket

    addr = fresh_loopback()
    two_sections = VALID.format(sock=tmp_path / "aggr.sock", addr=addr) + (
        f"aggregations other\n    peer OTHER {addr}:11100 local\n    peer B {addr}:11002\n    from .local to .aggr\n"
    )
    aggr = Aggregator(tmp_path, two_sections)
    aggr.start()
    try:
        with socket.create_connection((addr, 11100), timeout=10) as sock:
            sock.sendall(b"HAProxyS 2.1\n")  # never finishes its hello
            assert sock.recv(100) == b""  # closed by the aggregator, no status
        assert "no hello within" in aggr.log_path.read_text()
    finally:
        aggr.stop()
