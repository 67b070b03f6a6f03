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
    "codegen": set(),
    "clock": set(),
    "collector": set(),
    "codec": {"errors"},
    "schema": {"errors", "codec"},
    "wire": {"errors", "codec", "codegen", "schema"},
    "handshake": {"errors"},
    "session": {"errors", "codec", "schema", "wire", "handshake"},
    "config/__init__": {"errors", "_model", "_lexer", "_global_section", "_parser", "_probes", "_dump"},
    "config/_model": {"errors"},
    "config/_lexer": {"_model"},
    "config/_rules": {"_model", "_lexer"},
    "config/_global_section": {"_model", "_lexer", "_rules"},
    "config/_aggregations_section": {"_model", "_lexer", "_rules", "history"},
    "config/_parser": {"errors", "_model", "_lexer", "_global_section", "_aggregations_section"},
    "config/_probes": {"errors", "_model"},
    "config/_dump": {"_model", "_lexer"},
    "datatypes": {"codegen"},
    "hotpath": {"codec", "codegen", "collector", "datatypes", "schema"},
    "table": {"datatypes", "collector", "hotpath", "schema", "wire"},
    "aggregation": {"clock", "config", "schema", "session", "table", "wire"},
    "workers": {"table"},
    "status": {"clock", "config", "schema", "session", "table", "wire"},
    "counters": {"session", "status"},
    "cli": {"clock", "datatypes", "errors", "history", "metrics", "schema", "status", "table"},
    "metrics": {"httpwire", "status"},
    "httpwire": set(),
    "dashboard": {"cli", "clock", "datatypes", "errors", "schema", "status"},
    "web": {"dashboard", "errors", "httpwire", "metrics"},
    "shardproxy": {"cli", "clock", "errors", "loop", "metrics", "transport"},
    "shards": {"config"},
    "loop": {"errors"},
    "slices": set(),
    "transport": {"errors"},
    "connect": {"transport"},
    "backpressure": {"transport"},
    "tls": {"errors", "config"},
    "logs": {"config"},
    "notify": set(),
    "history": set(),
    "historystore": set(),
    "reconfigure": {"aggregation", "config", "peerlink", "tls"},
    "yamlconf": {"config", "errors"},
    "peerlink": {"aggregation", "backpressure", "clock", "config", "counters", "schema", "session", "slices",
                 "table", "transport", "wire", "workers"},
    "links": {"aggregation", "config", "errors", "peerlink", "session", "transport"},
    "registry": {"counters", "links", "peerlink", "transport"},
    "pushes": {"aggregation", "clock", "loop", "registry", "table", "wire"},
    "recorder": {"aggregation", "clock", "config", "datatypes", "history", "historystore", "schema", "slices", "status",
                 "table", "wire", "workers"},
    "endpoints": {"aggregation", "config", "connect", "links", "loop", "peerlink", "tls", "transport"},
    "server": {"aggregation", "backpressure", "clock", "collector", "config", "counters", "dashboard", "endpoints", "loop",
               "peerlink",
               "pushes", "recorder", "registry", "slices", "status", "tls", "workers"},
}
#: The top of the stack, which may import anything: the entry points.
TOP = {"__init__", "__main__", "daemon"}
#: The protocol core is sans-IO: no sockets, TLS, selectors, threads or clock.
SANS_IO = {"codec", "codegen", "schema", "wire", "handshake", "session", "datatypes", "aggregation"}
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


def modules() -> set[str]:
    return {str(p.relative_to(PACKAGE).with_suffix("")) for p in PACKAGE.rglob("*.py")}


def test_every_module_has_its_place_in_the_layering():
    assert modules() == set(ALLOWED) | TOP


def test_no_import_cycle():
    def node(name: str) -> str:
        return "config/__init__" if name == "config" else name

    graph = {m: {node(n) for n in ALLOWED[m] if node(n) in ALLOWED} for m in ALLOWED}
    # config's private modules name each other without the package prefix
    graph.update({m: {f"config/{n}" if f"config/{n}" in ALLOWED else n for n in ALLOWED[m]} for m in ALLOWED
                  if m.startswith("config/")})
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, f"import cycle: {' -> '.join(path + (module,))}"
        if module in done:
            return
        for dependency in graph.get(module, ()):
            visit(dependency, path + (module,))
        done.add(module)

    for module in graph:
        visit(module, ())


def test_no_module_is_over_800_lines():
    sizes = {m: len((PACKAGE / f"{m}.py").read_text().splitlines()) for m in modules()}
    assert {m: n for m, n in sizes.items() if n > 800} == {}


@pytest.mark.parametrize("module", sorted(ALLOWED))
def test_module_imports_only_what_the_layering_allows(module):
    ours, _ = imports_of(PACKAGE / f"{module}.py")
    assert ours <= ALLOWED[module], f"{module} imports {sorted(ours - ALLOWED[module])}"


@pytest.mark.parametrize("module", sorted(SANS_IO))
def test_protocol_core_does_no_io(module):
    _, others = imports_of(PACKAGE / f"{module}.py")
    assert not others & IO_MODULES, f"{module} imports {sorted(others & IO_MODULES)}"
