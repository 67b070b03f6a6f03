"""Source rules checked by parsing every .py of stktagg/, tests/ and contrib/."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_no_conditional_expression_statements() -> None:
    """``a() if c else b()`` as a statement: PyPy 7.3.19 miscompiles it (last in an ``if``
    body ending a function, it ran both branches). Write an if/else statement instead."""
    found = []
    for folder in ("stktagg", "tests", "contrib"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Expr) and isinstance(node.value, ast.IfExp):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, f"conditional expression used as a statement: {', '.join(found)}"
