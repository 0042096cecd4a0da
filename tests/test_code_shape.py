"""Functions short enough to read at once: none in the package is over 60 lines.

Counted from `def` to the last line, docstring and decorators' arguments included, for
every function and method, public or private. Complexity (≤ 15) is ruff's C901, run in CI.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lens_inversion"
MAX_LINES = 60


def _long_functions() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_LINES:
                    found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_function_is_over_60_lines():
    assert _long_functions() == []


def test_the_counter_sees_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    tree = ast.parse(f"def f():\n{body}\n")
    node = tree.body[0]
    assert node.end_lineno - node.lineno + 1 == MAX_LINES + 1
