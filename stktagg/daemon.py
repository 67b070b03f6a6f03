"""The process: command line, configuration, logging, signals, privileges, run.

``main(argv)`` is the entry point of ``hapee-stktagg`` (see ``-h``). It owns
the process-wide side effects: it is the only caller of ``Server.bind``,
of the signal handlers and of daemonisation, and it makes the process's one
``clock.Clock``, which the reactor and the server run on.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import grp
import logging
import os
import pwd
import shutil
import signal
import sys
import tempfile

from . import __version__, logs, reconfigure
from .cli import CliConnection
from .clock import Clock
from .config import Config, check_cpus, check_files, config_error, load
from .errors import ConfigError, StktaggError
from .loop import Reactor
from .notify import Notifier
from .server import Server
from .shardproxy import Shard, ShardedCliConnection, ShardedMetricsConnection
from .web import WebConnection
from .shards import Supervisor, is_sharded, plan, shard_command, write_configs
from .tls import section_contexts

log = logging.getLogger("stktagg")

EXIT_OK = 0
EXIT_CONFIG = 1
EXIT_USAGE = 2
EXIT_RUNTIME = 3

#: While the loop is calm it polls its sockets at most once per this many seconds
#: (``Reactor``'s coalescing): at 1,000 updates/s from 4 peers a read then carries
#: several updates instead of one, for 0.04-0.05 core instead of 0.07 and ~5 ms more
#: latency (issue 15).
LOOP_COALESCE = 0.01

USAGE = """\
Usage: hapee-stktagg -f <cfgfile> [-d | -D] [-p <pidfile>] [-u <uid>] [-g <gid>] [-c] [-v] [-h]
  -f <cfgfile>  load the configuration from this file (mandatory)
  -d            debug mode: stay in the foreground, verbose log (cancels -D)
  -D            run as a daemon (detach from the terminal)
  -p <pidfile>  write the process id to this file (also: 'pidfile' in global)
  -u <uid>      set the user (name or number) once the sockets are bound
  -g <gid>      set the group (name or number) once the sockets are bound
  -c            check the configuration file and exit (0 valid, 1 invalid)
  -v            print the version and exit
  -h            print this help and exit
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"hapee-stktagg: {message}\n{USAGE}")
        raise SystemExit(EXIT_USAGE)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = _Parser(prog="hapee-stktagg", add_help=False)
    parser.add_argument("-f", dest="config")
    parser.add_argument("-d", dest="debug", action="store_true")
    parser.add_argument("-D", dest="daemon", action="store_true")
    parser.add_argument("-p", dest="pidfile")
    parser.add_argument("-u", dest="user")
    parser.add_argument("-g", dest="group")
    parser.add_argument("-c", dest="check", action="store_true")
    parser.add_argument("-v", dest="version", action="store_true")
    parser.add_argument("-h", dest="help", action="store_true")
    parser.add_argument("-W", dest="workers", type=int, default=1, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def load_checked(path: str) -> Config:
    """Load the configuration and check what it refers to (files, CPUs)."""
    if path.endswith((".yaml", ".yml")):
        from .yamlconf import load_yaml  # optional: needs ruamel.yaml

        config = load_yaml(path)
    else:
        config = load(path)
    errors = check_files(config)
    if errors:
        raise errors[0]
    if config.global_.cpu_map:
        check_cpus(config, cpu_affinity())
    listeners: dict[tuple[str, int], bool] = {}
    for section in config.aggregations:
        section_contexts(section)  # loads every certificate and CA now, errors at their line
        for local in section.local_peers:
            where = (local.address.host, local.address.port)
            if listeners.setdefault(where, local.ssl) != local.ssl:
                raise config_error(local.position, f"sections listening on {local.address} disagree on 'ssl'")
    return config


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.help:
        sys.stdout.write(USAGE)
        return EXIT_OK
    if args.version:
        sys.stdout.write(f"hapee-stktagg version {__version__}\n")
        return EXIT_OK
    if not args.config:
        sys.stderr.write(f"hapee-stktagg: -f <cfgfile> is mandatory\n{USAGE}")
        return EXIT_USAGE
    try:
        config = load_checked(args.config)
    except ConfigError as exc:
        _error(str(exc))
        return EXIT_CONFIG
    for name, lookup in ((args.user or config.global_.user, _uid), (args.group or config.global_.group, _gid)):
        try:
            if name is not None:
                lookup(name)
        except KeyError:
            _error(f"hapee-stktagg: unknown user or group {name!r}")
            return EXIT_CONFIG
    try:
        privilege_target(args.user or config.global_.user, args.group or config.global_.group)
    except PrivilegeError as exc:
        _error(f"hapee-stktagg: {exc}")
        return EXIT_CONFIG
    if args.check:
        sys.stdout.write(f"Configuration file is valid: {args.config}\n")
        return EXIT_OK
    daemon = args.daemon and not args.debug
    logs.setup(config.global_.logs, foreground=not daemon, debug=args.debug)
    return run(config, args, daemon)


def _error(text: str) -> None:
    """An error before logging is set up (a bad file, ``-c`` from the unit's ExecReload): to
    stderr, as an error-priority journal line when stderr is the journal (``logs``)."""
    sys.stderr.write(f"<3>{text}\n" if logs.stderr_is_journal() else f"{text}\n")


def run(config: Config, args: argparse.Namespace, daemon: bool) -> int:
    if is_sharded(config):
        return run_sharded(config, args, daemon)
    clock = Clock()
    reactor = Reactor(clock=clock.now, coalesce=LOOP_COALESCE)
    server = Server(config, reactor, clock, workers=max(0, args.workers), cli_factory=CliConnection,
                    http_factory=lambda server: WebConnection(server.dashboard))
    if not _bind(server, reactor, config):
        return EXIT_RUNTIME
    if config.global_.cpu_map:
        set_cpu_affinity(set(config.global_.cpu_map))
    pidfile = args.pidfile or config.global_.pidfile
    if daemon:
        daemonize()
    if pidfile:
        write_pidfile(pidfile)  # as root, like HAProxy: an unprivileged user may not write there
    drop_privileges(args.user or config.global_.user, args.group or config.global_.group)
    notifier = Notifier()
    for signum in (signal.SIGTERM, signal.SIGINT):
        reactor.add_signal_handler(signum, _stop, reactor, signum)
    reactor.add_signal_handler(signal.SIGHUP, _reload, server, args, daemon, notifier)
    server.start()
    log.info("hapee-stktagg %s started: %d aggregations section(s)", __version__, len(server.sections))
    notifier.ready(_serving(server))
    try:
        reactor.run_forever()
    finally:
        notifier.stopping("stopping")
        server.stop()
        reactor.close()
        if pidfile:
            remove_pidfile(pidfile)
    log.info("stopped")
    return EXIT_OK


def run_sharded(config: Config, args: argparse.Namespace, daemon: bool) -> int:
    """A configuration with shards: this process supervises one process per local shard (``shards``)
    and answers the stats sockets and metrics for all of them (``shardproxy``)."""
    run_dir = tempfile.mkdtemp(prefix="hapee-stktagg-")
    plans = plan(config, run_dir)
    write_configs(plans)
    clock = Clock()
    reactor = Reactor(clock=clock.now)
    supervisor = Supervisor(reactor, clock.now, plans,
                            lambda p: shard_command(p, debug=args.debug, workers=max(0, args.workers),
                                                      user=args.user, group=args.group))
    shards = [Shard(p.label, p.cli_path) for p in plans]
    front = dataclasses.replace(config, aggregations=())
    server = Server(front, reactor, clock, workers=0,
                    cli_factory=lambda _: ShardedCliConnection(reactor, lambda: shards),
                    http_factory=lambda _: ShardedMetricsConnection(reactor, lambda: shards))
    if not _bind(server, reactor, config):
        shutil.rmtree(run_dir, ignore_errors=True)
        return EXIT_RUNTIME
    pidfile = args.pidfile or config.global_.pidfile
    if daemon:
        daemonize()
    if pidfile:
        write_pidfile(pidfile)
    user, group = args.user or config.global_.user, args.group or config.global_.group
    if user is not None:
        uid, gid = privilege_target(user, group)
        os.chown(run_dir, uid if uid is not None else -1, gid if gid is not None else -1)
    for signum in (signal.SIGTERM, signal.SIGINT):
        reactor.add_signal_handler(signum, _stop, reactor, signum)
    reactor.add_signal_handler(signal.SIGHUP, _reopen_logs_everywhere, supervisor)
    supervisor.start()  # before dropping privileges: a shard may listen on a port below 1024
    drop_privileges(user, group)
    server.start()
    log.info("hapee-stktagg %s started: %d shard process(es)", __version__, len(plans))
    notifier = Notifier()
    notifier.ready(f"serving {len(plans)} shard process(es)")
    try:
        reactor.run_forever()
    finally:
        notifier.stopping("stopping")
        supervisor.stop()
        server.stop()
        reactor.close()
        shutil.rmtree(run_dir, ignore_errors=True)
        if pidfile:
            remove_pidfile(pidfile)
    log.info("stopped")
    return EXIT_OK


#: Bytes of the ``cpu_set_t`` handed to libc: glibc's size, 1,024 CPUs.
_CPU_SET_BYTES = 128


def cpu_affinity() -> set[int]:
    """The CPUs this process may run on.

    PyPy's ``os`` has no ``sched_getaffinity``: then libc's, through ctypes, else
    ``Cpus_allowed_list`` of /proc/self/status.
    """
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    try:
        return _libc_affinity()
    except (OSError, AttributeError):  # no libc, no such function, or more than 1,024 CPUs
        return _proc_affinity()


def set_cpu_affinity(cpus: set[int]) -> None:
    """Pin this process to *cpus*; OSError as ``os.sched_setaffinity`` (which PyPy lacks)."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus)
        return
    import ctypes

    if any(cpu < 0 or cpu >= _CPU_SET_BYTES * 8 for cpu in cpus):
        raise OSError(errno.EINVAL, f"CPU numbers must be in 0-{_CPU_SET_BYTES * 8 - 1}")
    mask = bytearray(_CPU_SET_BYTES)
    for cpu in cpus:
        mask[cpu // 8] |= 1 << (cpu % 8)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.sched_setaffinity(0, _CPU_SET_BYTES, ctypes.create_string_buffer(bytes(mask), _CPU_SET_BYTES)) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _libc_affinity() -> set[int]:
    import ctypes

    mask = ctypes.create_string_buffer(_CPU_SET_BYTES)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.sched_getaffinity(0, _CPU_SET_BYTES, mask) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return {cpu for cpu in range(_CPU_SET_BYTES * 8) if mask.raw[cpu // 8] >> (cpu % 8) & 1}


def _proc_affinity() -> set[int]:
    with open("/proc/self/status") as status:
        allowed = next(line for line in status if line.startswith("Cpus_allowed_list:")).split(":", 1)[1]
    cpus: set[int] = set()
    for part in allowed.strip().split(","):
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus


def _bind(server: Server, reactor: Reactor, config: Config) -> bool:
    """Open the listening sockets (as root, before privileges are dropped); False when one fails."""
    try:
        server.bind()
        chown_stats_sockets(config)
    except (OSError, KeyError) as exc:
        log.error("cannot bind: %s", exc)
        server.stop()
        reactor.close()
        return False
    return True


def _reopen_logs_everywhere(supervisor: Supervisor) -> None:
    _reopen_logs()
    log.warning("a sharded daemon does not reload its configuration in place: restart it to apply a change")
    supervisor.signal_all(signal.SIGHUP)


def _serving(server: Server) -> str:
    peers = sum(len(section.declared_peers()) for section in server.sections)
    return f"serving {len(server.sections)} aggregations section(s), {peers} peer(s)"


def _reload(server: Server, args: argparse.Namespace, daemon: bool, notifier: Notifier) -> None:
    """SIGHUP: reopen the logs, then load and check the file again and apply it in place
    (``reconfigure``); an invalid file changes nothing and is logged at ``file:line:col``."""
    path = args.config
    notifier.reloading(f"reloading {path}")
    logs.reopen()
    log.info("received SIGHUP: reloading %s", path)
    try:
        config = load_checked(path)
        if is_sharded(config):
            raise ConfigError(f"{path}: a configuration with shards needs a restart, not a reload")
        notes = reconfigure.apply(server, config)
    except ConfigError as exc:
        log.error("reload refused, the running configuration stays: %s", exc)
        notifier.ready(f"reload refused: {exc}; {_serving(server)}")
        return
    logs.setup(config.global_.logs, foreground=not daemon, debug=args.debug)
    try:
        chown_stats_sockets(config)
    except (OSError, KeyError) as exc:
        log.warning("reload: cannot give the stats sockets their owner: %s", exc)
    for note in notes:
        log.log(note.level, "reload: %s", note.message)
    log.info("reloaded %s: %d change(s)", path, len(notes))
    notifier.ready(_serving(server))


def _stop(reactor: Reactor, signum: int) -> None:
    log.info("received %s, stopping", signal.Signals(signum).name)
    reactor.stop()


def _reopen_logs() -> None:
    logs.reopen()
    log.info("received SIGHUP, logs reopened")


def chown_stats_sockets(config: Config) -> None:
    """Give unix stats sockets the owner and group of their ``user``/``group`` options."""
    for stats in config.global_.stats_sockets:
        if stats.path is not None and (stats.user is not None or stats.group is not None):
            uid = _uid(stats.user) if stats.user is not None else -1
            gid = _gid(stats.group) if stats.group is not None else -1
            os.chown(stats.path, uid, gid)


def write_pidfile(path: str) -> None:
    """Write our pid atomically (temporary file + rename), as a daemon's pid file."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=".hapee-stktagg-pid", dir=directory)
    with os.fdopen(fd, "w") as handle:
        handle.write(f"{os.getpid()}\n")
    os.chmod(temporary, 0o644)
    os.rename(temporary, path)


def remove_pidfile(path: str) -> None:
    """Remove the pid file if it still holds our pid."""
    try:
        with open(path) as handle:
            if handle.read().strip() == str(os.getpid()):
                os.unlink(path)
    except OSError:
        pass


def _uid(user: str) -> int:
    return int(user) if user.isdigit() else pwd.getpwnam(user).pw_uid


def _gid(group: str) -> int:
    return int(group) if group.isdigit() else grp.getgrnam(group).gr_gid


class PrivilegeError(StktaggError):
    """Dropping privileges would leave the process root (uid or gid 0)."""


def drop_privileges(user: str | None, group: str | None) -> None:
    """Set the group then the user (names or numbers), after the sockets are bound.

    ``-u`` without ``-g`` takes the user's primary group (as ``su`` and HAProxy's
    ``user`` do), and the supplementary groups are dropped either way: a process
    that dropped to ``nobody`` must not keep root's group 0 (issue 17). Dropping to
    uid 0 or gid 0 is refused (``PrivilegeError``). Nothing to do when already that
    user and group: a shard process restarted by a main process that has dropped
    its privileges runs as them already.
    """
    if user is None and group is None:
        return
    uid, gid = privilege_target(user, group)
    if os.geteuid() != 0 and uid in (None, os.geteuid()) and gid in (None, os.getegid()):
        return
    if gid is not None:
        os.setgroups([])
        os.setgid(gid)
    if uid is not None:
        os.setuid(uid)
    if os.getuid() == 0 or os.geteuid() == 0 or (gid is not None and (os.getgid() == 0 or os.getegid() == 0)):
        raise PrivilegeError("still root after dropping privileges")


def privilege_target(user: str | None, group: str | None) -> tuple[int | None, int | None]:
    """The uid and gid ``drop_privileges`` would set (None: unchanged); ``PrivilegeError`` for
    0 or a user without a passwd entry and no group; ``KeyError`` for an unknown name."""
    uid = _uid(user) if user is not None else None
    gid = _gid(group) if group is not None else (_primary_gid(user) if user is not None else None)
    if uid == 0 or gid == 0:
        raise PrivilegeError(f"refusing to run as {'uid' if uid == 0 else 'gid'} 0 after dropping privileges"
                             f" (user {user!r}, group {group!r})")
    return uid, gid


def _primary_gid(user: str) -> int:
    """The primary group of ``user`` (a name, or a number that has a passwd entry)."""
    try:
        return pwd.getpwuid(int(user)).pw_gid if user.isdigit() else pwd.getpwnam(user).pw_gid
    except KeyError:
        raise PrivilegeError(f"user {user!r} has no passwd entry: give its group with -g") from None


def daemonize() -> None:
    """Detach: double fork, new session, stdio on /dev/null (Unix FAQ 1.7)."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
