"""TLS for peer links: contexts from ``peer`` lines, and a sans-IO TLS layer.

Imports ``errors`` and ``config`` (the model). The layer does no I/O: the
transport feeds it network bytes and application bytes through
``ssl.MemoryBIO`` pairs (``transport.Layer``), so the event loop never blocks
on a handshake, and tests can run two layers against each other in memory.

Which settings apply where (docs/ARCHITECTURE.md, "TLS"):
- the *local* peer line's ``ssl crt ca-file verify`` make the listener a TLS
  server (HAProxy dials us): ``crt`` is our certificate, ``verify`` asks for
  and checks the client's certificate against ``ca-file`` (default ``none``,
  as on HAProxy's ``bind``);
- an *up* peer line's ``ssl crt ca-file verify`` make our connection to it a
  TLS client: ``crt`` is the client certificate we present, ``verify``
  (default ``required``, as on HAProxy's ``server``) checks the server's
  certificate against ``ca-file``. Host names are not checked: peers are
  named by the peers protocol, not by DNS (HAProxy checks names only with
  ``verifyhost``).
"""

from __future__ import annotations

import enum
import ssl

from .config import Peer, Verify
from .errors import StktaggError

_VERIFY_MODES = {
    Verify.NONE: ssl.CERT_NONE,
    Verify.OPTIONAL: ssl.CERT_OPTIONAL,
    Verify.REQUIRED: ssl.CERT_REQUIRED,
}


class TLSError(StktaggError):
    """A TLS handshake or record failed (a refused certificate, a broken record)."""


class TLSConfigError(StktaggError):
    """A ``peer`` line's TLS settings cannot make a context (bad file, missing CA)."""


def server_context(local: Peer) -> ssl.SSLContext:
    """The listener's context, from the local peer line."""
    if not local.crt:
        raise TLSConfigError("'ssl' on the local peer needs 'crt <pem>' (our certificate and key)")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(context, local.crt)
    verify = local.verify or Verify.NONE
    context.verify_mode = _VERIFY_MODES[verify]
    if verify is not Verify.NONE:
        if not local.ca_file:
            raise TLSConfigError(f"'verify {verify.value}' needs 'ca-file <pem>' to check client certificates")
        _load_ca(context, local.ca_file)
    return context


def client_context(peer: Peer) -> ssl.SSLContext:
    """The context of our connections to an up peer, from its peer line."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    verify = peer.verify or Verify.REQUIRED
    if verify is Verify.NONE:
        context.verify_mode = ssl.CERT_NONE
    else:
        if not peer.ca_file:
            raise TLSConfigError(
                "verify is enabled by default but no CA file specified: add 'ca-file <pem>' or 'verify none'"
            )
        context.verify_mode = ssl.CERT_REQUIRED if verify is Verify.REQUIRED else ssl.CERT_OPTIONAL
        _load_ca(context, peer.ca_file)
    if peer.crt:
        _load_chain(context, peer.crt)
    return context


def _load_chain(context: ssl.SSLContext, path: str) -> None:
    try:
        context.load_cert_chain(path)
    except (OSError, ssl.SSLError) as exc:
        raise TLSConfigError(f"cannot load certificate and key from {path!r}: {_reason(exc)}") from None


def _load_ca(context: ssl.SSLContext, path: str) -> None:
    try:
        context.load_verify_locations(cafile=path)
    except (OSError, ssl.SSLError) as exc:
        raise TLSConfigError(f"cannot load CA certificates from {path!r}: {_reason(exc)}") from None


def _reason(exc: Exception) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    return exc.strerror or str(exc) if isinstance(exc, OSError) else str(exc)


class TLSState(enum.Enum):
    HANDSHAKE = "handshake"
    WRAPPED = "wrapped"
    CLOSED = "closed"


_TRANSITIONS = {
    (TLSState.HANDSHAKE, TLSState.WRAPPED),
    (TLSState.HANDSHAKE, TLSState.CLOSED),
    (TLSState.WRAPPED, TLSState.CLOSED),
}


class TLSLayer:
    """One connection's TLS, driven by the bytes the transport feeds in (``transport.Layer``)."""

    def __init__(self, context: ssl.SSLContext, server_side: bool) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(self._incoming, self._outgoing, server_side=server_side)
        self.state = TLSState.HANDSHAKE

    def _set_state(self, new: TLSState) -> None:
        if (self.state, new) not in _TRANSITIONS:
            raise TLSError(f"TLS cannot go from {self.state.value} to {new.value}")
        self.state = new

    def handshake_done(self) -> bool:
        return self.state is TLSState.WRAPPED

    def feed_incoming(self, data: bytes) -> tuple[bytes, bytes]:
        """Network bytes in -> (application bytes, network bytes to send).

        Raises:
            TLSError: the handshake failed (the reason names the certificate
                problem) or a record is broken.
        """
        if data:
            self._incoming.write(data)
        if self.state is TLSState.HANDSHAKE:
            try:
                self._ssl.do_handshake()
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return b"", self._outgoing.read()
            except ssl.SSLError as exc:
                self._set_state(TLSState.CLOSED)
                raise TLSError(f"TLS handshake failed: {_describe(exc)}") from None
            self._set_state(TLSState.WRAPPED)
        return self._read_application(), self._outgoing.read()

    def _read_application(self) -> bytes:
        chunks = []
        while self.state is TLSState.WRAPPED:
            try:
                chunk = self._ssl.read(65536)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            except ssl.SSLZeroReturnError:
                self._set_state(TLSState.CLOSED)
                break
            except ssl.SSLError as exc:
                self._set_state(TLSState.CLOSED)
                raise TLSError(f"TLS record error: {_describe(exc)}") from None
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def feed_outgoing(self, data: bytes) -> bytes:
        """Application bytes -> network bytes."""
        if self.state is not TLSState.WRAPPED:
            raise TLSError(f"cannot send application data in TLS state {self.state.value}")
        view = memoryview(data)
        while view:
            written = self._ssl.write(view)
            view = view[written:]
        return self._outgoing.read()

    def peer_certificate_subject(self) -> str:
        """The peer certificate's subject, for logs ('' when none was given)."""
        cert = self._ssl.getpeercert()
        if not cert:
            return ""
        return ", ".join(f"{k}={v}" for rdn in cert.get("subject", ()) for k, v in rdn)


def _describe(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"certificate verify failed: {exc.verify_message}"
    return exc.reason or str(exc)


class SectionTLS:
    """The TLS contexts of one aggregations section (None where a link is plain)."""

    def __init__(self, server: ssl.SSLContext | None, clients: dict[str, ssl.SSLContext]) -> None:
        self.server = server
        self.clients = clients


def section_contexts(section) -> SectionTLS:
    """Build a section's contexts, reporting problems at their config line.

    Raises:
        ConfigError: a file cannot be loaded, a CA is missing, or a down peer
            asks for TLS while the listener (the local peer line) has none.
    """
    from .config import PeerRole, config_error

    local = section.local_peer
    server = None
    if local.ssl:
        try:
            server = server_context(local)
        except TLSConfigError as exc:
            raise config_error(local.crt_position or local.position, str(exc)) from None
    clients = {}
    for peer in section.remote_peers:
        if not peer.ssl:
            continue
        if peer.role is PeerRole.UP:
            try:
                clients[peer.name] = client_context(peer)
            except TLSConfigError as exc:
                raise config_error(peer.crt_position or peer.position, str(exc)) from None
        elif not local.ssl:
            raise config_error(
                peer.position,
                f"peer {peer.name!r} requires 'ssl' but the listener does not: add 'ssl crt <pem>' to the local peer line",
            )
    return SectionTLS(server, clients)
