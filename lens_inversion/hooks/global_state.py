"""Process-wide settings a public call must leave exactly as it found them.

A user who seeds their notebook, or pins threads, dtype or warning filters, must see the
same stream and settings after calling us. `unchanged()` records every such setting
before a call and restores any that changed (on success, error or interrupt): the torch,
NumPy and Python random generators (and CUDA's once it is initialised), the default
dtype, the thread counts, the deterministic-algorithms flags, the warning filters and the
levels of the loggers our dependencies configure. Grad mode is restored by the context
managers that change it.
"""

import logging
import random
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

LOGGERS = ("transformers", "transformer_lens", "torch", "huggingface_hub", "tokenizers")


@dataclass(frozen=True)
class Settings:
    """One snapshot of the process-wide state (see the module docstring)."""

    torch_rng: torch.Tensor
    cuda_rng: tuple | None
    numpy_rng: dict | None  # the dict form, which every bit generator has (the legacy tuple is MT19937's only)
    python_rng: tuple
    default_dtype: torch.dtype
    threads: tuple[int, int]
    deterministic: tuple[bool, bool]
    warning_filters: tuple
    logger_levels: tuple[int, ...]

    @classmethod
    def now(cls) -> "Settings":
        """Record the current value of every setting."""
        return cls(
            torch_rng=torch.get_rng_state(),
            cuda_rng=tuple(torch.cuda.get_rng_state_all()) if torch.cuda.is_initialized() else None,
            numpy_rng=_numpy_state(),
            python_rng=random.getstate(),
            default_dtype=torch.get_default_dtype(),
            threads=(torch.get_num_threads(), torch.get_num_interop_threads()),
            deterministic=(torch.are_deterministic_algorithms_enabled(),
                           torch.is_deterministic_algorithms_warn_only_enabled()),
            warning_filters=tuple(warnings.filters),
            logger_levels=tuple(logging.getLogger(name).level for name in LOGGERS),
        )

    def differences(self, other: "Settings") -> list[str]:
        """Names of the settings that differ between two snapshots."""
        out = [] if torch.equal(self.torch_rng, other.torch_rng) else ["torch RNG"]
        if self.cuda_rng is not None and other.cuda_rng is not None and not all(
                torch.equal(a, b) for a, b in zip(self.cuda_rng, other.cuda_rng, strict=False)):
            out.append("CUDA RNG")
        if not _same_numpy(self.numpy_rng, other.numpy_rng):
            out.append("NumPy RNG")
        for name in ("python_rng", "default_dtype", "threads", "deterministic", "warning_filters", "logger_levels"):
            if getattr(self, name) != getattr(other, name):
                out.append(name.replace("_", " "))
        return out

    def restore(self) -> None:
        """Put back every setting of this snapshot that has changed since."""
        if not torch.equal(torch.get_rng_state(), self.torch_rng):
            torch.set_rng_state(self.torch_rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(list(self.cuda_rng))
        if self.numpy_rng is not None and not _same_numpy(_numpy_state(), self.numpy_rng):
            import numpy

            numpy.random.set_state(self.numpy_rng)
        if random.getstate() != self.python_rng:
            random.setstate(self.python_rng)
        if torch.get_default_dtype() != self.default_dtype:
            torch.set_default_dtype(self.default_dtype)
        if torch.get_num_threads() != self.threads[0]:
            torch.set_num_threads(self.threads[0])
        if (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()) \
                != self.deterministic:
            torch.use_deterministic_algorithms(self.deterministic[0], warn_only=self.deterministic[1])
        if tuple(warnings.filters) != self.warning_filters:
            warnings.filters[:] = list(self.warning_filters)  # type: ignore[index]  # typeshed says Sequence; it is a list
            warnings._filters_mutated()  # type: ignore[attr-defined]  # private: what warnings.catch_warnings calls
        for name, level in zip(LOGGERS, self.logger_levels, strict=True):
            if logging.getLogger(name).level != level:
                logging.getLogger(name).setLevel(level)


def _numpy_state() -> dict | None:
    try:
        import numpy
    except ImportError:  # pragma: no cover - numpy is a dependency
        return None
    return numpy.random.get_state(legacy=False)


def _same_numpy(a: dict | None, b: dict | None) -> bool:
    if a is None or b is None:
        return a is b
    return _same_state(a, b)


def _same_state(a: object, b: object) -> bool:
    """Equality of two NumPy generator states: nested dicts, tuples and arrays compared item by item."""
    import numpy

    if isinstance(a, numpy.ndarray) or isinstance(b, numpy.ndarray):
        return isinstance(a, numpy.ndarray) and isinstance(b, numpy.ndarray) and bool(numpy.array_equal(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_state(a[k], b[k]) for k in a)
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same_state(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@contextmanager
def unchanged() -> Iterator[None]:
    """Run the body; afterwards every process-wide setting is what it was before."""
    before = Settings.now()
    try:
        yield
    finally:
        before.restore()


__all__ = ["Settings", "unchanged"]
