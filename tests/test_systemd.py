"""The package under a real systemd (issue 17): a bare Debian 13 root (contrib/testbeds.sh's
``systemd`` root) with the package installed into a throw-away clone, systemd booted as PID 1
of its own namespaces, the HAProxy nodes on this machine (the network namespace is shared, so
they reach the daemon on loopback).

One boot serves the whole module; the tests run in file order and each is one check of
issue 17 (a-h). The security check comes before the last one, which purges the package.
Every wait has a deadline (harness.wait_for); the fixture always powers the system off and
deletes the clone.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness import CONVERGE_TIMEOUT, ROOT, HaproxyNode, TableSpec, fresh_loopback, haproxy_binaries, wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="booting systemd in namespaces needs root (CI runs as root)"),
]

TESTBEDS = ROOT / "contrib" / "testbeds.sh"
UNIT = "hapee-extras-stktagg"
PROGRAM = "/opt/hapee-extras/sbin/hapee-stktagg"
CONFIG = "/etc/hapee-extras/hapee-stktagg.cfg"
SOCKET = "/run/hapee-stktagg/hapee-stktagg.sock"
#: What a program sees in the booted root: its own tools, not this machine's (pyenv...).
ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
AGGR_PORT = 11100
NODES = {"A": (18081, 11001), "B": (18082, 11002), "C": (18083, 11003)}  #: name: (http, peers)
KEY = "alice"
#: A package built before (its path), to test instead of building one from this tree.
PREBUILT = os.environ.get("STKTAGG_DEB", "")
#: systemd's unit deadlines are 90 s; ours are shorter: the whole module runs in well under a minute.
UNIT_TIMEOUT = 30.0


def run(*argv, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout, **kw)


def config_text(address: str, names: list[str], broken: bool = False) -> tuple[str, int | None]:
    """The daemon's configuration with these nodes; ``broken`` adds ``peer X`` (no address).
    Returns the text and the number of the broken line."""
    lines = ["# written by tests/test_systemd.py", "global", f"    stats socket {SOCKET} mode 660", "",
             "aggregations AGGR", f"    peer AGGR {address}:{AGGR_PORT} local"]
    lines += [f"    peer {name} {address}:{NODES[name][1]}" for name in names]
    broken_line = None
    if broken:
        lines.append("    peer X")
        broken_line = len(lines)
    lines.append("    from .local to .aggr")
    return "\n".join(lines) + "\n", broken_line


@dataclass
class Bed:
    root: Path  #: the clone, booted
    address: str
    nodes: dict[str, HaproxyNode]
    pid: int | None = None  #: systemd's PID on this machine
    serving: list[str] = field(default_factory=lambda: ["A", "B"])  #: nodes of the daemon's configuration
    broken: dict | None = None  #: what the broken reload gave (once done)

    def sh(self, *argv: str, input: str | None = None, timeout: float = 60,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """A command inside the booted root (testbeds.md: nsenter into systemd's namespaces)."""
        extra = [f"{k}={v}" for k, v in (env or {}).items()]
        return run("nsenter", "-t", self.pid, "-m", "-p", "-u", "-i", "-C", "-r", "-w", "--",
                   "/usr/bin/env", f"PATH={ROOT_PATH}", *extra, *argv, input=input, timeout=timeout)

    def systemctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return self.sh("systemctl", "--no-pager", *args, timeout=timeout)

    def state(self) -> str:
        return self.systemctl("is-active", UNIT).stdout.strip()

    def main_pid(self) -> int:
        return int(self.systemctl("show", "-p", "MainPID", "--value", UNIT).stdout.strip() or 0)

    def journal(self, *args: str) -> str:
        return self.sh("journalctl", "--no-pager", "-u", UNIT, "-o", "cat", *args).stdout

    def cli(self, command: str) -> str:
        """The daemon's stats socket, with socat inside the root."""
        return self.sh("socat", "stdio", f"UNIX-CONNECT:{SOCKET}", input=command + "\n", timeout=10).stdout

    def write_config(self, names: list[str], broken: bool = False) -> int | None:
        text, line = config_text(self.address, names, broken)
        (self.root / CONFIG.lstrip("/")).write_text(text)  # the conffile's mode (0644) stays
        return line

    def priorities(self, text: str) -> str:
        """The journal entries of the unit that contain ``text``: "priority identifier: message"."""
        entries = [json.loads(line) for line in self.journal_json().splitlines() if line.strip()]
        return "".join(f"{e.get('PRIORITY')} {e.get('SYSLOG_IDENTIFIER')}[{e.get('_PID')}]: {e.get('MESSAGE')}\n"
                       for e in entries if text in str(e.get("MESSAGE", "")))

    def journal_json(self) -> str:
        return self.sh("journalctl", "--no-pager", "-u", UNIT, "-o", "json").stdout

    def diagnose(self) -> str:
        status = self.systemctl("status", UNIT)
        return f"\n--- systemctl status:\n{status.stdout}{status.stderr}\n--- journal:\n{self.journal('-n', '40')}"

    def wait_active(self, what: str) -> None:
        try:
            wait_for(lambda: self.state() == "active", timeout=UNIT_TIMEOUT, interval=0.2, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}{self.diagnose()}") from None

    def wait_summed(self, names: list[str], what: str) -> int:
        """Until every node in ``names`` shows, in its own mytable.aggr, the sum of their
        mytable.local counts for KEY; that sum."""
        expected = sum(int(self.nodes[n].table("mytable.local").get(KEY, {}).get("http_req_cnt", 0)) for n in names)

        def summed():
            got = {n: self.nodes[n].table("mytable.aggr").get(KEY, {}).get("http_req_cnt") for n in names}
            return all(v == str(expected) for v in got.values()) or got

        try:
            wait_for(lambda: summed() is True, timeout=CONVERGE_TIMEOUT, interval=0.1, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}: expected {expected} on {names}, got {summed()}{self.diagnose()}") from None
        return expected

    def traffic(self, name: str, requests: int) -> None:
        for _ in range(requests):
            assert self.nodes[name].request({"x-key": KEY}) == 200


def timed(what: str, started: float) -> float:
    took = time.monotonic() - started
    print(f"\n[test_systemd] {what}: {took:.1f} s", end="")
    return took


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    binaries = haproxy_binaries()
    if not binaries:
        pytest.skip("no HAProxy installed here")
    work = tmp_path_factory.mktemp("systemd")
    begun = started = time.monotonic()
    if PREBUILT:
        deb = Path(PREBUILT)
        print(f"\n[test_systemd] package: {deb} (STKTAGG_DEB)", end="")
    else:
        built = run("bash", "contrib/build-deb.sh", work, cwd=ROOT, timeout=600)
        assert built.returncode == 0, built.stdout + built.stderr
        deb = Path(built.stdout.strip().splitlines()[-1])
        timed("package built", started)
    started = time.monotonic()
    root_built = run("bash", TESTBEDS, "build", "systemd", timeout=1800)
    assert root_built.returncode == 0, root_built.stdout + root_built.stderr
    timed("systemd root built or reused", started)
    started = time.monotonic()
    clone = work / "root"
    cloned = run("bash", TESTBEDS, "clone", "systemd", clone)
    assert cloned.returncode == 0, cloned.stdout + cloned.stderr
    timed("clone made", started)
    address = fresh_loopback()
    table = TableSpec()  # mytable.local / mytable.aggr, string keys from the x-key header
    nodes = {name: HaproxyNode(name, binaries[0][1], address, http, peer, work, [table],
                               [("AGGR", address, AGGR_PORT)]) for name, (http, peer) in NODES.items()}
    the_bed = Bed(clone, address, nodes)
    try:
        started = time.monotonic()
        # Installed as the reference's instructions say, `apt-get install hapee-extras-stktagg20`
        # (our package Provides that name), from a local repository holding the .deb: offline,
        # the root's recipe holds the package's Depends. /proc as dpkg and adduser expect.
        repo = clone / "var/cache/stktagg-repo"
        repo.mkdir(parents=True)
        (repo / deb.name).write_bytes(deb.read_bytes())
        scanned = run("dpkg-scanpackages", "--multiversion", ".", cwd=repo)
        assert scanned.returncode == 0 and "Provides: hapee-extras-stktagg20" in scanned.stdout, scanned.stderr
        (repo / "Packages").write_text(scanned.stdout)
        (clone / "etc/apt/sources.list.d/stktagg-local.list").write_text(
            "deb [trusted=yes] file:/var/cache/stktagg-repo ./\n")
        only_local = "-o Dir::Etc::sourcelist=sources.list.d/stktagg-local.list -o Dir::Etc::sourceparts=-"
        installed = run("unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c",
                        'mount -t proc proc "$1/proc" && exec chroot "$1" /usr/bin/env PATH="$2" '
                        'DEBIAN_FRONTEND=noninteractive /bin/sh -c "apt-get $3 update -q && '
                        'apt-get $3 install -y -q --no-install-recommends hapee-extras-stktagg20"',
                        "install", clone, ROOT_PATH, only_local)
        assert installed.returncode == 0, installed.stdout + installed.stderr
        assert "hapee-extras-stktagg" in installed.stdout
        timed("package installed in the clone", started)
        the_bed.write_config(the_bed.serving)
        for name in the_bed.serving:
            nodes[name].start()
        started = time.monotonic()
        booted = run("bash", TESTBEDS, "boot", clone, timeout=120)
        assert booted.returncode == 0, booted.stdout + booted.stderr
        the_bed.pid = int(booted.stdout.strip().splitlines()[-1])
        timed(f"systemd booted (PID {the_bed.pid})", started)
        if booted.stderr.strip():
            print(f"\n[test_systemd] boot: {booted.stderr.strip()}", end="")
        print(f"\n[test_systemd] setup in all: {time.monotonic() - begun:.1f} s")
        yield the_bed
    finally:
        started = time.monotonic()
        discarded = run("bash", TESTBEDS, "discard", clone, timeout=120)
        for node in nodes.values():
            node.stop()
        timed("powered off and discarded", started)
        print(f"\n[test_systemd] discard: {discarded.stderr.strip()}" if discarded.returncode else "")
    # Only once the tests are done (not over an error of the setup):
    assert discarded.returncode == 0, discarded.stdout + discarded.stderr


def test_a_unit_is_active_after_boot(bed):
    bed.wait_active("the unit to be active after boot")


def test_b_show_info_answers_on_the_stats_socket(bed):
    answer = wait_for(lambda: (text := bed.cli("show info")) and "version: " in text and text,
                      timeout=UNIT_TIMEOUT, interval=0.2, what="show info over socat")
    info = dict(line.split(": ", 1) for line in answer.splitlines() if ": " in line)
    assert int(info["pid"]) == bed.main_pid(), answer  # the unit's main process answers


def test_c_traffic_on_two_nodes_is_summed(bed):
    bed.traffic("A", 3)
    bed.traffic("B", 2)
    assert bed.wait_summed(["A", "B"], "the sum of A and B on both") == 5
    assert f"key={KEY} http_req_cnt=5 " in bed.cli("show table AGGR mytable.aggr")


def test_d_reload_adds_a_peer_without_a_restart(bed):
    bed.traffic("A", 1)
    bed.traffic("B", 1)
    before = bed.wait_summed(["A", "B"], "A's and B's sum before the reload")
    pid = bed.main_pid()
    bed.write_config(["A", "B", "C"])
    reloaded = bed.systemctl("reload", UNIT)
    assert reloaded.returncode == 0, f"systemctl reload: {reloaded.stderr}{bed.diagnose()}"
    bed.serving = ["A", "B", "C"]
    # systemctl reload returns once the file is applied, so C is declared now, not "soon":
    # a HAProxy node that connects before gets 504 and never retries (real-haproxy.md 7.5).
    peers = bed.cli("show peers")
    assert "AGGR/C " in peers, f"systemctl reload returned before C was declared:\n{peers}{bed.diagnose()}"
    bed.nodes["C"].start()
    bed.traffic("C", 4)
    after = bed.wait_summed(["A", "B", "C"], "C's counts joining the sum on A, B and C")
    assert after == before + 4  # A's and B's totals are still in it
    assert bed.main_pid() == pid, "the reload restarted the daemon"
    assert bed.state() == "active"


def broken_reload(bed) -> dict:
    """Reload with ``peer X`` (no address) in the file, once per boot; restores the good file."""
    if bed.broken is None:
        pid = bed.main_pid()
        line = bed.write_config(bed.serving, broken=True)
        try:
            reloaded = bed.systemctl("reload", UNIT)
            where = f"hapee-stktagg.cfg:{line}:5:"
            try:  # the error reaches the journal once the reload's process ends: a deadline
                wait_for(lambda: where in bed.journal(), timeout=10, interval=0.2, what=f"'{where}' in the journal")
                logged = True
            except AssertionError:
                logged = False
            bed.broken = {"reload": reloaded, "pid_before": pid, "pid_after": bed.main_pid(),
                          "state_after": bed.state(), "where": where, "logged": logged}
        finally:
            bed.write_config(bed.serving)
    return bed.broken


def test_e_broken_reload_fails_and_keeps_the_running_configuration(bed):
    broken = broken_reload(bed)
    assert broken["reload"].returncode != 0, "systemctl reload of a broken file succeeded"
    assert broken["state_after"] == "active" and broken["pid_after"] == broken["pid_before"], broken
    bed.traffic("A", 1)
    bed.wait_summed(bed.serving, "the sums of the old configuration after the failed reload")
    assert bed.main_pid() == broken["pid_before"]
    assert broken["logged"], f"no line with {broken['where']!r} in the journal{bed.diagnose()}"


def test_f_journal_lines_are_bare_and_have_priorities(bed):
    broken = broken_reload(bed)  # the warning to look for
    lines = bed.journal().splitlines()
    started = [line for line in lines if re.search(r"\bstarted: \d+ aggregations", line)]
    assert started, f"no 'started' line from the daemon{bed.diagnose()}"
    doubled = [line for line in lines if "hapee-stktagg[" in line or re.match(r"\d{4}-\d{2}-\d{2}", line)]
    assert doubled == [], "journal lines repeat a timestamp or the program name:\n" + "\n".join(doubled)
    warnings = bed.journal("-p", "warning")
    assert broken["where"] in warnings, (f"-p warning does not show the broken reload's error:\n{warnings}"
                                         f"--- where it is, with its priority:\n{bed.priorities(broken['where'])}")
    assert not re.search(r"\bstarted: \d+ aggregations", warnings), f"-p warning shows info lines:\n{warnings}"


def test_h_security_exposure(bed):
    """systemd-analyze security's overall exposure (before the purge: it needs the unit)."""
    analysed = bed.sh("systemd-analyze", "security", "--no-pager", UNIT)
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", analysed.stdout)
    if not found:
        pytest.skip(f"systemd-analyze security cannot run here (exit {analysed.returncode}): "
                    f"{(analysed.stderr or analysed.stdout).strip()[-500:]}")
    exposure = float(found.group(1))
    print(f"\n[test_systemd] systemd-analyze security {UNIT}: exposure {exposure}")
    assert exposure <= 1.9, analysed.stdout


def test_g_stop_start_then_purge(bed):
    bed.write_config(bed.serving)
    pid = bed.main_pid()
    stopped = bed.systemctl("stop", UNIT)
    assert stopped.returncode == 0, stopped.stderr
    assert bed.state() == "inactive", bed.diagnose()
    started = bed.systemctl("start", UNIT)
    assert started.returncode == 0, f"{started.stderr}{bed.diagnose()}"
    bed.wait_active("the unit to be active again after stop and start")
    assert bed.main_pid() not in (0, pid)
    wait_for(lambda: "version: " in bed.cli("show info"), timeout=UNIT_TIMEOUT, interval=0.2,
             what="show info after the start")
    purged = bed.sh("apt-get", "purge", "-y", "-q", "hapee-extras-stktagg", env={"DEBIAN_FRONTEND": "noninteractive"},
                    timeout=120)
    assert purged.returncode == 0, purged.stdout + purged.stderr
    assert not (bed.root / PROGRAM.lstrip("/")).exists()
    assert not (bed.root / CONFIG.lstrip("/")).exists()
    assert bed.state() != "active", "the purged service still runs"
    assert bed.sh("dpkg", "-s", "hapee-extras-stktagg").returncode != 0
