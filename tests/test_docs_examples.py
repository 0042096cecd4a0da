"""Every ```python block in docs/*.md and README.md runs, page by page, and prints what the page shows.

Convention: a python block whose output the page shows is followed (blank lines apart) by
`<!-- output -->` and a ```text block. That block must equal what the python block printed
to standard output, after stripping trailing spaces on each line and blank lines at both
ends. Inside a line, `...` stands for any text (timings, memory addresses); a line that is
only `...` stands for any number of lines. Numbers are shown with an explicit format
(`f"{x:.3f}"`) so that they do not depend on the last bits of a float. A block that prints
must show its output: an unchecked printout is a test failure too.
"""

import contextlib
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PAGES = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
BLOCK = re.compile(r"^```python\n(.*?)^```\n(?:\s*\n)*(?:<!-- output -->\n```text\n(.*?)^```)?", re.S | re.M)


@dataclass(frozen=True)
class Example:
    code: str
    expected: "str | None"  # None: the page shows no output for this block
    line: int


def examples(text: str) -> list[Example]:
    """The python blocks of a page, each with the output block that follows it (if any)."""
    return [Example(m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1) for m in BLOCK.finditer(text)]


def _normalise(text: str) -> list[str]:
    return "\n".join(line.rstrip() for line in text.splitlines()).strip("\n").splitlines()


def _pattern(expected: list[str]) -> "re.Pattern[str]":
    parts = ["(?:.*\n)*?" if line.strip() == "..." else ".*?".join(map(re.escape, line.split("..."))) + "\n"
             for line in expected]
    return re.compile("".join(parts))


def output_matches(expected: str, actual: str) -> bool:
    """Whether printed `actual` output equals the documented `expected` one (see the module docstring)."""
    want, got = _normalise(expected), _normalise(actual)
    if not any("..." in line for line in want):
        return want == got
    return _pattern(want).fullmatch("".join(line + "\n" for line in got)) is not None


def _pages_with_code():
    return [pytest.param(p, id=p.name) for p in PAGES if p.exists() and BLOCK.search(p.read_text())]


def _run_block(example: Example, namespace: dict, name: str, number: int) -> str:
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            exec(compile(example.code, f"{name}[block {number}, line {example.line}]", "exec"), namespace)
    except Exception as error:  # name the page and block, then fail
        raise AssertionError(f"{name}, python block {number} (line {example.line}) failed: {error!r}\n{example.code}") from error
    return printed.getvalue()


@pytest.mark.parametrize("page", _pages_with_code())
def test_page_examples_print_what_the_page_shows(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    for number, example in enumerate(examples(page.read_text()), start=1):
        printed = _run_block(example, namespace, page.name, number)
        where = f"{page.name}, python block {number} (line {example.line})"
        if example.expected is None:
            assert not printed.strip(), f"{where} prints but the page shows no <!-- output --> block:\n{printed}"
        else:
            assert output_matches(example.expected, printed), f"{where}: the page shows\n{example.expected}\nbut it printed\n{printed}"


SAMPLE = """\
```python
print("a", 1.5)
```

<!-- output -->
```text
a 1.5
```
"""


def test_a_one_character_change_in_a_documented_output_fails():
    (example,) = examples(SAMPLE)
    assert example.expected == "a 1.5\n"
    assert output_matches(example.expected, "a 1.5\n")
    for mutated in ("a 1.6\n", "b 1.5\n", "a 1.5.\n", "a  1.5\n", "a 1.5\nb\n"):
        assert not output_matches(mutated, "a 1.5\n"), mutated
    assert not output_matches(example.expected, "a 1.50\n")


def test_ellipsis_matches_any_text_but_not_a_different_line():
    assert output_matches("took ... s\n", "took 0.31 s\n")
    assert not output_matches("took ... s\n", "took 0.31 ms\n")
    assert output_matches("first\n...\nlast\n", "first\nx\ny\nlast\n")
    assert not output_matches("first\n...\nlast\n", "first\nx\nlas\n")


def test_a_python_block_without_output_block_expects_none():
    (example,) = examples("```python\nx = 1\n```\n\n```text\nnot an output block\n```\n")
    assert example.expected is None
