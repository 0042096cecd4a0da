"""The public API is frozen: names, signatures and result fields match tests/public_api.json.

Every name in `lens_inversion.__all__`, the signature of each public function and class
(parameter names, kinds, defaults) and the fields of each public dataclass are compared with
the snapshot checked in beside this file, so a change to the API is deliberate. After a
deliberate change, regenerate the snapshot and commit it with the change:

    python tests/test_public_api.py --update

(run from the repository root, with the environment the tests use), then review the diff of
tests/public_api.json: it is the API change.
"""

import dataclasses
import enum
import inspect
import json
import sys
from pathlib import Path

SNAPSHOT = Path(__file__).with_name("public_api.json")


def _default(value: object) -> str | None:
    if value is inspect.Parameter.empty:
        return None
    if isinstance(value, enum.Enum):
        return f"{type(value).__name__}.{value.name}"
    return repr(value)


def _signature(obj: object) -> list[dict] | None:
    try:
        signature = inspect.signature(obj)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return [
        {"name": p.name, "kind": p.kind.name, "default": _default(p.default)} for p in signature.parameters.values()
    ]


def _describe(obj: object) -> dict:
    if inspect.isclass(obj):
        entry: dict = {"kind": "class"}
        if issubclass(obj, enum.Enum):
            entry["members"] = [m.name for m in obj]
        elif dataclasses.is_dataclass(obj):
            entry["fields"] = [f.name for f in dataclasses.fields(obj)]
            entry["signature"] = _signature(obj)
        elif issubclass(obj, BaseException):
            entry["bases"] = [b.__name__ for b in obj.__mro__[1:] if b is not object]
        return entry
    if callable(obj):
        return {"kind": "function", "signature": _signature(obj)}
    return {"kind": type(obj).__name__}


def current_api() -> dict:
    """The public API of the importable lens_inversion, as the snapshot stores it."""
    import lens_inversion as li

    return {"__all__": sorted(li.__all__), "names": {name: _describe(getattr(li, name)) for name in sorted(li.__all__)}}


def test_public_api_matches_the_snapshot():
    expected = json.loads(SNAPSHOT.read_text())
    actual = current_api()
    assert actual["__all__"] == expected["__all__"], "lens_inversion.__all__ changed; see this module's docstring"
    changed = sorted(n for n in actual["names"] if actual["names"][n] != expected["names"].get(n))
    assert not changed, f"public API changed for {changed}; if deliberate: python tests/test_public_api.py --update"


if __name__ == "__main__":
    if sys.argv[1:] != ["--update"]:
        sys.exit("usage: python tests/test_public_api.py --update  (rewrites tests/public_api.json)")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's package, not an installed one
    SNAPSHOT.write_text(json.dumps(current_api(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {SNAPSHOT}")
