"""Where log lines go: stderr in the foreground, the ``log`` targets of ``global``.

Imports ``config`` (the model) only.

Targets (like HAProxy's ``log`` lines): ``stderr``, ``stdout``, a unix
datagram socket path (``/dev/log``), or ``ip[:port]`` (UDP syslog, port 514).
A daemon has no terminal: it logs to its ``log`` targets, or to ``/dev/log``
when it has none and that socket exists, so that errors are never silently
lost. ``reopen()`` (on SIGHUP) closes and reopens every syslog target, for a
syslog daemon that was restarted.

Under systemd (``$JOURNAL_STREAM`` names our stderr), journald stamps each line
with its own time and the unit's name: the foreground lines then carry only the
message, after the syslog priority as ``<N>`` (sd-daemon(3)), so that
``journalctl -p warning`` filters them (issue 17).
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import socket
import sys

from .config import LogTarget

#: syslog level names to the most verbose Python level they let through
LEVELS = {
    "emerg": logging.CRITICAL, "alert": logging.CRITICAL, "crit": logging.CRITICAL,
    "err": logging.ERROR, "warning": logging.WARNING, "notice": logging.INFO,
    "info": logging.INFO, "debug": logging.DEBUG,
}
#: HAProxy's facility names and their syslog numbers (RFC 5424), some of
#: which Python's SysLogHandler does not know by name.
FACILITIES = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
    "uucp": 8, "cron": 9, "auth2": 10, "ftp": 11, "ntp": 12, "audit": 13, "alert": 14, "cron2": 15,
    **{f"local{i}": 16 + i for i in range(8)},
}
FOREGROUND_FORMAT = "%(asctime)s hapee-stktagg[%(process)d]: %(levelname)s %(message)s"
SYSLOG_FORMAT = "hapee-stktagg[%(process)d]: %(message)s"
#: Python's levels to syslog priorities (RFC 5424: 2 crit, 3 err, 4 warning, 6 info, 7 debug)
PRIORITIES = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


def setup(targets: tuple[LogTarget, ...], *, foreground: bool, debug: bool) -> None:
    """Install the handlers on the root logger (replacing any)."""
    handlers: list[logging.Handler] = []
    if foreground:
        handlers.append(_journal(sys.stderr) if stderr_is_journal() else _stream(sys.stderr))
    for target in targets:
        try:
            handler = _handler(target)
        except OSError as exc:  # e.g. no syslog daemon listening on that path
            sys.stderr.write(f"hapee-stktagg: cannot log to {target.target}: {exc.strerror or exc}\n")
            continue
        if handler is not None and not (foreground and target.target == "stderr"):
            handlers.append(handler)
    if not foreground and not targets and os.path.exists("/dev/log"):
        try:
            handlers.append(_syslog("/dev/log", "daemon"))
        except OSError:
            pass
    root = logging.getLogger()
    for old in root.handlers:
        old.close()
    root.handlers[:] = handlers
    root.setLevel(logging.DEBUG if debug else logging.INFO)


def reopen() -> None:
    """Close and reopen every syslog handler (SIGHUP)."""
    root = logging.getLogger()
    for i, handler in enumerate(root.handlers):
        if isinstance(handler, logging.handlers.SysLogHandler):
            fresh = logging.handlers.SysLogHandler(handler.address, handler.facility, handler.socktype)
            fresh.setLevel(handler.level)
            fresh.setFormatter(handler.formatter)
            handler.close()
            root.handlers[i] = fresh


def _handler(target: LogTarget) -> logging.Handler | None:
    if target.target in ("stderr", "stdout"):
        handler: logging.Handler = _stream(sys.stderr if target.target == "stderr" else sys.stdout)
    elif target.target.startswith("/"):
        handler = _syslog(target.target, target.facility)
    else:
        host, _, port = target.target.rpartition(":")
        handler = _syslog((host.strip("[]"), int(port)), target.facility)
    if target.level is not None:
        handler.setLevel(LEVELS[target.level])
    return handler


def _stream(stream) -> logging.Handler:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(FOREGROUND_FORMAT))
    return handler


def stderr_is_journal(environ: dict[str, str] | None = None) -> bool:
    """True when stderr is the journal stream systemd gave us (``$JOURNAL_STREAM`` is its
    ``device:inode``; a redirected stderr keeps the variable but not the stream)."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        stat = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):  # no stderr at all
        return False
    return (stat.st_dev, stat.st_ino) == (int(device), int(inode))


class _JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        priority = PRIORITIES.get(record.levelno, 3 if record.levelno > logging.WARNING else 6)
        # One journal entry per line: a traceback's lines each carry the priority too.
        return "\n".join(f"<{priority}>{line}" for line in super().format(record).split("\n"))


def _journal(stream) -> logging.Handler:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_JournalFormatter("%(message)s"))
    return handler


def _syslog(address: str | tuple[str, int], facility: str) -> logging.Handler:
    handler = logging.handlers.SysLogHandler(address, FACILITIES.get(facility, 3), socket.SOCK_DGRAM)
    handler.setFormatter(logging.Formatter(SYSLOG_FORMAT))
    return handler
