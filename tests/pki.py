"""A throw-away PKI for TLS tests, made with the openssl command (two CAs, leaf certificates)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@dataclass
class PKI:
    directory: Path

    def ca(self, name: str) -> Path:
        """A self-signed CA: ``<name>.pem`` (certificate) and ``<name>.key``."""
        cert = self.directory / f"{name}.pem"
        if not cert.exists():
            _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
                     "-keyout", f"{name}.key", "-out", cert.name, cwd=self.directory)
        return cert

    def leaf(self, name: str, ca: str) -> Path:
        """A certificate for ``name`` signed by ``ca``, with its key, in one PEM (HAProxy's ``crt``)."""
        bundle = self.directory / f"{name}.bundle.pem"
        if bundle.exists():
            return bundle
        self.ca(ca)
        d = self.directory
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
                 "-CAcreateserial", "-days", "2", "-out", f"{name}.crt", cwd=d)
        bundle.write_text((d / f"{name}.crt").read_text() + (d / f"{name}.key").read_text())
        return bundle
