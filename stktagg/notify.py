"""Readiness for systemd: the ``sd_notify`` datagram, with the standard library only.

Imports nothing of ``stktagg``. Under ``Type=notify`` systemd passes the path of a
unix datagram socket in ``$NOTIFY_SOCKET`` (a leading ``@`` names an abstract
socket); a state is one datagram of ``KEY=value`` lines. What the daemon sends
(issue 17): ``READY=1`` once it listens, ``RELOADING=1`` with ``MONOTONIC_USEC``
when a reload starts and ``READY=1`` when it is over (applied or refused), and
``STOPPING=1`` when it stops; each with a ``STATUS=`` line that ``systemctl
status`` shows. Without ``$NOTIFY_SOCKET`` (started by hand, by another
supervisor) every call does nothing. A failed send is not an error of the daemon:
systemd may be gone while we stop.
"""

from __future__ import annotations

import os
import socket
import time

__all__ = ["Notifier"]


class Notifier:
    """Sends states to the service manager named by ``$NOTIFY_SOCKET`` (none: a no-op)."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        path = environ.get("NOTIFY_SOCKET", "")
        # "@name" is Linux's abstract namespace, written with a leading NUL.
        self.address = "\0" + path[1:] if path.startswith("@") else path

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def ready(self, status: str) -> None:
        self.send(READY="1", STATUS=status)

    def reloading(self, status: str) -> None:
        # systemd 253+ wants the monotonic time of the reload's start with RELOADING=1.
        self.send(RELOADING="1", MONOTONIC_USEC=str(time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000),
                  STATUS=status)

    def stopping(self, status: str) -> None:
        self.send(STOPPING="1", STATUS=status)

    def send(self, **fields: str) -> bool:
        """One datagram of ``KEY=value`` lines; False when there is no manager or it did not take it."""
        if not self.address:
            return False
        message = "".join(f"{key}={value}\n" for key, value in fields.items()).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message, self.address)
        except OSError:
            return False
        return True
