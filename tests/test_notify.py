"""Readiness for systemd (issue 17): the sd_notify datagrams, and log lines for the journal."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time

import pytest

from harness import ENTRY, ROOT
from stktagg import logs
from stktagg.notify import Notifier


@pytest.fixture
def manager(tmp_path):
    """A service manager's notify socket: a unix datagram socket we read."""
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    yield path, sock
    sock.close()


def fields(datagram: bytes) -> dict[str, str]:
    assert datagram.endswith(b"\n")
    return dict(line.split("=", 1) for line in datagram.decode().splitlines())


def test_ready_reloading_stopping_are_one_datagram_each(manager):
    path, sock = manager
    notifier = Notifier({"NOTIFY_SOCKET": path})
    assert notifier.enabled
    notifier.ready("serving 2 sections")
    assert fields(sock.recv(4096)) == {"READY": "1", "STATUS": "serving 2 sections"}
    notifier.reloading("reloading /etc/x.cfg")
    got = fields(sock.recv(4096))
    assert got["RELOADING"] == "1" and got["STATUS"] == "reloading /etc/x.cfg"
    now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert 0 <= now_usec - int(got["MONOTONIC_USEC"]) < 5_000_000  # the monotonic clock, in microseconds
    notifier.stopping("stopping")
    assert fields(sock.recv(4096)) == {"STOPPING": "1", "STATUS": "stopping"}


def test_an_abstract_socket_name_starts_with_at():
    name = f"stktagg-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    with sock:
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).send(READY="1")
        assert sock.recv(100) == b"READY=1\n"


def test_without_a_manager_nothing_is_sent_and_nothing_fails(tmp_path):
    assert not Notifier({}).enabled and Notifier({}).send(READY="1") is False
    gone = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    assert gone.send(READY="1") is False  # systemd gone while we stop: not our error


def test_stderr_is_the_journal_only_when_journal_stream_names_it():
    st = os.fstat(sys.stderr.fileno())
    assert logs.stderr_is_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    assert not logs.stderr_is_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"})  # redirected
    assert not logs.stderr_is_journal({})
    assert not logs.stderr_is_journal({"JOURNAL_STREAM": "garbage"})


@pytest.mark.parametrize("level, priority", [(logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6),
                                             (logging.DEBUG, 7), (logging.CRITICAL, 2)])
def test_journal_lines_are_the_priority_and_the_message_only(level, priority):
    record = logging.LogRecord("stktagg.x", level, __file__, 1, "session with %s closed", ("A",), None)
    line = logs._journal(sys.stderr).format(record)
    assert line == f"<{priority}>session with A closed"


def test_each_line_of_a_traceback_keeps_the_priority():
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("stktagg.x", logging.ERROR, __file__, 1, "job failed", (), sys.exc_info())
    lines = logs._journal(sys.stderr).format(record).split("\n")
    assert lines[0] == "<3>job failed" and len(lines) > 2 and all(line.startswith("<3>") for line in lines)


def test_a_config_error_of_c_is_an_error_line_in_the_journal(tmp_path):
    """``ExecReload=... -c`` fails on a broken file: under systemd its message must be found by
    ``journalctl -p warning``, so it carries priority 3 when stderr is the journal."""
    cfg = tmp_path / "bad.cfg"
    cfg.write_text("aggregations a\n    peer X\n")
    err = tmp_path / "stderr"
    with open(err, "w") as stream:
        st = os.fstat(stream.fileno())
        env = dict(os.environ, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
        done = subprocess.run([sys.executable, str(ENTRY), "-c", "-f", str(cfg)], cwd=ROOT, stderr=stream, env=env,
                              timeout=30)
    assert done.returncode == 1
    assert err.read_text().startswith(f"<3>{cfg}:2:") and err.read_text().count("\n") == 1
    plain = subprocess.run([sys.executable, str(ENTRY), "-c", "-f", str(cfg)], cwd=ROOT, capture_output=True,
                           text=True, timeout=30)
    assert plain.stderr.startswith(f"{cfg}:2:")  # not the journal: no prefix
