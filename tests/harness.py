"""Real processes for end-to-end tests: HAProxy nodes and the aggregator, on loopback.

Every test bed gets its own loopback address (127.x.y.z, chosen at random),
so the fixed port numbers below never clash with another test or another
program. Waiting is always polling with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import functools
import http.client
import os
import platform
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENTRY = ROOT / "hapee_stktagg.py"
HAPROXY26 = shutil.which("haproxy") or "/usr/sbin/haproxy"
DEFAULT_TIMEOUT = 15.0
#: The deadline for the sums to converge on every node (normally well under a second; a
#: restarted or cut peer takes HAProxy's 5 s reconnect cycle): generous for a slow machine.
CONVERGE_TIMEOUT = 30.0
#: libfaketime (Debian package faketime), to run a process with a shifted wall clock; None if absent.
LIBFAKETIME = next(iter(sorted(Path("/usr/lib").glob("*/faketime/libfaketimeMT.so.1"))), None)


#: The HAProxy versions of the matrix (issue 16): every end-to-end test runs on each.
HAPROXY_VERSIONS = ("2.6", "2.8", "3.0", "3.2", "3.4")
#: The test bed root of each newer version (contrib/testbeds.sh), whose wrapper runs its HAProxy.
TESTBED_ROOTS = {"3.0": "trixie", "3.2": "sid", "3.4": "experimental"}
TESTBEDS = Path(os.environ.get("STKTAGG_TESTBEDS", "/var/cache/stktagg-testbeds"))
#: Set by contrib/test.sh once it has installed the whole matrix: a missing version then
#: fails its tests instead of skipping them, so CI cannot go green on part of the matrix.
REQUIRE_MATRIX = os.environ.get("STKTAGG_REQUIRE_MATRIX") == "1"
#: The command that starts the daemon (default: this interpreter), e.g.
#: ``bash contrib/testbeds.sh run trixie pypy3`` to run it under PyPy (issue 16).
DAEMON_PYTHON = shlex.split(os.environ.get("STKTAGG_DAEMON_PYTHON", "")) or [sys.executable]
#: The implementation the daemon must report (``show info``: CPython, PyPy): that of this
#: interpreter, or ``STKTAGG_DAEMON_RUNTIME`` with another ``STKTAGG_DAEMON_PYTHON``.
DAEMON_RUNTIME = os.environ.get("STKTAGG_DAEMON_RUNTIME") or platform.python_implementation()


@functools.cache
def haproxy_version(path: str) -> str | None:
    """``major.minor`` of the HAProxy at ``path`` (from ``haproxy -v``), None if it does not run."""
    # Without LD_PRELOAD: under contrib/test.sh's faketime step, the host's libfaketime in a
    # test bed's HAProxy (the root's own libc, through its loader) hangs it.
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "FAKETIME")}
    try:
        out = subprocess.run([path, "-v"], capture_output=True, text=True, timeout=30, env=env).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r"version (\d+\.\d+)", out)
    return found.group(1) if found else None


def haproxy_path(version: str) -> str | None:
    """Where HAProxy ``version`` of the matrix is installed here, or None.

    2.6 is Debian 12's own (``haproxy`` on the PATH); 2.8 comes from PyPI
    (``STKTAGG_HAPROXY28``); 3.0, 3.2 and 3.4 from the test beds, ``STKTAGG_HAPROXY30``
    (32, 34) or else the wrapper that ``bash contrib/testbeds.sh haproxy ROOT`` writes. A
    binary counts for the version it reports, so inside a test bed (trixie's HAProxy is
    3.0) the PATH's HAProxy is not taken for 2.6.
    """
    candidates = [os.environ.get("STKTAGG_HAPROXY" + version.replace(".", ""), ""), HAPROXY26]
    if version in TESTBED_ROOTS:
        candidates.append(str(TESTBEDS / "bin" / f"haproxy-{TESTBED_ROOTS[version]}"))
    return next((path for path in candidates
                 if path and Path(path).exists() and haproxy_version(path) == version), None)


def haproxy_binaries() -> list[tuple[str, str]]:
    """(version label, path) of each HAProxy of the matrix installed here."""
    return [(version, path) for version in HAPROXY_VERSIONS if (path := haproxy_path(version))]


def version_params(minimum: str = "2.6") -> list[tuple[str, str | None]]:
    """``(version, path or None)`` of every version of the matrix from ``minimum`` on: the
    parameters of the end-to-end fixtures, the same on every machine (test ids name the
    version); ``need_haproxy`` turns a missing one into a skip or, in CI, a failure."""
    floor = tuple(map(int, minimum.split(".")))
    return [(v, haproxy_path(v)) for v in HAPROXY_VERSIONS if tuple(map(int, v.split("."))) >= floor]


def need_haproxy(param: tuple[str, str | None]) -> str:
    """The path of a ``version_params`` entry; skips (or, with the whole matrix required, fails)
    when that version is not installed."""
    import pytest  # the harness is also imported by scripts that do not run under pytest

    version, path = param
    if path is None:
        why = f"HAProxy {version} is not installed here (bash contrib/test.sh installs the matrix)"
        if REQUIRE_MATRIX:
            pytest.fail(why)
        pytest.skip(why)
    return path


def fresh_loopback() -> str:
    """A loopback address no other test bed uses (127.0.0.0/8 is all ours on Linux)."""
    return f"127.{random.randint(16, 250)}.{random.randint(1, 250)}.{random.randint(2, 250)}"


def wait_for(predicate, timeout: float = DEFAULT_TIMEOUT, interval: float = 0.05, what: str = "condition"):
    """Poll ``predicate`` until it returns a true value; return that value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)  # polling interval, not synchronisation: the deadline decides
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})")


def unix_query(path: str | Path, command: str, timeout: float = 5.0) -> str:
    """Send one command to a stats socket (HAProxy's or ours), return the answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(command.encode() + b"\n")
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks).decode()


def can_query(path: Path) -> bool:
    try:
        unix_query(path, "help", timeout=1.0)
        return True
    except OSError:
        return False


def spawn(argv: list[str], log_path: Path, socket_path: Path, what: str, **popen) -> subprocess.Popen:
    """Start a process logging to ``log_path``; wait until its stats socket answers."""
    with open(log_path, "ab") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=log, **popen)

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"{what} exited {process.returncode}: {log_path.read_text()[-3000:]}")
        return can_query(socket_path)

    wait_for(ready, what=f"{what} to start")
    return process


def stop_process(process: subprocess.Popen | None, sig: int = signal.SIGTERM) -> int | None:
    """Signal a process and reap it (killed if it does not stop within 10 s); its exit code."""
    if process is None or process.poll() is not None:
        return None
    process.send_signal(sig)
    try:
        return process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


_ENTRY_RE = re.compile(r"^0x[0-9a-f]+: key=(\S+) (.*)$")


def parse_haproxy_table(text: str) -> dict[str, dict[str, str]]:
    """HAProxy's ``show table`` output -> {key: {data name: value}}."""
    entries = {}
    for line in text.splitlines():
        match = _ENTRY_RE.match(line.strip())
        if match:
            fields = dict(item.split("=", 1) for item in match.group(2).split() if "=" in item)
            entries[match.group(1)] = fields
    return entries


@dataclass
class TableSpec:
    """One stick table pair on every node: ``<name>.local`` (tracked) and ``<name>.aggr``."""

    name: str = "mytable"
    type: str = "string len 32"
    store: str = "http_req_cnt,http_req_rate(10s)"
    header: str = "x-key"  #: the request header whose value is the key
    fetch: str = "req.hdr(x-key)"  #: the sample fetch that reads it
    expire: str = "1h"
    size: str = "100k"
    local_suffix: str = ".local"
    aggr_suffixes: tuple[str, ...] = (".aggr",)


@dataclass
class HaproxyNode:
    name: str
    binary: str
    address: str
    http_port: int
    peer_port: int
    workdir: Path
    tables: list[TableSpec]
    aggregators: list[tuple[str, str, int]]  #: (peer name, address, port)
    extra_frontend: list[str] = field(default_factory=list)
    #: options for the aggregator's line (e.g. "ssl crt c.pem ca-file ca.pem verify required"):
    #: when set, the peers section uses the bind + server form that TLS needs in HAProxy 2.6.
    peer_tls: str | None = None
    #: ``shards N`` in the peers section (HAProxy 2.8+), and each aggregator peer's ``shard i``
    shards: int | None = None
    aggregator_shards: dict[str, int] = field(default_factory=dict)
    process: subprocess.Popen | None = None

    @property
    def socket_path(self) -> Path:
        return self.workdir / f"hap-{self.name}.sock"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"hap-{self.name}.log"

    def config_text(self) -> str:
        lines = [
            "global",
            f"    localpeer {self.name}",
            f"    stats socket {self.socket_path} mode 600 level admin",
            "    nbthread 1",
            "defaults",
            "    mode http",
            "    timeout connect 5s",
            "    timeout client 30s",
            "    timeout server 30s",
            "frontend fe",
            f"    bind {self.address}:{self.http_port}",
        ]
        # HAProxy 2.6 has 3 sticky counters: every table is tracked through
        # sc0, the header a request carries choosing the table.
        for table in self.tables:
            lines.append(
                f"    http-request track-sc0 {table.fetch} table {table.name}{table.local_suffix}"
                f" if {{ req.hdr({table.header}) -m found }}"
            )
        lines += [f"    {line}" for line in self.extra_frontend]
        lines.append('    http-request return status 200 content-type text/plain string "ok"')
        for table in self.tables:
            for suffix in (table.local_suffix, *table.aggr_suffixes):
                lines.append(f"backend {table.name}{suffix}")
                lines.append(
                    f"    stick-table type {table.type} size {table.size}"
                    + (f" expire {table.expire}" if table.expire else "")  # "": never
                    + f" store {table.store} peers mypeers"
                )
        if self.peer_tls is None:
            lines += ["peers mypeers", f"    peer {self.name} {self.address}:{self.peer_port}"]
            if self.shards is not None:
                lines.append(f"    shards {self.shards}")
            lines += [f"    peer {name} {addr}:{port}"
                      + (f" shard {self.aggregator_shards[name]}" if name in self.aggregator_shards else "")
                      for name, addr, port in self.aggregators]
        else:
            lines += ["peers mypeers", f"    bind {self.address}:{self.peer_port}", f"    server {self.name}"]
            # Dial from our own address, as a node in production does.
            lines += [f"    server {name} {addr}:{port} {self.peer_tls} source {self.address}"
                      for name, addr, port in self.aggregators]
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        cfg = self.workdir / f"hap-{self.name}.cfg"
        cfg.write_text(self.config_text())
        if self.socket_path.exists():
            self.socket_path.unlink()
        self.process = spawn([self.binary, "-db", "-f", str(cfg)], self.log_path, self.socket_path, f"HAProxy {self.name}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        stop_process(self.process, sig)
        self.process = None

    def request(self, headers: dict[str, str], body: bytes | None = None) -> int:
        conn = http.client.HTTPConnection(self.address, self.http_port, timeout=5)
        try:
            conn.request("POST" if body else "GET", "/", body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            return response.status
        finally:
            conn.close()

    def cli(self, command: str) -> str:
        return unix_query(self.socket_path, command)

    def table(self, name: str) -> dict[str, dict[str, str]]:
        return parse_haproxy_table(self.cli(f"show table {name}"))


@dataclass
class Aggregator:
    workdir: Path
    config: str
    name: str = "aggr"
    process: subprocess.Popen | None = None
    env: dict | None = None  #: the process environment (default: ours)

    @property
    def socket_path(self) -> Path:
        return self.workdir / f"{self.name}.sock"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @property
    def config_path(self) -> Path:
        return self.workdir / f"{self.name}.cfg"

    def start(self, *extra: str) -> None:
        self.config_path.write_text(self.config)
        argv = [*DAEMON_PYTHON, str(ENTRY), "-d", "-f", str(self.config_path), *extra]
        self.process = spawn(argv, self.log_path, self.socket_path, "the aggregator", cwd=ROOT, env=self.env)

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        code = stop_process(self.process, sig)
        self.process = None
        return code

    def cli(self, command: str) -> str:
        return unix_query(self.socket_path, command)


class Cluster:
    """An aggregator and HAProxy nodes (set by the subclass: ``aggr``, ``nodes`` by name), as a
    context manager: started aggregator first, stopped at the end (those still running)."""

    aggr: Aggregator
    nodes: dict[str, HaproxyNode]

    def __enter__(self):
        self.aggr.start()
        for node in self.nodes.values():
            node.start()
        return self

    def __exit__(self, *exc) -> None:
        for node in self.nodes.values():
            if node.process is not None:
                node.stop()
        if self.aggr.process is not None:
            self.aggr.stop()


def aggregator_config(workdir: Path, address: str, port: int, nodes: list[HaproxyNode],
                      rule: str = "from .local to .aggr", name: str = "AGGR", section: str = "agg",
                      extra_peers: list[str] = (), socket_name: str = "aggr") -> str:
    lines = ["global", f"    stats socket {workdir / (socket_name + '.sock')}", "", f"aggregations {section}"]
    lines.append(f"    peer {name} {address}:{port} local")
    lines += [f"    peer {n.name} {n.address}:{n.peer_port}" for n in nodes]
    lines += [f"    {line}" for line in extra_peers]
    lines.append(f"    {rule}")
    return "\n".join(lines) + "\n"


def parse_aggr_table(text: str) -> dict[str, dict[str, str]]:
    """The aggregator's ``show table`` -> {key: {name: value}} for the aggregate lines."""
    entries = {}
    for line in text.splitlines():
        if line.startswith("key="):
            words = line.split()
            entries[words[0][4:]] = dict(w.split("=", 1) for w in words[1:] if "=" in w)
    return entries
