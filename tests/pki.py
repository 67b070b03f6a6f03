"""A throw-away PKI for TLS tests, made with the openssl command (two CAs, leaf certificates).

Every certificate is valid from ``BACKDATE_DAYS`` before it is made until
``LIFETIME_DAYS`` after: the suite must pass with the clock a year or more
ahead (or a few days behind) of the moment the certificates were made, as
when a test jumps a process's wall clock with libfaketime. ``openssl req
-x509`` and ``openssl x509 -req`` (OpenSSL 3.0) cannot backdate, so both
the CAs (``-selfsign``) and the leaves are signed with ``openssl ca``, which
takes explicit ``-startdate`` and ``-enddate``.
"""

from __future__ import annotations

import datetime
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

#: Validity before the moment of making (covers a clock set back, or made under a fake clock).
BACKDATE_DAYS = 400
#: Validity after the moment of making (covers a clock set a year or more ahead).
LIFETIME_DAYS = 20 * 366

_CA_CONFIG = """\
[ ca ]
default_ca = ca_default

[ ca_default ]
database = {name}.index
serial = {name}.serial
new_certs_dir = .
default_md = sha256
policy = policy_any
unique_subject = no
email_in_dn = no

[ policy_any ]
commonName = supplied

[ v3_ca ]
basicConstraints = critical, CA:true
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always

[ v3_leaf ]
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
"""


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def validity() -> tuple[str, str]:
    """(-startdate, -enddate) for ``openssl ca``: GeneralizedTime, UTC, around now."""
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    start = now - datetime.timedelta(days=BACKDATE_DAYS)
    end = now + datetime.timedelta(days=LIFETIME_DAYS)
    return start.strftime("%Y%m%d%H%M%SZ"), end.strftime("%Y%m%d%H%M%SZ")


@dataclass
class PKI:
    directory: Path

    def _sign(self, ca: str, csr: str, out: str, extensions: str, *extra: str) -> None:
        d = self.directory
        config = d / f"{ca}.ca.cnf"
        if not config.exists():
            config.write_text(_CA_CONFIG.format(name=ca))
            (d / f"{ca}.index").write_text("")
            (d / f"{ca}.serial").write_text(secrets.token_hex(8) + "\n")
        start, end = validity()
        _openssl("ca", "-batch", "-notext", "-config", config.name, "-extensions", extensions,
                 "-startdate", start, "-enddate", end, "-in", csr, "-out", out, *extra, cwd=d)

    def ca(self, name: str) -> Path:
        """A self-signed CA: ``<name>.pem`` (certificate) and ``<name>.key``."""
        cert = self.directory / f"{name}.pem"
        if not cert.exists():
            _openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                     "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=self.directory)
            self._sign(name, f"{name}.csr", cert.name, "v3_ca", "-selfsign", "-keyfile", f"{name}.key")
        return cert

    def leaf(self, name: str, ca: str) -> Path:
        """A certificate for ``name`` signed by ``ca``, with its key, in one PEM (HAProxy's ``crt``)."""
        bundle = self.directory / f"{name}.bundle.pem"
        if bundle.exists():
            return bundle
        self.ca(ca)
        d = self.directory
        _openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)
        self._sign(ca, f"{name}.csr", f"{name}.crt", "v3_leaf", "-cert", f"{ca}.pem", "-keyfile", f"{ca}.key")
        bundle.write_text((d / f"{name}.crt").read_text() + (d / f"{name}.key").read_text())
        return bundle
