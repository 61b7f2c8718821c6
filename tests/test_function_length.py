"""No function or method in the package is longer than 60 lines (docs/CONVENTIONS.md).

A function's length is counted from its ``def`` line (decorators not included) to its last
line, docstring and comments included, as Python's parser reports them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
MAX_LINES = 60


def long_functions(source: str, max_lines: int = MAX_LINES) -> list[tuple[str, int]]:
    """(qualified name, lines) of every function in ``source`` longer than ``max_lines``."""
    out: list[tuple[str, int]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = child.end_lineno - child.lineno + 1
                if lines > max_lines:
                    out.append((prefix + child.name, lines))
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return out


def test_counter_finds_long_functions_methods_and_nested_ones():
    body = "\n".join(f"    x{i} = {i}" for i in range(59))
    exactly_60 = f"def ok():\n{body}\n"
    sixty_one = f"def too_long():\n{body}\n    x59 = 59\n"
    method = "class K:\n" + "\n".join("    " + line for line in sixty_one.splitlines()) + "\n"
    nested = "def outer():\n" + "\n".join("    " + line for line in sixty_one.splitlines()) + "\n    return 1\n"
    assert long_functions(exactly_60) == []
    assert long_functions(sixty_one) == [("too_long", 61)]
    assert long_functions(method) == [("K.too_long", 61)]
    assert ("outer.too_long", 61) in long_functions(nested)
    assert ("outer", 63) in long_functions(nested)


FILES = sorted(SRC.rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(SRC)) for p in FILES])
def test_no_function_over_60_lines(path):
    long = long_functions(path.read_text())
    assert not long, f"{path.relative_to(SRC)}: " + ", ".join(f"{name} has {n} lines" for name, n in long) + \
        f" (at most {MAX_LINES}; split it)"
