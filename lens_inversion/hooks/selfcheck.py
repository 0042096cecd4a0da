"""Run-time proof that each fast path equals its reference path, once per model.

A fast path (key/value prefix reuse, cut prefixes, layered sweep runs, batched rows,
readout-only unembedding) asks `verified(adapter, name, probe)` before it is used. The
first time on a model and configuration the probe runs the fast path and the reference
path on a small input and compares them within the dtype's tolerance; the verdict is
cached per model. On a mismatch the caller falls back to the reference path, a
`SelfCheckWarning` names the versions once, and under strict mode (`strict=True` on a
public function, `li.strict_checks()`, or `LENS_INVERSION_STRICT=1`) a `SelfCheckError`
is raised instead. Every verdict used during a public call is recorded on its result.
"""

import os
import warnings
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from importlib import metadata
from typing import Literal

import torch
from torch import Tensor

from ..callsite import user_stacklevel
from ..errors import LensInversionError

# "unsupported": the fast path cannot run on this architecture (its probe raised), so the
# reference path is used without a warning; a fast path that runs and disagrees "fell back".
Status = Literal["pass", "fell back", "failed", "unsupported"]
STRICT_ENV = "LENS_INVERSION_STRICT"


class SelfCheckWarning(UserWarning):
    """A fast path disagreed with its reference path; the reference path was used."""


class SelfCheckError(LensInversionError):
    """Strict mode: a fast path disagreed with its reference path."""


def versions() -> dict[str, str]:
    """Installed versions of the libraries whose behaviour the checks depend on."""
    out = {}
    for package in ("torch", "transformers", "transformer-lens"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "not installed"
    return out


def versions_line() -> str:
    return ", ".join(f"{k} {v}" for k, v in versions().items())


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """The outcome of one self-check: what was compared, how far apart, what was done."""

    name: str  # e.g. "kv_prefix[hf]"
    description: str
    status: Status
    max_error: float
    tolerance: float
    detail: str = ""

    @property
    def passed(self) -> bool:
        """Whether the check passed, so its fast path may be used."""
        return self.status == "pass"

    @property
    def healthy(self) -> bool:
        """Passed, or not applicable to this architecture (results stay exact either way)."""
        return self.status in ("pass", "unsupported")

    def __str__(self) -> str:
        return f"{self.name}: {self.status} (max |Δ| {self.max_error:.2e}, tolerance {self.tolerance:.1e}){self.detail}"


@dataclass(frozen=True)
class Comparison:
    """What a probe measured: the largest difference and the reference's scale."""

    max_error: float
    scale: float
    detail: str = ""


Probe = Callable[[], Comparison]

# model -> (hash of its weights' state, {(check, dtype, device): verdict})
_VERDICTS: "weakref.WeakKeyDictionary[torch.nn.Module, tuple[int, dict[tuple, Verdict]]]" = weakref.WeakKeyDictionary()
_STRICT: ContextVar[bool | None] = ContextVar("lens_inversion_strict", default=None)
_RECORDERS: ContextVar[tuple[list, ...]] = ContextVar("lens_inversion_recorders", default=())
# Within one public call the weights cannot change (we never write them): their state is read once.
_CALL_WEIGHTS: ContextVar[dict[int, int] | None] = ContextVar("lens_inversion_call_weights", default=None)


def compare(fast: Tensor, reference: Tensor, detail: str = "") -> Comparison:
    """Largest absolute difference of two tensors, and the reference's largest magnitude."""
    if fast.shape != reference.shape:
        return Comparison(float("inf"), 1.0, f"; shapes {tuple(fast.shape)} vs {tuple(reference.shape)}{detail}")
    diff = (fast.double() - reference.double()).abs()
    error = float(diff.max()) if diff.numel() else 0.0
    if error != error:  # NaN
        error = float("inf")
    return Comparison(error, float(reference.double().abs().max()) if reference.numel() else 1.0, detail)


def tolerance_for(dtype: torch.dtype) -> float:
    """Relative tolerance of a fast path in `dtype` (batching and cache reuse reorder float sums)."""
    if dtype in (torch.float16, torch.bfloat16):
        return 5e-2
    if dtype == torch.float64:
        return 1e-9
    return 1e-4


def is_strict() -> bool:
    """Whether a failed self-check raises: `strict_checks`' setting, else the LENS_INVERSION_STRICT variable."""
    value = _STRICT.get()
    if value is not None:
        return value
    return os.environ.get(STRICT_ENV, "").strip().lower() in ("1", "true", "yes", "on")


@contextmanager
def strict_checks(strict: bool | None = True) -> Iterator[None]:
    """Within the block, a failed self-check raises SelfCheckError (None: keep the current setting)."""
    if strict is None:
        yield
        return
    if not isinstance(strict, bool):
        from ..errors import OptionError

        raise OptionError(f"strict={strict!r} is not valid; choose True, False or None.")
    token = _STRICT.set(strict)
    try:
        yield
    finally:
        _STRICT.reset(token)


@contextmanager
def recording() -> Iterator[list[Verdict]]:
    """Collect every verdict consulted in the block (nested blocks all receive them)."""
    log: list[Verdict] = []
    token = _RECORDERS.set((*_RECORDERS.get(), log))
    weights = _CALL_WEIGHTS.set({}) if _CALL_WEIGHTS.get() is None else None
    try:
        yield log
    finally:
        _RECORDERS.reset(token)
        if weights is not None:
            _CALL_WEIGHTS.reset(weights)


def _record(verdict: Verdict) -> None:
    for log in _RECORDERS.get():
        if all(v.name != verdict.name for v in log):
            log.append(verdict)


def weights_state(model: torch.nn.Module) -> tuple:
    """Changes whenever a parameter is written in place or replaced (then every verdict is stale)."""
    return tuple((p.data_ptr(), p._version) for p in model.parameters())


def config_key(adapter) -> tuple:
    """What a verdict depends on besides the check: dtype, device and the current weights."""
    known = _CALL_WEIGHTS.get()
    model = adapter.model
    if known is None:
        state = hash(weights_state(model))
    elif id(model) in known:
        state = known[id(model)]
    else:
        state = known[id(model)] = hash(weights_state(model))
    return (str(adapter.dtype), str(adapter.device), state)


def _decide(model, name: str, description: str, probe: Probe, dtype: torch.dtype, fallback: bool) -> Verdict:
    from .preserve import preserved

    tol = tolerance_for(dtype)
    try:
        with torch.no_grad(), preserved(model):  # eval mode, frozen parameters, every hook removed
            result = probe()
        ok = result.max_error <= tol * max(1.0, result.scale)
        detail = result.detail
    except Exception as error:  # a fast path this architecture cannot run: the reference path is used
        result, detail = Comparison(float("inf"), 1.0), f"; raised {type(error).__name__}: {error}"
        status: Status = "unsupported" if fallback else "failed"
        return Verdict(name=name, description=description, status=status, max_error=result.max_error,
                       tolerance=tol, detail=detail)
    status = "pass" if ok else ("fell back" if fallback else "failed")
    return Verdict(name=name, description=description, status=status, max_error=result.max_error,
                   tolerance=tol * max(1.0, result.scale), detail=detail)


def _announce(verdict: Verdict, fallback: bool) -> None:
    action = "using the reference path instead" if fallback else "no reference path to fall back to"
    message = (
        f"Self-check {verdict.name!r} failed ({verdict.description}): max |Δ| {verdict.max_error:.3g} "
        f"> tolerance {verdict.tolerance:.3g}{verdict.detail}; {action}. Versions: {versions_line()}. "
        "Run `lens-inversion doctor` for every check."
    )
    if is_strict():
        raise SelfCheckError(message)
    warnings.warn(message, SelfCheckWarning, stacklevel=user_stacklevel())


def verdict(adapter, name: str, description: str, probe: Probe, *, fallback: bool = True, force: bool = False) -> Verdict:
    """The cached verdict of check `name` on this model, running `probe` the first time."""
    config = config_key(adapter)
    held = _VERDICTS.get(adapter.model)
    if held is None or held[0] != config[2]:  # new weights: every verdict is stale
        held = _VERDICTS[adapter.model] = (config[2], {})
    table = held[1]
    key = (name, *config[:2])
    if force or key not in table:
        table[key] = _decide(adapter.model, name, description, probe, adapter.dtype, fallback)
        found, fresh = table[key], True
    else:
        found, fresh = table[key], False
    _record(found)
    if not found.healthy and (fresh or is_strict()):
        _announce(found, fallback)
    return found


def verified(adapter, name: str, description: str, probe: Probe) -> bool:
    """Whether the fast path `name` may be used on this model (its check passed)."""
    return verdict(adapter, name, description, probe).passed


def forget(model) -> None:
    """Drop the cached verdicts of `model` (writing its weights does this by itself)."""
    _VERDICTS.pop(getattr(model, "model", model), None)


def cached_verdicts(model) -> list[Verdict]:
    """The verdicts already measured and cached for `model` (empty when none)."""
    held = _VERDICTS.get(getattr(model, "model", model))
    return list(held[1].values()) if held else []


__all__ = [
    "Comparison", "SelfCheckError", "SelfCheckWarning", "Verdict", "cached_verdicts", "compare", "config_key", "forget",
    "is_strict", "weights_state", "recording", "strict_checks", "verdict", "verified", "versions",
]
