"""Functions short enough to read at once: none in the package is over 60 lines.

Counted from `def` to the last line, docstring and decorators' arguments included, for
every function and method, public or private. Complexity (≤ 15) is ruff's C901, run in CI.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lens_inversion"
MAX_LINES = 60


def _long_functions(package: Path = PACKAGE) -> list[str]:
    found = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_LINES:
                    found.append(f"{path.relative_to(package.parent)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_function_is_over_60_lines():
    assert _long_functions() == []


def test_the_counter_flags_61_lines_and_passes_60(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    long_body = "\n".join(f"        x{i} = {i}" for i in range(MAX_LINES))
    short_body = "\n".join(f"    y{i} = {i}" for i in range(MAX_LINES - 1))
    (package / "m.py").write_text(f"class C:\n    def long(self):\n{long_body}\n\n\ndef short():\n{short_body}\n")
    assert _long_functions(package) == ["pkg/m.py:2 long (61 lines)"]
