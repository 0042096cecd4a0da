"""Load a model as a TransformerBridge: the embedded one, a local directory or a hub name."""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import OptionError
from ..hooks.boot import boot_bridge

ASSETS = Path(__file__).parent / "assets"
EMBEDDED = {
    "tiny": ASSETS / "tiny",
    "tiny-untrained": ASSETS / "tiny-untrained",
    "tiny-llama": ASSETS / "tiny-llama",
}


def load_model(
    name_or_dir: str,
    *,
    device: str | None = None,
    dtype=None,
    compatibility_mode: bool = False,
    load_in_8bit: bool = False,
    load_in_4bit: bool = False,
    device_map=None,
    **hf_kwargs,
):
    """Boot a TransformerBridge offline from the package or a local directory.

    Args:
        name_or_dir: `"tiny"`, `"tiny-untrained"` or `"tiny-llama"` (shipped in the package),
            a local Hugging Face causal-LM directory, or a hub name (needs internet).
        device: where to put the model (default: CPU, or CUDA when available and no
            `device_map` is given).
        dtype: torch dtype of the weights.
        compatibility_mode: call `enable_compatibility_mode()` (folds and centres weights;
            not possible for quantized or offloaded models).
        load_in_8bit: quantize to 8 bits with bitsandbytes (extra `quant`).
        load_in_4bit: quantize to 4 bits with bitsandbytes (extra `quant`).
        device_map: passed to Hugging Face / accelerate to shard or offload the model.
        **hf_kwargs: forwarded to `AutoModelForCausalLM.from_pretrained`.
    """
    import torch

    if not isinstance(name_or_dir, (str, os.PathLike)):
        raise OptionError(
            f"name_or_dir must be a string or path ('tiny', 'tiny-untrained', 'tiny-llama', a local directory or a hub name); "
            f"got {type(name_or_dir).__name__} {name_or_dir!r}."
        )
    name_or_dir = os.fspath(name_or_dir)
    dtype = _check_dtype(dtype)
    _check_device(device)
    path = EMBEDDED.get(name_or_dir, Path(name_or_dir))
    if name_or_dir in EMBEDDED and not path.exists():
        raise OptionError(f"The embedded model {name_or_dir!r} is not shipped in this install ({path} missing).")
    source = str(path) if path.exists() else name_or_dir
    if not path.exists() and _looks_like_path(name_or_dir):
        raise OptionError(
            f"No model directory at {name_or_dir!r}. Give {', '.join(repr(n) for n, p in EMBEDDED.items() if p.exists())}, "
            "a local Hugging Face model directory, or a hub name (needs internet)."
        )
    if load_in_8bit and load_in_4bit:
        raise OptionError("Choose one of load_in_8bit and load_in_4bit, not both.")
    dtype = dtype or torch.float32
    with _quiet_loading():
        bridge = boot_bridge(source, device=device, dtype=dtype, load_in_8bit=load_in_8bit,
                             load_in_4bit=load_in_4bit, device_map=device_map, hf_kwargs=hf_kwargs)
    if compatibility_mode:
        bridge.enable_compatibility_mode()
    bridge.eval()
    return bridge


_DTYPE_NAMES = ("float32", "float16", "bfloat16", "float64")


def _check_dtype(dtype):
    """A floating torch dtype from a dtype or its name; None stays None."""
    import torch

    if dtype is None:
        return None
    if isinstance(dtype, str):
        name = dtype.removeprefix("torch.")
        if name not in _DTYPE_NAMES:
            raise OptionError(f"dtype={dtype!r} is not valid; choose one of: {', '.join(_DTYPE_NAMES)} (or a torch dtype).")
        return getattr(torch, name)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise OptionError(
            f"dtype={dtype!r} is not valid; a model's weights need a floating dtype: "
            f"{', '.join('torch.' + n for n in _DTYPE_NAMES)} (use load_in_8bit / load_in_4bit to quantize)."
        )
    return dtype


def _check_device(device) -> None:
    import torch

    if device is None:
        return
    try:
        torch.device(device)
    except (RuntimeError, TypeError):
        raise OptionError(
            f"device={device!r} is not a torch device; give e.g. 'cpu', 'cuda', 'cuda:1' or 'mps'."
        ) from None


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "~")) or os.sep in name and name.count("/") != 1 or os.path.isabs(name)


@contextmanager
def _quiet_loading() -> Iterator[None]:
    """Hide Hugging Face's per-load progress bars; restore the user's setting afterwards."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
