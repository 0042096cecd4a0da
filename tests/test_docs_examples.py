"""Every ```python block in docs/*.md and README.md runs, page by page, on the embedded model."""

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PAGES = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _pages_with_code():
    return [pytest.param(p, id=p.name) for p in PAGES if p.exists() and BLOCK.search(p.read_text())]


@pytest.mark.parametrize("page", _pages_with_code())
def test_page_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    for number, match in enumerate(BLOCK.finditer(page.read_text()), start=1):
        code = match.group(1)
        try:
            exec(compile(code, f"{page.name}[block {number}]", "exec"), namespace)
        except Exception as error:  # name the page and block, then fail
            raise AssertionError(f"{page.name}, python block {number} failed: {error!r}\n{code}") from error
