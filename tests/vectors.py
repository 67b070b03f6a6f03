"""Reader of the recorded HAProxy traces in tests/data/vectors (format in its README).

The project's own recordings, made by ``contrib/record_vectors.py`` against
real HAProxy, are what the tests replay. ``STKTAGG_VECTORS`` points the
readers at another folder of the same format (for instance a fresh recording
before it is committed).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

#: Where the recorded traces live: inside the repository.
VECTORS_DIR = Path(os.environ.get("STKTAGG_VECTORS", Path(__file__).resolve().parent / "data" / "vectors"))

#: The HAProxy versions every scenario of the recorder was recorded from (issue 16).
RECORDED_VERSIONS = ("2.6", "2.8", "3.0", "3.2", "3.4")

_COMMENT = re.compile(r"^# ([<>]) (\S+) c(\d+) (.*)$")


@dataclass(frozen=True)
class Unit:
    """One recorded hex line: a handshake line or one whole message (or raw garbage)."""

    direction: str  #: "<" sent by HAProxy to the capture peer, ">" sent by the capture peer
    connection: int
    data: bytes
    text: str  #: the capture tool's decoded text
    lineno: int
    time: str = ""  #: ISO time of the read (HAProxy's units of one read share it) or of the send

    @property
    def is_handshake(self) -> bool:
        return self.text.startswith("handshake")

    @property
    def is_raw(self) -> bool:
        return self.text.startswith("raw bytes")


def trace_files(directory: Path | None = None) -> list[Path]:
    return sorted((directory or VECTORS_DIR).glob("*.hex"))


def read_trace(path: Path) -> list[Unit]:
    units = []
    last_comment = None
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("#"):
            last_comment = _COMMENT.match(line)
            continue
        if not line.strip():
            continue
        if last_comment is None:
            raise ValueError(f"{path.name}:{lineno}: hex line without a direction comment")
        direction, time, conn, text = last_comment.groups()
        units.append(Unit(direction, int(conn), bytes.fromhex(line.strip()), text, lineno, time))
        last_comment = None
    return units


def reads(units: list[Unit]) -> list[list[Unit]]:
    """The units in order, HAProxy's consecutive units of one read (same connection, same time) together."""
    groups: list[list[Unit]] = []
    for unit in units:
        last = groups[-1][-1] if groups else None
        if (
            last is not None and unit.direction == "<" and last.direction == "<"
            and unit.connection == last.connection and unit.time == last.time
        ):
            groups[-1].append(unit)
        else:
            groups.append([unit])
    return groups
