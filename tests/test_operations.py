"""The process as an operator runs it (issue 5): daemon mode, pid file, privileges,
CPU pinning, source address, signals, stats socket ownership, syslog."""

from __future__ import annotations

import errno
import os
import pwd
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest

from harness import CONVERGE_TIMEOUT, ENTRY, ROOT, Aggregator, can_query, fresh_loopback, unix_query, wait_for
from stktagg import daemon

BASE = """\
global
    stats socket {sock}{sock_opts}
{extra_global}aggregations agg
    peer AGGR {addr}:11100 local
    peer A {addr}:11001
    from .local to .aggr
"""
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CI runs as root)")


def config(tmp_path, addr, sock_opts="", extra_global="") -> str:
    return BASE.format(sock=tmp_path / "aggr.sock", sock_opts=sock_opts, extra_global=extra_global, addr=addr)


def status_field(pid: int, name: str) -> str:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(name + ":"):
                return line.split(":", 1)[1].strip()
    raise KeyError(name)


def log_time(line: str) -> float:
    """The time of a foreground log line ("2026-12-01 16:30:00,123 hapee-stktagg[...]"), in seconds."""
    stamp, millis = line[:23].split(",")
    return time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")) + int(millis) / 1000


def test_daemon_mode_detaches_writes_its_pid_file_and_cleans_up_on_sigterm(tmp_path):
    addr = fresh_loopback()
    cfg = tmp_path / "aggr.cfg"
    cfg.write_text(config(tmp_path, addr))
    pidfile = tmp_path / "aggr.pid"
    launcher = subprocess.run([sys.executable, str(ENTRY), "-D", "-p", str(pidfile), "-f", str(cfg)],
                              cwd=ROOT, capture_output=True, timeout=20)
    assert launcher.returncode == 0  # the launching process returns once detached
    pid = int(wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), what="the pid file"))
    try:
        wait_for(lambda: can_query(tmp_path / "aggr.sock"), what="the daemon's CLI")
        # A session of its own, and (double fork) not its leader: it can never get a terminal back.
        assert os.getsid(pid) not in (os.getsid(0), pid)
        assert status_field(pid, "PPid") != str(os.getpid())
        assert os.readlink(f"/proc/{pid}/fd/0") == "/dev/null"
        assert os.readlink(f"/proc/{pid}/fd/2") == "/dev/null"
        assert "aggregations agg" in unix_query(tmp_path / "aggr.sock", "show aggrs")
    finally:
        os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), what="the daemon to exit")
    assert not pidfile.exists() and not (tmp_path / "aggr.sock").exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_signals_end_the_process_within_a_second_and_remove_socket_files(tmp_path, signum):
    aggr = Aggregator(tmp_path, config(tmp_path, fresh_loopback()))
    aggr.start()
    started = time.monotonic()
    aggr.process.send_signal(signum)
    assert aggr.process.wait(10) == 0
    # From the signal to the exit (interpreter teardown included): generous for a loaded
    # machine, yet short of what a stop waiting for a timer would take (handshake 5 s).
    assert time.monotonic() - started < 3.0
    assert not aggr.socket_path.exists()
    log = aggr.log_path.read_text()
    stopping = next(line for line in log.splitlines() if f"received {signal.Signals(signum).name}, stopping" in line)
    stopped = next(line for line in log.splitlines() if line.endswith(" stopped"))
    # The shutdown itself, by the daemon's own clock: within the second the README promises.
    assert log_time(stopped) - log_time(stopping) < 1.0


def test_sighup_reloads_an_unchanged_file_and_keeps_running(tmp_path):
    aggr = Aggregator(tmp_path, config(tmp_path, fresh_loopback()))
    aggr.start()
    try:
        aggr.process.send_signal(signal.SIGHUP)
        wait_for(lambda: ": 0 change(s)" in aggr.log_path.read_text(), what="the reload's log line")
        assert "received SIGHUP: reloading " in aggr.log_path.read_text()
        assert "aggregations agg" in aggr.cli("show aggrs")
    finally:
        aggr.stop()


@needs_root
def test_privileges_are_dropped_after_binding(tmp_path):
    aggr = Aggregator(tmp_path, config(tmp_path, fresh_loopback()))
    aggr.start("-u", "nobody", "-g", "nogroup")
    try:
        nobody = "65534"
        assert status_field(aggr.process.pid, "Uid").split() == [nobody] * 4
        assert status_field(aggr.process.pid, "Gid").split() == [nobody] * 4
        assert status_field(aggr.process.pid, "Groups") == ""  # no supplementary group left
        assert "aggregations agg" in aggr.cli("show aggrs")  # the socket was bound as root
    finally:
        aggr.stop()


@needs_root
def test_a_user_without_a_group_takes_its_primary_group_not_roots(tmp_path):
    """``-u nobody`` alone: nobody's own group (nogroup), never gid 0 kept from root (issue 17)."""
    aggr = Aggregator(tmp_path, config(tmp_path, fresh_loopback()))
    aggr.start("-u", "nobody")
    try:
        primary = str(pwd.getpwnam("nobody").pw_gid)
        assert primary != "0"
        assert status_field(aggr.process.pid, "Uid").split() == ["65534"] * 4
        assert status_field(aggr.process.pid, "Gid").split() == [primary] * 4
        assert status_field(aggr.process.pid, "Groups") == ""
    finally:
        aggr.stop()


@pytest.mark.parametrize("flags", [("-u", "root"), ("-u", "nobody", "-g", "root"), ("-u", "0")])
def test_dropping_to_root_is_refused(tmp_path, flags):
    cfg = tmp_path / "aggr.cfg"
    cfg.write_text(config(tmp_path, fresh_loopback()))
    out = subprocess.run([sys.executable, str(ENTRY), "-d", *flags, "-f", str(cfg)],
                         cwd=ROOT, capture_output=True, text=True, timeout=20)
    assert out.returncode == 1 and "refusing to run as" in out.stderr and " 0 after dropping privileges" in out.stderr


def test_unknown_user_is_refused_before_anything_starts(tmp_path):
    cfg = tmp_path / "aggr.cfg"
    cfg.write_text(config(tmp_path, fresh_loopback()))
    out = subprocess.run([sys.executable, str(ENTRY), "-d", "-u", "no-such-user-xyz", "-f", str(cfg)],
                         cwd=ROOT, capture_output=True, text=True, timeout=20)
    assert out.returncode == 1 and "unknown user or group 'no-such-user-xyz'" in out.stderr


def test_cpu_map_pins_the_process(tmp_path):
    cpu = max(daemon.cpu_affinity())  # not os.sched_getaffinity: PyPy has none
    aggr = Aggregator(tmp_path, config(tmp_path, fresh_loopback(), extra_global=f"    cpu-map {cpu}\n"))
    aggr.start()
    try:
        assert status_field(aggr.process.pid, "Cpus_allowed_list") == str(cpu)
    finally:
        aggr.stop()


def test_cpu_affinity_without_os_sched_functions(monkeypatch):
    """PyPy's os has no sched_getaffinity/sched_setaffinity: libc's through ctypes, or /proc."""
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.delattr(os, "sched_setaffinity", raising=False)
    cpus = daemon._proc_affinity()
    assert cpus and daemon._libc_affinity() == cpus and daemon.cpu_affinity() == cpus
    daemon.set_cpu_affinity(cpus)  # the CPUs it has already: changes nothing
    assert daemon.cpu_affinity() == cpus
    with pytest.raises(OSError) as too_big:
        daemon.set_cpu_affinity({4000})
    assert too_big.value.errno == errno.EINVAL
    with pytest.raises(OSError) as empty:
        daemon.set_cpu_affinity(set())
    assert empty.value.errno == errno.EINVAL and empty.value.strerror


def test_cpu_map_with_an_unknown_cpu_is_a_config_error(tmp_path):
    cfg = tmp_path / "aggr.cfg"
    cfg.write_text(config(tmp_path, fresh_loopback(), extra_global="    cpu-map 0,4000\n"))
    out = subprocess.run([sys.executable, str(ENTRY), "-c", "-f", str(cfg)], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 1 and out.stderr.startswith(f"{cfg}:3:5: ")


@needs_root
def test_stats_socket_mode_user_and_group(tmp_path):
    aggr = Aggregator(tmp_path, config(tmp_path, fresh_loopback(), sock_opts=" mode 660 user nobody group nogroup"))
    aggr.start()
    try:
        info = aggr.socket_path.stat()
        assert stat.S_IMODE(info.st_mode) == 0o660
        assert (info.st_uid, info.st_gid) == (65534, 65534)
    finally:
        aggr.stop()


def test_source_address_is_used_for_outgoing_connections(tmp_path):
    address, source = fresh_loopback(), fresh_loopback()
    top = Aggregator(tmp_path, "\n".join([
        "global", f"    stats socket {tmp_path / 'top.sock'}", "aggregations top",
        f"    peer L1 {address}:11100 down", f"    peer TOP {address}:11200 local", "    from .aggr to .l2",
    ]) + "\n", name="top")
    level1 = Aggregator(tmp_path, "\n".join([
        "global", f"    stats socket {tmp_path / 'l1.sock'}", f"    source {source}", "aggregations region",
        f"    peer TOP {address}:11200 up", f"    peer L1 {address}:11100 local", "    from any to .aggr",
    ]) + "\n", name="l1")
    top.start()
    level1.start()
    try:
        wait_for(lambda: f"session with peer L1 ({source}:" in top.log_path.read_text(),
                 timeout=CONVERGE_TIMEOUT, what="the top level to see the connection from the source address")
    finally:
        level1.stop()
        top.stop()


def test_log_lines_go_to_a_syslog_target(tmp_path):
    addr = fresh_loopback()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as collector:
        collector.bind((addr, 0))
        collector.settimeout(5)
        port = collector.getsockname()[1]
        aggr = Aggregator(tmp_path, config(tmp_path, addr, extra_global=f"    log {addr}:{port} local0 info\n"))
        aggr.start()
        try:
            message = collector.recv(4096).decode()
        finally:
            aggr.stop()
    assert message.startswith("<134>hapee-stktagg[")  # local0 (16) * 8 + info (6)
    assert "started" in message
