"""The import rules of docs/ARCHITECTURE.md, checked by parsing each module's imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "stktagg"

#: Which stktagg modules each module may import. A module missing here may
#: import anything (the top of the stack: the wiring and the entry points).
ALLOWED = {
    "errors": set(),
    "codec": {"errors"},
    "schema": {"errors", "codec"},
    "wire": {"errors", "codec", "schema"},
    "handshake": {"errors"},
    "session": {"errors", "codec", "schema", "wire", "handshake"},
    "config": {"errors"},
    "datatypes": {"schema"},
    "table": {"datatypes", "schema", "wire"},
    "aggregation": {"config", "schema", "session", "table", "wire"},
    "workers": {"table"},
    "cli": {"datatypes", "errors", "schema", "table"},
    "metrics": set(),
    "loop": {"errors"},
    "transport": {"errors"},
    "tls": {"errors", "config"},
    "logs": {"config"},
    "yamlconf": {"config", "errors"},
}
#: The protocol core is sans-IO: no sockets, TLS, selectors, threads or clock.
SANS_IO = {"codec", "schema", "wire", "handshake", "session", "datatypes", "aggregation"}
IO_MODULES = {"socket", "ssl", "selectors", "threading", "time", "select", "asyncio"}


def imports_of(path: Path) -> tuple[set[str], set[str]]:
    """(stktagg modules, top-level other modules) imported by ``path``."""
    ours, others = set(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                ours.add((node.module or "").split(".")[0])
            elif node.module and node.module.startswith("stktagg"):
                ours.add(node.module.split(".")[1] if "." in node.module else "")
            elif node.module:
                others.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("stktagg."):
                    ours.add(alias.name.split(".")[1])
                else:
                    others.add(alias.name.split(".")[0])
    ours.discard("")
    return ours, others


@pytest.mark.parametrize("module", sorted(ALLOWED))
def test_module_imports_only_what_the_layering_allows(module):
    ours, _ = imports_of(PACKAGE / f"{module}.py")
    assert ours <= ALLOWED[module], f"{module} imports {sorted(ours - ALLOWED[module])}"


@pytest.mark.parametrize("module", sorted(SANS_IO))
def test_protocol_core_does_no_io(module):
    _, others = imports_of(PACKAGE / f"{module}.py")
    assert not others & IO_MODULES, f"{module} imports {sorted(others & IO_MODULES)}"
