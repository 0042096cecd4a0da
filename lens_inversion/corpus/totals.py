"""Exact corpus totals: named sums (float64) and counts (int64), added batch by batch.

A corpus statistic is reduced as sums and counts, never as an average of averages: the
mean KL of a layer is Σ KL / Σ tokens over the whole corpus, however the corpus was cut
into batches or shared between processes. Counts are int64 (exact at any size); sums are
float64, so adding a batch's float32 sums loses nothing that float32 had.
"""

from collections.abc import Mapping

import torch
from torch import Tensor

from ..errors import OptionError
from .distributed import World, all_reduce_sum


def _as_total(name: str, value) -> Tensor:
    if isinstance(value, bool) or not isinstance(value, (int, float, Tensor)):
        raise OptionError(f"The statistic {name!r} must be a number or a tensor; got {type(value).__name__}.")
    tensor = torch.as_tensor(value).detach().cpu()
    if tensor.dtype == torch.bool or tensor.is_complex():
        raise OptionError(f"The statistic {name!r} must be real numbers or counts; got dtype {tensor.dtype}.")
    return tensor.to(torch.float64 if tensor.is_floating_point() else torch.int64)


class Totals:
    """Named running totals; `add` a batch's sums, `all_reduce` them over processes."""

    def __init__(self, values: Mapping[str, Tensor] | None = None) -> None:
        """Start from `values` (name → running total), empty by default."""
        self.values: dict[str, Tensor] = {k: _as_total(k, v) for k, v in (values or {}).items()}

    def add(self, batch: Mapping[str, object]) -> None:
        """Add one batch's sums and counts; every batch must give the same names and shapes."""
        if not isinstance(batch, Mapping):
            raise OptionError(f"A corpus statistic must return a dict of name -> sum; got {type(batch).__name__}.")
        batch_totals = {k: _as_total(k, v) for k, v in batch.items()}
        if self.values and set(batch_totals) != set(self.values):
            raise OptionError(f"A batch gave the statistics {sorted(batch_totals)}; earlier batches gave "
                              f"{sorted(self.values)}. Return the same names for every batch.")
        for name, value in batch_totals.items():
            if name not in self.values:
                self.values[name] = value.clone()
            elif value.shape != self.values[name].shape or value.dtype != self.values[name].dtype:
                raise OptionError(f"The statistic {name!r} changed from {self._kind(self.values[name])} to "
                                  f"{self._kind(value)} between batches; keep one shape and type.")
            else:
                self.values[name] += value

    @staticmethod
    def _kind(t: Tensor) -> str:
        return f"{'count' if t.dtype == torch.int64 else 'sum'} of shape {tuple(t.shape)}"

    def all_reduce(self, world: World, names: list[str]) -> "Totals":
        """The totals summed over every process; `names` (the same on every rank) fixes the layout."""
        if world.size == 1:
            return self
        out = {}
        for dtype in (torch.float64, torch.int64):
            keys = [k for k in names if self.values[k].dtype == dtype]
            if not keys:
                continue
            flat = torch.cat([self.values[k].reshape(-1) for k in keys])
            all_reduce_sum(world, flat)
            for k, part in zip(keys, flat.split([self.values[k].numel() for k in keys]), strict=True):
                out[k] = part.reshape(self.values[k].shape)
        return Totals({k: out[k] for k in names})

    def state(self) -> dict[str, Tensor]:
        """A copy of every total, for a checkpoint (later batches leave it unchanged)."""
        return {k: v.clone() for k, v in self.values.items()}

    def __getitem__(self, name: str) -> Tensor:
        return self.values[name]


__all__ = ["Totals"]
