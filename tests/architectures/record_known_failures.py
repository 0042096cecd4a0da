"""Record the cells of a full matrix run that still fail into known_failures.json.

    HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q -n 2 -m architectures tests/architectures
    .venv/bin/python tests/architectures/record_known_failures.py [RESULTS_JSON]

Only failing cells ("fails", "wrong", "unchecked", unexpected refusals) are recorded, with
the first 200 characters of their detail; expected refusals stay in test_matrix.py.
"""

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _default() -> Path:
    """This environment's lane's results (conftest.py writes matrix-tl4.json or matrix-tl3.json)."""
    from importlib.metadata import version

    lane = "tl" + version("transformer-lens").split(".")[0]
    return HERE.parent.parent / ".pytest_cache" / "li-matrix" / f"matrix-{lane}.json"


def main() -> None:
    results = json.loads((Path(sys.argv[1]) if len(sys.argv) > 1 else _default()).read_text())
    rows = results["rows"] if isinstance(results, dict) and "rows" in results else results
    known = json.loads((HERE / "known_failures.json").read_text())
    for row in rows:
        for problem in row.get("problems", []):
            cap, _, detail = problem.partition(": ")
            if cap in row["cells"]:
                known[f"{row['arch']}/{row['mode']}/{cap}"] = detail[:200]
            if detail.startswith("works now"):
                known.pop(f"{row['arch']}/{row['mode']}/{cap}", None)
    (HERE / "known_failures.json").write_text(json.dumps(dict(sorted(known.items())), indent=1) + "\n")
    print(f"{len(known)} known failing cells")


if __name__ == "__main__":
    main()
