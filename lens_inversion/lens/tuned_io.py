"""The tuned-lens 0.2 artifact format: reading and writing a TunedLens directory.

A directory holds tuned-lens's `config.json` (its `TunedLensConfig`) and `params.pt` (one
`Linear` per index 0..n_layers-1, float32), so the tuned-lens package reads what we write and
we read what it writes; plus our `lens_inversion.json` metadata (model name, fingerprints,
training options, held-out KL) and, for `sublayers=True` lenses, `sublayers.pt` (the
translators on each block's resid_mid). Every malformed file is an OptionError naming it.
"""

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from ..errors import OptionError

if TYPE_CHECKING:
    from .tuned import TunedLens

LENS_TYPE = "linear_tuned_lens"
METADATA_FILE = "lens_inversion.json"


def read_json(path: Path) -> dict:
    """A JSON object from `path`, or OptionError saying what is wrong with it."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise OptionError(f"Cannot read {str(path)!r} as JSON: {error}.") from None
    if not isinstance(value, dict):
        raise OptionError(f"{str(path)!r} must hold a JSON object; it holds a {type(value).__name__}.")
    return value


def _directory(directory, *, what: str) -> Path:
    if not isinstance(directory, (str, os.PathLike)) or not os.fspath(directory):
        raise OptionError(f"{what} must be a directory path (str or pathlib.Path); got {type(directory).__name__} "
                          f"{directory!r}.")
    return Path(directory).expanduser()


def _cpu_state(table: nn.ModuleList) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", torch.float32).clone().contiguous() for k, v in table.state_dict().items()}


def save_tuned_lens(lens: "TunedLens", directory) -> Path:
    """Write `lens` to `directory` (created if needed) in the tuned-lens 0.2 format plus our files; return it."""
    path = _directory(directory, what="directory")
    if path.exists() and not path.is_dir():
        raise OptionError(f"Cannot save the tuned lens to {str(path)!r}: it is a file, not a directory.")
    path.mkdir(parents=True, exist_ok=True)
    config = {  # tuned-lens 0.2's TunedLensConfig, its field order
        "base_model_name_or_path": lens.model_name, "d_model": lens.d_model, "num_hidden_layers": lens.n_layers,
        "bias": lens.layer_translators[0].bias is not None, "base_model_revision": lens.metadata.get("revision"),
        "unembed_hash": lens.metadata.get("unembed_hash"), "lens_type": LENS_TYPE,
    }
    torch.save(_cpu_state(lens.layer_translators), path / "params.pt")
    (path / "config.json").write_text(json.dumps(config))
    if lens.sublayer_translators is not None:
        torch.save(_cpu_state(lens.sublayer_translators), path / "sublayers.pt")
    meta = {"format": "lens_inversion.tuned_lens", "version": 1, "sublayers": lens.has_sublayers, **lens.metadata}
    (path / METADATA_FILE).write_text(json.dumps(meta, indent=1) + "\n")
    return path


def _config_shape(config: dict, where: Path) -> tuple[int, int, bool]:
    """(d_model, num_hidden_layers, bias) of a tuned-lens config, or OptionError naming the bad key."""
    lens_type = config.get("lens_type", LENS_TYPE)
    if lens_type != LENS_TYPE:
        raise OptionError(f"{str(where)!r} holds a {lens_type!r}; only {LENS_TYPE!r} lenses can be read.")
    values = []
    for key in ("d_model", "num_hidden_layers"):
        value = config.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise OptionError(f"{str(where)!r} must give {key!r} as a positive integer; got {value!r}.")
        values.append(value)
    bias = config.get("bias", True)
    if not isinstance(bias, bool):
        raise OptionError(f"{str(where)!r} must give 'bias' as true or false; got {bias!r}.")
    return values[0], values[1], bias


def _load_state(table: nn.ModuleList, file: Path) -> None:
    """Load a translator state dict from `file` into `table`, or OptionError naming what differs."""
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling errors of every kind: a truncated or foreign file
        raise OptionError(f"Cannot read {str(file)!r} as a PyTorch state dict: {error}") from None
    expected = table.state_dict()
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise OptionError(f"{str(file)!r} must hold a dict of tensors ('0.weight', '0.bias', ...).")
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise OptionError(f"{str(file)!r} does not match its config: missing keys {missing[:6]}, "
                          f"unexpected keys {unexpected[:6]}.")
    for key, value in state.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise OptionError(f"{str(file)!r}: {key!r} has shape {tuple(value.shape)} but should have shape "
                              f"{tuple(expected[key].shape)}.")
    table.load_state_dict({k: v.float() for k, v in state.items()})


def load_tuned_lens(cls: "type[TunedLens]", directory) -> "TunedLens":
    """Read a tuned-lens artifact directory (ours or the tuned-lens package's) as an instance of `cls`."""
    path = _directory(directory, what="The tuned lens directory")
    if not path.is_dir():
        raise OptionError(f"No tuned lens at {str(path)!r}: {'it is a file, not' if path.exists() else 'no such'} "
                          "directory (a tuned lens is a directory with config.json and params.pt).")
    missing = [name for name in ("config.json", "params.pt") if not (path / name).is_file()]
    if missing:
        raise OptionError(f"{str(path)!r} is not a tuned-lens artifact: {' and '.join(missing)} missing "
                          "(a tuned lens is a directory with config.json and params.pt).")
    config = read_json(path / "config.json")
    d_model, n_layers, bias = _config_shape(config, path / "config.json")
    meta = read_json(path / METADATA_FILE) if (path / METADATA_FILE).is_file() else {}
    sublayers = meta.pop("sublayers", False) is True
    if sublayers and not (path / "sublayers.pt").is_file():
        raise OptionError(f"{str(path)!r}: {METADATA_FILE} lists sublayer translators but sublayers.pt is missing.")
    for key in ("format", "version"):
        meta.pop(key, None)
    meta["model"] = config.get("base_model_name_or_path") or meta.get("model", "")
    meta["unembed_hash"] = config.get("unembed_hash")
    if config.get("base_model_revision"):
        meta["revision"] = config["base_model_revision"]
    lens = cls(d_model=d_model, n_layers=n_layers, sublayers=sublayers, bias=bias, metadata=meta)
    _load_state(lens.layer_translators, path / "params.pt")
    if sublayers:
        assert lens.sublayer_translators is not None  # narrowing: built with sublayers=True
        _load_state(lens.sublayer_translators, path / "sublayers.pt")
    return lens


__all__ = ["LENS_TYPE", "METADATA_FILE", "load_tuned_lens", "read_json", "save_tuned_lens"]
