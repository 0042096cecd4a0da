"""The docs site builds with mkdocs in strict mode (any warning fails), offline."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_docs_build_strict(tmp_path):
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings") is None:
        if os.environ.get("LI_REQUIRE_DOCS") == "1":
            pytest.fail("LI_REQUIRE_DOCS=1 but mkdocs/mkdocstrings are not installed (extra `docs`).")
        pytest.skip("mkdocs not installed (pip install -e '.[docs]')")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for page in ("index.html", "report/index.html", "api/index.html", "reproducing/index.html"):
        assert (tmp_path / "site" / page).exists(), page
    api = (tmp_path / "site" / "api" / "index.html").read_text(encoding="utf-8")
    for name in ("logit_lens", "invert", "attribute", "ablation_sweep", "report"):
        assert f"lens_inversion.{name}" in api
