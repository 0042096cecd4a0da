"""Load a model as a TransformerBridge: the embedded one, a local directory or a hub name.

Names are checked before torch or transformers load, so a typo fails in well under a second:
a name is built in, an existing directory (checked for config, weights and tokenizer), or a
plausible hub id. A hub id is `owner/name`, or a bare name such as `gpt2`, made of letters,
digits, `-`, `_` and `.` only; a bare name close to a built-in one (`tiny_llama`) is taken
for a typo and never sent to the hub. With `HF_HUB_OFFLINE` set, a hub id must already be in
the local Hugging Face cache; the hub is not asked.
"""

import difflib
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import DeviceError, ModelNotFoundError, OptionError
from ..validation import check_bool

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
    source = resolve_source(name_or_dir)
    import torch

    from ..hooks.boot import boot_bridge

    dtype = _check_dtype(dtype)
    check_device(device)
    check_bool("compatibility_mode", compatibility_mode)
    check_bool("load_in_8bit", load_in_8bit)
    check_bool("load_in_4bit", load_in_4bit)
    if load_in_8bit and load_in_4bit:
        raise OptionError("Choose one of load_in_8bit and load_in_4bit, not both.")
    dtype = dtype or torch.float32
    with _quiet_loading():
        try:
            bridge = boot_bridge(source, device=device, dtype=dtype, load_in_8bit=load_in_8bit,
                                 load_in_4bit=load_in_4bit, device_map=device_map, hf_kwargs=hf_kwargs)
        except OSError as error:  # the hub (or its cache) could not give the files
            if Path(source).exists():
                raise
            first = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise ModelNotFoundError(f"Could not load {source!r} from the Hugging Face hub: {first} {_CHOICES}") from error
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


_CHOICES = (
    "Give a built-in model (" + ", ".join(repr(n) for n in EMBEDDED) + "), a local Hugging Face model directory "
    "(config.json, weights as *.safetensors or pytorch_model*.bin, and tokenizer files such as tokenizer.json or "
    "tokenizer.model / vocab.json with tokenizer_config.json), or a hub id such as 'owner/name' "
    "(needs internet, or the local Hugging Face cache when HF_HUB_OFFLINE is set)."
)
_HUB_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]{0,95}/)?[A-Za-z0-9][\w.-]{0,95}$")
_WEIGHTS = ("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json", "pytorch_model*.bin.index.json")
_TOKENIZER = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model", "tokenizer_config.json")


def resolve_source(name_or_dir) -> str:
    """The directory or hub id to boot from; raises ModelNotFoundError without importing torch.

    Checked first so that a typo fails at once, offline, naming every valid choice.
    """
    if not isinstance(name_or_dir, (str, os.PathLike)):
        raise OptionError(
            f"name_or_dir must be a string or path ('tiny', 'tiny-untrained', 'tiny-llama', a local directory or a hub name); "
            f"got {type(name_or_dir).__name__} {name_or_dir!r}."
        )
    name = os.fspath(name_or_dir)
    if name in EMBEDDED:
        if not EMBEDDED[name].exists():
            raise ModelNotFoundError(f"The embedded model {name!r} is not shipped in this install ({EMBEDDED[name]} missing).")
        return str(EMBEDDED[name])
    path = Path(name).expanduser()
    if name.strip() and path.exists():
        return str(_check_model_dir(path, name))
    if not name.strip():
        raise ModelNotFoundError(f"The model name is empty. {_CHOICES}")
    if _looks_like_path(name):
        raise ModelNotFoundError(f"No model directory at {name!r}.{_suggestion(name)} {_CHOICES}")
    if not _HUB_ID.match(name) or ".." in name or "--" in name:
        raise ModelNotFoundError(f"{name!r} is not a built-in model, a directory, or a valid hub id.{_suggestion(name)} {_CHOICES}")
    if "/" not in name and _suggestion(name):
        raise ModelNotFoundError(f"{name!r} is not a built-in model.{_suggestion(name)} {_CHOICES}")
    if _offline() and not _in_hub_cache(name):
        raise ModelNotFoundError(
            f"{name!r} is not a built-in model or a directory, and HF_HUB_OFFLINE is set while the hub id is not in the "
            f"local Hugging Face cache, so the hub is not asked. {_CHOICES}"
        )
    return name


def _suggestion(name: str) -> str:
    """' Did you mean ...?' for the closest built-in name (case and spaces ignored), else ''."""
    close = difflib.get_close_matches(name.strip().lower(), EMBEDDED, n=1, cutoff=0.75)
    return f" Did you mean {close[0]!r}?" if close else ""


def _check_model_dir(path: Path, name: str) -> Path:
    """`path` if it is a directory with a config, weights and a tokenizer; else say what is missing."""
    if not path.is_dir():
        raise ModelNotFoundError(f"{name!r} is a file, not a model directory. {_CHOICES}")
    missing = [what for what, patterns in (("config.json", ("config.json",)), ("weights", _WEIGHTS),
                                           ("tokenizer files", _TOKENIZER))
               if not any(next(path.glob(p), None) for p in patterns)]
    if missing:
        raise ModelNotFoundError(f"The directory {name!r} has no {' and no '.join(missing)}. {_CHOICES}")
    return path


def _offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _in_hub_cache(repo_id: str) -> bool:
    """Whether the local Hugging Face cache holds this hub id's config (no network)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except ValueError:  # huggingface_hub's own id validation
        return False


def check_device(device) -> None:
    """Raise DeviceError unless `device` is None or a torch device that exists here and holds values."""
    import torch

    if device is None:
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise DeviceError(f"device={device!r} is not a torch device; choose 'cpu', 'cuda', 'cuda:N' or 'mps' "
                          f"(available here: {_available_devices()}).") from None
    if dev.type == "meta":
        raise DeviceError(f"device={device!r} holds no values, so nothing can be computed; give e.g. {_available_devices()}.")
    if dev.type == "cpu":
        return
    backend = getattr(torch, dev.type, None)
    available = bool(backend and hasattr(backend, "is_available") and backend.is_available())
    if dev.type == "mps":
        available = torch.backends.mps.is_available()
    if not available:
        raise DeviceError(f"device={device!r} is not available in this torch {torch.__version__} install on this machine; "
                          f"give e.g. {_available_devices()}.")
    count = backend.device_count() if backend is not None and hasattr(backend, "device_count") else 1
    if dev.index is not None and dev.index >= count:
        raise DeviceError(f"device={device!r} does not exist: this machine has {count} {dev.type} device(s); "
                          f"give e.g. {_available_devices()}.")


def _available_devices() -> str:
    import torch

    names = ["'cpu'"]
    if torch.cuda.is_available():
        names += ["'cuda'"] + [f"'cuda:{i}'" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        names.append("'mps'")
    return " or ".join([", ".join(names[:-1]), names[-1]]) if len(names) > 1 else names[0] + " (the only device here)"


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
