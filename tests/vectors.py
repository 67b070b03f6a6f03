"""Reader of the recorded HAProxy traces in ../shared/vectors (format in its README)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

#: Where the recorded traces live: the shared folder beside the project root.
VECTORS_DIR = Path(os.environ.get("STKTAGG_VECTORS", Path(__file__).resolve().parents[2] / "shared" / "vectors"))

_COMMENT = re.compile(r"^# ([<>]) (\S+) c(\d+) (.*)$")


@dataclass(frozen=True)
class Unit:
    """One recorded hex line: a handshake line or one whole message (or raw garbage)."""

    direction: str  #: "<" sent by HAProxy to the capture peer, ">" sent by the capture peer
    connection: int
    data: bytes
    text: str  #: the capture tool's decoded text
    lineno: int

    @property
    def is_handshake(self) -> bool:
        return self.text.startswith("handshake")

    @property
    def is_raw(self) -> bool:
        return self.text.startswith("raw bytes")


def trace_files() -> list[Path]:
    return sorted(VECTORS_DIR.glob("*.hex"))


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
        direction, _time, conn, text = last_comment.groups()
        units.append(Unit(direction, int(conn), bytes.fromhex(line.strip()), text, lineno))
        last_comment = None
    return units
