"""A TCP proxy that can cut a link and restore it, for fault tests (loopback only)."""

from __future__ import annotations

import selectors
import socket
import threading


class FaultProxy:
    """Forwards ``listen`` -> ``target``; ``cut()`` drops every connection and refuses new
    ones (the listener is closed), ``restore()`` listens again."""

    def __init__(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.listen_address = listen
        self.target = target
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.restore()
        self._thread.start()

    def restore(self) -> None:
        with self._lock:
            if self._listener is None:
                listener = socket.socket()
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                listener.bind(self.listen_address)
                listener.listen(16)
                listener.setblocking(False)
                self._listener = listener

    def cut(self) -> None:
        with self._lock:
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            for a, b in self._pairs:
                for s in (a, b):
                    try:
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    except OSError:
                        pass
                    s.close()
            self._pairs.clear()

    def close(self) -> None:
        self.cut()
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                listener = self._listener
                pairs = list(self._pairs)
            sel = selectors.DefaultSelector()
            if listener is not None:
                sel.register(listener, selectors.EVENT_READ, None)
            for a, b in pairs:
                sel.register(a, selectors.EVENT_READ, b)
                sel.register(b, selectors.EVENT_READ, a)
            try:
                events = sel.select(0.05)
            except (OSError, ValueError):
                events = []
            for key, _ in events:
                self._serve(key)
            sel.close()

    def _serve(self, key) -> None:
        try:
            if key.data is None:
                client, _ = key.fileobj.accept()
                upstream = socket.create_connection(self.target, timeout=5)
                with self._lock:
                    self._pairs.append((client, upstream))
                return
            data = key.fileobj.recv(65536)
            if data:
                key.data.sendall(data)
                return
        except OSError:
            pass
        with self._lock:  # one side closed or failed: drop the pair
            for pair in list(self._pairs):
                if key.fileobj in pair:
                    self._pairs.remove(pair)
                    for s in pair:
                        s.close()
