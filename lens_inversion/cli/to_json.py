"""Plain JSON of result dataclasses: tensors become nested lists, NaN/inf become null."""

import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any

import torch


def to_plain(value: Any) -> Any:
    """Convert a result (dataclass, tensor, container) to JSON-ready Python values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: to_plain(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if f.repr  # fields hidden from repr (vocabulary tables, call specs) stay out
        }
    if isinstance(value, torch.Tensor):
        return to_plain(value.detach().cpu().tolist())
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, Path):
        return str(value)
    return str(value)


def write_json(path: "str | Path", result: Any, **extra: Any) -> "Path | None":
    """Write `result` (and any extra top-level keys) as JSON to `path`; `"-"` is standard output (returns None)."""
    payload = {**{k: to_plain(v) for k, v in extra.items()}, "result": to_plain(result)}
    text = json.dumps(payload, indent=1, allow_nan=False)
    if str(path) == "-":
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
        return None
    path = Path(path)
    path.write_text(text, encoding="utf-8")
    return path


__all__ = ["to_plain", "write_json"]
