"""HAProxy's key shards: one process per local shard, started and kept up by the main process.

Imports ``config``. Runs in the main
process, in its event loop (issue 15).

HAProxy 2.8+ nodes whose ``peers`` section has ``shards N`` send each key to
the one peer of its shard (``shard i`` on that peer's line). An aggregations
section with ``shards N`` serves the shards of its ``local`` lines: each is an
ordinary aggregator of its own, under its own peer name and address, with its
own sessions and tables; the keys of two shards never meet, so nothing is
shared and the shards need not talk to one another. So each local shard runs
in a process of its own, on a core of its own: a ``hapee-stktagg`` started on
a configuration derived from the operator's (``plan``):

- the section with its one local shard peer (without ``shard``: inside the
  process there are no shards), and its peers that are no shard peer (the
  nodes, up and down peers); the other shard peers, local here or served by
  another host, are left out: they are the nodes' business, not ours;
- the global section without the operator's stats sockets, metrics endpoint
  and pid file, which stay with the main process, and with one private stats
  socket of its own in the run directory, through which the main process
  answers the operator for every shard (``shardproxy``);
- file paths (certificates, CA files) made absolute, so that a process
  started after the main one has left its working directory still finds them.

Sections without shards, if any, are served together by one more process of
the same kind, so that the main process only supervises and answers.

``Supervisor`` starts every process, restarts one that exits (logged, after a
delay that grows while it keeps failing; a restarted shard rebuilds its sums
from the nodes' resync, as after any restart), forwards SIGHUP, and stops them
all. Each process is asked to die with the main process (Linux's
``PR_SET_PDEATHSIG``): a killed supervisor leaves no orphan serving peers.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence

from .config import Aggregations, Config, Peer, PeerRole, Position, StatsSocket, dump

__all__ = ["RESTART_DELAY", "MAX_RESTART_DELAY", "ShardPlan", "Supervisor", "is_sharded", "plan"]

log = logging.getLogger("stktagg")

#: Seconds before a process that exited is started again; doubled while it keeps exiting soon...
RESTART_DELAY = 0.5
#: ...up to this; reset once it has run STABLE_AFTER seconds.
MAX_RESTART_DELAY = 30.0
STABLE_AFTER = 60.0
#: How often the supervisor looks for processes that exited (s).
POLL_INTERVAL = 0.2
#: On stop, how long the processes get to stop on SIGTERM before SIGKILL (s).
STOP_GRACE = 10.0


@dataclasses.dataclass(frozen=True, slots=True)
class ShardPlan:
    """One process to run: what the operator sees (``label``), its configuration, its files."""

    label: str  #: "<section>/<shard peer>", or the names of the unsharded sections
    config: Config
    config_path: str  #: where the derived configuration is written
    cli_path: str  #: its private stats socket


def is_sharded(config: Config) -> bool:
    return any(section.shards is not None for section in config.aggregations)


def plan(config: Config, run_dir: str) -> list[ShardPlan]:
    """The processes that serve ``config``: one per local shard, one for the unsharded sections."""
    plans: list[ShardPlan] = []

    def add(label: str, sections: tuple[Aggregations, ...]) -> None:
        index = len(plans) + 1
        cli_path = os.path.join(run_dir, f"shard{index}.sock")
        position = Position(os.path.join(run_dir, f"shard{index}.cfg"), 0, 0)
        private = StatsSocket(cli_path, None, 0o600, None, None, None, position)
        global_ = dataclasses.replace(config.global_, stats_sockets=(private,), http=None, pidfile=None)
        derived = Config(position.path, global_, tuple(_absolute_paths(s) for s in sections))
        plans.append(ShardPlan(label, derived, position.path, cli_path))

    for section in config.aggregations:
        if section.shards is None:
            continue
        others = tuple(p for p in section.peers if p.shard is None and p.role is not PeerRole.LOCAL)
        for local in section.local_peers:
            one = dataclasses.replace(section, peers=(dataclasses.replace(local, shard=None), *others),
                                      shards=None, shards_position=None)
            add(f"{section.name}/{local.name}", (one,))
    unsharded = tuple(s for s in config.aggregations if s.shards is None)
    if unsharded:
        add(",".join(s.name for s in unsharded), unsharded)
    return plans


def _absolute_paths(section: Aggregations) -> Aggregations:
    def fix(peer: Peer) -> Peer:
        return dataclasses.replace(
            peer, crt=os.path.abspath(peer.crt) if peer.crt else peer.crt,
            ca_file=os.path.abspath(peer.ca_file) if peer.ca_file else peer.ca_file)
    return dataclasses.replace(section, peers=tuple(fix(p) for p in section.peers))


def write_configs(plans: Sequence[ShardPlan]) -> None:
    for p in plans:
        with open(p.config_path, "w") as handle:
            handle.write(f"# generated by hapee-stktagg for {p.label}: do not edit\n")
            handle.write(dump(p.config))


class _Process:
    def __init__(self, plan: ShardPlan) -> None:
        self.plan = plan
        self.popen: subprocess.Popen | None = None
        self.started_at = 0.0
        self.delay = RESTART_DELAY
        self.restarts = 0
        self.restart_due: float | None = None


class Supervisor:
    """Starts, watches, restarts and stops the shard processes (module docstring).

    Args:
        reactor: the main process's event loop (``call_later``).
        clock: seconds, monotonic (the reactor's clock).
        plans: what to run.
        command: the command line of a process for one plan (without the process itself).
    """

    def __init__(self, reactor, clock: Callable[[], float], plans: Sequence[ShardPlan],
                 command: Callable[[ShardPlan], list[str]]) -> None:
        self._reactor = reactor
        self._clock = clock
        self._command = command
        self._processes = [_Process(p) for p in plans]
        self._stopping = False

    def pids(self) -> dict[str, int | None]:
        return {p.plan.label: (p.popen.pid if p.popen is not None and p.popen.poll() is None else None)
                for p in self._processes}

    def start(self) -> None:
        for process in self._processes:
            self._spawn(process)
        self._reactor.call_later(POLL_INTERVAL, self._poll)

    def _spawn(self, process: _Process) -> None:
        process.restart_due = None
        try:
            process.popen = subprocess.Popen(self._command(process.plan), preexec_fn=_die_with_parent,
                                             stdin=subprocess.DEVNULL, env=_child_environment())
        except OSError as exc:
            log.error("shard %s: cannot start its process: %s", process.plan.label, exc)
            process.popen = None
            self._restart_later(process)
            return
        process.started_at = self._clock()
        log.info("shard %s: process %d started", process.plan.label, process.popen.pid)

    def _poll(self) -> None:
        if self._stopping:
            return
        now = self._clock()
        for process in self._processes:
            if process.restart_due is not None:
                if now >= process.restart_due:
                    process.restarts += 1
                    self._spawn(process)
                continue
            popen = process.popen
            if popen is None or popen.poll() is None:
                continue
            log.warning("shard %s: process %d exited (%s); restarting it in %.1f s", process.plan.label,
                        popen.pid, _describe(popen.returncode), process.delay)
            self._restart_later(process)
        self._reactor.call_later(POLL_INTERVAL, self._poll)

    def _restart_later(self, process: _Process) -> None:
        now = self._clock()
        if process.started_at and now - process.started_at >= STABLE_AFTER:
            process.delay = RESTART_DELAY
        process.restart_due = now + process.delay
        process.delay = min(process.delay * 2, MAX_RESTART_DELAY)

    def signal_all(self, signum: int) -> None:
        for process in self._processes:
            if process.popen is not None and process.popen.poll() is None:
                process.popen.send_signal(signum)

    def stop(self) -> None:
        """SIGTERM to every process, SIGKILL to those still there after STOP_GRACE; waits for all."""
        self._stopping = True
        self.signal_all(signal.SIGTERM)
        deadline = self._clock() + STOP_GRACE
        for process in self._processes:
            if process.popen is None:
                continue
            try:
                process.popen.wait(max(0.0, deadline - self._clock()))
            except subprocess.TimeoutExpired:
                log.warning("shard %s: process %d did not stop; killing it", process.plan.label, process.popen.pid)
                process.popen.kill()
                process.popen.wait()


def _child_environment() -> dict[str, str]:
    """Ours, with this package importable (``-m stktagg``) wherever the daemon was started from."""
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": package_root + (os.pathsep + path if path else "")}


def _describe(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


_PR_SET_PDEATHSIG = 1


def _load_prctl():
    """libc's prctl, looked up now: between fork and exec nothing may run a subprocess or load a library."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_prctl = _load_prctl() if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the main process dies (Linux; elsewhere nothing)."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def shard_command(plan: ShardPlan, *, debug: bool, workers: int, user: str | None = None,
                  group: str | None = None) -> list[str]:
    """The command line of one shard process: this interpreter running the daemon on its derived
    file, with the main process's ``-d``, ``-u``, ``-g`` and worker count."""
    command = [sys.executable, "-m", "stktagg", "-f", plan.config_path, "-W", str(workers)]
    if debug:
        command.append("-d")
    for flag, value in (("-u", user), ("-g", group)):
        if value is not None:
            command += [flag, value]
    return command
