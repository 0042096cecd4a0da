"""The architecture matrix: opt-in (`-m architectures` or LI_ARCHITECTURES=1), results merged to JSON.

Each test writes its (architecture, mode) row to a fragment file; the controlling process
(also under pytest-xdist) merges them into `LI_MATRIX_JSON` (default
`.pytest_cache/li-matrix/matrix-tl4.json` on TransformerLens 4, `matrix-tl3.json` on 3: each
lane has its own rows and results), which `docs/make_models.py` turns into docs/models.md.
"""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(1)  # pytest -n 2: two workers on two cores


def lane() -> str:
    """The TransformerLens lane, "tl4" or "tl3": each lane keeps its own rows and results."""
    from importlib.metadata import version

    return "tl" + version("transformer-lens").split(".")[0]


def matrix_dir(config) -> Path:
    return Path(config.rootpath) / ".pytest_cache" / "li-matrix"


def rows_dir(config) -> Path:
    return matrix_dir(config) / f"rows-{lane()}"


def matrix_json(config) -> Path:
    return Path(os.environ.get("LI_MATRIX_JSON") or matrix_dir(config) / f"matrix-{lane()}.json")


@pytest.fixture
def matrix_rows_dir(request) -> Path:
    """Where each (architecture, mode) test writes its row for the controller to merge."""
    return rows_dir(request.config)


def _is_controller(config) -> bool:
    return not hasattr(config, "workerinput")


def pytest_configure(config):
    if _is_controller(config) and _selected(config):  # a new matrix run starts with no rows
        shutil.rmtree(rows_dir(config), ignore_errors=True)
    rows_dir(config).mkdir(parents=True, exist_ok=True)


def _selected(config) -> bool:
    return "architectures" in (config.getoption("markexpr", "") or "") or os.environ.get("LI_ARCHITECTURES") == "1"


def pytest_collection_modifyitems(config, items):
    """Deselect (not skip) the matrix in ordinary runs of the suite: it is a job of its own."""
    if _selected(config):
        return
    keep = [i for i in items if i.get_closest_marker("architectures") is None]
    dropped = [i for i in items if i.get_closest_marker("architectures") is not None]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


def pytest_sessionfinish(session, exitstatus):
    config = session.config
    if not _is_controller(config):
        return
    rows = [json.loads(p.read_text()) for p in sorted(rows_dir(config).glob("*.json"))]
    if not rows:
        return
    import catalog
    import checks
    import hooked

    path = matrix_json(config)
    versions = catalog._versions()
    merged = {}
    if path.exists():  # a partial run (-k ...) updates its rows and keeps the others of the same versions
        try:
            old = json.loads(path.read_text())
            if old.get("versions") == versions:
                merged = {(r["arch"], r["mode"]): r for r in old["rows"]}
        except (ValueError, KeyError):
            merged = {}
    merged.update({(r["arch"], r["mode"]): r for r in rows})
    out = {
        "versions": versions,
        "capabilities": list(checks.CAPABILITIES),
        "architectures": catalog.architectures() + hooked.architectures(),
        "modes": ["raw", "compat"],
        "hooked_configs": {arch: hooked.description(arch) for arch in hooked.architectures()},
        "rows": sorted(merged.values(), key=lambda r: (r["arch"], r["mode"])),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    config._li_matrix = (path, rows, len(out["rows"]))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    done = getattr(config, "_li_matrix", None)
    if not done:
        return
    path, rows, total = done
    counts: dict[str, int] = {}
    for row in rows:
        for c in row["cells"].values():
            counts[c["outcome"]] = counts.get(c["outcome"], 0) + 1
    clean = sum(all(c["outcome"] == "works" for c in r["cells"].values()) for r in rows)
    terminalreporter.write_line(
        f"architecture matrix: {len(rows)} rows run, {clean} pass every check; cells {counts}; "
        f"{total} rows in {path}")
